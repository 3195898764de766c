"""One inference layer for every model: MAP, Laplace, SVI and NUTS.

This subpackage never imports a model family. Any NumPyro model function,
built-in or user-written, is fitted by :func:`fit` and comes back as a
:class:`FitResult` that converts to ``arviz.InferenceData``.
"""

from ._model import as_key
from .fit import GUIDES, METHODS, fit
from .optimize import OptResult, minimize
from .result import FitResult

__all__ = ["fit", "FitResult", "METHODS", "GUIDES", "minimize", "OptResult", "as_key"]
