r"""Gaussian linear dynamical systems: Kalman filter, RTS smoother, sampling and EM.

The model, for one trial of ``n_time`` bins, with dims ``time``, ``latent``, ``neuron`` and
``feature`` (optional inputs :math:`u_t`):

.. math::

    x_0 &\sim \mathcal{N}(m_0, S_0), \\
    x_t &= A x_{t-1} + B u_t + b + w_t, \quad w_t \sim \mathcal{N}(0, Q), \quad t \ge 1, \\
    y_t &= C x_t + D u_t + d + v_t, \quad v_t \sim \mathcal{N}(0, R).

:math:`R` is a full ``(neuron, neuron)`` matrix or, given as a ``(neuron,)`` vector, a diagonal;
the diagonal case updates in latent space (Woodbury), so its cost grows linearly with the number
of neurons. The input at ``t = 0`` enters only the observations.

Every public function validates its arguments in Python (shapes always; finiteness and positive
definiteness when the values are concrete, i.e. outside :func:`jax.jit`) and then calls a pure
jitted core, so the functions can themselves be jitted, vmapped or differentiated.

:func:`kalman_filter`, :func:`kalman_smoother`, :func:`lds_log_likelihood`, :func:`lds_sample`
    Inference and simulation for one trial, given :class:`LDSParams`.
:func:`lds_em_step`, :func:`fit_lds_em`
    Maximum-likelihood parameters by EM over one or many trials (lists of unequal length too),
    starting from :func:`init_lds_params` or any :class:`LDSParams`.

References
----------
Shumway, R. H. & Stoffer, D. S. (1982). An approach to time series smoothing and forecasting
using the EM algorithm. *J. Time Series Analysis* 3, 253-264.

Rauch, H. E., Tung, F. & Striebel, C. T. (1965). Maximum likelihood estimates of linear dynamic
systems. *AIAA Journal* 3, 1445-1450.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular

from bayesneuro._jit import jit

from ..infer._model import to_device

__all__ = [
    "EMResult",
    "FilterResult",
    "LDSParams",
    "SmootherResult",
    "fit_lds_em",
    "init_lds_params",
    "kalman_filter",
    "kalman_smoother",
    "lds_em_step",
    "lds_log_likelihood",
    "lds_sample",
    "make_lds_params",
]

_LOG_2PI = math.log(2.0 * math.pi)


class LDSParams(NamedTuple):
    """Parameters of a Gaussian linear dynamical system (see the module docstring for the model).

    Attributes
    ----------
    initial_mean : Array
        :math:`m_0`, shape ``(latent,)``.
    initial_cov : Array
        :math:`S_0`, shape ``(latent, latent)``, positive definite.
    dynamics : Array
        :math:`A`, shape ``(latent, latent)``.
    dynamics_bias : Array
        :math:`b`, shape ``(latent,)``.
    input_weights : Array or None
        :math:`B`, shape ``(latent, feature)``; ``None`` when inputs do not drive the latents.
    loadings : Array
        :math:`C`, shape ``(neuron, latent)``.
    offset : Array
        :math:`d`, shape ``(neuron,)``.
    observation_input_weights : Array or None
        :math:`D`, shape ``(neuron, feature)``; ``None`` when inputs do not enter the observations.
    dynamics_cov : Array
        :math:`Q`, shape ``(latent, latent)``, positive definite.
    observation_cov : Array
        :math:`R`: a ``(neuron, neuron)`` positive definite matrix, or a ``(neuron,)`` vector of
        positive variances for a diagonal :math:`R`.
    """

    initial_mean: jax.Array
    initial_cov: jax.Array
    dynamics: jax.Array
    dynamics_bias: jax.Array
    input_weights: jax.Array | None
    loadings: jax.Array
    offset: jax.Array
    observation_input_weights: jax.Array | None
    dynamics_cov: jax.Array
    observation_cov: jax.Array


class FilterResult(NamedTuple):
    """Output of :func:`kalman_filter`.

    Attributes
    ----------
    filtered_means : Array
        :math:`E[x_t \\mid y_{0:t}]`, shape ``(time, latent)``.
    filtered_covs : Array
        :math:`\\mathrm{Cov}[x_t \\mid y_{0:t}]`, shape ``(time, latent, latent)``.
    predicted_means : Array
        :math:`E[x_t \\mid y_{0:t-1}]`, shape ``(time, latent)``; row 0 is :math:`m_0`.
    predicted_covs : Array
        :math:`\\mathrm{Cov}[x_t \\mid y_{0:t-1}]`, shape ``(time, latent, latent)``; entry 0 is
        :math:`S_0`.
    log_likelihood : Array
        :math:`\\log p(y_{0:T-1}) = \\sum_t \\log \\mathcal{N}(y_t \\mid \\hat y_{t|t-1},
        S_t)` over the observed bins, a scalar.
    """

    filtered_means: jax.Array
    filtered_covs: jax.Array
    predicted_means: jax.Array
    predicted_covs: jax.Array
    log_likelihood: jax.Array


class SmootherResult(NamedTuple):
    """Output of :func:`kalman_smoother`.

    Attributes
    ----------
    smoothed_means : Array
        :math:`E[x_t \\mid y_{0:T-1}]`, shape ``(time, latent)``.
    smoothed_covs : Array
        :math:`\\mathrm{Cov}[x_t \\mid y_{0:T-1}]`, shape ``(time, latent, latent)``.
    smoothed_cross_covs : Array
        ``smoothed_cross_covs[t]`` is :math:`\\mathrm{Cov}[x_{t+1}, x_t \\mid y_{0:T-1}]
        = E[(x_{t+1} - \\mu_{t+1})(x_t - \\mu_t)^\\top \\mid y]`, shape ``(time - 1, latent,
        latent)``: rows index :math:`x_{t+1}`, columns :math:`x_t`.
    log_likelihood : Array
        :math:`\\log p(y_{0:T-1})`, a scalar (as in :class:`FilterResult`).
    """

    smoothed_means: jax.Array
    smoothed_covs: jax.Array
    smoothed_cross_covs: jax.Array
    log_likelihood: jax.Array


class EMResult(NamedTuple):
    """Output of :func:`fit_lds_em`.

    Attributes
    ----------
    params : LDSParams
        The parameters after the last EM step.
    log_likelihoods : numpy.ndarray
        ``log_likelihoods[k]`` is the total log-likelihood of all trials under the parameters
        after ``k`` EM steps, so entry 0 is the starting point and the last entry belongs to
        ``params``. EM never decreases it (up to rounding).
    converged : bool
        Whether the ``tol`` criterion stopped the run before ``max_iter`` steps.
    """

    params: LDSParams
    log_likelihoods: np.ndarray
    converged: bool


# ----------------------------------------------------------------------------- pure maths


def _sym(M):
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def _offsets(params: LDSParams, inputs):
    """Per-bin additive terms: ``B u_t + b`` (row 0 unused) and ``D u_t + d``."""
    n_time = inputs.shape[0]
    dyn = jnp.broadcast_to(params.dynamics_bias, (n_time, params.dynamics.shape[0]))
    emi = jnp.broadcast_to(params.offset, (n_time, params.loadings.shape[0]))
    if params.input_weights is not None:
        dyn = dyn + inputs @ params.input_weights.T
    if params.observation_input_weights is not None:
        emi = emi + inputs @ params.observation_input_weights.T
    return dyn, emi


def _whiten(params: LDSParams, observations, inputs, seen):
    r"""The observation model in whitened latent-space form, for every bin at once.

    With :math:`R = L L^\top` (:math:`L = \mathrm{diag}\sqrt{R}` for a diagonal ``R``),
    :math:`W = L^{-1} C` and :math:`\tilde y_t = L^{-1}(y_t - D u_t - d)`, the measurement update
    needs only :math:`W`, :math:`J = W^\top W` and :math:`\tilde y_t`: the per-bin work is
    :math:`O(\text{latent}^3 + \text{neuron}\cdot\text{latent})` instead of a ``(neuron, neuron)``
    factorisation per bin. Returns ``(W, J, y_tilde, log det R)``; unseen bins have
    :math:`\tilde y_t = 0`.
    """
    C, R = params.loadings, params.observation_cov
    _, emi_off = _offsets(params, inputs)
    y0 = jnp.where(seen[:, None], observations, 0.0)  # NaN allowed at unseen bins, even under grad
    resid = jnp.where(seen[:, None], y0 - emi_off, 0.0)
    if R.ndim == 1:
        isr = lax.rsqrt(R)
        W = C * isr[:, None]
        yt = resid * isr
        logdet_r = jnp.sum(jnp.log(R))
    else:
        Lr = jnp.linalg.cholesky(_sym(R))
        W = solve_triangular(Lr, C, lower=True)
        yt = solve_triangular(Lr, resid.T, lower=True).T
        logdet_r = 2.0 * jnp.sum(jnp.log(jnp.diag(Lr)))
    return W, W.T @ W, yt, logdet_r


def _update_factor(P, J):
    """The measurement update's factors: ``H = L_M^{-1} G^T`` (``P_f = H^T H``) and ``L_M``,
    ``M = I + G^T J G = L_M L_M^T``, ``P = G G^T`` (see :func:`_filter`)."""
    G = jnp.linalg.cholesky(P)
    Lm = jnp.linalg.cholesky(jnp.eye(P.shape[0], dtype=P.dtype) + G.T @ J @ G)
    return solve_triangular(Lm, G.T, lower=True), Lm


def _rts_gain(A, P_f, P_p):
    """The RTS gain transposed, ``J^T = P_p^{-1} A P_f`` (``P_p`` the prediction of the next bin)."""
    return cho_solve((jnp.linalg.cholesky(P_p), True), A @ P_f)


def _filter(params: LDSParams, observations, inputs, mask, live=None) -> FilterResult:
    r"""Kalman filter in latent space (information-form update through :func:`_whiten`).

    For a prediction :math:`N(m, P)`, :math:`P = G G^\top`, :math:`M = I + G^\top J G = L_M
    L_M^\top`, :math:`H = L_M^{-1} G^\top`: :math:`P_f = H^\top H = (P^{-1} + J)^{-1}`,
    :math:`m_f = m + P_f W^\top \tilde e` with :math:`\tilde e = \tilde y - W m`, and
    :math:`\log p(y_t \mid y_{<t})` from :math:`\log\det S = \log\det R + \log\det M` and
    :math:`e^\top S^{-1} e = \tilde e^\top \tilde e - g^\top P_f g`, :math:`g = W^\top \tilde e`.
    ``live`` (default all True) marks the bins of the trial: padding bins after it are unseen
    and end the smoother (:func:`_rts`) there.
    """
    A, Q = params.dynamics, params.dynamics_cov
    n_neuron = params.loadings.shape[0]
    seen = mask if live is None else mask & live
    dyn_off, _ = _offsets(params, inputs)
    W, J, yt, logdet_r = _whiten(params, observations, inputs, seen)
    next_off = jnp.concatenate([dyn_off[1:], jnp.zeros_like(dyn_off[:1])])
    const = n_neuron * _LOG_2PI + logdet_r

    def step(carry, xs):
        m, P = carry
        y, do_next, s = xs
        H, Lm = _update_factor(P, J)
        e = y - W @ m
        h = H @ (W.T @ e)
        m_f = jnp.where(s, m + H.T @ h, m)
        P_f = jnp.where(s, H.T @ H, P)
        ll = -0.5 * (const + 2.0 * jnp.sum(jnp.log(jnp.diag(Lm))) + e @ e - h @ h)
        ll = jnp.where(s, ll, 0.0)
        m_next = A @ m_f + do_next
        P_next = _sym(A @ P_f @ A.T + Q)
        return (m_next, P_next), (m_f, P_f, m, P, ll)

    init = (params.initial_mean, _sym(params.initial_cov))
    _, (mf, Pf, mp, Pp, lls) = lax.scan(step, init, (yt, next_off, seen))
    return FilterResult(mf, Pf, mp, Pp, jnp.sum(lls))


def _smoother(params: LDSParams, observations, inputs, mask, live=None) -> SmootherResult:
    return _rts(params, _filter(params, observations, inputs, mask, live), live)


def _rts(params: LDSParams, filt: FilterResult, live=None) -> SmootherResult:
    """The Rauch-Tung-Striebel backward pass over a filter's output (bins after the last ``live``
    one, padding, do not condition the trial: there the smoothed moments are the filtered ones
    and the cross covariance is zero)."""
    A = params.dynamics

    def step(carry, xs):
        m_next, P_next = carry  # smoothed moments of x_{t+1}
        m_f, P_f, m_p, P_p, on = xs  # filtered x_t, predicted x_{t+1}, whether x_{t+1} is live
        Jt = _rts_gain(A, P_f, P_p)
        m_s = jnp.where(on, m_f + Jt.T @ (m_next - m_p), m_f)
        P_s = jnp.where(on, _sym(P_f + Jt.T @ (P_next - P_p) @ Jt), P_f)
        cross = jnp.where(on, P_next @ Jt, 0.0)  # Cov(x_{t+1}, x_t | y)
        return (m_s, P_s), (m_s, P_s, cross)

    n_time = filt.filtered_means.shape[0]
    on = jnp.ones(n_time - 1, bool) if live is None else live[1:]
    last = (filt.filtered_means[-1], filt.filtered_covs[-1])
    xs = (
        filt.filtered_means[:-1], filt.filtered_covs[:-1], filt.predicted_means[1:], filt.predicted_covs[1:], on
    )
    _, (ms, Ps, cross) = lax.scan(step, last, xs, reverse=True)
    ms = jnp.concatenate([ms, last[0][None]])
    Ps = jnp.concatenate([Ps, last[1][None]])
    return SmootherResult(ms, Ps, cross, filt.log_likelihood)


def _sample(key, params: LDSParams, inputs):
    n_time = inputs.shape[0]
    n_neuron, n_latent = params.loadings.shape
    dyn_off, emi_off = _offsets(params, inputs)
    # one draw for all the noise, sliced: a single PRNG call compiles much faster than three
    n_x = n_time * n_latent
    z = jax.random.normal(key, (n_x + n_time * n_neuron,), params.dynamics.dtype)
    zx = z[:n_x].reshape(n_time, n_latent)
    x0 = params.initial_mean + jnp.linalg.cholesky(params.initial_cov) @ zx[0]
    w = zx[1:] @ jnp.linalg.cholesky(params.dynamics_cov).T
    R = params.observation_cov
    v = z[n_x:].reshape(n_time, n_neuron)
    v = v * jnp.sqrt(R) if R.ndim == 1 else v @ jnp.linalg.cholesky(R).T

    def step(x, xs):
        x = params.dynamics @ x + xs[0] + xs[1]
        return x, x

    _, xs = lax.scan(step, x0, (dyn_off[1:], w))
    latents = jnp.concatenate([x0[None], xs])
    return latents, latents @ params.loadings.T + emi_off + v


_filter_jit = jit(_filter)
_rts_jit = jit(_rts)
_sample_jit = jit(_sample)


class _Stats(NamedTuple):
    """Expected sufficient statistics, summed over trials; ``z = [x, u, 1]``."""

    dyn_xx: jax.Array  # sum_{t>=1} E[x_t x_t^T]
    dyn_xz: jax.Array  # sum_{t>=1} E[x_t z_{t-1}^T], with z_{t-1} = [x_{t-1}, u_t, 1]
    dyn_zz: jax.Array  # sum_{t>=1} E[z_{t-1} z_{t-1}^T]
    dyn_n: jax.Array
    emi_yy: jax.Array  # sum_t y_t y_t^T over observed bins, with z_t = [x_t, u_t, 1]
    emi_yz: jax.Array
    emi_zz: jax.Array
    emi_n: jax.Array
    init_x: jax.Array  # sum over trials of E[x_0]
    init_xx: jax.Array  # sum over trials of E[x_0 x_0^T]
    n_trial: jax.Array
    log_likelihood: jax.Array


def _pattern_covs(params: LDSParams, J, seen, live):
    """Filter and smoother covariances of one pattern of observed (``seen``) and ``live`` bins.

    They depend on the data only through that pattern, so trials that share it share them. Per
    bin: filtered ``P_f``, the filter's mean map ``M = I - P_f J`` (on seen
    bins; ``I`` elsewhere), ``2 log det L_M``, the smoother gain ``Jt^T`` (rows ``x_t``), smoothed
    ``P_s`` and cross ``Cov(x_{t+1}, x_t)`` (as :func:`_filter` and :func:`_rts`).
    """
    A, Q = params.dynamics, params.dynamics_cov
    eye = jnp.eye(A.shape[0], dtype=A.dtype)

    def fstep(P, s):
        H, Lm = _update_factor(P, J)
        P_f = jnp.where(s, H.T @ H, P)
        M = jnp.where(s, eye - P_f @ J, eye)
        logdet = jnp.where(s, 2.0 * jnp.sum(jnp.log(jnp.diag(Lm))), 0.0)
        return _sym(A @ P_f @ A.T + Q), (P, P_f, M, logdet)

    _, (P_p, P_f, M, logdet) = lax.scan(fstep, _sym(params.initial_cov), seen)

    def bstep(P_next, xs):
        Pf, Pp, on = xs  # filtered x_t, predicted x_{t+1}, whether x_{t+1} is live
        Jt = _rts_gain(A, Pf, Pp)
        P_s = jnp.where(on, _sym(Pf + Jt.T @ (P_next - Pp) @ Jt), Pf)
        cross = jnp.where(on, P_next @ Jt, 0.0)
        return P_s, (jnp.where(on, Jt.T, 0.0), P_s, cross)

    _, (gain, P_s, cross) = lax.scan(bstep, P_f[-1], (P_f[:-1], P_p[1:], live[1:]), reverse=True)
    P_s = jnp.concatenate([P_s, P_f[-1][None]])
    return P_f, M, logdet, gain, P_s, cross


@jit
def _group_stats(params: LDSParams, observations, inputs, masks, live, pattern, p_seen, p_live,
                 p_count, obs_gram) -> _Stats:
    """Statistics of trials padded to one length and stacked on a leading ``trial`` axis, summed.

    The covariances of the Kalman filter and smoother depend on the data only through which
    bins are observed, so they are computed once per distinct pattern of observed and live bins
    (:func:`_pattern_covs`; ``pattern`` ``(trial,)`` indexes ``p_seen``, ``p_live`` ``(pattern,
    time)``, ``p_count`` trials per pattern): one pattern for trials of one length without
    missing bins. Per trial only the means run, as batched matrix-vector products, with the
    same filter, log-likelihood and RTS recursions as :func:`_filter` and :func:`_rts`
    (tests/test_kalman.py checks them against one smoother per trial).
    ``obs_gram`` is the data's ``sum_t y_t y_t^T`` over observed bins (it does not change from one
    EM step to the next).
    """
    C = params.loadings
    n_latent = C.shape[1]
    A = params.dynamics
    seen = masks & live
    n_trial, n_time, n_neuron = observations.shape
    flat = lambda a: a.reshape((n_trial * n_time,) + a.shape[2:])  # every bin of every trial
    W, J, yt, logdet_r = _whiten(params, flat(observations), flat(inputs), flat(seen))
    yt = yt.reshape(n_trial, n_time, n_neuron)
    g = yt @ W  # (trial, time, latent): W^T y~
    yy = jnp.sum(yt * yt, axis=-1)
    const = C.shape[0] * _LOG_2PI + logdet_r
    dyn_off = _offsets(params, flat(inputs))[0].reshape(n_trial, n_time, n_latent)
    next_off = jnp.concatenate([dyn_off[:, 1:], jnp.zeros_like(dyn_off[:, :1])], axis=1)
    P_f, M, logdet, gain, P_s, cross = jax.vmap(_pattern_covs, in_axes=(None, None, 0, 0))(
        params, J, p_seen, p_live)
    tm = lambda a: jnp.swapaxes(a, 0, 1)  # (trial, time, ...) <-> (time, trial, ...)

    def fstep(m, xs):  # m (trial, latent): predicted means at t
        g_t, yy_t, off, s, Pf, Mt, ld = xs
        Pf, Mt, ld = Pf[pattern], Mt[pattern], ld[pattern]
        m_f = jnp.einsum("bij,bj->bi", Mt, m) + s[:, None] * jnp.einsum("bij,bj->bi", Pf, g_t)
        r = g_t - m @ J
        ll = -0.5 * (const + ld + yy_t - 2.0 * jnp.sum(m * g_t, -1) + jnp.sum((m @ J) * m, -1)
                     - jnp.einsum("bi,bij,bj->b", r, Pf, r))
        return m_f @ A.T + off, (m, m_f, jnp.where(s, ll, 0.0))

    m0 = jnp.broadcast_to(params.initial_mean, (observations.shape[0], n_latent))
    _, (m_p, m_f, lls) = lax.scan(fstep, m0, (tm(g), tm(yy), tm(next_off), tm(seen), tm(P_f), tm(M), tm(logdet)))

    def bstep(m_next, xs):  # smoothed mean of x_{t+1}
        mf, mp_next, G = xs
        m_s = mf + jnp.einsum("bij,bj->bi", G[pattern], m_next - mp_next)
        return m_s, m_s

    _, m_s = lax.scan(bstep, m_f[-1], (m_f[:-1], m_p[1:], tm(gain)), reverse=True)
    m = tm(jnp.concatenate([m_s, m_f[-1][None]]))  # (trial, time, latent)

    w = seen.astype(m.dtype)
    wl = live[:, 1:].astype(m.dtype)
    tw = live[:, 0].astype(m.dtype)
    pw = p_count[:, None] * p_seen.astype(m.dtype)
    pwl = p_count[:, None] * p_live[:, 1:].astype(m.dtype)
    ptw = p_count * p_live[:, 0].astype(m.dtype)
    y = observations  # zero on unseen bins, as _prepare_trials lays them out
    ones = jnp.ones(m.shape[:2] + (1,), m.dtype)
    z = jnp.concatenate([m, inputs, ones], axis=-1)
    zd = jnp.concatenate([m[:, :-1], inputs[:, 1:], ones[:, :-1]], axis=-1)
    zdw = zd * wl[..., None]
    n_z = z.shape[-1]
    pad = lambda S: jnp.zeros((n_z, n_z), S.dtype).at[:n_latent, :n_latent].set(S)
    x1w = m[:, 1:] * wl[..., None]
    return _Stats(
        dyn_xx=jnp.einsum("bti,btj->ij", x1w, m[:, 1:]) + jnp.einsum("ut,utij->ij", pwl, P_s[:, 1:]),
        dyn_xz=jnp.einsum("bti,btj->ij", m[:, 1:], zdw).at[:, :n_latent].add(jnp.einsum("ut,utij->ij", pwl, cross)),
        dyn_zz=jnp.einsum("bti,btj->ij", zdw, zd) + pad(jnp.einsum("ut,utij->ij", pwl, P_s[:, :-1])),
        dyn_n=wl.sum(),
        emi_yy=obs_gram,
        emi_yz=jnp.einsum("bti,btj->ij", y, z),
        emi_zz=jnp.einsum("bti,btj->ij", z * w[..., None], z) + pad(jnp.einsum("ut,utij->ij", pw, P_s)),
        emi_n=w.sum(),
        init_x=tw @ m[:, 0],
        init_xx=jnp.einsum("u,uij->ij", ptw, P_s[:, 0]) + jnp.einsum("b,bi,bj->ij", tw, m[:, 0], m[:, 0]),
        n_trial=tw.sum(),
        log_likelihood=jnp.sum(lls),
    )


def _regress(yy, yz, zz, n, W, free):
    """Maximise the expected Gaussian regression likelihood over the ``free`` columns of ``W``.

    Returns the new ``W`` and the expected residual covariance at it. Fixed columns keep their
    values; the minimum-norm solution is taken if the free regressors are collinear.
    """
    free = np.asarray(free, dtype=int)
    fixed = np.setdiff1d(np.arange(W.shape[1]), free)
    if free.size:
        rhs = yz[:, free] - W[:, fixed] @ zz[np.ix_(fixed, free)]
        W = W.at[:, free].set(rhs @ jnp.linalg.pinv(zz[np.ix_(free, free)], hermitian=True))
    resid = yy - W @ yz.T - yz @ W.T + W @ zz @ W.T
    return W, _sym(resid) / n


def _block_update(yy, yz, zz, n, weights, bias, inputs_w, n_feature, fixed, names):
    """M-step of one regression block ``[weights, inputs_w, bias]`` with the names in ``fixed`` held."""
    w_name, u_name, b_name = names
    n_out, n_latent = weights.shape
    dtype = weights.dtype
    u_w = jnp.zeros((n_out, n_feature), dtype) if inputs_w is None else inputs_w
    W = jnp.concatenate([weights, u_w, bias[:, None]], axis=1)
    xs = list(range(n_latent))
    us = list(range(n_latent, n_latent + n_feature))
    free = (xs if w_name not in fixed else []) + (us if inputs_w is not None and u_name not in fixed else [])
    free += [n_latent + n_feature] if b_name not in fixed else []
    W, cov = _regress(yy, yz, zz, n, W, free)
    return W[:, :n_latent], None if inputs_w is None else W[:, n_latent:-1], W[:, -1], cov


@partial(jit, static_argnames=("fixed",))
def _m_step(params: LDSParams, stats: _Stats, fixed: frozenset) -> LDSParams:
    n_feature = stats.dyn_zz.shape[0] - params.dynamics.shape[0] - 1
    A, B, b, Q = _block_update(
        stats.dyn_xx, stats.dyn_xz, stats.dyn_zz, stats.dyn_n,
        params.dynamics, params.dynamics_bias, params.input_weights,
        n_feature, fixed, ("dynamics", "input_weights", "dynamics_bias"),
    )
    C, D, d, R = _block_update(
        stats.emi_yy, stats.emi_yz, stats.emi_zz, stats.emi_n,
        params.loadings, params.offset, params.observation_input_weights,
        n_feature, fixed, ("loadings", "observation_input_weights", "offset"),
    )
    s = stats.init_x / stats.n_trial
    m0 = params.initial_mean if "initial_mean" in fixed else s
    S0 = stats.init_xx / stats.n_trial - jnp.outer(m0, s) - jnp.outer(s, m0) + jnp.outer(m0, m0)
    new = {
        "initial_mean": m0, "initial_cov": _sym(S0), "dynamics": A, "dynamics_bias": b, "input_weights": B,
        "loadings": C, "offset": d, "observation_input_weights": D, "dynamics_cov": Q,
        "observation_cov": jnp.diag(R) if params.observation_cov.ndim == 1 else R,
    }
    return params._replace(**{k: v for k, v in new.items() if k not in fixed})


# ----------------------------------------------------------------------------- validation


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_pd(name: str, M) -> None:
    if not _concrete(M):
        return
    M = np.asarray(M, dtype=np.float64)
    if M.ndim == 1:
        if np.any(M <= 0):
            raise ValueError(
                f"{name} (a diagonal given as a vector) must be positive; smallest entry {M.min():.3g}"
            )
        return
    scale = max(np.abs(M).max(), np.finfo(np.float64).tiny)
    if not np.allclose(M, M.T, rtol=1e-5, atol=1e-6 * scale):
        raise ValueError(f"{name} must be symmetric; largest asymmetry {np.abs(M - M.T).max():.3g}")
    try:
        np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{name} must be positive definite; its smallest eigenvalue is "
            f"{np.linalg.eigvalsh(M).min():.3g}"
        ) from None


def _check_params(params) -> LDSParams:
    """``params`` as an :class:`LDSParams` of float arrays with consistent shapes."""
    if not isinstance(params, LDSParams):
        raise ValueError(f"params must be an LDSParams (see make_lds_params), got {type(params).__name__}")
    arrays = {k: v for k, v in params._asdict().items() if v is not None}
    dtype = jnp.result_type(float, *arrays.values())
    p = params._replace(**{k: jnp.asarray(v, dtype) for k, v in arrays.items()})
    n_neuron, n_latent = p.loadings.shape if p.loadings.ndim == 2 else (None, None)
    if n_neuron is None:
        raise ValueError(f"params.loadings (C) must be 2-D (neuron, latent), got shape {p.loadings.shape}")
    L, N = n_latent, n_neuron
    fw = [w.shape[-1] for w in (p.input_weights, p.observation_input_weights) if w is not None and w.ndim == 2]
    if len(fw) == 2 and fw[0] != fw[1]:
        raise ValueError(
            f"params.input_weights has {fw[0]} features but params.observation_input_weights has {fw[1]}; "
            "both take the same inputs"
        )
    F = fw[0] if fw else "feature"
    expected = {
        "initial_mean": (L,), "initial_cov": (L, L), "dynamics": (L, L), "dynamics_bias": (L,),
        "input_weights": (L, F), "loadings": (N, L), "offset": (N,),
        "observation_input_weights": (N, F), "dynamics_cov": (L, L),
    }
    for name, shape in expected.items():
        v = getattr(p, name)
        if v is not None and v.shape != shape:
            raise ValueError(
                f"params.{name} must have shape {shape} (latent={L}, neuron={N}"
                + (f", feature={F}" if name.endswith("input_weights") else "") + f"), got {v.shape}"
            )
    if p.observation_cov.shape not in ((N, N), (N,)):
        raise ValueError(
            f"params.observation_cov (R) must have shape ({N}, {N}) or ({N},) for a diagonal, "
            f"got {p.observation_cov.shape}"
        )
    for name, v in p._asdict().items():
        if v is not None and _concrete(v) and not np.all(np.isfinite(np.asarray(v))):
            raise ValueError(f"params.{name} contains NaN or inf")
    _check_pd("params.initial_cov (S0)", p.initial_cov)
    _check_pd("params.dynamics_cov (Q)", p.dynamics_cov)
    _check_pd("params.observation_cov (R)", p.observation_cov)
    return p


def _n_feature(params: LDSParams) -> int:
    for w in (params.input_weights, params.observation_input_weights):
        if w is not None:
            return w.shape[1]
    return 0


def _check_trial(params: LDSParams, observations, inputs, mask, where: str = ""):
    """One trial's ``(observations, inputs, mask)`` as arrays; ``inputs`` is ``(time, 0)`` if absent."""
    dtype = params.loadings.dtype
    y = jnp.asarray(observations, dtype)
    N = params.loadings.shape[0]
    if y.ndim != 2:
        raise ValueError(f"{where}observations must be 2-D (time, neuron), got shape {y.shape}")
    if y.shape[1] != N:
        raise ValueError(
            f"{where}observations have {y.shape[1]} neurons but params.loadings (C) has {N} rows; "
            "observations must be (time, neuron)"
        )
    T = y.shape[0]
    if T < 1:
        raise ValueError(f"{where}observations must have at least one time bin")
    if mask is None:
        m = jnp.asarray(np.ones(T, bool))  # from numpy: no XLA program per new length
    else:
        m = jnp.asarray(mask)
        if m.shape != (T,) or m.dtype != bool:
            raise ValueError(
                f"{where}mask must be a boolean (time,) array with time={T}, got {m.dtype} {m.shape}"
            )
    if _concrete(y) and _concrete(m):
        bad = ~np.isfinite(np.asarray(y)) & np.asarray(m)[:, None]
        if bad.any():
            t, n = np.argwhere(bad)[0]
            raise ValueError(
                f"{where}observations contain {int(bad.sum())} NaN/inf values in observed bins "
                f"(first at time {t}, neuron {n}); pass mask=False for missing bins instead"
            )
    F = _n_feature(params)
    if inputs is None:
        if F:
            raise ValueError(f"params have input weights for {F} features but no inputs were given")
        return y, jnp.asarray(np.zeros((T, 0), dtype)), m
    u = jnp.asarray(inputs, dtype)
    if not F:
        raise ValueError(
            "inputs were given but params.input_weights and params.observation_input_weights are both None; "
            "set at least one (make_lds_params(..., input_weights=...))"
        )
    if u.ndim != 2 or u.shape != (T, F):
        raise ValueError(f"{where}inputs must have shape (time, feature) = ({T}, {F}), got {u.shape}")
    if _concrete(u) and not np.all(np.isfinite(np.asarray(u))):
        raise ValueError(f"{where}inputs contain NaN or inf")
    return y, u, m


def _as_trials(observations, inputs, mask):
    """Split possibly-batched arguments into per-trial lists."""
    if isinstance(observations, (list, tuple)):
        n = len(observations)
        ys = list(observations)
        split = lambda a, name: [None] * n if a is None else _listlike(a, n, name)
        return ys, split(inputs, "inputs"), split(mask, "mask")
    arr = np.asarray(observations) if _concrete(observations) else observations
    if arr.ndim == 3:
        n = arr.shape[0]
        return list(arr), [None] * n if inputs is None else _listlike(inputs, n, "inputs"), (
            [None] * n if mask is None else _listlike(mask, n, "mask"))
    if arr.ndim == 2:
        return [arr], [inputs], [mask]
    raise ValueError(
        "observations must be (time, neuron), (trial, time, neuron) or a list of (time, neuron) arrays, "
        f"got shape {arr.shape}"
    )


def _listlike(a, n, name):
    out = list(a)
    if len(out) != n:
        raise ValueError(f"{name} must have one entry per trial ({n}), got {len(out)}")
    return out


def _check_trials(params: LDSParams, observations, inputs, mask) -> list:
    ys, us, ms = _as_trials(observations, inputs, mask)
    if not ys:
        raise ValueError("observations is an empty list of trials")
    prefix = (lambda i: f"trial {i}: ") if len(ys) > 1 else (lambda i: "")
    return [_check_trial(params, y, u, m, prefix(i)) for i, (y, u, m) in enumerate(zip(ys, us, ms))]


def _prepare_trials(params: LDSParams, observations, inputs, mask):
    """Validated trials grouped by bucketed length (:func:`bayesneuro._shapes.bucket_length`):
    a tuple of stacked ``(observations, inputs, masks, live, pattern, pattern_seen, pattern_live,
    pattern_count, observation_gram)`` (the arguments of :func:`_group_stats`), each group padded to its bucket
    length in time (``live`` False after a trial's end) and to a bucketed number of trials
    (padding trials have no live bin) and of distinct patterns of observed and live bins. A
    recording whose trials fall in the same buckets reuses the compiled EM program."""
    from bayesneuro._shapes import bucket_length

    trials = _check_trials(params, observations, inputs, mask)
    n_obs = sum(int(np.asarray(tr[2]).sum()) for tr in trials)
    if n_obs == 0:
        raise ValueError("every time bin is masked; EM needs observed bins")
    if sum(tr[0].shape[0] - 1 for tr in trials) == 0:
        raise ValueError("every trial has a single time bin; EM needs at least one transition")
    by_len: dict[int, list] = {}
    for tr in trials:
        by_len.setdefault(bucket_length(tr[0].shape[0]), []).append(tr)
    dtype = np.dtype(params.loadings.dtype)
    n_neuron, n_feature = params.loadings.shape[0], trials[0][1].shape[1]
    groups = []
    for n_time, g in sorted(by_len.items()):
        n_tr = bucket_length(len(g), minimum=1)
        Y = np.zeros((n_tr, n_time, n_neuron), dtype)
        U = np.zeros((n_tr, n_time, n_feature), dtype)
        M = np.zeros((n_tr, n_time), bool)
        live = np.zeros((n_tr, n_time), bool)
        for i, (y, u, m) in enumerate(g):
            T, m = y.shape[0], np.asarray(m)
            Y[i, :T] = np.where(m[:, None], np.asarray(y), 0.0)
            U[i, :T] = np.asarray(u)
            M[i, :T] = m
            live[i, :T] = True
        # trials sharing a pattern of observed and live bins share the Kalman covariances
        # (_group_stats); the number of patterns is bucketed too (padding patterns count 0 trials)
        keys, pattern, counts = np.unique(np.concatenate([M & live, live], axis=1), axis=0, return_inverse=True,
                                          return_counts=True)
        n_pat = bucket_length(len(keys), minimum=1)
        keys = np.concatenate([keys, np.repeat(keys[:1], n_pat - len(keys), axis=0)])
        counts = np.concatenate([counts, np.zeros(n_pat - len(counts), int)]).astype(dtype)
        Yf = Y.reshape(-1, n_neuron)  # unobserved bins hold zeros
        arrays = (Y, U, M, live, pattern.reshape(-1).astype(np.int32), keys[:, :n_time], keys[:, n_time:], counts,
                  Yf.T @ Yf)
        groups.append(tuple(to_device(a) for a in arrays))
    return tuple(groups)


# ----------------------------------------------------------------------------- public API


def make_lds_params(
    dynamics,
    loadings,
    *,
    dynamics_cov=None,
    observation_cov=None,
    initial_mean=None,
    initial_cov=None,
    dynamics_bias=None,
    offset=None,
    input_weights=None,
    observation_input_weights=None,
) -> LDSParams:
    """Build a validated :class:`LDSParams` from ``A`` and ``C``, with defaults for the rest.

    Parameters
    ----------
    dynamics : array_like
        :math:`A`, shape ``(latent, latent)``.
    loadings : array_like
        :math:`C`, shape ``(neuron, latent)``.
    dynamics_cov : array_like, optional
        :math:`Q`; default the identity.
    observation_cov : array_like, optional
        :math:`R`, a ``(neuron, neuron)`` matrix or a ``(neuron,)`` diagonal; default ones
        (a diagonal).
    initial_mean, initial_cov : array_like, optional
        :math:`m_0` and :math:`S_0`; default zeros and the identity.
    dynamics_bias, offset : array_like, optional
        :math:`b` and :math:`d`; default zeros.
    input_weights, observation_input_weights : array_like, optional
        :math:`B` ``(latent, feature)`` and :math:`D` ``(neuron, feature)``; default ``None``
        (no inputs).

    Returns
    -------
    LDSParams

    Raises
    ------
    ValueError
        If shapes disagree, values are not finite, or a covariance is not positive definite.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params
    >>> p = make_lds_params(0.9 * jnp.eye(2), jnp.ones((3, 2)))
    >>> p.observation_cov.shape, p.dynamics_cov.shape
    ((3,), (2, 2))
    """
    A = jnp.asarray(dynamics)
    C = jnp.asarray(loadings)
    if A.ndim != 2 or C.ndim != 2:
        raise ValueError(
            f"dynamics must be (latent, latent) and loadings (neuron, latent); got {A.shape} and {C.shape}"
        )
    n_neuron, n_latent = C.shape
    dtype = jnp.result_type(float, A, C)
    params = LDSParams(
        initial_mean=np.zeros(n_latent, dtype) if initial_mean is None else initial_mean,
        initial_cov=np.eye(n_latent, dtype=dtype) if initial_cov is None else initial_cov,
        dynamics=A,
        dynamics_bias=np.zeros(n_latent, dtype) if dynamics_bias is None else dynamics_bias,
        input_weights=input_weights,
        loadings=C,
        offset=np.zeros(n_neuron, dtype) if offset is None else offset,
        observation_input_weights=observation_input_weights,
        dynamics_cov=np.eye(n_latent, dtype=dtype) if dynamics_cov is None else dynamics_cov,
        observation_cov=np.ones(n_neuron, dtype) if observation_cov is None else observation_cov,
    )
    return _check_params(params)


def kalman_filter(params: LDSParams, observations, inputs=None, mask=None) -> FilterResult:
    """Kalman filter: filtered and one-step predicted moments and the marginal log-likelihood.

    Parameters
    ----------
    params : LDSParams
    observations : array_like
        :math:`y`, shape ``(time, neuron)``. Values at masked bins are ignored (NaN allowed there).
    inputs : array_like, optional
        :math:`u`, shape ``(time, feature)``; required when ``params`` has input weights.
    mask : array_like of bool, optional
        Shape ``(time,)``; ``False`` marks a missing bin, which gets no measurement update and
        adds nothing to the log-likelihood. Default: all observed.

    Returns
    -------
    FilterResult

    Raises
    ------
    ValueError
        On shape mismatches, NaN/inf in observed bins or inputs, or covariances that are
        not positive definite.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params, lds_sample, kalman_filter
    >>> p = make_lds_params(0.9 * jnp.eye(2), jnp.ones((3, 2)))
    >>> _, y = lds_sample(jax.random.key(0), p, 50)
    >>> res = kalman_filter(p, y)
    >>> res.filtered_means.shape, res.filtered_covs.shape, bool(jnp.isfinite(res.log_likelihood))
    ((50, 2), (50, 2, 2), True)
    """
    params = _check_params(params)
    y, u, m = _check_trial(params, observations, inputs, mask)
    return _filter_jit(params, y, u, m)


def kalman_smoother(params: LDSParams, observations, inputs=None, mask=None) -> SmootherResult:
    """Rauch-Tung-Striebel smoother: posterior moments of every latent given all observations.

    Takes the same arguments, and raises the same errors, as :func:`kalman_filter`.
    ``smoothed_cross_covs[t]`` is :math:`\\mathrm{Cov}[x_{t+1}, x_t \\mid y]` (rows
    :math:`x_{t+1}`), so :math:`E[x_{t+1} x_t^\\top \\mid y]` is
    ``smoothed_cross_covs[t] + outer(smoothed_means[t + 1], smoothed_means[t])``.

    Returns
    -------
    SmootherResult

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params, lds_sample, kalman_smoother
    >>> p = make_lds_params(0.9 * jnp.eye(2), jnp.ones((3, 2)))
    >>> _, y = lds_sample(jax.random.key(0), p, 50)
    >>> post = kalman_smoother(p, y, mask=jnp.arange(50) % 10 != 3)
    >>> post.smoothed_means.shape, post.smoothed_cross_covs.shape
    ((50, 2), (49, 2, 2))
    """
    params = _check_params(params)
    y, u, m = _check_trial(params, observations, inputs, mask)
    return _rts_jit(params, _filter_jit(params, y, u, m))  # shares the filter's compiled code


def lds_log_likelihood(params: LDSParams, observations, inputs=None, mask=None) -> jax.Array:
    """Marginal log-likelihood :math:`\\log p(y_{0:T-1})` of one trial (observed bins only).

    Same arguments and errors as :func:`kalman_filter`; differentiable in ``params``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params, lds_sample, lds_log_likelihood
    >>> p = make_lds_params(0.9 * jnp.eye(2), jnp.ones((3, 2)))
    >>> _, y = lds_sample(jax.random.key(0), p, 50)
    >>> noisier = p._replace(observation_cov=10.0 * p.observation_cov)
    >>> bool(lds_log_likelihood(p, y) > lds_log_likelihood(noisier, y))
    True
    """
    return kalman_filter(params, observations, inputs, mask).log_likelihood


def lds_sample(key: jax.Array, params: LDSParams, n_time: int, inputs=None) -> tuple[jax.Array, jax.Array]:
    """Draw latents and observations for one trial.

    Parameters
    ----------
    key : jax.Array
        PRNG key; the same key gives the same draw.
    params : LDSParams
    n_time : int
        Number of time bins (>= 1).
    inputs : array_like, optional
        Shape ``(n_time, feature)``; required when ``params`` has input weights.

    Returns
    -------
    latents : Array
        Shape ``(time, latent)``.
    observations : Array
        Shape ``(time, neuron)``.

    Raises
    ------
    ValueError
        On a bad ``n_time``, bad parameters or inputs of the wrong shape.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params, lds_sample
    >>> p = make_lds_params(0.9 * jnp.eye(2), jnp.ones((3, 2)))
    >>> x, y = lds_sample(jax.random.key(1), p, 20)
    >>> x.shape, y.shape
    ((20, 2), (20, 3))
    """
    if isinstance(n_time, (bool, np.bool_)):
        raise ValueError(f"n_time must be a positive integer, got {n_time!r}")
    try:
        n_time = operator.index(n_time)
    except TypeError:
        raise ValueError(f"n_time must be a positive integer, got {n_time!r}") from None
    if n_time < 1:
        raise ValueError(f"n_time must be >= 1, got {n_time}")
    params = _check_params(params)
    _, u, _ = _check_trial(params, jnp.zeros((n_time, params.loadings.shape[0])), inputs, None)
    return _sample_jit(key, params, u)


def init_lds_params(
    observations, n_latents: int, *, inputs=None, mask=None, diagonal_observation_cov: bool = True
) -> LDSParams:
    """Starting parameters for EM from principal components of the observations.

    ``C`` spans the top ``n_latents`` principal components (scaled so the projected latents have
    unit variance), ``d`` is the mean, ``R`` the residual variance (floored at 1% of each
    neuron's variance), ``A`` and ``Q`` a least-squares AR(1) fit of the projected latents,
    :math:`m_0 = 0`, :math:`S_0 = I`, ``b = 0``; with ``inputs``, ``B`` and ``D`` start at zero.
    Deterministic.

    Parameters
    ----------
    observations : array_like or list of array_like
        ``(time, neuron)``, ``(trial, time, neuron)`` or a list of ``(time, neuron)`` trials.
    n_latents : int
        Number of latent dimensions, at most the number of neurons.
    inputs, mask : optional
        As in :func:`fit_lds_em`.
    diagonal_observation_cov : bool
        Start with (and so let EM keep) a diagonal ``R``.

    Returns
    -------
    LDSParams

    Raises
    ------
    ValueError
        On bad shapes or values, ``n_latents`` out of range, or a neuron with zero variance.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.kalman import init_lds_params
    >>> y = np.random.default_rng(0).normal(size=(100, 4))
    >>> init_lds_params(y, 2).loadings.shape
    (4, 2)
    """
    ys, us, ms = _as_trials(observations, inputs, mask)
    if not ys:
        raise ValueError("observations is an empty list of trials")
    n_neuron = np.shape(ys[0])[-1]
    is_int = isinstance(n_latents, (int, np.integer)) and not isinstance(n_latents, (bool, np.bool_))
    if not is_int or not 1 <= n_latents <= n_neuron:
        raise ValueError(
            f"n_latents must be an integer between 1 and the number of neurons ({n_neuron}), got {n_latents!r}"
        )
    F = 0 if us[0] is None else np.shape(us[0])[-1]
    probe = make_lds_params(
        np.zeros((n_latents, n_latents)), np.zeros((n_neuron, n_latents)),
        input_weights=np.zeros((n_latents, F)) if F else None,
        observation_input_weights=np.zeros((n_neuron, F)) if F else None,
    )
    trials = _check_trials(probe, ys, us, ms)
    obs = np.concatenate([np.asarray(y, np.float64)[np.asarray(m)] for y, _, m in trials])
    if obs.shape[0] < 2:
        raise ValueError("init_lds_params needs at least two observed bins")
    var = obs.var(0)
    if np.any(var <= 0):
        raise ValueError(
            f"neurons {np.flatnonzero(var <= 0).tolist()} have zero variance over the observed bins; drop them"
        )
    d = obs.mean(0)
    _, s, vt = np.linalg.svd(obs - d, full_matrices=False)
    scale = s[:n_latents] / np.sqrt(obs.shape[0])
    scale = np.where(scale > 0, scale, 1.0)
    C = vt[:n_latents].T * scale
    R = np.maximum(var - (C**2).sum(1), 0.01 * var)
    past, fut = [], []
    for y, _, m in trials:
        x = (np.asarray(y, np.float64) - d) @ vt[:n_latents].T / scale
        both = np.asarray(m)[1:] & np.asarray(m)[:-1]
        past.append(x[:-1][both])
        fut.append(x[1:][both])
    past, fut = np.concatenate(past), np.concatenate(fut)
    if past.shape[0] > n_latents:
        A = np.linalg.lstsq(past, fut, rcond=None)[0].T
        Q = np.cov((fut - past @ A.T).T, bias=True).reshape(n_latents, n_latents)
    else:
        A, Q = 0.9 * np.eye(n_latents), 0.1 * np.eye(n_latents)
    Q = Q + 1e-3 * np.eye(n_latents)
    dtype = probe.loadings.dtype
    return make_lds_params(
        jnp.asarray(A, dtype), jnp.asarray(C, dtype), dynamics_cov=jnp.asarray(Q, dtype),
        observation_cov=jnp.asarray(R if diagonal_observation_cov else np.diag(R), dtype),
        offset=jnp.asarray(d, dtype), input_weights=probe.input_weights,
        observation_input_weights=probe.observation_input_weights,
    )


_FIELDS = frozenset(LDSParams._fields)


def _check_fixed(fixed) -> frozenset:
    if isinstance(fixed, str) or not isinstance(fixed, Iterable):
        raise ValueError(f"fixed must be a collection of LDSParams field names, got {fixed!r}")
    fixed = frozenset(fixed)
    unknown = fixed - _FIELDS
    if unknown:
        raise ValueError(
            f"fixed names unknown LDSParams fields {sorted(unknown)}; choose from {sorted(_FIELDS)}"
        )
    return fixed


def _em_body(params: LDSParams, groups, fixed: frozenset):
    """One whole EM step (every group's E-step, the sum, the M-step): ``(new_params, log-lik)``."""
    stats = [_group_stats(params, *g) for g in groups]
    total = stats[0] if len(stats) == 1 else jax.tree.map(lambda *s: sum(s[1:], s[0]), *stats)
    return _m_step(params, total, fixed), total.log_likelihood


@cache
def _em_program(fixed: frozenset):
    """The EM step for the held names ``fixed``, jitted as ONE program (cached per ``fixed``, so
    refits with the same shapes reuse the compilation): ``step(params, groups)``."""
    return jit(lambda params, groups: _em_body(params, groups, fixed))


def _em_step(params: LDSParams, groups, fixed: frozenset) -> tuple[LDSParams, float]:
    new, ll = _em_program(fixed)(params, groups)
    return new, float(ll)


def lds_em_step(
    params: LDSParams, observations, *, inputs=None, mask=None, fixed: Sequence[str] = ()
) -> tuple[LDSParams, float]:
    """One EM step: smooth every trial under ``params``, then maximise the expected log-joint.

    The M-step is closed form: ``[A, B, b]`` and ``Q`` by expected least squares of
    :math:`x_t` on :math:`(x_{t-1}, u_t, 1)`; ``[C, D, d]`` and ``R`` likewise for
    :math:`y_t` on :math:`(x_t, u_t, 1)` over observed bins (``R`` stays diagonal when given as
    a vector); :math:`m_0, S_0` from the smoothed first states across trials. With a single
    trial :math:`S_0` shrinks towards the smoothed covariance of :math:`x_0`; fix it if that is
    unwanted.

    Parameters
    ----------
    params : LDSParams
        Current parameters.
    observations : array_like or list of array_like
        ``(time, neuron)``, ``(trial, time, neuron)``, or a list of ``(time, neuron)`` trials
        of any lengths (trials are padded to bucketed lengths and vmapped together per bucket).
    inputs : array_like or list of array_like, optional
        Matching ``(time, feature)`` per trial.
    mask : array_like or list of array_like, optional
        Matching boolean ``(time,)`` per trial; ``False`` marks a missing bin.
    fixed : collection of str
        :class:`LDSParams` field names to hold at their current values (e.g.
        ``("dynamics_bias", "offset")`` for centred data, or ``("dynamics_cov",)``).
        Input weights that are ``None`` stay ``None``.

    Returns
    -------
    new_params : LDSParams
    log_likelihood : float
        Total log-likelihood of all trials under the *old* ``params``.

    Raises
    ------
    ValueError
        As :func:`kalman_filter`, per trial; also for unknown names in ``fixed``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params, lds_sample, lds_em_step, lds_log_likelihood
    >>> p = make_lds_params(0.9 * jnp.eye(2), jnp.ones((3, 2)))
    >>> _, y = lds_sample(jax.random.key(0), p, 100)
    >>> new, ll_old = lds_em_step(p, y)
    >>> bool(lds_log_likelihood(new, y) >= ll_old)
    True
    """
    params = _check_params(params)
    fixed = _check_fixed(fixed)
    return _em_step(params, _prepare_trials(params, observations, inputs, mask), fixed)


def fit_lds_em(
    params: LDSParams,
    observations,
    *,
    max_iter: int = 100,
    inputs=None,
    mask=None,
    fixed: Sequence[str] = (),
    tol: float | None = None,
    progress: bool | None = None,
) -> EMResult:
    """Fit an LDS by maximum likelihood with EM (see :func:`lds_em_step` for the M-step).

    The loop is :func:`bayesneuro.engine.em.run_em`: the whole EM step (the E-step of every
    trial and the M-step) runs as one compiled program per call. Trials are padded to bucketed
    lengths and counts (:func:`bayesneuro._shapes.bucket_length`: at most 25% padding; padded
    bins and trials add nothing), so a second recording whose trials fall in the same buckets
    reuses the compiled program. The Kalman filter works in latent space (one Cholesky factor of
    ``R`` per step, then ``(latent, latent)`` algebra per bin), so a full ``R`` costs about what a
    diagonal one does.

    Parameters
    ----------
    params : LDSParams
        Starting point, e.g. from :func:`init_lds_params`.
    observations, inputs, mask, fixed
        As in :func:`lds_em_step`.
    max_iter : int
        Maximum number of EM steps.
    tol : float, optional
        Stop once one step changes the log-likelihood by at most ``tol * max(1, |log-likelihood|)``
        (the rule of :func:`~bayesneuro.engine.em.run_em`). Default: run all ``max_iter`` steps.
    progress : bool, optional
        Show a tqdm bar; default :func:`bayesneuro.infer.fit.progress_default`.

    Returns
    -------
    EMResult
        ``(params, log_likelihoods, converged)``.

    Raises
    ------
    ValueError
        On bad arguments (as :func:`lds_em_step`).
    FloatingPointError
        If the log-likelihood becomes non-finite.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.latent.kalman import make_lds_params, lds_sample, init_lds_params, fit_lds_em
    >>> p = make_lds_params(jnp.array([[0.9, 0.2], [-0.2, 0.9]]), jnp.ones((4, 2)).at[0, 1].set(-1.0))
    >>> trials = [lds_sample(k, p, 100)[1] for k in jax.random.split(jax.random.key(0), 3)]
    >>> fit = fit_lds_em(init_lds_params(trials, 2), trials, max_iter=20, progress=False)
    >>> len(fit.log_likelihoods), bool(fit.log_likelihoods[-1] > fit.log_likelihoods[0])
    (21, True)
    """
    from bayesneuro.engine.em import run_em  # lazy: keeps this module free of numpyro

    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
    params = _check_params(params)
    fixed = _check_fixed(fixed)
    groups = _prepare_trials(params, observations, inputs, mask)
    step = _em_program(fixed)
    params, trace = run_em(step, params, groups, max_iter=int(max_iter), tol=tol, progress=progress, desc="LDS EM")
    final = float(step(params, groups)[1])
    if not math.isfinite(final):
        raise FloatingPointError(
            "LDS EM: the log-likelihood of the final parameters is not finite; check for near-constant "
            "neurons or a collapsing covariance, or hold it with fixed="
        )
    return EMResult(params, np.append(np.asarray(trace.objective, float), final), bool(trace.converged))
