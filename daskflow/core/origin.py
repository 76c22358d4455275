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
import os
import threading
import types
from typing import Any

DYNAMIC = "<dynamic-code>"  # cloudpickle's name for the code objects it ships

Origin = tuple  # (file name, first line, source lines of the function)


def _function(fn: Any) -> Any:
    """The plain function behind ``fn`` (a decorated function, a bound method)."""
    target = inspect.unwrap(fn)
    return getattr(target, "__func__", target)


def origin_of(fn: Any) -> Origin | None:
    """The file, first line and source lines of ``fn`` (None if unknown)."""
    code = getattr(_function(fn), "__code__", None)
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
    target = _function(fn)
    code = getattr(target, "__code__", None)
    if code is None or code.co_filename != DYNAMIC:
        return  # imported by reference: its file is where it is
    filename, first, lines = origin
    try:
        target.__code__ = _renamed(code, filename)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - read-only code
        return
    if not os.path.exists(filename):  # a notebook cell, or a file of the driver's machine
        _seed(filename, first, lines)


_seeded: set[str] = set()  # file names whose lines in linecache come from origins
_seed_lock = threading.Lock()


def _seed(filename: str, first: int, lines: tuple) -> None:
    """Put ``lines`` at line ``first`` of ``filename`` in linecache, beside the
    lines other functions of that file put there (the latest wins)."""
    with _seed_lock:
        entry: Any = linecache.cache.get(filename)
        known = list(entry[2]) if entry is not None and filename in _seeded else []
        end = first - 1 + len(lines)
        if len(known) < end:
            known += [""] * (end - len(known))
        known[first - 1:end] = lines
        linecache.cache[filename] = (sum(map(len, known)), None, known, filename)
        _seeded.add(filename)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
