"""The engine room: damped Newton (bayesneuro.engine.newton) and the EM driver (bayesneuro.engine.em).

Newton is checked against statsmodels' IRLS Poisson GLM and scipy.optimize.minimize to 1e-8, from
starts that need step halving or an indefinite-Hessian fallback, batched with vmap, in float32, and
with user-supplied derivatives and solve. EM is checked on factor analysis against sklearn's
FactorAnalysis log-likelihood, SQUAREM against plain EM (same fixed point, fewer steps), the
compile-once promise, and the warnings.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from bayesneuro.diagnostics import ConvergenceWarning
from bayesneuro.engine import EMTrace, NewtonResult, dense_solve, newton, run_em, squarem_step

# ---------------------------------------------------------------------------------------------
# Newton
# ---------------------------------------------------------------------------------------------


def poisson_nll(w, X, y):
    eta = X @ w
    return jnp.sum(jnp.exp(eta) - y * eta)


@pytest.fixture(scope="module")
def poisson_data():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(400), rng.normal(size=(400, 3))])
    w = np.array([0.3, 0.5, -0.4, 0.2])
    y = rng.poisson(np.exp(X @ w)).astype(float)
    return X, y


def test_newton_poisson_regression_matches_statsmodels(poisson_data):
    sm = pytest.importorskip("statsmodels.api")
    X, y = poisson_data
    ref = sm.GLM(y, X, family=sm.families.Poisson()).fit(tol=1e-14, maxiter=100)
    res = jax.jit(lambda w0: newton(poisson_nll, w0, X, y))(jnp.zeros(4))
    assert isinstance(res, NewtonResult)
    assert bool(res.converged) and 0 < int(res.n_iter) < 50
    np.testing.assert_allclose(res.x, ref.params, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.value, poisson_nll(jnp.asarray(ref.params), X, y), rtol=1e-12)
    np.testing.assert_allclose(res.grad, jax.grad(poisson_nll)(res.x, X, y), rtol=0, atol=1e-12)
    assert float(jnp.max(jnp.abs(res.grad))) < 1e-5  # nats per unit weight, 400 bins


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_newton_matches_scipy_from_an_indefinite_start():
    x0 = np.array([0.0, 1.0])  # Hessian indefinite here: the eigenvalue fallback steps
    assert np.linalg.eigvalsh(np.asarray(jax.hessian(rosenbrock)(jnp.asarray(x0)))).min() < 0
    ref = scipy.optimize.minimize(
        lambda x: float(rosenbrock(jnp.asarray(x))), x0, method="trust-exact",
        jac=lambda x: np.asarray(jax.grad(rosenbrock)(jnp.asarray(x))),
        hess=lambda x: np.asarray(jax.hessian(rosenbrock)(jnp.asarray(x))), options={"gtol": 1e-12},
    )
    res = jax.jit(lambda x: newton(rosenbrock, x, max_iter=100, tol=1e-12))(jnp.asarray(x0))  # f -> 0
    assert bool(res.converged)
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.x, [1.0, 1.0], rtol=0, atol=1e-8)


def log_cosh(x):
    return jnp.sum(jnp.logaddexp(x, -x))


def test_newton_needs_step_halving_from_a_far_start():
    # full Newton steps on log cosh diverge from |x| > 1.09 (3 -> -98 -> ...); halving converges
    x0 = jnp.array([3.0, -2.0, 0.5])
    damped = jax.jit(lambda x: newton(log_cosh, x))(x0)
    assert bool(damped.converged)
    np.testing.assert_allclose(damped.x, 0.0, rtol=0, atol=1e-8)
    undamped = jax.jit(lambda x: newton(log_cosh, x, max_halvings=0))(x0)
    assert not bool(undamped.converged)
    np.testing.assert_array_equal(undamped.x, x0)  # the only step length tried increased f


def test_newton_vmap_batch_equals_loop(poisson_data):
    X, _ = poisson_data
    rng = np.random.default_rng(1)
    ys = rng.poisson(np.exp(X @ rng.normal(0.0, 0.3, size=(4, 5)))).T.astype(float)  # 5 problems
    solve_one = jax.jit(lambda y: newton(poisson_nll, jnp.zeros(4), X, y))
    batch = jax.jit(jax.vmap(lambda y: newton(poisson_nll, jnp.zeros(4), X, y)))(ys)
    assert batch.x.shape == (5, 4) and batch.n_iter.shape == (5,) and bool(jnp.all(batch.converged))
    for i, y in enumerate(ys):
        one = solve_one(y)
        np.testing.assert_allclose(batch.x[i], one.x, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batch.value[i], one.value, rtol=1e-14)
        assert int(batch.n_iter[i]) == int(one.n_iter)


def test_newton_float32(poisson_data):
    X, y = poisson_data
    ref = jax.jit(lambda w0: newton(poisson_nll, w0, X, y))(jnp.zeros(4))
    res = jax.jit(lambda w0, X, y: newton(poisson_nll, w0, X, y, tol=1e-6))(
        jnp.zeros(4, jnp.float32), jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32))
    assert res.x.dtype == jnp.float32 and res.value.dtype == jnp.float32
    assert bool(res.converged)
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-4)


def test_newton_not_converged_flag_at_max_iter(poisson_data):
    X, y = poisson_data
    res = newton(poisson_nll, jnp.zeros(4), X, y, max_iter=1)
    assert int(res.n_iter) == 1 and not bool(res.converged)
    assert float(res.value) < float(poisson_nll(jnp.zeros(4), X, y))


def test_newton_custom_derivatives_and_solve_on_a_matrix():
    # separable objective on x of shape (3, 4): diagonal Hessian passed as a pytree and solved
    c = jnp.arange(1.0, 13.0).reshape(3, 4)
    obj = lambda x, c: jnp.sum(jnp.exp(x) - c * x)  # noqa: E731
    deriv = lambda x, c: (jnp.exp(x) - c, {"diag": jnp.exp(x)})  # noqa: E731
    res = newton(obj, jnp.zeros((3, 4)), c, derivatives=deriv, solve=lambda h, g: g / h["diag"], tol=1e-12)
    dense = newton(obj, jnp.zeros((3, 4)), c, tol=1e-12)  # default: dense Hessian of the flattened x
    assert res.x.shape == (3, 4) and bool(res.converged) and bool(dense.converged)
    np.testing.assert_allclose(res.x, jnp.log(c), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dense.x, jnp.log(c), rtol=0, atol=1e-10)


def test_newton_block_tridiagonal_latent_path_matches_dense():
    # Laplace mode of a Poisson LDS path: the Hessian passed as (diag, sub) blocks, solved in O(T K^3)
    from bayesneuro.latent import _blocktri as bt

    rng = np.random.default_rng(4)
    T, K, N = 30, 2, 5
    C, d = jnp.asarray(rng.normal(0.0, 0.5, (N, K))), jnp.full(N, 0.5)
    A, q = 0.9 * jnp.eye(K), 0.1
    ys = jnp.asarray(rng.poisson(1.5, size=(3, T, N)), dtype=float)

    def obj(x, y):
        eta = x @ C.T + d
        resid = x[1:] - x[:-1] @ A.T
        return jnp.sum(jnp.exp(eta) - y * eta) + 0.5 * jnp.sum(resid**2) / q + 0.5 * jnp.sum(x[0] ** 2)

    def derivatives(x, y):
        lam = jnp.exp(x @ C.T + d)
        prior = jnp.zeros((T, 1, 1)).at[0].add(1.0).at[1:].add(1.0 / q) * jnp.eye(K)
        prior = prior + jnp.zeros((T, 1, 1)).at[:-1].add(1.0) * (A.T @ A / q)
        diag = prior + jnp.einsum("tn,nk,nl->tkl", lam, C, C)
        sub = jnp.broadcast_to(-A / q, (T - 1, K, K))
        return jax.grad(obj)(x, y), (diag, sub)

    def solve(h, g):
        return bt.solve(bt.cholesky(*h), g)

    blocks = jax.jit(jax.vmap(lambda y: newton(obj, jnp.zeros((T, K)), y, derivatives=derivatives, solve=solve,
                                               tol=1e-12)))(ys)
    dense = jax.jit(jax.vmap(lambda y: newton(obj, jnp.zeros((T, K)), y, tol=1e-12)))(ys)
    assert bool(jnp.all(blocks.converged)) and blocks.x.shape == (3, T, K)
    np.testing.assert_allclose(blocks.x, dense.x, rtol=0, atol=1e-10)
    np.testing.assert_allclose(jax.vmap(jax.grad(obj))(blocks.x, ys), 0.0, atol=1e-8)


def test_newton_bad_solve_falls_back_to_the_gradient(poisson_data):
    X, y = poisson_data
    res = newton(poisson_nll, jnp.zeros(4), X, y, solve=lambda h, g: -dense_solve(h, g), max_iter=500)
    assert float(res.value) < float(poisson_nll(jnp.zeros(4), X, y))  # went downhill regardless


def test_dense_solve_pd_and_indefinite():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    h, g = a @ a.T + 5 * np.eye(5), rng.normal(size=5)
    np.testing.assert_allclose(dense_solve(jnp.asarray(h), jnp.asarray(g)), np.linalg.solve(h, g), rtol=1e-12)
    w, v = np.linalg.eigh(a + a.T)
    assert w.min() < 0 < w.max()
    step = dense_solve(jnp.asarray(a + a.T), jnp.asarray(g))
    np.testing.assert_allclose(step, v @ ((v.T @ g) / np.abs(w)), rtol=1e-10)
    assert float(step @ g) > 0  # a descent direction


# ---------------------------------------------------------------------------------------------
# EM
# ---------------------------------------------------------------------------------------------


def fa_log_likelihood(state, S, n):
    L, psi = state
    cov = L @ L.T + jnp.diag(psi)
    _, logdet = jnp.linalg.slogdet(cov)
    p = S.shape[0]
    return -0.5 * n * (p * jnp.log(2 * jnp.pi) + logdet + jnp.trace(jnp.linalg.solve(cov, S)))


TRACES = {"fa": 0}


def fa_step(state, S, n):
    """One EM step of factor analysis on the (1/n) sample covariance S; log-likelihood of state."""
    TRACES["fa"] += 1  # runs only while jax traces
    L, psi = state
    cov = L @ L.T + jnp.diag(psi)
    beta = jnp.linalg.solve(cov, L).T  # (latent, neuron)
    exx = jnp.eye(L.shape[1]) - beta @ L + beta @ S @ beta.T
    L_new = jnp.linalg.solve(exx, beta @ S).T
    psi_new = jnp.diag(S - L_new @ beta @ S)
    return (L_new, psi_new), fa_log_likelihood(state, S, n)


def fa_project(state):
    L, psi = state
    return L, jnp.maximum(psi, 1e-6)


@pytest.fixture(scope="module")
def fa_data():
    rng = np.random.default_rng(3)
    n, p, d = 600, 8, 2
    L = rng.normal(size=(p, d))
    x = rng.normal(size=(n, d)) @ L.T + rng.normal(size=(n, p)) * np.sqrt(rng.uniform(0.3, 1.5, p))
    xc = x - x.mean(0)
    S = xc.T @ xc / n
    init = (jnp.asarray(np.linalg.cholesky(S)[:, :d]), jnp.asarray(np.diag(S).copy()))
    return x, S, n, init


def test_em_factor_analysis_matches_sklearn(fa_data):
    from sklearn.decomposition import FactorAnalysis

    x, S, n, init = fa_data
    state, trace = run_em(fa_step, init, S, n, max_iter=5000, tol=1e-12, progress=False)
    assert isinstance(trace, EMTrace) and trace.converged
    assert trace.n_iter == len(trace.objective)
    assert np.all(np.diff(trace.objective) >= -1e-9 * np.abs(trace.objective[1:]))
    ref = FactorAnalysis(n_components=2, tol=1e-13, max_iter=100000, svd_method="lapack").fit(x)
    np.testing.assert_allclose(float(fa_log_likelihood(state, S, n)), ref.score(x) * n, rtol=1e-8)
    # the FA likelihood is flat: 1e-12 in the objective leaves ~1e-4 in the covariance
    L, psi = state
    np.testing.assert_allclose(L @ L.T + jnp.diag(psi), ref.get_covariance(), rtol=0, atol=1e-3)


def test_em_squarem_same_fixed_point_fewer_steps(fa_data):
    from sklearn.decomposition import FactorAnalysis

    x, S, n, init = fa_data
    plain, tp = run_em(fa_step, init, S, n, max_iter=5000, tol=1e-15, progress=False)
    fast, tf = run_em(fa_step, init, S, n, max_iter=5000, tol=1e-15, squarem=True, project=fa_project,
                      progress=False)
    assert tp.converged and tf.converged
    assert tf.n_iter < tp.n_iter / 2
    assert np.all(np.diff(tf.objective) >= -1e-9 * np.abs(tf.objective[1:]))  # kept points only
    np.testing.assert_allclose(fa_log_likelihood(fast, S, n), fa_log_likelihood(plain, S, n), rtol=1e-12)
    cov = lambda s: s[0] @ s[0].T + jnp.diag(s[1])  # noqa: E731  (loadings only up to rotation)
    np.testing.assert_allclose(cov(fast), cov(plain), rtol=0, atol=1e-4)
    ref = FactorAnalysis(n_components=2, tol=1e-13, max_iter=100000, svd_method="lapack").fit(x)
    np.testing.assert_allclose(cov(fast), ref.get_covariance(), rtol=0, atol=1e-6)


def test_em_squarem_rejected_jumps_fall_back_to_plain_em(fa_data):
    # three factors for two: a slow, partly flat likelihood on which some jumps overshoot
    _, S, n, (L0, psi0) = fa_data
    init = (jnp.asarray(np.linalg.cholesky(S)[:, :3]), psi0)
    fast, tf = run_em(fa_step, init, S, n, max_iter=300, tol=None, squarem=True, project=fa_project,
                      progress=False)
    plain, tp = run_em(fa_step, init, S, n, max_iter=300, tol=None, progress=False)
    assert tf.n_iter == tp.n_iter == 300
    assert len(tf.objective) < tf.n_iter  # some jumps were rejected (their objective is not kept)
    assert np.all(np.diff(tf.objective) >= 0.0)
    assert float(fa_log_likelihood(fast, S, n)) > float(fa_log_likelihood(plain, S, n))


def test_em_step_is_compiled_once(fa_data):
    _, S, n, init = fa_data
    jax.clear_caches()
    TRACES["fa"] = 0
    run_em(fa_step, init, S, n, max_iter=20, tol=None, progress=False)
    assert TRACES["fa"] == 1
    run_em(fa_step, init, S, n, max_iter=20, tol=None, squarem=True, project=fa_project, progress=False)
    run_em(fa_step, (init[0], np.asarray(init[1])), S, n, max_iter=5, tol=None, progress=False)
    assert TRACES["fa"] == 1  # a second run, SQUAREM jumps and NumPy inputs reuse the program
    static = jax.jit(fa_step, static_argnames="n")
    for _ in range(2):  # a partial of a jitted step is not wrapped again: its cache is reused
        run_em(functools.partial(static, n=n), init, S, max_iter=5, tol=None, progress=False)
    assert TRACES["fa"] == 2


def test_em_warns_at_max_iter(fa_data):
    _, S, n, init = fa_data
    with pytest.warns(ConvergenceWarning, match=r"FA: stopped at max_iter=3 .*raise max_iter"):
        _, trace = run_em(fa_step, init, S, n, max_iter=3, desc="FA", progress=False)
    assert not trace.converged and trace.n_iter == 3 and trace.objective.shape == (3,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_em(fa_step, init, S, n, max_iter=3, warn=False, progress=False)
        run_em(fa_step, init, S, n, max_iter=3, tol=None, progress=False)


def test_em_warns_when_the_objective_decreases():
    def bad_step(x):
        return x + 1.0, 10.0 - x  # objective falls by 1 each step

    with pytest.warns(ConvergenceWarning, match=r"decreased from 10 to 9 at iteration 1"):
        run_em(bad_step, 0.0, max_iter=5, tol=None, progress=False)


def test_em_nonfinite_objective_raises():
    with pytest.raises(FloatingPointError, match=r"non-finite .* at iteration 2"):
        run_em(lambda x: (x + 1.0, -jnp.log(1.0 - x)), -1.0, max_iter=10, progress=False)


@pytest.mark.parametrize("bad", [{"max_iter": -1}, {"max_iter": 2.5}, {"tol": -1.0}, {"tol": float("nan")}])
def test_em_bad_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        run_em(lambda x: (x, x), 0.0, progress=False, **bad)


def test_squarem_step_linear_map_lands_on_the_fixed_point():
    # F(x) = A x with A symmetric and contracting along one direction: the S3 jump is exact
    x0 = {"a": jnp.array([4.0, 0.0]), "count": jnp.array(7)}
    F = lambda x: {"a": 0.5 * x["a"], "count": x["count"] + 1}  # noqa: E731
    x1 = F(x0)
    x2 = F(x1)
    cand, smax = squarem_step(x0, x1, x2, jnp.array(4.0))
    np.testing.assert_allclose(cand["a"], 0.0, atol=1e-12)
    assert int(cand["count"]) == 9 and float(smax) == 4.0  # integers from x2; bound not binding
    cand, smax = squarem_step(x0, x1, x2, jnp.array(1.0))  # alpha = 2 clipped to 1: plain x2
    np.testing.assert_allclose(cand["a"], x2["a"], atol=1e-12)
    assert float(smax) == 4.0  # the bound bound, so it grows four-fold


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_host_squarem_equals_the_jitted_step(dtype):
    """The numpy extrapolation the EM loop uses equals :func:`squarem_step`, leaf types included,
    whether the bound binds or not, and with v = 0 (then x2)."""
    from bayesneuro.engine.em import _squarem_host

    rng = np.random.default_rng(3)
    x = [{"C": jnp.asarray(rng.normal(size=(4, 2)), dtype), "tau": jnp.asarray(rng.uniform(1, 2, 2), dtype),
          "n": jnp.array(k)} for k in range(3)]
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for smax in (1.0, 1.5, 64.0):
        ref, ref_max = squarem_step(*x, jnp.asarray(smax, dtype))
        got, got_max = _squarem_host(*x, jnp.asarray(smax, dtype))
        assert float(got_max) == float(ref_max) and got_max.dtype == ref_max.dtype
        for k in ("C", "tau"):
            assert got[k].dtype == ref[k].dtype and not got[k].weak_type
            np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol)
        assert int(got["n"]) == 2
    same, _ = _squarem_host(x[0], x[0], x[0], jnp.asarray(4.0, dtype))  # r = v = 0: alpha = 1, x2
    np.testing.assert_array_equal(same["C"], x[0]["C"])


def test_decrease_tol_silences_small_dips_only():
    """An approximate E-step may dip a little: decrease_tol sets how much passes without a warning."""
    values = jnp.array([-100.0, -99.0, -99.001, -98.9995, -98.9995])

    def step(k, v):
        return k + 1, v[jnp.minimum(k, v.shape[0] - 1)]

    with pytest.warns(ConvergenceWarning, match="decreased"):
        run_em(step, 0, values, max_iter=5, tol=1e-9, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_em(step, 0, values, max_iter=5, tol=1e-9, progress=False, decrease_tol=1e-4)
    with pytest.warns(ConvergenceWarning, match="decreased"):
        run_em(step, 0, values, max_iter=5, tol=1e-9, progress=False, decrease_tol=1e-6)
    with pytest.raises(ValueError, match="decrease_tol"):
        run_em(step, 0, values, max_iter=5, progress=False, decrease_tol=-1.0)


def test_float32_rounding_is_not_a_decrease():
    """A float32 objective wobbles by its rounding (a few eps relative): no 'decreased' warning for
    that, while the same relative dip in float64 is a real decrease and still warns."""
    big = 12345.678
    dip = 4 * float(np.finfo(np.float32).eps) * big  # 4 ulp-scale: rounding in float32

    def make(dtype):
        values = jnp.asarray([-big - 1.0, -big, -big - dip, -big - dip], dtype=dtype)
        return lambda k, v: (k + 1, v[jnp.minimum(k, v.shape[0] - 1)]), values

    step, values = make(jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_em(step, 0, values, max_iter=4, tol=None, progress=False)
    step, values = make(jnp.float64)
    with pytest.warns(ConvergenceWarning, match="decreased"):
        run_em(step, 0, values, max_iter=4, tol=None, progress=False)


def test_float32_cap_warning_says_tol_is_below_rounding():
    values = jnp.asarray([-10.0, -9.0, -8.5, -8.25], dtype=jnp.float32)
    step = lambda k, v: (k + 1, v[jnp.minimum(k, v.shape[0] - 1)])  # noqa: E731
    with pytest.warns(ConvergenceWarning, match="float32"):
        run_em(step, 0, values, max_iter=3, tol=1e-9, progress=False)
