r"""Symmetric positive-definite block-tridiagonal matrices, in O(T K^3) with ``lax.scan``.

A block-tridiagonal matrix ``M`` of ``T x T`` blocks of size ``K x K`` is stored as its
diagonal blocks ``diag[t] = M[t, t]`` with shape ``(T, K, K)`` and its sub-diagonal blocks
``sub[t] = M[t + 1, t]`` with shape ``(T - 1, K, K)``; the super-diagonal blocks are
``M[t, t + 1] = sub[t].T``. The precision of a linear-Gaussian state-space path has this form,
and so has the Hessian of a Poisson LDS log joint in the latent path.

The block Cholesky factor ``M = G G^T`` is block lower-bidiagonal: lower-triangular diagonal
blocks ``G[t, t]`` and sub-diagonal blocks ``G[t + 1, t]``,

.. math::

    G_{0} = \operatorname{chol}(M_{00}), \quad
    E_t = M_{t+1,t} G_t^{-T}, \quad
    G_{t+1} = \operatorname{chol}(M_{t+1,t+1} - E_t E_t^T).

Everything here is pure JAX (arrays in, NamedTuples out): it jits, vmaps over a batch of
matrices (e.g. trials) and differentiates. A matrix that is not positive definite gives NaNs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from bayesneuro._jit import jit

__all__ = [
    "BlockCholesky",
    "cholesky",
    "factor_transpose_matvec",
    "logdet",
    "matvec",
    "selected_inverse",
    "solve",
    "solve_factor_transpose",
    "to_dense",
]


class BlockCholesky(NamedTuple):
    """Block lower-bidiagonal Cholesky factor ``G`` of a block-tridiagonal matrix ``M = G G^T``.

    Attributes
    ----------
    diag : Array, shape (T, K, K)
        Lower-triangular diagonal blocks ``G[t, t]`` (positive diagonals).
    sub : Array, shape (T - 1, K, K)
        Sub-diagonal blocks ``G[t + 1, t]``.
    """

    diag: jax.Array
    sub: jax.Array


def _tri(a, b, *, trans: bool = False):
    """``a^{-1} b`` (or ``a^{-T} b``) for lower-triangular ``a``."""
    return solve_triangular(a, b, lower=True, trans=1 if trans else 0)


@jit
def cholesky(diag: jax.Array, sub: jax.Array) -> BlockCholesky:
    """Block Cholesky factor of a symmetric positive-definite block-tridiagonal matrix.

    Parameters
    ----------
    diag : Array, shape (T, K, K)
        Diagonal blocks ``M[t, t]`` (symmetric).
    sub : Array, shape (T - 1, K, K)
        Sub-diagonal blocks ``M[t + 1, t]``.

    Returns
    -------
    BlockCholesky
        ``G`` with ``M = G G^T``; NaNs where ``M`` is not positive definite.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent import _blocktri as bt
    >>> diag = jnp.stack([2.0 * jnp.eye(2)] * 3)
    >>> sub = jnp.stack([-0.5 * jnp.eye(2)] * 2)
    >>> G = bt.cholesky(diag, sub)
    >>> bool(jnp.allclose(bt.to_dense(*bt._product(G)), bt.to_dense(diag, sub), atol=1e-6))
    True
    """
    g0 = jnp.linalg.cholesky(diag[0])

    def step(g_prev, blocks):
        d, s = blocks
        e = _tri(g_prev, s.T).T  # E G_prev^T = S
        g = jnp.linalg.cholesky(d - e @ e.T)
        return g, (g, e)

    _, (gs, es) = lax.scan(step, g0, (diag[1:], sub))
    return BlockCholesky(jnp.concatenate([g0[None], gs], axis=0), es)


def _product(chol: BlockCholesky) -> tuple[jax.Array, jax.Array]:
    """Blocks of ``G G^T`` (for checks)."""
    g, e = chol
    diag = jnp.einsum("tij,tkj->tik", g, g)
    diag = diag.at[1:].add(jnp.einsum("tij,tkj->tik", e, e))
    sub = jnp.einsum("tij,tkj->tik", e, g[:-1])
    return diag, sub


def _as_matrix(b: jax.Array) -> tuple[jax.Array, bool]:
    return (b[..., None], True) if b.ndim == 2 else (b, False)


@jit
def solve(chol: BlockCholesky, b: jax.Array) -> jax.Array:
    """Solve ``M x = b`` given the factor of ``M``.

    Parameters
    ----------
    chol : BlockCholesky
        Factor from :func:`cholesky`.
    b : Array, shape (T, K) or (T, K, m)
        Right-hand side(s).

    Returns
    -------
    Array
        ``x``, the shape of ``b``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent import _blocktri as bt
    >>> diag = jnp.stack([3.0 * jnp.eye(2)] * 4)
    >>> sub = jnp.stack([jnp.eye(2)] * 3)
    >>> b = jnp.arange(8.0).reshape(4, 2)
    >>> x = bt.solve(bt.cholesky(diag, sub), b)
    >>> bool(jnp.allclose(bt.matvec(diag, sub, x), b, atol=1e-5))
    True
    """
    g, e = chol
    b, vector = _as_matrix(b)
    z0 = _tri(g[0], b[0])

    def forward(z_prev, blocks):
        gt, et, bt_ = blocks
        z = _tri(gt, bt_ - et @ z_prev)
        return z, z

    _, zs = lax.scan(forward, z0, (g[1:], e, b[1:]))
    x = solve_factor_transpose(chol, jnp.concatenate([z0[None], zs], axis=0))
    return x[..., 0] if vector else x


@jit
def solve_factor_transpose(chol: BlockCholesky, z: jax.Array) -> jax.Array:
    """Solve ``G^T x = z`` (block upper-bidiagonal back substitution); ``z`` is (T, K) or (T, K, m).

    With ``z`` standard normal, ``x`` is a draw from ``N(0, M^{-1})``.
    """
    g, e = chol
    x_last = _tri(g[-1], z[-1], trans=True)

    def backward(x_next, blocks):
        gt, et, zt = blocks
        x = _tri(gt, zt - et.T @ x_next, trans=True)
        return x, x

    _, xs = lax.scan(backward, x_last, (g[:-1], e, z[:-1]), reverse=True)
    return jnp.concatenate([xs, x_last[None]], axis=0)


@jit
def factor_transpose_matvec(chol: BlockCholesky, x: jax.Array) -> jax.Array:
    """``G^T x`` for ``x`` of shape (T, K): ``(G^T x)_t = G_t^T x_t + E_t^T x_{t+1}``."""
    g, e = chol
    out = jnp.einsum("tji,tj->ti", g, x)
    return out.at[:-1].add(jnp.einsum("tji,tj->ti", e, x[1:]))


@jit
def logdet(chol: BlockCholesky) -> jax.Array:
    """``log det M = 2 sum log diag G``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent import _blocktri as bt
    >>> diag, sub = jnp.stack([2.0 * jnp.eye(3)] * 5), jnp.zeros((4, 3, 3))
    >>> round(float(bt.logdet(bt.cholesky(diag, sub)) / jnp.log(2.0)), 4)  # 15 blocks of log 2
    15.0
    """
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol.diag, axis1=-2, axis2=-1)))


@jit
def selected_inverse(chol: BlockCholesky) -> tuple[jax.Array, jax.Array]:
    r"""Diagonal and first sub-diagonal blocks of ``M^{-1}``, without forming it.

    With ``J_t = G_t^{-T} E_t^T`` the recursion runs backwards from
    ``S_{T-1} = (G_{T-1} G_{T-1}^T)^{-1}``:

    .. math::

        S_{t+1,t} = -S_{t+1} J_t^T, \qquad
        S_t = (G_t G_t^T)^{-1} + J_t S_{t+1} J_t^T.

    For a posterior precision these are the marginal covariances ``Cov(x_t)`` and the
    cross-covariances ``Cov(x_{t+1}, x_t)``.

    Parameters
    ----------
    chol : BlockCholesky
        Factor from :func:`cholesky`.

    Returns
    -------
    cov : Array, shape (T, K, K)
        ``(M^{-1})[t, t]``.
    cross : Array, shape (T - 1, K, K)
        ``(M^{-1})[t + 1, t]``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesneuro.latent import _blocktri as bt
    >>> diag = jnp.stack([3.0 * jnp.eye(2)] * 4)
    >>> sub = jnp.stack([jnp.eye(2)] * 3)
    >>> cov, cross = bt.selected_inverse(bt.cholesky(diag, sub))
    >>> dense = jnp.linalg.inv(bt.to_dense(diag, sub))
    >>> bool(jnp.allclose(cov[1], dense[2:4, 2:4], atol=1e-6) and jnp.allclose(cross[0], dense[2:4, 0:2], atol=1e-6))
    True
    """
    g, e = chol
    k = g.shape[-1]
    eye = jnp.eye(k, dtype=g.dtype)

    def inv_gram(gt):
        ginv = _tri(gt, eye)
        return ginv.T @ ginv

    s_last = inv_gram(g[-1])

    def backward(s_next, blocks):
        gt, et = blocks
        j = _tri(gt, et.T, trans=True)  # G_t^{-T} E_t^T
        cross = -s_next @ j.T  # S_{t+1, t}
        s = inv_gram(gt) + j @ s_next @ j.T
        s = 0.5 * (s + s.T)
        return s, (s, cross)

    _, (ss, crosses) = lax.scan(backward, s_last, (g[:-1], e), reverse=True)
    return jnp.concatenate([ss, s_last[None]], axis=0), crosses


@jit
def matvec(diag: jax.Array, sub: jax.Array, x: jax.Array) -> jax.Array:
    """``M x`` for a block-tridiagonal ``M`` and ``x`` of shape (T, K)."""
    out = jnp.einsum("tij,tj->ti", diag, x)
    out = out.at[1:].add(jnp.einsum("tij,tj->ti", sub, x[:-1]))
    return out.at[:-1].add(jnp.einsum("tji,tj->ti", sub, x[1:]))


def to_dense(diag: jax.Array, sub: jax.Array) -> jax.Array:
    """The full ``(T K, T K)`` matrix (for tests and small problems)."""
    t, k = diag.shape[0], diag.shape[-1]
    out = jnp.zeros((t * k, t * k), dtype=diag.dtype)
    for i in range(t):
        out = out.at[i * k : (i + 1) * k, i * k : (i + 1) * k].set(diag[i])
        if i + 1 < t:
            out = out.at[(i + 1) * k : (i + 2) * k, i * k : (i + 1) * k].set(sub[i])
            out = out.at[i * k : (i + 1) * k, (i + 1) * k : (i + 2) * k].set(sub[i].T)
    return out
