"""Run by tests/test_scale.py in a fresh interpreter with several (CPU) devices.

``python tests/_scale_worker.py devices``: one process with 4 host devices; prints JSON.
``python tests/_scale_worker.py distributed PID PORT``: one of two processes of a
``jax.distributed`` run (2 devices each); prints JSON.
"""

import json
import os
import sys
import warnings

MODE = sys.argv[1]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + ("4" if MODE == "devices" else "2")
os.environ["BAYESNEURO_PROGRESS"] = "0"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if MODE == "distributed":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    PID, PORT = int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"localhost:{PORT}", num_processes=2, process_id=PID)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

import bayesneuro as bn  # noqa: E402
from bayesneuro.parallel import Sharding, describe, device_mesh, shard_data  # noqa: E402


def simulate(T=1000, N=8, F=3, seed=0):
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(T, F))
    W = rng.normal(0, 0.3, (F, N))
    b = np.log(rng.uniform(2, 10, N) * 0.01)
    return rng.poisson(np.exp(S @ W + b)), S


def glm(counts=None, design=None):
    n = counts.shape[1]
    with numpyro.plate("neuron", n):
        b0 = numpyro.sample("b0", dist.Normal(-3, 2))
        w = numpyro.sample("w", dist.Normal(0, 1).expand([design.shape[1]]).to_event(1))
    eta = design @ w.T + b0
    with numpyro.plate("time", counts.shape[0], dim=-2), numpyro.plate("n2", n, dim=-1):
        numpyro.sample("counts", dist.Poisson(jnp.exp(eta)), obs=counts)


def devices():
    out = {"n_devices": len(jax.devices())}
    X, S = simulate()
    runs = [
        ("map", {}, ("neuron", "time")),
        ("laplace", {"num_samples": 50}, ("neuron",)),
        ("svi", {"num_steps": 100, "num_samples": 20}, ("time",)),
        ("nuts", {"num_warmup": 30, "num_samples": 30, "num_chains": 1}, ("neuron",)),
    ]
    specs = {"neuron": {"counts": 1}, "time": {"counts": 0, "design": 0}}
    for method, o, labels in runs:
        ref = bn.fit(glm, method=method, key=1, counts=X, design=S, **o)
        for label in labels:
            res = bn.fit(glm, method=method, key=1, counts=X, design=S, shard=specs[label], **o)
            out[f"{method}_{label}_diff"] = float(np.max(np.abs(res.samples["w"] - ref.samples["w"])))
            out[f"{method}_{label}_mean_diff_in_sd"] = float(np.max(
                np.abs(res.samples["w"].mean((0, 1)) - ref.samples["w"].mean((0, 1)))
                / (ref.samples["w"].std((0, 1)) + 1e-300)
            )) if method != "map" else 0.0
            out[f"{method}_{label}_devices"] = describe(res.model_kwargs["counts"])["n_devices"]
    # a built-in estimator, sharded by dim name
    data = bn.SpikeData.from_counts(X, bin_size=0.01).with_covariates(S)

    def make():
        return bn.PoissonGLM(
            stimulus_basis=bn.bases.RaisedCosineLog(3, window=10, first_peak=0.0, history=False),
            history_basis=bn.bases.RaisedCosineLog(3, window=20, first_peak=0.0), coupling=True,
        )

    g0 = make().fit(data, key=0, progress=False)
    for dim in ("time", "neuron"):
        g1 = make().fit(data, key=0, progress=False, shard=dim)
        out[f"glm_{dim}_diff"] = max(float(np.max(np.abs(np.asarray(g0.params_[k]) - np.asarray(g1.params_[k]))))
                                     for k in g0.params_)
        out[f"glm_{dim}_devices"] = describe(g1.result_.model_kwargs["counts"])["n_devices"]
    # the compiled log density of sharded data is partitioned: it sums the devices' parts
    placed = shard_data({"counts": X, "design": S}, {"counts": 0, "design": 0})
    w0, b0 = jnp.zeros((X.shape[1], S.shape[1])), jnp.zeros(X.shape[1])

    def loglik(w, b, counts, design):
        eta = design @ w.T + b
        return jnp.sum(counts * eta - jnp.exp(eta))

    hlo = jax.jit(loglik).lower(w0, b0, placed["counts"], placed["design"]).compile().as_text()
    out["all_reduce_in_hlo"] = "all-reduce" in hlo
    out["shard_shapes"] = describe(placed["counts"])["shard_shapes"]
    # NUTS chains one per device (pmap) give the sequential chains' draws
    Xs, Ss = X[:500], S[:500]
    seq = bn.fit(glm, method="nuts", key=2, counts=Xs, design=Ss, num_warmup=30, num_samples=30, num_chains=4)
    par = bn.fit(glm, method="nuts", key=2, counts=Xs, design=Ss, num_warmup=30, num_samples=30, num_chains=4,
                 chain_method="parallel")
    out["nuts_parallel_diff"] = float(np.max(np.abs(seq.samples["w"] - par.samples["w"])))
    out["nuts_parallel_mean_diff_in_sd"] = float(np.max(
        np.abs(seq.samples["w"].mean((0, 1)) - par.samples["w"].mean((0, 1))) / seq.samples["w"].std((0, 1))
    ))
    # 30 neurons do not split over 4 devices: shrink to 3 with a warning, or raise
    X30, S30 = simulate(T=200, N=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        placed = shard_data({"counts": X30}, {"counts": 1})
    out["uneven_devices"] = describe(placed["counts"])["n_devices"]
    out["uneven_warning"] = [str(w.message) for w in caught if "cannot split evenly" in str(w.message)]
    try:
        shard_data({"counts": X30}, Sharding({"counts": 1}, uneven="raise"))
        out["uneven_raise"] = None
    except ValueError as err:
        out["uneven_raise"] = str(err)
    # a sub-mesh of two devices
    placed = shard_data({"counts": X}, Sharding({"counts": 1}, mesh=device_mesh(2)))
    out["mesh2_devices"] = describe(placed["counts"])["n_devices"]
    # streamed chunks, each split across the devices
    ref = bn.fit(glm, method="map", key=3, counts=X, design=S)
    res = bn.infer.fit_streaming(glm, key=3, counts=X, design=S, time_axes={"counts": 0, "design": 0},
                                 chunk_size=300, shard={"counts": 1}, progress=False)
    out["stream_shard_diff"] = float(np.max(np.abs(res.samples["w"] - ref.samples["w"])))
    return out


def distributed():
    X, S = simulate()
    T = X.shape[0]
    half = slice(PID * T // 2, (PID + 1) * T // 2)  # each process holds half of the time bins
    res = bn.fit(glm, method="map", key=1, counts=X[half], design=S[half], shard={"counts": 0, "design": 0})
    ref = bn.fit(glm, method="map", key=1, counts=X, design=S)  # the whole data on this process
    out = {
        "diff_to_single_process": float(np.max(np.abs(res.samples["w"] - ref.samples["w"]))),
        "process_count": jax.process_count(),
        "n_devices": len(jax.devices()),
        "w": np.asarray(res.samples["w"]).ravel().tolist(),
    }
    return out


if __name__ == "__main__":
    result = devices() if MODE == "devices" else distributed()
    print("RESULT " + json.dumps(result), flush=True)
