"""A griffe extension for the docs build: the reST bits of bayesneuro's docstrings, as Markdown.

The docstrings are numpydoc, written with Sphinx roles and directives. mkdocstrings renders
docstrings as Markdown, so before rendering this extension rewrites, in every docstring of the
package:

- ``:math:`x``` into ``$x$`` and ``.. math::`` blocks into ``$$ ... $$`` (pymdownx.arithmatex
  renders both with MathJax; a block with ``&`` or ``\\\\`` is wrapped in ``aligned``);
- ``:class:`~a.b.C```, ``:func:`fit```, ``:meth:`title <a.B.m>```, ``:mod:`.single``` and the
  other Python roles into optional autorefs cross-references: a link where the target is
  documented in the site, plain code otherwise (an unresolved optional reference never warns).
  Relative names are resolved in the scope of the object that holds the docstring.

Loaded from ``mkdocs.yml`` (``plugins > mkdocstrings > handlers > python > options >
extensions``); paths there are relative to the repository root, where ``docs/build.py`` runs
mkdocs. Nothing here touches the library.
"""

from __future__ import annotations

import html
import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|mod|attr|data|obj|exc|const):`(?P<body>[^`]+)`")
_MATH_ROLE = re.compile(r":math:`(?P<body>[^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


def _math_blocks(text: str) -> str:
    """``.. math::`` directives (inline expression or indented block) into ``$$`` blocks."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        body = [match["rest"]] if match["rest"].strip() else []
        i += 1
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= len(indent):
                break
            body.append(line.strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        while body and not body[0]:
            body.pop(0)
        expr = "\n".join(indent + b for b in body if b)
        if "&" in expr or "\\\\" in expr:
            expr = f"{indent}\\begin{{aligned}}\n{expr}\n{indent}\\end{{aligned}}"
        if out and out[-1].strip():
            out.append("")
        out.extend([f"{indent}$$", expr, f"{indent}$$", ""])
        if i < len(lines) and not lines[i].strip():
            i += 1  # the blank line after the block is already there
    return "\n".join(out)


def _resolve(obj: griffe.Object, target: str) -> str:
    """Full dotted path of ``target`` as seen from ``obj``; ``target`` itself when unknown."""
    if target.startswith("."):
        module = obj if obj.is_module else obj.module
        package = module if module.is_init_module else module.parent
        stripped = target.lstrip(".")
        for _ in range(len(target) - len(stripped) - 1):
            package = package.parent or package
        return f"{package.path}.{stripped}"
    head, _, tail = target.partition(".")
    scope = obj
    while scope is not None:
        if head in scope.members and not scope.is_module:  # a method's sibling (Sphinx's rule)
            return f"{scope.path}.{target}"
        try:
            resolved = scope.resolve(head)
        except Exception:  # noqa: BLE001 - griffe raises several kinds; any means "unknown here"
            scope = scope.parent
            continue
        return f"{resolved}.{tail}" if tail else resolved
    return target


def _canonical(obj: griffe.Object, path: str) -> str:
    """Where ``path`` (maybe through re-exports: ``bayesneuro.PoissonLDS.score``) is defined."""
    try:
        return obj.modules_collection.get_member(path).canonical_path
    except Exception:  # noqa: BLE001 - not loaded, external, or an alias that does not resolve
        return path


def _role_to_ref(obj: griffe.Object, match: re.Match) -> str:
    body = match["body"].strip()
    explicit = _EXPLICIT.match(body)
    if explicit and explicit["title"]:
        title, target = explicit["title"], explicit["target"].strip()
    else:
        target = body
        title = target.lstrip("~").rsplit(".", 1)[-1] if target.startswith("~") else target.lstrip(".")
    target = target.lstrip("~")
    identifier = _canonical(obj, _resolve(obj, target))
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _math_role(match: re.Match) -> str:
    return f"${match['body'].strip()}$"


def rewrite(obj: griffe.Object, text: str) -> str:
    """The Markdown form of one docstring of ``obj``."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(_math_role, text)
    return _ROLE.sub(lambda m: _role_to_ref(obj, m), text)


class RstToMarkdown(griffe.Extension):
    """Rewrite reST roles and math directives in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:  # noqa: D102
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    stack.append(member)
