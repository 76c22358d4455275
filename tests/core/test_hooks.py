"""State hooks on tasks (run on the worker) and flows (run on the driver)."""

from __future__ import annotations

import json
import os
import time

import pytest
from common_tasks import lose_a_result, wait_for_go

import daskflow as df


def record(tag):
    """A hook that appends (tag, task or flow name, state name, context) to the
    file named by the run's ``path`` parameter (found through df.context() on
    the worker, through the FlowRun on the driver)."""

    def hook(owner, state):
        ctx = None
        if isinstance(state, df.State):
            c = df.context()
            ctx = [c.task_run_name, c.attempt, os.getpid()]
            name, path = state.name, c.parameters["path"]
        else:
            name, path = state.state.name, state.parameters["path"]
        with open(path, "a") as f:
            f.write(json.dumps([tag, owner.name, name, ctx]) + "\n")

    hook.__name__ = f"record_{tag}"
    return hook


def broken(owner, state):
    raise RuntimeError("this hook is broken")


def calls(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def hook_file(tmp_path):
    return str(tmp_path / "hooks.jsonl")


@df.task(on_completion=[record("done")], on_failure=[record("failed"), broken],
         on_skip=[record("skipped")], on_retry=[record("retry")], retries=1)
def flaky(x, marker):
    if x == "skip":
        raise df.SKIP("nothing to do")
    if x == "fail":
        raise ValueError("always fails")
    if x == "once" and not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("first attempt fails")
    return x


@df.flow(on_completion=[record("flow-done")], on_failure=[record("flow-failed"), broken])
def hooked(path: str, values: list, marker: str):
    return flaky.map(values, df.unmapped(marker))


def test_each_task_hook_fires_once_per_state_with_context(on, hook_file, tmp_path):
    marker = str(tmp_path / "marker")
    run = hooked.run(hook_file, ["ok", "once", "skip", "fail"], marker, cluster=on)
    assert run.state.is_failed()  # "fail" failed; hooks changed no state
    assert run.states["flaky[0]"].is_completed() and run.states["flaky[1]"].attempts == 2
    assert run.states["flaky[2]"].is_skipped() and run.states["flaky[3]"].is_failed()
    got = sorted(map(tuple, ([c[0], c[1], c[2], c[3][0] if c[3] else None]
                             for c in calls(hook_file))))
    assert got == sorted([
        ("done", "flaky", "Completed", "flaky[0]"),
        ("retry", "flaky", "AwaitingRetry", "flaky[1]"),
        ("done", "flaky", "Completed", "flaky[1]"),
        ("skipped", "flaky", "Skipped", "flaky[2]"),
        ("retry", "flaky", "AwaitingRetry", "flaky[3]"),
        ("failed", "flaky", "Failed", "flaky[3]"),
        ("flow-failed", "hooked", "Failed", None),
    ])
    if on != "sync":  # task hooks ran on a worker, flow hooks on the driver
        pids = {c[3][2] for c in calls(hook_file) if c[3]}
        assert os.getpid() not in pids


def test_a_raising_hook_is_logged_by_name_and_changes_nothing(client, hook_file, tmp_path, caplog):
    run = hooked.run(hook_file, ["fail"], str(tmp_path / "m"), cluster=client)
    assert run.states["flaky[0]"].is_failed()
    assert run.states["flaky[0]"].message == "ValueError: always fails"
    text = caplog.text
    assert "hook broken of task 'flaky[0]' raised RuntimeError: this hook is broken" in text
    assert "hook broken of flow 'hooked' raised RuntimeError" in text


def test_flow_completion_hook_and_with_options(on, hook_file, tmp_path):
    quiet = flaky.with_options(on_completion=[record("quiet")], on_failure=[])

    @df.flow(on_completion=[record("flow-done")])
    def fine(path: str):
        return quiet("ok", "unused")

    assert fine(hook_file, cluster=on) == "ok"
    assert sorted(c[0] for c in calls(hook_file)) == ["flow-done", "quiet"]


def test_flow_crashed_hook_when_a_worker_dies_mid_run(hook_file, tmp_path):
    from conftest import start_cluster, stop_cluster

    address, procs = start_cluster(str(tmp_path), nworkers=1)
    try:
        @df.task
        def die():
            os._exit(1)

        @df.flow(on_crashed=[record("crashed")], on_failure=[record("failed")])
        def doomed(path: str):
            return die()

        run = doomed.run(hook_file, cluster=address)
        # distributed retried it on restarted workers (allowed-failures), then gave up
        assert run.state.type is df.StateType.CRASHED
        assert "KilledWorker" in run.states["die"].message
        assert [c[0] for c in calls(hook_file)] == ["crashed"]
    finally:
        stop_cluster(procs)


def test_cancellation_hook_on_submit_cancel(client, hook_file):
    @df.task
    def slow(stop: str):
        # until told to stop: a cancelled task's thread goes on running, and
        # a 30 s sleep held a thread of the shared cluster from the next tests
        deadline = time.monotonic() + 30
        while not os.path.exists(stop) and time.monotonic() < deadline:
            time.sleep(0.05)

    @df.flow(on_cancellation=[record("cancelled")])
    def long(path: str):
        return slow(path + ".stop")

    run = long.submit(hook_file, cluster=client)
    try:
        time.sleep(1.0)
        run.cancel()
        run.wait(30)
        assert run.state.type is df.StateType.CANCELLED
        assert [c[0] for c in calls(hook_file)] == ["cancelled"]
    finally:
        open(hook_file + ".stop", "w").close()


def test_hook_options_are_checked():
    with pytest.raises(df.FlowDefinitionError, match="on_failure of task 'x' holds 3"):
        df.task(name="x", on_failure=[3])(lambda: None)
    with pytest.raises(df.FlowDefinitionError, match="on_crashed of flow"):
        df.flow(on_crashed="notify")(lambda: None)


@df.task(on_completion=[record("done")])
def hooked_value(path):
    return 10


@df.task
def add_after_go(x, go):
    return x + go


@df.flow
def hooked_then_needed(path: str, where: str):
    return add_after_go(hooked_value(path), wait_for_go(where))


def test_a_task_dask_runs_again_fires_its_hooks_once(processes, tmp_path, hook_file):
    """The worker holding a hooked task's result is killed before the task
    that needs it runs: Dask runs the hooked task again, its hooks do not."""
    run, _ = lose_a_result(
        processes, str(tmp_path), lambda client: hooked_then_needed.submit(
            hook_file, str(tmp_path), cluster=client, progress=False), "hooked_value")
    assert run.result() == 11
    assert run.states["hooked_value"].reruns == 1  # it did run again
    assert [c[:3] for c in calls(hook_file)] == [["done", "hooked_value", "Completed"]]
