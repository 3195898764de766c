"""The shared inference layer against closed forms, for every method.

The conjugate Gamma-Poisson model (models/gamma_poisson_hierarchical.py,
``conjugate_rates``) has posterior Gamma(a, b) per neuron with
a = shape + sum of counts, b = rate + n_trial * duration. In the unconstrained
coordinate u = log(rate) the density (with Jacobian) is exp(a u - b e^u), so
its mode is log(a / b) and the Hessian there is a: the Laplace approximation is
N(log(a/b), 1/a) exactly. The best mean-field (log-normal) variational posterior
has mean a / b exactly and log-scale variance 1/a.
"""

import logging
import pickle
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import special

from bayesneuro import infer, io
from bayesneuro.diagnostics import ConvergenceWarning, check

from .helpers import load_gallery

gp = load_gallery("gamma_poisson_hierarchical")

DURATION = 1.0
N_TRIAL, N_NEURON = 50, 4


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    rates = np.array([5.0, 12.0, 20.0, 30.0])
    return rng.poisson(rates * DURATION, size=(N_TRIAL, N_NEURON))


@pytest.fixture(scope="module")
def exact(counts):
    return gp.conjugate_posterior(counts, duration=DURATION)


COORDS = {"neuron": np.array(["a1", "a2", "b1", "b2"]), "trial": np.arange(N_TRIAL) + 100}


def _fit(method, counts, key=0, **opts):
    return infer.fit(
        gp.conjugate_rates, method=method, key=jax.random.key(key), counts=counts,
        duration=DURATION, coords=COORDS, progress=False, **opts,
    )


@pytest.fixture(scope="module")
def fits(counts):
    return {
        "map": _fit("map", counts),
        "laplace": _fit("laplace", counts, num_samples=4000),
        "svi": _fit("svi", counts, num_steps=4000, num_samples=4000),
        "nuts": _fit("nuts", counts, num_warmup=500, num_samples=1000, num_chains=2),
    }


def test_map_equals_closed_form_mode(fits, exact):
    a, b = exact
    np.testing.assert_allclose(fits["map"].params["rate"], (a - 1) / b, rtol=1e-7)
    assert fits["map"].info["converged"]
    assert fits["map"].samples["rate"].shape == (1, 1, N_NEURON)


def test_laplace_mode_and_covariance_equal_closed_form(fits, exact):
    a, b = exact
    info = fits["laplace"].info
    np.testing.assert_allclose(info["mode"]["rate"], np.log(a / b), rtol=1e-8)
    np.testing.assert_allclose(info["cov"], np.diag(1.0 / a), rtol=1e-6, atol=1e-12)


def test_laplace_draws_match_their_gaussian_and_the_exact_posterior(fits, exact):
    a, b = exact
    draws = fits["laplace"].flat_samples()["rate"]
    n = draws.shape[0]
    log_draws = np.log(draws)
    # the draws are N(log(a/b), 1/a) in log space: mean within 4 standard errors
    se = np.sqrt(1.0 / a / n)
    assert np.all(np.abs(log_draws.mean(0) - np.log(a / b)) < 4 * se)
    # and the variance within 4 standard errors of a chi-square variance estimate
    var_se = (1.0 / a) * np.sqrt(2.0 / (n - 1))
    assert np.all(np.abs(log_draws.var(0, ddof=1) - 1.0 / a) < 4 * var_se)
    # against the exact Gamma posterior: Monte Carlo error plus the known log-normal bias
    mean_exact, sd_exact = a / b, np.sqrt(a) / b
    bias = mean_exact * (np.exp(0.5 / a) - 1.0)
    assert np.all(np.abs(draws.mean(0) - mean_exact) < 4 * sd_exact / np.sqrt(n) + bias)


def test_svi_mean_field_matches_optimal_variational_posterior(fits, exact):
    a, b = exact
    draws = fits["svi"].flat_samples()["rate"]
    n = draws.shape[0]
    sd_opt = (a / b) * np.sqrt(np.expm1(1.0 / a))  # log-normal with log-variance 1/a, mean a/b
    # mean: 4 Monte Carlo standard errors plus 0.1% for the stochastic optimiser
    assert np.all(np.abs(draws.mean(0) - a / b) < 4 * sd_opt / np.sqrt(n) + 1e-3 * a / b)
    # sd: 4 standard errors of a sample sd (1/sqrt(2n)) plus 5% for the optimiser
    assert np.all(np.abs(draws.std(0) / sd_opt - 1.0) < 4 / np.sqrt(2 * n) + 0.05)
    losses = fits["svi"].info["losses"]
    assert losses.shape == (4000,) and losses[-100:].mean() < losses[:100].mean()


def test_nuts_moments_match_closed_form_within_mcse(fits, exact):
    a, b = exact
    idata = fits["nuts"].to_inference_data()
    table = az.summary(idata, var_names=["rate"], round_to="none")
    mean_mcse, sd_mcse = table["mcse_mean"].values, table["mcse_sd"].values
    post = idata.posterior["rate"].values.reshape(-1, N_NEURON)
    assert np.all(np.abs(post.mean(0) - a / b) < 4 * mean_mcse)
    assert np.all(np.abs(post.std(0) - np.sqrt(a) / b) < 4 * sd_mcse)
    assert check(idata, warn=False).ok


@pytest.mark.parametrize("guide", ["full-rank", "low-rank"])
def test_svi_other_guides(counts, exact, guide):
    a, b = exact
    res = _fit("svi", counts, guide=guide, num_steps=3000, num_samples=2000)
    draws = res.flat_samples()["rate"]
    sd = np.sqrt(a) / b
    assert np.all(np.abs(draws.mean(0) - a / b) < 4 * sd / np.sqrt(2000) + 0.01 * a / b)


@pytest.mark.parametrize("method", ["map", "laplace",
                                    pytest.param("svi", marks=pytest.mark.slow),    # ~6 s: two SVI runs
                                    pytest.param("nuts", marks=pytest.mark.slow)])  # ~23 s: two NUTS runs
def test_same_key_same_numbers(counts, method):
    opts = {"svi": {"num_steps": 300, "num_samples": 50},
            "nuts": {"num_warmup": 50, "num_samples": 50, "num_chains": 2},
            "laplace": {"num_samples": 50}}.get(method, {})
    with warnings.catch_warnings():  # short runs: sampler diagnostics, an unfinished ELBO
        warnings.filterwarnings("ignore", r"(R-hat > |effective sample size below |[0-9]+ divergent transitions)",
                                ConvergenceWarning)
        warnings.filterwarnings("ignore", "svi. the ELBO was still improving", RuntimeWarning)
        r1 = _fit(method, counts, key=7, **opts)
        r2 = _fit(method, counts, key=7, **opts)
        r3 = _fit(method, counts, key=8, **opts)
    np.testing.assert_array_equal(r1.samples["rate"], r2.samples["rate"])
    if method != "map":
        assert not np.array_equal(r1.samples["rate"], r3.samples["rate"])


def test_map_inference_data_is_a_point_estimate(fits, counts, tmp_path):
    """A MAP fit is labelled as one: a point_estimate group (no chain/draw), no 1 x 1 posterior."""
    from scipy import stats

    from bayesneuro.diagnostics import is_point_fit, loo

    res = fits["map"]
    idata = res.to_inference_data(posterior_predictive=True, key=jax.random.key(1))
    assert "posterior" not in idata.groups() and is_point_fit(idata)
    pe = idata.point_estimate
    assert pe.attrs["method"] == "map" and pe["rate"].dims == ("neuron",)
    np.testing.assert_array_equal(pe["neuron"].values, COORDS["neuron"])
    np.testing.assert_allclose(pe["rate"].values, res.samples["rate"][0, 0])
    assert idata.log_likelihood["counts"].dims == ("trial", "neuron")
    ref = stats.poisson.logpmf(counts, res.samples["rate"][0, 0][None, :] * DURATION)
    np.testing.assert_allclose(idata.log_likelihood["counts"].values, ref, rtol=1e-10)
    assert idata.posterior_predictive["counts"].dims == ("trial", "neuron")
    np.testing.assert_array_equal(idata.observed_data["counts"].values, counts)
    assert float(idata.constant_data["duration"]) == DURATION
    with pytest.raises(ValueError, match="point fit"):
        loo(idata)
    res.save(tmp_path / "map.nc")
    back = io.load(tmp_path / "map.nc")
    assert is_point_fit(back) and back.point_estimate["rate"].dims == ("neuron",)


@pytest.mark.parametrize("method", ["laplace", "svi", "nuts"])
def test_inference_data_groups_dims_and_coords(fits, method, counts):
    idata = fits[method].to_inference_data(posterior_predictive=True, key=jax.random.key(1))
    expected = {"posterior", "log_likelihood", "observed_data", "constant_data", "posterior_predictive"}
    if method == "nuts":
        expected.add("sample_stats")
    assert expected <= set(idata.groups())
    assert idata.posterior["rate"].dims == ("chain", "draw", "neuron")
    np.testing.assert_array_equal(idata.posterior["neuron"].values, COORDS["neuron"])
    assert idata.observed_data["counts"].dims == ("trial", "neuron")
    np.testing.assert_array_equal(idata.observed_data["trial"].values, COORDS["trial"])
    np.testing.assert_array_equal(idata.observed_data["counts"].values, counts)
    assert idata.log_likelihood["counts"].dims == ("chain", "draw", "trial", "neuron")
    assert idata.posterior_predictive["counts"].dims == ("chain", "draw", "trial", "neuron")
    assert float(idata.constant_data["duration"]) == DURATION
    for group in idata.groups():
        for name, var in getattr(idata, group).data_vars.items():
            assert not any("_dim_" in d for d in var.dims), (group, name, var.dims)
    if method == "nuts":
        for stat in ("diverging", "energy", "lp", "acceptance_rate", "step_size", "tree_depth"):
            assert stat in idata.sample_stats


def test_log_likelihood_equals_scipy(fits, counts):
    from scipy import stats

    idata = fits["laplace"].to_inference_data()
    rate = idata.posterior["rate"].values[0, :3]  # three draws
    ll = idata.log_likelihood["counts"].values[0, :3]
    ref = stats.poisson.logpmf(counts[None], rate[:, None, :] * DURATION)
    np.testing.assert_allclose(ll, ref, rtol=1e-10)
    # the pointwise log-likelihood is one compiled program, reused by the next conversion
    from bayesneuro._shapes import count_compilations

    with count_compilations() as c:
        again = fits["laplace"].to_inference_data()
    assert c.compilations == 0
    np.testing.assert_array_equal(again.log_likelihood["counts"].values, idata.log_likelihood["counts"].values)


def test_posterior_predictive_mean_matches_posterior(fits, exact):
    a, b = exact
    pp = fits["laplace"].posterior_predictive(key=jax.random.key(3))["counts"]
    assert pp.shape == (4, 1000, N_TRIAL, N_NEURON)  # 4000 independent draws as 4 chains
    # predictive mean per neuron is E[rate] * duration; sd of a bin-average over draws
    mean = pp.mean(axis=(0, 1, 2))
    sd = np.sqrt(a / b * DURATION + (np.sqrt(a) / b * DURATION) ** 2 / N_TRIAL)
    assert np.all(np.abs(mean - a / b * DURATION) < 4 * sd / np.sqrt(4000) + 0.02 * a / b)


def test_psis_loo_matches_exact_leave_one_out(fits, counts, exact):
    """PSIS-LOO from the NUTS fit against the exact leave-one-out predictive (negative binomial)."""
    a, b = exact
    a_loo = a[None, :] - counts  # posterior without observation (k, n)
    b_loo = b - DURATION
    y = counts
    log_pred = (
        special.gammaln(a_loo + y) - special.gammaln(a_loo) - special.gammaln(y + 1)
        + a_loo * np.log(b_loo / (b_loo + DURATION)) + y * np.log(DURATION / (b_loo + DURATION))
    )
    exact_elpd = log_pred.sum()
    loo = fits["nuts"].loo(pointwise=True)
    # PSIS error is far below the reported standard error of elpd for this well-behaved model
    assert abs(loo.elpd_loo - exact_elpd) < 0.5
    assert np.all(loo.pareto_k.values < 0.7)
    waic = fits["nuts"].waic()
    assert abs(waic.elpd_waic - exact_elpd) < 1.0


@pytest.mark.slow  # ~8 s: a second NUTS fit
def test_compare_two_models(fits, counts):
    alt = infer.fit(
        gp.conjugate_rates, method="nuts", key=1, counts=counts, duration=DURATION, shape=1.0,
        rate=1.0, num_warmup=300, num_samples=300, num_chains=2, progress=False,
    )
    table = az.compare({"weak prior": alt.to_inference_data(), "default": fits["nuts"].to_inference_data()})
    assert set(table.index) == {"weak prior", "default"}
    assert np.isfinite(table["elpd_loo"]).all()


def test_summary_tables(fits):
    assert list(fits["map"].summary().columns) == ["map"]
    s = fits["nuts"].summary(var_names=["rate"])
    assert {"mean", "sd", "r_hat", "ess_bulk", "ess_tail"} <= set(s.columns)
    assert "rate[a1]" in s.index


@pytest.mark.parametrize("method", ["laplace", "svi"])
def test_independent_draws_give_a_clean_arviz_summary(fits, method, caplog):
    # Laplace and SVI draws are independent: arranged as 4 chains, az.summary (the call users
    # type) warns about nothing (ArviZ logs its "Shape validation failed" warning; Python
    # warnings are errors here) and its R-hat and ESS read as they should for iid draws:
    # R-hat 1, ESS the number of draws.
    idata = fits[method].to_inference_data()
    az._log.addHandler(caplog.handler)  # ArviZ's logger is standalone: it reaches no root handler
    try:
        table = az.summary(idata, round_to="none")
    finally:
        az._log.removeHandler(caplog.handler)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]) == (4, 1000)
    assert np.all(np.isfinite(table["r_hat"])) and np.all(np.abs(table["r_hat"] - 1.0) < 0.02)
    ess = table[["ess_bulk", "ess_tail"]].to_numpy()
    assert np.all(np.isfinite(ess)) and np.all(np.abs(ess / 4000 - 1.0) < 0.25)
    own = fits[method].summary(var_names=["rate"])
    assert {"r_hat", "ess_bulk"} <= set(own.columns)


def test_independent_draws_keep_their_order_across_chains():
    draws = {"w": np.arange(24.0 * 2).reshape(24, 2), "s": np.arange(24.0)}
    stacked = infer.result.stack_chain(draws)
    assert stacked["w"].shape == (4, 6, 2) and stacked["s"].shape == (4, 6)
    np.testing.assert_array_equal(stacked["w"].reshape(24, 2), draws["w"])  # chain-major, nothing lost
    # a count that 4 does not divide: the divisor nearest 4 that leaves >= 4 draws per chain
    assert infer.result.stack_chain({"s": np.zeros(221)})["s"].shape == (13, 17)
    assert infer.result.stack_chain({"s": np.zeros(1001)})["s"].shape == (7, 143)
    assert infer.result.stack_chain({"s": np.zeros(30)})["s"].shape == (3, 10)
    # a prime count (or too few draws) stays one chain; a point estimate is one chain of one draw
    assert infer.result.stack_chain({"s": np.zeros(13)})["s"].shape == (1, 13)
    assert infer.result.stack_chain({"s": np.zeros((1, 3))})["s"].shape == (1, 1, 3)
    assert infer.result.stack_chain({"s": np.zeros(1000)}, n_chain=2)["s"].shape == (2, 500)


def test_save_load_roundtrip(tmp_path, fits):
    path = tmp_path / "fit.nc"
    fits["nuts"].save(path)
    loaded = io.load(path)
    orig = fits["nuts"].to_inference_data()
    assert set(loaded.groups()) == set(orig.groups())
    np.testing.assert_array_equal(loaded.posterior["rate"].values, orig.posterior["rate"].values)
    np.testing.assert_array_equal(loaded.posterior["neuron"].values, COORDS["neuron"])
    assert loaded.posterior.attrs["method"] == "nuts"
    # the file is closed after loading: it can be overwritten
    fits["map"].save(path)
    assert "chain" not in io.load(path).point_estimate.dims


def test_interrupted_save_keeps_existing_file(tmp_path, fits, monkeypatch):
    path = tmp_path / "fit.nc"
    fits["map"].save(path)
    before = path.read_bytes()

    def broken(self, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(az.InferenceData, "to_netcdf", broken)
    with pytest.raises(KeyboardInterrupt):
        fits["nuts"].save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fit.nc"]


class _Payload:
    ran = False

    def __reduce__(self):
        return (_set_ran, ())


def _set_ran():
    _Payload.ran = True
    return "boom"


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.nc"
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(Exception):
        io.load(path)
    assert not _Payload.ran


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved fit"):
        io.load(tmp_path / "nope.nc")


# -- bad input and misuse ---------------------------------------------------------------


def test_unknown_method(counts):
    with pytest.raises(ValueError, match="method must be one of"):
        infer.fit(gp.conjugate_rates, method="mcmc", key=0, counts=counts, duration=1.0)


def test_key_required(counts):
    with pytest.raises(TypeError, match="key"):
        infer.fit(gp.conjugate_rates, method="map", key=None, counts=counts, duration=1.0)


def test_option_of_another_method(counts):
    with pytest.raises(ValueError, match="num_chains.*method='nuts'"):
        infer.fit(gp.conjugate_rates, method="map", key=0, counts=counts, duration=1.0, num_chains=2)


def test_nan_data(counts):
    bad = counts.astype(float)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="'counts' contains NaN"):
        infer.fit(gp.conjugate_rates, method="map", key=0, counts=bad, duration=1.0)


def test_discrete_latent_rejected_for_map():
    def model(y=None):
        z = numpyro.sample("z", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    with pytest.raises(ValueError, match="latent site 'z' is discrete"):
        infer.fit(model, method="map", key=0, y=1.0, progress=False)


def test_laplace_flat_direction_is_reported():
    def model(y=None):
        a = numpyro.sample("a", dist.ImproperUniform(dist.constraints.real, (), ()))
        b = numpyro.sample("b", dist.ImproperUniform(dist.constraints.real, (), ()))
        numpyro.sample("y", dist.Normal(a + b, 1.0), obs=y)

    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        infer.fit(model, method="laplace", key=0, y=1.0, progress=False)


def test_map_not_converged_warns(counts):
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _fit("map", counts, max_iter=1)


def test_user_model_with_deterministic_and_unnamed_axis():
    """A user model without plates still fits; an unnamed axis gets ArviZ's fallback name."""

    def model(y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        numpyro.deterministic("w_sum", w.sum())
        numpyro.sample("y", dist.Normal(w.sum(), 1.0), obs=y)

    res = infer.fit(model, method="laplace", key=0, y=2.0, progress=False, num_samples=100)
    idata = res.to_inference_data()
    assert idata.posterior["w"].dims == ("chain", "draw", "w_dim_0")
    res = infer.fit(model, method="laplace", key=0, y=2.0, progress=False, num_samples=100,
                    dims={"w": ["feature"]}, coords={"feature": ["x", "y", "z"]})
    idata = res.to_inference_data()
    assert idata.posterior["w"].dims == ("chain", "draw", "feature")
    np.testing.assert_allclose(idata.posterior["w_sum"].values, idata.posterior["w"].values.sum(-1))


def test_wrong_coord_length(counts):
    res = infer.fit(gp.conjugate_rates, method="map", key=0, counts=counts, duration=1.0,
                    coords={"neuron": ["only", "two"]}, progress=False)
    with pytest.raises(ValueError, match="coords for dim 'neuron' have length 2"):
        res.to_inference_data()


def test_progress_can_be_silenced(counts, capsys):
    _fit("map", counts)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_shows_for_map(counts, capsys):
    infer.fit(gp.conjugate_rates, method="map", key=0, counts=counts, duration=1.0, progress=True)
    assert "MAP" in capsys.readouterr().err


@pytest.mark.slow  # ~20 s: three NUTS runs
@pytest.mark.filterwarnings(  # 2 x 100 draws: the diagnostics may flag the short chains
    r"ignore:(R-hat > |effective sample size below |[0-9]+ divergent transitions)"
    r":bayesneuro.diagnostics.ConvergenceWarning")
def test_nuts_chain_methods(counts):
    kw = dict(num_warmup=100, num_samples=100, num_chains=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        vec = _fit("nuts", counts, chain_method="vectorized", **kw)
        assert vec.samples["rate"].shape == (2, 100, N_NEURON)
        with pytest.warns(RuntimeWarning, match="running chains sequentially"):
            par = _fit("nuts", counts, chain_method="parallel", **kw)
    seq = _fit("nuts", counts, chain_method="sequential", **kw)
    np.testing.assert_array_equal(par.samples["rate"], seq.samples["rate"])
    with pytest.raises(ValueError, match="chain_method"):
        _fit("nuts", counts, chain_method="threads", **kw)


@pytest.mark.slow  # ~30 s: a fresh interpreter with 2 host devices runs NUTS
def test_parallel_chains_on_several_host_devices():
    """chain_method='parallel' over 2 forced CPU devices gives the sequential draws."""
    import os
    import subprocess
    import sys

    code = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
assert jax.local_device_count() == 2, jax.devices()
from bayesneuro import infer
from tests.helpers import load_gallery
gp = load_gallery("gamma_poisson_hierarchical")
counts = np.random.default_rng(0).poisson(5.0, size=(30, 3))
kw = dict(counts=counts, duration=1.0, num_warmup=200, num_samples=200, num_chains=2, progress=False)
par = infer.fit(gp.conjugate_rates, method="nuts", key=0, chain_method="parallel", **kw)
seq = infer.fit(gp.conjugate_rates, method="nuts", key=0, chain_method="sequential", **kw)
np.testing.assert_allclose(par.samples["rate"], seq.samples["rate"], rtol=1e-10)
print("OK")
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(__import__("tests.helpers").helpers.REPO))
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_diagnostics_do_not_read_independent_draws_as_chains(fits):
    # Laplace/SVI draws are stored as 4 chains for ArviZ, but they are independent by
    # construction: with thousands of scalars one R-hat passes 1.01 by chance, which says
    # nothing about the fit, so check() does not flag R-hat or ESS for them (as for NUTS it does).
    rng = np.random.default_rng(1)
    draws = {"w": rng.normal(size=(4, 250, 3000))}

    def idata(method):
        out = az.from_dict(posterior=draws)
        out.posterior.attrs["method"] = method  # as FitResult.to_inference_data stores it
        return out

    as_nuts = check(idata("nuts"), warn=False)
    assert not as_nuts.ok and "R-hat > 1.01" in as_nuts.problems[0]  # chance, read as chains
    as_laplace = check(idata("laplace"), warn=False)
    assert as_laplace.ok and as_laplace.rhat == {}
    assert as_laplace.ess_bulk["w"] > 500  # ESS still reported
    diag = fits["svi"].diagnose(warn=False)
    assert diag.ok and diag.rhat == {}


def test_report_reads_laplace_chains_as_independent_draws():
    """The CLI report: 4 chains of Laplace draws are not MCMC chains (no 'no problems flagged', no
    R-hat column); the same draws labelled NUTS are read as chains."""
    from bayesneuro.report import _diagnostics

    rng = np.random.default_rng(2)
    draws = {"w": rng.normal(size=(4, 250, 5))}

    def idata(method):
        out = az.from_dict(posterior=draws)
        out.posterior.attrs["method"] = method
        return out

    lines, table = _diagnostics(idata("laplace"), "laplace")
    assert "1000 independent draws" in lines[0] and "max R-hat" not in table.columns
    lines, table = _diagnostics(idata("nuts"), "nuts")
    assert "no problems flagged" in lines and "max R-hat" in table.columns


def _poisson_regression(X=None, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    gain = numpyro.sample("gain", dist.HalfNormal(1.0))
    numpyro.deterministic("rate", gain * jax.numpy.exp(X @ w))
    with numpyro.plate("time", X.shape[0]):
        numpyro.sample("y", dist.Poisson(gain * jax.numpy.exp(X @ w)), obs=y)


#: XLA programs a first MAP fit may compile (measured 4 in a cold process: the key split, the
#: starting point, the L-BFGS loop with its start, the draws; Laplace adds the Hessian and the
#: Gaussian. Before the one-program optimiser and the abstract model trace it was 47)
MAP_FIRST_FIT_PROGRAMS = 6


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_refit_on_new_data_of_the_same_shape_compiles_nothing(method):
    from bayesneuro._shapes import count_compilations

    def model(X=None, y=None):  # a new function object: nothing of it is compiled yet
        _poisson_regression(X, y)

    rng = np.random.default_rng(1)
    data = []
    for _ in range(2):
        X = 0.3 * rng.normal(size=(120, 3))
        data.append({"X": X, "y": rng.poisson(np.exp(X @ np.array([0.5, -0.2, 0.1])))})
    opts = {"num_samples": 40} if method == "laplace" else {}
    with count_compilations() as first:
        fit1 = infer.fit(model, method=method, key=0, progress=False, **data[0], **opts)
    with count_compilations() as second:
        fit2 = infer.fit(model, method=method, key=1, progress=False, **data[1], **opts)
    assert second.compilations == 0
    assert first.compilations <= MAP_FIRST_FIT_PROGRAMS + (2 if method == "laplace" else 0)
    assert fit1.info["converged"] and fit2.info["converged"]
    assert not np.allclose(fit1.params["w"], fit2.params["w"])
    # estimators start from init_to_value with fresh values per fit: the values are traced
    for i, d in enumerate(data):
        with count_compilations() as c:
            start = numpyro.infer.init_to_value(values={"w": np.full(3, 0.1 * i), "gain": 1.0 + i})
            infer.fit(model, method=method, key=0, progress=False, init_strategy=start, **d, **opts)
        assert i == 0 or c.compilations == 0


def test_minimize_reports_a_non_finite_start():
    from bayesneuro.infer.optimize import minimize

    with pytest.raises(FloatingPointError, match="not finite at the starting point"):
        minimize(lambda x: jax.numpy.sum(jax.numpy.log(x)), -np.ones(2), progress=False)


def test_laplace_dense_gaussian_host_equals_jitted():
    """On a CPU the Laplace draws, covariance and log det come from NumPy/SciPy (no XLA program per
    Hessian size); they equal the jitted path's, draw for draw (the same JAX normals), and a Hessian
    that is not positive definite is reported by both."""
    from jax.flatten_util import ravel_pytree

    from bayesneuro.infer.fit import _dense_gaussian, _dense_gaussian_host

    rng = np.random.default_rng(0)
    A = rng.normal(size=(7, 7))
    H = A @ A.T + 0.5 * np.eye(7)
    x, unravel = ravel_pytree({"a": jnp.arange(3.0), "b": jnp.ones((2, 2))})
    key = jax.random.key(3)
    host = _dense_gaussian_host(H, x, key, 50, unravel)
    jit = _dense_gaussian(jnp.asarray(H), x, key, 50, unravel)
    np.testing.assert_allclose(host[0], jit[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(host[1], np.linalg.inv(H), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host[1], jit[1], rtol=0, atol=1e-12)
    assert host[2] == pytest.approx(np.linalg.slogdet(H)[1], rel=1e-12) and bool(host[3]) and bool(jit[3])
    np.testing.assert_array_equal(host[4]["b"], np.ones((2, 2)))
    H_bad = H - 10 * np.eye(7)
    assert not _dense_gaussian_host(H_bad, x, key, 5, unravel)[3]
    assert not bool(_dense_gaussian(jnp.asarray(H_bad), x, key, 5, unravel)[3])
