r"""Poisson linear dynamical system (PLDS): Laplace-EM and the :class:`PoissonLDS` estimator.

The model (Macke et al. 2011), for each trial independently and with shared parameters:

.. math::

    x_1 \sim \mathcal N(m_0, S_0), \qquad
    x_t = A x_{t-1} + B u_t + b + \epsilon_t, \ \epsilon_t \sim \mathcal N(0, Q), \qquad
    y_{t,n} \sim \operatorname{Poisson}\big(\Delta\, f(C_n x_t + d_n)\big),

with ``f`` = exp (or softplus) giving the rate in spikes/s, ``Delta`` the bin size and optional
inputs ``u`` (stimulus, behaviour). The first half of this module is pure JAX maths on padded
trial batches (arrays ``(trial, time, ...)`` with a ``(trial, time)`` mask): the log joint,
Newton's method on the latent path with the block-tridiagonal Hessian (O(T K^3) per
iteration, see :mod:`bayesneuro.latent._blocktri`), the Laplace posterior, and the EM
M-step. The second half is the estimator.

Padding is exact: bins past a trial's end have no observations, so their latents follow the
prior's transitions and integrate out (the mode, covariances and Laplace marginal likelihood of
the real bins do not change).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.scipy.special import gammaln
from scipy import stats as _stats

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from .._shapes import bucket_length
from ..data import SpikeData
from ..engine.newton import newton
from ..estimator import Estimator, resolve_key
from ..infer._model import as_key
from . import _blocktri as bt

__all__ = [
    "LINKS",
    "DynamicsSummary",
    "LaplacePosterior",
    "PLDSParams",
    "PLDSSimulation",
    "PoissonLDS",
    "cosmoothing_bits_per_spike",
    "laplace_posterior",
    "latent_hessian",
    "m_step",
    "neg_log_joint",
    "simulate_plds",
    "trial_laplace",
]

LINKS = ("exp", "softplus")
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_GH_WEIGHTS = _GH_WEIGHTS / np.sqrt(2.0 * np.pi)  # E[g(z)], z ~ N(0, 1)


class PLDSParams(NamedTuple):
    """Parameters of a Poisson LDS with ``K`` latents, ``N`` neurons and ``P`` inputs.

    Attributes
    ----------
    initial_mean : Array, shape (K,)
        ``m0``, mean of the first latent state of each trial.
    initial_cov : Array, shape (K, K)
        ``S0``, its covariance.
    dynamics : Array, shape (K, K)
        ``A`` (rows: latent at ``t``; columns: latent at ``t - 1``).
    dynamics_bias : Array, shape (K,)
        ``b``.
    input_weights : Array, shape (K, P)
        ``B`` (``P = 0`` without inputs).
    dynamics_cov : Array, shape (K, K)
        ``Q``, covariance of the innovations.
    loadings : Array, shape (N, K)
        ``C``, loadings of the log-rates (exp link) on the latents.
    offset : Array, shape (N,)
        ``d``; with the exp link, the log-rate (spikes/s) at ``x = 0``.
    """

    initial_mean: jax.Array
    initial_cov: jax.Array
    dynamics: jax.Array
    dynamics_bias: jax.Array
    input_weights: jax.Array
    dynamics_cov: jax.Array
    loadings: jax.Array
    offset: jax.Array


class LaplacePosterior(NamedTuple):
    """Gaussian (Laplace) approximation of the latent path posterior, per trial.

    Arrays carry a leading ``trial`` axis from :func:`laplace_posterior` and none from
    :func:`trial_laplace`. Entries past a trial's end are padding.

    Attributes
    ----------
    mean : Array, shape (trial, time, K)
        Posterior mode of the path.
    cov : Array, shape (trial, time, K, K)
        ``Cov(x_t)``: diagonal blocks of the inverse Hessian.
    cross_cov : Array, shape (trial, time - 1, K, K)
        ``Cov(x_{t+1}, x_t)``.
    log_marginal : Array, shape (trial,)
        Laplace approximation of ``log p(y)`` (nats).
    n_newton : Array, shape (trial,)
        Newton iterations taken.
    """

    mean: jax.Array
    cov: jax.Array
    cross_cov: jax.Array
    log_marginal: jax.Array
    n_newton: jax.Array


# ----------------------------------------------------------------------------------------------
# observation model
# ----------------------------------------------------------------------------------------------


def _log_mu(eta, bin_size, link):
    """Log expected count ``log(dt f(eta))``."""
    if link == "exp":
        return eta + jnp.log(bin_size)
    return jnp.log(bin_size * jnp.maximum(jax.nn.softplus(eta), jnp.finfo(eta.dtype).tiny))


def _poisson_ll(y, eta, bin_size, link):
    """Poisson log-pmf of counts ``y`` with expected count ``dt f(eta)``, elementwise."""
    log_mu = _log_mu(eta, bin_size, link)
    return y * log_mu - jnp.exp(log_mu) - gammaln(y + 1.0)


def _curvature(y, eta, bin_size, link):
    """``-d^2/deta^2`` of the Poisson log-pmf (>= 0: the log-likelihood is concave)."""
    if link == "exp":
        return bin_size * jnp.exp(eta)
    f = jnp.maximum(jax.nn.softplus(eta), jnp.finfo(eta.dtype).tiny)
    s = jax.nn.sigmoid(eta)
    f2 = s * (1.0 - s)
    return y * (s**2 - f2 * f) / f**2 + bin_size * f2


def _rate(eta, link):
    return jnp.exp(eta) if link == "exp" else jax.nn.softplus(eta)


def _expected_rate(m, v, link):
    """``E[f(eta)]`` for ``eta ~ N(m, v)`` (closed form for exp, Gauss-Hermite otherwise)."""
    if link == "exp":
        return jnp.exp(m + 0.5 * v)
    eta = m[..., None] + jnp.sqrt(jnp.maximum(v, 0.0))[..., None] * _GH_NODES
    return jnp.sum(_GH_WEIGHTS * jax.nn.softplus(eta), axis=-1)


# ----------------------------------------------------------------------------------------------
# log joint and its block-tridiagonal Hessian (one trial)
# ----------------------------------------------------------------------------------------------


def neg_log_joint(latents, params: PLDSParams, counts, inputs, mask, *, bin_size, link="exp"):
    """``-log p(y, x)`` of one trial's latent path ``x`` (nats).

    Parameters
    ----------
    latents : Array, shape (time, K)
        The path ``x``.
    params : PLDSParams
    counts : Array, shape (time, N)
    inputs : Array, shape (time, P)
        ``u`` (``P`` may be 0); ``u_t`` drives the transition into bin ``t``.
    mask : Array, shape (time,), bool
        True on real bins (padding bins carry no observations).
    bin_size : float
        Seconds.
    link : {"exp", "softplus"}

    Returns
    -------
    Array
        Scalar.
    """
    x = latents
    lp = _gauss_logpdf(x[:1] - params.initial_mean, params.initial_cov)
    if x.shape[0] > 1:
        pred = x[:-1] @ params.dynamics.T + inputs[1:] @ params.input_weights.T + params.dynamics_bias
        lp = lp + _gauss_logpdf(x[1:] - pred, params.dynamics_cov)
    eta = jnp.where(mask[:, None], x @ params.loadings.T + params.offset, 0.0)
    ll = jnp.where(mask[:, None], _poisson_ll(counts, eta, bin_size, link), 0.0)
    return -(lp + jnp.sum(ll))


def _gauss_logpdf(resid, cov):
    """Sum over rows of ``log N(resid_i; 0, cov)`` (``cov`` is shared, so its inverse is formed once)."""
    chol = jnp.linalg.cholesky(cov)
    prec = _sym_inv(cov)
    n, k = resid.shape
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol)))
    quad = jnp.einsum("ti,ij,tj->", resid, prec, resid)
    return -0.5 * quad - n * half_logdet - 0.5 * n * k * jnp.log(2.0 * jnp.pi)


def _sym_inv(m):
    chol = jnp.linalg.cholesky(m)
    out = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(m.shape[-1], dtype=m.dtype))
    return 0.5 * (out + out.T)


def _prior_blocks(params: PLDSParams, n_time: int):
    """Block-tridiagonal precision of the LDS prior over one path of ``n_time`` bins."""
    q_inv = _sym_inv(params.dynamics_cov)
    s0_inv = _sym_inv(params.initial_cov)
    a = params.dynamics
    k = a.shape[0]
    atqa = a.T @ q_inv @ a
    diag = jnp.broadcast_to(q_inv + atqa, (n_time, k, k))
    diag = diag.at[0].set(s0_inv + atqa).at[-1].add(-atqa)
    sub = jnp.broadcast_to(-q_inv @ a, (n_time - 1, k, k))
    return diag, sub


def latent_hessian(latents, params: PLDSParams, counts, inputs, mask, *, bin_size, link="exp"):
    """Hessian of :func:`neg_log_joint` in the path, as block-tridiagonal blocks.

    The prior contributes the LDS precision; the observations a block-diagonal
    ``C^T diag(w_t) C`` with ``w_t = -d^2 log p(y_t | eta_t) / d eta_t^2`` (``dt exp(eta)``
    for the exp link).

    Returns
    -------
    diag : Array, shape (time, K, K)
    sub : Array, shape (time - 1, K, K)
    """
    diag, sub = _prior_blocks(params, latents.shape[0])
    eta = jnp.where(mask[:, None], latents @ params.loadings.T + params.offset, 0.0)
    w = jnp.where(mask[:, None], _curvature(counts, eta, bin_size, link), 0.0)
    c = params.loadings
    return diag + jnp.einsum("tn,nk,nl->tkl", w, c, c), sub


def _blocktri_solve(hess, grad):
    """Newton step ``H^{-1} g`` for a block-tridiagonal ``H = (diag, sub)``, in O(T K^3)."""
    return bt.solve(bt.cholesky(*hess), grad)


def trial_laplace(
    params: PLDSParams, counts, inputs, mask, init, *, bin_size, link="exp", max_iter=50, tol=1e-10
) -> LaplacePosterior:
    """Laplace posterior of one trial's path: Newton mode, selected inverse of the Hessian.

    The mode is found by :func:`bayesneuro.engine.newton.newton` with the analytic
    block-tridiagonal Hessian (:func:`latent_hessian`) and a block-tridiagonal solve, so each
    iteration costs O(T K^3); steps are halved until the log joint increases (Armijo).

    Parameters
    ----------
    params : PLDSParams
    counts, inputs, mask
        As in :func:`neg_log_joint`.
    init : Array, shape (time, K)
        Starting path.
    bin_size : float
    link : {"exp", "softplus"}
    max_iter : int
        Most Newton iterations.
    tol : float
        Relative tolerance of the engine's stopping rule: stop when half the Newton decrement
        (the predicted gain, nats) is at most ``tol * max(1, |log joint|)``, after taking that
        last step (Newton converges quadratically, so the mode is then exact to rounding).

    Returns
    -------
    LaplacePosterior
        Without the trial axis.
    """
    kw = {"bin_size": bin_size, "link": link}

    def objective(x, p, y, u, m):
        return neg_log_joint(x, p, y, u, m, **kw)

    def derivatives(x, p, y, u, m):
        return jax.grad(objective)(x, p, y, u, m), latent_hessian(x, p, y, u, m, **kw)

    res = newton(
        objective, init, params, counts, inputs, mask, derivatives=derivatives, solve=_blocktri_solve,
        max_iter=max_iter, tol=tol,
    )
    x = res.x
    chol = bt.cholesky(*latent_hessian(x, params, counts, inputs, mask, **kw))
    cov, cross = bt.selected_inverse(chol)
    d = x.size
    log_marginal = -res.value + 0.5 * d * jnp.log(2.0 * jnp.pi) - 0.5 * bt.logdet(chol)
    return LaplacePosterior(x, cov, cross, log_marginal, res.n_iter)


@functools.partial(jit, static_argnames=("link", "max_iter"))
def laplace_posterior(
    params: PLDSParams, counts, inputs, mask, init, *, bin_size, link="exp", max_iter=50, tol=1e-10
) -> LaplacePosterior:
    """:func:`trial_laplace` for a padded batch of trials (vmapped; jitted).

    Parameters
    ----------
    params : PLDSParams
    counts : Array, shape (trial, time, N)
    inputs : Array, shape (trial, time, P)
    mask : Array, shape (trial, time), bool
    init : Array, shape (trial, time, K)
    bin_size, link, max_iter, tol
        As in :func:`trial_laplace`.

    Returns
    -------
    LaplacePosterior
    """
    one = functools.partial(trial_laplace, bin_size=bin_size, link=link, max_iter=max_iter, tol=tol)
    return jax.vmap(one, in_axes=(None, 0, 0, 0, 0))(params, counts, inputs, mask, init)


# ----------------------------------------------------------------------------------------------
# M-step
# ----------------------------------------------------------------------------------------------


def _loadings_objective(theta, y, mu, cov, mask, bin_size, link):
    """Minus the expected Poisson log-likelihood of one neuron under the Gaussian posterior."""
    c, d = theta[:-1], theta[-1]
    m = mu @ c + d
    v = jnp.einsum("...kl,k,l->...", cov, c, c)
    if link == "exp":  # E[exp(c'x + d)] = exp(c'mu + d + c' Sigma c / 2)
        val = y * (m + jnp.log(bin_size)) - bin_size * jnp.exp(m + 0.5 * v)
    else:
        eta = m[..., None] + jnp.sqrt(jnp.maximum(v, 1e-300))[..., None] * _GH_NODES
        f = jax.nn.softplus(eta)
        val = jnp.sum(_GH_WEIGHTS * (y[..., None] * _log_mu(eta, bin_size, link) - bin_size * f), -1)
    return -jnp.sum(jnp.where(mask, val, 0.0))


def _loadings_derivatives(theta, y, mu, cov, mask, bin_size):
    r"""Gradient and dense Hessian of :func:`_loadings_objective` for the exp link, in closed form.

    With :math:`e_t = dt \exp(c^T\mu_t + d + c^T\Sigma_t c/2)` and :math:`a_t = \mu_t + \Sigma_t c`
    (``cov`` symmetric): :math:`\partial_c = \sum_t (e_t a_t - y_t \mu_t)`,
    :math:`\partial_d = \sum_t (e_t - y_t)`, :math:`\partial_{cc} = \sum_t e_t (a_t a_t^T + \Sigma_t)`,
    :math:`\partial_{cd} = \sum_t e_t a_t`, :math:`\partial_{dd} = \sum_t e_t` (sums over real bins).
    A much smaller program than ``jax.hessian`` of the objective.
    """
    c, d = theta[:-1], theta[-1]
    sc = cov @ c
    e = jnp.where(mask, bin_size * jnp.exp(mu @ c + d + 0.5 * (sc @ c)), 0.0)
    ym = jnp.where(mask, y, 0.0)
    a = mu + sc
    ea = jnp.einsum("rt,rtk->k", e, a)
    grad = jnp.concatenate([ea - jnp.einsum("rt,rtk->k", ym, mu), (jnp.sum(e) - jnp.sum(ym))[None]])
    hcc = jnp.einsum("rt,rtk,rtl->kl", e, a, a) + jnp.einsum("rt,rtkl->kl", e, cov)
    top = jnp.concatenate([hcc, ea[:, None]], axis=1)
    hess = jnp.concatenate([top, jnp.concatenate([ea, jnp.sum(e)[None]])[None]], axis=0)
    return grad, hess


def _fit_loadings(params: PLDSParams, post: LaplacePosterior, counts, mask, bin_size, link, max_iter):
    """Newton per neuron on ``(C_n, d_n)`` (concave objective; the engine's dense Newton, vmapped;
    closed-form derivatives for the exp link, automatic ones otherwise)."""
    theta0 = jnp.concatenate([params.loadings, params.offset[:, None]], axis=1)
    cov = 0.5 * (post.cov + jnp.swapaxes(post.cov, -1, -2))
    derivatives = None
    if link == "exp":
        derivatives = lambda th, y: _loadings_derivatives(th, y, post.mean, cov, mask, bin_size)

    def one(theta, y):
        obj = lambda th, y: _loadings_objective(th, y, post.mean, post.cov, mask, bin_size, link)
        return newton(obj, theta, y, derivatives=derivatives, max_iter=max_iter, tol=1e-10).x

    theta = jax.vmap(one, in_axes=(0, 2))(theta0, counts)
    return theta[:, :-1], theta[:, -1]


def m_step(
    post: LaplacePosterior, params: PLDSParams, counts, inputs, mask, *, bin_size, link="exp",
    max_iter=20, jitter=1e-9,
) -> PLDSParams:
    r"""EM update of every parameter from the Laplace moments.

    ``m0, S0`` are the mean and covariance of the first states over trials; ``[A, B, b]`` the
    regression of ``x_{t+1}`` on ``[x_t, u_{t+1}, 1]`` with expected sufficient statistics
    (using the cross-covariances), and ``Q`` its expected residual covariance, all in closed
    form. ``C, d`` maximise the expected Poisson log-likelihood per neuron by Newton's method;
    for the exp link

    .. math:: E[\exp(c^T x + d)] = \exp(c^T \mu + d + c^T \Sigma c / 2).

    Parameters
    ----------
    post : LaplacePosterior
        Batch posterior (with the trial axis).
    params : PLDSParams
        Current parameters (the start of the loadings Newton iterations).
    counts, inputs, mask
        Padded batch, as in :func:`laplace_posterior`.
    bin_size, link
    max_iter : int
        Newton iterations per neuron.
    jitter : float
        Added to the diagonals of the covariance estimates.

    Returns
    -------
    PLDSParams
    """
    k = post.mean.shape[-1]
    eye = jnp.eye(k, dtype=post.mean.dtype)
    mu = jnp.where(mask[..., None], post.mean, 0.0)
    cov = jnp.where(mask[..., None, None], post.cov, 0.0)
    post = post._replace(mean=mu, cov=cov)
    # initial state, over the trials with a real bin (a fully masked trial pads the trial count)
    tw = jnp.any(mask, axis=1).astype(mu.dtype)
    n_tw = jnp.sum(tw)
    m0 = jnp.einsum("r,rk->k", tw, mu[:, 0]) / n_tw
    dm = mu[:, 0] - m0
    s0 = jnp.einsum("r,rkl->kl", tw, cov[:, 0] + dm[:, :, None] * dm[:, None, :]) / n_tw
    s0 = 0.5 * (s0 + s0.T) + jitter * eye
    # dynamics: regress x_{t+1} on z_t = [x_t, u_{t+1}, 1]
    w = mask[:, 1:].astype(mu.dtype)
    xp, xn, un = mu[:, :-1], mu[:, 1:], inputs[:, 1:]
    z = jnp.concatenate([xp, un, jnp.ones(xp.shape[:-1] + (1,), xp.dtype)], axis=-1)
    dz = z.shape[-1]
    pad = [(0, 0), (0, 0), (0, dz - k), (0, dz - k)]
    szz = jnp.einsum("rt,rti,rtj->ij", w, z, z) + jnp.einsum("rt,rtij->ij", w, jnp.pad(cov[:, :-1], pad))
    sxz = jnp.einsum("rt,rti,rtj->ij", w, xn, z) + jnp.einsum(
        "rt,rtij->ij", w, jnp.pad(post.cross_cov, [(0, 0), (0, 0), (0, 0), (0, dz - k)])
    )
    sxx = jnp.einsum("rt,rti,rtj->ij", w, xn, xn) + jnp.einsum("rt,rtij->ij", w, cov[:, 1:])
    ridge = 1e-10 * jnp.trace(szz) / dz * jnp.eye(dz, dtype=szz.dtype)
    wmat = jnp.linalg.solve(szz + ridge, sxz.T).T  # [A, B, b]
    q = (sxx - wmat @ sxz.T) / jnp.sum(w)
    q = 0.5 * (q + q.T) + jitter * eye
    c, d = _fit_loadings(params, post, counts, mask, bin_size, link, max_iter)
    return PLDSParams(m0, s0, wmat[:, :k], wmat[:, -1], wmat[:, k:-1], q, c, d)


@functools.cache
def _em_program(link: str, max_newton: int):
    """One whole Laplace-EM iteration (E-step and M-step) as ONE jitted program of
    ``(params, path)``, for :func:`bayesneuro.engine.em.run_em`.

    ``step((params, path, log_marginal), counts, inputs, mask, bin_size, newton_tol)`` returns
    the new parameters with the posterior mode (the next E-step's Newton start) and the Laplace
    ``log p(y)`` of each trial at the *old* parameters (0 for a fully masked padding trial), and
    their sum. One more call after the loop gives the posterior at the fitted parameters, so the
    fit compiles no separate E-step program. Cached per (link, max_newton), so refits reuse it.
    """

    def step(state, counts, inputs, mask, bin_size, newton_tol):
        params, path, _ = state
        post = laplace_posterior(
            params, counts, inputs, mask, path, bin_size=bin_size, link=link, max_iter=max_newton, tol=newton_tol
        )
        new = m_step(post, params, counts, inputs, mask, bin_size=bin_size, link=link)
        log_marginal = jnp.where(jnp.any(mask, axis=1), post.log_marginal, 0.0)
        return (new, post.mean, log_marginal), jnp.sum(log_marginal)

    return jit(step)


# ----------------------------------------------------------------------------------------------
# simulation, scores, initialisation
# ----------------------------------------------------------------------------------------------


def simulate_plds(key, params: PLDSParams, *, n_trials: int, n_time: int, bin_size: float, link="exp", inputs=None):
    """Draw latent paths and counts from a PLDS.

    Parameters
    ----------
    key : jax.random key or int
        Required.
    params : PLDSParams
    n_trials, n_time : int
        Independent trials of ``n_time`` bins each.
    bin_size : float
        Seconds.
    link : {"exp", "softplus"}
    inputs : array_like, shape (n_trials, n_time, P), optional
        Required when ``params.input_weights`` has columns.

    Returns
    -------
    latents : numpy.ndarray, shape (n_trials, n_time, K)
    counts : numpy.ndarray, shape (n_trials, n_time, N), int64
    rates : numpy.ndarray, shape (n_trials, n_time, N)
        Spikes/s.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, simulate_plds
    >>> p = PLDSParams(np.zeros(1), np.eye(1), 0.9 * np.eye(1), np.zeros(1), np.zeros((1, 0)),
    ...                0.1 * np.eye(1), np.ones((3, 1)), np.full(3, 2.0))
    >>> x, y, r = simulate_plds(0, p, n_trials=2, n_time=50, bin_size=0.01)
    >>> x.shape, y.shape
    ((2, 50, 1), (2, 50, 3))
    """
    key = as_key(key)
    p = PLDSParams(*(jnp.asarray(v, dtype=jnp.zeros(()).dtype) for v in params))
    k, n_in = p.input_weights.shape
    if inputs is None:
        if n_in:
            raise ValueError(f"the model has {n_in} inputs; pass inputs of shape (n_trials, n_time, {n_in})")
        inputs = jnp.zeros((n_trials, n_time, 0))
    inputs = jnp.asarray(inputs, dtype=p.dynamics.dtype)
    if inputs.shape != (n_trials, n_time, n_in):
        raise ValueError(f"inputs must have shape ({n_trials}, {n_time}, {n_in}), got {inputs.shape}")
    k0, k1, k2 = jax.random.split(key, 3)
    x0 = jax.random.multivariate_normal(k0, p.initial_mean, p.initial_cov, (n_trials,))
    eps = jax.random.multivariate_normal(k1, jnp.zeros(k), p.dynamics_cov, (n_time - 1, n_trials))

    def step(x, blocks):
        e, u = blocks
        x = x @ p.dynamics.T + u @ p.input_weights.T + p.dynamics_bias + e
        return x, x

    _, xs = jax.lax.scan(step, x0, (eps, jnp.swapaxes(inputs[:, 1:], 0, 1)))
    x = jnp.concatenate([x0[None], xs], axis=0).swapaxes(0, 1)
    rates = _rate(x @ p.loadings.T + p.offset, link)
    counts = jax.random.poisson(k2, rates * bin_size)
    return np.asarray(x), np.asarray(counts).astype(np.int64), np.asarray(rates)


def cosmoothing_bits_per_spike(counts, rates, bin_size: float, *, per_neuron: bool = False):
    r"""Co-smoothing score of predicted rates, in bits per spike (Neural Latents Benchmark).

    .. math::

        \mathrm{bits/spike} = \frac{\log L(\hat\lambda) - \log L(\bar\lambda)}{n_\mathrm{spikes} \ln 2},

    Poisson log-likelihoods of ``counts`` with expected counts ``rates * bin_size`` and with the
    constant mean count of each neuron over ``counts`` (the null), summed over bins and neurons.
    In co-smoothing, ``counts`` are held-out neurons whose rates were predicted from latents
    inferred from the other neurons only.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
    rates : array_like, shape (time, neuron)
        Predicted rates in spikes/s.
    bin_size : float
        Seconds.
    per_neuron : bool
        One value per neuron (NaN for a neuron without spikes) instead of the pooled score.

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import cosmoothing_bits_per_spike
    >>> y = np.array([[0], [1], [0], [3]])
    >>> cosmoothing_bits_per_spike(y, np.full((4, 1), 10.0), 0.1)  # the mean rate scores 0
    0.0
    >>> cosmoothing_bits_per_spike(y, np.array([[1.0], [10.0], [1.0], [30.0]]), 0.1) > 0
    True
    """
    y = np.asarray(counts, dtype=float)
    mu = np.asarray(rates, dtype=float) * float(bin_size)
    if y.shape != mu.shape or y.ndim != 2:
        raise ValueError(f"counts and rates must both be (time, neuron), got {y.shape} and {mu.shape}")
    ll = _stats.poisson.logpmf(y, mu).sum(axis=0)
    null = _stats.poisson.logpmf(y, np.broadcast_to(y.mean(axis=0), y.shape)).sum(axis=0)
    n = y.sum(axis=0)
    if per_neuron:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, (ll - null) / (n * np.log(2.0)), np.nan)
    if n.sum() == 0:
        raise ValueError("the held-out counts have no spikes; bits per spike is undefined")
    return float((ll - null).sum() / (n.sum() * np.log(2.0)))


def _initial_params(counts, inputs, seg, *, n_latents, bin_size, smoothing, link):
    """PCA of smoothed log-rates, then least squares for the dynamics (deterministic)."""
    from scipy.ndimage import gaussian_filter1d

    y = np.asarray(counts, dtype=float)
    mean = y.mean(axis=0)
    sigma = max(smoothing / bin_size, 1.0)
    sm = np.empty_like(y)
    for s in np.unique(seg):
        idx = seg == s
        sm[idx] = gaussian_filter1d(y[idx], sigma, axis=0, mode="nearest")
    z = np.log(sm + 0.1 * mean)
    z -= z.mean(axis=0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    v = vt[:n_latents].T
    v *= np.where(v.sum(axis=0) < 0, -1.0, 1.0)  # sign convention
    x = z @ v
    sd = x.std(axis=0)
    x /= sd
    c = v * sd
    rate = mean / bin_size
    if link == "exp":
        d = np.log(rate) - 0.5 * np.sum(c**2, axis=1)
    else:  # softplus^{-1}
        d = np.where(rate > 30.0, rate, np.log(np.expm1(np.minimum(rate, 30.0))))
    pairs = np.flatnonzero(seg[1:] == seg[:-1])
    reg = np.concatenate([x[pairs], inputs[pairs + 1], np.ones((len(pairs), 1))], axis=1)
    w, *_ = np.linalg.lstsq(reg, x[pairs + 1], rcond=None)
    w = w.T
    a = w[:, :n_latents]
    rho = np.abs(np.linalg.eigvals(a)).max()
    if rho > 0.99:
        a = a * (0.99 / rho)
    resid = x[pairs + 1] - reg @ np.concatenate([a, w[:, n_latents:]], axis=1).T
    q = np.cov(resid, rowvar=False).reshape(n_latents, n_latents) + 1e-3 * np.eye(n_latents)
    starts = np.r_[0, np.flatnonzero(np.diff(seg)) + 1]
    params = PLDSParams(
        x[starts].mean(axis=0), np.eye(n_latents), a, w[:, -1], w[:, n_latents:-1], q, c, d
    )
    return params, x


# ----------------------------------------------------------------------------------------------
# the estimator
# ----------------------------------------------------------------------------------------------


class DynamicsSummary(NamedTuple):
    """Output of :meth:`PoissonLDS.dynamics_summary`.

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (K,), complex
        Eigenvalues of ``A``, by decreasing modulus (invariant to the latent basis).
    timescales : numpy.ndarray, shape (K,)
        Decay time constants ``-dt / log|lambda|`` in seconds (inf for ``|lambda| = 1``;
        negative for a growing mode, whose magnitude is then the growth time constant).
    frequencies : numpy.ndarray, shape (K,)
        Rotation frequencies ``angle(lambda) / (2 pi dt)`` in Hz (a complex pair gives +f, -f).
    fixed_point : numpy.ndarray, shape (K,) or None
        ``x* = (I - A)^{-1} b`` (with zero inputs); None when ``I - A`` is singular.
    """

    eigenvalues: np.ndarray
    timescales: np.ndarray
    frequencies: np.ndarray
    fixed_point: np.ndarray | None


class PLDSSimulation(NamedTuple):
    """Output of :meth:`PoissonLDS.simulate`.

    Attributes
    ----------
    data : SpikeData
        Simulated counts, trials ``0, ..., n_trials - 1`` laid end to end (with the inputs as
        covariates when the model has inputs).
    latents : numpy.ndarray, shape (time, K)
        The latent path, aligned with ``data``.
    rates : numpy.ndarray, shape (time, neuron)
        Rates in spikes/s.
    """

    data: SpikeData
    latents: np.ndarray
    rates: np.ndarray


class _Batch(NamedTuple):
    counts: jax.Array  # (trial, time, neuron)
    inputs: jax.Array  # (trial, time, feature)
    mask: jax.Array  # (trial, time)
    seg: np.ndarray  # (n_time,) trial position of each bin
    pos: np.ndarray  # (n_time,) bin within its trial


_EM_OPTIONS = {"max_newton": 50, "newton_tol": 1e-10}
_DRAW_SITES = ("initial_mean", "initial_scale", "dynamics", "dynamics_bias", "input_weights", "dynamics_scale",
               "loadings", "offset")


#: Relative dip of the Laplace-EM objective tolerated without a warning: the E-step is a Laplace
#: approximation, so the objective is not exactly monotone (dips of ~1e-6 relative are seen).
_LAPLACE_EM_DIP = 1e-4


class PoissonLDS(Estimator):
    r"""Poisson linear dynamical system: latent linear dynamics behind population spike counts.

    .. math::

        x_1 \sim \mathcal N(m_0, S_0), \quad x_t = A x_{t-1} + B u_t + b + \mathcal N(0, Q),
        \quad y_{t,n} \sim \operatorname{Poisson}(\Delta f(C_n x_t + d_n)),

    per trial (trials are independent and share the parameters). ``fit`` by Laplace-EM
    (Macke et al. 2011): a Newton E-step on each trial's path with the block-tridiagonal
    Hessian, O(T K^3) per iteration, Laplace moments, and a closed-form M-step for the dynamics
    (Newton for ``C, d``); or by ``"svi"`` / ``"nuts"`` on :func:`~bayesneuro.latent._plds_model.plds_model`
    through :func:`bayesneuro.infer.fit`.

    Parameters
    ----------
    n_latents : int
        Latent dimensionality ``K`` (at most the number of neurons).
    link : {"exp", "softplus"}
        ``f``, from the linear predictor to the rate in spikes/s.
    inputs : bool or sequence of str, default False
        Drive the latents with the data's covariates ``u`` (True: all of them; names: those).

    Attributes
    ----------
    dynamics_, dynamics_bias_, input_weights_, dynamics_cov_ : numpy.ndarray
        ``A`` (latent, latent_from), ``b`` (latent,), ``B`` (latent, feature),
        ``Q`` (latent, latent_from).
    loadings_, offset_ : numpy.ndarray
        ``C`` (neuron, latent), ``d`` (neuron,).
    initial_mean_, initial_cov_ : numpy.ndarray
        ``m0`` (latent,), ``S0`` (latent, latent_from).
    params_ : PLDSParams
        All of them.
    log_likelihood_trace_ : numpy.ndarray or None
        Laplace-EM: the Laplace-approximated ``log p(y)`` of the training data at the
        initialisation and after each iteration (increases overall); None for svi/nuts.
    n_iter_ : int or None
        Laplace-EM: EM iterations run.
    converged_ : bool or None
        Laplace-EM: whether the change of the log-likelihood fell below ``tol`` times its
        magnitude (:func:`bayesneuro.engine.em.run_em`).
    result_ : FitResult or None
        The :func:`bayesneuro.infer.fit` result (svi/nuts); point estimates are its
        posterior means.
    neuron_ids_, feature_names_, bin_size_, method_
        What the model was fitted to, and how.

    References
    ----------
    Macke, J. H., Buesing, L., Cunningham, J. P., Yu, B. M., Shenoy, K. V., Sahani, M. (2011).
    Empirical models of spiking in neural populations. NeurIPS 24.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> th = 0.2
    >>> true = PoissonLDS.from_params(PLDSParams(
    ...     np.zeros(2), np.eye(2), 0.97 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]),
    ...     np.zeros(2), np.zeros((2, 0)), 0.02 * np.eye(2),
    ...     np.random.default_rng(0).normal(size=(12, 2)), np.full(12, 2.5)), bin_size=0.02)
    >>> sim = true.simulate(3, 100, key=0)
    >>> model = PoissonLDS(2).fit(sim.data, max_iter=30, progress=False)
    >>> model.transform(sim.data)["mean"].dims
    ('time', 'latent')
    >>> model.log_likelihood(sim.data).shape  # one Laplace log p(counts) per trial
    (3,)
    """

    #: :meth:`score` is co-smoothing bits per spike.
    score_unit = "bits/spike"
    #: :meth:`log_likelihood` has one value per trial (the latent paths tie a trial's bins).
    log_likelihood_dim = "trial"

    def __init__(self, n_latents: int, *, link: str = "exp", inputs: bool | Sequence[str] = False):
        if isinstance(n_latents, bool) or not isinstance(n_latents, (int, np.integer)) or n_latents < 1:
            raise ValueError(f"n_latents must be a positive integer, got {n_latents!r}")
        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, got {link!r}")
        if not isinstance(inputs, (bool, np.bool_)):
            if isinstance(inputs, str) or not all(isinstance(f, str) for f in inputs):
                raise ValueError(f"inputs must be True/False or a sequence of feature names, got {inputs!r}")
            if not len(inputs):
                raise ValueError("inputs names no features; use inputs=False for a model without inputs")
        self.n_latents = n_latents
        self.link = link
        self.inputs = inputs
        self.params_ = None
        self.result_ = None
        self.log_likelihood_trace_ = None

    # -- construction from known parameters ----------------------------------------------------

    @classmethod
    def from_params(
        cls, params: PLDSParams, *, bin_size: float, link: str = "exp", neuron_ids: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> PoissonLDS:
        """A fitted-state model with given parameters (ground truth for simulations and scores).

        Parameters
        ----------
        params : PLDSParams
        bin_size : float
            Seconds.
        link : {"exp", "softplus"}
        neuron_ids : array_like, optional
            Default ``0, ..., N - 1``.
        feature_names : sequence of str, optional
            Names of the inputs (required when ``params.input_weights`` has columns).
        """
        p = PLDSParams(*(np.asarray(v, dtype=float) for v in params))
        k, n_in = p.input_weights.shape
        names = tuple(feature_names or ())
        if len(names) != n_in:
            raise ValueError(f"params have {n_in} inputs, so give {n_in} feature_names (got {len(names)})")
        model = cls(k, link=link, inputs=names if n_in else False)
        model._set_params(p)
        model.neuron_ids_ = np.arange(p.loadings.shape[0]) if neuron_ids is None else np.asarray(neuron_ids)
        model.feature_names_ = names
        model.bin_size_ = float(bin_size)
        model.method_ = "given"
        return model

    def _set_params(self, params: PLDSParams) -> None:
        p = PLDSParams(*(np.asarray(v, dtype=float) for v in params))
        self.params_ = p
        self.initial_mean_, self.initial_cov_ = p.initial_mean, p.initial_cov
        self.dynamics_, self.dynamics_bias_ = p.dynamics, p.dynamics_bias
        self.input_weights_, self.dynamics_cov_ = p.input_weights, p.dynamics_cov
        self.loadings_, self.offset_ = p.loadings, p.offset

    # -- data handling -------------------------------------------------------------------------

    def _features(self, data: SpikeData) -> tuple[str, ...]:
        if isinstance(self.inputs, (bool, np.bool_)) and not self.inputs:
            return ()
        if data.covariates is None:
            raise ValueError(
                "the model was built with inputs but the data have no covariates; add them "
                "(data.with_covariates(...)) or use PoissonLDS(..., inputs=False)"
            )
        if isinstance(self.inputs, (bool, np.bool_)):
            return tuple(data.feature_names)
        missing = [f for f in self.inputs if f not in data.feature_names]
        if missing:
            raise ValueError(f"inputs {missing} are not covariates of the data (it has {list(data.feature_names)})")
        return tuple(self.inputs)

    def _check_fit_data(self, data: SpikeData) -> tuple[str, ...]:
        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")
        if self.n_latents > data.n_neuron:
            raise ValueError(
                f"n_latents={self.n_latents} is more than the {data.n_neuron} neurons of the data; "
                "the latents would not be identifiable (use at most as many latents as neurons)"
            )
        silent = data.neuron_ids[data.counts.sum(axis=0) == 0]
        if silent.size:
            raise ValueError(
                f"neurons {silent.tolist()} have no spikes in the training data, so their loadings "
                "and rates cannot be estimated; remove them (data.select_neurons)"
            )
        lengths = np.bincount(data.segment_ids)
        short = data.trials[lengths < 2]
        if short.size:
            raise ValueError(
                f"trials {short.tolist()} are shorter than 2 bins; the dynamics need at least one "
                "transition per trial (drop those trials)"
            )
        return self._features(data)

    def _check_data(self, data: SpikeData) -> None:
        self._check_fitted()
        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")
        if data.n_neuron != len(self.neuron_ids_) or np.any(data.neuron_ids != self.neuron_ids_):
            raise ValueError(
                f"data neuron ids {data.neuron_ids.tolist()} differ from those the model was fitted "
                f"to {self.neuron_ids_.tolist()}"
            )
        if not math.isclose(data.bin_size, self.bin_size_, rel_tol=1e-9):
            raise ValueError(f"data bin size {data.bin_size} s differs from the fitted one {self.bin_size_} s")
        if self.feature_names_:
            missing = [f for f in self.feature_names_ if f not in data.feature_names]
            if missing:
                raise ValueError(f"the model's inputs {missing} are not covariates of the data")

    def _neuron_index(self, data: SpikeData, ids, what: str) -> np.ndarray:
        wanted = np.atleast_1d(np.asarray(ids))
        where = {v: i for i, v in enumerate(data.neuron_ids.tolist())}
        missing = [v for v in wanted.tolist() if v not in where]
        if missing:
            raise ValueError(f"{what} {missing} are not neurons of the data (ids {data.neuron_ids.tolist()})")
        idx = np.array([where[v] for v in wanted.tolist()], dtype=np.int64)
        if len(set(idx.tolist())) != len(idx) or idx.size == 0:
            raise ValueError(f"{what} must name distinct neurons, at least one")
        return idx

    def _batch(self, data: SpikeData, features: tuple[str, ...]) -> _Batch:
        dtype = jnp.zeros(()).dtype
        seg = data.segment_ids
        bounds = np.r_[0, np.flatnonzero(np.diff(seg)) + 1, data.n_time]
        lengths = np.diff(bounds)
        pos = np.arange(data.n_time) - bounds[:-1][seg]
        # trial length padded to a bucket (masked bins) and trial count to a bucket (fully masked
        # trials): another recording whose longest trial and trial count fall in the same buckets
        # reuses the compiled E-step and EM programs
        shape = (bucket_length(len(lengths), minimum=1), bucket_length(int(lengths.max())))
        y = np.zeros(shape + (data.n_neuron,))
        y[seg, pos] = data.counts
        u = np.zeros(shape + (len(features),))
        if features:
            col = [data.feature_names.index(f) for f in features]
            u[seg, pos] = data.covariates[:, col]
        mask = np.zeros(shape, bool)
        mask[seg, pos] = True
        return _Batch(jnp.asarray(y, dtype), jnp.asarray(u, dtype), jnp.asarray(mask), seg, pos)

    def _jparams(self, neurons: np.ndarray | None = None) -> PLDSParams:
        """Parameters as JAX arrays; loadings of neurons outside ``neurons`` set to zero.

        A neuron with zero loadings has a likelihood constant in the latents, so the posterior
        is that given ``neurons`` alone, and the arrays keep their shapes (no recompilation).
        """
        p = self.params_
        if neurons is not None:
            keep = np.zeros(p.loadings.shape[0], bool)
            keep[neurons] = True
            p = p._replace(loadings=np.where(keep[:, None], p.loadings, 0.0))
        dtype = jnp.zeros(()).dtype
        return PLDSParams(*(jnp.asarray(v, dtype) for v in p))

    # -- fitting -------------------------------------------------------------------------------

    @pynapple_io()
    def fit(
        self,
        data: SpikeData,
        *,
        method: str = "laplace-em",
        key: Any = None,
        progress: bool | None = None,
        max_iter: int = 200,
        tol: float | None = 1e-6,
        smoothing: float = 0.05,
        **options,
    ) -> PoissonLDS:
        """Fit the PLDS to (trialled) spike counts.

        Parameters
        ----------
        data : SpikeData
            Counts ``(time, neuron)``; trials are independent sequences; covariates are the
            inputs when the model has inputs.
        method : {"laplace-em", "svi", "nuts"}
            ``"laplace-em"``: deterministic Laplace-EM from a PCA initialisation.
            ``"svi"``: the structured guide :func:`~bayesneuro.latent._plds_model.plds_guide`
            (options of :func:`bayesneuro.infer.fit`: ``num_steps``, ``learning_rate``, ...).
            ``"nuts"``: NUTS on small problems (``num_warmup``, ``num_samples``, ...).
            Both start from the PCA initialisation.
        key : jax.random key or int, optional
            Required by ``"svi"`` and ``"nuts"``; Laplace-EM draws no random numbers.
        progress : bool, optional
            Progress bar (default from ``BAYESNEURO_PROGRESS``).
        max_iter : int
            Most EM iterations (laplace-em).
        tol : float or None
            Laplace-EM stops when the log-likelihood changes by at most ``tol`` times its
            magnitude (the rule of :func:`bayesneuro.engine.em.run_em`); None runs all
            ``max_iter`` iterations.
        smoothing : float, default 0.05
            Gaussian smoothing (s.d., seconds) of the counts for the PCA initialisation.
        **options
            laplace-em: ``max_newton=50`` (Newton iterations per E-step), ``newton_tol=1e-10``
            (relative tolerance of :func:`bayesneuro.engine.newton.newton`). svi/nuts: passed
            to :func:`bayesneuro.infer.fit`.

        Returns
        -------
        PoissonLDS
            ``self``, fitted.

        Raises
        ------
        ValueError
            More latents than neurons, a silent neuron, a trial shorter than 2 bins, inputs
            without covariates, an unknown method or option.
        TypeError
            ``key`` missing for svi/nuts.
        FloatingPointError
            If the EM parameters become non-finite.
        """
        from ..infer.fit import progress_default

        methods = ("laplace-em", "svi", "nuts")
        if method not in methods:
            raise ValueError(f"method must be one of {methods}, got {method!r}")
        key = resolve_key(key, needed=method != "laplace-em", why=f"method={method!r}")
        if not (isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and smoothing > 0):
            raise ValueError(f"smoothing must be a positive number of seconds, got {smoothing!r}")
        features = self._check_fit_data(data)
        progress = progress_default() if progress is None else bool(progress)
        batch = self._batch(data, features)
        flat_inputs = np.asarray(batch.inputs)[batch.seg, batch.pos]
        init, x0 = _initial_params(
            data.counts, flat_inputs, batch.seg, n_latents=int(self.n_latents), bin_size=data.bin_size,
            smoothing=float(smoothing), link=self.link,
        )
        self.neuron_ids_ = data.neuron_ids.copy()
        self.feature_names_ = features
        self.bin_size_ = data.bin_size
        self.method_ = method
        self.result_ = None
        self.log_likelihood_trace_ = None
        self._idata = None
        self._train_trials = np.asarray(data.trials).copy()
        self._train_log_lik = None
        self._train_batch = None
        if method == "laplace-em":
            unknown = set(options) - set(_EM_OPTIONS)
            if unknown:
                raise ValueError(f"unknown options {sorted(unknown)} for laplace-em; it takes {sorted(_EM_OPTIONS)}")
            if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
                raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
            opts = {**_EM_OPTIONS, **options}
            self._fit_em(init, x0, batch, data.bin_size, int(max_iter), tol, progress, opts)
        else:
            self._train_batch = batch
            self._fit_bayes(data, method, key, init, x0, features, progress, options)
        if not all(np.all(np.isfinite(v)) for v in self.params_):
            raise FloatingPointError(
                "the fitted parameters are not finite; the rates may overflow: check the data "
                "(bin size, very high rates) or use fewer latents"
            )
        return self

    def _fit_em(self, init, x0, batch: _Batch, bin_size, max_iter, tol, progress, opts) -> None:
        from ..engine.em import run_em

        dtype = jnp.zeros(()).dtype
        params = PLDSParams(*(jnp.asarray(v, dtype) for v in init))
        path = np.zeros(batch.mask.shape + (int(self.n_latents),))
        path[batch.seg, batch.pos] = x0
        path = jnp.asarray(path, dtype)
        max_newton, newton_tol = int(opts["max_newton"]), float(opts["newton_tol"])
        step = _em_program(self.link, max_newton)
        args = (batch.counts, batch.inputs, batch.mask, jnp.asarray(bin_size, dtype), jnp.asarray(newton_tol, dtype))
        n_trial = len(np.unique(batch.seg))
        lm0 = jnp.zeros(batch.mask.shape[:1], dtype)
        (params, path, _), trace = run_em(
            step, (params, path, lm0), *args, max_iter=max_iter, tol=tol, progress=progress, desc="Laplace-EM",
            decrease_tol=_LAPLACE_EM_DIP,
        )
        if not all(np.all(np.isfinite(np.asarray(v))) for v in params):
            raise FloatingPointError(
                "Laplace-EM: the parameters became non-finite (the rates overflow); check the "
                "data's bin size and rates, or use fewer latents"
            )
        # the posterior at the fitted parameters by the same program (its M-step is discarded)
        (_, _, log_marginal), _ = step((params, path, lm0), *args)
        log_marginal = np.asarray(log_marginal, float)[:n_trial]
        self._set_params(params)
        self._train_log_lik = log_marginal
        self.log_likelihood_trace_ = np.append(np.asarray(trace.objective, float), float(log_marginal.sum()))
        self.n_iter_ = int(trace.n_iter)
        self.converged_ = bool(trace.converged)

    def _fit_bayes(self, data, method, key, init, x0, features, progress, options) -> None:
        from numpyro.infer import init_to_value

        from ..infer import fit as _fit
        from ._plds_model import plds_dims, plds_guide, plds_model

        dtype = jnp.zeros(()).dtype
        values = {
            "dynamics": init.dynamics, "dynamics_bias": init.dynamics_bias,
            "dynamics_scale": np.sqrt(np.diag(init.dynamics_cov)), "initial_mean": init.initial_mean,
            "initial_scale": np.sqrt(np.diag(init.initial_cov)), "loadings": init.loadings,
            "offset": init.offset, "latents": x0,
        }
        if features:
            values["input_weights"] = init.input_weights
        values = {k: jnp.asarray(v, dtype) for k, v in values.items()}
        if method == "svi":
            options.setdefault("guide", plds_guide(values))
        else:
            options.setdefault("init_strategy", init_to_value(values=values))
        starts = np.r_[True, np.diff(data.segment_ids) != 0]
        rate = data.counts.mean(axis=0) / data.bin_size
        bias_loc = np.log(rate) if self.link == "exp" else np.log(np.expm1(np.minimum(rate, 30.0)))
        cov_inputs = None
        if features:
            cov_inputs = np.asarray(data.covariates[:, [data.feature_names.index(f) for f in features]], dtype)
        coords = {
            "time": data.bin_centers, "neuron": data.neuron_ids, "latent": np.arange(self.n_latents),
            "latent_from": np.arange(self.n_latents),
        }
        if features:
            coords["feature"] = np.asarray(features)
        result = _fit(
            plds_model, method=method, key=key, coords=coords, dims=plds_dims(bool(features)),
            progress=progress, spikes=np.asarray(data.counts, dtype), starts=starts,
            bin_size=float(data.bin_size), n_latents=int(self.n_latents), link=self.link, inputs=cov_inputs,
            bias_loc=np.asarray(bias_loc, dtype), **options,
        )
        draws = result.flat_samples()
        k = self.n_latents

        def mean_cov(scale):
            return np.mean(np.asarray(scale)[:, :, None] * np.eye(k) * np.asarray(scale)[:, None, :], axis=0)

        m = result.params
        self._set_params(PLDSParams(
            m["initial_mean"], mean_cov(draws["initial_scale"]), m["dynamics"], m["dynamics_bias"],
            m["input_weights"] if features else np.zeros((k, 0)), mean_cov(draws["dynamics_scale"]),
            m["loadings"], m["offset"],
        ))
        self.result_ = result
        self.n_iter_ = None
        self.converged_ = None

    # -- posterior, prediction, scores ---------------------------------------------------------

    def _laplace(self, data: SpikeData, neurons: np.ndarray | None = None):
        """Laplace posterior of the data's paths at the fitted parameters (flat layout).

        Returns the path means ``(time, K)``, covariances ``(time, K, K)`` and the Laplace
        ``log p(counts)`` of each trial ``(trial,)`` in the data's trial order.
        """
        self._check_data(data)
        batch = self._batch(data, self.feature_names_)
        init = jnp.zeros(batch.mask.shape + (int(self.n_latents),), batch.counts.dtype)
        post = laplace_posterior(
            self._jparams(neurons), batch.counts, batch.inputs, batch.mask, init,
            bin_size=data.bin_size, link=self.link,
        )
        mean = np.asarray(post.mean)[batch.seg, batch.pos]
        cov = np.asarray(post.cov)[batch.seg, batch.pos]
        return mean, cov, np.asarray(post.log_marginal, dtype=float)[: len(np.unique(batch.seg))]

    @pynapple_io("dataset")
    def transform(self, data: SpikeData, *, neurons: Any = None) -> xr.Dataset:
        """Latent posterior means and standard deviations (Laplace, at the fitted parameters).

        Parameters
        ----------
        data : SpikeData
            With the fitted neurons (and inputs).
        neurons : sequence of neuron ids, optional
            Infer the latents from these neurons only (default: all).

        Returns
        -------
        xarray.Dataset
            ``mean`` and ``sd``, dims ``(time, latent)``; coords ``time`` (bin centres, s),
            ``latent`` and, for trialled data, ``trial`` along ``time``.
        """
        self._check_data(data)
        idx = None if neurons is None else self._neuron_index(data, neurons, "neurons")
        mean, cov, _ = self._laplace(data, idx)
        sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        coords: dict[str, Any] = {"time": data.bin_centers, "latent": np.arange(self.n_latents)}
        if data.trial_ids is not None:
            coords["trial"] = ("time", data.trial_ids)
        ds = xr.Dataset({"mean": (("time", "latent"), mean), "sd": (("time", "latent"), sd)}, coords=coords)
        ds.attrs["method"] = "laplace"
        return ds

    @pynapple_io("tsdframe")
    def predict_rate(self, data: SpikeData, *, observed_neurons: Any = None) -> np.ndarray:
        """Posterior expected rates in spikes/s, ``(time, neuron)`` for every fitted neuron.

        ``E[f(C_n x_t + d_n)]`` under the Laplace posterior of the path given the
        ``observed_neurons`` (default: all), so the rates of the others are predicted from their
        peers (co-smoothing).
        """
        self._check_data(data)
        idx = None if observed_neurons is None else self._neuron_index(data, observed_neurons, "observed_neurons")
        mean, cov, _ = self._laplace(data, idx)
        c, d = self.loadings_, self.offset_
        m = mean @ c.T + d
        v = np.einsum("nk,tkl,nl->tn", c, cov, c)
        return np.asarray(_expected_rate(jnp.asarray(m), jnp.asarray(v), self.link))

    @pynapple_io()
    def log_likelihood(self, data: SpikeData) -> np.ndarray:
        """Laplace approximation of ``log p(counts)`` (nats) of each trial, at the fitted parameters.

        The latent path of a trial ties its bins together, so the observation unit is the trial
        (``log_likelihood_dim = "trial"``); ``.sum()`` is the total. For held-out data.

        Returns
        -------
        numpy.ndarray, shape (trial,)
            In the order of ``data.trials``.
        """
        return self._laplace(data)[2]

    def _cosmoothing(self, data: SpikeData, held_out_neurons: Any):
        """Held-out neuron indices and their rates predicted from the other neurons."""
        self._check_data(data)
        if held_out_neurons is None:
            if data.n_neuron < 2:
                raise ValueError("leave-one-neuron-out co-smoothing needs at least 2 neurons")
            held = np.arange(data.n_neuron)
            rates = np.empty(data.counts.shape)
            for k in held:
                rest = data.neuron_ids[np.arange(data.n_neuron) != k]
                rates[:, k] = self.predict_rate(data, observed_neurons=rest)[:, k]
        else:
            held = self._neuron_index(data, held_out_neurons, "held_out_neurons")
            rest = np.setdiff1d(np.arange(data.n_neuron), held)
            if rest.size == 0:
                raise ValueError("held_out_neurons names every neuron; keep some to infer the latents from")
            rates = self.predict_rate(data, observed_neurons=data.neuron_ids[rest])
        return held, rates

    @pynapple_io()
    def score(self, data: SpikeData, *, held_out_neurons: Any = None) -> float:
        """Co-smoothing score of held-out neurons in bits/spike (Neural Latents Benchmark); higher is better.

        Latents are inferred from the other (held-in) neurons only; the held-out neurons'
        rates are predicted from them and scored by :func:`cosmoothing_bits_per_spike`
        against their mean rate in ``data`` (0 = no better than a constant rate). Per-neuron
        values and the log-likelihood are in :meth:`evaluate`.

        Parameters
        ----------
        data : SpikeData
            Held-out trials, with every fitted neuron (held-out counts are only scored).
        held_out_neurons : sequence of neuron ids, optional
            The neurons to predict, all from the rest at once. Default: every neuron in turn,
            each from all the others (leave-one-neuron-out; one Laplace pass per neuron).

        Returns
        -------
        float
            Bits per spike (``score_unit``).
        """
        held, rates = self._cosmoothing(data, held_out_neurons)
        return float(cosmoothing_bits_per_spike(data.counts[:, held], rates[:, held], data.bin_size))

    @pynapple_io()
    def evaluate(self, data: SpikeData, *, held_out_neurons: Any = None) -> dict:
        """Co-smoothing per neuron and pooled, and the Laplace log-likelihood of ``data``.

        Parameters
        ----------
        data : SpikeData
            Held-out trials, with every fitted neuron.
        held_out_neurons : sequence of neuron ids, optional
            As in :meth:`score` (default: leave-one-neuron-out).

        Returns
        -------
        dict
            ``"bits_per_spike"`` (float, :meth:`score`), ``"bits_per_spike_per_neuron"``
            (numpy.ndarray over ``"held_out_neurons"``, NaN for a neuron without spikes),
            ``"held_out_neurons"`` (their ids), ``"log_likelihood"`` (float, nats: the sum of
            :meth:`log_likelihood`) and ``"log_likelihood_per_spike"`` (nats per spike).
        """
        held, rates = self._cosmoothing(data, held_out_neurons)
        y, r = data.counts[:, held], rates[:, held]
        ll = float(self.log_likelihood(data).sum())
        return {
            "bits_per_spike": float(cosmoothing_bits_per_spike(y, r, data.bin_size)),
            "bits_per_spike_per_neuron": cosmoothing_bits_per_spike(y, r, data.bin_size, per_neuron=True),
            "held_out_neurons": data.neuron_ids[held],
            "log_likelihood": ll,
            "log_likelihood_per_spike": ll / max(float(data.counts.sum()), 1.0),
        }

    # -- simulation and dynamics ---------------------------------------------------------------

    def simulate(self, n_trials: int, n_time: int, *, key: Any, inputs: Any = None) -> PLDSSimulation:
        """Simulate trials from the fitted model.

        Parameters
        ----------
        n_trials, n_time : int
            ``n_trials`` independent trials of ``n_time`` bins.
        key : jax.random key or int
            Required.
        inputs : array_like, shape (n_trials, n_time, n_feature), optional
            Required when the model has inputs; stored as the data's covariates.

        Returns
        -------
        PLDSSimulation
        """
        self._check_fitted()
        if int(n_trials) < 1 or int(n_time) < 1:
            raise ValueError(f"n_trials and n_time must be positive, got {n_trials} and {n_time}")
        x, y, r = simulate_plds(
            key, self.params_, n_trials=int(n_trials), n_time=int(n_time), bin_size=self.bin_size_,
            link=self.link, inputs=inputs,
        )
        covs = None if inputs is None else list(np.asarray(inputs, dtype=float))
        data = SpikeData.from_trials(
            list(y), bin_size=self.bin_size_, neuron_ids=self.neuron_ids_, covariates=covs,
            feature_names=self.feature_names_ or None,
        )
        k, n = self.n_latents, y.shape[-1]
        return PLDSSimulation(data, x.reshape(-1, k), r.reshape(-1, n))

    def summary_statistics(self) -> dict:
        """Basis-invariant summaries of the dynamics (what :func:`~bayesneuro.density.compare_states` compares).

        Returns
        -------
        dict of xarray.DataArray
            ``eigenvalue_modulus`` (|eigenvalue| of ``A``, descending), ``timescale`` (s) and
            ``frequency`` (|rotation frequency|, Hz) of the same modes, dim ``latent`` (mode rank:
            the latents themselves are identified only up to an invertible transform).
        """
        import xarray as xr

        s = self.dynamics_summary()
        rank = {"latent": np.arange(self.n_latents)}
        return {"eigenvalue_modulus": xr.DataArray(np.abs(s.eigenvalues), dims="latent", coords=rank),
                "timescale": xr.DataArray(np.asarray(s.timescales, float), dims="latent", coords=rank),
                "frequency": xr.DataArray(np.abs(np.asarray(s.frequencies, float)), dims="latent", coords=rank)}

    def dynamics_summary(self) -> DynamicsSummary:
        """Eigenvalues of ``A`` with their decay timescales (s) and rotation frequencies (Hz).

        These, unlike ``A`` itself, do not depend on the arbitrary basis of the latent space.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
        >>> a = 0.9 * np.eye(1)
        >>> m = PoissonLDS.from_params(PLDSParams(np.zeros(1), np.eye(1), a, np.full(1, 0.1),
        ...     np.zeros((1, 0)), np.eye(1), np.ones((2, 1)), np.zeros(2)), bin_size=0.01)
        >>> s = m.dynamics_summary()
        >>> round(float(s.timescales[0]), 4), round(float(s.fixed_point[0]), 6)
        (0.0949, 1.0)
        """
        self._check_fitted()
        a, dt = self.dynamics_, self.bin_size_
        lam = np.linalg.eigvals(a).astype(complex)
        lam = lam[np.argsort(-np.abs(lam), kind="stable")]
        with np.errstate(divide="ignore"):
            tau = -dt / np.log(np.abs(lam))
        freq = np.angle(lam) / (2.0 * np.pi * dt)
        eye = np.eye(self.n_latents)
        fixed = None
        if np.linalg.cond(eye - a) < 1e12:
            fixed = np.linalg.solve(eye - a, self.dynamics_bias_)
        return DynamicsSummary(lam, tau, freq, fixed)

    # -- ArviZ ---------------------------------------------------------------------------------

    def to_inference_data(self):
        """``arviz.InferenceData`` of the fit, with a per-trial ``log_likelihood`` group.

        laplace-em (a point fit): a ``point_estimate`` group (no ``posterior``, no ``chain`` or
        ``draw``; :func:`bayesneuro.infer.convert.point_inference_data`) with dims ``latent``,
        ``latent_from`` (the second axis of ``A``, ``Q``, ``S0``), ``feature``, ``neuron``, and
        ``attrs["method"] = "laplace-em"``. svi/nuts: the :class:`~bayesneuro.infer.FitResult`'s
        InferenceData (every sampled site, the path ``latents`` included).

        The ``log_likelihood`` group holds one variable, ``counts`` (as the Poisson GPFA's): the
        Laplace ``log p(counts of the trial)`` of each training trial with the latent path
        integrated out, dims ``(trial,)`` at the point estimate (laplace-em) or
        ``(chain, draw, trial)`` at every posterior draw of the parameters (svi/nuts). So
        ``az.loo`` / ``az.compare`` rank a sampled PoissonLDS against a :class:`~bayesneuro.GPFA`
        fitted to the same trials. A model made by :meth:`from_params` has no training data, so
        no such group.
        """
        from ..infer.convert import point_inference_data

        self._check_fitted()
        if getattr(self, "_idata", None) is not None:
            return self._idata
        trials = getattr(self, "_train_trials", None)
        if self.result_ is not None:
            idata = self.result_.to_inference_data(log_likelihood=False)
            ll = self._draws_log_likelihood()
            ds = xr.Dataset({"counts": (("chain", "draw", "trial"), ll)},
                            coords={"chain": np.arange(ll.shape[0]), "draw": np.arange(ll.shape[1]), "trial": trials})
            idata.add_groups({"log_likelihood": ds})
            self._idata = idata
            return idata
        k = int(self.n_latents)
        lat = ["latent"]
        sq = ["latent", "latent_from"]
        variables = {
            "initial_mean": (lat, self.initial_mean_), "initial_cov": (sq, self.initial_cov_),
            "dynamics": (sq, self.dynamics_), "dynamics_bias": (lat, self.dynamics_bias_),
            "dynamics_cov": (sq, self.dynamics_cov_), "loadings": (["neuron", "latent"], self.loadings_),
            "offset": (["neuron"], self.offset_),
        }
        coords = {"latent": np.arange(k), "latent_from": np.arange(k), "neuron": self.neuron_ids_}
        if self.feature_names_:
            variables["input_weights"] = (["latent", "feature"], self.input_weights_)
            coords["feature"] = np.asarray(self.feature_names_)
        attrs = {}
        if self.log_likelihood_trace_ is not None:
            attrs["log_marginal_likelihood"] = float(self.log_likelihood_trace_[-1])
            attrs["n_iter"] = int(self.n_iter_)
            attrs["converged"] = int(self.converged_)
        train_ll = getattr(self, "_train_log_lik", None)
        self._idata = point_inference_data(
            variables, method=self.method_, coords=coords, attrs=attrs,
            log_likelihood=None if train_ll is None else {"counts": (("trial",), np.asarray(train_ll, float))},
            log_likelihood_coords={"trial": trials},
        )
        return self._idata

    def _draws_log_likelihood(self) -> np.ndarray:
        """Laplace ``log p(counts)`` per training trial at each posterior draw, ``(chain, draw, trial)``."""
        batch = self._train_batch
        samples = self.result_.samples
        n_chain, n_draw = self.result_.n_chain, self.result_.n_draw
        k = int(self.n_latents)
        dtype = batch.counts.dtype
        flat = {name: jnp.asarray(np.reshape(v, (n_chain * n_draw,) + np.shape(v)[2:]), dtype)
                for name, v in samples.items() if name != "latents" and name in _DRAW_SITES}

        def one(d):
            weights = d["input_weights"] if "input_weights" in d else jnp.zeros((k, 0), dtype)
            p = PLDSParams(
                d["initial_mean"], jnp.diag(d["initial_scale"] ** 2), d["dynamics"], d["dynamics_bias"], weights,
                jnp.diag(d["dynamics_scale"] ** 2), d["loadings"], d["offset"],
            )
            init = jnp.zeros(batch.mask.shape + (k,), dtype)
            return laplace_posterior(
                p, batch.counts, batch.inputs, batch.mask, init, bin_size=self.bin_size_, link=self.link
            ).log_marginal

        ll = jax.lax.map(one, flat)
        n_trial = len(np.unique(batch.seg))
        return np.asarray(ll, float).reshape(n_chain, n_draw, -1)[..., :n_trial]

    def __repr__(self) -> str:
        parts = [f"n_latents={self.n_latents}"]
        if self.link != "exp":
            parts.append(f"link={self.link!r}")
        if not (isinstance(self.inputs, (bool, np.bool_)) and not self.inputs):
            parts.append(f"inputs={self.inputs!r}")
        state = "unfitted" if self.params_ is None else f"fitted by {self.method_}"
        return f"PoissonLDS({', '.join(parts)}; {state})"
