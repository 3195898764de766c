"""Tests of the point-process adaptive filter decoder (Eden et al. 2004)."""

import copy

import jax.numpy as jnp
import numpy as np
import pytest

from bayesneuro.data import SpikeData
from bayesneuro.decoders.point_process import PoissonTuning, PointProcessDecoder, point_process_update

DT = 0.02
N_NEURON = 30
STEP_SD = 0.02


def _fields(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.sort(rng.uniform(0.05, 0.95, N_NEURON))
    widths = rng.uniform(0.07, 0.14, N_NEURON)
    peaks = rng.uniform(15.0, 40.0, N_NEURON)
    return centres, widths, peaks


def _rates(x, centres, widths, peaks):
    return peaks * np.exp(-((x[:, None] - centres) ** 2) / (2 * widths**2))


def simulate(n_time, seed, fields, n_trial=1):
    """Reflected 1-D random walk on [0, 1] and Poisson counts from Gaussian place fields."""
    rng = np.random.default_rng(seed)
    x = np.empty(n_time)
    per = n_time // n_trial
    for t in range(n_time):
        if t % per == 0:
            x[t] = rng.uniform(0.1, 0.9)
        else:
            v = x[t - 1] + rng.normal(0, STEP_SD)
            x[t] = -v if v < 0 else (2 - v if v > 1 else v)
    counts = rng.poisson(_rates(x, *fields) * DT)
    trial_ids = None if n_trial == 1 else np.repeat(np.arange(n_trial), per)
    return SpikeData.from_counts(counts, bin_size=DT, covariates=x, feature_names=["x"], trial_ids=trial_ids), x


@pytest.fixture(scope="module")
def fields():
    return _fields()


@pytest.fixture(scope="module")
def fitted(fields):
    train, _ = simulate(6000, 1, fields)
    return PointProcessDecoder().fit(train, "x")


@pytest.fixture(scope="module")
def test_set(fields):
    return simulate(3000, 2, fields)


# --------------------------------------------------------------------------- (1) one update


def _log_post(s, m_p, P_p, counts, tun):
    """Log prior N(m_p, P_p) plus the Poisson log likelihood of one bin, in numpy."""
    b0, lin, M = (np.asarray(a, dtype=np.float64) for a in tun)
    d = s - m_p
    eta = b0 + lin @ s + np.einsum("nij,i,j->n", M, s, s) + np.log(DT)
    return -0.5 * d @ np.linalg.solve(P_p, d) + np.sum(counts * eta - np.exp(eta))


def _numeric_gaussian(m_p, P_p, counts, tun, h=1e-4):
    """Laplace-style Gaussian at the prior mean from central finite differences."""
    d = m_p.size
    f = lambda s: _log_post(s, m_p, P_p, counts, tun)  # noqa: E731
    E = np.eye(d) * h
    g = np.array([(f(m_p + E[i]) - f(m_p - E[i])) / (2 * h) for i in range(d)])
    Hm = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            Hm[i, j] = (f(m_p + E[i] + E[j]) - f(m_p + E[i] - E[j]) - f(m_p - E[i] + E[j])
                        + f(m_p - E[i] - E[j])) / (4 * h * h)
    # precondition: the likelihood information is positive definite, so no projection applies
    assert np.linalg.eigvalsh(-Hm - np.linalg.inv(P_p)).min() > 0
    P_f = np.linalg.inv(-Hm)
    return m_p + P_f @ g, P_f


def test_single_update_equals_finite_difference_gaussian_1d(fitted, test_set):
    data, x = test_set
    tun = fitted.tuning_
    for t in (10, 500, 1234):
        m_p, P_p = np.array([x[t] + 0.03]), np.array([[0.05**2]])
        n = np.asarray(data.counts[t], dtype=np.float64)
        m_f, P_f = point_process_update(tun, m_p, P_p, n, DT)
        m_ref, P_ref = _numeric_gaussian(m_p, P_p, n, tun)
        np.testing.assert_allclose(np.asarray(m_f), m_ref, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(np.asarray(P_f), P_ref, rtol=1e-5)
        assert P_f[0, 0] < P_p[0, 0]


def test_single_update_equals_finite_difference_gaussian_2d():
    rng = np.random.default_rng(3)
    n = 12
    lin = rng.normal(0, 1.0, (n, 2))
    M = np.stack([-np.diag(rng.uniform(0.5, 2.0, 2)) for _ in range(n)])
    M[:, 0, 1] = M[:, 1, 0] = 0.2
    tun = PoissonTuning(jnp.asarray(rng.normal(3.0, 0.3, n)), jnp.asarray(lin), jnp.asarray(M))
    m_p, P_p = np.array([0.3, -0.2]), np.array([[0.2, 0.05], [0.05, 0.1]])
    counts = rng.poisson(4.0, n).astype(float)
    m_f, P_f = point_process_update(tun, m_p, P_p, counts, DT)
    m_ref, P_ref = _numeric_gaussian(m_p, P_p, counts, tun)
    np.testing.assert_allclose(np.asarray(m_f), m_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(P_f), P_ref, rtol=1e-5, atol=1e-10)


def test_negative_curvature_is_dropped():
    # at the peak of a place field g = 0 and the curvature term is (λΔ - n) * 2M: with no spikes
    # and a high rate it is negative; the update must not raise the variance above the prediction
    tun = PoissonTuning(jnp.array([np.log(200.0)]), jnp.array([[0.0]]), jnp.array([[[-50.0]]]))
    m_f, P_f = point_process_update(tun, np.zeros(1), np.eye(1), np.zeros(1), 0.05)
    np.testing.assert_allclose(np.asarray(P_f), np.eye(1))
    np.testing.assert_allclose(np.asarray(m_f), np.zeros(1), atol=1e-12)
    # and a positive curvature (more spikes than expected) is kept exactly
    m_f, P_f = point_process_update(tun, np.zeros(1), np.eye(1), np.array([30.0]), 0.05)
    lam_dt = 200.0 * 0.05
    np.testing.assert_allclose(np.asarray(P_f)[0, 0], 1 / (1 + (30 - lam_dt) * 100.0), rtol=1e-10)


# --------------------------------------------------------------------------- (2) tracking


@pytest.mark.parametrize("smooth", [False, True])
def test_tracks_truth_with_reasonable_coverage(fitted, test_set, smooth):
    dec = copy.copy(fitted)
    dec.smooth = smooth
    data, x = test_set
    post = dec.decode(data)
    err = np.abs(post.mean[:, 0] - x)
    assert np.median(err) < 0.03  # the range is 1
    assert np.mean(err) < 0.05
    cov = dec.evaluate(data, "x")["coverage"]
    # Gaussian approximation of a non-Gaussian posterior: nominal 0.9, accept 0.8-0.97
    assert 0.8 <= cov[0.9] <= 0.97, cov
    assert 0.4 <= cov[0.5] <= 0.6, cov


# --------------------------------------------------------------------------- (3) recovery


def test_recovers_place_field_parameters(fitted, fields):
    centres, widths, peaks = fields
    b0, lin, M = (np.asarray(a, dtype=np.float64) for a in fitted.tuning_)
    var = -1 / (2 * M[:, 0, 0])
    mu = lin[:, 0] * var
    peak = np.exp(b0 + mu**2 / (2 * var))
    inner = (centres > 0.15) & (centres < 0.85)  # fields cut by the walls of the track are looser
    assert inner.sum() > 20
    np.testing.assert_allclose(mu[inner], centres[inner], atol=0.015)
    np.testing.assert_allclose(mu, centres, atol=0.04)
    np.testing.assert_allclose(np.sqrt(var)[inner], widths[inner], rtol=0.1)
    np.testing.assert_allclose(peak[inner], peaks[inner], rtol=0.15)
    assert np.all(fitted.grad_norm_ < 1e-4)  # the Newton fit converged (gradients of sums over 6000 bins)
    # the random-walk state model: A ≈ 1, b ≈ 0, W ≈ step variance
    assert abs(fitted.dynamics_[0, 0] - 1) < 0.01
    np.testing.assert_allclose(fitted.dynamics_cov_[0, 0], STEP_SD**2, rtol=0.1)
    # the fitted rates agree with the true fields
    grid = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(fitted.rates(grid), _rates(grid, *fields), rtol=0.25, atol=1.0)


# --------------------------------------------------------------------------- (4) grid filter


def grid_filter(dec, counts, grid):
    """Exact forward filter on a dense grid, with the decoder's own tuning and dynamics."""
    A, b, W = dec.dynamics_[0, 0], dec.dynamics_bias_[0], dec.dynamics_cov_[0, 0]
    m0, P0 = dec.initial_mean_[0], dec.initial_cov_[0, 0]
    log_lam = np.log(dec.rates(grid) * DT)  # (G, neuron)
    lam = np.exp(log_lam).sum(axis=1)
    K = np.exp(-((grid[:, None] - (A * grid[None, :] + b)) ** 2) / (2 * W))  # K[to, from]
    K /= K.sum(axis=0, keepdims=True)
    p = np.exp(-((grid - m0) ** 2) / (2 * P0))
    p /= p.sum()
    means, sds = np.empty(counts.shape[0]), np.empty(counts.shape[0])
    for t in range(counts.shape[0]):
        if t:
            p = K @ p
        lp = np.log(np.maximum(p, 1e-300)) + counts[t] @ log_lam.T - lam
        p = np.exp(lp - lp.max())
        p /= p.sum()
        means[t] = p @ grid
        sds[t] = np.sqrt(p @ (grid - means[t]) ** 2)
    return means, sds


def test_agrees_with_exact_grid_filter(fitted, fields):
    dec = copy.copy(fitted)
    dec.smooth = False
    data, x = simulate(1500, 4, fields)
    post = dec.decode(data)
    grid = np.linspace(-0.3, 1.3, 401)
    g_mean, g_sd = grid_filter(dec, np.asarray(data.counts, dtype=np.float64), grid)
    burn = slice(20, None)  # the first bins start from the broad marginal prior: multimodal
    z = np.abs(post.mean[burn, 0] - g_mean[burn]) / g_sd[burn]
    assert np.median(z) < 0.1
    assert np.quantile(z, 0.95) < 0.4
    ratio = post.sd[burn, 0] / g_sd[burn]
    assert 0.9 < np.median(ratio) < 1.1


# --------------------------------------------------------------------------- segments, linear tuning


@pytest.mark.filterwarnings("ignore:neuron 2 has no spikes:UserWarning")  # 600 bins of seed 5: one silent cell
def test_segments_restart_and_match_separate_decodes(fitted, fields):
    data, _ = simulate(600, 5, fields, n_trial=3)
    post = fitted.decode(data)
    pieces = [fitted.decode(tr) for tr in data.iter_trials()]
    np.testing.assert_allclose(post.mean, np.concatenate([p.mean for p in pieces]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.cov, np.concatenate([p.cov for p in pieces]), rtol=1e-9, atol=1e-14)
    np.testing.assert_array_equal(post.index, np.arange(600))
    joined = SpikeData.from_counts(data.counts, bin_size=DT)
    one = fitted.decode(joined)
    assert np.abs(one.cov[200, 0, 0] - post.cov[200, 0, 0]) > 1e-6  # a fresh start at trial 1


def test_linear_tuning_2d_velocity():
    rng = np.random.default_rng(8)
    T, n = 4000, 25
    A = np.array([[0.98, 0.0], [0.0, 0.97]])
    s = np.zeros((T, 2))
    for t in range(1, T):
        s[t] = A @ s[t - 1] + rng.normal(0, 0.2, 2)
    k = rng.normal(0, 0.6, (n, 2))
    b0 = np.log(rng.uniform(10, 30, n))
    counts = rng.poisson(np.exp(b0 + s @ k.T) * DT)
    data = SpikeData.from_counts(counts, bin_size=DT, covariates=s, feature_names=["vx", "vy"])
    train, test = data.time_slice(0, 60.0), data.time_slice(60.0, T * DT)
    dec = PointProcessDecoder(tuning="linear").fit(train, ["vx", "vy"])
    np.testing.assert_allclose(np.asarray(dec.tuning_.linear), k, atol=0.1)
    np.testing.assert_allclose(np.asarray(dec.tuning_.intercept), b0, atol=0.1)
    assert np.all(np.asarray(dec.tuning_.quadratic) == 0)
    np.testing.assert_allclose(dec.dynamics_, A, atol=0.03)
    score = dec.evaluate(test, ["vx", "vy"])
    assert score["r2"].min() > 0.7
    assert 0.8 <= score["coverage"][0.9] <= 0.97


# --------------------------------------------------------------------------- (5) bad input


def test_bad_inputs(fitted, fields):
    data, x = simulate(3000, 6, fields)
    with pytest.raises(ValueError, match="neurons the decoder was trained on"):
        fitted.decode(data.select_neurons(data.neuron_ids[1:]))
    shuffled = fitted.decode(data.select_neurons(data.neuron_ids[::-1]))
    np.testing.assert_allclose(shuffled.mean, fitted.decode(data).mean, rtol=1e-10)
    with pytest.raises(ValueError, match="rows but the data have"):
        PointProcessDecoder().fit(data, x[:-1])
    bad = x.copy()
    bad[5] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        PointProcessDecoder().fit(data, bad)
    with pytest.raises(ValueError, match="constant"):
        PointProcessDecoder().fit(data, np.full(3000, 0.3))
    silent = np.asarray(data.counts).copy()
    silent[:, 0] = 0
    with pytest.warns(UserWarning, match="neuron 0 has no spikes"):
        silent = SpikeData.from_counts(silent, bin_size=DT)
    with pytest.raises(ValueError, match="never spike"):
        PointProcessDecoder().fit(silent, x)
    with pytest.raises(ValueError, match="too few consecutive bins"):
        PointProcessDecoder().fit(data.time_slice(0, 2 * DT), x[:2])
    with pytest.raises(ValueError, match="tuning"):
        PointProcessDecoder(tuning="cubic")
    with pytest.raises(ValueError, match="prior_scale"):
        PointProcessDecoder(prior_scale=-1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        PointProcessDecoder().decode(data)
    with pytest.raises(ValueError, match="values must have shape"):
        fitted.rates(np.zeros((3, 2)))


def test_prior_is_unit_free_and_2d_quadratic_round_trip():
    # rescaling the target (e.g. m -> cm) rescales the fitted tuning exactly: the prior acts on
    # the standardised target, so the decoded posterior is the same up to the change of units
    from bayesneuro.decoders.point_process import _coef_to_tuning, _tuning_to_coef, _unstandardise, tuning_features

    fields = _fields()
    with pytest.warns(UserWarning, match="7 neurons have no spikes"):  # dropped here
        data, x = simulate(2000, 9, fields)
    keep = np.flatnonzero(np.asarray(data.counts).sum(axis=0) > 0)
    data = data.select_neurons(data.neuron_ids[keep])
    a = PointProcessDecoder().fit(data, x)
    b = PointProcessDecoder().fit(data, 100 * x)
    np.testing.assert_allclose(b.rates(100 * x[:50]), a.rates(x[:50]), rtol=1e-6)
    np.testing.assert_allclose(b.decode(data).mean[:, 0], 100 * a.decode(data).mean[:, 0], rtol=1e-5, atol=1e-6)
    # the change of variables used by fit, in 2-D with cross terms
    rng = np.random.default_rng(1)
    b0, lin, G = rng.normal(size=3), rng.normal(size=(3, 2)), rng.normal(size=(3, 2, 2))
    M = G + G.transpose(0, 2, 1)
    mean, sd = rng.normal(size=2), rng.uniform(0.5, 2, 2)
    s = rng.normal(size=(4, 2))
    u = (s - mean) / sd
    f = lambda b_, l_, m_, z: b_ + z @ l_.T + np.einsum("nij,ti,tj->tn", m_, z, z)  # noqa: E731
    np.testing.assert_allclose(f(*_unstandardise(b0, lin, M, mean, sd), s), f(b0, lin, M, u), atol=1e-12)
    c = _tuning_to_coef(b0, lin, M, "quadratic")
    np.testing.assert_allclose(c[:, 0] + tuning_features(u) @ c[:, 1:].T, f(b0, lin, M, u), atol=1e-12)
    np.testing.assert_allclose(_coef_to_tuning(c, 2, "quadratic")[2], M, atol=1e-14)
