"""Prefect 3's mapping rules: what ``task.map`` maps over, what it gives whole
to every call, and task results inside the elements of a mapped list; on
"sync" and on the real cluster."""

from __future__ import annotations

import io

import dask
import numpy as np
import pytest
from common_tasks import inc, split, total

import daskflow as df
from daskflow.compile.graph import Compiler
from daskflow.define.build import Builder
from daskflow.wire import RunInfo

# -- tasks (module level, so worker processes import them) --------------------


@df.task
def pair(x, secs):
    return (x, secs)


@df.task
def echo(x, *rest):
    return (x, *rest)


@df.task
def read_lines(x, fh):
    return (x, fh.getvalue().splitlines())


@df.task
def plus(xs, y):
    """The sum of ``xs`` (any nesting of lists, tuples and dict values) plus ``y``."""
    def flat(v):
        if isinstance(v, dict):
            return sum(flat(w) for w in v.values())
        if isinstance(v, (list, tuple)):
            return sum(flat(w) for w in v)
        return v
    return flat(xs) + y


@df.task
def describe(xs):
    return [type(x).__name__ for x in xs]


@df.task
def boom():
    raise ValueError("boom")


@df.task
def word():
    return "abc"


# -- what is static --------------------------------------------------------------------


def test_numbers_and_none_are_given_whole_to_every_call(on):
    @df.flow
    def f():
        return pair.map([1, 2], secs=0.5), echo.map([1, 2], 7, None)

    assert f(cluster=on) == ([(1, 0.5), (2, 0.5)], [(1, 7, None), (2, 7, None)])


def test_str_bytes_and_file_objects_are_given_whole(on):
    @df.flow
    def f():
        return (echo.map(["a", "b"], "xyz", b"\x00\x01"),
                read_lines.map([1, 2], io.StringIO("one\ntwo")))

    strs, files = f(cluster=on)
    assert strs == [("a", "xyz", b"\x00\x01"), ("b", "xyz", b"\x00\x01")]
    assert files == [(1, ["one", "two"]), (2, ["one", "two"])]


def test_iterables_are_mapped_over_and_a_dict_over_its_keys(on):
    """Prefect 3 maps over anything iter() takes (but str, bytes, files):
    a dict gives its keys, a generator its items; unmapped keeps them whole."""
    @df.flow
    def f():
        return (echo.map({"a": 1, "b": 2}), echo.map(range(2), (i * 10 for i in range(2))),
                echo.map([1, 2], df.unmapped({"a": 1})))

    keys, gen, whole = f(cluster=on)
    assert keys == [("a",), ("b",)]
    assert gen == [(0, 0), (1, 10)]
    assert whole == [(1, {"a": 1}), (2, {"a": 1})]


def test_unmapped_still_keeps_lists_and_task_results_whole(on):
    @df.flow
    def f():
        return echo.map([1, 2], df.unmapped([3, 4]), df.unmapped(split(2)))

    assert f(cluster=on) == [(1, [3, 4], [0, 1]), (2, [3, 4], [0, 1])]


@pytest.mark.parametrize("call,shown", [
    (lambda: pair.map(1, secs=0.5), "x=1, secs=0.5"),
    (lambda: pair.map("abc", df.unmapped([1, 2])), "x='abc', secs=df.unmapped(...)"),
    (lambda: inc.map(b"ab"), "x=b'ab'"),
    (lambda: echo.map(1, 2, 3), "x=1, argument 1=2, argument 2=3"),
])
def test_a_map_with_nothing_to_map_over_is_an_error_naming_task_and_arguments(call, shown):
    @df.flow
    def f():
        return call()

    with pytest.raises(df.MappingError) as info:
        f.run(cluster="sync")
    name = str(info.value).split(".map()")[0]
    assert f"{name}.map() has nothing to map over" in str(info.value)
    assert f"({shown})" in str(info.value)
    assert "df.unmapped(...) are static" in str(info.value)


# -- task results passed to .map --------------------------------------------------------


def test_a_task_result_is_still_mapped_and_a_str_result_fails_the_map(on):
    @df.flow
    def ok():
        return inc.map(split(3))

    assert ok(cluster=on) == [1, 2, 3]

    @df.flow
    def letters():
        return echo.map(word())

    run = letters.run(cluster=on)
    assert run.states["echo"].name == "MappingFailed"
    with pytest.raises(df.MappingError, match=r"result of 'word': it is a str.*df.unmapped"):
        run.result()


# -- task results inside the elements of a mapped list ----------------------------------


def test_task_results_inside_elements_are_resolved(on):
    @df.flow
    def f():
        x1, x2 = inc(1), inc(2)
        many = inc.map([10, 20])
        return (plus.map([[x1, x2], [x2, x1, x1]], y=1),
                plus.map([(x1, {"k": x2}), {"a": [x1]}], 0),
                describe.map([[x1, "s"], [many]]),
                plus.map([[many], [x1]], y=df.unmapped(x2)))

    sums, nested, kinds, with_map = f(cluster=on)
    assert sums == [2 + 3 + 1, 3 + 2 + 2 + 1]
    assert nested == [5, 2]
    assert kinds == [["int", "str"], ["list"]]  # a map inside an element: its list of results
    assert with_map == [11 + 21 + 3, 2 + 3]


def test_a_failed_result_inside_an_element_fails_only_that_child(on):
    @df.flow
    def strict():
        return describe.map([[inc(1)], [boom()]])

    run = strict.run(cluster=on)
    assert run.states["describe[0]"].is_completed()
    assert run.states["describe[1]"].name == "TriggerFailed"
    with pytest.raises(ValueError, match="boom"):
        run.result()

    @df.flow
    def tolerant():
        return describe.map([[inc(1)], [df.allow_failure(boom())]])

    assert tolerant(cluster=on) == [["int"], ["ValueError"]]  # it gets the exception


def test_elements_with_task_results_fuse_into_a_chain(on):
    """A map whose elements hold task results heads an element-wise chain
    that fuses; fused or not, the results are the same."""
    @df.flow
    def f():
        x1, x2 = inc(1), inc(2)
        return total(inc.map(inc.map(plus.map([[x1, x2], [x2]], y=0))))

    assert [f(cluster=on, fuse=fuse) for fuse in (False, True)] == [(2 + 3 + 2) + (3 + 2)] * 2


def test_compiled_children_depend_on_the_results_inside_their_elements():
    with Builder("t") as b:
        x1, x2 = inc(1), inc(2)
        ref = inc.map(plus.map([[x1, x2], [x2]], y=0))
    c = Compiler(b.nodes, RunInfo("t", "run1", {}), token="abcd1234")
    c.fuse = True
    dsk = c.stage()
    k1, k2 = c.keys_of(b.nodes[0]), c.keys_of(b.nodes[1])
    last = c.keys_of(ref.node)
    assert set(last) <= set(dsk) and len(dsk) == 4  # x1, x2 and two fused children
    assert dsk[last[0]].dependencies == {k1, k2}
    assert dsk[last[1]].dependencies == {k2}
    assert [s.result() for s in dask.get(dsk, last)] == [6, 4]


def test_results_inside_elements_key_the_cache(tmp_path):
    """A cached map whose elements hold task results: its children's keys
    chain on those tasks' keys, so a second run is served from the store."""
    cached = plus.with_options(cache=True, result_storage=str(tmp_path))

    @df.flow
    def f(start: int):
        x = inc(start)
        return cached.map([[x], [x, x]], y=0)

    first = f.run(1, cluster="sync")
    again = f.run(1, cluster="sync")
    other = f.run(5, cluster="sync")
    assert first.result() == again.result() == [2, 4] and other.result() == [6, 12]
    assert again.states["plus[1]"].name == "Cached"
    assert other.states["plus[1]"].name != "Cached"


@df.task
def sizes(xs):
    return [getattr(x, "nbytes", x) for x in xs]


def test_large_data_inside_elements_is_scattered_not_put_in_the_graph(client, graph_bytes):
    """A large constant inside an element travels once, scattered; the
    children's tasks carry its key (the graph stays small)."""
    big = np.ones(2_000_000, dtype="uint8")  # 2 MB, over the scatter threshold

    @df.flow
    def f():
        return sizes.map([[big, 1], [big, 2]])

    assert f(cluster=client) == [[2_000_000, 1], [2_000_000, 2]]
    assert sum(graph_bytes) < 100_000, graph_bytes
