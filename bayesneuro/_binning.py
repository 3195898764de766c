"""Spike-time binning for :class:`~bayesneuro.data.SpikeData`: vectorised counting on bin grids.

Bin ``j`` of a span starting at ``start`` is ``[start + j * bin_size, start + (j + 1) * bin_size)``,
with its edge computed exactly as ``start + np.arange(n_bins + 1) * bin_size`` so that counts agree
with ``np.histogram`` on those edges bit for bit. Spike times binned from pynapple use pynapple's
edges instead (``TsGroup.count``): the same ``[a, b)`` bins with every edge after the first
rounded to ``EDGE_DECIMALS`` decimals, so that a spike on a decimal edge such as 0.3 s lands in
the bin that starts there (``0.0 + 3 * 0.1`` is 0.30000000000000004 in floating point, which
would put it in the bin before). Also resamples covariate samples onto the bins.
Private: :meth:`bayesneuro.data.SpikeData.from_spike_times` is the public face of this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import (
    _as_ids,
    _as_labels,
    _check_intervals,
    _check_sorted_per_unit,
    _check_time,
    _n_bins,
)

EDGE_DECIMALS = 9  # pynapple's time precision (nap.config.time_index_precision): edges on 1 ns


def _edge(start: Any, j: np.ndarray, bin_size: float, rounded: bool) -> np.ndarray:
    """Left edge of bin ``j``: ``start + j * bin_size``, rounded as pynapple rounds it (not
    the first edge, which is the interval's start) when `rounded`."""
    e = start + j * bin_size
    if rounded:
        e = np.where(j == 0, start, np.round(e, EDGE_DECIMALS))
    return e


def _grid_index(t: np.ndarray, start: Any, bin_size: float, rounded: bool = False) -> np.ndarray:
    """Index ``j`` of the bin ``[edge(j), edge(j+1))`` holding ``t`` (see :func:`_edge`)."""
    j = np.floor((t - start) / bin_size).astype(np.int64)
    j -= t < _edge(start, j, bin_size, rounded)
    j += t >= _edge(start, j + 1, bin_size, rounded)
    return j


def _bin_spikes(
    times: np.ndarray,
    codes: np.ndarray,
    n_neuron: int,
    starts: np.ndarray,
    n_bins: np.ndarray,
    limits: np.ndarray,
    bin_size: float,
    rounded: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin spikes into consecutive intervals; spikes outside ``[start, limit)`` are dropped
    (`rounded`: pynapple's edges, see :func:`_edge`)."""
    k = np.searchsorted(starts, times, side="right") - 1
    inside = k >= 0
    k = np.where(inside, k, 0)
    inside &= times < limits[k]
    t, c, k = times[inside], codes[inside], k[inside]
    j = _grid_index(t, starts[k], bin_size, rounded)
    offsets = np.r_[0, np.cumsum(n_bins)]
    n_total = int(offsets[-1])
    flat = (offsets[k] + j) * n_neuron + c
    counts = np.bincount(flat, minlength=n_total * n_neuron).reshape(n_total, n_neuron)
    seg = np.repeat(np.arange(len(starts)), n_bins)
    local = np.arange(n_total) - offsets[seg]
    centers = starts[seg] + (local + 0.5) * bin_size
    return counts, centers, seg


MAX_GAP_STEPS = 5  # default max_gap: this many median sampling periods,
MAX_GAP_SECONDS = 1.0  # or this many seconds if longer (and at least one bin)


def _max_gap(t: np.ndarray, bin_size: float, max_gap: float | None) -> float:
    """The longest stretch without samples that interpolation may bridge, in seconds: `max_gap`,
    or by default the longest of ``MAX_GAP_STEPS`` median sampling periods of `t`,
    ``MAX_GAP_SECONDS`` and one bin."""
    if max_gap is not None:
        g = float(max_gap)
        if not g > 0:
            raise ValueError(f"max_gap must be a positive number of seconds (or None), got {max_gap!r}")
        return g
    step = float(np.median(np.diff(t))) if t.size > 1 else np.inf
    return max(MAX_GAP_STEPS * step, MAX_GAP_SECONDS, float(bin_size)) if np.isfinite(step) else np.inf


def _bin_average(
    t: np.ndarray, values: np.ndarray, centers: np.ndarray, bin_size: float, max_gap: float = np.inf
) -> np.ndarray:
    """Resample sorted samples ``(t, values)`` onto bins centred at `centers`.

    Samples at least as fine as the bins (median step <= `bin_size`) are averaged over each bin
    ``[left, left + bin_size)``; a bin that happens to hold no sample gets the linear
    interpolation at its centre. Coarser samples are linearly interpolated at every centre.
    Interpolation never bridges two samples more than `max_gap` seconds apart (a tracking gap):
    such bins are NaN (the caller drops them, :func:`_drop_gap_bins`).
    """
    step = float(np.median(np.diff(t))) if t.size > 1 else np.inf
    left, right = centers - bin_size / 2, centers + bin_size / 2
    lo = np.searchsorted(t, left, side="left")
    hi = np.searchsorted(t, right, side="left")
    n_in = hi - lo
    interp = (n_in == 0) | (step > bin_size)
    if t.size > 1:
        i = np.searchsorted(t, centers, side="right")
        inside = (i > 0) & (i < t.size)
        ic = np.clip(i, 1, t.size - 1)
        gap = interp & inside & (t[ic] - t[ic - 1] > max_gap)
    else:
        gap = np.zeros(centers.shape, bool)
    finite = np.isfinite(values).all(axis=1)
    bad_cum = np.r_[0, np.cumsum(~finite)]
    bad = np.where(interp, ~_all_finite_neighbours(t, finite, centers), (bad_cum[hi] - bad_cum[lo]) > 0)
    bad &= ~gap
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"covariates are NaN or infinite in {int(bad.sum())} bins (first at "
            f"t={centers[i]:.6g} s); restrict `ep` to valid periods or interpolate first"
        )
    tol = max(bin_size, step if np.isfinite(step) else 0.0)
    far = (centers < t[0] - tol) | (centers > t[-1] + tol)
    if far.any():
        raise ValueError(
            f"covariates (samples from {t[0]:.6g} to {t[-1]:.6g} s) do not cover the bin at "
            f"t={centers[far][0]:.6g} s; restrict `ep` to the covariates' time range"
        )
    values = np.where(finite[:, None], values, 0.0)
    shift = values.mean(axis=0)
    csum = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values - shift, axis=0)])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[hi] - csum[lo]) / n_in[:, None] + shift
    if interp.any():
        for f in range(values.shape[1]):
            out[interp, f] = np.interp(centers[interp], t, values[:, f])
    out[gap] = np.nan
    return out


def _drop_gap_bins(data: Any, covariates: np.ndarray, names: Any, max_gap: float, what: str,
                   stacklevel: int) -> tuple[Any, np.ndarray]:
    """`data` with `covariates` attached, without the bins whose covariates are NaN (bins in a
    gap longer than `max_gap`, from :func:`_bin_average`), with a warning that counts them.

    Returns the new data and the boolean mask of the bins kept. The bins either side of a gap
    become separate trials (``SpikeData.__getitem__``), so no model reads across it.
    """
    import warnings

    gap = np.isnan(covariates).any(axis=1)
    if gap.all():
        raise ValueError(
            f"{what}: every bin lies in a gap of the covariates longer than max_gap={max_gap:.6g} s; "
            "check their timestamps or pass a larger max_gap"
        )
    if gap.any():
        n_gap = int(gap.sum())
        warnings.warn(
            f"{what}: {n_gap} of {gap.size} bins ({n_gap * data.bin_size:.6g} s) lie in gaps in the covariates "
            f"longer than max_gap={max_gap:.6g} s (no samples there; the longest run of such bins is "
            f"{_longest_run(gap) * data.bin_size:.6g} s); they are dropped, not interpolated, and the "
            "bins either side of each gap become separate trials. Pass max_gap= (seconds) to bridge "
            "shorter gaps", UserWarning, stacklevel=stacklevel,
        )
        data = data[~gap]
    return data.with_covariates(covariates[~gap], feature_names=names), ~gap


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a boolean vector."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((stops - starts).max()) if starts.size else 0


def _all_finite_neighbours(t: np.ndarray, finite: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Whether the samples either side of each centre (those np.interp uses) are finite."""
    if t.size == 1:
        return np.full(centers.shape, bool(finite[0]))
    i = np.clip(np.searchsorted(t, centers, side="right"), 1, t.size - 1)
    return finite[i] & finite[i - 1]


def _bin_spike_times(
    times: Any,
    unit_ids: Any,
    bin_size: float,
    t_start: float | None,
    t_stop: float | None,
    neuron_ids: Any,
    trial_intervals: Any,
    tol: float,
    pynapple_edges: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check spike times and unit labels and count them in bins.

    Arguments are those of :meth:`~bayesneuro.data.SpikeData.from_spike_times` (`bin_size`
    already checked); `tol` is the fraction of a bin by which a span may fall short of a whole
    number of bins and still count as whole. `pynapple_edges` (with `trial_intervals`, the
    epochs of a ``TsGroup``): bin as ``TsGroup.count`` does, on its rounded edges (see
    :func:`_edge`), a spike exactly on an interval's stop kept when a whole last bin runs past
    the stop by less than `tol` (pynapple's epochs are closed).

    Returns
    -------
    counts : numpy.ndarray, shape (n_time, n_neuron), int64
    centers : numpy.ndarray, shape (n_time,)
        Bin centres in seconds.
    seg : numpy.ndarray, shape (n_time,), int64
        Position of each bin's interval (all 0 without `trial_intervals`).
    neuron_ids : numpy.ndarray, shape (n_neuron,)
        The neurons of the columns.
    starts : numpy.ndarray, shape (n_interval,)
        Left edge of each binned interval in seconds.
    """
    times = np.asarray(times)
    if times.ndim != 1 or times.dtype.kind not in "iuf":
        raise ValueError(f"times must be a 1-D numeric array of seconds, got {times.dtype} {times.shape}")
    times = times.astype(np.float64)
    unit_ids = np.asarray(unit_ids)
    if unit_ids.ndim != 1 or times.shape[0] != unit_ids.shape[0]:
        raise ValueError(
            f"times and unit_ids must have the same length, got {times.shape[0]} and "
            f"{unit_ids.shape[0] if unit_ids.ndim == 1 else unit_ids.shape}"
        )
    bad = ~np.isfinite(times)
    if bad.any():
        raise ValueError(
            f"spike times contain {int(bad.sum())} NaN or infinite values (first at index "
            f"{int(np.flatnonzero(bad)[0])})"
        )
    if neuron_ids is None:
        if times.size == 0:
            raise ValueError("there are no spikes, so the neurons are unknown; pass neuron_ids")
        neuron_ids, codes = np.unique(_as_labels(unit_ids, "unit_ids"), return_inverse=True)
    else:
        neuron_ids = _as_ids(neuron_ids, None)
        if neuron_ids.size == 0:
            raise ValueError("neuron_ids is empty: there must be at least one neuron")
        labels = _as_labels(unit_ids, "unit_ids") if times.size else neuron_ids[:0]
        if labels.dtype.kind != neuron_ids.dtype.kind and not (
            labels.dtype.kind in "iu" and neuron_ids.dtype.kind in "iu"
        ):
            raise ValueError(
                f"unit_ids ({labels.dtype}) and neuron_ids ({neuron_ids.dtype}) must be of the "
                "same kind (both integers or both strings)"
            )
        sorter = np.argsort(neuron_ids)
        pos = np.clip(np.searchsorted(neuron_ids, labels, sorter=sorter), 0, neuron_ids.size - 1)
        codes = sorter[pos]
        missing = neuron_ids[codes] != labels
        if missing.any():
            raise ValueError(
                f"unit_ids contain units not listed in neuron_ids: "
                f"{np.unique(labels[missing])[:5].tolist()}; drop their spikes first, e.g. "
                "keep = np.isin(unit_ids, neuron_ids)"
            )
    codes = codes.astype(np.int64)
    _check_sorted_per_unit(times, codes, neuron_ids)

    if trial_intervals is None:
        if t_start is None:
            if times.size == 0:
                raise ValueError("there are no spikes; pass t_start and t_stop")
            t0 = float(_grid_index(times.min(), 0.0, bin_size)) * bin_size
        else:
            t0 = _check_time(t_start, "t_start")
        if t_stop is None:
            if times.size == 0:
                raise ValueError("there are no spikes; pass t_start and t_stop")
            n = int(_grid_index(times.max(), t0, bin_size)) + 1
            limit = t0 + n * bin_size
        else:
            t1 = _check_time(t_stop, "t_stop")
            n = int(_n_bins(np.float64(t0), np.float64(t1), bin_size, tol))
            if n < 1:
                raise ValueError(
                    f"t_stop - t_start = {t1 - t0:g} s is shorter than one bin "
                    f"(bin_size={bin_size}): zero bins"
                )
            limit = min(t1, t0 + n * bin_size)
        if t_start is not None and times.size and times.min() < t0:
            raise ValueError(
                f"{int((times < t0).sum())} spike times are before t_start={t0} "
                f"(earliest {times.min()})"
            )
        if t_stop is not None and times.size and times.max() >= t1:
            raise ValueError(
                f"{int((times >= t1).sum())} spike times are at or after t_stop={t1} "
                f"(latest {times.max()}); bins are [t_start, t_stop)"
            )
        starts, n_bins, limits = np.array([t0]), np.array([n]), np.array([limit])
    else:
        if t_start is not None or t_stop is not None:
            raise ValueError("t_start and t_stop cannot be combined with trial_intervals")
        starts, stops = _check_intervals(trial_intervals, bin_size, tol)
        n_bins = _n_bins(starts, stops, bin_size, tol)
        if pynapple_edges:
            limits = np.minimum(np.nextafter(stops, np.inf), _edge(starts, n_bins, bin_size, True))
        else:
            limits = np.minimum(stops, starts + n_bins * bin_size)

    counts, centers, seg = _bin_spikes(
        times, codes, neuron_ids.size, starts, n_bins, limits, bin_size, pynapple_edges
    )
    return counts, centers, seg, neuron_ids, starts
