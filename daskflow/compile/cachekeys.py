"""Cache keys of one run, chained on the driver before anything runs.

``@df.task(cache=True)`` reuses a stored result whose key matches;
``@df.task(persist=True)`` stores the result but never reuses it;
``@df.flow(cache=True, result_storage=URL)`` sets both defaults for its
tasks, and ``flow.run(..., refresh_cache=True)`` recomputes and overwrites.

The driver computes one key per task run::

    key = blake2b("daskflow-cache-1", task name, code version,
                  encoded constant arguments, keys of the upstream tasks)

(the code version and the encoding are :mod:`daskflow.core.fingerprint`'s).
An argument that cannot be encoded is an error for a cached task, naming
the argument and pointing to ``cache_key=``.  An upstream task enters by its
key, never by its value: keys are identical across processes and machines,
and nothing is hashed from a task's result.  A map child's key adds its
index and its own element; an upstream task that cannot be keyed (an
argument that cannot be encoded) gets a fresh key each run, so what depends
on it is never served from the cache.

Before compiling, :meth:`KeyPlan.check` reads the metadata records of the
cached tasks in one batch per store: a node whose results are all stored is
loaded instead of run, and the nodes only it needed do not run at all.
The results themselves are read and written on the workers
(:mod:`daskflow.worker.store`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from daskflow.core.fingerprint import VERSION, Unencodable, code_version, encode
from daskflow.core.walk import transform
from daskflow.define.build import Ref, allow_failure, unmapped
from daskflow.exceptions import CacheKeyError
from daskflow.wire import READS, ResultSettings, RunResults
from daskflow.worker.store import filesystem, locate

log = logging.getLogger("daskflow.cache")


def plan_for(nodes: list[Any], results: RunResults) -> KeyPlan:
    """The keys of a run's nodes (computed before anything starts, so a task
    whose key cannot be computed fails here)."""
    plan = KeyPlan()
    for node in nodes:
        plan.node(node, results.for_task(node.task))
    return plan


class KeyPlan:
    """Chained cache keys of one run's nodes, made before it compiles."""

    def __init__(self) -> None:
        self.settings: dict[int, ResultSettings] = {}  # node index -> how it uses the store
        self.hits: set[int] = set()  # nodes whose every result is stored (see check)
        self.unneeded: set[int] = set()  # nodes only hits depend on: not run at all
        self.base: dict[int, str | None] = {}  # node index -> key (single) or base (map)
        self.whole: dict[int, str | None] = {}  # map index -> key of its whole result
        self.child_parts: dict[int, dict[Any, list]] = {}  # map -> {pos: element values}
        self._children: dict[int, list[str | None]] = {}  # map -> its children's keys

    def node(self, node: Any, settings: ResultSettings | None) -> None:
        """Compute the key (or a map's base) of ``node``; its upstream are done."""
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

    def child_keys(self, node: Any, n: int) -> list[str | None]:
        """The keys of the ``n`` children of map ``node`` (made once: the
        check before the run and the compiler both need them)."""
        keys = self._children.get(node.index)
        if keys is None or len(keys) != n:
            keys = self._children[node.index] = [self.key(node, i) for i in range(n)]
        return keys

    def check(self, nodes: list[Any], returned: list[Any]) -> None:
        """Find, before compiling, the cached nodes whose results are all
        stored (reading only metadata, one batch per store and round) and the
        nodes that only those need, which then do not run at all.

        Two rounds: the records of single tasks first, then those of the maps
        still needed (a map read only by a stored task is not read at all:
        a sum over 20,000 stored elements reads one record, not 20,001)."""
        wanted: dict[int, tuple[str, dict[str, Any], list[str]]] = {}
        for node in nodes:
            st = self.settings.get(node.index)
            if (st is None or st.mode not in READS or st.refresh or node.kind != "task"
                    or node.task.cache_key is not None or self.base.get(node.index) is None):
                continue
            if node.mapped is not None and node.length is None:
                continue  # children known only at run time: each checks itself
            maybe = ([self.key(node)] if node.mapped is None
                     else self.child_keys(node, node.length or 0))
            keys = [k for k in maybe if k is not None]
            if keys and len(keys) == len(maybe):
                wanted[node.index] = (st.storage, st.options, keys)
        if not wanted:
            return
        dependents: dict[int, list[Any]] = {}
        for node in nodes:
            for dep in node.dependencies():
                dependents.setdefault(dep.index, []).append(node)
        keep = {n.index for n in returned}
        maps = {n.index for n in nodes if n.mapped is not None}
        stored = _stored({i: w for i, w in wanted.items() if i not in maps})
        self._decide(nodes, stored, dependents, keep)
        later = {i: w for i, w in wanted.items() if i in maps and i not in self.unneeded}
        if later:
            stored |= _stored(later)
            self._decide(nodes, stored, dependents, keep)

    def _decide(self, nodes: list[Any], stored: set[int], dependents: dict[int, list[Any]],
                keep: set[int]) -> None:
        """The hits (stored nodes something needs) and the nodes only hits need."""
        self.hits, self.unneeded = set(), set()
        if not stored:
            return
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


def _stored(wanted: dict[int, tuple[str, dict[str, Any], list[str]]]) -> set[int]:
    """The nodes of ``wanted`` (index -> store, its options, the keys of its
    results) whose every result has a live record: one read per store."""
    by_store: dict[str, dict[str, int]] = {}  # storage -> record path -> node index
    options: dict[str, dict[str, Any]] = {}
    for index, (storage, opts, keys) in wanted.items():
        _, root = filesystem(storage, opts)
        options[storage] = opts
        by_path = by_store.setdefault(storage, {})
        for k in keys:
            by_path[locate(root, k)[1]] = index
    found: dict[int, int] = {}
    now = time.time()
    for storage, by_path in by_store.items():
        fs, _ = filesystem(storage, options[storage])
        try:
            metas = fs.cat(list(by_path), on_error="omit")
        except Exception as err:
            log.warning("the result store %s could not be read (%s: %s); every cached "
                        "task will check for itself", storage, type(err).__name__, err)
            continue
        for path, raw in metas.items():
            try:
                meta = json.loads(raw)
            except ValueError:
                continue
            at = by_path.get(path)
            if at is not None and (meta.get("expires") is None or meta["expires"] > now):
                found[at] = found.get(at, 0) + 1
    return {i for i, n in found.items() if n == len(wanted[i][2])}


class _Fresh(Exception):
    """An upstream task without a key: this one has none either."""


def _plain(value: Any, plan: KeyPlan | None = None) -> Any:
    """``value`` with task references replaced by their keys."""
    def key_of(v: Any) -> Any:
        t = type(v)
        if t is Ref:
            if plan is None:
                raise _Fresh
            return ("<task>", plan._ref_key(v.node))
        if t is allow_failure:
            return _plain(v.ref, plan)
        if t is unmapped:
            return _plain(v.value, plan)
        return v

    return transform(value, key_of)
