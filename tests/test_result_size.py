"""Result files stay small by default: the pointwise log-likelihood is stored only when asked.

A 30-neuron GLM on 200 trials of 100 bins, fitted by Laplace (1000 draws) through the CLI's
configuration path, used to write a ~165 MB netCDF (the log-likelihood of every draw and time
bin); the default must be under 20 MB, and asking for the log-likelihood must store it so that
``az.loo`` works on the loaded file.
"""

import os
import textwrap

import arviz as az
import numpy as np
import pytest

from bayesneuro import io
from bayesneuro.cli import main
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


def _project(folder, *, n_neuron, n_trial, output="", fit_options=""):
    times, units, intervals = _spike_times(n_neuron, n_trial)
    np.savez(folder / "rec.npz", spike_times=times, unit_ids=units, trial_intervals=intervals)
    cfg = folder / "fit.toml"
    cfg.write_text(textwrap.dedent(f"""\
        [data]
        path = "rec.npz"
        bin_size = {BIN}

        [model]
        kind = "glm"
        options = {{ history_basis = {{ type = "RaisedCosineLog", n_basis = 3, window = 10 }} }}

        [fit]
        method = "laplace"
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
    assert ll.dtype == np.float64
    loo = az.loo(idata)
    # in-sample lppd = elpd_loo + p_loo, and p_loo is about the number of parameters
    # (3 neurons x (bias + 3 history weights) = 12)
    values = ll.values.reshape(200, 2000)
    lppd = float(np.sum(np.logaddexp.reduce(values, axis=0) - np.log(200)))
    np.testing.assert_allclose(loo.elpd_loo + loo.p_loo, lppd, rtol=1e-6)
    assert 6 < loo.p_loo < 24


def test_float32_output(tmp_path):
    cfg = _project(tmp_path, n_neuron=3, n_trial=20, fit_options="options = { num_samples = 200 }",
                   output='log_likelihood = true\ndtype = "float32"\nreport = "none"')
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
    assert cfg.output.log_likelihood is False and cfg.output.dtype == "float64"


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
