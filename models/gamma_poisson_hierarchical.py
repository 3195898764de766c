"""Hierarchical Gamma-Poisson firing rates across trials, written as a user would.

Each neuron n has a mean rate ``mu[n]`` (spikes/s) and a trial-to-trial
variability ``alpha[n]`` (the Gamma shape: small alpha means large variability).
On trial k its rate is ``rate[k, n] ~ Gamma(alpha[n], alpha[n] / mu[n])`` (mean
``mu[n]``) and it fires ``counts[k, n] ~ Poisson(rate[k, n] * duration)`` spikes.

``conjugate_rates`` is the non-hierarchical special case with fixed prior, whose
posterior is known in closed form; the tests use it to check every inference
method against exact answers.

Run as a script to simulate a data set, fit it with all four methods of
``bayesneuro.infer.fit`` and print the summaries::

    python models/gamma_poisson_hierarchical.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

def hierarchical_gamma_poisson(counts=None, *, duration, n_trial=None, n_neuron=None):
    """Trial-by-neuron spike counts with neuron-level mean rates and variabilities.

    Parameters
    ----------
    counts : array (trial, neuron) of int, optional
        Observed spike counts; sampled when None.
    duration : float
        Length of each trial in seconds.
    n_trial, n_neuron : int, optional
        Sizes, needed only when ``counts`` is None.
    """
    if counts is not None:
        n_trial, n_neuron = counts.shape
    with numpyro.plate("neuron", n_neuron):
        mu = numpyro.sample("mu", dist.LogNormal(jnp.log(10.0), 1.0))  # spikes/s
        alpha = numpyro.sample("alpha", dist.Gamma(2.0, 0.2))  # variability
        numpyro.deterministic("fano_factor", 1.0 + mu * duration / alpha)
        with numpyro.plate("trial", n_trial, dim=-2):
            rate = numpyro.sample("rate", dist.Gamma(alpha, alpha / mu))
            numpyro.sample("counts", dist.Poisson(rate * duration), obs=counts)

def conjugate_rates(counts=None, *, duration, shape=2.0, rate=0.2, n_trial=None, n_neuron=None):
    """One rate per neuron with a fixed Gamma(shape, rate) prior: a conjugate model.

    The posterior is ``Gamma(shape + sum_k counts[k, n], rate + n_trial * duration)``.
    """
    if counts is not None:
        n_trial, n_neuron = counts.shape
    with numpyro.plate("neuron", n_neuron):
        lam = numpyro.sample("rate", dist.Gamma(shape, rate))
        with numpyro.plate("trial", n_trial, dim=-2):
            numpyro.sample("counts", dist.Poisson(lam * duration), obs=counts)

def conjugate_posterior(counts, *, duration, shape=2.0, rate=0.2):
    """Closed-form Gamma posterior (shape, rate) per neuron of :func:`conjugate_rates`."""
    counts = np.asarray(counts)
    return shape + counts.sum(axis=0), rate + counts.shape[0] * duration

def simulate(key, *, n_trial=40, n_neuron=6, duration=0.5):
    """Draw parameters and counts from the hierarchical model's prior."""
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(hierarchical_gamma_poisson, key)).get_trace(
        duration=duration, n_trial=n_trial, n_neuron=n_neuron
    )
    truth = {k: np.asarray(tr[k]["value"]) for k in ("mu", "alpha")}
    return truth, np.asarray(tr["counts"]["value"]).astype(np.int64)

def main(fast=False):

    from bayesneuro import infer

    duration = 0.5
    truth, counts = simulate(jax.random.key(1), n_trial=40, n_neuron=6, duration=duration)
    coords = {"neuron": [f"n{i}" for i in range(counts.shape[1])], "trial": np.arange(counts.shape[0])}
    options = {
        "map": {},
        "laplace": {"num_samples": 500},
        "svi": {"num_steps": 500 if fast else 3000, "num_samples": 500},
        "nuts": {"num_warmup": 200 if fast else 500, "num_samples": 200 if fast else 500, "num_chains": 2},
    }
    print("true mean rates (spikes/s):", np.round(truth["mu"], 2))
    for method, opts in options.items():
        res = infer.fit(
            hierarchical_gamma_poisson, method=method, key=jax.random.key(0), counts=counts,
            duration=duration, coords=coords, **opts,
        )
        print(f"\n== {method} ==")
        print(res.summary(var_names=["mu"]).round(2))

if __name__ == "__main__":
    import sys

    main(fast="--fast" in sys.argv)
