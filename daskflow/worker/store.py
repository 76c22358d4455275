"""The result store: task results written and read by key, on the workers.

**Results never pass through the driver.**  The task's wrapper on the
worker looks its key up before running and writes its result after, in
the result storage (any fsspec URL: a folder, ``s3://bucket/prefix``, ...).
A result is committed in two steps: its data under a name of its own, then
a small metadata record naming it (one atomic write), so a crash mid-write
never serves half a result, and two runs writing one key leave one whole
result (the last metadata written wins).  A result that cannot be
serialized is logged and the task stays Completed.

How keys are made is :mod:`daskflow.compile.cachekeys`; ``daskflow cache
list|clear`` reads :func:`records`.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import time
import uuid
from typing import Any

import cloudpickle

from daskflow.core.files import write_atomic
from daskflow.wire import ResultSettings, storage_options
from daskflow.worker.context import task_logger

log = logging.getLogger("daskflow.cache")


def _log() -> Any:
    """The run's logger inside a task, else daskflow.cache."""
    return task_logger(log)


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of a storage URL, and the root path in it."""
    from fsspec.core import url_to_fs

    return url_to_fs(url, **(options or {}))


def locate(root: str, key: str) -> tuple[str, str]:
    """The folder of a key's files, and the path of its metadata record."""
    folder = f"{root.rstrip('/')}/{key[:2]}"
    return folder, f"{folder}/{key}.json"


def _dumps(value: Any, serializer: Any) -> tuple[bytes, str]:
    if serializer is None or serializer == "pickle":
        return cloudpickle.dumps(value, protocol=5), "pickle"
    if serializer == "npy":
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue(), "npy"
    if serializer == "parquet":
        buf = io.BytesIO()
        value.to_parquet(buf)
        return buf.getvalue(), "parquet"
    return serializer.dumps(value), "custom"


def _loads(data: bytes, kind: str, serializer: Any) -> Any:
    if kind == "pickle":
        return pickle.loads(data)
    if kind == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "parquet":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))
    return serializer.loads(data)


MISS = object()


def load(settings: ResultSettings, key: str, task_name: str) -> Any:
    """The stored result of ``key``, or MISS (absent, expired, unreadable)."""
    fs, root = filesystem(settings.storage, settings.options)
    _, meta_path = locate(root, key)
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


def store(settings: ResultSettings, key: str, value: Any, task_name: str, flow_name: str,
          version: str = "", record: str | None = None) -> bool:
    """Write ``value`` under ``key``: the data, then the record naming it
    (at ``record`` instead of its place in the store: a staged result,
    see :mod:`daskflow.worker.staging`)."""
    try:
        data, kind = _dumps(value, settings.serializer)
    except Exception as err:
        # (kept for a retried flow's next attempt only: then that task runs again)
        level = logging.DEBUG if settings.mode == "resume" else logging.WARNING
        _log().log(level, "the result of %s could not be serialized for the cache (%s: %s); "
                   "the task stays Completed but is not stored", task_name,
                   type(err).__name__, err)
        return False
    fs, root = filesystem(settings.storage, settings.options)
    folder, meta_path = locate(root, key)
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
        if record is not None:
            fs.makedirs(record.rsplit("/", 1)[0], exist_ok=True)
        write_atomic(record or meta_path, json.dumps(meta).encode(), fs)
    except Exception as err:
        _log().warning("the result of %s could not be written to %s (%s: %s); the task "
                       "stays Completed but is not stored", task_name, settings.storage,
                       type(err).__name__, err)
        return False
    return True


_made: set[tuple[str, str]] = set()  # folders this process made (or found), by store


def records(url: str, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every metadata record in the store at ``url``."""
    fs, root = filesystem(url, storage_options() if options is None else options)
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
    fs, _ = filesystem(url, storage_options() if options is None else options)
    folder = meta["_path"].rsplit("/", 1)[0]
    fs.rm_file(meta["_path"])
    try:
        fs.rm_file(f"{folder}/{meta['data']}")
    except FileNotFoundError:
        pass
