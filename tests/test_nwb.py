"""NWB in and out: bayesneuro.nwb against ground truth computed here from the simulation."""

import os
import shutil
import warnings
from datetime import datetime, timezone

import arviz as az
import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from pynwb import NWBHDF5IO, NWBFile, TimeSeries  # noqa: E402
from pynwb.behavior import BehavioralTimeSeries, Position  # noqa: E402

from bayesneuro import nwb as bnwb  # noqa: E402

UNIT_IDS = [3, 7, 8, 20]
RATES = [5.0, 12.0, 30.0, 8.0]
ELECTRODE_LOCATIONS = ["CA1", "CA1", "CA3", "DG"]
UNIT_ELECTRODE = [0, 1, 2, 3]
QUALITY = ["good", "mua", "good", "noise"]
TRIAL_IDS = [100, 101, 102, 103, 104]
TRIAL_STARTS = [1.0, 4.5, 8.0, 12.3, 16.0]
TRIAL_LENGTH = 2.43  # 48 bins of 0.05 s and a remainder, dropped
CONDITIONS = ["a", "b", "a", "b", "a"]
DURATION = 20.0
POS_RATE = 37.0  # Hz: not a multiple of the bin rate
POS_START = 0.003  # no sample falls on a bin edge (where rounding would decide)


def position_signal(t):
    return np.column_stack([np.sin(2 * np.pi * t / 7.0), np.cos(2 * np.pi * t / 3.0) * t / 20.0])


def simulate():
    rng = np.random.default_rng(0)
    spikes = {}
    for uid, rate in zip(UNIT_IDS, RATES):
        lo = 15.0 if uid == 20 else 0.0  # unit 20 fires only late in the session
        spikes[uid] = np.sort(rng.uniform(lo, DURATION, size=rng.poisson(rate * (DURATION - lo))))
    pos_t = POS_START + np.arange(int(DURATION * POS_RATE)) / POS_RATE
    speed_t = np.sort(rng.uniform(0.0, DURATION, size=600))
    speed = 1.0 + np.sin(speed_t)
    return spikes, pos_t, position_signal(pos_t), speed_t, speed


def write_file(path, identifier="test-session", spikes=None, units=True):
    truth = simulate()
    spikes = truth[0] if spikes is None else spikes
    _, pos_t, pos, speed_t, speed = truth
    f = NWBFile(
        session_description="test session",
        identifier=identifier,
        session_start_time=datetime(2023, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    )
    device = f.create_device(name="probe")
    group = f.create_electrode_group(name="shank0", description="s", location="HPC", device=device)
    for loc in ELECTRODE_LOCATIONS:
        f.add_electrode(location=loc, group=group)
    if units:
        f.add_unit_column(name="quality", description="sorting label")
        for uid, el, q in zip(UNIT_IDS, UNIT_ELECTRODE, QUALITY):
            f.add_unit(spike_times=spikes[uid], electrodes=[el], electrode_group=group, quality=q, id=uid)
    f.add_trial_column(name="condition", description="condition")
    for tid, start, cond in zip(TRIAL_IDS, TRIAL_STARTS, CONDITIONS):
        f.add_trial(start_time=start, stop_time=start + TRIAL_LENGTH, condition=cond, id=tid)
    f.add_epoch(start_time=0.0, stop_time=10.0, tags=["pre"])
    f.add_epoch(start_time=10.0, stop_time=DURATION, tags=["task"])
    module = f.create_processing_module(name="behavior", description="behaviour")
    position = Position(name="Position")
    position.create_spatial_series(name="position", data=pos, rate=POS_RATE, starting_time=POS_START,
                                   reference_frame="centre", unit="m")
    module.add(position)
    bts = BehavioralTimeSeries(name="BehavioralTimeSeries")
    bts.create_timeseries(name="speed", data=speed, timestamps=speed_t, unit="m/s")
    module.add(bts)
    # a raw tracker signal of the same name in acquisition: "position" alone is ambiguous
    f.add_acquisition(TimeSeries(name="position", data=pos[:, 0] * 100, rate=POS_RATE,
                                 starting_time=POS_START, unit="px"))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(f)
    return path


@pytest.fixture(scope="module")
def nwb_file(tmp_path_factory):
    return write_file(tmp_path_factory.mktemp("nwb") / "session.nwb")


@pytest.fixture
def nwb_copy(nwb_file, tmp_path):
    dst = tmp_path / "session.nwb"
    shutil.copyfile(nwb_file, dst)
    return dst


@pytest.fixture(scope="module")
def truth():
    return simulate()


def trial_edges(start, bin_size=0.05):
    n = int(np.floor(TRIAL_LENGTH / bin_size + 1e-9))
    return start + np.arange(n + 1) * bin_size


# -- reading --------------------------------------------------------------------------------


def test_counts_without_trials_match_histogram(nwb_file, truth):
    spikes = truth[0]
    data = bnwb.read_nwb(nwb_file, bin_size=0.05, trials=False)
    assert data.neuron_ids.tolist() == UNIT_IDS
    assert data.trial_ids is None
    first = min(s.min() for s in spikes.values())
    last = max(s.max() for s in spikes.values())
    t0 = np.floor(first / 0.05) * 0.05
    n = int(np.floor((last - t0) / 0.05)) + 1
    edges = t0 + np.arange(n + 1) * 0.05
    expected = np.column_stack([np.histogram(spikes[u], edges)[0] for u in UNIT_IDS])
    np.testing.assert_array_equal(data.counts, expected)
    np.testing.assert_allclose(data.bin_centers, edges[:-1] + 0.025, atol=1e-12)


def test_counts_in_trials_match_histogram(nwb_file, truth):
    spikes = truth[0]
    data = bnwb.read_nwb(nwb_file, bin_size=0.05)
    assert data.trials.tolist() == TRIAL_IDS
    assert data.n_time == 5 * 48
    for tid, start in zip(TRIAL_IDS, TRIAL_STARTS):
        edges = trial_edges(start)
        one = data.trial(tid)
        expected = np.column_stack([np.histogram(spikes[u], edges)[0] for u in UNIT_IDS])
        np.testing.assert_array_equal(one.counts, expected)
        np.testing.assert_allclose(one.bin_centers, edges[:-1] + 0.025, atol=1e-12)
    # bins only inside trials
    starts, stops = np.array(TRIAL_STARTS), np.array(TRIAL_STARTS) + TRIAL_LENGTH
    c = data.bin_centers
    assert np.all(((c[:, None] > starts) & (c[:, None] < stops)).sum(axis=1) == 1)
    # a named intervals table works the same as trials=True
    again = bnwb.read_nwb(nwb_file, bin_size=0.05, trials="trials")
    np.testing.assert_array_equal(again.counts, data.counts)


def test_units_and_metadata(nwb_file, truth):
    spikes = truth[0]
    times, meta = bnwb.read_nwb_units(nwb_file)
    assert list(times) == UNIT_IDS
    for u in UNIT_IDS:
        np.testing.assert_array_equal(times[u], spikes[u])
    assert meta["location"].tolist() == [ELECTRODE_LOCATIONS[e] for e in UNIT_ELECTRODE]
    assert meta["quality"].tolist() == QUALITY
    assert meta["electrode_group"].tolist() == ["shank0"] * 4
    assert [e.tolist() for e in meta["electrodes"]] == [[e] for e in UNIT_ELECTRODE]

    data, info = bnwb.read_nwb(nwb_file, bin_size=0.05, neurons=[8, 3], return_metadata=True)
    assert data.neuron_ids.tolist() == [8, 3]
    assert info.identifier == "test-session"
    assert info.session_description == "test session"
    assert info.session_start_time == "2023-05-06T07:08:09+00:00"
    assert info.path == str(nwb_file.resolve())
    with NWBHDF5IO(str(nwb_file), "r") as io:
        assert info.units_object_id == io.read().units.object_id
    assert info.unit_metadata["location"].tolist() == ["CA3", "CA1"]
    assert info.unit_metadata["quality"].tolist() == ["good", "good"]
    assert info.trial_metadata["id"].tolist() == TRIAL_IDS
    assert info.trial_metadata["condition"].tolist() == CONDITIONS
    with pytest.raises(ValueError, match="read-only"):
        info.unit_metadata["quality"][0] = "x"


def test_read_trials_table(nwb_file):
    table = bnwb.read_nwb_trials(nwb_file)
    assert table["id"].tolist() == TRIAL_IDS
    np.testing.assert_allclose(table["start_time"], TRIAL_STARTS)
    np.testing.assert_allclose(table["stop_time"], np.array(TRIAL_STARTS) + TRIAL_LENGTH)
    assert table["condition"].tolist() == CONDITIONS
    epochs = bnwb.read_nwb_trials(nwb_file, "epochs")
    assert [t.tolist() for t in epochs["tags"]] == [["pre"], ["task"]]


def test_behavior_is_bin_averaged(nwb_file, truth):
    _, pos_t, pos, speed_t, speed = truth
    data = bnwb.read_nwb(nwb_file, bin_size=0.05, behavior=["Position/position", "speed"])
    assert data.feature_names == ("position_x", "position_y", "speed")
    left = data.bin_centers - 0.025
    # ground truth 1: the mean of the samples inside each bin [left, left + 0.05)
    for col, (t, v) in enumerate([(pos_t, pos[:, 0]), (pos_t, pos[:, 1]), (speed_t, speed)]):
        expected = []
        for a in left:
            inside = (t >= a) & (t < a + 0.05)
            expected.append(v[inside].mean() if inside.any() else np.interp(a + 0.025, t, v))
        np.testing.assert_allclose(data.covariates[:, col], expected, rtol=0, atol=1e-12)
    # ground truth 2: the average of the continuous signal over each bin, from a fine grid.
    # A sample s in a bin of width h differs from the bin average by at most L * h / 2, with L
    # the largest slope: 2 pi / 7 for x, 2 pi / 3 + 1 / 20 for y (|t / 20| <= 1)
    fine = left[:, None] + (np.arange(200) + 0.5) / 200 * 0.05
    continuous = position_signal(fine.ravel()).reshape(fine.shape + (2,)).mean(axis=1)
    bound = np.array([2 * np.pi / 7, 2 * np.pi / 3 + 1 / 20]) * 0.05 / 2
    assert np.all(np.abs(data.covariates[:, :2] - continuous) <= bound)
    assert np.abs(data.covariates[:, :2] - continuous).mean() < bound.min() / 2  # typically far less


def test_behavior_coarser_than_bins_is_interpolated(nwb_file, truth):
    _, pos_t, pos, _, _ = truth
    data = bnwb.read_nwb(nwb_file, bin_size=0.01, behavior="processing/behavior/Position/position")
    for col in range(2):
        expected = np.interp(data.bin_centers, pos_t, pos[:, col])
        np.testing.assert_allclose(data.covariates[:, col], expected, rtol=0, atol=1e-12)


def test_epochs_restrict(nwb_file, truth):
    spikes = truth[0]
    # a tag of the epochs table, with trials: the trials wholly inside; trial 102 (8.0 to
    # 10.43 s) reaches across the start of the epoch at 10 s and is dropped, with a warning
    with pytest.warns(UserWarning, match=r"1 trial straddles the end of an epoch .*\[102\]"):
        task = bnwb.read_nwb(nwb_file, bin_size=0.05, epochs="task")
    assert task.trials.tolist() == [103, 104]
    # the epochs table without trials: each epoch a segment labelled by its id
    both = bnwb.read_nwb(nwb_file, bin_size=0.05, trials=False, epochs="epochs")
    assert both.trials.tolist() == [0, 1]
    assert both.n_time == 400
    # explicit pairs, one interval: no trials, counts on the grid from its start
    with pytest.warns(UserWarning, match="neuron 20 has no spikes"):
        window = bnwb.read_nwb(nwb_file, bin_size=0.05, trials=False, epochs=[2.0, 6.0])
    assert window.trial_ids is None
    edges = 2.0 + np.arange(81) * 0.05
    expected = np.column_stack([np.histogram(spikes[u], edges)[0] for u in UNIT_IDS])
    np.testing.assert_array_equal(window.counts, expected)
    # trial 101 (4.5 to 6.93 s) reaches past the end at 5 s; unit 20 fires only after 15 s
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        early = bnwb.read_nwb(nwb_file, bin_size=0.05, epochs=[[0.0, 5.0]])
    assert early.trials.tolist() == [100]
    messages = sorted(str(w.message) for w in caught)
    assert messages == ["1 trial straddles the end of an epoch and is dropped (ids [101])",
                        "neuron 20 has no spikes"]
    assert all(w.filename == __file__ for w in caught)  # they point at the caller


def test_read_errors(nwb_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="no NWB file"):
        bnwb.read_nwb(tmp_path / "missing.nwb", bin_size=0.05)
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an NWB file: it is not an HDF5 file"):
        bnwb.read_nwb(text, bin_size=0.05)
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as fh:
        fh["x"] = 1
    with pytest.raises(ValueError, match="not an NWB file"):
        bnwb.read_nwb(tmp_path / "plain.h5", bin_size=0.05)
    no_units = write_file(tmp_path / "no_units.nwb", units=False)
    with pytest.raises(ValueError, match="has no units table"):
        bnwb.read_nwb(no_units, bin_size=0.05)
    with pytest.raises(ValueError, match=r"no units table named 'sorted'; its units tables: \['units'\]"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, units="sorted")
    with pytest.raises(ValueError, match="bin_size must be a positive"):
        bnwb.read_nwb(nwb_file, bin_size=0.0)
    with pytest.raises(ValueError, match="bin_size must be a positive"):
        bnwb.read_nwb(nwb_file, bin_size=-0.1)
    with pytest.raises(ValueError, match=r"no intervals table 'laps'.*\['epochs', 'trials'\]"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, trials="laps")
    with pytest.raises(ValueError, match=r"no TimeSeries 'lfp'.*processing/behavior/Position/position"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, behavior="lfp")
    with pytest.raises(ValueError, match=r"'position' names 2 TimeSeries.*acquisition/position"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, behavior="position")
    with pytest.raises(ValueError, match=r"reaches outside the recording.*span \[0, 20"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, epochs=[18.0, 30.0])
    with pytest.raises(ValueError, match="neither an intervals table"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, epochs="sleep")
    with pytest.raises(ValueError, match="no unit 99"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, neurons=[3, 99])
    with pytest.raises(ValueError, match="no trial .* lies wholly inside"):
        bnwb.read_nwb(nwb_file, bin_size=0.05, epochs=[3.5, 4.0])


# -- writing results ------------------------------------------------------------------------


def fake_idata(seed=0, n_draw=40, time=None):
    rng = np.random.default_rng(seed)
    time = np.arange(6) * 0.05 + 1.025 if time is None else time
    return az.from_dict(
        posterior={
            "mu": rng.normal(size=(2, n_draw)),
            "w": rng.normal(size=(2, n_draw, 4, 2)),
            "rate": rng.gamma(2.0, size=(2, n_draw, time.size, 4)),
        },
        posterior_predictive={"counts": rng.poisson(2.0, size=(2, n_draw, time.size, 4))},
        coords={"neuron": UNIT_IDS, "feature": ["x", "y"], "time": time},
        dims={"w": ["neuron", "feature"], "rate": ["time", "neuron"], "counts": ["time", "neuron"]},
    )


def test_sidecar_round_trip(nwb_copy, tmp_path):
    idata = fake_idata()
    target = bnwb.write_nwb_results(nwb_copy, idata)
    assert target == nwb_copy.with_name("session.bayesneuro.nc")
    assert "nwb_identifier" not in idata.posterior.attrs  # the input is not changed
    with NWBHDF5IO(str(nwb_copy), "r") as io:
        units_id = io.read().units.object_id
    for loaded in (bnwb.read_nwb_results(nwb_copy), bnwb.read_nwb_results(target, nwb_path=nwb_copy)):
        for group in loaded.groups():
            attrs = loaded[group].attrs
            assert attrs["nwb_identifier"] == "test-session"
            assert attrs["nwb_file"] == "session.nwb"
            assert attrs["nwb_units_object_id"] == units_id
            assert attrs["bayesneuro_version"] == __import__("bayesneuro").__version__
        np.testing.assert_array_equal(loaded.posterior["w"], idata.posterior["w"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        bnwb.write_nwb_results(nwb_copy, idata)
    bnwb.write_nwb_results(nwb_copy, fake_idata(seed=1), overwrite=True)
    assert not np.allclose(bnwb.read_nwb_results(target).posterior["mu"], idata.posterior["mu"])
    other = write_file(tmp_path / "other.nwb", identifier="another-session")
    with pytest.raises(ValueError, match="identifier 'test-session'.*'another-session'"):
        bnwb.read_nwb_results(target, nwb_path=other)
    with pytest.raises(FileNotFoundError, match="no side-car"):
        bnwb.read_nwb_results(nwb_copy, name="other")


def read_module(path, name="bayesneuro"):
    with NWBHDF5IO(str(path), "r") as io:
        module = io.read().processing[name]
        table = module["posterior_summary"]
        rows = {c: table[c].data[:] for c in table.colnames}
        series = {
            k: (v.data[:], v.timestamps[:], v.comments)
            for k, v in module.data_interfaces.items()
            if isinstance(v, TimeSeries)
        }
    return rows, series


def test_processing_module_round_trip(nwb_copy):
    idata = fake_idata()
    assert bnwb.write_nwb_results(nwb_copy, idata, mode="processing") == nwb_copy
    rows, series = read_module(nwb_copy)
    summary = az.summary(idata, var_names=["mu", "w"], kind="stats", round_to="none", hdi_prob=0.9)
    assert list(rows) == ["variable", "index", "mean", "sd", "hdi_5%", "hdi_95%"]  # prob=0.9 by default
    labels = [v if i == "" else f"{v}[{i}]" for v, i in zip(rows["variable"], rows["index"])]
    assert labels == summary.index.tolist()
    assert rows["index"][1] == "3, x"
    for col in ("mean", "sd", "hdi_5%", "hdi_95%"):
        np.testing.assert_allclose(rows[col], summary[col].to_numpy(), rtol=1e-12)
    time = idata.posterior["time"].values
    for var, group in (("rate", "posterior"), ("counts", "posterior_predictive")):
        draws = idata[group][var].values.reshape(-1, time.size, 4)
        data, stamps, comments = series[f"{var}_mean"]
        np.testing.assert_allclose(data, draws.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(series[f"{var}_sd"][0], draws.std(axis=0, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(stamps, time)
        assert '"dims": ["time", "neuron"]' in comments and "[3, 7, 8, 20]" in comments
    # the file still reads as before
    assert bnwb.read_nwb(nwb_copy, bin_size=0.05).trials.tolist() == TRIAL_IDS

    with pytest.raises(ValueError, match="already has a processing module 'bayesneuro'"):
        bnwb.write_nwb_results(nwb_copy, fake_idata(seed=1), mode="processing")
    bnwb.write_nwb_results(nwb_copy, fake_idata(seed=1), mode="processing", overwrite=True)
    new_rows, _ = read_module(nwb_copy)
    new_summary = az.summary(fake_idata(seed=1), var_names=["mu", "w"], kind="stats", round_to="none")
    np.testing.assert_allclose(new_rows["mean"], new_summary["mean"].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("where", ["filling the module", "writing the file"])
def test_processing_write_is_atomic(nwb_copy, monkeypatch, where):
    before = nwb_copy.read_bytes()
    listing = sorted(os.listdir(nwb_copy.parent))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    if where == "filling the module":
        real = bnwb._add_results

        def half(module, rows, series, description):  # the table goes in, then it fails
            real(module, rows, [], description)
            boom()

        monkeypatch.setattr(bnwb, "_add_results", half)
    else:
        real_write = NWBHDF5IO.write

        def write_then_fail(self, *args, **kwargs):
            real_write(self, *args, **kwargs)
            boom()

        monkeypatch.setattr(NWBHDF5IO, "write", write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        bnwb.write_nwb_results(nwb_copy, fake_idata(), mode="processing")
    assert nwb_copy.read_bytes() == before
    assert sorted(os.listdir(nwb_copy.parent)) == listing


def test_write_errors(nwb_copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="no NWB file"):
        bnwb.write_nwb_results(tmp_path / "missing.nwb", fake_idata())
    with pytest.raises(ValueError, match="mode must be"):
        bnwb.write_nwb_results(nwb_copy, fake_idata(), mode="inline")
    with pytest.raises(TypeError, match="arviz.InferenceData"):
        bnwb.write_nwb_results(nwb_copy, {"mu": 1.0})
    with pytest.raises(ValueError, match="'time' coordinate of posterior variable 'rate' holds int64"):
        bnwb.write_nwb_results(nwb_copy, fake_idata(time=np.arange(6)), mode="processing")
    with pytest.raises(ValueError, match="name must be"):
        bnwb.write_nwb_results(nwb_copy, fake_idata(), name="a/b")
    assert sorted(os.listdir(nwb_copy.parent)) == ["session.nwb"]


@pytest.mark.slow  # ~8 s: a fit written into the NWB file
def test_fit_result_written_back(nwb_copy):
    """A real (tiny) fit: per-neuron rates by MAP, written as a processing module."""
    import numpyro
    import numpyro.distributions as dist

    import bayesneuro as bn

    data = bnwb.read_nwb(nwb_copy, bin_size=0.05)

    def model(counts=None, bin_size=0.05):
        with numpyro.plate("neuron", counts.shape[1]):
            rate = numpyro.sample("rate", dist.Gamma(2.0, 0.1))
            with numpyro.plate("time", counts.shape[0], dim=-2):
                numpyro.sample("counts", dist.Poisson(rate * bin_size), obs=counts)

    res = bn.fit(model, method="map", key=0, counts=np.asarray(data.counts), coords=data.coords,
                 progress=False)
    bnwb.write_nwb_results(nwb_copy, res, mode="processing")
    rows, _ = read_module(nwb_copy)
    assert rows["variable"].tolist() == ["rate"] * 4
    assert rows["index"].tolist() == [str(u) for u in UNIT_IDS]
    # a point fit: one column, the estimate (no mean, sd or HDI of a single point)
    assert "estimate" in rows and "mean" not in rows and "sd" not in rows
    np.testing.assert_allclose(rows["estimate"], np.asarray(res.params["rate"]).ravel(), rtol=1e-10)
    # the MAP rate is (shape - 1 + spikes) / (rate_prior + time) per neuron
    expected = (1.0 + data.counts.sum(axis=0)) / (0.1 + data.duration)
    np.testing.assert_allclose(rows["estimate"], expected, rtol=1e-4)
