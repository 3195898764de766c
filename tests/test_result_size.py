"""Result files stay small by default: the pointwise log-likelihood and the GLM's filters in time
(derived from the basis weights) are stored only when asked, and the CLI stores draws in float32.

A 30-neuron GLM on 200 trials of 100 bins, fitted by Laplace (1000 draws) through the CLI's
configuration path, used to write a ~165 MB netCDF (the log-likelihood of every draw and time
bin); with coupling filters (1000 SVI draws), a 92.6 MB one (72 MB of them the 30 x 30 x 10
coupling filters in time, 21.6 MB the float64 coupling weights). The defaults must be under
20 MB, and asking for everything must store it (``az.loo`` works on the loaded file).
"""

import os
import textwrap

import arviz as az
import jax
import numpy as np
import pytest

from bayesneuro import io
from bayesneuro.bases import RaisedCosineLog
from bayesneuro.cli import main, run_fit
from bayesneuro.config import ConfigError, parse_config

BIN = 0.01
LIMIT_MB = 20.0


def _spike_times(n_neuron: int, n_trial: int, trial_s: float = 1.0, seed: int = 0):
    """Inhomogeneous Poisson spike times: a rate modulated within each 1 s trial, 0.5 s gaps."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(5.0, 15.0, n_neuron)
    starts = np.arange(n_trial) * (trial_s + 0.5)
    times, units = [], []
    for n in range(n_neuron):
        for t0 in starts:
            # thinning: candidate spikes at the peak rate, kept with probability rate / peak
            peak = 2.0 * base[n]
            k = rng.poisson(peak * trial_s)
            cand = np.sort(rng.uniform(0.0, trial_s, k))
            rate = base[n] * (1.0 + 0.8 * np.sin(2 * np.pi * cand / trial_s + n))
            keep = cand[rng.uniform(size=k) < rate / peak]
            times.append(t0 + keep)
            units.append(np.full(keep.size, n))
    intervals = np.stack([starts, starts + trial_s], axis=1)
    return np.concatenate(times), np.concatenate(units), intervals


def _project(folder, *, n_neuron, n_trial, output="", fit_options="", method="laplace", coupling=False):
    times, units, intervals = _spike_times(n_neuron, n_trial)
    np.savez(folder / "rec.npz", spike_times=times, unit_ids=units, trial_intervals=intervals)
    cfg = folder / "fit.toml"
    cfg.write_text(textwrap.dedent(f"""\
        [data]
        path = "rec.npz"
        bin_size = {BIN}

        [model]
        kind = "glm"
        options = {{ coupling = {str(coupling).lower()}, history_basis = {{ type = "RaisedCosineLog", n_basis = 3, window = 10 }} }}

        [fit]
        method = "{method}"
        {fit_options}

        [output]
        name = "fit"
        {output}
        """))
    return cfg


@pytest.mark.slow  # ~1 min on 2 busy cores: a Laplace fit of 30 neurons x 20000 bins
def test_cli_glm_result_is_small_by_default(tmp_path, capsys):
    cfg = _project(tmp_path, n_neuron=30, n_trial=200)
    assert main(["fit", str(cfg), "--quiet"]) == 0
    nc = tmp_path / "results" / "fit.nc"
    size_mb = os.path.getsize(nc) / 1e6
    assert size_mb < LIMIT_MB, f"{nc.name} is {size_mb:.1f} MB by default"
    # the CLI says how big the file is
    err = capsys.readouterr().err
    assert f"wrote {nc} ({size_mb:.1f} MB)" in err
    idata = io.load(nc)
    assert "log_likelihood" not in idata.groups()
    post = idata.posterior
    # every draw is kept (small by leaving out the log-likelihood, not by thinning)
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    assert n_chain * n_draw == 1000
    assert post["bias"].shape == (n_chain, n_draw, 30)
    assert idata.observed_data["counts"].shape == (20000, 30)
    # what az.summary and the report need is there
    table = az.summary(idata, var_names=["bias"], kind="stats")
    assert len(table) == 30
    html = (tmp_path / "results" / "fit.html").read_text()
    assert "<h2>Summary</h2>" in html and "bias[0]" in html


def _filters_from_weights(weights, basis):
    """Coupling filters in time rebuilt from saved basis weights ``(chain, draw, source, basis,
    neuron)``: ``(chain, draw, neuron, source, lag)``, the self-coupling zero (as documented)."""
    filt = np.einsum("lb,cdsbn->cdnsl", basis.matrix(), np.asarray(weights, dtype=np.float64))
    idx = np.arange(filt.shape[2])
    filt[:, :, idx, idx, :] = 0.0
    return filt


@pytest.mark.slow  # ~2.5 min on 2 busy cores: SVI of a coupled 30-neuron GLM, 1000 draws and the report
def test_cli_coupled_glm_result_is_small_by_default(tmp_path):
    # The default number of draws (1000). SVI with few steps: the size of the file does not
    # depend on how well the ELBO converged. 50 trials (5,000 bins): the coupling weights of
    # 1000 draws are 10.8 MB in float32, the filters in time would add 36 MB, so the limit
    # still tells a default that stores them from one that does not.
    cfg = _project(tmp_path, n_neuron=30, n_trial=50, method="svi", coupling=True,
                   fit_options="options = { num_steps = 100 }")
    run = run_fit(cfg, progress=False)
    nc = run["nc"]
    size_mb = os.path.getsize(nc) / 1e6
    # before: 92.6 MB (72 MB of coupling filters in time, all draws in float64)
    assert size_mb < LIMIT_MB, f"{nc.name} is {size_mb:.1f} MB by default"
    idata = io.load(nc)
    post = idata.posterior
    # the parameters, every draw, in float32; the filters in time are derived, not stored
    assert set(post.data_vars) == {"bias", "history_weights", "coupling_weights"}
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    assert n_chain * n_draw == 1000
    w = post["coupling_weights"]
    assert w.dims == ("chain", "draw", "source", "coupling_basis", "neuron")
    assert w.shape == (n_chain, n_draw, 30, 3, 30) and w.dtype == np.float32
    # the filters rebuilt from the saved weights and the basis are the fitted model's, to
    # float32 rounding
    glm = run.model
    ref = glm.filter_draws()["coupling"].transpose("chain", "draw", "neuron", "source", "coupling_lag")
    rebuilt = _filters_from_weights(w.values, RaisedCosineLog(3, window=10))
    scale = np.abs(ref.values).max()
    np.testing.assert_allclose(rebuilt, ref.values, rtol=1e-6, atol=1e-6 * scale)
    assert not np.allclose(rebuilt, 0.0)
    # the report still draws the filters (from the fitted model in memory)
    html = run["html"].read_text()
    assert "GLM filters" in html and "coupling_weights[0, 0, 0]" in html


@pytest.mark.slow  # ~10 s on 2 busy cores: two Laplace fits through the CLI
def test_everything_on_request(tmp_path):
    """``filters = true``, ``log_likelihood = true`` and ``dtype = "float64"`` store it all."""
    opts = "options = { num_samples = 200 }"
    small = _project(tmp_path, n_neuron=3, n_trial=20, coupling=True, fit_options=opts,
                     output='report = "none"')
    default = run_fit(small, progress=False)
    full_cfg = small.with_name("all.toml")
    full_cfg.write_text(small.read_text().replace(
        'name = "fit"', 'name = "all"\nfilters = true\nlog_likelihood = true\ndtype = "float64"'))
    everything = run_fit(full_cfg, progress=False)
    lean, full = io.load(default["nc"]), io.load(everything["nc"])
    assert set(lean.posterior.data_vars) == {"bias", "history_weights", "coupling_weights"}
    assert lean.posterior["coupling_weights"].dtype == np.float32
    assert "log_likelihood" not in lean.groups()
    assert set(full.posterior.data_vars) == {"bias", "history_weights", "coupling_weights",
                                              "history_filter", "coupling_filter"}
    for name, da in full.posterior.data_vars.items():
        assert da.dtype == np.float64, name
    ll = full.log_likelihood["counts"]
    assert ll.dtype == np.float64 and ll.shape == (4, 50, 2000)
    assert np.isfinite(az.loo(full).elpd_loo)
    # the stored filters are the fitted model's, and those rebuilt from the weights
    glm = everything.model
    ref = glm.filter_draws()
    np.testing.assert_array_equal(full.posterior["coupling_filter"].values, ref["coupling"].values)
    np.testing.assert_array_equal(full.posterior["history_filter"].values, ref["history"].values)
    rebuilt = _filters_from_weights(full.posterior["coupling_weights"].values, RaisedCosineLog(3, window=10))
    np.testing.assert_allclose(rebuilt, full.posterior["coupling_filter"].values, rtol=1e-12, atol=1e-12)
    # same fit (same seed): the lean file holds the same weights, rounded to float32
    np.testing.assert_allclose(lean.posterior["coupling_weights"].values,
                               full.posterior["coupling_weights"].values, rtol=1e-6, atol=1e-9)
    assert os.path.getsize(everything["nc"]) > 4 * os.path.getsize(default["nc"])


@pytest.mark.slow  # ~10 s on 2 busy cores: a float32 Laplace fit, compiled afresh
def test_glm_to_inference_data_filters_option():
    """Python: the filters in time only with ``filters=True``, at the fit's precision."""
    from bayesneuro import PoissonGLM, SpikeData

    rng = np.random.default_rng(1)
    data = SpikeData.from_counts(rng.poisson(0.1, size=(3000, 3)), bin_size=BIN)
    glm = PoissonGLM(history_basis=RaisedCosineLog(3, window=10), coupling=True)
    with jax.enable_x64(False):  # a float32 fit, as JAX runs by default
        glm.fit(data, method="laplace", key=0, num_samples=100, progress=False)
        lean = glm.to_inference_data(log_likelihood=False)
        full = glm.to_inference_data(log_likelihood=False, filters=True)
        draws = glm.filter_draws()
    assert glm.result_.samples["coupling_weights"].dtype == np.float32
    assert set(lean.posterior.data_vars) == {"bias", "history_weights", "coupling_weights"}
    for name in ("history", "coupling"):
        stored = full.posterior[f"{name}_filter"]
        # stored at the precision of the draws they come from, not upcast to float64
        assert stored.dtype == np.float32, (name, stored.dtype)
        np.testing.assert_allclose(stored.values, draws[name].values, rtol=1e-6, atol=1e-7)


def test_log_likelihood_on_request_works_with_loo(tmp_path, capsys):
    cfg = _project(tmp_path, n_neuron=3, n_trial=20, fit_options="options = { num_samples = 200 }",
                   output='log_likelihood = true\nreport = "none"')
    assert main(["fit", str(cfg), "--quiet"]) == 0
    nc = tmp_path / "results" / "fit.nc"
    idata = io.load(nc)
    assert "log_likelihood" in idata.groups()
    ll = idata.log_likelihood["counts"]
    assert ll.dims == ("chain", "draw", "time")
    assert ll.sizes["chain"] * ll.sizes["draw"] == 200 and ll.sizes["time"] == 2000
    assert ll.dtype == np.float32  # the default precision of stored draws
    loo = az.loo(idata)
    # in-sample lppd = elpd_loo + p_loo, and p_loo is about the number of parameters
    # (3 neurons x (bias + 3 history weights) = 12)
    values = ll.values.reshape(200, 2000).astype(np.float64)
    lppd = float(np.sum(np.logaddexp.reduce(values, axis=0) - np.log(200)))
    np.testing.assert_allclose(loo.elpd_loo + loo.p_loo, lppd, rtol=1e-6)
    assert 6 < loo.p_loo < 24


def test_float32_output(tmp_path):
    cfg = _project(tmp_path, n_neuron=3, n_trial=20, fit_options="options = { num_samples = 200 }",
                   output='log_likelihood = true\ndtype = "float32"\nfilters = true\nreport = "none"')
    assert main(["fit", str(cfg), "--quiet"]) == 0
    idata = io.load(tmp_path / "results" / "fit.nc")
    assert idata.log_likelihood["counts"].dtype == np.float32
    assert idata.posterior["bias"].dtype == np.float32
    assert idata.posterior["history_filter"].dtype == np.float32
    assert np.isfinite(az.loo(idata).elpd_loo)


@pytest.mark.parametrize(
    "output, words",
    [
        ({"log_likelihod": True}, "output.log_likelihod: unknown key; did you mean 'log_likelihood'?"),
        ({"log_likelihood": "yes"}, "output.log_likelihood: must be true or false"),
        ({"dtype": "float16"}, "output.dtype: unknown dtype 'float16'"),
        ({"dtyp": "float32"}, "did you mean 'dtype'?"),
        ({"filter": True}, "output.filter: unknown key; did you mean 'filters'?"),
        ({"filters": 1}, "output.filters: must be true or false"),
    ],
)
def test_output_keys_are_checked(tmp_path, output, words):
    np.savez(tmp_path / "rec.npz", counts=np.ones((4, 2)), bin_size=BIN)
    raw = {"data": {"path": "rec.npz"}, "model": {"kind": "glm"}, "output": output}
    with pytest.raises(ConfigError, match=None) as err:
        parse_config(raw, root=tmp_path)
    assert words in str(err.value)


def test_output_defaults(tmp_path):
    np.savez(tmp_path / "rec.npz", counts=np.ones((4, 2)), bin_size=BIN)
    cfg = parse_config({"data": {"path": "rec.npz"}, "model": {"kind": "glm"}}, root=tmp_path)
    assert cfg.output.log_likelihood is False and cfg.output.dtype == "float32"
    assert cfg.output.filters is False


def test_filters_only_for_a_glm(tmp_path):
    np.savez(tmp_path / "rec.npz", counts=np.ones((4, 2)), bin_size=BIN)
    raw = {"data": {"path": "rec.npz"}, "model": {"kind": "hmm", "options": {"n_states": 2}},
           "output": {"filters": True}}
    with pytest.raises(ConfigError, match="output.filters: only a GLM has filters in time"):
        parse_config(raw, root=tmp_path)


def _idata(n_draw=500, n_time=4000, seed=0):
    rng = np.random.default_rng(seed)
    return az.from_dict(
        posterior={"mu": rng.normal(size=(1, n_draw, 3))},
        log_likelihood={"counts": rng.normal(size=(1, n_draw, n_time))},
        observed_data={"counts": rng.poisson(1.0, size=(n_time,)).astype(float)},
        coords={"neuron": [0, 1, 2]}, dims={"mu": ["neuron"], "counts": ["time"]},
    )


def test_save_options(tmp_path):
    idata = _idata()
    full = io.save(idata, tmp_path / "full.nc")
    small = io.save(idata, tmp_path / "small.nc", log_likelihood=False)
    half = io.save(idata, tmp_path / "half.nc", dtype="float32")
    # 500 x 4000 float64 log-likelihood values are 16 MB; without them the file is tiny
    assert os.path.getsize(full) > 15e6
    assert os.path.getsize(small) < 1e6
    assert 7e6 < os.path.getsize(half) < 0.6 * os.path.getsize(full)
    assert "log_likelihood" not in io.load(small).groups()
    loaded = io.load(half)
    assert loaded.posterior["mu"].dtype == np.float32
    np.testing.assert_allclose(loaded.log_likelihood["counts"].values,
                               idata.log_likelihood["counts"].values, rtol=1e-6)
    # the caller's InferenceData is not changed
    assert idata.posterior["mu"].dtype == np.float64 and "log_likelihood" in idata.groups()
    with pytest.raises(ValueError, match="dtype must be"):
        io.save(idata, tmp_path / "bad.nc", dtype="int8")


def test_nwb_sidecar_log_likelihood_only_on_request(tmp_path):
    pytest.importorskip("pynwb")
    from bayesneuro.nwb import read_nwb_results, write_example_nwb, write_nwb_results

    nwb = write_example_nwb(tmp_path / "session.nwb")
    idata = _idata()
    sidecar = write_nwb_results(nwb, idata)
    small = os.path.getsize(sidecar)
    assert small < 1e6, f"side-car {small / 1e6:.1f} MB by default"
    assert "log_likelihood" not in read_nwb_results(nwb).groups()
    write_nwb_results(nwb, idata, overwrite=True, log_likelihood=True)
    back = read_nwb_results(nwb)
    assert os.path.getsize(sidecar) > 15e6
    np.testing.assert_array_equal(back.log_likelihood["counts"].values, idata.log_likelihood["counts"].values)
    assert np.isfinite(az.loo(back).elpd_loo)
    write_nwb_results(nwb, idata, overwrite=True, log_likelihood=True, dtype="float32")
    assert 7e6 < os.path.getsize(sidecar) < 10e6
    assert read_nwb_results(nwb).log_likelihood["counts"].dtype == np.float32
