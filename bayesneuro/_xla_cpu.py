"""LAPACK on XLA's CPU backend, one matrix at a time: no thread-pool deadlock on small machines.

Why
---
jaxlib >= 0.10 runs a *batched* LAPACK call (a Cholesky, triangular solve, LU, eigh, QR or SVD of a
stack of matrices, as ``vmap`` and every batched ``jnp.linalg`` call produce) through
``ParallelBatchMap``: the calling thread splits the batch into tasks for XLA's intra-op thread pool
and *blocks* until they are done. XLA's CPU runtime also runs independent operations of one program
concurrently on that same pool. When as many batched LAPACK calls run at once as the pool has
threads (two on a 2-core machine: a GPFA E-step with two trial lengths, two latents' kernels, a
vmapped Newton solve next to another), every worker blocks waiting for tasks that no free worker
can run: the process hangs for ever with no CPU use (all threads in futex waits, the main thread in
``BlockUntilReady``). ``--xla_cpu_multi_thread_eigen=false`` does not help; a pool of one thread
does, at the price of all intra-op parallelism.

What this module does
---------------------
:func:`install` re-registers the CPU lowering of every LAPACK-backed linear-algebra primitive so
that a batched call is compiled as a loop (``lax.map``) over the batch of *unbatched* calls, each of
which runs inline on the calling thread. Unbatched calls, GPU and TPU lowerings, the maths and the
autodiff and vmap rules are unchanged: only how XLA executes a stack of small factorisations
changes, so results are bitwise equal. The batch is then factorised sequentially; on a 2-core
machine that costs nothing measurable, on a many-core machine it gives up the parallelism across
the batch (the matrices' own BLAS calls stay multi-threaded).

Every bayesneuro module that runs JAX (the subpackages, :mod:`bayesneuro.estimator`,
:mod:`bayesneuro.bases`, ...) imports this module, which calls :func:`install` once, so the lowering
is in place before bayesneuro compiles anything (``import bayesneuro`` alone stays light and loads
no JAX). Set the environment variable ``BAYESNEURO_PARALLEL_LAPACK=1`` before that import to keep jaxlib's parallel batched kernels (safe
on machines with many more cores than concurrent batched calls), or call :func:`uninstall`.
"""

from __future__ import annotations

import math
import os
from typing import Any

__all__ = ["PRIMITIVES", "install", "is_installed", "limit_lapack_threads", "uninstall"]

# primitive name -> rank of each operand's core (non-batch) part
PRIMITIVES: dict[str, tuple[int, ...]] = {
    "cholesky": (2,),
    "triangular_solve": (2, 2),
    "lu": (2,),
    "eigh": (2,),
    "eig": (2,),
    "svd": (2,),
    "geqrf": (2,),
    "geqp3": (2, 1),
    "householder_product": (2, 1),
    "ormqr": (2, 1, 2),
    "schur": (2,),
    "hessenberg": (2,),
    "tridiagonal": (2,),
    "tridiagonal_solve": (1, 1, 1, 2),
}

_ORIGINAL: dict[Any, Any] = {}


def _primitives() -> dict[Any, tuple[int, ...]]:
    from jax._src.lax import linalg

    out = {}
    for name, ranks in PRIMITIVES.items():
        prim = getattr(linalg, f"{name}_p", None)
        if prim is not None:
            out[prim] = ranks
    return out


def _looping_rule(prim: Any, ranks: tuple[int, ...], original: Any):
    from jax import lax
    from jax._src.interpreters import mlir

    def rule(ctx, *operands, **params):
        avals = ctx.avals_in
        if len(avals) != len(ranks) or any(not hasattr(a, "shape") for a in avals):
            return original(ctx, *operands, **params)
        batch = tuple(avals[0].shape[: len(avals[0].shape) - ranks[0]])
        if math.prod(batch) <= 1 or any(
            tuple(a.shape[: len(a.shape) - r]) != batch for a, r in zip(avals, ranks)
        ):
            return original(ctx, *operands, **params)
        nb = len(batch)

        def looped(*xs):
            flat = tuple(x.reshape((-1,) + x.shape[nb:]) for x in xs)
            out = lax.map(lambda a: prim.bind(*a, **params), flat)
            if prim.multiple_results:
                return [o.reshape(batch + o.shape[1:]) for o in out]
            return out.reshape(batch + out.shape[1:])

        return mlir.lower_fun(looped, multiple_results=prim.multiple_results)(ctx, *operands)

    return rule


def install() -> bool:
    """Compile batched LAPACK calls on CPU as loops of unbatched calls (see the module docstring).

    Returns
    -------
    bool
        True when the lowerings are (now) installed; False when this JAX version lacks the internals
        used (nothing is changed then).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro import _xla_cpu
    >>> _xla_cpu.install()
    True
    >>> a = jnp.eye(3) * jnp.arange(1.0, 5.0)[:, None, None]   # 4 matrices
    >>> hlo = jax.jit(jnp.linalg.cholesky).lower(a).compile().as_text()
    >>> "while" in hlo   # one unbatched potrf per loop step
    True
    """
    if _ORIGINAL:
        return True
    try:
        from jax._src.interpreters import mlir

        table = mlir._platform_specific_lowerings["cpu"]
        prims = _primitives()
    except Exception:  # noqa: BLE001  (any change of JAX internals: keep jaxlib's lowering)
        return False
    for prim, ranks in prims.items():
        entry = table.get(prim)
        if entry is None:
            continue
        _ORIGINAL[prim] = entry
        mlir.register_lowering(prim, _looping_rule(prim, ranks, entry.rule), platform="cpu",
                               inline=entry.inline)
    return bool(_ORIGINAL)


def uninstall() -> None:
    """Restore jaxlib's own CPU lowerings (parallel batched LAPACK calls). Programs already compiled
    keep the lowering they were compiled with."""
    from jax._src.interpreters import mlir

    table = mlir._platform_specific_lowerings["cpu"]
    for prim, entry in _ORIGINAL.items():
        table[prim] = entry
    _ORIGINAL.clear()


def is_installed() -> bool:
    """Whether batched LAPACK calls on CPU are compiled as loops (see :func:`install`)."""
    return bool(_ORIGINAL)


def _scipy_blas_controllers():
    """threadpoolctl controllers of the BLAS/LAPACK library scipy links (the one jaxlib's LAPACK
    kernels call); numpy's own BLAS is a different library and is left alone."""
    import scipy
    import scipy.linalg.cython_lapack
    from threadpoolctl import ThreadpoolController

    root = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    here = (os.path.join(root, "scipy"), os.path.join(root, "scipy.libs"))
    return [c for c in ThreadpoolController().lib_controllers
            if c.user_api == "blas" and os.path.abspath(c.filepath).startswith(here)]


def limit_lapack_threads(n_threads: int = 1) -> list[int]:
    """Run the BLAS threads of jaxlib's LAPACK kernels (scipy's OpenBLAS) with ``n_threads``.

    jaxlib calls LAPACK from inside XLA's CPU thread pool, which already has one thread per core;
    OpenBLAS then starts its own threads per call, busy-waiting on the same cores. On a 2-core
    machine that made 20 GPFA EM steps on a real recording 1.5x slower when the machine was quiet
    (1.3-1.7 s vs 0.9 s) and 5x slower under load (14.0 s vs 2.8 s), with timings varying 10x
    between identical calls (``bench/results/cpu_lapack.md``). One thread
    per LAPACK call is what XLA's pool expects. This changes only scipy's BLAS library (scipy.linalg
    calls get the same limit), not numpy's.

    Returns
    -------
    list of int
        The thread counts before the change, one per library changed (empty when threadpoolctl is
        not installed or scipy's BLAS is not found).

    Examples
    --------
    >>> from bayesneuro._xla_cpu import limit_lapack_threads
    >>> before = limit_lapack_threads(1)
    >>> isinstance(before, list)
    True
    """
    try:
        controllers = _scipy_blas_controllers()
    except ImportError:
        return []
    before = [c.num_threads for c in controllers]
    for c in controllers:
        c.set_num_threads(int(n_threads))
    return before


def install_default() -> bool:
    """:func:`install` unless ``BAYESNEURO_PARALLEL_LAPACK`` is set to a true value; and
    :func:`limit_lapack_threads` to ``BAYESNEURO_LAPACK_THREADS`` (default 1; 0 leaves the BLAS
    library's own setting)."""
    n = os.environ.get("BAYESNEURO_LAPACK_THREADS", "1").strip()
    if n not in ("", "0"):
        limit_lapack_threads(int(n))
    if os.environ.get("BAYESNEURO_PARALLEL_LAPACK", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return install()


install_default()
