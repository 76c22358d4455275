"""``df.clusters.SSH`` on a real OpenSSH server (127.0.0.1, a throwaway user;
see tests/services.py), with distributed's real SSHCluster over asyncssh."""

from __future__ import annotations

import os
import sys
import time

import pytest
from common_tasks import mapped
from conftest import SHUTDOWN_TIMES as TIMINGS
from conftest import TEST_PATH
from services import SSHD, Sshd
from shutdown import EXIT_CODES, SCENARIOS, check_record, label, run_spec_driver

import daskflow as df
from daskflow.clusters.records import records

pytestmark = [
    pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server (make test installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="making the throwaway ssh user needs root"),
    # The throwaway user may run the system's python3.11 (see services.python_for_others).
    pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning"),
]
pytest.importorskip("asyncssh")


@pytest.fixture(scope="module")
def sshd():
    server = Sshd(TEST_PATH)
    yield server
    server.close()


def ssh_spec(sshd, hosts=2, **kwargs):
    return df.clusters.SSH(["127.0.0.1"] * hosts, connect_options=sshd.connect_options(),
                           worker_options={"nthreads": 1, "local_directory": sshd.scratch},
                           remote_python=sshd.python, **kwargs)


def test_flow_on_a_temporary_ssh_cluster(sshd, cleanup):
    spec = ssh_spec(sshd, hosts=3)
    assert mapped(5, cluster=spec) == 15
    assert mapped(3, cluster=spec) == 6  # the spec serves another run with a new cluster
    assert sshd.user.wait_no_processes(30) is not None
    assert records.all() == []


def test_ssh_cluster_runs_as_the_remote_user_and_is_recorded(sshd, cleanup):
    handle = ssh_spec(sshd).open()
    with handle as client:
        uids = set(client.run(os.getuid).values())
        assert uids == {sshd.user.uid}
        assert client.run_on_scheduler(os.getuid) == sshd.user.uid
        (record,) = records.all()
        assert record["kind"] == "ssh" and record["hosts"] == ["127.0.0.1"] * 2
        assert "daskflow-lease" in client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.plugins))
        start = time.monotonic()
    assert sshd.user.wait_no_processes(30) is not None
    TIMINGS["SSH, with-block end"] = time.monotonic() - start
    assert records.all() == []


def test_ssh_cluster_as_a_resource_in_a_flow(sshd, client):
    @df.task
    def remote_uid(handle):
        with handle.client() as c:
            return c.submit(os.getuid).result()

    @df.flow
    def uses_ssh():
        with ssh_spec(sshd) as cluster:
            return remote_uid(cluster)

    run = uses_ssh.run(cluster=client)
    assert run.result() == sshd.user.uid
    assert sshd.user.wait_no_processes(30) is not None


def test_ssh_arguments_are_checked_before_anything_starts():
    with pytest.raises(df.ClusterError, match="at least two host names"):
        df.clusters.SSH(["only-one"])
    with pytest.raises(df.ClusterError, match="worker_options="):
        df.clusters.SSH(["a", "b"], worker_options=["nthreads", 1])


def test_ssh_without_asyncssh_says_how_to_install(monkeypatch, cleanup):
    for name in [m for m in sys.modules if m == "asyncssh" or m.startswith("asyncssh.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "asyncssh", None)
    with pytest.raises(df.ClusterError, match=r"pip install 'daskflow\[ssh\]'"):
        df.clusters.SSH(["a", "b"]).open().start()


@pytest.mark.parametrize("mode,sig", SCENARIOS)
def test_ssh_cluster_ends_with_its_driver(sshd, tmp_path, mode, sig):
    spec = ssh_spec(sshd, lease="3s")
    info, code, start = run_spec_driver(spec, mode, sig, tmp_path)
    assert code == EXIT_CODES[sig or mode]
    seconds = sshd.user.wait_no_processes(60)
    assert seconds is not None, f"{label(mode, sig)}: remote processes outlived the driver"
    TIMINGS[f"SSH, driver {label(mode, sig)}" + (", lease 3s" if sig == 9 else "")] = \
        time.monotonic() - start
    check_record(info, sig)
