"""Matplotlib views of decoded posteriors and decoding scores.

Every function draws on axes it is given (``ax``) or on a new figure, and returns the axes.

:func:`plot_trajectory`
    Decoded point estimate with its credible band over the true variable, in time.
:func:`plot_posterior`
    The grid posterior (one dimension's marginal) as a heat-map over time, truth on top.
:func:`plot_reliability`
    Empirical against nominal coverage of credible regions (a calibration curve).
:func:`plot_confusion`
    Confusion matrix of decoded against true classes (or grid cells of a 1-D variable).
:func:`plot_lag_curve`, :func:`plot_neuron_curve`
    Decoding score against lag and against number of neurons.
:func:`plot_tuning_curves`
    Tuning curves with credible bands (1-D / circular) or as maps (2-D).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..estimator import PROB
from .posterior import CategoricalPosterior, GridPosterior
from .scores import reliability

__all__ = [
    "plot_trajectory",
    "plot_posterior",
    "plot_reliability",
    "plot_confusion",
    "plot_lag_curve",
    "plot_neuron_curve",
    "plot_tuning_curves",
]

TRUE_COLOR = "0.2"
DECODED_COLOR = "C3"


def _ax(ax, figsize=(8, 3)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _window(post: Any, window: Any) -> np.ndarray:
    n = post.n_time
    if window is None:
        return np.arange(n)
    a, b = window
    t = post.time
    idx = np.flatnonzero((t >= a) & (t < b))
    if idx.size == 0:
        raise ValueError(f"no decoded bin lies in the window {window} s (decoded {t[0]:.3g} to {t[-1]:.3g} s)")
    return idx


def plot_trajectory(posterior: Any, target: Any = None, *, dim: int = 0, prob: float = PROB, window: Any = None, ax=None):
    """Decoded variable with its credible band of mass `prob`, over the truth.

    Parameters
    ----------
    posterior : GridPosterior or GaussianPosterior
    target : array_like, shape (time,) or (time, dim), optional
        True values of the decoded bins.
    dim : int, default 0
        Which dimension to draw.
    prob : float, default 0.9
        Credible mass of the band.
    window : (t0, t1), optional
        Time window in seconds.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import GaussianPosterior
    >>> from bayesneuro.decoders.plotting import plot_trajectory
    >>> post = GaussianPosterior(np.zeros((5, 1)), np.ones((5, 1, 1)), np.arange(5) * 0.1)
    >>> ax = plot_trajectory(post, np.zeros(5))
    """
    if isinstance(posterior, CategoricalPosterior):
        raise TypeError("plot_trajectory draws continuous posteriors; use plot_confusion for classes")
    ax = _ax(ax)
    idx = _window(posterior, window)
    t = posterior.time[idx]
    lo, hi = posterior.interval(prob)
    point = posterior.point[idx, dim]
    circular = isinstance(posterior, GridPosterior) and posterior.grid.circular[dim]
    if circular:
        e = posterior.grid.edges[dim]
        per = e[-1] - e[0]
        lo_, hi_ = lo[idx, dim], hi[idx, dim]
        for shift in (-per, 0.0):
            ax.fill_between(t, lo_ + shift, hi_ + shift, color=DECODED_COLOR, alpha=0.25, lw=0, step="mid")
        ax.set_ylim(e[0], e[-1])
        ax.plot(t, point, ".", ms=2, color=DECODED_COLOR, label="decoded")
    else:
        ax.fill_between(t, lo[idx, dim], hi[idx, dim], color=DECODED_COLOR, alpha=0.25, lw=0,
                        label=f"{int(round(prob * 100))}% credible")
        ax.plot(t, point, color=DECODED_COLOR, lw=1, label="decoded")
    if target is not None:
        tv = np.asarray(target, dtype=np.float64)
        tv = tv[:, None] if tv.ndim == 1 else tv
        if circular:
            ax.plot(t, posterior.grid.wrap(tv[idx])[:, dim], ".", ms=2, color=TRUE_COLOR, label="true")
        else:
            ax.plot(t, tv[idx, dim], color=TRUE_COLOR, lw=1, label="true")
    names = posterior.grid.names if isinstance(posterior, GridPosterior) else posterior.names
    ax.set_xlabel("time (s)")
    ax.set_ylabel(names[dim])
    ax.legend(loc="upper right", fontsize="small", frameon=False)
    return ax


def plot_posterior(posterior: GridPosterior, target: Any = None, *, dim: int = 0, window: Any = None, ax=None, cmap: str = "magma"):
    """Heat-map of the posterior (marginal over the other dimensions) against time.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders import Grid, GridPosterior
    >>> from bayesneuro.decoders.plotting import plot_posterior
    >>> grid = Grid.regular(bins=4, range=(0, 1))
    >>> post = GridPosterior(np.log(np.full((3, 4), 0.25)), grid, np.arange(3) * 0.1)
    >>> ax = plot_posterior(post)
    """
    if not isinstance(posterior, GridPosterior):
        raise TypeError("plot_posterior needs a GridPosterior (a grid decoder's output)")
    ax = _ax(ax)
    idx = _window(posterior, window)
    m = posterior.marginal(dim)[idx]
    e = posterior.grid.edges[dim]
    t = posterior.time[idx]
    dt = np.median(np.diff(t)) if t.size > 1 else 1.0
    img = ax.imshow(m.T, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest",
                    extent=(t[0] - dt / 2, t[-1] + dt / 2, e[0], e[-1]))
    if target is not None:
        tv = np.asarray(target, dtype=np.float64)
        tv = posterior.grid.wrap(tv[:, None] if tv.ndim == 1 else tv)
        ax.plot(t, tv[idx, dim], ".", ms=1.5, color="w", label="true")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(posterior.grid.names[dim])
    ax.figure.colorbar(img, ax=ax, label="posterior probability")
    return ax


def plot_reliability(posterior: Any, target: Any, *, probs: Sequence[float] | None = None, ax=None, label: str | None = None):
    """Empirical coverage of credible regions against their nominal mass (`probs`, default 0.05 to 0.95).

    Points on the diagonal: calibrated; below it: over-confident; above: too cautious.
    """
    ax = _ax(ax, figsize=(3.5, 3.5))
    nominal, emp = reliability(posterior, target, probs)
    ax.plot([0, 1], [0, 1], ":", color="0.5", lw=1)
    ax.plot(nominal, emp, "o-", ms=3, label=label)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    if label is not None:
        ax.legend(fontsize="small", frameon=False)
    return ax


def plot_confusion(target: Any, decoded: Any, *, classes: Any = None, normalize: bool = True, ax=None, cmap: str = "Blues"):
    """Confusion matrix of true (rows) against decoded (columns) classes.

    Parameters
    ----------
    target : array_like of labels
    decoded : array_like of labels, or a CategoricalPosterior (its point estimates)
    classes : sequence, optional
        Class order; default the sorted union of labels.
    normalize : bool, default True
        Rows as shares of each true class.
    """
    ax = _ax(ax, figsize=(4, 3.5))
    if isinstance(decoded, CategoricalPosterior):
        classes = decoded.classes if classes is None else classes
        decoded = decoded.point
    t, d = np.asarray(target), np.asarray(decoded)
    if t.shape != d.shape:
        raise ValueError(f"target {t.shape} and decoded {d.shape} differ in shape")
    classes = np.unique(np.concatenate([t, d])) if classes is None else np.asarray(classes)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    M = np.zeros((classes.size, classes.size))
    for a, b in zip(t.tolist(), d.tolist()):
        M[lookup[a], lookup[b]] += 1
    if normalize:
        M = M / np.maximum(M.sum(axis=1, keepdims=True), 1)
    img = ax.imshow(M, cmap=cmap, vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(classes.size), [str(c) for c in classes], rotation=90 if classes.size > 8 else 0)
    ax.set_yticks(range(classes.size), [str(c) for c in classes])
    ax.set_xlabel("decoded")
    ax.set_ylabel("true")
    ax.figure.colorbar(img, ax=ax, label="share of true class" if normalize else "bins")
    return ax


def plot_lag_curve(curve: dict, *, bin_size: float | None = None, ax=None, label: str | None = None):
    """Score against lag, from :func:`~bayesneuro.decoders.evaluation.lag_curve`.

    With `bin_size` the lags are drawn in milliseconds.
    """
    ax = _ax(ax, figsize=(4, 3))
    lags = np.asarray(curve["lags"], dtype=np.float64)
    x = lags * bin_size * 1e3 if bin_size else lags
    ax.plot(x, curve["value"], "o-", ms=3, label=label)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_xlabel("lag of spikes after the variable " + ("(ms)" if bin_size else "(bins)"))
    ax.set_ylabel(curve.get("metric", "score").replace("_", " "))
    if label is not None:
        ax.legend(fontsize="small", frameon=False)
    return ax


def plot_neuron_curve(curve: dict, *, ax=None, label: str | None = None):
    """Score against number of neurons (mean ± sd over subsets), from ``neuron_curve``."""
    ax = _ax(ax, figsize=(4, 3))
    ax.errorbar(curve["n_neurons"], curve["mean"], yerr=curve["sd"], fmt="o-", ms=3, capsize=2, label=label)
    ax.set_xlabel("number of neurons")
    ax.set_ylabel(curve.get("metric", "score").replace("_", " "))
    if label is not None:
        ax.legend(fontsize="small", frameon=False)
    return ax


def plot_tuning_curves(tuning: Any, *, neurons: Any = None, prob: float = PROB, ncols: int = 5, axes=None):
    """Tuning curves (Hz) with credible bands; 2-D variables as rate maps.

    Parameters
    ----------
    tuning : TuningCurves
    neurons : sequence of ids, optional
        Default: all (up to 20).
    prob : float, default 0.9
        Credible mass of the band (skipped for curves given without uncertainty).
    """
    import matplotlib.pyplot as plt

    ids = np.asarray(tuning.neuron_ids)
    sel = ids[:20] if neurons is None else np.atleast_1d(neurons)
    pos = []
    for i in sel.tolist():
        hit = np.flatnonzero(ids == i)
        if hit.size == 0:
            raise ValueError(f"neuron {i!r} is not in the tuning curves (ids {ids[:10].tolist()}...)")
        pos.append(int(hit[0]))
    n = len(pos)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    if axes is None:
        _, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.0 * nrows), squeeze=False, constrained_layout=True)
    axes = np.asarray(axes).reshape(-1)
    grid = tuning.grid
    try:
        lo, hi = tuning.band(prob)
    except ValueError:
        lo = hi = None
    for ax, p, nid in zip(axes, pos, sel.tolist()):
        if grid.n_dim == 1:
            c = grid.centers[0]
            if lo is not None:
                ax.fill_between(c, lo[p], hi[p], color=DECODED_COLOR, alpha=0.25, lw=0)
            ax.plot(c, tuning.rates[p], color=DECODED_COLOR, lw=1)
            ax.set_xlabel(grid.names[0])
        else:
            e0, e1 = grid.edges[0], grid.edges[1]
            m = tuning.rates[p].reshape(grid.shape)
            ax.imshow(m.T, origin="lower", extent=(e0[0], e0[-1], e1[0], e1[-1]), cmap="viridis")
            ax.set_xlabel(grid.names[0])
            ax.set_ylabel(grid.names[1])
        ax.set_title(f"neuron {nid}", fontsize="small")
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].set_ylabel("rate (Hz)" if grid.n_dim == 1 else axes[0].get_ylabel())
    return axes
