"""Loaders for three public recordings with behaviour, as :class:`~bayesneuro.data.SpikeData`.

Each loader takes the path of the user's own copy of a data set (its folder or its file) and
returns binned spike counts with the behavioural covariates as named features. Nothing is
downloaded and nothing is unpickled: MATLAB files are read with :func:`scipy.io.loadmat` and the
binary tracking file with :func:`numpy.frombuffer`.

- :func:`load_place_cells_2d`: 49 hippocampal place cells of a rat foraging in a circular arena,
  position ``x``, ``y`` in cm (Barbieri et al. 2004; nSTAT's ``PlaceCellDataAnimal1.mat``).
- :func:`load_linear_track`: 31 tetrode units of a rat running on a linear track, ``position``
  along the track in camera pixels (nelpy example data, Kemere lab).
- :func:`load_head_direction`: 19 head-direction cells of the mouse anterodorsal thalamus, head
  ``angle`` in radians (Peyrache et al. 2015; the lab's teaching excerpt ``dataHD.mat``).

Tracking gaps
-------------
Covariates are never interpolated across a tracking gap. A bin is kept only when no gap between
consecutive valid tracking samples longer than `max_gap` seconds overlaps it; its covariate is
the tracked position linearly interpolated at the bin centre (between two samples at most
`max_gap` apart). Each run of consecutive kept bins is one segment: its label is the bin's trial
id (:attr:`SpikeData.trial_ids`, :attr:`SpikeData.segment_ids`), so that temporal priors, lags
and spike-history filters stop at the gaps. Dropped bins are counted in a
:class:`TrackingGapWarning` only when the caller asks for it (``warn=True``); the loaders are
deterministic, so the counts are also stated in each loader's docstring for the shared copies.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from .data import SpikeData

__all__ = [
    "TrackingGapWarning",
    "load_head_direction",
    "load_linear_track",
    "load_place_cells_2d",
]


class TrackingGapWarning(UserWarning):
    """Bins were dropped because the behaviour was not tracked during them."""


# ---------------------------------------------------------------------------------------------
# shared helpers


def _resolve(path: Any, default_name: str, what: str) -> Path:
    """The data file: `path` itself, or `default_name` inside the folder `path`."""
    if path is None:
        raise ValueError(
            f"{what}: pass the path of your copy of the data (its folder or {default_name!r})"
        )
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / default_name
    if not p.is_file():
        raise FileNotFoundError(f"{what}: {p} not found (expected the folder holding {default_name!r} or the file)")
    return p


def _check_positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _valid_bins(edges: np.ndarray, t_track: np.ndarray, max_gap: float) -> np.ndarray:
    """Bins ``[edges[j], edges[j+1])`` inside the tracked span that no gap > `max_gap` overlaps."""
    left, right = edges[:-1], edges[1:]
    ok = (left >= t_track[0]) & (right <= t_track[-1])
    dt = np.diff(t_track)
    big = np.flatnonzero(dt > max_gap)
    if big.size:
        g0, g1 = t_track[big], t_track[big + 1]  # gap (g0, g1), sorted and disjoint
        # a bin overlaps some gap iff the last gap starting before its right edge ends after its left edge
        k = np.searchsorted(g0, right, side="left") - 1
        hit = (k >= 0) & (g1[np.clip(k, 0, None)] > left)
        ok &= ~hit
    return ok


def _bin_units(spike_times: Sequence[np.ndarray], edges: np.ndarray) -> np.ndarray:
    """Counts ``(n_bin, n_unit)`` of each unit's spikes in ``[edges[j], edges[j+1])``."""
    n_bin = edges.size - 1
    out = np.zeros((n_bin, len(spike_times)), dtype=np.int64)
    for i, t in enumerate(spike_times):
        j = np.searchsorted(edges, t, side="right") - 1
        j = j[(j >= 0) & (j < n_bin)]
        out[:, i] = np.bincount(j, minlength=n_bin)
    return out


def _segments(valid: np.ndarray) -> np.ndarray:
    """Segment label ``0, 1, ...`` of each kept bin: a new one after every dropped bin."""
    idx = np.flatnonzero(valid)
    return np.r_[0, np.cumsum(np.diff(idx) != 1)].astype(np.int64) if idx.size else idx


def _tracked_spike_data(
    spike_times: Sequence[np.ndarray],
    neuron_ids: Sequence[Any],
    t_track: np.ndarray,
    track: np.ndarray,
    feature_names: Sequence[str],
    *,
    bin_size: float,
    max_gap: float,
    min_speed: float | None,
    warn: bool,
    what: str,
) -> SpikeData:
    """Bin spikes on one grid over the tracked span; keep the bins with tracked behaviour."""
    n_bin = int(np.floor((t_track[-1] - t_track[0]) / bin_size + 1e-9))
    if n_bin < 1:
        raise ValueError(f"{what}: the tracked span is shorter than one bin of {bin_size} s")
    edges = t_track[0] + np.arange(n_bin + 1) * bin_size
    valid = _valid_bins(edges, t_track, max_gap)
    centers = edges[:-1] + bin_size / 2
    cov = np.column_stack([np.interp(centers, t_track, track[:, f]) for f in range(track.shape[1])])
    n_gap = int((~valid).sum())
    n_slow = 0
    if min_speed is not None:
        lo = np.column_stack([np.interp(edges[:-1], t_track, track[:, f]) for f in range(track.shape[1])])
        hi = np.column_stack([np.interp(edges[1:], t_track, track[:, f]) for f in range(track.shape[1])])
        speed = np.linalg.norm(hi - lo, axis=1) / bin_size
        slow = valid & (speed < min_speed)
        n_slow = int(slow.sum())
        valid &= ~slow
    if not valid.any():
        raise ValueError(f"{what}: no bin left after dropping tracking gaps and slow bins")
    if warn and (n_gap or n_slow):
        warnings.warn(
            f"{what}: dropped {n_gap} of {n_bin} bins in tracking gaps longer than {max_gap} s"
            + (f" and {n_slow} bins slower than min_speed={min_speed}" if min_speed is not None else "")
            + f"; {int(valid.sum())} bins in {int(_segments(valid)[-1]) + 1} segments remain",
            TrackingGapWarning,
            stacklevel=3,
        )
    counts = _bin_units(spike_times, edges)
    return SpikeData(
        counts[valid],
        bin_size=bin_size,
        bin_centers=centers[valid],
        neuron_ids=np.asarray(neuron_ids),
        covariates=cov[valid],
        feature_names=list(feature_names),
        trial_ids=_segments(valid),
    )


# ---------------------------------------------------------------------------------------------
# 2-D place cells (Barbieri et al. 2004; nSTAT)

ARENA_RADIUS_CM = 35.0


def load_place_cells_2d(
    path: Any,
    *,
    bin_size: float = 0.2,
    max_gap: float = 0.1,
    min_speed: float | None = None,
    warn: bool = False,
) -> SpikeData:
    """Hippocampal place cells of a rat foraging in a 70-cm circular arena (2-D position).

    Reads ``PlaceCellDataAnimal1.mat`` of the nSTAT toolbox (49 cells, 24 min, position tracked
    at 30 Hz; Barbieri et al. 2004) and bins every cell's spikes on one grid that starts at the
    first tracking sample. The covariates are the position in **cm from the arena centre**
    (the file's unit-disc coordinates times 35), linearly interpolated at the bin centres.

    Parameters
    ----------
    path : str or path-like
        The folder holding ``PlaceCellDataAnimal1.mat``, or the file itself.
    bin_size : float, default 0.2
        Bin width in seconds.
    max_gap : float, default 0.1
        Longest gap between tracking samples, in seconds, that a kept bin may overlap (the
        shared copy has none: its samples are 1/30 s apart throughout).
    min_speed : float, optional
        Drop bins in which the animal moved slower than this, in cm/s (distance between the
        positions at the bin's two edges over `bin_size`). Place-cell analyses often keep only
        running bins; each dropped run splits a segment.
    warn : bool, default False
        Warn with a :class:`TrackingGapWarning` that gives the number of dropped bins.

    Returns
    -------
    SpikeData
        Counts ``(time, neuron)`` with neuron ids ``0, ..., 48`` (column ``k`` is cell ``k + 1``
        of the file), features ``("x", "y")`` in cm, and one trial (segment) per contiguous run
        of kept bins.

    Raises
    ------
    FileNotFoundError
        If the file is not found at `path`.
    ValueError
        For a bad `bin_size`, `max_gap` or `min_speed`, or a file without the expected variables.

    Examples
    --------
    >>> from bayesneuro.datasets import load_place_cells_2d
    >>> data = load_place_cells_2d("../shared/data/place_cells_2d_barbieri_animal1")  # doctest: +SKIP
    >>> data  # doctest: +SKIP
    SpikeData(n_time=7299, n_neuron=49, bin_size=0.2 s, time [0, 1459.8) s, n_trial=1, features=[x, y])
    >>> train, test = data.split(fractions=(0.8, 0.2))  # doctest: +SKIP
    """
    what = "load_place_cells_2d"
    bin_size = _check_positive(bin_size, "bin_size")
    max_gap = _check_positive(max_gap, "max_gap")
    if min_speed is not None:
        min_speed = _check_positive(min_speed, "min_speed")
    f = _resolve(path, "PlaceCellDataAnimal1.mat", what)
    m = scipy.io.loadmat(f)
    for name in ("time", "x", "y", "neuron"):
        if name not in m:
            raise ValueError(f"{what}: {f} has no variable {name!r}; is it PlaceCellDataAnimal1.mat?")
    t = np.asarray(m["time"], dtype=np.float64).ravel()
    xy = ARENA_RADIUS_CM * np.column_stack([np.ravel(m["x"]), np.ravel(m["y"])]).astype(np.float64)
    ok = np.isfinite(t) & np.all(np.isfinite(xy), axis=1)
    t, xy = t[ok], xy[ok]
    cells = m["neuron"].ravel()
    spikes = [np.sort(np.asarray(c["spikeTimes"].ravel()[0], dtype=np.float64).ravel()) for c in cells]
    return _tracked_spike_data(
        spikes, np.arange(len(spikes)), t, xy, ("x", "y"), bin_size=bin_size, max_gap=max_gap,
        min_speed=min_speed, warn=warn, what=what,
    )


# ---------------------------------------------------------------------------------------------
# linear track (nelpy example data)

TRACKING_CLOCK_HZ = 30000.0
_TRACK_DTYPE = np.dtype([("time", "<u4"), ("x", "<u2"), ("y", "<u2"), ("x2", "<u2"), ("y2", "<u2")])


def _read_video_tracking(f: Path) -> np.ndarray:
    raw = f.read_bytes()
    end = b"<End settings>\n"
    i = raw.find(end)
    if not raw.startswith(b"<Start settings>") or i < 0:
        raise ValueError(f"{f} does not start with a '<Start settings>' ... '<End settings>' header")
    body = raw[i + len(end) :]
    if len(body) % _TRACK_DTYPE.itemsize:
        raise ValueError(
            f"{f}: the body after the header is {len(body)} bytes, not a whole number of "
            f"{_TRACK_DTYPE.itemsize}-byte records"
        )
    return np.frombuffer(body, dtype=_TRACK_DTYPE)


def _matclust_units(spikes: Any) -> tuple[list[str], list[np.ndarray]]:
    """Non-empty unit structs of a nested MatClust ``spikes`` cell: ids ``tt{tetrode}_u{unit}``."""
    top = spikes
    while isinstance(top, np.ndarray) and top.dtype == object and top.size == 1:
        top = top.ravel()[0]
    if not (isinstance(top, np.ndarray) and top.dtype == object):
        raise ValueError("spikes.mat: expected a cell array of tetrodes in the variable 'spikes'")
    ids, times = [], []

    def walk(a: Any, tetrode: int, unit: int | None) -> None:
        if isinstance(a, np.ndarray) and a.dtype == object:
            flat = a.ravel()
            for u, item in enumerate(flat):
                walk(item, tetrode, u if flat.size > 1 or unit is None else unit)
        elif isinstance(a, np.ndarray) and a.dtype.names and "time" in a.dtype.names and a.size:
            t = np.asarray(a["time"].ravel()[0], dtype=np.float64).ravel()
            if t.size:
                ids.append(f"tt{tetrode}_u{unit if unit is not None else 0}")
                times.append(np.sort(t))

    for k, tetrode in enumerate(top.ravel()):
        walk(tetrode, k, None)
    return ids, times


def load_linear_track(
    path: Any,
    *,
    bin_size: float = 0.2,
    max_gap: float = 0.1,
    max_still: float = 5.0,
    min_speed: float | None = None,
    warn: bool = False,
) -> SpikeData:
    """Place cells of a rat on a linear track: position along the track, in camera pixels.

    Reads the nelpy example session ``linear-track`` (Kemere lab): ``spikes.mat`` (MatClust
    output, 13 tetrodes; the 31 non-empty units are kept) and
    ``trajectory.videoPositionTracking`` (a text header, then 12-byte records
    ``<u4 time, <u2 x, <u2 y, <u2 x2, <u2 y2>`` at 60 Hz with times in 30-kHz clock ticks, which
    divided by 30000 give the seconds of ``spikes.mat``). The track is the camera's x axis; the
    covariate ``position`` is x in **pixels** (the file's pixel scale is not given).

    Tracking samples are dropped where the tracker reports one pixel unchanged for longer than
    `max_still` seconds: the LED was not seen and the last value repeats. In the shared copy the
    first 25.8 s sit at (477, 479) and everything after 5382.25 s at (522, 8) (the rest epoch,
    never tracked), while the longest still run of a tracked animal lasts 2.4 s. So the kept bins
    cover the running session, about 4423-5382 s (16 min). Gaps between samples longer than
    `max_gap` (two of 0.11 s in the shared copy) split it into segments.

    Parameters
    ----------
    path : str or path-like
        The folder holding ``spikes.mat`` and ``trajectory.videoPositionTracking``.
    bin_size : float, default 0.2
        Bin width in seconds.
    max_gap : float, default 0.1
        Longest gap between tracking samples, in seconds, that a kept bin may overlap.
    max_still : float, default 5.0
        Runs of identical tracked pixels longer than this many seconds count as untracked.
    min_speed : float, optional
        Drop bins slower than this, in pixels/s (distance between the positions at the bin's
        edges over `bin_size`).
    warn : bool, default False
        Warn with a :class:`TrackingGapWarning` that gives the number of dropped bins.

    Returns
    -------
    SpikeData
        Counts ``(time, neuron)`` with neuron ids ``"tt{tetrode}_u{unit}"`` (0-based indices in
        the MatClust cells), feature ``("position",)`` in pixels, one trial (segment) per
        contiguous run of kept bins. Bin times are the acquisition clock's seconds.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        For bad parameters or a malformed file.

    Examples
    --------
    >>> from bayesneuro.datasets import load_linear_track
    >>> data = load_linear_track("../shared/data/place_cells_linear_track_nelpy")  # doctest: +SKIP
    >>> data.n_neuron, data.feature_names, data.n_trial  # doctest: +SKIP
    (31, ('position',), 2)
    """
    what = "load_linear_track"
    bin_size = _check_positive(bin_size, "bin_size")
    max_gap = _check_positive(max_gap, "max_gap")
    max_still = _check_positive(max_still, "max_still")
    if min_speed is not None:
        min_speed = _check_positive(min_speed, "min_speed")
    p = Path(path).expanduser() if path is not None else None
    folder = p if p is not None and p.is_dir() else (p.parent if p is not None else None)
    f_spk = _resolve(folder, "spikes.mat", what)
    f_pos = _resolve(folder, "trajectory.videoPositionTracking", what)
    m = scipy.io.loadmat(f_spk)
    if "spikes" not in m:
        raise ValueError(f"{what}: {f_spk} has no variable 'spikes'")
    ids, spikes = _matclust_units(m["spikes"])
    rec = _read_video_tracking(f_pos)
    t = rec["time"].astype(np.float64) / TRACKING_CLOCK_HZ
    xy = np.column_stack([rec["x"], rec["y"]]).astype(np.float64)
    # strictly increasing times (the file repeats one time stamp): keep the first of a repeat
    keep = np.r_[True, np.diff(t) > 0]
    t, xy = t[keep], xy[keep]
    # untracked: the same pixel for longer than max_still seconds
    moved = np.r_[True, np.any(np.diff(xy, axis=0) != 0, axis=1)]
    run = np.cumsum(moved) - 1
    starts = np.flatnonzero(moved)
    ends = np.r_[starts[1:], t.size] - 1
    still = (t[ends] - t[starts]) > max_still
    tracked = ~still[run]
    t, xy = t[tracked], xy[tracked]
    if t.size < 2:
        raise ValueError(f"{what}: fewer than two tracked samples after dropping still runs > {max_still} s")
    return _tracked_spike_data(
        spikes, ids, t, xy[:, :1], ("position",), bin_size=bin_size, max_gap=max_gap,
        min_speed=min_speed, warn=warn, what=what,
    )


# ---------------------------------------------------------------------------------------------
# head direction (Peyrache et al. 2015)

HD_BIN = 0.01  # the file's bins, in seconds


def load_head_direction(
    path: Any,
    *,
    bin_size: float = 0.02,
    max_gap: float = 0.05,
    warn: bool = False,
) -> SpikeData:
    """Head-direction cells of the mouse anterodorsal thalamus, with the head angle.

    Reads ``dataHD.mat`` (Peyrache et al. 2015, the lab's teaching excerpt): 19 neurons, spike
    counts in 10-ms bins over 35 minutes of wake exploration (``Qrun``), each bin with the time
    stamp of the 39-Hz video frame it falls in and the head angle in radians (``angRun``). The
    10-ms bins are the concatenated valid-tracking periods: a jump of more than `max_gap`
    seconds in the time stamps starts a new segment (113 in the shared copy; 4 of them are
    shorter than 50 ms). Within each
    segment, ``bin_size / 0.01`` consecutive 10-ms bins are summed (a remainder shorter than one
    bin is dropped) and the angle is their circular mean. There are no spike times in the file:
    a segment's bins are timed from its first video stamp, ``stamp + (i + 0.5) * bin_size``
    (to within a video frame, 25.6 ms).

    Parameters
    ----------
    path : str or path-like
        The folder holding ``dataHD.mat``, or the file itself.
    bin_size : float, default 0.02
        Bin width in seconds, a whole multiple of 0.01.
    max_gap : float, default 0.05
        A jump in the video time stamps larger than this (in seconds) starts a new segment.
    warn : bool, default False
        Warn with a :class:`TrackingGapWarning` that gives the number of 10-ms bins dropped
        (segment remainders shorter than one bin).

    Returns
    -------
    SpikeData
        Counts ``(time, neuron)``, neuron ids ``0, ..., 18``, feature ``("angle",)`` in radians
        in ``[0, 2 pi)``, one trial (segment) per valid-tracking period.

    Raises
    ------
    FileNotFoundError
        If the file is not found.
    ValueError
        If `bin_size` is not a whole multiple of 0.01 s, or the file lacks ``Qrun``/``angRun``.

    Examples
    --------
    >>> from bayesneuro.datasets import load_head_direction
    >>> data = load_head_direction("../shared/data/head_direction_adn_peyrache")  # doctest: +SKIP
    >>> data.n_neuron, data.feature_names, data.n_trial  # doctest: +SKIP
    (19, ('angle',), 113)
    """
    what = "load_head_direction"
    bin_size = _check_positive(bin_size, "bin_size")
    max_gap = _check_positive(max_gap, "max_gap")
    k = round(bin_size / HD_BIN)
    if k < 1 or abs(k * HD_BIN - bin_size) > 1e-9:
        raise ValueError(f"{what}: bin_size must be a whole multiple of 0.01 s (the file's bins), got {bin_size}")
    f = _resolve(path, "dataHD.mat", what)
    m = scipy.io.loadmat(f, variable_names=["Qrun", "angRun"])
    for name in ("Qrun", "angRun"):
        if name not in m:
            raise ValueError(f"{what}: {f} has no variable {name!r}; is it dataHD.mat?")
    q = np.asarray(m["Qrun"]).astype(np.int64)
    stamp, angle = np.asarray(m["angRun"][:, 0], np.float64), np.asarray(m["angRun"][:, 1], np.float64)
    if q.shape[0] != stamp.shape[0]:
        raise ValueError(f"{what}: Qrun has {q.shape[0]} bins but angRun {stamp.shape[0]} rows")
    new = np.r_[True, np.diff(stamp) > max_gap]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], stamp.size]
    rows, angles, centers, segs = [], [], [], []
    dropped = 0
    for s, (a, b) in enumerate(zip(starts, ends)):
        n = (b - a) // k
        dropped += (b - a) - n * k
        if n == 0:
            continue
        idx = np.arange(a, a + n * k).reshape(n, k)
        rows.append(q[idx].sum(axis=1))
        z = np.exp(1j * angle[idx]).mean(axis=1)
        angles.append(np.mod(np.angle(z), 2 * np.pi))
        centers.append(stamp[a] + (np.arange(n) + 0.5) * bin_size)
        segs.append(np.full(n, len(segs)))
    if not rows:
        raise ValueError(f"{what}: no segment is as long as one bin of {bin_size} s")
    if warn and dropped:
        warnings.warn(
            f"{what}: dropped {dropped} of {stamp.size} 10-ms bins (segment ends shorter than "
            f"bin_size={bin_size} s); {sum(len(r) for r in rows)} bins in {len(rows)} segments remain",
            TrackingGapWarning,
            stacklevel=2,
        )
    angle_out = np.concatenate(angles)
    angle_out[angle_out >= 2 * np.pi] = 0.0  # np.mod of a tiny negative angle rounds up to 2 pi
    return SpikeData(
        np.concatenate(rows),
        bin_size=bin_size,
        bin_centers=np.concatenate(centers),
        covariates=angle_out,
        feature_names=["angle"],
        trial_ids=np.concatenate(segs),
    )
