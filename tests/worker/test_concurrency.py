"""Tag concurrency limits, on a real cluster of two worker processes with three
threads each (six tasks could run at once without a limit)."""

from __future__ import annotations

import json
import os
import signal
import time

import dask
import pytest
from distributed import Client, LocalCluster

import daskflow as df


@pytest.fixture(scope="module")
def six_threads():
    # A dead worker's slots come back when its lease expires: 2 s here
    # instead of distributed's 30 s (the workers inherit the setting).
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": "2s",
                          "distributed.scheduler.locks.lease-validation-interval": "0.5s"}):
        with LocalCluster(n_workers=2, threads_per_worker=3, processes=True,
                          dashboard_address=":0") as cluster:
            with Client(cluster, set_as_default=False) as client:
                yield client


@df.task(tags=["db"])
def query(i: int, path: str, seconds: float = 0.3) -> int:
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(json.dumps([start, time.time()]) + "\n")
    return i


@df.task(tags=["other"])
def free(i: int, path: str) -> int:
    return query.fn(i, path)


@df.flow
def twelve(path: str, tag: str = "db"):
    return query.with_options(tags=[tag]).map(range(12), path=df.unmapped(path))


def most_at_once(path: str) -> int:
    with open(path) as f:
        spans = [json.loads(line) for line in f]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                   key=lambda x: (x[0], x[1]))  # an end before a start at the same time
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_at_most_two_at_once_across_two_runs(six_threads, tmp_path):
    path = str(tmp_path / "spans.jsonl")
    runs = [twelve.submit(path, tag="db-two-runs", cluster=six_threads,
                          concurrency={"db-two-runs": 2}) for _ in range(2)]
    for run in runs:
        assert run.wait(60) is not None
        assert run.state.is_completed(), run.summary()
    assert most_at_once(path) == 2  # never more, and the limit is used


def test_without_a_limit_tasks_overlap(six_threads, tmp_path):
    """The measure above can see overlap: the same runs without a limit exceed 2."""
    path = str(tmp_path / "spans.jsonl")
    runs = [twelve.submit(path, tag="db-free", cluster=six_threads) for _ in range(2)]
    for run in runs:
        assert run.wait(60) is not None and run.state.is_completed()
    assert most_at_once(path) > 2


@df.flow
def twelve_in_chunks(path: str, tag: str):
    return query.with_options(tags=[tag]).map(range(12), path=df.unmapped(path), seconds=0.1,
                                              chunk=2)


def test_a_limit_holds_for_the_elements_of_chunks(six_threads, tmp_path):
    """Six chunks of two on six threads: each element takes its tag's slot."""
    path = str(tmp_path / "spans.jsonl")
    run = twelve_in_chunks.run(path, "db-chunks", cluster=six_threads,
                               concurrency={"db-chunks": 2})
    assert run.state.is_completed(), run.summary()
    assert len(run.chunked["query"]) == 6
    assert most_at_once(path) == 2


def test_flow_option_and_setting(six_threads, tmp_path):
    path = str(tmp_path / "spans.jsonl")
    limited = df.flow(twelve.fn, name="limited", concurrency={"db-flow": 1})
    assert limited.run(path, tag="db-flow", cluster=six_threads).state.is_completed()
    assert most_at_once(path) == 1
    os.remove(path)
    with dask.config.set({"daskflow.concurrency": {"db-setting": 3}}):
        assert twelve.run(path, tag="db-setting", cluster=six_threads).state.is_completed()
    assert most_at_once(path) == 3
    os.remove(path)
    # the run's value wins over the flow's
    run = limited.run(path, tag="db-flow2", cluster=six_threads,
                      concurrency={"db-flow2": 2})
    assert run.state.is_completed()
    assert most_at_once(path) == 2


def test_a_waiting_task_gives_its_thread_back(six_threads, tmp_path):
    """With one slot, the limited tasks wait seceded: untagged tasks of the same
    run still use all six threads meanwhile."""
    limited, others = str(tmp_path / "limited.jsonl"), str(tmp_path / "others.jsonl")

    @df.flow
    def mixed():
        query.with_options(tags=["db-secede"]).map(range(6), path=df.unmapped(limited), seconds=df.unmapped(0.5))
        return free.map(range(12), path=df.unmapped(others))

    run = mixed.run(cluster=six_threads, concurrency={"db-secede": 1})
    assert run.state.is_completed(), run.summary()
    assert most_at_once(limited) == 1
    # five limited tasks wait at once; were they holding threads, only one
    # free task could run at a time besides the one holding the slot
    assert most_at_once(others) >= 3


def test_another_limit_for_the_same_tag_is_refused(six_threads, tmp_path):
    path = str(tmp_path / "spans.jsonl")
    assert twelve.run(path, tag="db-conflict", cluster=six_threads,
                      concurrency={"db-conflict": 2}).state.is_completed()
    with pytest.raises(df.ConcurrencyLimitError, match="'db-conflict' is limited to 3"):
        twelve.run(path, tag="db-conflict", cluster=six_threads, concurrency={"db-conflict": 3})


def test_bad_limits_are_refused_before_anything_runs():
    with pytest.raises(df.FlowDefinitionError, match="limit of tag 'db' must be an integer"):
        twelve.run("x", concurrency={"db": 0})
    with pytest.raises(df.FlowDefinitionError, match="must be a dict of tag -> limit"):
        df.flow(twelve.fn, concurrency=["db"])
    with pytest.raises(df.FlowDefinitionError, match="reserves for the run option concurrency"):
        @df.flow
        def clash(concurrency: int):
            pass


@df.task(tags=["db-killed"])
def dies_once_holding_a_slot(i: int, marker: str, path: str) -> int:
    if i == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies holding the only slot
    return query.fn(i, path, 0.05)


def test_a_killed_workers_slot_is_released(six_threads, tmp_path):
    marker, path = str(tmp_path / "marker"), str(tmp_path / "spans.jsonl")

    @df.flow
    def killed():
        return dies_once_holding_a_slot.map(range(4), marker=df.unmapped(marker), path=df.unmapped(path))

    run = killed.submit(cluster=six_threads, concurrency={"db-killed": 1})
    assert run.wait(60) is not None, "the slot of the dead worker was never released"
    assert os.path.exists(marker)
    assert run.state.is_completed(), run.summary()
    assert most_at_once(path) == 1
    six_threads.wait_for_workers(2, timeout=60)


def test_limits_hold_in_process(tmp_path):
    path = str(tmp_path / "spans.jsonl")
    assert twelve.run(path, cluster="sync", concurrency={"db": 2}).state.is_completed()
    assert most_at_once(path) == 1


def _waiting_tasks(client):
    """Tasks running (seceded, so 'long-running') on each worker."""
    return client.run(lambda dask_worker: sum(
        ts.state == "long-running" for ts in dask_worker.state.tasks.values()))


@df.task(tags=["db-cancel"])
def slow_query(i: int) -> int:
    time.sleep(3)
    return i


@df.flow
def queries():
    return slow_query.map(range(4))


def test_tasks_waiting_for_a_slot_stop_when_their_run_is_cancelled(six_threads):
    run = queries.submit(cluster=six_threads, concurrency={"db-cancel": 1}, progress=False)
    deadline = time.monotonic() + 30
    while sum(_waiting_tasks(six_threads).values()) < 3:
        assert time.monotonic() < deadline and not run.done(), run.summary()
        time.sleep(0.1)
    assert run.cancel(timeout=30)
    deadline = time.monotonic() + 2.5  # a wait slice or two: before the holder's 3 s end
    while sum(_waiting_tasks(six_threads).values()):
        assert time.monotonic() < deadline, "tasks went on waiting for a slot after the cancel"
        time.sleep(0.1)
