"""Conversion of fits to ``arviz.InferenceData`` with named dims and coords.

Dims come from the model itself: an axis created by ``numpyro.plate("neuron", n)``
is called ``neuron``. Coords come from the data (``SpikeData.coords`` gives bin
centres in seconds, neuron ids, trial ids and feature names). An axis that no
plate names and the caller does not name gets ArviZ's fallback ``{site}_dim_{i}``;
bayesneuro's own models never leave one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import arviz as az
import jax
import numpy as np
import xarray as xr
from numpyro.infer import log_likelihood as numpyro_log_likelihood

from bayesneuro._jit import jit

from . import _model

__all__ = ["as_point_estimate", "build_inference_data", "point_inference_data", "site_dims"]



#: jitted pointwise log-likelihood programs by (model, static data): a refit reuses them
_LOGLIK: dict = {}


def _pointwise_log_likelihood(model: Callable, flat: dict, model_kwargs: dict) -> dict:
    """``numpyro.infer.log_likelihood`` of every draw, as one compiled program.

    Run eagerly, NumPyro's batched log-likelihood compiles one small program per operation; here
    the arrays of ``model_kwargs`` are traced and the rest (hashable: numbers, strings, specs)
    is static, so the program is built once per model and data layout. Unhashable static data
    falls back to the eager call.
    """
    arrays = {k: _model.to_device(v) for k, v in model_kwargs.items() if isinstance(v, (np.ndarray, jax.Array))}
    static = {k: v for k, v in model_kwargs.items() if k not in arrays}
    try:
        key = (model, tuple(sorted(static.items())))
        hash(key)
    except TypeError:
        return numpyro_log_likelihood(model, flat, batch_ndims=1, **model_kwargs)
    fn = _LOGLIK.get(key)
    if fn is None:
        def run(draws, arr):
            return numpyro_log_likelihood(model, draws, batch_ndims=1, **static, **arr)

        fn = jit(run)
        if len(_LOGLIK) >= 32:
            _LOGLIK.pop(next(iter(_LOGLIK)))
        _LOGLIK[key] = fn
    return fn({k: _model.to_device(np.asarray(v)) if not isinstance(v, jax.Array) else v for k, v in flat.items()},
              arrays)

def site_dims(info: _model.SiteInfo, user_dims: dict) -> list[str]:
    """Dim names of one site: the caller's names first, then plate names, then fallbacks."""
    if info.name in user_dims:
        dims = list(user_dims[info.name])
        if len(dims) != len(info.shape):
            raise ValueError(
                f"dims for site {info.name!r} name {len(dims)} axes {dims}, but the site has "
                f"shape {info.shape} ({len(info.shape)} axes)"
            )
        return dims
    dims: list[str | None] = [None] * len(info.shape)
    for plate, axis in info.plates:
        dims[axis] = plate
    return [d if d is not None else f"{info.name}_dim_{i}" for i, d in enumerate(dims)]


def _plate_sizes(trace: dict) -> dict[str, int]:
    return {n: int(s["args"][0]) for n, s in trace.items() if s["type"] == "plate"}


def _array_dims(name: str, shape: tuple, user_dims: dict, plate_sizes: dict) -> list[str]:
    """Dims of a constant-data array: the caller's names, else a unique plate of that size."""
    if name in user_dims:
        dims = list(user_dims[name])
        if len(dims) != len(shape):
            raise ValueError(
                f"dims for data {name!r} name {len(dims)} axes but it has shape {shape}"
            )
        return dims
    by_size: dict[int, list[str]] = {}
    for plate, size in plate_sizes.items():
        by_size.setdefault(size, []).append(plate)
    dims = []
    for i, size in enumerate(shape):
        match = by_size.get(size, [])
        dims.append(match[0] if len(match) == 1 else f"{name}_dim_{i}")
    if len(set(dims)) != len(dims):
        dims = [f"{name}_dim_{i}" for i in range(len(shape))]
    return dims


def _check_coords(coords: dict, dims: dict, shapes: dict) -> dict:
    """Keep only coords that label a used dim, and check their lengths."""
    sizes: dict[str, tuple[int, str]] = {}
    for var, ds in dims.items():
        for d, n in zip(ds, shapes[var]):
            if d in sizes and sizes[d][0] != n:
                raise ValueError(
                    f"dim {d!r} has length {n} in {var!r} but {sizes[d][0]} in {sizes[d][1]!r}; "
                    "two different axes share a name (rename a plate or pass dims=)"
                )
            sizes.setdefault(d, (n, var))
    out = {}
    for d, values in coords.items():
        if d not in sizes:
            continue
        values = np.asarray(values)
        if values.ndim != 1 or len(values) != sizes[d][0]:
            raise ValueError(
                f"coords for dim {d!r} have length {len(values) if values.ndim else 0} but "
                f"the axis has length {sizes[d][0]} (in {sizes[d][1]!r})"
            )
        out[d] = values
    return out


def _is_data(value) -> bool:
    return isinstance(value, (np.ndarray, jax.Array, list, tuple, float, int)) and not isinstance(
        value, bool
    )


def build_inference_data(
    *,
    model: Callable,
    model_kwargs: dict,
    samples: dict,
    sample_stats: dict | None,
    coords: dict | None,
    dims: dict | None,
    log_likelihood: bool,
    posterior_predictive: dict | None,
    attrs: dict,
) -> az.InferenceData:
    """Assemble InferenceData from draws shaped ``(chain, draw, ...)``.

    Parameters
    ----------
    model, model_kwargs
        The fitted NumPyro model and its data.
    samples
        Posterior draws (latent and deterministic sites), each ``(chain, draw, *shape)``.
    sample_stats
        Sampler statistics, each ``(chain, draw)``, or None.
    coords, dims
        Caller's coordinates per dim and dim names per variable.
    log_likelihood
        Whether to compute the pointwise log-likelihood group.
    posterior_predictive
        Predictive draws of observed sites, or None.
    attrs
        Attributes stored on every group (strings and numbers only).
    """
    coords = dict(coords or {})
    user_dims = dict(dims or {})
    trace = _model.trace_model(model, model_kwargs)
    infos = _model.site_infos(trace)
    plate_sizes = _plate_sizes(trace)

    all_dims: dict[str, list[str]] = {}
    shapes: dict[str, tuple] = {}

    def register(name, shape, ds):
        all_dims[name] = ds
        shapes[name] = tuple(shape)

    posterior = {k: np.asarray(v) for k, v in samples.items()}
    for name, arr in posterior.items():
        info = infos.get(name)
        if info is None:  # e.g. a guide-only site
            info = _model.SiteInfo(name, arr.shape[2:], (), 0, False, False)
        info = info._replace(shape=tuple(arr.shape[2:]))
        register(name, arr.shape[2:], site_dims(info, user_dims))

    observed = {n: np.asarray(s["value"]) for n, s in _model.observed_sites(trace).items()}
    for name, arr in observed.items():
        register(name, arr.shape, site_dims(infos[name], user_dims))

    constant = {}
    for name, value in model_kwargs.items():
        if not _is_data(value) or any(value is s["value"] for s in trace.values()):
            continue
        arr = np.asarray(value)
        if arr.dtype == object or any(
            arr.shape == o.shape and np.array_equal(arr, o) for o in observed.values()
        ):
            continue
        if name in all_dims:
            continue
        constant[name] = arr
        register(name, arr.shape, _array_dims(name, arr.shape, user_dims, plate_sizes))

    groups: dict = {"posterior": posterior}
    if observed:
        groups["observed_data"] = observed
    if constant:
        groups["constant_data"] = constant
    if sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in sample_stats.items()}

    latent_names = [n for n in _model.latent_sites(trace) if n in posterior]
    if log_likelihood and observed and latent_names:
        n_chain, n_draw = next(iter(posterior.values())).shape[:2]
        flat = {n: posterior[n].reshape((n_chain * n_draw,) + posterior[n].shape[2:]) for n in latent_names}
        ll = _pointwise_log_likelihood(model, flat, model_kwargs)
        groups["log_likelihood"] = {
            k: np.asarray(v).reshape((n_chain, n_draw) + np.shape(v)[1:]) for k, v in ll.items()
        }
    if posterior_predictive:
        groups["posterior_predictive"] = {k: np.asarray(v) for k, v in posterior_predictive.items()}

    used_coords = _check_coords(coords, all_dims, shapes)
    return az.InferenceData(
        **{g: _dataset(v, g, all_dims, used_coords, attrs) for g, v in groups.items()}
    )


_SAMPLE_GROUPS = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive")


def _dataset(variables: dict, group: str, dims: dict, coords: dict, attrs: dict) -> xr.Dataset:
    """One InferenceData group as an xarray Dataset with named dims and coords."""
    lead = ["chain", "draw"] if group in _SAMPLE_GROUPS else []
    data_vars, ds_coords = {}, {}
    for name, arr in variables.items():
        site = list(dims.get(name, []) if group != "sample_stats" else [])
        if group == "log_likelihood":  # an observed site's event axes are summed out of its log-likelihood
            site = site[: np.ndim(arr) - len(lead)]
        var_dims = lead + site
        data_vars[name] = (var_dims, arr)
        for d in var_dims:
            if d in coords:
                ds_coords[d] = coords[d]
    if lead:
        first = next(iter(variables.values()))
        ds_coords["chain"] = np.arange(first.shape[0])
        ds_coords["draw"] = np.arange(first.shape[1])
    group_attrs = {"created_at": datetime.now(UTC).isoformat(), **attrs}
    return xr.Dataset(data_vars, coords=ds_coords, attrs=group_attrs)


def point_inference_data(
    variables: dict,
    *,
    method: str,
    coords: dict | None = None,
    log_likelihood: dict | None = None,
    log_likelihood_coords: dict | None = None,
    attrs: dict | None = None,
    groups: dict | None = None,
) -> az.InferenceData:
    """InferenceData of a point fit: bayesneuro's one convention for fits without draws.

    A fit that returns an estimate and no posterior draws (MAP, EM, Laplace-EM, plug-in
    decoders, factor analysis) stores it in a ``point_estimate`` group with the variables' own
    dims, **no** ``chain`` and ``draw``, and ``attrs["method"]``; it has no ``posterior`` group, so
    ``az.summary`` cannot show it as a posterior with ``sd = NaN``. Its ``log_likelihood`` group
    (the pointwise log-likelihood at the estimate) likewise has no ``chain``/``draw``: PSIS-LOO
    needs draws, and :func:`bayesneuro.diagnostics.loo` says so. ``chain``/``draw`` appear only
    where there are real draws.

    Parameters
    ----------
    variables : dict of str to (dims, values)
        The estimates.
    method : str
        How they were fitted (``"map"``, ``"em"``, ``"laplace-em"``, ``"plug-in"``, ...).
    coords : dict, optional
        Coordinates of the estimates' dims.
    log_likelihood : dict of str to (dims, values), optional
        Pointwise log-likelihood at the estimate.
    log_likelihood_coords : dict, optional
        Coordinates of its dims.
    attrs : dict, optional
        Further attributes (numbers and strings) of both groups.
    groups : dict of str to xarray.Dataset, optional
        Other groups to include as they are (``observed_data``, ``constant_data``, ...).

    Returns
    -------
    arviz.InferenceData

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.infer.convert import point_inference_data
    >>> idata = point_inference_data({"rate": (("neuron",), np.array([1.0, 2.0]))}, method="em",
    ...                              coords={"neuron": [3, 7]})
    >>> idata.groups(), idata.point_estimate["rate"].dims, idata.point_estimate.attrs["method"]
    (['point_estimate'], ('neuron',), 'em')
    """
    base = {"inference_library": "bayesneuro", "method": str(method), "point_estimate": 1,
            "created_at": datetime.now(UTC).isoformat(), **dict(attrs or {})}

    def dataset(vs, cs):
        data_vars = {k: (tuple(d), np.asarray(v)) for k, (d, v) in vs.items()}
        used = {d for dims, _ in data_vars.values() for d in dims}
        return xr.Dataset(data_vars, coords={k: v for k, v in dict(cs or {}).items() if k in used},
                          attrs=dict(base))

    out = {"point_estimate": dataset(variables, coords)}
    if log_likelihood:
        out["log_likelihood"] = dataset(log_likelihood, log_likelihood_coords)
    out.update(dict(groups or {}))
    return az.InferenceData(warn_on_custom_groups=False, **out)


def as_point_estimate(idata: az.InferenceData, method: str | None = None) -> az.InferenceData:
    """A point fit stored as one draw, relabelled by the convention of :func:`point_inference_data`.

    A ``posterior`` group of one chain with one draw becomes the ``point_estimate`` group, and
    every group's ``chain`` and ``draw`` dims (of size 1) are dropped. Groups already without them
    are kept as they are, so the function can be applied again after adding a group.

    Parameters
    ----------
    idata : arviz.InferenceData
        InferenceData whose draws number exactly one.
    method : str, optional
        Sets ``attrs["method"]`` of ``point_estimate`` (else the posterior's, else ``"map"``).

    Returns
    -------
    arviz.InferenceData

    Examples
    --------
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.infer.convert import as_point_estimate
    >>> one = az.from_dict(posterior={"mu": np.ones((1, 1, 3))})
    >>> pe = as_point_estimate(one)
    >>> pe.groups(), pe.point_estimate["mu"].dims, pe.point_estimate.attrs["method"]
    (['point_estimate'], ('mu_dim_0',), 'map')
    """
    groups = {}
    for g in idata.groups():
        ds = idata[g]
        if "chain" in ds.dims or "draw" in ds.dims:
            if ds.sizes.get("chain", 1) * ds.sizes.get("draw", 1) != 1:
                raise ValueError(
                    f"group {g!r} has {ds.sizes.get('chain', 1)} chains x {ds.sizes.get('draw', 1)} "
                    "draws: only a single draw is a point estimate"
                )
            ds = ds.isel({d: 0 for d in ("chain", "draw") if d in ds.dims}, drop=True)
        if g == "posterior":
            g = "point_estimate"
        if g == "point_estimate":
            ds = ds.copy()
            ds.attrs.update(point_estimate=1,
                            method=str(method or ds.attrs.get("method") or "map"))
        groups[g] = ds
    return az.InferenceData(warn_on_custom_groups=False, **groups)
