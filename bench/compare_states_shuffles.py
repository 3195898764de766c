"""compare_states under shuffled state labels on a real recording: how often a 90% interval of a
difference excludes 0 when every true difference is 0 (nominal 0.10).

Rat motor cortex (30 neurons, 2-s trials laid end to end, ``../shared/data``). The trials are
cut into contiguous blocks of ``--block`` trials (``--block 1``: single trials) and the blocks are
given the labels "a" and "b" at random, half each; ``compare_states(NeuronStatistics(), ...)``
then gives the 90% interval of every neuron's b - a difference of rate, CV, Lv and Fano factor.
The rate of intervals that exclude 0 is reported per statistic with the spread over shuffles.

Usage::

    python bench/compare_states_shuffles.py --trials 1266 --block 25 --shuffles 40
    python bench/compare_states_shuffles.py --trials 40 --block 1 --shuffles 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.choose_platform()  # JAX_PLATFORMS=cpu unless --device

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz"
STATS = ("rate", "cv", "lv", "fano")


def motor_trains(n_trial: int):
    """The first `n_trial` trials as SpikeTrains, one segment per trial."""
    from bayesneuro.density import SpikeTrains

    raw = np.load(DATA, allow_pickle=False)
    sel = raw["trial_ids"] < n_trial
    times = raw["trial_ids"][sel] * 2.0 + raw["spiketimes"][sel] / 1000.0
    segments = np.column_stack([np.arange(n_trial) * 2.0, np.arange(n_trial) * 2.0 + 2.0])
    return SpikeTrains.from_times(times, raw["neuron_ids"][sel], segments=segments, neuron_ids=np.arange(30),
                                  resolution=0.001)


def block_labels(rng: np.random.Generator, n_trial: int, block: int) -> np.ndarray:
    """Labels "a"/"b" given at random to contiguous blocks of `block` trials, half each."""
    n_block = -(-n_trial // block)
    return np.repeat(np.where(rng.permutation(n_block) < n_block // 2, "a", "b"), block)[:n_trial]


def exclusion_rates(n_trial: int, block: int, n_shuffle: int, num_samples: int, seed: int = 0) -> dict:
    """Per statistic: the mean over shuffles of the share of neurons whose 90% interval excludes 0."""
    from bayesneuro.density import NeuronStatistics, compare_states

    trains = motor_trains(n_trial)
    rng = np.random.default_rng(seed)
    rates = {s: [] for s in STATS}
    for i in range(n_shuffle):
        lab = block_labels(rng, n_trial, block)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # neurons with too few ISIs in a state: NaN, skipped
            cmp = compare_states(NeuronStatistics(), trains, lab, key=i, num_samples=num_samples,
                                 fit_kwargs={"num_samples": num_samples}, progress=False)
        d = cmp.differences(prob=0.9)
        for s in STATS:
            g = d[d.statistic == s].dropna(subset=["lower", "upper"])
            rates[s].append(float(((g.lower > 0) | (g.upper < 0)).mean()))
    return {s: {"rate": float(np.mean(v)), "sd_over_shuffles": float(np.std(v)), "n_shuffle": len(v)}
            for s, v in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1266)
    ap.add_argument("--block", type=int, default=25)
    ap.add_argument("--shuffles", type=int, default=40)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="write <out>.json")
    _common.add_device_argument(ap)
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = exclusion_rates(a.trials, a.block, a.shuffles, a.num_samples)
    print(f"{a.trials} trials, labels shuffled between blocks of {a.block}, {a.shuffles} shuffles "
          f"({time.perf_counter() - t0:.0f} s); share of 90% intervals excluding 0 (nominal 0.10):")
    for s, r in res.items():
        print(f"  {s:5s} {r['rate']:.3f}  (sd over shuffles {r['sd_over_shuffles']:.3f})")
    if a.out is not None:
        from bayesneuro._atomic import atomic_write

        text = json.dumps({"settings": vars(a) | {"out": str(a.out)}, "exclusion": res}, indent=1)
        atomic_write(a.out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
