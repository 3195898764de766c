"""Neurodata Without Borders (NWB) in and out: spike data from NWB files, results back to them.

Reading: :func:`read_nwb` bins the Units table of an NWB file (HDF5) into a
:class:`~bayesneuro.data.SpikeData`, optionally within the trials of a trials table, restricted
to epochs, and with behavioural time series resampled onto the bins as covariates; with
``return_metadata=True`` it also returns an :class:`NWBInfo` (session fields and per-unit
metadata). :func:`read_nwb_units` and :func:`read_nwb_trials` return the raw tables as plain
dicts of numpy arrays.

Writing: :func:`write_nwb_results` stores an ``arviz.InferenceData`` either in a side-car netCDF
file next to the NWB file (``<stem>.<name>.nc``, linked to it by attributes), read back by
:func:`read_nwb_results`, or inside the NWB file as a processing module of posterior summaries,
written atomically.

pynwb is an optional dependency (``pip install bayesneuro[nwb]``), imported only when a function
here runs. Binning and resampling are those of :meth:`SpikeData.from_spike_times
<bayesneuro.data.SpikeData.from_spike_times>` and :meth:`SpikeData.from_pynapple
<bayesneuro.data.SpikeData.from_pynapple>`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write
from ._binning import _bin_average, _bin_spike_times, _drop_gap_bins, _max_gap
from ._validation import _as_ids, _check_bin_size, _optional_import, _py
from .data import SpikeData
from .estimator import PROB

__all__ = [
    "NWBInfo",
    "read_nwb",
    "read_nwb_results",
    "read_nwb_trials",
    "read_nwb_units",
    "write_example_nwb",
    "write_nwb_results",
]

_SUMMARY_TABLE = "posterior_summary"


def _import_pynwb(what: str):
    return _optional_import("pynwb", "nwb", what)


@dataclass(frozen=True, eq=False)
class NWBInfo:
    """Where a :class:`~bayesneuro.data.SpikeData` read by :func:`read_nwb` came from.

    Attributes
    ----------
    identifier : str
        The NWB file's ``identifier``.
    session_description : str
        Its ``session_description``.
    session_start_time : str
        Its ``session_start_time`` as an ISO 8601 string.
    units_object_id : str
        The ``object_id`` of the Units table that was read.
    unit_metadata : dict of str to numpy.ndarray
        One array per Units column (``spike_times`` excluded), aligned to ``data.neuron_ids``:
        see :func:`read_nwb_units`.
    path : str
        The NWB file, as an absolute path.
    trial_metadata : dict of str to numpy.ndarray
        The columns of the trials table (``id``, ``start_time``, ``stop_time``, ...) for the
        trials of the data, aligned to ``data.trials``; empty without trials.
    observed : numpy.ndarray or None
        With an ``obs_intervals`` column in the Units table: a read-only boolean array of shape
        ``(time, neuron)`` like ``data.counts``, True where the bin lies wholly inside one of
        the unit's observation intervals. A count where it is False is a zero (or a partial
        count), not an observation of silence. None when the table has no ``obs_intervals``.
    """

    identifier: str
    session_description: str
    session_start_time: str
    units_object_id: str
    unit_metadata: dict = field(repr=False)
    path: str
    trial_metadata: dict = field(default_factory=dict, repr=False)
    observed: np.ndarray | None = field(default=None, repr=False)


# -- opening files and finding things in them ------------------------------------------------


@contextmanager
def _open_nwb(path: Any, what: str) -> Iterator[Any]:
    """Open an NWB file read-only and yield its ``NWBFile``; closed on exit."""
    pynwb = _import_pynwb(what)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NWB file at {path}")
    import h5py

    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an NWB file: it is not an HDF5 file (bayesneuro reads NWB files "
            "stored as HDF5)"
        )
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
    except Exception as err:
        raise ValueError(f"{path} is not an NWB file: pynwb cannot open it ({err})") from err
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # namespace-version chatter from hdmf
                nwbfile = io.read()
        except Exception as err:
            where = _construct_error_path(err)
            if where is not None:
                # a part of the file does not follow the NWB schema: name it
                raise ValueError(
                    f"{where[0]}: pynwb cannot read this part of {path} ({where[1]}); it does "
                    "not follow the NWB schema (check the file with nwbinspector)"
                ) from err
            raise ValueError(f"{path} is not an NWB file: pynwb cannot read it ({err})") from err
        yield nwbfile
    finally:
        io.close()


def _construct_error_path(err: BaseException) -> tuple[str, str] | None:
    """(path in the file, reason) of the innermost hdmf ConstructError in `err`'s chain."""
    found = None
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        args = getattr(err, "args", ())
        if type(err).__name__ == "ConstructError" and len(args) == 2 and hasattr(args[0], "path"):
            path = str(args[0].path)
            found = (path.removeprefix("root/"), str(args[1]))
        err = err.__cause__ or err.__context__
    return found


def _units_table(nwbfile: Any, name: str) -> Any:
    from pynwb.misc import Units

    if name == "units" and nwbfile.units is not None:
        return nwbfile.units
    tables = [obj for obj in nwbfile.objects.values() if isinstance(obj, Units)]
    hits = [t for t in tables if t.name == name]
    if len(hits) == 1:
        return hits[0]
    if not tables:
        raise ValueError("the NWB file has no units table (no pynwb Units anywhere in it)")
    names = sorted({t.name for t in tables})
    if len(hits) > 1:
        raise ValueError(f"the NWB file has {len(hits)} units tables named {name!r}")
    raise ValueError(f"the NWB file has no units table named {name!r}; its units tables: {names}")


def _interval_table(nwbfile: Any, name: str, what: str) -> Any:
    tables = dict(nwbfile.intervals or {})
    if name not in tables:
        raise ValueError(
            f"the NWB file has no intervals table {name!r} for {what}; its intervals tables: "
            f"{sorted(tables)}"
        )
    return tables[name]


def _walk_series(container: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    from pynwb import TimeSeries

    if isinstance(container, TimeSeries):
        yield prefix, container
        return
    for child in getattr(container, "children", ()):
        yield from _walk_series(child, f"{prefix}/{child.name}")


def _all_series(nwbfile: Any) -> list[tuple[str, Any]]:
    """Every TimeSeries of the file with its path, e.g. ``processing/behavior/Position/position``."""
    found = []
    for group in ("acquisition", "stimulus", "stimulus_template"):
        for name, obj in (getattr(nwbfile, group, None) or {}).items():
            found.extend(_walk_series(obj, f"{group}/{name}"))
    for name, module in (nwbfile.processing or {}).items():
        found.extend(_walk_series(module, f"processing/{name}"))
    return found


def _find_series(nwbfile: Any, name: str) -> tuple[str, Any]:
    found = _all_series(nwbfile)
    hits = [(p, ts) for p, ts in found if p == name or p.endswith("/" + name.strip("/"))]
    if len(hits) == 1:
        return hits[0]
    paths = [p for p, _ in found]
    if not hits:
        modules = sorted(nwbfile.processing or {})
        stripped = name.strip("/").removeprefix("processing/")
        if stripped in modules:
            inside = [p for p in paths if p.startswith(f"processing/{stripped}/")]
            raise ValueError(
                f"behavior: {name!r} is a processing module, not a TimeSeries; name a series "
                f"in it: {inside if inside else 'it holds none'}"
            )
        raise ValueError(
            f"behavior: no TimeSeries {name!r} in the NWB file; available: "
            f"{paths if paths else 'none'} (processing modules: {modules}); name a series by "
            "the end of its path, e.g. 'module/series'"
        )
    raise ValueError(
        f"behavior: {name!r} names {len(hits)} TimeSeries ({[p for p, _ in hits]}); pass a "
        "longer path to choose one"
    )


# -- table columns as numpy arrays -----------------------------------------------------------


def _values(data: Any) -> np.ndarray:
    """The values of a stored column as a numpy array (object references become their names)."""
    from hdmf.container import AbstractContainer

    raw = data[:]
    if not isinstance(raw, np.ndarray):
        raw = list(raw)
        if raw and all(isinstance(v, AbstractContainer) for v in raw):
            return np.array([v.name for v in raw], dtype=str)
        raw = np.asarray(raw)
    if raw.dtype.names:
        # compound rows (e.g. TimeSeriesReferenceVectorData: idx_start, count, timeseries):
        # fields of object references become the names of the objects, bytes become str
        fields = {f: _values(np.asarray(raw[f])) if raw[f].dtype.kind in "OS" else raw[f]
                  for f in raw.dtype.names}
        fields = {f: np.array([getattr(v, "name", v) for v in x.ravel()]).reshape(x.shape)
                  if x.dtype.kind == "O" else x for f, x in fields.items()}
        out = np.empty(raw.shape, dtype=[(f, x.dtype) for f, x in fields.items()])
        for f, x in fields.items():
            out[f] = x
        return out
    if raw.dtype.kind == "S":
        return np.char.decode(raw, "utf-8")
    if raw.dtype.kind == "O" and raw.size and all(isinstance(v, (str, bytes)) for v in raw.flat):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in raw.flat],
                        dtype=str).reshape(raw.shape)
    return raw


def _index_ends(index: Any, n_values: int, where: str) -> np.ndarray:
    """The end offsets of a VectorIndex, checked against the `n_values` it indexes."""
    ends = np.asarray(index.data[:], dtype=np.int64)
    if ends.ndim != 1 or np.any(ends < 0) or np.any(np.diff(ends) < 0) or (
        ends.size and ends[-1] > n_values
    ):
        raise ValueError(
            f"{where}_index: its offsets are not non-decreasing offsets into the {n_values} "
            f"values of {where} (first {ends[:5].tolist()}, last {ends[-1:].tolist()})"
        )
    return ends


def _region_rows(region: Any, n_rows: int, where: str) -> np.ndarray:
    """The row positions a DynamicTableRegion refers to, checked against its table."""
    rows = np.asarray(region.data[:], dtype=np.int64)
    bad = (rows < 0) | (rows >= n_rows)
    if bad.any():
        raise ValueError(
            f"{where}: refers to row {int(rows[bad][0])} of the table {region.table.name!r}, "
            f"which has {n_rows} rows"
        )
    return rows


def _column(col: Any, where: str) -> np.ndarray:
    """One table column: a plain array, or for ragged columns an object array of arrays.

    References to table rows (DynamicTableRegion, e.g. ``units/electrodes``) become the ids of
    those rows; `where` (e.g. ``"units/electrodes"``) names the column in errors.
    """
    from hdmf.common import DynamicTableRegion, VectorIndex

    if isinstance(col, VectorIndex):
        flat = _column(col.target, where)
        ends = _index_ends(col, len(flat), where)
        out = np.empty(ends.size, dtype=object)
        for i, (a, b) in enumerate(zip(np.r_[0, ends[:-1]], ends)):
            out[i] = flat[a:b]
        return out
    if isinstance(col, DynamicTableRegion):
        ids = np.asarray(col.table.id[:])
        return ids[_region_rows(col, ids.size, where)]
    return _values(col.data)


def _table_columns(table: Any, skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
    return {name: _column(table[name], f"{table.name}/{name}")
            for name in table.colnames if name not in skip}


def _ragged(table: Any, name: str) -> tuple[Any, np.ndarray]:
    """(stored values, end offset of each row) of a column with or without an index; without
    one, each row holds one value (the index is optional in the NWB schema)."""
    from hdmf.common import VectorIndex

    where = f"{table.name}/{name}"
    col = table[name]
    if not isinstance(col, VectorIndex):
        return col, np.arange(1, len(col.data) + 1, dtype=np.int64)
    target = col.target
    if isinstance(target, VectorIndex):
        raise ValueError(f"{where}: a doubly indexed column (ragged of ragged) is not supported")  # noqa: TRY004 (a file layout, not an argument)
    return target, _index_ends(col, len(target.data), where)


def _group_locations(groups: Any) -> np.ndarray:
    return np.array([str(getattr(g, "location", "") or "") for g in groups], dtype=str)


def _unit_locations(table: Any) -> np.ndarray | None:
    """Brain location of each unit: those of its electrodes (``", "``-joined when several) or of
    its electrode group; None when the file does not say.

    ``units/electrodes`` is read with an index (several electrodes per unit) or without (the
    column is the region itself, one electrode per unit); an electrodes table without a
    ``location`` column gives the locations of the electrodes' groups.
    """
    from hdmf.common import DynamicTableRegion

    n = len(table.id)
    if "electrodes" in table.colnames:
        where = f"{table.name}/electrodes"
        region, ends = _ragged(table, "electrodes")
        if not isinstance(region, DynamicTableRegion):
            raise ValueError(
                f"{where}: expected references to rows of the electrodes table (a "
                f"DynamicTableRegion, with or without an index), found a {type(region).__name__}"
            )
        if ends.size != n:
            raise ValueError(f"{where}: {ends.size} rows for {n} units")
        electrodes = region.table
        loc = None
        if "location" in electrodes.colnames:
            loc = _values(electrodes["location"].data)
        elif "group" in electrodes.colnames:
            loc = _group_locations(electrodes["group"].data[:])
        if loc is not None:
            rows = _region_rows(region, len(electrodes.id), where)
            out = [", ".join(dict.fromkeys(str(x) for x in loc[rows[a:b]]))
                   for a, b in zip(np.r_[0, ends[:-1]], ends)]
            return np.array(out, dtype=str) if n else np.zeros(0, dtype=str)
    if "electrode_group" in table.colnames:
        return _group_locations(table["electrode_group"].data[:])
    return None


def _units_columns(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Unit ids, flat spike times (sorted within each unit), spikes per unit and metadata of a
    Units table."""
    where = f"{table.name}/spike_times"
    if "spike_times" not in table.colnames:
        raise ValueError(
            f"{where}: the units table {table.name!r} has no spike_times column (its columns: "
            f"{list(table.colnames)})"
        )
    ids = _as_ids(np.asarray(table.id[:]), None, "unit ids")
    data, ends = _ragged(table, "spike_times")
    if ends.size != ids.size:
        raise ValueError(f"{where}: {ends.size} rows for {ids.size} units")
    flat = np.asarray(data.data[: int(ends[-1]) if ends.size else 0], dtype=np.float64)
    if flat.ndim != 1:
        raise ValueError(f"{where}: expected one time per spike, got values of shape {flat.shape}")
    n_spikes = np.diff(np.r_[0, ends])
    unit = np.repeat(np.arange(ids.size), n_spikes)
    down = np.flatnonzero((np.diff(flat) < 0) & (unit[1:] == unit[:-1]))
    if down.size:
        # the schema does not require order (the NWB Inspector advises it): sort, and say so
        bad = np.unique(unit[down + 1])
        warnings.warn(
            f"{where}: the spike times of {bad.size} unit(s) are not in increasing order "
            f"(ids {ids[bad][:10].tolist()}); they are sorted",
            UserWarning,
            stacklevel=3,
        )
        flat = flat[np.lexsort((flat, unit))]
    meta = _table_columns(table, skip=("spike_times",))
    if "location" not in meta:
        loc = _unit_locations(table)
        if loc is not None:
            meta["location"] = loc
    return ids, flat, n_spikes, meta


def _observed_mask(obs: Any, centers: np.ndarray, bin_size: float, where: str) -> np.ndarray:
    """``(time, neuron)``: True where a bin lies wholly inside one of the unit's intervals."""
    lo, hi = centers - bin_size / 2, centers + bin_size / 2
    eps = 1e-9 * bin_size
    out = np.zeros((centers.size, len(obs)), dtype=bool)
    for j, iv in enumerate(obs):
        iv = np.asarray(iv, dtype=np.float64)
        if iv.size % 2:
            raise ValueError(f"{where}: expected (start, stop) pairs, got shape {iv.shape}")
        for a, b in iv.reshape(-1, 2):
            out[:, j] |= (lo >= a - eps) & (hi <= b + eps)
    return out


def _select_units(ids: np.ndarray, neurons: Any) -> np.ndarray:
    """Positions in `ids` of the units `neurons` (all when None), in the order given."""
    if neurons is None:
        return np.arange(ids.size)
    wanted = _as_ids(np.atleast_1d(np.asarray(neurons)), None, "neurons")
    if wanted.size == 0:
        raise ValueError("neurons is empty: select at least one unit")
    pos = []
    for u in wanted.tolist():
        hit = np.flatnonzero(ids == u)
        if hit.size == 0:
            more = ", ..." if ids.size > 10 else ""
            shown = ", ".join(repr(x) for x in ids[:10].tolist())
            raise ValueError(f"neurons: no unit {u!r} in the units table; its ids are {shown}{more}")
        pos.append(int(hit[0]))
    return np.array(pos, dtype=np.int64)


def _readonly_dict(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in d.items():
        v = np.asarray(v).view()
        v.flags.writeable = False
        out[k] = v
    return out


# -- reading ---------------------------------------------------------------------------------


def read_nwb_units(path: Any, units: str = "units") -> tuple[dict[Any, np.ndarray], dict[str, np.ndarray]]:
    """Spike times and metadata of the Units table of an NWB file.

    Parameters
    ----------
    path : str or path-like
        An NWB file (HDF5).
    units : str, default "units"
        The Units table: the file's ``units``, or the name of a Units table elsewhere in it
        (e.g. in a processing module).

    Returns
    -------
    spike_times : dict
        Unit id (from the table's ``id`` column) to its spike times in seconds (float64,
        increasing), in table order. ``spike_times`` may be stored with an index (the usual
        layout) or, one spike per unit, without; a unit may have no spikes.
    metadata : dict of str to numpy.ndarray
        Every other column, one entry per unit in the same order: scalar columns as plain
        arrays (strings as ``str``), object references such as ``electrode_group`` as the names
        of the objects, ragged columns (``obs_intervals``, ...) as object arrays of arrays,
        2-D columns (``waveform_mean``) as 2-D arrays, compound columns as structured arrays,
        and references to table rows (``electrodes``) as the ids of those rows: an object
        array of arrays when ``units/electrodes`` has an index (several electrodes per unit),
        a plain array when it has none (one electrode per unit). When the table has no
        ``location`` column one is added from the electrodes table (the locations of a unit's
        electrodes, joined by ``", "`` if they differ, or those of their electrode groups) or
        else from the ``electrode_group`` column; without either there is no ``location``.

    Raises
    ------
    FileNotFoundError
        If there is no file at `path`.
    ValueError
        If it is not an NWB file or has no such Units table, or a part of it cannot be read;
        the message starts with the part (``units/spike_times: ...``, ``units/electrodes:
        ...``, ``general/extracellular_ephys/electrodes: ...``).
    ImportError
        If pynwb is not installed.

    Warns
    -----
    UserWarning
        If the spike times of a unit are not in increasing order (the NWB schema allows it):
        they are sorted.

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesneuro.nwb import read_nwb_units, write_example_nwb
    >>> path = write_example_nwb(os.path.join(tempfile.mkdtemp(), "session.nwb"))
    >>> spikes, meta = read_nwb_units(path)
    >>> list(spikes)
    [11, 12, 13]
    >>> sorted(meta)
    ['electrode_group', 'electrodes', 'location', 'quality']
    >>> meta["location"].tolist(), meta["quality"].tolist()
    (['CA1', 'CA1', 'CA3'], ['good', 'good', 'mua'])
    """
    with _open_nwb(path, "read_nwb_units") as nwbfile:
        ids, flat, n_spikes, meta = _units_columns(_units_table(nwbfile, units))
    ends = np.cumsum(n_spikes)
    spikes = {_py(u): flat[a:b] for u, a, b in zip(ids, np.r_[0, ends[:-1]], ends)}
    return spikes, meta


def read_nwb_trials(path: Any, trials: str = "trials") -> dict[str, np.ndarray]:
    """The columns of a trials (or any intervals) table of an NWB file.

    Parameters
    ----------
    path : str or path-like
        An NWB file (HDF5).
    trials : str, default "trials"
        Name of the intervals table (``"trials"``, ``"epochs"``, or a custom one).

    Returns
    -------
    dict of str to numpy.ndarray
        ``"id"`` (the table's row ids), ``"start_time"``, ``"stop_time"`` and every other
        column, one entry per row in table order (ragged columns such as ``tags`` as object
        arrays of arrays).

    Raises
    ------
    FileNotFoundError, ValueError, ImportError
        As :func:`read_nwb_units`; ValueError also when there is no such table.

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesneuro.nwb import read_nwb_trials, write_example_nwb
    >>> path = write_example_nwb(os.path.join(tempfile.mkdtemp(), "session.nwb"))
    >>> table = read_nwb_trials(path)
    >>> table["id"].tolist(), table["condition"].tolist()
    ([0, 1, 2, 3], ['left', 'right', 'left', 'right'])
    >>> table["start_time"].tolist()
    [0.5, 3.0, 5.5, 8.0]
    """
    with _open_nwb(path, "read_nwb_trials") as nwbfile:
        table = _interval_table(nwbfile, trials, "trials")
        out = {"id": np.asarray(table.id[:])}
        out.update(_table_columns(table))
    return out


def _as_intervals(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a table name, an epoch tag or (start, stop) pairs in seconds, "
            f"got {value!r}"
        ) from None
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, 2) of (start, stop) seconds, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    if np.any(arr[:, 1] <= arr[:, 0]):
        k = int(np.flatnonzero(arr[:, 1] <= arr[:, 0])[0])
        raise ValueError(f"{name}: interval {k} [{arr[k, 0]}, {arr[k, 1]}) does not end after it starts")
    return arr


def _epoch_intervals(nwbfile: Any, epochs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(start, stop) pairs sorted by start, with their labels (table ids, or None)."""
    labels = None
    if isinstance(epochs, str):
        tables = dict(nwbfile.intervals or {})
        if epochs in tables:
            table = tables[epochs]
            arr = np.column_stack([_values(table["start_time"].data), _values(table["stop_time"].data)])
            labels = np.asarray(table.id[:])
        else:
            tags = []
            rows = np.zeros(0, dtype=bool)
            if nwbfile.epochs is not None and "tags" in nwbfile.epochs.colnames:
                per_row = _column(nwbfile.epochs["tags"], "epochs/tags")
                tags = sorted({str(t) for row in per_row for t in row})
                rows = np.array([epochs in [str(t) for t in row] for row in per_row], dtype=bool)
            if not rows.any():
                raise ValueError(
                    f"epochs={epochs!r} is neither an intervals table of the NWB file "
                    f"({sorted(tables)}) nor a tag of its epochs ({tags})"
                )
            table = nwbfile.epochs
            arr = np.column_stack([_values(table["start_time"].data), _values(table["stop_time"].data)])
            arr, labels = arr[rows], np.asarray(table.id[:])[rows]
        if arr.shape[0] == 0:
            raise ValueError(f"epochs: the intervals table {epochs!r} has no rows")
        arr = _as_intervals(arr, f"epochs {epochs!r}")
    else:
        arr = _as_intervals(epochs, "epochs")
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    labels = None if labels is None else labels[order]
    if np.any(arr[1:, 0] < arr[:-1, 1]):
        k = int(np.flatnonzero(arr[1:, 0] < arr[:-1, 1])[0]) + 1
        raise ValueError(
            f"epochs overlap: [{arr[k, 0]}, {arr[k, 1]}) starts before [{arr[k - 1, 0]}, "
            f"{arr[k - 1, 1]}) ends"
        )
    return arr, labels


def _recording_span(nwbfile: Any, spike_times: np.ndarray) -> tuple[float, float]:
    """First and last time of anything in the file: spikes, intervals and time series."""
    lo, hi = [], []
    if spike_times.size:
        lo.append(spike_times.min())
        hi.append(spike_times.max())
    for table in (nwbfile.intervals or {}).values():
        if len(table.id):
            lo.append(np.min(_values(table["start_time"].data)))
            hi.append(np.max(_values(table["stop_time"].data)))
    for _, ts in _all_series(nwbfile):
        span = _series_span(ts)
        if span is not None:
            lo.append(span[0])
            hi.append(span[1])
    if not lo:
        return -np.inf, np.inf
    return float(min(lo)), float(max(hi))


def _series_span(ts: Any) -> tuple[float, float] | None:
    """First and last time of a TimeSeries without reading its data (raw ElectricalSeries in
    real files hold billions of samples): the first and last timestamps, or the start time and
    the number of samples over the rate."""
    try:
        n = len(ts.data) if ts.data is not None else 0
    except TypeError:  # data linked to a series elsewhere, or external files
        return None
    if n == 0:
        return None
    if ts.timestamps is not None:
        stamps = ts.timestamps
        first, last = float(stamps[0]), float(stamps[len(stamps) - 1])
        return first, last
    start = float(ts.starting_time or 0.0)
    return start, start + n / float(ts.rate)


def _series_times(ts: Any) -> np.ndarray:
    n = len(ts.data) if ts.data is not None else 0
    if n == 0:
        return np.zeros(0)
    return np.asarray(ts.get_timestamps(), dtype=np.float64)


def _behavior(nwbfile: Any, names: Any, centers: np.ndarray, bin_size: float) -> tuple[np.ndarray, list[str], float]:
    """Behavioural time series bin-averaged onto the bins, with their column names, NaN in bins
    inside a gap of a series' samples longer than its default max_gap (the largest used is
    returned; see :func:`bayesneuro._binning._max_gap`)."""
    from pynwb.behavior import SpatialSeries

    names = [names] if isinstance(names, str) else list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"behavior must be a name or a list of names of TimeSeries, got {names!r}")
    columns, labels, gaps = [], [], []
    for name in names:
        path, ts = _find_series(nwbfile, name)
        values = np.asarray(ts.get_data_in_units(), dtype=np.float64)
        t = _series_times(ts)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise ValueError(
                f"behavior {path!r} has data of shape {values.shape}; only (time,) or "
                "(time, n) series can become covariates"
            )
        if t.size == 0 or values.shape[0] != t.size:
            raise ValueError(f"behavior {path!r} has {values.shape[0]} samples and {t.size} timestamps")
        if np.any(np.diff(t) < 0):
            raise ValueError(f"behavior {path!r}: its timestamps are not sorted")
        try:
            gaps.append(_max_gap(t, bin_size, None))
            columns.append(_bin_average(t, values, centers, bin_size, gaps[-1]))
        except ValueError as err:
            msg = str(err).replace("restrict `ep`", "restrict `epochs`")
            raise ValueError(f"behavior {path!r}: {msg}") from err
        base, k = ts.name, values.shape[1]
        if k == 1:
            labels.append(base)
        elif isinstance(ts, SpatialSeries) and k <= 3:
            labels.extend(f"{base}_{axis}" for axis in "xyz"[:k])
        else:
            labels.extend(f"{base}_{j}" for j in range(k))
    return np.concatenate(columns, axis=1), labels, max(gaps)


def read_nwb(
    path: Any,
    *,
    bin_size: float,
    units: str = "units",
    trials: bool | str = True,
    behavior: str | Sequence[str] | None = None,
    epochs: Any = None,
    neurons: Any = None,
    return_metadata: bool = False,
) -> SpikeData | tuple[SpikeData, NWBInfo]:
    """Bin the spikes of an NWB file into a :class:`~bayesneuro.data.SpikeData`.

    Bins are those of :meth:`SpikeData.from_spike_times
    <bayesneuro.data.SpikeData.from_spike_times>`: bin ``j`` of an interval starting at ``s`` is
    ``[s + j * bin_size, s + (j + 1) * bin_size)``; an incomplete last bin is dropped with its
    spikes.

    Parameters
    ----------
    path : str or path-like
        An NWB file (HDF5).
    bin_size : float
        Bin width in seconds, > 0.
    units : str, default "units"
        The Units table (see :func:`read_nwb_units`, which lists the layouts read). Neuron ids
        are its ``id`` column. With an ``obs_intervals`` column, the bins outside a unit's
        observation intervals are marked in ``info.observed`` (see :class:`NWBInfo`) and a
        warning names the units concerned; their counts there are kept as they are (zeros).
    trials : bool or str, default True
        ``True``: bin only within the rows of the file's ``trials`` table when it has one
        (the whole recording otherwise); a string: within the rows of that intervals table;
        ``False``: ignore trials. Each row becomes a trial of the data, labelled by the table's
        ``id``; rows are taken in order of start time and must not overlap.
    behavior : str or list of str, optional
        TimeSeries or SpatialSeries anywhere in the file (``acquisition``, ``stimulus`` or any
        processing module, whatever its name), by name or by the end of their path
        (``"position"``, ``"Position/position"``, ``"tracking/Position/position"``,
        ``"processing/tracking/Position/position"``); name the module in the path when two
        modules hold series of the same name. Resampled onto the bins as covariates: averaged over each bin when sampled at least as
        finely as the bins (linear interpolation at the centre of a bin without samples),
        linearly interpolated at the bin centres otherwise. Data are scaled by the series'
        ``conversion`` and ``offset``. Columns are named after the series: ``position`` for one
        column, ``position_x``, ``position_y`` (``_z``) for a SpatialSeries, ``name_0``,
        ``name_1``, ... otherwise.
    epochs : str or array_like, optional
        Restrict to intervals: ``(start, stop)`` pairs in seconds, shape ``(n, 2)`` or ``(2,)``;
        the name of an intervals table of the file (all its rows); or a tag of its ``epochs``
        table (the rows carrying it). With trials, only the trials lying wholly inside an epoch
        are kept. Without trials each epoch is binned on its own and, when there are several,
        becomes a trial (labelled by its table id, or ``0, 1, ...`` for pairs).
    neurons : array_like, optional
        Unit ids to keep, in this order (default all units, in table order).
    return_metadata : bool, default False
        Also return an :class:`NWBInfo`.

    Returns
    -------
    SpikeData or (SpikeData, NWBInfo)

    Raises
    ------
    FileNotFoundError
        If there is no file at `path`.
    ValueError
        If `bin_size` is not positive, the file is not an NWB file, a table or series named is
        not in it (the message lists what is, and the processing modules), an epoch reaches
        outside the recording (the span of its spikes, intervals and time series) or contains
        no trial, trials overlap or are shorter than a bin, a behavioural series does not cover
        the bins, the Units table has no rows, or a part of the file cannot be read (the
        message starts with the part, as :func:`read_nwb_units`).
    TypeError
        If `trials` is not a bool or a string.
    ImportError
        If pynwb is not installed.

    Warns
    -----
    UserWarning
        If a unit has no spikes in the binned time, trials straddle the end of an epoch
        (they are dropped), units were not observed in some bins (``obs_intervals``), or a
        unit's spike times are not in increasing order (they are sorted).

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesneuro.nwb import read_nwb, write_example_nwb
    >>> path = write_example_nwb(os.path.join(tempfile.mkdtemp(), "session.nwb"))
    >>> data = read_nwb(path, bin_size=0.1, behavior="position")
    >>> data.neuron_ids.tolist(), data.trials.tolist(), data.n_time
    ([11, 12, 13], [0, 1, 2, 3], 80)
    >>> data.feature_names
    ('position_x', 'position_y')
    >>> data, info = read_nwb(path, bin_size=0.1, trials=False, epochs=[2.0, 4.0],
    ...                       return_metadata=True)
    >>> data.n_time, data.trial_ids is None, info.identifier
    (20, True, 'bayesneuro-example')
    >>> info.unit_metadata["location"].tolist()
    ['CA1', 'CA1', 'CA3']
    """
    bin_size = _check_bin_size(bin_size)
    if not isinstance(trials, (bool, str)):
        raise TypeError(f"trials must be True, False or the name of an intervals table, got {trials!r}")
    abspath = str(Path(path).resolve())
    with _open_nwb(path, "read_nwb") as nwbfile:
        table = _units_table(nwbfile, units)
        ids, flat, n_spikes, meta = _units_columns(table)
        if ids.size == 0:
            raise ValueError(f"{table.name}: the units table has no rows (no units to bin)")
        pos = _select_units(ids, neurons)
        ids = ids[pos]
        spike_unit = np.repeat(np.arange(n_spikes.size), n_spikes)
        keep = np.isin(spike_unit, pos)
        times = flat[keep]
        # unit label of each spike, as the unit id (so that `neurons` fixes the column order)
        unit_of = np.asarray(table.id[:])[spike_unit[keep]]
        meta = {k: v[pos] for k, v in meta.items()}

        trial_table = None
        if trials is True:
            trial_table = nwbfile.trials if nwbfile.trials is not None and len(nwbfile.trials.id) else None
        elif isinstance(trials, str):
            trial_table = _interval_table(nwbfile, trials, "trials")
        trial_meta: dict[str, np.ndarray] = {}
        if trial_table is not None:
            trial_name = trial_table.name
            trial_cols = {"id": np.asarray(trial_table.id[:])}
            trial_cols.update(_table_columns(trial_table))
            if trial_cols["id"].size == 0:
                raise ValueError(f"the trials table {trial_name!r} has no rows")
            order = np.argsort(trial_cols["start_time"], kind="stable")
            trial_cols = {k: v[order] for k, v in trial_cols.items()}
            intervals = np.column_stack([trial_cols["start_time"], trial_cols["stop_time"]]).astype(np.float64)
            labels: np.ndarray | None = trial_cols["id"]

        if epochs is not None:
            ep, ep_labels = _epoch_intervals(nwbfile, epochs)
            lo, hi = _recording_span(nwbfile, flat)
            out = (ep[:, 0] < lo - bin_size) | (ep[:, 1] > hi + bin_size)
            if out.any():
                k = int(np.flatnonzero(out)[0])
                raise ValueError(
                    f"epoch [{ep[k, 0]:g}, {ep[k, 1]:g}) s reaches outside the recording, whose "
                    f"spikes, intervals and time series span [{lo:g}, {hi:g}] s"
                )
            if trial_table is not None:
                eps = 1e-9 * bin_size
                k = np.clip(np.searchsorted(ep[:, 0], intervals[:, 0] + eps, side="right") - 1, 0, None)
                inside = (intervals[:, 0] >= ep[k, 0] - eps) & (intervals[:, 1] <= ep[k, 1] + eps)
                overlaps = np.array([
                    np.any((ep[:, 0] < b) & (ep[:, 1] > a)) for a, b in intervals
                ], dtype=bool)
                straddle = overlaps & ~inside
                if not inside.any():
                    raise ValueError(
                        f"no trial of the table {trial_name!r} lies wholly inside the epochs"
                    )
                if straddle.any():
                    n_out = int(straddle.sum())
                    warnings.warn(
                        f"{n_out} {'trial straddles' if n_out == 1 else 'trials straddle'} the "
                        f"end of an epoch and {'is' if n_out == 1 else 'are'} dropped (ids "
                        f"{trial_cols['id'][straddle][:10].tolist()})",
                        UserWarning,
                        stacklevel=2,
                    )
                intervals, labels = intervals[inside], labels[inside]
                trial_cols = {k_: v[inside] for k_, v in trial_cols.items()}
            else:
                intervals = ep
                labels = None if ep.shape[0] == 1 else (
                    ep_labels if ep_labels is not None else np.arange(ep.shape[0])
                )
        elif trial_table is None:
            intervals, labels = None, None
        if trial_table is not None:
            trial_meta = trial_cols

        try:
            counts, centers, seg, neuron_ids, starts = _bin_spike_times(
                times, unit_of, bin_size, None, None, ids, intervals, tol=1e-9
            )
        except ValueError as err:
            where = f"the trials table {trial_name!r}" if trial_table is not None else "epochs"
            if "trial_intervals" in str(err) or "trial interval" in str(err):
                raise ValueError(f"{where}: {err}") from err
            if "no spikes" in str(err):
                raise ValueError(
                    "the selected units have no spikes, so the time span is unknown; pass "
                    "epochs=[start, stop] to choose it"
                ) from err
            raise
        if behavior is not None:
            S, names, max_gap = _behavior(nwbfile, behavior, centers, bin_size)
        else:
            S, names = None, None
        observed = None
        if "obs_intervals" in meta:
            where = f"{table.name}/obs_intervals"
            observed = _observed_mask(meta["obs_intervals"], centers, bin_size, where)
            missing = (~observed).sum(axis=0)
            if missing.any():
                partial = np.flatnonzero(missing)
                warnings.warn(
                    f"{where}: units {neuron_ids[partial][:10].tolist()} were not observed in "
                    f"{missing[partial][:10].tolist()} of the {centers.size} bins: their counts "
                    "there are zeros (or partial counts), not observed silence. "
                    "read_nwb(..., return_metadata=True) gives the mask as info.observed; "
                    "epochs= or neurons= keep only observed time or units",
                    UserWarning,
                    stacklevel=2,
                )

        info = None
        if return_metadata:
            info = NWBInfo(
                identifier=str(nwbfile.identifier),
                session_description=str(nwbfile.session_description),
                session_start_time=_iso(nwbfile.session_start_time),
                units_object_id=str(table.object_id),
                unit_metadata=_readonly_dict(meta),
                path=abspath,
                trial_metadata=_readonly_dict(trial_meta),
                observed=None if observed is None else _readonly_dict({"o": observed})["o"],
            )

    data = SpikeData(
        counts,
        bin_size=bin_size,
        t_start=float(starts[0]),
        bin_centers=centers,
        neuron_ids=neuron_ids,
        trial_ids=None if labels is None else np.asarray(labels)[seg],
    )
    if S is not None:  # bins in a gap of the behaviour (lost tracking) are dropped, with a warning
        data, kept = _drop_gap_bins(data, S, names, max_gap, "read_nwb behavior", stacklevel=3)
        if info is not None and info.observed is not None and not kept.all():
            info = dataclasses.replace(info, observed=_readonly_dict({"o": np.asarray(info.observed)[kept]})["o"])
    # stacklevel: _warn_silent <- read_nwb <- the caller
    data._warn_silent(stacklevel=3)
    return (data, info) if return_metadata else data


def _iso(when: Any) -> str:
    return when.isoformat() if hasattr(when, "isoformat") else str(when)


# -- writing results -------------------------------------------------------------------------


def _as_idata(idata: Any):
    import arviz as az

    if hasattr(idata, "to_inference_data") and not isinstance(idata, az.InferenceData):
        idata = idata.to_inference_data()
    if not isinstance(idata, az.InferenceData):
        raise TypeError(
            f"idata must be an arviz.InferenceData (or a FitResult), got {type(idata).__name__}"
        )
    return idata


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
    return name


def _sidecar_path(nwb_path: Path, name: str) -> Path:
    return nwb_path.with_name(f"{nwb_path.stem}.{name}.nc")


def _nwb_link(nwb_path: Path, units: str) -> dict[str, str]:
    from . import __version__

    with _open_nwb(nwb_path, "write_nwb_results") as nwbfile:
        try:
            units_id = str(_units_table(nwbfile, units).object_id)
        except ValueError:
            units_id = ""
        return {
            "nwb_identifier": str(nwbfile.identifier),
            "nwb_file": nwb_path.name,
            "nwb_units_object_id": units_id,
            "bayesneuro_version": __version__,
        }


def write_nwb_results(
    path: Any,
    idata: Any,
    *,
    name: str = "bayesneuro",
    description: str | None = None,
    mode: str = "sidecar",
    overwrite: bool = False,
    units: str = "units",
    prob: float = PROB,
    log_likelihood: bool = False,
    dtype: str | None = None,
) -> Path:
    """Store fit results with the NWB file they came from.

    Parameters
    ----------
    path : str or path-like
        The NWB file the data were read from.
    idata : arviz.InferenceData or FitResult
        The results (a :class:`~bayesneuro.infer.FitResult` is converted with
        ``to_inference_data()``).
    name : str, default "bayesneuro"
        Side-car suffix or processing-module name.
    description : str, optional
        Description of the processing module (``mode="processing"``); default names the
        bayesneuro version.
    mode : {"sidecar", "processing"}
        ``"sidecar"``: write the whole InferenceData to ``<stem>.<name>.nc`` next to the NWB
        file with :func:`bayesneuro.io.save` (atomic), every group carrying the attributes
        ``nwb_identifier``, ``nwb_file`` (the NWB file's name), ``nwb_units_object_id`` (empty
        if the file has no such Units table) and ``bayesneuro_version``. The NWB file is not
        changed. Read it back with :func:`read_nwb_results`. The pointwise
        ``log_likelihood`` group is left out unless `log_likelihood` (see below).
        ``"processing"``: add a processing module `name` to the NWB file holding a
        DynamicTable ``posterior_summary`` with one row per element of every posterior
        variable without a ``time`` dim (columns ``variable``, ``index`` (the element's
        coordinates as ArviZ labels them, ``""`` for scalars), ``mean``, ``sd`` and the HDI
        bounds, e.g. ``hdi_5%``, ``hdi_95%`` for the default ``prob=0.9``, as in ``az.summary(..., kind="stats")``), and for
        every posterior or posterior-predictive variable with a ``time`` dim a TimeSeries
        ``<var>_mean`` (and ``<var>_sd`` when there is more than one draw) over chains and
        draws, ``time`` first, with timestamps from the ``time`` coordinate; its ``comments``
        hold the dims and other coordinates as JSON. A point fit (a ``point_estimate`` group,
        e.g. MAP) gets one column, ``estimate``, in place of ``mean``, ``sd`` and the HDI, and a
        TimeSeries ``<var>_estimate``. The file is rewritten atomically: the new
        version is written to a copy in the same folder, flushed, and renamed over the
        original, so on any error the original is untouched.
    overwrite : bool, default False
        Replace an existing side-car or processing module of that name (the HDF5 space of a
        replaced module is not reclaimed).
    units : str, default "units"
        The Units table whose ``object_id`` the side-car records.
    prob : float, default 0.9
        Probability of the HDI in the summary table.
    log_likelihood : bool, default False
        Side-car only: also store the pointwise ``log_likelihood`` group (needed by
        ``az.loo`` / ``az.compare``). It holds one value per draw and observation, so it is
        usually most of the file: 1000 draws of 20000 time bins are 160 MB in float64, against
        a few MB for the rest of a GLM fit.
    dtype : {None, "float64", "float32"}, optional
        Side-car only: precision of the stored draws (posterior, log-likelihood, posterior
        predictive); None keeps them as they are. ``"float32"`` halves the file.

    Returns
    -------
    pathlib.Path
        The file written: the side-car, or the NWB file.

    Raises
    ------
    FileNotFoundError
        If there is no NWB file at `path`.
    FileExistsError
        If the side-car exists and not `overwrite`.
    ValueError
        If the file is not an NWB file, `mode` or `name` is bad, the processing module exists
        and not `overwrite`, idata has neither posterior nor point estimate, or a ``time`` coordinate does not hold
        times in seconds (floats).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.nwb import read_nwb_results, write_example_nwb, write_nwb_results
    >>> path = write_example_nwb(os.path.join(tempfile.mkdtemp(), "session.nwb"))
    >>> idata = az.from_dict(posterior={"rate": np.full((2, 50, 3), 5.0)},
    ...                      coords={"neuron": [11, 12, 13]}, dims={"rate": ["neuron"]})
    >>> write_nwb_results(path, idata).name
    'session.bayesneuro.nc'
    >>> read_nwb_results(path).posterior.attrs["nwb_identifier"]
    'bayesneuro-example'
    >>> _ = write_nwb_results(path, idata, mode="processing")
    >>> import pynwb
    >>> with pynwb.NWBHDF5IO(str(path), "r") as io:
    ...     table = io.read().processing["bayesneuro"]["posterior_summary"]
    ...     print(table["index"].data[:].tolist(), table["mean"].data[:].tolist())
    ['11', '12', '13'] [5.0, 5.0, 5.0]
    """
    path = Path(path)
    name = _check_name(name)
    if mode not in ("sidecar", "processing"):
        raise ValueError(f"mode must be 'sidecar' or 'processing', got {mode!r}")
    idata = _as_idata(idata)
    if mode == "sidecar":
        from .io import slim

        # checks dtype before anything is read or written
        idata = slim(idata, log_likelihood=bool(log_likelihood), dtype=dtype)
    link = _nwb_link(path, units)
    if mode == "sidecar":
        return _write_sidecar(path, idata, name, link, overwrite)
    if description is None:
        description = f"posterior summaries written by bayesneuro {link['bayesneuro_version']}"
    return _write_processing(path, idata, name, str(description), overwrite, prob)


def _write_sidecar(path: Path, idata: Any, name: str, link: dict, overwrite: bool) -> Path:
    import arviz as az

    from .io import save

    target = _sidecar_path(path, name)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    groups = {}
    for group in idata.groups():
        ds = idata[group].copy()
        ds.attrs = {**ds.attrs, **link}
        groups[group] = ds
    return save(az.InferenceData(warn_on_custom_groups=False, **groups), target)


def _one_draw(idata: Any):
    """A point fit (``point_estimate`` group) as one draw, for the summary code only."""
    import arviz as az

    groups = {"posterior": idata.point_estimate.expand_dims(chain=[0], draw=[0])}
    if "posterior_predictive" in idata.groups():
        pp = idata.posterior_predictive
        groups["posterior_predictive"] = pp if "draw" in pp.dims else pp.expand_dims(chain=[0], draw=[0])
    return az.InferenceData(**groups)


def _summary_rows(idata: Any, prob: float, point: bool = False) -> dict[str, list]:
    import arviz as az

    rows: dict[str, list] = {"variable": [], "index": []}
    stats: dict[str, list] = {}
    for var, da in idata.posterior.data_vars.items():
        if "time" in da.dims:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if point:  # one column, the estimate: no sd or HDI of a point fit
                summary = az.summary(idata, var_names=[var], kind="stats", round_to="none",
                                     stat_funcs={"estimate": np.mean}, extend=False)
            else:
                summary = az.summary(idata, var_names=[var], kind="stats", hdi_prob=prob,
                                     round_to="none")
        for label in summary.index:
            rows["variable"].append(str(var))
            rows["index"].append("" if label == var else str(label)[len(var) + 1 : -1])
        for col in summary.columns:
            stats.setdefault(col, []).extend(summary[col].to_numpy(dtype=np.float64).tolist())
    rows.update(stats)
    return rows


def _time_arrays(idata: Any, point: bool = False) -> list[tuple[str, str, np.ndarray, np.ndarray, str]]:
    """(series name, description, data, timestamps, comments) for every variable with a time dim."""
    out = []
    seen = set()
    for group in ("posterior", "posterior_predictive"):
        if group not in idata.groups():
            continue
        for var, da in idata[group].data_vars.items():
            if "time" not in da.dims or var in seen:
                continue
            seen.add(var)
            t = np.asarray(da["time"].values)
            if t.dtype.kind != "f":
                raise ValueError(
                    f"the 'time' coordinate of {group} variable {var!r} holds {t.dtype} values, "
                    "not times in seconds; fit with coords=data.coords so that it holds the bin "
                    "centres"
                )
            if np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
                raise ValueError(f"the 'time' coordinate of {var!r} is not strictly increasing")
            sample = [d for d in ("chain", "draw") if d in da.dims]
            rest = [d for d in da.dims if d not in sample and d != "time"]
            da = da.transpose(*sample, "time", *rest)
            values = np.asarray(da.values, dtype=np.float64)
            n_draws = int(np.prod([da.sizes[d] for d in sample])) if sample else 1
            flat = values.reshape((n_draws,) + values.shape[len(sample):])
            meta = {
                "dims": ["time", *rest],
                "coords": {d: np.asarray(da[d].values).tolist() for d in rest if d in da.coords},
                "group": "point_estimate" if point and group == "posterior" else group,
            }
            comments = json.dumps(meta, default=str)
            if point and group == "posterior":
                text = f"point estimate of {var!r} (a point fit, no posterior), dims {tuple(meta['dims'])}"
                out.append((f"{var}_estimate", text, flat[0], t, comments))
                continue
            what = "posterior" if group == "posterior" else "posterior predictive"
            out.append((f"{var}_mean", f"{what} mean of {var!r}, dims {tuple(meta['dims'])}",
                        flat.mean(axis=0), t, comments))
            if n_draws > 1:
                out.append((f"{var}_sd", f"{what} sd of {var!r}, dims {tuple(meta['dims'])}",
                            flat.std(axis=0, ddof=1), t, comments))
    return out


def _add_results(module: Any, rows: dict[str, list], series: list, table_description: str) -> None:
    """Fill a processing module with the summary table and the time series."""
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries

    if rows["variable"]:
        described = {"variable": "posterior variable", "index": "coordinates of the element",
                     "estimate": "point estimate (a point fit, no posterior)"}
        columns = [
            VectorData(name=col, description=described.get(col, f"posterior {col}"), data=values)
            for col, values in rows.items()
        ]
        module.add(DynamicTable(name=_SUMMARY_TABLE, description=table_description, columns=columns))
    for series_name, description, data, timestamps, comments in series:
        module.add(TimeSeries(name=series_name, data=data, timestamps=timestamps, unit="n.a.",
                              description=description, comments=comments))


def _write_processing(
    path: Path, idata: Any, name: str, description: str, overwrite: bool, prob: float
) -> Path:
    pynwb = _import_pynwb("write_nwb_results")
    import h5py

    from .diagnostics import is_point_fit

    point = is_point_fit(idata)
    if point:  # a point fit (MAP, EM, ...): its estimates, labelled as such
        method = idata.point_estimate.attrs.get("method", "point fit")
        idata = _one_draw(idata)
    if "posterior" not in idata.groups():
        raise ValueError("idata has no posterior or point_estimate group: there is nothing to summarise")
    with h5py.File(path, "r") as fh:
        exists = "processing" in fh and name in fh["processing"]
    if exists and not overwrite:
        raise ValueError(
            f"the NWB file already has a processing module {name!r}; pass overwrite=True to "
            "replace it, or choose another name"
        )
    rows = _summary_rows(idata, prob, point)
    series = _time_arrays(idata, point)
    table = (f"point estimates (method={method}; a point fit, no posterior)" if point
             else f"posterior summaries (prob={prob})")
    if not rows["variable"] and not series:
        raise ValueError("idata's posterior has no variables to write")
    def write(tmp: str) -> None:
        shutil.copyfile(path, tmp)
        shutil.copymode(path, tmp)
        if exists:
            with h5py.File(tmp, "a") as fh:
                del fh["processing"][name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # namespace-version chatter from hdmf
            with pynwb.NWBHDF5IO(tmp, "a") as io:
                nwbfile = io.read()
                module = nwbfile.create_processing_module(name=name, description=description)
                _add_results(module, rows, series, table)
                io.write(nwbfile)

    atomic_write(path, write)
    return path


def read_nwb_results(path: Any, *, name: str = "bayesneuro", nwb_path: Any = None):
    """Load results saved by :func:`write_nwb_results` in side-car mode.

    Parameters
    ----------
    path : str or path-like
        The side-car (``.nc``), or the NWB file (its side-car ``<stem>.<name>.nc`` is read).
    name : str, default "bayesneuro"
        The side-car's name, when `path` is the NWB file.
    nwb_path : str or path-like, optional
        The NWB file to check a side-car given as `path` against.

    Returns
    -------
    arviz.InferenceData

    Raises
    ------
    FileNotFoundError
        If the side-car or the NWB file does not exist.
    ValueError
        If the side-car's ``nwb_identifier`` differs from the NWB file's identifier, or it has
        none (it was not written by :func:`write_nwb_results`).

    Warns
    -----
    UserWarning
        If the NWB file's Units table is not the one the side-car recorded (``object_id``).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.nwb import read_nwb_results, write_example_nwb, write_nwb_results
    >>> path = write_example_nwb(os.path.join(tempfile.mkdtemp(), "session.nwb"))
    >>> sidecar = write_nwb_results(path, az.from_dict(posterior={"mu": np.zeros((1, 10))}))
    >>> idata = read_nwb_results(sidecar, nwb_path=path)
    >>> idata.posterior.attrs["nwb_file"]
    'session.nwb'
    """
    from .io import load

    path = Path(path)
    if path.suffix == ".nc":
        sidecar, nwb = path, None if nwb_path is None else Path(nwb_path)
    else:
        sidecar, nwb = _sidecar_path(path, _check_name(name)), path
        if not sidecar.is_file() and nwb.is_file():
            raise FileNotFoundError(f"no side-car {sidecar.name} next to {nwb}")
    idata = load(sidecar)
    if nwb is None:
        return idata
    attrs = idata[idata.groups()[0]].attrs
    if "nwb_identifier" not in attrs:
        raise ValueError(
            f"{sidecar} has no nwb_identifier attribute: it was not written by write_nwb_results"
        )
    with _open_nwb(nwb, "read_nwb_results") as nwbfile:
        identifier = str(nwbfile.identifier)
        units_ids = {
            str(t.object_id)
            for t in nwbfile.objects.values()
            if type(t).__name__ == "Units"
        }
    if attrs["nwb_identifier"] != identifier:
        raise ValueError(
            f"{sidecar.name} belongs to the NWB file with identifier "
            f"{attrs['nwb_identifier']!r} ({attrs.get('nwb_file', '?')}), but {nwb.name} has "
            f"identifier {identifier!r}"
        )
    recorded = attrs.get("nwb_units_object_id", "")
    if recorded and recorded not in units_ids:
        warnings.warn(
            f"{nwb.name} has no Units table with the object_id {recorded!r} recorded in "
            f"{sidecar.name}: the units may have changed since the fit",
            UserWarning,
            stacklevel=2,
        )
    return idata


# -- an example file -------------------------------------------------------------------------


def write_example_nwb(path: Any, *, seed: int = 0, identifier: str = "bayesneuro-example") -> Path:
    """Write a small synthetic NWB file, for examples and tutorials.

    Ten seconds of a session: three units (ids 11, 12, 13; ``quality`` good, good, mua) on
    electrodes in CA1, CA1 and CA3 of one electrode group, firing as Poisson processes at 5,
    10 and 20 spikes/s; four 2-s trials starting at 0.5, 3, 5.5 and 8 s with a ``condition``
    column (left, right, left, right); a 2-D ``position`` SpatialSeries at 30 Hz in
    ``processing["behavior"]["Position"]``; and two epochs, ``"rest"`` [0, 5) and ``"run"``
    [5, 10).

    Parameters
    ----------
    path : str or path-like
        Where to write (overwritten).
    seed : int, default 0
        Seed of ``numpy.random.default_rng`` for the spikes.
    identifier : str
        The file's identifier.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesneuro.nwb import read_nwb_trials, write_example_nwb
    >>> path = write_example_nwb(os.path.join(tempfile.mkdtemp(), "session.nwb"))
    >>> read_nwb_trials(path, "epochs")["tags"][1].tolist()
    ['run']
    """
    pynwb = _import_pynwb("write_example_nwb")
    from pynwb.behavior import Position

    rng = np.random.default_rng(seed)
    nwbfile = pynwb.NWBFile(
        session_description="synthetic example session",
        identifier=identifier,
        session_start_time=datetime(2024, 1, 1, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe")
    group = nwbfile.create_electrode_group(
        name="shank0", description="one shank", location="hippocampus", device=device
    )
    for location in ("CA1", "CA1", "CA3"):
        nwbfile.add_electrode(location=location, group=group)
    nwbfile.add_unit_column(name="quality", description="spike-sorting label")
    duration = 10.0
    for k, (unit_id, rate, quality) in enumerate(zip((11, 12, 13), (5.0, 10.0, 20.0),
                                                     ("good", "good", "mua"))):
        n = rng.poisson(rate * duration)
        spikes = np.sort(rng.uniform(0.0, duration, size=n))
        nwbfile.add_unit(spike_times=spikes, electrodes=[k], electrode_group=group,
                         quality=quality, id=unit_id)
    nwbfile.add_trial_column(name="condition", description="cue side")
    for start, condition in zip((0.5, 3.0, 5.5, 8.0), ("left", "right", "left", "right")):
        nwbfile.add_trial(start_time=start, stop_time=start + 2.0, condition=condition)
    nwbfile.add_epoch(start_time=0.0, stop_time=5.0, tags=["rest"])
    nwbfile.add_epoch(start_time=5.0, stop_time=10.0, tags=["run"])
    t = np.arange(int(duration * 30)) / 30.0
    xy = np.column_stack([np.cos(2 * np.pi * t / 5.0), np.sin(2 * np.pi * t / 5.0)])
    behavior = nwbfile.create_processing_module(name="behavior", description="behaviour")
    position = Position(name="Position")
    position.create_spatial_series(name="position", data=xy, rate=30.0, starting_time=0.0,
                                   reference_frame="arena centre", unit="m")
    behavior.add(position)
    path = Path(path)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path
