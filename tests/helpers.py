"""Helpers shared by tests: loading the models/ gallery by path."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_gallery(name: str):
    """Import ``models/<name>.py`` as a module (the gallery is scripts, not a package)."""
    path = REPO / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- subprocesses that never outlive their test ----

# A launcher that sets PR_SET_PDEATHSIG (the child gets SIGKILL when the test process dies, even
# by os._exit, as pytest-timeout's thread method ends a hung test) and then execs the command. A
# preexec_fn would do the same but makes subprocess fork() a multi-threaded JAX process, which can
# deadlock (and JAX warns about it).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # 1 = PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"  # the test process died before prctl
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def start_process(argv, **kwargs):
    """``subprocess.Popen(argv, ...)`` whose child is killed with the test process (Linux).

    Use it with :func:`finish_process` or inside :func:`killing`, so that a timeout or a failure
    kills the child too.
    """
    import os
    import subprocess
    import sys

    argv = [str(a) for a in argv]
    if sys.platform.startswith("linux"):
        argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(argv, **kwargs)


def finish_process(proc, timeout: float, stdin: str | None = None) -> tuple[str, str]:
    """``proc.communicate(stdin, timeout)``; on a timeout or any error the child is killed and
    reaped before the exception goes on (``Popen.communicate`` alone leaves it running)."""
    try:
        return proc.communicate(stdin, timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


class killing:
    """Context manager: every process in ``procs`` is killed and reaped on leaving the block, so
    a test that fails or times out while waiting for one of several workers leaves none behind."""

    def __init__(self, procs):
        self.procs = list(procs)

    def __enter__(self):
        return self.procs

    def __exit__(self, *exc):
        import subprocess

        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # killed but not reaped in 30 s: leave it to init
                continue
        return False
