"""Poisson LDS: block-tridiagonal kernels against dense numpy; the Newton/Laplace E-step against a
dense optimisation; ground-truth recovery by Laplace-EM; SVI and NUTS through the shared layer;
bad input."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import bayesneuro as bn
from bayesneuro.diagnostics import ConvergenceWarning
from bayesneuro.latent import _blocktri as bt
from bayesneuro.latent.plds import (
    PLDSParams,
    PoissonLDS,
    cosmoothing_bits_per_spike,
    laplace_posterior,
    latent_hessian,
    neg_log_joint,
    trial_laplace,
)

DT = 0.02


def _rotation(theta, radius):
    return radius * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def _random_blocktri(rng, t, k):
    """A random SPD block-tridiagonal matrix (diagonally dominant by blocks)."""
    sub = rng.normal(size=(t - 1, k, k))
    diag = np.empty((t, k, k))
    for i in range(t):
        g = rng.normal(size=(k, k))
        diag[i] = g @ g.T + 4.0 * k * np.eye(k)
    return diag, sub


def _dense(diag, sub):
    t, k = diag.shape[0], diag.shape[1]
    m = np.zeros((t * k, t * k))
    for i in range(t):
        m[i * k : (i + 1) * k, i * k : (i + 1) * k] = diag[i]
        if i + 1 < t:
            m[(i + 1) * k : (i + 2) * k, i * k : (i + 1) * k] = sub[i]
            m[i * k : (i + 1) * k, (i + 1) * k : (i + 2) * k] = sub[i].T
    return m


def _r2_linear(x, target):
    """R^2 of each target column after the best affine map from x."""
    z = np.c_[x, np.ones(len(x))]
    w, *_ = np.linalg.lstsq(z, target, rcond=None)
    resid = target - z @ w
    return 1.0 - (resid**2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)


# ----------------------------------------------------------------------------------------------
# block-tridiagonal kernels
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t,k", [(1, 3), (2, 1), (7, 3)])
def test_blocktri_against_dense(t, k):
    rng = np.random.default_rng(t * 10 + k)
    diag, sub = _random_blocktri(rng, t, k)
    m = _dense(diag, sub)
    chol = bt.cholesky(jnp.asarray(diag), jnp.asarray(sub))
    g = np.zeros_like(m)  # the factor as a dense lower-triangular matrix
    for i in range(t):
        g[i * k : (i + 1) * k, i * k : (i + 1) * k] = chol.diag[i]
        if i + 1 < t:
            g[(i + 1) * k : (i + 2) * k, i * k : (i + 1) * k] = chol.sub[i]
    np.testing.assert_allclose(g, np.linalg.cholesky(m), atol=1e-10)
    b = rng.normal(size=(t, k))
    np.testing.assert_allclose(bt.solve(chol, jnp.asarray(b)).ravel(), np.linalg.solve(m, b.ravel()), atol=1e-10)
    bm = rng.normal(size=(t, k, 2))
    dense_bm = np.linalg.solve(m, bm.reshape(t * k, 2)).reshape(t, k, 2)
    np.testing.assert_allclose(bt.solve(chol, jnp.asarray(bm)), dense_bm, atol=1e-10)
    np.testing.assert_allclose(float(bt.logdet(chol)), np.linalg.slogdet(m)[1], atol=1e-10)
    inv = np.linalg.inv(m)
    cov, cross = bt.selected_inverse(chol)
    for i in range(t):
        np.testing.assert_allclose(cov[i], inv[i * k : (i + 1) * k, i * k : (i + 1) * k], atol=1e-10)
        if i + 1 < t:
            np.testing.assert_allclose(cross[i], inv[(i + 1) * k : (i + 2) * k, i * k : (i + 1) * k], atol=1e-10)
    np.testing.assert_allclose(bt.matvec(jnp.asarray(diag), jnp.asarray(sub), jnp.asarray(b)).ravel(), m @ b.ravel(), atol=1e-10)
    # G^T x and its inverse
    np.testing.assert_allclose(bt.factor_transpose_matvec(chol, jnp.asarray(b)).ravel(), g.T @ b.ravel(), atol=1e-10)
    np.testing.assert_allclose(bt.solve_factor_transpose(chol, jnp.asarray(b)).ravel(), np.linalg.solve(g.T, b.ravel()), atol=1e-10)


# ----------------------------------------------------------------------------------------------
# E-step against a dense optimisation
# ----------------------------------------------------------------------------------------------


def _small_problem(rng, link, t=8, n=5, n_pad=0):
    params = PLDSParams(
        jnp.array([0.2, -0.1]), jnp.array([[0.5, 0.1], [0.1, 0.4]]), jnp.asarray(_rotation(0.3, 0.9)),
        jnp.array([0.05, 0.0]), jnp.array([[0.3], [-0.2]]), jnp.array([[0.05, 0.01], [0.01, 0.08]]),
        jnp.asarray(rng.normal(size=(n, 2))), jnp.asarray(np.log(rng.uniform(5, 30, n))),
    )
    counts = jnp.asarray(rng.poisson(0.5, size=(t + n_pad, n)) * (np.arange(t + n_pad) < t)[:, None], float)
    inputs = jnp.asarray(rng.normal(size=(t + n_pad, 1)))
    mask = jnp.asarray(np.arange(t + n_pad) < t)
    return params, counts, inputs, mask


@pytest.mark.slow  # ~5-9 s each: compiles Newton and the dense optimisation
@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_newton_mode_and_laplace_match_dense(link):
    rng = np.random.default_rng(1)
    params, counts, inputs, mask = _small_problem(rng, link)
    t, k = counts.shape[0], 2
    kw = {"bin_size": DT, "link": link}

    def f(v):
        return neg_log_joint(jnp.reshape(v, (t, k)), params, counts, inputs, mask, **kw)

    fun, jac, hess = jax.jit(f), jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))
    x = optimize.minimize(  # a start near the mode from scipy, then dense Newton steps to the end
        lambda v: float(fun(v)), np.zeros(t * k), jac=lambda v: np.asarray(jac(v)),
        hess=lambda v: np.asarray(hess(v)), method="trust-exact",
    ).x
    for _ in range(20):
        x = x - np.linalg.solve(np.asarray(hess(x)), np.asarray(jac(x)))
    assert np.abs(np.asarray(jac(x))).max() < 1e-10
    post = trial_laplace(params, counts, inputs, mask, jnp.zeros((t, k)), **kw)
    np.testing.assert_allclose(np.asarray(post.mean).ravel(), x, atol=1e-6)
    # the analytic block Hessian is the autodiff Hessian
    h_dense = np.asarray(hess(x))
    np.testing.assert_allclose(_dense(*map(np.asarray, latent_hessian(post.mean, params, counts, inputs, mask, **kw))), h_dense, atol=1e-8)
    # Laplace covariances are the inverse Hessian's blocks; the evidence is the Gaussian integral
    inv = np.linalg.inv(h_dense)
    for i in range(t):
        np.testing.assert_allclose(post.cov[i], inv[i * k : (i + 1) * k, i * k : (i + 1) * k], atol=1e-8)
        if i + 1 < t:
            np.testing.assert_allclose(post.cross_cov[i], inv[(i + 1) * k : (i + 2) * k, i * k : (i + 1) * k], atol=1e-8)
    expected = -float(fun(x)) + 0.5 * t * k * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(h_dense)[1]
    np.testing.assert_allclose(float(post.log_marginal), expected, rtol=1e-9)


def test_e_step_program_holds_one_newton_direction(monkeypatch):
    """Tracing the E-step (no compilation) calls the block Hessian twice: once in the Newton
    direction (the engine traces derivatives + solve once) and once for the Laplace covariance at
    the mode. The engine used to trace the direction twice (before its loop and in it): 3 calls."""
    from bayesneuro.latent import plds

    calls = []

    def counted(*a, **k):
        calls.append(1)
        return latent_hessian(*a, **k)

    monkeypatch.setattr(plds, "latent_hessian", counted)
    params, counts, inputs, mask = _small_problem(np.random.default_rng(3), "exp")
    jax.jit(lambda p, y, u, m: trial_laplace(p, y, u, m, jnp.zeros((8, 2)), bin_size=DT)).lower(params, counts, inputs, mask)
    assert len(calls) == 2


@pytest.mark.slow  # ~7-9 s: compiles the padded and unpadded E-steps
def test_padding_is_exact():
    """Masked bins after a trial's end change neither its posterior nor its evidence."""
    rng = np.random.default_rng(2)
    params, counts, inputs, mask = _small_problem(rng, "exp", t=8, n_pad=5)
    short = laplace_posterior(params, counts[None, :8], inputs[None, :8], mask[None, :8], jnp.zeros((1, 8, 2)), bin_size=DT)
    padded = laplace_posterior(params, counts[None], inputs[None], mask[None], jnp.zeros((1, 13, 2)), bin_size=DT)
    np.testing.assert_allclose(padded.mean[0, :8], short.mean[0], atol=1e-8)
    np.testing.assert_allclose(padded.cov[0, :8], short.cov[0], atol=1e-8)
    np.testing.assert_allclose(padded.log_marginal, short.log_marginal, rtol=1e-9)


@pytest.mark.slow  # ~10 s: compiles the padded and unpadded Laplace-EM programs
def test_bucketed_fit_matches_unpadded_and_new_length_compiles_nothing(monkeypatch):
    """Trials padded to a bucket length and the trial count to a bucket (fully masked trials):
    the Laplace-EM trajectory of the unpadded fit, and a recording of another trial length and
    another number of trials in the same buckets compiles nothing."""
    import bayesneuro.latent.plds as plds_mod
    from bayesneuro._shapes import count_compilations

    truth = _true_model(seed=5, n_neuron=8)
    sim = truth.simulate(9, 37, key=6)  # 37 bins -> padded to 40, 9 trials -> 10
    fit = lambda d: PoissonLDS(2).fit(d, max_iter=4, tol=None, progress=False)
    padded = fit(sim.data)
    assert padded._batch(sim.data, ()).mask.shape == (10, 40)
    assert padded._train_log_lik.shape == (9,)
    with monkeypatch.context() as m:
        m.setattr(plds_mod, "bucket_length", lambda n, **kw: n)
        exact = fit(sim.data)
    np.testing.assert_allclose(padded.log_likelihood_trace_, exact.log_likelihood_trace_, rtol=1e-9)
    for name, a, b in zip(PLDSParams._fields, padded.params_, exact.params_):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(padded._train_log_lik, exact._train_log_lik, rtol=1e-9)
    other = truth.simulate(10, 34, key=7)  # 34 bins, 10 trials: the same buckets
    with count_compilations() as c:
        fit(other.data)
    assert c.compilations == 0, c


# ----------------------------------------------------------------------------------------------
# ground truth
# ----------------------------------------------------------------------------------------------


def _true_model(seed=0, n_neuron=30):
    """2 latents rotating at 1 Hz with a 1 s decay (20 ms bins), rates about 5-30 spikes/s."""
    rng = np.random.default_rng(seed)
    params = PLDSParams(
        np.zeros(2), 0.25 * np.eye(2), _rotation(2 * np.pi * 1.0 * DT, 0.98), np.zeros(2), np.zeros((2, 0)),
        0.01 * np.eye(2), 0.8 * rng.normal(size=(n_neuron, 2)), np.log(rng.uniform(8, 15, n_neuron)),
    )
    return PoissonLDS.from_params(params, bin_size=DT)


@pytest.fixture(scope="module")
def recovery():
    truth = _true_model()
    train = truth.simulate(8, 250, key=0)
    test = truth.simulate(3, 200, key=100)
    model = PoissonLDS(2).fit(train.data, key=0, progress=False)
    return truth, train, test, model


@pytest.mark.slow  # ~18 s with the module fixture: Laplace-EM recovery fit
def test_rates_are_in_the_stated_range(recovery):
    _, train, _, _ = recovery
    lo, hi = np.percentile(train.rates, [5, 95])
    assert 3 < lo and hi < 40


@pytest.mark.slow  # shares the ~18 s Laplace-EM recovery fit
def test_recovers_dynamics_eigenvalues(recovery):
    # Over 12 simulation seeds the largest eigenvalue error was 0.0096; the tolerance is twice it.
    truth, _, _, model = recovery
    est, true = model.dynamics_summary(), truth.dynamics_summary()
    order = lambda lam: lam[np.argsort(lam.imag)]
    np.testing.assert_allclose(order(est.eigenvalues), order(true.eigenvalues), atol=0.02)
    np.testing.assert_allclose(np.sort(est.frequencies), [-1.0, 1.0], rtol=0.1)  # Hz
    np.testing.assert_allclose(true.timescales, -DT / np.log(0.98))


@pytest.mark.slow  # shares the ~18 s Laplace-EM recovery fit
def test_recovers_latents(recovery):
    _, train, _, model = recovery
    post = model.transform(train.data)
    assert post["mean"].dims == ("time", "latent")
    np.testing.assert_array_equal(post["trial"].values, train.data.trial_ids)
    assert np.all(_r2_linear(post["mean"].values, train.latents) > 0.8)
    assert np.all(post["sd"].values > 0)


@pytest.mark.slow  # shares the ~18 s Laplace-EM recovery fit
def test_log_likelihood_trace_increases(recovery):
    _, _, _, model = recovery
    trace = model.log_likelihood_trace_
    assert model.converged_ and len(trace) == model.n_iter_ + 1
    assert trace[-1] - trace[0] > 50.0
    assert np.all(np.diff(trace) > -1e-6 * abs(trace[0]))


@pytest.mark.slow  # shares the ~18 s Laplace-EM recovery fit
def test_cosmoothing_beats_constant_rate_and_nears_truth(recovery):
    truth, train, test, model = recovery
    held = np.arange(24, 30)
    fitted = model.score(test.data, held_out_neurons=held)
    true = truth.score(test.data, held_out_neurons=held)
    train_rate = train.data.counts[:, held].mean(axis=0) / DT
    constant = cosmoothing_bits_per_spike(test.data.counts[:, held], np.broadcast_to(train_rate, (test.data.n_time, 6)), DT)
    assert constant <= 0.0 < true
    assert fitted > constant and fitted > 0.85 * true
    per = model.evaluate(test.data, held_out_neurons=held)["bits_per_spike_per_neuron"]
    assert per.shape == (6,)
    # held-out evidence of the fit is within 0.5% of the true parameters'
    assert model.log_likelihood(test.data).sum() > 1.005 * truth.log_likelihood(test.data).sum()


@pytest.mark.slow  # shares the ~18 s Laplace-EM recovery fit
def test_leave_one_neuron_out_score_is_each_neuron_from_the_rest(recovery):
    truth, _, test, model = recovery
    per = model.evaluate(test.data)["bits_per_spike_per_neuron"]
    one_by_one = [model.evaluate(test.data, held_out_neurons=[k])["bits_per_spike_per_neuron"][0] for k in range(24, 30)]
    np.testing.assert_allclose(per[24:30], one_by_one, rtol=1e-10)
    pooled = model.score(test.data)
    assert 0.0 < pooled < truth.score(test.data) * 1.02


@pytest.mark.slow  # shares the ~18 s Laplace-EM recovery fit
def test_fit_outputs(recovery):
    _, train, _, model = recovery
    rates = model.predict_rate(train.data)
    assert rates.shape == (train.data.n_time, 30) and np.all(rates > 0)
    idata = model.to_inference_data()  # a point fit: point_estimate, no fake 1 x 1 posterior
    assert "posterior" not in idata.groups() and idata.point_estimate.attrs["method"] == "laplace-em"
    assert idata.point_estimate["dynamics"].dims == ("latent", "latent_from")
    assert idata.point_estimate["loadings"].dims == ("neuron", "latent")
    assert idata.log_likelihood["counts"].dims == ("trial",)
    np.testing.assert_allclose(idata.log_likelihood["counts"].values, model.log_likelihood(train.data), rtol=1e-8)
    summary = model.dynamics_summary()
    np.testing.assert_allclose(summary.fixed_point, np.linalg.solve(np.eye(2) - model.dynamics_, model.dynamics_bias_))
    sim = model.simulate(2, 50, key=1)
    assert sim.data.n_trial == 2 and sim.latents.shape == (100, 2) and sim.rates.shape == (100, 30)


# ----------------------------------------------------------------------------------------------
# SVI and NUTS through the shared inference layer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(3)
    params = PLDSParams(
        np.zeros(1), np.eye(1) * 0.3, 0.95 * np.eye(1), np.zeros(1), np.zeros((1, 0)), 0.03 * np.eye(1),
        rng.choice([-1.0, 1.0], size=(6, 1)) * rng.uniform(0.8, 1.2, size=(6, 1)), np.full(6, 3.0),
    )
    sim = PoissonLDS.from_params(params, bin_size=DT).simulate(2, 40, key=4)
    em = PoissonLDS(1).fit(sim.data, key=0, progress=False)
    return sim, em


@pytest.mark.slow  # ~40 s with the module fixture: SVI, 500 steps
def test_svi_structured_guide_matches_laplace(tiny):
    sim, em = tiny
    with warnings.catch_warnings():
        # a short run: the ELBO may still be improving
        warnings.filterwarnings("ignore", message="svi: the ELBO was still improving", category=RuntimeWarning)
        svi = PoissonLDS(1).fit(sim.data, method="svi", key=0, progress=False, num_steps=500, learning_rate=0.05, num_samples=100)
    assert svi.result_.method == "svi" and svi.log_likelihood_trace_ is None
    path = svi.result_.samples["latents"].mean(axis=(0, 1))[:, 0]
    # the guide's path mean against the Laplace path at the same (posterior-mean) parameters ...
    assert abs(np.corrcoef(path, svi.transform(sim.data)["mean"].values[:, 0])[0, 1]) > 0.95
    # ... and against the Laplace-EM fit (other parameter estimates, so a looser bound)
    assert abs(np.corrcoef(path, em.transform(sim.data)["mean"].values[:, 0])[0, 1]) > 0.8


@pytest.mark.slow  # ~13 s: NUTS
def test_nuts_gives_named_inference_data(tiny):
    sim, _ = tiny
    data = bn.SpikeData.from_counts(sim.data.counts[:30, :3], bin_size=DT)
    # 60 draws of one chain: far fewer than 100 effective draws, and the fit must say so (issue 20:
    # a one-chain NUTS fit of a PoissonLDS used to pass without a word)
    with pytest.warns(ConvergenceWarning, match=r"effective sample size below 100 .*'latents'"):
        model = PoissonLDS(1).fit(
            data, method="nuts", key=1, progress=False, num_warmup=60, num_samples=60, num_chains=1,
            max_tree_depth=5,
        )
    idata = model.to_inference_data()
    assert idata.posterior["latents"].dims == ("chain", "draw", "time", "latent")
    np.testing.assert_allclose(idata.posterior["time"].values, data.bin_centers)
    assert idata.posterior["dynamics"].dims == ("chain", "draw", "latent", "latent_from")
    assert np.all(np.isfinite(model.dynamics_)) and model.log_likelihood_trace_ is None
    # per-trial Laplace log p(counts) at every posterior draw, for az.loo / az.compare
    lik = idata.log_likelihood["counts"]
    assert lik.dims == ("chain", "draw", "trial") and lik.shape == (1, 60, 1) and np.all(np.isfinite(lik.values))
    assert not any("_dim_" in d for group in idata.groups() for d in idata[group].dims)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_bad_input_messages():
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, size=(40, 4))
    data = bn.SpikeData.from_counts(counts, bin_size=DT)
    with pytest.raises(ValueError, match="n_latents=5 is more than the 4 neurons"):
        PoissonLDS(5).fit(data, key=0)
    silent = counts.copy()
    silent[:, [1, 3]] = 0
    with pytest.warns(UserWarning, match="2 neurons have no spikes"):
        silent_data = bn.SpikeData.from_counts(silent, bin_size=DT, neuron_ids=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"neurons \['b', 'd'\] have no spikes"):
        PoissonLDS(1).fit(silent_data, key=0)
    short = bn.SpikeData.from_counts(counts[:5], bin_size=DT, trial_ids=[0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"trials \[1\] are shorter than 2 bins"):
        PoissonLDS(1).fit(short, key=0)
    with pytest.raises(ValueError, match="inputs but the data have no covariates"):
        PoissonLDS(1, inputs=True).fit(data, key=0)
    with pytest.raises(ValueError, match=r"inputs \['speed'\] are not covariates"):
        PoissonLDS(1, inputs=["speed"]).fit(data.with_covariates(np.ones(40), feature_names=["x"]), key=0)
    with pytest.raises(ValueError, match="method must be one of"):
        PoissonLDS(1).fit(data, method="em", key=0)
    with pytest.raises(ValueError, match=r"unknown options \['num_steps'\] for laplace-em"):
        PoissonLDS(1).fit(data, key=0, num_steps=3)
    with pytest.raises(TypeError, match="key"):
        PoissonLDS(1).fit(data, method="svi", key=None)
    with pytest.raises(ValueError, match="n_latents must be a positive integer"):
        PoissonLDS(0)
    with pytest.raises(ValueError, match="link must be one of"):
        PoissonLDS(1, link="log")
    with pytest.raises(RuntimeError, match="not fitted"):
        PoissonLDS(1).transform(data)


@pytest.mark.slow  # shares the ~11 s tiny Laplace-EM fit
def test_bad_input_after_fit(tiny):
    sim, em = tiny
    with pytest.raises(ValueError, match="held_out_neurons names every neuron"):
        em.score(sim.data, held_out_neurons=sim.data.neuron_ids)
    with pytest.raises(ValueError, match=r"held_out_neurons \[99\] are not neurons"):
        em.score(sim.data, held_out_neurons=[99])
    other = bn.SpikeData.from_counts(sim.data.counts, bin_size=0.01)
    with pytest.raises(ValueError, match="bin size 0.01 s differs"):
        em.transform(other)
    with pytest.raises(ValueError, match="pass inputs of shape"):
        PoissonLDS.from_params(em.params_._replace(input_weights=np.ones((1, 1))), bin_size=DT, feature_names=["u"]).simulate(1, 5, key=0)
