"""What travels to the workers: run info, task specs, calls, slots, result settings.

Every Dask task daskflow submits is ``run_task(call, *inputs)`` where
``call`` is a :class:`Call`: the task's :class:`TaskSpec` (its options, shared
by every call of the task in one run), its key, map index and an argument
template whose :class:`Slot` placeholders stand for upstream results.

A spec travels pickled **once**: ``TaskSpec.__reduce__`` returns the same
cloudpickled bytes every time (cached on the spec), and each process keeps
the unpickled spec in :data:`_spec_cache`, a small LRU bounded in entries and
bytes, keyed by a digest of those bytes.  Nothing in it is per-run data that
could grow: the run's parameters are not part of a spec (see
:class:`RunInfo`), so 300 runs leave the cache at its bound, not 300 copies.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import os
import pickle
import threading
from typing import Any

import cloudpickle

from daskflow import config
from daskflow.core.origin import origin_of, restore

# A run's parameters travel inside its specs only while they are this small
# (pickled); larger ones travel once per run as a key of their own.
INLINE_PARAMETERS = 512


class RunInfo:
    """What every task of one flow run shares.

    ``owner`` is the id of the driver's ``Client`` (None in process): task
    states and log records are sent to it, and to no one else.  The run's
    parameters are inline when small, else in the key ``params_key``.
    ``check`` is the run's cancel check in process (it raises once the run
    was cancelled); it never travels.
    """

    __slots__ = ("flow_name", "run_id", "owner", "parameters", "params_key", "limits",
                 "dashboard", "results", "log_prints", "internals", "check")

    def __init__(self, flow_name: str, run_id: str, owner: str | None = None,
                 parameters: dict[str, Any] | None = None, params_key: str | None = None,
                 limits: tuple[tuple[str, int], ...] = (), dashboard: str | None = None,
                 results: RunResults | None = None, log_prints: bool = False,
                 internals: bool = False) -> None:
        self.flow_name = flow_name
        self.run_id = run_id
        self.owner = owner
        self.parameters = parameters
        self.params_key = params_key
        self.limits = limits  # ((tag, at most), ...): the run's tag concurrency limits
        self.dashboard = dashboard  # the cluster's dashboard link, if it has one
        self.results = results  # how the run stores results; None when nothing is stored
        self.log_prints = log_prints  # the run's default for tasks without log_prints=
        self.internals = internals  # keep daskflow's frames in tracebacks (a setting)
        self.check: Any = None

    def __reduce__(self) -> Any:
        return (RunInfo, (self.flow_name, self.run_id, self.owner, self.parameters,
                          self.params_key, self.limits, self.dashboard, self.results,
                          self.log_prints, self.internals))


class TaskSpec:
    """The options of one task, shared by all its Dask tasks in a run."""

    __slots__ = ("task", "fn", "kind", "retries", "retry_delays", "retry_on", "trigger",
                 "skip_on_upstream_skip", "tags", "timeout", "run", "limits", "cache", "log_prints",
                 "txn", "is_async", "_blob")

    def __init__(self, task: Any, kind: str, run: RunInfo, txn: str | None = None) -> None:
        self.task = task
        self.fn = task.fn
        self.kind = kind
        self.retries = task.retries
        self.retry_delays = task.retry_delays
        self.retry_on = task.retry_on
        self.trigger = task.trigger
        self.skip_on_upstream_skip = task.skip_on_upstream_skip
        self.tags = task.tags
        self.timeout = task.timeout
        self.run = run
        self.limits = tuple(lim for lim in run.limits if lim[0] in task.tags)
        self.cache = run.results.for_task(task, kind) if run.results is not None else None
        self.log_prints = task.log_prints if task.log_prints is not None else run.log_prints
        self.txn = txn  # a transaction member: its stored result is staged (worker.staging)
        self.is_async = inspect.iscoroutinefunction(self.fn)  # an async def: on a loop
        self._blob: tuple[bytes, bytes] | None = None

    def blob(self) -> tuple[bytes, bytes]:
        """(digest, bytes): the spec pickled once (cloudpickle, so local functions work)."""
        if self._blob is None:
            # the function's origin travels too: its traceback on a worker names
            # the user's file and line (see core.origin)
            data = cloudpickle.dumps((self.task, self.kind, self.run, origin_of(self.fn),
                                      self.txn), protocol=5)
            self._blob = (hashlib.blake2b(data, digest_size=12).digest(), data)
        return self._blob

    def __reduce__(self) -> Any:
        return (_load_spec, self.blob())


class _SpecCache:
    """Unpickled specs by digest: an LRU bounded in entries and in bytes."""

    def __init__(self, max_entries: int = 2048, max_bytes: int = 32 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: collections.OrderedDict[bytes, tuple[TaskSpec, int]] = collections.OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()

    def get(self, digest: bytes, data: bytes) -> TaskSpec:
        with self.lock:
            hit = self.entries.get(digest)
            if hit is not None:
                self.entries.move_to_end(digest)
                return hit[0]
        task, kind, run, origin, txn = pickle.loads(data)
        spec = TaskSpec(task, kind, run, txn)
        restore(spec.fn, origin)
        spec._blob = (digest, data)
        with self.lock:
            if digest not in self.entries:
                self.entries[digest] = (spec, len(data))
                self.nbytes += len(data)
            while self.entries and (len(self.entries) > self.max_entries
                                    or self.nbytes > self.max_bytes):
                _, (_, size) = self.entries.popitem(last=False)
                self.nbytes -= size
        return spec


_spec_cache = _SpecCache()


def _load_spec(digest: bytes, data: bytes) -> TaskSpec:
    """Unpickle a spec once per process: every task of a node ships the same bytes."""
    return _spec_cache.get(digest, data)


class Call:
    """One Dask task: its spec, node name, key, map index and argument template."""

    __slots__ = ("spec", "name", "key", "index", "args", "kwargs", "subst", "allowed", "ndata",
                 "cache", "run_name")

    def __init__(self, spec: TaskSpec, name: str, key: Any, index: int | None, args: tuple,
                 kwargs: dict, subst: bool, allowed: frozenset[int], ndata: int = 0,
                 cache: str | None = None) -> None:
        self.spec = spec
        self.name = name
        self.key = key
        self.index = index
        self.args = args
        self.kwargs = kwargs
        self.subst = subst
        self.allowed = allowed
        self.ndata = ndata  # the last `ndata` inputs are scattered data, not states
        self.cache = cache  # the result's cache key, when the task stores its result
        self.run_name: str | None = None  # task_run_name, formatted on the worker

    def __reduce__(self) -> Any:
        if self.cache is None:
            return (Call, (self.spec, self.name, self.key, self.index, self.args, self.kwargs,
                           self.subst, self.allowed, self.ndata))
        return (Call, (self.spec, self.name, self.key, self.index, self.args, self.kwargs,
                       self.subst, self.allowed, self.ndata, self.cache))

    def __dask_tokenize__(self) -> Any:
        # Keys are unique per run and per task, so they identify a call; this
        # spares Client.get from tokenizing every call by pickling it.
        return ("daskflow.Call", self.key)

    @property
    def display_name(self) -> str:
        name = self.name
        return name if self.index is None else f"{name}[{self.index}]"

    @property
    def label(self) -> str:
        """The run name (``task_run_name=``) once formatted, else :attr:`display_name`."""
        return self.run_name or self.display_name


class ResourcesByKey:
    """The ``resources`` annotation of a graph, evaluated per key on the scheduler."""

    def __init__(self, by_key: dict[Any, dict[str, float]]) -> None:
        self.by_key = by_key

    def __call__(self, key: Any) -> dict[str, float]:
        return self.by_key.get(key, {})


class Slot:
    """Placeholder for the value of upstream state number ``i``."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        return f"Slot({self.i})"


class SlotItem:
    """Placeholder for element ``j`` of the value of upstream state ``i``."""

    __slots__ = ("i", "j")

    def __init__(self, i: int, j: int) -> None:
        self.i, self.j = i, j


class DataSlot:
    """Placeholder for scattered data input number ``j`` (a value, not a state)."""

    __slots__ = ("j",)

    def __init__(self, j: int) -> None:
        self.j = j


class SlotList:
    """Placeholder for the list of values of a whole map: upstream states
    ``start`` to ``stop`` (two numbers, whatever the map's length)."""

    __slots__ = ("start", "stop")

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __reduce__(self) -> Any:
        return (SlotList, (self.start, self.stop))


# -- how results are stored -----------------------------------------------------------


def storage_url(value: str | None) -> str:
    """A result storage URL: the setting ``daskflow.results.storage`` when
    None; a local path made absolute."""
    url = value or config.get("results.storage")
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    return url


def storage_options() -> dict[str, Any]:
    """fsspec options of the result storage (``daskflow.results.storage-options``)."""
    return dict(config.get("results.storage-options") or {})


class ResultSettings:
    """How one task of one run uses the result store (shipped once per task spec)."""

    __slots__ = ("mode", "storage", "refresh", "expiration", "serializer", "options")

    def __init__(self, mode: str, storage: str, refresh: bool, expiration: float | None,
                 serializer: Any, options: dict[str, Any] | None = None) -> None:
        # "cache" (read and write), "persist" (write only), or "resume" (read and
        # write a retried flow run's own results; an argument that cannot be
        # encoded means the task runs again, never an error)
        self.mode = mode
        self.storage, self.refresh = storage, refresh
        self.expiration, self.serializer = expiration, serializer
        self.options = options or {}  # fsspec storage options (endpoint, credentials)

    def __reduce__(self) -> Any:
        return (ResultSettings, (self.mode, self.storage, self.refresh, self.expiration,
                                 self.serializer, self.options))


READS = ("cache", "resume")  # the modes that read stored results


def store_mode(task: Any, flow_cache: bool | str | None, kind: str = "task") -> str | None:
    """How a task uses the result store in a flow with ``cache=flow_cache``:
    ``"cache"`` (read and write), ``"persist"`` (write only) or None.
    ``flow_cache="resume"``: a flow run with retries keeps the results of its
    tasks (not of resource setups and cleanups) for its next attempt."""
    cache = task.cache if task.cache is not None else flow_cache
    if cache == "resume":
        return "persist" if task.persist else ("resume" if kind == "task" else None)
    return "cache" if cache else ("persist" if task.persist else None)


class RunResults:
    """How one run stores results: the flow's ``cache=`` default, the
    storage URL, ``refresh_cache=`` and the storage options.

    >>> RunResults(False, "/tmp/r", False, {}).for_task(type("T", (), {
    ...     "cache": None, "persist": False})()) is None
    True
    """

    __slots__ = ("flow_cache", "storage", "refresh", "options", "resume")

    def __init__(self, flow_cache: bool | str, storage: str, refresh: bool,
                 options: dict[str, Any], resume: str | None = None) -> None:
        self.flow_cache, self.storage = flow_cache, storage
        self.refresh, self.options = refresh, options
        self.resume = resume  # a retried flow run's own store (flow_cache "resume")

    @classmethod
    def of_flow(cls, flow_cache: bool | None, result_storage: str | None,
                refresh: bool, resume: str | None = None) -> RunResults:
        """The settings of a run of a flow with these options, read now
        (``resume``: the store of a retried flow run's attempts)."""
        return cls("resume" if resume else bool(flow_cache), storage_url(result_storage),
                   bool(refresh), storage_options(), resume)

    def __reduce__(self) -> Any:
        return (RunResults, (self.flow_cache, self.storage, self.refresh, self.options,
                             self.resume))

    def for_task(self, task: Any, kind: str = "task") -> ResultSettings | None:
        """The task's use of the store in this run; None if it stores nothing."""
        mode = store_mode(task, self.flow_cache, kind)
        if mode is None:
            return None
        if mode == "resume":  # a retried run's results are its own
            return ResultSettings(mode, str(self.resume), False, None, task.serializer,
                                  self.options)
        storage = storage_url(task.result_storage) if task.result_storage else self.storage
        return ResultSettings(mode, storage, self.refresh, task.cache_expiration,
                              task.serializer, self.options)
