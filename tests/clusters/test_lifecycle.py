"""The holes a cluster's end could fall through, each closed and tested by
fault injection; daskflow as a guest in someone else's process; and the
private upstream internals it still leans on, each pinned by a test that
fails loudly when a release changes them."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import threading
import time

import dask
import psutil
import pytest

import daskflow as df
from daskflow import cli
from daskflow.clusters import base
from daskflow.clusters.base import _SigtermToExit, _within
from daskflow.clusters.records import process_identity, records


class Recording(df.clusters.Local):
    """A real LocalCluster spec that remembers every cluster it made."""

    made: list = []

    def _create(self, handle):
        client, cluster = super()._create(handle)
        Recording.made.append(cluster)
        return client, cluster


def closed(cluster, timeout=15.0):
    deadline = time.monotonic() + timeout
    while cluster.status.name != "closed":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def recording(cleanup):
    Recording.made.clear()
    yield Recording
    for cluster in Recording.made:
        cluster.close()
    for t in threading.enumerate():
        if t.name.startswith("start daskflow"):
            t.join(15)


@pytest.mark.parametrize("where", ["lease", "record"])
def test_a_failure_after_the_cluster_exists_tears_it_down(recording, monkeypatch, where):
    def broken(*args):
        raise OSError(f"injected: {where} failed")

    if where == "lease":  # e.g. a scheduler without daskflow refuses the plugin
        monkeypatch.setattr(base, "_install_lease", broken)
    else:  # e.g. the state folder is read-only or full
        monkeypatch.setattr(records, "write", broken)
    handle = recording(n_workers=1, processes=False).open()
    with pytest.raises(OSError, match="injected"):
        handle.start()
    (cluster,) = recording.made
    assert closed(cluster), "the cluster outlived its failed start"
    assert handle.state is df.clusters.Lifecycle.CLOSED and handle not in base._live
    assert records.all() == []


def test_ctrl_c_while_waiting_for_a_slow_start_tears_it_down_when_it_comes_up(recording):
    class Slow(recording):
        def _create(self, handle):
            time.sleep(1.0)
            return super()._create(handle)

    main = threading.main_thread().ident
    threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
    handle = Slow(n_workers=1, processes=False, startup_timeout=60).open()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        handle.start()
    assert time.monotonic() - start < 1.0  # the interrupt is not held until the start ends
    assert handle.state is df.clusters.Lifecycle.CLOSED
    deadline = time.monotonic() + 20
    while not recording.made:
        assert time.monotonic() < deadline, "the abandoned start never finished"
        time.sleep(0.05)
    assert closed(recording.made[0]), "the abandoned cluster came up and was left running"
    assert records.all() == []


def test_an_interrupt_just_as_the_start_finishes_ends_what_it_made(monkeypatch):
    """The race: the start thread delivered its cluster, then the join raised."""
    ended = []

    class JoinThenInterrupt(threading.Thread):
        def join(self, timeout=None):
            super().join(timeout)
            raise KeyboardInterrupt

    monkeypatch.setattr(base.threading, "Thread", JoinThenInterrupt)
    with pytest.raises(KeyboardInterrupt):
        _within(5, lambda: ("client", "cluster"), lambda *made: ended.append(made), "race")
    assert ended == [("client", "cluster")]


def test_a_timed_out_start_that_fails_later_leaves_nothing_to_end():
    ended = []
    release = threading.Event()

    def create():
        release.wait(5)
        raise RuntimeError("never came up")

    with pytest.raises(df.ClusterError, match="did not start within 0.1s"):
        _within(0.1, create, lambda *made: ended.append(made), "late-failure")
    release.set()
    time.sleep(0.1)
    assert ended == []


# -- a guest in the user's process ---------------------------------------------------


def _theirs(signum, frame):
    _theirs.calls += 1


_theirs.calls = 0


@pytest.fixture
def restore_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_sigterm_left_alone_when_the_process_has_its_own_handler(restore_sigterm):
    signal.signal(signal.SIGTERM, _theirs)
    with dask.config.set({"daskflow.lifecycle.handle-sigterm": "auto"}):
        guard = _SigtermToExit()
        guard.__enter__()
        assert signal.getsignal(signal.SIGTERM) is _theirs
        guard.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGTERM) is _theirs


def test_sigterm_installed_on_a_default_process_and_restored(restore_sigterm):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    guard = _SigtermToExit()
    guard.__enter__()
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    with pytest.raises(SystemExit) as exit_info:
        signal.raise_signal(signal.SIGTERM)
    assert exit_info.value.code == 143
    guard.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_always_chains_to_the_previous_handler(restore_sigterm):
    signal.signal(signal.SIGTERM, _theirs)
    _theirs.calls = 0
    with dask.config.set({"daskflow.lifecycle.handle-sigterm": "always"}):
        guard = _SigtermToExit()
        guard.__enter__()
    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGTERM)
    assert _theirs.calls == 1  # theirs ran first, then the orderly exit
    guard.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGTERM) is _theirs


def test_sigterm_never_and_a_bad_setting(restore_sigterm):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with dask.config.set({"daskflow.lifecycle.handle-sigterm": "never"}):
        with df.clusters.Local(n_workers=1, processes=False) as client:
            assert client.submit(sum, [1]).result() == 1
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with dask.config.set({"daskflow.lifecycle.handle-sigterm": "sometimes"}):
        with pytest.raises(df.ClusterError, match="auto, always or never"):
            _SigtermToExit().__enter__()


def test_a_flow_body_runs_with_the_garbage_collector_as_the_user_left_it():
    seen = []

    @df.task
    def one():
        return 1

    @df.flow
    def body():
        seen.append(gc.isenabled())
        return one()

    assert gc.isenabled()
    assert body(cluster="sync") == 1
    assert seen == [True]


# -- `daskflow clusters close` and reused pids -------------------------------------


def test_clusters_close_signals_a_recorded_pid_only_while_it_is_that_process(cluster_records, capsys):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        stale = {**process_identity(victim.pid)}
        stale["create_time"] -= 3600  # the pid now belongs to a newer process
        for name, proc in (("stale", stale), ("current", process_identity(victim.pid))):
            record = {"id": name, "name": name, "kind": "local", "address": "tcp://127.0.0.1:9",
                      "driver": {"pid": 999999, "create_time": 0.0}, "processes": [proc]}
            with open(os.path.join(records.directory(), f"{name}.json"), "w") as f:
                import json

                json.dump(record, f)
        assert cli.main(["clusters", "close", "stale"]) == 0
        time.sleep(0.3)
        assert victim.poll() is None, "a reused pid was signalled"
        assert cli.main(["clusters", "close", "current"]) == 0
        assert victim.wait(timeout=10) == -signal.SIGTERM
        assert "processes terminated" in capsys.readouterr().out
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_a_record_without_start_times_never_kills(cluster_records, capsys):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        import json

        with open(os.path.join(records.directory(), "old.json"), "w") as f:
            json.dump({"name": "old", "kind": "local", "address": "tcp://127.0.0.1:9",
                       "driver_pid": 999999, "worker_pids": [victim.pid]}, f)
        assert cli.main(["clusters", "close", "old"]) == 0
        assert f"pids {victim.pid} left alone" in capsys.readouterr().out
        time.sleep(0.2)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# -- attaching is bounded --------------------------------------------------------------


def test_attach_to_a_port_that_does_not_speak_dask_fails_within_the_connect_timeout(cleanup):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held, stop = [], threading.Event()

    def accept():  # accepts, then says nothing: a web server waiting for a request
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"

    @df.flow
    def nothing():
        return None

    try:
        with dask.config.set({"daskflow.connect-timeout": "1s"}):
            start = time.monotonic()
            with pytest.raises(df.ClusterError, match="did not answer Dask's handshake within 1s"):
                nothing(cluster=address)
            assert time.monotonic() - start < 5
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_attach_to_the_dashboard_port_says_it_is_not_a_scheduler(client):
    import urllib.parse

    port = urllib.parse.urlparse(client.dashboard_link).port if client.dashboard_link else None
    if port is None:
        pytest.skip("this test cluster has no dashboard")
    with dask.config.set({"daskflow.connect-timeout": "1s"}):
        with pytest.raises(df.ClusterError, match="8787"):
            df.clusters.Address(f"tcp://127.0.0.1:{port}").open().start()


# -- private upstream internals, pinned ---------------------------------------------


def test_task_token_slot_still_names_the_task():
    """compile.tasks.make_task sets dask's private ``Task._token`` up front so that a
    graph's token does not pickle every task; dask must still read it."""
    from daskflow.compile.tasks import make_task

    task = make_task("k", sum, [1])
    assert task._token and task._get_token() == task._token
    assert task.__dask_tokenize__() == task._token


def test_scheduler_idle_declaration_still_reaches_check_idle():
    """``Lease._declare_idle`` (the Kubernetes lease) relies on
    ``Scheduler.idle_since``/``_idle_transition_counter``; ``check_idle`` is
    what the Dask operator asks."""
    import asyncio

    from distributed import Scheduler

    from daskflow.clusters.lease import Lease

    async def go():
        async with Scheduler(dashboard_address=":0", port=0) as scheduler:
            lease = Lease("nobody", 60, action="idle")
            lease.scheduler = scheduler
            lease._declare_idle()
            return scheduler.check_idle()

    assert asyncio.run(go()) == 1.0


def test_kubecluster_still_has_the_hooks_the_startup_deadline_overrides():
    pytest.importorskip("dask_kubernetes")
    import inspect

    from dask_kubernetes.operator import KubeCluster

    for name in ("_start", "_create_cluster", "_close"):
        assert inspect.iscoroutinefunction(getattr(KubeCluster, name)), name
    assert "_create_cluster" in inspect.getsource(KubeCluster._start)


def test_records_hold_start_times_of_every_owned_process(cleanup):
    with df.clusters.Local(n_workers=1, threads_per_worker=1) as client:
        (record,) = records.all()
        (worker,) = record["processes"]
        assert worker["pid"] == next(iter(client.run(os.getpid).values()))
        assert abs(worker["create_time"] - psutil.Process(worker["pid"]).create_time()) < 0.05
        assert record["driver"]["pid"] == os.getpid()
