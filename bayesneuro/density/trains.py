"""Spike trains: spike times per neuron within observation segments.

Single-neuron statistics need spike *times* (inter-spike intervals, autocorrelograms), not
counts. :class:`SpikeTrains` holds one sorted array of spike times (seconds) per neuron and the
segments ``[start, stop)`` over which the neurons were observed (trials, epochs, or the whole
recording). Intervals between spikes are only ever formed within a segment, so an ISI never
crosses a trial boundary or a gap in the recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from .._validation import _as_ids

__all__ = ["ISIArray", "SpikeTrains"]


class ISIArray(np.ndarray):
    """Inter-spike intervals of one neuron that remember the segment (trial) of each interval.

    What :meth:`SpikeTrains.isis` returns: a plain float array for every array use (means,
    histograms, ``np.asarray``), plus ``segment``, the segment index of each ISI, so that
    :func:`~bayesneuro.density.local_variation` pairs consecutive ISIs only within a segment.
    Elementwise results (``isi * 1000``) keep ``segment``; a slice or a selection loses it
    (``segment`` is None), and ``local_variation`` then refuses it rather than pair intervals
    that were not consecutive.

    Examples
    --------
    >>> from bayesneuro.density import SpikeTrains
    >>> isi = SpikeTrains([[0.1, 0.3, 0.35, 1.2, 1.4]], segments=[[0, 1], [1, 2]]).isis()[0]
    >>> isi.round(2).tolist(), isi.segment.tolist()
    ([0.2, 0.05, 0.2], [0, 0, 1])
    """

    segment: np.ndarray | None

    def __new__(cls, values: Any, segment: Any) -> Self:
        obj = np.asarray(values, dtype=np.float64).view(cls)
        seg = np.asarray(segment, dtype=np.int64)
        if seg.shape != obj.shape or obj.ndim != 1:
            raise ValueError(f"segment must give one index per ISI ({obj.shape}), got shape {seg.shape}")
        obj.segment = seg
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        seg = getattr(obj, "segment", None)
        # elementwise results keep the segments; slices and selections cannot know theirs
        self.segment = seg if seg is not None and getattr(obj, "shape", None) == self.shape else None

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        if arr.ndim == 0:  # reductions (mean, sum, ...) give plain numbers
            return arr[()]
        return super().__array_wrap__(arr, context, return_scalar)

    def pairs(self) -> np.ndarray:
        """Consecutive ISI pairs ``(I_i, I_{i+1})`` within segments, ``(n, 2)``."""
        if self.segment is None:
            raise ValueError(
                "these ISIs were cut from SpikeTrains.isis() and no longer know their segment boundaries "
                "(trials): consecutive ISIs cannot be paired; pass the whole isis()[j], or "
                "local_variation(pairs=trains.isi_pairs()[j])"
            )
        v = np.asarray(self)
        same = self.segment[1:] == self.segment[:-1]
        return np.column_stack([v[:-1][same], v[1:][same]])


def _as_segments(segments: Any) -> np.ndarray:
    seg = np.asarray(segments, dtype=np.float64)
    if seg.ndim == 1 and seg.shape == (2,):
        seg = seg[None, :]
    if seg.ndim != 2 or seg.shape[1] != 2 or seg.shape[0] == 0:
        raise ValueError(f"segments must be (n_segment, 2) start/stop times in seconds, got shape {seg.shape}")
    if not np.all(np.isfinite(seg)):
        raise ValueError("segments must be finite start/stop times")
    if np.any(seg[:, 1] <= seg[:, 0]):
        bad = int(np.flatnonzero(seg[:, 1] <= seg[:, 0])[0])
        raise ValueError(f"segment {bad} has stop <= start ({seg[bad].tolist()})")
    order = np.argsort(seg[:, 0], kind="stable")
    seg = seg[order]
    touch = (seg[1:, 0] < seg[:-1, 1]) & (seg[:-1, 1] - seg[1:, 0] <= 1e-9 * np.maximum(1.0, np.abs(seg[1:, 0])))
    seg[:-1, 1][touch] = seg[1:, 0][touch]  # rounding of touching edges, e.g. bin centres +- half a bin
    if np.any(seg[1:, 0] < seg[:-1, 1]):
        raise ValueError("segments overlap; give disjoint [start, stop) intervals")
    return seg


class SpikeTrains:
    """Spike times of several neurons, observed over one or more segments.

    Parameters
    ----------
    times : sequence of array_like
        One array of spike times (seconds) per neuron, each finite; they are sorted here.
    segments : array_like, shape (n_segment, 2), optional
        Disjoint ``[start, stop)`` observation intervals (trials or epochs). Default: one segment
        from the first to just after the last spike. Spikes outside every segment are dropped.
    neuron_ids : array_like, optional
        Unique labels, default ``0 .. n_neuron - 1``.
    resolution : float, optional
        Time resolution of the spike times in seconds (e.g. 0.001 for times stored in whole
        milliseconds), kept for the statistics that need it (refractory violations). Default 0.

    Examples
    --------
    >>> from bayesneuro.density import SpikeTrains
    >>> tr = SpikeTrains([[0.1, 0.3, 0.35, 1.2], [0.5, 1.5]], segments=[[0, 1], [1, 2]])
    >>> [isi.round(2).tolist() for isi in tr.isis()]  # 0.35 -> 1.2 crosses a segment edge
    [[0.2, 0.05], []]
    >>> tr.isis()[0].segment.tolist()  # the segment of each ISI (an ISIArray)
    [0, 0]
    >>> tr.n_spikes.tolist(), tr.duration
    ([4, 2], 2.0)
    """

    def __init__(self, times: Sequence[Any], *, segments: Any = None, neuron_ids: Any = None,
                 resolution: float = 0.0):
        if isinstance(times, np.ndarray) and times.ndim == 1 and times.dtype != object:
            raise TypeError("times must be a sequence of arrays, one per neuron (wrap one neuron in a list)")
        trains = []
        for i, t in enumerate(times):
            arr = np.asarray(t, dtype=np.float64).ravel()
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"spike times of neuron {i} contain NaN or inf")
            trains.append(np.sort(arr))
        if not trains:
            raise ValueError("times holds no neurons")
        if segments is None:
            allt = np.concatenate(trains)
            if allt.size == 0:
                raise ValueError("no spikes at all, and no segments to say how long the recording was")
            segments = [[float(allt.min()), float(np.nextafter(allt.max(), np.inf))]]
        seg = _as_segments(segments)
        kept = []
        for t in trains:
            k = np.searchsorted(seg[:, 0], t, side="right") - 1
            inside = (k >= 0) & (t < seg[np.maximum(k, 0), 1])
            kept.append(t[inside])
        self._times = [np.require(t, requirements="C") for t in kept]
        for t in self._times:
            t.flags.writeable = False
        self._segments = seg
        self._segments.flags.writeable = False
        ids = np.arange(len(trains)) if neuron_ids is None else neuron_ids
        self._ids = _as_ids(ids, len(trains))
        res = float(resolution)
        if not np.isfinite(res) or res < 0:
            raise ValueError(f"resolution must be a non-negative number of seconds, got {resolution!r}")
        self._resolution = res

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_times(cls, times: Any, unit_ids: Any, *, segments: Any = None, neuron_ids: Any = None,
                   resolution: float = 0.0) -> SpikeTrains:
        """Build from one flat array of spike times with a unit label per spike.

        Parameters
        ----------
        times, unit_ids : array_like, shape (n_spike,)
            Spike times (seconds) and the unit of each.
        segments, resolution
            As for :class:`SpikeTrains`.
        neuron_ids : array_like, optional
            Units to keep, in this order (a unit without spikes is kept, empty). Default: the
            sorted unique ``unit_ids``.

        Examples
        --------
        >>> from bayesneuro.density import SpikeTrains
        >>> tr = SpikeTrains.from_times([0.1, 0.2, 0.4], ["a", "b", "a"], segments=[[0, 1]])
        >>> tr.neuron_ids.tolist(), tr.n_spikes.tolist()
        (['a', 'b'], [2, 1])
        """
        times = np.asarray(times, dtype=np.float64).ravel()
        units = np.asarray(unit_ids).ravel()
        if times.shape != units.shape:
            raise ValueError(f"times ({times.size}) and unit_ids ({units.size}) must have the same length")
        ids = np.unique(units) if neuron_ids is None else _as_ids(neuron_ids, None)
        return cls([times[units == u] for u in ids], segments=segments, neuron_ids=ids,
                   resolution=resolution)

    @classmethod
    def from_pynapple(cls, group: Any, *, ep: Any = None, resolution: float = 0.0) -> SpikeTrains:
        """Build from a pynapple ``TsGroup``; the segments are `ep` or its time support.

        Examples
        --------
        >>> import numpy as np, pynapple as nap
        >>> from bayesneuro.density import SpikeTrains
        >>> g = nap.TsGroup({3: nap.Ts(np.array([0.1, 0.5])), 7: nap.Ts(np.array([0.2, 0.7]))},
        ...                 time_support=nap.IntervalSet(0, 1))
        >>> SpikeTrains.from_pynapple(g).neuron_ids.tolist()
        [3, 7]
        """
        from .._pynapple import _import_pynapple, _tsgroup_spikes

        nap = _import_pynapple("SpikeTrains.from_pynapple")
        if not isinstance(group, nap.TsGroup):
            raise ValueError(f"group must be a pynapple TsGroup, got {type(group).__name__}")
        times, units, ids, intervals = _tsgroup_spikes(group, ep)
        return cls([times[units == u] for u in ids], segments=intervals, neuron_ids=ids,
                   resolution=resolution)

    @classmethod
    def from_spike_data(cls, data: Any) -> SpikeTrains:
        """Approximate spike times from binned counts: each spike at its bin centre.

        The resolution is the bin size, so ISIs shorter than one bin are lost (two spikes in
        one bin give an ISI of 0). Use real spike times where you have them.
        """
        from ..data import SpikeData

        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a SpikeData, got {type(data).__name__}")
        c = data.bin_centers
        times = [np.repeat(c, data.counts[:, j]) for j in range(data.n_neuron)]
        seg_ids = data.segment_ids
        starts = np.flatnonzero(np.r_[True, seg_ids[1:] != seg_ids[:-1]])
        stops = np.r_[starts[1:], data.n_time] - 1
        h = data.bin_size / 2
        segments = np.column_stack([c[starts] - h, c[stops] + h])
        return cls(times, segments=segments, neuron_ids=data.neuron_ids, resolution=data.bin_size)

    # -- properties --------------------------------------------------------------------------

    @property
    def times(self) -> list[np.ndarray]:
        """Sorted spike times per neuron (read-only arrays)."""
        return list(self._times)

    @property
    def segments(self) -> np.ndarray:
        """``(n_segment, 2)`` observation intervals ``[start, stop)``, sorted."""
        return self._segments

    @property
    def neuron_ids(self) -> np.ndarray:
        """Neuron labels."""
        return self._ids

    @property
    def resolution(self) -> float:
        """Time resolution of the spike times (seconds)."""
        return self._resolution

    @property
    def n_neuron(self) -> int:
        """Number of neurons."""
        return len(self._times)

    @property
    def n_segment(self) -> int:
        """Number of segments."""
        return self._segments.shape[0]

    @property
    def n_spikes(self) -> np.ndarray:
        """Spikes per neuron."""
        return np.array([t.size for t in self._times], dtype=np.int64)

    @property
    def duration(self) -> float:
        """Total observed time (sum of segment lengths), seconds."""
        return float(np.sum(self._segments[:, 1] - self._segments[:, 0]))

    def __len__(self) -> int:
        return self.n_neuron

    def __repr__(self) -> str:
        return (f"SpikeTrains(n_neuron={self.n_neuron}, n_segment={self.n_segment}, "
                f"duration={self.duration:.6g} s, n_spikes={int(self.n_spikes.sum())})")

    # -- derived -----------------------------------------------------------------------------

    def segment_of(self, neuron: int) -> np.ndarray:
        """Segment index of each spike of neuron number `neuron` (a position, not an id)."""
        t = self._times[neuron]
        return np.searchsorted(self._segments[:, 0], t, side="right") - 1

    def isis(self) -> list[ISIArray]:
        """Inter-spike intervals per neuron, seconds, formed within segments only.

        Each is an :class:`ISIArray`: a float array that also holds the segment of each ISI,
        so that :func:`~bayesneuro.density.local_variation` never pairs the last ISI of one
        trial with the first of the next.
        """
        out = []
        for j, t in enumerate(self._times):
            k = self.segment_of(j)
            same = k[1:] == k[:-1]
            out.append(ISIArray(np.diff(t)[same], k[1:][same]))
        return out

    def isi_pairs(self) -> list[np.ndarray]:
        """Consecutive ISI pairs ``(I_i, I_{i+1})`` per neuron, within segments; ``(n, 2)``."""
        out = []
        for j, t in enumerate(self._times):
            k = self.segment_of(j)
            d = np.diff(t)
            ok = k[1:] == k[:-1]
            pair = ok[1:] & ok[:-1]
            out.append(np.column_stack([d[:-1][pair], d[1:][pair]]) if d.size > 1 else np.zeros((0, 2)))
        return out

    def window_counts(self, window: float | None = None, *, return_segments: bool = False):
        """Spike counts ``(n_window, n_neuron)`` in windows tiling each segment.

        Parameters
        ----------
        window : float, optional
            Window length (seconds). Each segment is cut into ``floor(length / window)`` windows
            from its start (a shorter remainder is dropped). Default: each segment is one window
            (counts per trial).
        return_segments : bool
            Also return the segment index of each window.
        """
        seg = self._segments
        if window is None:
            edges_lo, edges_hi = seg[:, 0], seg[:, 1]
            win_seg = np.arange(seg.shape[0])
        else:
            window = float(window)
            if not np.isfinite(window) or window <= 0:
                raise ValueError(f"window must be a positive number of seconds, got {window!r}")
            n_w = np.floor((seg[:, 1] - seg[:, 0]) / window * (1 + 1e-12)).astype(np.int64)
            if n_w.sum() == 0:
                raise ValueError(f"window ({window} s) is longer than every segment; no window fits")
            edges_lo = np.concatenate([s + window * np.arange(n) for (s, _), n in zip(seg, n_w)])
            edges_hi = edges_lo + window
            win_seg = np.repeat(np.arange(seg.shape[0]), n_w)
        out = np.empty((edges_lo.size, self.n_neuron), dtype=np.int64)
        for j, t in enumerate(self._times):
            out[:, j] = np.searchsorted(t, edges_hi, side="left") - np.searchsorted(t, edges_lo, side="left")
        return (out, win_seg) if return_segments else out

    def restrict(self, segments: Any) -> SpikeTrains:
        """Keep only spikes within `segments` (intersected with the current ones)."""
        new = _as_segments(segments)
        pieces = []
        for a, b in self._segments:
            for c, d in new:
                lo, hi = max(a, c), min(b, d)
                if hi > lo:
                    pieces.append((lo, hi))
        if not pieces:
            raise ValueError("the requested segments do not overlap the observed ones")
        return SpikeTrains(self._times, segments=pieces, neuron_ids=self._ids, resolution=self._resolution)

    def select_segments(self, index: Any) -> SpikeTrains:
        """Keep the segments at positions `index` (e.g. a set of trials)."""
        idx = np.atleast_1d(np.asarray(index))
        return SpikeTrains(self._times, segments=self._segments[idx], neuron_ids=self._ids,
                           resolution=self._resolution)

    def select_neurons(self, ids: Any) -> SpikeTrains:
        """Keep the neurons with these ids, in this order."""
        ids = np.atleast_1d(np.asarray(ids))
        pos = {v: i for i, v in enumerate(self._ids.tolist())}
        missing = [v for v in ids.tolist() if v not in pos]
        if missing:
            raise ValueError(f"unknown neuron ids: {missing[:5]}")
        idx = [pos[v] for v in ids.tolist()]
        return SpikeTrains([self._times[i] for i in idx], segments=self._segments,
                           neuron_ids=self._ids[idx], resolution=self._resolution)

    def to_spike_data(self, bin_size: float):
        """Bin into a :class:`~bayesneuro.SpikeData`; several segments become trials."""
        from ..data import SpikeData

        times = np.concatenate(self._times)
        units = np.repeat(self._ids, self.n_spikes)
        intervals = self._segments if self.n_segment > 1 else None
        t0, t1 = (None, None) if intervals is not None else tuple(self._segments[0])
        return SpikeData.from_spike_times(times, units, bin_size=bin_size, t_start=t0, t_stop=t1,
                                          neuron_ids=self._ids, trial_intervals=intervals)
