"""Cluster specs: lifecycles, profiles, and the end of what daskflow starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import dask
import psutil
import pytest
from conftest import SHUTDOWN_TIMES as TIMINGS
from conftest import TESTS, dask_env, start_cluster, stop_cluster
from services import seconds_until
from shutdown import drive

import daskflow as df
from daskflow import cli
from daskflow.clusters.records import records


@df.task
def add(x, y):
    return x + y


@df.flow
def small(x: int = 1):
    return add(x, 1)


def gone(pids, timeout=30.0):
    """Seconds until every pid has exited, or None if some are still alive."""
    return seconds_until(lambda: not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        for p in pids), timeout, interval=0.05)


def test_local_as_context_manager(cleanup):
    spec = df.clusters.Local(n_workers=1, threads_per_worker=1)
    with spec as client:
        assert client.submit(sum, [1, 2]).result() == 3
        pids = list(client.run(os.getpid).values())
        [record] = records.all()
        assert record["name"].startswith("daskflow-local-")
        assert sorted(p["pid"] for p in record["processes"]) == sorted(pids)
    assert gone(pids, 10) is not None
    assert records.all() == []
    with spec as client:  # a spec is a description: every use opens a new cluster
        assert client.submit(sum, [2, 2]).result() == 4
    assert records.all() == []


def test_a_handle_has_one_life(cleanup):
    spec = df.clusters.Local(n_workers=1, processes=False)
    handle = spec.open()
    assert handle.state is df.clusters.Lifecycle.NEW
    with handle as client:
        assert handle.state is df.clusters.Lifecycle.RUNNING
        assert client.submit(sum, [1, 2]).result() == 3
        with pytest.raises(df.ClusterError, match="already running"):
            handle.start()
    assert handle.state is df.clusters.Lifecycle.CLOSED
    handle.close()  # idempotent
    with pytest.raises(df.ClusterError, match="Cannot reopen"):
        handle.start()


def test_a_spec_is_immutable_and_pickles_as_its_description():
    import pickle

    spec = df.clusters.Local(n_workers=1, processes=False, name="mine")
    with pytest.raises(AttributeError, match="immutable"):
        spec.name = "other"
    copy = pickle.loads(pickle.dumps(spec))
    assert (copy.name, copy.kwargs) == ("mine", {"n_workers": 1, "processes": False})
    assert copy.open().name == "mine"


def test_a_spec_reused_for_five_runs_starts_five_clusters_and_leaves_none(cleanup):
    spec = df.clusters.Local(n_workers=1, threads_per_worker=1)
    seen = []

    @df.task
    def where():
        from distributed import get_worker

        return get_worker().scheduler.address, os.getpid()

    @df.flow
    def locate():
        return where()

    for _ in range(5):
        seen.append(locate(cluster=spec))
    assert len({address for address, _ in seen}) == 5  # five schedulers
    assert gone([pid for _, pid in seen], 10) is not None  # and all their workers ended
    assert records.all() == []


def test_local_as_cluster_value(cleanup):
    spec = df.clusters.Local(n_workers=1, threads_per_worker=1)
    assert small(2, cluster=spec) == 3
    assert small(3, cluster=spec) == 4  # each run opens (and closes) a cluster of its own
    assert records.all() == []


def test_flow_default_cluster_spec(cleanup):
    @df.flow(cluster=df.clusters.Local(n_workers=1, processes=False))
    def pinned():
        return add(1, 1)

    assert pinned() == 2
    assert pinned() == 2  # a spec given as a flow default serves every run


@df.task
def use_cluster(handle, x):
    with handle.client() as c:
        return c.submit(sum, [x, 10]).result(), handle.name


@df.task
def after(values):
    return [v for v, _ in values]


def one_step_on(spec):
    """A flow whose middle step runs its tasks on the cluster of ``spec``."""

    @df.flow
    def heavy():
        with spec as handle:
            parts = use_cluster.map(df.unmapped(handle), [1, 2])
        return after(parts)

    return heavy


def test_cluster_as_a_resource_in_a_flow(client):
    spec = df.clusters.Local(n_workers=1, threads_per_worker=1, processes=False)
    run = one_step_on(spec).run(cluster=client)
    assert run.result() == [11, 12]
    cleanup_state = next(s for n, s in run.states.items() if n.endswith(".cleanup"))
    assert cleanup_state.is_completed()
    assert run.states["use_cluster[0]"].is_completed()


def test_address_attaches_and_never_shuts_down(scheduler_address, client):
    workers = len(client.scheduler_info()["workers"])
    spec = df.clusters.Address(scheduler_address)
    assert small(5, cluster=spec) == 6
    assert not spec.temporary
    assert len(client.scheduler_info()["workers"]) == workers
    assert records.all() == []  # attaching is not starting: nothing to record


def test_address_errors(cleanup):
    with pytest.raises(df.ClusterError, match="expected a scheduler address"):
        df.clusters.Address("not an address")
    start = time.monotonic()
    with pytest.raises(df.ClusterError, match="127.0.0.1:9"):
        with df.clusters.Address("tcp://127.0.0.1:9"):
            pass
    assert time.monotonic() - start < 5


def test_profiles_from_config_and_repo_folder(cleanup):
    with dask.config.set({"daskflow.clusters.tiny": {"kind": "local", "n-workers": 1,
                                                      "processes": False}}):
        assert small(1, cluster="tiny") == 2
        assert isinstance(df.clusters.from_profile("tiny"), df.clusters.Local)
    with dask.config.set({"daskflow.clusters.bad": {"kind": "mainframe"}}):
        with pytest.raises(df.ClusterError, match="kind='mainframe'"):
            small(1, cluster="bad")
    with dask.config.set({"daskflow.profile-dirs": [os.path.join(os.path.dirname(TESTS), "clusters")]}):
        shipped = df.clusters.profiles()
    assert {"local", "shared-scheduler", "kubernetes", "coiled", "slurm", "ssh", "gateway"} <= set(shipped)
    with dask.config.set({"daskflow.profile-dirs": [os.path.join(os.path.dirname(TESTS), "clusters")]}):
        for name in shipped:  # each shipped example is a valid description
            assert df.clusters.from_profile(name).kind == shipped[name]["kind"]


class SlowLocal(df.clusters.Local):
    """A real LocalCluster that takes longer to come up than allowed."""

    made: list = []

    def _create(self, handle):
        time.sleep(1.5)
        client, cluster = super()._create(handle)
        SlowLocal.made.append(cluster)
        return client, cluster


def test_startup_timeout_tears_down_a_late_cluster(cleanup):
    SlowLocal.made.clear()
    spec = SlowLocal(n_workers=1, processes=False, startup_timeout=0.3)
    start = time.monotonic()
    with pytest.raises(df.ClusterError, match="did not start within 0.3s"):
        spec.open().start()
    assert time.monotonic() - start < 1.0
    deadline = time.monotonic() + 15
    while not (SlowLocal.made and SlowLocal.made[0].status.name == "closed"):
        assert time.monotonic() < deadline, "the late cluster was not torn down"
        time.sleep(0.05)
    for t in threading.enumerate():
        if t.name.startswith("start daskflow"):
            t.join(10)


def test_unclosed_handle_warns_and_closes(cleanup):
    handle = df.clusters.Local(n_workers=1, processes=False).open()
    handle.start()
    with pytest.warns(ResourceWarning, match="never closed"):
        handle.__del__()
    assert handle.state is df.clusters.Lifecycle.CLOSED


def run_driver(mode, tmp_path, signal_to_send=None, address=None):
    """Run tests/drivers/local_driver.py; return its cluster's pids and the
    seconds from the driver's end (or the signal) until they are all gone."""
    out = str(tmp_path / f"{mode}-{signal_to_send}.json")
    env = {**dask_env(), "DASK_DASKFLOW__LIFECYCLE__STATE_DIR": records.directory()}
    proc = subprocess.Popen([sys.executable, os.path.join(TESTS, "drivers", "local_driver.py"),
                             mode, out, *([address] if address else [])], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info, code, start = drive(proc, out, signal_to_send, 60, 60)
    return info, code, (None if address else gone(info["pids"])), start


@pytest.mark.parametrize("mode,sig", [("normal", None), ("raise", None), ("wait", signal.SIGINT),
                                      ("wait", signal.SIGTERM), ("wait", signal.SIGKILL)])
def test_local_cluster_ends_with_its_driver(tmp_path, mode, sig):
    info, code, seconds, start = run_driver(mode, tmp_path, sig)
    label = mode if sig is None else signal.Signals(sig).name
    assert seconds is not None, f"{label}: cluster processes {info['pids']} outlived the driver"
    TIMINGS[f"Local, driver {label}"] = time.monotonic() - start
    # Python ends by re-raising SIGINT after an uncaught KeyboardInterrupt (status -2)
    expected = {"normal": 0, "raise": 1}.get(mode, {signal.SIGINT: -2, signal.SIGTERM: 143,
                                                    signal.SIGKILL: -9}.get(sig))
    assert code == expected
    names = [r["name"] for r in records.all()]
    if sig == signal.SIGKILL:  # nothing ran in the driver: the record stays, marked gone
        assert info["name"] in names
        rec = next(r for r in records.all() if r["name"] == info["name"])
        assert cli.status(rec) == "gone"
        assert cli.main(["clusters", "close", info["name"]]) == 0
    assert info["name"] not in [r["name"] for r in records.all()]


@pytest.mark.parametrize("mode,sig", [("raise", None), ("wait", signal.SIGINT),
                                      ("wait", signal.SIGTERM), ("wait", signal.SIGKILL)])
def test_an_attached_cluster_survives_its_driver(scheduler_address, client, tmp_path, mode, sig):
    workers = set(client.scheduler_info()["workers"])
    info, code, _, _ = run_driver(mode, tmp_path, sig, address=scheduler_address)
    assert code != 0
    time.sleep(1.0)
    assert set(client.scheduler_info()["workers"]) == workers
    assert client.submit(sum, [1, 1]).result() == 2
    assert all(psutil.pid_exists(p) for p in info["pids"])


def test_lease_closes_an_orphaned_scheduler(tmp_path):
    """A remote scheduler whose driver was SIGKILLed closes itself and its workers."""
    address, procs = start_cluster(str(tmp_path))
    ready = str(tmp_path / "ready")
    driver = subprocess.Popen([sys.executable, os.path.join(TESTS, "drivers", "lease_driver.py"),
                               address, "3", ready], env=dask_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        start = time.monotonic()
        for proc in procs:
            proc.wait(timeout=40)
        TIMINGS["remote scheduler, driver SIGKILL, lease 3s"] = time.monotonic() - start
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        stop_cluster(procs)


def test_cli_lists_and_closes_a_recorded_cluster(tmp_path, capsys):
    address, procs = start_cluster(str(tmp_path), nworkers=1)
    try:
        with open(os.path.join(records.directory(), "daskflow-local-leftover.json"), "w") as f:
            json.dump({"name": "daskflow-local-leftover", "kind": "local", "address": address,
                       "driver_pid": 999999, "started": time.time()}, f)
        assert cli.main(["clusters", "list"]) == 0
        assert "daskflow-local-leftover" in capsys.readouterr().out
        assert cli.main(["clusters", "close", "--all"]) == 0
        assert "scheduler shut down" in capsys.readouterr().out
        start = time.monotonic()
        for proc in procs:
            proc.wait(timeout=30)
        TIMINGS["daskflow clusters close (orphaned scheduler)"] = time.monotonic() - start
        assert records.all() == []
        assert cli.main(["clusters", "close", "nope"]) == 1
    finally:
        stop_cluster(procs)


def test_kubernetes_and_coiled_arguments():
    k = df.clusters.Kubernetes(n_workers=3, image="ghcr.io/dask/dask:latest")
    kw = k.kube_kwargs()
    assert kw["name"].startswith("daskflow-kubernetes-") and kw["shutdown_on_close"] is True
    # the enum itself: KubeCluster compares with CreateMode members, never strings
    from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode

    assert kw["create_mode"] is CreateMode.CREATE_ONLY and kw["idle_timeout"] == 3600
    shared = df.clusters.Kubernetes(name="team", existing=True).kube_kwargs()
    assert shared["create_mode"] is CreateMode.CONNECT_ONLY and shared["shutdown_on_close"] is False
    with dask.config.set({"daskflow.lifecycle.idle-timeout": None}):  # the operator needs > 0
        assert df.clusters.Kubernetes().kube_kwargs()["idle_timeout"] == 10 * 365 * 86400
    with pytest.raises(df.ClusterError, match="needs the name="):
        df.clusters.Kubernetes(existing=True)
    c = df.clusters.Coiled(n_workers=20).coiled_kwargs()
    assert c["shutdown_on_close"] is True and c["idle_timeout"] == "1 hour"
    assert c["no_client_timeout"] == "60s"
    reused = df.clusters.Coiled(name="shared", reuse=True)
    assert reused.coiled_kwargs()["shutdown_on_close"] is False and not reused.temporary


@pytest.mark.parametrize("spec,module,extra", [
    (lambda: df.clusters.Kubernetes(n_workers=1), "dask_kubernetes", "kubernetes"),
    (lambda: df.clusters.Coiled(n_workers=1), "coiled", "coiled")])
def test_missing_provider_says_how_to_install(spec, module, extra, cleanup, monkeypatch):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails, as if not installed
    with pytest.raises(df.ClusterError, match=rf"pip install 'daskflow\[{extra}\]'"):
        spec().open().start()


@pytest.mark.kubernetes
def test_real_kubernetes_cluster():  # pragma: no cover - opt-in
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("set KUBECONFIG to run against a real Kubernetes cluster")
    from daskflow.clusters.kube import daskcluster_exists

    spec = df.clusters.Kubernetes(n_workers=1)
    assert small(1, cluster=spec) == 2
    deadline = time.monotonic() + 120
    while daskcluster_exists(spec.name, spec.kwargs.get("namespace")):
        assert time.monotonic() < deadline, f"DaskCluster {spec.name} was not deleted"
        time.sleep(1)


@pytest.mark.coiled
def test_real_coiled_cluster():  # pragma: no cover - opt-in
    if not os.environ.get("DASK_COILED__TOKEN"):
        pytest.skip("set DASK_COILED__TOKEN to run against Coiled")
    assert small(1, cluster=df.clusters.Coiled(n_workers=1)) == 2



def test_a_lease_shorter_than_the_heartbeat_holds_while_the_driver_lives(cleanup):
    """distributed's client heartbeats only every 5 s: an idle but connected
    owner must keep a 1 s lease (the lease once ended live clusters)."""
    with df.clusters.Local(n_workers=1, processes=False, dashboard_address=":0", lease="1s") as client:
        time.sleep(7)  # longer than a heartbeat interval, with nothing to do
        assert client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["daskflow-lease"].expired()) == ""
        assert client.submit(sum, [1, 2]).result() == 3


NO_GUARD = """
import daskflow as df

@df.task
def inc(x):
    return x + 1

@df.flow
def f():
    return inc(1)

print("result", f())
"""


def test_script_without_main_guard_gets_one_clear_line(tmp_path):
    script = tmp_path / "noguard.py"
    script.write_text(NO_GUARD)
    env = {**dask_env(), "DASK_DASKFLOW__LOCAL__N_WORKERS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("daskflow: a script that runs flows") and '__name__ == "__main__"' in first
    assert 'under `if __name__ == "__main__":`' in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("kwargs,match", [
    ({"n_workers": "two"}, r"Local\(n_workers='two'\): n_workers must be a whole number"),
    ({"threads_per_worker": 1.5}, "threads_per_worker must be a whole number"),
])
def test_local_rejects_bad_sizes_at_once(kwargs, match):
    with pytest.raises(df.ClusterError, match=match):
        df.clusters.Local(**kwargs)


def test_tls_address_without_security_says_what_to_pass():
    with pytest.raises(df.ClusterError, match=r"tls:// scheduler needs security=.*Security"):
        df.clusters.Address("tls://10.0.0.5:8786")


def test_clusters_list_survives_a_record_it_cannot_check(cluster_records, monkeypatch, capsys):
    import json

    from daskflow import cli

    monkeypatch.setenv("KUBECONFIG", os.path.join(cluster_records, "no-such-kubeconfig"))
    bad = {"name": "daskflow-kubernetes-deadbeef", "kind": "kubernetes", "address": "tcp://x:1",
           "driver_pid": 1, "namespace": "default"}
    plain = {"name": "daskflow-local-deadbeef", "kind": "local", "address": "tcp://127.0.0.1:9",
             "driver_pid": 999999999, "worker_pids": []}
    paths = []
    for record in (bad, plain):
        paths.append(os.path.join(cluster_records, f"{record['name']}.json"))
        with open(paths[-1], "w") as f:
            json.dump(record, f)
    try:
        assert cli.main(["clusters", "list"]) == 0
        out = capsys.readouterr().out
        assert "daskflow-kubernetes-deadbeef" in out and "unknown (" in out
        assert "daskflow-local-deadbeef" in out and "gone" in out
    finally:
        for p in paths:
            os.remove(p)


@pytest.mark.parametrize("make,match", [
    (lambda: df.clusters.Local(n_worker=1), r"'n_worker' \(did you mean 'n_workers'\?\)"),
    (lambda: df.clusters.Address("tcp://127.0.0.1:1", timout=3),
     r"unexpected keyword argument 'timout' \(did you mean 'timeout'\?\); it takes: address"),
    (lambda: df.clusters.Gateway(worker=2), r"did you mean 'workers'"),
    (lambda: df.clusters.SSH(), r"missing a required argument: 'hosts'"),
])
def test_a_typo_in_a_cluster_spec_is_caught_when_it_is_made(make, match):
    """Before anything starts (a misspelt Local keyword used to fail in the
    workers' start, behind distributed's tracebacks and a main-guard hint)."""
    with pytest.raises(df.ClusterError, match=match):
        make()


def test_local_takes_the_keywords_of_its_workers():
    spec = df.clusters.Local(n_workers=1, processes=False, memory_limit="1GB",
                             resources={"GPU": 1}, dashboard_address=":0")
    assert spec.kwargs["memory_limit"] == "1GB"
