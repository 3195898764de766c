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

def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the test process dies (even by os._exit, as
    pytest-timeout's thread method ends a hung test)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def start_process(argv, **kwargs):
    """``subprocess.Popen(argv, ...)`` whose child is killed with the test process (Linux).

    Use it with :func:`finish_process` or inside :func:`killing`, so that a timeout or a failure
    kills the child too.
    """
    import subprocess
    import sys

    if sys.platform.startswith("linux"):
        kwargs.setdefault("preexec_fn", _die_with_parent)
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
