"""df.clusters.Coiled against the coiled STAND-IN (tests/standins/coiled).

The real Coiled service cannot run here; the stand-in keeps its contract at
the coiled.Cluster boundary with real dask processes.  test_real_coiled_cluster
in test_clusters.py is the opt-in live test.
"""

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
from test_clusters import gone, small

import daskflow as df

STANDINS = os.path.join(TESTS, "standins")


@pytest.fixture
def coiled(tmp_path, monkeypatch, cleanup):
    plane = str(tmp_path / "plane")
    monkeypatch.setenv("DASKFLOW_COILED_STANDIN_DIR", plane)
    monkeypatch.setenv("PYTHONPATH", dask_env()["PYTHONPATH"])  # workers import test tasks
    monkeypatch.syspath_prepend(STANDINS)
    sys.modules.pop("coiled", None)
    with dask.config.set({"daskflow.lifecycle.lease": "3s"}):
        import coiled as standin

        assert standin.STANDIN
        yield standin
    for name in list(standin.list_clusters()):
        standin.delete_cluster(name)
    for name in list(standin._popens):  # clusters that ended by themselves: reap them
        standin.delete_cluster(name)
    sys.modules.pop("coiled", None)


def processes(standin, name):
    rec = standin.list_clusters()[name]
    return [rec["scheduler_pid"], *rec["worker_pids"]]


def test_importing_coiled_through_daskflow_leaves_dask_config_alone(monkeypatch):
    import copy

    from daskflow.clusters.providers import preserved_dask_config

    monkeypatch.syspath_prepend(STANDINS)
    monkeypatch.delitem(sys.modules, "coiled", raising=False)
    before = copy.deepcopy(dask.config.config)
    try:
        with preserved_dask_config():
            import coiled  # noqa: F401 - the stand-in, which changes dask's config as coiled does
            assert dask.config.get("distributed.scheduler.no-workers-timeout") == "10 minutes"
        assert dask.config.config == before  # the nested key is back as it was
    finally:
        dask.config.config.clear()
        dask.config.config.update(before)


def test_the_import_guard_puts_back_only_what_the_import_changed():
    """An existing setting the import changed is put back; what it added stays
    (coiled's own defaults), and so does a setting another thread added
    meanwhile (the whole config used to be cleared and refilled)."""
    import copy

    from daskflow.clusters.providers import preserved_dask_config

    before = copy.deepcopy(dask.config.config)
    try:
        with preserved_dask_config():
            dask.config.set({"distributed.scheduler.no-workers-timeout": "10 minutes",
                             "daskflow-test.added-by-import": 1})
            dask.config.config["daskflow-test-other"] = {"set-meanwhile": True}
        assert dask.config.get("distributed.scheduler.no-workers-timeout") == before[
            "distributed"]["scheduler"]["no-workers-timeout"]
        assert dask.config.get("daskflow-test.added-by-import") == 1
        assert dask.config.get("daskflow-test-other.set-meanwhile") is True
    finally:
        dask.config.config.clear()
        dask.config.config.update(before)


def test_the_import_guard_restores_dotted_and_removed_keys():
    """A key with dots of its own (``logging: {distributed.client: ...}``) and a
    setting the import removed come back as they were."""
    import copy

    from daskflow.clusters.providers import preserved_dask_config

    before = copy.deepcopy(dask.config.config)
    try:
        dask.config.config.setdefault("daskflow-test", {})["a.b"] = 1
        dask.config.config["daskflow-test"]["gone"] = {"x": 1}
        kept = copy.deepcopy(dask.config.config["daskflow-test"])
        with preserved_dask_config():
            dask.config.config["daskflow-test"]["a.b"] = 2
            del dask.config.config["daskflow-test"]["gone"]
        assert dask.config.config["daskflow-test"] == kept
    finally:
        dask.config.config.clear()
        dask.config.config.update(before)


def test_temporary_coiled_cluster_is_shut_down(coiled):
    spec = df.clusters.Coiled(n_workers=1).open()
    with spec as client:
        assert client.submit(sum, [1, 2]).result() == 3
        pids = processes(coiled, spec.name)
        assert spec.name.startswith("daskflow-coiled-")
    assert gone(pids, 20) is not None
    assert spec.name not in coiled.list_clusters()


def test_flow_on_a_temporary_coiled_cluster(coiled):
    assert small(4, cluster=df.clusters.Coiled(n_workers=1)) == 5
    assert coiled.list_clusters() == {}


def test_named_cluster_is_reused_and_kept(coiled):
    first = df.clusters.Coiled(name="team", reuse=True, n_workers=1)
    with first as c1:
        address = c1.scheduler.address
    assert "team" in coiled.list_clusters()  # close kept it for others
    second = df.clusters.Coiled(name="team", reuse=True, n_workers=1)
    with second as c2:
        assert c2.scheduler.address == address  # the same cluster, reused
        assert small(1, cluster=c2) == 2
    assert "team" in coiled.list_clusters()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_coiled_cluster_ends_when_its_driver_ends(coiled, tmp_path, sig):
    out = str(tmp_path / "driver.json")
    env = {**dask_env(), "DASKFLOW_COILED_STANDIN_DIR": os.environ["DASKFLOW_COILED_STANDIN_DIR"],
           "DASK_DASKFLOW__LIFECYCLE__LEASE": "3s",
           "DASK_DASKFLOW__LIFECYCLE__STATE_DIR": str(tmp_path / "state")}
    driver = subprocess.Popen([sys.executable, os.path.join(TESTS, "drivers", "coiled_driver.py"),
                               out], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not os.path.exists(out):
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.05)
        with open(out) as f:
            name = json.load(f)["name"]
        pids = processes(coiled, name)
        start = time.monotonic()
        driver.send_signal(sig)
        driver.wait(timeout=60)
        assert gone(pids, 40) is not None, "the cluster outlived its driver"
        seconds = time.monotonic() - start
        label = signal.Signals(sig).name
        TIMINGS[f"Coiled (stand-in), driver {label}" + (", lease 3s" if sig == signal.SIGKILL
                                                        else "")] = seconds
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
