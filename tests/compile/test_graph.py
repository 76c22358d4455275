"""Compiling is pure: flows compile to plain dicts and run with dask.get."""

from __future__ import annotations

import dask
import dask.task_spec
import pytest
from common_tasks import inc, split, total
from dask.utils import key_split

from daskflow.compile.graph import Compiler
from daskflow.define.build import Builder
from daskflow.wire import RunInfo


def compile_body(body):
    with Builder("t") as b:
        returned = body()
    return b, returned, Compiler(b.nodes, RunInfo("t", "run1", {}), token="abcd1234")


def finished(c):
    """Every node has been emitted (its keys are known)."""
    return all(n.index in c.keys for n in c.nodes)


def test_static_flow_compiles_in_one_stage_with_readable_keys():
    b, ref, c = compile_body(lambda: total(inc.map(range(5))))
    dsk = c.stage()
    assert finished(c)
    assert len(dsk) == 6
    assert {key_split(k) for k in dsk} == {"inc", "total"}
    assert dask.get(dsk, c.keys_of(ref.node)).result() == 15


def test_dynamic_map_is_deferred_until_its_length_is_known():
    b, ref, c = compile_body(lambda: total(inc.map(split(3))))
    first = c.stage()
    assert not finished(c)
    (len_key,) = c.length_keys
    assert set(first) == {c.keys_of(b.nodes[0]), len_key}
    assert c.needed_later() == {c.keys_of(b.nodes[0])}
    values = dict(zip(first, dask.get(first, list(first))))
    c.set_length(len_key, values[len_key])
    second = c.stage()
    assert finished(c)
    graph = {k: dask.task_spec.DataNode(k, v) for k, v in values.items()}
    graph.update(second)
    assert dask.get(graph, c.keys_of(ref.node)).result() == 6


def test_map_over_map_children_depend_elementwise():
    b, ref, c = compile_body(lambda: inc.map(inc.map(range(3))))
    dsk = c.stage()
    second = c.keys_of(ref.node)
    first = c.keys_of(b.nodes[0])
    for i, key in enumerate(second):
        assert dsk[key].dependencies == {first[i]}


def test_wait_for_goes_through_a_result_free_done_task():
    def body():
        a = inc(1)
        return inc(2, wait_for=[a])

    b, ref, c = compile_body(body)
    dsk = c.stage()
    (dep,) = dsk[c.keys_of(ref.node)].dependencies
    assert key_split(dep) == "done-inc"
    state = dask.get(dsk, dep)
    assert state.is_completed() and not state.has_result


@pytest.mark.parametrize("n", [1000, 20000])
def test_compile_is_linear(n):
    # A 5000-way reduce is where dask.delayed goes superlinear; ours is one pass.
    b, ref, c = compile_body(lambda: total(inc.map(range(n), chunk=1)))
    dsk = c.stage()
    assert len(dsk) == n + 1
    assert len(dsk[c.keys_of(ref.node)].dependencies) == n


def test_keys_are_unique_per_run():
    with Builder("t") as b:
        inc(1)
    k1 = Compiler(b.nodes, RunInfo("t", "a", {})).stage()
    k2 = Compiler(b.nodes, RunInfo("t", "b", {})).stage()
    assert set(k1).isdisjoint(k2)


def test_a_100k_map_stays_under_distributed_large_graph_warning():
    import pickle

    from dask.utils import parse_bytes

    b, ref, c = compile_body(lambda: total(inc.map(range(100_000), chunk=1)))
    c.fuse = True
    dsk = c.stage()
    size = len(pickle.dumps(dsk, protocol=5))
    # ~66 B a task; the children share one MapCall, pickled once
    assert size < parse_bytes(dask.config.get("distributed.admin.large-graph-warning-threshold"))
    assert size / len(dsk) < 80, size / len(dsk)
