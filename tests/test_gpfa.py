"""GPFA (bayesneuro.latent.gpfa, gpfa_gaussian): elephant's EM, dense Gaussian conditioning, ground truth, API.

References used here: ``elephant.gpfa.gpfa_core`` (the same EM from the same start), a dense
joint Gaussian of each trial built in numpy (posterior, marginal likelihood, leave-neuron-out
prediction), numpy kernel formulas, and :func:`jax.grad` for the timescale derivatives.
"""

from __future__ import annotations

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import bayesneuro as bn
from bayesneuro.diagnostics import ConvergenceWarning
from bayesneuro.latent import gpfa_gaussian as G
from bayesneuro.latent.gpfa import GPFA
from bayesneuro.latent.gpfa_gaussian import (
    GPFAParams,
    fit_gpfa_em,
    gpfa_log_likelihood,
    gpfa_posterior,
    gpfa_sample,
    init_gpfa_params,
)
from bayesneuro.latent.gpfa_select import choose_n_latents

LENGTHS = (20, 13, 20, 6)  # cycled over trials: three distinct lengths, grouped by the E-step


def make_params(n_neuron: int, timescales, seed: int, *, offset: float = 2.0, noise: float = 0.2) -> GPFAParams:
    rng = np.random.default_rng(seed)
    q = len(timescales)
    return GPFAParams(
        jnp.asarray(rng.normal(scale=0.6, size=(n_neuron, q))),
        jnp.asarray(rng.uniform(offset - 0.5, offset + 0.5, n_neuron)),
        jnp.asarray(rng.uniform(0.5 * noise, 1.5 * noise, n_neuron)),
        jnp.asarray(np.asarray(timescales, dtype=float)),
        jnp.full(q, 1e-3),
    )


def gaussian_trials(params: GPFAParams, n_trial: int, seed: int) -> list[np.ndarray]:
    """Gaussian draws from the model, trial k cut to LENGTHS[k % 4] bins."""
    _, y = gpfa_sample(jax.random.key(seed), params, n_trial, max(LENGTHS))
    y = np.asarray(y)
    return [y[k, : LENGTHS[k % len(LENGTHS)]] for k in range(n_trial)]


def poisson_data(params: GPFAParams, n_trial: int, n_time: int, seed: int, bin_size: float = 0.02):
    """Counts whose square root follows the model's latent mean: rate = (C x + d)^2 per bin."""
    x, _ = gpfa_sample(jax.random.key(seed), params, n_trial, n_time)
    x = np.asarray(x)
    root = np.clip(x @ np.asarray(params.loadings).T + np.asarray(params.offset), 0.0, None)
    counts = np.random.default_rng(seed).poisson(root**2)
    return bn.SpikeData.from_trials(counts, bin_size=bin_size), x


def np_kernel(kernel: str, tau: float, eps: float, T: int) -> np.ndarray:
    r = np.abs(np.subtract.outer(np.arange(T), np.arange(T))) / tau
    k = {
        "se": np.exp(-0.5 * r**2),
        "matern32": (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r),
        "matern52": (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r),
    }[kernel]
    return (1 - eps) * k + eps * np.eye(T)


def dense_posterior(params: GPFAParams, y: np.ndarray, kernel: str = "se", drop: int | None = None):
    """Brute-force joint Gaussian of one trial; latents flattened latent-major ``(latent, time)``.

    Returns the posterior mean ``(time, latent)``, covariance ``(latent*time, latent*time)`` and
    ``log p(y)`` (or, with ``drop=k``, the mean given every neuron but ``k``).
    """
    C, d, R, tau, eps = (np.asarray(a) for a in params)
    T, N = y.shape
    q = C.shape[1]
    K = np.zeros((q * T, q * T))
    for i in range(q):
        K[i * T : (i + 1) * T, i * T : (i + 1) * T] = np_kernel(kernel, tau[i], eps[i], T)
    A = np.einsum("ki,ts->tkis", C, np.eye(T)).reshape(T * N, q * T)  # y (time-major) = A x
    keep = np.ones(T * N, bool) if drop is None else np.tile(np.arange(N) != drop, T)
    A = A[keep]
    Sy = A @ K @ A.T + np.diag(np.tile(R, T)[keep])
    r = (y - d).reshape(-1)[keep]
    gain = K @ A.T @ np.linalg.inv(Sy)
    mean = (gain @ r).reshape(q, T).T
    cov = K - gain @ A @ K
    ll = stats.multivariate_normal(np.zeros(len(r)), Sy).logpdf(r)
    return mean, cov, ll


def elephant_inputs(params: GPFAParams, trials):
    seqs = np.empty(len(trials), dtype=[("T", int), ("y", object)])
    for k, tr in enumerate(trials):
        seqs[k] = (tr.shape[0], np.ascontiguousarray(tr.T))
    pe = {
        "covType": "rbf",
        "gamma": 1.0 / np.asarray(params.timescales) ** 2,  # elephant: tau_bins = 1 / sqrt(gamma)
        "eps": np.asarray(params.eps).copy(),
        "d": np.asarray(params.offset).copy(),
        "C": np.asarray(params.loadings).copy(),
        "R": np.diag(np.asarray(params.observation_var)),
        "notes": {"learnKernelParams": True, "learnGPNoise": False, "RforceDiagonal": True},
    }
    return seqs, pe


# ----------------------------------------------------------------------------- pure maths


def test_kernels_and_timescale_derivatives():
    """Kernels against numpy formulas; the closed-form Newton derivatives against jax.grad."""
    rng = np.random.default_rng(0)
    P = [jnp.asarray(A @ A.T) for A in (rng.normal(size=(5, 8)), rng.normal(size=(9, 12)))]

    @jax.jit
    def both(x):
        out = []
        for kernel in G.KERNELS:
            f = lambda x: G._timescale_objective(x, 1e-3, P, [3, 4], kernel)  # noqa: E731
            closed = G._timescale_objective(x, 1e-3, P, [3, 4], kernel, True)
            out.append((jnp.stack(closed), jnp.stack([f(x), jax.grad(f)(x), jax.grad(jax.grad(f))(x)])))
        return out

    for kernel, (closed, auto) in zip(G.KERNELS, both(jnp.asarray(0.4))):
        np.testing.assert_allclose(np.asarray(G.gpfa_kernel(kernel, 2.5, 1e-3, 7)), np_kernel(kernel, 2.5, 1e-3, 7),
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(closed, auto, rtol=1e-9, err_msg=kernel)


@pytest.mark.parametrize("learn_timescales", [False, True])
@pytest.mark.slow  # ~7-9 s per case: long EM runs against elephant
def test_em_matches_elephant(learn_timescales):
    """Same trials (three lengths), same start, 20 EM iterations: elephant's gpfa_core.em."""
    from elephant.gpfa import gpfa_core

    n_iter = 20
    truth = make_params(12, [2.0, 5.0, 10.0], seed=0)
    trials = gaussian_trials(truth, 20, seed=0)
    init = init_gpfa_params(trials, 3, timescale=5.0)
    seqs, pe = elephant_inputs(init, trials)
    pe["notes"]["learnKernelParams"] = learn_timescales
    # tol=-1e300 never stops early: a fixed number of iterations
    pe_out, _, lls, _ = gpfa_core.em(copy.deepcopy(pe), seqs, max_iters=n_iter, tol=-1e300, freq_ll=1)
    res = fit_gpfa_em(init, trials, max_iter=n_iter, tol=None, learn_timescales=learn_timescales,
                      squarem=False, progress=False)
    assert res.n_iter == n_iter and len(res.log_likelihoods) == n_iter + 1
    # elephant stops its timescale search at L-BFGS-B's default tolerances; ours is exact
    rtol = 1e-6 if learn_timescales else 1e-10
    np.testing.assert_allclose(res.log_likelihoods[:-1], lls, rtol=rtol)
    p = res.params
    np.testing.assert_allclose(p.loadings, pe_out["C"], rtol=100 * rtol, atol=100 * rtol)
    np.testing.assert_allclose(p.offset, pe_out["d"], rtol=100 * rtol)
    np.testing.assert_allclose(p.observation_var, np.diag(pe_out["R"]), rtol=100 * rtol)
    np.testing.assert_allclose(p.timescales, 1.0 / np.sqrt(pe_out["gamma"]), rtol=100 * rtol)
    # posteriors and log-likelihood at the final parameters, and the orthonormalised latents
    seqs_lat, ll_el = gpfa_core.exact_inference_with_ll(seqs, pe_out, get_ll=True)
    np.testing.assert_allclose(res.log_likelihoods[-1], ll_el, rtol=rtol)
    Corth, seqs_orth = gpfa_core.orthonormalize(pe_out, seqs_lat)
    U, _, Tm = G._orthonormalize(np.asarray(p.loadings))
    signs = np.sign(np.sum(U * Corth, axis=0))  # elephant leaves the SVD signs as they come
    np.testing.assert_allclose(U * signs, Corth, atol=100 * rtol)
    for k, tr in enumerate(trials):
        mean = np.asarray(gpfa_posterior(p, tr).mean[0])
        np.testing.assert_allclose(mean, seqs_lat[k]["latent_variable"].T, atol=100 * rtol)
        np.testing.assert_allclose(mean @ Tm.T * signs, seqs_orth[k]["latent_variable_orth"].T, atol=100 * rtol)


@pytest.mark.slow  # ~5.5 s
def test_posterior_matches_dense_conditioning_unequal_lengths():
    """The grouped E-step against a dense joint Gaussian, trial by trial, for every kernel."""
    truth = make_params(12, [2.0, 5.0, 10.0], seed=1)  # the shapes of test_em_matches_elephant
    trials = gaussian_trials(truth, 8, seed=1)
    for kernel in G.KERNELS:
        for tr in trials[1:4] if kernel == "se" else trials[3:4]:  # lengths 13, 20, 6 / 6
            post = gpfa_posterior(truth, tr, kernel=kernel)
            mean, cov, ll = dense_posterior(truth, tr, kernel)
            np.testing.assert_allclose(np.asarray(post.mean[0]), mean, atol=1e-8)
            q, T = mean.shape[1], mean.shape[0]
            np.testing.assert_allclose(np.asarray(post.cov).reshape(q * T, q * T), cov, atol=1e-8)
            np.testing.assert_allclose(float(post.log_likelihood[0]), ll, rtol=1e-10)
    total = sum(dense_posterior(truth, tr)[2] for tr in trials[1:4])
    assert np.isclose(G.gpfa_log_likelihood(truth, trials[1:4]), total, rtol=1e-10)


@pytest.fixture(scope="module")
def fitted():
    """A GPFA fitted to Poisson counts of trials of unequal length (with labels)."""
    truth = make_params(8, [3.0, 8.0], seed=2, offset=2.5, noise=0.1)
    data, _ = poisson_data(truth, 12, 20, seed=2)
    counts, _ = data.to_padded()
    trials = [counts[k, : (20, 7)[k % 2]] for k in range(len(counts))]  # two lengths
    data = bn.SpikeData.from_trials(trials, bin_size=0.02, trial_ids=[f"t{k}" for k in range(len(trials))],
                                    neuron_ids=[f"n{i}" for i in range(8)])
    return GPFA(2).fit(data, key=0, progress=False, max_iter=60), data


def test_estimator_matches_dense_conditioning(fitted):
    """transform / log_likelihood / predict_left_out of unequal-length trials vs dense Gaussians."""
    gpfa, data = fitted
    latents = gpfa.transform(data, orthonormal=False)
    ortho = gpfa.transform(data)
    lls = gpfa.log_likelihood(data)
    pred = gpfa.predict_left_out(data)
    for k, tr in enumerate(data.iter_trials()):
        y = np.sqrt(tr.counts.astype(float))
        sel = (latents.trial == data.trials[k]).values
        mean, cov, ll = dense_posterior(gpfa.params_, y)
        T, q = mean.shape
        np.testing.assert_allclose(latents["mean"].values[sel], mean, atol=1e-8)
        var = np.diagonal(cov).reshape(q, T).T
        np.testing.assert_allclose(latents["sd"].values[sel], np.sqrt(var), atol=1e-8)
        np.testing.assert_allclose(lls[k], ll, rtol=1e-10)
        # orthonormalised: mean T x, covariance T V T^T at each bin
        Tm = gpfa.orthonormal_transform_
        np.testing.assert_allclose(ortho["mean"].values[sel], mean @ Tm.T, atol=1e-8)
        V = np.einsum("itjt->tij", cov.reshape(q, T, q, T))
        np.testing.assert_allclose(ortho["sd"].values[sel] ** 2, np.einsum("ai,tij,aj->ta", Tm, V, Tm), atol=1e-8)
        if k < 2:
            for n in (0, 5):
                m_n = dense_posterior(gpfa.params_, y, drop=n)[0]
                expect = m_n @ gpfa.loadings_[n] + gpfa.offset_[n]
                np.testing.assert_allclose(pred.values[sel, n], expect, atol=1e-8)
    assert np.isclose(gpfa.log_likelihood(data).sum(), gpfa.log_likelihood_, rtol=1e-10)


# ----------------------------------------------------------------------------- ground truth


@pytest.mark.slow  # ~9 s
def test_recovers_ground_truth():
    """Gaussian draws from known parameters: timescales within 15 %, latents R^2 > 0.9."""
    truth = make_params(15, [3.0, 10.0], seed=3, noise=0.3)
    x, y = gpfa_sample(jax.random.key(3), truth, 30, 30)
    res = fit_gpfa_em(init_gpfa_params(y, 2, timescale=5.0), y, max_iter=150, progress=False)
    ll = res.log_likelihoods
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:])), "EM decreased the log-likelihood"
    assert ll[-1] > ll[0]
    # timescales: the GP latents are identified up to order and sign (different timescales)
    np.testing.assert_allclose(np.sort(np.asarray(res.params.timescales)), [3.0, 10.0], rtol=0.15)
    mean = np.asarray(gpfa_posterior(res.params, y).mean).reshape(-1, 2)
    X = np.column_stack([mean, np.ones(len(mean))])
    truth_x = np.asarray(x).reshape(-1, 2)
    coef, *_ = np.linalg.lstsq(X, truth_x, rcond=None)
    r2 = 1 - np.sum((truth_x - X @ coef) ** 2, axis=0) / np.sum((truth_x - truth_x.mean(0)) ** 2, axis=0)
    assert np.all(r2 > 0.9), r2


@pytest.mark.slow  # ~9 s: two EM runs to convergence
def test_squarem_reaches_the_em_fixed_point_in_fewer_esteps():
    """SQUAREM against plain EM run far longer: same fixed point, monotone, fewer E-steps.

    Plain EM (elephant's algorithm, checked above) run for 3000 steps is the reference; SQUAREM
    must reach at least its log-likelihood and the same parameters, with a small fraction of
    its E-steps, and every SQUAREM record must be a log-likelihood of the parameters it names
    (re-evaluated here by the dense-free posterior of the module).
    """
    truth = make_params(10, [2.0, 6.0], seed=6, noise=0.5)
    _, y = gpfa_sample(jax.random.key(6), truth, 15, 25)
    init = init_gpfa_params(y, 2, timescale=4.0)
    plain = fit_gpfa_em(init, y, max_iter=3000, tol=1e-12, squarem=False, progress=False)
    fast = fit_gpfa_em(init, y, max_iter=3000, tol=1e-12, squarem=True, progress=False)
    assert fast.converged
    ll = fast.log_likelihoods
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert len(fast.n_estep) == len(ll) and fast.n_estep[-1] == fast.n_iter + 1
    assert np.all(np.diff(fast.n_estep) > 0)
    assert ll[-1] >= plain.log_likelihoods[-1] - 1e-6 * abs(ll[-1])
    np.testing.assert_allclose(ll[-1], gpfa_log_likelihood(fast.params, y), rtol=1e-12)
    assert plain.converged and fast.n_iter * 3 < plain.n_iter, (fast.n_iter, plain.n_iter)
    # E-steps to come within 1e-3 of the common optimum (here 297 plain, 55 SQUAREM)
    top = max(ll[-1], plain.log_likelihoods[-1])
    steps = [r.n_estep[np.argmax(r.log_likelihoods >= top - 1e-3)] for r in (plain, fast)]
    assert 3 * steps[1] < steps[0], steps
    p, q = fast.params, plain.params
    np.testing.assert_allclose(np.sort(p.timescales), np.sort(q.timescales), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(p.loadings) @ np.asarray(p.loadings).T,
                               np.asarray(q.loadings) @ np.asarray(q.loadings).T, atol=1e-3)
    np.testing.assert_allclose(p.observation_var, q.observation_var, rtol=1e-3)
    # a budget that does not divide into cycles is honoured exactly, finished by plain steps
    short = fit_gpfa_em(init, y, max_iter=7, tol=None, progress=False)
    assert short.n_iter == 7 and not short.converged and short.n_estep[-1] == 8
    with pytest.raises(ValueError, match="squarem"):
        fit_gpfa_em(init, y, squarem="anderson", progress=False)


@pytest.mark.filterwarnings(  # max_iter=100 per fold keeps it short; the check is the choice of 2
    r"ignore:GPFA EM .*stopped at max_iter=100:bayesneuro.diagnostics.ConvergenceWarning")
@pytest.mark.slow  # ~10 s: 3-fold CV of 3 models
def test_choose_n_latents_picks_true_dimensionality():
    truth = make_params(10, [3.0, 8.0], seed=4, offset=2.5, noise=0.1)
    data, _ = poisson_data(truth, 24, 20, seed=4)
    sel = choose_n_latents(data, [1, 2, 3], n_folds=3, key=0, max_iter=100, progress=False)
    assert sel.errors.dims == ("n_latents", "fold") and sel.errors.shape == (3, 3)
    assert sel.best == 2, sel.errors.sum("fold").values
    # the same key gives the same folds
    again = choose_n_latents(data, [1], n_folds=3, key=0, max_iter=100, progress=False)
    np.testing.assert_allclose(again.errors.values[0], sel.errors.values[0], rtol=1e-12)


# ----------------------------------------------------------------------------- estimator


def test_estimator_attributes_and_outputs(fitted):
    gpfa, data = fitted
    q = 2
    ll = gpfa.log_likelihood_trace_
    assert gpfa.squarem_ and 2 <= len(ll) <= gpfa.n_iter_ + 1
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert gpfa.loadings_.shape == (8, q) and gpfa.offset_.shape == gpfa.observation_var_.shape == (8,)
    np.testing.assert_allclose(gpfa.timescales_, gpfa.params_.timescales * 0.02)
    U = gpfa.orthonormal_loadings_
    np.testing.assert_allclose(U.T @ U, np.eye(q), atol=1e-12)
    np.testing.assert_allclose(U @ gpfa.orthonormal_transform_, gpfa.loadings_, atol=1e-12)
    ve = gpfa.variance_explained_
    assert np.all(np.diff(ve) <= 0) and 0 < ve.sum() < 1
    ds = gpfa.transform(data)
    assert ds["mean"].dims == ("time", "latent") and ds.sizes["time"] == data.n_time
    np.testing.assert_array_equal(ds.trial.values, data.trial_ids)
    np.testing.assert_array_equal(ds.time.values, data.bin_centers)
    assert np.all(ds["sd"].values > 0)
    # Yu et al.'s squared leave-neuron-out error on the square-root scale
    pred = gpfa.predict_left_out(data)
    assert pred.dims == ("time", "neuron") and list(pred.neuron.values) == list(data.neuron_ids)
    err = (pred.values - np.sqrt(data.counts)) ** 2
    assert np.isclose(gpfa.leave_neuron_out_error(data), err.sum(), rtol=1e-12)
    np.testing.assert_allclose(gpfa.leave_neuron_out_error(data, per_neuron=True), err.sum(axis=0), rtol=1e-12)
    sim = gpfa.simulate(3, 15, key=1)
    assert sim.observations.shape == (3, 15, 8) and sim.latents.shape == (3, 15, q)
    np.testing.assert_array_equal(sim.observations, gpfa.simulate(3, 15, key=1).observations)
    idata = gpfa.to_inference_data()  # an EM point fit: point_estimate, no fake 1 x 1 posterior
    assert "posterior" not in idata.groups() and idata.point_estimate.attrs["method"] == "em"
    post = idata.point_estimate
    assert post["loadings"].dims == ("neuron", "latent")
    assert post["timescales"].dims == ("latent",)
    assert list(post.neuron.values) == list(data.neuron_ids)
    np.testing.assert_allclose(idata.fit_stats["log_likelihood_trace"].values, ll)
    for group in idata.groups():
        assert not any("_dim_" in str(d) for d in idata[group].dims), group
    assert "fitted" in repr(gpfa)


@pytest.mark.slow  # ~15 s
def test_cosmoothing_score_matches_dense_predictive(fitted):
    """score = bits/spike of E[count] = m^2 + v from dense Gaussian conditioning, scipy Poisson.

    Leave-one-neuron-out and a held-out set, on unequal-length trials; the predictive mean and
    variance of the left-out neuron's square-root count come from the dense joint Gaussian
    (latent covariance pushed through its loading, plus its noise variance).
    """
    gpfa, data = fitted
    p = gpfa.params_
    C, R = np.asarray(p.loadings), np.asarray(p.observation_var)
    held = [2, 5]
    loo = np.zeros(data.counts.shape)
    given = np.zeros(data.counts.shape)
    start = 0
    for tr in data.iter_trials():
        y = np.sqrt(tr.counts.astype(float))
        T = len(y)
        q = C.shape[1]
        sl = slice(start, start + T)
        for k in range(y.shape[1]):
            mean, cov, _ = dense_posterior(p, y, drop=k)
            cov_t = np.einsum("itjt->tij", cov.reshape(q, T, q, T))
            m = mean @ C[k] + np.asarray(p.offset)[k]
            v = np.einsum("i,tij,j->t", C[k], cov_t, C[k]) + R[k]
            loo[sl, k] = (m**2 + v) / data.bin_size
        # held-out set: a model conditioned on the other neurons (drop them by infinite noise)
        keep = np.setdiff1d(np.arange(y.shape[1]), held)
        sub = GPFAParams(p.loadings[keep], p.offset[keep], p.observation_var[keep], p.timescales, p.eps)
        mean, cov, _ = dense_posterior(sub, y[:, keep])
        cov_t = np.einsum("itjt->tij", cov.reshape(q, T, q, T))
        m = mean @ C.T + np.asarray(p.offset)
        v = np.einsum("ki,tij,kj->tk", C, cov_t, C) + R
        given[sl] = (m**2 + v) / data.bin_size
        start += T

    def bits(y, rate):
        ll = stats.poisson.logpmf(y, rate * data.bin_size).sum()
        null = stats.poisson.logpmf(y, np.broadcast_to(y.mean(axis=0), y.shape)).sum()
        return (ll - null) / (y.sum() * np.log(2))

    score = gpfa.score(data)
    assert np.isclose(score, bits(data.counts, loo), rtol=1e-8) and score > 0
    ids = data.neuron_ids
    rest = [ids[i] for i in range(len(ids)) if i not in held]
    np.testing.assert_allclose(gpfa.predict_rate(data, observed_neurons=rest), given, rtol=1e-8)
    assert np.isclose(gpfa.score(data, held_out_neurons=[ids[i] for i in held]),
                      bits(data.counts[:, held], given[:, held]), rtol=1e-8)
    per = gpfa.evaluate(data)["bits_per_spike_per_neuron"]
    assert per.shape == (len(ids),) and np.all(np.isfinite(per))
    with pytest.raises(ValueError, match="held_out_neurons names every neuron"):
        gpfa.score(data, held_out_neurons=list(ids))
    with pytest.raises(ValueError, match="not neurons of the fit"):
        gpfa.score(data, held_out_neurons=["nope"])


def test_fixed_timescales():
    truth = make_params(6, [3.0, 8.0], seed=5)
    data, _ = poisson_data(truth, 6, 12, seed=5)
    with pytest.warns(ConvergenceWarning, match="stopped at max_iter=5 before converging"):
        gpfa = GPFA(2, learn_timescales=False, init_timescale=0.05).fit(data, key=0, progress=False, max_iter=5)
    np.testing.assert_allclose(gpfa.timescales_, [0.05, 0.05])
    assert gpfa.n_iter_ == 5 and not gpfa.converged_


# ----------------------------------------------------------------------------- bad input


def test_bad_input_messages(fitted):
    gpfa, data = fitted
    ones = np.ones((10, 3), dtype=int)
    ok = bn.SpikeData.from_trials([np.eye(10, 3, dtype=int) + np.eye(10, 3, k=-1, dtype=int)] * 2, bin_size=0.01)
    with pytest.raises(ValueError, match=r"n_latents=3 must be smaller than the number of neurons \(3\)"):
        GPFA(3).fit(ok, key=0, progress=False)
    short = bn.SpikeData.from_trials([ok.trial(0).counts, ok.counts[:1]], bin_size=0.01, trial_ids=["a", "b"])
    with pytest.raises(ValueError, match=r"trials \['b'\] have fewer than 2 bins"):
        GPFA(1).fit(short, key=0, progress=False)
    counts = np.random.default_rng(0).poisson(3.0, (2, 10, 3))
    counts[:, :, 1] = 0
    with pytest.warns(UserWarning, match="no spikes"):
        silent = bn.SpikeData.from_trials(counts, bin_size=0.01, neuron_ids=["a", "dead", "c"])
    with pytest.raises(ValueError, match=r"neurons \['dead'\] have zero variance"):
        GPFA(1).fit(silent, key=0, progress=False)
    counts[:, :, 1] = 2  # constant but not silent
    with pytest.raises(ValueError, match=r"neurons \['dead'\] have zero variance"):
        GPFA(1).fit(bn.SpikeData.from_trials(counts, bin_size=0.01, neuron_ids=["a", "dead", "c"]), key=0)
    with pytest.raises(TypeError, match="key"):
        GPFA(1, observation="poisson").fit(ok, method="laplace", key=None)
    with pytest.raises(ValueError, match=r"method must be one of \('em',\) for observation='gaussian'"):
        GPFA(1).fit(ok, method="vi", key=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        GPFA(1).transform(ok)
    with pytest.raises(ValueError, match="neurons of the fit"):
        gpfa.transform(bn.SpikeData.from_trials([ones], bin_size=0.02))
    for kwargs, msg in [({"n_latents": 0}, "n_latents"), ({"n_latents": 1, "kernel": "rbf"}, "kernel"),
                        ({"n_latents": 1, "observation": "negbin"}, "observation"),
                        ({"n_latents": 1, "count_transform": "log"}, "count_transform"),
                        ({"n_latents": 1, "eps": 0.0}, "eps"), ({"n_latents": 1, "init_timescale": -1.0}, "init_timescale")]:
        with pytest.raises(ValueError, match=msg):
            GPFA(**kwargs)
    with pytest.raises(ValueError, match="n_folds"):
        choose_n_latents(ok, [1], n_folds=3, key=0)
    with pytest.raises(ValueError, match="n_latents=3 must be smaller"):
        choose_n_latents(ok, [1, 3], n_folds=2, key=0)
    with pytest.raises(ValueError, match="observation_var must have shape"):
        gpfa_posterior(gpfa.params_._replace(observation_var=np.ones(3)), np.ones((5, 8)))


def test_bucketed_estep_equals_unpadded_groups():
    """Trials padded to one bucket length with masked bins give the statistics, per-length
    ``P`` and ``log p(y)`` of the unpadded per-length E-step (``_estep_stats``) to 1e-10."""
    p = make_params(7, [2.0, 6.0], seed=3)
    trials = gaussian_trials(p, 9, seed=4) + [np.asarray(gpfa_sample(jax.random.key(9), p, 1, 17)[1][0])]
    groups, _ = G._group(trials, 7)
    assert [b.y.shape[1] for b in G._buckets(groups, 12)] == [16, 20]  # lengths 6, 13 -> 16 bins; 17, 20 -> 20
    (merged,) = G._buckets(groups, 2)  # small: one bucket (one program) of 20 bins, 4 length slots
    assert merged.y.shape[1] == 20 and merged.mask.shape[0] == 4
    buckets = G._buckets(groups, 12) + (merged,)
    todo = iter(groups + groups)
    for bk in buckets:
        sums, P, ll = G._bucket_estep(p, bk, "se")
        ref_ll, ref_xx, ref_yx = 0.0, 0.0, 0.0
        for a in range(int(np.sum(np.asarray(bk.count) > 0))):
            y = next(todo)
            mean, cov_tt, cov_blocks, lg = G._estep_stats(p, y, "se")
            T, n = y.shape[1], y.shape[0]
            ref_ll += lg
            ref_xx = ref_xx + n * cov_tt + np.einsum("nti,ntj->ij", mean, mean)
            ref_yx = ref_yx + np.einsum("ntk,nti->ki", y, mean)
            Pa = n * cov_blocks + np.einsum("nti,nsi->its", mean, mean)
            np.testing.assert_allclose(np.asarray(P[:, a, :T, :T]), Pa, rtol=1e-10, atol=1e-10)
            assert np.all(np.asarray(P[:, a, T:, :]) == 0) and np.all(np.asarray(P[:, a, :, T:]) == 0)
        np.testing.assert_allclose(float(ll), float(ref_ll), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(sums[0]), ref_xx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(sums[2]), ref_yx, rtol=1e-10, atol=1e-10)
    assert float(G._bucket_estep(p, merged, "se")[0][5]) == sum(len(t) for t in trials)


def test_masked_timescale_objective_equals_unpadded():
    """The masked objective on a padded slot is the unpadded length's objective and derivatives."""
    rng = np.random.default_rng(5)
    T, Tb, n = 9, 16, 3.0
    A = rng.normal(size=(T, T))
    P = A @ A.T + T * np.eye(T)
    Pb = np.zeros((1, Tb, Tb))
    Pb[0, :T, :T] = P
    mask = (np.arange(Tb) < T).astype(float)[None]
    for kernel in ("se", "matern52"):
        got = G._masked_timescale_objective(jnp.log(3.0), 1e-3, jnp.asarray(Pb), jnp.array([n]), jnp.asarray(mask),
                                            kernel)
        ref = G._timescale_objective(jnp.log(3.0), 1e-3, [jnp.asarray(P)], [n], kernel, True)
        np.testing.assert_allclose(np.array(got, float), np.array(ref, float), rtol=1e-10)


def test_em_step_unchanged_by_buckets_and_new_lengths_compile_nothing():
    """One EM step equals the unpadded computation (dense per-length statistics through the
    M-step) and a second recording with other trial lengths in the same buckets compiles nothing."""
    from bayesneuro._shapes import count_compilations

    p = make_params(6, [3.0], seed=6)
    y = np.asarray(gpfa_sample(jax.random.key(7), p, 6, 40)[1])
    first = [y[k, :T] for k, T in enumerate((33, 35, 38, 33, 35, 38))]
    second = [y[k, :T] for k, T in enumerate((34, 36, 40, 34, 36, 40))]
    _, ll = G.gpfa_em_step(p, first)
    ref_ll = sum(float(dense_posterior(p, t)[2]) for t in first)
    np.testing.assert_allclose(ll, ref_ll, rtol=1e-10)
    data = [bn.SpikeData.from_trials([np.random.default_rng(k).poisson(np.exp(0.3 * t)) for t in rec], bin_size=0.02)
            for k, rec in enumerate((first, second))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GPFA(1).fit(data[0], max_iter=20, progress=False)
        with count_compilations() as c:
            GPFA(1).fit(data[1], max_iter=20, progress=False)
    assert c.compilations == 0


# ----------------------------------------------------------------------------- segments (segment_length)


def test_segment_trials_as_elephant_cuts():
    """Trial lengths that are multiples of the segment: elephant's cut_trials, segment for segment;
    other lengths: elephant's segment count and length, first segment at 0, last ending at T."""
    from elephant.gpfa import gpfa_util

    rng = np.random.default_rng(0)
    trials = [rng.normal(size=(T, 3)) for T in (40, 20, 60)]
    seqs, _ = elephant_inputs(make_params(3, [2.0], seed=0), trials)
    ours = G.segment_trials(trials, 20)
    theirs = gpfa_util.cut_trials(seqs, seg_length=20)
    assert len(ours) == len(theirs) == 6
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b["y"].T)
    for T in (21, 47, 59):
        x = np.arange(float(T))[:, None]
        segs = G.segment_trials([x], 20)
        assert len(segs) == len(gpfa_util.cut_trials(elephant_inputs(make_params(1, [2.0], 0), [x])[0], 20))
        assert all(len(s) == 20 for s in segs) and segs[0][0, 0] == 0 and segs[-1][-1, 0] == T - 1
        assert np.array_equal(np.unique(np.concatenate(segs)), x[:, 0])  # every bin covered
    assert [len(s) for s in G.segment_trials([np.ones((7, 2))], 20)] == [7]  # short trial kept whole
    with pytest.raises(ValueError, match="segment_length"):
        GPFA(1, segment_length=1)


def test_segment_fit_matches_elephant_em_on_its_segments():
    """GPFA(segment_length=20) = elephant's gpfa_core.em on elephant's cut_trials segments from the
    same factor-analysis start (fixed timescales, 8 plain EM steps); the log-likelihood of the
    data stays on whole trials."""
    from elephant.gpfa import gpfa_core, gpfa_util

    truth = make_params(8, [3.0, 8.0], seed=3, offset=2.5, noise=0.1)
    data, _ = poisson_data(truth, 6, 40, seed=3)
    counts, _ = data.to_padded()
    trials = [counts[k, : (40, 20, 60)[k % 3]] for k in range(len(counts))]
    data = bn.SpikeData.from_trials(trials, bin_size=0.02)
    n_iter = 8
    fit = GPFA(2, segment_length=20, learn_timescales=False).fit(data, max_iter=n_iter, tol=None, squarem=False,
                                                                  progress=False)
    roots = [np.sqrt(np.asarray(t, dtype=float)) for t in trials]
    init = init_gpfa_params(G.segment_trials(roots, 20), 2, timescale=0.1 / 0.02)
    seqs, pe = elephant_inputs(init, roots)
    pe["notes"]["learnKernelParams"] = False
    pe_out, _, lls, _ = gpfa_core.em(copy.deepcopy(pe), gpfa_util.cut_trials(seqs, seg_length=20),
                                     max_iters=n_iter, tol=-1e300, freq_ll=1)
    np.testing.assert_allclose(fit.log_likelihood_trace_[:-1], lls, rtol=1e-10)
    np.testing.assert_allclose(fit.loadings_, pe_out["C"], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fit.observation_var_, np.diag(pe_out["R"]), rtol=1e-8)
    np.testing.assert_allclose(fit.offset_, pe_out["d"], rtol=1e-10)
    # user-facing inference on whole trials: the exact whole-trial log-likelihood at these parameters
    whole = G.gpfa_log_likelihood(fit.params_, roots)
    np.testing.assert_allclose(fit.log_likelihood(data).sum(), whole, rtol=1e-10)


@pytest.mark.slow  # ~6.7 s under load 3.3 (two fits' compilation)
def test_segment_length_of_the_trial_is_the_whole_trial_fit():
    truth = make_params(6, [3.0], seed=4, offset=2.5, noise=0.1)
    eq, _ = poisson_data(truth, 5, 30, seed=4)
    a = GPFA(1, segment_length=30).fit(eq, max_iter=6, tol=None, progress=False)
    b = GPFA(1).fit(eq, max_iter=6, tol=None, progress=False)
    for x, y in zip(a.params_, b.params_):
        np.testing.assert_array_equal(x, y)
