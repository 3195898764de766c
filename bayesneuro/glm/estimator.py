"""The :class:`PoissonGLM` estimator: encoding models with stimulus, history and coupling filters."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro.infer import init_to_value

from .. import bases as _bases
from .._pynapple import pynapple_io
from .._shapes import bucket_length, pad_axis, unpad_result
from ..data import SpikeData
from ..estimator import PROB, Estimator, resolve_key
from ..infer import Proximal
from ..infer._model import to_device
from ..infer import fit as _fit
from . import scores as _scores
from ._model import (
    GROUP_LASSO_SITE,
    LINKS,
    OBSERVATIONS,
    GLMSpec,
    StimulusGroup,
    coupling_mask,
    expected_counts,
    fft_size,
    fft_spectra_jit,
    glm_model,
    linear_predictor,
    mask_self,
)
from .priors import GroupLasso, Prior, Ridge
from .simulate import feedback_kernel, simulate_counts

__all__ = ["GLMSimulation", "PoissonGLM"]

_RESERVED = ("bias", "concentration", "history", "coupling", "counts")
#: model arrays with a leading time axis (padded to a bucket length for MAP and Laplace, see ``PoissonGLM.fit``)
_TIME_KEYS = ("stimulus", "history", "coupling", "rows", "mask")



class GLMSimulation(NamedTuple):
    """Output of :meth:`PoissonGLM.simulate`.

    Attributes
    ----------
    data : SpikeData
        Simulated counts on the time bins (and with the covariates) of the input.
    rates : numpy.ndarray, shape (time, neuron)
        Conditional intensity in spikes/s, capped at ``max_rate``.
    runaway : bool
        Whether any neuron's rate stayed at ``max_rate`` for ``runaway_bins`` bins in a row:
        the feedback is unstable.
    first_runaway : numpy.ndarray, shape (neuron,)
        Time (s, bin centre) at which each neuron ran away; NaN if never.
    n_capped : numpy.ndarray, shape (neuron,)
        Bins in which each neuron's rate was capped (brief peaks count here too).
    """

    data: SpikeData
    rates: np.ndarray
    runaway: bool
    first_runaway: np.ndarray
    n_capped: np.ndarray


def _with_history(basis, history: bool):
    """The basis with its ``history`` flag set, for bases that carry one."""
    if hasattr(basis, "history") and dataclasses.is_dataclass(basis) and basis.history != history:
        return dataclasses.replace(basis, history=history)
    return basis


def _check_basis(name: str, basis) -> _bases.Basis:
    if not isinstance(basis, _bases.Basis):
        raise TypeError(f"{name} must be a bayesneuro.bases.Basis, got {type(basis).__name__}")
    return basis


def _check_prior(name: str, prior) -> Prior:
    if not isinstance(prior, Prior):
        raise TypeError(
            f"{name} must be a prior from bayesneuro.glm (Ridge, Smooth, ARD, Horseshoe), "
            f"got {type(prior).__name__}"
        )
    return prior


def _precondition(z: dict, p: dict) -> dict:
    """The GLM's linear change of variables (see ``PoissonGLM._preconditioner``); pure JAX."""
    x = dict(z)
    scale, shift = p["scale"], 0.0
    for name, (A, mean) in p["maps"].items():
        v = z[name]
        if name == "history_weights":  # (basis, neuron), one A per target neuron
            w = jnp.einsum("nbc,cn->bn", A, v) * scale
            shift = shift + jnp.einsum("nb,bn->n", mean, w)
        elif name == "coupling_weights":  # (source, basis, neuron), one A per source
            w = jnp.einsum("mbc,mcn->mbn", A, v) * scale
            shift = shift + jnp.einsum("mb,mbn->n", mean, w * p["mask"][:, None, :])
        else:  # stimulus block: (feature * basis, neuron)
            w = ((A @ v.reshape(A.shape[0], -1)) * scale).reshape(v.shape)
            shift = shift + mean @ w.reshape(A.shape[0], -1)
        x[name] = w
    x["bias"] = z["bias"] * scale - shift
    return x


def _group_soft_threshold(z: dict, step, threshold) -> dict:
    """Proximal step of the coupling group lasso on preconditioned variables; pure JAX."""
    v = z["coupling_weights"]  # (source, basis, neuron)
    norm = jnp.sqrt(jnp.sum(v**2, axis=1, keepdims=True))
    thr = step * threshold[:, None, :]
    shrink = jnp.where(norm > thr, 1.0 - thr / jnp.where(norm > 0, norm, 1.0), 0.0)
    return {**z, "coupling_weights": v * shrink}


class PoissonGLM(Estimator):
    r"""Generalised linear encoding model of a population: stimulus, spike-history and coupling filters.

    For each neuron ``n``, the rate in spikes/s is

    .. math::

        \lambda_n(t) = f\Big(b_n + \sum_g (k_{g,n} * s_g)(t) + (h_n * y_n)(t)
                         + \sum_{m \ne n} (c_{nm} * y_m)(t)\Big),

    with ``f`` = exp or softplus, stimulus filters ``k`` on each covariate group ``s_g``
    (current frame included), a spike-history filter ``h`` and coupling filters ``c``
    (current bin excluded). Every filter is a weighted sum of a temporal basis. All neurons
    share one design, so the whole population is one model with weights per neuron and one
    compilation, fitted by any method of :func:`bayesneuro.infer.fit`.

    The constructor holds the model's structure only (bases, priors, observation model), each
    argument stored as passed; how to fit it (method, ``max_iter``, ``tol``, draws) goes to
    :meth:`fit`.

    Parameters
    ----------
    stimulus_basis : Basis, dict, or None
        Temporal basis of the stimulus filters. One basis: every covariate of the data gets a
        filter on it (a multi-column stimulus, e.g. pixels, gives a spatio-temporal filter).
        A dict ``{feature name: Basis}``: a filter on its own basis per named covariate
        (other covariates are not used). None: covariates enter as plain regressors at lag 0.
        A basis's ``history`` flag is ignored here: stimulus filters include the current bin.
    history_basis : Basis, optional
        Basis of each neuron's own spike-history filter; None for no history term.
    coupling : bool, default False
        Add coupling filters from every other neuron (on ``coupling_basis``).
    coupling_basis : Basis, optional
        Basis of the coupling filters; None: the ``history_basis``.
    coupling_sources : sequence of neuron ids, optional
        With ``coupling=True``: the neurons of the data whose spikes drive the modelled neurons
        through coupling filters (default None: every neuron). The coupling filters from any
        other neuron are fixed at exactly zero (the sum over ``m`` above runs over these
        sources only); a modelled neuron's own spikes still act through its history filter.
        E.g. ``coupling_sources=pmd_ids`` with ``fit(data, neurons=m1_ids)`` models M1 driven by
        PMd with no M1 -> M1 coupling. The ids are checked against the data by :meth:`fit`.
    observation : {"poisson", "bernoulli", "negative-binomial"}
        Count distribution per bin. Bernoulli models ``P(spike) = 1 - exp(-rate * dt)``.
    link : {"exp", "softplus"}
        Inverse link from the linear predictor to the rate.
    prior : Prior or "auto", optional
        Prior of every filter's basis weights, unless set per block below; None: ``Ridge(1.0)``.
        ``"auto"``: a Ridge whose scale :meth:`fit` chooses among ``glm.priors.RIDGE_CANDIDATES``
        by held-out log-likelihood on the last quarter of the training data
        (:func:`~bayesneuro.glm.priors.select_ridge_scale`; attributes ``prior_scale_`` and
        ``prior_selection_``). The fixed ``Ridge(1.0)`` can over-fit coupling filters: on 40 s of
        28 motor-cortex neurons (10-ms bins) it scores -0.04 bits/spike on later data, where
        ``"auto"`` (it chose 0.1) scores +0.12.
    stimulus_prior, history_prior, coupling_prior : Prior, optional
        Per-block priors, e.g. ``coupling_prior=ARD()`` for a sparse network (NUTS / SVI);
        None: ``prior``.
    bias_prior : (float, float) or None, default (0.0, 10.0)
        Normal ``(loc, scale)`` prior of the bias (log spikes/s for the exp link). None: flat,
        so MAP leaves the bias unpenalised as in sklearn and statsmodels.
    filter_mode : {"fft", "design"}, default "fft"
        How history and coupling terms are computed. ``"fft"``: the filters are rebuilt from
        their weights at every step and convolved with the spikes by overlap-save FFT, so
        memory grows as ``time x neuron`` (no design matrix). ``"design"``: spikes are
        convolved with each basis function once, and the terms are products with that
        ``(time, source, basis)`` design. Both compute the same model, and MAP reaches the
        same optimum by both (relative objective difference ~1e-15 on ``bench/glm.py``).
    exclude_initial_bins : bool, default False
        Leave the first bins of every trial (segment) out of the likelihood: those whose filter
        window is incomplete, i.e. the longest history/coupling basis ``window`` (stimulus
        bases, which include the current bin: ``window - 1``). This is what users of nemos,
        statsmodels or sklearn do when they build a design matrix and drop its first rows, so
        with it the MAP objective and estimate are those tools' on the same rows. Scores
        (:meth:`log_likelihood`, :meth:`score`, :meth:`evaluate`, :meth:`pseudo_r2`) then use
        the remaining bins only; :meth:`predict_rate` still predicts every bin (the first ones
        from the partial history).

    Attributes
    ----------
    score_unit : str
        ``"bits/spike"``: :meth:`score` is the held-out information gain per spike.
    log_likelihood_dim : str
        ``"time"``: :meth:`log_likelihood` has one value per time bin (summed over neurons).
    result_ : FitResult
        The fit (draws shaped ``(chain, draw, ...)``).
    params_ : dict
        Point estimate of every site: the MAP, or the posterior mean.
    neuron_ids_, feature_names_ : numpy.ndarray, tuple
        Neurons and covariates of the training data.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> rng = np.random.default_rng(0)
    >>> data = bn.SpikeData.from_counts(rng.poisson(0.05, size=(2000, 3)), bin_size=0.005)
    >>> glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=20), coupling=True)
    >>> _ = glm.fit(data, method="map", progress=False)  # MAP draws no random numbers: no key
    >>> glm.predict_rate(data).shape
    (2000, 3)
    >>> glm.log_likelihood(data).shape  # one value per time bin
    (2000,)
    >>> type(glm.score(data))
    <class 'float'>

    One region driving another: neuron 0 drives the modelled neurons 1 and 2 through coupling
    filters, and 1 and 2 do not couple to each other (those filters are fixed at zero).

    >>> glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=20), coupling=True,
    ...                     coupling_sources=[0])
    >>> _ = glm.fit(data, neurons=[1, 2], progress=False)
    >>> bool((glm.coupling_matrix().sel(source=[1, 2]) == 0).all())
    True
    >>> glm.coupling_matrix().dims
    ('neuron', 'source')
    """

    score_unit = "bits/spike"
    #: pseudo-R^2 is not defined for observation="negative-binomial" (NaN by design)
    _nan_allowed = ("pseudo_r2",)
    log_likelihood_dim = "time"

    def __init__(
        self,
        *,
        stimulus_basis: Any = None,
        history_basis: _bases.Basis | None = None,
        coupling: bool = False,
        coupling_basis: _bases.Basis | None = None,
        coupling_sources: Any = None,
        observation: str = "poisson",
        link: str = "exp",
        prior: Prior | None = None,
        stimulus_prior: Prior | None = None,
        history_prior: Prior | None = None,
        coupling_prior: Prior | None = None,
        bias_prior: tuple[float, float] | None = (0.0, 10.0),
        filter_mode: str = "fft",
        exclude_initial_bins: bool = False,
    ):
        if filter_mode not in ("fft", "design"):
            raise ValueError(f"filter_mode must be 'fft' or 'design', got {filter_mode!r}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, got {link!r}")
        for name, value in (("prior", prior), ("stimulus_prior", stimulus_prior),
                            ("history_prior", history_prior), ("coupling_prior", coupling_prior)):
            if value is not None and not (name == "prior" and isinstance(value, str) and value == "auto"):
                _check_prior(name, value)
        base = Ridge(1.0) if prior is None or isinstance(prior, str) else prior
        for which, value in (("stimulus_prior", stimulus_prior), ("history_prior", history_prior)):
            if isinstance(base if value is None else value, GroupLasso):
                raise ValueError(  # noqa: TRY004 - a valid type in the wrong place
                    f"GroupLasso is a prior on coupling filters (pass coupling_prior=GroupLasso(...)); "
                    f"{which} cannot be GroupLasso (use ARD or Horseshoe for sparse stimulus filters)"
                )
        if isinstance(stimulus_basis, Mapping):
            for k, v in stimulus_basis.items():
                _check_basis(f"stimulus_basis[{k!r}]", v)
                if str(k) in _RESERVED:
                    raise ValueError(f"stimulus_basis: feature name {str(k)!r} is reserved; rename the covariate")
        elif stimulus_basis is not None:
            _check_basis("stimulus_basis", stimulus_basis)
        if history_basis is not None:
            _check_basis("history_basis", history_basis)
        if coupling_basis is not None:
            _check_basis("coupling_basis", coupling_basis)
        if coupling and coupling_basis is None and history_basis is None:
            raise ValueError("coupling=True needs a coupling_basis (or a history_basis to share)")
        if coupling_sources is not None:
            if not coupling:
                raise ValueError(
                    "coupling_sources names the neurons that drive the others through coupling "
                    "filters, but coupling=False: pass coupling=True (or drop coupling_sources)"
                )
            ids = np.atleast_1d(np.asarray(coupling_sources)).ravel().tolist()
            if not ids:
                raise ValueError("coupling_sources is empty: name at least one neuron, or use coupling=False")
            if len(set(ids)) != len(ids):
                raise ValueError(f"coupling_sources names a neuron more than once: {ids}")
        if bias_prior is not None:
            loc, scale = (float(v) for v in bias_prior)
            if not (math.isfinite(loc) and math.isfinite(scale) and scale > 0):
                raise ValueError(f"bias_prior must be (loc, scale > 0), got {bias_prior}")
        self.stimulus_basis = stimulus_basis
        self.history_basis = history_basis
        self.coupling = coupling
        self.coupling_basis = coupling_basis
        self.coupling_sources = coupling_sources
        self.observation = observation
        self.link = link
        self.prior = prior
        self.stimulus_prior = stimulus_prior
        self.history_prior = history_prior
        self.coupling_prior = coupling_prior
        self.bias_prior = bias_prior
        self.filter_mode = filter_mode
        self.exclude_initial_bins = exclude_initial_bins

    # ------------------------------------------------------------------------------------------
    # effective structure (the constructor arguments with their defaults filled in)
    # ------------------------------------------------------------------------------------------

    def _block_prior(self, block: Prior | None) -> Prior:
        if block is not None:
            return block
        if isinstance(self.prior, str):  # "auto": the scale fit() chose on held-out data
            return Ridge(self.prior_scale_)
        return Ridge(1.0) if self.prior is None else self.prior

    @property
    def _stim_prior(self) -> Prior:
        return self._block_prior(self.stimulus_prior)

    @property
    def _hist_prior(self) -> Prior:
        return self._block_prior(self.history_prior)

    @property
    def _coup_prior(self) -> Prior:
        return self._block_prior(self.coupling_prior)

    @property
    def _coupled(self) -> bool:
        return bool(self.coupling)

    @property
    def _coup_basis(self) -> _bases.Basis | None:
        """The coupling filters' basis: ``coupling_basis``, else the history basis (same object)."""
        return self.history_basis if self.coupling_basis is None else self.coupling_basis

    @property
    def _stim_bases(self):
        """``stimulus_basis`` with the keys of a dict as strings."""
        sb = self.stimulus_basis
        return {str(k): v for k, v in sb.items()} if isinstance(sb, Mapping) else sb

    @property
    def _bias(self) -> tuple[float, float] | None:
        return None if self.bias_prior is None else tuple(float(v) for v in self.bias_prior)

    def _source_index(self, data: SpikeData) -> tuple[int, ...]:
        """Sorted columns of ``coupling_sources`` in `data`; ``()`` when every neuron is a source."""
        if self.coupling_sources is None or not self._coupled:
            return ()
        wanted = np.atleast_1d(np.asarray(self.coupling_sources)).ravel().tolist()
        where = {v: i for i, v in enumerate(data.neuron_ids.tolist())}
        missing = [v for v in wanted if v not in where]
        if missing:
            raise ValueError(
                f"coupling_sources {missing} are not in the data (neuron ids {data.neuron_ids.tolist()})"
            )
        idx = sorted({where[v] for v in wanted})
        return () if len(idx) == data.n_neuron else tuple(idx)

    @staticmethod
    def _all(data: SpikeData, tidx) -> np.ndarray:
        """Positions of the modelled neurons among the data's (`tidx`; None: all of them)."""
        return np.arange(data.n_neuron) if tidx is None else np.asarray(tidx)

    # ------------------------------------------------------------------------------------------
    # design
    # ------------------------------------------------------------------------------------------

    def _groups(self, feature_names: tuple[str, ...]) -> list[tuple[str, tuple[str, ...], _bases.Basis, Prior]]:
        sb = self._stim_bases
        if isinstance(sb, dict):
            missing = [k for k in sb if k not in feature_names]
            if missing:
                raise ValueError(
                    f"stimulus_basis names covariates {missing} that the data do not have "
                    f"(its feature_names are {list(feature_names)})"
                )
            return [(k, (k,), _with_history(b, False), self._stim_prior) for k, b in sb.items()]
        if not feature_names:
            if sb is not None:
                raise ValueError("stimulus_basis is set but the data have no covariates")
            return []
        basis = _bases.Identity(1) if sb is None else _with_history(sb, False)
        return [("stimulus", tuple(feature_names), basis, self._stim_prior)]

    def _spec(self, data: SpikeData, tidx=None) -> GLMSpec:
        """Static configuration of the model of the neurons at `tidx` (None: all) of `data`."""
        tidx = self._all(data, tidx)
        groups = self._groups(data.feature_names)
        if self.history_basis is None and not self._coupled and not groups:
            warnings.warn(
                "the GLM has no stimulus, history or coupling terms: it fits a constant rate per neuron",
                stacklevel=3,
            )
        return GLMSpec(
            n_neuron=len(tidx),
            n_source=data.n_neuron,
            bin_size=data.bin_size,
            observation=self.observation,
            link=self.link,
            stimulus=tuple(StimulusGroup(n, f, b.n_basis, p) for n, f, b, p in groups),
            history_basis=0 if self.history_basis is None else self.history_basis.n_basis,
            history_prior=self._hist_prior,
            coupling_basis=self._coup_basis.n_basis if self._coupled else 0,
            coupling_prior=self._coup_prior,
            coupling_shares_history=self._coup_basis is self.history_basis,
            bias_prior=self._bias,
            self_index=tuple(int(i) for i in tidx),
            coupling_sources=self._source_index(data),
            coupling_gram=self._coupling_gram(),
            **self._fft_spec(),
        )

    def _coupling_gram(self) -> tuple:
        if not (self._coupled and isinstance(self._coup_prior, GroupLasso)):
            return ()
        B = np.asarray(_with_history(self._coup_basis, True).matrix(), dtype=float)
        return tuple(map(tuple, B.T @ B))

    def _fft_spec(self) -> dict:
        if self.filter_mode != "fft" or (self.history_basis is None and not self._coupled):
            return {}

        def rows(basis):
            if basis is None:
                return ()
            return tuple(map(tuple, np.asarray(_with_history(basis, True).matrix(), dtype=float)))

        hist = rows(self.history_basis)
        coup = rows(self._coup_basis) if self._coupled else ()
        return {
            "filter_mode": "fft",
            "history_matrix": hist,
            "coupling_matrix": coup,
            "n_fft": fft_size(max(len(hist), len(coup))),
        }

    def _max_lag(self) -> int:
        return max((b.window for b in (self.history_basis, self._coup_basis if self._coupled else None) if b is not None), default=0)

    def _check_data(self, data: SpikeData, *, fitting: bool, tidx=None) -> None:
        """Check `data` for a fit of the neurons at `tidx` (None: all), or against the fit."""
        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")
        windows = [b.window for b in (self.history_basis, self._coup_basis) if b is not None]
        sb = self._stim_bases
        if isinstance(sb, dict):
            windows += [b.window for b in sb.values()]
        elif sb is not None:
            windows.append(sb.window)
        longest = max(windows, default=1)
        if data.n_time <= longest:
            raise ValueError(
                f"the recording is too short: {data.n_time} bins, but the longest filter spans "
                f"{longest} bins; use more data or shorter bases"
            )
        if self.observation == "bernoulli" and data.counts.max() > 1:
            raise ValueError(
                "observation='bernoulli' needs 0/1 counts, but some bins hold more than one spike; "
                "use smaller bins or observation='poisson'"
            )
        if fitting:
            tidx = self._all(data, tidx)
            silent = data.neuron_ids[tidx][data.counts[:, tidx].sum(axis=0) == 0]
            if silent.size:
                raise ValueError(
                    f"neurons {silent.tolist()} have no spikes in the training data, so their rate "
                    "has no finite maximum-likelihood estimate; remove them (data.select_neurons) "
                    "or give bias_prior"
                    if self.bias_prior is None
                    else f"neurons {silent.tolist()} have no spikes in the training data; remove them "
                    "with data.select_neurons (their filters cannot be estimated)"
                )
            if data.covariates is not None:
                sd = data.covariates.std(axis=0)
                used = {f for _, fs, _, _ in self._groups(data.feature_names) for f in fs}
                const = [f for f, s in zip(data.feature_names, sd) if s == 0 and f in used]
                if const:
                    raise ValueError(
                        f"covariates {const} are constant over the training data: their filter "
                        "cannot be told apart from the bias; drop them (or add variation)"
                    )
        else:
            self._check_fitted()
            if data.n_neuron != len(self.source_ids_) or np.any(data.neuron_ids != self.source_ids_):
                raise ValueError(
                    f"data neuron ids {data.neuron_ids.tolist()} differ from those the GLM was "
                    f"fitted to {self.source_ids_.tolist()}"
                )
            if tuple(data.feature_names) != tuple(self.feature_names_):
                raise ValueError(
                    f"data covariates {list(data.feature_names)} differ from those the GLM was "
                    f"fitted to {list(self.feature_names_)}"
                )
            if not math.isclose(data.bin_size, self.bin_size_, rel_tol=1e-9):
                raise ValueError(
                    f"data bin size {data.bin_size} s differs from the fitted one {self.bin_size_} s"
                )

    def _n_initial(self) -> int:
        """Bins at the start of a trial whose filter window is incomplete (see ``exclude_initial_bins``)."""
        spike = [b.window for b in (self.history_basis, self._coup_basis if self._coupled else None) if b is not None]
        sb = self._stim_bases
        stim = [b.window - 1 for b in (sb.values() if isinstance(sb, dict) else [sb]) if b is not None]
        return max([*spike, *stim, 0])

    def _included(self, data: SpikeData) -> np.ndarray | None:
        """Bins of `data` in the likelihood, ``(time,)`` bool; None when all of them are."""
        n_skip = self._n_initial() if self.exclude_initial_bins else 0
        if n_skip == 0:
            return None
        seg = np.asarray(data.segment_ids)
        starts = np.r_[0, np.flatnonzero(np.diff(seg)) + 1]
        lengths = np.diff(np.r_[starts, data.n_time])
        keep = (np.arange(data.n_time) - np.repeat(starts, lengths)) >= n_skip
        if not keep.any():
            raise ValueError(
                f"exclude_initial_bins=True leaves no bins: every trial is at most {n_skip} bins long "
                "(the longest filter window); use longer trials, shorter bases, or exclude_initial_bins=False"
            )
        return keep

    def _features(self, data: SpikeData, *, spikes: bool = True, n_pad: int | None = None) -> dict[str, jax.Array]:
        """Design arrays for :func:`glm_model`: stimulus, history and coupling features.

        ``spikes=False`` builds the stimulus features only. ``n_pad``: pad the time axis with
        zeros to that many bins (and the spike counts behind the FFT spectra to a bucketed
        length), so that recordings of similar lengths give arrays of the same shapes.
        """
        dtype = jnp.zeros(()).dtype  # float64 under x64, else float32
        seg = data.segment_ids
        n_pad = data.n_time if n_pad is None else int(n_pad)
        out: dict[str, jax.Array] = {}
        groups = self._groups(data.feature_names)
        if groups:
            cols = []
            index = {f: i for i, f in enumerate(data.feature_names)}
            # convolve the padded covariates (the padding only feeds masked bins): bucketed shapes
            seg_pad = pad_axis(np.asarray(seg), n_pad, value=seg[-1])
            for _, feats, basis, _ in groups:
                x = pad_axis(data.covariates[:, [index[f] for f in feats]].astype(dtype), n_pad)
                conv = _bases.convolve(x, basis, history=False, trial_ids=seg_pad)
                cols.append(np.asarray(conv).reshape(n_pad, -1))
            out["stimulus"] = to_device(np.concatenate(cols, axis=1))
        if not spikes:
            return out
        if self.filter_mode == "fft" and (self.history_basis is not None or self._coupled):
            bounds = np.flatnonzero(np.diff(seg)) + 1
            gap = self._max_lag()
            spikes = np.asarray(data.counts, dtype=dtype)
            if bounds.size:  # lag empty bins between trials, so that no filter reaches across
                pieces = np.split(spikes, bounds)
                empty = np.zeros((gap, data.n_neuron), dtype)
                spikes = np.concatenate([p for piece in pieces for p in (piece, empty)][:-1])
            if n_pad != data.n_time:  # trailing zeros change no bin's history: a bucketed shape
                spikes = pad_axis(spikes, bucket_length(spikes.shape[0]))
            out["spectra"] = fft_spectra_jit(spikes, gap, fft_size(gap))
            out["rows"] = to_device(pad_axis(np.arange(data.n_time) + gap * seg, n_pad))
            return out
        # design mode: convolve the padded counts (the padding only feeds masked bins), so the
        # convolution's program has the bucketed shape too
        counts = to_device(pad_axis(np.asarray(data.counts, dtype), n_pad))
        seg = pad_axis(np.asarray(seg), n_pad, value=seg[-1]) if n_pad != data.n_time else seg
        if self.history_basis is not None:
            out["history"] = _bases.convolve(counts, _with_history(self.history_basis, True), history=True, trial_ids=seg)
        if self._coupled and self._coup_basis is not self.history_basis:
            out["coupling"] = _bases.convolve(counts, _with_history(self._coup_basis, True), history=True, trial_ids=seg)
        return out

    def _coords_dims(self, data: SpikeData, tidx) -> tuple[dict, dict]:
        coords = {"neuron": data.neuron_ids[tidx], "time": data.bin_centers, "source": data.neuron_ids}
        dims = {"stimulus": ["time", "stimulus_coef"]}
        groups = self._groups(data.feature_names)
        if groups and groups[0][0] == "stimulus" and not isinstance(self._stim_bases, dict):
            coords["feature"] = np.asarray(groups[0][1])
        dims["spectra"] = ["frequency", "block", "source_part"]
        dims["rows"] = ["time"]
        dims["mask"] = ["time"]
        if self.history_basis is not None:
            dims["history"] = ["time", "source", "history_basis"]
        if self._coupled and self._coup_basis is not self.history_basis:
            dims["coupling"] = ["time", "source", "coupling_basis"]
        elif self._coupled:
            dims["history"] = ["time", "source", "coupling_basis"]
        return coords, dims

    def _init_values(self, data: SpikeData, spec: GLMSpec, tidx) -> dict:
        rate = np.maximum(data.counts[:, tidx].mean(axis=0), 0.5 / data.n_time) / data.bin_size
        if self.link == "exp":
            bias = np.log(rate)
        else:  # softplus^{-1}
            bias = np.where(rate > 20, rate, np.log(np.expm1(rate)))
        values = {"bias": bias}
        if spec.observation == "negative-binomial":
            values["concentration"] = np.full(spec.n_neuron, 10.0)
        for name, (_, shape, prior) in spec.weight_sites().items():
            values.update(prior.init_values(name, shape))
        return values

    # ------------------------------------------------------------------------------------------
    # fitting
    # ------------------------------------------------------------------------------------------

    @pynapple_io()
    def fit(
        self,
        data: SpikeData,
        *,
        method: str = "map",
        key: Any = None,
        neurons: Any = None,
        progress: bool | None = None,
        **options,
    ) -> PoissonGLM:
        """Fit the GLM to a recording by MAP, Laplace, SVI or NUTS.

        Parameters
        ----------
        data : SpikeData
            Counts (time x neuron) and covariates (the stimulus); trials stop the filters.
        method : {"map", "laplace", "svi", "nuts"}
            Inference method of :func:`bayesneuro.infer.fit`; MAP is the everyday path.
        key : jax.random key or int, optional
            Needed by the methods that draw random numbers: ``"laplace"`` (its posterior
            draws), ``"svi"``, ``"nuts"``, and ``"map"`` with your own ``init_strategy``; the
            same key gives the same fit. MAP from the GLM's own starting point needs none.
        neurons : sequence of neuron ids, optional
            The neurons to model (default: all). Every neuron of ``data`` (or of
            ``coupling_sources``, when given) still acts as a coupling source, so one neuron can
            be fitted with input from the whole population.
        progress : bool, optional
            Progress bars (default from ``BAYESNEURO_PROGRESS``).
        **options
            Method options of :func:`bayesneuro.infer.fit`: ``max_iter`` (iteration cap) and
            ``tol`` (gradient tolerance) for MAP and Laplace, ``num_samples``, ``num_steps``,
            ``num_chains``, ..., and ``shard``.

        Returns
        -------
        PoissonGLM
            ``self``, fitted.

        Raises
        ------
        TypeError
            ``key`` is None for a method that draws random numbers.
        ValueError
            For a neuron without spikes, ``coupling_sources`` not in the data, a constant
            covariate, a recording shorter than a filter, a prior that has no MAP (ARD,
            Horseshoe) with ``"map"``/``"laplace"``, or rates that overflow.
        """
        if not isinstance(data, SpikeData):
            raise TypeError(f"data must be a bayesneuro.SpikeData, got {type(data).__name__}")
        if method == "map":
            # from the GLM's own starting point (every site given) MAP draws nothing at random
            needed, why = "init_strategy" in options, "method='map' with your own init_strategy"
        elif method == "laplace":
            needed, why = True, "method='laplace' (its posterior draws)"
        else:
            needed, why = True, f"method={method!r}"
        rng = resolve_key(key, needed=needed, why=why)
        if rng is None:
            rng = 0  # unused by the result: the start is fixed and MAP has no random step
        tidx = self._target_index(data, neurons)
        self._check_data(data, fitting=True, tidx=tidx)
        self._source_index(data)  # raises for coupling_sources that are not in the data
        self.prior_scale_, self.prior_selection_ = None, None
        if isinstance(self.prior, str):  # prior="auto": Ridge scale by held-out likelihood inside data
            from .priors import select_ridge_scale

            self.prior_scale_, self.prior_selection_ = select_ridge_scale(
                self, data, neurons=neurons, fit_options={k: options[k] for k in ("max_iter", "tol") if k in options})
        spec = self._spec(data, tidx)
        if method in ("map", "laplace"):
            bad = [n for n, (_, _, p) in spec.weight_sites().items() if not p.supports_map]
            if bad:
                raise ValueError(
                    f"priors of {bad} ({', '.join(type(spec.weight_sites()[b][2]).__name__ for b in bad)}) "
                    f"have no meaningful mode; fit them with method='nuts' or 'svi', or use Ridge/Smooth for {method!r}"
                )
        if method == "laplace":
            bad = [n for n, (_, _, p) in spec.weight_sites().items() if not p.supports_laplace]
            if bad:
                raise ValueError(
                    f"the posterior of {bad} ({type(spec.weight_sites()[bad[0]][2]).__name__}) has no "
                    "curvature at a zero filter, so there is no Laplace approximation: use method='map' "
                    "for the sparse network, or 'nuts' / 'svi' for uncertainty"
                )
        # MAP and Laplace pad the time axis to a bucket length (masked out of the likelihood), so a
        # recording of another length reuses the compiled programs; SVI and NUTS, and fits sharded
        # over devices (whose arrays stay where they were placed), fit the bins as they are
        n_time = data.n_time
        padded = method in ("map", "laplace") and options.get("shard") is None
        n_pad = bucket_length(n_time) if padded else n_time
        arrays = self._features(data, n_pad=n_pad)
        keep = self._included(data)
        # the mask even when nothing is padded (a recording of a bucket length): one argument structure
        mask = None if keep is None and not padded else pad_axis(np.ones(n_time, bool) if keep is None else keep, n_pad)
        counts = pad_axis(np.asarray(data.counts[:, tidx], dtype=jnp.zeros(()).dtype), n_pad)
        coords, dims = self._coords_dims(data, tidx)
        options.setdefault("init_strategy", init_to_value(values=self._init_values(data, spec, tidx)))
        if method in ("map", "laplace"):
            options.setdefault("preconditioner", self._preconditioner(data, spec, arrays, tidx))
        if method == "laplace":  # per-neuron Gram Hessians: memory O(data + neuron x weights^2)
            from ._laplace import laplace_hessian

            options.setdefault("hessian", laplace_hessian(self, data, spec, arrays, counts, mask=mask))
        if mask is not None:
            arrays["mask"] = to_device(np.asarray(mask))
        if method == "map" and isinstance(spec.coupling_prior, GroupLasso) and spec.coupling_basis:
            options.setdefault("proximal", self._group_lasso_proximal(data, spec, options["preconditioner"], tidx))
        result = _fit(
            glm_model,
            method=method,
            key=rng,
            coords=coords,
            dims=dims,
            progress=progress,
            counts=counts,
            spec=spec,
            **arrays,
            **options,
        )
        # Laplace's point estimate is the mode, not the mean of the draws (from the padded
        # arrays the fit compiled for: the sites carry no time axis)
        mode = self._mode_params(result) if method == "laplace" else None
        if padded:  # the result describes the recording's bins, not the padding
            unpad_result(result, n_time, ("counts", *_TIME_KEYS), drop=("mask",) if keep is None else ())
        self.result_ = result
        self.spec_ = spec
        if mode is not None:
            self.params_ = mode
        else:
            self.params_ = {k: np.asarray(v) for k, v in result.params.items()}
        self.neuron_ids_ = data.neuron_ids[tidx].copy()
        self.source_ids_ = data.neuron_ids.copy()
        self.target_index_ = np.array(tidx, copy=True)
        self.feature_names_ = tuple(data.feature_names)
        self.bin_size_ = data.bin_size
        self.groups_ = self._groups(data.feature_names)
        self._rates(data, arrays=arrays)  # raises if the fitted rates overflow
        return self

    @staticmethod
    def _mode_params(result) -> dict:
        """Every site (latent and deterministic) at the Laplace approximation's mode."""
        from numpyro.infer.util import constrain_fn

        mode = {k: jnp.asarray(v) for k, v in result.info["mode"].items()}
        sites = constrain_fn(result.model, (), result.model_kwargs, mode, return_deterministic=True)
        return {k: np.asarray(sites[k]) for k in result.samples}

    def _preconditioner(self, data: SpikeData, spec: GLMSpec, arrays: dict, tidx):
        """Linear change of variables for the MAP optimiser: centred, whitened features.

        Weights of a block are ``w = A z / sqrt(Y_n)`` with ``A`` the inverse square root of the
        features' covariance (stimulus: empirical; spike features: that of Poisson spikes with
        the neuron's variance, ``var_m * B'B``) and ``Y_n`` the target's spike count, and the
        bias absorbs the features' means. The optimum is unchanged; the curvature in ``z`` is
        close to the identity, so L-BFGS needs far fewer iterations. Blocks with other priors
        than Ridge/Flat keep their own variables.
        """
        from .priors import Flat

        dtype = jnp.zeros(()).dtype
        y_tot = np.maximum(data.counts[:, tidx].sum(axis=0), 1.0)
        scale = jnp.asarray(1.0 / np.sqrt(y_tot), dtype)  # (neuron,)
        sites = spec.weight_sites()

        def inv_sqrt(cov):
            vals, vecs = np.linalg.eigh(cov)
            vals = np.maximum(vals, 1e-10 * max(vals.max(), 1e-300))
            return (vecs / np.sqrt(vals)) @ vecs.T

        maps = {}  # site -> (A, mean): w[..., k, n] = A @ z[..., k, n] * scale; bias -= mean . w
        start = 0
        for g in spec.stimulus:
            # the recording's bins only (not the padding); numpy: slicing a device array compiles
            feats = np.asarray(arrays["stimulus"], dtype=float)[: data.n_time, start : start + g.size]
            start += g.size
            name = f"{g.name}_weights"
            if isinstance(g.prior, (Ridge, Flat)):
                mean = feats.mean(axis=0)
                cov = np.atleast_2d(np.cov(feats, rowvar=False))
                maps[name] = (jnp.asarray(inv_sqrt(cov), dtype), jnp.asarray(mean, dtype))
        ybar = data.counts.mean(axis=0)
        yvar = np.where(data.counts.var(axis=0) > 0, data.counts.var(axis=0), 1.0)
        for name, basis in (("history_weights", self.history_basis), ("coupling_weights", self._coup_basis)):
            if name not in sites or not isinstance(sites[name][2], (Ridge, Flat, GroupLasso)):
                continue
            B = np.asarray(_with_history(basis, True).matrix(), dtype=float)
            root = inv_sqrt(B.T @ B)  # (basis, basis)
            src = tidx if name == "history_weights" else np.arange(data.n_neuron)
            A = root[None] / np.sqrt(yvar[src])[:, None, None]  # (source, basis, basis)
            mean = ybar[src][:, None] * B.sum(axis=0)[None, :]  # (source, basis)
            maps[name] = (jnp.asarray(A, dtype), jnp.asarray(mean, dtype))
        if not maps:
            return None
        # the free coupling filters (numpy: eager JAX ops compile): the fixed ones shift no bias
        mask = jnp.asarray(coupling_mask(data.n_neuron, len(tidx), spec.self_index, spec.coupling_sources), dtype)
        return (_precondition, ({"scale": scale, "mask": mask, "maps": maps},))

    def _group_lasso_proximal(self, data: SpikeData, spec: GLMSpec, preconditioner, tidx) -> Proximal:
        """The group-lasso penalty's proximal step in the preconditioned variables.

        With ``w[m, :, n] = (B'B)^{-1/2} z[m, :, n] * s_n / sd_m`` (the preconditioner), the
        filter norm is ``||B w|| = (s_n / sd_m) ||z||``, so the proximal step is a group
        soft-threshold of ``z`` with threshold ``step * strength * s_n / sd_m``.
        """
        if preconditioner is None or preconditioner[1][0]["maps"].get("coupling_weights") is None:
            raise ValueError("GroupLasso at MAP needs the GLM's own preconditioner (do not pass preconditioner=None)")
        dtype = jnp.zeros(()).dtype
        y_tot = np.maximum(data.counts[:, tidx].sum(axis=0), 1.0)
        yvar = np.where(data.counts.var(axis=0) > 0, data.counts.var(axis=0), 1.0)
        thr = spec.coupling_prior.strength / np.sqrt(y_tot)[None, :] / np.sqrt(yvar)[:, None]  # (source, neuron)
        # self-coupling and non-sources: unused weights, held at zero
        thr[coupling_mask(data.n_neuron, len(tidx), spec.self_index, spec.coupling_sources) == 0] = np.inf
        return Proximal(_group_soft_threshold, (GROUP_LASSO_SITE,), (jnp.asarray(thr, dtype),))

    @staticmethod
    def _target_index(data: SpikeData, neurons) -> np.ndarray:
        if neurons is None:
            return np.arange(data.n_neuron)
        wanted = np.atleast_1d(np.asarray(neurons))
        where = {v: i for i, v in enumerate(data.neuron_ids.tolist())}
        missing = [v for v in wanted.tolist() if v not in where]
        if missing:
            raise ValueError(f"neurons {missing} are not in the data (neuron ids {data.neuron_ids.tolist()})")
        idx = np.array([where[v] for v in wanted.tolist()], dtype=np.int64)
        if len(set(idx.tolist())) != len(idx) or len(idx) == 0:
            raise ValueError("neurons must name distinct neurons, at least one")
        return idx

    def _targets(self, data: SpikeData) -> np.ndarray:
        """Counts of the modelled neurons, ``(time, neuron)``."""
        return data.counts[:, self.target_index_]

    # ------------------------------------------------------------------------------------------
    # predictions and scores
    # ------------------------------------------------------------------------------------------

    def _rates(self, data: SpikeData, *, arrays: dict | None = None) -> np.ndarray:
        """Rates ``(time, neuron)`` in spikes/s on `data` (`arrays`: its features, possibly padded).

        By the model's own compiled program (:func:`~bayesneuro.glm._model.expected_counts`, same
        arguments), on the time axis padded to its bucket: nothing compiles that the fit did not.
        """
        if arrays is None:
            n_rows = bucket_length(data.n_time)
            arrays = self._features(data, n_pad=n_rows)
        else:
            n_rows = next((v.shape[0] for k, v in arrays.items() if k in _TIME_KEYS and v is not None), data.n_time)
        p = {k: to_device(np.asarray(self.params_[k])) for k in ("bias", *self.spec_.weight_sites())}
        feats = {k: arrays.get(k) for k in ("stimulus", "history", "coupling", "spectra", "rows")}
        rates = np.asarray(expected_counts(self.spec_, p, feats, int(n_rows)))[: data.n_time] / self.spec_.bin_size
        if not np.all(np.isfinite(rates)) or (self.link == "exp" and float(rates.max()) > math.exp(700.0)):
            raise ValueError(
                "the predicted rates overflow (linear predictor above 700 or not finite): the "
                "covariates are far outside the range of the training data, or badly scaled "
                "(standardise them), or the fit diverged (use a tighter prior)"
            )
        return rates

    @pynapple_io("tsdframe", short_bins="keep")
    def predict_rate(self, data: SpikeData) -> np.ndarray:
        """Predicted rate in spikes/s, ``(time, neuron)``, at the point estimate ``params_``.

        History and coupling terms use the *observed* spikes of ``data`` (one-step-ahead
        prediction); :meth:`simulate` runs the model on its own spikes instead. pynapple counts
        whose last bin is cut short by their epoch (``TsGroup.count`` on an epoch that is not a
        multiple of the bin size) are taken: a bin's rate depends only on the spikes before it,
        and its expected count is the rate times its own width (``log_likelihood``, ``score``,
        ``evaluate`` and ``pseudo_r2``, which take every bin as whole, refuse such counts).
        """
        self._check_data(data, fitting=False)
        return self._rates(data)

    def _pointwise_log_likelihood(self, data: SpikeData) -> np.ndarray:
        """Log-likelihood (nats) of each bin and modelled neuron at ``params_``, ``(time, neuron)``."""
        self._check_data(data, fitting=False)
        mu = self.predict_rate(data) * data.bin_size
        return _scores.pointwise_log_likelihood(
            self._targets(data), mu, self.observation, self.params_.get("concentration")
        )

    def _scored(self, data: SpikeData) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood and counts ``(bin, neuron)`` of the bins in the likelihood (``exclude_initial_bins``)."""
        ll, targets = self._pointwise_log_likelihood(data), self._targets(data)
        keep = self._included(data)
        return (ll, targets) if keep is None else (ll[keep], targets[keep])

    @pynapple_io()
    def log_likelihood(self, data: SpikeData) -> np.ndarray:
        """Log-likelihood (nats) of each time bin of ``data`` at ``params_``, ``(time,)``.

        Summed over the modelled neurons: given the fit (and the observed spikes that drive
        the history and coupling terms), bins are independent, so a bin is the unit of
        ``log_likelihood_dim = "time"``. ``log_likelihood(data).sum()`` is the total;
        :meth:`evaluate` gives it per neuron. With ``exclude_initial_bins=True`` the first bins
        of each trial are not observations of the model: only the other bins are returned.
        """
        return self._scored(data)[0].sum(axis=1)

    @pynapple_io()
    def score(self, data: SpikeData) -> float:
        """Log-likelihood gain over a homogeneous model, in bits/spike (higher is better).

        ``(LL_model - LL_null) / (n_spikes * ln 2)`` summed over the modelled neurons, with
        the null a constant rate per neuron equal to its mean rate in ``data`` (Poisson;
        Bernoulli for ``observation="bernoulli"``). Score held-out data: on training data it
        rewards overfitting. :meth:`evaluate` gives the value per neuron and the pseudo-R2.

        Parameters
        ----------
        data : SpikeData
            Data to score, with the neurons and covariates of the fit.

        Returns
        -------
        float
            Bits per spike (unit ``score_unit = "bits/spike"``).
        """
        ll, targets = self._scored(data)
        ll = ll.sum(axis=0)
        null = _scores.null_log_likelihood(targets, self.observation)
        return float(_scores.bits_per_spike(ll, null, targets.sum(axis=0)))

    @pynapple_io()
    def evaluate(self, data: SpikeData) -> dict:
        """Every goodness-of-fit measure of ``data`` at ``params_``, in total and per neuron.

        Parameters
        ----------
        data : SpikeData
            Data to evaluate (held out), with the neurons and covariates of the fit.

        Returns
        -------
        dict
            ``bits_per_spike`` (float, as :meth:`score`), ``bits_per_spike_per_neuron``
            (array over the modelled neurons; NaN for a neuron without spikes),
            ``pseudo_r2`` and ``pseudo_r2_per_neuron`` (deviance explained, as
            :meth:`pseudo_r2`; NaN for ``observation="negative-binomial"``),
            ``log_likelihood`` (float, nats) and ``log_likelihood_per_neuron``, ``n_spikes``
            (per neuron).
        """
        ll, targets = self._scored(data)
        ll = ll.sum(axis=0)
        null = _scores.null_log_likelihood(targets, self.observation)
        n_spikes = targets.sum(axis=0)
        out = {
            "bits_per_spike": float(_scores.bits_per_spike(ll, null, n_spikes)),
            "bits_per_spike_per_neuron": _scores.bits_per_spike(ll, null, n_spikes, per_neuron=True),
        }
        if self.observation == "negative-binomial":
            out["pseudo_r2"], out["pseudo_r2_per_neuron"] = float("nan"), np.full(ll.shape, np.nan)
        else:
            sat = _scores.saturated_log_likelihood(targets, self.observation)
            out["pseudo_r2"] = float(_scores.pseudo_r2(ll, null, sat))
            out["pseudo_r2_per_neuron"] = _scores.pseudo_r2(ll, null, sat, per_neuron=True)
        out["log_likelihood"] = float(ll.sum())
        out["log_likelihood_per_neuron"] = ll
        out["n_spikes"] = np.asarray(n_spikes)
        return out

    @pynapple_io()
    def pseudo_r2(self, data: SpikeData, *, per_neuron: bool = False):
        """Deviance explained, ``1 - D_model / D_null`` (as sklearn's ``PoissonRegressor.score``).

        For Poisson and Bernoulli observations; the null is the constant-rate model of ``data``.

        Parameters
        ----------
        data : SpikeData
            Data to evaluate, with the neurons and covariates of the fit.
        per_neuron : bool
            One value per modelled neuron instead of the pooled value.
        """
        if self.observation == "negative-binomial":
            raise ValueError("pseudo_r2 is defined here for poisson and bernoulli observations")
        ll, targets = self._scored(data)
        ll = ll.sum(axis=0)
        null = _scores.null_log_likelihood(targets, self.observation)
        sat = _scores.saturated_log_likelihood(targets, self.observation)
        return _scores.pseudo_r2(ll, null, sat, per_neuron=per_neuron)

    # ------------------------------------------------------------------------------------------
    # filters and coupling
    # ------------------------------------------------------------------------------------------

    def _blocks(self) -> list[tuple[str, str, _bases.Basis, bool]]:
        """(site, output name, basis, is_history) of each filter block."""
        out = []
        for name, _, basis, _ in self.groups_:
            out.append((f"{name}_weights", name, basis, False))
        if self.history_basis is not None:
            out.append(("history_weights", "history", self.history_basis, True))
        if self._coupled:
            out.append(("coupling_weights", "coupling", self._coup_basis, True))
        return out

    def filter_draws(self) -> xr.Dataset:
        """Posterior draws of every filter in time, ``(chain, draw, neuron, [feature|source], lag)``.

        Stimulus filters are on the linear-predictor scale per unit of covariate; history and
        coupling filters per spike. Each block has its own lag dim (``history_lag``, ...) in
        seconds. Coupling filters of a neuron onto itself are zero (that is its history filter),
        and so are those from neurons outside ``coupling_sources``.
        """
        self._check_fitted()
        return self._filters_of(self.result_.samples, lead=("chain", "draw"))

    def _filters_of(self, weights: dict, lead: tuple[str, ...] = ()) -> xr.Dataset:
        """Filters in time from basis weights with leading axes ``lead`` (e.g. chain, draw)."""
        data_vars = {}
        for site, name, basis, hist in self._blocks():
            w = np.asarray(weights[site])
            if site == "coupling_weights":
                w = np.asarray(mask_self(jnp.asarray(w), self.spec_.self_index, self.spec_.coupling_sources))
            filt = np.einsum("lb,...bn->...nl", basis.matrix(), w)  # (*lead, [group,] neuron, lag)
            lag_dim = f"{name}_lag"
            lag = _with_history(basis, hist).lags(self.bin_size_, history=hist)
            coords = {"neuron": self.neuron_ids_, lag_dim: lag}
            if filt.ndim == len(lead) + 3:
                filt = np.swapaxes(filt, len(lead), len(lead) + 1)  # (*lead, neuron, group, lag)
                group_dim = "source" if name == "coupling" else "feature"
                coords[group_dim] = self.source_ids_ if name == "coupling" else list(self.groups_[0][1])
                dims = (*lead, "neuron", group_dim, lag_dim)
            else:
                dims = (*lead, "neuron", lag_dim)
            data_vars[name] = xr.DataArray(filt, dims=dims, coords=coords)
        return xr.Dataset(data_vars)

    def filters(self, *, prob: float = PROB) -> xr.Dataset:
        """Filters in time with central credible bands: ``{name}``, ``{name}_lower``, ``{name}_upper``.

        ``{name}`` is the posterior mean (the MAP estimate for ``method="map"``, whose bands are
        the estimate itself: use ``"laplace"`` for bands at MAP cost).

        Parameters
        ----------
        prob : float
            Credible mass of the central band (default :data:`bayesneuro.estimator.PROB`, 0.9:
            the 5% and 95% quantiles).
        """
        if not 0 < prob < 1:
            raise ValueError(f"prob must be in (0, 1), got {prob}")
        draws = self.filter_draws()
        q = [(1 - prob) / 2, (1 + prob) / 2]
        out = {}
        for name, da in draws.data_vars.items():
            flat = da.stack(sample=("chain", "draw"))
            out[name] = flat.mean("sample")
            lo, hi = np.quantile(flat.values, q, axis=-1)
            out[f"{name}_lower"] = out[name].copy(data=lo)
            out[f"{name}_upper"] = out[name].copy(data=hi)
        ds = xr.Dataset(out)
        ds.attrs["prob"] = prob
        ds.attrs["method"] = self.result_.method
        return ds

    def _coupling_draws(self) -> xr.DataArray:
        if not self._coupled:
            raise ValueError("the GLM has no coupling filters (coupling=False)")
        return self.filter_draws()["coupling"].sum("coupling_lag")

    def coupling_matrix(self) -> xr.DataArray:
        """Integrated coupling ``sum_lag c_{nm}`` (posterior mean), dims ``(neuron, source)``.

        Each entry is the total change of ``neuron``'s log-rate (exp link) caused by one spike
        of ``source``; the diagonal is zero (self-effects are in the history filter), and so
        are the columns of neurons outside ``coupling_sources``.
        """
        return self._coupling_draws().mean(("chain", "draw"))

    def coupling_network(self, *, prob: float = PROB) -> xr.DataArray:
        """Edges whose integrated coupling has a central ``prob`` interval excluding zero.

        Returns a boolean ``(neuron, source)`` DataArray: True where ``source`` has a credible
        effect on ``neuron``. Needs posterior draws (Laplace, SVI or NUTS), or a MAP fit with a
        :class:`~bayesneuro.glm.GroupLasso` coupling prior, whose edges are the filters that are
        not exactly zero (``prob`` is then unused).

        Parameters
        ----------
        prob : float
            Credible mass of the central interval (default :data:`bayesneuro.estimator.PROB`).
        """
        self._check_fitted()
        if self.result_.method == "map":
            if not isinstance(self._coup_prior, GroupLasso):
                raise ValueError(
                    "coupling_network needs posterior draws (fit with method='laplace', 'svi' or 'nuts') "
                    "or a sparse MAP (coupling_prior=GroupLasso(...))"
                )
            w = np.asarray(self.params_["coupling_weights"])  # (source, basis, neuron)
            edges = np.any(w != 0.0, axis=1).T.copy()  # (neuron, source)
        else:
            draws = self._coupling_draws().stack(sample=("chain", "draw"))
            lo, hi = np.quantile(draws.values, [(1 - prob) / 2, (1 + prob) / 2], axis=-1)
            edges = (lo > 0) | (hi < 0)
        spec = self.spec_
        edges &= coupling_mask(spec.n_source, spec.n_neuron, spec.self_index, spec.coupling_sources).T > 0
        return xr.DataArray(edges, dims=("neuron", "source"), coords={"neuron": self.neuron_ids_, "source": self.source_ids_})

    # ------------------------------------------------------------------------------------------
    # simulation
    # ------------------------------------------------------------------------------------------

    def simulate(
        self, data: SpikeData, *, key: Any = None, max_rate: float | None = None, runaway_bins: int = 10
    ) -> GLMSimulation:
        """Simulate spikes with the history and coupling feedback running, at ``params_``.

        The stimulus (covariates), time bins and trials of ``data`` drive the model; its spikes
        are not used (each trial starts with an empty history). Rates are capped at
        ``max_rate``; a rate held at the cap for ``runaway_bins`` bins in a row means the
        feedback runs away: ``runaway`` is set and a warning names the neurons and the time.

        Parameters
        ----------
        data : SpikeData
            Provides covariates, bins and trials (with the fitted neurons and features).
        key : jax.random key or int
            Required (the spikes are drawn at random).
        max_rate : float, optional
            Cap in spikes/s; default ``max(1000, 0.5 / bin_size)``.
        runaway_bins : int, default 10
            Consecutive bins at the cap that make a runaway.
        """
        key = resolve_key(key, needed=True, why="simulate")
        self._check_data(data, fitting=False)
        if len(self.target_index_) != len(self.source_ids_):
            raise ValueError(
                "simulate needs every coupling source modelled (the GLM was fitted to a subset of "
                "neurons: fit it with neurons=None)"
            )
        max_rate = max(1000.0, 0.5 / data.bin_size) if max_rate is None else float(max_rate)
        arrays = self._features(data, spikes=False)
        params = {k: jnp.asarray(v) for k, v in self.params_.items()}
        spec_drive = dataclasses.replace(self.spec_, history_basis=0, coupling_basis=0)
        drive = jnp.broadcast_to(
            linear_predictor(spec_drive, params, {"stimulus": arrays.get("stimulus")}), (data.n_time, self.spec_.n_neuron)
        )
        filt = self._filters_of(self.params_) if (self.history_basis is not None or self._coupled) else None
        hist = None if self.history_basis is None else filt["history"].transpose("history_lag", "neuron").values
        coup = None
        if self._coupled:
            coup = filt["coupling"].transpose("coupling_lag", "source", "neuron").values
        kernel = None if filt is None else feedback_kernel(hist, coup, self.spec_.self_index, self.spec_.n_neuron)
        counts, rates, first, n_capped = simulate_counts(
            key,
            drive,
            kernel,
            bin_size=data.bin_size,
            link=self.link,
            observation=self.observation,
            concentration=params.get("concentration"),
            segment_ids=data.segment_ids,
            max_rate=max_rate,
            runaway_bins=int(runaway_bins),
        )
        first = np.asarray(first)
        first_t = np.where(first >= 0, data.bin_centers[np.maximum(first, 0)], np.nan)
        runaway = bool((first >= 0).any())
        if runaway:
            bad = self.neuron_ids_[first >= 0].tolist()
            warnings.warn(
                f"simulation ran away: neurons {bad} stayed at the rate cap of {max_rate:g} spikes/s "
                f"for {runaway_bins} bins (first at t = {np.nanmin(first_t):.4g} s). The fitted history/coupling feedback is "
                "unstable in closed loop; use a stronger prior on the history and coupling filters",
                stacklevel=2,
            )
        sim = data._replace(counts=np.asarray(counts).astype(np.int64))
        return GLMSimulation(sim, np.asarray(rates), runaway, first_t, np.asarray(n_capped))

    # ------------------------------------------------------------------------------------------
    # ArviZ
    # ------------------------------------------------------------------------------------------

    def to_inference_data(self, *, log_likelihood: bool = True, filters: bool = False):
        """InferenceData of the fit: the basis weights, optionally with the filters in time.

        The posterior (``point_estimate`` for MAP) holds the parameters: ``bias``, the basis weights (``*_weights``) and
        any other fitted site. The filters in time are derived from them (``basis.matrix() @
        weights``) and are added, as ``{name}_filter`` with the dims of :meth:`filter_draws`,
        only with ``filters=True``: for a coupled population they are most of the data (1000
        draws of 30 x 30 neurons x 10 lags are 72 MB in float64, against 21.6 MB for the weights
        on 3 basis functions). :meth:`filter_draws` and :meth:`filters` compute them from the
        fitted model at any time. They are stored at the precision of the draws (float32 for a
        float32 fit), not upcast. The design arrays are left out of ``constant_data`` (they can
        be rebuilt from the data). The ``log_likelihood`` group
        holds one variable, ``counts``, with dims ``(chain, draw, time)`` (``(time,)`` for MAP, a
        point fit whose estimate is in a ``point_estimate`` group, no ``posterior``): the log-likelihood
        of each time bin summed over the modelled neurons, the unit of
        :meth:`log_likelihood`, so ``az.loo`` and ``az.compare`` rank GLMs of the same
        neurons (with and without coupling, say) by held-out time bins. The per-neuron values
        stay in ``result_.to_inference_data()``.

        Parameters
        ----------
        log_likelihood : bool, default True
            Include the ``log_likelihood`` group.
        filters : bool, default False
            Add the filters in time, ``{name}_filter``, to the posterior.

        Returns
        -------
        arviz.InferenceData

        Examples
        --------
        >>> import numpy as np
        >>> import bayesneuro as bn
        >>> counts = np.random.default_rng(0).poisson(0.2, size=(2000, 2))
        >>> data = bn.SpikeData.from_counts(counts, bin_size=0.01)
        >>> glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=10))
        >>> glm = glm.fit(data, method="map", key=0, progress=False)
        >>> sorted(glm.to_inference_data().point_estimate.data_vars)  # MAP: a point fit
        ['bias', 'history_weights']
        >>> sorted(glm.to_inference_data(filters=True).point_estimate.data_vars)
        ['bias', 'history_filter', 'history_weights']
        """
        self._check_fitted()
        idata = self.result_.to_inference_data(log_likelihood=log_likelihood)
        idata = idata.copy()
        if filters:
            point = self.result_.method == "map"  # a point fit: point_estimate, no chain/draw
            group = "point_estimate" if point else "posterior"
            post = idata[group]
            for name, da in self.filter_draws().data_vars.items():
                site = next(s for s, n, _, _ in self._blocks() if n == name)
                dtype = np.asarray(self.result_.samples[site]).dtype  # the draws' precision
                da = da.astype(dtype)
                if point:
                    post[f"{name}_filter"] = da.isel(chain=0, draw=0, drop=True)
                else:
                    post[f"{name}_filter"] = da.assign_coords(chain=post.chain, draw=post.draw)
            setattr(idata, group, post)
        if "log_likelihood" in idata.groups():
            lik = idata.log_likelihood
            counts = lik["counts"].sum("neuron")
            mask = self.result_.model_kwargs.get("mask")
            if mask is not None:  # exclude_initial_bins: those bins are not observations
                counts = counts.isel(time=np.flatnonzero(np.asarray(mask)))
            idata.log_likelihood = xr.Dataset({"counts": counts}, attrs=lik.attrs)
        if hasattr(idata, "constant_data"):
            keep = [v for v in idata.constant_data.data_vars if v not in ("stimulus", "history", "coupling", "spectra", "rows", "mask")]
            if keep:
                idata.constant_data = idata.constant_data[keep]
            else:
                del idata.constant_data
        return idata

    def summary(self, prob: float = PROB, **kwargs):
        """``arviz.summary`` of the fit's sites, intervals of mass `prob` (see :meth:`FitResult.summary`)."""
        self._check_fitted()
        return self.result_.summary(prob, **kwargs)
