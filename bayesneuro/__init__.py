"""bayesneuro: probabilistic programming for neural data science."""

__version__ = "0.1.0"
