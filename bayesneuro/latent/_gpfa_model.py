r"""Poisson GPFA as a plain NumPyro model, fitted through :func:`bayesneuro.infer.fit`.

For trial ``r``, bin ``t`` and neuron ``n`` (``dt`` the bin size in seconds)::

    z[r, :, i]      ~ Normal(0, I)                                 (whitened latent path)
    x[r, :, i]      = L_i z[r, :, i],  L_i L_i' = K_i               (GP prior, timescale tau_i)
    counts[r, t, n] ~ Poisson(dt * exp(C[n] . x[r, t] + d[n]))

``K_i`` is :func:`~bayesneuro.latent.gpfa_gaussian.gpfa_kernel` (unit variance, GP noise ``eps``), the
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
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.linalg

from .._shapes import bucket_length
from .gpfa_gaussian import GPFAParams, gpfa_kernel
from .gpfa_poisson import PoissonGPFAParams, _poisson_chol, fit_poisson_gpfa_em

__all__ = ["poisson_gpfa_model", "poisson_gpfa_dims", "fit_poisson_gpfa"]

_INIT_SWEEPS = 10  # Laplace-EM sweeps (posteriors <-> read-outs) before the shared-layer fit
_EM_SWEEPS = 100  # ... at most, when MAP/Laplace learn the timescales by Laplace-EM
_EM_RTOL = 1e-6  # ... stopping when its objective changes less (relative to max(1, |objective|))


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
    offset = numpyro.sample(
        "offset", dist.Normal(jnp.broadcast_to(centre, (n_neuron,)), 2.0).to_event(1)
    )
    with numpyro.plate("trial", n_trial, dim=-2), numpyro.plate("time", n_time, dim=-1):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([q]).to_event(1))  # (trial, time, latent)
    x = numpyro.deterministic("latents", jnp.einsum("kts,rsk->rtk", L, z))
    log_rate = x @ loadings.T + offset  # (trial, time, neuron), log spikes/s
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
        "offset": ["neuron"],
        "z": ["trial", "time", "latent"],
        "latents": ["trial", "time", "latent"],
        "counts": ["trial", "time", "neuron"],
        "mask": ["trial", "time"],
        "neuron_mask": ["neuron"],
        "log_rate_mean": ["neuron"],
        "timescales": ["latent"],
    }


def fit_poisson_gpfa(counts, mask, start: GPFAParams, *, bin_size: float, trials, neuron_ids, kernel: str,
                     eps: float, learn_timescales: bool, init_timescale: float, method: str, key, progress: bool,
                     options: dict):
    """Fit :func:`poisson_gpfa_model` by ``method`` from a Gaussian GPFA of the square-root counts.

    The Gaussian start's loadings are mapped to the log-rate scale (``d log(s^2) = 2 ds / s``,
    ``s`` the mean square-root count), refined by Laplace-EM
    (:func:`~bayesneuro.latent.gpfa_poisson.fit_poisson_gpfa_em`; with ``learn_timescales`` under
    MAP/Laplace it also sets the timescales, empirical Bayes, since the joint mode of paths and
    timescales has no penalty on short ones), and the paths whitened at the Laplace modes; that
    start goes to :func:`bayesneuro.infer.fit` (timescales fixed for MAP/Laplace, learnt under
    their prior for SVI/NUTS).

    Parameters
    ----------
    counts : numpy.ndarray, shape (trial, time, neuron)
        Zero-padded counts.
    mask : numpy.ndarray of bool, shape (trial, time)
        False on padded bins.
    start : GPFAParams
        Gaussian GPFA of the square-root counts (timescales in bins).
    bin_size : float
    trials, neuron_ids : array_like
        Coordinates of the fit.
    kernel, eps, learn_timescales, init_timescale
        As :class:`~bayesneuro.latent.gpfa.GPFA` (``init_timescale`` in seconds).
    method : {"map", "laplace", "svi", "nuts"}
    key : jax.random key or None
        None only for ``"map"`` (deterministic from this start).
    progress : bool
    options : dict
        Method options of :func:`bayesneuro.infer.fit`.

    Returns
    -------
    result : bayesneuro.infer.FitResult
    em_params : PoissonGPFAParams
        After Laplace-EM (its timescales are those of the fit unless SVI/NUTS learn them).
    trace : numpy.ndarray
        The Laplace-EM objective per sweep.
    """
    from numpyro.infer import init_to_value

    from ..infer import fit as _fit

    dt = float(bin_size)
    lengths = mask.sum(axis=1)
    n_trial, T, n_neuron = counts.shape
    q = start.loadings.shape[1]
    s_mean = np.maximum(np.asarray(start.offset), 0.1)
    C0 = 2.0 * np.asarray(start.loadings) / s_mean[:, None]
    d0 = np.log(counts.sum(axis=(0, 1)) / lengths.sum() / dt)
    tau0 = np.asarray(start.timescales) if learn_timescales else np.full(q, init_timescale / dt)
    learn_tau = learn_timescales and method in ("map", "laplace")
    p0 = PoissonGPFAParams(jnp.asarray(C0), jnp.asarray(d0), jnp.asarray(tau0), jnp.asarray(start.eps))
    em = fit_poisson_gpfa_em(p0, [counts[k, : lengths[k]] for k in range(n_trial)], bin_size=dt, kernel=kernel,
                             offset_prior_mean=d0, learn_timescales=learn_tau,
                             max_iter=_EM_SWEEPS if learn_tau else _INIT_SWEEPS, tol=_EM_RTOL, progress=False,
                             warn=False)
    p0 = em.params
    # the last E-step's modes of the latents, whitened by the final timescales (L is lower
    # triangular, so a trial's first Tk bins need only L's first Tk rows)
    L = np.asarray(_poisson_chol(p0, bucket_length(T), kernel))  # its leading block: K's over T bins
    z0 = np.zeros((n_trial, T, q))
    for k, Tk in enumerate(lengths):
        for i in range(q):
            z0[k, :Tk, i] = scipy.linalg.solve_triangular(L[i, :Tk, :Tk], em.modes[k][:, i], lower=True)
    values = {"loadings": np.asarray(p0.loadings), "offset": np.asarray(p0.offset), "z": z0}
    extra = {}
    if learn_timescales and method in ("svi", "nuts"):
        values["timescale_bins"] = np.asarray(p0.timescales)
    else:
        extra["timescales"] = np.asarray(p0.timescales)
    coords = {"trial": trials, "time": (np.arange(T) + 0.5) * dt, "neuron": neuron_ids, "latent": np.arange(q)}
    y = counts.astype(np.float64)
    # MAP pads trials and bins to bucket lengths (masked), so a recording with other trial lengths or
    # counts in the same buckets reuses the compiled optimiser. Exact: a padded bin has no
    # observation and comes after the trial's real ones (the whitened paths are causal, x = L z),
    # so its path stays at the prior mode 0, where the optimiser never moves it (zero gradient
    # along it from a zero start); the mode of the real paths and read-outs is the unpadded one.
    n_trial_fit, T_fit = (bucket_length(n_trial, minimum=1), bucket_length(T)) if method == "map" else (n_trial, T)
    if (n_trial_fit, T_fit) != (n_trial, T):
        y = np.pad(y, ((0, n_trial_fit - n_trial), (0, T_fit - T), (0, 0)))
        mask = np.pad(mask, ((0, n_trial_fit - n_trial), (0, T_fit - T)))
        values["z"] = np.pad(values["z"], ((0, n_trial_fit - n_trial), (0, T_fit - T), (0, 0)))
        coords.update(trial=np.arange(n_trial_fit), time=np.arange(T_fit))  # the data's, below
    options = dict(options)
    options.setdefault("init_strategy", init_to_value(values={k: jnp.asarray(v) for k, v in values.items()}))
    result = _fit(
        poisson_gpfa_model, method=method, key=jax.random.key(0) if key is None else key, coords=coords,
        dims=poisson_gpfa_dims(), progress=progress, counts=y, mask=mask,
        log_rate_mean=d0, n_latents=q, n_trial=n_trial_fit, n_time=T_fit, n_neuron=n_neuron, bin_size=dt,
        kernel=kernel, eps=eps, timescale_prior=init_timescale / dt, **extra, **options,
    )
    if (n_trial_fit, T_fit) != (n_trial, T):  # the result describes the data's trials and bins
        n_extra = (n_trial_fit * T_fit - n_trial * T) * q
        result.samples = {k: (np.asarray(v)[:, :, :n_trial, :T] if k in ("z", "latents") else v)
                          for k, v in result.samples.items()}
        kw = result.model_kwargs
        result.model_kwargs = {**kw, "counts": np.asarray(kw["counts"])[:n_trial, :T],
                               "mask": np.asarray(kw["mask"])[:n_trial, :T], "n_trial": n_trial, "n_time": T}
        result.coords = {**result.coords, "trial": trials, "time": (np.arange(T) + 0.5) * dt}
        # the padded paths' prior terms at their mode 0: 0.5 log(2 pi) each in the negative log joint
        result.info["objective"] = result.info["objective"] - n_extra * 0.5 * math.log(2 * math.pi)
    return result, p0, em.objective
