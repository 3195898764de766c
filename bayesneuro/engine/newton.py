r"""Damped Newton minimisation: one pure-JAX solver for every smooth inner problem.

Laplace modes of latent paths (PoissonLDS, Poisson GPFA), per-neuron GLM fits inside an
M-step, point-process decoders and tuning-curve fits all minimise a smooth, mostly convex
scalar with a Hessian that is cheap to form or to solve with. :func:`newton` does it once:

.. math::

    x_{k+1} = x_k - a_k\, H(x_k)^{-1} g(x_k),

with the step length :math:`a_k \in \{1, 1/2, 1/4, \dots\}` halved until the Armijo condition
:math:`f(x_{k+1}) \le f(x_k) - 10^{-4}\, a_k\, g^\top H^{-1} g` holds (backtracking).

One stopping rule, everywhere
    With :math:`\delta = \tfrac12 g^\top H^{-1} g` (half the Newton decrement: the decrease a
    full step predicts) and :math:`\epsilon = \text{tol} \cdot \max(1, |f|)`, iterations stop,
    converged, once :math:`\delta \le \epsilon` at the current point; that last full step is
    still taken unless it increases :math:`f` by more than :math:`\epsilon` (its gain is often
    below the rounding of :math:`f`, so there is no Armijo test), which costs one more
    evaluation and, Newton converging quadratically, leaves an error of the order of
    :math:`\epsilon` rather than :math:`\sqrt{\epsilon}` in :math:`x`. A full (unhalved) step
    that decreased :math:`f` by at most :math:`\epsilon` counts the same: one last step, then
    stop, converged. When no step length in ``max_halvings`` halvings decreases :math:`f` they
    stop too, counted as converged only when :math:`\delta` is at the level of rounding
    (:math:`\delta \le \max(\epsilon, \sqrt{\varepsilon_\text{mach}} \max(1, |f|))`).

Everything is one ``lax.while_loop`` whose every pass tries one step length (no loop nested
in the Newton loop: nested while loops intermittently deadlocked XLA's CPU runtime), so
:func:`newton` runs under ``jax.jit`` and ``jax.vmap`` (a batch of independent problems
runs until the last one stops; finished ones are frozen). The Newton direction (``derivatives``
and ``solve``) is computed at the top of the pass after a step is accepted (and in the first
pass; one last pass only computes it at the end point), so the compiled program holds one copy
of it.

Examples
--------
>>> import jax.numpy as jnp
>>> from bayesneuro.engine.newton import newton
>>> res = newton(lambda x, c: jnp.sum(jnp.exp(x) - c * x), jnp.zeros(3), jnp.array([1.0, 2.0, 3.0]))
>>> bool(res.converged), [round(float(v), 5) for v in res.x]
(True, [0.0, 0.69315, 1.09861])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = ["NewtonResult", "cholesky_solve", "dense_solve", "newton"]

_ARMIJO = 1e-4  # fraction of the predicted decrease a step must achieve


class NewtonResult(NamedTuple):
    """What :func:`newton` returns (a NamedTuple of arrays: it passes through ``jit``/``vmap``).

    Attributes
    ----------
    x : Array or pytree
        The minimiser found, in the structure and dtype of ``x0``.
    value : Array, shape ()
        ``objective(x, *args)``.
    grad : Array or pytree
        The gradient at ``x`` (as returned by ``derivatives``).
    n_iter : Array, shape (), int32
        Newton iterations taken (derivative evaluations after the first; step halvings are not
        counted).
    converged : Array, shape (), bool
        Whether the stopping rule (see :mod:`bayesneuro.engine.newton`) was met; False when
        ``max_iter`` ran out first or the line search failed away from the optimum.
    """

    x: Any
    value: jax.Array
    grad: Any
    n_iter: jax.Array
    converged: jax.Array


def cholesky_solve(hess, grad):
    r"""Solve :math:`H s = g` by Cholesky alone, for objectives whose Hessian is positive definite.

    For convex problems (a GLM log-likelihood with a Gaussian prior): unlike
    :func:`dense_solve` it has no eigendecomposition fallback, which under ``jax.vmap`` is
    evaluated for every problem at every iteration (``lax.cond`` runs both branches when
    batched), and batched eigensolvers inside a ``while_loop`` have hung XLA's CPU runtime.
    A Hessian that is not positive definite gives a non-finite step, which :func:`newton`
    replaces by the gradient.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.engine.newton import cholesky_solve
    >>> [round(float(v), 6) for v in cholesky_solve(jnp.array([[2.0, 0.0], [0.0, 4.0]]), jnp.array([1.0, 1.0]))]
    [0.5, 0.25]
    """
    g, unravel = ravel_pytree(grad)
    n = g.shape[0]
    h = jnp.reshape(hess, (n, n)).astype(g.dtype)
    chol = jnp.linalg.cholesky(0.5 * (h + h.T))
    return unravel(jax.scipy.linalg.cho_solve((chol, True), g))


def dense_solve(hess, grad):
    r"""Solve :math:`H s = g` for the Newton step, robust to an indefinite Hessian.

    The default ``solve`` of :func:`newton`. ``hess`` is reshaped to ``(n, n)`` with ``n``
    the size of ``grad`` (so ``jax.hessian`` of an objective of an ``x`` of any shape works),
    symmetrised and factored by Cholesky. If that fails (the Hessian is not positive definite,
    or is singular to rounding), the step uses the eigendecomposition with each eigenvalue
    replaced by :math:`\max(|\lambda|, n\,\varepsilon_\text{mach} \max|\lambda|)`: a descent
    direction that is Newton's where the objective is convex.

    Parameters
    ----------
    hess : Array
        The Hessian, shape ``(n, n)`` or ``grad.shape + grad.shape``.
    grad : Array or pytree
        The gradient (its leaves are flattened in ``ravel_pytree`` order).

    Returns
    -------
    Array or pytree
        The step :math:`H^{-1} g`, in the structure of ``grad``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.engine.newton import dense_solve
    >>> [round(float(v), 6) for v in dense_solve(jnp.array([[2.0, 0.0], [0.0, 4.0]]), jnp.array([1.0, 1.0]))]
    [0.5, 0.25]
    >>> [round(float(v), 6) for v in dense_solve(jnp.array([[-2.0, 0.0], [0.0, 4.0]]), jnp.array([1.0, 1.0]))]
    [0.5, 0.25]
    """
    g, unravel = ravel_pytree(grad)
    n = g.shape[0]
    h = jnp.reshape(hess, (n, n)).astype(g.dtype)
    h = 0.5 * (h + h.T)
    chol = jnp.linalg.cholesky(h)

    def by_cholesky(_):
        return jax.scipy.linalg.cho_solve((chol, True), g)

    def by_eigen(_):
        w, v = jnp.linalg.eigh(h)
        aw = jnp.abs(w)
        floor = jnp.maximum(n * jnp.finfo(g.dtype).eps * jnp.max(aw), jnp.finfo(g.dtype).tiny)
        return v @ ((v.T @ g) / jnp.maximum(aw, floor))

    step = lax.cond(jnp.all(jnp.isfinite(chol)), by_cholesky, by_eigen, None)
    return unravel(step)


def _vdot(a, b):
    leaves = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.sum(u * v), a, b))
    return sum(leaves[1:], leaves[0])


def _default_derivatives(objective: Callable) -> Callable:
    """``(grad, hess)`` of ``objective`` by autodiff, the Hessian flat ``(n, n)``."""

    def derivatives(x, *args):
        flat, unravel = ravel_pytree(x)
        f = lambda z: objective(unravel(z), *args)
        return unravel(jax.grad(f)(flat)), jax.hessian(f)(flat)

    return derivatives


def newton(
    objective: Callable,
    x0,
    *args,
    derivatives: Callable | None = None,
    solve: Callable | None = None,
    max_iter: int = 50,
    tol: float = 1e-8,
    max_halvings: int = 20,
) -> NewtonResult:
    r"""Minimise a smooth scalar ``objective(x, *args)`` by damped Newton steps.

    Pure JAX: call it inside ``jax.jit`` (with ``objective``, ``derivatives`` and ``solve``
    closed over, not passed as traced arguments) and ``jax.vmap`` it over a batch of problems.
    The stopping rule and line search are described in :mod:`bayesneuro.engine.newton`.

    Parameters
    ----------
    objective : callable
        ``objective(x, *args) -> scalar`` to minimise (e.g. a negative log-likelihood or
        negative log joint), differentiable in ``x``.
    x0 : Array or pytree of arrays
        Starting point; ``x`` keeps its structure, shape and dtype throughout (use float64
        for tight tolerances; float32 works with ``tol`` above its rounding).
    *args
        Data passed to ``objective`` and ``derivatives`` unchanged (arrays, pytrees).
    derivatives : callable, optional
        ``derivatives(x, *args) -> (grad, hess)``: ``grad`` in the structure of ``x``,
        ``hess`` anything ``solve`` understands (a block-tridiagonal factorisation's inputs,
        a diagonal, ...). Default: ``jax.grad`` and ``jax.hessian`` of ``objective`` on the
        flattened ``x``, the Hessian dense ``(n, n)``.
    solve : callable, optional
        ``solve(hess, grad) -> step`` with ``step`` :math:`= H^{-1} g` in the structure of
        ``grad``; the iteration moves to ``x - a * step``. Default :func:`dense_solve`
        (Cholesky, eigenvalue fallback when not positive definite). If ``solve`` gives a
        non-finite step or one that is not a descent direction, the gradient is used instead.
    max_iter : int, default 50
        Most Newton iterations.
    tol : float, default 1e-8
        Relative tolerance of the stopping rule: stop when half the Newton decrement (or the
        decrease a full step achieved) is at most ``tol * max(1, |f|)``.
    max_halvings : int, default 20
        Most step halvings in one line search; when none decreases ``objective`` the
        iterations stop.

    Returns
    -------
    NewtonResult
        ``(x, value, grad, n_iter, converged)``, all JAX arrays.

    Examples
    --------
    Poisson regression (negative log-likelihood, up to a constant) from a zero start:

    >>> import jax, jax.numpy as jnp
    >>> from bayesneuro.engine.newton import newton
    >>> X = jnp.stack([jnp.ones(6), jnp.linspace(-1.0, 1.0, 6)], axis=1)
    >>> y = jnp.array([0.0, 1.0, 1.0, 2.0, 4.0, 5.0])
    >>> nll = lambda w, X, y: jnp.sum(jnp.exp(X @ w) - y * (X @ w))
    >>> res = jax.jit(lambda w0: newton(nll, w0, X, y))(jnp.zeros(2))
    >>> bool(res.converged), bool(jnp.max(jnp.abs(res.grad)) < 1e-3)
    (True, True)

    A batch of problems with ``jax.vmap``:

    >>> c = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> batch = jax.vmap(lambda ci: newton(lambda x, c: jnp.sum(jnp.exp(x) - c * x), jnp.zeros(2), ci))(c)
    >>> batch.x.shape, bool(jnp.allclose(jnp.exp(batch.x), c, rtol=1e-4))
    ((2, 2), True)
    """
    derivatives = _default_derivatives(objective) if derivatives is None else derivatives
    solve = dense_solve if solve is None else solve
    x0 = jax.tree.map(jnp.asarray, x0)
    f0 = jnp.asarray(objective(x0, *args))
    dtype = f0.dtype
    one = jnp.ones((), dtype)
    rounding = jnp.sqrt(jnp.asarray(jnp.finfo(dtype).eps, dtype))
    tol = jnp.asarray(tol, dtype)

    def threshold(f):
        return tol * jnp.maximum(one, jnp.abs(f))

    def direction(x):
        g, h = derivatives(x, *args)
        step = solve(h, g)
        dec = _vdot(g, step)
        g_zero = _vdot(g, g) == 0
        good = jnp.isfinite(dec) & ((dec > 0) | g_zero)
        step = jax.tree.map(lambda s, gg: jnp.where(good, s, gg), step, g)
        dec = jnp.where(good, dec, _vdot(g, g)).astype(dtype)
        return g, step, dec

    def body(state):
        i, k, a, x, f, g, step, dec, final_next, done, converged, fresh = state
        # the direction at x, once per accepted point: computed here, at the top of the pass after
        # an accepted step (not in the branch that accepts it, nor once more before the loop), so
        # the program holds one copy of derivatives + solve
        g, step, dec = lax.cond(fresh, lambda _: (g, step, dec), lambda _: carried(direction(x)), None)
        active = ~done & (i < max_iter)  # False: a last pass only for the direction at the end point
        eps = threshold(f)
        final = (0.5 * dec <= eps) | final_next  # converged: one last step, unless it does harm
        xa = jax.tree.map(lambda u, s: u - (a * s).astype(u.dtype), x, step)
        fa = jnp.asarray(objective(xa, *args), dtype)
        finite = jnp.isfinite(fa)
        # the last step's gain is at most eps, often below the rounding of f: no Armijo test then,
        # only no increase beyond eps (a change of f within tol is no change)
        accept = active & finite & ((fa <= f - _ARMIJO * a * dec) | (final & (fa <= f + eps)))
        give_up = active & ~accept & (final | (k >= max_halvings))
        x_n = jax.tree.map(lambda u, v: jnp.where(accept, u, v), xa, x)
        f_n = jnp.where(accept, fa, f)
        eps_n = threshold(f_n)
        small_gain = accept & (a == 1) & (f - fa <= eps_n)
        stalled = give_up & (0.5 * dec <= jnp.maximum(eps_n, rounding * jnp.maximum(one, jnp.abs(f))))
        ended = accept | give_up
        return (
            i + ended.astype(i.dtype),
            jnp.where(ended, 0, jnp.where(active, k + 1, k)).astype(k.dtype),
            jnp.where(ended, one, jnp.where(active, 0.5 * a, a)),
            x_n,
            f_n,
            g,
            step,
            dec,
            jnp.where(active, small_gain & ~final, final_next),
            done | final | give_up,
            jnp.where(active, final | stalled, converged),
            ~accept,
        )

    def cond(state):
        i, done, fresh = state[0], state[9], state[11]
        return (~done & (i < max_iter)) | ~fresh

    # g, step and dec are carried in the structure and dtypes of x (the first pass computes them)
    zeros = jax.tree.map(jnp.zeros_like, x0)

    def carried(d):
        g, step, dec = d
        cast = lambda v, z: jnp.asarray(v).astype(z.dtype)
        return jax.tree.map(cast, g, zeros), jax.tree.map(cast, step, zeros), dec

    false = jnp.zeros((), bool)
    init = (
        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), one, x0, f0, zeros, zeros,
        jnp.zeros((), dtype), false, false, false, false,
    )
    i, _, _, x, f, g, _, dec, final_next, _, converged, _ = lax.while_loop(cond, body, init)
    converged = converged | final_next | (0.5 * dec <= threshold(f))  # max_iter ran out as it converged
    return NewtonResult(x, f, g, i, converged)
