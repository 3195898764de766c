r"""A probabilistic partition of neurons into ensembles: a mixture over neurons of shared drives.

Each ensemble ``k`` has a time course :math:`f_k(t)`; each neuron belongs to one ensemble
:math:`z_n` and fires as

.. math::

    x_{tn} \mid z_n = k \sim \mathrm{Poisson}\big(\exp(b_n + w_{kn} f_k(t))\big), \qquad
    z_n \sim \mathrm{Categorical}(\pi),

with :math:`f_k(t) \sim N(0, 1)`, :math:`w_{kn} \sim N(0, 1)`, :math:`b_n \sim N(\log \bar x_n, 2)`
and :math:`\pi \sim \mathrm{Dirichlet}(\alpha)`. The memberships are summed out, so each neuron's
whole train is one observation with a mixture likelihood
:math:`p(x_n) = \sum_k \pi_k \prod_t \mathrm{Poisson}(x_{tn} \mid \lambda_{tnk})` (one pointwise
log-likelihood per neuron), and the model is fitted through the shared inference layer
(:func:`bayesneuro.infer.fit`). ``n_ensembles=0`` is the independent population
(:math:`x_{tn} \sim \mathrm{Poisson}(e^{b_n})`): the "no ensembles" answer.

Given the fitted parameters, each neuron's posterior membership is Bayes' rule,
:math:`r_{nk} = \pi_k p(x_n \mid z_n = k) / \sum_j \pi_j p(x_n \mid z_n = j)`, and two neurons
belong together with probability :math:`\sum_k r_{ik} r_{jk}` (memberships are independent given
the parameters).

The number of ensembles is chosen on held-out time (:func:`cross_validate_ensembles`): the model
is fitted on the other blocks of bins; in a held-out block the ensembles' time courses are
estimated from one half of the neurons (each in its most probable ensemble) and the other half's
counts are scored under their mixture; the halves then swap (co-smoothing, as for GPFA).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import init_to_value
from scipy.special import gammaln, logsumexp

from ..estimator import numpy_generator

__all__ = [
    "EnsembleCV",
    "EnsembleMixtureFit",
    "cross_validate_ensembles",
    "ensemble_mixture_model",
    "fit_ensemble_mixture",
]

#: Prior SD of the log-rate offsets around each neuron's log mean count.
OFFSET_SCALE = 2.0


def ensemble_mixture_model(
    counts: Any = None,
    *,
    n_ensembles: int,
    n_time: int,
    n_neuron: int,
    offset_mean: Any,
    concentration: float = 1.0,
) -> None:
    """NumPyro model of the ensemble mixture (see the module docstring).

    Parameters
    ----------
    counts : array, shape (time, neuron), optional
        Observed counts; drawn from the model when None.
    n_ensembles : int
        ``K >= 0``; 0 is the independent population.
    n_time, n_neuron : int
    offset_mean : array, shape (neuron,)
        Prior mean of the log-rate offsets (log counts per bin).
    concentration : float
        Dirichlet concentration of the ensemble weights.

    Notes
    -----
    Sites: ``offset`` (neuron), ``factors`` (ensemble, time), ``loadings`` (ensemble, neuron),
    ``weights`` (ensemble; latent when ``K >= 2``), ``counts`` (observed, one value per neuron:
    its whole train).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from numpyro.infer import Predictive
    >>> draw = Predictive(ensemble_mixture_model, num_samples=1)(
    ...     jax.random.key(0), n_ensembles=2, n_time=50, n_neuron=4, offset_mean=np.zeros(4))
    >>> draw["counts"].shape, draw["factors"].shape
    ((1, 4, 50), (1, 2, 50))
    """
    K = int(n_ensembles)
    with numpyro.plate("neuron", n_neuron, dim=-1):
        offset = numpyro.sample("offset", dist.Normal(jnp.asarray(offset_mean), OFFSET_SCALE))
    obs = None if counts is None else jnp.asarray(counts).T  # (neuron, time): one train per neuron
    if K == 0:
        with numpyro.plate("neuron", n_neuron, dim=-1):
            rate = jnp.broadcast_to(jnp.exp(offset)[:, None], (n_neuron, n_time))
            numpyro.sample("counts", dist.Poisson(rate).to_event(1), obs=obs)
        return
    with numpyro.plate("ensemble", K, dim=-2):
        with numpyro.plate("time", n_time, dim=-1):
            f = numpyro.sample("factors", dist.Normal(0.0, 1.0))
        with numpyro.plate("neuron", n_neuron, dim=-1):
            w = numpyro.sample("loadings", dist.Normal(0.0, 1.0))
    if K == 1:
        logits = jnp.zeros(1)
    else:
        pi = numpyro.sample("weights", dist.Dirichlet(jnp.full(K, float(concentration))))
        logits = jnp.log(pi)
    eta = offset[:, None, None] + w.T[:, :, None] * f[None, :, :]  # (neuron, ensemble, time)
    comp = dist.Poisson(jnp.exp(eta)).to_event(1)
    with numpyro.plate("neuron", n_neuron, dim=-1):
        numpyro.sample("counts", dist.MixtureSameFamily(dist.Categorical(logits=logits), comp), obs=obs)


# -- numpy maths at given parameters ------------------------------------------------------------


def component_log_likelihood(counts: Any, offset: Any, loadings: Any, factors: Any) -> np.ndarray:
    """``log p(x_n | z_n = k)``, shape (neuron, ensemble), for counts (time, neuron)."""
    x = np.asarray(counts, dtype=np.float64)
    b, w, f = (np.asarray(a, dtype=np.float64) for a in (offset, loadings, factors))
    const = gammaln(x + 1.0).sum(axis=0)  # (neuron,)
    eta = b[None, :, None] + (w.T[None, :, :] * f.T[:, None, :])  # (time, neuron, ensemble)
    return np.einsum("tn,tnk->nk", x, eta) - np.exp(eta).sum(axis=0) - const[:, None]


def memberships(counts: Any, offset: Any, loadings: Any, factors: Any, weights: Any) -> np.ndarray:
    """Posterior membership probabilities ``r_nk`` (neuron, ensemble) given the parameters."""
    lp = np.log(np.asarray(weights, dtype=np.float64))[None] + component_log_likelihood(counts, offset, loadings, factors)
    return np.exp(lp - logsumexp(lp, axis=1, keepdims=True))


def _newton_poisson_1d(x: np.ndarray, g: np.ndarray, b0: float, n_iter: int = 50) -> tuple[float, float, float]:
    """MAP of ``(b, w)`` in ``x_t ~ Poisson(exp(b + w g_t))`` with priors ``N(b0, 2^2)``, ``N(0, 1)``;
    returns ``(b, w, log-likelihood at the MAP)`` (the log-likelihood without the priors)."""
    theta = np.array([b0, 0.0])
    prec = np.array([1.0 / OFFSET_SCALE**2, 1.0])
    centre = np.array([b0, 0.0])
    X = np.stack([np.ones_like(g), g], axis=1)
    for _ in range(n_iter):
        lam = np.exp(X @ theta)
        grad = X.T @ (x - lam) - prec * (theta - centre)
        H = (X * lam[:, None]).T @ X + np.diag(prec)
        step = np.linalg.solve(H, grad)
        theta = theta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    eta = X @ theta
    return float(theta[0]), float(theta[1]), float(np.sum(x * eta - np.exp(eta) - gammaln(x + 1.0)))


def cross_fitted_memberships(counts: Any, offset: Any, loadings: Any, factors: Any, weights: Any) -> np.ndarray:
    """Membership probabilities with each neuron left out of the drives it is scored against.

    Bayes' rule with the fitted drives is over-confident: a neuron's own spikes shaped the drive
    of its ensemble, so it fits that ensemble better than any other. Here, for each neuron and
    each ensemble, the drive is re-estimated without that neuron (from the ensemble's other
    most-probable members, :func:`_drive_given`), the neuron's offset and loading on it are
    fitted (two parameters, the same for every ensemble), and
    ``r_nk ∝ pi_k p(x_n | drive_k without n)``.

    Returns
    -------
    numpy.ndarray, shape (neuron, ensemble)
    """
    x = np.asarray(counts, dtype=np.float64)
    b, w, f, pi = (np.asarray(a, dtype=np.float64) for a in (offset, loadings, factors, weights))
    K, N = w.shape
    labels = memberships(x, b, w, f, pi).argmax(axis=1)
    spread = np.maximum(np.mean(f**2, axis=1), 1e-8)
    lp = np.empty((N, K))
    for n in range(N):
        for k in range(K):
            if labels[n] == k:
                others = labels == k
                others[n] = False
                if not others.any():  # a lone member: nothing else to predict it from
                    g = np.zeros(len(x))
                else:
                    g = _drive_given(x[:, others], b[others], w[:, others], np.full(others.sum(), k), K, spread)[k]
            else:
                g = f[k]
            g = g / np.sqrt(spread[k])
            lp[n, k] = np.log(pi[k]) + _newton_poisson_1d(x[:, n], g, np.log(x[:, n].mean()))[2]
    return np.exp(lp - logsumexp(lp, axis=1, keepdims=True))


class EnsembleMixtureFit(NamedTuple):
    """Output of :func:`fit_ensemble_mixture`.

    Attributes
    ----------
    n_ensembles : int
    offset : numpy.ndarray, shape (neuron,)
        Log counts per bin at zero drive.
    loadings : numpy.ndarray, shape (ensemble, neuron)
    factors : numpy.ndarray, shape (ensemble, time)
        Each ensemble's drive over the fitted bins.
    weights : numpy.ndarray, shape (ensemble,)
    membership : numpy.ndarray, shape (neuron, ensemble)
        Posterior membership probabilities, each neuron left out of the drives it is scored
        against (:func:`cross_fitted_memberships`).
    co_membership : numpy.ndarray, shape (neuron, neuron)
        Probability that two neurons share an ensemble (1 on the diagonal).
    log_joint : float
        Log joint density at the mode (the best restart's).
    result : bayesneuro.infer.FitResult
        The shared-layer fit (ArviZ conversion, diagnostics), with the ensembles in the
        optimiser's order (the fields above are ordered by lowest-numbered member).
    """

    n_ensembles: int
    offset: np.ndarray
    loadings: np.ndarray
    factors: np.ndarray
    weights: np.ndarray
    membership: np.ndarray
    co_membership: np.ndarray
    log_joint: float
    result: Any


def _check_counts(counts: Any) -> np.ndarray:
    from .._validation import _as_counts

    xf = _as_counts(counts).astype(np.float64)
    silent = np.flatnonzero(xf.sum(axis=0) == 0)
    if silent.size:
        raise ValueError(f"neuron column(s) {silent[:10].tolist()} have no spikes: drop them before fitting ensembles")
    if xf.shape[1] < 2:
        raise ValueError(f"ensembles need at least 2 neurons, got {xf.shape[1]}")
    return xf


def _spectral_start(x: np.ndarray, K: int, rng: np.random.Generator) -> dict:
    """A start: neurons grouped by k-means on the leading eigenvectors of the correlation of
    square-root counts; each group's drive the standardised mean of its members."""
    from .communities import _kmeans

    s = np.sqrt(x)
    z = (s - s.mean(0)) / np.maximum(s.std(0), 1e-12)
    C = z.T @ z / len(z)
    lam, V = np.linalg.eigh(C)
    X = V[:, ::-1][:, :K] * np.sqrt(np.maximum(lam[::-1][:K], 0.0))
    labels = _kmeans(X, K, rng) if K > 1 else np.zeros(x.shape[1], int)
    f = np.zeros((K, len(x)))
    w = np.zeros((K, x.shape[1]))
    for k in range(K):
        members = labels == k
        if members.any():
            g = z[:, members].mean(axis=1)
            f[k] = (g - g.mean()) / max(g.std(), 1e-12)
            w[k] = 0.3 * (z.T @ f[k]) / len(z)
    b = np.log(x.mean(axis=0))
    start = {"offset": b, "factors": f, "loadings": w}
    if K > 1:
        pi = np.bincount(labels, minlength=K) + 1.0
        start["weights"] = pi / pi.sum()
    return start


def _canonical_order(x: np.ndarray, p: dict, K: int) -> np.ndarray:
    """Ensembles ordered by their lowest-numbered member (empty ones last): labels that do not
    depend on the start."""
    if K <= 1:
        return np.arange(K)
    pi = np.asarray(p["weights"])
    labels = memberships(x, p["offset"], p["loadings"], p["factors"], pi).argmax(axis=1)
    first = [np.flatnonzero(labels == k)[0] if np.any(labels == k) else x.shape[1] + k for k in range(K)]
    return np.argsort(first, kind="stable")


def fit_ensemble_mixture(
    counts: Any,
    n_ensembles: int,
    *,
    key: Any,
    n_restarts: int = 3,
    concentration: float = 1.0,
    progress: bool | None = False,
    **options,
) -> EnsembleMixtureFit:
    """MAP fit of :func:`ensemble_mixture_model` (best of several starts) and the memberships.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
        Non-negative integer counts.
    n_ensembles : int
        ``K >= 0``.
    key : jax.random key or int
        The starts' k-means; the same key gives the same fit.
    n_restarts : int, default 3
        Starts (the first from the spectral grouping, the others from random k-means seeds);
        the highest log joint density wins.
    concentration : float, default 1.0
        Dirichlet concentration of the weights.
    progress : bool, optional
    **options
        MAP options of :func:`bayesneuro.infer.fit` (``max_iter``, ``tol``).

    Returns
    -------
    EnsembleMixtureFit

    Raises
    ------
    ValueError
        Bad counts (negative, non-integer, NaN, a silent neuron), ``n_ensembles`` negative or
        larger than the number of neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.ensemble_mixture import fit_ensemble_mixture
    >>> rng = np.random.default_rng(0)
    >>> drive = rng.normal(size=(2, 2000))
    >>> eta = np.log(0.5) + 0.8 * np.repeat(drive, 4, axis=0).T  # two ensembles of 4 neurons
    >>> fit = fit_ensemble_mixture(rng.poisson(np.exp(eta)), 2, key=0)
    >>> fit.membership.argmax(1).tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    """
    from ..infer import fit as infer_fit

    x = _check_counts(counts)
    T, N = x.shape
    K = int(n_ensembles)
    if isinstance(n_ensembles, bool) or K != n_ensembles or K < 0 or K > N:
        raise ValueError(f"n_ensembles must be an integer between 0 and the number of neurons ({N}), got {n_ensembles!r}")
    rng = numpy_generator(key, why="fit_ensemble_mixture (its starts)")
    kw = {"n_ensembles": K, "n_time": T, "n_neuron": N, "offset_mean": np.log(x.mean(axis=0)),
          "concentration": float(concentration)}
    best = None
    for r in range(1 if K <= 1 else max(1, int(n_restarts))):
        start = _spectral_start(x, K, rng) if K > 0 else {"offset": np.log(x.mean(axis=0))}
        with warnings.catch_warnings():
            res = infer_fit(ensemble_mixture_model, method="map", key=int(rng.integers(2**31 - 1)),
                            progress=progress, init_strategy=init_to_value(values=start),
                            model_kwargs={"counts": x, **kw}, **options)
        obj = -float(res.info["objective"])
        if best is None or obj > best[0]:
            best = (obj, res)
    obj, res = best
    p = res.params
    order = _canonical_order(x, p, K)
    b = np.asarray(p["offset"])
    if K == 0:
        f, w, pi, r = np.zeros((0, T)), np.zeros((0, N)), np.zeros(0), np.zeros((N, 0))
        co = np.zeros((N, N))
    else:
        f, w = np.asarray(p["factors"])[order], np.asarray(p["loadings"])[order]
        pi = np.asarray(p["weights"])[order] if K > 1 else np.ones(1)
        r = cross_fitted_memberships(x, b, w, f, pi) if K > 1 else np.ones((N, 1))
        co = r @ r.T
    np.fill_diagonal(co, 1.0)
    return EnsembleMixtureFit(K, b, w, f, pi, r, co, obj, res)


# -- choosing the number of ensembles on held-out time ----------------------------------------------


def _drive_given(x: np.ndarray, offset: np.ndarray, loadings: np.ndarray, labels: np.ndarray, K: int,
                 prior_var: np.ndarray, n_iter: int = 30) -> np.ndarray:
    """MAP drive ``f_k(t)`` of each ensemble in each bin from its (observed) members: a concave
    one-dimensional problem per (ensemble, bin), solved by Newton's method, under the prior
    ``N(0, prior_var_k)``: the spread of the fitted drives. (At the joint mode the scale of the
    drives trades against that of the loadings, ``sum_t f_k^2 = sum_n w_kn^2``, so the fitted
    spread, not the model's unit prior, describes a new bin's drive.)"""
    T = x.shape[0]
    f = np.zeros((K, T))
    for k in range(K):
        m = labels == k
        if not m.any():
            continue
        xs, b, w = x[:, m], offset[m], loadings[k, m]
        fk = np.zeros(T)
        for _ in range(n_iter):
            lam = np.exp(b[None] + fk[:, None] * w[None])
            g = (xs - lam) @ w - fk / prior_var[k]
            h = (lam * w[None] ** 2).sum(axis=1) + 1.0 / prior_var[k]
            step = g / h
            fk = fk + step
            if np.max(np.abs(step)) < 1e-10:
                break
        f[k] = fk
    return f


class EnsembleCV(NamedTuple):
    """Output of :func:`cross_validate_ensembles`.

    Attributes
    ----------
    candidates : numpy.ndarray of int
        Numbers of ensembles tried (0: independent neurons).
    score : numpy.ndarray, shape (candidate,)
        Held-out log-likelihood gain over independent neurons, bits per spike (0 for ``K = 0``).
    se : numpy.ndarray, shape (candidate,)
        Standard error of each score's difference from the best one's, from the held-out bins.
    best : int
        The chosen number of ensembles (highest score).
    per_bin : numpy.ndarray, shape (candidate, time)
        Held-out log-likelihood (nats) of each bin, all neurons, each candidate.
    """

    candidates: np.ndarray
    score: np.ndarray
    se: np.ndarray
    best: int
    per_bin: np.ndarray


def cross_validate_ensembles(
    counts: Any,
    candidates: Any = (0, 1, 2, 3, 4),
    *,
    key: Any,
    n_folds: int = 4,
    n_restarts: int = 3,
    **options,
) -> EnsembleCV:
    """Choose the number of ensembles by co-smoothing on held-out blocks of bins.

    Parameters
    ----------
    counts : array_like, shape (time, neuron)
    candidates : sequence of int, default (0, 1, 2, 3, 4)
        Numbers of ensembles to compare (0: independent neurons).
    key : jax.random key or int
        Fits' starts and the split of neurons into halves.
    n_folds : int, default 4
        Contiguous blocks of bins; each is held out once.
    n_restarts : int
    **options
        MAP options of :func:`bayesneuro.infer.fit`.

    Returns
    -------
    EnsembleCV

    Warns
    -----
    UserWarning
        When the best number is the largest candidate (try more).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesneuro.density.ensemble_mixture import cross_validate_ensembles
    >>> rng = np.random.default_rng(1)
    >>> drive = rng.normal(size=(2, 2000))
    >>> x = rng.poisson(np.exp(np.log(0.5) + 0.8 * np.repeat(drive, 4, axis=0).T))
    >>> cross_validate_ensembles(x, (0, 1, 2, 3), key=0).best
    2
    """
    from .._validation import _warn_if_on_edge

    x = _check_counts(counts)
    T, N = x.shape
    cands = np.asarray(sorted({int(c) for c in candidates}))
    if cands.size == 0 or cands.min() < 0 or cands.max() > N // 2:
        raise ValueError(f"candidates must be integers between 0 and half the neurons ({N // 2}), got {candidates!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if T < 10 * n_folds:
        raise ValueError(f"the recording is too short: {T} bins for {n_folds} folds (at least 10 bins per fold)")
    rng = numpy_generator(key, why="cross_validate_ensembles (starts and neuron halves)")
    half = np.zeros(N, bool)
    half[rng.permutation(N)[: N // 2]] = True
    per_bin = np.zeros((cands.size, T))
    for fold in np.array_split(np.arange(T), n_folds):
        train = np.setdiff1d(np.arange(T), fold)
        xt, xh = x[train], x[fold]
        if np.any(xt.sum(axis=0) == 0):
            raise ValueError("a neuron is silent in the training bins of a fold: use fewer folds or drop it")
        for i, K in enumerate(cands):
            fit = fit_ensemble_mixture(xt, int(K), key=int(rng.integers(2**31 - 1)), n_restarts=n_restarts, **options)
            const = gammaln(xh + 1.0)
            if K == 0:
                lam = np.exp(fit.offset)[None]
                per_bin[i, fold] = (xh * np.log(lam) - lam - const).sum(axis=1)
                continue
            labels = fit.membership.argmax(axis=1)
            for observed in (half, ~half):
                scored = ~observed
                spread = np.maximum(np.mean(fit.factors**2, axis=1), 1e-8)
                f = _drive_given(xh[:, observed], fit.offset[observed], fit.loadings[:, observed], labels[observed],
                                 int(K), spread)
                eta = fit.offset[None, scored, None] + fit.loadings.T[None, scored, :] * f.T[:, None, :]  # (t, n, k)
                ll = xh[:, scored, None] * eta - np.exp(eta) - const[:, scored, None]
                # each scored neuron's mixture over ensembles, weighted by its training membership
                mix = logsumexp(np.log(np.maximum(fit.membership[scored], 1e-300))[None] + ll, axis=2)
                per_bin[i, fold] += mix.sum(axis=1)
    n_spikes = x.sum()
    base = per_bin[cands == 0][0] if np.any(cands == 0) else None
    gain = per_bin - (base if base is not None else per_bin.min(axis=0))
    score = gain.sum(axis=1) / n_spikes / np.log(2.0)
    best_i = int(np.argmax(score))
    diff = gain[best_i] - gain
    se = np.sqrt(T * diff.var(axis=1, ddof=1)) / n_spikes / np.log(2.0)
    _warn_if_on_edge(int(cands[best_i]), cands, what="number of ensembles", floor=0,
                     how="Pass more candidates to cross_validate_ensembles", stacklevel=2)
    return EnsembleCV(cands, score, se, int(cands[best_i]), per_bin)
