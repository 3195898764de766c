"""Shared test configuration: CPU, float64, and the location of ../shared/data."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# A persistent compilation cache for this test process (one folder per process, so no two
# processes ever write and read one entry at once), inherited by the notebooks and scripts it
# starts: programs dropped by ``jax.clear_caches()`` after each module (below) and compiled again
# by a later module, a notebook or a subprocess are loaded instead of recompiled. Programs that
# compile in under 0.25 s are not worth the disk round trip. A cache load still counts as a
# compilation for ``bayesneuro._shapes.count_compilations``, so the compilation-budget tests see
# the same counts. BAYESNEURO_TEST_JAX_CACHE=0 switches it off.
if os.environ.get("BAYESNEURO_TEST_JAX_CACHE", "1") != "0" and os.environ.get("_BAYESNEURO_TEST_CACHE_PID") != str(os.getpid()):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bayesneuro-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ["_BAYESNEURO_TEST_CACHE_PID"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.25")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real recordings; skips the test when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drop compiled programs after each test module.

    The suite compiles thousands of XLA programs in one process; keeping them all alive made
    the compiler crash late in the run. Caches within a module are kept.
    """
    yield
    jax.clear_caches()

# run as scripts in their own interpreter by the tests, never imported by pytest
collect_ignore = ["_scale_worker.py"]


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (set in pyproject.toml): one worker per core, at most four.

    Each worker is a JAX process with its own XLA thread pool and compiled programs, so more
    workers than cores, or than four on a big machine, only add memory and contention.
    """
    return max(1, min(4, os.cpu_count() or 1))


# Tests that take minutes (whole notebooks, script runs and the 4-device worker, each in a
# fresh interpreter) go first, so that under xdist no worker is left with one of them at
# the end while the others sit idle.
_LONG_FIRST = (
    "tests/test_notebooks.py::test_notebook_runs",
    "tests/test_scale.py::",
    "tests/test_gallery.py::test_gallery_script_runs",
)


# Warnings are errors in the suite (``filterwarnings`` in pyproject.toml). The docstring
# examples show short runs on purpose (a few EM or optimiser iterations) and the locked
# validation set of ``split_epochs``; these warnings, by message, are not errors there.
_DOCTEST_EXPECTED_WARNINGS = (
    r"ignore:.*stopped at max_iter=\d+ before converging:bayesneuro.diagnostics.ConvergenceWarning",
    r"ignore:.*the optimiser did not converge \(reached max_iter=\d+:RuntimeWarning",
    r"ignore:opening the locked validation set:UserWarning",
)


# Docstring examples that take more than ~5 s each in one process (compile-heavy fits): slow,
# like the tests of the same size, so that ``-m "not slow"`` stays short. CI runs them all.
_SLOW_DOCTESTS = {
    "bayesneuro.decoders.regression.RegressionDecoder",
    "bayesneuro.density.compare.compare_states",
    "bayesneuro.density.hmm.PoissonHMM",
    "bayesneuro.density.hmm.poisson_hmm_model",
    "bayesneuro.density.hmm.select_n_states",
    "bayesneuro.density.maxent.MaxEnt",
    "bayesneuro.density.renewal.RenewalModel",
    "bayesneuro.density.renewal.compare_renewal",
    "bayesneuro.density.renewal.plot_isi_fits",
    "bayesneuro.density.single.NeuronStatistics",
    "bayesneuro.density.types.NeuronTypes",
    "bayesneuro.density.types.plot_types",
    "bayesneuro.engine.newton.newton",
    "bayesneuro.glm.estimator.PoissonGLM",
    "bayesneuro.glm.plotting.plot_coupling",
    "bayesneuro.infer.fit.fit",
    "bayesneuro.latent._plds_model.plds_model",
    "bayesneuro.latent.gpfa.GPFA",
    "bayesneuro.latent.gpfa_gaussian.fit_gpfa_em",
    "bayesneuro.latent.gpfa_gaussian.gpfa_em_step",
    "bayesneuro.latent.gpfa_poisson.fit_poisson_gpfa_em",
    "bayesneuro.latent.kalman.lds_em_step",
    "bayesneuro.latent.gpfa_select.choose_n_latents",
    "bayesneuro.latent.plds.PoissonLDS",
    "bayesneuro.latent.plotting.plot_condition_averages",
}


@pytest.hookimpl(tryfirst=True)  # before the -m selection reads the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.DoctestItem):  # docstring examples of bayesneuro/
            for spec in _DOCTEST_EXPECTED_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))
            if item.name in _SLOW_DOCTESTS:
                item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: not item.nodeid.startswith(_LONG_FIRST))
