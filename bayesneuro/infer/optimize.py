"""Deterministic optimisation: an L-BFGS driver with a convergence check.

The driver minimises a scalar function of a flat parameter vector with
``optax.lbfgs`` (zoom line search). Iterations run inside a jitted
``lax.while_loop`` in chunks, so a Python progress bar can report between
chunks without a host callback in the inner loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from .._progress import finish, progress_bar
from ._model import to_device

__all__ = ["OptResult", "minimize", "minimize_proximal"]


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
def _chunk_runner(fun: Callable, memory_size: int, tol: float, ftol: float):
    """A jitted run of up to ``n_left`` L-BFGS iterations of ``fun(x, *args)``.

    Cached per objective function, so repeated fits of the same model and data
    shapes (cross-validation, bootstraps, SBC) compile once.
    """
    opt = optax.lbfgs(memory_size=memory_size)

    @jax.jit
    def run(x, state, prev, n_left, first, args):
        f = lambda v: fun(v, *args)
        vg = optax.value_and_grad_from_state(f)
        # The first chunk also evaluates the start (objective, gradient, optimiser state) in this
        # same program, so a fit compiles one program rather than one per step.
        v0, g0 = jax.lax.cond(first, lambda: jax.value_and_grad(f)(x), lambda: (prev, jnp.zeros_like(x)))
        state = jax.tree.map(lambda a, b: jnp.where(first, a, b).astype(b.dtype), opt.init(x), state)
        prev = jnp.where(first, v0, prev)
        bad0 = first & ~(jnp.isfinite(v0) & jnp.all(jnp.isfinite(g0)))
        gnorm0 = jnp.where(first, jnp.max(jnp.abs(g0)), jnp.inf).astype(x.dtype)

        def body(carry):
            x, state, prev, i, _, _ = carry
            value, grad = vg(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            x = optax.apply_updates(x, updates)
            new_value = otu.tree_get(state, "value")
            gnorm = jnp.max(jnp.abs(otu.tree_get(state, "grad")))
            g_ok = gnorm <= tol
            f_ok = jnp.abs(prev - new_value) <= ftol * jnp.maximum(1.0, jnp.abs(new_value))
            bad = ~jnp.isfinite(new_value)
            code = jnp.where(bad, 3, jnp.where(g_ok, 1, jnp.where(f_ok, 2, 0)))
            return x, state, new_value, i + 1, code, gnorm

        def cond(c):
            return (c[3] < n_left) & (c[4] == 0)

        init = (x, state, prev, jnp.asarray(0), jnp.where(bad0, 4, 0), gnorm0)
        return jax.lax.while_loop(cond, body, init)

    return opt, run


def minimize(
    fun: Callable[..., jax.Array],
    x0: jax.Array,
    *,
    args: tuple = (),
    max_iter: int = 2000,
    tol: float = 1e-6,
    ftol: float | None = None,
    memory_size: int = 20,
    progress: bool = True,
    desc: str = "L-BFGS",
    chunk: int = 25,
) -> OptResult:
    r"""Minimise ``fun(x, *args)`` over ``x`` with L-BFGS until the gradient or the objective stalls.

    Stops when :math:`\|\nabla f\|_\infty \le \mathrm{tol}` (converged)
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
    tol : float
        Absolute tolerance on the largest gradient component. When rounding keeps
        the gradient above it (float32, huge objectives), the ``ftol`` stall test
        ends the run instead.
    ftol : float, optional
        Relative objective-change tolerance; defaults to 10 machine epsilons of
        ``x0``'s dtype.
    memory_size : int
        L-BFGS history length.
    progress : bool
        Show a progress bar (labelled with ``max_iter`` as a cap; it ends at the iteration
        where the run stopped).
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
    x0 = to_device(x0)
    if ftol is None:
        ftol = 10.0 * float(jnp.finfo(x0.dtype).eps)
    opt, run_chunk = _chunk_runner(fun, memory_size, float(tol), float(ftol))
    # a placeholder state of the right structure and (strong) dtypes: the first chunk replaces it
    # with ``opt.init(x0)`` inside the compiled program (no eager ops, one program)
    state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(opt.init, x0))
    x, prev = x0, np.asarray(np.inf, x0.dtype)
    n_iter, code, gnorm, first = 0, 0, float("inf"), True
    bar = progress_bar(total=max_iter, desc=desc, disable=not progress, leave=False, at_most=True)
    try:
        while first or (n_iter < max_iter and code == 0):
            n_left = max(0, min(chunk, max_iter - n_iter))
            x, state, prev, k, code, gnorm = run_chunk(x, state, prev, np.asarray(n_left), np.asarray(first), args)
            k, code, gnorm, first = int(k), int(code), float(gnorm), False
            if code == 4:
                raise FloatingPointError(
                    f"{desc}: the objective or its gradient is not finite at the starting point "
                    f"(objective={float(prev)}). Check the data for extreme values and the priors "
                    "for impossible settings, or pass a different init."
                )
            n_iter += k
            bar.set_postfix_str(f"objective={float(prev):.6g}, |grad|={gnorm:.1e} (tol {tol:.0e})", refresh=False)
            bar.update(k)
        finish(bar)
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


@functools.lru_cache(maxsize=64)
def _fista_runner(smooth: Callable, full: Callable, prox: Callable, tol: float, ftol: float):
    """A jitted run of up to ``n_left`` monotone FISTA iterations (cached per objective)."""
    vg = jax.value_and_grad(smooth)

    @jax.jit
    def run(x, y, f_x, t, lip, n_left, first, args, pargs):
        # the first chunk evaluates the start in this same program (one program per fit)
        f0, g0 = jax.lax.cond(
            first, lambda: (full(x, *args), jax.grad(smooth)(x, *args)), lambda: (f_x, jnp.zeros_like(x))
        )
        f_x = jnp.where(first, f0, f_x)
        bad0 = first & ~(jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0)))

        def body(carry):
            x, y, f_x, t, lip, i, _, _ = carry
            f_y, g_y = vg(y, *args)

            def trial(lip):
                p = prox(y - g_y / lip, 1.0 / lip, *pargs)
                return p, smooth(p, *args)

            def too_long(c):  # the quadratic upper bound fails: the step was too long
                p, f_p, lip, k = c
                d = p - y
                bound = f_y + jnp.vdot(g_y, d) + 0.5 * lip * jnp.vdot(d, d)
                return (f_p > bound + 1e-12 * jnp.abs(f_y)) & (k < 60)

            def halve(c):
                lip = c[2] * 2.0
                return (*trial(lip), lip, c[3] + 1)

            p, _, lip, _ = jax.lax.while_loop(too_long, halve, (*trial(lip), lip, 0))
            f_p = full(p, *args)
            better = f_p <= f_x
            t_new = jnp.where(better, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)), 1.0)  # restart
            x_new = jnp.where(better, p, x)
            f_new = jnp.where(better, f_p, f_x)
            y_new = x_new + (t / t_new) * (p - x_new) + ((t - 1.0) / t_new) * (x_new - x)
            resid = lip * jnp.max(jnp.abs(p - y))  # the gradient mapping at y
            g_ok = resid <= tol
            f_ok = better & (jnp.abs(f_x - f_new) <= ftol * jnp.maximum(1.0, jnp.abs(f_new))) & (i > 0)
            bad = ~jnp.isfinite(f_new)
            code = jnp.where(bad, 3, jnp.where(g_ok, 1, jnp.where(f_ok, 2, 0)))
            return x_new, y_new, f_new, t_new, 0.8 * lip, i + 1, code, resid

        def cond(c):
            return (c[5] < n_left) & (c[6] == 0)

        init = (x, y, f_x, t, lip, jnp.asarray(0), jnp.where(bad0, 4, 0), jnp.asarray(jnp.inf, x.dtype))
        return jax.lax.while_loop(cond, body, init)

    return run


def minimize_proximal(
    smooth: Callable[..., jax.Array],
    full: Callable[..., jax.Array],
    prox: Callable[..., jax.Array],
    x0: jax.Array,
    *,
    args: tuple = (),
    prox_args: tuple = (),
    max_iter: int = 5000,
    tol: float = 1e-6,
    ftol: float | None = None,
    progress: bool = True,
    desc: str = "FISTA",
    chunk: int = 50,
) -> OptResult:
    r"""Minimise ``smooth(x) + g(x)`` with a non-smooth ``g`` given by its proximal operator.

    Monotone FISTA (Beck & Teboulle 2009) with backtracking on the step and a momentum restart
    whenever the objective would rise. ``prox(v, step, *prox_args)`` must return
    :math:`\arg\min_x g(x) + \|x - v\|^2 / (2\,\mathrm{step})`; ``full(x, *args)`` is the whole
    objective ``smooth + g`` (monitored, never differentiated). Stops when the gradient mapping
    :math:`\|(y - \mathrm{prox}(y - s\nabla f(y)))/s\|_\infty \le \mathrm{tol}` (the optimality
    condition of the composite problem), when an accepted step changes the objective by less
    than :math:`\mathrm{ftol}\max(1, |F|)`, or after ``max_iter`` iterations.

    Parameters
    ----------
    smooth, full : callable
        ``f(x, *args)`` (differentiable) and ``f(x, *args) + g(x)``.
    prox : callable
        Proximal operator of ``g``.
    x0 : Array
        Starting point, shape ``(n_param,)``.
    args, prox_args : tuple
        Extra (traced) arguments of the objectives and of ``prox``.
    max_iter, tol, ftol, progress, desc, chunk
        As in :func:`minimize`.

    Returns
    -------
    OptResult
        ``grad_norm`` holds the last gradient-mapping norm.

    Examples
    --------
    Lasso on a quadratic: the minimiser of ``(x - 3)^2 / 2 + |x|`` is ``2``.

    >>> import jax.numpy as jnp
    >>> from bayesneuro.infer.optimize import minimize_proximal
    >>> f = lambda x: 0.5 * jnp.sum((x - 3.0) ** 2)
    >>> F = lambda x: f(x) + jnp.sum(jnp.abs(x))
    >>> soft = lambda v, s: jnp.sign(v) * jnp.maximum(jnp.abs(v) - s, 0.0)
    >>> res = minimize_proximal(f, F, soft, jnp.zeros(1), progress=False)
    >>> round(float(res.x[0]), 6)
    2.0
    """
    x0 = to_device(x0)
    if ftol is None:
        ftol = 10.0 * float(jnp.finfo(x0.dtype).eps)
    run_chunk = _fista_runner(smooth, full, prox, float(tol), float(ftol))
    dtype = x0.dtype
    x, y = x0, x0
    f_x, t, lip = np.asarray(np.inf, dtype), np.asarray(1.0, dtype), np.asarray(1.0, dtype)
    n_iter, code, resid, first = 0, 0, float("inf"), True
    bar = progress_bar(total=max_iter, desc=desc, disable=not progress, leave=False, at_most=True)
    try:
        while first or (n_iter < max_iter and code == 0):
            n_left = max(0, min(chunk, max_iter - n_iter))
            x, y, f_x, t, lip, k, code, resid = run_chunk(
                x, y, f_x, t, lip, np.asarray(n_left), np.asarray(first), args, prox_args
            )
            k, code, resid, first = int(k), int(code), float(resid), False
            if code == 4:
                raise FloatingPointError(
                    f"{desc}: the objective or its gradient is not finite at the starting point "
                    f"(objective={float(f_x)}). Check the data for extreme values, or pass a different init."
                )
            n_iter += k
            bar.set_postfix_str(f"objective={float(f_x):.6g}, residual={resid:.1e} (tol {tol:.0e})", refresh=False)
            bar.update(k)
        finish(bar)
    finally:
        bar.close()
    messages = {
        0: f"reached max_iter={max_iter} before converging",
        1: "gradient mapping below tolerance",
        2: "objective change below tolerance",
        3: "objective became non-finite",
    }
    if code == 3:
        raise FloatingPointError(f"{desc}: the objective became non-finite after {n_iter} iterations")
    return OptResult(x, float(f_x), resid, n_iter, code in (1, 2), messages[code])
