"""A transaction's commit task, on a worker: commit or roll back, once.

``run_commit(call, *member_states)`` (compiled by
:mod:`daskflow.compile.transactions`) runs once every member of a
transaction ended.  If none failed (Failed, Crashed or Cancelled; Skipped
is fine) it moves the staged results into the store
(:mod:`daskflow.worker.staging`) and calls the members' ``on_commit`` hooks
in build order.  Otherwise it discards the staged results and rolls back
the members that completed, newest first by end time: each one's state
becomes ``RolledBack`` (a Completed state, as in Prefect 3; the driver
receives it as a correction of the state it had) and its ``on_rollback``
hooks are called with it.  A member that reused a stored result (Cached)
committed in an earlier run and is not rolled back, as in Prefect 3.

The commit task's own state is Completed, named ``Committed`` or
``RolledBack``; Failed only if the store could not be written.  Hooks are
``hook(task, state)``, as every task hook in daskflow; one that raises is
logged and changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from daskflow.core.hooks import call_hooks
from daskflow.core.states import State, StateType
from daskflow.events import monitor, queue
from daskflow.events.codec import encode_state
from daskflow.wire import Call
from daskflow.worker import staging
from daskflow.worker.context import current_worker, get_run_logger, running
from daskflow.worker.run import finish, flat_inputs

_FAILED = (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)


def run_commit(call: Call, *inputs: Any) -> State:
    """The commit task of a transaction (see the module's docstring)."""
    start = time.time()
    txn, members, keys, stores = call.args
    states = flat_inputs(inputs)
    tasks = [task for task, n in members for _ in range(n)]
    before = staging.decided(stores, txn) if stores else None
    if before is not None:  # Dask ran this task again: it was decided already
        return finish(call, State(StateType.COMPLETED, name=before, start=start, attempts=1,
                                  message="decided by an earlier run of this task"))
    failed = [s for s in states if s.type in _FAILED]
    try:
        if not failed:
            moved = staging.commit(stores, txn) if stores else 0
            state = _committed(call, tasks, states, moved, start)
        else:
            staging.discard(stores, txn) if stores else None
            state = _rolled_back(call, tasks, states, keys, failed, start)
    except Exception as err:
        state = State(StateType.FAILED, exception=err, start=start, attempts=1,
                      message=f"the transaction could not be decided: {type(err).__name__}: {err}")
    return finish(call, state)


def _committed(call: Call, tasks: list[Any], states: tuple[State, ...], moved: int,
               start: float) -> State:
    with running(call, 1):
        log = get_run_logger()
        for task, state in zip(tasks, states):
            if task.on_commit and state.is_completed():
                call_hooks(task.on_commit, task, state, log, f"task {state.task_name!r}")
    return State(StateType.COMPLETED, name="Committed", start=start, attempts=1,
                 message=f"{len(states)} task run(s) committed, {moved} stored result(s)")


def _rolled_back(call: Call, tasks: list[Any], states: tuple[State, ...], keys: tuple,
                 failed: list[State], start: float) -> State:
    cause = ", ".join(repr(s.task_name) for s in failed[:3]) + (
        f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    why = f"rolled back: {cause} failed in its transaction {call.display_name!r}"
    order = sorted((i for i, s in enumerate(states) if s.is_completed() and s.name != "Cached"),
                   key=lambda i: (states[i].end or 0.0, i), reverse=True)
    with running(call, 1):
        log = get_run_logger()
        for i in order:
            task, state = tasks[i], states[i]
            rolled = _rolled(state, why)
            _tell(call, keys[i], rolled)
            if task.on_rollback:
                call_hooks(task.on_rollback, task, rolled, log, f"task {state.task_name!r}")
    return State(StateType.COMPLETED, name="RolledBack", start=start, attempts=1,
                 message=f"{len(order)} task run(s) rolled back, nothing stored: {cause} failed")


def _rolled(state: State, why: str) -> State:
    """A member's state once rolled back: Completed, named RolledBack (Prefect 3's)."""
    return State(StateType.COMPLETED, name="RolledBack", message=why, result=state._result,
                 attempts=state.attempts, start=state.start, end=state.end,
                 task_name=state.task_name, map_index=state.map_index, worker=state.worker,
                 tries=state.tries, reruns=state.reruns, run_name=state.run_name)


def _tell(call: Call, key: Any, state: State) -> None:
    """Send a member's new state to the run's driver, replacing the one it had."""
    run = call.spec.run
    worker = current_worker() if run.owner is not None else None
    if worker is None:
        monitor.local_state(run.run_id, key, state.summary())
        return
    queue.emit(worker, run, state_msg=encode_state(key, state, correction=True))
