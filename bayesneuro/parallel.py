"""Shard a fit across devices with JAX's own sharding: neurons, trials or time bins per device.

A fit's data arrays (counts, design matrices, covariates) are placed on a one-axis
:class:`jax.sharding.Mesh` so that each device holds a slice along one array axis. Everything
downstream is unchanged: :func:`bayesneuro.fit` jit-compiles the same log density, and XLA's
partitioner (GSPMD) runs each device's share of the likelihood where its slice lives and sums
the pieces with one all-reduce per evaluation. Parameters stay replicated. Chains of NUTS go one
per device with ``chain_method="parallel"``.

Multi-host (a cluster of GPU nodes): call :func:`jax.distributed.initialize` on every process
first; :func:`device_mesh` then spans all processes' devices, and :func:`shard` builds each global
array from the slice that every process passes (its *process-local* part, as
:func:`jax.make_array_from_process_local_data`).

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before JAX is imported)
makes four CPU devices, which is how the tests check this module.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

__all__ = ["Sharding", "device_mesh", "shard", "describe", "shard_data"]

AXIS = "shard"


def device_mesh(n_devices: int | None = None, *, devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh (axis name ``"shard"``) over the first `n_devices` devices.

    Parameters
    ----------
    n_devices : int, optional
        How many devices; default all of :func:`jax.devices` (all processes' devices after
        :func:`jax.distributed.initialize`).
    devices : sequence of jax.Device, optional
        The devices themselves (overrides `n_devices`).

    Returns
    -------
    jax.sharding.Mesh

    Raises
    ------
    ValueError
        If more devices are asked for than exist, or fewer than one.

    Examples
    --------
    >>> from bayesneuro.parallel import device_mesh
    >>> device_mesh(1).shape["shard"]
    1
    """
    if devices is None:
        available = jax.devices()
        if n_devices is None:
            n_devices = len(available)
        n_devices = int(n_devices)
        if n_devices < 1:
            raise ValueError(f"n_devices must be at least 1, got {n_devices}")
        if n_devices > len(available):
            raise ValueError(
                f"n_devices={n_devices} but only {len(available)} {available[0].platform} device(s) "
                "are visible (on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N "
                "before importing jax)"
            )
        devices = available[:n_devices]
    devices = list(devices)
    if not devices:
        raise ValueError("devices is empty")
    return Mesh(np.array(devices), (AXIS,))


class Sharding(NamedTuple):
    """Which axis of which data argument is split across devices.

    Pass one to :func:`bayesneuro.fit` as ``shard=``.

    Attributes
    ----------
    axes : dict of str to int
        Data argument name -> the array axis split across devices (e.g. ``{"counts": 1}``
        splits neurons of a ``(time, neuron)`` matrix; ``{"counts": 0, "design": 0}`` splits
        time bins). Arguments not named are replicated on every device.
    mesh : jax.sharding.Mesh, optional
        Default :func:`device_mesh` over all devices.
    uneven : {"shrink", "raise"}
        JAX splits an axis only into equal parts. With ``"shrink"`` (default) an axis of
        length ``n`` goes over the largest number of devices that divides every named axis,
        with a warning; ``"raise"`` raises instead.
    """

    axes: Mapping[str, int]
    mesh: Mesh | None = None
    uneven: str = "shrink"


def _usable_devices(lengths: dict[str, int], n: int, uneven: str) -> int:
    """The largest ``d <= n`` dividing every length; warn or raise if it is below ``n``."""
    d = n
    while d > 1 and any(length % d for length in lengths.values()):
        d -= 1
    if d < n:
        detail = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        msg = (
            f"cannot split evenly over {n} devices ({detail}); JAX needs each sharded axis "
            f"to be a multiple of the device count"
        )
        if uneven == "raise":
            raise ValueError(msg + ": trim or pad the data, or use fewer devices")
        warnings.warn(msg + f"; using {d} device(s)", RuntimeWarning, stacklevel=4)
    return d


def shard_data(data: dict, sharding: Sharding | Mapping[str, int]) -> dict:
    """Place the arrays named by `sharding` across its devices; the rest are left alone.

    Parameters
    ----------
    data : dict
        Model arguments (what :func:`bayesneuro.fit` passes to the model).
    sharding : Sharding or dict of str to int
        Which argument is split along which axis.

    Returns
    -------
    dict
        The same arguments, the named ones as sharded :class:`jax.Array`.

    Raises
    ------
    ValueError
        If a named argument is missing or not an array, an axis is out of range, or
        (with ``uneven="raise"``) an axis cannot be split evenly.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.parallel import describe, shard_data
    >>> placed = shard_data({"counts": np.zeros((8, 4)), "bin_size": 0.01}, {"counts": 1})
    >>> describe(placed["counts"])["n_devices"] >= 1
    True
    """
    if not isinstance(sharding, Sharding):
        if not isinstance(sharding, Mapping):
            raise TypeError(
                f"shard must be a bayesneuro.parallel.Sharding or a dict of argument name -> axis, "
                f"got {type(sharding).__name__}"
            )
        sharding = Sharding(dict(sharding))
    if sharding.uneven not in ("shrink", "raise"):
        raise ValueError(f"uneven must be 'shrink' or 'raise', got {sharding.uneven!r}")
    if not sharding.axes:
        raise ValueError("shard names no data argument to split")
    mesh = sharding.mesh if sharding.mesh is not None else device_mesh()
    lengths, axes = {}, {}
    for name, axis in sharding.axes.items():
        if name not in data:
            raise ValueError(f"shard names {name!r}, which is not a data argument of the fit; "
                             f"the arguments are {sorted(data)}")
        value = data[name]
        if not hasattr(value, "shape") or not hasattr(value, "ndim"):
            raise ValueError(f"shard names {name!r}, which is not an array ({type(value).__name__})")
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise ValueError(f"shard axis of {name!r} must be an int, got {axis!r}")
        axis = int(axis)
        if not -value.ndim <= axis < value.ndim:
            raise ValueError(f"shard axis {axis} is out of range for {name!r} of shape {value.shape}")
        axes[name] = axis % value.ndim
        lengths[f"{name} axis {axes[name]}"] = int(value.shape[axes[name]])
    n = mesh.shape[AXIS] if AXIS in mesh.shape else int(np.prod(list(mesh.shape.values())))
    d = _usable_devices(lengths, n, sharding.uneven)
    if d < n:
        mesh = Mesh(np.asarray(mesh.devices).reshape(-1)[:d], (AXIS,))
    out = dict(data)
    for name, axis in axes.items():
        out[name] = shard(data[name], axis, mesh)
    return out


def shard(array: Any, axis: int, mesh: Mesh | None = None) -> jax.Array:
    """One array split along `axis` over the devices of `mesh`.

    In a multi-process run (after :func:`jax.distributed.initialize`), `array` is this
    process's contiguous part of the global array along `axis` (every process passes one of
    equal size), as in :func:`jax.make_array_from_process_local_data`.

    Parameters
    ----------
    array : array_like
        The data (host or device array).
    axis : int
        The axis to split.
    mesh : jax.sharding.Mesh, optional
        Default :func:`device_mesh` over all devices.

    Returns
    -------
    jax.Array
        A global array whose slices live on the mesh's devices.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.parallel import device_mesh, shard
    >>> x = shard(np.arange(6.0).reshape(3, 2), 0, device_mesh(1))
    >>> x.shape
    (3, 2)
    """
    mesh = device_mesh() if mesh is None else mesh
    arr = array if isinstance(array, jax.Array) else np.asarray(array)
    spec = [None] * arr.ndim
    spec[axis] = AXIS
    target = NamedSharding(mesh, PartitionSpec(*spec))
    if jax.process_count() > 1:
        global_shape = list(arr.shape)
        global_shape[axis] *= jax.process_count()
        return jax.make_array_from_process_local_data(target, np.asarray(arr), tuple(global_shape))
    return jax.device_put(arr, target)


def describe(array: jax.Array) -> dict:
    """Where an array lives: number of devices, the shape of each device's slice, the spec.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.parallel import describe
    >>> describe(np.zeros((2, 3)))["n_devices"]
    1
    """
    if not isinstance(array, jax.Array):
        array = jax.numpy.asarray(array)
    shards = array.addressable_shards
    spec = getattr(array.sharding, "spec", None)
    return {
        "n_devices": len(array.sharding.device_set),
        "shard_shapes": [tuple(s.data.shape) for s in shards],
        "spec": None if spec is None else tuple(spec),
    }
