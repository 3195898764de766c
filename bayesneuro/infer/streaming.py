"""MAP and Laplace for recordings larger than device memory: the likelihood streamed in time chunks.

For a model whose time bins are conditionally independent given its parameters (a GLM on a
precomputed design, rate models, regression decoders), the log joint is

    log p(theta) + sum_c log p(X_c | theta),

a sum over time chunks ``c``. :func:`fit_streaming` keeps the data on the host (NumPy arrays or
``np.memmap`` files of any size), moves one chunk at a time to the device, evaluates that
chunk's log-likelihood and gradient with one compiled program (two: the last chunk may be
shorter), and adds them up; L-BFGS (scipy) runs on the sums. The next chunk's transfer is issued
before the current chunk's result is awaited, so copying overlaps computing. Peak device memory
is one or two chunks, whatever the length of the recording. Laplace adds the chunks' Hessians.

Sites are split by what they are: latent ``sample`` sites make the prior, evaluated once; observed
sites (and ``numpyro.factor`` terms) make the likelihood, evaluated per chunk. A model whose
time bins depend on each other (an HMM, a linear dynamical system) cannot be split this way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from bayesneuro._jit import jit

from .._progress import finish, progress_bar
from . import _model
from .fit import (
    _check_finite,
    _gaussian_at_mode,
    _initial_point,
    _jit_hessian_columns,
    _layout,
    _not_converged_warning,
    auto_hessian_batch,
    progress_default,
)
from .result import FitResult, stack_chain

__all__ = ["chunk_slices", "fit_streaming"]


def chunk_slices(n_time: int, chunk_size: int) -> list[slice]:
    """Consecutive slices of at most `chunk_size` bins covering ``range(n_time)``.

    Examples
    --------
    >>> from bayesneuro.infer.streaming import chunk_slices
    >>> chunk_slices(10, 4)
    [slice(0, 4, None), slice(4, 8, None), slice(8, 10, None)]
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (time bins per chunk), got {chunk_size!r}")
    return [slice(i, min(i + int(chunk_size), n_time)) for i in range(0, n_time, int(chunk_size))]


def _site_terms(model: Callable, kwargs: dict, params: dict) -> tuple[jax.Array, jax.Array]:
    """(log prior, log likelihood) of `params` under `model` with data `kwargs`."""
    tr = handlers.trace(handlers.substitute(model, data=params)).get_trace(**kwargs)
    log_prior = jnp.zeros(())
    log_lik = jnp.zeros(())
    for site in tr.values():
        if site["type"] != "sample":
            continue
        lp = site["fn"].log_prob(site["value"])
        if site.get("scale") is not None:
            lp = site["scale"] * lp
        if site["is_observed"]:
            log_lik = log_lik + jnp.sum(lp)
        else:
            log_prior = log_prior + jnp.sum(lp)
    return log_prior, log_lik


def _take(value: Any, axis: int, sl: slice) -> np.ndarray:
    index = [slice(None)] * np.ndim(value)
    index[axis] = sl
    return np.asarray(value[tuple(index)])


def fit_streaming(
    model: Callable,
    *,
    method: str = "map",
    key: Any,
    time_axes: Mapping[str, int],
    chunk_size: int,
    max_iter: int = 1000,
    tol: float = 1e-6,
    num_samples: int = 1000,
    init_strategy: Any = None,
    shard: Any = None,
    coords: dict | None = None,
    dims: dict | None = None,
    progress: bool | None = None,
    **data,
) -> FitResult:
    """Fit by MAP or Laplace with the likelihood streamed through the device in time chunks.

    Parameters
    ----------
    model : callable
        NumPyro model whose time bins are conditionally independent given its latent sites
        (plate sizes read from the data, so that a chunk is a valid input).
    method : {"map", "laplace"}
        As in :func:`bayesneuro.fit`: the mode without the Jacobian, or a Gaussian at the mode
        of the unconstrained density with the exact Hessian.
    key : jax.random key or int
        Required.
    time_axes : dict of str to int
        The time axis of every time-indexed data argument (e.g. ``{"counts": 0, "design": 0}``);
        they must all have the same number of bins. Other arguments go whole to every chunk.
    chunk_size : int
        Time bins per chunk: the device holds about one or two chunks of every time-indexed
        argument at a time.
    max_iter, tol : int, float
        L-BFGS iteration cap and the gradient tolerance (infinity norm).
    num_samples : int
        Laplace draws.
    init_strategy : callable, optional
        NumPyro init strategy (default prior medians), applied on the first chunk.
    shard : bayesneuro.parallel.Sharding or dict, optional
        Also split each chunk across devices (:mod:`bayesneuro.parallel`).
    coords, dims : dict, optional
        As in :func:`bayesneuro.fit`.
    progress : bool, optional
        A tqdm bar over L-BFGS iterations; default from ``BAYESNEURO_PROGRESS``.
    **data
        The model's data: NumPy arrays or memory-mapped files (``np.load(..., mmap_mode="r")``,
        ``np.memmap``); chunks are read from them one at a time.

    Returns
    -------
    FitResult
        As from :func:`bayesneuro.fit` (``info["n_chunks"]``, ``info["chunk_size"]`` added).
        Its ``model_kwargs`` are the full data: ``to_inference_data(log_likelihood=False)``
        avoids evaluating the pointwise likelihood of the whole recording at once.

    Raises
    ------
    ValueError
        Unknown method, missing or mismatched time-indexed arguments, bad chunk size, NaN in
        a chunk, or a non-finite objective.

    Examples
    --------
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from bayesneuro.infer import fit_streaming
    >>> def rate_model(counts=None):
    ...     rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
    ...     with numpyro.plate("time", counts.shape[0]):
    ...         numpyro.sample("counts", dist.Poisson(rate), obs=counts)
    >>> counts = np.array([3, 1, 4, 1, 5, 2, 6, 5, 3, 5])
    >>> res = fit_streaming(rate_model, key=0, time_axes={"counts": 0}, chunk_size=4,
    ...                     counts=counts, progress=False)
    >>> round(float(res.params["rate"]), 4)  # (2 - 1 + 35) / (1 + 10), as with bn.fit
    3.2727
    """
    from scipy.optimize import minimize as scipy_minimize

    if method not in ("map", "laplace"):
        raise ValueError(f"fit_streaming: method must be 'map' or 'laplace', got {method!r}")
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model function, got {type(model).__name__}")
    rng = _model.as_key(key)
    if not isinstance(time_axes, Mapping) or not time_axes:
        raise ValueError("time_axes must name at least one time-indexed data argument, e.g. {'counts': 0}")
    lengths = {}
    for name, axis in time_axes.items():
        if name not in data:
            raise ValueError(f"time_axes names {name!r}, which is not a data argument; got {sorted(data)}")
        if not hasattr(data[name], "shape"):
            data[name] = np.asarray(data[name])
        shape = data[name].shape
        if not isinstance(axis, (int, np.integer)) or not -len(shape) <= axis < len(shape):
            raise ValueError(f"time axis {axis!r} is out of range for {name!r} of shape {shape}")
        lengths[name] = shape[axis]
    if len(set(lengths.values())) != 1:
        raise ValueError(f"time-indexed arguments differ in length: {lengths}; they must match bin for bin")
    n_time = next(iter(lengths.values()))
    if n_time == 0:
        raise ValueError("the data have no time bins")
    slices = chunk_slices(n_time, chunk_size)
    static = {k: v for k, v in data.items() if k not in time_axes}
    _check_finite({k: v for k, v in static.items()})
    progress = progress_default() if progress is None else bool(progress)

    def chunk(sl: slice) -> dict:
        part = {name: _take(data[name], int(ax), sl) for name, ax in time_axes.items()}
        for name, value in part.items():
            if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
                raise ValueError(f"{name!r} has NaN or inf in time bins {sl.start}..{sl.stop - 1}")
        if shard is not None:
            from ..parallel import shard_data

            return shard_data(part, shard)
        return {k: jnp.asarray(v) for k, v in part.items()}

    k_init, k_draw, _ = jax.random.split(rng, 3)
    first = {**static, **chunk(slices[0])}
    layout = _layout(model, first, method)
    tfs, unravel = layout.transforms, layout.unravel
    jacobian = method == "laplace"

    def prior_term(u, arr):
        z = unravel(u)
        params = _model.constrain(z, tfs)
        lp, _ = _site_terms(model, {**static, **arr}, params)
        if jacobian:
            lp = lp + layout.log_jacobian(z, params)
        return -lp

    def lik_term(u, arr):
        params = _model.constrain(unravel(u), tfs)
        return -_site_terms(model, {**static, **arr}, params)[1]

    prior_vg = jit(jax.value_and_grad(prior_term))
    lik_vg = jit(jax.value_and_grad(lik_term))
    prior_arr = {k: v for k, v in first.items() if k in time_axes}

    def objective(u_np):
        u = jnp.asarray(u_np)
        value, grad = prior_vg(u, prior_arr)
        pending = lik_vg(u, chunk(slices[0]))
        for sl in slices[1:]:
            nxt = chunk(sl)  # transfer the next chunk while the current one computes
            v, g = pending
            value, grad = value + v, grad + g
            pending = lik_vg(u, nxt)
        v, g = pending
        value, grad = float(value + v), np.asarray(grad + g, dtype=np.float64)
        if not np.isfinite(value):
            raise ValueError("fit_streaming: the objective is not finite at the current point; "
                             "check the model's scale or use stronger priors")
        return value, grad

    u0 = np.asarray(_initial_point(model, first, k_init, init_strategy), dtype=np.float64)
    bar = progress_bar(total=max_iter, desc=f"{method.upper()} (streamed, {len(slices)} chunks)",
                       disable=not progress, at_most=True)
    try:
        opt = scipy_minimize(
            objective, u0, jac=True, method="L-BFGS-B", callback=lambda *_: bar.update(1),
            options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxcor": 20},
        )
        finish(bar)
    finally:
        bar.close()
    x = jnp.asarray(opt.x)
    grad_norm = float(np.max(np.abs(opt.jac))) if opt.jac is not None else float("nan")
    converged = bool(opt.success) or grad_norm <= tol
    if not converged:
        _not_converged_warning(method, str(opt.message), grad_norm, int(opt.nit), at_cap=opt.status == 1,
                               stacklevel=2)  # scipy's status 1: the iteration limit
    info = {
        "converged": converged, "n_iter": int(opt.nit), "objective": float(opt.fun), "grad_norm": grad_norm,
        "message": str(opt.message), "n_chunks": len(slices), "chunk_size": int(chunk_size),
    }
    if method == "map":
        draws = layout.constrain(x[None])
    else:
        # Hessian-vector products in column blocks sized to the chunk: O(chunk x batch + d^2)
        d = int(x.shape[0])
        batch = auto_hessian_batch(d, sum(a.nbytes for a in chunk(slices[0]).values()))
        hess = _jit_hessian_columns(prior_term, x, prior_arr, batch=d)
        for sl in slices:
            hess = hess + _jit_hessian_columns(lik_term, x, chunk(sl), batch=batch)
        u, gauss = _gaussian_at_mode(hess, x, float(opt.fun), k_draw, num_samples, unravel)
        draws = layout.constrain(u)
        info.update(gauss)
    # deterministic sites from the first chunk's shapes would be wrong for time-indexed ones:
    # keep the latent sites only
    samples = stack_chain({k: np.asarray(v) for k, v in draws.items()})
    result = FitResult(method, samples, model, dict(data), None, info)
    result.coords = dict(coords or {})
    result.dims = dict(dims or {})
    return result
