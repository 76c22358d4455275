"""The bottom of the terminal: live blocks that other output never overwrites.

A live display (the progress of a run) draws a block of lines at the bottom
of the terminal and redraws it in place.  Any other line written to the same
terminal by daskflow (its log lines) goes through :func:`above`: the blocks
are erased, the line is written where they were, and the blocks are drawn
again below it.  So log lines scroll up in order, none is overwritten, and
no stale line of a block is left behind.  When a display ends, its last
block stays on the screen as ordinary text.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from collections.abc import Iterator
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_lock = threading.RLock()
_blocks: dict[int, list[str]] = {}  # live block by owner id, in the order they appeared
_shown = 0  # lines drawn at the bottom now
_stream: Any = None


def show(owner: object, lines: list[str], stream: Any) -> None:
    """Draw (or redraw) ``owner``'s block at the bottom of ``stream``."""
    global _stream
    with _lock:
        _erase()
        _stream = stream
        _blocks[id(owner)] = list(lines)
        _draw()


def close(owner: object) -> None:
    """End ``owner``'s block: its last lines stay as ordinary text."""
    with _lock:
        lines = _blocks.get(id(owner))
        if lines is None:
            return
        _erase()
        del _blocks[id(owner)]
        _write(lines)
        _draw()


@contextlib.contextmanager
def above() -> Iterator[None]:
    """Around a write of other lines: the blocks are lifted while it happens."""
    with _lock:
        if not _blocks:
            yield
            return
        _erase()
        try:
            yield
        finally:
            _draw()


def _erase() -> None:
    global _shown
    if _shown and _stream is not None:
        _stream.write(f"\x1b[{_shown}F\x1b[J")  # up to the block's first line; clear below
        _stream.flush()
    _shown = 0


def _draw() -> None:
    global _shown
    lines = [line for block in _blocks.values() for line in block]
    if lines and _stream is not None:
        lines = _fitted(lines)
        _write(lines)
        _shown = len(lines)


def _fitted(lines: list[str]) -> list[str]:
    """The block as the terminal can hold it: each line on one row (the cursor
    moves back by rows), and fewer rows than the screen has."""
    size = shutil.get_terminal_size((100, 24))
    width, height = max(size.columns - 1, 10), max(size.lines - 1, 2)
    if len(lines) > height:
        lines = [*lines[:height - 1], f"  ... and {len(lines) - height + 1} more lines"]
    return [_cut(line, width) for line in lines]


def _cut(line: str, width: int) -> str:
    """``line`` cut to ``width`` visible characters (colour codes kept whole)."""
    if len(_ANSI.sub("", line)) <= width:
        return line
    out, seen, at = [], 0, 0
    for match in _ANSI.finditer(line):
        text = line[at:match.start()]
        take = text[:max(width - seen, 0)]
        out.append(take)
        seen += len(take)
        out.append(match.group())
        at = match.end()
    out.append(line[at:][:max(width - seen, 0)])
    return "".join(out) + "\x1b[0m"


def _write(lines: list[str]) -> None:
    if _stream is not None:
        _stream.write("".join(line + "\x1b[K\n" for line in lines))
        _stream.flush()
