"""Tag concurrency limits: at most ``n`` tasks with a tag run at once on a cluster.

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
from collections.abc import Iterator, Mapping
from typing import Any

from daskflow.exceptions import ConcurrencyLimitError, FlowDefinitionError

PREFIX = "daskflow-concurrency-"


def check(owner: str, limits: Any) -> dict[str, int]:
    """A ``concurrency=`` option as ``{tag: limit}``, or a clear error."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise FlowDefinitionError(
            f"concurrency= of {owner} must be a dict of tag -> limit, e.g. {{'db': 2}}; "
            f"got {type(limits).__name__} {limits!r:.60}")
    out: dict[str, int] = {}
    for tag, limit in limits.items():
        if not isinstance(tag, str) or not tag:
            raise FlowDefinitionError(
                f"concurrency= of {owner}: tag {tag!r} must be a non-empty string")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise FlowDefinitionError(
                f"concurrency= of {owner}: the limit of tag {tag!r} must be an integer of "
                f"at least 1, got {limit!r}")
        out[tag] = limit
    return out


def resolve(flow_limits: Mapping[str, int], run_limits: Mapping[str, int],
            used_tags: set[str]) -> tuple[tuple[str, int], ...]:
    """The limits of one run, for the tags its tasks carry."""
    from daskflow import config

    merged = dict(check("the setting daskflow.concurrency", config.get("concurrency") or {}))
    merged.update(flow_limits)
    merged.update(run_limits)
    return tuple((tag, n) for tag, n in sorted(merged.items()) if tag in used_tags)


def register(client: Any, limits: tuple[tuple[str, int], ...]) -> None:
    """Create the run's semaphores on the scheduler (from the driver, before
    submitting); a tag already limited to another value there is an error."""
    for tag, limit in limits:
        try:
            _register_semaphore(client, PREFIX + tag, limit)
        except ValueError as err:
            if "Inconsistent max leases" not in str(err):
                raise
            raise ConcurrencyLimitError(
                f"tag {tag!r} is limited to {limit} by this run, but another run on this "
                f"scheduler set its limit first ({err}); give every run the same limit for "
                "a tag, or use another tag") from None


def _register_semaphore(client: Any, name: str, limit: int) -> None:
    """The scheduler's ``semaphore_register`` handler, as distributed.Semaphore
    calls it (without the lease-refresh callback a Semaphore object would
    leave on the client's loop)."""
    import dask.config
    from dask.utils import parse_timedelta

    timeout = dask.config.get("distributed.scheduler.locks.lease-timeout")
    timeout = None if timeout == "inf" else parse_timedelta(timeout, "s")
    client.sync(client.scheduler.semaphore_register, name=name, max_leases=limit,
                lease_timeout=timeout)


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
def slots(limits: tuple[tuple[str, int], ...], log: Any) -> Iterator[None]:
    """Hold one slot of each limited tag while inside (on a worker)."""
    from daskflow.taskrun import _seceded

    taken: list[Any] = []
    try:
        for tag, limit in limits:
            sem = _semaphore(tag, limit)
            if not sem.acquire(timeout=0):
                log.info("waiting for a slot of tag %r (at most %d at once)", tag, limit)
                with _seceded(True):
                    sem.acquire()
            taken.append(sem)
        yield
    finally:
        for sem in reversed(taken):
            sem.release()
