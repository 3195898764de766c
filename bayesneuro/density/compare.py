r"""Compare the structure of spikes between states: one model fitted per state, with differences.

:func:`compare_states` takes any density model, fits a fresh copy of it separately to the data
of each state :math:`S_1, \dots, S_m` (epochs, conditions, sessions, groups of trials), collects
draws of its summary statistics, and reports each state's statistics and their differences from
a reference state with credible intervals.

Where the draws come from
-------------------------
- A model with a ``posterior_statistics(*, key, num_samples)`` method (every model of
  :mod:`bayesneuro.density`) supplies posterior draws (or, for models without a posterior, its
  own bootstrap draws).
- Any other estimator, e.g. :class:`~bayesneuro.latent.GPFA` or
  :class:`~bayesneuro.latent.PoissonLDS`, is refitted (a :func:`~bayesneuro.estimator.clone`
  with its own key) on bootstrap resamples of each state's trials (or of contiguous time blocks
  when a state has fewer than ``min_units`` trials), and a ``statistics(fitted) -> dict``
  function is evaluated on each refit; by default the fitted model's own
  ``summary_statistics()`` (for the latent models: basis-invariant summaries such as latent
  timescales and dynamics eigenvalue moduli).

Models are used only through their estimator interface: ``fit(data, *, key, **fit_kwargs)``,
``posterior_statistics(*, key, num_samples)`` or ``summary_statistics()``. Each state gets its
own key (:func:`~bayesneuro.estimator.split_key`). The states are fitted independently, so their
posteriors are independent and the draws of a difference are differences of independently drawn
pairs.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import jax
import numpy as np
import xarray as xr

from ..estimator import PROB, clone, resolve_key, split_key
from .trains import SpikeTrains

__all__ = ["StateComparison", "compare_states", "split_by_state", "plot_states"]


# -- splitting -----------------------------------------------------------------------------


def _intervals(value: Any) -> np.ndarray:
    if hasattr(value, "start") and hasattr(value, "end"):  # pynapple IntervalSet
        return np.column_stack([np.asarray(value.start, float), np.asarray(value.end, float)])
    arr = np.asarray(value, dtype=float)
    if arr.shape == (2,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"a state's time range must be (start, stop) or (n, 2) intervals, got shape {arr.shape}")
    if np.any(arr[:, 1] <= arr[:, 0]):
        raise ValueError("a state's interval has stop <= start")
    return arr


def _take_bins(data, mask: np.ndarray, name: Any):
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise ValueError(f"state {name!r} holds no time bins")
    return data[idx]  # SpikeData indexing: every break in the bins becomes a trial boundary


def split_by_state(data: Any, states: Any) -> dict:
    """Split a recording into one data object per state.

    Parameters
    ----------
    data : SpikeData, SpikeTrains or dict
        A dict ``{state: data}`` is returned as it is.
    states : array_like or dict
        - one label per time bin (SpikeData), per trial (SpikeData with trials) or per segment
          (SpikeTrains); states are ordered by first appearance;
        - or ``{state: time range}`` with a ``(start, stop)`` pair, ``(n, 2)`` intervals or a
          pynapple ``IntervalSet`` (a SpikeData keeps the bins whose centres fall inside).

        Contiguous runs of a state's bins become separate trials, so no model joins across a gap.

    Returns
    -------
    dict
        ``{state: data}`` in state order.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.density import split_by_state
    >>> d = SpikeData.from_counts(np.ones((6, 2), int), bin_size=0.1)
    >>> parts = split_by_state(d, ["a", "a", "b", "b", "a", "a"])
    >>> {k: (v.n_time, v.n_trial) for k, v in parts.items()}
    {'a': (4, 2), 'b': (2, 1)}
    """
    from ..data import SpikeData

    if isinstance(data, dict):
        if states is not None:
            raise ValueError("give either a dict {state: data} or one recording with states, not both")
        if len(data) < 2:
            raise ValueError(f"need at least two states to compare, got {len(data)}")
        return dict(data)
    if states is None:
        raise ValueError("states is required unless data is a dict {state: data}")
    out: dict = {}
    if isinstance(data, SpikeData):
        if isinstance(states, dict):
            c = data.bin_centers
            for name, rng in states.items():
                iv = _intervals(rng)
                mask = np.zeros(data.n_time, bool)
                for a, b in iv:
                    mask |= (c >= a) & (c < b)
                out[name] = _take_bins(data, mask, name)
        else:
            lab = np.asarray(states)
            if lab.ndim != 1:
                raise ValueError(f"states must be 1-D labels, got shape {lab.shape}")
            if lab.shape[0] == data.n_time:
                per_bin = lab
            elif data.trial_ids is not None and lab.shape[0] == data.n_trial:
                tpos = {t: i for i, t in enumerate(data.trials.tolist())}
                per_bin = lab[np.array([tpos[t] for t in data.trial_ids.tolist()])]
            else:
                raise ValueError(
                    f"states must have one label per time bin ({data.n_time})"
                    + (f" or per trial ({data.n_trial})" if data.trial_ids is not None else "")
                    + f", got {lab.shape[0]}"
                )
            _, first = np.unique(per_bin, return_index=True)
            for name in per_bin[np.sort(first)]:
                key = name.item() if hasattr(name, "item") else name
                out[key] = _take_bins(data, per_bin == name, key)
    elif isinstance(data, SpikeTrains):
        if isinstance(states, dict):
            for name, rng in states.items():
                out[name] = data.restrict(_intervals(rng))
        else:
            lab = np.asarray(states)
            if lab.ndim != 1 or lab.shape[0] != data.n_segment:
                raise ValueError(f"states must have one label per segment ({data.n_segment}), got shape {lab.shape}")
            _, first = np.unique(lab, return_index=True)
            for name in lab[np.sort(first)]:
                key = name.item() if hasattr(name, "item") else name
                out[key] = data.select_segments(np.flatnonzero(lab == name))
    else:
        raise TypeError(f"data must be SpikeData, SpikeTrains or a dict of them, got {type(data).__name__}")
    if len(out) < 2:
        raise ValueError(f"need at least two states to compare, got {list(out)}")
    return out


# -- bootstrap for estimators without posterior statistics --------------------------------


def _resample_units(data, n_units_min: int, n_blocks: int):
    """Index lists of the resampling units of a SpikeData: its trials, or contiguous blocks."""
    seg = data.segment_ids
    units = [np.flatnonzero(seg == s) for s in np.unique(seg)]
    if len(units) >= n_units_min:
        return units
    blocks = []
    for u in units:
        nb = max(1, int(round(n_blocks * u.size / data.n_time)))
        blocks += [b for b in np.array_split(u, nb) if b.size]
    return blocks


def _resampled(data, units, pick):
    from ..data import SpikeData

    idx = np.concatenate([units[i] for i in pick])
    tid = np.repeat(np.arange(len(pick)), [units[i].size for i in pick])
    cov = None if data.covariates is None else data.covariates[idx]
    return SpikeData(data.counts[idx], bin_size=data.bin_size, neuron_ids=data.neuron_ids,
                     covariates=cov, feature_names=data.feature_names if cov is not None else None,
                     trial_ids=tid)


def _bootstrap_statistics(model, data, statistics, key, n_boot, fit_kwargs, min_units, n_blocks, name):
    """Refit clones of `model` on `n_boot` resamples of `data`; draws of ``statistics(refit)``.

    Warnings of the refits are collected and re-issued once each with the number of refits that
    raised them (a resample can make a fit ill-posed; that is worth knowing, once).
    """
    units = _resample_units(data, min_units, n_blocks)
    if len(units) < 2:
        raise ValueError("a state has fewer than 2 resampling units (trials or time blocks)")
    draws: dict = {}
    dims: dict = {}
    caught: Counter = Counter()
    for kb in split_key(key, n_boot):
        k_pick, k_fit = jax.random.split(kb)
        pick = np.asarray(jax.random.choice(k_pick, len(units), (len(units),)))
        m = clone(model)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            m.fit(_resampled(data, units, pick), key=k_fit, **fit_kwargs)
        caught.update((w.category, str(w.message)) for w in record)
        for k, v in statistics(m).items():
            if isinstance(v, xr.DataArray):
                dims.setdefault(k, v.dims)
            draws.setdefault(k, []).append(np.asarray(v, dtype=float))
    for (category, message), count in caught.items():
        warnings.warn(f"{message} [in {count} of {n_boot} bootstrap refits of state {name!r}]", category,
                      stacklevel=3)
    out = {}
    for k, v in draws.items():
        arr = np.stack(v)
        names = dims.get(k) or tuple("component" if i == 0 else f"component_{i}" for i in range(arr.ndim - 1))
        out[k] = xr.DataArray(arr, dims=("draw",) + tuple(names), coords={"draw": np.arange(arr.shape[0])})
    return out


# -- result --------------------------------------------------------------------------------


class StateComparison:
    """Per-state draws of a model's statistics, and their differences from a reference state.

    Attributes
    ----------
    draws : dict of str to xarray.DataArray
        Each ``(state, draw, ...)``.
    states : list
        State names in order.
    reference : object
        The state differences are taken from.
    models : dict
        The model fitted to each state's full data.
    uncertainty : str
        ``"posterior"`` or ``"bootstrap"``.
    """

    def __init__(self, draws: dict, states: list, reference: Any, models: dict, uncertainty: str):
        self.draws = draws
        self.states = states
        self.reference = reference
        self.models = models
        self.uncertainty = uncertainty

    @property
    def statistics(self) -> list[str]:
        """Names of the statistics."""
        return list(self.draws)

    def difference(self, statistic: str, state: Any, reference: Any = None) -> xr.DataArray:
        """Draws of ``statistic[state] - statistic[reference]``, ``(draw, ...)``."""
        ref = self.reference if reference is None else reference
        da = self._get(statistic)
        for s in (state, ref):
            if s not in self.states:
                raise ValueError(f"unknown state {s!r}; states are {self.states}")
        return da.sel(state=state, drop=True) - da.sel(state=ref, drop=True)

    def _get(self, statistic: str) -> xr.DataArray:
        if statistic not in self.draws:
            raise ValueError(f"unknown statistic {statistic!r}; have {self.statistics}")
        return self.draws[statistic]

    @staticmethod
    def _reduce(da: xr.DataArray, prob: float) -> xr.Dataset:
        q = [(1 - prob) / 2, (1 + prob) / 2]
        with warnings.catch_warnings():  # an undefined statistic (all draws NaN) stays NaN
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            qs = da.quantile(q, dim="draw", skipna=True)
            mean = da.mean("draw", skipna=True)
        return xr.Dataset({
            "mean": mean,
            "lower": qs.isel(quantile=0, drop=True),
            "upper": qs.isel(quantile=1, drop=True),
        })

    def summary(self, prob: float = PROB):
        """Posterior mean and equal-tailed `prob` interval of every statistic in every state.

        Returns
        -------
        pandas.DataFrame
            One row per ``(statistic, state, coordinates...)``.
        """
        import pandas as pd

        _check_prob(prob)
        frames = []
        for name, da in self.draws.items():
            df = _frame(self._reduce(da, prob))
            df.insert(0, "statistic", name)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def differences(self, prob: float = PROB, reference: Any = None):
        """Differences of every statistic from the reference state.

        Columns: ``statistic``, ``state``, the statistic's coordinates, ``mean``, ``lower``,
        ``upper`` (the equal-tailed `prob` interval of the difference) and ``p_greater``, the
        posterior probability that the state's value exceeds the reference's.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        _check_prob(prob)
        ref = self.reference if reference is None else reference
        frames = []
        for name in self.draws:
            for s in self.states:
                if s == ref:
                    continue
                d = self.difference(name, s, ref)
                red = self._reduce(d, prob)
                red["p_greater"] = (d > 0).mean("draw").where(d.notnull().any("draw"))
                df = _frame(red)
                df.insert(0, "state", s)
                df.insert(0, "statistic", name)
                frames.append(df)
        out = pd.concat(frames, ignore_index=True)
        out.attrs["reference"] = ref
        return out

    def to_inference_data(self):
        """ArviZ InferenceData: posterior ``(chain=1, draw, state, ...)`` per statistic, and
        ``<statistic>_diff`` ``(chain, draw, contrast, ...)`` against the reference."""
        import arviz as az

        post = {}
        for name, da in self.draws.items():
            post[name] = da.transpose("draw", "state", ...)
            others = [s for s in self.states if s != self.reference]
            diffs = xr.concat([self.difference(name, s) for s in others], dim="contrast")
            post[f"{name}_diff"] = diffs.assign_coords(
                contrast=[f"{s} - {self.reference}" for s in others]).transpose("draw", "contrast", ...)
        ds = xr.Dataset(post).expand_dims(chain=[0])
        ds.attrs["uncertainty"] = self.uncertainty
        ds.attrs["reference"] = str(self.reference)
        return az.InferenceData(posterior=ds)

    def plot(self, statistic: str, **kwargs):
        """:func:`plot_states` for one statistic."""
        return plot_states(self, statistic, **kwargs)

    def __repr__(self) -> str:
        return (f"StateComparison(states={self.states}, reference={self.reference!r}, "
                f"statistics={self.statistics}, uncertainty={self.uncertainty!r})")


def _frame(ds: xr.Dataset):
    """A Dataset as a flat DataFrame, a one-row frame when every variable is a scalar."""
    import pandas as pd

    if not ds.dims:
        return pd.DataFrame([{k: float(v.values) for k, v in ds.data_vars.items()}])
    return ds.to_dataframe().reset_index()


def _check_prob(prob: float) -> None:
    if not 0 < prob < 1:
        raise ValueError(f"prob must be in (0, 1), got {prob}")


# -- the entry point -----------------------------------------------------------------------


def compare_states(
    model: Any,
    data: Any,
    states: Any = None,
    *,
    key: Any = None,
    num_samples: int = 1000,
    reference: Any = None,
    statistics: Any = None,
    n_boot: int = 100,
    min_units: int = 5,
    n_blocks: int = 10,
    fit_kwargs: dict | None = None,
    progress: bool | None = None,
) -> StateComparison:
    """Fit a density model separately in each state and compare its statistics across states.

    Parameters
    ----------
    model : estimator
        An unfitted model: any :mod:`bayesneuro.density` model (``NeuronStatistics``,
        ``RenewalModel``, ``MaxEnt``, ``Dimensionality``, ``PoissonHMM``, ...), or any estimator
        with ``fit(data, *, key, ...)`` (e.g. ``GPFA``, ``PoissonLDS``) that offers
        ``summary_statistics()`` or is given `statistics`. A
        :func:`~bayesneuro.estimator.clone` is fitted per state (and per bootstrap refit);
        `model` itself is left as it is.
    data : SpikeData, SpikeTrains or dict
        One recording split by `states`, or ``{state: data}``.
    states : array_like or dict, optional
        See :func:`split_by_state`.
    key : jax.random key or int
        Required (posterior draws, bootstrap resamples); each state gets its own key
        (:func:`~bayesneuro.estimator.split_key`), used for its fit and its draws.
    num_samples : int
        Draws per state taken from ``posterior_statistics`` (models that have it).
    reference : optional
        The state differences are taken from; default the first.
    statistics : callable, optional
        ``statistics(fitted_model) -> dict[str, array]`` evaluated on bootstrap refits, for
        models without ``posterior_statistics``; default the fitted model's
        ``summary_statistics()``. Values that are ``xarray.DataArray`` keep their dims; others
        get ``component``, ``component_1``, ....
    n_boot : int
        Bootstrap refits per state (bootstrap only).
    min_units, n_blocks : int
        Bootstrap resamples a state's trials when it has at least `min_units` of them, and
        otherwise `n_blocks` contiguous time blocks.
    fit_kwargs : dict, optional
        Passed to every ``fit`` (the method and its options, e.g. ``{"method": "laplace"}``,
        ``{"num_samples": 500}``, ``{"max_iter": 50, "progress": False}``).
    progress : bool, optional
        A tqdm bar over states; default from ``BAYESNEURO_PROGRESS``.

    Returns
    -------
    StateComparison

    Raises
    ------
    ValueError
        Fewer than two states, an empty state, an unknown reference, a model that offers no
        statistics.
    TypeError
        No key, or a model without ``fit``.

    Warns
    -----
    Warnings of bootstrap refits are re-issued once each, with the number of refits that raised
    them.

    Examples
    --------
    Rates before and after a (simulated) drug that doubles neuron 1's rate:

    >>> import numpy as np
    >>> from bayesneuro.density import NeuronStatistics, SpikeTrains, compare_states
    >>> rng = np.random.default_rng(1)
    >>> before = SpikeTrains([np.sort(rng.uniform(0, 100, 500)), np.sort(rng.uniform(0, 100, 500))],
    ...                      segments=[[0, 100]])
    >>> after = SpikeTrains([np.sort(rng.uniform(0, 100, 500)), np.sort(rng.uniform(0, 100, 1000))],
    ...                     segments=[[0, 100]])
    >>> cmp = compare_states(NeuronStatistics(fano_window=10.0), {"before": before, "after": after}, key=0,
    ...                      num_samples=400, fit_kwargs={"num_samples": 400}, progress=False)
    >>> d = cmp.differences().query("statistic == 'rate'")
    >>> [bool(lo < 0 < hi) for lo, hi in zip(d.lower, d.upper)]  # neuron 0 unchanged, 1 up
    [True, False]
    """
    from ..infer.fit import progress_default

    rng = resolve_key(key, needed=True, why="compare_states (posterior draws or bootstrap resamples)")
    parts = split_by_state(data, states)
    names = list(parts)
    ref = names[0] if reference is None else reference
    if ref not in parts:
        raise ValueError(f"reference {ref!r} is not a state; states are {names}")
    fit_kwargs = dict(fit_kwargs or {})
    progress = progress_default() if progress is None else bool(progress)
    if not hasattr(model, "fit"):
        raise TypeError(f"model must be an estimator with fit(data, *, key), got {type(model).__name__}")
    has_post = callable(getattr(model, "posterior_statistics", None))
    if not has_post and statistics is None:
        if not callable(getattr(model, "summary_statistics", None)):
            raise ValueError(
                f"{type(model).__name__} has no posterior_statistics() or summary_statistics(); pass "
                "statistics=a function of the fitted model returning a dict of arrays"
            )

        def statistics(m):
            return m.summary_statistics()

    from .._progress import progress_bar

    per_state: dict = {}
    models: dict = {}
    for name, k in zip(progress_bar(names, desc="states", disable=not progress), split_key(rng, len(names))):
        k_fit, k_stat = jax.random.split(k)
        m = clone(model)
        m.fit(parts[name], key=k_fit, **fit_kwargs)
        if has_post:
            st = m.posterior_statistics(key=k_stat, num_samples=num_samples)
        else:
            st = _bootstrap_statistics(model, parts[name], statistics, k_stat, int(n_boot), fit_kwargs,
                                       int(min_units), int(n_blocks), name)
        models[name] = m
        per_state[name] = st
    stat_names = [k for k in per_state[names[0]] if all(k in per_state[n] for n in names)]
    if not stat_names:
        raise ValueError("the states share no statistics to compare")
    draws = {}
    for k in stat_names:
        arrs = [xr.DataArray(per_state[n][k]) for n in names]
        shapes = {a.shape[1:] for a in arrs}
        if len(shapes) > 1:
            warnings.warn(f"statistic {k!r} has different shapes across states {shapes}; aligning by "
                          "coordinates (missing entries are NaN)", stacklevel=2)
        n_draw = min(a.sizes["draw"] for a in arrs)
        arrs = [a.isel(draw=slice(0, n_draw)).assign_coords(draw=np.arange(n_draw)) for a in arrs]
        draws[k] = xr.concat(arrs, dim=xr.DataArray(names, dims="state", name="state"),
                             join="outer", coords="minimal", compat="override")
    return StateComparison(draws, names, ref, models, "posterior" if has_post else "bootstrap")


# -- plot ----------------------------------------------------------------------------------


def plot_states(comparison: StateComparison, statistic: str, *, prob: float = PROB, ax=None,
                sel: dict | None = None, max_lines: int = 40):
    """Posterior mean and equal-tailed `prob` interval of one statistic across states.

    A scalar statistic is drawn as points with error bars; one with further dims (e.g.
    ``neuron``) as one thin line per coordinate (at most `max_lines`) plus their mean.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    da = comparison._get(statistic)
    if sel:
        da = da.sel(**sel)
    _check_prob(prob)
    red = StateComparison._reduce(da, prob)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    x = np.arange(len(comparison.states))
    other = [d for d in red["mean"].dims if d != "state"]
    if not other:
        m, lo, hi = (red[v].values for v in ("mean", "lower", "upper"))
        # the mean of skewed draws can lie outside their quantile interval: no negative bar
        ax.errorbar(x, m, yerr=np.clip([m - lo, hi - m], 0, None), fmt="o", capsize=4, color="k")
    else:
        flat = red.stack(item=other)
        n = flat.sizes["item"]
        for j in range(min(n, max_lines)):
            m = flat["mean"].isel(item=j).values
            lo, hi = flat["lower"].isel(item=j).values, flat["upper"].isel(item=j).values
            jit = (j / max(n - 1, 1) - 0.5) * 0.2
            ax.errorbar(x + jit, m, yerr=np.clip([m - lo, hi - m], 0, None), fmt="-o", ms=3, lw=0.6, alpha=0.5, capsize=0)
        ax.plot(x, flat["mean"].mean("item").values, "k-s", lw=2, label="mean over " + ", ".join(other))
        ax.legend(frameon=False, fontsize=8)
    ax.set_xticks(x, [str(s) for s in comparison.states])
    ax.set_ylabel(statistic)
    ax.set_title(f"{statistic}: mean and {round(prob * 100)}% interval per state", fontsize=9)
    return ax
