"""Task and flow semantics users rely on (Prefect's), each run on "sync" and on a
real process cluster: maps, retries, signals, triggers (also inside resource
blocks), timeouts, context, nested flows."""

from __future__ import annotations

import os
import time

import pytest
from common_tasks import inc, total

import daskflow as df

# -- tasks (module level, so worker processes import them) --------------------


@df.task
def add(x, y):
    return x + y


@df.task
def count_to(n):
    return list(range(n))


@df.task
def boom(x=None):
    raise ValueError(f"boom {x}")


@df.task
def identity(x):
    return x


def _append(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def _lines(path):
    with open(path) as f:
        return f.read().split()


@df.task(retries=2, retry_delay=[0.2, 0.4])
def flaky(path, fail_times):
    _append(path, f"{os.getpid()}:{time.time()}")
    if len(_lines(path)) <= fail_times:
        raise ConnectionError("not yet")
    return "ok"


@df.task(retries=3, retry_on=ConnectionError)
def wrong_error(path):
    _append(path, "x")
    raise KeyError("not retried")


@df.task(retries=3)
def fails_hard(path):
    _append(path, "x")
    raise df.FAIL("give up now")


@df.task
def maybe_skip(x):
    if x is None:
        raise df.SKIP("nothing to do", result="fallback")
    return x


@df.task(skip_on_upstream_skip=False)
def takes_skipped(x):
    return f"got {x}"


@df.task(trigger=df.always_run)
def always(x):
    return f"always {type(x).__name__}"


@df.task(trigger=df.any_failed)
def on_failure(*xs):
    return "handled"


@df.task(trigger=df.all_failed)
def on_all_failed(*xs):
    return "all failed"


@df.task(trigger=df.any_successful)
def on_any_success(*xs):
    return "some succeeded"


@df.task
def receives(x):
    return repr(x)


@df.task
def stamp(path, label, delay=0.0):
    time.sleep(delay)
    _append(path, label)
    return label


@df.task(timeout=0.5)
def slow(seconds):
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.01)
    return "finished"


@df.task
def describe():
    ctx = df.context()
    return {"task": ctx.task_name, "index": ctx.map_index, "attempt": ctx.attempt,
            "flow": ctx.flow_name, "run": ctx.flow_run_id, "params": ctx.parameters}


@df.task
def describe_each(x):
    ctx = df.context()
    return (ctx.task_run_name, ctx.map_index)


# -- flows ------------------------------------------------------------------------


@df.flow
def dynamic_map(n: int):
    return total(inc.map(count_to(n)))


@df.flow
def chain(n: int = 20):
    x = inc(0)
    for _ in range(n - 1):
        x = inc(x)
    return x


# -- tests ---------------------------------------------------------------------------


def test_plain_call_outside_a_flow():
    assert inc(1) == 2


def test_map_over_static_list_and_reduce(on):
    @df.flow
    def f(xs: list):
        return total(inc.map(xs))

    assert f(list(range(10)), cluster=on) == 55


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_map_over_runtime_list(on, n):
    run = dynamic_map.run(n=n, cluster=on)
    assert run.result() == sum(range(1, n + 1))
    assert run.state.is_completed()
    assert len([k for k in run.states if k.startswith("inc[")]) == n
    assert run.states["total"].is_completed()


def test_chain(on):
    assert chain(cluster=on) == 20


def test_map_over_map_and_unmapped(on):
    @df.flow
    def f():
        firsts = inc.map(count_to(4))
        return add.map(firsts, df.unmapped(10))

    assert f(cluster=on) == [11, 12, 13, 14]


def test_state_names_and_map_children(on):
    run = dynamic_map.run(n=3, cluster=on)
    assert list(run.states) == ["count_to", "inc[0]", "inc[1]", "inc[2]", "total"]
    assert run.states["inc[1]"].map_index == 1
    assert run.states["inc[1]"].attempts == 1
    assert run.states["inc[1]"].duration >= 0


def test_retries_with_delays_across_processes(on, tmp_path):
    path = str(tmp_path / "attempts")

    @df.flow
    def f():
        return flaky(path, 2)

    run = f.run(cluster=on)
    assert run.result() == "ok"
    assert run.states["flaky"].attempts == 3
    stamps = [float(line.split(":")[1]) for line in _lines(path)]
    assert len(stamps) == 3
    assert stamps[1] - stamps[0] >= 0.2
    assert stamps[2] - stamps[1] >= 0.4
    assert "  flaky  Completed (2 retries)" in run.summary().splitlines()


def test_retry_delay_takes_a_timedelta():
    import datetime

    t = df.task(retries=2, retry_delay=datetime.timedelta(seconds=5))(lambda: 1)
    assert t.retry_delays == (5.0,)
    t = df.task(retries=2, retry_delay=[datetime.timedelta(milliseconds=500), 2])(lambda: 1)
    assert t.retry_delays == (0.5, 2.0)


def test_a_failed_run_says_which_task_without_jargon(on):
    @df.flow
    def f():
        return [boom(i) for i in range(3)]

    message = f.run(cluster=on).state.message
    assert message.startswith("task 'boom' did not complete (Failed): ValueError"), message
    assert "2 more of the 3 task runs that decide the flow's state" in message, message
    assert "reference" not in message


def test_retries_exhausted(on, tmp_path):
    path = str(tmp_path / "attempts")

    @df.flow
    def f():
        return flaky(path, 10)

    run = f.run(cluster=on)
    assert run.state.is_failed()
    assert run.states["flaky"].attempts == 3
    with pytest.raises(ConnectionError, match="not yet"):
        run.result()


def test_retry_on_other_error_is_not_retried(on, tmp_path):
    path = str(tmp_path / "attempts")

    @df.flow
    def f():
        return wrong_error(path)

    run = f.run(cluster=on)
    assert run.states["wrong_error"].attempts == 1
    assert len(_lines(path)) == 1
    with pytest.raises(KeyError):
        run.result()


def test_fail_signal_is_not_retried(on, tmp_path):
    path = str(tmp_path / "attempts")

    @df.flow
    def f():
        return fails_hard(path)

    run = f.run(cluster=on)
    assert run.states["fails_hard"].is_failed()
    assert run.states["fails_hard"].message == "give up now"
    assert len(_lines(path)) == 1
    with pytest.raises(df.FAIL):
        run.result()


def test_skip_propagates_unless_disabled(on):
    @df.flow
    def f():
        skipped = maybe_skip(None)
        return {"propagated": inc(skipped), "kept": takes_skipped(skipped)}

    run = f.run(cluster=on)
    assert run.states["maybe_skip"].is_skipped()
    assert run.states["inc"].is_skipped()
    assert run.states["inc"].name == "UpstreamSkipped"
    assert run.states["takes_skipped"].is_completed()
    assert run.state.is_completed()  # skipped counts as done
    assert run.result() == {"propagated": None, "kept": "got fallback"}


def test_failure_downstream_is_trigger_failed(on):
    @df.flow
    def f():
        return inc(boom(1))

    run = f.run(cluster=on)
    assert run.states["boom"].is_failed()
    assert run.states["inc"].name == "TriggerFailed"
    assert run.state.is_failed()
    with pytest.raises(ValueError, match="boom 1"):  # the root cause, not a wrapper
        run.result()


def test_triggers(on):
    @df.flow
    def f():
        ok, bad = inc(1), boom(2)
        return {
            "always": always(bad),
            "any_failed": on_failure(ok, bad),
            "any_failed_none": on_failure(ok),
            "all_failed": on_all_failed(bad),
            "all_failed_mixed": on_all_failed(ok, bad),
            "any_success": on_any_success(ok, bad),
            "any_success_none": on_any_success(bad),
        }

    run = f.run(cluster=on)
    s = run.states
    assert s["always"].is_completed()
    assert s["on_failure"].is_completed()
    assert s["on_failure-2"].is_skipped() and s["on_failure-2"].name == "NotTriggered"
    assert s["on_all_failed"].is_completed()
    assert s["on_all_failed-2"].is_skipped()
    assert s["on_any_success"].is_completed()
    assert s["on_any_success-2"].name == "TriggerFailed"


def test_always_run_receives_the_exception(on):
    @df.flow
    def f():
        return always(boom(1))

    assert f(cluster=on) == "always ValueError"


def test_allow_failure_passes_the_exception(on):
    @df.flow
    def f():
        return receives(df.allow_failure(boom(3)))

    run = f.run(cluster=on)
    assert run.states["receives"].is_completed()
    assert run.result() == "ValueError('boom 3')"


def test_wait_for_orders_without_data(on, tmp_path):
    path = str(tmp_path / "order")

    @df.flow
    def f():
        first = stamp(path, "first", delay=0.3)
        second = stamp(path, "second", wait_for=[first])
        return second

    assert f(cluster=on) == "second"
    assert _lines(path) == ["first", "second"]


def test_wait_for_failed_upstream_blocks(on, tmp_path):
    @df.flow
    def f():
        return stamp(str(tmp_path / "never"), "x", wait_for=[boom()])

    run = f.run(cluster=on)
    assert run.states["stamp"].name == "TriggerFailed"
    assert not (tmp_path / "never").exists()


def test_timeout(on):
    @df.flow
    def f():
        return slow(5)

    run = f.run(cluster=on)
    state = run.states["slow"]
    assert state.is_failed()
    assert isinstance(state.exception, df.TaskTimeoutError)
    assert state.duration < 4


def test_context(on):
    @df.flow
    def ctxflow(label: str = "x"):
        return {"one": describe(), "each": describe_each.map([10, 20])}

    run = ctxflow.run(label="hello", cluster=on)
    one = run.result()["one"]
    assert one["task"] == "describe" and one["index"] is None and one["attempt"] == 1
    assert one["flow"] == "ctxflow" and one["run"] == run.run_id
    assert one["params"] == {"label": "hello"}
    assert run.result()["each"] == [("describe_each[0]", 0), ("describe_each[1]", 1)]


def test_context_outside_a_task():
    with pytest.raises(df.MissingContextError):
        df.context()
    with pytest.raises(df.MissingContextError):
        df.get_run_logger()


@df.flow
def inner(x: int):
    return inc(inc(x))


def test_nested_flow_shares_the_graph(on):
    @df.flow
    def outer():
        return add(inner(1), inner(10))

    run = outer.run(cluster=on)
    assert run.result() == 15
    assert {"inner/inc", "inner/inc-2", "inner/inc-3", "inner/inc-4", "add"} == set(run.states)


def test_flow_returning_plain_values_and_structures(on):
    @df.flow
    def f():
        return {"a": [inc(1), 5], "b": (inc(2),)}

    assert f(cluster=on) == {"a": [2, 5], "b": (3,)}


@df.task
def append_one(i, seen, bag):
    bag.append(i)
    return len(bag)


def test_map_children_never_share_a_mutable_argument(on):
    """Each child gets its own copy of a constant list (the children of a map
    share one argument template): a task that changes what it was given
    changes nobody else's."""
    @df.flow
    def f():
        return append_one.map([1, 2, 3], df.unmapped(inc(0)), df.unmapped([]))

    assert f(cluster=on) == [1, 1, 1]


def test_container_subclasses_carry_refs_in_and_out(on):
    import collections

    Pair = collections.namedtuple("Pair", "left right")

    @df.flow
    def f():
        pair = Pair(inc(1), inc(2))
        return collections.OrderedDict(total=total(pair), pair=pair)

    out = f(cluster=on)
    assert out == {"total": 5, "pair": (2, 3)}
    assert type(out) is collections.OrderedDict and type(out["pair"]) is Pair


def test_flow_without_return_fails_on_terminal_failure(on):
    @df.flow
    def f():
        inc(1)
        always(boom(1))  # a cleanup that runs must not hide the failure

    run = f.run(cluster=on)
    assert run.states["always"].is_completed()
    assert run.state.is_failed()
    with pytest.raises(ValueError):
        run.result()


def test_mapping_over_non_sequence_fails_the_map(on):
    @df.flow
    def f():
        return inc.map(inc(1))

    run = f.run(cluster=on)
    assert run.states["inc-2"].name == "MappingFailed"
    with pytest.raises(df.MappingError, match="type int is not a collection.*return a list"):
        run.result()


def test_map_over_failed_upstream(on):
    @df.flow
    def f():
        return total(inc.map(boom()))

    run = f.run(cluster=on)
    assert run.states["inc"].name == "TriggerFailed"
    assert run.states["total"].name == "TriggerFailed"
    with pytest.raises(ValueError):
        run.result()


@df.task(resources={"FOO": 1})
def needs_foo():
    from distributed import get_worker

    ctx = df.context()
    return dict(get_worker().state.tasks[ctx.key].resource_restrictions)


@df.task(resources={"FOO": 2})
def foo_each(x):
    from distributed import get_worker

    return dict(get_worker().state.tasks[df.context().key].resource_restrictions)


@df.task
def plain_task():
    from distributed import get_worker

    return dict(get_worker().state.tasks[df.context().key].resource_restrictions)


def test_worker_resources_reach_dask(client):
    @df.flow
    def f():
        return {"foo": needs_foo(), "plain": plain_task(), "each": foo_each.map(count_to(2))}

    result = f(cluster=client)
    assert result["foo"] == {"FOO": 1}
    assert result["each"] == [{"FOO": 2}, {"FOO": 2}]  # map children, in a later stage too
    assert result["plain"] == {}


# -- tasks of the semantics inside resource blocks and over sets (module level) -------------


@df.task
def fails():
    raise ValueError("nope")


@df.task(trigger=df.all_failed)
def handled_if_all_failed(x):
    return "handled"


@df.task(trigger=df.any_successful)
def ran_if_any_succeeded(x):
    return "ran"


@df.resource
def plain():
    yield "r"


class Recorder:
    def __init__(self, value):
        self.value = value

    def setup(self):
        return f"got {self.value}"

    def cleanup(self, resource):
        pass


Recorded = df.resource_manager(Recorder)


@df.resource
def holding(value):
    yield f"holds {value}"


@df.task
def make_value():
    return 41


@df.task
def show(r):
    return r


@df.task
def items(kind):
    return {"set": {3, 1, 2}, "dict": {"a": 1, "b": 2}}[kind]


@df.task
def echo(x):
    return x


@df.task
def tidy():
    return "tidied"


@df.resource
def broken_setup():
    raise RuntimeError("cannot open")
    yield  # pragma: no cover


# -- 1. triggers inside a resource block ------------------------------------------------


def test_all_failed_handler_inside_a_block_sees_only_its_upstream(on):
    @df.flow
    def f():
        with plain():
            handled = handled_if_all_failed(fails())
        return handled

    run = f.run(cluster=on)
    assert run.states["handled_if_all_failed"].is_completed()
    assert run.result() == "handled"


def test_any_successful_inside_a_block_over_a_failure_fails_the_flow(on):
    @df.flow
    def f():
        with plain():
            ran_if_any_succeeded(fails())

    run = f.run(cluster=on)
    assert run.states["ran_if_any_succeeded"].name == "TriggerFailed"
    assert run.state.is_failed()


# -- 2. a resource whose argument is a task result ---------------------------------------


@pytest.mark.parametrize("form", ["class", "generator"])
def test_resource_argument_can_be_a_task_result(on, form):
    res = Recorded if form == "class" else holding

    @df.flow
    def f():
        with res(value=make_value()) as r:
            out = show(r)
        return out

    expected = "got 41" if form == "class" else "holds 41"
    assert f(cluster=on) == expected


# -- 3. mapping over sets and dicts (a non-collection: test_mapping_over_non_sequence...) ---


@pytest.mark.parametrize("kind,expected", [("set", [1, 2, 3]), ("dict", ["a", "b"])])
def test_map_over_a_set_or_dict_result(on, kind, expected):
    @df.flow
    def f():
        return echo.map(items(kind))

    assert sorted(f(cluster=on)) == expected


# -- 4. wait_for with allow_failure --------------------------------------------------------


def test_wait_for_allow_failure_lets_the_task_run(on):
    @df.flow
    def f():
        return tidy(wait_for=[df.allow_failure(fails())])

    run = f.run(cluster=on)
    assert run.states["tidy"].is_completed()
    assert run.result() == "tidied"


# -- 5. a failed setup fails the run, even with an empty block -----------------------------


def test_failed_setup_with_an_empty_block_fails_the_run(on):
    @df.flow
    def f():
        with broken_setup():
            pass

    run = f.run(cluster=on)
    assert run.states["broken_setup"].is_failed()
    assert run.state.is_failed()
    with pytest.raises(RuntimeError, match="cannot open"):
        run.result()


def test_a_failed_task_s_traceback_points_at_the_user_s_line(on):
    """A task defined here travels to the workers by value (cloudpickle names
    its code "<dynamic-code>"): its traceback still names this file, the line
    and its source, and starts at the task's own code."""
    @df.task
    def parse(text):
        value = int(text)  # the line that fails
        return value

    @df.flow
    def f():
        return parse("x")

    tb = f.run(cluster=on).states["parse"].traceback
    assert f'File "{__file__}", line' in tb and "in parse" in tb, tb
    assert "value = int(text)  # the line that fails" in tb, tb
    assert "<dynamic-code>" not in tb and "daskflow" + os.sep not in tb, tb
    assert tb.rstrip().endswith("ValueError: invalid literal for int() with base 10: 'x'")


def test_daskflow_s_frames_are_kept_when_asked(on):
    import dask

    @df.task
    def boom():
        raise KeyError("k")

    @df.flow
    def f():
        return boom()

    with dask.config.set({"daskflow.logging.traceback-internals": True}):
        tb = f.run(cluster=on).states["boom"].traceback
    assert os.path.join("daskflow", "worker", "run.py") in tb, tb


@df.task
def dask_inside():
    """Dask work inside a task: an array and a dataframe, computed in the task."""
    import warnings

    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd
    from dask.dataframe.dask_expr import _collection

    _collection._WARN_ANNOTATIONS = True  # it warns once per process: re-arm it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = dd.from_pandas(pd.DataFrame({"x": range(10)}), npartitions=2)
        total = int(frame.x.sum().compute(scheduler="sync"))
        squares = int((da.arange(4, chunks=2) ** 2).sum().compute(scheduler="sync"))
    return total, squares, [str(w.message) for w in caught]


def test_dask_collections_inside_a_task_raise_no_warning(on):
    """The run's span annotation is hidden from the task's own Dask work
    (dask.dataframe warns on any annotation, and -W error fails the task)."""
    @df.flow
    def f():
        return dask_inside()

    total, squares, warned = f(cluster=on)
    assert (total, squares) == (45, 14)
    assert not [w for w in warned if "annotations" in w.lower()], warned


def test_dask_still_keeps_annotations_in_a_contextvar():
    """daskflow hides a task's annotations through dask's private ContextVar
    (worker.context.annotations_hidden): fail loudly if dask changes that."""
    import dask

    from daskflow.worker.context import annotations_hidden

    with dask.annotate(span={"name": ("run",)}):
        assert dask.get_annotations()
        with annotations_hidden():
            assert dask.get_annotations() == {}
        assert "span" in dask.get_annotations()
