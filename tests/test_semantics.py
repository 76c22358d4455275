"""Prefect semantics users rely on, and mistakes caught while the flow is built.

Each behaviour runs on "sync" and on the session's real process cluster.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from common_tasks import inc, total

import daskflow as df

# -- tasks (module level: the workers import them) ------------------------------------


@df.task
def fails():
    raise ValueError("nope")


@df.task(trigger=df.all_failed)
def on_all_failed(x):
    return "handled"


@df.task(trigger=df.any_successful)
def on_any_success(x):
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
            handled = on_all_failed(fails())
        return handled

    run = f.run(cluster=on)
    assert run.states["on_all_failed"].is_completed()
    assert run.result() == "handled"


def test_any_successful_inside_a_block_over_a_failure_fails_the_flow(on):
    @df.flow
    def f():
        with plain():
            on_any_success(fails())

    run = f.run(cluster=on)
    assert run.states["on_any_success"].name == "TriggerFailed"
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


# -- 3. mapping over sets and dicts (a non-collection: test_engine) ----------------------


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


# -- 7-11. errors while building --------------------------------------------------------------


def test_wrong_task_arguments_fail_at_build_naming_task_and_parameter():
    @df.flow
    def f():
        return inc(y=1)

    with pytest.raises(df.FlowDefinitionError,
                       match=r"task 'inc' cannot be called like this: .*'x'.*parameters are: x"):
        f.run(cluster="sync")

    @df.flow
    def g():
        return inc.map([1, 2], [3, 4])

    with pytest.raises(df.FlowDefinitionError, match=r"'inc' \(in .map\).*too many"):
        g.run(cluster="sync")


@pytest.mark.parametrize("misuse,what", [
    (lambda r: r == 12, r"Compared \(==\)"),
    (lambda r: r != 12, r"Compared \(!=\)"),
    (lambda r: r > 10, r"Compared \(>\)"),
    (lambda r: f"{r}", r"Formatted \(an f-string or format\(\)\)"),
    (lambda r: str(r), r"string \(str\(\)\)"),
    (lambda r: r[0], r"Indexed \[0\]"),
])
def test_using_a_ref_as_a_value_is_a_definition_error(misuse, what):
    @df.flow
    def f():
        misuse(inc(1))

    with pytest.raises(df.FlowDefinitionError, match=f"{what} the result of task 'inc'.*no value yet"):
        f.run(cluster="sync")


def test_a_closed_object_from_a_with_block_is_caught_at_build(tmp_path):
    db = str(tmp_path / "x.db")

    @df.flow
    def f():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return show(conn)

    with pytest.raises(df.FlowDefinitionError,
                       match=r"task 'show' got a closed Connection as argument 0.*@df.resource"):
        f.run(cluster="sync")

    @df.flow
    def g():
        with open(tmp_path / "f.txt", "w") as fh:
            return show(fh)

    with pytest.raises(df.FlowDefinitionError, match="closed TextIOWrapper"):
        g.run(cluster="sync")


@pytest.mark.parametrize("options,match", [
    ({"retry_delay": "10"}, "retry_delay of task 'x' must be seconds"),
    ({"retry_delay": True}, "retry_delay"),
    ({"retries": -1}, "retries of task 'x' must be an int >= 0, got -1"),
    ({"retries": 1.5}, "retries"),
    ({"trigger": "all_successful"}, "trigger of task 'x' must be one of"),
    ({"timeout": "5"}, "timeout of task 'x' must be a positive number"),
    ({"timeout": True}, "timeout"),
    ({"retry_on": [1]}, "retry_on of task 'x' must be an exception type or an iterable"),
])
def test_bad_task_options_fail_at_decoration(options, match):
    with pytest.raises(df.FlowDefinitionError, match=match):
        df.task(name="x", **options)(lambda: 1)


def test_retry_on_accepts_any_iterable_of_exception_types():
    t = df.task(retry_on={ValueError, KeyError})(lambda: 1)
    assert set(t.retry_on) == {ValueError, KeyError}
    assert df.task(retry_on=[OSError])(lambda: 1).retry_on == (OSError,)


@df.flow
def recursive(n: int = 2):
    return recursive(n - 1)


def test_a_flow_that_calls_itself_says_so():
    with pytest.raises(df.FlowDefinitionError, match=r"flow 'recursive' calls itself \(recursive -> recursive\)"):
        recursive.run(cluster="sync")


def test_nested_flows_still_work(on):
    @df.flow
    def inner(x: int):
        return inc(x)

    @df.flow
    def outer():
        return total([inner(1), inner(2)])

    assert outer(cluster=on) == 5
