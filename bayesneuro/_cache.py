"""Opt-in persistent compilation cache: compiled XLA programs saved on disk and reused across sessions.

JAX compiles each program on its first call in a Python process. With the persistent cache
enabled, the compiled programs are written to a directory and a later process (a new notebook
kernel, a script run again) loads them instead of compiling again. bayesneuro leaves it off by
default (it writes files in the user's cache directory); one line turns it on::

    import bayesneuro as bn
    bn.enable_compilation_cache()   # before the first fit of the session

Examples
--------
>>> import bayesneuro as bn
>>> bn.enable_compilation_cache()  # doctest: +SKIP
PosixPath('/home/me/.cache/bayesneuro/jax')
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "enable_compilation_cache"]


def default_cache_dir() -> Path:
    """``$BAYESNEURO_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesneuro/jax``, else ``~/.cache/bayesneuro/jax``.

    Examples
    --------
    >>> from bayesneuro._cache import default_cache_dir
    >>> default_cache_dir().name
    'jax'
    """
    env = os.environ.get("BAYESNEURO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "bayesneuro" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None, *, min_compile_time_secs: float = 0.0,
                             min_entry_size_bytes: int = 0) -> Path:
    """Save compiled programs to `path` and load them in later sessions (JAX's persistent cache).

    Call it once per Python session, before the first fit: the programs compiled afterwards are
    written to `path`, and a later session that enables the same directory loads them instead of
    compiling them again (the first fit of a new session then costs about what the second one
    does). The entries are keyed by the program, the JAX/XLA version and the device, so a stale
    entry is never used; delete the directory to reclaim the space.

    Parameters
    ----------
    path : str or path-like, optional
        The cache directory (created if missing). Default :func:`default_cache_dir`
        (``~/.cache/bayesneuro/jax``, or ``$BAYESNEURO_CACHE_DIR``).
    min_compile_time_secs : float, default 0.0
        Programs that compiled faster than this are not saved. JAX's own default (1 s) would skip
        most of bayesneuro's programs, which are many and individually quick to compile.
    min_entry_size_bytes : int, default 0
        Programs smaller than this are not saved.

    Returns
    -------
    pathlib.Path
        The cache directory in use.

    Examples
    --------
    >>> import bayesneuro as bn
    >>> cache = bn.enable_compilation_cache()  # doctest: +SKIP
    >>> bn.enable_compilation_cache("~/bn-cache").name  # another folder  # doctest: +SKIP
    'bn-cache'

    The test suite checks that a second process loads what a first one saved
    (``tests/test_compile_budget.py``); the examples are skipped so that they do not switch the
    cache on in the process running them.
    """
    import jax

    cache = Path(path).expanduser() if path is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    try:  # JAX initialises the cache once per process: re-point it if a fit already ran
        from jax._src import compilation_cache as _cc

        _cc.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        pass
    return cache
