"""Task results stored by key: caching across runs, and resuming a failed run.

``@df.task(cache=True)`` reuses a stored result whose key matches;
``@df.task(persist=True)`` stores the result but never reuses it;
``@df.flow(cache=True, result_storage=URL)`` sets both defaults for its
tasks, and ``flow.run(..., refresh_cache=True)`` recomputes and overwrites.

**Keys are chained and known before anything runs.**  The driver computes,
while it compiles the run, one key per task run::

    key = blake2b("daskflow-cache-1", task name, code version,
                  encoded constant arguments, keys of the upstream tasks)

The code version is ``cache_version`` when given, else a hash of the
normalized source (its syntax tree: comments and formatting do not count) of
the task's function and of every function it calls that lives in its own
module or package, followed recursively.  Constant arguments (flow
parameters among them) are encoded canonically when they are builtins
(None, bool, int, float, str, bytes, list, tuple, dict, set, datetime,
Decimal, Path); other objects with a deterministic ``dask.base.tokenize``
(numpy, pandas) are tokenized; anything else is an error for a cached task,
naming the argument and pointing to ``cache_key=``.  An upstream task enters
by its key, never by its value: keys are identical across processes and
machines, and nothing is hashed from a task's result.  A map child's key
adds its index and its own element; an upstream task that cannot be keyed
(an argument that cannot be encoded) gets a fresh key each run, so what
depends on it is never served from the cache.

**Results never pass through the driver.**  The task's wrapper on the
worker looks its key up before running and writes its result after, in
the result storage (any fsspec URL: a folder, ``s3://bucket/prefix``, ...).
A result is committed in two steps: its data under a name of its own, then
a small metadata record naming it, so a crash mid-write never serves half
a result, and two runs writing one key leave one whole result (the last
metadata written wins).  A result that cannot be serialized is logged and
the task stays Completed.
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import hashlib
import inspect
import json
import logging
import os
import pathlib
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Callable
from typing import Any

from daskflow.exceptions import CacheKeyError, FlowDefinitionError

VERSION = "daskflow-cache-1"
log = logging.getLogger("daskflow.cache")


# -- options --------------------------------------------------------------------------


def check_expiration(owner: str, value: Any) -> float | None:
    from daskflow.config import positive_seconds

    if value is None:
        return None
    return positive_seconds(value, f"cache_expiration of {owner}", FlowDefinitionError)


class Settings:
    """How one task of one run uses the store (shipped once per task spec)."""

    __slots__ = ("mode", "storage", "refresh", "expiration", "serializer", "options")

    def __init__(self, mode: str, storage: str, refresh: bool, expiration: float | None,
                 serializer: Any, options: dict[str, Any] | None = None) -> None:
        self.mode = mode  # "cache" (read and write) or "persist" (write only)
        self.storage, self.refresh = storage, refresh
        self.expiration, self.serializer = expiration, serializer
        self.options = options or {}  # fsspec storage options (endpoint, credentials)

    def __reduce__(self) -> Any:
        return (Settings, (self.mode, self.storage, self.refresh, self.expiration,
                           self.serializer, self.options))


def settings_for(task: Any, results: tuple | None) -> Settings | None:
    """The task's use of the store in a run whose ``results`` are
    ``(flow cache default, storage URL, refresh, storage options)``; None if it
    stores nothing."""
    if results is None:
        return None
    flow_cache, storage, refresh, options = results
    cache = task.cache if task.cache is not None else flow_cache
    mode = "cache" if cache else ("persist" if task.persist else None)
    if mode is None:
        return None
    return Settings(mode, storage_url(task.result_storage) if task.result_storage else storage,
                    refresh, task.cache_expiration, task.serializer, options)


def storage_url(value: str | None) -> str:
    from daskflow import config

    url = value or config.get("results.storage")
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    return url


# -- code versions ------------------------------------------------------------------------

_versions: dict[int, tuple[Any, str]] = {}
_versions_lock = threading.Lock()


def code_version(fn: Callable[..., Any]) -> str:
    """A hash of ``fn``'s normalized source and of the functions of its own
    package that it calls (recursively); cached per function object."""
    with _versions_lock:
        hit = _versions.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
    h = hashlib.blake2b(digest_size=16)
    seen: set[int] = set()
    _hash_function(fn, h, seen, _package(fn))
    version = h.hexdigest()
    with _versions_lock:
        _versions[id(fn)] = (fn, version)
    return version


def _package(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    return module.split(".", 1)[0]


def _hash_function(fn: Any, h: Any, seen: set[int], package: str) -> None:
    fn = inspect.unwrap(getattr(fn, "fn", fn))  # a Task: its function
    if id(fn) in seen:
        return
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is None:  # a builtin or a callable object: its qualified name
        h.update(f"{type(fn).__module__}.{getattr(fn, '__qualname__', type(fn).__name__)}".encode())
        return
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):  # decorators are options, not code
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                node.decorator_list = []
                break
        h.update(ast.dump(tree, annotate_fields=False).encode())
    except (OSError, TypeError, SyntaxError):  # no source (e.g. exec): the byte code
        _hash_code(code, h)
    names = set(_names(code))
    glb = getattr(fn, "__globals__", {})
    for name in sorted(names):
        obj = glb.get(name)
        if obj is None:
            continue
        target = getattr(obj, "fn", obj) if type(obj).__name__ == "Task" else obj
        if isinstance(target, types.FunctionType) and _package(target) == package:
            h.update(name.encode())
            _hash_function(target, h, seen, package)


def _names(code: types.CodeType) -> Any:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _hash_code(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, h)
        else:
            h.update(repr(const).encode())


# -- encoding constants -----------------------------------------------------------------------


class Unencodable(Exception):
    """A value with no deterministic encoding."""


def encode(value: Any, h: Any) -> None:
    """Feed a canonical encoding of ``value`` to the hash ``h``."""
    t = type(value)
    if value is None or t is bool:
        h.update(f"{t.__name__}:{value!r};".encode())
    elif t is int or t is float or t is complex:
        h.update(f"{t.__name__}:{value!r};".encode())
    elif t is str:
        data = value.encode("utf-8", "surrogatepass")
        h.update(b"str:%d:" % len(data))
        h.update(data)
    elif t is bytes or t is bytearray:
        h.update(b"bytes:%d:" % len(value))
        h.update(value)
    elif t is list or t is tuple:
        h.update(f"{t.__name__}:{len(value)}[".encode())
        for v in value:
            encode(v, h)
        h.update(b"]")
    elif t is dict:
        items = []
        for k, v in value.items():
            kh = hashlib.blake2b(digest_size=16)
            encode(k, kh)
            vh = hashlib.blake2b(digest_size=16)
            encode(v, vh)
            items.append(kh.digest() + vh.digest())
        h.update(f"dict:{len(items)}{{".encode())
        for item in sorted(items):
            h.update(item)
        h.update(b"}")
    elif t is set or t is frozenset:
        parts = []
        for v in value:
            vh = hashlib.blake2b(digest_size=16)
            encode(v, vh)
            parts.append(vh.digest())
        h.update(f"set:{len(parts)}{{".encode())
        for p in sorted(parts):
            h.update(p)
        h.update(b"}")
    elif isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal,
                            pathlib.PurePath)):
        h.update(f"{t.__module__}.{t.__qualname__}:{value!r};".encode())
    else:
        from dask.base import tokenize

        try:
            token = tokenize(value, ensure_deterministic=True)
        except (RuntimeError, TypeError, ValueError) as err:
            raise Unencodable(f"{type(value).__module__}.{type(value).__qualname__}") from err
        h.update(f"token:{token};".encode())


# -- the store --------------------------------------------------------------------------------


def storage_options() -> dict[str, Any]:
    from daskflow import config

    return dict(config.get("results.storage-options") or {})


def _log() -> Any:
    """The run's logger inside a task, else daskflow.cache (imported late:
    taskrun imports this module through specs)."""
    from daskflow.taskrun import task_logger

    return task_logger(log)


def _fs(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(url, **(options or {}))


def _paths(root: str, key: str) -> tuple[str, str]:
    folder = f"{root.rstrip('/')}/{key[:2]}"
    return folder, f"{folder}/{key}.json"


def _dumps(value: Any, serializer: Any) -> tuple[bytes, str]:
    if serializer is None or serializer == "pickle":
        import cloudpickle

        return cloudpickle.dumps(value, protocol=5), "pickle"
    if serializer == "npy":
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue(), "npy"
    if serializer == "parquet":
        import io

        buf = io.BytesIO()
        value.to_parquet(buf)
        return buf.getvalue(), "parquet"
    return serializer.dumps(value), "custom"


def _loads(data: bytes, kind: str, serializer: Any) -> Any:
    if kind == "pickle":
        import pickle

        return pickle.loads(data)
    if kind == "npy":
        import io

        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "parquet":
        import io

        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))
    return serializer.loads(data)


MISS = object()


def load(settings: Settings, key: str, task_name: str) -> Any:
    """The stored result of ``key``, or MISS (absent, expired, unreadable)."""
    fs, root = _fs(settings.storage, settings.options)
    _, meta_path = _paths(root, key)
    try:
        meta = json.loads(fs.cat_file(meta_path))
    except FileNotFoundError:
        return MISS
    except Exception as err:
        _log().warning("cache record of %s (%s) could not be read (%s: %s); recomputing",
                       task_name, key, type(err).__name__, err)
        return MISS
    if meta.get("expires") is not None and meta["expires"] <= time.time():
        return MISS
    try:
        data = fs.cat_file(f"{root.rstrip('/')}/{key[:2]}/{meta['data']}")
        if len(data) != meta["size"]:
            raise ValueError(f"{len(data)} bytes where {meta['size']} were written")
        return _loads(data, meta["serializer"], settings.serializer)
    except Exception as err:
        _log().warning("cached result of %s (%s) could not be read (%s: %s); recomputing",
                       task_name, key, type(err).__name__, err)
        return MISS


def store(settings: Settings, key: str, value: Any, task_name: str, flow_name: str,
          version: str = "") -> bool:
    """Write ``value`` under ``key``: the data, then the record naming it."""
    try:
        data, kind = _dumps(value, settings.serializer)
    except Exception as err:
        _log().warning("the result of %s could not be serialized for the cache (%s: %s); "
                       "the task stays Completed but is not stored", task_name,
                       type(err).__name__, err)
        return False
    fs, root = _fs(settings.storage, settings.options)
    folder, meta_path = _paths(root, key)
    name = f"{key}-{uuid.uuid4().hex[:12]}.data"
    now = time.time()
    meta = {"key": key, "task": task_name, "flow": flow_name, "code_version": version,
            "data": name, "size": len(data),
            "serializer": kind, "created": now,
            "expires": now + settings.expiration if settings.expiration else None}
    try:
        if (settings.storage, folder) not in _made:
            fs.makedirs(folder, exist_ok=True)
            _made.add((settings.storage, folder))
        with fs.open(f"{folder}/{name}", "wb") as f:
            f.write(data)
        _write_atomic(fs, meta_path, json.dumps(meta).encode())
    except Exception as err:
        _log().warning("the result of %s could not be written to %s (%s: %s); the task "
                       "stays Completed but is not stored", task_name, settings.storage,
                       type(err).__name__, err)
        return False
    return True


_made: set[tuple[str, str]] = set()  # folders this process made (or found), by store


def _write_atomic(fs: Any, path: str, data: bytes) -> None:
    """A local file is written aside and renamed; an object store's put is atomic."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def records(url: str, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every metadata record in the store at ``url``."""
    fs, root = _fs(url, storage_options() if options is None else options)
    out = []
    try:
        paths = fs.glob(f"{root.rstrip('/')}/*/*.json")
    except FileNotFoundError:
        return []
    for path in paths:
        try:
            meta = json.loads(fs.cat_file(path))
        except Exception:
            continue
        meta["_path"] = path
        out.append(meta)
    return out


def remove(url: str, meta: dict[str, Any], options: dict[str, Any] | None = None) -> None:
    fs, _ = _fs(url, storage_options() if options is None else options)
    folder = meta["_path"].rsplit("/", 1)[0]
    fs.rm_file(meta["_path"])
    try:
        fs.rm_file(f"{folder}/{meta['data']}")
    except FileNotFoundError:
        pass


# -- keys of one run, on the driver -----------------------------------------------------------


class Plan:
    """Chained cache keys of one run's nodes, made while it compiles."""

    def __init__(self) -> None:
        self.settings: dict[int, Settings] = {}  # node index -> how it uses the store
        self.hits: set[int] = set()  # nodes whose every result is stored (see check)
        self.unneeded: set[int] = set()  # nodes only hits depend on: not run at all
        self.base: dict[int, str | None] = {}  # node index -> key (single) or base (map)
        self.whole: dict[int, str | None] = {}  # map index -> key of its whole result
        self.child_parts: dict[int, dict[Any, list]] = {}  # map -> {pos: element values}

    def node(self, node: Any, settings: Settings | None) -> None:
        """Compute the key (or a map's base) of ``node``; its upstream are done."""
        from daskflow.build import Ref

        task = node.task
        if settings is not None:
            self.settings[node.index] = settings
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{VERSION}|{node.kind}|{node.name}|".encode())
        custom = getattr(task, "cache_key", None)
        h.update((task.cache_version if getattr(task, "cache_version", None) is not None
                  else code_version(task.fn)).encode())
        mapped = set(node.mapped or ())
        try:
            for pos, value in [*enumerate(node.args), *sorted(node.kwargs.items())]:
                h.update(f"|{pos}=".encode())
                if pos in mapped and not isinstance(value, Ref):
                    h.update(b"<mapped>")
                    continue
                self._encode_arg(value, h, pos, node)
            for dep in (*node.wait_for, *node.setups):
                h.update(f"|after:{self._ref_key(dep)}".encode())
        except _Fresh:
            self.base[node.index] = None
            self.whole[node.index] = None
            return
        except Unencodable as err:
            if settings is not None and settings.mode == "cache" and custom is None:
                raise CacheKeyError(
                    f"task {node.name!r} has cache=True but its argument {err.args[1]!r} is a "
                    f"{err.args[0]}, which has no deterministic encoding; give the task "
                    "cache_key=lambda ctx, *args, **kwargs: '...' (a str naming what "
                    "makes the result), or pass something that can be encoded") from None
            self.base[node.index] = None
            self.whole[node.index] = None
            return
        base = h.hexdigest()
        self.base[node.index] = base
        if node.mapped is None:
            self.whole[node.index] = base
            return
        parts = {pos: value for pos, value in
                 [*enumerate(node.args), *node.kwargs.items()]
                 if pos in mapped and not isinstance(value, Ref)}
        self.child_parts[node.index] = parts
        wh = hashlib.blake2b(base.encode(), digest_size=16)
        try:
            for pos in sorted(parts, key=str):
                wh.update(str(pos).encode())
                encode([_plain(v, self) for v in parts[pos]], wh)
            self.whole[node.index] = wh.hexdigest()
        except (Unencodable, _Fresh):
            self.whole[node.index] = None

    def key(self, node: Any, i: int | None = None) -> str | None:
        """The key of a single node, or of child ``i`` of a map."""
        base = self.base.get(node.index)
        if base is None or i is None:
            return base
        h = hashlib.blake2b(base.encode(), digest_size=16)
        h.update(f"[{i}]".encode())
        for pos, values in sorted(self.child_parts.get(node.index, {}).items(),
                                  key=lambda kv: str(kv[0])):
            h.update(str(pos).encode())
            try:
                encode(_plain(values[i], self), h)
            except (Unencodable, _Fresh):
                return None
        return h.hexdigest()

    def check(self, nodes: list[Any], returned: list[Any]) -> None:
        """Find, before compiling, the cached nodes whose results are all
        stored (reading only metadata, one batch per store) and the nodes
        that only those need, which then do not run at all."""
        wanted: dict[str, dict[str, int]] = {}  # storage -> record path -> node index
        options: dict[str, dict[str, Any]] = {}
        counts: dict[int, int] = {}
        for node in nodes:
            st = self.settings.get(node.index)
            if (st is None or st.mode != "cache" or st.refresh or node.kind != "task"
                    or node.task.cache_key is not None or self.base.get(node.index) is None):
                continue
            if node.mapped is not None and node.length is None:
                continue  # children known only at run time: each checks itself
            maybe = ([self.key(node)] if node.mapped is None
                     else [self.key(node, i) for i in range(node.length or 0)])
            keys = [k for k in maybe if k is not None]
            if not keys or len(keys) < len(maybe):
                continue
            _, root = _fs(st.storage, st.options)
            options[st.storage] = st.options
            paths = wanted.setdefault(st.storage, {})
            for k in keys:
                paths[_paths(root, k)[1]] = node.index
            counts[node.index] = len(keys)
        found: dict[int, int] = {}
        now = time.time()
        for storage, paths in wanted.items():
            fs, _ = _fs(storage, options[storage])
            try:
                metas = fs.cat(list(paths), on_error="omit")
            except Exception as err:
                log.warning("the result store %s could not be read (%s: %s); every cached "
                            "task will check for itself", storage, type(err).__name__, err)
                continue
            for path, raw in metas.items():
                try:
                    meta = json.loads(raw)
                except ValueError:
                    continue
                index = paths.get(path)
                if index is not None and (meta.get("expires") is None or meta["expires"] > now):
                    found[index] = found.get(index, 0) + 1
        stored = {i for i, n in found.items() if n == counts[i]}
        if not stored:
            return
        dependents: dict[int, list[Any]] = {}
        for node in nodes:
            for dep in node.dependencies():
                dependents.setdefault(dep.index, []).append(node)
        keep = {n.index for n in returned}
        for node in reversed(nodes):  # dependents come after their upstream
            users = dependents.get(node.index, [])
            if (node.kind == "task" and node.index not in keep and users
                    and all(u.index in self.hits or u.index in self.unneeded for u in users)):
                self.unneeded.add(node.index)  # even when stored: nothing will read it
            elif node.index in stored:
                self.hits.add(node.index)

    def _ref_key(self, up: Any) -> str:
        key = self.whole.get(up.index)
        if key is None:
            raise _Fresh
        return key

    def _encode_arg(self, value: Any, h: Any, pos: Any, node: Any) -> None:
        try:
            encode(_plain(value, self), h)
        except Unencodable as err:
            raise Unencodable(err.args[0], pos) from None


class _Fresh(Exception):
    """An upstream task without a key: this one has none either."""


def _plain(value: Any, plan: Plan | None = None) -> Any:
    """``value`` with task references replaced by their keys."""
    from daskflow.build import Ref, allow_failure, unmapped

    t = type(value)
    if t is Ref or isinstance(value, Ref):
        if plan is None:
            raise _Fresh
        return ("<task>", plan._ref_key(value.node))
    if isinstance(value, allow_failure):
        return _plain(value.ref, plan)
    if isinstance(value, unmapped):
        return _plain(value.value, plan)
    if t is list or t is tuple:
        return t(_plain(v, plan) for v in value)
    if t is dict:
        return {k: _plain(v, plan) for k, v in value.items()}
    return value


def custom_key(task: Any, ctx: Any, args: tuple, kwargs: dict) -> str:
    """A task's ``cache_key(ctx, *args, **kwargs)``, checked, on the worker."""
    key = task.cache_key(ctx, *args, **kwargs)
    if not isinstance(key, str) or not key:
        raise CacheKeyError(f"cache_key of task {task.name!r} returned {key!r}; it must "
                            "return a non-empty str")
    return hashlib.blake2b(f"{VERSION}|custom|{task.name}|{key}".encode(),
                           digest_size=16).hexdigest()
