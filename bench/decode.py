"""Benchmark: Bayesian (Poisson naive-Bayes) decoding of a 1-D variable on a grid.

The same simulated data (Gaussian place fields, Poisson counts along a random-walk trajectory)
are decoded by

- ``bayesneuro``: ``NaiveBayesDecoder.from_tuning_curves(tc).decode(SpikeData.from_counts(...))``
  with the TRUE tuning curves ``tc = TuningCurves(rates, Grid.regular(G, (0, 1)), occupancy=1)``
  (uniform prior); its posterior ``.log_prob`` ``(time, G)`` is computed eagerly;
- ``bayesneuro_ss``: ``StateSpaceDecoder.from_tuning_curves(tc, sigma_walk=WALK_SD).decode(...)``:
  forward-backward smoothing on the grid with a Gaussian random-walk prior (a different model,
  so its posterior is not compared; its decoding error is);
- ``pynapple``: ``nap.decode_bayes(tc.to_pynapple(), TsdFrame(counts), epochs, bin_size)``; it
  builds a ``(time, G, neuron)`` array (``np.tile``), so it runs only where
  ``3 * T * G * N * 8`` bytes fit in ``--pynapple-max-gb`` (default 12); ``decode_1d`` (deprecated
  alias) is checked to give the same posterior at the smallest size;
- ``numpy``: ``counts @ log(rates dt) - sum(rates dt)``, normalised by ``logsumexp``, float64,
  vectorised over blocks of 65,536 bins (the block only bounds temporaries; one block = one
  BLAS product).

Posterior probabilities are compared (max abs difference) on the first ``min(T, 10,000)`` bins:
every worker saves those rows, and the parent recomputes the numpy posterior on that slice as the
reference (bins are independent under naive Bayes, so a slice decodes exactly as in the full run).
pynapple's ``log(rate + 1e-12)`` does not matter: every rate is >= 0.5 Hz.

Every tool x size runs in a fresh subprocess (``bench/_common.py``): the data are loaded and the
tool's inputs built (``SpikeData``, ``TsdFrame``), the memory then is the *baseline*, the tool is
called twice on the same data (the first call includes JIT compilation), and ``getrusage`` gives
the peak RSS of the process. The 1-minute load average before and after each run is stored. All
computation is float64 (``jax_enable_x64``); ``JAX_PLATFORMS=cpu`` unless ``--device``.

Usage::

    python bench/decode.py --quick --out bench/results/decode_quick   # smoke test (~1 minute)
    python bench/decode.py --out bench/results/decode                # full (run alone)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if "--device" not in sys.argv and "--_worker" not in sys.argv:  # workers get it from the parent
    os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

import _common  # noqa: E402

RESULTS = HERE / "results"

# ----------------------------------------------------------------------------- settings

DT = 0.02  # bin size, seconds
WALK_SD = 0.01  # random-walk step sd per bin, units of the variable (range (0, 1)); also sigma_walk
SEED = 20240917
HEAD = 10_000  # bins whose posteriors are saved and compared
PYNAPPLE_FACTOR = 3  # pynapple's peak ~ 3 arrays of (time, G, neuron) float64
NUMPY_BLOCK = 65_536
TOOLS = ["bayesneuro", "bayesneuro_ss", "pynapple", "numpy"]

SIZES = {  # (neurons, grid cells, bins)
    "quick": [(20, 50, 1_000), (50, 100, 2_000), (50, 100, 8_000)],
    "full": [(50, 100, 2_000), (100, 400, 8_000), (200, 400, 180_000), (200, 400, 1_000_000)],
}
TIMEOUT = {"quick": 600, "full": 3600}


# ----------------------------------------------------------------------------- simulation


def trajectory(n_bins: int, seed: int = SEED) -> np.ndarray:
    """A random walk in [0, 1] reflected at the ends, step sd ``WALK_SD``; shape ``(n_bins,)``.

    The draw is sequential, so a shorter recording is a prefix of a longer one.
    """
    rng = np.random.default_rng([seed, 0])
    x = 0.5 + np.cumsum(rng.normal(0.0, WALK_SD, n_bins))
    x = np.mod(x, 2.0)
    return np.where(x > 1.0, 2.0 - x, x)


def place_fields(n_neurons: int, seed: int = SEED) -> dict:
    """Gaussian place-field parameters: centre, width, peak and baseline rate (Hz) per neuron."""
    rng = np.random.default_rng([seed, n_neurons])
    return {
        "centre": np.sort(rng.uniform(0.0, 1.0, n_neurons)),
        "width": rng.uniform(0.03, 0.10, n_neurons),
        "peak": rng.uniform(5.0, 25.0, n_neurons),
        "base": rng.uniform(0.5, 2.0, n_neurons),  # strictly positive rates everywhere
    }


def rates_at(x: np.ndarray, fields: dict) -> np.ndarray:
    """Rates (Hz) of every neuron at positions `x`, shape ``(len(x), neuron)``."""
    d = (np.asarray(x)[:, None] - fields["centre"][None, :]) / fields["width"][None, :]
    return fields["base"] + fields["peak"] * np.exp(-0.5 * d**2)


def grid_centres(n_cells: int) -> np.ndarray:
    """Centres of ``Grid.regular(bins=n_cells, range=(0, 1))``."""
    return (np.arange(n_cells) + 0.5) / n_cells


def tuning_rates(n_neurons: int, n_cells: int) -> np.ndarray:
    """The true tuning curves on the grid, ``(neuron, G)`` in Hz."""
    return rates_at(grid_centres(n_cells), place_fields(n_neurons)).T.copy()


def counts_path(cache: Path, n: int, t: int) -> Path:
    return cache / f"counts_N{n}_T{t}_s{SEED}.npy"


def traj_path(cache: Path, t: int) -> Path:
    return cache / f"x_T{t}_s{SEED}.npy"


def prepare_data(sizes: list[tuple[int, int, int]], cache: Path) -> dict:
    """Simulate (or reuse) the counts of every (neurons, bins), int16, cached as ``.npy``."""
    cache.mkdir(parents=True, exist_ok=True)
    stats = {}
    for n, _, t in sizes:
        if (n, t) in stats:
            continue
        if not counts_path(cache, n, t).exists() or not traj_path(cache, t).exists():
            t0 = time.perf_counter()
            x = trajectory(t)
            fields = place_fields(n)
            rng = np.random.default_rng([SEED, n, 1])
            counts = np.empty((t, n), np.int16)
            for a in range(0, t, 100_000):  # bounded memory for 10^6 bins
                b = min(a + 100_000, t)
                counts[a:b] = rng.poisson(rates_at(x[a:b], fields) * DT)
            np.save(traj_path(cache, t), x)
            np.save(counts_path(cache, n, t), counts)
            print(f"  simulated N={n}, T={t:,} in {time.perf_counter() - t0:.1f} s", flush=True)
        counts = np.load(counts_path(cache, n, t), mmap_mode="r")
        rate = np.asarray(counts[: min(t, 200_000)], dtype=np.float64).mean(0) / DT
        stats[f"N{n}_T{t}"] = {"rate_min_hz": float(rate.min()), "rate_median_hz": float(np.median(rate)),
                               "rate_max_hz": float(rate.max()), "max_count": int(np.max(counts[: min(t, 200_000)]))}
    return stats


# ----------------------------------------------------------------------------- reference


def numpy_log_posterior(counts: np.ndarray, rates: np.ndarray, dt: float, block: int | None = NUMPY_BLOCK) -> np.ndarray:
    """Plain numpy naive Bayes, float64: ``(time, G)`` log posterior under a uniform prior.

    ``counts @ log(rates dt) - sum_n rates dt`` minus its ``logsumexp`` over cells, in blocks of
    `block` bins (None: one block).
    """
    from scipy.special import logsumexp

    rdt = np.asarray(rates, dtype=np.float64) * dt  # (neuron, G)
    log_rdt = np.log(rdt)
    total = rdt.sum(axis=0)
    T = counts.shape[0]
    block = T if block is None else block
    out = np.empty((T, rates.shape[1]), dtype=np.float64)
    for a in range(0, T, block):
        b = min(a + block, T)
        ll = np.asarray(counts[a:b], dtype=np.float64) @ log_rdt
        ll -= total
        ll -= logsumexp(ll, axis=1, keepdims=True)
        out[a:b] = ll
    return out


# ----------------------------------------------------------------------------- workers (subprocess)


def _jax(device: bool):
    import jax

    jax.config.update("jax_enable_x64", True)
    if not device:
        jax.config.update("jax_platforms", "cpu")
    return jax


def _make_tc(rates: np.ndarray):
    from bayesneuro.decoders import Grid, TuningCurves

    G = rates.shape[1]
    return TuningCurves(rates, Grid.regular(bins=G, range=(0, 1), names=["x"]), occupancy=np.ones(G))


def _setup_bayesneuro(counts, rates, options):
    from bayesneuro import SpikeData
    from bayesneuro.decoders import NaiveBayesDecoder, StateSpaceDecoder

    tc = _make_tc(rates)
    if options["tool"] == "bayesneuro_ss":
        dec = StateSpaceDecoder.from_tuning_curves(tc, sigma_walk=WALK_SD)
        settings = f"StateSpaceDecoder.from_tuning_curves(tc, sigma_walk={WALK_SD}).decode(SpikeData)"
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

    tc = _make_tc(rates)
    tc_xr = tc.to_pynapple()
    T = counts.shape[0]
    t = (np.arange(T) + 0.5) * DT
    frame = nap.TsdFrame(t=t, d=counts, columns=np.asarray(tc.neuron_ids))
    epochs = nap.IntervalSet(start=0.0, end=T * DT)
    extra = {}
    if options.get("check_decode_1d"):
        import pandas as pd

        df = pd.DataFrame(rates.T, index=grid_centres(rates.shape[1]), columns=np.asarray(tc.neuron_ids))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            _, p1 = nap.decode_1d(df, frame, epochs, DT)
        _, pb = nap.decode_bayes(tc_xr, frame, epochs, DT)
        extra["decode_1d_vs_decode_bayes_max_abs_diff"] = float(np.max(np.abs(np.asarray(p1.values) - np.asarray(pb.values))))
        del p1, pb

    def call():
        _, p = nap.decode_bayes(tc_xr, frame, epochs, DT)
        return p.values, False

    return call, "nap.decode_bayes(tc.to_pynapple(), TsdFrame(counts), IntervalSet(0, T dt), bin_size)", extra


def _setup_numpy(counts, rates, options):
    def call():
        return numpy_log_posterior(counts, rates, DT), True

    return call, f"numpy_log_posterior (float64, blocks of {NUMPY_BLOCK} bins)", {}


SETUP = {"bayesneuro": _setup_bayesneuro, "bayesneuro_ss": _setup_bayesneuro,
         "pynapple": _setup_pynapple, "numpy": _setup_numpy}


def run_worker(spec: dict) -> None:
    """Subprocess entry point: decode with one tool twice, save timings, memory and posterior rows."""
    jax = _jax(spec["device"])
    n, G, T = spec["n_neurons"], spec["n_cells"], spec["n_bins"]
    counts = np.load(spec["counts"])  # fully in memory (int16), the same for every tool
    rates = tuning_rates(n, G)
    call, settings, extra = SETUP[spec["tool"]](counts, rates, spec)
    compile_s = [0.0]

    def on_event(name, secs, **_):  # JAX tracing + lowering + XLA compilation inside a call
        if name.startswith("/jax/core/compile/"):
            compile_s[0] += secs

    jax.monitoring.register_event_duration_secs_listener(on_event)
    devices = [str(d) for d in jax.devices()]  # start the backend before the baseline, in every worker
    rss_base = _common.current_rss_mib()
    calls = []
    head = best = None
    for _ in range(spec["repeats"]):
        head = best = None  # release the previous call's posterior before the next one
        compile_s[0] = 0.0
        t0 = time.perf_counter()
        arr, is_log = call()
        wall = time.perf_counter() - t0
        calls.append({"wall_s": wall, "jax_compile_s": compile_s[0]})
        h = min(T, HEAD)
        head = np.exp(arr[:h]) if is_log else np.array(arr[:h])
        best = np.argmax(arr, axis=1).astype(np.int32)
        del arr
    np.savez(spec["out"] + ".npz", head=head, map_index=best)
    import pynapple

    result = {
        "calls": calls, "settings": settings, **extra,
        "peak_rss_mib": _common.peak_rss_mib(), "rss_baseline_mib": rss_base,
        "devices": devices, "jax_dtype": str(jax.numpy.zeros(()).dtype),
        "versions": {"jax": jax.__version__, "pynapple": pynapple.__version__, "numpy": np.__version__},
    }
    Path(spec["out"] + ".json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- running


def pynapple_gb(n: int, G: int, T: int) -> float:
    """Estimated peak memory of ``decode_bayes`` in GB (decimal)."""
    return PYNAPPLE_FACTOR * T * G * n * 8 / 1e9


def run_all(sizes, tools, cache: Path, work: Path, *, mode: str, device: bool, max_gb: float, repeats: int) -> list[dict]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if not device:
        env["JAX_PLATFORMS"] = "cpu"
    records = []
    for i, (n, G, T) in enumerate(sizes):
        for tool in tools:
            rec = {"tool": tool, "n_neurons": n, "n_cells": G, "n_bins": T}
            print(f"  {tool:14s} N={n:4d} G={G:4d} T={T:>9,} ...", end=" ", flush=True)
            if tool == "pynapple" and pynapple_gb(n, G, T) > max_gb:
                rec["skipped"] = f"needs ~{pynapple_gb(n, G, T):,.0f} GB"
                print(f"skipped ({rec['skipped']})", flush=True)
                records.append(rec)
                continue
            tag = f"{tool}_N{n}_G{G}_T{T}"
            spec = {"tool": tool, "n_neurons": n, "n_cells": G, "n_bins": T, "device": device,
                    "counts": str(counts_path(cache, n, T)), "out": str(work / tag), "repeats": repeats,
                    "check_decode_1d": tool == "pynapple" and i == 0}
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


def steady(r: dict | None) -> float | None:
    """Second-call time (first if only one); None if the tool did not run."""
    if not r or "calls" not in r:
        return None
    return r["calls"][1]["wall_s"] if len(r["calls"]) > 1 else r["calls"][0]["wall_s"]


def evaluate(records: list[dict], cache: Path) -> None:
    """Posterior differences (first HEAD bins), decoding errors, speed ratios, memory per bin."""
    by_size: dict[tuple, dict] = {}
    for r in records:
        by_size.setdefault((r["n_neurons"], r["n_cells"], r["n_bins"]), {})[r["tool"]] = r
    for (n, G, T), tools in by_size.items():
        h = min(T, HEAD)
        counts = np.load(counts_path(cache, n, T), mmap_mode="r")[:h]
        ref_np = np.exp(numpy_log_posterior(np.asarray(counts), tuning_rates(n, G), DT))
        x = np.load(traj_path(cache, T))
        centres = grid_centres(G)
        pyn = tools.get("pynapple", {}).get("_head")
        for r in tools.values():
            if "_head" not in r:
                continue
            r["compared_bins"] = h
            if r["tool"] != "bayesneuro_ss":
                r["max_abs_diff_vs_numpy"] = float(np.max(np.abs(r["_head"] - ref_np)))
                if pyn is not None:
                    r["max_abs_diff_vs_pynapple"] = float(np.max(np.abs(r["_head"] - pyn)))
            err = np.abs(centres[r["_map"]] - x)
            r["map_abs_error_median"] = float(np.median(err))
            r["map_abs_error_mean"] = float(np.mean(err))
            r["rss_above_baseline_mib"] = r["peak_rss_mib"] - r["rss_baseline_mib"]
            r["rss_per_bin_kib"] = r["rss_above_baseline_mib"] * 1024 / T
            r["posterior_mib"] = T * G * 8 / 2**20
        for r in tools.values():
            t = steady(r)
            for ref in ("pynapple", "numpy", "bayesneuro"):
                tr = steady(tools.get(ref))
                if t and tr:
                    r[f"speedup_vs_{ref}"] = tr / t  # > 1: this tool is faster


def memory_fit(records: list[dict], tool: str) -> list[dict]:
    """Per (neurons, G) with >= 2 bin counts: slope of RSS above baseline vs bins (KiB per bin)."""
    groups: dict[tuple, list] = {}
    for r in records:
        if r["tool"] == tool and "rss_above_baseline_mib" in r:
            groups.setdefault((r["n_neurons"], r["n_cells"]), []).append(r)
    fits = []
    for (n, G), rs in groups.items():
        if len(rs) < 2:
            continue
        T = np.array([r["n_bins"] for r in rs], float)
        M = np.array([r["rss_above_baseline_mib"] for r in rs])
        P = np.array([r["peak_rss_mib"] for r in rs])
        slope = np.polyfit(T, M, 1)[0] * 1024  # KiB per bin
        loglog = np.polyfit(np.log(T), np.log(np.maximum(M, 1e-3)), 1)[0]
        fits.append({"n_neurons": n, "n_cells": G, "bins": T.astype(int).tolist(),
                     "slope_kib_per_bin": float(slope), "peak_slope_kib_per_bin": float(np.polyfit(T, P, 1)[0] * 1024),
                     "loglog_slope": float(loglog), "posterior_kib_per_bin": G * 8 / 1024})
    return fits


# ----------------------------------------------------------------------------- reporting

fmt = _common.fmt


def _sci(x):
    return "n/a" if x is None else f"{x:.1e}"


def _ratio(x):
    return "n/a" if x is None else (f"{x:,.0f}x" if x >= 100 else f"{x:.2f}x")


LABEL = {"bayesneuro": "bayesneuro NaiveBayes", "bayesneuro_ss": "bayesneuro StateSpace (smoothed)",
         "pynapple": "pynapple decode_bayes", "numpy": "numpy"}


def targets(results: dict) -> list[str]:
    recs = results["records"]
    find = {(r["tool"], r["n_neurons"], r["n_cells"], r["n_bins"]): r for r in recs}
    sizes = results["sizes"]
    quick = results["mode"] == "quick"
    lines = []

    def verdict(ok):
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    # 1. >= 100x faster than pynapple at 8,000 bins
    rows = []
    for n, G, T in sizes:
        if T != 8_000:
            continue
        r = find.get(("bayesneuro", n, G, T))
        s = r.get("speedup_vs_pynapple") if r else None
        rows.append((n, G, s))
    ok = None if not rows or any(s is None for *_, s in rows) else all(s >= 100 for *_, s in rows)
    detail = ", ".join(f"{_ratio(s)} at {n}x{G}x8,000" for n, G, s in rows) or "no 8,000-bin size run"
    if quick:
        detail += "; the issue's size is 100 neurons x 400 cells x 8,000 bins, run without --quick"
    lines.append(f"- **>= 100x faster than pynapple at 8,000 bins** (2nd calls): {verdict(ok)} ({detail})")

    # 2. memory linear in bins
    for tool in ("bayesneuro", "bayesneuro_ss"):
        fits = memory_fit(recs, tool)
        if not fits:
            lines.append(f"- **memory linear in bins** ({LABEL[tool]}): n/a (no two sizes share neurons and grid)")
            continue
        parts, oks = [], []
        for f in fits:
            # linear: the marginal cost of a bin is at most twice the bytes of its posterior row
            ok_f = f["slope_kib_per_bin"] <= 2 * f["posterior_kib_per_bin"] + 1e-9
            oks.append(ok_f)
            parts.append(f"{f['n_neurons']}x{f['n_cells']} over {', '.join(f'{b:,}' for b in f['bins'])} bins: "
                         f"{f['slope_kib_per_bin']:.2f} KiB per extra bin (posterior row {f['posterior_kib_per_bin']:.2f} KiB; "
                         f"log-log slope of RSS above baseline {f['loglog_slope']:.2f})")
        v = ("not judged (quick sizes: the posterior is a few MiB, below the noise of JIT compilation "
             f"and allocator; would read {verdict(all(oks))})") if quick else verdict(all(oks))
        lines.append(f"- **memory linear in bins** ({LABEL[tool]}; criterion: marginal RSS per bin <= 2x the "
                     f"posterior row): {v}; " + "; ".join(parts))

    # 3. the one-hour size decodes
    hour = [(n, G, T) for n, G, T in sizes if T == 180_000]
    if not hour:
        lines.append("- **one hour (200 neurons x 180,000 bins of 20 ms) decodes**: not run (quick sizes)")
    for n, G, T in hour:
        parts = []
        oks = []
        for tool in ("bayesneuro", "bayesneuro_ss"):
            r = find.get((tool, n, G, T))
            good = bool(r and "calls" in r)
            oks.append(good)
            parts.append(f"{LABEL[tool]} " + (f"{steady(r):.2f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB" if good
                                              else f"failed: {r.get('error', 'not run') if r else 'not run'}"))
        lines.append(f"- **one hour ({n} neurons x {G} cells x {T:,} bins) decodes**: {verdict(oks[0])} (" + "; ".join(parts) + ")")

    # 4. state-space within 3x of naive
    parts, oks = [], []
    for n, G, T in sizes:
        r = find.get(("bayesneuro_ss", n, G, T))
        s = r.get("speedup_vs_bayesneuro") if r else None
        if s is None:
            continue
        ratio = 1 / s
        oks.append(ratio <= 3)
        c_ss, c_nb = r["calls"][-1], find[("bayesneuro", n, G, T)]["calls"][-1]
        net = (c_ss["wall_s"] - c_ss.get("jax_compile_s", 0.0)) / max(c_nb["wall_s"] - c_nb.get("jax_compile_s", 0.0), 1e-9)
        parts.append(f"{ratio:.2f}x at {n}x{G}x{T:,} [{net:.2f}x without the JAX compilation inside the calls]")
    lines.append(f"- **state-space smoothing within 3x of naive Bayes** (ss time / nb time, 2nd calls, every size): "
                 f"{verdict(all(oks) if oks else None)} (" + ", ".join(parts) + ")")
    return lines


def tables(results: dict) -> str:
    recs = results["records"]
    lines = ["| neurons | grid | bins | tool | 1st call (s) | 2nd call (s) | JAX compile in 2nd (s) | speed-up vs pynapple | speed-up vs numpy "
             "| max abs dp vs pynapple | max abs dp vs numpy | peak RSS (MiB) | RSS above baseline (MiB) "
             "| KiB per bin | median MAP error | load before |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        head = f"| {r['n_neurons']} | {r['n_cells']} | {r['n_bins']:,} | {LABEL[r['tool']]} |"
        if "skipped" in r:
            lines.append(head + f" skipped ({r['skipped']}) | | | | | | | | | | | |")
            continue
        if "error" in r:
            lines.append(head + f" failed: {r['error'][:150]} | | | | | | | | | | | |")
            continue
        c = r["calls"]
        second = c[1]["wall_s"] if len(c) > 1 else None
        ss = r["tool"] == "bayesneuro_ss"
        dp_p = "(other model)" if ss else _sci(r.get("max_abs_diff_vs_pynapple"))
        dp_n = "(other model)" if ss else _sci(r.get("max_abs_diff_vs_numpy"))
        if not ss and r["n_bins"] > HEAD:
            dp_n += f" (first {HEAD:,} bins)"
        comp = c[1].get("jax_compile_s") if len(c) > 1 else None
        comp = "-" if r["tool"] in ("pynapple", "numpy") else fmt(comp, ".3f")
        lines.append(head + f" {c[0]['wall_s']:.3f} | {fmt(second, '.3f')} | {comp} | {_ratio(r.get('speedup_vs_pynapple'))} | "
                     f"{_ratio(r.get('speedup_vs_numpy'))} | {dp_p} | {dp_n} | {r['peak_rss_mib']:,.0f} | "
                     f"{r['rss_above_baseline_mib']:,.0f} | {r['rss_per_bin_kib']:.2f} | {r['map_abs_error_median']:.4f} | "
                     f"{r['loadavg_before'][0]:.2f} |")
    accuracy = []
    for r in recs:
        if r["tool"] == "pynapple" or "skipped" in r or "error" in r:
            continue
        if r["tool"] != "bayesneuro_ss" and r.get("max_abs_diff_vs_pynapple") is not None:
            accuracy.append(r["max_abs_diff_vs_pynapple"])
    worst = max(accuracy) if accuracy else None
    d1 = [r.get("decode_1d_vs_decode_bayes_max_abs_diff") for r in recs if r["tool"] == "pynapple"]
    d1 = [v for v in d1 if v is not None]
    notes = [
        "",
        "Speed-up = reference time / tool time on the 2nd call (> 1: faster). dp = posterior probability "
        f"difference, first min(T, {HEAD:,}) bins; the numpy reference is recomputed on that slice. "
        "JAX compile = tracing + lowering + XLA compilation reported by `jax.monitoring` during the 2nd call "
        "(non-zero means the call recompiled). "
        "RSS above baseline = peak RSS minus the RSS after loading the counts and building the tool's inputs "
        "(includes JIT compilation on the 1st call); KiB per bin = that / bins "
        f"(a float64 posterior row is G x 8 bytes). MAP error: median |grid centre of argmax - true x|, all bins, "
        "range (0, 1).",
        "",
        f"- posterior agreement with pynapple (naive-Bayes tools, where pynapple ran): max abs difference "
        f"{_sci(worst)} -> " + ("n/a" if worst is None else ("PASS (<= 1e-8)" if worst <= 1e-8 else "FAIL (> 1e-8)")),
    ]
    if d1:
        notes.append(f"- pynapple `decode_1d` vs `decode_bayes` at the smallest size: max abs difference {d1[0]:.1e}")
    return "\n".join(lines + notes + ["", "Targets:", ""] + targets(results))


def header(results: dict) -> str:
    v, m = results["versions"], results["machine"]
    return (f"## Bayesian decoding benchmark ({results['mode']})\n\n"
            f"Python {v['python']}, jax {v['jax']} ({', '.join(results['devices'])}), pynapple {v['pynapple']}, "
            f"numpy {v['numpy']}, {m['cpus']} CPU cores, {m.get('memory_total_gib', '?')} GiB RAM, float64 "
            f"(jax_enable_x64), {'JAX default platform' if results['device'] else 'JAX_PLATFORMS=cpu'}. "
            f"Load average at start {m['loadavg_at_start']}. Bins of {DT * 1000:.0f} ms; Gaussian place fields "
            f"(peak 5-25 Hz, baseline 0.5-2 Hz, width 0.03-0.1) on a reflecting random walk in (0, 1) "
            f"(step sd {WALK_SD}, = the state-space sigma_walk); true tuning curves on a regular grid, uniform "
            f"prior; each tool x size in a fresh process, called twice; pynapple run only where "
            f"{PYNAPPLE_FACTOR} x T x G x N x 8 bytes <= {results['pynapple_max_gb']} GB.\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/decode[_quick])")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--device", action="store_true", help="let JAX use its default platform (GPU) instead of the CPU")
    parser.add_argument("--pynapple-max-gb", type=float, default=12.0,
                        help="run pynapple only where its estimated memory (3 T G N 8 bytes) fits (default 12)")
    parser.add_argument("--repeats", type=int, default=2, help="calls per tool and size (1st includes compilation)")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "bayesneuro_bench_decode"),
                        help="where simulated recordings are cached")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return

    mode = "quick" if args.quick else "full"
    sizes = SIZES[mode]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}")
    cache = Path(args.cache_dir)
    machine = _common.machine_facts()
    print(f"# decoding benchmark ({mode}); data in {cache}; load average {machine['loadavg_at_start']}", flush=True)
    rate_stats = prepare_data(sizes, cache)
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as work:
        records = run_all(sizes, tools, cache, Path(work), mode=mode, device=args.device,
                          max_gb=args.pynapple_max_gb, repeats=args.repeats)
    evaluate(records, cache)

    import jax
    import pynapple

    import bayesneuro

    ran = [r for r in records if "devices" in r]
    results = {
        "mode": mode, "device": args.device, "sizes": sizes, "pynapple_max_gb": args.pynapple_max_gb,
        "settings": {"bin_size_s": DT, "walk_sd": WALK_SD, "sigma_walk": WALK_SD, "seed": SEED,
                     "compared_bins": HEAD, "numpy_block": NUMPY_BLOCK, "prior": "uniform",
                     "dtype": "float64 (jax_enable_x64; numpy and pynapple float64)",
                     "pynapple_memory_estimate": f"{PYNAPPLE_FACTOR} * T * G * N * 8 bytes"},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "pynapple": pynapple.__version__,
                     "numpy": np.__version__, "bayesneuro": getattr(bayesneuro, "__version__", "?")},
        "devices": ran[0]["devices"] if ran else ["?"],
        "machine": machine, "firing_rates": rate_stats,
        "records": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
        "memory_fits": {t: memory_fit(records, t) for t in ("bayesneuro", "bayesneuro_ss")},
    }
    report = header(results) + "\n" + tables(results) + "\n"
    print()
    print(report)
    stem = Path(args.out) if args.out else RESULTS / ("decode" if mode == "full" else "decode_quick")
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.parent / (stem.name + ".md"), stem.parent / (stem.name + ".json")
    md.write_text(report)
    js.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
