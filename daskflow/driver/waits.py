"""The flow body's waits, answered by its run.

A flow body that calls ``ref.result()`` (or ``ref.wait()``, ``df.wait``,
``df.as_completed``) asks its :class:`~daskflow.driver.engine.Engine`,
through :class:`BodyWaits`, to submit what the body built since the last
wait (:meth:`Engine.flush`: one submission), then waits for the keys of
the task runs asked for, and for those only.  Only a value asked for with
``result()`` comes to the driver; ``wait()`` and ``state`` read the
result-free states the run's monitor already holds.

A wait that fails in daskflow's own machinery (a graph that cannot be
submitted, a lost scheduler) breaks the run: the error is kept, and every
later wait, and the end of the body, raises it again, so a body that
catches it cannot go on building on a run that is gone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from daskflow.compile.tasks import as_keys
from daskflow.core.states import State, StateType
from daskflow.exceptions import FlowRunError, WaitTimeout

if TYPE_CHECKING:
    from daskflow.compile.graph import Compiler
    from daskflow.define.build import Node
    from daskflow.driver.backends import Backend
    from daskflow.driver.engine import Engine

Target = tuple["Node", "int | None"]


def _compiler(engine: Engine) -> Compiler:
    """The run's compiler (a body waits only once its run has one)."""
    assert engine.compiler is not None, "a wait before the run started"
    return engine.compiler


def _backend(engine: Engine) -> Backend:
    """The run's backend (a body waits only once its run has one)."""
    assert engine.backend is not None, "a wait before the run started"
    return engine.backend


class RunInterrupted(BaseException):
    """Raised into a flow body at a wait once its run is cancelled or broken
    (``cause``).  A ``BaseException``, as asyncio's ``CancelledError`` is, so
    that a body's ``except Exception`` (a retry loop, say) does not swallow
    it and spin on a run that is over."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class BodyWaits:
    """Answers a flow body's waits (the :class:`~daskflow.define.build.Waiter`
    of its builder) by running stages of its engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.broken: BaseException | None = None  # what broke the run during a wait
        self._flushing = threading.Lock()  # an async body's awaits wait in threads of their own

    # -- the Waiter protocol -----------------------------------------------------------
    def result(self, target: Target, timeout: float | None, raise_on_failure: bool) -> Any:
        keys = self._submitted([target])
        done = self._wait_keys(keys, timeout, False)
        if len(done) < len(keys):
            raise WaitTimeout(f"{_name(target)} has not ended after {timeout or 0:g}s; it "
                              "goes on running (wait again, or give a longer timeout)")
        gathered = self._gather(keys)
        values = [_value(gathered.get(k), k, raise_on_failure) for k in keys]
        return values if _is_list(self.engine, target) else values[0]

    def final_state(self, target: Target, timeout: float | None) -> Any:
        keys = self._submitted([target])
        done = self._wait_keys(keys, timeout, False)
        if len(done) < len(keys):
            return None
        states = self._states(keys)
        return states if _is_list(self.engine, target) else states[0]

    def current_state(self, target: Target) -> Any:
        compiler = self.engine.compiler
        node, index = target
        if compiler is None or node.index not in compiler.keys:
            return State(StateType.PENDING)
        keys = _keys(self.engine, target)
        monitor = self.engine.states
        known = monitor.snapshot() if monitor is not None else {}
        states = [known.get(k) or compiler.synthetic.get(k) or State(StateType.PENDING)
                  for k in keys]
        return states if _is_list(self.engine, target) else states[0]

    def length(self, node: Node, timeout: float | None) -> int:
        """A map's length, waiting (at most ``timeout``) for it only."""
        keys = self._submitted([(node, None)], timeout)
        if node.index not in _compiler(self.engine).keys:
            raise WaitTimeout(f"the length of map {node.name!r} was not known after "
                              f"{timeout or 0:g}s")
        if not isinstance(_compiler(self.engine).keys[node.index], list):
            # a map that could not expand: its one state says why
            gathered = self._gather(keys)
            _value(gathered.get(keys[0]), keys[0], True)
            return 0
        return len(keys)

    def wait(self, targets: list[Target], timeout: float | None,
             first: bool) -> set[tuple[int, int | None]]:
        keys = self._submitted(targets)
        done = self._wait_keys(keys, timeout, first)
        return {_ident(t) for t in targets if all(k in done for k in _keys(self.engine, t))}

    def as_completed(self, targets: list[Target],
                     timeout: float | None) -> Iterator[tuple[int, int | None]]:
        self._submitted(targets)
        compiler = _compiler(self.engine)
        left: dict[tuple[int, int | None], int] = {}
        waiting: dict[Any, list[tuple[int, int | None]]] = {}  # by Dask key (a chunk's)
        for target in targets:
            keys = _keys(self.engine, target)
            left[_ident(target)] = len(keys)
            for key in keys:
                waiting.setdefault(compiler.dask_key(key), []).append(_ident(target))
        for key in self._guard(_backend(self.engine).as_completed, list(waiting), timeout):
            for ident in waiting[key]:
                left[ident] -= 1
                if left[ident] == 0:
                    yield ident

    # -- helpers ------------------------------------------------------------------------
    def _wait_keys(self, keys: list[Any], timeout: float | None, first: bool) -> set[Any]:
        """Wait for the Dask tasks of task runs ``keys``; the task runs that ended."""
        compiler = _compiler(self.engine)
        done = self._guard(_backend(self.engine).wait_keys, compiler.dask_keys(keys), timeout,
                           first)
        return {k for k in keys if compiler.dask_key(k) in done}

    def _gather(self, keys: list[Any]) -> dict[Any, Any]:
        """The states of task runs ``keys`` (a chunk's elements: from their chunk)."""
        compiler = _compiler(self.engine)
        values = self._guard(_backend(self.engine).gather, compiler.dask_keys(keys))
        return {k: compiler.pick(k, values) for k in keys}

    def _submitted(self, targets: list[Target], timeout: float | None = None) -> list[Any]:
        """Submit what the body built, until the targets have keys; their keys."""
        with self._flushing:
            self._guard(self.engine.flush, [node for node, _ in targets], False, timeout)
        keys = _compiler(self.engine).keys
        return [k for t in targets if t[0].index in keys for k in _keys(self.engine, t)]

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Call ``fn``; an error of the run's machinery breaks the run for good,
        and reaches the body as :class:`RunInterrupted`."""
        if self.broken is not None:
            raise RunInterrupted(self.broken)
        try:
            result = fn(*args)
            if isinstance(result, Iterator):
                return self._guarded(result)
            return result
        except (WaitTimeout, RunInterrupted):
            raise
        except BaseException as err:
            self.broken = err
            raise RunInterrupted(err) from err

    def _guarded(self, it: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from it
        except (WaitTimeout, GeneratorExit, RunInterrupted):
            raise
        except BaseException as err:
            self.broken = err
            raise RunInterrupted(err) from err

    def _states(self, keys: list[Any]) -> list[State]:
        """The final, result-free states of ended keys: from the run's monitor
        (fed as each task ends), or gathered (without their value) if a state
        has not arrived."""
        engine = self.engine
        monitor, compiler = engine.states, _compiler(engine)
        known = monitor.snapshot() if monitor is not None else {}
        out: dict[Any, State] = {}
        missing = []
        for key in keys:
            state = known.get(key) or compiler.synthetic.get(key)
            if state is not None and state.is_final():
                out[key] = state
            else:
                missing.append(key)
        if missing:
            gathered = self._gather(missing)
            for key in missing:
                got = gathered.get(key)
                out[key] = got.summary() if isinstance(got, State) else _crashed(key)
        return [out[k] for k in keys]


def _keys(engine: Engine, target: Target) -> list[Any]:
    """The Dask keys of a target (a map's whole list, or its element)."""
    node, index = target
    keys = _compiler(engine).keys[node.index]
    if index is None or not isinstance(keys, list):
        return as_keys(keys)
    if not 0 <= index < len(keys):
        raise IndexError(f"map {node.name!r} has {len(keys)} elements; element {index} "
                         "does not exist")
    return [keys[index]]


def _is_list(engine: Engine, target: Target) -> bool:
    node, index = target
    return index is None and isinstance(_compiler(engine).keys[node.index], list)


def _ident(target: Target) -> tuple[int, int | None]:
    return target[0].index, target[1]


def _name(target: Target) -> str:
    node, index = target
    return f"task {node.name!r}" if index is None else f"element {index} of map {node.name!r}"


def _crashed(key: Any) -> State:
    return State(StateType.CRASHED, message=f"no state was recorded for {key!r} (the "
                 "worker running it was lost)")


def _value(state: Any, key: Any, raise_on_failure: bool) -> Any:
    """A task run's value for the body: its result, its exception (raised, or
    returned with ``raise_on_failure=False``), None when it was skipped."""
    if not isinstance(state, State):
        state = _crashed(key)
    if state.is_failed() or state.is_cancelled():
        error = state.exception or FlowRunError(f"{state.name}: {state.message}")
        if raise_on_failure:
            raise error
        return error
    return state.result()
