"""Spike-train communities (Humphries 2011): modularity against its double-sum definition, the
spectral partition against an exhaustive search, the similarity against a direct computation,
and detection on planted populations with negative controls that must be able to fail."""


import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from bayesneuro.density.communities import (
    consensus_communities,
    modularity,
    spectral_partition,
    spike_train_similarity,
)


def _planted(rng, T=4000, sizes=(6, 6), n_free=0, p_on=0.03, extra=4.0, base=0.2):
    """Counts where each group of neurons shares a common drive; ``n_free`` independent neurons."""
    cols, truth = [], []
    for g, size in enumerate(sizes):
        on = rng.random(T) < p_on
        cols.append(np.repeat(on[:, None], size, axis=1))
        truth += [g + 1] * size
    drive = np.concatenate(cols + [np.zeros((T, n_free), bool)], axis=1)
    truth += [0] * n_free
    return rng.poisson(base + extra * drive), np.asarray(truth)


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


def test_modularity_equals_the_double_sum():
    rng = np.random.default_rng(0)
    A = rng.random((9, 9))
    A = A + A.T
    np.fill_diagonal(A, 0)
    labels = rng.integers(0, 3, 9)
    k = A.sum(1)
    two_m = A.sum()
    ref = sum((A[i, j] - k[i] * k[j] / two_m) * (labels[i] == labels[j]) for i in range(9) for j in range(9)) / two_m
    assert modularity(A, labels) == pytest.approx(ref, rel=1e-12)
    assert modularity(A, np.zeros(9)) == pytest.approx(0.0, abs=1e-12)  # one group: Q = 0


def test_spectral_partition_finds_the_exhaustive_optimum_of_a_block_network():
    rng = np.random.default_rng(1)
    truth = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    A = np.where(truth[:, None] == truth[None, :], 1.0, 0.15) * rng.uniform(0.8, 1.2, (9, 9))
    A = 0.5 * (A + A.T)
    np.fill_diagonal(A, 0)
    best = max(_set_partitions(list(range(9))),
               key=lambda part: modularity(A, np.array([next(i for i, g in enumerate(part) if n in g) for n in range(9)])))
    best_labels = np.array([next(i for i, g in enumerate(best) if n in g) for n in range(9)])
    labels, q = spectral_partition(A, key=0)
    assert q == pytest.approx(modularity(A, best_labels), rel=1e-12)
    assert q == pytest.approx(modularity(A, labels), rel=1e-12)
    assert len({tuple(np.flatnonzero(labels == g)) for g in np.unique(labels)}
               ^ {tuple(g) for g in (np.flatnonzero(truth == t) for t in range(3))}) == 0


def test_no_positive_eigenvalue_means_one_group():
    A = np.ones((5, 5)) - np.eye(5)  # a complete graph has no community structure
    labels, q = spectral_partition(A, key=0)
    assert labels.tolist() == [0] * 5 and q == 0.0


def test_similarity_is_the_cosine_of_smoothed_trains_and_stops_at_trial_boundaries():
    rng = np.random.default_rng(2)
    x = rng.poisson(0.5, (300, 4))
    f = gaussian_filter1d(x.astype(float), 3.0, axis=0, mode="constant")
    ref = (f.T @ f) / np.outer(np.linalg.norm(f, axis=0), np.linalg.norm(f, axis=0))
    np.fill_diagonal(ref, 0)
    np.testing.assert_allclose(spike_train_similarity(x, sigma=3.0), ref, rtol=1e-12)
    # a spike at the end of trial 0 and one at the start of trial 1 do not meet when smoothed
    y = np.zeros((20, 3), int)
    y[9, 0] = y[10, 1] = 1
    y[[2, 15], 2] = 1
    seg = np.repeat([0, 1], 10)
    assert spike_train_similarity(y, sigma=2.0)[0, 1] > 0.5
    assert spike_train_similarity(y, sigma=2.0, segment_ids=seg)[0, 1] == 0.0


def test_planted_communities_of_unequal_sizes_are_found_and_significant():
    from sklearn.metrics import adjusted_rand_score

    x, truth = _planted(np.random.default_rng(3), sizes=(3, 9, 5), n_free=0)
    res = consensus_communities(x, key=0, n_shuffles=19)
    assert res.significant and res.p_value == pytest.approx(0.05)
    assert res.n_communities == 3
    assert adjusted_rand_score(truth, res.labels) == 1.0
    np.testing.assert_allclose(res.consensus, (truth[:, None] == truth[None, :]).astype(float))
    again = consensus_communities(x, key=0, n_shuffles=19)
    np.testing.assert_array_equal(again.labels, res.labels)
    assert again.modularity == res.modularity and np.array_equal(again.null_modularity, res.null_modularity)


def test_independent_and_time_shifted_neurons_give_no_communities():
    # negative controls: independent neurons, and the planted data with each neuron shifted in
    # time; the same test on the planted data (positive control) must find them every time
    rng = np.random.default_rng(4)
    n_sig_indep, n_sig_shift, n_found = 0, 0, 0
    for rep in range(8):
        x, _ = _planted(rng, T=3000, sizes=(5, 5))
        n_found += consensus_communities(x, key=rep, sigmas=(2.0,), n_runs=5, n_shuffles=19).n_communities == 2
        shifted = np.stack([np.roll(x[:, n], rng.integers(300, 2700)) for n in range(10)], axis=1)
        n_sig_shift += consensus_communities(shifted, key=rep, sigmas=(2.0,), n_runs=5, n_shuffles=19).significant
        indep = rng.poisson(rng.uniform(0.02, 2.0, 10), (3000, 10))  # heterogeneous rates
        n_sig_indep += consensus_communities(indep, key=rep, sigmas=(2.0,), n_runs=5, n_shuffles=19).significant
    assert n_found == 8
    assert n_sig_indep <= 2 and n_sig_shift <= 2  # 5% expected per recording


def test_bad_input_is_named():
    x = np.random.default_rng(5).poisson(1.0, (100, 5))
    silent = x.copy()
    silent[:, 3] = 0
    with pytest.raises(ValueError, match=r"column\(s\) \[3\] have no spikes"):
        consensus_communities(silent, key=0)
    with pytest.raises(ValueError, match="at least 3 neurons"):
        consensus_communities(x[:, :2], key=0)
    with pytest.raises(TypeError, match="key"):
        consensus_communities(x, key=None)
    with pytest.raises(ValueError, match="sigmas"):
        consensus_communities(x, key=0, sigmas=(-1.0,))
    with pytest.raises(ValueError, match="n_shuffles"):
        consensus_communities(x, key=0, n_shuffles=-1)
    with pytest.raises(ValueError, match="segment_ids must have 100 entries"):
        spike_train_similarity(x, sigma=1.0, segment_ids=np.zeros(99))
