"""Matplotlib views of a fitted :class:`~bayesneuro.glm.PoissonGLM`: filters, coupling, rates, rasters.

Every function draws on axes it is given (``ax`` / ``axes``) or on a new figure, and returns
what it drew on. Neurons are chosen by **id** (as in :meth:`SpikeData.select_neurons`), never by
column position. Lags are shown in milliseconds, rates in spikes/s.

:func:`plot_filters`
    Stimulus, spike-history and coupling filters in time with their central credible bands.
:func:`plot_coupling`
    The integrated coupling matrix as a diverging heatmap, credible edges marked.
:func:`plot_rates`
    Observed against predicted rate of each neuron over a stretch of data.
:func:`plot_raster`
    Spikes of a real recording above those of a simulation of the same bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import SpikeData
from ..estimator import PROB

__all__ = ["plot_filters", "plot_coupling", "plot_rates", "plot_raster"]

#: colours of the observed data and of the model throughout
DATA_COLOR = "0.2"
MODEL_COLOR = "C3"


# ----------------------------------------------------------------------------- helpers


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _check_glm(glm) -> None:
    from .estimator import PoissonGLM

    if not isinstance(glm, PoissonGLM):
        raise TypeError(f"glm must be a fitted bayesneuro.PoissonGLM, got {type(glm).__name__}")
    glm._check_fitted()


def _positions(all_ids: np.ndarray, ids: Any, what: str = "neurons") -> tuple[np.ndarray, np.ndarray]:
    """Column positions and ids of ``ids`` among ``all_ids`` (None: all, in order)."""
    if ids is None:
        return np.arange(len(all_ids)), np.asarray(all_ids)
    ids = np.atleast_1d(np.asarray(ids))
    if ids.size == 0:
        raise ValueError(f"{what} must name at least one neuron id")
    pos = []
    for i in ids.tolist():
        hit = np.flatnonzero(all_ids == i)
        if hit.size == 0:
            shown = all_ids[:10].tolist()
            more = ", ..." if len(all_ids) > 10 else ""
            raise ValueError(f"{what}: no neuron with id {i!r}; neuron ids are {shown}{more}")
        pos.append(int(hit[0]))
    return np.asarray(pos), all_ids[pos]


def _grid(axes, shape: tuple[int, int], *, figsize: tuple[float, float], sharex: Any = False):
    """``axes`` reshaped to ``shape`` (a 2-D object array), or a new figure's axes."""
    if axes is None:
        plt = _pyplot()
        fig, grid = plt.subplots(*shape, figsize=figsize, squeeze=False, sharex=sharex, constrained_layout=True)
        return grid
    grid = np.asarray(axes, dtype=object)
    if grid.size != shape[0] * shape[1]:
        raise ValueError(f"axes must hold {shape[0]} x {shape[1]} = {shape[0] * shape[1]} Axes, got {grid.size}")
    return grid.reshape(shape)


def _time_window(data: SpikeData, t_start, t_stop) -> np.ndarray:
    """Indices of the bins whose centres lie in ``[t_start, t_stop)`` (None: open-ended)."""
    c = data.bin_centers
    lo = -np.inf if t_start is None else float(t_start)
    hi = np.inf if t_stop is None else float(t_stop)
    if not lo < hi:
        raise ValueError(f"t_start must be before t_stop, got t_start={t_start}, t_stop={t_stop}")
    idx = np.flatnonzero((c >= lo) & (c < hi))
    if idx.size == 0:
        end = c[-1] + data.bin_size / 2
        raise ValueError(f"no bins have centres in [{t_start}, {t_stop}); the data span [{data.t_start:g}, {end:g}) s")
    return idx


def _break_gaps(t: np.ndarray, y: np.ndarray, bin_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where consecutive bins are not adjacent, so lines do not bridge gaps."""
    jumps = np.flatnonzero(np.diff(t) > 1.5 * bin_size)
    if jumps.size == 0:
        return t, y
    t = np.insert(t.astype(float), jumps + 1, np.nan)
    y = np.insert(y.astype(float), jumps + 1, np.nan, axis=0)
    return t, y


def _smooth(x: np.ndarray, segment_ids: np.ndarray, sd_bins: float) -> np.ndarray:
    """Gaussian smoothing along time within each segment (no mixing across trials or gaps)."""
    from scipy.ndimage import gaussian_filter1d

    out = np.empty_like(x, dtype=float)
    bounds = np.r_[0, np.flatnonzero(np.diff(segment_ids)) + 1, len(segment_ids)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[a:b] = gaussian_filter1d(x[a:b].astype(float), sd_bins, axis=0, mode="nearest")
    return out


# ----------------------------------------------------------------------------- filters


def _filter_rows(glm, name: str | None, sources: np.ndarray, source_ids: np.ndarray) -> list[tuple]:
    """(block name, source position or None, label) of each row of the filter grid."""
    blocks = [block for _, block, _, _ in glm._blocks()]  # stimulus group(s), history, coupling
    if name is not None:
        if name not in blocks:
            raise ValueError(f"the GLM has no {name!r} filters; it has {blocks}")
        blocks = [name]
    rows = []
    for block in blocks:
        if block == "coupling":
            rows += [("coupling", int(p), f"coupling\nfrom {sid}") for p, sid in zip(sources, source_ids)]
        else:
            rows.append((block, None, block))
    return rows


def plot_filters(
    glm,
    *,
    name: str | None = None,
    neurons: Sequence[Any] | None = None,
    sources: Sequence[Any] | None = None,
    prob: float = PROB,
    axes=None,
    max_panels: int = 100,
):
    """Filters in time with shaded central credible bands, one column per neuron.

    Rows are the stimulus filter(s) (one row per covariate group, one line per covariate),
    the spike-history filter and, for a coupled GLM, one row per source neuron: the panel in
    row "coupling from m", column ``n`` is the filter from neuron ``m`` onto neuron ``n``. Panels
    where a neuron would meet itself are hidden (that effect is its history filter). For a GLM
    fitted to a subset of neurons (``fit(..., neurons=...)``), columns are the modelled neurons
    and sources may be any neuron of the data. Filters are on the scale of the linear predictor
    (log spikes/s for the exp link): stimulus filters per unit of covariate, history and
    coupling filters per spike.

    Bands come from :meth:`PoissonGLM.filters`; a MAP fit has none (only the estimate is drawn).

    Parameters
    ----------
    glm : PoissonGLM
        A fitted GLM (``method="laplace"``, ``"svi"`` or ``"nuts"`` for bands).
    name : str, optional
        One block only: ``"stimulus"`` (or a covariate name for per-covariate bases),
        ``"history"`` or ``"coupling"``. Default: all blocks.
    neurons : sequence, optional
        Ids of the modelled neurons to show (columns); default all.
    sources : sequence, optional
        Ids of the source neurons of the coupling rows; default ``neurons`` if given, else
        every source (for a GLM with ``coupling_sources``, those sources: the other coupling
        filters are fixed at zero).
    prob : float, default :data:`bayesneuro.estimator.PROB` (0.9)
        Probability mass of the bands.
    axes : array of matplotlib Axes, optional
        ``rows x columns`` axes to draw on (any shape with that many); default a new figure.
    max_panels : int, default 100
        Refuse to draw more panels than this (a coupling grid grows as ``neurons x sources``):
        choose ``neurons`` / ``sources``, or raise the limit.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, shape (row, neuron)

    Raises
    ------
    ValueError
        For an unknown ``name`` or neuron id, the wrong number of ``axes``, or too many panels.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.glm.plotting import plot_filters
    >>> rng = np.random.default_rng(0)
    >>> data = bn.SpikeData.from_counts(rng.poisson(0.1, size=(3000, 3)), bin_size=0.005)
    >>> glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=20), coupling=True)
    >>> _ = glm.fit(data, method="laplace", key=0, progress=False, num_samples=200)
    >>> plot_filters(glm).shape  # history, then coupling from neurons 0, 1, 2; a column per neuron
    (4, 3)
    """
    _check_glm(glm)
    ds = glm.filters(prob=prob)
    has_bands = glm.result_.method != "map"
    cols, col_ids = _positions(glm.neuron_ids_, neurons)
    if sources is None and neurons is None and getattr(glm, "coupling_sources", None) is not None:
        sources = glm.coupling_sources  # the only neurons with coupling filters
    src, src_ids = _positions(glm.source_ids_, neurons if sources is None else sources, "sources")
    rows = _filter_rows(glm, name, src, src_ids)
    shape = (len(rows), len(cols))
    if shape[0] * shape[1] > max_panels:
        raise ValueError(
            f"{shape[0]} x {shape[1]} = {shape[0] * shape[1]} panels exceed max_panels={max_panels}; "
            "choose a few neurons (neurons=..., sources=...) or a single block (name=...)"
        )
    grid = _grid(axes, shape, figsize=(2.4 * shape[1] + 0.6, 1.7 * shape[0] + 0.4))
    for r, (block, source, label) in enumerate(rows):
        lag_dim = f"{block}_lag"
        lag_ms = ds[lag_dim].values * 1e3
        for c, (pos, nid) in enumerate(zip(cols, col_ids)):
            ax = grid[r, c]
            if block == "coupling" and glm.source_ids_[source] == nid:
                ax.set_visible(False)
                continue
            sel = {"neuron": pos} if source is None else {"neuron": pos, "source": source}
            mean = ds[block][sel]
            lo, hi = ds[f"{block}_lower"][sel], ds[f"{block}_upper"][sel]
            features = mean["feature"].values if "feature" in mean.dims else [None]
            for j, feat in enumerate(features):
                f = {} if feat is None else {"feature": j}
                color = f"C{j}" if len(features) > 1 else DATA_COLOR
                if has_bands:
                    ax.fill_between(lag_ms, lo[f].values, hi[f].values, color=color, alpha=0.25, lw=0)
                ax.plot(lag_ms, mean[f].values, color=color, lw=1.2, label=None if feat is None else str(feat))
            ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
            if 1 < len(features) <= 10 and c == 0:
                ax.legend(fontsize=7, frameon=False)
    # label the outermost visible panels (a hidden self-coupling panel may sit on an edge)
    for column, nid in zip(grid.T, col_ids):
        shown = [ax for ax in column if ax.get_visible()]
        if shown:
            shown[0].set_title(f"neuron {nid}")
            shown[-1].set_xlabel("lag (ms)")
    for row, (_, _, label) in zip(grid, rows):
        shown = [ax for ax in row if ax.get_visible()]
        if shown:
            shown[0].set_ylabel(label)
    return grid


# ----------------------------------------------------------------------------- coupling


def plot_coupling(glm, *, ax=None, network_prob: float | None = None, cmap: str = "RdBu_r"):
    """The integrated coupling matrix as a heatmap with colour limits symmetric about zero.

    Entry ``(n, m)`` (row ``neuron``, column ``source``) is :meth:`PoissonGLM.coupling_matrix`:
    the summed coupling filter from ``m`` onto ``n``, i.e. the total change of ``n``'s log-rate
    after one spike of ``m``. Red is excitation, blue suppression; the entries where a neuron
    meets itself (self effects, in the history filters) are left blank.

    Parameters
    ----------
    glm : PoissonGLM
        A fitted GLM with ``coupling=True``.
    ax : matplotlib Axes, optional
        Axes to draw on; default a new figure.
    network_prob : float, optional
        Mark with a dot the edges of :meth:`PoissonGLM.coupling_network` at this probability
        (their central interval excludes zero). Needs a Laplace, SVI or NUTS fit.
    cmap : str, default "RdBu_r"
        A diverging colormap.

    Returns
    -------
    matplotlib Axes
        The image is ``ax.images[0]`` (its colour bar beside it).

    Raises
    ------
    ValueError
        If the GLM has no coupling, or ``network_prob`` is given for a MAP fit.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.glm.plotting import plot_coupling
    >>> rng = np.random.default_rng(0)
    >>> data = bn.SpikeData.from_counts(rng.poisson(0.1, size=(3000, 3)), bin_size=0.005)
    >>> glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=20), coupling=True)
    >>> _ = glm.fit(data, method="laplace", key=0, progress=False, num_samples=200)
    >>> ax = plot_coupling(glm, network_prob=0.9)
    >>> lo, hi = ax.images[0].get_clim()
    >>> bool(lo == -hi)
    True
    """
    _check_glm(glm)
    matrix = glm.coupling_matrix()
    edges = None if network_prob is None else glm.coupling_network(prob=network_prob)
    values = np.array(matrix.values, dtype=float)
    self_edge = np.asarray(glm.neuron_ids_)[:, None] == np.asarray(glm.source_ids_)[None, :]
    values[self_edge] = np.nan
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    if ax is None:
        n_row, n_col = values.shape
        _, ax = _pyplot().subplots(figsize=(2.2 + 0.5 * n_col, 0.8 + 0.5 * n_row), constrained_layout=True)
    import matplotlib as mpl

    colormap = mpl.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(values, cmap=colormap, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="integrated coupling\n(log-rate per spike)")
    ax.set_xticks(np.arange(values.shape[1]), [str(i) for i in glm.source_ids_])
    ax.set_yticks(np.arange(values.shape[0]), [str(i) for i in glm.neuron_ids_])
    ax.set_xlabel("source neuron")
    ax.set_ylabel("neuron")
    if edges is not None:
        rows, cols = np.nonzero(edges.values)
        ax.scatter(cols, rows, s=14, color="k", marker="o", label=f"{network_prob:.0%} interval excludes 0")
        ax.set_title("coupling (dots: credible edges)", fontsize=10)
    else:
        ax.set_title("coupling", fontsize=10)
    return ax


# ----------------------------------------------------------------------------- rates


def plot_rates(
    glm,
    data: SpikeData,
    *,
    neurons: Sequence[Any] | None = None,
    t_start: float | None = None,
    t_stop: float | None = None,
    smooth: float | None = None,
    axes=None,
):
    """Observed against predicted rate, one panel per neuron.

    The observed rate is counts / bin size; the predicted one is :meth:`PoissonGLM.predict_rate`
    on the whole of ``data`` (so history and coupling terms see the spikes before the window),
    then cut to ``[t_start, t_stop)``. With ``smooth`` both are smoothed by the same Gaussian,
    so that like is compared with like (the expected smoothed count is the smoothed rate);
    smoothing never crosses a trial boundary or a gap between bins.

    Parameters
    ----------
    glm : PoissonGLM
        A fitted GLM.
    data : SpikeData
        Data with the neurons, covariates and bin size of the fit (typically held out).
    neurons : sequence, optional
        Ids of the modelled neurons to show; default all.
    t_start, t_stop : float, optional
        Window in seconds (bin centres in ``[t_start, t_stop)``); default the whole data.
    smooth : float, optional
        Standard deviation of the Gaussian smoothing, in seconds; default none.
    axes : array of matplotlib Axes, optional
        One per neuron; default a new figure with shared time axis.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, shape (neuron,)
        Each holds two lines: ``lines[0]`` observed, ``lines[1]`` predicted.

    Raises
    ------
    ValueError
        For a data set that does not match the fit, an unknown neuron id, an empty window or
        a negative ``smooth``.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.glm.plotting import plot_rates
    >>> rng = np.random.default_rng(0)
    >>> data = bn.SpikeData.from_counts(rng.poisson(0.1, size=(3000, 3)), bin_size=0.005)
    >>> glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=20), coupling=True)
    >>> _ = glm.fit(data, method="laplace", key=0, progress=False, num_samples=200)
    >>> axes = plot_rates(glm, data, neurons=[0, 2], t_start=5.0, t_stop=10.0, smooth=0.05)
    >>> [len(ax.lines) for ax in axes]  # observed and predicted
    [2, 2]
    """
    _check_glm(glm)
    if smooth is not None and not (np.isfinite(smooth) and smooth >= 0):
        raise ValueError(f"smooth must be a non-negative number of seconds, got {smooth}")
    rate = glm.predict_rate(data)  # (time, modelled neuron)
    observed = data.counts[:, glm.target_index_] / data.bin_size
    if smooth:
        sd = smooth / data.bin_size
        rate = _smooth(rate, data.segment_ids, sd)
        observed = _smooth(observed, data.segment_ids, sd)
    pos, ids = _positions(glm.neuron_ids_, neurons)
    idx = _time_window(data, t_start, t_stop)
    grid = _grid(axes, (len(pos), 1), figsize=(8.0, 1.4 * len(pos) + 0.6), sharex="col")[:, 0]
    label = "observed" if not smooth else f"observed (smoothed, sd {smooth * 1e3:g} ms)"
    for ax, p, nid in zip(grid, pos, ids):
        t, y = _break_gaps(data.bin_centers[idx], observed[idx, p], data.bin_size)
        ax.plot(t, y, color=DATA_COLOR, lw=0.8, label=label)
        t, y = _break_gaps(data.bin_centers[idx], rate[idx, p], data.bin_size)
        ax.plot(t, y, color=MODEL_COLOR, lw=0.9, label="GLM prediction" + (" (smoothed alike)" if smooth else ""))
        ax.set_ylabel(f"neuron {nid}\n(spikes/s)")
    grid[0].legend(fontsize=7, frameon=False, loc="upper right", ncol=2)
    grid[-1].set_xlabel("time (s)")
    return grid


# ----------------------------------------------------------------------------- rasters


def plot_raster(
    real: SpikeData,
    simulated,
    *,
    neurons: Sequence[Any] | None = None,
    t_start: float | None = None,
    t_stop: float | None = None,
    ax=None,
):
    """Raster of real spikes above simulated ones, neuron by neuron.

    Each neuron gets two rows: its recorded spikes (dark) and the simulation's (red), so
    timing and rate can be compared by eye. A tick marks each bin holding at least one spike,
    at the bin centre.

    Parameters
    ----------
    real : SpikeData
        The recording.
    simulated : SpikeData or GLMSimulation
        A simulation on the same bins and neurons, e.g. from :meth:`PoissonGLM.simulate`.
    neurons : sequence, optional
        Ids of the neurons to show; default all.
    t_start, t_stop : float, optional
        Window in seconds; default the whole data.
    ax : matplotlib Axes, optional
        Axes to draw on; default a new figure.

    Returns
    -------
    matplotlib Axes
        ``ax.collections`` holds one event collection per row: real, simulated, real, ...

    Raises
    ------
    ValueError
        If the two data sets differ in neurons or bins, for an unknown neuron id or an empty
        window.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.glm.plotting import plot_raster
    >>> rng = np.random.default_rng(0)
    >>> real = bn.SpikeData.from_counts(rng.poisson(0.1, size=(400, 2)), bin_size=0.005)
    >>> fake = bn.SpikeData.from_counts(rng.poisson(0.1, size=(400, 2)), bin_size=0.005)
    >>> len(plot_raster(real, fake).collections)
    4
    """
    sim = getattr(simulated, "data", simulated)
    for name, d in (("real", real), ("simulated", sim)):
        if not isinstance(d, SpikeData):
            raise TypeError(f"{name} must be a SpikeData (or a GLMSimulation), got {type(d).__name__}")
    if real.n_neuron != sim.n_neuron or np.any(real.neuron_ids != sim.neuron_ids):
        raise ValueError(
            f"real and simulated data have different neurons: {real.neuron_ids.tolist()} "
            f"and {sim.neuron_ids.tolist()}"
        )
    if real.n_time != sim.n_time or not np.allclose(real.bin_centers, sim.bin_centers):
        raise ValueError(
            f"real and simulated data must share their bins; got {real.n_time} and {sim.n_time} bins "
            f"of {real.bin_size:g} s and {sim.bin_size:g} s"
        )
    pos, ids = _positions(real.neuron_ids, neurons)
    idx = _time_window(real, t_start, t_stop)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(8.0, 0.45 * len(pos) + 1.0), constrained_layout=True)
    t = real.bin_centers[idx]
    events, offsets, colors, labels = [], [], [], []
    for k, (p, nid) in enumerate(zip(pos, ids)):
        top = 2 * (len(pos) - 1 - k) + 1  # first neuron at the top
        for d, offset, color, kind in ((real, top, DATA_COLOR, "real"), (sim, top - 0.9, MODEL_COLOR, "sim")):
            events.append(t[d.counts[idx, p] > 0])
            offsets.append(offset)
            colors.append(color)
            labels.append(f"{nid} {kind}")
    ax.eventplot(events, lineoffsets=offsets, linelengths=0.8, linewidths=0.8, colors=colors)
    ax.set_yticks(offsets, labels, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_xlim(t[0] - real.bin_size / 2, t[-1] + real.bin_size / 2)
    return ax
