"""Tests of bayesneuro.density.dimensionality against numpy, scipy, sklearn and simulation."""

import numpy as np
import pytest
import scipy.io
from scipy.linalg import subspace_angles
from scipy.ndimage import gaussian_filter1d
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFA

from bayesneuro import SpikeData
from bayesneuro.density.dimensionality import (
    Dimensionality,
    FactorAnalysis,
    _fold_assignment,
    _moments,
    _pr_of_cov,
    _unit_stats,
    cross_validate_dimensionality,
    participation_ratio,
    pca,
    percent_shared_variance,
    shared_dimensionality,
    similarity_matrix,
)


def simulate_fa(n_time=2000, n_neuron=12, n_factor=3, seed=1, mean=5.0):
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(n_neuron, n_factor))
    psi = rng.uniform(0.5, 1.5, n_neuron)
    X = rng.normal(size=(n_time, n_factor)) @ L.T + rng.normal(size=(n_time, n_neuron)) * np.sqrt(psi) + mean
    return X, L, psi


@pytest.fixture(scope="module")
def fa_data():
    return simulate_fa()


@pytest.fixture(scope="module")
def fa3(fa_data):
    return FactorAnalysis(3).fit(fa_data[0], progress=False)


# -- PCA and participation ratio ------------------------------------------------------------------


def test_pca_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.poisson(3.0, size=(300, 6)) + rng.poisson(2.0, size=(300, 1))
    res = pca(X)
    sk = PCA().fit(X)
    np.testing.assert_allclose(res.eigenvalues, sk.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(res.explained_ratio, sk.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(res.components.T @ sk.components_.T), np.eye(6), atol=1e-8)
    # sqrt transform and standardisation = PCA of the correlation matrix of sqrt counts
    res2 = pca(SpikeData(X, bin_size=0.1), transform="sqrt", standardize=True)
    ref = np.sort(np.linalg.eigvalsh(np.corrcoef(np.sqrt(X), rowvar=False)))[::-1]
    np.testing.assert_allclose(res2.eigenvalues, ref, rtol=1e-10)


def test_participation_ratio_closed_forms():
    assert participation_ratio(np.full(7, 2.5)) == pytest.approx(7.0, rel=1e-12)
    assert participation_ratio([4.0, 0.0, 0.0]) == pytest.approx(1.0, rel=1e-12)
    assert participation_ratio([3.0, 1.0]) == pytest.approx(16 / 10, rel=1e-12)
    cov = np.cov(np.random.default_rng(0).normal(size=(50, 5)), rowvar=False)
    assert float(_pr_of_cov(cov)) == pytest.approx(participation_ratio(np.linalg.eigvalsh(cov)), rel=1e-10)


def test_shared_dimensionality_and_percent_shared_closed_forms():
    # eigenvalues of L L^T are 9, 1 (90% / 100%): 95% needs both; threshold 0.9 needs one
    L = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert shared_dimensionality(L) == 2
    assert shared_dimensionality(L, threshold=0.9) == 1
    assert shared_dimensionality(np.zeros((3, 0))) == 0
    np.testing.assert_allclose(percent_shared_variance(L, [1.0, 1.0, 2.0]), [90.0, 50.0, 0.0])


# -- factor analysis ---------------------------------------------------------------------------------


def test_fa_matches_sklearn(fa_data, fa3):
    X = fa_data[0]
    sk = SkFA(3, tol=1e-12, max_iter=100000, svd_method="lapack").fit(X)
    assert fa3.converged_
    # the same maximum of the likelihood: agree to 1e-8 nats per bin (observed 1e-10)
    assert fa3.score(X) == pytest.approx(sk.score(X), abs=1e-8)
    np.testing.assert_allclose(fa3.covariance_, sk.get_covariance(), atol=1e-4)


def test_fa_log_likelihood_and_transform_vs_dense(fa_data, fa3):
    X = fa_data[0][:300]
    C = fa3.covariance_
    ref = multivariate_normal(fa3.mean_, C).logpdf(X).sum()
    assert fa3.log_likelihood(X).sum() == pytest.approx(ref, rel=1e-10)
    beta = fa3.loadings_.T @ np.linalg.inv(C)
    np.testing.assert_allclose(fa3.transform(X), (X - fa3.mean_) @ beta.T, atol=1e-10)


def test_fa_recovers_simulated_model():
    X, L, psi = simulate_fa(n_time=20000, seed=2)
    fa = FactorAnalysis(3).fit(X, progress=False)
    # shared covariance: sampling error ~ 1/sqrt(20000) ~ 0.7%; allow 5%
    shared = L @ L.T
    assert np.linalg.norm(fa.loadings_ @ fa.loadings_.T - shared) / np.linalg.norm(shared) < 0.05
    np.testing.assert_allclose(fa.observation_var_, psi, rtol=0.15)
    # a random start reaches the same optimum
    fr = FactorAnalysis(3).fit(X, key=3, init="random", progress=False)
    assert fr.score(X) == pytest.approx(fa.score(X), abs=1e-6)


def _batch_cov(batch=4, n=9, d=3, T=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, T, d)) @ rng.normal(size=(d, n)) + rng.normal(size=(batch, T, n)) * rng.uniform(
        0.3, 1.5, n)
    x = x - x.mean(axis=1, keepdims=True)
    return np.einsum("bti,btj->bij", x, x) / T


@pytest.mark.parametrize("d", [1, 3, 6])
def test_profile_gradient_and_hessian_vs_finite_differences(d):
    """The profile objective's analytic gradient and Hessian (eigenvalue perturbation theory) against
    central differences, at points where some of the d largest eigenvalues of Psi^-1/2 S Psi^-1/2
    exceed 1 and some do not (both branches of phi)."""
    from bayesneuro.density.dimensionality import _profile_terms

    S = _batch_cov(3, seed=d)
    rng = np.random.default_rng(10 + d)
    u = np.log(np.diagonal(S, axis1=1, axis2=2)) + rng.normal(scale=0.4, size=(3, 9))
    F, g, H, th, _ = _profile_terms(u, S, d)
    assert (th[:, :d] > 1).any()
    # F is -2 x the mean log-likelihood - n log(2 pi) at the maximising loadings (closed form)
    from bayesneuro.density.dimensionality import _fa_log_likelihood, _profile_loadings

    L = _profile_loadings(u, *_profile_terms(u, S, d)[3:], d)
    np.testing.assert_allclose(-2 * _fa_log_likelihood(L, np.exp(u), S) - 9 * np.log(2 * np.pi), F, rtol=1e-12)
    e = 1e-5
    g_fd = np.stack([(_profile_terms(u + e * np.eye(9)[i], S, d)[0] - _profile_terms(u - e * np.eye(9)[i], S, d)[0])
                     / (2 * e) for i in range(9)], axis=-1)
    H_fd = np.stack([(_profile_terms(u + e * np.eye(9)[i], S, d)[1] - _profile_terms(u - e * np.eye(9)[i], S, d)[1])
                     / (2 * e) for i in range(9)], axis=-1)
    np.testing.assert_allclose(g, g_fd, rtol=0, atol=1e-8)
    np.testing.assert_allclose(H, H_fd, rtol=0, atol=1e-7)


def test_newton_reaches_the_em_maximum():
    """Newton on the profile likelihood and EM run to convergence (plain FA EM, 200,000 steps in the
    jitted EM) reach the same maximum from the same start: log-likelihood to 1e-10 nats per sample,
    covariance to 1e-6; over-sized models (more latents than simulated) included, where EM's
    default stopping rule leaves it short and Newton must not be below it."""
    from bayesneuro.density.dimensionality import fit_fa_covariance

    S = _batch_cov(4, seed=3)
    for d in (2, 3):
        st, ll, n_iter, conv = fit_fa_covariance(S, d, progress=False)
        st_em, ll_em, _, _ = fit_fa_covariance(S, d, method="em", max_iter=200000, tol=1e-14, progress=False,
                                                     warn=False)
        assert conv and n_iter < 40
        np.testing.assert_allclose(ll, ll_em, rtol=0, atol=1e-10)
        cov = st.loadings @ np.swapaxes(st.loadings, 1, 2) + np.apply_along_axis(np.diag, 1, st.observation_var)
        cov_em = (np.asarray(st_em.loadings) @ np.swapaxes(np.asarray(st_em.loadings), 1, 2)
                  + np.apply_along_axis(np.diag, 1, np.asarray(st_em.observation_var)))
        np.testing.assert_allclose(cov, cov_em, rtol=0, atol=1e-6)
    for d in (4, 5, 7):  # over-sized: EM stops (its own rule) short of Newton's maximum, by up to 2.5e-3
        _, ll, _, conv = fit_fa_covariance(S, d, progress=False)
        _, ll_em, _, _ = fit_fa_covariance(S, d, method="em", progress=False, warn=False)
        assert conv and np.all(ll >= ll_em - 1e-9 * np.abs(ll))  # Newton's tol
    # from the (d-1)-latent maximum, the d-latent fit can only gain
    prev, ll_prev, _, _ = fit_fa_covariance(S, 4, progress=False)
    _, ll_warm, _, _ = fit_fa_covariance(S, 5, init=(0.0, prev.observation_var), progress=False)
    assert np.all(ll_warm >= ll_prev - 1e-12)


def test_newton_heywood_case_sits_on_the_floor():
    """A neuron that is (almost) a copy of the latent has no private variance: the maximum puts its
    observation variance on the floor (a Heywood case), where the projected Newton must stop with
    the gradient pointing out of the feasible set (KKT), at EM's answer."""
    from bayesneuro.density.dimensionality import _profile_terms, fit_fa_covariance

    rng = np.random.default_rng(7)
    z = rng.normal(size=(3000, 1))
    x = z @ rng.uniform(0.5, 1.5, (1, 6)) + rng.normal(size=(3000, 6))
    x[:, 0] = z[:, 0] + 1e-3 * rng.normal(size=3000)
    x = x - x.mean(axis=0)
    S = (x.T @ x / 3000)[None]
    st, ll, _, conv = fit_fa_covariance(S, 1, progress=False)
    floor = 0.01 * S[0, 0, 0]
    assert conv and st.observation_var[0, 0] == pytest.approx(floor, rel=1e-12)
    _, g, _, _, _ = _profile_terms(np.log(st.observation_var), S, 1, hess=False)
    assert g[0, 0] > 0 and np.abs(g[0, 1:]).max() < 1e-6
    _, ll_em, _, _ = fit_fa_covariance(S, 1, method="em", max_iter=100000, tol=1e-14, progress=False, warn=False)
    np.testing.assert_allclose(ll, ll_em, rtol=0, atol=1e-9)


def test_auto_method_is_newton_up_to_64_neurons():
    rng = np.random.default_rng(8)
    for n, expected in ((64, "newton"), (65, "em")):
        x = rng.normal(size=(400, 1)) @ rng.normal(size=(1, n)) + rng.normal(size=(400, n))
        assert FactorAnalysis(1).fit(x, progress=False, max_iter=300).method_ == expected


def test_newton_warns_at_its_cap():
    from bayesneuro.density.dimensionality import fit_fa_covariance
    from bayesneuro.diagnostics import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="stopped at max_iter=1 Newton"):
        _, _, n_iter, conv = fit_fa_covariance(_batch_cov(2, seed=1), 3, max_iter=1, progress=False)
    assert n_iter == 1 and not conv
    with pytest.raises(ValueError, match="method must be"):
        fit_fa_covariance(_batch_cov(1), 1, method="lbfgs")


def test_fa_zero_factors_is_independent_gaussian(fa_data):
    X = fa_data[0]
    fa0 = FactorAnalysis(0).fit(X, progress=False)
    np.testing.assert_allclose(fa0.observation_var_, X.var(axis=0), rtol=1e-12)
    assert fa0.shared_dimensionality() == 0
    assert fa0.transform(X).shape == (X.shape[0], 0)


# -- cross-validation ------------------------------------------------------------------------------


@pytest.mark.slow  # ~7 s: cross-validated FA over n_latents
def test_cv_recovers_three_factors(fa_data):
    cv = cross_validate_dimensionality(fa_data[0], max_dim=5, key=0, progress=False)
    assert cv.n_dim == 3
    assert abs(cv.n_dim_1se - 3) <= 1
    assert cv.fold_scores.shape == (5, 6)
    np.testing.assert_allclose(cv.mean, cv.fold_scores.mean(axis=0))


@pytest.mark.slow  # ~4 s: cross-validated FA over n_latents
def test_cv_negative_control_independent_neurons():
    X = np.random.default_rng(5).normal(size=(1500, 10)) * np.linspace(1, 2, 10)
    cv = cross_validate_dimensionality(X, max_dim=3, key=0, progress=False)
    assert cv.n_dim_1se == 0
    assert cv.n_dim <= 1


def test_cv_folds_by_trial_match_sklearn():
    X, _, _ = simulate_fa(n_time=1200, n_neuron=8, n_factor=2, seed=4)
    trial_ids = np.repeat(np.arange(12), 100)
    data = SpikeData(np.round(X - X.min()).astype(int), bin_size=0.1, trial_ids=trial_ids)
    with pytest.warns(UserWarning, match="largest candidate"):  # max_dim = the true 2
        cv = cross_validate_dimensionality(data, max_dim=2, n_folds=4, key=7, progress=False)
    import jax

    from bayesneuro.infer._model import as_key

    fold = _fold_assignment(12, 4, jax.random.split(as_key(7))[0], shuffle=True)
    counts = data.counts.astype(float)
    test = fold[trial_ids] == 1
    sk = SkFA(2, tol=1e-12, max_iter=100000, svd_method="lapack").fit(counts[~test])
    assert cv.fold_scores[1, 2] == pytest.approx(sk.score(counts[test]), abs=1e-6)


# -- Dimensionality estimator ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dim_fit():
    X, _, _ = simulate_fa(n_time=1200, n_neuron=8, n_factor=2, seed=6)
    data = SpikeData(np.round(X - X.min()).astype(int), bin_size=0.1, neuron_ids=np.arange(10, 18),
                     trial_ids=np.repeat(np.arange(24), 50))
    return data, Dimensionality(max_dim=3).fit(data, key=0, n_boot=40, progress=False)


@pytest.mark.slow  # ~7 s with the module fixture: Dimensionality bootstrap
def test_dimensionality_estimates(dim_fit):
    data, est = dim_fit
    e = est.estimates_
    assert e["n_dim"] == 2
    cov = np.cov(data.counts, rowvar=False)
    assert e["participation_ratio"] == pytest.approx(participation_ratio(np.linalg.eigvalsh(cov)), rel=1e-10)
    np.testing.assert_allclose(e["percent_shared_variance"], est.fa_.percent_shared_variance())
    assert e["shared_dimensionality"] in (1, 2)


@pytest.mark.slow  # shares the ~7 s Dimensionality bootstrap
def test_dimensionality_posterior_statistics_contract(dim_fit):
    data, est = dim_fit
    stats = est.posterior_statistics(key=1, num_samples=30)
    assert set(stats) == {"participation_ratio", "n_dim", "shared_dimensionality", "percent_shared_variance",
                          "mean_percent_shared_variance"}
    for v in stats.values():
        assert v.dims[0] == "draw" and v.sizes["draw"] == 30
    assert stats["percent_shared_variance"].dims == ("draw", "neuron")
    np.testing.assert_array_equal(stats["percent_shared_variance"].neuron.values, data.neuron_ids)
    again = est.posterior_statistics(key=1, num_samples=30)
    np.testing.assert_array_equal(again["participation_ratio"].values, stats["participation_ratio"].values)
    # the bootstrap distribution is centred near the estimate (within 4 bootstrap SDs)
    pr = est.bootstrap_["participation_ratio"].values
    assert abs(pr.mean() - est.estimates_["participation_ratio"]) < 4 * pr.std()
    assert est.to_inference_data().posterior.sizes["draw"] == 40


def test_bootstrap_moments_match_resampled_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    unit = np.repeat(np.arange(6), 10)
    n, s, o = _unit_stats(X, unit)
    pick = np.array([0, 0, 3, 5, 5, 5])
    w = np.bincount(pick, minlength=6)[None].astype(float)
    mean, S, _ = _moments(w, n, s, o)
    Xr = np.concatenate([X[unit == u] for u in pick])
    np.testing.assert_allclose(mean[0], Xr.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(S[0], np.cov(Xr, rowvar=False, ddof=0), atol=1e-12)


@pytest.mark.slow  # ~10 s: bootstrap with cross-validation
def test_dimensionality_bootstrap_cv_and_blocks():
    X, _, _ = simulate_fa(n_time=600, n_neuron=6, n_factor=1, seed=8)
    est = Dimensionality(max_dim=2).fit(X, key=0, n_boot=8, n_blocks=10, bootstrap_cv=True, progress=False)
    ds = est.bootstrap_["n_dim"].values
    assert ds.shape == (8,) and np.all((ds >= 0) & (ds <= 2))
    assert np.mean(ds == 1) >= 0.5


def _weak_third_factor(seed, n_time=400, n_neuron=6):
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(n_neuron, 3))
    L[:, 2] *= 0.4  # a third factor near the detection limit: the choice of 2 or 3 is uncertain
    return rng.normal(size=(n_time, 3)) @ L.T + rng.normal(size=(n_time, n_neuron))


@pytest.mark.slow  # ~15 s: bootstrap with cross-validation in every draw (compiles the batched EM)
def test_dimension_count_interval_comes_from_bootstrapping_the_choice():
    """The default bootstrap reruns the choice of n_dim in every draw: on data whose third factor
    is near the detection limit (cross-validation picks 2 in some samples, 3 in others) the draws
    of n_dim disagree, so compare_states cannot report a zero-width interval of their difference."""
    from bayesneuro.density import compare_states

    X = _weak_third_factor(1)
    est = Dimensionality(max_dim=4).fit(X, key=0, n_boot=12, n_folds=3, progress=False)
    nd = est.posterior_statistics(key=0, num_samples=12)["n_dim"].values
    assert np.unique(nd).size > 1, nd
    cmp = compare_states(Dimensionality(max_dim=4), {"a": X, "b": _weak_third_factor(2)}, key=1, num_samples=12,
                         fit_kwargs={"n_boot": 12, "n_folds": 3, "progress": False}, progress=False)
    d = cmp.differences().query("statistic == 'n_dim'").iloc[0]
    assert d.upper > d.lower and 0 < d.p_greater < 1
    fixed = Dimensionality(max_dim=4).fit(X, key=0, n_boot=4, n_folds=3, bootstrap_cv=False, progress=False)
    assert "n_dim" not in fixed.posterior_statistics(key=0, num_samples=4)  # no fake certainty


def test_bootstrap_draws_that_empty_a_fold_say_so():
    """4 trials, 2 folds: many resamples leave a fold without data; their n_dim is NaN (not the
    full-data choice passed off as a draw), with a warning that counts them."""
    rng = np.random.default_rng(3)
    data = SpikeData(rng.poisson(3.0, (80, 5)), bin_size=0.1, trial_ids=np.repeat(np.arange(4), 20))
    with pytest.warns(UserWarning, match=r"of 20 bootstrap draws left fewer than 2 of the 2 cross-validation folds"):
        est = Dimensionality(max_dim=2).fit(data, key=0, n_boot=20, n_folds=2, progress=False)
    nd = est.bootstrap_["n_dim"].values
    assert np.isnan(nd).any() and np.isfinite(nd).any()


def test_dimension_choice_on_the_largest_candidate_warns():
    X, _, _ = simulate_fa(n_time=600, n_neuron=8, n_factor=3, seed=2)
    with pytest.warns(UserWarning, match=r"largest candidate \(1, of 0..1\).*raise max_dim"):
        cv = cross_validate_dimensionality(X, max_dim=1, key=0, n_folds=3, progress=False)
    assert cv.n_dim == 1


# -- real data: the lab's 10-factor model (Golub et al. 2018) ----------------------------------


def test_fa_on_golub_m1_against_lab_model(shared_data):
    path = shared_data / "bci_m1_golub_fa" / "exampleData.mat"
    if not path.exists():
        pytest.skip(f"{path} not found")
    m = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    im = m["expParams"].intuitiveMapping
    clouds = m["beforeLearning"].clouds
    X = np.concatenate([s.T for s in clouds.spikes]).astype(float)  # (552, 86)
    Z = (X - im.mu_u) @ im.Sigma_u.T  # the lab's z-scoring (Sigma_u is diag(1 / sd))
    lab = FactorAnalysis(10)
    lab.mean_, lab.loadings_, lab.observation_var_ = np.zeros(86), im.L, im.Ph
    # our posterior mean under their parameters reproduces their factorActivity exactly
    orth = im.D @ im.V.T
    np.testing.assert_allclose(lab.transform(Z[:69]) @ orth.T, clouds.factorActivity[0].T, atol=1e-10)
    ours = FactorAnalysis(10).fit(Z, progress=False)
    assert ours.converged_
    lab.mean_ = Z.mean(axis=0)
    # Their model was fitted to the calibration block, ours to these 552 bins by ML, so ours must
    # score at least as well here, and not by much (3.0 nats / bin observed out of ~115)
    gap = ours.score(Z) - lab.score(Z)
    assert 0 <= gap < 5.0
    C_lab = im.L @ im.L.T + np.diag(im.Ph)
    assert np.linalg.norm(ours.covariance_ - C_lab) / np.linalg.norm(C_lab) < 0.6  # observed 0.45
    angles = np.degrees(subspace_angles(ours.loadings_, im.L))
    assert angles.min() < 20  # the dominant shared dimension agrees (observed 10.6 degrees)
    assert np.corrcoef(ours.observation_var_, im.Ph)[0, 1] > 0.5  # observed 0.68


# -- similarity matrix -----------------------------------------------------------------------------


def test_similarity_matrix_brute_force():
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(15, 5))
    X[4] = 3  # constant vector: undefined correlation
    X[7] = 0  # zero vector: undefined cosine and correlation
    corr = similarity_matrix(X)
    cos = similarity_matrix(X, metric="cosine")
    for i in range(15):
        for j in range(15):
            a, b = X[i].astype(float), X[j].astype(float)
            if i in (4, 7) or j in (4, 7):
                assert np.isnan(corr[i, j])
            else:
                assert corr[i, j] == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
            if i == 7 or j == 7:
                assert np.isnan(cos[i, j])
            else:
                assert cos[i, j] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-12)


def test_similarity_matrix_smooths_within_trials():
    rng = np.random.default_rng(1)
    X = rng.poisson(3.0, size=(20, 4))
    data = SpikeData(X, bin_size=0.1, trial_ids=np.repeat([0, 1], 10))
    sim = similarity_matrix(data, smooth=1.5, metric="cosine")
    Y = np.concatenate([gaussian_filter1d(X[:10].astype(float), 1.5, axis=0, mode="nearest"),
                        gaussian_filter1d(X[10:].astype(float), 1.5, axis=0, mode="nearest")])
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    np.testing.assert_allclose(sim, Yn @ Yn.T, atol=1e-12)


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_inputs():
    X, _, _ = simulate_fa(n_time=100, n_neuron=5, n_factor=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pca(np.where(np.eye(100, 5) > 0, np.nan, X))
    with pytest.raises(ValueError, match="2-D"):
        FactorAnalysis(1).fit(X[:, 0])
    with pytest.raises(ValueError, match="at least 2 time bins"):
        FactorAnalysis(1).fit(X[:1])
    with pytest.raises(ValueError, match="constant"):
        FactorAnalysis(1).fit(np.c_[X, np.ones(100)])
    with pytest.raises(ValueError, match="smaller than the number of neurons"):
        FactorAnalysis(5).fit(X)
    with pytest.raises(ValueError, match="n_latents must be"):
        FactorAnalysis(-1)
    with pytest.raises(TypeError, match="key"):
        FactorAnalysis(1).fit(X, key=None, init="random")
    with pytest.raises(RuntimeError, match="not fitted"):
        FactorAnalysis(1).score(X)
    with pytest.raises(ValueError, match="max_dim"):
        cross_validate_dimensionality(X, max_dim=5, key=0)
    with pytest.raises(ValueError, match="n_folds"):
        cross_validate_dimensionality(X, max_dim=1, n_folds=1, key=0)
    with pytest.raises(ValueError, match="at least as many trials"):
        cross_validate_dimensionality(SpikeData(np.round(X - X.min()).astype(int), bin_size=0.1,
                                                trial_ids=np.repeat([0, 1, 2], [30, 30, 40])), max_dim=1, key=0)
    with pytest.raises(ValueError, match="transform"):
        pca(X, transform="log")
    with pytest.raises(ValueError, match="non-negative counts"):
        pca(X - 100, transform="sqrt")
    with pytest.raises(ValueError, match="non-negative"):
        participation_ratio([1.0, -1.0])
    with pytest.raises(ValueError, match="sum to zero"):
        participation_ratio([0.0, 0.0])
    with pytest.raises(ValueError, match="metric"):
        similarity_matrix(X, metric="euclid")
    with pytest.raises(ValueError, match="smooth"):
        similarity_matrix(X, smooth=-1.0)
    with pytest.raises(ValueError, match="rule"):
        Dimensionality(rule="aic")
    with pytest.raises(TypeError, match="numeric"):
        pca(np.array([["a", "b"], ["c", "d"]]))
