"""The L-BFGS driver (``bayesneuro.infer.optimize.minimize``) against closed forms and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize as sopt

from bayesneuro.infer.optimize import _direction, minimize


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@pytest.mark.parametrize("n", [2, 10, 40])
def test_rosenbrock_reaches_its_known_minimum(n):
    res = minimize(_rosen, jnp.full(n, -1.2), tol=1e-9, progress=False)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), 1.0, atol=1e-6)
    # as few iterations as scipy's L-BFGS-B (Fortran) needs, within a margin
    ref = sopt.minimize(sopt.rosen, np.full(n, -1.2), jac=sopt.rosen_der, method="L-BFGS-B",
                        options={"gtol": 1e-9, "maxiter": 10_000, "maxcor": 20})
    assert res.n_iter <= 1.5 * ref.nit + 10


def test_poisson_regression_optimum_equals_scipy():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 12))
    w = rng.normal(scale=0.3, size=12)
    y = rng.poisson(np.exp(X @ w + 0.5))

    def nll(b, X, y):
        eta = X @ b[1:] + b[0]
        return jnp.sum(jnp.exp(eta) - y * eta) + 0.5 * jnp.sum(b[1:] ** 2)

    res = minimize(nll, jnp.zeros(13), args=(X, y), tol=1e-8, progress=False)
    f = lambda b: float(nll(b, X, y))
    g = lambda b: np.asarray(jax.grad(nll)(b, X, y))
    ref = sopt.minimize(f, np.zeros(13), jac=g, method="BFGS", options={"gtol": 1e-10})
    assert res.converged
    assert abs(res.value - ref.fun) <= 1e-10 * abs(ref.fun)
    np.testing.assert_allclose(np.asarray(res.x), ref.x, atol=1e-6)


def test_direction_equals_the_dense_bfgs_inverse_update():
    """The two-loop recursion equals the inverse-Hessian BFGS updates applied densely to gamma * I."""
    rng = np.random.default_rng(0)
    n, m, k = 15, 6, 4
    S, Y, rho = np.zeros((m, n)), np.zeros((m, n)), np.zeros(m)
    pairs = []
    for _ in range(k):
        s = rng.normal(size=n)
        y = s + 0.4 * rng.normal(size=n)
        pairs.append((s, y))
    for j, (s, y) in enumerate(reversed(pairs)):  # newest first
        S[j], Y[j], rho[j] = s, y, 1.0 / (s @ y)
    S[k:], Y[k:] = rng.normal(size=(m - k, n)), rng.normal(size=(m - k, n))  # stale slots, rho 0
    g = rng.normal(size=n)
    s_new, y_new = pairs[-1]
    H = (s_new @ y_new) / (y_new @ y_new) * np.eye(n)
    for s, y in pairs:  # oldest first
        r = 1.0 / (s @ y)
        V = np.eye(n) - r * np.outer(y, s)
        H = V.T @ H @ V + r * np.outer(s, s)
    d = _direction(jnp.asarray(g), jnp.asarray(S), jnp.asarray(Y), jnp.asarray(rho))
    np.testing.assert_allclose(np.asarray(d), -H @ g, rtol=1e-10, atol=1e-12)


def test_objective_appears_once_in_the_compiled_program():
    """One trial point per loop step: the objective (here marked by ``sinh``) is traced once, where
    optax's zoom line search held several copies (each compiled separately)."""
    from bayesneuro.infer.optimize import _chunk_runner, _start_state

    f = lambda x: jnp.sum(jnp.sinh(x) ** 2) + jnp.sum(x**2)
    run = _chunk_runner(f, 1e-6, 1e-14)
    text = run.lower(_start_state(jnp.ones(3), 5), np.asarray(10), ()).as_text()
    assert text.count("stablehlo.sine") == 0
    assert text.count("sinh") == 1


def test_steps_into_overflow_are_cut_back():
    """A first step that overflows the objective (exp of a huge value) is shortened, not fatal."""
    f = lambda x: jnp.sum(jnp.exp(3.0 * x) - 40.0 * x)
    res = minimize(f, jnp.full(3, -10.0), tol=1e-9, progress=False)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), np.log(40.0 / 3.0) / 3.0, rtol=1e-9)


def test_a_wrong_gradient_is_reported_not_called_converged():
    @jax.custom_jvp
    def f(x):
        return jnp.sum(x**2)

    @f.defjvp
    def _f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), jnp.sum(-2.0 * x * t)  # the wrong sign: an ascent direction looks like descent

    res = minimize(f, jnp.ones(4), progress=False)
    assert not res.converged
    assert "no decrease" in res.message


def test_iteration_cap_is_reported():
    res = minimize(_rosen, jnp.full(10, -1.2), max_iter=7, chunk=3, progress=False)
    assert not res.converged and res.n_iter == 7
    assert "max_iter=7" in res.message


def test_already_at_the_minimum_stops_at_once():
    res = minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.full(3, 2.0), progress=False)
    assert res.converged and res.n_iter == 0 and res.value == 0.0


def test_float32_reaches_the_minimum_to_its_precision():
    res = minimize(_rosen, jnp.full(6, -1.2, jnp.float32), tol=1e-4, progress=False)
    assert res.converged and res.x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(res.x), 1.0, atol=2e-3)


def test_same_start_same_result_across_chunk_sizes():
    a = minimize(_rosen, jnp.full(8, -1.2), chunk=1, progress=False)
    b = minimize(_rosen, jnp.full(8, -1.2), chunk=500, progress=False)
    assert a.n_iter == b.n_iter
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))


def test_precision_limit_counts_as_converged():
    """float32 and a gradient tolerance of 0: the run ends at the precision limit, not at the cap."""
    f = lambda x: 1e6 * jnp.sum((x - 1.0 / 3.0) ** 2) + 1e6
    res = minimize(f, jnp.zeros(5, jnp.float32), tol=0.0, progress=False)
    assert res.converged, res.message
    assert res.n_iter < 100
    np.testing.assert_allclose(np.asarray(res.x), 1.0 / 3.0, atol=1e-3)


def test_fit_warns_with_the_cause_when_the_gradient_does_not_match():
    """Through ``bayesneuro.fit``: a model whose likelihood has a wrong custom gradient ends with a
    ConvergenceWarning that names the gradient, not "raise max_iter"."""
    import numpyro
    import numpyro.distributions as dist

    import bayesneuro as bn
    from bayesneuro.diagnostics import ConvergenceWarning

    @jax.custom_jvp
    def wrong(x):
        return jnp.sum((x - 2.0) ** 2)

    @wrong.defjvp
    def _wrong_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return wrong(x), jnp.sum(2.0 * (x + 5.0) * t)  # the gradient of another function

    def model():
        b = numpyro.sample("b", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        numpyro.factor("lik", -wrong(b))

    with pytest.warns(ConvergenceWarning, match="gradient does not match.*custom gradient"):
        res = bn.fit(model, method="map", key=0, progress=False)
    assert not res.info["converged"]
