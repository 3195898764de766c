"""Time-lagged population features that never cross a trial or block boundary.

A decoder of the variable at bin ``t`` may read spikes from bins ``t + lag`` for each lag in a
set: positive lags look into the future (spikes that follow a stimulus), negative ones into the
past (spikes that precede a movement). Bins whose window would reach past the edge of their trial
or block (``SpikeData.segment_ids``) are dropped, so no lag reads across a gap between blocks of
a split, and none reads from the test set into the training set.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_lags(lags: Any) -> np.ndarray:
    """Lags as a sorted, unique 1-D int array."""
    arr = np.atleast_1d(np.asarray(lags))
    if arr.size == 0:
        raise ValueError("lags must hold at least one lag (0 is the same bin)")
    if arr.dtype.kind == "f":
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"lags are whole numbers of bins, got {arr.tolist()}")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"lags are whole numbers of bins, got {arr.tolist()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"lags must be unique, got {arr.tolist()}")
    return np.sort(arr.astype(np.int64))


def valid_bins(segment_ids: np.ndarray, lags: Any) -> np.ndarray:
    """Mask of bins whose whole lag window lies in their own segment.

    Parameters
    ----------
    segment_ids : array_like, shape (time,)
        Segment (trial or block) label of each bin; segments are contiguous runs.
    lags : array_like of int

    Returns
    -------
    ndarray of bool, shape (time,)

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.lags import valid_bins
    >>> valid_bins(np.array([0, 0, 0, 1, 1, 1]), lags=[-1, 0]).astype(int)
    array([0, 1, 1, 0, 1, 1])
    """
    seg = np.asarray(segment_ids)
    lags = check_lags(lags)
    n = seg.size
    ok = np.ones(n, dtype=bool)
    idx = np.arange(n)
    for lag in (lags.min(), lags.max()):
        j = idx + lag
        inside = (j >= 0) & (j < n)
        same = np.zeros(n, dtype=bool)
        same[inside] = seg[j[inside]] == seg[inside]
        ok &= same
    return ok


def lagged(values: np.ndarray, segment_ids: np.ndarray, lags: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``values[t + lag]`` for every lag, keeping only bins with a complete window.

    Parameters
    ----------
    values : array_like, shape (time, n)
        Features per bin (e.g. spike counts, ``(time, neuron)``).
    segment_ids : array_like, shape (time,)
    lags : array_like of int

    Returns
    -------
    features : ndarray, shape (n_valid, lag, n)
        ``features[i, j]`` is ``values[t_i + lags[j]]``.
    index : ndarray of int, shape (n_valid,)
        The bins ``t_i`` kept.

    Raises
    ------
    ValueError
        When no bin has a complete window (the segments are shorter than the lag span).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.lags import lagged
    >>> X = np.arange(5.0)[:, None]
    >>> feats, idx = lagged(X, np.zeros(5, int), lags=[-1, 0, 1])
    >>> idx, feats[:, :, 0]
    (array([1, 2, 3]), array([[0., 1., 2.],
           [1., 2., 3.],
           [2., 3., 4.]]))
    """
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    lags = check_lags(lags)
    seg = np.asarray(segment_ids)
    if seg.shape[0] != v.shape[0]:
        raise ValueError(f"segment_ids has {seg.shape[0]} bins, values {v.shape[0]}")
    ok = valid_bins(seg, lags)
    index = np.flatnonzero(ok)
    if index.size == 0:
        span = int(lags.max() - lags.min() + 1)
        longest = int(np.max(np.bincount(np.unique(seg, return_inverse=True)[1])))
        raise ValueError(
            f"no bin has a complete lag window: lags {lags.tolist()} span {span} bins but the longest"
            f" trial/block has {longest}; use fewer lags or longer pieces"
        )
    feats = np.stack([v[index + lag] for lag in lags], axis=1)
    return feats, index
