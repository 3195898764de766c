"""Conversion between :class:`~bayesneuro.data.SpikeData` and pynapple objects.

pynapple is an optional dependency (``pip install bayesneuro[pynapple]``), imported only when a
conversion runs. Private: :meth:`~bayesneuro.data.SpikeData.from_pynapple` and
:meth:`~bayesneuro.data.SpikeData.to_pynapple` are the public face of this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._binning import _bin_average, _drop_gap_bins, _max_gap
from ._validation import _as_ids, _check_bin_size, _optional_import, _runs

if TYPE_CHECKING:
    from .data import SpikeData


def _import_pynapple(what: str):
    return _optional_import("pynapple", "pynapple", what)


def _from_pynapple(
    cls: type[SpikeData], group: Any, *, bin_size: float, ep: Any, covariates: Any,
    short_bins: str = "raise", max_gap: float | None = None,
) -> SpikeData:
    """Body of :meth:`SpikeData.from_pynapple <bayesneuro.data.SpikeData.from_pynapple>`.

    `short_bins`: what to do with bins of counts that their time support cuts short (see
    :func:`_binned_counts`): ``"raise"``, or ``"keep"`` them as whole bins, for a method whose
    per-bin answer does not depend on a bin's own width (a GLM's rate per second).
    """
    nap = _import_pynapple("SpikeData.from_pynapple")
    bin_size = _check_bin_size(bin_size)
    tol = max(1e-9, 2e-6 / bin_size)  # pynapple shortens touching intervals by 1 us
    if ep is not None and not isinstance(ep, nap.IntervalSet):
        raise ValueError(f"ep must be a pynapple IntervalSet, got {type(ep).__name__}")
    if isinstance(group, nap.TsGroup):
        times, units, ids, intervals = _tsgroup_spikes(group, ep)
        data = cls._from_spike_times(
            times, units, bin_size, None, None, ids, None, None,
            intervals, tol=tol, single_interval_is_contiguous=True, pynapple_edges=True,
        )
    elif isinstance(group, (nap.TsdFrame, nap.Tsd)):
        d, t, ids, trial_ids = _binned_counts(nap, group, ep, bin_size, tol, short_bins)
        data = cls(d, bin_size=bin_size, bin_centers=t, neuron_ids=ids, trial_ids=trial_ids)
        # stacklevel: _warn_silent <- here <- SpikeData.from_pynapple <- the caller
        data._warn_silent(stacklevel=4)
    else:
        raise ValueError(
            "group must be a pynapple TsGroup (spike times) or Tsd/TsdFrame (counts), "
            f"got {type(group).__name__}"
        )
    if covariates is not None:
        S, names, gap = _resample_covariates(nap, covariates, data.bin_centers, bin_size, max_gap)
        # stacklevel: warn <- _drop_gap_bins <- here <- SpikeData.from_pynapple <- the caller
        data, _ = _drop_gap_bins(data, S, names, gap, "SpikeData.from_pynapple", stacklevel=4)
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


def _bin_widths(t: np.ndarray, k: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                bin_size: float) -> np.ndarray:
    """Width of each bin centred at `t` inside its interval ``k`` of the time support: a bin
    that runs past the interval's end (or starts before its start) is cut there."""
    return np.minimum(t + bin_size / 2, ends[k]) - np.maximum(t - bin_size / 2, starts[k])


def _short_bin_error(t: np.ndarray, widths: np.ndarray, short: np.ndarray, k: np.ndarray,
                     starts: np.ndarray, ends: np.ndarray, bin_size: float) -> ValueError:
    i = int(short[0])
    more = f" (and {short.size - 1} more)" if short.size > 1 else ""
    return ValueError(
        f"the counts' bin at t={t[i]:.6g} s is {widths[i]:.6g} s wide, not bin_size={bin_size:g} s: "
        f"the interval [{starts[k[i]]:.6g}, {ends[k[i]]:.6g}] s of their time support cuts it{more}. "
        "pynapple's TsGroup.count keeps a last bin that runs past the end of its epoch, and a "
        "model would take its count for a whole bin's. Drop that bin (counts[:-1] when it is the "
        "last one), bin with an epoch whose length is a multiple of bin_size, or pass the TsGroup "
        "itself with bin_size= (bayesneuro bins only whole bins)"
    )


def _binned_counts(
    nap: Any, group: Any, ep: Any, bin_size: float, tol: float = 1e-9, short_bins: str = "raise"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Counts, bin centres, neuron ids and per-bin trial ids (None for one interval) of counts
    already binned as a ``Tsd`` / ``TsdFrame``, checking that they are spaced by `bin_size`.

    A bin is taken to span ``[t - bin_size / 2, t + bin_size / 2)`` around its timestamp, as
    ``TsGroup.count`` times it, cut by its interval of the time support. A bin cut shorter than
    `bin_size` by more than `tol` bins (``TsGroup.count``'s last bin on an epoch that is not a
    multiple of `bin_size`) raises with ``short_bins="raise"`` and is kept as a whole bin with
    ``"keep"``. A support of one interval from the first to the last timestamp (pynapple's
    default for a frame made without ``time_support``) says nothing of the bins: they are whole.
    """
    if short_bins not in ("raise", "keep"):
        raise ValueError(f"short_bins must be 'raise' or 'keep', got {short_bins!r}")
    # the bins' widths come from the support the counts were made on, before `ep` cuts it
    made_on = group.time_support
    t_made = np.asarray(group.t, dtype=np.float64)
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
    starts = np.asarray(made_on.start, dtype=np.float64)
    ends = np.asarray(made_on.end, dtype=np.float64)
    default_support = (
        starts.size == 1
        and abs(starts[0] - t_made[0]) <= 1e-9 * max(1.0, abs(t_made[0]))
        and abs(ends[0] - t_made[-1]) <= 1e-9 * max(1.0, abs(t_made[-1]))
    )
    if not default_support and short_bins == "raise":
        k0 = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, None)
        widths = _bin_widths(t, k0, starts, ends, bin_size)
        short = np.flatnonzero(widths < bin_size * (1 - tol))
        if short.size:
            raise _short_bin_error(t, widths, short, k0, starts, ends, bin_size)
    runs = _runs(k)
    lengths = np.diff(np.r_[runs, t.size])
    trial_ids = None if runs.size == 1 else np.repeat(np.arange(runs.size), lengths)
    if np.any(np.diff(t) < bin_size * (1 - 1e-6)):
        raise ValueError("the counts' timestamps overlap: they must be at least bin_size apart")
    return d, t, ids, trial_ids


def _resample_covariates(
    nap: Any, covariates: Any, centers: np.ndarray, bin_size: float, max_gap: float | None = None
) -> tuple[np.ndarray, list[str] | None, float]:
    """A pynapple ``Tsd`` / ``TsdFrame`` of covariates resampled onto the bins at `centers`
    (see :func:`bayesneuro._binning._bin_average`; NaN in bins inside a gap of the samples longer
    than `max_gap`), its feature names (None for a ``Tsd``) and the max_gap used (seconds)."""
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
    gap = _max_gap(ct, bin_size, max_gap)
    return _bin_average(ct, cv, centers, bin_size, gap), names, gap


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


# ---- pynapple objects in and out of every model ----------------------------------------------


def is_pynapple(obj: Any) -> bool:
    """Whether `obj` is a pynapple object (checked by module, without importing pynapple)."""
    return type(obj).__module__.split(".")[0] == "pynapple"


def _support(t: np.ndarray, bin_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the stretches of back-to-back bins centred at `t`."""
    left, right = t - bin_size / 2, t + bin_size / 2
    breaks = np.flatnonzero(left[1:] - right[:-1] > 1e-6 * bin_size) + 1
    return left[np.r_[0, breaks]], right[np.r_[breaks - 1, t.size - 1]]


def to_tsdframe(t: Any, values: Any, columns: Any = None, bin_size: float | None = None,
                support: Any = None) -> Any:
    """Values per bin as a pynapple ``TsdFrame`` (a ``Tsd`` for 1-D values).

    The time support is `support` (an ``IntervalSet`` holding every ``t``: the input's, for
    counts that came in as a frame), else one interval per stretch of back-to-back bins
    (`bin_size` default: the median spacing of `t`).
    """
    nap = _import_pynapple("returning pynapple objects")
    t = np.asarray(t, dtype=np.float64)
    values = np.asarray(values)
    if bin_size is None:
        bin_size = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    if isinstance(support, nap.IntervalSet) and len(support):
        s0, s1 = np.asarray(support.start), np.asarray(support.end)
        k = np.searchsorted(s0, t, side="right") - 1
        if not np.all((k >= 0) & (t <= s1[np.clip(k, 0, None)])):
            support = None
    else:
        support = None
    if support is None:
        starts, ends = _support(t, bin_size)
        support = nap.IntervalSet(start=starts, end=ends)
    if values.ndim == 1:
        return nap.Tsd(t=t, d=values, time_support=support)
    cols = list(range(values.shape[1])) if columns is None else [c for c in np.asarray(columns).tolist()]
    return nap.TsdFrame(t=t, d=values, columns=cols, time_support=support)


def _counts_bin_size(group: Any) -> float:
    """The bin size of counts binned by pynapple (``TsGroup.count``): their timestamp spacing."""
    t = np.asarray(group.t, dtype=np.float64)
    if t.size < 2:
        raise ValueError("cannot tell the bin size of counts with fewer than 2 time bins; pass bin_size=")
    return float(np.median(np.diff(t)))


def as_spike_data(data: Any, *, bin_size: float | None = None, ep: Any = None, covariates: Any = None,
                  name: str = "data", short_bins: str = "raise") -> Any:
    """`data` as SpikeData when it is a pynapple object; anything else is returned unchanged.

    A ``TsGroup`` (spike times) is binned at `bin_size` (required); a ``TsdFrame`` / ``Tsd`` of
    counts (``group.count(bin_size)``) keeps its bins (`bin_size` default: their spacing); a bin
    that its time support cuts short raises unless ``short_bins="keep"`` (see
    :func:`_binned_counts`). `ep` (an ``IntervalSet``) restricts to epochs; pynapple
    `covariates` are bin-averaged onto the bins.
    """
    if not is_pynapple(data):
        return data
    nap = _import_pynapple(f"{name} as a pynapple object")
    from .data import SpikeData

    if isinstance(data, nap.TsGroup):
        if bin_size is None:
            raise ValueError(
                f"{name} is a pynapple TsGroup (spike times): pass bin_size= (seconds) to bin it, "
                "or pass group.count(bin_size) or SpikeData.from_pynapple(group, bin_size=...)"
            )
    elif isinstance(data, (nap.TsdFrame, nap.Tsd)):
        if bin_size is None:
            bin_size = _counts_bin_size(data)
    else:
        raise TypeError(
            f"{name} must be a SpikeData, a pynapple TsGroup (spike times) or a TsdFrame of counts, "
            f"got pynapple {type(data).__name__}"
        )
    return _from_pynapple(SpikeData, data, bin_size=bin_size, ep=ep, covariates=covariates,
                          short_bins=short_bins)


def as_target(data: Any, target: Any) -> Any:
    """A pynapple ``Tsd`` / ``TsdFrame`` target bin-averaged onto the bins of `data` (SpikeData)."""
    if not is_pynapple(target):
        return target
    nap = _import_pynapple("a pynapple target")
    S, _, gap = _resample_covariates(nap, target, np.asarray(data.bin_centers), data.bin_size)
    if not np.all(np.isfinite(S)):
        n_bad = int((~np.isfinite(S)).any(axis=1).sum())
        raise ValueError(
            f"the pynapple target has no samples in {n_bad} of {S.shape[0]} bins (gaps in it longer than "
            f"{gap:.6g} s are not interpolated); restrict the spikes to the epochs where the target was "
            "recorded, or build the data with SpikeData.from_pynapple(group, bin_size=..., covariates=target), "
            "which drops those bins")
    return S[:, 0] if isinstance(target, nap.Tsd) else S


_REGISTRIES: dict[str, dict] = {}


def _WRAPPER_FILES() -> tuple[str, str]:
    """Files whose wrapper frames are not the user's: this module and the estimator base."""
    from . import estimator

    return (__file__, estimator.__file__)


def _call_keeping_warning_sites(method, /, *args, **kwargs):
    """Call `method`, re-issuing its warnings so that they point where the user called it.

    A decorated method runs one frame deeper than it was written for, so a warning issued with
    ``stacklevel=2`` would name this module instead of the user's line. The warnings are
    recorded and re-issued after the call (or after the exception it raised), those attributed
    to this module moved to the caller of the wrapper; the user's filters apply to the re-issued
    warnings. Under an ``"error"`` filter for a built-in warning class the method is called
    directly, so that a warning still raises where it is issued.
    """
    import sys
    import warnings

    if any(f[0] == "error" and f[2].__module__ == "builtins" for f in warnings.filters):
        return method(*args, **kwargs)
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return method(*args, **kwargs)
    finally:
        # 0: here, 1: the wrapper, 2: who called the method; skip further wrapper frames (the
        # NaN guard of bayesneuro.estimator wraps fit/score/evaluate, possibly around this one)
        caller = sys._getframe(2)
        while caller.f_back is not None and caller.f_code.co_filename in _WRAPPER_FILES() \
                and caller.f_code.co_name in ("wrapper", "_call_keeping_warning_sites"):
            caller = caller.f_back
        for w in caught:
            where = {}
            if w.filename in _WRAPPER_FILES():
                filename, lineno = caller.f_code.co_filename, caller.f_lineno
                if caller.f_globals.get("__name__"):
                    where["module"] = caller.f_globals["__name__"]
            else:
                filename, lineno = w.filename, w.lineno
            # never module=None: CPython's warn_explicit then drops the warning without a word
            warnings.warn_explicit(w.message, w.category, filename, lineno,
                                   registry=_REGISTRIES.setdefault(filename, {}), **where)


def pynapple_io(output: str | None = None, *, target: bool = False, short_bins: str = "raise"):
    """Decorate an estimator method ``(self, data, ...)`` so that it takes pynapple objects.

    A pynapple `data` is converted by :func:`as_spike_data` (a ``bin_size=`` keyword is taken
    from the call when the method has none, else from the fitted model's ``bin_size_``);
    with ``target=True`` the second argument / ``target=`` keyword may be a ``Tsd`` /
    ``TsdFrame``. ``output="tsdframe"``: a ``(time, k)`` array result comes back as a
    ``TsdFrame`` when `data` was pynapple (on the input's time support when it was a frame of
    counts); ``output="dataset"``: an xarray Dataset's ``mean``. Counts with a bin that their
    time support cuts short are refused unless ``short_bins="keep"``, for a method whose answer
    for a bin does not depend on that bin's width (a rate per second from the bins before it).
    """
    import functools
    import inspect

    def decorate(method):
        takes_bin_size = "bin_size" in inspect.signature(method).parameters

        @functools.wraps(method)
        def wrapper(self, data, *args, **kwargs):
            was = is_pynapple(data)
            if was:
                bs = kwargs.get("bin_size") if takes_bin_size else kwargs.pop("bin_size", None)
                if bs is None:
                    bs = getattr(self, "bin_size_", None)
                support = data.time_support if type(data).__name__ in ("Tsd", "TsdFrame") else None
                data = as_spike_data(data, bin_size=bs, short_bins=short_bins)
            if target:
                if args:
                    args = (as_target(data, args[0]),) + tuple(args[1:])
                elif "target" in kwargs:
                    kwargs["target"] = as_target(data, kwargs["target"])
            out = _call_keeping_warning_sites(method, self, data, *args, **kwargs)
            if not was or output is None:
                return out
            if output == "tsdframe":
                cols = getattr(self, "neuron_ids_", None)
                arr = np.asarray(out)
                if cols is None or len(cols) != arr.shape[-1]:
                    cols = None
                return to_tsdframe(data.bin_centers, arr, cols, data.bin_size, support)
            if output == "dataset":
                mean = np.asarray(out["mean"])
                cols = [f"latent_{k}" for k in range(mean.shape[1])]
                return to_tsdframe(data.bin_centers, mean, cols, data.bin_size, support)
            return out

        return wrapper

    return decorate
