"""A task run's result-free state as plain (msgpack-able) data, and back."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from daskflow.core.states import State, StateType
from daskflow.exceptions import RemoteTaskError

TOPIC = "daskflow-run-events"  # the client event topic a driver subscribes to
OP = "daskflow-run-events"  # the worker stream op the scheduler plugin handles
# A run's events are its task states and its notes: a note is a log record or,
# under this key, an artifact (``df.create_markdown_artifact`` and friends):
# artifacts ride in the notes list, in order with the task's log records.
ARTIFACT = "daskflow_artifact"


def encode_state(key: Any, state: State, correction: bool = False,
                 live: bool = False) -> dict[str, Any]:
    """A result-free state as plain data (the exception pickled, or described).

    ``correction``: it replaces the state sent for this very run of the task
    (a result that could not travel after all), not a later run of it.
    ``live``: a resource's setup whose value cannot be pickled; the scheduler
    then runs the tasks that take it on the worker that holds it.
    """
    msg: dict[str, Any] = {"k": key, "t": state.type.value, "n": state.name, "m": state.message,
                           "a": state.attempts, "s": state.start, "e": state.end,
                           "w": state.worker}
    if correction:
        msg["fix"] = 1
    if live:
        msg["live"] = 1
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
        message = (f"{message} " if message else "") + (
            f"(rerun after the worker running it was lost {lost} time(s))")
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


