"""Grid decoders: naive Bayes and state-space, against brute force, pynapple and dense algebra."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesneuro import SpikeData
from bayesneuro.decoders import (
    Grid,
    GridPosterior,
    NaiveBayesDecoder,
    StateSpaceDecoder,
    TuningCurves,
    estimate_tuning_curves,
    forward_backward,
)
from bayesneuro.decoders.evaluation import kfold, lag_curve, neuron_curve
from bayesneuro.decoders.state_space import dense_transition

nap = pytest.importorskip("pynapple")


def _brute_force(counts, rates, dt, prior):
    """Posterior by enumerating every cell with scipy's Poisson log-pmf."""
    T, G = counts.shape[0], rates.shape[1]
    lp = np.empty((T, G))
    for g in range(G):
        lp[:, g] = stats.poisson.logpmf(counts, rates[:, g] * dt).sum(axis=1) + np.log(prior[g])
    lp -= lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    return p / p.sum(axis=1, keepdims=True)


def _counts_and_curves(rng, T=400, N=7, shape=(15,)):
    G = int(np.prod(shape))
    rates = rng.uniform(0.5, 25.0, (N, G))
    counts = rng.poisson(1.5, (T, N))
    return counts, rates


# --------------------------------------------------------------- naive Bayes: exactness
def test_naive_bayes_equals_brute_force_enumeration():
    rng = np.random.default_rng(0)
    counts, rates = _counts_and_curves(rng, shape=(15,))
    counts[3, 0] = 150  # large counts: log space, no factorials
    grid = Grid.regular(bins=15, range=(0, 1))
    prior = rng.uniform(0.2, 1.0, 15)
    tc = TuningCurves(rates, grid, occupancy=prior)
    dec = NaiveBayesDecoder.from_tuning_curves(tc, prior="occupancy")
    post = dec.decode(SpikeData.from_counts(counts, bin_size=0.05))
    ref = _brute_force(counts, rates, 0.05, prior / prior.sum())
    np.testing.assert_allclose(post.prob, ref, atol=1e-12, rtol=0)
    assert np.all(np.isfinite(post.log_prob))


def test_naive_bayes_equals_pynapple_decode_1d_and_bayes():
    rng = np.random.default_rng(1)
    T, N, G, dt = 500, 6, 20, 0.05
    counts, rates = _counts_and_curves(rng, T=T, N=N, shape=(G,))
    grid = Grid.regular(bins=G, range=(0, 1), names=["x"])
    tc = TuningCurves(rates, grid, occupancy=np.ones(G))
    ours = NaiveBayesDecoder.from_tuning_curves(tc).decode(SpikeData.from_counts(counts, bin_size=dt))
    ep = nap.IntervalSet(0, T * dt)
    # decode_bayes on a TsdFrame of the same counts
    tf = nap.TsdFrame(t=dt * (np.arange(T) + 0.5), d=counts.astype(float), columns=list(range(N)))
    _, p_bayes = nap.decode_bayes(tc.to_pynapple(), tf, ep, dt)
    np.testing.assert_allclose(np.asarray(p_bayes), ours.prob, atol=1e-8, rtol=0)
    # decode_1d on spike times that bin into the same counts
    group = nap.TsGroup({n: nap.Ts(np.repeat(dt * (np.arange(T) + 0.5), counts[:, n])) for n in range(N)})
    frame = pd.DataFrame(rates.T, index=grid.centers[0], columns=list(range(N)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded, p_1d = nap.decode_1d(frame, group, ep, dt)
    np.testing.assert_allclose(np.asarray(p_1d), ours.prob, atol=1e-8, rtol=0)
    np.testing.assert_allclose(np.asarray(decoded), ours.map[:, 0], atol=1e-12)


def test_naive_bayes_equals_pynapple_decode_2d():
    rng = np.random.default_rng(2)
    T, N, dt = 300, 8, 0.1
    shape = (6, 5)
    counts, rates = _counts_and_curves(rng, T=T, N=N, shape=shape)
    grid = Grid.regular(bins=list(shape), range=[(0, 1), (0, 2)], names=["x", "y"])
    tc = TuningCurves(rates, grid)
    ours = NaiveBayesDecoder.from_tuning_curves(tc).decode(SpikeData.from_counts(counts, bin_size=dt))
    group = nap.TsGroup({n: nap.Ts(np.repeat(dt * (np.arange(T) + 0.5), counts[:, n])) for n in range(N)})
    curves = {n: rates[n].reshape(shape) for n in range(N)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded, p2 = nap.decode_2d(curves, group, nap.IntervalSet(0, T * dt), dt, list(grid.centers))
    np.testing.assert_allclose(np.asarray(p2).reshape(T, -1), ours.prob, atol=1e-8, rtol=0)
    np.testing.assert_allclose(np.asarray(decoded), ours.map, atol=1e-12)


def test_unvisited_cells_never_win_where_pynapple_decodes_into_them():
    """Trap: a circular arena in a square grid. pynapple's NaN tuning gives unvisited cells
    log-likelihood 0; ours gives them prior probability 0."""
    rng = np.random.default_rng(3)
    T, dt, N = 6000, 0.1, 20
    r = np.sqrt(rng.uniform(0, 1, T))
    th = rng.uniform(0, 2 * np.pi, T)
    xy = np.c_[0.5 + 0.5 * r * np.cos(th), 0.5 + 0.5 * r * np.sin(th)]
    cen = rng.uniform(0.2, 0.8, (N, 2))
    lam = 0.2 + 6 * np.exp(-((xy[:, None, :] - cen[None]) ** 2).sum(-1) / 0.02)
    counts = rng.poisson(lam * dt)
    data = SpikeData.from_counts(counts, bin_size=dt, covariates=xy, feature_names=["x", "y"])
    train, test, _ = data.split(fractions=(0.7, 0.3))
    dec = NaiveBayesDecoder(bins=12, range=[(0, 1), (0, 1)], sigma=0.0).fit(train, ["x", "y"])
    vis = dec.tuning_.visited
    assert (~vis).sum() >= 16  # the corners
    post = dec.decode(test)
    assert np.all(vis[np.argmax(post.log_prob, axis=1)])
    assert np.all(np.exp(post.log_prob[:, ~vis]) == 0)
    # pynapple on the same tuning curves (NaN in unvisited cells), uniform prior
    ep = nap.IntervalSet(0, test.n_time * dt)
    tf = nap.TsdFrame(t=dt * (np.arange(test.n_time) + 0.5), d=test.counts.astype(float), columns=list(range(N)))
    with np.errstate(invalid="ignore"):
        _, p = nap.decode_bayes(dec.tuning_.to_pynapple(), tf, ep, dt)
    pn = np.asarray(p).reshape(test.n_time, -1)
    share = np.mean(~vis[np.argmax(pn, axis=1)])
    assert share > 0.2, share  # pynapple decodes many bins into never-visited cells
    # iid positions: a random-walk prior is wrong here, and its calibration would say so (a warning)
    ss = StateSpaceDecoder(bins=12, range=[(0, 1), (0, 1)], sigma=0.0, sigma_walk=0.05, temperature=1.0).fit(
        train, ["x", "y"])
    pss = ss.decode(test)
    assert np.all(vis[np.argmax(pss.log_prob, axis=1)])


# --------------------------------------------------------------- tuning curves
def test_histogram_tuning_equals_pynapple_and_smooths():
    rng = np.random.default_rng(4)
    T, dt, N = 5000, 0.05, 4
    x = rng.uniform(0, 1, T)
    counts = rng.poisson(dt * (1 + 10 * np.exp(-((x[:, None] - np.linspace(0.2, 0.8, N)) ** 2) / 0.02)))
    grid = Grid.regular(bins=20, range=(0, 1), names=["x"])
    tc = estimate_tuning_curves(counts, x[:, None], grid, dt, sigma=0.0)
    t = dt * (np.arange(T) + 0.5)
    group = nap.TsGroup({n: nap.Ts(np.repeat(t, counts[:, n])) for n in range(N)})
    feat = nap.Tsd(t=t, d=x)
    ref = nap.compute_tuning_curves(group, feat, bins=20, range=(0, 1), epochs=nap.IntervalSet(0, T * dt), fs=1 / dt)
    np.testing.assert_allclose(tc.rates, np.asarray(ref.values), rtol=1e-10)
    # smoothing = the same Gaussian filter on counts and occupancy
    from scipy.ndimage import gaussian_filter1d

    tcs = estimate_tuning_curves(counts, x[:, None], grid, dt, sigma=0.1)
    k = gaussian_filter1d(tc.rates * tc.occupancy, 2.0, axis=1, mode="constant")
    occ = gaussian_filter1d(tc.occupancy, 2.0, mode="constant")
    np.testing.assert_allclose(tcs.rates, k / occ, rtol=1e-10)


def test_glm_tuning_matches_direct_optimisation_and_covers_truth():
    from scipy.optimize import minimize

    from bayesneuro.decoders.tuning import _RIDGE, cell_statistics, spline_basis

    rng = np.random.default_rng(5)
    T, dt = 20000, 0.05
    for circular in (False, True):
        x = rng.uniform(0, 2 * np.pi if circular else 1, T)
        if circular:
            truth = lambda s: 1 + 12 * np.exp(2 * (np.cos(s - 2.0) - 1))  # noqa: E731
            grid = Grid.regular(bins=30, circular=True)
        else:
            truth = lambda s: 0.5 + 10 * np.exp(-((s - 0.4) ** 2) / 0.02)  # noqa: E731
            grid = Grid.regular(bins=30, range=(0, 1))
        counts = rng.poisson(dt * truth(x))[:, None]
        tc = estimate_tuning_curves(counts, x[:, None], grid, dt, method="glm", smoothness=10.0)
        # the MAP by a generic optimiser on the same cell statistics and penalty
        B, P = spline_basis(grid, 16)
        occ, spk = cell_statistics(counts, grid.locate(x[:, None]), grid.n_cells, dt)
        Lam = 10.0 * P + _RIDGE * np.eye(B.shape[1])

        def f(w):
            eta = B @ w
            return np.sum(occ * np.exp(eta) - spk[0] * eta) + 0.5 * w @ Lam @ w

        def grad(w):
            return B.T @ (occ * np.exp(B @ w) - spk[0]) + Lam @ w

        res = minimize(f, np.full(B.shape[1], np.log(counts.mean() / dt)), jac=grad, method="BFGS", options={"gtol": 1e-10})
        np.testing.assert_allclose(tc.rates[0], np.exp(B @ res.x), rtol=1e-5)
        # evidence-chosen smoothness: the true curve mostly inside the 95% band
        tca = estimate_tuning_curves(counts, x[:, None], grid, dt, method="glm")
        lo, hi = tca.band(0.95)
        inside = np.mean((truth(grid.points[:, 0]) >= lo[0]) & (truth(grid.points[:, 0]) <= hi[0]))
        assert inside >= 0.8, inside
        assert np.max(np.abs(tca.rates[0] - truth(grid.points[:, 0]))) < 2.0


# --------------------------------------------------------------- state space vs dense
def _dense_forward_backward(ll, A, init, seg):
    T, G = ll.shape
    L = np.exp(ll - ll.max(axis=1, keepdims=True))
    f = np.zeros((T, G))
    for t in range(T):
        pred = init if (t == 0 or seg[t] != seg[t - 1]) else f[t - 1] @ A
        u = L[t] * pred
        f[t] = u / u.sum()
    g = np.zeros((T, G))
    b = np.ones(G)
    for t in range(T - 1, -1, -1):
        b = np.ones(G) if (t == T - 1 or seg[t] != seg[t + 1]) else A @ (L[t + 1] * b)
        b = b / b.max()
        g[t] = f[t] * b / np.sum(f[t] * b)
    return f, g


@pytest.mark.parametrize(
    "grid, sigma",
    [
        (Grid.regular(bins=30, range=(0, 1)), 0.05),
        (Grid.regular(bins=40, range=(0, 1)), 0.6),  # a kernel as wide as the grid, summed directly
        (Grid.regular(bins=300, range=(0, 1)), 0.6),  # 599 taps, over the direct limit: FFT path
        (Grid.regular(bins=24, circular=True), 0.6),
        (Grid.regular(bins=24, circular=True), 5.0),
        (Grid.regular(bins=300, circular=True), 1.0),  # 301 taps on a ring: FFT without padding
        (Grid.regular(bins=[8, 7], range=[(0, 1), (0, 2)]), [0.2, 0.3]),
        (Grid.regular(bins=[6, 9], circular=[True, False], range=[(0, 2 * np.pi), (0, 1)]), [1.0, 0.1]),
    ],
)
def test_forward_backward_equals_dense_computation(grid, sigma):
    rng = np.random.default_rng(6)
    G = grid.n_cells
    vis = rng.uniform(size=G) > 0.2
    ll = rng.normal(0, 2, (50, G))
    seg = np.repeat([0, 1, 2], [20, 10, 20])
    A = dense_transition(grid, sigma, vis)
    assert np.allclose(A.sum(axis=1)[vis], 1.0)
    init = vis / vis.sum()
    f, g = _dense_forward_backward(ll, A, init, seg)
    lpf, ev = forward_backward(ll, grid, vis, sigma=sigma, segment_ids=seg, smooth=False)
    lps, ev2 = forward_backward(ll, grid, vis, sigma=sigma, segment_ids=seg, chunk_size=16)  # several chunks
    lpd, _ = forward_backward(ll, grid, vis, transition=A, segment_ids=seg)
    np.testing.assert_allclose(np.exp(lpf), f, atol=1e-12)
    np.testing.assert_allclose(np.exp(lps), g, atol=1e-12)
    np.testing.assert_allclose(np.exp(lpd), g, atol=1e-12)
    assert ev == pytest.approx(ev2, rel=1e-12)
    # an odd number of chunks (7): the middle one meets its own forward and backward pass
    lp7, ev7 = forward_backward(ll, grid, vis, sigma=sigma, segment_ids=seg, chunk_size=8)
    np.testing.assert_allclose(np.exp(lp7), g, atol=1e-12)
    assert ev7 == pytest.approx(ev, rel=1e-12)
    # the blocked recursion (blocks of 4 bins, iterated to agreement, or the checked fallback)
    lpb, evb = forward_backward(ll, grid, vis, sigma=sigma, segment_ids=seg, chunk_size=16, block=4)
    lpbf, _ = forward_backward(ll, grid, vis, sigma=sigma, segment_ids=seg, smooth=False, block=8)
    np.testing.assert_allclose(np.exp(lpb), g, atol=1e-12)
    np.testing.assert_allclose(np.exp(lpbf), f, atol=1e-12)
    assert evb == pytest.approx(ev, rel=1e-10)
    # the evidence: dense forward algorithm in log space
    dense_ev = 0.0
    for s in np.unique(seg):
        alpha = None
        for t in np.flatnonzero(seg == s):
            with np.errstate(divide="ignore"):
                w = np.log(init) if alpha is None else np.log(np.exp(alpha - alpha.max()) @ A) + alpha.max()
            alpha = w + ll[t]
        dense_ev += np.log(np.sum(np.exp(alpha - alpha.max()))) + alpha.max()
    assert ev == pytest.approx(dense_ev, rel=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("shape, sigma", [((60,), 0.03), ((12, 10), [0.1, 0.12])])
def test_blocked_recursion_equals_dense_and_falls_back_when_blocks_disagree(shape, sigma):
    """Blocks run in parallel agree with the dense recursion on sharp data (blocked path taken),
    and on data too flat to forget a block's start the checked sequential recursion takes over."""
    from bayesneuro.decoders import state_space as ssm

    rng = np.random.default_rng(21)
    grid = Grid.regular(bins=list(shape), range=[(0, 1)] * len(shape))
    G = grid.n_cells
    vis = np.ones(G, bool)
    A = dense_transition(grid, sigma, vis)
    T = 300
    cells = [rng.integers(G)]
    for _ in range(T - 1):
        cells.append(rng.choice(G, p=A[cells[-1]]))
    d = grid.distance(grid.points[:, None, :], grid.points[np.array(cells)][None, :, :]).T  # (T, G)
    seg = np.repeat([0, 1], [170, 130])
    init = vis / vis.sum()
    for scale, path, block in ((20.0, "blocked", 16), (1e-3, "checked", 4)):  # 16 blocks per chunk
        ll = -scale * d**2 / 0.01
        _, g = _dense_forward_backward(ll, A, init, seg)
        lp, _ = forward_backward(ll, grid, vis, sigma=sigma, segment_ids=seg, block=block, chunk_size=16 * block)
        assert ssm.LAST_PATH["path"] == path
        np.testing.assert_allclose(np.exp(lp), g, atol=1e-10)


@pytest.mark.parametrize("tempering", ["posterior", "likelihood"])
def test_state_space_decoder_tempering_equals_dense(tempering):
    """The decoder's posterior under each tempering mode equals a dense forward-backward of the
    (tempered) Poisson log likelihood, on a 2-D grid."""
    rng = np.random.default_rng(22)
    grid = Grid.regular(bins=[7, 6], range=[(0, 1), (0, 1)])
    G = grid.n_cells
    rates = rng.uniform(0.5, 20.0, (9, G))
    counts = rng.poisson(0.6, (120, 9))
    dt, T_, sig = 0.05, 2.5, [0.15, 0.2]
    dec = StateSpaceDecoder.from_tuning_curves(TuningCurves(rates, grid, occupancy=np.ones(G)), dt, sigma_walk=sig,
                                               temperature=T_, tempering=tempering)
    lp = dec.decode(SpikeData.from_counts(counts, bin_size=dt)).log_prob
    ll = counts @ np.log(rates * dt) - (rates * dt).sum(axis=0)
    A = dense_transition(grid, sig, np.ones(G, bool))
    init = np.ones(G) / G
    if tempering == "likelihood":
        _, ref = _dense_forward_backward(ll / T_, A, init, np.zeros(120))
    else:
        _, g = _dense_forward_backward(ll, A, init, np.zeros(120))
        ref = g ** (1 / T_)
        ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.exp(lp), ref, atol=1e-10)


def test_naive_bayes_float32_and_host_path_agree_with_float64_xla():
    """The numpy (BLAS) path equals the XLA path in float64; float32 posteriors are within 1e-5."""
    import jax

    from bayesneuro.decoders import naive_bayes as nbm

    rng = np.random.default_rng(23)
    rates = rng.uniform(0.5, 25.0, (40, 120))
    counts = rng.poisson(0.3, (3000, 40))
    prior = np.log(np.full(120, 1 / 120))
    host = nbm.log_posterior(counts, rates, 0.02, prior, chunk_size=1000)
    assert nbm._host_blas()
    nbm._host_blas, orig = (lambda: False), nbm._host_blas
    try:
        xla = nbm.log_posterior(counts, rates, 0.02, prior, chunk_size=1000)
        xla_raw = nbm.log_posterior(counts, rates, 0.02, prior, chunk_size=1000, normalize=False)
    finally:
        nbm._host_blas = orig
    np.testing.assert_allclose(np.exp(host), np.exp(xla), atol=1e-13)
    np.testing.assert_allclose(nbm.log_posterior(counts, rates, 0.02, prior, normalize=False), xla_raw, rtol=1e-12)
    with jax.enable_x64(False):
        lp32 = nbm.log_posterior(counts, rates, 0.02, prior, chunk_size=1000)
    assert lp32.dtype == np.float32
    assert np.max(np.abs(np.exp(lp32.astype(np.float64)) - np.exp(host))) < 1e-5


def test_state_space_float32_is_within_1e5_of_float64_over_several_chunks():
    """The two-thread recursion in float32 (JAX's default dtype) against float64, on a 2-D grid,
    several chunks and segments: the smoothed posteriors within 1e-5, the log evidence within
    1e-5 relative."""
    import jax

    rng = np.random.default_rng(24)
    grid = Grid.regular(bins=[9, 8], range=[(0, 1), (0, 1)])
    G = grid.n_cells
    vis = rng.uniform(size=G) > 0.1
    ll = rng.normal(0, 2, (300, G))
    seg = np.repeat([0, 1, 2], [130, 70, 100])
    lp64, ev64 = forward_backward(ll, grid, vis, sigma=[0.1, 0.15], segment_ids=seg, chunk_size=64)
    with jax.enable_x64(False):
        lp32, ev32 = forward_backward(ll, grid, vis, sigma=[0.1, 0.15], segment_ids=seg, chunk_size=64)
    assert lp32.dtype == np.float32
    assert np.max(np.abs(np.exp(lp32.astype(np.float64)) - np.exp(lp64))) < 1e-5
    assert ev32 == pytest.approx(ev64, rel=1e-5)


def test_state_space_decode_of_another_length_compiles_nothing():
    from bayesneuro._shapes import count_compilations

    rng = np.random.default_rng(24)
    grid = Grid.regular(bins=30, range=(0, 1))
    rates = rng.uniform(0.5, 20.0, (6, 30))
    dec = StateSpaceDecoder.from_tuning_curves(TuningCurves(rates, grid, occupancy=np.ones(30)), 0.05, sigma_walk=0.05)
    dec.decode(SpikeData.from_counts(rng.poisson(0.5, (2600, 6)), bin_size=0.05))
    with count_compilations() as c:
        dec.decode(SpikeData.from_counts(rng.poisson(0.5, (3900, 6)), bin_size=0.05))
    assert c.compilations == 0


def _simulate_chain(rng, grid, A, init, n_seg, seg_len):
    cells = []
    for _ in range(n_seg):
        c = rng.choice(grid.n_cells, p=init)
        cells.append(c)
        for _ in range(seg_len - 1):
            c = rng.choice(grid.n_cells, p=A[c])
            cells.append(c)
    cells = np.array(cells)
    jitter = rng.uniform(-0.5, 0.5, (cells.size, grid.n_dim)) * grid.widths
    return cells, grid.points[cells] + jitter


@pytest.mark.parametrize("circular", [False, True])
def test_coverage_is_calibrated_on_simulated_data(circular):
    rng = np.random.default_rng(7)
    grid = Grid.regular(bins=40, circular=True) if circular else Grid.regular(bins=40, range=(0, 1))
    G, N, dt = grid.n_cells, 12, 0.1
    per = 2 * np.pi if circular else 1.0
    cen = np.linspace(0, per, N, endpoint=False)
    d = grid.points[:, 0][None] - cen[:, None]
    if circular:
        d = np.mod(d + np.pi, 2 * np.pi) - np.pi
    rates = 0.5 + 8 * np.exp(-(d**2) / (2 * (0.1 * per) ** 2))
    tc = TuningCurves(rates, grid, occupancy=np.ones(G))
    # naive Bayes: independent bins with the variable uniform (= the prior)
    T = 4000
    cells = rng.integers(0, G, T)
    x = grid.points[cells] + rng.uniform(-0.5, 0.5, (T, 1)) * grid.widths
    counts = rng.poisson(rates[:, cells].T * dt)
    data = SpikeData.from_counts(counts, bin_size=dt)
    post = NaiveBayesDecoder.from_tuning_curves(tc).decode(data)
    for level in (0.5, 0.9, 0.95):
        cov = np.mean(post.covers(x, level))
        tol = 4 * np.sqrt(level * (1 - level) / T)
        assert abs(cov - level) < tol, (level, cov)
    # state space: the chain simulated from the decoder's own transition, in short segments
    sigma = 0.05 * per
    A = dense_transition(grid, sigma, np.ones(G, bool))
    cells, x = _simulate_chain(rng, grid, A, np.ones(G) / G, n_seg=300, seg_len=10)
    counts = rng.poisson(rates[:, cells].T * dt)
    data = SpikeData.from_counts(counts, bin_size=dt, trial_ids=np.repeat(np.arange(300), 10))
    ss = StateSpaceDecoder.from_tuning_curves(tc, sigma_walk=sigma)
    post = ss.decode(data)
    nb_err = np.median(np.abs(NaiveBayesDecoder.from_tuning_curves(tc).decode(data).mean[:, 0] - x[:, 0]))
    ss_err = np.median(np.abs(post.mean[:, 0] - x[:, 0]))
    assert ss_err < nb_err
    for level in (0.5, 0.9, 0.95):
        cov = np.mean(post.covers(x, level))
        tol = 5 * np.sqrt(level * (1 - level) / 300)  # bins within a segment are dependent
        assert abs(cov - level) < tol, (level, cov)


def test_state_space_fit_learns_the_walk_and_restarts_at_trials():
    rng = np.random.default_rng(8)
    T, dt, N = 6000, 0.02, 15
    x = np.abs(np.mod(np.cumsum(rng.normal(0, 0.02, T)), 2) - 1)
    counts = rng.poisson(dt * (0.5 + 15 * np.exp(-((x[:, None] - np.linspace(0, 1, N)) ** 2) / 0.01)))
    data = SpikeData.from_counts(counts, bin_size=dt, covariates=x, feature_names=["x"], trial_ids=np.repeat(np.arange(6), 1000))
    fast = {"observation": "poisson", "temperature": 1.0}  # the walk is the point here, not the calibration
    ss = StateSpaceDecoder(bins=30, range=(0, 1), **fast).fit(data, "x")
    assert ss.sigma_walk_[0] == pytest.approx(0.02, rel=0.1)
    ev = StateSpaceDecoder(bins=30, range=(0, 1), sigma_walk="evidence", **fast).fit(data, "x")
    trace = ev.evidence_trace_
    assert ev.sigma_walk_[0] == pytest.approx(ss.sigma_walk_[0] * max(trace, key=trace.get))
    assert max(trace, key=trace.get) in (0.5, 1.0, 2.0)  # the data were simulated with the learned step
    # a decoder given one trial alone equals the same trial decoded inside the whole recording
    whole = ss.decode(data)
    alone = ss.decode(data.trial(2))
    np.testing.assert_allclose(whole.log_prob[2000:3000], alone.log_prob, atol=1e-10)
    # the causal filter uses only the past: changing later spikes leaves earlier bins unchanged
    filt = StateSpaceDecoder(bins=30, range=(0, 1), smooth=False, **fast).fit(data, "x")
    c2 = counts.copy()
    c2[500:] = 0
    d2 = SpikeData.from_counts(c2, bin_size=dt)
    d1 = SpikeData.from_counts(counts, bin_size=dt)
    np.testing.assert_allclose(filt.decode(d1).log_prob[:500], filt.decode(d2).log_prob[:500], atol=1e-12)
    with pytest.raises(ValueError, match="transition was learned for 0.02 s"):
        ss.decode(SpikeData.from_counts(counts, bin_size=0.04))
    emp = StateSpaceDecoder(bins=30, range=(0, 1), transition="empirical", **fast).fit(data, "x")
    assert np.allclose(emp.transition_.sum(axis=1)[emp.tuning_.visited], 1.0)
    assert emp.evaluate(data, "x")["median_error"] < 0.05


# --------------------------------------------------------------- posterior summaries
def test_intervals_and_means_against_direct_formulas():
    rng = np.random.default_rng(9)
    grid = Grid.regular(bins=10, range=(0, 1))
    p = rng.dirichlet(np.ones(10), size=50)
    post = GridPosterior(np.log(p), grid, np.arange(50))
    lo, hi = post.interval(0.8)
    # mass of the piecewise-uniform density between lo and hi is 0.8
    cdf = lambda v: np.array([np.interp(vi, grid.edges[0], np.r_[0, np.cumsum(pi)]) for vi, pi in zip(v, p)])  # noqa: E731
    np.testing.assert_allclose(cdf(hi[:, 0]) - cdf(lo[:, 0]), 0.8, atol=1e-12)
    np.testing.assert_allclose(cdf(lo[:, 0]), 0.1, atol=1e-12)
    np.testing.assert_allclose(post.mean[:, 0], p @ grid.centers[0])
    ring = Grid.regular(bins=10, circular=True)
    rp = GridPosterior(np.log(p), ring, np.arange(50))
    ang = np.angle(p @ np.exp(1j * ring.centers[0]))
    np.testing.assert_allclose(np.mod(rp.mean[:, 0], 2 * np.pi), np.mod(ang, 2 * np.pi), atol=1e-12)
    lo, hi = rp.interval(0.6)
    for t in range(50):  # brute force: shortest run of whole cells with mass >= 0.6
        best = min(
            (m for m in range(1, 11) for s in range(10) if p[t, (s + np.arange(m)) % 10].sum() >= 0.6 - 1e-12),
        )
        assert round((hi[t, 0] - lo[t, 0]) / ring.widths[0]) == best
        start = int(round((lo[t, 0]) / ring.widths[0]))
        assert p[t, (start + np.arange(best)) % 10].sum() >= 0.6 - 1e-12


# --------------------------------------------------------------- evaluation helpers
def test_kfold_has_no_leakage_and_curves_find_lag_and_neurons():
    rng = np.random.default_rng(10)
    T, dt, N = 3000, 0.1, 12
    x = rng.uniform(0, 1, T)
    rates = 0.1 + 3 * np.exp(-((x[:, None] - np.linspace(0, 1, N)) ** 2) / 0.01)
    counts = np.roll(rng.poisson(rates * dt * 5), 3, axis=0)  # spikes follow x by 3 bins
    data = SpikeData.from_counts(counts, bin_size=dt, covariates=x, feature_names=["x"])
    folds = kfold(data, 5, gap=4)
    for k, (tr, te) in enumerate(folds):
        tt, tr_t = set(np.round(te.bin_centers, 6)), np.round(tr.bin_centers, 6)
        assert not tt & set(tr_t)
        gapped = np.min(np.abs(tr_t[:, None] - np.array(sorted(tt))[None]))
        assert gapped > 4 * dt  # at least gap bins between train and test
    train, test, _ = data.split(fractions=(0.7, 0.3))
    # untempered: at the wrong lags the spikes say nothing, and a calibrated temperature would warn
    curve = lag_curve(NaiveBayesDecoder(bins=20, range=(0, 1), temperature=1.0), train, test, "x", [-2, 0, 2, 3, 4])
    assert curve["lags"][np.argmin(curve["value"])] == 3
    aligned = SpikeData.from_counts(np.roll(counts, -3, axis=0), bin_size=dt, covariates=x, feature_names=["x"])
    train, test, _ = aligned.split(fractions=(0.7, 0.3))
    nc = neuron_curve(NaiveBayesDecoder(bins=20, range=(0, 1)), train, test, "x", [2, 12], key=0, n_repeats=3)
    assert nc["mean"][1] < 0.5 * nc["mean"][0]
    nc2 = neuron_curve(NaiveBayesDecoder(bins=20, range=(0, 1)), train, test, "x", [2, 12], key=0, n_repeats=3)
    np.testing.assert_array_equal(nc["value"], nc2["value"])


# --------------------------------------------------------------- bad input
def test_bad_input_gets_clear_messages():
    rng = np.random.default_rng(11)
    x = rng.uniform(0, 1, 500)
    counts = rng.poisson(1.0, (500, 4))
    data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"], neuron_ids=[10, 11, 12, 13])
    dec = NaiveBayesDecoder(bins=10, range=(0, 1)).fit(data, "x")
    other = SpikeData.from_counts(counts[:, :3], bin_size=0.1, neuron_ids=[10, 11, 99])
    with pytest.raises(ValueError, match="not seen in training"):
        dec.decode(other)
    with pytest.raises(ValueError, match="missing 1 training neuron"):
        dec.decode(SpikeData.from_counts(counts[:, :3], bin_size=0.1, neuron_ids=[10, 11, 12]))
    # reordered neurons are fine
    shuffled = data.select_neurons([13, 12, 11, 10])
    np.testing.assert_allclose(dec.decode(shuffled).log_prob, dec.decode(data).log_prob)
    with pytest.raises(ValueError, match="outside the grid's range"):
        NaiveBayesDecoder(bins=10, range=(0, 0.5)).fit(data, "x")
    with pytest.raises(ValueError, match="outside the grid's range"):
        dec.score(data, 2 * x)
    c0 = counts.copy()
    c0[:, 1] = 0
    with pytest.warns(UserWarning, match="neuron 1 has no spikes"):
        silent = SpikeData.from_counts(c0, bin_size=0.1)
    with pytest.raises(ValueError, match="never spike"):
        NaiveBayesDecoder().fit(silent, x)
    with pytest.raises(ValueError, match="NaN or inf"):
        NaiveBayesDecoder().fit(data, np.where(x > 0.5, np.nan, x))
    with pytest.raises(ValueError, match="rows but the data have"):
        NaiveBayesDecoder().fit(data, x[:-1])
    with pytest.raises(ValueError, match="names covariates"):
        NaiveBayesDecoder().fit(data, "speed")
    with pytest.raises(RuntimeError, match="not fitted"):
        NaiveBayesDecoder().decode(data)
    with pytest.raises(ValueError, match="rates must be finite"):
        TuningCurves(-np.ones((2, 5)), Grid.regular(bins=5, range=(0, 1)))
    with pytest.raises(ValueError, match="likelihood of zero"):
        grid = Grid.regular(bins=3, range=(0, 1))
        forward_backward(np.full((4, 3), -np.inf), grid, np.ones(3, bool), sigma=0.1)
    with pytest.raises(ValueError, match="equally spaced"):
        Grid([np.array([0.0, 1.0, 3.0])])
    with pytest.raises(TypeError, match="locked validation"):
        dec.decode(data.split()[2])


def test_empty_bins_decode_to_prior_times_silence():
    """A bin without spikes is evidence too: its posterior is prior x exp(-dt * sum of rates)."""
    rng = np.random.default_rng(12)
    grid = Grid.regular(bins=8, range=(0, 1))
    rates = rng.uniform(0.5, 30, (5, 8))
    prior = rng.uniform(0.5, 1.0, 8)
    dec = NaiveBayesDecoder.from_tuning_curves(TuningCurves(rates, grid, occupancy=prior), prior="occupancy")
    with pytest.warns(UserWarning, match="5 neurons have no spikes"):
        silence = SpikeData.from_counts(np.zeros((3, 5), int), bin_size=0.1)
    post = dec.decode(silence)
    ref = prior * np.exp(-0.1 * rates.sum(axis=0))
    np.testing.assert_allclose(post.prob, np.tile(ref / ref.sum(), (3, 1)), atol=1e-14)


def test_plots_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    from bayesneuro.decoders import plotting

    rng = np.random.default_rng(13)
    grid = Grid.regular(bins=10, range=(0, 1))
    p = rng.dirichlet(np.ones(10), size=40)
    post = GridPosterior(np.log(p), grid, 0.1 * np.arange(40), point_estimate="mean")
    truth = rng.uniform(0, 1, 40)
    ax = plotting.plot_trajectory(post, truth, prob=0.9)
    lo, hi = post.interval(0.9)
    band = ax.collections[0].get_paths()[0].vertices
    assert np.isclose(band[:, 1].max(), hi[:, 0].max()) and np.isclose(band[:, 1].min(), lo[:, 0].min())
    np.testing.assert_allclose(ax.lines[0].get_ydata(), post.mean[:, 0])
    ax = plotting.plot_posterior(post, truth)
    np.testing.assert_allclose(ax.images[0].get_array(), p.T)
    ax = plotting.plot_reliability(post, truth, probs=[0.2, 0.5, 0.8])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [np.mean(post.covers(truth, lv)) for lv in (0.2, 0.5, 0.8)])
    t = rng.integers(0, 3, 200)
    d = np.where(rng.uniform(size=200) < 0.7, t, rng.integers(0, 3, 200))
    ax = plotting.plot_confusion(t, d)
    np.testing.assert_allclose(ax.images[0].get_array(), confusion_matrix(t, d, normalize="true"))
    curve = {"lags": np.array([-1, 0, 1]), "value": np.array([0.3, 0.1, 0.2]), "metric": "median_error"}
    ax = plotting.plot_lag_curve(curve, bin_size=0.02)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [-20, 0, 20])
    tc = TuningCurves(rng.uniform(1, 5, (3, 10)), grid)
    axes = plotting.plot_tuning_curves(tc, neurons=[2, 0])
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), tc.rates[2])
    with pytest.raises(ValueError, match="not in the tuning curves"):
        plotting.plot_tuning_curves(tc, neurons=[7])
    plt.close("all")


def test_count_terms_total_equals_direct_sum_over_several_blocks():
    """The counts-only log-pmf terms, summed from per-block histograms, equal the direct sum."""
    from scipy import special

    from bayesneuro.decoders.naive_bayes import _CHUNK, count_terms_total

    rng = np.random.default_rng(31)
    counts = rng.negative_binomial(2, 0.4, (2 * _CHUNK + 123, 5)).astype(np.int16)
    disp = np.array([2.0, np.inf, 0.5, np.inf, 3.0])
    k = counts.astype(np.float64)
    direct = -special.gammaln(k + 1).sum()
    assert count_terms_total(counts) == pytest.approx(direct, rel=1e-12)
    fin = np.isfinite(disp)
    direct_nb = direct + (special.gammaln(k[:, fin] + disp[fin]) - special.gammaln(disp[fin])).sum()
    assert count_terms_total(counts, disp) == pytest.approx(direct_nb, rel=1e-12)
