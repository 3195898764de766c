"""Laplace without ``jax.hessian`` of the whole potential: column-blocked Hessians and the GLM's
per-neuron Gram Hessians, against the dense Hessian they replace."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesneuro as bn
from bayesneuro import infer
from bayesneuro.glm import Flat, Smooth
from bayesneuro.infer.fit import BlockHessian, _jit_hessian_columns, _program


def _regression(x=None, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.StudentT(4.0, x @ w, s), obs=y)


def test_hessian_columns_equal_jax_hessian():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(40, 6)))
    y = x @ jnp.arange(6.0) + jnp.asarray(rng.normal(size=40))
    data = {"x": x, "y": y}
    prog, arrays = _program(_regression, data, "laplace")
    u = jnp.asarray(rng.normal(size=7))
    ref = jax.hessian(prog.potential)(u, arrays)
    for batch in (1, 3, 7):  # one column per pass, a ragged last pass, all at once
        got = _jit_hessian_columns(prog.potential, u, arrays, batch=batch)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * float(jnp.abs(ref).max()))


def test_laplace_by_column_blocks_equals_dense_and_block_hook():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    y = x @ np.array([1.0, -0.5, 0.0, 2.0]) + rng.normal(size=60)
    kw = {"method": "laplace", "key": 0, "progress": False, "num_samples": 50, "x": x, "y": y}
    one = infer.fit(_regression, hessian_batch=1, **kw)
    all_ = infer.fit(_regression, hessian_batch=5, **kw)
    np.testing.assert_allclose(one.info["cov"], all_.info["cov"], rtol=0, atol=1e-12)
    assert one.info["hessian"] == "dense, 1 columns per pass"
    # a user hook returning the same matrix as one block gives the same Gaussian
    prog, arrays = _program(_regression, {"x": x, "y": y}, "laplace")

    def hook(u, unravel):
        return BlockHessian(jax.hessian(prog.potential)(u, arrays)[None], np.arange(u.shape[0])[None])

    blk = infer.fit(_regression, hessian=hook, **kw)
    assert blk.info["hessian"] == "structured"
    np.testing.assert_allclose(blk.info["cov"], all_.info["cov"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(blk.info["log_marginal_likelihood"], all_.info["log_marginal_likelihood"], rtol=1e-12)


def _data(n_time=500, n_neuron=3, covariate=False):
    rng = np.random.default_rng(2)
    counts = rng.poisson(0.15, size=(n_time, n_neuron))
    cov = rng.normal(size=(n_time, 1)) if covariate else None
    return bn.SpikeData.from_counts(counts, bin_size=0.01, covariates=cov,
                                    feature_names=("x",) if covariate else None)


def _flat(d):
    return np.concatenate([np.ravel(d[k]) for k in sorted(d)])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fft", "design"])
def test_glm_laplace_per_neuron_equals_dense_hessian(mode):
    """Mode and covariance of the per-neuron Gram Laplace equal jax.hessian's to 1e-10."""
    data = _data(covariate=mode == "design")
    kw = {"history_basis": bn.bases.RaisedCosineLog(3, window=8), "coupling": True, "filter_mode": mode}
    if mode == "fft":  # the first 8 bins are left out of the likelihood (zero curvature there)
        kw.update(exclude_initial_bins=True)
    if mode == "design":  # a stimulus filter and the non-centred Smooth prior too
        kw.update(stimulus_basis=bn.bases.RaisedCosineLinear(2, window=4), history_prior=Smooth(1.0, 0.5))
    fast = bn.PoissonGLM(**kw).fit(data, method="laplace", key=0, progress=False, num_samples=20)
    dense = bn.PoissonGLM(**kw).fit(data, method="laplace", key=0, progress=False, num_samples=20, hessian=None)
    a, b = fast.result_.info, dense.result_.info
    assert a["hessian"] == "structured" and b["hessian"].startswith("dense")
    np.testing.assert_allclose(_flat(a["mode"]), _flat(b["mode"]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["cov"], b["cov"], rtol=0, atol=1e-10 * np.abs(b["cov"]).max())
    np.testing.assert_allclose(a["log_marginal_likelihood"], b["log_marginal_likelihood"], rtol=1e-10)
    assert a["cov_blocks"].shape[0] == data.n_neuron


def test_glm_laplace_not_positive_definite_raises():
    """A flat prior on coupling leaves the (unused) self-coupling weights without curvature."""
    glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(2, window=6), coupling=True, coupling_prior=Flat())
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        glm.fit(_data(300, 2), method="laplace", key=0, progress=False, num_samples=5)


@pytest.mark.slow  # ~6 s: one Laplace compilation
def test_glm_laplace_other_length_compiles_nothing_and_padding_changes_nothing():
    """Issue 21, point 1: Laplace pads the time axis to a bucket length like MAP (masked bins, and
    zero spikes behind the per-neuron Hessian's features), so a second recording of another length
    in the same bucket compiles nothing; the covariance equals the inverse of ``jax.hessian`` of the
    potential on the recording's own (unpadded) bins."""
    from jax.flatten_util import ravel_pytree

    from bayesneuro._shapes import bucket_length, count_compilations
    from bayesneuro.glm._model import glm_model

    data = _data(500)
    assert bucket_length(470) == bucket_length(500) != 500
    kw = {"history_basis": bn.bases.RaisedCosineLog(3, window=8), "coupling": True}
    bn.PoissonGLM(**kw).fit(data, method="laplace", key=0, progress=False, num_samples=20)
    short = bn.SpikeData.from_counts(data.counts[:470], bin_size=data.bin_size)
    with count_compilations() as c:
        fit = bn.PoissonGLM(**kw).fit(short, method="laplace", key=0, progress=False, num_samples=20)
    assert c.compilations == 0
    info, model_kwargs = fit.result_.info, fit.result_.model_kwargs
    assert model_kwargs["counts"].shape[0] == 470 and "mask" not in model_kwargs
    prog, arrays = _program(glm_model, model_kwargs, "laplace")
    u = ravel_pytree({k: jnp.asarray(v) for k, v in info["mode"].items()})[0]
    assert float(jnp.abs(jax.grad(prog.potential)(u, arrays)).max()) < 1e-4  # the optimum (L-BFGS tolerance)
    ref = np.linalg.inv(np.asarray(jax.hessian(prog.potential)(u, arrays)))
    np.testing.assert_allclose(info["cov"], ref, rtol=0, atol=1e-10 * np.abs(ref).max())
