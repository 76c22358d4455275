"""State hooks: user functions called when a task or a flow run reaches a state.

Task hooks (``@task(on_completion=[...], on_failure=[...], on_retry=[...],
on_skip=[...], on_running=[...])``) run **on the worker**, in the task's own
thread, right after its state is final (``on_retry`` before each retry's
delay, ``on_running`` once before its first attempt), called as
``hook(task, state)`` with ``df.context()`` and ``df.get_run_logger()``
available.  While they run the task gives its worker thread back to Dask
(``secede``), so a slow hook holds no other task; only that task's
dependents wait for it, as they wait for the task.

Flow hooks (``@flow(on_completion=..., on_failure=..., on_crashed=...,
on_cancellation=...)``) run **on the driver** when the run ends, called as
``hook(flow, run)`` with the finished :class:`~daskflow.FlowRun`
(``on_running`` as the run starts, once per attempt of a retried flow).

As in Prefect 3, each hook option is also a decorator that adds a hook::

    @my_task.on_failure
    def alert(task, state): ...

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
_FLOW_STATE_HOOK = {StateType.RUNNING: "on_running",
                    StateType.COMPLETED: "on_completion", StateType.FAILED: "on_failure",
                    StateType.CRASHED: "on_crashed", StateType.CANCELLED: "on_cancellation"}


class Hooks(tuple):
    """The hooks of one option: a tuple, and a decorator that adds one to its
    owner (``@my_task.on_failure``, as Prefect 3 allows)."""

    owner: Any = None
    option = ""

    def __call__(self, fn: Hook) -> Hook:
        if self.owner is None or not callable(fn):
            raise FlowDefinitionError(f"@{self.option or 'hook'} decorates a function "
                                      f"called as hook(owner, state), got {fn!r}")
        setattr(self.owner, self.option, bound(self.owner, self.option, (*self, fn)))
        return fn

    def __reduce__(self) -> Any:
        return (tuple, (tuple(self),))


def bound(owner: Any, option: str, hooks: tuple[Hook, ...]) -> Hooks:
    """``hooks`` as the value of ``owner.<option>``."""
    out = Hooks(hooks)
    out.owner, out.option = owner, option
    return out


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
