"""Fingerprints: the code version of a function and a canonical encoding of
arguments, the parts of a cache key (see :mod:`daskflow.compile.cachekeys`).

The code version is ``cache_version`` when given, else a hash of the
normalized source (its syntax tree: comments and formatting do not count) of
the task's function and of every function it calls that lives in its own
module or package, followed recursively.  Constant arguments are encoded
canonically when they are builtins (None, bool, int, float, str, bytes, list,
tuple, dict, set, datetime, Decimal, Path); other objects with a deterministic
``dask.base.tokenize`` (numpy, pandas) are tokenized; anything else raises
:class:`Unencodable`.
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import hashlib
import inspect
import pathlib
import textwrap
import threading
import types
from collections.abc import Callable
from typing import Any

from dask.base import tokenize

from daskflow.exceptions import CacheKeyError

VERSION = "daskflow-cache-1"

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
        try:
            token = tokenize(value, ensure_deterministic=True)
        except (RuntimeError, TypeError, ValueError) as err:
            raise Unencodable(f"{type(value).__module__}.{type(value).__qualname__}") from err
        h.update(f"token:{token};".encode())


def custom_key(task: Any, ctx: Any, args: tuple, kwargs: dict) -> str:
    """A task's ``cache_key(ctx, *args, **kwargs)``, checked, on the worker."""
    key = task.cache_key(ctx, *args, **kwargs)
    if not isinstance(key, str) or not key:
        raise CacheKeyError(f"cache_key of task {task.name!r} returned {key!r}; it must "
                            "return a non-empty str")
    return hashlib.blake2b(f"{VERSION}|custom|{task.name}|{key}".encode(),
                           digest_size=16).hexdigest()
