"""Every code block in README.md and docs/*.md runs as written.

Python blocks: the ```` ```python ```` blocks of one page run in order, in one namespace, in a fresh
interpreter (as a reader pastes them into one session), with the working directory a new
temporary folder ``<tmp>/clone`` beside which ``<tmp>/shared`` links to the real ``../shared``,
so a page that reads ``../shared/data/...`` finds the recordings where the README says they are.
A failure names the page and the line of the Markdown file (each block is compiled with the
page as its file name and its own line numbers).

A block that is deliberately not runnable (a signature, a cluster-only script, a fragment that
needs the reader's data) is marked by an HTML comment on the line before its fence, which the
site does not render::

    <!-- not-run: why -->

``test_skipped_blocks_are_listed`` prints every such block with its reason; keep them rare.
Pages whose blocks read ``../shared/data`` skip when it is absent.

Shell blocks (```` ```bash ````) are not run; each command line is checked instead: every
``python path.py`` names a script in the repository (``my_*.py`` is the reader's own script),
every ``python -m module`` an importable module, every ``bayesneuro sub`` a sub-command of
``bayesneuro/cli.py``, and every ``--option`` after a script or sub-command appears in its
source.

Configuration excerpts (```` ```toml ````, ```` ```yaml ````) must parse; ```` ```text ```` blocks
(program output, formulas) are shown as they are.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import REPO, finish_process, start_process

SHARED = REPO.parent / "shared"
# docs/build.py writes these; their sources are checked instead (bench/README.md is not a page)
GENERATED = {"performance.md"}
PAGES = [REPO / "README.md"] + sorted(p for p in (REPO / "docs").glob("*.md") if p.name not in GENERATED)

_FENCE_OPEN = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.+?)\s*-->\s*$")
# pages whose blocks take more than ~4 s in one interpreter (fits compile): marked slow
FAST_PAGES = {"data.md"}  # ~3 s on 2 cores (~25 s when five processes share them)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the first code line (the one after the fence)
    lang: str
    code: str
    skip: str | None  # the not-run reason

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        assert j < len(lines), f"{page.name}:{i + 1}: code fence never closed"
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = _NOT_RUN.match(prev.strip())
        out.append(Block(page, i + 2, m["lang"], "\n".join(lines[i + 1 : j]) + "\n", skip and skip["reason"]))
        i = j + 1
    return out


def _pages_with(lang: str) -> list[Path]:
    return [p for p in PAGES if any(b.lang == lang and not b.skip for b in blocks(p))]


def _page_param(page: Path):
    marks = [] if page.name in FAST_PAGES else [pytest.mark.slow]
    return pytest.param(page, id=page.name, marks=marks)


def test_every_page_is_found():
    assert (REPO / "README.md") in PAGES and len(PAGES) > 5


def test_skipped_blocks_are_listed(capsys):
    """Every block marked not-run, with its reason; a python block without a fence tag fails."""
    skipped = [b for p in PAGES for b in blocks(p) if b.skip]
    with capsys.disabled():
        print(f"\n{len(skipped)} code blocks are not run:")
        for b in skipped:
            print(f"  {b.where} ({b.lang or 'no language'}): {b.skip}")
    untagged = [b.where for p in PAGES for b in blocks(p) if not b.lang]
    assert not untagged, f"code blocks without a language tag (```python, ```bash, ```text): {untagged}"
    assert len(skipped) <= 8, "more than 8 blocks are not run: make examples runnable instead"


# ------------------------------------------------------------------------------------ python

_RUNNER = r"""
import sys, json, time, traceback
blocks = json.loads(sys.stdin.read())
ns = {"__name__": "__main__"}
for b in blocks:
    code = compile("\n" * (b["line"] - 1) + b["code"], b["page"], "exec")
    start = time.perf_counter()
    try:
        exec(code, ns)
    except BaseException:
        traceback.print_exc()
        print(f"DOC-BLOCK-FAILED {b['page']}:{b['line']}", file=sys.stderr)
        sys.exit(1)
    print(f"DOC-BLOCK-OK {b['page']}:{b['line']} {time.perf_counter() - start:.1f} s", flush=True)
"""


def _reads_shared(page: Path) -> bool:
    return any("shared/data" in b.code for b in blocks(page) if b.lang == "python" and not b.skip)


@pytest.mark.parametrize("page", [_page_param(p) for p in _pages_with("python")])
def test_python_blocks_run(page, tmp_path):
    import json

    if _reads_shared(page) and not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    clone = tmp_path / "clone"
    clone.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    todo = [
        {"page": str(b.page.relative_to(REPO)), "line": b.line, "code": b.code}
        for b in blocks(page)
        if b.lang == "python" and not b.skip
    ]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "MPLBACKEND": "Agg",
        "BAYESNEURO_PROGRESS": "0",
        "PYTHONWARNINGS": "default",
    }
    env.pop("BAYESNEURO_FAST", None)
    start = time.perf_counter()
    proc = start_process([sys.executable, "-c", _RUNNER], cwd=clone, env=env, stdin=subprocess.PIPE)
    out, err = finish_process(proc, 600, json.dumps(todo))  # killed on a timeout or interrupt
    failed = re.search(r"DOC-BLOCK-FAILED (\S+)", err)
    assert proc.returncode == 0, (
        f"{failed[1] if failed else page.name}: the block fails as written\n{err[-4000:]}"
    )
    done = out.count("DOC-BLOCK-OK")
    assert done == len(todo), f"{page.name}: {done} of {len(todo)} blocks ran\n{out}\n{err[-2000:]}"
    warned = sorted({line.strip() for line in err.splitlines() if "Warning:" in line})
    print(f"{page.name}: {done} blocks in {time.perf_counter() - start:.1f} s\n{out}", *warned, sep="\n")


# ------------------------------------------------------------------------------------- shell

_SHELL = {"bash", "sh", "console", "shell"}


def _commands(code: str):
    """Each simple command of a shell block, as a list of words (env assignments dropped)."""
    for raw in code.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part)
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words = words[1:]
            if words and words[0] in {"srun", "mpirun", "time", "nohup"}:
                words = words[1:]
            if words:
                yield words


def _options(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


def _check_command(words: list[str]) -> list[str]:
    """Problems with one command line (empty when it names things that exist)."""
    cli = (REPO / "bayesneuro" / "cli.py").read_text(encoding="utf-8")
    problems = []
    if words[0] in {"python", "python3"}:
        args = words[1:]
        if args[:1] == ["-m"]:
            module = args[1]
            if module == "bayesneuro":
                return _check_command(["bayesneuro", *args[2:]])
            if importlib.util.find_spec(module) is None:
                problems.append(f"module {module!r} is not installed")
            return problems
        script = args[0]
        if Path(script).name.startswith("my_"):
            return problems  # the reader's own script
        path = REPO / script
        if not path.is_file():
            problems.append(f"script {script} does not exist in the repository")
            return problems
        source = path.read_text(encoding="utf-8")
        problems += [f"{script} has no option {o}" for o in _options(args[1:]) if f'"{o}"' not in source]
    elif words[0] == "bayesneuro":
        args = words[1:]
        if args and not args[0].startswith("-"):
            if f'add_parser(\n        "{args[0]}"' not in cli and f'add_parser("{args[0]}"' not in cli:
                problems.append(f"bayesneuro has no sub-command {args[0]!r}")
            args = args[1:]
        problems += [f"bayesneuro has no option {o}" for o in _options(args) if f'"{o}"' not in cli]
    elif words[0] == "bash" and not (REPO / words[1]).is_file():
        problems.append(f"script {words[1]} does not exist in the repository")
    return problems


@pytest.mark.parametrize("page", [pytest.param(p, id=p.name) for p in _pages_with("bash")])
def test_shell_commands_exist(page):
    problems = [
        f"{b.where}: {' '.join(words)}: {problem}"
        for b in blocks(page)
        if b.lang in _SHELL and not b.skip
        for words in _commands(b.code)
        for problem in _check_command(words)
    ]
    assert not problems, "\n".join(problems)


def test_the_shell_check_can_fail():
    assert _check_command(["python", "models/no_such_model.py"])
    assert _check_command(["bayesneuro", "no-such-command"])
    assert _check_command(["python", "-m", "no_such_module_here"])
    assert not _check_command(["python", "-m", "bayesneuro", "demo", "--quiet"])


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "page", [pytest.param(p, id=p.name) for p in PAGES if any(b.lang in {"toml", "yaml"} for b in blocks(p))]
)
def test_config_excerpts_parse(page):
    import tomllib

    yaml = pytest.importorskip("yaml")
    bad = []
    for b in blocks(page):
        try:
            if b.lang == "toml":
                tomllib.loads(b.code)
            elif b.lang == "yaml":
                yaml.safe_load(b.code)
        except Exception as err:  # noqa: BLE001 - any parse error is the failure reported
            bad.append(f"{b.where}: {type(err).__name__}: {err}")
    assert not bad, "\n".join(bad)
