"""Flow bodies that wait for task values: ref.result(), ref.wait(), ref.state,
df.wait, df.as_completed, task.submit; on "sync" and on a real cluster."""

from __future__ import annotations

import os
import threading
import time

import pytest
from common_tasks import inc, journal, linger, note, total, use

import daskflow as df


def _journal(path):
    with open(path) as f:
        return f.read().splitlines()


@df.task
def check(x, above):
    return x > above


@df.task
def halve(x):
    return x / 2


@df.task
def explode(x):
    raise ValueError(f"bad value {x}")


@df.task
def numbers(n):
    return list(range(n))


@df.task
def slow_square(x):
    time.sleep(0.05 * (3 - x % 3))
    return x * x


@df.flow
def branch(n: int):
    x = inc(n)
    if check(x, 3).result():
        return inc(inc(x))  # big: n + 3
    return total([x, x])  # small: 2 * (n + 1)


@df.flow
def converge(start: float = 128.0):
    value = inc(start)
    rounds = 0
    while value.result() > 5:
        value = halve(value)
        rounds += 1
    return value, rounds


@df.flow
def child(x: int):
    return inc(inc(x))


@df.flow
def parent(n: int):
    x = inc(n)
    if check(x, 0).result():
        return child(x)
    return x


@df.flow
def loop_over(n: int = 4):
    out = []
    for item in numbers(n).result():
        out.append(inc(item))
    return total(out)


@df.flow
def catches():
    bad = explode(1)
    try:
        bad.result()
    except ValueError as err:
        caught = str(err)
    else:
        caught = None
    returned = bad.result(raise_on_failure=False)
    return caught, type(returned).__name__, inc(41)


@df.flow
def many(n: int = 6):
    squares = slow_square.map(range(n))
    done, not_done = df.wait(squares)
    order = [e.index for e in df.as_completed(squares)]
    values = sorted(e.result() for e in df.as_completed(squares))
    return len(done), len(not_done), sorted(order), values, squares.result()


def test_branch_on_a_value_both_sides(on):
    assert branch(5, cluster=on) == 8
    assert branch(1, cluster=on) == 4
    run = branch.run(5, cluster=on)
    assert run.state.is_completed()
    assert set(run.states) == {"inc", "check", "inc-2", "inc-3"}  # one run, every stage


def test_loop_until_a_value_converges(on):
    value, rounds = converge(128.0, cluster=on)
    assert (value, rounds) == (129 / 32, 5)


def test_nested_flow_under_a_condition(on):
    run = parent.run(1, cluster=on)
    assert run.result() == 4
    assert {"child/inc", "child/inc-2"} <= set(run.states)


def test_for_over_a_list_a_task_returned(on):
    assert loop_over(4, cluster=on) == 1 + 2 + 3 + 4


def test_a_failed_tasks_exception_is_caught_in_the_body(on):
    run = catches.run(cluster=on)
    caught, returned, value = run.result()
    assert caught == "bad value 1"
    assert returned == "ValueError"
    assert value == 42
    # the body handled the failure: the run's state follows what it returned
    assert run.state.is_completed()
    assert run.states["explode"].is_failed()


def test_wait_and_as_completed_on_a_map(on):
    done, not_done, order, values, all_values = many(6, cluster=on)
    assert (done, not_done) == (6, 0)
    assert order == list(range(6))
    assert values == sorted(x * x for x in range(6)) == sorted(all_values)


@df.flow
def states_and_timeouts(seconds: float, in_process: bool):
    slow = linger(seconds)
    before = slow.state
    if in_process:  # the task ran whole when the wait submitted it
        waited = slow.wait(timeout=0.05)
    else:
        with pytest.raises(df.WaitTimeout, match="linger"):
            slow.result(timeout=0.05)
        waited = slow.wait(timeout=0.05)
    final = slow.wait()
    fast = inc.submit(1)  # Prefect 3's spelling
    return before.name, waited, final.name, slow.state.name, fast.result(), fast.state.name


def test_state_wait_timeout_and_submit(on):
    before, waited, final, after, fast, fast_state = states_and_timeouts(
        1.0, on == "sync", cluster=on)
    assert before == "Pending"
    if on == "sync":
        assert waited.name == "Completed"
    else:
        assert waited is None  # not ended after 0.05 s
    assert (final, after) == ("Completed", "Completed")
    assert (fast, fast_state) == (2, "Completed")


def test_refs_still_refuse_bool_and_point_to_result():
    @df.flow
    def misuse():
        if inc(1):
            return 1

    with pytest.raises(df.FlowDefinitionError, match=r"call \.result\(\) to wait"):
        misuse(cluster="sync")


def test_result_outside_the_flow_body_is_a_clear_error():
    kept = []

    @df.flow
    def leaks():
        ref = inc(1)
        kept.append(ref)
        return ref

    assert leaks(cluster="sync") == 2
    with pytest.raises(df.FlowDefinitionError, match="only in the body of the flow"):
        kept[0].result()
    with pytest.raises(df.FlowDefinitionError, match="works inside a flow body"):
        inc.submit(1)


def test_a_body_that_raises_after_a_wait_fails_the_run_with_it(on, tmp_path):
    path = str(tmp_path / "journal")

    @df.flow
    def raises_late():
        with journal(path, "db") as handle:
            first = use(path, handle, "a")
            if first.result() == "a":
                raise RuntimeError("the body gave up")
            use(path, handle, "b")

    run = raises_late.run(cluster=on)
    assert run.state.is_failed()
    assert isinstance(run.state.exception, RuntimeError)
    with pytest.raises(RuntimeError, match="the body gave up"):
        run.result()
    lines = [line.split(":")[0] for line in _journal(path)]
    assert lines == ["open-db", "use-a-handle-db", "close-db"]  # cleanup ran, once


@df.flow
def block_across_a_wait(path: str, where: str):
    with journal(path, "db") as handle:
        first = use(path, handle, "a")
        first.result()
        gate = wait_here(where)
        gate.result()  # cancelled while the body waits here
        use(path, handle, "b")


@df.task
def wait_here(where):
    open(os.path.join(where, "started"), "w").close()
    deadline = time.time() + 30
    while time.time() < deadline and not os.path.exists(os.path.join(where, "go")):
        time.sleep(0.02)
    return 1


def test_cancel_during_a_wait_cleans_up_once(on, tmp_path):
    path, where = str(tmp_path / "journal"), str(tmp_path)
    run = block_across_a_wait.submit(path, where, cluster=on)
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(where, "started")) and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(os.path.join(where, "started"))
    if on == "sync":
        # in process the task holds the run's only thread: let it end, then
        # the cancel stops the body at its next step
        threading.Timer(0.3, lambda: open(os.path.join(where, "go"), "w").close()).start()
    assert run.cancel(timeout=30)
    assert run.state.is_cancelled()
    open(os.path.join(where, "go"), "w").close()
    if "journal.cleanup" in run.states:  # built once the block closed (on sync)
        assert run.states["journal.cleanup"].name == "CleanedUp"
    lines = [line.split(":")[0] for line in _journal(path)]
    assert lines.count("open-db") == 1 and lines.count("close-db") == 1
    assert "use-b-handle-db" not in lines
    assert lines[-1] == "close-db"


@df.task(cache=True)
def counted(path, x):
    note(path, f"ran-{x}")
    return x * 10


@df.flow(result_storage=None)
def cached_across(path: str):
    a = counted(path, 1)
    if a.result() > 5:
        return counted(path, a)
    return a


def test_caching_across_a_wait(on, tmp_path, monkeypatch):
    monkeypatch.setenv("DASKFLOW_RESULTS__STORAGE", str(tmp_path / "store"))
    import dask

    path = str(tmp_path / "journal")
    with dask.config.set({"daskflow.results.storage": str(tmp_path / "store")}):
        assert cached_across(path, cluster=on) == 100
        assert cached_across(path, cluster=on) == 100  # both loaded: nothing ran again
    lines = [line.split(":")[0] for line in _journal(path)]
    assert lines == ["ran-1", "ran-10"]


def test_static_flow_is_still_one_submission_and_a_wait_adds_one(client, counter):
    @df.flow
    def static(n: int = 20):
        return total(inc.map(range(n)))

    assert static(20, cluster=client) == sum(range(1, 21))
    assert counter()[0] == 1
    assert branch(5, cluster=client) == 8
    assert counter()[0] == 3  # branch: the check, then the rest


def test_visualize_draws_up_to_the_first_wait():
    pytest.importorskip("graphviz")
    graph = branch.visualize(5)
    source = graph.source
    assert "check" in source and "waits for check" in source
    assert "inc-2" not in source  # built only once the value is known


@df.task(retries=1, retry_delay=0)
def flaky_once(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("first attempt fails")
    return 1


@df.task(tags=["db"])
def tagged(x):
    return x + 1


@df.task(trigger=df.always_run)
def after_all(*upstream):
    return "ran"


@df.task
def size_of(blob):
    return len(blob)


@df.flow(concurrency={"db": 1})
def features_across(marker: str, blob: bytes):
    first = flaky_once(marker)
    bad = explode(first)
    if first.result() == 1:  # the retried task's value, after its retry
        n = size_of(blob)  # a large constant built after the wait: scattered
        ups = tagged.map(range(4))  # tag-limited, submitted after the wait
        cleanup = after_all(bad, ups)
        also = inc(first, wait_for=[df.allow_failure(bad)])
        return n, ups, cleanup, also
    return None


def test_retries_triggers_limits_scatter_and_the_report_across_a_wait(on, tmp_path):
    blob = b"x" * 2_000_000
    run = features_across.run(str(tmp_path / "marker"), blob, cluster=on)
    n, ups, cleanup, also = run.result()
    assert (n, ups, cleanup, also) == (2_000_000, [1, 2, 3, 4], "ran", 2)
    assert run.states["flaky_once"].attempts == 2
    assert run.states["explode"].is_failed()
    with open(run.report(str(tmp_path / "report.html"))) as f:
        report = f.read()
    for name in ("flaky_once", "explode", "size_of", "tagged", "after_all", "inc"):
        assert name in report  # one report: the tasks of both stages


@df.task
def doubled_inc(x):
    return inc(x) * 2  # a task calling a task: a plain call where it runs


@df.flow
def calls_inside(n: int):
    first = inc(n)
    first.result()
    return doubled_inc(first)


def test_a_task_run_at_a_wait_calls_tasks_as_functions(on):
    assert calls_inside(1, cluster=on) == 6


@df.flow
def retries_forever(where: str):
    while True:  # a Prefect-style retry loop that catches everything
        try:
            return wait_here(where).result()
        except Exception:
            time.sleep(0.05)


def test_cancel_reaches_a_body_that_catches_exceptions(client, tmp_path):
    where = str(tmp_path)
    run = retries_forever.submit(where, cluster=client)
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(where, "started")) and time.time() < deadline:
        time.sleep(0.02)
    assert run.cancel(timeout=30)
    assert run.done() and run.state.is_cancelled()
    open(os.path.join(where, "go"), "w").close()


@df.flow
def passes_an_element():
    squares = slow_square.map(range(3))
    first = next(iter(df.as_completed(squares)))
    return inc(first)


@df.flow
def keeps_an_element():
    squares = slow_square.map(range(3))
    done, _ = df.wait(squares)
    element = sorted(done, key=lambda e: e.index)[0]
    del squares  # the element keeps the map's results alive
    total([1]).result()
    return element.result()


def test_elements_are_refused_as_arguments_and_keep_their_map(on):
    with pytest.raises(df.FlowDefinitionError, match="cannot be passed to a task"):
        passes_an_element(cluster=on)
    assert keeps_an_element(cluster=on) == 0


@df.flow
def waits_for_a_dynamic_map(n: int):
    parts = slow_square.map(numbers(n))
    done, not_done = df.wait(parts, timeout=60)
    return len(done), len(not_done)


def test_wait_on_a_map_known_at_run_time(on):
    assert waits_for_a_dynamic_map(4, cluster=on) == (4, 0)


@df.task
def count_rows():
    return 3


@df.task(cache=True)
def expensive(path, n):
    note(path, f"expensive-{n}")
    return n * 100


@df.flow
def cached_after_first_wait(path: str):
    n = count_rows()  # stores nothing: the cache plan starts after this wait
    n.result()
    return expensive(path, n)


def test_a_cached_task_after_a_wait_keys_through_earlier_tasks(on, tmp_path):
    import dask

    path = str(tmp_path / "journal")
    with dask.config.set({"daskflow.results.storage": str(tmp_path / "store")}):
        assert cached_after_first_wait(path, cluster=on) == 300
        assert cached_after_first_wait(path, cluster=on) == 300
    assert [line.split(":")[0] for line in _journal(path)] == ["expensive-3"]


def test_a_wait_opens_a_cluster_spec_as_a_cluster(tmp_path):
    """The first wait starts the run's cluster while the body is being built:
    a spec (a resource inside a flow body) must open as a cluster there."""
    assert branch(5, cluster=df.clusters.Local(n_workers=1, threads_per_worker=1)) == 8


@df.task
def blob(i):
    return bytes(1_000_000) + bytes([i])


def test_a_body_looping_over_waits_lets_earlier_results_go(client):
    from plugins import keys_in_memory

    @df.flow
    def loop(n: int = 5):
        sizes = [len(blob(i).result()) for i in range(n)]
        deadline = time.monotonic() + 10  # the body runs here, on the driver
        while time.monotonic() < deadline:
            left = client.run_on_scheduler(keys_in_memory, prefix="blob-")
            if len(left) <= 1:
                break
            time.sleep(0.05)
        return sizes, left

    sizes, left = loop(cluster=client)
    assert sizes == [1_000_001] * 5
    assert len(left) <= 1, left  # only the last one's, still a sink


def test_visualize_stops_at_a_wait_a_body_guards_with_except_exception():
    pytest.importorskip("graphviz")

    @df.flow
    def guarded():
        x = inc(1)
        try:
            if x.result() > 1:
                return inc(x)
        except Exception:  # must not swallow the stop of the build
            return total([x, x])
        return x

    source = guarded.visualize().source
    assert "waits for inc" in source and "total" not in source
