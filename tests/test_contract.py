"""The estimator contract (bayesneuro.estimator), checked on every public estimator.

A new public estimator must be added to ``CASES``; ``test_every_public_estimator_is_checked``
fails when one is missing, and every other test here fails when one breaks a rule of the
contract: fit returns self and takes ``key=None`` unless its method draws random numbers (then a
clear TypeError), the same key gives the same fit, ``score`` is one finite float with a unit,
``log_likelihood`` is 1-D over the unit ``log_likelihood_dim`` and sums to the
``log_likelihood`` group of ``to_inference_data()`` that ``az.loo`` reads, constructors store
their arguments (sklearn's ``clone``), and ``cross_validate`` / ``compare_states`` take the
estimator with no special case.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import arviz as az
import numpy as np
import pytest

import bayesneuro as bn
from bayesneuro import estimator as est_mod
from bayesneuro.diagnostics import ConvergenceWarning
from bayesneuro.estimator import Estimator

# -- small data sets -------------------------------------------------------------------------


def _glm_data():
    rng = np.random.default_rng(0)
    t = 600
    x = rng.normal(size=t)
    rates = np.exp(-2.0 + np.outer(x, [0.5, -0.3, 0.2]))
    return bn.SpikeData.from_counts(rng.poisson(rates), bin_size=0.01, covariates=x[:, None], feature_names=["x"])


def _trial_data(n_trial=4, t=25, n=6, seed=1):
    rng = np.random.default_rng(seed)
    z = np.cumsum(rng.normal(0, 0.3, size=(n_trial, t)), axis=1)
    w = rng.normal(0, 0.6, size=n)
    counts = rng.poisson(np.exp(0.2 + z[..., None] * w))
    return bn.SpikeData.from_counts(counts.reshape(n_trial * t, n), bin_size=0.02,
                                    trial_ids=np.repeat(np.arange(n_trial), t))


def _place_data(t=800, n=8, seed=2):
    rng = np.random.default_rng(seed)
    x = np.clip(np.cumsum(rng.normal(0, 0.03, t)) % 2.0, 0, 2.0)
    x = np.where(x > 1.0, 2.0 - x, x)  # reflect into [0, 1]
    centers = np.linspace(0, 1, n)
    rates = 0.2 + 3.0 * np.exp(-((x[:, None] - centers) ** 2) / 0.02)
    return bn.SpikeData.from_counts(rng.poisson(rates), bin_size=0.1, covariates=x[:, None], feature_names=["x"])


def _word_data(t=600, n=5, seed=3):
    rng = np.random.default_rng(seed)
    common = rng.random(t) < 0.2
    words = (rng.random((t, n)) < 0.1) | (common[:, None] & (rng.random((t, n)) < 0.5))
    return bn.SpikeData.from_counts(words.astype(int), bin_size=0.02)


def _trains(seed=4, n=3, duration=60.0):
    from bayesneuro.density import SpikeTrains

    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0, duration, int(rng.integers(150, 300)))) for _ in range(n)]
    return SpikeTrains(times, segments=[[0.0, duration / 2], [duration / 2, duration]])


def _features(seed=5):
    rng = np.random.default_rng(seed)
    a = rng.normal([0, 0], 0.3, size=(12, 2))
    b = rng.normal([2, 1], 0.3, size=(12, 2))
    return np.vstack([a, b])


_JOINT_S = np.random.default_rng(12).normal(size=(120, 1))  # covariates of the joint (latent) encoders
_JOINT_Y = np.random.default_rng(13).poisson(1.0, size=(120, 2))  # target counts of LatentDrivenGLM


def _latents(seed=11):
    from bayesneuro.joint import LatentPosterior

    rng = np.random.default_rng(seed)
    mu = 0.5 * _JOINT_S[:, 0] + 0.6 * rng.normal(size=120)
    return LatentPosterior.from_messages(mu[:, None], np.eye(1) * 4.0, bin_size=0.02, mean=mu[:, None] / 1.2,
                                         sd=np.full((120, 1), 0.4), segment_ids=np.arange(120) // 60)


def _states(seed=14):
    from bayesneuro.joint import StatePosterior

    le = np.random.default_rng(seed).normal(size=(120, 2))
    probs = np.exp(le - np.logaddexp.reduce(le, axis=1, keepdims=True))
    return StatePosterior(probs, le, np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0.5, 0.5]), 0.02, None,
                          np.arange(120) * 0.02)


# -- the cases -------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    make: Callable[[], Any]
    data: Callable[[], Any]
    fit_kwargs: dict = field(default_factory=dict)
    target: Any = None
    needs_key: bool = False  # whether the default method of this fit draws random numbers
    n_units: Callable[[Any], int] | None = None  # length of log_likelihood on `data`
    compare: bool = True  # compare_states applies (density / latent / encoding models)


def _cases() -> list[Case]:
    from bayesneuro import decoders as dec
    from bayesneuro import density as den
    from bayesneuro import joint

    return [
        Case("PoissonGLM", lambda: bn.PoissonGLM(), _glm_data, {"method": "map"},
             n_units=lambda d: d.n_time),
        Case("GPFA", lambda: bn.GPFA(n_latents=1), _trial_data, {"max_iter": 20},
             n_units=lambda d: d.n_trial),
        Case("PoissonLDS", lambda: bn.PoissonLDS(n_latents=1), _trial_data, {"max_iter": 3},
             n_units=lambda d: d.n_trial),
        Case("NaiveBayesDecoder", lambda: dec.NaiveBayesDecoder(bins=10, range=(0, 1)), _place_data,
             target="x", compare=False),
        Case("StateSpaceDecoder", lambda: dec.StateSpaceDecoder(bins=10, range=(0, 1)), _place_data,
             target="x", compare=False),
        Case("KalmanDecoder", lambda: dec.KalmanDecoder(), _place_data, target="x", compare=False),
        Case("PointProcessDecoder", lambda: dec.PointProcessDecoder(), _place_data, target="x", compare=False),
        Case("RegressionDecoder", lambda: dec.RegressionDecoder(), _place_data, target="x", compare=False),
        Case("FactorAnalysis", lambda: den.FactorAnalysis(n_latents=1), _trial_data, {"max_iter": 200},
             n_units=lambda d: d.n_time),
        Case("Dimensionality", lambda: den.Dimensionality(max_dim=2), _trial_data,
             # bootstrap_cv=False: with 4 trials most resamples leave a CV fold empty (which warns)
             {"n_folds": 2, "n_boot": 4, "bootstrap_cv": False}, needs_key=True, n_units=lambda d: d.n_time),
        Case("PoissonHMM", lambda: den.PoissonHMM(n_states=2), _trial_data, {"max_iter": 20, "n_restarts": 1},
             n_units=lambda d: d.n_trial),
        Case("MaxEnt", lambda: den.MaxEnt(kind="ising"), _word_data, {}, n_units=lambda d: d.n_time),
        Case("NeuronStatistics", lambda: den.NeuronStatistics(), _trains, {"num_samples": 100}, needs_key=True),
        Case("RenewalModel", lambda: den.RenewalModel(family="gamma"), _trains, {}, needs_key=True),  # laplace draws
        # "sparse": one fit, no choice of K (24 neurons make PSIS-LOO unreliable, which NeuronTypes
        # rightly warns about; the choice of K is tested in test_density_types)
        Case("NeuronTypes", lambda: den.NeuronTypes(max_types=2, selection="sparse"), _features, {"n_restarts": 1},
             needs_key=True, n_units=lambda d: d.shape[0], compare=False),
        Case("Ensembles", lambda: den.Ensembles(), _trial_data, {}, needs_key=True,  # ICA's random start
             n_units=lambda d: d.n_neuron),
        # the joint encoders take a density model's latents (not SpikeData): no compare_states case
        Case("LatentEncoder", lambda: joint.LatentEncoder(residual="iid"), _latents, {"num_samples": 100},
             target=_JOINT_S, needs_key=True, n_units=lambda d: d.n_time, compare=False),  # Laplace draws
        Case("StateEncoder", lambda: joint.StateEncoder(), _states, {"num_samples": 100}, target=_JOINT_S,
             needs_key=True, n_units=lambda d: d.n_time, compare=False),
        Case("LatentDrivenGLM", lambda: joint.LatentDrivenGLM(), _latents, {"num_samples": 100}, target=_JOINT_Y,
             needs_key=True, n_units=lambda d: d.n_time, compare=False),
    ]


CASES = _cases()
IDS = [c.name for c in CASES]


def _public_estimators() -> set[str]:
    """Names of every public class of the package that derives from Estimator."""
    import importlib
    import pkgutil

    found = set()
    for mod in pkgutil.walk_packages(bn.__path__, "bayesneuro."):
        if any(part.startswith("_") for part in mod.name.split(".")[1:]) or mod.name.endswith(("cli", "__main__")):
            continue
        m = importlib.import_module(mod.name)
        for name, obj in vars(m).items():
            if (inspect.isclass(obj) and issubclass(obj, Estimator) and obj is not Estimator
                    and not name.startswith("_") and not inspect.isabstract(obj)
                    and obj.__module__.startswith("bayesneuro") and getattr(obj, "_abstract", False) is False):
                found.add(name)
    return found


def _fit(case: Case, est, data, **kw):
    kwargs = {**case.fit_kwargs, "progress": False, **kw}
    with warnings.catch_warnings():
        # convergence/diagnostic warnings are beside the point here: these fits are tiny
        warnings.simplefilter("ignore", ConvergenceWarning)
        if case.target is None:
            return est.fit(data, **kwargs)
        return est.fit(data, case.target, **kwargs)


def _call(case: Case, method: str, est, data):
    f = getattr(est, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return f(data) if case.target is None else f(data, case.target)


class _Fitted(dict):
    """Each case fitted once with key=0, on first use (shared by the checks that only read it)."""

    def __missing__(self, name):
        case = next(c for c in CASES if c.name == name)
        data = case.data()
        self[name] = (_fit(case, case.make(), data, key=0), data)
        return self[name]


@pytest.fixture(scope="module")
def fitted():
    return _Fitted()


# -- tests -----------------------------------------------------------------------------------


def test_every_public_estimator_is_checked():
    missing = _public_estimators() - set(IDS)
    assert not missing, f"public estimators not in the contract test: {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_constructor_and_clone(case):
    from sklearn.base import clone as sk_clone

    est = case.make()
    assert isinstance(est, Estimator)
    params = est.get_params(deep=False)
    for name in params:
        assert params[name] is getattr(est, name), f"{case.name}.{name} is not stored as passed"
    twin = sk_clone(est)
    assert type(twin) is type(est) and twin is not est
    assert set(twin.get_params(deep=False)) == set(params)
    ours = est_mod.clone(est)
    assert repr(ours) == repr(est)
    with pytest.raises(ValueError, match="no parameter"):
        est.set_params(not_a_parameter=1)
    sig = inspect.signature(type(est).fit)
    for opt in ("key", "progress"):
        assert opt in sig.parameters and sig.parameters[opt].kind is inspect.Parameter.KEYWORD_ONLY, \
            f"{case.name}.fit must take keyword-only {opt!r}"
    assert sig.parameters["key"].default is None, f"{case.name}.fit(key=...) must default to None"
    for old in ("n_iter", "num_iters", "maxiter", "level", "levels", "hdi_prob"):
        assert old not in sig.parameters and old not in inspect.signature(type(est).__init__).parameters


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unfitted_raises(case):
    est = case.make()
    with pytest.raises(RuntimeError, match="not fitted"):
        _call(case, "score", est, case.data())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fit_returns_self_and_key_rules(case, fitted):
    est, data = fitted[case.name]
    assert est.is_fitted
    again = case.make()
    assert _fit(case, again, data, key=0) is again
    np.testing.assert_allclose(_call(case, "score", again, data), _call(case, "score", est, data), rtol=1e-10,
                               err_msg="the same key must give the same fit")
    if case.needs_key:
        with pytest.raises(TypeError, match="key"):
            _fit(case, case.make(), data, key=None)
    else:
        no_key = _fit(case, case.make(), data, key=None)
        np.testing.assert_allclose(_call(case, "score", no_key, data), _call(case, "score", est, data),
                                   rtol=1e-10, err_msg="a fit that draws no random numbers must not depend on key")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_score_is_a_float_with_a_unit(case, fitted):
    est, data = fitted[case.name]
    s = _call(case, "score", est, data)
    assert type(s) is float and np.isfinite(s)
    assert isinstance(type(est).score_unit, str) and type(est).score_unit
    assert type(est).score_unit in (type(est).score.__doc__ or ""), "the score's docstring must state its unit"
    ev = _call(case, "evaluate", est, data) if hasattr(est, "evaluate") else {}
    assert isinstance(ev, dict)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_likelihood_and_inference_data(case, fitted):
    est, data = fitted[case.name]
    ll = _call(case, "log_likelihood", est, data)
    assert isinstance(ll, np.ndarray) and ll.ndim == 1 and np.all(np.isfinite(ll))
    dim = type(est).log_likelihood_dim
    assert dim in ("time", "trial", "isi", "neuron")
    if case.n_units is not None:
        assert ll.shape[0] == case.n_units(data)
    idata = est.to_inference_data()
    assert isinstance(idata, az.InferenceData)
    assert "log_likelihood" in idata.groups(), f"{case.name}: no log_likelihood group"
    lik = idata.log_likelihood
    assert len(lik.data_vars) == 1
    var = next(iter(lik.data_vars.values()))
    assert dim in var.dims and var.sizes[dim] == ll.shape[0]
    if "posterior" not in idata.groups():  # a point fit: a point_estimate group, never a 1 x 1 posterior
        assert "point_estimate" in idata.groups() and idata.point_estimate.attrs["method"]
        assert "chain" not in idata.point_estimate.dims and "draw" not in idata.point_estimate.dims
    if "chain" not in var.dims:  # the log-likelihood at a point estimate: log_likelihood(data), no chain/draw
        assert var.dims == (dim,)
        np.testing.assert_allclose(var.values, ll, rtol=1e-6, atol=1e-8)
        return
    assert var.dims[:2] == ("chain", "draw")
    if var.sizes["chain"] * var.sizes["draw"] == 1:  # a MAP FitResult: the group is log_likelihood(data)
        np.testing.assert_allclose(var.values.reshape(-1), ll, rtol=1e-6, atol=1e-8)
    if var.sizes["chain"] * var.sizes["draw"] > 1:  # PSIS-LOO needs posterior draws
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            loo = az.loo(idata)
        assert np.isfinite(float(loo.elpd_loo))


@pytest.mark.slow  # ~11 s: two Laplace fits with draws
def test_az_compare_ranks_glms_with_and_without_coupling():
    """Posterior fits of the same data: az.compare ranks them by the same pointwise terms."""
    rng = np.random.default_rng(7)
    t, n = 1500, 2
    counts = np.zeros((t, n), int)
    for i in range(1, t):  # neuron 1 fires after neuron 0
        counts[i, 0] = rng.poisson(0.2)
        counts[i, 1] = rng.poisson(0.05 + 0.8 * counts[i - 1, 0])
    data = bn.SpikeData.from_counts(counts, bin_size=0.01)
    basis = bn.bases.Identity(2)
    fits = {}
    for name, coupling in (("independent", False), ("coupled", True)):
        glm = bn.PoissonGLM(history_basis=basis, coupling=coupling)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            glm.fit(data, method="laplace", key=1, progress=False, num_samples=200)
        idata = glm.to_inference_data()
        assert idata.log_likelihood[next(iter(idata.log_likelihood.data_vars))].sizes["draw"] > 1
        fits[name] = idata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table = az.compare(fits)
    assert table.index[0] == "coupled"


_CV_CASES = [c for c in CASES if c.data in (_glm_data, _trial_data, _place_data, _word_data)]


def _params(cases, slow=()):
    """One parameter per case; the cases named in `slow` (over ~5 s each here) marked slow."""
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.name in slow else []) for c in cases]


@pytest.mark.parametrize("case", _params(_CV_CASES, slow={"PoissonLDS"}))
@pytest.mark.filterwarnings(  # grid decoders, 2 contiguous folds: test positions unseen in training
    r"ignore:\d+ of \d+ decoded bins give the true cell a posterior probability of \(almost\) zero:RuntimeWarning")
def test_cross_validate_takes_any_estimator_of_binned_data(case):
    from bayesneuro.decoders.evaluation import cross_validate

    data = case.data()
    est = case.make()
    by = "trials" if case.data is _trial_data else "time"
    kw = {k: v for k, v in case.fit_kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = cross_validate(est, data, case.target, n_folds=2, by=by, key=0, fit_kwargs={**kw, "progress": False})
        b = cross_validate(est, data, case.target, n_folds=2, by=by, key=0, fit_kwargs={**kw, "progress": False})
    assert not est.is_fitted, "cross_validate must fit clones, not the estimator itself"
    sa, sb = np.asarray(a["score"], float), np.asarray(b["score"], float)
    assert sa.shape == (2,) and np.all(np.isfinite(sa))
    assert a["unit"] == type(est).score_unit
    np.testing.assert_allclose(sa, sb, rtol=1e-10)
    if case.needs_key:
        with pytest.raises(TypeError, match="key"):
            cross_validate(est, data, case.target, n_folds=2, by=by, key=None, fit_kwargs={**kw, "progress": False})


@pytest.mark.parametrize("case", _params([c for c in CASES if c.compare],
                                         slow={"NeuronStatistics", "GPFA", "PoissonHMM", "PoissonLDS"}))
def test_compare_states_takes_any_density_or_encoding_model(case):
    from bayesneuro.density import compare_states

    a, b = case.data(), case.data()
    est = case.make()

    def stats(m):
        return {"score": np.asarray(m.score(a) if case.target is None else m.score(a, case.target))}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cmp = compare_states(est, {"first": a, "second": b}, key=0, n_boot=2, num_samples=20,
                             statistics=None if hasattr(est, "posterior_statistics") else stats,
                             fit_kwargs={k: v for k, v in case.fit_kwargs.items() if k != "num_samples"},
                             progress=False)
    assert cmp.states == ["first", "second"]
    assert not est.is_fitted


# -- SpikeData as rows for scikit-learn ------------------------------------------------------


def test_spikedata_indexing_keeps_runs_apart():
    d = _trial_data(n_trial=3, t=10, n=2)
    np.testing.assert_array_equal(d[np.arange(5, 15)].counts, d.counts[5:15])
    assert d[np.arange(0, 10)].n_trial == 1                   # one whole trial keeps its label
    assert d[np.arange(5, 15)].n_trial == 2                   # crosses a trial boundary: two pieces
    assert d[np.r_[0:3, 6:9]].n_trial == 2                    # a gap inside a trial: two pieces
    mask = np.zeros(d.n_time, bool)
    mask[[1, 2, 3]] = True
    np.testing.assert_array_equal(d[mask].counts, d.counts[1:4])
    assert d[mask].n_trial == 1
    with pytest.raises(IndexError, match="no time bins"):
        d[np.array([], int)]
    with pytest.raises(IndexError, match="out of range"):
        d[[0, 10_000]]
    with pytest.raises(IndexError, match="time bins only"):
        d[0, 1]


def test_sklearn_model_selection_on_an_estimator():
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

    data = _glm_data()
    cv = KFold(3)  # contiguous blocks: each training set is two runs, kept apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        s = cross_val_score(bn.PoissonGLM(), data, cv=cv, params={"progress": False})
    assert s.shape == (3,) and np.all(np.isfinite(s))
    # by hand: the same folds, fitted and scored with our own API
    by_hand = []
    for tr, te in cv.split(np.zeros(data.n_time)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            by_hand.append(bn.PoissonGLM().fit(data[tr], progress=False).score(data[te]))
    np.testing.assert_allclose(s, by_hand, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid = GridSearchCV(bn.PoissonGLM(), {"bias_prior": [(0.0, 10.0), (0.0, 1e-3)]}, cv=cv).fit(
            data, progress=False)
    assert grid.best_params_["bias_prior"] == (0.0, 10.0)  # a bias pinned at 0 cannot fit a rate of e^-2


def test_sklearn_cross_val_score_on_a_decoder():
    from sklearn.model_selection import KFold, cross_val_score

    from bayesneuro.decoders import KalmanDecoder

    data = _place_data()
    y = data.covariates[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        s = cross_val_score(KalmanDecoder(), data, y, cv=KFold(2))
    assert s.shape == (2,) and np.all(np.isfinite(s))
