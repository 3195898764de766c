"""Conversion between :class:`~bayesneuro.data.SpikeData` and pynapple objects.

pynapple is an optional dependency (``pip install bayesneuro[pynapple]``), imported only when a
conversion runs. Private: :meth:`~bayesneuro.data.SpikeData.from_pynapple` and
:meth:`~bayesneuro.data.SpikeData.to_pynapple` are the public face of this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._binning import _bin_average
from ._validation import _as_ids, _check_bin_size, _runs

if TYPE_CHECKING:
    from .data import SpikeData


def _import_pynapple(what: str):
    try:
        import pynapple as nap
    except ImportError as err:  # pragma: no cover - pynapple is a test extra
        raise ImportError(
            f"{what} needs pynapple, which is not installed; "
            "install it with `pip install bayesneuro[pynapple]`"
        ) from err
    return nap


def _from_pynapple(
    cls: type[SpikeData], group: Any, *, bin_size: float, ep: Any, covariates: Any
) -> SpikeData:
    """Body of :meth:`SpikeData.from_pynapple <bayesneuro.data.SpikeData.from_pynapple>`."""
    nap = _import_pynapple("SpikeData.from_pynapple")
    bin_size = _check_bin_size(bin_size)
    tol = max(1e-9, 2e-6 / bin_size)  # pynapple shortens touching intervals by 1 us
    if ep is not None and not isinstance(ep, nap.IntervalSet):
        raise ValueError(f"ep must be a pynapple IntervalSet, got {type(ep).__name__}")
    if isinstance(group, nap.TsGroup):
        times, units, ids, intervals = _tsgroup_spikes(group, ep)
        data = cls._from_spike_times(
            times, units, bin_size, None, None, ids, None, None,
            intervals, tol=tol, single_interval_is_contiguous=True,
        )
    elif isinstance(group, (nap.TsdFrame, nap.Tsd)):
        d, t, ids, trial_ids = _binned_counts(nap, group, ep, bin_size)
        data = cls(d, bin_size=bin_size, bin_centers=t, neuron_ids=ids, trial_ids=trial_ids)
        # stacklevel: _warn_silent <- here <- SpikeData.from_pynapple <- the caller
        data._warn_silent(stacklevel=4)
    else:
        raise ValueError(
            "group must be a pynapple TsGroup (spike times) or Tsd/TsdFrame (counts), "
            f"got {type(group).__name__}"
        )
    if covariates is not None:
        S, names = _resample_covariates(nap, covariates, data.bin_centers, bin_size)
        data = data.with_covariates(S, feature_names=names)
    return data


def _tsgroup_spikes(group: Any, ep: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spike times, unit labels, neuron ids and ``(start, end)`` intervals of a ``TsGroup``."""
    support = group.time_support if ep is None else ep
    keys = list(group.keys())
    ids = _as_ids(np.asarray(group.index), len(keys))
    trains = [np.asarray(group[k].t, dtype=np.float64) for k in keys]
    times = np.concatenate(trains) if trains else np.zeros(0)
    units = np.repeat(ids, [len(t) for t in trains])
    intervals = np.column_stack([np.asarray(support.start), np.asarray(support.end)])
    return times, units, ids, intervals


def _binned_counts(
    nap: Any, group: Any, ep: Any, bin_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Counts, bin centres, neuron ids and per-bin trial ids (None for one interval) of counts
    already binned as a ``Tsd`` / ``TsdFrame``, checking that they are spaced by `bin_size`."""
    if ep is not None:
        group = group.restrict(ep)
    support = group.time_support
    t = np.asarray(group.t, dtype=np.float64)
    d = np.asarray(group.values)
    d = d[:, None] if d.ndim == 1 else d
    ids = np.array(list(group.columns)) if isinstance(group, nap.TsdFrame) else np.array([0])
    if t.size == 0:
        raise ValueError("the counts have no samples inside ep")
    k = np.searchsorted(np.asarray(support.start), t, side="right") - 1
    same = k[1:] == k[:-1]
    steps = np.diff(t)[same]
    if steps.size and not np.allclose(steps, bin_size, rtol=1e-6, atol=2e-6):
        raise ValueError(
            f"the counts' timestamps are spaced by {np.median(steps):g} s within an "
            f"interval, not by bin_size={bin_size}; pass the bin size they were made with"
        )
    runs = _runs(k)
    lengths = np.diff(np.r_[runs, t.size])
    trial_ids = None if runs.size == 1 else np.repeat(np.arange(runs.size), lengths)
    if np.any(np.diff(t) < bin_size * (1 - 1e-6)):
        raise ValueError("the counts' timestamps overlap: they must be at least bin_size apart")
    return d, t, ids, trial_ids


def _resample_covariates(
    nap: Any, covariates: Any, centers: np.ndarray, bin_size: float
) -> tuple[np.ndarray, list[str] | None]:
    """A pynapple ``Tsd`` / ``TsdFrame`` of covariates resampled onto the bins at `centers`
    (see :func:`bayesneuro._binning._bin_average`), with its feature names (None for a ``Tsd``)."""
    if not isinstance(covariates, (nap.Tsd, nap.TsdFrame)):
        raise ValueError(
            f"covariates must be a pynapple Tsd or TsdFrame, got {type(covariates).__name__}"
        )
    ct = np.asarray(covariates.t, dtype=np.float64)
    cv = np.asarray(covariates.values, dtype=np.float64)
    cv = cv[:, None] if cv.ndim == 1 else cv
    if ct.size == 0:
        raise ValueError("covariates have no samples")
    names = [str(c) for c in covariates.columns] if isinstance(covariates, nap.TsdFrame) else None
    return _bin_average(ct, cv, centers, bin_size), names


def _to_pynapple(data: SpikeData) -> Any:
    """Body of :meth:`SpikeData.to_pynapple <bayesneuro.data.SpikeData.to_pynapple>`."""
    nap = _import_pynapple("SpikeData.to_pynapple")
    centers, bin_size = data.bin_centers, data.bin_size
    left = centers - bin_size / 2
    right = centers + bin_size / 2
    breaks = np.flatnonzero(left[1:] - right[:-1] > 1e-9 * bin_size) + 1
    starts = left[np.r_[0, breaks]]
    ends = right[np.r_[breaks - 1, data.n_time - 1]]
    support = nap.IntervalSet(start=starts, end=ends)
    return nap.TsdFrame(
        t=np.asarray(centers),
        d=np.asarray(data.counts),
        columns=data.neuron_ids.tolist(),
        time_support=support,
    )
