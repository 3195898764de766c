"""Progress bars: no ipywidgets warning in a Jupyter kernel, and bars that end at their true count."""

import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jax.numpy as jnp
import pytest
import tqdm.std

from bayesneuro import _progress, infer
from bayesneuro.engine.em import run_em

from .helpers import load_gallery

ROOT = Path(__file__).resolve().parents[1]

# A Jupyter kernel without ipywidgets, as tqdm.autonotebook sees one: ipykernel's shell module
# loaded, IPython imported, and `import ipywidgets` failing.
KERNEL_WITHOUT_WIDGETS = textwrap.dedent(
    """
    import sys, types, warnings
    import IPython
    sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
    IPython.get_ipython = lambda: type("ZMQInteractiveShell", (), {})()
    sys.modules["ipywidgets"] = None
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import jax
        jax.config.update("jax_platforms", "cpu")
        import jax.numpy as jnp
        import bayesneuro
        from bayesneuro.infer.optimize import minimize
        minimize(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(2), progress=True, desc="MAP")
    for w in caught:
        print("WARNING", w.category.__name__, w.message)
    """
)


def test_kernel_without_ipywidgets_gets_a_text_bar_and_no_warning():
    proc = subprocess.run(
        [sys.executable, "-c", KERNEL_WITHOUT_WIDGETS], check=False, cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "BAYESNEURO_PROGRESS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "TqdmWarning" not in proc.stdout + proc.stderr
    assert "IProgress not found" not in proc.stdout + proc.stderr
    assert "MAP" in proc.stderr  # the plain-text bar, on stderr


def test_bar_class_needs_a_kernel_and_ipywidgets(monkeypatch):
    # outside a kernel: plain text
    monkeypatch.delitem(sys.modules, "ipykernel.zmqshell", raising=False)
    assert _progress.bar_class() is tqdm.std.tqdm
    # in a kernel without ipywidgets: plain text too, and no warning (warnings are errors here)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert _progress._in_kernel()
    assert _progress.bar_class() is tqdm.std.tqdm


def _frames(err: str) -> list[str]:
    """The successive states a text bar drew on stderr."""
    return [f for f in re.split(r"[\r\n]", err) if re.search(r"\d+/\d+", f)]


def _last_count(err: str) -> tuple[int, int]:
    frames = _frames(err)
    assert frames, f"no bar drawn: {err!r}"
    n, total = re.search(r"(\d+)/(\d+)", frames[-1]).groups()
    return int(n), int(total)


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_optimiser_bar_ends_at_its_true_count(method, capsys):
    gp = load_gallery("gamma_poisson_hierarchical")
    counts = jnp.asarray([[3, 10, 20], [5, 12, 18]])
    res = infer.fit(gp.conjugate_rates, method=method, key=0, counts=counts, duration=1.0,
                    progress=True, max_iter=2000, **({"num_samples": 8} if method == "laplace" else {}))
    err = capsys.readouterr().err
    n, total = _last_count(err)
    assert res.info["n_iter"] < 2000
    assert (n, total) == (res.info["n_iter"], res.info["n_iter"]), err
    assert "≤2000" in err  # the label says 2000 is a cap
    assert not re.search(r"\d\d:\d\d<", err), err  # no remaining-time estimate towards the cap


def test_em_bar_ends_at_its_true_count(capsys):
    y = jnp.array([1.0, 2.0, 3.0])

    def step(m, y):
        return 0.5 * m + 0.5 * jnp.mean(y), -0.5 * jnp.sum((y - m) ** 2)

    for squarem in (False, True):
        _, trace = run_em(step, 0.0, y, tol=1e-12, max_iter=500, squarem=squarem, progress=True)
        err = capsys.readouterr().err
        assert trace.converged and trace.n_iter < 500
        n, total = _last_count(err)
        assert n == total == trace.n_iter, err
        assert not re.search(r"\d\d:\d\d<", err), err


def test_bar_that_reaches_its_cap_reads_full(capsys):
    from bayesneuro.diagnostics import ConvergenceWarning

    y = jnp.array([1.0, 2.0, 3.0])
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        run_em(lambda m, y: (0.5 * m + 0.5 * jnp.mean(y), -0.5 * jnp.sum((y - m) ** 2)),
               0.0, y, tol=1e-12, max_iter=5, progress=True)
    assert _last_count(capsys.readouterr().err) == (5, 5)


def test_progress_silenced_by_environment(monkeypatch, capsys):
    monkeypatch.setenv("BAYESNEURO_PROGRESS", "0")
    run_em(lambda m, y: (0.5 * m + 0.5 * jnp.mean(y), -0.5 * jnp.sum((y - m) ** 2)), 0.0, jnp.ones(3), tol=1e-12)
    assert capsys.readouterr().err == ""
