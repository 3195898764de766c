r"""Bayesian regression decoders on time-lagged population features.

The features of target bin :math:`t` are the counts of every neuron at each lag,
:math:`k_{n, t + L}` (optionally square-rooted), flattened to one vector
:math:`x_t` of ``lag * neuron`` entries and standardised with the training mean and standard
deviation. The decoder is a regression of the variable on those features, fitted through
:func:`bayesneuro.infer.fit` by MAP, Laplace, SVI or NUTS:

- ``family="gaussian"`` (continuous variable, standardised with its training mean and sd):
  :math:`y_t = x_t W + b + \varepsilon_t`, :math:`\varepsilon_t \sim N(0, \mathrm{diag}\,\sigma^2)`,
  :math:`W \sim N(0, s^2)` (``prior_scale``), :math:`b \sim N(0, s_b^2)` (``intercept_scale``),
  :math:`\sigma \sim \mathrm{HalfNormal}(1)` (or fixed by ``noise_sd``).
- ``family="bernoulli"`` (two classes): :math:`\mathrm{logit}\,P(y_t = c_1) = x_t w + b`.
- ``family="categorical"``: :math:`P(y_t = c) = \mathrm{softmax}(x_t W + b)_c`, one weight vector
  per class (the symmetric parametrisation, identified by the Normal prior).

With a Normal prior the MAP is ridge regression (gaussian, ``alpha = sigma^2 / s^2`` on the
standardised scale) or L2-penalised logistic regression (``C = s^2``), with an intercept that is
penalised only by its wide prior.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import init_to_value
from scipy import special

from .._pynapple import pynapple_io
from .._shapes import bucket_length, pad_axis, unpad_result
from ..estimator import resolve_key
from ..infer import fit as _infer_fit
from ..infer.fit import _OPTIONS as _METHOD_OPTIONS
from ..infer.fit import METHODS
from ._base import Decoder, attach_index
from ._inputs import as_spike_data, check_neurons, label_array, target_array
from .lags import check_lags, lagged
from .posterior import CategoricalPosterior, GaussianPosterior

__all__ = ["RegressionDecoder", "regression_model", "FAMILIES"]

FAMILIES = ("gaussian", "bernoulli", "categorical")
TRANSFORMS = (None, "sqrt")
_CHUNK_ELEMENTS = 4_000_000  # draws x bins x outputs per block when averaging over draws


def regression_model(
    features,
    target=None,
    *,
    family: str,
    n_out: int,
    prior_scale: float,
    intercept_scale: float,
    noise_sd=None,
    mask=None,
):
    """NumPyro model of the regression decoder (see the module docstring).

    Parameters
    ----------
    features : array, shape (time, feature)
        Standardised lagged features.
    target : array, optional
        ``(time, output)`` standardised values (gaussian), ``(time,)`` 0/1 (bernoulli) or class
        indices (categorical); None to simulate.
    family : {"gaussian", "bernoulli", "categorical"}
    n_out : int
        Outputs (gaussian), 1 (bernoulli) or classes (categorical).
    prior_scale, intercept_scale : float
        Prior sd of the weights and of the intercepts.
    noise_sd : array, shape (output,), optional
        Gaussian only: known noise sd (standardised units); None samples ``sigma``.
    mask : array of bool, shape (time,), optional
        Bins in the likelihood (default all): the fit pads the time axis to a bucket length
        (:func:`bayesneuro._shapes.bucket_length`) and masks the padding out, so a recording of
        another length reuses the compiled programs.
    """
    n_time, n_feat = features.shape
    in_time = numpyro.handlers.mask(mask=True if mask is None else jnp.asarray(mask, bool)[:, None])
    if family != "gaussian":
        in_time = numpyro.handlers.mask(mask=True if mask is None else jnp.asarray(mask, bool))
    if family == "gaussian":
        with numpyro.plate("output", n_out, dim=-1):
            bias = numpyro.sample("bias", dist.Normal(0.0, intercept_scale))
            if noise_sd is None:
                sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
            else:
                sigma = noise_sd
            with numpyro.plate("feature", n_feat, dim=-2):
                weights = numpyro.sample("weights", dist.Normal(0.0, prior_scale))
        mu = features @ weights + bias
        with numpyro.plate("time", n_time, dim=-2), numpyro.plate("output", n_out, dim=-1), in_time:
            numpyro.sample("target", dist.Normal(mu, sigma), obs=target)
    elif family == "bernoulli":
        bias = numpyro.sample("bias", dist.Normal(0.0, intercept_scale))
        with numpyro.plate("feature", n_feat, dim=-1):
            weights = numpyro.sample("weights", dist.Normal(0.0, prior_scale))
        with numpyro.plate("time", n_time, dim=-1), in_time:
            numpyro.sample("target", dist.Bernoulli(logits=features @ weights + bias), obs=target)
    elif family == "categorical":
        with numpyro.plate("class", n_out, dim=-1):
            bias = numpyro.sample("bias", dist.Normal(0.0, intercept_scale))
            with numpyro.plate("feature", n_feat, dim=-2):
                weights = numpyro.sample("weights", dist.Normal(0.0, prior_scale))
        with numpyro.plate("time", n_time, dim=-1), in_time:
            numpyro.sample("target", dist.Categorical(logits=features @ weights + bias), obs=target)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


class RegressionDecoder(Decoder):
    """Bayesian linear / logistic / softmax regression decoder on lagged spike counts.

    Parameters
    ----------
    family : {"gaussian", "bernoulli", "categorical"}, default "gaussian"
        Continuous variable (Gaussian posterior), two classes, or several classes.
    lags : int or sequence of int, default 0
        Lags in bins: the feature of target bin ``t`` at lag ``L`` is the count in bin
        ``t + L`` (positive: spikes after the target bin, e.g. a past stimulus; negative: spikes
        before it, e.g. an upcoming movement). Bins whose window would leave their trial or
        block are not decoded (see :mod:`bayesneuro.decoders.lags`).
    prior_scale : float, default 1.0
        Sd of the Normal prior on each weight (per standardised feature; for gaussian also per
        standardised target unit). For bernoulli/categorical this matches sklearn's
        ``LogisticRegression(C=prior_scale**2)``.
    intercept_scale : float, default 10.0
        Sd of the Normal prior on the intercepts (standardised units; logits). Make it very wide
        (e.g. 1e4) to leave the intercept effectively unpenalised, as sklearn does.
    transform : {None, "sqrt"}, default None
        Transform of the counts before lagging (``"sqrt"`` stabilises Poisson variance).
    standardize : bool, default True
        Centre and scale each feature with its training mean and sd. A feature that never varies
        in training (a silent neuron) gets sd 1, so it is only centred (zero on training data).
    noise_sd : float or sequence of float, optional
        Gaussian only: the known noise sd per target dimension, in target units. None (default)
        learns it with a HalfNormal(1) prior on the standardised scale.

    Attributes
    ----------
    result_ : FitResult
        The fit.
    classes_ : ndarray
        Sorted class labels (bernoulli, categorical).
    lags_ : ndarray of int
    feature_names_ : list of str
        ``"n{neuron}_lag{lag}"`` per feature (lag-major: all neurons at the first lag, then ...).
    feature_mean_, feature_sd_ : ndarray, shape (feature,)
        Training standardisation of the features (zeros and ones when ``standardize=False``).
    target_mean_, target_sd_ : ndarray, shape (output,)
        Gaussian: training standardisation of the target.
    neuron_ids_ : ndarray
    bin_size_ : float
    train_index_ : ndarray of int
        Training bins that had a complete lag window.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders.regression import RegressionDecoder
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=600)
    >>> counts = rng.poisson(np.exp(0.5 + 0.4 * np.outer(x, [1.0, -1.0, 0.5])))
    >>> data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    >>> train, test, _ = data.split(fractions=(0.5, 0.5))
    >>> dec = RegressionDecoder(lags=0).fit(train, "x", method="map", progress=False)
    >>> post = dec.decode(test)
    >>> post.mean.shape, bool(dec.evaluate(test, "x")["r2"][0] > 0.3)
    ((300, 1), True)
    >>> lap = RegressionDecoder(lags=0).fit(train, "x", method="laplace", key=0, progress=False)
    >>> bool(lap.score(test, "x") > -2.0)  # nats/bin
    True
    """

    METHODS = METHODS

    def __init__(
        self,
        family: str = "gaussian",
        lags: Any = 0,
        prior_scale: float = 1.0,
        intercept_scale: float = 10.0,
        transform: str | None = None,
        standardize: bool = True,
        noise_sd: Any = None,
    ):
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be None or 'sqrt', got {transform!r}")
        if noise_sd is not None:
            if family != "gaussian":
                raise ValueError(f"noise_sd is for family='gaussian' only, not {family!r}")
            sd = np.atleast_1d(np.asarray(noise_sd, dtype=np.float64))
            if sd.ndim != 1 or not np.all(np.isfinite(sd)) or np.any(sd <= 0):
                raise ValueError(f"noise_sd must be a positive number or one per target dimension, got {noise_sd!r}")
        check_lags(lags)
        _positive("prior_scale", prior_scale)
        _positive("intercept_scale", intercept_scale)
        self.family = family
        self.lags = lags
        self.prior_scale = prior_scale
        self.intercept_scale = intercept_scale
        self.transform = transform
        self.standardize = standardize
        self.noise_sd = noise_sd

    @property
    def _discrete(self) -> bool:
        return self.family != "gaussian"

    @property
    def _observed_name(self) -> str:
        return "target"

    # ------------------------------------------------------------------ features
    def _raw_features(self, data) -> tuple[np.ndarray, np.ndarray]:
        counts = np.asarray(data.counts, dtype=np.float64)
        if self.transform == "sqrt":
            counts = np.sqrt(counts)
        feats, index = lagged(counts, data.segment_ids, check_lags(self.lags))  # (n_valid, lag, neuron)
        return feats.reshape(feats.shape[0], -1), index

    def _features(self, data) -> tuple[np.ndarray, np.ndarray]:
        """Standardised features ``(n_valid, lag * neuron)`` and the bins they decode."""
        X, index = self._raw_features(data)
        return (X - self.feature_mean_) / self.feature_sd_, index

    # ------------------------------------------------------------------ fitting
    @pynapple_io(target=True)
    def fit(
        self,
        data: Any,
        target: Any,
        *,
        method: str = "map",
        key: Any = None,
        progress: bool | None = None,
        **options: Any,
    ) -> RegressionDecoder:
        """Fit the regression of `target` on the lagged counts of `data`.

        Parameters
        ----------
        data : SpikeData
            Training counts (with trials or blocks: lag windows never cross them).
        target : str, sequence of str or array_like
            Gaussian: covariate name(s) or an array ``(time,)`` / ``(time, dim)``. Bernoulli and
            categorical: one label per bin (covariate name or array of ints or strings).
        method : {"map", "laplace", "svi", "nuts"}, default "map"
            Inference method of :func:`bayesneuro.infer.fit`. ``"map"`` is deterministic (one
            draw: the posterior mode); the others draw random numbers (posterior draws).
        key : jax.random key or int, optional
            Required for ``"laplace"``, ``"svi"`` and ``"nuts"``; the same key gives the same fit.
        progress : bool, optional
            Show progress bars; default from ``BAYESNEURO_PROGRESS`` (on).
        **options
            Options of the method (:func:`bayesneuro.infer.fit`), e.g. ``num_samples``,
            ``num_steps``, ``num_warmup``, ``num_chains``, ``max_iter``, ``tol``. The default start
            (``init_strategy``) is all weights and intercepts at zero and ``sigma`` at 1.

        Returns
        -------
        RegressionDecoder
            Itself, fitted.

        Raises
        ------
        ValueError
            A target with NaN, too few bins for the lags, fewer than two classes (three or more
            for bernoulli), an option the method does not take.
        TypeError
            No `key` for a method that draws random numbers.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        bad = sorted(set(options) - set(_METHOD_OPTIONS[method]))
        if bad:
            raise ValueError(
                f"unknown option(s) {bad} for method={method!r}; it takes {sorted(_METHOD_OPTIONS[method])}"
            )
        rng = resolve_key(key, needed=method != "map", why=f"method={method!r}")
        if rng is None:  # MAP from the zero start draws nothing: any key gives the same fit
            rng = jax.random.key(0)
        lags = check_lags(self.lags)
        data = as_spike_data(data, name="training data")
        X, index = self._raw_features(data)
        if X.shape[0] < 2:
            raise ValueError(
                f"only {X.shape[0]} training bin(s) have a complete lag window for lags"
                f" {lags.tolist()}; use fewer lags or more data"
            )
        if bool(self.standardize):
            mean = X.mean(axis=0)
            sd = X.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)  # constant features: only centred
        else:
            mean, sd = np.zeros(X.shape[1]), np.ones(X.shape[1])
        Z = (X - mean) / sd
        if self.family == "gaussian":
            y, names = target_array(data, target)
            if not np.all(np.isfinite(y)):
                n_bad = int(np.sum(~np.all(np.isfinite(y), axis=1)))
                raise ValueError(f"target has {n_bad} time bins with NaN or inf; drop or interpolate them first")
            y = y[index]
            y_mean = y.mean(axis=0)
            y_sd = y.std(axis=0)
            y_sd = np.where(y_sd > 0, y_sd, 1.0)
            obs = (y - y_mean) / y_sd
            n_out = y.shape[1]
            noise = None
            if self.noise_sd is not None:
                noise = np.broadcast_to(np.atleast_1d(np.asarray(self.noise_sd, dtype=np.float64)), (n_out,)) / y_sd
                noise = np.array(noise)
            self.target_mean_, self.target_sd_, self.target_names_ = y_mean, y_sd, tuple(names)
            out_dim, out_coords = "output", list(names)
        else:
            labels = label_array(data, target)[index]
            classes, obs = np.unique(labels, return_inverse=True)
            if classes.size < 2:
                raise ValueError(
                    f"the training target has a single class {classes.tolist()}; a classifier needs at least two"
                )
            if self.family == "bernoulli" and classes.size != 2:
                raise ValueError(
                    f"family='bernoulli' needs exactly two classes, the training target has {classes.size}"
                    f" ({classes[:5].tolist()}...); use family='categorical'"
                )
            obs = obs.astype(np.int64)
            n_out = 1 if self.family == "bernoulli" else classes.size
            noise = None
            self.classes_ = classes
            out_dim, out_coords = "class", classes
        self.lags_ = lags
        self.neuron_ids_ = np.asarray(data.neuron_ids)
        self.bin_size_ = float(data.bin_size)
        self.feature_mean_, self.feature_sd_ = mean, sd
        self.feature_names_ = [f"n{n}_lag{int(lag)}" for lag in lags for n in self.neuron_ids_.tolist()]
        self.train_index_ = index
        self.n_out_ = n_out

        if "init_strategy" not in options or options["init_strategy"] is None:
            w_shape = (Z.shape[1],) if self.family == "bernoulli" else (Z.shape[1], n_out)
            b_shape = () if self.family == "bernoulli" else (n_out,)
            init = {"weights": jnp.zeros(w_shape), "bias": jnp.zeros(b_shape)}
            if self.family == "gaussian" and noise is None:
                init["sigma"] = jnp.ones(n_out)
            options["init_strategy"] = init_to_value(values=init)
        coords = {"feature": np.asarray(self.feature_names_), "time": data.bin_centers[index]}
        coords[out_dim] = np.asarray(out_coords)
        dims = {"features": ["time", "feature"], "prior_scale": [], "intercept_scale": []}
        if noise is not None:
            dims["noise_sd"] = ["output"]
        model_data = dict(
            features=Z, target=obs, family=self.family, n_out=int(n_out),
            # arrays, not static numbers: refits with other scales reuse the compiled program
            prior_scale=np.asarray(float(self.prior_scale)), intercept_scale=np.asarray(float(self.intercept_scale)),
        )
        if noise is not None:
            model_data["noise_sd"] = noise
        # MAP and Laplace pad the time axis to a bucket length (masked out of the likelihood), so a
        # recording of another length reuses the compiled programs (as PoissonGLM.fit does)
        n_time = Z.shape[0]
        pad = method in ("map", "laplace")
        n_pad = bucket_length(n_time) if pad else n_time
        if pad:  # the mask even when nothing is padded: the programs see one argument structure
            model_data.update(features=pad_axis(Z, n_pad), target=pad_axis(obs, n_pad),
                              mask=pad_axis(np.ones(n_time, bool), n_pad))
            dims["mask"] = ["time"]
            coords["time"] = np.arange(n_pad)  # the fit's own coordinates; the recording's below
        result = _infer_fit(
            regression_model, method=method, key=rng, coords=coords, dims=dims, progress=progress,
            model_kwargs=model_data, **options,
        )
        if pad:  # the result describes the recording's bins, not the padding
            unpad_result(result, n_time, ("features", "target"), coords={"time": data.bin_centers[index]})
        self.result_ = result
        self._train_time = data.bin_centers[index]
        return self

    # ------------------------------------------------------------------ decoding
    def _draws(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Flat draws of weights ``(S, feature, out)``, bias ``(S, out)`` and sigma ``(S, out)``."""
        flat = self.result_.flat_samples()
        W = np.asarray(flat["weights"], dtype=np.float64)
        b = np.asarray(flat["bias"], dtype=np.float64)
        if self.family == "bernoulli":
            W, b = W[..., None], b[..., None]
        sigma = None
        if self.family == "gaussian":
            if "sigma" in flat:
                sigma = np.asarray(flat["sigma"], dtype=np.float64)
            else:
                sigma = np.broadcast_to(
                    np.asarray(self.result_.model_kwargs["noise_sd"], dtype=np.float64), b.shape
                )
        return W, b, sigma

    def _prepare(self, data: Any):
        self._check_fitted()
        data = as_spike_data(data, self.bin_size_)
        if not np.isclose(data.bin_size, self.bin_size_):
            raise ValueError(
                f"data have bins of {data.bin_size} s but the decoder was trained on {self.bin_size_} s bins"
            )
        return check_neurons(data, self.neuron_ids_)

    @pynapple_io()
    def decode(self, data: Any):
        """Posterior predictive of the variable in every bin of `data` with a complete lag window.

        Parameters
        ----------
        data : SpikeData or ndarray
            Counts of the training neurons (any order; other sets raise), same bin size.

        Returns
        -------
        GaussianPosterior or CategoricalPosterior
            Gaussian: mean and covariance of the posterior predictive in target units (the
            mixture over draws: mean of the draws' means; covariance of the draws' means plus the
            mean of ``sigma^2``). Classes: predictive probabilities averaged over draws. Its
            ``index`` lists the decoded bins of `data`.
        """
        data = self._prepare(data)
        Z, index = self._features(data)
        W, b, sigma = self._draws()
        S, n_out = b.shape
        n_time = Z.shape[0]
        step = max(1, _CHUNK_ELEMENTS // max(1, S * n_out))
        time = data.bin_centers[index]
        if self.family == "gaussian":
            W_bar, b_bar = W.mean(axis=0), b.mean(axis=0)
            Wc, bc = W - W_bar, b - b_bar
            mean = Z @ W_bar + b_bar
            cov = np.empty((n_time, n_out, n_out))
            for a in range(0, n_time, step):
                dev = np.einsum("tf,sfk->stk", Z[a : a + step], Wc) + bc[:, None, :]
                cov[a : a + step] = np.einsum("stk,stl->tkl", dev, dev) / S
            cov += np.diag(np.mean(sigma**2, axis=0))[None]
            scale = self.target_sd_
            mean = mean * scale + self.target_mean_
            cov = cov * np.outer(scale, scale)[None]
            post = GaussianPosterior(mean, cov, time, self.target_names_)
        else:
            prob = np.empty((n_time, self.classes_.size))
            for a in range(0, n_time, step):
                logits = np.einsum("tf,sfk->stk", Z[a : a + step], W) + b[:, None, :]
                if self.family == "bernoulli":
                    p1 = np.mean(special.expit(logits[..., 0]), axis=0)
                    prob[a : a + step] = np.stack([1.0 - p1, p1], axis=1)
                else:
                    logits = logits - logits.max(axis=-1, keepdims=True)
                    e = np.exp(logits)
                    prob[a : a + step] = np.mean(e / e.sum(axis=-1, keepdims=True), axis=0)
            post = CategoricalPosterior(prob, self.classes_, time)
        return attach_index(post, index)

    # ------------------------------------------------------------------ summaries
    def coef(self) -> dict[str, np.ndarray]:
        """Point estimates on the standardised scale: ``weights`` ``(feature, out)`` and ``bias``.

        The MAP for ``method="map"``, the posterior mean otherwise (bernoulli: ``(feature,)``
        and a scalar).
        """
        self._check_fitted()
        p = self.result_.params
        return {"weights": np.asarray(p["weights"]), "bias": np.asarray(p["bias"])}

    def to_inference_data(self):
        """InferenceData of the fit: ``weights`` with dims ``(feature, output | class)``.

        ``feature`` coords are ``"n{neuron}_lag{lag}"``; ``time`` the decoded training bins. The
        ``log_likelihood`` group holds one variable, ``target``, with dims
        ``(chain, draw, time)``: the log-likelihood of each training bin's target (in target
        units, summed over outputs) under each posterior draw, so ``az.loo`` runs. MAP is a point
        fit: ``weights`` are in a ``point_estimate`` group (no ``posterior``) and ``target`` has
        dims ``(time,)``.
        """
        import arviz as az
        import xarray as xr

        self._check_fitted()
        idata = self.result_.to_inference_data(log_likelihood=False)
        kw = self.result_.model_kwargs
        W, b, sigma = self._draws()
        ll = self._log_lik_draws(np.asarray(kw["features"], dtype=np.float64), np.asarray(kw["target"]), W, b, sigma)
        n_chain = self.result_.n_chain
        ds = xr.Dataset(
            {"target": (("chain", "draw", "time"), ll.reshape(n_chain, -1, ll.shape[1]))},
            coords={"chain": np.arange(n_chain), "draw": np.arange(ll.shape[0] // n_chain),
                    "time": np.asarray(self._train_time)},
        )
        if self.result_.method == "map":  # a point fit: no chain/draw (point_estimate, no posterior)
            ds = ds.isel(chain=0, draw=0, drop=True)
        groups = {g: idata[g] for g in idata.groups() if g != "log_likelihood"}
        return az.InferenceData(**groups, log_likelihood=ds, warn_on_custom_groups=False)

    # ------------------------------------------------------------------ likelihood
    def _log_lik_draws(self, Z: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, sigma) -> np.ndarray:
        """``(draw, time)`` log-likelihood of the targets `y` given standardised features `Z`.

        `y`: standardised values ``(time, output)`` (gaussian; the result is in target units)
        or class indices ``(time,)``.
        """
        S, n_out = b.shape
        T = Z.shape[0]
        out = np.empty((S, T))
        step = max(1, _CHUNK_ELEMENTS // max(1, T * n_out))
        for a in range(0, S, step):
            eta = np.einsum("tf,sfk->stk", Z, W[a : a + step]) + b[a : a + step, None, :]
            if self.family == "gaussian":
                sig = sigma[a : a + step, None, :]
                z = (y[None] - eta) / sig
                ll = -0.5 * z**2 - np.log(sig) - 0.5 * np.log(2 * np.pi) - np.log(self.target_sd_)
                out[a : a + step] = ll.sum(axis=-1)
            elif self.family == "bernoulli":
                e = eta[..., 0]
                out[a : a + step] = y[None] * e - np.logaddexp(0.0, e)
            else:
                lse = special.logsumexp(eta, axis=-1)
                out[a : a + step] = np.take_along_axis(eta, np.broadcast_to(y[None, :, None], eta.shape[:2] + (1,)),
                                                       axis=-1)[..., 0] - lse
        return out

    def _pointwise_log_likelihood(self, data: Any, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``log p(target_t | lagged counts_t)`` at the point estimate (MAP or posterior mean).

        The regression decoder models the target given the spikes, so its likelihood is the
        decoding model's own: Gaussian (target units, summed over outputs) or the log
        probability of the true class.
        """
        data = self._prepare(data)
        Z, index = self._features(data)
        p = self.result_.params
        W = np.asarray(p["weights"], dtype=np.float64)
        b = np.asarray(p["bias"], dtype=np.float64)
        if self.family == "bernoulli":
            W, b = W[:, None], b[None]
        sigma = None
        if self.family == "gaussian":
            sigma = np.asarray(p["sigma"] if "sigma" in p else self.result_.model_kwargs["noise_sd"], dtype=np.float64)
            sigma = np.broadcast_to(sigma, b.shape)[None]
            y = (np.asarray(truth, dtype=np.float64).reshape(data.n_time, -1)[index] - self.target_mean_) / self.target_sd_
        else:
            y = CategoricalPosterior(np.ones((index.size, self.classes_.size)), self.classes_, index)._index(
                np.asarray(truth)[index])
        return self._log_lik_draws(Z, y, W[None], b[None], sigma)[0], index

    def __repr__(self) -> str:
        result = getattr(self, "result_", None)
        state = "unfitted" if result is None else f"fitted by {result.method}"
        return (
            f"RegressionDecoder(family={self.family!r}, lags={check_lags(self.lags).tolist()}, "
            f"prior_scale={self.prior_scale:g}; {state})"
        )
