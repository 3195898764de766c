"""Laplace for the GLM in memory ``O(data + neuron x weights^2)``: per-neuron Gram Hessians.

The GLM's posterior factorises over the modelled neurons: neuron ``n``'s weights enter only
its own linear predictor ``eta[:, n] = X_n beta_n`` and its own prior. So the Hessian of the
negative log posterior is block-diagonal, one block per neuron::

    H_n = J_n' (X_n' diag(w[:, n]) X_n) J_n + (prior Hessian of neuron n)

with ``w[t, n]`` the second derivative of the bin's negative log-likelihood in ``eta`` at the
mode, ``X_n`` the neuron's design (bias, stimulus features, own history features, coupling
features of every source: a filter fixed at zero, self-coupling or from a source outside
``coupling_sources``, gets zero columns in ``J_n``, so its weights keep the prior's curvature) and ``J_n`` the (linear) map from the neuron's unconstrained
parameters to its coefficients (the identity for Ridge and Flat, the prior's Cholesky factor
for Smooth's non-centred innovations). The Gram matrices are accumulated over blocks of time
bins, with the features built per block (from the design arrays, or in FFT mode from the
spike counts and the bases), so nothing larger than ``time x neuron`` plus one block of
features is formed, where ``jax.hessian`` of the whole potential pushes every parameter
direction through the data at once (memory ``O(time x parameters)``).

``J_n`` and the prior blocks come from automatic differentiation of the model itself on a
few bins (one Jacobian-vector / Hessian-vector product per position within a block, for all
neurons at once); the block structure is then checked against a Hessian-vector product of
the model's full potential on a prefix of the data, so a model change that couples neurons
raises instead of giving a wrong covariance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.util import constrain_fn, potential_energy

from bayesneuro._jit import jit

from .._shapes import bucket_length, pad_axis
from ..infer.fit import BlockHessian
from ._model import (
    GLMSpec,
    glm_model,
    inverse_link,
    linear_predictor,
    mask_self,
    observation_dist,
)
from .priors import Flat, Ridge, Smooth

__all__ = ["CHUNK_BYTES", "laplace_hessian"]

#: memory of one block of per-neuron features while the Gram matrices are accumulated
CHUNK_BYTES = 64 * 2**20
_TIME_KEYS = ("stimulus", "history", "coupling", "rows", "mask")
_KNOWN_KEYS = (*_TIME_KEYS, "spectra")
_PREFIX = 48  # bins of the structure check


def laplace_hessian(estimator, data, spec: GLMSpec, arrays: dict, counts, mask=None):
    """The ``hessian=`` hook of :func:`bayesneuro.infer.fit` for a GLM fit, or None.

    None (the generic column-blocked Hessian is used instead) when the observation model has
    a per-neuron shape parameter (negative binomial) or a prior other than Ridge, Flat and
    Smooth. The hook returns a :class:`~bayesneuro.infer.BlockHessian` with one block per
    neuron. ``mask`` (bins in the likelihood, ``(time,)`` bool; default: ``arrays["mask"]`` when
    the hook is called, else all bins) zeroes the curvature of the bins left out.
    """
    if spec.observation not in ("poisson", "bernoulli"):
        return None
    if any(not isinstance(p, (Ridge, Flat, Smooth)) for _, _, p in spec.weight_sites().values()):
        return None
    unknown = [k for k in arrays if k not in _KNOWN_KEYS]
    if unknown:
        raise ValueError(f"GLM Laplace: unknown model arrays {unknown}; the per-neuron Hessian does not know them")
    fft = spec.filter_mode == "fft" and bool(spec.history_basis or spec.coupling_basis)
    spikes = None
    if fft:
        gap = estimator._max_lag()
        seg = data.segment_ids
        dtype = np.dtype(jnp.zeros(()).dtype)
        bounds = np.flatnonzero(np.diff(seg)) + 1
        pieces = np.split(np.asarray(data.counts, dtype=dtype), bounds) if bounds.size else [np.asarray(data.counts, dtype)]
        empty = np.zeros((gap, data.n_neuron), dtype)
        n_lag = max(len(spec.history_matrix), len(spec.coupling_matrix))
        # n_lag leading zeros: row r of the model's spikes is row r + n_lag here
        spikes = np.concatenate([np.zeros((n_lag, data.n_neuron), dtype)]
                                + [p for piece in pieces for p in (piece, empty)][:-1])
        # trailing zeros change no bin's history: padded like the time axis (``counts`` has the
        # fit's bucketed length), so a recording of another length reuses the compiled programs
        extra = max(int(np.shape(counts)[0]) - data.n_time, 0)
        spikes = jnp.asarray(pad_axis(spikes, bucket_length(spikes.shape[0] + extra)) if extra else spikes)
    counts = jnp.asarray(counts)

    def hook(x, unravel):
        arr = dict(arrays)
        if mask is not None:
            arr["mask"] = jnp.asarray(mask)
        return _block_hessian(spec, arr, counts, spikes, x, unravel)

    return hook


def _prefix(spec: GLMSpec, arrays: dict, counts, n: int) -> tuple[dict, jax.Array]:
    """The model's arrays and counts of the first `n` bins (exact: the filters are causal)."""
    out = {k: (v[:n] if k in _TIME_KEYS else v) for k, v in arrays.items()}
    if "spectra" in arrays:
        hop = spec.n_fft - max(len(spec.history_matrix), len(spec.coupling_matrix))
        n_blocks = int(np.asarray(arrays["rows"][n - 1])) // hop + 1
        out["spectra"] = arrays["spectra"][:, :n_blocks]
    return out, counts[:n]


def _block_index(unravel, x, n_neuron: int) -> np.ndarray:
    """``(neuron, p)`` flat positions of each neuron's parameters (every site ends in neuron)."""
    tree = unravel(x)
    marks = {}
    for name, v in tree.items():
        if v.ndim == 0 or v.shape[-1] != n_neuron:
            raise ValueError(f"GLM Laplace: site {name!r} {v.shape} has no trailing neuron axis")
        marks[name] = jnp.broadcast_to(jnp.arange(n_neuron, dtype=x.dtype), v.shape)
    flat = np.asarray(ravel_pytree(marks)[0]).astype(int)
    index = [np.flatnonzero(flat == n) for n in range(n_neuron)]
    if len({len(i) for i in index}) != 1:
        raise ValueError("GLM Laplace: neurons have different numbers of parameters")
    return np.stack(index)


def _coefficients(spec: GLMSpec, params: dict) -> jax.Array:
    """``(neuron, q)`` coefficients of each neuron on its design columns (see :func:`_design`)."""
    n = spec.n_neuron
    cols = [params["bias"][None, :]]
    for g in spec.stimulus:
        cols.append(params[f"{g.name}_weights"].reshape(g.size, n))
    if spec.history_basis:
        cols.append(params["history_weights"])
    if spec.coupling_basis:
        w = mask_self(params["coupling_weights"], spec.self_index, spec.coupling_sources)
        cols.append(w.reshape(-1, n))
    return jnp.concatenate(cols, axis=0).T


def _features(spec: GLMSpec, arrays: dict, spikes, start, size: int, dtype):
    """Per-neuron design of bins ``start .. start + size - 1``: ``(size, neuron, q)``."""
    n = spec.n_neuron
    parts = [jnp.ones((size, n, 1), dtype)]
    if spec.stimulus:
        s = jax.lax.dynamic_slice_in_dim(arrays["stimulus"], start, size)
        parts.append(jnp.broadcast_to(s[:, None, :], (size, n, s.shape[1])))
    own_idx = jnp.asarray(spec.self_index)
    if spikes is not None:  # FFT mode: filter the spike counts of this block with the bases
        rows = jax.lax.dynamic_slice_in_dim(arrays["rows"], start, size)
        n_lag = max(len(spec.history_matrix), len(spec.coupling_matrix))
        # spikes row r + n_lag holds the model's row r; lag l + 1 reads row r - 1 - l
        win = spikes[rows[:, None] + n_lag - 1 - jnp.arange(n_lag)[None, :]]  # (size, lag, source)

        def filt(matrix):
            b = jnp.asarray(matrix, dtype)
            return jnp.einsum("tls,lb->tsb", win[:, : b.shape[0]], b)

        hist = filt(spec.history_matrix) if spec.history_basis else None
        if spec.coupling_basis:
            coup = hist if spec.coupling_shares_history and hist is not None else filt(spec.coupling_matrix)
    else:
        hist = None if "history" not in arrays else jax.lax.dynamic_slice_in_dim(arrays["history"], start, size)
        if spec.coupling_basis:
            src = arrays["history"] if spec.coupling_shares_history else arrays["coupling"]
            coup = jax.lax.dynamic_slice_in_dim(src, start, size)
    if spec.history_basis:
        parts.append(hist[:, own_idx, :])
    if spec.coupling_basis:
        flat = coup.reshape(size, -1)
        parts.append(jnp.broadcast_to(flat[:, None, :], (size, n, flat.shape[1])))
    return jnp.concatenate(parts, axis=-1)


def _gram(spec: GLMSpec, arrays: dict, spikes, w, chunk: int):
    """``G[n] = X_n' diag(w[:, n]) X_n`` accumulated over blocks of `chunk` bins."""
    n_time = w.shape[0]
    n_full, rest = divmod(n_time, chunk)

    def add(g, start, size):
        x = _features(spec, arrays, spikes, start, size, w.dtype)
        ws = jax.lax.dynamic_slice_in_dim(w, start, size)
        return g + jnp.einsum("tnq,tnr->nqr", x * ws[..., None], x)

    q = _features(spec, arrays, spikes, 0, 1, w.dtype).shape[-1]
    g = jnp.zeros((spec.n_neuron, q, q), w.dtype)
    if n_full:
        g = jax.lax.fori_loop(0, n_full, lambda i, g: add(g, i * chunk, chunk), g)
    if rest:
        g = add(g, n_full * chunk, rest)
    return g


def _curvature(spec: GLMSpec, params: dict, arrays: dict, counts):
    """``w[t, n]``: second derivative of the bin's negative log-likelihood in ``eta``."""
    eta = jnp.broadcast_to(linear_predictor(spec, params, arrays), counts.shape)

    def nll(e):
        mu = inverse_link(e, spec.link) * spec.bin_size
        return -jnp.sum(observation_dist(mu, spec.observation).log_prob(counts))

    # the negative log-likelihood is a sum of functions of single entries of eta: its Hessian is
    # diagonal, and the Hessian-vector product with ones is that diagonal
    w = jax.jvp(jax.grad(nll), (eta,), (jnp.ones_like(eta),))[1]
    if arrays.get("mask") is not None:  # bins left out of the likelihood have no curvature
        w = jnp.where(arrays["mask"][:, None], w, 0.0)
    return w


def _likelihood_blocks(spec, arrays, counts, spikes, params, q: int):
    w = _curvature(spec, params, arrays, counts)
    chunk = int(max(1, min(w.shape[0], CHUNK_BYTES // (8 * spec.n_neuron * q))))
    return _gram(spec, arrays, spikes, w, chunk)


def _block_hessian(spec: GLMSpec, arrays: dict, counts, spikes, x, unravel) -> BlockHessian:
    index = _block_index(unravel, x, spec.n_neuron)
    few, few_counts = _prefix(spec, arrays, counts, min(_PREFIX, counts.shape[0]))
    blocks, err = _blocks_jit(spec, unravel, x, jnp.asarray(index), arrays, counts, spikes, few, few_counts)
    err = float(err)
    # rounding of the two computations: 1e-8 in float64; float32 sums differ by ~1e-7 already
    tol = 1e-8 if x.dtype == jnp.float64 else 1e-4
    if not err <= tol:
        raise RuntimeError(
            f"GLM Laplace: the per-neuron Hessian differs from the model's own Hessian by {err:.1e} "
            "(relative) on the first bins: the model couples neurons' parameters in a way the "
            "block-diagonal Hessian does not know. Please report this; meanwhile pass "
            "hessian=None to fit (the generic column-blocked Hessian)."
        )
    return BlockHessian(blocks, index)


@functools.partial(jit, static_argnames=("spec", "unravel"))
def _blocks_jit(spec, unravel, x, index, arrays, counts, spikes, few, few_counts):
    """Per-neuron Hessian blocks, and their relative error on the prefix `few` of the data."""
    p = index.shape[1]
    kwargs = dict(spec=spec, counts=few_counts, **few)

    def constrained(u):
        return constrain_fn(glm_model, (), kwargs, unravel(u), return_deterministic=True)

    def coefs(u):
        return _coefficients(spec, constrained(u))

    prior_model = handlers.block(glm_model, hide=["counts"])

    def prior_potential(u):
        return potential_energy(prior_model, (), kwargs, unravel(u))

    # one tangent per position j within a block, set in every neuron's block at once: since
    # neurons do not share parameters, block n of the result is column j of neuron n's matrix
    tangents = jnp.zeros((p, x.shape[0]), x.dtype).at[jnp.arange(p)[:, None], index.T].set(1.0)

    def one(v):
        dcoef = jax.jvp(coefs, (x,), (v,))[1]  # (neuron, q)
        dgrad = jax.jvp(jax.grad(prior_potential), (x,), (v,))[1]  # (d,)
        return dcoef, dgrad[index]  # (neuron, p)

    dcoef, dprior = jax.lax.map(one, tangents)  # (p, neuron, q), (p, neuron, p)
    jac, prior = jnp.transpose(dcoef, (1, 2, 0)), jnp.transpose(dprior, (1, 2, 0))
    q = jac.shape[1]
    params = constrained(x)

    def combine(gram):
        return jnp.einsum("nqi,nqr,nrj->nij", jac, gram, jac) + prior

    blocks = combine(_likelihood_blocks(spec, arrays, counts, spikes, params, q))
    # the structure check: block Hessian on the first bins against the model's own product
    few_blocks = combine(_likelihood_blocks(spec, few, few_counts, spikes, params, q))
    v = jax.random.normal(jax.random.key(0), x.shape, x.dtype)
    ref = jax.jvp(jax.grad(lambda u: potential_energy(glm_model, (), kwargs, unravel(u))), (x,), (v,))[1]
    got = jnp.zeros_like(x).at[index].set(jnp.einsum("nij,nj->ni", few_blocks, v[index]))
    err = jnp.max(jnp.abs(got - ref)) / jnp.maximum(jnp.max(jnp.abs(ref)), 1e-300)
    return blocks, err
