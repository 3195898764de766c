"""Shared pieces of the joint encoders: covariate features over lags, key handling, draws summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import bases as _bases


def basis_matrix(basis: Any) -> np.ndarray:
    """``(lag, basis)`` matrix; None is the current bin alone."""
    if basis is None:
        return np.ones((1, 1))
    if not isinstance(basis, _bases.Basis):
        raise TypeError(f"basis must be a bayesneuro.bases.Basis or None, got {type(basis).__name__}")
    return np.asarray(basis.matrix(), dtype=float)


def check_lead(lead: Any) -> int:
    if isinstance(lead, bool) or not isinstance(lead, (int, np.integer)) or lead < 0:
        raise ValueError(f"lead must be a non-negative integer number of bins, got {lead!r}")
    return int(lead)


def shift_within(x: np.ndarray, shift: int, seg: np.ndarray) -> np.ndarray:
    """``out[t] = x[t + shift]`` when bin ``t + shift`` is in the same segment, else 0 (``shift`` may be negative)."""
    if shift == 0:
        return x
    out = np.zeros_like(x)
    T = x.shape[0]
    src = np.arange(T) + shift
    ok = (src >= 0) & (src < T)
    ok[ok] = seg[src[ok]] == seg[np.arange(T)[ok]]
    out[ok] = x[src[ok]]
    return out


def features(x: np.ndarray, basis: Any, lead: int, seg: np.ndarray) -> np.ndarray:
    """``(time, channel, basis)`` features: each channel, advanced by ``lead`` bins, convolved with the basis.

    Row ``k`` of the basis is then lag ``k - lead`` bins: positive lags are covariate values
    before the bin, negative ones after it. Nothing crosses a segment boundary.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    xs = shift_within(x, lead, seg)
    if basis is None:
        return xs[:, :, None]
    return np.asarray(_bases.convolve(xs, basis, history=False, trial_ids=seg), dtype=float).reshape(
        x.shape[0], x.shape[1], -1)


def lags_seconds(basis: Any, lead: int, bin_size: float) -> np.ndarray:
    window = 1 if basis is None else basis.window
    return (np.arange(window) - lead) * float(bin_size)


def covariates_of(covariates: Any, n_time: int | None, feature_names=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(time, feature)`` float array and names, from an array or a SpikeData's covariates
    (``n_time``: the number of bins they must have; None: any)."""
    from ..data import SpikeData

    if isinstance(covariates, SpikeData):
        if covariates.covariates is None:
            raise ValueError("the SpikeData has no covariates")
        names = covariates.feature_names if feature_names is None else tuple(feature_names)
        x = np.asarray(covariates.covariates, dtype=float)
    else:
        x = np.asarray(covariates, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        names = tuple(f"feature_{i}" for i in range(x.shape[1])) if feature_names is None else tuple(feature_names)
    if x.ndim != 2:
        raise ValueError(f"covariates must be (time, feature), got shape {x.shape}")
    if n_time is not None and x.shape[0] != n_time:
        raise ValueError(f"covariates have {x.shape[0]} bins but the latents {n_time}: they must be aligned bin by bin")
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} covariates")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"covariates contain NaN or inf (bin {bad[0]}, feature {names[bad[1]]!r})")
    if x.shape[0] < 2:
        raise ValueError("the recording is too short: at least 2 bins are needed")
    return x, names


def check_fit_options(prior_scale: float, uncertainty: str, allowed: tuple[str, str]) -> None:
    if uncertainty not in allowed:
        raise ValueError(f"uncertainty must be {allowed[0]!r} or {allowed[1]!r}, got {uncertainty!r}")
    if not (np.isfinite(prior_scale) and prior_scale > 0):
        raise ValueError(f"prior_scale must be positive, got {prior_scale}")


def filters_dataset(draws: np.ndarray, dims: tuple[str, ...], coords: dict, *, method: str, uncertainty: str,
                    prob: float):
    """``xarray.Dataset`` of filter draws ``(draw, *dims)``: ``mean`` and, unless MAP, the equal-tailed
    ``prob`` interval ``lower`` / ``upper``."""
    import xarray as xr

    if method == "map":
        return xr.Dataset({"mean": (dims, draws[0])}, coords=coords, attrs={"method": "map"})
    if not 0 < prob < 1:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return xr.Dataset({"mean": (dims, draws.mean(axis=0)), "lower": (dims, lo), "upper": (dims, hi)},
                      coords=coords, attrs={"prob": prob, "method": method, "uncertainty": uncertainty})
