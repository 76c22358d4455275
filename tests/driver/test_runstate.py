"""Run state on the scheduler: runs survive workers that leave, never hang on
serialization, keep tasks from killing workers, fail fast on a lost
scheduler, stream states and logs to their own driver only, and stay flat.

Each test that kills or retires workers (or the scheduler) starts its own
real ``dask scheduler`` / ``dask worker`` processes and stops them by the
pids it recorded.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import dask
import psutil
import pytest
from common_tasks import Journal, journal, lose_a_result, use, wait_for_go
from conftest import Processes, dask_env
from distributed import Client, LocalCluster, get_worker

import daskflow as df

pytestmark = pytest.mark.timeout(180)


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- tasks (module level: the workers import this module) --------------------------


@df.task
def square(x):
    return x * x


@df.task
def gate(xs, where):
    """Sums its inputs once a flag file exists; says which worker it runs on."""
    with open(os.path.join(where, "gate-worker"), "w") as f:
        f.write(get_worker().address)
    flag = os.path.join(where, "go")
    deadline = time.time() + 60
    while not os.path.exists(flag) and time.time() < deadline:
        time.sleep(0.02)
    return sum(xs)


@df.flow
def squares_then_gate(where: str, n: int = 30):
    return gate(square.map(range(n)), where)


@df.task
def killed_once(where):
    """The first execution records its pid and waits to be killed."""
    marker = os.path.join(where, "first-pid")
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    return "done"


@df.flow
def dies_once(where: str):
    return killed_once(where)


def _run_in_thread(fn):
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: B036 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


# -- workers that leave --------------------------------------------------------------


def _gate_then(where, client, leave):
    """Run squares_then_gate; while gate runs, make another worker leave."""
    run = squares_then_gate.submit(str(where), cluster=client)
    wait_for(lambda: os.path.exists(where / "gate-worker"), what="gate to start")
    gate_worker = (where / "gate-worker").read_text()
    ran = {s.worker for name, s in run.states.items() if name.startswith("square[")}
    victims = sorted(w for w in ran if w and w != gate_worker)
    assert victims, f"no other worker ran a square: {ran}"
    leave(victims[0])
    (where / "go").write_text("")
    assert run.wait(60) is not None, "the run did not end"
    return run, victims[0]


def _assert_complete(run, left):
    assert run.state.is_completed(), run.summary()
    assert run.result() == sum(x * x for x in range(30))
    assert len(run.states) == 31 and all(s.is_completed() for s in run.states.values())
    assert any(s.worker == left for s in run.states.values())  # states of the worker that left


def test_retired_worker_takes_no_state_with_it(tmp_path, cleanup):
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        run, left = _gate_then(tmp_path, client,
                               lambda w: client.retire_workers([w], close_workers=True))
        _assert_complete(run, left)
        assert left not in client.scheduler_info()["workers"]


@pytest.mark.parametrize("nanny", [False, True], ids=["no-nanny", "nanny"])
def test_sigkilled_worker_after_its_tasks_takes_no_state(processes, tmp_path, nanny):
    processes.start_scheduler()
    for _ in range(3):
        processes.start_worker() if nanny else processes.start_worker("--no-nanny")
    with Client(processes.address, set_as_default=False) as client:
        client.wait_for_workers(3, timeout=60)
        pids = client.run(os.getpid)
        run, left = _gate_then(tmp_path, client, lambda w: os.kill(pids[w], signal.SIGKILL))
        _assert_complete(run, left)


@df.task(retries=1)
def fails_once(marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("the first attempt fails")
    return 10


@df.task
def add_up(x: int, go: int) -> int:
    return x + go


@df.flow
def retried_then_needed(marker: str, where: str):
    return add_up(fails_once(marker), wait_for_go(where))


def test_a_recomputed_task_keeps_the_history_of_its_first_run(processes, tmp_path):
    """A task failed, was retried and completed; the worker holding its result
    is SIGKILLed before the task that needs it runs, so Dask runs it again.
    Its state keeps all three attempts and says it was recomputed (the rerun's
    state used to replace the first run's: one attempt, the failure gone)."""
    run, first = lose_a_result(
        processes, str(tmp_path), lambda client: retried_then_needed.submit(
            str(tmp_path / "marker"), str(tmp_path), cluster=client, progress=False),
        "fails_once")
    assert first.attempts == 2
    assert run.result() == 11
    state = run.states["fails_once"]
    assert state.attempts == 3 and len(state.tries) == 3 and state.reruns == 1, state
    assert f"recomputed after its result was lost with worker {first.worker}" in state.message
    assert "(1 retry)" in run.summary()  # the rerun is not a retry


@df.flow
def opened_then_needed(path: str, where: str, form: str = "generator"):
    resource = journal(path, "db") if form == "generator" else Journal(path)
    with resource as handle:
        gate = wait_for_go(where)  # runs once the setup is done; waits for the test
        label = use(path, handle, "late", wait_for=[gate])
    return label


@pytest.mark.parametrize("form,name", [("generator", "journal"), ("class", "Journal")])
def test_a_setup_lost_with_its_worker_is_redone_and_says_so(processes, tmp_path, form, name):
    """The worker holding a resource's setup is SIGKILLed before the block's
    task that needs it runs: Dask runs the setup again elsewhere.  The loss is
    visible (the setup's state says it was recomputed, a WARNING names it) and
    the second setup is the one cleaned up; the first one's finisher died
    with its process."""
    processes.start_scheduler()
    for _ in range(2):
        processes.start_worker("--no-nanny")
    path = str(tmp_path / "events")
    with Client(processes.address, set_as_default=False, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)
        run = opened_then_needed.submit(path, str(tmp_path), form, cluster=client,
                                        progress=False)
        try:
            deadline = time.monotonic() + 60
            while not (run.states.get(name) is not None and run.states[name].is_completed()
                       and (tmp_path / "started").exists()):
                assert time.monotonic() < deadline and not run.done(), run.summary()
                time.sleep(0.05)
            lost = run.states[name].worker
            os.kill(pids[lost], signal.SIGKILL)
            (tmp_path / "go").touch()
            assert run.wait(60) is not None
        finally:
            run.cancel(timeout=60)
    assert run.result() == "late", run.summary()
    setup = run.states[name]
    assert setup.attempts == 2 and f"lost with worker {lost}" in setup.message, setup.message
    assert run.states[f"{name}.cleanup"].is_completed()
    with open(path) as f:
        events = [line.split(":")[0] for line in f.read().split()]
    opened = "open-db" if form == "generator" else "setup"
    closed = "close-db" if form == "generator" else "cleanup-conn"
    assert events.count(opened) == 2 and events.count(closed) == 1, events
    warned = [lg for lg in run.logs if lg["level"] == "WARNING" and "ran again" in lg["message"]]
    assert len(warned) == 1 and repr(name) in warned[0]["message"], run.logs


def test_sigkilled_worker_mid_task_reruns_and_says_so(processes, tmp_path):
    processes.start_scheduler()
    processes.start_worker("--nworkers", "2")  # nannies: a killed worker comes back
    with Client(processes.address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        thread, box = _run_in_thread(lambda: dies_once.run(str(tmp_path), cluster=client))
        wait_for(lambda: (tmp_path / "first-pid").exists(), what="the task to start")
        time.sleep(0.2)
        os.kill(int((tmp_path / "first-pid").read_text()), signal.SIGKILL)
        thread.join(60)
        run = box["value"]
        assert run.result() == "done"
        state = run.states["killed_once"]
        assert state.is_completed() and state.attempts == 2
        assert "lost 1 time" in state.message


@df.task
def retired_once(where):
    """The first execution records that it started, then runs for a while."""
    marker = os.path.join(where, "started")
    if not os.path.exists(marker):
        open(marker, "w").close()
        end = time.time() + 5
        while time.time() < end:
            time.sleep(0.05)
    return "done"


@df.flow
def on_a_retired_worker(where: str):
    return retired_once(where)


def test_a_task_whose_worker_retires_mid_run_reruns_and_says_so(processes, tmp_path):
    """Adaptive scaling retires a worker gracefully: Dask runs its task again
    elsewhere without counting it as suspicious; the state still says so."""
    processes.start_scheduler()
    processes.start_worker()
    processes.start_worker()
    with Client(processes.address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        thread, box = _run_in_thread(
            lambda: on_a_retired_worker.run(str(tmp_path), cluster=client))
        wait_for(lambda: (tmp_path / "started").exists(), what="the task to start")
        busy = [w for w, keys in client.processing().items() if keys]
        assert len(busy) == 1
        client.retire_workers(busy, close_workers=True)
        thread.join(60)
        run = box["value"]
        assert run.result() == "done"
        state = run.states["retired_once"]
        assert state.attempts == 2 and "lost 1 time" in state.message, state.message


# -- serialization never hangs ----------------------------------------------------


@df.task(resources={"A": 1})
def make_lock():
    return threading.Lock()


@df.task(resources={"B": 1})
def use_lock(lock):
    return type(lock).__name__


@df.flow
def lock_elsewhere():
    return use_lock(make_lock())


@df.flow
def lock_returned():
    return make_lock()


@df.resource
def connection():
    conn = sqlite3.connect(":memory:")
    yield conn
    conn.close()


@df.task(resources={"A": 1})
def query_on_a(conn):
    return conn.execute("select 1").fetchone()[0]


@df.task(resources={"B": 1})
def query_on_b(conn):
    return conn.execute("select 2").fetchone()[0]


@df.flow
def sqlite_flow():
    with connection() as conn:
        a = query_on_a(conn)
        b = query_on_b(conn)
    return a, b


@df.flow
def simple(n: int = 3):
    return square.map(range(n))


@pytest.fixture(scope="module")
def two_kinds_address(tmp_path_factory):
    """Two workers: one with resource A, one with resource B.  Shared by the
    tests below, each of which checks that it leaves them healthy."""
    procs = Processes(str(tmp_path_factory.mktemp("two-kinds")))
    try:
        procs.start_scheduler()
        procs.start_worker("--resources", "A=1")
        procs.start_worker("--resources", "B=1")
        yield procs.address
    finally:
        procs.stop()


@pytest.fixture
def two_kinds(two_kinds_address, cleanup):
    with Client(two_kinds_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def test_unpicklable_result_moved_between_workers_fails_its_task(two_kinds):
    run = lock_elsewhere.run(cluster=two_kinds)
    assert run.state.is_failed()
    used = run.states["use_lock"]
    assert used.name == "TriggerFailed"
    assert isinstance(used.exception, df.UnpicklableResultError)
    assert "'make_lock'" in str(used.exception) and "lock" in str(used.exception)
    assert "Return something picklable" in str(used.exception)
    with pytest.raises(df.UnpicklableResultError, match="make_lock"):
        run.result()
    assert simple(cluster=two_kinds) == [0, 1, 4]  # the workers are healthy


def test_unpicklable_returned_result_fails_the_run_clearly(two_kinds):
    run = lock_returned.run(cluster=two_kinds)
    assert run.state.is_failed()
    assert run.states["make_lock"].is_failed()
    with pytest.raises(df.UnpicklableResultError, match="'make_lock' \\(a lock\\)"):
        run.result()
    assert simple(cluster=two_kinds) == [0, 1, 4]


def test_unpicklable_resource_value_fails_only_the_task_that_needed_it_moved(two_kinds):
    run = sqlite_flow.run(cluster=two_kinds)
    states = run.states
    assert states["connection.cleanup"].is_completed()  # the cleanup ran
    outcomes = sorted((states["query_on_a"].name, states["query_on_b"].name))
    assert outcomes == ["Completed", "TriggerFailed"]  # only the one on the other worker
    assert run.state.is_failed()
    assert simple(cluster=two_kinds) == [0, 1, 4]


class TwoArgError(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


@df.task
def raise_two_arg():
    raise TwoArgError("x", "y")


@df.task
def exits():
    sys.exit(3)


@df.task
def interrupts():
    raise KeyboardInterrupt


@df.task
def closes_generator():
    raise GeneratorExit


@df.task(trigger=df.always_run)
def after(*upstream):
    return "cleaned up"


@df.flow
def misbehaving():
    a, b, c, d = raise_two_arg(), exits(), interrupts(), closes_generator()
    return after(a, b, c, d)


def test_bad_exceptions_and_exits_fail_tasks_not_workers(client):
    pids = client.run(os.getpid)
    run = misbehaving.run(cluster=client)
    states = run.states
    two = states["raise_two_arg"].exception
    assert isinstance(two, df.RemoteTaskError)
    assert two.type_name == "TwoArgError" and two.message == "x/y"
    assert "raise TwoArgError" in two.remote_traceback
    assert states["exits"].is_failed() and "SystemExit(3)" in states["exits"].message
    assert states["interrupts"].is_failed() and "KeyboardInterrupt" in states["interrupts"].message
    assert states["closes_generator"].is_failed()
    assert states["after"].is_completed()
    assert client.run(os.getpid) == pids  # no worker was restarted


def test_exits_on_sync_fail_the_task_and_the_run_returns():
    @df.flow
    def exits_only():
        return exits()

    run = exits_only.run(cluster="sync")
    assert run.states["exits"].is_failed()
    assert "SystemExit(3)" in run.states["exits"].message
    with pytest.raises(SystemExit):
        run.result()


@df.task
def describe(x):
    return str(x)


@pytest.mark.parametrize("shape", ["single", "map", "fused map", "fused chain", "chunked map"])
def test_unpicklable_constant_is_rejected_before_submission_naming_the_argument(client, shape):
    from plugins import GraphCounter, graph_counts

    plain = use_lock.with_options(resources=None)
    client.register_plugin(GraphCounter(), name="graph-counter")
    try:
        @df.flow
        def with_lock():
            if shape == "single":
                return plain(threading.Lock())
            if shape == "map":
                return plain.map([1, threading.Lock()])
            if shape == "chunked map":  # one Dask task runs both elements
                return plain.map([1, threading.Lock(), 3], chunk=3)
            if shape == "fused map":  # one task per element runs both maps
                describe.map(plain.map([1, threading.Lock()]))
                return None
            describe(plain(threading.Lock()))
            return None

        name = "use_lock[1]" if "map" in shape else "use_lock"
        with pytest.raises(df.FlowDefinitionError,
                           match=rf"task '{re.escape(name)}': argument 0 \(a lock\) cannot be sent"):
            with_lock.run(cluster=client)
        assert client.run_on_scheduler(graph_counts, client_id=client.id) == (0, 0)
    finally:
        client.unregister_scheduler_plugin("graph-counter")


# -- a lost scheduler -----------------------------------------------------------------


@df.flow
def waits(where: str):
    return gate([1], where)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_lost_scheduler_is_a_cluster_error_within_the_setting(processes, tmp_path, how):
    scheduler = processes.start_scheduler()
    processes.start_worker("--no-nanny")
    with Client(processes.address, set_as_default=False) as c:
        c.wait_for_workers(1, timeout=60)
    with dask.config.set({"daskflow.run.scheduler-timeout": "3s"}):
        thread, box = _run_in_thread(lambda: waits.run(str(tmp_path), cluster=processes.address))
        wait_for(lambda: (tmp_path / "gate-worker").exists(), what="the task to start")
        os.kill(scheduler.pid, how)
        lost_at = time.monotonic()
        thread.join(60)
        elapsed = time.monotonic() - lost_at
    assert not thread.is_alive()
    err = box.get("error")
    assert isinstance(err, df.ClusterError), box
    assert processes.address in str(err)
    if how == signal.SIGKILL:
        assert "lost the connection" in str(err)
        assert elapsed < 3, elapsed  # at once, not after the timeout
    else:
        assert "has not answered" in str(err)
        assert elapsed < 3 + 5 + 5, elapsed  # the timeout, a ping interval, the disconnect
    print(f"scheduler {how.name}: ClusterError after {elapsed:.2f}s")


def test_a_scheduler_restarted_on_its_address_serves_the_next_runs(processes, caplog):
    """A client reconnects by itself to a scheduler restarted on the same
    address, which knows none of daskflow's plugins: the next run installs
    them again (it used to hang, its worker dropped for an unknown message),
    and a run started while the client reconnects waits for it."""
    from daskflow.events import monitor as events

    caplog.set_level(logging.WARNING, logger="daskflow")
    scheduler = processes.start_scheduler()
    processes.start_worker("--no-nanny")
    port = processes.address.rsplit(":", 1)[1]
    with Client(processes.address, set_as_default=False, timeout=60) as c:
        c.wait_for_workers(1, timeout=60)
        assert simple(3, cluster=c) == [0, 1, 4]
        first = events.connection(c)
        os.killpg(scheduler.pid, signal.SIGKILL)  # its worker ends with it (no nanny)
        wait_for(lambda: c.status == "connecting", what="the client to notice")
        thread, box = _run_in_thread(lambda: simple(4, cluster=c, progress=False))
        time.sleep(0.5)  # the run is waiting for the client
        processes.start_scheduler(port)
        processes.start_worker("--no-nanny")
        thread.join(60)
        assert not thread.is_alive()
        assert box.get("value") == [0, 1, 4, 9], box
        assert events.connection(c) is not first
        run = simple.run(5, cluster=c)
        assert run.result() == [0, 1, 4, 9, 16]
        assert [s.name for s in run.states.values()] == ["Completed"] * 5
        plugins = c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
        assert "daskflow-run-events" in plugins
        assert len(c.scheduler_info()["workers"]) == 1  # no worker was dropped
    assert not [r for r in caplog.records if "no daskflow plugin" in r.getMessage()]


def test_a_run_on_a_scheduler_without_workers_says_so_and_waits(processes, caplog):
    caplog.set_level(logging.WARNING, logger="daskflow")
    processes.start_scheduler()
    with dask.config.set({"daskflow.run.scheduler-timeout": "2s"}):
        thread, box = _run_in_thread(lambda: simple(3, cluster=processes.address,
                                                    progress=False))
        wait_for(lambda: any("has had no workers" in r.getMessage() for r in caplog.records),
                 what="the warning")
        assert thread.is_alive()  # waiting, not failed
        processes.start_worker("--no-nanny")
        thread.join(60)
    assert box.get("value") == [0, 1, 4], box
    said = [r for r in caplog.records if "has had no workers" in r.getMessage()]
    assert len(said) == 1 and processes.address in said[0].getMessage()


def test_a_client_that_gave_up_reconnecting_leaves_no_thread(processes):
    """A sync Client that closed itself (its scheduler gone past its reconnect
    timeout) keeps its loop thread, and close() returns at once; daskflow's
    close_client stops it (distributed's ``cleanup`` fixture checks threads)."""
    from daskflow.clusters.base import close_client

    scheduler = processes.start_scheduler()
    client = Client(processes.address, set_as_default=False, timeout=1)
    try:
        os.killpg(scheduler.pid, signal.SIGKILL)
        wait_for(lambda: client.status == "closed", what="the client to give up")
        assert client._loop_runner.is_started()  # what upstream leaves behind
    finally:
        close_client(client)
    assert not client._loop_runner.is_started()


def test_a_closed_client_is_a_clear_error_before_anything_runs():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        c = Client(cluster, set_as_default=False)
        c.close()
        with pytest.raises(df.ClusterError, match="is closed.*open a new Client"):
            simple(2, cluster=c)


def _emit_without_plugin():
    from daskflow.events import queue

    class Run:
        owner, run_id = "nobody", "r0"

    queue.emit(get_worker(), Run(), state_msg={"k": "x"})
    time.sleep(0.5)  # the worker's loop sends (or not) meanwhile
    return True


def test_a_worker_whose_scheduler_lacks_the_plugin_is_not_dropped(caplog):
    """Sent to a scheduler without daskflow's stream handler, a state message
    would make it drop the worker: a worker without the plugin keeps it."""
    caplog.set_level(logging.WARNING, logger="daskflow")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as c:
        worker = next(iter(cluster.workers.values()))
        assert c.submit(_emit_without_plugin, pure=False).result(timeout=30)
        assert c.submit(_emit_without_plugin, pure=False).result(timeout=30)
        assert list(cluster.scheduler.workers) == [worker.address]
        warned = [r for r in caplog.records if "no daskflow plugin" in r.getMessage()]
        assert len(warned) == 1, warned  # once per worker


# -- no cross-talk ---------------------------------------------------------------------


@df.task
def speak(tag):
    df.get_run_logger().info("said %s", tag)
    return tag


@df.flow
def speaker(tag: str, n: int = 3):
    return speak.map([f"{tag}-{i}" for i in range(n)])


def _said(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("said ")]


def test_two_clients_in_one_process_see_only_their_own_runs(scheduler_address, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="daskflow")
    with Client(scheduler_address, set_as_default=False) as one, \
            Client(scheduler_address, set_as_default=False) as two:
        a = speaker.submit("one", cluster=one)
        b = speaker.submit("two", cluster=two)
        assert a.result() == ["one-0", "one-1", "one-2"]
        assert b.result() == ["two-0", "two-1", "two-2"]
    said = sorted(_said(caplog))
    assert said == sorted([f"said one-{i}" for i in range(3)] + [f"said two-{i}" for i in range(3)])


OTHER_DRIVER = """
import sys, daskflow as df
from test_runstate import speaker
run = speaker.run("other", n=20, cluster=sys.argv[1])
print(run.state.name)
"""


def test_another_drivers_logs_never_reach_this_one(scheduler_address, client, caplog):
    caplog.set_level(logging.INFO, logger="daskflow")
    other = subprocess.Popen([sys.executable, "-c", OTHER_DRIVER, scheduler_address],
                             env=dask_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for i in range(5):
            speaker(f"mine{i}", cluster=client)
        out, _ = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert out.decode().strip() == "Completed"
    said = _said(caplog)
    assert len(said) == 15 and not [m for m in said if "other" in m]


def test_eight_threads_in_one_process(client, caplog):
    caplog.set_level(logging.INFO, logger="daskflow")
    runs = {}

    def one(i):
        runs[i] = speaker.run(f"t{i}", n=i + 1, cluster=client)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, run in runs.items():
        assert run.result() == [f"t{i}-{j}" for j in range(i + 1)]
        assert sorted(run.states) == sorted(f"speak[{j}]" for j in range(i + 1))
    said = _said(caplog)
    assert len(said) == sum(range(1, 9)) == len(set(said))
    by_run = {r.daskflow_run for r in caplog.records if r.getMessage().startswith("said ")}
    assert by_run == {run.run_id for run in runs.values()}


# -- submit, live states, cancel ----------------------------------------------------------


def test_submit_returns_at_once_and_states_are_live(client, tmp_path):
    run = squares_then_gate.submit(str(tmp_path), n=4, cluster=client)
    assert not run.done()
    assert run.wait(0.01) is None
    wait_for(lambda: (tmp_path / "gate-worker").exists(), what="gate to start")
    wait_for(lambda: all(run.states[f"square[{i}]"].is_completed() for i in range(4)),
             what="the squares' states to arrive")
    assert run.states["gate"].is_pending()
    assert run.state.is_running()
    (tmp_path / "go").write_text("")
    assert run.wait(30).is_completed()
    assert run.done() and run.result() == 14
    assert run.states["gate"].is_completed()


@df.resource
def marked(where):
    yield where
    with open(os.path.join(where, "cleaned"), "w") as f:
        f.write("yes")


@df.flow
def long_with_resource(where: str):
    with marked(where) as w:
        out = gate([1], w)
    return out


def test_cancel_a_submitted_run_ends_its_resources(client, tmp_path):
    run = long_with_resource.submit(str(tmp_path), cluster=client)
    wait_for(lambda: (tmp_path / "gate-worker").exists(), what="gate to start")
    assert run.cancel(timeout=30) is True
    assert run.done() and run.state.is_cancelled(), run.summary()
    assert (tmp_path / "cleaned").read_text() == "yes"
    assert run.states["gate"].is_cancelled()
    with pytest.raises(df.FlowRunError, match="cancelled"):
        run.result()
    assert run.cancel() is False  # already over
    (tmp_path / "go").write_text("")  # let the orphaned gate task end


@df.flow
def two_steps(where: str):
    with marked(where) as w:
        out = square(wait_for_go(w))
    return out


def test_cancel_on_sync_takes_effect_before_the_next_task(tmp_path):
    run = two_steps.submit(str(tmp_path), cluster="sync")
    wait_for(lambda: (tmp_path / "started").exists(), what="the first step")
    assert run.cancel(timeout=0.1) is True  # the step in progress cannot be interrupted
    (tmp_path / "go").write_text("")
    assert run.wait(30).is_cancelled()
    assert run.states["wait_for_go"].is_completed()
    assert run.states["square"].is_cancelled()  # never started
    assert (tmp_path / "cleaned").read_text() == "yes"


# -- memory stays flat ------------------------------------------------------------------


@df.task
def peek(i):
    return len(df.context().parameters["blob"]) + i


@df.flow
def with_blob(blob: str):
    return peek.map(range(10))


def _rss():
    return psutil.Process().memory_info().rss


def test_three_hundred_runs_leave_memory_flat(client):
    blob = "x" * 50_000  # 50 kB: travels once per run as a key
    for _ in range(30):  # warm up caches and allocators
        assert with_blob.run(blob, cluster=client).result()[0] == 50_000
    before = (_rss(), client.run_on_scheduler(_rss), client.run(_rss))
    for _ in range(300):
        with_blob.run(blob, cluster=client)
    after = (_rss(), client.run_on_scheduler(_rss), client.run(_rss))
    mib = 2**20
    growth = {"driver": (after[0] - before[0]) / mib,
              "scheduler": (after[1] - before[1]) / mib,
              **{w: (after[2][w] - before[2][w]) / mib for w in after[2]}}
    print("RSS growth over 300 runs (MiB):", {k: round(v, 1) for k, v in growth.items()})
    assert all(v < 25 for v in growth.values()), growth


def test_parameters_travel_once_per_run_not_per_task(client):
    from daskflow.wire import INLINE_PARAMETERS

    blob = "x" * 50_000
    from daskflow.define.build import Builder
    from daskflow.driver.engine import Engine

    with Builder("with_blob") as b:
        with_blob.fn(blob)
    engine = Engine("with_blob", {"blob": blob}, b, None, client)
    from daskflow.driver.backends import DistributedBackend

    run_info = engine._run_info(DistributedBackend(client))
    assert run_info.parameters is None and run_info.params_key.startswith("params-")
    import pickle

    assert len(pickle.dumps(run_info)) < INLINE_PARAMETERS  # what every task carries


# -- the one private hook we use ----------------------------------------------------------


def test_scheduler_stream_handlers_still_take_plugins(client):
    """``Scheduler.stream_handlers`` is how daskflow's plugin receives worker
    messages (as distributed's own extensions do); fail loudly if it changes."""

    def check(dask_scheduler):
        from daskflow.events.codec import OP

        return isinstance(dask_scheduler.stream_handlers, dict) and OP in dask_scheduler.stream_handlers

    simple(cluster=client)
    assert client.run_on_scheduler(check)


@df.task
def runs_a_flow_in_process(n):
    return simple(n, cluster="sync")  # a whole flow on "sync" inside a Dask task


@df.flow
def flow_in_a_task():
    return runs_a_flow_in_process(4)


def test_a_sync_flow_inside_a_dask_task_keeps_its_states(client):
    assert flow_in_a_task(cluster=client) == [0, 1, 4, 9]


SCRIPT = """
import daskflow as df          # before distributed: spawned workers import this script first


@df.task
def parts(n):
    return [list(range(i)) for i in range(n)]


@df.task
def size(xs):
    return len(xs)


@df.flow
def sizes(n: int = 12):
    # one root task: the other worker's first contact with daskflow is
    # receiving that task's state
    return df.task(sum, name="total")(size.map(parts(n)))


if __name__ == "__main__":
    print("result", sizes(cluster=df.clusters.Local(n_workers=2, threads_per_worker=1)))
"""


def test_a_script_importing_daskflow_first_runs_on_spawned_workers(tmp_path):
    """Spawned workers import the user's script, hence daskflow, before
    distributed: they must still (de)serialize states (the demo once hung)."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=dask_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "result 66" in proc.stdout
    assert "No dispatch" not in proc.stderr
