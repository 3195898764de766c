"""Density models P(X): single neurons, neuron types, population structure, states.

Single-neuron statistics and renewal ISI models (:mod:`.single`, :mod:`.renewal`), neuron types
(:mod:`.types`), maximum-entropy models of population words (:mod:`.maxent`), dimensionality over
neurons and similarity over time (:mod:`.dimensionality`), ensembles of co-active neurons
(:mod:`.ensembles`: assemblies, spike-train communities, a probabilistic partition), population states by a Poisson HMM
(:mod:`.hmm`), and :func:`compare_states`, which fits any of them (or GPFA / PoissonLDS) per state
and reports the differences with credible intervals (:mod:`.compare`). The pure-JAX pieces
(log-partition functions, forward-backward, Gibbs sampling) stay in their modules.
"""

from bayesneuro import _xla_cpu  # noqa: F401  (batched LAPACK on CPU as loops: no thread-pool deadlock)

from .compare import StateComparison, compare_states, plot_states, split_by_state
from .dimensionality import (
    CVResult,
    Dimensionality,
    FactorAnalysis,
    cross_validate_dimensionality,
    participation_ratio,
    pca,
    percent_shared_variance,
    shared_dimensionality,
    similarity_matrix,
)
from .ensembles import Ensembles, ensemble_similarity, plot_ensembles
from .hmm import PoissonHMM, StateSelection, select_n_states
from .maxent import (
    KINDS,
    MaxEnt,
    Moments,
    binarize,
    compare_population_models,
    observed_moments,
    plot_moments,
)
from .renewal import (
    FAMILIES,
    RenewalComparison,
    RenewalModel,
    compare_renewal,
    plot_isi_fits,
)
from .single import (
    NeuronStatistics,
    as_spike_trains,
    autocorrelogram,
    burst_index,
    fano_factor,
    isi_cv,
    local_variation,
    refractory_violations,
)
from .trains import ISIArray, SpikeTrains
from .types import NeuronTypes, plot_types

__all__ = [
    # states
    "StateComparison",
    "compare_states",
    "plot_states",
    "split_by_state",
    # single neurons
    "SpikeTrains",
    "ISIArray",
    "NeuronStatistics",
    "as_spike_trains",
    "autocorrelogram",
    "burst_index",
    "fano_factor",
    "isi_cv",
    "local_variation",
    "refractory_violations",
    "FAMILIES",
    "RenewalModel",
    "RenewalComparison",
    "compare_renewal",
    "plot_isi_fits",
    # ensembles
    "Ensembles",
    "ensemble_similarity",
    "plot_ensembles",
    # neuron types
    "NeuronTypes",
    "plot_types",
    # population structure
    "KINDS",
    "MaxEnt",
    "Moments",
    "binarize",
    "compare_population_models",
    "observed_moments",
    "plot_moments",
    # low-dimensional structure
    "CVResult",
    "Dimensionality",
    "FactorAnalysis",
    "cross_validate_dimensionality",
    "participation_ratio",
    "pca",
    "percent_shared_variance",
    "shared_dimensionality",
    "similarity_matrix",
    "PoissonHMM",
    "StateSelection",
    "select_n_states",
]
