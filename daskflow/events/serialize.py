"""How distributed moves a State that carries its result.

Dask serializes a state (to move it between workers, to the client, or to
disk) with the functions registered here, so that a result that cannot be
pickled fails its task clearly instead of breaking the transfer (which hangs
the flow): the state becomes Failed with an ``UnpicklableResultError``, and
its corrected summary is sent to the run's driver.
"""

from __future__ import annotations

import operator
import pickle
import sys
from typing import Any

import cloudpickle

from daskflow.core.states import FIELDS, NO_RESULT, Chunk, State, StateType
from daskflow.events import queue
from daskflow.events.codec import encode_state
from daskflow.exceptions import UnpicklableResultError


def registered() -> bool:
    """Whether this process can serialize states (see :func:`register_serialization`)."""
    return _registered


_registered = False


def register_serialization() -> None:
    """Teach distributed how to serialize states (once per process).

    Called by the driver before it talks to a cluster, by the worker plugin
    and by the task wrapper on a worker, so that ``import daskflow`` does
    not import distributed.

    Dask serializes a state (to move it between workers, to the client, or
    to disk) with these, so that a result that cannot be pickled fails its task
    clearly instead of breaking the transfer (which hangs the flow).

    The result goes through distributed's own ``serialize`` (so numpy and
    pandas keep their zero-copy paths); the rest of the state is pickled.
    """
    global _registered
    if _registered:
        return
    _registered = True
    from distributed.protocol import dask_deserialize, dask_serialize

    dask_serialize.register(State)(_serialize_state)
    dask_deserialize.register(State)(_deserialize_state)
    dask_serialize.register(Chunk)(_serialize_chunk)
    dask_deserialize.register(Chunk)(_deserialize_chunk)


def _protocol() -> Any:
    """distributed's protocol module (imported by then: see register_serialization)."""
    from distributed import protocol

    return protocol


def _serialize_state(state: State) -> tuple[dict, list]:
    """A state with its result: the result through distributed's own
    ``serialize`` (numpy and pandas keep their zero-copy paths), the rest
    pickled; a result that cannot be serialized makes it Failed."""
    header: dict[str, Any] = {}
    frames: list = []
    if state._result is not NO_RESULT:
        try:
            header["result"], frames = _protocol().serialize(state._result, on_error="raise")
        except Exception as err:
            state = _not_serializable(state, err)
    return header, [_dumps(state.summary()), *frames]


def _deserialize_state(header: dict, frames: list) -> State:
    state = pickle.loads(frames[0])
    if "result" in header:
        try:
            state._result = _protocol().deserialize(header["result"], frames[1:])
        except Exception as err:
            state = _not_serializable(state, err, "unpickled in this process")
    return state


def _serialize_chunk(chunk: Chunk) -> tuple[dict, list]:
    """A chunk's states in one pickle of one column per field (a state at
    a time costs more than a small task's own work, and a pickled state
    calls back into Python on both ends); if one of them cannot be
    pickled, each state as :func:`_serialize_state` does it (the
    unpicklable result then fails its own element only)."""
    try:
        return {"columns": True}, [pickle.dumps(list(zip(*map(_row, chunk))), protocol=5)]
    except Exception:
        pass
    parts, frames = [], []
    for state in chunk:
        h, f = _serialize_state(state)
        parts.append((h, len(f)))
        frames.extend(f)
    return {"parts": parts}, frames


def _deserialize_chunk(header: dict, frames: list) -> Chunk:
    if header.get("columns"):
        return Chunk(_from_columns(pickle.loads(frames[0])))
    out, at = [], 0
    for h, n in header["parts"]:
        out.append(_deserialize_state(h, frames[at:at + n]))
        at += n
    return Chunk(out)


_row = operator.attrgetter(*FIELDS)


def _from_columns(columns: list[tuple]) -> list[State]:
    """The states of :func:`_serialize_chunk`'s columns (its fields in the
    order of :data:`~daskflow.core.states.FIELDS`, checked by a test)."""
    new = State.__new__
    out = []
    for row in zip(*columns):
        s = new(State)
        (s.type, s.name, s.message, s._result, s.exception, s.traceback, s.attempts, s.start,
         s.end, s.task_name, s.map_index, s.worker, s.tries, s.reruns, s.run_name) = row
        s._origin = s._key = None
        out.append(s)
    return out


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # e.g. an exception class defined in a notebook
        return cloudpickle.dumps(obj, protocol=5)


def _not_serializable(state: State, err: BaseException, what: str = "pickled") -> State:
    """The Failed state that stands for a result that cannot travel; its
    corrected summary is also sent to the run's driver."""
    task = state.task_name or "a task"
    type_name = type(state._result).__name__ if state._result is not NO_RESULT else "result"
    error = UnpicklableResultError(
        f"the result of task {task!r} (a {type_name}) could not be {what} when Dask had to "
        f"move it between processes: {type(err).__name__}: {err}. Return something "
        "picklable, or keep such an object inside one task and return what it computes. "
        "A resource's value that cannot be pickled stays on the worker that set it up, "
        "and the tasks that take it run there, unless they cannot (they need worker "
        "resources that worker lacks): make it @df.resource(per_worker=True) to set it "
        "up on each worker that runs one")
    failed = State(StateType.FAILED, message=str(error), exception=error,
                   attempts=state.attempts, start=state.start, end=state.end,
                   task_name=state.task_name, map_index=state.map_index, worker=state.worker)
    if state._origin is not None:
        worker = queue.worker_at(state.worker)
        if worker is not None:
            queue.emit(worker, state._origin,
                       state_msg=encode_state(state._key, failed, correction=True))
    return failed


if "distributed" in sys.modules:  # a worker (or a driver already using distributed)
    register_serialization()
