"""Compile a flow build into Dask graphs: pure, linear, staged where needed.

A :class:`Compiler` turns the nodes of a :class:`~daskflow.define.build.Builder`
into ``dask.task_spec.Task`` objects whose function is
:func:`daskflow.worker.run.run_task` (or a map's shared
:class:`~daskflow.worker.calls.MapCall`) and whose dependencies are the upstream
tasks' keys.  Keys are readable: ``"<task name>-<run token><node>"`` for a
single call and ``(that, i)`` for the i-th call of a map, so the dashboard's
task groups read like the flow.

Everything whose shape is known at build time compiles in the first
:meth:`Compiler.stage`.  A map over a task result has a length known only at
run time: the first stage then carries a tiny ``len-...`` task for it, and
the nodes that depend on that map are *deferred*.  Once the engine has the
lengths it calls :meth:`Compiler.set_length` and :meth:`Compiler.stage`
again; the new stage refers to keys of the earlier stages as
``TaskRef``s (the engine still holds their futures), so data never travels
through the driver.  Nodes are visited in build order, which is already a
topological order, so each stage is one pass over the nodes not yet emitted.

A waiting-only edge (``wait_for=``, a resource's setup before its block, a
cleanup after its block) goes through a ``done-...`` task that returns the
upstream state without its result, so no data moves for it.

Linear chains and element-wise map chains fuse into one Dask task each
(:mod:`daskflow.compile.fusion`); a node whose results are all in the result
store loads them instead (:mod:`daskflow.compile.cachekeys`).

Nothing here talks to a scheduler; compiled stages run with ``dask.get``.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from daskflow.compile.children import ChildInputs, per_child
from daskflow.compile.chunks import Chunker, ChunkJob, Layout
from daskflow.compile.fusion import Fusion
from daskflow.compile.tasks import as_keys, make_task, template
from daskflow.compile.transactions import emit_commit
from daskflow.core.states import State, StateType
from daskflow.define.build import Node, Ref, different_lengths, mapped_values, refs_in
from daskflow.exceptions import FlowDefinitionError
from daskflow.wire import Call, RunInfo, Slot, SlotList, TaskSpec
from daskflow.worker.calls import CachedMap, MapCall
from daskflow.worker.cleanup import run_cleanup
from daskflow.worker.run import done, length_of, run_cached, run_task, run_unmappable

_EMPTY: frozenset[int] = frozenset()
_SLOT0 = Slot(0)
_ALLOWED0 = frozenset({0})
_SCALARS = frozenset((int, float, str, bytes, bool, type(None)))


def _check_picklable(spec: TaskSpec, node: Node) -> None:
    try:
        spec.blob()
    except Exception as err:
        raise FlowDefinitionError(
            f"task {node.name!r} cannot be sent to the workers: {err}. Its function (and what "
            "it closes over) must be picklable; define it at module level or pass the "
            "unpicklable object as an argument created inside the task") from err


def new_token() -> str:
    """A short random token that makes one run's keys unique on a shared cluster."""
    return uuid.uuid4().hex[:8]


class Compiler:
    """Compiles the nodes of one flow run, stage by stage.

    >>> import dask, daskflow as df
    >>> from daskflow.define.build import Builder
    >>> inc = df.task(lambda x: x + 1, name="inc")
    >>> with Builder("demo") as b:
    ...     ref = inc.map([1, 2, 3])
    >>> c = Compiler(b.nodes, RunInfo("demo", "r1", {}))
    >>> dsk = c.stage()
    >>> [s.result() for s in dask.get(dsk, c.keys_of(ref.node))]
    [2, 3, 4]
    """

    def __init__(self, nodes: list[Node], run: RunInfo, token: str | None = None,
                 scattered: dict[int, Any] | None = None) -> None:
        self.nodes = nodes
        self.run = run
        self.scattered = scattered or {}  # id(constant) -> key of its scattered copy
        self.check_pickle = False  # set when tasks will travel to other processes
        self.resources: dict[Any, dict[str, float]] = {}  # key -> Dask worker resources
        self.token = token or new_token()
        self.keys: dict[int, Any] = {}  # node index -> key, or list of keys for a map
        self.placeholders: set[int] = set()  # maps that could not expand
        self.lengths: dict[int, tuple[int, str]] = {}  # run-time lengths by source node
        self.length_keys: dict[str, int] = {}  # length-task key -> source node index
        self.state_keys: list[Any] = []  # keys of every user-visible task emitted
        self._requested: set[int] = set()
        self._done: dict[Any, Any] = {}
        self._todo: list[Node] = []
        self._seen = 0  # nodes[:_seen] are in _todo or emitted (the list may grow)
        self._specs: dict[tuple[int, str, str | None], TaskSpec] = {}
        self._names: dict[str, str] = {}
        self.plan: Any = None  # a KeyPlan (compile.cachekeys) when the run stores results
        self.fuse = False  # fuse linear chains and element-wise map chains (compile.fusion)
        self.max_fused = 20
        self.keep_real: set[int] = set()  # nodes whose keys must exist (returned ones)
        self.fusion = Fusion()  # what to fuse: planned as nodes come, when fuse is on
        self.synthetic: dict[Any, State] = {}  # states of tasks that did not need to run
        self.chunks = Chunker()  # chunked maps: layouts, pilots, notes (compile.chunks)

    # -- public ----------------------------------------------------------------
    def name_of(self, base: str) -> str:
        """The node name behind a key's base string."""
        return self._names[base]

    def keys_of(self, node: Node) -> Any:
        """The key of an emitted node, or the list of keys of an emitted map."""
        return self.keys[node.index]

    def dask_key(self, key: Any) -> Any:
        """The Dask key that holds the state of task run ``key`` (its chunk's
        for an element of a chunked map; None while that waits for a pilot)."""
        return self.chunks.dask_key(key)

    def dask_keys(self, keys: list[Any]) -> list[Any]:
        """The Dask keys that hold the states of task runs ``keys`` (a chunked
        map's elements share their chunk's), each once."""
        return self.chunks.dask_keys(keys)

    def chunked(self) -> dict[str, list[list[int]]]:
        """Each chunked map's name and the element spans of its Dask tasks."""
        return {self.name_of(base): layout.all_spans()
                for base, layout in self.chunks.layouts.items()}

    def pick(self, key: Any, values: dict[Any, Any]) -> Any:
        """Task run ``key``'s state among values gathered by :meth:`dask_keys`."""
        return self.chunks.pick(key, values)

    def set_length(self, length_key: str, value: tuple[Any, str]) -> None:
        """Record the run-time length reported by a ``len-...`` task, or the
        time per element a chunked map's pilot measured."""
        if self.chunks.ended(length_key, value):
            del self.length_keys[length_key]
            return
        self.lengths[self.length_keys[length_key]] = value

    def stage(self) -> dict[Any, DaskTask]:
        """Emit every node that can be emitted now; return the new graph.

        The node list may have grown since the last stage (a flow body that
        waited for a value goes on building): the new nodes join the ones
        still to emit, and fusion is planned among them.
        """
        dsk: dict[Any, DaskTask] = {}
        todo: list[Node] = []
        keys = self.keys
        plan = self.plan
        if len(self.nodes) > self._seen:
            first, self._seen = self._seen, len(self.nodes)
            new = self.nodes[first:]
            self._todo.extend(new)
            if self.fuse:
                skip = (plan.hits | plan.unneeded) if plan is not None else _EMPTY
                keep = self.keep_real | {n.index for n in new if n.txn is not None}
                self.fusion.merge(Fusion.plan(new, skip, keep, self.max_fused, first))
        for index in self.chunks.emit_measured(dsk):  # with their map's resources
            if self.nodes[index].task.resources:
                self._add_resources(self.nodes[index])
        partial = self.chunks.partial
        fused_into = self.fusion.fused_into
        for node in self._todo:
            if plan is not None and (node.index in plan.hits or node.index in plan.unneeded):
                self._emit_from_cache(node, dsk, node.index in plan.hits)
                continue
            ready = True
            for d in node.upstream:
                if d.index not in keys or (d.index in partial and fused_into.get(d.index)
                                           is not fused_into.get(node.index, node)):
                    ready = False
                    break
            if not ready or ((node.wait_for or node.setups or node.members)
                             and not all(d.index in keys and d.index not in partial
                                         for d in node.dependencies())):
                todo.append(node)
            elif node.mapped is None:
                self._emit_single(node, dsk)
            elif not self._emit_map(node, dsk):
                todo.append(node)
                continue
            if node.task.resources and node.index in keys:
                self._add_resources(node)
        self._todo = todo
        if self.fusion.chains:
            for job, last in self.fusion.fuse(self.keys, self.placeholders, dsk):
                self._start(job, last, dsk)
        return dsk

    def needed_later(self) -> set[Any]:
        """Keys of emitted nodes that deferred nodes will depend on."""
        needed: set[Any] = set()
        for node in self._todo:
            for dep in node.dependencies():
                needed.update(self.dask_keys(as_keys(self.keys.get(dep.index))))
        return needed

    # -- helpers -----------------------------------------------------------------
    def _add_resources(self, node: Node) -> None:
        """The node's worker resources on each of its Dask tasks known by now
        (a map waiting for its pilot: the pilot's chunks; the rest once sized)."""
        resources = node.task.resources
        assert resources is not None
        for key in self.dask_keys(as_keys(self.keys[node.index])):
            self.resources[key] = resources

    def spec_of(self, node: Node) -> TaskSpec:
        ident = (id(node.task), node.kind, node.txn)
        spec = self._specs.get(ident)
        if spec is None:
            spec = self._specs[ident] = TaskSpec(node.task, node.kind, self.run, node.txn)
            if self.check_pickle:
                _check_picklable(spec, node)
        return spec

    def base_of(self, node: Node) -> str:
        label = self.fusion.label(node)
        # the key of a fused task names the tasks inside it
        base = f"{label or node.name}-{self.token}{node.index:x}"
        self._names[base] = node.name
        return base

    def done_key(self, key: Any, dsk: dict[Any, DaskTask]) -> Any:
        dkey = self._done.get(key)
        if dkey is None:
            dkey = (f"done-{key[0]}", key[1]) if isinstance(key, tuple) else f"done-{key}"
            self._done[key] = dkey
            dsk[dkey] = make_task(dkey, done, TaskRef(key))
        return dkey

    def _common(self, node: Node, dsk: dict[Any, DaskTask],
                upstream: tuple[Node, ...] | list[Node] | None = None,
                ) -> tuple[list[Any], dict[int, Any], set[int], int]:
        """Dependency keys shared by all the Dask tasks of a node, their slots,
        and how many states they hold (a chunk holds one per element)."""
        ups = node.upstream if upstream is None else upstream
        if len(ups) == 1 and not (node.wait_for or node.setups or node.members):
            keys = self.keys[ups[0].index]  # the common case: one upstream task
            if type(keys) is not list:
                index = ups[0].index
                return [keys], {index: Slot(0)}, {0} if index in node.allowed else set(), 1
        deps: list[Any] = []
        slots: dict[int, Any] = {}
        allowed: set[int] = set()
        width = 0
        for up in ups:
            dkeys, n = self.inputs(up.index)
            first, width = width, width + n
            deps.extend(dkeys)
            slots[up.index] = (SlotList(first, width) if isinstance(self.keys[up.index], list)
                               else Slot(first))
            if up.index in node.allowed:
                allowed.update(range(first, width))
        if not (node.wait_for or node.setups or node.members):
            return deps, slots, allowed, width
        waits = list(node.wait_for) + [s for s in node.setups if s.index not in slots]
        waits += node.members
        for w in waits:
            dkeys, n = self.inputs(w.index)
            first, width = width, width + n
            deps.extend(self.done_key(k, dsk) for k in dkeys)
            if w.index in node.allowed:
                allowed.update(range(first, width))
        return deps, slots, allowed, width

    def inputs(self, index: int) -> tuple[list[Any], int]:
        """The Dask keys holding node ``index``'s states, and how many states."""
        layout = self.chunks.of.get(index)
        if layout is not None:
            return layout.keys(), layout.n
        keys = self.keys[index]
        return (keys, len(keys)) if isinstance(keys, list) else ([keys], 1)

    def _shared_upstream(self, node: Node, mapped: dict) -> list[Node]:
        """Upstream nodes every child of a map depends on whole.

        Those are the refs in unmapped arguments and the task results mapped
        over element-wise; a mapped map or a ref inside a mapped list is a
        per-child dependency instead.
        """
        whole: dict[int, Node] = {}
        for pos, value in [*enumerate(node.args), *node.kwargs.items()]:
            if pos in mapped:
                if isinstance(value, Ref) and value.node.mapped is None:
                    whole[value.node.index] = value.node
            else:
                whole.update(refs_in(value))
        return [up for up in node.upstream if up.index in whole]

    def _emit_from_cache(self, node: Node, dsk: dict[Any, DaskTask], hit: bool) -> None:
        """A node whose results are all stored: one task per result that loads it
        on a worker (no dependencies); or a node only those needed: no task at
        all, and a state that says so."""
        plan = self.plan
        spec, base = self.spec_of(node), self.base_of(node)
        n = node.length or 0
        keys: Any = (base if node.mapped is None or node.length is None
                     else [(base, i) for i in range(n)])
        if not hit:
            for key in as_keys(keys):
                self.synthetic[key] = State(
                    StateType.SKIPPED, name="NotNeeded",
                    message="not run: every task that uses its result was reused from the cache")
        elif type(keys) is str:
            call = Call(spec, node.name, keys, None, (), {}, False, _EMPTY, 0, plan.key(node))
            dsk[keys] = make_task(keys, run_cached, call)
        else:  # a map: its children load their results, in chunks when there are many
            each, cache_keys = CachedMap(spec, node.name, base), plan.child_keys(node, n)
            layout = self.chunks.choose(base, n, node.chunk, node.task, loads=True)
            if layout is not None:
                self.chunks.add(node.index, layout)
                self._start(ChunkJob([layout], each, [cache_keys], [], (), ()), node.index, dsk)
            else:
                for key, cache in zip(keys, cache_keys):
                    dsk[key] = make_task(key, each, key[1], cache)
        self.keys[node.index] = keys
        self.state_keys.extend(as_keys(keys))

    def _emit_cleanup(self, node: Node, dsk: dict[Any, DaskTask]) -> None:
        """A resource's cleanup: waits for the setup and the block without moving data."""
        setup_key = self.keys[node.upstream[0].index]
        waits = [setup_key]
        fused_into = self.fusion.fused_into
        for member in dict.fromkeys(fused_into.get(m.index, m) for m in node.members):
            waits.extend(self.inputs(member.index)[0])  # a fused task: its last key
        for setup in node.setups:
            waits.extend(as_keys(self.keys[setup.index]))
        key = self.base_of(node)
        call = Call(self.spec_of(node), node.name, key, None, (setup_key,), {}, False, _EMPTY)
        dsk[key] = make_task(key, run_cleanup, call, *(TaskRef(self.done_key(k, dsk)) for k in waits))
        self.keys[node.index] = key
        self.state_keys.append(key)

    def _emit_single(self, node: Node, dsk: dict[Any, DaskTask]) -> None:
        if node.kind == "cleanup":
            return self._emit_cleanup(node, dsk)
        if node.kind == "commit":
            return emit_commit(self, node, dsk)
        fusion = self.fusion
        if node.index in fusion.inner and not self.scattered:
            return self._emit_inner(node)
        deps, slots, allowed, _ = self._common(node, dsk)
        data: list[Any] = []
        if self.scattered:
            args, s1 = template(node.args, slots, self.scattered, data)
            kwargs, s2 = template(node.kwargs, slots, self.scattered, data)
        elif node.upstream:
            args, s1 = template(node.args, slots)
            kwargs, s2 = template(node.kwargs, slots) if node.kwargs else (node.kwargs, False)
        else:
            args, kwargs, s1, s2 = node.args, node.kwargs, False, False
        key = self.base_of(node)
        spec = self.spec_of(node)
        call = Call(spec, node.name, key, None, args, kwargs, s1 or s2,
                    frozenset(allowed) if allowed else _EMPTY, len(data),
                    self.plan.key(node) if spec.cache is not None else None)
        refs = tuple([TaskRef(k) for k in (deps + data if data else deps)])
        if node.index in fusion.in_chain:  # its task is made when the chain is fused
            fusion.calls[key] = (call, refs)
        else:
            dsk[key] = make_task(key, run_task, call, *refs)
        self.keys[node.index] = key
        self.state_keys.append(key)

    def _emit_inner(self, node: Node) -> None:
        """A single call inside a fused chain, after its first: its only input
        is the previous call's state (see :func:`~daskflow.worker.calls.run_fused`)."""
        index = node.upstream[0].index
        slots = {index: _SLOT0}
        args, s1 = template(node.args, slots)
        kwargs, s2 = template(node.kwargs, slots) if node.kwargs else (node.kwargs, False)
        key = self.base_of(node)
        spec = self.spec_of(node)
        self.fusion.calls[key] = (Call(spec, node.name, key, None, args, kwargs, s1 or s2,
                                 _ALLOWED0 if index in node.allowed else _EMPTY, 0,
                                 self.plan.key(node) if spec.cache is not None else None),
                            (TaskRef(self.keys[index]),))
        self.keys[node.index] = key
        self.state_keys.append(key)

    def _map_length(self, node: Node, dsk: dict[Any, DaskTask]) -> tuple[int, str] | None:
        """The length of a map now, ``(-1, why)`` if it cannot expand, None if unknown."""
        if node.length is not None:
            return node.length, ""
        lengths: set[int] = set()
        for value in mapped_values(node):
            if not isinstance(value, Ref):
                lengths.add(len(value))
                continue
            src = value.node
            if src.mapped is not None:
                if src.index in self.placeholders:
                    return -1, f"upstream map {src.name!r} did not run"
                lengths.add(len(self.keys[src.index]))
            elif src.index in self.lengths:
                n, why = self.lengths[src.index]
                if n < 0:
                    return n, why
                lengths.add(n)
            else:
                self._request_length(src, dsk)
                return None
        if len(lengths) > 1:
            return -2, different_lengths(node, lengths, "at run time")
        return lengths.pop(), ""

    def _request_length(self, src: Node, dsk: dict[Any, DaskTask]) -> None:
        if src.index in self._requested:
            return
        self._requested.add(src.index)
        key = f"len-{self.base_of(src)}"
        self.length_keys[key] = src.index
        dsk[key] = make_task(key, length_of, TaskRef(self.keys[src.index]))

    def _emit_map(self, node: Node, dsk: dict[Any, DaskTask]) -> bool:
        length = self._map_length(node, dsk)
        if length is None:
            return False
        n, why = length
        if n < 0:
            self._emit_placeholder(node, why, dsk)
            return True
        mapped = dict(zip(node.mapped or (), mapped_values(node)))
        deps, slots, allowed, width = self._common(node, dsk,
                                                   self._shared_upstream(node, mapped))
        spec, base, frozen = self.spec_of(node), self.base_of(node), frozenset(allowed)
        data: list[Any] = []
        args, s1 = template(tuple(None if i in mapped else a for i, a in enumerate(node.args)),
                            slots, self.scattered, data)
        kwargs, s2 = template({k: None if k in mapped else v for k, v in node.kwargs.items()},
                              slots, self.scattered, data)
        common_refs = tuple(map(TaskRef, deps))
        keys = [(base, i) for i in range(n)]
        cached = spec.cache is not None
        fusion = self.fusion
        chained = node.index in fusion.in_chain
        if self._regular(mapped):
            layout = self._layout(node, n, mapped, base)
            if layout is not None:
                self.chunks.add(node.index, layout)
            cache_keys = self.plan.child_keys(node, n) if cached else None
            self._emit_children(node, spec, base, keys, args, kwargs, s1 or s2, allowed,
                                mapped, slots, (common_refs, width),
                                tuple(map(TaskRef, data)), dsk, layout, cache_keys)
        else:  # one Call per child: refs or scattered data in elements
            for i, key in enumerate(keys):
                inputs = ChildInputs(self, node, width, slots, data)
                a, k = list(args), dict(kwargs)
                sub = s1 or s2
                for pos, value in mapped.items():
                    item, placed = inputs.arg(value, i)
                    sub = sub or placed
                    if isinstance(pos, int):
                        a[pos] = item
                    else:
                        k[pos] = item
                call = Call(spec, node.name, key, i, tuple(a), k, sub,
                            frozen | inputs.allowed if inputs.allowed else frozen,
                            len(inputs.data), self.plan.key(node, i) if cached else None)
                refs = (*common_refs, *map(TaskRef, inputs.extra), *map(TaskRef, inputs.data))
                if chained:  # its task is made when the chain is fused
                    fusion.calls[key] = (call, refs)
                else:
                    dsk[key] = make_task(key, run_task, call, *refs)
        self.keys[node.index] = keys
        self.state_keys.extend(keys)
        return True

    def _layout(self, node: Node, n: int, mapped: dict, base: str) -> Layout | None:
        """How a regular map's elements are chunked (see :mod:`.chunks`), or None."""
        for value in mapped.values():  # over a chunked map: its chunks
            if isinstance(value, Ref) and value.node.index in self.chunks.of:
                return self.chunks.of[value.node.index].like(
                    base, f"as map {value.node.name!r}, which it maps over")
        chain = self.fusion.chains.get(self.fusion.fused_into.get(node.index, node).index, ())
        if not all(self._regular(dict(zip(m.mapped or (), mapped_values(m)))) for m in chain):
            return None  # a member runs a task per element: the chain does too
        chunk = next((m.chunk for m in chain if m.chunk is not None), node.chunk)
        return self.chunks.choose(base, n, chunk, node.task)

    def _start(self, job: ChunkJob, last: int, dsk: dict[Any, DaskTask]) -> None:
        """Emit a chunked map's chunks (see :meth:`Chunker.start`); a pilot's
        task is read like a map's length."""
        key = self.chunks.start(job, self.nodes[last].name, dsk)
        if key is not None:
            self.length_keys[key] = last

    def _regular(self, mapped: dict) -> bool:
        """Whether every child of a map has the same argument layout: no mapped
        element holds a ref, scattered data or a Dask graph node, anywhere
        inside it (so the children can share one
        :class:`~daskflow.worker.calls.MapCall`)."""
        scattered = self.scattered
        for value in mapped.values():
            if isinstance(value, Ref):
                continue
            for x in value:
                if type(x) in _SCALARS:  # the common case: no walk
                    if scattered and id(x) in scattered:
                        return False
                elif per_child(x, scattered):
                    return False
        return True

    def _emit_children(self, node: Node, spec: TaskSpec, base: str, keys: list, args: tuple,
                       kwargs: dict, sub: bool, allowed: set[int], mapped: dict, slots: dict,
                       shared: tuple[tuple, int], data: tuple, dsk: dict[Any, DaskTask],
                       layout: Layout | None, cache_keys: list[str | None] | None) -> None:
        """The children of a regular map: ``Task((base, i), map_call, i, *elements,
        *inputs)``, the shared part pickled once (see :class:`MapCall`); or
        its chunks (``layout``).  The inputs are the shared upstream states
        (``shared``: their refs, and how many states they hold), child i of
        each map mapped over, then scattered data.  A cached map's children
        take their cache keys as the first column (``MapCall.keyed``)."""
        refs, offset = shared
        a, k = list(args), dict(kwargs)
        values: list[Any] = []
        columns: list[Any] = [] if cache_keys is None else [cache_keys]
        items: list[tuple[Any, int]] = []
        per_child: list[list[Any]] = []  # dependency keys of each map mapped over
        own: list[Any] = []  # the same, or the layout of a chunked one
        child_allowed = set(allowed)
        for pos, value in mapped.items():
            if isinstance(value, Ref) and value.node.mapped is not None:
                slot = offset + len(per_child)
                if value.node.index in node.allowed:
                    child_allowed.add(slot)
                per_child.append(self.keys[value.node.index])
                own.append(self.chunks.of.get(value.node.index, per_child[-1]))
                if isinstance(pos, int):
                    a[pos] = Slot(slot)
                else:
                    k[pos] = Slot(slot)
                sub = True
            elif isinstance(value, Ref):  # element i of an upstream task's result
                items.append((pos, slots[value.node.index].i))
                sub = True
            else:
                values.append(pos)
                columns.append(value)
        template = MapCall(spec, node.name, base, tuple(a), k, sub,
                           frozenset(child_allowed) if child_allowed else _EMPTY, len(data),
                           tuple(values), tuple(items), cache_keys is not None)
        fusion = self.fusion
        chained = node.index in fusion.in_chain
        if layout is not None:
            if chained:  # the chain's chunks are made when it is fused
                fusion.chunked[node.index] = (template, columns, own, refs, data, layout)
            else:
                self._start(ChunkJob([layout], template, columns, own, refs, data),
                            node.index, dsk)
            return
        self._emit_rows(template, keys, columns, per_child, refs, data, chained, dsk)

    def _emit_rows(self, template: MapCall, keys: list, columns: list, per_child: list,
                   refs: tuple, data: tuple, chained: bool, dsk: dict[Any, DaskTask]) -> None:
        """A task per child of a regular map (kept aside when the map is fused)."""
        calls = self.fusion.calls
        shared_refs = refs + data
        if len(columns) == 1 and not per_child and not chained:
            for key, i, value in zip(keys, range(len(keys)), columns[0]):
                dsk[key] = make_task(key, template, i, value, *shared_refs)
            return
        rows = zip(*columns) if columns else itertools.repeat(())
        inputs = zip(*per_child) if per_child else itertools.repeat(())
        for key, i, row, mine in zip(keys, range(len(keys)), rows, inputs):
            child_refs = (*refs, *map(TaskRef, mine), *data) if mine else shared_refs
            if chained:  # its task is made when the chain is fused
                calls[key] = (template, (i, *row), child_refs)
            else:
                dsk[key] = make_task(key, template, i, *row, *child_refs)

    def _emit_placeholder(self, node: Node, why: str, dsk: dict[Any, DaskTask]) -> None:
        """A map that cannot expand becomes one task whose state says why."""
        deps, _, allowed, _ = self._common(node, dsk)
        key = self.base_of(node)
        call = Call(self.spec_of(node), node.name, key, None, (why,), {}, False, frozenset(allowed))
        dsk[key] = make_task(key, run_unmappable, call, *map(TaskRef, deps))
        self.keys[node.index] = key
        self.placeholders.add(node.index)
        self.state_keys.append(key)
