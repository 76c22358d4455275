"""Staged results of a transaction's members, in the result store, on the workers.

A member of a transaction (:mod:`daskflow.define.transactions`) that stores
its result writes the data where the store keeps it (a file no record
names yet, so nothing reads it) and its metadata record under
``<store>/.staged/<transaction id>/<key>.json`` instead of
``<store>/<key[:2]>/<key>.json``.  The transaction's commit task then moves
each staged record to its place (one atomic write each: a result appears
whole or not at all), or, on rollback, removes the staged records and their
data.  Either way it leaves ``DECIDED`` in the staging folder, holding
``Committed`` or ``RolledBack``: the record that the transaction was decided.
A commit task that Dask runs again (its result lost with its worker) reads it
and neither moves anything nor runs hooks again; a member Dask runs again
after the decision writes to the store directly (committed) or not at all
(rolled back).  Nothing about a transaction is kept on the scheduler or on
the driver.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from daskflow.core.files import write_atomic
from daskflow.wire import ResultSettings
from daskflow.worker import store
from daskflow.worker.store import filesystem, locate

STAGED = ".staged"  # the folder of staged records, in the store's root
DECIDED = "DECIDED"  # the decision record in a transaction's staging folder

Store = tuple[str, dict[str, Any]]  # (storage URL, fsspec options)


def _folder(where: Store, txn: str) -> tuple[Any, str, str]:
    fs, root = filesystem(*where)
    return fs, root, f"{root.rstrip('/')}/{STAGED}/{txn}"


def decided(stores: tuple[Store, ...], txn: str) -> str | None:
    """How the transaction was decided (``"Committed"``/``"RolledBack"``), or None."""
    for where in stores:
        fs, _, folder = _folder(where, txn)
        try:
            return fs.cat_file(f"{folder}/{DECIDED}").decode()
        except FileNotFoundError:
            continue
    return None


def stage(settings: ResultSettings, txn: str, key: str, value: Any, task_name: str,
          flow_name: str, version: str) -> bool:
    """Stage ``value`` under ``key`` for transaction ``txn`` (a result staged
    before, by an earlier run of the same task, is replaced)."""
    where = (settings.storage, settings.options)
    decision = decided((where,), txn)
    if decision == "Committed":  # a rerun after the commit: as if committed with it
        return store.store(settings, key, value, task_name, flow_name, version)
    if decision is not None:
        return False  # rolled back: nothing of it is kept
    fs, root, folder = _folder(where, txn)
    record = f"{folder}/{key}.json"
    before = _read(fs, record)
    written = store.store(settings, key, value, task_name, flow_name, version, record=record)
    if written and before is not None:
        _remove_data(fs, root, before)
    return written


def commit(stores: tuple[Store, ...], txn: str) -> int:
    """Move every staged record of ``txn`` into its store; how many."""
    moved = 0
    for where in stores:
        fs, root, folder = _folder(where, txn)
        for path in _staged(fs, folder):
            raw = fs.cat_file(path)
            write_atomic(locate(root, json.loads(raw)["key"])[1], raw, fs)
            fs.rm_file(path)
            moved += 1
        _decide(fs, folder, "Committed")
    return moved


def discard(stores: tuple[Store, ...], txn: str) -> int:
    """Remove every staged record of ``txn`` and its data; how many."""
    removed = 0
    for where in stores:
        fs, root, folder = _folder(where, txn)
        for path in _staged(fs, folder):
            meta = _read(fs, path)
            if meta is not None:
                _remove_data(fs, root, meta)
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
            removed += 1
        _decide(fs, folder, "RolledBack")
    return removed


def _staged(fs: Any, folder: str) -> list[str]:
    try:
        return sorted(fs.glob(f"{folder}/*.json"))
    except FileNotFoundError:
        return []


def _decide(fs: Any, folder: str, outcome: str) -> None:
    fs.makedirs(folder, exist_ok=True)
    write_atomic(f"{folder}/{DECIDED}", outcome.encode(), fs)


def _read(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None


def _remove_data(fs: Any, root: str, meta: dict[str, Any]) -> None:
    folder = locate(root, meta["key"])[0]
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(f"{folder}/{meta['data']}")
