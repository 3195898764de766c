"""Benchmark: GPFA by exact EM, bayesneuro (``bayesneuro.latent.gpfa.GPFA``) vs elephant 1.2.

Both tools fit the same model to the same simulated trials: Gaussian-process factor analysis
(Yu et al. 2009) of square-root spike counts, squared-exponential GP latents with GP noise
``eps = 1e-3``, diagonal noise with the floor ``0.01 * var``, timescales learnt in the M-step,
from the SAME start (bayesneuro's deterministic factor-analysis initialisation, computed once in
the parent and given to elephant), with ``tol = 1e-8`` and at most 500 iterations. The
convergence rules differ: elephant stops when the last step's gain falls below ``tol`` times the
gain since step 2; bayesneuro (``bayesneuro.engine.em.run_em``, the one rule of every EM in the
package) when one plain EM step changes the log-likelihood by at most ``tol * max(1, |ll|)``.
The main row therefore compares the log-likelihoods reached (by one common function) as well
as the times.

- bayesneuro: ``GPFA(n_latents, init_timescale=...).fit(data, max_iter=500, tol=1e-8)``
  on a ``SpikeData`` of the counts (its own factor-analysis start is the parent's, bit for bit),
  with the default SQUAREM-accelerated EM (tool ``bayesneuro``) and with plain EM,
  ``squarem=False`` (tool ``bayesneuro-em``: step for step elephant's algorithm). The main
  row compares the tools at convergence (or 500 E-steps) and at their log-likelihoods.
- elephant: ``elephant.gpfa.gpfa_core.em(params_init, seqs, max_iters=500, tol=1e-8,
  freq_ll=1)`` on whole trials (``seqs[k].y = sqrt(counts).T``). elephant's user-facing
  ``GPFA.fit`` additionally cuts trials into 20-bin segments and starts from sklearn's
  factor analysis (randomised SVD), i.e. fits a different objective from a different start; its
  core EM on whole trials is the algorithm both implement. ``freq_ll=1`` evaluates the
  likelihood (and so the convergence test) at every iteration, as bayesneuro does.

Every fit runs in a fresh subprocess (peak RSS from ``getrusage``); bayesneuro is called twice on
the same data (the first call includes JIT compilation), elephant once (nothing to compile). The
parent evaluates every solution with ONE numpy function (:func:`common_log_likelihood`, the exact
marginal likelihood through the ``K^{-1} + I kron C'R^{-1}C`` posterior precision, independent of
both codes).

Scaling rows (trials, neurons, bins) run a FIXED number of plain EM iterations in both tools
(``bayesneuro-em`` and elephant, convergence test off) so that times compare the same work; elephant is skipped along an axis
once one of its runs passes ``--elephant-limit`` seconds.

Usage::

    python bench/latent_gpfa.py --quick   # smoke test, < 2 minutes
    python bench/latent_gpfa.py           # full benchmark (run on an idle machine)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

BIN_SIZE = 0.02  # seconds
EPS = 1e-3
MIN_VAR_FRAC = 0.01
TOL = 1e-8
MAX_ITER = 500
INIT_TIMESCALE = 0.1  # seconds, elephant's default tau_init (100 ms)
TRUE_TIMESCALES = np.array([0.05, 0.1, 0.2, 0.4, 0.8, 0.15])  # seconds, first n_latents used
SEED = 20240611

SIZES = {
    # main: (trials, neurons, bins, latents); axes: the varied values, others at main
    "full": {
        "main": (100, 50, 50, 4),
        "trials": [25, 50, 100, 200],
        "neurons": [25, 50, 100, 200],
        "bins": [25, 50, 100, 200],
        "scaling_iters": 50,
        "timeout": 1800,
    },
    "quick": {
        "main": (30, 20, 25, 3),
        "trials": [15, 30],
        "neurons": [10, 20],
        "bins": [13, 25],
        "scaling_iters": 20,
        "timeout": 300,
    },
}


# ----------------------------------------------------------------------------- simulation


def simulate(n_trials: int, n_neurons: int, n_bins: int, n_latents: int, seed: int = SEED) -> dict:
    """Poisson counts whose square root is a GPFA read-out: ``counts ~ Poisson((C x + d)_+^2)``.

    numpy only. Timescales ``TRUE_TIMESCALES[:n_latents]``; ``d ~ U(0.7, 1.4)`` (about 25-100
    spikes/s at 20 ms bins), ``C ~ N(0, 0.35^2)``.

    Returns
    -------
    dict
        ``counts`` (trial, bin, neuron) int64 and the true ``C``, ``d``, ``timescales`` (s).
    """
    rng = np.random.default_rng([seed, n_trials, n_neurons, n_bins, n_latents])
    tau = TRUE_TIMESCALES[:n_latents] / BIN_SIZE
    lag = np.subtract.outer(np.arange(n_bins), np.arange(n_bins))
    x = np.empty((n_trials, n_bins, n_latents))
    for i in range(n_latents):
        K = (1 - EPS) * np.exp(-0.5 * lag**2 / tau[i] ** 2) + EPS * np.eye(n_bins)
        x[:, :, i] = rng.normal(size=(n_trials, n_bins)) @ np.linalg.cholesky(K).T
    C = rng.normal(scale=0.35, size=(n_neurons, n_latents))
    d = rng.uniform(0.7, 1.4, n_neurons)
    counts = rng.poisson(np.clip(x @ C.T + d, 0.0, None) ** 2)
    return {"counts": counts, "C": C, "d": d, "timescales": TRUE_TIMESCALES[:n_latents]}


def common_log_likelihood(counts: np.ndarray, C, d, R, tau_bins, eps=EPS) -> float:
    """Exact GPFA log-likelihood of ``sqrt(counts)``, in numpy (independent of both tools).

    Per trial ``log N(y; d, (I kron C) K (I kron C)' + I kron R)`` through the posterior
    precision ``M = K^{-1} + I kron C'R^{-1}C`` (time-major): ``log|Sigma_y| = T log|R| + log|K|
    + log|M|`` and ``r' Sigma_y^{-1} r = r'R^{-1}r - b'M^{-1}b``, ``b = (I kron C'R^{-1}) r``.
    """
    y = np.sqrt(np.asarray(counts, dtype=np.float64))
    n, T, N = y.shape
    C, d, R, tau = (np.asarray(a, dtype=np.float64) for a in (C, d, R, tau_bins))
    q = C.shape[1]
    lag = np.subtract.outer(np.arange(T), np.arange(T))
    Kinv = np.zeros((T * q, T * q))
    logdet_K = 0.0
    for i in range(q):
        K = (1 - eps) * np.exp(-0.5 * lag**2 / tau[i] ** 2) + eps * np.eye(T)
        sign, ld = np.linalg.slogdet(K)
        logdet_K += ld
        Kinv[i::q, i::q] = np.linalg.inv(K)
    CRC = (C / R[:, None]).T @ C
    M = Kinv + np.kron(np.eye(T), CRC)
    Lm = np.linalg.cholesky(M)
    r = y - d  # (n, T, N)
    b = (r / R) @ C  # (n, T, q) -> time-major flat
    z = np.linalg.solve(Lm, b.reshape(n, T * q).T)  # (Tq, n)
    quad = np.sum(r**2 / R, axis=(1, 2)) - np.sum(z**2, axis=0)
    logdet = T * np.sum(np.log(R)) + logdet_K + 2 * np.sum(np.log(np.diag(Lm)))
    return float(np.sum(-0.5 * (N * T * np.log(2 * np.pi) + logdet + quad)))


# ----------------------------------------------------------------------------- workers (subprocess)


def worker_bayesneuro(spec: dict, data: dict) -> dict:
    """``GPFA(...).fit`` twice (the first call compiles). *** bayesneuro plugs in here. ***

    Tool ``bayesneuro``: the default fit (SQUAREM-accelerated EM); ``bayesneuro-em``: plain EM
    (``squarem=False``), step for step elephant's algorithm.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import bayesneuro as bn
    from bayesneuro.latent.gpfa import GPFA

    counts = data["counts"]
    sd = bn.SpikeData.from_trials(counts, bin_size=BIN_SIZE)
    tol = None if spec["fixed_iters"] else TOL
    max_iter = spec["fixed_iters"] or MAX_ITER
    squarem = spec["tool"] != "bayesneuro-em"
    out = {"calls": []}
    for _ in range(spec.get("repeats", 2)):
        t0 = time.perf_counter()
        gpfa = GPFA(spec["n_latents"], eps=EPS, min_var_frac=MIN_VAR_FRAC, init_timescale=INIT_TIMESCALE).fit(
            sd, max_iter=max_iter, tol=tol, squarem=squarem, progress=False)
        wall = time.perf_counter() - t0
        out["calls"].append({"wall_s": wall, "n_iter": int(gpfa.n_iter_), "converged": bool(gpfa.converged_),
                             "tool_log_likelihood": float(gpfa.log_likelihood_)})
    p = gpfa.params_
    out["params"] = {"C": p.loadings, "d": p.offset, "R": p.observation_var, "tau": p.timescales}
    out["settings"] = (f"GPFA({spec['n_latents']}, eps={EPS}, min_var_frac={MIN_VAR_FRAC}, "
                       f"init_timescale={INIT_TIMESCALE}).fit(data, max_iter={max_iter}, tol={tol}, squarem={squarem})")
    return out


def worker_elephant(spec: dict, data: dict) -> dict:
    """``elephant.gpfa.gpfa_core.em`` on whole trials from the shared start."""
    import warnings

    from elephant.gpfa import gpfa_core

    y = np.sqrt(np.asarray(data["counts"], dtype=np.float64))
    seqs = np.empty(len(y), dtype=[("T", int), ("y", object)])
    for k in range(len(y)):
        seqs[k] = (y.shape[1], np.ascontiguousarray(y[k].T))
    init = {
        "covType": "rbf",
        "gamma": 1.0 / data["init_tau"] ** 2,  # elephant: tau_bins = 1 / sqrt(gamma)
        "eps": np.full(spec["n_latents"], EPS),
        "d": data["init_d"].copy(),
        "C": data["init_C"].copy(),
        "R": np.diag(data["init_R"]),
        "notes": {"learnKernelParams": True, "learnGPNoise": False, "RforceDiagonal": True},
    }
    fixed = spec["fixed_iters"]
    # tol=-1e300 never stops early (elephant has no switch): exactly `fixed` iterations
    kwargs = {"max_iters": fixed, "tol": -1e300} if fixed else {"max_iters": MAX_ITER, "tol": TOL}
    out = {"calls": []}
    for _ in range(spec.get("repeats", 1)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _, lls, _ = gpfa_core.em(copy.deepcopy(init), seqs, min_var_frac=MIN_VAR_FRAC, freq_ll=1,
                                             verbose=False, **kwargs)
        wall = time.perf_counter() - t0
        out["calls"].append({"wall_s": wall, "n_iter": len(lls), "converged": bool(len(lls) < kwargs["max_iters"]),
                             "tool_log_likelihood_before_last_step": float(lls[-1])})
    out["params"] = {"C": params["C"], "d": params["d"], "R": np.diag(params["R"]),
                     "tau": 1.0 / np.sqrt(params["gamma"])}
    out["settings"] = f"gpfa_core.em(init, seqs, min_var_frac={MIN_VAR_FRAC}, freq_ll=1, {kwargs})"
    return out


WORKERS = {"bayesneuro": worker_bayesneuro, "bayesneuro-em": worker_bayesneuro, "elephant": worker_elephant}
SCALING_TOOLS = ("bayesneuro-em", "elephant")  # fixed iterations of the same algorithm: same work


def run_worker(spec: dict) -> None:
    """Subprocess entry point: load the data, fit, write ``{out}.json`` and ``{out}.npz``."""
    data = dict(np.load(spec["data"]))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = WORKERS[spec["tool"]](spec, data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    np.savez(spec["out"] + ".npz", **{k: np.asarray(v) for k, v in result.pop("params").items()})
    result.update(peak_rss_mib=peak / 1024, rss_before_fit_mib=rss0 / 1024)
    Path(spec["out"] + ".json").write_text(json.dumps(result))


def launch(tool: str, size: tuple, data_path: Path, work: Path, *, fixed_iters: int | None, timeout: float,
           repeats: int) -> dict:
    """Run one tool on one data set in a fresh Python process; return its record."""
    n_trials, n_neurons, n_bins, n_latents = size
    tag = f"{tool}_n{n_trials}_N{n_neurons}_T{n_bins}_q{n_latents}_{fixed_iters or 'conv'}"
    spec = {"tool": tool, "data": str(data_path), "n_latents": n_latents, "fixed_iters": fixed_iters,
            "repeats": repeats, "out": str(work / tag)}
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore", BAYESNEURO_PROGRESS="0")
    record = {"tool": tool, "size": list(size), "fixed_iters": fixed_iters}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        record["error"] = f"timeout after {timeout:.0f} s"
        return record
    record.update(process_s=time.perf_counter() - t0, loadavg_1min_before_after=[load0, os.getloadavg()[0]])
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        record["error"] = f"exit {proc.returncode}: " + " | ".join(tail)
        return record
    record.update(json.loads(Path(spec["out"] + ".json").read_text()))
    record["_params"] = dict(np.load(spec["out"] + ".npz"))
    return record


def prepare(size: tuple, work: Path) -> tuple[Path, dict]:
    """Simulate the data of one size, compute the shared start, save both for the workers."""
    from bayesneuro.latent.gpfa_gaussian import init_gpfa_params

    n_trials, n_neurons, n_bins, n_latents = size
    sim = simulate(*size)
    init = init_gpfa_params(np.sqrt(sim["counts"].astype(float)), n_latents, timescale=INIT_TIMESCALE / BIN_SIZE,
                            eps=EPS, min_var_frac=MIN_VAR_FRAC)
    path = work / f"data_n{n_trials}_N{n_neurons}_T{n_bins}_q{n_latents}.npz"
    np.savez(path, counts=sim["counts"], init_C=np.asarray(init.loadings), init_d=np.asarray(init.offset),
             init_R=np.asarray(init.observation_var), init_tau=np.asarray(init.timescales))
    silent = int(np.sum(sim["counts"].sum(axis=(0, 1)) == 0))
    return path, {"counts": sim["counts"], "silent_neurons": silent,
                  "mean_rate_hz": float(sim["counts"].mean() / BIN_SIZE)}


def evaluate(records: list[dict], data: dict) -> None:
    """Common log-likelihood of every solution; gap to bayesneuro's on the same size / setting."""
    for r in records:
        if "error" in r:
            continue
        p = r["_params"]
        r["log_likelihood"] = common_log_likelihood(data[tuple(r["size"])]["counts"], p["C"], p["d"], p["R"], p["tau"])
        r["timescales_s"] = (np.asarray(p["tau"]) * BIN_SIZE).tolist()
    for r in records:
        ref_tool = "bayesneuro-em" if r["fixed_iters"] else "bayesneuro"
        ref = next((b for b in records if b["tool"] == ref_tool and b["size"] == r["size"]
                    and b["fixed_iters"] == r["fixed_iters"] and "error" not in b), None)
        if ref is not None and "log_likelihood" in r:
            r["log_likelihood_minus_bayesneuro"] = r["log_likelihood"] - ref["log_likelihood"]


# ----------------------------------------------------------------------------- reporting


def steady(r: dict) -> float | None:
    """Time used for ratios and slopes: the second call if there is one, else the first."""
    if "error" in r:
        return None
    calls = r["calls"]
    return calls[1]["wall_s"] if len(calls) > 1 else calls[0]["wall_s"]


def slope(xs, ts) -> float | None:
    pts = [(x, t) for x, t in zip(xs, ts) if t]
    if len(pts) < 2:
        return None
    a, b = np.log(np.array(pts)).T
    return float(np.polyfit(a, b, 1)[0])


def _f(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def tables(results: dict) -> str:
    recs = results["records"]
    lines = []
    main = tuple(results["sizes"]["main"])
    find = {(r["tool"], tuple(r["size"]), r["fixed_iters"]): r for r in recs}
    n, N, T, q = main
    lines += [f"### Main comparison: {n} trials x {N} neurons x {T} bins of {BIN_SIZE * 1e3:g} ms, {q} latents, "
              f"converged (tol {TOL:g}, at most {MAX_ITER} iterations)", "",
              "| tool | first call (s) | second call (s) | elephant / bayesneuro | iterations | converged "
              "| log-likelihood (common numpy) | minus bayesneuro | timescales (ms) | peak RSS (MiB) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    bn_r = find.get(("bayesneuro", main, None))
    bn_t = steady(bn_r) if bn_r else None
    for tool in ["bayesneuro", "bayesneuro-em", "elephant"]:
        r = find.get((tool, main, None))
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {tool} | failed: {r['error'][:100]} | | | | | | | | |")
            continue
        c = r["calls"]
        second = _f(c[1]["wall_s"]) if len(c) > 1 else "(no JIT)"
        ratio = f"{steady(r) / bn_t:.1f}x" if bn_t else "n/a"
        taus = ", ".join(f"{1e3 * t:.1f}" for t in sorted(r["timescales_s"]))
        lines.append(f"| {tool} | {c[0]['wall_s']:.2f} | {second} | {ratio} | "
                     f"{' / '.join(str(x['n_iter']) for x in c)} | {' / '.join(str(x['converged']) for x in c)} | "
                     f"{r['log_likelihood']:.6f} | {_f(r.get('log_likelihood_minus_bayesneuro'), '+.2e')} | {taus} | "
                     f"{r['peak_rss_mib']:.0f} |")
    lines += ["", "bayesneuro: SQUAREM-accelerated EM (the default); bayesneuro-em: plain EM "
                  "(`squarem=False`), the same algorithm as elephant's. Iterations are E-steps (posteriors "
                  "of all trials)."]
    if bn_r and "error" not in bn_r:
        el = find.get(("elephant", main, None))
        if el and "error" not in el:
            lines += ["", f"elephant / bayesneuro with bayesneuro's first call (compilation included): "
                          f"{steady(el) / bn_r['calls'][0]['wall_s']:.1f}x. True timescales (ms): "
                          + ", ".join(f"{1e3 * t:g}" for t in sorted(TRUE_TIMESCALES[:q])) + "."]
        per = []
        for tool in ["bayesneuro", "bayesneuro-em", "elephant"]:
            r = find.get((tool, main, None))
            if r and "error" not in r:
                per.append(f"{tool} {1e3 * steady(r) / r['calls'][-1]['n_iter']:.1f} ms")
        lines += ["", "Time per E-step (second call): " + ", ".join(per) + "."]
    it = results["sizes"]["scaling_iters"]
    for axis, pos in [("trials", 0), ("neurons", 1), ("bins", 2)]:
        grid = results["sizes"][axis]
        sizes = [tuple(main[:pos]) + (v,) + tuple(main[pos + 1:]) for v in grid]
        if not any(("bayesneuro-em", s, it) in find for s in sizes):
            continue
        lines += ["", f"### Scaling in {axis} ({it} plain EM iterations in both, fixed; others at the main size)", "",
                  f"| {axis} | bayesneuro 1st / 2nd (s) | elephant (s) | elephant / bayesneuro "
                  "| log-lik. elephant minus bn | bn RSS (MiB) | elephant RSS (MiB) |", "|---|---|---|---|---|---|---|"]
        series = {"bayesneuro": [], "elephant": []}
        for v, s in zip(grid, sizes):
            b, e = find.get(("bayesneuro-em", s, it)), find.get(("elephant", s, it))
            cells = [str(v)]
            if b and "error" not in b:
                cells.append(f"{b['calls'][0]['wall_s']:.2f} / {_f(steady(b))}")
                series["bayesneuro"].append(steady(b))
            else:
                cells.append("failed" if b else "not run")
                series["bayesneuro"].append(None)
            if e and "error" not in e:
                cells.append(f"{steady(e):.2f}")
                series["elephant"].append(steady(e))
            else:
                cells.append(e["error"][:40] if e else "skipped")
                series["elephant"].append(None)
            ok = series["bayesneuro"][-1] and series["elephant"][-1]
            cells.append(f"{series['elephant'][-1] / series['bayesneuro'][-1]:.1f}x" if ok else "n/a")
            cells.append(_f(e.get("log_likelihood_minus_bayesneuro") if e else None, "+.2e"))
            cells.append(_f(b.get("peak_rss_mib") if b else None, ".0f"))
            cells.append(_f(e.get("peak_rss_mib") if e else None, ".0f"))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Slope of log(time) vs log({axis}): "
                  + ", ".join(f"{t} {_f(slope(grid, series[t]))}" for t in series)]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 2 min)")
    parser.add_argument("--tools", default="bayesneuro,bayesneuro-em,elephant")
    parser.add_argument("--sections", default="main,trials,neurons,bins")
    parser.add_argument("--elephant-limit", type=float, default=120.0,
                        help="skip larger elephant runs along an axis once one took longer (s)")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/latent_gpfa[_quick])")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return

    import jax

    jax.config.update("jax_enable_x64", True)
    import bayesneuro as bn
    import elephant

    mode = "quick" if args.quick else "full"
    sz = SIZES[mode]
    main_size = tuple(sz["main"])
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    sections = {s.strip() for s in args.sections.split(",")}
    plan = []  # (tool, size, fixed_iters, repeats, axis)
    if "main" in sections:
        plan += [(t, main_size, None, 1 if t == "elephant" else 2, "main") for t in tools]
    for pos, axis in enumerate(["trials", "neurons", "bins"]):
        if axis in sections:
            for v in sz[axis]:
                s = tuple(main_size[:pos]) + (v,) + tuple(main_size[pos + 1:])
                plan += [(t, s, sz["scaling_iters"], 1 if t == "elephant" else 2, axis) for t in tools
                         if t in SCALING_TOOLS]
    print(f"# GPFA benchmark ({mode}): {len(plan)} runs", flush=True)
    records, data, too_slow = [], {}, set()
    with tempfile.TemporaryDirectory(prefix="bench_gpfa_") as tmp:
        work = Path(tmp)
        paths = {}
        for tool, size, fixed, repeats, axis in plan:
            if size not in paths:
                paths[size], data[size] = prepare(size, work)
            if tool == "elephant" and axis in too_slow:
                records.append({"tool": tool, "size": list(size), "fixed_iters": fixed,
                                "error": f"skipped (a smaller run took > {args.elephant_limit:.0f} s)"})
                continue
            print(f"  {tool:10s} {axis:7s} trials={size[0]:4d} neurons={size[1]:4d} bins={size[2]:4d} "
                  f"latents={size[3]} iters={fixed or 'converge'} ...", end=" ", flush=True)
            r = launch(tool, size, paths[size], work, fixed_iters=fixed, timeout=sz["timeout"], repeats=repeats)
            if "error" in r:
                print(f"FAILED ({r['error'][:150]})", flush=True)
                if tool == "elephant" and axis != "main":
                    too_slow.add(axis)
            else:
                print(" / ".join(f"{c['wall_s']:.2f} s" for c in r["calls"])
                      + f", {r['calls'][-1]['n_iter']} iters, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
                if tool == "elephant" and axis != "main" and steady(r) > args.elephant_limit:
                    too_slow.add(axis)
            records.append(r)
    evaluate(records, data)
    results = {
        "mode": mode,
        "sizes": {"main": list(main_size), "trials": sz["trials"], "neurons": sz["neurons"], "bins": sz["bins"],
                  "scaling_iters": sz["scaling_iters"]},
        "settings": {"bin_size_s": BIN_SIZE, "eps": EPS, "min_var_frac": MIN_VAR_FRAC, "tol": TOL,
                     "max_iter": MAX_ITER, "init_timescale_s": INIT_TIMESCALE,
                     "true_timescales_s": TRUE_TIMESCALES.tolist(), "seed": SEED,
                     "dtype": "float64 (jax_enable_x64) for bayesneuro; numpy float64 for elephant"},
        "data": {"x".join(map(str, k)): {kk: vv for kk, vv in v.items() if kk != "counts"} for k, v in data.items()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "elephant": elephant.__version__,
                     "bayesneuro": bn.__version__, "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "records": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
    }
    header = (f"## GPFA benchmark ({mode})\n\n"
              f"Python {results['versions']['python']}, jax {jax.__version__}, elephant {elephant.__version__}, "
              f"{os.cpu_count()} CPU cores, float64, JAX_PLATFORMS=cpu. Same simulated trials and the same "
              f"factor-analysis start for both tools; elephant = `gpfa_core.em` on whole trials (freq_ll=1). "
              f"Log-likelihoods by one numpy function. 1-min load average around each run is in the JSON "
              f"(other jobs on the machine inflate times).\n")
    report = tables(results)
    print("\n" + header + "\n" + report)
    stem = Path(args.out) if args.out else RESULTS / ("latent_gpfa" if mode == "full" else "latent_gpfa_quick")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(header + "\n" + report + "\n")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")


if __name__ == "__main__":
    main()
