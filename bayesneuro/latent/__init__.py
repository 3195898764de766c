"""Density models P(X), latent factors and latent dynamics.

:class:`GPFA` (Gaussian-process factor analysis, Yu et al. 2009) finds a few smooth latent
signals behind trial-structured counts; :class:`PoissonLDS` (Macke et al. 2011) gives those
latents linear dynamics with Poisson observations. The exact Gaussian linear dynamical system
(Kalman filter and RTS smoother, marginal likelihood, EM) is a building block in
:mod:`bayesneuro.latent.kalman`, as pure JAX functions.
"""

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from . import gpfa_gaussian, gpfa_poisson, gpfa_select, kalman, plotting, scores
from .gpfa import GPFA
from .gpfa_gaussian import GPFAParams
from .gpfa_select import choose_n_latents
from .kalman import (
    LDSParams,
    fit_lds_em,
    kalman_filter,
    kalman_smoother,
    lds_log_likelihood,
    lds_sample,
    make_lds_params,
)
from .plds import PLDSParams, PoissonLDS, cosmoothing_bits_per_spike
from .scores import latent_recovery_r2

__all__ = [
    "GPFA",
    "GPFAParams",
    "LDSParams",
    "PLDSParams",
    "PoissonLDS",
    "choose_n_latents",
    "cosmoothing_bits_per_spike",
    "fit_lds_em",
    "gpfa_gaussian",
    "gpfa_poisson",
    "gpfa_select",
    "kalman",
    "plotting",
    "scores",
    "kalman_filter",
    "kalman_smoother",
    "latent_recovery_r2",
    "lds_log_likelihood",
    "lds_sample",
    "make_lds_params",
]
