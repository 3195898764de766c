r"""The Poisson LDS as a NumPyro model, and a structured (Gauss-Markov) guide for SVI.

:func:`plds_model` is a plain NumPyro function, fitted like any other model by
:func:`bayesneuro.infer.fit` (``"svi"``, or ``"nuts"`` on small problems). Trials are laid end
to end on one ``time`` axis, as in :class:`~bayesneuro.data.SpikeData`; ``starts`` marks the
first bin of each trial, where the path restarts from the initial distribution. The latent path
is one sample site, ``latents`` with dims ``(time, latent)``, whose prior is the LDS
(:class:`LDSPath`). ``Q`` and ``S0`` are diagonal here (``dynamics_scale``, ``initial_scale``);
with ``A`` and ``C`` free this loses no generality, as the latent space can always be rotated
and scaled so that ``Q`` is diagonal.

:func:`plds_guide` builds the variational family the problem asks for: mean-field normals for
the parameters and, given them, a Gaussian path posterior whose precision is the LDS prior's
block-tridiagonal precision plus learnt per-bin ``K x K`` blocks (the form of the exact Laplace
posterior, where those blocks are ``C^T diag(w_t) C``). Sampling and its density cost
O(T K^3) through :mod:`bayesneuro.latent._blocktri`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from bayesneuro._jit import jit

from . import _blocktri as bt

__all__ = ["plds_model", "plds_guide", "plds_dims", "LDSPath", "GaussMarkovPath", "lds_precision"]


def _flat_lead(value, event_ndim):
    lead = value.shape[: value.ndim - event_ndim]
    return value.reshape((-1,) + value.shape[value.ndim - event_ndim :]), lead


class LDSPath(dist.Distribution):
    r"""Linear-Gaussian state-space prior over a path of trials laid end to end.

    ``x_t ~ N(m0, diag(s0^2))`` where ``starts[t]``, else
    ``x_t ~ N(A x_{t-1} + drive_t, diag(q^2))``. Event shape ``(time, latent)``.

    Parameters
    ----------
    initial_mean, initial_scale : Array, shape (K,)
    dynamics : Array, shape (K, K)
    drive : Array, shape (T, K)
        ``B u_t + b`` per bin (unused at trial starts).
    dynamics_scale : Array, shape (K,)
    starts : Array, shape (T,), bool
        True at the first bin of each trial (``starts[0]`` must be True).
    """

    arg_constraints = {
        "initial_mean": constraints.real_vector,
        "initial_scale": constraints.independent(constraints.positive, 1),
        "dynamics": constraints.independent(constraints.real, 2),
        "drive": constraints.independent(constraints.real, 2),
        "dynamics_scale": constraints.independent(constraints.positive, 1),
    }
    reparametrized_params = ["initial_mean", "initial_scale", "dynamics", "drive", "dynamics_scale"]
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("initial_mean", "initial_scale", "dynamics", "drive", "dynamics_scale", "starts")

    def __init__(self, initial_mean, initial_scale, dynamics, drive, dynamics_scale, starts, *, validate_args=None):
        self.initial_mean, self.initial_scale = initial_mean, initial_scale
        self.dynamics, self.drive, self.dynamics_scale = dynamics, drive, dynamics_scale
        self.starts = starts
        super().__init__(batch_shape=(), event_shape=drive.shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        eps = jax.random.normal(key, tuple(sample_shape) + self.event_shape)
        flat, _ = _flat_lead(eps, 2)
        args = (self.initial_mean, self.initial_scale, self.dynamics, self.drive, self.dynamics_scale, self.starts)
        return _lds_paths(flat, *args).reshape(eps.shape)

    def log_prob(self, value):
        args = (self.initial_mean, self.initial_scale, self.dynamics, self.drive, self.dynamics_scale, self.starts)
        return _lds_log_prob(value, *args)


@jit
def _lds_paths(eps, m0, s0, a, drive, q, starts):
    """Paths of :class:`LDSPath` from standard normal innovations ``eps`` (n, T, K)."""

    def path(e):
        def step(x_prev, blocks):
            et, drive_t, start = blocks
            x = jnp.where(start, m0 + s0 * et, a @ x_prev + drive_t + q * et)
            return x, x

        return jax.lax.scan(step, jnp.zeros(e.shape[-1], e.dtype), (e, drive, starts))[1]

    return jax.vmap(path)(eps)


@jit
def _lds_log_prob(value, m0, s0, a, drive, q, starts):
    prev = jnp.concatenate([jnp.zeros_like(value[..., :1, :]), value[..., :-1, :]], axis=-2)
    start = starts[:, None]
    loc = jnp.where(start, m0, jnp.einsum("...tk,jk->...tj", prev, a) + drive)
    scale = jnp.where(start, s0, q)
    return jnp.sum(dist.Normal(loc, scale).log_prob(value), axis=(-2, -1))


class GaussMarkovPath(dist.Distribution):
    r"""Gaussian path ``N(loc, P^{-1})`` with a block-tridiagonal precision ``P = G G^T``.

    Given the block Cholesky factor ``G`` (:func:`bayesneuro.latent._blocktri.cholesky`),
    draws are ``loc + G^{-T} eps`` and ``log q(x) = log N(G^T (x - loc); 0, I) + log det G``.
    Event shape ``(time, latent)``; reparametrised.
    """

    arg_constraints = {
        "loc": constraints.independent(constraints.real, 2),
        "chol_diag": constraints.independent(constraints.real, 3),
        "chol_sub": constraints.independent(constraints.real, 3),
    }
    reparametrized_params = ["loc", "chol_diag", "chol_sub"]
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("loc", "chol_diag", "chol_sub")

    def __init__(self, loc, chol_diag, chol_sub, *, validate_args=None):
        self.loc, self.chol_diag, self.chol_sub = loc, chol_diag, chol_sub
        super().__init__(batch_shape=(), event_shape=loc.shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        eps = jax.random.normal(key, tuple(sample_shape) + self.event_shape)
        flat, _ = _flat_lead(eps, 2)
        return _gm_sample(flat, self.loc, self.chol_diag, self.chol_sub).reshape(eps.shape)

    def log_prob(self, value):
        flat, lead = _flat_lead(value, 2)
        return _gm_log_prob(flat, self.loc, self.chol_diag, self.chol_sub).reshape(lead)

    @property
    def mean(self):
        return self.loc


@jit
def _gm_sample(eps, loc, chol_diag, chol_sub):
    chol = bt.BlockCholesky(chol_diag, chol_sub)
    return loc + jax.vmap(lambda e: bt.solve_factor_transpose(chol, e))(eps)


@jit
def _gm_log_prob(value, loc, chol_diag, chol_sub):
    chol = bt.BlockCholesky(chol_diag, chol_sub)
    eps = jax.vmap(lambda r: bt.factor_transpose_matvec(chol, r))(value - loc)
    n = loc.size
    lp = -0.5 * jnp.sum(eps**2, axis=(-2, -1)) - 0.5 * n * jnp.log(2.0 * jnp.pi)
    return lp + 0.5 * bt.logdet(chol)


@jit
def _path_factor(prior_diag, sub, lam_diag, lam_lower):
    """Block Cholesky factor of ``J + blockdiag(L_t L_t^T)`` (the guide's path precision)."""
    fac = jnp.tril(lam_lower, -1) + jax.vmap(jnp.diag)(lam_diag)
    return bt.cholesky(prior_diag + jnp.einsum("tij,tkj->tik", fac, fac), sub)


@jit
def lds_precision(initial_mean, initial_cov, dynamics, drive, dynamics_cov, starts):
    r"""Natural parameters of the LDS prior over a path: ``p(x) ∝ exp(-x^T J x / 2 + h^T x)``.

    Parameters
    ----------
    initial_mean : Array, shape (K,)
    initial_cov : Array, shape (K, K)
    dynamics : Array, shape (K, K)
    drive : Array, shape (T, K)
        ``B u_t + b``.
    dynamics_cov : Array, shape (K, K)
    starts : Array, shape (T,), bool
        Trial starts (no transition into these bins).

    Returns
    -------
    diag : Array, shape (T, K, K)
        Diagonal blocks of ``J``.
    sub : Array, shape (T - 1, K, K)
        Sub-diagonal blocks ``J[t + 1, t]`` (zero across trial boundaries).
    h : Array, shape (T, K)
    """
    q_inv = jnp.linalg.inv(dynamics_cov)
    s0_inv = jnp.linalg.inv(initial_cov)
    a = dynamics
    start = starts[:, None, None]
    follows = jnp.concatenate([~starts[1:], jnp.zeros(1, bool)])[:, None, None]  # x_{t+1} depends on x_t
    atqa = a.T @ q_inv @ a
    diag = jnp.where(start, s0_inv, q_inv) + jnp.where(follows, atqa, 0.0)
    sub = jnp.where(~starts[1:, None, None], -q_inv @ a, 0.0)
    h = jnp.where(starts[:, None], s0_inv @ initial_mean, drive @ q_inv)
    nxt = jnp.concatenate([drive[1:] @ q_inv @ a, jnp.zeros_like(drive[:1])], axis=0)
    h = h - jnp.where(follows[:, :, 0], nxt, 0.0)
    return diag, sub, h


def _drive(dynamics_bias, inputs, input_weights, n_time):
    base = jnp.broadcast_to(dynamics_bias, (n_time, dynamics_bias.shape[-1]))
    return base if inputs is None else base + inputs @ input_weights.T


def plds_model(
    spikes=None,
    *,
    starts,
    bin_size: float,
    n_latents: int,
    link: str = "exp",
    inputs=None,
    bias_loc=None,
    n_neurons: int | None = None,
):
    r"""Poisson LDS over trials laid end to end: NumPyro model.

    Priors (weakly informative; rates in spikes/s, the exp link's log-rates near
    ``bias_loc``): ``dynamics ~ N(0.9 I, 0.25^2)`` elementwise, ``dynamics_bias ~ N(0, 0.1^2)``,
    ``dynamics_scale ~ HalfNormal(0.3)``, ``initial_mean ~ N(0, 1)``,
    ``initial_scale ~ HalfNormal(1)``, ``input_weights ~ N(0, 1)``, ``loadings ~ N(0, 1)``,
    ``offset ~ N(bias_loc, 2^2)``; ``latents ~ LDSPath``; and
    ``spikes[t, n] ~ Poisson(bin_size * f(loadings[n] . latents[t] + offset[n]))``.

    Parameters
    ----------
    spikes : Array, shape (time, neuron), optional
        Counts; sampled when None (then give `n_neurons`).
    starts : Array, shape (time,), bool
        True at the first bin of each trial.
    bin_size : float
        Seconds.
    n_latents : int
    link : {"exp", "softplus"}
    inputs : Array, shape (time, feature), optional
        ``u``; adds ``input_weights`` (latent, feature).
    bias_loc : Array, shape (neuron,), optional
        Prior mean of ``offset``; default 2 (about 7 spikes/s with the exp link).
    n_neurons : int, optional
        Number of neurons when `spikes` is None.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from numpyro import handlers
    >>> from bayesneuro.latent._plds_model import plds_model
    >>> starts = np.zeros(20, bool); starts[[0, 10]] = True
    >>> tr = handlers.trace(handlers.seed(plds_model, 0)).get_trace(
    ...     starts=starts, bin_size=0.02, n_latents=2, n_neurons=4)
    >>> tr["latents"]["value"].shape, tr["spikes"]["value"].shape
    ((20, 2), (20, 4))
    """
    n_time = starts.shape[0]
    k = n_latents
    n = spikes.shape[-1] if spikes is not None else n_neurons
    if n is None:
        raise ValueError("give spikes or n_neurons")
    eye = jnp.eye(k)
    a = numpyro.sample("dynamics", dist.Normal(0.9 * eye, 0.25).to_event(2))
    b = numpyro.sample("dynamics_bias", dist.Normal(jnp.zeros(k), 0.1).to_event(1))
    q = numpyro.sample("dynamics_scale", dist.HalfNormal(0.3 * jnp.ones(k)).to_event(1))
    m0 = numpyro.sample("initial_mean", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
    s0 = numpyro.sample("initial_scale", dist.HalfNormal(jnp.ones(k)).to_event(1))
    weights = None
    if inputs is not None:
        weights = numpyro.sample("input_weights", dist.Normal(jnp.zeros((k, inputs.shape[-1])), 1.0).to_event(2))
    drive = _drive(b, inputs, weights, n_time)
    x = numpyro.sample("latents", LDSPath(m0, s0, a, drive, q, starts))
    c = numpyro.sample("loadings", dist.Normal(jnp.zeros((n, k)), 1.0).to_event(2))
    loc = 2.0 * jnp.ones(n) if bias_loc is None else bias_loc
    d = numpyro.sample("offset", dist.Normal(loc, 2.0).to_event(1))
    eta = x @ c.T + d
    rate = jnp.exp(eta) if link == "exp" else jax.nn.softplus(eta)
    with numpyro.plate("time", n_time, dim=-2), numpyro.plate("neuron", n, dim=-1):
        numpyro.sample("spikes", dist.Poisson(rate * bin_size), obs=spikes)


def plds_dims(has_inputs: bool = False) -> dict[str, list[str]]:
    """Dim names of :func:`plds_model`'s sites and data arrays, for ``infer.fit(dims=...)``."""
    dims = {
        "latents": ["time", "latent"],
        "dynamics": ["latent", "latent_from"],
        "dynamics_bias": ["latent"],
        "dynamics_scale": ["latent"],
        "initial_mean": ["latent"],
        "initial_scale": ["latent"],
        "loadings": ["neuron", "latent"],
        "offset": ["neuron"],
        "starts": ["time"],
        "bias_loc": ["neuron"],
    }
    if has_inputs:
        dims["input_weights"] = ["latent", "feature"]
        dims["inputs"] = ["time", "feature"]
    return dims


_POSITIVE = ("dynamics_scale", "initial_scale")


def plds_guide(init_values: dict | None = None, *, init_scale: float = 0.05) -> Callable:
    r"""A structured guide for :func:`plds_model`: mean-field parameters, Gauss-Markov path.

    The parameters get independent normals (log-normals for the scales; variational
    parameters ``<site>_guide_loc`` and ``<site>_guide_scale``). Given a draw of them, the path
    is Gaussian with a free mean ``latents_loc`` (T, K) and precision
    ``J(theta) + blockdiag(L_t L_t^T)``: the LDS prior's block-tridiagonal precision
    (:func:`lds_precision`) plus learnt per-bin blocks, the structure of the exact Laplace
    posterior (whose blocks are ``C^T diag(w_t) C``). ``L_t`` is lower-triangular with diagonal
    ``latents_factor_diag`` (T, K, positive) and strictly lower part from
    ``latents_factor_lower`` (T, K, K). The path's covariances then follow the sampled dynamics,
    with cross-covariances between neighbouring bins.

    Parameters
    ----------
    init_values : dict, optional
        Starting values by site name (constrained), e.g. from a PCA initialisation; the path
        mean starts at ``init_values["latents"]`` (default 0). Other sites start near the prior
        centre (``loadings`` at orthogonal cosine columns, so that the latents are not symmetric).
    init_scale : float
        Starting standard deviation of the parameters' normals.

    Returns
    -------
    callable
        A guide function with the model's signature, for ``infer.fit(..., guide=...)``.
    """
    init_values = {} if init_values is None else dict(init_values)

    def guide(spikes=None, *, starts, bin_size, n_latents, link="exp", inputs=None, bias_loc=None, n_neurons=None):
        n_time, k = starts.shape[0], n_latents
        n = spikes.shape[-1] if spikes is not None else n_neurons
        loc_d = 2.0 * jnp.ones(n) if bias_loc is None else bias_loc
        sites: dict[str, Any] = {
            "dynamics": 0.9 * jnp.eye(k),
            "dynamics_bias": jnp.zeros(k),
            "dynamics_scale": 0.3 * jnp.ones(k),
            "initial_mean": jnp.zeros(k),
            "initial_scale": jnp.ones(k),
        }
        if inputs is not None:
            sites["input_weights"] = jnp.zeros((k, inputs.shape[-1]))
        # distinct, orthogonal columns (cosines), so that the latents do not start symmetric
        grid = (jnp.arange(n)[:, None] + 0.5) * (jnp.arange(k)[None, :] + 0.5) * jnp.pi / n
        sites["loadings"] = 0.3 * jnp.cos(grid)
        sites["offset"] = loc_d
        draws = {}
        for name, default in sites.items():
            start = jnp.asarray(init_values.get(name, default), dtype=jnp.result_type(float))
            positive = name in _POSITIVE
            loc = numpyro.param(f"{name}_guide_loc", jnp.log(start) if positive else start)
            scale = numpyro.param(
                f"{name}_guide_scale", jnp.full(start.shape, init_scale), constraint=constraints.positive
            )
            d = dist.LogNormal(loc, scale) if positive else dist.Normal(loc, scale)
            draws[name] = numpyro.sample(name, d.to_event(start.ndim))
        drive = _drive(draws["dynamics_bias"], inputs, draws.get("input_weights"), n_time)
        diag, sub, _ = lds_precision(
            draws["initial_mean"], jnp.diag(draws["initial_scale"] ** 2), draws["dynamics"], drive,
            jnp.diag(draws["dynamics_scale"] ** 2), starts,
        )
        lam_diag = numpyro.param("latents_factor_diag", jnp.ones((n_time, k)), constraint=constraints.positive)
        lam_lower = numpyro.param("latents_factor_lower", jnp.zeros((n_time, k, k)))
        chol = _path_factor(diag, sub, lam_diag, lam_lower)
        start = init_values.get("latents", jnp.zeros((n_time, k)))
        mean = numpyro.param("latents_loc", jnp.asarray(start, dtype=jnp.result_type(float)))
        numpyro.sample("latents", GaussMarkovPath(mean, chol.diag, chol.sub))

    return guide
