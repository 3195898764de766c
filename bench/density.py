"""Density models: bayesneuro vs elephant (ISI statistics) and sklearn (factor analysis).

Same simulated data for every tool, in one process, each call run once to compile and then timed
as the best of ``--repeats`` runs. Ratios are peer time / bayesneuro time (> 1: bayesneuro faster).

1. **ISI statistics.** Gamma renewal trains (shape 2) of ``n`` neurons at 5-25 Hz over 100 trials:
   elephant's ``cv``, ``lv`` and ``fanofactor`` per neuron (point estimates only), against
   ``NeuronStatistics.fit``, which returns the same point estimates (checked equal) *and* 1,000
   posterior draws of every statistic (a trial bootstrap), and against bayesneuro's own per-neuron
   functions ``isi_cv`` / ``local_variation`` / ``fano_factor`` (point estimates, like elephant).
2. **Factor analysis.** Gaussian data with 5 latents: ``FactorAnalysis(5).fit`` vs sklearn's
   ``FactorAnalysis(5).fit`` (log-likelihood per bin reported for both), and cross-validated
   dimensionality over 0..10 latents with 5 folds: ``cross_validate_dimensionality`` vs a loop of
   sklearn ``cross_val_score`` (same folds).

Usage::

    python bench/density.py --out bench/results/density          # run it alone
    python bench/density.py --quick --out bench/results/density_quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.choose_platform()  # JAX_PLATFORMS=cpu unless --device

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
from _common import loadavg, machine_facts


def best_of(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # compile / warm caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def simulate_trains(n: int, n_trials: int, seed: int = 0):
    from bayesneuro.density import SpikeTrains

    rng = np.random.default_rng(seed)
    rates = rng.uniform(5, 25, n)
    T = 2.0 * n_trials
    times = []
    for r in rates:
        isi = rng.gamma(2.0, 1 / (2 * r), int(r * T * 1.5) + 50)
        t = np.cumsum(isi)
        times.append(t[t < T])
    segments = np.column_stack([np.arange(n_trials) * 2.0, np.arange(n_trials) * 2.0 + 2.0])
    return SpikeTrains(times, segments=segments), segments


def isi_section(n: int, n_trials: int, repeats: int) -> dict:
    import elephant.statistics as es
    import neo

    from bayesneuro.density import (
        NeuronStatistics,
        fano_factor,
        isi_cv,
        local_variation,
    )

    trains, segments = simulate_trains(n, n_trials)
    isis = trains.isis()
    counts = trains.window_counts(2.0)  # one window per trial, as fano_window=None

    def elephant_lv(isi):
        # elephant's lv takes one unbroken ISI sequence: applied per trial, pooled over the pairs
        parts = [np.asarray(isi)[isi.segment == s] for s in np.unique(isi.segment)]
        parts = [p for p in parts if p.size >= 2]
        return np.average([es.lv(p) for p in parts], weights=[p.size - 1 for p in parts])

    def elephant_run():
        cv = [es.cv(i) for i in isis]
        lv = [elephant_lv(i) for i in isis]
        ff = []
        for j, t in enumerate(trains.times):
            sts = [neo.SpikeTrain(t[(t >= a) & (t < b)] - a, t_start=0, t_stop=b - a, units="s")
                   for a, b in segments]
            ff.append(es.fanofactor(sts))
        return np.array(cv), np.array(lv), np.array(ff)

    def own_functions():
        return (np.array([isi_cv(i) for i in isis]), np.array([local_variation(i) for i in isis]),
                fano_factor(counts))

    def full_fit():
        return NeuronStatistics().fit(trains, key=0, num_samples=1000)

    t_el, (cv_e, lv_e, ff_e) = best_of(elephant_run, repeats)
    t_own, (cv_o, lv_o, ff_o) = best_of(own_functions, repeats)
    t_fit, fit = best_of(full_fit, repeats)
    # elephant gets the same within-trial ISIs and per-trial counts, so the estimates must agree
    agree = dict(
        cv=float(np.max(np.abs(cv_e - fit.estimates_["cv"].values))),
        lv=float(np.max(np.abs(lv_e - lv_o))),
        fano=float(np.max(np.abs(ff_e - fit.estimates_["fano"].values))),
    )
    n_spikes = int(sum(t.size for t in trains.times))
    return dict(n_neuron=n, n_trial=n_trials, n_spikes=n_spikes, elephant_s=t_el, functions_s=t_own,
                fit_with_posterior_s=t_fit, ratio_elephant_over_functions=t_el / t_own,
                ratio_elephant_over_fit=t_el / t_fit, max_abs_difference=agree)


def fa_section(T: int, N: int, repeats: int) -> dict:
    from sklearn.decomposition import FactorAnalysis as SkFA
    from sklearn.model_selection import KFold, cross_val_score

    from bayesneuro.density import FactorAnalysis, cross_validate_dimensionality

    rng = np.random.default_rng(1)
    L = rng.normal(size=(N, 5))
    X = rng.normal(size=(T, 5)) @ L.T + rng.normal(size=(T, N)) * rng.uniform(0.5, 2, N)

    t_bn, bn_fa = best_of(lambda: FactorAnalysis(5).fit(X, progress=False), repeats)
    t_sk, sk_fa = best_of(lambda: SkFA(5, random_state=0).fit(X), repeats)
    ll_bn, ll_sk = float(bn_fa.score(X)), float(sk_fa.score(X))

    def bn_cv():  # no trials: 5 contiguous blocks, the same folds as KFold(5)
        return cross_validate_dimensionality(X, max_dim=10, n_folds=5, progress=False)

    def sk_cv():
        return np.array([0.0] + [cross_val_score(SkFA(d, random_state=0), X, cv=KFold(5)).mean()
                                 for d in range(1, 11)])

    t_bn_cv, cv = best_of(bn_cv, max(1, repeats // 2))
    t_sk_cv, sk_scores = best_of(sk_cv, 1)
    return dict(n_time=T, n_neuron=N, fa_bayesneuro_s=t_bn, fa_sklearn_s=t_sk, fa_ratio=t_sk / t_bn,
                ll_per_bin_bayesneuro=ll_bn, ll_per_bin_sklearn=ll_sk, cv_bayesneuro_s=t_bn_cv,
                cv_sklearn_s=t_sk_cv, cv_ratio=t_sk_cv / t_bn_cv, cv_n_dim_bayesneuro=int(cv.n_dim),
                cv_n_dim_sklearn=int(np.argmax(sk_scores[1:]) + 1))


def tables(res: dict) -> str:
    lines = ["# Density benchmark", "", f"machine: {res['machine']}", "", "## ISI statistics", "",
             "| neurons | trials | spikes | elephant (s) | bayesneuro functions (s) | ratio | "
             "NeuronStatistics.fit with 1,000 draws (s) | ratio | max abs diff cv / lv / fano |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["isi"]:
        d = r["max_abs_difference"]
        lines.append(f"| {r['n_neuron']} | {r['n_trial']} | {r['n_spikes']:,} | {r['elephant_s']:.3f} | "
                     f"{r['functions_s']:.3f} | {r['ratio_elephant_over_functions']:.1f}x | "
                     f"{r['fit_with_posterior_s']:.3f} | {r['ratio_elephant_over_fit']:.1f}x | "
                     f"{d['cv']:.1e} / {d['lv']:.1e} / {d['fano']:.1e} |")
    lines += ["", "## Factor analysis", "",
              "| bins | neurons | FA fit: bayesneuro (s) | sklearn (s) | ratio | log-lik/bin bn / sk | "
              "CV 0..10 x 5 folds: bayesneuro (s) | sklearn (s) | ratio | chosen dim bn / sk |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["fa"]:
        lines.append(f"| {r['n_time']:,} | {r['n_neuron']} | {r['fa_bayesneuro_s']:.3f} | {r['fa_sklearn_s']:.3f} | "
                     f"{r['fa_ratio']:.1f}x | {r['ll_per_bin_bayesneuro']:.4f} / {r['ll_per_bin_sklearn']:.4f} | "
                     f"{r['cv_bayesneuro_s']:.2f} | {r['cv_sklearn_s']:.2f} | {r['cv_ratio']:.1f}x | "
                     f"{r['cv_n_dim_bayesneuro']} / {r['cv_n_dim_sklearn']} |")
    lines += ["", f"load average at the end: {res['loadavg_end']}", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    _common.add_device_argument(p)
    a = p.parse_args(argv)
    isi_sizes = [(10, 50)] if a.quick else [(10, 100), (50, 100), (200, 100)]
    fa_sizes = [(5000, 20)] if a.quick else [(20000, 30), (50000, 50)]
    res = {"machine": machine_facts(), "isi": [], "fa": []}
    for n, k in isi_sizes:
        res["isi"].append(isi_section(n, k, a.repeats))
        print(res["isi"][-1], flush=True)
    for T, N in fa_sizes:
        res["fa"].append(fa_section(T, N, a.repeats))
        print(res["fa"][-1], flush=True)
    res["loadavg_end"] = loadavg()
    md = tables(res)
    print(md)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))
        out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
