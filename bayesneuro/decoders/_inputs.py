"""Input handling shared by the decoders: spike data, targets and neuron checks.

Every decoder accepts a :class:`~bayesneuro.data.SpikeData` or pynapple counts (a ``TsdFrame``
from ``TsGroup.count``, converted as :meth:`SpikeData.from_pynapple` converts it: a bin cut short
by its epoch is refused) and a *target*: the names of covariate columns of the data, or an array
with one row per time bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import SpikeData


def as_spike_data(data: Any, bin_size: float | None = None, name: str = "data") -> SpikeData:
    """Return `data` as SpikeData; a plain ``(time, neuron)`` count array needs `bin_size`.

    pynapple objects go through :func:`bayesneuro._pynapple.as_spike_data` (their own time
    stamps and support, never ``np.asarray`` of them, which would lose a short last bin's width).
    """
    from .._pynapple import as_spike_data as _pynapple_as_spike_data
    from .._pynapple import is_pynapple

    if is_pynapple(data):
        data = _pynapple_as_spike_data(data, bin_size=bin_size, name=name)
    if isinstance(data, SpikeData):
        if data.n_time == 0:
            raise ValueError(f"{name} has no time bins")
        return data
    if hasattr(data, "open") and type(data).__name__ == "LockedBox":
        raise TypeError(
            f"{name} is the locked validation set; open it with .open() when the analysis is final"
        )
    if bin_size is None:
        raise TypeError(
            f"{name} must be a SpikeData (or a (time, neuron) count array together with a bin size),"
            f" got {type(data).__name__}"
        )
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"{name} counts must be 2-D (time, neuron), got shape {arr.shape}")
    return SpikeData.from_counts(arr, bin_size=bin_size)


def target_array(data: SpikeData, target: Any, name: str = "target") -> tuple[np.ndarray, tuple[str, ...]]:
    """The target as a float ``(time, dim)`` array and its dim names.

    `target` is a covariate name, a sequence of names, or an array of shape ``(time,)`` or
    ``(time, dim)``.
    """
    if target is None:
        raise ValueError(f"{name} is required: covariate name(s) of the data or an array")
    if isinstance(target, str) or (
        isinstance(target, Sequence) and len(target) > 0 and all(isinstance(t, str) for t in target)
    ):
        names = (target,) if isinstance(target, str) else tuple(target)
        if data.covariates is None:
            raise ValueError(f"{name} names covariates {list(names)}, but the data have no covariates")
        missing = [n for n in names if n not in data.feature_names]
        if missing:
            raise ValueError(
                f"{name} names covariates {missing} that the data do not have;"
                f" it has {list(data.feature_names)}"
            )
        cols = [data.feature_names.index(n) for n in names]
        return np.asarray(data.covariates[:, cols], dtype=np.float64), names
    arr = np.asarray(target, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (time, dim), got shape {arr.shape}")
    if arr.shape[0] != data.n_time:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but the data have {data.n_time} time bins;"
            " they must match bin for bin"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"{name} has {bad} time bins with NaN or inf; drop or interpolate them first")
    names = tuple(f"s{i}" for i in range(arr.shape[1]))
    return arr, names


def label_array(data: SpikeData, target: Any, name: str = "target") -> np.ndarray:
    """A discrete target (one label per time bin) as a 1-D array of labels."""
    if isinstance(target, str):
        arr, _ = target_array(data, target, name)
        arr = arr[:, 0]
    else:
        arr = np.asarray(target)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"{name} for a discrete decoder must be 1-D (one label per bin), got shape {arr.shape}")
        if arr.shape[0] != data.n_time:
            raise ValueError(
                f"{name} has {arr.shape[0]} labels but the data have {data.n_time} time bins"
            )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has NaN or inf labels")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} labels must be whole numbers or strings, got non-integer floats")
        arr = arr.astype(np.int64)
    return arr


def check_neurons(data: SpikeData, neuron_ids: np.ndarray, name: str = "data") -> SpikeData:
    """Return `data` with its neurons in the training order; raise if the sets differ."""
    ids = np.asarray(data.neuron_ids)
    if ids.shape == neuron_ids.shape and np.array_equal(ids, neuron_ids):
        return data
    new = [i for i in ids.tolist() if i not in set(neuron_ids.tolist())]
    gone = [i for i in neuron_ids.tolist() if i not in set(ids.tolist())]
    if new or gone:
        parts = []
        if gone:
            parts.append(f"missing {len(gone)} training neuron(s) {_short(gone)}")
        if new:
            parts.append(f"has {len(new)} neuron(s) not seen in training {_short(new)}")
        raise ValueError(
            f"{name} must hold the neurons the decoder was trained on: it "
            + " and ".join(parts)
            + "; use data.select_neurons(decoder.neuron_ids_)"
        )
    return data.select_neurons(neuron_ids)


def _short(items: list, k: int = 5) -> str:
    return str(items[:k])[:-1] + (", ...]" if len(items) > k else "]")


def check_spiking(data: SpikeData, name: str = "training data") -> None:
    """Raise if a neuron never spikes in `data` (its tuning is undefined)."""
    totals = np.asarray(data.counts).sum(axis=0)
    empty = np.flatnonzero(totals == 0)
    if empty.size:
        ids = np.asarray(data.neuron_ids)[empty].tolist()
        raise ValueError(
            f"neuron(s) {_short(ids)} never spike in the {name}: their tuning is undefined;"
            " drop them with data.select_neurons(...) before fitting"
        )
