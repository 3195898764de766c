"""PoissonGLM against statsmodels, sklearn and scipy on the same design; ground-truth recovery;
calibration; scores; closed-loop simulation; bad input."""

import warnings

import jax
import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, special
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import d2_tweedie_score

import bayesneuro as bn
from bayesneuro.diagnostics import ConvergenceWarning
from bayesneuro.glm import ARD, Flat, Ridge, Smooth, simulate_counts

BIN = 0.005
# the sampler diagnostics of a deliberately short run (bayesneuro.diagnostics.check)
SHORT_CHAINS = r"(R-hat > |effective sample size below |[0-9]+ divergent transitions)"


def _simulate_population(key, n_time=20000, n_neuron=4, *, coupling_strength=0.8, stimulus=True):
    """Coupled population with a stimulus filter, refractory history and a few coupling edges."""
    rng = np.random.default_rng(key)
    hist_basis = bn.bases.RaisedCosineLog(4, window=20, first_peak=0.0)
    stim_basis = bn.bases.RaisedCosineLog(3, window=10, first_peak=0.0, history=False)
    H = hist_basis.matrix()  # (lag, basis)
    s = rng.normal(size=(n_time, 1))
    # true filters lie in the span of the bases, so recovery error is estimation error only
    stim_w = np.array([0.1, 0.3, 0.15])
    stim_filter = np.stack([stim_basis.matrix() @ stim_w * (1 if n % 2 else -1) for n in range(n_neuron)], 1)
    drive = np.log(20.0) + np.stack([np.convolve(s[:, 0], stim_filter[:, n])[:n_time] for n in range(n_neuron)], 1)
    if not stimulus:
        drive = np.full((n_time, n_neuron), np.log(20.0))
    history = np.tile((H @ np.array([-3.0, -1.0, -0.3, 0.0]))[:, None], (1, n_neuron))  # refractoriness
    coupling = np.zeros((20, n_neuron, n_neuron))  # (lag, source, neuron)
    edges = [(0, 1), (1, 2), (2, 3)][: max(n_neuron - 1, 0)]
    for src, dst in edges:
        coupling[:, src, dst] = H @ (coupling_strength * np.array([0.5, 0.8, 0.3, 0.0]))
    kernel = bn.glm.feedback_kernel(history, coupling)
    counts, _, first, _ = simulate_counts(jax.random.key(key), drive, kernel, bin_size=BIN)
    assert (np.asarray(first) < 0).all()
    data = bn.SpikeData.from_counts(np.asarray(counts).astype(int), bin_size=BIN, covariates=s, feature_names=["s"])
    truth = {"history": history, "coupling": coupling, "stim_filter": stim_filter, "edges": edges}
    return data, truth, hist_basis, stim_basis


@pytest.fixture(scope="module")
def population():
    return _simulate_population(0)


def _full_design(glm, data):
    """Explicit (time, coef) design of each neuron, in the GLM's weight order, from bases.design_matrix."""
    cols = []
    if data.covariates is not None:
        b = glm.stimulus_basis or bn.bases.Identity(1)
        cols.append(np.asarray(bn.bases.design_matrix(data.covariates, b, history=False)))
    if glm.history_basis is not None:
        cols.append(np.asarray(bn.bases.design_matrix(data.counts, glm.history_basis, history=True)))
    return np.concatenate(cols, axis=1)


def _coef(glm, n):
    """Weights of neuron n in the order of _full_design (own history in its source slot)."""
    p = glm.params_
    parts = []
    if "stimulus_weights" in p:
        parts.append(p["stimulus_weights"][..., n].ravel())
    if "history_weights" in p:
        hw = np.array(p["coupling_weights"][..., n]) if "coupling_weights" in p else None
        if hw is None:
            raise AssertionError("use coupling=True for the explicit design")
        hw[n] = p["history_weights"][:, n]
        parts.append(hw.ravel())
    return np.concatenate(parts)


def _objective(X, y, intercept, coef, alpha_sum):
    eta = intercept + X @ coef
    return float(np.sum(np.exp(eta) - y * eta) + 0.5 * alpha_sum * coef @ coef)


def _small_glm(prior, **kw):
    kw.setdefault("bias_prior", None)
    return bn.PoissonGLM(
        stimulus_basis=bn.bases.RaisedCosineLog(3, window=10, first_peak=0.0, history=False),
        history_basis=bn.bases.RaisedCosineLog(3, window=20, first_peak=0.0),
        coupling=True,
        prior=prior,
        **kw,
    )


@pytest.mark.slow  # ~12 s
def test_map_equals_statsmodels_unpenalised(population):
    data = population[0].time_slice(0, 50.0)
    glm = _small_glm(Flat()).fit(data, method="map", key=0, progress=False, tol=1e-8)
    X = _full_design(glm, data)
    for n in range(data.n_neuron):
        y = data.counts[:, n]
        ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson()).fit(tol=1e-12)
        intercept = glm.params_["bias"][n] + np.log(BIN)
        ours = np.r_[intercept, _coef(glm, n)]
        np.testing.assert_allclose(ours, ref.params, atol=1e-4)
        f_ours = _objective(X, y, intercept, ours[1:], 0.0)
        f_ref = _objective(X, y, ref.params[0], ref.params[1:], 0.0)
        assert abs(f_ours - f_ref) <= 1e-6 * abs(f_ref)


def test_map_equals_sklearn_ridge(population):
    data = population[0].time_slice(0, 50.0)
    alpha = 1e-3  # sklearn's per-sample penalty
    penalty = alpha * data.n_time  # on the summed log-likelihood
    glm = _small_glm(Ridge.from_penalty(penalty)).fit(data, method="map", key=0, progress=False, tol=1e-8)
    X = _full_design(glm, data)
    for n in range(data.n_neuron):
        y = data.counts[:, n]
        ref = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=10000, solver="newton-cholesky").fit(X, y)
        intercept = glm.params_["bias"][n] + np.log(BIN)
        coef = _coef(glm, n)
        np.testing.assert_allclose(coef, ref.coef_, atol=1e-4)
        np.testing.assert_allclose(intercept, ref.intercept_, atol=1e-4)
        f_ours = _objective(X, y, intercept, coef, penalty)
        f_ref = _objective(X, y, ref.intercept_, ref.coef_, penalty)
        assert abs(f_ours - f_ref) <= 1e-6 * abs(f_ref)
        # the deviance explained matches sklearn's score on the same predictions
        mu = np.exp(intercept + X @ coef)
        d2 = glm.pseudo_r2(data, per_neuron=True)[n]
        np.testing.assert_allclose(d2, d2_tweedie_score(y, mu, power=1), rtol=1e-8)


@pytest.mark.slow  # ~8 s
def test_bernoulli_equals_statsmodels_cloglog(population):
    """P(spike) = 1 - exp(-exp(eta)) is the complementary log-log link of a binomial GLM."""
    data = population[0].time_slice(0, 50.0)
    binary = bn.SpikeData.from_counts(np.minimum(data.counts, 1), bin_size=BIN, covariates=data.covariates, feature_names=["s"])
    glm = _small_glm(Flat(), observation="bernoulli").fit(binary, method="map", key=0, progress=False, tol=1e-8)
    X = _full_design(glm, binary)
    link = sm.families.links.CLogLog()
    for n in range(binary.n_neuron):
        ref = sm.GLM(binary.counts[:, n], sm.add_constant(X), family=sm.families.Binomial(link=link)).fit(tol=1e-12)
        ours = np.r_[glm.params_["bias"][n] + np.log(BIN), _coef(glm, n)]
        np.testing.assert_allclose(ours, ref.params, atol=1e-4)


def test_softplus_map_equals_scipy_minimum(population):
    data = population[0].time_slice(0, 20.0).select_neurons([0])
    glm = bn.PoissonGLM(
        stimulus_basis=bn.bases.RaisedCosineLog(3, window=10, first_peak=0.0, history=False),
        link="softplus",
        prior=Ridge(2.0),
        bias_prior=(0.0, 50.0),
    ).fit(data, method="map", key=0, progress=False, tol=1e-8)
    X = np.asarray(bn.bases.design_matrix(data.covariates, glm.stimulus_basis, history=False))
    y = data.counts[:, 0].astype(float)

    def negpost(theta):
        b, w = theta[0], theta[1:]
        mu = np.logaddexp(0.0, b + X @ w) * BIN
        return np.sum(mu - y * np.log(mu)) + w @ w / 8.0 + b**2 / 5000.0

    ref = optimize.minimize(negpost, np.r_[20.0, np.zeros(3)], method="BFGS", options={"gtol": 1e-8})
    ours = np.r_[glm.params_["bias"][0], glm.params_["stimulus_weights"][0, :, 0]]
    np.testing.assert_allclose(ours, ref.x, atol=1e-4)
    assert negpost(ours) <= ref.fun + 1e-6 * abs(ref.fun)


@pytest.mark.slow  # ~10 s
def test_ground_truth_recovery_and_edges(population):
    data, truth, hist_basis, stim_basis = population
    glm = bn.PoissonGLM(
        stimulus_basis=stim_basis, history_basis=hist_basis, coupling=True, prior=Ridge(2.0)
    ).fit(data, method="laplace", key=0, progress=False, num_samples=400)
    f = glm.filters(prob=0.99)
    # stimulus filter: true filter is sin-shaped on 10 lags; the basis can represent it closely
    est = f["stimulus"].sel(feature="s").transpose("stimulus_lag", "neuron").values
    assert np.max(np.abs(est - truth["stim_filter"])) < 0.1
    # history: strong refractoriness at the first lags, then back to ~0
    hist = f["history"].transpose("history_lag", "neuron").values
    assert np.all(hist[0] < -1.5)
    assert np.max(np.abs(hist[2:] - truth["history"][2:])) < 0.3
    # every true edge is found and no absent edge is claimed, at 99%
    net = glm.coupling_network(prob=0.99).values  # (neuron, source)
    true = np.zeros_like(net)
    for src, dst in truth["edges"]:
        true[dst, src] = True
    assert (net == true).all(), (net, true)
    integrated = glm.coupling_matrix().values
    for src, dst in truth["edges"]:
        assert abs(integrated[dst, src] - truth["coupling"][:, src, dst].sum()) < 0.5


@pytest.mark.slow  # ~60 s: every method, NUTS and SVI included
def test_all_methods_agree_on_small_glm(population):
    data = population[0].time_slice(0, 20.0).select_neurons([0, 1])
    glms = {}
    for method, opts in [
        ("map", {}),
        ("laplace", {"num_samples": 500}),
        ("svi", {"num_steps": 1500, "num_samples": 300}),
        ("nuts", {"num_warmup": 300, "num_samples": 300, "num_chains": 2}),
    ]:
        glm = _small_glm(Ridge(1.0), bias_prior=(0.0, 10.0))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", SHORT_CHAINS, ConvergenceWarning)  # short chains may warn
            glms[method] = glm.fit(data, method=method, key=1, progress=False, **opts)
    ref = glms["nuts"].filters()
    for method in ("map", "laplace", "svi"):
        f = glms[method].filters()
        for name in ("stimulus", "history"):
            sd = (ref[f"{name}_upper"] - ref[f"{name}_lower"]).values / 3.29
            assert np.all(np.abs(f[name].values - ref[name].values) < 3 * sd + 0.05), (method, name)
    idata = glms["nuts"].to_inference_data(filters=True)
    assert "sample_stats" in idata.groups() and "log_likelihood" in idata.groups()
    assert idata.posterior["coupling_filter"].dims == ("chain", "draw", "neuron", "source", "coupling_lag")
    for group in idata.groups():
        for var in idata[group].data_vars.values():
            assert not any("_dim_" in d for d in var.dims), (group, var.name, var.dims)
    loo = glms["nuts"].result_.loo()
    assert np.isfinite(loo.elpd_loo)


@pytest.mark.slow  # ~25 s: two posterior fits
def test_loo_ranks_the_coupled_glm_of_a_coupled_population(population):
    """The log_likelihood group is pointwise over time bins (summed over neurons), so az.compare
    ranks GLMs of the same neurons: with coupling first on a population that has coupling."""
    import arviz as az

    data = population[0].time_slice(0, 30.0)
    fits = {}
    for name, coupling in (("history", False), ("coupled", True)):
        glm = bn.PoissonGLM(
            stimulus_basis=bn.bases.RaisedCosineLog(3, window=10, first_peak=0.0, history=False),
            history_basis=bn.bases.RaisedCosineLog(3, window=20, first_peak=0.0),
            coupling=coupling,
        )
        fits[name] = glm.fit(data, method="laplace", key=0, progress=False, num_samples=200).to_inference_data()
    assert fits["coupled"].log_likelihood["counts"].dims == ("chain", "draw", "time")
    table = az.compare(fits)  # arviz's Pareto-k warnings of a few influential bins: pyproject.toml
    assert table.index[0] == "coupled"
    # a MAP fit's group is log_likelihood(data), without chain/draw: a point fit, no posterior
    glm = _small_glm(Ridge(1.0)).fit(data, progress=False)  # MAP needs no key
    idata = glm.to_inference_data(filters=True)
    assert "posterior" not in idata.groups() and idata.log_likelihood["counts"].dims == ("time",)
    np.testing.assert_allclose(idata.log_likelihood["counts"].values, glm.log_likelihood(data), rtol=1e-5)
    np.testing.assert_allclose(idata.point_estimate["history_filter"].values,
                               glm.filter_draws()["history"].values[0, 0], rtol=1e-12)
    with pytest.raises(TypeError, match="method='laplace'.*key"):
        _small_glm(Ridge(1.0)).fit(data, method="laplace", progress=False)


@pytest.mark.slow  # ~8 s
def test_same_key_same_fit(population):
    data = population[0].time_slice(0, 10.0)
    a = _small_glm(Ridge(1.0)).fit(data, method="laplace", key=3, progress=False, num_samples=50)
    b = _small_glm(Ridge(1.0)).fit(data, method="laplace", key=3, progress=False, num_samples=50)
    np.testing.assert_array_equal(a.result_.samples["history_weights"], b.result_.samples["history_weights"])


@pytest.mark.slow  # ~7 s
def test_scores_against_closed_form(population):
    data = population[0]
    train, test, _ = data.split(fractions=(0.7, 0.3))
    glm = _small_glm(Ridge(1.0)).fit(train, method="map", key=0, progress=False)
    y = test.counts.astype(float)
    mu = glm.predict_rate(test) * BIN
    ll = (special.xlogy(y, mu) - mu - special.gammaln(y + 1)).sum(0)
    rbar = y.mean(0)
    ll0 = (special.xlogy(y, rbar) - rbar - special.gammaln(y + 1)).sum(0)
    expected = (ll - ll0) / (y.sum(0) * np.log(2))
    np.testing.assert_allclose(glm.evaluate(test)["bits_per_spike_per_neuron"], expected, rtol=1e-10)
    np.testing.assert_allclose(glm.score(test), (ll - ll0).sum() / (y.sum() * np.log(2)), rtol=1e-10)
    # the pointwise log-likelihood: one value per time bin, summed over neurons
    pointwise = special.xlogy(y, mu) - mu - special.gammaln(y + 1)
    np.testing.assert_allclose(glm.log_likelihood(test), pointwise.sum(1), rtol=1e-10)
    assert glm.score(test) > 0.05  # stimulus and history carry information on held-out data
    # a model without the history and coupling terms scores lower on held-out data
    stim_only = bn.PoissonGLM(stimulus_basis=glm.stimulus_basis).fit(train, method="map", key=0, progress=False)
    assert stim_only.score(test) < glm.score(test)


def test_smooth_prior_map_is_generalised_ridge(population):
    """Smooth's MAP solves NLL + w' K^{-1} w / 2: check against scipy on the explicit objective."""
    data = population[0].time_slice(0, 20.0).select_neurons([1])
    prior = Smooth(0.5, correlation=0.8)
    glm = bn.PoissonGLM(stimulus_basis=bn.bases.Identity(6), prior=prior, bias_prior=None).fit(
        data, method="map", key=0, progress=False, tol=1e-8
    )
    X = np.asarray(bn.bases.design_matrix(data.covariates, bn.bases.Identity(6), history=False))
    y = data.counts[:, 0]
    Kinv = np.linalg.inv(prior.covariance(6))

    def f(theta):
        eta = theta[0] + X @ theta[1:]
        return np.sum(np.exp(eta) - y * eta) + 0.5 * theta[1:] @ Kinv @ theta[1:]

    ref = optimize.minimize(f, np.r_[np.log(y.mean()), np.zeros(6)], method="BFGS", options={"gtol": 1e-9})
    ours = np.r_[glm.params_["bias"][0] + np.log(BIN), glm.params_["stimulus_weights"][0, :, 0]]
    np.testing.assert_allclose(ours, ref.x, atol=1e-4)


@pytest.mark.slow  # ~6 s
def test_simulation_detects_runaway(population):
    data = population[0].time_slice(0, 20.0)
    glm = _small_glm(Ridge(1.0)).fit(data, method="map", key=0, progress=False)
    sim = glm.simulate(data, key=0)
    assert not sim.runaway and np.isnan(sim.first_runaway).all()
    # the simulated rates are in the range of the real ones
    real, fake = data.firing_rates(), sim.data.firing_rates()
    assert np.all(np.abs(np.log(fake / real)) < 0.5)
    # make the history strongly self-exciting: the closed loop must run away, and say so
    glm.params_ = dict(glm.params_, history_weights=np.full_like(glm.params_["history_weights"], 3.0))
    with pytest.warns(UserWarning, match="ran away"):
        sim = glm.simulate(data, key=0)
    assert sim.runaway and np.isfinite(sim.first_runaway).all()
    assert np.all(np.isfinite(sim.rates)) and np.all(sim.n_capped >= 10)


def test_brief_peak_at_the_cap_is_not_a_runaway():
    """A stimulus transient that touches the cap under suppressive feedback is counted, not flagged."""
    drive = np.full((1000, 1), np.log(20.0))
    drive[500] = np.log(5000.0)
    kernel = np.full((5, 1, 1), -2.0)
    _, _, first, n_capped = simulate_counts(jax.random.key(0), drive, kernel, bin_size=0.001)
    assert int(first[0]) == -1 and int(n_capped[0]) == 1
    excite = np.full((5, 1, 1), 2.0)
    _, _, first, n_capped = simulate_counts(jax.random.key(0), drive, excite, bin_size=0.001)
    assert int(first[0]) >= 0 and int(n_capped[0]) >= 10


@pytest.mark.slow  # ~18 s
def test_negative_binomial_recovers_overdispersion():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(20000, 1))
    mu = np.exp(np.log(30.0) + 0.5 * s[:, 0]) * BIN * 10  # 50 ms bins
    conc = 2.0
    y = rng.poisson(rng.gamma(conc, mu / conc))[:, None]
    data = bn.SpikeData.from_counts(y, bin_size=BIN * 10, covariates=s, feature_names=["s"])
    glm = bn.PoissonGLM(observation="negative-binomial").fit(data, method="laplace", key=0, progress=False, num_samples=500)
    draws = glm.result_.flat_samples()
    assert abs(np.median(draws["concentration"]) - conc) < 0.3
    assert abs(glm.params_["stimulus_weights"].ravel()[0] - 0.5) < 0.05


@pytest.mark.slow  # ~8 s: many small fits, each compiled
def test_bad_input_messages(population):
    data = population[0].time_slice(0, 10.0)
    counts = data.counts.copy()
    counts[:, 2] = 0
    with pytest.warns(UserWarning):
        silent = bn.SpikeData.from_counts(counts, bin_size=BIN, covariates=data.covariates, feature_names=["s"])
    with pytest.raises(ValueError, match=r"neurons \[2\] have no spikes"):
        _small_glm(Ridge(1.0)).fit(silent, method="map", key=0)
    const = data.with_covariates(np.ones((data.n_time, 1)), ["s"])
    with pytest.raises(ValueError, match="constant"):
        _small_glm(Ridge(1.0)).fit(const, method="map", key=0)
    with pytest.raises(ValueError, match="too short"):
        _small_glm(Ridge(1.0)).fit(data.time_slice(0, 0.05), method="map", key=0)
    with pytest.raises(ValueError, match="0/1 counts"):
        _small_glm(Ridge(1.0), observation="bernoulli").fit(
            bn.SpikeData.from_counts(np.full((100, 1), 2), bin_size=BIN), method="map", key=0
        )
    with pytest.raises(ValueError, match="no meaningful mode"):
        _small_glm(Ridge(1.0), coupling_prior=ARD()).fit(data, method="map", key=0)
    with pytest.raises(ValueError, match="observation"):
        bn.PoissonGLM(observation="gaussian")
    with pytest.raises(ValueError, match="coupling=True needs"):
        bn.PoissonGLM(coupling=True)
    with pytest.raises(RuntimeError, match="not fitted"):
        bn.PoissonGLM().predict_rate(data)
    # data that do not match the fit
    glm = _small_glm(Ridge(1.0)).fit(data, method="map", key=0, progress=False)
    # a stimulus far outside the training range makes exp(eta) overflow: a clear error, not inf
    huge = data.with_covariates(data.covariates * 1e5, ["s"])
    with pytest.raises(ValueError, match="overflow"):
        glm.predict_rate(huge)
    with pytest.raises(ValueError, match="neuron ids"):
        glm.predict_rate(data.select_neurons([0, 1]))


@pytest.mark.slow  # SBC
def test_sbc_laplace_small_glm_and_negative_control():
    """Laplace posteriors of a small GLM are calibrated; halving their spread is caught."""
    spec_glm = bn.PoissonGLM(
        stimulus_basis=bn.bases.RaisedCosineLog(2, window=6, first_peak=0.0, history=False),
        prior=Ridge(0.5),
        bias_prior=(np.log(20.0), 0.3),
    )
    rng = np.random.default_rng(0)
    s = rng.normal(size=(600, 1))
    template = bn.SpikeData.from_counts(np.ones((600, 1), int), bin_size=0.01, covariates=s, feature_names=["s"])
    spec = spec_glm._spec(template)
    arrays = spec_glm._features(template)
    simulate = bn.sbc.prior_simulator(bn.glm.glm_model, obs="counts", params=["bias", "stimulus_weights"], spec=spec, **arrays)

    def posterior(key, sim, scale=1.0):
        data = template._replace(counts=np.asarray(sim["counts"]).astype(int))
        if data.counts.sum() == 0:
            data = template
        g = bn.PoissonGLM(stimulus_basis=spec_glm.stimulus_basis, prior=Ridge(0.5), bias_prior=(np.log(20.0), 0.3))
        with warnings.catch_warnings():  # a simulated data set the optimiser finds hard
            warnings.filterwarnings("ignore", ".*the optimiser did not converge", RuntimeWarning)
            g.fit(data, method="laplace", key=key, progress=False, num_samples=99)
        draws = g.result_.flat_samples()
        out = {k: draws[k] for k in ("bias", "stimulus_weights")}
        if scale != 1.0:
            out = {k: v.mean(0) + scale * (v - v.mean(0)) for k, v in out.items()}
        return out

    good = bn.sbc.run_sbc(simulate, posterior, key=0, n_sims=100, n_draws=99, progress=False)
    assert good.passed, good.pvalues
    bad = bn.sbc.run_sbc(simulate, lambda k, d: posterior(k, d, scale=0.4), key=0, n_sims=100, n_draws=99, progress=False)
    assert not bad.passed


@pytest.mark.slow  # ~25 s
def test_fft_and_design_modes_compute_the_same_model(population):
    """The FFT path (no design matrix) and the design-matrix path agree, across trial boundaries."""
    data = population[0].time_slice(0, 30.0)
    trials = bn.SpikeData.from_counts(
        data.counts, bin_size=BIN, covariates=data.covariates, feature_names=["s"], trial_ids=np.arange(data.n_time) // 1000
    )
    fits = {}
    for mode in ("fft", "design"):
        glm = _small_glm(Ridge(1.0), filter_mode=mode, coupling_basis=bn.bases.RaisedCosineLog(2, window=12))
        fits[mode] = glm.fit(trials, method="map", key=0, progress=False, tol=1e-8)
    for k in fits["fft"].params_:
        np.testing.assert_allclose(fits["fft"].params_[k], fits["design"].params_[k], atol=1e-6)
    np.testing.assert_allclose(fits["fft"].predict_rate(trials), fits["design"].predict_rate(trials), rtol=1e-5)


@pytest.mark.slow  # ~75 s: NUTS
def test_ard_coupling_prior_finds_the_network_under_nuts(population):
    """A sparsity prior on whole coupling filters (ARD) recovers exactly the true edges."""
    data, truth, hist_basis, stim_basis = population
    data = data.time_slice(0, 25.0)
    glm = bn.PoissonGLM(
        stimulus_basis=stim_basis, history_basis=hist_basis, coupling=True, coupling_prior=ARD(0.5), filter_mode="design"
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SHORT_CHAINS, ConvergenceWarning)  # a short run: a few divergences
        glm.fit(data, method="nuts", key=0, progress=False, num_warmup=200, num_samples=200, num_chains=1)
    true = np.zeros((data.n_neuron, data.n_neuron), bool)
    for src, dst in truth["edges"]:
        true[dst, src] = True
    assert (glm.coupling_network(prob=0.9).values == true).all()
    # absent edges are shrunk towards zero; present ones are not
    integrated = np.abs(glm.coupling_matrix().values)
    assert integrated[true].min() > 5 * np.median(integrated[~true & ~np.eye(4, dtype=bool)])


@pytest.mark.slow  # ~22 s
def test_one_neuron_with_population_input_matches_population_fit(population):
    """The posterior factorises over neurons: fitting neuron 2 alone (all neurons as coupling
    sources) gives the same MAP as its part of the whole-population fit."""
    data = population[0].time_slice(0, 30.0)
    whole = _small_glm(Ridge(1.0)).fit(data, method="map", key=0, progress=False, tol=1e-8)
    one = _small_glm(Ridge(1.0)).fit(data, method="map", key=0, neurons=[2], progress=False, tol=1e-8)
    assert one.neuron_ids_.tolist() == [2] and one.source_ids_.tolist() == [0, 1, 2, 3]
    for k, v in one.params_.items():
        np.testing.assert_allclose(v, whole.params_[k][..., [2]], atol=1e-5)
    np.testing.assert_allclose(one.predict_rate(data)[:, 0], whole.predict_rate(data)[:, 2], rtol=1e-4)
    assert one.filters()["coupling"].dims == ("neuron", "source", "coupling_lag")
    with pytest.raises(ValueError, match="every coupling source"):
        one.simulate(data, key=0)
    with pytest.raises(ValueError, match=r"neurons \[7\] are not in the data"):
        _small_glm(Ridge(1.0)).fit(data, method="map", key=0, neurons=[7])


@pytest.mark.slow  # ~25 s
def test_preconditioned_map_reaches_the_same_optimum_in_fewer_iterations(population):
    """Whitened, centred variables change the path of L-BFGS, not the optimum."""
    data = population[0].time_slice(0, 40.0)
    fits = {}
    for name, opts in (("pre", {}), ("plain", {"preconditioner": None})):
        fits[name] = _small_glm(Ridge(1.0)).fit(data, method="map", key=0, progress=False, tol=1e-8, **opts)
    for k in fits["pre"].params_:
        np.testing.assert_allclose(fits["pre"].params_[k], fits["plain"].params_[k], atol=1e-5)
    obj = {k: f.result_.info["objective"] for k, f in fits.items()}
    assert obj["pre"] <= obj["plain"] + 1e-9 * abs(obj["plain"])
    assert fits["pre"].result_.info["n_iter"] < fits["plain"].result_.info["n_iter"] / 2


@pytest.mark.slow  # 20-70 s: four GLM compilations (the Ridge scale is part of the compiled model)
def test_auto_ridge_beats_the_fixed_default_on_uncoupled_neurons(monkeypatch):
    """Issue 20, point 5: with coupling filters on a short recording of uncoupled Poisson neurons
    the fixed default Ridge(1.0) over-fits (negative held-out bits/spike); prior="auto" chooses the
    scale on held-out data inside the training set and scores higher on later data."""
    from bayesneuro.glm import priors

    monkeypatch.setattr(priors, "RIDGE_CANDIDATES", (0.03, 1.0))  # two compilations instead of five
    rng = np.random.default_rng(4)
    counts = rng.poisson(rng.uniform(10, 40, 6) * 0.005, (4000, 6))
    train = bn.SpikeData.from_counts(counts[:2000], bin_size=0.005)
    test = bn.SpikeData.from_counts(counts[2000:], bin_size=0.005)
    basis = bn.bases.RaisedCosineLog(3, window=15, first_peak=1.0)
    auto = bn.PoissonGLM(history_basis=basis, coupling=True, prior="auto").fit(train, progress=False)
    old = bn.PoissonGLM(history_basis=basis, coupling=True).fit(train, progress=False)
    d = auto.log_likelihood(test) - old.log_likelihood(test)
    assert d.sum() > 3 * d.std(ddof=1) * np.sqrt(d.size), (auto.score(test), old.score(test))
    assert old.score(test) < 0 < auto.score(test) + 0.01
    sel = auto.prior_selection_
    assert auto.prior_scale_ == 0.03 and list(sel.index) == [0.03, 1.0] and sel["chosen"].sum() == 1
    assert sel["log_likelihood"].idxmax() == auto.prior_scale_
    assert old.prior_scale_ is None and old.prior_selection_ is None
    with pytest.raises(ValueError, match="at least 2 Ridge scales"):
        priors.select_ridge_scale(auto, train, candidates=(1.0,))


# ---------------------------------------------------------------------------------------------
# issue 21: one optimum for both filter paths, excluded initial bins, Laplace mode, compilations
# ---------------------------------------------------------------------------------------------


def _numpy_objective(counts, basis, bias, params, alpha, keep=None):
    """The ridge MAP objective of a history + coupling GLM, in numpy/scipy only (bench/glm.py's scorer).

    ``sum_{t, n} [mu - y log mu] + alpha / 2 ||W||^2`` with features by ``scipy.signal.fftconvolve``
    of each neuron's counts with each basis function shifted by one bin (the current bin excluded).
    """
    from scipy.signal import fftconvolve

    y = np.asarray(counts, float)
    T, N = y.shape
    B = basis.matrix()
    feats = np.stack([fftconvolve(y, np.r_[0.0, B[:, b]][:, None], mode="full", axes=0)[:T]
                      for b in range(B.shape[1])], axis=2)  # (time, source, basis)
    coup = np.array(params["coupling_weights"], float)  # (source, basis, neuron)
    idx = np.arange(N)
    coup[idx, :, idx] = np.asarray(params["history_weights"]).T
    eta = np.log(BIN) + bias + np.einsum("tmb,mbn->tn", feats, coup)
    keep = np.ones(T, bool) if keep is None else keep
    nll = np.sum((np.exp(eta) - y * eta)[keep])
    return nll + 0.5 * alpha * np.sum(coup**2)


@pytest.mark.slow  # ~10 s: two compilations (FFT and design paths)
def test_default_fft_path_reaches_the_design_paths_optimum(population):
    """Issue 21, point 6: the default (FFT) MAP and the design-matrix MAP reach one optimum (the
    bench/glm.py workload in small: history + coupling, ridge alpha = 1, bias unpenalised),
    scored by an independent numpy computation; a capped optimiser warns."""
    data = population[0].time_slice(0, 15.0)
    basis = bn.bases.RaisedCosineLog(4, window=20, first_peak=0.0)
    obj = {}
    for mode in ("fft", "design"):
        glm = bn.PoissonGLM(history_basis=basis, coupling=True, prior=Ridge.from_penalty(1.0), bias_prior=None,
                            filter_mode=mode).fit(data, method="map", progress=False)
        assert glm.result_.info["converged"]
        obj[mode] = _numpy_objective(data.counts, basis, glm.params_["bias"], glm.params_, 1.0)
    assert abs(obj["fft"] - obj["design"]) <= 1e-8 * abs(obj["design"])
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        bn.PoissonGLM(history_basis=basis, coupling=True, prior=Ridge.from_penalty(1.0), bias_prior=None).fit(
            data, method="map", progress=False, max_iter=3)


@pytest.mark.slow  # ~8 s: two fits, sklearn per neuron
def test_exclude_initial_bins_equals_sklearn_on_the_complete_rows(population):
    """Issue 21, point 6: ``exclude_initial_bins=True`` leaves the first ``window`` bins of each trial
    out of the likelihood, as users of sklearn / statsmodels / nemos drop the design's first rows:
    the MAP is sklearn's PoissonRegressor on those rows; scores use them only."""
    data = population[0].time_slice(0, 20.0)
    trials = bn.SpikeData.from_counts(data.counts, bin_size=BIN, trial_ids=np.arange(data.n_time) // 1000)
    basis = bn.bases.RaisedCosineLog(3, window=20, first_peak=0.0)
    seg_pos = np.arange(trials.n_time) % 1000
    keep = seg_pos >= basis.window
    X = np.asarray(bn.bases.design_matrix(trials.counts, basis, history=True, trial_ids=trials.trial_ids))[keep]
    alpha = 1e-3  # sklearn's penalty per row
    penalty = alpha * keep.sum()
    fits = {}
    for drop in (True, False):
        fits[drop] = bn.PoissonGLM(history_basis=basis, coupling=True, prior=Ridge.from_penalty(penalty),
                                   bias_prior=None, exclude_initial_bins=drop).fit(
            trials, method="map", progress=False, tol=1e-9)
    glm = fits[True]
    far = 0.0
    for n in range(trials.n_neuron):
        y = trials.counts[keep, n]
        ref = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=10000, solver="newton-cholesky").fit(X, y)
        np.testing.assert_allclose(_coef(glm, n), ref.coef_, atol=2e-6)
        np.testing.assert_allclose(glm.params_["bias"][n] + np.log(BIN), ref.intercept_, atol=2e-6)
        far = max(far, np.abs(_coef(fits[False], n) - ref.coef_).max())
    assert far > 1e-3  # the first bins do change the fit: the test can tell the two apart
    # scores: only the complete bins are observations
    ll = glm.log_likelihood(trials)
    assert ll.shape == (keep.sum(),)
    mu = glm.predict_rate(trials)[keep] * BIN
    y = trials.counts[keep]
    np.testing.assert_allclose(ll, np.sum(y * np.log(mu) - mu - special.gammaln(y + 1), axis=1), rtol=1e-10)
    null = np.sum(y * np.log(y.mean(0)) - y.mean(0) - special.gammaln(y + 1))
    np.testing.assert_allclose(glm.score(trials), (ll.sum() - null) / (y.sum() * np.log(2)), rtol=1e-10)
    assert glm.to_inference_data().log_likelihood["counts"].shape == (keep.sum(),)
    assert glm.predict_rate(trials).shape == (trials.n_time, trials.n_neuron)


@pytest.mark.slow  # ~10 s: MAP and Laplace compile
def test_laplace_params_are_the_mode_not_the_mean_of_the_draws(population):
    """Issue 21, point 6: after method="laplace", params_ is the posterior mode (the MAP)."""
    # 2,048 bins, a bucket length: MAP pads nothing, so both fits minimise the very same sum
    data = bn.SpikeData.from_counts(population[0].counts[:2048], bin_size=BIN)
    basis = bn.bases.RaisedCosineLog(3, window=20, first_peak=0.0)
    make = lambda: bn.PoissonGLM(history_basis=basis, coupling=True)
    map_fit = make().fit(data, method="map", progress=False, tol=1e-10)
    lap = make().fit(data, method="laplace", key=0, progress=False, tol=1e-10, num_samples=200)
    mean = lap.result_.params  # the mean of the draws (what params_ was before)
    gap = 0.0
    for k, v in map_fit.params_.items():
        np.testing.assert_allclose(lap.params_[k], v, atol=1e-8, rtol=0)
        gap = max(gap, np.abs(mean[k] - v).max())
    assert gap > 1e-4


@pytest.mark.slow  # ~5 s: one MAP compilation
def test_a_recording_of_another_length_compiles_nothing(population):
    """Issue 21, point 1: MAP pads the time axis to a bucket length, so a second recording of
    another length (same bucket) reuses every compiled program, fit and scores alike."""
    from bayesneuro._shapes import bucket_length, count_compilations

    data = population[0]
    assert bucket_length(2900) == bucket_length(3000)
    basis = bn.bases.RaisedCosineLog(3, window=20, first_peak=0.0)
    fits = []
    for T in (3000, 2900):
        rec = bn.SpikeData.from_counts(data.counts[:T], bin_size=BIN)
        glm = bn.PoissonGLM(history_basis=basis, coupling=True)
        with count_compilations() as c:
            glm.fit(rec, method="map", progress=False)
            glm.score(rec)
        fits.append((glm, rec, c.compilations))
    assert fits[0][2] > 0 and fits[1][2] == 0
    # the result describes the recording's own bins, not the padding (Laplace, which pads the same
    # way, is checked against a dense Hessian of the unpadded bins in tests/test_laplace_memory.py)
    glm, rec, _ = fits[1]
    assert glm.result_.model_kwargs["counts"].shape[0] == rec.n_time
    assert glm.log_likelihood(rec).shape == (rec.n_time,)
