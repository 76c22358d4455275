"""A flow run: live while it goes, then its final state, task states and value.

The engine changes a run only through its :class:`RunControl`; users read
the :class:`FlowRun`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from daskflow.core.groups import Group, by_task, groups_of
from daskflow.core.states import State, StateType
from daskflow.exceptions import FlowRunError
from daskflow.ui.report import render, run_html


class FlowRun:
    """One run of a flow: live while it runs, its record once it ended.

    ``flow.run(...)`` returns it finished and never raises for task errors;
    ``flow.submit(...)`` returns it at once while the run goes on in a
    background thread.

    Attributes
    ----------
    flow_name, run_id, parameters
    run_name : str or None
        The flow's ``flow_run_name`` formatted with the parameters.
    attempt : int
        Which attempt of a flow with ``retries`` this run is (1 for the first).
    state : State
        The flow run's state: Pending, Running, then final.
    states : dict[str, State]
        Every task run by name (``"name"`` or ``"name[i]"`` for a map), as
        result-free summaries; live while the run goes (Pending until a task
        run ends).
    cluster : str
        Where it ran.
    dashboard_link : str or None
        The Dask dashboard of that cluster, when it has one.
    scheduled_for : datetime or None
        The fire of ``flow.serve`` that started it.
    logs : list of dict
        The run's log records (driver and tasks): ``time``, ``level``,
        ``task``, ``message``; the last 10,000 are kept.
    artifacts : list of dict
        What its tasks and body attached for people (:mod:`daskflow.artifact`):
        ``type`` (markdown, table, link, image), ``key``, ``description``,
        ``data``, ``task``.
    page_link : str or None
        The run's page in a daskflow web view (the scheduler's dashboard, or
        ``daskflow ui`` at the setting ``daskflow.ui.url``), when one is known.
    """

    def __init__(self, flow_name: str, run_id: str, parameters: dict[str, Any]) -> None:
        self.flow_name = flow_name
        self.run_id = run_id
        self.parameters = parameters
        self.state = State(StateType.PENDING)
        self.cluster = ""
        self.dashboard_link: str | None = None
        self.cluster_closed = False  # the temporary cluster it ran on closed with it
        self.scheduled_for: Any = None
        self.run_name: str | None = None  # flow_run_name, formatted with the parameters
        self.attempt = 1  # of a flow with retries: which attempt this run is
        self.created = time.time()
        self.logs: deque[dict[str, Any]] = deque(maxlen=10_000)  # the run's log records
        self.artifacts: list[dict[str, Any]] = []  # appended to by the run's events
        # chunked maps: task name -> the spans [start, stop) of its Dask tasks' elements
        self.chunked: dict[str, list[list[int]]] = {}
        self.page_link: str | None = None
        self.scheduler_id: str | None = None  # the Dask scheduler's id, if it ran on one
        self._final: dict[str, State] | None = None
        self._live: Callable[[], dict[str, State]] | None = None  # while running
        self._groups: Callable[[], list[Group]] | None = None  # while running
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._ended = False
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._callbacks: list[Callable[[FlowRun], Any]] = []
        self._callbacks_lock = threading.Lock()

    # -- live view ---------------------------------------------------------------
    @property
    def states(self) -> dict[str, State]:
        if self._final is not None:
            return self._final
        return self._live() if self._live is not None else {}

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> State | None:
        """Wait until the run ends; its final state, or None if ``timeout`` passed first."""
        if not self._done.wait(timeout):
            return None
        if self._thread is not None:
            self._thread.join()
        return self.state

    def add_done_callback(self, fn: Callable[[FlowRun], Any]) -> None:
        """Call ``fn(run)`` when the run is over, before ``wait()`` returns
        (at once if it is over already); an error in ``fn`` is logged."""
        with self._callbacks_lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        _call_back(fn, self)

    def cancel(self, timeout: float | None = 60) -> bool:
        """Cancel the run: its tasks are cancelled and the cleanups of the
        resources it set up run.  Returns whether the run was still going;
        waits up to ``timeout`` seconds for it to end."""
        if self.done():
            return False
        self._cancel.set()
        self.wait(timeout)
        return True

    def result(self) -> Any:
        """The flow's return value (waiting for the run to end); raises the
        failing task's error if it failed."""
        self.wait()
        if self._error is not None:
            raise self._error
        if not self.state.is_completed():
            raise FlowRunError(f"flow run {self.flow_name!r} is {self.state.name}: {self.state.message}")
        return self._value

    def groups(self) -> list[Group]:
        """The runs of each task, counted by state type (live while the run goes)."""
        live = self._groups
        return live() if live is not None else groups_of(self.states)

    @property
    def duration(self) -> float | None:
        return self.state.duration

    def counts(self) -> dict[str, int]:
        """How many task runs are in each state name."""
        return dict(Counter(s.name for s in self.states.values()))

    def headline(self) -> str:
        """The first line of :meth:`summary`: the flow run's name, id, state and duration."""
        dur = f" in {self.duration:.2f}s" if self.duration is not None else ""
        named = f" {self.run_name!r}" if self.run_name else ""
        return (f"Flow run {self.flow_name!r}{named} ({self.run_id}) {self.state.name}{dur}"
                + (f": {self.state.message}" if self.state.message else ""))

    def summary(self) -> str:
        """A few readable lines: the flow's state, then one line per task name."""
        grouped = by_task(self.states)
        groups = {base: Counter(st.name for st in runs) for base, runs in grouped.items()}
        retries = {base: sum(st.retries for st in runs)
                   for base, runs in grouped.items()}
        lines = [self.headline()]
        width = max((len(n) for n in groups), default=0)
        for base, counter in groups.items():
            text = ", ".join(f"{n} {k}" if n > 1 or len(counter) > 1 else k
                             for k, n in counter.items())
            if retries[base]:
                text += f" ({retries[base]} retr{'y' if retries[base] == 1 else 'ies'})"
            lines.append(f"  {base:<{width}}  {text}")
        return "\n".join(lines)

    def record(self, with_states: bool = True) -> dict[str, Any]:
        """The run's record: its state, parameters, every task run's state
        (without results, with the traceback of a failure), and its logs
        (``with_states=False``: ``states`` empty, see :meth:`state_records`)."""
        return {"flow": self.flow_name, "run_id": self.run_id, "run_name": self.run_name,
                "attempt": self.attempt, "cluster": self.cluster,
                "dashboard": self.dashboard_link, "cluster_closed": self.cluster_closed,
                "page": self.page_link, "scheduler_id": self.scheduler_id,
                "parameters": self.parameters,
                "state": _state_record(self.state),
                "states": ({name: _state_record(st) for name, st in self.states.items()}
                           if with_states else {}),
                "logs": list(self.logs), "artifacts": list(self.artifacts),
                "chunked": dict(self.chunked)}

    def state_records(self) -> Any:
        """``(name, record)`` of every task run's state, made one at a time."""
        for name, st in self.states.items():
            yield name, _state_record(st)

    def to_json(self) -> str:
        """The run's :meth:`record` as JSON (``repr`` of parameters JSON cannot hold)."""
        return json.dumps(self.record(), indent=2, default=repr)

    @classmethod
    def from_json(cls, text: str) -> FlowRun:
        """A finished run back from :meth:`to_json`'s record (states without
        results or exceptions; the tracebacks are kept as text)."""
        record = json.loads(text)

        def state(d: dict[str, Any], name: str = "") -> State:
            map_index = None
            if name.endswith("]") and "[" in name:
                tail = name.rsplit("[", 1)[1][:-1]
                map_index = int(tail) if tail.isdigit() else None
            return State(StateType(d["type"]), name=d["name"], message=d.get("message") or "",
                         traceback=d.get("traceback"), attempts=d.get("attempts") or 0,
                         start=d.get("start"), end=d.get("end"), worker=d.get("worker"),
                         task_name=name, map_index=map_index,
                         tries=tuple(tuple(t) for t in d.get("tries", ())),
                         reruns=d.get("reruns") or 0, run_name=d.get("run_name"))

        try:
            run = cls(record["flow"], record["run_id"], record.get("parameters") or {})
            states = {n: state(d, n) for n, d in record.get("states", {}).items()}
            RunControl(run).finish(state(record["state"]), states, None, None)
        except (KeyError, TypeError, ValueError) as err:
            raise FlowRunError(f"not a daskflow run record ({type(err).__name__}: {err}); "
                               "make one with FlowRun.to_json()") from None
        run.cluster = record.get("cluster") or ""
        run.run_name, run.attempt = record.get("run_name"), record.get("attempt") or 1
        run.dashboard_link = record.get("dashboard")
        run.cluster_closed = bool(record.get("cluster_closed"))
        run.logs.extend(record.get("logs") or [])
        run.artifacts.extend(record.get("artifacts") or [])
        run.chunked.update(record.get("chunked") or {})
        run.page_link = record.get("page")
        run.scheduler_id = record.get("scheduler_id")
        run._done.set()
        return run

    def report(self, path: str | None = None) -> str:
        """Write the run's report, one self-contained HTML file (no network
        needed to open it); return its path (default ``<flow>-<run id>.html``)."""
        path = path or f"{self.flow_name}-{self.run_id}.html"
        page = render(json.loads(self.to_json()))
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
        return path

    def __repr__(self) -> str:
        return f"<FlowRun {self.flow_name!r} {self.state.name} tasks={len(self.states)}>"

    def _repr_html_(self) -> str:
        return run_html(self.record(), live=not self.done())


class RunControl:
    """What the engine does to its :class:`FlowRun`: the one way a run changes."""

    __slots__ = ("run",)

    def __init__(self, run: FlowRun) -> None:
        self.run = run

    def on_cluster(self, description: str, dashboard: str | None, page: str | None = None,
                   scheduler_id: str | None = None) -> None:
        """Where the run goes, once its backend is open (``page``: the run's
        web page; ``scheduler_id``: the Dask scheduler's id)."""
        run = self.run
        run.cluster, run.dashboard_link = description, dashboard
        run.page_link, run.scheduler_id = page, scheduler_id

    def running(self, start: float, live: Callable[[], dict[str, State]],
                groups: Callable[[], list[Group]]) -> None:
        """The run started: its task states and groups are read live from now on."""
        run = self.run
        run._live, run._groups = live, groups
        run._final = None  # (a retried flow's next attempt: live again)
        run.state = State(StateType.RUNNING, start=start)

    def cluster_closed(self) -> None:
        """The temporary cluster the run went to closed with it: its dashboard is gone."""
        self.run.cluster_closed = True

    def in_thread(self, thread: threading.Thread) -> None:
        """The run goes on in ``thread`` (``flow.submit``): ``wait()`` joins it."""
        self.run._thread = thread

    def again(self, message: str) -> None:
        """The run failed and runs again (a flow's ``retries``): it is not
        over; it awaits its next attempt."""
        run = self.run
        run._ended = False
        run.state = State(StateType.PENDING, name="AwaitingRetry", message=message)
        run.attempt += 1

    def request_cancel(self) -> None:
        """Ask the run to stop at its next check (Ctrl-C while its body builds,
        or its ``timeout``)."""
        self.run._cancel.set()

    def cancel_requested(self) -> bool:
        return self.run._cancel.is_set()

    def ended(self) -> bool:
        """Whether the final state is recorded."""
        return self.run._ended

    def finish(self, state: State, states: dict[str, State], value: Any,
               error: BaseException | None) -> None:
        """Record the final state; ``done()`` follows once the flow's hooks ran (:meth:`settle`)."""
        run = self.run
        run.state, run._final, run._value, run._error = state, states, value, error
        run._live = run._groups = None
        run._ended = True

    def settle(self) -> None:
        """The run is over, its hooks too: its done callbacks are called, then
        ``wait()`` and ``done()`` return."""
        run = self.run
        with run._callbacks_lock:
            callbacks, run._callbacks = run._callbacks, []
        for fn in callbacks:
            _call_back(fn, run)
        with run._callbacks_lock:
            late, run._callbacks = run._callbacks, []
            run._done.set()
        for fn in late:
            _call_back(fn, run)


def _call_back(fn: Callable[[FlowRun], Any], run: FlowRun) -> None:
    try:
        fn(run)
    except Exception as err:  # a display or a user's callback never breaks a run
        logging.getLogger("daskflow.run").warning(
            "a done callback of run %s raised %s: %s", run.run_id, type(err).__name__, err)


def _state_record(st: State) -> dict[str, Any]:
    out: dict[str, Any] = {"name": st.name, "type": st.type.value, "message": st.message,
           "attempts": st.attempts, "start": st.start, "end": st.end, "worker": st.worker}
    if st.traceback:
        out["traceback"] = st.traceback
    if st.tries:
        out["tries"] = [list(t) for t in st.tries]
    if st.reruns:
        out["reruns"] = st.reruns
    if st.run_name:
        out["run_name"] = st.run_name
    return out


def flow_state(reference: list[State], missing: list[State], all_states: list[State]) -> State:
    """The final state of a flow from its reference task states.

    Completed when every reference state completed or was skipped; Crashed
    when a task left no state; otherwise Failed, naming the first failure.
    """
    start = min((s.start for s in all_states if s.start is not None), default=None)
    if missing:
        first = missing[0]
        return State(StateType.CRASHED, start=start, exception=first.exception,
                     message=f"{len(missing)} task(s) left no state, e.g. "
                             f"{first.task_name!r}: {first.message}")
    bad = [s for s in reference if not (s.is_completed() or s.is_skipped())]
    if not bad:
        return State(StateType.COMPLETED, start=start, message="")
    first = bad[0]
    more = (f"; {len(bad) - 1} more of the {len(reference)} task runs that decide the flow's "
            "state (those it returns, else those it ends with) did not complete either"
            if len(bad) > 1 else "")
    return State(StateType.FAILED, start=start, exception=first.exception,
                 message=f"task {first.task_name!r} did not complete ({first.name}): "
                         f"{first.message}{more}")
