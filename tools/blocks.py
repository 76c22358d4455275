"""Generated blocks in the README and the docs pages.

A block is the text between ``<!-- name -->`` and ``<!-- /name -->``.
``tools/figures.py`` and ``tools/structure.py --write`` write blocks; each
block lives in exactly one of README.md and docs/**/*.md (the page its
section is on), and is found there by its markers, so a section can move
to another page without touching the scripts.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def pages(root: Path) -> list[Path]:
    """The files blocks may live in: README.md, then the docs pages."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def holder(root: Path, name: str) -> Path:
    """The one page that holds the block ``name``."""
    begin, end = markers(name)
    found = [p for p in pages(root) if begin in p.read_text(encoding="utf-8")]
    if len(found) != 1:
        where = ", ".join(str(p.relative_to(root)) for p in found) or "no page"
        raise SystemExit(f"the block {begin} must be in exactly one page, found in {where}")
    if end not in found[0].read_text(encoding="utf-8"):
        raise SystemExit(f"{found[0].relative_to(root)} has {begin} but no {end}")
    return found[0]


def replace(text: str, name: str, body: str) -> str:
    """``text`` with the block ``name`` holding ``body``."""
    begin, end = markers(name)
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + body + "\n" + text[stop:]


def read(root: Path, name: str) -> str:
    """What the block ``name`` holds now, stripped."""
    begin, end = markers(name)
    text = holder(root, name).read_text(encoding="utf-8")
    return text[text.index(begin) + len(begin):text.index(end)].strip()


def write(root: Path, name: str, body: str) -> Path:
    """Put ``body`` in the block ``name``, in the page that holds it; that page."""
    path = holder(root, name)
    text = path.read_text(encoding="utf-8")
    new = replace(text, name, body)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return path
