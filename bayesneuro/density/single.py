r"""Single-neuron statistics with posterior uncertainty.

For each neuron of a :class:`~bayesneuro.density.SpikeTrains`:

- **firing rate** :math:`n / T`; posterior Gamma(:math:`a_0 + n`, :math:`b_0 + T`) of a
  homogeneous Poisson rate (Jeffreys prior :math:`a_0 = 1/2`, :math:`b_0 = 0` by default);
- **ISI CV** :math:`\mathrm{sd}(I) / \mathrm{mean}(I)` (population s.d., as elephant's ``cv``);
- **local variation** (Shinomoto et al. 2003)
  :math:`L_V = \frac{3}{n-1} \sum_i \left(\frac{I_i - I_{i+1}}{I_i + I_{i+1}}\right)^2`
  over consecutive ISI pairs (1 for a Poisson process, 0 for a clock, whatever the rate drift);
- **Fano factor** :math:`\mathrm{var}(N) / \mathrm{mean}(N)` of counts in windows (or trials);
- **burst index**: the fraction of ISIs shorter than ``burst_isi``;
- **refractory violations**: the fraction of ISIs shorter than ``refractory``, a sign of
  contamination of a sorted unit.

Uncertainty. With trials (10 or more segments) every statistic gets a **cluster Bayesian
bootstrap** over trials: Dirichlet weights on whole trials, so trial-to-trial variability (which
a Poisson posterior would ignore) widens the intervals. Otherwise, for one stationary stretch:
rates have the exact Gamma posterior. The two ISI fractions have Beta posteriors
(Jeffreys). CV, :math:`L_V` and the Fano factor have **Bayesian bootstrap** posteriors (Rubin
1981): Dirichlet(1, ..., 1) weights over the ISIs, blocks of 10 consecutive ISI pairs (the
terms of :math:`L_V` overlap, so single pairs would understate its uncertainty) or the windows,
i.e. the posterior of the statistic under a nonparametric model of their distribution. Windows
are taken as exchangeable: slow drifts of the rate raise the Fano factor itself, but the
interval does not allow for the windows' serial correlation. ISIs are formed
within segments only (never across a trial boundary).

References
----------
Shinomoto S, Shima K, Tanji J (2003). Differences in spiking patterns among cortical neurons.
*Neural Computation* 15:2823-2842.
Rubin DB (1981). The Bayesian bootstrap. *Annals of Statistics* 9:130-134.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..estimator import PROB, Estimator, resolve_key
from .trains import ISIArray, SpikeTrains

__all__ = [
    "NeuronStatistics",
    "as_spike_trains",
    "autocorrelogram",
    "burst_index",
    "fano_factor",
    "isi_cv",
    "local_variation",
    "refractory_violations",
]

LV_BLOCK = 10  # consecutive ISI pairs share an ISI: L_V terms are bootstrapped in blocks
MIN_RUNS = 4  # fewer runs of adjacent segments than this: runs are cut into blocks


def resampling_units(segments: Any, *, min_runs: int = MIN_RUNS) -> np.ndarray:
    """Resampling unit of each segment for the trial bootstrap: runs of adjacent segments.

    Trials recorded one after the other share slow drifts (of rate, of burstiness), so
    neighbouring trials are not independent draws. Segments follow each other in a **run** when
    the gap between them is at most the median gap plus the median segment length (the usual
    spacing of trials); a longer gap (another state's trials, a pause) starts a new run. Runs
    are the units. With fewer than `min_runs` runs, each run is cut into blocks of
    ``round(n_segment ** (1/3))`` consecutive segments (the usual block-bootstrap length).

    Parameters
    ----------
    segments : array_like, shape (n_segment, 2)
        Sorted, disjoint ``[start, stop)`` intervals (:attr:`SpikeTrains.segments`).
    min_runs : int

    Returns
    -------
    numpy.ndarray of int, shape (n_segment,)
        Unit index of each segment, ``0 .. n_unit - 1`` in time order.

    Examples
    --------
    >>> from bayesneuro.density.single import resampling_units
    >>> # trials of 2 s laid end to end, with the trials of another state taken out
    >>> resampling_units([[0, 2], [2, 4], [10, 12], [12, 14], [14, 16], [30, 32]], min_runs=2).tolist()
    [0, 0, 1, 1, 1, 2]
    """
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    n = seg.shape[0]
    if n < 2:
        return np.zeros(n, np.int64)
    gaps = seg[1:, 0] - seg[:-1, 1]
    spacing = np.median(gaps) + np.median(seg[:, 1] - seg[:, 0])
    run = np.cumsum(np.r_[True, gaps > spacing * (1 + 1e-9)]) - 1
    if run[-1] + 1 >= min_runs:
        return run
    b = max(1, round(n ** (1 / 3)))
    starts = np.r_[0, np.flatnonzero(np.diff(run)) + 1]
    pos = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.cumsum(np.r_[True, (np.diff(run) != 0) | (pos[1:] % b == 0)]) - 1


def dirichlet_concentration(n_unit: int, prob: float = PROB) -> float:
    r"""Dirichlet concentration of a Bayesian bootstrap over `n_unit` units that gives a mean of
    the units the width of Student's `prob` interval.

    With weights :math:`w \sim \mathrm{Dirichlet}(\alpha \mathbf 1_n)` the weighted mean of
    values with sample variance :math:`s^2` has variance :math:`\frac{n-1}{n(n\alpha + 1)} s^2`.
    Rubin's :math:`\alpha = 1` gives :math:`s^2 (n-1) / (n (n+1))`, narrower than the
    :math:`t_{n-1}` interval (an 87% interval for a nominal 90% one with 20 units); here
    :math:`\alpha = ((n - 1) / f^2 - 1) / n` with :math:`f = t_{n-1,q} / z_q`,
    :math:`q = (1 + \text{prob}) / 2`, floored at 0.05.

    Examples
    --------
    >>> from bayesneuro.density.single import dirichlet_concentration
    >>> round(dirichlet_concentration(20), 3), round(dirichlet_concentration(1000), 3)
    (0.81, 0.996)
    """
    import scipy.stats as sps

    n = int(n_unit)
    if n < 2:
        raise ValueError(f"the bootstrap needs at least 2 units, got {n}")
    q = (1 + float(prob)) / 2
    f = sps.t.ppf(q, n - 1) / sps.norm.ppf(q)
    return float(max(((n - 1) / f**2 - 1) / n, 0.05))
STATISTICS = ("rate", "cv", "lv", "fano", "burst_index", "refractory_violations")


def as_spike_trains(data: Any) -> SpikeTrains:
    """A :class:`SpikeTrains` from itself, a SpikeData (bin centres) or a pynapple TsGroup."""
    if isinstance(data, SpikeTrains):
        return data
    from ..data import SpikeData

    if isinstance(data, SpikeData):
        return SpikeTrains.from_spike_data(data)
    if type(data).__name__ == "TsGroup":
        return SpikeTrains.from_pynapple(data)
    raise TypeError(
        f"expected SpikeTrains, SpikeData or a pynapple TsGroup, got {type(data).__name__}"
    )


# -- point estimates (direct formulas) ----------------------------------------------------


def isi_cv(isi: Any) -> float:
    """Coefficient of variation of inter-spike intervals, ``std(isi) / mean(isi)`` (ddof 0).

    Examples
    --------
    >>> from bayesneuro.density import isi_cv
    >>> round(isi_cv([1.0, 1.0, 1.0]), 6), round(isi_cv([1.0, 3.0]), 6)
    (0.0, 0.5)
    """
    isi = np.asarray(isi, dtype=np.float64)
    if isi.size < 2:
        return float("nan")
    return float(np.std(isi) / np.mean(isi))


def local_variation(isi: Any = None, *, pairs: Any = None) -> float:
    r"""Local variation :math:`L_V` of consecutive ISIs (Shinomoto et al. 2003).

    Give the ISIs of one neuron from :meth:`SpikeTrains.isis` (an :class:`ISIArray`: pairs
    are formed within each segment only, never across a trial boundary or a gap), one unbroken
    sequence of ISIs as a plain array, or ``pairs`` ``(n, 2)`` of consecutive ISIs (as
    :meth:`SpikeTrains.isi_pairs` gives). The value pools the pairs of all segments:
    :math:`3/n \sum` over the :math:`n` within-segment pairs.

    Raises
    ------
    ValueError
        A slice of an ``ISIArray`` (which no longer knows where its segments end).

    Examples
    --------
    >>> from bayesneuro.density import SpikeTrains, local_variation
    >>> round(local_variation([1.0, 1.0, 1.0]), 6), round(local_variation([1.0, 3.0]), 6)
    (0.0, 0.75)
    >>> tr = SpikeTrains([[0.0, 1.0, 2.0, 10.0, 13.0, 16.0]], segments=[[0, 5], [10, 20]])
    >>> round(local_variation(tr.isis()[0]), 6)  # two clock-like trials: 1 s and 3 s ISIs
    0.0
    """
    if pairs is None:
        if isinstance(isi, ISIArray):
            pairs = isi.pairs()
        else:
            isi = np.asarray(isi, dtype=np.float64)
            pairs = np.column_stack([isi[:-1], isi[1:]]) if isi.size > 1 else np.zeros((0, 2))
    pairs = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    if pairs.shape[0] < 1:
        return float("nan")
    return float(3.0 * np.mean(_lv_terms(pairs[:, 0], pairs[:, 1])))


def _lv_terms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``((a - b) / (a + b))**2`` per pair of consecutive ISIs; 0 for two zero ISIs (equal
    intervals, as binned spike times with several spikes in one bin give)."""
    s = a + b
    return np.where(s > 0, ((a - b) / np.where(s > 0, s, 1.0)) ** 2, 0.0)


def fano_factor(counts: Any) -> np.ndarray:
    """Fano factor ``var / mean`` (ddof 0, as elephant) of counts ``(window,)`` or ``(window, neuron)``.

    Examples
    --------
    >>> from bayesneuro.density import fano_factor
    >>> float(fano_factor([2, 2, 2])), float(fano_factor([0, 2]))
    (0.0, 1.0)
    """
    c = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.var(c, axis=0) / np.mean(c, axis=0)


def burst_index(isi: Any, burst_isi: float = 0.006) -> float:
    """Fraction of ISIs shorter than `burst_isi` seconds.

    Examples
    --------
    >>> from bayesneuro.density import burst_index
    >>> burst_index([0.002, 0.003, 0.1, 0.2], burst_isi=0.006)
    0.5
    """
    isi = np.asarray(isi, dtype=np.float64)
    return float(np.mean(isi < burst_isi)) if isi.size else float("nan")


def refractory_violations(isi: Any, refractory: float = 0.0015) -> float:
    """Fraction of ISIs shorter than `refractory` seconds.

    Examples
    --------
    >>> from bayesneuro.density import refractory_violations
    >>> refractory_violations([0.001, 0.01, 0.02, 0.03])
    0.25
    """
    isi = np.asarray(isi, dtype=np.float64)
    return float(np.mean(isi < refractory)) if isi.size else float("nan")


def autocorrelogram(trains: Any, *, bin_size: float = 0.001, window: float = 0.05) -> xr.DataArray:
    """Autocorrelograms: the rate of neuron ``j``'s spikes at lag ``tau`` after one of its own.

    Pairs of spikes are counted within segments; the zero-lag self pair is excluded. Bins
    ``[k * bin_size, (k + 1) * bin_size)`` for ``k = -K .. K - 1`` with ``K = window / bin_size``
    (the negative half mirrors the positive). The value is ``count / (n_spikes * bin_size)`` in
    Hz, which tends to the firing rate at long lags for a stationary train.

    Returns
    -------
    xarray.DataArray
        Dims ``(neuron, lag)``; ``lag`` holds bin centres in seconds.

    Examples
    --------
    >>> from bayesneuro.density import SpikeTrains, autocorrelogram
    >>> tr = SpikeTrains([[0.0, 0.010, 0.020]], segments=[[0, 1]])
    >>> acg = autocorrelogram(tr, bin_size=0.005, window=0.025)
    >>> acg.sel(neuron=0).values.round(1).tolist()  # pairs at +-10 ms (2) and +-20 ms (1)
    [66.7, 0.0, 133.3, 0.0, 0.0, 0.0, 0.0, 133.3, 0.0, 66.7]
    """
    trains = as_spike_trains(trains)
    bin_size, window = float(bin_size), float(window)
    if bin_size <= 0 or window <= 0:
        raise ValueError("bin_size and window must be positive")
    n_bin = int(round(window / bin_size))
    if n_bin < 1 or abs(n_bin * bin_size - window) > 1e-9 * window:
        raise ValueError(f"window ({window}) must be a whole number of bins ({bin_size})")
    out = np.zeros((trains.n_neuron, 2 * n_bin))
    for j, t in enumerate(trains.times):
        seg = trains.segment_of(j)
        pos = np.zeros(n_bin, dtype=np.int64)
        for k in range(1, t.size):
            d = t[k:] - t[:-k]
            ok = (seg[k:] == seg[:-k]) & (d < window)
            if not ok.any():
                if np.all(d >= window):
                    break
                continue
            b = np.floor(d[ok] / bin_size + 1e-9).astype(np.int64)
            pos += np.bincount(b[b < n_bin], minlength=n_bin)
        n = max(t.size, 1)
        rate = pos / (n * bin_size)
        out[j, n_bin:] = rate
        out[j, :n_bin] = rate[::-1]
    lags = (np.arange(-n_bin, n_bin) + 0.5) * bin_size
    return xr.DataArray(out, dims=("neuron", "lag"), coords={"neuron": trains.neuron_ids, "lag": lags},
                        name="autocorrelogram", attrs={"units": "Hz"})


# -- Bayesian bootstrap -------------------------------------------------------------------


def _bb_sums(key, values, group, n_group, num_samples, n_moment=3, block=1):
    """Weighted sums ``sum_i w_i v_i^p`` per group for ``p < n_moment`` under Exp(1) weights.

    ``values`` ``(n,)`` and ``group`` ``(n,)`` (group index of each value, values of a group
    contiguous and in order); one Exp(1) weight per run of `block` consecutive values of a group
    and per draw (normalising them per group gives Dirichlet(1) weights over the blocks: a
    block Bayesian bootstrap, for values that are dependent over short lags).
    Returns ``(num_samples, n_moment, n_group)``.
    """
    values = jnp.asarray(values, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    group_np = np.asarray(group)
    group = jnp.asarray(group_np)
    powers = jnp.stack([values ** p for p in range(n_moment)])  # (m, n)
    starts = np.r_[0, np.flatnonzero(np.diff(group_np)) + 1]
    pos = np.arange(group_np.size) - np.repeat(starts, np.diff(np.r_[starts, group_np.size]))
    blk_np = np.cumsum(np.r_[True, (np.diff(group_np) != 0) | (pos[1:] % block == 0)]) - 1
    blk, n_blk = jnp.asarray(blk_np), int(blk_np[-1]) + 1

    def one(k):
        w = jax.random.exponential(k, (n_blk,), dtype=values.dtype)[blk]
        return jax.vmap(lambda v: jax.ops.segment_sum(w * v, group, num_segments=n_group))(powers)

    keys = jax.random.split(key, num_samples)
    return np.asarray(jax.lax.map(one, keys, batch_size=min(num_samples, 16)))


def _bb_windows(key, counts, num_samples):
    """Bayesian-bootstrap moments of window counts ``(window, neuron)``, one weight per window."""
    c = jnp.asarray(counts, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)

    def one(k):
        w = jax.random.dirichlet(k, jnp.ones(c.shape[0], dtype=c.dtype))
        m = w @ c
        v = w @ (c - m) ** 2
        return jnp.stack([m, v])

    keys = jax.random.split(key, num_samples)
    return np.asarray(jax.lax.map(one, keys, batch_size=min(num_samples, 16)))


# -- estimator ----------------------------------------------------------------------------


def _numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key's bits: the same key gives the same draws, and a
    Gamma, Beta or Dirichlet draw compiles no XLA program (``jax.random.beta`` took 1.4 s to
    compile on a CPU, once per shape)."""
    bits = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(bits).ravel().tolist())


class NeuronStatistics(Estimator):
    """Per-neuron firing statistics with posterior draws.

    Parameters
    ----------
    refractory : float
        ISIs shorter than this (seconds) count as refractory violations. Default 1.5 ms.
    burst_isi : float
        ISIs shorter than this (seconds) count as within-burst. Default 6 ms.
    fano_window : float, optional
        Window (seconds) for the Fano factor; default one window per segment (trial).
    rate_prior : (float, float)
        Gamma shape and rate of the prior on firing rates. Default Jeffreys ``(0.5, 0)``.
    min_isi : int
        Neurons with fewer ISIs get NaN ISI statistics, with a warning that names them.

    Attributes
    ----------
    estimates_ : xarray.Dataset
        Direct estimates per ``neuron``: ``rate`` (Hz), ``cv``, ``lv``, ``fano``,
        ``burst_index``, ``refractory_violations``, and ``n_spikes``, ``n_isi``, ``n_window``.
    posterior_ : xarray.Dataset
        Draws ``(draw, neuron)`` of the six statistics.
    resample_ : str
        ``"segments"`` or ``"intervals"``, as used.
    duration_ : float
        Seconds of recording the statistics came from.

    Notes
    -----
    The likelihood behind :meth:`log_likelihood`, :meth:`score` and the ``log_likelihood`` group
    of :meth:`to_inference_data` is that of the rates: each neuron's spike count in a recording
    of duration :math:`T` is Poisson with mean :math:`\\lambda T`, and the rate's posterior is
    Gamma(:math:`a_0 + n`, :math:`b_0 + T`) (whatever ``method`` gave the draws of the other
    statistics).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density import NeuronStatistics, SpikeTrains
    >>> rng = np.random.default_rng(0)
    >>> tr = SpikeTrains([np.cumsum(rng.exponential(0.1, 600)), np.arange(0.05, 60, 0.1)],
    ...                  segments=[[0, 30], [30, 60]])
    >>> st = NeuronStatistics(fano_window=1.0).fit(tr, key=0, num_samples=200)
    >>> st.estimates_["cv"].values.round(1).tolist()  # Poisson-like vs clock-like
    [1.0, 0.0]
    >>> lo, hi = st.summary(prob=0.95).loc[(0, "rate"), ["lower", "upper"]]
    >>> bool(8 < lo < 10 < hi < 12)  # 95% interval of the rate, Hz
    True
    """

    score_unit = "nats/neuron"
    log_likelihood_dim = "neuron"

    # A statistic a recording cannot define is NaN by design, each with its own warning (the Fano
    # factor of fewer than 2 windows, Lv of fewer than 3 ISIs): not a fit that broke down.
    _nan_allowed = ("estimates_", "posterior_")

    def __init__(self, *, refractory: float = 0.0015, burst_isi: float = 0.006,
                 fano_window: float | None = None, rate_prior: tuple[float, float] = (0.5, 0.0),
                 min_isi: int = 3):
        if float(refractory) < 0 or float(burst_isi) <= 0:
            raise ValueError("refractory must be >= 0 and burst_isi > 0 (seconds)")
        a0, b0 = (float(x) for x in rate_prior)
        if a0 <= 0 or b0 < 0:
            raise ValueError(f"rate_prior must be (shape > 0, rate >= 0), got {rate_prior}")
        self.refractory = refractory
        self.burst_isi = burst_isi
        self.fano_window = fano_window
        self.rate_prior = rate_prior
        self.min_isi = min_isi

    def fit(self, trains: Any, *, method: str = "auto", key: Any = None, progress: bool | None = None,
            num_samples: int = 1000) -> NeuronStatistics:
        """Compute the estimates and draw `num_samples` posterior draws per statistic.

        Parameters
        ----------
        trains : SpikeTrains, SpikeData or pynapple.TsGroup
            Spike times (SpikeData: bin centres, so ISIs below one bin are lost).
        method : {"auto", "segments", "intervals"}
            What the posterior treats as exchangeable. ``"segments"``: whole segments (trials),
            one Dirichlet weight per trial shared by all its ISIs, windows and spikes (a cluster
            Bayesian bootstrap), so trial-to-trial variability widens every interval, rates
            included. ``"intervals"``: the Gamma posterior for rates, Bayesian bootstrap over
            ISIs, blocks of ISI pairs and windows, Beta posteriors for the two fractions: right
            for one stationary stretch of recording. ``"auto"`` (default): segments when there
            are at least 10, intervals otherwise.
        key : jax.random key or int
            Required (posterior draws).
        progress : bool, optional
            Unused (the draws are one vectorised computation); accepted for the common ``fit``
            signature.
        num_samples : int
            Posterior draws.

        Raises
        ------
        ValueError
            Unknown method, ``num_samples < 1``, ``"segments"`` with fewer than 2 segments.
        TypeError
            No key.
        """
        if method not in ("auto", "segments", "intervals"):
            raise ValueError(f"method must be 'auto', 'segments' or 'intervals', got {method!r}")
        trains = as_spike_trains(trains)
        rng = resolve_key(key, needed=True, why="NeuronStatistics.fit (posterior draws)")
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if trains.resolution > float(self.refractory) > 0:
            warnings.warn(
                f"the spike times have resolution {trains.resolution} s, coarser than the refractory "
                f"period {self.refractory} s: violations cannot be seen", stacklevel=2,
            )
        ids = trains.neuron_ids
        n_spk = trains.n_spikes
        isis = trains.isis()
        pairs = trains.isi_pairs()
        counts, win_seg = trains.window_counts(self.fano_window, return_segments=True)
        n_isi = np.array([i.size for i in isis])
        few = n_isi < self.min_isi
        if few.any():
            warnings.warn(
                f"neurons {ids[few][:10].tolist()} have fewer than {self.min_isi} ISIs: their ISI "
                "statistics (cv, lv, burst_index, refractory_violations) are NaN", stacklevel=2,
            )
        if counts.shape[0] < 2:
            warnings.warn("fewer than 2 windows: the Fano factor is NaN (give fano_window)", stacklevel=2)
        silent = counts.sum(axis=0) == 0
        T = trains.duration
        est = {
            "rate": n_spk / T,
            "cv": np.array([isi_cv(i) if not f else np.nan for i, f in zip(isis, few)]),
            "lv": np.array([local_variation(pairs=p) if not f else np.nan for p, f in zip(pairs, few)]),
            "fano": np.where(silent | (counts.shape[0] < 2), np.nan, fano_factor(counts)),
            "burst_index": np.array([burst_index(i, self.burst_isi) if not f else np.nan for i, f in zip(isis, few)]),
            "refractory_violations": np.array([refractory_violations(i, self.refractory) if not f else np.nan
                                               for i, f in zip(isis, few)]),
        }
        resample = method
        if resample == "auto":
            resample = "segments" if trains.n_segment >= 10 else "intervals"
        if resample == "segments":
            if trains.n_segment < 2:
                raise ValueError("method='segments' needs at least 2 segments (trials)")
            draws = self._segment_draws(trains, counts, win_seg, rng, num_samples)
        else:
            draws = self._interval_draws(isis, pairs, counts, n_spk, n_isi, T, rng, num_samples)
        self.resample_ = resample
        for name in ("cv", "lv", "burst_index", "refractory_violations"):
            draws[name] = np.where(few[None, :], np.nan, draws[name])
        draws["fano"] = np.where(silent[None, :], np.nan, draws["fano"])

        coords = {"neuron": ids}
        self.estimates_ = xr.Dataset(
            {k: ("neuron", np.asarray(v, dtype=float)) for k, v in est.items()}
            | {"n_spikes": ("neuron", n_spk), "n_isi": ("neuron", n_isi),
               "n_window": ((), counts.shape[0])},
            coords=coords,
        )
        self.posterior_ = xr.Dataset(
            {k: (("draw", "neuron"), np.asarray(draws[k], dtype=float)) for k in STATISTICS},
            coords=coords | {"draw": np.arange(num_samples)},
        )
        self.estimates_["rate"].attrs["units"] = "Hz"
        self.posterior_["rate"].attrs["units"] = "Hz"
        self.neuron_ids_ = ids
        self.duration_ = float(T)
        return self

    def _interval_draws(self, isis, pairs, counts, n_spk, n_isi, T, rng, num_samples):
        """Gamma rates, Bayesian bootstrap over ISIs / ISI-pair blocks / windows, Beta fractions."""
        n_neuron = len(isis)
        a0, b0 = self.rate_prior
        k_rate, k_cv, k_lv, k_ff, k_b, k_r = jax.random.split(rng, 6)
        draws = {}
        g = _numpy_rng(k_rate).gamma(np.broadcast_to(a0 + n_spk, (num_samples, n_neuron)))
        draws["rate"] = g / (b0 + T)
        # CV from Bayesian-bootstrap moments of the ISIs
        flat = np.concatenate(isis) if n_isi.sum() else np.zeros(0)
        grp = np.repeat(np.arange(n_neuron), n_isi)
        if flat.size:
            s = _bb_sums(k_cv, flat, grp, n_neuron, num_samples)
            with np.errstate(invalid="ignore", divide="ignore"):
                m = s[:, 1] / s[:, 0]
                v = s[:, 2] / s[:, 0] - m**2
                draws["cv"] = np.sqrt(np.maximum(v, 0)) / m
        else:
            draws["cv"] = np.full((num_samples, n_neuron), np.nan)
        n_pair = np.array([p.shape[0] for p in pairs])
        if n_pair.sum():
            P = np.concatenate(pairs)
            terms = _lv_terms(P[:, 0], P[:, 1])
            s = _bb_sums(k_lv, terms, np.repeat(np.arange(n_neuron), n_pair), n_neuron, num_samples, 2, block=LV_BLOCK)
            with np.errstate(invalid="ignore", divide="ignore"):
                draws["lv"] = 3.0 * s[:, 1] / s[:, 0]
        else:
            draws["lv"] = np.full((num_samples, n_neuron), np.nan)
        if counts.shape[0] >= 2:
            mv = _bb_windows(k_ff, counts, num_samples)
            with np.errstate(invalid="ignore", divide="ignore"):
                draws["fano"] = mv[:, 1] / mv[:, 0]
        else:
            draws["fano"] = np.full((num_samples, n_neuron), np.nan)
        for name, k, thr in (("burst_index", k_b, self.burst_isi), ("refractory_violations", k_r, self.refractory)):
            hits = np.array([np.sum(i < thr) for i in isis], dtype=float)
            draws[name] = _numpy_rng(k).beta(0.5 + hits, 0.5 + n_isi - hits, (num_samples, n_neuron))

        return draws

    def _segment_draws(self, trains, counts, win_seg, rng, num_samples):
        """Bayesian bootstrap over segments (trials): one Dirichlet weight per segment, shared by
        every ISI, ISI pair, window and spike in it, and by all neurons."""
        n_seg, n_neuron = trains.n_segment, trains.n_neuron
        F = np.zeros((n_seg, 12, n_neuron))
        for j, t in enumerate(trains.times):
            k = trains.segment_of(j)
            d = np.diff(t)
            same = k[1:] == k[:-1]
            isi, ks = d[same], k[1:][same]
            F[:, 0, j] = np.bincount(ks, minlength=n_seg)
            F[:, 1, j] = np.bincount(ks, isi, minlength=n_seg)
            F[:, 2, j] = np.bincount(ks, isi**2, minlength=n_seg)
            pair = same[1:] & same[:-1]
            a, b = d[:-1][pair], d[1:][pair]
            kp = k[2:][pair]
            F[:, 3, j] = np.bincount(kp, minlength=n_seg)
            F[:, 4, j] = np.bincount(kp, _lv_terms(a, b), minlength=n_seg)
            F[:, 8, j] = np.bincount(k, minlength=n_seg)
            F[:, 10, j] = np.bincount(ks, isi < self.burst_isi, minlength=n_seg)
            F[:, 11, j] = np.bincount(ks, isi < self.refractory, minlength=n_seg)
        c = counts.astype(float)
        F[:, 5, :] = np.bincount(win_seg, minlength=n_seg)[:, None]
        for j in range(n_neuron):
            F[:, 6, j] = np.bincount(win_seg, c[:, j], minlength=n_seg)
            F[:, 7, j] = np.bincount(win_seg, c[:, j] ** 2, minlength=n_seg)
        F[:, 9, :] = (trains.segments[:, 1] - trains.segments[:, 0])[:, None]
        # the units: runs of adjacent trials (which share slow drifts), one weight each, with
        # the concentration that gives a mean of few units the width of a t interval
        unit = resampling_units(trains.segments)
        n_unit = int(unit[-1]) + 1
        if n_unit < 5:
            warnings.warn(
                f"the trial bootstrap has only {n_unit} independent units (runs of adjacent trials): "
                "its intervals are rough; record more, separated trials", stacklevel=3,
            )
        Fu = np.zeros((n_unit,) + F.shape[1:])
        np.add.at(Fu, unit, F)
        self.n_units_ = n_unit
        k_w, k_b, k_r = jax.random.split(rng, 3)
        alpha = dirichlet_concentration(n_unit) if n_unit >= 2 else 1.0
        # numpy's Dirichlet, seeded by the key: the number of units changes with every state and
        # resample, and a jax draw would compile anew for each
        g = _numpy_rng(k_w).gamma(alpha, size=(num_samples, n_unit))
        W = g / g.sum(axis=1, keepdims=True) * n_unit
        A = (W @ Fu.reshape(n_unit, -1)).reshape(num_samples, 12, n_neuron)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = A[:, 1] / A[:, 0]
            mw = A[:, 6] / A[:, 5]
            return {
                "rate": A[:, 8] / A[:, 9],
                "cv": np.sqrt(np.maximum(A[:, 2] / A[:, 0] - m**2, 0)) / m,
                "lv": 3.0 * A[:, 4] / A[:, 3],
                "fano": (A[:, 7] / A[:, 5] - mw**2) / mw,
                # rare events: a Jeffreys Beta on the trial-weighted counts, so that zero
                # violations in both states are not made different by the counts of ISIs alone
                "burst_index": _numpy_rng(k_b).beta(0.5 + A[:, 10], 0.5 + A[:, 0] - A[:, 10]),
                "refractory_violations": _numpy_rng(k_r).beta(0.5 + A[:, 11], 0.5 + A[:, 0] - A[:, 11]),
            }

    # -- likelihood of the rates ------------------------------------------------------------------

    def _counts(self, trains: Any) -> tuple[np.ndarray, float]:
        self._check_fitted()
        trains = as_spike_trains(trains)
        if trains.n_neuron != len(self.neuron_ids_):
            raise ValueError(f"trains have {trains.n_neuron} neurons but the model was fitted to "
                             f"{len(self.neuron_ids_)}")
        return np.asarray(trains.n_spikes, dtype=float), float(trains.duration)

    def _gamma(self) -> tuple[np.ndarray, float]:
        a0, b0 = (float(x) for x in self.rate_prior)
        return a0 + np.asarray(self.estimates_["n_spikes"].values, dtype=float), b0 + self.duration_

    def log_likelihood(self, trains: Any) -> np.ndarray:
        """Poisson log-probability (nats) of each neuron's spike count in `trains`, shape (neuron,).

        At the fitted estimate: the posterior mean rate :math:`(a_0 + n)/(b_0 + T)` times the
        duration of `trains`.
        """
        from scipy.stats import poisson

        n_new, t_new = self._counts(trains)
        shape, rate = self._gamma()
        return poisson.logpmf(n_new, shape / rate * t_new)

    def _log_predictive(self, trains: Any) -> np.ndarray:
        from scipy.stats import nbinom

        n_new, t_new = self._counts(trains)
        shape, rate = self._gamma()
        return nbinom.logpmf(n_new, shape, rate / (rate + t_new))

    def score(self, trains: Any) -> float:
        """Log posterior predictive probability of each neuron's spike count in `trains`, averaged
        over neurons, in nats/neuron (higher is better; a proper score for held-out data).

        The count of a neuron in a recording of duration :math:`T'` has the negative binomial
        predictive of the Gamma(:math:`a_0 + n`, :math:`b_0 + T`) rate posterior.
        """
        return float(np.mean(self._log_predictive(trains)))

    def evaluate(self, trains: Any) -> dict:
        """Held-out metrics per neuron.

        Returns
        -------
        dict
            ``log_predictive`` (neuron,): the terms of :meth:`score`; ``log_likelihood``
            (neuron,): :meth:`log_likelihood`; ``n_spikes`` (neuron,) and ``duration`` (s) of
            `trains`; ``score`` (nats/neuron).
        """
        n_new, t_new = self._counts(trains)
        lp = self._log_predictive(trains)
        return {"log_predictive": lp, "log_likelihood": self.log_likelihood(trains), "n_spikes": n_new,
                "duration": t_new, "score": float(np.mean(lp))}

    def summary(self, prob: float = PROB):
        """Estimate, posterior mean and equal-tailed `prob` interval per ``(neuron, statistic)``.

        Returns
        -------
        pandas.DataFrame
            Index ``(neuron, statistic)``; columns ``estimate``, ``mean``, ``lower``, ``upper``.
        """
        import pandas as pd

        self._check_fitted()
        if not 0 < prob < 1:
            raise ValueError(f"prob must be in (0, 1), got {prob}")
        rows = []
        q = [(1 - prob) / 2, (1 + prob) / 2]
        for j, nid in enumerate(self.neuron_ids_.tolist()):
            for s in STATISTICS:
                d = self.posterior_[s].values[:, j]
                ok = np.isfinite(d)
                lo, hi = np.quantile(d[ok], q) if ok.any() else (np.nan, np.nan)
                rows.append((nid, s, float(self.estimates_[s].values[j]),
                             float(d[ok].mean()) if ok.any() else np.nan, lo, hi))
        df = pd.DataFrame(rows, columns=["neuron", "statistic", "estimate", "mean", "lower", "upper"])
        return df.set_index(["neuron", "statistic"])

    def features(self, names: tuple[str, ...] = ("rate", "cv", "lv", "fano", "burst_index"), *,
                 log: tuple[str, ...] = ("rate", "fano")):
        """A ``(neuron, feature)`` table of estimates for clustering (e.g. :class:`NeuronTypes`).

        Statistics in `log` are log-transformed (and renamed ``log_<name>``). Neurons with a
        NaN feature are dropped with a warning that names them.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        self._check_fitted()
        cols = {}
        for n in names:
            if n not in STATISTICS:
                raise ValueError(f"unknown statistic {n!r}; choose from {STATISTICS}")
            v = self.estimates_[n].values
            if n in log:
                with np.errstate(divide="ignore"):
                    v = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
                cols[f"log_{n}"] = v
            else:
                cols[n] = v
        df = pd.DataFrame(cols, index=pd.Index(self.neuron_ids_, name="neuron"))
        bad = ~np.isfinite(df.values).all(axis=1)
        if bad.any():
            warnings.warn(f"neurons {df.index[bad][:10].tolist()} have undefined features and are dropped",
                          stacklevel=2)
        return df[~bad]

    def posterior_statistics(self, *, key: Any = None, num_samples: int | None = None) -> dict:
        """Posterior draws per statistic, each ``(draw, neuron)`` (for :func:`compare_states`).

        `num_samples` draws are taken (with replacement, by `key`, which is then required) from
        the stored ones when it differs from their number.
        """
        self._check_fitted()
        out = {k: self.posterior_[k] for k in STATISTICS}
        n = self.posterior_.sizes["draw"]
        if num_samples is not None and int(num_samples) != n:
            key = resolve_key(key, needed=True, why="resampling the posterior draws")
            idx = np.asarray(jax.random.choice(key, n, (int(num_samples),)))
            out = {k: v.isel(draw=idx).assign_coords(draw=np.arange(len(idx))) for k, v in out.items()}
        return out

    def to_inference_data(self):
        """The posterior draws as ArviZ InferenceData (one chain), for ``az.summary`` and plots.

        ``posterior``: the draws ``(chain, draw, neuron)`` of every statistic; ``constant_data``:
        the estimates; ``log_likelihood``: ``n_spikes`` ``(chain, draw, neuron)``, the Poisson
        log-probability of each neuron's training spike count at the draw's rate.
        """
        import arviz as az
        from scipy.stats import poisson

        self._check_fitted()
        post = self.posterior_.expand_dims(chain=[0])
        n = np.asarray(self.estimates_["n_spikes"].values, dtype=float)
        ll = poisson.logpmf(n[None], self.posterior_["rate"].values * self.duration_)
        lik = xr.Dataset({"n_spikes": (("chain", "draw", "neuron"), ll[None])},
                         coords={"chain": [0], "draw": self.posterior_["draw"].values, "neuron": self.neuron_ids_})
        return az.InferenceData(posterior=post, constant_data=self.estimates_, log_likelihood=lik)
