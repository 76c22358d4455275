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
Dask (``secede``), so a waiting task holds no worker thread, and it asks for
its slot one second at a time, so the requests of a worker that died end
with it, and a cancelled run's tasks stop waiting.  A slot is given back
when the attempt ends, fails or is interrupted; the slots a dead worker
*held* are given back by the scheduler once their lease expires
(``distributed.scheduler.locks.lease-timeout``, 30 s by default).

In process (``cluster="sync"``) tasks run one at a time, so every limit holds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from daskflow.worker.context import seceded, still_wanted

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


# A waiting task asks the scheduler for a slot for this long at a time.  An
# unbounded request outlives its worker: the scheduler would grant the dead
# worker's request a slot that only its lease's expiry frees (30 s by default,
# for every request the dead worker left), starving the runs after it.  A
# bounded one ends with the request's own timeout.
WAIT_SLICE = 1.0


class SlotWaitCancelled(Exception):
    """The run was cancelled while its task waited for a slot."""


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
                    _wait_for(sem, tag)
            taken.append(sem)
        yield
    finally:
        for sem in reversed(taken):
            sem.release()


def _wait_for(sem: Any, tag: str) -> None:
    """Ask again every ``WAIT_SLICE`` seconds until a slot is granted; stop
    asking once Dask no longer wants this task (its run was cancelled)."""
    while not sem.acquire(timeout=WAIT_SLICE):
        if not still_wanted():
            raise SlotWaitCancelled(f"stopped waiting for a slot of tag {tag!r}: the run "
                                    "was cancelled")
