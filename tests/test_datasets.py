"""Loaders of bayesneuro.datasets against brute-force binning of the raw files."""

import numpy as np
import pytest
import scipy.io

from bayesneuro.datasets import (
    TrackingGapWarning,
    load_head_direction,
    load_linear_track,
    load_place_cells_2d,
)

PC2D = "place_cells_2d_barbieri_animal1"
TRACK = "place_cells_linear_track_nelpy"
HD = "head_direction_adn_peyrache"
REC = np.dtype([("time", "<u4"), ("x", "<u2"), ("y", "<u2"), ("x2", "<u2"), ("y2", "<u2")])


def _edges(data, t0):
    """Index ``j`` of each kept bin on the grid ``t0 + j * bin_size``, and the bin's edges."""
    b = data.bin_size
    j = np.round((data.bin_centers - t0) / b - 0.5).astype(int)
    return j, t0 + j * b, t0 + (j + 1) * b


def _histogram_at(spikes, t0, bin_size, j):
    """Brute force: np.histogram of each unit on the whole grid from t0, rows `j` kept."""
    edges = t0 + np.arange(j.max() + 2) * bin_size
    return np.column_stack([np.histogram(t, bins=edges)[0][j] for t in spikes])


def _check_segments(data):
    """Bins of one segment are adjacent; a new segment starts after a jump."""
    d = np.diff(data.bin_centers)
    same = data.segment_ids[1:] == data.segment_ids[:-1]
    np.testing.assert_allclose(d[same], data.bin_size, rtol=1e-9)
    assert np.all(d[~same] > data.bin_size * (1 + 1e-9))


# -- 2-D place cells ------------------------------------------------------------------------------


def test_place_cells_2d_counts_and_position(shared_data):
    data = load_place_cells_2d(shared_data / PC2D, bin_size=1.0)
    m = scipy.io.loadmat(shared_data / PC2D / "PlaceCellDataAnimal1.mat")
    t = m["time"].ravel()
    spikes = [c["spikeTimes"].ravel()[0].ravel() for c in m["neuron"].ravel()]
    n_bin = int((t[-1] - t[0]) // 1.0)
    assert data.shape == (n_bin, 49)  # 30-Hz tracking without gaps: every bin kept
    assert data.feature_names == ("x", "y") and data.n_trial == 1
    edges = t[0] + np.arange(n_bin + 1) * 1.0
    brute = np.column_stack([np.histogram(s, bins=edges)[0] for s in spikes])
    np.testing.assert_array_equal(data.counts, brute)
    # cm from the arena centre: inside the 35-cm radius, interpolated at the bin centres
    np.testing.assert_allclose(data.covariates[:, 0], 35 * np.interp(data.bin_centers, t, m["x"].ravel()))
    r = np.hypot(*data.covariates.T)
    assert r.max() <= 35 and r.max() > 30
    # every spike inside the binned span is counted once
    assert data.counts.sum() == sum(int(((s >= edges[0]) & (s < edges[-1])).sum()) for s in spikes)


def test_place_cells_2d_min_speed_splits_segments(shared_data):
    data = load_place_cells_2d(shared_data / PC2D, bin_size=0.5)
    moving = load_place_cells_2d(shared_data / PC2D, bin_size=0.5, min_speed=5.0)
    assert 0 < moving.n_time < data.n_time and moving.n_trial > 1
    _check_segments(moving)
    lo = np.column_stack([np.interp(moving.bin_centers + s * 0.25, data.bin_centers, data.covariates[:, 0])
                          for s in (-1, 1)])
    assert np.isfinite(lo).all()


# -- linear track ---------------------------------------------------------------------------------


def _raw_track(folder):
    raw = (folder / "trajectory.videoPositionTracking").read_bytes()
    body = raw[raw.index(b"<End settings>\n") + 15 :]
    rec = np.frombuffer(body, dtype=REC)
    return rec["time"] / 30000.0, rec["x"].astype(float), rec["y"].astype(float)


def _raw_units(folder):
    out = []

    def walk(a):
        if isinstance(a, np.ndarray) and a.dtype == object:
            for item in a.ravel():
                walk(item)
        elif isinstance(a, np.ndarray) and a.dtype.names and a.size:
            t = a["time"].ravel()[0].ravel()
            if t.size:
                out.append(t)

    walk(scipy.io.loadmat(folder / "spikes.mat")["spikes"])
    return out


def test_linear_track_counts_gaps_and_position(shared_data):
    folder = shared_data / TRACK
    data = load_linear_track(folder, bin_size=0.5)
    spikes = _raw_units(folder)
    assert data.n_neuron == 31 == len(spikes)
    assert data.feature_names == ("position",)
    t, x, y = _raw_track(folder)
    first = np.flatnonzero((x != x[0]) | (y != y[0]))[0]  # the tracker sits still at first
    j, left, right = _edges(data, t[first])
    np.testing.assert_array_equal(data.counts, _histogram_at(spikes, t[first], 0.5, j))
    _check_segments(data)
    # the tracked running epoch only: not the frozen first 25 s nor the untracked rest after 5382 s
    assert left[0] > 4422 and right[-1] < 5382.3
    assert 133 <= data.covariates.min() and data.covariates.max() <= 554
    # every kept bin lies in tracking whose samples are at most max_gap apart
    for a, b in zip(left[::50], right[::50]):
        inside = t[(t >= a - 0.1) & (t <= b + 0.1)]
        assert inside.size and np.diff(inside).max() <= 0.1
    # position: the tracker's x at the bin centre (60-Hz samples: within a frame's move)
    near = np.interp(data.bin_centers, t, x)
    assert np.median(np.abs(near - data.covariates[:, 0])) < 1.0


def _write_track(folder, t, x, spikes_by_tetrode):
    """A MatClust-style spikes.mat and a .videoPositionTracking file."""
    folder.mkdir()
    cell = np.empty((1, len(spikes_by_tetrode)), dtype=object)
    for k, units in enumerate(spikes_by_tetrode):
        if not units:
            cell[0, k] = np.zeros((1, 0))
            continue
        tet = np.empty((1, len(units)), dtype=object)
        for u, s in enumerate(units):
            if s is None:
                tet[0, u] = np.zeros((1, 0))
            else:
                st = np.zeros((1, 1), dtype=[("time", object), ("timerange", object), ("meanrate", object)])
                st[0, 0] = (np.asarray(s, float)[:, None], np.array([[s[0], s[-1]]]), np.array([[1.0]]))
                tet[0, u] = st
        cell[0, k] = tet
    scipy.io.savemat(folder / "spikes.mat", {"spikes": cell})
    rec = np.zeros(t.size, dtype=REC)
    rec["time"] = np.round(t * 30000).astype(np.uint32)
    rec["x"], rec["y"] = x, 100
    header = b"<Start settings>\nclockrate: 30000\n<End settings>\n"
    (folder / "trajectory.videoPositionTracking").write_bytes(header + rec.tobytes())


def test_linear_track_never_interpolates_across_a_gap(tmp_path):
    # 60-Hz tracking from 100 to 110 s with a 2-s gap (103, 105) in which the animal jumped
    t = np.arange(100 * 30000, 110 * 30000, 500) / 30000.0  # on the 30-kHz clock
    t = t[(t < 103) | (t > 105)]
    x = np.where(t < 104, 150, 400) + np.round(10 * np.sin(t)).astype(int)
    rng = np.random.default_rng(0)
    s0, s1 = np.sort(rng.uniform(100, 110, 200)), np.sort(rng.uniform(100, 110, 50))
    _write_track(tmp_path / "lt", t, x, [[s0, None], [], [s1]])
    with pytest.warns(TrackingGapWarning, match=r"dropped \d+ of 49 bins .* 2 segments"):
        data = load_linear_track(tmp_path / "lt", bin_size=0.2, max_still=5.0, warn=True)
    assert list(data.neuron_ids) == ["tt0_u0", "tt2_u0"]
    j, left, right = _edges(data, t[0])
    g0, g1 = t[t < 104].max(), t[t > 104].min()  # the gap between two tracking samples
    gap = (left < g1) & (right > g0)
    assert not gap.any()  # no bin in the gap
    assert data.n_trial == 2 and np.all(data.covariates[data.bin_centers > 104] > 350)
    assert np.all(data.covariates[data.bin_centers < 104] < 200)  # nothing invented in between
    np.testing.assert_array_equal(data.counts, _histogram_at([s0, s1], t[0], 0.2, j))


def test_linear_track_frozen_tracker_is_untracked(tmp_path):
    t = np.arange(0, 20, 1 / 60)
    x = np.where(t < 12, 200 + np.round(50 * np.sin(t)).astype(int), 522)  # frozen for 8 s
    _write_track(tmp_path / "lt", t, x, [[np.linspace(0.1, 19.9, 100)], []])
    data = load_linear_track(tmp_path / "lt", bin_size=0.5, max_still=5.0)
    assert data.bin_centers.max() < 12
    kept = load_linear_track(tmp_path / "lt", bin_size=0.5, max_still=10.0)
    assert kept.bin_centers.max() > 19


# -- head direction -------------------------------------------------------------------------------


def test_head_direction_sums_10ms_bins_within_segments(shared_data):
    data = load_head_direction(shared_data / HD, bin_size=0.05)
    m = scipy.io.loadmat(shared_data / HD / "dataHD.mat")
    q, stamp, ang = m["Qrun"].astype(int), m["angRun"][:, 0], m["angRun"][:, 1]
    # brute force: walk the 10-ms bins, start a segment at each stamp jump > 50 ms
    rows, angles, seg_of = [], [], []
    buf, s = [], 0
    for i in range(stamp.size):
        if i and stamp[i] - stamp[i - 1] > 0.05:
            buf, s = [], s + 1
        buf.append(i)
        if len(buf) == 5:
            rows.append(q[buf].sum(axis=0))
            angles.append(np.angle(np.exp(1j * ang[buf]).mean()) % (2 * np.pi))
            seg_of.append(s)
            buf = []
    np.testing.assert_array_equal(data.counts, np.array(rows))
    np.testing.assert_allclose(data.covariates[:, 0], angles, atol=1e-12)
    assert data.shape[1] == 19 and data.feature_names == ("angle",)
    assert data.n_trial == np.unique(seg_of).size == 109  # 113 periods, 4 shorter than 50 ms
    assert np.all((data.covariates >= 0) & (data.covariates < 2 * np.pi))
    _check_segments(data)


def test_bad_input_is_named(shared_data, tmp_path):
    with pytest.raises(ValueError, match="whole multiple of 0.01"):
        load_head_direction(shared_data / HD, bin_size=0.015)
    with pytest.raises(ValueError, match="bin_size must be a positive"):
        load_place_cells_2d(shared_data / PC2D, bin_size=-1)
    with pytest.raises(FileNotFoundError, match="PlaceCellDataAnimal1.mat"):
        load_place_cells_2d(tmp_path)
    with pytest.raises(ValueError, match="pass the path"):
        load_head_direction(None)
