"""Where a task's code comes from, so its tracebacks point at the user's lines.

A task defined in a script run as ``__main__``, in a notebook cell or by
``daskflow run file.py`` travels to the workers by value (cloudpickle), and
cloudpickle names every code object it ships ``<dynamic-code>``: a failure
on a worker would show no file and no source line.  The driver records the
function's file, first line and source (:func:`origin_of`); the worker gives
the code its file name back and puts those lines in ``linecache``
(:func:`restore`), so a traceback reads ``File ".../etl.py", line 15, in
parse`` followed by the line itself, as it would in one process.
"""

from __future__ import annotations

import inspect
import linecache
import types
from typing import Any

DYNAMIC = "<dynamic-code>"  # cloudpickle's name for the code objects it ships

Origin = tuple  # (file name, first line, source lines of the function)


def origin_of(fn: Any) -> Origin | None:
    """The file, first line and source lines of ``fn`` (None if unknown)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None or code.co_filename.startswith("<frozen"):
        return None
    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        return None
    return code.co_filename, first, tuple(lines)


def restore(fn: Any, origin: Origin | None) -> None:
    """Give ``fn``'s shipped code its file name back, and its lines to ``linecache``."""
    if origin is None:
        return
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    if code is None or code.co_filename != DYNAMIC:
        return  # imported by reference: its file is where it is
    filename, first, lines = origin
    try:
        target.__code__ = _renamed(code, filename)
    except (TypeError, ValueError):  # pragma: no cover - a closure whose cells differ
        return
    if filename not in linecache.cache:
        padded = [""] * (first - 1) + list(lines)
        linecache.cache[filename] = (sum(map(len, padded)), None, padded, filename)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
