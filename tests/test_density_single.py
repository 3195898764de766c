"""Spike trains and single-neuron statistics: direct formulas against elephant and brute force,
posterior calibration on simulated renewal processes, and bad input."""

import numpy as np
import pytest
import scipy.stats as sps

from bayesneuro import SpikeData
from bayesneuro.density import (
    NeuronStatistics,
    SpikeTrains,
    autocorrelogram,
    fano_factor,
    isi_cv,
    local_variation,
)


def gamma_train(rng, shape, rate, t_stop):
    """A gamma renewal process of the given shape and mean rate on [0, t_stop)."""
    n = int(rate * t_stop * 1.5 + 50)
    t = np.cumsum(rng.gamma(shape, 1.0 / (shape * rate), n))
    return t[t < t_stop]


# -- containers ----------------------------------------------------------------------------


def test_isis_never_cross_segments_brute_force():
    rng = np.random.default_rng(0)
    segs = np.array([[0.0, 1.0], [1.5, 2.0], [2.0, 3.2]])
    times = [np.sort(rng.uniform(0, 3.5, 40)) for _ in range(3)]
    tr = SpikeTrains(times, segments=segs)
    for t, isi, pr in zip(times, tr.isis(), tr.isi_pairs()):
        want, want_pairs = [], []
        for a, b in segs:
            s = t[(t >= a) & (t < b)]
            d = np.diff(s)
            want.append(d)
            want_pairs += [(d[i], d[i + 1]) for i in range(d.size - 1)]
        np.testing.assert_array_equal(isi, np.concatenate(want))
        np.testing.assert_array_equal(pr, np.array(want_pairs).reshape(-1, 2))
    assert tr.duration == pytest.approx(1.0 + 0.5 + 1.2)
    # spikes in the gap [1, 1.5) and after 3.2 are dropped
    assert all(np.all(((t < 1) | (t >= 1.5)) & (t < 3.2)) for t in tr.times)


def test_window_counts_and_round_trip_through_spike_data():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 4, 200))
    tr = SpikeTrains([t], segments=[[0, 2], [2, 4]])
    wc = tr.window_counts(0.5)
    edges = np.arange(0, 4.0001, 0.5)
    np.testing.assert_array_equal(wc[:, 0], np.histogram(t, edges)[0])
    np.testing.assert_array_equal(tr.window_counts()[:, 0], [np.sum(t < 2), np.sum(t >= 2)])
    data = tr.to_spike_data(0.1)
    assert data.n_trial == 2 and data.counts.sum() == t.size
    back = SpikeTrains.from_spike_data(data)
    np.testing.assert_allclose(back.segments, [[0, 2], [2, 4]], atol=1e-12)
    assert back.n_spikes.tolist() == [t.size] and back.resolution == 0.1


def test_from_times_and_pynapple_agree():
    nap = pytest.importorskip("pynapple")
    rng = np.random.default_rng(2)
    a, b = np.sort(rng.uniform(0, 10, 30)), np.sort(rng.uniform(0, 10, 20))
    g = nap.TsGroup({4: nap.Ts(a), 9: nap.Ts(b)}, time_support=nap.IntervalSet([0, 6], [5, 10]))
    t1 = SpikeTrains.from_pynapple(g)
    t2 = SpikeTrains.from_times(np.r_[a, b], np.r_[np.full(30, 4), np.full(20, 9)],
                                segments=[[0, 5], [6, 10]])
    assert t1.neuron_ids.tolist() == t2.neuron_ids.tolist() == [4, 9]
    for x, y in zip(t1.isis(), t2.isis()):
        np.testing.assert_allclose(x, y)


def test_local_variation_of_isis_never_pairs_across_trials():
    """Lv of ``SpikeTrains.isis()`` equals the brute-force pooled Lv of the pairs inside each
    trial, and the pair-weighted mean of elephant's ``lv`` applied per trial; a slice that lost
    the trial boundaries is refused instead of paired blindly."""
    es = pytest.importorskip("elephant.statistics")
    rng = np.random.default_rng(11)
    # clock-like trains, a different period per trial: pairs across a boundary inflate Lv
    segs = np.array([[2.0 * k, 2.0 * k + 2.0] for k in range(12)])
    t = np.concatenate([2.0 * k + np.arange(0.01, 1.99, rng.uniform(0.02, 0.3)) for k in range(12)])
    tr = SpikeTrains([t, np.sort(rng.uniform(0, 24, 300))], segments=segs)
    for j in range(tr.n_neuron):
        terms, lv_el, n_pair = [], [], []
        for a, b in segs:
            d = np.diff(tr.times[j][(tr.times[j] >= a) & (tr.times[j] < b)])
            terms += [((d[i] - d[i + 1]) / (d[i] + d[i + 1])) ** 2 for i in range(d.size - 1)]
            if d.size >= 2:
                lv_el.append(float(es.lv(d)))
                n_pair.append(d.size - 1)
        brute = 3.0 * np.mean(terms)
        assert local_variation(tr.isis()[j]) == pytest.approx(brute, rel=1e-12)
        assert local_variation(tr.isis()[j]) == pytest.approx(np.average(lv_el, weights=n_pair), rel=1e-12)
        assert local_variation(tr.isis()[j] * 1000.0) == pytest.approx(brute, rel=1e-12)  # ms: same pairs
        assert local_variation(pairs=tr.isi_pairs()[j]) == pytest.approx(brute, rel=1e-12)
    # the clock-like neuron: within trials Lv = 0, across boundaries it would not be
    assert local_variation(tr.isis()[0]) == pytest.approx(0.0, abs=1e-12)
    assert local_variation(np.asarray(tr.isis()[0])) > 0.01  # a plain array is one unbroken sequence
    with pytest.raises(ValueError, match="segment boundaries"):
        local_variation(tr.isis()[0][5:])


# -- direct formulas -----------------------------------------------------------------------


def test_cv_lv_fano_equal_elephant():
    es = pytest.importorskip("elephant.statistics")
    import quantities as pq

    rng = np.random.default_rng(3)
    isi = rng.gamma(2.0, 0.05, 500)
    assert isi_cv(isi) == pytest.approx(float(es.cv(isi)), rel=1e-12)
    assert local_variation(isi) == pytest.approx(float(es.lv(isi)), rel=1e-12)
    # binned spike times: two zero ISIs in a row are equal intervals (term 0), not NaN
    assert local_variation([0.0, 0.0, 1.0]) == pytest.approx(3.0 * (0.0 + 1.0) / 2)
    trials = [np.sort(rng.uniform(0, 1, rng.poisson(20))) for _ in range(30)]
    counts = np.array([len(t) for t in trials])
    ff_el = es.fanofactor([t * pq.s for t in trials])
    assert float(fano_factor(counts)) == pytest.approx(float(ff_el), rel=1e-12)


@pytest.mark.slow  # ~20 s: first posterior fit of the module compiles
def test_estimates_of_statistics_in_trains():
    """NeuronStatistics' point estimates equal the direct formulas on segment-respecting ISIs."""
    rng = np.random.default_rng(4)
    segs = [[0, 20], [25, 45]]
    times = [np.r_[gamma_train(rng, 3, 20, 20), 25 + gamma_train(rng, 3, 20, 20)],
             np.r_[gamma_train(rng, 0.5, 8, 20), 25 + gamma_train(rng, 0.5, 8, 20)]]
    tr = SpikeTrains(times, segments=segs)
    st = NeuronStatistics(fano_window=1.0, burst_isi=0.01, refractory=0.002).fit(tr, key=0, num_samples=50)
    for j, isi in enumerate(tr.isis()):
        e = st.estimates_.isel(neuron=j)
        assert float(e.cv) == pytest.approx(np.std(isi) / np.mean(isi), rel=1e-12)
        assert float(e.lv) == pytest.approx(local_variation(pairs=tr.isi_pairs()[j]), rel=1e-12)
        assert float(e.burst_index) == pytest.approx(np.mean(isi < 0.01))
        assert float(e.refractory_violations) == pytest.approx(np.mean(isi < 0.002))
        assert float(e.rate) == pytest.approx(times[j].size / 40.0)
    wc = tr.window_counts(1.0)
    np.testing.assert_allclose(st.estimates_["fano"].values, wc.var(0) / wc.mean(0), rtol=1e-12)


def test_autocorrelogram_brute_force():
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 2, 150))
    tr = SpikeTrains([t], segments=[[0, 1], [1, 2]])
    acg = autocorrelogram(tr, bin_size=0.002, window=0.02)
    seg = (t >= 1).astype(int)
    d = t[None, :] - t[:, None]
    same = (seg[None, :] == seg[:, None]) & ~np.eye(t.size, dtype=bool)
    edges = np.arange(-10, 11) * 0.002
    want = np.histogram(d[same], edges)[0] / (t.size * 0.002)
    np.testing.assert_allclose(acg.values[0], want, atol=1e-9)
    # a Poisson train's autocorrelogram is flat at its rate: mean within 4 standard errors
    t_long = np.sort(rng.uniform(0, 200, 4000))
    acg = autocorrelogram(SpikeTrains([t_long], segments=[[0, 200]]), bin_size=0.005, window=0.1)
    n_pairs = acg.values[0] * 4000 * 0.005
    se = np.sqrt(n_pairs.sum()) / (4000 * 0.005 * acg.sizes["lag"])
    assert abs(acg.values[0].mean() - 20.0) < 4 * se + 0.2


# -- posteriors ----------------------------------------------------------------------------


@pytest.mark.slow  # ~7 s: 20000 draws (and compiles the posterior)
@pytest.mark.filterwarnings("ignore:fewer than 2 windows. the Fano factor is NaN:UserWarning")  # one segment, no fano_window
def test_rate_posterior_is_the_gamma_posterior():
    tr = SpikeTrains([np.linspace(0.01, 9.99, 37)], segments=[[0, 10]])
    st = NeuronStatistics().fit(tr, key=1, num_samples=20000)
    d = st.posterior_["rate"].values[:, 0]
    post = sps.gamma(0.5 + 37, scale=1 / 10.0)
    assert abs(d.mean() - post.mean()) < 4 * post.std() / np.sqrt(d.size)
    assert sps.kstest(d, post.cdf).pvalue > 1e-3


@pytest.mark.slow  # ~3-15 s: 20000 draws (compiles the posterior when first)
@pytest.mark.filterwarnings("ignore:fewer than 2 windows. the Fano factor is NaN:UserWarning")  # one segment, no fano_window
def test_beta_posteriors_of_isi_fractions():
    isi = np.r_[np.full(7, 0.001), np.full(93, 0.05)]
    tr = SpikeTrains([np.cumsum(np.r_[0.01, isi])], segments=[[0, 10]])
    st = NeuronStatistics(refractory=0.0015).fit(tr, key=2, num_samples=20000)
    d = st.posterior_["refractory_violations"].values[:, 0]
    post = sps.beta(0.5 + 7, 0.5 + 93)
    assert abs(d.mean() - post.mean()) < 4 * post.std() / np.sqrt(d.size)
    assert float(st.estimates_["refractory_violations"][0]) == pytest.approx(0.07)


@pytest.mark.slow  # ~60 s: coverage over 40 neurons x 3 fits
def test_posterior_intervals_calibrated_on_renewal_processes():
    """Gamma renewal trains of shape k: CV = 1/sqrt(k), Lv = 3/(2k+1); Poisson trains: Fano 1.

    Over 40 neurons the 90% intervals must cover the truth in at least 90% - 3 binomial SE."""
    rng = np.random.default_rng(6)
    n, shape = 40, 2.0
    times = [gamma_train(rng, shape, 10.0, 60.0) for _ in range(n)]
    tr = SpikeTrains(times, segments=[[0, 60]])
    st = NeuronStatistics(fano_window=1.0).fit(tr, key=3, num_samples=1000)
    floor = n * 0.9 - 3 * np.sqrt(n * 0.9 * 0.1)
    truth = {"cv": 1 / np.sqrt(shape), "lv": 3 / (2 * shape + 1)}
    for name, value in truth.items():
        lo, hi = np.quantile(st.posterior_[name].values, [0.05, 0.95], axis=0)
        assert np.sum((lo < value) & (value < hi)) >= floor, name
    pois = SpikeTrains([np.sort(rng.uniform(0, 100, rng.poisson(1000))) for _ in range(n)], segments=[[0, 100]])
    stp = NeuronStatistics(fano_window=1.0).fit(pois, key=4, num_samples=1000)
    lo, hi = np.quantile(stp.posterior_["fano"].values, [0.05, 0.95], axis=0)
    assert np.sum((lo < 1) & (1 < hi)) >= floor
    # a negative control: a clock-like train has Fano factor and CV far below 1
    clock = SpikeTrains([np.arange(0.005, 100, 0.1)], segments=[[0, 100]])
    stc = NeuronStatistics(fano_window=1.0).fit(clock, key=5, num_samples=200)
    assert float(stc.posterior_["cv"].max()) < 0.01 and float(stc.posterior_["fano"].max()) < 0.05


@pytest.mark.slow  # ~30 s
def test_same_key_same_draws_and_inference_data():
    import arviz as az

    rng = np.random.default_rng(7)
    tr = SpikeTrains([gamma_train(rng, 1, 5, 50) for _ in range(3)], segments=[[0, 25], [25, 50]],
                     neuron_ids=["a", "b", "c"])
    a = NeuronStatistics().fit(tr, key=9, num_samples=100)
    b = NeuronStatistics().fit(tr, key=9, num_samples=100)
    for k in a.posterior_:
        np.testing.assert_array_equal(a.posterior_[k].values, b.posterior_[k].values)
    s = az.summary(a.to_inference_data(), var_names=["rate"], kind="stats")
    assert list(s.index) == ["rate[a]", "rate[b]", "rate[c]"]
    feats = a.features()
    assert list(feats.columns) == ["log_rate", "cv", "lv", "log_fano", "burst_index"]
    post = a.posterior_statistics(key=0, num_samples=30)
    assert post["cv"].dims == ("draw", "neuron") and post["cv"].sizes["draw"] == 30


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.slow  # ~15 s: the posterior fits compile
@pytest.mark.filterwarnings("ignore:fewer than 2 windows. the Fano factor is NaN:UserWarning")  # one segment, no fano_window
def test_bad_input_messages():
    with pytest.raises(ValueError, match="NaN"):
        SpikeTrains([[0.1, np.nan]])
    with pytest.raises(ValueError, match="overlap"):
        SpikeTrains([[0.1]], segments=[[0, 1], [0.5, 2]])
    with pytest.raises(ValueError, match="stop <= start"):
        SpikeTrains([[0.1]], segments=[[1, 0]])
    with pytest.raises(TypeError, match="one per neuron"):
        SpikeTrains(np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="no spikes at all"):
        SpikeTrains([[], []])
    tr = SpikeTrains([[0.1, 0.2, 0.5, 0.7], [0.3]], segments=[[0, 1]])
    with pytest.raises(ValueError, match="longer than every segment"):
        tr.window_counts(5.0)
    with pytest.warns(UserWarning, match=r"neurons \[1\] have fewer than 3 ISIs"):
        st = NeuronStatistics().fit(tr, key=0, num_samples=10)
    assert np.isnan(st.estimates_["cv"].values[1])
    with pytest.raises(RuntimeError, match="not fitted"):
        NeuronStatistics().summary()
    with pytest.raises(ValueError, match="unknown statistic"):
        st.features(names=("rate", "spikiness"))
    with pytest.raises(ValueError, match="prob"):
        st.summary(prob=95)
    with pytest.raises(TypeError, match="SpikeTrains, SpikeData"):
        NeuronStatistics().fit(np.zeros((3, 2)), key=0)
    with pytest.warns(UserWarning, match="resolution"):
        data = SpikeData.from_counts(np.ones((50, 1), int), bin_size=0.01)
        NeuronStatistics(fano_window=0.1).fit(data, key=0, num_samples=10)
    with pytest.raises(ValueError, match="whole number of bins"):
        autocorrelogram(tr, bin_size=0.003, window=0.01)


@pytest.mark.slow  # ~12 s: coverage of 3 bootstrap fits
def test_trial_bootstrap_covers_overdispersed_rates_and_poisson_does_not():
    """Trial rates vary (exponentially, CV 1) around a known mean of 10 Hz. Resampling whole trials
    covers the mean at the nominal rate; the Poisson posterior (negative control) is far too
    narrow. Also: a gamma renewal process cut into trials keeps CV/Lv calibrated."""
    rng = np.random.default_rng(8)
    n, n_trial = 40, 60
    segs = np.column_stack([np.arange(n_trial), np.arange(n_trial) + 1.0])
    times = []
    for _ in range(n):
        lam = rng.gamma(1.0, 10.0, n_trial)
        times.append(np.concatenate([k + np.sort(rng.uniform(0, 1, rng.poisson(x))) for k, x in enumerate(lam)]))
    tr = SpikeTrains(times, segments=segs)
    floor = n * 0.9 - 3 * np.sqrt(n * 0.09)
    seg = NeuronStatistics().fit(tr, key=0, num_samples=1000)
    assert seg.resample_ == "segments"
    lo, hi = np.quantile(seg.posterior_["rate"].values, [0.05, 0.95], axis=0)
    assert np.sum((lo < 10) & (10 < hi)) >= floor
    pois = NeuronStatistics().fit(tr, method="intervals", key=0, num_samples=1000)
    lo, hi = np.quantile(pois.posterior_["rate"].values, [0.05, 0.95], axis=0)
    assert np.sum((lo < 10) & (10 < hi)) < 0.6 * n
    # estimates are the same either way
    np.testing.assert_allclose(seg.estimates_["cv"], pois.estimates_["cv"])
    trains = SpikeTrains([gamma_train(rng, 2.0, 10.0, 60.0) for _ in range(n)],
                         segments=np.column_stack([np.arange(0, 60, 3.0), np.arange(3, 61, 3.0)]))
    st = NeuronStatistics().fit(trains, key=1, num_samples=1000)
    for name, value in {"cv": 1 / np.sqrt(2.0), "lv": 3 / 5}.items():
        lo, hi = np.quantile(st.posterior_[name].values, [0.05, 0.95], axis=0)
        assert np.sum((lo < value) & (value < hi)) >= floor, name
