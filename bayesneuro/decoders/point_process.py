r"""Point-process adaptive filter decoding (Eden, Frank, Barbieri, Solo & Brown 2004).

Each neuron :math:`n` fires as a Poisson process whose log rate (in Hz) is linear in features of
the state :math:`s` (the decoded variable, dimension :math:`d`):

.. math::

    \log \lambda_n(s) = \beta_{n0} + \ell_n^\top s + s^\top M_n s,

with :math:`M_n = 0` for ``tuning="linear"`` (e.g. velocity tuning) and a symmetric
:math:`M_n` for ``tuning="quadratic"`` (a Gaussian place or tuning field when :math:`M_n` is
negative definite). The tuning is fitted per neuron by Poisson regression of the counts on
:math:`[1, s, s_i s_j]` with a :math:`\mathcal{N}(0, \sigma^2)` prior on every coefficient
(``prior_scale`` :math:`\sigma`) of the regression on the standardised target
:math:`u = (s - \bar s) / \mathrm{sd}(s)` (so the prior is unit-free): the MAP, by the damped
Newton method of :func:`bayesneuro.engine.newton.newton` vmapped over neurons. The
state follows the least-squares AR(1) model of :func:`~bayesneuro.decoders.kalman.fit_linear_dynamics`,
:math:`s_t = A s_{t-1} + b + w_t`, :math:`w_t \sim \mathcal{N}(0, W)`, fitted within trials.

Decoding is the Gaussian approximation of Eden et al. (2004): with counts :math:`n_{nt}` in bins of
width :math:`\Delta`,

.. math::

    m_{t|t-1} &= A m_{t-1|t-1} + b, \qquad P_{t|t-1} = A P_{t-1|t-1} A^\top + W, \\
    P_{t|t}^{-1} &= P_{t|t-1}^{-1} + \Bigl[\sum_n g_n g_n^\top \lambda_n \Delta
        - (n_{nt} - \lambda_n\Delta)\, \nabla^2 \log\lambda_n\Bigr]_+, \\
    m_{t|t} &= m_{t|t-1} + P_{t|t} \sum_n g_n (n_{nt} - \lambda_n \Delta),

with :math:`g_n = \nabla \log \lambda_n` and every term evaluated at :math:`m_{t|t-1}` (closed
form). :math:`[\cdot]_+` is the one safeguard against a non-positive-definite update: the summed
likelihood information is symmetrised and its *negative eigenvalues are set to zero*, so an
update never makes the state less certain than the prediction. When no eigenvalue is negative
(the common case, and always for ``tuning="linear"``) the update is exactly Eden et al.'s. Every
trial or block (``segment_ids``) starts afresh from the mean and covariance of the training
target; an optional RTS smoother runs backward over the filtered Gaussian moments.

References
----------
Eden, U. T., Frank, L. M., Barbieri, R., Solo, V. & Brown, E. N. (2004). Dynamic analysis of
neural encoding by point process adaptive filtering. *Neural Computation* 16, 971-998.
"""

from __future__ import annotations

import numbers
import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy import special

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from ..engine.newton import cholesky_solve, newton
from ..estimator import resolve_key
from ._base import Decoder, attach_index
from ._inputs import as_spike_data, check_neurons, check_spiking, target_array
from .kalman import (
    _float_dtype,
    _jitter,
    _padded_length,
    _segments,
    calibrate_temperature,
    check_finite_posterior,
    check_temperature,
    check_tempering,
    fit_linear_dynamics,
)
from .posterior import GaussianPosterior
from .tuning import newton_tol

__all__ = ["PointProcessDecoder", "PoissonTuning", "point_process_update", "tuning_features"]

_MAX_LOG_RATE_DT = 50.0  # cap on log(λΔ) inside the filter, so a far-off prediction cannot overflow
_N_NEWTON = 8  # Newton iterations of the posterior-mode update
_STEP_LENGTHS = 0.5 ** np.arange(10)  # step lengths the update's line search tries (all at once)
_ARMIJO = 1e-4  # fraction of the predicted decrease a step must achieve
_CURVATURE_FLOOR = 1e-3  # quadratic fields: -2 M >= this (on the standardised target)
_ND_TOL = 1e-10  # Newton tolerance of the constrained refit (optima on the floor converge linearly)


class PoissonTuning(NamedTuple):
    """Log-linear tuning of every neuron: ``log λ_n(s) = intercept_n + linear_n·s + s' quadratic_n s``.

    Attributes
    ----------
    intercept : Array, shape (neuron,)
        Log rate in Hz at ``s = 0``.
    linear : Array, shape (neuron, dim)
    quadratic : Array, shape (neuron, dim, dim)
        Symmetric; zeros for linear tuning.
    """

    intercept: jax.Array
    linear: jax.Array
    quadratic: jax.Array


def _quad_pairs(d: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(d) for j in range(i, d)]


def tuning_features(values: Any, tuning: str = "quadratic") -> np.ndarray:
    """Regressors ``f(s)`` of the log rate: ``s`` and, for quadratic tuning, ``s_i s_j`` (i <= j).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.point_process import tuning_features
    >>> tuning_features(np.array([[1.0, 2.0]])).tolist()
    [[1.0, 2.0, 1.0, 2.0, 4.0]]
    >>> tuning_features(np.array([[1.0, 2.0]]), "linear").tolist()
    [[1.0, 2.0]]
    """
    s = np.asarray(values, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if tuning == "linear":
        return s
    return np.concatenate([s] + [s[:, i : i + 1] * s[:, j : j + 1] for i, j in _quad_pairs(s.shape[1])], axis=1)


def _coef_to_tuning(coef: np.ndarray, d: int, tuning: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = coef.shape[0]
    b0, lin = coef[:, 0], coef[:, 1 : 1 + d]
    M = np.zeros((n, d, d))
    if tuning == "quadratic":
        for k, (i, j) in enumerate(_quad_pairs(d)):
            w = coef[:, 1 + d + k]
            if i == j:
                M[:, i, i] = w
            else:
                M[:, i, j] = M[:, j, i] = w / 2
    return b0, lin, M


def _tuning_to_coef(b0, lin, M, tuning: str) -> np.ndarray:
    cols = [b0[:, None], lin]
    if tuning == "quadratic":
        cols += [(M[:, i, i] if i == j else 2 * M[:, i, j])[:, None] for i, j in _quad_pairs(lin.shape[1])]
    return np.concatenate(cols, axis=1)


def _unstandardise(b0, lin, M, mean, sd):
    """Tuning in ``u = (s - mean) / sd`` rewritten in ``s``."""
    Di = 1.0 / sd
    Ms = M * Di[None, :, None] * Di[None, None, :]
    lin_s = lin * Di - 2 * Ms @ mean
    b0_s = b0 - (lin * Di) @ mean + np.einsum("nij,i,j->n", Ms, mean, mean)
    return b0_s, lin_s, Ms


# ----------------------------------------------------------------------------- tuning fit


def _neg_log_posterior(v, X, y, wt, log_dt, prec):
    """Negative Poisson log-likelihood of the rows of weight 1 plus the Normal prior's penalty (up to constants)."""
    eta = X @ v + log_dt
    return -(jnp.sum(wt * (y * eta - jnp.exp(eta))) - 0.5 * v @ prec @ v)


def _neg_log_posterior_derivatives(v, X, y, wt, log_dt, prec):
    mu = wt * jnp.exp(X @ v + log_dt)
    return -(X.T @ (wt * y - mu) - prec @ v), (X * mu[:, None]).T @ X + prec


@partial(jit, static_argnames=("max_iter",))
def _newton_map(X, Y, wt, log_dt, prec, v0, max_iter: int, tol):
    """MAP of independent Poisson regressions (one per column of Y), damped Newton, vmapped.

    Rows of weight 0 are padding (the row count is rounded up to a power of two so that fits of
    similar size share compiled code). Returns the coefficients, the largest absolute gradient
    of each log posterior and whether each fit converged.
    """

    def one(y, v):
        res = newton(_neg_log_posterior, v, X, y, wt, log_dt, prec, derivatives=_neg_log_posterior_derivatives,
                     max_iter=max_iter, tol=tol, solve=cholesky_solve)
        return res.x, jnp.max(jnp.abs(res.grad)), res.converged

    return jax.vmap(one, in_axes=(1, 0))(Y, v0)


def _nd_unpack(p, d: int):
    """``(b0, lin, M)`` with ``M = -(L L' + floor I) / 2`` from the packed ``[b0, lin, L (lower)]``."""
    rows, cols = np.tril_indices(d)
    L = jnp.zeros((d, d), p.dtype).at[rows, cols].set(p[1 + d:])
    M = -0.5 * (L @ L.T + _CURVATURE_FLOOR * jnp.eye(d, dtype=p.dtype))
    return p[0], p[1:1 + d], M


def _nd_coef(p, d: int):
    """Coefficients on ``[1, u, u_i u_j (i <= j)]`` of the packed negative-definite tuning."""
    b0, lin, M = _nd_unpack(p, d)
    return jnp.concatenate([b0[None], lin] + [(M[i, i] if i == j else 2 * M[i, j])[None] for i, j in _quad_pairs(d)])


def _nd_objective(p, F, y, wt, log_dt, inv_var, d: int):
    """Negative log posterior of one neuron's negative-definite quadratic tuning on the standardised target
    (``F = [1, tuning_features(u)]``), with the fit's Normal prior on the coefficients."""
    w = _nd_coef(p, d)
    eta = F @ w + log_dt
    return -jnp.sum(wt * (y * eta - jnp.exp(eta))) + 0.5 * inv_var * w @ w


def _nd_derivatives(p, F, y, wt, log_dt, inv_var, d: int):
    """Gradient and Hessian by the chain rule through ``w(p)``: only the small map is differentiated twice."""
    w = _nd_coef(p, d)
    J = jax.jacfwd(_nd_coef)(p, d)
    mu = wt * jnp.exp(F @ w + log_dt)
    g_w = -(F.T @ (wt * y - mu)) + inv_var * w
    H_w = (F * mu[:, None]).T @ F + inv_var * jnp.eye(w.size, dtype=w.dtype)
    # exact Hessian: the Gauss-Newton part plus the curvature of the (small) map p -> w
    return J.T @ g_w, J.T @ H_w @ J + jnp.einsum("k,kij->ij", g_w, jax.hessian(_nd_coef)(p, d))


@partial(jit, static_argnames=("d", "max_iter"))
def _newton_nd(F, Y, wt, log_dt, inv_var, p0, d: int, max_iter: int, tol):
    """Rows with weight 0 are padding (the row count is rounded up so fits of similar size share code)."""
    def one(y, p):
        res = newton(_nd_objective, p, F, y, wt, log_dt, inv_var, d, derivatives=_nd_derivatives,
                     max_iter=max_iter, tol=tol)
        return res.x, jnp.max(jnp.abs(res.grad)), res.converged

    return jax.vmap(one, in_axes=(1, 0))(Y, p0)


def _nd_start(b0, lin, M) -> np.ndarray:
    """Packed start of the constrained fit: the free fit with ``-2M`` projected onto ``>= floor + 0.01``."""
    n, d = lin.shape
    rows, cols = np.tril_indices(d)
    out = np.empty((n, 1 + d + rows.size))
    for k in range(n):
        ev, V = np.linalg.eigh(-2 * M[k])
        S = (V * (np.maximum(ev, _CURVATURE_FLOOR + 0.01) - _CURVATURE_FLOOR)) @ V.T
        out[k] = np.r_[b0[k], lin[k], np.linalg.cholesky(0.5 * (S + S.T))[rows, cols]]
    return out


# ----------------------------------------------------------------------------- filter


def _log_rate_terms(tun: PoissonTuning, m):
    """``log λ_n(m)``, gradients ``(neuron, dim)`` and Hessians ``(neuron, dim, dim)``."""
    Mm = jnp.einsum("nij,j->ni", tun.quadratic, m)
    eta = tun.intercept + tun.linear @ m + Mm @ m
    g = tun.linear + 2.0 * Mm
    return eta, g, 2.0 * tun.quadratic


def _log_lik(tun: PoissonTuning, s, counts, log_dt):
    """Poisson log likelihood of one bin's counts at state ``s`` (up to constants)."""
    eta, _, _ = _log_rate_terms(tun, s)
    eta = jnp.minimum(eta + log_dt, _MAX_LOG_RATE_DT)
    return jnp.sum(counts * eta - jnp.exp(eta))


def _lik_terms(tun: PoissonTuning, s, counts, dt):
    """Gradient of the log likelihood at ``s`` and its information with negative curvature dropped."""
    eta, g, Hs = _log_rate_terms(tun, s)
    lam_dt = jnp.exp(jnp.minimum(eta + jnp.log(dt), _MAX_LOG_RATE_DT))
    r = counts - lam_dt
    info = jnp.einsum("n,ni,nj->ij", lam_dt, g, g) - jnp.einsum("n,nij->ij", r, Hs)
    info = 0.5 * (info + info.T)
    evals, evecs = jnp.linalg.eigh(info)
    info = (evecs * jnp.maximum(evals, 0.0)) @ evecs.T  # drop negative curvature (see module doc)
    return g.T @ r, info


def _update(tun: PoissonTuning, m_p, P_p, counts, dt, inv_temp, laplace: bool, n_newton: int = _N_NEWTON):
    d = m_p.shape[0]
    eye = jnp.eye(d, dtype=m_p.dtype)
    if not laplace:  # Eden et al.: one full step from the prediction
        grad, info = _lik_terms(tun, m_p, counts, dt)
        # P_f = (P_p^{-1} + J)^{-1} = (I + P_p J)^{-1} P_p, without inverting P_p
        P_f = jnp.linalg.solve(eye + P_p @ (inv_temp * info), P_p)
        P_f = 0.5 * (P_f + P_f.T)
        return m_p + P_f @ (inv_temp * grad), P_f
    log_dt = jnp.log(dt)
    chol = jnp.linalg.cholesky(P_p)

    def objective(s):  # negative log posterior of the bin, tempered likelihood
        z = jax.scipy.linalg.solve_triangular(chol, s - m_p, lower=True)
        return 0.5 * z @ z - inv_temp * _log_lik(tun, s, counts, log_dt)

    steps = jnp.asarray(_STEP_LENGTHS, m_p.dtype)

    def newton_step(_, s):
        grad, info = _lik_terms(tun, s, counts, dt)
        g = jax.scipy.linalg.cho_solve((chol, True), s - m_p) - inv_temp * grad  # gradient of the objective
        # direction (P_p^{-1} + J)^{-1} g = (I + P_p J)^{-1} P_p g: positive definite curvature, a descent
        step = jnp.linalg.solve(eye + P_p @ (inv_temp * info), P_p @ g)
        f0 = objective(s)
        fa = jax.vmap(lambda a: objective(s - a * step))(steps)
        ok = jnp.isfinite(fa) & (fa <= f0 - _ARMIJO * steps * (g @ step))
        a = jnp.where(ok.any(), steps[jnp.argmax(ok)], 0.0)  # the longest step that decreases enough
        return s - a * step

    m_f = lax.fori_loop(0, n_newton, newton_step, m_p)
    _, info = _lik_terms(tun, m_f, counts, dt)
    P_f = jnp.linalg.solve(eye + P_p @ (inv_temp * info), P_p)
    return m_f, 0.5 * (P_f + P_f.T)


def point_process_update(tuning: PoissonTuning, pred_mean, pred_cov, counts, bin_size: float, *,
                         method: str = "laplace", temperature: float = 1.0):
    """One measurement update of the point-process filter (see the module docstring).

    Parameters
    ----------
    tuning : PoissonTuning
    pred_mean : array_like, shape (dim,)
        :math:`m_{t|t-1}`.
    pred_cov : array_like, shape (dim, dim)
        :math:`P_{t|t-1}`.
    counts : array_like, shape (neuron,)
        Counts of the bin.
    bin_size : float
    method : {"laplace", "eden"}, default "laplace"
        ``"laplace"``: the mode of prior times likelihood by damped Newton steps with a line
        search and the curvature there; ``"eden"``: Eden et al.'s single step at the prediction.
    temperature : float >= 1, default 1.0
        The likelihood enters to the power ``1 / temperature``.

    Returns
    -------
    mean, cov : Array
        :math:`m_{t|t}` and :math:`P_{t|t}`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.decoders.point_process import PoissonTuning, point_process_update
    >>> tun = PoissonTuning(jnp.log(jnp.array([10.0])), jnp.array([[1.0]]), jnp.zeros((1, 1, 1)))
    >>> m, P = point_process_update(tun, jnp.zeros(1), jnp.eye(1), jnp.array([3.0]), 0.1, method="eden")
    >>> round(float(m[0]), 4), round(float(P[0, 0]), 4)
    (1.0, 0.5)
    """
    if method not in ("laplace", "eden"):
        raise ValueError(f"method must be 'laplace' or 'eden', got {method!r}")
    dtype = _float_dtype()
    tun = PoissonTuning(*(jnp.asarray(a, dtype) for a in tuning))
    t = check_temperature(temperature)
    return _update(tun, jnp.asarray(pred_mean, dtype), jnp.asarray(pred_cov, dtype),
                   jnp.asarray(counts, dtype), jnp.asarray(bin_size, dtype), jnp.asarray(1.0 / t, dtype),
                   laplace=method == "laplace")


def _filter_segment(tun, A, b, W, m0, P0, counts, mask, dt, inv_temp, laplace):
    def step(carry, xs):
        m_p, P_p = carry
        n, seen = xs
        m_f, P_f = _update(tun, m_p, P_p, n, dt, inv_temp, laplace)
        m_f = jnp.where(seen, m_f, m_p)
        P_f = jnp.where(seen, P_f, P_p)
        m_next = A @ m_f + b
        P_next = A @ P_f @ A.T + W
        return (m_next, 0.5 * (P_next + P_next.T)), (m_f, P_f, m_p, P_p)

    _, out = lax.scan(step, (m0, P0), (counts, mask))
    return out


def _rts_segment(A, mf, Pf, mp, Pp):
    def step(carry, xs):
        m_next, P_next = carry
        m_f, P_f, m_pn, P_pn = xs
        Jt = jnp.linalg.solve(P_pn, A @ P_f)  # J' = P_{t+1|t}^{-1} A P_{t|t}
        m_s = m_f + Jt.T @ (m_next - m_pn)
        P_s = P_f + Jt.T @ (P_next - P_pn) @ Jt
        return (m_s, 0.5 * (P_s + P_s.T)), (m_s, 0.5 * (P_s + P_s.T))

    last = (mf[-1], Pf[-1])
    _, (ms, Ps) = lax.scan(step, last, (mf[:-1], Pf[:-1], mp[1:], Pp[1:]), reverse=True)
    return jnp.concatenate([ms, last[0][None]]), jnp.concatenate([Ps, last[1][None]])


@partial(jit, static_argnames=("smooth", "laplace"))
def _decode_segments(tun, A, b, W, m0, P0, counts, mask, dt, inv_temps, smooth: bool, laplace: bool):
    """Filter (and smooth) stacked segments ``(segment, time, neuron)`` at each inverse temperature;
    padding at the end. Returns ``(temperature, segment, time, ...)``."""

    def one(c, msk, it):
        mf, Pf, mp, Pp = _filter_segment(tun, A, b, W, m0, P0, c, msk, dt, it, laplace)
        if smooth:
            return _rts_segment(A, mf, Pf, mp, Pp)
        return mf, Pf

    per_temp = lambda it: jax.vmap(lambda c, msk: one(c, msk, it))(counts, mask)
    return jax.vmap(per_temp)(inv_temps)


# ----------------------------------------------------------------------------- decoder


class PointProcessDecoder(Decoder):
    """Point-process adaptive filter (Eden et al. 2004) with Poisson log-linear tuning.

    Parameters
    ----------
    tuning : {"quadratic", "linear"}, default "quadratic"
        Log rate quadratic in the state (Gaussian place / tuning fields) or linear (e.g.
        velocity tuning).
    smooth : bool, default True
        RTS-smooth the filtered Gaussian moments; False: the causal filter.
    prior_scale : float, default 10.0
        Standard deviation of the Normal prior on every tuning coefficient (including the
        intercept) on the standardised target ``(s - mean) / sd``, so the prior does not depend
        on the target's units; the fit is the MAP.
    constrain : bool, default True
        ``tuning="quadratic"``: every field is a bump, ``M = -(L L' + 10^-3 I) / 2`` on the
        standardised target (negative definite by construction), the MAP over ``L`` by damped
        Newton (:func:`bayesneuro.engine.newton.newton`) started from the free fit projected onto
        that set. A neuron whose free fit is already such a bump keeps it exactly. False: the free
        quadratic fit, which on real cells is often a saddle or a bowl (a rate that grows without
        bound away from the data), which breaks the filter.
    update : {"laplace", "eden"}, default "laplace"
        ``"laplace"``: each bin's posterior is the Gaussian at the mode of prediction times
        (tempered) likelihood, found by 8 Newton steps from the prediction with a line search
        (each step's curvature positive definite), with the covariance from the curvature at the
        mode; it cannot diverge (every accepted step raises the posterior density) and its
        covariance is positive definite and never above the prediction's. ``"eden"``: Eden et
        al.'s single step at the prediction (the first of those Newton steps, always taken in
        full), which overshoots when the prediction is far from the spikes' evidence.
    temperature : "auto" or float >= 1, default "auto"
        The likelihood enters the update to the power ``1/T``. ``"auto"`` chooses ``T`` among
        :data:`~bayesneuro.decoders.kalman.TEMPERATURES` by nested, leak-free calibration inside
        the training data (:func:`~bayesneuro.decoders.kalman.calibrate_temperature`: 3
        contiguous inner folds with a 2-bin gap; the ``T`` whose inner held-out 90% regions
        cover 0.9, the least such). It is the default because real counts are over-dispersed and
        correlated, which independent Poisson neurons ignore: untempered, the 90% regions cover
        0.2-0.35 of held-out bins on the shared 2-D place cells. ``1.0``: the untempered
        filter.

    Notes
    -----
    ``fit(data, target, *, method="map", key=None, progress=None, max_iter=50, tol=None)``:
    the tuning is the MAP by Newton's method (at most ``max_iter`` iterations per neuron,
    relative tolerance ``tol``), the dynamics closed-form least squares; no random numbers.

    Attributes
    ----------
    tuning_ : PoissonTuning
        Fitted log-rate coefficients (rates in Hz).
    coef_ : ndarray, shape (neuron, 1 + n_feature)
        The same as regression coefficients on ``[1, tuning_features(s)]``.
    grad_norm_ : ndarray, shape (neuron,)
        Largest absolute gradient of each neuron's log posterior at the end of the fit
        (near 0 when converged).
    converged_ : ndarray of bool, shape (neuron,)
        Whether each neuron's Newton fit met the stopping rule.
    temperature_ : float
        The temperature decoding uses (the number given, or the one ``"auto"`` chose).
    calibration_ : dict or None
        The inner-fold record of ``"auto"`` (candidates, inner 90% coverage and log score per
        fold and candidate, the criterion); None for a fixed temperature.
    dynamics_, dynamics_bias_, dynamics_cov_ : ndarray
        The state model A, b, W.
    initial_mean_, initial_cov_ : ndarray
        Mean and covariance of the training target: the start of every segment.
    names_ : tuple of str
    neuron_ids_ : ndarray
    bin_size_ : float

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders.point_process import PointProcessDecoder
    >>> rng = np.random.default_rng(0)
    >>> x = np.sin(np.cumsum(rng.normal(0, 0.05, 3000)))
    >>> centres = np.linspace(-1, 1, 15)
    >>> counts = rng.poisson(0.02 * 50 * np.exp(-((x[:, None] - centres) ** 2) / (2 * 0.2**2)))
    >>> data = SpikeData.from_counts(counts, bin_size=0.02, covariates=x, feature_names=["x"])
    >>> dec = PointProcessDecoder(temperature=1.0).fit(data, "x")
    >>> post = dec.decode(data)
    >>> post.mean.shape
    (3000, 1)
    >>> bool(dec.evaluate(data, "x")["median_error"] < 0.1)
    True
    """

    METHODS = ("map",)
    _FIT_OPTIONS = {"map": {"max_iter": 50, "tol": None}}

    def __init__(self, tuning: str = "quadratic", smooth: bool = True, prior_scale: float = 10.0,
                 constrain: bool = True, update: str = "laplace", temperature: Any = "auto",
                 tempering: str = "covariance"):
        if tuning not in ("quadratic", "linear"):
            raise ValueError(f"tuning must be 'quadratic' or 'linear', got {tuning!r}")
        if update not in ("laplace", "eden"):
            raise ValueError(f"update must be 'laplace' or 'eden', got {update!r}")
        check_temperature(temperature)
        check_tempering(tempering)
        if isinstance(prior_scale, bool) or not (isinstance(prior_scale, numbers.Real) and np.isfinite(prior_scale) and prior_scale > 0):
            raise ValueError(f"prior_scale must be a positive number, got {prior_scale!r}")
        self.tuning = tuning
        self.smooth = smooth
        self.prior_scale = prior_scale
        self.constrain = constrain
        self.update = update
        self.temperature = temperature
        self.tempering = tempering

    # ------------------------------------------------------------------ fitting
    @pynapple_io(target=True)
    def fit(
        self,
        data: Any,
        target: Any,
        *,
        method: str = "map",
        key: Any = None,
        progress: bool | None = None,
        **options: Any,
    ) -> PointProcessDecoder:
        """Fit each neuron's tuning (Poisson MAP) and the state's AR(1) dynamics.

        Parameters
        ----------
        data : SpikeData
            Training counts.
        target : str, sequence of str, or array_like
            Covariate name(s) of `data`, or an array ``(time,)`` / ``(time, dim)``.
        method : {"map"}, default "map"
            The tuning's MAP by Newton's method (the only method).
        key : jax.random key or int, optional
            Not needed: the fit draws no random numbers.
        progress : bool, optional
            Accepted for a uniform interface; the fit shows no progress bar.
        **options
            ``max_iter`` (default 50): Newton iterations per neuron; ``tol`` (default 1e-14 in
            float64, see :func:`~bayesneuro.decoders.tuning.newton_tol`): relative tolerance of the
            Newton stopping rule (:func:`bayesneuro.engine.newton.newton`).

        Returns
        -------
        PointProcessDecoder
            Itself, fitted.

        Raises
        ------
        ValueError
            NaN or inf in the target, a constant target dimension, a neuron that never spikes,
            or too few bins.
        """
        opts = self._check_fit_args(method, options)
        if isinstance(opts["max_iter"], bool) or not isinstance(opts["max_iter"], (int, np.integer)) or opts["max_iter"] < 1:
            raise ValueError(f"max_iter must be a positive integer, got {opts['max_iter']!r}")
        resolve_key(key, needed=False)
        data = as_spike_data(data, name="training data")
        values, names = target_array(data, target)
        sd = values.std(axis=0)
        const = [names[k] for k in np.flatnonzero(sd <= 1e-12 * np.maximum(np.abs(values).max(axis=0), 1.0))]
        if const:
            raise ValueError(f"target dimension(s) {const} are constant in the training data; nothing to decode")
        d = values.shape[1]
        dtype = _float_dtype()
        A, b, W, _ = fit_linear_dynamics(values, data.segment_ids)
        check_spiking(data)
        # the prior acts on the coefficients of the *standardised* target u = (s - mean) / sd,
        # so it does not depend on the target's units; the result is mapped back to s below
        s_mean, s_sd = values.mean(axis=0), values.std(axis=0)
        F = tuning_features((values - s_mean) / s_sd, self.tuning)
        if data.n_time < F.shape[1] + 2:
            raise ValueError(
                f"too few bins ({data.n_time}) to fit {self.tuning} tuning with {F.shape[1] + 1} coefficients per neuron"
            )
        # Newton on column-standardised regressors (same model, better conditioned); prior mapped exactly
        mu, sig = F.mean(axis=0), F.std(axis=0)
        sig = np.where(sig > 0, sig, 1.0)
        Z = np.concatenate([np.ones((F.shape[0], 1)), (F - mu) / sig], axis=1)
        Tinv = np.eye(Z.shape[1])  # w = Tinv v (coefficients on [1, F] from those on Z)
        Tinv[0, 1:] = -mu / sig
        Tinv[1:, 1:] = np.diag(1 / sig)
        prec = Tinv.T @ Tinv / float(self.prior_scale) ** 2
        Y = np.asarray(data.counts, dtype=np.float64)
        v0 = np.zeros((Y.shape[1], Z.shape[1]))
        v0[:, 0] = np.log(Y.mean(axis=0) / data.bin_size)
        n_pad = _padded_length(Z.shape[0])
        wt = (np.arange(n_pad) < Z.shape[0]).astype(np.float64)
        Zp, Yp = np.zeros((n_pad, Z.shape[1])), np.zeros((n_pad, Y.shape[1]))
        Zp[: Z.shape[0]], Yp[: Z.shape[0]] = Z, Y
        v, gn, conv = _newton_map(
            jnp.asarray(Zp, dtype), jnp.asarray(Yp, dtype), jnp.asarray(wt, dtype),
            jnp.asarray(np.log(data.bin_size), dtype),
            jnp.asarray(prec, dtype), jnp.asarray(v0, dtype), max_iter=int(opts["max_iter"]),
            tol=jnp.asarray(newton_tol(dtype) if opts["tol"] is None else opts["tol"], dtype),
        )
        self.grad_norm_ = np.array(gn, dtype=np.float64)
        self.converged_ = np.array(conv, dtype=bool)
        b0, lin, M = _coef_to_tuning(np.asarray(v, dtype=np.float64) @ Tinv.T, d, self.tuning)
        if self.tuning == "quadratic" and self.constrain:
            # fields that are not bumps (max eigenvalue of -2M below the floor) are refitted on the
            # negative-definite set; the others are interior optima of the same objective already
            need = np.linalg.eigvalsh(-2 * M).min(axis=1) < _CURVATURE_FLOOR * (1 + 1e-6)
            if need.any():
                F1 = np.zeros((n_pad, F.shape[1] + 1))
                F1[: F.shape[0]] = np.concatenate([np.ones((F.shape[0], 1)), F], axis=1)
                pn, gn2, conv2 = _newton_nd(
                    jnp.asarray(F1, dtype), jnp.asarray(Yp, dtype), jnp.asarray(wt, dtype),
                    jnp.asarray(np.log(data.bin_size), dtype),
                    jnp.asarray(1.0 / float(self.prior_scale) ** 2, dtype),
                    jnp.asarray(_nd_start(b0, lin, M), dtype), d=d, max_iter=4 * int(opts["max_iter"]),
                    tol=jnp.asarray(max(_ND_TOL, newton_tol(dtype)) if opts["tol"] is None else opts["tol"], dtype),
                )
                bn, ln, Mn = jax.vmap(lambda q: _nd_unpack(q, d))(pn)
                b0, lin, M = b0.copy(), lin.copy(), M.copy()
                # all neurons run (one compiled program whatever the number refitted); the refit is kept where needed
                b0[need], lin[need], M[need] = np.asarray(bn)[need], np.asarray(ln)[need], np.asarray(Mn)[need]
                self.grad_norm_[need] = np.asarray(gn2, dtype=np.float64)[need]
                self.converged_[need] = np.asarray(conv2, dtype=bool)[need]
        if not np.all(np.isfinite(b0)) or not np.all(np.isfinite(lin)) or not np.all(np.isfinite(M)):
            raise FloatingPointError("the tuning fit gave non-finite coefficients; check the counts and target")
        b0, lin, M = _unstandardise(b0, lin, M, s_mean, s_sd)
        if not self.converged_.all():
            from ..diagnostics import ConvergenceWarning

            warnings.warn(
                f"the tuning fit of {int((~self.converged_).sum())} neuron(s) did not converge in"
                f" max_iter={opts['max_iter']} Newton iterations (see grad_norm_); raise max_iter",
                ConvergenceWarning,
                stacklevel=3,
            )

        self.coef_ = _tuning_to_coef(b0, lin, M, self.tuning)
        self.tuning_ = PoissonTuning(jnp.asarray(b0, dtype), jnp.asarray(lin, dtype), jnp.asarray(M, dtype))
        self.dynamics_, self.dynamics_bias_ = A, b
        self.dynamics_cov_ = _jitter(W, 1e-9, dtype)
        self.initial_mean_ = values.mean(axis=0)
        self.initial_cov_ = _jitter(np.atleast_2d(np.cov(values, rowvar=False, bias=True)), 1e-9, dtype)
        self.names_ = names
        self.n_dim_ = d
        self.neuron_ids_ = np.asarray(data.neuron_ids)
        self.bin_size_ = float(data.bin_size)
        self._set_training_log_likelihood(data, values)
        self.temperature_, self.calibration_ = check_temperature(self.temperature), None
        if self.temperature_ == "auto":
            self.temperature_, self.calibration_ = calibrate_temperature(self, data, values, gap=2)
        return self

    def _pointwise_log_likelihood(self, data: Any, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poisson log pmf of each bin's counts at the fitted rates of the true state."""
        data = check_neurons(data, self.neuron_ids_)
        mu = self.rates(np.asarray(truth, dtype=np.float64).reshape(data.n_time, -1)) * data.bin_size
        k = np.asarray(data.counts, dtype=np.float64)
        with np.errstate(divide="ignore"):
            ll = np.sum(k * np.log(mu) - mu - special.gammaln(k + 1.0), axis=1)
        return ll, np.arange(data.n_time)

    def _posterior_variables(self):
        names = list(self.names_)
        variables = {
            "intercept": (("neuron",), np.asarray(self.tuning_.intercept, dtype=np.float64)),
            "linear": (("neuron", "state"), np.asarray(self.tuning_.linear, dtype=np.float64)),
            "quadratic": (("neuron", "state", "state_from"), np.asarray(self.tuning_.quadratic, dtype=np.float64)),
            "dynamics": (("state", "state_from"), np.asarray(self.dynamics_, dtype=np.float64)),
            "dynamics_bias": (("state",), np.asarray(self.dynamics_bias_, dtype=np.float64)),
            "dynamics_cov": (("state", "state_from"), np.asarray(self.dynamics_cov_, dtype=np.float64)),
            "initial_mean": (("state",), np.asarray(self.initial_mean_, dtype=np.float64)),
            "initial_cov": (("state", "state_from"), np.asarray(self.initial_cov_, dtype=np.float64)),
        }
        coords = {"neuron": np.asarray(self.neuron_ids_), "state": names, "state_from": names}
        return variables, coords

    def rates(self, values: Any) -> np.ndarray:
        """Fitted rates in Hz at the given states, shape ``(time, neuron)``."""
        self._check_fitted()
        s = np.asarray(values, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        if s.ndim != 2 or s.shape[1] != self.n_dim_:
            raise ValueError(f"values must have shape (time, {self.n_dim_}), got {np.shape(values)}")
        coef = self.coef_
        return np.exp(coef[:, 0] + tuning_features(s, self.tuning) @ coef[:, 1:].T)

    # ----------------------------------------------------------------- decoding
    @pynapple_io()
    def decode(self, data: Any, *, temperature: float | None = None) -> GaussianPosterior:
        """Gaussian posterior of the state in every bin of `data`, each segment filtered afresh.

        Parameters
        ----------
        data : SpikeData or ndarray
            Counts of the training neurons (any order; a different set raises).
        temperature : float >= 1, optional
            Decode at this temperature instead of ``temperature_`` (the fit does not depend on
            it); ``1.0`` is the untempered filter.

        Returns
        -------
        GaussianPosterior
            With ``index`` all bins of `data`.

        Raises
        ------
        FloatingPointError
            If any bin's posterior is not finite (NaN in the fitted tuning or the counts), with
            the count and the first such bin: never a silent NaN.
        """
        self._check_fitted()
        t = self.temperature_ if temperature is None else check_temperature(temperature)
        if t == "auto":
            raise ValueError("decode(temperature=...) takes a number >= 1; 'auto' is chosen by fit")
        return self._decode_tempered(data, [float(t)])[0]

    def _decode_tempered(self, data: Any, temperatures: Any) -> list[GaussianPosterior]:
        """One posterior per temperature, all from one batched filter."""
        self._check_fitted()
        data = check_neurons(as_spike_data(data, self.bin_size_), self.neuron_ids_)
        dtype = _float_dtype()
        counts = np.asarray(data.counts, dtype=np.float64)
        segs = _segments(np.asarray(data.segment_ids))
        L = _padded_length(max(bb - a for a, bb in segs))
        stack = np.zeros((len(segs), L, counts.shape[1]))
        mask = np.zeros((len(segs), L), dtype=bool)
        for k, (a, bb) in enumerate(segs):
            stack[k, : bb - a] = counts[a:bb]
            mask[k, : bb - a] = True
        c = lambda x: jnp.asarray(x, dtype)
        temps = np.asarray([float(t) for t in temperatures])
        scale = temps if self.tempering == "covariance" else np.ones_like(temps)
        inv_t = np.ones(1) if self.tempering == "covariance" else 1.0 / temps
        m, P = _decode_segments(
            self.tuning_, c(self.dynamics_), c(self.dynamics_bias_), c(self.dynamics_cov_),
            c(self.initial_mean_), c(self.initial_cov_), c(stack), jnp.asarray(mask), c(data.bin_size), c(inv_t),
            smooth=bool(self.smooth), laplace=self.update == "laplace",
        )
        m, P = np.asarray(m), np.asarray(P)
        out = []
        for j in range(temps.size):
            jj = 0 if self.tempering == "covariance" else j
            mean = np.concatenate([m[jj, k, : bb - a] for k, (a, bb) in enumerate(segs)])
            cov = scale[j] * np.concatenate([P[jj, k, : bb - a] for k, (a, bb) in enumerate(segs)])
            check_finite_posterior(mean, cov, type(self).__name__)
            out.append(attach_index(GaussianPosterior(mean, cov, data.bin_centers, self.names_), np.arange(data.n_time)))
        return out
