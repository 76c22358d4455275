"""Prefect 3's ``@flow``: its option names and its run semantics.

A flow's body runs as a daskflow flow body.  What differs from daskflow's
``@df.flow``, as Prefect 3 has it: a task called in the body returns its
value (see :mod:`.tasks`); a nested flow returns its value, not references;
a run whose body returns without raising is Completed, whatever the tasks
it did not return did (daskflow decides from its terminal tasks); the flow's
name is the function's with ``_`` as ``-``; ``task_runner=`` is ``cluster=``
(see :mod:`.task_runners`).  No server is involved: the run's states and
logs stream to this process.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import daskflow as df
from daskflow.compat.prefect.errors import refuse
from daskflow.compat.prefect.futures import resolve
from daskflow.compat.prefect.task_runners import cluster_of
from daskflow.compat.prefect.tasks import flow_log_prints
from daskflow.define.build import current_builder

_FLOW_HOOKS = ("on_completion", "on_failure", "on_crashed", "on_cancellation", "on_running")
_IGNORED = ("version", "description", "cache_result_in_memory", "persist_result",
            "result_serializer")


class _FlowHook:
    """A Prefect 3 flow hook ``hook(flow, flow_run, state)`` called as daskflow's
    ``hook(flow, run)``: ``flow_run`` is the FlowRun, ``state`` its state."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, flow: Any, run: Any) -> Any:
        return self.fn(flow, run, run.state)


class _Hooks(tuple):
    owner: Any = None
    option = ""

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(self.owner, self.option, _bound(self.owner, self.option, (*self, _FlowHook(fn))))
        return fn


def _bound(owner: Any, option: str, hooks: tuple) -> _Hooks:
    out = _Hooks(hooks)
    out.owner, out.option = owner, option
    return out


def _body(fn: Callable[..., Any], log_prints: bool | None) -> Callable[..., Any]:
    """The flow body, run with the flow's ``log_prints`` in force for its tasks."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def body_async(*args: Any, **kwargs: Any) -> Any:
            token = flow_log_prints.set(log_prints)
            try:
                return await fn(*args, **kwargs)
            finally:
                flow_log_prints.reset(token)
        return body_async

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        token = flow_log_prints.set(log_prints)
        try:
            return fn(*args, **kwargs)
        finally:
            flow_log_prints.reset(token)
    return body


class Flow(df.Flow):
    """A daskflow flow made with Prefect 3's options and semantics (see :func:`flow`)."""

    # a run is Completed when its body returned: only what it returns decides
    # otherwise (daskflow's engine reads this)
    state_from_returned = True

    def __init__(self, fn: Callable[..., Any], **options: Any) -> None:
        self.prefect_options = dict(options)
        self.task_runner = options.get("task_runner")
        self.log_prints = options.get("log_prints")
        super().__init__(_body(fn, self.log_prints), **_daskflow_options(fn, options))
        self.fn_original = fn
        for option in _FLOW_HOOKS:
            setattr(self, option, _bound(self, option, tuple(getattr(self, option))))
        self.description = options.get("description") or inspect.getdoc(fn)
        self.version = options.get("version")

    def with_options(self, **options: Any) -> Flow:
        """A copy with some options changed (Prefect 3's names)."""
        return Flow(self.fn_original, **{**self.prefect_options, **options})

    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        """Run the flow and return its value (its final state with
        ``return_state=True``); inside another flow's body, run it there and
        return its value; ``await`` it from async code if it is ``async def``."""
        if current_builder() is not None:
            return resolve(df.Flow.__call__(self, *args, **kwargs))
        if return_state:
            return self.run(*args, **kwargs).state
        caller = sys._getframe(1)
        if self.is_async and caller.f_code.co_flags & inspect.CO_COROUTINE:
            return self._awaited(args, kwargs)
        return self.run(*args, **kwargs).result()

    async def _awaited(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        run = await asyncio.to_thread(functools.partial(self.run, *args, **kwargs))
        return run.result()

    def serve(self, name: str | None = None, *, cron: Any = None, interval: Any = None,
              parameters: dict[str, Any] | None = None, **options: Any) -> Any:
        """Prefect 3's ``flow.serve(name, cron=..., interval=..., parameters=...)``:
        daskflow's schedule, in this process, with no server (see
        ``df.Flow.serve``); Prefect's other serve options are refused."""
        accepted = {"tags", "description", "version", "pause_on_shutdown", "limit"}
        unknown = sorted(k for k, v in options.items() if k not in accepted and v is not None)
        if unknown or isinstance(cron, (list, tuple)) or isinstance(interval, (list, tuple)):
            raise refuse(f"flow.serve({', '.join(unknown) or 'several schedules'}=...)",
                         "daskflow's serve takes one cron or interval schedule",
                         "give cron= or interval=, and parameters=")
        return df.Flow.serve(self, cron=cron, interval=interval, parameters=parameters,
                             limit=options.get("limit"))

    def deploy(self, *args: Any, **kwargs: Any) -> Any:
        raise refuse("flow.deploy()", "deployments, work pools and workers belong to "
                     "Prefect's server, and daskflow has none", "run the flow where it "
                     "should run: `daskflow run file.py:flow --cluster tcp://...`, "
                     "flow.serve(cron=...), or cron/systemd running `daskflow run`")

    def to_deployment(self, *args: Any, **kwargs: Any) -> Any:
        raise refuse("flow.to_deployment()", "deployments belong to Prefect's server",
                     "use flow.serve(cron=...) or `daskflow run`")

    @classmethod
    def from_source(cls, *args: Any, **kwargs: Any) -> Any:
        raise refuse("flow.from_source()", "daskflow loads flows from files you have",
                     "import the flow, or `daskflow run path.py:flow`")


def _daskflow_options(fn: Callable[..., Any], given: dict[str, Any]) -> dict[str, Any]:
    """Prefect 3's ``@flow`` options as daskflow's ``@df.flow`` options."""
    known = {"name", "flow_run_name", "retries", "retry_delay_seconds", "task_runner",
             "timeout_seconds", "validate_parameters", "result_storage", "log_prints",
             *_FLOW_HOOKS, *_IGNORED}
    unknown = sorted(set(given) - known)
    if unknown:
        raise df.FlowDefinitionError(f"@flow got unknown option(s) {unknown} (Prefect 3's "
                                     "flow options are taken, see docs/prefect.md)")
    out: dict[str, Any] = {
        "name": given.get("name") or getattr(fn, "__name__", "flow").replace("_", "-"),
        "cluster": cluster_of(given.get("task_runner")),
        "retries": given.get("retries") or 0,
        "validate_parameters": given.get("validate_parameters", True),
    }
    for prefects, ours in (("flow_run_name", "flow_run_name"), ("retry_delay_seconds",
                           "retry_delay"), ("timeout_seconds", "timeout"),
                           ("result_storage", "result_storage")):
        if given.get(prefects) is not None:
            out[ours] = given[prefects]
    for option in _FLOW_HOOKS:
        hooks = given.get(option)
        if hooks:
            out[option] = [_FlowHook(h) for h in ([hooks] if callable(hooks) else hooks)]
    return out


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Prefect 3's ``@flow`` / ``@flow(...)`` over daskflow's flows.

    Options: ``name`` (default: the function's name, ``_`` as ``-``),
    ``task_runner`` (``DaskTaskRunner(...)``, ``ThreadPoolTaskRunner(...)``;
    none: daskflow's default cluster), ``log_prints`` (for the flow's tasks
    that do not say), ``retries``, ``retry_delay_seconds``,
    ``timeout_seconds``, ``flow_run_name``, ``validate_parameters``,
    ``result_storage``, and the hooks (``hook(flow, flow_run, state)``).
    ``description``, ``version``, ``persist_result``, ``result_serializer``
    and ``cache_result_in_memory`` are accepted and change nothing.
    """
    if fn is None:
        return lambda f: Flow(f, **options)
    return Flow(fn, **options)
