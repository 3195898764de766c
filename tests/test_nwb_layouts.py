"""NWB reading across the valid layouts of real files, one small file per layout.

Every file is written here with pynwb (and, for the layouts pynwb itself never writes but other
NWB writers do, edited afterwards with h5py), then read back; spike times, counts and locations
are checked against the values written.
"""

import warnings
from datetime import UTC, datetime

import h5py
import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import Position

from bayesneuro import nwb as bnwb

DURATION = 20.0
BIN = 0.5


def simulate(rates, seed=0, windows=None):
    """Sorted Poisson spike times per unit; unit k fires only inside windows[k] when given."""
    rng = np.random.default_rng(seed)
    out = []
    for k, rate in enumerate(rates):
        spans = [(0.0, DURATION)] if windows is None else windows[k]
        t = [rng.uniform(a, b, size=rng.poisson(rate * (b - a))) for a, b in spans]
        out.append(np.sort(np.concatenate(t)) if t else np.zeros(0))
    return out


def new_file(identifier="layout"):
    return NWBFile(
        session_description="layout test",
        identifier=identifier,
        session_start_time=datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC),
    )


def add_electrodes(f, locations, ids=None, group_locations=None):
    """Electrodes (one group per distinct group location) with the given locations and ids."""
    device = f.create_device(name="probe")
    group_locations = group_locations or ["brain"] * len(locations)
    groups = {}
    for k, loc in enumerate(locations):
        gl = group_locations[k]
        if gl not in groups:
            groups[gl] = f.create_electrode_group(
                name=f"shank{len(groups)}", description="shank", location=gl, device=device
            )
        kw = {} if ids is None else {"id": ids[k]}
        f.add_electrode(location=loc, group=groups[gl], **kw)
    return groups


def write(f, path):
    with NWBHDF5IO(str(path), "w") as io:
        io.write(f)
    return path


def drop_index(path, column):
    """Store a ragged column with one value per row as a plain column (no ``*_index``), as
    NWB writers other than pynwb do (the schema makes the index optional)."""
    with h5py.File(path, "a") as h:
        ends = h[f"units/{column}_index"][:]
        assert ends.tolist() == list(range(1, ends.size + 1)), "one value per unit needed"
        del h[f"units/{column}_index"]


def expected_counts(spikes, centers, bin_size):
    """Spikes of each unit in each bin [c - bin/2, c + bin/2), counted from the written times."""
    lo, hi = centers - bin_size / 2, centers + bin_size / 2
    return np.column_stack([
        np.searchsorted(np.sort(s), hi, side="left") - np.searchsorted(np.sort(s), lo, side="left")
        for s in spikes
    ])


def check_spikes(path, ids, spikes):
    got, meta = bnwb.read_nwb_units(path)
    assert list(got) == list(ids)
    for u, s in zip(ids, spikes):
        np.testing.assert_array_equal(got[u], s)
    return meta


# -- units/electrodes ------------------------------------------------------------------------


def test_electrodes_ragged_several_per_unit(tmp_path):
    f = new_file()
    add_electrodes(f, ["CA1", "CA3", "DG", "DG"], ids=[40, 41, 42, 43])
    spikes = simulate([4.0, 9.0, 2.0])
    rows = [[0, 1], [2], [2, 3]]
    for s, r in zip(spikes, rows):
        f.add_unit(spike_times=s, electrodes=r)
    path = write(f, tmp_path / "ragged.nwb")
    meta = check_spikes(path, [0, 1, 2], spikes)
    assert meta["location"].tolist() == ["CA1, CA3", "DG", "DG"]
    assert [e.tolist() for e in meta["electrodes"]] == [[40, 41], [42], [42, 43]]
    data, info = bnwb.read_nwb(path, bin_size=BIN, return_metadata=True)
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))
    assert info.unit_metadata["location"].tolist() == ["CA1, CA3", "DG", "DG"]


def one_electrode_per_unit(tmp_path, name="flat.nwb"):
    f = new_file()
    add_electrodes(f, ["CA1", "CA3", "DG"], ids=[10, 11, 12])
    spikes = simulate([5.0, 3.0, 7.0, 1.0], seed=1)
    rows = [2, 0, 1, 2]
    for uid, s, r in zip([101, 102, 103, 104], spikes, rows):
        f.add_unit(spike_times=s, electrodes=[r], id=uid)
    path = write(f, tmp_path / name)
    drop_index(path, "electrodes")
    return path, spikes


def test_electrodes_one_per_unit_without_index(tmp_path):
    """The layout of the DANDI file of issue 19: ``units/electrodes`` is itself the region."""
    path, spikes = one_electrode_per_unit(tmp_path)
    with h5py.File(path, "r") as h:
        assert "electrodes_index" not in h["units"]
    meta = check_spikes(path, [101, 102, 103, 104], spikes)
    assert meta["location"].tolist() == ["DG", "CA1", "CA3", "DG"]
    assert meta["electrodes"].tolist() == [12, 10, 11, 12]
    data, info = bnwb.read_nwb(path, bin_size=BIN, return_metadata=True, neurons=[104, 101])
    assert data.neuron_ids.tolist() == [104, 101]
    np.testing.assert_array_equal(
        data.counts, expected_counts([spikes[3], spikes[0]], data.bin_centers, BIN)
    )
    assert info.unit_metadata["location"].tolist() == ["DG", "DG"]
    assert info.unit_metadata["electrodes"].tolist() == [12, 12]


def test_no_electrodes_table(tmp_path):
    f = new_file()
    spikes = simulate([6.0, 2.0], seed=2)
    for s in spikes:
        f.add_unit(spike_times=s)
    path = write(f, tmp_path / "bare.nwb")
    meta = check_spikes(path, [0, 1], spikes)
    assert "location" not in meta and "electrodes" not in meta
    data = bnwb.read_nwb(path, bin_size=BIN)
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))


def test_electrode_group_only(tmp_path):
    f = new_file()
    groups = add_electrodes(f, ["x", "y"], group_locations=["CA1", "PFC"])
    spikes = simulate([3.0, 4.0, 5.0], seed=3)
    for s, g in zip(spikes, ["PFC", "CA1", "PFC"]):
        f.add_unit(spike_times=s, electrode_group=groups[g])
    path = write(f, tmp_path / "groups.nwb")
    meta = check_spikes(path, [0, 1, 2], spikes)
    assert meta["electrode_group"].tolist() == ["shank1", "shank0", "shank1"]
    assert meta["location"].tolist() == ["PFC", "CA1", "PFC"]


def test_electrodes_table_without_location_names_the_field(tmp_path):
    """NWB requires a location column in the electrodes table; pynwb cannot build the file
    without it, and the error says where."""
    path, _ = one_electrode_per_unit(tmp_path)
    with h5py.File(path, "a") as h:
        e = h["general/extracellular_ephys/electrodes"]
        del e["location"]
        e.attrs["colnames"] = np.array([c for c in e.attrs["colnames"] if c != "location"],
                                       dtype=object)
    with pytest.raises(ValueError, match=r"general/extracellular_ephys/electrodes: "):
        bnwb.read_nwb_units(path)


def test_electrodes_row_out_of_range_names_the_field(tmp_path):
    path, _ = one_electrode_per_unit(tmp_path)
    with h5py.File(path, "a") as h:
        h["units/electrodes"][1] = 7
    with pytest.raises(ValueError, match=r"units/electrodes: .*row 7.*3 rows"):
        bnwb.read_nwb_units(path)


def test_units_without_spike_times_names_the_field(tmp_path):
    f = new_file()
    f.add_unit_column(name="quality", description="label")
    f.add_unit(quality="good")
    path = write(f, tmp_path / "nospikes.nwb")
    with pytest.raises(ValueError, match=r"units/spike_times: .*no spike_times column"):
        bnwb.read_nwb(path, bin_size=BIN)


# -- spike_times -----------------------------------------------------------------------------


def test_units_with_no_spikes(tmp_path):
    f = new_file()
    spikes = simulate([5.0, 0.0, 8.0, 0.0], seed=4)
    assert spikes[1].size == 0 and spikes[3].size == 0
    for s in spikes:
        f.add_unit(spike_times=s)
    path = write(f, tmp_path / "silent.nwb")
    check_spikes(path, [0, 1, 2, 3], spikes)
    with pytest.warns(UserWarning, match="no spikes"):
        data = bnwb.read_nwb(path, bin_size=BIN)
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))
    assert data.counts[:, [1, 3]].sum() == 0


def test_unsorted_spike_times_are_sorted_with_a_warning(tmp_path):
    """The schema does not require spike times in order (the NWB Inspector only advises it)."""
    f = new_file()
    spikes = simulate([6.0, 9.0], seed=5)
    rng = np.random.default_rng(9)
    for s in spikes:
        f.add_unit(spike_times=rng.permutation(s))
    path = write(f, tmp_path / "unsorted.nwb")
    with pytest.warns(UserWarning, match=r"units/spike_times: .*not in increasing order.*\[0, 1\]"):
        check_spikes(path, [0, 1], spikes)
    with pytest.warns(UserWarning, match=r"units/spike_times: "):
        data = bnwb.read_nwb(path, bin_size=BIN)
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))


def test_spike_times_without_index(tmp_path):
    """One spike per unit stored without ``spike_times_index`` (optional in the schema)."""
    f = new_file()
    times = [3.25, 0.75, 11.5]
    for t in times:
        f.add_unit(spike_times=[t])
    path = write(f, tmp_path / "single.nwb")
    drop_index(path, "spike_times")
    check_spikes(path, [0, 1, 2], [np.array([t]) for t in times])
    data = bnwb.read_nwb(path, bin_size=BIN)
    assert data.counts.sum() == 3
    np.testing.assert_array_equal(
        data.counts, expected_counts([np.array([t]) for t in times], data.bin_centers, BIN)
    )


# -- obs_intervals ---------------------------------------------------------------------------


OBS = [[(0.0, 20.0)], [(0.0, 8.0), (12.0, 20.0)], [(5.25, 20.0)]]


def obs_file(tmp_path):
    f = new_file()
    spikes = simulate([5.0, 6.0, 7.0], seed=6, windows=OBS)
    for s, obs in zip(spikes, OBS):
        f.add_unit(spike_times=s, obs_intervals=obs)
    return write(f, tmp_path / "obs.nwb"), spikes


def test_obs_intervals_in_metadata_and_observed_mask(tmp_path):
    path, spikes = obs_file(tmp_path)
    meta = check_spikes(path, [0, 1, 2], spikes)
    assert [m.tolist() for m in meta["obs_intervals"]] == [[list(p) for p in o] for o in OBS]
    with pytest.warns(UserWarning, match=r"units/obs_intervals: units \[1, 2\] were not observed"):
        data, info = bnwb.read_nwb(path, bin_size=BIN, trials=False, epochs=[0.0, 20.0],
                                   return_metadata=True)
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))
    lo, hi = data.bin_centers - BIN / 2, data.bin_centers + BIN / 2
    truth = np.column_stack([
        np.any([(lo >= a) & (hi <= b) for a, b in obs], axis=0) for obs in OBS
    ])
    assert info.observed.shape == data.counts.shape
    np.testing.assert_array_equal(info.observed, truth)
    assert truth[:, 1].sum() == 32 and truth[:, 2].sum() == 29  # (8 + 8) / 0.5 and [5.5, 20)
    # a unit observed throughout gives no warning and an all-True column
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info0 = bnwb.read_nwb(path, bin_size=BIN, trials=False, epochs=[0.0, 20.0],
                                 neurons=[0], return_metadata=True)
    assert info0.observed.all()


def test_no_obs_intervals_no_mask(tmp_path):
    path, _ = one_electrode_per_unit(tmp_path)
    _, info = bnwb.read_nwb(path, bin_size=BIN, return_metadata=True)
    assert info.observed is None


# -- intervals and processing modules ---------------------------------------------------------


def test_no_trials_no_epochs(tmp_path):
    f = new_file()
    spikes = simulate([5.0, 5.0], seed=7)
    for s in spikes:
        f.add_unit(spike_times=s)
    path = write(f, tmp_path / "plain.nwb")
    data = bnwb.read_nwb(path, bin_size=BIN, trials=True)
    assert data.trial_ids is None
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))
    with pytest.raises(ValueError, match=r"no intervals table 'trials'.*\[\]"):
        bnwb.read_nwb(path, bin_size=BIN, trials="trials")
    with pytest.raises(ValueError, match=r"neither an intervals table .*\(\[\]\) nor a tag"):
        bnwb.read_nwb(path, bin_size=BIN, epochs="rest")


POS_RATE, POS_START = 50.0, 0.001


def modules_file(tmp_path):
    """Position in a module 'tracking' (not 'behavior'); a second module 'ecephys'; a series
    called 'speed' in both."""
    f = new_file()
    spikes = simulate([5.0, 8.0], seed=8)
    for s in spikes:
        f.add_unit(spike_times=s)
    t = POS_START + np.arange(int(DURATION * POS_RATE)) / POS_RATE
    xy = np.column_stack([np.sin(t), np.cos(t / 3.0)])
    tracking = f.create_processing_module(name="tracking", description="video tracking")
    pos = Position(name="Position")
    pos.create_spatial_series(name="position", data=xy, rate=POS_RATE, starting_time=POS_START,
                              reference_frame="arena", unit="m")
    tracking.add(pos)
    tracking.add(TimeSeries(name="speed", data=np.abs(np.cos(t)), rate=POS_RATE,
                            starting_time=POS_START, unit="m/s"))
    ecephys = f.create_processing_module(name="ecephys", description="processed ephys")
    ecephys.add(TimeSeries(name="speed", data=2.0 + np.sin(t), rate=POS_RATE,
                           starting_time=POS_START, unit="a.u."))
    return write(f, tmp_path / "modules.nwb"), t, xy


def bin_means(t, values, centers, bin_size):
    return np.stack([values[(t >= c - bin_size / 2) & (t < c + bin_size / 2)].mean(axis=0)
                     for c in centers])


def test_behaviour_in_another_processing_module(tmp_path):
    path, t, xy = modules_file(tmp_path)
    data = bnwb.read_nwb(path, bin_size=BIN, behavior="position", trials=False,
                         epochs=[1.0, 19.0])
    assert data.feature_names == ("position_x", "position_y")
    np.testing.assert_allclose(data.covariates, bin_means(t, xy, data.bin_centers, BIN),
                               rtol=1e-12)
    # the module named in the path chooses between two series of the same name
    data = bnwb.read_nwb(path, bin_size=BIN, behavior="ecephys/speed", trials=False,
                         epochs=[1.0, 19.0])
    np.testing.assert_allclose(data.covariates[:, 0],
                               bin_means(t, 2.0 + np.sin(t), data.bin_centers, BIN), rtol=1e-12)
    with pytest.raises(ValueError, match=r"processing/ecephys/speed.*processing/tracking/speed"):
        bnwb.read_nwb(path, bin_size=BIN, behavior="speed")


def test_behaviour_errors_list_the_processing_modules(tmp_path):
    path, _, _ = modules_file(tmp_path)
    with pytest.raises(ValueError, match=r"no TimeSeries 'running'.*processing modules: "
                                         r"\['ecephys', 'tracking'\]"):
        bnwb.read_nwb(path, bin_size=BIN, behavior="running")
    with pytest.raises(ValueError, match=r"'tracking' is a processing module.*"
                                         r"processing/tracking/Position/position"):
        bnwb.read_nwb(path, bin_size=BIN, behavior="tracking")


# -- metadata columns of other kinds ---------------------------------------------------------


def test_metadata_columns_of_other_kinds(tmp_path):
    f = new_file()
    add_electrodes(f, ["CA1", "CA3"])
    spikes = simulate([4.0, 6.0, 3.0], seed=10)
    rng = np.random.default_rng(11)
    waveforms = rng.normal(size=(3, 30, 2))
    f.add_unit_column(name="label", description="bytes strings")
    f.add_unit_column(name="tags", description="ragged strings", index=True)
    f.add_unit_column(name="snr", description="float")
    labels = [b"good", b"mua", b"noise"]
    tags = [["a", "b"], [], ["c"]]
    for k, s in enumerate(spikes):
        f.add_unit(spike_times=s, electrodes=[k % 2], waveform_mean=waveforms[k],
                   label=labels[k], tags=tags[k], snr=float(k) + 0.5)
    path = write(f, tmp_path / "columns.nwb")
    meta = check_spikes(path, [0, 1, 2], spikes)
    np.testing.assert_array_equal(meta["waveform_mean"], waveforms)
    assert meta["label"].tolist() == ["good", "mua", "noise"]
    assert [list(x) for x in meta["tags"]] == tags
    assert meta["snr"].tolist() == [0.5, 1.5, 2.5]
    assert meta["location"].tolist() == ["CA1", "CA3", "CA1"]
    _, info = bnwb.read_nwb(path, bin_size=BIN, neurons=[2, 0], return_metadata=True)
    np.testing.assert_array_equal(info.unit_metadata["waveform_mean"], waveforms[[2, 0]])


def test_trials_with_timeseries_references(tmp_path):
    """DANDI trials tables often reference their TimeSeries: read as the series' names."""
    f = new_file()
    spikes = simulate([5.0], seed=12)
    f.add_unit(spike_times=spikes[0])
    lick = TimeSeries(name="lick", data=np.zeros(200), rate=10.0, unit="a.u.")
    f.add_acquisition(lick)
    for a in (1.0, 6.0, 11.0):
        f.add_trial(start_time=a, stop_time=a + 4.0, timeseries=[lick])
    path = write(f, tmp_path / "refs.nwb")
    table = bnwb.read_nwb_trials(path)
    assert table["start_time"].tolist() == [1.0, 6.0, 11.0]
    refs = table["timeseries"]
    assert [r["timeseries"].tolist() for r in refs] == [["lick"]] * 3
    assert [r["idx_start"].tolist() for r in refs] == [[10], [60], [110]]
    data, _info = bnwb.read_nwb(path, bin_size=BIN, return_metadata=True)
    assert data.trials.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(data.counts, expected_counts(spikes, data.bin_centers, BIN))


# -- the committed DANDI-style fixture -------------------------------------------------------


DATA = __import__("pathlib").Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "dandi_style.nwb"


@pytest.fixture(scope="module")
def gen():
    """The generating script, imported from tests/data (it is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dandi_style_nwb",
                                                  DATA / "make_dandi_style_nwb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dandi_fixture_is_what_the_script_makes(gen, tmp_path):
    assert FIXTURE.stat().st_size < 200_000
    fresh = gen.write(tmp_path / "fresh.nwb")
    sim = gen.simulate()
    s_old, m_old = bnwb.read_nwb_units(FIXTURE)
    s_new, m_new = bnwb.read_nwb_units(fresh)
    assert list(s_old) == list(s_new) == gen.UNIT_IDS
    for uid in gen.UNIT_IDS:
        np.testing.assert_array_equal(s_old[uid], sim["spikes"][uid])
        np.testing.assert_array_equal(s_new[uid], sim["spikes"][uid])
    assert sorted(m_old) == sorted(m_new)
    for key in m_old:
        for a, b in zip(m_old[key], m_new[key]):
            np.testing.assert_array_equal(a, b)
    assert {k: v.tolist() for k, v in bnwb.read_nwb_trials(FIXTURE).items()} == \
        {k: v.tolist() for k, v in bnwb.read_nwb_trials(fresh).items()}
    with NWBHDF5IO(str(FIXTURE), "r") as io:
        f = io.read()
        assert {k: getattr(f.subject, k) for k in gen.SUBJECT} == gen.SUBJECT
        assert f.session_start_time == gen.SESSION_START
        assert f.epochs is None and sorted(f.processing) == ["behavior", "ecephys"]
        xy = f.processing["behavior"]["Position"]["position"].data[:]
        lfp = f.processing["ecephys"]["LFP"]["lfp"].data[:]
    np.testing.assert_array_equal(xy, sim["position"])
    np.testing.assert_array_equal(lfp, sim["lfp"])
    with h5py.File(FIXTURE, "r") as h:  # the layout of issue 19
        assert "electrodes" in h["units"] and "electrodes_index" not in h["units"]


def fixture_truth(gen, data):
    """Counts, observed mask and position per bin of `data`, from the script's parameters."""
    sim = gen.simulate()
    spikes = [sim["spikes"][u] for u in gen.UNIT_IDS]
    lo, hi = data.bin_centers - data.bin_size / 2, data.bin_centers + data.bin_size / 2
    observed = np.column_stack([
        np.any([(lo >= a) & (hi <= b) for a, b in obs], axis=0) for obs in gen.OBS_INTERVALS
    ])
    return (expected_counts(spikes, data.bin_centers, data.bin_size), observed,
            bin_means(sim["t_pos"], sim["position"], data.bin_centers, data.bin_size))


def test_dandi_fixture_read_nwb(gen):
    with pytest.warns(UserWarning, match=r"units/obs_intervals: units \[3, 5\] were not observed"):
        data, info = bnwb.read_nwb(FIXTURE, bin_size=0.1, behavior="position",
                                   return_metadata=True)
    n_bins = round(gen.TRIAL_LENGTH / 0.1)
    assert data.neuron_ids.tolist() == gen.UNIT_IDS
    assert data.trials.tolist() == list(range(len(gen.TRIAL_STARTS)))
    assert data.n_time == n_bins * len(gen.TRIAL_STARTS)
    np.testing.assert_allclose(data.bin_centers[::n_bins], np.array(gen.TRIAL_STARTS) + 0.05)
    counts, observed, xy = fixture_truth(gen, data)
    np.testing.assert_array_equal(data.counts, counts)
    np.testing.assert_array_equal(info.observed, observed)
    assert observed[:, [0, 1, 4, 5]].all() and not observed[:, 2].all()
    np.testing.assert_allclose(data.covariates, xy, rtol=1e-12)
    rows = gen.UNIT_ELECTRODE_ROW
    meta = info.unit_metadata
    assert meta["location"].tolist() == [gen.ELECTRODES[r][2] for r in rows]
    assert meta["electrodes"].tolist() == [gen.ELECTRODES[r][0] for r in rows]
    assert meta["electrode_group"].tolist() == [gen.ELECTRODES[r][1] for r in rows]
    assert meta["quality"].tolist() == gen.UNIT_QUALITY
    assert [m.tolist() for m in meta["obs_intervals"]] == \
        [[list(iv) for iv in obs] for obs in gen.OBS_INTERVALS]
    assert info.trial_metadata["condition"].tolist() == gen.TRIAL_CONDITIONS
    assert info.identifier == gen.IDENTIFIER
    assert info.session_start_time == gen.SESSION_START.isoformat()
    spikes, umeta = bnwb.read_nwb_units(FIXTURE)
    assert umeta["location"].tolist() == meta["location"].tolist()
    assert sum(s.size for s in spikes.values()) == sum(
        s.size for s in gen.simulate()["spikes"].values())


CLI_MODEL = '''\
import numpyro
import numpyro.distributions as dist


def rates(counts=None, *, bin_size, n_time=None, n_neuron=None):
    if counts is not None:
        n_time, n_neuron = counts.shape
    with numpyro.plate("neuron", n_neuron):
        r = numpyro.sample("rate", dist.Gamma(2.0, 0.2))
        with numpyro.plate("time", n_time, dim=-2):
            numpyro.sample("counts", dist.Poisson(r * bin_size), obs=counts)
'''


def cli_config(tmp_path):
    (tmp_path / "rates.py").write_text(CLI_MODEL)
    config = tmp_path / "dandi.toml"
    config.write_text(
        f'[data]\npath = "{FIXTURE.as_posix()}"\nbin_size = 0.1\nbehavior = "position"\n'
        f'[model]\nkind = "custom"\nfile = "{(tmp_path / "rates.py").as_posix()}"\n'
        'function = "rates"\n[fit]\nmethod = "map"\n[output]\nname = "dandi"\nreport = "none"\n'
    )
    return config


def test_dandi_fixture_through_the_cli_reader(gen):
    """The CLI's NWB input: a [data] table through load_data, as `bayesneuro fit` reads it (the
    whole command, config file included, runs in the slow test below)."""
    from bayesneuro.config import DataConfig, load_data

    config = DataConfig(path=FIXTURE, format="nwb", bin_size=0.1, nwb={"behavior": "position"})
    with pytest.warns(UserWarning, match=r"units/obs_intervals: "):
        data = load_data(config)
    counts, _, xy = fixture_truth(gen, data)
    np.testing.assert_array_equal(data.counts, counts)
    np.testing.assert_allclose(data.covariates, xy, rtol=1e-12)


@pytest.mark.slow  # 12-23 s on a busy 2-core machine: a CLI fit of the fixture
def test_dandi_fixture_fit_by_the_cli(gen, tmp_path):
    from bayesneuro.cli import main
    from bayesneuro.io import load

    config = cli_config(tmp_path)
    with pytest.warns(UserWarning, match=r"units/obs_intervals: "):
        assert main(["fit", str(config), "--quiet"]) == 0
    idata = load(tmp_path / "results" / "dandi.nc")
    rate = idata.point_estimate["rate"]  # the config fits by MAP: a point fit, no posterior group
    assert "posterior" not in idata.groups()
    assert rate.coords["neuron"].values.tolist() == gen.UNIT_IDS
    assert rate.sizes["neuron"] == len(gen.UNIT_IDS)
