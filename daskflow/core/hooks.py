"""State hooks: user functions called when a task or a flow run reaches a state.

Task hooks (``@task(on_completion=[...], on_failure=[...], on_retry=[...],
on_skip=[...])``) run **on the worker**, in the task's own thread, right
after its state is final (``on_retry`` before each retry's delay), called as
``hook(task, state)`` with ``df.context()`` and ``df.get_run_logger()``
available.  While they run the task gives its worker thread back to Dask
(``secede``), so a slow hook holds no other task; only that task's
dependents wait for it, as they wait for the task.

Flow hooks (``@flow(on_completion=..., on_failure=..., on_crashed=...,
on_cancellation=...)``) run **on the driver** when the run ends, called as
``hook(flow, run)`` with the finished :class:`~daskflow.FlowRun`.

A hook that raises is logged with its name and never changes a state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from daskflow.core.states import State, StateType
from daskflow.exceptions import FlowDefinitionError

Hook = Callable[[Any, Any], Any]

_TASK_STATE_HOOK = {StateType.COMPLETED: "on_completion", StateType.FAILED: "on_failure",
                    StateType.SKIPPED: "on_skip"}
_FLOW_STATE_HOOK = {StateType.COMPLETED: "on_completion", StateType.FAILED: "on_failure",
                    StateType.CRASHED: "on_crashed", StateType.CANCELLED: "on_cancellation"}


def check_hooks(kind: str, name: str, option: str, hooks: Any) -> tuple[Hook, ...]:
    """A hook option as a tuple of callables (one callable is accepted as is)."""
    if hooks is None:
        return ()
    if callable(hooks):
        hooks = [hooks]
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise FlowDefinitionError(
            f"{option} of {kind} {name!r} must be a list of functions (each called as "
            f"hook({kind}, {'state' if kind == 'task' else 'run'})), got {hooks!r}")
    out = tuple(hooks)
    for hook in out:
        if not callable(hook):
            raise FlowDefinitionError(
                f"{option} of {kind} {name!r} holds {hook!r}, which is not callable; give "
                f"functions called as hook({kind}, {'state' if kind == 'task' else 'run'})")
    return out


def hook_name(hook: Any) -> str:
    return str(getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None) or hook)


def call_hooks(hooks: Iterable[Hook], owner: Any, state: Any, log: Any, what: str) -> None:
    """Call each hook; one that raises is logged, and the others still run."""
    for hook in hooks:
        try:
            hook(owner, state)
        except Exception as err:
            log.error("hook %s of %s raised %s: %s; the state is unchanged",
                      hook_name(hook), what, type(err).__name__, err)


def task_hooks_for(task: Any, state: State) -> tuple[Hook, ...]:
    option = _TASK_STATE_HOOK.get(state.type)
    return getattr(task, option, ()) if option else ()


def run_flow_hooks(flow: Any, run: Any) -> None:
    """The flow hooks that the run's final state calls for, on the driver."""
    if flow is None or run.state is None:
        return
    option = _FLOW_STATE_HOOK.get(run.state.type)
    hooks = getattr(flow, option, ()) if option else ()
    if hooks:
        log = logging.LoggerAdapter(logging.getLogger("daskflow.run"),
                                    {"daskflow_task": f"flow {flow.name}", "daskflow_run": run.run_id})
        call_hooks(hooks, flow, run, log, f"flow {flow.name!r}")
