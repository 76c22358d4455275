"""async def tasks and flows, on "sync" and on a real cluster: concurrency,
timeouts that cancel the coroutine, retries, hooks, caching, mapping, logs;
an async body awaiting references; awaiting a flow from async code."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from common_tasks import inc, note

import daskflow as df
from daskflow.exceptions import FlowDefinitionError, TaskTimeoutError


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


@df.task
async def nap(x, seconds=0.2):
    await asyncio.sleep(seconds)
    return x


@df.task
def add(a, b):
    return a + b


@df.task
async def boom(x):
    await asyncio.sleep(0)
    raise ValueError(f"bad {x}")


@df.flow
def naps(n: int, seconds: float = 0.2):
    return nap.map(range(n), seconds=seconds)


# -- async tasks --------------------------------------------------------------------


def test_async_tasks_run_concurrently_on_the_cluster(client):
    """100 sleeps of 0.2 s on 2 worker threads: 10 s one thread at a time,
    well under 4 s when their coroutines interleave."""
    naps(2, 0.01, cluster=client, progress=False)  # the workers import this module
    start = time.monotonic()
    assert naps(100, cluster=client, progress=False) == list(range(100))
    assert time.monotonic() - start < 4


def test_async_tasks_on_sync_and_outside_a_flow(on):
    assert naps(3, 0.01, cluster=on, progress=False) == [0, 1, 2]
    coro = nap.fn(5, 0)  # outside a flow a task call is a plain call: a coroutine
    assert asyncio.run(coro) == 5
    assert asyncio.run(nap(6, 0)) == 6


@df.task(timeout=0.5)
async def hang(where):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        note(os.path.join(where, "journal"), "cancelled")
        raise


@df.flow
def hanging(where: str):
    return hang(where)


def test_a_timeout_cancels_the_coroutine(on, tmp_path):
    start = time.monotonic()
    run = hanging.run(str(tmp_path), cluster=on, progress=False)
    assert time.monotonic() - start < 10
    state = run.states["hang"]
    assert state.is_failed() and isinstance(state.exception, TaskTimeoutError)
    assert "coroutine was cancelled" in str(state.exception)
    deadline = time.monotonic() + 5  # the note is written as the coroutine ends
    while not os.path.exists(tmp_path / "journal") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line.split(":")[0] for line in _lines(tmp_path / "journal")] == ["cancelled"]


@df.task(retries=2, retry_delay=0)
async def flaky(where):
    path = os.path.join(where, "journal")
    note(path, "try")
    if len(_lines(path)) < 2:
        raise ConnectionError("first try fails")
    return "ok"


def _journal_hook(task, state):
    where = df.context().parameters["where"]
    note(os.path.join(where, "journal"), f"{state.name}-{state.attempts}")


@df.flow
def retried(where: str):
    return flaky.with_options(on_completion=[_journal_hook], on_retry=[_journal_hook])(where)


def test_retries_and_hooks(on, tmp_path):
    run = retried.run(str(tmp_path), cluster=on, progress=False)
    assert run.result() == "ok"
    assert run.states["flaky"].attempts == 2
    assert [line.split(":")[0] for line in _lines(tmp_path / "journal")] == [
        "try", "AwaitingRetry-1", "try", "Completed-2"]


@df.task(cache=True)
async def counted(where, x):
    note(os.path.join(where, "journal"), f"ran-{x}")
    await asyncio.sleep(0)
    return x * 10


def test_caching(on, tmp_path):
    @df.flow(result_storage=f"file://{tmp_path}/store")
    def flow(where: str):
        return counted.map(df.unmapped(where), [1, 2])

    assert flow(str(tmp_path), cluster=on, progress=False) == [10, 20]
    run = flow.run(str(tmp_path), cluster=on, progress=False)
    assert run.result() == [10, 20]
    assert {s.name for s in run.states.values()} == {"Cached"}
    assert sorted(line.split(":")[0] for line in _lines(tmp_path / "journal")) == [
        "ran-1", "ran-2"]


@df.task(log_prints=True)
async def chatty(x):
    await asyncio.sleep(0)
    print(f"printed {x}")
    df.get_run_logger().warning("logged %s in %s", x, df.context().task_run_name)
    return x


@df.flow
def chatter():
    return chatty.map([1, 2])


def test_logs_and_context_reach_the_driver(on):
    run = chatter.run(cluster=on, progress=False)
    assert run.result() == [1, 2]
    messages = {(lg["task"], lg["message"]) for lg in run.logs}
    for i, x in enumerate([1, 2]):
        assert (f"chatter/chatty[{i}]", f"printed {x}") in messages
        assert (f"chatter/chatty[{i}]", f"logged {x} in chatty[{i}]") in messages


# -- async flows ----------------------------------------------------------------------


@df.flow
async def gathered(n: int = 3):
    a, b = nap(1), nap(2)
    x, y = await asyncio.gather(a, b)  # both submitted by the first wait: they overlap
    total = await add(a, b)  # `await task(...)`: its value
    many = await nap.map(range(n), seconds=0.01)  # a map: its list
    try:
        await boom(total)
    except ValueError as err:
        caught = str(err)
    return {"x": x, "y": y, "total": total, "many": many, "caught": caught,
            "later": inc(add(a, total))}  # references, given to other tasks and returned


EXPECTED = {"x": 1, "y": 2, "total": 3, "many": [0, 1, 2], "caught": "bad 3", "later": 5}


def test_an_async_body_awaits_references(on):
    assert gathered(cluster=on, progress=False) == EXPECTED
    run = gathered.run(n=1, cluster=on, progress=False)
    assert run.state.is_completed() and run.result()["many"] == [0]
    assert run.states["boom"].is_failed()


def test_gathered_references_wait_together(client):
    @df.flow
    async def pair():
        return await asyncio.gather(nap(1, 1.0), nap(2, 1.0))

    pair(cluster=client, progress=False)
    start = time.monotonic()
    assert pair(cluster=client, progress=False) == [1, 2]
    assert time.monotonic() - start < 1.8  # one second each, at the same time


def test_await_a_flow_from_async_code(on):
    async def main():
        loop_free = asyncio.create_task(asyncio.sleep(0.01))
        results = await asyncio.gather(gathered(cluster=on, progress=False),
                                       gathered(n=1, cluster=on, progress=False))
        await loop_free
        return results

    first, second = asyncio.run(main())
    assert first == EXPECTED and second["many"] == [0]


def test_a_sync_call_in_a_thread_that_runs_a_loop(on):
    """As in a Jupyter cell without `await`: a plain call from a thread whose
    event loop runs gets the value; the body runs on a loop of its own."""
    async def cell():
        return _sync_call(on)

    assert asyncio.run(cell()) == EXPECTED


def _sync_call(on):
    return gathered(cluster=on, progress=False)  # called from a plain def: the value


@df.flow
async def inner(x: int):
    return add(await nap(x, 0.01), 1)


@df.flow
async def outer(x: int):
    first = await inner(x)
    return await inner(first)


def test_nested_async_flows_share_the_run(on):
    run = outer.run(1, cluster=on, progress=False)
    assert run.result() == 3
    assert sorted(run.states) == ["inner/add", "inner/add-2", "inner/nap", "inner/nap-2"]


def test_misuse_is_refused():
    with pytest.raises(FlowDefinitionError, match="async generator"):
        @df.flow
        async def agen():
            yield 1

    async def outside():
        with df.define.build.Builder("x") as builder:
            ref = builder.add(nap, (1,), {})
        with pytest.raises(FlowDefinitionError, match="works only in the body"):
            await ref

    asyncio.run(outside())
    assert "waits for nap" in gathered.visualize().source  # drawn up to its first await


@df.flow
async def as_they_end(n: int):
    return sorted([await element for element in df.as_completed(nap.map(range(n), 0.01))])


def test_elements_are_awaitable(on):
    assert as_they_end(3, cluster=on, progress=False) == [0, 1, 2]


@df.task
async def sleeper(where):
    note(os.path.join(where, "journal"), "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        note(os.path.join(where, "journal"), "cancelled")
        raise


@df.flow
def sleeping(where: str):
    return sleeper(where)


def test_cancelling_the_run_cancels_the_coroutine(client, tmp_path):
    journal = tmp_path / "journal"
    run = sleeping.submit(str(tmp_path), cluster=client, progress=False)
    deadline = time.monotonic() + 30
    while not journal.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    run.cancel()
    while len(_lines(journal)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line.split(":")[0] for line in _lines(journal)] == ["started", "cancelled"]
    assert run.state.is_cancelled()
