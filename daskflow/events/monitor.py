"""On the driver: each run's live states, fed by its client's events (or, in
process, by the tasks themselves); the plugins installed once per connection."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from daskflow.core.states import State
from daskflow.events.codec import ARTIFACT, TOPIC, decode_states
from daskflow.exceptions import ClusterError

logger = logging.getLogger("daskflow.run")


class RunMonitor:
    """The live states of one run on its driver, fed by events."""

    def __init__(self, run_id: str, artifacts: list | None = None) -> None:
        self.run_id = run_id
        self.artifacts: list[dict[str, Any]] = [] if artifacts is None else artifacts
        self.states: dict[Any, State] = {}
        # the key of every state received, in order (a key per state, not a (key,
        # state) pair: 20,000 elements' pairs are 20,000 more objects for the
        # driver's garbage collector to go through while the run lasts)
        self.changes: list[Any] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.label: Any = str  # key -> the task run's name, set by the engine once it compiled

    def receive(self, states: list, logs: list) -> None:
        decoded = decode_states(states)
        reruns = []
        with self.lock:
            for key, state, correction in decoded:
                before = self.states.get(key)
                if before is not None and not correction and before.is_final():
                    reruns.append((before.worker, self._name(key)))
                    state = rerun(before, state)
                self.states[key] = state
                self.changes.append(key)
            self.changed.notify_all()
        for worker, name in reruns:
            logger.warning("%r ran again: its result was lost with worker %s. What its first "
                           "run did outside Dask there (a resource it opened, say) was not "
                           "undone", name, worker,
                           extra={"daskflow_task": name, "daskflow_run": self.run_id})
        task_logger = logging.getLogger("daskflow.task")
        for msg in logs:
            if ARTIFACT in msg:
                self.artifacts.append(msg[ARTIFACT])
                continue
            if task_logger.isEnabledFor(msg.get("levelno", logging.INFO)):  # the driver's level
                task_logger.handle(logging.makeLogRecord(msg))

    def _name(self, key: Any) -> str:
        try:
            return str(self.label(key))
        except Exception:  # a key the compiler does not name
            return str(key)

    def put(self, key: Any, state: State) -> None:
        """A state from this process (in-process runs)."""
        with self.lock:
            self.states[key] = state
            self.changes.append(key)
            self.changed.notify_all()

    def snapshot(self) -> dict[Any, State]:
        with self.lock:
            return dict(self.states)


def rerun(before: State, after: State) -> State:
    """The state of a task Dask ran again (its result was lost with the worker
    holding it, and a task downstream needed it): the new run's outcome,
    with every attempt that happened before it kept."""
    spans: list[tuple[Any, Any]] = [*(before.tries or [(before.start, before.end)]),
                                    *(after.tries or [(after.start, after.end)])]
    where = f" with worker {before.worker}" if before.worker else ""
    note = f"recomputed after its result was lost{where}"
    after.message = f"{after.message} ({note})" if after.message else note
    after.attempts = before.attempts + after.attempts
    after.reruns = before.reruns + after.reruns + 1
    after.tries = tuple((s, e) for s, e in spans if s is not None and e is not None)
    after.start = before.start if before.start is not None else after.start
    return after


_monitors: dict[str, RunMonitor] = {}
_attached: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def monitor(run_id: str, artifacts: list | None = None) -> RunMonitor:
    """Start receiving the events of a run in this process (its artifacts
    are appended to ``artifacts``)."""
    mon = _monitors[run_id] = RunMonitor(run_id, artifacts)
    return mon


def forget(run_id: str) -> None:
    _monitors.pop(run_id, None)


def local_state(run_id: str, key: Any, state: State) -> None:
    """A task of an in-process run ended: give its state to the run's monitor."""
    mon = _monitors.get(run_id)
    if mon is not None:
        mon.put(key, state)


def local_artifact(run_id: str, artifact: dict[str, Any]) -> bool:
    """An artifact made in this process (a flow body, an in-process task):
    attach it to its run; whether the run is still received here."""
    mon = _monitors.get(run_id)
    if mon is None:
        return False
    with mon.lock:
        mon.artifacts.append(artifact)
    return True


def _dispatch(event: Any) -> None:
    _, (run_id, states, logs) = event
    mon = _monitors.get(run_id)
    if mon is not None:
        mon.receive(states, logs)


def connection(client: Any) -> Any:
    """The client's current connection to its scheduler: a new object each time
    the client (re)connects, so a scheduler that restarted on the same address
    is seen as new.  ``Client.scheduler_comm`` is not documented; pinned by
    ``test_a_scheduler_restarted_on_its_address_serves_the_next_runs``."""
    return client.scheduler_comm


def attach(client: Any) -> None:
    """Install the plugins and subscribe this client, once per connection: a
    client that reconnected (to a scheduler restarted on the same address,
    which knows none of them) installs them again."""
    conn = connection(client)
    if _attached.get(client) is conn:
        return
    with _attach_lock:
        if _attached.get(client) is conn:
            return
        # Imported here, not above: the plugins import distributed, and
        # `import daskflow` does not.
        from daskflow.events.plugins import RunEvents, RunEventsFlush

        try:
            client.register_plugin(RunEvents(), name=RunEvents.name)
            client.register_plugin(RunEventsFlush(), name=RunEventsFlush.name)
        except Exception as err:
            raise ClusterError(
                f"could not install daskflow's plugin on the scheduler at "
                f"{client.scheduler.address}: {err!r}. The scheduler (and the workers) "
                "need daskflow installed, with the same version as here") from err
        client.subscribe_topic(TOPIC, _dispatch)
        _attached[client] = conn


def detach(client: Any) -> None:
    """Unsubscribe a client that daskflow opened, before it is closed."""
    if _attached.pop(client, None) is not None:
        try:
            client.unsubscribe_topic(TOPIC)
        except Exception:  # a client whose scheduler is gone: nothing to tell it
            pass
