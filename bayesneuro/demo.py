"""The demo: simulate a small population, fit a hierarchical rate model, print a summary.

Run with ``bayesneuro demo`` or ``python -m bayesneuro demo``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from .data import SpikeData
from .infer import fit

__all__ = ["population_rate_model", "simulate_population", "run_demo"]

POP_LOG_RATE, POP_SD = float(np.log(8.0)), 0.6  # the simulated population


def population_rate_model(counts=None, *, bin_size, n_time=None, n_neuron=None):
    """Hierarchical Poisson firing rates: each neuron's log rate drawn from a population.

    .. math::

        \\mu \\sim N(\\log 10, 1), \\quad \\sigma \\sim \\mathrm{HalfNormal}(1), \\quad
        \\log r_n \\sim N(\\mu, \\sigma), \\quad
        X_{tn} \\sim \\mathrm{Poisson}(r_n \\Delta)

    Parameters
    ----------
    counts : array (time, neuron), optional
        Spike counts; sampled when None.
    bin_size : float
        Bin width :math:`\\Delta` in seconds.
    n_time, n_neuron : int, optional
        Sizes, needed only when ``counts`` is None.
    """
    if counts is not None:
        n_time, n_neuron = counts.shape
    mu = numpyro.sample("pop_log_rate", dist.Normal(jnp.log(10.0), 1.0))
    sigma = numpyro.sample("pop_sd", dist.HalfNormal(1.0))
    with numpyro.plate("neuron", n_neuron):
        # centred: with minutes of data each neuron's rate is well identified
        log_rate = numpyro.sample("log_rate", dist.Normal(mu, sigma))
        rate = numpyro.deterministic("rate", jnp.exp(log_rate))  # spikes/s
        with numpyro.plate("time", n_time, dim=-2):
            numpyro.sample("counts", dist.Poisson(rate * bin_size), obs=counts)


def simulate_population(key, *, n_neuron=20, duration=30.0, bin_size=0.05):
    """Simulate the demo population: log-normal rates around 8 spikes/s.

    Returns
    -------
    data : SpikeData
    true_rates : ndarray (neuron,)
    """
    k_rate, k_spk = jax.random.split(key)
    rates = np.exp(POP_LOG_RATE + POP_SD * np.asarray(jax.random.normal(k_rate, (n_neuron,))))
    n_time = int(round(duration / bin_size))
    counts = np.asarray(jax.random.poisson(k_spk, rates * bin_size, (n_time, n_neuron)))
    ids = np.array([f"n{i:02d}" for i in range(n_neuron)])
    return SpikeData.from_counts(counts, bin_size=bin_size, neuron_ids=ids), rates


def run_demo(*, method: str = "nuts", seed: int = 0, progress: bool = True, fast: bool = False) -> dict:
    """Simulate, fit and print; returns the fit, the data and the timing.

    Parameters
    ----------
    method : {"map", "laplace", "svi", "nuts"}
    seed : int
        Seed of the simulation and the fit.
    progress : bool
        Show progress bars.
    fast : bool
        Smaller sampler settings (used by the tests).
    """
    key_sim, key_fit = jax.random.split(jax.random.key(seed))
    data, true_rates = simulate_population(key_sim, duration=10.0 if fast else 30.0)
    print(data)
    options = {
        "nuts": {"num_warmup": 300 if fast else 1000, "num_samples": 300 if fast else 1000, "num_chains": 2},
        "svi": {"num_steps": 1000 if fast else 5000},
    }.get(method, {})
    t0 = time.perf_counter()
    result = fit(
        population_rate_model, method=method, key=key_fit, counts=data.counts,
        bin_size=data.bin_size, coords=data.coords, progress=progress, **options,
    )
    elapsed = time.perf_counter() - t0
    table = result.summary(var_names=["pop_log_rate", "pop_sd", "rate"])
    col = "map" if method == "map" else "mean"
    table["true"] = np.concatenate([[POP_LOG_RATE, POP_SD], true_rates])
    print(f"\nHierarchical Poisson rate model fitted by {method} in {elapsed:.1f} s "
          f"(compilation included):\n")
    print(table.round(2).to_string())
    est = np.asarray(result.params["rate"])
    print(f"\nmedian |estimated - true| rate: {np.median(np.abs(est - true_rates)):.2f} spikes/s "
          f"(true rates {true_rates.min():.1f} to {true_rates.max():.1f}); column {col!r} is the estimate.")
    if method == "nuts":
        diag = result.diagnose(warn=False)
        print("diagnostics:", "ok" if diag.ok else " ".join(diag.problems))
    return {"result": result, "data": data, "true_rates": true_rates, "seconds": elapsed}
