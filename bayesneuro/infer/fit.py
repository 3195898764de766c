"""``fit``: one entry point to MAP, Laplace, SVI and NUTS for any NumPyro model."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, autoguide, init_to_median
from numpyro.infer.util import log_density

from bayesneuro._jit import jit

from .._progress import progress_default
from ..diagnostics import ConvergenceWarning, check_svi
from . import _model
from .optimize import minimize, minimize_proximal
from .result import FitResult, stack_chain

__all__ = ["GUIDES", "METHODS", "BlockHessian", "Proximal", "fit", "progress_default"]

METHODS = ("map", "laplace", "svi", "nuts")

GUIDES = {
    "mean-field": autoguide.AutoNormal,
    "full-rank": autoguide.AutoMultivariateNormal,
    "low-rank": autoguide.AutoLowRankMultivariateNormal,
}

# Options each method takes, with defaults. Anything else passed to ``fit`` is data for the model.
_OPTIONS: dict[str, dict[str, Any]] = {
    "map": {"max_iter": 2000, "tol": 1e-6, "init_strategy": None, "preconditioner": None, "proximal": None},
    "laplace": {
        "max_iter": 2000,
        "tol": 1e-6,
        "init_strategy": None,
        "preconditioner": None,
        "num_samples": 1000,
        "hessian": None,
        "hessian_batch": None,
    },
    "svi": {
        "guide": "mean-field",
        "num_steps": 5000,
        "learning_rate": 1e-2,
        "optimizer": None,
        "num_particles": 1,
        "rank": None,
        "num_samples": 1000,
        "init_strategy": None,
    },
    "nuts": {
        "num_warmup": 1000,
        "num_samples": 1000,
        "num_chains": 4,
        "chain_method": "sequential",
        "target_accept_prob": 0.8,
        "max_tree_depth": 10,
        "dense_mass": False,
        "init_strategy": None,
        "thinning": 1,
    },
}
_ALL_OPTIONS = {name: m for m, opts in _OPTIONS.items() for name in opts}


class Proximal(NamedTuple):
    """A non-smooth penalty for MAP, handled by its proximal operator (sparse estimates).

    The model adds the penalty as ``numpyro.factor`` sites (so NUTS and SVI see the full
    density); MAP removes those sites from the smooth objective and runs proximal gradient
    descent (:func:`~bayesneuro.infer.optimize.minimize_proximal`) with ``operator`` instead, so
    penalised weights become exactly zero.

    Attributes
    ----------
    operator : callable
        ``operator(z, step, *args) -> z``: the proximal operator of ``step * penalty`` on a
        dict of unconstrained site values (of the preconditioned variables, when a
        ``preconditioner`` is given). Keep the same function object across fits so the
        compiled program is reused.
    factors : tuple of str
        Names of the factor sites that hold the penalty.
    args : tuple
        Extra array arguments of ``operator`` (traced).
    """

    operator: Callable
    factors: tuple
    args: tuple = ()


class BlockHessian(NamedTuple):
    """A block-diagonal Hessian for Laplace: ``blocks[k]`` is the Hessian of the flat entries ``index[k]``.

    Returned by a ``hessian=`` hook of :func:`fit` (``method="laplace"``) for posteriors that
    factorise (e.g. a GLM's neurons): the Laplace approximation is then one Gaussian per block,
    with Cholesky factors, draws and log-determinant computed block by block, so nothing of
    size ``d x d`` is formed. Every flat position appears in exactly one block.

    Attributes
    ----------
    blocks : array, shape (block, size, size)
        Symmetric positive definite Hessian blocks of the negative log density.
    index : array of int, shape (block, size)
        Position in the flat unconstrained vector of each row / column of each block.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.infer import BlockHessian
    >>> h = BlockHessian(np.stack([2.0 * np.eye(2), 4.0 * np.eye(2)]), np.array([[0, 2], [1, 3]]))
    >>> h.dense().diagonal().tolist()
    [2.0, 4.0, 2.0, 4.0]
    """

    blocks: Any
    index: Any

    def dense(self) -> np.ndarray:
        """The full ``(d, d)`` matrix (for checks on small models)."""
        blocks, index = np.asarray(self.blocks), np.asarray(self.index)
        d = index.size
        out = np.zeros((d, d), dtype=blocks.dtype)
        for b, i in zip(blocks, index):
            out[np.ix_(i, i)] = b
        return out


#: memory for the Hessian-vector products of a Laplace Hessian pushed through the data at once
HESSIAN_MEMORY_BYTES = 2**30
#: Laplace keeps the dense covariance of a block-diagonal Hessian in ``info["cov"]`` up to this size
DENSE_COV_BYTES = 2**28


def fit(
    model: Callable,
    *,
    method: str,
    key: Any,
    coords: dict | None = None,
    dims: dict | None = None,
    progress: bool | None = None,
    model_kwargs: dict | None = None,
    shard: Any = None,
    **kwargs,
) -> FitResult:
    r"""Fit a NumPyro model by MAP, Laplace, SVI or NUTS.

    The model is any NumPyro function that takes its data as keyword arguments
    and marks its observations with ``obs=``. Built-in bayesneuro models and
    user-written ones go through exactly this function.

    Parameters
    ----------
    model : callable
        NumPyro model function.
    method : {"map", "laplace", "svi", "nuts"}
        ``"map"``: posterior mode by L-BFGS in the unconstrained space, without the
        Jacobian (so it is the mode of the density over the model's own
        parameters); one draw. ``"laplace"``: Gaussian at the mode of the
        unconstrained density with covariance the inverse of its exact Hessian;
        independent draws mapped back to the constrained space. ``"svi"``:
        variational inference with a NumPyro autoguide; draws from the guide.
        ``"nuts"``: the No-U-Turn sampler, several chains.
    key : jax.random key or int
        Required. The same key gives the same numbers.
    coords : dict, optional
        Coordinate values per dim name, e.g. ``SpikeData.coords``.
    dims : dict, optional
        Dim names per site or data argument, for axes no plate names.
    progress : bool, optional
        Show progress bars; default from ``BAYESNEURO_PROGRESS`` (on).
    model_kwargs : dict, optional
        Data for the model, for names that clash with the options below.
    shard : str, bayesneuro.parallel.Sharding or dict of str to int, optional
        Split data arguments across devices (:mod:`bayesneuro.parallel`): a dim name such as
        ``"time"``, ``"neuron"`` or ``"trial"`` splits every data argument that has that dim
        (named by the model's plates, or by `dims`) along it; ``{"counts": 1}`` names the
        arguments and axes directly. Every method works unchanged on sharded data; the result
        equals the unsharded fit up to rounding.
    **kwargs
        Method options (others are passed to the model as data):

        - map: ``max_iter=2000`` (iteration cap), ``tol=1e-6`` (on the largest gradient
          component, in the optimiser's variables), ``init_strategy``, ``preconditioner``
          (a *linear* map ``P`` from a dict of unconstrained site values to another, or a pair
          ``(P, args)`` called as ``P(z, *args)`` so that refits with new ``args`` arrays reuse
          the compiled program; L-BFGS then runs on ``z`` with ``u = u_init + P(z)``, and
          ``tol`` applies to the gradient in ``z``. A good ``P`` whitens the curvature, e.g.
          standardised features for GLMs).
          ``proximal`` (a :class:`Proximal`: non-smooth penalties such as a group lasso are
          optimised by FISTA, so penalised weights reach exact zeros; ``max_iter`` then counts
          FISTA iterations).
        - laplace: as map (without ``proximal``), plus ``num_samples=1000``,
          ``hessian_batch`` (how many Hessian columns, i.e. Hessian-vector products, pass
          through the data at once; default: as many as fit in about 1 GiB, so memory is
          ``O(data x hessian_batch + d^2)`` for ``d`` parameters) and ``hessian`` (a structured
          Hessian from the model's owner: ``hessian(x, unravel)`` at the flat unconstrained
          mode ``x`` returns the ``(d, d)`` Hessian of the negative log density there, or a
          :class:`BlockHessian` when it is block-diagonal, e.g. one block per neuron; Laplace
          then factorises and draws block by block).
        - svi: ``guide="mean-field"`` (or ``"full-rank"``, ``"low-rank"``, an
          AutoGuide class, or a guide function), ``num_steps=5000``,
          ``learning_rate=1e-2`` (Adam, cosine-decayed to 1% over the steps),
          ``optimizer`` (an optax optimiser, replacing the default),
          ``num_particles=1``, ``rank`` (low-rank), ``num_samples=1000``.
        - nuts: ``num_warmup=1000``, ``num_samples=1000``, ``num_chains=4``,
          ``chain_method="sequential"`` (or ``"vectorized"``, ``"parallel"``),
          ``target_accept_prob=0.8``, ``max_tree_depth=10``,
          ``dense_mass=False``, ``thinning=1``.

    Returns
    -------
    FitResult
        Draws shaped ``(chain, draw, ...)``; ``.to_inference_data()`` gives ArviZ.

    Raises
    ------
    ValueError
        Unknown method, an option of another method, or data containing NaN/inf.
    TypeError
        No key.

    Examples
    --------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from bayesneuro import infer
    >>> def rate_model(counts=None, n_bins=10):
    ...     rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
    ...     with numpyro.plate("time", n_bins):
    ...         numpyro.sample("counts", dist.Poisson(rate), obs=counts)
    >>> counts = jax.numpy.array([3, 1, 4, 1, 5, 2, 6, 5, 3, 5])
    >>> res = infer.fit(rate_model, method="map", key=jax.random.key(0), counts=counts, progress=False)
    >>> round(float(res.params["rate"]), 4)  # (2 - 1 + 35) / (1 + 10)
    3.2727
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model function, got {type(model).__name__}")
    rng = _model.as_key(key)
    options = dict(_OPTIONS[method])
    data = dict(model_kwargs or {})
    for name, value in kwargs.items():
        if name in options:
            options[name] = value
        elif name in _ALL_OPTIONS:
            raise ValueError(
                f"{name!r} is an option of method={_ALL_OPTIONS[name]!r}, not of method={method!r}"
                " (pass model data of that name through model_kwargs={...})"
            )
        else:
            data[name] = value
    _check_finite(data)
    if shard is not None:
        from ..parallel import shard_data

        if isinstance(shard, str):
            shard = _dim_axes(model, data, shard, dict(dims or {}))
        data = shard_data(data, shard)
    progress = progress_default() if progress is None else bool(progress)
    runner = {"map": _fit_map, "laplace": _fit_laplace, "svi": _fit_svi, "nuts": _fit_nuts}[method]
    result = runner(model, data, rng, progress, **options)
    result.coords = dict(coords or {})
    result.dims = dict(dims or {})
    if method in ("nuts", "svi"):
        result.info["diagnostics"] = _diagnose(result)
    return result


def _diagnose(result: FitResult):
    """:func:`bayesneuro.diagnostics.check` on the fit's draws, warning at the caller of ``fit``.

    NUTS: R-hat, ESS, divergences and NaN draws, on the draws and sampler statistics alone (no
    log-likelihood). SVI: NaN draws only (its draws are independent; the ELBO is checked by
    :func:`~bayesneuro.diagnostics.check_svi`). The warning is a
    :class:`~bayesneuro.diagnostics.ConvergenceWarning` that estimators pass on.
    """
    import arviz as az

    from ..diagnostics import Diagnostics, _nonfinite_problem, check

    if result.method == "svi":  # independent draws: only NaN/inf can be flagged (no ESS of every scalar)
        bad = [k for k, v in result.samples.items()
               if np.asarray(v).dtype.kind in "fc" and not np.all(np.isfinite(np.asarray(v)))]
        problems = (_nonfinite_problem(bad),) if bad else ()
        if problems:
            warnings.warn(problems[0], ConvergenceWarning, stacklevel=4)
        return Diagnostics({}, {}, {}, 0, not problems, problems)
    posterior = az.convert_to_dataset({k: np.asarray(v) for k, v in result.samples.items()})
    posterior.attrs["method"] = result.method
    groups = {"posterior": posterior}
    if result.sample_stats:
        groups["sample_stats"] = az.convert_to_dataset(
            {k: np.asarray(v) for k, v in result.sample_stats.items()})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
        idata = az.InferenceData(**groups)
    return check(idata, warn=True, stacklevel=4)


def _dim_axes(model: Callable, data: dict, dim: str, dims: dict) -> dict[str, int]:
    """The axis of `dim` in every array argument that has it (plates, then `dims`)."""
    from .convert import _array_dims, _plate_sizes, site_dims

    trace = _model.trace_model(model, data)
    infos = _model.site_infos(trace)
    sizes = _plate_sizes(trace)
    axes = {}
    for name, value in data.items():
        if not isinstance(value, (np.ndarray, jax.Array)) or np.ndim(value) == 0:
            continue
        info = infos.get(name)
        if info is not None and info.observed and tuple(info.shape) == tuple(np.shape(value)):
            names = site_dims(info, dims)
        else:
            names = _array_dims(name, tuple(np.shape(value)), dims, sizes)
        if dim in names:
            axes[name] = names.index(dim)
    if not axes:
        raise ValueError(
            f"shard={dim!r}: no data argument has a {dim!r} dim (dims come from the model's plates "
            "and from dims=...); name the arguments and axes instead, e.g. shard={'counts': 0}"
        )
    return axes


def _check_finite(data: dict) -> None:
    for name, value in data.items():
        if isinstance(value, (np.ndarray, jax.Array, list, tuple, float)):
            try:
                arr = np.asarray(value)
            except (ValueError, TypeError):
                continue
            if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
                bad = "NaN" if np.isnan(arr).any() else "infinite values"
                raise ValueError(f"model argument {name!r} contains {bad}")


class _Layout(NamedTuple):
    """The flat unconstrained parameter vector of a model on one data layout.

    Shared by :func:`fit` (MAP, Laplace) and :func:`~bayesneuro.infer.fit_streaming`.
    """

    transforms: dict  # site -> bijection from the unconstrained space
    unravel: Callable  # flat vector -> dict of unconstrained site values
    constrain: Callable  # jitted (n, d) flat unconstrained draws -> dict of constrained draws

    def log_jacobian(self, z: dict, params: dict) -> jax.Array:
        """``log |d constrain / d z|`` at the unconstrained values `z` (constrained: `params`)."""
        return sum(jnp.sum(self.transforms[n].log_abs_det_jacobian(z[n], params[n])) for n in z)


def _holds_tracer(obj, depth: int = 4) -> bool:
    """Whether `obj` (a transform, its attributes, containers of them) holds a JAX tracer."""
    if isinstance(obj, jax.core.Tracer):
        return True
    if depth == 0:
        return False
    if isinstance(obj, (list, tuple)):
        return any(_holds_tracer(v, depth - 1) for v in obj)
    if isinstance(obj, dict):
        return any(_holds_tracer(v, depth - 1) for v in obj.values())
    attrs = getattr(obj, "__dict__", None)
    return attrs is not None and any(_holds_tracer(v, depth - 1) for v in attrs.values())


def _layout(model: Callable, data: dict, method: str) -> _Layout:
    """Trace `model` on `data`, check its latent sites suit `method`, and flatten them.

    The model is traced on abstract values (nothing runs eagerly, nothing compiles); only a
    support whose bounds depend on the model's own values (a transform that would hold a
    tracer) makes it trace concretely, as before.
    """
    trace, extra = _model.abstract_trace(model, data)
    _model.check_continuous(trace, method)
    latents = _model.latent_sites(trace)
    if not latents:
        raise ValueError(f"the model has no latent sites to fit (method={method!r})")
    tfs = _model.transforms(trace)
    if "unravel" in extra and not _holds_tracer(tfs):
        unravel = extra["unravel"]
    else:
        trace = _model.trace_model(model, data)
        latents = _model.latent_sites(trace)
        tfs = _model.transforms(trace)
        _, unravel = ravel_pytree(_model.unconstrain({n: s["value"] for n, s in latents.items()}, tfs))
    constrain = jit(jax.vmap(lambda u: _model.constrain(unravel(u), tfs)))
    return _Layout(tfs, unravel, constrain)


def _not_pd_error() -> np.linalg.LinAlgError:
    return np.linalg.LinAlgError(
        "laplace: the Hessian of the negative log posterior at the mode is not positive "
        "definite, so there is no Gaussian approximation there. The posterior may be "
        "improper or flat in some direction: add priors, or use method='nuts'."
    )


def _gaussian_at_mode(hess, x, value: float, key, num_samples: int, unravel) -> tuple[jax.Array, dict]:
    """Laplace: ``num_samples`` flat draws from ``N(x, hess^-1)`` and the approximation's details.

    `hess` is the ``(d, d)`` Hessian or a :class:`BlockHessian`. `value` is the negative log
    density at the mode `x`. Returns the draws ``(num_samples, d)`` and ``info`` entries
    ``mode``, ``cov`` (block fits: only up to ``DENSE_COV_BYTES``; always ``cov_blocks`` and
    ``cov_index``), ``unravel``, ``log_marginal_likelihood``.
    """
    if isinstance(hess, BlockHessian):
        return _block_gaussian_at_mode(hess, x, value, key, num_samples, unravel)
    d = x.shape[0]
    if _on_cpu(x):
        u, cov, log_det_h, finite, mode = _dense_gaussian_host(hess, x, key, num_samples, unravel)
    else:
        u, cov, log_det_h, finite, mode = _dense_gaussian(jnp.asarray(hess), x, key, num_samples, unravel)
    if not bool(finite):
        raise _not_pd_error()
    info = {
        "mode": mode, "cov": np.asarray(cov), "unravel": unravel,
        "log_marginal_likelihood": -value + 0.5 * d * np.log(2.0 * np.pi) - 0.5 * float(log_det_h),
    }
    return u, info


def _on_cpu(x) -> bool:
    devices = getattr(x, "devices", None)
    return all(d.platform == "cpu" for d in devices()) if devices is not None else jax.default_backend() == "cpu"


@functools.lru_cache(maxsize=64)
def _jit_unravel(unravel: Callable) -> Callable:
    return jit(unravel)


def _dense_gaussian_host(hess, x, key, num_samples, unravel):
    """:func:`_dense_gaussian` with the factorisation in NumPy/SciPy (LAPACK on the host, no XLA
    program per Hessian size: compiling the jitted one took about 1 s on a CPU). The standard
    normal draws are JAX's, from the same `key`, so both give the same draws."""
    import scipy.linalg

    dtype = np.dtype(x.dtype)
    hess = np.asarray(hess, dtype=dtype)
    hess = 0.5 * (hess + hess.T)
    d = x.shape[0]
    eps = np.asarray(jax.random.normal(key, (num_samples, d), dtype=x.dtype))
    try:
        chol = np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return None, None, None, False, None
    if not np.all(np.isfinite(chol)):
        return None, None, None, False, None
    u = np.asarray(x) + scipy.linalg.solve_triangular(chol, eps.T, lower=True, trans="T").T
    cov = scipy.linalg.cho_solve((chol, True), np.eye(d, dtype=dtype))
    log_det_h = 2.0 * np.sum(np.log(np.diag(chol)))
    return jnp.asarray(u.astype(dtype)), cov.astype(dtype), log_det_h, True, _jit_unravel(unravel)(x)


@functools.partial(jit, static_argnames=("num_samples", "unravel"))
def _dense_gaussian(hess, x, key, num_samples, unravel):
    """Cholesky factor, ``num_samples`` draws, covariance and ``log det`` of a dense Hessian."""
    hess = 0.5 * (hess + hess.T)
    chol = jnp.linalg.cholesky(hess)
    d = x.shape[0]
    eps = jax.random.normal(key, (num_samples, d), dtype=x.dtype)
    # u = mode + L^{-T} eps has covariance (L L^T)^{-1} = H^{-1}
    u = x + jax.scipy.linalg.solve_triangular(chol, eps.T, lower=True, trans="T").T
    cov = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(d, dtype=hess.dtype))
    log_det_h = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return u, cov, log_det_h, jnp.all(jnp.isfinite(chol)), unravel(x)


@functools.partial(jit, static_argnames=("num_samples",))
def _block_gaussian(blocks, index, x, key, num_samples):
    """Cholesky factors, covariances, ``num_samples`` draws and ``log det`` of a block Hessian."""
    blocks = 0.5 * (blocks + jnp.swapaxes(blocks, -1, -2))
    chol = jnp.linalg.cholesky(blocks)
    eye = jnp.eye(blocks.shape[-1], dtype=blocks.dtype)
    cov = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), eye))(chol)
    eps = jax.random.normal(key, index.shape + (num_samples,), dtype=x.dtype)
    # u_block = mode_block + L^{-T} eps has covariance (L L^T)^{-1}
    z = jax.vmap(lambda c, e: jax.scipy.linalg.solve_triangular(c, e, lower=True, trans="T"))(chol, eps)
    flat = jnp.transpose(z, (2, 0, 1)).reshape(num_samples, -1)
    u = jnp.broadcast_to(x, (num_samples, x.shape[0])).at[:, index.reshape(-1)].add(flat)
    diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
    return u, cov, 2.0 * jnp.sum(jnp.log(diag)), jnp.all(jnp.isfinite(chol))


def _block_gaussian_at_mode(hess, x, value, key, num_samples, unravel):
    blocks = jnp.asarray(hess.blocks, dtype=x.dtype)
    index = np.asarray(hess.index)
    d = x.shape[0]
    if index.ndim != 2 or blocks.shape != index.shape + index.shape[-1:] or not np.array_equal(
        np.sort(index.reshape(-1)), np.arange(d)
    ):
        raise ValueError(
            f"laplace: the hessian hook returned blocks {tuple(blocks.shape)} and index "
            f"{index.shape} that do not cover the {d} parameters once each"
        )
    u, cov, log_det_h, finite = _block_gaussian(blocks, jnp.asarray(index), x, key, num_samples)
    if not bool(finite):
        raise _not_pd_error()
    log_det_h = float(log_det_h)
    info = {
        "mode": unravel(x), "cov_blocks": np.asarray(cov), "cov_index": index, "unravel": unravel,
        "log_marginal_likelihood": -value + 0.5 * d * np.log(2.0 * np.pi) - 0.5 * log_det_h,
    }
    if d * d * x.dtype.itemsize <= DENSE_COV_BYTES:
        info["cov"] = BlockHessian(info["cov_blocks"], index).dense()
    return u, info


def hessian_columns(fun: Callable, x, *args, batch: int) -> jax.Array:
    """The Hessian of ``fun(x, *args)`` in ``x`` (flat), ``batch`` columns at a time.

    Each column is a Hessian-vector product (forward over reverse); ``jax.lax.map`` pushes
    ``batch`` of them through ``fun`` at once, so memory is ``O(batch x cost of fun + d^2)``
    where :func:`jax.hessian` pushes all ``d``. Call under ``jax.jit`` with ``batch`` static.
    """
    grad = jax.grad(fun)
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    cols = jax.lax.map(lambda v: jax.jvp(lambda y: grad(y, *args), (x,), (v,))[1], eye,
                       batch_size=max(1, min(int(batch), x.shape[0])))
    return 0.5 * (cols + cols.T)


def auto_hessian_batch(d: int, data_bytes: int, budget: int | None = None) -> int:
    """Hessian columns per pass for ``d`` parameters over data of ``data_bytes`` (memory budget).

    A Hessian-vector product keeps a few copies of the data-sized intermediates of the
    forward and reverse passes; we allow ``8 x data_bytes + 64 d`` bytes per column.
    """
    budget = HESSIAN_MEMORY_BYTES if budget is None else budget
    per_column = 8 * max(int(data_bytes), 1) + 64 * d
    return int(max(1, min(d, budget // per_column)))


_jit_hessian_columns = jit(hessian_columns, static_argnames=("fun", "batch"))


class _Program(NamedTuple):
    """Compiled pieces of MAP and Laplace for one model and one set of data shapes."""

    unravel: Callable
    neg_log_joint: Callable  # (u, arrays) -> -log p(data, constrain(u)), no Jacobian
    potential: Callable  # (u, arrays) -> the same with the log-Jacobian: the unconstrained density
    hessian: Callable  # (u, arrays, batch) -> Hessian of potential, batch columns at a time
    draws: Callable  # jitted ((n, d) flat unconstrained draws, key, arrays) -> every site's draws
    init: Callable  # jitted (key, arrays, strategy=...) -> flat unconstrained starting point


_PROGRAMS: dict = {}


def _split_data(data: dict) -> tuple[dict, dict]:
    arrays = {k: _model.to_device(v) for k, v in data.items() if isinstance(v, (np.ndarray, jax.Array))}
    static = {k: v for k, v in data.items() if k not in arrays}
    return arrays, static


def _program(model, data: dict, method: str) -> tuple[_Program, dict]:
    """The compiled program for this model and data layout (cached when the layout is hashable)."""
    arrays, static = _split_data(data)
    cache_key = None
    try:
        cache_key = (
            model,
            tuple(sorted(static.items())),
            tuple(sorted((k, v.shape, str(v.dtype)) for k, v in arrays.items())),
        )
        hash(cache_key)
    except TypeError:  # unhashable static data (e.g. a list): compile afresh
        cache_key = None
    if cache_key is not None and cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key], arrays
    layout = _layout(model, data, method)
    tfs, unravel = layout.transforms, layout.unravel

    def neg_log_joint(u, arr):
        params = _model.constrain(unravel(u), tfs)
        return -log_density(model, (), {**static, **arr}, params)[0]

    def potential(u, arr):
        z = unravel(u)
        params = _model.constrain(z, tfs)
        return -log_density(model, (), {**static, **arr}, params)[0] - layout.log_jacobian(z, params)

    def draws(u, key, arr):  # constrain and complete in one program
        latent = jax.vmap(lambda v: _model.constrain(unravel(v), tfs))(u)
        return _model.complete_samples(model, {**static, **arr}, latent, key)

    def init(key, arr, traced, strategy):
        func, static_kw = strategy
        return _initial_point(model, {**static, **arr}, key, functools.partial(func, **dict(static_kw), **traced))

    prog = _Program(
        unravel,
        neg_log_joint,
        potential,
        functools.partial(_hessian_of, potential),
        jit(draws),
        jit(init, static_argnames=("strategy",)),
    )
    if cache_key is not None:
        if len(_PROGRAMS) >= 32:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[cache_key] = prog
    return prog, arrays


def _hessian_of(potential, u, arrays, batch):
    return _jit_hessian_columns(potential, u, arrays, batch=batch)


#: the default init strategy, one object so that the compiled starting-point program is reused
_DEFAULT_INIT = init_to_median(num_samples=15)


@functools.partial(jit, static_argnums=1)
def _split_key(key, n):
    return jax.random.split(key, n)


def _split(key, n: int) -> list:
    """``jax.random.split(key, n)`` as a list of keys (one small program per ``n``, not two)."""
    return list(np.asarray(_split_key(key, n)))


def _is_traceable(value) -> bool:
    """Arrays, or a dict of numbers and arrays (``init_to_value(values=...)``): traced, not static."""
    if isinstance(value, (np.ndarray, jax.Array)):
        return True
    return isinstance(value, dict) and all(
        isinstance(v, (np.ndarray, jax.Array, float, int, np.number)) and not isinstance(v, bool)
        for v in value.values()
    )


def _start(prog: _Program, model, data, arrays, rng, init_strategy) -> jax.Array:
    """The starting point, by the program's compiled init (eagerly for a strategy it cannot key).

    A strategy made by ``functools.partial`` (numpyro's ``init_to_value(values=...)``,
    ``init_to_median(num_samples=...)``) is split into its function and hashable options
    (static) and its array values (traced), so that refits with new start values reuse the
    compiled program.
    """
    strategy = init_strategy or _DEFAULT_INIT
    if isinstance(strategy, functools.partial) and not strategy.args:
        traced = {k: v for k, v in strategy.keywords.items() if _is_traceable(v)}
        traced = jax.tree.map(np.asarray, traced)
        key = (strategy.func, tuple(sorted((k, v) for k, v in strategy.keywords.items() if k not in traced)))
    else:
        traced, key = {}, (strategy, ())
    try:
        hash(key)
    except TypeError:
        return _initial_point(model, data, rng, strategy)
    return prog.init(rng, arrays, traced, strategy=key)


def _initial_point(model, data, rng, init_strategy) -> jax.Array:
    """Flat unconstrained starting point from an init strategy (default: prior medians)."""
    strategy = init_strategy or _DEFAULT_INIT
    try:
        seeded = handlers.substitute(handlers.seed(model, rng), substitute_fn=strategy)
        trace = handlers.trace(seeded).get_trace(**data)
    except NotImplementedError:  # a prior that cannot be sampled (improper): start uniformly
        if init_strategy is not None:
            raise
        trace = _model.trace_model(model, data, rng)
    latents = _model.latent_sites(trace)
    tfs = _model.transforms(trace)
    return ravel_pytree(_model.unconstrain({n: s["value"] for n, s in latents.items()}, tfs))[0]


def _not_converged_warning(method: str, message: str, grad_norm: float, n_iter: int, *, at_cap: bool,
                           stacklevel: int = 4):
    """Warn that an optimiser stopped short of the mode; ``at_cap``: it ran out of iterations (else its
    line search found no decrease)."""
    if at_cap:
        advice = "Raise max_iter, rescale covariates, or use stronger priors."
    else:
        advice = ("Check the model for non-smooth terms (abs, max, rounding) or a custom gradient, or "
                  "fit in float64 (jax.config.update('jax_enable_x64', True)).")
    warnings.warn(
        f"{method}: the optimiser did not converge ({message}; gradient norm {grad_norm:.2e} "
        f"after {n_iter} iterations), so the estimate is not at the mode. {advice}",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )


@functools.lru_cache(maxsize=64)
def _preconditioned(fun, unravel, pfun):
    """Objective in the preconditioned variables ``z`` (cached, so refits compile once)."""

    def to_u(z, u_start, pargs):
        return u_start + ravel_pytree(pfun(unravel(z), *pargs))[0]

    def fun_z(z, arrays, u_start, pargs):
        return fun(to_u(z, u_start, pargs), arrays)

    # jitted: mapping the optimum back eagerly would compile one program per operation
    return fun_z, jit(to_u)


@functools.lru_cache(maxsize=64)
def _blocked(model, factors: tuple):
    """``model`` without the penalty factor sites."""
    return handlers.block(model, hide=list(factors))


@functools.lru_cache(maxsize=64)
def _flat_prox(operator, unravel):
    def prox(x, step, *args):
        return ravel_pytree(operator(unravel(x), step, *args))[0]

    return prox


def _optimum(
    model, data, rng, progress, method, max_iter, tol, init_strategy, jacobian, preconditioner=None,
    proximal=None,
):
    prog, arrays = _program(model, data, method)
    u0 = _start(prog, model, data, arrays, rng, init_strategy)
    fun = prog.potential if jacobian else prog.neg_log_joint
    desc = method.upper() if method == "map" else method.capitalize()
    if proximal is not None:
        if not isinstance(proximal, Proximal):
            raise TypeError(f"proximal must be a bayesneuro.infer.Proximal, got {type(proximal).__name__}")
        trace, _ = _model.abstract_trace(model, data)
        missing = [f for f in proximal.factors if f not in trace]
        if missing:
            raise ValueError(f"proximal: the model has no factor sites {missing}")
        smooth_prog, _ = _program(_blocked(model, tuple(proximal.factors)), data, method)
        prox = _flat_prox(proximal.operator, prog.unravel)
        if preconditioner is None:
            smooth, full, x0, args, to_u = smooth_prog.neg_log_joint, fun, u0, (arrays,), None
        else:
            pfun, pargs = preconditioner if isinstance(preconditioner, tuple) else (preconditioner, ())
            smooth, to_u = _preconditioned(smooth_prog.neg_log_joint, prog.unravel, pfun)
            full, _ = _preconditioned(fun, prog.unravel, pfun)
            x0, args = jnp.zeros_like(u0), (arrays, u0, pargs)
        opt = minimize_proximal(
            smooth, full, prox, x0, args=args, prox_args=tuple(proximal.args), max_iter=max_iter,
            tol=tol, progress=progress, desc=f"{desc} (FISTA)",
        )
        if to_u is not None:
            opt = opt._replace(x=to_u(opt.x, u0, pargs))
    elif preconditioner is None:
        opt = minimize(fun, u0, args=(arrays,), max_iter=max_iter, tol=tol, progress=progress, desc=desc)
    else:
        pfun, pargs = preconditioner if isinstance(preconditioner, tuple) else (preconditioner, ())
        fun_z, to_u = _preconditioned(fun, prog.unravel, pfun)
        opt = minimize(
            fun_z, jnp.zeros_like(u0), args=(arrays, u0, pargs), max_iter=max_iter, tol=tol,
            progress=progress, desc=desc,
        )
        opt = opt._replace(x=to_u(opt.x, u0, pargs))
    if not opt.converged:
        _not_converged_warning(method, opt.message, opt.grad_norm, opt.n_iter, at_cap=opt.n_iter >= max_iter)
    info = {
        "converged": opt.converged, "n_iter": opt.n_iter, "objective": opt.value,
        "grad_norm": opt.grad_norm, "message": opt.message,
    }
    return prog, arrays, opt, info


def _fit_map(model, data, rng, progress, *, max_iter, tol, init_strategy, preconditioner, proximal):
    k_init, k_det = _split(rng, 2)
    prog, arrays, opt, info = _optimum(
        model, data, k_init, progress, "map", max_iter, tol, init_strategy, jacobian=False,
        preconditioner=preconditioner, proximal=proximal,
    )
    samples = stack_chain(prog.draws(np.asarray(opt.x)[None], k_det, arrays))
    return FitResult("map", samples, model, data, None, info)


def _fit_laplace(
    model, data, rng, progress, *, max_iter, tol, init_strategy, preconditioner, num_samples, hessian,
    hessian_batch,
):
    k_init, k_draw, k_det = _split(rng, 3)
    prog, arrays, opt, info = _optimum(
        model, data, k_init, progress, "laplace", max_iter, tol, init_strategy, jacobian=True,
        preconditioner=preconditioner,
    )
    if hessian is not None:
        if not callable(hessian):
            raise TypeError(f"hessian must be a callable hessian(x, unravel), got {type(hessian).__name__}")
        hess = hessian(opt.x, prog.unravel)
        info["hessian"] = "structured"
    else:
        d = int(opt.x.shape[0])
        batch = hessian_batch or auto_hessian_batch(d, sum(a.nbytes for a in arrays.values()))
        hess = prog.hessian(opt.x, arrays, int(batch))
        info["hessian"] = f"dense, {int(batch)} columns per pass"
    u, gauss = _gaussian_at_mode(hess, opt.x, opt.value, k_draw, num_samples, prog.unravel)
    samples = stack_chain(prog.draws(u, k_det, arrays))
    info.update(gauss)
    return FitResult("laplace", samples, model, data, None, info)


def _make_guide(model, guide, rank, init_strategy):
    init = init_strategy or init_to_median(num_samples=15)
    if isinstance(guide, str):
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {tuple(GUIDES)} or a guide, got {guide!r}")
        cls = GUIDES[guide]
        if cls is autoguide.AutoLowRankMultivariateNormal and rank is not None:
            return cls(model, rank=rank, init_loc_fn=init)
        return cls(model, init_loc_fn=init)
    if isinstance(guide, type) and issubclass(guide, autoguide.AutoGuide):
        return guide(model, init_loc_fn=init)
    if callable(guide):
        return guide
    raise TypeError(f"guide must be a name, an AutoGuide class or a guide function, got {guide!r}")


def _fit_svi(
    model, data, rng, progress, *, guide, num_steps, learning_rate, optimizer, num_particles,
    rank, num_samples, init_strategy,
):
    import optax

    k_init, k_run, k_draw, k_det = jax.random.split(rng, 4)
    trace = _model.trace_model(model, data, k_init)
    _model.check_continuous(trace, "svi")
    g = _make_guide(model, guide, rank, init_strategy)
    if optimizer is None:
        # Adam with a cosine decay to 1% of the rate: large early steps, little jitter at the end.
        optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01))
    opt = optimizer
    svi = SVI(model, g, opt, loss=Trace_ELBO(num_particles=num_particles))
    run = svi.run(k_run, num_steps, progress_bar=progress, stable_update=True, **data)
    losses = np.asarray(run.losses)
    if not np.all(np.isfinite(losses[-max(1, num_steps // 10):])):
        raise FloatingPointError(
            "svi: the ELBO became non-finite; lower learning_rate or check the model's scale"
        )
    latent_names = list(_model.latent_sites(trace))
    if hasattr(g, "sample_posterior"):
        draws = g.sample_posterior(k_draw, run.params, sample_shape=(num_samples,))
    else:
        pred = numpyro.infer.Predictive(g, params=run.params, num_samples=num_samples)
        draws = pred(k_draw, **data)
    draws = {k: v for k, v in draws.items() if k in latent_names}
    samples = stack_chain(_model.complete_samples(model, data, draws, k_det))
    converged = check_svi(losses, warn=True, stacklevel=3)
    info = {"losses": losses, "params": run.params, "guide": g, "elbo_converged": converged}
    return FitResult("svi", samples, model, data, None, info)


_STAT_NAMES = {
    "diverging": "diverging",
    "energy": "energy",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
    "adapt_state.step_size": "step_size",
    "potential_energy": "lp",
}


def _fit_nuts(
    model, data, rng, progress, *, num_warmup, num_samples, num_chains, chain_method,
    target_accept_prob, max_tree_depth, dense_mass, init_strategy, thinning,
):
    if chain_method not in ("sequential", "vectorized", "parallel"):
        raise ValueError(
            f"chain_method must be 'sequential', 'vectorized' or 'parallel', got {chain_method!r}"
        )
    if chain_method == "parallel" and jax.local_device_count() < num_chains:
        warnings.warn(
            f"chain_method='parallel' needs {num_chains} devices but {jax.local_device_count()} "
            "are visible; running chains sequentially instead (on CPU, set XLA_FLAGS="
            "--xla_force_host_platform_device_count=N before importing jax).",
            RuntimeWarning,
            stacklevel=3,
        )
        chain_method = "sequential"
    kernel = NUTS(
        model, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
        dense_mass=dense_mass, init_strategy=init_strategy or init_to_median(num_samples=15),
    )
    mcmc = MCMC(
        kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
        chain_method=chain_method, progress_bar=progress, thinning=thinning,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There are not enough devices")
        mcmc.run(rng, extra_fields=tuple(_STAT_NAMES), **data)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {_STAT_NAMES[k]: np.asarray(v) for k, v in extra.items() if k in _STAT_NAMES}
    stats["lp"] = -stats["lp"]
    stats["tree_depth"] = np.floor(np.log2(stats["n_steps"] + 1)).astype(np.int64)
    return FitResult("nuts", samples, model, data, stats, {"num_warmup": num_warmup})
