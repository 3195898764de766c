r"""Monte Carlo for population maximum-entropy models: Gibbs sampling, Boltzmann learning, AIS.

Every function works on the *full* parameters of

.. math::
    \log P^*(x) = h^\top x + \tfrac12 x^\top J x + V\!\left(\textstyle\sum_i x_i\right),

given as plain arrays ``h`` (neuron,), a symmetric ``J`` (neuron, neuron) with a zero diagonal
and ``V`` (N + 1,) indexed by the population count :math:`K`. Which of them are free is the
caller's business (:mod:`bayesneuro.density.maxent` packs and unpacks them).

- :func:`gibbs_sweep`: one systematic-scan Gibbs sweep over the neurons, for many chains at once.
- :func:`boltzmann_learning`: persistent-chain (PCD) gradient ascent on the log posterior,
  whose gradient is the moment mismatch :math:`\bar s_{\rm data} - E_\theta[s]` minus the
  prior term, with optax Adam and Polyak averaging of the iterates.
- :func:`ais_log_partition`: annealed importance sampling of :math:`\log Z` from an independent
  model, with its standard error.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bayesneuro._jit import jit

__all__ = ["gibbs_sweep", "gibbs_samples", "LearningState", "boltzmann_learning", "AISResult",
           "ais_log_partition", "energy"]


def energy(x: jax.Array, h: jax.Array, J: jax.Array, V: jax.Array) -> jax.Array:
    r"""Unnormalised log-probability :math:`h^\top x + \frac12 x^\top J x + V(K)` of each word."""
    k = jnp.sum(x, axis=-1).astype(jnp.int32)
    return x @ h + 0.5 * jnp.sum((x @ J) * x, axis=-1) + V[k]


@jit
def gibbs_sweep(key: jax.Array, x: jax.Array, h: jax.Array, J: jax.Array, V: jax.Array) -> jax.Array:
    """One systematic-scan Gibbs sweep (neurons in order) over every chain.

    Parameters
    ----------
    key : jax.Array
        Raw PRNG key.
    x : array, shape (chain, neuron)
        Current binary states (floats 0/1).
    h, J, V : arrays
        Full parameters (``J`` symmetric with a zero diagonal).

    Returns
    -------
    array, shape (chain, neuron)
        The states after updating each neuron once from its exact conditional.
    """
    n = x.shape[1]
    u = jax.random.uniform(key, (n, x.shape[0]), dtype=x.dtype)

    def body(i, x):
        k_rest = (jnp.sum(x, axis=1) - x[:, i]).astype(jnp.int32)
        field = h[i] + x @ J[:, i] + V[k_rest + 1] - V[k_rest]
        return x.at[:, i].set((u[i] < jax.nn.sigmoid(field)).astype(x.dtype))

    return jax.lax.fori_loop(0, n, body, x)


def gibbs_samples(key: jax.Array, x0: jax.Array, h, J, V, *, n_burn: int, n_keep: int,
                  thin: int = 1) -> tuple[jax.Array, jax.Array]:
    """Run the chains ``n_burn`` sweeps, then keep every ``thin``-th state ``n_keep`` times.

    Returns ``(samples (n_keep, chain, neuron), final state (chain, neuron))``.
    """
    return _gibbs_samples(key, x0, h, J, V, int(n_burn), int(n_keep), int(thin))


@jit(static_argnums=(5, 6, 7))
def _gibbs_samples(key, x0, h, J, V, n_burn, n_keep, thin):
    k_burn, k_keep = jax.random.split(key)

    def sweep(x, k):
        return gibbs_sweep(k, x, h, J, V), None

    x, _ = jax.lax.scan(sweep, x0, jax.random.split(k_burn, max(n_burn, 1))[:n_burn])

    def keep(x, k):
        x, _ = jax.lax.scan(sweep, x, jax.random.split(k, thin))
        return x, x

    x, out = jax.lax.scan(keep, x, jax.random.split(k_keep, n_keep))
    return out, x


class LearningState(NamedTuple):
    """State of persistent-chain Boltzmann learning.

    Attributes
    ----------
    theta : array, shape (param,)
        Current free parameters.
    opt_state : optax state
        Adam's moments.
    chains : array, shape (chain, neuron)
        Persistent Gibbs chains.
    average : array, shape (param,)
        Polyak average of ``theta`` over the averaging phase (zeros before it).
    n_averaged : array, scalar
        Number of iterates in ``average``.
    step : array, scalar int
        Iterations done.
    """

    theta: jax.Array
    opt_state: Any
    chains: jax.Array
    average: jax.Array
    n_averaged: jax.Array
    step: jax.Array


def boltzmann_learning(
    key: jax.Array,
    theta0: jax.Array,
    chains0: jax.Array,
    target: jax.Array,
    prior_precision: jax.Array,
    *,
    unpack: Callable,
    statistics: Callable,
    max_iter: int,
    learning_rate: float,
    n_sweeps: int = 1,
    average_from: float = 0.5,
    progress: bool = True,
) -> tuple[jax.Array, LearningState]:
    r"""Maximise :math:`\bar s^\top\theta - \log Z(\theta) - \tfrac12\theta^\top\Lambda\theta`
    by stochastic gradient ascent with persistent Gibbs chains.

    The per-bin gradient of the log posterior is
    :math:`\bar s - E_\theta[s] - \Lambda\theta` (with :math:`\Lambda` the prior precision
    divided by the number of bins); :math:`E_\theta[s]` is the mean of the sufficient statistics
    over the chains after ``n_sweeps`` Gibbs sweeps at the current parameters. Adam (optax) with
    a cosine-decayed learning rate takes the steps; the returned estimate is the Polyak average
    of the iterates after the fraction ``average_from`` of the iterations.

    Parameters
    ----------
    key : jax.Array
        Raw PRNG key.
    theta0 : array, shape (param,)
        Starting free parameters.
    chains0 : array, shape (chain, neuron)
        Starting chain states.
    target : array, shape (param,)
        Mean sufficient statistics of the data, :math:`\bar s`.
    prior_precision : array, shape (param,)
        Diagonal prior precision per bin, :math:`1/(T\sigma^2)`.
    unpack : callable
        ``theta -> (h, J, V)`` full parameters (a stable function object: it is a static arg).
    statistics : callable
        ``x (chain, neuron) -> (chain, param)`` free sufficient statistics.
    max_iter, learning_rate, n_sweeps, average_from
        Iterations (all of them run: stochastic gradient steps have no convergence test), Adam's initial step, sweeps per iteration, averaging start (fraction).
    progress : bool
        tqdm bar over chunks of iterations.

    Returns
    -------
    theta : array, shape (param,)
        The Polyak-averaged estimate.
    state : LearningState
        The final state (its chains are near equilibrium at the final iterate).
    """
    from .._progress import progress_bar

    max_iter = int(max_iter)
    start_avg = int(average_from * max_iter)
    opt, run = _learning_chunk(unpack, statistics, int(n_sweeps), start_avg, float(learning_rate), max_iter)
    state = LearningState(theta0, opt.init(theta0), chains0, jnp.zeros_like(theta0),
                          jnp.zeros((), theta0.dtype), jnp.zeros((), jnp.int32))
    chunk = max(1, min(200, max_iter))
    done = 0
    with progress_bar(total=max_iter, desc="Boltzmann learning", disable=not progress) as bar:
        while done < max_iter:
            m = min(chunk, max_iter - done)
            key, k = jax.random.split(key)
            state = run(state, jax.random.split(k, m), target, prior_precision)
            done += m
            bar.update(m)
    theta = jnp.where(state.n_averaged > 0, state.average, state.theta)
    return theta, state


@functools.lru_cache(maxsize=16)
def _learning_chunk(unpack, statistics, n_sweeps, start_avg, learning_rate, n_iter):
    """The optimiser and the jitted chunk of learning steps (cached: refits compile once)."""
    import optax

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, n_iter, alpha=0.02))

    @jit
    def run(state, keys, target, prior_precision):
        def step(s, k):
            h, J, V = unpack(s.theta)
            chains = s.chains
            for kk in jax.random.split(k, n_sweeps):
                chains = gibbs_sweep(kk, chains, h, J, V)
            model = jnp.mean(statistics(chains), axis=0)
            grad = model - target + prior_precision * s.theta  # of the negative log posterior / T
            updates, opt_state = opt.update(grad, s.opt_state, s.theta)
            theta = s.theta + updates
            averaging = s.step >= start_avg
            n_avg = s.n_averaged + averaging
            avg = jnp.where(averaging, s.average + (theta - s.average) / jnp.maximum(n_avg, 1), s.average)
            return LearningState(theta, opt_state, chains, avg, n_avg, s.step + 1), None

        return jax.lax.scan(step, state, keys)[0]

    return opt, run


class AISResult(NamedTuple):
    """Annealed importance sampling estimate of a log partition function.

    Attributes
    ----------
    log_partition : float
        :math:`\\log \\hat Z = \\log Z_0 + \\log \\overline{w}` (nats).
    se : float
        Its standard error by the delta method, :math:`\\mathrm{sd}(w)/(\\bar w\\sqrt{n})`.
    log_weights : array, shape (chain,)
        Log importance weight of each annealing run.
    """

    log_partition: float
    se: float
    log_weights: np.ndarray


def ais_log_partition(key: jax.Array, h, J, V, *, h0, n_chains: int = 500,
                      n_temperatures: int = 1000) -> AISResult:
    r"""Estimate :math:`\log Z` by annealing from the independent model with fields ``h0``.

    The path :math:`\log f_\beta(x) = (1-\beta)\,h_0^\top x + \beta\,E(x)` runs over
    ``n_temperatures`` equally spaced :math:`\beta` from 0 to 1; each intermediate model is of
    the same family (fields :math:`(1-\beta)h_0 + \beta h`, couplings :math:`\beta J`, potential
    :math:`\beta V`), so one Gibbs sweep is its transition. The log weight of a run is
    :math:`\sum_k (\beta_k - \beta_{k-1})\,[E(x_{k-1}) - h_0^\top x_{k-1}]`, and
    :math:`\log Z_0 = \sum_i \log(1 + e^{h_{0i}})` is exact. The estimate of :math:`Z` is
    unbiased; that of :math:`\log Z` is biased low by about half its squared relative error.
    """
    lw = _ais(key, jnp.asarray(h), jnp.asarray(J), jnp.asarray(V), jnp.asarray(h0), int(n_chains),
              int(n_temperatures))
    lw = np.asarray(lw, dtype=np.float64)
    log_z0 = float(np.sum(np.logaddexp(0.0, np.asarray(h0, dtype=np.float64))))
    n = lw.size
    log_mean = float(logsumexp(lw) - np.log(n))
    w = np.exp(lw - lw.max())
    se = float(np.std(w, ddof=1) / (np.mean(w) * np.sqrt(n))) if n > 1 else float("inf")
    return AISResult(log_z0 + log_mean, se, lw)


@jit(static_argnums=(5, 6))
def _ais(key, h, J, V, h0, n_chains, n_temperatures):
    k0, k_run = jax.random.split(key)
    n = h.shape[0]
    x = (jax.random.uniform(k0, (n_chains, n), dtype=h.dtype) < jax.nn.sigmoid(h0)).astype(h.dtype)
    betas = jnp.linspace(0.0, 1.0, n_temperatures + 1, dtype=h.dtype)

    def step(carry, inp):
        x, lw = carry
        b_prev, b, k = inp
        lw = lw + (b - b_prev) * (energy(x, h, J, V) - x @ h0)
        x = gibbs_sweep(k, x, (1 - b) * h0 + b * h, b * J, b * V)
        return (x, lw), None

    keys = jax.random.split(k_run, n_temperatures)
    (x, lw), _ = jax.lax.scan(step, (x, jnp.zeros(n_chains, h.dtype)), (betas[:-1], betas[1:], keys))
    return lw
