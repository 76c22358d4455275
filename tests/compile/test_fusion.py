"""Fusion: the same flows fused and unfused give the same states and results,
on "sync" and on the real cluster, and the scheduler receives fewer tasks."""

from __future__ import annotations

import os
import signal
import time
import uuid

import dask
import numpy as np
import pytest
from common_tasks import wait_for_go
from plugins import CountTasks

import daskflow as df


@df.task
def inc(x: int) -> int:
    return x + 1


@df.task
def boom(x: int) -> int:
    raise ValueError(f"boom at {x}")


@df.task(trigger=df.always_run)
def always(x) -> str:
    return f"ran after {type(x).__name__}"


@df.flow
def failing_chain():
    return always(inc(boom(inc(inc(1)))))


@df.task(retries=2, retry_delay=0.05)
def flaky(x: int, marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("first attempt fails")
    return x + 1


@df.flow
def retrying_chain(marker: str):
    return inc(flaky(inc(0), marker))


@df.task
def skipper(x: int) -> int:
    raise df.SKIP("nothing to do", result=x)


@df.task(skip_on_upstream_skip=False)
def after_skip(x) -> str:
    return f"got {x}"


@df.flow
def skipping_chain():
    return after_skip(inc(skipper(inc(1))))


@df.task
def fails_at_3(x: int) -> int:
    if x == 4:  # element 3 (inputs 1.. after inc)
        raise ValueError("element 3")
    return x


@df.task
def total(xs: list) -> int:
    return sum(x for x in xs if isinstance(x, int))


@df.flow
def map_chain(n: int):
    return total(df.allow_failure(inc.map(fails_at_3.map(inc.map(range(n))))))


def summary(run):
    return {name: (st.name, st.type, st.attempts, st.message, st.map_index)
            for name, st in run.states.items()}


@pytest.mark.parametrize("flow, args", [
    (failing_chain, ()),
    (skipping_chain, ()),
    (map_chain, (8,)),
    (retrying_chain, None),
], ids=["failure-then-always_run", "skip", "map-chain", "retry"])
def test_fused_and_unfused_runs_are_the_same(on, tmp_path, flow, args):
    runs = []
    for fuse in (False, True):
        call_args = args if args is not None else (str(tmp_path / f"marker-{fuse}"),)
        runs.append(flow.run(*call_args, cluster=on, fuse=fuse))
    unfused, fused = runs
    assert summary(fused) == summary(unfused)
    assert fused.state.name == unfused.state.name
    assert fused.state.message == unfused.state.message
    if unfused.state.is_completed():
        assert fused.result() == unfused.result()


def _count(dask_scheduler, name, token):
    plugin = dask_scheduler.plugins[name]
    return sum(1 for k in plugin.seen if token in str(k))


@df.flow
def w2(n: int = 200):
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@df.flow
def w4(n: int, chunk: int | None = 1):
    # chunk=1: a Dask task per element (chunked maps are tested in tests/compile/test_chunks.py)
    return total(inc.map(inc.map(inc.map(range(n), chunk=chunk), chunk=chunk), chunk=chunk))


def test_the_scheduler_receives_fewer_tasks(client):
    name = f"count-{uuid.uuid4().hex[:6]}"
    client.register_plugin(CountTasks(name), name=name)
    try:
        run = w2.run(cluster=client)
        assert run.result() == 200 and len(run.states) == 200
        assert client.run_on_scheduler(_count, name=name, token=run.run_id) == 200 // 20
        with dask.config.set({"daskflow.optimization.max-fused": 200}):
            run = w2.run(cluster=client)
        assert client.run_on_scheduler(_count, name=name, token=run.run_id) == 1
        run = w4.run(50, cluster=client)
        assert run.result() == sum(range(3, 53)) and len(run.states) == 151
        assert client.run_on_scheduler(_count, name=name, token=run.run_id) == 50 + 1
        run = w4.run(50, cluster=client, fuse=False)
        assert client.run_on_scheduler(_count, name=name, token=run.run_id) == 3 * 50 + 1
    finally:
        client.unregister_scheduler_plugin(name)


def _keys(dask_scheduler, name, token):
    return [str(k) for k in dask_scheduler.plugins[name].seen if token in str(k)]


def test_fused_keys_name_the_tasks_inside(client):
    @df.flow
    def named():
        return total(inc.map(fails_at_3.map(range(3))))

    # The scheduler forgets finished tasks (and their task groups) once the
    # run is gathered, so record the keys as they arrive.
    name = f"keys-{uuid.uuid4().hex[:6]}"
    client.register_plugin(CountTasks(name), name=name)
    try:
        run = named.run(cluster=client)
        assert run.state.is_completed()
        assert run.states["inc[0]"].worker is not None
        keys = client.run_on_scheduler(_keys, name=name, token=run.run_id)
    finally:
        client.unregister_scheduler_plugin(name)
    assert sum(k.startswith("('fails_at_3+inc-") for k in keys) == 3, keys


@df.task
def dies_once(x: int, marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1


@df.flow
def killed_chain(marker: str):
    return inc(dies_once(inc(0), marker))


def test_a_fused_chain_whose_worker_dies_completes(tmp_path):
    from distributed import Client, LocalCluster

    marker = str(tmp_path / "marker")
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        run = killed_chain.run(marker, cluster=client)
        assert run.result() == 3 and os.path.exists(marker)
        assert sorted(run.states) == ["dies_once", "inc", "inc-2"]
        # one state per task: the rerun's states replaced the first ones
        assert all(st.is_completed() for st in run.states.values())


# -- the argument layouts of map children (one shared MapCall per map) -------------------


@df.task
def combine(a, b, *, c=0, d=None):
    return (a, b, c, d)


@df.task
def triple():
    return [10, 20, 30]


@df.task
def shape_of(a, arr, c):
    return (a, arr.shape, float(arr.sum()), c)


@df.task
def describe(x) -> str:
    return type(x).__name__


@df.flow
def layouts(big):
    xs = inc.map([1, 2, 3])  # a map over constants
    p = triple()  # a task result mapped element-wise, and given whole
    r1 = combine.map(xs, p, c=df.unmapped(p), d=[7, 8, 9])
    r2 = shape_of.map([1, 2, 3], df.unmapped(big), c=xs)  # scattered data after the inputs
    r3 = describe.map(df.allow_failure(fails_at_3.map(range(1, 6))))  # element 3 fails
    r4 = combine.map(inc.map(inc.map([0, 1])), [5, 6], d=["x", "y"])  # fused with constants
    return r1, r2, r3, r4


def test_every_argument_layout_of_map_children(on):
    big = np.arange(300_000, dtype="float64").reshape(1000, 300)  # 2.4 MB: scattered
    expected = (
        [(2, 10, [10, 20, 30], 7), (3, 20, [10, 20, 30], 8), (4, 30, [10, 20, 30], 9)],
        [(i, (1000, 300), float(big.sum()), i + 1) for i in (1, 2, 3)],
        ["int", "int", "int", "ValueError", "int"],
        [(2, 5, 0, "x"), (3, 6, 0, "y")],
    )
    runs = [layouts.run(big, cluster=on, fuse=fuse) for fuse in (False, True)]
    for run in runs:
        assert run.state.is_completed(), run.state
        assert run.result() == expected
        assert run.states["describe[3]"].is_completed()
        assert run.states["fails_at_3[3]"].is_failed()
    assert summary(runs[0]) == summary(runs[1])


# -- lean graphs ------------------------------------------------------------------------


def test_a_map_child_costs_no_more_graph_bytes_than_a_raw_dask_task(client, graph_bytes):
    n = 500
    futures = client.map(inc.fn, range(n), pure=False)
    assert client.submit(sum, futures).result() == sum(range(1, n + 1))
    raw = sum(graph_bytes) / (n + 1)
    graph_bytes.clear()
    run = w4.run(n, cluster=client)  # 3 maps fused into one task per element
    assert run.result() == sum(range(3, n + 3))
    fused = sum(graph_bytes) / (3 * n + 1)
    graph_bytes.clear()
    run = w4.run(n, cluster=client, fuse=False)
    unfused = sum(graph_bytes) / (3 * n + 1)
    # Measured: raw futures ~100 B a task, daskflow ~64 B unfused, ~23 B fused.
    print(f"graph bytes per task: raw {raw:.0f}, unfused {unfused:.0f}, fused {fused:.0f}")
    assert unfused <= 1.5 * raw, (unfused, raw)
    assert fused < unfused / 2, (fused, unfused)


# -- cancelling a fused task -------------------------------------------------------------


@df.task
def leave_mark(x: int, where: str) -> int:
    open(os.path.join(where, "second ran"), "w").close()
    return x


@df.flow
def two_in_one(where: str):
    leave_mark(wait_for_go(where), where)  # one fused task


def test_a_cancelled_fused_task_stops_between_its_tasks(client, tmp_path):
    where = str(tmp_path)
    run = two_in_one.submit(where, cluster=client)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, "the first task did not start"
        time.sleep(0.02)
    assert run.cancel(timeout=30) is True
    (tmp_path / "go").write_text("")  # the first task ends; the second must not start
    assert run.state.is_cancelled()
    assert run.states["leave_mark"].is_cancelled()
    # the worker finishes the first task and checks its key before the second
    key_gone = time.monotonic() + 10
    while time.monotonic() < key_gone and client.run(_executing_count) != {
            w: 0 for w in client.scheduler_info()["workers"]}:
        time.sleep(0.05)
    assert not (tmp_path / "second ran").exists()
    # what _cancelled_on_worker reads (distributed internals) is still there
    assert client.submit(_wanted_inside_a_task, pure=False).result() == ("executing", False)


def _executing_count(dask_worker):
    return sum(ts.state in ("executing", "cancelled") for ts in dask_worker.state.tasks.values())


def _wanted_inside_a_task():
    from distributed import get_worker

    from daskflow.worker.context import still_wanted

    worker = get_worker()
    key = worker.get_current_task()
    return worker.state.tasks[key].state, not still_wanted()
