r"""Gaussian-process factor analysis (GPFA; Yu et al. 2009): the estimator and its cross-validation.

:class:`GPFA` finds a few smooth latent signals behind trial-structured spike counts: each latent
is an independent Gaussian process over the bins of a trial, with a learnt timescale, read out
linearly. With ``observation="gaussian"`` (the classic model) the square-root counts are a
noisy Gaussian read-out and the fit is exact EM; with ``observation="poisson"`` the counts are
Poisson with a log link and the fit goes through :func:`bayesneuro.infer.fit`.
:func:`choose_n_latents` picks the number of latents by cross-validated leave-neuron-out
prediction.

The maths are pure JAX functions in two modules: :mod:`bayesneuro.latent.gpfa_gaussian`
(kernels, exact posterior, marginal likelihood, EM) and :mod:`bayesneuro.latent.gpfa_poisson`
(Laplace posterior, Laplace-EM); the NumPyro model of Poisson GPFA is
:func:`bayesneuro.latent._gpfa_model.poisson_gpfa_model`.

References
----------
Yu, B. M., Cunningham, J. P., Santhanam, G., Ryu, S. I., Shenoy, K. V. & Sahani, M. (2009).
Gaussian-process factor analysis for low-dimensional single-trial analysis of neural population
activity. *J. Neurophysiol.* 102, 614-635.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from ..estimator import Estimator, resolve_key
from .gpfa_gaussian import (
    GPFAParams,
    _check_kernel,
    _dtype,
    _fa_init,
    _fit_em,
    _left_out,
    _left_out_moments,
    _orthonormalize,
    _posterior,
    _predictive_given,
    _var_floor,
    gpfa_sample,
    segment_trials,
)
from .gpfa_poisson import (
    PoissonGPFAParams,
    _poisson_laplace,
    _poisson_left_out,
    _poisson_rates_given,
    _poisson_sample,
)

__all__ = ["GPFA", "GPFASimulation"]

OBSERVATIONS = {"gaussian": ("em",), "poisson": ("map", "laplace", "svi", "nuts")}  # allowed methods
_GAUSSIAN_OPTIONS = {"max_iter": 500, "tol": 1e-8, "squarem": True}
_START_MAX_ITER = 100  # Poisson: EM steps of the Gaussian GPFA of the square-root counts (the start)


class GPFASimulation(NamedTuple):
    """Draws from a GPFA model (output of :meth:`GPFA.simulate`).

    Attributes
    ----------
    observations : numpy.ndarray
        Shape ``(trial, time, neuron)``, on the model's scale (square-root counts for
        ``count_transform="sqrt"``; integer counts for ``observation="poisson"``).
    latents : numpy.ndarray
        Shape ``(trial, time, latent)``, in the basis of ``loadings_`` (not orthonormalised).
    """

    observations: np.ndarray
    latents: np.ndarray


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class GPFA(Estimator):
    r"""Gaussian-process factor analysis of trial-structured spike counts (Yu et al. 2009).

    Counts are square-root transformed (by default) and modelled as in
    :mod:`~bayesneuro.latent.gpfa_gaussian`: ``n_latents`` independent GP latents with learnt
    timescales, read out linearly with independent Gaussian noise per neuron. Fitting is exact
    EM from a factor-analysis start, with elephant's M-step, variance floor and convergence
    test, on whole trials by default (:func:`elephant.gpfa.gpfa_core.em` on whole trials is the
    same algorithm as this one). Trials may differ in length. With ``segment_length`` the
    parameters are fitted, as elephant's ``GPFA.fit`` does (20-bin segments), on trials cut into
    segments of that many bins (:func:`~bayesneuro.latent.gpfa_gaussian.segment_trials`); the
    latents, log-likelihoods and predictions of every method stay exact on whole trials.

    With ``observation="poisson"`` the counts themselves are modelled,
    ``counts ~ Poisson(dt exp(C x + d))`` (:func:`~bayesneuro.latent._gpfa_model.poisson_gpfa_model`,
    ``d`` in log spikes/s), and fitted through :func:`bayesneuro.infer.fit` by ``"map"``,
    ``"laplace"``, ``"svi"`` or ``"nuts"`` (small problems), started from the Gaussian GPFA of
    the square-root counts refined by Laplace-EM
    (:func:`~bayesneuro.latent.gpfa_poisson.fit_poisson_gpfa_em`). MAP and Laplace learn the
    timescales in that Laplace-EM (empirical Bayes: each maximises the expected GP prior under
    the Laplace posteriors, as in Gaussian GPFA's M-step; the joint mode of paths and timescales
    would not penalise short timescales) and keep them fixed in the final fit of the paths,
    loadings and offsets; SVI and NUTS learn them under a log-normal prior (log-sd 1) with
    median ``init_timescale``. Trials of unequal length are zero-padded and masked in the model,
    and padded to length buckets (padding masked) for the Laplace-EM posteriors of the latents.

    Latents are reported in the orthonormalised basis of Yu et al.: with ``C = U D V^T``,
    ``orthonormal_loadings_ = U`` and latents ``D V^T x``, ordered by the variance they explain
    (each column of ``U`` has its largest entry positive).

    Parameters
    ----------
    n_latents : int
        Number of latents, smaller than the number of neurons.
    kernel : {"se", "matern32", "matern52"}
        GP correlation (``"se"``: squared exponential, elephant's ``'rbf'``).
    observation : {"gaussian", "poisson"}
        ``"gaussian"``: Gaussian noise on the transformed counts, fitted by ``method="em"``;
        ``"poisson"``: Poisson counts with a log link, fitted by ``method`` in
        ``{"map", "laplace", "svi", "nuts"}`` (default ``"map"``).
    count_transform : {"sqrt", None}
        Gaussian only: ``"sqrt"``: model ``sqrt(counts)`` (Yu et al., elephant); None: the
        counts themselves.
    min_var_frac : float, default 0.01
        Floor of each neuron's observation variance, as a fraction of its variance.
    eps : float, default 1e-3
        GP noise variance of each latent (fixed), in ``(0, 1)``.
    learn_timescales : bool, default True
        Learn the timescales (else keep them at ``init_timescale``).
    init_timescale : float, default 0.1
        Initial timescale of every latent, in seconds (elephant's ``tau_init``, 100 ms); the
        median of the timescales' prior for SVI and NUTS.
    segment_length : int, optional
        None (default): fit on whole trials, exact. An integer (elephant's ``GPFA.fit`` uses
        20): fit the Gaussian EM (and the Gaussian start of the Poisson fit) on trials cut into
        segments of that many bins (:func:`~bayesneuro.latent.gpfa_gaussian.segment_trials`;
        trials not longer than a segment are kept whole). All segments share one length, so
        each EM step factorises one ``(latent*segment_length)`` covariance instead of one per
        distinct trial length: much faster on long or ragged trials. It is an approximation
        of the fit: correlations across segment boundaries are ignored and timescales longer
        than a segment are poorly identified (choose a segment several timescales long).
        ``log_likelihood_trace_`` and ``log_likelihood_`` are then the segments'
        log-likelihoods; :meth:`transform`, :meth:`log_likelihood`, :meth:`score` and the
        predictions use whole trials.

    Attributes
    ----------
    params_ : GPFAParams or PoissonGPFAParams
        Fitted parameters in bins (numpy arrays), for the pure functions of
        :mod:`~bayesneuro.latent.gpfa_gaussian` / :mod:`~bayesneuro.latent.gpfa_poisson`.
    loadings_ : numpy.ndarray, shape (neuron, latent)
    offset_, observation_var_ : numpy.ndarray, shape (neuron,)
        Offsets ``d`` and observation variances ``diag(R)`` on the transformed scale (Poisson:
        ``d`` in log spikes/s and ``observation_var_`` None).
    timescales_ : numpy.ndarray, shape (latent,)
        In seconds.
    orthonormal_loadings_ : numpy.ndarray, shape (neuron, latent)
        ``U``, orthonormal columns ordered by variance explained.
    orthonormal_transform_ : numpy.ndarray, shape (latent, latent)
        ``D V^T``: orthonormalised latents are ``orthonormal_transform_ @ x``.
    variance_explained_ : numpy.ndarray, shape (latent,)
        Gaussian: share of the model's total variance ``trace(C C^T + R)`` carried by each
        orthonormal latent, ``D_j^2 / (sum(D^2) + sum(R))`` (descending). Poisson:
        ``D_j^2 / sum(D^2)`` (shares of the latent log-rate variance, summing to 1).
    log_likelihood_trace_ : numpy.ndarray
        Gaussian: log-likelihood of the training data along the fit, never decreasing (entry
        0: the start), after each EM step (plain EM) or at the point accepted in each SQUAREM
        cycle. Poisson: None.
    method_ : str
        The fitting method.
    result_ : bayesneuro.infer.FitResult
        Poisson only: the fit through the shared inference layer.
    squarem_ : bool
        Gaussian: whether EM was accelerated by SQUAREM.
    log_likelihood_ : float
        Gaussian: the log-likelihood of the training data at the fitted parameters.
    n_iter_ : int
        EM steps (E-steps) taken; Poisson: iterations of the final fit.
    laplace_em_trace_ : numpy.ndarray
        Poisson only: the objective of each Laplace-EM sweep of the start
        (:attr:`~bayesneuro.latent.gpfa_poisson.PoissonGPFAEMResult.objective`; with learnt
        timescales under MAP/Laplace up to 100 sweeps, 10 otherwise).
    converged_ : bool
    neuron_ids_ : numpy.ndarray
    bin_size_ : float

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> rng = np.random.default_rng(0)
    >>> rate = 3 + 2 * np.sin(np.linspace(0, 3, 25))[None, :, None] * rng.normal(size=(1, 1, 6))
    >>> data = bn.SpikeData.from_trials(rng.poisson(np.clip(rate, 0.1, None), (8, 25, 6)), bin_size=0.02)
    >>> gpfa = bn.GPFA(2).fit(data, max_iter=50, progress=False)
    >>> latents = gpfa.transform(data)
    >>> latents["mean"].dims, latents["mean"].shape, gpfa.timescales_.shape
    (('time', 'latent'), (200, 2), (2,))
    >>> gpfa.log_likelihood(data).shape, gpfa.score_unit
    ((8,), 'bits/spike')

    Poisson observations, by MAP:

    >>> pois = bn.GPFA(1, observation="poisson").fit(data, method="map", progress=False, max_iter=50)
    >>> pois.transform(data)["sd"].shape, pois.score(data) > -1.0
    ((200, 1), True)
    """

    score_unit = "bits/spike"
    log_likelihood_dim = "trial"

    def __init__(
        self,
        n_latents: int,
        *,
        kernel: str = "se",
        observation: str = "gaussian",
        count_transform: str | None = "sqrt",
        min_var_frac: float = 0.01,
        eps: float = 1e-3,
        learn_timescales: bool = True,
        init_timescale: float = 0.1,
        segment_length: int | None = None,
    ):
        _positive_int(n_latents, "n_latents")
        _check_kernel(kernel)
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {tuple(OBSERVATIONS)}, got {observation!r}")
        if count_transform not in ("sqrt", None):
            raise ValueError(f"count_transform must be 'sqrt' or None, got {count_transform!r}")
        if not 0.0 < min_var_frac < 1.0:
            raise ValueError(f"min_var_frac must be in (0, 1), got {min_var_frac}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if not (math.isfinite(init_timescale) and init_timescale > 0):
            raise ValueError(f"init_timescale must be a positive number of seconds, got {init_timescale!r}")
        self.n_latents = n_latents
        self.kernel = kernel
        self.observation = observation
        self.count_transform = count_transform
        self.min_var_frac = min_var_frac
        self.eps = eps
        self.learn_timescales = learn_timescales
        if segment_length is not None:
            _positive_int(segment_length, "segment_length", minimum=2)
        self.init_timescale = init_timescale
        self.segment_length = segment_length

    # ------------------------------------------------------------------------------------------

    def _observations(self, data) -> tuple[np.ndarray, np.ndarray]:
        """Transformed counts ``(trial, max_time, neuron)`` (zero-padded) and trial lengths."""
        counts, mask = data.to_padded()
        y = counts.astype(np.float64)
        return (np.sqrt(y) if self.count_transform == "sqrt" else y), mask.sum(axis=1)

    @staticmethod
    def _groups(y: np.ndarray, lengths: np.ndarray, trials=None) -> tuple[tuple, list[np.ndarray]]:
        """Trials (positions ``trials``, default all) stacked by length, and their positions."""
        idx_all = np.arange(len(lengths)) if trials is None else np.sort(np.asarray(trials))
        index = [idx_all[lengths[idx_all] == T] for T in np.unique(lengths[idx_all])]
        # numpy, not jnp.asarray of a strided slice: that compiles a copy program per shape
        return tuple(np.ascontiguousarray(y[idx, : lengths[idx[0]]]) for idx in index), index

    def _fit_groups_of(self, y: np.ndarray, lengths: np.ndarray) -> tuple:
        """The groups EM fits on: whole trials by length, or segments (``segment_length``)."""
        if self.segment_length is None:
            return self._groups(y, lengths)[0]
        segs = segment_trials([y[k, : lengths[k]] for k in range(len(lengths))], self.segment_length)
        seg_len = np.array([len(s) for s in segs])
        return tuple(np.stack([segs[k] for k in np.flatnonzero(seg_len == T)]) for T in np.unique(seg_len))

    @staticmethod
    def _constant_neurons(y: np.ndarray, lengths: np.ndarray, trials, neuron_ids) -> list:
        mask = np.arange(y.shape[1])[None, :] < lengths[trials][:, None]
        vals = y[trials][mask]  # (bins, neuron)
        return neuron_ids[np.ptp(vals, axis=0) == 0].tolist()

    def _check_data(self, data, *, fitting: bool) -> None:
        from ..data import SpikeData

        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")
        if not fitting:
            self._check_fitted()
            if data.n_neuron != len(self.neuron_ids_) or not np.array_equal(data.neuron_ids, self.neuron_ids_):
                raise ValueError(
                    f"data must have the neurons of the fit ({len(self.neuron_ids_)} neurons "
                    f"{self.neuron_ids_[:10].tolist()}), got {data.n_neuron}: {data.neuron_ids[:10].tolist()}"
                )
            return
        if self.n_latents >= data.n_neuron:
            raise ValueError(
                f"n_latents={self.n_latents} must be smaller than the number of neurons ({data.n_neuron})"
            )
        counts, mask = data.to_padded()
        lengths = mask.sum(axis=1)
        if self.observation == "poisson":
            silent = data.neuron_ids[counts.sum(axis=(0, 1)) == 0].tolist()
            if silent:
                raise ValueError(
                    f"neurons {silent[:10]}{' ...' if len(silent) > 10 else ''} are silent (no spikes): "
                    "their offsets have no finite MAP; drop them with data.select_neurons(...)"
                )
        short = data.trials[lengths < 2]
        if short.size:
            more = " ..." if short.size > 10 else ""
            raise ValueError(
                f"trials {short[:10].tolist()}{more} have fewer than 2 bins; GPFA learns timescales "
                "from within-trial correlations and needs at least 2 bins per trial (drop those trials)"
            )
        const = self._constant_neurons(counts, lengths, np.arange(len(lengths)), data.neuron_ids)
        if const:
            raise ValueError(
                f"neurons {const[:10]}{' ...' if len(const) > 10 else ''} have zero variance (silent or "
                "constant counts): GPFA cannot model them; drop them with data.select_neurons(...)"
            )

    def _jparams(self) -> GPFAParams:
        return GPFAParams(*(jnp.asarray(x) for x in self.params_))

    def _pparams(self) -> PoissonGPFAParams:
        return PoissonGPFAParams(*(jnp.asarray(x) for x in self.params_))

    def _count_groups(self, data):
        """Counts of each group of equal-length trials: ``[(positions, length, counts (jnp))]``."""
        counts, mask = data.to_padded()
        lengths = mask.sum(axis=1)
        index = [np.flatnonzero(lengths == T) for T in np.unique(lengths)]
        return [(idx, int(lengths[idx[0]]), jnp.asarray(counts[idx, : lengths[idx[0]]], _dtype())) for idx in index]

    # ------------------------------------------------------------------------------------------

    @pynapple_io()
    def fit(self, data, *, method: str | None = None, key: Any = None, progress: bool | None = None,
            **options) -> GPFA:
        """Fit by exact EM (Gaussian) or through :func:`bayesneuro.infer.fit` (Poisson).

        Parameters
        ----------
        data : SpikeData
            Counts with trials (data without trials are one trial); trials may differ in length.
        method : str, optional
            ``observation="gaussian"``: ``"em"`` (the default), exact expectation-maximisation.
            ``observation="poisson"``: ``"map"`` (default), ``"laplace"``, ``"svi"`` or
            ``"nuts"`` (small problems only) on :func:`~bayesneuro.latent._gpfa_model.poisson_gpfa_model`
            (latents, loadings, offsets and, with ``learn_timescales``, timescales), started
            from the Gaussian GPFA of the square-root counts.
        key : jax.random key or int, optional
            Needed only by ``"laplace"``, ``"svi"`` and ``"nuts"`` (they draw); EM and MAP are
            deterministic.
        progress : bool, optional
            tqdm bar over EM iterations (default from ``BAYESNEURO_PROGRESS``).
        **options
            Gaussian EM: ``max_iter`` (default 500), ``tol`` (default 1e-8: stop when one EM
            step changes the log-likelihood by at most ``tol * max(1, |log-likelihood|)``; None
            runs ``max_iter`` steps) and ``squarem`` (True, the default: SQUAREM-accelerated;
            False: plain EM, step for step elephant's); see
            :func:`~bayesneuro.latent.gpfa_gaussian.fit_gpfa_em`.
            Poisson: method options of :func:`bayesneuro.infer.fit` (``max_iter``,
            ``num_steps``, ``num_warmup``, ``num_samples``, ``num_chains``, ...).

        Returns
        -------
        GPFA
            ``self``, fitted.

        Raises
        ------
        ValueError
            If ``n_latents`` is not smaller than the number of neurons, a trial has fewer than
            2 bins, or a neuron has zero variance or (Poisson) no spikes (the message names the
            trials or neurons); for a method the observation model does not have, or an
            unknown option.
        TypeError
            ``key`` missing for a method that draws random numbers.
        """
        from ..infer.fit import progress_default

        allowed = OBSERVATIONS[self.observation]
        method = allowed[0] if method is None else method
        if method not in allowed:
            raise ValueError(f"method must be one of {allowed} for observation={self.observation!r}, got {method!r}")
        key = resolve_key(key, needed=method in ("laplace", "svi", "nuts"), why=f"method={method!r}")
        self._check_data(data, fitting=True)
        progress = progress_default() if progress is None else bool(progress)
        if self.observation == "poisson":
            return self._fit_poisson(data, method, key, progress, options)
        unknown = sorted(set(options) - set(_GAUSSIAN_OPTIONS))
        if unknown:
            raise ValueError(f"unknown options {unknown} for the Gaussian EM fit; it takes {sorted(_GAUSSIAN_OPTIONS)}")
        y, lengths = self._observations(data)
        groups = self._fit_groups_of(y, lengths)
        self.method_ = "em"
        return self._fit_groups(groups, data, progress, **options)

    def _fit_groups(self, groups, data, progress: bool, *, max_iter: int = 500, tol: float | None = 1e-8,
                    squarem: bool = True, warn: bool = True) -> GPFA:
        max_iter = _positive_int(max_iter, "max_iter")
        if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number or None, got {tol!r}")
        bin_size = float(data.bin_size)
        init = _fa_init(groups, self.n_latents, timescale=self.init_timescale / bin_size, eps=self.eps,
                        min_var_frac=self.min_var_frac)
        if not isinstance(squarem, (bool, np.bool_)):
            raise ValueError(f"squarem must be True or False, got {squarem!r}")
        res = _fit_em(init, groups, kernel=self.kernel, max_iter=max_iter, tol=tol,
                      var_floor=_var_floor(groups, self.min_var_frac), learn_timescales=bool(self.learn_timescales),
                      squarem=bool(squarem), progress=progress, warn=warn)
        p = GPFAParams(*(np.asarray(x) for x in res.params))
        U, D, T = _orthonormalize(p.loadings)
        self.params_ = p
        self.loadings_, self.offset_, self.observation_var_ = p.loadings, p.offset, p.observation_var
        self.timescales_ = p.timescales * bin_size
        self.orthonormal_loadings_, self.orthonormal_transform_ = U, T
        self.variance_explained_ = D**2 / (np.sum(D**2) + np.sum(p.observation_var))
        self.log_likelihood_trace_ = res.log_likelihoods
        self.log_likelihood_ = float(res.log_likelihoods[-1])
        self.n_iter_, self.converged_ = res.n_iter, res.converged
        self.squarem_ = bool(squarem)
        self.result_ = None
        self._set_data_info(data)
        return self

    def _set_data_info(self, data) -> None:
        self.neuron_ids_ = np.asarray(data.neuron_ids).copy()
        self.bin_size_ = float(data.bin_size)
        self._train = data  # SpikeData is immutable: the training data of to_inference_data

    def _fit_poisson(self, data, method: str, key, progress: bool, options: dict) -> GPFA:
        from ._gpfa_model import fit_poisson_gpfa

        counts, mask = data.to_padded()
        lengths = mask.sum(axis=1)
        dt = float(data.bin_size)
        start = GPFA(self.n_latents, kernel=self.kernel, count_transform="sqrt", min_var_frac=self.min_var_frac,
                     eps=self.eps, learn_timescales=self.learn_timescales, init_timescale=self.init_timescale,
                     segment_length=self.segment_length)
        groups = start._fit_groups_of(np.sqrt(counts.astype(np.float64)), lengths)
        start._fit_groups(groups, data, False, max_iter=_START_MAX_ITER, warn=False)  # a start: capped
        result, p0, self.laplace_em_trace_ = fit_poisson_gpfa(
            counts, mask, start._jparams(), bin_size=dt, trials=data.trials, neuron_ids=data.neuron_ids,
            kernel=self.kernel, eps=self.eps, learn_timescales=bool(self.learn_timescales),
            init_timescale=self.init_timescale, method=method, key=key, progress=progress, options=options)
        q = self.n_latents
        fixed = None if "timescale_bins" in result.samples else np.asarray(p0.timescales, np.float64)
        m = result.params
        tau = np.asarray(m["timescale_bins"]) if fixed is None else np.asarray(fixed, np.float64)
        p = PoissonGPFAParams(np.asarray(m["loadings"]), np.asarray(m["offset"]), tau, np.full(q, self.eps))
        U, D, Tm = _orthonormalize(p.loadings)
        self.params_ = p
        self.loadings_, self.offset_, self.observation_var_ = p.loadings, p.offset, None
        self.timescales_ = p.timescales * dt
        self.orthonormal_loadings_, self.orthonormal_transform_ = U, Tm
        self.variance_explained_ = D**2 / np.sum(D**2)
        self.result_ = result
        self.method_ = method
        self.log_likelihood_trace_ = None
        self.log_likelihood_ = None
        self.n_iter_ = result.info.get("n_iter")
        self.converged_ = result.info.get("converged")
        self._set_data_info(data)
        return self

    # ------------------------------------------------------------------------------------------

    def _per_group(self, data):
        self._check_data(data, fitting=False)
        y, lengths = self._observations(data)
        groups, index = self._groups(y, lengths)
        return y, lengths, groups, index

    @staticmethod
    def _flat(data, lengths: np.ndarray, padded: np.ndarray) -> np.ndarray:
        """``(trial, max_time, ...)`` -> ``(time, ...)`` in the bin order of ``data``."""
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        seg = data.segment_ids
        return padded[seg, np.arange(data.n_time) - starts[seg]]

    @staticmethod
    def _time_coords(data) -> dict:
        trial = data.trial_ids if data.trial_ids is not None else np.zeros(data.n_time, np.int64)
        return {"time": data.bin_centers, "trial": ("time", np.asarray(trial))}

    @pynapple_io("dataset")
    def transform(self, data, *, orthonormal: bool = True):
        """Posterior mean and standard deviation of the latents at every bin.

        Parameters
        ----------
        data : SpikeData
            Trials of any length (one bin is enough), with the neurons of the fit.
        orthonormal : bool, default True
            Orthonormalised latents (ordered by variance explained); False: the model's basis.

        Returns
        -------
        xarray.Dataset
            ``mean`` and ``sd``, dims ``(time, latent)``, coords ``time`` (bin centres, s),
            ``latent`` and ``trial`` (along ``time``); select a trial with
            ``ds.where(ds.trial == k, drop=True)`` or ``ds.groupby("trial")``.

        Notes
        -----
        Gaussian: the exact posterior. Poisson fitted by MAP or Laplace, or on data other than
        the training data: the Laplace posterior of the latents at the fitted parameters
        (:func:`~bayesneuro.latent.gpfa_poisson.poisson_gpfa_posterior`). Poisson fitted by SVI
        or NUTS, on the training data: mean and sd of the posterior draws of the latents (each
        draw mapped by the orthonormalising transform of the fitted loadings).
        """
        import xarray as xr

        _, lengths, groups, index = self._per_group(data)
        q = self.n_latents
        Tm = self.orthonormal_transform_ if orthonormal else np.eye(q)
        mean = np.zeros((len(lengths), int(lengths.max()), q))
        sd = np.zeros_like(mean)
        if self.observation == "poisson":
            train = self._train
            from_draws = (self.method_ in ("svi", "nuts") and data.counts.shape == train.counts.shape
                          and np.array_equal(data.counts, train.counts)
                          and np.array_equal(data.segment_ids, train.segment_ids))
            if from_draws:
                x = self.result_.flat_samples()["latents"] @ Tm.T  # (draw, trial, time, latent)
                mean, sd = x.mean(axis=0), x.std(axis=0)
            else:
                params, w = self._pparams(), jnp.ones(len(self.neuron_ids_))
                for idx, T, c in self._count_groups(data):
                    post = _poisson_laplace(params, c, w, self.bin_size_, self.kernel)
                    mean[idx, :T] = np.asarray(post.mean) @ Tm.T
                    V = np.einsum("ritjt->rtij", np.asarray(post.cov))
                    sd[idx, :T] = np.sqrt(np.einsum("ai,rtij,aj->rta", Tm, V, Tm))
        else:
            params = self._jparams()
            for g, idx in zip(groups, index):
                post = _posterior(params, g, self.kernel)
                T = g.shape[1]
                mean[idx, :T] = np.asarray(post.mean) @ Tm.T
                V = np.einsum("itjt->tij", np.asarray(post.cov))
                sd[idx, :T] = np.sqrt(np.einsum("ai,tij,aj->ta", Tm, V, Tm))[None]
        dims = ("time", "latent")
        return xr.Dataset(
            {"mean": (dims, self._flat(data, lengths, mean)), "sd": (dims, self._flat(data, lengths, sd))},
            coords={**self._time_coords(data), "latent": np.arange(q)},
            attrs={"orthonormal": int(bool(orthonormal)), "count_transform": str(self.count_transform),
                   "observation": self.observation, "method": self.method_},
        )

    @pynapple_io()
    def log_likelihood(self, data) -> np.ndarray:
        """Marginal log-likelihood of each trial under the fitted model, in nats, ``(trial,)``.

        The latents are integrated out: exactly for ``observation="gaussian"`` (the density of
        the transformed values, without the Jacobian of the square root, so not comparable with
        a model of the counts), by the Laplace approximation of ``log p(counts)`` at the fitted
        parameters for ``observation="poisson"``. ``.sum()`` is the total.

        Parameters
        ----------
        data : SpikeData

        Returns
        -------
        numpy.ndarray, shape (trial,)
        """
        _, lengths, groups, index = self._per_group(data)
        out = np.zeros(len(lengths))
        if self.observation == "poisson":
            w = jnp.ones(len(self.neuron_ids_))
            for idx, _, c in self._count_groups(data):
                out[idx] = np.asarray(_poisson_laplace(self._pparams(), c, w, self.bin_size_, self.kernel).log_marginal)
            return out
        params = self._jparams()
        for g, idx in zip(groups, index):
            out[idx] = np.asarray(_posterior(params, g, self.kernel).log_likelihood)
        return out

    @pynapple_io()
    def predict_left_out(self, data):
        """Leave-neuron-out prediction (Yu et al. 2009): each neuron from all the others.

        For every neuron ``k``, ``C_k E[x | y_{-k}] + d_k`` on the transformed scale, with the
        posterior of the full model given the other neurons of the same trial. For
        ``observation="poisson"``: rates in spikes/s, ``E[exp(C_k x + d_k)]`` under the Laplace
        posterior of the latents given the other neurons, at the fitted parameters.

        Returns
        -------
        xarray.DataArray
            Dims ``(time, neuron)``, coords as :meth:`transform`.
        """
        import xarray as xr

        y, lengths, groups, index = self._per_group(data)
        pred = np.zeros_like(y)
        if self.observation == "poisson":
            for idx, T, c in self._count_groups(data):
                pred[idx, :T] = np.asarray(_poisson_left_out(self._pparams(), c, self.bin_size_, self.kernel))
        else:
            for g, idx in zip(groups, index):
                pred[idx, : g.shape[1]] = np.asarray(_left_out(self._jparams(), g, self.kernel))
        return xr.DataArray(self._flat(data, lengths, pred), dims=("time", "neuron"),
                            coords={**self._time_coords(data), "neuron": self.neuron_ids_},
                            name="left_out_prediction")

    def _neuron_weight(self, ids, what: str) -> np.ndarray:
        """0/1 weights over the fitted neurons, 1 for the neurons named by ``ids``."""
        wanted = np.atleast_1d(np.asarray(ids))
        where = {v: i for i, v in enumerate(self.neuron_ids_.tolist())}
        missing = [v for v in wanted.tolist() if v not in where]
        if missing:
            raise ValueError(f"{what} {missing} are not neurons of the fit (ids {self.neuron_ids_.tolist()})")
        idx = [where[v] for v in wanted.tolist()]
        if len(set(idx)) != len(idx) or not idx:
            raise ValueError(f"{what} must name distinct neurons, at least one")
        w = np.zeros(len(self.neuron_ids_))
        w[idx] = 1.0
        return w

    def _rates_from_moments(self, mean, var, bin_size: float) -> np.ndarray:
        """Expected counts per second from the Gaussian predictive moments on the model's scale."""
        if self.count_transform == "sqrt":  # count = y^2: E[y^2] = m^2 + v
            expected = mean**2 + var
        else:  # the counts themselves; a negative predicted mean is floored (Poisson needs > 0)
            expected = np.maximum(mean, 1e-6)
        return expected / bin_size

    @pynapple_io("tsdframe")
    def predict_rate(self, data, *, observed_neurons: Any = None) -> np.ndarray:
        """Predicted rates in spikes/s, ``(time, neuron)``, of every fitted neuron.

        The latents are inferred from the ``observed_neurons`` only (default: all), so the
        other neurons' rates are predicted from their peers (co-smoothing).
        ``observation="poisson"``: ``E[exp(C x + d)]`` under the Laplace posterior.
        Gaussian on square-root counts: the model's predictive mean of the count
        ``E[y^2] = m^2 + v`` (``m``, ``v``: predictive mean and variance of ``y``, latent
        uncertainty and noise included); untransformed: ``max(m, 1e-6)``, per bin.

        Parameters
        ----------
        data : SpikeData
            Trials with the fitted neurons.
        observed_neurons : sequence of neuron ids, optional
            The neurons the latents are inferred from.

        Returns
        -------
        numpy.ndarray, shape (time, neuron)
        """
        self._check_data(data, fitting=False)
        w = (np.ones(len(self.neuron_ids_)) if observed_neurons is None
             else self._neuron_weight(observed_neurons, "observed_neurons"))
        y, lengths, groups, index = self._per_group(data)
        out = np.zeros_like(y)
        if self.observation == "poisson":
            for idx, T, c in self._count_groups(data):
                out[idx, :T] = np.asarray(_poisson_rates_given(self._pparams(), c, self.bin_size_, self.kernel,
                                                               jnp.asarray(w, _dtype())))
        else:
            for g, idx in zip(groups, index):
                m, v = _predictive_given(self._jparams(), g, self.kernel, jnp.asarray(w, g.dtype))
                out[idx, : g.shape[1]] = self._rates_from_moments(np.asarray(m), np.asarray(v)[None], data.bin_size)
        return self._flat(data, lengths, out)

    def _left_out_rates(self, data) -> np.ndarray:
        """Leave-one-neuron-out rates (spikes/s), ``(time, neuron)``: each neuron from all others."""
        if self.observation == "poisson":
            return self.predict_left_out(data).values
        y, lengths, groups, index = self._per_group(data)
        out = np.zeros_like(y)
        for g, idx in zip(groups, index):
            m, v = _left_out_moments(self._jparams(), g, self.kernel)
            out[idx, : g.shape[1]] = self._rates_from_moments(np.asarray(m), np.asarray(v)[None], data.bin_size)
        return self._flat(data, lengths, out)

    def _cosmoothing(self, data, held_out_neurons):
        """Counts and predicted rates (spikes/s) of the held-out neurons, each ``(time, held)``."""
        self._check_data(data, fitting=False)
        if held_out_neurons is None:
            if data.n_neuron < 2:
                raise ValueError("leave-one-neuron-out co-smoothing needs at least 2 neurons")
            held = np.arange(data.n_neuron)
            rates = self._left_out_rates(data)
        else:
            w_held = self._neuron_weight(held_out_neurons, "held_out_neurons")
            if w_held.all():
                raise ValueError("held_out_neurons names every neuron; keep some to infer the latents from")
            held = np.flatnonzero(w_held)
            rates = self.predict_rate(data, observed_neurons=self.neuron_ids_[w_held == 0])
        return data.counts[:, held], rates[:, held]

    @pynapple_io()
    def score(self, data, *, held_out_neurons: Any = None) -> float:
        """Co-smoothing score of held-out neurons, in bits/spike (Neural Latents Benchmark).

        The latents are inferred from the held-in neurons only, the held-out neurons' rates
        predicted from them (:meth:`predict_rate`) and scored by
        :func:`~bayesneuro.latent.plds.cosmoothing_bits_per_spike` against their mean rate in
        ``data``: 0 is no better than a constant rate, higher is better. Score held-out
        trials. The same number for every observation model and for
        :meth:`bayesneuro.PoissonLDS.score`, so fits compare directly. Per-neuron scores and
        Yu et al.'s squared error are in :meth:`evaluate`.

        Parameters
        ----------
        data : SpikeData
            Held-out trials with every fitted neuron (held-out counts are only scored).
        held_out_neurons : sequence of neuron ids, optional
            The neurons to predict, all from the rest at once. Default: every neuron in turn,
            each from all the others (leave-one-neuron-out).

        Returns
        -------
        float
            Bits per spike.
        """
        from .plds import cosmoothing_bits_per_spike

        return float(cosmoothing_bits_per_spike(*self._cosmoothing(data, held_out_neurons), data.bin_size))

    @pynapple_io()
    def evaluate(self, data, *, held_out_neurons: Any = None) -> dict:
        """Every metric of the fit on ``data``.

        Parameters
        ----------
        data : SpikeData
        held_out_neurons : sequence of neuron ids, optional
            As in :meth:`score`.

        Returns
        -------
        dict
            ``bits_per_spike`` (:meth:`score`), ``bits_per_spike_per_neuron`` (one value per
            held-out neuron, NaN for one without spikes), ``log_likelihood`` (total, nats, of
            :meth:`log_likelihood`) and, for ``observation="gaussian"``,
            ``leave_neuron_out_error`` (:meth:`leave_neuron_out_error`).
        """
        from .plds import cosmoothing_bits_per_spike

        counts, rates = self._cosmoothing(data, held_out_neurons)
        out = {"bits_per_spike": float(cosmoothing_bits_per_spike(counts, rates, data.bin_size)),
               "bits_per_spike_per_neuron": np.asarray(cosmoothing_bits_per_spike(counts, rates, data.bin_size,
                                                                                  per_neuron=True)),
               "log_likelihood": float(self.log_likelihood(data).sum())}
        if self.observation == "gaussian":
            out["leave_neuron_out_error"] = self.leave_neuron_out_error(data)
        return out

    def leave_neuron_out_error(self, data, *, per_neuron: bool = False):
        """Leave-neuron-out squared prediction error on the transformed scale (lower is better).

        ``sum_{t, k} (y_tk - C_k E[x_t | y_{-k}] - d_k)^2`` (Yu et al. 2009's cross-validated
        criterion, used by :func:`choose_n_latents`); Gaussian observation only. Score
        held-out trials.

        Parameters
        ----------
        data : SpikeData
        per_neuron : bool
            Return the error of each neuron, ``(neuron,)``.
        """
        if self.observation != "gaussian":
            raise ValueError("leave_neuron_out_error is defined for observation='gaussian'; use score (bits/spike)")
        y, lengths = self._observations(data)
        err = (self.predict_left_out(data).values - self._flat(data, lengths, y)) ** 2
        return err.sum(axis=0) if per_neuron else float(err.sum())

    def simulate(self, n_trials: int, n_time: int, *, key: Any) -> GPFASimulation:
        """Draw trials from the fitted model.

        Gaussian: draws are on the model's scale (square-root counts for
        ``count_transform="sqrt"``), so not counts; refit them with
        :func:`~bayesneuro.latent.gpfa_gaussian.fit_gpfa_em`. Poisson: integer counts.

        Parameters
        ----------
        n_trials, n_time : int
        key : jax.random key or int
            Required.

        Returns
        -------
        GPFASimulation
            ``observations (trial, time, neuron)`` and ``latents (trial, time, latent)``.
        """
        self._check_fitted()
        key = resolve_key(key, needed=True, why="simulate")
        if self.observation == "poisson":
            n_trials, n_time = _positive_int(n_trials, "n_trials"), _positive_int(n_time, "n_time")
            x, y = _poisson_sample(key, self._pparams(), n_trials, n_time, self.kernel, self.bin_size_)
            return GPFASimulation(np.asarray(y).astype(np.int64), np.asarray(x))
        x, y = gpfa_sample(key, self.params_, n_trials, n_time, kernel=self.kernel)
        return GPFASimulation(np.asarray(y), np.asarray(x))

    def summary_statistics(self) -> dict:
        """Basis-invariant summaries of the fit (what :func:`~bayesneuro.density.compare_states` compares).

        Returns
        -------
        dict of xarray.DataArray
            ``timescale`` (s, ascending) and ``variance_explained`` (descending), dim ``latent``
            (rank order: the latents themselves are identified only up to order and sign).
        """
        import xarray as xr

        self._check_fitted()
        rank = {"latent": np.arange(self.n_latents)}
        return {"timescale": xr.DataArray(np.sort(np.asarray(self.timescales_)), dims="latent", coords=rank),
                "variance_explained": xr.DataArray(np.sort(np.asarray(self.variance_explained_))[::-1],
                                                   dims="latent", coords=rank)}

    def _draw_log_likelihood(self) -> np.ndarray:
        """Per-trial Laplace ``log p(counts)`` of the training data at each draw, ``(chain, draw, trial)``."""
        s = self.result_.samples
        nc, nd = self.result_.n_chain, self.result_.n_draw
        tau = (s["timescale_bins"].reshape(nc * nd, -1) if "timescale_bins" in s
               else np.broadcast_to(self.params_.timescales, (nc * nd, self.n_latents)))
        draws = PoissonGPFAParams(jnp.asarray(s["loadings"].reshape(nc * nd, *self.loadings_.shape)),
                                  jnp.asarray(s["offset"].reshape(nc * nd, -1)), jnp.asarray(tau),
                                  jnp.full((nc * nd, self.n_latents), self.eps))
        out = np.zeros((nc * nd, self._train.n_trial))
        w = jnp.ones(len(self.neuron_ids_))
        for idx, _, c in self._count_groups(self._train):
            one = jit(jax.vmap(lambda p, c=c: _poisson_laplace(p, c, w, self.bin_size_, self.kernel).log_marginal))
            for a in range(0, nc * nd, 64):  # draws in chunks: memory of 64 Laplace posteriors
                chunk = jax.tree.map(lambda x, a=a: x[a:a + 64], draws)
                out[a:a + 64, idx] = np.asarray(one(chunk))
        return out.reshape(nc, nd, -1)

    def to_inference_data(self):
        """The fit as ``arviz.InferenceData``, with a per-trial ``log_likelihood`` group.

        The ``log_likelihood`` group holds one variable, dims ``(chain, draw, trial)`` for a fit
        with draws (``(trial,)`` for the Gaussian EM fit, a point estimate): the
        marginal log-likelihood of each training trial (latents integrated out, as
        :meth:`log_likelihood`), so ``az.loo`` / ``az.compare`` rank models of the same trials.
        Gaussian: the variable is ``sqrt_counts`` (``count_transform="sqrt"``, a density of the
        square-root counts: compare only with models of the same transformed values) or
        ``counts``; Poisson: ``counts``, the Laplace ``log p(counts)`` at each draw of the
        parameters (MAP, a point fit: at the estimate, dims ``(trial,)``, the estimate in a
        ``point_estimate`` group, no ``posterior``), comparable with :class:`~bayesneuro.PoissonLDS`.

        Gaussian (a point fit by EM): no ``posterior``; a ``point_estimate`` group
        (:func:`bayesneuro.infer.convert.point_inference_data`: no ``chain``/``draw``) holds
        ``loadings`` and ``orthonormal_loadings`` ``(neuron, latent)``, ``offset`` and
        ``observation_var`` ``(neuron,)``, ``timescales`` (s) and ``variance_explained``
        ``(latent,)``, with ``attrs["method"] = "em"`` and the settings; ``fit_stats`` holds
        ``log_likelihood_trace`` ``(em_iteration,)``; the ``log_likelihood`` variable has dims
        ``(trial,)`` only. Poisson: the fit's draws
        (:meth:`bayesneuro.infer.FitResult.to_inference_data`), dims ``trial``, ``time`` (bin
        centres within a trial, s), ``latent`` and ``neuron`` (sites ``loadings``, ``offset``,
        ``timescale_bins``/``timescale``, ``z``, ``latents``), with ``observed_data``.
        """
        import arviz as az
        import xarray as xr

        from ..infer.convert import point_inference_data

        self._check_fitted()
        trials = self._train.trials
        if self.observation == "poisson":
            base = self.result_.to_inference_data()
            groups = {g: base[g] for g in base.groups() if g != "log_likelihood"}
            ll = self._draw_log_likelihood() if self.result_.n_chain * self.result_.n_draw > 1 \
                else self.log_likelihood(self._train)[None, None]
            lik = xr.Dataset({"counts": (("chain", "draw", "trial"), ll)},
                             coords={"chain": np.arange(ll.shape[0]), "draw": np.arange(ll.shape[1]),
                                     "trial": trials})
            if self.result_.method == "map":  # a point fit: point_estimate, no chain/draw
                lik = lik.isel(chain=0, draw=0, drop=True)
            return az.InferenceData(**groups, log_likelihood=lik, warn_on_custom_groups=False)
        q = self.n_latents
        post = {"loadings": self.loadings_, "orthonormal_loadings": self.orthonormal_loadings_,
                "offset": self.offset_, "observation_var": self.observation_var_, "timescales": self.timescales_,
                "variance_explained": self.variance_explained_}
        name = "sqrt_counts" if self.count_transform == "sqrt" else "counts"
        dims = {"loadings": ["neuron", "latent"], "orthonormal_loadings": ["neuron", "latent"],
                "offset": ["neuron"], "observation_var": ["neuron"], "timescales": ["latent"],
                "variance_explained": ["latent"], "log_likelihood_trace": ["em_iteration"], name: ["trial"]}
        trace = np.asarray(self.log_likelihood_trace_, float)
        attrs = {"model": "GPFA", "kernel": self.kernel, "eps": self.eps,
                 "count_transform": str(self.count_transform), "bin_size": self.bin_size_,
                 "n_iter": int(self.n_iter_), "converged": int(self.converged_)}
        fit_stats = xr.Dataset({"log_likelihood_trace": (("em_iteration",), trace)},
                               coords={"em_iteration": np.arange(len(trace))}, attrs={"method": "em"})
        return point_inference_data(
            {k: (dims[k], np.asarray(v)) for k, v in post.items()}, method="em", attrs=attrs,
            coords={"neuron": self.neuron_ids_, "latent": np.arange(q)},
            log_likelihood={name: (("trial",), self.log_likelihood(self._train))},
            log_likelihood_coords={"trial": trials}, groups={"fit_stats": fit_stats},
        )

    def __repr__(self) -> str:
        base = super().__repr__()
        if not self.is_fitted:
            return base
        state = f"fitted by {self.method_}" if self.observation == "poisson" else f"fitted, {self.n_iter_} EM iterations"
        return f"{base[:-1]}; {state})"
