"""How runs reach a cluster: one graph, what is gathered, what is closed."""

from __future__ import annotations

import logging
import os
import sys
import time

import dask
import psutil
import pytest
from common_tasks import inc, split, total
from distributed import Client

import daskflow as df

DRIVER_PID = os.getpid()


@df.flow
def wide(n: int = 500, chunk: int | None = None):
    return total(inc.map(range(n), chunk=chunk))


@df.flow
def dynamic(n: int = 10):
    return total(inc.map(split(n)))


def test_static_flow_is_one_graph_submission(client, counter):
    assert wide(n=2000, chunk=1, cluster=client) == sum(range(1, 2001))
    graphs, tasks = counter()
    assert graphs == 1
    assert tasks == 2001


def test_an_auto_chunked_map_runs_its_pilot_once_per_process(client, counter):
    @df.task
    def double(x):
        return 2 * x

    @df.flow
    def doubled(n: int):
        return total(double.map(range(n)))

    assert doubled(n=2000, cluster=client) == 2 * sum(range(2000))
    graphs, tasks = counter()
    assert graphs == 2  # the pilot's chunks, then the rest sized by them
    assert doubled(n=2000, cluster=client) == 2 * sum(range(2000))
    graphs2, tasks2 = counter()
    assert graphs2 - graphs == 1  # the measurement is remembered for the task
    assert tasks2 - tasks < 2000 / 10, tasks2 - tasks


def test_dynamic_map_adds_one_stage(client, counter):
    assert dynamic(n=50, cluster=client) == sum(range(1, 51))
    graphs, _ = counter()
    assert graphs == 2  # split + its length, then the expanded map and the sum


def test_bad_parameters_rejected_before_submission(client, counter):
    with pytest.raises(df.ParameterError, match=r"unknown parameter\(s\) 'm'.*parameters are: n"):
        wide.run(m=3, cluster=client)
    with pytest.raises(df.ParameterError, match="parameter 'n' of flow 'wide' must be int, got str"):
        wide.run(n="three", cluster=client)  # ("3" is coerced to 3, as Prefect does)

    @df.flow
    def needs(x: int):
        return inc(x)

    with pytest.raises(df.ParameterError, match="missing a required argument: 'x'"):
        needs.run(cluster=client)
    assert counter() == (0, 0)


def test_type_hints_understood():
    @df.flow
    def typed(a: float, b: list[int], c: int | None = None, d: str = "x"):
        return None

    typed.bind(1, [1], None)  # an int is a float, None matches Optional
    with pytest.raises(df.ParameterError, match="'b'.*must be list"):
        typed.bind(1.0, 1)
    with pytest.raises(df.ParameterError, match="'c'"):
        typed.bind(1.0, [], "no")
    with pytest.raises(df.ParameterError, match="parameter 'c' of flow 'typed' must be int"):
        typed.bind(1.0, [], True)  # a bool is an int to Python, not to a user
    with pytest.raises(df.ParameterError, match="'a'"):
        typed.bind(False, [])


def test_an_unpicklable_parameter_is_named_and_the_run_goes_on(client, caplog):
    import threading

    @df.flow
    def guarded(n: int, lock: object = None):
        with lock:  # used in the body only
            return inc.map(range(n))

    caplog.set_level(logging.WARNING, logger="daskflow")
    assert guarded(2, threading.Lock(), cluster=client) == [1, 2]
    said = [r.getMessage() for r in caplog.records if "cannot be pickled" in r.getMessage()]
    assert len(said) == 1 and "parameter 'lock' of flow 'guarded' (a lock)" in said[0], said


def test_passed_client_is_left_open(client):
    assert wide(n=10, cluster=client) == 55
    assert client.status == "running"
    assert client.submit(sum, [1, 2]).result() == 3


def test_address_string_connects_and_disconnects(scheduler_address, client):
    before = len(client.scheduler_info()["workers"])
    run = dynamic.run(n=5, cluster=scheduler_address)
    assert run.result() == 15
    assert scheduler_address in run.cluster
    assert len(client.scheduler_info()["workers"]) == before  # the cluster is untouched


def test_default_client_is_used(scheduler_address, cleanup):
    with Client(scheduler_address) as c:  # becomes the default client
        run = dynamic.run(n=3)
        assert c.scheduler.address in run.cluster
        assert c.status == "running"


def test_temporary_local_cluster_is_closed(cleanup):
    me = psutil.Process()
    before = {p.pid for p in cluster_processes(me)}  # e.g. the session's own test cluster
    with dask.config.set({"daskflow.local.n-workers": 1, "daskflow.local.threads-per-worker": 1}):
        run = dynamic.run(n=4)
    assert run.result() == 10
    assert "LocalCluster" in run.cluster
    deadline = time.monotonic() + 10
    while new_processes(me, before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert new_processes(me, before) == []


def new_processes(proc, before):
    return [p for p in cluster_processes(proc) if p.pid not in before]


def cluster_processes(proc):
    """Child processes, less Python's multiprocessing resource tracker (it
    lives as long as this process, whatever daskflow does)."""
    return [p for p in proc.children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())]


def test_unreachable_address_is_a_clear_error(cleanup):
    start = time.monotonic()
    with pytest.raises(df.ClusterError, match="could not connect.*127.0.0.1:9"):
        dynamic.run(cluster="tcp://127.0.0.1:9")
    assert time.monotonic() - start < 5  # refused at once, not after a 30 s retry loop


def test_bad_cluster_value_rejected_early():
    with pytest.raises(df.ClusterError, match="not something daskflow can run on"):
        dynamic.run(cluster=3.5)
    with pytest.raises(df.ClusterError, match="neither an address"):
        dynamic.run(cluster="no-such-profile")


class Bomb:
    """Explodes if unpickled in the test (driver) process."""

    def __reduce__(self):
        return (_unpickle_bomb, ())


def _unpickle_bomb():
    if os.getpid() == DRIVER_PID:
        raise AssertionError("a task result was pulled to the driver")
    return Bomb()


@df.task
def make_bomb():
    return Bomb()


@df.task
def defuse(b):
    return type(b).__name__


@df.flow
def bombs():
    return defuse.map([make_bomb() for _ in range(4)])


def test_states_never_gather_results(client):
    run = bombs.run(cluster=client)
    assert run.result() == ["Bomb"] * 4  # only the returned strings came back
    assert run.states["make_bomb"].is_completed()
    with pytest.raises(df.ResultNotAvailable, match="stayed on the cluster"):
        run.states["make_bomb"].result()


@df.task
def chatty(x):
    df.get_run_logger().info("hello from pid %s item %s", os.getpid(), x)
    return x


@df.flow
def talk():
    return chatty.map([1, 2])


def test_logs_from_worker_tasks_reach_the_driver(client, caplog):
    caplog.set_level(logging.INFO, logger="daskflow")
    talk(cluster=client)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        remote = [r for r in caplog.records if r.getMessage().startswith("hello from pid")]
        if len(remote) == 2:
            break
        time.sleep(0.05)
    assert len(remote) == 2
    assert all(int(r.getMessage().split()[3]) != os.getpid() for r in remote)
    assert {r.daskflow_task for r in remote} == {"talk/chatty[0]", "talk/chatty[1]"}


@df.task
def careful():
    try:
        {}["missing"]
    except KeyError:
        df.get_run_logger().error("lookup failed", exc_info=True)
    return 1


def test_a_logged_exception_keeps_its_traceback(on, caplog, tmp_path):
    """logger.error(..., exc_info=True) in a task: the traceback reaches the
    driver's console, the run's logs, its JSON record and its report."""
    @df.flow
    def f():
        return careful()

    caplog.set_level(logging.INFO, logger="daskflow")
    run = f.run(cluster=on)
    (entry,) = [lg for lg in run.logs if lg["message"] == "lookup failed"]
    assert "KeyError: 'missing'" in entry["traceback"] and "{}[\"missing\"]" in entry[
        "traceback"]
    (shown,) = [r for r in caplog.records if r.getMessage() == "lookup failed"]
    assert "KeyError: 'missing'" in (shown.exc_text or "")
    with open(run.report(str(tmp_path / "r.html"))) as page:
        assert "KeyError: &#x27;missing&#x27;" in page.read()


def test_logs_in_sync_mode(caplog):
    caplog.set_level(logging.INFO, logger="daskflow")
    talk(cluster="sync")
    assert len([r for r in caplog.records if r.getMessage().startswith("hello from pid")]) == 2


@df.task(retries=1)
def frame(i):
    if i == 1:
        raise ValueError(f"bad frame {i}")
    return i


@df.flow
def frames():
    return frame.map(range(3))


def test_a_failed_task_and_a_failed_run_are_error_lines(on, caplog):
    """One ERROR line per failed task (after its retries), labelled, and the
    run's last line at ERROR, as Prefect logs them."""
    caplog.set_level(logging.INFO, logger="daskflow")
    run = frames.run(cluster=on)
    assert run.state.is_failed()
    failed = [r for r in caplog.records if r.getMessage().startswith("failed")]
    assert [(r.levelname, r.daskflow_task, r.getMessage()) for r in failed] == [
        ("ERROR", "frames/frame[1]", "failed after 2 attempts: ValueError: bad frame 1")]
    last = [r for r in caplog.records if r.getMessage().startswith("Flow run 'frames'")]
    assert [r.levelname for r in last] == ["ERROR"]


def test_a_run_stopped_by_an_error_while_submitting_ends_failed(client, caplog):
    """Not 'interrupted' and Cancelled: Failed, with its error named (the task
    closes over a lock, so it cannot be sent)."""
    import threading

    caplog.set_level(logging.INFO, logger="daskflow")
    lock = threading.Lock()

    @df.task
    def guarded(x):
        with lock:
            return x

    @df.flow
    def locked():
        return guarded(1)

    run = locked.submit(cluster=client, progress=False)
    assert run.wait(60) is not None
    assert run.state.is_failed() and "FlowDefinitionError" in run.state.message
    with pytest.raises(df.FlowDefinitionError, match="task 'guarded' cannot be sent"):
        run.result()
    said = [r for r in caplog.records if "failed with FlowDefinitionError" in r.getMessage()]
    assert [r.levelname for r in said] == ["ERROR"]


def test_unpicklable_task_is_a_clear_error_before_submission(client, counter):
    import threading

    lock = threading.Lock()

    @df.task
    def holds_lock():
        with lock:
            return 1

    @df.flow
    def locked():
        return holds_lock()

    with pytest.raises(df.FlowDefinitionError, match="'holds_lock' cannot be sent to the workers"):
        locked.run(cluster=client)
    assert counter() == (0, 0)
    assert locked(cluster="sync") == 1  # in process nothing is pickled


def test_a_task_the_workers_cannot_load_is_named_before_submitting(client):
    """A worker that cannot unpickle what it is sent fails the task (or, on a
    LocalCluster, leaves the cluster, and the run used to wait for workers):
    the task's module is checked on the workers first, once per connection."""
    import types

    module = types.ModuleType("only_in_the_driver")
    exec("def twice(x):\n    return 2 * x\n", module.__dict__)
    sys.modules["only_in_the_driver"] = module
    try:
        twice = df.task(module.twice)

        @df.flow
        def unloadable():
            return twice(2)

        with pytest.raises(df.FlowDefinitionError,
                           match="'twice' is defined in module 'only_in_the_driver', which the "
                                 "workers cannot import.*upload_file"):
            unloadable.run(cluster=client)
        assert wide(n=2, cluster=client) == 3  # every worker is still there
        assert len(client.scheduler_info()["workers"]) == 2
    finally:
        del sys.modules["only_in_the_driver"]


STDIN_SCRIPT = """
import daskflow as df

@df.task
def inc(x):
    return x + 1

@df.flow
def f(n: int = 3):
    return inc.map(range(n))

print("result", f(progress=False{cluster}))
"""


def test_a_script_from_standard_input_runs_on_the_default_cluster(tmp_path):
    """`python - <<EOF`: worker processes cannot import the script again, so
    the temporary cluster's workers are threads; an explicit process cluster
    says why it cannot start."""
    import subprocess
    import sys

    from conftest import dask_env

    def run(cluster=""):
        return subprocess.run([sys.executable, "-"], input=STDIN_SCRIPT.format(cluster=cluster),
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=dask_env())

    done = run()
    assert done.returncode == 0 and "result [1, 2, 3]" in done.stdout, done.stderr
    assert "read from standard input" in done.stderr
    refused = run(", cluster=df.clusters.Local(n_workers=1)")
    assert refused.returncode == 1
    assert "read from standard input" in refused.stderr and "FileNotFoundError" not in refused.stderr


def test_workers_drop_distributeds_cancelled_execution_warning(client):
    """A cancel makes each running task's worker log 'Async instruction ...
    ended with CancelledError' (pink in a notebook); daskflow's worker plugin
    drops that one line, and only it."""
    import logging as _logging

    from daskflow.events.plugins import quiet_cancel

    def record(msg):
        return _logging.LogRecord("distributed.worker.state_machine", _logging.WARNING,
                                  __file__, 1, msg, (), None)

    assert not quiet_cancel(record("Async instruction for <Task cancelled "
                                   "name=\"execute('x')\"> ended with CancelledError"))
    assert quiet_cancel(record("Async instruction for <Task> ended with OSError"))
    assert wide(n=2, cluster=client) == 3  # daskflow's plugins are on the workers

    def installed():
        logger = _logging.getLogger("distributed.worker.state_machine")
        return any(getattr(f, "__name__", "") == "quiet_cancel" for f in logger.filters)

    assert all(client.run(installed).values())

