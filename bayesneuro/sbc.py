"""Simulation-based calibration (Talts et al. 2018).

If parameters are drawn from the prior, data from the model given them, and
draws from a correct posterior given those data, then the rank of each true
parameter among its posterior draws is uniform. Too-narrow posteriors pile ranks
at the extremes, too-wide ones in the middle, biased ones on one side.

The helper is generic: it takes a simulator ``simulate(key) -> (truth, data)``
and a posterior sampler ``posterior(key, data) -> draws``. :func:`prior_simulator`
and :func:`fit_posterior` build both from a NumPyro model and the shared
inference layer.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from numpyro import handlers
from scipy import stats

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from ._progress import progress_bar
from .infer import _model
from .infer.fit import progress_default

__all__ = ["SBCResult", "run_sbc", "prior_simulator", "fit_posterior", "rank_uniformity_pvalue"]


class SBCResult(NamedTuple):
    """Outcome of :func:`run_sbc`.

    Attributes
    ----------
    ranks : dict of str to ndarray
        Rank of the true value among the posterior draws, ``(sim, *param_shape)``,
        each in ``0..n_draws``.
    n_draws : int
        Posterior draws per simulation used for ranking (ranks take ``n_draws + 1`` values).
    pvalues : dict of str to ndarray
        Chi-square uniformity p-value per scalar parameter, ``param_shape``.
    min_pvalue : float
        Smallest p-value over all scalar parameters.
    n_tests : int
        Number of scalar parameters tested.
    alpha : float
        Family-wise significance level.
    passed : bool
        False when ``min_pvalue < alpha / n_tests`` (Bonferroni): the posterior is
        rejected as miscalibrated.
    """

    ranks: dict
    n_draws: int
    pvalues: dict
    min_pvalue: float
    n_tests: int
    alpha: float
    passed: bool

    def plot(self, ax=None, n_bins: int | None = None):
        """Rank histograms per parameter with a 99% band for uniform ranks."""
        from .plotting import sbc_histograms

        return sbc_histograms(self, ax=ax, n_bins=n_bins)


def rank_uniformity_pvalue(ranks: np.ndarray, n_draws: int, n_bins: int | None = None) -> np.ndarray:
    """Chi-square p-value that ranks in ``0..n_draws`` are uniform, along axis 0.

    Ranks are pooled into ``n_bins`` equal-width bins (default: as many as keep at
    least 5 expected counts per bin, at most 20, and dividing ``n_draws + 1``).
    """
    ranks = np.asarray(ranks)
    n_sim = ranks.shape[0]
    n_vals = n_draws + 1
    if n_bins is None:
        n_bins = max(2, min(20, n_sim // 5))
        while n_vals % n_bins:
            n_bins -= 1
    if n_vals % n_bins:
        raise ValueError(f"n_bins={n_bins} must divide n_draws + 1 = {n_vals}")
    binned = ranks * n_bins // n_vals
    flat = binned.reshape(n_sim, -1)
    counts = np.stack([(flat == b).sum(axis=0) for b in range(n_bins)])
    p = stats.chisquare(counts, axis=0).pvalue
    return np.asarray(p).reshape(ranks.shape[1:])


def run_sbc(
    simulate: Callable[[jax.Array], tuple[dict, Any]],
    posterior: Callable[[jax.Array, Any], dict],
    *,
    key: Any,
    n_sims: int = 200,
    n_draws: int = 99,
    alpha: float = 0.01,
    params: list[str] | None = None,
    progress: bool | None = None,
) -> SBCResult:
    """Run simulation-based calibration.

    Parameters
    ----------
    simulate : callable
        ``simulate(key) -> (truth, data)``: ``truth`` a dict of parameter values
        drawn from the prior, ``data`` whatever ``posterior`` takes.
    posterior : callable
        ``posterior(key, data) -> dict`` of draws, each ``(n, *param_shape)`` with
        ``n >= n_draws``. When ``n > n_draws`` the draws are thinned evenly to
        ``n_draws`` (which also reduces autocorrelation of MCMC draws).
    key : jax.random key or int
        Required.
    n_sims : int
        Number of simulated data sets.
    n_draws : int
        Posterior draws per simulation used for the rank.
    alpha : float
        Family-wise level of the uniformity test (Bonferroni over parameters).
    params : list of str, optional
        Parameters to check (default: every key of ``truth``).
    progress : bool, optional
        Progress bar over simulations.

    Returns
    -------
    SBCResult

    References
    ----------
    Talts, Betancourt, Simpson, Vehtari, Gelman (2018). Validating Bayesian inference
    algorithms with simulation-based calibration. arXiv:1804.06788.

    Examples
    --------
    A conjugate Gamma-Poisson rate, with its exact posterior:

    >>> import numpy as np
    >>> from bayesneuro.sbc import run_sbc
    >>> def simulate(key):
    ...     rng = np.random.default_rng(np.asarray(key))
    ...     rate = rng.gamma(2.0, 1.0)
    ...     return {"rate": rate}, rng.poisson(rate, size=20)
    >>> def posterior(key, counts):
    ...     rng = np.random.default_rng(np.asarray(key))
    ...     return {"rate": rng.gamma(2.0 + counts.sum(), 1.0 / (1.0 + len(counts)), size=99)}
    >>> res = run_sbc(simulate, posterior, key=0, n_sims=200, progress=False)
    >>> res.passed
    True
    """
    rng = _model.as_key(key)
    progress = progress_default() if progress is None else progress
    if n_sims < 10:
        raise ValueError(f"n_sims={n_sims} is too few for a rank-uniformity test; use >= 10")
    keys = jax.random.split(rng, n_sims)
    ranks: dict[str, list] = {}
    for i in progress_bar(range(n_sims), desc="SBC", disable=not progress, leave=False):
        k_sim, k_post = jax.random.split(keys[i])
        truth, data = simulate(k_sim)
        draws = posterior(k_post, data)
        names = params if params is not None else list(truth)
        for name in names:
            d = np.asarray(draws[name])
            if d.shape[0] < n_draws:
                raise ValueError(
                    f"posterior returned {d.shape[0]} draws of {name!r}; need at least n_draws={n_draws}"
                )
            idx = np.linspace(0, d.shape[0] - 1, n_draws).round().astype(int)
            d = d[idx]
            t = np.asarray(truth[name])
            ranks.setdefault(name, []).append((d < t).sum(axis=0))
    ranks_arr = {k: np.stack(v) for k, v in ranks.items()}
    pvalues = {k: rank_uniformity_pvalue(v, n_draws) for k, v in ranks_arr.items()}
    n_tests = int(sum(np.size(p) for p in pvalues.values()))
    min_p = float(min(np.min(p) for p in pvalues.values()))
    return SBCResult(ranks_arr, n_draws, pvalues, min_p, n_tests, alpha, min_p >= alpha / n_tests)


def prior_simulator(model: Callable, *, obs: str, params: list[str] | None = None, **model_kwargs):
    """Build ``simulate(key)`` for :func:`run_sbc` from a NumPyro model.

    Parameters
    ----------
    model : callable
        NumPyro model whose observation argument ``obs`` is sampled when None.
    obs : str
        Name of the model's observation keyword argument (and observed site).
    params : list of str, optional
        Latent sites to return as the truth (default: all latent sample sites).
    **model_kwargs
        Other data for the model (covariates, sizes).

    Returns
    -------
    callable
        ``simulate(key) -> (truth, model_kwargs with obs filled in)``.
    """

    def simulate(key):
        kw = {**model_kwargs, obs: None}
        tr = handlers.trace(handlers.seed(model, key)).get_trace(**kw)
        latent = _model.latent_sites(tr)
        names = params if params is not None else [n for n in latent if n != obs]
        truth = {n: np.asarray(tr[n]["value"]) for n in names}
        return truth, {**model_kwargs, obs: tr[obs]["value"]}

    return simulate


def fit_posterior(model: Callable, *, method: str, **fit_options):
    """Build ``posterior(key, data)`` for :func:`run_sbc` from :func:`bayesneuro.infer.fit`.

    ``data`` is the dict of model keyword arguments made by :func:`prior_simulator`.
    Progress bars are off inside; convergence warnings still show.
    """
    from .infer import fit

    def posterior(key, data):
        res = fit(model, method=method, key=key, progress=False, model_kwargs=data, **fit_options)
        return res.flat_samples()

    return posterior
