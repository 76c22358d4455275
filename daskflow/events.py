"""Task states and log records, streamed from the workers to the run's driver.

When a task run ends on a worker, its result-free state summary is queued in
that worker process and sent to the scheduler over the worker's own batched
stream (``Worker.batched_send``), by a worker plugin
(:class:`daskflow.scheduler_plugin.RunEventsFlush`) as the task leaves
``executing``: in the same batch as the task's ``task-finished`` message and
just before it, so it costs no extra round of the stream's batching.  The
scheduler hands it to :class:`daskflow.scheduler_plugin.RunEvents`, which forwards
it to the one client that owns the run (``Scheduler.report(..., client=)``),
as a ``daskflow-run-events`` event of that client.  Log records from
``df.get_run_logger()`` take the same path.

Why this order matters: the state reaches the scheduler before the
``task-finished`` message on the same stream, and reaches the driver before
the driver can see the task (or anything downstream of it) as done.  When the
driver's futures are done, every state of the run is already on the driver:

* a worker that leaves after its tasks finished (``retire_workers``,
  adaptive scaling, a SIGKILLed spot instance) takes no state with it;
* nothing about a run is kept on the workers or on the scheduler, so a
  long-lived shared scheduler serving thousands of runs stays flat; a run
  whose driver died leaves nothing behind (events for a client that is gone
  are dropped by the scheduler);
* two drivers on one scheduler, or two clients in one process, never see
  each other's states or logs: each event goes to its owner only.

A driver that loses its connection to the scheduler loses its futures too
(distributed cancels them), so there is nothing to recover: the run fails
with ``ClusterError``.

For runs in the driver's own process (``cluster="sync"``) states go straight
to the run's :class:`RunMonitor`.
"""

from __future__ import annotations

import logging
import pickle
import threading
import weakref
from typing import Any

from daskflow.exceptions import ClusterError, RemoteTaskError
from daskflow.states import State, StateType

TOPIC = "daskflow-run-events"
OP = "daskflow-run-events"

logger = logging.getLogger("daskflow.run")


# -- encoding: what travels is msgpack-able --------------------------------------


def encode_state(key: Any, state: State) -> dict[str, Any]:
    """A result-free state as plain data (the exception pickled, or described)."""
    msg: dict[str, Any] = {"k": key, "t": state.type.value, "n": state.name, "m": state.message,
                           "a": state.attempts, "s": state.start, "e": state.end,
                           "w": state.worker}
    if state.tries:
        msg["r"] = state.tries
    err = state.exception
    if err is not None:
        msg["xt"] = type(err).__name__
        msg["xm"] = str(err)
        msg["x"] = dump_exception(err)
        msg["tb"] = state.traceback
    return msg


def decode_state(msg: dict[str, Any]) -> tuple[Any, State]:
    key = msg["k"]
    if isinstance(key, list):
        key = tuple(key)
    err = None
    if "xt" in msg:
        err = load_exception(msg.get("x"), msg["xt"], msg["xm"], msg.get("tb"))
    attempts = msg["a"]
    message = msg["m"]
    lost = msg.get("lost", 0)
    if lost:
        attempts += lost
        message = (f"{message} " if message else "") + (
            f"(rerun after the worker running it was lost {lost} time(s))")
    return key, State(StateType(msg["t"]), name=msg["n"], message=message, exception=err,
                      traceback=msg.get("tb"), attempts=attempts, start=msg["s"],
                      end=msg["e"], worker=msg["w"],
                      tries=tuple(tuple(t) for t in msg.get("r", ())))


def dump_exception(err: BaseException) -> bytes | None:
    """The exception pickled, or None if it does not survive a round trip."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(err)
        pickle.loads(data)
    except Exception:
        return None
    return data


def load_exception(data: bytes | None, type_name: str, message: str,
                   tb: str | None) -> BaseException:
    if data is not None:
        try:
            return pickle.loads(data)
        except Exception:
            pass
    return RemoteTaskError(type_name, message, tb)


# -- on the workers: queue, then send on the next event-loop turn ----------------

_pending: weakref.WeakKeyDictionary[Any, list] = weakref.WeakKeyDictionary()
_pending_lock = threading.Lock()
_workers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


_flush_on_transition: weakref.WeakSet = weakref.WeakSet()  # workers with RunEventsFlush
# Workers whose scheduler installed RunEventsFlush, and so has RunEvents' stream
# handler: an unknown op on a worker's stream makes the scheduler drop the worker.
_plugged: weakref.WeakSet = weakref.WeakSet()
_unplugged_warned: weakref.WeakSet = weakref.WeakSet()


def emit(worker: Any, run: Any, state_msg: dict | None = None, log_msg: dict | None = None,
         at_transition: bool = False) -> None:
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
        worker.loop.add_callback(_flush, worker)


def flush(worker: Any) -> None:
    """Send what is queued (in the worker's event-loop thread)."""
    if worker in _pending:
        _flush(worker)


def worker_at(address: str | None) -> Any:
    """A worker of this process by address (for events sent outside a task)."""
    return _workers.get(address) if address else None


def _flush(worker: Any) -> None:
    with _pending_lock:
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
    worker.batched_send({"op": OP, "events": [[o, r, s, lg] for (o, r), (s, lg) in groups.items()]})


# -- on the driver ------------------------------------------------------------------


class RunMonitor:
    """The live states of one run on its driver, fed by events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.states: dict[Any, State] = {}
        self.changes: list[tuple[Any, State]] = []  # every (key, state) received, in order
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def receive(self, states: list, logs: list) -> None:
        decoded = [decode_state(m) for m in states]
        with self.lock:
            for key, state in decoded:
                self.states[key] = state
            self.changes.extend(decoded)
            self.changed.notify_all()
        task_logger = logging.getLogger("daskflow.task")
        for msg in logs:
            task_logger.handle(logging.makeLogRecord(msg))

    def put(self, key: Any, state: State) -> None:
        """A state from this process (in-process runs)."""
        with self.lock:
            self.states[key] = state
            self.changes.append((key, state))
            self.changed.notify_all()

    def snapshot(self) -> dict[Any, State]:
        with self.lock:
            return dict(self.states)


_monitors: dict[str, RunMonitor] = {}
_attached: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def monitor(run_id: str) -> RunMonitor:
    """Start receiving the events of a run in this process."""
    mon = _monitors[run_id] = RunMonitor(run_id)
    return mon


def forget(run_id: str) -> None:
    _monitors.pop(run_id, None)


def local_state(run_id: str, key: Any, state: State) -> None:
    """A task of an in-process run ended: give its state to the run's monitor."""
    mon = _monitors.get(run_id)
    if mon is not None:
        mon.put(key, state)


def _dispatch(event: Any) -> None:
    _, (run_id, states, logs) = event
    mon = _monitors.get(run_id)
    if mon is not None:
        mon.receive(states, logs)


def connection(client: Any) -> Any:
    """The client's current connection to its scheduler: a new object each time
    the client (re)connects, so a scheduler that restarted on the same address
    is seen as new.  ``Client.scheduler_comm`` is not documented; pinned by
    ``test_runstate.test_a_scheduler_restarted_on_its_address_serves_the_next_runs``."""
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
        from daskflow.scheduler_plugin import RunEvents, RunEventsFlush

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
