"""Build the documentation site: ``python docs/build.py [--strict] [--no-execute]``.

1. Puts an executed copy of every notebook, outputs and figures included, into
   ``docs/notebooks/`` (gitignored). The notebooks are stored without outputs; an executed copy
   lives in ``$BAYESNEURO_EXECUTED_NOTEBOOKS`` (default ``build/executed_notebooks``), written by
   ``tests/test_notebooks.py`` or by this script. A copy is up to date when its cells' sources
   equal the stored notebook's. A notebook without an up-to-date copy is executed here, with the
   settings of ``tests/test_notebooks.py`` (``BAYESNEURO_FAST=1``, a fresh kernel in
   ``notebooks/``, real recordings from ``../shared/data`` or ``$BAYESNEURO_DATA``; minutes per
   notebook), and the copy is saved for the next build. ``--execute`` re-executes every notebook;
   ``--no-execute`` copies the stored notebooks as they are (a quick build whose notebook pages
   show code without outputs), and with ``--strict`` makes a missing or stale copy an error.
2. Writes ``docs/performance.md`` (gitignored) from ``bench/README.md`` and the tables in
   ``bench/results/*.md``, so the numbers are never retyped.
3. Runs ``mkdocs build --site-dir site`` (``--strict`` with ``--strict``: any warning fails).

``--no-mkdocs`` does steps 1 and 2 only (then ``mkdocs serve`` works for previewing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
NOTEBOOK_SRC = REPO / "notebooks"
NOTEBOOK_DST = DOCS / "notebooks"
BENCH = REPO / "bench"
PERFORMANCE = DOCS / "performance.md"
DEFAULT_EXECUTED = REPO / "build" / "executed_notebooks"

# pages that this script writes; tests/test_docs.py checks their sources instead of the files
GENERATED_PAGES = ("performance.md",)
GENERATED_DIRS = ("notebooks",)


def executed_dir() -> Path:
    return Path(os.environ.get("BAYESNEURO_EXECUTED_NOTEBOOKS", DEFAULT_EXECUTED))


def _sources(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


class NotebookError(RuntimeError):
    """A notebook could not be executed, or has no executed copy where one is required."""


def data_dir() -> Path:
    """Where the notebooks read the recordings from (as ``tests/test_notebooks.py``)."""
    return Path(os.environ.get("BAYESNEURO_DATA", REPO.parent / "shared" / "data"))


# the environment tests/test_notebooks.py gives the kernel: fast settings, no progress bars
EXECUTION_ENV = {"BAYESNEURO_FAST": "1", "BAYESNEURO_PROGRESS": "0", "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}


def execute_notebook(path: Path):
    """Run one stored notebook in a fresh kernel, as ``tests/test_notebooks.py`` does; returns it."""
    import nbclient

    if not data_dir().is_dir():
        raise NotebookError(
            f"{path.name}: cannot execute it: the recordings are not at {data_dir()} (set "
            "BAYESNEURO_DATA), or build with --no-execute to show the notebooks without outputs"
        )
    nb = nbformat.read(path, as_version=4)
    saved = {name: os.environ.get(name) for name in EXECUTION_ENV}
    os.environ.update(EXECUTION_ENV)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        raise NotebookError(f"{path.name} failed:\n{err}") from err
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return nb


def copy_notebooks(
    executed: Path | None = None, *, execute: bool | None = True, strict: bool = False
) -> dict[str, str]:
    """Put every ``notebooks/*.ipynb`` into ``docs/notebooks/``; returns name -> which copy.

    ``execute=True`` runs a notebook that has no up-to-date executed copy (and saves the copy);
    ``execute=None`` re-runs every notebook; ``execute=False`` copies the stored notebook, which
    with ``strict`` raises ``NotebookError`` instead.
    """
    executed = executed_dir() if executed is None else executed
    if NOTEBOOK_DST.exists():
        shutil.rmtree(NOTEBOOK_DST)
    NOTEBOOK_DST.mkdir(parents=True)
    which = {}
    for src in sorted(NOTEBOOK_SRC.glob("*.ipynb")):
        stored = nbformat.read(src, as_version=4)
        candidate = executed / src.name
        chosen, kind = None, "no executed copy"
        if candidate.is_file() and execute is not None:
            ran = nbformat.read(candidate, as_version=4)
            if _sources(ran) == _sources(stored):
                chosen, kind = ran, f"executed copy from {candidate}"
            else:
                kind = "executed copy is stale: its cells differ from the stored notebook"
        if chosen is None and execute is not False:
            print(f"docs/build.py: executing notebooks/{src.name} ({kind}) ...", flush=True)
            start = time.perf_counter()
            chosen = execute_notebook(src)
            executed.mkdir(parents=True, exist_ok=True)
            nbformat.write(chosen, candidate)
            kind = f"executed now in {time.perf_counter() - start:.0f} s (saved to {candidate})"
        elif chosen is None:
            if strict:
                raise NotebookError(
                    f"notebooks/{src.name}: {kind} in {executed} and --no-execute was given: run "
                    "tests/test_notebooks.py with BAYESNEURO_EXECUTED_NOTEBOOKS set, or build "
                    "without --no-execute"
                )
            chosen, kind = stored, f"not executed ({kind}; --no-execute)"
        nbformat.write(chosen, NOTEBOOK_DST / src.name)
        which[src.name] = kind
    return which


# ---------------------------------------------------------------------------- performance page

_HEADING = re.compile(r"^(#{1,6})(\s)", flags=re.MULTILINE)
_RESULT_LINK = re.compile(r"\]\((?:\./)?results/([A-Za-z0-9_.-]+)\.md\)")
_FENCE = re.compile(r"^(```|~~~)")


def result_anchor(stem: str) -> str:
    return "results-" + re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")


def _headings(text: str):
    """(line index, level) of every Markdown heading outside fenced code."""
    fenced = False
    for i, line in enumerate(text.splitlines()):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            yield i, len(m[1])


def _result_section(path: Path) -> str:
    """One results file as a section of the page: its title, then its text one level down."""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    heads = list(_headings("\n".join(lines)))
    title = path.stem
    if heads and heads[0][0] == 0:  # the file's own title heads the section
        title = lines[0].lstrip("#").strip()
        lines, heads = lines[1:], [(i - 1, level) for i, level in heads[1:]]
    shift = 4 - min((level for _, level in heads), default=4)
    for i, level in heads:
        lines[i] = "#" * min(6, level + shift) + lines[i][level:]
    json = path.with_suffix(".json")
    source = f"`bench/results/{path.name}`" + (
        f", raw numbers in `bench/results/{json.name}`" if json.is_file() else ""
    )
    body = _link_results("\n".join(lines).strip())
    return f"### {title}: `{path.name}` {{#{result_anchor(path.stem)}}}\n\n*From {source}.*\n\n{body}\n"


def _link_results(text: str) -> str:
    return _RESULT_LINK.sub(lambda m: f"](#{result_anchor(m[1])})", text)


def performance_markdown() -> str:
    """The Performance page: bench/README.md, then every bench/results/*.md table file."""
    readme = (BENCH / "README.md").read_text(encoding="utf-8")
    # the README's own title is replaced by the page's
    readme = re.sub(r"\A\s*# [^\n]*\n", "", readme)
    results = sorted((BENCH / "results").glob("*.md"))
    parts = [
        "# Performance",
        "",
        "<!-- generated by docs/build.py from bench/README.md and bench/results/*.md: edit those -->",
        "",
        (
            "Benchmarks of bayesneuro against other tools, from `bench/`. The text below is the "
            "benchmarks' README; the [result tables](#result-tables) are the files that the "
            "benchmark scripts wrote in `bench/results/`, shown as they are."
        ),
        "",
        _link_results(readme).strip(),
        "",
        "## Result tables {#result-tables}",
        "",
    ]
    parts += [_result_section(path) for path in results]
    return "\n".join(parts).rstrip() + "\n"


def write_performance() -> Path:
    PERFORMANCE.write_text(performance_markdown(), encoding="utf-8")
    return PERFORMANCE


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail on any mkdocs warning")
    parser.add_argument("--no-mkdocs", action="store_true", help="prepare docs/ but do not build")
    parser.add_argument("--site-dir", default="site", help="output folder (default: site)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument(
        "--no-execute",
        action="store_true",
        help="do not execute notebooks: those without an executed copy show code only "
        "(an error with --strict)",
    )
    run.add_argument("--execute", action="store_true", help="re-execute every notebook")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        which = copy_notebooks(execute=None if args.execute else not args.no_execute, strict=args.strict)
    except NotebookError as err:
        print(f"docs/build.py: {err}", file=sys.stderr)
        return 1
    for name, kind in which.items():
        print(f"docs/build.py: notebooks/{name}: {kind}")
    if not which:
        print("docs/build.py: no notebooks found in notebooks/", file=sys.stderr)
        return 1
    print(f"docs/build.py: wrote {write_performance().relative_to(REPO)}")
    if args.no_mkdocs:
        return 0
    cmd = [sys.executable, "-m", "mkdocs", "build", "--site-dir", args.site_dir]
    if args.strict:
        cmd.append("--strict")
    print("docs/build.py: " + " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's banner about MkDocs 2
    status = subprocess.call(cmd, cwd=REPO, env=env)
    print(f"docs/build.py: {'done' if status == 0 else 'FAILED'} in {time.perf_counter() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
