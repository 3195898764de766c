r"""Gaussian-process factor analysis (GPFA; Yu et al. 2009) fitted by exact EM.

For one trial of ``n_time`` bins, with dims ``time``, ``latent`` and ``neuron``, each latent is
an independent Gaussian process over bin indices and the (square-root transformed) counts are a
noisy linear read-out:

.. math::

    x_i(\cdot) &\sim \mathcal{GP}(0, K_i), \quad
        K_i(t, t') = (1 - \varepsilon_i)\, k\!\left(\frac{|t - t'|}{\tau_i}\right)
                     + \varepsilon_i\, \delta_{tt'}, \\
    y_t \mid x_t &\sim \mathcal{N}(C x_t + d,\ \operatorname{diag}(R)),

with ``k`` the squared-exponential (``"se"``: :math:`e^{-r^2/2}`, as elephant's ``'rbf'``),
Matérn-3/2 or Matérn-5/2 correlation, timescales :math:`\tau_i` in bins and a fixed GP noise
variance :math:`\varepsilon_i` (elephant's ``eps``, default ``1e-3``), so ``K_i(t, t) = 1``.

The E-step is exact. All trials of one length share the prior ``K`` and the posterior
covariance, so they are conditioned together: with ``L_i`` the Cholesky factors of ``K_i``,
``B = (C^T R^{-1} C) \otimes I_T`` and ``S = I + L^T B L`` (latent-major order, size
``latent * time``),

.. math::

    b = (I_T \otimes C^T R^{-1})(y - d), \quad \Sigma = L S^{-1} L^T, \quad \mu = \Sigma b, \quad
    \log p(y) = \log \mathcal{N}(y - d;\, 0,\, R) - \tfrac12 \log|S|
                + \tfrac12 \lVert \mathrm{chol}(S)^{-1} L^T b \rVert^2,

which never inverts ``K`` (``S`` has eigenvalues >= 1). The M-step is elephant's: ``[C, d]`` by
least squares on the expected statistics, ``R`` diagonal with the floor
``min_var_frac * var(y)`` (Martin & McDonald 1975, against Heywood cases), and each log
timescale maximising the expected complete-data log-likelihood of its GP, by safeguarded Newton
steps with closed-form first and second derivatives (elephant: L-BFGS-B on ``log gamma``,
``gamma = 1 / tau^2``, which stops earlier), so EM never decreases the likelihood. The
convergence test is elephant's too (gain of the last step below ``tol`` times the gain since
step 2). Each EM step is one jitted call; by default the steps are accelerated by SQUAREM.

Pure functions
    :func:`gpfa_kernel`, :func:`gpfa_posterior`, :func:`gpfa_log_likelihood`,
    :func:`gpfa_predict_left_out`, :func:`gpfa_sample`, :func:`init_gpfa_params` (factor
    analysis), :func:`gpfa_em_step` and :func:`fit_gpfa_em` work on arrays in the model's units
    (timescales in bins). Trials are a ``(trial, time, neuron)`` array or a list of
    ``(time, neuron)`` arrays of any lengths.
Estimator
    :class:`GPFA` fits :class:`~bayesneuro.data.SpikeData` (square-root counts by default) and
    returns latents as :mod:`xarray` objects; :func:`choose_n_latents` picks the dimensionality
    by cross-validated leave-neuron-out prediction.

References
----------
Yu, B. M., Cunningham, J. P., Santhanam, G., Ryu, S. I., Shenoy, K. V. & Sahani, M. (2009).
Gaussian-process factor analysis for low-dimensional single-trial analysis of neural population
activity. *J. Neurophysiol.* 102, 614-635.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular

from .._pynapple import pynapple_io

__all__ = [
    "KERNELS",
    "GPFAParams",
    "GPFAPosterior",
    "PoissonGPFAParams",
    "PoissonGPFAPosterior",
    "poisson_gpfa_posterior",
    "GPFAEMResult",
    "GPFASimulation",
    "NLatentsSelection",
    "gpfa_kernel",
    "gpfa_posterior",
    "gpfa_log_likelihood",
    "gpfa_predict_left_out",
    "gpfa_sample",
    "init_gpfa_params",
    "gpfa_em_step",
    "fit_gpfa_em",
    "GPFA",
    "choose_n_latents",
]

KERNELS = ("se", "matern32", "matern52")
OBSERVATIONS = {"gaussian": ("em",), "poisson": ("map", "laplace", "svi", "nuts")}  # allowed methods
_LOG_2PI = math.log(2.0 * math.pi)
_INIT_SWEEPS = 10  # Poisson start: Laplace-EM sweeps (posteriors <-> read-outs) before the shared-layer fit
_EM_SWEEPS = 100  # ... at most, when MAP/Laplace learn the timescales by Laplace-EM
_EM_RTOL = 1e-6  # ... stopping when its objective changes less (relative) and timescales by < 0.1 %
_LOG_TAU_BOUNDS = (math.log(1e-2), math.log(1e5))  # timescales in bins, a guard against runaway


class GPFAParams(NamedTuple):
    """Parameters of a GPFA model (see the module docstring), in bins.

    Attributes
    ----------
    loadings : Array
        :math:`C`, shape ``(neuron, latent)``.
    offsets : Array
        :math:`d`, shape ``(neuron,)``.
    noise_var : Array
        Diagonal of :math:`R`, shape ``(neuron,)``, positive.
    timescales : Array
        :math:`\\tau`, shape ``(latent,)``, in bins (seconds / bin size).
    eps : Array
        GP noise variances :math:`\\varepsilon`, shape ``(latent,)``, in ``(0, 1)``; held fixed.
    """

    loadings: jax.Array
    offsets: jax.Array
    noise_var: jax.Array
    timescales: jax.Array
    eps: jax.Array


class GPFAPosterior(NamedTuple):
    """Exact posterior of the latents of equal-length trials (output of :func:`gpfa_posterior`).

    Attributes
    ----------
    mean : Array
        Posterior means, shape ``(trial, time, latent)``.
    cov : Array
        Posterior covariance, shared by the trials, shape ``(latent, time, latent, time)``.
    log_likelihood : Array
        Marginal log-likelihood ``log p(y)`` of each trial, shape ``(trial,)``.
    """

    mean: jax.Array
    cov: jax.Array
    log_likelihood: jax.Array


class GPFAEMResult(NamedTuple):
    """Output of :func:`fit_gpfa_em`.

    Attributes
    ----------
    params : GPFAParams
        The parameters after the last EM step.
    log_likelihoods : numpy.ndarray
        Total log-likelihood of the parameters visited, never decreasing; the last entry
        belongs to ``params``. Plain EM: ``log_likelihoods[k]`` after ``k`` EM steps (entry 0:
        the start; elephant's ``lls`` with ``freq_ll=1`` are ``log_likelihoods[:-1]``).
        SQUAREM: the point accepted in each cycle (entry 0: the start), then ``params``.
    n_iter : int
        EM steps taken (E-steps: each costs one posterior of every trial).
    converged : bool
        Whether the ``tol`` criterion stopped the run before ``max_iter`` steps.
    n_estep : numpy.ndarray of int
        For each entry of ``log_likelihoods``, the E-steps (posteriors of all trials, the cost
        unit) run until it was known, that entry's own included: ``1, 2, ..., n_iter + 1`` for
        plain EM; fewer per unit of log-likelihood with SQUAREM.
    """

    params: GPFAParams
    log_likelihoods: np.ndarray
    n_iter: int
    converged: bool
    n_estep: np.ndarray


class GPFASimulation(NamedTuple):
    """Draws from a GPFA model (output of :meth:`GPFA.simulate`).

    Attributes
    ----------
    observations : numpy.ndarray
        Shape ``(trial, time, neuron)``, on the model's scale (square-root counts for
        ``transform="sqrt"``): Gaussian, so not counts.
    latents : numpy.ndarray
        Shape ``(trial, time, latent)``, in the basis of ``loadings_`` (not orthonormalised).
    """

    observations: np.ndarray
    latents: np.ndarray


class NLatentsSelection(NamedTuple):
    """Output of :func:`choose_n_latents`.

    Attributes
    ----------
    errors : xarray.DataArray
        Leave-neuron-out squared prediction error on each fold's held-out trials, dims
        ``(n_latents, fold)``; the sum over folds covers every trial once.
    best : int
        The candidate with the smallest total error.
    """

    errors: Any
    best: int


# ----------------------------------------------------------------------------- pure maths


def gpfa_kernel(kernel: str, timescale, eps, n_time: int) -> jax.Array:
    r"""Prior covariance ``(1 - eps) k(|t - t'| / timescale) + eps I`` of one latent over bins.

    Parameters
    ----------
    kernel : {"se", "matern32", "matern52"}
        Correlation ``k(r)``: :math:`e^{-r^2/2}`, :math:`(1 + \sqrt3 r) e^{-\sqrt3 r}` or
        :math:`(1 + \sqrt5 r + 5r^2/3) e^{-\sqrt5 r}`.
    timescale : float
        In bins.
    eps : float
        GP noise variance.
    n_time : int
        Number of bins.

    Returns
    -------
    Array, shape (n_time, n_time)

    Examples
    --------
    >>> from bayesneuro.latent.gpfa import gpfa_kernel
    >>> K = gpfa_kernel("se", 2.0, 1e-3, 3)
    >>> K.shape, round(float(K[0, 0]), 6), round(float(K[0, 1]), 4)
    ((3, 3), 1.0, 0.8816)
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    lag = jnp.arange(n_time)
    r = jnp.abs(lag[:, None] - lag[None, :]) / timescale
    if kernel == "se":
        k = jnp.exp(-0.5 * r**2)
    elif kernel == "matern32":
        a = math.sqrt(3.0) * r
        k = (1.0 + a) * jnp.exp(-a)
    else:
        a = math.sqrt(5.0) * r
        k = (1.0 + a + a**2 / 3.0) * jnp.exp(-a)
    return (1.0 - eps) * k + eps * jnp.eye(n_time, dtype=k.dtype)


def _prior_chol(params: GPFAParams, n_time: int, kernel: str) -> jax.Array:
    K = jax.vmap(lambda tau, e: gpfa_kernel(kernel, tau, e, n_time))(params.timescales, params.eps)
    return jnp.linalg.cholesky(K)  # (latent, time, time)


def _precision_chol(C, rinv, L):
    """Cholesky factor of ``S = I + L^T ((C^T R^{-1} C) kron I) L``, latent-major."""
    q, T = L.shape[0], L.shape[1]
    CRC = (C * rinv[:, None]).T @ C
    S = jnp.einsum("ij,iut,jus->itjs", CRC, L, L).reshape(q * T, q * T)
    return jnp.linalg.cholesky(S + jnp.eye(q * T, dtype=S.dtype))


def _posterior_mean(C, d, rinv, L, Ls, y):
    """Posterior means ``(trial, time, latent)`` and ``z = chol(S)^{-1} L^T b`` ``(q T, trial)``."""
    n, T = y.shape[0], y.shape[1]
    q = C.shape[1]
    b = jnp.einsum("ntk,ki->nit", y - d, C * rinv[:, None])
    v = jnp.einsum("iut,niu->nit", L, b).reshape(n, q * T)
    z = solve_triangular(Ls, v.T, lower=True)
    w = solve_triangular(Ls, z, lower=True, trans=1).T.reshape(n, q, T)
    return jnp.einsum("itu,niu->nti", L, w), z


def _cov_factor(Ls, L):
    """``G = chol(S)^{-1} L^T`` ``(latent time, latent, time)``, so that ``Sigma = G^T G``."""
    q, T = L.shape[0], L.shape[1]
    LT = jnp.einsum("ij,itu->iujt", jnp.eye(q, dtype=L.dtype), L).reshape(q * T, q * T)
    return solve_triangular(Ls, LT, lower=True).reshape(q * T, q, T)


@partial(jax.jit, static_argnames="kernel")
def _posterior(params: GPFAParams, y, kernel: str) -> GPFAPosterior:
    C, d, R = params.loadings, params.offsets, params.noise_var
    n, T, N = y.shape
    q = C.shape[1]
    L = _prior_chol(params, T, kernel)
    rinv = 1.0 / R
    Ls = _precision_chol(C, rinv, L)
    mean, z = _posterior_mean(C, d, rinv, L, Ls, y)
    G = _cov_factor(Ls, L).reshape(q * T, q * T)
    cov = (G.T @ G).reshape(q, T, q, T)
    quad = jnp.sum((y - d) ** 2 * rinv, axis=(1, 2)) - jnp.sum(z**2, axis=0)
    logdet = T * jnp.sum(jnp.log(R)) + 2.0 * jnp.sum(jnp.log(jnp.diag(Ls)))
    ll = -0.5 * (N * T * _LOG_2PI + logdet + quad)
    return GPFAPosterior(mean, cov, ll)


def _estep_stats(params: GPFAParams, y, kernel: str):
    """What the M-step needs from the posterior of trials of one length, without ``Sigma``.

    Returns the means ``(trial, time, latent)``, ``sum_t Sigma[i, t, j, t]`` ``(latent,
    latent)``, the per-latent blocks ``Sigma[i, :, i, :]`` ``(latent, time, time)`` and the
    summed ``log p(y)``. With ``G = chol(S)^{-1} L^T``, ``Sigma = G^T G``; only these two
    contractions of it are formed (``q^2 T (qT) + q T^2 (qT)`` flops, not ``(qT)^3``).
    """
    C, d, R = params.loadings, params.offsets, params.noise_var
    n, T, N = y.shape
    q = C.shape[1]
    L = _prior_chol(params, T, kernel)
    rinv = 1.0 / R
    Ls = _precision_chol(C, rinv, L)
    mean, z = _posterior_mean(C, d, rinv, L, Ls, y)
    G = _cov_factor(Ls, L)
    cov_tt = jnp.einsum("ait,ajt->ij", G, G)
    cov_blocks = jnp.einsum("ait,ais->its", G, G)
    quad = jnp.sum((y - d) ** 2 * rinv) - jnp.sum(z**2)
    logdet = T * jnp.sum(jnp.log(R)) + 2.0 * jnp.sum(jnp.log(jnp.diag(Ls)))
    ll = -0.5 * (n * (N * T * _LOG_2PI + logdet) + quad)
    return mean, cov_tt, cov_blocks, ll


def _timescale_objective(log_tau, eps, P, n, kernel, derivatives=False):
    """Negative expected complete-data log-likelihood of one latent's GP (up to constants).

    ``f = 0.5 * sum_g [n_g log|K_g| + tr(K_g^{-1} P_g)]`` over groups of trials of equal length,
    ``P_g = sum_trials E[x x^T]``; with ``derivatives``, also its first and second derivatives
    in ``log_tau`` (closed form from ``dK`` and ``d2K``, which are elementwise).
    """
    f = g = h = 0.0
    for P_g, n_g in zip(P, n):
        T = P_g.shape[0]
        kern = lambda x: gpfa_kernel(kernel, jnp.exp(x), eps, T)  # noqa: E731
        Lk = jnp.linalg.cholesky(kern(log_tau))
        if not derivatives:
            W = solve_triangular(Lk, P_g, lower=True)
            W = solve_triangular(Lk, W.T, lower=True)  # Lk^{-1} P Lk^{-T} (P symmetric)
            f = f + n_g * jnp.sum(jnp.log(jnp.diag(Lk))) + 0.5 * jnp.trace(W)
            continue
        Ki = cho_solve((Lk, True), jnp.eye(T, dtype=Lk.dtype))
        KiP = Ki @ P_g
        f = f + n_g * jnp.sum(jnp.log(jnp.diag(Lk))) + 0.5 * jnp.trace(KiP)
        one = jnp.ones_like(log_tau)
        K1, K2 = jax.jvp(lambda x: jax.jvp(kern, (x,), (one,))[1], (log_tau,), (one,))
        A1 = Ki @ K1
        B = KiP @ Ki
        # traces of products of symmetric matrices as elementwise sums: no A2, no A1 @ A1
        g = g + 0.5 * (n_g * jnp.sum(Ki * K1) - jnp.sum(K1 * B))
        h = h + 0.5 * (n_g * (jnp.sum(Ki * K2) - jnp.sum(A1 * A1.T)) - jnp.sum(K2 * B)
                       + 2.0 * jnp.sum(A1 * (B @ K1).T))
    return (f, g, h) if derivatives else f


def _newton_batch(fun, x0, lo, hi, max_iter=50):
    """Minimise independent smooth scalar functions on ``[lo, hi]`` by safeguarded Newton steps.

    ``fun(x)`` maps ``x`` of shape ``(m,)`` to ``(f, f', f'')``, each ``(m,)``, the ``m``
    problems independent (here: one per latent, evaluated together as one batch). Steps are
    Newton's where ``f'' > 0`` (else a unit step downhill), at most 1 in size; a step that
    increases ``f`` is halved and retried. A problem stops when its Newton decrement
    ``f'^2 / f''`` falls below ``1e-15 (1 + |f|)`` (taking that last step if it does not
    increase ``f``), when its step vanishes or has been halved 40 times; all stop after
    ``max_iter`` evaluations.
    """
    def direction(x, g, h):
        convex = h > 0
        step = jnp.where(convex, -g / jnp.where(convex, h, 1.0), -jnp.sign(g))
        return jnp.clip(x + jnp.clip(step, -1.0, 1.0), lo, hi) - x

    def body(state):
        x, f, g, h, t, done, it = state
        step = t * direction(x, g, h)
        conv = (h > 0) & (g * g / jnp.where(h > 0, h, 1.0) <= 1e-15 * (1.0 + jnp.abs(f)))
        fc, gc, hc = fun(x + step)
        ok = (fc <= f) & ~done
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        t_new = jnp.where(ok, 1.0, 0.5 * t)
        done = done | conv | (step == 0) | (t_new < 2.0**-40)
        return keep(x + step, x), keep(fc, f), keep(gc, g), keep(hc, h), t_new, done, it + 1

    f0, g0, h0 = fun(x0)
    init = (x0, f0, g0, h0, jnp.ones_like(x0), jnp.zeros(x0.shape, bool), 0)
    x, *_ = lax.while_loop(lambda s: ~jnp.all(s[5]) & (s[6] < max_iter), body, init)
    return x


@partial(jax.jit, static_argnames=("kernel", "learn_timescales"))
def _em_step(params: GPFAParams, groups: tuple, var_floor, kernel: str, learn_timescales: bool):
    """One EM step on trials grouped by length; returns the new parameters and ``log p(y)``."""
    C = params.loadings
    q = C.shape[1]
    stats = [_estep_stats(params, y, kernel) for y in groups]
    ll = sum(s[3] for s in stats)
    sum_xx = sum(y.shape[0] * s[1] + jnp.einsum("nti,ntj->ij", s[0], s[0]) for y, s in zip(groups, stats))
    sum_x = sum(s[0].sum(axis=(0, 1)) for s in stats)
    sum_yx = sum(jnp.einsum("ntk,nti->ki", y, s[0]) for y, s in zip(groups, stats))
    sum_y = sum(y.sum(axis=(0, 1)) for y in groups)
    sum_yy = sum((y**2).sum(axis=(0, 1)) for y in groups)
    n_bins = sum(y.shape[0] * y.shape[1] for y in groups)
    term = jnp.block([[sum_xx, sum_x[:, None]], [sum_x[None, :], jnp.full((1, 1), n_bins, sum_x.dtype)]])
    rhs = jnp.concatenate([sum_yx, sum_y[:, None]], axis=1)
    cd = jnp.linalg.solve(term, rhs.T).T
    C_new, d_new = cd[:, :q], cd[:, q]
    resid = sum_yy - 2.0 * sum_y * d_new - jnp.sum((sum_yx - d_new[:, None] * sum_x[None, :]) * C_new, axis=1)
    R_new = jnp.maximum(var_floor, d_new**2 + resid / n_bins)
    tau = params.timescales
    if learn_timescales:
        P = [y.shape[0] * s[2] + jnp.einsum("nti,nsi->its", s[0], s[0]) for y, s in zip(groups, stats)]
        n = [y.shape[0] for y in groups]
        lo, hi = _LOG_TAU_BOUNDS

        objective = jax.vmap(lambda x, e, P_i: _timescale_objective(x, e, P_i, n, kernel, True))
        log_tau = _newton_batch(lambda x: objective(x, params.eps, P), jnp.clip(jnp.log(tau), lo, hi), lo, hi)
        tau = jnp.exp(log_tau)
    return GPFAParams(C_new, d_new, R_new, tau, params.eps), ll


def _predictive(params: GPFAParams, y, kernel: str, weight, variance: bool = True):
    """Predictive mean ``(trial, time, neuron)`` and variance ``(time, neuron)`` of every
    neuron's observation given the neurons with ``weight`` 1 (``weight`` in {0, 1}, (neuron,)):
    ``C E[x | y_obs] + d`` and ``diag(C Sigma_t C^T) + R`` (None without ``variance``, which
    saves the ``(latent time)^3`` solve)."""
    C, d = params.loadings, params.offsets
    q, T = C.shape[1], y.shape[1]
    L = _prior_chol(params, T, kernel)
    rinv = weight / params.noise_var
    Ls = _precision_chol(C, rinv, L)
    mean, _ = _posterior_mean(C, d, rinv, L, Ls, y)
    if not variance:
        return mean @ C.T + d, None
    G = _cov_factor(Ls, L)
    var = jnp.sum(jnp.einsum("ki,ait->atk", C, G) ** 2, axis=0) + params.noise_var
    return mean @ C.T + d, var


@partial(jax.jit, static_argnames="kernel")
def _predictive_given(params: GPFAParams, y, kernel: str, weight):
    return _predictive(params, y, kernel, weight)


@partial(jax.jit, static_argnames="kernel")
def _left_out_moments(params: GPFAParams, y, kernel: str):
    """Leave-one-neuron-out predictive mean ``(trial, time, neuron)`` and variance ``(time, neuron)``."""
    N = params.loadings.shape[0]

    def one(k):
        m, v = _predictive(params, y, kernel, jnp.ones(N, y.dtype).at[k].set(0.0))
        return m[..., k], v[:, k]

    m, v = lax.map(one, jnp.arange(N))
    return jnp.moveaxis(m, 0, -1), jnp.moveaxis(v, 0, -1)


@partial(jax.jit, static_argnames="kernel")
def _poisson_rates_given(params: PoissonGPFAParams, y, bin_size, kernel: str, weight):
    """Rates (spikes/s) of every neuron, ``E[exp(C x + d)]`` under the posterior given the neurons
    with ``weight`` 1."""
    post = _poisson_laplace(params, y, weight, bin_size, kernel)
    V = jnp.einsum("ritjt->rtij", post.cov)
    C = params.loadings
    return jnp.exp(post.mean @ C.T + params.offsets + 0.5 * jnp.einsum("ki,rtij,kj->rtk", C, V, C))


@partial(jax.jit, static_argnames="kernel")
def _left_out(params: GPFAParams, y, kernel: str):
    """Leave-one-neuron-out predictive means ``(trial, time, neuron)``."""
    N = params.loadings.shape[0]

    def one(k):
        return _predictive(params, y, kernel, jnp.ones(N, y.dtype).at[k].set(0.0), variance=False)[0][..., k]

    return jnp.moveaxis(lax.map(one, jnp.arange(N)), 0, -1)


# ----------------------------------------------------------------------------- Poisson GPFA maths


class PoissonGPFAParams(NamedTuple):
    """Parameters of Poisson GPFA, ``counts ~ Poisson(dt exp(C x + d))``, timescales in bins.

    Attributes
    ----------
    loadings : Array
        :math:`C`, shape ``(neuron, latent)``.
    offsets : Array
        :math:`d`, shape ``(neuron,)``, log spikes/s.
    timescales : Array
        :math:`\\tau`, shape ``(latent,)``, in bins.
    eps : Array
        GP noise variances, shape ``(latent,)``, in ``(0, 1)``.
    """

    loadings: jax.Array
    offsets: jax.Array
    timescales: jax.Array
    eps: jax.Array


class PoissonGPFAPosterior(NamedTuple):
    """Laplace posterior of the latents of equal-length trials at fixed parameters.

    Attributes
    ----------
    mean : Array
        Posterior modes, shape ``(trial, time, latent)``.
    cov : Array
        Inverse Hessian of the negative log joint at the mode, per trial,
        shape ``(trial, latent, time, latent, time)``.
    log_marginal : Array
        Laplace approximation of ``log p(counts)`` of each trial, shape ``(trial,)``.
    """

    mean: jax.Array
    cov: jax.Array
    log_marginal: jax.Array


def _poisson_chol(params, n_time: int, kernel: str) -> jax.Array:
    K = jax.vmap(lambda tau, e: gpfa_kernel(kernel, tau, e, n_time))(params.timescales, params.eps)
    return jnp.linalg.cholesky(K)  # (latent, time, time)


@partial(jax.jit, static_argnames=("kernel", "max_iter"))
def _poisson_laplace(params: PoissonGPFAParams, y, weight, bin_size, kernel: str, max_iter: int = 100):
    """Newton's method on the whitened paths ``z`` (``x_i = L_i z_i``) of each trial.

    ``f(z) = sum_{t,n} w_n (dt e^{eta} - y eta) + |z|^2 / 2``, ``eta = C x + d``; the Hessian
    ``I + L^T W L`` (``W`` block-diagonal in time) is positive definite, so Newton with
    step halving converges; ``weight`` (neuron,) in {0, 1} drops neurons (co-smoothing).
    """
    C, d = params.loadings, params.offsets
    q, N = C.shape[1], C.shape[0]
    T = y.shape[1]
    L = _poisson_chol(params, T, kernel)
    log_dt = jnp.log(bin_size)
    eye = jnp.eye(q * T, dtype=C.dtype)

    def eta_of(z):  # z (latent, time) -> (time, neuron)
        return jnp.einsum("its,is->ti", L, z) @ C.T + d + log_dt

    def f(z, yr):
        eta = eta_of(z)
        return jnp.sum(weight * (jnp.exp(eta) - yr * eta)) + 0.5 * jnp.sum(z**2)

    def grad_hess(z, yr):
        eta = eta_of(z)
        lam = jnp.exp(eta) * weight
        gx = (lam - yr * weight) @ C  # (time, latent)
        g = jnp.einsum("its,ti->is", L, gx) + z
        W = jnp.einsum("ni,tn,nj->tij", C, lam, C)
        H = jnp.einsum("its,tij,jtu->isju", L, W, L).reshape(q * T, q * T) + eye
        return g, H

    def one(yr):
        # One loop, no nested line-search loop (nested while loops deadlocked XLA's CPU runtime):
        # a step that increases f is halved and retried in the next iteration.
        def newton_step(z):
            g, H = grad_hess(z, yr)
            step = -cho_solve((jnp.linalg.cholesky(H), True), g.reshape(-1)).reshape(q, T)
            return step, -jnp.sum(g * step)

        def body(state):
            z, fz, step, dec, t, it, _ = state
            zt = z + t * step
            ft = f(zt, yr)
            ok = ft <= fz
            conv = dec <= 1e-14 * (1.0 + jnp.abs(fz))
            z_new, f_new = jnp.where(ok, zt, z), jnp.where(ok, ft, fz)
            step_new, dec_new = newton_step(z_new)
            t_new = jnp.where(ok, 1.0, 0.5 * t)
            done = conv | (t_new < 2.0**-40)  # converged (the step taken if it did not increase f)
            return z_new, f_new, step_new, dec_new, t_new, it + 1, done

        z0 = jnp.zeros((q, T), C.dtype)
        s0, d0 = newton_step(z0)
        init = (z0, f(z0, yr), s0, d0, jnp.ones((), z0.dtype), 0, jnp.zeros((), bool))
        z, fz, *_ = lax.while_loop(lambda s: ~s[6] & (s[5] < max_iter), body, init)
        _, H = grad_hess(z, yr)
        Lh = jnp.linalg.cholesky(H)
        G = _cov_factor(Lh, L).reshape(q * T, q * T)
        cov = (G.T @ G).reshape(q, T, q, T)
        const = jnp.sum(weight * jax.scipy.special.gammaln(yr + 1.0))
        log_marg = -fz - const - jnp.sum(jnp.log(jnp.diag(Lh)))
        return jnp.einsum("its,is->ti", L, z), cov, log_marg

    mean, cov, lm = jax.vmap(one)(y)
    return PoissonGPFAPosterior(mean, cov, lm)


def _poisson_left_out(params: PoissonGPFAParams, y, bin_size, kernel: str):
    """Rates (spikes/s) of each neuron, ``E[exp(C_k x + d_k)]`` under the posterior without it.

    A Python loop over neurons (one jitted Laplace pass each), not ``lax.map``: a map around the
    Newton while loop is a nested loop, which deadlocked XLA's CPU runtime."""
    N = params.loadings.shape[0]
    out = []
    for k in range(N):
        w = jnp.ones(N, params.loadings.dtype).at[k].set(0.0)
        out.append(_poisson_rates_given(params, y, bin_size, kernel, w)[..., k])
    return jnp.stack(out, axis=-1)


def _check_poisson_params(params) -> PoissonGPFAParams:
    if not isinstance(params, PoissonGPFAParams):
        raise TypeError(f"params must be a PoissonGPFAParams, got {type(params).__name__}")
    p = PoissonGPFAParams(*(jnp.asarray(np.asarray(x, dtype=np.float64)) for x in params))
    if p.loadings.ndim != 2:
        raise ValueError(f"loadings must be (neuron, latent), got shape {p.loadings.shape}")
    N, q = p.loadings.shape
    for name, x, shape in [("offsets", p.offsets, (N,)), ("timescales", p.timescales, (q,)), ("eps", p.eps, (q,))]:
        if x.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in p):
        raise ValueError("PoissonGPFAParams contain NaN or infinite values")
    if bool(jnp.any(p.timescales <= 0)) or bool(jnp.any((p.eps <= 0) | (p.eps >= 1))):
        raise ValueError("timescales must be positive and eps in (0, 1)")
    return p


def poisson_gpfa_posterior(params: PoissonGPFAParams, counts, *, bin_size: float, kernel: str = "se",
                           neuron_mask=None) -> PoissonGPFAPosterior:
    r"""Laplace posterior of the latents of Poisson GPFA at fixed parameters (equal-length trials).

    The mode of :math:`\log p(y \mid x) + \log \mathcal N(x; 0, K)` by Newton's method in the
    whitened coordinates, and the inverse Hessian there.

    Parameters
    ----------
    params : PoissonGPFAParams
    counts : array_like, shape (trial, time, neuron) or (time, neuron)
    bin_size : float
        Seconds per bin.
    kernel : {"se", "matern32", "matern52"}
    neuron_mask : array_like of bool, shape (neuron,), optional
        False for neurons left out of the likelihood.

    Returns
    -------
    PoissonGPFAPosterior

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa import PoissonGPFAParams, poisson_gpfa_posterior
    >>> p = PoissonGPFAParams(jnp.ones((3, 1)), jnp.full(3, 2.0), jnp.array([3.0]), jnp.array([1e-3]))
    >>> post = poisson_gpfa_posterior(p, jnp.ones((2, 8, 3)), bin_size=0.1)
    >>> post.mean.shape, post.cov.shape
    ((2, 8, 1), (2, 1, 8, 1, 8))
    """
    params = _check_poisson_params(params)
    y = np.asarray(counts, dtype=np.float64)
    (group,), _ = _group(y[None] if y.ndim == 2 else y, params.loadings.shape[0])
    N = params.loadings.shape[0]
    w = jnp.ones(N) if neuron_mask is None else jnp.asarray(np.asarray(neuron_mask, bool), _dtype())
    if w.shape != (N,):
        raise ValueError(f"neuron_mask must have shape ({N},), got {w.shape}")
    return _poisson_laplace(params, group, w, float(bin_size), _check_kernel(kernel))


@jax.jit
def _poisson_expected_readout_step(m, V, y, valid, C, d, centre, bin_size):
    """Laplace-EM M-step of each neuron's ``(C_n, d_n)``: expected Poisson log-likelihood.

    Minimises ``sum_valid (dt E[e^{eta}] - y E[eta]) + |C_n|^2 / 2 + (d_n - centre_n)^2 / 8``
    with ``x_t ~ N(m_t, V_t)`` (``m`` ``(bins, latent)``, ``V`` ``(bins, latent, latent)``),
    so ``E[e^{eta}] = exp(C_n m_t + d_n + C_n V_t C_n / 2)``; 20 damped Newton steps.
    """
    q = m.shape[1]
    X = jnp.concatenate([m, jnp.ones((m.shape[0], 1), m.dtype)], axis=1)
    prior = jnp.concatenate([jnp.ones(q), jnp.array([0.25])])

    def one(w, yn, c):
        target = jnp.concatenate([jnp.zeros(q), c[None]])

        def f(w):
            eta = X @ w + jnp.log(bin_size)
            quad = 0.5 * jnp.einsum("i,tij,j->t", w[:q], V, w[:q])
            return jnp.sum(valid * (jnp.exp(eta + quad) - yn * eta)) + 0.5 * jnp.sum(prior * (w - target) ** 2)

        def body(w, _):
            g, H = jax.grad(f)(w), jax.hessian(f)(w)
            step = -jnp.linalg.solve(H, g)
            step = step / jnp.maximum(1.0, jnp.linalg.norm(step))
            return jnp.where(f(w + step) <= f(w), w + step, w + 0.1 * step), None

        return lax.scan(body, w, None, length=20)[0]

    w = jax.vmap(one, in_axes=(0, 1, 0))(jnp.concatenate([C, d[:, None]], axis=1), y, centre)
    return w[:, :-1], w[:, -1]


@partial(jax.jit, static_argnames="kernel")
def _poisson_timescale_step(timescales, eps, P: tuple, n: tuple, kernel: str):
    """Laplace-EM M-step of the timescales: the Gaussian-GPFA objective with Laplace moments."""
    lo, hi = _LOG_TAU_BOUNDS
    objective = jax.vmap(lambda x, e, P_i: _timescale_objective(x, e, P_i, list(n), kernel, True))
    log_tau = _newton_batch(lambda x: objective(x, eps, list(P)), jnp.clip(jnp.log(timescales), lo, hi), lo, hi)
    return jnp.exp(log_tau)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _poisson_sample(key, params, n_trials, n_time, kernel, bin_size):
    L = _poisson_chol(params, n_time, kernel)
    kx, ky = jax.random.split(key)
    q = params.loadings.shape[1]
    x = jnp.einsum("itu,niu->nti", L, jax.random.normal(kx, (n_trials, q, n_time), params.loadings.dtype))
    return x, jax.random.poisson(ky, bin_size * jnp.exp(x @ params.loadings.T + params.offsets))


# ----------------------------------------------------------------------------- checked wrappers


def _check_params(params) -> GPFAParams:
    if not isinstance(params, GPFAParams):
        raise TypeError(f"params must be a GPFAParams, got {type(params).__name__}")
    p = GPFAParams(*(jnp.asarray(np.asarray(x, dtype=np.float64)) for x in params))
    if p.loadings.ndim != 2:
        raise ValueError(f"loadings must be (neuron, latent), got shape {p.loadings.shape}")
    N, q = p.loadings.shape
    for name, x, shape in [("offsets", p.offsets, (N,)), ("noise_var", p.noise_var, (N,)),
                           ("timescales", p.timescales, (q,)), ("eps", p.eps, (q,))]:
        if x.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in p):
        raise ValueError("GPFAParams contain NaN or infinite values")
    if bool(jnp.any(p.noise_var <= 0)) or bool(jnp.any(p.timescales <= 0)):
        raise ValueError("noise_var and timescales must be positive")
    if bool(jnp.any((p.eps <= 0) | (p.eps >= 1))):
        raise ValueError(f"eps must lie in (0, 1), got {np.asarray(p.eps)}")
    return p


def _dtype():
    """JAX's default float dtype (float64 with ``jax_enable_x64``, else float32)."""
    return jnp.zeros(()).dtype


def _check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def _group(trials, n_neuron: int | None = None) -> tuple[tuple, list[np.ndarray]]:
    """Trials -> (stacked equal-length groups, trial positions of each group), by length."""
    if isinstance(trials, (np.ndarray, jax.Array)) and np.ndim(trials) == 3:  # equal lengths: one group
        y = np.asarray(trials, dtype=np.float64)
        if y.shape[0] < 1 or y.shape[1] < 1:
            raise ValueError(f"trials must have at least one trial of at least one bin, got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("trials contain NaN or infinite values")
        if n_neuron is not None and y.shape[2] != n_neuron:
            raise ValueError(f"trials must have the {n_neuron} neurons of the model, got {y.shape[2]}")
        return (jnp.asarray(y),), [np.arange(y.shape[0])]
    if isinstance(trials, (np.ndarray, jax.Array)) and np.ndim(trials) == 2:
        trials = [trials]
    arrays = [np.asarray(t, dtype=np.float64) for t in trials]
    if not arrays:
        raise ValueError("at least one trial is needed")
    for k, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"trial {k} must be a (time, neuron) array with at least one bin, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"trial {k} contains NaN or infinite values")
    widths = {a.shape[1] for a in arrays} | ({n_neuron} if n_neuron is not None else set())
    if len(widths) > 1:
        raise ValueError(f"all trials must have the neurons of the model, got widths {sorted(widths)}")
    lengths = np.array([a.shape[0] for a in arrays])
    index = [np.flatnonzero(lengths == T) for T in np.unique(lengths)]
    groups = tuple(jnp.asarray(np.stack([arrays[k] for k in idx])) for idx in index)
    return groups, index


def _var_floor(groups, min_var_frac: float):
    y = np.concatenate([np.asarray(g).reshape(-1, g.shape[-1]) for g in groups])
    return jnp.asarray(min_var_frac * np.var(y, axis=0, ddof=1 if y.shape[0] > 1 else 0))


def gpfa_posterior(params: GPFAParams, observations, *, kernel: str = "se") -> GPFAPosterior:
    """Exact posterior of the latents of trials of equal length (jitted per length).

    Parameters
    ----------
    params : GPFAParams
    observations : array_like, shape (trial, time, neuron) or (time, neuron)
    kernel : {"se", "matern32", "matern52"}

    Returns
    -------
    GPFAPosterior
        Means ``(trial, time, latent)``, the shared covariance ``(latent, time, latent, time)``
        and each trial's marginal log-likelihood.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa import GPFAParams, gpfa_posterior
    >>> p = GPFAParams(jnp.ones((3, 1)), jnp.zeros(3), jnp.ones(3), jnp.array([2.0]), jnp.array([1e-3]))
    >>> post = gpfa_posterior(p, jnp.ones((4, 10, 3)))
    >>> post.mean.shape, post.cov.shape, post.log_likelihood.shape
    ((4, 10, 1), (1, 10, 1, 10), (4,))
    """
    params = _check_params(params)
    y = np.asarray(observations, dtype=np.float64)
    y = y[None] if y.ndim == 2 else y
    (group,), _ = _group(y, params.loadings.shape[0])
    return _posterior(params, group, _check_kernel(kernel))


def gpfa_log_likelihood(params: GPFAParams, trials, *, kernel: str = "se") -> float:
    """Total marginal log-likelihood of trials of any lengths (list or 3-D array).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa import GPFAParams, gpfa_log_likelihood
    >>> p = GPFAParams(jnp.ones((3, 1)), jnp.zeros(3), jnp.ones(3), jnp.array([2.0]), jnp.array([1e-3]))
    >>> ll = gpfa_log_likelihood(p, [jnp.zeros((4, 3)), jnp.zeros((6, 3))])  # two lengths
    >>> round(ll, 3) < 0
    True
    """
    params = _check_params(params)
    groups, _ = _group(trials, params.loadings.shape[0])
    kernel = _check_kernel(kernel)
    return float(sum(_posterior(params, y, kernel).log_likelihood.sum() for y in groups))


def gpfa_predict_left_out(params: GPFAParams, observations, *, kernel: str = "se") -> jax.Array:
    """Leave-neuron-out predictions: each neuron from the posterior given all the others.

    Parameters
    ----------
    params : GPFAParams
    observations : array_like, shape (trial, time, neuron)
        Equal-length trials.
    kernel : {"se", "matern32", "matern52"}

    Returns
    -------
    Array, shape (trial, time, neuron)
        ``C_k E[x | y_{-k}] + d_k`` for every neuron ``k`` (neurons one at a time, so memory
        stays that of one posterior).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa import GPFAParams, gpfa_predict_left_out
    >>> p = GPFAParams(jnp.ones((3, 1)), jnp.zeros(3), 0.1 * jnp.ones(3), jnp.array([2.0]), jnp.array([1e-3]))
    >>> y = jnp.zeros((2, 5, 3)).at[:, :, :2].set(1.0)  # neuron 2 silent, the others at 1
    >>> pred = gpfa_predict_left_out(p, y)
    >>> pred.shape, bool(pred[0, 2, 2] > 0.5)  # neuron 2 predicted from neurons 0 and 1
    ((2, 5, 3), True)
    """
    params = _check_params(params)
    y = np.asarray(observations, dtype=np.float64)
    (group,), _ = _group(y[None] if y.ndim == 2 else y, params.loadings.shape[0])
    return _left_out(params, group, _check_kernel(kernel))


def gpfa_sample(key, params: GPFAParams, n_trials: int, n_time: int, *, kernel: str = "se"):
    """Draw latents and observations from the model (``key``: a ``jax.random`` key).

    Returns
    -------
    latents : Array, shape (n_trials, n_time, latent)
    observations : Array, shape (n_trials, n_time, neuron)

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa import GPFAParams, gpfa_sample
    >>> p = GPFAParams(jnp.ones((3, 1)), jnp.zeros(3), jnp.ones(3), jnp.array([2.0]), jnp.array([1e-3]))
    >>> x, y = gpfa_sample(jax.random.key(0), p, 5, 20)
    >>> x.shape, y.shape
    ((5, 20, 1), (5, 20, 3))
    """
    params = _check_params(params)
    kernel = _check_kernel(kernel)
    if int(n_trials) < 1 or int(n_time) < 1:
        raise ValueError(f"n_trials and n_time must be >= 1, got {n_trials}, {n_time}")
    return _sample(key, params, int(n_trials), int(n_time), kernel)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _sample(key, params, n_trials, n_time, kernel):
    N, q = params.loadings.shape
    L = _prior_chol(params, n_time, kernel)
    kx, ky = jax.random.split(key)
    dtype = params.loadings.dtype
    x = jnp.einsum("itu,niu->nti", L, jax.random.normal(kx, (n_trials, q, n_time), dtype))
    noise = jax.random.normal(ky, (n_trials, n_time, N), dtype) * jnp.sqrt(params.noise_var)
    return x, x @ params.loadings.T + params.offsets + noise


def init_gpfa_params(trials, n_latents: int, *, timescale: float = 5.0, eps: float = 1e-3,
                     min_var_frac: float = 0.01, max_iter: int = 1000, tol: float = 1e-8) -> GPFAParams:
    """Starting point by factor analysis of all bins (deterministic), as elephant does.

    Factor analysis by sklearn's SVD-based EM (Barber 2012, alg. 21.1) with an exact eigensolver,
    started from the noise variances ``var(y)``; stops when the log-likelihood gains less than
    ``tol * |log-likelihood|``.

    Parameters
    ----------
    trials : list of array_like (time, neuron), or array_like (trial, time, neuron)
    n_latents : int
    timescale : float
        Initial timescale of every latent, in bins.
    eps : float
        GP noise variance of every latent.
    min_var_frac : float
        Floor of the noise variances (a fraction of each neuron's variance), as in EM.
    max_iter, tol
        Factor-analysis iterations and tolerance.

    Returns
    -------
    GPFAParams

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.gpfa import init_gpfa_params
    >>> y = np.random.default_rng(0).normal(size=(5, 20, 4))
    >>> p = init_gpfa_params(y, 2, timescale=3.0)
    >>> p.loadings.shape, p.timescales.tolist()
    ((4, 2), [3.0, 3.0])
    """
    groups, _ = _group(trials)
    return _fa_init(groups, n_latents, timescale=timescale, eps=eps, min_var_frac=min_var_frac,
                    max_iter=max_iter, tol=tol)


def _fa_init(groups, n_latents, *, timescale, eps, min_var_frac, max_iter=1000, tol=1e-8) -> GPFAParams:
    y = np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1, g.shape[-1]) for g in groups])
    n, N = y.shape
    q = int(n_latents)
    if not 1 <= q < N:
        raise ValueError(f"n_latents must be in [1, {N - 1}] for {N} neurons, got {n_latents}")
    mean = y.mean(axis=0)
    S = np.cov(y, rowvar=False, bias=True).reshape(N, N)
    var = np.diag(S).copy()
    psi, old, W = var.copy(), -np.inf, np.zeros((q, N))
    for _ in range(max_iter):
        sp = np.sqrt(psi) + 1e-12
        vals, vecs = np.linalg.eigh(S / np.outer(sp, sp))
        vals, vecs = vals[::-1], vecs[:, ::-1]
        s = np.maximum(vals[:q], 1e-12)
        W = (np.sqrt(np.maximum(s - 1.0, 0.0))[:, None] * vecs[:, :q].T) * sp
        ll = -0.5 * n * (N * _LOG_2PI + q + np.sum(np.log(s)) + np.sum(vals[q:]) + np.sum(np.log(psi)))
        if ll - old < tol * abs(ll):
            break
        old = ll
        psi = np.maximum(var - np.sum(W**2, axis=0), 1e-12)
    floor = min_var_frac * np.var(y, axis=0, ddof=1 if n > 1 else 0)
    return GPFAParams(jnp.asarray(W.T), jnp.asarray(mean), jnp.asarray(np.maximum(psi, floor)),
                      jnp.asarray(np.full(q, float(timescale))), jnp.asarray(np.full(q, float(eps))))


def gpfa_em_step(params: GPFAParams, trials, *, kernel: str = "se", min_var_frac: float = 0.01,
                 learn_timescales: bool = True) -> tuple[GPFAParams, float]:
    """One EM step; returns the new parameters and the log-likelihood of the *old* ones.

    Trials of equal length are conditioned together (one compilation per set of lengths). The
    noise floor is ``min_var_frac`` times each neuron's variance over all bins.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.gpfa import init_gpfa_params, gpfa_em_step
    >>> y = np.random.default_rng(0).normal(size=(5, 20, 4))
    >>> p0 = init_gpfa_params(y, 1)
    >>> p1, ll0 = gpfa_em_step(p0, y)
    >>> p2, ll1 = gpfa_em_step(p1, y)
    >>> ll1 >= ll0
    True
    """
    params = _check_params(params)
    groups, _ = _group(trials, params.loadings.shape[0])
    new, ll = _em_step(params, groups, _var_floor(groups, min_var_frac), _check_kernel(kernel), bool(learn_timescales))
    return new, float(ll)


def fit_gpfa_em(params: GPFAParams, trials, *, kernel: str = "se", max_iter: int = 500,
                tol: float | None = 1e-8, min_var_frac: float = 0.01, learn_timescales: bool = True,
                acceleration: str | None = "squarem", progress: bool | None = None) -> GPFAEMResult:
    """Fit GPFA by exact EM from ``params`` (e.g. :func:`init_gpfa_params`).

    Parameters
    ----------
    params : GPFAParams
        Starting point.
    trials : list of array_like (time, neuron), or array_like (trial, time, neuron)
        Any lengths; equal lengths are conditioned together.
    kernel : {"se", "matern32", "matern52"}
    max_iter : int
        Maximum number of EM steps.
    tol : float or None
        Elephant's test: stop after step ``k >= 3`` once
        ``ll_k - ll_1 < (1 + tol) (ll_{k-1} - ll_1)`` (``ll_j``: log-likelihood after ``j``
        steps; with SQUAREM, of the point accepted in cycle ``j``). None: run all ``max_iter``
        steps.
    min_var_frac : float
        Floor of the noise variances, as a fraction of each neuron's variance.
    learn_timescales : bool
        Update the timescales (else keep them fixed).
    acceleration : {"squarem", None}
        ``"squarem"`` (default): squared extrapolation of the EM map (Varadhan & Roland 2008,
        scheme S3 with the monotone safeguard): each cycle takes two EM steps, extrapolates
        along them, and keeps the extrapolated point only if its log-likelihood is no lower
        than after one plain step, so the log-likelihood still never decreases but converges
        in several times fewer E-steps. None: plain EM, step for step elephant's.
    progress : bool, optional
        tqdm bar; default :func:`bayesneuro.infer.fit.progress_default`.

    Returns
    -------
    GPFAEMResult

    Raises
    ------
    FloatingPointError
        If the log-likelihood becomes non-finite.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa import GPFAParams, gpfa_sample, init_gpfa_params, fit_gpfa_em
    >>> C = jnp.array([[1.0, 0.0], [0.5, 1.0], [-1.0, 0.5], [0.0, 1.0], [1.0, 1.0]])
    >>> p = GPFAParams(C, jnp.zeros(5), 0.1 * jnp.ones(5), jnp.array([3.0, 8.0]), jnp.full(2, 1e-3))
    >>> _, y = gpfa_sample(jax.random.key(0), p, 10, 30)
    >>> fit = fit_gpfa_em(init_gpfa_params(y, 2), y, max_iter=20, progress=False)
    >>> fit.n_iter, bool(fit.log_likelihoods[-1] > fit.log_likelihoods[0])
    (20, True)
    >>> plain = fit_gpfa_em(init_gpfa_params(y, 2), y, max_iter=20, acceleration=None, progress=False)
    >>> len(plain.log_likelihoods), bool(fit.log_likelihoods[-1] >= plain.log_likelihoods[-1])
    (21, True)
    """
    from ..infer.fit import progress_default  # lazy: keeps the maths free of numpyro

    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
    if not 0.0 < min_var_frac < 1.0:
        raise ValueError(f"min_var_frac must be in (0, 1), got {min_var_frac}")
    progress = progress_default() if progress is None else bool(progress)
    params = _check_params(params)
    groups, _ = _group(trials, params.loadings.shape[0])
    run = _EM_RUNNERS[_check_acceleration(acceleration)]
    return run(params, groups, kernel=_check_kernel(kernel), max_iter=max_iter, tol=tol,
                   var_floor=_var_floor(groups, min_var_frac), learn_timescales=bool(learn_timescales),
                   progress=progress)


# The EM loops below are Python loops over jitted steps, not one ``lax.while_loop``: a
# while loop whose body holds another (the timescale Newton iterations) intermittently
# deadlocked the XLA CPU runtime (jaxlib 0.10, all threads idle) once trials reach ~200 bins.
# One host sync per step costs microseconds against milliseconds of work per E-step.


def _elephant_stop(k: int, ll: float, base: float, prev: float, tol: float | None) -> bool:
    """Elephant's convergence test after step ``k`` (1-based) with log-likelihood ``ll``."""
    return tol is not None and k >= 3 and (ll - base) < (1.0 + tol) * (prev - base)


def _final_log_likelihood(params, groups, kernel) -> float:
    return float(sum(_posterior(params, y, kernel).log_likelihood.sum() for y in groups))


class _SquaremState(NamedTuple):
    """State of the accelerated EM loop (SQUAREM, Varadhan & Roland 2008).

    Attributes
    ----------
    candidate : GPFAParams
        Extrapolated point to try next.
    fallback : GPFAParams
        Two plain EM steps from the last accepted point (used if the candidate is worse).
    ll_ref : Array
        Log-likelihood one EM step after the last accepted point (``<= log p(fallback)``).
    step_max : Array
        Current bound on the extrapolation step length.
    """

    candidate: GPFAParams
    fallback: GPFAParams
    ll_ref: jax.Array
    step_max: jax.Array


def _to_vector(p: GPFAParams) -> tuple:
    return p.loadings, p.offsets, jnp.log(p.noise_var), jnp.log(p.timescales)


def _from_vector(v: tuple, eps, var_floor) -> GPFAParams:
    lo, hi = _LOG_TAU_BOUNDS
    return GPFAParams(v[0], v[1], jnp.maximum(jnp.exp(v[2]), var_floor), jnp.exp(jnp.clip(v[3], lo, hi)), eps)


@jax.jit
def _squarem_extrapolate(p0: GPFAParams, p1: GPFAParams, p2: GPFAParams, step_max, var_floor):
    """SQUAREM's next candidate from two EM steps ``p0 -> p1 -> p2``, and the new step bound.

    With ``r = p1 - p0`` and ``v = p2 - 2 p1 + p0`` (loadings, offsets, log noise variances,
    log timescales): ``p0 + 2 a r + a^2 v``, ``a = clip(|r| / |v|, 1, step_max)`` (``a = 1``
    gives ``p2``); the bound grows 4-fold whenever it binds.
    """
    v0, v1, v2 = _to_vector(p0), _to_vector(p1), _to_vector(p2)
    r = jax.tree.map(lambda a, b: b - a, v0, v1)
    v = jax.tree.map(lambda a, b, c: c - 2.0 * b + a, v0, v1, v2)
    rr = sum(jnp.sum(x * x) for x in r)
    vv = sum(jnp.sum(x * x) for x in v)
    alpha = jnp.clip(jnp.sqrt(rr / jnp.where(vv > 0, vv, 1.0)), 1.0, step_max)
    alpha = jnp.where(vv > 0, alpha, 1.0)
    step_max = jnp.where(alpha >= step_max, 4.0 * step_max, step_max)
    cand = jax.tree.map(lambda a, b, c: a + 2.0 * alpha * b + alpha**2 * c, v0, r, v)
    return _from_vector(cand, p0.eps, var_floor), step_max


def _squarem_cycle(state: _SquaremState, groups, var_floor, kernel, learn_timescales):
    """One SQUAREM cycle; returns the new state, the accepted point's log-likelihood, the E-steps
    taken (2, or 3 after a rejection) and the log-likelihood one step on from it.

    The candidate ``c`` is evaluated by one EM step, ``(p1, l0) = F(c)``; if ``l0`` is below
    ``ll_ref`` (or not finite) it is rejected and the fallback used instead (one more EM step;
    the step bound shrinks 4-fold). From the accepted point ``p0``, ``(p2, l1) = F(p1)`` and
    the next candidate is :func:`_squarem_extrapolate` of ``p0, p1, p2``. The accepted
    log-likelihoods never decrease, since EM steps do not.
    """
    step = lambda p: _em_step(p, groups, var_floor, kernel, learn_timescales)  # noqa: E731
    p0, smax, taken = state.candidate, state.step_max, 2
    p1, l0 = step(p0)
    if not (math.isfinite(float(l0)) and float(l0) >= float(state.ll_ref)):
        p0, smax, taken = state.fallback, jnp.maximum(1.0, smax / 4.0), 3
        p1, l0 = step(p0)
    p2, l1 = step(p1)
    cand, smax = _squarem_extrapolate(p0, p1, p2, smax, var_floor)
    return _SquaremState(cand, p2, l1, smax), l0, taken, l1


def _run_squarem(params, groups, *, kernel, max_iter, tol, var_floor, learn_timescales, progress) -> GPFAEMResult:
    from tqdm.auto import tqdm

    dtype = params.loadings.dtype
    state = _SquaremState(params, params, jnp.full((), -jnp.inf, dtype), jnp.ones((), dtype))
    lls: list[float] = []
    at: list[int] = []  # E-steps run when each record was known (its own included)
    n_iter, base, converged = 0, math.nan, False
    bar = tqdm(total=max_iter, desc="GPFA EM (SQUAREM)", disable=not progress, leave=False)
    try:
        while n_iter + 3 <= max_iter:  # a cycle takes 2 E-steps, 3 after a rejection
            state, l0, taken, l1 = _squarem_cycle(state, groups, var_floor, kernel, learn_timescales)
            l0, taken = float(l0), int(taken)
            at.append(n_iter + taken - 1)
            n_iter += taken
            lls.append(l0)
            bar.update(taken)
            bar.set_postfix(log_likelihood=f"{l0:.8g}")
            if not (math.isfinite(l0) and math.isfinite(float(l1))):
                raise FloatingPointError(f"GPFA EM: the log-likelihood became non-finite after {n_iter} EM steps")
            k = len(lls)
            if k == 2:
                base = l0
            if _elephant_stop(k, l0, base, lls[-2] if k > 1 else math.nan, tol):
                converged = True
                break
    finally:
        bar.close()
    params_out = state.fallback  # two EM steps on from the last accepted point: the best known
    final = _final_log_likelihood(params_out, groups, kernel)
    if not math.isfinite(final):
        raise FloatingPointError("GPFA EM: the log-likelihood of the final parameters is not finite")
    lls.append(final)
    at.append(n_iter + 1)
    left = max_iter - n_iter
    if not converged and left > 0:  # fewer steps left than a cycle takes: plain EM steps
        tail = _run_em(params_out, groups, kernel=kernel, max_iter=left, tol=None, var_floor=var_floor,
                       learn_timescales=learn_timescales, progress=False)
        params_out = tail.params
        lls.extend(tail.log_likelihoods[1:].tolist())
        at.extend((n_iter + tail.n_estep[1:]).tolist())
        n_iter += tail.n_iter
    return GPFAEMResult(params_out, np.asarray(lls), n_iter, converged, np.asarray(at))


def _run_em(params, groups, *, kernel, max_iter, tol, var_floor, learn_timescales, progress) -> GPFAEMResult:
    from tqdm.auto import tqdm

    lls: list[float] = []
    base, converged = math.nan, False
    bar = tqdm(total=max_iter, desc="GPFA EM", disable=not progress, leave=False)
    try:
        for k in range(1, max_iter + 1):  # elephant's 1-based iteration number
            new, ll = _em_step(params, groups, var_floor, kernel, learn_timescales)
            ll = float(ll)  # of `params`, the parameters before this step
            if not math.isfinite(ll):
                raise FloatingPointError(f"GPFA EM: the log-likelihood became non-finite after {k - 1} steps")
            lls.append(ll)
            params = new
            bar.update(1)
            bar.set_postfix(log_likelihood=f"{ll:.8g}")
            if k == 2:
                base = ll
            if _elephant_stop(k, ll, base, lls[-2] if k > 1 else math.nan, tol):
                converged = True
                break
    finally:
        bar.close()
    final = _final_log_likelihood(params, groups, kernel)
    if not math.isfinite(final):
        raise FloatingPointError("GPFA EM: the log-likelihood of the final parameters is not finite")
    return GPFAEMResult(params, np.asarray(lls + [final]), len(lls), converged, np.arange(1, len(lls) + 2))


_EM_RUNNERS = {None: _run_em, "squarem": _run_squarem}


def _check_acceleration(acceleration):
    if acceleration not in _EM_RUNNERS:
        raise ValueError(f"acceleration must be 'squarem' or None, got {acceleration!r}")
    return acceleration


def _orthonormalize(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``C = U diag(D) V^T``; returns U (signs: largest entry of each column positive), D, T."""
    U, D, Vt = np.linalg.svd(C, full_matrices=False)
    s = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    s[s == 0] = 1.0
    return U * s, D, (D * s)[:, None] * Vt  # x_orth = T x,  C_orth = U


# ----------------------------------------------------------------------------- estimator


class GPFA:
    r"""Gaussian-process factor analysis of trial-structured spike counts (Yu et al. 2009).

    Counts are square-root transformed (by default) and modelled as in the module docstring:
    ``n_latents`` independent GP latents with learnt timescales, read out linearly with
    independent Gaussian noise per neuron. Fitting is exact EM from a factor-analysis start,
    with elephant's M-step, variance floor and convergence test, on whole trials (elephant's
    ``GPFA.fit`` cuts trials into 20-bin segments; :func:`elephant.gpfa.gpfa_core.em` on whole
    trials is the same algorithm as this one). Trials may differ in length.

    With ``observation="poisson"`` the counts themselves are modelled,
    ``counts ~ Poisson(dt exp(C x + d))`` (:func:`~bayesneuro.latent._gpfa_model.poisson_gpfa_model`,
    ``d`` in log spikes/s), and fitted through :func:`bayesneuro.infer.fit` by ``"map"``,
    ``"laplace"``, ``"svi"`` or ``"nuts"`` (small problems), started from the Gaussian GPFA of
    the square-root counts refined by Laplace-EM (Laplace posteriors of the paths, then
    per-neuron read-outs under the expected Poisson likelihood). MAP and Laplace learn the
    timescales in that Laplace-EM (empirical Bayes: each maximises the expected GP prior under
    the Laplace posteriors, as in Gaussian GPFA's M-step; the joint mode of paths and timescales
    would not penalise short timescales) and keep them fixed in the final fit of the paths,
    loadings and offsets; SVI and NUTS learn them under a log-normal prior (log-sd 1) with
    median ``init_timescale``. Trials of unequal length are zero-padded
    and masked in the model, and grouped by length for the Laplace posterior of the latents.

    Latents are reported in the orthonormalised basis of Yu et al.: with ``C = U D V^T``,
    ``orthonormal_loadings_ = U`` and latents ``D V^T x``, ordered by the variance they explain
    (each column of ``U`` has its largest entry positive).

    Parameters
    ----------
    n_latents : int
        Number of latents, smaller than the number of neurons.
    kernel : {"se", "matern32", "matern52"}
        GP correlation (``"se"``: squared exponential, elephant's ``'rbf'``).
    observation : {"gaussian", "poisson"}
        ``"gaussian"``: Gaussian noise on the transformed counts, fitted by ``method="em"``;
        ``"poisson"``: Poisson counts with a log link, fitted by ``method`` in
        ``{"map", "laplace", "svi", "nuts"}`` (default ``"map"``).
    transform : {"sqrt", None}
        Gaussian only: ``"sqrt"``: model ``sqrt(counts)`` (Yu et al., elephant); None: the
        counts themselves. Stored as ``count_transform`` (``transform`` is the method).
    min_var_frac : float, default 0.01
        Floor of each neuron's noise variance, as a fraction of its variance.
    eps : float, default 1e-3
        GP noise variance of each latent (fixed), in ``(0, 1)``.
    max_iter : int, default 500
        Maximum number of EM iterations.
    tol : float or None, default 1e-8
        Elephant's convergence tolerance (see :func:`fit_gpfa_em`); None runs ``max_iter``.
    learn_timescales : bool, default True
        Learn the timescales in the M-step (else keep ``init_timescale``).
    acceleration : {"squarem", None}, default "squarem"
        Gaussian EM: SQUAREM-accelerated EM (same fixed points, monotone, several times fewer
        E-steps; see :func:`fit_gpfa_em`) or None for plain EM as elephant runs it.
    init_timescale : float, default 0.1
        Initial timescale of every latent, in seconds (elephant's ``tau_init``, 100 ms).

    Attributes
    ----------
    params_ : GPFAParams
        Fitted parameters in bins (numpy arrays), for the pure functions of this module.
    loadings_ : numpy.ndarray, shape (neuron, latent)
    offsets_, noise_var_ : numpy.ndarray, shape (neuron,)
        Offsets ``d`` and noise variances ``diag(R)`` on the transformed scale (Poisson:
        ``d`` in log spikes/s and ``noise_var_`` None; ``params_`` a :class:`PoissonGPFAParams`).
    timescales_ : numpy.ndarray, shape (latent,)
        In seconds.
    orthonormal_loadings_ : numpy.ndarray, shape (neuron, latent)
        ``U``, orthonormal columns ordered by variance explained.
    orthonormal_transform_ : numpy.ndarray, shape (latent, latent)
        ``D V^T``: orthonormalised latents are ``orthonormal_transform_ @ x``.
    variance_explained_ : numpy.ndarray, shape (latent,)
        Share of the model's total variance ``trace(C C^T + R)`` carried by each orthonormal
        latent: ``D_j^2 / (sum(D^2) + sum(R))`` (descending).
    log_likelihood_trace_ : numpy.ndarray
        Log-likelihood of the training data along the fit, never decreasing (entry 0: the
        start): after each EM step (plain EM, ``n_iter_ + 1`` entries) or at the point
        accepted in each SQUAREM cycle; None for Poisson.
    method_ : str
        The fitting method.
    result_ : bayesneuro.infer.FitResult
        Poisson only: the fit through the shared inference layer.
    log_likelihood_ : float
        The last entry: log-likelihood at the fitted parameters.
    n_iter_ : int
        EM steps (E-steps) taken.
    laplace_em_trace_ : numpy.ndarray
        Poisson only: the Laplace log marginal likelihood of the counts plus the log priors of
        loadings and offsets, at each Laplace-EM sweep of the start (with learnt timescales
        under MAP/Laplace: up to 100 sweeps, until it changes by less than 1e-6 relative and
        the timescales by less than 0.1 %; 10 sweeps otherwise).
    converged_ : bool
    neuron_ids_ : numpy.ndarray
    bin_size_ : float

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.latent.gpfa import GPFA
    >>> rng = np.random.default_rng(0)
    >>> rate = 3 + 2 * np.sin(np.linspace(0, 3, 25))[None, :, None] * rng.normal(size=(1, 1, 6))
    >>> data = bn.SpikeData.from_trials(rng.poisson(np.clip(rate, 0.1, None), (8, 25, 6)), bin_size=0.02)
    >>> gpfa = GPFA(2, max_iter=50).fit(data, key=0, progress=False)
    >>> latents = gpfa.transform(data)
    >>> latents["mean"].dims, latents["mean"].shape, gpfa.timescales_.shape
    (('time', 'latent'), (200, 2), (2,))

    Poisson observations, by MAP:

    >>> pois = GPFA(1, observation="poisson").fit(data, method="map", key=0, progress=False, max_iter=50)
    >>> pois.transform(data)["sd"].shape, pois.score(data) > -1.0
    ((200, 1), True)
    """

    def __init__(
        self,
        n_latents: int,
        *,
        kernel: str = "se",
        observation: str = "gaussian",
        transform: str | None = "sqrt",
        min_var_frac: float = 0.01,
        eps: float = 1e-3,
        max_iter: int = 500,
        tol: float | None = 1e-8,
        learn_timescales: bool = True,
        acceleration: str | None = "squarem",
        init_timescale: float = 0.1,
    ):
        if isinstance(n_latents, bool) or not isinstance(n_latents, (int, np.integer)) or n_latents < 1:
            raise ValueError(f"n_latents must be a positive integer, got {n_latents!r}")
        _check_kernel(kernel)
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {tuple(OBSERVATIONS)}, got {observation!r}")
        if transform not in ("sqrt", None):
            raise ValueError(f"transform must be 'sqrt' or None, got {transform!r}")
        if not 0.0 < min_var_frac < 1.0:
            raise ValueError(f"min_var_frac must be in (0, 1), got {min_var_frac}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        if tol is not None and not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
        if not (math.isfinite(init_timescale) and init_timescale > 0):
            raise ValueError(f"init_timescale must be a positive number of seconds, got {init_timescale!r}")
        self.n_latents = int(n_latents)
        self.kernel = kernel
        self.observation = observation
        self.count_transform = transform  # not self.transform: that is the method
        self.min_var_frac = float(min_var_frac)
        self.eps = float(eps)
        self.max_iter = int(max_iter)
        self.tol = tol
        self.learn_timescales = bool(learn_timescales)
        self.acceleration = _check_acceleration(acceleration)
        self.init_timescale = float(init_timescale)
        self.params_ = None

    # ------------------------------------------------------------------------------------------

    def _observations(self, data) -> tuple[np.ndarray, np.ndarray]:
        """Transformed counts ``(trial, max_time, neuron)`` (zero-padded) and trial lengths."""
        counts, mask = data.to_padded()
        y = counts.astype(np.float64)
        return (np.sqrt(y) if self.count_transform == "sqrt" else y), mask.sum(axis=1)

    @staticmethod
    def _groups(y: np.ndarray, lengths: np.ndarray, trials=None) -> tuple[tuple, list[np.ndarray]]:
        """Trials (positions ``trials``, default all) stacked by length, and their positions."""
        idx_all = np.arange(len(lengths)) if trials is None else np.sort(np.asarray(trials))
        index = [idx_all[lengths[idx_all] == T] for T in np.unique(lengths[idx_all])]
        return tuple(jnp.asarray(y[idx, : lengths[idx[0]]]) for idx in index), index

    @staticmethod
    def _constant_neurons(y: np.ndarray, lengths: np.ndarray, trials, neuron_ids) -> list:
        mask = np.arange(y.shape[1])[None, :] < lengths[trials][:, None]
        vals = y[trials][mask]  # (bins, neuron)
        return neuron_ids[np.ptp(vals, axis=0) == 0].tolist()

    def _check_data(self, data, *, fitting: bool) -> None:
        from ..data import SpikeData

        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")
        if not fitting:
            self._check_fitted()
            if data.n_neuron != len(self.neuron_ids_) or not np.array_equal(data.neuron_ids, self.neuron_ids_):
                raise ValueError(
                    f"data must have the neurons of the fit ({len(self.neuron_ids_)} neurons "
                    f"{self.neuron_ids_[:10].tolist()}), got {data.n_neuron}: {data.neuron_ids[:10].tolist()}"
                )
            return
        if self.n_latents >= data.n_neuron:
            raise ValueError(
                f"n_latents={self.n_latents} must be smaller than the number of neurons ({data.n_neuron})"
            )
        counts, mask = data.to_padded()
        lengths = mask.sum(axis=1)
        if self.observation == "poisson":
            silent = data.neuron_ids[counts.sum(axis=(0, 1)) == 0].tolist()
            if silent:
                raise ValueError(
                    f"neurons {silent[:10]}{' ...' if len(silent) > 10 else ''} are silent (no spikes): "
                    "their offsets have no finite MAP; drop them with data.select_neurons(...)"
                )
        short = data.trials[lengths < 2]
        if short.size:
            more = " ..." if short.size > 10 else ""
            raise ValueError(
                f"trials {short[:10].tolist()}{more} have fewer than 2 bins; GPFA learns timescales "
                "from within-trial correlations and needs at least 2 bins per trial (drop those trials)"
            )
        const = self._constant_neurons(counts, lengths, np.arange(len(lengths)), data.neuron_ids)
        if const:
            raise ValueError(
                f"neurons {const[:10]}{' ...' if len(const) > 10 else ''} have zero variance (silent or "
                "constant counts): GPFA cannot model them; drop them with data.select_neurons(...)"
            )

    def _check_fitted(self) -> None:
        if self.params_ is None:
            raise RuntimeError("the GPFA is not fitted yet; call fit(data, key=...) first")

    def _jparams(self) -> GPFAParams:
        return GPFAParams(*(jnp.asarray(x) for x in self.params_))

    # ------------------------------------------------------------------------------------------

    @pynapple_io()
    def fit(self, data, *, method: str | None = None, key: Any, progress: bool | None = None, **options) -> GPFA:
        """Fit by exact EM (Gaussian) or through :func:`bayesneuro.infer.fit` (Poisson).

        Parameters
        ----------
        data : SpikeData
            Counts with trials (data without trials are one trial); trials may differ in length.
        method : str, optional
            ``observation="gaussian"``: ``"em"`` (the default), exact expectation-maximisation.
            ``observation="poisson"``: ``"map"`` (default), ``"laplace"``, ``"svi"`` or
            ``"nuts"`` (small problems only) on :func:`~bayesneuro.latent._gpfa_model.poisson_gpfa_model`
            (latents, loadings, offsets and, with ``learn_timescales``, timescales), started
            from the Gaussian GPFA of the square-root counts.
        key : jax.random key or int
            Required, as everywhere in bayesneuro; the factor-analysis start and EM are
            deterministic, so the Gaussian fit does not depend on it.
        progress : bool, optional
            tqdm bar over EM iterations (default from ``BAYESNEURO_PROGRESS``).
        **options
            Poisson only: method options of :func:`bayesneuro.infer.fit` (``max_iter``,
            ``num_steps``, ``num_warmup``, ``num_samples``, ``num_chains``, ...).

        Returns
        -------
        GPFA
            ``self``, fitted.

        Raises
        ------
        ValueError
            If ``n_latents`` is not smaller than the number of neurons, a trial has fewer than
            2 bins, or a neuron has zero variance or (Poisson) no spikes (the message names the
            trials or neurons); for a method the observation model does not have.
        """
        from ..infer._model import as_key
        from ..infer.fit import progress_default

        allowed = OBSERVATIONS[self.observation]
        method = allowed[0] if method is None else method
        if method not in allowed:
            raise ValueError(f"method must be one of {allowed} for observation={self.observation!r}, got {method!r}")
        if options and self.observation == "gaussian":
            raise ValueError(f"unknown options {sorted(options)} for the Gaussian EM fit")
        as_key(key)
        self._check_data(data, fitting=True)
        y, lengths = self._observations(data)
        groups, _ = self._groups(y, lengths)
        progress = progress_default() if progress is None else bool(progress)
        if self.observation == "poisson":
            return self._fit_poisson(data, method, key, progress, options)
        self.method_ = "em"
        return self._fit_groups(groups, data.bin_size, data.neuron_ids, progress)

    def _fit_poisson(self, data, method: str, key, progress: bool, options: dict) -> GPFA:
        from numpyro.infer import init_to_value

        from ..infer import fit as _fit
        from ._gpfa_model import poisson_gpfa_dims, poisson_gpfa_model

        counts, mask = data.to_padded()
        lengths = mask.sum(axis=1)
        dt = float(data.bin_size)
        sq = np.sqrt(counts.astype(np.float64))
        groups, index = self._groups(sq, lengths)
        start = GPFA(self.n_latents, kernel=self.kernel, transform="sqrt", min_var_frac=self.min_var_frac,
                     eps=self.eps, max_iter=min(self.max_iter, 100), tol=self.tol,
                     learn_timescales=self.learn_timescales, acceleration=self.acceleration,
                     init_timescale=self.init_timescale)
        start._fit_groups(groups, dt, data.neuron_ids, False)
        gp = start._jparams()
        # sqrt-count loadings -> log-rate loadings: d log(s^2) = 2 ds / s, s the mean sqrt count
        s_mean = np.maximum(np.asarray(gp.offsets), 0.1)
        C0 = 2.0 * np.asarray(gp.loadings) / s_mean[:, None]
        mean_count = counts.sum(axis=(0, 1)) / lengths.sum()
        d0 = np.log(mean_count / dt)
        tau0 = np.asarray(gp.timescales)
        T = counts.shape[1]
        L = np.asarray(jax.vmap(lambda t, e: gpfa_kernel(self.kernel, t, e, T))(tau0, gp.eps))
        L = np.linalg.cholesky(L)
        # Laplace-EM from the Gaussian start: E-step, the Laplace posterior (mode, covariance) of
        # every trial's paths; M-step, each neuron's read-out under the expected Poisson
        # likelihood and, for MAP/Laplace with learn_timescales, the timescales (empirical Bayes:
        # the joint mode of paths and timescales has no penalty on short timescales, so they
        # are set by the Laplace marginal likelihood instead, as Gaussian GPFA's EM does).
        # It brings the start near the MAP, where L-BFGS on everything at once converges quickly.
        learn_tau = self.learn_timescales and method in ("map", "laplace")
        if not self.learn_timescales:
            tau0 = np.full(self.n_latents, self.init_timescale / dt)
        p0 = PoissonGPFAParams(jnp.asarray(C0), jnp.asarray(d0), jnp.asarray(tau0), jnp.asarray(gp.eps))
        valid = jnp.asarray(mask.reshape(-1).astype(np.float64))
        yflat = jnp.asarray(counts.reshape(-1, data.n_neuron), _dtype())
        w = jnp.ones(data.n_neuron)
        q = self.n_latents
        x0 = np.zeros((len(lengths), T, q))
        V0 = np.zeros((len(lengths), T, q, q))
        trace = []
        n_sweeps = _EM_SWEEPS if learn_tau else _INIT_SWEEPS
        for _ in range(n_sweeps):
            P, n, lml = [], [], 0.0
            for idx in index:
                Tg = int(lengths[idx[0]])
                post = _poisson_laplace(p0, jnp.asarray(counts[idx, :Tg], _dtype()), w, dt, self.kernel)
                x0[idx, :Tg] = np.asarray(post.mean)
                V0[idx, :Tg] = np.asarray(jnp.einsum("ritjt->rtij", post.cov))
                lml += float(post.log_marginal.sum())
                if learn_tau:
                    # sum over trials of E[x_i x_i^T] under the Laplace posterior, (latent, time, time)
                    P.append(jnp.einsum("ritis->its", post.cov) + jnp.einsum("rti,rsi->its", post.mean, post.mean))
                    n.append(len(idx))
            # the Laplace log marginal likelihood plus the log priors of the read-outs (what the
            # M-steps increase, up to the Laplace approximation)
            trace.append(lml - 0.5 * float(jnp.sum(p0.loadings**2)) - float(jnp.sum((p0.offsets - d0) ** 2)) / 8.0)
            tau_old = np.asarray(p0.timescales)
            Cn, dn = _poisson_expected_readout_step(jnp.asarray(x0.reshape(-1, q)), jnp.asarray(V0.reshape(-1, q, q)),
                                                    yflat, valid, p0.loadings, p0.offsets, jnp.asarray(d0), dt)
            p0 = p0._replace(loadings=Cn, offsets=dn)
            if learn_tau:
                p0 = p0._replace(timescales=_poisson_timescale_step(p0.timescales, p0.eps, tuple(P), tuple(n),
                                                                    self.kernel))
            tau_change = np.max(np.abs(np.asarray(p0.timescales) / tau_old - 1.0))
            if len(trace) > 1 and abs(trace[-1] - trace[-2]) <= _EM_RTOL * abs(trace[-1]) and tau_change < 1e-3:
                break
        self.laplace_em_trace_ = np.asarray(trace)
        tau0 = np.asarray(p0.timescales)
        # modes of the paths at the final parameters, whitened by the final timescales
        for idx in index:
            Tg = int(lengths[idx[0]])
            x0[idx, :Tg] = np.asarray(_poisson_laplace(p0, jnp.asarray(counts[idx, :Tg], _dtype()), w, dt,
                                                       self.kernel).mean)
        L = np.asarray(jax.vmap(lambda t, e: gpfa_kernel(self.kernel, t, e, T))(p0.timescales, p0.eps))
        L = np.linalg.cholesky(L)
        C0, d0z = np.asarray(p0.loadings), np.asarray(p0.offsets)
        z0 = np.zeros_like(x0)
        for idx in index:
            Tg = int(lengths[idx[0]])
            for i in range(q):
                z0[idx, :Tg, i] = np.linalg.solve(L[i, :Tg, :Tg], x0[idx, :Tg, i].T).T
        values = {"loadings": C0, "offsets": d0z, "z": z0}
        fixed = None
        if self.learn_timescales and method in ("svi", "nuts"):
            values["timescale_bins"] = tau0
        else:
            fixed = tau0
        options = dict(options)
        options.setdefault("init_strategy", init_to_value(values={k: jnp.asarray(v) for k, v in values.items()}))
        coords = {"trial": data.trials, "time": (np.arange(T) + 0.5) * dt, "neuron": data.neuron_ids,
                  "latent": np.arange(self.n_latents)}
        extra = {} if fixed is None else {"timescales": fixed}
        result = _fit(
            poisson_gpfa_model, method=method, key=key, coords=coords, dims=poisson_gpfa_dims(),
            progress=progress, counts=counts.astype(np.float64), mask=mask, log_rate_mean=d0,
            n_latents=self.n_latents, n_trial=len(lengths), n_time=T, n_neuron=data.n_neuron, bin_size=dt,
            kernel=self.kernel, eps=self.eps, timescale_prior=self.init_timescale / dt, **extra, **options,
        )
        m = result.params
        tau = np.asarray(m["timescale_bins"]) if fixed is None else np.asarray(fixed, np.float64)
        p = PoissonGPFAParams(np.asarray(m["loadings"]), np.asarray(m["offsets"]), tau, np.full(self.n_latents, self.eps))
        U, D, Tm = _orthonormalize(p.loadings)
        self.params_ = p
        self.loadings_, self.offsets_, self.noise_var_ = p.loadings, p.offsets, None
        self.timescales_ = p.timescales * dt
        self.orthonormal_loadings_, self.orthonormal_transform_ = U, Tm
        self.variance_explained_ = D**2 / np.sum(D**2)
        self.result_ = result
        self.method_ = method
        self.log_likelihood_trace_ = None
        self.log_likelihood_ = None
        self.n_iter_ = result.info.get("n_iter")
        self.converged_ = result.info.get("converged")
        self.neuron_ids_ = np.asarray(data.neuron_ids).copy()
        self.bin_size_ = dt
        self._train_counts = np.asarray(data.counts).copy()
        self._train_lengths = lengths
        return self

    def _pparams(self) -> PoissonGPFAParams:
        return PoissonGPFAParams(*(jnp.asarray(x) for x in self.params_))

    def _fit_groups(self, groups, bin_size: float, neuron_ids, progress: bool) -> GPFA:
        init = _fa_init(groups, self.n_latents, timescale=self.init_timescale / bin_size, eps=self.eps,
                        min_var_frac=self.min_var_frac)
        run = _EM_RUNNERS[self.acceleration]
        res = run(init, groups, kernel=self.kernel, max_iter=self.max_iter, tol=self.tol,
                  var_floor=_var_floor(groups, self.min_var_frac), learn_timescales=self.learn_timescales,
                  progress=progress)
        p = GPFAParams(*(np.asarray(x) for x in res.params))
        U, D, T = _orthonormalize(p.loadings)
        self.params_ = p
        self.loadings_, self.offsets_, self.noise_var_ = p.loadings, p.offsets, p.noise_var
        self.timescales_ = p.timescales * bin_size
        self.orthonormal_loadings_, self.orthonormal_transform_ = U, T
        self.variance_explained_ = D**2 / (np.sum(D**2) + np.sum(p.noise_var))
        self.log_likelihood_trace_ = res.log_likelihoods
        self.log_likelihood_ = float(res.log_likelihoods[-1])
        self.n_iter_, self.converged_ = res.n_iter, res.converged
        self.neuron_ids_ = np.asarray(neuron_ids).copy()
        self.bin_size_ = float(bin_size)
        return self

    def _per_group(self, data):
        self._check_data(data, fitting=False)
        y, lengths = self._observations(data)
        groups, index = self._groups(y, lengths)
        return y, lengths, groups, index

    def _flat(self, data, lengths: np.ndarray, padded: np.ndarray) -> np.ndarray:
        """``(trial, max_time, ...)`` -> ``(time, ...)`` in the bin order of ``data``."""
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        seg = data.segment_ids
        return padded[seg, np.arange(data.n_time) - starts[seg]]

    def _time_coords(self, data) -> dict:
        trial = data.trial_ids if data.trial_ids is not None else np.zeros(data.n_time, np.int64)
        return {"time": data.bin_centers, "trial": ("time", np.asarray(trial))}

    @pynapple_io("dataset")
    def transform(self, data, *, orthonormal: bool = True):
        """Posterior mean and standard deviation of the latents at every bin.

        Parameters
        ----------
        data : SpikeData
            Trials of any length (one bin is enough), with the neurons of the fit.
        orthonormal : bool, default True
            Orthonormalised latents (ordered by variance explained); False: the model's basis.

        Returns
        -------
        xarray.Dataset
            ``mean`` and ``sd``, dims ``(time, latent)``, coords ``time`` (bin centres, s),
            ``latent`` and ``trial`` (along ``time``); select a trial with
            ``ds.where(ds.trial == k, drop=True)`` or ``ds.groupby("trial")``.

        Notes
        -----
        Gaussian: the exact posterior. Poisson fitted by MAP or Laplace, or on data other than
        the training data: the Laplace posterior of the latents at the fitted parameters
        (:func:`poisson_gpfa_posterior`). Poisson fitted by SVI or NUTS, on the training data:
        mean and sd of the posterior draws of the latents (each draw mapped by the
        orthonormalising transform of the fitted loadings).
        """
        import xarray as xr

        _, lengths, groups, index = self._per_group(data)
        q = self.n_latents
        Tm = self.orthonormal_transform_ if orthonormal else np.eye(q)
        mean = np.zeros((len(lengths), int(lengths.max()), q))
        sd = np.zeros_like(mean)
        if self.observation == "poisson":
            counts, _ = data.to_padded()
            from_draws = (self.method_ in ("svi", "nuts") and data.counts.shape == self._train_counts.shape
                          and np.array_equal(data.counts, self._train_counts)
                          and np.array_equal(lengths, self._train_lengths))
            if from_draws:
                x = self.result_.flat_samples()["latents"] @ Tm.T  # (draw, trial, time, latent)
                mean, sd = x.mean(axis=0), x.std(axis=0)
            else:
                params = self._pparams()
                w = jnp.ones(len(self.neuron_ids_))
                for idx in index:
                    T = int(lengths[idx[0]])
                    post = _poisson_laplace(params, jnp.asarray(counts[idx, :T], _dtype()), w,
                                            self.bin_size_, self.kernel)
                    mean[idx, :T] = np.asarray(post.mean) @ Tm.T
                    V = np.einsum("ritjt->rtij", np.asarray(post.cov))
                    sd[idx, :T] = np.sqrt(np.einsum("ai,rtij,aj->rta", Tm, V, Tm))
            groups = ()
        params = self._jparams() if self.observation == "gaussian" else None
        for g, idx in zip(groups, index):
            post = _posterior(params, g, self.kernel)
            T = g.shape[1]
            mean[idx, :T] = np.asarray(post.mean) @ Tm.T
            V = np.einsum("itjt->tij", np.asarray(post.cov))
            sd[idx, :T] = np.sqrt(np.einsum("ai,tij,aj->ta", Tm, V, Tm))[None]
        coords = {**self._time_coords(data), "latent": np.arange(q)}
        dims = ("time", "latent")
        return xr.Dataset(
            {"mean": (dims, self._flat(data, lengths, mean)), "sd": (dims, self._flat(data, lengths, sd))},
            coords=coords,
            attrs={"orthonormal": int(bool(orthonormal)), "transform": str(self.count_transform),
                   "observation": self.observation, "method": self.method_},
        )

    @pynapple_io()
    def log_likelihood(self, data, *, per_trial: bool = False):
        """Marginal log-likelihood of the (transformed) data under the fitted model.

        The density is that of the transformed values (no Jacobian of the square root). For
        ``observation="poisson"``: the Laplace approximation of ``log p(counts)`` at the fitted
        parameters.

        Parameters
        ----------
        data : SpikeData
        per_trial : bool
            Return one value per trial, ``(trial,)``, instead of the total.
        """
        _, lengths, groups, index = self._per_group(data)
        out = np.zeros(len(lengths))
        if self.observation == "poisson":  # Laplace approximation of log p(counts)
            counts, _ = data.to_padded()
            w = jnp.ones(len(self.neuron_ids_))
            for idx in index:
                T = int(lengths[idx[0]])
                post = _poisson_laplace(self._pparams(), jnp.asarray(counts[idx, :T], _dtype()), w,
                                        self.bin_size_, self.kernel)
                out[idx] = np.asarray(post.log_marginal)
            return out if per_trial else float(out.sum())
        params = self._jparams()
        for g, idx in zip(groups, index):
            out[idx] = np.asarray(_posterior(params, g, self.kernel).log_likelihood)
        return out if per_trial else float(out.sum())

    @pynapple_io()
    def predict_left_out(self, data):
        """Leave-neuron-out prediction (Yu et al. 2009): each neuron from all the others.

        For every neuron ``k``, ``C_k E[x | y_{-k}] + d_k`` on the transformed scale, with the
        posterior of the full model given the other neurons of the same trial. For
        ``observation="poisson"``: rates in spikes/s, ``E[exp(C_k x + d_k)]`` under the Laplace
        posterior of the latents given the other neurons, at the fitted parameters.

        Returns
        -------
        xarray.DataArray
            Dims ``(time, neuron)``, coords as :meth:`transform`.
        """
        import xarray as xr

        y, lengths, groups, index = self._per_group(data)
        pred = np.zeros_like(y)
        if self.observation == "poisson":
            counts, _ = data.to_padded()
            for idx in index:
                T = int(lengths[idx[0]])
                pred[idx, :T] = np.asarray(_poisson_left_out(self._pparams(), jnp.asarray(counts[idx, :T], _dtype()),
                                                             self.bin_size_, self.kernel))
            groups = ()
        params = self._jparams() if self.observation == "gaussian" else None
        for g, idx in zip(groups, index):
            pred[idx, : g.shape[1]] = np.asarray(_left_out(params, g, self.kernel))
        return xr.DataArray(self._flat(data, lengths, pred), dims=("time", "neuron"),
                            coords={**self._time_coords(data), "neuron": self.neuron_ids_},
                            name="left_out_prediction")

    def _neuron_weight(self, data, ids, what: str) -> np.ndarray:
        """0/1 weights over the fitted neurons, 1 for the neurons named by ``ids``."""
        wanted = np.atleast_1d(np.asarray(ids))
        where = {v: i for i, v in enumerate(self.neuron_ids_.tolist())}
        missing = [v for v in wanted.tolist() if v not in where]
        if missing:
            raise ValueError(f"{what} {missing} are not neurons of the fit (ids {self.neuron_ids_.tolist()})")
        idx = [where[v] for v in wanted.tolist()]
        if len(set(idx)) != len(idx) or not idx:
            raise ValueError(f"{what} must name distinct neurons, at least one")
        w = np.zeros(len(self.neuron_ids_))
        w[idx] = 1.0
        return w

    def _rates_from_moments(self, mean, var, bin_size: float) -> np.ndarray:
        """Expected counts per second from the Gaussian predictive moments on the model's scale."""
        if self.count_transform == "sqrt":  # count = y^2: E[y^2] = m^2 + v
            expected = mean**2 + var
        else:  # the counts themselves; a negative predicted mean is floored (Poisson needs > 0)
            expected = np.maximum(mean, 1e-6)
        return expected / bin_size

    @pynapple_io("tsdframe")
    def predict_rate(self, data, *, observed_neurons: Any = None) -> np.ndarray:
        """Predicted rates in spikes/s, ``(time, neuron)``, of every fitted neuron.

        The latents are inferred from the ``observed_neurons`` only (default: all), so the
        other neurons' rates are predicted from their peers (co-smoothing).
        ``observation="poisson"``: ``E[exp(C x + d)]`` under the Laplace posterior.
        Gaussian on square-root counts: the model's predictive mean of the count
        ``E[y^2] = m^2 + v`` (``m``, ``v``: predictive mean and variance of ``y``, latent
        uncertainty and noise included); untransformed: ``max(m, 1e-6)``, per bin.

        Parameters
        ----------
        data : SpikeData
            Trials with the fitted neurons.
        observed_neurons : sequence of neuron ids, optional
            The neurons the latents are inferred from.

        Returns
        -------
        numpy.ndarray, shape (time, neuron)
        """
        self._check_fitted()
        self._check_data(data, fitting=False)
        w = (np.ones(len(self.neuron_ids_)) if observed_neurons is None
             else self._neuron_weight(data, observed_neurons, "observed_neurons"))
        y, lengths, groups, index = self._per_group(data)
        out = np.zeros_like(y)
        if self.observation == "poisson":
            counts, _ = data.to_padded()
            for idx in index:
                T = int(lengths[idx[0]])
                out[idx, :T] = np.asarray(_poisson_rates_given(self._pparams(), jnp.asarray(counts[idx, :T], _dtype()),
                                                               self.bin_size_, self.kernel, jnp.asarray(w, _dtype())))
        else:
            for g, idx in zip(groups, index):
                m, v = _predictive_given(self._jparams(), g, self.kernel, jnp.asarray(w, g.dtype))
                out[idx, : g.shape[1]] = self._rates_from_moments(np.asarray(m), np.asarray(v)[None], data.bin_size)
        return self._flat(data, lengths, out)

    def _left_out_rates(self, data) -> np.ndarray:
        """Leave-one-neuron-out rates (spikes/s), ``(time, neuron)``: each neuron from all others."""
        if self.observation == "poisson":
            return self.predict_left_out(data).values
        y, lengths, groups, index = self._per_group(data)
        out = np.zeros_like(y)
        for g, idx in zip(groups, index):
            m, v = _left_out_moments(self._jparams(), g, self.kernel)
            out[idx, : g.shape[1]] = self._rates_from_moments(np.asarray(m), np.asarray(v)[None], data.bin_size)
        return self._flat(data, lengths, out)

    @pynapple_io()
    def score(self, data, *, held_out_neurons: Any = None, per_neuron: bool = False):
        """Co-smoothing bits per spike of held-out neurons (Neural Latents Benchmark).

        The latents are inferred from the held-in neurons only, the held-out neurons' rates
        predicted from them (:meth:`predict_rate`) and scored by
        :func:`~bayesneuro.latent.plds.cosmoothing_bits_per_spike` against their mean rate in
        ``data`` (0: no better than a constant rate; larger is better). Score held-out
        trials. The same number for every observation model and for
        :meth:`bayesneuro.PoissonLDS.score`, so fits compare directly. Yu et al.'s squared
        error on the transformed scale is :meth:`leave_neuron_out_error`.

        Parameters
        ----------
        data : SpikeData
            Held-out trials with every fitted neuron (held-out counts are only scored).
        held_out_neurons : sequence of neuron ids, optional
            The neurons to predict, all from the rest at once. Default: every neuron in turn,
            each from all the others (leave-one-neuron-out).
        per_neuron : bool
            One value per held-out neuron (NaN for one without spikes) instead of the pooled
            score.

        Returns
        -------
        float or numpy.ndarray
        """
        from .plds import cosmoothing_bits_per_spike

        self._check_fitted()
        self._check_data(data, fitting=False)
        if held_out_neurons is None:
            if data.n_neuron < 2:
                raise ValueError("leave-one-neuron-out co-smoothing needs at least 2 neurons")
            held = np.arange(data.n_neuron)
            rates = self._left_out_rates(data)
        else:
            w_held = self._neuron_weight(data, held_out_neurons, "held_out_neurons")
            if w_held.all():
                raise ValueError("held_out_neurons names every neuron; keep some to infer the latents from")
            held = np.flatnonzero(w_held)
            rates = self.predict_rate(data, observed_neurons=self.neuron_ids_[w_held == 0])
        return cosmoothing_bits_per_spike(data.counts[:, held], rates[:, held], data.bin_size, per_neuron=per_neuron)

    def leave_neuron_out_error(self, data, *, per_neuron: bool = False):
        """Leave-neuron-out squared prediction error on the transformed scale (lower is better).

        ``sum_{t, k} (y_tk - C_k E[x_t | y_{-k}] - d_k)^2`` (Yu et al. 2009's cross-validated
        criterion, used by :func:`choose_n_latents`); Gaussian observation only. Score
        held-out trials.

        Parameters
        ----------
        data : SpikeData
        per_neuron : bool
            Return the error of each neuron, ``(neuron,)``.
        """
        if self.observation != "gaussian":
            raise ValueError("leave_neuron_out_error is defined for observation='gaussian'; use score (bits/spike)")
        y, lengths = self._observations(data)
        err = (self.predict_left_out(data).values - self._flat(data, lengths, y)) ** 2
        return err.sum(axis=0) if per_neuron else float(err.sum())

    def simulate(self, n_trials: int, n_time: int, *, key: Any) -> GPFASimulation:
        """Draw trials from the fitted Gaussian model.

        Gaussian: draws are on the model's scale (square-root counts for ``transform="sqrt"``),
        so not counts; refit them with :func:`fit_gpfa_em`. Poisson: integer counts.

        Parameters
        ----------
        n_trials, n_time : int
        key : jax.random key or int
            Required.

        Returns
        -------
        GPFASimulation
            ``observations (trial, time, neuron)`` and ``latents (trial, time, latent)``.
        """
        from ..infer._model import as_key

        self._check_fitted()
        if self.observation == "poisson":
            if int(n_trials) < 1 or int(n_time) < 1:
                raise ValueError(f"n_trials and n_time must be >= 1, got {n_trials}, {n_time}")
            x, y = _poisson_sample(as_key(key), self._pparams(), int(n_trials), int(n_time), self.kernel,
                                   self.bin_size_)
            return GPFASimulation(np.asarray(y).astype(np.int64), np.asarray(x))
        x, y = gpfa_sample(as_key(key), self.params_, n_trials, n_time, kernel=self.kernel)
        return GPFASimulation(np.asarray(y), np.asarray(x))

    def to_inference_data(self):
        """The point estimates as ``arviz.InferenceData`` (one chain, one draw).

        The ``posterior`` holds ``loadings`` and ``orthonormal_loadings`` ``(neuron, latent)``,
        ``offsets`` and ``noise_var`` ``(neuron,)``, ``timescales`` (s) and
        ``variance_explained`` ``(latent,)``; ``sample_stats`` holds ``log_likelihood_trace``
        ``(em_iteration,)``; the settings are in ``attrs``.

        For ``observation="poisson"``: the fit's draws (:meth:`bayesneuro.infer.FitResult.to_inference_data`),
        dims ``trial``, ``time`` (bin centres within a trial, s), ``latent`` and ``neuron``
        (sites ``loadings``, ``offsets``, ``timescale_bins``/``timescale``, ``z``, ``latents``),
        with ``log_likelihood`` and ``observed_data`` of ``counts``.
        """
        import arviz as az

        self._check_fitted()
        if self.observation == "poisson":
            return self.result_.to_inference_data()
        q = self.n_latents
        post = {"loadings": self.loadings_, "orthonormal_loadings": self.orthonormal_loadings_,
                "offsets": self.offsets_, "noise_var": self.noise_var_, "timescales": self.timescales_,
                "variance_explained": self.variance_explained_}
        dims = {"loadings": ["neuron", "latent"], "orthonormal_loadings": ["neuron", "latent"],
                "offsets": ["neuron"], "noise_var": ["neuron"], "timescales": ["latent"],
                "variance_explained": ["latent"], "log_likelihood_trace": ["em_iteration"]}
        trace = self.log_likelihood_trace_
        return az.from_dict(
            posterior={k: np.asarray(v)[None, None] for k, v in post.items()},
            sample_stats={"log_likelihood_trace": trace[None, None]},
            coords={"neuron": self.neuron_ids_, "latent": np.arange(q), "em_iteration": np.arange(len(trace))},
            dims=dims,
            attrs={"model": "GPFA", "method": "em", "kernel": self.kernel, "eps": self.eps,
                   "transform": str(self.count_transform), "bin_size": self.bin_size_,
                   "n_iter": int(self.n_iter_), "converged": int(self.converged_)},
        )

    def __repr__(self) -> str:
        if self.observation == "poisson":
            state = "unfitted" if self.params_ is None else f"fitted by {self.method_}"
            return f"GPFA(n_latents={self.n_latents}, kernel={self.kernel!r}, observation='poisson'; {state})"
        state = "unfitted" if self.params_ is None else f"fitted, {self.n_iter_} EM iterations"
        return f"GPFA(n_latents={self.n_latents}, kernel={self.kernel!r}, transform={self.count_transform!r}; {state})"


def choose_n_latents(data, candidates, *, n_folds: int = 5, key: Any, progress: bool | None = None,
                     **options) -> NLatentsSelection:
    """Cross-validated number of latents: leave-neuron-out error on held-out trials.

    Trials are split at random (by ``key``) into ``n_folds`` folds; for each fold and candidate
    a :class:`GPFA` is fitted on the other trials and scored by :meth:`GPFA.score` on the fold.

    Parameters
    ----------
    data : SpikeData
        With at least ``n_folds`` trials.
    candidates : sequence of int
        Numbers of latents to compare, each smaller than the number of neurons.
    n_folds : int, default 5
    key : jax.random key or int
        Required: shuffles the trials into folds.
    progress : bool, optional
        tqdm bar over the fits.
    **options
        Other :class:`GPFA` settings (``kernel``, ``max_iter``, ``tol``, ...).

    Returns
    -------
    NLatentsSelection
        ``errors`` (``(n_latents, fold)`` DataArray) and ``best``.

    Raises
    ------
    ValueError
        For a bad candidate or fold count, or a neuron with zero variance in a training fold.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.latent.gpfa import choose_n_latents
    >>> rng = np.random.default_rng(1)
    >>> data = bn.SpikeData.from_trials(rng.poisson(4.0, (6, 15, 4)), bin_size=0.02)
    >>> sel = choose_n_latents(data, [1, 2], n_folds=3, key=0, max_iter=10, progress=False)
    >>> sel.errors.dims, sel.best in (1, 2)
    (('n_latents', 'fold'), True)
    """
    import xarray as xr
    from tqdm.auto import tqdm

    from ..infer._model import as_key
    from ..infer.fit import progress_default

    cands = sorted({int(c) for c in np.atleast_1d(candidates)})
    if not cands or cands[0] < 1:
        raise ValueError(f"candidates must be positive integers, got {candidates!r}")
    model = GPFA(cands[-1], **options)
    model._check_data(data, fitting=True)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= data.n_trial:
        raise ValueError(f"n_folds must be an integer in [2, n_trial={data.n_trial}], got {n_folds!r}")
    progress = progress_default() if progress is None else bool(progress)
    perm = np.asarray(jax.random.permutation(as_key(key), data.n_trial))
    folds = np.array_split(perm, n_folds)
    y, lengths = model._observations(data)
    errors = np.zeros((len(cands), n_folds))
    bar = tqdm(total=len(cands) * n_folds, desc="GPFA CV", disable=not progress, leave=False)
    try:
        for f, test in enumerate(folds):
            train = np.setdiff1d(perm, test)
            const = GPFA._constant_neurons(y, lengths, train, data.neuron_ids)
            if const:
                raise ValueError(f"neurons {const[:10]} have zero variance in the training trials of fold {f}; "
                                 "use fewer folds or drop them")
            tr_groups, _ = GPFA._groups(y, lengths, train)
            te_groups, _ = GPFA._groups(y, lengths, test)
            for c, n_lat in enumerate(cands):
                fit = GPFA(n_lat, **options)._fit_groups(tr_groups, data.bin_size, data.neuron_ids, False)
                params = fit._jparams()
                errors[c, f] = sum(float(jnp.sum((_left_out(params, g, fit.kernel) - g) ** 2)) for g in te_groups)
                bar.update(1)
    finally:
        bar.close()
    da = xr.DataArray(errors, dims=("n_latents", "fold"), coords={"n_latents": cands, "fold": np.arange(n_folds)},
                      name="left_out_squared_error")
    return NLatentsSelection(da, cands[int(np.argmin(errors.sum(axis=1)))])
