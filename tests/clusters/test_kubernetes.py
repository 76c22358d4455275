"""df.clusters.Kubernetes: the real dask-kubernetes KubeCluster and the real
Dask operator, against the EMULATED Kubernetes API of tests/emulated_kubernetes
(pods are real local dask processes).  test_real_kubernetes_cluster in
test_clusters.py is the opt-in test against a real cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dask
import pytest
from conftest import SHUTDOWN_TIMES as TIMINGS
from conftest import TESTS, dask_env
from test_clusters import one_step_on, small

import daskflow as df
from daskflow import cli
from daskflow.clusters.kube import bounded_kube_cluster
from daskflow.clusters.records import records

pytestmark = [
    pytest.mark.timeout(180),
    # The kubeconfig file an upstream race can drop unclosed (see the kube
    # fixture); nothing else is ignored.
    pytest.mark.filterwarnings(r"ignore:unclosed file .*kubeconfig:ResourceWarning"),
    pytest.mark.filterwarnings(r"ignore:Exception ignored in. <_io.\w+ name='[^']*kubeconfig'"
                               ":pytest.PytestUnraisableExceptionWarning"),
]


def spec_of(kube, name):
    return kube.get(f"/apis/kubernetes.dask.org/v1/namespaces/default/daskclusters/{name}")


def test_flow_on_a_temporary_kubernetes_cluster(kube):
    spec = df.clusters.Kubernetes(n_workers=1)
    assert small(20, cluster=spec) == 21
    assert kube.wait_until_empty(90) is not None


def test_temporary_cluster_is_named_labelled_recorded_and_deleted(kube):
    spec = df.clusters.Kubernetes(n_workers=2).open()
    with spec as client:
        client.wait_for_workers(2, timeout=60)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert spec.name.startswith("daskflow-kubernetes-") and kube.daskclusters() == [spec.name]
        cluster = spec_of(kube, spec.name)
        assert cluster["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "daskflow"
        assert cluster["spec"]["idleTimeout"] == 3600 and cluster["status"]["phase"] == "Running"
        assert len(kube.running_pods()) == 3  # one scheduler and two worker pods, as processes
        (rec,) = [r for r in records.all() if r["name"] == spec.name]
        assert rec["kind"] == "kubernetes" and rec["namespace"] == "default"
        assert "daskflow-lease" in client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.plugins))
        start = time.monotonic()
    assert kube.wait_until_empty(90) is not None
    TIMINGS["Kubernetes (emulated), with-block end"] = time.monotonic() - start
    assert spec.name not in [r["name"] for r in records.all()]


@pytest.fixture
def shared(kube):
    """A DaskCluster someone else made and keeps ("team")."""
    cluster = bounded_kube_cluster(60, name="team", n_workers=1, shutdown_on_close=False, quiet=True)
    cluster.close()  # leaves it running: not ours
    yield "team"


def test_existing_cluster_is_used_and_never_deleted(kube, shared):
    assert small(1, cluster=df.clusters.Kubernetes(name=shared, existing=True)) == 2
    with df.clusters.Kubernetes(name=shared, existing=True) as client:
        assert client.submit(sum, [4, 5]).result() == 9
    time.sleep(1)
    assert kube.daskclusters() == [shared] and len(kube.running_pods()) == 2


def test_create_mode_is_really_enforced(kube, shared):
    # A temporary spec never adopts (nor, on failure, deletes) a cluster that exists.
    with pytest.raises(df.ClusterError, match="already exists"):
        df.clusters.Kubernetes(name=shared).open().start()
    # existing=True never creates one that does not.
    with pytest.raises(df.ClusterError, match="doesn't already exist"):
        df.clusters.Kubernetes(name="nobody", existing=True).open().start()
    time.sleep(1)
    assert kube.daskclusters() == [shared] and len(kube.running_pods()) == 2
    with pytest.raises(df.ClusterError, match="decided by daskflow"):
        df.clusters.Kubernetes(shutdown_on_close=False)


def test_startup_timeout_deletes_the_daskcluster(kube):
    spec = df.clusters.Kubernetes(n_workers=1, image="registry.invalid/no-such-image:1",
                                  startup_timeout=4).open()
    start = time.monotonic()
    with pytest.raises(df.ClusterError, match="not up within 4s; its DaskCluster was deleted"):
        spec.start()
    assert time.monotonic() - start < 40
    assert kube.wait_until_empty(90) is not None
    assert spec.state is df.clusters.Lifecycle.CLOSED


def test_idle_timeout_ends_an_idle_cluster(kube):
    """The DaskCluster's idleTimeout (from daskflow.lifecycle.idle-timeout) is
    enforced by the operator even while the driver holds the cluster."""
    with dask.config.set({"daskflow.lifecycle.idle-timeout": "4s"}):
        spec = df.clusters.Kubernetes(n_workers=1).open()
        spec.start()
    try:
        assert spec_of(kube, spec.name)["spec"]["idleTimeout"] == 4
        start = time.monotonic()
        deadline = start + 60
        while spec.name in kube.daskclusters():
            assert time.monotonic() < deadline, "the idle cluster was not deleted"
            time.sleep(0.2)
        TIMINGS["Kubernetes (emulated), idleTimeout 4s after start"] = time.monotonic() - start
    finally:
        spec.close()  # the cluster is gone already: closing still succeeds
    assert kube.wait_until_empty(90) is not None


def run_driver(kube, mode, tmp_path, sig=None, lease="3s"):
    out = str(tmp_path / f"{mode}-{sig}.json")
    env = {**dask_env(), "KUBECONFIG": kube.kubeconfig,
           "DASK_DASKFLOW__LIFECYCLE__STATE_DIR": records.directory()}
    driver = subprocess.Popen([sys.executable, os.path.join(TESTS, "drivers", "kube_driver.py"),
                               mode, out, lease], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not os.path.exists(out):
        assert time.monotonic() < deadline and (driver.poll() is None or os.path.exists(out)), \
            "the driver did not start its cluster"
        time.sleep(0.05)
    with open(out) as f:
        info = json.load(f)
    return driver, info


@pytest.mark.parametrize("mode,sig", [("normal", None), ("raise", None), ("wait", signal.SIGINT),
                                      ("wait", signal.SIGTERM), ("wait", signal.SIGKILL)])
def test_kubernetes_cluster_ends_with_its_driver(kube, tmp_path, mode, sig):
    driver, info = run_driver(kube, mode, tmp_path, sig)
    try:
        if sig is not None:
            time.sleep(1.0)  # let the flow run start
            assert driver.poll() is None and info["name"] in kube.daskclusters()
            driver.send_signal(sig)
        start = time.monotonic()
        code = driver.wait(timeout=60)
        # SIGKILL: nothing ran in the driver; the lease (3 s) and the operator end it
        seconds = kube.wait_until_empty(60)
        label = mode if sig is None else signal.Signals(sig).name
        assert seconds is not None, f"{label}: the DaskCluster or its pods outlived the driver"
        TIMINGS[f"Kubernetes (emulated), driver {label}"
                + (", lease 3s" if sig == signal.SIGKILL else "")] = time.monotonic() - start
        expected = {"normal": 0, "raise": 1}.get(mode, {signal.SIGINT: -2, signal.SIGTERM: 143,
                                                        signal.SIGKILL: -9}.get(sig))
        assert code == expected
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    if sig == signal.SIGKILL:  # the record stays (nothing ran in the driver), marked gone
        (rec,) = [r for r in records.all() if r["name"] == info["name"]]
        assert cli.status(rec) == "gone"
        assert cli.main(["clusters", "close", info["name"]]) == 0


def test_cli_deletes_a_leftover_kubernetes_cluster(kube, tmp_path, capsys):
    driver, info = run_driver(kube, "wait", tmp_path, lease="10 minutes")
    driver.kill()
    driver.wait()
    time.sleep(1)
    assert info["name"] in kube.daskclusters()  # its lease has ten minutes to run
    assert cli.main(["clusters", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if info["name"] in x)
    assert "kubernetes" in line and "orphaned" in line
    start = time.monotonic()
    assert cli.main(["clusters", "close", info["name"]]) == 0
    assert "DaskCluster deleted" in capsys.readouterr().out
    assert kube.wait_until_empty(90) is not None
    TIMINGS["Kubernetes (emulated), daskflow clusters close"] = time.monotonic() - start


def test_shipped_profile_runs_a_flow(kube):
    """cluster="kubernetes": the profile shipped in clusters/profiles.yaml
    (with one worker pod instead of four, for two cores)."""
    with dask.config.set({"daskflow.profile-dirs": [os.path.join(os.path.dirname(TESTS), "clusters")]}):
        shipped = df.clusters.profiles()["kubernetes"]
    assert shipped["kind"] == "kubernetes"
    with dask.config.set({"daskflow.clusters.kubernetes": {**shipped, "n-workers": 1}}):
        assert small(3, cluster="kubernetes") == 4
    assert kube.wait_until_empty(90) is not None


def test_a_kubernetes_cluster_as_a_resource_in_a_flow(kube):
    """The Prefect 1 "temporary cluster for one step" pattern: the flow runs
    on a LocalCluster whose worker starts (and ends) a DaskCluster for the
    block's tasks.  The spec travels to that worker with its arguments; the
    worker needs Kubernetes credentials of its own (here its KUBECONFIG)."""
    spec = df.clusters.Kubernetes(n_workers=1, scheduler_service_type="LoadBalancer")
    driver_cluster = df.clusters.Local(n_workers=1, threads_per_worker=2, dashboard_address=":0",
                                       env={"KUBECONFIG": kube.kubeconfig,
                                            "PYTHONPATH": dask_env()["PYTHONPATH"]})
    run = one_step_on(spec).run(cluster=driver_cluster)
    assert run.result() == [11, 12]
    assert kube.daskclusters() == []  # deleted when the block's tasks were done
    assert run.states["use_cluster[1]"].is_completed()
    assert kube.wait_until_empty(90) is not None
