"""Tests for bayesneuro.bases: bases against independent formulas, convolution against
direct sums in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesneuro.bases import (
    BSpline,
    Identity,
    RaisedCosineLinear,
    RaisedCosineLog,
    convolve,
    design_matrix,
    orthogonalize,
)

TOL = 1e-10


# ----------------------------------------------------------------------------- references


def direct_conv(x, matrix, shift):
    """out[t, c, b] = sum_k B[k, b] x[t - k - shift, c], by a loop over lags."""
    x = np.asarray(x, dtype=np.float64)
    vector = x.ndim == 1
    x2 = x[:, None] if vector else x
    n_time = x2.shape[0]
    out = np.zeros((n_time, x2.shape[1], matrix.shape[1]))
    for k in range(matrix.shape[0]):
        j = k + shift
        if j < n_time:
            out[j:] += x2[: n_time - j, :, None] * matrix[k][None, None, :]
    return out[:, 0] if vector else out


def segment_conv(x, matrix, shift, trial_ids):
    """Convolve each contiguous run of equal trial labels on its own."""
    ids = np.asarray(trial_ids)
    edges = np.flatnonzero(np.diff(ids)) + 1
    starts = np.r_[0, edges]
    stops = np.r_[edges, len(ids)]
    return np.concatenate([direct_conv(x[a:b], matrix, shift) for a, b in zip(starts, stops)])


def pillow_basis(n_basis, window, peaks, offset):
    """GLMspiketools makeBasis_PostSpike, line by line (without absref / orth)."""
    nlin = lambda t: np.log(t + 1e-20)  # noqa: E731
    yrnge = nlin(np.asarray(peaks, dtype=float) + offset)
    db = (yrnge[1] - yrnge[0]) / (n_basis - 1)
    ctrs = np.arange(n_basis) * db + yrnge[0]
    iht = np.arange(window, dtype=float)

    def ff(x, c, dc):
        return (np.cos(np.maximum(-np.pi, np.minimum(np.pi, (x - c) * np.pi / dc / 2))) + 1) / 2

    return ff(nlin(iht + offset)[:, None], ctrs[None, :], db), yrnge, db


def cox_de_boor(t, knots, order):
    """B-spline basis by the Cox-de Boor recursion (right end point included)."""
    t = np.asarray(t, dtype=float)
    n = len(knots) - order
    last = knots[-1]
    basis = np.zeros((len(t), len(knots) - 1))
    for i in range(len(knots) - 1):
        inside = (knots[i] <= t) & (t < knots[i + 1])
        if knots[i] < knots[i + 1] == last:
            inside |= t == last
        basis[:, i] = inside
    for k in range(2, order + 1):
        new = np.zeros((len(t), len(knots) - k))
        for i in range(len(knots) - k):
            d1 = knots[i + k - 1] - knots[i]
            d2 = knots[i + k] - knots[i + 1]
            if d1 > 0:
                new[:, i] += (t - knots[i]) / d1 * basis[:, i]
            if d2 > 0:
                new[:, i] += (knots[i + k] - t) / d2 * basis[:, i + 1]
        basis = new
    return basis[:, :n]


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# ----------------------------------------------------------------------------- convolve


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("n_time, window", [(300, 1), (300, 7), (1000, 120), (20, 35)])
def test_convolve_matches_direct_sum(rng, history, n_time, window):
    x = rng.normal(size=(n_time, 3))
    matrix = rng.normal(size=(window, 4))
    out = convolve(x, matrix, history=history)
    assert out.shape == (n_time, 3, 4)
    np.testing.assert_allclose(out, direct_conv(x, matrix, int(history)), rtol=0, atol=TOL)


@pytest.mark.parametrize("history", [False, True])
def test_convolve_1d_matches_np_convolve(rng, history):
    x = rng.poisson(0.3, size=2500).astype(float)
    basis = RaisedCosineLog(6, window=80, history=history)
    out = convolve(x, basis, history=history)
    assert out.shape == (2500, 6)
    for b, column in enumerate(basis.matrix().T):
        taps = np.r_[np.zeros(int(history)), column]
        np.testing.assert_allclose(out[:, b], np.convolve(x, taps)[:2500], rtol=0, atol=TOL)


def test_window_longer_than_recording_gives_zeros_not_errors():
    x = np.ones((5, 2))
    out = convolve(x, Identity(50), history=True)
    assert out.shape == (5, 2, 50)
    np.testing.assert_allclose(out[:, 0, :], direct_conv(x, np.eye(50), 1)[:, 0, :], atol=TOL)
    np.testing.assert_allclose(out[:, :, 5:], 0.0, atol=TOL)


def test_identity_gives_lagged_copies(rng):
    x = rng.normal(size=(200, 2))
    for shift in (0, 1):
        out = np.asarray(convolve(x, Identity(10), history=bool(shift)))
        for k in range(10):
            j = k + shift
            np.testing.assert_allclose(out[j:, :, k], x[: 200 - j], atol=TOL)
            np.testing.assert_allclose(out[:j, :, k], 0.0, atol=TOL)


@pytest.mark.parametrize("history", [False, True])
def test_trial_ids_match_separate_segments(rng, history):
    # Trials of varying length, some shorter than the window, one of length 1, and a
    # label that comes back later (a new segment).
    lengths = [40, 3, 1, 25, 60, 12]
    labels = [0, 1, 2, 3, 1, 4]
    trial_ids = np.repeat(labels, lengths)
    x = rng.normal(size=(trial_ids.size, 2))
    matrix = RaisedCosineLinear(5, window=20).matrix()
    expected = segment_conv(x, matrix, int(history), trial_ids)
    out = convolve(x, matrix, history=history, trial_ids=trial_ids)
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOL)
    # traced trial_ids take the masked path; it must agree as well
    jitted = jax.jit(convolve, static_argnames="history")
    out_traced = jitted(
        jnp.asarray(x), jnp.asarray(matrix), history=history, trial_ids=jnp.asarray(trial_ids)
    )
    np.testing.assert_allclose(out_traced, expected, rtol=0, atol=TOL)
    # the 1-D signal path
    out_1d = convolve(x[:, 0], matrix, history=history, trial_ids=trial_ids)
    np.testing.assert_allclose(out_1d, expected[:, 0], rtol=0, atol=TOL)


def test_single_trial_equals_no_trial_ids(rng):
    x = rng.normal(size=(150, 2))
    basis = BSpline(5, window=30)
    np.testing.assert_allclose(
        convolve(x, basis, trial_ids=np.zeros(150, int)), convolve(x, basis), rtol=0, atol=TOL
    )


def test_design_matrix_is_channel_major(rng):
    x = rng.poisson(0.5, size=(120, 3))
    basis = BSpline(5, window=15)
    out = np.asarray(convolve(x, basis, history=True))
    design = np.asarray(design_matrix(x, basis, history=True))
    assert design.shape == (120, 15)
    for c in range(3):
        for b in range(5):
            np.testing.assert_array_equal(design[:, c * 5 + b], out[:, c, b])
    assert design_matrix(x[:, 0], basis).shape == (120, 5)


def test_filter_from_weights_acts_through_features(rng):
    # features @ w == the signal filtered by h = basis.reconstruct(w)
    x = rng.normal(size=400)
    basis = RaisedCosineLog(5, window=60)
    w = rng.normal(size=5)
    h = np.asarray(basis.reconstruct(w))
    features = np.asarray(convolve(x, basis, history=True))
    np.testing.assert_allclose(features @ w, np.convolve(x, np.r_[0.0, h])[:400], atol=TOL)


def test_jit_matches_eager(rng):
    x = jnp.asarray(rng.normal(size=(256, 4)))
    basis = RaisedCosineLog(4, window=30)
    jitted = jax.jit(convolve, static_argnames="history")
    np.testing.assert_allclose(jitted(x, basis, history=True), convolve(x, basis, history=True), atol=TOL)
    # the basis may also be a traced matrix
    m = jnp.asarray(basis.matrix())
    np.testing.assert_allclose(jitted(x, m, history=True), convolve(x, m, history=True), atol=TOL)
    # and the basis as an explicit static argument
    static = jax.jit(convolve, static_argnames=("basis", "history"))
    np.testing.assert_allclose(static(x, basis, history=True), convolve(x, basis, history=True), atol=TOL)


def test_dtypes():
    counts = np.zeros((50, 2), dtype=np.int32)
    counts[3, 1] = 2
    out = convolve(counts, Identity(3), history=True)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out[4:7, 1], 2 * np.eye(3), atol=TOL)
    out32 = convolve(np.ones(50, dtype=np.float32), Identity(3))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32[5], np.ones(3), atol=1e-6)


# ----------------------------------------------------------------------------- bases


@pytest.mark.parametrize(
    "n_basis, window, first_peak, last_peak, offset",
    [(5, 100, 1.0, 40.0, 1.0), (8, 200, 0.0, 120.0, 5.0), (3, 25, 2.0, 10.0, 0.5)],
)
def test_raised_cosine_log_matches_pillow(n_basis, window, first_peak, last_peak, offset):
    basis = RaisedCosineLog(n_basis, window=window, first_peak=first_peak, last_peak=last_peak, offset=offset)
    reference, _, _ = pillow_basis(n_basis, window, [first_peak, last_peak], offset)
    np.testing.assert_allclose(basis.matrix(), reference, rtol=0, atol=1e-12)
    assert basis.matrix().shape == (window, n_basis)
    assert basis.matrix().dtype == np.float64
    # peaks where asked, and the sampled bumps are maximal (= 1) there
    assert basis.peaks[0] == first_peak and basis.peaks[-1] == last_peak
    assert basis.matrix()[:, 0].argmax() == int(first_peak)
    assert basis.matrix()[:, -1].argmax() == int(last_peak)
    np.testing.assert_allclose(basis.matrix()[int(last_peak), -1], 1.0, atol=1e-12)


def test_raised_cosine_log_default_last_peak_ends_at_window():
    basis = RaisedCosineLog(6, window=150, first_peak=0.0, offset=2.0)
    reference, yrnge, db = pillow_basis(6, 150, [0.0, basis.peaks[-1]], 2.0)
    np.testing.assert_allclose(basis.matrix(), reference, atol=1e-12)
    # GLMspiketools' basis length: mxt = invnl(yrnge(2) + 2 db) - b, here = window
    np.testing.assert_allclose(np.exp(yrnge[1] + 2 * db) - 2.0, 150.0, rtol=1e-12)
    assert basis.matrix()[-1, -1] > 0  # the last lag still carries weight
    single = RaisedCosineLog(1, window=40)
    assert single.matrix()[0, 0] == 1.0 and 0 < single.matrix()[-1, 0] < 0.01


@pytest.mark.parametrize("offset", [0.5, 1.0, 10.0])
def test_raised_cosine_log_sums_to_two_in_interior(offset):
    # Pillow's bumps span four spacings in warped time, so they sum to 2 between
    # the second and the second-to-last peak (unit sum after dividing by 2).
    basis = RaisedCosineLog(10, window=500, first_peak=0.0, last_peak=300.0, offset=offset)
    total = basis.matrix().sum(axis=1)
    t = np.arange(500)
    interior = (t >= basis.peaks[1]) & (t <= basis.peaks[-2])
    assert interior.sum() > 100
    np.testing.assert_allclose(total[interior], 2.0, atol=1e-12)
    assert np.all(total <= 2.0 + 1e-12) and np.all(basis.matrix() >= 0)


@pytest.mark.parametrize("width", [1.0, 1.5, 2.0, 3.0])
def test_raised_cosine_linear_constant_sum(width):
    basis = RaisedCosineLinear(9, window=300, width=width)
    spacing = 300 / (8 + width)
    np.testing.assert_allclose(basis.peaks, spacing * np.arange(9))
    t = np.arange(300)
    interior = (t >= (width - 1) * spacing) & (t <= (9 - width) * spacing)
    np.testing.assert_allclose(basis.matrix().sum(axis=1)[interior], width, atol=1e-12)
    # independent formula, and the last bump ending at t = window
    d = t[:, None] - basis.peaks[None, :]
    reference = np.where(np.abs(d) < width * spacing, 0.5 + 0.5 * np.cos(np.pi * d / (width * spacing)), 0.0)
    np.testing.assert_allclose(basis.matrix(), reference, atol=1e-12)
    np.testing.assert_allclose(basis.peaks[-1] + width * spacing, 300.0)


@pytest.mark.parametrize("n_basis, window, order", [(6, 50, 4), (4, 4, 4), (10, 200, 3), (3, 10, 1)])
def test_bspline(n_basis, window, order):
    basis = BSpline(n_basis, window=window, order=order)
    matrix = basis.matrix()
    assert matrix.shape == (window, n_basis)
    assert np.all(matrix >= 0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    knots = basis.knots
    assert len(knots) == n_basis + order
    np.testing.assert_allclose(np.diff(knots[order - 1 : n_basis + 1]), (window - 1) / (n_basis - order + 1))
    np.testing.assert_allclose(matrix, cox_de_boor(np.arange(window), knots, order), atol=1e-12)
    assert np.linalg.matrix_rank(matrix) == n_basis


def test_identity():
    basis = Identity(7)
    assert basis.n_basis == 7 and basis.window == 7
    np.testing.assert_array_equal(basis.matrix(), np.eye(7))


@pytest.mark.parametrize(
    "basis",
    [RaisedCosineLog(5, window=40), RaisedCosineLinear(4, window=20), BSpline(6, window=30), Identity(5)],
    ids=repr,
)
def test_reconstruct_and_lags(rng, basis):
    weights = rng.normal(size=(3, 2, basis.n_basis))
    np.testing.assert_allclose(basis.reconstruct(weights), weights @ basis.matrix().T, atol=TOL)
    assert basis.reconstruct(weights[0, 0]).shape == (basis.window,)
    shift = int(getattr(basis, "history", False))
    np.testing.assert_allclose(basis.lags(0.002), (np.arange(basis.window) + shift) * 0.002)
    hash(basis)  # static under jit
    assert eval(repr(basis)) == basis


def test_history_flag_labels_lags():
    assert RaisedCosineLog(3, window=10).lags(1.0)[0] == 1.0
    assert RaisedCosineLog(3, window=10, history=False).lags(1.0)[0] == 0.0
    assert Identity(4).lags(0.5, history=True).tolist() == [0.5, 1.0, 1.5, 2.0]
    # history=None in convolve takes the basis's flag
    x = np.arange(20.0)
    np.testing.assert_allclose(
        convolve(x, RaisedCosineLog(3, window=10), history=None),
        convolve(x, RaisedCosineLog(3, window=10), history=True),
    )


def test_orthogonalize():
    basis = RaisedCosineLog(6, window=80)
    q = orthogonalize(basis)
    assert q.shape == (80, 6)
    np.testing.assert_allclose(q.T @ q, np.eye(6), atol=1e-12)
    # same span: projecting the original columns onto q changes nothing
    b = basis.matrix()
    np.testing.assert_allclose(q @ (q.T @ b), b, atol=1e-12)
    # rank-deficient input loses the redundant direction
    assert orthogonalize(np.c_[b, b[:, 0] + b[:, 1]]).shape == (80, 6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RaisedCosineLog(0, window=10), "n_basis must be >= 1"),
        (lambda: RaisedCosineLog(2.5, window=10), "n_basis must be an integer"),
        (lambda: RaisedCosineLog(3, window=0), "window must be >= 1"),
        (lambda: RaisedCosineLog(3, window=10, offset=0.0), "offset must be > 0"),
        (lambda: RaisedCosineLog(3, window=10, first_peak=-1.0), "first_peak must satisfy"),
        (lambda: RaisedCosineLog(3, window=10, first_peak=10.0), "first_peak must satisfy"),
        (lambda: RaisedCosineLog(3, window=10, first_peak=4.0, last_peak=4.0), "first_peak < last_peak"),
        (lambda: RaisedCosineLog(3, window=10, first_peak=1.0, last_peak=10.0), "last_peak < window"),
        (lambda: RaisedCosineLog(1, window=10, first_peak=1.0, last_peak=5.0), "one peak"),
        (lambda: RaisedCosineLog(3, window=10, offset=float("nan")), "offset must be finite"),
        (lambda: RaisedCosineLog(3, window=10, history=1), "history must be True or False"),
        (lambda: RaisedCosineLinear(3, window=10, width=0.0), "width must be > 0"),
        (lambda: BSpline(3, window=10, order=4), "n_basis must be >= 4"),
        (lambda: BSpline(12, window=10), "need n_basis <= window"),
        (lambda: BSpline(4, window=10, order=0), "order must be >= 1"),
        (lambda: Identity(0), "window must be >= 1"),
    ],
)
def test_bad_basis_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_convolve_input():
    basis = BSpline(4, window=10)
    x = np.ones((30, 2))
    with pytest.raises(ValueError, match=r"x must be 1-D \(time,\) or 2-D \(time, channel\)"):
        convolve(np.ones((30, 2, 2)), basis)
    with pytest.raises(ValueError, match="x must have at least one time bin"):
        convolve(np.ones((0, 2)), basis)
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(first at index \(7, 1\)\)"):
        convolve(bad, basis)
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        convolve(bad, basis)
    with pytest.raises(ValueError, match="x must be real"):
        convolve(x + 1j, basis)
    with pytest.raises(ValueError, match=r"trial_ids must have shape \(time,\) = \(30,\)"):
        convolve(x, basis, trial_ids=np.zeros(29, int))
    with pytest.raises(ValueError, match=r"trial_ids must have shape \(time,\)"):
        convolve(x, basis, trial_ids=np.zeros((30, 1), int))
    with pytest.raises(ValueError, match="trial_ids must be integer labels"):
        convolve(x, basis, trial_ids=np.zeros(30))
    with pytest.raises(ValueError, match=r"basis matrix must be 2-D \(lag, basis\)"):
        convolve(x, np.ones(5))
    with pytest.raises(ValueError, match="basis matrix contains NaN"):
        convolve(x, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="history must be True or False"):
        convolve(x, basis, history="yes")
    with pytest.raises(ValueError, match="history=False disagrees with the basis"):
        convolve(x, RaisedCosineLog(3, window=10), history=False)  # history basis as stimulus filter
    with pytest.raises(ValueError, match=r"weights must have shape \(\.\.\., basis\)"):
        basis.reconstruct(np.ones(3))
    with pytest.raises(ValueError, match="bin_size must be > 0"):
        basis.lags(0.0)


def test_default_history_follows_the_basis(rng):
    x = rng.normal(size=(40, 2))
    hist = RaisedCosineLog(4, window=12)  # built for spike history
    np.testing.assert_array_equal(convolve(x, hist), convolve(x, hist, history=True))
    stim = RaisedCosineLog(4, window=12, history=False)
    np.testing.assert_array_equal(convolve(x, stim), convolve(x, stim, history=False))
    np.testing.assert_array_equal(convolve(x, Identity(5)), convolve(x, Identity(5), history=False))
