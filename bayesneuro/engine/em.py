r"""Expectation-maximisation driver: one loop, one stopping rule, optional SQUAREM.

Every EM fit in bayesneuro (linear-Gaussian state space, GPFA, factor analysis, hidden Markov
models, Laplace-EM of the Poisson LDS) is a pure step function

.. code-block:: python

    step(state, *args) -> (new_state, objective)

where ``objective`` is the log-likelihood (or the lower bound EM climbs) **evaluated at**
``state``, the point the step starts from. :func:`run_em` compiles ``step`` once (one XLA
program per shape of ``state`` and ``args``), calls it in a Python loop with a tqdm bar, and
applies the same rules to all of them:

Convergence
    After iteration :math:`k` (objective :math:`\ell_k`), stop when
    :math:`|\ell_k - \ell_{k-1}| \le \text{tol} \cdot \max(1, |\ell_k|)`.
Monotonicity
    EM never decreases its objective; a decrease by more than that threshold means the step
    is wrong (an inexact M-step, a bug, or lost precision) and gives a
    :class:`~bayesneuro.diagnostics.ConvergenceWarning` naming the iteration.
Iteration cap
    Reaching ``max_iter`` without converging gives a
    :class:`~bayesneuro.diagnostics.ConvergenceWarning` (``warn=False`` silences it).
Non-finite objective
    Raises ``FloatingPointError`` naming the iteration.

The state returned is the last one the loop produced, one step past the last recorded
objective (EM steps do not make it worse).

SQUAREM (``squarem=True``; Varadhan & Roland 2008, scheme S3) treats ``step`` as a fixed-point
map :math:`F` and, from two steps :math:`x_1 = F(x_0)`, :math:`x_2 = F(x_1)`, jumps to
:math:`x_0 + 2\alpha r + \alpha^2 v` with :math:`r = x_1 - x_0`,
:math:`v = x_2 - 2x_1 + x_0`, :math:`\alpha = \mathrm{clip}(\|r\|/\|v\|, 1, \alpha_\max)`
(:func:`squarem_step`). The jump is kept only when its objective is at least that of
:math:`x_1`; otherwise the loop falls back to the plain EM point :math:`x_2` and shrinks
:math:`\alpha_\max` four-fold (it grows four-fold whenever it binds). Accepted objectives
therefore never decrease. Extrapolation acts on the floating-point leaves of the state as they
are; if the state has constraints (variances, probabilities), keep it in an unconstrained
parametrisation or pass ``project`` to map each jump back into the constraint set.

References
----------
R. Varadhan and C. Roland (2008). Simple and globally convergent methods for accelerating the
convergence of any EM algorithm. *Scandinavian Journal of Statistics* 35(2), 335--353.

Examples
--------
The weight of a two-component mixture of known unit-variance Gaussians: the step returns the
new weight and the log-likelihood of the old one.

>>> import jax.numpy as jnp
>>> from jax.scipy.stats import norm
>>> from bayesneuro.engine.em import run_em
>>> y = jnp.array([-2.1, -1.9, -2.0, 2.0, 1.8, 2.2, 2.1, -2.2])
>>> def step(w, y):
...     p1, p2 = w * norm.pdf(y, 2.0, 1.0), (1 - w) * norm.pdf(y, -2.0, 1.0)
...     return jnp.mean(p1 / (p1 + p2)), jnp.sum(jnp.log(p1 + p2))
>>> w, trace = run_em(step, 0.1, y, tol=1e-10, progress=False)
>>> round(float(w), 3), bool(trace.converged)
(0.5, True)
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesneuro._jit import jit
from bayesneuro._progress import finish, progress_bar, progress_default

__all__ = ["EMTrace", "run_em", "squarem_step"]


class EMTrace(NamedTuple):
    """The record of one :func:`run_em` run.

    Attributes
    ----------
    objective : numpy.ndarray, shape (n_recorded,)
        The objective at each state the loop passed through, in order: with plain EM
        ``objective[k]`` is the objective of the state after ``k`` steps (``objective[0]`` of
        ``init``), so ``n_recorded == n_iter``; with SQUAREM only the points kept (not the
        rejected jumps) are recorded, so it is never decreasing and may be shorter.
    n_iter : int
        Calls of ``step`` (the cost: E-steps run).
    converged : bool
        Whether the convergence rule was met before ``max_iter`` calls.
    """

    objective: np.ndarray
    n_iter: int
    converged: bool


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


@jit
def squarem_step(x0, x1, x2, step_max):
    r"""SQUAREM's extrapolation (scheme S3) from two fixed-point steps ``x0 -> x1 -> x2``.

    .. math::

        x' = x_0 + 2\alpha r + \alpha^2 v, \quad r = x_1 - x_0,\ v = x_2 - 2 x_1 + x_0,
        \quad \alpha = \mathrm{clip}\big(\|r\| / \|v\|,\ 1,\ \alpha_\max\big)

    (:math:`\alpha = 1` gives :math:`x_2`, as does :math:`v = 0`). The norms run over every
    floating-point leaf of the pytrees; other leaves (counters, integer labels) are taken from
    ``x2``. The bound grows four-fold when it binds.

    Parameters
    ----------
    x0, x1, x2 : pytree of arrays
        A point and two successive EM steps from it (same structure).
    step_max : Array, shape ()
        The current bound :math:`\alpha_\max \ge 1`.

    Returns
    -------
    candidate : pytree
        The extrapolated point (not yet projected onto any constraint set).
    step_max : Array, shape ()
        The bound for the next cycle.

    Examples
    --------
    A linear fixed-point map :math:`F(x) = x/2` (fixed point 0): one jump lands on it.

    >>> import jax.numpy as jnp
    >>> from bayesneuro.engine.em import squarem_step
    >>> cand, smax = squarem_step(jnp.array(4.0), jnp.array(2.0), jnp.array(1.0), jnp.array(8.0))
    >>> float(cand), float(smax)
    (0.0, 8.0)
    """
    leaves0, tree = jax.tree.flatten(x0)
    leaves1, leaves2 = jax.tree.leaves(x1), jax.tree.leaves(x2)
    floats = [_is_float(a) for a in leaves0]
    r = [b - a for a, b, f in zip(leaves0, leaves1, floats) if f]
    v = [c - 2.0 * b + a for a, b, c, f in zip(leaves0, leaves1, leaves2, floats) if f]
    rr = sum((jnp.sum(jnp.abs(u) ** 2) for u in r), jnp.zeros((), jnp.result_type(step_max)))
    vv = sum((jnp.sum(jnp.abs(u) ** 2) for u in v), jnp.zeros((), jnp.result_type(step_max)))
    ok = (vv > 0) & jnp.isfinite(vv) & jnp.isfinite(rr)
    alpha = jnp.where(ok, jnp.clip(jnp.sqrt(rr / jnp.where(ok, vv, 1.0)), 1.0, step_max), 1.0)
    step_max = jnp.where(alpha >= step_max, 4.0 * step_max, step_max)
    out, it = [], iter(zip(r, v))
    for a, c, f in zip(leaves0, leaves2, floats):
        if f:
            ri, vi = next(it)
            out.append((a + 2.0 * alpha * ri + alpha**2 * vi).astype(a.dtype))
        else:
            out.append(c)
    return jax.tree.unflatten(tree, out), step_max


def _squarem_host(x0, x1, x2, step_max):
    """:func:`squarem_step` in numpy on the host, with the same arithmetic: EM states are
    parameter-sized, and on a CPU compiling the jitted extrapolation (0.1-0.2 s) costs more than
    all the jumps of a fit. Returns strongly typed JAX arrays of the leaves' dtypes, so the EM
    step sees the types it was compiled for."""
    leaves0, tree = jax.tree.flatten(x0)
    leaves1, leaves2 = jax.tree.leaves(x1), jax.tree.leaves(x2)
    dtype = np.dtype(jnp.result_type(step_max))
    smax = float(step_max)
    floats = [_is_float(a) for a in leaves0]
    a0 = [np.asarray(a) if f else None for a, f in zip(leaves0, floats)]
    r = [np.asarray(b) - a for a, b, f in zip(a0, leaves1, floats) if f]
    v = [np.asarray(c) - 2.0 * np.asarray(b) + a for a, b, c, f in zip(a0, leaves1, leaves2, floats) if f]
    rr = sum((float(np.sum(np.abs(u) ** 2)) for u in r), 0.0)
    vv = sum((float(np.sum(np.abs(u) ** 2)) for u in v), 0.0)
    ok = vv > 0 and math.isfinite(vv) and math.isfinite(rr)
    alpha = min(max(math.sqrt(rr / vv), 1.0), smax) if ok else 1.0
    new_max = 4.0 * smax if alpha >= smax else smax
    out, it = [], iter(zip(r, v))
    for a, c, f in zip(a0, leaves2, floats):
        if f:
            ri, vi = next(it)
            out.append(jnp.asarray((a + 2.0 * alpha * ri + alpha**2 * vi).astype(a.dtype)))
        else:
            out.append(c)
    return jax.tree.unflatten(tree, out), jnp.asarray(new_max, dtype)


def _canonical(tree):
    """Leaves as strongly typed JAX arrays, so the first and later calls of the jitted step see
    the same types (a Python float or weakly typed array would otherwise recompile it)."""
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.asarray(a).dtype), tree)


def _jit(fun: Callable) -> Callable:
    """``fun`` jitted, unless it already is (or is a ``functools.partial`` of a jitted function:
    its static keywords then reuse the program compiled for earlier calls)."""
    inner = fun.func if isinstance(fun, functools.partial) else fun
    return fun if hasattr(inner, "lower") else jit(fun)


def run_em(
    step: Callable,
    init,
    *args,
    max_iter: int = 500,
    tol: float | None = 1e-6,
    squarem: bool = False,
    project: Callable | None = None,
    progress: bool | None = None,
    desc: str = "EM",
    warn: bool = True,
    decrease_tol: float | None = None,
) -> tuple[Any, EMTrace]:
    r"""Iterate an EM step to convergence (see :mod:`bayesneuro.engine.em` for the rules).

    Parameters
    ----------
    step : callable
        ``step(state, *args) -> (new_state, objective)``: one EM iteration, pure JAX;
        ``objective`` (a scalar to maximise: log-likelihood or evidence lower bound) is that of
        ``state``, the input. It is jitted here unless it already is (a ``jax.jit`` function,
        or a ``functools.partial`` of one). Keep static settings (strings, flags) in a closure
        or in ``static_argnames`` of your own jit, and pass only arrays in ``args``. A
        module-level function or a jitted one keeps its compiled program from one fit to the
        next; a fresh ``lambda`` compiles once per call of :func:`run_em`.
    init : pytree of arrays
        The starting state (a NamedTuple of parameters, say).
    *args
        Data passed to every ``step`` call unchanged.
    max_iter : int, default 500
        Most calls of ``step``.
    tol : float or None, default 1e-6
        Stop when :math:`|\ell_k - \ell_{k-1}| \le \text{tol}\cdot\max(1, |\ell_k|)`. ``None``
        runs all ``max_iter`` steps (no convergence test, no warning at the cap).
    squarem : bool, default False
        Accelerate with SQUAREM (scheme S3, safeguarded; see the module docstring). Usually
        needs several-fold fewer steps on slow (ill-conditioned) EM problems.
    project : callable, optional
        ``project(state) -> state`` maps an extrapolated SQUAREM point back to the constraint
        set (clip variances, renormalise probabilities); used only with ``squarem=True``.
    progress : bool, optional
        Show a progress bar (labelled "≤ max_iter", ending at the step where EM stopped); default
        :func:`bayesneuro.infer.fit.progress_default` (``BAYESNEURO_PROGRESS``).
    desc : str, default "EM"
        Label of the bar and of warnings and errors.
    warn : bool, default True
        Warn (:class:`~bayesneuro.diagnostics.ConvergenceWarning`) when ``max_iter`` is reached
        without converging, and when the objective decreases.
    decrease_tol : float, optional
        Relative size of a decrease that is tolerated without a warning,
        :math:`\ell_k < \ell_{k-1} - \text{decrease\_tol}\cdot\max(1, |\ell_k|)` warns. Default:
        the convergence threshold (exact EM never decreases). An EM whose E-step is approximate
        (Laplace-EM) may dip by small amounts and passes a larger value.

    Returns
    -------
    state : pytree
        The last state produced (one EM step past the last recorded objective).
    trace : EMTrace
        Objectives, number of steps, and whether the rule was met.

    Raises
    ------
    FloatingPointError
        When an objective is not finite (with SQUAREM: at a point that is not a rejected jump).

    Examples
    --------
    Mean of a Gaussian with known variance, a trivial EM whose step is the mean itself:

    >>> import jax.numpy as jnp
    >>> from bayesneuro.engine.em import run_em
    >>> y = jnp.array([1.0, 2.0, 3.0])
    >>> step = lambda m, y: (0.5 * m + 0.5 * jnp.mean(y), -0.5 * jnp.sum((y - m) ** 2))
    >>> m, trace = run_em(step, 0.0, y, tol=1e-12, progress=False)
    >>> round(float(m), 4), trace.converged
    (2.0, True)
    >>> m2, fast = run_em(step, 0.0, y, tol=1e-12, squarem=True, progress=False)
    >>> fast.n_iter < trace.n_iter
    True
    """
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
    progress = progress_default() if progress is None else bool(progress)
    runner = _run_squarem if squarem else _run_plain
    if decrease_tol is not None and not (math.isfinite(decrease_tol) and decrease_tol >= 0):
        raise ValueError(f"decrease_tol must be a non-negative number or None, got {decrease_tol!r}")
    return runner(_jit(step), _canonical(init), args, int(max_iter), tol,
                  None if project is None else _jit(project), progress, desc, (warn, decrease_tol))


class _Monitor:
    """Records objectives and applies the convergence and monotonicity rules."""

    def __init__(self, tol, desc, warn):
        warn, self.decrease_tol = warn if isinstance(warn, tuple) else (warn, None)
        self.tol, self.desc, self.warn = tol, desc, warn
        self.values: list[float] = []
        self.warned_decrease = False
        self.eps = 0.0  # machine epsilon of the objective's dtype (float32: 1.2e-7), set by record

    def threshold(self, value: float) -> float:
        return (self.tol or 0.0) * max(1.0, abs(value))

    def record(self, value, n_iter: int, check: bool = True) -> bool:
        """Add the objective of the state after ``n_iter`` steps; True when converged (tested only
        when ``check``: the last two records are one plain EM step apart)."""
        dtype = getattr(value, "dtype", None)
        if dtype is not None and np.issubdtype(dtype, np.floating):
            self.eps = max(self.eps, float(np.finfo(dtype).eps))
        value = float(value)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{self.desc}: the objective became non-finite ({value}) at iteration {n_iter}; check the "
                "data for constant or empty channels and the state for a collapsing variance"
            )
        self.values.append(value)
        if len(self.values) < 2:
            return False
        prev, thr = self.values[-2], self.threshold(value)
        # tol=None or 0 still needs a scale; in float32 a sum's rounding (~100 eps relative) is no
        # decrease either
        scale = max(1.0, abs(value))
        slack = max(thr, 1e-8 * scale, 100 * self.eps * scale)
        if self.decrease_tol is not None:
            slack = max(slack, self.decrease_tol * scale)
        if self.warn and not self.warned_decrease and value < prev - slack:
            self.warned_decrease = True
            from bayesneuro.diagnostics import ConvergenceWarning

            warnings.warn(
                f"{self.desc}: the objective decreased from {prev:.10g} to {value:.10g} at iteration "
                f"{n_iter}; EM never decreases it, so the step is inexact or wrong (an M-step that does "
                "not maximise, an approximate E-step, or lost floating-point precision: try float64)",
                ConvergenceWarning,
                stacklevel=4,
            )
        return check and self.tol is not None and abs(value - prev) <= thr

    def postfix(self) -> str:
        """The bar's postfix: the objective and its last relative change against ``tol``."""
        text = f"objective={self.values[-1]:.8g}"
        if len(self.values) > 1:
            change = abs(self.values[-1] - self.values[-2]) / max(1.0, abs(self.values[-1]))
            text += f", rel. change={change:.1e}" + (f" (tol {self.tol:.0e})" if self.tol is not None else "")
        return text

    def cap_warning(self, max_iter: int, converged: bool) -> None:
        if converged or not self.warn or self.tol is None or max_iter == 0:
            return
        from bayesneuro.diagnostics import ConvergenceWarning

        change = abs(self.values[-1] - self.values[-2]) if len(self.values) > 1 else math.nan
        warnings.warn(
            f"{self.desc}: stopped at max_iter={max_iter} before converging (last change of the objective "
            f"{change:.3g} > tol * max(1, |objective|) = {self.threshold(self.values[-1]):.3g}); raise "
            "max_iter, loosen tol, or accelerate with squarem=True"
            + (f" (the objective is float32: a relative change below about {10 * self.eps:.0e} is rounding, "
               "so use tol >= 1e-6 or enable float64 with jax.config.update('jax_enable_x64', True))"
               if self.eps > 1e-10 and (self.tol or 0.0) < 10 * self.eps else ""),
            ConvergenceWarning,
            stacklevel=4,
        )


def _bar(max_iter, desc, progress):
    # max_iter is a cap: the bar says so, shows no time-to-cap estimate, and ends where EM stops
    return progress_bar(total=max_iter, desc=desc, disable=not progress, leave=False, at_most=True)


def _run_plain(step, state, args, max_iter, tol, project, progress, desc, warn):
    mon, converged, n = _Monitor(tol, desc, warn), False, 0
    bar = _bar(max_iter, desc, progress)
    try:
        while n < max_iter:
            state, value = step(state, *args)
            n += 1
            converged = mon.record(value, n - 1)
            bar.set_postfix_str(mon.postfix(), refresh=False)
            bar.update(1)
            if converged:
                break
        finish(bar)
    finally:
        bar.close()
    mon.cap_warning(max_iter, converged)
    return state, EMTrace(np.asarray(mon.values), n, converged)


def _run_squarem(step, state, args, max_iter, tol, project, progress, desc, warn):
    """SQUAREM cycles: evaluate the candidate by one step (kept if no worse than the reference,
    else the plain fallback point is stepped instead), then one more step, then extrapolate."""
    mon, converged, n = _Monitor(tol, desc, warn), False, 0
    leaves = [a for a in jax.tree.leaves(state) if _is_float(a)]
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    step_max = jnp.ones((), dtype)
    candidate, fallback, ref = state, None, -math.inf
    bar = _bar(max_iter, desc, progress)

    def call(s):
        nonlocal n
        out = step(s, *args)
        n += 1
        bar.update(1)
        return out

    try:
        while n < max_iter:
            x1, l0 = call(candidate)
            l0 = float(l0)
            x0 = candidate
            if fallback is not None and not (math.isfinite(l0) and l0 >= ref):
                step_max = jnp.asarray(max(1.0, float(step_max) / 4.0), dtype)
                state = fallback  # the best point known, two plain steps on
                if n >= max_iter:
                    break
                x0 = fallback
                x1, l0 = call(x0)
            mon.record(l0, n - 1, check=False)  # a jump, not a plain step, from the last record
            state = x1
            if n >= max_iter:
                break
            x2, l1 = call(x1)
            converged = mon.record(l1, n - 1)
            bar.set_postfix_str(mon.postfix(), refresh=False)
            state = x2
            if converged:
                break
            candidate, step_max = _squarem_host(x0, x1, x2, step_max)
            if project is not None:
                candidate = project(candidate)
            fallback, ref = x2, float(l1)
        finish(bar)
    finally:
        bar.close()
    mon.cap_warning(max_iter, converged)
    return state, EMTrace(np.asarray(mon.values), n, converged)
