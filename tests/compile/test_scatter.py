"""Lean graphs: large inputs are scattered once and released after the run."""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time
import warnings

import numpy as np
import pytest
from plugins import scheduler_keys, worker_keys

import daskflow as df
from daskflow.compile.scatter import measure, plan


@df.task
def col_sum(arr, i):
    return float(arr[:, i % arr.shape[1]].sum())


@df.task
def add_all(xs):
    return sum(xs)


@df.flow
def eight(arr: np.ndarray):
    return add_all([col_sum(arr, i) for i in range(8)])


@df.task
def use_then_fail(arr):
    raise RuntimeError("failed after receiving the array")


@df.flow
def failing(arr: np.ndarray):
    return use_then_fail(arr)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def scattered_keys(client):
    return [k for k in client.run_on_scheduler(scheduler_keys) if k.startswith("ndarray-")]


def test_graph_stays_small_whatever_the_input_size(client, graph_bytes):
    small = np.ones((1250, 2000))  # 20 MB
    big = np.ones((12500, 2000))  # 200 MB
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert eight(small, cluster=client) == pytest.approx(8 * 1250)
        assert eight(big, cluster=client) == pytest.approx(8 * 12500)
    assert len(graph_bytes) == 2
    assert graph_bytes[1] < 20_000
    assert abs(graph_bytes[1] - graph_bytes[0]) < 200  # does not grow with the input


def test_object_passed_to_eight_tasks_is_scattered_once(client, caplog):
    caplog.set_level(logging.DEBUG, logger="daskflow")
    arr = np.ones((1000, 1000))  # 8 MB
    eight(arr, cluster=client)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scattered")]
    assert len(lines) == 1 and lines[0].startswith("scattered 1 object(s)")


def test_scattered_keys_released_after_success_and_failure(client):
    arr = np.ones((500, 1000))  # 4 MB
    assert eight.run(arr, cluster=client).state.is_completed()
    assert wait_until(lambda: not scattered_keys(client))
    run = failing.run(arr, cluster=client)
    assert run.state.is_failed()
    assert wait_until(lambda: not scattered_keys(client))


@df.task
def wait_for_interrupt(arr, flag):
    open(flag, "w").close()
    # until the test is done with it (at most 5 s): an interrupted run's task
    # goes on running, and held a thread of the shared cluster from the next tests
    deadline = time.time() + 5
    while time.time() < deadline and not os.path.exists(flag + ".done"):
        time.sleep(0.05)
    return arr.shape


@df.flow
def interruptible(arr: np.ndarray, flag: str):
    return wait_for_interrupt(arr, flag)


def test_interrupted_run_releases_scattered_keys(client, tmp_path):
    flag = str(tmp_path / "started")

    def interrupt_when_started():
        if wait_until(lambda: os.path.exists(flag)):
            _thread.interrupt_main()

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            interruptible.run(np.ones((500, 1000)), flag, cluster=client)
    finally:
        open(flag + ".done", "w").close()  # the interrupted task may end now
    assert wait_until(lambda: not scattered_keys(client))


def test_scatter_false_keeps_data_in_the_graph(client, graph_bytes):
    arr = np.ones((1500, 1000))  # 12 MB, over distributed's 10 MB graph warning
    with pytest.warns(UserWarning, match="Sending large graph"):
        assert eight(arr, cluster=client, scatter=False) == pytest.approx(8 * 1500)
    assert graph_bytes[-1] > 12_000_000


def test_fifty_runs_leave_the_cluster_flat(client):
    arr = np.ones((300, 1000))  # 2.4 MB
    baseline = len(client.run_on_scheduler(scheduler_keys))
    for _ in range(50):
        eight(arr, cluster=client)
    assert wait_until(lambda: len(client.run_on_scheduler(scheduler_keys)) <= baseline)
    assert wait_until(lambda: all(v["data"] == 0 and v["pending"] == 0
                                  for v in client.run(worker_keys).values()))
    # one spec per task per run, in a cache bounded in entries: 50 runs x 2 specs here
    assert all(v["specs"] <= 2048 for v in client.run(worker_keys).values())


def test_threshold_is_configurable(client, caplog):
    import dask

    caplog.set_level(logging.DEBUG, logger="daskflow")
    with dask.config.set({"daskflow.scatter.threshold": "100 MiB"}):
        eight(np.ones((300, 1000)), cluster=client)
    assert not [r for r in caplog.records if r.getMessage().startswith("scattered")]


class Payload:
    """An object dask cannot size."""

    def __init__(self, n):
        self.blob = bytearray(n)


@df.task
def payload_len(p):
    return len(p.blob)


def test_any_picklable_object_and_mapped_elements(client, caplog):
    caplog.set_level(logging.DEBUG, logger="daskflow")
    big = b"x" * 3_000_000

    @df.flow
    def mixed():
        return {"custom": payload_len(Payload(3_000_000)),
                "mapped": payload_len.map([Payload(2_000_000), Payload(10)]),
                "same_bytes": add_all([len_of(big), len_of(bytes(big))])}

    assert mixed(cluster=client) == {"custom": 3_000_000, "mapped": [2_000_000, 10],
                                     "same_bytes": 6_000_000}
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("scattered"))
    assert line.startswith("scattered 3 object(s)")  # two Payloads, one bytes (equal content)


@df.task
def len_of(b):
    return len(b)


def test_measure_never_fails():
    assert measure(np.ones(1000)) >= 8000
    assert measure(Payload(5_000_000)) >= 5_000_000
    assert measure(threading.Lock()) == 0  # cannot pickle: left alone
    assert measure(12) == 0 and measure("abc") == 3


def test_plan_finds_constants_nested_and_skips_refs():
    from daskflow.define.build import Builder

    arr = np.ones(300_000)
    with Builder("t") as b:
        x = col_sum(arr, 0)
        add_all([x, arr, {"k": arr}])
    found = plan(b.nodes, 1_000_000)
    assert len(found.objects) == 1 and found.objects[0] is arr


@df.task
def frame_total(frame, column):
    return float(frame[column].sum())


def test_pandas_dataframe_parameter_is_scattered(client, graph_bytes, caplog):
    pd = pytest.importorskip("pandas")
    caplog.set_level(logging.DEBUG, logger="daskflow")
    frame = pd.DataFrame({"a": np.ones(500_000), "b": np.arange(500_000.0)})  # 8 MB

    @df.flow
    def frames(df_in: pd.DataFrame):
        return add_all([frame_total(df_in, "a"), frame_total(df_in, "b")])

    assert frames(frame, cluster=client) == pytest.approx(500_000 + 499_999 * 500_000 / 2)
    assert graph_bytes[-1] < 20_000
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("scattered"))
    assert line.startswith("scattered 1 object(s)") and "DataFrame" in line
