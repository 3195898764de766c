"""Tests for bayesneuro.splits: time and trial splits, the locked validation box."""

import doctest
import pickle
import warnings

import jax
import numpy as np
import pytest

import bayesneuro.data as bdata
import bayesneuro.splits as bsplits
from bayesneuro.data import SpikeData
from bayesneuro.splits import LockedBox, LockedBoxError, Splits

pytestmark = pytest.mark.filterwarnings("error")


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------


def _open(box):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return box.open()


def _bin_index(data, part):
    return np.searchsorted(data.bin_centers, part.bin_centers)


def test_contiguous_time_split_with_gap():
    data = SpikeData.from_counts(np.ones((100, 2)), bin_size=0.1)
    train, test, box = data.split(fractions=(0.6, 0.2, 0.2), gap=3)
    val = _open(box)
    idx = [_bin_index(data, p) for p in (train, test, val)]
    assert idx[0].tolist() == list(range(60))
    assert idx[1].tolist() == list(range(63, 80))
    assert idx[2].tolist() == list(range(83, 100))
    assert train.trial_ids is None and val.trial_ids is None
    two = data.split(fractions=(0.8, 0.2))
    assert isinstance(two, Splits) and two.validation is None
    assert (two.train.n_time, two.test.n_time) == (80, 20)


@pytest.mark.parametrize("key", [None, 0, jax.random.key(3)])
def test_block_split_is_disjoint_and_respects_gap(key):
    n, gap = 1000, 4
    data = SpikeData.from_counts(np.ones((n, 2)), bin_size=0.01)
    train, test, box = data.split(n_blocks=10, gap=gap, key=key)
    parts = [train, test, _open(box)]
    idx = [_bin_index(data, p) for p in parts]
    allidx = np.concatenate(idx)
    assert np.unique(allidx).size == allidx.size  # disjoint
    which = np.full(n, -1)
    for s, i in enumerate(idx):
        which[i] = s
    # every dropped bin sits right after a change of set, at most `gap` of them
    dropped = np.flatnonzero(which == -1)
    kept_sets = which[which >= 0]
    assert dropped.size == gap * int(np.sum(kept_sets[1:] != kept_sets[:-1]))
    assert sum(len(i) for i in idx) + dropped.size == n
    # within `gap` bins before any kept bin there is no kept bin of another set
    for j in np.flatnonzero(which >= 0):
        prev = which[max(j - gap, 0): j]
        assert np.all((prev == which[j]) | (prev == -1))
    # several non-adjacent blocks become segments (trials) so filters stop at the gaps
    for p in parts:
        runs = np.flatnonzero(np.diff(_bin_index(data, p)) > 1).size + 1
        assert p.n_trial == runs
        if runs > 1:
            seg_break = np.flatnonzero(np.diff(p.segment_ids))
            np.testing.assert_array_equal(seg_break, np.flatnonzero(np.diff(_bin_index(data, p)) > 1))


def test_interleaved_blocks_are_deterministic_and_spread():
    data = SpikeData.from_counts(np.ones((100, 1)), bin_size=0.1)
    sets = data.split(n_blocks=10)
    first_bins = [sorted(set(_bin_index(data, p) // 10)) for p in (sets.train, sets.test, _open(sets.validation))]
    assert first_bins == [[0, 1, 4, 5, 6, 9], [2, 7], [3, 8]]


def test_same_key_same_split_different_key_different_split():
    data = SpikeData.from_counts(np.ones((400, 1)), bin_size=0.1)

    def blocks(key):
        sp = data.split(n_blocks=20, key=key)
        return [tuple(_bin_index(data, p)) for p in (sp.train, sp.test, _open(sp.validation))]

    assert blocks(jax.random.key(1)) == blocks(jax.random.key(1)) == blocks(1)
    assert blocks(jax.random.key(1)) != blocks(jax.random.key(2))


def test_trial_split():
    trials = [np.full((k + 2, 2), k) for k in range(10)]
    data = SpikeData.from_trials(trials, bin_size=0.1, trial_ids=[f"t{k}" for k in range(10)])
    train, test, box = data.split(by="trials", fractions=(0.6, 0.2, 0.2))
    val = _open(box)
    assert train.trials.tolist() == [f"t{k}" for k in range(6)]
    assert test.trials.tolist() == ["t6", "t7"] and val.trials.tolist() == ["t8", "t9"]
    r1 = data.split(by="trials", key=jax.random.key(0))
    r2 = data.split(by="trials", key=jax.random.key(0))
    got = [set(r1.train.trials), set(r1.test.trials), set(_open(r1.validation).trials)]
    assert got == [set(r2.train.trials), set(r2.test.trials), set(_open(r2.validation).trials)]
    assert set().union(*got) == set(data.trials) and sum(map(len, got)) == 10
    for tr in r1.train.iter_trials():  # whole trials, untouched
        np.testing.assert_array_equal(tr.counts, data.trial(tr.trials[0]).counts)
    r3 = data.split(by="trials", key=jax.random.key(5))
    assert set(r3.train.trials) != got[0] or set(r3.test.trials) != got[1]


def test_locked_box():
    data = SpikeData.from_counts(np.ones((50, 3)), bin_size=0.1, trial_ids=np.repeat([0, 1], 25))
    box = LockedBox(data)
    assert repr(box) == "LockedBox(validation set, locked: 50 bins, 2 trials, 3 neurons; opened 0 times)"
    assert (box.n_time, box.n_neuron, box.n_trial, box.n_opened) == (50, 3, 2, 0)
    for name in ("counts", "covariates", "bin_centers", "to_padded"):
        with pytest.raises(LockedBoxError, match=rf"locked: `\.{name}` is not available.*\.open\(\)"):
            getattr(box, name)
    with pytest.raises(LockedBoxError, match="locked"):
        np.asarray(box)
    with pytest.raises(LockedBoxError, match="locked"):
        len(box)
    assert not hasattr(box, "counts") and bool(box)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        box.nonsense
    with pytest.warns(UserWarning, match="has now been looked at"):
        opened = box.open()
    assert opened is data and box.n_opened == 1
    with pytest.warns(UserWarning, match="opened 2 times"):
        box.open()
    assert box.n_opened == 2 and "opened 2 times" in repr(box)
    with pytest.raises(AttributeError):
        box._n_opened = 0


def test_splits_of_trialled_data_by_time_keep_trial_labels():
    data = SpikeData.from_counts(np.ones((120, 1)), bin_size=0.1, trial_ids=np.repeat(np.arange(12), 10))
    sp = data.split(n_blocks=6, fractions=(0.5, 0.5))
    for p in sp[:2]:
        assert p.n_trial == 6
    long = SpikeData.from_counts(np.ones((120, 1)), bin_size=0.1, trial_ids=np.repeat([0, 1], 60))
    with pytest.raises(ValueError, match="cut into non-adjacent pieces"):
        long.split(n_blocks=12, fractions=(0.5, 0.5))


def test_pickled_locked_box_keeps_its_open_count():
    data = SpikeData.from_counts(np.arange(6).reshape(3, 2), bin_size=0.1, t_start=0.1,
                                 covariates=np.ones(3), trial_ids=["a", "a", "b"])
    box = LockedBox(data)
    _open(box)
    again = pickle.loads(pickle.dumps(box))
    assert again.n_opened == 1 and again.n_time == 3


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

_DATA = SpikeData.from_counts(np.ones((10, 2)), bin_size=0.1)

BAD_SPLITS = [
    (dict(fractions=(0.5, 0.6)), r"sum to 1"),
    (dict(fractions=(1.0,)), r"2 \(train, test\) or 3"),
    (dict(fractions=(0.5, 0.5, 0.0)), r"positive"),
    (dict(fractions=(0.9, 0.05, 0.05)), r"too short.*validation set would get zero bins"),
    (dict(n_blocks=2), r"n_blocks must be at least 3"),
    (dict(n_blocks=20), r"more than the 10 time bins"),
    (dict(gap=4), r"gap=4 removes all"),
    (dict(gap=-1), r"gap must be at least 0"),
    (dict(by="trials"), r"needs trial structure"),
    (dict(by="neurons"), r"by must be 'time' or 'trials'"),
    (dict(n_blocks=5, key="seed"), r"key must be a JAX PRNG key"),
]


@pytest.mark.parametrize("kwargs, message", BAD_SPLITS)
def test_bad_split_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _DATA.split(**kwargs)


def test_too_few_trials_for_split():
    data = SpikeData.from_trials([np.ones((2, 1))] * 2, bin_size=0.1)
    with pytest.raises(ValueError, match=r"only 2 trials.*validation set would get zero trials"):
        data.split(by="trials")


# ---------------------------------------------------------------------------------------------
# imports and docs
# ---------------------------------------------------------------------------------------------


def test_data_module_re_exports_the_split_types():
    assert (bdata.Splits, bdata.LockedBox, bdata.LockedBoxError) == (Splits, LockedBox, LockedBoxError)


def test_docstring_examples_run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = doctest.testmod(bsplits, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
