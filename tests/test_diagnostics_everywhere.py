"""Issue 20, point 3: diagnostics that speak up everywhere.

Every NUTS/SVI fit through :func:`bayesneuro.infer.fit` (and so inside every estimator) runs
:func:`bayesneuro.diagnostics.check` and warns with what to do; optimisers and SVI that did not
converge give a :class:`~bayesneuro.diagnostics.ConvergenceWarning`; a Laplace fit at a point
whose Hessian is not positive definite raises with the cause; NaN estimates and NaN scores are
never silent; point fits carry a ``point_estimate`` group, never a fake 1 x 1 posterior.
"""

import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesneuro as bn
from bayesneuro import infer
from bayesneuro.diagnostics import (
    ConvergenceWarning,
    NonFiniteWarning,
    check,
    check_svi,
    is_point_fit,
    loo,
)
from bayesneuro.estimator import Estimator


def _rate_model(counts=None, n_bins=20):
    rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
    with numpyro.plate("time", n_bins):
        numpyro.sample("counts", dist.Poisson(rate), obs=counts)


COUNTS = jnp.array(np.random.default_rng(0).poisson(3.0, size=20))


# ----------------------------------------------------------------------------------------------
# NUTS and SVI through the shared layer
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # NUTS compile: over ~4 s
def test_one_short_nuts_chain_warns_about_ess():
    """One chain of 12 draws has an ESS far below 100: the check must say so (it used to check
    R-hat and ESS only with two or more chains, so a one-chain fit was never flagged)."""
    with pytest.warns(ConvergenceWarning, match=r"effective sample size below 100 .*num_samples"):
        res = infer.fit(_rate_model, method="nuts", key=0, counts=COUNTS, progress=False,
                        num_warmup=30, num_samples=12, num_chains=1)
    diag = res.info["diagnostics"]
    assert not diag.ok and diag.ess_bulk["rate"] < 100


def test_check_split_rhat_of_one_mcmc_chain():
    """A random walk (a chain that has not mixed) has split R-hat well above 1.01 even as one
    chain; independent draws in one chain do not (the comparison that could disagree)."""
    rng = np.random.default_rng(1)
    walk = az.from_dict(posterior={"mu": np.cumsum(rng.normal(size=(1, 400)), axis=1)})
    walk.posterior.attrs["method"] = "nuts"
    diag = check(walk, warn=False)
    assert diag.rhat["mu"] > 1.1 and not diag.ok
    assert any("R-hat" in p for p in diag.problems)
    iid = az.from_dict(posterior={"mu": rng.normal(size=(1, 400))})
    iid.posterior.attrs["method"] = "nuts"
    good = check(iid, warn=False)
    assert good.ok and good.rhat["mu"] < 1.01


def test_nan_draws_are_flagged():
    post = np.random.default_rng(2).normal(size=(4, 200))
    post[2, 10] = np.nan
    diag = check(az.from_dict(posterior={"mu": post}), warn=False)
    assert not diag.ok and "NaN" in diag.problems[0]


def _far_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1000.0))
    with numpyro.plate("time", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_svi_not_converged_is_a_convergence_warning():
    """300 Adam steps of 0.01 from far away (a constant rate: no decay flattens the trace)."""
    import optax

    with pytest.warns(ConvergenceWarning, match=r"svi: the ELBO was still improving.*Raise num_steps"):
        res = infer.fit(_far_model, method="svi", key=0, y=jnp.full(50, 100.0), progress=False,
                        num_steps=300, optimizer=optax.adam(1e-2), num_samples=40)
    assert res.info["elbo_converged"] is False and res.info["diagnostics"].ok


def test_check_svi_against_traces_that_could_disagree():
    rng = np.random.default_rng(3)
    assert check_svi(50.0 + rng.normal(size=2000), warn=False)
    assert not check_svi(np.linspace(500.0, 50.0, 2000) + rng.normal(size=2000), warn=False)


def test_map_not_converged_is_a_convergence_warning():
    with pytest.warns(ConvergenceWarning, match=r"map: the optimiser did not converge.*Raise max_iter"):
        infer.fit(_rate_model, method="map", key=0, counts=COUNTS, progress=False, max_iter=1)


def _saddle_model():
    x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))
    y = numpyro.sample("y", dist.ImproperUniform(dist.constraints.real, (), ()))
    numpyro.factor("saddle", -(x**2) + y**2)  # log density: a saddle at the origin


def test_laplace_at_a_saddle_raises_with_the_cause():
    """The optimiser starts at the saddle (zero gradient) and stops there; the Hessian is
    indefinite, so there is no Gaussian approximation: a clear error, never NaN draws."""
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite.*add priors, or use method='nuts'"):
        infer.fit(_saddle_model, method="laplace", key=0, progress=False,
                  init_strategy=numpyro.infer.init_to_value(values={"x": 0.0, "y": 0.0}))


@pytest.mark.slow  # GLM NUTS compile: over ~4 s
def test_estimator_nuts_fit_passes_the_warning_on():
    """Inside an estimator (PoissonGLM by NUTS, one short chain) the warning reaches the user."""
    counts = np.random.default_rng(4).poisson(0.5, size=(200, 1))
    data = bn.SpikeData.from_counts(counts, bin_size=0.01)
    with pytest.warns(ConvergenceWarning, match="effective sample size"):
        bn.PoissonGLM(history_basis=bn.bases.Identity(1)).fit(
            data, method="nuts", key=0, progress=False, num_warmup=20, num_samples=10, num_chains=1)


# ----------------------------------------------------------------------------------------------
# NaN estimates and scores
# ----------------------------------------------------------------------------------------------


class _Toy(Estimator):
    """An estimator whose fit and score can go NaN (a mean rate)."""

    score_unit = "nats/bin"

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, x):
        self.rate_ = np.asarray(x, float).mean(axis=0) + self.shift
        return self

    def score(self, x):
        """Mean Poisson log-likelihood, nats/bin."""
        from scipy.stats import poisson

        return float(poisson.logpmf(np.asarray(x), self.rate_).mean())

    def evaluate(self, x):
        return {"score": self.score(x), "n": len(x)}


class _ToyChild(_Toy):
    def score(self, x):
        """Mean Poisson log-likelihood, nats/bin."""
        return super().score(x)


def test_nan_estimates_and_scores_warn_with_the_cause():
    x = np.array([[1.0, np.nan], [3.0, np.nan]])  # the second rate has no finite data at all
    toy = _Toy().fit(x)  # one NaN rate of two (a silent neuron, say) is left to score/evaluate
    with pytest.warns(NonFiniteWarning, match=r"_Toy.fit returned NaN .* in \['rate_'\]"):
        _Toy().fit(np.full((2, 2), np.nan))
    with pytest.warns(NonFiniteWarning, match=r"score\(\) is NaN: the fitted attributes \['rate_'\]"):
        assert np.isnan(toy.score(np.array([[1, 2]])))
    with pytest.warns(NonFiniteWarning, match=r"evaluate\(\)\[\['score'\]\]") as rec:
        toy.evaluate(np.array([[1, 2]]))
    assert len(rec) == 1  # the inner score() call does not warn a second time
    good = _Toy().fit(np.array([[1.0, 2.0], [3.0, 4.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(good.score(np.array([[1, 2]])))
    # finite estimates but a NaN score (a negative rate): the message says the data is the cause
    neg = _ToyChild(shift=-5.0)
    with pytest.warns(NonFiniteWarning, match="fitted attributes are finite, so the model gives NaN") as rec:
        neg.fit(np.array([[1.0, 2.0], [3.0, 4.0]])).score(np.array([[1, 2]]))
    assert len(rec) == 1  # super().score is checked once


def test_factor_analysis_nan_score_is_not_silent():
    """A real estimator whose fitted mean went NaN (as a broken fit leaves it) scored NaN
    silently; now the warning names the attribute, and score and evaluate both speak up."""
    x = np.random.default_rng(5).poisson(3.0, size=(80, 4)).astype(float)
    fa = bn.density.FactorAnalysis(1).fit(x, progress=False)
    assert np.isfinite(fa.score(x))
    fa.mean_ = np.where(np.arange(4) == 0, np.nan, fa.mean_)
    with pytest.warns(NonFiniteWarning, match=r"FactorAnalysis.score\(\) is NaN: the fitted attributes \['mean_'\]"):
        assert np.isnan(fa.score(x))
    with pytest.warns(NonFiniteWarning, match=r"FactorAnalysis.evaluate\(\)"):
        fa.evaluate(x)


# ----------------------------------------------------------------------------------------------
# point fits are labelled as such
# ----------------------------------------------------------------------------------------------


def _assert_point_fit(idata, method, unit_dim):
    assert is_point_fit(idata), idata.groups()
    assert "posterior" not in idata.groups()
    pe = idata.point_estimate
    assert "chain" not in pe.dims and "draw" not in pe.dims
    assert pe.attrs["method"] == method
    if unit_dim is not None:
        var = next(iter(idata.log_likelihood.data_vars.values()))
        assert var.dims == (unit_dim,)
        with pytest.raises(ValueError, match="loo needs posterior draws"):
            loo(idata)
    with pytest.raises(ValueError, match="check needs posterior draws"):
        check(idata)


@pytest.mark.slow  # Laplace-EM and FA fits: over ~4 s
def test_point_fits_have_a_point_estimate_group(tmp_path):
    rng = np.random.default_rng(6)
    counts = rng.poisson(2.0, size=(60, 3))
    data = bn.SpikeData.from_counts(counts, bin_size=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 EM iterations
        plds = bn.PoissonLDS(1).fit(data, progress=False, max_iter=3)
    idata = plds.to_inference_data()
    _assert_point_fit(idata, "laplace-em", "trial")
    np.testing.assert_allclose(idata.point_estimate["loadings"].values, plds.loadings_)
    np.testing.assert_allclose(idata.log_likelihood["counts"].values, plds.log_likelihood(data))
    # the custom group round-trips through bayesneuro.io
    bn.io.save(idata, tmp_path / "plds.nc")
    back = bn.io.load(tmp_path / "plds.nc")
    assert is_point_fit(back)
    np.testing.assert_allclose(back.point_estimate["dynamics"].values, plds.dynamics_)

    fa = bn.density.FactorAnalysis(1).fit(rng.poisson(3.0, size=(80, 4)).astype(float))
    fid = fa.to_inference_data()
    _assert_point_fit(fid, "newton", "time")
    np.testing.assert_allclose(fid.point_estimate["loadings"].values, fa.loadings_)


@pytest.mark.slow  # decoder and GPFA fits: over ~4 s
def test_decoder_and_gaussian_gpfa_point_fits():
    rng = np.random.default_rng(7)
    pos = np.cumsum(rng.normal(size=300)) % 10.0
    counts = rng.poisson(np.exp(-0.2 * (pos[:, None] - np.array([2.0, 5.0, 8.0])) ** 2) * 2.0)
    data = bn.SpikeData.from_counts(counts, bin_size=0.1, covariates=pos[:, None], feature_names=["pos"])
    dec = bn.decoders.NaiveBayesDecoder(bins=10).fit(data, "pos")
    idata = dec.to_inference_data()
    _assert_point_fit(idata, "plugin", "time")
    np.testing.assert_allclose(idata.log_likelihood["counts"].values, dec.log_likelihood(data, "pos"))

    trials = rng.poisson(2.0, size=(4 * 20, 3))
    tdata = bn.SpikeData.from_counts(trials, bin_size=0.02, trial_ids=np.repeat(np.arange(4), 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 EM iterations
        gpfa = bn.GPFA(1).fit(tdata, progress=False, max_iter=3)
    gid = gpfa.to_inference_data()
    _assert_point_fit(gid, "em", "trial")
    assert gid.fit_stats["log_likelihood_trace"].dims == ("em_iteration",)


@pytest.mark.slow  # CLI fit and HTML report: over ~4 s
def test_cli_fit_of_a_point_fit_writes_point_estimate(tmp_path):
    """``bayesneuro fit`` of factor analysis: the .nc holds a point_estimate group with the
    configuration, and the HTML report shows it as point estimates (not a posterior)."""
    from bayesneuro.cli import run_fit
    from bayesneuro.io import load

    counts = np.random.default_rng(8).poisson(3.0, size=(120, 4))
    np.savez(tmp_path / "rec.npz", counts=counts, bin_size=0.05)
    (tmp_path / "fa.toml").write_text(
        '[data]\npath = "rec.npz"\n[model]\nkind = "fa"\noptions = { n_latents = 1 }\n'
        '[fit]\nseed = 0\n[output]\ndir = "out"\nname = "fa"\nreport = ["html"]\n'
    )
    written = run_fit(tmp_path / "fa.toml", progress=False)
    saved = load(written["nc"])
    assert is_point_fit(saved) and saved.point_estimate["loadings"].dims == ("neuron", "latent")
    assert 'kind = "fa"' in saved.point_estimate.attrs["bayesneuro_config"]
    np.testing.assert_allclose(saved.point_estimate["loadings"].values, written.model.loadings_)
    text = written["html"].read_text()
    assert "point estimate" in text and "R-hat" not in text
