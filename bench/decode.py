"""Benchmark: Bayesian (naive-Bayes and state-space) decoding of a 1-D or 2-D variable on a grid.

The same simulated data (Gaussian place fields, Poisson counts along a reflecting random walk in
the unit interval or square) are decoded by

- ``bayesneuro``: ``NaiveBayesDecoder.from_tuning_curves(tc).decode(SpikeData.from_counts(...))``
  with the TRUE tuning curves ``tc = TuningCurves(rates, Grid.regular(shape, (0, 1)), occupancy=1)``
  (uniform prior; Poisson likelihood, untempered: ``from_tuning_curves``' model); its posterior
  ``.log_prob`` ``(time, G)`` is computed eagerly;
- ``bayesneuro_nb``: the same with the negative-binomial likelihood the fitted decoders use by
  default (``dispersion=2`` for every neuron), a different model: its posterior is not compared;
- ``bayesneuro_ss``: ``StateSpaceDecoder.from_tuning_curves(tc, sigma_walk=WALK_SD).decode(...)``:
  forward-backward smoothing with a Gaussian random-walk prior (Poisson likelihood; a different
  model, so its posterior is not compared; its decoding error is);
- ``pynapple``: ``nap.decode_bayes`` (builds a ``(time, G, neuron)`` array, so it runs only where
  ``3 * T * G * N * 8`` bytes fit in ``--pynapple-max-gb``; 1-D only);
- ``numpy``: the three-line plain numpy version, ``counts @ log(rates dt) - sum(rates dt)`` then
  ``- logsumexp`` (scipy), in the row's dtype, in blocks of 65,536 bins.

Every size runs in float64 (``jax_enable_x64``) and float32 (x64 off; numpy in float32 too);
posteriors are compared (max abs difference of probabilities) on the first ``min(T, 10,000)``
bins against a float64 numpy reference recomputed by the parent, so the float32 rows state the
float32 error.

Every tool x size x dtype runs in a fresh subprocess (``bench/_common.py``): the data are loaded
and the tool's inputs built, the memory then is the *baseline*, the tool is called twice (the
first call includes JIT compilation), and ``getrusage`` gives the peak RSS. The 1-minute load
average before each run is stored. ``JAX_PLATFORMS=cpu`` unless ``--device``.

Usage::

    python bench/decode.py --quick                 # smoke test
    python bench/decode.py                         # default sizes (about 6 minutes alone)
    python bench/decode.py --full                  # adds 10^6 bins (100-400 cells), 2x10^5 (1,600)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if "--device" not in sys.argv and "--_worker" not in sys.argv:  # workers get it from the parent
    os.environ["JAX_PLATFORMS"] = "cpu"

import _common
import numpy as np

RESULTS = HERE / "results"

# ----------------------------------------------------------------------------- settings

DT = 0.02  # bin size, seconds
WALK_SD = 0.01  # random-walk step sd per bin, units of the variable (range (0, 1)); also sigma_walk
SEED = 20240917
HEAD = 10_000  # bins whose posteriors are saved and compared
PYNAPPLE_FACTOR = 3  # pynapple's peak ~ 3 arrays of (time, G, neuron) float64
NUMPY_BLOCK = 65_536
TOOLS = ["bayesneuro", "bayesneuro_ss", "bayesneuro_nb", "pynapple", "numpy"]
NB_DISPERSION = 2.0
DTYPES = ("float64", "float32")

# (neurons, grid shape, bins); a 2-D shape is (cells per side, cells per side)
SIZES = {
    "quick": [(20, (50,), 1_000), (30, (8, 8), 2_000)],
    "default": [(50, (100,), 2_000),
                (200, (100,), 10_000), (200, (400,), 100_000), (200, (1_600,), 100_000),
                (200, (10, 10), 10_000), (200, (20, 20), 100_000), (200, (40, 40), 100_000)],
    "full": [(200, (100,), 1_000_000), (200, (400,), 1_000_000), (200, (1_600,), 200_000),
             (200, (20, 20), 1_000_000), (200, (40, 40), 200_000)],
}
TIMEOUT = {"quick": 600, "default": 1200, "full": 3600}


# ----------------------------------------------------------------------------- simulation


def trajectory(n_bins: int, dim: int = 1, seed: int = SEED) -> np.ndarray:
    """A random walk in [0, 1]^dim reflected at the edges, step sd ``WALK_SD``; shape ``(n_bins, dim)``.

    The draw is sequential, so a shorter recording is a prefix of a longer one.
    """
    rng = np.random.default_rng([seed, dim])
    x = 0.5 + np.cumsum(rng.normal(0.0, WALK_SD, (n_bins, dim)), axis=0)
    x = np.mod(x, 2.0)
    return np.where(x > 1.0, 2.0 - x, x)


def place_fields(n_neurons: int, dim: int = 1, seed: int = SEED) -> dict:
    """Gaussian place-field parameters: centre ``(neuron, dim)``, width, peak and baseline rate (Hz)."""
    rng = np.random.default_rng([seed, n_neurons, dim])
    return {
        "centre": rng.uniform(0.0, 1.0, (n_neurons, dim)),
        "width": rng.uniform(0.03, 0.10, n_neurons) * (1 if dim == 1 else 1.5),
        "peak": rng.uniform(5.0, 25.0, n_neurons),
        "base": rng.uniform(0.5, 2.0, n_neurons),  # strictly positive rates everywhere
    }


def rates_at(x: np.ndarray, fields: dict) -> np.ndarray:
    """Rates (Hz) of every neuron at positions `x` ``(T, dim)``, shape ``(T, neuron)``."""
    d2 = np.zeros((x.shape[0], fields["centre"].shape[0]))
    for k in range(x.shape[1]):
        d2 += ((x[:, k, None] - fields["centre"][None, :, k]) / fields["width"][None, :]) ** 2
    return fields["base"] + fields["peak"] * np.exp(-0.5 * d2)


def grid_centres(shape: tuple) -> np.ndarray:
    """Cell centres of ``Grid.regular(bins=shape, range=[(0, 1)] * dim)`` in flat (C) order, ``(G, dim)``."""
    axes = [(np.arange(n) + 0.5) / n for n in shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def tuning_rates(n_neurons: int, shape: tuple) -> np.ndarray:
    """The true tuning curves on the grid, ``(neuron, G)`` in Hz."""
    return rates_at(grid_centres(shape), place_fields(n_neurons, len(shape))).T.copy()


def counts_path(cache: Path, n: int, dim: int, t: int) -> Path:
    return cache / f"counts_N{n}_D{dim}_T{t}_s{SEED}.npy"


def traj_path(cache: Path, dim: int, t: int) -> Path:
    return cache / f"x_D{dim}_T{t}_s{SEED}.npy"


def prepare_data(sizes: list, cache: Path) -> dict:
    """Simulate (or reuse) the counts of every (neurons, dim, bins), int16, cached as ``.npy``."""
    cache.mkdir(parents=True, exist_ok=True)
    stats = {}
    for n, shape, t in sizes:
        dim = len(shape)
        key = f"N{n}_D{dim}_T{t}"
        if key in stats:
            continue
        if not counts_path(cache, n, dim, t).exists() or not traj_path(cache, dim, t).exists():
            t0 = time.perf_counter()
            x = trajectory(t, dim)
            fields = place_fields(n, dim)
            rng = np.random.default_rng([SEED, n, dim, 1])
            counts = np.empty((t, n), np.int16)
            for a in range(0, t, 100_000):  # bounded memory for 10^6 bins
                b = min(a + 100_000, t)
                counts[a:b] = rng.poisson(rates_at(x[a:b], fields) * DT)
            np.save(traj_path(cache, dim, t), x)
            np.save(counts_path(cache, n, dim, t), counts)
            print(f"  simulated N={n}, dim={dim}, T={t:,} in {time.perf_counter() - t0:.1f} s", flush=True)
        counts = np.load(counts_path(cache, n, dim, t), mmap_mode="r")
        rate = np.asarray(counts[: min(t, 200_000)], dtype=np.float64).mean(0) / DT
        stats[key] = {"rate_min_hz": float(rate.min()), "rate_median_hz": float(np.median(rate)),
                      "rate_max_hz": float(rate.max()), "max_count": int(np.max(counts[: min(t, 200_000)]))}
    return stats


# ----------------------------------------------------------------------------- reference


def numpy_log_posterior(counts: np.ndarray, rates: np.ndarray, dt: float, block: int | None = NUMPY_BLOCK,
                        dtype=np.float64) -> np.ndarray:
    """Plain numpy naive Bayes: ``(time, G)`` log posterior under a uniform prior, in `dtype`.

    ``counts @ log(rates dt) - sum_n rates dt`` minus its ``logsumexp`` over cells, in blocks of
    `block` bins (None: one block).
    """
    from scipy.special import logsumexp

    rdt = np.asarray(rates, dtype=np.float64) * dt  # (neuron, G)
    log_rdt = np.log(rdt).astype(dtype)
    total = rdt.sum(axis=0).astype(dtype)
    T = counts.shape[0]
    block = T if block is None else block
    out = np.empty((T, rates.shape[1]), dtype=dtype)
    for a in range(0, T, block):
        b = min(a + block, T)
        ll = np.asarray(counts[a:b], dtype=dtype) @ log_rdt
        ll -= total
        ll -= logsumexp(ll, axis=1, keepdims=True)
        out[a:b] = ll
    return out


# ----------------------------------------------------------------------------- workers (subprocess)


def _jax(device: bool, dtype: str):
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    if not device:
        jax.config.update("jax_platforms", "cpu")
    return jax


def _make_tc(rates: np.ndarray, shape: tuple):
    from bayesneuro.decoders import Grid, TuningCurves

    G = rates.shape[1]
    names = ["x", "y"][: len(shape)]
    grid = Grid.regular(bins=list(shape), range=[(0, 1)] * len(shape), names=names)
    return TuningCurves(rates, grid, occupancy=np.ones(G))


def _setup_bayesneuro(counts, rates, options):
    from bayesneuro import SpikeData
    from bayesneuro.decoders import NaiveBayesDecoder, StateSpaceDecoder

    tc = _make_tc(rates, tuple(options["shape"]))
    if options["tool"] == "bayesneuro_ss":
        dec = StateSpaceDecoder.from_tuning_curves(tc, sigma_walk=WALK_SD)
        settings = f"StateSpaceDecoder.from_tuning_curves(tc, sigma_walk={WALK_SD}).decode(SpikeData)"
    elif options["tool"] == "bayesneuro_nb":
        disp = np.full(rates.shape[0], NB_DISPERSION)
        dec = NaiveBayesDecoder.from_tuning_curves(tc, dispersion=disp)
        settings = f"NaiveBayesDecoder.from_tuning_curves(tc, dispersion={NB_DISPERSION}).decode(SpikeData)"
    else:
        dec = NaiveBayesDecoder.from_tuning_curves(tc)
        settings = "NaiveBayesDecoder.from_tuning_curves(tc).decode(SpikeData)"
    data = SpikeData.from_counts(counts, bin_size=DT)

    def call():
        post = dec.decode(data)
        return post.log_prob, True  # (array, is_log)

    return call, settings, {}


def _setup_pynapple(counts, rates, options):
    import pynapple as nap

    tc = _make_tc(rates, tuple(options["shape"]))
    tc_xr = tc.to_pynapple()
    T = counts.shape[0]
    t = (np.arange(T) + 0.5) * DT
    frame = nap.TsdFrame(t=t, d=counts, columns=np.asarray(tc.neuron_ids))
    epochs = nap.IntervalSet(start=0.0, end=T * DT)

    def call():
        _, p = nap.decode_bayes(tc_xr, frame, epochs, DT)
        return np.asarray(p.values).reshape(T, -1), False

    return call, "nap.decode_bayes(tc.to_pynapple(), TsdFrame(counts), IntervalSet(0, T dt), bin_size)", {}


def _setup_numpy(counts, rates, options):
    dtype = np.dtype(options["dtype"])

    def call():
        return numpy_log_posterior(counts, rates, DT, dtype=dtype), True

    return call, f"numpy_log_posterior ({options['dtype']}, blocks of {NUMPY_BLOCK} bins)", {}


SETUP = {"bayesneuro": _setup_bayesneuro, "bayesneuro_ss": _setup_bayesneuro, "bayesneuro_nb": _setup_bayesneuro,
         "pynapple": _setup_pynapple, "numpy": _setup_numpy}


def run_worker(spec: dict) -> None:
    """Subprocess entry point: decode with one tool twice, save timings, memory and posterior rows."""
    jax = _jax(spec["device"], spec["dtype"])
    n, shape, T = spec["n_neurons"], tuple(spec["shape"]), spec["n_bins"]
    counts = np.load(spec["counts"])  # fully in memory (int16), the same for every tool
    rates = tuning_rates(n, shape)
    call, settings, extra = SETUP[spec["tool"]](counts, rates, spec)
    compile_s = [0.0]
    n_compiles = [0]

    def on_event(name, secs, **_):  # JAX tracing + lowering + XLA compilation inside a call
        if name.startswith("/jax/core/compile/"):
            compile_s[0] += secs
        if name == "/jax/core/compile/backend_compile_duration":
            n_compiles[0] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    devices = [str(d) for d in jax.devices()]  # start the backend before the baseline, in every worker
    rss_base = _common.current_rss_mib()
    calls = []
    head = best = None
    for _ in range(spec["repeats"]):
        head = best = None  # release the previous call's posterior before the next one
        compile_s[0] = 0.0
        n_compiles[0] = 0
        t0 = time.perf_counter()
        c0 = time.process_time()
        arr, is_log = call()
        wall = time.perf_counter() - t0
        calls.append({"wall_s": wall, "cpu_s": time.process_time() - c0, "jax_compile_s": compile_s[0],
                      "xla_compilations": n_compiles[0]})
        h = min(T, HEAD)
        head = np.exp(np.asarray(arr[:h], np.float64)) if is_log else np.array(arr[:h], np.float64)
        best = np.argmax(arr, axis=1).astype(np.int32)
        out_dtype = str(arr.dtype)
        del arr
    np.savez(spec["out"] + ".npz", head=head, map_index=best)
    import pynapple

    result = {
        "calls": calls, "settings": settings, **extra, "output_dtype": out_dtype,
        "peak_rss_mib": _common.peak_rss_mib(), "rss_baseline_mib": rss_base,
        "devices": devices, "jax_dtype": str(jax.numpy.zeros(()).dtype),
        "versions": {"jax": jax.__version__, "pynapple": pynapple.__version__, "numpy": np.__version__},
    }
    Path(spec["out"] + ".json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- running


def n_cells(shape) -> int:
    return int(np.prod(shape))


def shape_label(shape) -> str:
    return f"{shape[0]:,}" if len(shape) == 1 else "x".join(str(s) for s in shape)


def pynapple_gb(n: int, G: int, T: int) -> float:
    """Estimated peak memory of ``decode_bayes`` in GB (decimal)."""
    return PYNAPPLE_FACTOR * T * G * n * 8 / 1e9


def run_all(sizes, tools, dtypes, cache: Path, work: Path, *, mode: str, device: bool, max_gb: float,
            repeats: int) -> list[dict]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if not device:
        env["JAX_PLATFORMS"] = "cpu"
    records = []
    for n, shape, T in sizes:
        G = n_cells(shape)
        for dtype in dtypes:
            for tool in tools:
                rec = {"tool": tool, "n_neurons": n, "shape": list(shape), "n_cells": G, "n_bins": T, "dtype": dtype}
                label = f"  {tool:14s} {dtype} N={n:4d} grid={shape_label(shape):>6s} T={T:>9,} ..."
                if tool == "pynapple" and (len(shape) > 1 or dtype != "float64" or pynapple_gb(n, G, T) > max_gb):
                    continue  # pynapple: 1-D float64 sizes that fit only
                print(label, end=" ", flush=True)
                tag = f"{tool}_{dtype}_N{n}_G{'x'.join(map(str, shape))}_T{T}"
                spec = {"tool": tool, "n_neurons": n, "shape": list(shape), "n_bins": T, "device": device,
                        "dtype": dtype, "counts": str(counts_path(cache, n, len(shape), T)), "out": str(work / tag),
                        "repeats": repeats}
                rec["loadavg_before"] = _common.loadavg()
                rec.update(_common.launch_worker(__file__, spec, timeout=TIMEOUT[mode], env=env))
                if "error" in rec:
                    print(f"FAILED ({rec['error'][:200]})", flush=True)
                else:
                    npz = np.load(spec["out"] + ".npz")
                    rec["_head"], rec["_map"] = npz["head"], npz["map_index"]
                    c = rec["calls"]
                    print(f"{c[0]['wall_s']:.3f} s / {c[-1]['wall_s']:.3f} s, peak RSS {rec['peak_rss_mib']:,.0f} MiB",
                          flush=True)
                records.append(rec)
    return records


def steady(r: dict | None, key: str = "wall_s") -> float | None:
    """Second-call time (first if only one); None if the tool did not run."""
    if not r or "calls" not in r:
        return None
    return r["calls"][1][key] if len(r["calls"]) > 1 else r["calls"][0][key]


COMPARED = ("bayesneuro", "pynapple", "numpy")  # tools computing the Poisson naive-Bayes posterior


def evaluate(records: list[dict], cache: Path) -> None:
    """Posterior differences (first HEAD bins) against float64 numpy, errors, speed ratios, memory per bin."""
    by_size: dict[tuple, dict] = {}
    for r in records:
        by_size.setdefault((r["n_neurons"], tuple(r["shape"]), r["n_bins"], r["dtype"]), {})[r["tool"]] = r
    refs = {}
    for (n, shape, T, dtype), tools in by_size.items():
        h = min(T, HEAD)
        dim = len(shape)
        if (n, shape, T) not in refs:
            counts = np.load(counts_path(cache, n, dim, T), mmap_mode="r")[:h]
            refs[(n, shape, T)] = np.exp(numpy_log_posterior(np.asarray(counts), tuning_rates(n, shape), DT))
        ref_np = refs[(n, shape, T)]
        x = np.load(traj_path(cache, dim, T))
        centres = grid_centres(shape)
        for r in tools.values():
            if "_head" not in r:
                continue
            r["compared_bins"] = h
            if r["tool"] in COMPARED:
                r["max_abs_diff_vs_numpy_f64"] = float(np.max(np.abs(r["_head"] - ref_np)))
            err = np.sqrt(np.sum((centres[r["_map"]] - x) ** 2, axis=1))
            r["map_abs_error_median"] = float(np.median(err))
            r["rss_above_baseline_mib"] = r["peak_rss_mib"] - r["rss_baseline_mib"]
            r["rss_per_bin_kib"] = r["rss_above_baseline_mib"] * 1024 / T
        for r in tools.values():
            for key in ("wall_s", "cpu_s"):
                t = steady(r, key)
                for ref in ("pynapple", "numpy", "bayesneuro"):
                    tr = steady(tools.get(ref), key)
                    if t and tr:
                        r[f"ratio_to_{ref}_{key}"] = t / tr  # < 1: this tool is faster


# ----------------------------------------------------------------------------- reporting

fmt = _common.fmt


def _sci(x):
    return "n/a" if x is None else f"{x:.1e}"


def _ratio(x):
    return "n/a" if x is None else (f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x")


LABEL = {"bayesneuro": "NaiveBayes (Poisson)", "bayesneuro_nb": "NaiveBayes (neg. binomial)",
         "bayesneuro_ss": "StateSpace (Poisson, smoothed)", "pynapple": "pynapple decode_bayes", "numpy": "numpy"}


def targets(results: dict) -> list[str]:
    recs = [r for r in results["records"] if "calls" in r]
    lines = []

    def verdict(ok):
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    for key, what in (("wall_s", "wall"), ("cpu_s", "CPU")):
        ss = [r for r in recs if r["tool"] == "bayesneuro_ss" and r.get(f"ratio_to_bayesneuro_{key}")]
        worst = max(ss, key=lambda r: r[f"ratio_to_bayesneuro_{key}"]) if ss else None
        lines.append(f"- **state-space smoothing within 3x of naive Bayes** ({what} time, 2nd calls, every size and dtype): "
                     + (f"{verdict(all(r[f'ratio_to_bayesneuro_{key}'] <= 3 for r in ss))} (worst "
                        f"{worst[f'ratio_to_bayesneuro_{key}']:.2f}x at {worst['n_neurons']} x {shape_label(worst['shape'])} x "
                        f"{worst['n_bins']:,} {worst['dtype']}; range {min(r[f'ratio_to_bayesneuro_{key}'] for r in ss):.2f}-"
                        f"{worst[f'ratio_to_bayesneuro_{key}']:.2f}x)" if ss else "n/a"))
        nb = [r for r in recs if r["tool"] == "bayesneuro" and r.get(f"ratio_to_numpy_{key}")]
        worst = max(nb, key=lambda r: r[f"ratio_to_numpy_{key}"]) if nb else None
        lines.append(f"- **naive Bayes at least as fast as plain numpy** ({what} time, 2nd calls, every size and dtype): "
                     + (f"{verdict(all(r[f'ratio_to_numpy_{key}'] <= 1 for r in nb))} (bayesneuro / numpy time "
                        f"{min(r[f'ratio_to_numpy_{key}'] for r in nb):.2f}-{worst[f'ratio_to_numpy_{key}']:.2f}x; worst at "
                        f"{worst['n_neurons']} x {shape_label(worst['shape'])} x {worst['n_bins']:,} {worst['dtype']})"
                        if nb else "n/a"))
    f32 = [r["max_abs_diff_vs_numpy_f64"] for r in recs if r["tool"] == "bayesneuro" and r["dtype"] == "float32"
           and "max_abs_diff_vs_numpy_f64" in r]
    f64 = [r["max_abs_diff_vs_numpy_f64"] for r in recs if r["tool"] == "bayesneuro" and r["dtype"] == "float64"
           and "max_abs_diff_vs_numpy_f64" in r]
    if f64:
        lines.append(f"- naive-Bayes posterior vs float64 numpy: float64 max abs difference {max(f64):.1e}; "
                     + (f"float32 {min(f32):.1e} to {max(f32):.1e}" if f32 else "float32 not run"))
    return lines


def tables(results: dict) -> str:
    recs = results["records"]
    lines = [("| neurons | grid | bins | dtype | tool | 1st call (s) | 2nd call (s) | 2nd call CPU (s) "
              "| XLA compiles 1st / 2nd | / naive Bayes (2nd, wall) | / numpy (2nd, wall) | / numpy (2nd, CPU) "
              "| max abs dp vs float64 numpy | peak RSS (MiB) | KiB per bin | median MAP error | load before |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        head = f"| {r['n_neurons']} | {shape_label(r['shape'])} | {r['n_bins']:,} | {r['dtype']} | {LABEL[r['tool']]} |"
        if "error" in r:
            lines.append(head + f" failed: {r['error'][:150]} |" + " |" * 11)
            continue
        c = r["calls"]
        second = c[1] if len(c) > 1 else None
        comp = f"{c[0].get('xla_compilations', 0)} / {second.get('xla_compilations', 0) if second else 'n/a'}"
        if r["tool"] in ("pynapple", "numpy"):
            comp = "-"
        dp = _sci(r.get("max_abs_diff_vs_numpy_f64")) if r["tool"] in COMPARED else "(other model)"
        lines.append(head + f" {c[0]['wall_s']:.3f} | {fmt(second and second['wall_s'], '.3f')} | "
                     f"{fmt(second and second['cpu_s'], '.3f')} | {comp} | {_ratio(r.get('ratio_to_bayesneuro_wall_s'))} | "
                     f"{_ratio(r.get('ratio_to_numpy_wall_s'))} | {_ratio(r.get('ratio_to_numpy_cpu_s'))} | {dp} | "
                     f"{r['peak_rss_mib']:,.0f} | {r['rss_per_bin_kib']:.2f} | {r['map_abs_error_median']:.4f} | "
                     f"{r['loadavg_before'][0]:.2f} |")
    notes = [
        "",
        ("Ratios = this tool's time / the reference's time on the 2nd call (< 1: this tool is faster); CPU = "
        "process CPU time (user + system, all threads), steadier than wall time on a loaded machine. dp = posterior "
        f"probability difference against the float64 numpy posterior, first min(T, {HEAD:,}) bins. XLA compiles = "
        "backend compilations during the call (`jax.monitoring`; 0 in the 2nd call: nothing recompiled). RSS "
        "above baseline per bin: peak RSS minus the RSS after loading the data, / bins. MAP error: median "
        "Euclidean distance between the grid centre of the argmax and the true position (unit interval or square)."),
    ]
    return "\n".join(lines + notes + ["", "Targets:", ""] + targets(results))


def header(results: dict) -> str:
    v, m = results["versions"], results["machine"]
    return (f"## Bayesian decoding benchmark ({results['mode']})\n\n"
            f"Python {v['python']}, jax {v['jax']} ({', '.join(results['devices'])}), pynapple {v['pynapple']}, "
            f"numpy {v['numpy']}, {m['cpus']} CPU cores, {m.get('memory_total_gib', '?')} GiB RAM, "
            f"{'JAX default platform' if results['device'] else 'JAX_PLATFORMS=cpu'}. "
            f"Load average at start {m['loadavg_at_start']}, at the end {results['loadavg_at_end']}. Bins of "
            f"{DT * 1000:.0f} ms; Gaussian place fields (peak 5-25 Hz, baseline 0.5-2 Hz) on a reflecting random walk "
            f"(step sd {WALK_SD} per axis, = the state-space sigma_walk); true tuning curves on a regular grid, "
            f"uniform prior, Poisson likelihood unless the row says negative binomial (dispersion {NB_DISPERSION}); "
            f"each tool x size x dtype in a fresh process, called twice.\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--full", action="store_true", help="also the large sizes (10^6 bins; needs ~12 GB free)")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/decode[_quick|_full])")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of float64,float32")
    parser.add_argument("--device", action="store_true", help="let JAX use its default platform (GPU) instead of the CPU")
    parser.add_argument("--pynapple-max-gb", type=float, default=1.0,
                        help="run pynapple only where its estimated memory (3 T G N 8 bytes) fits (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="calls per tool and size (1st includes compilation)")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "bayesneuro_bench_decode"),
                        help="where simulated recordings are cached")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return

    mode = "quick" if args.quick else "full" if args.full else "default"
    sizes = SIZES["quick"] if args.quick else SIZES["default"] + (SIZES["full"] if args.full else [])
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    dtypes = [t.strip() for t in args.dtypes.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown or set(dtypes) - set(DTYPES):
        parser.error(f"unknown tools or dtypes {sorted(unknown | (set(dtypes) - set(DTYPES)))}")
    cache = Path(args.cache_dir)
    machine = _common.machine_facts()
    print(f"# decoding benchmark ({mode}); data in {cache}; load average {machine['loadavg_at_start']}", flush=True)
    rate_stats = prepare_data(sizes, cache)
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as work:
        records = run_all(sizes, tools, dtypes, cache, Path(work), mode=mode, device=args.device,
                          max_gb=args.pynapple_max_gb, repeats=args.repeats)
    evaluate(records, cache)

    import jax
    import pynapple

    import bayesneuro

    ran = [r for r in records if "devices" in r]
    results = {
        "mode": mode, "device": args.device, "sizes": [[n, list(s), t] for n, s, t in sizes],
        "pynapple_max_gb": args.pynapple_max_gb, "loadavg_at_end": _common.loadavg(),
        "settings": {"bin_size_s": DT, "walk_sd": WALK_SD, "sigma_walk": WALK_SD, "seed": SEED,
                     "compared_bins": HEAD, "numpy_block": NUMPY_BLOCK, "prior": "uniform", "dtypes": dtypes,
                     "nb_dispersion": NB_DISPERSION,
                     "pynapple_memory_estimate": f"{PYNAPPLE_FACTOR} * T * G * N * 8 bytes"},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "pynapple": pynapple.__version__,
                     "numpy": np.__version__, "bayesneuro": getattr(bayesneuro, "__version__", "?")},
        "devices": ran[0]["devices"] if ran else ["?"],
        "machine": machine, "firing_rates": rate_stats,
        "records": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
    }
    report = header(results) + "\n" + tables(results) + "\n"
    print()
    print(report)
    default_stem = {"quick": "decode_quick", "default": "decode", "full": "decode_full"}[mode]
    stem = Path(args.out) if args.out else RESULTS / default_stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.parent / (stem.name + ".md"), stem.parent / (stem.name + ".json")
    md.write_text(report)
    js.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
