r"""What a density model's latents encode: regression of the latents on covariates, uncertainty kept.

The latents :math:`z_t` of a fitted density model (GPFA, Poisson LDS, ensemble mixture) are
regressed on covariates :math:`s_t` through temporal filters on a basis:

.. math::

    z_{t\ell} = a_\ell + \sum_{f, b} \Phi_{tfb} W_{fb\ell} + r_{t\ell}, \qquad
    r_{t\ell} = \rho_\ell\, r_{t-1,\ell} + \sigma_\ell \sqrt{1 - \rho_\ell^2}\, \epsilon_{t\ell},

with :math:`\Phi_{tfb} = \sum_k B_{kb}\, s_{t + \mathrm{lead} - k, f}` (lag :math:`k -
\mathrm{lead}` bins; negative lags let the latents anticipate the covariate) and a stationary
AR(1) residual :math:`r` of standard deviation :math:`\sigma_\ell` that restarts in each segment
(``residual="iid"``: :math:`\rho = 0`).

The latents are not observed. With ``uncertainty="message"`` (default) the data are the per-bin
messages of the density model (:class:`~bayesneuro.joint.LatentPosterior`):
:math:`\mu_t \mid z_t \sim N(z_t, J_t^{-1})`, independent across bins. The residual and the
messages form a linear-Gaussian state-space model whose likelihood of
:math:`(a, W, \rho, \sigma)` is computed exactly by a Kalman filter (one pass, one compiled
program), so the filters' posterior (MAP, Laplace, SVI or NUTS through
:func:`bayesneuro.infer.fit`) carries the latents' uncertainty. For a Gaussian density model
(GPFA) this is exact given its fitted loadings; for Poisson models the messages are Laplace
approximations.

``uncertainty="mean"`` is the plug-in that users did by hand: the density model's posterior
means are treated as observed latents. They are shrunk towards the density model's prior
(which knows nothing of the covariates) and their errors are correlated over time, so the
filters are attenuated and their bands too narrow: a comparison, not a method to report.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import init_to_value

from bayesneuro._jit import jit

from ..estimator import PROB, Estimator, resolve_key
from ..infer import fit as _fit
from . import _design
from .posterior import LatentPosterior

__all__ = ["LatentEncoder", "latent_encoder_model", "message_log_likelihood"]

_LOG2PI = math.log(2 * math.pi)


@partial(jit, static_argnames=("naive",))
def message_log_likelihood(resid, precision, ar_coef, residual_sd, starts, *, naive: bool = False):
    r"""Per-bin log predictive density of the messages under the AR(1) residual (Kalman filter).

    Parameters
    ----------
    resid : array, shape (time, latent)
        Messages minus the covariates' prediction, :math:`\mu_t - a - \Phi_t W`.
    precision : array, shape (time, latent, latent)
        :math:`J_t` (ignored with ``naive=True``).
    ar_coef, residual_sd : array, shape (latent,)
        :math:`\rho` (0 for independent residuals) and the stationary SD :math:`\sigma`.
    starts : array of bool, shape (time,)
        First bin of each segment (the residual restarts from its stationary law).
    naive : bool
        Treat ``resid`` as exactly observed residuals (no message noise).

    Returns
    -------
    jax.Array, shape (time,)
        :math:`\log p(\mu_t \mid \mu_{<t})` within each segment, in nats; the sum is the
        log-likelihood.
    """
    var = residual_sd**2
    innov = var * (1.0 - ar_coef**2)
    if naive:
        prev = jnp.concatenate([jnp.zeros_like(resid[:1]), resid[:-1]], axis=0)
        loc = jnp.where(starts[:, None], 0.0, ar_coef[None] * prev)
        v = jnp.where(starts[:, None], var[None], innov[None])
        return jnp.sum(-0.5 * (_LOG2PI + jnp.log(v) + (resid - loc) ** 2 / v), axis=1)
    L = resid.shape[1]
    eye = jnp.eye(L, dtype=resid.dtype)

    def step(carry, inp):
        m, P = carry
        e, J, start = inp
        m_pred = jnp.where(start, 0.0, ar_coef * m)
        P_pred = jnp.where(start, jnp.diag(var), ar_coef[:, None] * P * ar_coef[None, :] + jnp.diag(innov))
        scale = jnp.maximum(jnp.trace(J) / L, 1e-30)
        Lj = jnp.linalg.cholesky(J + 1e-10 * scale * eye)
        M = eye + Lj.T @ P_pred @ Lj
        cM = jnp.linalg.cholesky(M)
        w = Lj.T @ (e - m_pred)
        s = jax.scipy.linalg.cho_solve((cM, True), w)
        ll = -0.5 * L * _LOG2PI + jnp.sum(jnp.log(jnp.diag(Lj))) - jnp.sum(jnp.log(jnp.diag(cM))) - 0.5 * w @ s
        PL = P_pred @ Lj
        m_new = m_pred + PL @ s
        P_new = P_pred - PL @ jax.scipy.linalg.cho_solve((cM, True), PL.T)
        return (m_new, 0.5 * (P_new + P_new.T)), ll

    init = (jnp.zeros(L, resid.dtype), jnp.diag(var))
    _, ll = jax.lax.scan(step, init, (resid, precision, starts))
    return ll


class _Messages(dist.Distribution):
    """The messages (or posterior means, naive) of all bins: batch ``(time,)``, event ``(latent,)``."""

    support = constraints.real_vector

    def __init__(self, loc, precision, ar_coef, residual_sd, starts, naive, *, validate_args=None):
        self.loc, self.precision, self.ar_coef, self.residual_sd = loc, precision, ar_coef, residual_sd
        self.starts, self.naive = starts, naive
        super().__init__(batch_shape=loc.shape[:1], event_shape=loc.shape[1:], validate_args=validate_args)

    def log_prob(self, value):
        return message_log_likelihood(value - self.loc, self.precision, self.ar_coef, self.residual_sd,
                                      self.starts, naive=self.naive)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("drawing messages is not supported; draw latents with LatentEncoder.simulate")


def latent_encoder_model(messages=None, *, design, precision, starts, n_latent: int, prior_scale: float = 10.0,
                         residual: str = "ar1", naive: bool = False):
    """NumPyro model of :class:`LatentEncoder` (see the module docstring).

    Parameters
    ----------
    messages : array, shape (time, latent), optional
        Message means (or, ``naive``, posterior means).
    design : array, shape (time, feature, basis)
    precision : array, shape (time, latent, latent)
    starts : array of bool, shape (time,)
    n_latent : int
    prior_scale : float
        SD of the Normal priors of the weights and intercepts; the residual SD has a
        HalfNormal(prior_scale) prior and the AR coefficient a Uniform(-1, 1) prior.
    residual : {"ar1", "iid"}
    naive : bool
    """
    F, B = design.shape[1], design.shape[2]
    intercept = numpyro.sample("intercept", dist.Normal(0.0, prior_scale).expand([n_latent]).to_event(1))
    weights = numpyro.sample("weights", dist.Normal(0.0, prior_scale).expand([F, B, n_latent]).to_event(3))
    residual_sd = numpyro.sample("residual_sd", dist.HalfNormal(prior_scale).expand([n_latent]).to_event(1))
    if residual == "ar1":
        ar_coef = numpyro.sample("ar_coef", dist.Uniform(-1.0, 1.0).expand([n_latent]).to_event(1))
    else:
        ar_coef = jnp.zeros(n_latent, design.dtype)
    loc = intercept + jnp.einsum("tfb,fbl->tl", design, weights)
    numpyro.sample("messages", _Messages(loc, precision, ar_coef, residual_sd, starts, naive), obs=messages)


class LatentEncoder(Estimator):
    r"""What the latents of a density model encode about covariates, with the latents' uncertainty kept.

    See :mod:`bayesneuro.joint.encoder` for the model: each latent is an intercept plus filtered
    covariates plus an AR(1) residual, observed through the density model's per-bin messages.

    Parameters
    ----------
    basis : bayesneuro.bases.Basis, optional
        Temporal basis of the filters (stimulus convention: row 0 is the current bin). None:
        the covariates of the current bin only (shifted by ``lead``).
    lead : int, default 0
        Bins by which the covariates are advanced: the filters span lags ``-lead`` to
        ``window - 1 - lead`` bins, so that latents can anticipate a covariate (a movement
        prepared before it happens).
    residual : {"ar1", "iid"}, default "ar1"
        The latents' own variation beyond the covariates: an AR(1) process per latent (latents
        are smooth in time) or independent across bins.
    prior_scale : float, default 10.0
        SD of the Normal priors of the weights and intercepts, and scale of the HalfNormal
        prior of the residual SD, in latent units.

    Attributes
    ----------
    filters_ : xarray.Dataset
        ``mean``, ``lower``, ``upper`` (the ``PROB`` = 0.9 interval; MAP: ``mean`` only), dims
        ``(latent, feature, lag)``, ``lag`` in seconds.
    intercept_, residual_sd_, ar_coef_ : numpy.ndarray, shape (latent,)
        Posterior means (MAP: the mode).
    weights_ : numpy.ndarray, shape (feature, basis, latent)
    result_ : bayesneuro.infer.FitResult
    uncertainty_ : str
    feature_names_ : tuple of str
    bin_size_ : float

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.joint import LatentEncoder, LatentPosterior
    >>> rng = np.random.default_rng(0)
    >>> s = rng.normal(size=(400, 1))
    >>> z = 0.8 * s + 0.3 * rng.normal(size=(400, 1))             # a latent that encodes s
    >>> post = LatentPosterior.from_messages(z + 0.5 * rng.normal(size=(400, 1)), np.eye(1) * 4.0, bin_size=0.02)
    >>> enc = LatentEncoder(residual="iid").fit(post, s, method="laplace", key=0, progress=False)
    >>> band = enc.filters_.sel(latent=0, feature="feature_0", lag=0.0)
    >>> round(float(band["mean"]), 2), bool(band.lower < band["mean"] < band.upper), enc.score_unit
    (0.85, True, 'nats/bin')
    """

    score_unit = "nats/bin"
    log_likelihood_dim = "time"

    def __init__(self, basis: Any = None, *, lead: int = 0, residual: str = "ar1", prior_scale: float = 10.0):
        self.basis = basis
        self.lead = lead
        self.residual = residual
        self.prior_scale = prior_scale

    def _check_structure(self) -> None:
        _design.basis_matrix(self.basis)
        _design.check_lead(self.lead)
        if self.residual not in ("ar1", "iid"):
            raise ValueError(f"residual must be 'ar1' or 'iid', got {self.residual!r}")

    def _inputs(self, latents: Any, covariates: Any, feature_names=None, *, naive: bool = False):
        if not isinstance(latents, LatentPosterior):
            raise TypeError(f"latents must be a LatentPosterior (bayesneuro.joint.latent_posterior), got "
                            f"{type(latents).__name__}")
        x, names = _design.covariates_of(covariates, latents.n_time, feature_names)
        seg = latents.segment_ids
        design = _design.features(x, self.basis, int(self.lead), seg)
        starts = np.r_[True, seg[1:] != seg[:-1]]
        obs = latents.mean if naive else latents.message_mean
        return design, obs, latents.message_precision, starts, names

    def fit(self, latents: LatentPosterior, covariates: Any, *, feature_names: Any = None, method: str = "laplace",
            uncertainty: str = "message", key: Any = None, progress: bool | None = None, **options) -> LatentEncoder:
        """Fit the filters.

        Parameters
        ----------
        latents : LatentPosterior
            From :func:`~bayesneuro.joint.latent_posterior` (or built from messages).
        covariates : array_like, shape (time, feature), or SpikeData
            Aligned bin by bin with ``latents`` (a SpikeData gives its covariates and names).
        feature_names : sequence of str, optional
        method : {"laplace", "map", "svi", "nuts"}
            Inference of :func:`bayesneuro.infer.fit`; Laplace (default) gives bands quickly.
        uncertainty : {"message", "mean"}
            ``"message"``: the latents' uncertainty is carried (the per-bin messages are the
            data); ``"mean"``: the posterior means are plugged in as if observed (attenuated
            filters, too-narrow bands; for comparison).
        key : jax.random key or int
            Required by every method but ``"map"``.
        progress : bool, optional
        **options
            Method options of :func:`bayesneuro.infer.fit` (``max_iter``, ``num_samples``, ...).

        Returns
        -------
        LatentEncoder
            ``self``, fitted.
        """
        self._check_structure()
        _design.check_fit_options(self.prior_scale, uncertainty, ("message", "mean"))
        rng = resolve_key(key, needed=method != "map", why=f"method={method!r}")
        naive = uncertainty == "mean"
        design, obs, J, starts, names = self._inputs(latents, covariates, feature_names, naive=naive)
        T, F, B = design.shape
        L = obs.shape[1]
        # start: least squares of the observed means on the features, residual SD from its residuals
        X = np.concatenate([np.ones((T, 1)), design.reshape(T, -1)], axis=1)
        coef = np.linalg.lstsq(X, obs, rcond=None)[0]
        res_sd = np.maximum(np.std(obs - X @ coef, axis=0), 1e-3)
        init = {"intercept": coef[0], "weights": coef[1:].reshape(F, B, L), "residual_sd": res_sd}
        if self.residual == "ar1":
            init["ar_coef"] = np.full(L, 0.5)
        self.feature_names_ = names
        coords = {"latent": latents.latent, "feature": np.asarray(names), "basis": np.arange(B), "time": latents.time}
        dims = {"intercept": ["latent"], "weights": ["feature", "basis", "latent"], "residual_sd": ["latent"],
                "ar_coef": ["latent"], "messages": ["time", "latent"], "design": ["time", "feature", "basis"],
                "precision": ["time", "latent", "latent_from"], "starts": ["time"]}
        options.setdefault("init_strategy", init_to_value(values={k: jnp.asarray(v) for k, v in init.items()}))
        self.result_ = _fit(latent_encoder_model, method=method, key=0 if rng is None else rng, progress=progress,
                            coords={**coords, "latent_from": latents.latent}, dims=dims, messages=obs,
                            design=design, precision=J, starts=starts, n_latent=L,
                            prior_scale=float(self.prior_scale), residual=self.residual, naive=naive, **options)
        self.method_, self.uncertainty_ = method, uncertainty
        self.bin_size_ = latents.bin_size
        self.latent_ = latents.latent
        draws = self.result_.flat_samples()
        self.intercept_ = draws["intercept"].mean(axis=0)
        self.weights_ = draws["weights"].mean(axis=0)
        self.residual_sd_ = draws["residual_sd"].mean(axis=0)
        self.ar_coef_ = draws["ar_coef"].mean(axis=0) if "ar_coef" in draws else np.zeros(L)
        self.filters_ = self.filters()
        return self

    def filters(self, prob: float = PROB):
        """The filters with equal-tailed ``prob`` bands, ``xarray.Dataset`` dims ``(latent, feature, lag)``."""
        self._check_fitted()
        Bm = _design.basis_matrix(self.basis)
        h = np.einsum("kb,dfbl->dlfk", Bm, self.result_.flat_samples()["weights"])  # (draw, latent, feature, lag)
        coords = {"latent": self.latent_, "feature": np.asarray(self.feature_names_),
                  "lag": _design.lags_seconds(self.basis, int(self.lead), self.bin_size_)}
        dims = ("latent", "feature", "lag")
        return _design.filters_dataset(h, dims, coords, method=self.method_, uncertainty=self.uncertainty_, prob=prob)

    def predict(self, covariates: Any, *, segment_ids: Any = None) -> np.ndarray:
        """The covariates' part of the latents, ``a + Phi W``, shape (time, latent), at the posterior mean.

        ``segment_ids`` (one per bin) stops the filters at trial boundaries; a SpikeData's own
        trials are used when it is passed as the covariates.
        """
        self._check_fitted()
        x, _ = _design.covariates_of(covariates, None, self.feature_names_)
        if segment_ids is None:
            segment_ids = getattr(covariates, "segment_ids", None)
        seg = np.zeros(x.shape[0], np.int64) if segment_ids is None else np.asarray(segment_ids)
        if seg.shape != (x.shape[0],):
            raise ValueError(f"segment_ids must have one entry per bin ({x.shape[0]}), got shape {seg.shape}")
        design = _design.features(x, self.basis, int(self.lead), seg)
        return self.intercept_ + np.einsum("tfb,fbl->tl", design, self.weights_)

    def log_likelihood(self, latents: LatentPosterior, covariates: Any) -> np.ndarray:
        """Log predictive density of each bin's message given the earlier bins of its segment, nats, (time,)."""
        self._check_fitted()
        design, obs, J, starts, _ = self._inputs(latents, covariates, self.feature_names_)
        resid = obs - self.intercept_ - np.einsum("tfb,fbl->tl", design, self.weights_)
        return np.asarray(message_log_likelihood(jnp.asarray(resid), jnp.asarray(J), jnp.asarray(self.ar_coef_),
                                                  jnp.asarray(self.residual_sd_), jnp.asarray(starts)))

    def score(self, latents: LatentPosterior, covariates: Any) -> float:
        """Mean log predictive density of the messages per bin (nats/bin; higher is better).

        Held-out bins score how well the covariates (and the residual's dynamics) predict what
        the spikes say about the latents; compare models on the same messages.
        """
        return float(np.mean(self.log_likelihood(latents, covariates)))

    def evaluate(self, latents: LatentPosterior, covariates: Any) -> dict:
        """``log_predictive`` (nats/bin) and ``r2`` per latent: variance of the posterior means explained by ``predict``."""
        self._check_fitted()
        pred = self.predict(covariates, segment_ids=latents.segment_ids)
        m = latents.mean
        r2 = 1.0 - ((m - pred) ** 2).sum(axis=0) / np.maximum(((m - m.mean(axis=0)) ** 2).sum(axis=0), 1e-300)
        return {"log_predictive": self.score(latents, covariates), "r2": r2, "r2_mean": float(np.mean(r2))}

    def to_inference_data(self):
        """ArviZ InferenceData of the fit (``log_likelihood`` per time bin)."""
        self._check_fitted()
        return self.result_.to_inference_data()

    def __repr__(self) -> str:
        return (f"LatentEncoder(basis={self.basis!r}, lead={self.lead}, residual={self.residual!r}, "
                f"prior_scale={self.prior_scale})")
