"""Tests of the point-process adaptive filter decoder (Eden et al. 2004)."""

import copy
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from bayesneuro.data import SpikeData
from bayesneuro.decoders.point_process import (
    PointProcessDecoder,
    PoissonTuning,
    point_process_update,
)

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
    return PointProcessDecoder(temperature=1.0).fit(train, "x")  # Poisson data: the untempered filter


@pytest.fixture(scope="module")
def test_set(fields):
    return simulate(3000, 2, fields)


# --------------------------------------------------------------------------- (1) one update


def _log_post(s, m_p, P_p, counts, tun, temperature=1.0):
    """Log prior N(m_p, P_p) plus the Poisson log likelihood of one bin over T, in numpy."""
    b0, lin, M = (np.asarray(a, dtype=np.float64) for a in tun)
    d = s - m_p
    eta = b0 + lin @ s + np.einsum("nij,i,j->n", M, s, s) + np.log(DT)
    return -0.5 * d @ np.linalg.solve(P_p, d) + np.sum(counts * eta - np.exp(eta)) / temperature


def _numeric_gaussian(m_p, P_p, counts, tun, h=1e-4, method="eden", temperature=1.0):
    """Eden: Gaussian from central finite differences at the prior mean (one Newton step);
    Laplace: the mode by scipy's optimiser and the finite-difference curvature there."""
    from scipy.optimize import minimize

    d = m_p.size
    f = lambda s: _log_post(s, m_p, P_p, counts, tun, temperature)
    at = m_p
    if method == "laplace":
        at = minimize(lambda s: -f(s), m_p, method="BFGS", options={"gtol": 1e-11}).x
    E = np.eye(d) * h
    g = np.array([(f(at + E[i]) - f(at - E[i])) / (2 * h) for i in range(d)])
    Hm = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            Hm[i, j] = (f(at + E[i] + E[j]) - f(at + E[i] - E[j]) - f(at - E[i] + E[j])
                        + f(at - E[i] - E[j])) / (4 * h * h)
    # precondition: the likelihood information is positive definite, so no projection applies
    assert np.linalg.eigvalsh(-Hm - np.linalg.inv(P_p)).min() > 0
    P_f = np.linalg.inv(-Hm)
    if method == "laplace":
        assert np.abs(g).max() < 1e-5 * max(1.0, np.abs(np.linalg.solve(P_p, at - m_p)).max())
        return at, P_f
    return m_p + P_f @ g, P_f


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("method", ["eden", "laplace"])
def test_single_update_equals_finite_difference_gaussian_1d(fitted, test_set, method, temperature):
    data, x = test_set
    tun = fitted.tuning_
    for t in (10, 500, 1234):
        m_p, P_p = np.array([x[t] + 0.03]), np.array([[0.05**2]])
        n = np.asarray(data.counts[t], dtype=np.float64)
        m_f, P_f = point_process_update(tun, m_p, P_p, n, DT, method=method, temperature=temperature)
        m_ref, P_ref = _numeric_gaussian(m_p, P_p, n, tun, method=method, temperature=temperature)
        np.testing.assert_allclose(np.asarray(m_f), m_ref, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(np.asarray(P_f), P_ref, rtol=1e-5)
        assert P_f[0, 0] < P_p[0, 0]


@pytest.mark.parametrize("method", ["eden", "laplace"])
def test_single_update_equals_finite_difference_gaussian_2d(method):
    rng = np.random.default_rng(3)
    n = 12
    lin = rng.normal(0, 1.0, (n, 2))
    M = np.stack([-np.diag(rng.uniform(0.5, 2.0, 2)) for _ in range(n)])
    M[:, 0, 1] = M[:, 1, 0] = 0.2
    tun = PoissonTuning(jnp.asarray(rng.normal(3.0, 0.3, n)), jnp.asarray(lin), jnp.asarray(M))
    m_p, P_p = np.array([0.3, -0.2]), np.array([[0.2, 0.05], [0.05, 0.1]])
    counts = rng.poisson(4.0, n).astype(float)
    m_f, P_f = point_process_update(tun, m_p, P_p, counts, DT, method=method)
    m_ref, P_ref = _numeric_gaussian(m_p, P_p, counts, tun, method=method)
    np.testing.assert_allclose(np.asarray(m_f), m_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(P_f), P_ref, rtol=1e-5, atol=1e-10)


def test_laplace_update_cannot_diverge_where_eden_does():
    # a prediction far outside a narrow field: Eden's one step at the prediction overshoots by
    # orders of magnitude; the posterior-mode update moves into the field and no further
    tun = PoissonTuning(jnp.array([np.log(30.0)]), jnp.array([[0.0]]), jnp.array([[[-0.5 / 0.05**2]]]))
    m_p, P_p, n = np.array([0.4]), np.array([[1.0]]), np.array([3.0])
    m_l, P_l = point_process_update(tun, m_p, P_p, n, DT, method="laplace")
    m_ref, P_ref = _numeric_gaussian(m_p, P_p, n, tun, method="laplace")
    np.testing.assert_allclose(np.asarray(m_l), m_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(P_l), P_ref, rtol=1e-5)
    assert abs(float(m_l[0])) < 0.1


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
    data, _ = simulate(1500, 4, fields)
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
    np.testing.assert_allclose(post.mean, np.concatenate([p.mean for p in pieces]), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(post.cov, np.concatenate([p.cov for p in pieces]), rtol=1e-8, atol=1e-14)
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
    from bayesneuro.decoders.point_process import (
        _coef_to_tuning,
        _tuning_to_coef,
        _unstandardise,
        tuning_features,
    )

    fields = _fields()
    with pytest.warns(UserWarning, match="7 neurons have no spikes"):  # dropped here
        data, x = simulate(2000, 9, fields)
    keep = np.flatnonzero(np.asarray(data.counts).sum(axis=0) > 0)
    data = data.select_neurons(data.neuron_ids[keep])
    a = PointProcessDecoder(temperature=1.0).fit(data, x)
    b = PointProcessDecoder(temperature=1.0).fit(data, 100 * x)
    np.testing.assert_allclose(b.rates(100 * x[:50]), a.rates(x[:50]), rtol=1e-6)
    np.testing.assert_allclose(b.decode(data).mean[:, 0], 100 * a.decode(data).mean[:, 0], rtol=1e-5, atol=1e-6)
    # the change of variables used by fit, in 2-D with cross terms
    rng = np.random.default_rng(1)
    b0, lin, G = rng.normal(size=3), rng.normal(size=(3, 2)), rng.normal(size=(3, 2, 2))
    M = G + G.transpose(0, 2, 1)
    mean, sd = rng.normal(size=2), rng.uniform(0.5, 2, 2)
    s = rng.normal(size=(4, 2))
    u = (s - mean) / sd
    f = lambda b_, l_, m_, z: b_ + z @ l_.T + np.einsum("nij,ti,tj->tn", m_, z, z)
    np.testing.assert_allclose(f(*_unstandardise(b0, lin, M, mean, sd), s), f(b0, lin, M, u), atol=1e-12)
    c = _tuning_to_coef(b0, lin, M, "quadratic")
    np.testing.assert_allclose(c[:, 0] + tuning_features(u) @ c[:, 1:].T, f(b0, lin, M, u), atol=1e-12)
    np.testing.assert_allclose(_coef_to_tuning(c, 2, "quadratic")[2], M, atol=1e-14)


# --------------------------------------------------------------------------- (6) issue 20: robust on real cells


def place_cells_2d(shared_data, bin_size=0.2):
    """The shared 2-D arena place cells (Barbieri et al. 2004, animal 1) in 200-ms bins, position in cm.

    The 37 cells with at least 400 spikes and a mean rate below 8 Hz (the two >8 Hz cells are
    likely interneurons), as in issue 20.
    """
    import scipy.io

    m = scipy.io.loadmat(shared_data / "place_cells_2d_barbieri_animal1" / "PlaceCellDataAnimal1.mat")
    t = m["time"].ravel()
    edges = np.arange(t[0], t[-1], bin_size)
    centres = 0.5 * (edges[1:] + edges[:-1])
    counts = np.stack([np.histogram(np.ravel(n["spikeTimes"][0, 0]), edges)[0] for n in m["neuron"].ravel()], axis=1)
    rate = counts.sum(axis=0) / (t[-1] - t[0])
    keep = (counts.sum(axis=0) >= 400) & (rate < 8.0)
    pos = np.c_[np.interp(centres, t, 35.0 * m["x"].ravel()), np.interp(centres, t, 35.0 * m["y"].ravel())]
    return SpikeData.from_counts(counts[:, keep], bin_size=bin_size, covariates=pos, feature_names=["x", "y"])


@pytest.fixture(scope="module")
def real_2d(shared_data):
    return place_cells_2d(shared_data)


@pytest.mark.slow
def test_real_2d_place_cells_finite_sane_and_negative_definite(real_2d):
    """Issue 20: on the 2-D place cells (37 cells, 200-ms bins, 5 contiguous folds) no fold is NaN
    or diverges, errors are those of naive Bayes on the same folds, every field is a bump."""
    from bayesneuro.decoders import NaiveBayesDecoder
    from bayesneuro.decoders.evaluation import kfold

    assert real_2d.n_neuron == 37
    for train, test in kfold(real_2d, 5):
        pp = PointProcessDecoder(temperature=1.0).fit(train, ["x", "y"])
        M = np.asarray(pp.tuning_.quadratic)
        assert np.linalg.eigvalsh(M).max() < 0, "a fitted quadratic field is not negative definite"
        post = pp.decode(test)
        assert np.isfinite(post.mean).all() and np.isfinite(post.cov).all()
        assert np.linalg.eigvalsh(post.cov).min() > 1e-2  # no collapse to sd 1e-15 cm
        ev = pp.evaluate(test, ["x", "y"])
        nb = NaiveBayesDecoder(bins=20, range=[(-36.0, 36.0), (-36.0, 36.0)]).fit(train, ["x", "y"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # naive Bayes: a few truths in unvisited cells
            nb_err = nb.evaluate(test, ["x", "y"])["median_error"]
        assert np.isfinite(ev["mean_log_density"])
        assert ev["median_error"] < 1.5 * nb_err, (ev["median_error"], nb_err)


@pytest.mark.slow
def test_real_2d_place_cells_default_coverage(real_2d):
    """The default (nested temperature) 90% regions cover 0.85-0.95 of held-out bins pooled over folds."""
    from bayesneuro.decoders.evaluation import kfold

    inside, inside_t1 = [], []
    for train, test in kfold(real_2d, 5):
        pp = PointProcessDecoder().fit(train, ["x", "y"])
        assert pp.temperature_ > 1
        truth = np.asarray(test.covariates)
        inside.append(pp.decode(test).covers(truth, 0.9))
        inside_t1.append(pp.decode(test, temperature=1.0).covers(truth, 0.9))
    assert np.mean(np.concatenate(inside_t1)) < 0.6  # untempered: far too sure
    assert 0.85 <= np.mean(np.concatenate(inside)) <= 0.95


def test_non_finite_posterior_raises_with_cause(fitted, test_set):
    data, _ = test_set
    dec = copy.copy(fitted)
    dec.tuning_ = dec.tuning_._replace(intercept=dec.tuning_.intercept.at[0].set(jnp.nan))
    with pytest.raises(FloatingPointError, match="non-finite"):
        dec.decode(data)


@pytest.mark.slow
def test_fields_are_negative_definite_where_the_free_fit_is_not():
    # half the cells have monotone (log-linear) tuning along x: their unconstrained quadratic
    # fit is a saddle or a bowl; the constrained fit is a very wide bump
    rng = np.random.default_rng(11)
    T = 4000
    s = np.cumsum(rng.normal(0, 0.05, (T, 2)), axis=0)
    s = s - s.mean(axis=0)
    centres = rng.uniform(-1, 1, (10, 2))
    log_rate = np.concatenate([np.log(20.0) - np.sum((s[:, None] - centres) ** 2, axis=2) / (2 * 0.3**2),
                               np.log(5.0) + 0.8 * s[:, :1] * rng.normal(size=10) + 0.3 * s[:, 1:] ** 2], axis=1)
    counts = rng.poisson(np.exp(log_rate) * DT)
    data = SpikeData.from_counts(counts, bin_size=DT, covariates=s, feature_names=["x", "y"])
    dec = PointProcessDecoder(temperature=1.0).fit(data, ["x", "y"])
    assert np.linalg.eigvalsh(np.asarray(dec.tuning_.quadratic)).max() < 0
    assert dec.converged_.all()
    # the bumps are unchanged by the constraint (they are interior optima)
    free = PointProcessDecoder(temperature=1.0, constrain=False).fit(data, ["x", "y"])
    np.testing.assert_allclose(dec.coef_[:10], free.coef_[:10], rtol=1e-6, atol=1e-8)
    assert np.linalg.eigvalsh(np.asarray(free.tuning_.quadratic)[10:]).max() > 0  # the test has power


def _overdispersed(n_time, seed, fields, sd=1.0):
    """1-D place cells with slow gain fluctuations per neuron: rate x exp(z - sd**2 / 2), z an AR(1) of
    sd `sd` and time constant 50 bins (over-dispersed and correlated in time, as real cells are)."""
    _, x = simulate(n_time, seed, fields)
    rng = np.random.default_rng(seed + 100)
    mu = _rates(x, *fields) * DT
    a = 0.98
    e = rng.normal(0.0, np.sqrt(1 - a * a), mu.shape)
    z = np.empty_like(mu)
    z[0] = rng.normal(0.0, 1.0, mu.shape[1])
    for t in range(1, n_time):
        z[t] = a * z[t - 1] + e[t]
    counts = rng.poisson(mu * np.exp(sd * z - sd**2 / 2))
    return SpikeData.from_counts(counts, bin_size=DT, covariates=x, feature_names=["x"]), x


@pytest.mark.slow
def test_default_temperature_restores_coverage_of_overdispersed_counts(fields):
    train, _ = _overdispersed(6000, 21, fields)
    test, _ = _overdispersed(3000, 22, fields)
    t1 = PointProcessDecoder(temperature=1.0).fit(train, "x")
    auto = PointProcessDecoder().fit(train, "x")
    cov1 = t1.evaluate(test, "x")["coverage"][0.9]
    cov = auto.evaluate(test, "x")["coverage"][0.9]
    assert cov1 < 0.8, cov1  # the untempered Poisson filter is over-confident
    assert 0.85 <= cov <= 0.95, (cov, auto.temperature_)
    assert auto.temperature_ > 1.2
    # and on Poisson data the default stays near 1 and keeps the coverage
    pois = PointProcessDecoder().fit(simulate(6000, 23, fields)[0], "x")
    assert pois.temperature_ < auto.temperature_


@pytest.mark.slow
def test_temperature_is_nested_in_the_training_data(fields):
    """The inner calibration uses contiguous folds of the training data only: one inner fold
    recomputed by hand gives the recorded numbers, and the test data never enter."""
    from bayesneuro.decoders.kalman import inner_folds
    from bayesneuro.estimator import clone

    train, _ = _overdispersed(3000, 31, fields)
    active = np.asarray(train.counts).reshape(3, 1000, -1).sum(axis=1).min(axis=0) > 0  # spikes in every inner block
    train = train.select_neurons(train.neuron_ids[active])
    dec = PointProcessDecoder().fit(train, "x")
    rec = dec.calibration_
    assert rec["criterion"] in ("coverage_90", "log_score")
    temps = rec["temperatures"]
    assert dec.temperature_ in temps
    inner = inner_folds(train, rec["n_folds"], rec["gap"])
    k = 1
    sub = clone(dec).set_params(temperature=1.0).fit(inner[k][0], "x")
    done = np.flatnonzero(~np.isnan(rec["coverage_90"][0]))
    assert 0 in done and done.size >= 2
    for j in done:
        post = sub.decode(inner[k][1], temperature=float(temps[j]))
        truth = np.asarray(inner[k][1].covariates)
        np.testing.assert_allclose(rec["coverage_90"][k, j], np.mean(post.covers(truth, 0.9)), atol=1e-12)
        np.testing.assert_allclose(rec["log_score"][k, j], np.mean(post.log_density(truth)), rtol=1e-9)
    # the choice is the recorded criterion's best temperature
    # the first crossing of 0.9 among the decoded candidates, or the candidate just below it
    assert rec["criterion"] == "coverage_90"
    pooled = rec["coverage_90"].T @ rec["n_bins"] / rec["n_bins"].sum()
    j = int(np.flatnonzero(pooled >= 0.9)[0])
    assert dec.temperature_ in temps[max(j - 1, 0):j + 1]
    assert j == 0 or pooled[j - 1] < 0.9


def test_temperature_argument():
    with pytest.raises(ValueError, match="temperature"):
        PointProcessDecoder(temperature=0.5)
    with pytest.raises(ValueError, match="temperature"):
        PointProcessDecoder(temperature="best")
    with pytest.raises(ValueError, match="update"):
        PointProcessDecoder(update="newton")
    with pytest.raises(ValueError, match="tempering"):
        PointProcessDecoder(tempering="prior")


def test_tempering_modes(fitted, test_set):
    data, _ = test_set
    base = fitted.decode(data)
    hot = fitted.decode(data, temperature=4.0)  # tempering="covariance": the T=1 mean, covariance x T
    np.testing.assert_array_equal(hot.mean, base.mean)
    np.testing.assert_allclose(hot.cov, 4.0 * base.cov, rtol=1e-14)
    lik = copy.copy(fitted)
    lik.tempering = "likelihood"  # the likelihood to the power 1/T inside every update
    np.testing.assert_allclose(lik.decode(data, temperature=1.0).mean, base.mean, rtol=1e-12)
    warm = lik.decode(data, temperature=4.0)
    assert np.median(warm.cov[:, 0, 0] / base.cov[:, 0, 0]) > 1.5
    assert np.abs(warm.mean - base.mean).max() > 1e-4
