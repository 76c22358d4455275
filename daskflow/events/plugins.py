"""The cluster side of :mod:`daskflow.events`: a scheduler plugin that
forwards each run's events to its driver, and a worker plugin that sends a
task's state in the same batch as the task's ``task-finished`` message.

The only module of :mod:`daskflow.events` that imports distributed when
imported: :func:`daskflow.events.monitor.attach` imports it when it installs
the plugins."""

from __future__ import annotations

import logging
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from daskflow.events import queue
from daskflow.events.codec import OP, TOPIC
from daskflow.events.serialize import register_serialization


class RunEvents(SchedulerPlugin):
    """Scheduler plugin: forward each run's events to the client that owns it,
    and run the tasks that take a live resource where it lives.

    A state is annotated with how many times the task stopped running
    without ending because its worker left, killed or retired by adaptive
    scaling (Dask's ``TaskState.suspicious`` counts only the first; the
    plugin counts both, as runs that left "processing"), so that a rerun shows
    in the state's attempts and message.

    A resource's setup whose value cannot be pickled (a database connection)
    says so in its state (``live``), which arrives just before its
    ``task-finished``.  The plugin keeps that setup's worker while the value
    is in memory, and restricts to that worker every task that takes the
    value: those waiting for it when it lands, and those submitted later
    (a flow body that waited).  If that worker dies, Dask runs the setup
    again elsewhere, and the tasks follow it there.
    """

    name = "daskflow-run-events"
    idempotent = True

    def __init__(self) -> None:
        self.live: dict[Any, str] = {}  # setup key -> the worker holding its live value
        self.stopped: dict[Any, int] = {}  # key -> runs that stopped with their worker

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.live = getattr(self, "live", {})
        self.stopped = getattr(self, "stopped", {})
        _add_stream_handler(scheduler, OP, self.forward)

    def forward(self, events: list, **_: Any) -> None:
        """Hand each run's events to its driver.  Never raises: an error in a
        stream handler makes the scheduler drop the worker's stream."""
        now = time.time()
        for event in events:
            try:
                self._forward(now, *event)
            except Exception:
                logging.getLogger("daskflow").exception("could not forward a run's events")

    def _forward(self, now: float, owner: str, run_id: str, states: list, logs: list) -> None:
        scheduler = self.scheduler
        for msg in states:
            if msg.get("live"):
                key = msg["k"]
                self.live[tuple(key) if isinstance(key, list) else key] = msg["w"]
        if owner not in scheduler.clients:
            return  # its driver is gone: nobody will read this
        for msg in states:  # the Dask task it ran in: its own, or a chunk's
            key = msg.get("dk") or msg.get("k")
            lost = self.stopped.get(tuple(key) if isinstance(key, list) else key)
            if lost:
                msg["lost"] = lost
        scheduler.report({"op": "event", "topic": TOPIC,
                          "event": (now, [run_id, states, logs])}, client=owner)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "processing" and (finish == "released" or finish == "waiting"):
            self.stopped[key] = self.stopped.get(key, 0) + 1  # its worker left (or a cancel)
        elif finish == "forgotten" and self.stopped:
            self.stopped.pop(key, None)
        live = self.live
        if not live:
            return
        if finish == "memory" and key in live:
            ts = self.scheduler.tasks.get(key)
            if ts is not None:
                for dependent in ts.dependents:
                    pin(self.scheduler, dependent, live[key])
        elif start == "released" and finish == "waiting":
            ts = self.scheduler.tasks.get(key)
            for dep in ts.dependencies if ts is not None else ():
                if dep.key in live and dep.state == "memory":
                    pin(self.scheduler, ts, live[dep.key])
        elif finish in ("released", "forgotten", "erred"):
            live.pop(key, None)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A worker holding live values left (killed, or retired: then Dask may
        have copied a setup's state elsewhere, as a failure, since its value
        cannot move): the tasks pinned to it are free again, so none waits
        for a worker that is gone; a setup run again pins them anew."""
        gone = [key for key, where in self.live.items() if where == worker]
        for key in gone:
            del self.live[key]
            ts = scheduler.tasks.get(key)
            for dependent in ts.dependents if ts is not None else ():
                if dependent.worker_restrictions == {worker}:
                    unpin(dependent)


def pin(scheduler: Any, ts: Any, worker: str) -> None:
    """Run the task ``ts`` on ``worker`` only: it takes a live resource held
    there (its value, or only its state: a result-free ``done-`` task still
    receives the state that holds it, which cannot move either).  A task
    that cannot run there (worker resources that worker lacks) is left to
    run elsewhere, and fails clearly when the value cannot move.

    Uses the scheduler's ``TaskState.worker_restrictions`` and
    ``loose_restrictions`` and ``Scheduler.valid_workers``, which are not a
    documented API; pinned by ``test_pin_uses_the_scheduler_task_restrictions``.
    """
    ts.worker_restrictions = None
    valid = scheduler.valid_workers(ts)
    if valid is not None and worker not in {ws.address for ws in valid}:
        return
    ts.worker_restrictions = {worker}
    ts.loose_restrictions = False


def unpin(ts: Any) -> None:
    """Undo :func:`pin` (same upstream attributes)."""
    ts.worker_restrictions = None
    ts.loose_restrictions = True


def _add_stream_handler(scheduler: Any, op: str, handler: Any) -> None:
    """Register a handler for a worker stream message (as distributed's own
    scheduler extensions do); pinned by a test so an upstream change fails loudly."""
    scheduler.stream_handlers[op] = handler


_STATE_MACHINE = "distributed.worker.state_machine"


def quiet_cancel(record: logging.LogRecord) -> bool:
    """Drop the worker's WARNING that a cancelled task's execution ended with
    ``CancelledError``: it is how a cancel ends a running task (the run says
    what it cancelled), not a problem, and notebooks paint it as an error."""
    return "ended with CancelledError" not in record.getMessage()


class RunEventsFlush(WorkerPlugin):
    """Worker plugin: teach the worker to (de)serialize states, and flush a
    finished task's state as the task leaves ``executing``.

    ``WorkerPlugin.transition`` runs before the worker sends the messages of
    that transition, so the state goes out in the same batch as
    ``task-finished`` and just before it (sent on its own, it would hold the
    ``task-finished`` back by the stream's 2 ms batching interval).
    """

    name = "daskflow-run-events-flush"
    idempotent = True

    def setup(self, worker: Any) -> None:
        # Every worker must be able to receive a State before it runs a task of
        # its own (a spawned worker may have imported daskflow before
        # distributed, through the user's script, and so skipped it at import).
        register_serialization()
        self.worker = worker
        queue.plugged(worker)
        logging.getLogger(_STATE_MACHINE).addFilter(quiet_cancel)

    def teardown(self, worker: Any) -> None:
        queue.unplugged(worker)
        logging.getLogger(_STATE_MACHINE).removeFilter(quiet_cancel)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start in ("executing", "long-running"):
            queue.flush(self.worker)
