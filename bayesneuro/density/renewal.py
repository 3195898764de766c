r"""Renewal models of inter-spike intervals: exponential, gamma, inverse Gaussian, lognormal.

A renewal process draws each inter-spike interval (ISI) independently from one distribution.
Each family here is parameterised by the neuron's **mean ISI** :math:`\mu` (seconds) and, apart
from the exponential, one dimensionless **shape** parameter :math:`\kappa`:

==================  ====================================================  ===========================
family              ISI density                                           ISI CV
==================  ====================================================  ===========================
``exponential``     :math:`\mathrm{Exp}(1/\mu)` (Poisson process)           :math:`1`
``gamma``           :math:`\mathrm{Gamma}(\kappa, \kappa/\mu)`              :math:`1/\sqrt{\kappa}`
``inverse_gaussian``:math:`\mathrm{IG}(\mu, \lambda=\kappa\mu)`             :math:`\sqrt{\mu/\lambda}=1/\sqrt{\kappa}`
``lognormal``       :math:`\log x \sim N(\log\mu - \kappa^2/2, \kappa^2)`   :math:`\sqrt{e^{\kappa^2}-1}`
==================  ====================================================  ===========================

Priors (weakly informative, per neuron, independent):
:math:`\log\mu \sim N(\log 0.1\,\mathrm{s}, 2.5^2)` (mean ISIs from about 1 ms to 15 s within
two prior SDs); for gamma and inverse Gaussian :math:`\log\kappa \sim N(0, 2^2)`
(CV from about 0.14 to 7); for the lognormal :math:`\log\kappa \sim N(0, 1)` (log-ISI SD from
0.14 to 7). The model samples :math:`\log\mu` and :math:`\log\kappa`, so a MAP fit under a
flat prior is the maximum-likelihood estimate.

All neurons are fitted in one NumPyro model: a flat vector of every ISI with the index of its
neuron (no padding), so neurons with different numbers of ISIs cost nothing extra. The
pointwise log-likelihood of each ISI is kept, and PSIS-LOO per neuron compares the families.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax.scipy.special import log_ndtr, ndtr
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes, validate_sample
from numpyro.infer import init_to_value

from .._shapes import bucket_length, pad_axis, unpad_result
from ..diagnostics import loo
from ..estimator import PROB, Estimator, resolve_key, split_key
from ..infer import fit as _infer_fit
from ..infer.fit import progress_default

__all__ = [
    "FAMILIES",
    "InverseGaussian",
    "RenewalComparison",
    "RenewalModel",
    "compare_renewal",
    "family_distribution",
    "isi_cv_of",
    "plot_isi_fits",
    "renewal_model",
]

MEMORY_WARN_GIB = 4.0  # compare_renewal warns above this much pointwise log-likelihood

FAMILIES = ("exponential", "gamma", "inverse_gaussian", "lognormal")
MEAN_PRIOR = (float(np.log(0.1)), 2.5)
SHAPE_PRIORS = {"gamma": (0.0, 2.0), "inverse_gaussian": (0.0, 2.0), "lognormal": (0.0, 1.0)}


class InverseGaussian(dist.Distribution):
    r"""Inverse Gaussian (Wald) distribution with mean ``loc`` and shape ``concentration``.

    .. math::
        p(x \mid \mu, \lambda) = \sqrt{\frac{\lambda}{2\pi x^3}}
        \exp\left(-\frac{\lambda (x-\mu)^2}{2\mu^2 x}\right),\qquad x > 0,

    with mean :math:`\mu` and variance :math:`\mu^3/\lambda`; ``scipy.stats.invgauss(mu /
    lam, scale=lam)`` is the same law. Draws use the transformation method of Michael,
    Schucany and Haas (1976).

    Parameters
    ----------
    loc : array_like
        Mean :math:`\mu > 0`.
    concentration : array_like
        Shape :math:`\lambda > 0`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> d = InverseGaussian(2.0, 3.0)
    >>> round(float(d.log_prob(jnp.array(1.5))), 4)
    -1.0403
    """

    arg_constraints = {"loc": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["loc", "concentration"]

    def __init__(self, loc=1.0, concentration=1.0, *, validate_args=None):
        self.loc, self.concentration = promote_shapes(loc, concentration)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(concentration))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        k_norm, k_unif = jax.random.split(key)
        y = jax.random.normal(k_norm, shape) ** 2
        mu, lam = self.loc, self.concentration
        my = mu * y
        x = mu + mu * my / (2 * lam) - mu / (2 * lam) * jnp.sqrt(4 * mu * lam * y + my**2)
        u = jax.random.uniform(k_unif, shape)
        return jnp.where(u <= mu / (mu + x), x, mu**2 / x)

    @validate_sample
    def log_prob(self, value):
        mu, lam = self.loc, self.concentration
        return 0.5 * (jnp.log(lam) - jnp.log(2 * jnp.pi) - 3 * jnp.log(value)) - lam * (
            value - mu
        ) ** 2 / (2 * mu**2 * value)

    def cdf(self, value):
        mu, lam = self.loc, self.concentration
        r = jnp.sqrt(lam / value)
        return ndtr(r * (value / mu - 1)) + jnp.exp(2 * lam / mu + log_ndtr(-r * (value / mu + 1)))

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(self.loc**3 / self.concentration, self.batch_shape)


def family_distribution(family: str, mean_isi: Any, shape: Any = None) -> dist.Distribution:
    """The ISI distribution of `family` with mean `mean_isi` and shape parameter `shape`.

    Parameters
    ----------
    family : {"exponential", "gamma", "inverse_gaussian", "lognormal"}
    mean_isi : array_like
        Mean ISI :math:`\\mu` (seconds).
    shape : array_like, optional
        The family's dimensionless shape :math:`\\kappa` (module docstring); ignored for
        ``"exponential"``.

    Returns
    -------
    numpyro.distributions.Distribution

    Examples
    --------
    >>> round(float(family_distribution("gamma", 0.1, 4.0).mean), 4)
    0.1
    """
    _check_family(family)
    mu = jnp.asarray(mean_isi)
    if family == "exponential":
        return dist.Exponential(1.0 / mu)
    k = jnp.asarray(shape)
    if family == "gamma":
        return dist.Gamma(k, k / mu)
    if family == "inverse_gaussian":
        return InverseGaussian(mu, k * mu)
    return dist.LogNormal(jnp.log(mu) - 0.5 * k**2, k)


def isi_cv_of(family: str, shape: Any = None) -> jax.Array:
    """Coefficient of variation of the ISIs implied by `family` and its shape parameter.

    Exponential 1; gamma :math:`1/\\sqrt{\\kappa}`; inverse Gaussian
    :math:`\\sqrt{\\mu/\\lambda} = 1/\\sqrt{\\kappa}`; lognormal :math:`\\sqrt{e^{\\kappa^2}-1}`.

    Examples
    --------
    >>> float(isi_cv_of("gamma", 4.0))
    0.5
    """
    _check_family(family)
    if family == "exponential":
        return jnp.ones_like(jnp.asarray(1.0 if shape is None else shape, dtype=float))
    k = jnp.asarray(shape)
    if family == "lognormal":
        return jnp.sqrt(jnp.expm1(k**2))
    return 1.0 / jnp.sqrt(k)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def renewal_model(
    neuron_index: Any,
    n_neuron: int,
    family: str = "gamma",
    mean_prior: tuple = MEAN_PRIOR,
    shape_prior: tuple = (0.0, 2.0),
    isis: Any = None,
    mask: Any = None,
) -> None:
    """NumPyro model of independent renewal ISIs for several neurons at once.

    Parameters
    ----------
    neuron_index : int array, shape (isi,)
        Position (0 .. n_neuron - 1) of the neuron each ISI belongs to.
    n_neuron : int
        Number of neurons.
    family : str
        One of :data:`FAMILIES`.
    mean_prior, shape_prior : (float, float)
        Normal ``(loc, scale)`` priors on the log mean ISI (log seconds) and the log shape.
    isis : float array, shape (isi,), optional
        Observed ISIs (seconds); drawn when absent.
    mask : bool array, shape (isi,), optional
        ISIs in the likelihood (default all): :meth:`RenewalModel.fit` pads the ISIs to a bucket
        length (:func:`bayesneuro._shapes.bucket_length`) and masks the padding out, so other
        recordings reuse the compiled programs.

    Notes
    -----
    Sites: ``log_mean_isi`` and ``log_shape`` (latent, ``(neuron,)``; no ``log_shape`` for the
    exponential), deterministic ``mean_isi``, ``rate`` (1 / mean ISI, Hz), ``cv`` and ``shape``,
    and the observed ``isis`` (dim ``isi``).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from numpyro.infer import Predictive
    >>> idx = np.array([0, 0, 1, 1])
    >>> draws = Predictive(renewal_model, num_samples=2)(jax.random.key(0), idx, 2)
    >>> draws["isis"].shape
    (2, 4)
    """
    with numpyro.plate("neuron", n_neuron):
        log_mean = numpyro.sample("log_mean_isi", dist.Normal(mean_prior[0], mean_prior[1]))
        mean = numpyro.deterministic("mean_isi", jnp.exp(log_mean))
        numpyro.deterministic("rate", 1.0 / mean)
        shape = None
        if family != "exponential":
            log_shape = numpyro.sample("log_shape", dist.Normal(shape_prior[0], shape_prior[1]))
            shape = numpyro.deterministic("shape", jnp.exp(log_shape))
        numpyro.deterministic("cv", isi_cv_of(family, shape) * jnp.ones_like(mean))
    idx = jnp.asarray(neuron_index)
    d = family_distribution(family, mean[idx], None if shape is None else shape[idx])
    with numpyro.plate("isi", idx.shape[0]), numpyro.handlers.mask(mask=True if mask is None else jnp.asarray(mask, bool)):
        numpyro.sample("isis", d, obs=isis)


# ------------------------------------------------------------------------------------ input


def _as_isis(isis: Any, neuron_ids: Any, min_isi: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Validated ISI arrays and neuron ids from a list of arrays or an object with ``.isis()``."""
    if hasattr(isis, "isis") and callable(isis.isis):
        ids = np.asarray(isis.neuron_ids) if neuron_ids is None else np.asarray(neuron_ids)
        isis = isis.isis()
    else:
        if isinstance(isis, np.ndarray) and isis.ndim == 1 and isis.dtype != object:
            raise TypeError(
                "isis must be a sequence of 1-D arrays (one per neuron) or an object with an "
                ".isis() method such as SpikeTrains; got one 1-D array (wrap it in a list)"
            )
        if not isinstance(isis, (list, tuple, np.ndarray)):
            raise TypeError(
                "isis must be a sequence of 1-D arrays (one per neuron) or an object with an "
                f".isis() method such as SpikeTrains, got {type(isis).__name__}"
            )
        ids = np.arange(len(isis)) if neuron_ids is None else np.asarray(neuron_ids)
    arrays = [np.asarray(a, dtype=np.float64) for a in isis]
    if not arrays:
        raise ValueError("isis holds no neurons")
    if ids.shape != (len(arrays),):
        raise ValueError(f"neuron_ids must have {len(arrays)} entries (one per neuron), got shape {ids.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("neuron_ids must be unique")
    for a, nid in zip(arrays, ids.tolist()):
        if a.ndim != 1:
            raise ValueError(f"the ISIs of neuron {nid!r} must be a 1-D array, got shape {a.shape}")
        if np.isnan(a).any() or np.isinf(a).any():
            raise ValueError(f"the ISIs of neuron {nid!r} contain NaN or infinite values")
        if np.any(a <= 0):
            raise ValueError(
                f"the ISIs of neuron {nid!r} must be > 0 seconds; {int(np.sum(a <= 0))} are not "
                "(duplicate spike times?)"
            )
        if a.size < min_isi:
            raise ValueError(
                f"neuron {nid!r} has {a.size} ISIs; a renewal fit needs at least {min_isi} "
                "(drop silent neurons first)"
            )
    return arrays, ids


# ------------------------------------------------------------------------------------ model


class RenewalModel(Estimator):
    """Bayesian renewal model of the ISIs of each neuron, in one family.

    Parameters
    ----------
    family : {"exponential", "gamma", "inverse_gaussian", "lognormal"}
        ISI distribution (module docstring).
    mean_prior : (float, float)
        Normal ``(loc, scale)`` prior on the log mean ISI (log seconds).
        Default ``(log 0.1, 2.5)``.
    shape_prior : (float, float), optional
        Normal ``(loc, scale)`` prior on the log shape; default ``(0, 2)`` for gamma and
        inverse Gaussian, ``(0, 1)`` for the lognormal.
    min_isi : int
        Fewest ISIs a neuron may have (default 3).

    Attributes
    ----------
    result_ : FitResult
        The fit of :func:`renewal_model` through :func:`bayesneuro.infer.fit`.
    neuron_ids_ : ndarray
    n_isi_ : ndarray of int
        ISIs per neuron.
    isis_ : list of ndarray
        The ISIs fitted.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> isis = [rng.gamma(4.0, 0.025, 400), rng.gamma(4.0, 0.05, 300)]
    >>> m = RenewalModel("gamma").fit(isis, key=0, progress=False)
    >>> [round(float(v), 2) for v in m.summary()["mean_isi"]]
    [0.1, 0.2]
    >>> bool(abs(m.summary()["cv"].iloc[0] - 0.5) < 0.1)
    True
    """

    score_unit = "nats/isi"
    log_likelihood_dim = "isi"

    def __init__(self, family: str = "gamma", *, mean_prior: tuple = MEAN_PRIOR,
                 shape_prior: tuple | None = None, min_isi: int = 3):
        _check_family(family)
        _prior(mean_prior, "mean_prior")
        if shape_prior is not None:
            _prior(shape_prior, "shape_prior")
        if int(min_isi) < 2:
            raise ValueError(f"min_isi must be >= 2, got {min_isi}")
        self.family = family
        self.mean_prior = mean_prior
        self.shape_prior = shape_prior
        self.min_isi = min_isi

    @property
    def _mean_prior(self) -> tuple:
        return _prior(self.mean_prior, "mean_prior")

    @property
    def _shape_prior(self) -> tuple:
        sp = SHAPE_PRIORS.get(self.family, (0.0, 1.0)) if self.shape_prior is None else self.shape_prior
        return _prior(sp, "shape_prior")

    def fit(self, isis: Any, *, method: str = "laplace", key: Any = None, progress: bool | None = None,
            neuron_ids: Any = None, **infer_options) -> RenewalModel:
        """Fit the model to every neuron's ISIs.

        Parameters
        ----------
        isis : sequence of 1-D arrays, or SpikeTrains
            ISIs in seconds, one array per neuron; or any object with ``.isis()`` and
            ``.neuron_ids`` (ISIs never cross segment boundaries there).
        method : {"laplace", "map", "svi", "nuts"}
            Inference method of :func:`bayesneuro.infer.fit`; LOO needs posterior draws (not
            ``"map"``).
        key : jax.random key or int, optional
            Required unless ``method="map"`` (the others draw from the posterior).
        progress : bool, optional
            Progress bars (default from ``BAYESNEURO_PROGRESS``).
        neuron_ids : array_like, optional
            Neuron labels (default ``0 .. n - 1``, or the object's ``neuron_ids``).
        **infer_options
            Options of the method (e.g. ``num_samples``).

        Returns
        -------
        RenewalModel
            self, fitted.

        Raises
        ------
        ValueError
            NaN, infinite or non-positive ISIs, or a neuron with fewer than ``min_isi`` ISIs.
        TypeError
            No key for a method that draws.
        """
        arrays, ids = _as_isis(isis, neuron_ids, int(self.min_isi))
        key = resolve_key(key, needed=method != "map", why=f"method={method!r} (posterior draws)")
        if key is None:  # MAP from the complete moment start below draws nothing: any key serves
            key = jax.random.key(0)
        n_isi = np.array([a.size for a in arrays], dtype=np.int64)
        flat = np.concatenate(arrays)
        index = np.repeat(np.arange(len(arrays)), n_isi)
        dims = {"neuron_index": ["isi"], "isis": ["isi"]}
        for site in ("log_mean_isi", "mean_isi", "rate", "cv", "log_shape", "shape"):
            dims[site] = ["neuron"]
        if self.family == "exponential":
            dims.pop("log_shape"), dims.pop("shape")
        if "init_strategy" not in infer_options:
            infer_options["init_strategy"] = init_to_value(values=self._moment_start(arrays))
        model_kwargs = dict(neuron_index=index, n_neuron=len(arrays), family=self.family,
                            mean_prior=self._mean_prior, shape_prior=self._shape_prior, isis=flat)
        # MAP and Laplace pad the ISIs to a bucket length (masked out of the likelihood), so
        # recordings with other numbers of ISIs reuse the compiled programs
        pad = method in ("map", "laplace")
        n_pad = bucket_length(flat.size) if pad else flat.size
        if pad:  # the mask even when nothing is padded: the programs see one argument structure
            model_kwargs.update(neuron_index=pad_axis(index, n_pad), isis=pad_axis(flat, n_pad, value=1.0),
                                mask=pad_axis(np.ones(flat.size, bool), n_pad))
            dims["mask"] = ["isi"]
        result = _infer_fit(
            renewal_model, method=method, key=key,
            coords={"neuron": ids, "isi": np.arange(n_pad)}, dims=dims,
            progress=progress_default() if progress is None else progress,
            model_kwargs=model_kwargs, **infer_options,
        )
        if pad:  # the result describes the ISIs given, not the padding
            unpad_result(result, flat.size, ("neuron_index", "isis"), coords={"isi": np.arange(flat.size)})
        self.result_ = result
        self.neuron_ids_ = ids
        self.n_isi_ = n_isi
        self.isis_ = arrays
        self._isi_neuron = ids[index]
        self._idata = None
        return self

    def _moment_start(self, arrays: list[np.ndarray]) -> dict:
        """Start the optimiser/sampler at moment estimates (robust also under very flat priors)."""
        mean = np.array([a.mean() for a in arrays])
        start = {"log_mean_isi": np.log(mean)}
        if self.family == "lognormal":
            start["log_shape"] = np.log(np.clip([np.log(a).std() for a in arrays], 1e-2, 1e2))
        elif self.family != "exponential":
            cv = np.array([a.std() for a in arrays]) / mean
            start["log_shape"] = np.log(np.clip(1.0 / np.maximum(cv, 1e-6) ** 2, 1e-2, 1e4))
        return start

    # -- likelihood -----------------------------------------------------------------------------

    def _held_out(self, isis: Any) -> list[np.ndarray]:
        self._check_fitted()
        ids = self.neuron_ids_ if not (hasattr(isis, "isis") and callable(isis.isis)) else None
        arrays, got = _as_isis(isis, ids, 1)
        if len(arrays) != len(self.neuron_ids_) or not np.array_equal(np.asarray(got), self.neuron_ids_):
            raise ValueError(f"the ISIs are of neurons {np.asarray(got).tolist()} but the model was fitted to "
                             f"{self.neuron_ids_.tolist()}")
        return arrays

    def log_likelihood(self, isis: Any) -> np.ndarray:
        """Log density (nats) of each ISI at the fitted estimate (posterior mean of each neuron's
        mean ISI and shape; the MAP after ``method="map"``), shape (isi,), neurons in order."""
        arrays = self._held_out(isis)
        p = self.result_.params
        idx = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
        mu = jnp.asarray(p["mean_isi"])[idx]
        k = None if self.family == "exponential" else jnp.asarray(p["shape"])[idx]
        return np.asarray(family_distribution(self.family, mu, k).log_prob(jnp.asarray(np.concatenate(arrays))))

    def score(self, isis: Any) -> float:
        """Mean log density per ISI at the fitted estimate, in nats/isi (higher is better)."""
        return float(np.mean(self.log_likelihood(isis)))

    def evaluate(self, isis: Any) -> dict:
        """``log_likelihood_per_isi`` (as :meth:`score`), ``log_likelihood_per_neuron`` (sum over
        each neuron's ISIs, shape (neuron,)) and ``n_isi`` (neuron,)."""
        arrays = self._held_out(isis)
        ll = self.log_likelihood(isis)
        n = np.array([a.size for a in arrays])
        return {"log_likelihood_per_isi": float(ll.mean()),
                "log_likelihood_per_neuron": np.add.reduceat(ll, np.r_[0, np.cumsum(n)[:-1]]), "n_isi": n}

    def to_inference_data(self):
        """ArviZ InferenceData of the fit (dims ``neuron`` and ``isi``; coord ``isi_neuron``).

        The ``log_likelihood`` group holds the pointwise log density of each ISI; the ``isi``
        dim carries the coordinate ``isi_neuron`` (the neuron id of each ISI).
        """
        self._check_fitted()
        if self._idata is None:
            idata = self.result_.to_inference_data()
            for group in idata.groups():
                ds = idata[group]
                if "isi" in ds.dims:
                    idata[group] = ds.assign_coords(isi_neuron=("isi", self._isi_neuron))
            self._idata = idata
        return self._idata

    def _neuron_position(self, neuron: Any) -> int:
        hits = np.flatnonzero(self.neuron_ids_ == neuron)
        if hits.size == 0:
            raise ValueError(f"no neuron {neuron!r}; the fitted neuron ids are {self.neuron_ids_.tolist()}")
        return int(hits[0])

    def neuron_inference_data(self, neuron: Any):
        """InferenceData restricted to one neuron: its parameters and the log-likelihood of its ISIs."""
        import arviz as az

        self._check_fitted()
        self._neuron_position(neuron)
        if self.result_.method == "map":
            raise ValueError("LOO needs posterior draws; refit with method='laplace', 'svi' or 'nuts' (not 'map')")
        idata = self.to_inference_data()
        mask = self._isi_neuron == neuron
        return az.InferenceData(
            posterior=idata.posterior.sel(neuron=[neuron]),
            log_likelihood=idata.log_likelihood.isel(isi=np.flatnonzero(mask)),
        )

    def loo(self, neuron: Any = None, **kwargs):
        """PSIS-LOO (``arviz.loo``) of one neuron's ISIs, or of all ISIs when `neuron` is None.

        Parameters
        ----------
        neuron : neuron id, optional
        **kwargs
            Passed to ``arviz.loo`` (e.g. ``pointwise=True``).

        Returns
        -------
        arviz.ELPDData
        """
        self._check_fitted()
        if neuron is None:
            if self.result_.method == "map":
                raise ValueError("LOO needs posterior draws; refit with method='laplace', 'svi' or 'nuts' (not 'map')")
            return loo(self.to_inference_data(), **kwargs)
        return loo(self.neuron_inference_data(neuron), **kwargs)

    def posterior_statistics(self, *, key: Any, num_samples: int = 1000) -> dict:
        """Posterior draws of the interpretable per-neuron quantities (for ``compare_states``).

        Statistics, each an ``xarray.DataArray`` with dims ``(draw, neuron)``:

        - ``mean_isi``: mean ISI (seconds);
        - ``rate``: the renewal rate ``1 / mean_isi`` (Hz);
        - ``cv``: the ISI coefficient of variation implied by the family;
        - ``shape``: the family's shape :math:`\\kappa` (absent for the exponential).

        `num_samples` draws are taken by `key` from the stored ones (without replacement when
        there are enough, else with replacement; a MAP fit repeats its single point).
        """
        self._check_fitted()
        flat = self.result_.flat_samples()
        n = next(iter(flat.values())).shape[0]
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        key = resolve_key(key, needed=True, why="posterior_statistics (resampling draws)")
        idx = np.asarray(jax.random.choice(key, n, (num_samples,), replace=num_samples > n))
        names = ["mean_isi", "rate", "cv"] + ([] if self.family == "exponential" else ["shape"])
        coords = {"draw": np.arange(num_samples), "neuron": self.neuron_ids_}
        return {k: xr.DataArray(np.asarray(flat[k])[idx], dims=("draw", "neuron"), coords=coords,
                                name=k) for k in names}

    def summary(self, prob: float = PROB):
        """Posterior mean and equal-tailed `prob` interval of each quantity, per neuron.

        Returns
        -------
        pandas.DataFrame
            Indexed by neuron id; columns ``mean_isi``, ``rate``, ``cv`` (and ``shape``) with
            ``*_lower`` / ``*_upper``.
        """
        import pandas as pd

        self._check_fitted()
        if not 0 < prob < 1:
            raise ValueError(f"prob must be in (0, 1), got {prob}")
        flat = self.result_.flat_samples()
        q = [(1 - prob) / 2, (1 + prob) / 2]
        cols = {}
        for k in ["mean_isi", "rate", "cv"] + ([] if self.family == "exponential" else ["shape"]):
            v = np.asarray(flat[k])
            cols[k] = v.mean(0)
            cols[f"{k}_lower"], cols[f"{k}_upper"] = np.quantile(v, q, axis=0)
        return pd.DataFrame(cols, index=pd.Index(self.neuron_ids_, name="neuron"))

    def pdf(self, x: Any, neuron: Any) -> np.ndarray:
        """Posterior-mean ISI density of `neuron` at times `x` (seconds), averaged over draws."""
        self._check_fitted()
        j = self._neuron_position(neuron)
        flat = self.result_.flat_samples()
        mu = jnp.asarray(flat["mean_isi"][:, j])[:, None]
        k = None if self.family == "exponential" else jnp.asarray(flat["shape"][:, j])[:, None]
        x = jnp.asarray(x, dtype=mu.dtype)
        return np.asarray(jnp.exp(family_distribution(self.family, mu, k).log_prob(x[None, :])).mean(0))


def _prior(p: Any, name: str) -> tuple:
    p = tuple(float(v) for v in p)
    if len(p) != 2 or not np.isfinite(p).all() or p[1] <= 0:
        raise ValueError(f"{name} must be a Normal (loc, scale) pair with scale > 0, got {p}")
    return p


# ------------------------------------------------------------------------------------ comparison


class RenewalComparison(NamedTuple):
    """Result of :func:`compare_renewal`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per neuron: ``n_isi``, ``elpd_<family>`` (PSIS-LOO elpd of each family on that
        neuron's ISIs), ``best`` (family with the highest elpd), ``elpd_diff`` (best minus
        runner-up, >= 0) and ``dse`` (standard error of that difference, from ``az.compare``).
    models : dict of str to RenewalModel
        The fitted model of each family.
    """

    table: Any
    models: dict


def compare_renewal(isis: Any, *, key: Any = None, families: Sequence[str] = FAMILIES, neuron_ids: Any = None,
                    method: str = "laplace", progress: bool | None = None,
                    **infer_options) -> RenewalComparison:
    """Fit several renewal families and compare them per neuron by PSIS-LOO.

    Parameters
    ----------
    isis : sequence of 1-D arrays, or SpikeTrains
        As in :meth:`RenewalModel.fit`.
    key : jax.random key or int
        Required (posterior draws); each family's fit gets its own subkey.
    families : sequence of str
        At least two of :data:`FAMILIES`.
    neuron_ids : array_like, optional
    method : str
        Inference method (not ``"map"``: LOO needs draws).
    progress : bool, optional
    **infer_options
        Passed to each fit.

    Returns
    -------
    RenewalComparison

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> isis = [rng.gamma(4.0, 0.025, 300), rng.exponential(0.1, 300)]
    >>> cmp = compare_renewal(isis, key=0, families=("exponential", "gamma"), progress=False)
    >>> cmp.table["best"].tolist()[0]
    'gamma'
    """
    import arviz as az
    import pandas as pd

    families = tuple(families)
    for f in families:
        _check_family(f)
    if len(set(families)) < 2 or len(set(families)) != len(families):
        raise ValueError(f"families must name at least two distinct families, got {families}")
    if method == "map":
        raise ValueError("compare_renewal needs posterior draws for LOO; use method='laplace', 'svi' or 'nuts'")
    arrays, ids = _as_isis(isis, neuron_ids, 3)
    n_draws = int(infer_options.get("num_samples", 1000)) * int(infer_options.get("num_chains", 4 if method == "nuts" else 1))
    gib = 8.0 * n_draws * sum(a.size for a in arrays) * len(families) / 2**30
    if gib > MEMORY_WARN_GIB:
        warnings.warn(f"compare_renewal keeps a (draw, ISI) log-likelihood per family: {n_draws} draws x "
                      f"{sum(a.size for a in arrays)} ISIs x {len(families)} families is about {gib:.1f} GiB; "
                      "pass a smaller num_samples or fewer neurons if memory is short", stacklevel=2)
    keys = split_key(resolve_key(key, needed=True, why="compare_renewal (posterior draws for LOO)"), len(families))
    models = {f: RenewalModel(f).fit(arrays, key=k, neuron_ids=ids, method=method, progress=progress,
                                     **infer_options) for f, k in zip(families, keys)}
    rows = []
    for nid, n in zip(ids, (a.size for a in arrays)):
        with warnings.catch_warnings():  # arviz's own pandas deprecation, not the user's concern
            warnings.filterwarnings("ignore", message=".*inplace keyword.*")
            cmp = az.compare({f: loo(m.neuron_inference_data(nid), pointwise=True) for f, m in models.items()},
                             ic="loo")
        row = {"neuron": nid, "n_isi": n}
        row.update({f"elpd_{f}": float(cmp.loc[f, "elpd_loo"]) for f in families})
        row["best"] = str(cmp.index[0])
        row["elpd_diff"] = float(cmp["elpd_diff"].iloc[1])
        row["dse"] = float(cmp["dse"].iloc[1])
        rows.append(row)
    return RenewalComparison(pd.DataFrame(rows).set_index("neuron"), models)


def plot_isi_fits(models: Any, neurons: Any = None, *, bins: int = 40, ax=None, max_isi: float | None = None):
    """Histogram (as a density) of each chosen neuron's ISIs with every family's fitted density.

    Parameters
    ----------
    models : RenewalComparison, dict of RenewalModel, or RenewalModel
        Fitted models (all fitted to the same ISIs).
    neurons : sequence of neuron ids, optional
        Default: the first (up to) four neurons.
    bins : int
        Histogram bins.
    ax : matplotlib Axes or array of them, optional
        One per neuron.
    max_isi : float, optional
        Right end of the plot (seconds); default the 99th percentile of each neuron's ISIs.

    Returns
    -------
    numpy.ndarray of matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> m = RenewalModel("gamma").fit([rng.gamma(4.0, 0.025, 100)], key=0, progress=False)
    >>> len(plot_isi_fits(m))
    1
    """
    from ..plotting import _axes

    if isinstance(models, RenewalComparison):
        models = models.models
    if isinstance(models, RenewalModel):
        models = {models.family: models}
    if not models:
        raise ValueError("plot_isi_fits needs at least one fitted RenewalModel")
    first = next(iter(models.values()))
    first._check_fitted()
    ids = first.neuron_ids_ if neurons is None else np.atleast_1d(np.asarray(neurons))
    if neurons is None:
        ids = ids[:4]
    axes = _axes(ax, len(ids))
    for a, nid in zip(axes, ids):
        x = first.isis_[first._neuron_position(nid)]
        hi = float(np.quantile(x, 0.99)) if max_isi is None else float(max_isi)
        shown = x[x <= hi]  # normalised by all ISIs, so it matches the densities
        a.hist(shown, bins=bins, range=(0, hi), weights=np.full(shown.size, bins / (hi * x.size)),
               color="0.8", label="data")
        grid = np.linspace(hi / 500, hi, 300)
        for fam, m in models.items():
            a.plot(grid, m.pdf(grid, nid), label=fam)
        a.set_title(f"neuron {nid}")
        a.set_xlabel("ISI (s)")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize="small")
    return axes
