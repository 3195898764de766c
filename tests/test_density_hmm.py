"""Tests of bayesneuro.density.hmm: brute-force enumeration, scipy, and simulation."""

import itertools

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import poisson

from bayesneuro import SpikeData
from bayesneuro.density.hmm import (
    PoissonHMM,
    PoissonHMMCounts,
    forward,
    log_emissions,
    sample_poisson_hmm,
    select_n_states,
    smoothed_states,
    viterbi,
)

K3_A = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
K3_RATES = np.array([[2.0, 10.0, 5.0, 1.0], [10.0, 2.0, 1.0, 20.0], [20.0, 20.0, 10.0, 5.0]])  # Hz
BIN = 0.05


def tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.ones(3))
    A = rng.dirichlet(np.ones(3), size=3)
    mu = rng.uniform(0.2, 3.0, size=(3, 2))
    x = rng.poisson(1.5, size=(6, 2))
    return pi, A, mu, x


def brute_force(pi, A, mu, x, starts):
    """log p(z, x) for every path z (K^T of them)."""
    T, K = x.shape[0], pi.shape[0]
    le = poisson.logpmf(x[:, None, :], mu[None]).sum(-1)
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    lp = np.zeros(len(paths))
    for t in range(T):
        lp += np.where(starts[t], np.log(pi)[paths[:, t]], np.log(A)[paths[:, t - 1], paths[:, t]] if t else 0)
        lp += le[t, paths[:, t]]
    return paths, lp


@pytest.mark.parametrize("starts", [np.r_[True, np.zeros(5, bool)], np.array([1, 0, 0, 1, 0, 0], bool)])
def test_forward_smoothing_viterbi_vs_enumeration(starts):
    pi, A, mu, x = tiny_problem()
    paths, lp = brute_force(pi, A, mu, x, starts)
    le = log_emissions(x, mu)
    ll, _, pointwise = forward(np.log(pi), np.log(A), le, starts)
    assert float(ll) == pytest.approx(logsumexp(lp), abs=1e-10)
    assert float(pointwise.sum()) == pytest.approx(float(ll), abs=1e-10)
    post = np.exp(lp - logsumexp(lp))
    ref = np.stack([[post[paths[:, t] == k].sum() for k in range(3)] for t in range(6)])
    np.testing.assert_allclose(smoothed_states(np.log(pi), np.log(A), le, starts), ref, atol=1e-10)
    z, lz = viterbi(np.log(pi), np.log(A), le, starts)
    np.testing.assert_array_equal(np.asarray(z), paths[np.argmax(lp)])
    assert float(lz) == pytest.approx(lp.max(), abs=1e-10)


def test_log_emissions_vs_scipy_and_distribution():
    pi, A, mu, x = tiny_problem(1)
    ref = np.array([[poisson.logpmf(x[t], mu[k]).sum() for k in range(3)] for t in range(6)])
    np.testing.assert_allclose(log_emissions(x, mu), ref, atol=1e-12)
    starts = np.r_[True, np.zeros(5, bool)]
    d = PoissonHMMCounts(pi, A, mu, starts)
    assert float(d.log_prob(x)) == pytest.approx(logsumexp(brute_force(pi, A, mu, x, starts)[1]), abs=1e-10)
    assert d.sample(jax.random.key(0), (2,)).shape == (2, 6, 2)


@pytest.fixture(scope="module")
def sim3():
    starts = np.zeros(800, bool)
    starts[::200] = True
    z, x = sample_poisson_hmm(jax.random.key(3), np.ones(3) / 3, K3_A, K3_RATES * BIN, starts)
    data = SpikeData(np.asarray(x), bin_size=BIN, trial_ids=np.repeat(np.arange(4), 200))
    return data, np.asarray(z)


@pytest.fixture(scope="module")
def hmm3(sim3):
    return PoissonHMM(3).fit(sim3[0], key=0, n_restarts=3, progress=False)


@pytest.mark.slow  # ~20 s with the module fixture: PoissonHMM fit with posterior
def test_recovery_within_posterior_sds(sim3, hmm3):
    stats = hmm3.posterior_statistics(key=1, num_samples=300)
    sd = stats["rate"].std("draw").values
    # true states are in ascending total rate already, as the fit's canonical order
    assert np.all(np.abs(hmm3.params_.rate - K3_RATES) < 4 * sd)
    A_draws = hmm3._laplace.flat_samples()["transition_matrix"]
    assert np.all(np.abs(hmm3.params_.transition_matrix - K3_A) < 4 * A_draws.std(axis=0) + 1e-3)
    # Viterbi recovers most bins' states
    assert np.mean(hmm3.most_likely_states(sim3[0]) == sim3[1]) > 0.9
    # contract of posterior_statistics
    assert stats["rate"].dims == ("draw", "hidden_state", "neuron") and stats["rate"].sizes["draw"] == 300
    np.testing.assert_allclose(stats["occupancy"].sum("hidden_state"), 1.0, atol=1e-8)
    A_kk = np.diagonal(hmm3.params_.transition_matrix)
    assert np.all(np.abs(stats["dwell_time"].median("draw").values - BIN / (1 - A_kk)) < 0.5 * BIN / (1 - A_kk))


@pytest.mark.slow  # shares the ~10 s PoissonHMM fit
def test_segments_restart(sim3, hmm3):
    data = sim3[0]
    total = sum(hmm3.log_likelihood(tr).sum() for tr in data.iter_trials())
    assert hmm3.log_likelihood(data).sum() == pytest.approx(total, rel=1e-10)
    path = np.concatenate([hmm3.most_likely_states(tr) for tr in data.iter_trials()])
    np.testing.assert_array_equal(hmm3.most_likely_states(data), path)
    post = hmm3.posterior_states(data)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-10)
    assert hmm3.score(data) == pytest.approx(hmm3.log_likelihood(data).sum() / data.n_time)


@pytest.mark.slow  # shares the ~10 s PoissonHMM fit
def test_inference_data(hmm3, sim3):
    idata = hmm3.to_inference_data()  # MAP (the default): a point fit, no posterior
    assert "posterior" not in idata.groups() and idata.point_estimate.attrs["method"] == "map"
    assert "chain" not in idata.point_estimate.dims
    ll = idata.log_likelihood["counts"]
    assert ll.dims == ("trial",)
    assert float(ll.sum()) == pytest.approx(hmm3.log_likelihood(sim3[0]).sum(), rel=1e-8)
    for group in idata.groups():
        for name in idata[group].dims:
            assert "_dim_" not in name


@pytest.mark.slow  # ~30 s: 8 MAP fits with restarts
def test_select_n_states_and_negative_control(sim3):
    x = sim3[0].counts
    sel = select_n_states(x[:600], x[600:], [1, 2, 3, 4], key=0, n_restarts=2, progress=False, bin_size=BIN)
    assert sel.n_states == 3
    flat = np.asarray(jax.random.poisson(jax.random.key(9), np.full((800, 4), 10.0 * BIN)))
    null = select_n_states(flat[:600], flat[600:], [1, 2, 3, 4], key=0, n_restarts=2, progress=False, bin_size=BIN)
    assert null.n_states == 1


@pytest.mark.slow  # ~10 s: two MAP fits and the 3-state simulation
def test_select_n_states_on_the_edge_of_the_candidates_warns(sim3):
    """Three true states, candidates 1..2: the choice lands on the largest candidate, which must
    say so and ask for a wider range; candidates 1..4 (choosing 3) stay silent."""
    x = sim3[0].counts
    with pytest.warns(UserWarning, match=r"number of states is the largest candidate \(2, of 1..2\).*widen"):
        sel = select_n_states(x[:600], x[600:], [1, 2], key=0, n_restarts=1, progress=False, bin_size=BIN)
    assert sel.n_states == 2


def test_bad_inputs():
    x = np.ones((10, 2), int)
    with pytest.raises(ValueError, match="non-negative"):
        PoissonHMM(2).fit(x - 2, key=0, bin_size=0.1)
    with pytest.raises(ValueError, match="NaN"):
        PoissonHMM(2).fit(np.where(np.eye(10, 2) > 0, np.nan, 1.0), key=0, bin_size=0.1)
    with pytest.raises(ValueError, match="n_states"):
        PoissonHMM(0)
    with pytest.raises(ValueError, match="method"):
        PoissonHMM(2).fit(x, method="svi", key=0, bin_size=0.1)
    with pytest.raises(ValueError, match="at least 2 bins per trial"):
        PoissonHMM(2).fit(SpikeData(x, bin_size=0.1, trial_ids=np.r_[0, np.ones(9, int)]), key=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        PoissonHMM(2).score(x)
    with pytest.raises(TypeError, match="key"):
        PoissonHMM(2).fit(x, key=None, bin_size=0.1)


@pytest.mark.slow  # ~15 s: PoissonHMM fits per state
def test_compare_states_dwell_times():
    """compare_states with a Poisson HMM: the hidden states keep their own dim, and the interval of
    the dwell-time difference between a sticky and a switching chain holds the true -4.5 s."""
    from bayesneuro.density import compare_states

    R = np.array([[0.5, 2.0], [3.0, 0.5]])
    data = {}
    for name, stay in (("slow", 0.98), ("fast", 0.8)):
        A = np.array([[stay, 1 - stay], [1 - stay, stay]])
        _, x = sample_poisson_hmm(jax.random.key(1), np.array([0.5, 0.5]), A, R, np.r_[True, np.zeros(1999, bool)])
        data[name] = SpikeData.from_counts(np.asarray(x), bin_size=0.1)
    cmp = compare_states(PoissonHMM(2), data, key=0, num_samples=200, progress=False,
                         fit_kwargs={"method": "laplace", "n_restarts": 2, "progress": False})
    assert cmp.draws["rate"].dims == ("state", "draw", "hidden_state", "neuron")
    d = cmp.differences().query("statistic == 'dwell_time'")
    truth = 0.1 / 0.2 - 0.1 / 0.02
    assert len(d) == 2 and ((d.lower < truth) & (truth < d.upper)).all() and (d.upper < 0).all()
