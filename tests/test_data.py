"""Tests for bayesneuro.data: binning against numpy and pynapple, trials, container behaviour."""

import copy
import doctest
import pickle
import warnings

import numpy as np
import pytest

import bayesneuro.data as bdata
from bayesneuro.data import SpikeData

nap = pytest.importorskip("pynapple")

pytestmark = pytest.mark.filterwarnings("error")


def _random_spikes(seed=0, n_unit=5, t_stop=10.0, rate=20.0):
    """Poisson spikes of several units, sorted globally, at continuous (edge-free) times."""
    rng = np.random.default_rng(seed)
    times, units = [], []
    for u in range(n_unit):
        n = rng.poisson(rate * t_stop * (u + 1) / n_unit)
        times.append(rng.uniform(0.0, t_stop, n))
        units.append(np.full(n, u))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times, kind="stable")
    return times[order], units[order]


# ---------------------------------------------------------------------------------------------
# binning spike times
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bin_size", [0.01, 0.05, 0.3])
def test_binning_matches_numpy_histogram_per_unit(bin_size):
    times, units = _random_spikes(1)
    data = SpikeData.from_spike_times(times, units, bin_size=bin_size, t_start=0.0, t_stop=10.0)
    n_bins = int(np.floor(10.0 / bin_size + 1e-9))
    edges = 0.0 + np.arange(n_bins + 1) * bin_size
    expected = np.stack([np.histogram(times[units == u], edges)[0] for u in range(5)], axis=1)
    # np.histogram closes its last edge; the dropped partial bin only matters for bin_size=0.3
    if edges[-1] < 10.0:
        last = (times >= edges[-1]) & (times < edges[-1] + 1e-12)
        assert not last.any()
    np.testing.assert_array_equal(data.counts, expected)
    assert data.counts.dtype == np.int64
    np.testing.assert_allclose(data.bin_centers, (np.arange(n_bins) + 0.5) * bin_size, rtol=0, atol=1e-12)
    assert data.n_time == len(data) == n_bins and data.trial_ids is None


def test_binning_matches_pynapple_count():
    times, units = _random_spikes(2)
    group = nap.TsGroup({u: nap.Ts(times[units == u]) for u in range(5)},
                        time_support=nap.IntervalSet(0.0, 10.0))
    ref = group.count(0.02, nap.IntervalSet(0.0, 10.0))
    data = SpikeData.from_spike_times(times, units, bin_size=0.02, t_start=0.0, t_stop=10.0)
    np.testing.assert_array_equal(data.counts, np.asarray(ref.values))
    np.testing.assert_allclose(data.bin_centers, np.asarray(ref.t), atol=1e-9)


def test_default_range_is_whole_bins_and_keeps_every_spike():
    times = np.array([0.123, 0.5, 0.9, 1.0])  # last spike exactly on a bin edge
    data = SpikeData.from_spike_times(times, np.zeros(4, int), bin_size=0.1)
    assert data.t_start == pytest.approx(0.1)
    assert data.counts.sum() == 4
    assert data.bin_centers[-1] == pytest.approx(1.05)
    assert data.n_time == 10


def test_last_partial_bin_is_dropped():
    times = np.array([0.05, 0.15, 0.26])
    data = SpikeData.from_spike_times(times, np.zeros(3, int), bin_size=0.1, t_start=0.0, t_stop=0.28)
    assert data.n_time == 2 and data.counts.ravel().tolist() == [1, 1]
    # 0.3 / 0.1 is 2.9999999999999996 in floating point: still three whole bins
    data = SpikeData.from_spike_times(times, np.zeros(3, int), bin_size=0.1, t_start=0.0, t_stop=0.3)
    assert data.n_time == 3


def test_neuron_ids_fix_order_and_include_silent_units():
    times, units = np.array([0.1, 0.2, 0.3]), np.array(["b", "a", "b"])
    with pytest.warns(UserWarning, match=r"neuron 'z' has no spikes"):
        data = SpikeData.from_spike_times(times, units, bin_size=0.5, t_start=0, t_stop=1,
                                          neuron_ids=["b", "z", "a"])
    assert data.neuron_ids.tolist() == ["b", "z", "a"]
    assert data.counts.sum(axis=0).tolist() == [2, 0, 1]
    default = SpikeData.from_spike_times(times, units, bin_size=0.5, t_start=0, t_stop=1)
    assert default.neuron_ids.tolist() == ["a", "b"]


def test_several_silent_neurons_warn_once():
    with pytest.warns(UserWarning, match=r"2 neurons have no spikes: 1, 2"):
        SpikeData.from_counts(np.array([[1, 0, 0]]), bin_size=0.1)


def test_interleaved_units_are_accepted_unsorted_within_unit_is_not():
    times, units = _random_spikes(3)
    order = np.argsort(units, kind="stable")  # trains concatenated unit by unit
    a = SpikeData.from_spike_times(times, units, bin_size=0.1, t_start=0, t_stop=10)
    b = SpikeData.from_spike_times(times[order], units[order], bin_size=0.1, t_start=0, t_stop=10)
    np.testing.assert_array_equal(a.counts, b.counts)
    with pytest.raises(ValueError, match=r"spike times of unit 1 are not sorted.*np.argsort"):
        SpikeData.from_spike_times([0.1, 0.5, 0.3], [1, 1, 1], bin_size=0.1)


# ---------------------------------------------------------------------------------------------
# trials
# ---------------------------------------------------------------------------------------------


def test_trial_binning_matches_manual_per_trial_histogram():
    times, units = _random_spikes(4)
    intervals = np.array([[0.5, 1.7], [2.0, 2.9], [2.9, 4.0], [6.31, 9.0]])
    bin_size = 0.1
    data = SpikeData.from_spike_times(times, units, bin_size=bin_size, trial_intervals=intervals)
    blocks, centres = [], []
    for start, stop in intervals:
        n = int(np.floor((stop - start) / bin_size + 1e-9))
        edges = start + np.arange(n + 1) * bin_size
        blocks.append(np.stack([np.histogram(times[units == u], edges)[0] for u in range(5)], 1))
        centres.append(start + (np.arange(n) + 0.5) * bin_size)
    np.testing.assert_array_equal(data.counts, np.concatenate(blocks))
    np.testing.assert_allclose(data.bin_centers, np.concatenate(centres), atol=1e-12)
    assert data.trials.tolist() == [0, 1, 2, 3] and data.n_trial == 4
    assert [len(tr) for tr in data.iter_trials()] == [12, 9, 11, 26]
    # spikes outside every trial are dropped
    inside = np.zeros(times.size, bool)
    for start, stop in intervals:
        inside |= (times >= start) & (times < stop)
    assert data.counts.sum() <= inside.sum()
    assert data.counts.sum() < times.size
    assert data.coords["trial"].tolist() == [0, 1, 2, 3]


def test_to_padded_matches_manual_stacking():
    rng = np.random.default_rng(5)
    trials = [rng.poisson(1.0, (n, 3)) for n in (4, 7, 2)]
    data = SpikeData.from_trials(trials, bin_size=0.05, trial_ids=["x", "y", "z"])
    counts, mask = data.to_padded()
    assert counts.shape == (3, 7, 3) and mask.shape == (3, 7)
    for k, tr in enumerate(trials):
        np.testing.assert_array_equal(counts[k, : len(tr)], tr)
        assert not counts[k, len(tr):].any()
        assert mask[k].sum() == len(tr) and mask[k, : len(tr)].all()
    np.testing.assert_array_equal(data.trial("y").counts, trials[1])
    assert data.trial("y").trial_ids.tolist() == ["y"] * 7
    # trials laid end to end on one clock
    np.testing.assert_allclose(data.bin_centers, (np.arange(13) + 0.5) * 0.05)
    # untrialled data pad to one trial
    c1, m1 = SpikeData.from_counts(trials[1], bin_size=0.05).to_padded()
    assert c1.shape == (1, 7, 3) and m1.all()


def test_from_trials_covariates_and_from_counts_trial_ids():
    trials = [np.ones((3, 2)), np.ones((2, 2))]
    cov = [np.arange(3.0), np.arange(2.0)]
    data = SpikeData.from_trials(trials, bin_size=0.1, covariates=cov, feature_names=["speed"])
    assert data.covariates[:, 0].tolist() == [0, 1, 2, 0, 1]
    same = SpikeData.from_counts(np.ones((5, 2)), bin_size=0.1, trial_ids=[0, 0, 0, 1, 1])
    np.testing.assert_array_equal(same.segment_ids, data.segment_ids)
    np.testing.assert_array_equal(same.bin_centers, data.bin_centers)


# ---------------------------------------------------------------------------------------------
# container behaviour
# ---------------------------------------------------------------------------------------------


def test_properties_coords_repr_and_immutability():
    X = np.array([[0, 1], [2, 0], [1, 1], [0, 3]])
    data = SpikeData.from_counts(X, bin_size=0.5, t_start=10.0, neuron_ids=[4, 9],
                                 covariates=np.ones((4, 2)), feature_names=["a", "b"])
    assert (data.n_time, data.n_neuron, data.n_feature, data.n_trial) == (4, 2, 2, 1)
    assert data.duration == 2.0 and data.t_start == 10.0
    np.testing.assert_allclose(data.firing_rates(), [1.5, 2.5])
    assert set(data.coords) == {"time", "neuron", "feature"}
    assert data.coords["feature"].tolist() == ["a", "b"]
    assert repr(data) == "SpikeData(n_time=4, n_neuron=2, bin_size=0.5 s, time [10, 12) s, features=[a, b])"
    with pytest.raises(ValueError, match="read-only"):
        data.counts[0, 0] = 5
    with pytest.raises(AttributeError, match="immutable"):
        data.bin_size = 1.0
    X[0, 0] = 99  # the container copied its input
    assert data.counts[0, 0] == 0
    assert data.trial(0) is data
    assert list(data.iter_trials()) == [data]


def test_pickle_and_copy_keep_data_and_read_only_arrays():
    data = SpikeData.from_counts(np.arange(6).reshape(3, 2), bin_size=0.1, t_start=0.1,
                                 covariates=np.ones(3), trial_ids=["a", "a", "b"])
    for other in (pickle.loads(pickle.dumps(data)), copy.deepcopy(data)):
        np.testing.assert_array_equal(other.counts, data.counts)
        assert other.trials.tolist() == ["a", "b"] and other.t_start == 0.1
        assert not other.counts.flags.writeable


def test_select_neurons_time_slice_with_covariates():
    data = SpikeData.from_counts(np.arange(30).reshape(10, 3), bin_size=0.1, neuron_ids=["a", "b", "c"],
                                 trial_ids=np.repeat([0, 1], 5))
    sub = data.select_neurons(["c", "a"])
    np.testing.assert_array_equal(sub.counts, data.counts[:, [2, 0]])
    win = data.time_slice(0.3, 0.7)
    np.testing.assert_array_equal(win.counts, data.counts[3:7])
    assert win.trial_ids.tolist() == [0, 0, 1, 1] and win.t_start == pytest.approx(0.3)
    cov = data.with_covariates(np.linspace(0, 1, 10))
    assert cov.feature_names == ("x0",) and cov.covariates.shape == (10, 1)
    assert cov.time_slice(0.0, 0.2).covariates[:, 0].tolist() == pytest.approx([0, 1 / 9])
    with pytest.raises(ValueError, match="no neuron 'q'"):
        data.select_neurons(["q"])
    with pytest.raises(ValueError, match="no bins have centres in"):
        data.time_slice(5.0, 6.0)
    with pytest.raises(ValueError, match="no trial 7"):
        data.trial(7)


# ---------------------------------------------------------------------------------------------
# pynapple
# ---------------------------------------------------------------------------------------------


def test_from_pynapple_tsgroup_matches_count_and_from_spike_times():
    times, units = _random_spikes(6)
    ids = np.array([10, 11, 12, 13, 14])
    group = nap.TsGroup({int(ids[u]): nap.Ts(times[units == u]) for u in range(5)},
                        time_support=nap.IntervalSet(0.0, 10.0))
    data = SpikeData.from_pynapple(group, bin_size=0.05)
    ref = group.count(0.05)
    np.testing.assert_array_equal(data.counts, np.asarray(ref.values))
    assert data.neuron_ids.tolist() == ids.tolist() and data.trial_ids is None
    direct = SpikeData.from_spike_times(times, ids[units], bin_size=0.05, t_start=0.0, t_stop=10.0)
    np.testing.assert_array_equal(direct.counts, data.counts)

    ep = nap.IntervalSet(start=[1.0, 4.0, 7.5], end=[2.0, 6.0, 8.0])
    trials = SpikeData.from_pynapple(group, bin_size=0.05, ep=ep)
    np.testing.assert_array_equal(trials.counts, np.asarray(group.count(0.05, ep).values))
    assert trials.n_trial == 3 and [len(t) for t in trials.iter_trials()] == [20, 40, 10]


def test_from_pynapple_covariates_bin_average_matches_pynapple():
    times, units = _random_spikes(7)
    group = nap.TsGroup({u: nap.Ts(times[units == u]) for u in range(5)},
                        time_support=nap.IntervalSet(0.0, 10.0))
    t = 0.0005 + np.arange(10000) * 0.001
    pos = nap.TsdFrame(t=t, d=np.column_stack([np.sin(t), t**2]), columns=["x", "y"])
    data = SpikeData.from_pynapple(group, bin_size=0.05, covariates=pos)
    ref = pos.bin_average(0.05, nap.IntervalSet(0.0, 10.0))
    assert data.feature_names == ("x", "y")
    np.testing.assert_allclose(data.covariates, np.asarray(ref.values), rtol=1e-10, atol=1e-12)
    # covariates sampled more coarsely than the bins: linear interpolation at empty bins
    coarse = nap.Tsd(t=np.arange(0.0, 10.01, 0.2), d=np.arange(0.0, 10.01, 0.2) * 3.0)
    fine = SpikeData.from_pynapple(group, bin_size=0.05, covariates=coarse)
    np.testing.assert_allclose(fine.covariates[:, 0], 3.0 * fine.bin_centers, atol=1e-9)


def test_pynapple_round_trip():
    times, units = _random_spikes(8)
    data = SpikeData.from_spike_times(times, units, bin_size=0.02, t_start=0.0, t_stop=10.0)
    frame = data.to_pynapple()
    assert list(frame.columns) == [0, 1, 2, 3, 4]
    back = SpikeData.from_pynapple(frame, bin_size=0.02)
    np.testing.assert_array_equal(back.counts, data.counts)
    np.testing.assert_allclose(back.bin_centers, data.bin_centers, atol=1e-9)
    # trials with gaps survive the round trip as trials
    tr = SpikeData.from_spike_times(times, units, bin_size=0.02, trial_intervals=[[0, 1], [2, 3.5]])
    back = SpikeData.from_pynapple(tr.to_pynapple(), bin_size=0.02)
    np.testing.assert_array_equal(back.counts, tr.counts)
    np.testing.assert_array_equal(back.trial_ids, tr.trial_ids)
    with pytest.raises(ValueError, match="spaced by"):
        SpikeData.from_pynapple(frame, bin_size=0.05)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

_GOOD = np.ones((4, 2))

BAD_INPUT = [
    (lambda: SpikeData.from_counts(-_GOOD, bin_size=0.1), r"non-negative.*-1\.0"),
    (lambda: SpikeData.from_counts(_GOOD * 0.5, bin_size=0.1), r"whole numbers.*0\.5"),
    (lambda: SpikeData.from_counts(np.where(np.eye(4, 2) > 0, np.nan, 1.0), bin_size=0.1), r"counts contain 2 NaN or infinite"),
    (lambda: SpikeData.from_counts(np.full((4, 2), np.inf), bin_size=0.1), r"NaN or infinite"),
    (lambda: SpikeData.from_counts(np.ones(4), bin_size=0.1), r"2-D with dims \(time, neuron\)"),
    (lambda: SpikeData.from_counts(np.ones((0, 2)), bin_size=0.1), r"zero time bins"),
    (lambda: SpikeData.from_counts(np.ones((4, 0)), bin_size=0.1), r"zero neurons"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.0), r"bin_size must be a positive"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=-1), r"bin_size must be a positive"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, neuron_ids=[3, 3]), r"neuron_ids must be unique.*3"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, neuron_ids=[1, 2, 3]), r"one entry per neuron \(2\)"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, covariates=np.ones((5, 1))), r"covariates have 5 time bins but counts have 4"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, covariates=[1.0, np.nan, 1, 1]), r"covariates contain 1 NaN"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, covariates=np.ones((4, 2)), feature_names=["a"]), r"feature_names has 1 names but covariates have 2"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, covariates=np.ones((4, 2)), feature_names=["a", "a"]), r"feature_names must be unique"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, feature_names=["a"]), r"feature_names were given but covariates is None"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, trial_ids=[0, 0, 1]), r"one label per time bin \(4\)"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1, trial_ids=[0, 1, 0, 1]), r"contiguous runs.*trial 0"),
    (lambda: SpikeData.from_spike_times([0.1, 0.2], [0], bin_size=0.1), r"same length, got 2 and 1"),
    (lambda: SpikeData.from_spike_times([0.1, np.nan], [0, 0], bin_size=0.1), r"spike times contain 1 NaN"),
    (lambda: SpikeData.from_spike_times([0.3, 0.1], [0, 0], bin_size=0.1), r"not sorted"),
    (lambda: SpikeData.from_spike_times([0.1, 1.2], [0, 0], bin_size=0.1, t_start=0, t_stop=1), r"at or after t_stop=1"),
    (lambda: SpikeData.from_spike_times([0.1, 0.2], [0, 0], bin_size=0.1, t_start=0.15, t_stop=1), r"before t_start=0.15"),
    (lambda: SpikeData.from_spike_times([0.01], [0], bin_size=0.1, t_start=0, t_stop=0.05), r"shorter than one bin.*zero bins"),
    (lambda: SpikeData.from_spike_times([0.1], [7], bin_size=0.1, neuron_ids=[1, 2]), r"not listed in neuron_ids: \[7\]"),
    (lambda: SpikeData.from_spike_times([], [], bin_size=0.1), r"no spikes"),
    (lambda: SpikeData.from_spike_times([0.1], [0], bin_size=0.1, trial_intervals=[[0, 1], [0.5, 2]]), r"non-overlapping.*trial 1"),
    (lambda: SpikeData.from_spike_times([0.1], [0], bin_size=0.1, trial_intervals=[[0, 0.05]]), r"trial interval 0 .* shorter than one bin"),
    (lambda: SpikeData.from_spike_times([0.1], [0], bin_size=0.1, t_start=0, trial_intervals=[[0, 1]]), r"cannot be combined with trial_intervals"),
    (lambda: SpikeData.from_trials([], bin_size=0.1), r"at least one trial"),
    (lambda: SpikeData.from_trials([np.ones((2, 2)), np.ones((2, 3))], bin_size=0.1), r"same number of neurons"),
    (lambda: SpikeData.from_trials([np.ones((2, 2))], bin_size=0.1, covariates=[np.ones(3)]), r"covariates of trial 0 have 3 time bins"),
    (lambda: SpikeData.from_counts(_GOOD, bin_size=0.1).with_covariates(np.ones(3)), r"covariates have 3 time bins"),
]


@pytest.mark.parametrize("make, message", BAD_INPUT)
def test_bad_input_raises_value_error_naming_the_problem(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_pynapple_bad_input():
    with pytest.raises(ValueError, match="TsGroup .* or Tsd/TsdFrame"):
        SpikeData.from_pynapple(np.ones((3, 2)), bin_size=0.1)
    group = nap.TsGroup({0: nap.Ts(np.array([0.1, 0.5]))}, time_support=nap.IntervalSet(0, 1))
    cov = nap.Tsd(t=np.arange(0, 1.0, 0.01), d=np.where(np.arange(100) == 50, np.nan, 1.0))
    with pytest.raises(ValueError, match="covariates are NaN or infinite in 1 bins"):
        SpikeData.from_pynapple(group, bin_size=0.1, covariates=cov)
    short = nap.Tsd(t=np.arange(0.6, 1.0, 0.01), d=np.ones(40))
    with pytest.raises(ValueError, match="do not cover the bin"):
        SpikeData.from_pynapple(group, bin_size=0.1, covariates=short)


# ---------------------------------------------------------------------------------------------
# real data and docs
# ---------------------------------------------------------------------------------------------


def test_real_motor_cortex_trials_preserve_spike_counts(shared_data):
    d = np.load(shared_data / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz")
    ms, neuron, trial = d["spiketimes"], d["neuron_ids"], d["trial_ids"]
    # whole-ms times moved to mid-millisecond so that no spike sits on a 20 ms bin edge
    times = trial * 2.0 + (ms + 0.5) / 1000.0
    order = np.argsort(times, kind="stable")
    n_trial = int(trial.max()) + 1
    intervals = np.column_stack([np.arange(n_trial) * 2.0, np.arange(n_trial) * 2.0 + 2.0])
    data = SpikeData.from_spike_times(times[order], neuron[order], bin_size=0.02,
                                      trial_intervals=intervals)
    assert data.counts.sum() == ms.size == 648889
    counts, mask = data.to_padded()
    assert counts.shape == (1266, 100, 30) and mask.all()
    # integer-arithmetic reference: (trial, 20 ms bin, neuron)
    ref = np.zeros((n_trial, 100, 30), dtype=np.int64)
    np.add.at(ref, (trial, (ms // 20).astype(int), neuron), 1)
    np.testing.assert_array_equal(counts, ref)
    assert counts.max() == 9
    np.testing.assert_array_equal(data.counts.sum(axis=0), np.bincount(neuron, minlength=30))


def test_docstring_examples_run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = doctest.testmod(bdata, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
