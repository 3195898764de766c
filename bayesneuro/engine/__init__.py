"""The engine room: the numerical solvers every model family shares.

- :func:`~bayesneuro.engine.newton.newton`: damped Newton minimisation (pure JAX,
  ``jit``/``vmap``-able; pluggable derivatives and linear solve, one stopping rule) for Laplace
  modes, per-neuron GLM fits and decoders.
- :func:`~bayesneuro.engine.em.run_em`: the EM driver (one compiled step, one convergence rule,
  convergence warnings, optional SQUAREM acceleration) for state-space models, GPFA, factor
  analysis and hidden Markov models.

Model families call these instead of writing their own loops; nothing here imports a model
family or NumPyro.
"""

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from .em import EMTrace, run_em, squarem_step
from .newton import NewtonResult, cholesky_solve, dense_solve, newton

__all__ = ["EMTrace", "NewtonResult", "cholesky_solve", "dense_solve", "newton", "run_em", "squarem_step"]
