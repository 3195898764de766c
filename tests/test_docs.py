"""The documentation site's structure, checked without building it (the build is docs/build.py).

- every page in the ``nav`` of mkdocs.yml exists (for the pages that docs/build.py generates,
  their sources do), and every Markdown page under docs/ and every notebook is in the nav;
- every public module of bayesneuro (``pkgutil`` over the package, ``_private`` ones left out)
  has an API page under docs/api/ that renders it with ``::: module``, and every name that a
  package re-exports from a private module is rendered too;
- relative links between pages resolve to a page, and the generated Performance page links only
  to anchors that it defines.

Nothing is imported from bayesneuro and nothing is built, so this runs in well under a second.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import re
from functools import lru_cache
from pathlib import Path

import pytest

from .helpers import REPO

DOCS = REPO / "docs"
API = DOCS / "api"
PACKAGE = REPO / "bayesneuro"

_NAV_SECTION = re.compile(r"^\s*-\s+[^:]+:\s*$")
_NAV_PAGE = re.compile(r"^\s*-\s+(?:[^:]+:\s+)?(?P<page>[^\s:]+\.(?:md|ipynb))\s*$")
_DIRECTIVE = re.compile(r"^:::\s+(?P<ident>[\w.]+)\s*$", flags=re.MULTILINE)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCED = re.compile(r"^(```|~~~).*?^\1", flags=re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


@lru_cache(maxsize=1)
def build_script():
    """docs/build.py as a module (it is a script: importing it builds nothing)."""
    spec = importlib.util.spec_from_file_location("docs_build", DOCS / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@lru_cache(maxsize=1)
def nav_pages() -> tuple[str, ...]:
    """Every page of the nav, read from mkdocs.yml without a YAML library.

    The nav is a nested list of ``- Title: page``, ``- page`` and ``- Section:`` lines; any other
    line inside it fails the test, so a change of format cannot hide pages from these checks.
    """
    lines = (REPO / "mkdocs.yml").read_text(encoding="utf-8").splitlines()
    start = lines.index("nav:") + 1
    pages = []
    for line in lines[start:]:
        if line and not line[0].isspace() and not line.startswith("-"):
            break  # the next top-level key
        stripped = line.split(" #", 1)[0].rstrip()
        if not stripped.strip():
            continue
        if m := _NAV_PAGE.match(stripped):
            pages.append(m["page"])
        elif not _NAV_SECTION.match(stripped):
            pytest.fail(f"mkdocs.yml: cannot read nav line {line!r}")
    assert "index.md" in pages, "mkdocs.yml: the nav has no index.md (is it still under `nav:`?)"
    return tuple(pages)


def generated(page: str) -> bool:
    bs = build_script()
    return page in bs.GENERATED_PAGES or page.split("/", 1)[0] in bs.GENERATED_DIRS


def source_of(page: str) -> list[Path]:
    """Where a page comes from: itself, or the files docs/build.py makes it from."""
    if page == "performance.md":
        return [REPO / "bench" / "README.md", *sorted((REPO / "bench" / "results").glob("*.md"))]
    if page.startswith("notebooks/"):
        return [REPO / page]
    return [DOCS / page]


def written_pages() -> list[str]:
    """The Markdown pages kept in the repository (docs/build.py's outputs left out)."""
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    return sorted(p for p in pages if not generated(p))


def public_modules(path: Path = PACKAGE, prefix: str = "bayesneuro") -> list[str]:
    found = [prefix]
    for info in pkgutil.iter_modules([str(path)]):
        if info.name.startswith("_"):
            continue
        if info.ispkg:
            found += public_modules(path / info.name, f"{prefix}.{info.name}")
        else:
            found.append(f"{prefix}.{info.name}")
    return found


def rendered() -> set[str]:
    """Every identifier that an API page renders with ``::: identifier``."""
    return {m["ident"] for page in API.glob("*.md") for m in _DIRECTIVE.finditer(page.read_text())}


def links(markdown: str) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCED.sub("", markdown))
    return [m["target"] for m in _LINK.finditer(text)]


def test_nav_is_read():
    pages = nav_pages()
    assert len(pages) == len(set(pages)), f"pages listed twice in the nav: {sorted(p for p in pages if pages.count(p) > 1)}"
    assert any(p.startswith("api/") for p in pages) and any(p.endswith(".ipynb") for p in pages)


@pytest.mark.parametrize("page", nav_pages())
def test_nav_page_exists(page):
    missing = [p.relative_to(REPO).as_posix() for p in source_of(page) if not p.is_file()]
    assert source_of(page) and not missing, f"nav page {page}: missing {missing or 'sources'}"


def test_every_page_is_in_the_nav():
    nav = set(nav_pages())
    orphans = [p for p in written_pages() if p not in nav]
    assert not orphans, f"docs pages not in the nav of mkdocs.yml: {orphans}"
    notebooks = {f"notebooks/{p.name}" for p in (REPO / "notebooks").glob("*.ipynb")}
    assert notebooks, "no notebooks found in notebooks/"
    assert not notebooks - nav, f"notebooks not in the nav of mkdocs.yml: {sorted(notebooks - nav)}"
    for page in build_script().GENERATED_PAGES:
        assert page in nav, f"docs/build.py generates {page}, but the nav does not list it"


def test_every_api_page_is_in_the_nav():
    nav = set(nav_pages())
    pages = sorted(f"api/{p.name}" for p in API.glob("*.md"))
    assert "api/index.md" in pages
    assert not set(pages) - nav, f"API pages not in the nav: {sorted(set(pages) - nav)}"


@pytest.mark.parametrize("module", public_modules())
def test_public_module_has_an_api_page(module):
    assert module in rendered(), (
        f"no page under docs/api/ renders {module}: add a line `::: {module}` to the page of its "
        "package (and the page to the nav of mkdocs.yml if it is new)"
    )


def test_reexports_from_private_modules_are_documented():
    """A package's ``__all__`` names defined in a ``_private`` module have no public module page."""
    shown = rendered()
    missing = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(REPO).parts)
        if any(part.startswith("_") for part in package.split(".")):
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        exported = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                exported = set(ast.literal_eval(node.value))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and (node.module or "").startswith("_"):
                for alias in node.names:
                    name = alias.asname or alias.name
                    if name in exported and f"{package}.{name}" not in shown:
                        missing.append(f"{package}.{name}")
    assert not missing, f"re-exported from private modules but on no API page: {missing}"


@pytest.mark.parametrize("page", written_pages())
def test_relative_links_resolve(page):
    nav = set(nav_pages())
    broken = []
    for target in links((DOCS / page).read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # external, mailto:, or an anchor in the same page (mkdocs --strict checks those)
        path = target.split("#", 1)[0]
        resolved = (DOCS / page).parent.joinpath(path).resolve()
        try:
            rel = resolved.relative_to(DOCS.resolve()).as_posix()
        except ValueError:
            broken.append(f"{target} (outside docs/)")
            continue
        if rel.endswith((".md", ".ipynb")):
            if rel not in nav and not (DOCS / rel).is_file():
                broken.append(target)
            elif not all(p.is_file() for p in source_of(rel)):
                broken.append(f"{target} (source missing)")
        elif not resolved.exists():
            broken.append(target)
    assert not broken, f"docs/{page}: links that do not resolve: {broken}"


def test_performance_page_anchors():
    text = build_script().performance_markdown()
    defined = set(re.findall(r"\{#([\w-]+)\}", text))
    results = sorted((REPO / "bench" / "results").glob("*.md"))
    assert results, "no benchmark tables in bench/results/"
    for path in results:
        assert build_script().result_anchor(path.stem) in defined, f"{path.name} is not on the page"
    targets = links(text)
    outside = [t for t in targets if not t.startswith("#") and not re.match(r"^[a-z]+:", t)]
    assert not outside, f"bench/README.md links to files that the docs site does not have: {outside}"
    undefined = [t for t in targets if t.startswith("#results") and t[1:] not in defined]
    assert not undefined, f"Performance page links to missing sections: {undefined}"


# ---------------------------------------------------------------------------- notebooks in the build


def _fake_run(nb, text):
    """``nb`` as if executed: each code cell gets one stream output."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat_v4().new_output("stream", name="stdout", text=text)]
    return nb


def nbformat_v4():
    import nbformat.v4

    return nbformat.v4


@pytest.fixture
def notebook_build(tmp_path, monkeypatch):
    """docs/build.py with its notebook folders in tmp_path and a recording executor."""
    import nbformat

    bs = build_script()
    src = tmp_path / "notebooks"
    src.mkdir()
    stored = sorted((REPO / "notebooks").glob("*.ipynb"))[:2]
    assert len(stored) == 2, "fewer than two notebooks in notebooks/"
    for path in stored:
        (src / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(bs, "NOTEBOOK_SRC", src)
    monkeypatch.setattr(bs, "NOTEBOOK_DST", tmp_path / "docs_notebooks")
    calls = []

    def fake_execute(path):
        calls.append(path.name)
        return _fake_run(nbformat.read(path, as_version=4), "executed by the build\n")

    monkeypatch.setattr(bs, "execute_notebook", fake_execute)
    return bs, src, tmp_path / "executed", calls


def _outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return {out.get("text") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs}


def test_build_uses_an_executed_copy_and_executes_a_missing_one(notebook_build):
    import nbformat

    bs, src, executed, calls = notebook_build
    first, second = sorted(p.name for p in src.glob("*.ipynb"))
    executed.mkdir()
    ran = _fake_run(nbformat.read(src / first, as_version=4), "from the test run\n")
    nbformat.write(ran, executed / first)

    which = bs.copy_notebooks(executed)  # the default build
    assert calls == [second], f"executed {calls}, expected only the notebook without a copy"
    assert "executed copy" in which[first] and "executed now" in which[second], which
    assert _outputs(bs.NOTEBOOK_DST / first) == {"from the test run\n"}
    assert _outputs(bs.NOTEBOOK_DST / second) == {"executed by the build\n"}
    # the copy made by the build is kept for the next one
    assert _outputs(executed / second) == {"executed by the build\n"}
    calls.clear()
    bs.copy_notebooks(executed)
    assert calls == []


def test_build_executes_a_stale_copy(notebook_build):
    import nbformat

    bs, src, executed, calls = notebook_build
    first = min(p.name for p in src.glob("*.ipynb"))
    executed.mkdir()
    ran = _fake_run(nbformat.read(src / first, as_version=4), "old\n")
    ran.cells[0].source += "\n# edited since"
    nbformat.write(ran, executed / first)
    bs.copy_notebooks(executed)
    assert first in calls
    assert _outputs(bs.NOTEBOOK_DST / first) == {"executed by the build\n"}


def test_build_without_execution(notebook_build, monkeypatch):
    bs, _, executed, calls = notebook_build
    which = bs.copy_notebooks(executed, execute=False)
    assert calls == [] and all("not executed" in kind for kind in which.values()), which
    assert all(not _outputs(p) for p in bs.NOTEBOOK_DST.glob("*.ipynb"))
    with pytest.raises(bs.NotebookError, match="no executed copy"):
        bs.copy_notebooks(executed, execute=False, strict=True)
    monkeypatch.setenv("BAYESNEURO_EXECUTED_NOTEBOOKS", str(executed))
    assert bs.main(["--no-execute", "--strict", "--no-mkdocs"]) == 1


def test_build_refuses_to_execute_without_the_recordings(tmp_path, monkeypatch):
    bs = build_script()
    monkeypatch.setenv("BAYESNEURO_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(bs.NotebookError, match="recordings are not at"):
        bs.execute_notebook(min((REPO / "notebooks").glob("*.ipynb")))
