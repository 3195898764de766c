"""Saving and loading fits as netCDF: atomic writes, no pickle."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import arviz as az

from ._atomic import atomic_write

__all__ = ["save", "load"]


def save(idata: az.InferenceData, path: str | os.PathLike) -> Path:
    """Write InferenceData to a netCDF file atomically.

    The data go to a temporary file in the same folder, which is flushed to disk
    and then renamed over ``path`` in one step, so an interrupted save leaves any
    existing file at ``path`` untouched.

    Parameters
    ----------
    idata : arviz.InferenceData
        What to save.
    path : str or path-like
        Destination file (``.nc`` by convention).

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
    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            idata.to_netcdf(tmp, engine="h5netcdf")

    return atomic_write(path, write)


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
