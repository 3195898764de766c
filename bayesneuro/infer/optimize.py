"""Deterministic optimisation: an L-BFGS driver with a convergence check.

The driver minimises a scalar function of a flat parameter vector with
``optax.lbfgs`` (zoom line search). Iterations run inside a jitted
``lax.while_loop`` in chunks, so a Python progress bar can report between
chunks without a host callback in the inner loop.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from tqdm.auto import tqdm

__all__ = ["OptResult", "minimize"]


class OptResult(NamedTuple):
    """Outcome of :func:`minimize`.

    Attributes
    ----------
    x : Array
        The minimiser found, shape ``(n_param,)``.
    value : float
        Objective at ``x``.
    grad_norm : float
        Infinity norm of the gradient at ``x``.
    n_iter : int
        Number of L-BFGS iterations taken.
    converged : bool
        Whether a convergence criterion was met before ``max_iter``.
    message : str
        Which criterion stopped the run.
    """

    x: jax.Array
    value: float
    grad_norm: float
    n_iter: int
    converged: bool
    message: str


@functools.lru_cache(maxsize=64)
def _chunk_runner(fun: Callable, memory_size: int, gtol: float, ftol: float):
    """A jitted run of up to ``n_left`` L-BFGS iterations of ``fun(x, *args)``.

    Cached per objective function, so repeated fits of the same model and data
    shapes (cross-validation, bootstraps, SBC) compile once.
    """
    opt = optax.lbfgs(memory_size=memory_size)

    @jax.jit
    def run(x, state, prev, n_left, args):
        f = lambda v: fun(v, *args)  # noqa: E731
        vg = optax.value_and_grad_from_state(f)

        def body(carry):
            x, state, prev, i, _, _ = carry
            value, grad = vg(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            x = optax.apply_updates(x, updates)
            new_value = otu.tree_get(state, "value")
            gnorm = jnp.max(jnp.abs(otu.tree_get(state, "grad")))
            g_ok = gnorm <= gtol
            f_ok = jnp.abs(prev - new_value) <= ftol * jnp.maximum(1.0, jnp.abs(new_value))
            bad = ~jnp.isfinite(new_value)
            code = jnp.where(bad, 3, jnp.where(g_ok, 1, jnp.where(f_ok, 2, 0)))
            return x, state, new_value, i + 1, code, gnorm

        def cond(c):
            return (c[3] < n_left) & (c[4] == 0)

        init = (x, state, prev, jnp.asarray(0), jnp.asarray(0), jnp.asarray(jnp.inf, x.dtype))
        return jax.lax.while_loop(cond, body, init)

    return opt, run


@functools.lru_cache(maxsize=64)
def _value_and_grad(fun: Callable):
    return jax.jit(jax.value_and_grad(fun))


def minimize(
    fun: Callable[..., jax.Array],
    x0: jax.Array,
    *,
    args: tuple = (),
    max_iter: int = 2000,
    gtol: float = 1e-6,
    ftol: float | None = None,
    memory_size: int = 20,
    progress: bool = True,
    desc: str = "L-BFGS",
    chunk: int = 25,
) -> OptResult:
    r"""Minimise ``fun(x, *args)`` over ``x`` with L-BFGS until the gradient or the objective stalls.

    Stops when :math:`\|\nabla f\|_\infty \le \mathrm{gtol}` (converged)
    or when one iteration changes :math:`f` by less than
    :math:`\mathrm{ftol}\,\max(1, |f|)` (converged: no further progress possible
    at this precision), or after ``max_iter`` iterations (not converged).

    Parameters
    ----------
    fun : callable
        Scalar objective ``fun(x, *args)`` of a flat array ``x``. Compiled code is
        cached per function object: pass data through ``args`` and reuse ``fun``
        to refit without recompiling.
    x0 : Array
        Starting point, shape ``(n_param,)``.
    args : tuple
        Extra arguments of ``fun`` (arrays; traced, not static).
    max_iter : int
        Iteration cap.
    gtol : float
        Absolute tolerance on the largest gradient component. When rounding keeps
        the gradient above it (float32, huge objectives), the ``ftol`` stall test
        ends the run instead.
    ftol : float, optional
        Relative objective-change tolerance; defaults to 10 machine epsilons of
        ``x0``'s dtype.
    memory_size : int
        L-BFGS history length.
    progress : bool
        Show a tqdm bar.
    desc : str
        Label for the progress bar.
    chunk : int
        Iterations per jitted chunk between progress updates.

    Returns
    -------
    OptResult

    Raises
    ------
    FloatingPointError
        If the objective or its gradient is not finite at ``x0``, or becomes non-finite.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.infer.optimize import minimize
    >>> res = minimize(lambda x, c: jnp.sum((x - c) ** 2), jnp.zeros(2), args=(3.0,), progress=False)
    >>> bool(jnp.allclose(res.x, 3.0, atol=1e-4))
    True
    """
    x0 = jnp.asarray(x0)
    if ftol is None:
        ftol = 10.0 * float(jnp.finfo(x0.dtype).eps)
    value0, grad0 = _value_and_grad(fun)(x0, *args)
    if not (np.isfinite(float(value0)) and bool(jnp.all(jnp.isfinite(grad0)))):
        raise FloatingPointError(
            f"{desc}: the objective or its gradient is not finite at the starting point "
            f"(objective={float(value0)}). Check the data for extreme values and the priors "
            "for impossible settings, or pass a different init."
        )
    opt, run_chunk = _chunk_runner(fun, memory_size, float(gtol), float(ftol))
    # strong types: optax's initial state holds weakly typed scalars, which would make the
    # jitted chunk compile a second time once the state comes back from it
    x, state = x0, jax.tree.map(lambda v: jnp.asarray(v, dtype=jnp.result_type(v)), opt.init(x0))
    prev = jnp.asarray(value0, x0.dtype)
    n_iter, code, gnorm = 0, 0, float(jnp.max(jnp.abs(grad0)))
    bar = tqdm(total=max_iter, desc=desc, disable=not progress, leave=False)
    try:
        while n_iter < max_iter and code == 0:
            n_left = min(chunk, max_iter - n_iter)
            x, state, prev, k, code, gnorm = run_chunk(x, state, prev, jnp.asarray(n_left), args)
            k, code, gnorm = int(k), int(code), float(gnorm)
            n_iter += k
            bar.update(k)
            bar.set_postfix(objective=f"{float(prev):.6g}", grad=f"{gnorm:.2e}")
    finally:
        bar.close()
    messages = {
        0: f"reached max_iter={max_iter} before converging",
        1: "gradient norm below tolerance",
        2: "objective change below tolerance",
        3: "objective became non-finite",
    }
    if code == 3:
        raise FloatingPointError(
            f"{desc}: the objective became non-finite after {n_iter} iterations; the model "
            "is probably overflowing (e.g. an exp link with huge rates). Rescale covariates "
            "or use stronger priors."
        )
    return OptResult(x, float(prev), gnorm, n_iter, code in (1, 2), messages[code])
