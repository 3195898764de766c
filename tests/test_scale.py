"""Scale: fits sharded across devices (JAX sharding), multi-process runs, streamed likelihoods.

The multi-device checks run in a fresh interpreter (``tests/_scale_worker.py``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU devices), because the flag
must be set before JAX starts; the multi-process check starts two such interpreters joined by
``jax.distributed`` on localhost. Each sharded fit is compared with the same fit unsharded.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesneuro as bn
from bayesneuro.infer import chunk_slices, fit_streaming
from bayesneuro.parallel import Sharding, describe, device_mesh, shard_data

from .helpers import REPO, finish_process, killing, start_process

WORKER = REPO / "tests" / "_scale_worker.py"


def _run_worker(*args):
    """Start a worker interpreter; it is killed with this process (tests.helpers.start_process)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return start_process([sys.executable, str(WORKER), *args], env=env, cwd=str(REPO))


def _result(proc, timeout=600):
    """The worker's RESULT line; on a timeout or failure the worker is killed, never left running."""
    out, err = finish_process(proc, timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def four_devices():
    with killing([_run_worker("devices")]) as (proc,):
        return _result(proc)


@pytest.mark.slow  # the 4-device worker (a fresh interpreter, every method): minutes
def test_sharded_fits_equal_unsharded_fits(four_devices):
    r = four_devices
    assert r["n_devices"] == 4
    for key in ("map_neuron", "map_time", "laplace_neuron", "svi_time", "nuts_neuron"):
        assert r[f"{key}_devices"] == 4, key
        # the same numbers up to the order of floating-point sums
        assert r[f"{key}_diff"] < 1e-6 or r[f"{key}_mean_diff_in_sd"] < 0.3, (key, r[f"{key}_diff"])
    assert r["map_neuron_diff"] < 1e-6 and r["map_time_diff"] < 1e-6  # within the optimiser tolerance


@pytest.mark.slow  # the 4-device worker (a fresh interpreter, every method): minutes
def test_builtin_glm_sharded_by_dim_name(four_devices):
    for dim in ("time", "neuron"):
        assert four_devices[f"glm_{dim}_devices"] == 4
        assert four_devices[f"glm_{dim}_diff"] < 1e-6


@pytest.mark.slow  # the 4-device worker (a fresh interpreter, every method): minutes
def test_sharded_log_density_is_partitioned(four_devices):
    # XLA splits the work: each device holds a quarter of the bins and the parts are summed
    assert four_devices["all_reduce_in_hlo"]
    assert four_devices["shard_shapes"] == [[250, 8]] * 4


@pytest.mark.slow  # the 4-device worker (a fresh interpreter, every method): minutes
def test_nuts_chains_one_per_device_match_sequential_chains(four_devices):
    r = four_devices
    assert r["nuts_parallel_diff"] < 1e-6 or r["nuts_parallel_mean_diff_in_sd"] < 0.3


@pytest.mark.slow  # the 4-device worker (a fresh interpreter, every method): minutes
def test_uneven_axis_shrinks_or_raises(four_devices):
    r = four_devices
    assert r["uneven_devices"] == 3 and r["uneven_warning"]
    assert "30" in r["uneven_raise"] and "multiple of the device count" in r["uneven_raise"]
    assert r["mesh2_devices"] == 2


@pytest.mark.slow  # the 4-device worker (a fresh interpreter, every method): minutes
def test_streamed_chunks_can_be_sharded(four_devices):
    assert four_devices["stream_shard_diff"] < 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two worker interpreters joined by jax.distributed
def test_two_processes_with_jax_distributed_fit_as_one():
    port = str(_free_port())
    with killing([_run_worker("distributed", str(pid), port) for pid in (0, 1)]) as procs:
        results = [_result(p) for p in procs]  # a timeout in the first kills the second too
    for r in results:
        assert r["process_count"] == 2 and r["n_devices"] == 4
        # each process held half of the time bins; the fit equals one process fitting all of them
        assert r["diff_to_single_process"] < 1e-8
    assert results[0]["w"] == pytest.approx(results[1]["w"], abs=1e-12)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not reaped) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_that_times_out_is_killed():
    """The timeout path of _result kills the worker (before, communicate(timeout=) raised and left
    it running for the rest of the session)."""
    proc = start_process([sys.executable, "-c", "import time; time.sleep(120)"])
    with pytest.raises(subprocess.TimeoutExpired):
        _result(proc, timeout=1)
    assert not _alive(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc")
def test_workers_die_with_the_test_process(tmp_path):
    """A test process that dies without cleaning up (pytest-timeout's thread method ends a hung test
    with os._exit) takes its workers with it."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.helpers import start_process\n"
        "p = start_process([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         check=True)
    child = int(out.stdout.split()[0])
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)


# ---- in this process (one device) ----


def _glm_data(T=1500, N=4, F=3, seed=0):
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(T, F))
    W = rng.normal(0, 0.4, (F, N))
    b = np.log(rng.uniform(2, 10, N) * 0.01)
    return rng.poisson(np.exp(S @ W + b)), S


def glm(counts=None, design=None):
    n = counts.shape[1]
    with numpyro.plate("neuron", n):
        base = numpyro.sample("base", dist.Gamma(2.0, 20.0))  # a constrained site: transforms matter
        w = numpyro.sample("w", dist.Normal(0, 1).expand([design.shape[1]]).to_event(1))
    eta = design @ w.T + jnp.log(base)
    with numpyro.plate("time", counts.shape[0], dim=-2), numpyro.plate("n2", n, dim=-1):
        numpyro.sample("counts", dist.Poisson(jnp.exp(eta)), obs=counts)


def test_chunk_slices_cover_the_recording():
    sl = chunk_slices(1001, 250)
    assert [s.stop - s.start for s in sl] == [250, 250, 250, 250, 1]
    assert np.array_equal(np.concatenate([np.arange(1001)[s] for s in sl]), np.arange(1001))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        chunk_slices(10, 0)


@pytest.mark.parametrize("method", ["map", "laplace"])
@pytest.mark.slow  # ~8-12 s per method: whole and streamed fits
def test_streaming_equals_the_whole_data_fit(method, tmp_path):
    X, S = _glm_data()
    # the recording on disk, read chunk by chunk through memory maps
    np.save(tmp_path / "counts.npy", X)
    np.save(tmp_path / "design.npy", S)
    Xm = np.load(tmp_path / "counts.npy", mmap_mode="r")
    Sm = np.load(tmp_path / "design.npy", mmap_mode="r")
    opts = {"num_samples": 200} if method == "laplace" else {}
    ref = bn.fit(glm, method=method, key=4, counts=X, design=S, progress=False, **opts)
    res = fit_streaming(glm, method=method, key=4, counts=Xm, design=Sm, time_axes={"counts": 0, "design": 0},
                        chunk_size=400, progress=False, **opts)
    assert res.info["n_chunks"] == 4 and res.info["converged"]
    for name in ("w", "base"):
        np.testing.assert_allclose(res.samples[name].mean((0, 1)), ref.samples[name].mean((0, 1)), atol=1e-5)
    if method == "laplace":
        np.testing.assert_allclose(res.info["cov"], ref.info["cov"], atol=1e-6)
        assert res.info["log_marginal_likelihood"] == pytest.approx(ref.info["log_marginal_likelihood"], abs=1e-4)
    idata = res.to_inference_data(log_likelihood=False)
    if method == "map":  # a point fit: point_estimate, no chain/draw
        assert "posterior" not in idata.groups() and idata.point_estimate["w"].dims[0] == "neuron"
    else:
        assert idata.posterior["w"].dims[:3] == ("chain", "draw", "neuron")


def test_streaming_prior_is_counted_once():
    # a conjugate check: Gamma(2, 1) prior, Poisson counts -> mode (a - 1 + sum x) / (b + n)
    def rate_model(counts=None):
        rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
        with numpyro.plate("time", counts.shape[0]):
            numpyro.sample("counts", dist.Poisson(rate), obs=counts)

    x = np.random.default_rng(1).poisson(3.0, 997)
    res = fit_streaming(rate_model, key=0, counts=x, time_axes={"counts": 0}, chunk_size=100, progress=False)
    assert float(res.params["rate"]) == pytest.approx((1 + x.sum()) / (1 + x.size), rel=1e-7)


def test_streaming_bad_input_is_named():
    X, S = _glm_data(T=100)
    kw = dict(key=0, progress=False)
    with pytest.raises(ValueError, match="differ in length"):
        fit_streaming(glm, counts=X, design=S[:90], time_axes={"counts": 0, "design": 0}, chunk_size=10, **kw)
    with pytest.raises(ValueError, match="not a data argument"):
        fit_streaming(glm, counts=X, design=S, time_axes={"spikes": 0}, chunk_size=10, **kw)
    with pytest.raises(ValueError, match="method must be 'map' or 'laplace'"):
        fit_streaming(glm, method="nuts", counts=X, design=S, time_axes={"counts": 0}, chunk_size=10, **kw)
    bad = S.copy()
    bad[57, 1] = np.nan
    with pytest.raises(ValueError, match="'design' has NaN or inf in time bins 50..59"):
        fit_streaming(glm, counts=X, design=bad, time_axes={"counts": 0, "design": 0}, chunk_size=10, **kw)
    with pytest.raises(TypeError, match="key"):
        fit_streaming(glm, key=None, counts=X, design=S, time_axes={"counts": 0}, chunk_size=10)


def test_shard_by_dim_name_finds_the_axes():
    from bayesneuro.infer.fit import _dim_axes

    X, S = _glm_data(T=200)
    assert _dim_axes(glm, {"counts": X, "design": S}, "time", {"design": ["time", "feature"]}) == {
        "counts": 0, "design": 0}
    assert _dim_axes(glm, {"counts": X, "design": S}, "n2", {}) == {"counts": 1}
    with pytest.raises(ValueError, match="no data argument has a 'trial' dim"):
        bn.fit(glm, method="map", key=0, counts=X, design=S, shard="trial", progress=False)


@pytest.mark.slow  # ~6 s: two MAP fits
def test_shard_on_one_device_and_bad_shard_specs():
    X, S = _glm_data(T=200)
    ref = bn.fit(glm, method="map", key=1, counts=X, design=S, progress=False)
    res = bn.fit(glm, method="map", key=1, counts=X, design=S, progress=False, shard={"counts": 1})
    np.testing.assert_allclose(res.samples["w"], ref.samples["w"], atol=1e-10)
    assert describe(res.model_kwargs["counts"])["n_devices"] == 1
    with pytest.raises(ValueError, match="'spikes', which is not a data argument"):
        shard_data({"counts": X}, {"spikes": 0})
    with pytest.raises(ValueError, match="out of range"):
        shard_data({"counts": X}, {"counts": 2})
    with pytest.raises(ValueError, match="not an array"):
        shard_data({"counts": X, "bin_size": 0.01}, {"bin_size": 0})
    with pytest.raises(TypeError, match="Sharding or a dict"):
        shard_data({"counts": X}, 1)
    with pytest.raises(ValueError, match="uneven must be"):
        shard_data({"counts": X}, Sharding({"counts": 0}, uneven="pad"))
    with pytest.raises(ValueError, match=r"only \d+ cpu device"):
        device_mesh(len(jax.devices()) + 1)
