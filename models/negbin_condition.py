"""Negative-binomial firing rates with a condition effect, written as a user would.

A common question: did a manipulation (a drug, an opto-stimulation, a task
condition) change each neuron's firing rate, and by how much? On trial k, neuron
n fires ``counts[k, n] ~ NegativeBinomial(mean=m[k, n], concentration=phi[n])``
with ``log m[k, n] = log(duration) + baseline[n] + effect[n] * condition[k]``.
``effect[n]`` is the log rate ratio between condition 1 and condition 0; the
negative binomial allows over-dispersion (Fano factor ``1 + m / phi`` > 1).
Neuron effects share a population distribution (partial pooling).

Run as a script to simulate, fit with all four methods and print the effects::

    python models/negbin_condition.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

def negbin_condition(counts=None, *, condition, duration, n_neuron=None):
    """Trial-by-neuron counts with a per-neuron effect of a binary condition.

    Parameters
    ----------
    counts : array (trial, neuron) of int, optional
        Observed spike counts; sampled when None.
    condition : array (trial,) of 0/1
        Condition of each trial.
    duration : float
        Trial length in seconds.
    n_neuron : int, optional
        Needed only when ``counts`` is None.
    """
    condition = jnp.asarray(condition)
    n_trial = condition.shape[0]
    if counts is not None:
        n_neuron = counts.shape[1]
    effect_mean = numpyro.sample("effect_mean", dist.Normal(0.0, 1.0))
    effect_sd = numpyro.sample("effect_sd", dist.HalfNormal(0.5))
    with numpyro.plate("neuron", n_neuron):
        baseline = numpyro.sample("baseline", dist.Normal(jnp.log(10.0), 1.5))  # log spikes/s
        z = numpyro.sample("effect_z", dist.Normal(0.0, 1.0))  # non-centred
        effect = numpyro.deterministic("effect", effect_mean + effect_sd * z)
        phi = numpyro.sample("concentration", dist.Gamma(2.0, 0.1))
        with numpyro.plate("trial", n_trial, dim=-2):
            log_mean = jnp.log(duration) + baseline + effect * condition[:, None]
            numpyro.sample(
                "counts", dist.NegativeBinomial2(jnp.exp(log_mean), phi), obs=counts
            )

def simulate(key, *, n_trial=60, n_neuron=8, duration=1.0):
    """Draw parameters and counts from the model's prior (half the trials in condition 1)."""
    from numpyro import handlers

    condition = (np.arange(n_trial) % 2).astype(np.float64)
    tr = handlers.trace(handlers.seed(negbin_condition, key)).get_trace(
        condition=condition, duration=duration, n_neuron=n_neuron
    )
    truth = {k: np.asarray(tr[k]["value"]) for k in ("baseline", "effect", "concentration")}
    return truth, condition, np.asarray(tr["counts"]["value"]).astype(np.int64)

def main(fast=False):

    from bayesneuro import infer

    truth, condition, counts = simulate(jax.random.key(3))
    options = {
        "map": {},
        "laplace": {"num_samples": 500},
        "svi": {"num_steps": 1000 if fast else 5000, "num_samples": 500},
        "nuts": {"num_warmup": 200 if fast else 500, "num_samples": 200 if fast else 500, "num_chains": 2},
    }
    print("true effects (log rate ratio):", np.round(truth["effect"], 2))
    for method, opts in options.items():
        res = infer.fit(
            negbin_condition, method=method, key=jax.random.key(0), counts=counts,
            condition=condition, duration=1.0, dims={"condition": ["trial"]}, **opts,
        )
        print(f"\n== {method} ==")
        print(res.summary(var_names=["effect"]).round(2))

if __name__ == "__main__":
    import sys

    main(fast="--fast" in sys.argv)
