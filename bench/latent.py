"""Benchmark: latent-variable models, bayesneuro vs elephant (GPFA) and dynamax (LDS / PLDS).

Sections (``--sections``, default ``lds,estep,plds``):

- ``gpfa`` (not by default: ``bench/latent_gpfa.py`` is GPFA's own benchmark): Gaussian GPFA by exact EM, bayesneuro vs elephant's ``gpfa_core.em`` on the same
  trials from the same start, to convergence (main row) and at a fixed number of EM iterations
  over 4 sizes of trials, neurons and bins. The code is :mod:`latent_gpfa` (this section runs
  ``bench/latent_gpfa.py`` with the same ``--quick`` flag; see its docstring for the fairness
  rules) and its tables are copied into this report.
- ``lds``: Gaussian LDS (exact Kalman smoother + EM), bayesneuro ``fit_lds_em`` vs dynamax
  ``LinearGaussianSSM.fit_em``: same data, same start (bayesneuro's ``init_lds_params`` with a
  FULL observation covariance, because dynamax's M-step always learns a full ``R``), same number
  of EM iterations, at 4 sizes (trials, neurons, bins, latents); final parameters of both scored
  by bayesneuro's exact ``lds_log_likelihood`` and dynamax's ``marginal_log_prob`` (they agree).
  Three calls per tool: the recording (compilation included), the same again, and the trials one
  bin shorter (a second recording of another trial length); XLA compilations counted per call.
- ``estep``: Poisson LDS latent posterior with the TRUE parameters: bayesneuro's Laplace
  (``laplace_posterior``: Newton on the block-tridiagonal Hessian to the exact posterior mode) vs
  dynamax's conditional-moments Gaussian smoother (``conditional_moments_gaussian_smoother``
  with ``EKFIntegrals`` and ``UKFIntegrals``, Poisson emissions: mean ``dt exp(Cx + d)``,
  covariance ``diag`` of it) vmapped over trials. dynamax has no Poisson-LDS parameter
  learning (its generalized Gaussian SSM has no M-step / EM), so only the E-step compares.
  Accuracy: latent R^2 of the posterior mean vs the simulated latents, and the log joint
  ``log p(y, x)`` at each tool's posterior mean (bayesneuro's ``neg_log_joint``: the Laplace
  mode maximises it, so it is an upper bound for any other path).
- ``plds``: bayesneuro ``PoissonLDS.fit`` (Laplace-EM, one compiled program per EM iteration), a
  fixed number of EM iterations (the convergence test off): the main row (20 trials x 30 neurons x
  100 bins x 4 latents, three calls as in ``lds``) and, with ``--long``, time per EM iteration
  over 4 sizes of bins, trials and neurons (target: linear in bins). No dynamax counterpart (see
  ``estep``).

Every tool and size runs in a fresh subprocess (peak RSS from ``getrusage``), is called twice on
the same data (the first call includes JIT compilation); the 1-min load average before and after
each run is stored (the machine is shared: compare ratios taken under similar load).

Usage::

    python bench/latent.py --quick    # smoke test (a few minutes) -> bench/results/latent_quick.{md,json}
    python bench/latent.py            # full (lds, estep, plds main row) -> bench/results/latent.{md,json}
    python bench/latent.py --long     # also the PLDS scaling rows (several more minutes)
    python bench/latent.py --sections lds --device   # parts of it, on JAX's default platform (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

DEVICE = _common.choose_platform()  # JAX_PLATFORMS=cpu unless --device

import numpy as np  # noqa: E402

RESULTS = HERE / "results"
SEED = 20240611
BIN_SIZE = 0.02

SIZES = {
    # (trials, neurons, bins, latents)
    "full": {
        # (trials, neurons, bins, latents, EM iterations)
        "lds": [(100, 50, 100, 4, 50), (20, 10, 50, 3, 50), (200, 30, 60, 2, 50), (40, 80, 200, 8, 20)],
        "estep": (100, 50, 100, 4),
        "plds_main": (20, 30, 100, 4), "plds_iters": 20,
        "plds_bins": [50, 100, 200, 400], "plds_trials": [10, 20, 40, 80], "plds_neurons": [15, 30, 60, 120],
        "timeout": 900,
    },
    "quick": {
        "lds": [(20, 10, 50, 3, 20), (10, 20, 40, 2, 10)],
        "estep": (20, 20, 100, 3),
        "plds_main": (10, 20, 50, 3), "plds_iters": 5,
        "plds_bins": [25, 50, 100, 200], "plds_trials": [5, 10], "plds_neurons": [10, 20],
        "timeout": 600,
    },
}


# ----------------------------------------------------------------------------- simulation


def plds_true_params(n_neurons: int, n_latents: int, seed: int = SEED) -> dict:
    """Rotational, stable dynamics (|eig| 0.97), Q = 0.02 I, stationary start; rates ~ 5-60 Hz."""
    rng = np.random.default_rng([seed, n_neurons, n_latents])
    A = np.zeros((n_latents, n_latents))
    for i in range(0, n_latents - 1, 2):
        th = 0.1 + 0.1 * i
        A[i:i + 2, i:i + 2] = 0.97 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    if n_latents % 2:
        A[-1, -1] = 0.97
    Q = 0.02 * np.eye(n_latents)
    S0 = Q / (1 - 0.97 ** 2)
    C = rng.normal(scale=0.5, size=(n_neurons, n_latents))
    d = rng.uniform(np.log(10.0), np.log(40.0), n_neurons)
    return dict(initial_mean=np.zeros(n_latents), initial_cov=S0, dynamics=A, dynamics_bias=np.zeros(n_latents),
                input_weights=np.zeros((n_latents, 0)), dynamics_cov=Q, loadings=C, offset=d)


def simulate_plds(size: tuple, seed: int = SEED) -> dict:
    n, N, T, K = size
    p = plds_true_params(N, K, seed)
    rng = np.random.default_rng([seed, n, N, T, K, 1])
    x = np.empty((n, T, K))
    x[:, 0] = rng.multivariate_normal(p["initial_mean"], p["initial_cov"], n)
    L = np.linalg.cholesky(p["dynamics_cov"])
    for t in range(1, T):
        x[:, t] = x[:, t - 1] @ p["dynamics"].T + rng.normal(size=(n, K)) @ L.T
    counts = rng.poisson(BIN_SIZE * np.exp(x @ p["loadings"].T + p["offset"]))
    return {"counts": counts, "latents": x, **{"true_" + k: v for k, v in p.items()}}


def simulate_lds(size: tuple, seed: int = SEED) -> dict:
    """Gaussian LDS: PLDS-like latents, y = C x + d + N(0, R) with a diagonal R."""
    n, N, T, K = size
    p = plds_true_params(N, K, seed)
    rng = np.random.default_rng([seed, n, N, T, K, 2])
    x = np.empty((n, T, K))
    x[:, 0] = rng.multivariate_normal(p["initial_mean"], p["initial_cov"], n)
    L = np.linalg.cholesky(p["dynamics_cov"])
    for t in range(1, T):
        x[:, t] = x[:, t - 1] @ p["dynamics"].T + rng.normal(size=(n, K)) @ L.T
    R = rng.uniform(0.2, 0.6, N)
    y = x @ p["loadings"].T + p["offset"] + rng.normal(size=(n, T, N)) * np.sqrt(R)
    return {"observations": y, "latents": x}


# ----------------------------------------------------------------------------- workers


def _x64():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _bn_lds_params(data, prefix="init_"):
    from bayesneuro.latent.kalman import LDSParams

    g = lambda k: np.asarray(data[prefix + k])  # noqa: E731
    return LDSParams(g("initial_mean"), g("initial_cov"), g("dynamics"), g("dynamics_bias"), None, g("loadings"),
                     g("offset"), None, g("dynamics_cov"), g("observation_cov"))


def _dx_lds(data, params):
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import LinearGaussianSSM

    K, N = params.dynamics.shape[0], params.loadings.shape[0]
    model = LinearGaussianSSM(K, N)
    p, props = model.initialize(
        initial_mean=jnp.asarray(params.initial_mean), initial_covariance=jnp.asarray(params.initial_cov),
        dynamics_weights=jnp.asarray(params.dynamics), dynamics_bias=jnp.asarray(params.dynamics_bias),
        dynamics_covariance=jnp.asarray(params.dynamics_cov), emission_weights=jnp.asarray(params.loadings),
        emission_bias=jnp.asarray(params.offset), emission_covariance=jnp.asarray(params.observation_cov))
    return model, p, props


def _dx_to_bn(p):
    from bayesneuro.latent.kalman import LDSParams

    a = np.asarray
    return LDSParams(a(p.initial.mean), a(p.initial.cov), a(p.dynamics.weights), a(p.dynamics.bias), None,
                     a(p.emissions.weights), a(p.emissions.bias), None, a(p.dynamics.cov), a(p.emissions.cov))


def _lds_scores(params, y):
    """Exact log p(y) by bayesneuro's Kalman filter and by dynamax's, for one parameter set."""
    import jax
    from bayesneuro.latent.kalman import lds_log_likelihood

    bn_ll = float(sum(float(lds_log_likelihood(params, y[k])) for k in range(len(y))))
    model, p, _ = _dx_lds(None, params)
    dx_ll = float(jax.vmap(lambda e: model.marginal_log_prob(p, e))(y).sum())
    return {"log_likelihood_bn_filter": bn_ll, "log_likelihood_dynamax_filter": dx_ll}


def _calls(fit, datasets):
    """Call ``fit(y)`` on each dataset: wall time and XLA compilations of each call."""
    from bayesneuro._shapes import count_compilations

    calls, res = [], []
    for y in datasets:
        with count_compilations() as c:
            t0 = time.perf_counter()
            r, n_iter = fit(y)
            wall = time.perf_counter() - t0
        res.append(r)
        calls.append({"wall_s": wall, "n_iter": n_iter, "compilations": c.compilations,
                      "compile_s": c.seconds, "n_time": int(y.shape[1])})
    return calls, res


def _new_length(y):
    """The same trials one bin shorter: another trial length, as a second recording of the same
    kind would have (in bayesneuro's length bucket unless the length is a bucket's first)."""
    return np.ascontiguousarray(y[:, :-1])


def _lds_datasets(data):
    """The recording twice, then a recording of another trial length."""
    y = np.asarray(data["observations"])
    return [y, y, _new_length(y)]


def worker_lds_bayesneuro(spec, data):
    jax = _x64()
    from bayesneuro.latent.kalman import fit_lds_em

    init = _bn_lds_params(data)

    def fit(y):
        res = fit_lds_em(init, y, max_iter=spec["iters"], progress=False)
        jax.block_until_ready(res.params)
        return res, len(res.log_likelihoods) - 1

    ys = _lds_datasets(data)
    calls, results = _calls(fit, ys)
    res = results[1]
    out = {"calls": calls, "devices": [str(d) for d in jax.devices()]}
    out["trace"] = [float(v) for v in res.log_likelihoods]
    out.update(_lds_scores(res.params, ys[0]))
    return out


def _patch_dynamax_initial_cov():
    """Correct dynamax 1.0.3's batched M-step for the initial covariance.

    ``LinearGaussianSSM.m_step`` sums the per-trial statistics and sets
    ``S0 = (sum E[x0 x0'] - outer(sum E[x0], sum E[x0])) / n``, which subtracts ``n m m'``
    instead of ``m m'`` for ``n > 1`` trials: S0 is not positive definite and EM returns NaN
    after the first step. This wrapper keeps the rest of dynamax's M-step and sets
    ``S0 = sum E[x0 x0'] / n - m m'`` (the MLE; what bayesneuro computes).
    """
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import LinearGaussianSSM
    from dynamax.linear_gaussian_ssm.models import ParamsLGSSMInitial

    orig = LinearGaussianSSM.m_step

    def m_step(self, params, props, batch_stats, m_step_state):
        new, state = orig(self, params, props, batch_stats, m_step_state)
        sum_x0, sum_x0x0T, n = (jnp.sum(a, axis=0) for a in batch_stats[0])
        m = sum_x0 / n
        return new._replace(initial=ParamsLGSSMInitial(mean=m, cov=sum_x0x0T / n - jnp.outer(m, m))), state

    LinearGaussianSSM.m_step = m_step


def worker_lds_dynamax(spec, data):
    jax = _x64()
    _patch_dynamax_initial_cov()
    model, p0, props = _dx_lds(data, _bn_lds_params(data))

    def fit(y):
        p, lls = model.fit_em(p0, props, y, num_iters=spec["iters"], verbose=False)
        jax.block_until_ready((p, lls))
        return (p, lls), int(len(lls))

    ys = _lds_datasets(data)
    calls, results = _calls(fit, ys)
    p, lls = results[1]
    out = {"calls": calls, "devices": [str(d) for d in jax.devices()]}
    out["trace"] = [float(v) for v in np.asarray(lls)]  # lls[k]: log p(y) BEFORE step k
    out.update(_lds_scores(_dx_to_bn(p), ys[0]))
    return out


def _plds_params(data):
    from bayesneuro.latent.plds import PLDSParams

    return PLDSParams(*(np.asarray(data["true_" + k]) for k in PLDSParams._fields))


def _plds_accuracy(mean, data):
    """Latent R^2 (best affine map of the posterior mean onto the true latents, pooled) and log joint."""
    import jax
    import jax.numpy as jnp
    from bayesneuro.latent.plds import neg_log_joint

    x, y = np.asarray(data["latents"]), np.asarray(data["counts"], dtype=float)
    m = np.asarray(mean)
    # true parameters: the posterior mean estimates x itself, so R^2 is 1 - SSE / SST directly
    r2 = 1.0 - np.sum((m - x) ** 2) / np.sum((x - x.mean(axis=(0, 1))) ** 2)
    p = jax.tree.map(jnp.asarray, _plds_params(data))
    n, T, _ = y.shape
    f = jax.vmap(lambda xx, yy: neg_log_joint(xx, p, yy, jnp.zeros((T, 0)), jnp.ones(T, bool), bin_size=BIN_SIZE))
    lj = -float(jnp.sum(f(jnp.asarray(m), jnp.asarray(y))))
    return {"latent_r2": float(r2), "log_joint_at_mean": lj}


def worker_estep_bayesneuro(spec, data):
    jax = _x64()
    import jax.numpy as jnp
    from bayesneuro.latent.plds import laplace_posterior

    p = jax.tree.map(jnp.asarray, _plds_params(data))
    y = jnp.asarray(data["counts"], dtype=float)
    n, T, N = y.shape
    K = p.dynamics.shape[0]
    args = (p, y, jnp.zeros((n, T, 0)), jnp.ones((n, T), bool), jnp.zeros((n, T, K)))
    out = {"calls": []}
    for _ in range(2):
        t0 = time.perf_counter()
        post = laplace_posterior(*args, bin_size=BIN_SIZE)
        post.mean.block_until_ready()
        out["calls"].append({"wall_s": time.perf_counter() - t0})
    out["newton_iters_max"] = int(np.max(post.n_newton))
    out["laplace_log_marginal"] = float(post.log_marginal.sum())
    out.update(_plds_accuracy(post.mean, data))
    return out


def worker_estep_dynamax(spec, data):
    jax = _x64()
    import jax.numpy as jnp
    import tensorflow_probability.substrates.jax.distributions as tfd
    from dynamax.generalized_gaussian_ssm import (EKFIntegrals, ParamsGGSSM, UKFIntegrals,
                                                  conditional_moments_gaussian_smoother)

    tp = _plds_params(data)
    A, b, C, d = (jnp.asarray(v) for v in (tp.dynamics, tp.dynamics_bias, tp.loadings, tp.offset))
    params = ParamsGGSSM(
        initial_mean=jnp.asarray(tp.initial_mean), initial_covariance=jnp.asarray(tp.initial_cov),
        dynamics_function=lambda x: A @ x + b, dynamics_covariance=jnp.asarray(tp.dynamics_cov),
        emission_mean_function=lambda x: BIN_SIZE * jnp.exp(C @ x + d),
        emission_cov_function=lambda x: jnp.diag(BIN_SIZE * jnp.exp(C @ x + d)),
        emission_dist=lambda mean, cov: tfd.Independent(tfd.Poisson(rate=jnp.clip(mean, 1e-12)), 1))
    integrals = {"ekf": EKFIntegrals(), "ukf": UKFIntegrals()}[spec["variant"]]
    y = jnp.asarray(data["counts"], dtype=float)
    smooth = jax.jit(jax.vmap(lambda e: conditional_moments_gaussian_smoother(params, integrals, e).smoothed_means))
    out = {"calls": []}
    for _ in range(2):
        t0 = time.perf_counter()
        mean = smooth(y)
        mean.block_until_ready()
        out["calls"].append({"wall_s": time.perf_counter() - t0})
    out.update(_plds_accuracy(mean, data))
    return out


def worker_plds_fit(spec, data):
    jax = _x64()
    import bayesneuro as bn
    from bayesneuro.latent.plds import PoissonLDS

    counts = np.asarray(data["counts"])
    model = {}

    def fit(y):
        sd = bn.SpikeData.from_trials(y, bin_size=BIN_SIZE)
        model["m"] = PoissonLDS(int(spec["n_latents"])).fit(sd, max_iter=spec["iters"], tol=None, progress=False)
        return model["m"], int(model["m"].n_iter_)

    calls, results = _calls(fit, [counts, counts, _new_length(counts)])
    m = results[1]
    out = {"calls": calls, "devices": [str(d) for d in jax.devices()]}
    out["log_likelihood_trace"] = [float(v) for v in m.log_likelihood_trace_]
    return out


WORKERS = {"lds_bayesneuro": worker_lds_bayesneuro, "lds_dynamax": worker_lds_dynamax,
           "estep_bayesneuro": worker_estep_bayesneuro, "estep_dynamax": worker_estep_dynamax,
           "plds_bayesneuro": worker_plds_fit}


def run_worker(spec: dict) -> None:
    data = dict(np.load(spec["data"]))
    result = WORKERS[spec["tool"]](spec, data)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(spec["out"]).write_text(json.dumps(result))


def launch(spec: dict, timeout: float) -> dict:
    env = _common.worker_env(DEVICE, PYTHONWARNINGS="ignore", BAYESNEURO_PROGRESS="0")
    rec = {k: v for k, v in spec.items() if k not in ("data", "out")}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        rec["error"] = f"timeout after {timeout:.0f} s"
        return rec
    rec.update(process_s=time.perf_counter() - t0, loadavg_1min_before_after=[load0, os.getloadavg()[0]])
    if proc.returncode != 0:
        rec["error"] = f"exit {proc.returncode}: " + " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return rec
    rec.update(json.loads(Path(spec["out"]).read_text()))
    return rec


# ----------------------------------------------------------------------------- sections


def _say(rec):
    if "error" in rec:
        print(f"FAILED ({rec['error'][:200]})", flush=True)
    else:
        print(" / ".join(f"{c['wall_s']:.2f} s" for c in rec["calls"]) + f", RSS {rec['peak_rss_mib']:.0f} MiB, "
              f"load {rec['loadavg_1min_before_after'][0]:.2f}", flush=True)


def _steady(r):
    """The second call on the same data (compiled programs reused)."""
    return None if "error" in r else r["calls"][1]["wall_s"]


def section_lds(sz, work, timeout):
    _x64()
    from bayesneuro.latent.kalman import init_lds_params

    recs = []
    for *size, iters in sz["lds"]:
        size = tuple(size)
        sim = simulate_lds(size)
        init = init_lds_params(sim["observations"], size[3], diagonal_observation_cov=False)
        path = work / ("lds_" + "x".join(map(str, size)) + ".npz")
        np.savez(path, observations=sim["observations"],
                 **{"init_" + k: np.asarray(v) for k, v in init._asdict().items() if v is not None})
        for tool in ["lds_bayesneuro", "lds_dynamax"]:
            print(f"  {tool:18s} size={size} iters={iters} ...", end=" ", flush=True)
            r = launch({"tool": tool, "data": str(path), "out": str(work / f"{tool}_{path.stem}.json"),
                        "size": list(size), "iters": iters}, timeout)
            _say(r)
            recs.append(r)
    return recs


def section_estep(sz, work, timeout):
    size = sz["estep"]
    sim = simulate_plds(size)
    path = work / "estep.npz"
    np.savez(path, **sim)
    recs = []
    for tool, variant in [("estep_bayesneuro", None), ("estep_dynamax", "ekf"), ("estep_dynamax", "ukf")]:
        print(f"  {tool:18s} {variant or 'laplace'} size={size} ...", end=" ", flush=True)
        r = launch({"tool": tool, "variant": variant, "data": str(path), "size": list(size),
                    "out": str(work / f"{tool}_{variant}.json")}, timeout)
        _say(r)
        recs.append(r)
    return recs


def section_plds(sz, work, timeout):
    main = sz["plds_main"]
    recs = []
    for axis, pos in [("main", 0), ("bins", 2), ("trials", 0), ("neurons", 1)]:
        if axis not in sz["plds_axes"]:
            continue
        for v in ([main[0]] if axis == "main" else sz["plds_" + axis]):
            size = tuple(main[:pos]) + (v,) + tuple(main[pos + 1:])
            sim = simulate_plds(size)
            path = work / ("plds_" + "x".join(map(str, size)) + ".npz")
            np.savez(path, counts=sim["counts"])
            print(f"  plds {axis:7s} size={size} iters={sz['plds_iters']} ...", end=" ", flush=True)
            r = launch({"tool": "plds_bayesneuro", "data": str(path), "size": list(size), "axis": axis,
                        "n_latents": size[3], "iters": sz["plds_iters"], "out": str(work / (path.stem + ".json"))},
                       timeout)
            _say(r)
            recs.append(r)
    return recs


def section_gpfa(quick: bool, work: Path):
    stem = work / "gpfa"
    cmd = [sys.executable, str(HERE / "latent_gpfa.py"), "--out", str(stem)] + (["--quick"] if quick else [])
    print("  running " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:]}, "GPFA section failed: " + proc.stderr[-500:]
    res = json.loads(stem.with_suffix(".json").read_text())
    return res, stem.with_suffix(".md").read_text()


# ----------------------------------------------------------------------------- report


def _slope(xs, ts):
    pts = [(x, t) for x, t in zip(xs, ts) if t]
    if len(pts) < 2:
        return None
    a, b = np.log(np.array(pts, dtype=float)).T
    return float(np.polyfit(a, b, 1)[0])


def _f(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def _load(r):
    return "n/a" if "loadavg_1min_before_after" not in r else "/".join(f"{v:.1f}" for v in r["loadavg_1min_before_after"])


def _calls_cells(r):
    c = r["calls"]
    return (f"{c[0]['wall_s']:.2f} | {c[1]['wall_s']:.2f} | {c[2]['wall_s']:.2f} | "
            f"{c[0]['compilations']} / {c[1]['compilations']} / {c[2]['compilations']}")


def report_lds(recs):
    if not recs:
        return []
    lines = ["### Gaussian LDS EM vs dynamax `LinearGaussianSSM.fit_em`: full R, same start, same number of "
             "EM iterations", "",
             "Calls: the recording (first call: compilation included), the same again, then the same trials "
             "one bin shorter (another trial length: a second recording). Compilations: XLA programs built "
             "during each call (`bayesneuro._shapes.count_compilations`, jax.monitoring).", "",
             "| trials x neurons x bins, latents, iterations | tool | first call (s) | second call (s) | "
             "new-length call (s) | compilations (1st / 2nd / new) | dynamax / bayesneuro, first | "
             "dynamax / bayesneuro, second | final log p(y) (bayesneuro filter) | minus bayesneuro | "
             "max trace difference | peak RSS (MiB) | load 1-min before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in range(0, len(recs), 2):
        pair = recs[i:i + 2]
        size, it = pair[0]["size"], pair[0]["iters"]
        label = f"{size[0]} x {size[1]} x {size[2]}, {size[3]}, {it}"
        bn = next((r for r in pair if r["tool"] == "lds_bayesneuro" and "error" not in r), None)
        dx = next((r for r in pair if r["tool"] == "lds_dynamax" and "error" not in r), None)
        diff = None
        if bn and dx:
            n = min(len(bn["trace"]), len(dx["trace"]))
            diff = float(np.max(np.abs(np.array(bn["trace"][:n]) - np.array(dx["trace"][:n]))))
        for r in pair:
            name = r["tool"].split("_")[1]
            if "error" in r:
                lines.append(f"| {label} | {name} | failed: {r['error'][:100]} | | | | | | | | | | |")
                continue
            first = f"{r['calls'][0]['wall_s'] / bn['calls'][0]['wall_s']:.2f}x" if bn else "n/a"
            second = f"{_steady(r) / _steady(bn):.2f}x" if bn else "n/a"
            gap = r["log_likelihood_bn_filter"] - bn["log_likelihood_bn_filter"] if bn else None
            lines.append(f"| {label} | {name} | {_calls_cells(r)} | {first} | {second} | "
                         f"{r['log_likelihood_bn_filter']:.6f} | {_f(gap, '+.2e')} | "
                         f"{_f(diff, '.2e') if name == 'dynamax' else ''} | {r['peak_rss_mib']:.0f} | {_load(r)} |")
    lines += ["", "Max trace difference: max |difference| of the per-iteration log-likelihood traces (both "
                  "evaluated before each M-step). \"minus bayesneuro\": dynamax's final log p(y) minus "
                  "bayesneuro's, both parameter sets scored by bayesneuro's Kalman filter (dynamax's filter "
                  "gives the same values: see the JSON)."]
    return lines


def report_estep(recs):
    if not recs:
        return []
    size = recs[0]["size"]
    bn = next((r for r in recs if r["tool"] == "estep_bayesneuro" and "error" not in r), None)
    lines = [f"### Poisson LDS latent posterior (E-step) with the true parameters: {size[0]} trials x {size[1]} "
             f"neurons x {size[2]} bins of {BIN_SIZE * 1e3:g} ms, {size[3]} latents", "",
             "| method | first call (s) | second call (s) | time / bayesneuro | latent R^2 | log p(y, x) at the "
             "posterior mean | minus Laplace | peak RSS (MiB) | load 1-min before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        name = "bayesneuro Laplace (Newton)" if r["tool"] == "estep_bayesneuro" else f"dynamax CMGF smoother ({r['variant'].upper()})"
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:100]} | | | | | | | |")
            continue
        ratio = f"{_steady(r) / _steady(bn):.2f}x" if bn else "n/a"
        gap = r["log_joint_at_mean"] - bn["log_joint_at_mean"] if bn else None
        lines.append(f"| {name} | {r['calls'][0]['wall_s']:.2f} | {r['calls'][1]['wall_s']:.3f} | {ratio} | "
                     f"{r['latent_r2']:.4f} | {r['log_joint_at_mean']:.2f} | {_f(gap, '+.2f')} | "
                     f"{r['peak_rss_mib']:.0f} | {_load(r)} |")
    if bn:
        lines += ["", f"Laplace: at most {bn['newton_iters_max']} Newton iterations per trial; Laplace log p(y) "
                      f"{bn['laplace_log_marginal']:.2f}."]
    return lines


def report_plds(recs, it):
    lines = []
    for r in (r for r in recs if r.get("axis") == "main"):
        size = r["size"]
        lines += [f"### PoissonLDS Laplace-EM (one program per EM iteration): {size[0]} trials x {size[1]} neurons "
                  f"x {size[2]} bins, {size[3]} latents, {it} EM iterations", "",
                  "No dynamax counterpart: dynamax has no parameter learning for Poisson state-space models "
                  "(its only EM is the linear-Gaussian one); its E-step (CMGF) is compared in the section above.", "",
                  "| first call (s) | second call (s) | new-length call (s) | compilations (1st / 2nd / new) | "
                  "per EM iteration, second call (s) | peak RSS (MiB) | load 1-min before/after |",
                  "|---|---|---|---|---|---|---|"]
        if "error" in r:
            lines.append(f"| failed: {r['error'][:100]} | | | | | | |")
        else:
            lines.append(f"| {_calls_cells(r)} | {_steady(r) / r['calls'][1]['n_iter']:.4f} | "
                         f"{r['peak_rss_mib']:.0f} | {_load(r)} |")
    for axis in ["bins", "trials", "neurons"]:
        rs = [r for r in recs if r.get("axis") == axis]
        if not rs:
            continue
        pos = {"trials": 0, "neurons": 1, "bins": 2}[axis]
        lines += ["", f"### PoissonLDS Laplace-EM scaling in {axis} ({it} EM iterations, fixed; "
                  f"others at {rs[0]['size'][:pos] + ['*'] + rs[0]['size'][pos + 1:]})", "",
                  f"| {axis} | first call (s) | second call (s) | per EM iteration (s) | peak RSS (MiB) "
                  "| load 1-min before/after |", "|---|---|---|---|---|---|"]
        xs, ts = [], []
        for r in rs:
            v = r["size"][pos]
            if "error" in r:
                lines.append(f"| {v} | failed: {r['error'][:100]} | | | | |")
                continue
            per = _steady(r) / r["calls"][1]["n_iter"]
            xs.append(v)
            ts.append(per)
            lines.append(f"| {v} | {r['calls'][0]['wall_s']:.2f} | {r['calls'][1]['wall_s']:.2f} | {per:.3f} | "
                         f"{r['peak_rss_mib']:.0f} | {_load(r)} |")
        lines += ["", f"Slope of log(time per iteration) vs log({axis}): {_f(_slope(xs, ts))} (second call; "
                      "it includes the PCA start and the final E-step, spread over the iterations)."]
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", default="lds,estep,plds",
                        help="comma-separated: lds, estep, plds, gpfa (gpfa runs bench/latent_gpfa.py; not by default)")
    parser.add_argument("--long", action="store_true",
                        help="also the PLDS scaling rows in bins, trials and neurons (several more minutes)")
    parser.add_argument("--plds-axes", default=None,
                        help="PLDS rows to run, from main,bins,trials,neurons (default: main; with --long all)")
    _common.add_device_argument(parser)
    parser.add_argument("--plds-iters", type=int, default=None, help="EM iterations of the PLDS rows")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/latent[_quick])")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return
    jax = _x64()
    import bayesneuro as bn

    try:
        import dynamax
        dx_version = dynamax.__version__
    except ImportError:
        dx_version = "not installed"
    mode = "quick" if args.quick else "full"
    axes = args.plds_axes or ("main,bins,trials,neurons" if args.long else "main")
    sz = dict(SIZES[mode], plds_axes=[a.strip() for a in axes.split(",")])
    if args.plds_iters:
        sz["plds_iters"] = args.plds_iters
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    results = {"mode": mode, "sizes": sz, "bin_size_s": BIN_SIZE, "seed": SEED,
               "versions": {"python": platform.python_version(), "jax": jax.__version__, "dynamax": dx_version,
                            "bayesneuro": bn.__version__, "numpy": np.__version__},
               "machine": _common.machine_facts(), "device": DEVICE,
               "devices": [str(d) for d in jax.devices()]}
    parts = []
    with tempfile.TemporaryDirectory(prefix="bench_latent_") as tmp:
        work = Path(tmp)
        if "gpfa" in sections:
            print("# gpfa", flush=True)
            results["gpfa"], md = section_gpfa(args.quick, work)
            parts += [md.strip()]
        if "lds" in sections:
            print("# lds", flush=True)
            results["lds"] = section_lds(sz, work, sz["timeout"])
            parts += ["\n".join(report_lds(results["lds"]))]
        if "estep" in sections:
            print("# estep", flush=True)
            results["estep"] = section_estep(sz, work, sz["timeout"])
            parts += ["\n".join(report_estep(results["estep"]))]
        if "plds" in sections:
            print("# plds", flush=True)
            results["plds"] = section_plds(sz, work, sz["timeout"])
            parts += ["\n".join(report_plds(results["plds"], sz["plds_iters"])).strip()]
    header = (f"# Latent-model benchmark ({mode})\n\nPython {results['versions']['python']}, jax {jax.__version__}, "
              f"dynamax {dx_version}, {os.cpu_count()} CPU cores, float64, "
              f"{'JAX default platform' if DEVICE else 'JAX_PLATFORMS=cpu'} ({', '.join(results['devices'])}). "
              f"1-min load average at the start {results['machine']['loadavg_at_start'][0]:.1f}; before/after "
              "each run in the tables (other jobs on the machine inflate the times).\n")
    text = header + "\n" + "\n\n".join(p for p in parts if p) + "\n"
    print("\n" + text)
    stem = Path(args.out) if args.out else RESULTS / ("latent" if mode == "full" else "latent_quick")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")


if __name__ == "__main__":
    main()
