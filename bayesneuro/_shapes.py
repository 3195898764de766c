"""Shape bucketing and compilation counting: a new recording should not mean a new XLA program.

JAX compiles one program per distinct input shape. A recording of 10,001 bins after one of
10,000, or a trial of 41 bins after one of 40, would otherwise compile everything again. The
estimators pad the axes that vary between recordings (time, trial length, number of trials) to a
few *bucket* sizes and mask the padding out, so that a new recording of similar size reuses the
compiled program.

- :func:`bucket_length` rounds a length up to the next bucket: numbers ``m * 2**k`` with
  ``m`` in ``{4, 5, 6, 7}`` (16, 20, 24, 28, 32, 40, ...), so padding wastes at most 25% and a
  decade of lengths has about 13 buckets.
- :func:`pad_axis` pads an array along one axis to a length, with a value.
- :func:`count_compilations` counts XLA compilations (and their seconds) inside a ``with`` block,
  from :mod:`jax.monitoring` events: the tests use it to check that a second recording of another
  length does not recompile.

Examples
--------
>>> from bayesneuro._shapes import bucket_length
>>> [bucket_length(n) for n in (1, 17, 40, 41, 1000, 10_001)]
[16, 20, 40, 48, 1024, 10240]
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["CompileCount", "bucket_length", "count_compilations", "pad_axis", "unpad_result"]


def bucket_length(n: int, *, minimum: int = 16) -> int:
    """Smallest bucket size >= ``n``: ``m * 2**k`` with ``m`` in {4, 5, 6, 7}, at least ``minimum``.

    Parameters
    ----------
    n : int
        The length to cover (bins, trial length, number of trials). Must be >= 0.
    minimum : int, default 16
        Lengths below it are padded to it (tiny arrays are not worth a program each).

    Returns
    -------
    int
        The bucket size; ``bucket_length(n) / n <= 1.25`` once ``n >= minimum``.

    Examples
    --------
    >>> from bayesneuro._shapes import bucket_length
    >>> bucket_length(100), bucket_length(112), bucket_length(113)
    (112, 112, 128)
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"a length must be >= 0, got {n}")
    n = max(n, int(minimum), 1)
    if n <= 4:
        return n
    k = (n - 1).bit_length() - 3  # 2**(k+2) < n <= 2**(k+3)
    step = 1 << k
    return -(-n // step) * step  # n rounded up to a multiple of step


def pad_axis(x: np.ndarray, length: int, *, axis: int = 0, value: float = 0) -> np.ndarray:
    """Pad ``x`` with ``value`` along ``axis`` to ``length`` (returned as is when already that long).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro._shapes import pad_axis
    >>> pad_axis(np.ones((2, 3)), 4, axis=0).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x = np.asarray(x)
    axis = axis % x.ndim
    n = x.shape[axis]
    if length < n:
        raise ValueError(f"cannot pad an axis of length {n} to the shorter length {length}")
    if length == n:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - n)
    return np.pad(x, widths, constant_values=value)


def unpad_result(result, n: int, keys, *, drop=("mask",), coords: dict | None = None):
    """Describe a fit on padded arrays by the data's own first ``n`` entries.

    Estimators pad their data axis (time bins, ISIs) to :func:`bucket_length` with a mask, so
    that a recording of another length reuses the compiled programs; the fit's result
    (:class:`bayesneuro.infer.FitResult`) should hold the data as given. ``keys``: the
    ``model_kwargs`` sliced to their first ``n`` entries; ``drop``: ``model_kwargs`` (and dims)
    removed; ``coords``: coordinates replaced (e.g. the recording's ``time``). In place; returns
    ``result``.

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from bayesneuro._shapes import unpad_result
    >>> r = SimpleNamespace(model_kwargs={"y": np.arange(8.0), "mask": np.arange(8) < 5, "k": 2},
    ...                     coords={"time": np.arange(8)}, dims={"y": ["time"], "mask": ["time"]})
    >>> r = unpad_result(r, 5, ("y",), coords={"time": np.arange(5) * 0.1})
    >>> r.model_kwargs["y"].shape, sorted(r.model_kwargs), list(r.dims), r.coords["time"].size
    ((5,), ['k', 'y'], ['y'], 5)
    """
    keys, drop = set(keys), set(drop)
    result.model_kwargs = {k: (np.asarray(v)[:n] if k in keys and v is not None else v)
                           for k, v in result.model_kwargs.items() if k not in drop}
    result.dims = {k: v for k, v in result.dims.items() if k not in drop}
    if coords:
        result.coords = {**result.coords, **coords}
    return result


@dataclass
class CompileCount:
    """What :func:`count_compilations` saw: XLA compilations and the seconds spent compiling."""

    compilations: int = 0
    seconds: float = 0.0
    cache_hits: int = 0


_LOCK = threading.Lock()
_ACTIVE: list[CompileCount] = []
_REGISTERED = False


def _on_event(name: str, secs: float, **_kw) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        with _LOCK:
            for c in _ACTIVE:
                c.compilations += 1
                c.seconds += float(secs)
    elif name.startswith("/jax/core/compile/"):  # tracing and lowering time
        with _LOCK:
            for c in _ACTIVE:
                c.seconds += float(secs)


def _on_plain_event(name: str, **_kw) -> None:
    if name == "/jax/compilation_cache/cache_hits":
        with _LOCK:
            for c in _ACTIVE:
                c.cache_hits += 1


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCount]:
    """Count the XLA compilations inside a ``with`` block (``jax.monitoring`` events).

    ``compilations`` counts the programs the backend had to provide: built, or loaded from the
    persistent compilation cache (:func:`bayesneuro.enable_compilation_cache`), which JAX reports
    with the same event; ``cache_hits`` counts the loaded ones, so ``compilations - cache_hits``
    were built. ``seconds`` adds tracing, lowering and compiling time.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro._shapes import count_compilations
    >>> f = jax.jit(lambda x: x * 2.0)
    >>> with count_compilations() as first:
    ...     _ = f(jnp.ones(3))
    >>> with count_compilations() as second:
    ...     _ = f(jnp.ones(3))
    >>> first.compilations >= 1, second.compilations
    (True, 0)
    """
    global _REGISTERED
    import jax

    with _LOCK:
        if not _REGISTERED:
            jax.monitoring.register_event_duration_secs_listener(_on_event)
            jax.monitoring.register_event_listener(_on_plain_event)
            _REGISTERED = True
        count = CompileCount()
        _ACTIVE.append(count)
    try:
        yield count
    finally:
        with _LOCK:
            _ACTIVE.remove(count)
