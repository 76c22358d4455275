"""Prefect 3's ``@task``: its option names, and its call semantics in a flow.

Calling a task inside a flow body returns its VALUE, as in Prefect 3: the
call is built as a daskflow task and the body waits for that one value
(``ref.result()``).  ``task.submit(...)`` returns a future (daskflow's lazy
reference: nothing waits until ``.result()``) and ``task.map(...)`` a
:class:`~daskflow.compat.prefect.futures.PrefectFutureList`; what is built
from futures without waiting is submitted to the cluster together, as one
graph, and the data between such tasks never passes through the driver.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

from dask.base import tokenize

import daskflow as df
from daskflow import exponential_backoff
from daskflow.compat.prefect.cache_policies import CachePolicy
from daskflow.compat.prefect.errors import refuse
from daskflow.compat.prefect.futures import PrefectFutureList, unwrap
from daskflow.define.build import current_builder

# Set while a Prefect-style flow body runs: its log_prints (None: not given).
flow_log_prints: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "daskflow_compat_prefect_log_prints", default=None)

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]

_TASK_HOOKS = ("on_completion", "on_failure", "on_retry", "on_skip", "on_running")
_SERIALIZERS = {"pickle": "pickle", "cloudpickle": "pickle"}


class _TaskHook:
    """A Prefect 3 task hook ``hook(task, task_run, state)`` called as daskflow's
    ``hook(task, state)``; ``task_run`` is ``df.context()`` (None when absent)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, task: Any, state: Any) -> Any:
        try:
            task_run = df.context()
        except df.MissingContextError:
            task_run = None
        return self.fn(task, task_run, state)


class _TransactionHook:
    """A Prefect 3 transaction hook ``hook(transaction)`` (``on_commit``,
    ``on_rollback``) called as daskflow's ``hook(task, state)``: it is given
    a :class:`TransactionView` of the task run it is attached to."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, task: Any, state: Any) -> Any:
        return self.fn(TransactionView(task, state))


class TransactionView:
    """What a Prefect 3 ``on_commit``/``on_rollback`` hook is given here: the
    task run's ``state`` and its ``result`` (the value to undo, for a
    rollback), its ``key`` (the task run's name), and ``get(name, default)``
    for the value a task stored under ``name`` (daskflow has no
    ``transaction.set``: ``get`` answers ``"result"`` only)."""

    def __init__(self, task: Any, state: Any) -> None:
        self.task, self.state = task, state
        self.key = state.task_name
        self.result = state.result() if state.is_completed() else None

    def get(self, name: str, default: Any = None) -> Any:
        return self.result if name == "result" else default


class _Hooks(tuple):
    """A hook option's hooks; ``@my_task.on_failure`` adds a Prefect-style one."""

    owner: Any = None
    option = ""

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(self.owner, self.option, _bound(self.owner, self.option, (*self, _TaskHook(fn))))
        return fn

    def __reduce__(self) -> Any:
        return (tuple, (tuple(self),))


def _bound(owner: Any, option: str, hooks: tuple) -> _Hooks:
    out = _Hooks(hooks)
    out.owner, out.option = owner, option
    return out


class TaskContext:
    """What a ``cache_key_fn`` receives as ``context``: ``context.task`` (with
    ``fn``, ``name``, ``task_key``), ``context.task_run`` (``df.context()``)
    and ``context.parameters``."""

    def __init__(self, task: Any, task_run: Any, parameters: dict[str, Any]) -> None:
        self.task, self.task_run, self.parameters = task, task_run, parameters


class _TaskInfo:
    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name = fn, name
        self.task_key = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', name)}"


class _CacheKeyFn:
    """Prefect 3's ``cache_key_fn(context, parameters)`` as daskflow's
    ``cache_key(ctx, *args, **kwargs)``.  A key of None (Prefect: do not
    cache) becomes a key that no other call has."""

    def __init__(self, fn: Callable[..., Any], task_fn: Callable[..., Any], name: str) -> None:
        self.fn, self.info = fn, _TaskInfo(task_fn, name)

    def __call__(self, ctx: Any, *args: Any, **kwargs: Any) -> str:
        bound = inspect.signature(self.info.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        parameters = dict(bound.arguments)
        key = self.fn(TaskContext(self.info, ctx, parameters), parameters)
        if key is None:
            return f"uncached-{ctx.flow_run_id}-{ctx.key}"
        return str(key)


def task_input_hash(context: Any, arguments: dict[str, Any]) -> str | None:
    """Prefect's ``task_input_hash``: a key from the task, its code and the
    arguments; None (no caching) when the arguments cannot be hashed."""
    code = getattr(getattr(context.task.fn, "__code__", None), "co_code", b"")
    try:
        return tokenize(context.task.task_key, code.hex(), arguments, ensure_deterministic=True)
    except Exception:
        return None


class Task(df.Task):
    """A daskflow task made with Prefect 3's options and call semantics.

    See :func:`task` for the options and how each maps to daskflow's.
    """

    def __init__(self, fn: Callable[..., Any], **options: Any) -> None:
        self.prefect_options = dict(options)
        super().__init__(fn, **_daskflow_options(fn, options))
        for option in _TASK_HOOKS:
            setattr(self, option, _bound(self, option, tuple(getattr(self, option))))
        self.description = options.get("description") or inspect.getdoc(fn)
        self.version = options.get("version")
        self._printing: Task | None = None

    def with_options(self, **options: Any) -> Task:
        """A copy with some options changed (Prefect 3's names, daskflow's for tags)."""
        return Task(self.fn, **{**self.prefect_options, **options})

    def _built(self, args: tuple, kwargs: dict[str, Any], wait_for: Any, how: str) -> Any:
        """Build one call (or map) in the running flow body; its reference."""
        owner: df.Task = self
        if flow_log_prints.get() and self.log_prints is None:  # @flow(log_prints=True)
            if self._printing is None:
                self._printing = self.with_options(log_prints=True)
            owner = self._printing
        args = tuple(unwrap(a) for a in args)
        kwargs = {k: unwrap(v) for k, v in kwargs.items()}
        wait_for = None if wait_for is None else [unwrap(w) for w in wait_for]
        if how == "map":
            return df.Task.map(owner, *args, wait_for=wait_for, **kwargs)
        return df.Task.__call__(owner, *args, wait_for=wait_for, **kwargs)

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None,
                 **kwargs: Any) -> Any:
        """In a flow body: run the task and return its value (its final state
        with ``return_state=True``); an ``async def`` task called from an
        ``async def`` body returns an awaitable.  Outside: a plain call."""
        if current_builder() is None:
            return self.fn(*args, **kwargs)
        ref = self._built(args, kwargs, wait_for, "call")
        if return_state:
            return ref.wait()
        if inspect.iscoroutinefunction(self.fn) and _caller_is_async():
            return ref  # `await task(x)` gives its value
        return ref.result()

    def submit(self, *args: Any, return_state: bool = False, wait_for: Any = None,
               **kwargs: Any) -> Any:
        """A future of the task's result (a daskflow reference: ``result()``,
        ``wait()``, ``state``); nothing waits for it until asked."""
        if current_builder() is None:
            raise refuse(f"{self.name}.submit() outside a flow", "daskflow runs tasks in "
                         "the flow that calls them (there is no background task server)",
                         f"call {self.name}(...) to run it now, or submit it in a @flow")
        ref = self._built(args, kwargs, wait_for, "call")
        return ref.wait() if return_state else ref

    def map(self, *args: Any, return_state: bool = False, wait_for: Any = None,
            **kwargs: Any) -> Any:
        """The futures of one call per element (Prefect 3's mapping rules)."""
        futures = PrefectFutureList(self._built(args, kwargs, wait_for, "map"))
        return futures.ref.wait() if return_state else futures

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"{self.name}.delay()", "background tasks are served by Prefect's "
                     "server and task workers", f"call {self.name}.submit(...) in a flow")

    def serve(self, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"{self.name}.serve()", "background task workers need Prefect's server",
                     "run the task in a flow, or schedule the flow with flow.serve(cron=...)")


def _caller_is_async() -> bool:
    frame = sys._getframe(2)
    return bool(frame.f_code.co_flags & inspect.CO_COROUTINE)


# Prefect 3 options with no effect here (metadata, or in-memory result caching,
# which daskflow does anyway: results stay on the cluster until needed).
_IGNORED = ("description", "version", "cache_result_in_memory", "viz_return_value")
_REFUSED = {
    "result_storage_key": ("daskflow names a stored result by its cache key",
                           "leave it out (results go under result_storage=)"),
    "refresh_cache": ("in daskflow refreshing the cache is an option of a run",
                      "call my_flow.run(..., refresh_cache=True)"),
    "asset_deps": ("assets live on Prefect's server", "leave it out"),
}


def _daskflow_options(fn: Callable[..., Any], given: dict[str, Any]) -> dict[str, Any]:
    """Prefect 3's ``@task`` options as daskflow's ``@df.task`` options."""
    name = given.get("name") or getattr(fn, "__name__", "task")
    for option, (why, instead) in _REFUSED.items():
        if given.get(option) is not None:
            raise refuse(f"@task({option}=...)", why, instead)
    out: dict[str, Any] = {"name": name}
    simple = {"tags": "tags", "task_run_name": "task_run_name", "retry_jitter_factor":
              "retry_jitter_factor", "retry_condition_fn": "retry_condition_fn",
              "log_prints": "log_prints", "timeout_seconds": "timeout",
              "cache_expiration": "cache_expiration", "result_storage": "result_storage"}
    for prefects, ours in simple.items():
        if given.get(prefects) is not None:
            out[ours] = given[prefects]
    out["retries"] = given.get("retries") or 0
    if given.get("retry_delay_seconds") is not None:
        out["retry_delay"] = given["retry_delay_seconds"]
    for option in _TASK_HOOKS:
        hooks = given.get(option)
        if hooks:
            out[option] = [_TaskHook(h) for h in ([hooks] if callable(hooks) else hooks)]
    for option in ("on_commit", "on_rollback"):
        hooks = given.get(option)
        if hooks:
            out[option] = [_TransactionHook(h)
                           for h in ([hooks] if callable(hooks) else hooks)]
    out.update(_cache_options(fn, name, given))
    unknown = set(given) - set(simple) - set(_REFUSED) - set(_IGNORED) - set(_TASK_HOOKS) - {
        "on_commit", "on_rollback",
        "name", "retries", "retry_delay_seconds", "cache_policy", "cache_key_fn",
        "persist_result", "result_serializer"}
    if unknown:
        raise df.FlowDefinitionError(f"@task got unknown option(s) {sorted(unknown)} (Prefect "
                                     "3's task options are taken, see docs/prefect.md)")
    return out


def _cache_options(fn: Callable[..., Any], name: str, given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    policy = given.get("cache_policy")
    if policy is not None:
        if not isinstance(policy, CachePolicy):
            raise refuse(f"cache_policy={policy!r}", "only the policies of "
                         "daskflow.compat.prefect.cache_policies are understood",
                         "use INPUTS (+ TASK_SOURCE), NO_CACHE, or cache_key_fn=")
        out.update(policy.options())
    if given.get("cache_key_fn") is not None:
        out.update(cache=True, cache_key=_CacheKeyFn(given["cache_key_fn"], fn, name))
    if given.get("persist_result") is not None:
        if given["persist_result"] and not out.get("cache"):
            out["persist"] = True
        if not given["persist_result"]:
            out["cache"] = False
    serializer = given.get("result_serializer")
    if serializer is not None:
        if isinstance(serializer, str) and serializer not in _SERIALIZERS:
            raise refuse(f"result_serializer={serializer!r}", "daskflow stores results with "
                         "pickle, npy, parquet or an object with dumps()/loads()",
                         "use 'pickle' or such an object")
        out["serializer"] = _SERIALIZERS.get(serializer, serializer)
    return out


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Prefect 3's ``@task`` / ``@task(...)`` over daskflow's tasks.

    Options, with daskflow's meaning: ``name``, ``tags``, ``retries``,
    ``retry_delay_seconds`` (seconds, a list, or ``exponential_backoff(...)``),
    ``retry_jitter_factor``, ``retry_condition_fn``, ``timeout_seconds``,
    ``task_run_name``, ``log_prints``, ``cache_key_fn(context, parameters)``
    (caching on, keyed by its str), ``cache_policy`` (``INPUTS``,
    ``INPUTS + TASK_SOURCE``, ``NO_CACHE``, ``DEFAULT``), ``cache_expiration``,
    ``persist_result``, ``result_storage`` (an fsspec URL),
    ``result_serializer`` ("pickle"), and the hooks ``on_completion``,
    ``on_failure``, ``on_running`` as Prefect calls them: ``hook(task,
    task_run, state)``.  ``description``, ``version`` and
    ``cache_result_in_memory`` are accepted and change nothing.

    >>> @task(retries=2, retry_delay_seconds=1)
    ... def inc(x):
    ...     return x + 1
    >>> inc(1)
    2
    """
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)
