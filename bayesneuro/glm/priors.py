"""Priors on GLM filter weights: ridge, smoothness, and sparsity on groups (coupling).

Each prior draws one block of basis weights, shaped ``(group, basis, neuron)``: ``group`` is
``feature`` for a stimulus filter, ``source`` for coupling filters, and a single group for a
neuron's own spike history. A *filter* is one ``(basis,)`` column of the block, e.g. the
coupling filter from neuron ``source`` onto neuron ``neuron``; sparsity priors switch whole
filters on or off together.

All priors are frozen dataclasses (hashable), so a GLM built with them compiles once per data
layout. The log-densities they add are, up to constants, the penalties of penalised regression:

================  ====================================================  ==========================
prior             log-density of a filter ``w`` (one group, one neuron)  MAP equivalent
================  ====================================================  ==========================
``Flat()``        ``0``                                                  maximum likelihood
``Ridge(s)``      ``-||w||^2 / (2 s^2)``                                 ridge, ``alpha = 1 / s^2``
``Smooth(s, r)``  ``-w' K^{-1} w / 2``, ``K_ij = s^2 r^|i-j|``           ridge on AR(1) innovations
``ARD(s)``        ``w ~ N(0, tau^2)``, ``tau ~ HalfCauchy(s)`` per filter  (sampling only)
``Horseshoe(s)``  ``w ~ N(0, (tau lambda)^2)``, shared ``tau``              (sampling only)
``GroupLasso(l)``  ``-l ||B w||_2`` (``B w``: the filter over lags)         group lasso (coupling)
================  ====================================================  ==========================

``ARD`` and ``Horseshoe`` have scale hyper-parameters whose joint mode is degenerate (all
scales to zero), so they are for ``method="nuts"`` or ``"svi"``; MAP and Laplace refuse them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

__all__ = ["ARD", "RIDGE_CANDIDATES", "Flat", "GroupLasso", "Horseshoe", "Prior", "Ridge", "Smooth",
           "select_ridge_scale"]


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from err
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _plates(group_dim: str | None, shape: tuple[int, ...], basis_dim: str):
    """Plates ``(group, basis, neuron)``; without a group dim the block is ``(basis, neuron)``."""
    *_, n_basis, n_neuron = shape
    group = contextlib.nullcontext() if group_dim is None else numpyro.plate(group_dim, shape[0], dim=-3)
    return (
        group,
        numpyro.plate(basis_dim, n_basis, dim=-2),
        numpyro.plate("neuron", n_neuron, dim=-1),
    )


class Prior:
    """Base class of weight priors (see the module docstring)."""

    #: whether the prior's mode is a meaningful point estimate (MAP / Laplace)
    supports_map: bool = True
    #: whether the posterior is smooth at its mode (a Laplace approximation makes sense)
    supports_laplace: bool = True

    def sample(self, name: str, group_dim: str | None, shape: tuple[int, ...], basis_dim: str = "basis"):
        """Draw the weights of site ``name``, shape ``(group, basis, neuron)``.

        With ``group_dim=None`` the shape is ``(basis, neuron)`` (a neuron's own history).
        ``basis_dim`` names the basis plate (blocks on different bases need different names).
        """
        raise NotImplementedError

    def init_values(self, name: str, shape: tuple[int, ...]) -> dict:
        """Initial values (all filters zero) for the optimiser and samplers."""
        return {name: np.zeros(shape)}


@dataclass(frozen=True)
class Ridge(Prior):
    """Independent ``Normal(0, scale)`` weights: ridge (L2) regression at the MAP.

    Parameters
    ----------
    scale : float, default 1.0
        Prior standard deviation of each basis weight.

    Examples
    --------
    >>> from bayesneuro.glm import Ridge
    >>> Ridge.from_penalty(4.0)
    Ridge(scale=0.5)
    """

    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "scale", _positive("Ridge scale", self.scale))

    @classmethod
    def from_penalty(cls, alpha: float) -> Ridge:
        """The prior whose MAP adds ``alpha / 2 * ||w||^2`` to the negative log-likelihood."""
        return cls(scale=1.0 / math.sqrt(_positive("ridge penalty alpha", alpha)))

    def sample(self, name, group_dim, shape, basis_dim="basis"):
        g, b, n = _plates(group_dim, shape, basis_dim)
        with g, b, n:
            return numpyro.sample(name, dist.Normal(0.0, self.scale))


@dataclass(frozen=True)
class Flat(Prior):
    """No prior (improper flat density): MAP is the unpenalised maximum-likelihood estimate.

    For MAP and Laplace; samplers need the likelihood alone to pin every weight down.

    Examples
    --------
    >>> from bayesneuro.glm import Flat
    >>> Flat()
    Flat()
    """

    def sample(self, name, group_dim, shape, basis_dim="basis"):
        g, b, n = _plates(group_dim, shape, basis_dim)
        with g, b, n:
            return numpyro.sample(name, dist.ImproperUniform(dist.constraints.real, (), ()))


@dataclass(frozen=True)
class Smooth(Prior):
    """Smooth filters: weights of neighbouring basis functions are correlated, AR(1) across basis.

    ``w ~ Normal(0, K)`` with ``K_ij = scale^2 * correlation^|i - j|`` over the basis index. Its
    precision penalises both size and differences of consecutive weights, so it suits bases
    with many narrow functions (e.g. :class:`~bayesneuro.bases.Identity` or fine B-splines).
    Drawn non-centred: site ``{name}_innovation`` holds independent standard normals and
    ``{name}`` is deterministic.

    Parameters
    ----------
    scale : float, default 1.0
        Marginal prior standard deviation of each weight.
    correlation : float, default 0.9
        Correlation of consecutive weights, in ``[0, 1)``.

    Examples
    --------
    >>> from bayesneuro.glm import Smooth
    >>> Smooth(0.5, correlation=0.8).covariance(3).round(3).tolist()
    [[0.25, 0.2, 0.16], [0.2, 0.25, 0.2], [0.16, 0.2, 0.25]]
    """

    scale: float = 1.0
    correlation: float = 0.9

    def __post_init__(self):
        object.__setattr__(self, "scale", _positive("Smooth scale", self.scale))
        r = float(self.correlation)
        if not (0.0 <= r < 1.0):
            raise ValueError(f"Smooth correlation must be in [0, 1), got {self.correlation}")
        object.__setattr__(self, "correlation", r)

    def covariance(self, n_basis: int) -> np.ndarray:
        """Prior covariance of one filter's ``n_basis`` weights."""
        idx = np.arange(n_basis)
        return self.scale**2 * self.correlation ** np.abs(idx[:, None] - idx[None, :])

    def sample(self, name, group_dim, shape, basis_dim="basis"):
        g, b, n = _plates(group_dim, shape, basis_dim)
        with g, b, n:
            z = numpyro.sample(f"{name}_innovation", dist.Normal(0.0, 1.0))
        chol = jnp.asarray(np.linalg.cholesky(self.covariance(shape[1])), dtype=z.dtype)
        return numpyro.deterministic(name, jnp.einsum("kb,...bn->...kn", chol, z))

    def init_values(self, name, shape):
        return {f"{name}_innovation": np.zeros(shape)}


@dataclass(frozen=True)
class ARD(Prior):
    """Automatic relevance determination: one scale per filter, so whole filters switch off.

    ``tau[g, n] ~ HalfCauchy(scale)`` and ``w[g, :, n] ~ Normal(0, tau[g, n])``, drawn
    non-centred (``{name}_scale``, ``{name}_z``). On coupling, a filter whose posterior scale
    stays near zero is an absent edge. For NUTS and SVI only.

    Parameters
    ----------
    scale : float, default 1.0
        Scale of the half-Cauchy prior on each filter's scale.
    """

    scale: float = 1.0
    supports_map = False
    supports_laplace = False

    def __post_init__(self):
        object.__setattr__(self, "scale", _positive("ARD scale", self.scale))

    def sample(self, name, group_dim, shape, basis_dim="basis"):
        g, b, n = _plates(group_dim, shape, basis_dim)
        with g, n:
            tau = numpyro.sample(f"{name}_scale", dist.HalfCauchy(self.scale))
        with g, b, n:
            z = numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0))
        return numpyro.deterministic(name, tau * z)

    def init_values(self, name, shape):
        return {f"{name}_z": np.zeros(shape)}


@dataclass(frozen=True)
class Horseshoe(Prior):
    """Regularised horseshoe (Piironen & Vehtari 2017) over whole filters: sparse coupling.

    A global scale ``tau ~ HalfCauchy(global_scale)`` shrinks all filters, one local scale per
    filter ``lambda[g, n] ~ HalfCauchy(1)`` lets a few escape, and a slab of width
    ``slab_scale`` bounds how large an escaped filter's weights get:
    ``w ~ Normal(0, tau * lambda_tilde)``, ``lambda_tilde^2 = c^2 lambda^2 / (c^2 + tau^2 lambda^2)``.
    Drawn non-centred. For NUTS and SVI only.

    Parameters
    ----------
    global_scale : float, default 0.1
        Scale of the global shrinkage; smaller means sparser a priori.
    slab_scale : float, default 1.0
        Largest typical weight of an active filter.
    """

    global_scale: float = 0.1
    slab_scale: float = 1.0
    supports_map = False
    supports_laplace = False

    def __post_init__(self):
        object.__setattr__(self, "global_scale", _positive("Horseshoe global_scale", self.global_scale))
        object.__setattr__(self, "slab_scale", _positive("Horseshoe slab_scale", self.slab_scale))

    def sample(self, name, group_dim, shape, basis_dim="basis"):
        g, b, n = _plates(group_dim, shape, basis_dim)
        tau = numpyro.sample(f"{name}_global_scale", dist.HalfCauchy(self.global_scale))
        with g, n:
            lam = numpyro.sample(f"{name}_local_scale", dist.HalfCauchy(1.0))
        with g, b, n:
            z = numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0))
        c2 = self.slab_scale**2
        lam_tilde = jnp.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
        return numpyro.deterministic(name, tau * lam_tilde * z)

    def init_values(self, name, shape):
        return {f"{name}_z": np.zeros(shape)}


@dataclass(frozen=True)
class GroupLasso(Prior):
    r"""Group lasso on whole coupling filters: a sparse, interpretable coupling network at MAP.

    Each coupling filter :math:`c_{nm}(\tau) = \sum_b B_{\tau b} w_{mbn}` (source ``m`` onto
    neuron ``n``, over the lags :math:`\tau`) is penalised by its Euclidean norm over lags,

    .. math:: -\log p(w) = \lambda \sum_{m \ne n} \|c_{nm}\|_2 + \text{const},

    so at the MAP whole filters are exactly zero and the surviving ones are the network's edges.
    The norm is taken over the filter in time, so it does not depend on how the basis is
    parametrised. ``method="map"`` optimises it by proximal gradient descent (FISTA, exact zeros);
    NUTS and SVI sample the same density (a multivariate Laplace prior per filter, sparse only in
    the sense of shrinkage). Laplace is refused: there is no curvature at a zero filter. For
    coupling priors only.

    Parameters
    ----------
    strength : float
        The penalty :math:`\lambda` (per filter, in nats per unit of filter norm); larger gives a
        sparser network. Choose it by held-out score (e.g. ``PoissonGLM.score`` over a grid).

    Examples
    --------
    >>> from bayesneuro.glm import GroupLasso
    >>> GroupLasso(20.0)
    GroupLasso(strength=20.0)
    """

    strength: float = 1.0
    supports_laplace = False

    def __post_init__(self):
        object.__setattr__(self, "strength", _positive("GroupLasso strength", self.strength))

    def sample(self, name, group_dim, shape, basis_dim="basis"):
        g, b, n = _plates(group_dim, shape, basis_dim)
        with g, b, n:
            return numpyro.sample(name, dist.ImproperUniform(dist.constraints.real, (), ()))

    def penalty(self, w, gram, mask):
        """``strength * sum of ||B w_g||`` over the filters ``w[g, :, n]`` where ``mask`` is 1."""
        sq = jnp.einsum("gbn,bc,gcn->gn", w, gram, w)
        # a tiny floor keeps the gradient finite at a zero filter (for NUTS / SVI)
        return self.strength * jnp.sum(mask * jnp.sqrt(sq + 1e-30))


#: Ridge scales tried by ``PoissonGLM(prior="auto")`` (ascending)
RIDGE_CANDIDATES = (0.03, 0.1, 0.3, 1.0, 3.0)


def select_ridge_scale(glm, data, *, neurons=None, candidates=None, fraction: float = 0.25,
                       fit_options: dict | None = None):
    """Choose the :class:`Ridge` scale of a GLM by held-out log-likelihood inside `data`.

    The last `fraction` of `data` (a contiguous block, after a gap of the longest filter so no
    history crosses into it) is held out; the GLM (``prior=Ridge(s)``, every other setting as in
    `glm`) is fitted by MAP to the rest for each candidate ``s`` and scored on the held-out block.
    The candidate with the highest held-out log-likelihood wins. This is what
    ``PoissonGLM(prior="auto").fit`` calls (a fixed ``Ridge(1.0)`` can over-fit coupling filters).

    Parameters
    ----------
    glm : PoissonGLM
        The model (its ``prior`` is replaced by each candidate; it is not modified).
    data : SpikeData
        Training data (the selection never sees data outside it).
    neurons : sequence, optional
        As in :meth:`PoissonGLM.fit`.
    candidates : sequence of float, optional
        Ridge scales to try; None: :data:`RIDGE_CANDIDATES` (0.03, 0.1, 0.3, 1, 3).
    fraction : float
        Share of `data` held out, in (0, 0.5].
    fit_options : dict, optional
        ``max_iter`` / ``tol`` for the inner MAP fits.

    Returns
    -------
    scale : float
        The chosen scale.
    table : pandas.DataFrame
        Index ``prior_scale`` (the candidates); ``bits_per_spike`` (held-out, over a homogeneous
        model), ``log_likelihood`` (held-out, nats), ``diff_se`` (SE of the held-out log-likelihood
        difference from the chosen candidate, nats, from its per-bin terms), ``chosen``.

    Raises
    ------
    ValueError
        Fewer than 2 candidates, a bad `fraction`, or a held-out block too short for the filters.
    """
    import pandas as pd

    from ..estimator import clone

    candidates = RIDGE_CANDIDATES if candidates is None else candidates
    cand = sorted(_positive("Ridge candidate", c) for c in candidates)
    if len(cand) < 2:
        raise ValueError(f"candidates needs at least 2 Ridge scales to choose from, got {candidates!r}")
    if not (0.0 < float(fraction) <= 0.5):
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction!r}")
    gap = int(glm._max_lag())
    inner = data.split(by="time", fractions=(1.0 - float(fraction), float(fraction)), gap=gap)
    if inner.test.n_time < max(gap + 1, 10):
        raise ValueError(f"prior='auto' holds out {inner.test.n_time} bins, too few after a gap of {gap} lags; "
                         "give more data or a fixed prior (e.g. Ridge(1.0))")
    rows, per_bin = [], []
    for s in cand:
        g = clone(glm)
        g.set_params(prior=Ridge(s))
        g.fit(inner.train, method="map", neurons=neurons, progress=False, **(fit_options or {}))
        per_bin.append(g.log_likelihood(inner.test))
        rows.append((g.score(inner.test), float(per_bin[-1].sum())))
    ll = np.array([r[1] for r in rows])
    best = int(np.argmax(ll))
    d = np.asarray(per_bin) - per_bin[best]
    table = pd.DataFrame({"bits_per_spike": [r[0] for r in rows], "log_likelihood": ll,
                          "diff_se": d.std(axis=1, ddof=1) * np.sqrt(d.shape[1]),
                          "chosen": np.arange(len(cand)) == best},
                         index=pd.Index(cand, name="prior_scale"))
    return cand[best], table
