"""Prefect 3's run options in daskflow: run names, retry shaping, hooks, flow
options (with_options, retries, timeout), df.tags, validated parameters.

Each runs on Dask's synchronous scheduler and on the real cluster (``on``);
what a task does on a worker is recorded in files under ``tmp_path``.
"""

from __future__ import annotations

import os
import random
import time

import pydantic
import pytest
from common_tasks import journal, note

import daskflow as df
from daskflow.core.retrying import jittered


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split(":")[0] for line in f.read().splitlines()]


# -- run names -------------------------------------------------------------------------


@df.task(task_run_name="load-{day}-{part}")
def load(day, part=0):
    return df.context().task_run_name


def _named(parameters):
    return f"fn-{parameters['x']}"


@df.task(task_run_name=_named)
def by_function(x):
    df.get_run_logger().info("working")
    return x


@df.flow(flow_run_name="daily-{day}")
def daily(day: str = "mon"):
    return load.map([day, "tue"], part=df.unmapped(3)), by_function(7)


def test_run_names_are_formatted_with_the_arguments(on):
    run = daily.run(day="sun", cluster=on)
    names, _ = run.result()
    assert names == ["load-sun-3", "load-tue-3"]  # what df.context() says inside
    assert run.states["load[0]"].run_name == "load-sun-3"
    assert run.states["load[1]"].run_name == "load-tue-3"
    assert run.states["by_function"].run_name == "fn-7"
    assert run.run_name == "daily-sun"
    assert "'daily-sun'" in run.summary().splitlines()[0]
    assert any(r["task"].endswith("fn-7") and r["message"] == "working" for r in run.logs)
    back = df.FlowRun.from_json(run.to_json())
    assert back.run_name == "daily-sun" and back.states["load[0]"].run_name == "load-sun-3"


def test_a_run_name_naming_no_parameter_fails_when_defined():
    with pytest.raises(df.RunNameError, match="'dy', which is not one of its parameters: day"):
        df.task(task_run_name="x-{dy}")(lambda day: day)
    with pytest.raises(df.RunNameError, match="'when'"):
        df.flow(flow_run_name="{when}")(lambda day: None)
    with pytest.raises(df.RunNameError, match="positional field"):
        df.task(task_run_name="x-{}")(lambda day: day)
    assert issubclass(df.RunNameError, df.DaskflowError)


def test_a_flow_run_name_function_that_fails_stops_the_run_before_it_starts(tmp_path):
    def broken():
        raise KeyError("nope")

    @df.flow(flow_run_name=broken)
    def f():
        return by_function(1)

    with pytest.raises(df.RunNameError, match="could not be formatted"):
        f.run(cluster="sync")


# -- retry shaping -------------------------------------------------------------------------


def test_exponential_backoff_is_prefects():
    assert df.exponential_backoff(backoff_factor=10)(3) == [10.0, 20.0, 40.0]
    t = df.task(retries=3, retry_delay_seconds=df.exponential_backoff(0.5))(lambda: 1)
    assert t.retry_delays == (0.5, 1.0, 2.0)
    assert t.with_options(retries=4).retry_delays == (0.5, 1.0, 2.0, 4.0)
    with pytest.raises(df.FlowDefinitionError, match="both retry_delay= and"):
        df.task(retry_delay=1, retry_delay_seconds=2)(lambda: 1)
    assert df.task(timeout_seconds=3)(lambda: 1).timeout == 3


def test_jitter_stays_within_its_factor():
    rng = random.Random(1)
    drawn = [jittered(10.0, 0.5, rng) for _ in range(200)]
    assert all(5.0 <= d <= 15.0 for d in drawn)
    assert len({round(d, 3) for d in drawn}) > 100  # spread, not one value
    assert jittered(10.0, None) == 10.0
    with pytest.raises(df.FlowDefinitionError, match="retry_jitter_factor"):
        df.task(retry_jitter_factor=-1)(lambda: 1)


@df.task(retries=4, retry_delay=0.2, retry_jitter_factor=1.0)
def always_fails():
    raise ValueError("again")


@df.flow
def jittery():
    return always_fails()


def test_jitter_spreads_the_delays_of_a_task(on):
    run = jittery.run(cluster=on)
    tries = run.states["always_fails"].tries
    assert len(tries) == 5
    gaps = [b[0] - a[1] for a, b in zip(tries, tries[1:])]
    assert all(-0.01 <= g <= 0.6 for g in gaps), gaps
    assert not all(abs(g - 0.2) < 0.02 for g in gaps), gaps  # not all the plain delay


def only_value_errors(task, task_run, state):
    """Prefect 3's signature; anything unexpected raises (and so: no retry)."""
    assert isinstance(task, df.Task) and state.is_failed()
    assert task_run.run_count == task_run.attempt >= 1
    try:
        state.result()
    except ValueError:
        return True
    except TypeError:
        return False
    raise AssertionError("state.result() did not raise")


@df.task(retries=5, retry_condition_fn=only_value_errors)
def value_then_type():
    if df.context().attempt < 3:
        raise ValueError("retry me")
    raise TypeError("stop here")


@df.flow
def conditioned():
    return value_then_type()


def test_retry_condition_decides_each_retry(on):
    run = conditioned.run(cluster=on)
    state = run.states["value_then_type"]
    assert state.is_failed() and isinstance(state.exception, TypeError)
    assert state.attempts == 3  # two ValueErrors retried, the TypeError not (of 6 allowed)


# -- hooks -----------------------------------------------------------------------------------


@df.task
def hooked(path, fail):
    note(path, "body")
    if fail:
        raise RuntimeError("down")
    return 1


@hooked.on_running
def _running(task, state):
    note(df.context().parameters["path"], f"running-{state.type.value}")


@hooked.on_completion
def _completed(task, state):
    note(df.context().parameters["path"], "completed")


@hooked.on_failure
def _failed(task, state):
    note(df.context().parameters["path"], f"failed-{state.is_failed()}")


@df.flow
def hooks_flow(path: str, fail: bool = False):
    return hooked(path, fail)


@hooks_flow.on_running
def _flow_running(flow, run):
    note(run.parameters["path"], f"flow-running-{run.state.type.value}")


@hooks_flow.on_failure
def _flow_failed(flow, run):
    note(run.parameters["path"], "flow-failed")


def test_on_running_and_hooks_registered_by_decorators(on, tmp_path):
    path = str(tmp_path / "journal")
    hooks_flow.run(path, cluster=on)
    assert lines(path) == ["flow-running-RUNNING", "running-RUNNING", "body", "completed"]
    os.remove(path)
    hooks_flow.run(path, fail=True, cluster=on)
    assert lines(path) == ["flow-running-RUNNING", "running-RUNNING", "body", "failed-True",
                           "flow-failed"]
    assert len(hooked.on_failure) == 1 and callable(hooked.on_failure)
    with pytest.raises(df.FlowDefinitionError):
        hooked.on_failure("not a function")


# -- flow options ------------------------------------------------------------------------------


def test_with_options_copies_a_flow(tmp_path):
    seen = []
    other = daily.with_options(name="weekly", flow_run_name="w-{day}", retries=2,
                               retry_delay_seconds=1, timeout_seconds=30, cluster="sync",
                               on_completion=[lambda flow, run: seen.append(run.run_name)])
    assert (other.name, other.retries, other.retry_delay, other.timeout) == (
        "weekly", 2, (1.0,), 30.0)
    assert (daily.name, daily.retries, daily.timeout, daily.cluster) == ("daily", 0, None, None)
    run = other.run(day="fri")
    assert run.flow_name == "weekly" and run.run_name == "w-fri" and seen == ["w-fri"]
    with pytest.raises(df.FlowDefinitionError, match="did you mean 'retries'"):
        daily.with_options(retires=1)


@df.task
def counted(path, x):
    note(path, f"counted-{x}")
    return x + 1


@df.task
def flaky(path, x):
    note(path, "flaky")
    if lines(path).count("flaky") < 2:
        raise ConnectionError("the first attempt fails")
    return [v * 10 for v in x]


@df.flow(retries=2, retry_delay=0.1)
def retried(path: str, store: str):
    return flaky(path, counted.map(path, [1, 2]))


def test_a_retried_flow_reuses_its_completed_tasks(on, tmp_path):
    path = str(tmp_path / "journal")
    store = str(tmp_path / "results")
    flow = retried.with_options(result_storage=store)
    ended = []
    flow.on_failure(lambda flow, run: ended.append(run.attempt))
    run = flow.run(path, store, cluster=on)
    assert run.result() == [20, 30] and run.attempt == 2
    # the map ran once: its results came back from the first attempt
    assert sorted(x for x in lines(path) if x.startswith("counted")) == ["counted-1",
                                                                          "counted-2"]
    assert lines(path).count("flaky") == 2
    assert run.states["counted[0]"].name == "Cached"
    assert ended == []  # the failed attempt was retried: no on_failure
    assert not os.listdir(os.path.join(store, ".flow-retries"))  # its own store is gone


@df.flow(retries=1)
def never_works(path: str):
    note(path, "attempt")
    return always_fails.with_options(retries=0)()


def test_a_flow_that_keeps_failing_ends_failed_after_its_retries(tmp_path):
    path = str(tmp_path / "journal")
    run = never_works.run(path, cluster="sync")
    assert run.state.is_failed() and run.attempt == 2 and lines(path) == ["attempt"] * 2


@df.task
def step(path, i):
    time.sleep(0.15)
    note(path, f"step-{i}")
    return i


@df.flow(timeout=0.6)
def slow(path: str):
    with journal(path, "db"):
        last = 0
        for _ in range(20):
            last = step(path, last)
    return last


def test_a_flow_timeout_cancels_the_run_and_cleans_up(on, tmp_path):
    path = str(tmp_path / "journal")
    t0 = time.time()
    run = slow.with_options(fuse=False).run(path, cluster=on)
    took = time.time() - t0
    assert run.state.is_failed() and run.state.name == "TimedOut", run.state
    assert run.state.message.startswith("FlowTimeoutError: flow run "), run.state.message
    with pytest.raises(df.FlowTimeoutError, match="timeout of 0.6s"):
        run.result()
    assert took < 2.5, took  # 20 steps take 3s
    done = [x for x in lines(path) if x.startswith("step")]
    assert 1 <= len(done) < 20
    assert "close-db" in lines(path)  # the resource was cleaned up
    assert any(s.is_cancelled() for s in run.states.values())


# -- tags ----------------------------------------------------------------------------------------


@df.task(tags=["own"])
def tagged_task(x):
    return sorted(df.context().tags)


@df.flow
def with_tags():
    with df.tags("db"):
        a = tagged_task(1)
        with df.tags("nightly"):
            b = tagged_task.map([2])
    c = tagged_task(3)
    return a, b, c


def test_tags_block_adds_tags_to_the_task_runs_inside(on):
    a, b, c = with_tags(cluster=on)
    assert a == ["db", "own"]
    assert b == [["db", "nightly", "own"]]
    assert c == ["own"]
    assert tagged_task.tags == {"own"}


@df.task
def interval(path, seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@df.flow(concurrency={"db": 1})
def limited():
    with df.tags("db"):
        return [interval("x", 0.3), interval("y", 0.3)]


def test_tags_from_a_block_feed_tag_limits(client):
    (s1, e1), (s2, e2) = limited(cluster=client)
    assert e1 <= s2 + 0.02 or e2 <= s1 + 0.02  # one at a time: the limit held


# -- parameters ------------------------------------------------------------------------------------


class Config(pydantic.BaseModel):
    name: str
    size: int = 1


@df.task
def describe(cfg, n):
    return f"{type(cfg).__name__}:{cfg.name}:{cfg.size}:{n!r}"


@df.flow
def configured(cfg: Config, n: int = 0, sizes: list[int] = []):  # noqa: B006
    return describe(cfg, n), sizes


def test_parameters_are_coerced_as_prefect_does(on):
    text, sizes = configured({"name": "a", "size": "4"}, n="3", sizes=["1", 2], cluster=on)
    assert text == "Config:a:4:3" and sizes == [1, 2]
    run = configured.run(Config(name="b"), cluster=on)
    assert run.parameters["cfg"] == Config(name="b") and run.result()[0] == "Config:b:1:0"


def test_bad_parameters_fail_before_anything_starts(tmp_path):
    with pytest.raises(df.ParameterError, match="parameter 'n' of flow 'configured' must be "
                                                 "int.*unable to parse"):
        configured({"name": "a"}, n="three", cluster="sync")
    with pytest.raises(df.ParameterError, match="parameter 'cfg'.*size"):
        configured({"name": "a", "size": "big"}, cluster="sync")
    with pytest.raises(df.ParameterError, match="must be int, got bool"):
        configured({"name": "a"}, n=True, cluster="sync")


@df.task
def kind(x):
    return type(x).__name__


@df.flow(validate_parameters=False)
def unchecked(n: int = 0):
    return kind(n)


def test_validate_parameters_false_keeps_the_values(on):
    assert unchecked("3", cluster=on) == "str"
    assert unchecked.with_options(validate_parameters=True)("3", cluster=on) == "int"


def test_the_report_shows_run_names(tmp_path):
    run = daily.run(day="sat", cluster="sync")
    with open(run.report(str(tmp_path / "r.html"))) as f:
        page = f.read()
    assert "<i>daily-sat</i>" in page and "load-sat-3" in page
    assert "<i>daily-sat</i>" in run._repr_html_()


def test_a_submitted_flow_retries_in_its_one_flow_run(tmp_path):
    path = str(tmp_path / "journal")
    flow = retried.with_options(result_storage=str(tmp_path / "results"))
    run = flow.submit(path, "", cluster="sync")
    assert run.wait(30) is not None and run.done()
    assert run.result() == [20, 30] and run.attempt == 2
    assert run.states["counted[1]"].name == "Cached"
    assert sorted(x for x in lines(path) if x.startswith("counted")) == ["counted-1", "counted-2"]


def test_cancelling_a_run_awaiting_its_retry_ends_it(tmp_path):
    path = str(tmp_path / "journal")
    run = never_works.with_options(retry_delay=30).submit(path, cluster="sync")
    deadline = time.time() + 20
    while run.state.name != "AwaitingRetry" and time.time() < deadline:
        time.sleep(0.02)
    assert run.state.name == "AwaitingRetry" and not run.done()
    t0 = time.time()
    assert run.cancel(timeout=10)
    assert run.state.is_cancelled() and time.time() - t0 < 2
    assert lines(path) == ["attempt"]


def test_a_retried_flow_leaves_one_run_record(tmp_path):
    import dask

    from daskflow.driver.history import RunStore

    runs = str(tmp_path / "runs")
    with dask.config.set({"daskflow.runs.store": runs}):
        # a second apart: the record's file is named by its start's second
        run = never_works.with_options(retry_delay=1.1).run(str(tmp_path / "j"), cluster="sync")
    records = list(RunStore(runs).records())
    assert len(records) == 1, [r["state"] for r in records]
    assert records[0]["run_id"] == run.run_id and records[0]["attempt"] == 2
    assert records[0]["state"]["type"] == "FAILED"


@df.task(cache=True)
def kept(path, x):
    note(path, "kept")
    return x


@df.flow(retries=1)
def caching(path: str):
    return kept(path, 1)


def test_a_cached_task_in_a_retried_flow_keeps_its_own_store(tmp_path):
    path = str(tmp_path / "journal")
    flow = caching.with_options(result_storage=str(tmp_path / "results"))
    flow.run(path, cluster="sync")
    again = flow.run(path, cluster="sync")  # a new run: the cache, not the retry store
    assert again.states["kept"].name == "Cached" and lines(path) == ["kept"]


@df.task
def scheduler_of(path, x):
    from distributed import get_worker

    note(path, "scheduler-" + get_worker().scheduler.address.replace(":", "_"))
    return x


@df.flow(retries=1)
def on_a_temporary_cluster(path: str):
    return flaky(path, [scheduler_of.with_options(cache=False)(path, 1)])  # runs each attempt


def test_the_attempts_share_the_temporary_cluster_they_start(tmp_path, cleanup):  # noqa: F811
    path = str(tmp_path / "journal")
    spec = df.clusters.Local(n_workers=1, processes=False, dashboard_address=":0")
    run = on_a_temporary_cluster.run(path, cluster=spec)
    assert run.result() == [10] and run.attempt == 2 and run.cluster_closed
    used = {x for x in lines(path) if x.startswith("scheduler-")}
    assert len(used) == 1, used  # one scheduler served both attempts
    assert [x for x in lines(path) if x.startswith("scheduler-")] == [*used] * 2


@df.task
def slow_first(path):
    note(path, "try")
    if lines(path).count("try") == 1:
        time.sleep(1.5)
    return "done"


@df.flow(timeout=0.5, retries=1)
def times_out_once(path: str):
    return step(path, slow_first(path))


def test_a_timed_out_attempt_is_retried(on, tmp_path):
    path = str(tmp_path / "journal")
    run = times_out_once.run(path, cluster=on)
    assert run.attempt == 2 and run.result() == "done", run.state
