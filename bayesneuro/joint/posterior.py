r"""What a fitted density model says about its latents, bin by bin, for encoding models to use.

A density model of spike counts :math:`x` (GPFA, a Poisson LDS, an ensemble mixture, an HMM)
gives a posterior over its latents :math:`z`. An encoding model of those latents needs two views
of it:

- the **posterior** :math:`p(z_t \mid x)` (mean and standard deviation per bin): what the
  model believes, under its own prior. Its mean is what users have so far passed on as if it
  were data. It is shrunk towards the prior and smoothed over time, so its errors are
  correlated across bins;
- the **message** of each bin: the likelihood :math:`p(x_t \mid z_t)` of that bin's spikes as a
  function of the latents, as a Gaussian :math:`\propto N(\mu_t; z_t, J_t^{-1})` with mean
  :math:`\mu_t` and precision :math:`J_t`. It does not depend on the density model's prior, and
  the messages of different bins are independent given the latents. An encoding model that
  replaces the prior (latents driven by covariates) combines them with its own prior: this is the
  exact likelihood of the encoding model's parameters when the spikes' model is Gaussian.

For Gaussian observations :math:`y_t = C z_t + d + e_t`, :math:`e_t \sim N(0, R)` (GPFA of the
transformed counts), the message is exact:

.. math::

    J = C^\top R^{-1} C, \qquad \mu_t = J^{-1} C^\top R^{-1} (y_t - d).

For Poisson observations with a log link, :math:`x_{tn} \sim \mathrm{Poisson}(\exp(C_n z_t +
d_n))` (Poisson GPFA, Poisson LDS, the ensemble mixture), the message is the Laplace
(second-order) approximation of :math:`\log p(x_t \mid z_t)` at the posterior mode :math:`m_t`:

.. math::

    \lambda_t = \exp(C m_t + d), \qquad J_t = C^\top \mathrm{diag}(\lambda_t)\, C, \qquad
    \mu_t = m_t + J_t^{-1} C^\top (x_t - \lambda_t).

An HMM's latent is discrete; its message is the table of emission log-likelihoods
:math:`\log p(x_t \mid s_t = k)`, exact (:class:`StatePosterior`).

Functions
---------
:func:`latent_posterior`
    The :class:`LatentPosterior` (or :class:`StatePosterior`) of a fitted model on a recording.
:func:`gaussian_messages`, :func:`poisson_messages`
    The messages of the two observation models, from their parameters (pure numpy).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "LatentPosterior",
    "StatePosterior",
    "gaussian_messages",
    "latent_posterior",
    "poisson_messages",
]


def _segment_ids(seg: Any, n_time: int) -> np.ndarray:
    if seg is None:
        return np.zeros(n_time, dtype=np.int64)
    seg = np.asarray(seg)
    if seg.shape != (n_time,):
        raise ValueError(f"segment_ids must have one entry per bin ({n_time}), got shape {seg.shape}")
    # renumber to 0, 1, ... in order of appearance, so that any trial labels work
    change = np.r_[True, seg[1:] != seg[:-1]]
    return np.cumsum(change) - 1


@dataclasses.dataclass(frozen=True)
class LatentPosterior:
    """A density model's continuous latents, bin by bin: posterior and per-bin messages.

    Attributes
    ----------
    mean, sd : numpy.ndarray, shape (time, latent)
        Posterior mean and standard deviation of each latent under the density model (its
        prior included). ``sd`` may be None when only messages are known.
    message_mean : numpy.ndarray, shape (time, latent)
        :math:`\\mu_t`: the latents that bin ``t``'s spikes alone point to.
    message_precision : numpy.ndarray, shape (time, latent, latent)
        :math:`J_t`: how precisely they do (symmetric, positive semi-definite).
    bin_size : float
        Seconds per bin.
    segment_ids : numpy.ndarray of int, shape (time,)
        Contiguous segment (trial) of each bin, numbered from 0; the latents' dynamics restart at
        each segment.
    time : numpy.ndarray, shape (time,)
        Bin centres in seconds.
    latent : numpy.ndarray, shape (latent,)
        Latent labels.
    source : str
        What produced it (e.g. ``"GPFA"``).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.joint import LatentPosterior
    >>> post = LatentPosterior.from_messages(np.zeros((5, 2)), np.eye(2), bin_size=0.02)
    >>> post.n_time, post.n_latent, post.message_precision.shape
    (5, 2, (5, 2, 2))
    >>> post[1:3].n_time
    2
    """

    mean: np.ndarray
    sd: np.ndarray | None
    message_mean: np.ndarray
    message_precision: np.ndarray
    bin_size: float
    segment_ids: np.ndarray
    time: np.ndarray
    latent: np.ndarray
    source: str = ""

    def __post_init__(self):
        mu = np.asarray(self.message_mean, dtype=float)
        if mu.ndim != 2:
            raise ValueError(f"message_mean must be (time, latent), got shape {mu.shape}")
        T, L = mu.shape
        J = np.asarray(self.message_precision, dtype=float)
        if J.shape != (T, L, L):
            raise ValueError(f"message_precision must be (time, latent, latent) = {(T, L, L)}, got {J.shape}")
        mean = np.asarray(self.mean, dtype=float)
        if mean.shape != (T, L):
            raise ValueError(f"mean must be (time, latent) = {(T, L)}, got {mean.shape}")
        for name, arr in (("message_mean", mu), ("message_precision", J), ("mean", mean)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or inf (bin {np.argwhere(~np.isfinite(arr))[0][0]})")
        if self.sd is not None:
            sd = np.asarray(self.sd, dtype=float)
            if sd.shape != (T, L) or not np.all(np.isfinite(sd)) or np.any(sd < 0):
                raise ValueError(f"sd must be a finite non-negative (time, latent) = {(T, L)} array")
            object.__setattr__(self, "sd", sd)
        if not (np.isfinite(self.bin_size) and self.bin_size > 0):
            raise ValueError(f"bin_size must be positive, got {self.bin_size}")
        object.__setattr__(self, "message_mean", mu)
        object.__setattr__(self, "message_precision", 0.5 * (J + np.swapaxes(J, 1, 2)))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "segment_ids", _segment_ids(self.segment_ids, T))
        object.__setattr__(self, "time", np.asarray(self.time, dtype=float))
        object.__setattr__(self, "latent", np.asarray(self.latent))

    @classmethod
    def from_messages(cls, message_mean, message_precision, *, bin_size: float, segment_ids=None, mean=None, sd=None,
                      time=None, latent=None, source: str = "") -> LatentPosterior:
        """Build from messages (and optionally a posterior); a ``(latent, latent)`` precision is shared by all bins.

        Without ``mean``, the posterior mean is taken to be the message mean (a flat prior).
        """
        mu = np.asarray(message_mean, dtype=float)
        if mu.ndim == 1:
            mu = mu[:, None]
        T, L = mu.shape
        J = np.asarray(message_precision, dtype=float)
        if J.ndim == 2:
            if J.shape != (L, L):
                raise ValueError(f"message_precision must be ({L}, {L}) or (time, {L}, {L}), got {J.shape}")
            J = np.broadcast_to(J, (T, L, L))
        return cls(
            mean=mu if mean is None else mean, sd=sd, message_mean=mu, message_precision=J, bin_size=float(bin_size),
            segment_ids=segment_ids, time=(np.arange(T) + 0.5) * bin_size if time is None else time,
            latent=np.arange(L) if latent is None else latent, source=source,
        )

    @property
    def n_time(self) -> int:
        return self.message_mean.shape[0]

    @property
    def n_latent(self) -> int:
        return self.message_mean.shape[1]

    def __getitem__(self, idx) -> LatentPosterior:
        """The bins at ``idx`` (a slice, integer indices or a boolean mask over bins)."""
        idx = np.arange(self.n_time)[idx]
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError("select a non-empty 1-D set of bins")
        return dataclasses.replace(
            self, mean=self.mean[idx], sd=None if self.sd is None else self.sd[idx],
            message_mean=self.message_mean[idx], message_precision=self.message_precision[idx],
            segment_ids=self.segment_ids[idx], time=self.time[idx])

    def draws(self, n: int, *, key: Any) -> np.ndarray:
        """``n`` draws of the latents from the per-bin posterior marginals, ``(draw, time, latent)``."""
        from ..estimator import numpy_generator

        if self.sd is None:
            raise ValueError(f"this posterior ({self.source or 'from messages'}) has no sd to draw from")
        rng = numpy_generator(key, why="LatentPosterior.draws")
        return self.mean[None] + self.sd[None] * rng.standard_normal((int(n),) + self.mean.shape)

    def to_dataset(self):
        """``xarray.Dataset`` with ``mean``, ``sd``, ``message_mean`` and ``message_precision``."""
        import xarray as xr

        dims = ("time", "latent")
        data = {"mean": (dims, self.mean), "message_mean": (dims, self.message_mean),
                "message_precision": (("time", "latent", "latent_from"), self.message_precision)}
        if self.sd is not None:
            data["sd"] = (dims, self.sd)
        return xr.Dataset(data, coords={"time": self.time, "latent": self.latent, "latent_from": self.latent,
                                        "segment": ("time", self.segment_ids)},
                          attrs={"bin_size": self.bin_size, "source": self.source})

    def __repr__(self) -> str:
        return f"LatentPosterior(source={self.source!r}, time={self.n_time}, latent={self.n_latent})"


@dataclasses.dataclass(frozen=True)
class StatePosterior:
    """A discrete-state density model (HMM) on a recording: state probabilities and emission tables.

    Attributes
    ----------
    probs : numpy.ndarray, shape (time, hidden_state)
        Smoothed posterior :math:`p(s_t = k \\mid x)` under the HMM.
    log_emission : numpy.ndarray, shape (time, hidden_state)
        :math:`\\log p(x_t \\mid s_t = k)`: the message of each bin.
    transition_matrix : numpy.ndarray, shape (hidden_state_from, hidden_state)
    initial_probs : numpy.ndarray, shape (hidden_state,)
    bin_size : float
    segment_ids : numpy.ndarray of int, shape (time,)
    time : numpy.ndarray, shape (time,)
    source : str
    """

    probs: np.ndarray
    log_emission: np.ndarray
    transition_matrix: np.ndarray
    initial_probs: np.ndarray
    bin_size: float
    segment_ids: np.ndarray
    time: np.ndarray
    source: str = ""

    def __post_init__(self):
        le = np.asarray(self.log_emission, dtype=float)
        if le.ndim != 2:
            raise ValueError(f"log_emission must be (time, hidden_state), got shape {le.shape}")
        T, K = le.shape
        if np.any(np.isnan(le)) or np.any(le == np.inf):
            raise ValueError("log_emission contains NaN or +inf")
        P = np.asarray(self.transition_matrix, dtype=float)
        if P.shape != (K, K) or np.any(P < 0) or not np.allclose(P.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError(f"transition_matrix must be a ({K}, {K}) row-stochastic matrix")
        pi = np.asarray(self.initial_probs, dtype=float)
        if pi.shape != (K,) or np.any(pi < 0) or not np.isclose(pi.sum(), 1.0, atol=1e-6):
            raise ValueError(f"initial_probs must be a probability vector of length {K}")
        object.__setattr__(self, "log_emission", le)
        object.__setattr__(self, "transition_matrix", P)
        object.__setattr__(self, "initial_probs", pi)
        object.__setattr__(self, "probs", np.asarray(self.probs, dtype=float))
        object.__setattr__(self, "segment_ids", _segment_ids(self.segment_ids, T))
        object.__setattr__(self, "time", np.asarray(self.time, dtype=float))

    @property
    def n_time(self) -> int:
        return self.log_emission.shape[0]

    @property
    def n_state(self) -> int:
        return self.log_emission.shape[1]

    def __getitem__(self, idx) -> StatePosterior:
        """The bins at ``idx`` (contiguous blocks keep their segments)."""
        idx = np.arange(self.n_time)[idx]
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError("select a non-empty 1-D set of bins")
        return dataclasses.replace(self, probs=self.probs[idx], log_emission=self.log_emission[idx],
                                   segment_ids=self.segment_ids[idx], time=self.time[idx])

    def __repr__(self) -> str:
        return f"StatePosterior(source={self.source!r}, time={self.n_time}, hidden_state={self.n_state})"


def gaussian_messages(y, loadings, offset, observation_var) -> tuple[np.ndarray, np.ndarray]:
    """Exact messages of Gaussian observations ``y_t = C z_t + d + N(0, diag(r))``.

    Parameters
    ----------
    y : array, shape (time, neuron)
    loadings : array, shape (neuron, latent)
    offset, observation_var : array, shape (neuron,)

    Returns
    -------
    message_mean : numpy.ndarray, shape (time, latent)
    message_precision : numpy.ndarray, shape (latent, latent)
        The same for every bin.

    Examples
    --------
    >>> import numpy as np
    >>> C = np.array([[1.0], [2.0]])
    >>> mu, J = gaussian_messages(np.array([[1.0, 2.0]]), C, np.zeros(2), np.ones(2))
    >>> float(mu[0, 0]), float(J[0, 0])
    (1.0, 5.0)
    """
    y, C = np.asarray(y, float), np.asarray(loadings, float)
    d, r = np.asarray(offset, float), np.asarray(observation_var, float)
    if np.any(r <= 0):
        raise ValueError("observation_var must be positive")
    CtRi = C.T / r[None]
    J = CtRi @ C
    mu = np.linalg.solve(J, CtRi @ (y - d[None]).T).T
    return mu, J


def poisson_messages(counts, loadings, log_offset, mode) -> tuple[np.ndarray, np.ndarray]:
    """Laplace messages of Poisson counts ``x_tn ~ Poisson(exp(C_n z_t + d_tn))`` at the modes ``m_t``.

    Parameters
    ----------
    counts : array, shape (time, neuron)
    loadings : array, shape (neuron, latent)
    log_offset : array, shape (neuron,) or (time, neuron)
        ``d``: log expected count per bin at ``z = 0`` (include the bin size).
    mode : array, shape (time, latent)
        Where to expand (the posterior mode).

    Returns
    -------
    message_mean : numpy.ndarray, shape (time, latent)
    message_precision : numpy.ndarray, shape (time, latent, latent)

    Examples
    --------
    >>> import numpy as np
    >>> mu, J = poisson_messages(np.array([[3.0]]), np.array([[1.0]]), np.zeros(1), np.zeros((1, 1)))
    >>> round(float(mu[0, 0]), 6), float(J[0, 0, 0])  # Newton step from 0 towards log 3
    (2.0, 1.0)
    """
    x, C = np.asarray(counts, float), np.asarray(loadings, float)
    m = np.asarray(mode, float)
    lam = np.exp(m @ C.T + np.asarray(log_offset, float))
    J = np.einsum("nk,tn,nl->tkl", C, lam, C)
    g = (x - lam) @ C
    L = C.shape[1]
    jitter = 1e-9 * np.maximum(np.trace(J, axis1=1, axis2=2) / L, 1e-12)[:, None, None] * np.eye(L)
    mu = m + np.linalg.solve(J + jitter, g[..., None])[..., 0]
    return mu, J


def _gpfa(model, data, orthonormal: bool) -> LatentPosterior:
    post = model.transform(data, orthonormal=orthonormal)
    Tm = model.orthonormal_transform_ if orthonormal else np.eye(model.n_latents)
    counts = np.asarray(data.counts, float)
    if model.observation == "gaussian":
        p = model.params_
        y = np.sqrt(counts) if model.count_transform == "sqrt" else counts
        mu, J = gaussian_messages(y, p.loadings, p.offset, p.observation_var)
        J = np.broadcast_to(J, (len(mu),) + J.shape)
    else:
        mode = np.asarray(model.transform(data, orthonormal=False)["mean"])
        log_off = np.asarray(model.offset_, float) + np.log(data.bin_size)
        mu, J = poisson_messages(counts, model.loadings_, log_off, mode)
    # to the reported basis: z' = T z, so mu' = T mu and J' = T^-T J T^-1
    Ti = np.linalg.inv(Tm)
    mu = mu @ Tm.T
    J = np.einsum("ai,tij,jb->tab", Ti.T, J, Ti)
    return LatentPosterior(mean=np.asarray(post["mean"]), sd=np.asarray(post["sd"]), message_mean=mu,
                           message_precision=J, bin_size=float(data.bin_size), segment_ids=data.segment_ids,
                           time=data.bin_centers, latent=np.asarray(post["latent"]), source="GPFA")


def _plds(model, data) -> LatentPosterior:
    if model.link != "exp":
        raise NotImplementedError(f"messages of a PoissonLDS with link={model.link!r}: only link='exp' is supported")
    post = model.transform(data)
    mode = np.asarray(post["mean"])
    log_off = np.asarray(model.offset_, float) + np.log(data.bin_size)
    mu, J = poisson_messages(np.asarray(data.counts, float), model.loadings_, log_off, mode)
    return LatentPosterior(mean=mode, sd=np.asarray(post["sd"]), message_mean=mu, message_precision=J,
                           bin_size=float(data.bin_size), segment_ids=data.segment_ids, time=data.bin_centers,
                           latent=np.arange(model.n_latents), source="PoissonLDS")


def _ensembles(model, data) -> LatentPosterior:
    from ..density.ensembles import _as_counts

    if model.method != "mixture":
        raise ValueError(
            f"Ensembles(method={model.method!r}) activities are deterministic summaries of the counts with no "
            "likelihood to carry; use method='mixture' (a probabilistic model of the drives), or pass "
            "model.transform(data) to an encoding model as an observed signal")
    x, ids, centres, seg, bin_size = _as_counts(data)
    if not np.array_equal(ids, model.neuron_ids_):
        raise ValueError("data must have the neurons of the fit, in the same order")
    d, K = model.detail_, model.n_ensembles_
    if K == 0:
        raise ValueError("the fit found no ensembles: there are no latents to encode")
    x = np.asarray(x, float)
    mode = np.asarray(model.transform(data)).T  # (ensemble, time), MAP drive from the members
    prior_var = np.maximum(np.mean(d.factors**2, axis=1), 1e-8)
    labels = model.labels_
    T = x.shape[0]
    mu, J = np.zeros((T, K)), np.zeros((T, K, K))
    for k in range(K):
        m = labels == k
        if not m.any():
            J[:, k, k] = 0.0
            mu[:, k] = 0.0
            continue
        lam = np.exp(d.offset[m][None] + mode[k][:, None] * d.loadings[k, m][None])
        w = d.loadings[k, m]
        J[:, k, k] = (lam * w[None] ** 2).sum(axis=1)
        mu[:, k] = mode[k] + ((x[:, m] - lam) @ w) / np.maximum(J[:, k, k], 1e-12)
    sd = 1.0 / np.sqrt(np.diagonal(J, axis1=1, axis2=2) + 1.0 / prior_var[None])
    bin_size = 1.0 if bin_size is None else bin_size
    return LatentPosterior(mean=mode.T, sd=sd, message_mean=mu, message_precision=J, bin_size=bin_size,
                           segment_ids=seg, time=(np.arange(T) + 0.5) * bin_size if centres is None else centres,
                           latent=np.arange(K), source="Ensembles")


def _hmm(model, data) -> StatePosterior:
    from ..density.hmm import _as_data

    d = _as_data(data, model.bin_size_)
    le = model._terms(data)[2]
    p = model.params_
    seg = np.cumsum(np.asarray(d.starts)) - 1
    return StatePosterior(probs=model.posterior_states(data), log_emission=np.asarray(le),
                          transition_matrix=np.asarray(p.transition_matrix), initial_probs=np.asarray(p.initial_probs),
                          bin_size=float(d.bin_size), segment_ids=seg, time=np.asarray(d.coords["time"], float),
                          source="PoissonHMM")


def latent_posterior(model: Any, data: Any, *, orthonormal: bool = True) -> LatentPosterior | StatePosterior:
    """The latents of a fitted density model on a recording: posterior and per-bin messages.

    Parameters
    ----------
    model : GPFA, PoissonLDS, Ensembles or PoissonHMM
        Fitted. ``Ensembles`` must use ``method="mixture"`` (the other methods' activities have no
        likelihood). A PoissonLDS must use the exp link.
    data : SpikeData
        The recording (training or held-out bins), with the neurons of the fit.
    orthonormal : bool, default True
        GPFA: the orthonormalised latents (as :meth:`GPFA.transform` reports them).

    Returns
    -------
    LatentPosterior or StatePosterior
        A :class:`StatePosterior` for a PoissonHMM.

    Examples
    --------
    >>> import numpy as np
    >>> import bayesneuro as bn
    >>> from bayesneuro.joint import latent_posterior
    >>> sim = bn.GPFA(1).fit(bn.SpikeData.from_trials(np.random.default_rng(0).poisson(2.0, (4, 20, 5)),
    ...                                             bin_size=0.05), max_iter=20, progress=False)
    >>> post = latent_posterior(sim, bn.SpikeData.from_trials(np.random.default_rng(1).poisson(2.0, (2, 20, 5)),
    ...                                                     bin_size=0.05))
    >>> post.mean.shape, post.message_precision.shape, post.source
    ((40, 1), (40, 1, 1), 'GPFA')
    """
    from ..density.ensembles import Ensembles
    from ..density.hmm import PoissonHMM
    from ..latent.gpfa import GPFA
    from ..latent.plds import PoissonLDS

    if isinstance(model, (GPFA, PoissonLDS, Ensembles, PoissonHMM)):
        model._check_fitted()
    if isinstance(model, GPFA):
        return _gpfa(model, data, orthonormal)
    if isinstance(model, PoissonLDS):
        return _plds(model, data)
    if isinstance(model, Ensembles):
        return _ensembles(model, data)
    if isinstance(model, PoissonHMM):
        return _hmm(model, data)
    raise TypeError(f"latent_posterior takes a fitted GPFA, PoissonLDS, Ensembles or PoissonHMM, got {type(model).__name__}")
