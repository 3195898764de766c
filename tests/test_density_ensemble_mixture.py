"""The ensemble mixture (a probabilistic partition of neurons, fitted through the shared inference
layer): its likelihood against scipy, recovery of planted ensembles, calibrated memberships (and
the over-confident plug-in ones they replace), and the held-out choice of the number of
ensembles with negative controls."""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from bayesneuro.density.ensemble_mixture import (
    component_log_likelihood,
    cross_validate_ensembles,
    fit_ensemble_mixture,
    memberships,
)


def _planted(rng, sizes=(8, 8), T=2000, gain=0.8, rate=0.5):
    truth = np.repeat(np.arange(len(sizes)), sizes)
    drive = rng.normal(size=(len(sizes), T))
    return rng.poisson(np.exp(np.log(rate) + gain * drive[truth].T)), truth


def test_component_log_likelihood_equals_scipy_and_the_pointwise_log_likelihood():
    rng = np.random.default_rng(0)
    x, _ = _planted(rng, sizes=(3, 3), T=300)
    fit = fit_ensemble_mixture(x, 2, key=0)
    ll = component_log_likelihood(x, fit.offset, fit.loadings, fit.factors)
    for n in range(6):
        for k in range(2):
            lam = np.exp(fit.offset[n] + fit.loadings[k, n] * fit.factors[k])
            assert ll[n, k] == pytest.approx(stats.poisson.logpmf(x[:, n], lam).sum(), rel=1e-10)
    # the model's observed site has one log-likelihood per neuron: the mixture over ensembles
    idata = fit.result.to_inference_data()
    pointwise = np.asarray(idata.log_likelihood["counts"]).reshape(-1)
    np.testing.assert_allclose(pointwise, logsumexp(np.log(fit.weights) + ll, axis=1), rtol=1e-9)
    assert idata.log_likelihood["counts"].dims[-1] == "neuron"


def test_planted_ensembles_of_unequal_sizes_are_recovered():
    from sklearn.metrics import adjusted_rand_score

    x, truth = _planted(np.random.default_rng(1), sizes=(4, 10, 6), T=3000)
    fit = fit_ensemble_mixture(x, 3, key=0)
    assert adjusted_rand_score(truth, fit.membership.argmax(1)) == 1.0
    assert np.all(fit.membership.max(1) > 0.99)
    same = (truth[:, None] == truth[None, :]).astype(float)
    np.testing.assert_allclose(fit.co_membership, same, atol=0.01)
    again = fit_ensemble_mixture(x, 3, key=0)
    np.testing.assert_array_equal(again.membership, fit.membership)  # same key, same fit


def test_memberships_are_calibrated_and_the_plug_in_ones_are_not():
    # weakly driven neurons: uncertain memberships; over 8 simulations the mean stated probability
    # of the chosen ensemble must match how often it is right (3 standard errors)
    rng = np.random.default_rng(2)
    stated, plug, right, right_plug = [], [], [], []
    for rep in range(8):
        T, m = 600, 12
        drive = rng.normal(size=(2, T))
        gains = rng.uniform(0.05, 0.6, 2 * m)
        truth = np.repeat([0, 1], m)
        x = rng.poisson(np.exp(np.log(0.4) + gains * drive[truth].T))
        fit = fit_ensemble_mixture(x, 2, key=rep)
        strong = gains > 0.4
        flip = np.mean(fit.membership[strong & (truth == 0), 0]) < 0.5
        label = truth if not flip else 1 - truth
        r = fit.membership
        p = memberships(x, fit.offset, fit.loadings, fit.factors, fit.weights)
        stated += list(r.max(1))
        right += list(r.argmax(1) == label)
        plug += list(p.max(1))
        right_plug += list(p.argmax(1) == label)
    stated, right, plug, right_plug = map(np.asarray, (stated, right, plug, right_plug))
    se = np.sqrt(right.mean() * (1 - right.mean()) / right.size)
    assert abs(stated.mean() - right.mean()) < 3 * se
    sure = stated > 0.99
    assert sure.sum() > 50 and right[sure].mean() > 0.97
    # Bayes' rule with the neuron inside the drives it is scored against claims too much
    se_p = np.sqrt(right_plug.mean() * (1 - right_plug.mean()) / right_plug.size)
    assert plug.mean() - right_plug.mean() > 3 * se_p


def test_held_out_choice_finds_the_planted_number_and_none_in_independent_or_shifted_neurons():
    rng = np.random.default_rng(3)
    x, _ = _planted(rng, sizes=(5, 5), T=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cv = cross_validate_ensembles(x, (0, 1, 2, 3), key=0)
    assert cv.best == 2 and cv.score[2] > cv.score[1] + 2 * cv.se[1]
    # negative controls: heterogeneous independent neurons, and the planted ones shifted in time
    indep = rng.poisson(rng.uniform(0.1, 2.0, 10), (2000, 10))
    shifted = np.stack([np.roll(x[:, n], rng.integers(200, 1800)) for n in range(10)], axis=1)
    for y in (indep, shifted):
        cv0 = cross_validate_ensembles(y, (0, 1, 2), key=0)  # 0 is the floor: no edge warning
        assert cv0.best == 0 and np.all(cv0.score[1:] < 0)


def test_independent_model_and_bad_input():
    rng = np.random.default_rng(4)
    x = rng.poisson(1.0, (300, 5))
    fit = fit_ensemble_mixture(x, 0, key=0)
    np.testing.assert_allclose(np.exp(fit.offset), x.mean(0), rtol=0.02)  # the prior barely moves it
    assert fit.membership.shape == (5, 0)
    with pytest.raises(ValueError, match="whole numbers.*time bin 3, neuron column 1"):
        bad = x.astype(float)
        bad[3, 1] = 0.5
        fit_ensemble_mixture(bad, 2, key=0)
    silent = x.copy()
    silent[:, 4] = 0
    with pytest.raises(ValueError, match=r"column\(s\) \[4\] have no spikes"):
        fit_ensemble_mixture(silent, 2, key=0)
    with pytest.raises(ValueError, match="n_ensembles must be an integer between 0 and"):
        fit_ensemble_mixture(x, 6, key=0)
    with pytest.raises(TypeError, match="key"):
        fit_ensemble_mixture(x, 2, key=None)
    with pytest.raises(ValueError, match="too short"):
        cross_validate_ensembles(x[:30], (0, 1), key=0)
