r"""Matplotlib views of fitted latent-variable models: :class:`~bayesneuro.GPFA` and :class:`~bayesneuro.PoissonLDS`.

Every function draws on the axes it is given (``ax``) or on a new figure, and returns what it
drew on. Latents are chosen by index in the basis of the model's ``transform`` (GPFA: the
orthonormalised latents, ordered by variance explained; PoissonLDS: the model's own basis),
trials by their **label** (as in :meth:`SpikeData.trial`). Times are seconds from the start of
each trial.

:func:`plot_trajectories`
    Single-trial latent time courses with credible bands, one panel per latent.
:func:`plot_trajectories_2d`
    Single-trial trajectories in the plane of two latents, coloured by condition.
:func:`plot_condition_averages`
    Trial-averaged latents per condition with a band of the across-trial standard error.
:func:`plot_loadings`
    The neuron x latent loadings as a diverging heatmap.
:func:`plot_variance_explained`
    Share of variance carried by each (orthonormalised) latent.
:func:`plot_flow_field`
    PoissonLDS: the one-step flow :math:`x_{t+1} - x_t = (A - I) x + b` in a plane of two latents.
:func:`plot_eigenvalues`
    PoissonLDS: eigenvalues of ``A`` in the complex plane with the unit circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from ..data import SpikeData

__all__ = [
    "plot_trajectories",
    "plot_trajectories_2d",
    "plot_condition_averages",
    "plot_loadings",
    "plot_variance_explained",
    "plot_flow_field",
    "plot_eigenvalues",
]

#: colour of the model's deterministic parts (fixed point, unit circle, flow arrows)
MODEL_COLOR = "0.25"


# ----------------------------------------------------------------------------- helpers


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _check_model(model, *, dynamics: bool = False) -> None:
    """``model`` is a fitted GPFA or PoissonLDS (a PoissonLDS only when ``dynamics``)."""
    from .gpfa import GPFA
    from .plds import PoissonLDS

    if dynamics:
        if isinstance(model, GPFA):
            raise TypeError("a GPFA has no latent dynamics (its latents are Gaussian processes); use a PoissonLDS")
        if not isinstance(model, PoissonLDS):
            raise TypeError(f"model must be a fitted bayesneuro.PoissonLDS, got {type(model).__name__}")
    elif not isinstance(model, (GPFA, PoissonLDS)):
        raise TypeError(f"model must be a fitted bayesneuro.GPFA or bayesneuro.PoissonLDS, got {type(model).__name__}")
    model._check_fitted()


def _check_prob(prob: float) -> float:
    if not (isinstance(prob, (int, float, np.floating)) and 0.0 < prob < 1.0):
        raise ValueError(f"prob must be a probability in (0, 1), got {prob!r}")
    return float(prob)


def _z(prob: float) -> float:
    """Half-width of the central ``prob`` interval of a standard normal."""
    return float(stats.norm.ppf(0.5 + 0.5 * _check_prob(prob)))


def _latents(model, latents: Any, *, exactly: int | None = None) -> np.ndarray:
    """Validated latent indices (distinct integers in ``[0, n_latents)``)."""
    k = model.n_latents
    idx = np.atleast_1d(np.asarray(latents))
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"latents must be a sequence of latent indices, got {latents!r}")
    if exactly is not None and idx.size != exactly:
        raise ValueError(f"latents must name exactly {exactly} latents, got {idx.tolist()}")
    if np.any(idx < 0) or np.any(idx >= k):
        raise ValueError(f"latents {idx.tolist()} out of range: the model has {k} latents (0, ..., {k - 1})")
    if len(set(idx.tolist())) != idx.size:
        raise ValueError(f"latents must be distinct, got {idx.tolist()}")
    return idx


def _check_data(data) -> None:
    if not isinstance(data, SpikeData):
        raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")


def _trial_positions(data: SpikeData, trials: Any) -> np.ndarray:
    """Positions (in ``data.trials``) of the trial labels ``trials`` (None: all)."""
    labels = data.trials
    if trials is None:
        return np.arange(len(labels))
    wanted = np.atleast_1d(np.asarray([trials] if isinstance(trials, str) else trials))
    if wanted.size == 0:
        raise ValueError("trials must name at least one trial")
    pos = []
    for t in wanted.tolist():
        hit = np.flatnonzero(labels == t)
        if hit.size == 0:
            more = ", ..." if len(labels) > 10 else ""
            raise ValueError(f"trials: no trial {t!r}; the data's trials are {labels[:10].tolist()}{more}")
        pos.append(int(hit[0]))
    return np.asarray(pos)


def _per_trial(data: SpikeData, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(time within trial (s), values of the trial's bins)`` for each trial of ``data``."""
    seg = data.segment_ids
    bounds = np.r_[0, np.flatnonzero(np.diff(seg)) + 1, data.n_time]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        t = data.bin_centers[a:b] - data.bin_centers[a] + 0.5 * data.bin_size
        out.append((t, values[a:b]))
    return out


def _posterior(model, data) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and sd of the latents, ``(time, latent)`` each, from ``model.transform``."""
    _check_data(data)
    ds = model.transform(data)
    return np.asarray(ds["mean"].values, dtype=float), np.asarray(ds["sd"].values, dtype=float)


def _panels(ax, n: int, *, figsize: tuple[float, float]) -> np.ndarray:
    """``n`` Axes (a 1-D object array): those given or a new figure's column of panels."""
    if ax is None:
        _, grid = _pyplot().subplots(n, 1, figsize=figsize, squeeze=False, sharex=True, constrained_layout=True)
        return grid[:, 0]
    grid = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
    if grid.size != n:
        raise ValueError(f"ax must hold one Axes per latent ({n}), got {grid.size}")
    return grid


def _one_ax(ax, figsize: tuple[float, float]):
    if ax is None:
        _, ax = _pyplot().subplots(figsize=figsize, constrained_layout=True)
    return ax


def _condition_labels(data: SpikeData, condition: Any) -> np.ndarray:
    cond = np.asarray(condition)
    if cond.ndim != 1 or cond.shape[0] != data.n_trial:
        raise ValueError(
            f"condition must hold one label per trial of the data ({data.n_trial}, in the order of "
            f"data.trials), got shape {cond.shape}"
        )
    return cond


def _model_name(model) -> str:
    return type(model).__name__


# ----------------------------------------------------------------------------- trajectories


def plot_trajectories(model, data: SpikeData, *, trials: Sequence[Any] | None = None, latents=(0, 1),
                      prob: float = 0.9, ax=None):
    r"""Single-trial latent time courses with central credible bands, one panel per latent.

    For each trial, the posterior mean of each latent from ``model.transform(data)`` is drawn
    against time within the trial (bin centres, seconds from the trial's start), with the band
    :math:`\mu \pm z\,\sigma`, :math:`z = \Phi^{-1}(1/2 + \mathrm{prob}/2)`, from the
    posterior standard deviation (exact for GPFA, Laplace for PoissonLDS).

    Parameters
    ----------
    model : GPFA or PoissonLDS
        A fitted model (GPFA latents are the orthonormalised ones).
    data : SpikeData
        Data with the model's neurons (and bin size).
    trials : sequence, optional
        Labels of the trials to draw (as in ``data.trials``); default all.
    latents : sequence of int, default (0, 1)
        Latents to draw, one panel each.
    prob : float, default 0.9
        Probability mass of the bands.
    ax : matplotlib Axes or sequence of Axes, optional
        One Axes per latent; default a new figure with a shared time axis.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, shape (latent,)
        In panel ``j``, ``lines[i]`` is the mean and ``collections[i]`` the band of the
        ``i``-th drawn trial.

    Raises
    ------
    TypeError
        If ``model`` is not a GPFA or PoissonLDS, or ``data`` not a SpikeData.
    ValueError
        For an unknown trial, a latent index out of range, ``prob`` outside (0, 1) or the
        wrong number of Axes.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_trajectories
    >>> rot = 0.97 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), rot, np.zeros(2),
    ...     np.zeros((2, 0)), 0.02 * np.eye(2), np.random.default_rng(0).normal(size=(6, 2)),
    ...     np.full(6, 2.5)), bin_size=0.02)
    >>> data = model.simulate(3, 40, key=0).data
    >>> axes = plot_trajectories(model, data, trials=[0, 2])
    >>> axes.shape, len(axes[0].lines)
    ((2,), 2)
    """
    _check_model(model)
    z = _z(prob)
    idx = _latents(model, latents)
    _check_data(data)
    pos = _trial_positions(data, trials)
    mean, sd = _posterior(model, data)
    per_mean, per_sd = _per_trial(data, mean), _per_trial(data, sd)
    grid = _panels(ax, len(idx), figsize=(7.0, 1.8 * len(idx) + 0.6))
    labels = data.trials
    for a, j in zip(grid, idx):
        for c, p in enumerate(pos):
            t, m = per_mean[p]
            s = per_sd[p][1]
            color = f"C{c % 10}"
            a.fill_between(t, m[:, j] - z * s[:, j], m[:, j] + z * s[:, j], color=color, alpha=0.2, lw=0)
            a.plot(t, m[:, j], color=color, lw=1.2, label=f"trial {labels[p]}")
        a.set_ylabel(f"latent {j}")
    if len(pos) <= 10:
        grid[0].legend(fontsize=7, frameon=False, loc="upper right", ncol=min(len(pos), 5))
    grid[0].set_title(f"{_model_name(model)} latents (bands: {prob:.0%} posterior intervals)", fontsize=10)
    grid[-1].set_xlabel("time in trial (s)")
    return grid


def plot_trajectories_2d(model, data: SpikeData, *, trials: Sequence[Any] | None = None, latents=(0, 1),
                         condition: Any = None, ax=None):
    """Single-trial latent trajectories in the plane of two latents (state-space view).

    Each trial's posterior mean path from ``model.transform(data)`` is one line; a dot marks
    where each trial starts. With ``condition``, trials of one condition share a colour and the
    legend names the conditions; otherwise each trial has its own colour.

    Parameters
    ----------
    model : GPFA or PoissonLDS
        A fitted model.
    data : SpikeData
        Data with the model's neurons.
    trials : sequence, optional
        Labels of the trials to draw; default all.
    latents : pair of int, default (0, 1)
        The latents on the x and y axes.
    condition : array_like, shape (n_trial,), optional
        One label per trial of ``data`` (all of them, in the order of ``data.trials``, also
        when ``trials`` selects some); the legend lists the conditions drawn, sorted.
    ax : matplotlib Axes, optional
        Default a new figure.

    Returns
    -------
    matplotlib Axes
        ``lines[i]`` is the path of the ``i``-th drawn trial; ``collections[0]`` the start dots.

    Raises
    ------
    TypeError
        If ``model`` is not a GPFA or PoissonLDS, or ``data`` not a SpikeData.
    ValueError
        For an unknown trial, ``latents`` not two distinct latents of the model, or a
        ``condition`` of the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_trajectories_2d
    >>> rot = 0.97 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), rot, np.zeros(2),
    ...     np.zeros((2, 0)), 0.02 * np.eye(2), np.random.default_rng(0).normal(size=(6, 2)),
    ...     np.full(6, 2.5)), bin_size=0.02)
    >>> data = model.simulate(3, 40, key=0).data
    >>> ax = plot_trajectories_2d(model, data, condition=["left", "right", "left"])
    >>> len(ax.lines), [t.get_text() for t in ax.get_legend().get_texts()]
    (3, ['left', 'right'])
    """
    _check_model(model)
    i, j = _latents(model, latents, exactly=2)
    _check_data(data)
    pos = _trial_positions(data, trials)
    cond = None if condition is None else _condition_labels(data, condition)
    mean, _ = _posterior(model, data)
    per = _per_trial(data, mean)
    ax = _one_ax(ax, (4.6, 4.2))
    levels = None if cond is None else list(np.unique(cond[pos]))
    starts, start_colors, first = [], [], {}
    for c, p in enumerate(pos):
        m = per[p][1]
        if cond is None:
            color, label = f"C{c % 10}", (f"trial {data.trials[p]}" if len(pos) <= 10 else None)
        else:
            k = levels.index(cond[p])
            color, label = f"C{k % 10}", None
        (line,) = ax.plot(m[:, i], m[:, j], color=color, lw=1.0, alpha=0.8, label=label)
        if cond is not None:
            first.setdefault(k, line)
        starts.append(m[0, [i, j]])
        start_colors.append(color)
    ax.scatter(*np.asarray(starts).T, c=start_colors, s=16, zorder=3, edgecolors="none")
    if cond is not None:  # one entry per condition, in sorted order (the colour order)
        ax.legend([first[k] for k in sorted(first)], [str(levels[k]) for k in sorted(first)], fontsize=7,
                  frameon=False)
    elif len(pos) <= 10:
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel(f"latent {i}")
    ax.set_ylabel(f"latent {j}")
    ax.set_title(f"{_model_name(model)} trajectories (dots: trial starts)", fontsize=10)
    return ax


def plot_condition_averages(model, data: SpikeData, condition: Any, *, latents=(0, 1), prob: float = 0.9,
                            ax=None):
    r"""Trial-averaged latent time courses per condition, with across-trial standard-error bands.

    For each condition, the posterior means of its trials (from ``model.transform(data)``) are
    averaged bin by bin; the band is :math:`\bar\mu \pm z\, s / \sqrt{n}` with ``s`` the
    across-trial standard deviation of the means (``ddof=1``), ``n`` the number of trials and
    :math:`z = \Phi^{-1}(1/2 + \mathrm{prob}/2)`. It shows trial-to-trial variability of the
    inferred latents, not their posterior uncertainty. A condition with a single trial gets no
    band. Trials of a condition must have equal lengths (align or cut them first).

    Parameters
    ----------
    model : GPFA or PoissonLDS
        A fitted model.
    data : SpikeData
        Data with the model's neurons.
    condition : array_like, shape (n_trial,)
        One label per trial of ``data`` (in the order of ``data.trials``).
    latents : sequence of int, default (0, 1)
        Latents to draw, one panel each.
    prob : float, default 0.9
        Normal-quantile coverage of the bands.
    ax : matplotlib Axes or sequence of Axes, optional
        One Axes per latent; default a new figure.

    Returns
    -------
    numpy.ndarray of matplotlib Axes, shape (latent,)
        In each panel ``lines[c]`` is the average of the ``c``-th condition (sorted labels);
        the bands are in ``collections`` in the same order (conditions with one trial omitted).

    Raises
    ------
    TypeError
        If ``model`` is not a GPFA or PoissonLDS, or ``data`` not a SpikeData.
    ValueError
        If ``condition`` has the wrong length, trials of a condition differ in length, a
        latent index is out of range or ``prob`` is outside (0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_condition_averages
    >>> rot = 0.97 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), rot, np.zeros(2),
    ...     np.zeros((2, 0)), 0.02 * np.eye(2), np.random.default_rng(0).normal(size=(6, 2)),
    ...     np.full(6, 2.5)), bin_size=0.02)
    >>> data = model.simulate(3, 40, key=0).data
    >>> axes = plot_condition_averages(model, data, ["a", "b", "a"])
    >>> [len(a.lines) for a in axes], [len(a.collections) for a in axes]  # "b" has one trial
    ([2, 2], [1, 1])
    """
    _check_model(model)
    z = _z(prob)
    idx = _latents(model, latents)
    _check_data(data)
    cond = _condition_labels(data, condition)
    mean, _ = _posterior(model, data)
    per = _per_trial(data, mean)
    levels = np.unique(cond).tolist()
    averages = []
    for level in levels:
        members = np.flatnonzero(cond == level)
        lengths = sorted({len(per[p][0]) for p in members})
        if len(lengths) > 1:
            raise ValueError(
                f"condition {level!r}: its trials have different lengths {lengths} (bins); averaging "
                "needs trials of equal length in each condition (align or cut the trials first)"
            )
        paths = np.stack([per[p][1] for p in members])  # (trial, time, latent)
        avg = paths.mean(axis=0)
        sem = paths.std(axis=0, ddof=1) / np.sqrt(len(members)) if len(members) > 1 else None
        averages.append((per[members[0]][0], avg, sem, len(members)))
    grid = _panels(ax, len(idx), figsize=(7.0, 1.8 * len(idx) + 0.6))
    for a, j in zip(grid, idx):
        for c, (level, (t, avg, sem, n)) in enumerate(zip(levels, averages)):
            color = f"C{c % 10}"
            if sem is not None:
                a.fill_between(t, avg[:, j] - z * sem[:, j], avg[:, j] + z * sem[:, j], color=color, alpha=0.25, lw=0)
            a.plot(t, avg[:, j], color=color, lw=1.4, label=f"{level} (n={n})")
        a.set_ylabel(f"latent {j}")
    grid[0].legend(fontsize=7, frameon=False, loc="upper right", ncol=min(len(levels), 4))
    grid[0].set_title(f"{_model_name(model)} condition averages (bands: {prob:.0%}, across-trial s.e.)", fontsize=10)
    grid[-1].set_xlabel("time in trial (s)")
    return grid


# ----------------------------------------------------------------------------- loadings, variance


def _loadings(model, orthonormal: bool) -> tuple[np.ndarray, str]:
    from .gpfa import GPFA

    if isinstance(model, GPFA):
        if orthonormal:
            return np.asarray(model.orthonormal_loadings_, float), "orthonormal loadings U"
        return np.asarray(model.loadings_, float), "loadings C"
    return np.asarray(model.loadings_, float), "loadings C (log-rate per unit latent)"


def plot_loadings(model, *, orthonormal: bool = True, ax=None):
    """The neuron x latent loadings as a heatmap with colour limits symmetric about zero.

    GPFA: the orthonormal loadings ``U`` (``orthonormal=True``, matching the latents of
    ``transform``) or the model's ``C`` (``loadings_``). PoissonLDS: the loading matrix ``C``
    (``loadings_``), in the basis of its ``transform``; ``orthonormal`` applies to GPFA only.

    Parameters
    ----------
    model : GPFA or PoissonLDS
        A fitted model.
    orthonormal : bool, default True
        GPFA only: orthonormalised loadings.
    ax : matplotlib Axes, optional
        Default a new figure.

    Returns
    -------
    matplotlib Axes
        ``images[0]`` holds the ``(neuron, latent)`` array; y tick labels are the neuron ids.

    Raises
    ------
    TypeError
        If ``model`` is not a GPFA or PoissonLDS.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_loadings
    >>> c = np.random.default_rng(0).normal(size=(6, 2))
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), 0.9 * np.eye(2), np.zeros(2),
    ...     np.zeros((2, 0)), 0.02 * np.eye(2), c, np.full(6, 2.5)), bin_size=0.02)
    >>> ax = plot_loadings(model)
    >>> bool(np.array_equal(ax.images[0].get_array(), c)), ax.images[0].get_clim()[0] < 0
    (True, True)
    """
    _check_model(model)
    values, what = _loadings(model, bool(orthonormal))
    limit = float(np.abs(values).max()) if values.size and np.abs(values).max() > 0 else 1.0
    n_neuron, k = values.shape
    ax = _one_ax(ax, (2.4 + 0.45 * k, 1.2 + min(0.25 * n_neuron, 8.0)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="loading")
    ids = np.asarray(model.neuron_ids_)
    step = max(1, int(np.ceil(n_neuron / 40)))  # at most ~40 labels
    ticks = np.arange(0, n_neuron, step)
    ax.set_yticks(ticks, [str(v) for v in ids[ticks]], fontsize=7 if n_neuron > 15 else None)
    ax.set_xticks(np.arange(k), [str(j) for j in range(k)])
    ax.set_xlabel("latent")
    ax.set_ylabel("neuron")
    ax.set_title(f"{_model_name(model)} {what}", fontsize=10)
    return ax


def _stationary_cov(a: np.ndarray, q: np.ndarray) -> np.ndarray | None:
    """Solution of ``S = A S A^T + Q`` (None if ``A`` is not stable)."""
    from scipy.linalg import solve_discrete_lyapunov

    if np.max(np.abs(np.linalg.eigvals(a))) >= 1.0:
        return None
    s = solve_discrete_lyapunov(a, q)
    return 0.5 * (s + s.T)


def _plds_variance_explained(model) -> np.ndarray:
    r"""Share of the PoissonLDS log-rate variance carried by each orthonormalised latent.

    With :math:`\Sigma` the stationary covariance of the latents
    (:math:`\Sigma = A \Sigma A^\top + Q`), the latent-driven variance of the linear predictors
    is :math:`C \Sigma C^\top`; its eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_K` are the
    variances of the orthonormalised latents (the principal axes of :math:`C x`), and the shares
    are :math:`\lambda_j / \sum_k \lambda_k` (they sum to 1: the Poisson noise has no
    counterpart on the log-rate scale, unlike GPFA's ``variance_explained_``). Inputs are
    taken as zero.

    Raises
    ------
    ValueError
        If ``A`` has an eigenvalue of modulus >= 1 (no stationary covariance).
    """
    _check_model(model, dynamics=True)
    sigma = _stationary_cov(np.asarray(model.dynamics_, float), np.asarray(model.dynamics_cov_, float))
    if sigma is None:
        rho = float(np.max(np.abs(np.linalg.eigvals(model.dynamics_))))
        raise ValueError(
            f"the dynamics are not stable (max |eigenvalue of A| = {rho:.4g} >= 1), so the latents have "
            "no stationary covariance and the variance explained is undefined"
        )
    c = np.asarray(model.loadings_, float)
    lam = np.linalg.eigvalsh(c @ sigma @ c.T)[::-1][: model.n_latents]
    lam = np.clip(lam, 0.0, None)
    return lam / lam.sum()


def plot_variance_explained(model, *, ax=None):
    r"""Bar plot of the share of variance carried by each orthonormalised latent.

    GPFA: ``variance_explained_``, the share of the model's total variance
    ``trace(C C^T + R)`` (noise included, so the bars sum to less than 1). PoissonLDS: the
    share of the latent-driven log-rate variance ``C Sigma C^T`` per principal axis, with
    ``Sigma`` the stationary latent covariance (the bars sum to 1, and need stable dynamics).

    For the PoissonLDS, with :math:`\Sigma` the stationary covariance of the latents
    (:math:`\Sigma = A \Sigma A^\top + Q`, inputs zero), the latent-driven variance of the
    linear predictors is :math:`C \Sigma C^\top`; its eigenvalues
    :math:`\lambda_1 \ge \dots \ge \lambda_K` are the variances of the orthonormalised latents
    (the principal axes of :math:`C x`), and the bars are :math:`\lambda_j / \sum_k \lambda_k`.
    The Poisson noise has no counterpart on the log-rate scale, so unlike GPFA's the shares
    sum to 1 and are not comparable with GPFA's numbers.

    Parameters
    ----------
    model : GPFA or PoissonLDS
        A fitted model.
    ax : matplotlib Axes, optional
        Default a new figure.

    Returns
    -------
    matplotlib Axes
        ``patches`` are the bars, one per latent.

    Raises
    ------
    TypeError
        If ``model`` is not a GPFA or PoissonLDS.
    ValueError
        For a PoissonLDS whose ``A`` has an eigenvalue of modulus >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_variance_explained
    >>> c = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), 0.5 * np.eye(2), np.zeros(2),
    ...     np.zeros((2, 0)), np.eye(2), c, np.zeros(3)), bin_size=0.02)
    >>> [round(float(p.get_height()), 3) for p in plot_variance_explained(model).patches]
    [0.8, 0.2]
    """
    from .gpfa import GPFA

    _check_model(model)
    if isinstance(model, GPFA):
        shares = np.asarray(model.variance_explained_, float)
        what = "share of total variance (incl. noise)"
    else:
        shares = _plds_variance_explained(model)
        what = "share of latent log-rate variance"
    k = len(shares)
    ax = _one_ax(ax, (1.8 + 0.45 * k, 2.8))
    ax.bar(np.arange(k), shares, color="C0")
    ax.set_xticks(np.arange(k), [str(j) for j in range(k)])
    ax.set_xlabel("orthonormalised latent")
    ax.set_ylabel(what)
    ax.set_title(f"{_model_name(model)}: {shares.sum():.1%} in {k} latents", fontsize=10)
    return ax


# ----------------------------------------------------------------------------- dynamics


def _eig_text(summary, n_modes: int = 2) -> str:
    """Short text of the slowest modes: eigenvalue, decay time, rotation frequency."""
    parts, seen = [], 0
    lam, tau, freq = summary.eigenvalues, summary.timescales, summary.frequencies
    k = 0
    while k < len(lam) and seen < n_modes:
        z = lam[k]
        pair = abs(z.imag) > 1e-12 and k + 1 < len(lam) and np.isclose(lam[k + 1], np.conj(z))
        value = f"{z.real:.3f}±{abs(z.imag):.3f}i" if pair else f"{z.real:.3f}"
        t = "inf" if not np.isfinite(tau[k]) else f"{tau[k]:.3g} s"
        text = f"λ={value}: τ={t}"
        if pair:
            text += f", f={abs(freq[k]):.3g} Hz"
        parts.append(text)
        seen += 1
        k += 2 if pair else 1
    return "; ".join(parts)


def plot_flow_field(model, *, latents=(0, 1), data: SpikeData | None = None, grid: int = 20, ax=None):
    r"""Flow field of the PoissonLDS dynamics in the plane of two latents.

    Arrows show the expected one-step change :math:`x_{t+1} - x_t = (A - I)\,x + b` (inputs
    zero) on a ``grid x grid`` lattice of the two latents, with every other latent held at the
    fixed point :math:`x^* = (I - A)^{-1} b` (at 0 when ``I - A`` is singular). The fixed point
    is marked, and the title gives the slowest modes of ``A``
    (:meth:`~bayesneuro.PoissonLDS.dynamics_summary`). With ``data``, the posterior mean paths
    of its trials (``model.transform``) are overlaid (projected onto the plane; with more than
    two latents the other coordinates of a path generally differ from the fixed point's).

    The lattice spans the trajectories when ``data`` is given, else three stationary standard
    deviations around the fixed point (three initial-state ones for unstable dynamics).

    Parameters
    ----------
    model : PoissonLDS
        A fitted model.
    latents : pair of int, default (0, 1)
        The latents on the x and y axes.
    data : SpikeData, optional
        Trials whose latent paths to overlay.
    grid : int, default 20
        Arrows per axis (at least 2).
    ax : matplotlib Axes, optional
        Default a new figure.

    Returns
    -------
    matplotlib Axes
        ``collections[0]`` is the quiver (``X, Y, U, V``); the line labelled ``"fixed point"``
        marks it; trajectories are the lines labelled ``"trial <label>"`` (``"_trial"``, kept out of the
        legend, past 10 trials).

    Raises
    ------
    TypeError
        For a GPFA (no dynamics) or anything else that is not a PoissonLDS.
    ValueError
        If ``latents`` are not two distinct latents of the model, or ``grid < 2``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_flow_field
    >>> rot = 0.97 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), rot, np.array([0.03, 0.0]),
    ...     np.zeros((2, 0)), 0.02 * np.eye(2), np.ones((4, 2)), np.zeros(4)), bin_size=0.02)
    >>> ax = plot_flow_field(model, grid=5)
    >>> ax.collections[0].U.size
    25
    """
    _check_model(model, dynamics=True)
    i, j = _latents(model, latents, exactly=2)
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2 (arrows per axis), got {grid!r}")
    a = np.asarray(model.dynamics_, float)
    b = np.asarray(model.dynamics_bias_, float)
    k = model.n_latents
    summary = model.dynamics_summary()
    fixed = summary.fixed_point
    centre = np.zeros(k) if fixed is None else np.asarray(fixed, float)
    paths = []
    if data is not None:
        mean, _ = _posterior(model, data)
        paths = [(data.trials[p], m) for p, (_, m) in enumerate(_per_trial(data, mean))]
    if paths:
        pts = np.concatenate([m[:, [i, j]] for _, m in paths] + [centre[None, [i, j]]])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = 0.1 * np.where(hi > lo, hi - lo, 1.0)
        lo, hi = lo - pad, hi + pad
    else:
        sigma = _stationary_cov(a, np.asarray(model.dynamics_cov_, float))
        if sigma is None:
            sigma = np.asarray(model.initial_cov_, float)
        half = 3.0 * np.sqrt(np.diag(sigma)[[i, j]])
        lo, hi = centre[[i, j]] - half, centre[[i, j]] + half
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    states = np.tile(centre, (gx.size, 1))
    states[:, i], states[:, j] = gx.ravel(), gy.ravel()
    flow = states @ (a - np.eye(k)).T + b
    ax = _one_ax(ax, (4.8, 4.4))
    ax.quiver(gx.ravel(), gy.ravel(), flow[:, i], flow[:, j], angles="xy", color=MODEL_COLOR, alpha=0.7,
              width=0.004)
    for c, (label, m) in enumerate(paths):
        ax.plot(m[:, i], m[:, j], color=f"C{c % 10}", lw=1.0, alpha=0.8,
                label=f"trial {label}" if len(paths) <= 10 else "_trial")
    if fixed is not None:
        ax.plot([centre[i]], [centre[j]], marker="*", ms=12, color="C3", ls="none", zorder=4,
                label="fixed point")
    ax.set_xlabel(f"latent {i}")
    ax.set_ylabel(f"latent {j}")
    note = "" if fixed is not None else "no unique fixed point; "
    ax.set_title(f"{note}{_eig_text(summary)}", fontsize=8)
    if fixed is not None or 0 < len(paths) <= 10:
        ax.legend(fontsize=7, framealpha=0.8, loc="best", markerscale=0.6)
    return ax


def plot_eigenvalues(model, *, ax=None):
    """Eigenvalues of the PoissonLDS dynamics ``A`` in the complex plane, with the unit circle.

    Inside the circle a mode decays, outside it grows; the angle is the rotation per bin
    (frequency ``angle / (2 pi bin_size)`` Hz). The eigenvalues do not depend on the arbitrary
    basis of the latent space.

    Parameters
    ----------
    model : PoissonLDS
        A fitted model.
    ax : matplotlib Axes, optional
        Default a new figure.

    Returns
    -------
    matplotlib Axes
        ``collections[0]`` holds the eigenvalues (by decreasing modulus, as
        :meth:`~bayesneuro.PoissonLDS.dynamics_summary`) as ``(real, imaginary)`` offsets;
        ``lines[0]`` is the unit circle.

    Raises
    ------
    TypeError
        For a GPFA (no dynamics) or anything else that is not a PoissonLDS.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.latent.plds import PLDSParams, PoissonLDS
    >>> from bayesneuro.latent.plotting import plot_eigenvalues
    >>> rot = 0.9 * np.array([[0.0, -1.0], [1.0, 0.0]])
    >>> model = PoissonLDS.from_params(PLDSParams(np.zeros(2), np.eye(2), rot, np.zeros(2),
    ...     np.zeros((2, 0)), np.eye(2), np.ones((3, 2)), np.zeros(3)), bin_size=0.01)
    >>> np.round(plot_eigenvalues(model).collections[0].get_offsets(), 3).tolist()
    [[0.0, 0.9], [0.0, -0.9]]
    """
    _check_model(model, dynamics=True)
    summary = model.dynamics_summary()
    lam = summary.eigenvalues
    ax = _one_ax(ax, (4.0, 4.0))
    theta = np.linspace(0.0, 2.0 * np.pi, 361)
    ax.plot(np.cos(theta), np.sin(theta), color=MODEL_COLOR, lw=0.8, label="unit circle")
    ax.scatter(lam.real, lam.imag, color="C3", s=30, zorder=3, label="eigenvalues of A")
    ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
    ax.axvline(0.0, color="0.8", lw=0.6, zorder=0)
    r = max(1.05, 1.05 * float(np.max(np.abs(lam))))
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.set_xlabel("real")
    ax.set_ylabel("imaginary")
    ax.set_title(f"max |λ| = {np.max(np.abs(lam)):.4g} ({_model_name(model)}, bin {model.bin_size_:g} s)", fontsize=9)
    return ax
