"""Goodness of fit of encoding models: log-likelihoods, bits per spike, pseudo-R2 (pure NumPy/SciPy)."""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = [
    "bits_per_spike",
    "log_likelihood",
    "null_log_likelihood",
    "pointwise_log_likelihood",
    "pseudo_r2",
    "saturated_log_likelihood",
]


def pointwise_log_likelihood(counts, mu, observation: str = "poisson", concentration=None) -> np.ndarray:
    """Log-likelihood (nats) of each bin and neuron of ``counts`` ``(time, neuron)``, same shape.

    ``mu`` holds the expected counts (rate x bin size); ``concentration`` the negative-binomial
    shape per neuron.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.glm.scores import pointwise_log_likelihood
    >>> pointwise_log_likelihood(np.array([[0], [2]]), np.array([[1.0], [1.0]])).round(4).tolist()
    [[-1.0], [-1.6931]]
    """
    y = np.asarray(counts, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if observation == "poisson":
        ll = stats.poisson.logpmf(y, mu)
    elif observation == "bernoulli":
        ll = np.where(y > 0, np.log(-np.expm1(-mu)), -mu)
    elif observation == "negative-binomial":
        c = np.asarray(concentration, dtype=float)
        ll = stats.nbinom.logpmf(y, c, c / (c + mu))
    else:
        raise ValueError(f"unknown observation model {observation!r}")
    return ll


def log_likelihood(counts, mu, observation: str = "poisson", concentration=None) -> np.ndarray:
    """Log-likelihood per neuron of ``counts`` ``(time, neuron)`` with expected counts ``mu``.

    The sum over time of :func:`pointwise_log_likelihood`.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.glm.scores import log_likelihood
    >>> log_likelihood(np.array([[0], [2]]), np.array([[1.0], [1.0]])).round(4).tolist()
    [-2.6931]
    """
    return pointwise_log_likelihood(counts, mu, observation, concentration).sum(axis=0)


def null_log_likelihood(counts, observation: str = "poisson") -> np.ndarray:
    """Log-likelihood per neuron of the constant-rate model fitted to ``counts`` (its mean).

    Poisson for ``"poisson"`` and ``"negative-binomial"``, Bernoulli for ``"bernoulli"``.
    """
    y = np.asarray(counts, dtype=float)
    mean = y.mean(axis=0, keepdims=True)
    if observation == "bernoulli":
        p = mean
        return special.xlogy(y, p).sum(0) + special.xlog1py(1 - y, -p).sum(0)
    return stats.poisson.logpmf(y, np.broadcast_to(mean, y.shape)).sum(axis=0)


def saturated_log_likelihood(counts, observation: str = "poisson") -> np.ndarray:
    """Log-likelihood per neuron of the saturated model (one free rate per bin)."""
    y = np.asarray(counts, dtype=float)
    if observation == "bernoulli":
        return np.zeros(y.shape[1])
    return stats.poisson.logpmf(y, y).sum(axis=0)


def bits_per_spike(ll, null_ll, n_spikes, *, per_neuron: bool = False):
    """``(ll - null_ll) / (n_spikes ln 2)``: information gain per spike, per neuron or in total."""
    ll, null_ll, n_spikes = (np.asarray(a, dtype=float) for a in (ll, null_ll, n_spikes))
    if per_neuron:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n_spikes > 0, (ll - null_ll) / (n_spikes * np.log(2)), np.nan)
    if n_spikes.sum() == 0:
        raise ValueError("the data have no spikes; bits per spike is undefined")
    return float((ll - null_ll).sum() / (n_spikes.sum() * np.log(2)))


def pseudo_r2(ll, null_ll, sat_ll, *, per_neuron: bool = False):
    """Deviance explained ``1 - (sat - ll) / (sat - null)``, per neuron or pooled."""
    ll, null_ll, sat_ll = (np.asarray(a, dtype=float) for a in (ll, null_ll, sat_ll))
    if per_neuron:
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - (sat_ll - ll) / (sat_ll - null_ll)
    return float(1.0 - (sat_ll - ll).sum() / (sat_ll - null_ll).sum())
