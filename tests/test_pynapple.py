"""pynapple in and out of every model family.

Each model is fitted twice on the same recording, once from a :class:`SpikeData` and once from
pynapple objects (a ``TsGroup`` of spike times or a ``TsdFrame`` of counts, ``Tsd`` targets,
``IntervalSet`` epochs); the results must agree, and per-bin outputs (rates, latents, decoded
trajectories, states) must come back as pynapple objects holding the same numbers.
"""

import warnings

import numpy as np
import pytest

import bayesneuro as bn
from bayesneuro.decoders import KalmanDecoder, NaiveBayesDecoder
from bayesneuro.density import FactorAnalysis, MaxEnt, PoissonHMM
from bayesneuro.splits import split_epochs

nap = pytest.importorskip("pynapple")

BIN = 0.02
DURATION = 120.0


@pytest.fixture(scope="module")
def recording():
    """Six place-like cells on a 1-D track: spike times, the position, and both as pynapple."""
    rng = np.random.default_rng(0)
    dt = 0.001
    t = np.arange(0, DURATION, dt)
    pos = 0.5 + 0.45 * np.sin(2 * np.pi * t / 20.0)
    centers = np.linspace(0.1, 0.9, 6)
    rates = 2.0 + 30.0 * np.exp(-0.5 * ((pos[:, None] - centers) / 0.08) ** 2)
    spikes = {i: t[rng.random(t.size) < rates[:, i] * dt] + dt / 2 for i in range(6)}
    group = nap.TsGroup({i: nap.Ts(s) for i, s in spikes.items()}, time_support=nap.IntervalSet(0, DURATION))
    # samples between bin edges (a sample on an edge would go either way by rounding)
    position = nap.Tsd(t=t + dt / 2, d=pos, time_support=nap.IntervalSet(0, DURATION))
    data = bn.SpikeData.from_pynapple(group, bin_size=BIN, covariates=position)
    return group, position, data


def test_tsgroup_needs_a_bin_size_and_names_it(recording):
    group, _, _ = recording
    with pytest.raises(ValueError, match="TsGroup .*pass bin_size="):
        bn.PoissonGLM().fit(group, key=0, progress=False)


@pytest.mark.slow  # ~9 s: four GLM fits
def test_glm_from_tsgroup_and_rates_as_tsdframe(recording):
    group, position, data = recording
    basis = bn.bases.RaisedCosineLog(3, window=10, first_peak=0.0, history=False)
    ref = bn.PoissonGLM(stimulus_basis=basis).fit(data, key=0, progress=False)
    # the pynapple way: counts binned by pynapple, the covariate attached by bayesneuro
    counts = group.count(BIN)
    frame_data = bn.SpikeData.from_pynapple(counts, bin_size=BIN, covariates=position)
    glm = bn.PoissonGLM(stimulus_basis=basis).fit(frame_data, key=0, progress=False)
    for k in ref.params_:
        np.testing.assert_allclose(np.asarray(glm.params_[k]), np.asarray(ref.params_[k]), atol=1e-8)
    # a TsGroup straight into fit, with bin_size
    glm2 = bn.PoissonGLM(stimulus_basis=None, history_basis=bn.bases.RaisedCosineLog(2, window=5, first_peak=0.0)).fit(group, bin_size=BIN, key=0, progress=False)
    spikes_only = bn.SpikeData.from_pynapple(group, bin_size=BIN)
    ref2 = bn.PoissonGLM(stimulus_basis=None, history_basis=bn.bases.RaisedCosineLog(2, window=5, first_peak=0.0)).fit(spikes_only, key=0, progress=False)
    np.testing.assert_allclose(np.asarray(glm2.params_["bias"]), np.asarray(ref2.params_["bias"]), atol=1e-8)
    rate = glm2.predict_rate(counts)
    assert isinstance(rate, nap.TsdFrame)
    assert list(rate.columns) == list(range(6))
    np.testing.assert_allclose(rate.values, ref2.predict_rate(spikes_only), rtol=1e-10)
    np.testing.assert_allclose(rate.t, data.bin_centers)
    assert isinstance(ref2.predict_rate(spikes_only), np.ndarray)  # SpikeData in, arrays out, as before


@pytest.mark.filterwarnings(  # max_iter=20 keeps the fit short; the check is pynapple in and out
    r"ignore:GPFA EM .*stopped at max_iter=20:bayesneuro.diagnostics.ConvergenceWarning")
def test_gpfa_latents_as_tsdframe(recording):
    _, _, data = recording
    # five 0.8-s epochs (trials of 40 bins), as pynapple users cut a recording into trials
    starts = np.arange(0.0, 100.0, 20.0)
    short = data.restrict(nap.IntervalSet(start=starts, end=starts + 0.8))
    assert short.n_trial == 5 and short.n_time == 200
    gp = bn.GPFA(n_latents=2).fit(short, key=0, progress=False, max_iter=20)
    frame = short.to_pynapple()
    lat = gp.transform(frame)
    ds = gp.transform(short)
    assert isinstance(lat, nap.TsdFrame) and list(lat.columns) == ["latent_0", "latent_1"]
    np.testing.assert_allclose(lat.values, ds["mean"].values, rtol=1e-8, atol=1e-10)
    gp2 = bn.GPFA(n_latents=2).fit(frame, key=0, progress=False, max_iter=20)
    np.testing.assert_allclose(gp2.transform(short)["mean"].values, ds["mean"].values, rtol=1e-6, atol=1e-8)


def test_decoders_take_tsd_targets_and_return_trajectories(recording):
    group, position, data = recording
    train = data.time_slice(0, 90.0)
    test = data.time_slice(90.0, DURATION)
    ref = NaiveBayesDecoder(bins=20, range=(0, 1)).fit(train, "x0")
    dec = NaiveBayesDecoder(bins=20, range=(0, 1)).fit(
        group.restrict(nap.IntervalSet(0, 90.0)), position, bin_size=BIN
    )
    np.testing.assert_allclose(dec.decode(test).log_prob, ref.decode(test).log_prob, atol=1e-10)
    post = dec.decode(test.to_pynapple())
    traj = post.to_pynapple()
    assert isinstance(traj, nap.Tsd)
    np.testing.assert_allclose(traj.values, ref.decode(test).point[:, 0])
    np.testing.assert_allclose(traj.t, test.bin_centers)
    band = post.to_pynapple(prob=0.9)
    assert list(band.columns) == ["s0", "s0_lower", "s0_upper"]
    assert np.all(band["s0_lower"].values <= band["s0_upper"].values)
    # decoding works: the decoded position follows the true one, better than guessing the mean
    # (six cells in 20-ms bins carry little per bin, so the bar is against chance, not perfection)
    truth = position.bin_average(BIN, ep=nap.IntervalSet(90.0, DURATION)).values
    n = min(truth.size, traj.values.size)
    err = np.mean(np.abs(traj.values[:n] - truth[:n]))
    chance = np.mean(np.abs(truth[:n] - train.covariates[:, 0].mean()))
    assert err < 0.8 * chance
    assert np.corrcoef(traj.values[:n], truth[:n])[0, 1] > 0.3
    # a Gaussian posterior too
    kal = KalmanDecoder().fit(train, position)
    kt = kal.decode(test).to_pynapple(prob=0.9)
    assert isinstance(kt, nap.TsdFrame) and kt.shape == (test.n_time, 3)
    np.testing.assert_allclose(kt.values[:, 0], KalmanDecoder().fit(train, "x0").decode(test).mean[:, 0])


@pytest.mark.filterwarnings(  # FA at its defaults stops at the cap on this recording; the check is in = out
    r"ignore:FA EM \(d=2\). stopped at max_iter:bayesneuro.diagnostics.ConvergenceWarning")
@pytest.mark.slow  # ~14 s: FA at its defaults (10000 EM steps) and HMM fits, twice each
def test_density_models_take_tsdframes(recording):
    _, _, data = recording
    frame = data.to_pynapple()
    fa = FactorAnalysis(n_latents=2).fit(frame)
    ref = FactorAnalysis(n_latents=2).fit(data)
    np.testing.assert_allclose(fa.transform(data), ref.transform(data), rtol=1e-8, atol=1e-10)
    z = fa.transform(frame)
    assert isinstance(z, nap.TsdFrame) and z.shape == (data.n_time, 2)
    hmm = PoissonHMM(n_states=2).fit(frame, key=0, n_restarts=1, progress=False)
    states = hmm.most_likely_states(frame)
    assert isinstance(states, nap.Tsd)
    ref_hmm = PoissonHMM(n_states=2).fit(data, key=0, n_restarts=1, progress=False)
    np.testing.assert_array_equal(states.values, ref_hmm.most_likely_states(data))
    me = MaxEnt("independent").fit(frame, key=0)
    assert me.score(frame) == pytest.approx(MaxEnt("independent").fit(data, key=0).score(data), rel=1e-10)


def test_epochs_restrict_and_split(recording):
    group, _, data = recording
    ep = nap.IntervalSet(start=[10.0, 50.0], end=[20.0, 60.0])
    part = data.restrict(ep)
    assert part.n_time == 1000 and part.n_trial == 2
    np.testing.assert_array_equal(part.counts, bn.SpikeData.from_pynapple(group, bin_size=BIN, ep=ep).counts)
    sets = split_epochs(data, train=nap.IntervalSet(0, 80.0), test=nap.IntervalSet(80.0, 100.0),
                        validation=nap.IntervalSet(100.0, DURATION))
    assert (sets.train.n_time, sets.test.n_time) == (4000, 1000)
    with pytest.raises(ValueError, match="train and test epochs share"):
        split_epochs(data, train=nap.IntervalSet(0, 80.0), test=nap.IntervalSet(70.0, 100.0))
    with pytest.raises(ValueError, match="no bin centre lies inside ep"):
        data.restrict(nap.IntervalSet(500.0, 600.0))


def test_warnings_of_decorated_methods_point_at_the_caller():
    # the pynapple wrapper adds a frame; a warning must still name the user's line, not it
    data = bn.SpikeData(np.random.default_rng(1).poisson(1.0, (200, 2)), bin_size=0.01)
    with warnings.catch_warnings():
        # a user's default filters: under the suite's "error" filter the wrapper calls the
        # method directly (a warning must raise where it is issued), so no site is rewritten
        warnings.resetwarnings()
        with pytest.warns(UserWarning, match="constant rate") as record:
            bn.PoissonGLM(stimulus_basis=None).fit(data, key=0, progress=False)
    assert [w.filename for w in record if "constant rate" in str(w.message)] == [__file__]


# ---- binning conventions: bin edges and short last bins (docs/pynapple.md) ------------------


def _edge_group(bin_size, start, n_bins, rng):
    """Two units: one firing exactly on every decimal bin edge (as pynapple's timestamps hold
    them, rounded to 1 ns), one at random times; support ``[start, start + n_bins * bin_size]``."""
    edges = np.round(start + np.arange(n_bins + 1) * bin_size, 9)
    rand = np.sort(rng.uniform(start, edges[-1], 5 * n_bins))
    end = float(edges[-1])
    return nap.TsGroup({3: nap.Ts(edges), 7: nap.Ts(rand)}, time_support=nap.IntervalSet(start, end))


@pytest.mark.parametrize("bin_size,start", [(0.1, 0.0), (0.02, 3.3), (0.05, 7.35), (0.001, 1.0), (0.3, 0.6)])
def test_from_pynapple_counts_edge_spikes_as_tsgroup_count(bin_size, start):
    # bins are [a, b) in both, with pynapple's edges (rounded to 1 ns): a spike on an edge goes
    # into the later bin, and a spike on the epoch's end is in no bin. Compared bin by bin.
    group = _edge_group(bin_size, start, 40, np.random.default_rng(1))
    ref = group.count(bin_size)
    data = bn.SpikeData.from_pynapple(group, bin_size=bin_size)
    assert data.n_time == len(ref) == 40
    np.testing.assert_array_equal(np.asarray(data.counts), np.asarray(ref.values))
    np.testing.assert_allclose(data.bin_centers, ref.t, atol=1e-9)
    # every edge spike but the one on the epoch's end is in the bin that starts there
    np.testing.assert_array_equal(np.asarray(data.counts)[:, 0], np.ones(40))
    # several epochs (trials), each starting on a spike
    ep = nap.IntervalSet(start=[start, start + 12 * bin_size], end=[start + 5 * bin_size, start + 30 * bin_size])
    ep_data = bn.SpikeData.from_pynapple(group, bin_size=bin_size, ep=ep)
    np.testing.assert_array_equal(np.asarray(ep_data.counts), np.asarray(group.count(bin_size, ep).values))


def test_from_pynapple_drops_the_short_last_bin_that_tsgroup_count_keeps():
    group = _edge_group(0.1, 0.0, 40, np.random.default_rng(2))
    ep = nap.IntervalSet(0.0, 3.07)  # 30 whole bins and a 0.07-s stub
    ref = group.count(0.1, ep)
    assert len(ref) == 31 and ref.t[-1] == pytest.approx(3.05)  # pynapple keeps the stub, timed as a whole bin
    data = bn.SpikeData.from_pynapple(group, bin_size=0.1, ep=ep)
    assert data.n_time == 30
    np.testing.assert_array_equal(np.asarray(data.counts), np.asarray(ref.values)[:-1])


@pytest.fixture(scope="module")
def short_counts():
    """A Poisson train binned by pynapple on an epoch that ends 13 ms into the last 20-ms bin."""
    rng = np.random.default_rng(5)
    spikes = {i: np.sort(rng.uniform(0.0, 10.013, rng.poisson(20 * 10))) for i in range(3)}
    group = nap.TsGroup({i: nap.Ts(s) for i, s in spikes.items()}, time_support=nap.IntervalSet(0.0, 10.013))
    counts = group.count(BIN)
    return group, counts


def test_short_last_bin_is_refused_by_every_fit_with_what_to_do(short_counts):
    group, counts = short_counts
    assert len(counts) == 501  # 500 whole bins and one 13-ms bin at t=10.01
    msg = r"bin at t=10\.01 s is 0\.013 s wide.*bin_size=0\.02.*counts\[:-1\]"
    with pytest.raises(ValueError, match=msg):
        bn.SpikeData.from_pynapple(counts, bin_size=BIN)
    with pytest.raises(ValueError, match=msg):
        bn.PoissonGLM(stimulus_basis=None).fit(counts, key=0, progress=False)
    with pytest.raises(ValueError, match=msg):
        FactorAnalysis(n_latents=1).fit(counts)
    with pytest.raises(ValueError, match=msg):
        PoissonHMM(n_states=2).fit(counts, key=0, n_restarts=1, progress=False)
    with pytest.raises(ValueError, match=msg):
        NaiveBayesDecoder(bins=5, range=(0, 1)).fit(counts, np.linspace(0, 1, len(counts)))
    from bayesneuro.decoders.evaluation import kfold
    with pytest.raises(ValueError, match=msg):
        kfold(counts, 3)
    # what the message says to do works, and gives bayesneuro's own binning of the train
    trimmed = bn.SpikeData.from_pynapple(counts[:-1], bin_size=BIN)
    np.testing.assert_array_equal(trimmed.counts, bn.SpikeData.from_pynapple(group, bin_size=BIN).counts)
    assert [tr.n_time for tr, _ in kfold(counts[:-1], 3)] == [
        tr.n_time for tr, _ in kfold(bn.SpikeData.from_pynapple(group, bin_size=BIN), 3)]
    # whole bins are not refused: an `ep` that cuts a bin keeps the bin's count (made whole), and
    # a frame made without time_support (pynapple's default: first to last timestamp) is whole
    cut = bn.SpikeData.from_pynapple(counts[:-1], bin_size=BIN, ep=nap.IntervalSet(2.005, 8.0))
    np.testing.assert_array_equal(cut.counts, np.asarray(counts.restrict(nap.IntervalSet(2.005, 8.0)).values))
    bare = nap.TsdFrame(t=counts.t[:-1], d=counts.values[:-1])
    assert bn.SpikeData.from_pynapple(bare, bin_size=BIN).n_time == 500


@pytest.mark.slow  # ~20 s on a shared 2-core machine: a GLM fit and two predictions compile
def test_glm_predict_rate_on_a_short_last_bin_is_a_rate_per_second(short_counts):
    group, counts = short_counts
    hist = bn.bases.RaisedCosineLog(2, window=5, first_peak=0.0)
    glm = bn.PoissonGLM(stimulus_basis=None, history_basis=hist).fit(counts[:-1], key=0, progress=False)
    rate = glm.predict_rate(counts)
    assert isinstance(rate, nap.TsdFrame) and rate.shape == (501, 3)
    np.testing.assert_allclose(rate.t, counts.t)
    # the output lives on the input's epoch, not on a whole last bin past its end
    np.testing.assert_allclose(rate.time_support.values, counts.time_support.values)
    # reference: the same spikes binned on an epoch with a whole last bin; the rate of a bin
    # depends only on the spikes before it, so the short bin's rate is that bin's rate
    whole = bn.SpikeData.from_pynapple(group, bin_size=BIN, ep=nap.IntervalSet(0.0, 10.02))
    np.testing.assert_allclose(rate.values, glm.predict_rate(whole), rtol=1e-10)
    # scores would need the expected count of the short bin (rate x 13 ms): refused, not mis-scaled
    for method in (glm.log_likelihood, glm.score, glm.evaluate, glm.pseudo_r2):
        with pytest.raises(ValueError, match=r"0\.013 s wide"):
            method(counts)


def test_from_pynapple_edges_for_a_bin_size_off_the_nanosecond_grid():
    # bayesneuro rounds each edge from the start (start + j * bin_size to 1 ns); pynapple rounds
    # each from the one before, which drifts when bin_size is not a whole number of ns
    # (docs/pynapple.md). The reference is np.histogram on bayesneuro's stated edges.
    bs, n, start = 1 / 30000, 3000, 2.0
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(start, start + n * bs, 20 * n))
    group = nap.TsGroup({0: nap.Ts(times)}, time_support=nap.IntervalSet(start, start + n * bs))
    data = bn.SpikeData.from_pynapple(group, bin_size=bs)
    edges = np.r_[start, np.round(start + np.arange(1, n + 1) * bs, 9)]
    np.testing.assert_array_equal(np.asarray(data.counts)[:, 0], np.histogram(times, edges)[0])
    assert np.any(np.asarray(group.count(bs).values)[:n, 0] != np.asarray(data.counts)[:, 0])


def test_warnings_of_decorated_methods_reach_the_user_outside_error_filters():
    """The pynapple wrapper re-issues a method's warnings at the user's line. Outside the test
    suite's error filters (a notebook's default filters) they must still be shown: they were
    dropped, because warn_explicit(module=None) discards a warning."""
    import bayesneuro as bn
    from bayesneuro.diagnostics import ConvergenceWarning

    rng = np.random.default_rng(0)
    data = bn.SpikeData.from_trials(rng.poisson(2.0, size=(6, 20, 5)), bin_size=0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # no "error" filters: the re-issuing path runs
        warnings.simplefilter("default")
        bn.GPFA(2).fit(data, max_iter=2, tol=1e-12, progress=False)
    msgs = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert msgs and "stopped at max_iter=2" in str(msgs[0].message)


@pytest.mark.parametrize("rate_hz", [200.0, 10.0])  # finer than the bins (averaged), coarser (interpolated)
def test_covariates_are_not_interpolated_across_tracking_gaps(rate_hz):
    """Tracking lost for 30 s: the bins in the gap are dropped with a warning that counts them,
    never filled with invented positions; bins outside it keep the resampled values, and a
    max_gap longer than the gap bridges it (as before)."""
    rng = np.random.default_rng(4)
    spikes = {i: nap.Ts(np.sort(rng.uniform(0, 100, 400))) for i in range(3)}
    group = nap.TsGroup(spikes, time_support=nap.IntervalSet(0, 100))
    t = np.arange(0.0, 100.0, 1 / rate_hz) + 0.5 / rate_hz
    t = t[(t < 40.0) | (t > 70.0)]  # a 30-s gap
    pos = nap.Tsd(t=t, d=np.cos(t / 7.0), time_support=nap.IntervalSet(0, 100))
    bin_size = 0.05
    centres = np.arange(0, 100, bin_size) + bin_size / 2
    in_gap = (centres > t[t < 50][-1] + 0.0) & (centres < t[t > 50][0])
    with pytest.warns(UserWarning, match=rf"{in_gap.sum()} of {centres.size} bins .*gaps? in the covariates"):
        data = bn.SpikeData.from_pynapple(group, bin_size=bin_size, covariates=pos)
    assert data.n_time == centres.size - in_gap.sum()
    np.testing.assert_allclose(data.bin_centers, centres[~in_gap])
    assert data.n_trial == 2  # the gap splits the recording: no model reads across it
    ref = np.interp(data.bin_centers, t, np.cos(t / 7.0))
    np.testing.assert_allclose(data.covariates[:, 0], ref, atol=0.01)  # averaged or interpolated
    assert not np.any((data.bin_centers > 40.5) & (data.bin_centers < 69.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bridged = bn.SpikeData.from_pynapple(group, bin_size=bin_size, covariates=pos, max_gap=31.0)
    assert bridged.n_time == centres.size
