"""Progress bars: a notebook widget where one can show, plain text everywhere else.

``tqdm.auto`` picks the notebook widget whenever it runs inside a Jupyter kernel and, when
ipywidgets is not installed, warns ("IProgress not found") at import time before falling back
to text. bayesneuro does not depend on ipywidgets, so every bar in the package goes through
:func:`progress_bar`, which uses the widget only when a kernel is running *and* ipywidgets
imports, and the plain-text bar (``tqdm.std``, written to stderr) otherwise, without a warning.

Loops with an iteration cap that usually stop earlier (optimisers, EM, Boltzmann learning)
open their bar with ``at_most=True``: the label reads ``"MAP (≤2000 it)"``, no remaining time
is estimated (it would be the time to reach the cap), and :func:`finish` makes the count
where the loop stopped the bar's total, so a finished bar reads ``35/35``, not ``35/2000``.

``BAYESNEURO_PROGRESS=0`` (or ``false``, ``no``, ``off``) silences every bar by default.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["finish", "progress_bar", "progress_default"]

# no "<{remaining}" ETA: for a capped loop it would be the time to reach the cap
_AT_MOST_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def progress_default() -> bool:
    """Whether progress bars show by default (``BAYESNEURO_PROGRESS=0`` silences them).

    Examples
    --------
    >>> from unittest import mock
    >>> from bayesneuro._progress import progress_default
    >>> with mock.patch.dict("os.environ", {"BAYESNEURO_PROGRESS": "off"}):
    ...     progress_default()
    False
    """
    return os.environ.get("BAYESNEURO_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def _in_kernel() -> bool:
    """Whether this process is a Jupyter kernel that renders widgets (the test of ``tqdm.autonotebook``)."""
    if "ipykernel.zmqshell" in sys.modules:
        if any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ):
            return False  # qtconsole / Spyder: no widgets
        try:
            name = type(sys.modules["IPython"].get_ipython()).__name__.lower()
        except (KeyError, AttributeError):
            return False
        return "qt" not in name and "spyder" not in name
    return "IPython.utils._process_emscripten" in sys.modules  # JupyterLite


def _widgets_importable() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def bar_class() -> type:
    """The tqdm class to use here: ``tqdm.notebook.tqdm`` in a kernel with ipywidgets, else ``tqdm.std.tqdm``."""
    if _in_kernel() and _widgets_importable():
        from tqdm.notebook import IProgress
        from tqdm.notebook import tqdm as notebook_tqdm

        if IProgress is not None:
            return notebook_tqdm
    from tqdm.std import tqdm as text_tqdm

    return text_tqdm


def _quiet_tqdm_auto() -> None:
    """Import ``tqdm.auto`` once, without its "IProgress not found" warning, in a kernel without ipywidgets.

    NumPyro imports ``tqdm.auto`` when it is imported (its MCMC bars); in a Jupyter kernel without
    ipywidgets that import warns and falls back to the text bar, which is what bayesneuro wants
    there. Importing it here first (``bayesneuro/__init__`` imports this module before NumPyro),
    with exactly that warning silenced, leaves the cached text fallback for everyone after.
    """
    if "tqdm.autonotebook" in sys.modules or not _in_kernel() or _widgets_importable():
        return
    from tqdm.std import TqdmWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
        import tqdm.auto  # noqa: F401


_quiet_tqdm_auto()


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    disable: bool | None = None,
    leave: bool = True,
    at_most: bool = False,
    **kwargs: Any,
):
    """A tqdm bar: a widget in a Jupyter kernel with ipywidgets, plain text otherwise.

    Parameters
    ----------
    iterable : iterable, optional
        Iterate over it with the bar, as ``tqdm(iterable)``.
    total : int, optional
        Number of steps (``len(iterable)`` when omitted).
    desc : str, optional
        Label.
    disable : bool, optional
        Hide the bar; default ``not progress_default()`` (``BAYESNEURO_PROGRESS``).
    leave : bool, default True
        Keep the finished bar on screen.
    at_most : bool, default False
        ``total`` is a cap that the loop may stop before (``max_iter``): the label says
        ``"≤ total it"``, no remaining time is shown, and :func:`finish` sets the total to the
        count reached.
    **kwargs
        Other ``tqdm`` arguments.

    Returns
    -------
    tqdm.std.tqdm or tqdm.notebook.tqdm

    Examples
    --------
    >>> import io
    >>> from bayesneuro._progress import finish, progress_bar
    >>> out = io.StringIO()
    >>> bar = progress_bar(total=2000, desc="MAP", at_most=True, disable=False, file=out)
    >>> bar.update(35)  # the optimiser converged after 35 iterations
    >>> finish(bar); bar.close()
    >>> out.getvalue().split("\\r")[-1].split(" [")[0]
    'MAP (≤2000 it): 100%|##########| 35/35'
    """
    if disable is None:
        disable = not progress_default()
    if at_most and total is not None:
        desc = f"{desc} (≤{total} it)" if desc else f"≤{total} it"
        kwargs.setdefault("bar_format", _AT_MOST_FORMAT)
    return bar_class()(iterable, total=total, desc=desc, disable=bool(disable), leave=leave, **kwargs)


def finish(bar) -> None:
    """The loop ended at ``bar.n``: make that the total if it stopped before its cap, and redraw (``35/35``).

    Call it when the loop stops normally (converged), not when it raises.
    """
    if bar.total is not None and bar.n < bar.total:
        bar.total = bar.n
        container = getattr(bar, "container", None)  # the notebook widget keeps its own maximum
        if container is not None:
            container.children[1].max = bar.n
    bar.refresh()  # also draws a last state that tqdm's update interval skipped
