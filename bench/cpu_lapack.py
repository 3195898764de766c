"""Batched LAPACK on CPU: jaxlib's parallel batched kernels vs bayesneuro's loop of unbatched calls.

bayesneuro compiles every batched LAPACK call on CPU as a loop of unbatched calls
(``bayesneuro/_xla_cpu.py``) because jaxlib's parallel batched kernels deadlock XLA's thread pool
when several run at once on a small machine. This benchmark measures what the loop costs and
whether the deadlock is gone:

1. **Single batched calls** (no concurrency, so jaxlib's kernels cannot deadlock): the second-call
   time of ``cholesky``, ``solve`` and ``eigh`` on stacks of matrices, looped vs parallel, in the
   same process (each compiled separately).
2. **GPFA on a real recording** (``../shared/data/motor_cortex_rat_dhawale``: 60 trials of 2 s in
   20-ms bins, neurons with more than 50 spikes, 4 latents, ragged trials: 4 distinct lengths),
   each fit in its own subprocess, in turn: jaxlib's parallel kernels with OpenBLAS's own threads
   (what bayesneuro did before: ``BAYESNEURO_PARALLEL_LAPACK=1 BAYESNEURO_LAPACK_THREADS=0``), the
   loop with OpenBLAS's own threads (``BAYESNEURO_LAPACK_THREADS=0``), and the loop with one
   OpenBLAS thread per LAPACK call (the default now). A watchdog thread ends a run that uses no CPU
   for 30 s and reports it as deadlocked.

Usage::

    python bench/cpu_lapack.py --out bench/results/cpu_lapack
    python bench/cpu_lapack.py --quick --out bench/results/cpu_lapack_quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.choose_platform()  # JAX_PLATFORMS=cpu unless --device (this benchmark is about CPU LAPACK)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz"

GPFA_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time, json
    def watchdog(idle_s=30.0):
        def run():
            last = os.times(); t_last = time.time()
            while True:
                time.sleep(2.0)
                now = os.times()
                if (now.user + now.system) - (last.user + last.system) > 0.05:
                    last, t_last = now, time.time()
                elif time.time() - t_last > idle_s:
                    print(json.dumps({"deadlock": True}), flush=True); os._exit(3)
        threading.Thread(target=run, daemon=True).start()
    watchdog()
    import numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    import bayesneuro as bn
    from bayesneuro import _xla_cpu
    raw = np.load(sys.argv[1]); max_iter = int(sys.argv[2])
    n_bin, width = 100, 0.02
    t = raw["spiketimes"] / 1000.0
    b = np.floor(t / width + 1e-9).astype(int)
    ok = (b >= 0) & (b < n_bin)
    n_cell = int(raw["neuron_ids"].max()) + 1
    counts = np.zeros((len(raw["tap1"]), n_bin, n_cell), int)
    np.add.at(counts, (raw["trial_ids"][ok], b[ok], raw["neuron_ids"][ok]), 1)
    trials = np.random.default_rng(0).choice(len(raw["tap1"]), 60, replace=False)
    keep = np.flatnonzero(counts.sum((0, 1)) > 50)
    lengths = [n_bin - 5 * (i % 4) for i in range(len(trials))]
    data = bn.SpikeData.from_trials([counts[k, :n][:, keep] for k, n in zip(trials, lengths)],
                                    bin_size=width)
    t0 = time.perf_counter(); cpu0 = sum(os.times()[:2])
    g = bn.GPFA(4).fit(data, max_iter=max_iter, tol=0.0, progress=False)
    first = time.perf_counter() - t0; cpu = sum(os.times()[:2]) - cpu0
    t0 = time.perf_counter()
    g2 = bn.GPFA(4).fit(data, max_iter=max_iter, tol=0.0, progress=False)
    second = time.perf_counter() - t0
    print(json.dumps({"deadlock": False, "looped": _xla_cpu.is_installed(), "first_s": first,
                      "second_s": second, "cpu_s": cpu, "n_neuron": int(keep.size),
                      "log_lik": float(g2.log_likelihood(data).sum())}), flush=True)
    """
)


def micro(quick: bool) -> list[dict]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from bayesneuro import _xla_cpu

    cases = [("cholesky", 64, 20), ("cholesky", 16, 100), ("cholesky", 4, 300),
             ("solve", 64, 20), ("solve", 16, 100), ("eigh", 16, 50)]
    if quick:
        cases = cases[:2]
    ops = {"cholesky": jnp.linalg.cholesky,
           "solve": lambda a: jnp.linalg.solve(a, jnp.ones(a.shape[:-1] + (1,))),
           "eigh": lambda a: jnp.linalg.eigh(a)[0]}
    rows = []
    for op, batch, n in cases:
        x = np.random.default_rng(0).normal(size=(batch, n, n))
        a = jnp.asarray(x @ np.swapaxes(x, -1, -2) + n * np.eye(n))
        times = {}
        for mode in ("looped", "parallel", "looped", "parallel"):
            _xla_cpu.install() if mode == "looped" else _xla_cpu.uninstall()
            f = jax.jit(lambda v, op=op: ops[op](v) * 1.0)  # a new function: compiled in this mode
            f(a).block_until_ready()
            reps = 20
            t0 = time.perf_counter()
            for _ in range(reps):
                f(a).block_until_ready()
            times.setdefault(mode, []).append((time.perf_counter() - t0) / reps)
        _xla_cpu.install()
        row = {"op": op, "batch": batch, "n": n, "looped_ms": 1e3 * min(times["looped"]),
               "parallel_ms": 1e3 * min(times["parallel"])}
        row["looped_over_parallel"] = row["looped_ms"] / row["parallel_ms"]
        rows.append(row)
        print(row, flush=True)
    return rows


def gpfa(quick: bool, device: bool = False) -> list[dict]:
    if not DATA.exists():
        print(f"skipping GPFA: {DATA} not found")
        return []
    runs = 1 if quick else 3
    max_iter = 5 if quick else 20
    rows = []
    for i in range(runs):
        for mode in ("parallel, BLAS threads (before)", "looped, BLAS threads", "looped, 1 BLAS thread (default)"):
            env = _common.worker_env(device, BAYESNEURO_PROGRESS="0")
            env.pop("BAYESNEURO_PARALLEL_LAPACK", None)
            env.pop("BAYESNEURO_LAPACK_THREADS", None)
            if mode.startswith("parallel"):
                env["BAYESNEURO_PARALLEL_LAPACK"] = "1"
            if "BLAS threads" in mode:
                env["BAYESNEURO_LAPACK_THREADS"] = "0"
            t0 = time.perf_counter()
            try:
                out = subprocess.run([sys.executable, "-W", "ignore", "-c", GPFA_SCRIPT, str(DATA),
                                      str(max_iter)], capture_output=True, text=True, env=env, check=False,
                                     timeout=900)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                row = json.loads(lines[-1]) if lines else {"error": out.stderr[-500:]}
            except subprocess.TimeoutExpired:
                row = {"deadlock": None, "error": "timeout 900 s"}
            row.update(mode=mode, run=i, wall_s=time.perf_counter() - t0, max_iter=max_iter)
            rows.append(row)
            print(row, flush=True)
    return rows


def write(out: str, micro_rows: list[dict], gpfa_rows: list[dict]) -> None:
    lines = ["# Batched LAPACK on CPU: looped (bayesneuro) vs parallel (jaxlib)", "",
             (f"`python bench/cpu_lapack.py` on {os.cpu_count()} CPU cores, float64, "
              f"load average {os.getloadavg()[0]:.1f} at the end."), "",
             "## Single batched calls (second call, best of 2 x 20 calls, one OpenBLAS thread per call)", "",
             "| op | batch | n | looped (ms) | parallel (ms) | looped / parallel |",
             "|---|---|---|---|---|---|"]
    for r in micro_rows:
        lines.append(f"| {r['op']} | {r['batch']} | {r['n']} | {r['looped_ms']:.3f} | "
                     f"{r['parallel_ms']:.3f} | {r['looped_over_parallel']:.2f} |")
    lines += ["", "## GPFA on a real recording (60 ragged trials, 4 latents)", "",
              "| run | lowering | deadlocked | first fit (s) | second fit (s) | CPU (s) | log-lik. |",
              "|---|---|---|---|---|---|---|"]
    for r in gpfa_rows:
        if r.get("deadlock"):
            lines.append(f"| {r['run']} | {r['mode']} | **yes** (no CPU for 30 s; {r['wall_s']:.0f} s "
                         "wall) | - | - | - | - |")
        elif "first_s" in r:
            lines.append(f"| {r['run']} | {r['mode']} | no | {r['first_s']:.1f} | {r['second_s']:.1f} "
                         f"| {r['cpu_s']:.1f} | {r['log_lik']:.3f} |")
        else:
            lines.append(f"| {r['run']} | {r['mode']} | ? | {r.get('error', '')[:80]} | | | |")
    Path(out + ".md").write_text("\n".join(lines) + "\n")
    Path(out + ".json").write_text(json.dumps({"micro": micro_rows, "gpfa": gpfa_rows}, indent=1))
    print("wrote", out + ".md")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--skip-gpfa", action="store_true")
    _common.add_device_argument(p)
    args = p.parse_args(argv)
    m = micro(args.quick)
    g = [] if args.skip_gpfa else gpfa(args.quick, args.device)
    if args.out:
        write(args.out, m, g)


if __name__ == "__main__":
    main()
