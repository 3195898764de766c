"""Write the notebooks in this folder from the cell lists below (outputs are never stored).

The ``.ipynb`` files are generated: edit the cells here and run ::

    python notebooks/_build_notebooks.py

``tests/test_notebooks.py`` executes every notebook with ``BAYESNEURO_FAST=1`` and checks
that none holds stored outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    cell = new_code_cell(text.strip("\n"))
    cell.outputs = []
    cell.execution_count = None
    return cell


GETTING_STARTED = [
    md(r"""
# Getting started with bayesneuro

This notebook walks through one complete analysis on a real recording:

1. load spikes into a `SpikeData` container;
2. write a Bayesian model of trial-by-trial spike counts as a plain NumPyro function;
3. fit it with each of the four methods of `bayesneuro.fit` (MAP, Laplace, SVI, NUTS);
4. look at the result with ArviZ: summaries, forest plots, diagnostics, LOO and model comparison;
5. save and reload the fit;
6. glance at the temporal bases used by encoding models.

**Data.** 30 neurons recorded by Ashesh K. Dhawale in Bence Ölveczky's lab (Harvard) from rat motor
cortex while the rat performed a timed lever-press task (two presses about 700 ms apart), 1,266 trials.
Each trial is a 2 s window with the first press at 500 ms. The file is the example data of the
`affinewarp` package. Please cite Williams et al. (2020), *Neuron* 105(2):246-259, and, for the
recording method, Dhawale et al. (2017), *eLife* 6:e27702.

**Question.** Do the neurons fire differently in the last trials of the file than in the first ones?
We take the file's trial index as the order in which the trials were recorded; the data's
documentation does not say how the trials are spread over days.

`BAYESNEURO_FAST=1` runs a small version (few neurons, few trials, short sampler runs) in well under a
minute; the test suite runs it that way. Leave it unset for the full analysis.
"""),
    code(r"""
%matplotlib inline
import os
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64: optimisers reach tight tolerances

import arviz as az
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer import init_to_value

import bayesneuro as bn
from bayesneuro.plotting import elbo_trace

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"

if FAST:  # a quick run for the test suite
    N_NEURON = 6  # the most active neurons
    N_EACH = 30  # trials from the start and from the end of the file
    NUTS_OPTIONS = dict(num_warmup=300, num_samples=300, num_chains=2)
    SVI_STEPS, N_DRAWS = 1000, 300
else:
    N_NEURON = None  # all neurons
    N_EACH = None  # all trials: first half against second half
    NUTS_OPTIONS = dict(num_warmup=1000, num_samples=1000, num_chains=4)
    SVI_STEPS, N_DRAWS = 5000, 2000

# The shared data folder sits beside the repository; BAYESNEURO_DATA points elsewhere.
DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
DATA_FILE = DATA_DIR / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz"
if not DATA_FILE.is_file():
    raise FileNotFoundError(f"{DATA_FILE} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
"""),
    md(r"""
## 1. Load the recording

The file holds one row per spike: the spike time **within its trial** in milliseconds, the neuron
index and the trial index (see `PROVENANCE.md` beside the data). `allow_pickle=False` makes sure that
nothing but plain arrays is read.
"""),
    code(r"""
raw = np.load(DATA_FILE, allow_pickle=False)
for name in raw.files:
    print(f"{name:11s} {raw[name].shape} {raw[name].dtype}")
"""),
    md(r"""
`SpikeData.from_spike_times` bins spike times given in **seconds**. The file does not say how much
time passed between trials, so we put trial `k` on one clock at `[2k, 2k + 2)` s and pass these
windows as `trial_intervals`: each window is binned on its own and becomes one trial. Bins are 20 ms.
"""),
    code(r"""
TRIAL_LENGTH = 2.0  # seconds
BIN_SIZE = 0.02  # seconds

trial_index = raw["trial_ids"]
n_trial_file = len(raw["tap1"])
times = trial_index * TRIAL_LENGTH + raw["spiketimes"] / 1000.0  # seconds on one clock
starts = np.arange(n_trial_file) * TRIAL_LENGTH
intervals = np.column_stack([starts, starts + TRIAL_LENGTH])

data = bn.SpikeData.from_spike_times(
    times, raw["neuron_ids"], bin_size=BIN_SIZE, trial_intervals=intervals
)
data
"""),
    code(r"""
rates = data.firing_rates()  # spikes/s over the binned time, one per neuron
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.bar(data.neuron_ids, rates, color="0.4")
ax.set_xlabel("neuron id")
ax.set_ylabel("mean rate (spikes/s)")
ax.set_yscale("log")
ax.set_title("Mean firing rate of each neuron")
plt.show()
"""),
    md(r"""
In FAST mode we keep only the most active neurons. `select_neurons` takes neuron **ids** (labels),
not column positions.
"""),
    code(r"""
if N_NEURON is not None:
    keep = np.sort(data.neuron_ids[np.argsort(rates)[::-1][:N_NEURON]])
    data = data.select_neurons(keep)
print(data)
print("neuron ids:", data.neuron_ids.tolist())
"""),
    md(r"""
All trials have the same length here, so `to_padded()` gives a plain `(trial, time, neuron)` array
(its mask is all true). Averaging over trials gives each neuron's peri-event time histogram, aligned
to the first lever press at 0.5 s.
"""),
    code(r"""
padded, mask = data.to_padded()
assert mask.all()
t_in_trial = (np.arange(padded.shape[1]) + 0.5) * BIN_SIZE
psth = padded.mean(axis=0) / BIN_SIZE  # (time, neuron), spikes/s

fig, ax = plt.subplots(figsize=(8, 3))
for j in range(min(6, data.n_neuron)):
    ax.plot(t_in_trial, psth[:, j], label=f"neuron {data.neuron_ids[j]}")
ax.axvline(raw["tap1"][0] / 1000, color="k", ls="--", lw=1, label="press 1")
ax.axvline(np.median(raw["tap2"]) / 1000, color="k", ls=":", lw=1, label="press 2 (median)")
ax.set_xlabel("time in trial (s)")
ax.set_ylabel("rate (spikes/s)")
ax.legend(fontsize=7, ncol=2)
plt.show()
"""),
    md(r"""
## 2. Spike counts per trial, early and late

Summing over the bins of each trial gives a `(trial, neuron)` table of spike counts. We take the first
and the last trials of the file (the first and second half of all trials in the full run, 30 of
each in FAST mode) and flag the late ones with `late = 1`.
"""),
    code(r"""
trial_counts = padded.sum(axis=1)  # (trial, neuron)
n_each = N_EACH or data.n_trial // 2
rows = np.concatenate([np.arange(n_each), np.arange(data.n_trial - n_each, data.n_trial)])
counts = trial_counts[rows]
late = np.repeat([0.0, 1.0], n_each)  # 0 = early trial, 1 = late trial

# coords label the model's axes: plate "neuron" -> neuron ids, plate "trial" -> trial ids
coords = {"neuron": data.neuron_ids, "trial": data.trials[rows]}
print("counts:", counts.shape, "(trial, neuron)")

early_rate = counts[late == 0].mean(axis=0) / TRIAL_LENGTH
late_rate = counts[late == 1].mean(axis=0) / TRIAL_LENGTH
fano = counts[late == 0].var(axis=0, ddof=1) / counts[late == 0].mean(axis=0)
pd.DataFrame(
    {"early (spikes/s)": early_rate, "late (spikes/s)": late_rate, "Fano factor (early)": fano},
    index=pd.Index(data.neuron_ids, name="neuron"),
).round(2)
"""),
    md(r"""
A Fano factor (variance / mean of the counts across trials) above 1 means the counts vary more from
trial to trial than a Poisson process with a fixed rate would allow.

## 3. A model, written as a plain NumPyro function

A bayesneuro model is any NumPyro function that takes its data as keyword arguments and marks the
observations with `obs=`; when `counts=None` it simulates them instead. Plates use the shared
vocabulary of dim names (`trial`, `neuron`, ...), and ArviZ later uses them to name the axes.

For neuron $n$ on trial $k$:

$$
\text{counts}_{kn} \sim \text{NegativeBinomial}\big(\text{mean } m_{kn},\ \text{concentration } \phi_n\big),
\qquad
\log m_{kn} = \log T + \text{log\_rate}_n + \text{log\_ratio}_n \cdot \text{late}_k ,
$$

with $T$ = 2 s. `log_rate` is the early firing rate in log spikes/s and `log_ratio` the log of
late rate / early rate. The negative binomial has variance $m + m^2/\phi$, so it allows extra
trial-to-trial variability. The `log_ratio` of different neurons share a population mean and spread
(partial pooling), written in non-centred form (`log_ratio = mean + sd * z`), which samplers handle
better than drawing `log_ratio` from `Normal(mean, sd)` directly.

A second model keeps the same rates but has Poisson counts; we compare the two in section 6.
"""),
    code(r"""
def early_late_rates(n_neuron):
    # Per-neuron early log-rate and late/early log-ratio, the ratios partially pooled.
    ratio_mean = numpyro.sample("log_ratio_mean", dist.Normal(0.0, 0.5))
    ratio_sd = numpyro.sample("log_ratio_sd", dist.HalfNormal(0.5))
    with numpyro.plate("neuron", n_neuron):
        log_rate = numpyro.sample("log_rate", dist.Normal(jnp.log(5.0), 1.5))  # log spikes/s
        z = numpyro.sample("log_ratio_z", dist.Normal(0.0, 1.0))
        log_ratio = numpyro.deterministic("log_ratio", ratio_mean + ratio_sd * z)
    return log_rate, log_ratio


def negbin_early_late(counts=None, *, late, duration, n_neuron=None):
    # counts: (trial, neuron) spike counts, or None to simulate; late: (trial,) 0/1.
    late = jnp.asarray(late)
    n_trial = late.shape[0]
    if counts is not None:
        n_neuron = counts.shape[1]
    log_rate, log_ratio = early_late_rates(n_neuron)
    with numpyro.plate("neuron", n_neuron):
        concentration = numpyro.sample("concentration", dist.Gamma(2.0, 0.1))
        with numpyro.plate("trial", n_trial, dim=-2):
            mean = duration * jnp.exp(log_rate + log_ratio * late[:, None])
            numpyro.sample("counts", dist.NegativeBinomial2(mean, concentration), obs=counts)


def poisson_early_late(counts=None, *, late, duration, n_neuron=None):
    # The same rates, with Poisson counts (no extra trial-to-trial variability).
    late = jnp.asarray(late)
    n_trial = late.shape[0]
    if counts is not None:
        n_neuron = counts.shape[1]
    log_rate, log_ratio = early_late_rates(n_neuron)
    with numpyro.plate("neuron", n_neuron), numpyro.plate("trial", n_trial, dim=-2):
        mean = duration * jnp.exp(log_rate + log_ratio * late[:, None])
        numpyro.sample("counts", dist.Poisson(mean), obs=counts)
"""),
    md(r"""
## 4. Fit by MAP, Laplace, SVI and NUTS

`bn.fit(model, method=..., key=..., **data)` is the one entry point. The key is required (the same
key gives the same numbers), data go in as keyword arguments with the model's own names, and
method options (`num_samples`, `num_steps`, ...) sit beside them. `coords` label the plate axes;
`dims` name the axes of data arrays that are not model sites (here `late` runs along `trial`).

- `"map"`: the posterior mode, by L-BFGS; one draw.
- `"laplace"`: a Gaussian around the mode (in the unconstrained space), with draws mapped back.
- `"svi"`: variational inference with an automatic mean-field guide; draws from the guide.
- `"nuts"`: the No-U-Turn sampler, several chains.
"""),
    code(r"""
model_data = dict(counts=counts, late=late, duration=TRIAL_LENGTH)
labels = dict(coords=coords, dims={"late": ["trial"]})

fits = {}
fits["map"] = bn.fit(negbin_early_late, method="map", key=jax.random.key(0), **model_data, **labels)
fits["map"]
"""),
    code(r"""
fits["laplace"] = bn.fit(
    negbin_early_late, method="laplace", key=jax.random.key(1), num_samples=N_DRAWS,
    **model_data, **labels,
)
info = fits["laplace"].info
print("converged:", info["converged"], "after", info["n_iter"], "L-BFGS iterations")
print("Laplace estimate of the log marginal likelihood:", round(info["log_marginal_likelihood"], 1))
"""),
    md(r"""
SVI starts by default at the prior medians. Most of these neurons fire far from the prior median of
5 spikes/s, and from a start far from the posterior stochastic optimisation can be slow, so we start
the guide at the MAP estimate with NumPyro's `init_to_value`. `bayesneuro.plotting.elbo_trace` shows the loss per step: it should end
flat.
"""),
    code(r"""
fits["svi"] = bn.fit(
    negbin_early_late, method="svi", key=jax.random.key(2),
    num_steps=SVI_STEPS, num_samples=N_DRAWS, init_strategy=init_to_value(values=fits["map"].params),
    **model_data, **labels,
)
ax = elbo_trace(fits["svi"])
ax.figure.set_size_inches(5, 2.5)
plt.show()
"""),
    code(r"""
fits["nuts"] = bn.fit(
    negbin_early_late, method="nuts", key=jax.random.key(3), **NUTS_OPTIONS, **model_data, **labels
)
fits["nuts"]
"""),
    md(r"""
Every method returns a `FitResult` whose draws are shaped `(chain, draw, ...)`. `params` holds a
point estimate per site (the MAP value for `"map"`, the posterior mean otherwise) and
`flat_samples()` the draws with chains merged. The late/early log-ratio of each neuron, by method:
"""),
    code(r"""
table = {}
for method, res in fits.items():
    draws = res.flat_samples()["log_ratio"]
    table[(method, "estimate")] = draws.mean(axis=0)
    if method != "map":
        table[(method, "sd")] = draws.std(axis=0)
table = pd.DataFrame(table, index=pd.Index(data.neuron_ids, name="neuron"))
table.round(3)
"""),
    md(r"""
A positive `log_ratio` means the neuron fired more in the late trials. Where the methods disagree,
NUTS is the reference: it samples the posterior itself, while the others approximate it. The Laplace
approximation is a Gaussian in the unconstrained parameters (here `log(log_ratio_sd)` and the `z`s),
which can describe a hierarchical spread such as `log_ratio_sd` poorly when the data say little
about it; mean-field SVI ignores correlations between parameters and tends to make intervals too
narrow.
"""),
    md(r"""
## 5. ArviZ: InferenceData, summaries, plots, diagnostics

`to_inference_data()` converts a fit to `arviz.InferenceData`. Dims come from the plates (`neuron`,
`trial`), coordinates from `coords`, and the pointwise log-likelihood is stored for LOO.
"""),
    code(r"""
idata = fits["nuts"].to_inference_data()
print(idata)
print(idata.posterior["log_ratio"].dims, "| neuron coords:", idata.posterior["neuron"].values.tolist())
print(idata.log_likelihood["counts"].dims)
"""),
    code(r"""
az.summary(idata, var_names=["log_ratio_mean", "log_ratio_sd", "log_ratio", "concentration"]).round(3)
"""),
    md(r"""
A forest plot puts the three approximations of the posterior side by side (MAP has a single draw, so
it has no interval to draw).
"""),
    code(r"""
approx = {m: fits[m].to_inference_data() for m in ("laplace", "svi", "nuts")}
axes = az.plot_forest(
    list(approx.values()), model_names=list(approx), var_names=["log_ratio"],
    combined=True, hdi_prob=0.9, figsize=(6, 4),
)
axes[0].axvline(0.0, color="k", lw=0.8)
axes[0].set_title("log(late rate / early rate), 90% HDI")
plt.show()
"""),
    code(r"""
az.plot_posterior(idata, var_names=["log_ratio_mean", "log_ratio_sd"], hdi_prob=0.9, figsize=(8, 2.5))
plt.show()
"""),
    md(r"""
`diagnose()` checks R-hat (below 1.01), bulk and tail effective sample sizes (at least 100 per chain)
and divergent transitions. `fit(..., method="nuts")` already ran the same check and warned if
something was off; `ok` and `problems` say what, and what to do. The short runs of FAST mode may
not pass these checks; the full settings are meant to.
"""),
    code(r"""
diag = fits["nuts"].diagnose(warn=False)
print("ok:", diag.ok, "| divergences:", diag.n_divergent)
print("largest R-hat:", round(max(diag.rhat.values()), 4))
print("smallest bulk ESS:", round(min(diag.ess_bulk.values())))
for problem in diag.problems:
    print("-", problem)
"""),
    md(r"""
## 6. LOO and model comparison

PSIS-LOO estimates how well each model predicts a held-out observation (here one neuron on one
trial). We fit the Poisson model with the same sampler settings and let `az.compare` rank the two. A
difference `elpd_diff` that is large compared with its standard error `dse` is a clear preference.
ArviZ warns when Pareto $\hat k$ values are high, which means the importance-sampling estimate is
unreliable for some observations, often a sign that the model misfits them.
"""),
    code(r"""
poisson_fit = bn.fit(
    poisson_early_late, method="nuts", key=jax.random.key(4), **NUTS_OPTIONS, **model_data, **labels
)
loo_negbin = az.loo(idata)
loo_negbin
"""),
    code(r"""
comparison = az.compare({"negbin": idata, "poisson": poisson_fit.to_inference_data()})
comparison[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "warning"]]
"""),
    md(r"""
## 7. Save and load

`bn.io.save` writes netCDF atomically (to a temporary file first, then renamed in one step) and
`bn.io.load` reads it back; nothing is pickled. `FitResult.save(path)` does the same for a fit.
"""),
    code(r"""
with tempfile.TemporaryDirectory() as folder:
    path = bn.io.save(idata, Path(folder) / "negbin_nuts.nc")
    loaded = bn.io.load(path)
print(loaded.groups())
print("posterior identical after the round trip:", loaded.posterior.equals(idata.posterior))
"""),
    md(r"""
## 8. Temporal bases, briefly

Encoding models (GLMs) describe how a neuron's rate depends on the recent past of a stimulus or of
spikes through filters. `bayesneuro.bases` writes a filter over `window` lags as a weighted sum of a
few smooth functions. `RaisedCosineLog` spaces them in log time (Pillow et al., 2008): narrow at short
lags, broad at long lags. With `history=True` (the default) row `k` is lag `k + 1` bins, so a
neuron's own current spike is never used to predict itself.
"""),
    code(r"""
basis = bn.bases.RaisedCosineLog(6, window=50, first_peak=1.0)
lags = basis.lags(BIN_SIZE)  # seconds after a spike: 0.02, 0.04, ..., 1.0
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.plot(lags, basis.matrix())
ax.set_xlabel("lag after a spike (s)")
ax.set_title(f"RaisedCosineLog: {basis.n_basis} functions over {basis.window} lags")
plt.show()

# Spike-history features of the first neuron on the first two trials; no lag crosses a trial boundary.
two_trials = data.counts[: 2 * padded.shape[1], :1]
features = bn.bases.convolve(two_trials, basis, history=True, trial_ids=data.trial_ids[: len(two_trials)])
features.shape  # (time, neuron, basis)
"""),
    md(r"""
## Where next

- `docs/inference.md`: the four methods and what each returns; `docs/custom-models.md`: how to
  write models; `docs/data.md`: `SpikeData`, held-out splits and bases.
- `models/` holds more models written this way (a hierarchical Gamma-Poisson rate model, a
  negative-binomial condition effect), each runnable as a script.

**References.** Williams AH, Poole B, Maheswaranathan N, Dhawale AK, et al. (2020). Discovering precise
temporal patterns in large-scale neural recordings through robust and interpretable time warping.
*Neuron* 105(2):246-259. Dhawale AK et al. (2017).
Automated long-term recording and analysis of neural activity in behaving animals. *eLife* 6:e27702.
Pillow JW, Shlens J, Paninski L, Sher A, Litke AM, Chichilnisky EJ, Simoncelli EP (2008).
Spatio-temporal correlations and visual signalling in a complete neuronal population. *Nature*
454:995-999.
"""),
]


NOTEBOOKS = {"01_getting_started.ipynb": GETTING_STARTED}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
