"""Tag concurrency limits, the worker side: a task holds a slot per limited tag.

``flow.run(..., concurrency={"db": 2})``, ``@df.flow(concurrency=...)`` or the
setting ``daskflow.concurrency.<tag>: 2`` (the run's value wins over the
flow's, which wins over the setting).  The limit holds across every run
that shares the scheduler: each limited tag is one ``distributed.Semaphore``
named ``daskflow-concurrency-<tag>``, registered by the driver before its
run is submitted (a second run asking another limit for the same tag is an
error there, before anything runs).

On a worker a task takes one slot per limited tag (in sorted tag order, so
two tasks never wait for each other) around each attempt, and gives the
slots back between retries.  While it waits it gives its thread back to
Dask (``secede``), so a waiting task holds no worker thread.  A slot is
given back when the attempt ends, fails or is interrupted; the slots of a
worker that died are given back by the scheduler once their lease expires
(``distributed.scheduler.locks.lease-timeout``, 30 s by default).

In process (``cluster="sync"``) tasks run one at a time, so every limit holds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from daskflow.worker.context import seceded

PREFIX = "daskflow-concurrency-"  # a tag's semaphore is named PREFIX + tag

_semaphores: dict[tuple[str, int], Any] = {}
_semaphores_lock = threading.Lock()


def _semaphore(tag: str, limit: int) -> Any:
    """One ``distributed.Semaphore`` per tag in this worker process: its
    refresh callback keeps every lease of this process alive."""
    key = (tag, limit)
    with _semaphores_lock:
        sem = _semaphores.get(key)
        if sem is None:
            from distributed import Semaphore

            sem = _semaphores[key] = Semaphore(max_leases=limit, name=PREFIX + tag)
    return sem


@contextlib.contextmanager
def held(limits: tuple[tuple[str, int], ...], log: Any) -> Iterator[None]:
    """Hold one slot of each limited tag while inside (on a worker)."""
    taken: list[Any] = []
    try:
        for tag, limit in limits:
            sem = _semaphore(tag, limit)
            if not sem.acquire(timeout=0):
                log.info("waiting for a slot of tag %r (at most %d at once)", tag, limit)
                with seceded(True):
                    sem.acquire()
            taken.append(sem)
        yield
    finally:
        for sem in reversed(taken):
            sem.release()
