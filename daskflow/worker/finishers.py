"""The finishers of the resources set up in this process, by their setup's key.

A setup task keeps its finisher here (:func:`keep`); the cleanup task takes
it (:func:`take`), on this worker or through ``Client.run`` aimed at it; an
interrupted run takes all of its own (:func:`take_run`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_open: dict[Any, Callable[[], None]] = {}  # setup key -> finisher
_lock = threading.Lock()


def keep(key: Any, finisher: Callable[[], None]) -> None:
    """Keep the finisher of the resource set up by the task ``key``."""
    with _lock:
        _open[key] = finisher


def take(key: Any) -> Callable[[], None] | None:
    """The finisher kept for ``key`` (now forgotten here), or None."""
    with _lock:
        return _open.pop(key, None)


def take_run(run_id: str) -> tuple[list[Any], list[Callable[[], None]]]:
    """The keys and finishers of every resource a run set up here (forgotten here)."""
    with _lock:
        keys = [k for k in _open if run_id in str(k)]
        return keys, [_open.pop(k) for k in keys]
