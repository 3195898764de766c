"""Run time of second calls with and without bayesneuro's CPU compile options, in one process.

:mod:`bayesneuro._jit` compiles bayesneuro's outermost programs on a CPU with XLA's elemental
emitters (``xla_cpu_use_fusion_emitters=False``): shorter compilation, and kernels that can run at a
different speed. Single fresh-process runs (``bench/compile.py --ab``) are too noisy for run-time
differences of 10-30%, so this script fits each estimator of ``bench/compile.py`` (its data, its
fit) in ONE process, compiles both variants, then alternates ``reps`` pairs of timed fits (the
order flips every pair) and reports the medians.

Usage::

    python bench/compile_runtime_ab.py                       # all estimators, 5 pairs
    python bench/compile_runtime_ab.py --only glm_map,kalman --reps 9

Float64, ``JAX_PLATFORMS=cpu``. Prints a markdown table (``--out FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv=None) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import compile as C

    import bayesneuro._jit as bj

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(C.ESTIMATORS)}")
    parser.add_argument("--reps", type=int, default=5, help="timed pairs per estimator")
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else [n for n in C.ESTIMATORS if n not in ("factor_analysis", "neuron_statistics")]
    lines = ["| estimator | second call, bayesneuro options (s, median) | XLA defaults (s, median) | options / defaults |",
             "|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    warnings.simplefilter("ignore")
    for name in names:
        make, fit, _ = C.ESTIMATORS[name]()
        data = make(1.0, 1.0)
        for mode in (True, False):  # compile both variants
            bj.set_fast_cpu_compile(mode)
            fit(data)
        times = {True: [], False: []}
        for r in range(args.reps):
            for mode in (True, False) if r % 2 == 0 else (False, True):
                bj.set_fast_cpu_compile(mode)
                t0 = time.perf_counter()
                fit(data)
                times[mode].append(time.perf_counter() - t0)
        fast, plain = statistics.median(times[True]), statistics.median(times[False])
        lines.append(f"| {name} | {fast:.4f} | {plain:.4f} | {fast / plain:.2f} |")
        print(lines[-1], flush=True)
    bj.set_fast_cpu_compile(True)
    if args.out:
        Path(args.out).write_text(
            f"# Second-call run time, bayesneuro CPU compile options vs XLA defaults\n\n"
            f"`python bench/compile_runtime_ab.py --reps {args.reps}`; one process, {args.reps} alternating pairs "
            f"per estimator, load average at the end {os.getloadavg()[0]:.1f}.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
