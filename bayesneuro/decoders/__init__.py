"""Decoding models P(S|X): Bayesian decoders of a variable from population spike counts.

Grid decoders (:class:`NaiveBayesDecoder`, :class:`StateSpaceDecoder`) return a
:class:`GridPosterior`; moment decoders (Kalman, point-process, linear regression) a
:class:`GaussianPosterior`; classifiers a :class:`CategoricalPosterior`. All share ``fit``,
``decode`` and ``score``; :mod:`~bayesneuro.decoders.scores` holds the scores and
:mod:`~bayesneuro.decoders.evaluation` the cross-validation, lag and neuron-count curves.
"""

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from . import evaluation, lags, plotting, scores
from .grid import Grid
from .kalman import KalmanDecoder
from .naive_bayes import NaiveBayesDecoder
from .point_process import PointProcessDecoder
from .posterior import CategoricalPosterior, GaussianPosterior, GridPosterior
from .regression import RegressionDecoder
from .state_space import StateSpaceDecoder, forward_backward
from .tuning import TuningCurves, estimate_tuning_curves

__all__ = [
    "Grid",
    "GridPosterior",
    "GaussianPosterior",
    "CategoricalPosterior",
    "NaiveBayesDecoder",
    "KalmanDecoder",
    "PointProcessDecoder",
    "RegressionDecoder",
    "StateSpaceDecoder",
    "TuningCurves",
    "estimate_tuning_curves",
    "forward_backward",
    "evaluation",
    "lags",
    "plotting",
    "scores",
]
