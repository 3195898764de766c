r"""Latents as the state of the world: a Poisson GLM of one population on another's latents.

The latents :math:`z_t` of a density model fitted to a *source* population (another region, or
the other half of a recording) drive the neurons of a *target* population,

.. math::

    y_{tn} \sim \mathrm{Poisson}(e^{\eta_{tn}}), \qquad
    \eta_{tn} = b_n + \sum_{\ell, k} h_{\ell n}[k]\, z_{t + \mathrm{lead} - k, \ell}, \qquad
    h_{\ell n} = B\, w_{\ell n},

with filters :math:`h` on a temporal basis :math:`B`. The latents are known only through the
source model's posterior. With ``uncertainty="posterior"`` (default) they are integrated out bin
by bin: under the per-bin Gaussian posteriors :math:`z_{t\ell} \sim N(m_{t\ell}, s_{t\ell}^2)`,
taken independent across bins and latents, :math:`\eta_{tn}` is Gaussian with mean
:math:`b_n + \sum h\, m` and variance :math:`v_{tn} = \sum_{\ell, k} h_{\ell n}[k]^2\,
s^2_{t + \mathrm{lead} - k, \ell}`, and the likelihood of each count is the Poisson-lognormal

.. math::

    p(y_{tn}) = \int \mathrm{Poisson}(y_{tn} \mid e^{\eta})\, N(\eta; \bar\eta_{tn}, v_{tn})\, d\eta,

computed by Gauss-Hermite quadrature (:func:`poisson_lognormal_logpmf`). This is the exact
marginal likelihood when the source latents are independent across bins given the source spikes
(factor analysis on independent bins); for smooth latents it ignores the correlation of their
errors across neighbouring bins (a composite likelihood). ``uncertainty="mean"`` plugs in the
posterior means (the Poisson GLM users fitted by hand): the extra variance that the latents'
uncertainty puts on the counts is then missing and the filters' bands are too narrow.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.infer import init_to_value

from .. import bases as _bases
from ..estimator import PROB, Estimator, resolve_key
from ..infer import fit as _fit
from . import _design
from .posterior import LatentPosterior

__all__ = ["LatentDrivenGLM", "latent_driven_glm_model", "poisson_lognormal_logpmf"]

_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(32)


def poisson_lognormal_logpmf(y, mean, var):
    r"""``log E[Poisson(y | exp(eta))]`` for ``eta ~ N(mean, var)``, by adaptive Gauss-Hermite quadrature.

    The 32 nodes are centred on the mode of the integrand (found by Newton's method) and scaled
    by its curvature, so the rule stays accurate when the count pins ``eta`` down much more
    tightly than its prior does. ``var = 0`` is the Poisson log-pmf.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import poisson
    >>> bool(abs(float(poisson_lognormal_logpmf(3.0, np.log(2.0), 0.0)) - poisson.logpmf(3, 2.0)) < 1e-5)  # float32 by default
    True
    """
    y, mean, var = jnp.asarray(y), jnp.asarray(mean), jnp.asarray(var)
    y, mean, var = jnp.broadcast_arrays(y, mean, var)
    dtype = mean.dtype
    flat = var < 1e-12
    v = jnp.where(flat, 1.0, var)  # the quadrature branch never sees a zero variance
    # Newton on the concave log integrand, from the right of its mode (its derivative is concave and
    # decreasing there, so the iterates descend monotonically onto the mode: no overshoot into exp)
    eta = jnp.maximum(mean, jnp.log(y + 1.0))
    for _ in range(20):
        grad = y - jnp.exp(eta) - (eta - mean) / v
        eta = eta + grad / (jnp.exp(eta) + 1.0 / v)
    eta = jax.lax.stop_gradient(eta)
    curv = jnp.exp(eta) + 1.0 / v
    nodes = jnp.asarray(_NODES, dtype)
    pts = eta[..., None] + jnp.sqrt(2.0 / curv)[..., None] * nodes
    g = y[..., None] * pts - jnp.exp(pts) - (pts - mean[..., None]) ** 2 / (2.0 * v[..., None])
    quad = (jax.nn.logsumexp(g + nodes**2 + jnp.log(jnp.asarray(_WEIGHTS, dtype)), axis=-1)
            - 0.5 * jnp.log(jnp.pi) - 0.5 * jnp.log(v * curv) - gammaln(y + 1.0))
    poisson = y * mean - jnp.exp(mean) - gammaln(y + 1.0)
    return jnp.where(flat, poisson, quad)


class _PoissonLogNormal(dist.Distribution):
    support = constraints.nonnegative_integer

    def __init__(self, mean, var, *, validate_args=None):
        self.mean_eta, self.var_eta = mean, var
        super().__init__(batch_shape=jnp.shape(mean), validate_args=validate_args)

    def log_prob(self, value):
        return poisson_lognormal_logpmf(value, self.mean_eta, self.var_eta)

    def sample(self, key, sample_shape=()):
        k1, k2 = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        eta = self.mean_eta + jnp.sqrt(self.var_eta) * jax.random.normal(k1, shape)
        return jax.random.poisson(k2, jnp.exp(eta)).astype(jnp.result_type(float))


def latent_driven_glm_model(counts=None, *, mean_features, var_features, basis_matrix, n_neuron: int,
                            log_mean_count, history=None, prior_scale: float = 3.0):
    """NumPyro model of :class:`LatentDrivenGLM`.

    Parameters
    ----------
    counts : array, shape (time, neuron), optional
    mean_features : array, shape (time, latent, basis)
        The posterior means convolved with the basis.
    var_features : array, shape (time, latent, lag)
        The posterior variances at each lag (``s^2_{t + lead - k}``).
    basis_matrix : array, shape (lag, basis)
    n_neuron : int
    log_mean_count : array, shape (neuron,)
        Prior mean of the biases.
    history : array, shape (time, neuron, history_basis), optional
        Each target neuron's own counts convolved with the history basis (current bin excluded).
    prior_scale : float
    """
    L, B = mean_features.shape[1], mean_features.shape[2]
    with numpyro.plate("neuron", n_neuron, dim=-1):
        bias = numpyro.sample("bias", dist.Normal(log_mean_count, 10.0))
    weights = numpyro.sample("weights", dist.Normal(0.0, prior_scale).expand([L, B, n_neuron]).to_event(3))
    eta = bias + jnp.einsum("tlb,lbn->tn", mean_features, weights)
    if history is not None:
        hw = numpyro.sample("history_weights",
                            dist.Normal(0.0, prior_scale).expand([history.shape[2], n_neuron]).to_event(2))
        eta = eta + jnp.einsum("tnb,bn->tn", history, hw)
    h2 = jnp.einsum("kb,lbn->lnk", basis_matrix, weights) ** 2  # (latent, neuron, lag)
    var = jnp.einsum("tlk,lnk->tn", var_features, h2)
    with numpyro.plate("time", eta.shape[0], dim=-2), numpyro.plate("neuron", eta.shape[1], dim=-1):
        numpyro.sample("counts", _PoissonLogNormal(eta, var), obs=counts)


class LatentDrivenGLM(Estimator):
    r"""Poisson GLM of a target population on a source population's latents, their uncertainty integrated out.

    See :mod:`bayesneuro.joint.driven` for the model.

    Parameters
    ----------
    basis : bayesneuro.bases.Basis, optional
        Temporal basis of the filters from each latent (row 0: the current bin). None: the
        current bin only (shifted by ``lead``).
    lead : int, default 0
        Bins by which the latents are advanced (negative lags: the target leads the source).
    history_basis : bayesneuro.bases.Basis, optional
        Add each target neuron's own spike history (refractoriness, bursting) on this basis,
        as in :class:`~bayesneuro.PoissonGLM` (the current bin excluded); None: no history term.
    prior_scale : float, default 3.0
        SD of the Normal prior of the basis weights.

    Attributes
    ----------
    filters_ : xarray.Dataset
        ``mean``, ``lower``, ``upper``, dims ``(neuron, latent, lag)``: change of the log rate per
        unit of latent.
    bias_ : numpy.ndarray, shape (neuron,)
        Log expected count per bin at zero latents.
    history_filters_ : xarray.Dataset or None
        With ``history_basis``: ``mean``, ``lower``, ``upper``, dims ``(neuron, history_lag)``.
    result_ : bayesneuro.infer.FitResult

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.joint import LatentDrivenGLM, LatentPosterior
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 1))                                   # source latent, N(0, 1) per bin
    >>> y = rng.poisson(np.exp(0.5 + 0.6 * z))                           # one target neuron it drives
    >>> x = z + 0.5 * rng.normal(size=z.shape)                           # what the source spikes say
    >>> src = LatentPosterior.from_messages(x, np.eye(1) * 4.0, bin_size=0.05, mean=x / 1.25,
    ...                                     sd=np.full(z.shape, np.sqrt(0.25 / 1.25)))  # exact posterior
    >>> glm = LatentDrivenGLM().fit(src, y, method="laplace", key=0, progress=False)
    >>> f = glm.filters_.isel(neuron=0, latent=0, lag=0)
    >>> round(float(f["mean"]), 1), glm.score_unit
    (0.6, 'bits/spike')
    """

    score_unit = "bits/spike"
    log_likelihood_dim = "time"

    def __init__(self, basis: Any = None, *, lead: int = 0, history_basis: Any = None, prior_scale: float = 3.0):
        self.basis = basis
        self.lead = lead
        self.history_basis = history_basis
        self.prior_scale = prior_scale

    def _history(self, y: np.ndarray, seg: np.ndarray):
        """``(time, neuron, history_basis)`` own-history features, or None."""
        if self.history_basis is None:
            return None
        if not isinstance(self.history_basis, _bases.Basis):
            raise TypeError(f"history_basis must be a bayesneuro.bases.Basis, got {type(self.history_basis).__name__}")
        return np.asarray(_bases.convolve(y, self.history_basis, history=True, trial_ids=seg), dtype=float)

    def _counts(self, target: Any, n_time: int) -> tuple[np.ndarray, np.ndarray]:
        from ..data import SpikeData

        if isinstance(target, SpikeData):
            y, ids = np.asarray(target.counts, float), np.asarray(target.neuron_ids)
        else:
            y = np.asarray(target, dtype=float)
            if y.ndim == 1:
                y = y[:, None]
            ids = np.arange(y.shape[1])
        if y.ndim != 2:
            raise ValueError(f"target counts must be (time, neuron), got shape {y.shape}")
        if y.shape[0] != n_time:
            raise ValueError(f"target has {y.shape[0]} bins but the source latents {n_time}: align them bin by bin")
        if not np.all(np.isfinite(y)):
            raise ValueError("target counts contain NaN or inf")
        if np.any(y < 0) or np.any(y != np.round(y)):
            raise ValueError("target counts must be non-negative integers")
        return y, ids

    def _features(self, source: LatentPosterior, naive: bool) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(source, LatentPosterior):
            raise TypeError(f"source must be a LatentPosterior, got {type(source).__name__}")
        _design.basis_matrix(self.basis)
        lead, seg = _design.check_lead(self.lead), source.segment_ids
        mean_f = _design.features(source.mean, self.basis, lead, seg)  # (time, latent, basis)
        window = 1 if self.basis is None else self.basis.window
        if naive:
            return mean_f, np.zeros((source.n_time, source.n_latent, window))
        if source.sd is None:
            raise ValueError("the source posterior has no sd: uncertainty='posterior' needs it")
        var = source.sd**2
        lags = np.stack([_design.shift_within(var, lead - k, seg) for k in range(window)],
                        axis=2)  # (time, latent, lag): s^2 at t + lead - k
        return mean_f, lags

    def fit(self, source: LatentPosterior, target: Any, *, method: str = "laplace", uncertainty: str = "posterior",
            key: Any = None, progress: bool | None = None, **options) -> LatentDrivenGLM:
        """Fit the filters from the source latents to each target neuron.

        Parameters
        ----------
        source : LatentPosterior
            The source population's latents (:func:`~bayesneuro.joint.latent_posterior`).
        target : array_like, shape (time, neuron), or SpikeData
            Counts of the target neurons on the same bins.
        method : {"laplace", "map", "svi", "nuts"}
        uncertainty : {"posterior", "mean"}
            ``"posterior"``: the latents are integrated out under their per-bin posteriors;
            ``"mean"``: the posterior means are plugged in (for comparison: too narrow).
        key : jax.random key or int
            Required by every method but ``"map"``.
        progress : bool, optional
        **options
            Options of :func:`bayesneuro.infer.fit`.
        """
        _design.check_fit_options(self.prior_scale, uncertainty, ("posterior", "mean"))
        rng = resolve_key(key, needed=method != "map", why=f"method={method!r}")
        y, ids = self._counts(target, source.n_time)
        silent = np.flatnonzero(y.sum(axis=0) == 0)
        if silent.size:
            raise ValueError(f"target neurons {list(ids[silent])} have no spikes: drop them")
        mean_f, var_f = self._features(source, uncertainty == "mean")
        B = _design.basis_matrix(self.basis)
        self.neuron_ids_, self.latent_ = ids, source.latent
        coords = {"neuron": ids, "latent": source.latent, "basis": np.arange(B.shape[1]), "time": source.time,
                  "lag": np.arange(B.shape[0])}
        dims = {"bias": ["neuron"], "weights": ["latent", "basis", "neuron"], "counts": ["time", "neuron"],
                "mean_features": ["time", "latent", "basis"], "var_features": ["time", "latent", "lag"],
                "log_mean_count": ["neuron"], "basis_matrix": ["lag", "basis"],
                "history": ["time", "neuron", "history_basis"], "history_weights": ["history_basis", "neuron"]}
        data = {"counts": y, "mean_features": mean_f, "basis_matrix": B, "n_neuron": y.shape[1],
                "log_mean_count": np.log(y.mean(axis=0)), "history": self._history(y, source.segment_ids),
                "prior_scale": float(self.prior_scale)}
        if "init_strategy" not in options:
            # The marginal likelihood is not concave: the latents' variance enters through h^2, so a
            # filter of the wrong sign can be a local mode. Start from the plug-in Poisson GLM (concave;
            # its slope is about right, regression calibration), in the basin of the right sign.
            zero = {"bias": jnp.asarray(data["log_mean_count"]),  # a constant rate per neuron
                    "weights": jnp.zeros((mean_f.shape[1], mean_f.shape[2], y.shape[1]))}
            if data["history"] is not None:
                zero["history_weights"] = jnp.zeros((data["history"].shape[2], y.shape[1]))
            start = _fit(latent_driven_glm_model, method="map", key=0, progress=False,
                         var_features=np.zeros_like(var_f), init_strategy=init_to_value(values=zero), **data,
                         **{k: options[k] for k in ("max_iter", "tol") if k in options})
            options["init_strategy"] = init_to_value(values={k: jnp.asarray(v[0, 0]) for k, v in start.samples.items()})
        self.result_ = _fit(latent_driven_glm_model, method=method, key=0 if rng is None else rng, progress=progress,
                            coords=coords, dims=dims, var_features=var_f, **data, **options)
        self.method_, self.uncertainty_, self.bin_size_ = method, uncertainty, source.bin_size
        d = self.result_.flat_samples()
        self.bias_, self.weights_ = d["bias"].mean(axis=0), d["weights"].mean(axis=0)
        self.history_weights_ = d["history_weights"].mean(axis=0) if "history_weights" in d else None
        self.mean_count_ = y.mean(axis=0)
        self.filters_ = self.filters()
        self.history_filters_ = None
        if self.history_basis is not None:
            h = np.einsum("kb,dbn->dnk", np.asarray(self.history_basis.matrix(), float), d["history_weights"])
            lags = (np.arange(self.history_basis.window) + 1) * self.bin_size_
            self.history_filters_ = _design.filters_dataset(
                h, ("neuron", "history_lag"), {"neuron": ids, "history_lag": lags}, method=method,
                uncertainty=uncertainty, prob=PROB)
        return self

    def filters(self, prob: float = PROB):
        """Filters with ``prob`` bands, ``xarray.Dataset`` dims ``(neuron, latent, lag)``."""
        self._check_fitted()
        Bm = _design.basis_matrix(self.basis)
        h = np.einsum("kb,dlbn->dnlk", Bm, self.result_.flat_samples()["weights"])
        coords = {"neuron": self.neuron_ids_, "latent": self.latent_,
                  "lag": _design.lags_seconds(self.basis, int(self.lead), self.bin_size_)}
        dims = ("neuron", "latent", "lag")
        return _design.filters_dataset(h, dims, coords, method=self.method_, uncertainty=self.uncertainty_, prob=prob)

    def _pointwise(self, source: LatentPosterior, target: Any) -> np.ndarray:
        self._check_fitted()
        y, _ = self._counts(target, source.n_time)
        if y.shape[1] != len(self.neuron_ids_):
            raise ValueError(f"target has {y.shape[1]} neurons, the fit {len(self.neuron_ids_)}")
        mean_f, var_f = self._features(source, self.uncertainty_ == "mean")
        Bm = _design.basis_matrix(self.basis)
        eta = self.bias_ + np.einsum("tlb,lbn->tn", mean_f, self.weights_)
        hist = self._history(y, source.segment_ids)
        if hist is not None:
            eta = eta + np.einsum("tnb,bn->tn", hist, self.history_weights_)
        var = np.einsum("tlk,lnk->tn", var_f, np.einsum("kb,lbn->lnk", Bm, self.weights_) ** 2)
        return np.asarray(poisson_lognormal_logpmf(jnp.asarray(y), jnp.asarray(eta), jnp.asarray(var))), y

    def log_likelihood(self, source: LatentPosterior, target: Any) -> np.ndarray:
        """Log-likelihood of each bin's target counts (summed over neurons), nats, (time,)."""
        return self._pointwise(source, target)[0].sum(axis=1)

    def score(self, source: LatentPosterior, target: Any) -> float:
        """Information gain over a constant rate per neuron (the training mean), in bits/spike, on these bins."""
        ll, y = self._pointwise(source, target)
        from scipy.stats import poisson

        base = poisson.logpmf(y, self.mean_count_[None]).sum()
        return float((ll.sum() - base) / (np.log(2) * max(y.sum(), 1.0)))

    def to_inference_data(self):
        """ArviZ InferenceData of the fit."""
        self._check_fitted()
        return self.result_.to_inference_data()

    def __repr__(self) -> str:
        return (f"LatentDrivenGLM(basis={self.basis!r}, lead={self.lead}, history_basis={self.history_basis!r}, "
                f"prior_scale={self.prior_scale})")

