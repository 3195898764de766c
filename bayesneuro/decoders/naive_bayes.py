r"""Poisson naive-Bayes decoding on a grid (Zhang, Ginzburg, McNaughton & Sejnowski 1998).

Given tuning curves :math:`\lambda_n(s)` and the counts :math:`k_{nt}` of bin :math:`t` (width
:math:`\Delta`), neurons are independent Poisson given the variable, so on grid cell :math:`g`

.. math::

    \log p(s_g \mid k_t) = \sum_n \bigl[k_{nt} \log(\lambda_{ng}\Delta) - \lambda_{ng}\Delta
    - \log\Gamma(k_{nt} + 1)\bigr] + \log p(s_g) - \log Z_t .

It is one ``(time, neuron) @ (neuron, G)`` product in log space (no factorials, no
``(time, G, neuron)`` array), computed in chunks of bins, so memory is linear in the bins:
``(time, G)`` for the posterior. Cells never visited in training get prior probability zero.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from ..estimator import resolve_key
from ._base import Decoder, attach_index
from ._inputs import as_spike_data, check_neurons, check_spiking, target_array
from .grid import Grid
from .posterior import GridPosterior
from .tuning import (
    NEWTON_MAX_ITER,
    TuningCurves,
    estimate_dispersion,
    estimate_tuning_curves,
)

RATE_FLOOR = 1e-12  # Hz; a visited cell's rate of exactly 0 becomes this (as pynapple's EPS)
_CHUNK = 16384


@partial(jit, static_argnames=("normalize", "factorials"))
def _log_lik_chunk(counts, log_rate_dt, rate_dt_sum, log_prior, normalize=True, factorials=True):
    """Log posterior (or likelihood + prior) of a chunk of bins, ``(chunk, G)``."""
    counts = counts.astype(log_rate_dt.dtype)
    lp = counts @ log_rate_dt + (log_prior - rate_dt_sum)[None, :]
    if normalize:  # log Γ(k + 1) is the same in every cell: it cancels
        m = jnp.max(lp, axis=1, keepdims=True)
        return lp - (m + jnp.log(jnp.sum(jnp.exp(lp - m), axis=1, keepdims=True)))
    if not factorials:
        return lp
    return lp - jnp.sum(jax.scipy.special.gammaln(counts + 1), axis=1)[:, None]


def _rate_terms(rates: np.ndarray, bin_size: float, dispersion: Any = None,
                temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """The two arrays of the log likelihood ``counts @ a - c`` (terms of the counts only left out).

    Poisson (``dispersion`` None or infinite): ``a = log(mu)`` ``(neuron, G)`` and
    ``c = sum_n mu`` ``(G,)``, with ``mu = rate * dt``. Negative binomial with dispersion
    ``r_n``: ``a = log(mu / (mu + r))`` and ``c = sum_n r_n log(1 + mu / r_n)``. Both are
    divided by `temperature`. Rates are floored at :data:`RATE_FLOOR`; unvisited (``nan``)
    cells get placeholder values the prior masks.
    """
    dtype = jnp.zeros(()).dtype
    r = np.where(np.isfinite(rates), np.maximum(rates, RATE_FLOOR), 1.0)
    mu = r * bin_size
    a, c = np.log(mu), mu
    if dispersion is not None:
        disp = np.asarray(dispersion, dtype=np.float64).reshape(-1, 1)
        nb = np.isfinite(disp[:, 0])
        if nb.any():
            d = disp[nb]
            a = a.copy()
            c = c.copy()
            a[nb] = np.log(mu[nb]) - np.log(mu[nb] + d)
            c[nb] = d * np.log1p(mu[nb] / d)
    c = np.sum(c, axis=0)
    if temperature != 1.0:
        a, c = a / temperature, c / temperature
    return jnp.asarray(a, dtype), jnp.asarray(c, dtype)


def log_posterior(
    counts: np.ndarray,
    rates: np.ndarray,
    bin_size: float,
    log_prior: np.ndarray,
    *,
    normalize: bool = True,
    chunk_size: int = _CHUNK,
    dispersion: Any = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Naive-Bayes log posterior ``(time, G)`` from counts ``(time, neuron)`` and rates ``(neuron, G)``.

    Parameters
    ----------
    counts : ndarray, shape (time, neuron)
    rates : ndarray, shape (neuron, G)
        Rates in Hz; ``nan`` columns (unvisited cells) must have ``log_prior = -inf``.
    bin_size : float
    log_prior : ndarray, shape (G,)
    normalize : bool, default True
        False: return the unnormalised log likelihood plus log prior.
    chunk_size : int
        Bins per compiled call (bounds the working memory).
    dispersion : array_like, shape (neuron,), optional
        Negative-binomial dispersion ``r_n`` per neuron (``inf``: Poisson); default Poisson.
    temperature : float, default 1.0
        The log likelihood is divided by it before the prior is added.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.decoders.naive_bayes import log_posterior
    >>> rates = np.array([[1.0, 10.0]])
    >>> lp = log_posterior(np.array([[0], [3]]), rates, 0.1, np.log([0.5, 0.5]))
    >>> np.round(np.exp(lp).astype(float), 2).tolist()
    [[0.71, 0.29], [0.0, 1.0]]
    """
    dtype = jnp.zeros(()).dtype
    log_rate_dt, rate_dt_sum = _rate_terms(rates, bin_size, dispersion, temperature)
    n_time = counts.shape[0]
    if _host_blas():
        a = np.asarray(log_rate_dt)
        offset = np.asarray(jnp.asarray(log_prior, dtype)) - np.asarray(rate_dt_sum)
        out = np.empty((n_time, rates.shape[1]), dtype=dtype)
        tmp = np.empty((min(chunk_size, n_time), rates.shape[1]), dtype=dtype)
        for s in range(0, n_time, chunk_size):
            e = min(s + chunk_size, n_time)
            block = out[s:e]
            np.matmul(np.asarray(counts[s:e], dtype=dtype), a, out=block)
            block += offset
            if normalize:
                _normalize_rows(block, tmp[: e - s])
            else:  # the terms log k! are the same in every cell (they cancel when normalised)
                block -= special.gammaln(np.asarray(counts[s:e], dtype=np.float64) + 1.0).sum(axis=1)[:, None]
        return out
    lp_prior = jnp.asarray(log_prior, dtype)
    out = np.empty((n_time, rates.shape[1]), dtype=dtype)
    for a in range(0, n_time, chunk_size):
        b = min(a + chunk_size, n_time)
        chunk = counts[a:b]
        if b - a < chunk_size and n_time > chunk_size:  # pad the last chunk: one compiled shape
            chunk = np.concatenate([chunk, np.zeros((chunk_size - (b - a), chunk.shape[1]), chunk.dtype)])
        res = _log_lik_chunk(jnp.asarray(chunk), log_rate_dt, rate_dt_sum, lp_prior, normalize=normalize)
        out[a:b] = np.asarray(res)[: b - a]
    return out


def _host_blas() -> bool:
    """Whether JAX computes on the CPU: then the ``(time, neuron) @ (neuron, G)`` product runs in numpy.

    On a CPU numpy's BLAS (OpenBLAS) multiplies these shapes faster than XLA's CPU dot (1.2-1.8x
    CPU time at 200 neurons x 400-1,600 cells, float64 and float32), and numpy's vectorised
    ``exp`` normalises in place about 4x faster than XLA's float64 ``exp``; nothing is compiled.
    On an accelerator the product stays in XLA.
    """
    return jax.default_backend() == "cpu"


def _normalize_rows(block: np.ndarray, tmp: np.ndarray) -> None:
    """Subtract each row's log-sum-exp from `block` in place (`tmp`: scratch of the same shape)."""
    m = np.max(block, axis=1, keepdims=True)
    block -= m
    np.exp(block, out=tmp)
    block -= np.log(np.sum(tmp, axis=1, keepdims=True))


def count_terms_total(counts: np.ndarray, dispersion: Any = None) -> float:
    """Sum over bins and neurons of the log-pmf terms that depend on the counts only.

    Poisson: ``-log k!``; negative binomial with dispersion ``r_n``:
    ``log Γ(k + r_n) - log Γ(r_n) - log k!``. They are the same in every cell, so decoding
    leaves them out; the log evidence adds them back. Computed from each neuron's histogram of
    count values.
    """
    c = np.asarray(counts)
    if c.size == 0:
        return 0.0
    c = c.reshape(c.shape[0], -1)
    disp = None if dispersion is None else np.asarray(dispersion, dtype=np.float64).reshape(-1)
    nb = [] if disp is None else np.flatnonzero(np.isfinite(disp))
    hist = np.zeros(1, np.int64)
    per_neuron = {n: np.zeros(1, np.int64) for n in nb}

    def add(h, block):
        b = np.bincount(block.ravel())
        if b.size > h.size:
            h = np.pad(h, (0, b.size - h.size))
        h[: b.size] += b
        return h

    for a in range(0, c.shape[0], _CHUNK):  # blocks of rows: no (time, neuron) int64 copy of the counts
        block = c[a : a + _CHUNK]
        hist = add(hist, block)
        for n in nb:
            per_neuron[n] = add(per_neuron[n], block[:, n])
    total = -float(hist @ special.gammaln(np.arange(hist.size) + 1.0))
    for n, h in per_neuron.items():
        k = np.arange(h.size)
        total += float(h @ (special.gammaln(k + disp[n]) - special.gammaln(disp[n])))
    return total


def log_pmf(counts: np.ndarray, mu: np.ndarray, dispersion: Any = None) -> np.ndarray:
    """Log pmf of each count given its mean ``mu`` (same shape ``(time, neuron)``), summed over neurons.

    Poisson where the neuron's dispersion is ``inf`` (or `dispersion` is None), negative
    binomial (gamma-Poisson, variance ``mu + mu**2 / r``) elsewhere.
    """
    k = np.asarray(counts, dtype=np.float64)
    out = k * np.log(mu) - mu - special.gammaln(k + 1.0)
    if dispersion is not None:
        disp = np.broadcast_to(np.asarray(dispersion, dtype=np.float64).reshape(-1), (k.shape[1],))
        nb = np.isfinite(disp)
        if nb.any():
            r, kk, m = disp[nb], k[:, nb], mu[:, nb]
            out[:, nb] = (special.gammaln(kk + r) - special.gammaln(r) - special.gammaln(kk + 1.0)
                          - r * np.log1p(m / r) + kk * (np.log(m) - np.log(m + r)))
    return np.sum(out, axis=1)


def likelihood_rows(counts: np.ndarray, rates: np.ndarray, bin_size: float, visited: np.ndarray,
                    dispersion: Any = None, temperature: float = 1.0):
    """A function ``(a, b) -> log likelihood of bins a:b`` (``-inf`` off `visited`), computed on demand.

    The rows leave out the terms of the counts only, which are the same in every cell (see
    :func:`count_terms_total` for their sum), and are divided by `temperature`.
    """
    log_rate_dt, rate_dt_sum = _rate_terms(rates, bin_size, dispersion, temperature)
    lp_mask = jnp.asarray(np.where(visited, 0.0, -np.inf), jnp.zeros(()).dtype)

    if _host_blas():
        a_np = np.asarray(log_rate_dt)
        offset = np.asarray(lp_mask) - np.asarray(rate_dt_sum)

        def host_rows(a: int, b: int) -> np.ndarray:
            out = np.asarray(counts[a:b], dtype=a_np.dtype) @ a_np
            out += offset
            return out

        return host_rows

    def rows(a: int, b: int):
        return _log_lik_chunk(jnp.asarray(counts[a:b]), log_rate_dt, rate_dt_sum, lp_mask, normalize=False,
                              factorials=False)

    return rows


OBSERVATIONS = ("negative_binomial", "poisson")


def check_observation(observation: Any, temperature: Any) -> None:
    """Validate the ``observation`` and ``temperature`` constructor options."""
    if observation not in OBSERVATIONS:
        raise ValueError(f"observation must be 'negative_binomial' or 'poisson', got {observation!r}")
    if isinstance(temperature, str):
        if temperature != "auto":
            raise ValueError(f"temperature must be 'auto' or a number >= 1, got {temperature!r}")
        return
    if isinstance(temperature, bool) or not np.isscalar(temperature):
        raise ValueError(f"temperature must be 'auto' or a number >= 1, got {temperature!r}")
    t = float(temperature)
    if not (np.isfinite(t) and t >= 1.0):
        raise ValueError(f"temperature must be 'auto' or a finite number >= 1 (1: untempered), got {temperature!r}")


def _prior_vector(prior: Any, tuning: TuningCurves) -> np.ndarray:
    """Log prior over cells: uniform or occupancy on visited cells, or a user array."""
    G = tuning.grid.n_cells
    vis = tuning.visited
    if isinstance(prior, str):
        if prior == "uniform":
            p = vis.astype(np.float64)
        elif prior == "occupancy":
            if not np.all(np.isfinite(tuning.occupancy)):
                raise ValueError("prior='occupancy' needs tuning curves with an occupancy")
            p = np.where(vis, tuning.occupancy, 0.0)
        else:
            raise ValueError(f"prior must be 'uniform', 'occupancy' or an array of {G} cell weights, got {prior!r}")
    else:
        p = np.asarray(prior, dtype=np.float64).reshape(-1)
        if p.size != G:
            raise ValueError(f"prior must have one weight per grid cell ({G}), got {p.size}")
        if np.any(p < 0) or not np.all(np.isfinite(p)):
            raise ValueError("prior weights must be finite and >= 0")
        p = np.where(vis, p, 0.0)
    if p.sum() <= 0:
        raise ValueError("the prior puts no mass on a visited cell")
    with np.errstate(divide="ignore"):
        return np.log(p / p.sum())


class NaiveBayesDecoder(Decoder):
    """Naive-Bayes decoder of a 1-D, 2-D or circular variable on a grid, calibrated on held-out training data.

    Parameters
    ----------
    bins : int or sequence of int, default 40
        Grid cells per dimension (ignored when `grid` is given).
    range : (lo, hi) or sequence of them, optional
        Grid extent; default the training range (``(0, 2π)`` on circular axes).
    circular : bool or sequence of bool, default False
        Axes that wrap (head direction).
    grid : Grid, optional
        An explicit grid.
    tuning : {"histogram", "glm"}, default "histogram"
        Tuning-curve estimator (:mod:`bayesneuro.decoders.tuning`).
    sigma : float, sequence or "auto", optional
        Histogram smoothing width in units of the variable (default one cell); ``"auto"``
        chooses it by held-out Poisson likelihood on contiguous blocks of the training data
        (:func:`~bayesneuro.decoders.tuning.choose_sigma`; the width is ``tuning_.sigma``).
    n_basis, smoothness
        GLM tuning options (see :func:`~bayesneuro.decoders.tuning.estimate_tuning_curves`).
    prior : {"uniform", "occupancy"} or array, default "uniform"
        Prior over cells; always zero on cells never visited in training.
    min_occupancy : float, optional
        Seconds of training time a cell needs to count as visited (default one bin).
    point : {"map", "mean"}, default "map"
        Point estimate reported by the posterior.
    chunk_size : int, default 16384
        Bins per compiled call.
    observation : {"negative_binomial", "poisson"}, default "negative_binomial"
        Count model of each neuron given the variable. ``"negative_binomial"``: gamma-Poisson
        with mean ``rate * bin_size`` and variance ``mu + mu**2 / r_n``, the dispersion ``r_n``
        of each neuron fitted by maximum likelihood on the training counts given the tuning
        curve (:func:`~bayesneuro.decoders.tuning.estimate_dispersion`; capped at 1e4, where it
        is Poisson). ``"poisson"``: the textbook model (Zhang et al. 1998).
    temperature : float >= 1 or "auto", default "auto"
        The log likelihood is divided by it before Bayes' rule (1: untempered). ``"auto"``:
        chosen inside the training data by nested contiguous folds
        (:func:`~bayesneuro.decoders.calibration.calibrate_temperature`: the smallest temperature
        whose inner 90% coverage reaches 0.9), so the test data never touch it.

    Notes
    -----
    ``fit(data, target, *, method="plugin", key=None, progress=None, max_iter=..., tol=...)``:
    the one method estimates the tuning curves once and plugs them into Bayes' rule; it draws
    no random numbers (``key`` is accepted and not needed). ``max_iter`` and ``tol`` are the
    Newton options of the ``tuning="glm"`` fit. With ``temperature="auto"`` the fit also fits
    three inner copies of the decoder on parts of the training data.

    **Why these defaults.** Independent Poisson neurons are far too confident on real
    recordings: on the shared 2-D place cells (49 cells, 200-ms bins, 20 x 20 grid, 5
    contiguous folds) the 90% credible regions of the Poisson, untempered decoder cover 0.52 of
    the held-out bins (0.47-0.57 over folds), 0.76 on the linear track (50 cells, 200 ms) and
    0.84 on the head-direction cells (60 cells, 20 ms, 3 folds). The negative binomial alone
    (dispersions of 0.15-0.4 on the place cells: strongly bursty) gives 0.73 and 0.85;
    with the calibrated temperature (2.5-3 on the place cells) the defaults cover 0.92
    (0.86-0.96), 0.86 (0.79-0.90) and 0.90 (0.84-0.95), with the same point estimates. Once
    the temperature is calibrated, Poisson neurons cover as well and decode marginally better
    (log score 0.05-0.1 nats/bin higher); the negative binomial stays the default because it is
    far closer to calibrated wherever the temperature is fixed (0.73 against 0.52 untempered). On simulated Poisson
    data the dispersion reaches the cap and the temperature stays near 1. Tempering cannot
    repair a wrong tuning curve or a wrong prior; ``calibration_`` shows what the inner folds
    saw.

    Attributes
    ----------
    tuning_ : TuningCurves
    grid_ : Grid
    neuron_ids_ : ndarray
    bin_size_ : float
    dispersion_ : ndarray, shape (neuron,)
        Negative-binomial dispersion per neuron (``inf``: Poisson).
    temperature_ : float
        The likelihood temperature used.
    calibration_ : dict or None
        With ``temperature="auto"``: the inner-fold record of
        :func:`~bayesneuro.decoders.calibration.calibrate_temperature` (temperatures tried,
        inner log score and 50/90/95% coverage at each); None otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro import SpikeData
    >>> from bayesneuro.decoders import NaiveBayesDecoder
    >>> rng = np.random.default_rng(1)
    >>> x = rng.uniform(0, 1, 4000)
    >>> centres = np.linspace(0, 1, 8)
    >>> counts = rng.poisson(0.2 + 3 * np.exp(-((x[:, None] - centres) ** 2) / 0.01))
    >>> data = SpikeData.from_counts(counts, bin_size=0.1, covariates=x, feature_names=["x"])
    >>> train, test, _ = data.split(fractions=(0.75, 0.25))
    >>> dec = NaiveBayesDecoder(bins=20).fit(train, "x")
    >>> post = dec.decode(test)
    >>> post.log_prob.shape
    (1000, 20)
    >>> dec.evaluate(test, "x")["median_error"] < 0.05
    True
    >>> dec.score(test, "x") > 0  # nats/bin: log density of the truth (the variable spans 1)
    True
    >>> bool(dec.dispersion_.min() > 5), dec.temperature_  # Poisson counts: little to correct
    (True, 1.0)
    """

    METHODS = ("plugin",)
    _FIT_OPTIONS: ClassVar[dict] = {"plugin": {"max_iter": NEWTON_MAX_ITER, "tol": None}}
    # -inf: cells never visited (prior zero); inf: a Poisson neuron's dispersion
    _nan_allowed = ("log_prior_", "dispersion_")

    def __init__(
        self,
        bins: Any = 40,
        range: Any = None,
        circular: Any = False,
        grid: Grid | None = None,
        tuning: str = "histogram",
        sigma: Any = None,
        n_basis: Any = None,
        smoothness: Any = "auto",
        prior: Any = "uniform",
        min_occupancy: float | None = None,
        point: str = "map",
        chunk_size: int = _CHUNK,
        observation: str = "negative_binomial",
        temperature: Any = "auto",
    ):
        check_observation(observation, temperature)
        if tuning not in ("histogram", "glm"):
            raise ValueError(f"tuning must be 'histogram' or 'glm', got {tuning!r}")
        if point not in ("map", "mean"):
            raise ValueError(f"point must be 'map' or 'mean', got {point!r}")
        if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive whole number, got {chunk_size}")
        self.bins = bins
        self.range = range
        self.circular = circular
        self.grid = grid
        self.tuning = tuning
        self.sigma = sigma
        self.n_basis = n_basis
        self.smoothness = smoothness
        self.prior = prior
        self.min_occupancy = min_occupancy
        self.point = point
        self.chunk_size = chunk_size
        self.observation = observation
        self.temperature = temperature

    # ------------------------------------------------------------------ fitting
    @pynapple_io(target=True)
    def fit(
        self,
        data: Any,
        target: Any,
        *,
        method: str = "plugin",
        key: Any = None,
        progress: bool | None = None,
        **options: Any,
    ) -> NaiveBayesDecoder:
        """Estimate tuning curves from training data.

        Parameters
        ----------
        data : SpikeData
            Training counts.
        target : str, sequence of str, or array_like
            The variable: covariate name(s) of `data`, or an array ``(time,)`` / ``(time, dim)``.
        method : {"plugin"}, default "plugin"
            Estimate the tuning curves once and plug them into Bayes' rule.
        key : jax.random key or int, optional
            Not needed: the fit draws no random numbers.
        progress : bool, optional
            Accepted for a uniform interface; the fit shows no progress bar.
        **options
            ``max_iter`` (default 40) and ``tol`` (default 1e-14 in float64, see
            :func:`~bayesneuro.decoders.tuning.newton_tol`): Newton iterations and relative
            tolerance of the ``tuning="glm"`` fit (:func:`bayesneuro.engine.newton.newton`).

        Returns
        -------
        NaiveBayesDecoder
            Itself, fitted.

        Raises
        ------
        ValueError
            Target outside the grid's range, a neuron that never spikes, mismatched lengths.
        """
        opts = self._check_fit_args(method, options)
        resolve_key(key, needed=False)
        data = as_spike_data(data, name="training data")
        values, names = target_array(data, target)
        check_spiking(data)
        grid = self.grid
        if grid is None:
            grid = Grid.regular(self.bins, self.range, self.circular, names=names, values=values)
        elif grid.n_dim != values.shape[1]:
            raise ValueError(f"the grid has {grid.n_dim} dimension(s), the target {values.shape[1]}")
        values = grid.check_inside(values, "training target")
        tc = estimate_tuning_curves(
            data.counts, values, grid, data.bin_size, method=self.tuning, sigma=self.sigma,
            n_basis=self.n_basis, smoothness=self.smoothness, min_occupancy=self.min_occupancy,
            neuron_ids=data.neuron_ids, max_iter=opts["max_iter"], tol=opts["tol"],
        )
        self._set_tuning(tc, data.bin_size)
        if self.observation == "negative_binomial":
            self.dispersion_ = estimate_dispersion(data.counts, grid.locate(values), tc.rates, data.bin_size)
        else:
            self.dispersion_ = np.full(tc.n_neuron, np.inf)
        auto = isinstance(self.temperature, str)
        self.temperature_ = 1.0 if auto else float(self.temperature)
        self.calibration_ = None
        self._fit_extra(data, values)
        if auto:
            from .calibration import calibrate_temperature

            self.calibration_ = calibrate_temperature(self, data, values)
            self.temperature_ = self.calibration_["temperature"]
        self._set_training_log_likelihood(data, values)
        return self

    def _fit_extra(self, data, values) -> None:
        """Hook for subclasses (the state-space decoder learns its transition here)."""

    def _set_tuning(self, tc: TuningCurves, bin_size: float) -> None:
        self.tuning_ = tc
        self.grid_ = tc.grid
        self.neuron_ids_ = np.asarray(tc.neuron_ids)
        self.bin_size_ = float(bin_size)
        self.log_prior_ = _prior_vector(self.prior, tc)
        self._train_log_likelihood = None
        self.dispersion_ = np.full(tc.n_neuron, np.inf)
        self.temperature_ = 1.0
        self.calibration_ = None

    @classmethod
    def from_tuning_curves(cls, tuning: Any, bin_size: float | None = None, *, dispersion: Any = None,
                           **options: Any) -> NaiveBayesDecoder:
        """A decoder from given tuning curves (a :class:`TuningCurves` or a pynapple DataArray).

        Without training data there is nothing to estimate a dispersion from or to calibrate a
        temperature on, so the observation model is what you give: Poisson and untempered by
        default (pynapple's ``decode_bayes`` model); negative binomial with ``dispersion=``.
        ``temperature="auto"`` raises (it needs training data: use ``fit``).

        Parameters
        ----------
        tuning : TuningCurves or xarray.DataArray
            Rates in Hz per neuron and cell; pynapple's ``compute_tuning_curves`` output works.
        bin_size : float, optional
            Default bin width for plain count arrays passed to ``decode``.
        dispersion : float or array_like, shape (neuron,), optional
            Negative-binomial dispersion per neuron (``inf``: Poisson); sets
            ``observation="negative_binomial"``.
        **options
            Constructor options (``prior``, ``point``, ``temperature`` (a number), ``circular``
            for a pynapple DataArray, ...).
        """
        circular = options.pop("circular", False)
        options.setdefault("observation", "poisson" if dispersion is None else "negative_binomial")
        options.setdefault("temperature", 1.0)
        if options["temperature"] == "auto":
            raise ValueError(
                "temperature='auto' is calibrated on training data, which a decoder from given tuning curves"
                " does not have: give a number (1.0: untempered) or fit the decoder to data"
            )
        if options["observation"] == "negative_binomial" and dispersion is None:
            raise ValueError(
                "observation='negative_binomial' from given tuning curves needs dispersion= (one value per"
                " neuron); or use observation='poisson', or fit the decoder to data to estimate it"
            )
        if not isinstance(tuning, TuningCurves):
            tuning = TuningCurves.from_pynapple(tuning, circular=circular)
        dec = cls(grid=tuning.grid, **options)
        dec._set_tuning(tuning, np.nan if bin_size is None else bin_size)
        if dispersion is not None:
            disp = np.broadcast_to(np.asarray(dispersion, dtype=np.float64).reshape(-1), (tuning.n_neuron,)).copy()
            if np.any(np.isnan(disp)) or np.any(disp <= 0):
                raise ValueError("dispersion must be > 0 (inf for a Poisson neuron), one value per neuron")
            if dec.observation == "poisson" and np.any(np.isfinite(disp)):
                raise ValueError("observation='poisson' takes no finite dispersion")
            dec.dispersion_ = disp
        dec.temperature_ = float(dec.temperature)
        return dec

    # ----------------------------------------------------------------- decoding
    def _prepare(self, data: Any) -> Any:
        self._check_fitted()
        bs = self.bin_size_ if np.isfinite(self.bin_size_) else None
        data = as_spike_data(data, bs)
        return check_neurons(data, self.neuron_ids_)

    @pynapple_io()
    def cell_log_likelihood(self, data: Any) -> np.ndarray:
        """Unnormalised log likelihood plus log prior in every cell, ``(time, G)`` (``-inf`` off the visited cells).

        The terms ``log k!`` are left out (they are the same in every cell); see
        :meth:`log_likelihood` for the log-likelihood of the counts at the true variable.
        """
        data = self._prepare(data)
        return log_posterior(data.counts, self.tuning_.rates, data.bin_size, self.log_prior_,
                             normalize=False, chunk_size=int(self.chunk_size), dispersion=self.dispersion_,
                             temperature=self.temperature_)

    def _pointwise_log_likelihood(self, data: Any, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log pmf (Poisson or negative binomial, untempered) of each bin's counts at the rates of the cell holding the truth.

        Rates are floored at :data:`RATE_FLOOR` as in decoding; a truth in a cell never visited
        in training has no defined rate, and its bin gets ``nan`` (with a warning).
        """
        data = self._prepare(data)
        values = self.grid_.check_inside(np.asarray(truth, dtype=np.float64).reshape(data.n_time, -1), "target")
        cells = self.grid_.locate(values)
        rates = self.tuning_.rates[:, cells].T  # (time, neuron), nan in unvisited cells
        unvisited = ~self.tuning_.visited[cells]
        if unvisited.any():
            warnings.warn(
                f"{int(unvisited.sum())} of {cells.size} bins have the target in a grid cell never visited in"
                " training, where the tuning is undefined: their log-likelihood is nan",
                RuntimeWarning,
                stacklevel=4,
            )
        mu = np.maximum(np.where(np.isfinite(rates), rates, np.nan), RATE_FLOOR) * data.bin_size
        ll = log_pmf(data.counts, mu, self.dispersion_)
        return np.where(unvisited, np.nan, ll), np.arange(data.n_time)

    def _posterior_variables(self):
        grid = self.grid_
        names = tuple(grid.names)
        variables = {
            "rates": (("neuron",) + names, self.tuning_.rates.reshape((-1,) + grid.shape)),
            "log_prior": (names, self.log_prior_.reshape(grid.shape)),
            "dispersion": (("neuron",), np.asarray(self.dispersion_, dtype=np.float64)),
            "temperature": ((), np.float64(self.temperature_)),
        }
        coords = {"neuron": np.asarray(self.neuron_ids_)}
        coords.update({n: c for n, c in zip(names, grid.centers)})
        return variables, coords

    @pynapple_io()
    def decode(self, data: Any) -> GridPosterior:
        """Posterior over the grid for every bin of `data`.

        Parameters
        ----------
        data : SpikeData or ndarray
            Counts of the training neurons (in any order; other sets raise).

        Returns
        -------
        GridPosterior
        """
        data = self._prepare(data)
        lp = self._log_posterior(data, self.temperature_)
        post = GridPosterior(lp, self.grid_, data.bin_centers, point_estimate=self.point)
        return attach_index(post, np.arange(data.n_time))

    def _log_posterior(self, data: Any, temperature: float) -> np.ndarray:
        """Normalised log posterior ``(time, G)`` of prepared `data` with the likelihood tempered by `temperature`."""
        return log_posterior(data.counts, self.tuning_.rates, data.bin_size, self.log_prior_,
                             chunk_size=int(self.chunk_size), dispersion=self.dispersion_, temperature=temperature)

    def _tempered_log_posteriors(self, data: Any, temperatures: Any):
        """``(temperature, log posterior (time, G))`` for each temperature (for the calibration).

        The untempered log likelihood is computed once; each temperature is one division and
        one normalisation.
        """
        data = self._prepare(data)
        mask = np.where(self.tuning_.visited, 0.0, -np.inf)
        ll = log_posterior(data.counts, self.tuning_.rates, data.bin_size, mask, normalize=False,
                           chunk_size=int(self.chunk_size), dispersion=self.dispersion_)
        for T in temperatures:
            lp = ll / T + self.log_prior_[None, :]
            yield float(T), lp - special.logsumexp(lp, axis=1, keepdims=True)
