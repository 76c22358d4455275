"""The record of one flow run: its final state, task states and value."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

from daskflow.exceptions import FlowRunError
from daskflow.states import State, StateType


class FlowRun:
    """What ``flow.run(...)`` returns; it never raises for task errors.

    Attributes
    ----------
    flow_name, run_id, parameters
    state : State
        The flow run's final state.
    states : dict[str, State]
        Every task run by name (``"name"`` or ``"name[i]"`` for a map), as
        result-free summaries.
    """

    def __init__(self, flow_name: str, run_id: str, parameters: dict[str, Any],
                 state: State, states: dict[str, State], value: Any,
                 error: BaseException | None, cluster: str) -> None:
        self.flow_name = flow_name
        self.run_id = run_id
        self.parameters = parameters
        self.state = state
        self.states = states
        self._value = value
        self._error = error
        self.cluster = cluster

    def result(self) -> Any:
        """The flow's return value; raises the failing task's error if it failed."""
        if self._error is not None:
            raise self._error
        if not self.state.is_completed():
            raise FlowRunError(f"flow run {self.flow_name!r} is {self.state.name}: {self.state.message}")
        return self._value

    @property
    def duration(self) -> float | None:
        return self.state.duration

    def counts(self) -> dict[str, int]:
        """How many task runs ended in each state name."""
        return dict(Counter(s.name for s in self.states.values()))

    def summary(self) -> str:
        """A few readable lines: the flow's state, then one line per task name."""
        groups: dict[str, Counter] = {}
        for name, st in self.states.items():
            base = name.split("[", 1)[0] if st.map_index is not None else name
            groups.setdefault(base, Counter())[st.name] += 1
        dur = f" in {self.duration:.2f}s" if self.duration is not None else ""
        lines = [f"Flow run {self.flow_name!r} ({self.run_id}) {self.state.name}{dur}"
                 + (f": {self.state.message}" if self.state.message else "")]
        width = max((len(n) for n in groups), default=0)
        for base, counter in groups.items():
            text = ", ".join(f"{n} {k}" if n > 1 or len(counter) > 1 else k
                             for k, n in counter.items())
            lines.append(f"  {base:<{width}}  {text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<FlowRun {self.flow_name!r} {self.state.name} tasks={len(self.states)}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(s.name)}</td>"
            f"<td>{html.escape(s.message)}</td></tr>"
            for n, s in list(self.states.items())[:200])
        more = "" if len(self.states) <= 200 else f"<p>... {len(self.states) - 200} more</p>"
        return (f"<div><b>Flow run {html.escape(self.flow_name)}</b> "
                f"<code>{self.state.name}</code> {html.escape(self.state.message)}"
                f"<table><tr><th>task</th><th>state</th><th>message</th></tr>{rows}</table>"
                f"{more}</div>")


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
    return State(StateType.FAILED, start=start, exception=first.exception,
                 message=f"{len(bad)} of {len(reference)} reference task(s) did not complete; "
                         f"{first.task_name!r}: {first.message}")
