"""RegressionDecoder: closed-form and sklearn references, lags, calibration, methods, bad input."""

import functools
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from bayesneuro import SpikeData
from bayesneuro.decoders.lags import valid_bins
from bayesneuro.decoders.regression import RegressionDecoder


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("BAYESNEURO_PROGRESS", "0")


def _linear_data(seed, n_time=400, n_neuron=4, n_dim=2, noise=0.5, trial_ids=None):
    """Poisson counts and a target linear in them, with Gaussian noise of sd `noise`."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.uniform(1.0, 4.0, n_neuron), size=(n_time, n_neuron))
    W = rng.normal(size=(n_neuron, n_dim))
    y = counts @ W + 1.0 + noise * rng.normal(size=(n_time, n_dim))
    data = SpikeData.from_counts(counts, bin_size=0.05, trial_ids=trial_ids)
    return data, y


def _logistic_data(seed, n_time, n_neuron=4, n_class=3, scale=1.0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n_time, n_neuron))
    Z = (counts - 2.0) / np.sqrt(2.0)
    logits = scale * Z @ rng.normal(size=(n_neuron, n_class))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.uniform(size=(n_time, 1))).argmax(1)
    return SpikeData.from_counts(counts, bin_size=0.05), labels, p


def _standardized(dec, data, y=None):
    Z, idx = dec._features(data)
    if y is None:
        return Z, idx
    return Z, idx, (y[idx] - dec.target_mean_) / dec.target_sd_


# ---------------------------------------------------------------- (1) gaussian: closed form
@pytest.mark.slow  # ~6 s
def test_gaussian_map_and_laplace_equal_conjugate_solution():
    data, y = _linear_data(0)
    noise, s, sb = 0.5, 0.8, 3.0
    dec = RegressionDecoder(prior_scale=s, intercept_scale=sb, noise_sd=noise)
    dec.fit(data, y, method="laplace", key=1, num_samples=4000)
    Z, idx, ys = _standardized(dec, data, y)
    sig = noise / dec.target_sd_  # noise sd on the standardised scale, per output
    Xa = np.column_stack([np.ones(len(Z)), Z])
    prior_prec = np.diag([1 / sb**2] + [1 / s**2] * Z.shape[1])

    # MAP (method override) = posterior mean of the conjugate model = ridge with alpha sigma^2/s^2
    mp = RegressionDecoder(prior_scale=s, intercept_scale=sb, noise_sd=noise).fit(
        data, y, key=1, method="map", tol=1e-10
    )
    laplace_cov = dec.result_.info["cov"]
    order = dec.result_.info["unravel"](np.arange(laplace_cov.shape[0]))
    post = dec.decode(data)
    for k in range(y.shape[1]):
        A = Xa.T @ Xa / sig[k] ** 2 + prior_prec
        cov = np.linalg.inv(A)
        mean = cov @ Xa.T @ ys[:, k] / sig[k] ** 2
        np.testing.assert_allclose(mp.coef()["bias"][k], mean[0], atol=1e-7)
        np.testing.assert_allclose(mp.coef()["weights"][:, k], mean[1:], atol=1e-7)
        # Laplace covariance is exact here (Gaussian posterior, no constrained sites)
        pos = np.concatenate([[np.asarray(order["bias"])[k]], np.asarray(order["weights"])[:, k]]).astype(int)
        np.testing.assert_allclose(laplace_cov[np.ix_(pos, pos)], cov, rtol=1e-6, atol=1e-12)
        # decoded predictive variance (mixture of 4000 draws) ~ x' cov x + sigma^2, in target units
        var = (np.einsum("tf,fg,tg->t", Xa, cov, Xa) + sig[k] ** 2) * dec.target_sd_[k] ** 2
        np.testing.assert_allclose(post.cov[:, k, k], var, rtol=0.01)

    # sklearn Ridge with an (almost) unpenalised intercept, single noise level
    wide = RegressionDecoder(prior_scale=s, intercept_scale=1e6, noise_sd=noise)
    wide.fit(data, y, key=0, method="map", tol=1e-10)
    for k in range(y.shape[1]):
        ridge = Ridge(alpha=sig[k] ** 2 / s**2, tol=1e-12).fit(Z, ys[:, k])
        np.testing.assert_allclose(wide.coef()["weights"][:, k], ridge.coef_, atol=1e-6)
        np.testing.assert_allclose(wide.coef()["bias"][k], ridge.intercept_, atol=1e-6)
    # MAP decode: the point prediction in target units, predictive variance = noise^2
    post = mp.decode(data)
    pred = (Xa @ np.vstack([mp.coef()["bias"], mp.coef()["weights"]])) * dec.target_sd_ + dec.target_mean_
    np.testing.assert_allclose(post.mean, pred, atol=1e-9)
    np.testing.assert_allclose(post.cov, np.broadcast_to(np.diag([noise**2] * 2), post.cov.shape), atol=1e-12)


# ---------------------------------------------------------------- (2) classifiers vs sklearn
@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
def test_classifier_map_equals_sklearn_logistic_regression(family):
    data, labels, _ = _logistic_data(1, 500)
    names = np.array(["a", "b", "c"])[labels]
    if family == "bernoulli":
        names = np.where(labels == 0, "a", "b")
    s = 0.7
    dec = RegressionDecoder(family=family, prior_scale=s, intercept_scale=1e4)
    dec.fit(data, names, method="map", key=0, tol=1e-10)
    assert dec._discrete and dec.classes_.tolist() == sorted(set(names.tolist()))
    Z, _ = dec._features(data)
    sk = LogisticRegression(C=s**2, tol=1e-12, max_iter=10_000).fit(Z, names)
    post = dec.decode(data)
    np.testing.assert_allclose(post.prob, sk.predict_proba(Z), atol=1e-5)
    w = dec.coef()["weights"]
    if family == "bernoulli":
        np.testing.assert_allclose(w, sk.coef_[0], atol=1e-5)
        np.testing.assert_allclose(dec.coef()["bias"], sk.intercept_[0], atol=1e-5)
    else:
        np.testing.assert_allclose(w, sk.coef_.T, atol=1e-5)
    assert post.point.tolist() == sk.predict(Z).tolist()
    scores = dec.evaluate(data, names)
    assert 0 < scores["accuracy"] <= 1 and scores["n_bins"] == data.n_time


# ---------------------------------------------------------------- (3) lags and segments
@pytest.mark.slow  # ~6 s
def test_target_at_lag_two_is_decoded_only_with_lag_two():
    rng = np.random.default_rng(3)
    n, N = 1500, 5
    counts = rng.poisson(3.0, size=(n, N))
    y = np.zeros(n)
    y[:-2] = counts[2:] @ rng.normal(size=N)  # depends on the spikes two bins later
    y += 0.3 * rng.normal(size=n)
    data = SpikeData.from_counts(counts, bin_size=0.02, covariates=y, feature_names=["stim"])
    train, test, _ = data.split(fractions=(0.5, 0.5))
    r2 = {}
    for lags in ([0, 1], [0, 1, 2]):
        dec = RegressionDecoder(lags=lags).fit(train, "stim", method="map", key=0)
        r2[len(lags)] = dec.evaluate(test, "stim")["r2"][0]
    assert r2[3] > 0.9
    assert r2[2] < 0.1


def test_lag_windows_never_cross_trials():
    trial_ids = np.repeat([0, 1, 2], [6, 5, 7])
    rng = np.random.default_rng(4)
    counts = rng.poisson(2.0, size=(18, 3))
    counts[:, 1] = 0  # a silent neuron: constant features
    with pytest.warns(UserWarning, match="neuron 'b' has no spikes"):
        data = SpikeData.from_counts(counts, bin_size=0.1, trial_ids=trial_ids, neuron_ids=["a", "b", "c"])
    y = rng.normal(size=(18, 2))
    lags = [-1, 0, 2]
    # the noise sd is fixed: 9 bins and 10 coefficients fit exactly, so a learnt sigma has no mode
    dec = RegressionDecoder(lags=lags, transform="sqrt", noise_sd=1.0).fit(data, y, method="map", key=0)
    expected = np.flatnonzero(valid_bins(data.segment_ids, lags))
    np.testing.assert_array_equal(dec.train_index_, expected)
    # the first bin of each trial (lag -1) and the last two (lag +2) are dropped
    starts, ends = [0, 6, 11], [5, 10, 17]
    for a, b in zip(starts, ends):
        assert a not in expected and b not in expected and b - 1 not in expected
    assert len(expected) == 18 - 3 * 3
    post = dec.decode(data)
    np.testing.assert_array_equal(post.index, expected)
    np.testing.assert_allclose(post.time, data.bin_centers[expected])
    raw, idx = dec._raw_features(data)
    raw = raw.reshape(len(idx), len(lags), 3)
    for i, t in enumerate(idx):
        for j, lag in enumerate(lags):
            assert trial_ids[t + lag] == trial_ids[t]
            np.testing.assert_allclose(raw[i, j], np.sqrt(counts[t + lag]))
    assert dec.feature_names_[:4] == ["na_lag-1", "nb_lag-1", "nc_lag-1", "na_lag0"]
    # constant features (the silent neuron) get sd 1: no NaN anywhere
    np.testing.assert_array_equal(dec.feature_sd_[[1, 4, 7]], 1.0)
    assert np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.cov)) and post.names == ("s0", "s1")
    idata = dec.to_inference_data()  # MAP: a point fit, no posterior
    assert "posterior" not in idata.groups() and idata.log_likelihood["target"].dims == ("time",)
    assert idata.point_estimate["weights"].dims == ("feature", "output")
    assert idata.point_estimate["weights"].coords["feature"].values.tolist() == dec.feature_names_
    assert idata.observed_data["target"].dims == ("time", "output")
    assert "RegressionDecoder(family='gaussian', lags=[-1, 0, 2]" in repr(dec)
    # blocks of a split are segments too: nothing is read across the gap between blocks
    long = SpikeData.from_counts(rng.poisson(2.0, size=(200, 3)), bin_size=0.1, neuron_ids=["a", "b", "c"])
    split = long.split(fractions=(0.5, 0.5), n_blocks=4)
    seg = split.train.segment_ids
    kept = dec.decode(split.train).index
    assert np.all(seg[kept - 1] == seg[kept]) and np.all(seg[kept + 2] == seg[kept])
    assert len(kept) == split.train.n_time - 3 * len(np.unique(seg))


# ---------------------------------------------------------------- (4) calibration
@functools.lru_cache(maxsize=None)
def _calibration_data():
    """Train / test halves of linear-Gaussian data (one shape, so the tests share compilations)."""
    data, y = _linear_data(5, n_time=3000, n_neuron=6, n_dim=1, noise=1.5)
    with_y = SpikeData.from_counts(data.counts, bin_size=data.bin_size, covariates=y, feature_names=["y"])
    train, test, _ = with_y.split(fractions=(0.5, 0.5))
    return train, test


def test_gaussian_intervals_are_calibrated():
    train, test = _calibration_data()
    dec = RegressionDecoder().fit(train, "y", method="laplace", key=2, num_samples=2000)
    cov = dec.evaluate(test, "y")["coverage"]
    n = test.n_time
    for level, c in cov.items():
        tol = 3.5 * np.sqrt(level * (1 - level) / n) + 0.005
        assert abs(c - level) < tol, (level, c)


def test_categorical_probabilities_are_calibrated():
    data, labels, p_true = _logistic_data(6, 3500, n_neuron=4, n_class=3, scale=1.0)
    train = SpikeData.from_counts(data.counts[:500], bin_size=0.05)
    test = SpikeData.from_counts(data.counts[500:], bin_size=0.05)
    dec = RegressionDecoder(family="categorical").fit(train, labels[:500], method="laplace", key=3, num_samples=500)
    prob = dec.decode(test).prob
    truth = labels[500:]
    onehot = np.eye(3)[truth]
    # reliability: in bins of predicted probability, the observed frequency matches
    edges = np.linspace(0, 1, 6)
    pf, of = prob.ravel(), onehot.ravel()
    which = np.clip(np.digitize(pf, edges) - 1, 0, 4)
    for b in range(5):
        m = which == b
        if m.sum() < 50:
            continue
        pm = pf[m].mean()
        tol = 4 * np.sqrt(pm * (1 - pm) / m.sum()) + 0.02
        assert abs(of[m].mean() - pm) < tol, (b, of[m].mean(), pm)
    # and close to the true probabilities
    assert np.mean(np.abs(prob - p_true[500:])) < 0.05


# ---------------------------------------------------------------- (5) NUTS and SVI
@pytest.mark.slow  # ~8 s: SVI
def test_svi_agrees_with_laplace_gaussian():
    data, _ = _calibration_data()
    lap = RegressionDecoder().fit(data, "y", method="laplace", key=0, num_samples=2000)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="svi: the ELBO was still improving")  # short run
        svi = RegressionDecoder().fit(
            data, "y", key=2, method="svi", num_steps=1000, learning_rate=0.05, num_samples=1000
        )
    assert svi.result_.method == "svi"
    ref, draws = lap.result_.flat_samples(), svi.result_.flat_samples()
    sd_ref = ref["weights"].std(0)
    np.testing.assert_array_less(np.abs(draws["weights"].mean(0) - ref["weights"].mean(0)), 0.5 * sd_ref)
    np.testing.assert_allclose(draws["weights"].std(0), sd_ref, rtol=0.35)
    np.testing.assert_allclose(draws["sigma"].mean(), ref["sigma"].mean(), rtol=0.05)
    post, post_ref = svi.decode(data), lap.decode(data)
    np.testing.assert_allclose(post.mean, post_ref.mean, atol=0.05 * post_ref.sd.mean())
    np.testing.assert_allclose(post.sd, post_ref.sd, rtol=0.1)


@pytest.mark.slow  # ~8 s: NUTS
def test_nuts_agrees_with_laplace_categorical():
    """NUTS on the softmax model (symmetric parametrisation, so a prior-identified direction)."""
    data, labels, _ = _logistic_data(8, 500, n_neuron=4, n_class=3)
    fits = {}
    with warnings.catch_warnings():
        warnings.filterwarnings(  # small-run sampler diagnostics
            "ignore", r"(R-hat > |effective sample size below |[0-9]+ divergent transitions)", UserWarning)
        for method, opts in [
            ("map", {}),
            ("laplace", {"num_samples": 500}),
            ("nuts", {"num_warmup": 150, "num_samples": 200, "num_chains": 1}),
        ]:
            fits[method] = RegressionDecoder(family="categorical").fit(data, labels, method=method, key=0, **opts)
    probs = {m: d.decode(data).prob for m, d in fits.items()}
    for method in ("map", "nuts"):
        assert np.max(np.abs(probs[method] - probs["laplace"])) < 0.05, method
    ref, draws = fits["laplace"].result_.flat_samples(), fits["nuts"].result_.flat_samples()
    sd_ref = ref["weights"].std(0)
    np.testing.assert_array_less(np.abs(draws["weights"].mean(0) - ref["weights"].mean(0)), 0.5 * sd_ref)
    np.testing.assert_allclose(draws["weights"].std(0), sd_ref, rtol=0.4)
    idata = fits["nuts"].to_inference_data()
    w = idata.posterior["weights"]
    assert w.dims == ("chain", "draw", "feature", "class")
    assert w.coords["class"].values.tolist() == [0, 1, 2]
    assert w.coords["feature"].values.tolist() == ["n0_lag0", "n1_lag0", "n2_lag0", "n3_lag0"]
    assert idata.observed_data["target"].dims == ("time",)


# ---------------------------------------------------------------- (6) bad input
def test_bad_input_raises_clear_errors():
    data, y = _linear_data(10, n_time=60, n_neuron=3, n_dim=1)
    dec = RegressionDecoder(lags=[-3, 0])
    with pytest.raises(RuntimeError, match="not fitted"):
        dec.decode(data)
    dec.fit(data, y, method="map", key=0)
    other = SpikeData.from_counts(data.counts, bin_size=0.05, neuron_ids=[0, 1, 7])
    with pytest.raises(ValueError, match=r"missing 1 training neuron\(s\) \[2\].*not seen in training \[7\]"):
        dec.decode(other)
    with pytest.raises(ValueError, match="bins of"):
        dec.decode(SpikeData.from_counts(data.counts, bin_size=0.1))
    # NaN in the target, as an array or as a covariate
    y_nan = y.copy()
    y_nan[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RegressionDecoder().fit(data, y_nan, method="map", key=0)
    try:
        with_cov = SpikeData.from_counts(data.counts, bin_size=0.05, covariates=y_nan, feature_names=["x"])
    except ValueError:
        pass  # the data refuse NaN covariates themselves
    else:
        with pytest.raises(ValueError, match="NaN"):
            RegressionDecoder().fit(with_cov, "x", method="map", key=0)
    # too short for the lags, at fit and at decode
    with pytest.raises(ValueError, match="lag window"):
        RegressionDecoder(lags=[0, 70]).fit(data, y, method="map", key=0)
    with pytest.raises(ValueError, match="lag window"):
        dec.decode(SpikeData.from_counts(data.counts[:3], bin_size=0.05))
    # classes: unseen labels in the test target, one class, bernoulli with three
    labels = np.tile([0, 1], 30)
    clf = RegressionDecoder(family="bernoulli").fit(data, labels, method="map", key=0)
    with pytest.raises(ValueError, match="not trained on"):
        clf.score(data, np.tile([0, 2], 30))
    with pytest.raises(ValueError, match="single class"):
        RegressionDecoder(family="categorical").fit(data, np.zeros(60, int), method="map", key=0)
    with pytest.raises(ValueError, match="exactly two classes"):
        RegressionDecoder(family="bernoulli").fit(data, np.arange(60) % 3, method="map", key=0)
    with pytest.raises(ValueError, match="NaN"):
        RegressionDecoder(family="categorical").fit(data, np.where(labels == 0, np.nan, 1.0), method="map", key=0)
    # constructor and options
    with pytest.raises(ValueError, match="family"):
        RegressionDecoder(family="poisson")
    with pytest.raises(ValueError, match="prior_scale"):
        RegressionDecoder(prior_scale=0)
    with pytest.raises(ValueError, match="noise_sd"):
        RegressionDecoder(family="categorical", noise_sd=1.0)
    with pytest.raises(ValueError, match="unknown option"):
        RegressionDecoder().fit(data, y, method="map", key=0, num_steps=10)
    with pytest.raises(TypeError, match="key"):  # laplace draws from the posterior: it needs a key
        RegressionDecoder().fit(data, y, method="laplace", key=None)
