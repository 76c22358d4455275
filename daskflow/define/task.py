"""Tasks: plain functions that become nodes when called inside a flow body.

Outside a flow a task call is a plain function call.  Inside one it records
a node with the builder and returns a lazy :class:`~daskflow.define.build.Ref`.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import numbers
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, overload

import cloudpickle

from daskflow.core import signals
from daskflow.core.hooks import Hooks, bound, check_hooks
from daskflow.core.options import check_expiration, check_options, either_spelling
from daskflow.core.retrying import check_condition, check_jitter, check_run_name
from daskflow.define.build import Ref, current_builder
from daskflow.define.tags import tagged
from daskflow.exceptions import FlowDefinitionError

R = TypeVar("R")

# the hook options, each also a decorator (``@my_task.on_failure``)
HOOK_OPTIONS = ("on_completion", "on_failure", "on_retry", "on_skip", "on_running", "on_commit",
                "on_rollback")

_TRIGGERS = {
    signals.all_successful, signals.all_finished, signals.any_failed,
    signals.all_failed, signals.any_successful,
}


class Task(Generic[R]):
    """A function with run options (retries, trigger, timeout, ...).

    Parameters
    ----------
    fn : callable
        The function to run.
    name : str, optional
        Name shown in states, logs and Dask keys (default: the function's name).
    retries : int
        Extra attempts after a failure (not after ``df.FAIL``).
    retry_delay : float, list of float, or callable
        Seconds to wait before each retry; a list gives one delay per retry
        (the last one repeats); a function of the number of retries returning
        such a list, e.g. ``df.exponential_backoff(backoff_factor=2)``.
        ``retry_delay_seconds=`` is Prefect's name for it.
    retry_on : exception type or tuple of them, optional
        Retry only on these exceptions.
    retry_jitter_factor : float, optional
        Spread each delay randomly within ``delay * (1 +- factor)`` (Prefect's).
    retry_condition_fn : callable, optional
        ``retry_condition_fn(task, task_run, state) -> bool``, called on the
        worker after a failed attempt that could be retried: False ends the
        task Failed.  ``task_run`` is ``df.context()``, ``state`` the Failed
        state (``state.result()`` raises the attempt's exception).
    task_run_name : str or callable, optional
        The run's name: a template formatted with the call's arguments by
        parameter name (``"load-{day}"``), or a function returning a str
        (called with no argument, or with the arguments as a dict).  Shown
        in logs, ``state.run_name``, ``df.context().task_run_name`` and the report.
    trigger : callable
        Decides from the upstream states whether the task runs.
    skip_on_upstream_skip : bool
        Skip this task when an upstream task was skipped (default True).
    tags : iterable of str
    timeout : float, optional
        Seconds one attempt may take before it fails with ``TaskTimeoutError``
        (``timeout_seconds=``: Prefect's name for it).
    resources : dict, optional
        Dask worker resources the task needs, e.g. ``{"GPU": 1}``.
    on_completion, on_failure, on_retry, on_skip, on_running : list of callables, optional
        State hooks, each called as ``hook(task, state)`` on the worker (see
        :mod:`daskflow.core.hooks`); each is also a decorator adding one
        (``@my_task.on_failure``).
    on_commit, on_rollback : list of callables, optional
        Transaction hooks (see :mod:`daskflow.define.transactions`), called
        as ``hook(task, state)`` on the worker that ends the task's
        transaction: ``on_commit`` when it commits, ``on_rollback`` (newest
        task first) when it rolls back; ``state.result()`` is the task's value.
    cache : bool, optional
        Reuse a stored result with the same key (see :mod:`daskflow.compile.cachekeys`);
        None: the flow's ``cache=`` decides.
    cache_version : str, optional
        Key on this string instead of the function's source.
    cache_key : callable, optional
        ``cache_key(ctx, *args, **kwargs) -> str``: a key of your own,
        computed on the worker from the arguments' values.
    cache_expiration : float or timedelta, optional
        A stored result older than this is recomputed.
    persist : bool
        Store the result (for a later run or a report) without reusing it.
    serializer : str or object
        ``"pickle"`` (cloudpickle, default), ``"npy"``, ``"parquet"``, or an
        object with ``dumps(value) -> bytes`` and ``loads(bytes)``.
    result_storage : str, optional
        Where this task's results go (an fsspec URL), over the flow's.
    log_prints : bool, optional
        ``print()`` inside the task becomes an INFO record of the run's
        logger, which reaches the driver (None: the setting
        ``daskflow.logging.log-prints``, off by default).

    Examples
    --------
    >>> @task(retries=2)
    ... def inc(x):
    ...     return x + 1
    >>> inc(1)            # outside a flow: a plain call
    2
    """

    # the hook options: tuples of hooks, each also a decorator (``@my_task.on_failure``)
    on_completion: Hooks
    on_failure: Hooks
    on_retry: Hooks
    on_skip: Hooks
    on_running: Hooks
    on_commit: Hooks
    on_rollback: Hooks

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay: float | Sequence[float] = 0.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        trigger: signals.Trigger = signals.all_successful,
        skip_on_upstream_skip: bool = True,
        tags: Iterable[str] = (),
        timeout: float | None = None,
        resources: dict[str, float] | None = None,
        on_completion: Iterable[Callable[..., Any]] | None = None,
        on_failure: Iterable[Callable[..., Any]] | None = None,
        on_retry: Iterable[Callable[..., Any]] | None = None,
        on_skip: Iterable[Callable[..., Any]] | None = None,
        cache: bool | None = None,
        cache_version: str | None = None,
        cache_key: Callable[..., str] | None = None,
        cache_expiration: Any = None,
        persist: bool = False,
        serializer: Any = "pickle",
        result_storage: str | None = None,
        log_prints: bool | None = None,
        task_run_name: str | Callable[..., str] | None = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        on_running: Iterable[Callable[..., Any]] | None = None,
        retry_delay_seconds: Any = None,
        timeout_seconds: float | None = None,
        on_commit: Iterable[Callable[..., Any]] | None = None, on_rollback: Any = None,
    ) -> None:
        if not callable(fn):
            raise FlowDefinitionError(f"@task needs a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self._retry_options(retries, either_spelling(f"task {self.name!r}", "retry_delay",
                                                     retry_delay, retry_delay_seconds, 0.0),
                            retry_on, retry_jitter_factor, retry_condition_fn)
        self.trigger = _check_trigger(self.name, trigger)
        self.skip_on_upstream_skip = bool(skip_on_upstream_skip)
        self.tags = frozenset(tags)
        self.timeout = _check_timeout(self.name, either_spelling(
            f"task {self.name!r}", "timeout", timeout, timeout_seconds, None))
        self.resources = dict(resources) if resources else None
        self._hooks(**{k: v for k, v in locals().items() if k in HOOK_OPTIONS})
        self.cache = None if cache is None else bool(cache)
        self.cache_version = _check_cache_version(self.name, cache_version)
        self.cache_key = _check_cache_key(self.name, cache_key)
        self.cache_expiration = check_expiration(f"task {self.name!r}", cache_expiration)
        self.persist = bool(persist)
        self.serializer = _check_serializer(self.name, serializer)
        self.result_storage = result_storage
        self.log_prints = None if log_prints is None else bool(log_prints)
        self._signature = _signature(fn)
        self.task_run_name = check_run_name(
            f"task {self.name!r}", "task_run_name", task_run_name,
            self._signature[0] if self._signature else None)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _hooks(self, **given: Any) -> None:
        for option, hooks in given.items():  # each also a decorator: @my_task.on_failure
            setattr(self, option, bound(self, option, check_hooks("task", self.name, option,
                                                                  hooks)))

    def _retry_options(self, retries: Any, delay: Any, retry_on: Any, jitter: Any,
                       condition: Any) -> None:
        self.retries = _check_retries(self.name, retries)
        self.retry_delay = delay
        self.retry_delays = _check_delays(self.name, delay, self.retries)
        self.retry_on = _check_retry_on(self.name, retry_on)
        self.retry_jitter_factor = check_jitter(f"task {self.name!r}", jitter)
        self.retry_condition_fn = check_condition(f"task {self.name!r}", condition)

    @property
    def has_hooks(self) -> bool:
        return bool(self.on_completion or self.on_failure or self.on_retry or self.on_skip
                    or self.on_running)

    def with_options(self, **options: Any) -> Task[R]:
        """A copy of this task with some options changed."""
        current = self._options()
        for prefects, ours in (("retry_delay_seconds", "retry_delay"), ("timeout_seconds", "timeout")):
            if prefects in options:  # Prefect's spelling of one of ours
                if ours in options:
                    raise FlowDefinitionError(f"with_options got both {ours}= and {prefects}=")
                options[ours] = options.pop(prefects)
        unknown = set(options) - set(current)
        if unknown:
            raise FlowDefinitionError(f"unknown task option(s) {sorted(unknown)}; known: {sorted(current)}")
        return Task(self.fn, **{**current, **options})

    def __call__(self, *args: Any, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        self._check_arguments(args, kwargs)
        return builder.add(tagged(self), args, kwargs, wait_for=wait_for)

    def submit(self, *args: Any, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Ref:
        """Prefect 3's spelling of a call in a flow body: the same lazy reference
        (``.result()`` waits for its value)."""
        if current_builder() is None:
            raise FlowDefinitionError(
                f"{self.name}.submit() works inside a flow body; outside one call "
                f"{self.name}(...) to run the function now")
        return self(*args, wait_for=wait_for, **kwargs)

    def _check_arguments(self, args: tuple, kwargs: dict[str, Any], how: str = "") -> None:
        """At build time: the call must fit the function's signature."""
        sig = self._signature
        if sig is None or (not kwargs and len(args) == sig[1]):  # the common, cheap case
            return
        try:
            sig[0].bind(*args, **kwargs)
        except TypeError as err:
            names = ", ".join(sig[0].parameters) or "none"
            raise FlowDefinitionError(
                f"task {self.name!r}{how} cannot be called like this: {err}; its parameters "
                f"are: {names}") from None

    def map(self, *args: Any, wait_for: Iterable[Any] | None = None, **kwargs: Any) -> Ref:
        """Call the task once per element of the mapped arguments (inside a flow).

        Lists, other iterables (a dict: its keys) and task results (whose
        length may be known only at run time) are mapped over element-wise,
        and task results inside their elements are resolved.  As in Prefect 3,
        everything else is static, given whole to every call: numbers, None,
        str, bytes, file objects, other non-iterables, and any argument
        wrapped in ``df.unmapped``.  At least one argument must be mapped over.

        ``chunk=N`` runs N consecutive elements in one Dask task (each keeps
        its own task run: state, retries, hooks, logs, cache key); ``chunk=1``
        gives every element a Dask task of its own.  By default daskflow
        chooses from a measurement (see Chunked maps in the docs).  A task
        with a parameter of its own named ``chunk`` receives it instead.
        """
        builder = current_builder()
        if builder is None:
            raise FlowDefinitionError(
                f"{self.name}.map() works inside a flow body; outside one call "
                f"[{self.name}(x) for x in xs] instead"
            )
        chunk = None
        if "chunk" in kwargs and not self._takes("chunk"):
            chunk = _chunk_option(self.name, kwargs.pop("chunk"))
        self._check_arguments(args, kwargs, " (in .map)")
        return builder.add(tagged(self), args, kwargs, wait_for=wait_for, map_over=True,
                           chunk=chunk)

    def _takes(self, name: str) -> bool:
        """Whether the task's function has a parameter ``name`` (or **kwargs)."""
        sig = self._signature
        if sig is None:
            return False
        params = sig[0].parameters
        return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def __reduce__(self) -> Any:
        """Pickle by reference when the module holds this task (as it does for
        ``@task`` at module level), so workers import it instead of receiving
        the function's code with every task; by value otherwise."""
        if self._held_by_module():
            return self.__qualname__
        return (_rebuild_task, (self.fn, self._options()))

    def _held_by_module(self) -> bool:
        module = getattr(self, "__module__", None)
        qualname = getattr(self, "__qualname__", "")
        if not module or module == "__main__" or "<locals>" in qualname:
            return False
        obj: Any = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        return obj is self

    def module_needed(self) -> str | None:
        """The module a worker must import to load this task (the task, or its
        function, travels by reference to it), or None."""
        if self._held_by_module():
            return self.__module__
        module = getattr(self.fn, "__module__", None)  # cloudpickle's rule for functions
        if (module and module != "__main__" and module in sys.modules
                and "<locals>" not in getattr(self.fn, "__qualname__", "<locals>")
                and module not in cloudpickle.list_registry_pickle_by_value()):
            return module
        return None

    def _options(self) -> dict[str, Any]:
        return {
            "name": self.name, "retries": self.retries,
            "retry_delay": (self.retry_delay if callable(self.retry_delay)
                            else list(self.retry_delays)),
            "retry_on": self.retry_on, "trigger": self.trigger,
            "skip_on_upstream_skip": self.skip_on_upstream_skip, "tags": self.tags,
            "timeout": self.timeout, "resources": self.resources,
            "on_completion": list(self.on_completion), "on_failure": list(self.on_failure),
            "on_retry": list(self.on_retry), "on_skip": list(self.on_skip),
            "cache": self.cache, "cache_version": self.cache_version,
            "cache_key": self.cache_key, "cache_expiration": self.cache_expiration,
            "persist": self.persist, "serializer": self.serializer,
            "result_storage": self.result_storage, "log_prints": self.log_prints,
            "task_run_name": self.task_run_name, "on_running": list(self.on_running),
            "retry_jitter_factor": self.retry_jitter_factor,
            "retry_condition_fn": self.retry_condition_fn,
            "on_commit": list(self.on_commit), "on_rollback": list(self.on_rollback),
        }

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def _check_timeout(name: str, timeout: Any) -> float | None:
    if timeout is None:
        return None
    if not (isinstance(timeout, numbers.Real) and not isinstance(timeout, bool)
            and float(timeout) > 0):
        raise FlowDefinitionError(
            f"timeout of task {name!r} must be a positive number of seconds, got {timeout!r}")
    return timeout  # type: ignore[return-value]  # a Real: int, float, numpy


def _check_cache_version(name: str, cache_version: Any) -> str | None:
    if cache_version is not None and not isinstance(cache_version, str):
        raise FlowDefinitionError(f"cache_version of task {name!r} must be a str, "
                                  f"got {cache_version!r}")
    return cache_version


def _check_cache_key(name: str, cache_key: Any) -> Callable[..., str] | None:
    if cache_key is not None and not callable(cache_key):
        raise FlowDefinitionError(f"cache_key of task {name!r} must be a function "
                                  f"cache_key(ctx, *args, **kwargs) -> str, got {cache_key!r}")
    return cache_key


def _check_serializer(name: str, serializer: Any) -> Any:
    if not (serializer in ("pickle", "npy", "parquet") or (
            hasattr(serializer, "dumps") and hasattr(serializer, "loads"))):
        raise FlowDefinitionError(
            f"serializer of task {name!r} must be 'pickle', 'npy', 'parquet' or an "
            f"object with dumps() and loads(), got {serializer!r}")
    if serializer == "parquet" and not _has_parquet_engine():
        raise FlowDefinitionError(
            f"serializer='parquet' of task {name!r} needs pyarrow (or fastparquet) "
            "where the task runs: pip install 'daskflow[parquet]'")
    return serializer


def _has_parquet_engine() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("pyarrow", "fastparquet"))


def _rebuild_task(fn: Callable[..., Any], options: dict[str, Any]) -> Task:
    return Task(fn, **options)


def _check_retries(name: str, retries: Any) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise FlowDefinitionError(f"retries of task {name!r} must be an int >= 0, got {retries!r}")
    return retries


def _chunk_option(name: str, chunk: Any) -> int | None:
    """A map's ``chunk=`` checked: a positive int, or None (chosen by measurement)."""
    if chunk is None or (type(chunk) is int and chunk >= 1):
        return chunk
    raise FlowDefinitionError(
        f"{name}.map(chunk={chunk!r}): chunk is the number of elements each Dask task runs, "
        "a whole number of 1 or more (1: a Dask task per element), or None to let daskflow "
        "choose from a measurement of the first elements")


def _signature(fn: Callable[..., Any]) -> tuple[inspect.Signature, int] | None:
    """The signature, and the number of positional parameters when a plain
    positional call of exactly that many arguments always binds (else -1)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none
        return None
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    simple = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_KEYWORD)
                 or p.default is not p.empty for p in params)
    return sig, (len(positional) if simple else -1)


def _check_delays(name: str, delay: Any, retries: int = 0) -> tuple[float, ...]:
    """Seconds, a timedelta, or a non-empty list of either (one per retry), or a
    function of the number of retries returning such a list (Prefect's
    ``exponential_backoff``)."""
    if callable(delay):
        try:
            delay = list(delay(retries)) or [0.0]
        except Exception as err:
            raise FlowDefinitionError(f"retry_delay of task {name!r}: {delay!r}({retries}) "
                                      f"raised {type(err).__name__}: {err}") from None
    single = (isinstance(delay, numbers.Real) and not isinstance(delay, bool)) or isinstance(
        delay, datetime.timedelta)
    delays = [delay] if single else delay
    try:
        if isinstance(delays, (str, bytes)):
            raise TypeError("a string is not a number of seconds")
        out = tuple(d.total_seconds() if isinstance(d, datetime.timedelta) else float(d)
                    for d in delays)
        if any(isinstance(d, (str, bytes, bool)) for d in delays):
            raise TypeError("not a number")
    except (TypeError, ValueError):
        out = ()
    if not out or any(d < 0 for d in out):
        raise FlowDefinitionError(
            f"retry_delay of task {name!r} must be seconds >= 0 (or a timedelta), or a "
            f"non-empty list of them, got {delay!r}"
        )
    return out


def _check_retry_on(name: str, retry_on: Any) -> tuple[type[BaseException], ...] | None:
    if retry_on is None:
        return None
    if isinstance(retry_on, type):
        types: tuple = (retry_on,)
    else:
        try:
            types = tuple(retry_on)
        except TypeError:
            types = (retry_on,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise FlowDefinitionError(
            f"retry_on of task {name!r} must be an exception type or an iterable of them "
            f"(a tuple, list or set), got {retry_on!r}")
    return types


def _check_trigger(name: str, trigger: Any) -> signals.Trigger:
    if trigger in _TRIGGERS or callable(trigger):
        return trigger
    raise FlowDefinitionError(
        f"trigger of task {name!r} must be one of df.all_successful, df.all_finished "
        f"(df.always_run), df.any_failed, df.all_failed, df.any_successful, or a "
        f"function of the upstream states; got {trigger!r}"
    )


@overload
def task(fn: Callable[..., R], /) -> Task[R]: ...
@overload
def task(
    *, name: str | None = ..., retries: int = ..., retry_delay: float | Sequence[float] = ...,
    retry_on: Any = ..., trigger: signals.Trigger = ..., skip_on_upstream_skip: bool = ...,
    tags: Iterable[str] = ..., timeout: float | None = ..., resources: dict[str, float] | None = ...,
    on_completion: Any = ..., on_failure: Any = ..., on_retry: Any = ..., on_skip: Any = ...,
    cache: bool | None = ..., cache_version: str | None = ..., cache_key: Any = ...,
    cache_expiration: Any = ..., persist: bool = ..., serializer: Any = ...,
    result_storage: str | None = ..., log_prints: bool | None = ...,
    task_run_name: Any = ..., retry_jitter_factor: float | None = ...,
    retry_condition_fn: Any = ..., on_running: Any = ..., retry_delay_seconds: Any = ...,
    timeout_seconds: float | None = ..., on_commit: Any = ..., on_rollback: Any = ...,
) -> Callable[[Callable[..., R]], Task[R]]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a task: ``@task`` or ``@task(retries=2, ...)``.

    See :class:`Task` for the options.
    """
    check_options("@task", options, _TASK_OPTIONS)
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)


_TASK_OPTIONS = tuple(p for p in inspect.signature(Task.__init__).parameters
                      if p not in ("self", "fn"))
