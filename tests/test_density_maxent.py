"""Population maximum-entropy models: exact maths vs brute force, fits, MC, AIS, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesneuro.density import _maxent_mc as mc
from bayesneuro.density import maxent

RNG = np.random.default_rng(0)


def _random_params(n, kind, rng, scale=0.5):
    lay = maxent._Layout(kind, n)
    return lay, lay.unpack(jnp.asarray(rng.normal(0, scale, lay.size) + np.r_[np.full(n * lay.use_h, -1.0),
                                                                             np.zeros(lay.size - n * lay.use_h)]))


def _brute(p, n):
    words = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    iu = np.triu_indices(n, 1)
    e = np.array([w @ np.asarray(p.h) + np.sum(np.asarray(p.J) * w[iu[0]] * w[iu[1]])
                  + np.asarray(p.V)[int(w.sum())] for w in words])
    log_z = np.log(np.sum(np.exp(e)))
    return words, e, log_z, np.exp(e - log_z)


def _ising_data(n, T, key, scale=0.3):
    rng = np.random.default_rng(key)
    h = rng.normal(-1.0, 0.3, n)
    J = rng.normal(0, scale, (n, n))
    J = np.triu(J, 1)
    J = J + J.T
    x0 = jnp.zeros((T, n))
    out, _ = mc.gibbs_samples(jax.random.PRNGKey(key), x0, jnp.asarray(h), jnp.asarray(J), jnp.zeros(n + 1),
                              n_burn=300, n_keep=1)
    return np.asarray(out[0]), h, J


@pytest.mark.parametrize("kind", maxent.KINDS)
def test_exact_vs_brute_force(kind):
    n = 6
    _lay, p = _random_params(n, kind, RNG)
    words, _e, log_z, prob = _brute(p, n)
    assert float(maxent.log_partition(p, kind)) == pytest.approx(log_z, abs=1e-10)
    assert np.allclose(np.asarray(maxent._energy(p, jnp.asarray(words))) - log_z, np.log(prob), atol=1e-10)
    m = maxent.model_moments(p, kind)
    m1 = prob @ words
    cov = (words * prob[:, None]).T @ words - np.outer(m1, m1)
    d = words - m1
    trip = np.array([np.sum(prob * d[:, i] * d[:, j] * d[:, k]) for i, j, k in itertools.combinations(range(n), 3)])
    pk = np.bincount(words.sum(1).astype(int), weights=prob, minlength=n + 1)
    assert np.allclose(m.rates, m1, atol=1e-10) and np.allclose(m.covariance, cov, atol=1e-10)
    assert np.allclose(m.triplet, trip, atol=1e-10) and np.allclose(m.synchrony, pk, atol=1e-10)


def test_statistics_covariance_is_hessian_of_log_z():
    n = 5
    lay, p = _random_params(n, "k-pairwise", RNG)
    words, _, _, prob = _brute(p, n)
    s = np.asarray(lay.statistics(jnp.asarray(words)))
    cov = (s * prob[:, None]).T @ s - np.outer(prob @ s, prob @ s)
    hess = maxent._hessian_log_z(lay, lay.pack(p))
    assert np.allclose(hess, cov, atol=1e-10)


@pytest.fixture(scope="module")
def ising_data():
    x, _h, _J = _ising_data(8, 3000, 1)
    return x


@pytest.fixture(scope="module")
def ising_fit(ising_data):
    return maxent.MaxEnt("ising", prior_scale=1e3).fit(ising_data, key=0, progress=False)


@pytest.mark.slow  # ~12 s with the module fixture: MaxEnt fit of the Ising model
def test_max_ent_property(ising_fit, ising_data):
    pred, obs = ising_fit.predicted_moments(), maxent.observed_moments(ising_data)
    assert np.allclose(pred.rates, obs.rates, atol=1e-6)
    assert np.allclose(pred.covariance, obs.covariance, atol=1e-6)


@pytest.mark.slow  # ~10 s: fits of two models
def test_independent_and_synchrony_closed_forms(ising_data):
    from scipy.special import comb

    n = ising_data.shape[1]
    ind = maxent.MaxEnt("independent", prior_scale=1e3).fit(ising_data, key=0, progress=False)
    assert np.allclose(ind.predicted_moments().rates, ising_data.mean(0), atol=1e-6)
    syn = maxent.MaxEnt("synchrony", prior_scale=1e3).fit(ising_data, key=0, progress=False)
    pk = np.bincount(ising_data.sum(1).astype(int), minlength=n + 1) / len(ising_data)
    assert np.allclose(syn.predicted_moments().synchrony, pk, atol=1e-6)
    words = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    lp = syn.log_likelihood(words)
    k = words.sum(1).astype(int)
    assert np.allclose(np.exp(lp), pk[k] / comb(n, k), atol=1e-6)


@pytest.mark.slow  # ~5 s
def test_laplace_precision_vs_finite_differences(ising_data):
    x = ising_data[:, :4]
    m = maxent.MaxEnt("k-pairwise", prior_scale=2.0).fit(x, key=0, progress=False)
    lay, T = m.layout_, m.n_bins_
    target = lay.target(m.statistics_)

    def neg_log_post(t):
        return -T * (t @ target - maxent.log_partition(lay.unpack(t), "k-pairwise")) + 0.5 * jnp.sum(t**2) / 4.0

    grad = jax.jit(jax.grad(neg_log_post))
    eps, d = 1e-5, lay.size
    fd = np.stack([(grad(m.theta_ + eps * np.eye(d)[i]) - grad(m.theta_ - eps * np.eye(d)[i])) / (2 * eps)
                   for i in range(d)])
    assert np.allclose(m.precision_, fd, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(grad(m.theta_))) < 1e-3  # the MAP is the mode (gradient is O(T))


@pytest.mark.slow  # shares the ~12 s Ising fit
def test_ais_log_partition_within_se(ising_fit):
    h, J, V = ising_fit.layout_.unpack_dense(jnp.asarray(ising_fit.theta_))
    res = mc.ais_log_partition(jax.random.PRNGKey(3), h, J, V, h0=h, n_chains=300, n_temperatures=300)
    assert abs(res.log_partition - ising_fit.log_partition_) < 4 * res.se + 1e-9


@pytest.mark.slow  # ~9 s: Monte Carlo fit (and shares the Ising fit)
def test_mc_agrees_with_exact(ising_fit, ising_data):
    m = maxent.MaxEnt("ising", prior_scale=1e3)
    m.fit(ising_data, method="mc", key=2, n_chains=400, max_iter=1500, progress=False)
    sd = np.sqrt(np.diag(ising_fit.cov_))
    z = (m.theta_ - ising_fit.theta_) / sd
    assert np.max(np.abs(z)) < 1.0  # MC error well inside the posterior SD
    assert abs(m.log_partition_ - ising_fit.log_partition_) < 4 * m.log_partition_se_ + 0.02


@pytest.mark.slow  # ~10 s: four fits
def test_held_out_gain_and_negative_control(ising_data):
    t = maxent.compare_population_models(ising_data[:2000], ising_data[2000:], kinds=("ising",), key=0,
                                         progress=False)
    assert t.loc["ising", "gain_bits"] > 3 * t.loc["ising", "gain_se"]
    x = (np.random.default_rng(5).random((3000, 8)) < ising_data.mean(0)).astype(int)
    t0 = maxent.compare_population_models(x[:2000], x[2000:], kinds=("ising",), key=0, progress=False)
    assert t0.loc["ising", "gain_bits"] < 2 * t0.loc["ising", "gain_se"]


@pytest.mark.slow  # shares the ~12 s Ising fit
def test_posterior_statistics_contract(ising_fit):
    st = ising_fit.posterior_statistics(key=0, num_samples=20)
    assert st["J"].dims == ("draw", "pair") and st["J"].coords["pair"].values[0] == "0-1"
    assert st["h"].dims == ("draw", "neuron") and st["multi_information"].sizes["draw"] == 20
    assert float(st["multi_information"].mean()) > 0
    assert "J" in ising_fit.to_inference_data().posterior


def test_bad_input():
    with pytest.raises(ValueError, match="never spike"):
        maxent.binarize([[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        maxent.binarize([[np.nan, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="non-negative"):
        maxent.binarize([[-1, 1], [0, 0]])
    with pytest.raises(ValueError, match="whole numbers"):
        maxent.binarize([[0.5, 1], [0, 0]])
    with pytest.raises(ValueError, match="kind must be"):
        maxent.MaxEnt("potts")
    x = (np.random.default_rng(0).random((50, 21)) < 0.5).astype(int)
    with pytest.raises(ValueError, match="N <= 20"):
        maxent.MaxEnt("ising").fit(x, method="exact", key=0)
    with pytest.raises(TypeError, match="key"):
        maxent.MaxEnt("ising").fit(x[:, :3], method="mc", key=None)


@pytest.mark.slow  # ~9 s: Monte Carlo fit of 30 neurons
def test_mc_recovers_known_couplings_of_30_neurons():
    """Above the exact limit: Boltzmann learning on Gibbs-simulated words of 30 neurons recovers
    the true fields and couplings (ground truth), within a few sampling SDs."""
    n, T = 30, 20000
    x, h, J = _ising_data(n, T, key=7, scale=0.25)
    m = maxent.MaxEnt("ising", prior_scale=1e3)
    m.fit(x, method="mc", key=1, n_chains=300, max_iter=1500, progress=False)
    assert m.method_ == "mc"
    iu = np.triu_indices(n, 1)
    Jhat = np.asarray(m.params_.J)
    Jhat = Jhat[iu] if Jhat.ndim == 2 else Jhat
    assert np.corrcoef(Jhat, J[iu])[0, 1] > 0.9
    assert np.sqrt(np.mean((Jhat - J[iu]) ** 2)) < 0.07  # 0.045 at 1500 iterations, 0.087 at 50
    assert np.sqrt(np.mean((np.asarray(m.params_.h) - h) ** 2)) < 0.1


@pytest.mark.slow  # shares the ~12 s Ising fit
def test_plot_moments_draws_the_given_values(ising_fit, ising_data):
    import matplotlib

    matplotlib.use("Agg")
    obs = maxent.observed_moments(ising_data)
    ax = maxent.plot_moments(obs, {"ising": ising_fit})
    pred = ising_fit.predicted_moments()
    n = obs.rates.size
    xy = ax[0].collections[0].get_offsets()
    iu = np.triu_indices(n, 1)
    np.testing.assert_allclose(np.asarray(xy), np.c_[obs.covariance[iu], pred.covariance[iu]])
    with pytest.raises(ValueError, match="predicted is empty"):
        maxent.plot_moments(obs, {})


# -- prior_scale="auto": the coupling prior chosen on held-out inner folds (issue 20, point 5) ---


def _exact_pairwise_words(n, T, seed, j_scale, h_mean=-1.5):
    """T words drawn exactly (by enumeration) from a pairwise model with known h, J."""
    rng = np.random.default_rng(seed)
    h = rng.normal(h_mean, 0.3, n)
    J = np.triu(rng.normal(0.0, j_scale, (n, n)), 1)
    words = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    e = words @ h + np.einsum("wi,ij,wj->w", words, J, words)
    p = np.exp(e - e.max())
    return lambda t, s: words[np.random.default_rng(s).choice(words.shape[0], size=t, p=p / p.sum())]


def _paired(a, b, test):
    d = (a.log_likelihood(test) - b.log_likelihood(test)) / np.log(2)
    return d.mean(), d.std(ddof=1) / np.sqrt(d.size)


@pytest.mark.slow  # ~12 s: compiles the exact Ising MAP once (the inner fits then take ~0.02 s each)
def test_auto_prior_beats_the_large_fixed_prior_on_few_words():
    """10 neurons, 45 true couplings, only 250 training words: the old fixed prior (SD 5)
    over-fits, so its held-out gain is below the auto choice's, which is chosen on inner folds."""
    draw = _exact_pairwise_words(10, 250, seed=3, j_scale=0.5)
    train, test = draw(250, 1), draw(20000, 2)
    auto = maxent.MaxEnt("ising").fit(train, progress=False)
    fixed = maxent.MaxEnt("ising", prior_scale=5.0).fit(train, progress=False)
    g_auto, g_fixed = auto.evaluate(test), fixed.evaluate(test)
    diff, se = _paired(auto, fixed, test)
    assert diff > 3 * se, (g_auto, g_fixed)  # auto gains more on fresh words from the true model
    assert g_auto["gain_bits"] > 3 * g_auto["gain_se"]  # and still finds the couplings
    assert auto.prior_scale_["J"] < 5.0 and auto.prior_scale_["h"] == maxent.FIELD_SCALE
    sel = auto.prior_selection_
    assert list(sel.index) == sorted(maxent.PRIOR_CANDIDATES) and sel["chosen"].sum() == 1
    assert sel.index[sel["chosen"]][0] == auto.prior_scale_["J"] == sel["gain_bits"].idxmax()
    idata = auto.to_inference_data()  # no key, no draws: a point fit (the mode), no posterior
    assert "posterior" not in idata.groups() and idata.point_estimate.attrs["method"] == "map"
    assert idata.point_estimate["J"].dims == ("pair",) and idata.log_likelihood["words"].dims == ("time",)
    attrs = idata.point_estimate.attrs
    assert attrs["prior_scale_J"] == auto.prior_scale_["J"] and attrs["prior_scale_chosen_by"] == "held-out"
    np.testing.assert_allclose(attrs["prior_selection_gain_bits"], sel["gain_bits"])
    assert fixed.prior_selection_ is None and fixed.to_inference_data().point_estimate.attrs["prior_scale_chosen_by"] == "fixed"


@pytest.mark.slow  # ~12 s with a cold compile; shares it when run after the test above
def test_auto_prior_on_independent_words_gains_nothing_while_the_old_default_loses():
    """Shuffled-neuron control: words with no coupling at all. The auto choice's held-out gain is
    ~0 (not negative beyond noise); the old default (SD 5 on 45 couplings, 250 words) loses."""
    rng = np.random.default_rng(11)
    rates = rng.uniform(0.05, 0.3, 10)
    train, test = ((rng.random((t, 10)) < rates).astype(float) for t in (250, 20000))
    auto = maxent.MaxEnt("ising").fit(train, progress=False).evaluate(test)
    old = maxent.MaxEnt("ising", prior_scale=5.0).fit(train, progress=False).evaluate(test)
    assert auto["gain_bits"] > -max(3 * auto["gain_se"], 0.005), auto
    assert old["gain_bits"] < -5 * old["gain_se"] and old["gain_bits"] < auto["gain_bits"] - 0.02, old


@pytest.mark.slow  # ~3 s after the tests above (same 10-neuron program), ~15 s alone
def test_auto_prior_on_real_motor_cortex_words_at_least_the_old_default(shared_data):
    """Real recording (rat motor cortex, 20-ms words of the 10 most active neurons, 1,500 training
    and 1,500 later held-out words): the auto prior's held-out gain beats the old default's (SD 5;
    measured: +0.004 vs -0.014 bits/bin, paired difference 0.018 +- 0.006)."""
    raw = np.load(shared_data / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz", allow_pickle=False)
    t_ms, nid, trial = raw["spiketimes"], raw["neuron_ids"], raw["trial_ids"]
    sel = (trial >= 600) & (trial < 630)  # 30 trials x 100 bins of 20 ms
    counts = np.zeros((3000, int(nid.max()) + 1))
    np.add.at(counts, ((trial[sel] - 600) * 100 + np.minimum(t_ms[sel] // 20, 99).astype(int), nid[sel]), 1)
    words = (counts > 0).astype(float)
    cells = np.sort(np.argsort(-words[:1500].mean(0))[:10])
    train, test = words[:1500, cells], words[1500:, cells]
    auto = maxent.MaxEnt("ising").fit(train, progress=False)
    old = maxent.MaxEnt("ising", prior_scale=5.0).fit(train, progress=False)
    diff, se = _paired(auto, old, test)
    assert diff > 2 * se, (diff, se)
    assert auto.evaluate(test)["gain_bits"] > -auto.evaluate(test)["gain_se"]


def test_prior_scale_auto_bad_input():
    with pytest.raises(ValueError, match="'auto', a positive number"):
        maxent.MaxEnt("ising", prior_scale="best")
    with pytest.raises(ValueError, match="at least 2 values"):
        maxent.MaxEnt("ising", prior_candidates=(0.5,))
    with pytest.raises(ValueError, match="inner_folds"):
        maxent.MaxEnt("ising", inner_folds=1)
    with pytest.raises(ValueError, match="field scale 'h'"):
        maxent.MaxEnt("ising", prior_scale={"h": "auto"})
    x = (np.random.default_rng(0).random((20, 3)) < 0.5).astype(int)
    with pytest.raises(ValueError, match="at least 30 words"):
        maxent.MaxEnt("ising").fit(x, progress=False)


def test_independent_fields_newton_matches_closed_form_gradient():
    """The independent baseline's fields solve T (m - sigmoid(h)) = h / s^2 (its MAP condition)."""
    x = (np.random.default_rng(2).random((400, 5)) < [0.01, 0.1, 0.3, 0.6, 0.97]).astype(float)
    for s in (0.3, 5.0):
        h = maxent._independent_fields(x, s)
        np.testing.assert_allclose(400 * (x.mean(0) - 1 / (1 + np.exp(-h))), h / s**2, atol=1e-8)
