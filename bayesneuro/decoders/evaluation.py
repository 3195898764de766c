"""Honest evaluation of decoders: k-fold splits without leakage, and accuracy curves.

- :func:`kfold` cuts a recording into contiguous blocks (or whole trials); each fold tests on one
  and trains on the rest, with `gap` bins dropped on the training side of every boundary with
  the test block, and the training blocks kept as separate segments, so that no lag window or
  temporal prior reads across a boundary.
- :func:`cross_validate` fits a fresh clone of a decoder per fold (each with its own key) and
  evaluates it.
- :func:`lag_curve` scores a decoder of the variable at bin ``t`` from spikes at ``t + lag`` for
  each lag (positive lags: spikes after the variable, as for a stimulus; negative: before, as
  for a movement).
- :func:`neuron_curve` scores random subsets of neurons of increasing size.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from ..data import SpikeData
from ..estimator import PROBS, clone, resolve_key, split_key
from ..splits import _piece_labels
from ._inputs import as_spike_data, label_array, target_array
from .lags import check_lags

_TARGET = "__decoding_target__"


def kfold(data: SpikeData, n_folds: int = 5, *, by: str = "time", gap: int = 0) -> list[tuple[SpikeData, SpikeData]]:
    """Train/test pairs for k-fold cross-validation by contiguous blocks or whole trials.

    Parameters
    ----------
    data : SpikeData
    n_folds : int, default 5
    by : {"time", "trials"}
        ``"time"``: ``n_folds`` equal contiguous blocks. ``"trials"``: trials dealt into
        ``n_folds`` contiguous groups in order.
    gap : int, default 0
        ``by="time"``: training bins dropped next to each boundary with the test block (set it
        to the largest lag or filter length used). A trial or segment longer than a block is
        cut there; its training pieces either side become separate segments.

    Returns
    -------
    list of (train, test)

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders.evaluation import kfold
    >>> data = SpikeData.from_counts(np.ones((100, 2)), bin_size=0.1)
    >>> folds = kfold(data, 4, gap=3)
    >>> [(tr.n_time, te.n_time) for tr, te in folds]
    [(72, 25), (69, 25), (69, 25), (72, 25)]
    >>> folds[1][0].n_trial  # the training bins either side of the test block are two segments
    2
    """
    data = as_spike_data(data)
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be a whole number >= 2, got {n_folds}")
    n_folds = int(n_folds)
    if int(gap) != gap or gap < 0:
        raise ValueError(f"gap must be a whole number >= 0, got {gap}")
    out = []
    if by == "trials":
        if data.trial_ids is None:
            raise ValueError("by='trials' needs data with trials; use by='time'")
        if data.n_trial < n_folds:
            raise ValueError(f"{data.n_trial} trials are too few for {n_folds} folds")
        group = np.floor(np.arange(data.n_trial) * n_folds / data.n_trial).astype(int)[data.segment_ids]
        for k in range(n_folds):
            out.append((data._take(np.flatnonzero(group != k)), data._take(np.flatnonzero(group == k))))
        return out
    if by != "time":
        raise ValueError(f"by must be 'time' or 'trials', got {by!r}")
    n = data.n_time
    bounds = np.round(np.linspace(0, n, n_folds + 1)).astype(int)
    if np.any(np.diff(bounds) <= 2 * gap):
        raise ValueError(f"{n} bins are too few for {n_folds} folds with gap={gap}")
    for k in range(n_folds):
        a, b = bounds[k], bounds[k + 1]
        before = np.arange(0, max(a - gap, 0))
        after = np.arange(min(b + gap, n), n)
        idx = np.concatenate([before, after])
        run = np.concatenate([np.zeros(before.size, int), np.ones(after.size, int)])
        train = data._take(idx, trial_ids=_training_labels(data, idx, run))
        test = data._take(np.arange(a, b))
        out.append((train, test))
    return out


def _training_labels(data: SpikeData, idx: np.ndarray, run: np.ndarray) -> np.ndarray | None:
    """Trial labels of a time-fold's training bins ``idx`` (runs ``run``: before/after the test block).

    A trial or segment that spans the whole test block is cut in two non-adjacent pieces; they
    become separate segments, numbered ``0, 1, ...`` in time order (the original ids are kept
    when no trial is cut).
    """
    try:
        return _piece_labels(data, idx, run, "training")
    except ValueError:
        tid = data.trial_ids[idx]
        new_piece = np.r_[True, (run[1:] != run[:-1]) | (tid[1:] != tid[:-1])]
        return np.cumsum(new_piece) - 1


def _metric(ev: dict, metric: str | None) -> float:
    """One number from an ``evaluate`` dict: ``None``/``"score"`` is the log score (nats/bin)."""
    if metric is None or metric in ("score", "mean_log_density"):
        return float(ev["mean_log_density"])
    if metric.startswith("coverage_"):
        return ev["coverage"][float(metric.split("_", 1)[1]) / 100]
    if metric == "r2":
        return float(np.nanmean(ev["r2"]))
    if metric not in ev:
        raise ValueError(
            f"unknown metric {metric!r}; use 'score' or one of {sorted(k for k in ev if k != 'coverage')}"
            " or coverage_90"
        )
    return float(ev[metric])


def _gap_for(decoder: Any) -> int:
    lags = getattr(decoder, "lags", 0)
    return int(np.max(np.abs(check_lags(lags)))) if lags is not None else 0


def _fit_kwargs(fit_kwargs: dict | None) -> dict:
    kw = dict(fit_kwargs or {})
    if "key" in kw:
        raise TypeError("pass key= to the evaluation function itself (it gives each fit its own key), not in fit_kwargs")
    return kw


def cross_validate(
    decoder: Any,
    data: SpikeData,
    target: Any = None,
    *,
    n_folds: int = 5,
    by: str = "time",
    gap: int | None = None,
    key: Any = None,
    metric: str | None = None,
    probs: Sequence[float] = PROBS,
    fit_kwargs: dict | None = None,
) -> dict[str, Any]:
    """Fit a fresh clone of an estimator on each fold's training set and evaluate it on its test set.

    Any estimator of the contract (:mod:`bayesneuro.estimator`) works: a decoder with its
    `target`, or any other model (``PoissonGLM``, ``GPFA``, ``PoissonLDS``, the density models
    of binned counts) with ``target=None``.

    Folds are contiguous blocks or whole trials (:func:`kfold`), with `gap` training bins
    dropped next to each test block and the training blocks kept as separate segments, so no
    lag window or temporal prior reads across a boundary. Each fold fits
    ``bayesneuro.estimator.clone(decoder)`` (the decoder itself is not modified) with its own
    key, ``split_key(key, n_folds)[k]``, so the same `key` reproduces the whole run.

    Parameters
    ----------
    decoder : estimator
        Any decoder, or any other estimator with ``target=None`` (its constructor arguments
        are cloned; it may be fitted or not).
    data : SpikeData
    target : str or sequence of str, optional
        Covariate name(s) of `data` (arrays would not follow the folds); None for estimators
        that take no target.
    n_folds, by
        As in :func:`kfold`.
    gap : int, optional
        Default: the decoder's largest absolute lag.
    key : jax.random key or int, optional
        Split into one key per fold; needed when the decoder's fit draws random numbers
        (e.g. ``RegressionDecoder`` with ``method="laplace"``).
    metric : str, optional
        Entry of the ``evaluate`` dict reported as ``value`` (e.g. ``"median_error"``,
        ``"accuracy"``, ``"r2"``, ``"coverage_90"``); default the score.
    probs : sequence of float, default (0.5, 0.9, 0.95)
        Credible masses whose coverage ``evaluate`` reports.
    fit_kwargs : dict, optional
        Other arguments of ``fit`` (``method``, ``progress``, method options); not ``key``.

    Returns
    -------
    dict
        - ``score``: ndarray ``(n_folds,)``, each fold's ``score`` on its test set, in the
          estimator's ``score_unit`` (decoders: mean log posterior density of the truth,
          nats/bin; higher is always better);
        - ``value``: ndarray ``(n_folds,)``, `metric` per fold (equal to ``score`` by default);
        - ``metric``: the name of ``value`` (``"score"`` by default);
        - ``folds``: list of the ``n_folds`` ``evaluate`` dicts
          (:func:`bayesneuro.decoders.scores.evaluate` for decoders; empty for an estimator
          without ``evaluate``);
        - ``n_bins``: ndarray ``(n_folds,)``, decoded (or scored) test bins per fold;
        - ``unit``: the estimator's ``score_unit``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders import NaiveBayesDecoder
    >>> from bayesneuro.decoders.evaluation import cross_validate
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0, 1, 2000)
    >>> counts = rng.poisson(0.1 + 2 * np.exp(-((x[:, None] - np.linspace(0, 1, 6)) ** 2) / 0.02))
    >>> data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    >>> cv = cross_validate(NaiveBayesDecoder(bins=10, range=(0, 1)), data, "x", n_folds=4, metric="median_error")
    >>> cv["score"].shape, bool(np.all(cv["value"] < 0.2)), cv["metric"]
    ((4,), True, 'median_error')
    """
    kw = _fit_kwargs(fit_kwargs)
    if target is None:
        if getattr(decoder, "_requires_target", False):
            raise TypeError(f"{type(decoder).__name__} decodes a target: pass target= (covariate name(s) of the data)")
        return _cross_validate_untargeted(decoder, data, n_folds=n_folds, by=by, gap=0 if gap is None else gap,
                                          key=key, metric=metric, fit_kwargs=kw)
    if not (isinstance(target, str) or all(isinstance(t, str) for t in target)):
        raise TypeError("cross_validate needs the target as covariate name(s) of the data")
    gap = _gap_for(decoder) if gap is None else gap
    folds = kfold(data, n_folds, by=by, gap=gap)
    keys = split_key(key, len(folds))
    evals = []
    for (train, test), k in zip(folds, keys):
        dec = clone(decoder)
        dec.fit(train, target, key=k, **kw)
        evals.append(dec.evaluate(test, target, probs=probs))
    return {
        "score": np.array([_metric(ev, None) for ev in evals]),
        "value": np.array([_metric(ev, metric) for ev in evals]),
        "metric": "score" if metric is None else metric,
        "folds": evals,
        "n_bins": np.array([ev["n_bins"] for ev in evals]),
        "unit": type(decoder).score_unit,
    }


def _cross_validate_untargeted(est: Any, data: SpikeData, *, n_folds: int, by: str, gap: int, key: Any,
                               metric: str | None, fit_kwargs: dict) -> dict[str, Any]:
    """cross_validate for an estimator that takes no target: ``score(test)`` per fold."""
    folds = kfold(data, n_folds, by=by, gap=gap)
    keys = split_key(key, len(folds))
    scores, values, evals = [], [], []
    for (train, test), k in zip(folds, keys):
        m = clone(est)
        m.fit(train, key=k, **fit_kwargs)
        scores.append(float(m.score(test)))
        ev = m.evaluate(test) if (metric is not None and callable(getattr(m, "evaluate", None))) else {}
        evals.append(ev)
        if metric is None:
            values.append(scores[-1])
        else:
            if metric not in ev:
                raise ValueError(f"unknown metric {metric!r}; {type(est).__name__}.evaluate gives {sorted(ev)}")
            values.append(float(np.nanmean(np.asarray(ev[metric], dtype=float))))
    return {
        "score": np.array(scores),
        "value": np.array(values),
        "metric": "score" if metric is None else metric,
        "folds": evals,
        "n_bins": np.array([te.n_time for _, te in folds]),
        "unit": type(est).score_unit,
    }


def _shifted(data: SpikeData, values: np.ndarray, lag: int) -> SpikeData:
    """Data whose bin ``t`` holds the counts of ``t + lag`` and the target of ``t`` (within segments)."""
    seg = data.segment_ids
    n = data.n_time
    t = np.arange(n)
    j = t + lag
    ok = (j >= 0) & (j < n)
    ok[ok] &= seg[j[ok]] == seg[t[ok]]
    idx = t[ok]
    if idx.size == 0:
        raise ValueError(f"lag {lag} leaves no bin inside its own trial/block")
    base = data._take(idx)
    return SpikeData(
        data.counts[idx + lag], bin_size=data.bin_size, bin_centers=data.bin_centers[idx],
        neuron_ids=data.neuron_ids, covariates=values[idx], feature_names=[f"{_TARGET}{k}" for k in range(values.shape[1])],
        trial_ids=base.trial_ids,
    )


def _names(values: np.ndarray) -> list[str]:
    return [f"{_TARGET}{k}" for k in range(values.shape[1])]


def _values(decoder: Any, data: SpikeData, target: Any) -> np.ndarray:
    if getattr(decoder, "_discrete", False) or getattr(decoder, "family", "gaussian") in ("bernoulli", "categorical"):
        lab = label_array(data, target)
        if lab.dtype.kind not in "iuf":
            raise TypeError("lag and neuron curves need numeric labels for discrete targets")
        return lab.astype(np.float64)[:, None]
    return target_array(data, target)[0]


def lag_curve(
    decoder: Any,
    train: SpikeData,
    test: SpikeData,
    target: Any,
    lags: Sequence[int],
    *,
    metric: str = "median_error",
    key: Any = None,
    fit_kwargs: dict | None = None,
) -> dict[str, Any]:
    """Decoding score as a function of the lag between spikes and variable.

    For each lag, a fresh clone of `decoder` (``bayesneuro.estimator.clone``) decodes the
    variable at bin ``t`` from the counts at ``t + lag`` (pairs are formed within each trial or
    block only).

    Parameters
    ----------
    decoder : Decoder
    train, test : SpikeData
    target : str, sequence of str or array_like
    lags : sequence of int
    metric : str, default "median_error"
        Entry of the ``evaluate`` dict to report (``"score"``: the log score, nats/bin).
    key : jax.random key or int, optional
        Split into one key per lag (``split_key(key, len(lags))``); needed when the decoder's
        fit draws random numbers.
    fit_kwargs : dict, optional
        Other arguments of ``fit``; not ``key``.

    Returns
    -------
    dict
        ``lags``, ``value`` (the metric per lag), ``score`` (the log score per lag),
        ``metric`` and ``scores`` (the ``evaluate`` dicts).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders import NaiveBayesDecoder
    >>> from bayesneuro.decoders.evaluation import lag_curve
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0, 1, 3000)
    >>> rates = 0.1 + 2 * np.exp(-((x[:, None] - np.linspace(0, 1, 6)) ** 2) / 0.02)
    >>> counts = np.roll(rng.poisson(rates), 2, axis=0)  # spikes follow the variable by 2 bins
    >>> data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    >>> train, test, _ = data.split(fractions=(0.7, 0.3))
    >>> curve = lag_curve(NaiveBayesDecoder(bins=10, range=(0, 1)), train, test, "x", [0, 1, 2, 3])
    >>> int(curve["lags"][np.argmin(curve["value"])]), int(curve["lags"][np.argmax(curve["score"])])
    (2, 2)
    """
    kw = _fit_kwargs(fit_kwargs)
    lags = check_lags(lags)
    tr_v = _values(decoder, train, target)
    te_v = _values(decoder, test, target)
    names = _names(tr_v)
    tgt = names[0] if len(names) == 1 else names
    vals, all_scores = [], []
    for lag, k in zip(lags, split_key(key, lags.size)):
        dtr = _shifted(train, tr_v, int(lag))
        dte = _shifted(test, te_v, int(lag))
        dec = clone(decoder)
        dec.fit(dtr, tgt, key=k, **kw)
        ev = dec.evaluate(dte, tgt)
        all_scores.append(ev)
        vals.append(_metric(ev, metric))
    return {"lags": lags, "value": np.array(vals), "score": np.array([_metric(ev, None) for ev in all_scores]),
            "metric": metric, "scores": all_scores}


def neuron_curve(
    decoder: Any,
    train: SpikeData,
    test: SpikeData,
    target: Any,
    n_neurons: Sequence[int],
    *,
    key: Any = None,
    n_repeats: int = 5,
    metric: str = "median_error",
    fit_kwargs: dict | None = None,
) -> dict[str, Any]:
    """Decoding score against the number of neurons, over random subsets.

    Parameters
    ----------
    n_neurons : sequence of int
        Subset sizes (each at most the number of neurons).
    key : jax.random key or int
        Required: draws the subsets (the same key gives the same subsets) and gives each fit
        of a clone of `decoder` its own key.
    n_repeats : int, default 5
        Subsets per size.
    metric : str, default "median_error"
        Entry of the ``evaluate`` dict to report (``"score"``: the log score, nats/bin).
    fit_kwargs : dict, optional
        Other arguments of ``fit``; not ``key``.

    Returns
    -------
    dict
        ``n_neurons``, ``value`` (``(size, repeat)`` metric values), ``mean``, ``sd``, ``metric``.
    """
    kw = _fit_kwargs(fit_kwargs)
    rng_key = resolve_key(key, needed=True, why="neuron_curve (random subsets of neurons)")
    sizes = np.asarray(n_neurons, dtype=int)
    n_all = train.n_neuron
    if np.any(sizes < 1) or np.any(sizes > n_all):
        raise ValueError(f"n_neurons must lie in 1..{n_all}, got {sizes.tolist()}")
    ids = np.asarray(train.neuron_ids)
    tr_v, te_v = _values(decoder, train, target), _values(decoder, test, target)
    names = _names(tr_v)
    tgt = names[0] if len(names) == 1 else names
    dtr0 = _shifted(train, tr_v, 0)
    dte0 = _shifted(test, te_v, 0)
    out = np.empty((sizes.size, n_repeats))
    for i, m in enumerate(sizes):
        for r in range(n_repeats):
            rng_key, sub = jax.random.split(rng_key)
            pick = np.sort(np.asarray(jax.random.permutation(sub, n_all))[:m])
            keep = ids[pick]
            dec = clone(decoder)
            dtr = dtr0.select_neurons(keep)
            active = np.asarray(dtr.counts).sum(axis=0) > 0
            dtr, dte = dtr.select_neurons(keep[active]), dte0.select_neurons(keep[active])
            dec.fit(dtr, tgt, key=jax.random.fold_in(sub, 1), **kw)
            out[i, r] = _metric(dec.evaluate(dte, tgt), metric)
    return {"n_neurons": sizes, "value": out, "mean": out.mean(axis=1), "sd": out.std(axis=1, ddof=1) if n_repeats > 1 else np.zeros(sizes.size), "metric": metric}
