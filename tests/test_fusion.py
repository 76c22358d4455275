"""Fusion: the same flows fused and unfused give the same states and results,
on "sync" and on the real cluster, and the scheduler receives fewer tasks."""

from __future__ import annotations

import os
import signal
import uuid

import dask
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

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


class CountTasks(SchedulerPlugin):
    """Counts the tasks the scheduler is given, by run token."""

    def __init__(self, name):
        self.name = name
        self.seen = set()

    def transition(self, key, start, finish, *args, **kwargs):
        if start == "released" and finish == "waiting":
            self.seen.add(key)


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
def w4(n: int):
    return total(inc.map(inc.map(inc.map(range(n)))))


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
