r"""What an HMM's hidden states encode: state transitions driven by covariates, emissions kept.

A fitted Poisson HMM gives each bin an emission table :math:`\ell_{tk} = \log p(x_t \mid s_t = k)`
and a transition matrix :math:`P`. :class:`StateEncoder` lets covariates tilt the transitions,

.. math::

    p(s_t = k \mid s_{t-1} = j, \Phi_t) \propto P_{jk} \exp(c_k + \Phi_t \cdot W_k), \qquad
    p(s_t = k \mid \Phi_t) \propto \pi_k \exp(c_k + \Phi_t \cdot W_k) \text{ at a segment start,}

with state 0 the reference (:math:`c_0 = 0`, :math:`W_0 = 0`) and :math:`\Phi` the covariates on
a temporal basis (as in :class:`~bayesneuro.joint.LatentEncoder`). The states are summed out by
the forward algorithm on the emission tables, so the weights' posterior carries the uncertainty
of which state the population was in. ``uncertainty="mode"`` is the plug-in: the most probable
state of each bin (under the HMM without covariates) is taken as observed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from bayesneuro._jit import jit

from ..estimator import PROB, Estimator, resolve_key
from ..infer import fit as _fit
from . import _design
from .posterior import StatePosterior

__all__ = ["StateEncoder", "driven_state_log_likelihood", "state_encoder_model"]

_NEG = -1e30


@jit
def driven_state_log_likelihood(log_emission, logits, log_transition, log_initial, starts):
    """Per-bin ``log p(x_t | x_<t)`` of an HMM whose transitions are tilted by ``logits`` (forward algorithm).

    Parameters
    ----------
    log_emission, logits : array, shape (time, hidden_state)
    log_transition : array, shape (hidden_state_from, hidden_state)
    log_initial : array, shape (hidden_state,)
    starts : array of bool, shape (time,)

    Returns
    -------
    jax.Array, shape (time,)
    """

    def step(prev, inp):
        le, u, start = inp
        trans = jax.nn.log_softmax(log_transition + u[None], axis=1)  # (from, to)
        init = jax.nn.log_softmax(log_initial + u)
        pred = jnp.where(start, init, jax.nn.logsumexp(prev[:, None] + trans, axis=0))
        joint = pred + le
        c = jax.nn.logsumexp(joint)
        return joint - c, c

    K = log_emission.shape[1]
    _, ll = jax.lax.scan(step, jnp.full(K, -jnp.log(K), log_emission.dtype), (log_emission, logits, starts))
    return ll


class _States(dist.Distribution):
    support = constraints.real_vector

    def __init__(self, logits, log_transition, log_initial, starts, *, validate_args=None):
        self.logits, self.log_transition, self.log_initial, self.starts = logits, log_transition, log_initial, starts
        super().__init__(batch_shape=logits.shape[:1], event_shape=logits.shape[1:], validate_args=validate_args)

    def log_prob(self, value):
        return driven_state_log_likelihood(value, self.logits, self.log_transition, self.log_initial, self.starts)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("drawing emission tables is not supported")


def state_encoder_model(log_emission=None, *, design, log_transition, log_initial, starts, n_state: int,
                        prior_scale: float = 3.0):
    """NumPyro model of :class:`StateEncoder`; ``log_emission`` (time, hidden_state) is the observation."""
    F, B = design.shape[1], design.shape[2]
    bias = numpyro.sample("state_bias", dist.Normal(0.0, prior_scale).expand([n_state - 1]).to_event(1))
    weights = numpyro.sample("weights", dist.Normal(0.0, prior_scale).expand([F, B, n_state - 1]).to_event(3))
    u = bias + jnp.einsum("tfb,fbk->tk", design, weights)
    logits = jnp.concatenate([jnp.zeros_like(u[:, :1]), u], axis=1)
    numpyro.sample("emissions", _States(logits, log_transition, log_initial, starts), obs=log_emission)


class StateEncoder(Estimator):
    """What the hidden states of a Poisson HMM encode: covariate-driven transitions, states summed out.

    Parameters
    ----------
    basis : bayesneuro.bases.Basis, optional
        Temporal basis of the filters; None: the current bin's covariates (shifted by ``lead``).
    lead : int, default 0
        Bins by which covariates are advanced (negative lags: states that anticipate them).
    prior_scale : float, default 3.0
        SD of the Normal priors of the weights and state biases (log-odds units).

    Attributes
    ----------
    filters_ : xarray.Dataset
        ``mean``, ``lower``, ``upper``, dims ``(hidden_state, feature, lag)``: the log-odds of
        moving into each state (against state 0, whose filters are 0) per unit of covariate.
    state_bias_ : numpy.ndarray, shape (hidden_state,)
    result_ : bayesneuro.infer.FitResult

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.joint import StatePosterior, StateEncoder
    >>> rng = np.random.default_rng(0)
    >>> s = rng.normal(size=(300, 1))
    >>> states = (rng.random(300) < 1 / (1 + np.exp(-2 * s[:, 0]))).astype(int)  # state 1 when s is high
    >>> le = np.where(np.arange(2)[None] == states[:, None], 0.0, -3.0)           # noisy emissions
    >>> post = StatePosterior(np.exp(le), le, np.full((2, 2), 0.5), np.full(2, 0.5), 0.1, None, np.arange(300) * 0.1)
    >>> enc = StateEncoder().fit(post, s, method="laplace", key=0, progress=False)
    >>> bool(enc.filters_["lower"].sel(hidden_state=1).item() > 0)
    True
    """

    score_unit = "nats/bin"
    log_likelihood_dim = "time"

    def __init__(self, basis: Any = None, *, lead: int = 0, prior_scale: float = 3.0):
        self.basis = basis
        self.lead = lead
        self.prior_scale = prior_scale

    def _inputs(self, states: Any, covariates: Any, feature_names=None, *, naive: bool = False):
        if not isinstance(states, StatePosterior):
            raise TypeError(f"states must be a StatePosterior (latent_posterior of a PoissonHMM), got {type(states).__name__}")
        _design.basis_matrix(self.basis)
        x, names = _design.covariates_of(covariates, states.n_time, feature_names)
        seg = states.segment_ids
        design = _design.features(x, self.basis, _design.check_lead(self.lead), seg)
        starts = np.r_[True, seg[1:] != seg[:-1]]
        le = states.log_emission
        if naive:
            le = np.where(np.arange(states.n_state)[None] == np.argmax(states.probs, axis=1)[:, None], 0.0, _NEG)
        with np.errstate(divide="ignore"):
            lP = np.maximum(np.log(states.transition_matrix), _NEG)
            lpi = np.maximum(np.log(states.initial_probs), _NEG)
        return design, np.maximum(le, _NEG), lP, lpi, starts, names

    def fit(self, states: StatePosterior, covariates: Any, *, feature_names: Any = None, method: str = "laplace",
            uncertainty: str = "message", key: Any = None, progress: bool | None = None, **options) -> StateEncoder:
        """Fit the state filters.

        Parameters
        ----------
        states : StatePosterior
            From :func:`~bayesneuro.joint.latent_posterior` of a fitted PoissonHMM.
        covariates : array_like, shape (time, feature), or SpikeData
        feature_names : sequence of str, optional
        method : {"laplace", "map", "svi", "nuts"}
        uncertainty : {"message", "mode"}
            ``"message"``: states summed out over the emission tables; ``"mode"``: the most
            probable state of each bin plugged in as observed (for comparison).
        key : jax.random key or int
            Required by every method but ``"map"``.
        progress : bool, optional
        **options
            Options of :func:`bayesneuro.infer.fit`.
        """
        _design.check_fit_options(self.prior_scale, uncertainty, ("message", "mode"))
        rng = resolve_key(key, needed=method != "map", why=f"method={method!r}")
        design, le, lP, lpi, starts, names = self._inputs(states, covariates, feature_names,
                                                          naive=uncertainty == "mode")
        K = states.n_state
        if K < 2:
            raise ValueError("a StateEncoder needs at least 2 hidden states")
        self.feature_names_, self.n_state_ = names, K
        coords = {"hidden_state": np.arange(1, K), "feature": np.asarray(names), "basis": np.arange(design.shape[2]),
                  "time": states.time, "hidden_state_all": np.arange(K)}
        dims = {"state_bias": ["hidden_state"], "weights": ["feature", "basis", "hidden_state"],
                "emissions": ["time", "hidden_state_all"], "design": ["time", "feature", "basis"],
                "starts": ["time"], "log_transition": ["hidden_state_from", "hidden_state_all"],
                "log_initial": ["hidden_state_all"]}
        self.result_ = _fit(state_encoder_model, method=method, key=0 if rng is None else rng, progress=progress,
                            coords=coords, dims=dims, log_emission=le, design=design, log_transition=lP,
                            log_initial=lpi, starts=starts, n_state=K, prior_scale=float(self.prior_scale), **options)
        self.method_, self.uncertainty_, self.bin_size_ = method, uncertainty, states.bin_size
        d = self.result_.flat_samples()
        self.state_bias_ = np.r_[0.0, d["state_bias"].mean(axis=0)]
        self.weights_ = np.concatenate([np.zeros(d["weights"].shape[1:3] + (1,)), d["weights"].mean(axis=0)], axis=2)
        self.filters_ = self.filters()
        return self

    def filters(self, prob: float = PROB):
        """Filters of states 1.. (against state 0) with ``prob`` bands, dims ``(hidden_state, feature, lag)``."""
        self._check_fitted()
        Bm = _design.basis_matrix(self.basis)
        h = np.einsum("kb,dfbs->dsfk", Bm, self.result_.flat_samples()["weights"])
        coords = {"hidden_state": np.arange(1, self.n_state_), "feature": np.asarray(self.feature_names_),
                  "lag": _design.lags_seconds(self.basis, int(self.lead), self.bin_size_)}
        dims = ("hidden_state", "feature", "lag")
        return _design.filters_dataset(h, dims, coords, method=self.method_, uncertainty=self.uncertainty_, prob=prob)

    def log_likelihood(self, states: StatePosterior, covariates: Any) -> np.ndarray:
        """``log p(x_t | x_<t, covariates)`` per bin, nats, at the posterior mean weights."""
        self._check_fitted()
        design, le, lP, lpi, starts, _ = self._inputs(states, covariates, self.feature_names_)
        logits = self.state_bias_ + np.einsum("tfb,fbk->tk", design, self.weights_)
        return np.asarray(driven_state_log_likelihood(jnp.asarray(le), jnp.asarray(logits), jnp.asarray(lP),
                                                      jnp.asarray(lpi), jnp.asarray(starts)))

    def score(self, states: StatePosterior, covariates: Any) -> float:
        """Mean ``log p(x_t | x_<t, covariates)`` per bin (nats/bin): compare with the HMM without covariates."""
        return float(np.mean(self.log_likelihood(states, covariates)))

    def to_inference_data(self):
        """ArviZ InferenceData of the fit."""
        self._check_fitted()
        return self.result_.to_inference_data()

    def __repr__(self) -> str:
        return f"StateEncoder(basis={self.basis!r}, lead={self.lead}, prior_scale={self.prior_scale})"
