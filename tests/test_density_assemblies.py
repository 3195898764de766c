"""Cell assemblies (Lopes-dos-Santos et al. 2013): streamed correlations, the Marchenko-Pastur
count, PCA/ICA patterns and activation strength, each against a plain numpy (or sklearn)
computation of the same thing, and detection checked on planted and on independent populations."""

import numpy as np
import pytest

from bayesneuro.density.assemblies import (
    AssemblyPatterns,
    assembly_activity,
    assembly_members,
    assembly_patterns,
    correlation_matrix,
    fast_ica,
    marchenko_pastur,
)


def _planted(rng, T=20_000, N=40, groups=((0, 1, 2, 3, 4), (10, 11, 12, 13, 14, 15, 16, 17)), p_on=0.04,
             extra=3.0, base=0.4):
    """Poisson counts with assemblies: each group's members fire ``extra`` more spikes on its bins."""
    rate = np.full((T, N), base)
    for members in groups:
        on = rng.random(T) < p_on
        rate[np.ix_(on, list(members))] += extra
    return rng.poisson(rate)


def _members(patterns: AssemblyPatterns) -> list[list[int]]:
    return sorted(sorted(m.tolist()) for m in assembly_members(patterns))


# -- streamed correlation -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [7, 1000, 100_000])
def test_streamed_correlation_equals_numpy(chunk):
    rng = np.random.default_rng(0)
    x = rng.poisson(np.linspace(0.2, 5.0, 12), (3001, 12)).astype(np.int16) + 1000  # a large offset
    st = correlation_matrix(x, chunk_size=chunk)
    np.testing.assert_allclose(st.corr, np.corrcoef(x.astype(float), rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(st.std, x.std(0), rtol=1e-11)
    assert st.n_time == 3001


def test_streamed_correlation_reads_a_memmap(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.poisson(1.0, (5000, 6)).astype(np.uint8)
    path = tmp_path / "counts.u8"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=x.shape)
    np.testing.assert_allclose(correlation_matrix(mm, chunk_size=333).corr, np.corrcoef(x, rowvar=False), atol=1e-12)


def test_bad_input_is_named():
    x = np.random.default_rng(2).poisson(1.0, (200, 4)).astype(float)
    silent = x.copy()
    silent[:, 2] = 0
    with pytest.raises(ValueError, match=r"column\(s\) \[2\] are constant"):
        correlation_matrix(silent)
    bad = x.copy()
    bad[17, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values .*time bin 17, neuron column 1"):
        correlation_matrix(bad, chunk_size=10)
    with pytest.raises(ValueError, match="2-D"):
        correlation_matrix(x[:, 0])
    with pytest.raises(ValueError, match="too short .* 200 bins for 300 neurons"):
        assembly_patterns(np.random.default_rng(3).poisson(1.0, (200, 300)), method="pca")
    with pytest.raises(ValueError, match="method must be"):
        assembly_patterns(x, method="nmf")
    with pytest.raises(TypeError, match="random `key` is required"):
        assembly_patterns(x)
    with pytest.raises(ValueError, match="patterns have 3 neurons, counts 4"):
        assembly_activity(x, np.ones((1, 3)))


# -- Marchenko-Pastur and the PCA path ------------------------------------------------------------


def test_marchenko_pastur_edges_closed_form_and_simulated_spectrum():
    lo, hi = marchenko_pastur(4000, 1000)
    assert (lo, hi) == pytest.approx(((1 - 0.5) ** 2, (1 + 0.5) ** 2))
    # the spectrum of independent Gaussian data fills [lo, hi] (to finite-size fluctuations)
    lam = np.linalg.eigvalsh(correlation_matrix(np.random.default_rng(4).normal(size=(4000, 1000))).corr)
    assert lam.min() == pytest.approx(lo, abs=0.03) and lam.max() == pytest.approx(hi, abs=0.05)


def test_pca_path_equals_plain_numpy():
    x = _planted(np.random.default_rng(5))
    res = assembly_patterns(x, method="pca", chunk_size=4096)
    # plain numpy: z-score, correlation, eigh, count above (1 + sqrt(N/T))^2
    z = (x - x.mean(0)) / x.std(0)
    lam, E = np.linalg.eigh(z.T @ z / len(z))
    lam, E = lam[::-1], E[:, ::-1]
    k = int(np.sum(lam > (1 + np.sqrt(x.shape[1] / x.shape[0])) ** 2))
    assert res.n_assemblies == k == 2
    np.testing.assert_allclose(res.eigenvalues, lam, atol=1e-10)
    for w, e in zip(res.patterns, E[:, :k].T):
        e = e * np.sign(e[np.argmax(np.abs(e))])
        np.testing.assert_allclose(w, e, atol=1e-8)


# -- ICA --------------------------------------------------------------------------------------------


def test_fast_ica_matches_sklearn():
    from sklearn.decomposition import FastICA

    rng = np.random.default_rng(6)
    S = np.c_[rng.laplace(size=20_000), rng.uniform(-1.7, 1.7, 20_000), rng.standard_t(5, 20_000)]
    X = S @ rng.normal(size=(3, 3)).T
    d, E = np.linalg.eigh(np.cov(X, rowvar=False, bias=True))
    Y = (X - X.mean(0)) @ E / np.sqrt(d)
    W, _ = fast_ica(Y, key=1)
    ours = Y @ W.T
    ref = FastICA(whiten=False, fun="logcosh", algorithm="parallel", tol=1e-10, max_iter=1000,
                  random_state=0).fit_transform(Y)
    r = np.abs(np.corrcoef(ours, ref, rowvar=False)[:3, 3:])
    assert np.all(r.max(axis=1) > 0.9999) and np.all(r.max(axis=0) > 0.9999)
    np.testing.assert_allclose(W @ W.T, np.eye(3), atol=1e-10)
    W2, _ = fast_ica(Y, key=1)
    np.testing.assert_array_equal(W, W2)  # same key, same result


def test_ica_separates_overlapping_assemblies_that_pca_mixes():
    # two assemblies sharing neurons 4 and 5: ICA gives each its own members
    groups = ((0, 1, 2, 3, 4, 5), (4, 5, 6, 7, 8, 9))
    x = _planted(np.random.default_rng(7), N=30, groups=groups)
    ica = assembly_patterns(x, key=0)
    assert ica.n_assemblies == 2
    assert _members(ica) == [list(g) for g in groups]
    pca = assembly_patterns(x, method="pca")
    assert _members(pca) != [list(g) for g in groups]  # the first PC is their union


def test_ica_patterns_from_the_projection_are_the_unmixing_in_neuron_space():
    x = _planted(np.random.default_rng(8))
    res = assembly_patterns(x, key=3)
    z = (x - x.mean(0)) / x.std(0)
    lam, E = np.linalg.eigh(np.corrcoef(x, rowvar=False))
    P = E[:, ::-1][:, : res.n_assemblies] / np.sqrt(lam[::-1][: res.n_assemblies])
    W, _ = fast_ica(z @ P, key=3)
    V = P @ W.T
    V = V / np.linalg.norm(V, axis=0)
    V = V * np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])])
    np.testing.assert_allclose(res.patterns, V.T, atol=1e-7)


# -- detection: planted, unequal sizes, and negative controls ----------------------------------------


def test_planted_assemblies_of_unequal_sizes_are_recovered():
    from sklearn.metrics import adjusted_rand_score

    groups = ((0, 1, 2), (10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21), (30, 31, 32, 33, 34, 35))
    x = _planted(np.random.default_rng(9), N=50, groups=groups)
    res = assembly_patterns(x, key=0)
    assert res.n_assemblies == 3
    truth = np.zeros(50, int)
    found = np.zeros(50, int)
    for i, g in enumerate(groups):
        truth[list(g)] = i + 1
    for i, m in enumerate(_members(res)):
        found[m] = i + 1
    assert adjusted_rand_score(truth, found) == 1.0


def test_independent_and_time_shifted_populations_give_few_false_assemblies():
    # the Marchenko-Pastur edge is asymptotic: finite recordings exceed it now and then; over 30
    # independent populations the false-detection rate stays small, while every planted one is found
    rng = np.random.default_rng(10)
    false_independent, false_shifted, found = 0, 0, 0
    for _ in range(30):
        x = _planted(rng, T=8000, N=30, groups=((0, 1, 2, 3, 4), (20, 21, 22, 23)))
        found += assembly_patterns(x, method="pca").n_assemblies == 2
        # each neuron shifted in time by its own random lag: correlations between neurons destroyed
        shifted = np.stack([np.roll(x[:, n], rng.integers(500, 7500)) for n in range(30)], axis=1)
        false_shifted += assembly_patterns(shifted, method="pca").n_assemblies > 0
        false_independent += assembly_patterns(rng.poisson(0.6, (8000, 30)), method="pca").n_assemblies > 0
    assert found == 30
    assert false_independent <= 6 and false_shifted <= 6  # about 5-10% expected, 20% allowed


# -- activation strength ------------------------------------------------------------------------------


def test_activation_strength_equals_the_quadratic_form():
    rng = np.random.default_rng(11)
    x = _planted(rng, T=3000, N=20, groups=((0, 1, 2, 3),))
    res = assembly_patterns(x, key=0)
    R = assembly_activity(x, res, chunk_size=500)
    z = (x - x.mean(0)) / x.std(0)
    for k, w in enumerate(res.patterns):
        P = np.outer(w, w)
        np.fill_diagonal(P, 0.0)
        np.testing.assert_allclose(R[:, k], np.einsum("tn,nm,tm->t", z, P, z), rtol=1e-10, atol=1e-10)
    # another epoch, z-scored with the first epoch's statistics when asked
    other = rng.poisson(0.4, (1000, 20))
    st = correlation_matrix(x)
    R2 = assembly_activity(other, res, stats=st)
    z2 = (other - st.mean) / st.std
    w = res.patterns[0]
    np.testing.assert_allclose(R2[:, 0], (z2 @ w) ** 2 - (z2**2) @ w**2, rtol=1e-10, atol=1e-10)


def test_activation_is_high_when_the_members_fire_together():
    rng = np.random.default_rng(12)
    T = 20_000
    rate = np.full((T, 30), 0.4)
    on = rng.random(T) < 0.04
    rate[np.ix_(on, [0, 1, 2, 3, 4])] += 3.0
    x = rng.poisson(rate)
    res = assembly_patterns(x, key=0)
    R = assembly_activity(x, res)[:, 0]
    assert np.median(R[on]) > 10 * max(np.median(R[~on]), 0.1)


def test_members_rule_and_threshold():
    w = np.array([[0.7, 0.7, 0.1, -0.1, 0.0], [0.0, 0.3, 0.5, 0.5, 0.64]])
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    got = assembly_members(w)  # default: above 1 / sqrt(5) = 0.447
    assert [m.tolist() for m in got] == [[0, 1], [2, 3, 4]]
    assert [m.tolist() for m in assembly_members(w, threshold=0.3)] == [[0, 1], [1, 2, 3, 4]]
