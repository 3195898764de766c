"""Assembly detection at scale: streamed correlations against the plain numpy/sklearn version.

Issue 22, point 5: ensemble detection (the Marchenko-Pastur bound, ICA patterns and activation
strength of Lopes-dos-Santos et al. 2013) on 500 neurons x 1,000,000 bins in bounded memory,
timed against a plain numpy + sklearn implementation of the same method on the same data.

The counts (uint8, with planted assemblies) are written once to a memory-mapped file. Each tool
runs in a fresh process (``bench/_common.launch_worker``) and reports its wall time and peak
resident memory (``getrusage``):

- ``bayesneuro``: ``density.assemblies.assembly_patterns(memmap, key=0)`` and
  ``assembly_activity``: the file is read chunk by chunk (16,384 bins), memory
  O(N^2 + chunk x N + T x K);
- ``numpy``: ``X = memmap.astype(float64)``, ``Z = (X - mean) / std``, ``C = Z'Z / T``,
  ``numpy.linalg.eigh``, the Marchenko-Pastur count, ``sklearn.decomposition.FastICA`` on the
  whitened projections, ``R = (Z w)^2 - (Z^2)(w^2)``: memory O(T x N) in float64.

Both must find the same number of assemblies with the same patterns (largest |cosine| between
matched patterns reported) and the same activation strength.

Usage::

    python bench/ensembles.py              # 500 x 1,000,000 (needs ~10 GB free for the numpy row)
    python bench/ensembles.py --quick      # 100 x 100,000

Writes ``bench/results/ensembles{,_quick}.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common

_common.choose_platform()
import numpy as np

RESULTS = HERE / "results"
SIZES = {"full": (1_000_000, 500), "quick": (100_000, 100)}
GROUPS = 6  # planted assemblies of 10-30 neurons


def make_data(path: Path, T: int, N: int, seed: int = 0) -> list[list[int]]:
    """Counts with planted assemblies, written in chunks (never all in memory as float64)."""
    rng = np.random.default_rng(seed)
    groups = []
    free = rng.permutation(N)
    start = 0
    for g in range(GROUPS):
        size = int(rng.integers(10, 31)) if N >= 200 else int(rng.integers(5, 11))
        groups.append(sorted(free[start:start + size].tolist()))
        start += size
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(T, N))
    base = rng.uniform(0.05, 0.5, N)
    for a in range(0, T, 100_000):
        b = min(a + 100_000, T)
        rate = np.broadcast_to(base, (b - a, N)).copy()
        for g in groups:
            on = rng.random(b - a) < 0.01
            rate[np.ix_(on, g)] += 2.0
        mm[a:b] = np.minimum(rng.poisson(rate), 255)
    mm.flush()
    return groups


def worker(spec: dict) -> None:
    mm = np.load(spec["data"], mmap_mode="r")
    T, N = mm.shape
    out = {}
    if spec["tool"] == "bayesneuro":  # imports outside the timing (and in the baseline memory of both)
        from bayesneuro.density.assemblies import assembly_activity, assembly_patterns, correlation_matrix
    else:
        from sklearn.decomposition import FastICA
    out["rss_after_imports_mib"] = _common.current_rss_mib()
    t0 = time.perf_counter()
    if spec["tool"] == "bayesneuro":
        stats = correlation_matrix(mm)
        res = assembly_patterns(mm, key=0, stats=stats)
        R = assembly_activity(mm, res, stats=stats)
        patterns, k = res.patterns, res.n_assemblies
    else:
        X = np.asarray(mm, dtype=np.float64)
        Z = (X - X.mean(0)) / X.std(0)
        del X
        C = Z.T @ Z / T
        lam, E = np.linalg.eigh(C)
        lam, E = lam[::-1], E[:, ::-1]
        k = int(np.sum(lam > (1 + np.sqrt(N / T)) ** 2))
        P = E[:, :k] / np.sqrt(lam[:k])
        Y = Z @ P
        W = FastICA(whiten=False, fun="logcosh", algorithm="parallel", tol=1e-10, max_iter=500,
                    random_state=0).fit(Y).components_
        V = P @ W.T
        V = V / np.linalg.norm(V, axis=0)
        V = V * np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(k)])
        patterns = V.T
        R = (Z @ V) ** 2 - (Z**2) @ (V**2)
    out["seconds"] = time.perf_counter() - t0
    out["n_assemblies"] = int(k)
    out["peak_rss_mib"] = _common.peak_rss_mib()
    np.save(spec["out"] + "_patterns.npy", np.asarray(patterns))
    np.save(spec["out"] + "_activity_head.npy", np.asarray(R[:20_000]))
    Path(spec["out"] + ".json").write_text(json.dumps(out))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    _common.add_device_argument(parser)
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        worker(json.loads(args._worker))
        return
    mode = "quick" if args.quick else "full"
    T, N = SIZES[mode]
    stem = Path(args.out) if args.out else RESULTS / ("ensembles" + ("_quick" if args.quick else ""))
    work = Path(tempfile.mkdtemp(prefix="bn_ens_"))
    data = work / "counts.npy"
    t0 = time.perf_counter()
    groups = make_data(data, T, N)
    facts = _common.machine_facts()
    load0 = _common.loadavg()
    rows = {}
    for tool in ("bayesneuro", "numpy"):
        spec = {"tool": tool, "data": str(data), "out": str(work / tool)}
        rows[tool] = _common.launch_worker(__file__, spec, timeout=3600, env=_common.worker_env(args.device))
        print(tool, {k: v for k, v in rows[tool].items() if k != "loadavg_1min_before_after"}, flush=True)
    agree = {}
    if all("error" not in r for r in rows.values()):
        a, b = (np.load(work / f"{t}_patterns.npy") for t in ("bayesneuro", "numpy"))
        if a.shape == b.shape and a.size:
            cos = np.abs(a @ b.T)
            agree["min_matched_cosine"] = float(cos.max(axis=1).min())
            ra, rb = (np.load(work / f"{t}_activity_head.npy") for t in ("bayesneuro", "numpy"))
            order = cos.argmax(axis=1)
            agree["activity_max_rel_diff"] = float(np.max(np.abs(ra - rb[:, order])) / np.max(np.abs(rb)))
        members = [sorted(np.flatnonzero(p > 1 / np.sqrt(N)).tolist()) for p in a]
        agree["planted_found"] = int(sum(any(m == g for m in members) for g in groups))
    res = {"mode": mode, "T": T, "N": N, "planted": len(groups), "rows": rows, "agreement": agree,
           "machine": facts, "loadavg_start": load0, "loadavg_end": _common.loadavg(),
           "total_s": time.perf_counter() - t0}
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(str(stem) + ".json").write_text(json.dumps(res, indent=1, default=str))
    lines = [f"## Assembly detection: streamed (bayesneuro) vs plain numpy + sklearn ({mode})", "",
             f"{facts.get('platform', '')}; {N} neurons x {T:,} bins (uint8 memmap), {len(groups)} planted "
             f"assemblies. Load average at start {load0}, at end {res['loadavg_end']}.", "",
             "| tool | seconds | peak memory (MiB) | after imports (MiB) | assemblies found | time ratio (bn / numpy) | memory ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    nb, npy = rows["bayesneuro"], rows["numpy"]
    for tool, r in rows.items():
        if "error" in r:
            lines.append(f"| {tool} | error: {r['error']} | | | | | |")
            continue
        tr = (f"{nb['seconds'] / npy['seconds']:.2f}x" if tool == "bayesneuro" and "error" not in npy else "1.00x"
              if tool == "numpy" else "n/a")
        mr = (f"{nb['peak_rss_mib'] / npy['peak_rss_mib']:.2f}x" if tool == "bayesneuro" and "error" not in npy
              else "1.00x" if tool == "numpy" else "n/a")
        lines.append(f"| {tool} | {r['seconds']:.1f} | {r['peak_rss_mib']:,.0f} | {r['rss_after_imports_mib']:,.0f} | "
                     f"{r['n_assemblies']} | {tr} | {mr} |")
    lines += ["", f"Agreement: {agree} (smallest |cosine| between matched patterns; largest difference of "
              "the activation strength over the first 20,000 bins, relative to its maximum; planted assemblies "
              "whose members are exactly one pattern's members).", "",
              "Command: `python bench/ensembles.py" + (" --quick" if args.quick else "") + "`"]
    Path(str(stem) + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
