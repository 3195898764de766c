"""The Ensembles estimator: one interface over assemblies, communities and the mixture, checked
on planted populations against the methods' own functions, with negative controls, transform on
another epoch, compare_states between a structured and an independent state, and the plot."""

import numpy as np
import pytest

import bayesneuro as bn
from bayesneuro.density import (
    Ensembles,
    compare_states,
    ensemble_similarity,
    plot_ensembles,
)
from bayesneuro.density.assemblies import assembly_activity


def _shared_drive(rng, T=3000, groups=((0, 1, 2, 3, 4), (8, 9, 10, 11, 12, 13)), N=16, rate=0.5, gain=0.8):
    eta = np.full((T, N), np.log(rate))
    for g in groups:
        eta[:, list(g)] += gain * rng.normal(size=T)[:, None]
    return rng.poisson(np.exp(eta))


def _labels_of(groups, N):
    lab = np.full(N, -1)
    for i, g in enumerate(groups):
        lab[list(g)] = i
    return lab


@pytest.mark.parametrize("method", ["assemblies", "communities", "mixture"])
def test_every_method_finds_the_planted_ensembles(method):
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    groups = ((0, 1, 2, 3, 4), (8, 9, 10, 11, 12, 13))
    x = _shared_drive(rng, groups=groups)
    kw = {"communities": {"sigmas": (0.0, 2.0), "n_shuffles": 19},
          "mixture": {"candidates": (0, 1, 2, 3), "n_folds": 3}}.get(method, {})
    ens = Ensembles(method, **kw).fit(x, key=0)
    assert ens.n_ensembles_ == 2 if method != "mixture" else ens.n_ensembles_ in (2, 3)
    truth = _labels_of(groups, 16)
    planted = truth >= 0
    assert adjusted_rand_score(truth[planted], ens.labels_[planted]) == 1.0
    co = ens.co_membership_.values
    np.testing.assert_array_equal(co, co.T)
    assert np.all(np.diag(co) == 1)
    assert ens.activity_.dims == ("time", "ensemble") and ens.activity_.shape == (3000, ens.n_ensembles_)
    assert ens.membership_.dims == ("neuron", "ensemble")


@pytest.mark.parametrize("method", ["assemblies", "communities", "mixture"])
def test_independent_neurons_give_no_ensembles(method):
    rng = np.random.default_rng(1)
    x = rng.poisson(rng.uniform(0.1, 1.5, 16), (3000, 16))
    kw = {"candidates": (0, 1, 2), "n_folds": 3} if method == "mixture" else {}
    ens = Ensembles(method, **kw).fit(x, key=0)
    assert ens.n_ensembles_ == 0 and np.all(ens.labels_ == -1)
    stats = ens.summary_statistics()
    assert float(stats["n_ensembles"]) == 0 and float(stats["fraction_in_ensembles"]) == 0


def test_assemblies_activity_and_transform_on_another_epoch():
    rng = np.random.default_rng(2)
    x = _shared_drive(rng)
    ens = Ensembles().fit(x, key=0)
    np.testing.assert_allclose(ens.activity_.values, assembly_activity(x, ens.detail_), rtol=1e-12)
    later = _shared_drive(rng, T=1000)
    np.testing.assert_allclose(ens.transform(later).values, assembly_activity(later, ens.detail_), rtol=1e-12)
    with pytest.raises(ValueError, match="neurons"):
        ens.transform(later[:, :10])


def test_mixture_transform_recovers_the_drive_of_a_new_epoch():
    rng = np.random.default_rng(3)
    T, groups = 3000, ((0, 1, 2, 3, 4, 5), (8, 9, 10, 11, 12, 13))
    drive = rng.normal(size=(2, T + 1000))
    eta = np.full((T + 1000, 16), np.log(0.8))
    for i, g in enumerate(groups):
        eta[:, list(g)] += 0.8 * drive[i][:, None]
    x = rng.poisson(np.exp(eta))
    ens = Ensembles("mixture", n_ensembles=2).fit(x[:T], key=0)
    act = ens.transform(x[T:]).values
    r = np.abs(np.corrcoef(act.T, drive[:, T:])[:2, 2:])
    assert np.all(r.max(axis=1) > 0.8)


def test_compare_states_sees_ensembles_in_one_state_only_and_similarity():
    rng = np.random.default_rng(4)
    structured = bn.SpikeData.from_counts(_shared_drive(rng, T=4000), bin_size=0.02)
    independent = bn.SpikeData.from_counts(rng.poisson(0.5, (4000, 16)), bin_size=0.02)
    cmp = compare_states(Ensembles(), {"wake": structured, "sleep": independent}, key=0, n_boot=10, progress=False)
    d = cmp.difference("n_ensembles", "sleep").values  # sleep minus wake, bootstrap draws
    assert np.quantile(d, 0.95) < 0
    a = Ensembles().fit(structured, key=0)
    b = Ensembles().fit(bn.SpikeData.from_counts(_shared_drive(rng, T=4000), bin_size=0.02), key=1)
    sim = ensemble_similarity(a, b)
    assert sim["adjusted_rand"] == 1.0 and np.all(sim["pattern_similarity"] > 0.95)
    c = Ensembles().fit(bn.SpikeData.from_counts(_shared_drive(rng, T=4000, groups=((1, 3, 5, 7, 9),)),
                                                 bin_size=0.02), key=0)
    assert ensemble_similarity(a, c)["adjusted_rand"] < 0.5


def test_plot_and_errors():
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(5)
    x = _shared_drive(rng)
    ens = Ensembles().fit(x, key=0)
    fig = plot_ensembles(ens, x)
    assert len(fig.axes) == 3  # the matrix, its colourbar, the activity
    assert len(fig.axes[0].patches) == ens.n_ensembles_
    with pytest.raises(ValueError, match="method must be one of"):
        Ensembles("kmeans").fit(x, key=0)
    with pytest.raises(TypeError, match="key"):
        Ensembles().fit(x, key=None)
    with pytest.raises(Exception, match="not fitted"):
        Ensembles().summary_statistics()


def test_held_out_score_is_positive_for_ensembles_and_about_zero_without():
    from scipy import stats

    rng = np.random.default_rng(6)
    x = _shared_drive(rng, T=4000)
    ens = Ensembles().fit(x[:3000], key=0)
    assert ens.score(x[3000:]) > 0.05
    # the log-likelihood is a Poisson read-out of the other members' mean z-scored counts
    z = (x[3000:] - x[:3000].mean(0)) / x[:3000].std(0)
    m = np.flatnonzero(ens.labels_ == ens.labels_[0])
    g = z[:, m[m != 0]].mean(1)
    ref = stats.poisson.logpmf(x[3000:, 0], np.exp(ens.offset_[0] + ens.gain_[0] * g)).sum()
    assert ens.log_likelihood(x[3000:])[0] == pytest.approx(ref, rel=1e-10)
    indep = rng.poisson(0.5, (4000, 16))
    none = Ensembles().fit(indep[:3000], key=0)
    # here the Marchenko-Pastur edge (asymptotic) lets one spurious assembly through; on held-out
    # bins it predicts nothing
    assert abs(none.score(indep[3000:])) < 0.005
