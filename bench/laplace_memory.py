"""Laplace memory of a coupled Poisson GLM: ``jax.hessian`` (old) against column blocks and per-neuron Gram Hessians.

``PoissonGLM(history_basis=RaisedCosineLog(B, window), coupling=True).fit(method="laplace")``
(default ``filter_mode="fft"``, Ridge(1) priors) on spike counts of independent Poisson neurons
(rates 2-10 Hz, 10-ms bins), three ways of computing the Hessian at the mode:

- ``old``: ``jax.jit(jax.hessian(potential))``, the code before issue 21 (every parameter
  direction through the data at once: memory O(bins x parameters));
- ``blocked``: the generic path of ``infer.fit`` now: Hessian-vector products in column blocks
  sized to a 1 GiB budget (``hessian=None``): O(bins x batch + parameters^2);
- ``glm``: the GLM's default now: one Gram matrix ``X_n' diag(w) X_n`` per neuron, accumulated
  over blocks of bins (``bayesneuro/glm/_laplace.py``): O(bins x neurons + neurons x weights^2).

Each (path, size) runs in a fresh subprocess (``bench/_common.py``); we report its peak resident
memory (``getrusage``; it includes the MAP optimisation that precedes the Hessian and the draws),
the wall time of the whole fit and of the Hessian step, and for every size where ``old`` ran the
largest difference of the covariance and the mode against it. float64 (``jax_enable_x64``);
``JAX_PLATFORMS=cpu`` unless ``--device``.

Usage::

    python bench/laplace_memory.py            # full table (<= 6 min on a quiet 2-core machine)
    python bench/laplace_memory.py --quick    # smoke test
    python bench/laplace_memory.py --big      # adds 1,000,000 bins x 50 neurons (glm path only)
    python bench/laplace_memory.py --device   # on JAX's default platform (GPU when present)

Writes ``bench/results/laplace_memory.{md,json}`` (``--quick``: ``laplace_memory_quick.*``).
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
DT = 0.01

# (path, bins, neurons, basis functions, window in bins)
SIZES = {
    "quick": [("old", 2_000, 4, 3, 20), ("blocked", 2_000, 4, 3, 20), ("glm", 2_000, 4, 3, 20)],
    "full": [
        *[(p, t, 8, 6, 50) for t in (4_000, 16_000, 32_000) for p in ("old", "blocked", "glm")],
        ("glm", 120_000, 8, 6, 50),
        ("glm", 120_000, 50, 4, 20),
    ],
    "big": [("glm", 1_000_000, 50, 4, 20)],
}
TIMEOUT = {"quick": 600, "full": 1200, "big": 3600}


def simulate(n_bins: int, n_neurons: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, n_neurons])
    rates = rng.uniform(2.0, 10.0, n_neurons)
    return np.random.default_rng([SEED, n_neurons, n_bins]).poisson(rates * DT, size=(n_bins, n_neurons))


def run_worker(spec: dict) -> None:
    import importlib

    import jax

    jax.config.update("jax_enable_x64", True)
    import bayesneuro as bn
    from bayesneuro.glm import _laplace

    fit_module = importlib.import_module("bayesneuro.infer.fit")

    timer = {"hessian_s": 0.0}

    def timed(fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            jax.block_until_ready(out)
            timer["hessian_s"] += time.perf_counter() - t0
            return out

        return wrapper

    path = spec["path"]
    if path == "old":  # the code before issue 21
        fit_module._hessian_of = timed(lambda potential, u, arrays, batch: jax.jit(jax.hessian(potential))(u, arrays))
    elif path == "blocked":
        fit_module._hessian_of = timed(fit_module._hessian_of)
    else:
        _laplace._block_hessian = timed(_laplace._block_hessian)
    counts = simulate(spec["n_bins"], spec["n_neurons"])
    data = bn.SpikeData.from_counts(counts, bin_size=DT)
    glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(spec["n_basis"], window=spec["window"]), coupling=True)
    options = {} if path == "glm" else {"hessian": None}
    if spec.get("max_iter"):
        options["max_iter"] = spec["max_iter"]
    rss0 = _common.peak_rss_mib()
    t0 = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        if spec.get("max_iter"):  # a capped MAP warns that it did not converge: recorded below
            warnings.simplefilter("ignore")
        glm.fit(data, method="laplace", key=0, progress=False, num_samples=100, **options)
    wall = time.perf_counter() - t0
    info = glm.result_.info
    mode = np.concatenate([np.ravel(np.asarray(info["mode"][k])) for k in sorted(info["mode"])])
    out = {
        "peak_rss_mib": _common.peak_rss_mib(), "rss_before_fit_mib": rss0, "fit_s": wall,
        "hessian_s": timer["hessian_s"], "n_params": int(mode.size), "hessian": info["hessian"],
        "n_iter": int(info["n_iter"]), "converged": bool(info["converged"]), "devices": [str(d) for d in jax.devices()],
    }
    if spec.get("save"):
        np.save(spec["out"] + "_mode.npy", mode)
        cov = info.get("cov", None)
        if cov is not None:
            np.save(spec["out"] + "_cov.npy", np.asarray(cov))
    Path(spec["out"] + ".json").write_text(json.dumps(out))


def wait_for_memory(need_gib: float) -> None:
    """Other jobs share this machine: wait (up to 20 min) until `need_gib` GiB are available."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return
    for _ in range(120):
        if psutil.virtual_memory().available / 2**30 >= need_gib:
            return
        time.sleep(10)


def run_all(sizes, work: Path, *, mode: str, device: bool, big_max_iter: int | None = None) -> list[dict]:
    env = dict(os.environ)
    if not device:
        env["JAX_PLATFORMS"] = "cpu"
    records = []
    for path, t, n, b, w in sizes:
        out = str(work / f"{path}_T{t}_N{n}")
        spec = {"path": path, "n_bins": t, "n_neurons": n, "n_basis": b, "window": w, "out": out,
                "save": n <= 8 and t <= 32_000, "max_iter": big_max_iter if t >= 500_000 else None}
        if path == "old" and t >= 16_000 or t >= 500_000:
            wait_for_memory(12.0)
        rec = dict(spec)
        rec.update(_common.launch_worker(__file__, spec, timeout=TIMEOUT[mode], env=env))
        records.append(rec)
        print(f"{path:8s} T={t:>9,} N={n:3d} B={b}: "
              + (rec["error"] if "error" in rec else
                 f"peak {rec['peak_rss_mib']:8.0f} MiB, fit {rec['fit_s']:7.1f} s, hessian {rec['hessian_s']:6.1f} s"),
              flush=True)
    # agreement with the old path
    for rec in records:
        ref = work / f"old_T{rec['n_bins']}_N{rec['n_neurons']}"
        mine = Path(rec["out"])
        if rec["path"] == "old" or not Path(str(ref) + "_cov.npy").exists() or not Path(str(mine) + "_cov.npy").exists():
            continue
        cov, cov_ref = np.load(str(mine) + "_cov.npy"), np.load(str(ref) + "_cov.npy")
        rec["max_abs_cov_diff_vs_old"] = float(np.abs(cov - cov_ref).max())
        rec["max_abs_cov_vs_old"] = float(np.abs(cov_ref).max())
        rec["max_abs_mode_diff_vs_old"] = float(np.abs(np.load(str(mine) + "_mode.npy") - np.load(str(ref) + "_mode.npy")).max())
    return records


def table(results: dict) -> str:
    lines = [
        ("| path | bins | neurons | basis | parameters | MAP iterations | peak RSS (MiB) | peak / old | fit (s) | Hessian (s) "
        "| max abs cov diff vs old (max abs cov) | max abs mode diff vs old |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    old = {(r["n_bins"], r["n_neurons"]): r for r in results["records"] if r["path"] == "old" and "error" not in r}
    for r in results["records"]:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['n_bins']:,} | {r['n_neurons']} | {r['n_basis']} | | | {r['error'][:80]} | | | | | |")
            continue
        ref = old.get((r["n_bins"], r["n_neurons"]))
        ratio = f"{r['peak_rss_mib'] / ref['peak_rss_mib']:.2f}" if ref else ""
        cov = (f"{r['max_abs_cov_diff_vs_old']:.1e} ({r['max_abs_cov_vs_old']:.2g})"
               if "max_abs_cov_diff_vs_old" in r else "")
        md = f"{r['max_abs_mode_diff_vs_old']:.1e}" if "max_abs_mode_diff_vs_old" in r else ""
        lines.append(
            f"| {r['path']} | {r['n_bins']:,} | {r['n_neurons']} | {r['n_basis']} | {r['n_params']:,} "
            f"| {r['n_iter']}{'' if r['converged'] else ' (capped, not converged)'} "
            f"| {r['peak_rss_mib']:,.0f} | {ratio} | {r['fit_s']:.1f} | {r['hessian_s']:.1f} | {cov} | {md} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--big", action="store_true", help="also 1,000,000 bins x 50 neurons (glm path)")
    parser.add_argument("--only-big", action="store_true", help="only the 1,000,000-bin row")
    parser.add_argument("--big-max-iter", type=int, default=None,
                        help="cap the MAP iterations of the 1,000,000-bin row (its peak memory does not depend on them)")
    parser.add_argument("--device", action="store_true", help="let JAX use its default platform (GPU) instead of the CPU")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return
    mode = "quick" if args.quick else "full"
    sizes = [] if args.only_big else list(SIZES[mode])
    if args.big or args.only_big:
        sizes += SIZES["big"]
    facts = _common.machine_facts()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        records = run_all(sizes, Path(work), mode="big" if args.big or args.only_big else mode, device=args.device,
                          big_max_iter=args.big_max_iter)
    results = {"mode": mode, "big": bool(args.big or args.only_big), "device": args.device, "machine": facts,
               "total_s": time.perf_counter() - t0, "loadavg_at_end": _common.loadavg(), "records": records}
    ran = [r for r in records if "devices" in r]
    results["devices"] = ran[0]["devices"] if ran else ["?"]
    stem = "laplace_memory" + ("_quick" if args.quick else "") + ("_big" if args.only_big else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    md = [
        "# Laplace memory: coupled Poisson GLM, `fit(method='laplace')`",
        "",
        (f"Command: `python bench/laplace_memory.py{' --quick' if args.quick else ''}"
        f"{' --big' if args.big else ''}{' --only-big' if args.only_big else ''}"
        f"{f' --big-max-iter {args.big_max_iter}' if args.big_max_iter else ''}{' --device' if args.device else ''}`; "
        f"devices {', '.join(results['devices'])}; {facts.get('cpus')} CPUs, {facts.get('memory_total_gib')} GiB; "
        f"load average at start {facts['loadavg_at_start']}, at end {results['loadavg_at_end']} "
        f"(other jobs inflate times, not memory); total {results['total_s']:.0f} s."),
        "",
        ("Peak RSS of a fresh process for the whole fit (MAP, Hessian, 100 draws); `old` = `jax.hessian` "
        "of the whole potential (before issue 21), `blocked` = the generic column-blocked Hessian "
        "(`hessian=None`), `glm` = the per-neuron Gram Hessians (the default now). Differences are "
        "against `old` in the same run."),
        "",
        table(results),
        "",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
