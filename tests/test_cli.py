"""``bayesneuro fit CONFIG``: configs, what is written, the report, errors and interruptions."""

import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC
from pathlib import Path

import jax
import numpy as np
import pytest

import bayesneuro as bn
from bayesneuro import cli
from bayesneuro.cli import main
from bayesneuro.config import ConfigError, load_config, parse_config
from bayesneuro.io import load, slim
from bayesneuro.report import format_value, summary_table, write_report

BIN = 0.01

GLM_TOML = """\
# a Poisson GLM with a stimulus regressor and spike history
[data]
path = "rec.npz"

[model]
kind = "glm"
options = { history_basis = { type = "RaisedCosineLog", n_basis = 3, window = 10 } }

[fit]
method = "map"
seed = 0

[output]
dir = "results"
name = "fit"
"""

GLM_YAML = """\
data:
  path: rec.npz
model:
  kind: glm
  options:
    history_basis: {type: RaisedCosineLog, n_basis: 3, window: 10}
fit:
  method: map
  seed: 0
output:
  dir: results_yaml
  report: [html, pdf]
"""

RATES_MODEL = '''\
"""Independent Poisson rates with a Gamma prior, written as in models/."""
import numpyro
import numpyro.distributions as dist


def rates(counts=None, *, bin_size, shape=2.0, rate=0.2, n_time=None, n_neuron=None):
    if counts is not None:
        n_time, n_neuron = counts.shape
    with numpyro.plate("neuron", n_neuron):
        r = numpyro.sample("rate", dist.Gamma(shape, rate))
        with numpyro.plate("time", n_time, dim=-2):
            numpyro.sample("counts", dist.Poisson(r * bin_size), obs=counts)
'''

CUSTOM_TOML = """\
[data]
path = "rec.npz"

[model]
kind = "custom"
file = "models/rates.py"
function = "rates"
options = { shape = 3.0 }

[fit]
method = "map"

[output]
name = "custom"
report = "none"
"""


def _simulate():
    """A Poisson GLM population: 3 neurons x 2000 bins driven by one smooth stimulus."""
    rng = np.random.default_rng(0)
    stim = np.convolve(rng.normal(size=2000), np.ones(5) / np.sqrt(5), mode="same")
    log_rate = np.log([6.0, 12.0, 9.0])[None, :] + np.array([0.4, -0.3, 0.6])[None, :] * stim[:, None]
    counts = rng.poisson(np.exp(log_rate) * BIN)
    return counts, stim


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A project folder: recording, GLM config, custom model and its config."""
    root = tmp_path_factory.mktemp("cli")
    counts, stim = _simulate()
    np.savez(root / "rec.npz", counts=counts, bin_size=BIN, covariates=stim[:, None],
             feature_names=np.array(["stim"]))
    (root / "glm.toml").write_text(GLM_TOML)
    (root / "models").mkdir()
    (root / "models" / "rates.py").write_text(RATES_MODEL)
    (root / "custom.toml").write_text(CUSTOM_TOML)
    return root


@pytest.fixture(scope="module")
def glm_run(folder):
    """One CLI run of the GLM config (shared by the tests that read its outputs)."""
    rc = main(["fit", str(folder / "glm.toml"), "--quiet"])
    assert rc == 0
    return folder / "results"


def _direct_glm_fit(folder):
    counts, stim = _simulate()
    data = bn.SpikeData.from_counts(counts, bin_size=BIN, covariates=stim[:, None], feature_names=["stim"])
    glm = bn.PoissonGLM(history_basis=bn.bases.RaisedCosineLog(3, window=10))
    glm.fit(data, method="map", key=jax.random.key(0), progress=False)
    return glm.to_inference_data()


def _assert_same_posterior(a, b):
    """Same estimates: MAP fits are point fits (a point_estimate group, no posterior)."""
    assert "posterior" not in a.groups() and "posterior" not in b.groups()
    pa, pb = a.point_estimate, b.point_estimate
    assert set(pa.data_vars) == set(pb.data_vars)
    for name in pb.data_vars:
        np.testing.assert_allclose(pa[name].values, pb[name].values, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------- happy paths


def test_cli_fit_equals_python_fit(glm_run, folder):
    assert sorted(p.name for p in glm_run.iterdir()) == ["fit.html", "fit.nc"]
    saved = load(glm_run / "fit.nc")
    # the CLI stores the draws in float32 by default: the Python fit's, rounded
    _assert_same_posterior(saved, slim(_direct_glm_fit(folder), dtype="float32"))
    assert saved.point_estimate["bias"].dtype == np.float32
    assert saved.point_estimate.attrs["method"] == "map" and "chain" not in saved.point_estimate.dims
    assert 'kind = "glm"' in saved.point_estimate.attrs["bayesneuro_config"]
    # the parameters; the filters in time (derived from them) only with [output] filters = true
    assert set(saved.point_estimate.data_vars) == {"bias", "stimulus_weights", "history_weights"}


def test_html_report(glm_run):
    text = (glm_run / "fit.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert '<img src="data:image/png;base64,' in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "report must be self-contained"
    table, _ = summary_table(load(glm_run / "fit.nc"))
    assert "estimate" in table.columns and "bias[0]" in table.index
    for label in ("bias[0]", "bias[1]", "bias[2]", "history_weights[0, 0]"):
        assert f"<th class='k'>{label}</th><td>{format_value(table.loc[label, 'estimate'])}</td>" in text
    assert "point estimate: no diagnostics" in text
    assert "<td class='k'>2000</td>" in text  # time bins in the data summary
    assert "kind = &quot;glm&quot;" in text  # the config, escaped
    assert "GLM filters" in text


def test_yaml_config_with_pdf(glm_run, folder):
    pytest.importorskip("yaml")
    (folder / "glm.yaml").write_text(GLM_YAML)
    assert main(["fit", str(folder / "glm.yaml"), "--quiet"]) == 0
    out = folder / "results_yaml"
    assert sorted(p.name for p in out.iterdir()) == ["glm.html", "glm.nc", "glm.pdf"]
    _assert_same_posterior(load(out / "glm.nc"), load(glm_run / "fit.nc"))
    assert (out / "glm.pdf").read_bytes()[:5] == b"%PDF-"


def test_custom_model(folder, monkeypatch, capfd):
    monkeypatch.setenv("BAYESNEURO_PROGRESS", "0")
    assert main(["fit", str(folder / "custom.toml")]) == 0
    err = capfd.readouterr().err
    assert "it/s" not in err  # BAYESNEURO_PROGRESS=0 silences the bars without --quiet
    out = folder / "results"
    assert (out / "custom.nc").is_file() and not (out / "custom.html").exists()
    post = load(out / "custom.nc").point_estimate  # MAP: a point fit
    counts, _ = _simulate()
    # MAP of a Gamma(3, 0.2) prior with Poisson counts: (shape - 1 + sum) / (rate + T * dt)
    expected = (3.0 - 1.0 + counts.sum(0)) / (0.2 + counts.shape[0] * BIN)
    np.testing.assert_allclose(post["rate"].values, expected, rtol=1e-5)
    assert post["rate"].dims == ("neuron",)


@pytest.mark.slow  # ~14 s: a fresh interpreter imports JAX and fits
def test_python_m_bayesneuro_fit(folder, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "bayesneuro", "fit", str(folder / "custom.toml"), "--quiet",
           "--out", str(tmp_path / "sub")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "sub" / "custom.nc").is_file()
    # a second run refuses to overwrite: exit code 2, one line, no traceback
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("bayesneuro fit: error: output: ") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------- errors


def _write(folder, text, name="bad.toml"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "text, where, words",
    [
        ('[data]\npath = "rec.npz"\n[model]\nkind = "glmm"\n', "model.kind:", "unknown kind 'glmm'"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "glm"\n[fit]\nmethd = "map"\n', "fit.methd:",
         "did you mean 'method'"),
        ('[data]\npath = "nope.npz"\n[model]\nkind = "glm"\n', "data.path:", "nope.npz"),
        ('[data]\npath = "spikes.csv"\n[model]\nkind = "glm"\n', "data.bin_size:", "missing"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "glm"\n[fit]\nmethod = "mcmc"\n', "fit.method:",
         "unknown method 'mcmc'"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "glm"\n[fit]\nmethod = "laplace-em"\n', "fit.method:",
         "cannot be fitted by 'laplace-em'"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "glm"\noptions = { histroy_basis = 3 }\n',
         "model.options.histroy_basis:", "did you mean 'history_basis'"),
        (('[data]\npath = "rec.npz"\n[model]\nkind = "glm"\n[model.options.history_basis]\n'
          'type = "RaisedCosineLog"\nn_basis = 3\n'), "model.options.history_basis.window:", "missing"),
        ('[data]\npath = "rec.npz"\nbin_size = "10ms"\n[model]\nkind = "glm"\n', "data.bin_size:",
         "must be a number"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "glm"\n[fit]\nseed = 0\noptions = { num_warmup = 10 }\n',
         "fit.options.num_warmup:", "unknown key"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "gpfa"\n', "model.options.n_latents:", "missing"),
        ('[data]\npath = "neg.npz"\n[model]\nkind = "glm"\n', "data.path:", "negative"),
        ('[data]\npath = "rec.npz"\n[model]\nkind = "custom"\nfile = "models/rates.py"\n', "model.function:",
         "no function 'model'"),
        ('[data\npath = "rec.npz"\n', "config:", "invalid TOML"),
    ],
)
def test_config_errors_exit_2(folder, capsys, monkeypatch, text, where, words):
    (folder / "spikes.csv").write_text("time,unit\n0.1,0\n0.2,1\n")
    np.savez(folder / "neg.npz", counts=np.array([[0, -1], [1, 0]]), bin_size=0.01)
    monkeypatch.setattr(cli, "fit_model", _must_not_fit)
    rc = main(["fit", str(_write(folder, text)), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"bayesneuro fit: error: {where}"), err
    assert words in err, err
    assert "Traceback" not in err


def _must_not_fit(*args, **kwargs):
    raise AssertionError("the fit ran although the configuration is invalid")


def test_missing_config_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "config: file not found" in err and str(tmp_path / "none.toml") in err


def test_existing_output_fails_before_fitting(glm_run, folder, capsys, monkeypatch):
    monkeypatch.setattr(cli, "fit_model", _must_not_fit)
    before = (glm_run / "fit.nc").read_bytes()
    assert main(["fit", str(folder / "glm.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesneuro fit: error: output: ") and "already exist" in err
    assert "--overwrite" in err and "output.overwrite" in err
    assert (glm_run / "fit.nc").read_bytes() == before


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match=r"^model: missing required table \[model\]"):
        parse_config({"data": {"path": "x.npz"}})


def test_relative_paths_resolve_against_config_folder(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(folder / "glm.toml")
    assert cfg.data.path == (folder / "rec.npz").resolve()
    assert cfg.output.paths["nc"] == (folder / "results" / "fit.nc").resolve()
    assert cfg.with_output(dir="elsewhere").output.dir == (tmp_path / "elsewhere").resolve()


def test_nwb_input(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    pytest.importorskip("bayesneuro.nwb")
    from datetime import datetime

    nwb = pynwb.NWBFile(session_description="test", identifier="cli",
                        session_start_time=datetime(2024, 1, 1, tzinfo=UTC))
    rng = np.random.default_rng(0)
    for _ in range(2):
        nwb.add_unit(spike_times=np.sort(rng.uniform(0, 10, 80)))
    with pynwb.NWBHDF5IO(str(tmp_path / "rec.nwb"), "w") as io:
        io.write(nwb)
    _write(tmp_path, '[data]\npath = "rec.nwb"\nbin_size = 0.05\n[model]\nkind = "custom"\n'
           f'file = "{(tmp_path / "rates.py").as_posix()}"\nfunction = "rates"\n', "nwb.toml")
    (tmp_path / "rates.py").write_text(RATES_MODEL)
    assert main(["fit", str(tmp_path / "nwb.toml"), "--quiet"]) == 0
    saved = load(tmp_path / "results" / "nwb.nc")  # MAP (the default): a point fit
    assert "posterior" not in saved.groups() and saved.point_estimate["rate"].sizes["neuron"] == 2


def test_nwb_without_reader_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "rec.nwb").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "bayesneuro.nwb", None)
    cfg = parse_config({"data": {"path": "rec.nwb", "bin_size": 0.01}, "model": {"kind": "glm"}}, root=tmp_path)
    from bayesneuro.config import load_data

    with pytest.raises(ConfigError, match="^data.format: NWB input needs"):
        load_data(cfg)


# --------------------------------------------------------------------------- interruptions


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_interrupt_during_fit_writes_nothing(folder, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "fit_model", interrupted)
    out = tmp_path / "new" / "results"
    assert main(["fit", str(folder / "glm.toml"), "--quiet", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["save", "report"])
def test_interrupt_while_writing_keeps_old_result(glm_run, folder, tmp_path, monkeypatch, where):
    out = tmp_path / "results"
    out.mkdir()
    old = {}
    for name in ("fit.nc", "fit.html"):
        old[name] = (glm_run / name).read_bytes()
        (out / name).write_bytes(old[name])
    idata = load(glm_run / "fit.nc")
    monkeypatch.setattr(cli, "fit_model", lambda *a, **k: (idata, None))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "save":
        monkeypatch.setattr(bn.io, "save", interrupted)
    else:
        monkeypatch.setattr(bn.report, "write_report", interrupted)
    rc = main(["fit", str(folder / "glm.toml"), "--quiet", "--overwrite", "--out", str(out)])
    assert rc == 130
    assert _files(out) == ["fit.html", "fit.nc"]  # no temporary files or folders
    for name, content in old.items():
        assert (out / name).read_bytes() == content


# ---------------------------------------------------------------------------------- report


def test_report_from_python_notes_failed_figures(tmp_path):
    import arviz as az

    class PoissonGLM:  # looks like a GLM to the report, but cannot be plotted
        pass

    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={"mu": rng.normal(size=(2, 100)), "sd": rng.gamma(2.0, size=(2, 100))},
                         attrs={"method": "nuts"})
    path = write_report(idata, tmp_path / "r.html", title="<b>my fit</b>", config={"a": "<x>"},
                        model=PoissonGLM())
    text = path.read_text()
    assert "&lt;b&gt;my fit&lt;/b&gt;" in text and "<b>my fit</b>" not in text
    assert "&lt;x&gt;" in text
    assert "could not be drawn" in text  # the model's figure failed; the report did not
    assert text.count('<img src="data:image/png;base64,') >= 2  # forest and trace
    assert "max R-hat" in text
    assert _files(tmp_path) == ["r.html"]


# ------------------------------------------------------------------ --version and a fast --help

_NO_JAX = """\
import sys
from bayesneuro.cli import main
try:
    main({argv!r})
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("jax", "jaxlib", "numpyro", "arviz", "matplotlib") if m in sys.modules)
print("HEAVY", heavy, "EXIT", code, file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["fit", "--help"], ["demo", "--help"]])
def test_help_and_version_do_not_import_jax(argv):
    # a fresh interpreter: this one has JAX loaded already
    proc = subprocess.run([sys.executable, "-c", _NO_JAX.format(argv=argv)], check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("HEAVY [] EXIT 0"), proc.stderr[-2000:]
    assert proc.stdout.strip()


def test_version_is_the_installed_version():
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "bayesneuro", "--version"], check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"bayesneuro {version('bayesneuro')}"
    assert version("bayesneuro") == bn.__version__


def test_cli_methods_are_the_inference_methods():
    assert cli._METHODS == bn.infer.METHODS


def test_lazy_package_attributes():
    code = ("import sys, bayesneuro as bn; assert 'jax' not in sys.modules; "
            "from bayesneuro import SpikeData; print(bn.PoissonGLM.__name__, bn.GPFA.__name__, "
            "SpikeData.__name__, bn.fit.__module__, bn.nwb.__name__, 'jax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["PoissonGLM", "GPFA", "SpikeData", "bayesneuro.infer.fit", "bayesneuro.nwb", "True"]
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        bn.nonexistent  # noqa: B018
    assert set(bn.__all__) <= set(dir(bn))
