"""Held-out data: train / test / validation splits of a :class:`~bayesneuro.data.SpikeData`.

:func:`split` (called as :meth:`SpikeData.split <bayesneuro.data.SpikeData.split>`) makes the
three sets, by contiguous blocks of time bins or by whole trials. The validation set comes back
inside a :class:`LockedBox`, which refuses to show its data until :meth:`LockedBox.open` is
called, and counts how often that happened. :class:`Splits` holds the three sets.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from ._validation import _py

if TYPE_CHECKING:
    from .data import SpikeData

__all__ = ["LockedBox", "LockedBoxError", "Splits", "split", "split_epochs"]

_SET_NAMES = ("train", "test", "validation")


def _spike_data_class() -> type[SpikeData]:
    # imported here, not at the top: bayesneuro.data imports this module
    from .data import SpikeData

    return SpikeData


# ----------------------------------------------------------------------------------------------
# splitting
# ----------------------------------------------------------------------------------------------


def split(
    data: SpikeData,
    *,
    by: str,
    fractions: Sequence[float],
    n_blocks: int | None,
    gap: int,
    key: Any,
) -> Splits:
    """Split `data` into train, test and a locked validation set.

    This is the implementation behind :meth:`SpikeData.split
    <bayesneuro.data.SpikeData.split>`, which documents the parameters and gives their
    defaults; here every one must be passed.

    Parameters
    ----------
    data : SpikeData
        The recording to split.
    by, fractions, n_blocks, gap, key
        As in :meth:`SpikeData.split <bayesneuro.data.SpikeData.split>`.

    Returns
    -------
    Splits
        ``(train, test, validation)``; `validation` is a :class:`LockedBox`, or None for two
        fractions.

    Raises
    ------
    ValueError
        For bad `by`, `fractions`, `n_blocks` or `gap`, or when a set would get no bins.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.data import SpikeData
    >>> from bayesneuro.splits import split
    >>> data = SpikeData.from_counts(np.ones((10, 2)), bin_size=0.1)
    >>> sets = split(data, by="time", fractions=(0.6, 0.4), n_blocks=None, gap=1, key=None)
    >>> sets.train.n_time, sets.test.n_time, sets.validation
    (6, 3, None)
    """
    fr = _check_fractions(fractions)
    gap = _check_count(gap, "gap", minimum=0)
    if by == "time":
        pieces = _split_time(data, fr, n_blocks, gap, key)
    elif by == "trials":
        if n_blocks is not None:
            raise ValueError("n_blocks applies to by='time' only")
        if gap:
            raise ValueError("gap applies to by='time' only; whole trials are separate segments")
        pieces = _split_trials(data, fr, key)
    else:
        raise ValueError(f"by must be 'time' or 'trials', got {by!r}")
    validation = LockedBox(pieces[2]) if len(pieces) == 3 else None
    return Splits(pieces[0], pieces[1], validation)


def _split_time(
    data: SpikeData, fr: np.ndarray, n_blocks: int | None, gap: int, key: Any
) -> list[SpikeData]:
    n, n_sets = data.n_time, len(fr)
    if n_blocks is None:
        sizes = _allocate(n, fr)
        if np.any(sizes == 0):
            s = _SET_NAMES[int(np.flatnonzero(sizes == 0)[0])]
            raise ValueError(
                f"the recording ({n} bins) is too short for fractions {fr.tolist()}: "
                f"the {s} set would get zero bins"
            )
        bounds = np.r_[0, np.cumsum(sizes)]
        labels = np.arange(n_sets)
    else:
        n_blocks = _check_count(n_blocks, "n_blocks", minimum=n_sets)
        if n_blocks > n:
            raise ValueError(f"n_blocks={n_blocks} is more than the {n} time bins")
        per_set = _allocate(n_blocks, fr)
        if np.any(per_set == 0):
            s = _SET_NAMES[int(np.flatnonzero(per_set == 0)[0])]
            raise ValueError(
                f"n_blocks={n_blocks} is too few for fractions {fr.tolist()}: the {s} set "
                "would get zero blocks"
            )
        bounds = np.round(np.linspace(0, n, n_blocks + 1)).astype(np.int64)
        if key is None:
            labels = _interleave(per_set)
        else:
            labels = np.repeat(np.arange(n_sets), per_set)[_permutation(key, n_blocks)]
    starts, stops = bounds[:-1].copy(), bounds[1:]
    starts[1:] += gap * (labels[1:] != labels[:-1])
    if np.any(starts >= stops):
        b = int(np.flatnonzero(starts >= stops)[0])
        raise ValueError(
            f"gap={gap} removes all {stops[b] - bounds[b]} bins of block {b}; "
            "use a smaller gap or fewer blocks"
        )
    run_first = np.arange(len(labels))
    for b in range(1, len(labels)):
        if labels[b] == labels[b - 1]:
            run_first[b] = run_first[b - 1]
    out = []
    for s in range(n_sets):
        blocks = np.flatnonzero(labels == s)
        idx = np.concatenate([np.arange(starts[b], stops[b]) for b in blocks])
        run = np.concatenate([np.full(stops[b] - starts[b], run_first[b]) for b in blocks])
        out.append(data._take(idx, trial_ids=_piece_labels(data, idx, run, _SET_NAMES[s])))
    return out


def _piece_labels(data: SpikeData, idx: np.ndarray, run: np.ndarray, name: str) -> np.ndarray | None:
    """Trial labels for a subset made of the runs `run` of bins `idx`."""
    if data.trial_ids is None:
        return run if np.unique(run).size > 1 else None
    tid = data.trial_ids[idx]
    piece_start = np.flatnonzero(np.r_[True, (run[1:] != run[:-1]) | (tid[1:] != tid[:-1])])
    labels = tid[piece_start]
    uniq, cnt = np.unique(labels, return_counts=True)
    if np.any(cnt > 1):
        raise ValueError(
            f"trial {_py(uniq[cnt > 1][0])!r} would be cut into non-adjacent pieces of the {name} "
            "set (it is longer than a block); use by='trials', fewer n_blocks, or data "
            "without trial structure"
        )
    return tid


def _split_trials(data: SpikeData, fr: np.ndarray, key: Any) -> list[SpikeData]:
    if data.trial_ids is None:
        raise ValueError(
            "by='trials' needs trial structure, but the data have no trial_ids; use by='time' "
            "or build the data with trials"
        )
    n = data.n_trial
    per_set = _allocate(n, fr)
    if np.any(per_set == 0):
        s = _SET_NAMES[int(np.flatnonzero(per_set == 0)[0])]
        raise ValueError(
            f"only {n} trials, too few for fractions {fr.tolist()}: the {s} set would get "
            "zero trials"
        )
    order = np.arange(n) if key is None else _permutation(key, n)
    assign = np.empty(n, dtype=np.int64)
    assign[order] = np.repeat(np.arange(len(fr)), per_set)
    return [data._take(np.flatnonzero(assign[data.segment_ids] == s)) for s in range(len(fr))]


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``n`` items by ``fractions`` with the largest-remainder rule."""
    raw = fractions * n
    out = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - out), kind="stable")
    out[order[: n - int(out.sum())]] += 1
    return out


def _interleave(per_set: np.ndarray) -> np.ndarray:
    """Spread the sets' blocks evenly: set ``s`` sits at ``(i + 0.5) * k / n_s``, ties by set."""
    k = int(per_set.sum())
    pos = [((i + 0.5) * k / n, s) for s, n in enumerate(per_set) for i in range(n)]
    return np.array([s for _, s in sorted(pos)], dtype=np.int64)


def _permutation(key: Any, n: int) -> np.ndarray:
    import jax

    if isinstance(key, (bool, np.bool_)):
        raise ValueError(f"key must be a JAX PRNG key (jax.random.key(0)) or an int seed, got {key!r}")
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    try:
        return np.asarray(jax.random.permutation(key, n))
    except Exception as err:
        raise ValueError(
            f"key must be a JAX PRNG key (jax.random.key(0)) or an int seed, got {key!r}"
        ) from err


def _check_fractions(fractions: Any) -> np.ndarray:
    try:
        fr = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be 2 or 3 numbers, got {fractions!r}") from None
    if fr.ndim != 1 or fr.size not in (2, 3):
        raise ValueError(
            f"fractions must be 2 (train, test) or 3 (train, test, validation) numbers, got {fractions!r}"
        )
    if not np.all(np.isfinite(fr)) or np.any(fr <= 0):
        raise ValueError(f"fractions must all be positive, got {fractions!r}")
    if abs(fr.sum() - 1.0) > 1e-8:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {fr.sum():g})")
    return fr


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# locked validation set
# ----------------------------------------------------------------------------------------------


class LockedBoxError(AttributeError):
    """Raised when the data of a :class:`LockedBox` are accessed without :meth:`LockedBox.open`."""


class LockedBox:
    """A validation set that stays closed until it is deliberately opened.

    Only its size (`n_time`, `n_neuron`, `n_trial`) can be read while locked; any other
    :class:`SpikeData` attribute raises :class:`LockedBoxError` (an ``AttributeError``).
    :meth:`open` returns the data and warns each time, counting the opens in `n_opened`.

    Parameters
    ----------
    data : SpikeData
        The validation set.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from bayesneuro.data import SpikeData
    >>> from bayesneuro.splits import LockedBox
    >>> box = LockedBox(SpikeData.from_counts(np.ones((5, 2)), bin_size=0.1))
    >>> box.counts  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bayesneuro.splits.LockedBoxError: the validation set is locked: `.counts` is not available. ...
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     data = box.open()
    >>> box.n_opened, data.n_time
    (1, 5)
    """

    __slots__ = ("_data", "_n_opened")

    def __init__(self, data: SpikeData) -> None:
        if not isinstance(data, _spike_data_class()):
            raise ValueError(f"LockedBox holds a SpikeData, got {type(data).__name__}")
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_n_opened", 0)

    @property
    def n_opened(self) -> int:
        """How many times :meth:`open` has been called."""
        return self._n_opened

    @property
    def n_time(self) -> int:
        """Number of time bins in the locked set."""
        return self._data.n_time

    @property
    def n_neuron(self) -> int:
        """Number of neurons in the locked set."""
        return self._data.n_neuron

    @property
    def n_trial(self) -> int:
        """Number of trials in the locked set."""
        return self._data.n_trial

    def open(self) -> SpikeData:
        """Return the validation data, warning that they have now been looked at.

        Warns
        -----
        UserWarning
            Every time; from the second time on, with the number of opens.
        """
        n = self._n_opened + 1
        object.__setattr__(self, "_n_opened", n)
        if n == 1:
            msg = (
                "opening the locked validation set: it has now been looked at. Use it once, for the "
                "final evaluation, and do not tune anything on it afterwards."
            )
        else:
            msg = (
                f"the validation set has now been opened {n} times; results chosen after looking "
                "at it are no longer a clean held-out estimate."
            )
        warnings.warn(msg, UserWarning, stacklevel=2)
        return self._data

    def _locked(self, name: str) -> LockedBoxError:
        return LockedBoxError(
            f"the validation set is locked: `.{name}` is not available. Call `.open()` "
            f"deliberately, once, for the final evaluation (e.g. `box.open().{name}`)."
        )

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(_spike_data_class(), name):
            raise self._locked(name)
        raise AttributeError(f"'LockedBox' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LockedBox is immutable")

    def __getstate__(self) -> dict[str, Any]:
        return {"_data": self._data, "_n_opened": self._n_opened}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def __len__(self) -> int:
        raise self._locked("__len__")

    def __iter__(self) -> Iterator[Any]:
        raise self._locked("__iter__")

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise self._locked("__array__")

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        d = self._data
        trials = f"{d.n_trial} trial{'s' if d.n_trial != 1 else ''}"
        times = "time" if self._n_opened == 1 else "times"
        return (
            f"LockedBox(validation set, locked: {d.n_time} bins, {trials}, {d.n_neuron} neurons; "
            f"opened {self._n_opened} {times})"
        )


class Splits(NamedTuple):
    """Result of :meth:`SpikeData.split`.

    Attributes
    ----------
    train : SpikeData
        Data to fit on.
    test : SpikeData
        Data to compare and tune models on.
    validation : LockedBox or None
        The final held-out set, locked; None when only two fractions were given.
    """

    train: SpikeData
    test: SpikeData
    validation: LockedBox | None


def split_epochs(data: SpikeData, train: Any, test: Any, validation: Any = None) -> Splits:
    """Train / test / validation sets given as epochs (pynapple ``IntervalSet`` or ``(n, 2)`` arrays).

    Parameters
    ----------
    data : SpikeData
        The recording.
    train, test : IntervalSet or array_like, shape (n, 2)
        Epochs ``[start, end)`` in seconds of each set (each bin goes by its centre).
    validation : IntervalSet or array_like, optional
        Epochs of the locked validation set.

    Returns
    -------
    Splits
        As :meth:`SpikeData.split`; each set is ``data.restrict(epochs)``.

    Raises
    ------
    ValueError
        If two sets share a bin, or a set holds no bin.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.data import SpikeData
    >>> from bayesneuro.splits import split_epochs
    >>> data = SpikeData.from_counts(np.ones((100, 2)), bin_size=0.1)
    >>> sets = split_epochs(data, train=[[0, 6]], test=[[6, 8]], validation=[[8, 10]])
    >>> sets.train.n_time, sets.test.n_time, sets.validation.open().n_time
    (60, 20, 20)
    """
    named = {"train": train, "test": test}
    if validation is not None:
        named["validation"] = validation
    pieces, taken = {}, {}
    for name, ep in named.items():
        try:
            pieces[name] = data.restrict(ep)
        except ValueError as err:
            raise ValueError(f"{name} epochs: {err}") from None
        taken[name] = set(pieces[name].bin_centers.tolist())  # the same floats as data.bin_centers
    names = list(taken)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = taken[a] & taken[b]
            if both:
                raise ValueError(f"{a} and {b} epochs share {len(both)} time bin(s); the sets must not overlap")
    box = LockedBox(pieces["validation"]) if "validation" in pieces else None
    return Splits(pieces["train"], pieces["test"], box)
