"""``df.shell``: a ready task running shell commands on the workers."""

from __future__ import annotations

import os
import time

import psutil
import pytest

import daskflow as df


@df.flow
def one(command: str, return_all: bool = False, timeout: float = 0.0):
    return df.shell(command, return_all=return_all, timeout=timeout or None)


def test_output_lines_stream_to_the_driver_in_order(on, caplog):
    caplog.set_level("INFO", logger="daskflow")
    result = one("for i in 1 2 3; do echo line$i; sleep 0.1; done; echo warn >&2", cluster=on)
    assert result == "line3"
    deadline = time.monotonic() + 10  # log records travel on their own, after the state
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("line")]
        if len(lines) == 3 and any(r.getMessage() == "warn" for r in caplog.records):
            break
        time.sleep(0.05)
    assert lines == ["line1", "line2", "line3"]
    assert {r.daskflow_task for r in caplog.records if r.getMessage() == "line1"} == {"one/shell"}
    warned = [r for r in caplog.records if r.getMessage() == "warn"]
    assert warned and warned[0].levelname == "WARNING"


def test_return_all_env_and_cwd(on, tmp_path):
    @df.flow
    def detailed(where: str):
        return df.shell("echo $GREETING; pwd", env={"GREETING": "hello"}, cwd=where,
                        return_all=True)

    assert detailed(str(tmp_path), cluster=on) == ["hello", str(tmp_path)]


def test_a_failing_command_fails_the_task_with_its_code_and_stderr(on):
    run = one.run("echo first >&2; echo second >&2; exit 7", cluster=on)
    state = run.states["shell"]
    assert state.is_failed()
    err = state.exception
    assert isinstance(err, df.ShellError) and err.exit_code == 7
    assert err.stderr == "first\nsecond"
    assert "exited with code 7" in state.message


def test_retries_and_map(on, tmp_path):
    counter = tmp_path / "count"
    flaky = df.shell.with_options(name="flaky", retries=2, retry_delay=0)

    @df.flow
    def shells(counter: str):
        tries = flaky(f"echo x >> {counter}; [ $(wc -l < {counter}) -ge 3 ] && echo ok")
        return tries, df.shell.map(["echo a", "echo b"])

    run = shells.run(str(counter), cluster=on)
    assert run.result() == ("ok", ["a", "b"])
    assert run.states["flaky"].attempts == 3
    assert run.states["shell[1]"].is_completed()


def test_timeout_kills_the_whole_process_group(on, tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    run = one.run(f"sleep 60 & echo $! > {pidfile}; wait", timeout=1.0, cluster=on)
    assert time.monotonic() - start < 15
    assert run.states["shell"].is_failed()
    assert "did not finish within its timeout of 1s" in run.states["shell"].message
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the command's child outlived the timeout"
        time.sleep(0.05)


def test_cancelling_the_run_kills_the_command(client, tmp_path):
    pidfile = tmp_path / "pid"
    run = one.submit(f"sleep 60 & echo $! > {pidfile}; wait", cluster=client)
    deadline = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    run.cancel()
    run.wait(30)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the cancelled command kept running"
        time.sleep(0.1)


def test_bad_command_is_a_clear_error():
    with pytest.raises(df.ShellError, match="needs a command string"):
        df.shell("")
    with pytest.raises(df.ShellError, match="could not start 'no-such-shell'"):
        df.shell("echo", shell="no-such-shell")
    assert os.environ.get("GREETING") is None
