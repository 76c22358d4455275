"""``df.clusters.Slurm`` on a real single-node Slurm (slurmctld, slurmd and
munged started by the session; see tests/services.py), with dask-jobqueue's
real SLURMCluster submitting real batch jobs."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from common_tasks import mapped
from conftest import SHUTDOWN_TIMES as TIMINGS
from conftest import TEST_PATH
from shutdown import EXIT_CODES, SCENARIOS, check_record, label, run_spec_driver

import daskflow as df
from daskflow import cli
from daskflow.clusters.records import records
from daskflow.clusters.slurm import import_jobqueue

pytestmark = [
    pytest.mark.skipif(shutil.which("slurmctld") is None or shutil.which("munged") is None,
                       reason="needs slurm-wlm and munge (make test installs them)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test Slurm runs its daemons as root"),
]
try:  # never a plain import: dask_jobqueue would take this session's SIGINT
    import_jobqueue()
except df.ClusterError:
    pytest.skip("needs dask-jobqueue", allow_module_level=True)
from services import Slurm  # noqa: E402


@pytest.fixture(scope="module")
def slurm():
    server = Slurm()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in server.env.items():  # sbatch/squeue/scancel, here and in drivers
                patch.setenv(key, value)
            yield server
    finally:
        server.close()


def slurm_spec(slurm, jobs=1, **kwargs):
    return df.clusters.Slurm(
        jobs=jobs, cores=1, processes=1, memory="1GB", walltime="00:10:00", interface="lo",
        log_directory=os.path.join(slurm.root, "jobs"),
        job_script_prologue=[f"export PYTHONPATH={TEST_PATH}"], **kwargs)


def test_flow_on_a_temporary_slurm_cluster(slurm, cleanup):
    spec = slurm_spec(slurm, jobs=2)
    assert mapped(5, cluster=spec) == 15
    assert mapped(2, cluster=spec) == 3  # new jobs for the second run
    assert slurm.wait_no_jobs(30) is not None
    assert records.all() == []


def test_slurm_jobs_are_named_recorded_and_cancelled(slurm, cleanup):
    handle = slurm_spec(slurm, jobs=1).open()
    with handle as client:
        client.wait_for_workers(1, timeout=60)
        assert client.submit(lambda: os.environ.get("SLURM_JOB_NAME")).result() == handle.name
        assert handle.name.startswith("daskflow-slurm-")
        names = slurm.run("squeue", "-h", "-o", "%j").split()
        assert names == [handle.name]
        (record,) = records.all()
        assert record["kind"] == "slurm" and record["jobs"] == [handle.name]
        start = time.monotonic()
    assert slurm.wait_no_jobs(30) is not None
    TIMINGS["Slurm, with-block end"] = time.monotonic() - start
    assert records.all() == []


def test_slurm_arguments_are_checked_before_anything_is_submitted(slurm):
    with pytest.raises(df.ClusterError, match="not both"):
        df.clusters.Slurm(jobs=1, adapt={"maximum_jobs": 2})
    with pytest.raises(df.ClusterError, match="decided by daskflow"):
        df.clusters.Slurm(job_name="mine")
    with pytest.raises(df.ClusterError, match="jobs=N"):
        df.clusters.Slurm(n_workers=2)
    with pytest.raises(df.ClusterError, match="whole number"):
        df.clusters.Slurm(jobs=-1)
    with pytest.raises(df.ClusterError, match="Slurm\\(core=...\\).*Did you mean 'cores'"):
        df.clusters.Slurm(core=8)
    assert slurm.jobs() == []


def test_cli_cancels_the_jobs_of_a_leftover_record(slurm, tmp_path, capsys):
    name = "daskflow-slurm-leftover"
    slurm.run("sbatch", "--job-name", name, "-o", "/dev/null", "--wrap", "sleep 120")
    deadline = time.monotonic() + 20
    while not slurm.jobs():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    import json

    with open(os.path.join(records.directory(), f"{name}.json"), "w") as f:
        json.dump({"id": name, "name": name, "kind": "slurm", "address": "tcp://127.0.0.1:9",
                   "driver": {"pid": 999999, "create_time": 0.0}, "jobs": [name]}, f)
    assert cli.status(records.all()[0]) == "orphaned"
    assert cli.main(["clusters", "close", name]) == 0
    assert "jobs cancelled" in capsys.readouterr().out
    assert slurm.wait_no_jobs(30) is not None


@pytest.mark.parametrize("mode,sig", SCENARIOS)
def test_slurm_cluster_ends_with_its_driver(slurm, tmp_path, mode, sig):
    spec = slurm_spec(slurm, lease="3s")
    info, code, start = run_spec_driver(spec, mode, sig, tmp_path)
    assert code == EXIT_CODES[sig or mode]
    seconds = slurm.wait_no_jobs(60)
    assert seconds is not None, f"{label(mode, sig)}: jobs {slurm.jobs()} outlived the driver"
    TIMINGS[f"Slurm, driver {label(mode, sig)}" + (", death timeout 3s" if sig == 9 else "")] = \
        time.monotonic() - start
    check_record(info, sig)


def test_dask_jobqueue_still_takes_sigint_on_import():
    """Why daskflow.clusters.slurm.import_jobqueue exists: when this fails,
    dask-jobqueue stopped replacing SIGINT at import; drop the workaround."""
    import subprocess
    import sys

    code = ("import signal, dask_jobqueue; "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
    code = ("import signal, threading\n"
            "from daskflow.clusters.slurm import import_jobqueue\n"
            "t = threading.Thread(target=import_jobqueue); t.start(); t.join()\n"
            "import_jobqueue()\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
