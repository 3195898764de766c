"""Held-out gain of the 30-neuron Monte-Carlo Ising model on a real recording: fixed vs auto prior.

Issue 20, point 5. Rat motor cortex (``../shared/data/motor_cortex_rat_dhawale``), 20-ms binary
words of all 30 neurons from trials 600-629: the first 1,500 words train, the next 1,500 are
held out. Each setting is fitted by MC (Boltzmann learning + AIS log Z) and scored by
``MaxEnt.evaluate`` (gain in bits/bin over the independent model, SE over bins + AIS error), on
the real words and on the same words with each neuron shuffled in time (no coupling left: the
gain should be ~0, and a negative one is over-fitting).

    python bench/maxent_prior.py            # settings table (~5 min on 2 CPU cores)
    python bench/maxent_prior.py --mc       # also: MC settings at the auto-chosen prior

Writes ``bench/results/maxent_prior.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.choose_platform()  # JAX_PLATFORMS=cpu unless --device

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from bayesneuro.density import MaxEnt

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BAYESNEURO_DATA", ROOT.parent / "shared" / "data"))


def motor_words(start_trial: int = 600, n_trials: int = 30, bin_ms: int = 20) -> np.ndarray:
    raw = np.load(DATA / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz", allow_pickle=False)
    t_ms, nid, trial = raw["spiketimes"], raw["neuron_ids"], raw["trial_ids"]
    per = 2000 // bin_ms
    sel = (trial >= start_trial) & (trial < start_trial + n_trials)
    counts = np.zeros((n_trials * per, int(nid.max()) + 1))
    rows = (trial[sel] - start_trial) * per + np.minimum(t_ms[sel] // bin_ms, per - 1).astype(int)
    np.add.at(counts, (rows, nid[sel]), 1)
    return (counts > 0).astype(float)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mc", action="store_true", help="also vary the MC settings at the chosen prior")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "maxent_prior"))
    _common.add_device_argument(ap)
    args = ap.parse_args(argv)
    words = motor_words()
    rng = np.random.default_rng(0)
    shuffled = np.column_stack([rng.permutation(c) for c in words.T])
    sets = {"real": words, "shuffled": shuffled}
    settings = {
        "old default (5 on h, J)": {"prior_scale": 5.0},
        "hand 0.25 on h and J": {"prior_scale": 0.25},
        "hand J 0.25 (h 5)": {"prior_scale": {"h": 5.0, "J": 0.25}},
        "auto": {"prior_scale": "auto"},
    }
    rows = []

    def run(name, ctor, fit_kw=None):
        for data_name, w in sets.items():
            t0 = time.perf_counter()
            m = MaxEnt("ising", **ctor).fit(w[:1500], method="mc", key=0, progress=False, num_samples=0,
                                            **(fit_kw or {}))
            e = m.evaluate(w[1500:])
            row = {"setting": name, "data": data_name, "gain_bits": e["gain_bits"], "gain_se": e["gain_se"],
                   "prior_scale_J": m.prior_scale_["J"], "seconds": time.perf_counter() - t0}
            if m.prior_selection_ is not None:
                row["selection"] = m.prior_selection_.reset_index().to_dict(orient="records")
            rows.append(row)
            print(f"{name:28s} {data_name:9s} gain {e['gain_bits']:+.3f} +- {e['gain_se']:.3f} bits/bin "
                  f"(J prior {m.prior_scale_['J']:g}, {row['seconds']:.0f} s)", flush=True)
            if m.prior_selection_ is not None:
                print(m.prior_selection_.round(4).to_string(), flush=True)
        return rows[-2]["prior_scale_J"]

    chosen = None
    for name, ctor in settings.items():
        chosen = run(name, ctor)
    if args.mc:
        for fit_kw in ({"max_iter": 500}, {"max_iter": 4000}, {"n_chains": 200}, {"n_chains": 1000}):
            run(f"J {chosen:g} (h 5), {fit_kw}", {"prior_scale": {"h": 5.0, "J": chosen}}, fit_kw)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from bayesneuro._atomic import atomic_write

    def write_text(path, text):
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    write_text(out.with_suffix(".json"), json.dumps(rows, indent=1, default=float))
    lines = ["| setting | data | gain (bits/bin) | SE | J prior | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['data']} | {r['gain_bits']:+.3f} | {r['gain_se']:.3f} | "
              f"{r['prior_scale_J']:g} | {r['seconds']:.0f} |" for r in rows]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md", file=sys.stderr)


if __name__ == "__main__":
    main()
