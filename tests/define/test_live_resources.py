"""Resources that hold live objects (a sqlite connection) on a real cluster:
the default form keeps the value on the worker that set it up and runs the
block's tasks there; ``per_worker=True`` sets it up once on each worker
that runs one of them.  With a worker killed during the block too."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest
from distributed import Client

import daskflow as df

ROWS = 40


def _journal(path):
    with open(path) as f:
        return [line.split(":") for line in f.read().splitlines()]


def _note(path, text):
    with open(path, "a") as f:
        f.write(f"{text}:{os.getpid()}\n")


def _rows(db):
    with sqlite3.connect(db) as conn:
        return sorted(r[0] for r in conn.execute("select i from t"))


def _create(db):
    conn = sqlite3.connect(db)
    try:
        conn.execute("create table if not exists t (i integer primary key, pid integer)")
        conn.commit()
    finally:
        conn.close()


@df.resource
def database(db, journal):
    _note(journal, "open")
    conn = sqlite3.connect(db, check_same_thread=False, timeout=30)
    yield conn
    conn.close()
    _note(journal, "close")


@df.resource(per_worker=True)
def database_per_worker(db, journal):
    _note(journal, "open")
    conn = sqlite3.connect(db, check_same_thread=False, timeout=30)
    yield conn
    conn.close()
    _note(journal, "close")


@df.task
def insert(i, conn, pause=0.0):
    time.sleep(pause)
    conn.execute("insert or replace into t values (?, ?)", (i, os.getpid()))
    conn.commit()
    return os.getpid()


@df.flow
def load(db: str, journal: str, per_worker: bool = False, pause: float = 0.0):
    opener = database_per_worker if per_worker else database
    with opener(db, journal) as conn:
        pids = insert.map(range(ROWS), conn=conn, pause=pause)  # both whole
    return pids


@pytest.mark.parametrize("per_worker", [False, True], ids=["one-setup", "per-worker"])
def test_a_live_connection_serves_a_map_on_a_real_cluster(client, tmp_path, per_worker):
    db, journal = str(tmp_path / "rows.db"), str(tmp_path / "journal")
    _create(db)
    run = load.run(db, journal, per_worker, 0.01, cluster=client)
    assert run.state.is_completed(), run.summary()
    assert _rows(db) == list(range(ROWS))
    lines = _journal(journal)
    opened = [pid for what, pid in lines if what == "open"]
    closed = [pid for what, pid in lines if what == "close"]
    task_pids = {str(p) for p in run.result()}
    if per_worker:
        # one setup and one cleanup on each worker that ran an insert
        assert sorted(opened) == sorted(closed) == sorted(task_pids)
        assert len(opened) == len(set(opened))
        assert "cleaned up on" in run.states["database_per_worker.cleanup"].message
    else:
        # one setup; every insert ran in the process holding the connection
        assert len(opened) == len(closed) == 1 and opened == closed
        assert task_pids == set(opened)


@pytest.mark.parametrize("per_worker", [False, True], ids=["one-setup", "per-worker"])
def test_a_live_connection_on_sync(tmp_path, per_worker):
    db, journal = str(tmp_path / "rows.db"), str(tmp_path / "journal")
    _create(db)
    run = load.run(db, journal, per_worker, cluster="sync")
    assert run.state.is_completed(), run.summary()
    assert _rows(db) == list(range(ROWS))
    assert [what for what, _ in _journal(journal)] == ["open", "close"]


def _killer(tmp_path, db, processes, victim_pid):
    """Kill the worker process ``victim_pid()`` once 10 rows are in."""
    def kill():
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if len(_rows(db)) >= 10:
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.05)
        os.kill(victim_pid(), signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("per_worker", [False, True], ids=["one-setup", "per-worker"])
def test_a_worker_killed_during_the_block(processes, tmp_path, per_worker):
    db, journal = str(tmp_path / "rows.db"), str(tmp_path / "journal")
    _create(db)
    processes.start_scheduler()
    processes.start_worker("--nworkers", "2")  # nannies: the killed worker comes back
    with Client(processes.address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)

        def victim():  # the process that opened the connection first
            return int(_journal(journal)[0][1])

        killer = _killer(tmp_path, db, processes, victim)
        run = load.run(db, journal, per_worker, 0.1, cluster=client)
        killer.join(60)
    assert _rows(db) == list(range(ROWS))  # every row written, none lost
    lines = _journal(journal)
    opened = [pid for what, pid in lines if what == "open"]
    closed = [pid for what, pid in lines if what == "close"]
    killed = str(victim())
    assert killed not in closed  # its connection died with it
    name = "database_per_worker" if per_worker else "database"
    cleanup = run.states[f"{name}.cleanup"]
    if per_worker:
        # the setup on the killed worker could not be cleaned up: said so
        assert cleanup.is_crashed(), cleanup
        assert "gone" in cleanup.message
        assert sorted(closed) == sorted(set(opened) - {killed})
    else:
        # set up again where the rest ran, and cleaned up there, once
        assert cleanup.is_completed(), run.summary()
        assert len(opened) == 2 and closed == [opened[1]]
        assert "ran again" in " ".join(r["message"] for r in run.logs)


def test_pin_uses_the_scheduler_task_restrictions(client):
    """The scheduler API :func:`daskflow.events.plugins.pin` relies on."""
    def probe(dask_scheduler):
        from distributed.scheduler import TaskState

        for name in ("worker_restrictions", "loose_restrictions", "dependents",
                     "dependencies", "key", "state"):
            assert name in TaskState.__slots__ or hasattr(TaskState, name), name
        return callable(dask_scheduler.valid_workers)

    assert client.run_on_scheduler(probe)
