r"""Gaussian GPFA (Yu et al. 2009): the model's maths as pure JAX functions, and its exact EM.

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
step 2). By default the steps are accelerated by SQUAREM.

Compilation: trial lengths are padded to buckets (:func:`bayesneuro._shapes.bucket_length`: at
most 25% more bins) with the padded bins masked out of the likelihood (the GP over them
integrates out exactly), and the number of trials and of distinct lengths per bucket are padded
too. Each EM step runs one compiled E-step program per bucket and one M-step program, the data
passed as arguments, so a ragged recording compiles a few programs (not one per length) and a new
recording whose lengths fall in the same buckets compiles nothing.

Pure functions
    :func:`gpfa_kernel`, :func:`gpfa_posterior`, :func:`gpfa_log_likelihood`,
    :func:`gpfa_predict_left_out`, :func:`gpfa_sample`, :func:`init_gpfa_params` (factor
    analysis), :func:`gpfa_em_step` and :func:`fit_gpfa_em` work on arrays in the model's units
    (timescales in bins). Trials are a ``(trial, time, neuron)`` array or a list of
    ``(time, neuron)`` arrays of any lengths.

The functions work on arrays in the model's units (timescales in bins): :func:`gpfa_kernel`,
:func:`gpfa_posterior`, :func:`gpfa_log_likelihood`, :func:`gpfa_predict_left_out`,
:func:`gpfa_sample`, :func:`init_gpfa_params` (factor analysis), :func:`gpfa_em_step` and
:func:`fit_gpfa_em`. Trials are a ``(trial, time, neuron)`` array or a list of ``(time, neuron)``
arrays of any lengths. The estimator on :class:`~bayesneuro.data.SpikeData` is
:class:`bayesneuro.latent.gpfa.GPFA`; Poisson observations are in
:mod:`bayesneuro.latent.gpfa_poisson`.

References
----------
Yu, B. M., Cunningham, J. P., Santhanam, G., Ryu, S. I., Shenoy, K. V. & Sahani, M. (2009).
Gaussian-process factor analysis for low-dimensional single-trial analysis of neural population
activity. *J. Neurophysiol.* 102, 614-635.

Varadhan, R. & Roland, C. (2008). Simple and globally convergent methods for accelerating the
convergence of any EM algorithm. *Scand. J. Stat.* 35, 335-353.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular

from bayesneuro._jit import jit

from ..infer._model import to_device

__all__ = [
    "KERNELS",
    "GPFAEMResult",
    "GPFAParams",
    "GPFAPosterior",
    "fit_gpfa_em",
    "gpfa_em_step",
    "gpfa_kernel",
    "gpfa_log_likelihood",
    "gpfa_posterior",
    "gpfa_predict_left_out",
    "gpfa_sample",
    "init_gpfa_params",
    "segment_trials",
]

KERNELS = ("se", "matern32", "matern52")
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_TAU_BOUNDS = (math.log(1e-2), math.log(1e5))  # timescales in bins, a guard against runaway


class GPFAParams(NamedTuple):
    """Parameters of a GPFA model (see the module docstring), in bins.

    Attributes
    ----------
    loadings : Array
        :math:`C`, shape ``(neuron, latent)``.
    offset : Array
        :math:`d`, shape ``(neuron,)``.
    observation_var : Array
        Diagonal of :math:`R`, shape ``(neuron,)``, positive.
    timescales : Array
        :math:`\\tau`, shape ``(latent,)``, in bins (seconds / bin size).
    eps : Array
        GP noise variances :math:`\\varepsilon`, shape ``(latent,)``, in ``(0, 1)``; held fixed.
    """

    loadings: jax.Array
    offset: jax.Array
    observation_var: jax.Array
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
    >>> from bayesneuro.latent.gpfa_gaussian import gpfa_kernel
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


@partial(jit, static_argnames="kernel")
def _posterior(params: GPFAParams, y, kernel: str) -> GPFAPosterior:
    C, d, R = params.loadings, params.offset, params.observation_var
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
    C, d, R = params.loadings, params.offset, params.observation_var
    n, T, N = y.shape
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
        kern = lambda x: gpfa_kernel(kernel, jnp.exp(x), eps, T)
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

    def body(state):  # the first pass evaluates x0 (``fun`` is traced once, not twice)
        x, f, g, h, t, done, it = state
        first = it == 0
        step = jnp.where(first, 0.0, t * direction(x, g, h))
        conv = ~first & (h > 0) & (g * g / jnp.where(h > 0, h, 1.0) <= 1e-15 * (1.0 + jnp.abs(f)))
        fc, gc, hc = fun(x + step)
        ok = ((fc <= f) | first) & ~done
        keep = lambda new, old: jnp.where(ok, new, old)
        t_new = jnp.where(ok, 1.0, 0.5 * t)
        done = done | conv | (~first & (step == 0)) | (t_new < 2.0**-40)
        return keep(x + step, x), keep(fc, f), keep(gc, g), keep(hc, h), t_new, done, it + 1

    ones = jnp.ones_like(x0)
    init = (x0, jnp.inf * ones, 0.0 * ones, ones, ones, jnp.zeros(x0.shape, bool), 0)
    x, *_ = lax.while_loop(lambda s: ~jnp.all(s[5]) & (s[6] <= max_iter), body, init)
    return x


class _Bucket(NamedTuple):
    """Trials of a few lengths, zero-padded to one bucket length (see :func:`_buckets`).

    ``y`` ``(trial, time, neuron)``; ``slot`` ``(trial,)`` the length slot of each trial;
    ``weight`` ``(trial,)`` 1 for a trial, 0 for padding; ``mask`` ``(slot, time)`` 1 on the bins
    of a slot's length; ``count`` ``(slot,)`` trials per slot (0 for padding slots).
    """

    y: jax.Array
    slot: jax.Array
    weight: jax.Array
    mask: jax.Array
    count: jax.Array


_MERGE_SECONDS = 0.5  # merge two length buckets when the extra E-step work costs less (see _bucket_layout)


def _bucket_layout(groups, n_latents: int = 1) -> list[tuple[int, list[int]]]:
    """Which equal-length groups share a bucket: ``[(bucket length, [group index, ...]), ...]``,
    by increasing length; lengths padded by :func:`bayesneuro._shapes.bucket_length` (at most 25%
    more bins).

    Each bucket is one more compiled E-step program (about a second on a 2-core CPU), so a
    bucket of short trials is merged into the next longer one when the extra E-step work
    (``slots * (latent * bins)^3`` flops, over about 200 EM steps at 5 GFLOP/s) costs less than
    ``_MERGE_SECONDS``: small ragged recordings compile one program, large ones keep tight
    buckets."""
    from .._shapes import bucket_length

    by: dict[int, list[int]] = {}
    for a, g in enumerate(groups):
        by.setdefault(bucket_length(g.shape[1]), []).append(a)
    q3 = float(n_latents) ** 3
    merged = True
    while merged and len(by) > 1:
        merged = False
        keys = sorted(by)
        for lo, hi in itertools.pairwise(keys):
            extra = len(by[lo]) * q3 * (float(hi) ** 3 - float(lo) ** 3)  # length slots of lo
            if 3.0 * extra * 200 / 5e9 < _MERGE_SECONDS:
                by[hi] = by.pop(lo) + by[hi]
                merged = True
                break
    return [(Tb, by[Tb]) for Tb in sorted(by)]


def _buckets(groups, n_latents: int = 1) -> tuple[_Bucket, ...]:
    """Equal-length groups -> buckets (:func:`_bucket_layout`): trials zero-padded to their bucket's
    length, trials and length slots padded to bucket sizes too, so that a new recording whose
    lengths fall in the same buckets reuses the compiled programs. Within a bucket, the trials
    of its groups follow each other in the layout's order."""
    from .._shapes import bucket_length

    out = []
    for Tb, members in _bucket_layout(groups, n_latents):
        gs = [np.asarray(groups[a]) for a in members]
        n = sum(g.shape[0] for g in gs)
        nb, ub, N = bucket_length(n, minimum=4), bucket_length(len(gs), minimum=1), gs[0].shape[2]
        y = np.zeros((nb, Tb, N), gs[0].dtype)
        slot, weight = np.zeros(nb, np.int32), np.zeros(nb, gs[0].dtype)
        mask, count = np.ones((ub, Tb), gs[0].dtype), np.zeros(ub, gs[0].dtype)
        k = 0
        for a, g in enumerate(gs):
            m, T = g.shape[0], g.shape[1]
            y[k:k + m, :T], slot[k:k + m], weight[k:k + m] = g, a, 1.0
            mask[a, T:], count[a] = 0.0, m
            k += m
        out.append(_Bucket(*(to_device(x) for x in (y, slot, weight, mask, count))))
    return tuple(out)


def _bucket_estep(params: GPFAParams, bk: _Bucket, kernel: str):
    """Exact E-step of one bucket: trials of each length slot share one posterior covariance.

    The padded bins of a trial carry no observation (their rows of ``R^{-1}`` are masked), so
    the GP over them integrates out exactly: posterior means and ``log p(y)`` of the real bins
    are those of the unpadded trial. Returns the M-step's sufficient statistics (padded bins
    and trials masked out), the per-slot ``P[latent, slot] = sum_trials E[x_i x_i^T]`` on the
    slot's bins, and the summed ``log p(y)``.
    """
    C, d, R = params.loadings, params.offset, params.observation_var
    nb, Tb, N = bk.y.shape
    q = C.shape[1]
    L = _prior_chol(params, Tb, kernel)  # (latent, time, time)
    rinv = 1.0 / R
    CRC = (C * rinv[:, None]).T @ C
    S = jnp.einsum("ij,iut,au,jus->aitjs", CRC, L, bk.mask, L).reshape(-1, q * Tb, q * Tb)
    Ls = jnp.linalg.cholesky(S + jnp.eye(q * Tb, dtype=S.dtype))  # (slot, qT, qT)
    tm = bk.mask[bk.slot] * bk.weight[:, None]  # (trial, time): 1 on real bins of real trials
    r = (bk.y - d) * tm[:, :, None]
    b = jnp.einsum("ntk,ki->nit", r, C * rinv[:, None])
    v = jnp.einsum("iut,niu->nit", L, b).reshape(nb, q * Tb)
    Z = jax.vmap(lambda A: solve_triangular(A, v.T, lower=True))(Ls)  # (slot, qT, trial)
    W = jax.vmap(lambda A, B: solve_triangular(A, B, lower=True, trans=1))(Ls, Z)
    rows = jnp.arange(nb)
    z, w = Z[bk.slot, :, rows], W[bk.slot, :, rows].reshape(nb, q, Tb)
    mean = jnp.einsum("itu,niu->nti", L, w) * tm[:, :, None]  # zero on padding
    G = jax.vmap(_cov_factor, in_axes=(0, None))(Ls, L)  # (slot, qT, latent, time)
    cov_tt = jnp.einsum("a,aeit,aejt,at->ij", bk.count, G, G, bk.mask)
    onehot = (bk.slot[:, None] == jnp.arange(bk.mask.shape[0])) * bk.weight[:, None]  # (trial, slot)
    P = (jnp.einsum("a,aeit,aeis->iats", bk.count, G, G) * bk.mask[None, :, :, None] * bk.mask[None, :, None, :]
         + jnp.einsum("na,nti,nsi->iats", onehot, mean, mean))
    yt = bk.y * tm[:, :, None]
    T_a = bk.mask.sum(axis=1)
    logdet = T_a * jnp.sum(jnp.log(R)) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(Ls, axis1=1, axis2=2)), axis=1)
    quad = jnp.sum(r**2 * rinv) - jnp.sum(z**2 * bk.weight[:, None])
    ll = -0.5 * (jnp.sum(bk.count * (N * T_a * _LOG_2PI + logdet)) + quad)
    sums = (cov_tt + jnp.einsum("nti,ntj->ij", mean, mean), mean.sum(axis=(0, 1)),
            jnp.einsum("ntk,nti->ki", yt, mean), yt.sum(axis=(0, 1)), (yt * yt).sum(axis=(0, 1)), tm.sum())
    return sums, P, ll


@partial(jit, static_argnames="kernel")
def _bucket_stats(s: _EMState, eps, bk: _Bucket, kernel: str):
    """:func:`_bucket_estep` at an EM state: one program per bucket shape."""
    return _bucket_estep(_from_state(s, eps), bk, kernel)


def _masked_timescale_objective(log_tau, eps, P, count, mask, kernel):
    """:func:`_timescale_objective` (with derivatives) on length slots padded to one length.

    ``P`` ``(slot, time, time)`` is zero outside each slot's bins; with
    ``K' = K * (m m^T) + diag(1 - m)``, ``log|K'| = log|K_T|`` and
    ``tr(K'^{-1} P) = tr(K_T^{-1} P_T)``, so each slot contributes its own length's objective.
    """
    T = P.shape[-1]
    one = jnp.ones_like(log_tau)
    kern = lambda x: gpfa_kernel(kernel, jnp.exp(x), eps, T)
    K0, (K1, K2) = kern(log_tau), jax.jvp(lambda x: jax.jvp(kern, (x,), (one,)), (log_tau,), (one,))[1]
    mm = mask[:, :, None] * mask[:, None, :]
    Kp = K0 * mm + jax.vmap(jnp.diag)(1.0 - mask)
    K1, K2 = K1 * mm, K2 * mm
    Lk = jnp.linalg.cholesky(Kp)
    eye = jnp.eye(T, dtype=P.dtype)
    Ki = jax.vmap(lambda A: cho_solve((A, True), eye))(Lk)
    KiP = Ki @ P
    B = KiP @ Ki
    A1 = Ki @ K1
    f = count * jnp.sum(jnp.log(jnp.diagonal(Lk, axis1=1, axis2=2)), axis=1) + 0.5 * jnp.trace(KiP, axis1=1, axis2=2)
    g = 0.5 * (count * jnp.sum(Ki * K1, axis=(1, 2)) - jnp.sum(K1 * B, axis=(1, 2)))
    h = 0.5 * (count * (jnp.sum(Ki * K2, axis=(1, 2)) - jnp.sum(A1 * jnp.swapaxes(A1, 1, 2), axis=(1, 2)))
               - jnp.sum(K2 * B, axis=(1, 2)) + 2.0 * jnp.sum(A1 * jnp.swapaxes(B @ K1, 1, 2), axis=(1, 2)))
    return jnp.sum(f), jnp.sum(g), jnp.sum(h)


def _timescale_newton(timescales, eps, P: tuple, counts: tuple, masks: tuple, kernel: str):
    """Each latent's log timescale maximising its expected GP prior (per-bucket ``P``
    ``(latent, slot, time, time)``), by :func:`_newton_batch`."""
    lo, hi = _LOG_TAU_BOUNDS

    def fgh(x):
        def one(x_i, e_i, *P_i):
            out = [_masked_timescale_objective(x_i, e_i, Pb, c, m, kernel) for Pb, c, m in zip(P_i, counts, masks)]
            return tuple(sum(o[k] for o in out) for k in range(3))

        return jax.vmap(one)(x, eps, *P)

    return jnp.exp(_newton_batch(fgh, jnp.clip(jnp.log(timescales), lo, hi), lo, hi))


@partial(jit, static_argnames=("kernel", "learn_timescales"))
def _bucket_mstep(s: _EMState, eps, stats: tuple, masks: tuple, counts: tuple, var_floor, kernel: str,
                  learn_timescales: bool):
    """M-step from the buckets' statistics: ``[C, d]`` by least squares, ``R`` floored, timescales
    by Newton; returns the new state and the total ``log p(y)`` of ``s``."""
    q = s.loadings.shape[1]
    sums = [sum(st[0][k] for st in stats) for k in range(6)]
    sum_xx, sum_x, sum_yx, sum_y, sum_yy, n_bins = sums
    ll = sum(st[2] for st in stats)
    term = jnp.block([[sum_xx, sum_x[:, None]], [sum_x[None, :], jnp.reshape(n_bins, (1, 1)).astype(sum_x.dtype)]])
    rhs = jnp.concatenate([sum_yx, sum_y[:, None]], axis=1)
    cd = jnp.linalg.solve(term, rhs.T).T
    C_new, d_new = cd[:, :q], cd[:, q]
    resid = sum_yy - 2.0 * sum_y * d_new - jnp.sum((sum_yx - d_new[:, None] * sum_x[None, :]) * C_new, axis=1)
    R_new = jnp.maximum(var_floor, d_new**2 + resid / n_bins)
    tau = jnp.exp(s.log_timescales)
    if learn_timescales:
        tau = _timescale_newton(tau, eps, tuple(st[1] for st in stats), counts, masks, kernel)
    return _EMState(C_new, d_new, jnp.log(R_new), jnp.log(tau)), ll


class _BucketStep:
    """The EM map on :class:`_EMState` over buckets: one E-step program per bucket shape and one
    M-step program, so a new recording whose trial lengths fall in the same buckets (the usual
    case) compiles nothing, and distinct lengths do not each unroll a copy of the E-step."""

    lower = None  # run_em: already compiled, do not wrap the whole step in one jit

    def __init__(self, kernel: str, learn_timescales: bool):
        self.kernel, self.learn_timescales = kernel, learn_timescales

    def __call__(self, s: _EMState, buckets, var_floor, eps):
        stats = tuple(_bucket_stats(s, eps, bk, self.kernel) for bk in buckets)
        return _bucket_mstep(s, eps, stats, tuple(b.mask for b in buckets), tuple(b.count for b in buckets),
                             var_floor, self.kernel, self.learn_timescales)


def _predictive(params: GPFAParams, y, kernel: str, weight, variance: bool = True):
    """Predictive mean ``(trial, time, neuron)`` and variance ``(time, neuron)`` of every
    neuron's observation given the neurons with ``weight`` 1 (``weight`` in {0, 1}, (neuron,)):
    ``C E[x | y_obs] + d`` and ``diag(C Sigma_t C^T) + R`` (None without ``variance``, which
    saves the ``(latent time)^3`` solve)."""
    C, d = params.loadings, params.offset
    T = y.shape[1]
    L = _prior_chol(params, T, kernel)
    rinv = weight / params.observation_var
    Ls = _precision_chol(C, rinv, L)
    mean, _ = _posterior_mean(C, d, rinv, L, Ls, y)
    if not variance:
        return mean @ C.T + d, None
    G = _cov_factor(Ls, L)
    var = jnp.sum(jnp.einsum("ki,ait->atk", C, G) ** 2, axis=0) + params.observation_var
    return mean @ C.T + d, var


@partial(jit, static_argnames="kernel")
def _predictive_given(params: GPFAParams, y, kernel: str, weight):
    return _predictive(params, y, kernel, weight)


@partial(jit, static_argnames="kernel")
def _left_out_moments(params: GPFAParams, y, kernel: str):
    """Leave-one-neuron-out predictive mean ``(trial, time, neuron)`` and variance ``(time, neuron)``."""
    N = params.loadings.shape[0]

    def one(k):
        m, v = _predictive(params, y, kernel, jnp.ones(N, y.dtype).at[k].set(0.0))
        return m[..., k], v[:, k]

    m, v = lax.map(one, jnp.arange(N))
    return jnp.moveaxis(m, 0, -1), jnp.moveaxis(v, 0, -1)


@partial(jit, static_argnames="kernel")
def _left_out(params: GPFAParams, y, kernel: str):
    """Leave-one-neuron-out predictive means ``(trial, time, neuron)``."""
    N = params.loadings.shape[0]

    def one(k):
        return _predictive(params, y, kernel, jnp.ones(N, y.dtype).at[k].set(0.0), variance=False)[0][..., k]

    return jnp.moveaxis(lax.map(one, jnp.arange(N)), 0, -1)


# ----------------------------------------------------------------------------- checked wrappers


def _check_params(params) -> GPFAParams:
    if not isinstance(params, GPFAParams):
        raise TypeError(f"params must be a GPFAParams, got {type(params).__name__}")
    p = GPFAParams(*(to_device(np.asarray(x, dtype=np.float64)) for x in params))
    if p.loadings.ndim != 2:
        raise ValueError(f"loadings must be (neuron, latent), got shape {p.loadings.shape}")
    N, q = p.loadings.shape
    for name, x, shape in [("offset", p.offset, (N,)), ("observation_var", p.observation_var, (N,)),
                           ("timescales", p.timescales, (q,)), ("eps", p.eps, (q,))]:
        if x.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in p):
        raise ValueError("GPFAParams contain NaN or infinite values")
    if bool(jnp.any(p.observation_var <= 0)) or bool(jnp.any(p.timescales <= 0)):
        raise ValueError("observation_var and timescales must be positive")
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
        return (to_device(y),), [np.arange(y.shape[0])]
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
    groups = tuple(to_device(np.stack([arrays[k] for k in idx])) for idx in index)
    return groups, index


def segment_trials(trials, segment_length: int) -> list[np.ndarray]:
    """Trials cut into segments of ``segment_length`` bins, as elephant's ``GPFA.fit`` trains.

    A trial of ``T > segment_length`` bins becomes ``ceil(T / segment_length)`` segments of
    exactly ``segment_length`` bins, the first starting at bin 0 and the last ending at bin
    ``T``: the overlap this needs is spread as evenly as possible over the segment boundaries
    (:func:`elephant.gpfa.gpfa_util.cut_trials` draws it at random), so the bins of an overlap
    count twice. When ``T`` is a multiple of ``segment_length`` the segments are disjoint and
    the same as elephant's. A trial of at most ``segment_length`` bins is kept whole (elephant
    drops trials shorter than a segment).

    Fitting on segments is an approximation: all segments share one length, so EM factorises
    one ``(latent*segment_length)`` covariance per step instead of one per distinct trial
    length, but correlations across segment boundaries are ignored, and timescales much longer
    than a segment are poorly identified.

    Parameters
    ----------
    trials : list of array_like (time, neuron), or array_like (trial, time, neuron)
    segment_length : int
        Bins per segment, at least 2.

    Returns
    -------
    list of numpy.ndarray (time, neuron)

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.gpfa_gaussian import segment_trials
    >>> segs = segment_trials([np.arange(50.0)[:, None], np.ones((7, 1))], 20)
    >>> [(float(s[0, 0]), len(s)) for s in segs]
    [(0.0, 20), (15.0, 20), (30.0, 20), (1.0, 7)]
    """
    if isinstance(segment_length, bool) or not isinstance(segment_length, (int, np.integer)) or segment_length < 2:
        raise ValueError(f"segment_length must be an integer >= 2, got {segment_length!r}")
    L = int(segment_length)
    out = []
    for a in trials:
        a = np.asarray(a)
        T = a.shape[0]
        if T <= L:
            out.append(a)
            continue
        n = -(-T // L)
        overlap = n * L - T
        ol = np.full(n - 1, overlap // (n - 1))
        ol[: overlap % (n - 1)] += 1
        starts = L * np.arange(n) - np.r_[0, np.cumsum(ol)]
        out.extend(a[s : s + L] for s in starts)
    return out


def _var_floor(groups, min_var_frac: float):
    y = np.concatenate([np.asarray(g).reshape(-1, g.shape[-1]) for g in groups])
    return to_device(min_var_frac * np.var(y, axis=0, ddof=1 if y.shape[0] > 1 else 0))


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
    >>> from bayesneuro.latent.gpfa_gaussian import GPFAParams, gpfa_posterior
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
    >>> from bayesneuro.latent.gpfa_gaussian import GPFAParams, gpfa_log_likelihood
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
    >>> from bayesneuro.latent.gpfa_gaussian import GPFAParams, gpfa_predict_left_out
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
    >>> from bayesneuro.latent.gpfa_gaussian import GPFAParams, gpfa_sample
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


@partial(jit, static_argnums=(2, 3, 4))
def _sample(key, params, n_trials, n_time, kernel):
    N, q = params.loadings.shape
    L = _prior_chol(params, n_time, kernel)
    kx, ky = jax.random.split(key)
    dtype = params.loadings.dtype
    x = jnp.einsum("itu,niu->nti", L, jax.random.normal(kx, (n_trials, q, n_time), dtype))
    noise = jax.random.normal(ky, (n_trials, n_time, N), dtype) * jnp.sqrt(params.observation_var)
    return x, x @ params.loadings.T + params.offset + noise


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
    >>> from bayesneuro.latent.gpfa_gaussian import init_gpfa_params
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
    return GPFAParams(to_device(W.T), to_device(mean), to_device(np.maximum(psi, floor)),
                      to_device(np.full(q, float(timescale))), to_device(np.full(q, float(eps))))


def gpfa_em_step(params: GPFAParams, trials, *, kernel: str = "se", min_var_frac: float = 0.01,
                 learn_timescales: bool = True) -> tuple[GPFAParams, float]:
    """One EM step; returns the new parameters and the log-likelihood of the *old* ones.

    Trials of equal length are conditioned together (programs compiled per length bucket). The
    noise floor is ``min_var_frac`` times each neuron's variance over all bins.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.gpfa_gaussian import init_gpfa_params, gpfa_em_step
    >>> y = np.random.default_rng(0).normal(size=(5, 20, 4))
    >>> p0 = init_gpfa_params(y, 1)
    >>> p1, ll0 = gpfa_em_step(p0, y)
    >>> p2, ll1 = gpfa_em_step(p1, y)
    >>> ll1 >= ll0
    True
    """
    params = _check_params(params)
    groups, _ = _group(trials, params.loadings.shape[0])
    step = _BucketStep(_check_kernel(kernel), bool(learn_timescales))
    new, ll = step(_to_state(params), _buckets(groups, params.loadings.shape[1]), _var_floor(groups, min_var_frac), params.eps)
    return _from_state(new, params.eps), float(ll)


def fit_gpfa_em(params: GPFAParams, trials, *, kernel: str = "se", max_iter: int = 500,
                tol: float | None = 1e-8, min_var_frac: float = 0.01, learn_timescales: bool = True,
                squarem: bool = True, progress: bool | None = None) -> GPFAEMResult:
    """Fit GPFA by exact EM from ``params`` (e.g. :func:`init_gpfa_params`).

    The loop is :func:`bayesneuro.engine.em.run_em` on :func:`gpfa_em_step`'s map, its state
    the loadings, offsets, log observation variances and log timescales (so SQUAREM's
    extrapolation keeps variances and timescales positive; extrapolated variances are raised
    to the floor and timescales clipped to ``[0.01, 1e5]`` bins).

    Parameters
    ----------
    params : GPFAParams
        Starting point.
    trials : list of array_like (time, neuron), or array_like (trial, time, neuron)
        Any lengths; equal lengths are conditioned together.
    kernel : {"se", "matern32", "matern52"}
    max_iter : int
        Maximum number of EM steps (E-steps).
    tol : float or None
        The engine's rule: stop when the log-likelihood changes by at most
        ``tol * max(1, |log-likelihood|)`` in one plain EM step. None: run all ``max_iter``
        steps.
    min_var_frac : float
        Floor of the observation variances, as a fraction of each neuron's variance.
    learn_timescales : bool
        Update the timescales (else keep them fixed).
    squarem : bool
        True (default): squared extrapolation of the EM map (Varadhan & Roland 2008, scheme S3
        with the monotone safeguard): each cycle takes two EM steps, extrapolates along them,
        and keeps the extrapolated point only if its log-likelihood is no lower than after one
        plain step, so the log-likelihood still never decreases but converges in several
        times fewer E-steps. False: plain EM, step for step elephant's.
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
    >>> from bayesneuro.latent.gpfa_gaussian import GPFAParams, gpfa_sample, init_gpfa_params, fit_gpfa_em
    >>> C = jnp.array([[1.0, 0.0], [0.5, 1.0], [-1.0, 0.5], [0.0, 1.0], [1.0, 1.0]])
    >>> p = GPFAParams(C, jnp.zeros(5), 0.1 * jnp.ones(5), jnp.array([3.0, 8.0]), jnp.full(2, 1e-3))
    >>> _, y = gpfa_sample(jax.random.key(0), p, 10, 30)
    >>> fit = fit_gpfa_em(init_gpfa_params(y, 2), y, max_iter=20, tol=None, progress=False)
    >>> fit.n_iter, bool(fit.log_likelihoods[-1] > fit.log_likelihoods[0])
    (20, True)
    >>> plain = fit_gpfa_em(init_gpfa_params(y, 2), y, max_iter=20, tol=None, squarem=False, progress=False)
    >>> len(plain.log_likelihoods), bool(fit.log_likelihoods[-1] >= plain.log_likelihoods[-1])
    (21, True)
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not isinstance(squarem, (bool, np.bool_)):
        raise ValueError(f"squarem must be True or False, got {squarem!r}")
    if not 0.0 < min_var_frac < 1.0:
        raise ValueError(f"min_var_frac must be in (0, 1), got {min_var_frac}")
    params = _check_params(params)
    groups, _ = _group(trials, params.loadings.shape[0])
    return _fit_em(params, groups, kernel=_check_kernel(kernel), max_iter=int(max_iter), tol=tol,
                   var_floor=_var_floor(groups, min_var_frac), learn_timescales=bool(learn_timescales),
                   squarem=bool(squarem), progress=progress)


def _fit_em(params, groups, *, kernel, max_iter, tol, var_floor, learn_timescales, squarem, progress,
            warn: bool = True) -> GPFAEMResult:
    """:func:`fit_gpfa_em` on checked parameters and trials grouped by length."""
    from ..engine.em import run_em

    buckets = _buckets(groups, params.loadings.shape[1])
    step = _Counted(_BucketStep(kernel, learn_timescales))
    state, trace = run_em(step, _to_state(params), buckets, var_floor, params.eps, max_iter=max_iter, tol=tol,
                          squarem=squarem, project=partial(_project, var_floor=var_floor), progress=progress,
                          desc="GPFA EM (SQUAREM)" if squarem else "GPFA EM", warn=warn)
    out = _from_state(state, params.eps)
    final = float(sum(_bucket_stats(state, params.eps, bk, kernel)[2] for bk in buckets))  # no new program
    if not math.isfinite(final):
        raise FloatingPointError("GPFA EM: the log-likelihood of the final parameters is not finite")
    calls = [float(v) for v in step.values]
    at, i = [], 0
    for value in trace.objective:  # the E-step (1-based call) that produced each record
        while calls[i] != value:
            i += 1
        at.append(i + 1)
        i += 1
    return GPFAEMResult(out, np.r_[trace.objective, final], int(trace.n_iter), bool(trace.converged),
                        np.asarray(at + [int(trace.n_iter) + 1]))


# The EM loop (bayesneuro.engine.em.run_em) is a Python loop over one jitted step, not one
# ``lax.while_loop``: a while loop whose body holds another (the timescale Newton iterations)
# intermittently deadlocked the XLA CPU runtime (jaxlib 0.10) once trials reach ~200 bins.


class _EMState(NamedTuple):
    """EM state in unconstrained coordinates (what SQUAREM extrapolates)."""

    loadings: jax.Array
    offset: jax.Array
    log_observation_var: jax.Array
    log_timescales: jax.Array


@jit
def _to_state(p: GPFAParams) -> _EMState:
    return _EMState(p.loadings, p.offset, jnp.log(p.observation_var), jnp.log(p.timescales))


@jit
def _from_state(s: _EMState, eps) -> GPFAParams:
    return GPFAParams(s.loadings, s.offset, jnp.exp(s.log_observation_var), jnp.exp(s.log_timescales), eps)


@jit
def _project(s: _EMState, var_floor) -> _EMState:
    """An extrapolated state back into the constraint set: variances at least the floor."""
    lo, hi = _LOG_TAU_BOUNDS
    return s._replace(log_observation_var=jnp.maximum(s.log_observation_var, jnp.log(var_floor)),
                      log_timescales=jnp.clip(s.log_timescales, lo, hi))


class _Counted:
    """A jitted step that keeps the objective of every call (to count E-steps per record)."""

    def __init__(self, fun):
        self.fun, self.lower, self.values = fun, None, []

    def __call__(self, *args):
        out = self.fun(*args)
        self.values.append(out[1])
        return out


def _orthonormalize(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``C = U diag(D) V^T``; returns U (signs: largest entry of each column positive), D, T."""
    U, D, Vt = np.linalg.svd(C, full_matrices=False)
    s = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    s[s == 0] = 1.0
    return U * s, D, (D * s)[:, None] * Vt  # x_orth = T x,  C_orth = U


