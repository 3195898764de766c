"""Pareto-smoothed importance sampling (PSIS), vectorised over observations.

ArviZ 0.x's ``psislw`` (and so ``az.loo``) runs its Pareto fit and its ``logsumexp`` once per
observation in Python: about 0.3 ms each, so a model with 10^5 pointwise log-likelihoods (one per
inter-spike interval, say) spends half a minute in LOO. The functions here do the same arithmetic
(Vehtari et al. 2024; Zhang & Stephens 2009 for the generalised Pareto fit, with ArviZ's weakly
informative prior on k) on whole blocks of observations at once, and agree with ArviZ to rounding
(``tests/test_diagnostics_loo.py``).

References
----------
Vehtari A, Simpson D, Gelman A, Yao Y, Gabry J (2024). Pareto smoothed importance sampling.
*Journal of Machine Learning Research* 25(72):1-58.
Zhang J, Stephens MA (2009). A new and efficient estimation method for the generalized Pareto
distribution. *Technometrics* 51:316-325.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

_CHUNK = 4096  # observations per block: the Pareto fit holds (block, grid, tail) floats
_EPS = np.finfo(float).eps


def _gpd_fit(tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes generalised Pareto fit of each row of `tail` (rows sorted ascending, > 0).

    Returns the shape ``k`` (with the prior ``(n k + 10 / 2) / (n + 10)``) and scale ``sigma``.
    """
    prior_bs, prior_k = 3, 10
    n = tail.shape[1]
    m = 30 + int(n**0.5)
    b = 1 - np.sqrt(m / (np.arange(1, m + 1, dtype=float) - 0.5))
    b = b[None, :] / (prior_bs * tail[:, int(n / 4 + 0.5) - 1 : int(n / 4 + 0.5)]) + 1 / tail[:, -1:]
    # log(1 - b x) rather than log1p: twice as fast, and its absolute error (~1e-16) is far below
    # the mean over the tail that it feeds; in place, in blocks that stay in cache
    k = np.empty(b.shape)
    for s in range(0, b.shape[0], 256):
        t = b[s : s + 256, :, None] * tail[s : s + 256, None, :]
        np.subtract(1.0, t, out=t)
        np.log(t, out=t)
        k[s : s + 256] = t.mean(axis=2)
    len_scale = n * (np.log(-(b / k)) - k - 1)
    # 1 / sum_j exp(ls_j - ls_i), as ArviZ, in O(m) rather than O(m^2)
    weights = np.exp(len_scale - logsumexp(len_scale, axis=1, keepdims=True))
    weights = np.where(weights >= 10 * _EPS, weights, 0.0)  # negligible weights removed
    weights /= weights.sum(axis=1, keepdims=True)
    b_post = np.sum(b * weights, axis=1)
    k_post = np.log1p(-b_post[:, None] * tail).mean(axis=1)
    sigma = -k_post / b_post
    return (n * k_post + prior_k * 0.5) / (n + prior_k), sigma


def _gpd_quantiles(probs: np.ndarray, k: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Generalised Pareto quantiles ``(row, len(probs))`` for each row's ``k``, ``sigma`` (0 < probs < 1)."""
    kk = k[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(np.abs(kk) < _EPS, -np.log1p(-probs)[None, :],
                     np.expm1(-kk * np.log1p(-probs)[None, :]) / np.where(np.abs(kk) < _EPS, 1.0, kk))
    q = q * sigma[:, None]
    return np.where(sigma[:, None] > 0, q, np.nan)


def _smooth_rows(x: np.ndarray, tail_len: int, cutoff: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Pareto-smooth the `tail_len` largest entries of each row of `x` (log weights, max 0) in place.

    `order` (row, tail_len): the column indices of those entries, ascending. Returns ``k``.
    """
    if tail_len <= 4:  # not enough tail draws for the fit
        return np.full(x.shape[0], np.inf)
    rows = np.arange(x.shape[0])[:, None]
    expcut = np.exp(cutoff)[:, None]
    k, sigma = _gpd_fit(np.exp(x[rows, order]) - expcut)
    fine = np.isfinite(k)
    if fine.any():
        probs = np.arange(0.5, tail_len) / tail_len
        smoothed = np.log(_gpd_quantiles(probs, k[fine], sigma[fine]) + expcut[fine])
        xf = x[fine]
        xf[np.arange(xf.shape[0])[:, None], order[fine]] = smoothed
        xf[xf > 0] = 0.0  # truncated at the largest raw weight
        x[fine] = xf
    return k


def psis_log_weights(log_ratios: np.ndarray, reff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed, truncated and normalised log weights and Pareto ``k`` of each row.

    Parameters
    ----------
    log_ratios : numpy.ndarray, shape (observation, sample)
        Log importance ratios (for LOO: minus the pointwise log-likelihood).
    reff : float
        Relative efficiency of the draws (``ess / n``).

    Returns
    -------
    log_weights : numpy.ndarray, shape (observation, sample)
    k : numpy.ndarray, shape (observation,)
        Estimated Pareto shape (``inf`` where the tail has 4 draws or fewer).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro._psis import psis_log_weights
    >>> lw, k = psis_log_weights(np.random.default_rng(0).normal(size=(3, 1000)))
    >>> np.allclose(np.exp(lw).sum(axis=1), 1.0), k.shape
    (True, (3,))
    """
    x = np.array(log_ratios, dtype=np.float64)
    n_obs, S = x.shape
    cutoff_ind = -int(np.ceil(min(S / 5.0, 3 * (S / reff) ** 0.5))) - 1
    cutoffmin = np.log(np.finfo(float).tiny)
    M = -cutoff_ind - 1  # the tail's length when there are no ties at the cutoff
    lw = np.empty_like(x)
    k = np.empty(n_obs)
    for start in range(0, n_obs, _CHUNK):
        xc = x[start : start + _CHUNK]
        xc -= xc.max(axis=1, keepdims=True)
        part = np.argpartition(xc, S + cutoff_ind, axis=1)
        rows = np.arange(xc.shape[0])[:, None]
        cut = np.maximum(xc[rows[:, 0], part[:, S + cutoff_ind]], cutoffmin)
        tail_len = np.sum(xc > cut[:, None], axis=1)
        kc = np.empty(xc.shape[0])
        regular = tail_len == M
        if regular.any():  # the tail is the partition's top M entries, sorted here
            top = part[regular, S - M :]
            top = np.take_along_axis(top, np.argsort(np.take_along_axis(xc[regular], top, axis=1), axis=1), axis=1)
            sub = xc[regular]
            kc[regular] = _smooth_rows(sub, M, cut[regular], top)
            xc[regular] = sub
        for L in np.unique(tail_len[~regular]):  # ties or the underflow floor at the cutoff
            idx = np.flatnonzero(~regular & (tail_len == L))
            sub = xc[idx]
            order = np.argsort(sub, axis=1)[:, S - int(L) :] if L else np.zeros((idx.size, 0), int)
            kc[idx] = _smooth_rows(sub, int(L), cut[idx], order)
            xc[idx] = sub
        xc -= _logsumexp_rows(xc)[:, None]
        lw[start : start + _CHUNK] = xc
        k[start : start + _CHUNK] = kc
    return lw, k


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=1)) + m[:, 0]


def loo_pointwise(log_lik: np.ndarray, reff: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS-LOO of each observation: ``(loo_i, pareto_k, lppd_i)`` from ``log_lik (observation, sample)``.

    ``loo_i`` is the log predictive density of the observation with it left out,
    ``lppd_i`` the log of its mean likelihood under all draws (``lppd - loo`` is ``p_loo``).
    """
    log_lik = np.asarray(log_lik, dtype=np.float64)
    S = log_lik.shape[1]
    loo_i = np.empty(log_lik.shape[0])
    k = np.empty(log_lik.shape[0])
    for start in range(0, log_lik.shape[0], _CHUNK):
        ll = log_lik[start : start + _CHUNK]
        lw, k[start : start + _CHUNK] = psis_log_weights(-ll, reff)
        loo_i[start : start + _CHUNK] = _logsumexp_rows(lw + ll)
    lppd_i = _logsumexp_rows(log_lik) - np.log(S)
    return loo_i, k, lppd_i
