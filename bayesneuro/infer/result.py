"""The result of a fit, whatever the method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np

from .. import __version__
from ..estimator import PROB
from . import _model
from .convert import as_point_estimate, build_inference_data

__all__ = ["FitResult", "iid_chain_count", "stack_chain"]


@dataclass(eq=False)
class FitResult:
    """Draws from a (possibly approximate) posterior, with the model and data that made them.

    Every method stores its draws the same way, shaped ``(chain, draw, ...)``: NUTS
    as its chains; SVI and Laplace as independent draws from the approximation, arranged
    as 4 chains (``num_samples=1000`` gives 4 x 250; see :func:`stack_chain` for counts that
    4 does not divide) so that ``az.summary`` gives R-hat and ESS without warnings; MAP as
    one chain with one draw (its InferenceData, :meth:`to_inference_data`, is a point fit: a
    ``point_estimate`` group, no ``posterior``).

    Attributes
    ----------
    method : str
        ``"map"``, ``"laplace"``, ``"svi"`` or ``"nuts"``.
    samples : dict of str to ndarray
        Latent and deterministic sites, each ``(chain, draw, *site_shape)``.
    model : callable
        The NumPyro model function.
    model_kwargs : dict
        The data the model was fitted to.
    sample_stats : dict or None
        NUTS statistics in ArviZ names (``diverging``, ``energy``, ``lp``,
        ``acceptance_rate``, ``step_size``, ``n_steps``, ``tree_depth``), each ``(chain, draw)``.
    info : dict
        Method-specific details: for MAP/Laplace ``converged``, ``n_iter``,
        ``objective``, ``grad_norm``; Laplace adds ``cov`` (covariance in the
        unconstrained space) and ``log_marginal_likelihood``; SVI adds ``losses``
        (the negative ELBO per step), ``guide`` and ``params``.
    coords, dims : dict
        Coordinates and dim names used for InferenceData.
    """

    method: str
    samples: dict
    model: Callable
    model_kwargs: dict
    sample_stats: dict | None = None
    info: dict = field(default_factory=dict)
    coords: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    _idata: Any = field(default=None, repr=False)

    @property
    def n_chain(self) -> int:
        """Number of chains."""
        return next(iter(self.samples.values())).shape[0]

    @property
    def n_draw(self) -> int:
        """Number of draws per chain."""
        return next(iter(self.samples.values())).shape[1]

    @property
    def params(self) -> dict:
        """Point estimate per site: the MAP value for ``"map"``, the posterior mean otherwise."""
        return {k: np.asarray(v).mean(axis=(0, 1)) for k, v in self.samples.items()}

    def flat_samples(self) -> dict:
        """Draws with chains concatenated, each ``(chain * draw, *site_shape)``."""
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.samples.items()}

    def to_inference_data(
        self,
        *,
        log_likelihood: bool = True,
        posterior_predictive: bool = False,
        key: Any = None,
    ) -> az.InferenceData:
        """Convert to ``arviz.InferenceData`` with named dims and coords.

        Parameters
        ----------
        log_likelihood : bool
            Include the pointwise ``log_likelihood`` group (needed by ``az.loo``).
        posterior_predictive : bool
            Also draw the observed sites from the posterior predictive (needs ``key``).
        key : jax.random key, optional
            Key for the posterior predictive draws.

        Returns
        -------
        arviz.InferenceData
            Groups ``posterior``, ``log_likelihood``, ``observed_data``,
            ``constant_data``, ``sample_stats`` (NUTS), ``posterior_predictive``
            (on request). MAP is a point fit: no ``posterior``; its estimate is in a
            ``point_estimate`` group (``attrs["method"] == "map"``) and ``log_likelihood`` and
            ``posterior_predictive`` have no ``chain``/``draw`` dims
            (:func:`bayesneuro.infer.convert.point_inference_data`).
        """
        cacheable = log_likelihood and not posterior_predictive
        if cacheable and self._idata is not None:
            return self._idata
        pp = None
        if posterior_predictive:
            pp = self.posterior_predictive(key=key)
        attrs = {
            "inference_library": "bayesneuro",
            "inference_library_version": __version__,
            "method": self.method,
        }
        for k in ("converged", "n_iter", "objective", "log_marginal_likelihood"):
            if k in self.info:
                attrs[k] = int(self.info[k]) if isinstance(self.info[k], bool) else self.info[k]
        idata = build_inference_data(
            model=self.model,
            model_kwargs=self.model_kwargs,
            samples=self.samples,
            sample_stats=self.sample_stats,
            coords=self.coords,
            dims=self.dims,
            log_likelihood=log_likelihood,
            posterior_predictive=pp,
            attrs=attrs,
        )
        if self.method == "map":
            idata = as_point_estimate(idata, "map")
        if cacheable:
            self._idata = idata
        return idata

    def posterior_predictive(self, *, key: Any) -> dict:
        """Draw every observed site once per posterior draw.

        Parameters
        ----------
        key : jax.random key
            Required; the same key gives the same draws.

        Returns
        -------
        dict of str to ndarray
            Each ``(chain, draw, *observed_shape)``.
        """
        key = _model.as_key(key)
        trace = _model.trace_model(self.model, self.model_kwargs)
        sites = list(_model.observed_sites(trace))
        latent = [n for n in _model.latent_sites(trace) if n in self.samples]
        flat = {n: self.flat_samples()[n] for n in latent}
        if not flat:
            raise ValueError("the model has no latent sites; there is no posterior to predict from")
        out = _model.predictive(self.model, self.model_kwargs, flat, key, sites)
        return {
            k: np.asarray(v).reshape((self.n_chain, self.n_draw) + np.shape(v)[1:]) for k, v in out.items()
        }

    def summary(self, prob: float = PROB, **kwargs):
        """``arviz.summary`` of the posterior (a pandas DataFrame).

        For MAP (a single draw) the table has one column, ``map``, with the estimate.

        Parameters
        ----------
        prob : float, default 0.9
            Mass of the highest-density intervals (bayesneuro's one default,
            :data:`bayesneuro.estimator.PROB`, not ArviZ's 0.94).
        **kwargs
            Other arguments of ``arviz.summary`` (e.g. ``var_names``, ``kind``).
        """
        if "hdi_prob" in kwargs:
            raise TypeError("pass the credible mass as prob= (bayesneuro's one name for it), not hdi_prob=")
        kwargs["hdi_prob"] = float(prob)
        if self.method == "map":
            import pandas as pd

            single = build_inference_data(
                model=self.model, model_kwargs=self.model_kwargs, samples=self.samples,
                sample_stats=None, coords=self.coords, dims=self.dims, log_likelihood=False,
                posterior_predictive=None, attrs={})
            table = az.summary(single, kind="stats", stat_funcs={"map": np.mean}, extend=False, **kwargs)
            return pd.DataFrame({"map": table["map"]})
        idata = self.to_inference_data(log_likelihood=False)
        kind = kwargs.pop("kind", "all" if self.n_chain >= 2 and self.n_draw >= 4 else "stats")
        return az.summary(idata, kind=kind, **kwargs)

    def diagnose(self, **kwargs):
        """Convergence diagnostics; see :func:`bayesneuro.diagnostics.check`."""
        from ..diagnostics import check

        return check(self.to_inference_data(), **kwargs)

    def loo(self, **kwargs):
        """PSIS-LOO of the fit (``arviz.loo``)."""
        from ..diagnostics import loo

        return loo(self.to_inference_data(), **kwargs)

    def waic(self, **kwargs):
        """WAIC of the fit (``arviz.waic``); needs draws, so not for MAP."""
        if self.method == "map":
            raise ValueError("waic needs posterior draws, and a MAP fit is a point estimate: refit "
                             "with method='laplace', 'svi' or 'nuts'")
        return az.waic(self.to_inference_data(), **kwargs)

    def save(self, path) -> None:
        """Save the InferenceData to netCDF, atomically; see :func:`bayesneuro.io.save`."""
        from ..io import save

        save(self.to_inference_data(), path)

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.samples.items())
        extra = ""
        if "converged" in self.info:
            extra = f", converged={self.info['converged']}"
        return (
            f"FitResult(method={self.method!r}, chains={self.n_chain}, draws={self.n_draw}"
            f"{extra}, sites=[{sites}])"
        )


IID_CHAINS = 4
"""How many chains :func:`stack_chain` arranges independent draws in, where their number allows."""


def iid_chain_count(n: int) -> int:
    """Chains for ``n`` independent draws: 4 when 4 divides ``n``, else the divisor of ``n`` nearest 4
    that leaves at least 4 draws per chain (ArviZ's minimum), else 1 (a prime ``n``, or ``n < 8``).

    Examples
    --------
    >>> from bayesneuro.infer.result import iid_chain_count
    >>> iid_chain_count(1000), iid_chain_count(30), iid_chain_count(13), iid_chain_count(1)
    (4, 3, 1, 1)
    """
    n = int(n)
    most = n // 4  # chains that leave at least 4 draws each
    for d in range(max(IID_CHAINS, most) + 1):  # nearest to 4 first, the smaller of a tie first
        for c in (IID_CHAINS - d, IID_CHAINS + d) if d else (IID_CHAINS,):
            if 2 <= c <= most and n % c == 0:
                return c
    return 1


def stack_chain(draws: dict, n_chain: int | None = None) -> dict:
    """Reshape ``(n, ...)`` draws to ``(n_chain, n // n_chain, ...)`` numpy arrays (chain-major).

    ``n_chain=None`` is for independent draws (Laplace, SVI, a point estimate): they are
    arranged as :func:`iid_chain_count` ``(n)`` chains, in order (``flat_samples`` gives them back
    unchanged). Independent draws split into several chains are what ArviZ expects of a
    sample, so ``az.summary`` reports R-hat (about 1) and ESS (about ``n``) for them instead of a
    shape warning and NaN; these then measure Monte Carlo error, not the approximation's quality.
    """
    if n_chain is None:
        n = len(next(iter(draws.values()))) if draws else 1
        n_chain = iid_chain_count(n)
    return {k: np.asarray(v).reshape((n_chain, -1) + np.shape(v)[1:]) for k, v in draws.items()}
