"""On a worker: a task's state and log records queued, then sent to the
scheduler on the worker's own batched stream (see :mod:`daskflow.events`)."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from daskflow.events.codec import OP, batched

_pending: weakref.WeakKeyDictionary[Any, list] = weakref.WeakKeyDictionary()
_pending_lock = threading.Lock()
_workers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


_flush_on_transition: weakref.WeakSet = weakref.WeakSet()  # workers with RunEventsFlush
_soon: weakref.WeakSet = weakref.WeakSet()  # workers with a flush scheduled
# Events sent outside a task's own finish (the elements of a chunk, the tasks
# of a fused one, log records) wait this long, so that a burst travels as one
# message and waking the worker's event loop (a write to its self-pipe, ~25%
# of a 50 us element's time when done per element) is paid once per burst.
BATCH_DELAY = 0.02
# Workers whose scheduler installed RunEventsFlush, and so has RunEvents' stream
# handler: an unknown op on a worker's stream makes the scheduler drop the worker.
_plugged: weakref.WeakSet = weakref.WeakSet()
_unplugged_warned: weakref.WeakSet = weakref.WeakSet()


def emit(worker: Any, run: Any, state_msg: dict | tuple | None = None,
         log_msg: dict | None = None, at_transition: bool = False) -> None:
    """Queue a state or a log record of ``run`` for the scheduler (any thread).

    A task's own final state (``at_transition``) is sent by the worker plugin
    in the same batch as the task's ``task-finished`` message, right before
    it; anything else on the worker's next event-loop turn.
    """
    item = (run.owner, run.run_id, state_msg, log_msg)
    with _pending_lock:
        queue = _pending.get(worker)
        if queue is not None:
            queue.append(item)
            return
        _pending[worker] = [item]
        _workers[worker.address] = worker
    if not (at_transition and worker in _flush_on_transition):
        _schedule(worker)


def _schedule(worker: Any) -> None:
    """Flush ``worker``'s queue in :data:`BATCH_DELAY` (once per burst)."""
    with _pending_lock:
        if worker in _soon:
            return
        _soon.add(worker)
    worker.loop.add_callback(_later, worker)


def _later(worker: Any) -> None:
    worker.loop.call_later(BATCH_DELAY, _flush, worker)


def plugged(worker: Any) -> None:
    """The worker's scheduler has daskflow's plugins: send its events, a
    task's state in the batch of its ``task-finished`` (see :mod:`.plugins`)."""
    _flush_on_transition.add(worker)
    _plugged.add(worker)


def unplugged(worker: Any) -> None:
    """The worker plugin is torn down: send what is queued, and later events
    on the next event-loop turn."""
    _flush_on_transition.discard(worker)
    flush(worker)


def flush(worker: Any) -> None:
    """Send what is queued (in the worker's event-loop thread)."""
    if worker in _pending:
        _flush(worker)


def worker_at(address: str | None) -> Any:
    """A worker of this process by address (for events sent outside a task)."""
    return _workers.get(address) if address else None


def _flush(worker: Any) -> None:
    with _pending_lock:
        _soon.discard(worker)
        items = _pending.pop(worker, [])
    if not items:
        return
    if worker not in _plugged:
        if worker not in _unplugged_warned:
            _unplugged_warned.add(worker)
            logging.getLogger("daskflow").warning(
                "worker %s runs daskflow tasks but its scheduler has no daskflow plugin "
                "(it restarted since the run began?); their states and logs cannot reach "
                "the driver", worker.address)
        return
    groups: dict[tuple[str, str], tuple[list, list]] = {}
    for owner, run_id, state_msg, log_msg in items:
        states, logs = groups.setdefault((owner, run_id), ([], []))
        if state_msg is not None:
            states.append(state_msg)
        if log_msg is not None:
            logs.append(log_msg)
    worker.batched_send({"op": OP, "events": [[o, r, batched(s), lg]
                                              for (o, r), (s, lg) in groups.items()]})


