"""The run store: every run leaves a record, also one that never started or
whose driver died; several drivers share one store; `daskflow runs`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dask
import pytest
from common_tasks import inc, wait_for_go
from conftest import dask_env

import daskflow as df
from daskflow.cli import main
from daskflow.driver.history import RunStore


@df.flow
def gated(where: str):
    return inc(wait_for_go(where))


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "runs")
    with dask.config.set({"daskflow.runs.store": path, "daskflow.runs.interval": "0.1s"}):
        yield path


def _records(store):
    return {r["run_id"]: r for r in RunStore(store).records()}


def test_a_record_appears_at_start_and_completes_at_the_end(client, store, tmp_path):
    run = gated.submit(str(tmp_path), cluster=client, progress=False)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # a rewrite while it runs
    running = _records(store)[run.run_id]
    assert running["state"]["type"] == "RUNNING"
    assert {g["name"] for g in running["groups"]} == {"inc", "wait_for_go"}
    (tmp_path / "go").touch()
    assert run.wait(60).is_completed()
    done = _records(store)[run.run_id]
    assert done["state"]["type"] == "COMPLETED"
    assert set(done["states"]) == {"inc", "wait_for_go"}
    assert any("Completed" in line["message"] for line in done["logs"])
    assert len(os.listdir(store)) == 1  # one file per run, rewritten


def test_runs_that_never_started_are_recorded_with_why(store):
    with pytest.raises(df.ParameterError):
        gated.run(where=3, cluster="sync")

    @df.flow
    def broken():
        raise ValueError("the body gave up")

    with pytest.raises(ValueError):
        broken(cluster="sync")
    with pytest.raises(df.ClusterError):
        gated.run("x", cluster="no-such-profile")
    records = sorted(_records(store).values(), key=lambda r: r["created"])
    assert [r["flow"] for r in records] == ["gated", "broken", "gated"]
    assert [r["state"]["type"] for r in records] == ["FAILED", "FAILED", "CRASHED"]
    assert "ParameterError" in records[0]["state"]["message"]
    assert "the body gave up" in records[1]["state"]["message"]
    assert "no-such-profile" in records[2]["state"]["message"]


DRIVER = """
import sys, time
import daskflow as df

@df.task
def nap(seconds):
    time.sleep(seconds)
    return seconds

@df.flow
def napping(seconds: float, n: int):
    return nap.map([seconds] * n)

if __name__ == "__main__":
    for _ in range(int(sys.argv[2])):
        napping(float(sys.argv[1]), 3, cluster="sync", progress=False)
"""


def _driver(tmp_path, store, *argv):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    env = {**dask_env(), "DASK_DASKFLOW__RUNS__STORE": store,
           "DASK_DASKFLOW__RUNS__INTERVAL": "0.05s"}
    return subprocess.Popen([sys.executable, str(script), *argv], env=env, cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_killed_driver_reads_as_crashed_once_its_heartbeat_is_old(store, tmp_path):
    proc = _driver(tmp_path, store, "30", "1")
    try:
        deadline = time.monotonic() + 30
        while not _records(store):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    (record,) = _records(store).values()
    assert record["state"]["type"] == "RUNNING"
    with dask.config.set({"daskflow.runs.driver-lost": "0.5s"}):
        time.sleep(0.7)
        (record,) = _records(store).values()
    assert record["state"]["type"] == "CRASHED"
    assert f"pid {proc.pid}" in record["state"]["message"]
    assert "driver lost" in record["state"]["message"]


def test_two_drivers_share_one_store(store, tmp_path):
    procs = [_driver(tmp_path, store, "0.05", "4") for _ in range(2)]
    for proc in procs:
        assert proc.wait(120) == 0
    records = _records(store)
    assert len(records) == 8
    assert {r["state"]["type"] for r in records.values()} == {"COMPLETED"}
    assert len({r["pid"] for r in records.values()}) == 2


def test_a_damaged_record_is_skipped_with_a_warning(store, caplog):
    assert inc.fn(1) == 2
    df.flow(lambda: inc(1), name="one")(cluster="sync")
    with open(os.path.join(store, "20260101T000000-deadbeef.json"), "w") as f:
        f.write('{"run_id": "deadbeef", "sta')
    records = _records(store)
    assert len(records) == 1 and "deadbeef" not in records
    assert "skipped the damaged run record" in caplog.text


def test_runs_list_show_report_and_prune(store, tmp_path, capsys):
    @df.flow
    def fails():
        return df.task(lambda: 1 / 0, name="divide")()

    ok = df.flow(lambda: inc(1), name="fine").run(cluster="sync")
    bad = fails.run(cluster="sync")
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and bad.run_id in out[0] and ok.run_id in out[1]  # newest first
    assert main(["runs", "list", "--state", "failed", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [bad.run_id]
    assert main(["runs", "show", bad.run_id[:5]]) == 0
    shown = capsys.readouterr().out
    assert "ZeroDivisionError" in shown and "divide" in shown
    assert main(["runs", "show", "zzz"]) == 2
    assert "no run 'zzz'" in capsys.readouterr().err
    page = str(tmp_path / "bad.html")
    assert main(["runs", "report", bad.run_id, "-o", page]) == 0
    with open(page) as f:
        assert "divide" in f.read()
    assert main(["runs", "prune", "--older-than", "1h"]) == 0
    assert "removed 0" in capsys.readouterr().out
    time.sleep(1.1)
    assert main(["runs", "prune", "--older-than", "1s"]) == 0
    assert "removed 2" in capsys.readouterr().out
    assert _records(store) == {}


@pytest.fixture(scope="module")
def s3():
    import fsspec.asyn
    from services import MotoS3

    fsspec.asyn.get_loop()
    server = MotoS3()
    yield server
    server.close()


def test_a_store_on_s3(s3, tmp_path):
    url = f"s3://{s3.BUCKET}/runs-{tmp_path.name}"
    with dask.config.set({"daskflow.runs.store": url,
                          "daskflow.runs.store-options": s3.options}):
        run = df.flow(lambda: inc(1), name="remote").run(cluster="sync")
        records = _records(url)
    assert records[run.run_id]["state"]["type"] == "COMPLETED"


def test_a_large_runs_record_is_written_behind_it_and_read_whole(store):
    from daskflow.driver import history

    @df.task
    def same(x):
        return x

    @df.flow
    def wide(n: int):
        return same.map(range(n), chunk=1000)

    run = wide.run(history.WRITE_BEHIND, cluster="sync", progress=False)
    writers = [t for t in threading.enumerate() if t.name.startswith("daskflow-record-end-")]
    assert all(not t.daemon for t in writers)  # the process waits for them before it exits
    record = RunStore(store).find(run.run_id)  # waits for this process's writes
    assert record["state"]["type"] == "COMPLETED"
    assert len(record["states"]) == history.WRITE_BEHIND
    assert not [t for t in threading.enumerate() if t.name.startswith("daskflow-record-end-")]
