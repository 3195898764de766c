"""Binned spike data: one container for a recording.

:class:`SpikeData` holds spike counts ``X`` with dims ``(time, neuron)``, optional covariates
``S`` with dims ``(time, feature)``, and optional trial structure (a per-bin trial label). Every
model family in bayesneuro takes its observations from it, and the ArviZ conversion takes its
coordinates from :attr:`SpikeData.coords`.

:meth:`SpikeData.split` makes train / test / validation sets; the machinery lives in
:mod:`bayesneuro.splits`, and its :class:`~bayesneuro.splits.Splits`,
:class:`~bayesneuro.splits.LockedBox` and :class:`~bayesneuro.splits.LockedBoxError` are
re-exported here.

Conventions
-----------
- Times are in seconds. A bin ``[left, left + bin_size)`` is half-open, like ``np.histogram``
  (apart from its closed last edge), and ``bin_centers`` hold ``left + bin_size / 2``.
- Bin edges are computed as ``start + j * bin_size``, exactly as
  ``start + np.arange(n_bins + 1) * bin_size``, so binning agrees with ``np.histogram`` on those
  edges bit for bit.
- Data without trial structure count as one segment: ``n_trial == 1`` and ``trials == [0]``, but
  ``trial_ids`` is None and ``coords`` has no ``"trial"`` entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._binning import _bin_spike_times
from ._pynapple import _from_pynapple, _to_pynapple
from ._validation import (
    _as_counts,
    _as_covariates,
    _as_ids,
    _as_trial_ids,
    _check_bin_size,
    _check_time,
    _py,
    _runs,
)
from .splits import LockedBox, LockedBoxError, Splits
from .splits import split as _split

__all__ = ["LockedBox", "LockedBoxError", "SpikeData", "Splits"]


def _readonly(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is None:
        return None
    view = arr.view()
    view.flags.writeable = False
    return view


class SpikeData:
    """Binned spike counts of one recording, with optional covariates and trials.

    Prefer the constructors :meth:`from_spike_times`, :meth:`from_counts`, :meth:`from_trials`
    and :meth:`from_pynapple`; this initialiser is the low-level form they share. The object is
    immutable: arrays are read-only and methods return new objects.

    Parameters
    ----------
    counts : array_like, shape (n_time, n_neuron)
        Spike counts ``X``: non-negative whole numbers (stored as int64).
    bin_size : float
        Bin width in seconds, > 0.
    t_start : float, optional
        Left edge of the first bin in seconds. Default 0, or ``bin_centers[0] - bin_size / 2``
        when `bin_centers` are given (then a given value must agree with it).
    bin_centers : array_like, shape (n_time,), optional
        Strictly increasing bin centres in seconds, for data with gaps between trials.
        Default ``t_start + (i + 0.5) * bin_size``.
    neuron_ids : array_like, shape (n_neuron,), optional
        Unique ints or strings; default ``0, ..., n_neuron - 1``.
    covariates : array_like, shape (n_time, n_feature) or (n_time,), optional
        Covariates ``S`` (float, finite).
    feature_names : sequence of str, optional
        One unique name per covariate column; default ``"x0", "x1", ...``.
    trial_ids : array_like, shape (n_time,), optional
        Trial label (int or str) of each bin; each trial is one contiguous run of bins.

    Raises
    ------
    ValueError
        If any input is malformed; the message names the problem.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.data import SpikeData
    >>> data = SpikeData(np.array([[0, 1], [2, 0], [1, 1]]), bin_size=0.1)
    >>> data
    SpikeData(n_time=3, n_neuron=2, bin_size=0.1 s, time [0, 0.3) s)
    >>> data.bin_centers
    array([0.05, 0.15, 0.25])
    """

    __slots__ = (
        "_counts",
        "_bin_size",
        "_bin_centers",
        "_neuron_ids",
        "_covariates",
        "_feature_names",
        "_trial_ids",
        "_seg",
        "_bounds",
        "_trials",
        "_t_start",
    )

    def __init__(
        self,
        counts: Any,
        *,
        bin_size: float,
        t_start: float | None = None,
        bin_centers: Any = None,
        neuron_ids: Any = None,
        covariates: Any = None,
        feature_names: Sequence[str] | None = None,
        trial_ids: Any = None,
    ) -> None:
        set_ = object.__setattr__
        bin_size = _check_bin_size(bin_size)
        X = _as_counts(counts)
        n_time, n_neuron = X.shape
        if bin_centers is None:
            t0 = 0.0 if t_start is None else _check_time(t_start, "t_start")
            centers = t0 + (np.arange(n_time) + 0.5) * bin_size
        else:
            centers = np.array(bin_centers, dtype=np.float64)
            if centers.shape != (n_time,):
                raise ValueError(
                    f"bin_centers must have shape ({n_time},), got {centers.shape}"
                )
            if not np.all(np.isfinite(centers)):
                raise ValueError("bin_centers contain NaN or infinite values")
            if np.any(np.diff(centers) <= 0):
                raise ValueError("bin_centers must be strictly increasing")
            t0 = centers[0] - bin_size / 2
            if t_start is not None:
                given = _check_time(t_start, "t_start")
                if abs(given - t0) > 1e-6 * bin_size:
                    raise ValueError(
                        f"t_start={given} disagrees with the first bin centre {centers[0]} "
                        f"(expected {t0})"
                    )
                t0 = given
        S, names = _as_covariates(covariates, n_time, feature_names)
        if trial_ids is None:
            tid, seg, bounds, trials = None, np.zeros(n_time, np.int64), np.array([0, n_time]), None
        else:
            tid = _as_trial_ids(trial_ids, n_time)
            starts = _runs(tid)
            trials = tid[starts]
            bounds = np.r_[starts, n_time]
            seg = np.repeat(np.arange(len(starts)), np.diff(bounds))
        set_(self, "_counts", _readonly(X))
        set_(self, "_bin_size", bin_size)
        set_(self, "_bin_centers", _readonly(centers))
        ids = np.arange(n_neuron) if neuron_ids is None else neuron_ids
        set_(self, "_neuron_ids", _readonly(_as_ids(ids, n_neuron)))
        set_(self, "_covariates", _readonly(S))
        set_(self, "_feature_names", names)
        set_(self, "_trial_ids", _readonly(None if tid is None else tid.copy()))
        set_(self, "_seg", _readonly(seg))
        set_(self, "_bounds", bounds)
        set_(self, "_trials", None if trials is None else _readonly(trials.copy()))
        set_(self, "_t_start", float(t0))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SpikeData is immutable; cannot set {name!r} (methods return new objects)")

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, _readonly(v) if isinstance(v, np.ndarray) else v)

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_counts(
        cls,
        counts: Any,
        *,
        bin_size: float,
        t_start: float = 0.0,
        neuron_ids: Any = None,
        covariates: Any = None,
        feature_names: Sequence[str] | None = None,
        trial_ids: Any = None,
    ) -> SpikeData:
        """Wrap an already binned ``(time, neuron)`` count array.

        Bins are contiguous: bin ``i`` is centred at ``t_start + (i + 0.5) * bin_size``, also when
        `trial_ids` mark trials (they are then recorded back to back).

        Parameters
        ----------
        counts : array_like, shape (n_time, n_neuron)
            Non-negative whole-number spike counts (any integer or float dtype).
        bin_size : float
            Bin width in seconds.
        t_start : float, default 0.0
            Left edge of the first bin in seconds.
        neuron_ids, covariates, feature_names, trial_ids
            As in :class:`SpikeData`.

        Returns
        -------
        SpikeData

        Raises
        ------
        ValueError
            For malformed input (negative, fractional, NaN counts; mismatched lengths; ...).

        Warns
        -----
        UserWarning
            If a neuron has no spikes.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> X = np.array([[0, 1], [2, 0], [1, 1], [0, 3]])
        >>> data = SpikeData.from_counts(X, bin_size=0.05, neuron_ids=["a", "b"],
        ...                              trial_ids=[0, 0, 1, 1])
        >>> data.n_trial, data.firing_rates().tolist()
        (2, [15.0, 25.0])
        """
        out = cls(
            counts,
            bin_size=bin_size,
            t_start=t_start,
            neuron_ids=neuron_ids,
            covariates=covariates,
            feature_names=feature_names,
            trial_ids=trial_ids,
        )
        out._warn_silent()
        return out

    @classmethod
    def from_trials(
        cls,
        counts: Sequence[Any],
        *,
        bin_size: float,
        covariates: Sequence[Any] | None = None,
        feature_names: Sequence[str] | None = None,
        neuron_ids: Any = None,
        trial_ids: Any = None,
    ) -> SpikeData:
        """Stack per-trial count arrays of possibly unequal length.

        Trials are laid end to end on one clock starting at 0 (trial ``k`` starts where trial
        ``k - 1`` ends); use :meth:`from_spike_times` with `trial_intervals` to keep real times.

        Parameters
        ----------
        counts : sequence of array_like, each shape (n_time_k, n_neuron)
            One count array per trial.
        bin_size : float
            Bin width in seconds.
        covariates : sequence of array_like, each shape (n_time_k, n_feature), optional
            One covariate array per trial.
        feature_names : sequence of str, optional
            Names of the covariate columns.
        neuron_ids : array_like, optional
            As in :class:`SpikeData`.
        trial_ids : array_like, shape (n_trial,), optional
            One unique label per trial; default ``0, ..., n_trial - 1``.

        Returns
        -------
        SpikeData

        Raises
        ------
        ValueError
            If the list is empty, trials disagree in their number of neurons, or a trial's
            covariates do not match its length.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_trials([np.ones((3, 2)), np.ones((5, 2))], bin_size=0.01)
        >>> data.n_time, data.n_trial
        (8, 2)
        >>> counts, mask = data.to_padded()
        >>> counts.shape, mask.sum(axis=1).tolist()
        ((2, 5, 2), [3, 5])
        """
        if isinstance(counts, np.ndarray) and counts.ndim == 3:
            counts = list(counts)
        counts = list(counts)
        if len(counts) == 0:
            raise ValueError("from_trials needs at least one trial, got an empty list")
        arrays = [_as_counts(c, name=f"counts of trial {k}") for k, c in enumerate(counts)]
        n_neuron = {a.shape[1] for a in arrays}
        if len(n_neuron) > 1:
            raise ValueError(f"all trials must have the same number of neurons, got {sorted(n_neuron)}")
        lengths = np.array([a.shape[0] for a in arrays])
        labels = np.arange(len(arrays)) if trial_ids is None else _as_ids(trial_ids, None, "trial_ids")
        if labels.shape[0] != len(arrays):
            raise ValueError(
                f"trial_ids must have one label per trial ({len(arrays)}), got {labels.shape[0]}"
            )
        S = None
        if covariates is not None:
            covariates = list(covariates)
            if len(covariates) != len(arrays):
                raise ValueError(
                    f"covariates must be a list with one array per trial ({len(arrays)}), "
                    f"got {len(covariates)}"
                )
            parts = []
            for k, c in enumerate(covariates):
                c = np.asarray(c)
                c = c[:, None] if c.ndim == 1 else c
                if c.shape[0] != lengths[k]:
                    raise ValueError(
                        f"covariates of trial {k} have {c.shape[0]} time bins but its counts have "
                        f"{lengths[k]}"
                    )
                parts.append(c)
            if len({p.shape[1:] for p in parts}) > 1:
                raise ValueError("covariates of all trials must have the same number of features")
            S = np.concatenate(parts, axis=0)
        out = cls(
            np.concatenate(arrays, axis=0),
            bin_size=bin_size,
            t_start=0.0,
            neuron_ids=neuron_ids,
            covariates=S,
            feature_names=feature_names,
            trial_ids=np.repeat(labels, lengths),
        )
        out._warn_silent()
        return out

    @classmethod
    def from_spike_times(
        cls,
        times: Any,
        unit_ids: Any,
        *,
        bin_size: float,
        t_start: float | None = None,
        t_stop: float | None = None,
        neuron_ids: Any = None,
        covariates: Any = None,
        feature_names: Sequence[str] | None = None,
        trial_intervals: Any = None,
    ) -> SpikeData:
        """Bin spike times (seconds) with unit labels into counts.

        Bin ``j`` is ``[t_start + j * bin_size, t_start + (j + 1) * bin_size)``. A last bin that
        would end after `t_stop` is dropped with its spikes (a span shorter than one bin by less
        than ``1e-9`` bins counts as whole, against rounding). Binning is vectorised
        (``np.searchsorted`` and ``np.bincount``).

        Parameters
        ----------
        times : array_like, shape (n_spike,)
            Spike times in seconds. Within each unit they must be non-decreasing; spikes of
            different units may interleave (e.g. trains concatenated unit by unit).
        unit_ids : array_like, shape (n_spike,)
            Unit label (int or str) of each spike.
        bin_size : float
            Bin width in seconds.
        t_start, t_stop : float, optional
            Binned span ``[t_start, t_stop)``. Defaults: the first spike floored, and the last
            spike ceiled, to whole multiples of `bin_size` (the last spike always lands in a
            bin). When given, every spike must lie inside. Not allowed with `trial_intervals`.
        neuron_ids : array_like, optional
            Neuron order of the columns, which may include silent units. Default: the sorted
            unique `unit_ids`. Every unit in `unit_ids` must be listed.
        covariates, feature_names
            As in :class:`SpikeData`; must match the number of bins produced.
        trial_intervals : array_like, shape (n_trial, 2), optional
            Sorted, non-overlapping ``(start, stop)`` times in seconds. Each trial is binned on
            its own from its start (unequal lengths allowed); `trial_ids` become
            ``0, ..., n_trial - 1`` and bin centres are each trial's own times. Spikes outside
            all trials are dropped.

        Returns
        -------
        SpikeData

        Raises
        ------
        ValueError
            For NaN/inf times, lengths of `times` and `unit_ids` that differ, times unsorted
            within a unit, spikes outside an explicit ``[t_start, t_stop)``, units missing from
            `neuron_ids`, a span shorter than one bin, or malformed `trial_intervals`.

        Warns
        -----
        UserWarning
            If a neuron has no spikes in the binned span.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> times = np.array([0.01, 0.02, 0.13, 0.15, 0.29])
        >>> units = np.array([0, 1, 0, 0, 1])
        >>> data = SpikeData.from_spike_times(times, units, bin_size=0.1)
        >>> data.counts.T.tolist()
        [[1, 2, 0], [1, 0, 1]]
        >>> trials = SpikeData.from_spike_times(times, units, bin_size=0.05,
        ...                                     trial_intervals=[[0.0, 0.05], [0.1, 0.2]])
        >>> trials.bin_centers.round(6).tolist(), trials.trial_ids.tolist()
        ([0.025, 0.125, 0.175], [0, 1, 1])
        """
        bin_size = _check_bin_size(bin_size)
        return cls._from_spike_times(
            times, unit_ids, bin_size, t_start, t_stop, neuron_ids, covariates, feature_names,
            trial_intervals, tol=1e-9,
        )

    @classmethod
    def _from_spike_times(
        cls, times, unit_ids, bin_size, t_start, t_stop, neuron_ids, covariates, feature_names,
        trial_intervals, tol, single_interval_is_contiguous=False, pynapple_edges=False,
    ) -> SpikeData:
        counts, centers, seg, neuron_ids, starts = _bin_spike_times(
            times, unit_ids, bin_size, t_start, t_stop, neuron_ids, trial_intervals, tol,
            pynapple_edges,
        )
        trial_ids = None
        if trial_intervals is not None and not (single_interval_is_contiguous and len(starts) == 1):
            trial_ids = seg
        out = cls(
            counts,
            bin_size=bin_size,
            t_start=float(starts[0]),
            bin_centers=centers,
            neuron_ids=neuron_ids,
            covariates=covariates,
            feature_names=feature_names,
            trial_ids=trial_ids,
        )
        out._warn_silent()
        return out

    @classmethod
    def from_pynapple(
        cls, group: Any, *, bin_size: float, ep: Any = None, covariates: Any = None,
        max_gap: float | None = None,
    ) -> SpikeData:
        """Build from pynapple objects (pynapple is imported lazily).

        Parameters
        ----------
        group : pynapple.TsGroup, pynapple.TsdFrame or pynapple.Tsd
            A ``TsGroup`` of spike trains (neuron ids from its index), binned here from the start
            of each interval on the edges of ``TsGroup.count`` (``[a, b)`` bins, edges rounded
            to 1 ns, so a spike on an edge is counted as pynapple counts it); or counts already
            binned at `bin_size` (``TsdFrame`` columns are the neuron ids, a ``Tsd`` is one
            neuron ``0``), whose timestamps are taken as bin centres. A bin of counts that its
            interval of the time support cuts short (``TsGroup.count``'s last bin on an epoch
            that is not a multiple of `bin_size`) raises a ValueError that names it and says
            what to do. Conventions side by side: ``docs/pynapple.md``.
        bin_size : float
            Bin width in seconds.
        ep : pynapple.IntervalSet, optional
            Restricts the data (default: the time support of `group`). With one interval the
            result has no trials; with several, each non-empty interval becomes a trial
            ``0, 1, ...``. An incomplete last bin of an interval is dropped with its spikes
            (``TsGroup.count`` keeps it when at least half a bin remains).
        covariates : pynapple.Tsd or pynapple.TsdFrame, optional
            Resampled onto the bins. Sampled at least as finely as the bins (median step
            <= `bin_size`): **bin averaging**, the mean of the samples in
            ``[left, left + bin_size)`` (as ``bin_average`` in pynapple), with linear
            interpolation at the centre of a bin that holds no sample. Sampled more coarsely:
            linear interpolation at every bin centre. Feature names are the ``TsdFrame``
            columns (``"x0"`` for a ``Tsd``). Pass angles as their sin and cos.
        max_gap : float, optional
            Longest stretch without covariate samples (seconds) that interpolation may bridge.
            Default: 5 median sampling periods of the covariates or 1 s, whichever is longer
            (and at least `bin_size`). Bins
            inside a longer gap (lost tracking) are **dropped**, with a warning that gives their
            number; the bins either side of a gap become separate trials, so no model reads
            across it.

        Returns
        -------
        SpikeData

        Raises
        ------
        ImportError
            If pynapple is not installed.
        ValueError
            If `group` has the wrong type, counts are not spaced by `bin_size` or hold a bin
            cut short by their time support, or covariates are
            NaN in a bin or do not cover the bins.

        Warns
        -----
        UserWarning
            Bins dropped because they lie in a gap of the covariates longer than `max_gap`.

        Examples
        --------
        >>> import numpy as np
        >>> import pynapple as nap
        >>> from bayesneuro.data import SpikeData
        >>> group = nap.TsGroup({1: nap.Ts(np.array([0.1, 0.5, 0.9])), 4: nap.Ts(np.array([0.3, 0.35]))},
        ...                     time_support=nap.IntervalSet(0, 1))
        >>> data = SpikeData.from_pynapple(group, bin_size=0.25)
        >>> data.neuron_ids.tolist(), data.counts.T.tolist()
        ([1, 4], [[1, 0, 1, 1], [0, 2, 0, 0]])
        """
        return _from_pynapple(cls, group, bin_size=bin_size, ep=ep, covariates=covariates, max_gap=max_gap)

    # -- properties --------------------------------------------------------------------------

    @property
    def counts(self) -> np.ndarray:
        """Spike counts ``X``, int64, dims ``(time, neuron)`` (read-only)."""
        return self._counts

    @property
    def bin_size(self) -> float:
        """Bin width in seconds."""
        return self._bin_size

    @property
    def t_start(self) -> float:
        """Left edge of the first bin, in seconds."""
        return self._t_start

    @property
    def bin_centers(self) -> np.ndarray:
        """Bin centres in seconds, dims ``(time,)``, strictly increasing."""
        return self._bin_centers

    @property
    def neuron_ids(self) -> np.ndarray:
        """Neuron labels, dims ``(neuron,)``."""
        return self._neuron_ids

    @property
    def covariates(self) -> np.ndarray | None:
        """Covariates ``S``, float64, dims ``(time, feature)``, or None."""
        return self._covariates

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the covariate columns (empty without covariates)."""
        return self._feature_names

    @property
    def trial_ids(self) -> np.ndarray | None:
        """Trial label of each bin, dims ``(time,)``, or None without trial structure."""
        return self._trial_ids

    @property
    def n_time(self) -> int:
        """Number of time bins."""
        return self._counts.shape[0]

    @property
    def n_neuron(self) -> int:
        """Number of neurons."""
        return self._counts.shape[1]

    @property
    def n_feature(self) -> int:
        """Number of covariates (0 without covariates)."""
        return len(self._feature_names)

    @property
    def n_trial(self) -> int:
        """Number of trials; 1 for data without trial structure."""
        return len(self._bounds) - 1

    @property
    def trials(self) -> np.ndarray:
        """Trial labels in order of appearance; ``[0]`` without trial structure."""
        return self._trials if self._trials is not None else np.zeros(1, dtype=np.int64)

    @property
    def segment_ids(self) -> np.ndarray:
        """Position ``0, ..., n_trial - 1`` of each bin's trial, dims ``(time,)``.

        Temporal filters (spike history, smoothing) must not cross a change of this label.
        """
        return self._seg

    @property
    def duration(self) -> float:
        """Binned time in seconds: ``n_time * bin_size`` (gaps between trials excluded)."""
        return self.n_time * self._bin_size

    @property
    def coords(self) -> dict[str, np.ndarray]:
        """Coordinates by dim name: ``time``, ``neuron``, and ``feature`` / ``trial`` if present."""
        out = {"time": self._bin_centers, "neuron": self._neuron_ids}
        if self._covariates is not None:
            out["feature"] = np.array(self._feature_names)
        if self._trial_ids is not None:
            out["trial"] = self._trials
        return out

    def __len__(self) -> int:
        return self.n_time

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_time, n_neuron)``, the shape of :attr:`counts`."""
        return self._counts.shape

    def __getitem__(self, key: Any) -> SpikeData:
        """The time bins `key` (integers, a boolean mask or a slice) as a new SpikeData.

        Runs of consecutive bins of one trial stay together; every other break becomes a trial
        boundary, so that no filter, lag window or latent path reads across a gap. This is
        what lets scikit-learn's model-selection helpers (``cross_val_score``, ``KFold``,
        ``GridSearchCV``) split a recording into time bins, like rows of an array.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro import SpikeData
        >>> d = SpikeData.from_counts(np.arange(12).reshape(6, 2), bin_size=0.1)
        >>> part = d[[0, 1, 4, 5]]
        >>> part.n_time, part.n_trial
        (4, 2)
        >>> d[1:3].counts.tolist()
        [[2, 3], [4, 5]]
        """
        if isinstance(key, tuple):  # sklearn indexes rows as array[key, ...]
            rest = [k for k in key[1:] if k is not Ellipsis and not (isinstance(k, slice) and k == slice(None))]
            if len(key) == 0 or rest:
                raise IndexError("SpikeData is indexed by time bins only: data[bins]")
            key = key[0]
        if isinstance(key, slice):
            idx = np.arange(self.n_time)[key]
        else:
            arr = np.asarray(key)
            if arr.dtype == bool:
                if arr.shape != (self.n_time,):
                    raise IndexError(f"a boolean mask over time must have {self.n_time} entries, got shape {arr.shape}")
                idx = np.flatnonzero(arr)
            elif arr.dtype.kind in "iu" and arr.ndim <= 1:
                idx = np.atleast_1d(arr).astype(np.int64)
                if idx.size and (idx.min() < -self.n_time or idx.max() >= self.n_time):
                    raise IndexError(f"time index out of range for {self.n_time} bins")
                idx = np.where(idx < 0, idx + self.n_time, idx)
            else:
                raise IndexError(f"SpikeData is indexed by integer bins, a boolean mask or a slice, got {arr.dtype}")
        if idx.size == 0:
            raise IndexError("the selection holds no time bins")
        seg = self.segment_ids[idx]
        new_run = np.r_[True, (np.diff(idx) != 1) | (seg[1:] != seg[:-1])]
        runs = np.cumsum(new_run) - 1
        if runs[-1] == 0 and self._trial_ids is None:
            return self._take(idx)
        if self._trial_ids is not None:
            tid = self._trial_ids[idx]
            labels = tid[new_run]
            if np.unique(labels).size == labels.size:  # each trial kept in one piece: keep its label
                return self._take(idx)
        return self._take(idx, trial_ids=runs)

    def __repr__(self) -> str:
        parts = [
            f"n_time={self.n_time}",
            f"n_neuron={self.n_neuron}",
            f"bin_size={self._bin_size:g} s",
        ]
        end = self._bin_centers[-1] + self._bin_size / 2
        parts.append(f"time [{self.t_start:g}, {end:g}) s")
        if self._trial_ids is not None:
            parts.append(f"n_trial={self.n_trial}")
        if self._covariates is not None:
            shown = ", ".join(self._feature_names[:5]) + (", ..." if self.n_feature > 5 else "")
            parts.append(f"features=[{shown}]")
        return f"SpikeData({', '.join(parts)})"

    # -- derived objects ---------------------------------------------------------------------

    def _replace(self, **changes: Any) -> SpikeData:
        fields = dict(
            counts=self._counts,
            bin_size=self._bin_size,
            t_start=self._t_start,
            bin_centers=self._bin_centers,
            neuron_ids=self._neuron_ids,
            covariates=self._covariates,
            feature_names=self._feature_names if self._covariates is not None else None,
            trial_ids=self._trial_ids,
        )
        fields.update(changes)
        return SpikeData(fields.pop("counts"), **fields)

    def _take(self, idx: np.ndarray, trial_ids: Any = "keep") -> SpikeData:
        return self._replace(
            counts=self._counts[idx],
            t_start=self._t_start if idx[0] == 0 else None,
            bin_centers=self._bin_centers[idx],
            covariates=None if self._covariates is None else self._covariates[idx],
            trial_ids=(
                (None if self._trial_ids is None else self._trial_ids[idx])
                if isinstance(trial_ids, str) and trial_ids == "keep"
                else trial_ids
            ),
        )

    def _warn_silent(self, stacklevel: int = 3) -> None:
        silent = np.flatnonzero(self._counts.sum(axis=0) == 0)
        if silent.size == 1:
            name = _py(self._neuron_ids[silent[0]])
            warnings.warn(f"neuron {name!r} has no spikes", UserWarning, stacklevel=stacklevel)
        elif silent.size > 1:
            shown = ", ".join(repr(x) for x in self._neuron_ids[silent[:10]].tolist())
            more = ", ..." if silent.size > 10 else ""
            warnings.warn(
                f"{silent.size} neurons have no spikes: {shown}{more}", UserWarning, stacklevel=stacklevel
            )

    def with_covariates(self, covariates: Any, feature_names: Sequence[str] | None = None) -> SpikeData:
        """Return a copy with covariates ``S`` (replacing any present).

        Parameters
        ----------
        covariates : array_like, shape (n_time, n_feature) or (n_time,)
            Finite covariates, one row per bin.
        feature_names : sequence of str, optional
            One unique name per column; default ``"x0", "x1", ...``.

        Returns
        -------
        SpikeData

        Raises
        ------
        ValueError
            If the number of rows differs from `n_time`, values are NaN or infinite, or the
            names do not match the columns.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_counts(np.ones((4, 2)), bin_size=0.1)
        >>> data.with_covariates(np.arange(4.0), feature_names=["speed"]).coords["feature"]
        array(['speed'], dtype='<U5')
        """
        return self._replace(covariates=covariates, feature_names=feature_names)

    def trial(self, tid: Any) -> SpikeData:
        """The bins of trial `tid` (keeps its label in `trial_ids`).

        For data without trial structure, ``trial(0)`` is the whole recording.

        Raises
        ------
        ValueError
            If `tid` is not a trial of the data.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_trials([np.ones((2, 1)), 2 * np.ones((3, 1))], bin_size=0.1,
        ...                              trial_ids=["a", "b"])
        >>> data.trial("b").counts.ravel().tolist()
        [2, 2, 2]
        """
        if self._trial_ids is None:
            if np.ndim(tid) == 0 and not isinstance(tid, str) and tid == 0:
                return self
            raise ValueError(f"the data have no trial structure (only trial 0), so no trial {_py(tid)!r}")
        hit = np.flatnonzero(self._trials == tid) if np.ndim(tid) == 0 else np.array([])
        if hit.size != 1:
            more = " ..." if self.n_trial > 10 else ""
            raise ValueError(f"no trial {_py(tid)!r}; trials are {self._trials[:10].tolist()}{more}")
        k = int(hit[0])
        return self._take(np.arange(self._bounds[k], self._bounds[k + 1]))

    def iter_trials(self) -> Iterator[SpikeData]:
        """Yield one :class:`SpikeData` per trial, in order (the whole recording if untrialled).

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_trials([np.ones((2, 1)), np.ones((3, 1))], bin_size=0.1)
        >>> [len(tr) for tr in data.iter_trials()]
        [2, 3]
        """
        if self._trial_ids is None:
            yield self
            return
        for k in range(self.n_trial):
            yield self._take(np.arange(self._bounds[k], self._bounds[k + 1]))

    def to_padded(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts as a zero-padded ``(trial, time, neuron)`` array with a ``(trial, time)`` mask.

        Returns
        -------
        counts : numpy.ndarray, shape (n_trial, max_n_time, n_neuron), int64
            Trial ``k`` occupies ``counts[k, :n_time_k]``; the rest is 0.
        mask : numpy.ndarray, shape (n_trial, max_n_time), bool
            True on real bins.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_counts(np.arange(6).reshape(3, 2), bin_size=0.1, trial_ids=[0, 1, 1])
        >>> counts, mask = data.to_padded()
        >>> counts[:, :, 0].tolist(), mask.tolist()
        ([[0, 0], [2, 4]], [[True, False], [True, True]])
        """
        lengths = np.diff(self._bounds)
        pos = np.arange(self.n_time) - self._bounds[:-1][self._seg]
        counts = np.zeros((self.n_trial, int(lengths.max()), self.n_neuron), dtype=np.int64)
        mask = np.zeros((self.n_trial, int(lengths.max())), dtype=bool)
        counts[self._seg, pos] = self._counts
        mask[self._seg, pos] = True
        return counts, mask

    def select_neurons(self, ids: Any) -> SpikeData:
        """Keep the neurons `ids` (labels, not positions), in the order given.

        Raises
        ------
        ValueError
            If an id is unknown or repeated.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_counts(np.arange(6).reshape(2, 3), bin_size=0.1, neuron_ids=[7, 8, 9])
        >>> data.select_neurons([9, 7]).counts.tolist()
        [[2, 0], [5, 3]]
        """
        ids = _as_ids(np.atleast_1d(ids), None)
        pos = []
        for i in ids.tolist():
            hit = np.flatnonzero(self._neuron_ids == i)
            if hit.size == 0:
                raise ValueError(f"no neuron {i!r}; neuron_ids are {self._neuron_ids[:10].tolist()}")
            pos.append(int(hit[0]))
        if not pos:
            raise ValueError("select_neurons needs at least one neuron id")
        return self._replace(counts=self._counts[:, pos], neuron_ids=self._neuron_ids[pos])

    def time_slice(self, t0: float, t1: float) -> SpikeData:
        """Keep the bins whose centres lie in ``[t0, t1)`` seconds.

        Raises
        ------
        ValueError
            If no bin centre lies in the window.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_counts(np.ones((10, 1)), bin_size=0.1)
        >>> data.time_slice(0.2, 0.5).bin_centers
        array([0.25, 0.35, 0.45])
        """
        t0, t1 = _check_time(t0, "t0"), _check_time(t1, "t1")
        lo, hi = np.searchsorted(self._bin_centers, [t0, t1], side="left")
        if hi <= lo:
            raise ValueError(
                f"no bins have centres in [{t0}, {t1}); the data span "
                f"[{self.t_start}, {self._bin_centers[-1] + self._bin_size / 2}) s"
            )
        return self._take(np.arange(lo, hi))

    def restrict(self, ep: Any) -> SpikeData:
        """Keep the bins whose centres lie inside epochs, as pynapple's ``restrict``.

        Parameters
        ----------
        ep : pynapple.IntervalSet or array_like, shape (n, 2) or (2,)
            Epochs ``[start, end)`` in seconds.

        Returns
        -------
        SpikeData
            Each stretch of adjacent kept bins becomes a trial (labelled by its index) when
            the result has gaps and the data had no trials, so temporal filters stop at the
            gaps; trial labels are kept otherwise (a trial cut in two becomes two trials).

        Raises
        ------
        ValueError
            If the epochs are malformed or hold no bin centre.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_counts(np.ones((10, 1)), bin_size=0.1)
        >>> part = data.restrict([[0.0, 0.3], [0.6, 0.8]])
        >>> part.bin_centers.round(2).tolist(), part.trials.tolist()
        ([0.05, 0.15, 0.25, 0.65, 0.75], [0, 1])
        """
        if hasattr(ep, "start") and hasattr(ep, "end"):  # pynapple IntervalSet
            iv = np.column_stack([np.asarray(ep.start, float), np.asarray(ep.end, float)])
        else:
            iv = np.asarray(ep, dtype=float)
            if iv.shape == (2,):
                iv = iv[None]
        if iv.ndim != 2 or iv.shape[1] != 2 or iv.shape[0] == 0:
            raise ValueError(f"ep must be an IntervalSet or (n, 2) [start, end) epochs, got shape {iv.shape}")
        if not np.all(np.isfinite(iv)) or np.any(iv[:, 1] <= iv[:, 0]):
            raise ValueError("ep has an epoch with NaN bounds or end <= start")
        c = self._bin_centers
        keep = np.zeros(c.size, bool)
        for start, end in iv:
            keep |= (c >= start) & (c < end)
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            raise ValueError(
                f"no bin centre lies inside ep; the data span [{self.t_start}, "
                f"{c[-1] + self._bin_size / 2}) s"
            )
        seg = self._seg[idx]
        new_run = np.r_[True, (np.diff(idx) != 1) | (seg[1:] != seg[:-1])]
        runs = np.cumsum(new_run) - 1
        if self._trial_ids is None:
            return self._take(idx, trial_ids=runs if runs[-1] > 0 else None)
        tid = self._trial_ids[idx]
        split = len(np.unique(runs)) != len(np.unique(tid, return_index=True)[1])
        return self._take(idx, trial_ids=runs if split else "keep")

    def firing_rates(self) -> np.ndarray:
        """Mean firing rate of each neuron in spikes/s over the binned time, dims ``(neuron,)``."""
        return self._counts.sum(axis=0) / self.duration

    def to_pynapple(self) -> Any:
        """Counts as a pynapple ``TsdFrame`` (timestamps = bin centres, columns = neuron ids).

        The time support has one interval per stretch of back-to-back bins.

        Raises
        ------
        ImportError
            If pynapple is not installed.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> frame = SpikeData.from_counts(np.ones((4, 2)), bin_size=0.5).to_pynapple()
        >>> frame.shape, frame.time_support.end.tolist()
        ((4, 2), [2.0])
        """
        return _to_pynapple(self)

    # -- splits ------------------------------------------------------------------------------

    def split(
        self,
        *,
        by: str = "time",
        fractions: Sequence[float] = (0.6, 0.2, 0.2),
        n_blocks: int | None = None,
        gap: int = 0,
        key: Any = None,
    ) -> Splits:
        """Split into train, test and a locked validation set.

        Parameters
        ----------
        by : {"time", "trials"}
            ``"time"``: contiguous blocks of bins. ``"trials"``: whole trials (needs trials).
        fractions : sequence of 2 or 3 positive floats summing to 1
            Shares of train, test and (if three) validation. Bins, blocks or trials are
            allocated with the largest-remainder rule.
        n_blocks : int, optional
            ``by="time"`` only. None: three (or two) contiguous pieces in the order train, test,
            validation. An int ``k``: cut the recording into ``k`` equal contiguous blocks and
            allot them by `fractions`, evenly interleaved (or randomly with `key`).
        gap : int, default 0
            ``by="time"`` only: bins dropped at every boundary between blocks of different sets
            (the first `gap` bins of the later block), so spike-history lags up to `gap` bins
            cannot leak across sets.
        key : jax.random key or int, optional
            Randomises which blocks or trials go where (the same key gives the same split).
            Without it the split is deterministic.

        Returns
        -------
        Splits
            ``(train, test, validation)``; `validation` is a :class:`LockedBox`, or None for two
            fractions. When a set is made of several non-adjacent blocks of data without trials,
            each stretch of adjacent blocks becomes a trial labelled by the index of its first
            block, so that temporal filters stop at the gaps. Data with trials keep their
            trial labels.

        Raises
        ------
        ValueError
            For bad `by`, `fractions`, `n_blocks` or `gap`, or when a set would get no bins.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesneuro.data import SpikeData
        >>> data = SpikeData.from_counts(np.ones((100, 3)), bin_size=0.01)
        >>> train, test, val = data.split(fractions=(0.6, 0.2, 0.2), gap=5)
        >>> train.n_time, test.n_time, val
        (60, 15, LockedBox(validation set, locked: 15 bins, 1 trial, 3 neurons; opened 0 times))
        >>> blocks = data.split(n_blocks=10, key=0)
        >>> blocks.train.n_time, blocks.train.n_trial > 1
        (60, True)
        """
        return _split(self, by=by, fractions=fractions, n_blocks=n_blocks, gap=gap, key=key)
