"""Mistakes caught while the flow is built or a task is decorated, before
anything runs: wrong arguments, refs used as values, closed objects, bad
options, maps that cannot map, flows that call themselves."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from common_tasks import inc, total

import daskflow as df


@df.task
def show(r):
    return r


@df.flow
def wide(n: int = 500):
    return total(inc.map(range(n)))


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
    ({"timeout": 0}, "timeout of task 'x' must be a positive number"),
    ({"retry_delay": "soon"}, "retry_delay"),
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


pair = df.task(lambda x, y: x + y, name="pair")


def test_map_length_mismatch_found_at_build():
    @df.flow
    def mism():
        return total(pair.map([1, 2], [1]))

    with pytest.raises(df.MappingError, match="different lengths"):
        mism.run(cluster="sync")


def test_map_outside_flow_and_strings():
    with pytest.raises(df.FlowDefinitionError, match="inside a flow"):
        inc.map([1])

    @df.flow
    def strmap():
        return inc.map("abc")  # a str is static (Prefect 3): nothing left to map over

    with pytest.raises(df.MappingError, match=r"inc.map\(\) has nothing to map over.*x='abc'"):
        strmap.run(cluster="sync")


def test_run_inside_flow_body_is_an_error():
    @df.flow
    def outer():
        return wide.run()

    with pytest.raises(df.FlowDefinitionError, match="to nest it"):
        outer.run(cluster="sync")


def test_a_flow_parameter_named_like_a_run_option_is_refused():
    with pytest.raises(df.FlowDefinitionError, match="reserves"):
        df.flow(lambda cluster: 1)
