"""Small helpers shared by benchmark scripts: worker subprocesses, memory, load and machine facts.

Only :mod:`bench/decode.py` uses it so far (the older scripts carry their own copies). Nothing
here imports JAX, so the parent process of a benchmark stays light.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def choose_platform(argv: list[str] | None = None) -> bool:
    """Force JAX onto the CPU unless ``--device`` is on the command line; call before importing JAX.

    Without ``--device``, ``JAX_PLATFORMS`` defaults to ``cpu`` (a value already in the environment
    is kept); with it, a ``JAX_PLATFORMS=cpu`` inherited from the environment is dropped so that JAX
    picks its default platform (a GPU when there is one). Returns whether ``--device`` was given.
    Worker processes (``--_worker``) keep whatever their parent put in their environment.
    """
    argv = sys.argv if argv is None else argv
    device = "--device" in argv
    if "--_worker" in argv:
        return device
    if device:
        if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
            del os.environ["JAX_PLATFORMS"]
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    return device


def add_device_argument(parser) -> None:
    """Add the shared ``--device`` flag (see :func:`choose_platform`) to an argparse parser."""
    parser.add_argument("--device", action="store_true",
                        help="let JAX use its default platform (a GPU when there is one) instead of the CPU")


def worker_env(device: bool, **extra: str) -> dict:
    """Environment for a worker subprocess: ``JAX_PLATFORMS=cpu`` unless `device`, plus `extra`."""
    env = dict(os.environ, **extra)
    if device:
        if env.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
            env.pop("JAX_PLATFORMS")
    else:
        env["JAX_PLATFORMS"] = "cpu"
    return env


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``getrusage``; KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident memory of this process now, in MiB (psutil if present, else ``/proc``)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (other jobs on the machine inflate timings)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_facts() -> dict:
    """CPU count, memory, platform and Python of the machine running the benchmark."""
    facts = {"platform": platform.platform(), "python": platform.python_version(),
             "cpus": os.cpu_count(), "loadavg_at_start": loadavg()}
    try:
        facts["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        import psutil

        facts["memory_total_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        facts["memory_available_gib_at_start"] = round(psutil.virtual_memory().available / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    return facts


def launch_worker(script: str | Path, spec: dict, *, timeout: float, env: dict | None = None) -> dict:
    """Run ``python script --_worker JSON`` in a fresh process; return its JSON result.

    The worker must write its result to ``spec["out"] + ".json"``. The returned record adds the
    wall time of the whole process and the 1-minute load average before and after; on failure
    it holds ``error`` (timeout, or the exit status and the last lines of stderr) instead.
    """
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script), "--_worker", json.dumps(spec)],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "loadavg_1min_before_after": [load0, os.getloadavg()[0]]}
    record = {"process_s": time.perf_counter() - t0, "loadavg_1min_before_after": [load0, os.getloadavg()[0]]}
    out = Path(spec["out"] + ".json")
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        code = proc.returncode
        why = "killed (out of memory?)" if code in (-9, 137) else f"exit {code}"
        record["error"] = f"{why}: " + " | ".join(tail)
        return record
    record.update(json.loads(out.read_text()))
    return record


def fmt(x, spec: str = ".2f", missing: str = "n/a") -> str:
    """``format(x, spec)``, or `missing` for None."""
    return missing if x is None else format(x, spec)
