"""The README's first command: the demo simulates, fits and prints a summary."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bayesneuro.cli import main
from bayesneuro.demo import run_demo


# NUTS with the --fast chains: the sampler diagnostics may flag the short run; the check is the rates
SHORT_CHAINS = (r"ignore:(R-hat > |effective sample size below |[0-9]+ divergent transitions)"
                r":bayesneuro.diagnostics.ConvergenceWarning")


@pytest.mark.slow  # ~13 s: NUTS compile and chains
@pytest.mark.filterwarnings(SHORT_CHAINS)
def test_demo_recovers_rates(capsys):
    out = run_demo(method="nuts", seed=0, progress=False, fast=True)
    printed = capsys.readouterr().out
    assert "Hierarchical Poisson rate model fitted by nuts" in printed
    assert "rate[n00]" in printed
    est = np.asarray(out["result"].params["rate"])
    # 10 s of data at ~8 spikes/s: posterior sd ~ sqrt(80)/10 ~ 0.9 spikes/s; allow 4 sd
    assert np.all(np.abs(est - out["true_rates"]) < 4 * np.sqrt(out["true_rates"] / 10.0) + 0.5)


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_cli_other_methods(method, capsys):
    assert main(["demo", "--method", method, "--quiet", "--fast"]) == 0
    assert f"fitted by {method}" in capsys.readouterr().out


@pytest.mark.slow  # ~10 s: a fresh interpreter imports JAX and compiles the fit
def test_python_m_bayesneuro_demo():
    proc = subprocess.run(
        [sys.executable, "-m", "bayesneuro", "demo", "--method", "map", "--quiet", "--fast"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "median |estimated - true| rate" in proc.stdout


def test_cli_rejects_unknown_method():
    with pytest.raises(SystemExit):
        main(["demo", "--method", "gibbs"])
