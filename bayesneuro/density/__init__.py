"""Density models P(X), part 2: single neurons, neuron types, population structure, states."""

from .compare import StateComparison, compare_states, plot_states, split_by_state
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
from .trains import SpikeTrains

__all__ = [
    "StateComparison",
    "compare_states",
    "plot_states",
    "split_by_state",
    "NeuronStatistics",
    "SpikeTrains",
    "as_spike_trains",
    "autocorrelogram",
    "burst_index",
    "fano_factor",
    "isi_cv",
    "local_variation",
    "refractory_violations",
]
