r"""Poisson GPFA: the model's maths as pure JAX functions, and its Laplace-EM.

For trial ``r``, bin ``t`` and neuron ``n`` (``dt`` the bin size in seconds), with the GP prior of
:mod:`bayesneuro.latent.gpfa_gaussian` (:func:`~bayesneuro.latent.gpfa_gaussian.gpfa_kernel`,
timescales in bins):

.. math::

    x_i(\cdot) \sim \mathcal{GP}(0, K_i), \qquad
    y_{rtn} \mid x \sim \operatorname{Poisson}\!\big(dt\, e^{C_n x_{rt} + d_n}\big),

``d`` in log spikes/s. The latents of a trial have no closed-form posterior; the Laplace
approximation is found by Newton's method on the whitened paths ``z`` (``x_i = L_i z_i``,
``L_i L_i^T = K_i``), whose Hessian ``I + L^T W L`` is positive definite
(:func:`poisson_gpfa_posterior`). :func:`fit_poisson_gpfa_em` is Laplace-EM: the E-step takes the
Laplace posterior of every trial, the M-step each neuron's read-out ``(C_n, d_n)`` under the
expected Poisson likelihood (with the priors ``C ~ N(0, 1)`` and ``d_n ~ N(centre_n, 2^2)`` of
the NumPyro model :func:`~bayesneuro.latent._gpfa_model.poisson_gpfa_model`) and, optionally,
the timescales maximising the expected GP prior under the Laplace moments (empirical Bayes, as
the M-step of Gaussian GPFA). The estimator :class:`bayesneuro.latent.gpfa.GPFA` with
``observation="poisson"`` uses it to start MAP, Laplace, SVI or NUTS through
:func:`bayesneuro.infer.fit`.
"""

from __future__ import annotations

from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular

from bayesneuro._jit import jit

from ..engine.newton import newton
from ..infer._model import to_device
from .gpfa_gaussian import (
    _LOG_TAU_BOUNDS,
    _bucket_layout,
    _buckets,
    _check_kernel,
    _cov_factor,
    _dtype,
    _group,
    _timescale_newton,
    gpfa_kernel,
)

_NEWTON_TOL = 5e-15  # Laplace modes: stop when half the Newton decrement is below this (relative)
_EM_NEWTON_TOL = 1e-12  # ... inside Laplace-EM sweeps (warm-started: at most 3 Newton steps instead of 4)

__all__ = [
    "PoissonGPFAEMResult",
    "PoissonGPFAParams",
    "PoissonGPFAPosterior",
    "fit_poisson_gpfa_em",
    "poisson_gpfa_em_step",
    "poisson_gpfa_posterior",
    "poisson_gpfa_sample",
]


class PoissonGPFAParams(NamedTuple):
    """Parameters of Poisson GPFA, ``counts ~ Poisson(dt exp(C x + d))``, timescales in bins.

    Attributes
    ----------
    loadings : Array
        :math:`C`, shape ``(neuron, latent)``.
    offset : Array
        :math:`d`, shape ``(neuron,)``, log spikes/s.
    timescales : Array
        :math:`\\tau`, shape ``(latent,)``, in bins.
    eps : Array
        GP noise variances, shape ``(latent,)``, in ``(0, 1)``.
    """

    loadings: jax.Array
    offset: jax.Array
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


class PoissonGPFAEMResult(NamedTuple):
    """Output of :func:`fit_poisson_gpfa_em`.

    Attributes
    ----------
    params : PoissonGPFAParams
        The parameters after the last M-step.
    objective : numpy.ndarray
        Before each M-step: the Laplace log marginal likelihood of the counts plus the log
        priors of loadings and offset (what the M-steps increase, up to the Laplace
        approximation), one entry per sweep.
    n_iter : int
        Sweeps taken (E-step and M-step).
    converged : bool
        Whether the ``tol`` criterion stopped the run before ``max_iter`` sweeps.
    modes : list of numpy.ndarray
        Laplace modes of the latents, ``(time, latent)`` per trial in the order given, from the
        last E-step (at the parameters before the last M-step).
    """

    params: PoissonGPFAParams
    objective: np.ndarray
    n_iter: int
    converged: bool
    modes: list


def _chol_solve(H, g):
    """Newton step ``H^{-1} g`` for the positive definite ``I + L^T W L`` (``g`` (latent, time))."""
    return cho_solve((jnp.linalg.cholesky(H), True), g.reshape(-1)).reshape(g.shape)


@partial(jit, static_argnums=(1, 2))
def _poisson_chol(params, n_time: int, kernel: str) -> jax.Array:
    K = jax.vmap(lambda tau, e: gpfa_kernel(kernel, tau, e, n_time))(params.timescales, params.eps)
    return jnp.linalg.cholesky(K)  # (latent, time, time)


@partial(jit, static_argnames=("kernel", "max_iter"))
def _poisson_laplace(params: PoissonGPFAParams, y, weight, bin_size, kernel: str, max_iter: int = 100, mask=None):
    """:func:`_poisson_laplace_from`, Newton started from zero paths."""
    return _poisson_laplace_from(params, y, weight, bin_size, kernel, max_iter, mask)


def _poisson_laplace_from(params: PoissonGPFAParams, y, weight, bin_size, kernel: str, max_iter: int = 100,
                          mask=None, x0=None, tol: float = _NEWTON_TOL, blocks: bool = False):
    """Newton's method on the whitened paths ``z`` (``x_i = L_i z_i``) of each trial.

    ``f(z) = sum_{t,n} w_n (dt e^{eta} - y eta) + |z|^2 / 2``, ``eta = C x + d``; the Hessian
    ``I + L^T W L`` (``W`` block-diagonal in time) is positive definite, so Newton with
    step halving (:func:`bayesneuro.engine.newton.newton`) converges; ``weight`` (neuron,) in
    {0, 1} drops neurons (co-smoothing). ``mask`` ``(trial, time)``, optional, is 0 on padded
    bins: they carry no observation, so the GP over them integrates out exactly (the paths are
    causal in ``z``: the padded ``z`` stay at their prior mode 0 with unit curvature) and the
    mode, covariance and ``log p(y)`` of the real bins are those of the unpadded trial.

    ``x0`` ``(trial, time, latent)``, optional: latents to start Newton from, whitened by this
    ``L`` (default zero paths; Laplace-EM starts each sweep at the previous sweep's modes: the
    objective is strictly convex, so the mode is the same, in fewer Newton steps; kept as latents,
    not whitened paths, they stay starts near the mode when the timescales change).

    ``tol``: Newton's relative tolerance. ``blocks``: return, in place of the posterior's
    ``cov``, only the blocks Laplace-EM uses, ``(V, P)`` with ``V`` ``(trial, time, latent,
    latent)`` (same bin) and ``P`` ``(trial, latent, time, time)`` (same latent), a third of
    the flops of the whole ``(latent time)^2`` matrix.
    """
    C, d = params.loadings, params.offset
    q = C.shape[1]
    T = y.shape[1]
    L = _poisson_chol(params, T, kernel)
    log_dt = jnp.log(bin_size)
    eye = jnp.eye(q * T, dtype=C.dtype)

    def eta_of(z):  # z (latent, time) -> (time, neuron)
        return jnp.einsum("its,is->ti", L, z) @ C.T + d + log_dt

    def f(z, yr, mr):
        eta = eta_of(z)
        return jnp.sum(mr[:, None] * weight * (jnp.exp(eta) - yr * eta)) + 0.5 * jnp.sum(z**2)

    def grad_hess(z, yr, mr):
        eta = eta_of(z)
        wt = mr[:, None] * weight
        lam = jnp.exp(eta) * wt
        gx = (lam - yr * wt) @ C  # (time, latent)
        g = jnp.einsum("its,ti->is", L, gx) + z
        W = jnp.einsum("ni,tn,nj->tij", C, lam, C)
        H = jnp.einsum("its,tij,jtu->isju", L, W, L).reshape(q * T, q * T) + eye
        return g, H

    def one(yr, mr, x0r):
        z0r = jax.vmap(lambda Li, xi: solve_triangular(Li, xi, lower=True))(L, x0r.T)  # (latent, time)
        res = newton(f, z0r, yr, mr, derivatives=grad_hess, solve=_chol_solve,
                     max_iter=max_iter, tol=tol)
        z, fz = res.x, res.value
        _, H = grad_hess(z, yr, mr)
        Lh = jnp.linalg.cholesky(H)
        G = _cov_factor(Lh, L)  # (latent time, latent, time): cov = G^T G
        if blocks:
            cov = (jnp.einsum("ait,ajt->tij", G, G), jnp.einsum("ait,ais->its", G, G))
        else:
            G = G.reshape(q * T, q * T)
            cov = (G.T @ G).reshape(q, T, q, T)
        const = jnp.sum(mr[:, None] * weight * jax.scipy.special.gammaln(yr + 1.0))
        log_marg = -fz - const - jnp.sum(jnp.log(jnp.diag(Lh)))
        return jnp.einsum("its,is->ti", L, z), cov, log_marg

    mask = jnp.ones(y.shape[:2], y.dtype) if mask is None else mask
    x0 = jnp.zeros((y.shape[0], T, q), C.dtype) if x0 is None else x0
    return PoissonGPFAPosterior(*jax.vmap(one)(y, mask, x0))


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
    p = PoissonGPFAParams(*(np.asarray(x, dtype=np.float64) for x in params))  # checked on the host
    if p.loadings.ndim != 2:
        raise ValueError(f"loadings must be (neuron, latent), got shape {p.loadings.shape}")
    N, q = p.loadings.shape
    for name, x, shape in [("offset", p.offset, (N,)), ("timescales", p.timescales, (q,)), ("eps", p.eps, (q,))]:
        if x.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if not all(np.all(np.isfinite(x)) for x in p):
        raise ValueError("PoissonGPFAParams contain NaN or infinite values")
    if np.any(p.timescales <= 0) or np.any((p.eps <= 0) | (p.eps >= 1)):
        raise ValueError("timescales must be positive and eps in (0, 1)")
    return PoissonGPFAParams(*(to_device(x) for x in p))


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
    >>> from bayesneuro.latent.gpfa_poisson import PoissonGPFAParams, poisson_gpfa_posterior
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


@jit
def _poisson_expected_readout_step(m, V, y, valid, C, d, centre, bin_size):
    """Laplace-EM M-step of each neuron's ``(C_n, d_n)``: expected Poisson log-likelihood.

    Minimises ``sum_valid (dt E[e^{eta}] - y E[eta]) + |C_n|^2 / 2 + (d_n - centre_n)^2 / 8``
    with ``x_t ~ N(m_t, V_t)`` (``m`` ``(bins, latent)``, ``V`` ``(bins, latent, latent)``),
    so ``E[e^{eta}] = exp(C_n m_t + d_n + C_n V_t C_n / 2)``; damped Newton steps (length at
    most 1), all neurons together, until the longest step is below ``1e-10`` (the next would be
    of the order of its square) or 20 steps.
    """
    q = m.shape[1]
    X = jnp.concatenate([m, jnp.ones((m.shape[0], 1), m.dtype)], axis=1)
    prior = jnp.concatenate([jnp.ones(q), jnp.array([0.25])])

    log_dt = jnp.log(bin_size)

    def one(w, yn, c):  # one damped Newton step of one neuron: (new w, step length)
        target = jnp.concatenate([jnp.zeros(q), c[None]])

        def f(w):
            eta = X @ w + log_dt
            quad = 0.5 * jnp.einsum("i,tij,j->t", w[:q], V, w[:q])
            return jnp.sum(valid * (jnp.exp(eta + quad) - yn * eta)) + 0.5 * jnp.sum(prior * (w - target) ** 2)

        def grad_hess(w):
            # closed form, O(bins * latent^2): with e_t = E[exp(eta_t)] and a_t = (m_t + V_t c, 1),
            # grad = sum_t (e_t a_t - y_t X_t) + prior (w - target),
            # hess = sum_t e_t (a_t a_t^T + blockdiag(V_t, 0)) + diag(prior)
            Vc = jnp.einsum("tij,j->ti", V, w[:q])
            e = valid * jnp.exp(X @ w + log_dt + 0.5 * jnp.sum(Vc * w[:q], axis=1))
            a = X.at[:, :q].add(Vc)
            g = a.T @ e - X.T @ (valid * yn) + prior * (w - target)
            H = (a * e[:, None]).T @ a + jnp.diag(prior)
            H = H.at[:q, :q].add(jnp.einsum("t,tij->ij", e, V))
            return g, H

        g, H = grad_hess(w)
        step = -jnp.linalg.solve(H, g)
        step = step / jnp.maximum(1.0, jnp.linalg.norm(step))
        ok = f(w + step) <= f(w)
        return jnp.where(ok, w + step, w + 0.1 * step), jnp.max(jnp.abs(step))

    def body(carry):
        w, i, _ = carry
        w, size = jax.vmap(one, in_axes=(0, 1, 0))(w, y, centre)
        return w, i + 1, jnp.max(size)

    w0 = jnp.concatenate([C, d[:, None]], axis=1)
    w = lax.while_loop(lambda c: (c[1] < 20) & (c[2] > 1e-10), body, (w0, 0, jnp.asarray(jnp.inf, w0.dtype)))[0]
    return w[:, :-1], w[:, -1]


@partial(jit, static_argnums=(2, 3, 4))
def _poisson_sample(key, params, n_trials, n_time, kernel, bin_size):
    L = _poisson_chol(params, n_time, kernel)
    kx, ky = jax.random.split(key)
    q = params.loadings.shape[1]
    x = jnp.einsum("itu,niu->nti", L, jax.random.normal(kx, (n_trials, q, n_time), params.loadings.dtype))
    return x, jax.random.poisson(ky, bin_size * jnp.exp(x @ params.loadings.T + params.offset))


@partial(jit, static_argnames="kernel")
def _poisson_rates_given(params: PoissonGPFAParams, y, bin_size, kernel: str, weight):
    """Rates (spikes/s) of every neuron, ``E[exp(C x + d)]`` under the posterior given the neurons
    with ``weight`` 1."""
    post = _poisson_laplace(params, y, weight, bin_size, kernel)
    V = jnp.einsum("ritjt->rtij", post.cov)
    C = params.loadings
    return jnp.exp(post.mean @ C.T + params.offset + 0.5 * jnp.einsum("ki,rtij,kj->rtk", C, V, C))




def poisson_gpfa_sample(key, params: PoissonGPFAParams, n_trials: int, n_time: int, *, bin_size: float,
                        kernel: str = "se"):
    """Draw latents and counts from Poisson GPFA (``key``: a ``jax.random`` key).

    Returns
    -------
    latents : Array, shape (n_trials, n_time, latent)
    counts : Array, shape (n_trials, n_time, neuron)

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa_poisson import PoissonGPFAParams, poisson_gpfa_sample
    >>> p = PoissonGPFAParams(jnp.ones((3, 1)), jnp.full(3, 2.0), jnp.array([3.0]), jnp.array([1e-3]))
    >>> x, y = poisson_gpfa_sample(jax.random.key(0), p, 4, 10, bin_size=0.05)
    >>> x.shape, y.shape
    ((4, 10, 1), (4, 10, 3))
    """
    params = _check_poisson_params(params)
    if int(n_trials) < 1 or int(n_time) < 1:
        raise ValueError(f"n_trials and n_time must be >= 1, got {n_trials}, {n_time}")
    return _poisson_sample(key, params, int(n_trials), int(n_time), _check_kernel(kernel), float(bin_size))


class _LaplaceEMState(NamedTuple):
    """Laplace-EM state: the parameters and each bucket's Laplace modes of the latents
    ``(trial, time, latent)`` from the last E-step (the next sweep's Newton start)."""

    params: PoissonGPFAParams
    paths: tuple


def _zero_paths(params: PoissonGPFAParams, buckets) -> tuple:
    q = params.loadings.shape[1]
    return tuple(jnp.zeros((bk.y.shape[0], bk.y.shape[1], q), params.loadings.dtype) for bk in buckets)


def _laplace_em_step(state: _LaplaceEMState, buckets: tuple, centre, bin_size, *, kernel: str,
                     learn_timescales: bool):
    """One Laplace-EM sweep on trials in length buckets (:func:`~bayesneuro.latent.gpfa_gaussian._buckets`,
    padded bins masked), its Newton started at the previous sweep's modes: ``(new state, objective at
    state.params)``."""
    params = state.params
    C = params.loadings
    N, q = C.shape
    w = jnp.ones(N, C.dtype)
    masks = [bk.mask[bk.slot] * bk.weight[:, None] for bk in buckets]  # (trial, time) per bucket
    posts = [_poisson_laplace_from(params, bk.y, w, bin_size, kernel, mask=tm, x0=x0, tol=_EM_NEWTON_TOL, blocks=True)
             for bk, tm, x0 in zip(buckets, masks, state.paths)]  # cov: the (same bin, same latent) blocks
    lml = sum(jnp.sum(p.log_marginal * bk.weight) for p, bk in zip(posts, buckets))
    objective = lml - 0.5 * jnp.sum(C**2) - jnp.sum((params.offset - centre) ** 2) / 8.0
    m = jnp.concatenate([p.mean.reshape(-1, q) for p in posts])
    V = jnp.concatenate([p.cov[0].reshape(-1, q, q) for p in posts])
    y = jnp.concatenate([bk.y.reshape(-1, N) for bk in buckets])
    valid = jnp.concatenate([tm.reshape(-1) for tm in masks])
    Cn, dn = _poisson_expected_readout_step(m, V, y, valid, C, params.offset, centre, bin_size)
    new = params._replace(loadings=Cn, offset=dn)
    if learn_timescales:
        # per length slot: sum over its trials of E[x_i x_i^T] on its bins, (latent, slot, time, time)
        P = []
        for p, bk, tm in zip(posts, buckets, masks):
            onehot = (bk.slot[:, None] == jnp.arange(bk.mask.shape[0])) * bk.weight[:, None]
            mm = p.mean * tm[:, :, None]
            Pb = jnp.einsum("ra,rits->iats", onehot, p.cov[1]) + jnp.einsum("ra,rti,rsi->iats", onehot, mm, mm)
            P.append(Pb * bk.mask[None, :, :, None] * bk.mask[None, :, None, :])
        new = new._replace(timescales=_timescale_newton(params.timescales, params.eps, tuple(P),
                                                        tuple(bk.count for bk in buckets),
                                                        tuple(bk.mask for bk in buckets), kernel))
    return _LaplaceEMState(new, tuple(p.mean for p in posts)), objective


def poisson_gpfa_em_step(params: PoissonGPFAParams, counts, *, bin_size: float, kernel: str = "se",
                         offset_prior_mean=None, learn_timescales: bool = True):
    """One Laplace-EM sweep; returns the new parameters and the objective of the *old* ones.

    Parameters
    ----------
    params : PoissonGPFAParams
    counts : list of array_like (time, neuron), or array_like (trial, time, neuron)
        Trials of any lengths (equal lengths are conditioned together).
    bin_size : float
        Seconds per bin.
    kernel : {"se", "matern32", "matern52"}
    offset_prior_mean : array_like, shape (neuron,), optional
        Centre of the normal prior (sd 2) of the offsets, log spikes/s; default: each neuron's
        log mean rate.
    learn_timescales : bool
        Update the timescales (else keep them).

    Returns
    -------
    params : PoissonGPFAParams
    objective : float
        Laplace log marginal likelihood plus log priors of the read-outs, at the old parameters.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa_poisson import PoissonGPFAParams, poisson_gpfa_sample, poisson_gpfa_em_step
    >>> p = PoissonGPFAParams(jnp.array([[0.5], [-0.3], [0.4]]), jnp.log(jnp.full(3, 20.0)), jnp.array([3.0]),
    ...                       jnp.array([1e-3]))
    >>> _, y = poisson_gpfa_sample(jax.random.key(0), p, 5, 15, bin_size=0.05)
    >>> p1, f0 = poisson_gpfa_em_step(p, y, bin_size=0.05)
    >>> p2, f1 = poisson_gpfa_em_step(p1, y, bin_size=0.05)
    >>> f1 >= f0
    True
    """
    params = _check_poisson_params(params)
    groups, _ = _group(counts, params.loadings.shape[0])
    centre = _centre(groups, offset_prior_mean, float(bin_size))
    step = _em_step_program(_check_kernel(kernel), bool(learn_timescales))
    buckets = _buckets(groups, params.loadings.shape[1])
    new, obj = step(_LaplaceEMState(params, _zero_paths(params, buckets)), buckets, centre,
                    jnp.asarray(float(bin_size), centre.dtype))
    return new.params, float(obj)


def _centre(groups, offset_prior_mean, bin_size: float):
    if offset_prior_mean is not None:
        return jnp.asarray(np.asarray(offset_prior_mean, np.float64))
    y = np.concatenate([np.asarray(g).reshape(-1, g.shape[-1]) for g in groups])
    return jnp.asarray(np.log(y.mean(axis=0) / bin_size))


def fit_poisson_gpfa_em(params: PoissonGPFAParams, counts, *, bin_size: float, kernel: str = "se",
                        offset_prior_mean=None, learn_timescales: bool = True, max_iter: int = 100,
                        tol: float | None = 1e-6, squarem: bool = True, progress: bool | None = None,
                        warn: bool = True) -> PoissonGPFAEMResult:
    """Fit Poisson GPFA by Laplace-EM from ``params`` (see the module docstring).

    Parameters
    ----------
    params : PoissonGPFAParams
        Starting point (the estimator starts from the Gaussian GPFA of the square-root counts).
    counts : list of array_like (time, neuron), or array_like (trial, time, neuron)
        Trials of any lengths.
    bin_size : float
        Seconds per bin.
    kernel : {"se", "matern32", "matern52"}
    offset_prior_mean : array_like, shape (neuron,), optional
        Centre of the offsets' prior, log spikes/s; default each neuron's log mean rate.
    learn_timescales : bool
        Update the timescales in the M-step.
    max_iter : int
        Maximum number of sweeps.
    tol : float or None
        Stop once one sweep changes the objective by at most ``tol * max(1, |objective|)``
        (the rule of :func:`bayesneuro.engine.em.run_em`, which runs the loop); None runs
        ``max_iter`` sweeps.
    squarem : bool
        Accelerate the sweeps with SQUAREM (:mod:`bayesneuro.engine.em`; extrapolated timescales
        are clipped to ``[1e-2, 1e5]`` bins). The Laplace E-step is approximate, so the objective
        is not a bound that EM climbs to a maximum: along plain sweeps it rises, peaks and then
        falls slowly towards the sweeps' fixed point, and the ``tol`` rule stops near the peak.
        SQUAREM gets there in fewer sweeps: 37 instead of 82 on 30 trials x 30 neurons x 50 bins
        x 3 latents (``bench/latent_gpfa.py``), its objective 2e-3 nats (4e-8 relative) below
        plain sweeps' and its timescales within 0.2% of theirs. ``False``: plain sweeps.
    progress : bool, optional
        tqdm bar; default :func:`bayesneuro.infer.fit.progress_default`.
    warn : bool
        Warn (:class:`~bayesneuro.diagnostics.ConvergenceWarning`) at ``max_iter`` without
        convergence or when the objective decreases (possible: the E-step is approximate).

    Returns
    -------
    PoissonGPFAEMResult

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.gpfa_poisson import PoissonGPFAParams, poisson_gpfa_sample, fit_poisson_gpfa_em
    >>> p = PoissonGPFAParams(jnp.array([[0.5], [-0.3], [0.4]]), jnp.log(jnp.full(3, 20.0)), jnp.array([3.0]),
    ...                       jnp.array([1e-3]))
    >>> _, y = poisson_gpfa_sample(jax.random.key(0), p, 5, 15, bin_size=0.05)
    >>> fit = fit_poisson_gpfa_em(p, y, bin_size=0.05, max_iter=5, progress=False)
    >>> fit.n_iter <= 5, bool(fit.objective[-1] >= fit.objective[0])
    (True, True)
    """
    from ..engine.em import run_em

    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not isinstance(squarem, (bool, np.bool_)):
        raise ValueError(f"squarem must be True or False, got {squarem!r}")
    params = _check_poisson_params(params)
    groups, index = _group(counts, params.loadings.shape[0])
    centre = _centre(groups, offset_prior_mean, float(bin_size))
    step = _em_step_program(_check_kernel(kernel), bool(learn_timescales))
    buckets = _buckets(groups, params.loadings.shape[1])
    state, trace = run_em(step, _LaplaceEMState(params, _zero_paths(params, buckets)), buckets, centre,
                          jnp.asarray(float(bin_size), centre.dtype),
                          max_iter=int(max_iter), tol=tol, squarem=bool(squarem),
                          project=_project_timescales if squarem else None, progress=progress,
                          desc="Poisson GPFA Laplace-EM" + (" (SQUAREM)" if squarem else ""),
                          warn=warn, decrease_tol=1e-4)  # the Laplace E-step is approximate: small dips happen
    modes = [None] * sum(len(i) for i in index)
    for (_, members), x in zip(_bucket_layout(groups, params.loadings.shape[1]), state.paths):
        x, k = np.asarray(x), 0
        for a in members:  # a bucket's groups, one after another (as _buckets lays them out)
            for trial in index[a]:
                modes[trial] = x[k, : groups[a].shape[1]]
                k += 1
    return PoissonGPFAEMResult(state.params, trace.objective, int(trace.n_iter), bool(trace.converged), modes)


def _project_timescales(state: _LaplaceEMState) -> _LaplaceEMState:
    """A SQUAREM jump back to positive timescales (the bounds of Gaussian GPFA's M-step, in bins)."""
    lo, hi = (float(np.exp(b)) for b in _LOG_TAU_BOUNDS)
    return state._replace(params=state.params._replace(timescales=jnp.clip(state.params.timescales, lo, hi)))


@cache
def _em_step_program(kernel: str, learn_timescales: bool):
    """The jitted Laplace-EM sweep for one setting (fits share the compiled programs)."""
    return jit(partial(_laplace_em_step, kernel=kernel, learn_timescales=learn_timescales))
