"""Scores for decoded posteriors on held-out data.

:func:`log_score` is the score of every decoder (``decoder.score``): the mean log posterior
density of the true value per decoded bin, in nats/bin, higher is better (a proper score: it
rewards a posterior both for being near the truth and for being honest about its uncertainty).
The other functions are the entries of ``decoder.evaluate``: point-estimate scores (R², median
error, accuracy) and the coverage of credible regions (a calibrated decoder's 90% regions hold the
truth in 90% of held-out bins).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from ..estimator import PROBS
from .posterior import CategoricalPosterior, GaussianPosterior, GridPosterior

#: Floor of the log probability of the true cell or class in :func:`log_score`: the log of the
#: smallest positive double, so a decoder that rules the truth out scores a large negative but
#: finite number in that bin.
LOG_PROB_FLOOR = float(np.log(np.finfo(np.float64).tiny))


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


def pointwise_log_score(posterior: Any, target: Any) -> np.ndarray:
    """Log posterior density of the true value in each decoded bin (nats), floored.

    The per-bin terms of :func:`log_score`; see there. Bins whose posterior rules the truth out
    get the floor and a ``RuntimeWarning``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import GaussianPosterior
    >>> from bayesneuro.decoders.scores import pointwise_log_score
    >>> post = GaussianPosterior(np.zeros((2, 1)), np.ones((2, 1, 1)), np.arange(2))
    >>> np.round(pointwise_log_score(post, [0.0, 1.0]), 4)
    array([-0.9189, -1.4189])
    """
    if isinstance(posterior, GridPosterior):
        _, cell = posterior._cells(target)
        log_p = posterior.log_prob[np.arange(posterior.n_time), cell]
        log_vol = float(np.log(np.prod(posterior.grid.widths)))
    elif isinstance(posterior, CategoricalPosterior):
        idx = posterior._index(np.asarray(target))
        with np.errstate(divide="ignore"):
            log_p = np.log(posterior.prob[np.arange(posterior.n_time), idx])
        log_vol = 0.0
    elif isinstance(posterior, GaussianPosterior):
        return np.asarray(posterior.log_density(target), dtype=np.float64)
    else:
        return np.asarray(posterior.log_density(target), dtype=np.float64)
    log_p = np.asarray(log_p, dtype=np.float64)
    low = ~(log_p >= LOG_PROB_FLOOR)  # also catches NaN
    if low.any():
        what = "cell" if isinstance(posterior, GridPosterior) else "class"
        warnings.warn(
            f"{int(low.sum())} of {log_p.size} decoded bins give the true {what} a posterior probability"
            f" of (almost) zero{' (e.g. a cell never visited in training)' if what == 'cell' else ''};"
            f" their log probability is floored at {LOG_PROB_FLOOR:.1f}",
            RuntimeWarning,
            stacklevel=3,
        )
        log_p = np.where(low, LOG_PROB_FLOOR, log_p)
    return log_p - log_vol


def log_score(posterior: Any, target: Any) -> float:
    r"""Mean log posterior density of the true value per decoded bin, in nats/bin (higher is better).

    This is ``score`` of every decoder: a proper scoring rule, maximised in expectation by the
    true posterior, so it ranks decoders by how much probability they put where the truth is.

    - Grid posteriors: :math:`\log(p_g / V)` of the cell :math:`g` holding the truth, with
      :math:`p_g` its posterior probability and :math:`V` the cell volume (the product of the cell
      widths, in units of the variable), i.e. the log of the piecewise-constant density.
    - Gaussian posteriors: the Gaussian log density of the truth.
    - Categorical posteriors: the log probability of the true class.

    A grid cell or class of probability zero (the truth in a cell never visited in training)
    would give :math:`-\infty`; its log probability is floored at :data:`LOG_PROB_FLOOR`
    (about -708) instead, with a ``RuntimeWarning``, so one such bin gives a large negative but
    finite score. Densities depend on the units of the variable: compare decoders of the same
    target in the same units.

    Parameters
    ----------
    posterior : GridPosterior, GaussianPosterior or CategoricalPosterior
    target : array_like
        True values (or labels) of the decoded bins.

    Returns
    -------
    float
        Nats per bin.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import Grid, GridPosterior
    >>> from bayesneuro.decoders.scores import log_score
    >>> grid = Grid.regular(bins=4, range=(0.0, 1.0))
    >>> post = GridPosterior(np.log(np.full((3, 4), 0.25)), grid, np.arange(3))
    >>> log_score(post, [0.1, 0.5, 0.9])  # uniform on [0, 1]: density 1
    0.0
    """
    return float(np.mean(pointwise_log_score(posterior, target)))


def coverage(posterior: Any, target: Any, probs: Sequence[float] = PROBS) -> dict[float, float]:
    """Empirical coverage of the posterior's credible regions at each credible mass.

    Parameters
    ----------
    posterior : GridPosterior, GaussianPosterior or CategoricalPosterior
    target : array_like
        True values for the decoded bins.
    probs : sequence of float, default (0.5, 0.9, 0.95)
        Credible masses.

    Returns
    -------
    dict
        ``{prob: share of bins whose region holds the truth}``.
    """
    return {float(p): float(np.mean(posterior.covers(target, p))) for p in probs}


def reliability(
    posterior: Any, target: Any, probs: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nominal against empirical coverage over a range of credible masses (a reliability curve).

    Parameters
    ----------
    probs : sequence of float, optional
        Nominal masses; default 0.05, 0.10, ..., 0.95.

    Returns
    -------
    nominal, empirical : ndarray
        A calibrated decoder has ``empirical ≈ nominal``.
    """
    nominal = np.linspace(0.05, 0.95, 19) if probs is None else np.asarray(probs, dtype=np.float64)
    emp = np.array([np.mean(posterior.covers(target, p)) for p in nominal])
    return nominal, emp


def evaluate(posterior: Any, target: Any, probs: Sequence[float] = PROBS) -> dict[str, Any]:
    """All scores of a posterior against the truth, as a dict (``decoder.evaluate``).

    Continuous targets: ``r2`` (per linear dimension; circular ones are ``nan``), ``median_error``,
    ``mean_log_density`` (:func:`log_score`, nats/bin), ``coverage`` (``{prob: share}``),
    ``n_bins``. Discrete targets: ``accuracy``, ``mean_log_density`` (mean log probability of
    the true class), ``coverage``, ``n_bins``.
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
    out["mean_log_density"] = log_score(posterior, target)
    out["coverage"] = coverage(posterior, target, probs)
    out["n_bins"] = int(posterior.n_time)
    return out
