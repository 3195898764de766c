r"""Population maximum-entropy models of binary spike words (Schneidman et al. 2006; Tkacik et al. 2014).

Each time bin gives a word :math:`x \in \{0,1\}^N` (spike / no spike per neuron,
:func:`binarize`). A maximum-entropy model constrains the averages of chosen statistics
:math:`s(x)` and is the exponential family :math:`P(x) = e^{\theta^\top s(x)}/Z(\theta)`:

======================  ===================================================  =====================
kind                    :math:`\log P^*(x)`                                  statistics matched
======================  ===================================================  =====================
``"independent"``       :math:`h^\top x`                                     firing probabilities
``"synchrony"``         :math:`V(K)`, :math:`K = \sum_i x_i`                 P(K)
``"ising"``             :math:`h^\top x + \sum_{i<j} J_{ij} x_i x_j`          means, pairwise
``"k-pairwise"``        :math:`h^\top x + \sum_{i<j} J_{ij} x_i x_j + V(K)`  means, pairwise, P(K)
======================  ===================================================  =====================

Gauge. :math:`V(0)` only shifts :math:`\log Z`, so :math:`V(0) = 0` always. In the k-pairwise
model a :math:`V` linear in :math:`K` equals a uniform shift of every :math:`h_i`, and
:math:`K^2 = K + 2\sum_{i<j} x_i x_j` makes a quadratic :math:`V` a uniform shift of every
:math:`J_{ij}`; fixing :math:`V(0) = V(1) = V(2) = 0` removes exactly these three directions
(a quadratic through three points is unique), so the free potential is :math:`V(3..N)`.

Likelihood. The data enter only through their mean statistics :math:`\bar s`:
:math:`\log p(X \mid \theta) = T\,[\theta^\top \bar s - \log Z(\theta)]` for :math:`T` bins.
The prior is :math:`\theta_k \sim N(0, \sigma^2)` (``prior_scale`` :math:`\sigma`, per block
settable). By default (``"auto"``) the fields get :math:`\sigma = 5` and the coupling /
potential SD is chosen by held-out likelihood on contiguous inner folds of the training words
(a fixed large SD over-fits hundreds of couplings on a few thousand words). The mode is found
by ``bayesneuro.infer.fit(method="map")`` on :func:`maxent_model` (exact :math:`\log Z`) or by
persistent-chain Boltzmann learning (``method="mc"``). The posterior is Laplace's Gaussian with precision
:math:`T\,\mathrm{Cov}_\theta[s] + \sigma^{-2} I`, which is the exact Hessian of the negative log
posterior of an exponential family (the same matrix ``infer.fit(method="laplace")`` computes by
autodiff, since every site is unconstrained); in MC mode the covariance is estimated from Gibbs
samples at the estimate.

Exact :math:`\log Z`: closed forms for ``"independent"`` (:math:`\sum_i \log(1+e^{h_i})`) and
``"synchrony"`` (:math:`\log\sum_K \binom NK e^{V(K)}`) at any :math:`N`, so these two kinds are
always fitted exactly; enumeration of all :math:`2^N` words, in chunks, for the others
(:math:`N \le 20`). Larger pairwise models need ``method="mc"``, whose held-out likelihood uses
an annealed-importance-sampling estimate of :math:`\log Z` (:mod:`._maxent_mc`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax.scipy.special import gammaln, logsumexp
from numpyro.infer import init_to_value

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from .._shapes import bucket_length, pad_axis
from ..estimator import Estimator, resolve_key, split_key
from ..infer import fit as _infer_fit
from ..infer.fit import progress_default
from . import _maxent_mc as mc

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KINDS",
    "MAX_EXACT_NEURONS",
    "PRIOR_CANDIDATES",
    "MaxEnt",
    "MaxEntParams",
    "Moments",
    "SufficientStatistics",
    "binarize",
    "compare_population_models",
    "log_partition",
    "maxent_model",
    "model_moments",
    "observed_moments",
    "plot_moments",
    "sufficient_statistics",
]

KINDS = ("independent", "synchrony", "ising", "k-pairwise")
MAX_EXACT_NEURONS = 20
_CHUNK = 2**12
LN2 = math.log(2.0)


# -- data --------------------------------------------------------------------------------------


def binarize(counts: Any, *, check_constant: bool = True) -> np.ndarray:
    """Spike / no-spike words from spike counts.

    Parameters
    ----------
    counts : SpikeData or array, shape (time, neuron)
        Non-negative whole-number counts (or booleans). Any count above zero becomes 1.
    check_constant : bool
        Raise if a neuron never spikes or spikes in every bin. Their maximum-entropy field is
        infinite (the prior keeps it finite but arbitrary): drop such neurons before fitting.
        Held-out data (``log_likelihood``, ``score``) are binarised without this check.

    Returns
    -------
    ndarray of float64, shape (time, neuron)
        Binary words (0.0 / 1.0).

    Raises
    ------
    ValueError
        Not 2-D, no bins or neurons, NaN/inf, negative or non-integer values, or (with
        ``check_constant``) a neuron that never or always spikes.

    Examples
    --------
    >>> binarize([[0, 2], [1, 0], [0, 1]]).tolist()
    [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    """
    from .._validation import _as_counts
    from ..data import SpikeData

    ids = None
    if isinstance(counts, SpikeData):
        ids, counts = np.asarray(counts.neuron_ids), counts.counts
    x = (_as_counts(counts) > 0).astype(np.float64)
    if check_constant:
        ids = np.arange(x.shape[1]) if ids is None else ids
        rate = x.mean(axis=0)
        for bad, what in ((rate == 0, "never spike"), (rate == 1, "spike in every bin")):
            if bad.any():
                raise ValueError(
                    f"neuron(s) {ids[bad][:10].tolist()} {what}: their maximum-entropy fields are "
                    "infinite; drop them (or use a longer recording / smaller bins) before fitting"
                )
    return x


def _neuron_ids(data: Any, n: int) -> np.ndarray:
    from ..data import SpikeData

    return np.asarray(data.neuron_ids) if isinstance(data, SpikeData) else np.arange(n)


class SufficientStatistics(NamedTuple):
    """Mean sufficient statistics of binary words: all the likelihood needs.

    Attributes
    ----------
    mean : array, shape (neuron,)
        Firing probability per neuron, :math:`\\bar x_i`.
    pair : array, shape (pair,)
        Co-activation :math:`\\overline{x_i x_j}` for ``i < j`` in ``np.triu_indices(N, 1)`` order.
    synchrony : array, shape (N + 1,)
        Empirical P(K) of the population count ``K = 0..N``.
    n_bins : int
        Number of words T.
    """

    mean: jax.Array
    pair: jax.Array
    synchrony: jax.Array
    n_bins: int


def sufficient_statistics(words: Any) -> SufficientStatistics:
    """Mean statistics of binary words (time, neuron).

    Examples
    --------
    >>> s = sufficient_statistics([[1, 1], [0, 1]])
    >>> s.mean.tolist(), s.pair.tolist(), s.synchrony.tolist()
    ([0.5, 1.0], [0.5], [0.0, 0.5, 0.5])
    """
    x = np.asarray(words, dtype=np.float64)
    n = x.shape[1]
    iu = np.triu_indices(n, 1)
    pair = (x.T @ x / x.shape[0])[iu]
    k = x.sum(axis=1).astype(np.int64)
    syn = np.bincount(k, minlength=n + 1) / x.shape[0]
    return SufficientStatistics(x.mean(axis=0), pair, syn, x.shape[0])


# -- parameters and gauge ------------------------------------------------------------------------


class MaxEntParams(NamedTuple):
    """Full parameters of a population maximum-entropy model (unused blocks are zero).

    Attributes
    ----------
    h : array, shape (neuron,)
        Fields.
    J : array, shape (pair,)
        Couplings :math:`J_{ij}`, ``i < j`` in ``np.triu_indices(N, 1)`` order.
    V : array, shape (N + 1,)
        Population-count potential :math:`V(K)`; gauge-fixed entries are zero.
    """

    h: jax.Array
    J: jax.Array
    V: jax.Array


class _Layout(NamedTuple):
    """Which entries of MaxEntParams are free for one kind (hashable: used as a static arg)."""

    kind: str
    n: int

    @property
    def use_h(self) -> bool:
        return self.kind in ("independent", "ising", "k-pairwise")

    @property
    def use_J(self) -> bool:
        return self.kind in ("ising", "k-pairwise")

    @property
    def v_free(self) -> np.ndarray:
        first = {"synchrony": 1, "k-pairwise": 3}.get(self.kind, self.n + 1)
        return np.arange(first, self.n + 1)

    @property
    def n_pair(self) -> int:
        return self.n * (self.n - 1) // 2

    @property
    def size(self) -> int:
        return self.n * self.use_h + self.n_pair * self.use_J + self.v_free.size

    def unpack(self, theta: jax.Array) -> MaxEntParams:
        n, i = self.n, 0
        h = jnp.zeros(n, theta.dtype)
        J = jnp.zeros(self.n_pair, theta.dtype)
        if self.use_h:
            h, i = theta[:n], n
        if self.use_J:
            J, i = theta[i : i + self.n_pair], i + self.n_pair
        V = jnp.zeros(n + 1, theta.dtype).at[self.v_free].set(theta[i:])
        return MaxEntParams(h, J, V)

    def pack(self, p: MaxEntParams) -> jax.Array:
        parts = ([p.h] if self.use_h else []) + ([p.J] if self.use_J else []) + [p.V[self.v_free]]
        return jnp.concatenate([jnp.asarray(a, dtype=jnp.float64) for a in parts])

    def unpack_dense(self, theta: jax.Array) -> tuple:
        """``(h, symmetric J matrix, V)`` for the Gibbs sampler."""
        p = self.unpack(theta)
        return p.h, _pair_matrix(p.J, self.n, symmetric=True), p.V

    def statistics(self, x: jax.Array) -> jax.Array:
        """Free sufficient statistics of words ``x (..., neuron)`` -> ``(..., param)``."""
        parts = []
        if self.use_h:
            parts.append(x)
        if self.use_J:
            iu = np.triu_indices(self.n, 1)
            parts.append(x[..., iu[0]] * x[..., iu[1]])
        if self.v_free.size:
            k = jnp.sum(x, axis=-1).astype(jnp.int32)
            parts.append((k[..., None] == jnp.asarray(self.v_free)).astype(x.dtype))
        return jnp.concatenate(parts, axis=-1)

    def target(self, s: SufficientStatistics) -> jax.Array:
        """The data's mean free statistics."""
        parts = ([s.mean] if self.use_h else []) + ([s.pair] if self.use_J else [])
        parts.append(np.asarray(s.synchrony)[self.v_free])
        return jnp.asarray(np.concatenate([np.asarray(a, dtype=np.float64) for a in parts]))



@jit(static_argnums=(0,))
def _unpack(layout: _Layout, theta: jax.Array) -> MaxEntParams:
    """``layout.unpack`` as one compiled program (eagerly it compiles one per operation)."""
    return layout.unpack(theta)

def _pair_matrix(J: jax.Array, n: int, *, symmetric: bool) -> jax.Array:
    iu = np.triu_indices(n, 1)
    U = jnp.zeros((n, n), J.dtype).at[iu].set(J)
    return U + U.T if symmetric else U


# -- exact maths -------------------------------------------------------------------------------


def _words(chunk: jax.Array, size: int, n: int, dtype) -> jax.Array:
    idx = chunk * size + jnp.arange(size)
    return ((idx[:, None] >> jnp.arange(n)) & 1).astype(dtype)


@jit
def _energy(p: MaxEntParams, x: jax.Array) -> jax.Array:
    n = p.h.shape[0]
    k = jnp.sum(x, axis=-1).astype(jnp.int32)
    return x @ p.h + jnp.sum((x @ _pair_matrix(p.J, n, symmetric=False)) * x, axis=-1) + p.V[k]


def _energy_of_words(p: MaxEntParams, x: np.ndarray) -> np.ndarray:
    """:func:`_energy` of words ``(time, neuron)``, the rows padded to a bucket length (zero words,
    dropped again) so that recordings of other lengths reuse the compiled program."""
    x = np.asarray(x)
    return np.asarray(_energy(p, jnp.asarray(pad_axis(x, bucket_length(x.shape[0])))))[: x.shape[0]]


def _chunks(n: int) -> tuple[int, int]:
    size = min(2**n, _CHUNK)
    return size, 2**n // size


def _log_binom(n: int) -> jax.Array:
    k = jnp.arange(n + 1)
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def log_partition(params: MaxEntParams, kind: str) -> jax.Array:
    r"""Exact :math:`\log Z` (nats): closed form for ``"independent"`` and ``"synchrony"``,
    chunked enumeration of all :math:`2^N` words otherwise (differentiable, jit-able).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> p = MaxEntParams(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4))
    >>> round(float(log_partition(p, "ising")), 4) == round(3 * float(jnp.log(2.0)), 4)
    True
    """
    n = params.h.shape[0]
    if kind == "independent":
        return jnp.sum(jax.nn.softplus(params.h))
    if kind == "synchrony":
        return logsumexp(_log_binom(n) + params.V)
    _check_exact_size(n)
    return _log_z_enumerated(params)


@jit
def _log_z_enumerated(params: MaxEntParams) -> jax.Array:
    """log Z by enumerating all 2^N words in chunks (jitted once per N: refits do not recompile)."""
    n = params.h.shape[0]
    size, n_chunks = _chunks(n)

    def one(c):
        return logsumexp(_energy(params, _words(c, size, n, params.h.dtype)))

    return logsumexp(jax.lax.map(one, jnp.arange(n_chunks)))


def _check_exact_size(n: int) -> None:
    if n > MAX_EXACT_NEURONS:
        raise ValueError(
            f"method='exact' enumerates all 2^N words and supports N <= {MAX_EXACT_NEURONS} neurons, "
            f"got N={n}; use method='mc' (Gibbs sampling) for larger populations"
        )


class Moments(NamedTuple):
    """Low-order statistics of binary words, observed or predicted by a model.

    Attributes
    ----------
    rates : array, shape (neuron,)
        Firing probability per bin, :math:`P(x_i = 1)`.
    covariance : array, shape (neuron, neuron)
        :math:`\\mathrm{Cov}(x_i, x_j)` (diagonal: variances).
    correlation : array, shape (neuron, neuron)
        Pearson correlations (NaN for a neuron with zero variance).
    triplet : array, shape (triplet,)
        Connected third-order correlations :math:`E[\\delta x_i\\,\\delta x_j\\,\\delta x_k]`,
        :math:`\\delta x = x - E x`, for ``i < j < k`` in ``itertools.combinations`` order.
    synchrony : array, shape (N + 1,)
        Distribution P(K) of the number of active neurons.
    """

    rates: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    triplet: np.ndarray
    synchrony: np.ndarray


def _triplets(n: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(n), 3)), dtype=np.int64).reshape(-1, 3)


def _from_raw(m1, m2, m3, pk) -> Moments:
    m1, m2, m3, pk = (np.asarray(a, dtype=np.float64) for a in (m1, m2, m3, pk))
    cov = m2 - np.outer(m1, m1)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    t = _triplets(m1.size)
    i, j, k = t.T
    conn = (m3[i, j, k] - m1[i] * m2[j, k] - m1[j] * m2[i, k] - m1[k] * m2[i, j]
            + 2 * m1[i] * m1[j] * m1[k])
    return Moments(m1, cov, corr, conn, pk)


def observed_moments(data: Any) -> Moments:
    """Moments of observed words (SpikeData, counts or binary words).

    Examples
    --------
    >>> m = observed_moments([[1, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]])
    >>> m.rates.tolist(), round(float(m.correlation[0, 1]), 3), m.synchrony.tolist()
    ([0.5, 0.5, 0.5], 1.0, [0.25, 0.25, 0.25, 0.25])
    """
    x = binarize(data, check_constant=False)
    T, n = x.shape
    m3 = np.zeros((n, n, n))
    for start in range(0, T, 4096):
        c = x[start : start + 4096]
        m3 += np.einsum("ti,tj,tk->ijk", c, c, c, optimize=True)
    k = x.sum(axis=1).astype(np.int64)
    return _from_raw(x.mean(0), x.T @ x / T, m3 / T, np.bincount(k, minlength=n + 1) / T)


@jit(static_argnums=(1,))
def _raw_moments(params: MaxEntParams, kind: str):
    n = params.h.shape[0]
    if kind == "independent":
        p = jax.nn.sigmoid(params.h)
        m2 = jnp.outer(p, p).at[jnp.diag_indices(n)].set(p)
        m3 = jnp.einsum("i,j,k->ijk", p, p, p)
        m3 = _fix_diagonals(m3, m2, p)
        pk = jax.lax.fori_loop(
            0, n, lambda i, q: q * (1 - p[i]) + jnp.roll(q, 1) * p[i],
            jnp.zeros(n + 1, p.dtype).at[0].set(1.0))
        return p, m2, m3, pk
    if kind == "synchrony":
        pk = jnp.exp(_log_binom(n) + params.V - log_partition(params, kind))
        K = jnp.arange(n + 1.0)
        f1, f2, f3 = jnp.sum(pk * K), jnp.sum(pk * K * (K - 1)), jnp.sum(pk * K * (K - 1) * (K - 2))
        m1 = jnp.full(n, f1 / n)
        m2 = jnp.full((n, n), f2 / max(n * (n - 1), 1)).at[jnp.diag_indices(n)].set(f1 / n)
        m3 = _fix_diagonals(jnp.full((n, n, n), f3 / max(n * (n - 1) * (n - 2), 1)), m2, m1)
        return m1, m2, m3, pk
    size, n_chunks = _chunks(n)
    log_z = log_partition(params, kind)

    def body(acc, c):
        x = _words(c, size, n, params.h.dtype)
        w = jnp.exp(_energy(params, x) - log_z)
        k = jnp.sum(x, axis=1).astype(jnp.int32)
        wx = w[:, None] * x
        return (acc[0] + wx.sum(0), acc[1] + wx.T @ x, acc[2] + jnp.einsum("wi,wj,wk->ijk", wx, x, x),
                acc[3] + jnp.zeros(n + 1, w.dtype).at[k].add(w)), None

    dt = params.h.dtype
    init = (jnp.zeros(n, dt), jnp.zeros((n, n), dt), jnp.zeros((n, n, n), dt), jnp.zeros(n + 1, dt))
    acc, _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return acc


def _fix_diagonals(m3, m2, m1):
    """Set E[x_i x_i x_j] = E[x_i x_j] etc. (binary x) in a product-form third moment."""
    n = m1.shape[0]
    i = jnp.arange(n)
    m3 = m3.at[i, i, :].set(m2).at[i, :, i].set(m2).at[:, i, i].set(m2)
    return m3.at[i, i, i].set(m1)


def model_moments(params: MaxEntParams, kind: str) -> Moments:
    """Exact moments of a maximum-entropy model (closed form or enumeration).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> p = MaxEntParams(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4))
    >>> model_moments(p, "independent").synchrony.round(3).tolist()
    [0.125, 0.375, 0.375, 0.125]
    """
    return _from_raw(*_raw_moments(params, kind))


def _entropy_bits(params: MaxEntParams, kind: str) -> tuple[jax.Array, jax.Array]:
    """``(model entropy, independent entropy with the same rates)`` in bits."""
    m1, m2, _, pk = _raw_moments(params, kind)
    iu = np.triu_indices(m1.shape[0], 1)
    mean_energy = params.h @ m1 + params.J @ m2[iu] + params.V @ pk
    s_model = log_partition(params, kind) - mean_energy
    q = jnp.clip(m1, 1e-300, 1 - 1e-16)
    s_ind = -jnp.sum(q * jnp.log(q) + (1 - q) * jnp.log1p(-q))
    return s_model / LN2, s_ind / LN2


# -- NumPyro model -----------------------------------------------------------------------------


def maxent_model(*, target=None, n_bins=1.0, n_neuron: int, kind: str, prior_scale=(5.0, 5.0, 5.0)):
    r"""NumPyro model of a maximum-entropy population with exact :math:`\log Z`.

    Sites ``h`` (plate ``neuron``), ``J`` (plate ``pair``) and ``V`` (plate ``n_active``, the
    free counts: ``K = 1..N`` for synchrony, ``3..N`` for k-pairwise), each
    :math:`N(0, \sigma^2)` with ``prior_scale = (sigma_h, sigma_J, sigma_V)``. The likelihood is
    ``numpyro.factor("log_likelihood", T * (theta @ target - log Z(theta)))`` with ``target``
    the data's mean free statistics (:class:`SufficientStatistics`). Without ``target`` the
    model is the prior alone.

    Examples
    --------
    >>> import numpy as np, jax
    >>> from bayesneuro import infer
    >>> res = infer.fit(maxent_model, method="map", key=jax.random.key(0), progress=False,
    ...                 target=np.array([0.25, 0.5]), n_bins=np.array(100.0), n_neuron=2,
    ...                 kind="independent", prior_scale=(1e3, 1e3, 1e3))
    >>> np.round(jax.nn.sigmoid(res.params["h"]), 3).tolist()
    [0.25, 0.5]
    """
    layout = _Layout(kind, n_neuron)
    parts = []
    if layout.use_h:
        with numpyro.plate("neuron", n_neuron):
            parts.append(numpyro.sample("h", dist.Normal(0.0, prior_scale[0])))
    if layout.use_J:
        with numpyro.plate("pair", layout.n_pair):
            parts.append(numpyro.sample("J", dist.Normal(0.0, prior_scale[1])))
    if layout.v_free.size:
        with numpyro.plate("n_active", int(layout.v_free.size)):
            parts.append(numpyro.sample("V", dist.Normal(0.0, prior_scale[2])))
    if target is not None:
        theta = jnp.concatenate(parts)
        ll = n_bins * (theta @ target - log_partition(layout.unpack(theta), kind))
        numpyro.factor("log_likelihood", ll)


def _split(layout: _Layout, theta: np.ndarray) -> dict:
    """Free vector (..., param) -> {"h", "J", "V"} blocks present for the kind."""
    out, i = {}, 0
    if layout.use_h:
        out["h"], i = theta[..., : layout.n], layout.n
    if layout.use_J:
        out["J"], i = theta[..., i : i + layout.n_pair], i + layout.n_pair
    if layout.v_free.size:
        out["V"] = theta[..., i:]
    return out


@jit(static_argnums=(0,))
def _hessian_log_z(layout: _Layout, theta: jax.Array) -> jax.Array:
    """Cov_theta[s] as the exact Hessian of log Z in the free parameters."""
    return jax.hessian(lambda t: log_partition(layout.unpack(t), layout.kind))(theta)


# -- estimator -----------------------------------------------------------------------------------


#: default candidate coupling prior SDs tried by ``prior_scale="auto"`` (ascending)
PRIOR_CANDIDATES = (0.03, 0.1, 0.25, 0.5, 1.0, 5.0)
#: prior SD of the fields h whenever it is not given (weak: a field is pinned down by one rate)
FIELD_SCALE = 5.0


def _independent_fields(x: np.ndarray, scale_h: float) -> np.ndarray:
    """MAP fields of the independent model (prior N(0, scale_h^2)) by per-neuron Newton steps.

    The same mode :class:`MaxEnt` ``("independent")`` finds, without compiling a program: the
    baseline of every held-out gain.
    """
    T = x.shape[0]
    m = x.mean(axis=0)
    q = np.clip(m, 0.5 / T, 1 - 0.5 / T)
    h = np.log(q) - np.log1p(-q)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-h))
        step = np.clip((T * (m - p) - h / scale_h**2) / (T * p * (1 - p) + 1.0 / scale_h**2), -5.0, 5.0)
        h = h + step
        if np.max(np.abs(step)) < 1e-12:
            break
    return h


def _independent_log_lik(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ h - np.sum(np.logaddexp(0.0, h))


def _check_scale(name: str, v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError) as err:
        raise ValueError(f"prior_scale {name} must be a positive number or 'auto', got {v!r}") from err
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"prior_scale must be positive and finite, got {v!r} for {name}")
    return v


def _prior_scales(prior_scale) -> tuple:
    """``(sigma_h, sigma_J, sigma_V)``, with ``None`` for J and V under ``"auto"``."""
    if isinstance(prior_scale, str):
        if prior_scale != "auto":
            raise ValueError(f"prior_scale must be 'auto', a positive number or a dict, got {prior_scale!r}")
        return (FIELD_SCALE, None, None)
    if isinstance(prior_scale, dict):
        bad = set(prior_scale) - {"h", "J", "V"}
        if bad:
            raise ValueError(f"prior_scale keys must be 'h', 'J', 'V', got {sorted(bad)}")
        if prior_scale.get("h") == "auto":
            raise ValueError("prior_scale 'auto' chooses the coupling ('J') and potential ('V') scales; "
                             "give the field scale 'h' as a number")
        out = [_check_scale(k, prior_scale.get(k, FIELD_SCALE)) if prior_scale.get(k) != "auto" else None
               for k in ("h", "J", "V")]
        if (out[1] is None) != (out[2] is None) and "J" in prior_scale and "V" in prior_scale:
            raise ValueError("prior_scale: 'J' and 'V' are chosen together; give both as numbers or both as 'auto'")
        if out[1] is None or out[2] is None:
            out[1] = out[2] = None
        return tuple(out)
    return (_check_scale("", prior_scale),) * 3


def _check_candidates(candidates) -> tuple:
    c = tuple(_check_scale("candidate", v) for v in np.atleast_1d(np.asarray(candidates, dtype=object)))
    if len(c) < 2:
        raise ValueError(f"prior_candidates needs at least 2 values to choose from, got {candidates!r}")
    return tuple(sorted(c))


class MaxEnt(Estimator):
    r"""Maximum-entropy model of binary population words, with a Laplace posterior.

    Parameters
    ----------
    kind : {"independent", "synchrony", "ising", "k-pairwise"}
        Statistics matched (see the module docstring; gauge :math:`V(0..2) = 0` for k-pairwise).
    prior_scale : "auto", float or dict
        SD :math:`\sigma` of the Normal(0, sigma^2) priors. ``"auto"`` (default): the fields
        ``h`` get :math:`\sigma = 5` and the SD of the couplings ``J`` and the count potential
        ``V`` is chosen among `prior_candidates` by held-out likelihood inside the training words
        (`inner_folds` contiguous folds; the exact log-likelihood when :math:`\log Z` is exact,
        the AIS estimate in MC mode), as the candidate with the largest mean held-out gain over
        the independent model (``prior_scale_``, ``prior_selection_``). A float sets every
        block; a dict sets ``"h"``, ``"J"``, ``"V"`` separately (missing: 5; ``"J"``/``"V"``
        may be ``"auto"``). A large fixed scale over-fits when the words are few for the number
        of couplings: on 1,500 words of 30 motor-cortex neurons, :math:`\sigma = 5` loses 0.09
        bits/bin to the independent model on held-out words.
    prior_candidates : sequence of float
        Coupling prior SDs tried by ``"auto"``; include a small one (near-independence), so that
        the choice never does much worse than the independent model.
    inner_folds : int
        Contiguous folds of the training words for ``"auto"``.

    Attributes
    ----------
    params_ : MaxEntParams
        Posterior mode (full parameters).
    theta_, cov_ : ndarray
        Mode and Laplace covariance of the free parameters.
    log_partition_, log_partition_se_ : float
        :math:`\log Z` at the mode (SE 0 when exact).
    method_ : str
        ``"exact"`` or ``"mc"``.
    prior_scale_ : dict
        The prior SDs used, ``{"h", "J", "V"}`` (``J``/``V`` the chosen ones under ``"auto"``).
    prior_selection_ : pandas.DataFrame or None
        Under ``"auto"`` (kinds with couplings or a potential): one row per candidate SD
        (index ``prior_scale``), ``gain_bits`` (mean held-out log2-likelihood gain per bin over
        the independent model, pooled over the inner folds), ``gain_se`` (its SE over bins, plus
        the AIS error in MC mode), ``chosen``. None otherwise.
    samples_ : ndarray or None
        Laplace draws of the free parameters (``num_samples`` of them when `fit` had a key).

    Examples
    --------
    >>> import numpy as np
    >>> x = (np.random.default_rng(0).random((500, 4)) < 0.3).astype(int)
    >>> m = MaxEnt("ising").fit(x, progress=False)
    >>> bool(np.allclose(m.predicted_moments().rates, x.mean(0), atol=0.02))
    True
    >>> m.prior_scale_["J"] in PRIOR_CANDIDATES and bool(m.prior_selection_["chosen"].sum() == 1)
    True
    """

    score_unit = "nats/bin"
    log_likelihood_dim = "time"

    def __init__(self, kind: str = "ising", *, prior_scale: Any = "auto",
                 prior_candidates: Sequence[float] = PRIOR_CANDIDATES, inner_folds: int = 3):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        _prior_scales(prior_scale)
        _check_candidates(prior_candidates)
        if isinstance(inner_folds, bool) or not isinstance(inner_folds, (int, np.integer)) or inner_folds < 2:
            raise ValueError(f"inner_folds must be an integer >= 2, got {inner_folds!r}")
        self.kind = kind
        self.prior_scale = prior_scale
        self.prior_candidates = prior_candidates
        self.inner_folds = inner_folds

    # fitting
    @pynapple_io()
    def fit(self, data: Any, *, method: str = "auto", key: Any = None, progress: bool | None = None,
            num_samples: int = 1000, n_chains: int = 500, max_iter: int = 2000, learning_rate: float = 0.05,
            n_sweeps: int = 1, n_samples_mc: int = 40, ais_chains: int = 500,
            ais_temperatures: int = 1000) -> MaxEnt:
        r"""Fit to words (SpikeData or counts, (time, neuron)); returns self.

        Parameters
        ----------
        data : SpikeData or array_like, shape (time, neuron)
        method : {"auto", "exact", "mc"}
            ``"exact"``: exact :math:`\log Z` (enumeration for pairwise kinds, N <= 20), MAP by
            ``bayesneuro.infer.fit``. ``"mc"``: Boltzmann learning with persistent Gibbs chains
            and an AIS estimate of :math:`\log Z`. ``"auto"``: exact when possible. Independent
            and synchrony models have closed forms and are always exact.
        key : jax.random key or int, optional
            Required by ``"mc"`` (Gibbs sampling, AIS). With a key, `num_samples` Laplace draws
            are stored for :meth:`to_inference_data`; without one (exact mode) none are.
        progress : bool, optional
            tqdm bars; default from ``BAYESNEURO_PROGRESS``.
        num_samples : int
            Laplace draws stored (with a key).
        n_chains, max_iter, learning_rate, n_sweeps : MC learning settings
            Persistent chains, learning iterations, step size and Gibbs sweeps per iteration.
            The inner fits of ``prior_scale="auto"`` use the same settings, capped at 500
            iterations and 200 AIS chains (at a fixed prior, 500 to 4,000 iterations and 200 to
            1,000 chains changed the held-out gain on 30 real neurons by < 0.005 bits/bin).
        n_samples_mc : int
            Gibbs sweeps kept (per chain) at the estimate, for Cov[s] and moments.
        ais_chains, ais_temperatures : AIS settings.

        Raises
        ------
        ValueError
            Unknown method, a neuron that never or always spikes, too few bins or neurons (for
            ``"auto"``: fewer than 10 words per inner fold), or ``method="exact"`` with more than
            20 neurons for a pairwise kind.
        TypeError
            No key where one is needed.
        """
        if method not in ("auto", "exact", "mc"):
            raise ValueError(f"method must be 'auto', 'exact' or 'mc', got {method!r}")
        x = binarize(data)
        T, n = x.shape
        if T < 2:
            raise ValueError(f"data need at least 2 time bins, got {T}")
        if self.kind in ("ising", "k-pairwise") and n < (3 if self.kind == "k-pairwise" else 2):
            raise ValueError(f"kind={self.kind!r} needs at least {3 if self.kind == 'k-pairwise' else 2} "
                             f"neurons, got {n}")
        closed = self.kind in ("independent", "synchrony")
        if method == "exact" and not closed:
            _check_exact_size(n)
        resolved = "exact" if closed or (method == "auto" and n <= MAX_EXACT_NEURONS) else method
        if resolved == "auto":
            resolved = "mc"
        rng = resolve_key(key, needed=resolved == "mc", why="method='mc' (Gibbs sampling)")
        progress = progress_default() if progress is None else bool(progress)
        settings = {"n_chains": n_chains, "max_iter": max_iter, "learning_rate": learning_rate, "n_sweeps": n_sweeps,
                        "n_samples_mc": n_samples_mc, "ais_chains": ais_chains, "ais_temperatures": ais_temperatures}
        k_sel, k_main = jax.random.split(rng if rng is not None else jax.random.key(0))
        scales = _prior_scales(self.prior_scale)
        layout = _Layout(self.kind, n)
        self.prior_selection_ = None
        if scales[1] is None:
            if layout.use_J or layout.v_free.size:
                chosen, self.prior_selection_ = self._select_prior(x, scales[0], resolved, k_sel, settings)
            else:
                chosen = FIELD_SCALE  # independent: no coupling to choose
            scales = (scales[0], chosen, chosen)
        self.prior_scale_ = dict(zip(("h", "J", "V"), scales))
        from ..data import SpikeData

        self.neuron_ids_ = _neuron_ids(data, n)
        self._time = np.asarray(data.coords["time"]) if isinstance(data, SpikeData) else np.arange(T)
        self._fit_words(x, scales, resolved, k_main, settings, progress=progress, posterior=True)
        self.samples_ = (self._draws(jax.random.fold_in(k_main, 1), num_samples)
                         if rng is not None and num_samples > 0 else None)
        return self

    def _select_prior(self, x: np.ndarray, scale_h: float, method: str, key, settings: dict):
        """Choose the coupling/potential prior SD by held-out gain over contiguous inner folds."""
        import pandas as pd

        T = x.shape[0]
        k = int(self.inner_folds)
        if T < 10 * k:
            raise ValueError(f"prior_scale='auto' needs at least {10 * k} words for {k} inner folds, got {T}; "
                             "give prior_scale as a number or lower inner_folds")
        candidates = _check_candidates(self.prior_candidates)
        folds = np.array_split(np.arange(T), k)
        # MC: shorter inner fits (the held-out gain at a fixed prior moved < 0.005 bits/bin between
        # 500 and 4,000 iterations and 200-1,000 chains on 30 real neurons; bench/maxent_prior.py --mc)
        settings = {**settings, "max_iter": min(settings["max_iter"], 500),
                    "ais_chains": min(settings["ais_chains"], 200)}
        gains = np.zeros((len(candidates), T))
        var_z = np.zeros(len(candidates))  # variance of the pooled mean from the AIS log Z errors
        for f, test in enumerate(folds):
            train = np.setdiff1d(np.arange(T), test)
            base = _independent_log_lik(_independent_fields(x[train], scale_h), x[test])
            for c, s in enumerate(candidates):
                m = MaxEnt(self.kind)._fit_words(x[train], (scale_h, s, s), method,
                                                 jax.random.fold_in(key, f * len(candidates) + c), settings,
                                                 progress=False, posterior=False)
                gains[c, test] = (m._log_lik(x[test]) - base) / LN2
                var_z[c] += (test.size / T * m.log_partition_se_ / LN2) ** 2
        mean = gains.mean(axis=1)
        se = np.sqrt(gains.var(axis=1, ddof=1) / T + var_z)
        best = int(np.argmax(mean))
        table = pd.DataFrame({"gain_bits": mean, "gain_se": se, "chosen": np.arange(len(candidates)) == best},
                             index=pd.Index(candidates, name="prior_scale"))
        return candidates[best], table

    def _fit_words(self, x: np.ndarray, scales: tuple, resolved: str, key, settings: dict, *, progress: bool,
                   posterior: bool) -> MaxEnt:
        """Fit binary words with fixed prior SDs; ``posterior=False`` skips the Laplace covariance."""
        T, n = x.shape
        layout = _Layout(self.kind, n)
        stats = sufficient_statistics(x)
        target = layout.target(stats)
        prior_prec = jnp.concatenate([jnp.full(a.shape[-1], 1.0 / s**2) for a, s in
                                      zip(_split(layout, np.zeros(layout.size)).values(),
                                          [s for s, u in zip(scales, (layout.use_h, layout.use_J,
                                                                      bool(layout.v_free.size))) if u])])
        # exact mode draws nothing: any key serves the MAP
        k_fit, k_samp, k_ais = jax.random.split(key if key is not None else jax.random.key(0), 3)
        q = np.clip(np.asarray(stats.mean), 0.5 / T, 1 - 0.5 / T)  # inner folds may hold a silent neuron
        h_init = jnp.log(q) - jnp.log1p(-q)
        self.layout_, self.n_bins_, self.method_ = layout, T, resolved
        self.statistics_ = stats
        self._words = x
        s = settings
        if resolved == "exact":
            free = _split(layout, np.zeros(layout.size))
            init = {k: (h_init if k == "h" else jnp.zeros(v.shape[-1])) for k, v in free.items()}
            res = _infer_fit(maxent_model, method="map", key=k_fit, progress=progress, target=target,
                             n_bins=jnp.asarray(float(T)), n_neuron=n, kind=self.kind,
                             prior_scale=jnp.asarray(scales, dtype=jnp.float64),  # traced: no recompile per SD
                             init_strategy=init_to_value(values=init), tol=1e-9)
            theta = jnp.concatenate([jnp.asarray(res.params[k]) for k in ("h", "J", "V") if k in res.params])
            cov_s = _hessian_log_z(layout, theta) if posterior else None
            self.log_partition_ = float(log_partition(_unpack(layout, theta), self.kind))
            self.log_partition_se_ = 0.0
            self.mc_samples_ = None
        else:
            theta0 = layout.pack(MaxEntParams(h_init, jnp.zeros(layout.n_pair), jnp.zeros(n + 1)))
            chains0 = (jax.random.uniform(k_samp, (s["n_chains"], n)) < q).astype(jnp.float64)
            theta, state = mc.boltzmann_learning(
                k_fit, theta0, chains0, target, prior_prec / T, unpack=layout.unpack_dense,
                statistics=layout.statistics, max_iter=s["max_iter"], learning_rate=s["learning_rate"],
                n_sweeps=s["n_sweeps"], progress=progress)
            h, J, V = layout.unpack_dense(theta)
            samples, _ = mc.gibbs_samples(k_samp, state.chains, h, J, V, n_burn=20, n_keep=s["n_samples_mc"])
            samples = np.asarray(samples).reshape(-1, n)
            cov_s = (jnp.asarray(np.cov(np.asarray(layout.statistics(jnp.asarray(samples))), rowvar=False))
                     if posterior else None)
            self.mc_samples_ = samples
            p = np.clip(samples.mean(0), 1e-3, 1 - 1e-3)
            ais = mc.ais_log_partition(k_ais, h, J, V, h0=jnp.log(p / (1 - p)), n_chains=s["ais_chains"],
                                       n_temperatures=s["ais_temperatures"])
            self.log_partition_, self.log_partition_se_ = ais.log_partition, ais.se
        self.theta_ = np.asarray(theta)
        self.params_ = _unpack(layout, jnp.asarray(self.theta_))
        if posterior:
            prec = T * cov_s + jnp.diag(prior_prec)
            self.precision_ = np.asarray(0.5 * (prec + prec.T))
            self.cov_ = np.linalg.inv(self.precision_)
        return self

    def _log_lik(self, x: np.ndarray) -> np.ndarray:
        return _energy_of_words(self.params_, x) - self.log_partition_

    def _draws(self, key, num: int) -> np.ndarray:
        L = np.linalg.cholesky(self.cov_)
        eps = np.asarray(jax.random.normal(key, (int(num), self.theta_.size)))
        return self.theta_ + eps @ L.T

    # likelihood
    @pynapple_io()
    def log_likelihood(self, data: Any) -> np.ndarray:
        """Log-probability (nats) of each word at the posterior mode, shape (time,)."""
        self._check_fitted()
        x = binarize(data, check_constant=False)
        if x.shape[1] != self.layout_.n:
            raise ValueError(f"data have {x.shape[1]} neurons but the model was fitted to {self.layout_.n}")
        return _energy_of_words(self.params_, x) - self.log_partition_

    @pynapple_io()
    def score(self, data: Any) -> float:
        """Mean log-likelihood per bin at the posterior mode, in nats/bin (higher is better)."""
        return float(np.mean(self.log_likelihood(data)))

    @pynapple_io()
    def evaluate(self, data: Any) -> dict:
        """Held-out metrics of the words in `data`.

        Returns
        -------
        dict
            ``log_likelihood_per_bin`` (nats/bin, as :meth:`score`), ``bits_per_bin`` (the
            same in bits), ``gain_bits`` (mean per-bin log2-likelihood gain over an independent
            model fitted to the same training words with the same field prior), ``gain_se`` (its SE
            over bins, plus the AIS :math:`\\log Z` SE in MC mode), ``log_partition_se``,
            ``n_bins``.
        """
        ll = self.log_likelihood(data) / LN2
        h_ind = _independent_fields(self._words, self.prior_scale_["h"])
        d = ll - _independent_log_lik(h_ind, binarize(data, check_constant=False)) / LN2
        se_z = self.log_partition_se_ / LN2
        return {"log_likelihood_per_bin": float(ll.mean() * LN2), "bits_per_bin": float(ll.mean()),
                "gain_bits": float(d.mean()),
                "gain_se": float(np.sqrt(d.var(ddof=1) / d.size + se_z**2)) if d.size > 1 else float("nan"),
                "log_partition_se": float(self.log_partition_se_), "n_bins": int(d.size)}

    # moments and samples
    def sample(self, n: int, *, key: Any) -> np.ndarray:
        """Draw ``n`` words (n, neuron) from the model at the mode (exact or by Gibbs sampling)."""
        self._check_fitted()
        rng, N = resolve_key(key, needed=True, why="sample"), self.layout_.n
        if self.method_ == "exact" and N <= MAX_EXACT_NEURONS:
            size, n_chunks = _chunks(N)
            words = jnp.concatenate([_words(c, size, N, jnp.float64) for c in range(n_chunks)])
            idx = jax.random.categorical(rng, _energy(self.params_, words), shape=(int(n),))
            return np.asarray(words[idx])
        h, J, V = self.layout_.unpack_dense(jnp.asarray(self.theta_))
        k0, k1 = jax.random.split(rng)
        x0 = (jax.random.uniform(k0, (int(n), N)) < jax.nn.sigmoid(h)).astype(jnp.float64)
        out, _ = mc.gibbs_samples(k1, x0, h, J, V, n_burn=200, n_keep=1)
        return np.asarray(out[0])

    def predicted_moments(self, *, key: Any = None, n: int = 20000) -> Moments:
        """Model moments: exact, or from Gibbs samples (the fit's, or ``n`` fresh ones with ``key``)."""
        self._check_fitted()
        if self.method_ == "exact":
            return model_moments(self.params_, self.kind)
        return observed_moments(self.mc_samples_ if key is None else self.sample(n, key=key))

    observed_moments = staticmethod(observed_moments)

    # posterior
    def posterior_statistics(self, *, key: Any, num_samples: int) -> dict:
        """Laplace posterior draws of interpretable statistics (for ``compare_states``).

        ``h`` (draw, neuron): fields; ``J`` (draw, pair), coords ``"i-j"`` from neuron ids:
        couplings; ``mean_coupling`` (draw,): mean of J; ``V`` (draw, n_active): free potential;
        exact mode only: ``entropy`` (bits per bin) and ``multi_information`` (draw,),
        :math:`I = S_{\\rm indep} - S_{\\rm model}` in bits per bin, with :math:`S_{\\rm indep}`
        the entropy of independent neurons at the model's own firing rates.
        """
        self._check_fitted()
        th = self._draws(resolve_key(key, needed=True, why="posterior_statistics (Laplace draws)"), num_samples)
        blocks, draw = _split(self.layout_, th), np.arange(int(num_samples))
        ids = self.neuron_ids_
        out = {}
        if "h" in blocks:
            out["h"] = xr.DataArray(blocks["h"], dims=("draw", "neuron"), coords={"draw": draw, "neuron": ids})
        if "J" in blocks:
            iu = np.triu_indices(self.layout_.n, 1)
            pairs = [f"{ids[i]}-{ids[j]}" for i, j in zip(*iu)]
            out["J"] = xr.DataArray(blocks["J"], dims=("draw", "pair"), coords={"draw": draw, "pair": pairs})
            out["mean_coupling"] = xr.DataArray(blocks["J"].mean(1), dims=("draw",), coords={"draw": draw})
        if "V" in blocks:
            out["V"] = xr.DataArray(blocks["V"], dims=("draw", "n_active"),
                                    coords={"draw": draw, "n_active": self.layout_.v_free})
        if self.method_ == "exact":
            f = jit(lambda t: _entropy_bits(self.layout_.unpack(t), self.kind))
            s = np.array([[float(v) for v in f(jnp.asarray(t))] for t in th])
            out["entropy"] = xr.DataArray(s[:, 0], dims=("draw",), coords={"draw": draw})
            out["multi_information"] = xr.DataArray(s[:, 1] - s[:, 0], dims=("draw",), coords={"draw": draw})
        return out

    def to_inference_data(self):
        """ArviZ InferenceData of the fit (one chain).

        ``posterior``: the stored Laplace draws of ``h`` (neuron), ``J`` (pair), ``V``
        (n_active); when the fit had no key (no draws), a point fit instead: the mode in a
        ``point_estimate`` group (``attrs["method"] = "map"``, no ``chain``/``draw``, no
        ``posterior``; ``words`` has dims ``(time,)``). ``log_likelihood``:
        ``words`` (chain, draw, time), the log-probability of each training word; per posterior
        draw in exact mode (:math:`\\log Z` of every draw by enumeration), at the mode in MC mode
        (one draw: :math:`\\log Z` is only estimated there). The posterior's attrs hold the prior
        SDs used (``prior_scale_h``, ``prior_scale_J``, ``prior_scale_V``), how they were set
        (``prior_scale_chosen_by``: ``"held-out"`` or ``"fixed"``) and, under ``"auto"``, the
        selection table (``prior_selection_candidates``, ``..._gain_bits``, ``..._gain_se``).
        """
        import arviz as az

        self._check_fitted()
        theta = self.theta_[None] if self.samples_ is None else self.samples_
        blocks = _split(self.layout_, theta)
        iu = np.triu_indices(self.layout_.n, 1)
        ids = self.neuron_ids_
        coords = {"neuron": ids, "pair": [f"{ids[i]}-{ids[j]}" for i, j in zip(*iu)],
                  "n_active": self.layout_.v_free}
        dims = {"h": ("neuron",), "J": ("pair",), "V": ("n_active",)}
        ds = xr.Dataset({k: (("chain", "draw") + dims[k], v[None]) for k, v in blocks.items()},
                        coords={k: v for k, v in coords.items() if any(k in dims[b] for b in blocks)})
        x = jnp.asarray(self._words)
        if self.method_ == "exact":
            lay, kind = self.layout_, self.kind

            @jit
            def ll(t):
                p = lay.unpack(t)
                return _energy(p, x) - log_partition(p, kind)

            values = np.asarray(jax.lax.map(ll, jnp.asarray(theta)))
        else:
            values = self.log_likelihood(self._words)[None]
        lik = xr.Dataset({"words": (("chain", "draw", "time"), values[None])},
                         coords={"chain": [0], "draw": np.arange(values.shape[0]), "time": self._time})
        ds.attrs.update({f"prior_scale_{k}": float(v) for k, v in self.prior_scale_.items()})
        ds.attrs["prior_scale_chosen_by"] = "held-out" if self.prior_selection_ is not None else "fixed"
        if self.prior_selection_ is not None:
            t = self.prior_selection_
            ds.attrs.update(prior_selection_candidates=np.asarray(t.index, dtype=float),
                            prior_selection_gain_bits=t["gain_bits"].to_numpy(float),
                            prior_selection_gain_se=t["gain_se"].to_numpy(float))
        idata = az.InferenceData(posterior=ds, log_likelihood=lik)
        if self.samples_ is None:  # the mode alone, a point fit: point_estimate, no chain/draw
            from ..infer.convert import as_point_estimate

            idata = as_point_estimate(idata, "map")
        return idata


def compare_population_models(train: Any, test: Any, *, kinds: Sequence[str] = KINDS, key: Any = None,
                              prior_scale: Any = "auto", **fit_options) -> pd.DataFrame:
    """Held-out bits per bin of each kind and its gain over the independent model.

    Columns: ``bits_per_bin`` (mean test log2-likelihood), ``se`` (SE over bins),
    ``gain_bits`` (mean per-bin difference from ``"independent"``), ``gain_se`` (SE over bins of
    that difference, plus the AIS log Z SE in MC mode), ``method``, ``prior_scale_J`` (the
    coupling prior SD used: chosen on held-out inner folds of `train` under the default
    ``"auto"``; NaN for the independent model). `prior_scale` goes to
    :class:`MaxEnt`, ``fit_options`` (``method``, ``progress``, MC settings) to
    :meth:`MaxEnt.fit`; `key` (split per kind) is needed when a kind is fitted by ``"mc"``.

    Examples
    --------
    >>> import numpy as np
    >>> x = (np.random.default_rng(1).random((400, 3)) < 0.3).astype(int)
    >>> t = compare_population_models(x[:200], x[200:], kinds=("independent",), progress=False)
    >>> float(t.loc["independent", "gain_bits"])
    0.0
    """
    import pandas as pd

    kinds = list(kinds)
    if "independent" not in kinds:
        kinds = ["independent"] + kinds
    keys = split_key(key, len(kinds))
    rows, ll = {}, {}
    for kind, k in zip(kinds, keys):
        m = MaxEnt(kind, prior_scale=prior_scale).fit(train, key=k, **fit_options)
        ll[kind] = m.log_likelihood(test) / LN2
        rows[kind] = (m.method_, m.log_partition_se_ / LN2,
                      m.prior_scale_["J"] if kind != "independent" else float("nan"))
    T = ll["independent"].size
    table = {}
    for kind in kinds:
        d = ll[kind] - ll["independent"]
        se_z = rows[kind][1]
        table[kind] = {"bits_per_bin": ll[kind].mean(), "se": ll[kind].std(ddof=1) / np.sqrt(T),
                           "gain_bits": d.mean(), "gain_se": float(np.sqrt(d.var(ddof=1) / T + se_z**2)),
                           "method": rows[kind][0], "prior_scale_J": rows[kind][2]}
    return pd.DataFrame.from_dict(table, orient="index")


def plot_moments(observed: Moments, predicted: dict, *, axes: Any = None):
    """Predicted against observed pairwise and triplet correlations, and the synchrony P(K).

    Parameters
    ----------
    observed : Moments
        From :func:`observed_moments`, usually of held-out words.
    predicted : dict of str to Moments or MaxEnt
        Model name to its moments (a fitted :class:`MaxEnt` is asked for
        :meth:`MaxEnt.predicted_moments`).
    axes : sequence of 3 matplotlib Axes, optional

    Returns
    -------
    ndarray of matplotlib Axes
        Pairwise covariance, connected triplet correlation, P(K) on a log scale.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np
    >>> x = (np.random.default_rng(0).random((300, 4)) < 0.3).astype(int)
    >>> m = MaxEnt("ising").fit(x, progress=False)
    >>> ax = plot_moments(observed_moments(x), {"ising": m})
    >>> [a.get_xlabel() for a in ax]
    ['observed covariance', 'observed triplet correlation', 'number of active neurons K']
    """
    import matplotlib.pyplot as plt

    if not isinstance(observed, Moments):
        raise TypeError(f"observed must be Moments (from observed_moments), got {type(observed).__name__}")
    if not predicted:
        raise ValueError("predicted is empty; give at least one model's moments")
    pred = {k: (v.predicted_moments() if isinstance(v, MaxEnt) else v) for k, v in predicted.items()}
    n = observed.rates.size
    for k, v in pred.items():
        if not isinstance(v, Moments) or v.rates.size != n:
            raise ValueError(f"predicted[{k!r}] is not Moments of {n} neurons")
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes = np.asarray(axes).ravel()
    iu = np.triu_indices(n, 1)
    panels = [(lambda m: m.covariance[iu], "covariance"), (lambda m: m.triplet, "triplet correlation")]
    for ax, (get, label) in zip(axes[:2], panels):
        o = get(observed)
        for name, m in pred.items():
            ax.scatter(o, get(m), s=8, alpha=0.6, label=name)
        if o.size:
            lim = [float(np.nanmin(o)), float(np.nanmax(o))]
            ax.plot(lim, lim, color="k", lw=0.8)
        ax.set_xlabel(f"observed {label}")
        ax.set_ylabel(f"predicted {label}")
    ax = axes[2]
    K = np.arange(n + 1)
    ax.semilogy(K, np.where(observed.synchrony > 0, observed.synchrony, np.nan), "ko", label="observed")
    for name, m in pred.items():
        ax.semilogy(K, m.synchrony, "-", label=name)
    ax.set_xlabel("number of active neurons K")
    ax.set_ylabel("P(K)")
    ax.legend(fontsize="small")
    return axes
