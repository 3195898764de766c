"""Throughput against the number of devices, and streaming in time chunks.

Each device count runs in a fresh process (``XLA_FLAGS=--xla_force_host_platform_device_count=D``
on a CPU; on a GPU machine ``--device`` uses the real devices, up to those there are). The same
Poisson GLM log density (time x neuron counts, a time x feature design) is evaluated with its
gradient on data sharded along time across D devices; MAP by ``bn.fit(..., shard=...)`` on the
same data; NUTS with one chain per device (``chain_method="parallel"``) against the chains run
one after another. Streaming: ``fit_streaming`` on the recording memory-mapped from disk, in
chunks of several sizes, against ``bn.fit`` with everything on the device.

    python bench/scale.py --out bench/results/scale            # full run (run it alone)
    python bench/scale.py --quick --out bench/results/scale_quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import launch_worker, loadavg, machine_facts  # noqa: E402


def _worker(spec: dict) -> None:
    if not spec.get("device"):
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
        os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["BAYESNEURO_PROGRESS"] = "0"
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    jax.config.update("jax_enable_x64", bool(spec.get("x64", True)))
    import bayesneuro as bn
    from bayesneuro.parallel import device_mesh, shard_data, Sharding

    D = spec["devices"]
    T, N, F = spec["T"], spec["N"], spec["F"]
    rng = np.random.default_rng(0)
    S = rng.normal(size=(T, F)) / np.sqrt(F)
    W = rng.normal(0, 0.5, (F, N))
    b = np.log(rng.uniform(2, 20, N) * 0.005)
    X = rng.poisson(np.exp(S @ W + b))

    def glm(counts=None, design=None):
        n = counts.shape[1]
        with numpyro.plate("neuron", n):
            b0 = numpyro.sample("b0", dist.Normal(-3, 2))
            w = numpyro.sample("w", dist.Normal(0, 1).expand([design.shape[1]]).to_event(1))
        eta = design @ w.T + b0
        with numpyro.plate("time", counts.shape[0], dim=-2), numpyro.plate("n2", n, dim=-1):
            numpyro.sample("counts", dist.Poisson(jnp.exp(eta)), obs=counts)

    out = {"devices": D, "platform": jax.devices()[0].platform, "n_visible": len(jax.devices())}
    mesh = device_mesh(D)
    if spec["task"] == "devices":
        placed = shard_data({"counts": X, "design": S}, Sharding({"counts": 0, "design": 0}, mesh=mesh))

        def nll(params, counts, design):
            w, b0 = params
            eta = design @ w.T + b0
            return -jnp.sum(counts * eta - jnp.exp(eta))

        vg = jax.jit(jax.value_and_grad(nll))
        params = (jnp.zeros((N, F)), jnp.zeros(N))
        jax.block_until_ready(vg(params, placed["counts"], placed["design"]))
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < spec["seconds"]:
            jax.block_until_ready(vg(params, placed["counts"], placed["design"]))
            reps += 1
        dt = (time.perf_counter() - t0) / reps
        out.update(grad_eval_s=dt, bins_per_s=T / dt)
        times = []
        for _ in range(2):  # the second call reuses the compiled program
            t0 = time.perf_counter()
            res = bn.fit(glm, method="map", key=0, counts=X, design=S,
                         shard=Sharding({"counts": 0, "design": 0}, mesh=mesh))
            jax.block_until_ready(res.samples["w"])
            times.append(time.perf_counter() - t0)
        out.update(map_s=times[-1], map_first_s=times[0], map_iter=int(res.info["n_iter"]),
                   w_checksum=float(np.sum(res.samples["w"])))
        if spec.get("nuts"):
            n_chain = D
            Xs, Ss = X[: spec["nuts_T"]], S[: spec["nuts_T"]]
            kw = dict(num_warmup=spec["nuts_warmup"], num_samples=spec["nuts_samples"], num_chains=n_chain)
            for _ in range(2):  # the second round is reported (first-call costs paid by both)
                for cm in ("sequential", "parallel"):
                    t0 = time.perf_counter()
                    bn.fit(glm, method="nuts", key=1, counts=Xs, design=Ss, chain_method=cm, **kw)
                    out[f"nuts_{cm}_s"] = time.perf_counter() - t0
            out["nuts_chains"] = n_chain
    else:  # streaming, one device
        tmp = Path(tempfile.mkdtemp())
        np.save(tmp / "counts.npy", X)
        np.save(tmp / "design.npy", S)
        Xm = np.load(tmp / "counts.npy", mmap_mode="r")
        Sm = np.load(tmp / "design.npy", mmap_mode="r")
        rows = []
        t0 = time.perf_counter()
        ref = bn.fit(glm, method="map", key=0, counts=X, design=S)
        rows.append({"chunk": "all (bn.fit)", "s": time.perf_counter() - t0, "n_iter": int(ref.info["n_iter"]),
                     "max_abs_diff_w": 0.0})
        for c in spec["chunks"]:
            t0 = time.perf_counter()
            r = bn.infer.fit_streaming(glm, key=0, counts=Xm, design=Sm, time_axes={"counts": 0, "design": 0},
                                       chunk_size=c, progress=False)
            rows.append({"chunk": c, "s": time.perf_counter() - t0, "n_iter": int(r.info["n_iter"]),
                         "max_abs_diff_w": float(np.max(np.abs(r.samples["w"] - ref.samples["w"])))})
        out["rows"] = rows
        out["data_mib"] = (X.nbytes + S.nbytes) / 2**20
    Path(spec["out"] + ".json").write_text(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/scale")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", action="store_true", help="use the real devices (a GPU; do not force CPU devices)")
    ap.add_argument("--_worker")
    args = ap.parse_args()
    if args._worker:
        _worker(json.loads(args._worker))
        return
    quick = args.quick
    size = dict(T=40_000 if quick else 400_000, N=32, F=16)
    counts_ = [1, 2, 4]
    tmp = tempfile.mkdtemp()
    facts = machine_facts()
    records = []
    for d in counts_:
        spec = dict(task="devices", devices=d, device=args.device, seconds=1.0 if quick else 5.0, nuts=True,
                    nuts_T=2_000 if quick else 10_000, nuts_warmup=50 if quick else 200,
                    nuts_samples=50 if quick else 200, out=f"{tmp}/dev{d}", **size)
        rec = launch_worker(__file__, spec, timeout=3600)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    spec = dict(task="stream", devices=1, device=args.device, out=f"{tmp}/stream",
                chunks=[5_000, 20_000] if quick else [10_000, 50_000, 200_000], **size)
    stream = launch_worker(__file__, spec, timeout=3600)
    print(json.dumps(stream), flush=True)

    base = next((r for r in records if r.get("devices") == 1 and "error" not in r), None)
    lines = ["# Scale benchmark: throughput against devices, streaming", "", f"machine: {facts}", "",
             f"Poisson GLM log density, {size['T']:,} bins x {size['N']} neurons x {size['F']} features, "
             "float64, data sharded along time (`shard={'counts': 0, 'design': 0}`). "
             "Ratios are against one device in the same run.", "",
             "| devices | value+grad (ms) | bins/s | speed-up | MAP fit (s) | speed-up | NUTS chains | "
             "sequential (s) | one per device (s) | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| ? | error: {r['error']} |||||||||")
            continue
        su = base["grad_eval_s"] / r["grad_eval_s"] if base else float("nan")
        sm = base["map_s"] / r["map_s"] if base else float("nan")
        sn = r["nuts_sequential_s"] / r["nuts_parallel_s"]
        lines.append(
            f"| {r['devices']} | {1e3 * r['grad_eval_s']:.1f} | {r['bins_per_s']:,.0f} | {su:.2f}x | "
            f"{r['map_s']:.2f} | {sm:.2f}x | {r['nuts_chains']} | {r['nuts_sequential_s']:.1f} | "
            f"{r['nuts_parallel_s']:.1f} | {sn:.2f}x |")
    lines += ["", "MAP estimates agree across device counts: checksums "
              + ", ".join(f"{r['devices']}: {r['w_checksum']:.10f}" for r in records if "error" not in r), ""]
    if "error" not in stream:
        lines += [f"## Streaming ({stream['data_mib']:.0f} MiB of data memory-mapped from disk, one device)", "",
                  "| chunk (bins) | MAP (s) | L-BFGS iterations | max abs diff of w vs bn.fit |", "|---|---|---|---|"]
        for row in stream["rows"]:
            c = row["chunk"] if isinstance(row["chunk"], str) else f"{row['chunk']:,}"
            lines.append(f"| {c} | {row['s']:.2f} | {row['n_iter']} | {row['max_abs_diff_w']:.1e} |")
    else:
        lines += [f"streaming: error: {stream['error']}"]
    lines += ["", f"load average at the end: {loadavg()}"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": facts, "devices": records, "stream": stream}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
