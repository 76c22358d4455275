"""Run states of tasks and flows.

A :class:`State` is what a task wrapper returns on the worker: it carries the
task's result (or exception) while it travels between tasks on the cluster.
The copy the driver sees in ``run.states`` is a *summary* without the result,
so that reading states never pulls data to the driver.

A state is a value: how it travels (its serializers for distributed, and the
Failed state that stands for a result that cannot travel) lives in
:mod:`daskflow.events.serialize`, how it looks in
:mod:`daskflow.core.display`.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from daskflow.core.display import state_html
from daskflow.exceptions import ResultNotAvailable


class StateType(str, enum.Enum):
    """The kind of a state: where a run is in its life and how it ended."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"

    def __str__(self) -> str:
        return self.value


_FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.SKIPPED,
          StateType.CANCELLED, StateType.CRASHED}
_NAMES = {t: t.value.capitalize() for t in StateType}  # a state's default name, by type


class _NoResult:
    """The marker of a state that carries no result (a singleton, even pickled)."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "NO_RESULT"

    def __repr__(self) -> str:
        return "<no result>"


NO_RESULT: Any = _NoResult()


class State:
    """The state of one task run (or of a flow run).

    >>> s = State(StateType.COMPLETED, result=3)
    >>> s.is_completed(), s.result()
    (True, 3)
    """

    __slots__ = ("type", "name", "message", "_result", "exception", "traceback",
                 "attempts", "start", "end", "task_name", "map_index", "worker", "tries",
                 "reruns", "run_name", "_origin", "_key")

    def __init__(
        self,
        type: StateType,
        *,
        name: str | None = None,
        message: str = "",
        result: Any = NO_RESULT,
        exception: BaseException | None = None,
        traceback: str | None = None,
        attempts: int = 0,
        start: float | None = None,
        end: float | None = None,
        task_name: str = "",
        map_index: int | None = None,
        worker: str | None = None,
        tries: tuple[tuple[float, float], ...] = (),
        reruns: int = 0,
        run_name: str | None = None,
    ) -> None:
        self.type = type
        self.name = name or _NAMES[type]
        self.message = message
        self._result = result
        self.exception = exception
        self.traceback = traceback
        self.attempts = attempts
        self.start = start
        self.end = end if end is not None else (time.time() if type in _FINAL else None)
        self.task_name = task_name
        self.map_index = map_index
        self.worker = worker
        self.tries = tries  # (start, end) of each attempt, when there were retries
        self.reruns = reruns  # times Dask ran the task again after its result was lost
        self.run_name = run_name  # task_run_name / flow_run_name, formatted
        # on a worker, the task run's RunInfo and key (two fields, not a pair: a chunk
        # holds thousands of states, and a pair each kept the worker's GC busy)
        self._origin: Any = None
        self._key: Any = None

    # -- predicates -------------------------------------------------------
    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        """Failed or crashed: the task did not produce a result."""
        return self.type in (StateType.FAILED, StateType.CRASHED)

    def is_skipped(self) -> bool:
        return self.type is StateType.SKIPPED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_final(self) -> bool:
        return self.type in _FINAL

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the end, if both are known."""
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    @property
    def retries(self) -> int:
        """Attempts after a failure (a rerun after a lost result is not one)."""
        return max(self.attempts - 1 - self.reruns, 0)

    @property
    def has_result(self) -> bool:
        return self._result is not NO_RESULT

    def result(self, raise_on_failure: bool = True) -> Any:
        """The task's return value; raises the task's exception if it failed."""
        if self.is_failed() and raise_on_failure and self.exception is not None:
            raise self.exception
        if self._result is NO_RESULT:
            if self.is_failed() or self.is_cancelled():
                return self.exception
            if self.is_skipped() and self.name != "Completed":
                return None
            raise ResultNotAvailable(
                f"the result of {self.task_name or 'this task'!r} stayed on the cluster "
                "and was released when the run ended; return it from the flow "
                "to get it back"
            )
        return self._result

    def summary(self) -> State:
        """A copy without the result, cheap to send to the driver."""
        return State(
            self.type, name=self.name, message=self.message, exception=self.exception,
            traceback=self.traceback, attempts=self.attempts, start=self.start,
            end=self.end, task_name=self.task_name, map_index=self.map_index,
            worker=self.worker, tries=self.tries, reruns=self.reruns, run_name=self.run_name,
        )

    def __reduce__(self):
        # every field but the origin (run and key), which only the worker that ran it needs
        return (_rebuild_state, (tuple([getattr(self, k) for k in FIELDS]),))

    def __repr__(self) -> str:
        msg = f", message={self.message!r}" if self.message else ""
        return f"<State {self.name} ({self.type.value}){msg}>"

    def _repr_html_(self) -> str:
        return state_html(self)


def plain_state(type: StateType, name: str, message: str, attempts: int, start: float | None,
                end: float | None, worker: str | None) -> State:
    """A state without result, exception or retries, as ``State(type,
    name=name, ...)`` makes it but without its keyword handling: the driver
    makes one per element of a chunked map (see ``test_a_plain_state_is_a_state``)."""
    s = _new(State)
    s.type, s.name, s.message, s._result, s.exception, s.traceback = \
        type, name, message, NO_RESULT, None, None
    s.attempts, s.start, s.end, s.task_name, s.map_index, s.worker = \
        attempts, start, end, "", None, worker
    s.tries, s.reruns, s.run_name, s._origin, s._key = (), 0, None, None, None
    return s


_new = State.__new__


class Chunk(tuple):
    """The final states of the elements of a chunk of a map, in order: the
    result of the one Dask task that ran them
    (:class:`daskflow.worker.calls.Chunked`).  A downstream call counts it
    as one input per element; distributed moves it in one piece
    (:mod:`daskflow.events.serialize`)."""

    __slots__ = ()


FIELDS = tuple(k for k in State.__slots__ if k not in ("_origin", "_key"))  # what travels


def _rebuild_state(values: tuple) -> State:
    state = State.__new__(State)
    for k, v in zip(FIELDS, values):
        setattr(state, k, v)
    state._origin = state._key = None
    return state



def _register_sizeof() -> None:
    """Let Dask account for a state by the size of the result it carries."""
    from dask.sizeof import sizeof

    @sizeof.register(State)
    def _sizeof_state(state: State) -> int:
        result = state._result
        return 120 + (0 if result is NO_RESULT else sizeof(result))


_register_sizeof()
