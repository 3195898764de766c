"""Write ``tests/data/dandi_style.nwb``: a small NWB file laid out as published DANDI files are.

Run from anywhere: ``python tests/data/make_dandi_style_nwb.py [OUT]`` (default: next to this
script). The file is made from the parameters below and a seeded generator, with seeded object
ids and a fixed creation date, so the same pynwb/hdmf/h5py versions write the same bytes and
any version writes the same contents (tests/test_nwb_layouts.py regenerates it and compares).
No data are copied from anywhere: the spikes and the position are simulated.

What it mimics (the conventions of DANDI archive files):

- ``Subject`` with ``subject_id``, ``species``, ``age`` (ISO 8601 duration), ``sex``;
  ``session_start_time`` with a time zone; ``session_id``, ``lab``, ``institution``,
  ``experimenter``, ``keywords``.
- A device and two electrode groups on it; an electrodes table with ``location``.
- A Units table whose ``electrodes`` column is a region **without index**, one electrode per
  unit (the layout of the file in issue 19; pynwb writes an index, other writers do not, so
  the index is removed with h5py after writing), ``electrode_group``, ``quality``,
  ``waveform_mean`` (2-D) and ragged ``obs_intervals`` (one unit lost at 35 s, one unit not
  observed from 20 to 25 s).
- A trials table with a ``condition`` column; no epochs table.
- ``processing/behavior``: a ``Position`` holding a 2-D ``SpatialSeries`` ``position``;
  ``processing/ecephys``: an ``LFP`` ``ElectricalSeries`` (float32, 2 channels).
"""

from __future__ import annotations

import random
import sys
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

SEED = 19
DURATION = 60.0  # seconds
IDENTIFIER = "5b1f3c2e-19aa-4d0e-9c1e-000000000019"
SESSION_START = datetime(2023, 11, 14, 9, 30, 0, tzinfo=timezone(timedelta(hours=-5)))
FILE_CREATED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
SUBJECT = {"subject_id": "mouse-19", "species": "Mus musculus", "age": "P90D", "sex": "M",
           "description": "simulated subject"}

GROUPS = {"shank0": "CA1", "shank1": "PFC"}
# electrodes: (id, group, location); ids are not row numbers, so a reader that mixes them up fails
ELECTRODES = [(100, "shank0", "CA1"), (101, "shank0", "CA1"), (102, "shank0", "CA3"),
              (200, "shank1", "PFC"), (201, "shank1", "PFC")]
UNIT_IDS = [1, 2, 3, 5, 8, 13]
UNIT_RATES = [4.0, 11.0, 2.5, 7.0, 16.0, 1.0]  # spikes per second while observed
UNIT_ELECTRODE_ROW = [0, 2, 1, 3, 4, 3]  # row of the electrodes table for each unit
UNIT_QUALITY = ["good", "good", "mua", "good", "good", "noise"]
OBS_INTERVALS = [
    [(0.0, 60.0)],
    [(0.0, 60.0)],
    [(0.0, 35.0)],  # lost at 35 s
    [(0.0, 20.0), (25.0, 60.0)],  # a gap
    [(0.0, 60.0)],
    [(0.0, 60.0)],
]
WAVEFORM_SAMPLES = 20
TRIAL_STARTS = [2.0, 8.0, 14.0, 20.0, 26.0, 32.0, 38.0, 44.0, 50.0]
TRIAL_LENGTH = 4.5
TRIAL_CONDITIONS = ["left", "right"] * 4 + ["left"]
POSITION_RATE = 20.0  # Hz
POSITION_START = 0.01  # s: no sample on a bin edge
LFP_RATE = 10.0  # Hz
LFP_ROWS = [0, 3]
# the cached NWB schema alone takes ~170 KB of HDF5; DANDI files carry it, this fixture does not
# (to stay small): pynwb reads the file with the schema it ships
CACHE_SPEC = False


def position(t: np.ndarray) -> np.ndarray:
    """The simulated 2-D position (m) at times t: a loop around a 1 m arena."""
    return np.column_stack([0.5 * np.cos(2 * np.pi * t / 12.0), 0.5 * np.sin(2 * np.pi * t / 12.0)])


def simulate() -> dict:
    """Spike times per unit (sorted, inside the unit's obs_intervals), position and LFP."""
    rng = np.random.default_rng(SEED)
    spikes = {}
    for uid, rate, obs in zip(UNIT_IDS, UNIT_RATES, OBS_INTERVALS):
        parts = [rng.uniform(a, b, size=rng.poisson(rate * (b - a))) for a, b in obs]
        spikes[uid] = np.round(np.sort(np.concatenate(parts)), 5)  # 10 us resolution
    t_pos = POSITION_START + np.arange(int(DURATION * POSITION_RATE)) / POSITION_RATE
    t_lfp = np.arange(int(DURATION * LFP_RATE)) / LFP_RATE
    lfp = rng.normal(scale=50e-6, size=(t_lfp.size, len(LFP_ROWS))).astype(np.float32)
    waveforms = rng.normal(scale=20e-6, size=(len(UNIT_IDS), WAVEFORM_SAMPLES))
    return {"spikes": spikes, "t_pos": t_pos, "position": position(t_pos), "lfp": lfp,
            "waveforms": waveforms}


@contextmanager
def _seeded_object_ids():
    """hdmf gives every object a random uuid4; seed them so the file's bytes repeat."""
    import hdmf.container

    rng = random.Random(SEED)
    original = hdmf.container.uuid4
    hdmf.container.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    try:
        yield
    finally:
        hdmf.container.uuid4 = original


def write(path) -> Path:
    """Write the file to `path` (overwritten) and return its path."""
    import h5py
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import Position
    from pynwb.ecephys import LFP
    from pynwb.file import Subject

    sim = simulate()
    path = Path(path)
    with _seeded_object_ids():
        f = NWBFile(
            session_description="simulated DANDI-style session for bayesneuro's tests",
            identifier=IDENTIFIER,
            session_start_time=SESSION_START,
            file_create_date=FILE_CREATED,
            session_id="session-19",
            lab="Simulation Lab",
            institution="bayesneuro",
            experimenter=["Doe, Jane"],
            keywords=["hippocampus", "prefrontal cortex", "simulated"],
            subject=Subject(**SUBJECT),
        )
        device = f.create_device(name="Probe", description="two-shank silicon probe")
        groups = {
            name: f.create_electrode_group(name=name, description=f"{name} of the probe",
                                           location=loc, device=device)
            for name, loc in GROUPS.items()
        }
        for eid, group, loc in ELECTRODES:
            f.add_electrode(id=eid, location=loc, group=groups[group])
        f.add_unit_column(name="quality", description="curation label")
        for k, uid in enumerate(UNIT_IDS):
            row = UNIT_ELECTRODE_ROW[k]
            f.add_unit(id=uid, spike_times=sim["spikes"][uid], electrodes=[row],
                       electrode_group=groups[ELECTRODES[row][1]], quality=UNIT_QUALITY[k],
                       obs_intervals=[list(iv) for iv in OBS_INTERVALS[k]],
                       waveform_mean=sim["waveforms"][k])
        f.add_trial_column(name="condition", description="cued side")
        for start, condition in zip(TRIAL_STARTS, TRIAL_CONDITIONS):
            f.add_trial(start_time=start, stop_time=start + TRIAL_LENGTH, condition=condition)

        behavior = f.create_processing_module(name="behavior", description="tracked behaviour")
        pos = Position(name="Position")
        pos.create_spatial_series(name="position", data=sim["position"], rate=POSITION_RATE,
                                  starting_time=POSITION_START, reference_frame="arena centre",
                                  unit="meters", description="head position")
        behavior.add(pos)
        ecephys = f.create_processing_module(name="ecephys", description="processed ephys")
        lfp = LFP(name="LFP")
        ecephys.add(lfp)
        lfp.create_electrical_series(
            name="lfp", data=sim["lfp"], rate=LFP_RATE, starting_time=0.0,
            electrodes=f.create_electrode_table_region(LFP_ROWS, "LFP channels"),
            description="downsampled LFP")
        with NWBHDF5IO(str(path), "w") as io:
            io.write(f, cache_spec=CACHE_SPEC)
    # one electrode per unit stored without electrodes_index, as DANDI files written by other
    # tools have it (the index is optional in the NWB schema)
    with h5py.File(path, "a") as h:
        ends = h["units/electrodes_index"][:]
        assert ends.tolist() == list(range(1, len(UNIT_IDS) + 1))
        del h["units/electrodes_index"]
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("dandi_style.nwb")
    print(write(out), out.stat().st_size, "bytes")
