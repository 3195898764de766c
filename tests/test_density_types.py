"""Neuron types: mixture log-likelihood vs scipy, Bayes-rule memberships, K recovery, bad input."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from bayesneuro.density.types import (
    MixtureParams,
    NeuronTypes,
    membership_probabilities,
    mixture_log_likelihood,
    relabel_draws,
)

# NeuronTypes' choice of K on 60 neurons is checked by what it picks here; when a Pareto k is high
# it warns and cross-validates instead (test_unreliable_loo_falls_back_to_kfold_on_real_neurons)
PARETO_K_WARNING = pytest.mark.filterwarnings("ignore:PSIS-LOO is unreliable:UserWarning")


def _params(rng, k=3, d=2):
    w = rng.dirichlet(np.ones(k))
    return MixtureParams(w, rng.normal(0, 2, (k, d)), rng.uniform(0.3, 2.0, (k, d)))


def test_mixture_log_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    p = _params(rng)
    x = rng.normal(0, 2, (7, 2))
    ref = np.log(sum(p.weights[k] * np.prod(stats.norm.pdf(x, p.means[k], p.scales[k]), axis=1)
                     for k in range(3)))
    np.testing.assert_allclose(np.asarray(mixture_log_likelihood(x, p)), ref, rtol=1e-10)


def test_membership_is_bayes_rule():
    rng = np.random.default_rng(1)
    p = _params(rng)
    x = rng.normal(0, 2, (7, 2))
    joint = np.stack([np.log(p.weights[k]) + stats.norm.logpdf(x, p.means[k], p.scales[k]).sum(1)
                      for k in range(3)], axis=1)
    ref = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    np.testing.assert_allclose(np.asarray(membership_probabilities(x, p)), ref, rtol=1e-10)


def test_draw_batched_numpy_summaries_match_scipy_per_draw():
    # the numpy summaries NeuronTypes uses (no eager JAX programs) against scipy draw by draw
    from bayesneuro.density.types import _draws_log_likelihood, _draws_log_predictive, _draws_membership

    rng = np.random.default_rng(2)
    draws = [_params(rng) for _ in range(5)]
    w, m, s = (np.stack([getattr(p, f) for p in draws]) for f in ("weights", "means", "scales"))
    x = rng.normal(0, 2, (7, 2))
    joint = np.stack([np.stack([np.log(p.weights[k]) + stats.norm.logpdf(x, p.means[k], p.scales[k]).sum(1)
                                for k in range(3)], axis=1) for p in draws])  # (draw, neuron, type)
    ll = logsumexp(joint, axis=-1)
    np.testing.assert_allclose(_draws_log_likelihood(x, w, m, s), ll, rtol=1e-12)
    np.testing.assert_allclose(_draws_log_predictive(x, w, m, s), logsumexp(ll, axis=0) - np.log(5), rtol=1e-12)
    mem = np.exp(joint - logsumexp(joint, axis=-1, keepdims=True)).mean(0)
    np.testing.assert_allclose(_draws_membership(x, w, m, s), mem, rtol=1e-12)
    # and the public JAX functions agree with them on one draw
    np.testing.assert_allclose(np.asarray(mixture_log_likelihood(x, draws[0])), ll[0], rtol=1e-10)


def test_relabel_draws_undoes_permutations():
    rng = np.random.default_rng(2)
    ref = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    perms = np.array([rng.permutation(3) for _ in range(20)])
    means = ref[perms] + rng.normal(0, 0.1, (20, 3, 2))
    fixed = np.take_along_axis(means, relabel_draws(means, ref)[:, :, None], axis=1)
    assert np.abs(fixed - ref).max() < 0.5


@pytest.fixture(scope="module")
def three_clusters():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    truth = np.repeat(np.arange(3), 20)
    x = centres[truth] + rng.normal(0, 0.3, (60, 2))
    return x, truth, NeuronTypes(max_types=4).fit(x, key=0, n_restarts=3, feature_names=["a", "b"], progress=False)


@pytest.mark.slow  # ~20 s with the module fixture: NeuronTypes over K = 1..4 with restarts
@PARETO_K_WARNING
def test_three_clusters_chosen_and_recovered(three_clusters):
    x, truth, nt = three_clusters
    assert nt.n_types_ == 3
    # accuracy up to a permutation of labels: each true cluster maps to one label
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (truth, nt.labels_), 1)
    assert conf.max(1).sum() == 60 and len(set(conf.argmax(1))) == 3
    assert nt.membership_.dims == ("neuron", "type")
    np.testing.assert_allclose(nt.membership_.sum("type"), 1.0, rtol=1e-10)
    # type means in original units are near the true centres
    tm = np.sort(nt.type_means_.values, axis=0)
    np.testing.assert_allclose(tm, np.sort(np.array([[0, 0], [3, 0], [0, 3.0]]), axis=0), atol=0.3)


@pytest.mark.slow  # shares the ~20 s three-cluster fit
@PARETO_K_WARNING
def test_posterior_statistics_contract(three_clusters):
    _, _, nt = three_clusters
    s = nt.posterior_statistics(key=0, num_samples=30)
    assert s["weights"].dims == ("draw", "type") and s["weights"].sizes["draw"] == 30
    assert s["means"].dims == ("draw", "type", "feature")
    np.testing.assert_allclose(s["weights"].sum("type"), 1.0, rtol=1e-10)
    assert np.all((s["effective_n_types"] > 1) & (s["effective_n_types"] <= 3 + 1e-9))
    idata = nt.to_inference_data()
    assert idata.log_likelihood["features"].dims == ("chain", "draw", "neuron")


@pytest.mark.slow  # ~20 s: NeuronTypes over K = 1..4 (compiles the mixture fit)
@PARETO_K_WARNING
def test_one_gaussian_gives_one_type():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (60, 2))
    nt = NeuronTypes(max_types=4).fit(x, key=1, n_restarts=3, progress=False)
    assert nt.n_types_ == 1


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.array([[1.0, np.nan], [2.0, 1.0], [3.0, 2.0]]), {}, "NaN"),
        (np.ones((2, 2)) * [[1.0], [2.0]], {}, "at least 3 neurons"),
        (np.column_stack([np.arange(5.0), np.ones(5)]), {}, "constant"),
        (np.column_stack([np.arange(5.0), np.arange(5.0) ** 2]), {"log_features": "all"}, "values <= 0"),
    ],
)
def test_bad_inputs(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuronTypes(2, **kwargs).fit(x, key=0, n_restarts=1, progress=False)


def test_bad_max_types():
    with pytest.raises(ValueError, match="max_types must be an integer >= 1"):
        NeuronTypes(0)


@pytest.mark.slow  # ~60 s: K = 1, 2 on all neurons and on 3 folds (compiles two neuron counts)
def test_unreliable_loo_falls_back_to_kfold_on_real_neurons(shared_data):
    """30 real motor-cortex neurons: PSIS-LOO of the K = 2 mixture has neurons above the Pareto-k
    limit, so K must be chosen by K-fold cross-validation over neurons, with a warning that
    counts them (checked against arviz's own Pareto k) and says what was done."""
    import warnings

    from bayesneuro.density import NeuronStatistics, SpikeTrains
    from bayesneuro.diagnostics import loo

    raw = np.load(shared_data / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz", allow_pickle=False)
    n_trial = 200
    sel = raw["trial_ids"] < n_trial
    trains = SpikeTrains.from_times(raw["trial_ids"][sel] * 2.0 + raw["spiketimes"][sel] / 1000.0,
                                    raw["neuron_ids"][sel], neuron_ids=np.arange(30),
                                    segments=np.column_stack([np.arange(n_trial) * 2.0, np.arange(n_trial) * 2.0 + 2]))
    features = NeuronStatistics().fit(trains, key=0, num_samples=50).features()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        nt = NeuronTypes(max_types=2).fit(features, key=3, n_restarts=2, cv_folds=3, progress=False)
    msgs = [str(w.message) for w in record if "PSIS-LOO is unreliable" in str(w.message)]
    assert len(msgs) == 1 and "3-fold cross-validation over neurons" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k_hat = {k: np.asarray(loo(f.to_inference_data(), pointwise=True).pareto_k) for k, f in nt.fits_.items()}
    high = {k: int(np.sum(v > 0.7)) for k, v in k_hat.items()}
    assert any(high.values())
    for k, c in high.items():
        assert (f"K={k}: {c}" in msgs[0]) == (c > 0)
    assert nt.selection_ == "kfold" and sorted(nt.cv_table_.index) == ["K=1", "K=2"]
    tab = nt.cv_table_
    within = tab.index[(tab.elpd_diff <= tab.dse + 1e-12).to_numpy()]
    assert nt.n_types_ == min(int(s[2:]) for s in within)
    if nt.n_types_ == 2:  # the largest candidate: it must say so
        assert any("largest candidate" in str(w.message) for w in record)
