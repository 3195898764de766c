"""Encoding models P(X|S): generalised linear models of spike counts.

:class:`PoissonGLM` models each neuron's rate from stimulus filters, its own spike history and
coupling to the rest of the population, each filter on a temporal basis from
:mod:`bayesneuro.bases`, fitted by any method of :func:`bayesneuro.infer.fit`. Priors in
:mod:`bayesneuro.glm.priors`; scores in :mod:`bayesneuro.glm.scores`; the NumPyro model itself is
:func:`bayesneuro.glm.glm_model`, for users who want to extend it.
"""

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from . import scores
from ._model import GLMSpec, glm_model
from .estimator import GLMSimulation, PoissonGLM
from .priors import ARD, Flat, GroupLasso, Horseshoe, Prior, Ridge, Smooth
from .simulate import feedback_kernel, simulate_counts

__all__ = [
    "ARD",
    "Flat",
    "GLMSimulation",
    "GLMSpec",
    "GroupLasso",
    "Horseshoe",
    "PoissonGLM",
    "Prior",
    "Ridge",
    "Smooth",
    "feedback_kernel",
    "glm_model",
    "scores",
    "simulate_counts",
]
