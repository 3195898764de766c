r"""Low-dimensional structure over neurons: PCA, participation ratio, factor analysis.

How many dimensions does a population's covariability occupy? Three complementary answers:

- **participation ratio** of the covariance eigenvalues :math:`\lambda_i`,
  :math:`\mathrm{PR} = (\sum_i \lambda_i)^2 / \sum_i \lambda_i^2`: between 1 (one dominant
  direction) and :math:`N` (isotropic), with no threshold to choose;
- the **cross-validated factor-analysis dimension**: the number of latents :math:`d` of
  :math:`x \sim \mathcal N(\mu, L L^\top + \Psi)` with the highest held-out log-likelihood;
- the **shared dimensionality** (Williamson et al. 2016): the number of eigen-dimensions of the
  shared covariance :math:`L L^\top` needed to explain 95% of the shared variance, and the
  **percent shared variance** of each neuron,
  :math:`100\,[L L^\top]_{ii} / ([L L^\top]_{ii} + \Psi_{ii})`.

Factor analysis is fitted by maximum likelihood on the sample covariance, which is all the
likelihood depends on: by default with Newton steps on the profile likelihood of the observation
variances (the loadings maximised in closed form; Joreskog 1967), batched over folds and bootstrap
draws in NumPy; or by EM (Rubin & Thayer 1982), jitted in ``lax.scan`` chunks and vmapped.

:class:`Dimensionality` gathers the statistics with uncertainty from a bootstrap over trials
(or contiguous time blocks, for data without trials).

References
----------
Joreskog KG (1967). Some contributions to maximum likelihood factor analysis. *Psychometrika*
32:443-482.
Rubin DB, Thayer DT (1982). EM algorithms for ML factor analysis. *Psychometrika* 47:69-76.
Williamson RC, Cowley BR, Litwin-Kumar A, Doiron B, Kohn A, Smith MA, Yu BM (2016). Scaling
properties of dimensionality reduction for neural populations and network models. *PLoS
Computational Biology* 12:e1005141.
Gao P, Trautmann E, Yu B, et al. (2017). A theory of multineuronal dimensionality, dynamics and
measurement. *bioRxiv* 214262 (participation ratio).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from .._shapes import bucket_length
from .._validation import _warn_if_on_edge
from ..engine.em import run_em
from ..estimator import Estimator, resolve_key

__all__ = [
    "CVResult",
    "Dimensionality",
    "FactorAnalysis",
    "PCAResult",
    "cross_validate_dimensionality",
    "participation_ratio",
    "pca",
    "percent_shared_variance",
    "shared_dimensionality",
    "similarity_matrix",
]

_LOG_2PI = math.log(2.0 * math.pi)


# -- input handling ------------------------------------------------------------------------


def _as_matrix(data: Any, *, min_time: int = 2) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(values (time, neuron) float64, segment labels or None, neuron ids)`` from data.

    A SpikeData gives its counts (and its trials, if any); a plain array may be any finite real
    ``(time, neuron)`` data (counts, rates, z-scored counts).
    """
    from ..data import SpikeData

    if isinstance(data, SpikeData):
        X = np.asarray(data.counts, dtype=np.float64)
        seg = None if data.trial_ids is None else np.asarray(data.segment_ids)
        ids = np.asarray(data.neuron_ids)
    else:
        arr = np.asarray(data)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"data must be a SpikeData or a numeric (time, neuron) array, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"data must be 2-D with dims (time, neuron), got shape {arr.shape}")
        X = np.array(arr, dtype=np.float64)
        if not np.all(np.isfinite(X)):
            i, j = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"data contain NaN or infinite values (first at time bin {i}, neuron column {j})")
        seg, ids = None, np.arange(X.shape[1])
    if X.shape[1] < 1:
        raise ValueError("data have zero neurons")
    if X.shape[0] < min_time:
        raise ValueError(f"data need at least {min_time} time bins, got {X.shape[0]}")
    return X, seg, ids


def _check_not_constant(X: np.ndarray, ids: np.ndarray) -> None:
    const = np.flatnonzero(np.ptp(X, axis=0) == 0)
    if const.size:
        raise ValueError(
            f"neuron(s) {ids[const[:10]].tolist()} are constant (zero variance, e.g. silent); "
            "drop them before fitting a covariance model"
        )


# -- PCA and participation ratio --------------------------------------------------------------


class PCAResult(NamedTuple):
    """Principal components of the neuron covariance.

    Attributes
    ----------
    eigenvalues : numpy.ndarray, shape (neuron,)
        Covariance eigenvalues (variance along each component, ``ddof=1``), descending.
    components : numpy.ndarray, shape (neuron, component)
        Unit eigenvectors in neuron coordinates (column ``k`` is component ``k``), each signed
        so that its largest-magnitude entry is positive.
    explained_ratio : numpy.ndarray, shape (neuron,)
        ``eigenvalues / eigenvalues.sum()``.
    """

    eigenvalues: np.ndarray
    components: np.ndarray
    explained_ratio: np.ndarray


def pca(data: Any, *, transform: str | None = None, standardize: bool = False) -> PCAResult:
    """Principal component analysis of population vectors ``(time, neuron)``.

    Parameters
    ----------
    data : SpikeData or array_like, shape (time, neuron)
        Counts (or any finite real data when `transform` is None).
    transform : {None, "sqrt"}
        ``"sqrt"`` takes square roots of the counts first (variance-stabilising for Poisson).
    standardize : bool
        Divide each neuron by its standard deviation (PCA of the correlation matrix).

    Returns
    -------
    PCAResult

    Raises
    ------
    ValueError
        Bad shape, NaN, an unknown `transform`, negative values with ``"sqrt"``, or a constant
        neuron with ``standardize=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import pca
    >>> x = np.random.default_rng(0).normal(size=(500, 1)) * np.array([[3.0, 0.0, 0.0]])
    >>> res = pca(x + np.random.default_rng(1).normal(size=(500, 3)) * 0.1)
    >>> [round(float(r), 2) for r in res.explained_ratio]
    [1.0, 0.0, 0.0]
    """
    X, _, ids = _as_matrix(data)
    if transform not in (None, "sqrt"):
        raise ValueError(f"transform must be None or 'sqrt', got {transform!r}")
    if transform == "sqrt":
        if np.any(X < 0):
            raise ValueError("transform='sqrt' needs non-negative counts; data have negative values")
        X = np.sqrt(X)
    X = X - X.mean(axis=0)
    if standardize:
        _check_not_constant(X, ids)
        X = X / X.std(axis=0, ddof=1)
    cov = X.T @ X / (X.shape[0] - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    sign = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])])
    evecs = evecs * np.where(sign == 0, 1.0, sign)
    total = evals.sum()
    ratio = evals / total if total > 0 else np.zeros_like(evals)
    return PCAResult(evals, evecs, ratio)


def participation_ratio(eigenvalues: Any) -> float:
    r"""Participation ratio :math:`(\sum_i \lambda_i)^2 / \sum_i \lambda_i^2` of covariance eigenvalues.

    Equal eigenvalues give their number; one nonzero eigenvalue gives 1.

    Raises
    ------
    ValueError
        If the eigenvalues are not a non-empty 1-D array of finite non-negative values with a
        positive sum.

    Examples
    --------
    >>> from bayesneuro.density.dimensionality import participation_ratio
    >>> participation_ratio([2.0, 2.0, 2.0]), participation_ratio([5.0, 0.0, 0.0])
    (3.0, 1.0)
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues contain NaN or infinite values")
    scale = np.abs(lam).max()
    if np.any(lam < -1e-10 * max(scale, 1e-300)):
        raise ValueError("eigenvalues must be non-negative (a covariance spectrum)")
    lam = np.clip(lam, 0.0, None)
    if lam.sum() <= 0:
        raise ValueError("eigenvalues sum to zero: no variance")
    return float(lam.sum() ** 2 / np.sum(lam**2))


def _pr_of_cov(cov: Any) -> np.ndarray:
    """Participation ratio ``tr(C)^2 / tr(C^2)`` (no eigendecomposition needed), batched, in NumPy."""
    cov = np.asarray(cov, dtype=np.float64)
    return np.trace(cov, axis1=-2, axis2=-1) ** 2 / np.sum(cov * cov, axis=(-2, -1))


def shared_dimensionality(loadings: Any, *, threshold: float = 0.95) -> int:
    """Number of eigen-dimensions of ``L L^T`` explaining `threshold` of the shared variance.

    Williamson et al. (2016): :math:`d_\\mathrm{shared}` is the smallest :math:`k` with
    :math:`\\sum_{i \\le k} \\mu_i \\ge` `threshold` :math:`\\sum_i \\mu_i`, where :math:`\\mu_i` are
    the eigenvalues of the shared covariance. It is 0 for zero loadings.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import shared_dimensionality
    >>> shared_dimensionality(np.diag([3.0, 1.0, 0.01])), shared_dimensionality(np.zeros((4, 2)))
    (2, 0)
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    L = np.asarray(loadings, dtype=np.float64)
    if L.ndim != 2:
        raise ValueError(f"loadings must be (neuron, latent), got shape {L.shape}")
    if L.shape[1] == 0:
        return 0
    mu = np.sort(np.linalg.svd(L, compute_uv=False) ** 2)[::-1]
    total = mu.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(mu) / total, threshold - 1e-12) + 1)


def percent_shared_variance(loadings: Any, observation_var: Any) -> np.ndarray:
    r"""Percent shared variance per neuron, :math:`100\,[LL^\top]_{ii} / ([LL^\top]_{ii} + \Psi_{ii})`.

    Examples
    --------
    >>> from bayesneuro.density.dimensionality import percent_shared_variance
    >>> percent_shared_variance([[1.0], [2.0]], [1.0, 1.0]).round(1).tolist()
    [50.0, 80.0]
    """
    L = np.asarray(loadings, dtype=np.float64)
    psi = np.asarray(observation_var, dtype=np.float64)
    if L.ndim != 2 or psi.shape != (L.shape[0],):
        raise ValueError(f"loadings (neuron, latent) and observation_var (neuron,) disagree: {L.shape}, {psi.shape}")
    shared = np.sum(L**2, axis=1)
    return 100.0 * shared / (shared + psi)


# -- factor analysis: pure batched EM on covariance matrices ---------------------------------


class FAState(NamedTuple):
    """Parameters of a batch of factor-analysis models during EM.

    Attributes
    ----------
    loadings : jax.Array, shape (batch, neuron, latent)
        :math:`L`.
    observation_var : jax.Array, shape (batch, neuron)
        Diagonal of :math:`\\Psi` (each neuron's private, observation noise variance).
    """

    loadings: jax.Array
    observation_var: jax.Array


def _fa_terms(L, psi):
    """``beta = L^T C^{-1}`` (latent, neuron), ``M^{-1} = (I + L^T Psi^{-1} L)^{-1}`` and ``log|C|``."""
    d = L.shape[-1]
    LtPinv = L.T / psi
    M = jnp.eye(d, dtype=L.dtype) + LtPinv @ L
    cho = jax.scipy.linalg.cho_factor(M, lower=True)
    Minv = jax.scipy.linalg.cho_solve(cho, jnp.eye(d, dtype=L.dtype))
    beta = Minv @ LtPinv
    logdet = jnp.sum(jnp.log(psi)) + 2.0 * jnp.sum(jnp.log(jnp.diag(cho[0])))
    return beta, Minv, logdet


def _fa_terms_np(L: np.ndarray, psi: np.ndarray):
    """:func:`_fa_terms` in NumPy/SciPy, for one model outside jit (no XLA program per shape)."""
    import scipy.linalg

    L = np.asarray(L, dtype=np.float64)
    psi = np.asarray(psi, dtype=np.float64)
    d = L.shape[-1]
    LtPinv = L.T / psi
    M = np.eye(d) + LtPinv @ L
    cho = scipy.linalg.cho_factor(M, lower=True)
    Minv = scipy.linalg.cho_solve(cho, np.eye(d))
    beta = Minv @ LtPinv
    logdet = np.sum(np.log(psi)) + 2.0 * np.sum(np.log(np.diag(cho[0])))
    return beta, Minv, logdet


def _fa_ll(L, psi, S):
    """Mean Gaussian log-likelihood per sample given the (centred) second moment ``S``."""
    n = S.shape[-1]
    if L.shape[-1] == 0:
        return -0.5 * (n * _LOG_2PI + jnp.sum(jnp.log(psi)) + jnp.sum(jnp.diag(S) / psi))
    beta, _, logdet = _fa_terms(L, psi)
    # tr(C^{-1} S) with C^{-1} = Psi^{-1} - Psi^{-1} L beta
    tr = jnp.sum(jnp.diag(S) / psi) - jnp.sum((L / psi[:, None]) * (S @ beta.T))
    return -0.5 * (n * _LOG_2PI + logdet + tr)


def _em_step(L, psi, S, floor):
    beta, Minv, _ = _fa_terms(L, psi)
    SB = S @ beta.T
    Ezz = Minv + beta @ SB
    L_new = jnp.linalg.solve(Ezz, SB.T).T
    psi_new = jnp.maximum(jnp.diag(S) - jnp.sum(L_new * SB, axis=1), floor)
    return L_new, psi_new


@functools.lru_cache(maxsize=None)
def _em_chunk_step(n_steps: int):
    """The step :func:`~bayesneuro.engine.em.run_em` iterates: `n_steps` EM steps on each of a batch.

    ``step(state, S, floor) -> (new_state, objective)``; the objective, at the input state, is the
    sum over the batch of the mean log-likelihood per sample (the batch members are independent
    models, so this is their joint objective and EM climbs it).
    """

    def one(L, psi, S, floor):
        def body(carry, _):
            return _em_step(*carry, S, floor), None

        (L, psi), _ = jax.lax.scan(body, (L, psi), None, length=n_steps)
        return L, psi

    @jit
    def step(state: FAState, S, floor, weight):
        objective = jnp.sum(weight * jax.vmap(_fa_ll)(state.loadings, state.observation_var, S))
        return FAState(*jax.vmap(one)(state.loadings, state.observation_var, S, floor)), objective

    return step


# Shape buckets: the batch (folds x bootstrap draws) is padded with copies of its first member
# (weight 0 in the EM objective), so that the batch sizes of a bucket (at most 25% padding) share
# one compiled program, whatever the recording. Latents could be padded with zero columns, which EM
# keeps exactly zero (M = I + L^T Psi^-1 L and E[zz^T] are block diagonal with an identity block),
# but the EM then works on the padded size at every step: measured 2x slower for max_dim=6, so
# each latent count keeps its own program (_latent_bucket is the identity).
def _batch_bucket(b: int) -> int:
    return bucket_length(b, minimum=1)


def _latent_bucket(d: int) -> int:
    return int(d)


def _pad_batch(a: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to `size` with copies of the first member (valid, finite inputs for padded slots)."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape[0] == size:
        return a
    return np.concatenate([a, np.broadcast_to(a[:1], (size - a.shape[0],) + a.shape[1:])])


def _pad_latents(L: np.ndarray, size: int) -> np.ndarray:
    L = np.asarray(L, dtype=np.float64)
    return np.concatenate([L, np.zeros(L.shape[:-1] + (size - L.shape[-1],))], axis=-1)


def _fa_log_likelihood(L: Any, psi: Any, S: Any) -> np.ndarray:
    """Mean Gaussian log-likelihood per sample of each batch member ``(batch,)``, in NumPy.

    ``L (batch, neuron, latent)``, ``psi (batch, neuron)``, ``S (batch, neuron, neuron)`` the
    second moment about the model's mean (no XLA program per shape).
    """
    L = np.asarray(L, dtype=np.float64)
    psi = np.asarray(psi, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    n = S.shape[-1]
    C = L @ np.swapaxes(L, -1, -2)
    idx = np.arange(n)
    C[:, idx, idx] += psi
    chol = np.linalg.cholesky(C)
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    tr = np.trace(np.linalg.solve(C, S), axis1=-2, axis2=-1)
    return -0.5 * (n * _LOG_2PI + logdet + tr)


def _pca_init(S: np.ndarray, d: int, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    evals, evecs = np.linalg.eigh(S)
    evals, evecs = evals[..., ::-1], evecs[..., ::-1]
    n = S.shape[-1]
    noise = evals[..., d:].mean(axis=-1, keepdims=True) if d < n else np.zeros(evals.shape[:-1] + (1,))
    L = evecs[..., :d] * np.sqrt(np.clip(evals[..., :d] - noise, 1e-3 * evals[..., :1], None))[..., None, :]
    psi = np.maximum(np.diagonal(S, axis1=-2, axis2=-1) - np.sum(L**2, axis=-1), floor)
    return L, psi


# -- maximum likelihood on the profile likelihood of the observation variances -------------------
#
# For fixed Psi the likelihood is maximised over L in closed form (Joreskog 1967; Lawley & Maxwell
# 1971; R's factanal): with theta_k, v_k the eigenpairs of S* = Psi^-1/2 S Psi^-1/2 (decreasing),
# L = Psi^1/2 V_d diag(sqrt(max(theta_k - 1, 0))), and
#     -2 ll / sample - n log(2 pi) = F(u) = sum_i u_i + sum_k phi_k(theta_k),   u = log Psi,
# with phi_k(t) = 1 + log t for the d largest eigenvalues that exceed 1 and phi_k(t) = t for the
# others. F is a smooth spectral function of S*(u) away from ties at the d-th eigenvalue; its
# gradient and Hessian follow from eigenvalue perturbation theory (checked against finite
# differences in the tests), so a projected Newton method on u >= log(floor) converges in 5-40
# steps where EM, whose rate is set by the smallest loadings, needs thousands (and stops at
# max_iter well short of the optimum for over-sized models).


def _profile_terms(u: np.ndarray, S: np.ndarray, d: int, hess: bool = True):
    """Profile objective ``F`` (batch,), its gradient (batch, neuron) and Hessian in ``u = log psi``.

    Also returns the eigenvalues and eigenvectors of ``S*`` (decreasing).
    """
    B, n, _ = S.shape
    s = np.exp(-0.5 * u)
    Ss = S * s[:, :, None] * s[:, None, :]
    th, V = np.linalg.eigh(Ss)
    th, V = th[:, ::-1], V[:, :, ::-1]
    log_branch = np.zeros(th.shape, bool)
    log_branch[:, :d] = th[:, :d] > 1.0
    tl = np.where(log_branch, th, 1.0)
    F = u.sum(axis=1) + np.where(log_branch, 1.0 + np.log(tl), th).sum(axis=1)
    d1 = np.where(log_branch, 1.0 / tl, 1.0)  # phi_k'
    g = 1.0 - np.matmul(V * V, (d1 * th)[:, :, None])[:, :, 0]
    if not hess:
        return F, g, None, th, V
    # H_ij = 1/2 d_ij sum_k phi_k' t_k V_ik^2 + 1/2 S*_ij sum_k phi_k' V_ik V_jk
    #        + 1/4 sum_kl M_kl V_ik V_il V_jk V_jl,   M_kl = (t_k + t_l)^2 [phi_k', phi_l'] (divided difference)
    dth = th[:, :, None] - th[:, None, :]
    both_log = log_branch[:, :, None] & log_branch[:, None, :]
    both_lin = ~log_branch[:, :, None] & ~log_branch[:, None, :]
    tiny = np.abs(dth) <= 1e-12 * np.maximum(1.0, np.abs(th).max(axis=1))[:, None, None]
    mixed = (d1[:, :, None] - d1[:, None, :]) / np.where(tiny, 1.0, dth)
    divided = np.where(both_log, -1.0 / (tl[:, :, None] * tl[:, None, :]), np.where(both_lin | tiny, 0.0, mixed))
    M = divided * (th[:, :, None] + th[:, None, :]) ** 2
    P = (V[:, :, :, None] * V[:, :, None, :]).reshape(B, n, n * n)
    H = 0.25 * np.matmul(P * M.reshape(B, 1, n * n), np.swapaxes(P, 1, 2))  # BLAS, not einsum
    H += 0.5 * Ss * np.matmul(V * d1[:, None, :], np.swapaxes(V, 1, 2))
    idx = np.arange(n)
    H[:, idx, idx] += 0.5 * (1.0 - g)  # 1 - g_i = sum_k phi_k' t_k V_ik^2
    return F, g, H, th, V


def _profile_loadings(u: np.ndarray, th: np.ndarray, V: np.ndarray, d: int) -> np.ndarray:
    """The maximising loadings ``Psi^1/2 V_d diag(sqrt(max(theta - 1, 0)))``, (batch, neuron, d)."""
    return np.exp(0.5 * u)[:, :, None] * V[:, :, :d] * np.sqrt(np.maximum(th[:, None, :d] - 1.0, 0.0))


NEWTON_MAX_NEURONS = 64  # method="auto": Newton up to this many neurons, EM above


def _check_method(method: str) -> None:
    if method not in ("auto", "newton", "em"):
        raise ValueError(f"method must be 'auto', 'newton' or 'em', got {method!r}")


def _resolve_method(method: str, n_neuron: int) -> str:
    _check_method(method)
    if method == "auto":
        return "newton" if n_neuron <= NEWTON_MAX_NEURONS else "em"
    return method


def _fit_fa_profile(S: np.ndarray, d: int, floor: np.ndarray, psi0: np.ndarray, *, max_iter: int, tol: float,
                    progress: bool | None, warn: bool) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Projected Newton on ``u = log psi >= log floor``, batched; ``(loadings, psi, n_iter, converged)``.

    Each batch member stops when half its Newton decrement (the predicted gain in mean
    log-likelihood per sample) is at most ``tol * max(1, |ll|)``, after taking that last step.
    """
    from .._progress import finish, progress_bar, progress_default

    B, n, _ = S.shape
    lo = np.log(floor)
    u = np.maximum(np.log(psi0), lo)
    F, g, H, th, V = _profile_terms(u, S, d)
    if not np.all(np.isfinite(F)):
        raise ValueError("factor analysis: a covariance matrix gives a non-finite likelihood (NaN or inf in the data?)")
    active = np.ones(B, bool)
    converged = np.zeros(B, bool)
    n_iter = 0
    bar = progress_bar(total=max_iter, desc=f"FA Newton (d={d})", disable=not (progress_default() if progress is None
                                                                              else progress),
                       leave=False, at_most=True)
    try:
        for _ in range(max_iter):
            a = np.flatnonzero(active)
            if a.size == 0:
                break
            n_iter += 1
            bar.update(1)
            ua, ga, Fa, Sa, loa = u[a], g[a], F[a], S[a], lo[a]
            # Bertsekas' projected Newton: variables at the floor whose gradient pushes them down
            # are held there; on the others, the Hessian with its eigenvalues made positive
            bound = (ua <= loa + 1e-10) & (ga > 0)
            free = ~bound
            lam, Q = np.linalg.eigh(np.where(free[:, :, None] & free[:, None, :], H[a], 0.0))
            lam = np.abs(lam)
            lam = np.maximum(lam, 1e-8 * np.maximum(lam.max(axis=1, keepdims=True), 1.0))
            pg = np.where(free, ga, 0.0)
            step = -np.matmul(Q, np.matmul(np.swapaxes(Q, 1, 2), pg[:, :, None])[:, :, 0][:, :, None]
                              / lam[:, :, None])[:, :, 0]
            step = np.where(free, step, -ga)
            decrement = -0.5 * np.sum(pg * step, axis=1)  # in F; half of it in log-likelihood
            alpha = np.ones(a.size)
            accepted = np.zeros(a.size, bool)
            u_new = ua.copy()
            for _ in range(50):  # Armijo backtracking along the projection arc
                t = np.flatnonzero(~accepted)
                if t.size == 0:
                    break
                ut = np.maximum(ua[t] + alpha[t, None] * step[t], loa[t])
                Ft = _profile_terms(ut, Sa[t], d, hess=False)[0]
                gain = np.sum(ga[t] * (ua[t] - ut), axis=1)
                ok = (Ft <= Fa[t] - 1e-4 * gain) & np.isfinite(Ft)
                u_new[t[ok]] = ut[ok]
                accepted[t[ok]] = True
                alpha[t[~ok]] *= 0.5
            u[a] = u_new
            F[a], g[a], H[a], th[a], V[a] = _profile_terms(u_new, Sa, d)
            ll = 0.5 * (F[a] + n * _LOG_2PI)
            done = 0.5 * decrement <= tol * np.maximum(1.0, np.abs(ll))
            converged[a[done]] = True
            active[a[done]] = False
    finally:
        finish(bar)
    if warn and not converged.all():
        import warnings

        from ..diagnostics import ConvergenceWarning

        warnings.warn(
            f"factor analysis (d={d}): {int((~converged).sum())} of {B} fits stopped at max_iter={max_iter} "
            "Newton steps before converging; raise max_iter or loosen tol",
            ConvergenceWarning, stacklevel=3,
        )
    return _profile_loadings(u, th, V, d), np.exp(u), n_iter, converged


def fit_fa_covariance(
    cov: Any,
    n_latents: int,
    *,
    key: Any = None,
    init: str | tuple = "pca",
    method: str = "auto",
    max_iter: int = 10000,
    tol: float = 1e-9,
    min_observation_var: float = 0.01,
    chunk: int = 50,
    progress: bool | None = None,
    warn: bool = True,
) -> tuple[FAState, np.ndarray, int, bool]:
    """Maximum-likelihood factor analysis of a batch of covariance matrices.

    Two algorithms reach the same maximum (the same local maximum from the same start):

    - ``method="newton"``: projected Newton on the profile likelihood of the
      observation variances, the loadings maximised in closed form from an eigendecomposition
      (Joreskog 1967; as R's ``factanal``, which uses L-BFGS-B there). NumPy, batched over the
      members; 5-40 Newton steps, no XLA compilation.
    - ``method="em"``: the EM of Rubin & Thayer (1982), jitted and vmapped over the batch. Its rate
      is set by the weakest loadings: over-sized models (more latents than the data support) need
      tens of thousands of steps, so it often stops at ``max_iter`` short of the maximum.

    Parameters
    ----------
    cov : array_like, shape (batch, neuron, neuron)
        Sample covariances (``ddof=0``, about the mean the model uses).
    n_latents : int
        Number of latents ``d >= 0``.
    key : jax.random key or int, optional
        Required by ``init="random"`` only (EM: scaled Gaussian loadings, as Yu's ``fastfa``;
        Newton: observation variances drawn uniformly between 10% and 100% of each variance).
    init : {"pca", "random"} or (loadings, observation_var)
        Starting point (a pair warm-starts every batch member; Newton uses only its
        ``observation_var``).
    method : {"auto", "newton", "em"}
        ``"auto"`` (default): Newton up to 64 neurons, EM above. Newton's Hessian costs
        ``O(neuron^4)`` per step (20-40 ms at 50 neurons); EM's step is ``O(neuron^2 latent)``.
    max_iter, tol, chunk
        Newton: at most `max_iter` steps; a member stops once its predicted gain (half the Newton
        decrement, in mean log-likelihood per sample) is at most ``tol * max(1, |ll|)``.
        EM: runs through :func:`bayesneuro.engine.em.run_em`, one call per jitted chunk of `chunk`
        EM steps (vmapped over the batch), until the summed per-sample log-likelihood of the
        batch changes by at most ``tol * max(1, |ll|)`` over a chunk, or `max_iter` EM steps.
        Either way, `max_iter` reached warns (``ConvergenceWarning``).
    min_observation_var : float
        Floor on each observation variance as a fraction of that neuron's variance.
    progress : bool, optional
        tqdm bar over Newton steps (EM: over chunks).
    warn : bool
        Warn (``ConvergenceWarning``) when `max_iter` is reached before convergence.

    Returns
    -------
    state : FAState
    log_likelihood : numpy.ndarray, shape (batch,)
        Mean log-likelihood per sample at the end.
    n_iter : int
        Newton steps of the slowest member (EM: EM steps).
    converged : bool
        Every member converged.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import fit_fa_covariance
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(3, 4000, 1)) @ np.ones((1, 6)) + rng.normal(size=(3, 4000, 6))
    >>> cov = np.einsum("bti,btj->bij", x, x) / 4000
    >>> newton = fit_fa_covariance(cov, 1, progress=False)
    >>> em = fit_fa_covariance(cov, 1, method="em", progress=False)
    >>> bool(np.allclose(newton[1], em[1], rtol=0, atol=1e-8)), newton[3]
    (True, True)
    """
    S = np.asarray(cov, dtype=np.float64)
    B, n, _ = S.shape
    method = _resolve_method(method, n)
    d = int(n_latents)
    var = np.diagonal(S, axis1=-2, axis2=-1)
    floor = np.maximum(min_observation_var * var, 1e-9 * var.mean(axis=-1, keepdims=True) + 1e-300)
    if isinstance(init, tuple):
        L0 = np.broadcast_to(np.asarray(init[0], dtype=np.float64), (B, n, d)).copy()
        psi0 = np.maximum(np.broadcast_to(np.asarray(init[1], dtype=np.float64), (B, n)), floor)
    elif init == "pca":
        L0, psi0 = _pca_init(S, d, floor)
    elif init == "random":
        key = resolve_key(key, needed=True, why="init='random'")
        scale = np.exp(np.linalg.slogdet(S)[1] / n)[:, None, None]
        k_load, k_var = jax.random.split(key)
        L0 = np.asarray(jax.random.normal(k_load, (B, n, d), dtype=jnp.float64)) * np.sqrt(scale / max(d, 1))
        psi0 = np.maximum(var, floor)
        if method == "newton":
            psi0 = np.maximum(var * np.asarray(jax.random.uniform(k_var, (B, n), jnp.float64, 0.1, 1.0)), floor)
    else:
        raise ValueError(f"init must be 'pca', 'random' or a (loadings, observation_var) pair, got {init!r}")
    if d == 0:
        psi = var.copy()
        return FAState(np.zeros((B, n, 0)), psi), _fa_log_likelihood(np.zeros((B, n, 0)), psi, S), 0, True
    if method == "newton":
        L, psi, n_iter, conv = _fit_fa_profile(S, d, floor, psi0, max_iter=int(max_iter), tol=tol,
                                               progress=progress, warn=warn)
        return FAState(L, psi), _fa_log_likelihood(L, psi, S), n_iter, bool(conv.all())
    Bp, dp = _batch_bucket(B), _latent_bucket(d)
    weight = np.zeros(Bp)
    weight[:B] = 1.0
    init_state = FAState(jnp.asarray(_pad_batch(_pad_latents(L0, dp), Bp)), jnp.asarray(_pad_batch(psi0, Bp)))
    state, trace = run_em(_em_chunk_step(int(chunk)), init_state, jnp.asarray(_pad_batch(S, Bp)),
                          jnp.asarray(_pad_batch(floor, Bp)), jnp.asarray(weight),
                          max_iter=-(-int(max_iter) // int(chunk)), tol=tol, progress=progress,
                          desc=f"FA EM (d={d})", warn=warn)
    state = FAState(np.asarray(state.loadings)[:B, :, :d], np.asarray(state.observation_var)[:B])
    ll = _fa_log_likelihood(state.loadings, state.observation_var, S)
    return state, ll, trace.n_iter * int(chunk), bool(trace.converged)


# -- estimator ---------------------------------------------------------------------------------


class FactorAnalysis(Estimator):
    r"""Factor analysis :math:`x \sim \mathcal N(\mu, L L^\top + \Psi)` by maximum likelihood.

    Parameters
    ----------
    n_latents : int
        Number of latents ``d >= 0`` (0: independent neurons).
    min_observation_var : float
        Floor on each observation variance :math:`\Psi_{ii}`, as a fraction of that neuron's
        variance (0.01 as ``fastfa``).

    Attributes
    ----------
    mean_ : numpy.ndarray, shape (neuron,)
    loadings_ : numpy.ndarray, shape (neuron, latent)
        :math:`L`, determined up to an orthogonal rotation of the latents.
    observation_var_ : numpy.ndarray, shape (neuron,)
        Diagonal of :math:`\Psi`: each neuron's private (observation noise) variance.
    log_likelihood_ : float
        Total log-likelihood of the training data.
    n_iter_ : int
    converged_ : bool
    neuron_ids_ : numpy.ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import FactorAnalysis
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 1)) @ np.ones((1, 5)) + rng.normal(size=(2000, 5))
    >>> fa = FactorAnalysis(1).fit(x, progress=False)
    >>> np.round(np.abs(fa.loadings_.ravel()), 1).tolist(), bool(fa.converged_)
    ([1.0, 1.0, 1.0, 1.0, 1.0], True)
    """

    score_unit = "nats/bin"
    log_likelihood_dim = "time"

    def __init__(self, n_latents: int, *, min_observation_var: float = 0.01) -> None:
        if isinstance(n_latents, bool) or not isinstance(n_latents, (int, np.integer)) or n_latents < 0:
            raise ValueError(f"n_latents must be a non-negative integer, got {n_latents!r}")
        self.n_latents = n_latents
        self.min_observation_var = min_observation_var

    @pynapple_io()
    def fit(self, data: Any, *, method: str = "auto", key: Any = None, progress: bool | None = None,
            max_iter: int = 10000, tol: float = 1e-9, init: str = "pca") -> FactorAnalysis:
        """Fit to ``(time, neuron)`` data (a SpikeData or an array); returns self.

        Parameters
        ----------
        data : SpikeData or array_like, shape (time, neuron)
        method : {"auto", "newton", "em"}
            Maximum likelihood on the sample covariance (:func:`fit_fa_covariance`): Newton on the
            profile likelihood, or EM; ``"auto"`` (default) takes Newton up to 64 neurons.
        key : jax.random key or int, optional
            Required by ``init="random"`` only.
        progress : bool, optional
            tqdm bar; default :func:`bayesneuro.infer.fit.progress_default`.
        max_iter, tol : int, float
            Stopping rule (see :func:`fit_fa_covariance`).
        init : {"pca", "random"}
            Starting point.

        Raises
        ------
        ValueError
            Fewer than 2 bins, NaN, a constant neuron, or as many latents as neurons.
        TypeError
            ``init="random"`` without a key.
        """
        X, _, ids = _as_matrix(data)
        method = _resolve_method(method, X.shape[1])
        _check_not_constant(X, ids)
        d = int(self.n_latents)
        if d >= X.shape[1]:
            raise ValueError(f"n_latents={d} must be smaller than the number of neurons ({X.shape[1]})")
        mu = X.mean(axis=0)
        Xc = X - mu
        S = Xc.T @ Xc / X.shape[0]
        state, ll, n_iter, conv = fit_fa_covariance(
            S[None], d, key=key, init=init, method=method, max_iter=max_iter, tol=tol,
            min_observation_var=self.min_observation_var, progress=progress,
        )
        self.method_ = method
        self.mean_ = mu
        self.loadings_ = np.asarray(state.loadings[0])
        self.observation_var_ = np.asarray(state.observation_var[0])
        self.log_likelihood_ = float(ll[0]) * X.shape[0]
        self.n_iter_, self.converged_, self.neuron_ids_ = n_iter, conv, ids
        self._train_ll = self._pointwise(X)
        from ..data import SpikeData

        self._time = np.asarray(data.coords["time"]) if isinstance(data, SpikeData) else np.arange(X.shape[0])
        return self

    def _data(self, data: Any) -> np.ndarray:
        self._check_fitted()
        X, _, _ = _as_matrix(data, min_time=1)
        if X.shape[1] != self.loadings_.shape[0]:
            raise ValueError(f"data have {X.shape[1]} neurons but the model was fitted to {self.loadings_.shape[0]}")
        return X - self.mean_

    @property
    def covariance_(self) -> np.ndarray:
        r"""Model covariance :math:`L L^\top + \Psi`, shape (neuron, neuron)."""
        self._check_fitted()
        return self.loadings_ @ self.loadings_.T + np.diag(self.observation_var_)

    def _pointwise(self, X: np.ndarray) -> np.ndarray:
        Xc = X - self.mean_
        L, psi = self.loadings_, self.observation_var_
        xp = Xc / psi
        quad = np.sum(Xc * xp, axis=1)
        logdet = np.sum(np.log(psi))
        if L.shape[1]:
            beta, _, logdet = _fa_terms_np(L, psi)
            quad = quad - np.sum((xp @ L) * (Xc @ np.asarray(beta).T), axis=1)
        return -0.5 * (Xc.shape[1] * _LOG_2PI + float(logdet) + quad)

    @pynapple_io()
    def log_likelihood(self, data: Any) -> np.ndarray:
        """Gaussian log-likelihood (nats) of each time bin under the fitted model, shape (time,)."""
        self._data(data)
        return self._pointwise(_as_matrix(data, min_time=1)[0])

    @pynapple_io()
    def score(self, data: Any) -> float:
        """Mean log-likelihood per bin in nats/bin (as ``sklearn.decomposition.FactorAnalysis.score``)."""
        return float(np.mean(self.log_likelihood(data)))

    @pynapple_io()
    def evaluate(self, data: Any) -> dict:
        """``log_likelihood`` (total, nats), ``log_likelihood_per_bin`` (as :meth:`score`) and ``n_bins``."""
        ll = self.log_likelihood(data)
        return {"log_likelihood": float(ll.sum()), "log_likelihood_per_bin": float(ll.mean()),
                "n_bins": int(ll.size)}

    @pynapple_io("tsdframe")
    def transform(self, data: Any) -> np.ndarray:
        r"""Posterior latent means :math:`E[z \mid x] = L^\top C^{-1} (x - \mu)`, shape (time, latent)."""
        Xc = self._data(data)
        if self.loadings_.shape[1] == 0:
            return np.zeros((Xc.shape[0], 0))
        beta, _, _ = _fa_terms_np(self.loadings_, self.observation_var_)
        return Xc @ np.asarray(beta).T

    def shared_dimensionality(self, threshold: float = 0.95) -> int:
        """:func:`shared_dimensionality` of the fitted loadings."""
        self._check_fitted()
        return shared_dimensionality(self.loadings_, threshold=threshold)

    def percent_shared_variance(self) -> np.ndarray:
        """:func:`percent_shared_variance` of each neuron, shape (neuron,)."""
        self._check_fitted()
        return percent_shared_variance(self.loadings_, self.observation_var_)

    def summary_statistics(self) -> dict:
        """Summaries that do not depend on the arbitrary rotation of the latents (what
        :func:`~bayesneuro.density.compare_states` compares, by bootstrap refits).

        Returns
        -------
        dict of xarray.DataArray
            ``shared_variance`` (latent): eigenvalues of :math:`L L^\\top`, descending;
            ``percent_shared_variance`` and ``observation_var`` (neuron);
            ``shared_dimensionality`` (scalar).
        """
        self._check_fitted()
        ids = {"neuron": np.asarray(self.neuron_ids_)}
        mu = np.sort(np.linalg.svd(self.loadings_, compute_uv=False) ** 2)[::-1]
        return {
            "shared_variance": xr.DataArray(mu, dims="latent", coords={"latent": np.arange(mu.size)}),
            "percent_shared_variance": xr.DataArray(self.percent_shared_variance(), dims="neuron", coords=ids),
            "observation_var": xr.DataArray(np.asarray(self.observation_var_), dims="neuron", coords=ids),
            "shared_dimensionality": xr.DataArray(float(self.shared_dimensionality())),
        }

    def to_inference_data(self):
        """The fitted parameters as ArviZ InferenceData: a point fit (maximum likelihood).

        No ``posterior``: ``point_estimate`` (:func:`bayesneuro.infer.convert.point_inference_data`,
        no ``chain``/``draw``, ``attrs["method"]`` the fitting method, ``"newton"`` or ``"em"``)
        holds ``mean`` and ``observation_var``
        (neuron), ``loadings`` (neuron, latent); ``log_likelihood``: ``data`` (time), the
        log-likelihood of each training bin at the estimate.
        """
        from ..infer.convert import point_inference_data

        self._check_fitted()
        ids = np.asarray(self.neuron_ids_)
        return point_inference_data(
            {"mean": (("neuron",), np.asarray(self.mean_)),
             "loadings": (("neuron", "latent"), np.asarray(self.loadings_)),
             "observation_var": (("neuron",), np.asarray(self.observation_var_))},
            method=self.method_, coords={"neuron": ids, "latent": np.arange(self.loadings_.shape[1])},
            attrs={"log_likelihood": float(self.log_likelihood_), "n_iter": int(self.n_iter_),
                   "converged": int(bool(self.converged_))},
            log_likelihood={"data": (("time",), np.asarray(self._train_ll))},
            log_likelihood_coords={"time": self._time},
        )


# -- cross-validation ---------------------------------------------------------------------------


class CVResult(NamedTuple):
    """Held-out log-likelihood of factor analysis per number of latents.

    Attributes
    ----------
    dims : numpy.ndarray, shape (dim,)
        Candidate numbers of latents ``0 .. max_dim``.
    mean : numpy.ndarray, shape (dim,)
        Held-out log-likelihood per bin, averaged over folds.
    se : numpy.ndarray, shape (dim,)
        Its standard error across folds (``std(ddof=1) / sqrt(n_folds)``).
    fold_scores : numpy.ndarray, shape (fold, dim)
        Held-out log-likelihood per bin of each fold (NaN for a fold a bootstrap draw left empty).
    n_dim : int
        The dimension with the highest mean held-out log-likelihood.
    n_dim_1se : int
        The 1-SE rule: the smallest dimension whose mean is within one standard error of the
        best mean, the SE being that of its paired fold-by-fold difference from the best; more
        conservative.
    """

    dims: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    fold_scores: np.ndarray
    n_dim: int
    n_dim_1se: int


def _units(X: np.ndarray, seg: np.ndarray | None, n_blocks: int) -> np.ndarray:
    """Unit label per bin: the trial, or one of `n_blocks` contiguous time blocks."""
    if seg is not None:
        return np.asarray(seg)
    n_blocks = min(n_blocks, X.shape[0])
    return np.repeat(np.arange(n_blocks), [len(b) for b in np.array_split(np.arange(X.shape[0]), n_blocks)])


def _unit_stats(X: np.ndarray, unit: np.ndarray):
    U = int(unit.max()) + 1
    n = np.bincount(unit, minlength=U).astype(np.float64)
    s = np.zeros((U, X.shape[1]))
    np.add.at(s, unit, X)
    o = np.einsum("ti,tj->tij", X, X) if X.shape[0] * X.shape[1] ** 2 < 5e7 else None
    if o is not None:
        oo = np.zeros((U, X.shape[1], X.shape[1]))
        np.add.at(oo, unit, o)
    else:
        oo = np.stack([X[unit == u].T @ X[unit == u] for u in range(U)])
    return n, s, oo


def _moments(w: np.ndarray, n, s, o, centre: np.ndarray | None = None):
    """Mean and second moment about `centre` (default: the weighted mean) from unit weights ``w (batch, unit)``."""
    nw = w @ n
    mean = (w @ s) / nw[:, None]
    c = mean if centre is None else centre
    m2 = np.einsum("bu,uij->bij", w, o) / nw[:, None, None]
    S = m2 - np.einsum("bi,bj->bij", mean, c) - np.einsum("bi,bj->bij", c, mean) + np.einsum("bi,bj->bij", c, c)
    return mean, S, nw


def _cv_scores(w, n, s, o, fold_of_unit, n_folds, dims, key, progress, **fa_kw) -> np.ndarray:
    """Held-out log-lik per bin, shape (batch, fold, dim), for bootstrap unit weights ``w``."""
    B = w.shape[0]
    train_w = np.concatenate([w * (fold_of_unit != f) for f in range(n_folds)])  # (F*B, U) fold-major
    test_w = np.concatenate([w * (fold_of_unit == f) for f in range(n_folds)])
    empty = (test_w @ n == 0) | (train_w @ n == 0)  # a fold a bootstrap draw left empty
    if B == 1 and empty.any():
        raise ValueError("a cross-validation fold is empty; use fewer folds")
    train_w[empty], test_w[empty] = w[0] * 0 + 1, w[0] * 0 + 1  # placeholder, scored NaN below
    mean, S_train, _ = _moments(train_w, n, s, o)
    _, S_test, _ = _moments(test_w, n, s, o, centre=mean)
    out = np.empty((n_folds * B, len(dims)))
    fa_kw["method"] = _resolve_method(fa_kw.get("method", "auto"), S_train.shape[-1])
    newton = fa_kw["method"] == "newton"
    prev = None
    for i, d in enumerate(dims):
        k = None if key is None else jax.random.fold_in(key, int(d))
        # EM: over-sized models converge slowly, and their held-out score is settled long before
        # tol is met, so its cap is expected here and does not warn; Newton converges or warns
        state, train_ll, _, _ = fit_fa_covariance(S_train, int(d), key=k, progress=progress, warn=newton, **fa_kw)
        if prev is not None and d > 0 and newton:
            # a second start at the previous dimension's observation variances: from there the
            # d-latent fit can only gain on the (d-1)-latent one, so the training likelihood
            # never falls as latents are added; each member keeps the better of the two local maxima
            warm, warm_ll, _, _ = fit_fa_covariance(S_train, int(d), init=(0.0, prev), progress=progress,
                                                    **fa_kw)
            better = warm_ll > train_ll
            state = FAState(np.where(better[:, None, None], warm.loadings, state.loadings),
                            np.where(better[:, None], warm.observation_var, state.observation_var))
        prev = np.asarray(state.observation_var)
        out[:, i] = _fa_log_likelihood(state.loadings, state.observation_var, S_test)
    out[empty] = np.nan
    return out.reshape(n_folds, B, len(dims)).transpose(1, 0, 2)


def _summarise_cv(dims: np.ndarray, scores: np.ndarray) -> CVResult:
    F = np.sum(np.isfinite(scores[:, 0]))  # folds left empty by a bootstrap draw are NaN
    mean = np.nanmean(scores, axis=0)
    se = np.nanstd(scores, axis=0, ddof=1) / np.sqrt(F) if F > 1 else np.zeros_like(mean)
    best = int(np.argmax(mean))
    # the 1-SE rule on paired differences: folds differ in difficulty (slow drifts, busy trials),
    # which moves every dimension's score together and says nothing about their difference
    diff = scores - scores[:, [best]]
    se_diff = np.nanstd(diff, axis=0, ddof=1) / np.sqrt(F) if F > 1 else np.zeros_like(mean)
    one_se = int(np.flatnonzero(mean >= mean[best] - se_diff)[0])
    return CVResult(dims, mean, se, scores, int(dims[best]), int(dims[one_se]))


def _fold_assignment(n_units: int, n_folds: int, key: jax.Array, shuffle: bool) -> np.ndarray:
    order = np.asarray(jax.random.permutation(key, n_units)) if shuffle else np.arange(n_units)
    fold = np.empty(n_units, np.int64)
    for f, idx in enumerate(np.array_split(order, n_folds)):
        fold[idx] = f
    return fold


def cross_validate_dimensionality(
    data: Any,
    *,
    max_dim: int,
    n_folds: int = 5,
    key: Any = None,
    progress: bool | None = None,
    **fa_kw,
) -> CVResult:
    """Held-out factor-analysis log-likelihood for ``0 .. max_dim`` latents.

    Folds are whole trials (assigned to folds at random by `key`) when the data have trials,
    otherwise `n_folds` contiguous time blocks (so that autocorrelation does not leak between
    training and test bins). Each fold's model is fitted to the other folds; its mean and
    covariance are scored on the fold.

    Parameters
    ----------
    data : SpikeData or array_like, shape (time, neuron)
    max_dim : int
        Largest number of latents tried (smaller than the number of neurons).
    n_folds : int
        At least 2.
    key : jax.random key or int, optional
        Required when the data have trials (they are assigned to folds at random).
    progress : bool, optional
    **fa_kw
        ``max_iter``, ``tol``, ``min_observation_var`` of :func:`fit_fa_covariance`.

    Returns
    -------
    CVResult
        ``n_dim`` maximises the mean held-out log-likelihood; ``n_dim_1se`` applies the 1-SE rule.

    Raises
    ------
    ValueError
        ``max_dim`` out of range, fewer than 2 folds, fewer trials (or bins) than folds, NaN, or a
        constant neuron.

    Warns
    -----
    UserWarning
        ``n_dim`` is ``max_dim``: the best dimension may be larger; raise ``max_dim``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import cross_validate_dimensionality
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 2)) @ rng.normal(size=(2, 8)) + rng.normal(size=(1000, 8))
    >>> cross_validate_dimensionality(x, max_dim=4, key=0, progress=False).n_dim
    2
    """
    X, seg, ids = _as_matrix(data)
    key = resolve_key(key, needed=seg is not None, why="assigning trials to folds at random")
    _check_not_constant(X, ids)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if isinstance(max_dim, bool) or not isinstance(max_dim, (int, np.integer)) or not 0 <= max_dim < X.shape[1]:
        raise ValueError(f"max_dim must be an integer in [0, n_neuron - 1 = {X.shape[1] - 1}], got {max_dim!r}")
    unit = _units(X, seg, n_folds)
    n_units = int(unit.max()) + 1
    if n_units < n_folds:
        what = "trials" if seg is not None else "time bins"
        raise ValueError(f"n_folds={n_folds} needs at least as many {what}; the data have {n_units}")
    k_fold, k_fit = jax.random.split(key) if key is not None else (None, None)
    fold = _fold_assignment(n_units, n_folds, k_fold, shuffle=seg is not None)
    n, s, o = _unit_stats(X, unit)
    dims = np.arange(max_dim + 1)
    scores = _cv_scores(np.ones((1, n_units)), n, s, o, fold, n_folds, dims, k_fit, progress, **fa_kw)[0]
    out = _summarise_cv(dims, scores)
    if max_dim >= 1:
        how = (f"raise max_dim (at most n_neuron - 1 = {X.shape[1] - 1})" if max_dim < X.shape[1] - 1 else
               "max_dim is already n_neuron - 1, the most factor analysis allows: record more neurons")
        _warn_if_on_edge(out.n_dim, dims, what="number of latents (cross-validated)", floor=0, how=how)
    return out


# -- the estimator with bootstrap uncertainty --------------------------------------------------


class Dimensionality(Estimator):
    """Dimensionality of population activity, with bootstrap uncertainty.

    ``fit`` computes, on ``(time, neuron)`` data:

    - ``participation_ratio``: of the covariance eigenvalues;
    - ``n_dim``: the number of FA latents chosen by cross-validation (:func:`cross_validate_dimensionality`,
      by the maximum or, with ``rule="1se"``, the 1-SE rule);
    - ``shared_dimensionality``: of the FA model with ``n_dim`` latents (95% of shared variance);
    - ``percent_shared_variance``: per neuron, and its mean over neurons ``mean_percent_shared_variance``.

    Uncertainty: a nonparametric bootstrap over trials (or, without trials, over `n_blocks`
    contiguous time blocks, keeping short-range autocorrelation inside blocks). Each draw
    resamples the units with replacement and recomputes every statistic, **the choice of the
    number of latents included**: by default (``bootstrap_cv=True``) the cross-validation is
    rerun in every draw (folds over the original units, so copies of a unit never straddle a
    fold; ``n_folds * (max_dim + 1)`` fits per draw, batched), so the draws of ``n_dim`` show how
    firmly the data choose it, and the FA statistics of each draw use that draw's choice. With
    ``bootstrap_cv=False`` (faster) the FA statistics use the full-data choice, and ``n_dim`` has
    no draws (its interval would have zero width by construction).

    :meth:`score`, :meth:`log_likelihood` and :meth:`to_inference_data` are those of the
    full-data factor-analysis model ``fa_`` (Gaussian log-likelihood per time bin).

    Parameters
    ----------
    max_dim : int
        Largest number of latents tried by cross-validation (capped at ``n_neuron - 1``).
    rule : {"max", "1se"}

    Attributes
    ----------
    estimates_ : dict of str to float or numpy.ndarray
        Point estimates on the full data.
    cv_ : CVResult
    fa_ : FactorAnalysis
        The full-data model with ``n_dim`` latents.
    bootstrap_ : xarray.Dataset or None
        Draws of each statistic (dim ``draw``, plus ``neuron`` for percent shared variance).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import Dimensionality
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 2)) @ rng.normal(size=(2, 8)) + rng.normal(size=(1000, 8))
    >>> est = Dimensionality(max_dim=4).fit(x, key=0, n_boot=20, progress=False)
    >>> est.estimates_["n_dim"], est.posterior_statistics(key=0, num_samples=10)["participation_ratio"].dims
    (2, ('draw',))
    """

    score_unit = "nats/bin"
    log_likelihood_dim = "time"

    def __init__(self, *, max_dim: int = 10, rule: str = "max") -> None:
        if rule not in ("max", "1se"):
            raise ValueError(f"rule must be 'max' or '1se', got {rule!r}")
        self.max_dim = max_dim
        self.rule = rule

    @pynapple_io()
    def fit(self, data: Any, *, method: str = "auto", key: Any = None, progress: bool | None = None,
            n_folds: int = 5, n_boot: int = 200, n_blocks: int = 20, bootstrap_cv: bool = True) -> Dimensionality:
        """Estimate the statistics and their bootstrap distribution; returns self.

        Parameters
        ----------
        data : SpikeData or array_like, shape (time, neuron)
        method : {"auto", "newton", "em"}
            How every factor-analysis model is fitted (:func:`fit_fa_covariance`): Newton on the
            profile likelihood, or EM; ``"auto"`` (default) takes Newton up to 64 neurons.
        key : jax.random key or int, optional
            Required with ``n_boot > 0`` (bootstrap draws) or trials (random folds).
        progress : bool, optional
        n_folds : int
            Cross-validation folds.
        n_boot : int
            Bootstrap draws (0: point estimates only).
        n_blocks : int
            Time blocks for data without trials (bootstrap units).
        bootstrap_cv : bool
            Rerun the cross-validation in every bootstrap draw (default): the draws of ``n_dim``
            are the uncertainty of the choice. False: the FA statistics condition on the
            full-data choice and ``n_dim`` gets no draws.

        Warns
        -----
        UserWarning
            The cross-validated ``n_dim`` is ``max_dim`` (raise it).
        """
        _check_method(method)  # before the data checks
        if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
            raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
        X, seg, ids = _as_matrix(data)
        method = _resolve_method(method, X.shape[1])
        key = resolve_key(key, needed=n_boot > 0 or seg is not None,
                          why=f"n_boot={n_boot} (bootstrap draws)" if n_boot > 0 else "assigning trials to folds")
        _check_not_constant(X, ids)
        max_dim = min(self.max_dim, X.shape[1] - 1)
        k_cv, k_boot, k_bcv = jax.random.split(key, 3) if key is not None else (None, None, None)
        cv = cross_validate_dimensionality(data, max_dim=max_dim, n_folds=n_folds, key=k_cv, progress=progress,
                                           method=method)
        d = cv.n_dim if self.rule == "max" else cv.n_dim_1se
        fa = FactorAnalysis(d).fit(data, progress=progress, method=method)
        cov = np.cov(X, rowvar=False, ddof=0)
        psv = fa.percent_shared_variance()
        self.estimates_ = {
            "participation_ratio": float(_pr_of_cov(cov)),
            "n_dim": int(d),
            "shared_dimensionality": fa.shared_dimensionality(),
            "percent_shared_variance": psv,
            "mean_percent_shared_variance": float(psv.mean()),
        }
        self.cv_, self.fa_, self.neuron_ids_ = cv, fa, ids
        self.bootstrap_ = (self._bootstrap(X, seg, n_boot, d, fa, k_boot, k_bcv, max_dim, n_folds, n_blocks,
                                           bootstrap_cv, progress, method) if n_boot else None)
        return self

    def _bootstrap(self, X, seg, n_boot, d, fa, k_boot, k_bcv, max_dim, n_folds, n_blocks, bootstrap_cv,
                   progress, method) -> xr.Dataset:
        unit = _units(X, seg, n_blocks)
        U = int(unit.max()) + 1
        if U < 2:
            raise ValueError("the bootstrap needs at least 2 trials (or time blocks)")
        n, s, o = _unit_stats(X, unit)
        pick = np.asarray(jax.random.randint(k_boot, (n_boot, U), 0, U))
        w = np.stack([np.bincount(p, minlength=U) for p in pick]).astype(np.float64)
        _, S, _ = _moments(w, n, s, o)
        pr = _pr_of_cov(S)
        if bootstrap_cv:
            fold = _fold_assignment(U, n_folds, jax.random.fold_in(k_bcv, 0), shuffle=seg is not None)
            dims = np.arange(max_dim + 1)
            scores = _cv_scores(w, n, s, o, fold, n_folds, dims, k_bcv, progress, method=method)
            ok = np.isfinite(scores[:, :, 0]).sum(axis=1) >= 2  # a resample can leave folds empty
            ds = np.array([getattr(_summarise_cv(dims, sc), "n_dim" if self.rule == "max" else "n_dim_1se")
                           if g else d for sc, g in zip(scores, ok)])
            if not ok.all():
                import warnings

                warnings.warn(
                    f"{int((~ok).sum())} of {n_boot} bootstrap draws left fewer than 2 of the {n_folds} "
                    "cross-validation folds with data (few trials or blocks): their n_dim is NaN and their "
                    f"other statistics use the full-data choice ({d}); use fewer folds or more trials",
                    UserWarning, stacklevel=4,
                )
            nd_draws = np.where(ok, ds, np.nan)
        else:
            ds = np.full(n_boot, d)
            nd_draws = None
        n_neuron = X.shape[1]
        d_shared = np.zeros(n_boot, np.int64)
        psv = np.zeros((n_boot, n_neuron))
        for dd in np.unique(ds):
            idx = np.flatnonzero(ds == dd)
            if dd == 0:
                continue
            init = (fa.loadings_, fa.observation_var_) if dd == d else "pca"
            # EM: a draw's choice can be over-sized for its resample: slow to converge, its shared
            # variance settled long before tol is met (as in the cross-validation), so no warning
            state, _, _, _ = fit_fa_covariance(S[idx], int(dd), init=init, method=method, progress=progress,
                                               warn=method == "newton" or not bootstrap_cv)
            for j, i in enumerate(idx):
                L = np.asarray(state.loadings[j])
                d_shared[i] = shared_dimensionality(L)
                psv[i] = percent_shared_variance(L, np.asarray(state.observation_var[j]))
        coords = {"draw": np.arange(n_boot), "neuron": self.neuron_ids_}
        out = {
            "participation_ratio": ("draw", pr),
            "n_dim": ("draw", nd_draws if nd_draws is None or np.isnan(nd_draws).any() else nd_draws.astype(np.int64)),
            "shared_dimensionality": ("draw", d_shared),
            "percent_shared_variance": (("draw", "neuron"), psv),
            "mean_percent_shared_variance": ("draw", psv.mean(axis=1)),
        }
        if not bootstrap_cv:  # the choice was not resampled: no draws for it
            del out["n_dim"]
        return xr.Dataset(out, coords=coords)

    @pynapple_io()
    def log_likelihood(self, data: Any) -> np.ndarray:
        """Log-likelihood (nats) of each time bin under the full-data FA model ``fa_``, shape (time,)."""
        self._check_fitted()
        return self.fa_.log_likelihood(data)

    @pynapple_io()
    def score(self, data: Any) -> float:
        """Mean log-likelihood per bin (nats/bin) under the full-data FA model ``fa_``."""
        self._check_fitted()
        return self.fa_.score(data)

    @pynapple_io()
    def evaluate(self, data: Any) -> dict:
        """:meth:`FactorAnalysis.evaluate` of ``fa_`` plus the point estimates (``estimates_``)."""
        self._check_fitted()
        return {**self.fa_.evaluate(data), **self.estimates_}

    def posterior_statistics(self, *, key: Any = None, num_samples: int) -> dict:
        """Bootstrap draws of each statistic (for :func:`compare_states`).

        Returns ``participation_ratio``, ``n_dim``, ``shared_dimensionality``,
        ``mean_percent_shared_variance`` (each dims ``("draw",)``) and ``percent_shared_variance``
        (``("draw", "neuron")``), `num_samples` draws taken with replacement (by `key`) from the
        stored bootstrap draws (all of them, in order, when `num_samples` equals their number;
        `key` is needed otherwise). ``n_dim`` is there only when the fit bootstrapped the choice
        (``bootstrap_cv=True``, the default): a count fixed at the full-data choice would show an
        interval of zero width that no data support.
        """
        self._check_fitted()
        if self.bootstrap_ is None:
            raise ValueError("fitted with n_boot=0: there are no bootstrap draws")
        n = self.bootstrap_.sizes["draw"]
        num_samples = int(num_samples)
        key = resolve_key(key, needed=num_samples != n, why="resampling the bootstrap draws")
        idx = np.arange(n) if num_samples == n else np.asarray(jax.random.choice(key, n, (num_samples,)))
        ds = self.bootstrap_.isel(draw=idx).assign_coords(draw=np.arange(num_samples))
        return {k: ds[k] for k in ds.data_vars}

    def to_inference_data(self):
        """ArviZ InferenceData: ``posterior`` holds the bootstrap draws of every statistic (one
        chain; a bootstrap, not a posterior, ``attrs["method"] = "bootstrap"``); with ``n_boot=0``
        there are no draws and ``point_estimate`` holds the estimates instead (no ``chain``/``draw``;
        :func:`bayesneuro.infer.convert.point_inference_data`). ``log_likelihood``: that of ``fa_``
        on the training bins at its estimate (dims ``time``).
        """
        import arviz as az

        from ..infer.convert import point_inference_data

        self._check_fitted()
        ll = self.fa_.to_inference_data().log_likelihood
        if self.bootstrap_ is not None:
            post = self.bootstrap_.expand_dims(chain=[0])
            post.attrs = {**post.attrs, "method": "bootstrap"}
            return az.InferenceData(posterior=post, log_likelihood=ll)
        e = self.estimates_
        return point_inference_data(
            {k: ((("neuron",) if np.ndim(v) else ()), np.asarray(v)) for k, v in e.items()},
            method="fa", coords={"neuron": self.neuron_ids_}, groups={"log_likelihood": ll},
        )

    def __repr__(self) -> str:
        if not getattr(self, "estimates_", None):
            return super().__repr__()
        e = self.estimates_
        return (f"Dimensionality(participation_ratio={e['participation_ratio']:.3g}, n_dim={e['n_dim']}, "
                f"shared_dimensionality={e['shared_dimensionality']})")


# -- over time: recurrence of population vectors ---------------------------------------------


def similarity_matrix(data: Any, *, metric: str = "correlation", smooth: float | None = None) -> np.ndarray:
    """Similarity between the population vectors of every pair of time bins, shape (time, time).

    Parameters
    ----------
    data : SpikeData or array_like, shape (time, neuron)
    metric : {"correlation", "cosine"}
        Pearson correlation across neurons (each vector centred on its own mean) or the cosine of
        the angle between raw vectors. Bins with a constant (correlation) or zero (cosine) vector
        give NaN rows and columns.
    smooth : float, optional
        Standard deviation in bins of a Gaussian kernel applied along time first, within each
        trial (``scipy.ndimage.gaussian_filter1d``, ``mode="nearest"``), never across a trial edge.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.dimensionality import similarity_matrix
    >>> sim = similarity_matrix(np.array([[1, 2, 3], [2, 4, 6], [3, 2, 1]]))
    >>> sim.round(3).tolist()
    [[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
    """
    X, seg, _ = _as_matrix(data, min_time=1)
    if metric not in ("correlation", "cosine"):
        raise ValueError(f"metric must be 'correlation' or 'cosine', got {metric!r}")
    if smooth is not None:
        from scipy.ndimage import gaussian_filter1d

        if not (isinstance(smooth, (int, float, np.number)) and math.isfinite(smooth) and smooth > 0):
            raise ValueError(f"smooth must be a positive number of bins, got {smooth!r}")
        seg = np.zeros(X.shape[0], np.int64) if seg is None else seg
        X = X.copy()
        for u in np.unique(seg):
            m = seg == u
            X[m] = gaussian_filter1d(X[m], float(smooth), axis=0, mode="nearest")
    if metric == "correlation":
        X = X - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(X, axis=1)
    scale = np.abs(X).max(axis=1) if X.size else norm
    ok = norm > 1e-12 * np.maximum(scale, 1e-300) * np.sqrt(X.shape[1])
    Z = np.where(ok[:, None], X / np.where(ok, norm, 1.0)[:, None], np.nan)
    return np.clip(Z @ Z.T, -1.0, 1.0)
