"""Encoding models applied to density models: what latents encode, and latents as covariates.

:func:`latent_posterior` turns a fitted density model (GPFA, PoissonLDS, Ensembles with
``method="mixture"``, PoissonHMM) into per-bin posteriors and likelihood messages of its latents.
:class:`LatentEncoder` regresses continuous latents on covariates with temporal filters,
:class:`StateEncoder` makes an HMM's state probabilities depend on covariates, and
:class:`LatentDrivenGLM` is a Poisson GLM of one population on another population's latents;
each carries the latents' uncertainty through and is fitted by :func:`bayesneuro.infer.fit`.
"""

from .driven import LatentDrivenGLM, latent_driven_glm_model, poisson_lognormal_logpmf
from .encoder import LatentEncoder, latent_encoder_model, message_log_likelihood
from .posterior import (
    LatentPosterior,
    StatePosterior,
    gaussian_messages,
    latent_posterior,
    poisson_messages,
)
from .states import StateEncoder, driven_state_log_likelihood, state_encoder_model

__all__ = [
    "LatentDrivenGLM",
    "LatentEncoder",
    "LatentPosterior",
    "StateEncoder",
    "StatePosterior",
    "driven_state_log_likelihood",
    "gaussian_messages",
    "latent_driven_glm_model",
    "latent_encoder_model",
    "latent_posterior",
    "message_log_likelihood",
    "poisson_lognormal_logpmf",
    "poisson_messages",
    "state_encoder_model",
]
