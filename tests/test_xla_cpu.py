"""Batched LAPACK on XLA's CPU backend runs one matrix at a time (bayesneuro/_xla_cpu.py).

jaxlib's batched LAPACK kernels block an XLA worker thread while they wait for tasks queued on the
same thread pool; with as many concurrent batched calls as the pool has threads (2 on a 2-core
machine) the process deadlocks. These tests check (1) that no compiled program contains a batched
LAPACK call any more -- the HLO of every decomposition the package uses, directly batched, under
``vmap`` and under ``grad``, and the GPFA EM step that froze on real recordings -- which fails on
jaxlib's own lowering; (2) that the results equal numpy's, matrix by matrix; (3) that the program
that deadlocked (16 independent batched Cholesky factorisations in one jitted function) finishes,
in a subprocess that is killed when it does not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest

from bayesneuro import _xla_cpu
from bayesneuro.latent import gpfa_gaussian as gg

LAPACK_CALL = re.compile(r"custom_call_target=\"(lapack_\w+)\"")


def _batched_lapack_calls(compiled_text: str) -> list[str]:
    """The LAPACK custom calls of a compiled program whose operand holds more than one matrix."""
    bad = []
    for line in compiled_text.splitlines():
        m = LAPACK_CALL.search(line)
        if m is None:
            continue
        # operand shapes, e.g. custom-call(f64[4,3,3] %x): a rank > 2 operand (rank > 1 for the
        # vectors of tridiagonal solves) with a leading dimension above 1 is a batch
        args = line.split("custom-call(", 1)[1]
        for dims in re.findall(r"[fsuc]\d+\[([\d,]*)\]", args):
            shape = [int(d) for d in dims.split(",") if d]
            if len(shape) > 2 and int(np.prod(shape[:-2])) > 1:
                bad.append(f"{m.group(1)} on {shape}")
    return bad


def _spd(n_batch: int, n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n_batch, n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


OPS = {
    "cholesky": lambda a: jnp.linalg.cholesky(a),
    "triangular_solve": lambda a: jsl.solve_triangular(jnp.linalg.cholesky(a), a, lower=True),
    "cho_solve": lambda a: jsl.cho_solve((jnp.linalg.cholesky(a), True), jnp.ones(a.shape[:-1] + (1,))),
    "solve": lambda a: jnp.linalg.solve(a, jnp.ones(a.shape[:-1] + (1,))),
    "inv": lambda a: jnp.linalg.inv(a),
    "slogdet": lambda a: jnp.linalg.slogdet(a)[1],
    "eigh": lambda a: jnp.linalg.eigh(a)[0],
    "svd": lambda a: jnp.linalg.svd(a, compute_uv=False),
    "qr": lambda a: jnp.abs(jnp.linalg.qr(a)[1]),
}

NUMPY = {
    "cholesky": np.linalg.cholesky,
    "triangular_solve": lambda a: np.linalg.solve(np.linalg.cholesky(a), a),
    "cho_solve": lambda a: np.linalg.solve(a, np.ones(a.shape[:-1] + (1,))),
    "solve": lambda a: np.linalg.solve(a, np.ones(a.shape[:-1] + (1,))),
    "inv": np.linalg.inv,
    "slogdet": lambda a: np.linalg.slogdet(a)[1],
    "eigh": lambda a: np.linalg.eigh(a)[0],
    "svd": lambda a: np.linalg.svd(a, compute_uv=False),
    "qr": lambda a: np.abs(np.linalg.qr(a)[1]),
}


def test_installed_on_import():
    assert _xla_cpu.is_installed()


@pytest.mark.parametrize("name", sorted(OPS))
def test_batched_call_is_a_loop_of_unbatched_lapack_calls(name):
    a = _spd(5, 6)
    compiled = jax.jit(OPS[name]).lower(a).compile().as_text()
    assert LAPACK_CALL.search(compiled), "expected a LAPACK call on CPU"
    assert _batched_lapack_calls(compiled) == []
    # results equal numpy's, matrix by matrix
    got = np.asarray(jax.jit(OPS[name])(a))
    np.testing.assert_allclose(got, NUMPY[name](a), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["cholesky", "solve", "eigh", "triangular_solve"])
def test_vmap_and_grad_compile_to_unbatched_calls(name):
    a = _spd(4, 5)

    def loss(s, m):
        return jnp.sum(OPS[name](m + s * jnp.eye(m.shape[-1])))

    f = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, 0)))
    s = np.linspace(1.0, 2.0, 4)
    compiled = f.lower(s, a).compile().as_text()
    assert _batched_lapack_calls(compiled) == []
    # against central finite differences of the numpy computation
    g = np.asarray(f(s, a))
    h = 1e-6
    eye = np.eye(a.shape[-1])
    ref = [(NUMPY[name](a[i] + (s[i] + h) * eye).sum() - NUMPY[name](a[i] + (s[i] - h) * eye).sum())
           / (2 * h) for i in range(4)]
    np.testing.assert_allclose(g, ref, rtol=1e-5)


def test_gpfa_em_step_has_no_batched_lapack_call():
    """The EM step that froze on real recordings: ragged trials give several independent groups."""
    rng = np.random.default_rng(0)
    trials = [rng.poisson(1.0, size=(12 - 2 * (i % 3), 6)).astype(float) for i in range(9)]
    groups, _ = gg._group(trials)
    params = gg.init_gpfa_params(trials, 2)
    buckets = gg._buckets(groups, 2)
    state = gg._to_state(params)
    for bk in buckets:  # one E-step program per bucket of trial lengths (batched over its trials)
        text = gg._bucket_stats.lower(state, params.eps, bk, kernel="se").compile().as_text()
        assert LAPACK_CALL.search(text)
        assert _batched_lapack_calls(text) == []


def test_uninstall_restores_jaxlibs_batched_lowering():
    """The check above can fail: jaxlib's own lowering keeps the batch in one LAPACK call."""
    a = _spd(5, 6)
    _xla_cpu.uninstall()
    try:
        compiled = jax.jit(lambda x: jnp.linalg.cholesky(x) + 0.0).lower(a).compile().as_text()
    finally:
        assert _xla_cpu.install()
    assert _batched_lapack_calls(compiled) != []


DEADLOCK_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import bayesneuro.latent  # installs the looped lowering unless BAYESNEURO_PARALLEL_LAPACK=1

    K, B, N = 16, 4, 100  # 16 independent batched factorisations in one program

    @jax.jit
    def f(a):
        total = 0.0
        for k in range(K):
            m = a[k] @ jnp.swapaxes(a[k], -1, -2) + N * jnp.eye(N)
            total = total + jnp.linalg.cholesky(m).sum() + jnp.linalg.solve(m, m[..., :1]).sum()
        return total

    a = jax.random.normal(jax.random.key(0), (K, B, N, N))
    for i in range(20):
        f(a + i).block_until_ready()
    print("finished")
    """
)


@pytest.mark.slow
def test_concurrent_batched_factorisations_do_not_deadlock(tmp_path):
    """Without the looped lowering this program froze in every run on a 2-core machine (all XLA
    workers blocked in ParallelBatchMap). The subprocess is killed if it runs past the timeout."""
    script = tmp_path / "concurrent_lapack.py"
    script.write_text(DEADLOCK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "BAYESNEURO_PARALLEL_LAPACK"}
    env["JAX_PLATFORMS"] = "cpu"
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False,
                             timeout=240, env=env)
    except subprocess.TimeoutExpired:  # run() has killed the child
        pytest.fail("batched LAPACK calls deadlocked (or ran past 240 s): the process was killed")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished" in out.stdout


def test_lapack_blas_runs_one_thread_per_call():
    """jaxlib's LAPACK kernels run inside XLA's pool: scipy's BLAS (which they call) gets one thread,
    numpy's BLAS is left as it was."""
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    scipy_blas = _xla_cpu._scipy_blas_controllers()
    assert scipy_blas, "scipy's BLAS library not found"
    assert [c.num_threads for c in scipy_blas] == [1] * len(scipy_blas)
    others = [i for i in threadpool_info()
              if i["user_api"] == "blas" and i["filepath"] not in {c.filepath for c in scipy_blas}]
    if os.cpu_count() and os.cpu_count() > 1 and "OPENBLAS_NUM_THREADS" not in os.environ:
        assert any(i["num_threads"] > 1 for i in others)  # numpy's BLAS keeps its threads
