"""bayesneuro.diagnostics.loo (vectorised PSIS-LOO, bayesneuro._psis) against arviz.loo itself."""

import arviz as az
import numpy as np
import pytest

from bayesneuro._psis import psis_log_weights
from bayesneuro.diagnostics import loo


def _idata(log_lik, method=None, seed=0, dims=None, coords=None):
    rng = np.random.default_rng(seed)
    chains, draws = log_lik.shape[:2]
    # an autocorrelated "MCMC" parameter, so that ArviZ's relative efficiency is not 1
    mu = np.cumsum(rng.normal(size=(chains, draws)), axis=1) * 0.1 + rng.normal(size=(chains, draws))
    idata = az.from_dict(posterior={"mu": mu}, log_likelihood={"y": log_lik}, dims=dims, coords=coords)
    if method:
        idata.posterior.attrs["method"] = method
    return idata


def _assert_same(ours, ref, pointwise=True):
    for name in ("elpd_loo", "se", "p_loo"):
        assert float(ours[name]) == pytest.approx(float(ref[name]), rel=1e-11, abs=1e-9), name
    for name in ("n_samples", "n_data_points", "warning", "scale", "good_k"):
        assert ours[name] == ref[name], name
    if pointwise:
        np.testing.assert_allclose(ours.loo_i.values, ref.loo_i.values, rtol=1e-11, atol=1e-11)
        finite = np.isfinite(ref.pareto_k.values)
        np.testing.assert_array_equal(np.isfinite(ours.pareto_k.values), finite)
        np.testing.assert_allclose(ours.pareto_k.values[finite], ref.pareto_k.values[finite], rtol=0, atol=1e-11)
        assert ours.loo_i.dims == ref.loo_i.dims


def test_psis_log_weights_match_arviz_including_ties_and_short_tails():
    rng = np.random.default_rng(1)
    for S, reff in [(800, 1.0), (1000, 0.6), (60, 1.0), (4000, 0.9)]:
        lr = rng.standard_t(3, size=(300, S)) * rng.uniform(0.2, 5.0, size=(300, 1))
        lr[0] = 1.5  # every draw equal: no tail, k = inf
        lr[1, : S // 3] = lr[1, S // 3]  # ties in the body
        lr[2, :5] = lr[2].max() + 1  # ties in the tail: the smoothed values may be permuted among them
        lr[3, :] = -800.0
        lr[3, :3] = 0.0  # all other weights underflow: the cutoff is the float floor
        lw_ref, k_ref = az.psislw(lr, reff)
        lw, k = psis_log_weights(lr, reff)
        np.testing.assert_array_equal(np.isinf(k), np.isinf(k_ref))
        np.testing.assert_allclose(k[np.isfinite(k)], k_ref[np.isfinite(k_ref)], rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.sort(lw, axis=1), np.sort(lw_ref, axis=1), rtol=0, atol=1e-11)
        rows = np.r_[0:2, 3:300]  # row 2: tied raw ratios, the same weights in another order
        np.testing.assert_allclose(lw[rows], lw_ref[rows], rtol=0, atol=1e-11)


@pytest.mark.parametrize("method", ["laplace", None])
def test_loo_matches_arviz(method):
    """Independent draws (Laplace: reff = 1) and MCMC-like chains (reff from ArviZ's ESS)."""
    rng = np.random.default_rng(2)
    ll = rng.normal(-1.0, 0.3, size=(4, 250, 1)) + rng.normal(0, 0.5, size=(1, 1, 300)) * rng.normal(size=(4, 250, 1))
    idata = _idata(ll, method=method)
    ref = az.loo(idata, reff=1.0, pointwise=True) if method else az.loo(idata, pointwise=True)
    _assert_same(loo(idata, pointwise=True), ref)


def test_loo_matches_arviz_multidimensional_deviance_and_warning():
    """(time, neuron) observations with coordinates, the deviance scale, a heavy-tailed observation
    (Pareto k above good_k: ArviZ's warning), and the non-pointwise result."""
    rng = np.random.default_rng(3)
    ll = rng.normal(-2.0, 0.2, size=(2, 300, 40, 3))
    ll[:, :, 7, 1] = -np.exp(rng.normal(0, 2.5, size=(2, 300)))  # one influential observation
    idata = _idata(ll, method="svi", dims={"y": ["time", "neuron"]},
                   coords={"time": np.arange(40) * 0.02, "neuron": ["a", "b", "c"]})
    with pytest.warns(UserWarning, match="Estimated shape parameter of Pareto"):
        ref = az.loo(idata, reff=1.0, pointwise=True, scale="deviance")
    with pytest.warns(UserWarning, match="Estimated shape parameter of Pareto"):
        ours = loo(idata, pointwise=True, scale="deviance")
    _assert_same(ours, ref)
    assert ours.warning and list(ours.loo_i.coords["neuron"].values) == ["a", "b", "c"]
    with pytest.warns(UserWarning, match="Estimated shape parameter"):
        _assert_same(loo(idata, pointwise=False), az.loo(idata, reff=1.0, pointwise=False), pointwise=False)


def test_loo_results_compare_like_arviz():
    rng = np.random.default_rng(4)
    y = rng.normal(size=200)
    good = -0.5 * (y[None, None, :] - rng.normal(0, 0.05, size=(4, 200, 1))) ** 2 - 0.92
    bad = -0.5 * ((y[None, None, :] - 1.0) / 2) ** 2 - 1.61 + rng.normal(0, 0.01, size=(4, 200, 1))
    models = {"good": _idata(good, method="laplace"), "bad": _idata(bad, method="laplace", seed=1)}
    ours = az.compare({k: loo(v, pointwise=True) for k, v in models.items()})
    ref = az.compare({k: az.loo(v, reff=1.0, pointwise=True) for k, v in models.items()})
    assert list(ours.index) == list(ref.index) == ["good", "bad"]
    np.testing.assert_allclose(ours["elpd_diff"].astype(float), ref["elpd_diff"].astype(float), rtol=1e-10)
    np.testing.assert_allclose(ours["dse"].astype(float), ref["dse"].astype(float), rtol=1e-8)


def test_loo_errors():
    idata = _idata(np.zeros((2, 10, 3)), method="laplace")
    with pytest.raises(TypeError, match="No log likelihood data named"):
        loo(idata, var_name="nope")
    with pytest.raises(TypeError, match="Valid scale values"):
        loo(idata, scale="bits")
