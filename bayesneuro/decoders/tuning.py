r"""Tuning curves over a grid: smoothed occupancy-normalised rates or a Bayesian Poisson GLM.

Both estimators reduce the training data to the sufficient statistics of a rate that depends on
the grid cell only: the time spent in each cell, :math:`\tau_g`, and each neuron's spike count
there, :math:`k_{ng}`. Neither goes through factorials.

``method="histogram"``
    :math:`\hat\lambda_{ng} = (G_\sigma * k_n)_g / (G_\sigma * \tau)_g`, a Gaussian kernel of
    width :math:`\sigma` (in units of the variable; wrapping on circular axes) applied to counts
    and occupancy alike (the field's standard estimate, as in pynapple or Zhang et al. 1998).
    Credible bands treat the smoothed count and occupancy as a Poisson count and an exposure
    under a Jeffreys prior, :math:`\lambda_{ng} \sim \mathrm{Gamma}(\tilde k_{ng} + 1/2,
    \tilde\tau_g)`: an approximation that widens where the animal spent little time.
``method="glm"``
    :math:`\log\lambda_n(s) = \sum_j w_{nj} B_j(s)` on cardinal cubic B-splines (periodic on
    circular axes, tensor products in 2-D) with a Gaussian smoothness prior
    :math:`w_n \sim N(0, (\alpha_n P + \epsilon I)^{-1})` (:math:`P`: second differences of
    neighbouring weights). The MAP and the Laplace posterior of each neuron's weights are exact
    Newton solves on the cell statistics, and the smoothness :math:`\alpha_n` of each neuron is
    chosen by the Laplace approximation to its marginal likelihood (empirical Bayes) over a grid
    of values. Bands are the Laplace posterior of the log rate.

Cells the variable never visited in training (occupancy below ``min_occupancy``) have no
defined tuning: ``visited`` marks them and the decoders give them zero prior probability.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage, sparse, special, stats

from bayesneuro._jit import jit

from ..engine.newton import cholesky_solve, newton
from ..estimator import PROB
from .grid import Grid

_ALPHAS = np.logspace(-2, 5, 15)
_RIDGE = 1e-4
#: Default Newton iteration cap of the GLM tuning fit (and of the grid decoders' ``fit``).
NEWTON_MAX_ITER = 40


def newton_tol(dtype: Any) -> float:
    """Default relative Newton tolerance of the decoders' tuning fits: 1e-14 in float64.

    Tight enough that the fit is the optimum to rounding; in float32 (where the objective is
    only known to about 1e-7) it is ``8 * eps``, about 1e-6.
    """
    return max(1e-14, 8.0 * float(np.finfo(np.dtype(dtype)).eps))


class TuningCurves:
    """Firing rate of each neuron in each grid cell, with credible bands.

    Attributes
    ----------
    rates : ndarray, shape (neuron, G)
        Estimated rates in Hz (``nan`` in unvisited cells).
    grid : Grid
    occupancy : ndarray, shape (G,)
        Training time in each cell, in seconds (``nan`` when given without one).
    visited : ndarray of bool, shape (G,)
    neuron_ids : ndarray, shape (neuron,)
    method : str
    """

    def __init__(
        self,
        rates: Any,
        grid: Grid,
        *,
        occupancy: Any = None,
        visited: Any = None,
        neuron_ids: Any = None,
        method: str = "given",
        band: Any = None,
    ):
        r = np.asarray(rates, dtype=np.float64)
        if r.ndim == 1 + grid.n_dim and r.shape[1:] == grid.shape:
            r = r.reshape(r.shape[0], -1)
        if r.ndim != 2 or r.shape[1] != grid.n_cells:
            raise ValueError(
                f"rates must have shape (neuron, {grid.n_cells}) or (neuron, *{grid.shape}), got {np.shape(rates)}"
            )
        if visited is None:
            visited = np.all(np.isfinite(r), axis=0)
        visited = np.asarray(visited, dtype=bool).reshape(-1)
        if visited.size != grid.n_cells:
            raise ValueError(f"visited must have {grid.n_cells} cells, got {visited.size}")
        if not visited.any():
            raise ValueError("no grid cell is visited: the tuning curves are undefined everywhere")
        rv = r[:, visited]
        if not np.all(np.isfinite(rv)) or np.any(rv < 0):
            raise ValueError("tuning-curve rates must be finite and >= 0 in every visited cell")
        r = r.copy()
        r[:, ~visited] = np.nan
        self.rates = r
        self.grid = grid
        self.occupancy = np.full(grid.n_cells, np.nan) if occupancy is None else np.asarray(occupancy, dtype=np.float64)
        self.visited = visited
        self.neuron_ids = np.arange(r.shape[0]) if neuron_ids is None else np.asarray(neuron_ids)
        if self.neuron_ids.shape != (r.shape[0],):
            raise ValueError(f"neuron_ids must have {r.shape[0]} entries, got {self.neuron_ids.shape}")
        self.method = method
        self._band = band

    @property
    def n_neuron(self) -> int:
        """Number of neurons."""
        return self.rates.shape[0]

    def band(self, prob: float = PROB) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible band of mass `prob` of each rate, ``(lower, upper)``, each ``(neuron, G)``.

        Raises
        ------
        ValueError
            For curves given without an uncertainty estimate.
        """
        if not 0 < prob < 1:
            raise ValueError(f"prob (the credible mass) must be in (0, 1), got {prob}")
        if self._band is None:
            raise ValueError("these tuning curves carry no uncertainty (they were given, not estimated)")
        kind, a, b = self._band
        q = np.array([(1 - prob) / 2, (1 + prob) / 2])
        if kind == "gamma":
            with np.errstate(divide="ignore", invalid="ignore"):
                lo = stats.gamma.ppf(q[0], a, scale=1.0 / b)
                hi = stats.gamma.ppf(q[1], a, scale=1.0 / b)
        else:  # lognormal: a = mean log rate, b = sd of log rate
            z = stats.norm.ppf(q[1])
            lo, hi = np.exp(a - z * b), np.exp(a + z * b)
        lo = np.where(self.visited, lo, np.nan)
        hi = np.where(self.visited, hi, np.nan)
        return lo, hi

    def to_pynapple(self):
        """As pynapple's tuning-curve ``xarray.DataArray`` (dims ``unit`` and the variable names).

        The result can be passed to ``pynapple.decode_bayes`` / ``decode_1d``; unvisited cells
        are ``nan``, as pynapple writes them.
        """
        import xarray as xr

        coords = {"unit": self.neuron_ids}
        coords.update({n: c for n, c in zip(self.grid.names, self.grid.centers)})
        occ = self.occupancy.reshape(self.grid.shape)
        return xr.DataArray(
            self.rates.reshape((self.n_neuron,) + self.grid.shape),
            dims=("unit",) + tuple(self.grid.names),
            coords=coords,
            attrs={"occupancy": occ, "bin_edges": list(self.grid.edges)},
        )

    @classmethod
    def from_pynapple(cls, curves: Any, circular: Any = False) -> TuningCurves:
        """Wrap a pynapple tuning-curve ``DataArray`` (from ``compute_tuning_curves``)."""
        dims = [d for d in curves.dims if d != "unit"]
        edges = curves.attrs.get("bin_edges")
        if edges is None:
            edges = []
            for d in dims:
                c = np.asarray(curves.coords[d].values, dtype=np.float64)
                w = c[1] - c[0]
                edges.append(np.concatenate([c - w / 2, [c[-1] + w / 2]]))
        grid = Grid(edges, circular=circular, names=[str(d) for d in dims])
        vals = np.asarray(curves.transpose("unit", *dims).values, dtype=np.float64)
        occ = curves.attrs.get("occupancy")
        return cls(
            vals,
            grid,
            occupancy=None if occ is None else np.asarray(occ, dtype=np.float64).reshape(-1),
            neuron_ids=np.asarray(curves.coords["unit"].values),
        )

    def __repr__(self) -> str:
        return (
            f"TuningCurves(neuron={self.n_neuron}, {self.grid!r}, method={self.method!r},"
            f" visited {int(self.visited.sum())}/{self.grid.n_cells} cells)"
        )


def cell_statistics(
    counts: np.ndarray, cells: np.ndarray, n_cells: int, bin_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy ``(G,)`` in seconds and spike totals ``(neuron, G)`` per cell."""
    n_time = cells.size
    onehot = sparse.csr_matrix(
        (np.ones(n_time), (cells, np.arange(n_time))), shape=(n_cells, n_time)
    )
    occupancy = np.asarray(onehot.sum(axis=1)).ravel() * bin_size
    spikes = np.asarray((onehot @ np.asarray(counts, dtype=np.float64)).T)
    return occupancy, spikes


def _smooth(field: np.ndarray, grid: Grid, sigma: np.ndarray) -> np.ndarray:
    """Gaussian smoothing of ``(..., *grid.shape)`` arrays; sigma in cells per axis."""
    lead = field.ndim - grid.n_dim
    out = field
    for k in range(grid.n_dim):
        if sigma[k] > 0:
            out = ndimage.gaussian_filter1d(
                out, sigma[k], axis=lead + k, mode="wrap" if grid.circular[k] else "constant", truncate=4.0
            )
    return out


def histogram_tuning(
    occupancy: np.ndarray,
    spikes: np.ndarray,
    grid: Grid,
    sigma: Any,
    visited: np.ndarray,
) -> tuple[np.ndarray, tuple]:
    """Smoothed occupancy-normalised rates and their Gamma band parameters."""
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (grid.n_dim,)) / grid.widths
    occ = _smooth(occupancy.reshape(grid.shape), grid, sig).reshape(-1)
    k = _smooth(spikes.reshape((-1,) + grid.shape), grid, sig).reshape(spikes.shape[0], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(visited & (occ > 0), k / occ, np.nan)
    return rates, ("gamma", k + 0.5, np.where(occ > 0, occ, np.nan))


#: Kernel widths, in cells, that ``sigma="auto"`` chooses between.
SIGMA_CANDIDATES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def choose_sigma(
    counts: np.ndarray,
    cells: np.ndarray,
    grid: Grid,
    bin_size: float,
    visited: np.ndarray,
    *,
    candidates: Any = SIGMA_CANDIDATES,
    n_folds: int = 3,
) -> np.ndarray:
    """Histogram kernel width chosen by held-out Poisson likelihood inside the given bins.

    The bins are cut into `n_folds` contiguous blocks; for each block the tuning curves are
    estimated from the other blocks at every candidate width (in cells, the same on every axis)
    and scored by the Poisson log-likelihood of the block's counts at the rates of the cells it
    visits (rates floored at 1e-3 Hz; bins in cells unvisited by the other blocks are left out).
    The width with the highest total over blocks and neurons is returned, in units of the
    variable per dimension. A choice at the largest candidate warns.

    Returns
    -------
    ndarray, shape (dim,)
        Kernel widths in units of the variable.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import Grid
    >>> from bayesneuro.decoders.tuning import choose_sigma
    >>> rng = np.random.default_rng(0)
    >>> grid = Grid.regular(bins=40, range=(0, 1))
    >>> x = rng.uniform(0, 1, size=(3000, 1))
    >>> counts = rng.poisson(0.05 + 0.5 * np.exp(-((x - 0.5) ** 2) / 0.05))  # broad, sparse
    >>> cells = grid.locate(x)
    >>> float(choose_sigma(counts, cells, grid, 0.1, np.ones(40, bool))[0] / grid.widths[0]) >= 1.0
    True
    """
    counts = np.asarray(counts, dtype=np.float64)
    cand = np.asarray(candidates, dtype=np.float64)
    n = cells.size
    if n < 2 * n_folds:
        raise ValueError(f"sigma='auto' needs at least {2 * n_folds} bins, got {n}")
    bounds = np.round(np.linspace(0, n, n_folds + 1)).astype(int)
    total = np.zeros(cand.size)
    for a, b in zip(bounds[:-1], bounds[1:]):
        train = np.r_[0:a, b:n]
        occ, spk = cell_statistics(counts[train], cells[train], grid.n_cells, bin_size)
        vis = visited & (occ > 0)
        test_cells, k = cells[a:b], counts[a:b]
        keep = vis[test_cells]
        if not keep.any():
            continue
        for i, c in enumerate(cand):
            rates, _ = histogram_tuning(occ, spk, grid, c * grid.widths, vis)
            mu = np.maximum(np.nan_to_num(rates[:, test_cells[keep]].T, nan=0.0), 1e-3) * bin_size
            total[i] += float(np.sum(k[keep] * np.log(mu) - mu))
    best = int(np.argmax(total))
    if best == cand.size - 1 and cand.size > 1:
        warnings.warn(
            f"sigma='auto' chose the widest candidate kernel ({cand[best]:g} cells): the tuning "
            "curves may want more smoothing; pass wider candidates or a coarser grid",
            RuntimeWarning, stacklevel=3,
        )
    return cand[best] * np.asarray(grid.widths, dtype=np.float64)


# ---------------------------------------------------------------- GLM tuning (B-spline basis)


def _cardinal_cubic(u: np.ndarray) -> np.ndarray:
    """Cardinal cubic B-spline with unit knot spacing, centred at 0."""
    a = np.abs(u)
    out = np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, 0.0)
    return np.where((a >= 1) & (a < 2), (2 - a) ** 3 / 6, out)


def _axis_basis(x: np.ndarray, lo: float, hi: float, n_basis: int, circular: bool) -> tuple[np.ndarray, np.ndarray]:
    """Basis matrix ``(len(x), n_basis)`` and second-difference penalty on one axis."""
    if circular:
        h = (hi - lo) / n_basis
        centres = lo + h * np.arange(n_basis)
        per = hi - lo
        d = np.mod(x[:, None] - centres[None, :] + per / 2, per) - per / 2
        B = _cardinal_cubic(d / h)
        D = np.zeros((n_basis, n_basis))
        for j in range(n_basis):
            D[j, (j - 1) % n_basis] += 1
            D[j, j] -= 2
            D[j, (j + 1) % n_basis] += 1
    else:
        if n_basis < 4:
            raise ValueError(f"a linear axis needs n_basis >= 4, got {n_basis}")
        h = (hi - lo) / (n_basis - 3)
        centres = lo + h * (np.arange(n_basis) - 1)
        B = _cardinal_cubic((x[:, None] - centres[None, :]) / h)
        D = np.diff(np.eye(n_basis), n=2, axis=0)
    return B, D.T @ D


def spline_basis(grid: Grid, n_basis: Any) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product B-spline basis at the cell centres ``(G, K)`` and its penalty ``(K, K)``."""
    nb = np.broadcast_to(np.asarray(n_basis), (grid.n_dim,)).astype(int)
    Bs, Ps = [], []
    for k in range(grid.n_dim):
        e = grid.edges[k]
        B, P = _axis_basis(grid.centers[k], e[0], e[-1], int(nb[k]), grid.circular[k])
        Bs.append(B)
        Ps.append(P)
    B = Bs[0]
    P = Ps[0]
    for Bk, Pk in zip(Bs[1:], Ps[1:]):
        B = np.einsum("ij,kl->ikjl", B, Bk).reshape(B.shape[0] * Bk.shape[0], B.shape[1] * Bk.shape[1])
        P = np.kron(P, np.eye(Pk.shape[0])) + np.kron(np.eye(P.shape[0]), Pk)
    return B, P


def _glm_objective(w, B, Lam, occupancy, spikes):
    """Negative log posterior of one neuron's spline weights (up to a constant)."""
    eta = B @ w
    return jnp.sum(occupancy * jnp.exp(eta) - spikes * eta) + 0.5 * w @ Lam @ w


def _glm_derivatives(w, B, Lam, occupancy, spikes):
    mu = occupancy * jnp.exp(B @ w)
    return B.T @ (mu - spikes) + Lam @ w, (B.T * mu) @ B + Lam


def _glm_newton(B, P, occupancy, spikes, alpha, w0, max_iter, tol):
    """MAP weights, Hessian, Laplace log evidence and convergence flag of one neuron at smoothness `alpha`."""
    K = B.shape[1]
    Lam = alpha * P + _RIDGE * jnp.eye(K, dtype=B.dtype)
    res = newton(_glm_objective, w0, B, Lam, occupancy, spikes, derivatives=_glm_derivatives,
                 max_iter=max_iter, tol=tol, solve=cholesky_solve)
    w = res.x
    eta = B @ w
    H = (B.T * (occupancy * jnp.exp(eta))) @ B + Lam
    _, logdet_h = jnp.linalg.slogdet(H)
    _, logdet_l = jnp.linalg.slogdet(Lam)
    log_ev = -res.value + 0.5 * logdet_l - 0.5 * logdet_h
    return w, H, log_ev, res.converged


@partial(jit, static_argnames=("max_iter",))
def _glm_all(B, P, occupancy, spikes, alphas, w0, max_iter, tol):
    """Per neuron and smoothness: weights, Hessians, log evidence, convergence (vmapped)."""
    per_alpha = jax.vmap(_glm_newton, in_axes=(None, None, None, None, 0, 0, None, None))
    per_neuron = jax.vmap(per_alpha, in_axes=(None, None, None, 0, None, 0, None, None))
    return per_neuron(B, P, occupancy, spikes, alphas, w0, max_iter, tol)


def glm_tuning(
    occupancy: np.ndarray,
    spikes: np.ndarray,
    grid: Grid,
    n_basis: Any,
    smoothness: Any,
    visited: np.ndarray,
    max_iter: int = NEWTON_MAX_ITER,
    tol: float | None = None,
) -> tuple[np.ndarray, tuple, np.ndarray]:
    """GLM rates ``(neuron, G)``, lognormal band parameters, and the chosen smoothness per neuron.

    Each neuron's MAP weights at each smoothness are found by :func:`bayesneuro.engine.newton.newton`
    (at most `max_iter` iterations, relative tolerance `tol`, default :func:`newton_tol`); a fit that stops before
    converging raises a ``ConvergenceWarning``.
    """
    B, P = spline_basis(grid, n_basis)
    alphas = _ALPHAS if smoothness == "auto" else np.atleast_1d(np.asarray(smoothness, dtype=np.float64))
    if np.any(alphas <= 0) or not np.all(np.isfinite(alphas)):
        raise ValueError(f"smoothness must be 'auto' or a positive number, got {smoothness!r}")
    n = spikes.shape[0]
    dtype = jnp.zeros(()).dtype
    tol = newton_tol(dtype) if tol is None else tol
    occ = np.where(visited, occupancy, 0.0)
    spk = np.where(visited[None, :], spikes, 0.0)
    # Start from the constant log rate (the B-splines sum to one inside the range).
    mean_rate = np.maximum(spk.sum(axis=1) / max(occ.sum(), 1e-300), 1e-3)
    w0 = np.repeat(np.log(mean_rate)[:, None, None], alphas.size, axis=1) * np.ones((1, 1, B.shape[1]))
    w, H, log_ev, conv = _glm_all(
        jnp.asarray(B, dtype), jnp.asarray(P, dtype), jnp.asarray(occ, dtype), jnp.asarray(spk, dtype),
        jnp.asarray(alphas, dtype), jnp.asarray(w0, dtype), int(max_iter), jnp.asarray(tol, dtype),
    )
    log_ev = np.asarray(log_ev)
    best = np.argmax(np.where(np.isfinite(log_ev), log_ev, -np.inf), axis=1)
    rows = np.arange(n)
    stuck = ~np.asarray(conv)[rows, best]
    if stuck.any():
        from ..diagnostics import ConvergenceWarning

        warnings.warn(
            f"the GLM tuning fit of {int(stuck.sum())} neuron(s) did not converge in max_iter={max_iter}"
            " Newton iterations; raise max_iter",
            ConvergenceWarning,
            stacklevel=3,
        )
    w = np.asarray(w)[rows, best]
    H = np.asarray(H)[rows, best]
    eta = w @ B.T
    cov = np.linalg.inv(H)
    sd = np.sqrt(np.maximum(np.einsum("gk,nkl,gl->ng", B, cov, B), 0.0))
    rates = np.where(visited[None, :], np.exp(eta), np.nan)
    return rates, ("lognormal", eta, sd), alphas[best]


def estimate_tuning_curves(
    counts: np.ndarray,
    target: np.ndarray,
    grid: Grid,
    bin_size: float,
    *,
    method: str = "histogram",
    sigma: Any = None,
    n_basis: Any = None,
    smoothness: Any = "auto",
    min_occupancy: float | None = None,
    neuron_ids: Any = None,
    max_iter: int = NEWTON_MAX_ITER,
    tol: float | None = None,
) -> TuningCurves:
    """Tuning curves of every neuron over `grid` from binned counts and the variable.

    Parameters
    ----------
    counts : ndarray, shape (time, neuron)
    target : ndarray, shape (time, dim)
        The variable in each bin (inside the grid's range).
    grid : Grid
    bin_size : float
        Seconds per bin.
    method : {"histogram", "glm"}
        See the module docstring.
    sigma : float, sequence or "auto", optional
        ``histogram``: kernel width in units of the variable per dimension; default one cell
        width; 0 for none; ``"auto"``: chosen on held-out data by :func:`choose_sigma`.
    n_basis : int or sequence, optional
        ``glm``: B-splines per dimension; default ``min(cells, 16)`` in 1-D, ``min(cells, 10)``
        per axis in 2-D.
    smoothness : "auto" or float
        ``glm``: the prior precision scale; "auto" picks it per neuron by Laplace evidence.
    min_occupancy : float, optional
        Seconds a cell needs in training to count as visited; default one bin.
    neuron_ids : array_like, optional
    max_iter : int, default 40
        ``glm``: Newton iterations per neuron and smoothness.
    tol : float, optional
        ``glm``: relative tolerance of the Newton stopping rule; default :func:`newton_tol`
        (1e-14 in float64).

    Returns
    -------
    TuningCurves

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import Grid
    >>> from bayesneuro.decoders.tuning import estimate_tuning_curves
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0, 1, size=(5000, 1))
    >>> counts = rng.poisson(0.1 + 2 * np.exp(-((x - 0.5) ** 2) / 0.02))
    >>> tc = estimate_tuning_curves(counts, x, Grid.regular(bins=10, range=(0, 1)), bin_size=0.1)
    >>> int(np.argmax(tc.rates[0])) in (4, 5)
    True
    """
    if method not in ("histogram", "glm"):
        raise ValueError(f"tuning method must be 'histogram' or 'glm', got {method!r}")
    cells = grid.locate(target)
    occupancy, spikes = cell_statistics(counts, cells, grid.n_cells, bin_size)
    min_occ = bin_size * (1 - 1e-9) if min_occupancy is None else float(min_occupancy)
    visited = occupancy >= min_occ
    if not visited.any():
        raise ValueError(f"no grid cell has the minimum occupancy of {min_occ} s")
    if method == "histogram":
        if isinstance(sigma, str):
            if sigma != "auto":
                raise ValueError(f"sigma must be a width, None or 'auto', got {sigma!r}")
            sig = choose_sigma(counts, cells, grid, bin_size, visited)
        else:
            sig = grid.widths if sigma is None else sigma
        rates, band = histogram_tuning(occupancy, spikes, grid, sig, visited)
        tc = TuningCurves(rates, grid, occupancy=occupancy, visited=visited, neuron_ids=neuron_ids,
                          method="histogram", band=band)
        tc.sigma = np.broadcast_to(np.asarray(sig, dtype=np.float64), (grid.n_dim,)).copy()
        return tc
    if n_basis is None:
        cap = 16 if grid.n_dim == 1 else 10
        n_basis = [min(s, cap) if c else max(4, min(s, cap)) for s, c in zip(grid.shape, grid.circular)]
    rates, band, alpha = glm_tuning(occupancy, spikes, grid, n_basis, smoothness, visited, max_iter, tol)
    tc = TuningCurves(rates, grid, occupancy=occupancy, visited=visited, neuron_ids=neuron_ids,
                      method="glm", band=band)
    tc.smoothness = alpha
    return tc


# ------------------------------------------------------------------------- over-dispersion
#: Largest dispersion the fit returns: at ``r = 1e4`` the negative binomial's extra variance
#: ``mu**2 / r`` is below 0.1% of the Poisson variance for any mean below 10 counts per bin, so a
#: neuron at the cap is Poisson for decoding purposes (the ML estimate of Poisson counts is
#: often infinite).
DISPERSION_MAX = 1e4
DISPERSION_MIN = 1e-2
_R_GRID = np.logspace(np.log10(DISPERSION_MIN), np.log10(DISPERSION_MAX), 49)


def _nb_profile(log_r: np.ndarray, hist: np.ndarray, n_cell: np.ndarray, k_cell: np.ndarray,
                mu: np.ndarray) -> np.ndarray:
    """Negative-binomial log-likelihood of each neuron's training counts at dispersion ``exp(log_r)``.

    ``hist`` (neuron, K): how many bins hold each count; ``n_cell`` (G,): bins per cell;
    ``k_cell`` (neuron, G): spikes per cell; ``mu`` (neuron, G): the mean count per bin in each
    cell. Terms free of ``r`` are left out. ``log_r`` has shape (neuron,) (or (neuron, 1)).
    """
    r = np.exp(log_r).reshape(-1, 1)
    k = np.arange(hist.shape[1])
    # sum over bins of log Γ(k + r) - log Γ(r) = sum_k hist_k (log Γ(k + r) - log Γ(r))
    lg = np.sum(hist * (special.gammaln(k[None, :] + r) - special.gammaln(r)), axis=1)
    # sum over bins of r log r - (r + k) log(r + mu) + k log mu, written stably per cell
    cell = n_cell[None, :] * r * -np.log1p(mu / r) - k_cell * np.log(r + mu)
    return lg + np.sum(cell, axis=1)


def estimate_dispersion(counts: Any, cells: Any, rates: np.ndarray, bin_size: float) -> np.ndarray:
    r"""Maximum-likelihood negative-binomial dispersion of each neuron, given its tuning curve.

    Each bin's count is modelled as gamma-Poisson with mean :math:`\mu_{nt} = \lambda_n(s_t)\Delta`
    (the tuning curve in the bin's cell) and variance :math:`\mu + \mu^2 / r_n`; :math:`r_n` is
    the one free parameter per neuron, found by maximising the likelihood of the training
    counts (a grid over ``[DISPERSION_MIN, DISPERSION_MAX]`` then golden-section search in
    :math:`\log r`, all neurons at once, from the sufficient statistics: each neuron's count
    histogram and its spikes and bins per cell). :math:`r \to \infty` is the Poisson model;
    estimates are capped at :data:`DISPERSION_MAX`.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
    cells : array_like of int, shape (time,)
        Flat grid cell of each bin's variable.
    rates : ndarray, shape (neuron, G)
        Tuning curves in Hz (``nan`` in unvisited cells; bins there are left out).
    bin_size : float

    Returns
    -------
    ndarray, shape (neuron,)

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.tuning import estimate_dispersion
    >>> rng = np.random.default_rng(0)
    >>> cells = rng.integers(0, 5, 20000)
    >>> rates = np.array([[1.0, 5.0, 10.0, 20.0, 40.0]])  # Hz, 0.1-s bins
    >>> mu = rates[0, cells] * 0.1
    >>> counts = rng.poisson(rng.gamma(2.0, mu / 2.0))[:, None]  # r = 2
    >>> bool(abs(estimate_dispersion(counts, cells, rates, 0.1)[0] - 2.0) < 0.2)
    True
    """
    k = np.asarray(counts)
    if k.ndim != 2:
        raise ValueError(f"counts must be (time, neuron), got shape {k.shape}")
    cells = np.asarray(cells, dtype=np.int64).reshape(-1)
    if cells.size != k.shape[0]:
        raise ValueError(f"cells has {cells.size} entries, counts {k.shape[0]} bins")
    r = np.asarray(rates, dtype=np.float64)
    ok = np.isfinite(r[:, cells]).all(axis=0)
    k, cells = k[ok].astype(np.int64), cells[ok]
    if k.shape[0] == 0:
        raise ValueError("no training bin lies in a cell with a defined tuning curve")
    from .naive_bayes import RATE_FLOOR

    G = r.shape[1]
    mu = np.maximum(np.where(np.isfinite(r), r, 1.0), RATE_FLOOR) * bin_size
    n_cell = np.bincount(cells, minlength=G).astype(np.float64)
    k_cell = np.stack([np.bincount(cells, weights=k[:, n], minlength=G) for n in range(k.shape[1])])
    hist = np.stack([np.bincount(k[:, n], minlength=int(k.max()) + 1) for n in range(k.shape[1])]).astype(np.float64)
    used = n_cell > 0
    mu, n_cell, k_cell = mu[:, used], n_cell[used], k_cell[:, used]
    n_neuron = k.shape[1]
    lg = np.log(_R_GRID)
    prof = np.stack([_nb_profile(np.full(n_neuron, v), hist, n_cell, k_cell, mu) for v in lg], axis=1)
    best = np.argmax(prof, axis=1)
    a = lg[np.maximum(best - 1, 0)]
    b = lg[np.minimum(best + 1, lg.size - 1)]
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = (_nb_profile(x, hist, n_cell, k_cell, mu) for x in (c, d))
    for _ in range(40):
        left = fc > fd  # the maximum lies in [a, d]
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        c_new, d_new = b - g * (b - a), a + g * (b - a)
        fc_new = _nb_profile(c_new, hist, n_cell, k_cell, mu)
        fd_new = _nb_profile(d_new, hist, n_cell, k_cell, mu)
        c, d, fc, fd = c_new, d_new, fc_new, fd_new
    est = np.exp(0.5 * (a + b))
    return np.clip(est, DISPERSION_MIN, DISPERSION_MAX)
