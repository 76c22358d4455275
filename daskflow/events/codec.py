"""A task run's result-free state as plain (msgpack-able) data, and back."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from daskflow.core.states import State, StateType, plain_state
from daskflow.exceptions import RemoteTaskError

TOPIC = "daskflow-run-events"  # the client event topic a driver subscribes to
OP = "daskflow-run-events"  # the worker stream op the scheduler plugin handles
# A run's events are its task states and its notes: a note is a log record or,
# under this key, an artifact (``df.create_markdown_artifact`` and friends):
# artifacts ride in the notes list, in order with the task's log records.
ARTIFACT = "daskflow_artifact"


def encode_state(key: Any, state: State, correction: bool = False,
                 live: bool = False, dask_key: Any = None) -> dict[str, Any] | tuple:
    """A result-free state as plain data (the exception pickled, or described).

    ``correction``: it replaces the state sent for this very run of the task
    (a result that could not travel after all), not a later run of it.
    ``live``: a resource's setup whose value cannot be pickled; the scheduler
    then runs the tasks that take it on the worker that holds it.
    ``dask_key``: the Dask task it ran in, when that is not ``key`` (a chunk
    of a map, a fused task): the scheduler marks a rerun of it.

    A plain state (no exception, retries or flags) of a map's element
    ``(base, i)`` run in another Dask task is a row, ``(base, type, name,
    message, worker, dask_key, i, attempts, start, end)``, for
    :func:`batched` to put in columns (a dict per element cost a chunk's
    elements more than their batching saved).
    """
    if (dask_key is not None and type(key) is tuple and len(key) == 2 and not correction
            and not live and state.exception is None and not state.tries
            and not state.run_name and dask_key != key):
        return (key[0], _TYPES[state.type], state.name, state.message, state.worker, dask_key,
                key[1], state.attempts, state.start, state.end)
    msg: dict[str, Any] = {"k": key, "t": state.type.value, "n": state.name, "m": state.message,
                           "a": state.attempts, "s": state.start, "e": state.end,
                           "w": state.worker}
    if correction:
        msg["fix"] = 1
    if live:
        msg["live"] = 1
    if dask_key is not None and dask_key != key:
        msg["dk"] = dask_key
    if state.tries:
        msg["r"] = state.tries
    if state.run_name:
        msg["rn"] = state.run_name
    err = state.exception
    if err is not None:
        msg["xt"] = type(err).__name__
        msg["xm"] = str(err)
        msg["x"] = dump_exception(err)
        msg["tb"] = state.traceback
    return msg


_TYPES = {t: t.value for t in StateType}


def batched(msgs: list[dict[str, Any] | tuple]) -> list[dict[str, Any]]:
    """State messages with the rows of :func:`encode_state` (plain states of
    one map's elements) that follow one another and ended alike in one Dask
    task merged into one columnar message ``{"b": base, "i": [...], "a":
    [...], "s": [...], "e": [...], ...}``: a chunk's thousands of element
    states cost the scheduler and the driver a few messages, not one each."""
    out: list[dict[str, Any]] = []
    shared: tuple | None = None
    for msg in msgs:
        if not isinstance(msg, tuple):
            out.append(msg)
            shared = None
            continue
        if msg[:6] != shared:
            shared = msg[:6]
            base, kind, name, message, worker, dask_key = shared
            i: list = []
            a: list = []
            s: list = []
            e: list = []
            out.append({"b": base, "t": kind, "n": name, "m": message, "w": worker,
                        "dk": dask_key, "i": i, "a": a, "s": s, "e": e})
        i.append(msg[6])
        a.append(msg[7])
        s.append(msg[8])
        e.append(msg[9])
    return out


def decode_states(msgs: list[dict[str, Any]]) -> list[tuple[Any, State, bool]]:
    """``(key, state, correction)`` of each state in messages (batched or not)."""
    out = []
    for msg in msgs:
        if "b" not in msg:
            out.append((*decode_state(msg), is_correction(msg)))
            continue
        kind, name, message, worker, base = StateType(msg["t"]), msg["n"], msg["m"], msg["w"], \
            msg["b"]
        lost = msg.get("lost", 0)
        if lost:
            message = _lost(message, lost)
        for i, a, s, e in zip(msg["i"], msg["a"], msg["s"], msg["e"]):
            out.append(((base, i), plain_state(kind, name, message, a + lost, s, e, worker),
                        False))
    return out


def _lost(message: str | None, lost: int) -> str:
    return (f"{message} " if message else "") + (
        f"(rerun after the worker running it was lost {lost} time(s))")


def is_correction(msg: dict[str, Any]) -> bool:
    """Whether a state message corrects the one before it (see :func:`encode_state`)."""
    return bool(msg.get("fix"))


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
        message = _lost(message, lost)
    return key, State(StateType(msg["t"]), name=msg["n"], message=message, exception=err,
                      traceback=msg.get("tb"), attempts=attempts, start=msg["s"],
                      end=msg["e"], worker=msg["w"],
                      tries=tuple(tuple(t) for t in msg.get("r", ())),
                      run_name=msg.get("rn"))


def dump_exception(err: BaseException) -> bytes | None:
    """The exception pickled, or None if it does not survive a round trip."""
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


