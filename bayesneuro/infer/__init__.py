"""One inference layer for every model: MAP, Laplace, SVI and NUTS.

This subpackage never imports a model family. Any NumPyro model function,
built-in or user-written, is fitted by :func:`fit` and comes back as a
:class:`FitResult` that converts to ``arviz.InferenceData``.
"""

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from ._model import as_key
from .fit import GUIDES, METHODS, BlockHessian, Proximal, fit
from .optimize import OptResult, minimize, minimize_proximal
from .result import FitResult
from .streaming import chunk_slices, fit_streaming

__all__ = ["fit", "Proximal", "BlockHessian", "FitResult", "METHODS", "GUIDES", "minimize", "minimize_proximal", "OptResult", "as_key", "fit_streaming", "chunk_slices"]
