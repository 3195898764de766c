"""bayesneuro: probabilistic programming for neural data science on JAX and NumPyro.

Density models P(X), encoding models P(X|S) and decoding models P(S|X) share one
data container (:class:`SpikeData`), one set of temporal bases
(:mod:`bayesneuro.bases`) and one inference layer (:func:`bayesneuro.infer.fit`:
MAP, Laplace, SVI, NUTS) whose results are ``arviz.InferenceData``.
"""

__version__ = "0.1.0"

# before anything imports NumPyro (and with it tqdm.auto): a Jupyter kernel without ipywidgets gets
# text progress bars, without tqdm's "IProgress not found" warning (no JAX loaded here)
from . import _progress  # noqa: E402, F401

from . import bases, decoders, density, diagnostics, glm, infer, io, latent, sbc  # noqa: E402
from .data import LockedBox, SpikeData, Splits  # noqa: E402
from .glm import PoissonGLM  # noqa: E402
from .infer import FitResult, fit  # noqa: E402
from .latent import GPFA, PoissonLDS  # noqa: E402

__all__ = [
    "SpikeData",
    "Splits",
    "LockedBox",
    "bases",
    "glm",
    "PoissonGLM",
    "latent",
    "decoders",
    "density",
    "GPFA",
    "PoissonLDS",
    "infer",
    "fit",
    "FitResult",
    "diagnostics",
    "io",
    "sbc",
    "__version__",
]
