"""Shared fixtures: real Dask clusters, and leak checks from distributed.

``scheduler_address`` starts one ``dask scheduler`` and one ``dask worker``
(two worker processes, one thread each) as subprocesses for the session;
they are not children of ``multiprocessing``, so distributed's ``cleanup``
fixture (which kills those) leaves them alone while it checks each test
for leaked threads, processes and Client instances.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Nothing a test does may touch the developer's home directory: the session,
# and every process it starts, gets a home of its own (before dask is
# imported, so dask's config folders are inside it too).  Records of started
# clusters, cluster profiles and dask's config all resolve in there.
# Processes the session starts (dask workers import the test modules, and so
# this file) inherit the session's home instead of making one of their own.
# (Emulated Kubernetes pods pass on HOME but not other variables.)
_INHERITED = os.environ.get("DASKFLOW_TESTS_HOME") or (
    os.path.expanduser("~") if os.path.basename(os.path.expanduser("~")).startswith(
        "daskflow-tests-home-") else None)
REAL_HOME = os.environ.get("DASKFLOW_TESTS_REAL_HOME") or os.path.expanduser("~")
SESSION_HOME = _INHERITED or tempfile.mkdtemp(prefix="daskflow-tests-home-")
OWNS_HOME = _INHERITED is None
os.environ.update({"HOME": SESSION_HOME, "DASKFLOW_TESTS_HOME": SESSION_HOME,
                   "DASKFLOW_TESTS_REAL_HOME": REAL_HOME})
_WATCHED = [os.path.join(REAL_HOME, p) for p in
            (".local/state/daskflow", ".config/daskflow", ".config/dask")]


def _home_snapshot() -> dict[str, list]:
    out = {}
    for root in _WATCHED:
        entries = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    entries.append((path, os.stat(path).st_mtime_ns))
                except OSError:
                    pass
        out[root] = sorted(entries)
    return out


_HOME_BEFORE = _home_snapshot() if OWNS_HOME else {}

import pytest  # noqa: E402 - after the home is set, before dask reads it
from distributed import Client  # noqa: E402
from distributed.utils_test import cleanup, loop, loop_in_thread  # noqa: F401, E402 - fixtures
from plugins import GraphCounter, graph_counts  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
# The tests mirror the package in folders without __init__.py: pytest imports
# each test module by its own name (``test_semantics``), and the dask
# processes the tests start import them (and the tasks in them) by that name,
# so every folder of tests is on their path.
TEST_DIRS = [TESTS, *sorted(
    os.path.join(TESTS, d) for d in os.listdir(TESTS)
    if os.path.isdir(os.path.join(TESTS, d))
    and any(f.startswith("test_") and f.endswith(".py") for f in os.listdir(os.path.join(TESTS, d))))]
TEST_PATH = os.pathsep.join(TEST_DIRS)
SHUTDOWN_TIMES: dict[str, float] = {}  # filled by the shutdown tests, shown in the summary
NOTEBOOKS_RUN: list[str] = []  # filled by test_notebooks, counted in the summary


def pytest_configure(config):
    """A base temporary folder of this run's own: two test sessions on one
    machine (two clones, say) never share pytest's /tmp/pytest-of-<user>."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="daskflow-pytest-")
        config._daskflow_basetemp = config.option.basetemp


def pytest_sessionfinish(session, exitstatus):
    if OWNS_HOME and _home_snapshot() != _HOME_BEFORE:
        session.config._daskflow_home_touched = True
        session.exitstatus = 1


def pytest_unconfigure(config):
    if OWNS_HOME:
        shutil.rmtree(SESSION_HOME, ignore_errors=True)
    base = getattr(config, "_daskflow_basetemp", None)
    if base:
        shutil.rmtree(base, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if getattr(terminalreporter.config, "_daskflow_home_touched", False):
        terminalreporter.section("home directory touched", red=True)
        terminalreporter.write_line(f"the tests wrote under {REAL_HOME}: {_WATCHED}")
    if NOTEBOOKS_RUN:
        terminalreporter.section("notebooks")
        terminalreporter.write_line(f"{len(NOTEBOOKS_RUN)} notebooks executed without error: "
                                    f"{', '.join(NOTEBOOKS_RUN)}")
    if SHUTDOWN_TIMES:
        terminalreporter.section("measured shutdown times")
        for label, seconds in SHUTDOWN_TIMES.items():
            terminalreporter.write_line(f"{label}: {seconds:.2f}s")
ROOT = os.path.dirname(TESTS)


def dask_env() -> dict[str, str]:
    """The environment for dask processes: tests importable, quiet logs."""
    path = [*TEST_DIRS, ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                 if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path),
            "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


def start_cluster(directory: str, nworkers: int = 2) -> tuple[str, list[subprocess.Popen]]:
    """Start `dask scheduler` and `dask worker` processes; return the address."""
    sfile = os.path.join(directory, "scheduler.json")
    with open(os.path.join(directory, "cluster.log"), "ab") as log:
        return _start(sfile, log, nworkers)


def _start(sfile: str, log, nworkers: int) -> tuple[str, list[subprocess.Popen]]:
    env = dask_env()
    sched = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sfile],
        env=env, stdout=log, stderr=log, start_new_session=True)
    procs = [sched]
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sfile):
            if time.monotonic() > deadline or sched.poll() is not None:
                raise RuntimeError("dask scheduler did not start; see cluster.log")
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", sfile,
             "--nworkers", str(nworkers), "--nthreads", "1", "--no-dashboard",
             "--resources", "FOO=2",
             "--host", "127.0.0.1"],
            env=env, stdout=log, stderr=log, start_new_session=True))
        with Client(scheduler_file=sfile, timeout=60) as c:
            c.wait_for_workers(nworkers, timeout=60)
            address = c.scheduler.address
    except BaseException:
        stop_cluster(procs)
        raise
    return address, procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def scheduler_address(tmp_path_factory):
    address, procs = start_cluster(str(tmp_path_factory.mktemp("cluster")))
    yield address
    stop_cluster(procs)


@pytest.fixture
def client(scheduler_address, cleanup):  # noqa: F811 - distributed's fixture
    with Client(scheduler_address, set_as_default=False) as c:
        yield c


@pytest.fixture
def counter(client):
    """A callable: (graph submissions, tasks) this client made on the scheduler."""
    client.register_plugin(GraphCounter(), name="graph-counter")
    yield lambda: client.run_on_scheduler(graph_counts, client_id=client.id)
    client.unregister_scheduler_plugin("graph-counter")


@pytest.fixture
def graph_bytes(client, monkeypatch):
    """The serialized size of every graph this client sends to the scheduler
    (Client._send_to_scheduler is private: a spy for tests only)."""
    from distributed.utils import nbytes

    sizes = []
    send = client._send_to_scheduler

    def spy(msg):
        if msg.get("op") == "update-graph":
            ser = msg["expr_ser"]
            sizes.append(sum(nbytes(f) for f in ser.frames))
        return send(msg)

    monkeypatch.setattr(client, "_send_to_scheduler", spy)
    return sizes


@pytest.fixture(params=["sync", "distributed"])
def on(request):
    """Run a test on Dask's synchronous scheduler and on the real cluster."""
    if request.param == "sync":
        return "sync"
    return request.getfixturevalue("client")


@pytest.fixture(scope="session", autouse=True)
def cluster_records(tmp_path_factory):
    """Keep records of started clusters out of the user's home, and Dask's
    scratch space (and its lock files) out of /tmp, during tests; every dask
    process the tests start inherits the setting."""
    import dask

    path = str(tmp_path_factory.mktemp("state"))
    scratch = str(tmp_path_factory.mktemp("scratch"))
    # As environment variables too, so that dask.config.refresh() keeps them.
    env = {"DASK_TEMPORARY_DIRECTORY": scratch, "DASK_DASKFLOW__LIFECYCLE__STATE_DIR": path}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with dask.config.set({"daskflow.lifecycle.state-dir": path, "temporary-directory": scratch}):
            yield path
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def kube_emulator(tmp_path_factory):
    """The EMULATED Kubernetes cluster (tests/emulated_kubernetes) with the
    real Dask operator, shared by the session; pods can import the tests."""
    from emulated_kubernetes import EmulatedKubernetes

    emulator = EmulatedKubernetes(str(tmp_path_factory.mktemp("kube")), env=dask_env())
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def kube(kube_emulator, monkeypatch):
    """KUBECONFIG pointing at the emulated cluster, a 3 s lease, and an empty
    cluster afterwards (every DaskCluster deleted, every pod process ended)."""
    import dask

    monkeypatch.setenv("KUBECONFIG", kube_emulator.kubeconfig)
    # resource-timeout: how long KubeCluster waits for the operator to act on
    # its DaskCluster (60 s by default); under load (two suites at once on 2
    # cores) the operator can take longer, which is not what these tests test.
    with dask.config.set({"daskflow.lifecycle.lease": "3s",
                          "kubernetes.scheduler-service-type": "LoadBalancer",
                          "kubernetes.resource-timeout": 240}):
        yield kube_emulator
    kube_emulator.delete_all()
    assert kube_emulator.wait_until_empty(60) is not None, "the emulated cluster was left with pods"
    _close_comms_to_pods()
    # A leak fails the test that made it, with one upstream exception: every
    # ``await kr8s.asyncio.api()`` re-reads the kubeconfig (anyio.open_file),
    # and KubeCluster cancels its status watcher when its start ends; a
    # watcher cancelled mid-read drops that file unclosed.  Only that file's
    # warning is ignored (here and in test_kubernetes' marks).
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"unclosed file .*kubeconfig", category=ResourceWarning)
        gc.collect()


def _close_comms_to_pods(timeout: float = 10) -> None:
    """Under load, a ``set_metadata`` call of KubeCluster's periodic cluster-info
    sync can still be open to a scheduler pod after the cluster closed; it
    would fail the next test's leak check.  Wait for such comms (pods live on
    127.N.x.y with N >= 64), then abort what is left."""
    import re

    from distributed.comm.core import Comm

    pod = re.compile(r"tcp://127\.(\d+)\.")

    def to_pods():
        out = []
        for c in list(Comm._instances):
            m = pod.match(str(getattr(c, "peer_address", "")))
            if m and int(m.group(1)) >= 64 and not c.closed():
                out.append(c)
        return out

    deadline = time.monotonic() + timeout
    while to_pods() and time.monotonic() < deadline:
        time.sleep(0.1)
    for comm in to_pods():
        comm.abort()


# -- a cluster of our own, processes recorded by pid -----------------------------


class Processes:
    """A scheduler and workers started as subprocesses; stopped by pid."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.sfile = os.path.join(directory, "scheduler.json")
        self.log = open(os.path.join(directory, "cluster.log"), "ab")
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def start_scheduler(self, port: str = "0") -> subprocess.Popen:
        with _suppress():
            os.remove(self.sfile)  # a scheduler started again writes it anew
        proc = self._popen(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                            port, "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                            self.sfile])
        deadline = time.monotonic() + 60
        while not os.path.exists(self.sfile):
            assert proc.poll() is None and time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.05)
        import json

        with open(self.sfile) as f:
            self.address = json.load(f)["address"]
        return proc

    def start_worker(self, *args: str) -> subprocess.Popen:
        return self._popen(["distributed.cli.dask_worker", "--scheduler-file", self.sfile,
                            "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1", *args])

    def _popen(self, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", *argv], env=dask_env(), stdout=self.log,
                                stderr=self.log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=30)
        self.log.close()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] in (ProcessLookupError, FileNotFoundError)


@pytest.fixture
def processes(tmp_path, cleanup):  # noqa: F811 - distributed's fixture
    procs = Processes(str(tmp_path))
    try:
        yield procs
    finally:
        procs.stop()
