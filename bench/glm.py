"""Benchmark: Poisson GLM fitting with bayesneuro (MAP) vs nemos ``PopulationGLM`` vs statsmodels.

All tools fit the same model to the same simulated data: one Poisson GLM per neuron on a shared
design of spike-history and coupling features,

.. math::

    \\eta_{tn} = \\beta_n + \\log \\Delta + \\sum_{m, b} X_{t, mB + b}\\, W_{mB + b,\\, n},
    \\qquad X = \\texttt{bn.bases.design\\_matrix}(y, \\text{basis}, \\text{history=True}),

with ``B = 8`` log-raised-cosine history functions over 100 one-millisecond lags (the current
bin excluded), i.e. ``N * B`` features per neuron (own history + coupling to all others). The
MAP / ridge objective that every tool minimises is

.. math::

    F(\\beta, W) = \\sum_{t, n} \\left[ e^{\\eta_{tn}} - y_{tn} \\eta_{tn} \\right]
                 + \\frac{\\alpha}{2} \\lVert W \\rVert_2^2

(bias unpenalised). nemos scales its loss as a *mean* over bins (summed over neurons) and adds
``0.5 * strength * ||W||^2``, so ``strength = alpha / n_bins`` gives ``F / n_bins``: the same
optimum. statsmodels' ``GLM.fit_regularized(L1_wt=0)`` minimises ``-loglike / n + alpha_sm / 2 *
||params||^2`` per neuron, so ``alpha_sm = alpha / n_bins`` (0 for the constant).

Every fit runs in a fresh subprocess (peak RSS from ``getrusage``), calls the tool twice on the
same data (first call includes JIT compilation), and saves the parameters. The parent then
evaluates every solution with ONE numpy function (:func:`objective`, independent of both JAX
libraries: features by ``scipy.signal.fftconvolve``) and writes ``bench/results/glm.{md,json}``.

Variants (issue 21): ``bayesneuro`` is the default path (``filter_mode="fft"``),
``bayesneuro-design`` the design-matrix path (same model: their objective gap is reported), and
``*-complete`` rows leave the first ``WINDOW`` bins (incomplete history) out of the fit and of
the objective: ``PoissonGLM(exclude_initial_bins=True)``, nemos and statsmodels on the design
rows from ``WINDOW`` on, so the objectives compare across tools on the same rows. The
bayesneuro workers count XLA compilations per call (``bayesneuro._shapes.count_compilations``)
and make a third call on a recording 3% shorter (another length: it should compile nothing).

Usage::

    python bench/glm.py --quick     # small sizes, a smoke test (about 2 minutes)
    python bench/glm.py             # default: 8 neurons, the issue-21 workload (<= 6 min on 2 cores)
    python bench/glm.py --full      # 50 neurons x 100,000 bins and scaling (hours with nemos)
    python bench/glm.py --device    # let JAX use its default platform (GPU) instead of the CPU

Requires the ``bench`` extra: ``pip install -e '.[bench]'`` (nemos, statsmodels, psutil).
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
import warnings
from pathlib import Path

if "--device" not in sys.argv and "--_worker" not in sys.argv:  # workers get it from the parent
    os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

# ----------------------------------------------------------------------------- model settings

BIN_SIZE = 1e-3  # seconds
N_BASIS = 8
WINDOW = 100  # lags, in bins
FIRST_PEAK = 1.0
ALPHA = 1.0  # ridge strength on the filter weights, in the summed objective F above
SEED = 20240611

# nemos solver settings (see the README section): L-BFGS (its default solver for Ridge is plain
# gradient descent), with the optimistix Cauchy tolerance (|change of loss| and ||change of
# params||) tightened from its default 1e-4 to 1e-7 so that it reaches the same optimum as
# bayesneuro (checked: relative objective gap ~1e-13 at 20 neurons x 20k bins; 1e-8 and 1e-9 gave
# the same optimum with 20-35 % more iterations). nemos' loss is a mean over bins.
NEMOS_SOLVER = "LBFGS"
NEMOS_SOLVER_KWARGS = {"tol": 1e-7, "maxiter": 5000}

# statsmodels: scipy BFGS (statsmodels' own default for a pure ridge) on a few neurons only.
STATSMODELS_OPT_METHOD = "bfgs"

SIZES = {
    "default": {
        "main": (8, 20_000),
        "bins": (8, [5_000, 10_000, 20_000, 40_000]),  # 20,000: the main row's run (not repeated)
        "neurons": ([4, 8, 16], 20_000),
        "memory": (8, 200_000),
        "sm_neurons": 8,
        "timeout": 900,
    },
    # name: (main (N, T), bins scaling (N, [T...]), neurons scaling ([N...], T), memory (N, T),
    #        statsmodels neurons)
    "full": {
        "main": (50, 100_000),
        "bins": (50, [25_000, 50_000, 100_000, 200_000]),
        "neurons": ([12, 25, 50, 100], 100_000),
        "memory": (50, 1_000_000),
        "sm_neurons": 5,
        "timeout": 3600,
    },
    "quick": {
        "main": (8, 5_000),
        "bins": (8, [2_500, 5_000, 10_000, 20_000]),
        "neurons": ([2, 4, 8, 16], 5_000),
        "memory": (8, 50_000),
        "sm_neurons": 1,
        "timeout": 600,
    },
}


def make_basis():
    """The shared history/coupling basis (a ``bayesneuro.bases.RaisedCosineLog``)."""
    from bayesneuro.bases import RaisedCosineLog

    return RaisedCosineLog(N_BASIS, window=WINDOW, first_peak=FIRST_PEAK)


# ----------------------------------------------------------------------------- simulation


def true_parameters(n_neurons: int, seed: int = SEED) -> dict:
    """Ground-truth filters of a stable, weakly coupled population.

    Parameters
    ----------
    n_neurons : int
        Population size.
    seed : int
        Seed of the parameter draw.

    Returns
    -------
    dict
        ``bias`` (neuron,) in log spikes/s; ``W`` (neuron * basis, neuron) filter weights in
        design layout (row ``m * B + b`` = source ``m``, basis ``b``; column = target neuron).
        Self-history is strongly negative (refractoriness), coupling weak and sparse (30 %),
        scaled by ``1 / sqrt(N)`` so the population stays stable at every size.
    """
    rng = np.random.default_rng([seed, n_neurons])
    bias = np.log(rng.uniform(10.0, 40.0, n_neurons))
    w_self = np.array([-4.0, -2.5, -1.2, -0.6, -0.3, -0.1, 0.0, 0.0])
    w_self = w_self[None, :] * rng.uniform(0.7, 1.3, (n_neurons, 1))
    decay = np.exp(-np.arange(N_BASIS) / 3.0)
    w_c = rng.normal(0.0, 0.6 / np.sqrt(n_neurons), (n_neurons, n_neurons, N_BASIS))
    w_c *= (rng.random((n_neurons, n_neurons, 1)) < 0.3) * decay  # (target, source, basis)
    idx = np.arange(n_neurons)
    w_c[idx, idx] = w_self
    W = np.transpose(w_c, (1, 2, 0)).reshape(n_neurons * N_BASIS, n_neurons)
    return {"bias": bias, "W": W}


def simulate(n_neurons: int, n_bins: int, seed: int = SEED) -> tuple[np.ndarray, dict]:
    """Simulate the coupled Poisson GLM population, bin by bin.

    Event driven: a ring of future drive is updated only when a neuron spikes (spikes are
    sparse at 1 ms), so 10^6 bins of 50 neurons take ~20 s in numpy.

    Parameters
    ----------
    n_neurons, n_bins : int
        Size of the recording.
    seed : int
        Seed for the parameters and the spikes.

    Returns
    -------
    counts : numpy.ndarray, shape (n_bins, n_neurons), int16
    truth : dict
        As :func:`true_parameters`.
    """
    truth = true_parameters(n_neurons, seed)
    B = make_basis().matrix()  # (lag, basis)
    n_lag = B.shape[0]
    # filter of source m on target n at lag k (k = 0 is one bin after the spike)
    W = truth["W"].reshape(n_neurons, N_BASIS, n_neurons)
    h = np.einsum("kb,mbn->mkn", B, W)  # (source, lag, target)
    rng = np.random.default_rng([seed, n_neurons, 1])
    drive = np.zeros((n_bins + n_lag + 1, n_neurons))
    counts = np.zeros((n_bins, n_neurons), np.int16)
    base = truth["bias"] + np.log(BIN_SIZE)
    u_all = rng.random((n_bins, n_neurons))
    for t in range(n_bins):
        rate = np.exp(base + drive[t])
        u = u_all[t]
        p = np.exp(-rate)
        cdf = p.copy()
        if not (u > cdf).any():
            continue
        y = np.zeros(n_neurons, np.int16)
        k = 0
        while True:  # inverse-cdf Poisson draw, vectorised over neurons
            more = u > cdf
            if not more.any():
                break
            k += 1
            y[more] = k
            p = p * rate / k
            cdf = cdf + p
        counts[t] = y
        m = np.flatnonzero(y)
        drive[t + 1 : t + 1 + n_lag] += np.einsum("m,mkn->kn", y[m].astype(float), h[m])
    return counts, truth


def load_counts(n_neurons: int, n_bins: int, cache_dir: Path, seed: int = SEED) -> np.ndarray:
    """Counts of the cached simulation for ``n_neurons`` (its first ``n_bins`` bins).

    One recording per population size is simulated (as long as the longest request, see
    :func:`prepare_data`) and shorter recordings are its prefixes, so the bins-scaling rows
    are nested windows of one stationary simulation.
    """
    files = sorted(cache_dir.glob(f"counts_N{n_neurons}_T*_s{seed}.npy"),
                   key=lambda p: int(p.stem.split("_T")[1].split("_")[0]))
    for f in files:
        if int(f.stem.split("_T")[1].split("_")[0]) >= n_bins:
            return np.load(f, mmap_mode="r")[:n_bins]
    raise FileNotFoundError(f"no cached simulation with N={n_neurons}, T>={n_bins} in {cache_dir}")


def prepare_data(requests: list[tuple[int, int]], cache_dir: Path, seed: int = SEED) -> dict:
    """Simulate (or reuse) one recording per population size, long enough for all requests."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    longest: dict[int, int] = {}
    for n, t in requests:
        longest[n] = max(longest.get(n, 0), t)
    stats = {}
    for n, t in sorted(longest.items()):
        try:
            load_counts(n, t, cache_dir, seed)
        except FileNotFoundError:
            t0 = time.perf_counter()
            counts, _ = simulate(n, t, seed)
            np.save(cache_dir / f"counts_N{n}_T{t}_s{seed}.npy", counts)
            print(f"  simulated N={n}, T={t} in {time.perf_counter() - t0:.1f} s", flush=True)
        counts = load_counts(n, t, cache_dir, seed)
        rates = np.asarray(counts, dtype=np.float64).mean(0) / BIN_SIZE
        stats[n] = {"n_bins": t, "rate_min_hz": float(rates.min()),
                    "rate_median_hz": float(np.median(rates)), "rate_max_hz": float(rates.max())}
    return stats


# ----------------------------------------------------------------------------- common objective


def history_features(counts: np.ndarray, basis_matrix: np.ndarray, b: int) -> np.ndarray:
    """``H[t, m] = sum_k B[k, b] y[t - 1 - k, m]``: basis function ``b`` over each neuron's past.

    Plain numpy/scipy (FFT convolution), independent of bayesneuro and nemos.
    """
    from scipy.signal import fftconvolve

    y = np.asarray(counts, dtype=np.float64)
    kernel = np.concatenate([[0.0], basis_matrix[:, b]])  # shift by one bin: history excludes t
    return fftconvolve(y, kernel[:, None], mode="full", axes=0)[: y.shape[0]]


def objective(counts, bias, W, *, alpha: float = ALPHA, neurons=None, basis_matrix=None, start: int = 0) -> np.ndarray:
    """The common MAP/ridge objective, per neuron, evaluated in numpy.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
    bias : array_like, shape (neuron,)
        Log rate in spikes/s at zero history (``log(bin_size)`` is added here).
    W : array_like, shape (neuron * basis, neuron)
        Filter weights in design layout (see :func:`true_parameters`).
    alpha : float
        Ridge strength.
    neurons : array_like of int, optional
        Evaluate only these target neurons (``W`` and ``bias`` then hold only those columns).
    basis_matrix : numpy.ndarray, optional
        The ``(lag, basis)`` matrix; default :func:`make_basis`.
    start : int
        Sum the likelihood over bins ``start, start + 1, ...`` only (``WINDOW``: the bins whose
        history window is complete, as a design matrix without its first rows).

    Returns
    -------
    numpy.ndarray, shape (neuron,)
        ``sum_t [exp(eta) - y * eta] + alpha / 2 * ||W[:, n]||^2`` for each target neuron; the
        total objective is the sum.
    """
    B = make_basis().matrix() if basis_matrix is None else basis_matrix
    counts = np.asarray(counts)
    W = np.asarray(W, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    targets = np.arange(counts.shape[1]) if neurons is None else np.asarray(neurons)
    eta = np.broadcast_to(bias + np.log(BIN_SIZE), (counts.shape[0], len(targets))).copy()
    for b in range(B.shape[1]):
        eta += history_features(counts, B, b) @ W[b::B.shape[1], :]
    y = np.asarray(counts[:, targets], dtype=np.float64)
    nll = np.sum((np.exp(eta) - y * eta)[start:], axis=0)
    return nll + 0.5 * alpha * np.sum(W**2, axis=0)


# ----------------------------------------------------------------------------- workers (subprocess)


def _enable_jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    if os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_platforms", "cpu")
    return jax


def _block(x):
    """Wait for JAX arrays in a pytree (asynchronous dispatch) before stopping a clock."""
    import jax

    jax.block_until_ready(x)
    return x


def worker_bayesneuro(counts: np.ndarray, alpha: float, options: dict) -> dict:
    """Fit with ``bayesneuro.PoissonGLM`` (MAP), twice. Returns timings, info and parameters.

    *** bayesneuro plugs in here. ***
    """
    jax = _enable_jax()
    import bayesneuro as bn
    from bayesneuro._shapes import count_compilations

    n_bins, n_neurons = counts.shape
    basis = make_basis()
    mode = options.get("filter_mode", "fft")
    complete = options.get("rows") == "complete"
    fit_options = {} if options.get("max_iter") is None else {"max_iter": options["max_iter"]}
    out = {"calls": [], "devices": [str(d) for d in jax.devices()]}
    n_calls = options.get("repeats", 2)
    # a last call on a recording 3% shorter: another length, which should compile nothing
    lengths = [n_bins] * n_calls + ([n_bins - n_bins // 32] if options.get("other_length") else [])
    for call, T in enumerate(lengths):
        data = bn.SpikeData.from_counts(np.asarray(counts[:T]), bin_size=BIN_SIZE)
        t0 = time.perf_counter()
        glm = bn.PoissonGLM(history_basis=basis, coupling=True, filter_mode=mode, exclude_initial_bins=complete,
                            prior=bn.glm.Ridge.from_penalty(alpha), bias_prior=None)
        with warnings.catch_warnings(record=True) as caught, count_compilations() as comp:
            warnings.simplefilter("always")
            glm.fit(data, method="map", progress=False, **fit_options)
            params = _block(glm.params_)
        wall = time.perf_counter() - t0
        info = glm.result_.info
        if T != n_bins:  # timing and compilations only: the parameters are those of the full recording
            out["other_length"] = {"n_bins": T, "wall_s": wall, "compilations": comp.compilations,
                                   "compile_s": comp.seconds}
            continue
        kept = params
        out["calls"].append({"wall_s": wall, "n_iter": int(info["n_iter"]),
                             "compilations": comp.compilations, "compile_s": comp.seconds,
                             "converged": bool(info["converged"]), "message": str(info["message"]),
                             "grad_norm": float(info["grad_norm"]),
                             # -log joint incl. constants (log y!, Normal normalisers): not comparable
                             "tool_objective": float(info["objective"]),
                             "warnings": sorted({str(w.message)[:80] for w in caught})})
    # params_: "bias" (neuron,) log spikes/s; "history_weights" (basis, neuron);
    # "coupling_weights" (source, basis, neuron) whose self entries are masked out of the model.
    params = kept
    hist = np.asarray(params["history_weights"])
    coup = np.asarray(params["coupling_weights"]).copy()
    idx = np.arange(n_neurons)
    out["unused_self_coupling_max_abs"] = float(np.abs(coup[idx, :, idx]).max())
    coup[idx, :, idx] = hist.T  # put each neuron's own history filter on the diagonal
    W = coup.reshape(n_neurons * N_BASIS, n_neurons)  # design layout: row m * B + b
    out["bias"] = np.asarray(params["bias"])
    out["W"] = W
    out["settings"] = (f"PoissonGLM(coupling=True, prior=Ridge.from_penalty(alpha), bias_prior=None, "
                       f"filter_mode={mode!r}, exclude_initial_bins={complete}).fit(method='map')")
    return out


def worker_nemos(counts: np.ndarray, alpha: float, options: dict) -> dict:
    """Fit with nemos ``PopulationGLM(regularizer="Ridge")`` on the bayesneuro design matrix."""
    jax = _enable_jax()
    import nemos as nmo

    import bayesneuro as bn
    from bayesneuro._shapes import count_compilations

    n_bins, n_neurons = counts.shape
    basis = make_basis()
    start = WINDOW if options.get("rows") == "complete" else 0  # drop the rows of incomplete history
    y = np.asarray(counts, dtype=np.float64)[start:]
    n_bins = y.shape[0]
    solver_kwargs = dict(options.get("solver_kwargs", NEMOS_SOLVER_KWARGS))
    if options.get("max_iter") is not None:
        solver_kwargs["maxiter"] = options["max_iter"]
    out = {"calls": []}
    for call in range(options.get("repeats", 2)):
        t0 = time.perf_counter()
        X = _block(bn.bases.design_matrix(np.asarray(counts), basis, history=True)[start:])
        t_design = time.perf_counter() - t0
        model = nmo.glm.PopulationGLM(
            regularizer="Ridge",
            regularizer_strength=alpha / n_bins,  # nemos loss = F / n_bins, see module docstring
            solver_name=options.get("solver", NEMOS_SOLVER),
            solver_kwargs=solver_kwargs,
        )
        with warnings.catch_warnings(record=True) as caught, count_compilations() as comp:
            warnings.simplefilter("always")
            model.fit(X, y)
            _block((model.coef_, model.intercept_))
        wall = time.perf_counter() - t0
        info = model.optim_info_
        out["calls"].append({"wall_s": wall, "design_s": t_design, "fit_s": wall - t_design,
                             "compilations": comp.compilations, "compile_s": comp.seconds,
                             "n_iter": int(info.num_steps), "converged": bool(info.converged),
                             "tool_objective": float(info.function_val) * n_bins,
                             "warnings": sorted({str(w.message)[:80] for w in caught})})
        del X
    out["bias"] = np.asarray(model.intercept_) - np.log(BIN_SIZE)
    out["W"] = np.asarray(model.coef_)
    out["settings"] = (f"PopulationGLM(regularizer='Ridge', regularizer_strength=alpha/T, "
                       f"solver_name={options.get('solver', NEMOS_SOLVER)!r}, "
                       f"solver_kwargs={solver_kwargs})")
    out["jax_dtype"] = str(jax.numpy.asarray(1.0).dtype)
    return out


def worker_statsmodels(counts: np.ndarray, alpha: float, options: dict) -> dict:
    """Per-neuron ``sm.GLM(...).fit_regularized(L1_wt=0)`` on a subset of neurons."""
    _enable_jax()
    import statsmodels.api as sm

    import bayesneuro as bn

    start = WINDOW if options.get("rows") == "complete" else 0  # drop the rows of incomplete history
    counts = np.asarray(counts)
    n_neurons = counts.shape[1]
    n_bins = counts.shape[0] - start
    neurons = np.arange(min(options["sm_neurons"], n_neurons))
    t0 = time.perf_counter()
    X = np.asarray(bn.bases.design_matrix(counts, make_basis(), history=True))[start:]
    Xc = sm.add_constant(X, prepend=True)
    t_design = time.perf_counter() - t0
    alpha_vec = np.full(Xc.shape[1], alpha / n_bins)  # statsmodels loss is -loglike / n_bins
    alpha_vec[0] = 0.0  # constant unpenalised
    out = {"calls": [], "neurons": neurons.tolist(), "design_s": t_design}
    bias, W = [], []
    for n in neurons:
        y = np.asarray(counts[start:, n], dtype=np.float64)
        init = np.zeros(Xc.shape[1])
        init[0] = np.log(max(y.mean(), 1e-8))  # same start as nemos: log mean count, zero filters
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = sm.GLM(y, Xc, family=sm.families.Poisson()).fit_regularized(
                alpha=alpha_vec, L1_wt=0.0, start_params=init, opt_method=STATSMODELS_OPT_METHOD)
        out["calls"].append({"neuron": int(n), "wall_s": time.perf_counter() - t1,
                             "converged": not any("may have failed" in str(w.message) for w in caught),
                             "warnings": sorted({str(w.message)[:80] for w in caught})})
        bias.append(res.params[0] - np.log(BIN_SIZE))
        W.append(res.params[1:])
    out["bias"] = np.asarray(bias)
    out["W"] = np.stack(W, axis=1)
    out["settings"] = (f"per neuron: sm.GLM(y, add_constant(X), Poisson()).fit_regularized("
                       f"alpha=[0, alpha/T...], L1_wt=0, opt_method={STATSMODELS_OPT_METHOD!r})")
    return out


WORKERS = {"bayesneuro": worker_bayesneuro, "nemos": worker_nemos, "statsmodels": worker_statsmodels}
#: tool name -> (worker, options it implies): the default path, the design path, complete rows
VARIANTS = {
    "bayesneuro": ("bayesneuro", {}),
    "bayesneuro-design": ("bayesneuro", {"filter_mode": "design"}),
    "bayesneuro-complete": ("bayesneuro", {"rows": "complete"}),
    "nemos": ("nemos", {}),
    "nemos-complete": ("nemos", {"rows": "complete"}),
    "statsmodels-complete": ("statsmodels", {"rows": "complete"}),
}


def _complete(tool: str) -> bool:
    return tool.endswith("-complete")


def run_worker(spec: dict) -> None:
    """Subprocess entry point: load data, fit, save ``{spec['out']}.json`` and ``.npz``."""
    counts = load_counts(spec["n_neurons"], spec["n_bins"], Path(spec["cache_dir"]))
    counts = np.ascontiguousarray(counts)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker, implied = VARIANTS[spec["tool"]]
    result = WORKERS[worker](counts, spec["alpha"], {**spec.get("options", {}), **implied})
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    np.savez(spec["out"] + ".npz", bias=result.pop("bias"), W=result.pop("W"))
    result.update(peak_rss_mib=peak_kib / 1024, rss_before_fit_mib=rss0 / 1024)
    Path(spec["out"] + ".json").write_text(json.dumps(result))


def launch(tool: str, n_neurons: int, n_bins: int, cache_dir: Path, work: Path, *,
           timeout: float, options: dict | None = None, device: bool = False) -> dict:
    """Run one tool on one data size in a fresh Python process; return its record."""
    tag = f"{tool}_N{n_neurons}_T{n_bins}"
    spec = {"tool": tool, "n_neurons": n_neurons, "n_bins": n_bins, "cache_dir": str(cache_dir),
            "alpha": ALPHA, "options": options or {}, "out": str(work / tag)}
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if not device:
        env["JAX_PLATFORMS"] = "cpu"
    load0 = os.getloadavg()[0]  # other jobs on the machine distort timings: record the load
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "n_neurons": n_neurons, "n_bins": n_bins, "error": f"timeout after {timeout:.0f} s"}
    record = {"tool": tool, "n_neurons": n_neurons, "n_bins": n_bins,
              "process_s": time.perf_counter() - t0, "options": options or {},
              "loadavg_1min_before_after": [load0, os.getloadavg()[0]]}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        record["error"] = f"exit {proc.returncode}: " + " | ".join(tail)
        return record
    record.update(json.loads(Path(spec["out"] + ".json").read_text()))
    params = np.load(spec["out"] + ".npz")
    record["_bias"], record["_W"] = params["bias"], params["W"]
    return record


# ----------------------------------------------------------------------------- reporting


def _fmt(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def evaluate(records: list[dict], cache_dir: Path) -> None:
    """Add the common objective (numpy) to each record, and the gap to bayesneuro's."""
    by_size: dict[tuple, dict] = {}
    for r in records:
        if "error" in r:
            continue
        counts = load_counts(r["n_neurons"], r["n_bins"], cache_dir)
        neurons = r.get("neurons")
        start = WINDOW if _complete(r["tool"]) else 0
        per = objective(counts, r["_bias"], r["_W"], neurons=neurons, start=start)
        r["objective"] = float(per.sum())
        r["objective_rows_from"] = start
        r["objective_per_neuron"] = per.tolist()
        by_size.setdefault((r["n_neurons"], r["n_bins"], start), {})[r["tool"]] = r
    for (_, _, start), tools in by_size.items():
        ref = tools.get("bayesneuro-complete" if start else "bayesneuro")
        for r in tools.values():
            if ref is None:
                continue
            ref_per = np.asarray(ref["objective_per_neuron"])
            if r.get("neurons") is not None:
                ref_per = ref_per[r["neurons"]]
            ref_total = ref_per.sum()
            r["objective_bayesneuro_same_neurons"] = float(ref_total)
            r["rel_objective_diff_vs_bayesneuro"] = float((r["objective"] - ref_total) / abs(ref_total))


def first_second(r: dict) -> tuple[float | None, float | None]:
    """Wall time of the first and of the second call (statsmodels: per-neuron extrapolation)."""
    if "error" in r:
        return None, None
    if r["tool"].startswith("statsmodels"):
        per = [c["wall_s"] for c in r["calls"]]
        # first call: design matrix + all neurons, extrapolated linearly from the subset
        total = r["design_s"] + np.mean(per) * r["n_neurons"]
        return total, total
    calls = r["calls"]
    return calls[0]["wall_s"], (calls[1]["wall_s"] if len(calls) > 1 else None)


def steady(r: dict) -> float | None:
    """The time used for ratios and slopes: the second call, or the first if only one was run."""
    f, s = first_second(r)
    return s if s is not None else f


def slope(sizes, times) -> float | None:
    """Least-squares slope of log(time) against log(size)."""
    pts = [(s, t) for s, t in zip(sizes, times) if t]
    if len(pts) < 2:
        return None
    s, t = np.log(np.array(pts)).T
    return float(np.polyfit(s, t, 1)[0])


def _iters(r: dict) -> str:
    return " / ".join(str(c["n_iter"]) for c in r["calls"])


def _calls(r: dict, digits: int = 2) -> str:
    f, s = first_second(r)
    return f"{f:.{digits}f} / {_fmt(s, f'.{digits}f')}"


def tables(results: dict) -> str:
    """Markdown report of a finished run."""
    recs = results["records"]
    find = {(r["tool"], r["n_neurons"], r["n_bins"]): r for r in recs}
    lines = []
    N, T = results["sizes"]["main"]
    order = ["bayesneuro", "bayesneuro-design", "nemos", "bayesneuro-complete", "nemos-complete", "statsmodels-complete"]
    if any((tool, N, T) in find for tool in order):
        lines += [f"### Main comparison: {N} neurons x {T:,} bins of 1 ms, {N_BASIS} basis functions "
                  f"x {WINDOW} lags, {N * N_BASIS} features per neuron, alpha = {ALPHA}", ""]
        lines += ["| tool | rows in the objective | first call (s) | second call (s) | XLA compilations 1st / 2nd "
                  "| another length: s (compilations) | time / bayesneuro | iterations | converged "
                  "| objective (common numpy) | rel. diff vs bayesneuro (same rows) | peak RSS (MiB) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for tool in order:
            r = find.get((tool, N, T))
            if r is None:
                continue
            rows = f"{WINDOW}..{T - 1}" if _complete(tool) else f"0..{T - 1}"
            if "error" in r:
                lines.append(f"| {tool} | {rows} | failed: {r['error'][:120]} | | | | | | | | | |")
                continue
            ref = find.get(("bayesneuro-complete" if _complete(tool) else "bayesneuro", N, T))
            ref_time = steady(ref) if ref and "error" not in ref else None
            f, s = first_second(r)
            ratio = f"{steady(r) / ref_time:.2f}x" if ref_time else "n/a"
            comp = " / ".join(str(c.get("compilations", "?")) for c in r["calls"]) if "calls" in r and not \
                tool.startswith("statsmodels") else "n/a"
            other = r.get("other_length")
            other = f"{other['wall_s']:.2f} ({other['compilations']})" if other else "n/a"
            if tool.startswith("statsmodels"):
                iters = "scipy BFGS"
                conv = f"{sum(c['converged'] for c in r['calls'])}/{len(r['calls'])} neurons"
                label = f"statsmodels (extrapolated from {len(r['calls'])} neurons)" if len(r["calls"]) < N else tool
                obj = f"{r['objective']:.6f}" + (f" ({len(r['calls'])} neurons)" if len(r["calls"]) < N else "")
                s = None
            else:
                iters = _iters(r)
                conv = " / ".join(str(c["converged"]) for c in r["calls"])
                label = tool
                obj = f"{r['objective']:.6f}"
            diff = r.get("rel_objective_diff_vs_bayesneuro")
            lines.append(f"| {label} | {rows} | {f:.2f} | {_fmt(s)} | {comp} | {other} | {ratio} | {iters} | {conv} "
                         f"| {obj} | {_fmt(diff, '+.2e')} | {r['peak_rss_mib']:.0f} |")
        lines += ["", "Ratios use the second call where there is one (after compilation), else the first, and "
                      "compare with bayesneuro on the same rows. `bayesneuro` is the default path "
                      "(`filter_mode=\"fft\"`), `bayesneuro-design` the design-matrix path: the same model, "
                      "so their objective gap is the optimiser's. `*-complete` tools leave out the first "
                      f"{WINDOW} bins (incomplete history): `PoissonGLM(exclude_initial_bins=True)`, and "
                      "nemos / statsmodels on the design rows from "
                      f"{WINDOW} on. 'another length' is a third bayesneuro call on a recording 3% shorter."]
        sm_r = find.get(("statsmodels-complete", N, T))
        if sm_r and "error" not in sm_r:
            per = [c["wall_s"] for c in sm_r["calls"]]
            lines += ["", f"statsmodels was run on neurons {sm_r['neurons']}: "
                          f"{np.mean(per):.1f} s per neuron (min {min(per):.1f}, max {max(per):.1f}) "
                          f"+ {sm_r['design_s']:.1f} s design matrix; its time above is design + {N} x mean "
                          "per neuron (extrapolated where fewer neurons ran, and then its objective and "
                          "gap are over those neurons only)."]
        for tool in ("nemos", "nemos-complete"):
            nm = find.get((tool, N, T))
            if nm and "error" not in nm:
                lines += ["", f"{tool} times include building the design matrix with `bn.bases.design_matrix` "
                              "(" + ", ".join(f"{c['design_s']:.2f} s" for c in nm["calls"]) + "); nemos fit "
                              "alone: " + ", ".join(f"{c['fit_s']:.2f} s" for c in nm["calls"]) + "."]

    for axis, title, key in [("bins", "Scaling in recording length", "n_bins"),
                             ("neurons", "Scaling in population size", "n_neurons")]:
        if axis == "bins":
            n_fixed, grid = results["sizes"]["bins"]
            sizes = [(n_fixed, t) for t in grid]
            head = f"### {title} ({n_fixed} neurons)"
        else:
            grid, t_fixed = results["sizes"]["neurons"]
            sizes = [(n, t_fixed) for n in grid]
            head = f"### {title} ({t_fixed:,} bins)"
        if not any((tool, n, t) in find for tool in ["bayesneuro", "nemos"] for n, t in sizes):
            continue
        lines += ["", head, ""]
        lines += ["| neurons | bins | bayesneuro 1st / 2nd (s) | bn iters | nemos 1st / 2nd (s) | nemos iters "
                  "| nemos / bn | rel. obj. diff nemos vs bn | bn RSS (MiB) | nemos RSS (MiB) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        series = {"bayesneuro": [], "nemos": []}
        for n, t in sizes:
            cells = [str(n), f"{t:,}"]
            times = {}
            for tool in ["bayesneuro", "nemos"]:
                r = find.get((tool, n, t))
                if r is None or "error" in r:
                    cells += ["failed" if r else "not run", ""]
                    series[tool].append(None)
                    continue
                times[tool] = steady(r)
                series[tool].append(times[tool])
                cells += [_calls(r), _iters(r)]
            ratio = f"{times['nemos'] / times['bayesneuro']:.2f}x" if len(times) == 2 else "n/a"
            diff = find.get(("nemos", n, t), {}).get("rel_objective_diff_vs_bayesneuro")
            rss = [find.get((tool, n, t), {}).get("peak_rss_mib") for tool in ["bayesneuro", "nemos"]]
            cells += [ratio, _fmt(diff, "+.2e"), _fmt(rss[0], ".0f"), _fmt(rss[1], ".0f")]
            lines.append("| " + " | ".join(cells) + " |")
        xs = [s[1] if axis == "bins" else s[0] for s in sizes]
        lines += ["", f"Slope of log(time) vs log({key}) (least squares over the rows; time = 2nd call, "
                      "or 1st if only one): "
                  + ", ".join(f"{tool} {_fmt(slope(xs, series[tool]))}" for tool in series)]

    N, T = results["sizes"]["memory"]
    if any((tool, N, T) in find for tool in ["bayesneuro", "nemos"]):
        lines += ["", f"### Memory: long recording ({N} neurons x {T:,} bins)", ""]
        design_mib = T * N * N_BASIS * 8 / 2**20
        lines += [f"Dense float64 design matrix: {T:,} x {N * N_BASIS} = {design_mib:,.0f} MiB.", "",
                  "| tool | fits? | first / second call (s) | iterations | converged | peak RSS (MiB) "
                  "| peak RSS / design size | rel. obj. diff vs bn |", "|---|---|---|---|---|---|---|---|"]
        for tool in ["bayesneuro", "nemos"]:
            r = find.get((tool, N, T))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {tool} | no: {r['error'][:150]} | | | | | | |")
                continue
            cap = r.get("options", {}).get("max_iter")
            conv = " / ".join(str(c["converged"]) for c in r["calls"])
            if cap:
                conv += f" (capped at {cap} iterations)"
            lines.append(f"| {tool} | yes | {_calls(r, 1)} | {_iters(r)} | {conv} | "
                         f"{r['peak_rss_mib']:,.0f} | {r['peak_rss_mib'] / design_mib:.2f} | "
                         f"{_fmt(r.get('rel_objective_diff_vs_bayesneuro'), '+.2e')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (about 2 min)")
    parser.add_argument("--full", action="store_true",
                        help="the long sections: 50 neurons x 100,000 bins, scaling to 200,000 bins and 100 "
                             "neurons, 1,000,000 bins, nemos on every row (hours on a 2-core CPU)")
    parser.add_argument("--device", action="store_true",
                        help="let JAX use its default platform (GPU) instead of the CPU")
    parser.add_argument("--tools", default="bayesneuro,nemos,statsmodels",
                        help="comma-separated subset of bayesneuro,nemos,statsmodels")
    parser.add_argument("--no-nemos-scaling", action="store_true",
                        help="run nemos on the main row only (not the scaling rows; always so without --full)")
    parser.add_argument("--no-nemos-memory", action="store_true",
                        help="skip nemos on the long (memory) recording (always so without --full)")
    parser.add_argument("--sections", default="main,bins,neurons,memory",
                        help="comma-separated subset of main,bins,neurons,memory")
    parser.add_argument("--repeats", type=int, default=2,
                        help="calls per tool on the main row (1st includes compilation)")
    parser.add_argument("--scaling-repeats", type=int, default=None,
                        help="calls per tool on the scaling and memory rows (default 2)")
    parser.add_argument("--memory-max-iter", type=int, default=None,
                        help="cap the optimiser iterations on the memory row (peak RSS is reached in "
                             "the first iterations); default: run to convergence")
    parser.add_argument("--sm-neurons", type=int, default=None,
                        help="neurons fitted by statsmodels (default all 8 by default, 5 full, 1 quick)")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "bayesneuro_bench_glm"),
                        help="where simulated recordings are cached")
    parser.add_argument("--out", default=None, help="output stem (default bench/results/glm[_quick])")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(json.loads(args._worker))
        return

    mode = "quick" if args.quick else "full" if args.full else "default"
    if mode != "full":
        args.no_nemos_scaling = args.no_nemos_memory = True
    sizes = SIZES[mode]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    cache_dir = Path(args.cache_dir)
    main_size = sizes["main"]
    if args.scaling_repeats is None:
        args.scaling_repeats = 2
    sections = {s.strip() for s in args.sections.split(",")}
    scaling = ([(sizes["bins"][0], t) for t in sizes["bins"][1]] if "bins" in sections else []) + (
        [(n, sizes["neurons"][1]) for n in sizes["neurons"][0]] if "neurons" in sections else [])
    memory = sizes["memory"]

    # the plan: (tool, N, T) -> worker options; main row first, deduplicated (first entry wins)
    plan: dict[tuple, dict] = {}
    if "main" in sections:
        if "bayesneuro" in tools:
            for variant in ("bayesneuro", "bayesneuro-design"):
                plan[(variant, *main_size)] = {"repeats": args.repeats, "other_length": True}
            plan[("bayesneuro-complete", *main_size)] = {"repeats": args.repeats}
        if "nemos" in tools:
            for variant in ("nemos", "nemos-complete"):
                plan[(variant, *main_size)] = {"repeats": args.repeats}
    for tool in [t for t in tools if t != "statsmodels"]:
        if tool == "nemos" and args.no_nemos_scaling:
            continue
        for n, t in scaling:
            plan.setdefault((tool, n, t), {"repeats": args.scaling_repeats})
    if "memory" in sections:
        for tool in [t for t in tools if t != "statsmodels"]:
            if tool == "nemos" and args.no_nemos_memory:
                continue
            plan.setdefault((tool, *memory), {"repeats": args.scaling_repeats,
                                              "max_iter": args.memory_max_iter})
    if "main" in sections and "statsmodels" in tools:  # last: the slowest, and extrapolated anyway
        plan[("statsmodels-complete", *main_size)] = {"sm_neurons": args.sm_neurons or sizes["sm_neurons"]}

    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"# GLM benchmark ({mode}); simulating / loading data in {cache_dir}", flush=True)
    rate_stats = prepare_data([(n, t) for _, n, t in plan] + [main_size], cache_dir)
    for n, s in rate_stats.items():
        print(f"  N={n}: firing rates {s['rate_min_hz']:.1f}-{s['rate_max_hz']:.1f} Hz "
              f"(median {s['rate_median_hz']:.1f})", flush=True)

    # sanity: the numpy features of the common objective equal bn.bases.design_matrix
    import bayesneuro as bn

    _enable_jax()
    small = np.asarray(load_counts(main_size[0], min(5_000, main_size[1]), cache_dir))
    X_bn = np.asarray(bn.bases.design_matrix(small, make_basis(), history=True))
    B = make_basis().matrix()
    X_np = np.stack([history_features(small, B, b) for b in range(N_BASIS)], axis=2).reshape(X_bn.shape)
    design_err = float(np.max(np.abs(X_bn - X_np)))
    print(f"  max |bn.bases.design_matrix - numpy features| = {design_err:.1e}", flush=True)

    records = []
    with tempfile.TemporaryDirectory(prefix="bench_glm_") as work:
        for (tool, n, t), options in plan.items():
            print(f"  running {tool:12s} N={n:4d} T={t:>9,} ...", end=" ", flush=True)
            r = launch(tool, n, t, cache_dir, Path(work), timeout=sizes["timeout"], options=options,
                       device=args.device)
            if "error" in r:
                print(f"FAILED ({r['error'][:200]})", flush=True)
            else:
                f, s = first_second(r)
                print(f"{f:.2f} s / {_fmt(s)} s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
            records.append(r)

    evaluate(records, cache_dir)
    # the true parameters' objective, for scale (a MAP fit must be at or below it)
    for n, t in [main_size]:
        truth = true_parameters(n)
        true_obj = float(objective(load_counts(n, t, cache_dir), truth["bias"], truth["W"]).sum())

    import jax
    import nemos
    import statsmodels

    devices = next((r["devices"] for r in records if "devices" in r), ["?"])
    gaps = {}
    for n, t in {(r["n_neurons"], r["n_bins"]) for r in records}:
        a = next((r for r in records if r["tool"] == "bayesneuro" and (r["n_neurons"], r["n_bins"]) == (n, t)), None)
        b = next((r for r in records if r["tool"] == "bayesneuro-design" and (r["n_neurons"], r["n_bins"]) == (n, t)), None)
        if a and b and "objective" in a and "objective" in b:
            gaps[f"{n}x{t}"] = (a["objective"] - b["objective"]) / abs(b["objective"])
    results = {
        "mode": mode,
        "device": args.device,
        "devices": devices,
        "loadavg_at_start_end": [load_start, [round(x, 2) for x in os.getloadavg()]],
        "default_vs_design_rel_objective_gap": gaps,
        "sizes": {"main": main_size, "bins": sizes["bins"], "neurons": sizes["neurons"], "memory": memory},
        "settings": {
            "bin_size_s": BIN_SIZE, "basis": repr(make_basis()), "alpha": ALPHA, "seed": SEED,
            "dtype": "float64 (jax_enable_x64) for bayesneuro and nemos; numpy float64 for statsmodels",
            "nemos": {"solver_name": NEMOS_SOLVER, "solver_kwargs": NEMOS_SOLVER_KWARGS,
                      "regularizer": "Ridge", "regularizer_strength": "alpha / n_bins"},
            "statsmodels": {"opt_method": STATSMODELS_OPT_METHOD, "n_neurons_run": sizes["sm_neurons"]},
        },
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "nemos": nemos.__version__, "statsmodels": statsmodels.__version__,
                     "bayesneuro": bn.__version__, "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "firing_rates_hz": {str(k): v for k, v in rate_stats.items()},
        "design_matrix_check_max_abs_err": design_err,
        "true_parameters_objective_main": true_obj,
        "records": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
    }
    report = tables(results)
    header = (f"## GLM benchmark ({mode})\n\n"
              f"Python {results['versions']['python']}, jax {jax.__version__}, nemos {nemos.__version__}, "
              f"statsmodels {statsmodels.__version__}, {os.cpu_count()} CPU cores, float64, JAX devices "
              f"{', '.join(devices)} ({'--device' if args.device else 'JAX_PLATFORMS=cpu'}). "
              f"Load average (1, 5, 15 min) at start {load_start}, at end {results['loadavg_at_start_end'][1]}. "
              f"Objective at the true (simulated) parameters, main row: {true_obj:.6f}. "
              f"nemos: solver_name={NEMOS_SOLVER!r}, solver_kwargs={NEMOS_SOLVER_KWARGS}, "
              f"regularizer_strength=alpha/T. 1-min load average before/after each fit is in the "
              f"JSON (other jobs on the machine inflate times).\n")
    if gaps:
        header += ("\nDefault (FFT) path vs design path, relative objective gap (common numpy objective): "
                   + ", ".join(f"{k}: {v:+.1e}" for k, v in gaps.items()) + "\n")
    print()
    print(header)
    print(report)
    stem = Path(args.out) if args.out else RESULTS / {"default": "glm", "full": "glm_full", "quick": "glm_quick"}[mode]
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(header + "\n" + report + "\n")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")


if __name__ == "__main__":
    main()
