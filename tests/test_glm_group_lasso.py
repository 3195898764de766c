"""Group lasso on coupling filters at MAP: optimality (KKT) checked with an independent numpy
gradient, the proximal solver against sklearn's Lasso, and recovery of a known sparse network."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

import bayesneuro as bn
from bayesneuro.glm import GroupLasso, Ridge
from bayesneuro.infer.optimize import minimize_proximal

from .test_glm import _simulate_population


@pytest.fixture(scope="module")
def sparse_population():
    # 5 neurons, 3 true edges out of 20 possible
    return _simulate_population(3, n_time=30000, n_neuron=5)


def _glm(hist_basis, stim_basis, strength):
    return bn.PoissonGLM(
        stimulus_basis=stim_basis, history_basis=hist_basis, coupling=True, prior=Ridge(2.0),
        coupling_prior=GroupLasso(strength), bias_prior=None,
    )


def _nll_gradient(glm, data):
    """d(-log-likelihood)/d(coupling weights), (source, basis, neuron), from an explicit numpy design."""
    p = glm.params_
    X_stim = np.asarray(bn.bases.design_matrix(data.covariates, glm.stimulus_basis, history=False))
    C = np.asarray(bn.bases.design_matrix(data.counts, glm.history_basis, history=True))  # (time, source*basis)
    C = C.reshape(data.n_time, data.n_neuron, -1)
    grads = np.zeros_like(p["coupling_weights"])
    for n in range(data.n_neuron):
        w = p["coupling_weights"][:, :, n].copy()
        w[n] = p["history_weights"][:, n]
        eta = p["bias"][n] + X_stim @ p["stimulus_weights"][..., n].ravel() + np.einsum("tmb,mb->t", C, w)
        resid = np.exp(eta) * data.bin_size - data.counts[:, n]
        grads[:, :, n] = np.einsum("tmb,t->mb", C, resid)
    return grads


@pytest.mark.slow  # ~16 s: proximal fits at several penalties
def test_group_lasso_map_satisfies_the_optimality_conditions(sparse_population):
    """Zero filters: the gradient lies inside the penalty's subdifferential ball; non-zero
    filters: the gradient balances the penalty's gradient exactly."""
    data, _truth, hist_basis, stim_basis = sparse_population
    lam = 15.0
    glm = _glm(hist_basis, stim_basis, lam).fit(data, key=0, progress=False, tol=1e-7)
    assert glm.result_.info["converged"]
    B = np.asarray(hist_basis.matrix())
    G = B.T @ B
    G_inv = np.linalg.inv(G)
    g = _nll_gradient(glm, data)
    w = glm.params_["coupling_weights"]
    n_zero = n_active = 0
    for n in range(data.n_neuron):
        for m in range(data.n_neuron):
            if m == n:
                continue
            wg, gg = w[m, :, n], g[m, :, n]
            norm = np.sqrt(wg @ G @ wg)
            if norm == 0:
                n_zero += 1
                assert np.sqrt(gg @ G_inv @ gg) <= lam * (1 + 1e-3), (m, n)
            else:
                n_active += 1
                np.testing.assert_allclose(gg + lam * G @ wg / norm, 0.0, atol=2e-3 * lam)
    assert n_zero > 0 and n_active > 0  # the test exercises both conditions


@pytest.mark.slow  # ~14 s: a network of group-lasso fits
def test_group_lasso_finds_the_true_sparse_network(sparse_population):
    data, truth, hist_basis, stim_basis = sparse_population
    true = np.zeros((data.n_neuron, data.n_neuron), bool)
    for src, dst in truth["edges"]:
        true[dst, src] = True
    # strengths from 60 to 200 all give exactly the true network on these data; 100 is mid-range
    glm = _glm(hist_basis, stim_basis, 100.0).fit(data, key=0, progress=False)
    net = glm.coupling_network().values
    assert (net == true).all(), (net.astype(int), true.astype(int))
    # a huge penalty removes every edge; a tiny one keeps almost all (dense like ridge)
    empty = _glm(hist_basis, stim_basis, 1e5).fit(data, key=0, progress=False).coupling_network().values
    assert not empty.any()
    dense = _glm(hist_basis, stim_basis, 1e-3).fit(data, key=0, progress=False).coupling_network().values
    assert dense.sum() >= data.n_neuron * (data.n_neuron - 1) - 2


def test_group_lasso_refuses_laplace_and_other_blocks(sparse_population):
    data, _, hist_basis, stim_basis = sparse_population
    with pytest.raises(ValueError, match="no Laplace approximation|curvature"):
        _glm(hist_basis, stim_basis, 5.0).fit(data.time_slice(0, 20.0), method="laplace", key=0, progress=False)
    with pytest.raises(ValueError, match="coupling filters"):
        bn.PoissonGLM(history_basis=hist_basis, history_prior=GroupLasso(1.0))


def test_proximal_solver_equals_sklearn_lasso():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 30))
    beta = np.zeros(30)
    beta[:4] = [2.0, -1.5, 1.0, 0.5]
    y = X @ beta + rng.normal(size=200)
    alpha = 0.1
    ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, y).coef_
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    f = lambda b: jnp.sum((yj - Xj @ b) ** 2) / (2 * len(y))
    F = lambda b: f(b) + alpha * jnp.sum(jnp.abs(b))
    soft = lambda v, s: jnp.sign(v) * jnp.maximum(jnp.abs(v) - alpha * s, 0.0)
    res = minimize_proximal(f, F, soft, jnp.zeros(30), tol=1e-10, progress=False)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), ref, atol=1e-6)
    assert ((np.asarray(res.x) == 0) == (ref == 0)).all()
