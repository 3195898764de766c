"""Scores for decoded posteriors on held-out data.

Point-estimate scores (R², median error, accuracy) and calibration scores of the posterior itself:
the coverage of credible regions (a calibrated decoder's 90% regions hold the truth in 90% of
held-out bins) and the mean log density of the truth (a proper score).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .posterior import CategoricalPosterior, GridPosterior

LEVELS = (0.5, 0.9, 0.95)


def _2d(a: Any) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def circular_difference(a: Any, b: Any, period: float = 2 * np.pi) -> np.ndarray:
    """Signed difference ``a - b`` wrapped into ``[-period/2, period/2)``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.scores import circular_difference
    >>> round(float(circular_difference(0.1, 2 * np.pi - 0.1)), 6)
    0.2
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.mod(d + period / 2, period) - period / 2


def errors(target: Any, point: Any, periods: Sequence[float] | None = None) -> np.ndarray:
    """Euclidean error per bin; dims with a finite period use the circular difference."""
    t, p = _2d(target), _2d(point)
    if t.shape != p.shape:
        raise ValueError(f"target {t.shape} and point estimates {p.shape} differ in shape")
    d = t - p
    if periods is not None:
        for k, per in enumerate(periods):
            if per is not None and np.isfinite(per):
                d[:, k] = circular_difference(t[:, k], p[:, k], per)
    return np.sqrt(np.sum(d**2, axis=1))


def median_error(target: Any, point: Any, periods: Sequence[float] | None = None) -> float:
    """Median Euclidean (circular-aware) decoding error."""
    return float(np.median(errors(target, point, periods)))


def r2(target: Any, point: Any) -> np.ndarray:
    """Coefficient of determination per dimension, ``1 - SS_res / SS_tot`` (sklearn's ``r2_score``).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.scores import r2
    >>> r2(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    array([0.5])
    """
    t, p = _2d(target), _2d(point)
    ss_res = np.sum((t - p) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    return 1.0 - ss_res / ss_tot


def accuracy(target: Any, point: Any) -> float:
    """Share of bins whose decoded class equals the true one."""
    t, p = np.asarray(target), np.asarray(point)
    if t.shape != p.shape:
        raise ValueError(f"target {t.shape} and decoded classes {p.shape} differ in shape")
    return float(np.mean(t == p))


def coverage(posterior: Any, target: Any, levels: Sequence[float] = LEVELS) -> dict[float, float]:
    """Empirical coverage of the posterior's credible regions at each level.

    Parameters
    ----------
    posterior : GridPosterior, GaussianPosterior or CategoricalPosterior
    target : array_like
        True values for the decoded bins.
    levels : sequence of float

    Returns
    -------
    dict
        ``{level: share of bins whose region holds the truth}``.
    """
    return {float(lv): float(np.mean(posterior.covers(target, lv))) for lv in levels}


def reliability(
    posterior: Any, target: Any, levels: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nominal against empirical coverage over a range of levels (a reliability curve).

    Returns
    -------
    nominal, empirical : ndarray
        A calibrated decoder has ``empirical ≈ nominal``.
    """
    nominal = np.linspace(0.05, 0.95, 19) if levels is None else np.asarray(levels, dtype=np.float64)
    emp = np.array([np.mean(posterior.covers(target, lv)) for lv in nominal])
    return nominal, emp


def evaluate(posterior: Any, target: Any, levels: Sequence[float] = LEVELS) -> dict[str, Any]:
    """All scores of a posterior against the truth, as a dict.

    Continuous targets: ``r2`` (per linear dimension; circular ones are ``nan``), ``median_error``,
    ``mean_log_density``, ``coverage``. Discrete targets: ``accuracy``, ``mean_log_density``
    (log probability of the true class), ``coverage``.
    """
    out: dict[str, Any] = {}
    if isinstance(posterior, CategoricalPosterior):
        out["accuracy"] = accuracy(target, posterior.point)
    else:
        t = _2d(target)
        periods = None
        if isinstance(posterior, GridPosterior):
            periods = list(posterior.grid.periods)
            t = posterior.grid.wrap(t)
        point = posterior.point
        rr = r2(t, point)
        if periods is not None:
            rr = np.where(np.isfinite(np.asarray(periods)), np.nan, rr)
        out["r2"] = rr
        out["median_error"] = median_error(t, point, periods)
        target = t
    out["mean_log_density"] = float(np.mean(posterior.log_density(target)))
    out["coverage"] = coverage(posterior, target, levels)
    out["n_bins"] = int(posterior.n_time)
    return out
