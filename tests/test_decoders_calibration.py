"""Honest grid decoders: negative-binomial likelihood, nested temperature calibration, the slow-walk NaN."""

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from bayesneuro import SpikeData
from bayesneuro.decoders import (
    Grid,
    NaiveBayesDecoder,
    StateSpaceDecoder,
    TuningCurves,
    forward_backward,
)
from bayesneuro.decoders.calibration import calibrate_temperature, inner_folds
from bayesneuro.decoders.evaluation import kfold
from bayesneuro.decoders.naive_bayes import RATE_FLOOR
from bayesneuro.decoders.state_space import _axis_taps
from bayesneuro.decoders.tuning import estimate_dispersion


def _fields(x, n, lo, hi, width, peak, base):
    centres = np.linspace(lo, hi, n)
    return base + peak * np.exp(-0.5 * ((x[:, None] - centres) / width) ** 2)


def _walk(rng, n, step, lo, hi, start):
    """A reflecting Gaussian random walk in [lo, hi]."""
    span = hi - lo
    y = np.mod(start - lo + np.cumsum(rng.normal(0, step, n)), 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


# --------------------------------------------------------------- the slow-walk NaN (issue 20)
@pytest.mark.slow
def test_slow_walk_state_space_posterior_is_finite_and_tracks():
    """50 cells over 200 cm, 25-ms bins, a step of 0.8 cm per bin (a fifth of a cell).

    Before: the step kernel sampled at cell centres had one tap, the walk could not leave its
    cell, and forward and backward messages met on different cells: NaN posteriors in 13% of
    the test bins with a finite log evidence.
    """
    rng = np.random.default_rng(0)
    dt = 0.025
    x = _walk(rng, 6000, 0.8, 0.0, 200.0, 100.0)
    counts = rng.poisson(_fields(x, 40, 0, 200, 10.0, 30.0, 0.5) * dt)
    data = SpikeData.from_counts(counts, bin_size=dt, covariates=x, feature_names=["x"])
    train, test, _ = data.split(fractions=(0.7, 0.3))
    ss = StateSpaceDecoder(bins=50, range=(0, 200), observation="poisson", temperature=1.0).fit(train, "x")
    assert ss.sigma_walk_[0] < 4.0 / 4  # below a quarter of a cell
    post = ss.decode(test)
    assert np.all(np.isfinite(post.log_prob) | (post.log_prob == -np.inf))
    np.testing.assert_allclose(post.prob.sum(axis=1), 1.0, atol=1e-9)
    ev = ss.evaluate(test, "x")
    assert np.isfinite(ss.log_evidence_)
    assert ev["median_error"] < 2 * 4.0, ev["median_error"]  # within two cells (it was 8.6 cm)
    assert 0.85 <= ev["coverage"][0.9] <= 1.0


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 2.5])
def test_step_kernel_integrates_the_gaussian_over_cells(sigma):
    """Each tap is the probability that a Gaussian step from a uniform point in a cell lands in
    the cell j cells away (numerical quadrature), and a step far below a cell still reaches the
    neighbours."""
    w = 2.0
    taps = _axis_taps(200, w, sigma, False)
    W = taps.size // 2
    for j in range(-W, W + 1):
        ref = integrate.quad(
            lambda u, j=j: stats.norm.cdf((j * w + w - u) / sigma) - stats.norm.cdf((j * w - u) / sigma), 0, w,
            epsabs=1e-13,
        )[0] / w
        assert taps[j + W] == pytest.approx(ref, abs=1e-10)
    assert taps[W - 1] > 0 and taps[W + 1] > 0
    assert taps.sum() == pytest.approx(1.0, abs=1e-5)  # truncated 4 sd beyond the neighbours


def test_messages_that_rule_each_other_out_raise_with_the_cause():
    grid = Grid.regular(bins=4, range=(0, 4))
    ll = np.full((2, 4), -np.inf)
    ll[0, 0] = 0.0
    ll[1, 3] = 0.0  # three cells away in one bin, with a walk that cannot move
    for smooth in (False, True):
        with pytest.raises(ValueError, match="rule each other out.*sigma_walk"):
            forward_backward(ll, grid, np.ones(4, bool), sigma=0.0, smooth=smooth)


# --------------------------------------------------------------- the negative-binomial likelihood
def test_negative_binomial_posterior_and_log_likelihood_equal_scipy_brute_force():
    rng = np.random.default_rng(1)
    T, N, G, dt = 300, 6, 12, 0.1
    rates = rng.uniform(0.5, 40.0, (N, G))
    rates[2, 3] = 1e-3  # a nearly silent cell
    disp = np.array([0.3, 1.0, 2.5, 10.0, np.inf, 50.0])  # one Poisson neuron
    counts = rng.poisson(rng.gamma(2.0, 2.0, (T, N)))
    counts[5, 1] = 120
    grid = Grid.regular(bins=G, range=(0, 1))
    prior = rng.uniform(0.2, 1.0, G)
    tc = TuningCurves(rates, grid, occupancy=prior)
    mu = np.maximum(rates, RATE_FLOOR) * dt

    def brute(T_):
        lp = np.empty((T, G))
        for g in range(G):
            ll = np.zeros(T)
            for n in range(N):
                if np.isinf(disp[n]):
                    ll += stats.poisson.logpmf(counts[:, n], mu[n, g])
                else:
                    ll += stats.nbinom.logpmf(counts[:, n], disp[n], disp[n] / (disp[n] + mu[n, g]))
            lp[:, g] = ll / T_ + np.log(prior[g] / prior.sum())
        return lp - special.logsumexp(lp, axis=1, keepdims=True)

    data = SpikeData.from_counts(counts, bin_size=dt)
    for temp in (1.0, 2.5):
        dec = NaiveBayesDecoder.from_tuning_curves(tc, dispersion=disp, prior="occupancy", temperature=temp)
        assert dec.observation == "negative_binomial"
        np.testing.assert_allclose(dec.decode(data).log_prob, brute(temp), atol=1e-9, rtol=0)
    # the encoding model's log-likelihood at the truth: untempered NB log pmf
    x = rng.uniform(0, 1, T)
    cells = grid.locate(x[:, None])
    ref = sum(
        stats.poisson.logpmf(counts[:, n], mu[n, cells]) if np.isinf(disp[n])
        else stats.nbinom.logpmf(counts[:, n], disp[n], disp[n] / (disp[n] + mu[n, cells]))
        for n in range(N)
    )
    np.testing.assert_allclose(dec.log_likelihood(data, x), ref, rtol=1e-11)
    with pytest.raises(ValueError, match="needs dispersion"):
        NaiveBayesDecoder.from_tuning_curves(tc, observation="negative_binomial")
    with pytest.raises(ValueError, match="training data"):
        NaiveBayesDecoder.from_tuning_curves(tc, temperature="auto")
    with pytest.raises(ValueError, match="temperature must be"):
        NaiveBayesDecoder(temperature=0.5)
    with pytest.raises(ValueError, match="observation must be"):
        NaiveBayesDecoder(observation="gaussian")


def test_poisson_untempered_reproduces_the_plain_naive_bayes_posterior():
    """observation="poisson", temperature=1: the textbook posterior, to rounding (numpy reference)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 2000)
    counts = rng.poisson(_fields(x, 8, 0, 1, 0.08, 4.0, 0.2) * 0.1)
    data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    train, test, _ = data.split(fractions=(0.7, 0.3))
    dec = NaiveBayesDecoder(bins=20, range=(0, 1), observation="poisson", temperature=1.0).fit(train, "x")
    assert dec.temperature_ == 1.0 and dec.calibration_ is None and np.all(np.isinf(dec.dispersion_))
    r = np.maximum(dec.tuning_.rates, RATE_FLOOR) * 0.1
    lp = test.counts @ np.log(r) - r.sum(axis=0) + dec.log_prior_
    lp -= special.logsumexp(lp, axis=1, keepdims=True)
    np.testing.assert_allclose(dec.decode(test).log_prob, lp, atol=1e-12, rtol=0)


def test_dispersion_is_the_maximum_likelihood_estimate():
    rng = np.random.default_rng(3)
    cells = rng.integers(0, 30, 6000)
    rates = rng.uniform(1.0, 30.0, (4, 30))
    mu = rates[:, cells].T * 0.2
    r_true = np.array([0.5, 2.0, 8.0, np.inf])
    counts = np.column_stack([rng.poisson(rng.gamma(r, m / r)) if np.isfinite(r) else rng.poisson(m)
                              for r, m in zip(r_true, mu.T)])
    est = estimate_dispersion(counts, cells, rates, 0.2)
    for n in range(3):  # the maximum of scipy's NB log-likelihood over r (bounded scalar search)
        def nll(lr, n=n):
            return -stats.nbinom.logpmf(counts[:, n], np.exp(lr), np.exp(lr) / (np.exp(lr) + mu[:, n])).sum()

        ref = np.exp(optimize.minimize_scalar(nll, bounds=(-5, 9), method="bounded", options={"xatol": 1e-8}).x)
        assert est[n] == pytest.approx(ref, rel=1e-4)
        assert est[n] == pytest.approx(r_true[n], rel=0.25)
    assert est[3] > 100  # Poisson counts: at or near the cap


# --------------------------------------------------------------- calibration on simulated data
def _overdispersed(seed, n_time=5000, r=0.5, jitter=0.0, walk=False):
    """40 place cells over [0, 1] in 100-ms bins, gamma-Poisson counts with dispersion `r`.

    ``jitter``: the population fires for a position displaced from the truth by a Gaussian
    shift shared by all neurons in a bin (as theta sequences do): correlated noise that no
    model of independent neurons captures.
    """
    rng = np.random.default_rng(seed)
    x = _walk(rng, n_time, 0.03, 0.0, 1.0, 0.5) if walk else rng.uniform(0, 1, n_time)
    shown = np.clip(x + rng.normal(0, jitter, n_time), 0, 1) if jitter else x
    mu = _fields(shown, 40, 0, 1, 0.07, 30.0, 0.5) * 0.1
    counts = rng.poisson(rng.gamma(r, mu / r))
    data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    return data.split(fractions=(0.7, 0.3))[:2]


def _cov90(dec, test):
    return float(np.mean(dec.decode(test).covers(test.covariates, 0.9)))


def test_overdispersed_counts_break_poisson_coverage_and_the_default_restores_it():
    kw = {"bins": 50, "range": (0, 1)}
    train, test = _overdispersed(4)
    poisson = NaiveBayesDecoder(observation="poisson", temperature=1.0, **kw).fit(train, "x")
    default = NaiveBayesDecoder(**kw).fit(train, "x")
    assert _cov90(poisson, test) < 0.8
    assert 0.85 <= _cov90(default, test) <= 0.95
    np.testing.assert_allclose(np.median(default.dispersion_), 0.5, rtol=0.3)
    # correlated noise on top: the negative binomial alone is still too sharp; the temperature fixes it
    train, test = _overdispersed(4, r=2.0, jitter=0.04)
    nb1 = NaiveBayesDecoder(temperature=1.0, **kw).fit(train, "x")
    auto = NaiveBayesDecoder(**kw).fit(train, "x")
    assert _cov90(nb1, test) < 0.8
    assert auto.temperature_ > 1.0
    assert 0.85 <= _cov90(auto, test) <= 0.95
    assert auto.score(test, "x") > nb1.score(test, "x")


@pytest.mark.slow
def test_state_space_default_is_calibrated_on_overdispersed_walk():
    train, test = _overdispersed(4, n_time=4000, r=2.0, jitter=0.04, walk=True)
    kw = {"bins": 50, "range": (0, 1)}
    poisson = StateSpaceDecoder(observation="poisson", temperature=1.0, **kw).fit(train, "x")
    default = StateSpaceDecoder(**kw).fit(train, "x")
    assert _cov90(poisson, test) < 0.8
    assert default.temperature_ > 1.0
    assert 0.85 <= _cov90(default, test) <= 0.95
    rec = default.calibration_
    assert rec["criterion"] == "coverage"  # the smallest temperature whose inner coverage reaches 0.9
    reach = rec["temperatures"][rec["coverage"][0.9] >= 0.9]
    assert rec["temperature"] == reach.min()


def test_temperature_is_chosen_without_the_test_fold():
    """Changing a test block's counts changes nothing fitted in its fold (and does change a fold
    that trains on it, so the check can fail)."""
    train, test = _overdispersed(7, n_time=3000, r=2.0, jitter=0.04)
    rng = np.random.default_rng(0)
    data = SpikeData.from_counts(np.r_[train.counts, test.counts], bin_size=0.1,
                                 covariates=np.r_[train.covariates, test.covariates], feature_names=["x"])
    altered = data.counts.copy()
    block = slice(0, 1000)  # the test block of fold 0 of 3
    altered[block] = rng.poisson(3.0, altered[block].shape)
    data2 = SpikeData.from_counts(altered, bin_size=0.1, covariates=data.covariates, feature_names=["x"])

    def fitted(d, k):
        tr, _ = kfold(d, 3)[k]
        dec = NaiveBayesDecoder(bins=20, range=(0, 1)).fit(tr, "x")
        return dec.temperature_, dec.calibration_["log_score"], dec.dispersion_

    a, b = fitted(data, 0), fitted(data2, 0)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    c, d = fitted(data, 1), fitted(data2, 1)  # trains on the altered block
    assert not np.array_equal(c[1], d[1])
    # the inner folds split the training bins only, with the gap
    for tr, _, te in inner_folds(900, 3, 5):
        assert not set(tr) & set(te)
        assert np.min(np.abs(tr[:, None] - te[None, :])) > 5
        assert tr.size + te.size + 10 >= 900 - 10


def test_calibration_warns_at_the_edge_and_rejects_bad_options():
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, 1500)
    data = SpikeData.from_counts(rng.poisson(1.0, (1500, 4)), bin_size=0.1, covariates=x, feature_names=["x"])
    dec = NaiveBayesDecoder(bins=10, range=(0, 1))
    with pytest.warns(RuntimeWarning, match="largest candidate"):  # spikes that say nothing about x
        calibrate_temperature(dec, data, x, temperatures=(1.0, 2.0, 4.0), criterion="log_score")
    with pytest.raises(ValueError, match="criterion"):
        calibrate_temperature(dec, data, x, criterion="brier")
    with pytest.raises(ValueError, match="too short to calibrate"):
        calibrate_temperature(dec, data._take(np.arange(12)), x[:12])


# --------------------------------------------------------------- real place cells
@pytest.mark.slow
def test_real_place_cells_default_covers_and_poisson_does_not(shared_data):
    """2-D place cells (49 cells, 200-ms bins), 2 contiguous folds, a 12 x 12 grid."""
    from bayesneuro.datasets import load_place_cells_2d

    data = load_place_cells_2d(shared_data / "place_cells_2d_barbieri_animal1")
    data = SpikeData.from_counts(data.counts, bin_size=data.bin_size, covariates=data.covariates,
                                 feature_names=["x", "y"])
    kw = {"bins": (12, 12), "range": [(-35, 35), (-35, 35)]}
    cov_p, cov_d = [], []
    for tr, te in kfold(data, 2):
        keep = np.asarray(tr.neuron_ids)[tr.counts.sum(axis=0) > 0]
        tr, te = tr.select_neurons(keep), te.select_neurons(keep)
        p = NaiveBayesDecoder(observation="poisson", temperature=1.0, **kw).fit(tr, ["x", "y"])
        d = NaiveBayesDecoder(**kw).fit(tr, ["x", "y"])
        cov_p.append(_cov90(p, te))
        cov_d.append(_cov90(d, te))
    assert max(cov_p) < 0.8, cov_p
    assert 0.85 <= np.mean(cov_d) <= 0.95, cov_d


# --------------------------------------------------------------- state space: tempering the posterior
def _dense_smoothed(ll, A, init):
    """Forward-backward with a dense transition, in plain numpy (normalised each bin)."""
    n, G = ll.shape
    lik = np.exp(ll - ll.max(axis=1, keepdims=True))
    f = np.empty((n, G))
    b = np.ones((n, G))
    p = init
    for t in range(n):
        u = lik[t] * p
        f[t] = u / u.sum()
        p = f[t] @ A
    for t in range(n - 2, -1, -1):
        v = A @ (lik[t + 1] * b[t + 1])
        b[t] = v / v.sum()
    g = f * b
    with np.errstate(divide="ignore"):
        return np.log(g / g.sum(axis=1, keepdims=True))


def test_state_space_tempering_equals_dense_brute_force():
    """tempering="posterior": the smoothed posterior to the power 1/T, renormalised (MAP kept);
    tempering="likelihood": forward-backward of the likelihood to the power 1/T."""
    from bayesneuro.decoders.state_space import dense_transition

    rng = np.random.default_rng(11)
    x = _walk(rng, 900, 0.03, 0.0, 1.0, 0.5)
    counts = rng.poisson(_fields(x, 6, 0, 1, 0.12, 8.0, 0.3) * 0.1)
    data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    train, test, _ = data.split(fractions=(0.7, 0.3))
    kw = {"bins": 15, "range": (0, 1), "observation": "poisson", "sigma_walk": 0.05}
    ref = StateSpaceDecoder(temperature=1.0, **kw).fit(train, "x")
    mu = np.maximum(ref.tuning_.rates, RATE_FLOOR) * 0.1
    vis = ref.tuning_.visited
    ll = np.where(vis, test.counts @ np.log(np.where(vis, mu, 1.0)) - np.where(vis, mu, 0.0).sum(axis=0), -np.inf)
    A = dense_transition(ref.grid_, ref.sigma_walk_, vis)
    init = np.exp(ref.log_prior_) * vis
    init /= init.sum()
    temp = 3.0
    smoothed = _dense_smoothed(ll, A, init)
    with np.errstate(invalid="ignore"):
        post = smoothed / temp - special.logsumexp(smoothed / temp, axis=1, keepdims=True)
    lik = _dense_smoothed(ll / temp, A, init)
    np.testing.assert_allclose(ref.decode(test).log_prob, smoothed, atol=1e-8, rtol=0)
    for tempering, want in (("posterior", post), ("likelihood", lik)):
        dec = StateSpaceDecoder(temperature=temp, tempering=tempering, **kw).fit(train, "x")
        got = dec.decode(test).log_prob
        np.testing.assert_allclose(np.exp(got), np.exp(want), atol=1e-10, rtol=0)
        # what the calibration scores at this temperature is what decode returns
        (_, lp), = dec._tempered_log_posteriors(test, [temp])
        np.testing.assert_allclose(np.exp(lp), np.exp(got), atol=1e-12, rtol=0)
    assert not np.allclose(post, lik, atol=1e-3)  # the two options differ
    np.testing.assert_array_equal(np.argmax(post, axis=1), np.argmax(smoothed, axis=1))
    with pytest.raises(ValueError, match="tempering must be"):
        StateSpaceDecoder(tempering="covariance")


@pytest.mark.slow
def test_real_track_state_space_default_tempers_the_posterior_and_covers(shared_data):
    """Linear track, 3 contiguous folds, 50 bins: tempering the likelihood (the old default)
    leaves the random-walk prior too confident, tempering the smoothed posterior covers."""
    from bayesneuro.datasets import load_linear_track

    data = load_linear_track(shared_data / "place_cells_linear_track_nelpy")
    v = data.covariates[:, 0]
    kw = {"bins": 50, "range": (float(v.min()) - 1, float(v.max()) + 1)}
    cov_l, cov_p = [], []
    for tr, te in kfold(data, 3):
        keep = np.asarray(tr.neuron_ids)[tr.counts.sum(axis=0) > 0]
        tr, te = tr.select_neurons(keep), te.select_neurons(keep)
        lik = StateSpaceDecoder(tempering="likelihood", **kw).fit(tr, "position")
        cov_l.append(_cov90(lik, te))
        cov_p.append(_cov90(StateSpaceDecoder(**kw).fit(tr, "position"), te))
    assert np.mean(cov_l) < 0.8, (cov_l, cov_p)
    assert 0.85 <= np.mean(cov_p) <= 0.95, cov_p


def _brute_heldout_ll(counts, x, grid, sigma_cells, bin_size, fresh_counts, fresh_x):
    from bayesneuro.decoders.tuning import estimate_tuning_curves

    tc = estimate_tuning_curves(counts, x, grid, bin_size, sigma=sigma_cells * grid.widths)
    cells = grid.locate(fresh_x)
    rates = np.nan_to_num(tc.rates[:, cells].T, nan=0.0)
    mu = np.maximum(rates, 1e-3) * bin_size
    return float(np.sum(fresh_counts * np.log(mu) - mu))


@pytest.mark.parametrize("width,n_bins,expect", [(0.06, 1500, "wide"), (0.03, 40000, "narrow")])
def test_histogram_sigma_auto_follows_the_data(width, n_bins, expect):
    """sigma='auto' smooths broad fields seen in few bins more than one cell, and sharp fields
    seen in many bins less; its choice scores at least as well as the fixed one-cell default on
    fresh data from the same fields (which the choice never saw)."""
    from bayesneuro.decoders import Grid
    from bayesneuro.decoders.tuning import estimate_tuning_curves

    rng = np.random.default_rng(3)
    grid = Grid.regular(bins=50, range=(0, 1))
    centres = np.linspace(0.1, 0.9, 6)

    def draw(n):
        x = rng.uniform(0, 1, size=(n, 1))
        lam = 0.05 + 0.6 * np.exp(-0.5 * ((x - centres) / width) ** 2)
        return rng.poisson(lam), x

    counts, x = draw(n_bins)
    tc = estimate_tuning_curves(counts, x, grid, 0.1, sigma="auto")
    chosen = float(tc.sigma[0] / grid.widths[0])
    assert chosen > 1.0 if expect == "wide" else chosen < 1.0
    fresh_counts, fresh_x = draw(20000)
    auto = _brute_heldout_ll(counts, x, grid, chosen, 0.1, fresh_counts, fresh_x)
    default = _brute_heldout_ll(counts, x, grid, 1.0, 0.1, fresh_counts, fresh_x)
    assert auto > default
