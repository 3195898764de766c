"""Closed-loop simulation of a fitted GLM: spike history and coupling feed back bin by bin.

Pure JAX: :func:`simulate_counts` runs a :func:`jax.lax.scan` over time bins with a buffer of
the most recent spike counts. A GLM whose feedback is too strong (e.g. positive self-history)
can run away: rates explode. The simulation caps each rate at ``max_rate`` and reports the
first bin at which each neuron hit the cap, so an unstable model is detected, not hidden
behind ``inf`` or NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._model import _bernoulli_logits, inverse_link

__all__ = ["simulate_counts", "feedback_kernel"]


def feedback_kernel(history=None, coupling=None, self_index=None, n_neuron=None) -> np.ndarray:
    """One kernel ``K[lag, source, neuron]`` from history ``(lag, neuron)`` and coupling filters.

    ``coupling`` is ``(lag, source, neuron)`` with zeros where a neuron meets itself; the
    history filter of neuron ``n`` goes on ``K[:, self_index[n], n]``. Lag 0 of the kernel is one
    bin back. Either may be None.
    """
    parts = [a for a in (history, coupling) if a is not None]
    if not parts:
        raise ValueError("the model has neither spike-history nor coupling filters")
    n_lag = max(a.shape[0] for a in parts)
    n_neuron = n_neuron if n_neuron is not None else parts[0].shape[-1]
    n_source = coupling.shape[1] if coupling is not None else n_neuron
    kernel = np.zeros((n_lag, n_source, n_neuron))
    if coupling is not None:
        kernel[: coupling.shape[0]] += coupling
    if history is not None:
        idx = np.arange(n_neuron) if self_index is None else np.asarray(self_index)
        kernel[: history.shape[0], idx, np.arange(n_neuron)] += history
    return kernel


def simulate_counts(
    key,
    drive,
    kernel,
    *,
    bin_size: float,
    link: str = "exp",
    observation: str = "poisson",
    concentration=None,
    segment_ids=None,
    max_rate: float = 1000.0,
    runaway_bins: int = 10,
):
    """Draw spike counts from a GLM with its feedback running.

    Parameters
    ----------
    key : jax.random key
        Random key.
    drive : array, shape (time, neuron)
        Bias plus stimulus terms of the linear predictor (log spikes/s for the exp link).
    kernel : array, shape (lag, neuron, neuron) or None
        Feedback kernel from :func:`feedback_kernel` (sources = simulated neurons).
    bin_size : float
        Bin size in seconds.
    link, observation : str
        As in :class:`~bayesneuro.glm.PoissonGLM`.
    concentration : array, shape (neuron,), optional
        Negative-binomial concentration.
    segment_ids : array of int, shape (time,), optional
        Trial label per bin; the spike history is cleared where it changes.
    max_rate : float
        Cap on the rate in spikes/s.
    runaway_bins : int
        A neuron has run away when its rate stays at the cap for this many consecutive bins.
        A brief, stimulus-driven peak that touches the cap is counted in ``n_capped`` but is
        not a runaway; unstable feedback holds the rate at the cap.

    Returns
    -------
    counts : jax.Array, shape (time, neuron)
    rates : jax.Array, shape (time, neuron)
        Conditional intensity in spikes/s (capped).
    first_runaway : jax.Array of int, shape (neuron,)
        Bin at which each neuron's rate had been at ``max_rate`` for ``runaway_bins``
        consecutive bins; -1 if never.
    n_capped : jax.Array of int, shape (neuron,)
        Number of bins at the cap.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from bayesneuro.glm.simulate import simulate_counts
    >>> drive = np.full((1000, 1), np.log(20.0))  # 20 spikes/s
    >>> kernel = np.full((5, 1, 1), 2.0)  # strong self-excitation: runs away
    >>> counts, rates, first, n_capped = simulate_counts(jax.random.key(0), drive, kernel, bin_size=0.001)
    >>> bool(first[0] >= 0)
    True
    """
    drive = jnp.asarray(drive)
    n_time, n_neuron = drive.shape
    if kernel is None:
        kernel = jnp.zeros((1, n_neuron, n_neuron), drive.dtype)
    kernel = jnp.asarray(kernel, drive.dtype)
    n_lag = kernel.shape[0]
    if segment_ids is None:
        reset = jnp.zeros(n_time, bool)
    else:
        seg = jnp.asarray(segment_ids)
        reset = jnp.concatenate([jnp.zeros(1, bool), seg[1:] != seg[:-1]])
    conc = jnp.ones(n_neuron, drive.dtype) if concentration is None else jnp.asarray(concentration, drive.dtype)
    keys = jax.random.split(key, n_time)

    def step(carry, inputs):
        buffer, streak = carry
        d, r, k = inputs
        buffer = jnp.where(r, jnp.zeros_like(buffer), buffer)
        eta = d + jnp.einsum("lm,lmn->n", buffer, kernel)
        rate = inverse_link(eta, link)
        hit = ~(rate < max_rate)  # also catches inf and NaN
        rate = jnp.where(hit, max_rate, rate)
        mu = rate * bin_size
        if observation == "poisson":
            y = jax.random.poisson(k, mu).astype(drive.dtype)
        elif observation == "bernoulli":
            y = jax.random.bernoulli(k, jax.nn.sigmoid(_bernoulli_logits(mu))).astype(drive.dtype)
        else:  # negative binomial as a gamma-Poisson mixture
            k1, k2 = jax.random.split(k)
            lam = jax.random.gamma(k1, conc) * mu / conc
            y = jax.random.poisson(k2, lam).astype(drive.dtype)
        buffer = jnp.concatenate([y[None], buffer[:-1]], axis=0)
        streak = jnp.where(hit, streak + 1, 0)
        return (buffer, streak), (y, rate, hit, streak >= runaway_bins)

    init = (jnp.zeros((n_lag, n_neuron), drive.dtype), jnp.zeros(n_neuron, jnp.int32))
    _, (counts, rates, hits, held) = jax.lax.scan(step, init, (drive, reset, keys))
    first = jnp.where(held.any(axis=0), jnp.argmax(held, axis=0), -1)
    return counts, rates, first, hits.sum(axis=0)
