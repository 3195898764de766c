"""cross_validate, lag_curve and neuron_curve: clones, one key per fit, no leakage, the score."""

import warnings

import numpy as np
import pytest

from bayesneuro import SpikeData
from bayesneuro.decoders import GaussianPosterior, NaiveBayesDecoder, RegressionDecoder
from bayesneuro.decoders._base import Decoder, attach_index
from bayesneuro.decoders._inputs import target_array
from bayesneuro.decoders.evaluation import cross_validate, kfold, lag_curve
from bayesneuro.estimator import clone, split_key


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("BAYESNEURO_PROGRESS", "0")


def _place(T=1200, N=8, dt=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, T)
    rates = 0.2 + 3 * np.exp(-((x[:, None] - np.linspace(0, 1, N)) ** 2) / 0.01)
    return SpikeData.from_counts(rng.poisson(rates * dt * 5), bin_size=dt, covariates=x, feature_names=["x"])


class RecordingDecoder(NaiveBayesDecoder):
    """A naive-Bayes decoder that records the key and the training bins of every outer fit.

    The fits of its temperature calibration (inner folds of the training data, each with
    ``temperature=1.0``) are not recorded: they see only the outer training bins.
    """

    seen: list = []

    def fit(self, data, target, *, method="plugin", key=None, progress=None, **options):
        if self.temperature == "auto":
            type(self).seen.append((key, np.asarray(data.bin_centers).copy(), np.asarray(data.segment_ids).copy()))
        return super().fit(data, target, method=method, key=key, progress=progress, **options)


class Memorizer(Decoder):
    """Decodes a bin exactly when it saw that bin in training: any leak shows up as a hit."""

    METHODS = ("lookup",)
    _FIT_OPTIONS = {"lookup": {}}
    hits: list = []

    def __init__(self, spread: float = 1.0):
        self.spread = spread

    def fit(self, data, target, *, method="lookup", key=None, progress=None, **options):
        self._check_fit_args(method, options)
        values, _ = target_array(data, target)
        self.memory_ = {round(float(t), 9): v for t, v in zip(data.bin_centers, values)}
        self.mean_ = values.mean(axis=0)
        self.bin_size_ = float(data.bin_size)
        return self

    def decode(self, data):
        t = [round(float(c), 9) for c in data.bin_centers]
        hit = np.array([c in self.memory_ for c in t])
        type(self).hits.append(int(hit.sum()))
        mean = np.array([self.memory_.get(c, self.mean_) for c in t])
        cov = np.where(hit, 1e-6, float(self.spread) ** 2)[:, None, None] * np.ones((1, mean.shape[1], mean.shape[1]))
        return attach_index(GaussianPosterior(mean, cov, data.bin_centers), np.arange(data.n_time))


def test_cross_validate_clones_splits_keys_and_reproduces():
    data = _place()
    dec = RecordingDecoder(bins=15, range=(0, 1))
    RecordingDecoder.seen = []
    cv = cross_validate(dec, data, "x", n_folds=4, gap=3, key=7)
    assert not dec.is_fitted  # the decoder itself is never fitted: clones are
    keys = [k for k, _, _ in RecordingDecoder.seen]
    assert len(keys) == 4
    expected = split_key(7, 4)
    for k, e in zip(keys, expected):
        np.testing.assert_array_equal(np.asarray(k), np.asarray(e))
    flat = {tuple(np.asarray(k).ravel().tolist()) for k in keys}
    assert len(flat) == 4  # every fold its own key
    # the returned structure: one log score per fold (nats/bin) and the evaluate dicts
    assert cv["score"].shape == (4,) and cv["metric"] == "score"
    np.testing.assert_array_equal(cv["value"], cv["score"])
    np.testing.assert_array_equal(cv["score"], [f["mean_log_density"] for f in cv["folds"]])
    np.testing.assert_array_equal(cv["n_bins"], [300] * 4)
    # a fold's score is the score of a clone fitted on that fold's training set
    train, test = kfold(data, 4, gap=3)[1]
    ref = clone(NaiveBayesDecoder(bins=15, range=(0, 1))).fit(train, "x").score(test, "x")
    assert cv["score"][1] == pytest.approx(ref, rel=1e-12)
    # the same key reproduces everything, including the keys handed to the fits
    RecordingDecoder.seen = []
    again = cross_validate(dec, data, "x", n_folds=4, gap=3, key=7, metric="median_error")
    for (k1, _, _), k0 in zip(RecordingDecoder.seen, keys):
        np.testing.assert_array_equal(np.asarray(k1), np.asarray(k0))
    np.testing.assert_array_equal(again["score"], cv["score"])
    np.testing.assert_array_equal(again["value"], [f["median_error"] for f in cv["folds"]])
    # no key: every fit gets None (the naive-Bayes fit draws nothing)
    RecordingDecoder.seen = []
    cross_validate(dec, data, "x", n_folds=3, key=None)
    assert [k for k, _, _ in RecordingDecoder.seen] == [None, None, None]
    with pytest.raises(TypeError, match="not in fit_kwargs"):
        cross_validate(dec, data, "x", n_folds=3, fit_kwargs={"key": 0})


def test_cross_validate_does_not_leak():
    data = _place(T=600)
    gap = 4
    RecordingDecoder.seen = []
    cross_validate(RecordingDecoder(bins=10, range=(0, 1)), data, "x", n_folds=5, gap=gap)
    folds = kfold(data, 5, gap=gap)
    for (_, centres, seg), (_, test) in zip(RecordingDecoder.seen, folds):
        te = np.round(test.bin_centers, 9)
        tr = np.round(centres, 9)
        assert not set(te) & set(tr)
        assert np.min(np.abs(tr[:, None] - te[None])) > gap * data.bin_size  # the gap holds
        before, after = tr < te.min(), tr > te.max()
        if before.any() and after.any():  # training bins on both sides are separate segments
            assert not set(seg[before]) & set(seg[after])
    # a decoder that remembers its training bins never meets one of them in a test set ...
    Memorizer.hits = []
    cv = cross_validate(Memorizer(), data, "x", n_folds=5, gap=gap)
    assert Memorizer.hits == [0] * 5
    assert np.all(cv["score"] < 0)
    # ... while on its own training data it does (the check has power)
    Memorizer.hits = []
    mem = Memorizer().fit(data, "x")
    assert mem.score(data, "x") > 5 and Memorizer.hits == [data.n_time]


@pytest.mark.slow  # ~13 s: cross-validated fits
def test_cross_validate_regression_decoder_keys():
    data = _place(T=600)
    dec = RegressionDecoder(lags=[-1, 0])
    opts = {"method": "laplace", "num_samples": 50, "progress": False}
    with pytest.raises(TypeError, match="key"):
        cross_validate(dec, data, "x", n_folds=3, fit_kwargs=opts)
    a = cross_validate(dec, data, "x", n_folds=3, key=1, fit_kwargs=opts)
    b = cross_validate(dec, data, "x", n_folds=3, key=1, fit_kwargs=opts)
    c = cross_validate(dec, data, "x", n_folds=3, key=2, fit_kwargs=opts)
    np.testing.assert_array_equal(a["score"], b["score"])
    assert np.all(a["score"] != c["score"])  # other draws of the Laplace posterior
    assert a["n_bins"].tolist() == [199, 199, 199]  # lag -1: the first bin of each test block is not decoded
    # MAP draws nothing: no key needed, and the default gap is the largest lag
    m = cross_validate(dec, data, "x", n_folds=3, fit_kwargs={"progress": False})
    assert np.all(np.isfinite(m["score"]))


def test_lag_curve_gives_each_lag_its_own_key():
    data = _place(T=800)
    train, test, _ = data.split(fractions=(0.6, 0.4))
    RecordingDecoder.seen = []
    curve = lag_curve(RecordingDecoder(bins=10, range=(0, 1)), train, test, "x", [-1, 0, 1], key=3, metric="score")
    for (k, _, _), e in zip(RecordingDecoder.seen, split_key(3, 3)):
        np.testing.assert_array_equal(np.asarray(k), np.asarray(e))
    np.testing.assert_array_equal(curve["value"], curve["score"])
    assert int(curve["lags"][np.argmax(curve["score"])]) == 0


def test_score_floors_impossible_cells_with_a_warning():
    from bayesneuro.decoders import Grid, GridPosterior
    from bayesneuro.decoders.scores import LOG_PROB_FLOOR, log_score

    grid = Grid.regular(bins=4, range=(0.0, 1.0))
    p = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    with np.errstate(divide="ignore"):
        post = GridPosterior(np.log(p), grid, np.arange(2))
    with pytest.warns(RuntimeWarning, match="1 of 2 decoded bins"):
        s = log_score(post, [0.9, 0.9])
    vol = 0.25
    assert s == pytest.approx(0.5 * (LOG_PROB_FLOOR - np.log(vol) + np.log(0.25 / vol)))
    assert np.isfinite(s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log_score(post, [0.1, 0.9]) == pytest.approx(0.5 * (np.log(0.5 / vol) + np.log(0.25 / vol)))


def test_kfold_by_time_cuts_segments_longer_than_a_block():
    """Segments as the dataset loaders make them (one per tracking run, some longer than a fold's
    block) are cut at the test block; each training piece is its own segment, no bin is shared
    and no training bin lies within `gap` of the test block."""
    counts = np.ones((100, 2))
    trial_ids = np.repeat([0, 1], [10, 90])  # segment 1 spans folds 1-3
    data = SpikeData.from_counts(counts, bin_size=0.1, trial_ids=trial_ids)
    folds = kfold(data, 4, gap=2)
    for k, (train, test) in enumerate(folds):
        tr, te = np.asarray(train.bin_centers), np.asarray(test.bin_centers)
        assert np.intersect1d(tr, te).size == 0 and tr.size + te.size + np.isin(
            data.bin_centers, np.r_[tr, te], invert=True).sum() == 100
        assert np.min(np.abs(tr[:, None] - te[None, :])) > 2 * 0.1 + 1e-9
        # training segments are contiguous runs of bins
        for s in np.unique(train.segment_ids):
            t = tr[train.segment_ids == s]
            np.testing.assert_allclose(np.diff(t), 0.1)
    assert folds[1][0].n_trial == 3  # segment 0, and segment 1 before and after the test block
