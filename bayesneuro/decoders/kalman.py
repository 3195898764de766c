r"""Kalman-filter decoding of a continuous variable (Wu, Gao, Bienenstock, Donoghue & Black 2006).

The decoded variable (the *state*, e.g. hand position and velocity, dimension :math:`d`) follows
a linear-Gaussian autoregression, and the population features of bin :math:`t` are a noisy
linear function of it:

.. math::

    s_t &= A s_{t-1} + b + w_t, \quad w_t \sim \mathcal{N}(0, W), \\
    z_t &= H s_t + c + q_t, \quad q_t \sim \mathcal{N}(0, Q),

with a full :math:`Q`. The features :math:`z_t` are the spike counts of every neuron at each lag
of :func:`~bayesneuro.decoders.lags.lagged` (optionally square-root transformed), flattened to
``lag * neuron`` numbers. All parameters are fitted in closed form by least squares on the
training pairs: :math:`(A, b, W)` from consecutive target bins *within* a trial or block, and
:math:`(H, c, Q)` from (target, features) pairs. Decoding runs the existing filter and RTS
smoother of :mod:`bayesneuro.latent.kalman` separately on every segment of the data, each one
starting from the marginal moments of the training target.

References
----------
Wu, W., Gao, Y., Bienenstock, E., Donoghue, J. P. & Black, M. J. (2006). Bayesian population
decoding of motor cortical activity using a Kalman filter. *Neural Computation* 18, 80-118.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from .._shapes import bucket_length
from ..estimator import resolve_key
from ..latent.kalman import kalman_filter, kalman_smoother, make_lds_params
from ._base import Decoder, attach_index
from ._inputs import as_spike_data, check_neurons, check_spiking, target_array
from .lags import check_lags, lagged
from .posterior import GaussianPosterior

__all__ = ["KalmanDecoder", "calibrate_temperature", "fit_linear_dynamics", "fit_linear_observation"]


def _float_dtype():
    return jnp.zeros(()).dtype


def _jitter(M: np.ndarray, ridge: float, dtype) -> np.ndarray:
    """Symmetrise and add ``max(ridge, 10 eps) * mean(diag)`` to the diagonal (positive definite)."""
    M = 0.5 * (M + M.T)
    scale = float(np.mean(np.diag(M))) if M.size else 1.0
    scale = scale if scale > 0 else 1.0
    eps = max(float(ridge), 10.0 * float(np.finfo(dtype).eps))
    return M + eps * scale * np.eye(M.shape[0])


def _ls(X: np.ndarray, Y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares ``Y ≈ X B' + c`` with a relative ridge on ``B``; returns ``B, c, residual cov``."""
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    n = X.shape[0]
    Sxx = Xc.T @ Xc / n
    Syx = Yc.T @ Xc / n
    lam = float(ridge) * max(float(np.trace(Sxx)) / Sxx.shape[0], np.finfo(np.float64).tiny)
    B = np.linalg.solve(Sxx + lam * np.eye(Sxx.shape[0]), Syx.T).T
    c = my - B @ mx
    R = Yc - Xc @ B.T
    return B, c, R.T @ R / n


def fit_linear_dynamics(
    values: Any, segment_ids: Any, ridge: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Least-squares AR(1) fit ``s_t = A s_{t-1} + b + w`` from pairs of bins within segments.

    Parameters
    ----------
    values : array_like, shape (time, dim)
        The state (decoded variable) in every bin.
    segment_ids : array_like, shape (time,)
        Trial or block of each bin; pairs across a change of segment are not used.
    ridge : float
        Relative ridge on ``A`` (times the mean variance of ``s_{t-1}``).

    Returns
    -------
    A : ndarray, shape (dim, dim)
    b : ndarray, shape (dim,)
    W : ndarray, shape (dim, dim)
        Residual covariance (maximum-likelihood, divided by the number of pairs).
    n_pairs : int

    Raises
    ------
    ValueError
        With fewer than ``dim + 2`` consecutive pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.kalman import fit_linear_dynamics
    >>> s = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    >>> A, b, W, n = fit_linear_dynamics(s, np.array([0, 0, 0, 1, 1, 1]))
    >>> np.round(A, 3).tolist(), np.round(b, 3).tolist(), n
    ([[1.0]], [1.0], 4)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    seg = np.asarray(segment_ids)
    same = seg[1:] == seg[:-1]
    n_pairs = int(same.sum())
    d = v.shape[1]
    if n_pairs < d + 2:
        raise ValueError(
            f"too few consecutive bins within trials/blocks to fit the state dynamics: {n_pairs} pairs"
            f" for a {d}-D target (need at least {d + 2}); give longer recordings or trials"
        )
    A, b, W = _ls(v[:-1][same], v[1:][same], ridge)
    return A, b, W, n_pairs


def fit_linear_observation(states: Any, features: Any, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares observation model ``z = H s + c + q`` and the residual covariance ``Q``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.kalman import fit_linear_observation
    >>> s = np.arange(5.0)[:, None]
    >>> H, c, Q = fit_linear_observation(s, np.c_[2 * s + 1, -s], ridge=0.0)
    >>> np.round(H, 6).ravel().tolist(), np.round(c, 6).tolist()
    ([2.0, -1.0], [1.0, 0.0])
    """
    return _ls(np.asarray(states, dtype=np.float64), np.asarray(features, dtype=np.float64), ridge)


def _segments(seg: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each contiguous run of equal labels."""
    if seg.size == 0:
        return []
    cuts = np.flatnonzero(seg[1:] != seg[:-1]) + 1
    bounds = np.r_[0, cuts, seg.size]
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _padded_length(n: int) -> int:
    """The bucket of ``n`` bins (:func:`bayesneuro._shapes.bucket_length`, at most 25% padding):
    segments and recordings of similar length share one compiled filter."""
    return bucket_length(n)


#: Candidate temperatures of ``temperature="auto"``: 1 to 10^4, 33 values evenly spaced in log
#: (ratio 1.33). The top is large because a misspecified model (the linear Kalman decoder on place
#: cells) needs the spikes almost ignored before its regions reach 90%.
TEMPERATURES = np.geomspace(1.0, 1e4, 33)
#: Inner contiguous folds of the nested calibration.
CALIBRATION_FOLDS = 3


def check_temperature(temperature: Any) -> Any:
    """``"auto"`` or a finite number >= 1; anything else raises a ValueError naming it."""
    if isinstance(temperature, str):
        if temperature == "auto":
            return temperature
    elif not isinstance(temperature, bool):
        try:
            t = float(temperature)
        except (TypeError, ValueError):
            t = np.nan
        if np.isfinite(t) and t >= 1.0:
            return t
    raise ValueError(
        f"temperature must be 'auto' or a finite number >= 1 (the likelihood is raised to 1/temperature),"
        f" got {temperature!r}"
    )


def check_tempering(tempering: Any) -> str:
    """``"likelihood"`` or ``"covariance"``; anything else raises a ValueError naming it."""
    if tempering not in ("likelihood", "covariance"):
        raise ValueError(f"tempering must be 'likelihood' or 'covariance', got {tempering!r}")
    return tempering


def check_finite_posterior(mean: np.ndarray, cov: np.ndarray, who: str) -> None:
    """Raise a FloatingPointError naming the bins whose posterior mean or covariance is not finite."""
    bad = ~(np.isfinite(mean).all(axis=1) & np.isfinite(cov).reshape(cov.shape[0], -1).all(axis=1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise FloatingPointError(
            f"{who} produced a non-finite posterior in {int(bad.sum())} of {bad.size} decoded bins (first: bin"
            f" {first}); the fitted parameters or the counts hold NaN/inf or overflowed. Check the fit"
            " (converged_, the fitted parameters) and the counts."
        )


def inner_folds(data: Any, n_folds: int, gap: int) -> list[tuple[Any, Any]]:
    """Contiguous (train, test) blocks of `data` for the nested calibration.

    Like :func:`bayesneuro.decoders.evaluation.kfold` by time, but `data` may already hold
    segments (trials, or the pieces of an outer training set): every segment keeps its own
    label, a segment cut by a test block becomes two, and `gap` bins are dropped on the training
    side of each boundary with the test block.
    """
    n = data.n_time
    seg = np.asarray(data.segment_ids)
    bounds = np.round(np.linspace(0, n, n_folds + 1)).astype(int)
    if np.any(np.diff(bounds) <= 2 * gap + 2):
        raise ValueError(
            f"too few training bins ({n}) for the nested temperature calibration ({n_folds} inner folds with"
            f" gap={gap}); pass a fixed temperature (e.g. temperature=1.0)"
        )
    out = []
    for a, b in itertools.pairwise(bounds):
        idx = np.r_[np.arange(0, max(a - gap, 0)), np.arange(min(b + gap, n), n)]
        side = (idx >= b).astype(np.int64)
        labels = np.unique(np.stack([seg[idx], side], axis=1), axis=0, return_inverse=True)[1].ravel()
        test = np.arange(a, b)
        out.append((data._take(idx, trial_ids=labels),
                    data._take(test, trial_ids=np.unique(seg[test], return_inverse=True)[1].ravel())))
    return out


def calibrate_temperature(decoder: Any, data: Any, values: np.ndarray, *, gap: int,
                          n_folds: int = CALIBRATION_FOLDS, temperatures: Any = TEMPERATURES) -> tuple[float, dict]:
    """Choose a decoder's likelihood temperature by nested cross-validation inside `data`.

    `data` (the training data only) is cut into `n_folds` contiguous blocks (:func:`inner_folds`,
    `gap` bins dropped on the training side of every boundary); for each block a clone of
    `decoder` with ``temperature=1`` is fitted on the rest (without the neurons that are silent
    there) and decodes the block at candidate temperatures. The chosen temperature is the smallest candidate whose 90% credible regions,
    pooled over the inner blocks, reach 0.9 coverage (or the candidate just below it, if that
    one is closer to 0.9). Not the candidate closest to 0.9 anywhere: coverage is not monotone
    in the temperature, and an almost flat posterior (the prior, ``T -> inf``) covers 90% too
    while saying nothing. The candidates are searched by doubling the index from ``T = 1`` until
    the coverage reaches 0.9, then by bisection, so only about ``2 log2(K)`` of the ``K``
    candidates are decoded (with ``tempering="covariance"`` one decode per inner fold gives them
    all, and the whole table is recorded). The inner held-out log score of the truth is recorded with the
    coverage.

    Returns
    -------
    temperature : float
    record : dict
        ``criterion`` ("coverage_90"), ``temperatures`` (K,), ``coverage_90`` and ``log_score``
        (n_folds, K: inner held-out 90% coverage and mean log density of the truth, nats/bin;
        NaN for candidates the search did not decode), ``n_bins`` (n_folds,), ``n_folds``,
        ``gap``, ``chosen``.

    Warns
    -----
    RuntimeWarning
        When no candidate brings the inner coverage to 0.85: the model cannot be calibrated by
        tempering on this data.
    """
    import warnings

    from ..estimator import clone
    from .evaluation import _names

    temps = np.asarray(temperatures, dtype=np.float64)
    names = _names(values)
    folds = inner_folds(data.with_covariates(values, names), n_folds, gap)
    inner = []
    for tr, te in folds:
        active = np.asarray(tr.counts).sum(axis=0) > 0
        if not active.all():  # a neuron silent in an inner training set is left out of that inner fold
            tr, te = tr.select_neurons(tr.neuron_ids[active]), te.select_neurons(te.neuron_ids[active])
        dec = clone(decoder).set_params(temperature=1.0)
        with warnings.catch_warnings():
            # an inner fold may miss a neuron or a region: the outer fit reports such problems
            warnings.simplefilter("ignore", UserWarning)
            dec.fit(tr, names)
        inner.append((dec, te, np.asarray(te.covariates, dtype=np.float64)))
    K = temps.size
    cov = np.full((len(folds), K), np.nan)
    ls = np.full((len(folds), K), np.nan)
    n_bins = np.zeros(len(folds), dtype=np.int64)

    def pooled(j: int) -> float:
        if np.isnan(cov[0, j]):
            for k, (dec, te, truth_all) in enumerate(inner):
                post = dec._decode_tempered(te, [float(temps[j])])[0]
                truth = truth_all[post.index]
                cov[k, j] = np.mean(post.covers(truth, 0.9))
                ls[k, j] = np.mean(post.log_density(truth))
                n_bins[k] = post.n_time
        return float(cov[:, j] @ n_bins / n_bins.sum())

    if getattr(decoder, "tempering", "likelihood") == "covariance":
        # one decode per inner fold gives every candidate (the covariance is scaled): the whole table
        for k, (dec, te, truth_all) in enumerate(inner):
            for j, post in enumerate(dec._decode_tempered(te, temps)):
                truth = truth_all[post.index]
                cov[k, j] = np.mean(post.covers(truth, 0.9))
                ls[k, j] = np.mean(post.log_density(truth))
                n_bins[k] = post.n_time
    # doubling from T = 1 until the pooled coverage reaches 0.9, then bisection
    lo, hi = None, None
    j = 0
    while True:
        if pooled(j) >= 0.9:
            hi = j
            break
        lo = j
        if j == K - 1:
            break
        j = min(2 * j + 1, K - 1)
    if hi is None:  # never reached 0.9: the best coverage seen
        evaluated = np.flatnonzero(~np.isnan(cov[0]))
        j = int(evaluated[np.argmax([pooled(i) for i in evaluated])])
    else:
        while lo is not None and hi - lo > 1:
            mid = (lo + hi) // 2
            if pooled(mid) >= 0.9:
                hi = mid
            else:
                lo = mid
        j = hi if lo is None or abs(pooled(hi) - 0.9) <= abs(pooled(lo) - 0.9) else lo
    chosen = float(temps[j])
    got = pooled(j)
    record = {"criterion": "coverage_90", "temperatures": temps, "coverage_90": cov, "log_score": ls,
              "n_bins": n_bins, "n_folds": len(folds), "gap": int(gap), "chosen": chosen}
    if got < 0.85:
        warnings.warn(
            f"the nested calibration chose temperature {chosen:g} and its inner 90% regions still cover only"
            f" {got:.2f}: tempering cannot make this decoder's posterior honest on this data; check the model"
            " (tuning, lags, bin size) before trusting its credible regions",
            RuntimeWarning,
            stacklevel=3,
        )
    return chosen, record


@partial(jit, static_argnames=("smooth",))
def _tempered_moments(params, temps, y, u, mask, smooth: bool):
    """Filtered or smoothed moments ``(temperature, time, ...)`` with ``Q`` scaled by each temperature."""
    from ..latent.kalman import _filter, _rts

    def one(t):
        p = params._replace(observation_cov=params.observation_cov * t)
        f = _filter(p, y, u, mask)
        if smooth:
            r = _rts(p, f)
            return r.smoothed_means, r.smoothed_covs
        return f.filtered_means, f.filtered_covs

    return jax.vmap(one)(temps)


class KalmanDecoder(Decoder):
    """Linear-Gaussian (Kalman) decoder of a continuous variable from population counts.

    Parameters
    ----------
    lags : int or sequence of int, default 0
        Bins relative to the decoded one whose counts enter the features (``-2`` is two bins
        earlier). Bins whose window leaves their trial or block are not decoded.
    smooth : bool, default True
        Return the RTS-smoothed posterior (all bins of a segment); False: the causal filter.
    ridge : float, default 1e-6
        Relative ridge of the least-squares fits (times the mean regressor variance); also the
        relative jitter added to the fitted covariances so they stay positive definite.
    transform : {None, "sqrt"}, default None
        ``"sqrt"`` uses square-root counts as features (variance stabilising).
    temperature : "auto" or float >= 1, default "auto"
        Tempering of the observation model in the filter: the observation noise covariance
        ``Q`` is multiplied by ``T`` (the Gaussian likelihood raised to the power ``1/T``), which
        widens an over-confident posterior. ``"auto"`` (the default) chooses ``T`` among 33
        values from 1 to 10^4 (:data:`TEMPERATURES`) by nested, leak-free calibration inside the
        training data (:func:`calibrate_temperature`: 3 contiguous inner folds with a gap of the
        largest lag plus 2 bins; the least ``T`` whose inner held-out 90% regions cover 0.9).
        ``1.0`` is the plain Kalman filter of earlier versions. Only decoding uses it: ``params_``
        and ``log_likelihood`` are the fitted (untempered) model, and ``decode(data,
        temperature=T)`` decodes at another value without refitting.

    Attributes
    ----------
    params_ : LDSParams
        The fitted model: ``dynamics`` A, ``dynamics_bias`` b, ``dynamics_cov`` W, ``loadings``
        H, ``offset`` c, ``observation_cov`` Q (full), ``initial_mean`` / ``initial_cov``
        (the mean and covariance of the training target, where every segment starts).
    temperature_ : float
        The temperature decoding uses: the number given, or the one chosen by ``"auto"``.
    calibration_ : dict or None
        The inner-fold record of ``"auto"`` (see :func:`calibrate_temperature`: candidate
        temperatures, inner held-out 90% coverage and log score per fold and candidate, the
        criterion); None for a fixed temperature.
    lags_ : ndarray of int
    names_ : tuple of str
        Target dimension names.
    neuron_ids_ : ndarray
    bin_size_ : float

    Notes
    -----
    Why tempering is the default. Real counts are over-dispersed and correlated, so the
    least-squares ``Q`` under-states how noisy a bin's features are given the state; and with
    more than one lag neighbouring bins' feature vectors share counts (bin ``t``'s lag 0 is bin
    ``t + 1``'s lag -1) while the model treats each bin's observation noise as independent, so
    the filter counts each count once per lag. Both make the untempered posterior over-confident
    (on the shared 2-D place cells its 90% regions cover 0.19-0.34 of held-out bins). The
    lag overlap is not corrected in ``Q`` itself (a correction for white residuals would be
    ``T = number of lags``, but the residuals of real counts are neither white nor Gaussian);
    the nested calibration measures the net effect instead, and its chosen ``T`` grows with the
    number of lags. With ``lags=0`` and data from the model the untempered posterior is exact
    and ``"auto"`` stays near 1.

    ``fit(data, target, *, method="least_squares", key=None, progress=None)``: closed-form
    (ridge) least squares; no random numbers, no options.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders.kalman import KalmanDecoder
    >>> rng = np.random.default_rng(0)
    >>> x = np.cumsum(rng.normal(0, 0.1, 2000))
    >>> counts = rng.poisson(np.exp(1.0 + 0.5 * np.outer(x, np.linspace(-1, 1, 12)).clip(-3, 3)))
    >>> data = SpikeData.from_counts(counts, bin_size=0.05, covariates=x, feature_names=["x"])
    >>> dec = KalmanDecoder().fit(data, "x")
    >>> post = dec.decode(data)
    >>> post.mean.shape, post.cov.shape
    ((2000, 1), (2000, 1, 1))
    >>> bool(dec.evaluate(data, "x")["r2"][0] > 0.8)
    True
    """

    METHODS = ("least_squares",)
    _FIT_OPTIONS = {"least_squares": {}}
    _observed_name = "features"

    def __init__(self, lags: Any = 0, smooth: bool = True, ridge: float = 1e-6, transform: str | None = None,
                 temperature: Any = "auto", tempering: str = "covariance"):
        check_lags(lags)
        check_temperature(temperature)
        check_tempering(tempering)
        if transform not in (None, "sqrt"):
            raise ValueError(f"transform must be None or 'sqrt', got {transform!r}")
        if isinstance(ridge, bool) or not (np.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
        self.lags = lags
        self.smooth = smooth
        self.ridge = ridge
        self.transform = transform
        self.temperature = temperature
        self.tempering = tempering

    # ------------------------------------------------------------------ features
    def _features(self, data, lags=None) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(data.counts, dtype=np.float64)
        if self.transform == "sqrt":
            x = np.sqrt(x)
        feats, index = lagged(x, data.segment_ids, self.lags_ if lags is None else lags)
        return feats.reshape(feats.shape[0], -1), index

    # ------------------------------------------------------------------ fitting
    @pynapple_io(target=True)
    def fit(
        self,
        data: Any,
        target: Any,
        *,
        method: str = "least_squares",
        key: Any = None,
        progress: bool | None = None,
        **options: Any,
    ) -> KalmanDecoder:
        """Fit the state and observation models by least squares.

        Parameters
        ----------
        data : SpikeData
            Training counts (with trials or blocks: the dynamics never pair bins across them).
        target : str, sequence of str, or array_like
            Covariate name(s) of `data`, or an array ``(time,)`` / ``(time, dim)``.
        method : {"least_squares"}, default "least_squares"
            Closed-form ridge least squares (the only method; it takes no options).
        key : jax.random key or int, optional
            Not needed: the fit draws no random numbers.
        progress : bool, optional
            Accepted for a uniform interface; the fit is closed-form.

        Returns
        -------
        KalmanDecoder
            Itself, fitted.

        Raises
        ------
        ValueError
            NaN or inf in the target, a constant target dimension, a neuron that never spikes,
            or a recording too short for the fits.
        """
        self._check_fit_args(method, options)
        resolve_key(key, needed=False)
        data = as_spike_data(data, name="training data")
        values, names = target_array(data, target)
        sd = values.std(axis=0)
        const = [names[k] for k in np.flatnonzero(sd <= 1e-12 * np.maximum(np.abs(values).max(axis=0), 1.0))]
        if const:
            raise ValueError(f"target dimension(s) {const} are constant in the training data; nothing to decode")
        lags = check_lags(self.lags)
        ridge = float(self.ridge)
        d = values.shape[1]
        dtype = _float_dtype()
        A, b, W, _ = fit_linear_dynamics(values, data.segment_ids, ridge)
        check_spiking(data)
        feats, index = self._features(data, lags)
        if index.size < d + 2:
            raise ValueError(
                f"too few bins with a complete lag window to fit the observation model: {index.size}"
                f" (need at least {d + 2}); use fewer lags or a longer recording"
            )
        H, c, Q = fit_linear_observation(values[index], feats, ridge)
        m0 = values.mean(axis=0)
        P0 = np.atleast_2d(np.cov(values, rowvar=False, bias=True))
        cast = lambda a: jnp.asarray(a, dtype)
        self.params_ = make_lds_params(
            cast(A), cast(H), dynamics_cov=cast(_jitter(W, ridge, dtype)),
            observation_cov=cast(_jitter(Q, ridge, dtype)), initial_mean=cast(m0),
            initial_cov=cast(_jitter(P0, ridge, dtype)), dynamics_bias=cast(b), offset=cast(c),
        )
        self.lags_ = lags
        self.names_ = names
        self.n_dim_ = d
        self.neuron_ids_ = np.asarray(data.neuron_ids)
        self.bin_size_ = float(data.bin_size)
        self._set_training_log_likelihood(data, values)
        self.temperature_, self.calibration_ = check_temperature(self.temperature), None
        if self.temperature_ == "auto":
            gap = int(np.max(np.abs(lags))) + 2
            self.temperature_, self.calibration_ = calibrate_temperature(self, data, values, gap=gap)
        return self

    def _pointwise_log_likelihood(self, data: Any, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian log density of each decoded bin's feature vector given the true state.

        ``log N(z_t; H s_t + c, Q)`` with the fitted ``loadings`` H, ``offset`` c and full
        ``observation_cov`` Q: the features are the (lagged, optionally square-rooted) counts,
        so this is the log-likelihood of the counts under the decoder's Gaussian model.
        """
        data = check_neurons(data, self.neuron_ids_)
        feats, index = self._features(data)
        s = np.asarray(truth, dtype=np.float64).reshape(data.n_time, -1)[index]
        p = self.params_
        H, c = np.asarray(p.loadings, dtype=np.float64), np.asarray(p.offset, dtype=np.float64)
        Q = np.asarray(p.observation_cov, dtype=np.float64)
        L = np.linalg.cholesky(Q)
        z = np.linalg.solve(L, (feats - s @ H.T - c).T)
        logdet = 2.0 * np.sum(np.log(np.diag(L)))
        ll = -0.5 * (np.sum(z**2, axis=0) + logdet + Q.shape[0] * np.log(2 * np.pi))
        return ll, index

    def _posterior_variables(self):
        p = {k: np.asarray(v, dtype=np.float64) for k, v in self.params_._asdict().items() if v is not None}
        variables = {
            "dynamics": (("state", "state_from"), p["dynamics"]),
            "dynamics_bias": (("state",), p["dynamics_bias"]),
            "dynamics_cov": (("state", "state_from"), p["dynamics_cov"]),
            "loadings": (("feature", "state"), p["loadings"]),
            "offset": (("feature",), p["offset"]),
            "observation_cov": (("feature", "feature_from"), p["observation_cov"]),
            "initial_mean": (("state",), p["initial_mean"]),
            "initial_cov": (("state", "state_from"), p["initial_cov"]),
        }
        feature = [f"n{n}_lag{int(lag)}" for lag in self.lags_ for n in self.neuron_ids_.tolist()]
        names = list(self.names_)
        coords = {"state": names, "state_from": names, "feature": feature, "feature_from": feature}
        return variables, coords

    # ----------------------------------------------------------------- decoding
    @pynapple_io()
    def decode(self, data: Any, *, temperature: float | None = None) -> GaussianPosterior:
        """Gaussian posterior of the target in every decodable bin of `data`.

        Each trial or block of `data` (``segment_ids``) is filtered on its own, starting from
        ``params_.initial_mean`` and ``initial_cov``; bins whose lag window leaves their segment
        are dropped (see ``post.index``). The observation noise is ``temperature * Q``.

        Parameters
        ----------
        data : SpikeData or ndarray
            Counts of the training neurons (any order; a different set raises).
        temperature : float >= 1, optional
            Decode at this temperature instead of ``temperature_`` (no refit needed: the fit
            does not depend on it); ``1.0`` is the untempered Kalman filter.

        Returns
        -------
        GaussianPosterior
            With ``index`` the decoded bins of `data`.

        Raises
        ------
        FloatingPointError
            If any bin's posterior is not finite (with the count and the first such bin).
        """
        self._check_fitted()
        t = self.temperature_ if temperature is None else check_temperature(temperature)
        if t == "auto":
            raise ValueError("decode(temperature=...) takes a number >= 1; 'auto' is chosen by fit")
        return self._decode_tempered(data, [float(t)])[0]

    def _decode_tempered(self, data: Any, temperatures: Any) -> list[GaussianPosterior]:
        """One posterior per temperature; several temperatures run as one batched filter."""
        from ..latent.kalman import _check_params, _check_trial

        self._check_fitted()
        data = check_neurons(as_spike_data(data, self.bin_size_), self.neuron_ids_)
        feats, index = self._features(data)
        seg = np.asarray(data.segment_ids)[index]
        asked = [float(t) for t in temperatures]
        temps = [1.0] if self.tempering == "covariance" else asked
        d = self.n_dim_
        dtype = _float_dtype()
        mean = np.empty((len(temps), index.size, d))
        cov = np.empty((len(temps), index.size, d, d))
        for a, b in _segments(seg):
            n = b - a
            L = _padded_length(n)
            y = np.zeros((L, feats.shape[1]))
            y[:n] = feats[a:b]
            mask = jnp.asarray(np.arange(L) < n)
            y = jnp.asarray(y, dtype)
            if len(temps) == 1:
                params = self.params_
                if temps[0] != 1.0:
                    params = params._replace(observation_cov=params.observation_cov * temps[0])
                if bool(self.smooth):
                    res = kalman_smoother(params, y, mask=mask)
                    m, P = res.smoothed_means[None], res.smoothed_covs[None]
                else:
                    res = kalman_filter(params, y, mask=mask)
                    m, P = res.filtered_means[None], res.filtered_covs[None]
            else:
                params = _check_params(self.params_)
                yy, u, mm = _check_trial(params, y, None, mask)
                m, P = _tempered_moments(params, jnp.asarray(temps, dtype), yy, u, mm, bool(self.smooth))
            mean[:, a:b] = np.asarray(m)[:, :n]
            cov[:, a:b] = np.asarray(P)[:, :n]
        out = []
        centres = np.asarray(data.bin_centers)[index]
        for k, t in enumerate(asked):
            kk, scale = (0, t) if self.tempering == "covariance" else (k, 1.0)
            check_finite_posterior(mean[kk], cov[kk], type(self).__name__)
            out.append(attach_index(GaussianPosterior(mean[kk], scale * cov[kk], centres, self.names_), index))
        return out
