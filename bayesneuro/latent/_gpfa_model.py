r"""Poisson GPFA as a plain NumPyro model, fitted through :func:`bayesneuro.infer.fit`.

For trial ``r``, bin ``t`` and neuron ``n`` (``dt`` the bin size in seconds)::

    z[r, :, i]      ~ Normal(0, I)                                 (whitened latent path)
    x[r, :, i]      = L_i z[r, :, i],  L_i L_i' = K_i               (GP prior, timescale tau_i)
    counts[r, t, n] ~ Poisson(dt * exp(C[n] . x[r, t] + d[n]))

``K_i`` is :func:`~bayesneuro.latent.gpfa.gpfa_kernel` (unit variance, GP noise ``eps``), the
loadings ``C`` have a standard normal prior (the latents' scale is fixed by ``K``), the offsets
``d`` (log spikes/s) a normal prior centred on the log mean rate, and each timescale a
log-normal prior. Trials are padded to one length and the padding masked, so unequal trials
work; the GP over a padded tail integrates out exactly. ``neuron_mask`` drops neurons from the
likelihood (co-smoothing: latents inferred from held-in neurons only).

Plates: ``trial`` (dim -2) and ``time`` (dim -1) for the paths (``latent`` an event dim), and
``trial_obs``/``time_obs``/``neuron`` (dims -3, -2, -1) for the counts, so the pointwise
log-likelihood is ``(trial, time, neuron)``; dims are named through :func:`poisson_gpfa_dims`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from .gpfa import gpfa_kernel

__all__ = ["poisson_gpfa_model", "poisson_gpfa_dims"]


def poisson_gpfa_model(
    counts=None,
    *,
    mask=None,
    neuron_mask=None,
    log_rate_mean=None,
    n_latents: int,
    n_trial: int,
    n_time: int,
    n_neuron: int,
    bin_size: float,
    kernel: str = "se",
    eps: float = 1e-3,
    timescale_prior: float = 10.0,
    timescales=None,
):
    """NumPyro model of Poisson GPFA (see the module docstring).

    Parameters
    ----------
    counts : array, shape (trial, time, neuron), optional
        Spike counts, trials padded to ``n_time`` bins.
    mask : array of bool, shape (trial, time), optional
        False on padded bins.
    neuron_mask : array of bool, shape (neuron,), optional
        False for neurons left out of the likelihood.
    log_rate_mean : array, shape (neuron,), optional
        Prior centre of the offsets (log spikes/s); default log 10.
    n_latents, n_trial, n_time, n_neuron : int
        Sizes.
    bin_size : float
        Seconds per bin.
    kernel : {"se", "matern32", "matern52"}
        GP correlation function.
    eps : float
        GP noise variance.
    timescale_prior : float
        Median of the log-normal prior (log-sd 1) on each timescale, in bins.
    timescales : array, shape (latent,), optional
        Fixed timescales in bins; default: learnt (the ``timescale_bins`` site).
    """
    q = n_latents
    if timescales is None:
        tau = numpyro.sample(
            "timescale_bins", dist.LogNormal(math.log(timescale_prior), 1.0).expand([q]).to_event(1)
        )
    else:
        tau = jnp.broadcast_to(jnp.asarray(timescales), (q,))
    numpyro.deterministic("timescale", tau * bin_size)
    K = jax.vmap(lambda s: gpfa_kernel(kernel, s, eps, n_time))(tau)  # (latent, time, time)
    L = jnp.linalg.cholesky(K)
    loadings = numpyro.sample("loadings", dist.Normal(0.0, 1.0).expand([n_neuron, q]).to_event(2))
    centre = jnp.log(10.0) if log_rate_mean is None else jnp.asarray(log_rate_mean)
    offsets = numpyro.sample(
        "offsets", dist.Normal(jnp.broadcast_to(centre, (n_neuron,)), 2.0).to_event(1)
    )
    with numpyro.plate("trial", n_trial, dim=-2), numpyro.plate("time", n_time, dim=-1):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([q]).to_event(1))  # (trial, time, latent)
    x = numpyro.deterministic("latents", jnp.einsum("kts,rsk->rtk", L, z))
    log_rate = x @ loadings.T + offsets  # (trial, time, neuron), log spikes/s
    mu = jnp.exp(log_rate) * bin_size
    keep = jnp.ones(mu.shape, bool)
    if mask is not None:
        keep = keep & jnp.asarray(mask, bool)[:, :, None]
    if neuron_mask is not None:
        keep = keep & jnp.asarray(neuron_mask, bool)
    with numpyro.plate("trial_obs", n_trial, dim=-3), numpyro.plate("time_obs", n_time, dim=-2), \
            numpyro.plate("neuron", n_neuron, dim=-1), numpyro.handlers.mask(mask=keep):
        numpyro.sample("counts", dist.Poisson(mu), obs=counts)


def poisson_gpfa_dims() -> dict[str, list[str]]:
    """Dim names of every site of :func:`poisson_gpfa_model` (for InferenceData)."""
    return {
        "timescale_bins": ["latent"],
        "timescale": ["latent"],
        "loadings": ["neuron", "latent"],
        "offsets": ["neuron"],
        "z": ["trial", "time", "latent"],
        "latents": ["trial", "time", "latent"],
        "counts": ["trial", "time", "neuron"],
        "mask": ["trial", "time"],
        "neuron_mask": ["neuron"],
        "log_rate_mean": ["neuron"],
        "timescales": ["latent"],
    }
