"""Per-worker resources, the worker side: one setup in each worker process
that runs a task of the block, its value handed to the tasks there.

``@df.resource(per_worker=True)``: the block's setup task does not open the
resource; it returns a :class:`PerWorker` token (how to open it, with the
setup's resolved arguments).  A task that receives the token as an argument
(top level, positional or keyword) gets the value of this process instead:
the first such task here opens it (under a lock, once), keeps its finisher
in :mod:`daskflow.worker.finishers` under ``("per-worker", setup key)`` and
tells the scheduler it did (``Client.set_metadata``), so the block's cleanup
(:func:`daskflow.worker.cleanup.run_cleanup`) can finish it on every worker
that has it and report the ones that are gone (the scheduler forgets
that record with the setup task).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from daskflow.define.resources import PerWorker
from daskflow.wire import Call
from daskflow.worker import finishers
from daskflow.worker.context import call_logger, current_worker

METADATA = "daskflow-per-worker"  # the scheduler metadata key of the setups per worker

_values: dict[Any, Any] = {}
_locks: dict[Any, threading.Lock] = {}
_lock = threading.Lock()


def registry_key(setup_key: Any) -> tuple[str, Any]:
    """Where a per-worker resource's finisher is kept in each process."""
    return ("per-worker", setup_key)


def resolve(args: tuple, kwargs: dict[str, Any], call: Call) -> tuple[tuple, dict[str, Any]]:
    """The arguments of ``call`` with each per-worker token (top level,
    positional or keyword) replaced by this process's value."""
    for a in args:  # (a loop: a generator in any() costs more than most tasks' own work)
        if type(a) is PerWorker:
            args = tuple(value_of(a, call) if type(a) is PerWorker else a for a in args)
            break
    if kwargs:
        for v in kwargs.values():
            if type(v) is PerWorker:
                kwargs = {k: value_of(v, call) if type(v) is PerWorker else v
                          for k, v in kwargs.items()}
                break
    return args, kwargs


def value_of(token: PerWorker, call: Call) -> Any:
    """This process's value of a per-worker resource, opened on first use."""
    key = registry_key(token.key)
    with _lock:
        if key in _values:
            return _values[key]
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key in _values:
            return _values[key]
        value, finisher = token.opener(*token.args, **token.kwargs)
        _values[key] = value
        finishers.keep(key, lambda: _finish(key, finisher))
        worker = None if call.spec.run.owner is None else current_worker()
        where = "this process"
        if worker is not None:
            where = f"worker {worker.address}"
            _record(worker, token.key)
        call_logger(call).info("resource %r set up on %s (per_worker=True)", token.name, where)
        return value


def _finish(key: Any, finisher: Callable[[], None]) -> None:
    with _lock:
        _values.pop(key, None)
        _locks.pop(key, None)
    finisher()


def _record(worker: Any, setup_key: Any) -> None:
    """Tell the scheduler this worker set the resource up (read by its cleanup)."""
    from distributed import get_client

    get_client().set_metadata([setup_key, METADATA, worker.address], True)


def opened_here(setup_key: Any) -> bool:
    """Whether this process holds the resource (tests, and the in-process cleanup)."""
    return registry_key(setup_key) in _values
