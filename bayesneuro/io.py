"""Saving and loading fits as netCDF: atomic writes, no pickle."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import arviz as az

from ._atomic import atomic_write

__all__ = ["load", "save", "slim"]


def save(
    idata: az.InferenceData,
    path: str | os.PathLike,
    *,
    log_likelihood: bool = True,
    dtype: str | None = None,
) -> Path:
    """Write InferenceData to a netCDF file atomically.

    The data go to a temporary file in the same folder, which is flushed to disk
    and then renamed over ``path`` in one step, so an interrupted save leaves any
    existing file at ``path`` untouched.

    The pointwise ``log_likelihood`` group (one value per draw and observation) is
    usually most of a file: 1000 draws of 20000 time bins are 160 MB in float64.
    It is needed only for ``az.loo`` / ``az.waic`` / ``az.compare``; leave it out
    with ``log_likelihood=False``, or halve it with ``dtype="float32"``.

    Parameters
    ----------
    idata : arviz.InferenceData
        What to save (not modified).
    path : str or path-like
        Destination file (``.nc`` by convention).
    log_likelihood : bool, default True
        Write the ``log_likelihood`` group when `idata` has one.
    dtype : {None, "float64", "float32"}, optional
        Store the floating-point variables of the groups of draws (``posterior``,
        ``log_likelihood``, ``posterior_predictive``, ``prior``, ...) in this precision;
        None keeps them as they are. Coordinates, ``observed_data``, ``constant_data`` and
        ``sample_stats`` are kept as they are.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import numpy as np, arviz as az, tempfile, os
    >>> from bayesneuro.io import save, load
    >>> idata = az.from_dict(posterior={"mu": np.zeros((1, 3))})
    >>> path = os.path.join(tempfile.mkdtemp(), "fit.nc")
    >>> _ = save(idata, path)
    >>> float(load(path).posterior["mu"].sum())
    0.0
    """
    path = Path(path)
    if not isinstance(idata, az.InferenceData):
        raise TypeError(f"save expects arviz.InferenceData, got {type(idata).__name__}")
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    idata = slim(idata, log_likelihood=log_likelihood, dtype=dtype)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            idata.to_netcdf(tmp, engine="h5netcdf")

    return atomic_write(path, write)


#: groups of draws whose floating-point variables ``dtype`` converts
_DRAW_GROUPS = ("posterior", "log_likelihood", "posterior_predictive", "predictions", "prior",
                "prior_predictive", "point_estimate")  # a point fit's estimate too
DTYPES = ("float64", "float32")


def slim(idata: az.InferenceData, *, log_likelihood: bool = True, dtype: str | None = None) -> az.InferenceData:
    """A copy of `idata` without the ``log_likelihood`` group and/or with draws in `dtype`.

    The arrays that do not change are shared, not copied; `idata` itself is not modified.

    Parameters
    ----------
    idata : arviz.InferenceData
    log_likelihood : bool, default True
        Keep the ``log_likelihood`` group.
    dtype : {None, "float64", "float32"}, optional
        Precision of the floating-point variables of the groups of draws (see :func:`save`).

    Returns
    -------
    arviz.InferenceData

    Examples
    --------
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.io import slim
    >>> idata = az.from_dict(posterior={"mu": np.zeros((1, 4))},
    ...                      log_likelihood={"y": np.zeros((1, 4, 100))})
    >>> small = slim(idata, log_likelihood=False, dtype="float32")
    >>> small.groups(), str(small.posterior["mu"].dtype)
    (['posterior'], 'float32')
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or None, got {dtype!r}")
    groups = {}
    for group in idata.groups():
        if group == "log_likelihood" and not log_likelihood:
            continue
        ds = idata[group]
        if dtype is not None and group in _DRAW_GROUPS:
            cast = {name: da.astype(dtype) for name, da in ds.data_vars.items()
                    if da.dtype.kind == "f" and da.dtype != dtype}
            if cast:
                ds = ds.assign(cast)
        groups[group] = ds
    return az.InferenceData(attrs=dict(getattr(idata, "attrs", None) or {}), warn_on_custom_groups=False,
                            **groups)


def load(path: str | os.PathLike) -> az.InferenceData:
    """Load InferenceData saved by :func:`save` (netCDF; nothing is unpickled).

    The data are read fully into memory and the file is closed, so the file can
    be overwritten afterwards.

    Parameters
    ----------
    path : str or path-like
        A netCDF file.

    Returns
    -------
    arviz.InferenceData
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved fit at {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = az.from_netcdf(path, engine="h5netcdf")
    loaded = {}
    for group in idata.groups():
        ds = getattr(idata, group)
        loaded[group] = ds.load()
        ds.close()
    return az.InferenceData(**loaded)
