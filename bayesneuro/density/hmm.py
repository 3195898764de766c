r"""Hidden Markov model of population count vectors: discrete states over time.

The population vector :math:`x_t` (counts of :math:`N` neurons in bin :math:`t`) is emitted by a
hidden state :math:`z_t \in \{1..K\}` that follows a Markov chain:

.. math::

    z_1 \sim \mathrm{Cat}(\pi), \quad z_t \mid z_{t-1} \sim \mathrm{Cat}(A_{z_{t-1}}), \quad
    x_{tn} \mid z_t = k \sim \mathrm{Poisson}(\lambda_{kn}\,\Delta),

with rates :math:`\lambda` in spikes/s and bin width :math:`\Delta`. Each trial (segment of
``SpikeData.segment_ids``) restarts from :math:`\pi`. The states are summed out exactly by the
forward algorithm in log space (``lax.scan``); the smoothed marginals
:math:`p(z_t = k \mid x)` are the gradient of :math:`\log p(x)` with respect to the log
emission probabilities (the forward-backward identity), and the most likely path comes from
Viterbi.

Priors (NumPyro model :func:`poisson_hmm_model`): :math:`\pi \sim \mathrm{Dir}(c_0)`, each row
:math:`A_k \sim \mathrm{Dir}(c + s\,e_k)` (``s`` adds stickiness), :math:`\lambda_{kn} \sim
\mathrm{Gamma}(a, b)`. Fitting goes through :func:`bayesneuro.infer.fit` ("map" with several
random restarts by default: the likelihood has local optima; "laplace"; "nuts" for small
problems). States are relabelled in ascending order of total rate :math:`\sum_n \lambda_{kn}`
(draw by draw for posterior draws), which fixes the label-switching symmetry.

References
----------
Rabiner LR (1989). A tutorial on hidden Markov models and selected applications in speech
recognition. *Proc. IEEE* 77:257-286.
Jones LM, Fontanini A, Sadacca BF, Miller P, Katz DB (2007). Natural stimuli evoke dynamic
sequences of states in sensory cortical ensembles. *PNAS* 104:18772-18777.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from numpyro.infer import init_to_value

from bayesneuro._jit import jit

from .._pynapple import pynapple_io
from .._shapes import bucket_length, pad_axis, unpad_result
from .._validation import _warn_if_on_edge
from ..estimator import Estimator, resolve_key
from ..infer._model import as_key

__all__ = [
    "HMMParams",
    "PoissonHMM",
    "PoissonHMMCounts",
    "StateSelection",
    "forward",
    "poisson_hmm_model",
    "sample_poisson_hmm",
    "select_n_states",
    "smoothed_states",
    "viterbi",
]


# -- pure maths ------------------------------------------------------------------------------


class HMMParams(NamedTuple):
    """Parameters of a Poisson HMM.

    Attributes
    ----------
    initial_probs : Array, shape (state,)
        :math:`\\pi`.
    transition_matrix : Array, shape (hidden_state_from, hidden_state)
        :math:`A_{jk} = p(z_t = k \\mid z_{t-1} = j)`; rows sum to one.
    rate : Array, shape (state, neuron)
        :math:`\\lambda` in spikes/s.
    """

    initial_probs: Any
    transition_matrix: Any
    rate: Any


def log_emissions(counts, rate_per_bin):
    """``log p(x_t | z_t = k)``, shape (time, state), from Poisson means per bin (state, neuron)."""
    return jnp.sum(dist.Poisson(rate_per_bin[None]).log_prob(counts[:, None, :]), axis=-1)


def forward(log_init, log_A, log_e, starts):
    """Forward algorithm in log space, restarting at each ``starts`` bin.

    Parameters
    ----------
    log_init : Array, shape (state,)
    log_A : Array, shape (state, state)
    log_e : Array, shape (time, state)
        Log emission probabilities.
    starts : Array, shape (time,), bool
        True at the first bin of each segment (``starts[0]`` must be True).

    Returns
    -------
    log_likelihood : Array, scalar
        :math:`\\log p(x)`, summed over segments.
    log_filtered : Array, shape (time, state)
        :math:`\\log p(z_t \\mid x_{\\le t})` within the segment.
    log_predictive : Array, shape (time,)
        :math:`\\log p(x_t \\mid x_{<t})` within the segment; sums to `log_likelihood`.
    """

    def step(prev, inp):
        le, s = inp
        pred = jnp.where(s, log_init, logsumexp(prev[:, None] + log_A, axis=0))
        u = pred + le
        c = logsumexp(u)
        return u - c, (u - c, c)

    _, (filt, c) = jax.lax.scan(step, jnp.zeros_like(log_init), (log_e, starts))
    return jnp.sum(c), filt, c


def smoothed_states(log_init, log_A, log_e, starts):
    """Smoothed marginals :math:`p(z_t = k \\mid x)`, shape (time, state).

    Computed as :math:`\\partial \\log p(x) / \\partial \\log p(x_t \\mid z_t = k)`, which equals the
    forward-backward marginals.
    """
    return jax.grad(lambda le: forward(log_init, log_A, le, starts)[0])(log_e)


def viterbi(log_init, log_A, log_e, starts):
    """Most likely state path (per segment) and its joint log-probability ``log p(z, x)``.

    Returns
    -------
    states : Array, shape (time,), int
    log_prob : Array, scalar
    """

    def step(prev, inp):
        le, s = inp
        scores = prev[:, None] + log_A
        delta = jnp.where(s, log_init, jnp.max(scores, axis=0)) + le
        return delta, (delta, jnp.argmax(scores, axis=0))

    _, (delta, bp) = jax.lax.scan(step, jnp.zeros_like(log_init), (log_e, starts))
    ends = jnp.concatenate([starts[1:], jnp.ones(1, bool)])
    bp_next = jnp.concatenate([bp[1:], jnp.zeros_like(bp[:1])])

    def back(nxt, inp):
        d, b, e = inp
        s = jnp.where(e, jnp.argmax(d), b[nxt])
        return s, s

    _, states = jax.lax.scan(back, jnp.zeros((), bp.dtype), (delta, bp_next, ends), reverse=True)
    return states, jnp.sum(jnp.where(ends, jnp.max(delta, axis=1), 0.0))


def sample_poisson_hmm(key, initial_probs, transition_matrix, rate_per_bin, starts):
    """Simulate states and counts; each segment starts from ``initial_probs``.

    Returns
    -------
    states : Array, shape (time,), int
    counts : Array, shape (time, neuron), int

    Examples
    --------
    >>> import jax, numpy as np
    >>> from bayesneuro.density.hmm import sample_poisson_hmm
    >>> z, x = sample_poisson_hmm(jax.random.key(0), np.array([1.0, 0.0]), np.eye(2),
    ...                           np.array([[0.0], [5.0]]), np.ones(4, bool))
    >>> z.tolist(), x.ravel().tolist()
    ([0, 0, 0, 0], [0, 0, 0, 0])
    """
    key = as_key(key)
    log_init, log_A = jnp.log(initial_probs), jnp.log(transition_matrix)
    T = starts.shape[0]
    k_state, k_count = jax.random.split(key)

    def step(prev, inp):
        k, s = inp
        z = jax.random.categorical(k, jnp.where(s, log_init, log_A[prev])).astype(jnp.int32)
        return z, z

    _, z = jax.lax.scan(step, jnp.zeros((), jnp.int32), (jax.random.split(k_state, T), jnp.asarray(starts)))
    counts = jax.random.poisson(k_count, jnp.asarray(rate_per_bin)[z])
    return z, counts


class PoissonHMMCounts(dist.Distribution):
    """Distribution of a ``(time, neuron)`` count array under a Poisson HMM (states summed out).

    ``log_prob`` is the forward-algorithm :math:`\\log p(x)`; ``sample`` simulates.

    Parameters
    ----------
    initial_probs : Array, shape (state,)
    transition_matrix : Array, shape (state, state)
    rate_per_bin : Array, shape (state, neuron)
        Poisson means per bin (rate times bin width).
    starts : Array, shape (time,), bool
    mask : Array, shape (time,), bool, optional
        Bins with observations (default all); masked bins, the padding to a bucket length,
        contribute nothing.
    """

    support = constraints.independent(constraints.nonnegative_integer, 2)
    pytree_data_fields = ("initial_probs", "transition_matrix", "rate_per_bin", "starts", "mask")

    def __init__(self, initial_probs, transition_matrix, rate_per_bin, starts, mask=None, *, validate_args=None):
        self.initial_probs, self.transition_matrix = initial_probs, transition_matrix
        self.rate_per_bin, self.starts = rate_per_bin, starts
        self.mask = jnp.ones(jnp.shape(starts), bool) if mask is None else jnp.asarray(mask, bool)
        event_shape = (jnp.shape(starts)[0], jnp.shape(rate_per_bin)[-1])
        super().__init__(batch_shape=(), event_shape=event_shape, validate_args=validate_args)

    def log_prob(self, value):
        # a masked bin emits nothing (log 1): the states carry on with the transition matrix, whose
        # rows sum to one, so the bins after the last real one leave log p(x) unchanged
        le = jnp.where(self.mask[:, None], log_emissions(value, self.rate_per_bin), 0.0)
        return forward(jnp.log(self.initial_probs), jnp.log(self.transition_matrix), le, self.starts)[0]

    def sample(self, key, sample_shape=()):
        n = int(np.prod(sample_shape)) if sample_shape else 1
        keys = jax.random.split(key, n)
        draw = jax.vmap(lambda k: sample_poisson_hmm(
            k, self.initial_probs, self.transition_matrix, self.rate_per_bin, self.starts)[1])(keys)
        return draw.reshape(tuple(sample_shape) + self.event_shape)


def poisson_hmm_model(
    counts=None,
    *,
    starts,
    n_states: int,
    bin_size: float,
    n_neurons: int | None = None,
    init_concentration: float = 2.0,
    transition_concentration: float = 2.0,
    stickiness: float = 0.0,
    rate_shape: float = 2.0,
    rate_rate: float = 0.1,
    mask=None,
):
    r"""Poisson HMM over trials laid end to end: NumPyro model (states marginalised).

    Sites: ``initial_probs`` (hidden_state,) :math:`\sim \mathrm{Dir}(c_0)`; ``transition_matrix``
    (hidden_state_from, hidden_state), rows :math:`\sim \mathrm{Dir}(c + s e_k)`; ``rate`` (hidden_state, neuron) in Hz
    :math:`\sim \mathrm{Gamma}(a, b)` (shape, rate in seconds: the default Gamma(2, 0.1) has mean
    20 Hz and adds about one spike per 10 s of a state); ``counts`` (time, neuron)
    :math:`\sim` :class:`PoissonHMMCounts`. With one state the Dirichlet sites are absent.

    Examples
    --------
    >>> import numpy as np
    >>> from numpyro import handlers
    >>> from bayesneuro.density.hmm import poisson_hmm_model
    >>> tr = handlers.trace(handlers.seed(poisson_hmm_model, 0)).get_trace(
    ...     starts=np.r_[True, np.zeros(9, bool)], n_states=2, bin_size=0.05, n_neurons=3)
    >>> tr["rate"]["value"].shape, tr["counts"]["value"].shape
    ((2, 3), (10, 3))
    """
    n = counts.shape[-1] if counts is not None else n_neurons
    if n is None:
        raise ValueError("give counts or n_neurons")
    K = int(n_states)
    if K > 1:
        pi = numpyro.sample("initial_probs", dist.Dirichlet(jnp.full(K, init_concentration)))
        conc = jnp.full((K, K), transition_concentration) + stickiness * jnp.eye(K)
        A = numpyro.sample("transition_matrix", dist.Dirichlet(conc).to_event(1))
    else:
        pi, A = jnp.ones(1), jnp.ones((1, 1))
    with numpyro.plate("state", K, dim=-2), numpyro.plate("neuron", n, dim=-1):
        rate = numpyro.sample("rate", dist.Gamma(rate_shape, rate_rate))
    numpyro.sample("counts", PoissonHMMCounts(pi, A, rate * bin_size, starts, mask), obs=counts)


_DIMS = {"initial_probs": ["hidden_state"], "transition_matrix": ["hidden_state_from", "hidden_state"],
         "rate": ["hidden_state", "neuron"],
         "counts": ["time", "neuron"], "starts": ["time"]}

_SITES = ("rate", "initial_probs", "transition_matrix")
_jit_forward = jit(forward)
_jit_smoothed = jit(smoothed_states)
_jit_viterbi = jit(viterbi)
_jit_emissions = jit(log_emissions)


# -- data handling -----------------------------------------------------------------------------


class _Data(NamedTuple):
    counts: np.ndarray
    starts: np.ndarray
    bin_size: float
    coords: dict


def _as_data(data: Any, bin_size: float | None = None) -> _Data:
    from .._validation import _as_counts
    from ..data import SpikeData

    if isinstance(data, _Data):
        return data
    if isinstance(data, SpikeData):
        X, seg, bs, coords = np.asarray(data.counts), np.asarray(data.segment_ids), data.bin_size, dict(data.coords)
    else:
        X = _as_counts(data)
        seg, bs = np.zeros(X.shape[0], np.int64), 1.0 if bin_size is None else float(bin_size)
        coords = {"time": (np.arange(X.shape[0]) + 0.5) * bs, "neuron": np.arange(X.shape[1])}
    coords.pop("trial", None)
    coords.pop("feature", None)
    starts = np.r_[True, seg[1:] != seg[:-1]]
    lengths = np.diff(np.r_[np.flatnonzero(starts), X.shape[0]])
    if np.any(lengths < 2):
        i = int(np.flatnonzero(lengths < 2)[0])
        raise ValueError(f"trial {i} has {int(lengths[i])} bin; the HMM needs at least 2 bins per trial")
    return _Data(X, starts, float(bs), coords)


def _relabel(params: dict, K: int, reference: np.ndarray | None = None) -> dict:
    """Permute the states of every draw (leading axes are draws).

    Without `reference`, states are sorted by total rate. With a reference rate matrix
    (state, neuron), each draw's states are matched to it by the assignment that minimises the
    squared distance of log rates (Hungarian algorithm), so draws near a mode whose states have
    similar total rates are not scrambled.
    """
    rate = np.asarray(params["rate"])
    lead = rate.shape[:-2]
    flat = rate.reshape((-1,) + rate.shape[-2:])
    if reference is None:
        order = np.argsort(flat.sum(axis=-1), axis=-1, kind="stable")
    else:
        from scipy.optimize import linear_sum_assignment

        lr, lref = np.log(flat + 1e-12), np.log(np.asarray(reference) + 1e-12)
        cost = np.sum((lref[None, :, None, :] - lr[:, None, :, :]) ** 2, axis=-1)  # (draw, ref, own)
        order = np.stack([linear_sum_assignment(c)[1] for c in cost])
    order = order.reshape(lead + (K,))
    out = {k: np.asarray(v) for k, v in params.items()}
    out["rate"] = np.take_along_axis(rate, order[..., None], axis=-2)
    if K > 1:
        out["initial_probs"] = np.take_along_axis(out["initial_probs"], order, axis=-1)
        A = np.take_along_axis(out["transition_matrix"], order[..., None], axis=-2)
        out["transition_matrix"] = np.take_along_axis(A, order[..., None, :], axis=-1)
    return out


# -- estimator -------------------------------------------------------------------------------


class PoissonHMM(Estimator):
    """Hidden Markov model of population count vectors, fitted through :func:`bayesneuro.infer.fit`.

    Parameters
    ----------
    n_states : int
        Number of hidden states ``K >= 1``.
    init_concentration, transition_concentration, stickiness, rate_shape, rate_rate : float
        Priors of :func:`poisson_hmm_model`.

    Attributes
    ----------
    params_ : HMMParams
        The best MAP estimate (numpy), states in ascending order of total rate.
    result_ : FitResult
        The fit, with every draw relabelled the same way.
    map_objectives_ : numpy.ndarray
        Negative log joint at the optimum of each restart (spread = local optima).
    bin_size_ : float
    neuron_ids_ : numpy.ndarray

    Examples
    --------
    >>> import jax, numpy as np
    >>> from bayesneuro.density.hmm import PoissonHMM, sample_poisson_hmm
    >>> A = np.array([[0.95, 0.05], [0.05, 0.95]])
    >>> _, x = sample_poisson_hmm(jax.random.key(1), np.array([0.5, 0.5]), A,
    ...                           np.array([[0.5, 2.0], [3.0, 0.5]]), np.r_[True, np.zeros(399, bool)])
    >>> hmm = PoissonHMM(2).fit(np.asarray(x), key=0, bin_size=0.1, n_restarts=2, progress=False)
    >>> bool(np.allclose(hmm.params_.rate * 0.1, [[0.5, 2.0], [3.0, 0.5]], atol=0.4))
    True
    """

    score_unit = "nats/bin"
    log_likelihood_dim = "trial"

    def __init__(self, n_states: int, *, init_concentration: float = 2.0, transition_concentration: float = 2.0,
                 stickiness: float = 0.0, rate_shape: float = 2.0, rate_rate: float = 0.1) -> None:
        if isinstance(n_states, bool) or not isinstance(n_states, (int, np.integer)) or n_states < 1:
            raise ValueError(f"n_states must be an integer >= 1, got {n_states!r}")
        for name, v in dict(init_concentration=init_concentration, transition_concentration=transition_concentration,
                            rate_shape=rate_shape, rate_rate=rate_rate).items():
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not (np.isfinite(stickiness) and stickiness >= 0):
            raise ValueError(f"stickiness must be >= 0, got {stickiness!r}")
        self.n_states = n_states
        self.init_concentration = init_concentration
        self.transition_concentration = transition_concentration
        self.stickiness = stickiness
        self.rate_shape = rate_shape
        self.rate_rate = rate_rate

    @property
    def _priors(self) -> dict:
        return dict(init_concentration=float(self.init_concentration),
                    transition_concentration=float(self.transition_concentration),
                    stickiness=float(self.stickiness), rate_shape=float(self.rate_shape),
                    rate_rate=float(self.rate_rate))

    # ---- fitting

    def _model_kwargs(self, d: _Data, pad: bool = True) -> dict:
        """The model's data; ``pad``: bins padded to a bucket length (after the last trial, masked),
        so a recording of another length reuses the compiled programs."""
        kw = dict(counts=d.counts, starts=d.starts, n_states=int(self.n_states), bin_size=d.bin_size, **self._priors)
        T = d.counts.shape[0]
        if pad:  # the mask even when nothing is padded: the programs see one argument structure
            n_pad = bucket_length(T)
            kw.update(counts=pad_axis(d.counts, n_pad), starts=pad_axis(d.starts, n_pad),
                      mask=pad_axis(np.ones(T, bool), n_pad))
        return kw

    def _random_init(self, key, d: _Data) -> dict:
        K, N = int(self.n_states), d.counts.shape[1]
        mean_rate = (d.counts.mean(axis=0) + 0.5 / d.counts.shape[0]) / d.bin_size
        k1, k2 = jax.random.split(key)
        rate = mean_rate * np.exp(0.7 * np.asarray(jax.random.normal(k1, (K, N))))
        out = {"rate": rate}
        if K > 1:
            out["initial_probs"] = np.full(K, 1.0 / K)
            A = 0.8 * np.eye(K) + 0.2 / K + 0.02 * np.asarray(jax.random.uniform(k2, (K, K)))
            out["transition_matrix"] = A / A.sum(axis=1, keepdims=True)
        return out

    def _quantile_init(self, d: _Data) -> dict:
        """Deterministic start: bins split into K groups by population count, each group's mean rates."""
        K, T = int(self.n_states), d.counts.shape[0]
        order = np.argsort(d.counts.sum(axis=1), kind="stable")
        rate = np.stack([d.counts[g].mean(axis=0) for g in np.array_split(order, K)])
        out = {"rate": (rate + 0.5 / T) / d.bin_size}
        if K > 1:
            out["initial_probs"] = np.full(K, 1.0 / K)
            out["transition_matrix"] = 0.8 * np.eye(K) + 0.2 / K
        return out

    @pynapple_io()
    def fit(self, data: Any, *, method: str = "map", key: Any = None, progress: bool | None = None,
            bin_size: float | None = None, n_restarts: int = 5, max_iter: int = 2000, **options) -> PoissonHMM:
        """Fit to counts (a SpikeData, or a ``(time, neuron)`` array with `bin_size` in seconds).

        Parameters
        ----------
        data : SpikeData or array_like, shape (time, neuron)
        method : {"map", "laplace", "nuts"}
            MAP runs `n_restarts` L-BFGS fits and keeps the best; "laplace" and "nuts" then
            start from that mode.
        key : jax.random key or int, optional
            Required when random numbers are drawn: ``n_restarts > 1`` (random starts) or
            ``method`` "laplace" / "nuts" (posterior draws).
        progress : bool, optional
        bin_size : float, optional
            Seconds, for a plain array.
        n_restarts : int
            MAP starts; the best mode is kept (the likelihood has local optima). ``1``: one
            deterministic start (the bins split into ``n_states`` groups by population count, each
            group's mean rates), no key needed; more: that many random starts drawn from `key`.
        max_iter : int
            L-BFGS iterations of each MAP start.
        **options
            Options of the final fit's method for :func:`bayesneuro.infer.fit` (e.g.
            ``num_samples``, ``num_warmup``).

        Raises
        ------
        ValueError
            Unknown method, negative, non-integer or NaN counts, a trial shorter than 2 bins, or
            `bin_size` given with a SpikeData.
        TypeError
            No `key` where one is needed.
        """
        from ..data import SpikeData
        from ..infer import fit as infer_fit

        if method not in ("map", "laplace", "nuts"):
            raise ValueError(f"method must be 'map', 'laplace' or 'nuts', got {method!r}")
        if isinstance(n_restarts, bool) or not isinstance(n_restarts, (int, np.integer)) or n_restarts < 1:
            raise ValueError(f"n_restarts must be an integer >= 1, got {n_restarts!r}")
        why = f"n_restarts={n_restarts} (random starts)" if n_restarts > 1 else f"method={method!r} (posterior draws)"
        key = resolve_key(key, needed=n_restarts > 1 or method != "map", why=why)
        if bin_size is not None and isinstance(data, SpikeData):
            raise ValueError("bin_size is taken from the SpikeData; pass it only with a plain array")
        d = _as_data(data, bin_size)
        if np.any(d.counts.sum(axis=0) == 0):
            warnings.warn(f"neurons {np.flatnonzero(d.counts.sum(axis=0) == 0).tolist()} have no spikes; their "
                          "rates are set by the prior", UserWarning, stacklevel=2)
        kw = self._model_kwargs(d, pad=method != "nuts")
        # a MAP run from a full init_to_value start draws no random numbers: any key serves
        k_restart, k_final = jax.random.split(key) if key is not None else (None, None)
        if n_restarts == 1:
            starts = [(jax.random.key(0), self._quantile_init(d))]
        else:
            starts = []
            for k in jax.random.split(k_restart, n_restarts):
                k_init, k_fit = jax.random.split(k)
                starts.append((k_fit, self._random_init(k_init, d)))
        best, objectives = None, []
        for k_fit, init in starts:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = infer_fit(poisson_hmm_model, method="map", key=k_fit, progress=progress,
                                init_strategy=init_to_value(values=init), max_iter=max_iter, model_kwargs=kw)
            objectives.append(float(res.info["objective"]))
            if best is None or objectives[-1] < min(objectives[:-1]):
                best = res
        point = {k: v[0, 0] for k, v in best.samples.items()}
        if method != "map":
            best = infer_fit(poisson_hmm_model, method=method, key=k_final, progress=progress,
                             init_strategy=init_to_value(values=point), model_kwargs=kw, **options)
        if "mask" in kw:  # the result describes the recording's bins, not the padding
            unpad_result(best, d.counts.shape[0], ("counts", "starts"))
        mode = _relabel({k: v for k, v in point.items() if k in _SITES}, int(self.n_states))
        self.params_ = self._params(mode)
        self._set_result(best, d)
        self.map_objectives_ = np.asarray(objectives)
        self.bin_size_, self._data, self._progress, self._laplace = d.bin_size, d, progress, None
        self.neuron_ids_ = d.coords["neuron"]
        return self

    def _set_result(self, res, d: _Data) -> None:
        K = int(self.n_states)
        lead = {k: v for k, v in res.samples.items() if k in _SITES}
        new = {**res.samples, **_relabel(lead, K, reference=self.params_.rate)}
        coords = {"time": d.coords["time"], "neuron": d.coords["neuron"], "hidden_state": np.arange(K),
                  "hidden_state_from": np.arange(K)}
        self.result_ = dataclasses.replace(res, samples=new, coords=coords, dims=dict(_DIMS), _idata=None)

    def _params(self, p: dict) -> HMMParams:
        K = int(self.n_states)
        return HMMParams(np.asarray(p.get("initial_probs", np.ones(K))),
                         np.asarray(p.get("transition_matrix", np.ones((K, K)))), np.asarray(p["rate"]))

    # ---- inference on (new) data

    def _terms(self, data: Any, params: HMMParams | None = None):
        self._check_fitted()
        d = _as_data(data, self.bin_size_)
        p = self.params_ if params is None else params
        if d.counts.shape[1] != p.rate.shape[1]:
            raise ValueError(f"data have {d.counts.shape[1]} neurons but the model was fitted to {p.rate.shape[1]}")
        with np.errstate(divide="ignore"):
            li, lA = np.log(p.initial_probs), np.log(p.transition_matrix)
        le = _jit_emissions(jnp.asarray(d.counts), jnp.asarray(p.rate * d.bin_size))
        return jnp.asarray(li), jnp.asarray(lA), le, jnp.asarray(d.starts)

    def _per_trial(self, per_bin: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return np.bincount(np.cumsum(starts) - 1, weights=per_bin)

    @pynapple_io()
    def log_likelihood(self, data: Any) -> np.ndarray:
        """:math:`\\log p(x)` of each trial (segment) under the fitted (MAP) parameters, states summed out.

        Returns
        -------
        numpy.ndarray, shape (trial,)
            Nats; ``.sum()`` is the log-likelihood of all the data (trials restart from
            :math:`\\pi` and are independent).
        """
        terms = self._terms(data)
        return self._per_trial(np.asarray(_jit_forward(*terms)[2]), np.asarray(terms[3]))

    @pynapple_io()
    def score(self, data: Any) -> float:
        """Log-likelihood per bin, in nats/bin (higher is better; for held-out data)."""
        return float(self.log_likelihood(data).sum() / _as_data(data, self.bin_size_).counts.shape[0])

    @pynapple_io()
    def evaluate(self, data: Any) -> dict:
        """Fit metrics on `data`.

        Returns
        -------
        dict
            ``log_likelihood`` (total, nats), ``log_likelihood_per_bin`` (nats/bin, as
            :meth:`score`), ``log_likelihood_per_trial`` (array), ``n_bins``.
        """
        ll = self.log_likelihood(data)
        n = _as_data(data, self.bin_size_).counts.shape[0]
        return {"log_likelihood": float(ll.sum()), "log_likelihood_per_bin": float(ll.sum() / n),
                "log_likelihood_per_trial": ll, "n_bins": int(n)}

    def posterior_states(self, data: Any) -> np.ndarray:
        """Smoothed state probabilities :math:`p(z_t = k \\mid x)`, shape (time, state)."""
        return np.asarray(_jit_smoothed(*self._terms(data)))

    @pynapple_io("tsdframe")
    def most_likely_states(self, data: Any) -> np.ndarray:
        """Viterbi path, shape (time,), each trial decoded on its own."""
        return np.asarray(_jit_viterbi(*self._terms(data))[0])

    # ---- posterior summaries

    def _draws(self, *, key, num_samples: int) -> dict:
        from ..infer import fit as infer_fit

        if self.result_.method == "map":
            if self._laplace is None or self._laplace.n_draw != num_samples:
                point = {k: v[0, 0] for k, v in self.result_.samples.items()}
                res = infer_fit(poisson_hmm_model, method="laplace", key=key, progress=self._progress,
                                init_strategy=init_to_value(values=point), num_samples=num_samples,
                                model_kwargs=self._model_kwargs(self._data))
                lead = {k: v for k, v in res.samples.items() if k in _SITES}
                self._laplace = dataclasses.replace(
                    res, samples={**res.samples, **_relabel(lead, int(self.n_states), reference=self.params_.rate)})
            return self._laplace.flat_samples()
        flat = self.result_.flat_samples()
        n = next(iter(flat.values())).shape[0]
        idx = np.arange(n) if n == num_samples else np.asarray(jax.random.choice(key, n, (num_samples,)))
        return {k: v[idx] for k, v in flat.items()}

    def posterior_statistics(self, *, key: Any, num_samples: int) -> dict:
        """Posterior draws of the interpretable per-state summaries (for :func:`compare_states`).

        - ``rate`` (draw, hidden_state, neuron): firing rate of each neuron in each state, Hz;
        - ``dwell_time`` (draw, hidden_state): expected time in a state per visit,
          :math:`\\Delta / (1 - A_{kk})` seconds (infinite with one state);
        - ``occupancy`` (draw, hidden_state): fraction of the training bins spent in each state
          (mean smoothed probability under the draw's parameters).

        Draws come from the fit's posterior (Laplace or NUTS), resampled with `key` to
        `num_samples`; after a MAP fit a Laplace approximation at the mode is computed (once,
        by `key`). States are ordered by total rate in every draw.
        """
        self._check_fitted()
        key = resolve_key(key, needed=True, why="posterior_statistics (posterior draws)")
        num_samples = int(num_samples)
        draws = self._draws(key=key, num_samples=num_samples)
        K, bs = int(self.n_states), self.bin_size_
        rate = np.asarray(draws["rate"])
        A = np.asarray(draws["transition_matrix"]) if K > 1 else np.ones((num_samples, 1, 1))
        pi = np.asarray(draws["initial_probs"]) if K > 1 else np.ones((num_samples, 1))
        with np.errstate(divide="ignore"):
            dwell = bs / (1.0 - np.diagonal(A, axis1=1, axis2=2))
        d = self._data
        counts, starts = jnp.asarray(d.counts), jnp.asarray(d.starts)

        def occ(p, a, r):
            le = log_emissions(counts, r * bs)
            return jnp.mean(smoothed_states(jnp.log(p), jnp.log(a), le, starts), axis=0)

        occupancy = np.asarray(jit(jax.vmap(occ))(jnp.asarray(pi), jnp.asarray(A), jnp.asarray(rate)))
        # "hidden_state", not "state": compare_states stacks its states (epochs, conditions) on "state"
        coords = {"draw": np.arange(num_samples), "hidden_state": np.arange(K), "neuron": self.neuron_ids_}
        rate_da = xr.DataArray(rate, dims=("draw", "hidden_state", "neuron"), coords=coords, attrs={"units": "Hz"})
        two = ("draw", "hidden_state")
        return {
            "rate": rate_da,
            "dwell_time": xr.DataArray(dwell, dims=two, coords={k: coords[k] for k in two}, attrs={"units": "s"}),
            "occupancy": xr.DataArray(occupancy, dims=two, coords={k: coords[k] for k in two}),
        }

    def to_inference_data(self):
        """ArviZ InferenceData of the fit; ``log_likelihood`` holds ``counts`` (chain, draw, trial).

        MAP is a point fit: its estimate is in a ``point_estimate`` group (no ``posterior``) and
        ``counts`` has dims ``(trial,)``.

        Each value is the log-likelihood :math:`\\log p(x_{\\text{trial}})` of one trial
        (segment) under the draw's parameters, states summed out; trials restart from
        :math:`\\pi`, so they are the independent units LOO leaves out. The transition matrix has
        dims ``(hidden_state_from, hidden_state)``.
        """
        self._check_fitted()
        idata = self.result_.to_inference_data(log_likelihood=False)
        flat = self.result_.flat_samples()
        n = next(iter(flat.values())).shape[0]
        starts = self._data.starts
        rows = []
        for i in range(n):
            p = self._params({k: flat[k][i] for k in flat})
            rows.append(self._per_trial(np.asarray(_jit_forward(*self._terms(self._data, p))[2]), starts))
        ll = np.stack(rows).reshape(self.result_.n_chain, self.result_.n_draw, -1)
        ds = xr.Dataset({"counts": (("chain", "draw", "trial"), ll)},
                        coords={"chain": np.arange(ll.shape[0]), "draw": np.arange(ll.shape[1]),
                                "trial": np.arange(ll.shape[2])})
        if self.result_.method == "map":  # a point fit: no chain/draw (point_estimate, no posterior)
            ds = ds.isel(chain=0, draw=0, drop=True)
        idata.add_groups(log_likelihood=ds)
        return idata


# -- model selection ---------------------------------------------------------------------------


class StateSelection(NamedTuple):
    """Held-out comparison of numbers of states.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate ``n_states``: ``train_log_likelihood`` and ``test_log_likelihood``
        (per bin), ``test_se`` (standard error, per bin, of the test difference to the best
        candidate, from trial or 20 time-block batch means of the per-bin one-step predictive
        log-likelihoods), ``n_params`` and ``bic`` (on the training data).
    n_states : int
        The smallest candidate within one ``test_se`` of the best test log-likelihood (1-SE rule).
    n_states_max : int
        The candidate with the highest test log-likelihood.
    """

    table: Any
    n_states: int
    n_states_max: int


def _block_se(diff: np.ndarray, starts: np.ndarray) -> float:
    seg = np.cumsum(starts) - 1
    if seg.max() + 1 >= 5:
        groups = seg
    else:
        groups = np.repeat(np.arange(20), [len(b) for b in np.array_split(np.arange(diff.size), 20)])
    U = int(groups.max()) + 1
    n = np.bincount(groups, minlength=U)
    tot = np.bincount(groups, weights=diff, minlength=U)
    # ratio estimator of the mean per bin, with its between-block standard error
    mean = tot.sum() / n.sum()
    resid = tot - mean * n
    return float(np.sqrt(U / (U - 1) * np.sum(resid**2)) / n.sum())


def select_n_states(train: Any, test: Any, candidates, *, key: Any = None, bin_size: float | None = None,
                    n_restarts: int = 5, max_iter: int = 2000, progress: bool | None = None,
                    **priors) -> StateSelection:
    """Fit a :class:`PoissonHMM` per candidate number of states and score it on held-out data.

    Parameters
    ----------
    train, test : SpikeData or array_like, shape (time, neuron)
    candidates : iterable of int
    key : jax.random key or int, optional
        Required with ``n_restarts > 1``; each candidate's fit gets its own key.
    bin_size : float, optional
        For plain arrays.
    n_restarts, max_iter, progress
        Options of :meth:`PoissonHMM.fit` (fitted by MAP).
    **priors
        Prior parameters of :class:`PoissonHMM`.

    Returns
    -------
    StateSelection

    Warns
    -----
    UserWarning
        The choice is the largest candidate (or the smallest one above 1): the best number of
        states may lie outside the range; widen it.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from bayesneuro.density.hmm import sample_poisson_hmm, select_n_states
    >>> A = np.array([[0.95, 0.05], [0.05, 0.95]])
    >>> _, x = sample_poisson_hmm(jax.random.key(1), np.array([0.5, 0.5]), A,
    ...                           np.array([[0.5, 2.0], [3.0, 0.5]]), np.r_[True, np.zeros(1999, bool)])
    >>> x = np.asarray(x)
    >>> select_n_states(x[:1200], x[1200:], [1, 2, 3], key=0, n_restarts=2, progress=False).n_states
    2
    """
    import pandas as pd

    cands = [int(c) for c in candidates]
    if not cands:
        raise ValueError("candidates is empty")
    d_test = _as_data(test, bin_size)
    rows, pointwise = [], []
    keys = [None] * len(cands) if key is None else [jax.random.fold_in(as_key(key), i) for i in range(len(cands))]
    for K, k in zip(cands, keys):
        hmm = PoissonHMM(K, **priors).fit(train, method="map", key=k, bin_size=bin_size, n_restarts=n_restarts,
                                         max_iter=max_iter, progress=progress)
        tr = hmm._data
        ll_train = float(hmm.log_likelihood(tr).sum())
        pw = np.asarray(_jit_forward(*hmm._terms(test))[2])
        pointwise.append(pw)
        N = tr.counts.shape[1]
        n_params = K * N + (K - 1) + K * (K - 1)
        rows.append(dict(n_states=K, train_log_likelihood=ll_train / tr.counts.shape[0],
                         test_log_likelihood=pw.mean(), n_params=n_params,
                         bic=-2 * ll_train + n_params * np.log(tr.counts.shape[0])))
    table = pd.DataFrame(rows)
    best = int(np.argmax(table["test_log_likelihood"].values))
    table["test_se"] = [_block_se(pw - pointwise[best], d_test.starts) for pw in pointwise]
    ok = table["test_log_likelihood"].values >= table["test_log_likelihood"].values[best] - table["test_se"].values
    chosen = int(table["n_states"].values[np.flatnonzero(ok)].min()) if ok.any() else cands[best]
    _warn_if_on_edge(chosen, cands, what="number of states", floor=1,
                     how="widen the candidates (e.g. up to twice as many states)")
    return StateSelection(table.set_index("n_states"), chosen, cands[best])
