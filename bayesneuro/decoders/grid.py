"""Grids over the decoded variable: 1-D, 2-D (or more), linear or circular axes.

A :class:`Grid` cuts each dimension of the variable into equal cells. Decoders that work on a
grid (:class:`~bayesneuro.decoders.NaiveBayesDecoder`,
:class:`~bayesneuro.decoders.StateSpaceDecoder`) keep a posterior over its cells, flattened in C
order; ``grid.points`` gives the centre of each flat cell.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

TWO_PI = 2.0 * np.pi


class Grid:
    """Equal cells over a ``d``-dimensional variable; each axis linear or circular.

    Parameters
    ----------
    edges : sequence of 1-D arrays
        Cell edges per dimension, strictly increasing and equally spaced.
    circular : bool or sequence of bool, default False
        Whether each axis wraps around (head direction, phase). A circular axis's edges span one
        period: values are wrapped into ``[edges[0], edges[-1])``.
    names : sequence of str, optional
        Name of each dimension (default ``"s0", "s1", ...``).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import Grid
    >>> grid = Grid.regular(bins=4, range=(0.0, 1.0))
    >>> grid.shape, grid.points[:, 0]
    ((4,), array([0.125, 0.375, 0.625, 0.875]))
    >>> grid.locate(np.array([[0.1], [0.99]]))
    array([0, 3])
    >>> ring = Grid.regular(bins=8, circular=True)
    >>> int(ring.locate(np.array([[2 * np.pi + 0.1]]))[0])  # wraps
    0
    """

    def __init__(self, edges: Sequence[Any], circular: Any = False, names: Sequence[str] | None = None):
        edges = [np.asarray(e, dtype=np.float64) for e in edges]
        if not edges:
            raise ValueError("a grid needs at least one dimension")
        for k, e in enumerate(edges):
            if e.ndim != 1 or e.size < 2:
                raise ValueError(f"edges of dimension {k} must be 1-D with at least 2 values")
            d = np.diff(e)
            if not np.all(d > 0):
                raise ValueError(f"edges of dimension {k} must be strictly increasing")
            if not np.allclose(d, d[0], rtol=1e-6, atol=0):
                raise ValueError(f"edges of dimension {k} must be equally spaced")
        if isinstance(circular, (bool, np.bool_)):
            circular = [bool(circular)] * len(edges)
        circular = [bool(c) for c in circular]
        if len(circular) != len(edges):
            raise ValueError(f"circular has {len(circular)} flags for {len(edges)} dimensions")
        names = tuple(names) if names is not None else tuple(f"s{k}" for k in range(len(edges)))
        if len(names) != len(edges):
            raise ValueError(f"names has {len(names)} entries for {len(edges)} dimensions")
        self.edges = tuple(edges)
        self.circular = tuple(circular)
        self.names = names

    @classmethod
    def regular(
        cls,
        bins: Any = 40,
        range: Any = None,
        circular: Any = False,
        names: Sequence[str] | None = None,
        values: Any = None,
    ) -> Grid:
        """A grid of `bins` equal cells per dimension over `range`.

        Parameters
        ----------
        bins : int or sequence of int, default 40
            Cells per dimension.
        range : (lo, hi) or sequence of them, optional
            Extent per dimension. Default: ``(0, 2π)`` for circular axes, else the min and max of
            `values` (required then).
        circular : bool or sequence of bool, default False
        names : sequence of str, optional
        values : array_like, shape (n, d), optional
            Data used for the default range.
        """
        if values is not None:
            values = np.asarray(values, dtype=np.float64)
            if values.ndim == 1:
                values = values[:, None]
        n_dim = (
            len(bins) if isinstance(bins, (list, tuple, np.ndarray))
            else values.shape[1] if values is not None
            else (len(range) if range is not None and np.ndim(range[0]) > 0 else 1)
        )
        bins_ = list(bins) if isinstance(bins, (list, tuple, np.ndarray)) else [bins] * n_dim
        circ = [bool(circular)] * n_dim if isinstance(circular, (bool, np.bool_)) else list(circular)
        if range is None:
            ranges = [None] * n_dim
        elif np.ndim(range[0]) == 0:
            ranges = [range] * n_dim if n_dim == 1 else None
            if ranges is None:
                raise ValueError("range must hold one (lo, hi) pair per dimension")
        else:
            ranges = list(range)
        if not (len(bins_) == len(circ) == len(ranges) == n_dim):
            raise ValueError("bins, range and circular must describe the same number of dimensions")
        edges = []
        for k in np.arange(n_dim):
            b = bins_[k]
            if int(b) != b or b < 2:
                raise ValueError(f"bins must be whole numbers >= 2, got {b} for dimension {k}")
            r = ranges[k]
            if r is None:
                if circ[k]:
                    r = (0.0, TWO_PI)
                elif values is None:
                    raise ValueError(f"range of dimension {k} is needed (no values to take it from)")
                else:
                    r = (float(values[:, k].min()), float(values[:, k].max()))
                    if r[1] <= r[0]:
                        raise ValueError(f"the values of dimension {k} are constant; give a range")
                    pad = 1e-9 * (r[1] - r[0])
                    r = (r[0], r[1] + pad)
            lo, hi = float(r[0]), float(r[1])
            if not hi > lo:
                raise ValueError(f"range of dimension {k} must have hi > lo, got {r}")
            edges.append(np.linspace(lo, hi, int(b) + 1))
        return cls(edges, circ, names)

    @property
    def n_dim(self) -> int:
        """Number of dimensions ``d``."""
        return len(self.edges)

    @property
    def shape(self) -> tuple[int, ...]:
        """Cells per dimension."""
        return tuple(e.size - 1 for e in self.edges)

    @property
    def n_cells(self) -> int:
        """Total number of cells ``G``."""
        return int(np.prod(self.shape))

    @property
    def widths(self) -> np.ndarray:
        """Cell width per dimension."""
        return np.array([e[1] - e[0] for e in self.edges])

    @property
    def centers(self) -> tuple[np.ndarray, ...]:
        """Cell centres per dimension."""
        return tuple(0.5 * (e[1:] + e[:-1]) for e in self.edges)

    @property
    def periods(self) -> np.ndarray:
        """Period of each circular axis (``nan`` for linear ones)."""
        return np.array([e[-1] - e[0] if c else np.nan for e, c in zip(self.edges, self.circular)])

    @property
    def points(self) -> np.ndarray:
        """Centre of every cell, shape ``(G, d)``, in flat (C) order."""
        mesh = np.meshgrid(*self.centers, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def wrap(self, values: np.ndarray) -> np.ndarray:
        """Values with each circular dimension wrapped into its range."""
        v = np.array(values, dtype=np.float64, copy=True)
        for k, (e, c) in enumerate(zip(self.edges, self.circular)):
            if c:
                v[:, k] = e[0] + np.mod(v[:, k] - e[0], e[-1] - e[0])
        return v

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of rows with a linear coordinate outside the grid's range."""
        v = np.asarray(values, dtype=np.float64)
        bad = np.zeros(v.shape[0], dtype=bool)
        for k, (e, c) in enumerate(zip(self.edges, self.circular)):
            if not c:
                bad |= (v[:, k] < e[0]) | (v[:, k] > e[-1])
        return bad

    def check_inside(self, values: np.ndarray, name: str = "target") -> np.ndarray:
        """Wrapped `values`; raise a clear error when any lies outside the range."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.n_dim:
            raise ValueError(
                f"{name} has {v.shape[1] if v.ndim == 2 else 1} dimension(s), the grid {self.n_dim}"
            )
        bad = self.outside(v)
        if bad.any():
            lo = [float(v[:, k].min()) for k in range(self.n_dim)]
            hi = [float(v[:, k].max()) for k in range(self.n_dim)]
            ranges = [(float(e[0]), float(e[-1])) for e in self.edges]
            raise ValueError(
                f"{int(bad.sum())} of {v.shape[0]} bins of {name} lie outside the grid's range"
                f" {ranges} (the values span {list(zip(lo, hi))}); widen the grid's range or drop"
                " those bins"
            )
        return self.wrap(v)

    def locate(self, values: Any) -> np.ndarray:
        """Flat cell index of each row of `values` (shape ``(n, d)``); circular axes wrap."""
        v = self.check_inside(np.atleast_2d(np.asarray(values, dtype=np.float64)))
        idx = []
        for k, e in enumerate(self.edges):
            i = np.floor((v[:, k] - e[0]) / (e[1] - e[0])).astype(np.int64)
            idx.append(np.clip(i, 0, e.size - 2))
        return np.ravel_multi_index(tuple(idx), self.shape)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance between rows of `a` and `b`, the shorter way round circular axes."""
        diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
        for k, c in enumerate(self.circular):
            if c:
                p = self.periods[k]
                diff[..., k] = np.minimum(np.mod(diff[..., k], p), p - np.mod(diff[..., k], p))
        return np.sqrt(np.sum(diff**2, axis=-1))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Grid)
            and self.circular == other.circular
            and len(self.edges) == len(other.edges)
            and all(np.array_equal(a, b) for a, b in zip(self.edges, other.edges))
        )

    def __repr__(self) -> str:
        dims = ", ".join(
            f"{n}: {s} cells in [{e[0]:.4g}, {e[-1]:.4g}){' circular' if c else ''}"
            for n, s, e, c in zip(self.names, self.shape, self.edges, self.circular)
        )
        return f"Grid({dims})"
