"""Compilation budget: first call, second call and XLA compilations per fit, for every estimator.

A scientist fitting one recording in a notebook waits for JAX to trace and XLA to compile before
the fit itself runs. This script measures that wait for every user-facing estimator at the size of
its notebook (``BAYESNEURO_FAST=1`` sizes, simulated data of the same shape), each in a fresh
Python process:

1. ``first``: the first fit in the process (tracing + compilation + fit);
2. ``second``: the same fit again on the same data (the compiled programs are cached in memory);
3. ``other``: a fit on a second recording of a slightly different length (about 7% more bins, or
   other trial lengths): with shapes bucketed (:func:`bayesneuro._shapes.bucket_length`) it should
   compile nothing.

For each it reports the wall time and the number of XLA backend compilations
(:func:`bayesneuro._shapes.count_compilations`, from ``jax.monitoring`` events). The issue's target
(issue 21, point 1) is ``first <= 3 x second`` on a quiet 2-core machine, and ``other`` compiles
nothing.

``--cache DIR`` enables the persistent compilation cache
(:func:`bayesneuro.enable_compilation_cache`) in every worker: run it twice with the same DIR and the
second run's ``first`` column is what a user sees in a new Python session once the cache is warm.

bayesneuro compiles its programs on a CPU with XLA's elemental code generation
(:mod:`bayesneuro._jit`). ``--xla-defaults`` switches that off in every worker
(``BAYESNEURO_FAST_CPU_COMPILE=0``); ``--ab`` runs each estimator both ways, alternating which goes
first, so the two columns of one run compare under the same load.

Usage::

    nice -n 5 python bench/compile.py --out bench/results/compile
    python bench/compile.py --quick --only glm_map,gpfa
    python bench/compile.py --cache /tmp/bn_cache --only gpfa   # twice: the second run loads programs
    python bench/compile.py --ab --out bench/results/compile_ab  # bayesneuro's CPU options vs XLA's defaults

Float64 (``jax_enable_x64``, as the notebooks), ``JAX_PLATFORMS=cpu`` unless ``--device``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common

_common.choose_platform()  # the CPU unless --device; workers get it from the parent
import numpy as np

RESULTS = HERE / "results"
SEED = 20261206
OTHER = 1.07  # the second recording: about 7% longer
TIMEOUT = 600


# ----------------------------------------------------------------------------- data
# Each maker returns the fit's data for a length factor `f` (1.0: the notebook size; OTHER: the
# second recording). `q` scales the sizes down for --quick.


def _place_data(f: float, q: float, *, n_neurons: int = 20, n_bins: int = 18_000, circular: bool = True):
    """Head-direction-like recording: 20-ms bins, a random walk on the circle, von Mises tuning."""
    from bayesneuro import SpikeData

    rng = np.random.default_rng(SEED)
    T = round(n_bins * q * f)
    angle = np.mod(np.cumsum(rng.normal(0, 0.08, T)), 2 * np.pi) if circular else None
    pref = np.linspace(0, 2 * np.pi, n_neurons, endpoint=False)
    rate = 0.5 + 20 * np.exp(2.0 * (np.cos(angle[:, None] - pref) - 1))
    counts = rng.poisson(rate * 0.02)
    return SpikeData.from_counts(counts, bin_size=0.02, covariates=angle, feature_names=["angle"])


def _line_data(f: float, q: float, *, n_neurons: int = 20, n_bins: int = 18_000):
    """A variable on a line (Kalman / point-process / regression decoders): a bounded random walk."""
    from bayesneuro import SpikeData

    rng = np.random.default_rng(SEED + 1)
    T = round(n_bins * q * f)
    x = np.sin(np.cumsum(rng.normal(0, 0.05, T)))
    centres = np.linspace(-1, 1, n_neurons)
    counts = rng.poisson(0.02 * (2 + 40 * np.exp(-((x[:, None] - centres) ** 2) / (2 * 0.25**2))))
    return SpikeData.from_counts(counts, bin_size=0.02, covariates=x, feature_names=["x"])


def _glm_data(f: float, q: float):
    """Retina-like: 4 cells, white-noise contrast, 8.3-ms frames, the notebook's 2 minutes (train part)."""
    from bayesneuro import SpikeData

    rng = np.random.default_rng(SEED + 2)
    T = round(11_000 * q * f)
    stim = rng.choice([-1.0, 1.0], T)
    k = np.exp(-np.arange(25) / 4.0) * np.sin(np.arange(25) / 3.0)
    drive = np.convolve(stim, k)[:T]
    rate = np.exp(np.log(0.05) + np.outer(drive, [1.0, -1.0, 0.8, -0.6]) * 0.8)
    counts = rng.poisson(np.minimum(rate, 1.0))
    return SpikeData.from_counts(counts, bin_size=1 / 120, covariates=stim, feature_names=["stimulus"])


def _trial_counts(f: float, q: float, *, n_trials: int = 100, n_bins: int = 50, n_neurons: int = 30, seed: int = 3):
    """Motor-cortex-like trials: latent-driven Poisson counts, (trial, time, neuron)."""
    rng = np.random.default_rng(SEED + seed)
    K = max(round(n_trials * q), 8)
    T = round(n_bins * f)
    t = np.arange(T) * 0.02
    latents = np.stack([np.sin(2 * np.pi * t / 0.8 + rng.uniform(0, 6, (K, 1))),
                        np.cos(2 * np.pi * t / 1.3 + rng.uniform(0, 6, (K, 1)))], axis=-1)
    C = rng.normal(0, 0.5, (2, n_neurons))
    return rng.poisson(np.exp(np.log(0.3) + latents @ C))


def _trials_data(f: float, q: float, **kw):
    from bayesneuro import SpikeData

    counts = _trial_counts(f, q, **kw)
    return SpikeData.from_trials(counts, bin_size=0.02)


def _trains(f: float, q: float):
    """Spike trains of 30 neurons over 300 trials of 2 s (other: 7% more trials)."""
    from bayesneuro.density import SpikeTrains

    rng = np.random.default_rng(SEED + 4)
    n_trial = max(round(300 * q * f), 10)
    rates = np.geomspace(0.5, 40, 30)
    times, ids = [], []
    for n, r in enumerate(rates):
        isi = rng.gamma(2.0, 1 / (2 * r), int(r * n_trial * 2 * 1.5) + 10)
        tt = np.cumsum(isi)
        tt = tt[tt < n_trial * 2.0]
        times.append(tt)
        ids.append(np.full(tt.size, n))
    segments = np.column_stack([np.arange(n_trial) * 2.0, np.arange(n_trial) * 2.0 + 2.0])
    return SpikeTrains.from_times(np.concatenate(times), np.concatenate(ids), segments=segments,
                                  neuron_ids=np.arange(30), resolution=0.001)


def _words(f: float, q: float, n_cells: int = 12):
    """Binary words of 12 cells (wake, 70% of 5 minutes of 20-ms bins)."""
    rng = np.random.default_rng(SEED + 5)
    T = round(10_500 * q * f)
    common = rng.random(T) < 0.1
    p = np.linspace(0.02, 0.2, n_cells)
    return ((rng.random((T, n_cells)) < p) | (common[:, None] & (rng.random((T, n_cells)) < 0.3))).astype(np.int8)


def _hmm_counts(f: float, q: float, n_neurons: int = 20):
    """Sleep-like counts: two states, 1,500 bins of 20 ms (the notebook's first half of 1 minute)."""
    rng = np.random.default_rng(SEED + 6)
    T = round(1_500 * max(q, 0.5) * f)
    state = (np.cumsum(rng.random(T) < 0.02) % 2).astype(int)
    rates = np.stack([rng.uniform(0.05, 0.3, n_neurons), rng.uniform(0.3, 1.5, n_neurons)])
    return rng.poisson(rates[state])


def _isis(f: float, q: float):
    """ISIs of 4 neurons (a few thousand each)."""
    rng = np.random.default_rng(SEED + 7)
    return [rng.gamma(2.0 + i, 0.01, round((1500 + 400 * i) * max(q, 0.25) * f)) for i in range(4)]


def _features(f: float, q: float):
    """Neuron features (30 neurons x 5: log rate, CV, Lv, log Fano, burst index); other: 32 neurons."""
    rng = np.random.default_rng(SEED + 8)
    n = round(30 * f)
    centre = np.where(np.arange(n)[:, None] < n // 2, 0.0, 2.0)
    return centre + rng.normal(0, 0.4, (n, 5))


# ----------------------------------------------------------------------------- estimators


def _glm(method: str, filter_mode: str = "fft"):
    def make(f, q):
        return _glm_data(f, q)

    def fit(data):
        import bayesneuro as bn
        from bayesneuro.glm.priors import Ridge

        glm = bn.PoissonGLM(stimulus_basis=bn.bases.RaisedCosineLog(8, window=25, history=False),
                            history_basis=bn.bases.RaisedCosineLog(6, window=15), coupling=True,
                            prior=Ridge(1.0), filter_mode=filter_mode)
        kw = {"key": 10, "num_samples": 300} if method == "laplace" else {}
        return glm.fit(data, method=method, progress=False, **kw)

    return make, fit, f"PoissonGLM(stimulus 8 + history 6, coupling, Ridge, filter_mode={filter_mode!r}).fit(method={method!r})"


def _gpfa(observation: str):
    def make(f, q):
        return _trials_data(f, q)

    def fit(data):
        import bayesneuro as bn

        if observation == "poisson":
            return bn.GPFA(2, observation="poisson").fit(data, method="map", max_iter=30, progress=False)
        return bn.GPFA(4).fit(data, max_iter=30, progress=False)

    what = ("GPFA(2, observation='poisson').fit(method='map', max_iter=30)" if observation == "poisson"
            else "GPFA(4).fit(max_iter=30)")
    return make, fit, what


def _plds():
    def fit(data):
        import bayesneuro as bn

        return bn.PoissonLDS(4).fit(data, max_iter=20, progress=False)

    return _trials_data, fit, "PoissonLDS(4).fit(max_iter=20)"


def _lds():
    def make(f, q):
        counts = _trial_counts(f, q)
        return np.sqrt(counts.astype(float))

    def fit(y):
        from bayesneuro.latent.kalman import fit_lds_em, init_lds_params

        trials = list(y)
        return fit_lds_em(init_lds_params(trials, 4), trials, max_iter=20, progress=False)

    return make, fit, "latent.kalman.fit_lds_em(init_lds_params(sqrt counts, 4), max_iter=20)"


def _hmm():
    def fit(x):
        from bayesneuro.density import PoissonHMM

        return PoissonHMM(2).fit(x, key=11, bin_size=0.02, n_restarts=2, progress=False)

    return _hmm_counts, fit, "PoissonHMM(2).fit(key, n_restarts=2)"


def _maxent():
    def fit(w):
        from bayesneuro.density import MaxEnt

        return MaxEnt("ising").fit(w, key=7, progress=False)

    return _words, fit, "MaxEnt('ising').fit(12 cells)"


def _stats():
    def fit(tr):
        from bayesneuro.density import NeuronStatistics

        return NeuronStatistics(refractory=0.0015, burst_isi=0.006).fit(tr, key=0, num_samples=300)

    return _trains, fit, "NeuronStatistics().fit(30 neurons x 300 trials, num_samples=300)"


def _types():
    def fit(x):
        import warnings

        from bayesneuro.density import NeuronTypes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few neurons: the Pareto-k fallback warning
            return NeuronTypes(max_types=4).fit(x, key=3, progress=False)

    return _features, fit, "NeuronTypes(max_types=4).fit(30 neurons x 5 features)"


def _counts2d(f, q):
    c = _trial_counts(f, q, n_trials=300, n_bins=100, n_neurons=25, seed=9)
    from bayesneuro import SpikeData

    return SpikeData.from_trials(c, bin_size=0.02)


def _dim():
    def fit(data):
        from bayesneuro.density import Dimensionality

        # fewer bootstrap draws than the notebook's 30 (the same programs at a smaller batch size;
        # the draws only repeat the EM) so that the whole benchmark stays within minutes
        return Dimensionality(max_dim=6).fit(data, key=4, n_boot=8, progress=False)

    return _counts2d, fit, "Dimensionality(max_dim=6).fit(n_boot=8)"


def _fa():
    def fit(data):
        from bayesneuro.density import FactorAnalysis

        return FactorAnalysis(3).fit(data, progress=False)

    return _counts2d, fit, "FactorAnalysis(3).fit()"


def _renewal():
    def fit(isis):
        from bayesneuro.density import RenewalModel

        return RenewalModel("gamma").fit(isis, key=2, num_samples=200, progress=False)

    return _isis, fit, "RenewalModel('gamma').fit(4 neurons, num_samples=200)"


def _decoder(kind: str):
    def make(f, q):
        return _place_data(f, q) if kind in ("naive_bayes", "state_space", "tuning") else _line_data(f, q)

    def fit(data):
        import numpy as np

        from bayesneuro import decoders as d

        if kind == "naive_bayes":
            return d.NaiveBayesDecoder(bins=60, circular=True, sigma=np.deg2rad(6)).fit(data, "angle")
        if kind == "state_space":
            return d.StateSpaceDecoder(bins=60, circular=True, sigma=np.deg2rad(6), point="mean").fit(data, "angle")
        if kind == "tuning":
            grid = d.Grid.regular(bins=60, range=(0, 2 * np.pi), names=["angle"], circular=True)
            return d.estimate_tuning_curves(data.counts, np.asarray(data.covariates)[:, :1], grid, data.bin_size,
                                            method="glm", n_basis=20)
        if kind == "kalman":
            return d.KalmanDecoder().fit(data, "x")
        if kind == "point_process":
            return d.PointProcessDecoder().fit(data, "x")
        if kind == "regression":
            return d.RegressionDecoder(lags=[-2, -1, 0, 1, 2], transform="sqrt").fit(
                data, "x", method="laplace", key=1, num_samples=200, progress=False)
        raise ValueError(kind)

    what = {"naive_bayes": "NaiveBayesDecoder(bins=60, circular, sigma=6 deg).fit",
            "state_space": "StateSpaceDecoder(bins=60, circular, sigma=6 deg).fit",
            "tuning": "estimate_tuning_curves(method='glm', n_basis=20), 60 cells",
            "kalman": "KalmanDecoder().fit", "point_process": "PointProcessDecoder().fit",
            "regression": "RegressionDecoder(lags=-2..2, sqrt).fit(method='laplace', 200 draws)"}[kind]
    return make, fit, what


ESTIMATORS = {
    "glm_map": lambda: _glm("map"),
    "glm_map_design": lambda: _glm("map", "design"),
    "glm_laplace": lambda: _glm("laplace"),
    "gpfa": lambda: _gpfa("gaussian"),
    "gpfa_poisson": lambda: _gpfa("poisson"),
    "plds": _plds,
    "lds_em": _lds,
    "hmm": _hmm,
    "maxent": _maxent,
    "neuron_statistics": _stats,
    "neuron_types": _types,
    "dimensionality": _dim,
    "factor_analysis": _fa,
    "renewal": _renewal,
    "naive_bayes": lambda: _decoder("naive_bayes"),
    "state_space": lambda: _decoder("state_space"),
    "tuning_curves": lambda: _decoder("tuning"),
    "kalman": lambda: _decoder("kalman"),
    "point_process": lambda: _decoder("point_process"),
    "regression": lambda: _decoder("regression"),
}


def _shape_of(x) -> str:
    if hasattr(x, "counts") and hasattr(x, "n_time"):
        c = np.asarray(x.counts)
        return "x".join(map(str, c.shape))
    if hasattr(x, "n_neurons") and hasattr(x, "segments"):
        return f"{x.n_neurons} trains, {len(np.asarray(x.segments))} segments"
    if isinstance(x, list):
        return "+".join(str(len(v)) for v in x) + " ISIs"
    return "x".join(map(str, np.shape(x)))


# ----------------------------------------------------------------------------- worker


def run_worker(spec: dict) -> None:
    """Subprocess entry point: fit one estimator three times, count compilations, save the record."""
    import warnings

    import jax

    jax.config.update("jax_enable_x64", True)
    if not spec["device"]:
        jax.config.update("jax_platforms", "cpu")
    if spec.get("cache"):
        import bayesneuro as bn

        bn.enable_compilation_cache(spec["cache"])
    import bayesneuro.decoders
    import bayesneuro.density
    import bayesneuro.glm
    import bayesneuro.infer
    import bayesneuro.latent  # noqa: F401  (a user has imported these before the first fit: not timed)
    from bayesneuro._shapes import count_compilations

    make, fit, what = ESTIMATORS[spec["name"]]()
    q = spec["scale"]
    data = make(1.0, q)
    other = make(OTHER, q)
    hits = [0]
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.__setitem__(0, hits[0] + 1) if name == "/jax/compilation_cache/cache_hits" else None)
    devices = [str(d) for d in jax.devices()]
    _ = jax.numpy.ones(3).sum().block_until_ready()  # start the backend outside the timings
    calls = {}
    for label, x in (("first", data), ("second", data), ("other", other)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hits[0] = 0
            with count_compilations() as c:
                t0 = time.perf_counter()
                fit(x)
                wall = time.perf_counter() - t0
        calls[label] = {"wall_s": wall, "compilations": c.compilations, "compile_s": c.seconds,
                        "cache_hits": hits[0]}
    result = {"name": spec["name"], "what": what, "data": _shape_of(data), "other_data": _shape_of(other),
              "calls": calls, "devices": devices, "peak_rss_mib": _common.peak_rss_mib(),
              "versions": {"jax": jax.__version__, "numpy": np.__version__}}
    Path(spec["out"] + ".json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- report


def table(records: list[dict]) -> str:
    lines = ["| estimator | data | first s | second s | first/second | compiles 1st | compiles 2nd | other-length s | compiles other | load 1 min |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error'][:150]} | | | | | | | | |")
            continue
        c = r["calls"]
        ratio = c["first"]["wall_s"] / max(c["second"]["wall_s"], 1e-9)
        flag = "" if ratio <= 3 else " **"
        lines.append(
            f"| {r['name']} | {r['data']} (other {r['other_data']}) | {c['first']['wall_s']:.2f} | "
            f"{c['second']['wall_s']:.2f} | {ratio:.1f}{flag} | {c['first']['compilations']} | "
            f"{c['second']['compilations']} | {c['other']['wall_s']:.2f} | {c['other']['compilations']} | "
            f"{r['loadavg_1min_before_after'][0]:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data (a smoke test)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(ESTIMATORS)}")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/compile[_quick])")
    parser.add_argument("--device", action="store_true", help="let JAX use its default platform (GPU) instead of the CPU")
    parser.add_argument("--cache", default=None, help="persistent compilation cache directory for every worker")
    parser.add_argument("--xla-defaults", action="store_true",
                        help="compile with XLA's default CPU code generation (BAYESNEURO_FAST_CPU_COMPILE=0)")
    parser.add_argument("--ab", action="store_true",
                        help="run each estimator twice, with bayesneuro's CPU compile options and with XLA's "
                             "defaults, in alternating order (rows marked 'XLA defaults')")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return
    names = args.only.split(",") if args.only else list(ESTIMATORS)
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        parser.error(f"unknown estimators {unknown}; choose from {', '.join(ESTIMATORS)}")
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else RESULTS / ("compile_quick" if args.quick else "compile")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not args.device:
        env["JAX_PLATFORMS"] = "cpu"
    if args.xla_defaults:
        env["BAYESNEURO_FAST_CPU_COMPILE"] = "0"
    facts = _common.machine_facts()
    records = []
    t_all = time.perf_counter()

    def write() -> str:
        hit_note = ""
        if args.cache:
            hit_note = " Persistent-cache hits (first call): " + ", ".join(
                f"{r['name']} {r['calls']['first'].get('cache_hits', 0)}" for r in records if "calls" in r) + "."
        ran = [r for r in records if "devices" in r]
        results = {"mode": mode, "device": args.device, "cache": args.cache, "machine": facts,
                   "loadavg_at_end": _common.loadavg(), "total_s": time.perf_counter() - t_all,
                   "devices": ran[0]["devices"] if ran else ["?"],
                   "versions": ran[0]["versions"] if ran else {}, "records": records}
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        head = (f"# Compilation budget ({mode})\n\n"
                f"{facts['platform']}, {facts.get('cpus_usable', facts['cpus'])} usable CPUs, Python {facts['python']}, "
                f"jax {results['versions'].get('jax', '?')} ({', '.join(results['devices'])}); float64; "
                f"{'JAX default platform' if args.device else 'JAX_PLATFORMS=cpu'}"
                f"{'; persistent cache ' + args.cache if args.cache else ''}"
                f"{'; XLA default CPU code generation (BAYESNEURO_FAST_CPU_COMPILE=0)' if args.xla_defaults else ''}"
                f"{'; each estimator with and without bayesneuro CPU compile options, alternating' if args.ab else ''}"
                ". Load average at start "
                f"{facts['loadavg_at_start']}, at end {results['loadavg_at_end']} (other jobs inflate timings). "
                f"Total {results['total_s']:.0f} s.\n\n"
                "Each estimator runs in a fresh process: `first` is its first fit (tracing + XLA compilation + "
                "fit), `second` the same fit again, `other` a fit on a second recording about 7% longer "
                "(or with one more neuron/trial). `compiles`: XLA backend compilations in that call "
                "(`bayesneuro._shapes.count_compilations`; a program loaded from the persistent cache counts "
                "too). `**`: first > 3 x second (the issue's target)." + hit_note + "\n\n")
        body = table(records)
        whats = "\n".join(f"- `{r['name']}`: {r.get('what', '')}" for r in records)
        out.with_suffix(".md").write_text(head + body + "\n\nFits:\n\n" + whats + "\n")
        return body

    with tempfile.TemporaryDirectory() as work:
        runs = [(name, False) for name in names]
        if args.ab:  # alternate which arm goes first, so drift in the machine's load hits both
            runs = [(name, d) for i, name in enumerate(names) for d in ((False, True) if i % 2 == 0 else (True, False))]
        for name, defaults in runs:
            spec = {"name": name, "scale": 0.25 if args.quick else 1.0, "device": args.device,
                    "cache": args.cache, "out": str(Path(work) / name)}
            run_env = dict(env, BAYESNEURO_FAST_CPU_COMPILE="0") if defaults else env
            rec = {**_common.launch_worker(__file__, spec, timeout=TIMEOUT, env=run_env),
                   "name": name + (" (XLA defaults)" if defaults else "")}
            records.append(rec)
            if "error" in rec:
                print(f"{name}: {rec['error']}", flush=True)
            else:
                c = rec["calls"]
                print(f"{rec['name']:18s} first {c['first']['wall_s']:7.2f} s ({c['first']['compilations']:3d} compiles) "
                      f"second {c['second']['wall_s']:6.2f} s ({c['second']['compilations']}) "
                      f"other {c['other']['wall_s']:6.2f} s ({c['other']['compilations']} compiles)  "
                      f"load {rec['loadavg_1min_before_after'][0]:.1f}", flush=True)
            write()  # partial results after each estimator
    body = write()
    print(body)
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
