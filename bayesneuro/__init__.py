"""bayesneuro: probabilistic programming for neural data science on JAX and NumPyro.

Density models P(X), encoding models P(X|S) and decoding models P(S|X) share one
data container (:class:`SpikeData`), one set of temporal bases
(:mod:`bayesneuro.bases`) and one inference layer (:func:`bayesneuro.infer.fit`:
MAP, Laplace, SVI, NUTS) whose results are ``arviz.InferenceData``.

The subpackages and names below are imported on first use (PEP 562), so that
``import bayesneuro`` and the command line's ``--help`` / ``--version`` do not load
JAX; ``bayesneuro.PoissonGLM``, ``from bayesneuro import SpikeData`` and
``bayesneuro.glm`` work as usual.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# before anything imports NumPyro (and with it tqdm.auto): a Jupyter kernel without ipywidgets gets
# text progress bars, without tqdm's "IProgress not found" warning (no JAX loaded here)
from . import _progress  # noqa: F401

# name -> submodule it lives in
_NAMES = {
    "SpikeData": "data",
    "Splits": "data",
    "LockedBox": "data",
    "PoissonGLM": "glm",
    "FitResult": "infer",
    "fit": "infer",
    "GPFA": "latent",
    "PoissonLDS": "latent",
    "enable_compilation_cache": "_cache",
    "set_fast_cpu_compile": "_jit",
}

__all__ = [
    "GPFA",
    "FitResult",
    "LockedBox",
    "PoissonGLM",
    "PoissonLDS",
    "SpikeData",
    "Splits",
    "__version__",
    "bases",
    "decoders",
    "density",
    "diagnostics",
    "enable_compilation_cache",
    "fit",
    "glm",
    "infer",
    "io",
    "latent",
    "sbc",
    "set_fast_cpu_compile",
]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    # any submodule (bayesneuro.glm, bayesneuro.nwb, ...), as when they were imported eagerly
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
