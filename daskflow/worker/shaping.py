"""Prefect 3's run options, on the worker: run names, retry shaping, ``on_running``.

:func:`name_run` formats a task's ``task_run_name`` from the call's
arguments once they are known (upstream results substituted), so the
elements of a map get names of their own; a template or function that
fails leaves the default name, with a warning.  :func:`retry_decision`
applies ``retry_condition_fn`` and ``retry_jitter_factor`` to a delay the
attempt loop chose.  Nothing here decides alone: the attempt loop in
:mod:`daskflow.worker.run` calls these.
"""

from __future__ import annotations

from daskflow.core.hooks import call_hooks
from daskflow.core.retrying import format_run_name, jittered
from daskflow.core.states import State, StateType
from daskflow.wire import Call
from daskflow.worker.context import call_logger, current_context, get_run_logger, running


def name_run(call: Call, args: tuple, kwargs: dict) -> None:
    """Set ``call.run_name`` from the task's ``task_run_name``, if it has one."""
    task = call.spec.task
    template = getattr(task, "task_run_name", None)
    if template is None:
        return
    try:
        sig = task._signature
        if sig is not None:
            bound = sig[0].bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
        else:
            params = dict(kwargs)
        with running(call, 0):  # a name function may read df.context()
            call.run_name = format_run_name(template, params)
    except Exception as err:
        call_logger(call).warning("task_run_name %r could not be formatted (%s: %s); the "
                                  "run keeps its name", template, type(err).__name__, err)


def retry_decision(call: Call, attempt: int, err: BaseException, delay: float | None,
                   start: float) -> float | None:
    """``delay`` after ``retry_condition_fn`` and ``retry_jitter_factor``: None if
    the condition refuses the retry (or raises: logged, no retry)."""
    if delay is None:
        return None
    task = call.spec.task
    condition = getattr(task, "retry_condition_fn", None)
    if condition is not None:
        failed = State(StateType.FAILED, exception=err, attempts=attempt, start=start,
                       message=f"{type(err).__name__}: {err}", task_name=call.display_name,
                       map_index=call.index, run_name=call.run_name)
        try:
            wanted = condition(task, current_context(), failed)
        except Exception as cond_err:
            call_logger(call).error("retry_condition_fn raised %s: %s; no retry",
                                    type(cond_err).__name__, cond_err)
            return None
        if not wanted:
            call_logger(call).info("retry_condition_fn said not to retry after attempt %d",
                                   attempt)
            return None
    return jittered(delay, getattr(task, "retry_jitter_factor", None))


def running_hooks(call: Call, start: float) -> None:
    """The task's ``on_running`` hooks, once before its first attempt."""
    hooks = getattr(call.spec.task, "on_running", ())
    if not hooks:
        return
    state = State(StateType.RUNNING, start=start, task_name=call.display_name,
                  map_index=call.index, run_name=call.run_name)
    with running(call, 1):
        call_hooks(hooks, call.spec.task, state, get_run_logger(),
                   f"task {call.display_name!r}")
