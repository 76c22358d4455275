"""Resources: cleanup runs once setup succeeded, whatever happens in the block."""

from __future__ import annotations

import os

import pytest
from common_tasks import Journal, journal, use
from common_tasks import note as _log

import daskflow as df


def _events(path):
    with open(path) as f:
        return [line.split(":")[0] for line in f.read().split()]


@df.resource
def broken_setup(path):
    raise OSError("cannot connect")
    yield  # pragma: no cover


@df.task
def use_and_fail(path, handle):
    _log(path, "use-fail")
    raise RuntimeError("task inside the block failed")


@df.task
def after(path, x):
    _log(path, "after")
    return x


def test_resource_outside_a_flow_is_a_context_manager(tmp_path):
    path = str(tmp_path / "log")
    with journal(path, "plain") as handle:
        assert handle == "handle-plain"
    assert _events(path) == ["open-plain", "close-plain"]


def test_generator_resource_cleanup_after_block(on, tmp_path):
    path = str(tmp_path / "log")

    @df.flow
    def f():
        with journal(path, "db") as h:
            a = use(path, h, "a")
            b = use(path, h, "b")
        return after(path, [a, b])

    run = f.run(cluster=on)
    assert run.result() == ["a", "b"]
    events = _events(path)
    assert events[0] == "open-db"
    assert events.index("close-db") > max(events.index("use-a-handle-db"), events.index("use-b-handle-db"))
    assert run.states["journal.cleanup"].is_completed()
    # the cleanup ran in the process that set the resource up
    with open(path) as fh:
        pids = {line.split(":")[0]: line.split(":")[1] for line in fh.read().split()}
    assert pids["open-db"] == pids["close-db"]


def test_cleanup_runs_when_a_task_inside_fails(on, tmp_path):
    path = str(tmp_path / "log")

    @df.flow
    def f():
        with journal(path, "db") as h:
            bad = use_and_fail(path, h)
        return after(path, bad)

    run = f.run(cluster=on)
    assert run.state.is_failed()
    assert run.states["journal.cleanup"].is_completed()
    assert "close-db" in _events(path)
    with pytest.raises(RuntimeError, match="inside the block"):
        run.result()


def test_class_resource_manager(on, tmp_path):
    path = str(tmp_path / "log")

    @df.flow
    def f():
        with Journal(path) as conn:
            x = use(path, conn, "x")
        return x

    assert f(cluster=on) == "x"
    assert _events(path) == ["setup", "use-x-conn", "cleanup-conn"]


def test_failed_setup_skips_cleanup_and_block(on, tmp_path):
    path = str(tmp_path / "log")

    @df.flow
    def f():
        with broken_setup(path) as h:
            x = use(path, h, "x")
        return x

    run = f.run(cluster=on)
    assert run.states["broken_setup"].is_failed()
    assert run.states["use"].name == "TriggerFailed"
    assert run.states["broken_setup.cleanup"].name == "NotSetUp"
    with pytest.raises(OSError, match="cannot connect"):
        run.result()


def test_nested_resources_close_inner_first(on, tmp_path):
    path = str(tmp_path / "log")

    @df.flow
    def f():
        with journal(path, "outer") as o:
            with journal(path, "inner") as i:
                x = use(path, i, "x")
            y = use(path, o, "y")
        return [x, y]

    assert f(cluster=on) == ["x", "y"]
    events = _events(path)
    assert events.index("close-inner") < events.index("close-outer")
    assert events.index("open-outer") < events.index("open-inner")


def test_dynamic_map_inside_a_resource(on, tmp_path):
    path = str(tmp_path / "log")

    @df.task
    def items(n):
        return list(range(n))

    @df.flow
    def f():
        with journal(path, "db") as h:
            got = use.map(df.unmapped(path), df.unmapped(h), items(3))
        return got

    assert f(cluster=on) == [0, 1, 2]
    events = _events(path)
    assert events[0] == "open-db" and events[-1] == "close-db"
    assert sorted(e for e in events if e.startswith("use-")) == [
        "use-0-handle-db", "use-1-handle-db", "use-2-handle-db"]


def test_many_blocks_each_cleaned_up_where_set_up(client, tmp_path):
    """With several blocks on two workers some cleanups land on the other
    worker; each must still run in the process that did the setup."""
    path = str(tmp_path / "log")

    @df.flow
    def f():
        out = []
        for i in range(8):
            with journal(path, f"r{i}") as h:
                out.append(use(path, h, f"t{i}"))
        return out

    run = f.run(cluster=client)
    assert run.state.is_completed(), run.summary()
    with open(path) as fh:
        pids = dict(line.rsplit(":", 1) for line in fh.read().split())
    for i in range(8):
        assert pids[f"open-r{i}"] == pids[f"close-r{i}"]


@df.task
def block_until_interrupted(path, handle, flag):
    import time as _time

    open(flag, "w").close()
    # until the test is done with it (at most 5 s): a cancelled task's thread
    # goes on running, and held a thread of the shared cluster from the next tests
    end = _time.time() + 5
    while _time.time() < end and not os.path.exists(flag + ".done"):
        _time.sleep(0.05)
    return handle


def run_until_interrupted(flow, client, flag, *args):
    """Run ``flow(*args)``; Ctrl-C (as a signal to the main thread) once ``flag`` exists."""
    import _thread
    import threading
    import time

    def interrupt():
        deadline = time.monotonic() + 30
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.02)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            flow.run(*args, cluster=client)
    finally:
        open(flag + ".done", "w").close()  # the interrupted task may end now


@df.flow
def blocked_in_a_block(path: str, flag: str):
    with journal(path, "db") as h:
        x = block_until_interrupted(path, h, flag)
    return x


def test_interrupt_runs_cleanup_of_open_resources(client, tmp_path):
    path, flag = str(tmp_path / "log"), str(tmp_path / "started")
    run_until_interrupted(blocked_in_a_block, client, flag, path, flag)
    assert _events(path) == ["open-db", "close-db"]


def test_a_cancelled_runs_cleanup_says_it_ran(client, tmp_path):
    """run.cancel() ends the open resources on the workers: the cleanup's state
    says so (CleanedUp), not Cancelled, in the summary too."""
    import time as _time

    path, flag = str(tmp_path / "log"), str(tmp_path / "started")
    run = blocked_in_a_block.submit(path, flag, cluster=client, progress=False)
    try:
        deadline = _time.monotonic() + 30
        while not os.path.exists(flag) and _time.monotonic() < deadline:
            _time.sleep(0.02)
        assert run.cancel(timeout=30)
    finally:
        open(flag + ".done", "w").close()  # the cancelled task may end now
    assert _events(path) == ["open-db", "close-db"]
    cleanup = run.states["journal.cleanup"]
    assert cleanup.is_completed() and cleanup.name == "CleanedUp", cleanup
    line = next(li for li in run.summary().splitlines() if "journal.cleanup" in li)
    assert "CleanedUp" in line and "Cancelled" not in line


# -- fused chains inside a block ----------------------------------------------------------


@df.task
def step(path, x, label):
    _log(path, f"step-{label}")
    return x + 1


def _fused_keys(dask_scheduler, name):
    return [str(k) for k in dask_scheduler.plugins[name].seen if str(k).startswith("step+")]


def test_a_chain_inside_a_block_fuses_and_the_cleanup_waits_for_it(client, tmp_path):
    import uuid

    from plugins import CountTasks

    path = str(tmp_path / "log")

    @df.flow
    def f():
        with journal(path, "db"):
            x = step(path, step(path, step(path, 0, "a"), "b"), "c")  # one fused task
        after = step(path, x, "after")  # outside the block: not fused with the chain
        return after

    name = f"keys-{uuid.uuid4().hex[:6]}"
    client.register_plugin(CountTasks(name), name=name)
    try:
        runs = [f.run(cluster=client, fuse=fuse) for fuse in (True, False)]
        fused = client.run_on_scheduler(_fused_keys, name=name)
    finally:
        client.unregister_scheduler_plugin(name)
    assert len(fused) == 1 and fused[0].startswith("step+step-2+step-3-"), fused
    for run in runs:
        assert run.result() == 4
    assert {n: s.name for n, s in runs[0].states.items()} == {
        n: s.name for n, s in runs[1].states.items()}
    logged = _events(path)
    for events in (logged[:6], logged[6:]):  # the cleanup and "after" may swap
        assert events[:4] == ["open-db", "step-a", "step-b", "step-c"], logged
        assert sorted(events[4:]) == ["close-db", "step-after"], logged


def test_interrupting_a_fused_chain_in_a_block_runs_the_cleanup(client, tmp_path):
    path, flag = str(tmp_path / "log"), str(tmp_path / "started")

    @df.flow
    def f():
        with journal(path, "db"):
            x = block_until_interrupted(path, step(path, step(path, 0, "a"), "b"), flag)
        return x

    run_until_interrupted(f, client, flag)
    assert _events(path) == ["open-db", "step-a", "step-b", "close-db"]
