"""The cluster side of :mod:`daskflow.events`: a scheduler plugin that
forwards each run's events to its driver, and a worker plugin that sends a
task's state in the same batch as the task's ``task-finished`` message.

The only module of :mod:`daskflow.events` that imports distributed when
imported: :func:`daskflow.events.monitor.attach` imports it when it installs
the plugins."""

from __future__ import annotations

import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from daskflow.events import queue
from daskflow.events.codec import OP, TOPIC
from daskflow.events.serialize import register_serialization


class RunEvents(SchedulerPlugin):
    """Scheduler plugin: forward each run's events to the client that owns it.

    It keeps nothing.  A state is annotated with how many times the worker
    running that task was lost (``TaskState.suspicious``), so that a rerun
    shows in the state's attempts.
    """

    name = "daskflow-run-events"
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        _add_stream_handler(scheduler, OP, self.forward)

    def forward(self, events: list, **_: Any) -> None:
        scheduler = self.scheduler
        tasks = scheduler.tasks
        now = time.time()
        for owner, run_id, states, logs in events:
            if owner not in scheduler.clients:
                continue  # its driver is gone: nobody will read this
            for msg in states:
                key = msg["k"]
                ts = tasks.get(tuple(key) if isinstance(key, list) else key)
                if ts is not None and ts.suspicious:
                    msg["lost"] = ts.suspicious
            scheduler.report({"op": "event", "topic": TOPIC,
                              "event": (now, [run_id, states, logs])}, client=owner)


def _add_stream_handler(scheduler: Any, op: str, handler: Any) -> None:
    """Register a handler for a worker stream message (as distributed's own
    scheduler extensions do); pinned by a test so an upstream change fails loudly."""
    scheduler.stream_handlers[op] = handler


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

    def teardown(self, worker: Any) -> None:
        queue.unplugged(worker)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start in ("executing", "long-running"):
            queue.flush(self.worker)
