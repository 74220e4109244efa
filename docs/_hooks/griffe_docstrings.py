"""Griffe extension: render the package's Sphinx-flavoured docstring bits as Markdown on the docs site.

The package's docstrings are Google style, with a few reStructuredText habits that read well in a terminal
(``help()``) and that doctest and IDEs understand. mkdocstrings renders Markdown, so at load time this extension
rewrites, in the rendered copy only (the source is untouched):

* ``Example:`` section titles to ``Examples:``, so ``>>>`` examples render as code;
* ``:class:`~pkg.Name``` (and ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:exc:``, ``:obj:``) to
  inline code (``Name`` for a ``~`` target);
* ``:math:`x``` to ``$x$`` and ``.. math::`` blocks to ``$$ ... $$`` (pymdownx.arithmatex);
* a paragraph ending in ``::`` followed by an indented block to a ``:`` and a fenced code block.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _blocks(text: str) -> str:
    """``.. math::`` blocks to ``$$``, ``::`` literal blocks to fenced code."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        math = stripped.startswith(".. math::")
        literal = stripped.endswith("::") and not math and not stripped.startswith("..")
        if not (math or literal):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        body: list[str] = []
        if math and stripped[len(".. math::") :].strip():
            body.append(stripped[len(".. math::") :].strip())
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            body.append(lines[j])
            j += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if not [b for b in body if b.strip()]:
            out.append(line)
            i += 1
            continue
        pad = " " * indent
        content = [b.strip() if math else b[indent + 4 :] if len(b) > indent + 4 else b.strip() for b in body]
        if math:
            out += [f"{pad}$$", *(f"{pad}{c}" for c in content if c), f"{pad}$$", ""]
        else:
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(head + ":")
            fence_lang = "yaml" if any(c.lstrip().startswith(("model:", "trainer:", "data:")) for c in content) else ""
            out += ["", f"{pad}```{fence_lang or 'python'}", *(f"{pad}{c}" for c in content), f"{pad}```", ""]
        i = j
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The Markdown rendering of one docstring."""
    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(_role, text)
    return _blocks(text)


class SphinxToMarkdown(Extension):
    """Apply :func:`rewrite` to every docstring griffe loads."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
