"""Fusion: linear chains and element-wise map chains become one Dask task each.

Every task inside a fused one keeps its own state, retries, hooks and logs
(:func:`daskflow.worker.calls.run_fused`); only the Dask task is shared.
The chains are planned once, before the first stage (:meth:`Fusion.plan`);
as the compiler emits a chain's members it keeps their calls aside
(:attr:`Fusion.calls`) and, once the whole chain is emitted, makes the fused
tasks (:meth:`Fusion.fuse`).
"""

from __future__ import annotations

from typing import Any

from dask.task_spec import Task as DaskTask

from daskflow.compile.chunks import ChunkJob
from daskflow.compile.tasks import as_keys, make_task
from daskflow.define.build import Node, Ref, refs_in
from daskflow.wire import Call
from daskflow.worker.calls import FusedMap, run_fused
from daskflow.worker.run import run_task

_EMPTY: frozenset[int] = frozenset()


class Fusion:
    """The chains of one run to fuse, and the calls of their members so far."""

    def __init__(self) -> None:
        self.chains: dict[int, list[Node]] = {}  # last node index -> its chain
        self.in_chain: set[int] = set()
        self.inner: set[int] = set()  # single calls in a chain after its first
        self.fused_into: dict[int, Node] = {}  # chain members but the last -> the last
        self.calls: dict[Any, tuple] = {}  # chain members' calls by key (see fuse)
        self.chunked: dict[int, tuple] = {}  # chunked chain members by node (see fuse)

    @classmethod
    def plan(cls, nodes: list[Node], skip: set[int] | frozenset[int], keep: set[int],
             max_fused: int, first: int = 0) -> Fusion:
        """The chains to fuse among ``nodes``.

        An edge ``a -> b`` fuses when ``b`` is the only task that uses ``a``
        (no ``wait_for`` on it), ``b`` depends on ``a`` alone, both are in the
        same resource blocks (a block's cleanup then waits for the fused task),
        neither asks for worker resources, neither is served from the cache
        (``skip``), ``a``'s result is not returned by the flow (``keep``), and
        either both are single calls or ``b`` maps over ``a`` element by
        element (child i of ``b`` needs child i of ``a`` only).  Chains are cut
        every ``max_fused`` tasks: a fused task holds one worker thread for
        all of them, and a lost worker reruns them all.  Nodes before index
        ``first`` were submitted earlier (a flow body that waited): nothing
        fuses with them.
        """
        fusion = cls()
        nxt = _edges(nodes, skip, keep, first)
        targets = {b.index for b in nxt.values()}
        for head in nodes:
            if head.index not in nxt or head.index in targets:
                continue
            chain = [head]
            while chain[-1].index in nxt:
                chain.append(nxt[chain[-1].index])
            for start in range(0, len(chain), max_fused):
                piece = chain[start:start + max_fused]
                if len(piece) > 1:
                    fusion._add(piece)
        return fusion

    def merge(self, other: Fusion) -> None:
        """Add the chains planned for the nodes a later stage brought."""
        self.chains.update(other.chains)
        self.in_chain.update(other.in_chain)
        self.inner.update(other.inner)
        self.fused_into.update(other.fused_into)

    def _add(self, piece: list[Node]) -> None:
        self.chains[piece[-1].index] = piece
        self.in_chain.update(n.index for n in piece)
        self.fused_into.update((n.index, piece[-1]) for n in piece[:-1])
        if piece[0].mapped is None:
            self.inner.update(n.index for n in piece[1:])

    def label(self, node: Node) -> str | None:
        """The key label of a fused task (the names of the tasks inside it), or
        None when ``node`` does not end a chain."""
        chain = self.chains.get(node.index)
        if chain is None:
            return None
        names = [n.name for n in chain]
        return "+".join(names) if len(names) <= 3 else f"{names[0]}+..+{names[-1]}"

    def fuse(self, keys: dict[int, Any], placeholders: set[int],
             dsk: dict[Any, DaskTask]) -> list[tuple[ChunkJob, int]]:
        """Make one task per element of each chain emitted by now; the calls of
        a chain that cannot be fused after all become tasks of their own.

        A member's entry in :attr:`calls` is ``(call, inputs)``, or for a child
        of a regular map ``(map_call, (i, *elements), inputs)``.  A chain of
        such children is one :class:`FusedMap` shared by all its elements.
        A chain of chunked maps (entries in :attr:`chunked`) becomes one
        chunk job, returned with its last node for the compiler to start.
        """
        calls = self.calls
        jobs: list[tuple[ChunkJob, int]] = []
        for last, chain in list(self.chains.items()):
            if not all(n.index in keys for n in chain):
                continue  # not emitted yet
            del self.chains[last]
            if any(n.index in self.chunked for n in chain):
                if any(n.index in placeholders for n in chain):
                    jobs += self._unfused_chunks(chain, keys, dsk)  # a member could not expand
                else:
                    jobs.append((self._chunk_job(chain), last))
                continue
            columns = [as_keys(keys[n.index]) for n in chain]
            if (any(n.index in placeholders for n in chain)
                    or len({len(c) for c in columns}) != 1
                    or not all(k in calls for c in columns for k in c)
                    # a later member takes the previous one's state and nothing else
                    # (scattered data would be a second input)
                    or any(len(calls[c[0]][-1]) != 1 for c in columns[1:])):
                for column in columns:
                    self._unfuse(column, dsk)
                continue
            heads = [calls[c[0]] for c in columns]
            if all(len(e) == 3 for e in heads):
                fused = FusedMap(tuple(e[0] for e in heads))
                for row in zip(*columns):
                    entries = [calls.pop(k) for k in row]
                    elements = [x for e in entries for x in e[1][1:]]
                    dsk[row[-1]] = make_task(row[-1], fused, entries[0][1][0], *elements,
                                             *entries[0][2])
                continue
            for row in zip(*columns):
                entries = [calls.pop(k) for k in row]
                fused_calls = tuple(_call_of(e) for e in entries)
                dsk[row[-1]] = make_task(row[-1], run_fused, fused_calls, *entries[0][-1])
        return jobs

    def _unfused_chunks(self, chain: list[Node], keys: dict[int, Any],
                        dsk: dict[Any, DaskTask]) -> list[tuple[ChunkJob, int]]:
        """The members of a chain that cannot fuse after all: each chunked map
        a job of its own, the others' calls tasks of their own."""
        jobs = []
        for n in chain:
            entry = self.chunked.pop(n.index, None)
            if entry is not None:
                jobs.append((ChunkJob([entry[5]], *entry[:5]), n.index))
            else:
                self._unfuse(as_keys(keys[n.index]), dsk)
        return jobs

    def _unfuse(self, keys: list[Any], dsk: dict[Any, DaskTask]) -> None:
        """The calls of ``keys`` kept aside for fusion become tasks of their own."""
        for k in keys:
            if k in self.calls:
                dsk[k] = _unfused(k, self.calls.pop(k))

    def _chunk_job(self, chain: list[Node]) -> ChunkJob:
        """The chunks of a chain of chunked maps (whose chunks line up): one
        :class:`FusedMap` per element when each map after the first takes
        the previous one's state and nothing else; otherwise a job per map,
        emitted together (the first one's pilot sizes them all)."""
        entries = [self.chunked.pop(n.index) for n in chain]
        if all(len(e[2]) == 1 and not e[3] and not e[4] for e in entries[1:]):
            head = entries[0]
            return ChunkJob([e[5] for e in entries], FusedMap(tuple(e[0] for e in entries)),
                            [c for e in entries for c in e[1]], head[2], head[3], head[4])
        jobs = [ChunkJob([e[5]], *e[:5]) for e in entries]
        for job in jobs[1:]:
            jobs[0].then.append(job)
            jobs[0].layouts.insert(0, job.layout)
        return jobs[0]


def _edges(nodes: list[Node], skip: set[int] | frozenset[int],
           keep: set[int], first: int = 0) -> dict[int, Node]:
    """``a.index -> b`` for every edge that may fuse (see :meth:`Fusion.plan`)."""
    # node.downstream counts the nodes that use a node as an input or in
    # wait_for.  A resource's cleanup waits for every task of its block:
    # a chain fuses inside one block (the cleanup then waits for the
    # fused task), never across a block's edge.
    blocks: dict[int, tuple[int, ...]] = {}
    for n in nodes:
        for m in n.members:
            blocks[m.index] = (*blocks.get(m.index, ()), n.index)
    nxt: dict[int, Node] = {}
    for b in nodes:
        if (len(b.upstream) != 1 or b.kind != "task" or b.wait_for or b.setups or b.members
                or b.task.resources or b.index in skip):
            continue
        a = b.upstream[0]
        if (a.downstream != 1 or a.kind != "task" or a.index in keep or a.index < first
                or a.task.resources
                or a.index in skip or blocks.get(a.index) != blocks.get(b.index)):
            continue
        if (a.mapped is None and b.mapped is None) or (
                a.mapped is not None and b.mapped is not None and _elementwise(b, a)):
            nxt[a.index] = b
    return nxt


def _elementwise(b: Node, a: Node) -> bool:
    """Whether map ``b`` uses map ``a`` only element by element."""
    mapped = set(b.mapped or ())
    seen = False
    for pos, value in [*enumerate(b.args), *b.kwargs.items()]:
        if type(value) is Ref and value.node is a:
            if pos not in mapped:
                return False
            seen = True
            continue
        if a.index in refs_in(value):
            return False
    return seen


def _call_of(entry: tuple) -> Call:
    """The Call of a chain member's entry (see :meth:`Fusion.fuse`)."""
    if len(entry) == 2:
        return entry[0]
    template, (i, *elements), _ = entry
    return template.call(i, elements)


def _unfused(key: Any, entry: tuple) -> DaskTask:
    """The task of a chain member that runs on its own after all."""
    if len(entry) == 2:
        return make_task(key, run_task, entry[0], *entry[1])
    return make_task(key, entry[0], *entry[1], *entry[2])
