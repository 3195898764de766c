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

# arviz's PSIS-LOO warns (UserWarning) when a Pareto k is high; NeuronTypes' LOO choice of K on
# 60 neurons is checked by what it picks, not by the diagnostic
PARETO_K_WARNING = pytest.mark.filterwarnings(
    "ignore:Estimated shape parameter of Pareto distribution is greater than:UserWarning"
)


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
