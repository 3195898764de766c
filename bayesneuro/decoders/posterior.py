"""Decoded posteriors: over grid cells, Gaussian moments, or discrete classes.

Every decoder's ``decode`` returns one of these. They share one interface, which the scores in
:mod:`bayesneuro.decoders.scores` use:

- ``point``: a point estimate per bin, shape ``(time, dim)`` (or ``(time,)`` labels);
- ``interval(prob)``: per-dimension credible intervals ``(lower, upper)`` of mass `prob`;
- ``covers(target, prob)``: whether the true value lies in the credible region of mass `prob`;
- ``log_density(target)``: the log posterior density of the true value (a proper score);
- ``time``: the bin centres decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ..estimator import PROB
from .grid import Grid


def _check_prob(prob: float) -> float:
    prob = float(prob)
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob (the credible mass) must be in (0, 1), got {prob}")
    return prob


def _as_target(target: Any, n_time: int, n_dim: int) -> np.ndarray:
    t = np.asarray(target, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.shape != (n_time, n_dim):
        raise ValueError(f"target must have shape ({n_time}, {n_dim}) to match the posterior, got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("target has NaN or inf values")
    return t


class GridPosterior:
    """Posterior over the cells of a :class:`~bayesneuro.decoders.Grid`, one per time bin.

    The density is taken as constant within each cell, so quantiles interpolate inside cells.

    Attributes
    ----------
    log_prob : ndarray, shape (time, G)
        Normalised log posterior probability of each flat cell.
    grid : Grid
    time : ndarray, shape (time,)
        Bin centres in seconds.
    point_estimate : {"map", "mean"}
        Which estimate ``point`` returns.
    """

    def __init__(self, log_prob: np.ndarray, grid: Grid, time: np.ndarray, point_estimate: str = "map"):
        if point_estimate not in ("map", "mean"):
            raise ValueError(f"point_estimate must be 'map' or 'mean', got {point_estimate!r}")
        self.log_prob = log_prob
        self.grid = grid
        self.time = np.asarray(time)
        self.point_estimate = point_estimate

    @property
    def n_time(self) -> int:
        """Number of decoded bins."""
        return self.log_prob.shape[0]

    @property
    def prob(self) -> np.ndarray:
        """Posterior probability of each cell, shape ``(time, G)``."""
        return np.exp(self.log_prob)

    def prob_grid(self) -> np.ndarray:
        """Probabilities reshaped to ``(time, *grid.shape)``."""
        return self.prob.reshape((self.n_time,) + self.grid.shape)

    @property
    def map(self) -> np.ndarray:
        """Centre of the most probable cell, shape ``(time, dim)``."""
        return self.grid.points[np.argmax(self.log_prob, axis=1)]

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean, shape ``(time, dim)``; circular axes use the circular mean."""
        p = self.prob
        pts = self.grid.points
        out = np.empty((self.n_time, self.grid.n_dim))
        for k in range(self.grid.n_dim):
            if self.grid.circular[k]:
                e = self.grid.edges[k]
                per = e[-1] - e[0]
                ang = (pts[:, k] - e[0]) * (2 * np.pi / per)
                z = p @ np.exp(1j * ang)
                out[:, k] = e[0] + np.mod(np.angle(z), 2 * np.pi) * per / (2 * np.pi)
            else:
                out[:, k] = p @ pts[:, k]
        return out

    @property
    def point(self) -> np.ndarray:
        """The point estimate chosen at decode time (``map`` or ``mean``)."""
        return self.map if self.point_estimate == "map" else self.mean

    def marginal(self, dim: int = 0) -> np.ndarray:
        """Marginal probabilities over the cells of one dimension, shape ``(time, n_cells_dim)``."""
        p = self.prob_grid()
        axes = tuple(1 + k for k in range(self.grid.n_dim) if k != dim)
        return p.sum(axis=axes) if axes else p

    def interval(self, prob: float = PROB) -> tuple[np.ndarray, np.ndarray]:
        """Credible intervals per dimension, each ``(time, dim)``.

        Linear axes: equal-tailed, from the marginal CDF interpolated within cells. Circular
        axes: the shortest arc of whole cells holding at least `prob` of the marginal mass;
        ``upper`` may exceed the range's end when the arc wraps (subtract the period).
        """
        prob = _check_prob(prob)
        lo = np.empty((self.n_time, self.grid.n_dim))
        hi = np.empty_like(lo)
        for k in range(self.grid.n_dim):
            m = self.marginal(k)
            e = self.grid.edges[k]
            if self.grid.circular[k]:
                lo[:, k], hi[:, k] = _shortest_arc(m, e, prob)
            else:
                lo[:, k] = _quantile(m, e, (1 - prob) / 2)
                hi[:, k] = _quantile(m, e, (1 + prob) / 2)
        return lo, hi

    def _cells(self, target: Any) -> tuple[np.ndarray, np.ndarray]:
        t = _as_target(target, self.n_time, self.grid.n_dim)
        return t, self.grid.locate(t)

    def covers(self, target: Any, prob: float = PROB) -> np.ndarray:
        """Whether each true value lies in the credible region of mass `prob`, shape ``(time,)``.

        One linear dimension: the equal-tailed interval (exact, as a 0/1 value). Otherwise: the
        highest-posterior-density region, the most probable cells holding `prob` of the mass.
        The cell at the region's edge is only partly needed; a true value in it counts as the
        fraction of that cell's mass the region needs, so the mean over bins is the expected
        coverage of a region cut inside the cell. Values are in ``[0, 1]``.
        """
        prob = _check_prob(prob)
        t, cell = self._cells(target)
        if self.grid.n_dim == 1 and not self.grid.circular[0]:
            lo, hi = self.interval(prob)
            return ((t[:, 0] >= lo[:, 0]) & (t[:, 0] <= hi[:, 0])).astype(np.float64)
        return _hpd_membership(self.prob, cell, prob)

    def log_density(self, target: Any) -> np.ndarray:
        """Log posterior density at the true value (per unit volume of the variable)."""
        _, cell = self._cells(target)
        vol = float(np.prod(self.grid.widths))
        return self.log_prob[np.arange(self.n_time), cell] - np.log(vol)

    def to_dataarray(self):
        """The posterior as an ``xarray.DataArray`` with dims ``(time, <dim names>)``."""
        import xarray as xr

        coords = {"time": self.time}
        coords.update({n: c for n, c in zip(self.grid.names, self.grid.centers)})
        return xr.DataArray(self.prob_grid(), dims=("time",) + tuple(self.grid.names), coords=coords, name="posterior")

    def to_pynapple(self, prob: float | None = None):
        """The decoded trajectory as pynapple: a ``Tsd`` (one dim) or ``TsdFrame`` (columns = dim names).

        With `prob`, ``TsdFrame`` columns ``<name>``, ``<name>_lower``, ``<name>_upper`` add the
        credible interval of :meth:`interval`. The point is :attr:`point` (``map`` or ``mean``).
        """
        return _trajectory(self.time, self.point, self.grid.names, None if prob is None else self.interval(prob))

    def __repr__(self) -> str:
        return f"GridPosterior(time={self.n_time}, {self.grid!r}, point={self.point_estimate!r})"


def _quantile(m: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """Quantile `q` of piecewise-uniform cell masses `m` (time, n) on `edges`."""
    cdf = np.cumsum(m, axis=1)
    cdf /= cdf[:, -1:]
    j = np.sum(cdf < q, axis=1)
    j = np.minimum(j, m.shape[1] - 1)
    rows = np.arange(m.shape[0])
    prev = np.where(j > 0, cdf[rows, np.maximum(j - 1, 0)], 0.0)
    mass = m[rows, j] / np.sum(m, axis=1)
    frac = np.where(mass > 0, (q - prev) / np.where(mass > 0, mass, 1.0), 0.5)
    w = edges[1] - edges[0]
    return edges[0] + (j + np.clip(frac, 0.0, 1.0)) * w


def _shortest_arc(m: np.ndarray, edges: np.ndarray, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Shortest arc of whole cells with mass >= `mass`, per row (start, end) in variable units."""
    n_t, n = m.shape
    m = m / m.sum(axis=1, keepdims=True)
    doubled = np.concatenate([m, m], axis=1)
    cum = np.concatenate([np.zeros((n_t, 1)), np.cumsum(doubled, axis=1)], axis=1)  # (t, 2n+1)
    # Row-offset trick: every row's cumsum lies in [0, 2], so adding 3*row sorts the flat array.
    off = 3.0 * np.arange(n_t)[:, None]
    flat = (cum + off).ravel()
    starts = cum[:, :n] + off + mass - 1e-12
    end = np.searchsorted(flat, starts.ravel(), side="left").reshape(n_t, n) - np.arange(n_t)[:, None] * (2 * n + 1)
    length = end - np.arange(n)[None, :]
    length = np.clip(length, 1, n)
    best = np.argmin(length, axis=1)
    blen = length[np.arange(n_t), best]
    w = edges[1] - edges[0]
    lo = edges[0] + best * w
    return lo, lo + blen * w


def _hpd_membership(p: np.ndarray, cell: np.ndarray, mass: float) -> np.ndarray:
    """Expected membership of the true cell in the HPD region of mass `mass` (see covers)."""
    rows = np.arange(p.shape[0])
    p = p / p.sum(axis=1, keepdims=True)
    pt = p[rows, cell]
    # mass strictly more probable than the true cell, and mass tied with it
    above = np.where(p > pt[:, None], p, 0.0).sum(axis=1)
    tied = np.where(p == pt[:, None], p, 0.0).sum(axis=1)
    need = mass - above
    frac = np.clip(need / np.where(tied > 0, tied, 1.0), 0.0, 1.0)
    return np.where(need <= 0, 0.0, frac)


class GaussianPosterior:
    """Gaussian posterior moments per time bin (Kalman, point-process and linear decoders).

    Attributes
    ----------
    mean : ndarray, shape (time, dim)
    cov : ndarray, shape (time, dim, dim)
    time : ndarray, shape (time,)
    names : tuple of str
    """

    def __init__(self, mean: np.ndarray, cov: np.ndarray, time: np.ndarray, names: tuple[str, ...] | None = None):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        if self.mean.ndim != 2 or self.cov.shape != self.mean.shape + (self.mean.shape[1],):
            raise ValueError(f"mean (time, dim) and cov (time, dim, dim) disagree: {self.mean.shape}, {self.cov.shape}")
        self.time = np.asarray(time)
        self.names = tuple(names) if names is not None else tuple(f"s{k}" for k in range(self.mean.shape[1]))

    @property
    def n_time(self) -> int:
        """Number of decoded bins."""
        return self.mean.shape[0]

    @property
    def point(self) -> np.ndarray:
        """The posterior mean."""
        return self.mean

    @property
    def sd(self) -> np.ndarray:
        """Marginal posterior standard deviations, ``(time, dim)``."""
        return np.sqrt(np.einsum("tii->ti", self.cov))

    def interval(self, prob: float = PROB) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed marginal credible intervals, each ``(time, dim)``."""
        z = stats.norm.ppf(0.5 + _check_prob(prob) / 2)
        return self.mean - z * self.sd, self.mean + z * self.sd

    def covers(self, target: Any, prob: float = PROB) -> np.ndarray:
        """1-D: inside the interval. More dims: inside the ellipsoid of mass `prob`."""
        prob = _check_prob(prob)
        t = _as_target(target, self.n_time, self.mean.shape[1])
        if t.shape[1] == 1:
            lo, hi = self.interval(prob)
            return ((t >= lo) & (t <= hi))[:, 0].astype(np.float64)
        d = t - self.mean
        m2 = np.einsum("ti,ti->t", d, np.linalg.solve(self.cov, d[..., None])[..., 0])
        return (m2 <= stats.chi2.ppf(prob, t.shape[1])).astype(np.float64)

    def log_density(self, target: Any) -> np.ndarray:
        """Gaussian log density of the true value."""
        t = _as_target(target, self.n_time, self.mean.shape[1])
        d = t - self.mean
        L = np.linalg.cholesky(self.cov)
        z = np.linalg.solve(L, d[..., None])[..., 0]
        logdet = 2 * np.sum(np.log(np.einsum("tii->ti", L)), axis=1)
        return -0.5 * (np.sum(z**2, axis=1) + logdet + t.shape[1] * np.log(2 * np.pi))

    def to_dataset(self):
        """Mean and standard deviation as an ``xarray.Dataset`` with dims ``(time, feature)``."""
        import xarray as xr

        coords = {"time": self.time, "feature": list(self.names)}
        return xr.Dataset(
            {"mean": (("time", "feature"), self.mean), "sd": (("time", "feature"), self.sd)}, coords=coords
        )

    def to_pynapple(self, prob: float | None = None):
        """The decoded trajectory (posterior mean) as pynapple: a ``Tsd`` (one dim) or ``TsdFrame``.

        With `prob`, columns ``<name>_lower`` and ``<name>_upper`` add the credible interval.
        """
        return _trajectory(self.time, self.mean, self.names, None if prob is None else self.interval(prob))

    def __repr__(self) -> str:
        return f"GaussianPosterior(time={self.n_time}, dim={self.mean.shape[1]})"


class CategoricalPosterior:
    """Posterior class probabilities per time bin (discrete targets).

    Attributes
    ----------
    prob : ndarray, shape (time, class)
    classes : ndarray, shape (class,)
    time : ndarray, shape (time,)
    """

    def __init__(self, prob: np.ndarray, classes: np.ndarray, time: np.ndarray):
        self.prob = np.asarray(prob, dtype=np.float64)
        self.classes = np.asarray(classes)
        self.time = np.asarray(time)

    @property
    def n_time(self) -> int:
        """Number of decoded bins."""
        return self.prob.shape[0]

    @property
    def point(self) -> np.ndarray:
        """Most probable class per bin."""
        return self.classes[np.argmax(self.prob, axis=1)]

    def _index(self, target: Any) -> np.ndarray:
        t = np.asarray(target)
        if t.shape != (self.n_time,):
            raise ValueError(f"target must hold {self.n_time} labels, got shape {t.shape}")
        lookup = {c: i for i, c in enumerate(self.classes.tolist())}
        unknown = sorted({x for x in t.tolist() if x not in lookup}, key=str)
        if unknown:
            raise ValueError(f"target has classes {unknown[:5]} the decoder was not trained on ({self.classes.tolist()})")
        return np.array([lookup[x] for x in t.tolist()], dtype=np.int64)

    def covers(self, target: Any, prob: float = PROB) -> np.ndarray:
        """Expected membership of the true class in the smallest class set of mass `prob`."""
        return _hpd_membership(self.prob, self._index(target), _check_prob(prob))

    def log_density(self, target: Any) -> np.ndarray:
        """Log posterior probability of the true class."""
        idx = self._index(target)
        return np.log(np.maximum(self.prob[np.arange(self.n_time), idx], np.finfo(float).tiny))

    def interval(self, prob: float = PROB):
        """Not defined for classes; use ``covers``."""
        raise TypeError("a categorical posterior has no intervals; use covers(target, prob)")

    def to_dataarray(self):
        """Class probabilities as an ``xarray.DataArray`` with dims ``(time, class)``."""
        import xarray as xr

        return xr.DataArray(self.prob, dims=("time", "class"), coords={"time": self.time, "class": self.classes}, name="posterior")

    def to_pynapple(self):
        """The most probable class per bin as a pynapple ``Tsd``; :attr:`prob` holds the rest."""
        from .._pynapple import to_tsdframe

        return to_tsdframe(self.time, self.point)

    def __repr__(self) -> str:
        return f"CategoricalPosterior(time={self.n_time}, classes={self.classes.tolist()})"


def _trajectory(time, point, names, interval):
    """A point trajectory (and optional interval) as a pynapple Tsd / TsdFrame."""
    from .._pynapple import to_tsdframe

    point = np.asarray(point)
    if interval is None:
        if point.shape[1] == 1:
            return to_tsdframe(time, point[:, 0])
        return to_tsdframe(time, point, list(names))
    lo, hi = interval
    cols, vals = [], []
    for k, n in enumerate(names):
        cols += [n, f"{n}_lower", f"{n}_upper"]
        vals += [point[:, k], lo[:, k], hi[:, k]]
    return to_tsdframe(time, np.column_stack(vals), cols)
