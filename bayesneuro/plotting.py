"""Matplotlib plots shared across model families."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["sbc_histograms", "elbo_trace"]


def _axes(ax, n):
    import matplotlib.pyplot as plt

    if ax is not None:
        return np.atleast_1d(ax).ravel()
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.6), squeeze=False)
    return axes.ravel()


def sbc_histograms(result, ax=None, n_bins: int | None = None):
    """Rank histograms of an :class:`~bayesneuro.sbc.SBCResult`, pooled over each parameter's elements.

    The grey band is the central 99% interval of a bin count under uniform ranks.

    Returns
    -------
    numpy.ndarray of matplotlib Axes
    """
    names = list(result.ranks)
    axes = _axes(ax, len(names))
    n_vals = result.n_draws + 1
    for a, name in zip(axes, names):
        r = np.asarray(result.ranks[name])
        n_sim = r.shape[0]
        nb = n_bins or max(2, min(20, n_sim // 5))
        edges = np.linspace(0, n_vals, nb + 1)
        for flat in r.reshape(n_sim, -1).T:
            a.hist(flat, bins=edges, histtype="step", alpha=0.7)
        p = np.diff(edges) / n_vals
        lo, hi = stats.binom.ppf([0.005, 0.995], n_sim, p[0])
        a.axhspan(lo, hi, color="0.85", zorder=0)
        a.set_title(f"{name}  (min p={np.min(result.pvalues[name]):.3f})")
        a.set_xlabel("rank of true value")
    axes[0].set_ylabel("simulations")
    return axes


def elbo_trace(result, ax=None):
    """Plot the negative ELBO per step of an SVI :class:`~bayesneuro.infer.FitResult`."""
    a = _axes(ax, 1)[0]
    losses = np.asarray(result.info["losses"])
    a.plot(losses)
    a.set_xlabel("step")
    a.set_ylabel("-ELBO")
    a.set_yscale("symlog")
    return a
