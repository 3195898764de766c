"""bayesneuro's ``jit``: :func:`jax.jit` whose outermost programs compile faster on a CPU.

Why
---
A first fit in a notebook waits for XLA to compile, and on a CPU most of that wait is code
generation: XLA's CPU backend turns each fused kernel of the optimised program into LLVM IR
through its MLIR *fusion emitters*, then into machine code, about 10 ms per small kernel.
bayesneuro's programs (an EM step with its Kalman smoother, an L-BFGS chunk with its line search,
a Newton loop) hold one to two hundred small kernels. XLA's older *elemental* emitters, chosen per
compilation with the debug option ``xla_cpu_use_fusion_emitters=False``, generate code for the
same optimised program (same fusions, same maths; the test suite passes unchanged) about 1.5-2x
faster: the LDS EM program in 0.87 s instead of 1.97 s, an L-BFGS chunk in 0.74 s instead of 1.31 s,
and first fits of most estimators come 1.1-1.5x sooner (``bench/compile.py --ab``). Some kernels
run slower: second calls took 0.73-1.38x their time with XLA's defaults
(``bench/compile_runtime_ab.py``; slowest, the GLM's L-BFGS on a design matrix), milliseconds to tens
of milliseconds per fit against the 0.3-2.5 s of compilation saved.

What it does
------------
:func:`jit` takes the arguments of :func:`jax.jit` and returns a callable that behaves like the
jitted function. Called outside any JAX transformation, with JAX's default backend the CPU and
at most :data:`FAST_COMPILE_MAX_BYTES` of array arguments, it runs a twin
``jax.jit(fun, ..., compiler_options=CPU_COMPILER_OPTIONS)``. Otherwise it runs the plain
``jax.jit(fun, ...)``: inside another ``jit``, ``vmap`` or ``grad`` (where JAX accepts compiler
options only on the outermost program, whose options then apply), on an accelerator, on larger
arguments (where run time outweighs compilation), or once the options are switched off. Which
twin runs depends only on the arguments' shapes, so a given call always compiles the same way.
Only bayesneuro's own programs are affected: a user's ``jax.jit`` functions, and the programs
NumPyro compiles for NUTS, keep XLA's defaults.

The options are checked once, on the first call, by compiling a one-line program with them; if
this jaxlib does not know them (a future XLA may drop the legacy emitters), bayesneuro warns once
and compiles with the defaults. Set the environment variable ``BAYESNEURO_FAST_CPU_COMPILE=0``
before the first fit, or call :func:`set_fast_cpu_compile` (``False``), to compile every program
with XLA's defaults.

Examples
--------
>>> import jax.numpy as jnp
>>> from bayesneuro._jit import jit
>>> double = jit(lambda x: 2.0 * x)
>>> float(double(jnp.float32(1.5)))
3.0
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["CPU_COMPILER_OPTIONS", "FAST_COMPILE_MAX_BYTES", "fast_cpu_compile", "jit", "set_fast_cpu_compile"]

#: XLA debug options given to the outermost compilation of every bayesneuro program on a CPU.
CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}

#: Calls whose array arguments hold more bytes than this compile with XLA's defaults (64 MiB).
FAST_COMPILE_MAX_BYTES: int = 64 * 2**20

_lock = threading.Lock()
_state: dict[str, Any] = {"wanted": None, "checked": None}


def _env_wanted() -> bool:
    value = os.environ.get("BAYESNEURO_FAST_CPU_COMPILE", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def set_fast_cpu_compile(enabled: bool) -> None:
    """Switch the faster CPU code generation of bayesneuro's programs on or off.

    It applies to programs compiled from now on; those already compiled keep the options they
    were compiled with until :func:`jax.clear_caches`.

    Parameters
    ----------
    enabled : bool
        ``True`` (the default, unless ``BAYESNEURO_FAST_CPU_COMPILE=0`` is set) compiles
        bayesneuro's outermost programs with :data:`CPU_COMPILER_OPTIONS` on a CPU; ``False``
        with XLA's defaults.

    Examples
    --------
    >>> from bayesneuro._jit import fast_cpu_compile, set_fast_cpu_compile
    >>> before = fast_cpu_compile()
    >>> set_fast_cpu_compile(False); fast_cpu_compile()
    False
    >>> set_fast_cpu_compile(before)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    _state["wanted"] = enabled


def fast_cpu_compile() -> bool:
    """Whether bayesneuro's next top-level CPU compilations use :data:`CPU_COMPILER_OPTIONS`.

    ``False`` when switched off (:func:`set_fast_cpu_compile`, ``BAYESNEURO_FAST_CPU_COMPILE=0``),
    when JAX's default backend is not the CPU, or when this jaxlib rejected the options.
    """
    wanted = _state["wanted"]
    if wanted is None:
        wanted = _state["wanted"] = _env_wanted()
    return bool(wanted) and _options_work()


def _options_work() -> bool:
    checked = _state["checked"]
    if checked is not None:
        return checked
    with _lock:
        if _state["checked"] is None:
            _state["checked"] = _check_options()
    return _state["checked"]


def _check_options() -> bool:
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(jnp.zeros(2)).block_until_ready()
    except Exception as err:  # noqa: BLE001  (an unknown option raises at compile time; the class is jaxlib's)
        warnings.warn(
            f"bayesneuro: this jaxlib rejects the XLA options {CPU_COMPILER_OPTIONS} "
            f"({type(err).__name__}: {str(err)[:200]}); programs compile with XLA's defaults, which "
            "is correct but slower to compile on a CPU",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    return True


def _outermost() -> bool:
    """True outside every JAX transformation (no jit, vmap or grad trace is active)."""
    from jax._src import core

    return core.trace_state_clean()


def _small(args, kwargs) -> bool:
    """True when the array arguments hold at most :data:`FAST_COMPILE_MAX_BYTES`."""
    from jax.tree_util import tree_leaves

    total = 0
    for leaf in tree_leaves((args, kwargs)):
        total += getattr(leaf, "nbytes", 0)
        if total > FAST_COMPILE_MAX_BYTES:
            return False
    return True


class _Jitted:
    """A jitted function with a twin compiled under :data:`CPU_COMPILER_OPTIONS` (see :func:`jit`)."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        import jax

        self._plain = jax.jit(fun, **kwargs)
        self._kwargs = kwargs
        self._fun = fun
        self._fast = None
        functools.update_wrapper(self, fun)

    def _pick(self, args, kwargs):
        if not _outermost() or not fast_cpu_compile() or not _small(args, kwargs):
            return self._plain
        if self._fast is None:
            import jax

            self._fast = jax.jit(self._fun, compiler_options=CPU_COMPILER_OPTIONS, **self._kwargs)
        return self._fast

    def __call__(self, *args, **kwargs):
        return self._pick(args, kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        """As ``jax.jit(fun).lower``, with the options :func:`jit` would compile under."""
        return self._pick(args, kwargs).lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._pick(args, kwargs).trace(*args, **kwargs)

    def clear_cache(self) -> None:
        self._plain.clear_cache()
        if self._fast is not None:
            self._fast.clear_cache()

    def __getattr__(self, name: str):  # eval_shape, ...: as the plain jitted function
        if name in ("_plain", "_fast", "_fun", "_kwargs"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._plain, name)

    def __get__(self, obj, objtype=None):  # usable as a method, as jax.jit functions are
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"bayesneuro._jit.jit({getattr(self._fun, '__qualname__', self._fun)!r})"


def jit(fun: Callable | None = None, /, **kwargs):
    """:func:`jax.jit`, compiled with :data:`CPU_COMPILER_OPTIONS` when called as the outermost program on a CPU.

    Parameters
    ----------
    fun : callable, optional
        The function to compile. Without it, a decorator (``@jit(static_argnames=...)``), as
        ``jax.jit``.
    **kwargs
        Any keyword argument of :func:`jax.jit` (``static_argnames``, ``donate_argnums``, ...).
        Passing ``compiler_options`` yourself compiles with those, always.

    Returns
    -------
    callable
        Called like ``jax.jit(fun, **kwargs)``, with its ``lower``, ``trace``, ``eval_shape`` and
        ``clear_cache``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro._jit import jit
    >>> @jit(static_argnames="power")
    ... def f(x, power):
    ...     return x**power
    >>> float(f(jnp.float32(3.0), power=2)), float(jax.jit(lambda x: f(x, power=3))(2.0))
    (9.0, 8.0)
    """
    if "compiler_options" in kwargs:
        import jax

        return jax.jit(fun, **kwargs) if fun is not None else jax.jit(**kwargs)
    if fun is None:
        return lambda f: _Jitted(f, kwargs)
    return _Jitted(fun, kwargs)
