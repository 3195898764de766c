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


GLM_RETINA = [
    md(r"""
# Encoding models of retinal ganglion cells: stimulus, spike history and coupling

This notebook fits Poisson generalised linear models (GLMs) to four primate retinal ganglion cells
(RGCs) and asks how much each ingredient of the coupled GLM of Pillow et al. (2008) adds to the
prediction of held-out spikes:

1. a **stimulus filter** (a linear-nonlinear-Poisson model);
2. plus a **spike-history filter** (refractoriness, bursting);
3. plus **coupling filters** from the other cells.

We then take the full model's posterior (Laplace approximation) to put credible bands on every
filter, look at the coupling network, compare predicted with observed rates on held-out data, and
run the model forward on its own spikes to see whether it produces realistic spike trains.

**Data.** Two OFF and two ON parasol RGCs of the primate retina, recorded by Valerie Uzzell in
E.J. Chichilnisky's lab (Uzzell & Chichilnisky, *J. Neurophysiol.* 2004; Pillow et al.,
*J. Neurosci.* 2005), under 20 minutes of spatially uniform (full-field) binary white noise at
about 120 frames/s. The files come from the public tutorial repository
`pillowlab/GLMspiketraintutorial_python` (folder `data_RGCs/`); see `PROVENANCE.md` beside the data.
They are provided **for tutorial purposes only** and may not be redistributed or used for
publication without permission from E.J. Chichilnisky, so this notebook reads them from the shared
data folder and never copies them.

`BAYESNEURO_FAST=1` uses the first 2 minutes of the recording so that the notebook runs in about a
minute (the test suite runs it that way); leave it unset to use all 20 minutes (a few minutes). The prose
describes the full run; FAST-mode numbers are noisier.
"""),
    code(r"""
%matplotlib inline
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64: L-BFGS reaches tight tolerances

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpyro.infer import init_to_value
from scipy.io import loadmat

import bayesneuro as bn
from bayesneuro.glm import Ridge
from bayesneuro.glm.plotting import plot_coupling, plot_filters, plot_raster, plot_rates

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"
MINUTES = 2.0 if FAST else None  # None: the whole 20-minute recording
N_DRAWS = 300 if FAST else 1000  # Laplace draws for the credible bands

# The shared data folder sits beside the repository; BAYESNEURO_DATA points elsewhere.
DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
RGC_DIR = DATA_DIR / "rgc_pillow"
if not (RGC_DIR / "Stim.mat").is_file():
    raise FileNotFoundError(f"{RGC_DIR} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
"""),
    md(r"""
## 1. Load the recording

Three MATLAB files: the stimulus value of each frame (`Stim`, ±0.48), the time of each frame in
seconds (`stimtimes`) and the spike times of each cell in seconds (`SpTimes`; cells 1-2 are OFF,
3-4 ON).
"""),
    code(r"""
stim = loadmat(RGC_DIR / "Stim.mat")["Stim"].ravel()
frame_times = loadmat(RGC_DIR / "stimtimes.mat")["stimtimes"].ravel()
spike_times = [np.asarray(t, float).ravel() for t in loadmat(RGC_DIR / "SpTimes.mat")["SpTimes"].ravel()]
CELLS = ["OFF-1", "OFF-2", "ON-3", "ON-4"]

frame = float(np.diff(frame_times).mean())  # seconds per frame
print(f"{stim.size} frames of {frame * 1e3:.4f} ms ({1 / frame:.2f} Hz), {frame_times[-1] / 60:.1f} min;"
      f" stimulus values {np.unique(stim)}")
for name, t in zip(CELLS, spike_times):
    print(f"{name}: {t.size:6d} spikes, {t.size / frame_times[-1]:5.1f} spikes/s")
"""),
    md(r"""
**Binning.** We bin spikes at the frame interval (8.34 ms), so each bin holds one stimulus frame.
The first frame time equals one frame interval, so we follow the data's own tutorial and take
frame `k` to occupy `[k Δ, (k + 1) Δ)` (its listed time is the end of the frame); a different
convention would only shift the stimulus filters by one frame. We rescale the stimulus to ±1
(contrast units), so stimulus filters are in log-rate per unit contrast. Cell labels are the neuron
ids, and every plot below names cells by them.
"""),
    code(r"""
n_frame = stim.size if MINUTES is None else int(MINUTES * 60 / frame)
t_stop = n_frame * frame
times = np.concatenate(spike_times)
units = np.concatenate([np.full(t.size, name) for name, t in zip(CELLS, spike_times)])
inside = times < t_stop
contrast = stim[:n_frame] / np.abs(stim).max()  # +1 bright, -1 dark

data = bn.SpikeData.from_spike_times(
    times[inside], units[inside], bin_size=frame, t_start=0.0, t_stop=t_stop,
    neuron_ids=CELLS, covariates=contrast, feature_names=["stimulus"],
)
print(data)
print("spikes per bin: at most", data.counts.max(), "| share of bins with 2+ spikes:",
      np.round((data.counts >= 2).mean(axis=0), 3))
"""),
    md(r"""
**Held-out data.** `split` cuts the recording into 10 contiguous blocks and keeps 2 of them, evenly
spread, for testing (20% of the time), so that slow drifts in excitability affect both sets alike.
The first 25 bins (~200 ms, the longest filter) of every block that follows a block of the other set
are dropped, so no filter reaches across from training into test data. Each separate stretch of a
set becomes a trial, and filters stop at its edges.
"""),
    code(r"""
WINDOW_STIM = 25  # frames (~210 ms) of stimulus filter
WINDOW_HIST = 15  # bins (~125 ms) of spike-history and coupling filters

train, test, _ = data.split(fractions=(0.8, 0.2), n_blocks=10, gap=WINDOW_STIM)
print("train:", train)
print("test: ", test)
"""),
    md(r"""
## 2. Three nested GLMs

For cell $n$, the rate in spikes/s in bin $t$ is

$$
\lambda_n(t) = \exp\Big(b_n + (k_n * s)(t) + (h_n * y_n)(t) + \sum_{m \ne n} (c_{nm} * y_m)(t)\Big),
\qquad y_n(t) \sim \text{Poisson}\big(\lambda_n(t)\,\Delta\big),
$$

with $s$ the contrast, $k_n$ the stimulus filter (current frame included), $h_n$ the cell's own
spike-history filter and $c_{nm}$ the coupling filter from cell $m$ (both starting one bin back).
Each filter is a weighted sum of log-spaced raised cosines (Pillow et al., 2008): fine at short
lags, coarse at long lags. The stimulus basis has 8 bumps over 25 frames (~210 ms); history and
coupling share a basis of 6 bumps over 15 bins (8-125 ms). All weights get a Ridge (Gaussian)
prior, so MAP is ridge-penalised maximum likelihood.
"""),
    code(r"""
stim_basis = bn.bases.RaisedCosineLog(8, window=WINDOW_STIM, history=False)
hist_basis = bn.bases.RaisedCosineLog(6, window=WINDOW_HIST)

fig, axes = plt.subplots(1, 2, figsize=(9, 2.4), constrained_layout=True)
axes[0].plot(stim_basis.lags(frame) * 1e3, stim_basis.matrix())
axes[0].set_title("stimulus basis")
axes[1].plot(hist_basis.lags(frame) * 1e3, hist_basis.matrix())
axes[1].set_title("history / coupling basis")
for ax in axes:
    ax.set_xlabel("lag (ms)")
plt.show()
"""),
    code(r"""
def make_glm(history=False, coupling=False):
    return bn.PoissonGLM(
        stimulus_basis=stim_basis,
        history_basis=hist_basis if history else None,
        coupling=coupling,
        prior=Ridge(1.0),
    )


models = {
    "stimulus": make_glm(),
    "+ history": make_glm(history=True),
    "+ coupling": make_glm(history=True, coupling=True),
}
for label, glm in models.items():
    glm.fit(train, method="map")  # MAP draws no random numbers: no key needed
    info = glm.result_.info
    print(f"{label:11s} converged: {info['converged']} after {info['n_iter']} L-BFGS iterations")
"""),
    md(r"""
## 3. Held-out performance in bits per spike

`score` gives the log-likelihood of the test spikes relative to a constant-rate model of each cell,
in bits per spike: how much the model tells us about the timing of each spike beyond the mean rate.
It is one number for all cells; `evaluate` gives it per cell (with the pseudo-R2 and the
log-likelihood).
"""),
    code(r"""
bits = pd.DataFrame(
    {label: glm.evaluate(test)["bits_per_spike_per_neuron"] for label, glm in models.items()},
    index=pd.Index(data.neuron_ids, name="cell"),
)
bits.loc["all cells"] = [glm.score(test) for glm in models.values()]
bits["gain: history"] = bits["+ history"] - bits["stimulus"]
bits["gain: coupling"] = bits["+ coupling"] - bits["+ history"]
print("held-out bits/spike")
bits.round(3)
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
x = np.arange(data.n_neuron)
for j, label in enumerate(models):
    ax.bar(x + (j - 1) * 0.27, bits.loc[CELLS, label], width=0.27, label=label)
ax.set_xticks(x, CELLS)
ax.set_ylabel("held-out bits / spike")
ax.legend(frameon=False, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
plt.show()
"""),
    md(r"""
In the full 20-minute run the stimulus filter alone carries 1.1-1.6 bits per spike (1.33 over all
cells). Spike history adds 0.09-0.20 bits per spike to every cell (1.47 over all cells), and coupling
adds a further 0.02-0.10 bits per spike (1.50 over all cells), most for OFF-2, the cell with the
lowest rate. These are gains on held-out data, so they are not the overfitting of a bigger model. With
only four of the many cells over this patch of retina recorded, the history filter matters more than
coupling here.

## 4. Credible bands: the coupled model by Laplace

MAP gives one filter per cell. A Laplace approximation (a Gaussian at the posterior mode with the
inverse Hessian as covariance) gives credible bands at almost the same cost. We start its
optimiser at the MAP estimate we already have.
"""),
    code(r"""
full = make_glm(history=True, coupling=True)
full.fit(
    train, method="laplace", key=10, num_samples=N_DRAWS,
    init_strategy=init_to_value(values=models["+ coupling"].params_),
)
print("held-out bits/spike, Laplace posterior mean:", round(full.score(test), 3))
"""),
    code(r"""
grid = plot_filters(full, prob=0.9)
grid[0, 0].figure.suptitle("Filters with 90% credible bands (linear-predictor scale)", fontsize=11)
plt.show()
"""),
    md(r"""
**Stimulus filters** (top row). The OFF cells' filters are negative-going: a *dark* frame raises
their rate, most strongly 25 ms later (with our frame convention). The ON cells' filters are the
mirror image, positive-going, peaking at 33 ms. All four are biphasic, with a smaller lobe of the
opposite sign from about 50 ms to the end of the 200-ms window, so the cells respond to *changes* in
contrast more than to its level. The bands are too narrow to see: 16 minutes of white noise pin the filters down well.

**Spike-history filters** (second row). Negative, most strongly in the first one or two bins
(8-17 ms) after a spike, and fading over the 125-ms window: refractoriness and relative
refractoriness. OFF-2 and ON-4 recover within about 40 ms; OFF-1 and ON-3 stay suppressed for
100 ms or more. At 8-ms bins the absolute refractory
period (1-2 ms) is hidden inside the first bin.

**Coupling filters** (remaining rows: row "coupling from m", column n is the filter from cell m onto
cell n; a cell's effect on itself is its history filter, so those panels are empty). Almost all are
negative and short, concentrated in the first 10-30 ms. The strongest: a spike of either OFF cell
is followed by a deep dip in ON-4's rate in the next bin, and OFF-1 suppresses OFF-2. The one clear
positive filter is OFF-1 onto ON-3, at the first lag only.
"""),
    code(r"""
ax = plot_coupling(full, network_prob=0.9)
plt.show()
matrix = full.coupling_matrix().to_pandas()
matrix.index.name, matrix.columns.name = "onto", "from"
print("integrated coupling (change of log-rate per spike of the source, posterior mean):")
matrix.round(2)
"""),
    md(r"""
The integrated coupling matrix sums each coupling filter over its lags: a spike of the column's cell
changes the row's cell's log-rate by this much in total over the following ~125 ms. Dots mark edges
whose 90% credible interval excludes zero. With 16 minutes of training data, 11 of the 12 edges are
credible, so what matters is their size and sign. In the full run:

- **ON-OFF pairs**: mostly negative, and strongly so from both OFF cells onto ON-4 (about -3; nearly
  all of it in the first bin, where a spike cuts ON-4's rate about tenfold). The exception is OFF-1
  onto ON-3, which is weakly positive.
- **Same-type pairs**: also negative (OFF-1 onto OFF-2 about -1.9; the two ON cells about -0.3).

Pillow et al. (2008), fitting a complete population of parasol cells under spatio-temporal white
noise, found negative coupling between ON and OFF cells, as we mostly do, but *positive* coupling
between neighbouring cells of the same type, which we do not see. These four cells may not be
neighbours, the stimulus here is full-field, and a coupling filter captures any dependence between
cells that the stimulus and history terms leave unexplained (shared noise, a nonlinearity the model
lacks, or recording artefacts such as spike-sorting collisions between near-simultaneous spikes). So
the coupling filters are statistical dependences, not measured synapses or gap junctions, and four
cells are not enough to test that part of the published result.

## 5. Predicted against observed rates on held-out data

`predict_rate` computes each cell's rate from the stimulus and from the *recorded* spikes before each
bin (one-step-ahead prediction). Both traces are smoothed by the same 25-ms Gaussian.
"""),
    code(r"""
t0 = test.bin_centers[0] + 1.0
axes = plot_rates(full, test, t_start=t0, t_stop=t0 + 4.0, smooth=0.025)
axes[0].figure.set_size_inches(9, 6)
plt.show()
print("pseudo-R2 (deviance explained) on test data, per cell:",
      np.round(full.pseudo_r2(test, per_neuron=True), 3))
"""),
    md(r"""
The model follows the fast, stimulus-locked fluctuations of all four cells and gets the timing of
most response events right. Their heights are matched less well: some events are under-predicted,
and the exponential nonlinearity overshoots some of the strongest ones.

## 6. Simulating the model on its own spikes

`simulate` drives the fitted model with the test stimulus but feeds back its **own** spikes through
the history and coupling filters, bin by bin. A coupled GLM can be unstable in closed loop, with rates
that explode; the simulation caps every rate at `max_rate` (1000 spikes/s by default), counts the
bins at the cap (`n_capped`) and flags a runaway when a cell's rate *stays* at the cap for
`runaway_bins` (10) bins in a row, which is what unstable feedback does.
"""),
    code(r"""
sim = full.simulate(test, key=11)
at_cap = sim.n_capped
predicted = full.predict_rate(test)
summary = pd.DataFrame(
    {
        "recorded (spikes/s)": test.firing_rates(),
        "simulated (spikes/s)": sim.data.firing_rates(),
        "simulated bins at the cap": at_cap,
        "bins > cap in one-step prediction": (predicted >= 1000.0).sum(axis=0),
    },
    index=pd.Index(test.neuron_ids, name="cell"),
)
print("runaway:", sim.runaway, "| time each cell ran away (s):", np.round(sim.first_runaway, 2))
summary.round(1)
"""),
    md(r"""
The table shows what happens in closed loop: a few bins out of tens of thousands touch the cap,
and the simulated firing rates stay close to the recorded ones. The one-step-ahead prediction on
the *recorded* spikes also exceeds 1000 spikes/s in a few bins, so these are brief peaks of the
exponential nonlinearity on the strongest stimulus events (at 8-ms bins a frame can drive the rate
very high before the history filter can act), not feedback that explodes; read `runaway` above to
see whether any cell held the cap. The raster compares real and simulated spikes over two seconds of test data.
"""),
    code(r"""
ax = plot_raster(test, sim, t_start=t0, t_stop=t0 + 2.0)
ax.set_title("held-out data: recorded (dark) and simulated (red) spikes", fontsize=10)
plt.show()
"""),
    md(r"""
The simulated spikes come in the same stimulus-locked events as the real ones: the stimulus filter
sets *when* a cell fires, and the history filter spaces out the spikes within an event. Trial-to-trial
variability shows in which events get one spike or several.

## Summary

- Stimulus filters have the polarity of the cell type, negative-going (OFF) and positive-going (ON),
  biphasic, peaking 25-33 ms after a frame; alone they give 1.33 bits per spike on held-out data.
- Spike history is suppressive (refractoriness) and adds 0.09-0.20 bits per spike per cell.
- Coupling adds 0.02-0.10 bits per spike per cell. The coupling is mostly negative, strongest from the
  OFF cells onto ON-4; unlike Pillow et al. (2008) we find no positive coupling between cells of the
  same type, which four cells under a full-field stimulus cannot settle.
- The coupled model runs on its own spikes with rates close to the recorded ones; the few capped
  bins are brief stimulus-driven peaks.

**References.** Pillow JW, Shlens J, Paninski L, Sher A, Litke AM, Chichilnisky EJ, Simoncelli EP (2008).
Spatio-temporal correlations and visual signalling in a complete neuronal population. *Nature*
454:995-999. Pillow JW, Paninski L, Uzzell VJ, Simoncelli EP, Chichilnisky EJ (2005). Prediction and
decoding of retinal ganglion cell responses with a probabilistic spiking model. *J. Neurosci.*
25:11003-11013. Uzzell VJ, Chichilnisky EJ (2004). Precision of spike trains in primate retinal
ganglion cells. *J. Neurophysiol.* 92:780-789. Data: `pillowlab/GLMspiketraintutorial_python`,
`data_RGCs/`, recorded in the lab of E.J. Chichilnisky, for tutorial use only.
"""),
]


LATENT_MOTOR = [
    md(r"""
# Latent dynamics of rat motor cortex: GPFA and a Poisson linear dynamical system

**Question.** Is the activity of a population of motor-cortex neurons during a timed motor sequence
low-dimensional, and if so, with what dynamics? We fit two latent-variable models to single trials:

1. **GPFA** (Gaussian-process factor analysis; Yu et al., 2009): a few smooth latent signals with
   learnt timescales, read out linearly into square-root spike counts (Gaussian noise);
2. a **Poisson linear dynamical system** (PLDS; Macke et al., 2011): latents with linear dynamics
   $x_t = A x_{t-1} + b + \text{noise}$ and Poisson spike counts with rates $\exp(C x_t + d)$.

Both are judged the same way, by **co-smoothing** on held-out trials: each neuron's spikes are
predicted from the latents inferred from the *other* neurons, and scored in bits per spike against a
constant rate per neuron (which scores 0). Dimensionality is chosen by cross-validated leave-neuron-out
prediction on the training trials only.

**Data.** 30 neurons recorded by Ashesh K. Dhawale in Bence Ölveczky's lab (Harvard) from rat motor
cortex while the rat pressed a lever twice with a target interval of about 700 ms, 1,266 trials of
2 s each, aligned so that the first press is at 500 ms; the second press comes 247-1,189 ms later.
The file is the example data of the `affinewarp` package (see `PROVENANCE.md` beside the data).
Please cite Williams et al. (2020), *Neuron* 105(2):246-259 (the data are in their Fig. 6), and, for
the recording method, Dhawale et al. (2017), *eLife* 6:e27702.

`BAYESNEURO_FAST=1` runs a small version (150 trials, a 1 s window, few EM iterations, two candidate
dimensionalities) in a few minutes; the test suite runs it that way. Leave it unset for the full
analysis (all trials, the whole 2 s, more iterations and candidates).
"""),
    code(r"""
%matplotlib inline
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64: EM reaches tight tolerances

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import bayesneuro as bn
from bayesneuro.latent import choose_n_latents
from bayesneuro.latent.plotting import (
    plot_condition_averages,
    plot_eigenvalues,
    plot_flow_field,
    plot_loadings,
    plot_trajectories,
    plot_trajectories_2d,
    plot_variance_explained,
)

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"

if FAST:  # a quick run for the test suite
    N_TRIAL = 150  # a random subset of the trials
    WINDOW = (0.3, 1.3)  # seconds within the trial: 200 ms before press 1 to 800 ms after it
    CANDIDATES = [2, 4]  # numbers of latents to compare
    N_FOLDS, CV_ITER = 3, 15  # cross-validation of the GPFA dimensionality
    GPFA_ITER, PLDS_ITER = 30, 20  # EM iterations of the final fits
else:
    N_TRIAL = None  # all 1,266 trials
    WINDOW = (0.0, 2.0)  # the whole trial
    CANDIDATES = [2, 3, 4, 6, 8]
    N_FOLDS, CV_ITER = 5, 100
    GPFA_ITER, PLDS_ITER = 300, 100

# The shared data folder sits beside the repository; BAYESNEURO_DATA points elsewhere.
DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
DATA_FILE = DATA_DIR / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz"
if not DATA_FILE.is_file():
    raise FileNotFoundError(f"{DATA_FILE} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
T_START = time.perf_counter()
"""),
    md(r"""
## 1. Load, bin at 20 ms, drop the sparsest neurons

The file holds one row per spike: the spike time **within its trial** in milliseconds, the neuron
and the trial index. `allow_pickle=False` makes sure that nothing but plain arrays is read. We bin
each trial's window into 20-ms bins with numpy and hand the `(trial, time, neuron)` counts to
`SpikeData.from_trials`, labelling each trial by its index in the file (so that trial labels,
splits and the press times below stay matched).
"""),
    code(r"""
raw = np.load(DATA_FILE, allow_pickle=False)
BIN_SIZE = 0.02  # seconds
N_FILE = len(raw["tap1"])  # 1,266 trials
N_CELL = int(raw["neuron_ids"].max()) + 1  # 30 neurons
TRIAL_LENGTH = float(raw["tmax"][0] - raw["tmin"][0]) / 1000.0  # 2 s
TAP1 = raw["tap1"] / 1000.0  # first press, s within the trial (always 0.5)
IPI = (raw["tap2"] - raw["tap1"]) / 1000.0  # inter-press interval, s

n_bin = int(round((WINDOW[1] - WINDOW[0]) / BIN_SIZE))
t_sec = raw["spiketimes"] / 1000.0
bin_index = np.floor((t_sec - WINDOW[0]) / BIN_SIZE + 1e-9).astype(np.int64)
inside = (bin_index >= 0) & (bin_index < n_bin)
counts = np.zeros((N_FILE, n_bin, N_CELL), dtype=np.int64)
np.add.at(counts, (raw["trial_ids"][inside], bin_index[inside], raw["neuron_ids"][inside]), 1)

# Mean rate of each neuron over all trials and the whole 2 s (the same in FAST and full mode).
rate_all = np.bincount(raw["neuron_ids"], minlength=N_CELL) / (N_FILE * TRIAL_LENGTH)
MIN_RATE = 1.0  # spikes/s
keep_neurons = np.flatnonzero(rate_all >= MIN_RATE)
print(f"dropped {N_CELL - keep_neurons.size} neurons below {MIN_RATE} spikes/s:",
      np.flatnonzero(rate_all < MIN_RATE).tolist(), np.round(rate_all[rate_all < MIN_RATE], 2).tolist())

if N_TRIAL is None:
    use_trials = np.arange(N_FILE)
else:
    use_trials = np.sort(np.random.default_rng(0).choice(N_FILE, N_TRIAL, replace=False))

data = bn.SpikeData.from_trials(
    list(counts[use_trials][:, :, keep_neurons]), bin_size=BIN_SIZE,
    neuron_ids=keep_neurons, trial_ids=use_trials,
)
data
"""),
    md(r"""
A rate below 1 spike/s is, at 20-ms bins, fewer than one spike in fifty bins: such neurons add
almost nothing to a population model and make leave-neuron-out scores noisy. The remaining neurons
still span a wide range of rates (1 to 48 spikes/s), so most bins hold 0 or 1 spike.

**Conditions.** We label each trial by the tercile of its inter-press interval (IPI, second press
minus first press), computed over the trials we use: `short`, `medium`, `long`.
"""),
    code(r"""
ipi = IPI[use_trials]
edges = np.quantile(ipi, [1 / 3, 2 / 3])
ipi_tercile = np.array(["short", "medium", "long"])[np.digitize(ipi, edges)]
condition_of = dict(zip(use_trials.tolist(), ipi_tercile.tolist()))  # file trial index -> tercile
print("IPI tercile edges (ms):", np.round(1000 * edges).tolist())
print(pd.Series(ipi_tercile).value_counts().reindex(["short", "medium", "long"]).to_dict())

press1 = TAP1[0] - WINDOW[0]  # first press, seconds from the window start
padded, _ = data.to_padded()
t_bin = (np.arange(n_bin) + 0.5) * BIN_SIZE
fig, ax = plt.subplots(figsize=(8, 3))
for label in ["short", "medium", "long"]:
    pop = padded[ipi_tercile == label].sum(axis=2).mean(axis=0) / BIN_SIZE
    ax.plot(t_bin, pop, label=f"{label} IPI")
ax.axvline(press1, color="k", ls="--", lw=1, label="press 1")
ax.set_xlabel("time from window start (s)")
ax.set_ylabel("population rate (spikes/s)")
ax.legend(frameon=False, fontsize=8)
plt.show()
"""),
    md(r"""
## 2. An honest split

`split(by="trials")` assigns whole trials at random to **train** (60%), **test** (20%) and a
**validation** set (20%) that comes back inside a `LockedBox`: it refuses to show its data until
`.open()` is called, and counts the opens. We choose the dimensionality by cross-validation *within*
the training trials, compare models on the test trials, and open the validation box once at the end
for the models we settled on.
"""),
    code(r"""
train, test, validation = data.split(by="trials", fractions=(0.6, 0.2, 0.2), key=0)
print("train:", train)
print("test: ", test)
print(validation)
"""),
    md(r"""
## 3. How many latents? Cross-validated leave-neuron-out prediction

`choose_n_latents` splits the **training** trials into folds; for each fold and each candidate
number of latents it fits a GPFA on the other folds and predicts every neuron of the held-out trials
from all the other neurons (Yu et al., 2009). The criterion is the summed squared error on the
square-root counts; lower is better.
"""),
    code(r"""
sel = choose_n_latents(train, CANDIDATES, n_folds=N_FOLDS, key=1, max_iter=CV_ITER, progress=False)
cv_error = sel.errors.sum("fold").to_pandas()
print("leave-neuron-out squared error, summed over folds:")
print(cv_error.round(1).to_string())
N_LATENT = sel.best
print("chosen number of latents:", N_LATENT)

fig, ax = plt.subplots(figsize=(4, 2.5))
ax.plot(cv_error.index, cv_error.values - cv_error.min(), "o-")
ax.set_xlabel("number of latents")
ax.set_ylabel("CV error - minimum")
plt.show()
"""),
    md(r"""
## 4. GPFA at every candidate dimensionality

We fit a GPFA with each candidate number of latents to all training trials (for the table in
section 7) and keep the chosen one for the figures.

`GPFA.score` gives the same co-smoothing bits per spike as `PoissonLDS.score`: each neuron is
predicted from the others in turn. GPFA predicts the square-root count $s$ of the left-out neuron
with mean $m$ and variance $v$ (latent uncertainty and noise); the model's expected count is
$E[s^2] = m^2 + v$, scored as a Poisson rate. That is the one step that is a convention: GPFA is a
Gaussian model of transformed counts, not a model of spike counts.
"""),
    code(r"""
gpfas, fit_seconds = {}, {}
for q in CANDIDATES:
    t0 = time.perf_counter()
    gpfas[q] = bn.GPFA(q).fit(train, max_iter=GPFA_ITER, progress=False)  # EM: deterministic, no key
    fit_seconds[q] = time.perf_counter() - t0
    g = gpfas[q]
    print(f"{q} latents: {g.n_iter_} EM iterations (converged: {g.converged_}), "
          f"{fit_seconds[q]:.0f} s; timescales (ms): {np.round(1000 * g.timescales_).tolist()}")
gpfa = gpfas[N_LATENT]
gpfa
"""),
    md(r"""
### Single-trial trajectories

The posterior mean of each (orthonormalised) latent on three test trials, with 90% posterior
bands. The latents are ordered by the variance they explain. Times are seconds from the start of
the analysis window; the dashed line is the first press and the dotted lines the second press of
each trial.
"""),
    code(r"""
show = test.trials[:3]
axes = plot_trajectories(gpfa, test, trials=show, latents=(0, 1), prob=0.9)
for a in axes:
    a.axvline(press1, color="k", ls="--", lw=0.8)
    for c, tr in enumerate(show):
        press2 = press1 + IPI[tr]
        if press2 < WINDOW[1] - WINDOW[0]:
            a.axvline(press2, color=f"C{c}", ls=":", lw=1)
plt.show()
"""),
    code(r"""
cond_test = np.array([condition_of[int(tr)] for tr in test.trials])
fig, ax = plt.subplots(figsize=(4.5, 4))
plot_trajectories_2d(gpfa, test, trials=test.trials[:24], latents=(0, 1), condition=cond_test, ax=ax)
plt.show()
"""),
    md(r"""
### Condition averages

Latents averaged over the test trials of each IPI tercile, with bands of the across-trial standard
error (90%). All trials are aligned to the first press (dashed); the dotted lines mark each
tercile's median second press.
"""),
    code(r"""
def mark_presses(axes):
    # Dashed: press 1; dotted, in each condition's colour: its median press 2 (if in the window).
    for a in axes:
        a.axvline(press1, color="k", ls="--", lw=0.8)
        for line in list(a.lines):
            label = line.get_label().split(" (")[0]
            if label in ("short", "medium", "long"):
                press2 = press1 + np.median(IPI[test.trials][cond_test == label])
                if press2 < WINDOW[1] - WINDOW[0]:
                    a.axvline(press2, color=line.get_color(), ls=":", lw=1.2)


axes = plot_condition_averages(gpfa, test, cond_test, latents=(0, 1), prob=0.9)
mark_presses(axes)
plt.show()
"""),
    md(r"""
### Loadings, variance explained and timescales

The orthonormal loadings say how much each neuron's square-root count moves with each latent.
`variance_explained_` is each latent's share of the model's total variance, *noise included*: at
20-ms bins most of the variance of a spike count is Poisson-like noise, so the shares are small
even when the shared signal is real. The timescales are those of the GP of each latent in the
model's own (not orthonormalised) basis.
"""),
    code(r"""
fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
plot_loadings(gpfa, ax=axes[0])
plot_variance_explained(gpfa, ax=axes[1])
plt.show()
print("variance explained per latent:", np.round(gpfa.variance_explained_, 4).tolist(),
      "| total:", round(float(gpfa.variance_explained_.sum()), 4))
print("GP timescales (ms):", np.round(1000 * gpfa.timescales_).tolist())
"""),
    md(r"""
## 5. Poisson LDS at every candidate dimensionality

The PLDS is fitted by Laplace-EM (a Newton E-step on each trial's latent path, O(T) per iteration).
It models the counts themselves, so its co-smoothing score is a plain Poisson log-likelihood:
`score(test)` predicts each neuron from all the others in turn.
"""),
    code(r"""
plds_models, plds_seconds = {}, {}
for q in CANDIDATES:
    t0 = time.perf_counter()
    plds_models[q] = bn.PoissonLDS(q).fit(train, max_iter=PLDS_ITER, progress=False)  # deterministic: no key
    plds_seconds[q] = time.perf_counter() - t0
    m = plds_models[q]
    print(f"{q} latents: {m.n_iter_} EM iterations (converged: {m.converged_}), {plds_seconds[q]:.0f} s")
"""),
    md(r"""
## 6. Held-out co-smoothing on the test trials

Bits per spike of each neuron predicted from the others, pooled over neurons, on the **test**
trials. The constant-rate baseline (each neuron's mean rate on the test trials) scores 0 by
definition; positive means the latents inferred from the other neurons carry information about a
neuron's spike timing.
"""),
    code(r"""
rows = {"constant rate (baseline)": {"GPFA CV error (train folds)": np.nan, "GPFA bits/spike": 0.0,
                                     "PLDS bits/spike": 0.0}}
for q in CANDIDATES:
    rows[f"{q} latents"] = {
        "GPFA CV error (train folds)": float(cv_error.loc[q]),
        "GPFA bits/spike": float(gpfas[q].score(test)),
        "PLDS bits/spike": float(plds_models[q].score(test)),
    }
table = pd.DataFrame(rows).T
print("held-out co-smoothing on the test trials (FAST mode)" if FAST else
      "held-out co-smoothing on the test trials")
table.round(4)
"""),
    md(r"""
We keep the PLDS with the best test score for the dynamics below (choosing on the test set is what
it is for; the validation set stays locked until the end).
"""),
    code(r"""
scores = table["PLDS bits/spike"].drop("constant rate (baseline)")
K_PLDS = CANDIDATES[int(np.argmax(scores.values))]
plds = plds_models[K_PLDS]
print("PLDS kept:", plds)
"""),
    md(r"""
## 7. The dynamics of the Poisson LDS

The eigenvalues of the dynamics matrix $A$ do not depend on the arbitrary basis of the latents.
An eigenvalue $\lambda$ decays with time constant $-\Delta / \log|\lambda|$ and rotates at
$\arg\lambda / (2\pi\Delta)$ Hz, with $\Delta$ = 20 ms.
"""),
    code(r"""
dyn = plds.dynamics_summary()
pd.DataFrame({
    "|eigenvalue|": np.abs(dyn.eigenvalues),
    "decay time constant (s)": dyn.timescales,
    "rotation frequency (Hz)": dyn.frequencies,
}, index=pd.Index([f"{z.real:.3f}{z.imag:+.3f}j" for z in dyn.eigenvalues], name="eigenvalue")).round(3)
"""),
    code(r"""
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
plot_eigenvalues(plds, ax=axes[0])
plot_flow_field(plds, latents=(0, 1), data=test.trial(int(test.trials[0])), grid=15, ax=axes[1])
plt.show()
"""),
    md(r"""
The flow field shows the expected one-step change of the latents in the plane of the first two
(other latents held at the fixed point), with the posterior path of one test trial on top. The PLDS
latents are in the model's own basis; the same plots of trajectories and condition averages work
for it:
"""),
    code(r"""
axes = plot_condition_averages(plds, test, cond_test, latents=(0, 1), prob=0.9)
mark_presses(axes)
plt.show()
"""),
    md(r"""
## 8. The validation set, opened once

Having settled on the GPFA dimensionality (by cross-validation on the training trials) and the PLDS
dimensionality (on the test trials), we open the locked validation trials once and score those two
models on them. `open()` warns, by design.
"""),
    code(r"""
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the LockedBox warning: we open it on purpose
    val = validation.open()
final = pd.DataFrame({
    "latents": [N_LATENT, K_PLDS],
    "validation bits/spike": [float(gpfa.score(val)), float(plds.score(val))],
}, index=["GPFA", "PLDS"])
print(validation)
print(f"total run time: {time.perf_counter() - T_START:.0f} s")
final.round(4)
"""),
    md(r"""
## 9. What this shows, and what it does not

The numbers quoted here are from the FAST run (150 trials, 1 s window, short fits); read your own
tables above for the full run.

- **Shared activity, small in size.** Latents inferred from the other neurons predict each neuron
  better than its mean rate on held-out trials (FAST: 0.04 bits/spike for GPFA and 0.08 for the
  PLDS with 2 latents on the test trials; 0.03 and 0.07 on the validation trials), so there is
  shared, time-varying population activity. The gain is small, hundredths of a bit per spike: at
  20-ms bins with rates of a few spikes/s most of each neuron's variability is private
  (Poisson-like), and no latent model can predict it. GPFA's variance-explained shares (noise
  included, 6% in two latents) say the same, and its loadings show that a latent can be carried
  largely by one or two high-rate neurons.
- **Dimensionality.** In FAST mode the cross-validated GPFA error and both models' test scores
  prefer 2 latents to 4: with 21 neurons, few trials and short fits, extra latents overfit the
  training trials before they help. The number chosen depends on how much data the fit gets.
- **Dynamics.** The PLDS eigenvalues lie close to the unit circle (FAST: a complex pair of modulus
  0.985, decaying over about 1.3 s and rotating at about 0.6 Hz): slow, weakly rotational dynamics
  that follow the press-locked rise and fall of the population rate. That is far below the ~7 Hz
  spike-time oscillation Williams et al. (2020) found after time warping; it is jittered from trial
  to trial and averages out in a linear model of unaligned 20-ms counts.
- **Caveats.** GPFA's bits/spike rely on our conversion of a Gaussian prediction of square-root
  counts into a Poisson rate; the PLDS score does not, which may favour the PLDS in the comparison.
  EM stops after a fixed number of iterations (few in FAST mode), so neither model is guaranteed
  converged. The IPI terciles are not used in fitting; their differences in the condition averages
  are descriptive, with bands over trials, and the test set holds only a few trials per tercile in
  FAST mode.

**References.** Yu BM, Cunningham JP, Santhanam G, Ryu SI, Shenoy KV, Sahani M (2009).
Gaussian-process factor analysis for low-dimensional single-trial analysis of neural population
activity. *J. Neurophysiol.* 102:614-635. Macke JH, Buesing L, Cunningham JP, Yu BM, Shenoy KV,
Sahani M (2011). Empirical models of spiking in neural populations. *NeurIPS* 24. Pei F et al.
(2021). Neural Latents Benchmark '21. *NeurIPS Datasets and Benchmarks* (co-smoothing in bits per
spike). Data: Williams AH, Poole B, Maheswaranathan N, Dhawale AK, Fisher T, Wilson CD, Brann DH,
Trautmann E, Ryu S, Shusterman R, Rinberg D, Ölveczky BP, Shenoy KV, Ganguli S (2020). Discovering
precise temporal patterns in large-scale neural recordings through robust and interpretable time
warping. *Neuron* 105(2):246-259. Dhawale AK, Poddar R, Wolff SBE, Normand VA, Kopelowitz E,
Ölveczky BP (2017). Automated long-term recording and analysis of neural activity in behaving
animals. *eLife* 6:e27702.
"""),
]


DECODING_HD = [
    md(r"""
# Decoding head direction from thalamic head-direction cells

What does a population of head-direction (HD) cells tell us about where the animal's head points,
and how sure can we be? This notebook decodes the head angle, a **circular** variable, from 19
simultaneously recorded neurons and checks the answer the way a decoder should be checked:

1. bin the spikes and split the recording into train / test / locked validation blocks;
2. estimate tuning curves with credible bands (smoothed histograms and a Bayesian Poisson GLM);
3. decode with the Poisson naive-Bayes decoder (each bin alone) and with the state-space decoder
   (the same likelihood with a random-walk prior, smoothed forward-backward on the ring);
4. score on held-out data: median angular error and the **calibration** of the posterior
   (coverage of 50/90/95% credible regions, reliability curve);
5. decoding accuracy as a function of the lag between spikes and head angle, and of the number of
   neurons;
6. open the validation set once, at the end.

**Data.** Anterodorsal thalamic nucleus (ADN) of a freely moving mouse, 19 neurons, spike counts in
10-ms bins over 35 minutes of exploration with the tracked head angle (Peyrache, Lacroix, Petersen &
Buzsáki 2015, *Nature Neuroscience* 18:569-575; the lab's teaching excerpt `dataHD.mat` from the
`PeyracheLab/Class-Decoding` repository; full data CRCNS th-1). The wake bins are the concatenated
valid-tracking periods: we treat each run of bins without a jump in the video clock as its own
segment, so that no temporal prior or lag crosses a gap.

`BAYESNEURO_FAST=1` uses the first 10 minutes and fewer repeats; the test suite runs it that way.
"""),
    code(r"""
%matplotlib inline
import os
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
import scipy.io

import bayesneuro as bn
from bayesneuro.decoders import NaiveBayesDecoder, StateSpaceDecoder, evaluation, plotting, scores

jax.config.update("jax_enable_x64", True)

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"
MINUTES = 10.0 if FAST else None  # None: the whole 35-minute wake recording
N_BLOCKS = None if FAST else 10  # None: three contiguous pieces; 10: interleaved blocks
LAGS = [-10, -5, -2, -1, 0, 1, 2, 5, 10] if FAST else list(range(-12, 13))
N_REPEATS = 3 if FAST else 10

DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
DATA_FILE = DATA_DIR / "head_direction_adn_peyrache" / "dataHD.mat"
if not DATA_FILE.is_file():
    raise FileNotFoundError(f"{DATA_FILE} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
T_START = time.perf_counter()
"""),
    md(r"""
## 1. Load, cut into segments, bin at 20 ms

`scipy.io.loadmat` reads plain MATLAB arrays (nothing is unpickled). Column 0 of `angRun` is the
video time stamp of each 10-ms bin and column 1 the head angle in radians. A jump of more than 50 ms
in the time stamps starts a new segment. We sum pairs of 10-ms bins within each segment (20-ms bins)
and take the circular mean of the angle over each pair.
"""),
    code(r"""
raw = scipy.io.loadmat(DATA_FILE)
counts10 = raw["Qrun"].astype(np.int64)  # (212078, 19) counts in 10-ms bins
stamp, angle10 = raw["angRun"][:, 0], raw["angRun"][:, 1]
segment10 = np.r_[0, np.cumsum(np.diff(stamp) > 0.05)]
if MINUTES is not None:
    keep = np.arange(int(MINUTES * 60 / 0.01))
    counts10, angle10, segment10 = counts10[keep], angle10[keep], segment10[keep]

BIN_SIZE = 0.02
rows, angles, segs = [], [], []
for s in np.unique(segment10):
    idx = np.flatnonzero(segment10 == s)
    n2 = idx.size // 2
    if n2 < 50:  # drop segments shorter than 1 s
        continue
    idx = idx[: 2 * n2].reshape(n2, 2)
    rows.append(counts10[idx].sum(axis=1))
    z = np.exp(1j * angle10[idx]).mean(axis=1)
    angles.append(np.mod(np.angle(z), 2 * np.pi))
    segs.append(np.full(n2, s))
counts, angle, seg = np.concatenate(rows), np.concatenate(angles), np.concatenate(segs)

data = bn.SpikeData.from_counts(counts, bin_size=BIN_SIZE, covariates=angle, feature_names=["angle"],
                                trial_ids=seg)
print(data)
print(f"{data.n_trial} segments; mean rates (Hz):", np.round(data.firing_rates(), 1))
"""),
    md(r"""
## 2. Train / test / locked validation

Blocks of contiguous time (interleaved in the full run, to average over slow drifts). Bins next to
each boundary between sets are dropped (`gap`), so lags of up to 10 bins cannot read from another
set. The validation set stays locked until section 7.
"""),
    code(r"""
train, test, validation = data.split(fractions=(0.6, 0.2, 0.2), n_blocks=N_BLOCKS, gap=12)
print("train", train.n_time, "bins | test", test.n_time, "bins |", validation)
"""),
    md(r"""
## 3. Tuning curves with credible bands

The histogram estimate divides Gaussian-smoothed spike counts by smoothed occupancy (6° cells,
smoothing 6°, wrapping around the circle). The GLM estimate is a Poisson regression on periodic
cubic B-splines with a smoothness prior chosen per neuron by its marginal likelihood; its bands are
the Laplace posterior. Both are computed from the cell statistics (time spent and spikes per cell).
"""),
    code(r"""
nb_hist = NaiveBayesDecoder(bins=60, circular=True, sigma=np.deg2rad(6)).fit(train, "angle")
nb_glm = NaiveBayesDecoder(bins=60, circular=True, tuning="glm", n_basis=20).fit(train, "angle")
order = np.argsort(-train.firing_rates())[:10]
axes = plotting.plot_tuning_curves(nb_glm.tuning_, neurons=train.neuron_ids[order], prob=0.95, ncols=5)
for ax, p in zip(axes, order):
    ax.plot(nb_hist.grid_.centers[0], nb_hist.tuning_.rates[p], color="0.3", lw=0.8)
plt.gcf().suptitle("GLM tuning curves with 95% bands (red) and the smoothed histogram (grey)")
plt.show()
print("cells visited in training:", int(nb_glm.tuning_.visited.sum()), "of", nb_glm.grid_.n_cells)
"""),
    md(r"""
## 4. Decode the test set: naive Bayes and state space

The naive-Bayes decoder treats every 20-ms bin alone. The state-space decoder adds a random-walk
prior on the angle whose step size it learns from the training trajectory, and smooths over the whole
segment (forward-backward on the ring, each step a convolution). Point estimates are posterior
circular means; errors are angular distances.
"""),
    code(r"""
ss = StateSpaceDecoder(bins=60, circular=True, sigma=np.deg2rad(6), point="mean").fit(train, "angle")
ss_ev = StateSpaceDecoder(bins=60, circular=True, sigma=np.deg2rad(6), point="mean",
                          sigma_walk="evidence").fit(train, "angle")
nb_hist.point = "mean"
print(f"random-walk step from the trajectory: {np.rad2deg(ss.sigma_walk_[0]):.2f} deg per 20-ms bin; "
      f"by evidence: {np.rad2deg(ss_ev.sigma_walk_[0]):.2f} deg")
DECODERS = [("naive Bayes", nb_hist), ("state space", ss), ("state space, evidence step", ss_ev)]
results = {}
for name, dec in DECODERS:
    t0 = time.perf_counter()
    sc = dec.evaluate(test, "angle")  # score(test, "angle") alone is sc["mean_log_density"]
    results[name] = sc
    cov = ", ".join(f"{int(k * 100)}%: {v:.3f}" for k, v in sc["coverage"].items())
    print(f"{name:27s} median error {np.rad2deg(sc['median_error']):5.1f} deg | coverage {cov} "
          f"| score {sc['mean_log_density']:.2f} nats/bin | {time.perf_counter() - t0:.2f} s")
"""),
    code(r"""
post_ss = ss.decode(test)
post_nb = nb_hist.decode(test)
truth = test.covariates
fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, constrained_layout=True)
w = (test.bin_centers[0] + 5, test.bin_centers[0] + 35)
plotting.plot_posterior(post_ss, truth, window=w, ax=axes[0])
axes[0].set_title("state-space posterior over the head angle (truth in white)")
plotting.plot_trajectory(post_ss, truth, prob=0.9, window=w, ax=axes[1])
axes[1].set_title("state space: posterior mean and 90% credible arc")
plotting.plot_trajectory(post_nb, truth, prob=0.9, window=w, ax=axes[2])
axes[2].set_title("naive Bayes, bin by bin")
plt.show()
"""),
    md(r"""
## 5. Is the posterior calibrated?

A calibrated decoder's 90% credible regions contain the true angle in 90% of held-out bins. The
reliability curve draws empirical against nominal coverage over many credible masses. On a ring, the region
is the set of most probable cells (highest posterior density).
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(4, 4))
plotting.plot_reliability(post_nb, truth, ax=ax, label="naive Bayes")
plotting.plot_reliability(post_ss, truth, ax=ax, label="state space")
plotting.plot_reliability(ss_ev.decode(test), truth, ax=ax, label="state space, evidence step")
plt.show()
err_ss = scores.errors(post_ss.grid.wrap(truth), post_ss.point, post_ss.grid.periods)
print("state space: share of bins within 30 deg:", round(float(np.mean(err_ss < np.deg2rad(30))), 3))
"""),
    md(r"""
## 6. Accuracy against lag and number of neurons

`lag_curve` refits the decoder to pair the angle at bin `t` with the spikes at `t + lag` (positive
lags: spikes after the angle). ADN cells are reported to *anticipate* head direction by a few tens of
milliseconds (Blair & Sharp 1995); here the angle comes from a 39-Hz video whose time stamps have
25.6-ms resolution, so a lag of one 20-ms bin either way is at the limit of what the data resolve.
`neuron_curve` decodes from random subsets of neurons.
"""),
    code(r"""
lag_nb = evaluation.lag_curve(NaiveBayesDecoder(bins=60, circular=True, sigma=np.deg2rad(6), point="mean"),
                              train, test, "angle", LAGS)
best = int(lag_nb["lags"][np.argmin(lag_nb["value"])])
print(f"naive Bayes: lowest median error at lag {best} bins ({best * BIN_SIZE * 1000:.0f} ms)")
sizes = [2, 4, 8, 12, 19] if not FAST else [2, 8, 19]
n_curve = evaluation.neuron_curve(StateSpaceDecoder(bins=60, circular=True, sigma=np.deg2rad(6), point="mean"),
                                  train, test, "angle", sizes, key=0, n_repeats=N_REPEATS)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
lag_deg = dict(lag_nb, value=np.rad2deg(lag_nb["value"]))
plotting.plot_lag_curve(lag_deg, bin_size=BIN_SIZE, ax=axes[0])
axes[0].set_ylabel("median error (deg)")
plotting.plot_neuron_curve(dict(n_curve, mean=np.rad2deg(n_curve["mean"]), sd=np.rad2deg(n_curve["sd"])), ax=axes[1])
axes[1].set_ylabel("median error (deg)")
plt.show()
"""),
    md(r"""
## 6b. A discrete read-out: which quadrant is the head facing?

Decoders of discrete states (a choice, a stimulus identity) use the Bayesian regression decoder. Here
the label is the quadrant of the head angle (N, E, S, W: four classes), read out by a multinomial
logistic regression on the square-rooted counts of all 19 neurons at lags -2..2 bins, with a Normal
prior on the weights, fitted by Laplace through the shared inference layer. The posterior class
probabilities average over the Laplace draws of the weights.
"""),
    code(r"""
from bayesneuro.decoders import RegressionDecoder

def quadrant(d):
    return (np.floor(np.mod(d.covariates[:, 0] + np.pi / 4, 2 * np.pi) / (np.pi / 2)).astype(int))

clf = RegressionDecoder(family="categorical", lags=[-2, -1, 0, 1, 2], transform="sqrt", prior_scale=0.5)
clf.fit(train, quadrant(train), method="laplace", key=1, num_samples=200 if FAST else 1000)
post_q = clf.decode(test)
true_q = quadrant(test)[post_q.index]
sc_q = scores.evaluate(post_q, true_q)
cov = ", ".join(f"{int(k * 100)}%: {v:.3f}" for k, v in sc_q["coverage"].items())
print(f"quadrant accuracy {sc_q['accuracy']:.3f} (chance 0.25) | coverage of class sets {cov}")
ax = plotting.plot_confusion(true_q, post_q, classes=[0, 1, 2, 3])
ax.set_xticks(range(4), ["E", "N", "W", "S"])
ax.set_yticks(range(4), ["E", "N", "W", "S"])
plt.show()
"""),
    md(r"""
## 7. The locked validation set, opened once

Everything above was chosen on train and test. Now the final numbers, on data never looked at.
"""),
    code(r"""
val = validation.open()
final = {name: dec.evaluate(val, "angle") for name, dec in DECODERS}
for name, sc in final.items():
    cov = ", ".join(f"{int(k * 100)}%: {v:.3f}" for k, v in sc["coverage"].items())
    print(f"{name:27s} median error {np.rad2deg(sc['median_error']):5.1f} deg | coverage {cov} | {sc['n_bins']} bins")
print(f"notebook ran in {time.perf_counter() - T_START:.0f} s")
"""),
    md(r"""
## What we found

Numbers from the full run (all 35 minutes, 10 interleaved blocks) and, in brackets, the FAST run
(first 10 minutes, contiguous pieces), on the test set:

- **Error.** Median angular error 20° for naive Bayes bin by bin and 11° for the state-space
  decoder [FAST: 20° and 9°]: the random-walk prior pools the evidence of neighbouring 20-ms bins,
  each of which holds only a few spikes. 90% of state-space estimates lie within 30° of the truth.
- **Calibration.** The naive-Bayes posterior is close to calibrated: its 50/90/95% regions hold the
  true angle about as often as they claim (test: 0.51 / 0.87 / 0.93 [FAST 0.52 / 0.89 / 0.93]). The
  state-space posterior is **over-confident**
  with the random-walk step read off the trajectory: it multiplies the evidence of many bins as if
  the neurons were conditionally independent Poisson given the angle, and the angle a random walk.
  Its 90% regions hold the truth in only 46% of test bins [FAST 55%]. Choosing the step by marginal
  likelihood (`sigma_walk="evidence"`: twice the trajectory's step here) improves the coverage (60%)
  and the score, the mean log density of the truth (-1.19 against -2.93 nats/bin), but does not make it calibrated. The reliability
  curve is how one sees this; a point-error score alone would rank the state-space decoder best
  without a hint that its credible arcs are too narrow.
- **Lag.** The naive-Bayes error is lowest when the spikes are paired with the angle 60 ms *earlier*
  (lag +3 bins) [FAST: +1 bin]. Anticipatory firing would put the minimum at a negative lag; in this
  teaching excerpt we cannot tell a physiological delay from an offset between the video clock and
  the spike bins, so we report the number and leave the interpretation open.
- **Validation.** On the locked validation blocks the errors are 23° (naive Bayes) and 15° (state
  space), and naive-Bayes 90% coverage is 0.82: somewhat worse than on the test blocks, a sign of
  slow changes over the session that the interleaved blocks spread across all three sets.
- **Neurons.** The error falls steeply over the first few neurons and flattens: a dozen sharply
  tuned cells carry most of the information.
- **Quadrant.** The multinomial regression decoder on lagged counts names the head's quadrant in
  84% of test bins [FAST 86%; chance 25%], and its class sets are calibrated (50/90/95% sets hold
  the true quadrant in 0.51 / 0.90 / 0.95 of bins [FAST 0.52 / 0.90 / 0.95]): a regression on lagged counts, with its
  posterior predictive averaged over the weights' Laplace posterior, does not over-count evidence
  the way the state-space product of per-bin likelihoods does.

**Cite** Peyrache A, Lacroix MM, Petersen PC, Buzsáki G (2015). Internally organized mechanisms of
the head direction sense. *Nature Neuroscience* 18:569-575. Zhang K, Ginzburg I, McNaughton BL,
Sejnowski TJ (1998). Interpreting neuronal population activity by reconstruction. *J Neurophysiol*
79:1017-1044.
"""),
]


DENSITY = [
    md(r"""
# Structure in the spikes: single neurons, neuron types, population structure and states

Before asking what a neuron encodes, ask what its spikes look like, and whether the population is
more than a set of independent neurons. This notebook characterises two real recordings with
`bayesneuro.density`, each estimate with posterior (or bootstrap) uncertainty:

1. **single neurons** (rat motor cortex): firing rate, ISI CV, local variation Lv, Fano factor, burst
   index and refractory-period violations with credible intervals; renewal models of the ISI
   distribution compared by LOO;
2. **neuron types**: a Bayesian mixture over those statistics, number of types chosen by LOO, with
   each neuron's posterior membership;
3. **low-dimensional structure**: factor analysis with cross-validated dimensionality and the
   participation ratio;
4. **a state comparison**: early vs late trials of the session;
5. **population structure from constraints** (head-direction cells): independent, synchrony,
   pairwise (Ising) and K-pairwise maximum-entropy models of binary words, scored on held-out
   bins, with predicted vs observed pairwise and triplet correlations and synchrony distributions;
6. **wake vs REM vs slow-wave sleep**: rates, dimensionality and pairwise couplings compared across
   the three brain states with one call, `compare_states`;
7. **structure over time**: a Poisson hidden Markov model of population states in sleep.

**Data.** (a) 30 neurons of rat motor cortex during a timed lever-press task, 1,266 trials of 2 s,
recorded by Ashesh K. Dhawale in Bence Ölveczky's lab (the example data of `affinewarp`; cite
Williams et al. 2020, *Neuron* 105:246-259, and Dhawale et al. 2017, *eLife* 6:e27702). (b) 19
head-direction cells of the mouse anterodorsal thalamus, 10-ms spike counts in wake exploration
(35 min), REM (16 min) and slow-wave sleep (145 min) (Peyrache et al. 2015, *Nature Neuroscience*
18:569-575; the lab's teaching excerpt `dataHD.mat`). See `PROVENANCE.md` beside each data file.

`BAYESNEURO_FAST=1` (the test suite) uses 300 of the motor-cortex trials, 5 minutes of each brain
state, 12 head-direction cells for the maximum-entropy models, fewer posterior draws and 10
bootstrap refits for the dimensionality intervals (200 in the full run), so its intervals are rough.
"""),
    code(r"""
%matplotlib inline
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib.pyplot as plt
import numpy as np
import scipy.io

import bayesneuro as bn
from bayesneuro import density

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"
N_TRIALS = 300 if FAST else None  # motor cortex: None = all 1,266 trials
N_DRAWS = 300 if FAST else 1000  # posterior draws per statistic
MINUTES = 5.0 if FAST else None  # head direction: minutes of each brain state (None = all)
N_MAXENT = 12 if FAST else 19  # head-direction cells in the maximum-entropy models (exact up to 20)

DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
MOTOR_FILE = DATA_DIR / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz"
HD_FILE = DATA_DIR / "head_direction_adn_peyrache" / "dataHD.mat"
for f in (MOTOR_FILE, HD_FILE):
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
T_START = time.perf_counter()
"""),
    md(r"""
## Part A. Rat motor cortex

### A1. Spike trains, one segment per trial

The file holds spike times in ms within each 2-s trial. We lay the trials end to end (trial $k$
covers $[2k, 2k+2)$ s) and declare each trial a **segment**: no inter-spike interval crosses a trial
boundary, and the posterior of every statistic resamples whole trials (a Bayesian bootstrap over
trials), so that slow changes between trials widen the intervals instead of being ignored.
"""),
    code(r"""
raw = np.load(MOTOR_FILE, allow_pickle=False)
spike_ms, neuron, trial = raw["spiketimes"], raw["neuron_ids"], raw["trial_ids"]
n_trial_all = int(trial.max()) + 1
if N_TRIALS:  # the first and the last N_TRIALS / 2 trials
    keep = np.r_[0 : N_TRIALS // 2, n_trial_all - N_TRIALS // 2 : n_trial_all]
else:
    keep = np.arange(n_trial_all)
sel = np.isin(trial, keep)
times = trial[sel] * 2.0 + spike_ms[sel] / 1000.0
segments = np.column_stack([keep * 2.0, keep * 2.0 + 2.0])
trains = density.SpikeTrains.from_times(times, neuron[sel], segments=segments, neuron_ids=np.arange(30),
                                        resolution=0.001)
print(trains)
"""),
    md(r"""
### A2. Single-neuron statistics with credible intervals

`NeuronStatistics` computes, per neuron, the rate, the ISI coefficient of variation (CV; 1 for a
Poisson process), the local variation Lv (Shinomoto et al. 2003; 1 for Poisson, insensitive to slow
rate changes), the Fano factor of counts in windows, the burst index (fraction of ISIs < 6 ms) and
the fraction of refractory violations (ISIs < 1.5 ms, a spike-sorting quality check).
"""),
    code(r"""
stats = density.NeuronStatistics(refractory=0.0015, burst_isi=0.006).fit(trains, key=0, num_samples=N_DRAWS)
table = stats.summary().reset_index()
wide = table.pivot(index="neuron", columns="statistic", values="estimate")
print(wide[["rate", "cv", "lv", "fano", "burst_index", "refractory_violations"]].round(3).head(12))

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, name in zip(axes, ["rate", "lv", "refractory_violations"]):
    t = table[table.statistic == name].sort_values("mean")
    y = np.arange(len(t))
    ax.errorbar(t["mean"], y, xerr=[t["mean"] - t["lower"], t["upper"] - t["mean"]], fmt="o", ms=3)
    ax.set_yticks(y, t["neuron"].astype(str), fontsize=6)
    ax.set_xlabel(name)
axes[1].axvline(1.0, color="k", lw=0.8, ls="--")  # Poisson
axes[0].set_ylabel("neuron")
fig.suptitle("posterior means and 90% intervals (trial bootstrap)")
plt.show()
"""),
    md(r"""
### A3. Autocorrelograms and renewal models of the ISI distribution

Which renewal process describes a neuron's ISIs: exponential (Poisson), gamma, inverse Gaussian
(integrate-and-fire with drift) or lognormal? Each family is fitted by Laplace through the shared
inference layer and the families are compared by PSIS-LOO per neuron (`elpd_diff`, the gap between
the best and the runner-up, with its standard error `dse`).
"""),
    code(r"""
acg = density.autocorrelogram(trains, bin_size=0.002, window=0.1)
active = stats.estimates_["n_isi"].values >= (500 if FAST else 1000)
ids_active = trains.neuron_ids[active]
# PSIS-LOO keeps a (draw, ISI) log-likelihood per family: memory grows as draws x ISIs
fit_ids = ids_active[:4] if FAST else ids_active[:12]
renewal = density.compare_renewal(trains.select_neurons(fit_ids), key=2, progress=False,
                                  num_samples=200 if FAST else 300)
print(renewal.table[["n_isi", "best", "elpd_diff", "dse"]].round(1))
print("best family:", renewal.table["best"].value_counts().to_dict())

fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for nid in fit_ids[:4]:
    axes[0].plot(acg.coords["lag"] * 1000, acg.sel(neuron=nid), label=f"neuron {nid}")
axes[0].set_xlabel("lag (ms)")
axes[0].set_ylabel("autocorrelogram (Hz)")
axes[0].legend(fontsize="small")
density.plot_isi_fits(renewal.models, neurons=[fit_ids[0]], ax=axes[1], max_isi=0.3)
plt.show()
"""),
    md(r"""
### A4. Neuron types

Do these neurons fall into types by their firing statistics? `NeuronTypes` fits a Bayesian Gaussian
mixture to the neurons' (log rate, CV, Lv, log Fano factor, burst index) for $K = 1..K_{max}$ and
chooses $K$ by PSIS-LOO over neurons with a one-standard-error rule (the smallest $K$ whose elpd is
within one SE of the best). With 30 neurons the data can only support a few types.
"""),
    code(r"""
features = stats.features()
types = density.NeuronTypes(max_types=4 if FAST else 6).fit(features, key=3)
print("types chosen:", types.n_types_)
print(types.loo_table_.round(1))
print("membership (first 8 neurons):")
print(np.round(types.membership_[:8], 2))
density.plot_types(types, "log_rate", "lv")
plt.show()
"""),
    md(r"""
### A5. Dimensionality over neurons

Factor analysis on 20-ms counts of the neurons firing at least 1 Hz: the number of latents is chosen
by cross-validated likelihood (folds are whole trials), the **participation ratio**
$(\sum\lambda)^2 / \sum\lambda^2$ of the covariance eigenvalues measures how spread the variance is,
the **shared dimensionality** counts the latent dimensions needed for 95% of the shared variance, and the
**percent shared variance** says how much of each neuron's variance is shared with the population.
Intervals come from a block bootstrap over trials.
"""),
    code(r"""
busy = trains.neuron_ids[stats.estimates_["rate"].values >= 1.0]
counts20 = trains.select_neurons(busy).to_spike_data(0.02)
dim = density.Dimensionality(max_dim=6 if FAST else 15)
dim.fit(counts20, key=4, n_boot=10 if FAST else 200, progress=False)
post = dim.posterior_statistics(key=5, num_samples=10 if FAST else 200)
for name in ["participation_ratio", "shared_dimensionality", "mean_percent_shared_variance"]:
    d = post[name].values
    print(f"{name:30s} {np.mean(d):6.2f}  90% [{np.quantile(d, 0.05):.2f}, {np.quantile(d, 0.95):.2f}]")
print("latents chosen by cross-validation:", dim.estimates_["n_dim"])
cv = dim.cv_
plt.errorbar(cv.dims, cv.mean, yerr=cv.se, fmt="o-")
plt.xlabel("number of latents")
plt.ylabel("held-out log-likelihood per bin")
plt.show()
"""),
    md(r"""
### A6. Early vs late in the session

One call fits the statistics separately to the first and the second half of the trials and returns
the posterior of each difference, late minus early, with 90% intervals. A neuron "changed" when its
interval excludes 0.
"""),
    code(r"""
half = np.where(np.arange(len(keep)) < len(keep) // 2, "early", "late")
early_late = density.compare_states(density.NeuronStatistics(), trains, half, key=1, num_samples=N_DRAWS,
                                    fit_kwargs={"num_samples": N_DRAWS}, progress=False)
diff = early_late.differences()
changed = diff.assign(changed=(diff.lower > 0) | (diff.upper < 0)).groupby("statistic")["changed"].sum()
print("neurons whose statistic changed (90% interval of late - early excludes 0):")
print(changed.astype(int).to_dict())
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
density.plot_states(early_late, "rate", ax=axes[0])
density.plot_states(early_late, "lv", ax=axes[1])
plt.show()
"""),
    md(r"""
## Part B. Head-direction cells in wake, REM and slow-wave sleep

### B1. Three brain states

The three matrices hold 10-ms counts of the same 19 neurons. We sum pairs of bins (20 ms) and cut
each state into 10-s blocks; the blocks are the resampling units of the bootstrap intervals.
"""),
    code(r"""
hd = scipy.io.loadmat(HD_FILE)
BLOCK = 10.0  # seconds


def state_data(q):
    c = q.astype(np.int64)
    if MINUTES:
        c = c[: int(MINUTES * 60 / 0.01)]
    c = c[: (c.shape[0] // 2) * 2].reshape(-1, 2, c.shape[1]).sum(axis=1)  # 20-ms bins
    n_per = int(BLOCK / 0.02)
    c = c[: (c.shape[0] // n_per) * n_per]
    return bn.SpikeData.from_counts(c, bin_size=0.02, trial_ids=np.arange(c.shape[0]) // n_per)


states = {"wake": state_data(hd["Qrun"]), "REM": state_data(hd["Qrem"]), "SWS": state_data(hd["Qsws"])}
for name, d in states.items():
    print(f"{name:5s}", d)
rates = density.compare_states(density.NeuronStatistics(),
                               {k: density.SpikeTrains.from_spike_data(v) for k, v in states.items()},
                               key=5, num_samples=N_DRAWS, fit_kwargs={"num_samples": N_DRAWS}, progress=False)
r = rates.differences().query("statistic == 'rate'")
for s, g in r.groupby("state"):
    print(f"{s} - wake: rate higher in {(g.lower > 0).sum()}, lower in {(g.upper < 0).sum()} of {len(g)} neurons")
density.plot_states(rates, "rate")
plt.show()
"""),
    md(r"""
### B2. Is the population more than independent neurons?

Each 20-ms bin gives a binary word (spike or not per neuron). Four maximum-entropy models constrain
more and more of its statistics:

- **independent**: each neuron's firing probability;
- **synchrony**: only the distribution P(K) of the number of active neurons (the neurons are treated
  as exchangeable, so it ignores their different rates);
- **Ising** (pairwise): firing probabilities and all pairwise co-firing probabilities (Schneidman et
  al. 2006);
- **K-pairwise**: pairwise plus P(K) (Tkacik et al. 2014).

They are fitted on the first 70% of the wake bins (exactly, by enumerating all $2^N$ words) and
scored on the last 30%, in bits per bin; `gain_bits` is the gain over the independent model with the
standard error of the paired per-bin differences.
"""),
    code(r"""
wake_words = density.binarize(states["wake"])
cells = np.sort(np.argsort(-wake_words.mean(axis=0))[:N_MAXENT])  # the most active cells
words = wake_words[:, cells]
cut = int(0.7 * len(words))
train_words, test_words = words[:cut], words[cut:]
population = density.compare_population_models(train_words, test_words, key=6, progress=False)
print(population.round(4))
"""),
    md(r"""
Do the models predict what they were **not** fitted to? The Ising model matches pairwise statistics
by construction, so the test is the connected third-order correlations and, for the independent and
Ising models, the synchrony distribution, all on the held-out bins.
"""),
    code(r"""
fitted = {kind: density.MaxEnt(kind).fit(train_words, key=7, progress=False)
          for kind in ("independent", "ising", "k-pairwise")}
observed = density.observed_moments(test_words)
density.plot_moments(observed, fitted)
plt.tight_layout()
plt.show()
for kind, m in fitted.items():
    pred = m.predicted_moments()
    r3 = np.corrcoef(observed.triplet, pred.triplet)[0, 1]
    print(f"{kind:12s} triplet correlation r = {r3:.2f} | P(K >= 4): predicted {pred.synchrony[4:].sum():.4f},"
          f" observed {observed.synchrony[4:].sum():.4f}")
"""),
    md(r"""
### B3. Wake vs REM vs SWS: dimensionality and pairwise couplings

The same call, `compare_states`, now fits factor analysis (dimensionality) and the Ising model
(couplings) per brain state. `mean_coupling` is the mean $J_{ij}$; `multi_information` is how many
bits the population's joint distribution departs from independence, in the Ising model.
"""),
    code(r"""
dims = density.compare_states(density.Dimensionality(max_dim=12), states, key=8,
                              num_samples=10 if FAST else 200, progress=False,
                              fit_kwargs={"n_boot": 10 if FAST else 200, "progress": False})
stat_names = ["participation_ratio", "mean_percent_shared_variance"]
print(dims.summary().query("statistic in @stat_names").dropna(axis=1, how="all").round(2).to_string(index=False))
print(dims.differences().query("statistic in @stat_names").dropna(axis=1, how="all").round(2).to_string(index=False))

couplings = density.compare_states(density.MaxEnt("ising"),
                                   {k: density.binarize(v)[:, cells] for k, v in states.items()},
                                   key=9, num_samples=N_DRAWS, fit_kwargs={"progress": False}, progress=False)
print(couplings.differences().query("statistic in ['mean_coupling', 'multi_information']")
      [["statistic", "state", "mean", "lower", "upper"]].round(3).to_string(index=False))
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
density.plot_states(dims, "participation_ratio", ax=axes[0])
density.plot_states(couplings, "mean_coupling", ax=axes[1])
density.plot_states(couplings, "multi_information", ax=axes[2])
plt.tight_layout()
plt.show()
"""),
    md(r"""
### B4. Structure over time: population states in sleep

Over time, the similarity of population vectors between bins shows recurring patterns; a Poisson
hidden Markov model summarises them as a few discrete states with their own rates. The number of
states is chosen on held-out data (second half of the SWS bins) with a one-standard-error rule.
"""),
    code(r"""
sws = states["SWS"]
n_hmm = min(sws.n_time, 3000 if FAST else 60000)  # the first 1 (FAST) or 20 minutes of SWS
first, second = sws.counts[: n_hmm // 2], sws.counts[n_hmm // 2 : n_hmm]
selection = density.select_n_states(first, second, [1, 2, 3] if FAST else [1, 2, 3, 4, 5], key=10,
                                    bin_size=0.02, n_restarts=2 if FAST else 5, progress=False)
print(selection.table[["test_log_likelihood", "test_se", "bic"]].round(4))
print("states chosen:", selection.n_states, "| best held-out:", selection.n_states_max)
hmm = density.PoissonHMM(selection.n_states).fit(first, key=11, bin_size=0.02, n_restarts=2 if FAST else 5,
                                                progress=False)
path = hmm.most_likely_states(second)
occupancy = np.bincount(path, minlength=selection.n_states) / path.size
print("state occupancy in the held-out half:", np.round(occupancy, 2))

show = slice(0, 500)  # 10 s of held-out SWS
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [1, 1.6, 1.2]})
axes[0].imshow(density.similarity_matrix(second[show], smooth=5), cmap="RdBu_r", vmin=-1, vmax=1)
axes[0].set_title("similarity of population vectors")
axes[0].set_xlabel("bin")
axes[0].set_ylabel("bin")
axes[1].imshow(second[show].T, aspect="auto", cmap="Greys", interpolation="nearest",
               extent=(0, 500 * 0.02, second.shape[1] - 0.5, -0.5))
axes[1].scatter(np.arange(500) * 0.02, np.full(500, -1.5), c=path[show], cmap="tab10", vmin=0, vmax=9,
                marker="s", s=8)
axes[1].set_ylim(second.shape[1] - 0.5, -2.5)
axes[1].set_xlabel("time (s)")
axes[1].set_ylabel("neuron")
axes[1].set_title("SWS counts; Viterbi state on top")
im = axes[2].imshow(hmm.params_.rate, aspect="auto", cmap="viridis", interpolation="nearest")
axes[2].set_yticks(range(selection.n_states))
axes[2].set_xlabel("neuron")
axes[2].set_ylabel("state")
axes[2].set_title("state rates (Hz)")
fig.colorbar(im, ax=axes[2])
plt.tight_layout()
plt.show()
print(f"notebook ran in {time.perf_counter() - T_START:.0f} s")
"""),
    md(r"""
## What we found

Figures from the full run (`BAYESNEURO_FAST` unset, 26 minutes on 2 CPU cores); the FAST run
shows the same picture with wider and (few bootstrap refits) rougher intervals, except where noted.

- **Single neurons.** Rates span 0.3-24 Hz. Most neurons are more irregular than Poisson over
  whole trials (ISI CV > 1 for 22 of 30) yet more regular locally (Lv < 1 for 25 of 30): their
  rate changes within the trial, which CV counts and Lv does not. No neuron has more than 1.5% of
  its ISIs below 1.5 ms (refractory violations).
  No renewal family describes every neuron: of the 12 busiest, the inverse Gaussian wins for 6,
  the gamma for 4, the lognormal for 2, often by hundreds of nats, and none captures the hump of
  ISIs near 50 ms seen in neuron 0 (a trial-locked rhythm, not a renewal property).
- **Neuron types.** LOO prefers two types (K = 2, elpd 15 above K = 1 with dse 9.5): a group of
  seven neurons with high Lv for their rate separates from the other 23. With 30 neurons
  this is about as much structure as the data can support; the FAST run (300 trials) keeps one
  type (K = 2 is within 0.2 nats).
- **Dimensionality.** The participation ratio of the 20-ms covariance of the 21 neurons above
  1 Hz is 9.9 (95% 9.8-9.9). Cross-validation keeps adding factors up to the largest number tried
  (15; the one-SE rule agrees): with 126,600 bins every small departure from the factor model
  (Poisson noise whose variance follows a rate that changes within the trial) is detectable, so
  "how many factors" has no small answer here, while the participation ratio is stable. The FAST
  run (300 trials) stops at 6 factors.
- **Early vs late.** 14 of 30 neurons change their rate between the first and second half of
  the session (95% intervals with a trial bootstrap), and Lv and Fano factors change for 13-14:
  the population drifts over a session, which any model fitted to the whole session averages over.
- **Pairwise structure beats independence.** On held-out wake bins of all 19 head-direction
  cells, the Ising model gains 0.580 ± 0.009 bits per bin over independent neurons (the entropy
  is about 6.4 bits per bin); adding P(K) (K-pairwise) adds only 0.002 bits. The pairwise model
  predicts the held-out triplet correlations (r = 0.87; 0.90 K-pairwise; -0.03 independent),
  which it was not fitted to, and the probability of 4 or more co-active cells (0.048 Ising,
  0.045 K-pairwise, 0.035 independent; observed 0.043). The synchrony model alone loses 0.62
  bits: these cells are not exchangeable.
- **Wake vs sleep.** The participation ratio is 8.0 in wake, 7.2 in REM (difference -0.7,
  95% -1.7 to 0.2) and 10.1 in slow-wave sleep (+2.1, 1.7 to 2.4): activity spreads over more
  dimensions in SWS. The mean Ising coupling is -0.49 in wake (cells with different preferred
  directions avoid firing together), 0.16 (0.10-0.24) higher in REM and 0.55 (0.51-0.59) higher
  in SWS, where it is about 0; the multi-information falls from 0.65 bits in wake by 0.25 bits in
  both sleep states. The coordination of the head-direction cells is strongest in wake, and in
  these measures REM lies between wake and SWS.
- **States over time.** In 20 minutes of SWS the held-out likelihood keeps improving up to the
  largest number of states tried (5): the population visits a continuum of activity patterns
  (the internal head direction drifts around the ring) rather than a few discrete states, and the
  HMM tiles that continuum.
"""),
]



CALIBRATION = [
    md(r"""
# Calibration on real recordings: do 90% credible regions hold the truth 90% of the time?

A decoder returns a posterior over the decoded variable, not just a point. Its **credible regions**
make a promise: the 90% region holds the true value in 90% of held-out bins. This notebook checks
that promise on three real recordings, loaded with `bayesneuro.datasets`:

- **2-D place cells**: 49 hippocampal cells of a rat foraging in a 70-cm circular arena, position
  `x`, `y` in cm (Barbieri et al. 2004; nSTAT's `PlaceCellDataAnimal1.mat`), 200-ms bins;
- **linear track**: 31 tetrode units of a rat running on a linear track, `position` in camera
  pixels, running bins only (nelpy example data, Kemere lab), 200-ms bins;
- **head-direction cells**: 19 anterodorsal thalamus cells of a mouse, head `angle` in radians
  (Peyrache et al. 2015), 20-ms bins.

Two configurations of the grid decoders (`NaiveBayesDecoder`, `StateSpaceDecoder`) are compared:

- **before**: independent Poisson neurons, untempered (`observation="poisson", temperature=1.0`),
  the textbook model;
- **after**: the defaults: negative-binomial neurons (a dispersion per neuron) and a likelihood
  temperature chosen by nested, leak-free cross-validation inside the training data.

Each recording is cut into contiguous folds; every fold is decoded by a decoder fitted to the
other folds (minus a gap either side), so nothing about the test bins reaches the fit. The
complete table, with the Kalman, point-process and regression decoders, the GLM, the latent models
and the density statistics, is produced by `bench/calibration.py` and shown in the
documentation page *Calibration*.

`BAYESNEURO_FAST=1` (the test suite) uses the first 4 minutes of the head-direction recording and 3
folds; the full run uses 8 minutes of head direction and 5 folds. Both use the whole arena session
and the whole tracked linear-track session: with only a few minutes, contiguous folds leave parts
of the arena unvisited in training, and a true position in a cell never visited in training has
posterior probability zero, so no credible region can cover it (the decoders warn with the count).
"""),
    code(r"""
%matplotlib inline
import os
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import bayesneuro as bn
from bayesneuro.datasets import load_head_direction, load_linear_track, load_place_cells_2d
from bayesneuro.decoders import NaiveBayesDecoder, StateSpaceDecoder, scores

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"
N_FOLDS = 3 if FAST else 5
# the whole arena session in both modes: with a few minutes, contiguous folds leave parts of the
# arena unvisited in training, and a truth in a cell never visited can never be covered
MINUTES = {"arena": None, "track": None, "head": 4.0} if FAST else {"arena": None, "track": None, "head": 8.0}

DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
if not DATA_DIR.is_dir():
    raise FileNotFoundError(f"{DATA_DIR} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
T_START = time.perf_counter()
"""),
    md(r"""
## 1. Load the recordings

Each loader takes the path of your copy of the data and returns a `SpikeData` with the behaviour as
named features. Tracking gaps are never interpolated: bins that overlap a gap are dropped and each
contiguous run of bins becomes its own segment (`trial_ids`), so that the state-space prior does
not walk across a gap. We keep the first minutes where asked, and the neurons that fire in every
tenth of the recording (each training set sees every neuron spike).
"""),
    code(r"""
def first_minutes(data, minutes):
    return data if minutes is None else data[data.bin_centers < data.bin_centers[0] + 60 * minutes]


def active_everywhere(data, n_blocks):
    blocks = np.array_split(np.arange(data.n_time), n_blocks)
    ok = np.min([data.counts[b].sum(axis=0) for b in blocks], axis=0) >= 3
    return data.select_neurons(data.neuron_ids[ok])


RECORDINGS = {
    "arena": load_place_cells_2d(DATA_DIR / "place_cells_2d_barbieri_animal1", bin_size=0.2),
    "track": load_linear_track(DATA_DIR / "place_cells_linear_track_nelpy", bin_size=0.2, min_speed=10.0),
    "head": load_head_direction(DATA_DIR / "head_direction_adn_peyrache", bin_size=0.02),
}
RECORDINGS = {k: active_everywhere(first_minutes(d, MINUTES[k]), 2 * N_FOLDS) for k, d in RECORDINGS.items()}
FEATURE = {"arena": ["x", "y"], "track": "position", "head": "angle"}
GRID = {  # grid of the decoded variable; the range covers the whole arena / track
    "arena": dict(bins=20, range=[(-35.0, 35.0), (-35.0, 35.0)], sigma=4.0),
    "track": dict(bins=43, range=(130.0, 560.0), sigma=10.0),
    "head": dict(bins=60, circular=True, sigma=np.deg2rad(6)),
}
GAP_S = {"arena": 2.0, "track": 2.0, "head": 1.0}
for name, data in RECORDINGS.items():
    print(f"{name:6s}", data)
"""),
    md(r"""
## 2. Contiguous folds, before and after

`contiguous_folds` cuts the bins into `N_FOLDS` blocks in time order; each block is decoded by a
decoder fitted to the others, with `GAP_S` seconds dropped either side of the block. `evaluate`
returns the coverage of the 50/90/95% credible regions (highest posterior density on the grid)
and the fitted temperature is in `temperature_`.
"""),
    code(r"""
CONFIGS = {
    "before": dict(observation="poisson", temperature=1.0),
    "after": {},  # the defaults
}
DECODERS = {"naive Bayes": NaiveBayesDecoder, "state space": StateSpaceDecoder}


def contiguous_folds(n_time, k, gap):
    bounds = np.round(np.linspace(0, n_time, k + 1)).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        train = np.r_[np.arange(0, max(a - gap, 0)), np.arange(min(b + gap, n_time), n_time)]
        yield train, np.arange(a, b)


rows, kept = [], {}
for rec, data in RECORDINGS.items():
    gap = int(round(GAP_S[rec] / data.bin_size))
    for k, (tr, te) in enumerate(contiguous_folds(data.n_time, N_FOLDS, gap)):
        train, test = data[tr], data[te]
        for dname, cls in DECODERS.items():
            for cfg, opts in CONFIGS.items():
                t0 = time.perf_counter()
                dec = cls(**GRID[rec], point="mean", **opts).fit(train, FEATURE[rec])
                sc = dec.evaluate(test, FEATURE[rec])
                rows.append(dict(recording=rec, decoder=dname, config=cfg, fold=k, n_bins=sc["n_bins"],
                                 temperature=dec.temperature_, median_error=sc["median_error"],
                                 **{f"cov{int(p * 100)}": v for p, v in sc["coverage"].items()},
                                 seconds=time.perf_counter() - t0))
                if k == 0:  # keep the first fold's posteriors for the reliability curves
                    kept[(rec, dname, cfg)] = (dec.decode(test), test)
folds = pd.DataFrame(rows)
print(f"{len(folds)} fits in {folds.seconds.sum():.0f} s")
"""),
    md(r"""
## 3. The table

Coverage averaged over folds (weighted by bins), the range of the 90% coverage over folds, and the
temperatures chosen on each fold's training data. The target for the 90% regions is 0.85-0.95.
"""),
    code(r"""
def summarise(g):
    w = g.n_bins / g.n_bins.sum()
    return pd.Series({
        "cov50": (w * g.cov50).sum(), "cov90": (w * g.cov90).sum(), "cov95": (w * g.cov95).sum(),
        "cov90 range": f"{g.cov90.min():.2f}-{g.cov90.max():.2f}",
        "temperatures": ", ".join(f"{t:g}" for t in g.temperature),
        "median error": g.median_error.median(),
    })


table = folds.groupby(["recording", "decoder", "config"], sort=False).apply(summarise, include_groups=False)
with pd.option_context("display.precision", 3, "display.width", 140):
    print(table)
"""),
    md(r"""
## 4. Reliability curves

The reliability curve plots the empirical coverage of the credible regions against their nominal
mass, from 5% to 95% (`scores.reliability`). A calibrated decoder lies on the diagonal; a curve below
it is over-confident (regions too small), above it under-confident. First fold of each recording.
"""),
    code(r"""
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
styles = {"before": dict(ls="--"), "after": dict(ls="-")}
colors = {"naive Bayes": "C0", "state space": "C3"}
for ax, rec in zip(axes, RECORDINGS):
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
    for (r, dname, cfg), (post, test) in kept.items():
        if r != rec:
            continue
        truth = test.covariates[:, [test.feature_names.index(f) for f in np.atleast_1d(FEATURE[rec])]]
        nominal, empirical = scores.reliability(post, truth)
        ax.plot(nominal, empirical, marker="o", ms=3, color=colors[dname], label=f"{dname}, {cfg}", **styles[cfg])
    ax.set_title(rec)
    ax.set_xlabel("nominal credible mass")
    ax.set_aspect("equal")
axes[0].set_ylabel("share of test bins covered")
axes[0].legend(fontsize="small")
plt.show()
"""),
    md(r"""
## 5. Does the same pipeline reach 90% on data from its own model?

The check that tells a wrong coverage *computation* from a wrong *model*: draw counts from the
grid tuning curves fitted to the recording (Poisson for *before*, negative binomial with the
fitted dispersion for *after*) along the animal's true path, and run exactly the same folds and
decoders on them. Shown for the naive-Bayes decoder on the linear track.
"""),
    code(r"""
def simulate_from_fit(data, rec, cfg, seed):
    # counts along the true path from the tuning curves (and dispersion) fitted to the whole recording
    ref = NaiveBayesDecoder(**GRID[rec], **dict(CONFIGS[cfg], temperature=1.0)).fit(data, FEATURE[rec])
    values = data.covariates[:, [data.feature_names.index(f) for f in np.atleast_1d(FEATURE[rec])]]
    rates = np.nan_to_num(ref.tuning_.rates, nan=0.0)[:, ref.grid_.locate(values)].T  # (time, neuron)
    mu = np.maximum(rates * data.bin_size, 1e-12)
    rng = np.random.default_rng(seed)
    r = np.asarray(ref.dispersion_)  # inf: a Poisson neuron
    nb = np.isfinite(r)
    lam = mu.copy()
    lam[:, nb] = rng.gamma(r[nb], mu[:, nb] / r[nb])  # gamma-Poisson = negative binomial
    return bn.SpikeData(rng.poisson(lam), bin_size=data.bin_size, bin_centers=data.bin_centers,
                        neuron_ids=data.neuron_ids, covariates=data.covariates, feature_names=data.feature_names,
                        trial_ids=data.segment_ids)


rec = "track"
data = RECORDINGS[rec]
gap = int(round(GAP_S[rec] / data.bin_size))
for cfg, opts in CONFIGS.items():
    sim = simulate_from_fit(data, rec, cfg, seed=1)
    cov = []
    for tr, te in contiguous_folds(data.n_time, N_FOLDS, gap):
        dec = NaiveBayesDecoder(**GRID[rec], point="mean", **opts).fit(sim[tr], FEATURE[rec])
        cov.append(dec.evaluate(sim[te], FEATURE[rec])["coverage"][0.9])
    real = table.loc[(rec, "naive Bayes", cfg), "cov90"]
    print(f"naive Bayes, {cfg:6s}: 90% coverage real {real:.3f} | simulated from the fit {np.mean(cov):.3f}")
print(f"notebook ran in {time.perf_counter() - T_START:.0f} s")
"""),
    md(r"""
## What we found

Read the numbers of your own run above; the full-settings table is in the documentation page
*Calibration* (`bench/results/calibration.md`).

- **Before** (independent Poisson, untempered), the 90% regions of both grid decoders cover far
  less than 90% of held-out bins on the place-cell recordings, and the state-space decoder is
  over-confident on all three. The same pipeline on counts drawn from the fitted Poisson model
  covers close to 90%: the coverage code is right, the model is too sharp for real cells (their
  counts are over-dispersed and their noise correlated, so multiplying per-neuron likelihoods
  over-counts the evidence).
- **After** (negative-binomial neurons, temperature chosen on the training folds only), the
  coverage moves towards the nominal mass. The temperature is a fitted parameter: it varies
  between folds and recordings, and the state-space decoder, which multiplies the likelihoods of
  many bins along the path, needs a larger one than the bin-by-bin naive-Bayes decoder. A single
  temperature widens the whole posterior: where the 90% regions are on target, the 50% regions
  can be too wide (the reliability curve bends above the diagonal at small masses).
- Where a decoder still misses 0.85-0.95, the documentation table says by how much and why.
"""),
]


ENSEMBLES_LATENT = [
    md(r"""
# Ensembles of head-direction cells in wake and sleep, and what motor-cortex latents encode

Two questions about population structure, each answered with its uncertainty:

**Part 1. Ensembles.** Do the 19 head-direction cells of the mouse anterodorsal thalamus fall into
groups that fire together, do those groups follow the cells' preferred head directions, and do the
same groups appear when the animal sleeps and no head direction drives the cells?
`bayesneuro.density.Ensembles` finds cell assemblies (Lopes-dos-Santos et al. 2013): the number of
eigenvalues of the correlation matrix above the Marchenko-Pastur edge, patterns by ICA, and an
activation strength over time. `compare_states` gives bootstrap intervals on the number of
ensembles and their size in wake, REM and slow-wave sleep, with an independent control.

**Part 2. Latents and behaviour.** The latents of a GPFA fitted to rat motor cortex (notebook 03)
move around the lever presses. How well, and how early, does the timing of the two presses predict
them? `bayesneuro.joint.LatentEncoder` regresses the latents on press-locked covariates with a
temporal basis, and can carry the latents' posterior uncertainty into the filters
(`uncertainty="message"`) instead of plugging in the posterior mean as if it were data
(`uncertainty="mean"`).

**Data.** (a) Head-direction cells: Peyrache, Lacroix, Petersen & Buzsáki (2015), *Nature
Neuroscience* 18:569-575, the lab's teaching excerpt `dataHD.mat` (10-ms counts in wake with the head
angle, in REM and in slow-wave sleep). (b) Motor cortex: 30 neurons recorded by Ashesh K. Dhawale in
Bence Ölveczky's lab during a two-press lever task, 1,266 trials of 2 s aligned to the first press at
0.5 s (the example data of `affinewarp`; cite Williams et al. 2020, *Neuron* 105:246-259, and
Dhawale et al. 2017, *eLife* 6:e27702). See `PROVENANCE.md` beside each data file.

`BAYESNEURO_FAST=1` (the test suite) uses 10 minutes of each brain state, fewer bootstrap refits,
300 motor-cortex trials in a shorter window and short EM fits. The markdown quotes the FAST run's
numbers where it must; the printed outputs are what counts in either mode.
"""),
    code(r"""
%matplotlib inline
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.io

import bayesneuro as bn
from bayesneuro import density
from bayesneuro.datasets import load_head_direction

FAST = os.environ.get("BAYESNEURO_FAST", "0") == "1"
BIN = 0.02  # seconds, both recordings
MINUTES = 10.0 if FAST else None  # head direction: minutes of each brain state (None = all)
N_BOOT = 20 if FAST else 100  # bootstrap refits per state in compare_states
N_SHIFT = 20 if FAST else 100  # time-shifted copies for an empirical eigenvalue null

DATA_DIR = Path(os.environ.get("BAYESNEURO_DATA", Path.cwd().parent.parent / "shared" / "data"))
HD_DIR = DATA_DIR / "head_direction_adn_peyrache"
MOTOR_FILE = DATA_DIR / "motor_cortex_rat_dhawale" / "motor_ctx_data.npz"
for f in (HD_DIR / "dataHD.mat", MOTOR_FILE):
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found; set BAYESNEURO_DATA to the shared data folder")
print("bayesneuro", bn.__version__, "| FAST =", FAST)
T_START = time.perf_counter()
"""),
    md(r"""
# Part 1. Ensembles of head-direction cells

## 1.1 Wake: counts, head angle and tuning curves

`load_head_direction` bins the wake recording at 20 ms within each valid-tracking segment and
carries the head angle as a covariate. The tuning curves are plain histograms (spikes per angle bin
over time spent in it); the preferred direction of a cell is the direction of the first circular
moment of its tuning curve, and the resultant length (0 to 1) says how sharply it is tuned.
"""),
    code(r"""
wake = load_head_direction(HD_DIR, bin_size=BIN)
if MINUTES is not None:
    wake = wake[: int(MINUTES * 60 / BIN)]
angle = np.asarray(wake.covariates)[:, 0]
counts_wake = np.asarray(wake.counts)
N_CELL = counts_wake.shape[1]
print(wake)

edges = np.linspace(0, 2 * np.pi, 37)  # 10-degree bins
centres = 0.5 * (edges[:-1] + edges[1:])
which = np.clip(np.digitize(angle, edges) - 1, 0, 35)
occupancy = np.bincount(which, minlength=36) * BIN  # seconds per angle bin
tuning = np.stack([np.bincount(which, weights=counts_wake[:, n], minlength=36) for n in range(N_CELL)]) / occupancy
moment = (tuning * np.exp(1j * centres)).sum(axis=1)
pref = np.mod(np.angle(moment), 2 * np.pi)  # preferred direction, radians
sharpness = np.abs(moment) / tuning.sum(axis=1)  # resultant length
order = np.argsort(pref)  # cells sorted by preferred direction

file_pref = scipy.io.loadmat(HD_DIR / "dataHD.mat", variable_names=["prefHD"])["prefHD"].ravel()
gap = np.degrees(np.abs(np.angle(np.exp(1j * (pref - file_pref)))))
print(f"preferred directions vs the file's prefHD: median difference {np.median(gap):.0f} deg, max {gap.max():.0f} deg")
print(pd.DataFrame({"preferred (deg)": np.degrees(pref).round(0), "resultant length": sharpness.round(2),
                    "peak rate (Hz)": tuning.max(axis=1).round(1)}).iloc[order].T.to_string())

fig, ax = plt.subplots(figsize=(9, 3.6))
im = ax.imshow(tuning[order] / tuning[order].max(axis=1, keepdims=True), aspect="auto", cmap="magma",
               extent=(0, 360, N_CELL - 0.5, -0.5), interpolation="nearest")
ax.set_yticks(range(N_CELL), [f"{c} ({np.degrees(pref[c]):.0f}°)" for c in order], fontsize=7)
ax.set_xlabel("head direction (deg)")
ax.set_ylabel("cell (preferred direction)")
ax.set_title("wake tuning curves, each scaled to its peak")
fig.colorbar(im, ax=ax, label="rate / peak rate")
plt.show()
"""),
    md(r"""
## 1.2 Assemblies in wake: how many, and which cells

The correlation matrix of $N$ independent neurons over $T$ bins has eigenvalues below the
Marchenko-Pastur edge $(1 + \sqrt{N/T})^2$ (for large $N$ and $T$); each eigenvalue above it counts
one assembly. That bound assumes independent **bins** as well as independent neurons. Spike counts
are autocorrelated in time (rates drift, cells burst), which spreads the eigenvalues of even
independent neurons a little beyond the edge. So we also compute an empirical null from the data
themselves: each cell's train shifted in time by a random amount (at least 10 s, circularly), which
keeps every cell's own temporal structure and destroys only the coordination between cells. The
95th percentile of the largest eigenvalue of those shifted copies is a stricter edge.
"""),
    code(r"""
def shifted_top_eigenvalues(counts, n_shift, seed, min_shift=500):
    # Largest correlation eigenvalue of copies with every cell shifted in time independently.
    rng = np.random.default_rng(seed)
    T = counts.shape[0]
    top = np.empty(n_shift)
    for i in range(n_shift):
        shifted = np.column_stack([np.roll(counts[:, n], rng.integers(min_shift, T - min_shift))
                                   for n in range(counts.shape[1])])
        top[i] = np.linalg.eigvalsh(np.corrcoef(shifted.T))[-1]
    return top


asm_wake = density.Ensembles("assemblies").fit(wake, key=1)
det = asm_wake.detail_
null_wake = np.quantile(shifted_top_eigenvalues(counts_wake, N_SHIFT, seed=2), 0.95)
print(f"Marchenko-Pastur edge {det.threshold:.3f}; time-shifted null (95%) {null_wake:.3f}")
print("largest eigenvalues:", np.round(det.eigenvalues[:7], 3).tolist())
print(f"assemblies above the MP edge: {asm_wake.n_ensembles_}; above the shifted null: "
      f"{int(np.sum(det.eigenvalues > null_wake))}")
"""),
    md(r"""
Each assembly is a unit-length weight vector over cells (signed so that its largest weight is
positive); its **members** are the cells with weight above $1/\sqrt{N}$. Below, the weights with the
cells sorted by preferred direction, and each assembly's members with their preferred directions.
"""),
    code(r"""
def circular_spread(angles):
    # Mean absolute angular distance (deg) over pairs of cells.
    a = np.asarray(angles)
    d = np.abs(np.angle(np.exp(1j * (a[:, None] - a[None, :]))))
    return np.degrees(d[np.triu_indices(len(a), 1)].mean()) if len(a) > 1 else np.nan


def member_table(ens):
    rows = []
    for k in range(ens.n_ensembles_):
        m = np.flatnonzero(np.asarray(ens.membership_)[:, k] > 0)
        mean_dir = np.degrees(np.mod(np.angle(np.exp(1j * pref[m]).mean()), 2 * np.pi))
        rows.append({"members": m.tolist(), "preferred (deg)": np.degrees(pref[m]).round(0).astype(int).tolist(),
                     "mean direction (deg)": round(mean_dir), "spread (deg)": round(circular_spread(pref[m]))})
    return pd.DataFrame(rows, index=pd.Index(range(ens.n_ensembles_), name="assembly"))


print(member_table(asm_wake).to_string())
K_WAKE = asm_wake.n_ensembles_
fig, axes = plt.subplots(K_WAKE, 1, figsize=(9, 1.3 * K_WAKE + 0.6), sharex=True, squeeze=False)
for k, ax in enumerate(axes[:, 0]):
    w = det.patterns[k][order]
    member = w > 1 / np.sqrt(N_CELL)
    ax.bar(np.arange(N_CELL), w, color=np.where(member, "C3", "0.7"))
    ax.axhline(1 / np.sqrt(N_CELL), color="k", lw=0.6, ls=":")
    ax.set_ylabel(f"#{k}", rotation=0, labelpad=12)
axes[-1, 0].set_xticks(range(N_CELL), [f"{np.degrees(pref[c]):.0f}°" for c in order], rotation=90, fontsize=7)
axes[-1, 0].set_xlabel("cells sorted by preferred direction")
axes[0, 0].set_title("wake assembly patterns (red: members, weight > 1/sqrt(N))")
plt.show()
"""),
    md(r"""
### Do assemblies follow preferred direction?

If cells group by their preferred direction, the members of an assembly should have closer
preferred directions than random groups of cells of the same sizes. The statistic is the mean, over
assemblies, of the members' mean pairwise angular distance; the null draws 10,000 sets of random
groups with the same sizes from the same 19 cells.

The pairwise view does not depend on any assembly method: the correlation of two cells' 20-ms
counts against the angular distance between their preferred directions.
"""),
    code(r"""
def grouping_test(ens, n_draw=10_000, seed=3):
    sizes = [int(s) for s in (np.asarray(ens.membership_) > 0).sum(axis=0) if s > 1]
    observed = np.mean([circular_spread(pref[np.asarray(ens.membership_)[:, k] > 0])
                        for k in range(ens.n_ensembles_) if (np.asarray(ens.membership_)[:, k] > 0).sum() > 1])
    rng = np.random.default_rng(seed)
    null = np.array([np.mean([circular_spread(pref[rng.choice(N_CELL, s, replace=False)]) for s in sizes])
                     for _ in range(n_draw)])
    return observed, null.mean(), (1 + np.sum(null <= observed)) / (1 + n_draw)


obs, null_mean, p = grouping_test(asm_wake)
print(f"wake: members' spread {obs:.0f} deg vs {null_mean:.0f} deg for random groups of the same sizes, "
      f"p = {p:.4f}")

pairs = np.triu_indices(N_CELL, 1)
pair_distance = np.degrees(np.abs(np.angle(np.exp(1j * (pref[:, None] - pref[None, :])))))[pairs]
corr_wake = np.corrcoef(counts_wake.T)[pairs]
"""),
    md(r"""
### When is an assembly active?

The activation strength $R_k(t) = z_t^\top P_k z_t$ (with the diagonal of $P_k = w_k w_k^\top$
removed) is large only when several members fire in the same bin. Plotted over a minute of wake
with the head angle: each assembly switches on when the head points near its members' preferred
directions (dashed lines). Averaged over the whole wake epoch by head direction, the activation
gives each assembly a tuning curve of its own.
"""),
    code(r"""
act = asm_wake.activity_.values  # (time, assembly)
table_wake = member_table(asm_wake)
show = slice(0, int(60 / BIN))
t_show = np.arange(act.shape[0])[show] * BIN
fig, axes = plt.subplots(K_WAKE + 1, 1, figsize=(11, 1.2 * K_WAKE + 2.2), sharex=True,
                         gridspec_kw={"height_ratios": [2] + [1] * K_WAKE})
axes[0].plot(t_show, np.degrees(angle[show]), "k.", ms=1)
axes[0].set_ylabel("head (deg)")
axes[0].set_ylim(0, 360)
for k in range(K_WAKE):
    direction = np.radians(table_wake.loc[k, "mean direction (deg)"])
    near = np.abs(np.angle(np.exp(1j * (angle[show] - direction)))) < np.radians(30)
    axes[0].axhline(np.degrees(direction), color=f"C{k}", ls="--", lw=1)
    axes[k + 1].fill_between(t_show, 0, 1, where=near, color=f"C{k}", alpha=0.15, lw=0,
                             transform=axes[k + 1].get_xaxis_transform())
    axes[k + 1].plot(t_show, act[show, k], color=f"C{k}", lw=0.7)
    axes[k + 1].set_ylabel(f"#{k}", rotation=0, labelpad=12)
axes[0].set_title("head direction; below, each assembly's activation strength (shaded: head within 30° "
                  "of its members' mean direction, dashed line above)", fontsize=9)
axes[-1].set_xlabel("time in the first wake minute (s)")
plt.show()

act_tuning = np.stack([np.bincount(which, weights=act[:, k], minlength=36) / np.bincount(which, minlength=36)
                       for k in range(K_WAKE)])
act_peak = np.degrees(centres[np.argmax(act_tuning, axis=1)])
offset = np.abs((act_peak - table_wake["mean direction (deg)"].values + 180) % 360 - 180)
print("activation peaks at (deg):", np.round(act_peak).astype(int).tolist(),
      "| members' mean direction:", table_wake["mean direction (deg)"].tolist(),
      "| difference (deg):", np.round(offset).astype(int).tolist())
fig, ax = plt.subplots(figsize=(6, 3))
for k in range(K_WAKE):
    ax.plot(np.degrees(centres), act_tuning[k], color=f"C{k}", label=f"assembly {k}")
ax.set_xlabel("head direction (deg)")
ax.set_ylabel("mean activation")
ax.legend(fontsize=7)
plt.show()
"""),
    md(r"""
## 1.3 Sleep: REM and slow-wave sleep

During sleep no head direction is sensed, yet Peyrache et al. (2015) found the cells' coordination
preserved. We bin each sleep state at 20 ms and cut it into 10-s blocks (the resampling units of the
bootstrap below). The tuning-based preferred directions come from wake.
"""),
    code(r"""
hd_sleep = scipy.io.loadmat(HD_DIR / "dataHD.mat", variable_names=["Qrem", "Qsws"])


def state_data(q):
    c = q.astype(np.int64)
    if MINUTES is not None:
        c = c[: int(MINUTES * 60 / 0.01)]
    c = c[: (c.shape[0] // 2) * 2].reshape(-1, 2, c.shape[1]).sum(axis=1)  # 10 ms -> 20 ms
    per_block = int(10.0 / BIN)
    c = c[: (c.shape[0] // per_block) * per_block]
    return bn.SpikeData.from_counts(c, bin_size=BIN, trial_ids=np.arange(c.shape[0]) // per_block)


sleep = {"REM": state_data(hd_sleep["Qrem"]), "SWS": state_data(hd_sleep["Qsws"])}
asm_sleep, null_sleep = {}, {}
for name, d in sleep.items():
    asm_sleep[name] = density.Ensembles("assemblies").fit(d, key=4)
    null_sleep[name] = np.quantile(shifted_top_eigenvalues(np.asarray(d.counts), N_SHIFT, seed=5), 0.95)
    e = asm_sleep[name]
    sim = density.ensemble_similarity(asm_wake, e)
    print(f"--- {name}: {d.n_time} bins; {e.n_ensembles_} assemblies above the MP edge "
          f"({e.detail_.threshold:.3f}), {int(np.sum(e.detail_.eigenvalues > null_sleep[name]))} above the "
          f"shifted null ({null_sleep[name]:.3f})")
    print(member_table(e).to_string())
    obs, null_mean, p = grouping_test(e)
    print(f"members' spread {obs:.0f} deg vs {null_mean:.0f} deg for random groups, p = {p:.4f}")
    print(f"similarity to wake: adjusted Rand {sim['adjusted_rand']:.2f}; best |cosine| of each wake pattern: "
          f"{np.round(sim['pattern_similarity'], 2).tolist()}")
"""),
    code(r"""
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
spectra = {"wake": (asm_wake, null_wake), **{k: (asm_sleep[k], null_sleep[k]) for k in sleep}}
for i, (name, (e, nul)) in enumerate(spectra.items()):
    ev = e.detail_.eigenvalues
    axes[0].plot(np.arange(1, len(ev) + 1), ev, "o-", ms=3, color=f"C{i}", label=name)
    axes[0].axhline(nul, color=f"C{i}", ls=":", lw=1)
axes[0].axhline(asm_wake.detail_.threshold, color="k", ls="--", lw=1, label="MP edge (wake)")
axes[0].set_xlabel("rank")
axes[0].set_ylabel("eigenvalue of the correlation matrix")
axes[0].set_title("dotted: 95% of the time-shifted null")
axes[0].legend(fontsize=8)
for i, (name, counts) in enumerate([("wake", counts_wake)] + [(k, np.asarray(v.counts)) for k, v in sleep.items()]):
    c = np.corrcoef(counts.T)[pairs]
    rho = pd.Series(c).corr(pd.Series(pair_distance), method="spearman")
    axes[1].plot(pair_distance, c, ".", ms=4, color=f"C{i}", alpha=0.6, label=f"{name} (Spearman {rho:.2f})")
axes[1].axhline(0, color="k", lw=0.6)
axes[1].set_xlabel("distance between preferred directions (deg)")
axes[1].set_ylabel("correlation of 20-ms counts")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
"""),
    md(r"""
## 1.4 Wake vs REM vs SWS with intervals: `compare_states`

`compare_states(Ensembles(), {...})` fits the assemblies in each state and, since `Ensembles` has
no posterior, refits them on bootstrap resamples of each state's units (wake: its tracking
segments; sleep: the 10-s blocks), giving intervals for `n_ensembles`, `fraction_in_ensembles`
(cells in at least one assembly), `mean_size` and `co_membership` (mean over pairs of cells of
sharing an assembly). As a negative control, the fourth state is SWS with each cell's bins
permuted independently: the same rates, no coordination and no temporal structure, where the
count should be 0. Differences are state minus wake.
"""),
    code(r"""
rng = np.random.default_rng(6)
sws_counts = np.asarray(sleep["SWS"].counts)
control = np.column_stack([rng.permutation(sws_counts[:, n]) for n in range(N_CELL)])
states = {"wake": wake, **sleep,
          "SWS, cells permuted": bn.SpikeData.from_counts(control, bin_size=BIN,
                                                           trial_ids=np.asarray(sleep["SWS"].trial_ids))}
t0 = time.perf_counter()
cmp = density.compare_states(density.Ensembles("assemblies"), states, key=7, n_boot=N_BOOT, progress=False)
print(f"compare_states: {time.perf_counter() - t0:.0f} s")
stat_names = ["n_ensembles", "fraction_in_ensembles", "mean_size", "co_membership"]
summary = cmp.summary().query("statistic in @stat_names").dropna(axis=1, how="all")
print(summary.round(2).to_string(index=False))
diffs = cmp.differences(prob=0.9).query("statistic in @stat_names").dropna(axis=1, how="all")
print(diffs.round(2).to_string(index=False))
print("full-data fits (no resampling), assemblies above the MP edge:",
      {name: m.n_ensembles_ for name, m in cmp.models.items()})

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for ax, name in zip(axes, ["n_ensembles", "fraction_in_ensembles", "co_membership"]):
    s = summary.query("statistic == @name").set_index("state").loc[list(states)]
    x = np.arange(len(s))
    ax.errorbar(x, s["mean"], yerr=[np.maximum(s["mean"] - s["lower"], 0), np.maximum(s["upper"] - s["mean"], 0)],
                fmt="o", capsize=4, color="k")
    ax.set_xticks(x, s.index, rotation=20, fontsize=8)
    ax.set_title(name)
fig.suptitle("bootstrap mean and 90% interval per state")
plt.tight_layout()
plt.show()
"""),

    md(r"""
**Reading the bootstrap.** A bootstrap resample repeats some blocks and drops others, so a refit
sees fewer *distinct* bins than its length $T$, while the Marchenko-Pastur edge is computed from
$T$: the edge is a little too low and the count is biased upwards. The permuted control shows the
size of that bias: its full-data fit has no assembly (printed above), yet its refits find one or
two. The count intervals are therefore best read against the control, not against 0. The
differences from wake and the control's values printed above are what the statements below rest on.

## 1.5 What part 1 shows

Numbers in brackets are from the FAST run (the first 10 minutes of each state); with all the data
the counts above the Marchenko-Pastur edge are 5 (wake), 4 (REM) and 6 (SWS). Read your own outputs
for the run you made.

- **Wake has a handful of assemblies** [5 eigenvalues above the MP edge of 1.05; 4 above the
  stricter time-shifted null of 1.14, the fifth (1.053) sits at the edge]. Two to four cells each;
  about three quarters of the cells belong to at least one.
- **They follow preferred head direction.** Members of an assembly have preferred directions
  about 20° apart on average, against about 80° for random groups of the same sizes
  [p = 0.0001, the smallest value 10,000 draws can give]. Each assembly's activation switches on
  when the head points near its members' directions: its activation-by-direction curve peaks
  within a few degrees of the members' mean direction [4 of 5 within 5°; the two-cell assembly
  18° off]. The pairwise correlations fall with the distance between preferred directions in all
  three states [Spearman -0.76 wake, -0.73 REM, -0.72 SWS]. This is the internally organised
  structure of Peyrache et al. (2015), seen through assemblies.
- **Sleep keeps the same groups.** REM and SWS find assemblies whose members again have close
  preferred directions (from wake tuning), and most wake patterns have a close match in sleep
  [best |cosine| of 0.89 or more for 4 of 5 wake patterns in REM, 0.83 or more for 3 of 5 in SWS;
  adjusted Rand index of the partitions 0.43 REM, 0.55 SWS]. The two-cell wake assembly has no
  close counterpart in either state [0.34, 0.50], and SWS regroups the cells around 90-200°
  differently from wake.
- **Wake vs sleep, with intervals.** The number of assemblies differs little between the states
  [REM - wake -0.55, 90% interval -1 to 0; SWS - wake +0.35, 0 to 1]: an integer count with a
  one-assembly resolution does not separate them. In SWS more cells belong to an assembly and pairs
  of cells share one more often [fraction in assemblies +0.25, 90% 0.21 to 0.32; co-membership
  +0.07, 0.03 to 0.12], i.e. SWS assemblies are larger, not more numerous. The permuted control
  separates clearly from wake [-3.05 assemblies, 90% -4 to -2], which is the check that
  `compare_states` sees a structured state against an independent one.
- **Caveats.** The MP count is not robust at its edge: REM's own temporal structure lifts the
  shifted null well above the MP edge [1.19 vs 1.05; 3 of REM's 4 assemblies survive it], so an
  assembly with an eigenvalue just above the edge may be a slow co-fluctuation rather than
  synchronous firing. Preferred directions come from 10-degree histograms of wake; the sleep
  states have no behaviour to check them against. The bootstrap resamples 10-s blocks (sleep) or
  tracking segments (wake), which treats blocks as independent.
"""),
    md(r"""
# Part 2. What the motor-cortex latents encode about the lever presses

## 2.1 Trials, press times and a GPFA on training trials

As in notebook 03: 20-ms bins of each trial's analysis window, neurons firing below 1 spike/s
dropped, each trial labelled by its index in the file. Each trial also carries two covariates: an
impulse (1 in one bin, 0 elsewhere) at the first press and one at the second press, when it falls
inside the window. A random 70% of the trials train the GPFA and the encoders; the other 30% are held
out for scoring.
"""),
    code(r"""
if FAST:
    N_TRIAL, WINDOW, N_LATENT, GPFA_ITER = 200, (0.2, 1.6), 3, 30
    N_BASIS, WINDOW_LAGS, LEAD = 6, 30, 10  # filters over lags -0.2 s .. +0.38 s
else:
    N_TRIAL, WINDOW, N_LATENT, GPFA_ITER = None, (0.0, 2.0), 3, 200
    N_BASIS, WINDOW_LAGS, LEAD = 10, 50, 15  # filters over lags -0.3 s .. +0.68 s

raw = np.load(MOTOR_FILE, allow_pickle=False)
N_FILE, N_MC = len(raw["tap1"]), int(raw["neuron_ids"].max()) + 1
TAP1, TAP2 = raw["tap1"] / 1000.0, raw["tap2"] / 1000.0  # press times, s within the trial
n_bin = int(round((WINDOW[1] - WINDOW[0]) / BIN))
bin_index = np.floor((raw["spiketimes"] / 1000.0 - WINDOW[0]) / BIN + 1e-9).astype(np.int64)
inside = (bin_index >= 0) & (bin_index < n_bin)
mc_counts = np.zeros((N_FILE, n_bin, N_MC), dtype=np.int64)
np.add.at(mc_counts, (raw["trial_ids"][inside], bin_index[inside], raw["neuron_ids"][inside]), 1)
rate_all = np.bincount(raw["neuron_ids"], minlength=N_MC) / (N_FILE * 2.0)
keep_neurons = np.flatnonzero(rate_all >= 1.0)

use = np.arange(N_FILE) if N_TRIAL is None else np.sort(np.random.default_rng(0).choice(N_FILE, N_TRIAL, replace=False))
press = np.zeros((N_FILE, n_bin, 2))
for k, t in enumerate((TAP1, TAP2)):
    b = np.floor((t - WINDOW[0]) / BIN).astype(np.int64)
    ok = (b >= 0) & (b < n_bin)
    press[np.flatnonzero(ok), b[ok], k] = 1.0
print(f"{len(use)} trials x {n_bin} bins, {keep_neurons.size} neurons; press 2 inside the window in "
      f"{int(press[use, :, 1].sum())} of {len(use)} trials")
mc = bn.SpikeData.from_trials(list(mc_counts[use][:, :, keep_neurons]), bin_size=BIN, neuron_ids=keep_neurons,
                              trial_ids=use, covariates=list(press[use]), feature_names=["press 1", "press 2"])
mc_train, mc_test, _ = mc.split(by="trials", fractions=(0.7, 0.3), key=0)
print("train:", mc_train)
print("test: ", mc_test)

t0 = time.perf_counter()
gpfa = bn.GPFA(N_LATENT).fit(mc_train, max_iter=GPFA_ITER, progress=False)
print(f"GPFA, {N_LATENT} latents: {gpfa.n_iter_} EM iterations in {time.perf_counter() - t0:.0f} s; "
      f"timescales (ms) {np.round(1000 * gpfa.timescales_).tolist()}")
"""),
    md(r"""
## 2.2 The latents' posterior and their per-bin messages

`latent_posterior(gpfa, data)` gives, for every bin, the GPFA posterior of the (orthonormalised)
latents (`mean`, `sd`: what all bins of the trial say, smoothed by the GP prior) and the Gaussian
**message** of that bin alone (`message_mean`, `message_precision`: what its spikes say). The
encoder models the messages, so the GP prior, which knows nothing of the presses, does not shrink
what it is fitted to.
"""),
    code(r"""
from bayesneuro.joint import LatentEncoder, latent_posterior

post_train = latent_posterior(gpfa, mc_train)
post_test = latent_posterior(gpfa, mc_test)
print(post_train)
msg_sd = np.sqrt(1.0 / np.einsum("tll->tl", post_train.message_precision))  # marginal-ish: 1/sqrt(J_ll)
print("median posterior SD per latent:", np.round(np.median(post_train.sd, axis=0), 3).tolist())
print("median message SD per latent (1/sqrt of the diagonal precision):", np.round(np.median(msg_sd, axis=0), 3).tolist())

trial = int(mc_test.trials[0])
rows = np.flatnonzero(post_test.segment_ids == trial)
t_rel = WINDOW[0] + (np.arange(rows.size) + 0.5) * BIN
fig, axes = plt.subplots(1, N_LATENT, figsize=(4 * N_LATENT, 3), sharex=True)
for l, ax in enumerate(axes):
    ax.plot(t_rel, post_test.message_mean[rows, l], ".", color="0.6", ms=3, label="message (one bin)")
    m, s = post_test.mean[rows, l], post_test.sd[rows, l]
    ax.plot(t_rel, m, color="C0", label="posterior mean")
    ax.fill_between(t_rel, m - 1.64 * s, m + 1.64 * s, color="C0", alpha=0.3, lw=0)
    ax.axvline(TAP1[trial], color="k", ls="--", lw=0.8)
    ax.axvline(TAP2[trial], color="k", ls=":", lw=1)
    ax.set_title(f"latent {l}, test trial {trial}")
    ax.set_xlabel("time in trial (s)")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()
"""),
    md(r"""
## 2.3 Press-locked filters, with and without the latents' uncertainty

Each latent is modelled as an intercept plus the two press impulses filtered through a raised-cosine
basis, plus an AR(1) residual (the latents' own slow variation). With `lead` > 0 the filters start
before the press (negative lags), so the latents may move ahead of it. Laplace approximations give
90% bands.

- `uncertainty="message"`: the data are the per-bin messages with their precision; a Kalman filter
  over the AR(1) residual gives the exact likelihood for GPFA.
- `uncertainty="mean"`: the posterior means are treated as observed latents, the usual plug-in.
"""),
    code(r"""
basis = bn.bases.RaisedCosineLinear(N_BASIS, window=WINDOW_LAGS)
encoders = {}
for mode in ("message", "mean"):
    t0 = time.perf_counter()
    encoders[mode] = LatentEncoder(basis, lead=LEAD).fit(post_train, mc_train, uncertainty=mode, method="laplace",
                                                          key=11, progress=False)
    e = encoders[mode]
    print(f"{mode:8s} fitted in {time.perf_counter() - t0:.0f} s; residual SD {np.round(e.residual_sd_, 3).tolist()},"
          f" AR(1) coefficient {np.round(e.ar_coef_, 3).tolist()}")

filt = {mode: e.filters(prob=0.9) for mode, e in encoders.items()}
lags = filt["message"]["lag"].values
fig, axes = plt.subplots(N_LATENT, 2, figsize=(10, 2.3 * N_LATENT), sharex=True, squeeze=False)
for l in range(N_LATENT):
    for f, feat in enumerate(["press 1", "press 2"]):
        ax = axes[l, f]
        for mode, color in (("message", "C0"), ("mean", "C3")):
            band = filt[mode].sel(latent=filt[mode]["latent"].values[l], feature=feat)
            ax.plot(lags, band["mean"], color=color, label=f'uncertainty="{mode}"')
            ax.fill_between(lags, band["lower"], band["upper"], color=color, alpha=0.25, lw=0)
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5, ls="--")
        ax.set_title(f"latent {l}, {feat}", fontsize=9)
for ax in axes[-1]:
    ax.set_xlabel("time from the press (s); < 0: before it")
axes[0, 0].legend(fontsize=7)
plt.tight_layout()
plt.show()

width = {mode: (f["upper"] - f["lower"]).mean(("feature", "lag")).values for mode, f in filt.items()}
print("mean width of the 90% bands per latent, message:", np.round(width["message"], 3).tolist(),
      "| mean:", np.round(width["mean"], 3).tolist(),
      "| ratio mean/message:", np.round(width["mean"] / width["message"], 2).tolist())
peak = {mode: np.abs(f["mean"]).max("lag").values for mode, f in filt.items()}  # (latent, feature)
print(f"largest |filter| smaller with the plug-in in {int(np.sum(peak['mean'] < peak['message']))} of "
      f"{peak['mean'].size} (latent, press) pairs; ratio mean/message:", np.round(peak["mean"] / peak["message"], 2).tolist())
"""),
    md(r"""
When do the filters move? For each latent and press, the earliest lag at which the 90% band of the
message model excludes 0, and the lag of the filter's largest magnitude.
"""),
    code(r"""
f = filt["message"]
rows = []
for lat in f["latent"].values:
    for feat in ["press 1", "press 2"]:
        b = f.sel(latent=lat, feature=feat)
        sig = (b["lower"].values > 0) | (b["upper"].values < 0)
        rows.append({"latent": lat, "press": feat,
                     "first lag with band excluding 0 (s)": lags[np.argmax(sig)] if sig.any() else np.nan,
                     "lag of largest |filter| (s)": lags[np.argmax(np.abs(b["mean"].values))],
                     "largest |filter|": np.abs(b["mean"].values).max()})
print(pd.DataFrame(rows).round(3).to_string(index=False))
"""),
    md(r"""
## 2.4 Held-out trials

`score` is the log predictive density of the held-out messages per bin (nats/bin); it includes the
AR(1) residual's one-step prediction, so we compare against an encoder with no press covariates
(intercept and AR(1) only, fitted the same way). `evaluate` adds, per latent, the share of the
variance of the held-out posterior means explained by the press filters alone (`r2`).
"""),
    code(r"""
no_press = LatentEncoder(None, lead=0).fit(post_train, np.zeros((post_train.n_time, 1)), feature_names=["none"],
                                           uncertainty="message", method="laplace", key=12, progress=False)
rows = {"AR(1) only, no presses": {"nats/bin (test)": no_press.score(post_test, np.zeros((post_test.n_time, 1)))}}
for mode, e in encoders.items():
    ev = e.evaluate(post_test, mc_test)
    rows[f'presses, uncertainty="{mode}"'] = {"nats/bin (test)": ev["log_predictive"],
                                             **{f"r2 latent {l}": r for l, r in enumerate(ev["r2"])}}
held_out = pd.DataFrame(rows).T
print(held_out.round(4).to_string())
gain = held_out["nats/bin (test)"].iloc[1] - held_out["nats/bin (test)"].iloc[0]
print(f"gain of the press filters (message model) over AR(1) only: {gain:.4f} nats/bin over {post_test.n_time} test bins")
print(f"notebook ran in {time.perf_counter() - T_START:.0f} s")
"""),
    md(r"""
## 2.5 What part 2 shows

Numbers in brackets are from the FAST run (200 trials, a 1.4-s window from 0.3 s before the first
press, 30 EM iterations, filters from 0.2 s before to 0.38 s after each press); the full run uses
all trials, the whole 2 s and longer filters.

- **Uncertainty changes the answer, not only the bands.** Plugging in the posterior means gives
  bands several times narrower [mean band width 0.17-0.21 of the message model's] and smaller
  filters [the largest |filter| is smaller for all 6 latent-press pairs]: the posterior means are shrunk towards the GP prior, which
  knows nothing of the presses, and their errors are smooth in time, which the plug-in's AR(1)
  residual absorbs [AR coefficient 0.99 vs 0.93]. On held-out trials the plug-in encoder predicts
  the messages worse than an encoder without the presses [-1.733 vs -1.693 nats/bin], while the
  message encoder is better than both [-1.608, a gain of 0.085 nats/bin over the AR(1)-only
  encoder]. The press filters explain part of the held-out posterior means [r2 0.46, 0.44, 0.15
  for the three latents with the message encoder; 0.08, 0.23, 0.23 with the plug-in, which does
  better on the third latent by this measure only].
- **Press 1 cannot be separated from time in the trial.** The first press is at 0.5 s in every
  trial, so its filter is the trial-locked average of the latents, whatever causes it.
- **Press 2 varies from trial to trial** (inter-press intervals 0.25-1.19 s), so its filter is
  identifiable. Some latents move before it: the message model's band excludes 0 already at the
  earliest lag modelled for latents 0 and 2 [0.2 s and 0.18 s before press 2], and latent 1 rises
  after it [peak 0.24 s after]. Treat the anticipation with care: a slow drift that follows press 1
  beyond the end of its filter window also precedes press 2, and the linear model may credit it to
  press 2. Longer press-1 filters (the full run) or a covariate for time since press 1 would
  separate them.
- **Caveats.** The GPFA is fitted by a fixed number of EM iterations and its latents are defined
  only up to rotation (we use its orthonormalised latents); the filters are in those units. The
  encoder's bands are Laplace approximations conditional on the fitted GPFA: the uncertainty of
  the GPFA's own parameters is not carried.

**References.** Lopes-dos-Santos V, Ribeiro S, Tort ABL (2013). Detecting cell assemblies in large
neuronal populations. *J. Neurosci. Methods* 220:149-166. Peyrache A, Khamassi M, Benchenane K,
Wiener SI, Battaglia FP (2009). Replay of rule-learning related neural patterns in the prefrontal
cortex during sleep. *Nat. Neurosci.* 12:919-926. Peyrache A, Lacroix MM, Petersen PC, Buzsáki G
(2015). Internally organized mechanisms of the head direction sense. *Nat. Neurosci.* 18:569-575.
Yu BM et al. (2009). Gaussian-process factor analysis for low-dimensional single-trial analysis of
neural population activity. *J. Neurophysiol.* 102:614-635. Data: Williams AH et al. (2020),
*Neuron* 105(2):246-259; Dhawale AK et al. (2017), *eLife* 6:e27702.
"""),
]


NOTEBOOKS = {"01_getting_started.ipynb": GETTING_STARTED, "02_glm_retina.ipynb": GLM_RETINA,
             "03_latent_motor_cortex.ipynb": LATENT_MOTOR, "04_decoding_head_direction.ipynb": DECODING_HD,
             "05_density_motor_cortex_and_sleep.ipynb": DENSITY, "06_calibration_real_data.ipynb": CALIBRATION,
             "07_ensembles_and_latent_encoding.ipynb": ENSEMBLES_LATENT}


def build(name: str, cells: list) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):  # stable ids: rebuilding does not churn the files
        cell.id = f"cell-{i:03d}"
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
