"""Convergence diagnostics with warnings that say what to do."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import arviz as az
import numpy as np

__all__ = [
    "ConvergenceWarning",
    "Diagnostics",
    "NonFiniteWarning",
    "check",
    "check_svi",
    "independent_draws",
    "is_point_fit",
    "loo",
]


class ConvergenceWarning(UserWarning, RuntimeWarning):
    """A fit's output should not be trusted as it stands: a sampler that has not mixed, an
    optimiser or ELBO that has not converged. Each message says what to do.

    It is both a ``UserWarning`` and a ``RuntimeWarning``, so filters on either category see it.
    """


class NonFiniteWarning(RuntimeWarning):
    """An estimator returned NaN or infinite estimates or scores; the message gives the cause."""


class Diagnostics(NamedTuple):
    """Summary of :func:`check`.

    Attributes
    ----------
    rhat : dict of str to float
        Largest rank-normalised split R-hat per variable (NaN with one chain).
    ess_bulk : dict of str to float
        Smallest bulk effective sample size per variable.
    ess_tail : dict of str to float
        Smallest tail effective sample size per variable.
    n_divergent : int
        Number of divergent NUTS transitions after warm-up.
    ok : bool
        True when nothing below was flagged.
    problems : tuple of str
        One sentence per problem, each with what to do about it.
    """

    rhat: dict
    ess_bulk: dict
    ess_tail: dict
    n_divergent: int
    ok: bool
    problems: tuple


def check(
    idata: az.InferenceData,
    *,
    rhat_threshold: float = 1.01,
    min_ess_per_chain: float = 100.0,
    warn: bool = True,
    stacklevel: int = 2,
) -> Diagnostics:
    """Check R-hat, bulk/tail ESS and divergences of posterior draws.

    Thresholds follow Vehtari et al. (2021): R-hat below 1.01 and at least 100
    effective draws per chain (bulk and tail). With one MCMC chain (``posterior.attrs["method"]``
    ``"nuts"`` or a ``sample_stats.diverging`` variable), R-hat compares the chain's two halves
    (split R-hat; at least 8 draws) and its ESS is checked, so a single short chain is flagged
    too. Draws that are NaN or infinite are always flagged.

    Draws of a Laplace or SVI fit (``posterior.attrs["method"]`` ``"laplace"`` or ``"svi"``) are
    independent by construction and come as chains only for ArviZ: their R-hat is about 1 and
    their ESS about the number of draws whatever the fit, so neither is computed into ``rhat``
    nor flagged for them (with thousands of scalars one R-hat passes 1.01 by chance); ESS is
    still reported.

    Parameters
    ----------
    idata : arviz.InferenceData
        Must have a ``posterior`` group; ``sample_stats.diverging`` is used when present.
    rhat_threshold : float
        Largest acceptable R-hat.
    min_ess_per_chain : float
        Smallest acceptable ESS divided by the number of chains.
    warn : bool
        Emit a :class:`ConvergenceWarning` listing the problems.
    stacklevel : int
        Passed to ``warnings.warn`` so the warning points at the caller's code.

    Returns
    -------
    Diagnostics

    References
    ----------
    Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021). Rank-normalization, folding,
    and localization: an improved R-hat. Bayesian Analysis 16(2).

    Examples
    --------
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.diagnostics import check
    >>> rng = np.random.default_rng(0)
    >>> idata = az.from_dict(posterior={"mu": rng.normal(size=(4, 500))})
    >>> check(idata, warn=False).ok
    True
    """
    if "posterior" not in idata.groups():
        raise ValueError(
            "check needs posterior draws; this InferenceData has none (a point fit keeps its "
            "estimate in a 'point_estimate' group): refit with method='laplace', 'svi' or 'nuts'"
        )
    post = idata.posterior
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    independent = independent_draws(idata)
    # one chain: only known MCMC output is checked (other one-chain posteriors of bayesneuro are
    # exact or bootstrap draws, independent by construction)
    mcmc = str(post.attrs.get("method", "")).lower() == "nuts" or (
        "sample_stats" in idata.groups() and "diverging" in idata.sample_stats)
    chains_checked = not independent and (n_chain >= 2 or mcmc)
    problems = []
    rhat, ess_b, ess_t = {}, {}, {}
    nonfinite = sorted(
        k for k, v in post.data_vars.items() if v.dtype.kind in "fc" and not np.all(np.isfinite(v.values))
    )
    if nonfinite:
        problems.append(_nonfinite_problem(nonfinite))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_chain >= 2 and n_draw >= 4 and not independent:
            r = az.rhat(post)
            rhat = {k: float(np.nanmax(v.values)) for k, v in r.data_vars.items()}
        elif n_chain == 1 and n_draw >= 8 and chains_checked:
            # one chain: split R-hat of its two halves (az.rhat needs two chains)
            half = n_draw // 2
            halves = {k: v.values[0, n_draw - 2 * half:].reshape((2, half) + v.shape[2:])
                      for k, v in post.data_vars.items()}
            r = az.rhat(az.convert_to_dataset(halves))
            rhat = {k: float(np.nanmax(v.values)) for k, v in r.data_vars.items()}
        if n_draw >= 4:
            eb = az.ess(post, method="bulk")
            et = az.ess(post, method="tail")
            ess_b = {k: float(np.nanmin(v.values)) for k, v in eb.data_vars.items()}
            ess_t = {k: float(np.nanmin(v.values)) for k, v in et.data_vars.items()}
    bad_r = sorted(k for k, v in rhat.items() if v > rhat_threshold)
    if bad_r:
        problems.append(
            f"R-hat > {rhat_threshold} for {bad_r} (max {max(rhat[k] for k in bad_r):.3f}): the "
            "chains disagree. Run longer (more num_warmup and num_samples), check for "
            "multimodality, or reparameterise (non-centred hierarchies)."
        )
    min_ess = min_ess_per_chain * n_chain
    low = sorted(k for k in ess_b if min(ess_b[k], ess_t.get(k, np.inf)) < min_ess)
    if low and chains_checked:
        problems.append(
            f"effective sample size below {min_ess:.0f} ({min_ess_per_chain:.0f} per chain x "
            f"{n_chain} chain{'s' if n_chain > 1 else ''}) for {low} (min "
            f"{min(min(ess_b[k], ess_t.get(k, np.inf)) for k in low):.0f}): posterior means and "
            "intervals are imprecise. Draw more samples (num_samples), run more chains, or "
            "reparameterise to reduce autocorrelation."
        )
    n_div = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        n_div = int(idata.sample_stats["diverging"].values.sum())
        if n_div:
            problems.append(
                f"{n_div} divergent transitions after warm-up: the sampler missed parts of "
                "the posterior. Raise target_accept_prob (e.g. 0.95) or reparameterise "
                "(non-centred hierarchies, rescaled covariates)."
            )
    if warn and problems:
        warnings.warn(" ".join(problems), ConvergenceWarning, stacklevel=stacklevel)
    return Diagnostics(rhat, ess_b, ess_t, n_div, not problems, tuple(problems))


def _nonfinite_problem(names) -> str:
    return (f"draws of {sorted(names)} contain NaN or infinite values: the fit broke down (overflowing "
            "rates, a step size that is too large). Rescale covariates, use stronger priors or "
            "lower the learning rate / raise target_accept_prob.")


def check_svi(losses, *, warn: bool = True, stacklevel: int = 2) -> bool:
    """Whether an SVI loss trace (the negative ELBO per step) has levelled off.

    The mean of the last tenth of the steps (at least 10) is compared with the tenth before:
    converged when they differ by less than three standard errors of the last tenth's mean or
    1e-4 relative. Traces shorter than 20 steps count as converged (nothing to compare).

    Parameters
    ----------
    losses : array_like, shape (num_steps,)
    warn : bool
        Emit a :class:`ConvergenceWarning` that says what to do when it has not levelled off.
    stacklevel : int
        Passed to ``warnings.warn``.

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.diagnostics import check_svi
    >>> check_svi(100.0 + np.random.default_rng(0).normal(size=1000), warn=False)
    True
    >>> check_svi(np.linspace(1000.0, 100.0, 1000), warn=False)
    False
    """
    losses = np.asarray(losses, dtype=float)
    n = losses.shape[0]
    tail = max(10, n // 10)
    if n < 2 * tail:
        return True
    last, prev = losses[-tail:].mean(), losses[-2 * tail : -tail].mean()
    scale = losses[-tail:].std() / np.sqrt(tail) + 1e-12
    converged = bool(abs(prev - last) < max(3.0 * scale, 1e-4 * abs(last)))
    if warn and not converged:
        warnings.warn(
            f"svi: the ELBO was still improving over the last {tail} of {n} steps (mean loss "
            f"{prev:.6g} -> {last:.6g}), so the approximation is not yet at its optimum. Raise "
            "num_steps (or learning_rate), then check result.info['losses'] has levelled off.",
            ConvergenceWarning,
            stacklevel=stacklevel + 1,
        )
    return converged


def is_point_fit(idata) -> bool:
    """Whether `idata` holds a point estimate (a ``point_estimate`` group, no posterior draws).

    bayesneuro's convention: a fit without posterior draws (MAP, EM, Laplace-EM, plug-in fits)
    stores its estimate in a ``point_estimate`` group with the variables' own dims (no
    ``chain``/``draw``) and ``attrs["method"]``; never a ``posterior`` of one chain and one draw.

    Examples
    --------
    >>> import arviz as az, xarray as xr
    >>> from bayesneuro.diagnostics import is_point_fit
    >>> is_point_fit(az.InferenceData(point_estimate=xr.Dataset({"mu": 1.0})))
    True
    """
    return "point_estimate" in idata.groups() and "posterior" not in idata.groups()


def independent_draws(idata, method: str | None = None) -> bool:
    """Whether the posterior draws are independent by construction: a Laplace or SVI fit
    (``posterior.attrs["method"]``, else `method`), stored as 4 chains only for ArviZ's summaries.
    R-hat between such chains says nothing about the fit, and their relative efficiency is 1."""
    if "posterior" not in idata.groups():
        return False
    fitted_by = idata.posterior.attrs.get("method", method)
    return str(fitted_by or "").lower() in ("laplace", "svi")


def loo(idata, *, pointwise: bool | None = None, var_name: str | None = None, reff: float | None = None,
        scale: str | None = None):
    """PSIS-LOO, as ``arviz.loo``, vectorised over observations, with ``reff=1`` for independent draws.

    The same estimate as ``arviz.loo`` (to rounding; ``tests/test_diagnostics_loo.py``), computed
    on blocks of observations at once (:mod:`bayesneuro._psis`) instead of one Pareto fit per
    observation in Python: 2-3x faster, which matters with one log-likelihood per bin or per
    inter-spike interval (10^4-10^5 observations).

    Laplace and SVI draws (``posterior.attrs["method"]`` ``"laplace"`` or ``"svi"``) are independent
    by construction; they are stored as 4 chains so that ArviZ's summaries work, but then
    ``arviz.loo`` *estimates* their relative efficiency from the chains' ESS, which adds noise and
    makes the LOO of a subset of parameters differ from the matching part of the whole LOO. Here
    ``reff=1`` for such draws (unless given); MCMC draws keep ArviZ's estimate (mean relative ESS).

    Parameters
    ----------
    idata : arviz.InferenceData
        With ``posterior`` and ``log_likelihood`` groups.
    pointwise : bool, optional
        Also return ``loo_i`` and ``pareto_k`` (default ``arviz.rcParams["stats.ic_pointwise"]``).
    var_name : str, optional
        The ``log_likelihood`` variable (required when there are several).
    reff : float, optional
        Relative efficiency of the draws.
    scale : {"log", "negative_log", "deviance"}, optional
        Default ``arviz.rcParams["stats.ic_scale"]``.

    Returns
    -------
    arviz.ELPDData
        As ``arviz.loo``: ``elpd_loo``, ``se``, ``p_loo``, ``n_samples``, ``n_data_points``,
        ``warning``, (``loo_i``, ``pareto_k``,) ``scale``, ``good_k``; usable by ``arviz.compare``.

    Warns
    -----
    UserWarning
        Some Pareto ``k`` above ``good_k`` (ArviZ's message).

    Examples
    --------
    >>> import numpy as np, arviz as az
    >>> from bayesneuro.diagnostics import loo
    >>> rng = np.random.default_rng(0)
    >>> idata = az.from_dict(posterior={"mu": rng.normal(size=(4, 250))},
    ...                      log_likelihood={"y": rng.normal(-1.0, 0.1, size=(4, 250, 20))})
    >>> idata.posterior.attrs["method"] = "laplace"
    >>> round(float(loo(idata).elpd_loo), 1)
    -20.1
    """
    from arviz.stats.stats import ELPDData

    from ._psis import loo_pointwise

    if is_point_fit(idata) or "posterior" not in idata.groups():
        raise ValueError(
            "loo needs posterior draws, and this is a point fit (no posterior group): refit with "
            "method='laplace', 'svi' or 'nuts', or compare held-out log_likelihood(test data)"
        )
    if "log_likelihood" not in idata.groups():
        raise TypeError("log likelihood not found in inference data object")
    group = idata.log_likelihood
    if var_name is None:
        names = list(group.data_vars)
        if len(names) > 1:
            raise TypeError(f"Found several log likelihood arrays {names}, var_name cannot be None")
        var_name = names[0]
    elif var_name not in group.data_vars:
        raise TypeError(f"No log likelihood data named {var_name} found")
    ll = group[var_name].stack(__sample__=("chain", "draw"))
    n_samples = ll.shape[-1]
    pointwise = az.rcParams["stats.ic_pointwise"] if pointwise is None else pointwise
    scale = az.rcParams["stats.ic_scale"] if scale is None else scale.lower()
    scale_value = {"deviance": -2, "log": 1, "negative_log": -1}.get(scale)
    if scale_value is None:
        raise TypeError('Valid scale values are "deviance", "log", "negative_log"')
    if reff is None:
        if independent_draws(idata) or idata.posterior.sizes["chain"] == 1:
            reff = 1.0
        else:
            ess_p = az.ess(idata.posterior, method="mean")
            reff = np.hstack([ess_p[v].values.flatten() for v in ess_p.data_vars]).mean() / n_samples
    values = np.asarray(ll.values, dtype=np.float64).reshape(-1, n_samples)
    loo_i, k, lppd_i = loo_pointwise(values, float(reff))
    n_data_points = values.shape[0]
    good_k = min(1 - 1 / np.log10(n_samples), 0.7)
    warn_mg = bool(np.any(k > good_k))
    if warn_mg:
        warnings.warn(
            f"Estimated shape parameter of Pareto distribution is greater than {good_k:.2f} "
            "for one or more samples. You should consider using a more robust model, this is "
            "because importance sampling is less likely to work well if the marginal posterior "
            "and LOO posterior are very different. This is more likely to happen with a "
            "non-robust model and highly influential observations.",
            UserWarning, stacklevel=2,
        )
    loo_i = scale_value * loo_i
    elpd = float(loo_i.sum())
    se = float((n_data_points * np.var(loo_i)) ** 0.5)
    p_loo = float(lppd_i.sum() - elpd / scale_value)
    if not pointwise:
        return ELPDData(data=[elpd, se, p_loo, n_samples, n_data_points, warn_mg, scale, good_k],
                        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "scale",
                               "good_k"])
    template = ll.isel(__sample__=0, drop=True)
    loo_da = template.copy(data=loo_i.reshape(template.shape)).rename("loo_i")
    k_da = template.copy(data=k.reshape(template.shape)).rename("pareto_shape")
    if np.equal(elpd, loo_i).all():
        warnings.warn(
            "The point-wise LOO is the same with the sum LOO, please double check "
            "the Observed RV in your model to make sure it returns element-wise logp.",
            UserWarning, stacklevel=2,
        )
    return ELPDData(
        data=[elpd, se, p_loo, n_samples, n_data_points, warn_mg, loo_da, k_da, scale, good_k],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k", "scale",
               "good_k"],
    )
