"""Input checks shared by the data containers: each returns a clean array or raises ValueError.

Every message names the argument, what is wrong with it and, where there is one, the usual fix.
Private: :mod:`bayesneuro.data` is the public face of these checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _py(x: Any) -> Any:
    """A numpy scalar as the Python object, for readable messages."""
    return x.item() if isinstance(x, np.generic) else x


def _check_bin_size(bin_size: Any) -> float:
    try:
        value = float(bin_size)
    except (TypeError, ValueError):
        raise ValueError(f"bin_size must be a number of seconds, got {bin_size!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"bin_size must be a positive, finite number of seconds, got {bin_size!r}")
    return value


def _check_time(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _as_labels(values: Any, name: str) -> np.ndarray:
    """1-D labels (ints or strings); whole-number floats become int64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise ValueError(f"{name} must be integers or strings, got booleans")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be integers or strings; got non-integer floats")
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "O":
        if not all(isinstance(v, (str, int, np.integer)) for v in arr):
            raise ValueError(f"{name} must be integers or strings")
        if all(isinstance(v, str) for v in arr):
            arr = arr.astype(str)
        elif all(isinstance(v, (int, np.integer)) for v in arr):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must be all integers or all strings, not a mix")
    if arr.dtype.kind not in "iuUS":
        raise ValueError(f"{name} must be integers or strings, got dtype {arr.dtype}")
    return arr


def _as_ids(ids: Any, n: int | None, name: str = "neuron_ids") -> np.ndarray:
    arr = _as_labels(ids, name)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per neuron ({n}), got {arr.shape[0]}")
    uniq, cnt = np.unique(arr, return_counts=True)
    if np.any(cnt > 1):
        raise ValueError(f"{name} must be unique; duplicated: {uniq[cnt > 1][:5].tolist()}")
    return arr


def _as_counts(counts: Any, name: str = "counts") -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with dims (time, neuron), got shape {arr.shape}; "
            "for a single neuron use counts[:, None]"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has zero time bins")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero neurons")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric spike counts, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} contain {int(bad.sum())} NaN or infinite values (first at time bin {i}, "
                f"neuron column {j}); spike counts must be finite"
            )
        frac = arr != np.round(arr)
        if frac.any():
            i, j = np.argwhere(frac)[0]
            raise ValueError(
                f"{name} must be whole numbers; found {int(frac.sum())} non-integer values "
                f"(first {_py(arr[i, j])!r} at time bin {i}, neuron column {j})"
            )
    neg = arr < 0
    if neg.any():
        i, j = np.argwhere(neg)[0]
        raise ValueError(
            f"{name} must be non-negative; found {int(neg.sum())} negative values "
            f"(first {_py(arr[i, j])!r} at time bin {i}, neuron column {j})"
        )
    return np.array(arr, dtype=np.int64)


def _as_covariates(
    covariates: Any, n_time: int, feature_names: Any
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    if covariates is None:
        if feature_names is not None:
            raise ValueError("feature_names were given but covariates is None")
        return None, ()
    arr = np.asarray(covariates)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"covariates must be 2-D with dims (time, feature), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"covariates must be numeric, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64)
    if arr.shape[0] != n_time:
        raise ValueError(
            f"covariates have {arr.shape[0]} time bins but counts have {n_time}; "
            "X (counts) and S (covariates) must share the time axis"
        )
    if arr.shape[1] == 0:
        raise ValueError("covariates have zero features; pass covariates=None instead")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"covariates contain {int(bad.sum())} NaN or infinite values (first at time bin {i}, "
            f"feature column {j}); drop or interpolate those bins first"
        )
    if feature_names is None:
        names = tuple(f"x{j}" for j in range(arr.shape[1]))
    else:
        names = tuple(feature_names) if not isinstance(feature_names, str) else (feature_names,)
        if len(names) != arr.shape[1]:
            raise ValueError(
                f"feature_names has {len(names)} names but covariates have {arr.shape[1]} features"
            )
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"feature_names must be strings, got {names!r}")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"feature_names must be unique; duplicated: {dup}")
    return arr, names


def _runs(labels: np.ndarray) -> np.ndarray:
    """Start indices of the runs of equal consecutive labels."""
    return np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])


def _as_trial_ids(trial_ids: Any, n_time: int) -> np.ndarray:
    arr = _as_labels(trial_ids, "trial_ids")
    if arr.shape[0] != n_time:
        raise ValueError(
            f"trial_ids must have one label per time bin ({n_time}), got {arr.shape[0]}"
        )
    run_labels = arr[_runs(arr)]
    uniq, cnt = np.unique(run_labels, return_counts=True)
    if np.any(cnt > 1):
        lab = uniq[cnt > 1][0]
        raise ValueError(
            f"trials must be contiguous runs of bins, but trial {_py(lab)!r} appears in "
            f"{int(cnt[cnt > 1][0])} separate runs"
        )
    return arr


def _n_bins(start: np.ndarray, stop: np.ndarray, bin_size: float, tol: float) -> np.ndarray:
    return np.floor((stop - start) / bin_size + tol).astype(np.int64)


def _check_intervals(intervals: Any, bin_size: float, tol: float) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(intervals, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"trial_intervals must have shape (n_trial, 2), got {np.shape(intervals)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("trial_intervals contain NaN or infinite values")
    starts, stops = arr[:, 0], arr[:, 1]
    n = _n_bins(starts, stops, bin_size, tol)
    if np.any(n < 1):
        k = int(np.flatnonzero(n < 1)[0])
        raise ValueError(
            f"trial interval {k} [{starts[k]}, {stops[k]}) is shorter than one bin "
            f"(bin_size={bin_size})"
        )
    if np.any(starts[1:] < stops[:-1]):
        k = int(np.flatnonzero(starts[1:] < stops[:-1])[0]) + 1
        raise ValueError(
            f"trial_intervals must be sorted and non-overlapping, but trial {k} starts at "
            f"{starts[k]} before trial {k - 1} stops at {stops[k - 1]}"
        )
    return starts, stops


def _check_sorted_per_unit(times: np.ndarray, codes: np.ndarray, neuron_ids: np.ndarray) -> None:
    if times.size < 2 or np.all(times[1:] >= times[:-1]):
        return
    order = np.argsort(codes, kind="stable")
    t, c = times[order], codes[order]
    bad = (t[1:] < t[:-1]) & (c[1:] == c[:-1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"spike times of unit {_py(neuron_ids[c[i]])!r} are not sorted ({_py(t[i + 1])} comes after "
            f"{_py(t[i])}); unsorted times usually mean a bug upstream. If the order carries no "
            "meaning, sort first: order = np.argsort(times, kind='stable'); "
            "times, unit_ids = times[order], unit_ids[order]"
        )


def _optional_import(module: str, extra: str, what: str):
    """Import an optional dependency, or say which extra installs it and what needed it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - the optional packages are test extras
        raise ImportError(
            f"{what} needs {module}, which is not installed; install it with "
            f"`pip install bayesneuro[{extra}]`"
        ) from err


def _warn_if_on_edge(chosen: int, candidates: Any, *, what: str, floor: int, how: str,
                     stacklevel: int = 3) -> bool:
    """Warn when a model selection lands on the largest candidate (or on the smallest one when
    smaller values were possible, above `floor`): the best value may lie outside the range.

    `what` names the count (e.g. "number of states"), `how` says how to widen the range (e.g.
    "pass more candidates"). Returns whether it warned.
    """
    import warnings

    cands = sorted({int(c) for c in np.atleast_1d(candidates)})
    if len(cands) < 2:
        return False
    if int(chosen) == cands[-1]:
        side = f"the largest candidate ({cands[-1]}, of {cands[0]}..{cands[-1]})"
    elif int(chosen) == cands[0] and cands[0] > floor:
        side = f"the smallest candidate ({cands[0]}, of {cands[0]}..{cands[-1]}; {floor} is possible)"
    else:
        return False
    warnings.warn(
        f"the selected {what} is {side}: the best value may lie outside the range tried. {how} "
        "(a count that keeps growing on held-out data can also mean the model misses structure, "
        "e.g. slow drifts or over-dispersion)", UserWarning, stacklevel=stacklevel,
    )
    return True
