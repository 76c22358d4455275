"""The run store: every run leaves a record, with no server to run.

A record is the run's JSON (:meth:`FlowRun.record`: flow, run id, parameters,
states, logs, timings, the cluster, the outcome) plus ``heartbeat``,
``host`` and ``pid``, one file per run named ``<start time>-<run id>.json``
in the folder or fsspec URL of the setting ``daskflow.runs.store``.

:class:`Recorder` writes it half a second after the run starts (a run over
by then writes it once, at its end), every
``daskflow.runs.interval`` while it goes (then only the counts per task and
the last log lines, so a run of 100k task runs does not spend its time
writing), and whole when it ends.  Every write is atomic (a rename, or an
object store's put), and each run writes only its own file, so drivers on
several machines share one store.  A record still "running" whose
heartbeat is older than ``daskflow.runs.driver-lost`` reads as Crashed
(driver lost): nobody has to notice the driver died.  A damaged record is
skipped with a warning.  ``daskflow runs list/show/report/prune`` read it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from daskflow import config
from daskflow.compile.graph import new_token
from daskflow.core.files import write_atomic
from daskflow.driver.flowrun import FlowRun
from daskflow.exceptions import DaskflowError

log = logging.getLogger("daskflow.run")

_LOGS_WHILE_RUNNING = 200  # log lines in a record written while the run goes
FIRST_WRITE = 0.5  # seconds after its start a run's record is first written, at most


_stores: dict[tuple[str, str], RunStore] = {}
_stores_lock = threading.Lock()


class RunStore:
    """The records of runs, in one folder or fsspec URL."""

    def __init__(self, url: str | None = None) -> None:
        from fsspec.core import url_to_fs

        self.url = os.path.expanduser(str(url or config.get("runs.store")))
        self.fs, self.root = url_to_fs(self.url, **(config.get("runs.store-options") or {}))
        self._made = False  # the folder exists (made once per store object)
        self._summaries: dict[str, dict[str, Any] | None] = {}  # ended runs, by file name
        self._summaries_lock = threading.Lock()  # pages are rendered in threads

    @classmethod
    def configured(cls) -> RunStore:
        """The store of the settings, one object per URL and options."""
        key = (str(config.get("runs.store")), repr(config.get("runs.store-options") or {}))
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = cls()
            return store

    def path(self, record: dict[str, Any]) -> str:
        started = record.get("created") or (record.get("state") or {}).get("start") or 0
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
        return f"{self.root}/{stamp}-{record['run_id']}.json"

    def write(self, record: dict[str, Any], states: Iterable[tuple[str, Any]] = ()) -> None:
        """Write ``record`` at once; ``states``, ``(name, state record)``
        pairs, become its ``states``, encoded one at a time (a run of a
        million task runs never holds a million dicts)."""
        if not self._made:
            self.fs.makedirs(self.root, exist_ok=True)
            self._made = True
        write_atomic(self.path(record), _encoded(record, states), self.fs)

    def exists(self) -> bool:
        """Whether the store's folder exists (the first recorded run makes it)."""
        return bool(self.fs.isdir(self.root))

    def _names(self) -> list[str]:
        settle()  # the end records this process still writes are read whole
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted((n for n in names if n.endswith(".json")), reverse=True)

    def records(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        """Every readable record (of the runs whose id starts with ``prefix``:
        told by the file's name, only those are read), newest first; a
        damaged one is skipped with a warning; a running one whose driver
        stopped writing reads as Crashed."""
        lost_after = config.seconds_setting("runs.driver-lost")
        for name in self._names():
            if prefix and not name.rpartition("-")[2].startswith(prefix):
                continue
            record = self._read(name)
            if record is not None:
                yield _driver_lost(record, lost_after)

    def _read(self, name: str) -> dict[str, Any] | None:
        """One record, or None when it is gone or damaged (said once, as a warning)."""
        try:
            record: dict[str, Any] = json.loads(self.fs.cat_file(name))
            record["run_id"], record["state"]["type"]  # noqa: B018 - its shape
        except FileNotFoundError:
            return None  # pruned meanwhile
        except Exception as err:
            log.warning("skipped the damaged run record %s (%s: %s)", name,
                        type(err).__name__, err)
            return None
        return record

    def summaries(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records without their task states, logs and
        artifacts (``tasks``: how many task runs it has).  An ended run's
        record does not change: it is read once per store object (a damaged
        one too), so a page listing runs every few seconds rereads only
        those still going."""
        with self._summaries_lock:
            return self._summarize(self._names()[:limit])

    def _summarize(self, names: list[str]) -> list[dict[str, Any]]:
        lost_after = config.seconds_setting("runs.driver-lost")
        cache = self._summaries
        for gone in set(cache) - set(names):
            del cache[gone]
        out = []
        for name in names:
            if name in cache:
                summary = cache[name]
            else:
                record = self._read(name)
                summary = None if record is None else _summary(record)
                if summary is None or summary["state"]["type"] not in ("RUNNING", "PENDING"):
                    cache[name] = summary
            if summary is not None:
                out.append(_driver_lost({**summary, "state": dict(summary["state"])},
                                        lost_after))
        return out

    def find(self, prefix: str) -> dict[str, Any]:
        """The record whose run id starts with ``prefix`` (as git's short ids)."""
        found = [r for r in self.records(prefix) if r["run_id"].startswith(prefix)]
        ids = sorted({r["run_id"] for r in found})
        if not ids:
            raise DaskflowError(f"no run {prefix!r} in the run store {self.url}; "
                                "`daskflow runs list` shows the runs it holds")
        if len(ids) > 1:
            raise DaskflowError(f"run id {prefix!r} is ambiguous in {self.url}: "
                                f"{', '.join(ids[:5])}; give more of it")
        return found[0]

    def prune(self, older_than: float) -> int:
        """Remove the records of runs that ended (or were last heard of) more
        than ``older_than`` seconds ago; how many."""
        cutoff = time.time() - older_than
        removed = 0
        for record in list(self.records()):
            last = (record["state"].get("end") or record.get("heartbeat")
                    or record["state"].get("start") or 0)
            if last < cutoff and record["state"]["type"] not in ("RUNNING", "PENDING"):
                try:
                    self.fs.rm_file(self.path(record))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed


def _encoded(record: dict[str, Any], states: Iterable[tuple[str, Any]]) -> Iterator[bytes]:
    """``record`` as JSON bytes, in pieces, its ``states`` taken from
    ``states`` a batch at a time (one ``json.dumps`` per batch: one per
    state costs more than the rest of the record)."""
    rest = {k: v for k, v in record.items() if k != "states"}
    yield json.dumps(rest, default=repr)[:-1].encode()
    yield b', "states": {'
    sep = b""
    batch: dict[str, Any] = {}
    for name, state in (states or record.get("states", {}).items()):
        batch[name] = state
        if len(batch) >= 2000:
            yield sep + json.dumps(batch, default=repr)[1:-1].encode()
            sep, batch = b", ", {}
    if batch:
        yield sep + json.dumps(batch, default=repr)[1:-1].encode()
    yield b"}}"


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    states = record.pop("states", None) or {}
    record.pop("logs", None)
    record.pop("artifacts", None)
    record["tasks"] = len(states) or sum(g.get("total", 0) for g in record.get("groups") or [])
    return record


def _driver_lost(record: dict[str, Any], lost_after: float) -> dict[str, Any]:
    state = record["state"]
    if state["type"] in ("RUNNING", "PENDING"):
        silent = time.time() - (record.get("heartbeat") or 0)
        if silent > lost_after:
            state.update(type="CRASHED", name="Crashed",
                         message=f"driver lost: its driver ({record.get('host')}, pid "
                                 f"{record.get('pid')}) stopped writing {silent:.0f}s ago")
    return record


WRITE_BEHIND = 5000  # task runs: a run with more has its end record written behind it
_pending: set[threading.Thread] = set()  # end records being written behind their runs
_pending_lock = threading.Lock()


def settle(timeout: float | None = 60) -> None:
    """Wait (at most ``timeout`` seconds each) for the end records this
    process is still writing (see :meth:`Recorder.end`)."""
    with _pending_lock:
        writers = list(_pending)
    for writer in writers:
        writer.join(timeout)


def record_failed_start(flow_name: str, error: BaseException) -> None:
    """A run that failed before it could be made (a bad parameter, a bad
    ``cluster=``) leaves a record too, saying why."""
    recorder = Recorder.for_run(FlowRun(flow_name, new_token(), {}))
    if recorder is not None:
        recorder.end(error)


class Recorder:
    """Writes one run's record to the store as it goes (see the module's doc)."""

    def __init__(self, run: Any, store: RunStore | None = None) -> None:
        self.run = run
        self.store = store or RunStore.configured()
        # one record per FlowRun: the attempts of a retried flow share it
        self.created = getattr(run, "created", None) or time.time()
        self.interval = config.seconds_setting("runs.interval")
        self._stop = threading.Event()
        self._writing = threading.Lock()  # held by a write; the end's write comes last
        self._failed = False

    @classmethod
    def for_run(cls, run: Any) -> Recorder | None:
        """A recorder for ``run``, or None when records are off (a setting)."""
        if not config.get("runs.enabled"):
            return None
        try:
            return cls(run)
        except Exception as err:  # a store that cannot be opened never fails a run
            log.warning("run %s leaves no record: the run store %s cannot be opened (%s: %s)",
                        run.run_id, config.get("runs.store"), type(err).__name__, err)
            return None

    def start(self) -> None:
        """Write the record now and as the run goes, from a thread of its own
        (the run does not wait for the store)."""
        threading.Thread(target=self._loop, daemon=True,
                         name=f"daskflow-record-{self.run.run_id}").start()

    def _loop(self) -> None:
        # The first write waits a moment: a run over by then (most small ones)
        # writes its record once, at its end.
        wait = min(self.interval, FIRST_WRITE)
        while not self._stop.wait(wait):
            with self._writing:
                if self._stop.is_set():
                    return
                self._write(self._running())
            wait = self.interval

    def end(self, error: BaseException | None = None) -> None:
        """The run ended (``error``: it never started, e.g. its body raised
        before its first task): write its whole record.

        The record of a run of :data:`WRITE_BEHIND` task runs or more is
        written by a thread of its own while the run returns (its JSON costs
        about 5 us a task run, a good part of a run of small chunked
        elements); it is not a daemon, so the process waits for it before it
        exits, and this process's readers of the store wait for it too
        (:func:`settle`)."""
        self._stop.set()
        if len(self.run.states) < WRITE_BEHIND:
            self._end_now(error)
            return
        writer = threading.Thread(target=self._end_now, args=(error,), daemon=False,
                                  name=f"daskflow-record-end-{self.run.run_id}")
        with _pending_lock:
            _pending.add(writer)
        writer.start()

    def _end_now(self, error: BaseException | None) -> None:
        try:
            with self._writing:  # a write of the running record under way ends first
                self._end(error)
        finally:
            with _pending_lock:
                _pending.discard(threading.current_thread())

    def _end(self, error: BaseException | None) -> None:
        record = self.run.record(with_states=False)
        if error is not None and not self.run.state.is_final():
            record["state"].update(type="FAILED", name="Failed", end=time.time(),
                                   message=f"did not start: {type(error).__name__}: {error}")
        self._write(record, self.run.state_records())

    def _running(self) -> dict[str, Any]:
        """The record while the run goes: its counts per task, not every state."""
        run = self.run
        record = run.record(with_states=False)
        record.update(
            state={"type": "RUNNING", "name": "Running", "start": run.state.start, "end": None,
                   "message": ""},
            groups=[{"name": g.name, "total": g.total, "counts": dict(g.counts)}
                    for g in run.groups()],
            logs=record["logs"][-_LOGS_WHILE_RUNNING:])
        return record

    def _write(self, record: dict[str, Any], states: Iterable[tuple[str, Any]] = ()) -> None:
        record.update(heartbeat=time.time(), created=self.created, host=socket.gethostname(),
                      pid=os.getpid())
        if record["state"].get("start") is None:
            record["state"]["start"] = self.created
        try:
            self.store.write(record, states)
        except Exception as err:  # a store that cannot be written never fails a run
            if not self._failed:
                self._failed = True
                log.warning("could not write run %s's record to %s (%s: %s); the run goes on",
                            self.run.run_id, self.store.url, type(err).__name__, err)
