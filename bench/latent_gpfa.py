"""Benchmark: GPFA, bayesneuro (``bayesneuro.latent.gpfa.GPFA``) vs ``elephant.gpfa.GPFA.fit`` as users call it.

Both tools fit GPFA (Yu et al. 2009) to the same simulated spike counts, each with its own
defaults: elephant ``GPFA(x_dim=q).fit(spiketrains)`` (20 ms bins, trials cut into 20-bin
segments, sklearn factor-analysis start, ``em_max_iters=500``, ``em_tol=1e-8``, timescale start
100 ms, square-root counts); bayesneuro ``GPFA(q).fit(SpikeData)`` (whole trials, its own
factor-analysis start, SQUAREM-accelerated exact EM, ``max_iter=500``, ``tol=1e-8``, the same
square-root counts, 100 ms start). Four sizes vary trials, neurons, bins and latents; one has
ragged trials (lengths drawn uniformly between half and all of the bins).

Scores, by ONE numpy function for both tools (independent of both codes):

- ``log-lik``: exact GPFA marginal log-likelihood of the training trials' square-root counts
  (whole trials, any lengths) under each tool's fitted ``C, d, R, tau``;
- ``co-smoothing``: on held-out trials (simulated from the same model), the latents are
  inferred from the first 75% of the neurons (exact posterior mean) and the remaining 25% are
  predicted, ``C_out E[x | y_in] + d_out``; the score is the R^2 of their square-root counts.

Times: each tool runs in a fresh subprocess, bayesneuro twice on the same data (first call:
tracing and XLA compilation included; second call: compiled programs reused), elephant once
(nothing to compile; its second call would time the same work). Ratios are elephant's time
over bayesneuro's. A second table times Poisson GPFA (``observation="poisson"``, the default
``method="map"``: Laplace-EM then the MAP of paths and read-outs) against the Gaussian fit on
the same counts, both in one process after their first calls.

On the long and ragged sizes a third row fits bayesneuro on elephant's 20-bin segments
(``GPFA(q, segment_length=20)``): the same approximation as elephant's ``GPFA.fit`` (each EM step
factorises one 20-bin covariance instead of one per distinct trial length), scored by the same
whole-trial log-likelihood and co-smoothing.

Usage::

    python bench/latent_gpfa.py --quick      # smoke test
    python bench/latent_gpfa.py              # full benchmark (run on an idle machine)
    python bench/latent_gpfa.py --device     # let JAX use an accelerator if it finds one
    python bench/latent_gpfa.py --sizes ragged --out bench/results/latent_gpfa_segments  # one size
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if "--device" not in sys.argv and "--_worker" not in sys.argv:  # workers get it from the parent
    os.environ["JAX_PLATFORMS"] = "cpu"

import _common
import numpy as np

RESULTS = HERE / "results"
BIN_SIZE = 0.02  # seconds (elephant's default bin)
EPS = 1e-3
TRUE_TIMESCALES = np.array([0.05, 0.1, 0.2, 0.4, 0.8, 0.15])  # seconds, first n_latents used
SEED = 20240611
HELD_IN = 0.75  # fraction of neurons the co-smoothing latents are inferred from

# name: (training trials, neurons, bins (max for ragged), latents, ragged)
SIZES = {
    "full": {"trials": (120, 40, 40, 3, False), "neurons": (40, 100, 50, 4, False),
             "bins+latents": (30, 40, 100, 6, False), "ragged": (60, 50, 80, 4, True)},
    "quick": {"small": (20, 12, 30, 2, False), "ragged": (20, 12, 40, 2, True)},
}
POISSON = {"full": (30, 30, 50, 3), "quick": (10, 10, 30, 2)}
# sizes where bayesneuro also fits on elephant's 20-bin segments (``GPFA(segment_length=20)``): the
# same approximation as elephant's GPFA.fit, scored by the same whole-trial log-likelihood
SEGMENTED = {"full": ("trials", "neurons", "bins+latents", "ragged"), "quick": ("ragged",)}
SEGMENT_LENGTH = 20


def simulate(n_trials: int, n_neurons: int, n_bins: int, n_latents: int, ragged: bool, seed: int = SEED):
    """Counts whose square root is a GPFA read-out, ``counts ~ Poisson((C x + d)_+^2)`` (numpy).

    Returns a list of ``(time, neuron)`` int arrays (training trials, then 25% more held-out
    trials)."""
    rng = np.random.default_rng([seed, n_trials, n_neurons, n_bins, n_latents, int(ragged)])
    n_all = n_trials + max(4, n_trials // 4)
    tau = TRUE_TIMESCALES[:n_latents] / BIN_SIZE
    lag = np.subtract.outer(np.arange(n_bins), np.arange(n_bins))
    x = np.empty((n_all, n_bins, n_latents))
    for i in range(n_latents):
        K = (1 - EPS) * np.exp(-0.5 * lag**2 / tau[i] ** 2) + EPS * np.eye(n_bins)
        x[:, :, i] = rng.normal(size=(n_all, n_bins)) @ np.linalg.cholesky(K).T
    C = rng.normal(scale=0.35, size=(n_neurons, n_latents))
    d = rng.uniform(0.7, 1.4, n_neurons)
    counts = rng.poisson(np.clip(x @ C.T + d, 0.0, None) ** 2)
    lengths = rng.integers(n_bins // 2, n_bins + 1, n_all) if ragged else np.full(n_all, n_bins)
    return [counts[k, : lengths[k]] for k in range(n_all)]


def _kernel(T: int, tau: float) -> np.ndarray:
    lag = np.subtract.outer(np.arange(T), np.arange(T))
    return (1 - EPS) * np.exp(-0.5 * lag**2 / tau**2) + EPS * np.eye(T)


def _posterior(y, C, d, R, tau):
    """Exact GPFA posterior means ``(time, latent)`` and ``log p(y)`` of one trial (numpy,
    time-major precision ``K^{-1} + I kron C'R^{-1}C``)."""
    T, N = y.shape
    q = C.shape[1]
    Kinv = np.zeros((T * q, T * q))
    logdet_K = 0.0
    for i in range(q):
        K = _kernel(T, tau[i])
        logdet_K += np.linalg.slogdet(K)[1]
        Kinv[i::q, i::q] = np.linalg.inv(K)
    M = Kinv + np.kron(np.eye(T), (C / R[:, None]).T @ C)
    Lm = np.linalg.cholesky(M)
    r = y - d
    b = ((r / R) @ C).reshape(T * q)
    z = np.linalg.solve(Lm, b)
    mean = np.linalg.solve(Lm.T, z).reshape(T, q)
    quad = np.sum(r**2 / R) - z @ z
    logdet = T * np.sum(np.log(R)) + logdet_K + 2 * np.sum(np.log(np.diag(Lm)))
    return mean, -0.5 * (N * T * np.log(2 * np.pi) + logdet + quad)


def scores(train, test, params) -> dict:
    """The common scores of fitted ``(C, d, R, tau_bins)``: training log-likelihood and
    co-smoothing R^2 of the held-out neurons on held-out trials."""
    C, d, R, tau = (np.asarray(a, dtype=np.float64) for a in params)
    ll = sum(_posterior(np.sqrt(y), C, d, R, tau)[1] for y in train)
    N = C.shape[0]
    k = round(HELD_IN * N)
    pred, obs = [], []
    for y in test:
        s = np.sqrt(y)
        m, _ = _posterior(s[:, :k], C[:k], d[:k], R[:k], tau)
        pred.append(m @ C[k:].T + d[k:])
        obs.append(s[:, k:])
    pred, obs = np.concatenate(pred), np.concatenate(obs)
    r2 = 1.0 - np.sum((obs - pred) ** 2) / np.sum((obs - obs.mean(axis=0)) ** 2)
    return {"log_likelihood": float(ll), "cosmoothing_r2": float(r2)}


# ----------------------------------------------------------------------------- workers (subprocess)


def _jax(device: bool):
    import jax

    jax.config.update("jax_enable_x64", True)
    if not device:
        jax.config.update("jax_platforms", "cpu")
    return jax


def worker_bayesneuro(spec: dict, train) -> dict:
    """``GPFA(q).fit(SpikeData)`` twice (the first call compiles), with XLA compilations counted
    (``segment_length`` from the spec: None, whole trials, or elephant's 20-bin segments)."""
    jax = _jax(spec["device"])
    import bayesneuro as bn
    from bayesneuro._shapes import count_compilations
    from bayesneuro.latent.gpfa import GPFA

    data = bn.SpikeData.from_trials(train, bin_size=BIN_SIZE)
    out = {"devices": [str(d) for d in jax.devices()], "calls": []}
    for _ in range(2):
        with warnings.catch_warnings(), count_compilations() as cc:
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            m = GPFA(spec["latents"], init_timescale=0.1,
                     segment_length=spec.get("segment_length")).fit(data, progress=False)
            t = time.perf_counter() - t0
        out["calls"].append({"seconds": t, "compilations": cc.compilations, "compile_seconds": cc.seconds,
                             "n_iter": int(m.n_iter_), "converged": bool(m.converged_)})
    p = m.params_
    out["params"] = [np.asarray(a).tolist() for a in (p.loadings, p.offset, p.observation_var, p.timescales)]
    return out


def _spiketrains(train, seed: int = 0):
    """Counts -> neo spike trains (each spike uniform inside its 20 ms bin, away from the edges)."""
    import neo
    import quantities as pq

    rng = np.random.default_rng(seed)
    out = []
    for c in train:
        T = c.shape[0]
        trial = []
        for n in range(c.shape[1]):
            t = (np.repeat(np.arange(T), c[:, n]) + rng.uniform(0.05, 0.95, c[:, n].sum())) * BIN_SIZE
            trial.append(neo.SpikeTrain(np.sort(t) * pq.s, t_start=0 * pq.s, t_stop=T * BIN_SIZE * pq.s))
        out.append(trial)
    return out


def worker_elephant(spec: dict, train) -> dict:
    """``elephant.gpfa.GPFA(x_dim=q).fit(spiketrains)`` with every other argument at its default."""
    from elephant.gpfa import GPFA

    sts = _spiketrains(train)
    np.random.seed(0)  # elephant's segment overlaps are drawn from numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        g = GPFA(x_dim=spec["latents"]).fit(sts)
        t = time.perf_counter() - t0
    pe = g.params_estimated
    tau = 1.0 / np.sqrt(np.asarray(pe["gamma"]))  # elephant: gamma = 1 / tau_bins^2
    return {"calls": [{"seconds": t, "n_iter": len(g.fit_info["iteration_time"])}],
            "params": [np.asarray(a).tolist() for a in (pe["C"], pe["d"], np.diag(pe["R"]), tau)]}


def worker_poisson(spec: dict, train) -> dict:
    """Poisson GPFA (default ``method="map"``) and Gaussian GPFA on the same counts, each timed on
    its second call (after compilation) and first call."""
    jax = _jax(spec["device"])
    import bayesneuro as bn
    from bayesneuro.latent.gpfa import GPFA

    data = bn.SpikeData.from_trials(train, bin_size=BIN_SIZE)
    out = {"devices": [str(d) for d in jax.devices()]}
    for name, kw in [("gaussian", {}), ("poisson", {"observation": "poisson"})]:
        times = []
        for _ in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                GPFA(spec["latents"], init_timescale=0.1, **kw).fit(data, progress=False)
                times.append(time.perf_counter() - t0)
        out[name] = times
    return out


WORKERS = {"bayesneuro": worker_bayesneuro, "bayesneuro_seg": worker_bayesneuro, "elephant": worker_elephant,
           "poisson": worker_poisson}


def run_worker(spec: dict) -> None:
    train = [np.asarray(a) for a in np.load(spec["data"], allow_pickle=True)["train"]]
    t0 = time.perf_counter()
    out = WORKERS[spec["tool"]](spec, train)
    out.update(peak_rss_mib=_common.peak_rss_mib(), worker_s=time.perf_counter() - t0)
    Path(spec["out"] + ".json").write_text(json.dumps(out))


# ----------------------------------------------------------------------------- parent


def _save(trials, path: Path, n_train: int) -> None:
    arr = np.empty(len(trials), dtype=object)
    arr[:] = trials
    np.savez(path, train=arr[:n_train], test=arr[n_train:], allow_pickle=True)


def tables(res: dict) -> str:
    f = _common.fmt
    lines = [f"## GPFA benchmark ({res['mode']})", "",
             (f"{res['machine']['platform']}, Python {res['machine']['python']}, {res['machine'].get('cpus_usable')} "
             f"usable CPUs, float64, devices {res.get('devices')}. 1-min load average around each run in the JSON "
             f"(start: {res['machine']['loadavg_at_start']}); other jobs on the machine inflate times."), "",
             ("### Gaussian GPFA vs `elephant.gpfa.GPFA(x_dim=q).fit` (defaults: 20-bin segments, 500 EM "
             "iterations, tol 1e-8)"), "",
             ("| size (train trials x neurons x bins x latents) | elephant (s) | bayesneuro 1st / 2nd call (s) "
             "| ratio 1st / 2nd | XLA compiles 1st / 2nd | iterations el. / bn | log-lik. bn minus el. "
             "| co-smoothing R2 el. / bn | load 1-min |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for row in res["rows"]:
        for tool, suffix in (("bayesneuro", ""), ("bayesneuro_seg", f" (bn segment_length={SEGMENT_LENGTH})")):
            e, b = row.get("elephant", {}), row.get(tool, {})
            if not e or not b:
                continue
            if "error" in e or "error" in b:
                lines.append(f"| {row['label']}{suffix} | {e.get('error', '')} | {b.get('error', '')} | | | | | | |")
                continue
            te, (b1, b2) = e["calls"][0]["seconds"], b["calls"]
            lines.append(
                f"| {row['label']}{suffix} | {te:.2f} | {b1['seconds']:.2f} / {b2['seconds']:.2f} | "
                f"{te / b1['seconds']:.1f}x / {te / b2['seconds']:.1f}x | {b1['compilations']} / {b2['compilations']} | "
                f"{e['calls'][0]['n_iter']} / {b1['n_iter']} | "
                f"{b['scores']['log_likelihood'] - e['scores']['log_likelihood']:+.2f} | "
                f"{f(e['scores']['cosmoothing_r2'], '.4f')} / {f(b['scores']['cosmoothing_r2'], '.4f')} | "
                f"{e['loadavg_1min_before_after'][0]:.1f}, {b['loadavg_1min_before_after'][0]:.1f} |")
    p = res.get("poisson")
    if p:
        lines += ["", f"### Poisson GPFA (Laplace-EM + MAP) vs Gaussian GPFA, same counts ({p['label']})", ""]
        if "error" in p:
            lines.append(f"error: {p['error']}")
        else:
            g, q = p["gaussian"], p["poisson"]
            lines += ["| fit | 1st call (s) | 2nd call (s) |", "|---|---|---|",
                      f"| Gaussian | {g[0]:.2f} | {g[1]:.2f} |", f"| Poisson | {q[0]:.2f} | {q[1]:.2f} |", "",
                      f"Poisson / Gaussian: {q[0] / g[0]:.1f}x first call, {q[1] / g[1]:.1f}x second call."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--device", action="store_true", help="let JAX pick an accelerator (default: CPU)")
    parser.add_argument("--tools", default="elephant,bayesneuro,bayesneuro_seg,poisson")
    parser.add_argument("--sizes", default=None, help="comma-separated size labels (default: all of the mode)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/latent_gpfa[_quick])")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return run_worker(json.loads(args._worker))
    mode = "quick" if args.quick else "full"
    tools = args.tools.split(",")
    res = {"mode": mode, "machine": _common.machine_facts(), "rows": [], "device_flag": bool(args.device)}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, (n, N, T, q, ragged) in SIZES[mode].items():
            if args.sizes and label not in args.sizes.split(","):
                continue
            trials = simulate(n, N, T, q, ragged)
            path = work / f"{label}.npz"
            _save(trials, path, n)
            row = {"label": f"{label}: {n} x {N} x {'ragged ' + str(T // 2) + '-' if ragged else ''}{T} x {q}",
                   "size": [n, N, T, q, ragged]}
            for tool in ("elephant", "bayesneuro", "bayesneuro_seg"):
                if tool not in tools or (tool == "bayesneuro_seg" and label not in SEGMENTED[mode]):
                    continue
                spec = {"tool": tool, "data": str(path), "out": str(work / f"{label}_{tool}"), "latents": q,
                        "device": bool(args.device),
                        "segment_length": SEGMENT_LENGTH if tool == "bayesneuro_seg" else None}
                r = _common.launch_worker(__file__, spec, timeout=args.timeout)
                if "error" not in r:
                    r["scores"] = scores(trials[:n], trials[n:], r.pop("params"))
                    res["devices"] = r.get("devices", res.get("devices"))
                row[tool] = r
                print(label, tool, {k: v for k, v in r.items() if k in ("calls", "scores", "error")}, flush=True)
            res["rows"].append(row)
        if "poisson" in tools:
            n, N, T, q = POISSON[mode]
            trials = simulate(n, N, T, q, False)
            path = work / "poisson.npz"
            _save(trials, path, n)
            spec = {"tool": "poisson", "data": str(path), "out": str(work / "poisson"), "latents": q,
                    "device": bool(args.device)}
            r = _common.launch_worker(__file__, spec, timeout=args.timeout)
            r["label"] = f"{n} trials x {N} neurons x {T} bins x {q} latents"
            res["poisson"] = r
            print("poisson", r, flush=True)
    res["total_s"] = time.perf_counter() - t_start
    stem = Path(args.out) if args.out else RESULTS / ("latent_gpfa_quick" if args.quick else "latent_gpfa")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(tables(res))
    print(tables(res))


if __name__ == "__main__":
    main()
