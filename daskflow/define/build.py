"""The build of a flow body: nodes recorded from task calls, and lazy refs.

A flow body runs once, at build time, with a :class:`Builder` active.  Each
task call inside it appends a :class:`Node` and returns a :class:`Ref`; no
task runs.  Nodes are appended in call order, so a node only ever refers to
nodes before it and the list is already topologically sorted: compiling
(:mod:`daskflow.compile.graph`) is one linear pass over it.

Nothing here imports distributed: this is what users write.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from daskflow.core.walk import inside, is_mappable, transform
from daskflow.exceptions import FlowDefinitionError, MappingError

if TYPE_CHECKING:
    from daskflow.define.task import Task

_builder: contextvars.ContextVar[Builder | None] = contextvars.ContextVar(
    "daskflow_builder", default=None
)


def current_builder() -> Builder | None:
    """The builder of the flow body being built, or None outside one."""
    return _builder.get()


@contextlib.contextmanager
def no_builder() -> Iterator[None]:
    """No flow body is being built in here: tasks that run in the body's own
    thread (``cluster="sync"``, at a wait) call tasks as plain functions."""
    token = _builder.set(None)
    try:
        yield
    finally:
        _builder.reset(token)


class Ref:
    """A lazy reference to the result of a task call inside a flow body.

    It has no value while the flow is built; pass it to other tasks, return
    it from the flow, or map over it.  ``ref.result()`` makes the flow body
    wait for the value (Prefect's future API): everything built so far is
    submitted, and the body goes on once the task has ended.
    """

    __slots__ = ("node", "__weakref__")

    def __init__(self, node: Node) -> None:
        self.node = node

    # -- waiting for it (Prefect 3's future API) ----------------------------------
    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """Wait for the task and return its value (a list for a map).

        A task that failed raises its own exception here, where the body may
        catch it; with ``raise_on_failure=False`` the exception is returned
        instead.  ``timeout`` (seconds) raises :class:`~daskflow.WaitTimeout`
        if the task has not ended by then (it goes on running).
        """
        return waiter_of(self, "result").result((self.node, None), timeout, raise_on_failure)

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the task to end and return its final state (a list of states
        for a map) without bringing its value to the driver; None after
        ``timeout`` seconds if it has not ended."""
        return waiter_of(self, "wait").final_state((self.node, None), timeout)

    @property
    def state(self) -> Any:
        """The task's state now (Pending before it was submitted); for a map,
        the list of its elements' states."""
        return waiter_of(self, "state").current_state((self.node, None))

    def __await__(self) -> Any:
        """``await ref`` in an ``async def`` flow body: ``ref.result()``, waited
        for in a thread so that the body's event loop goes on meanwhile
        (``asyncio.gather`` over references waits for them together)."""
        return _awaited(self, "await").__await__()

    def _misuse(self, what: str) -> FlowDefinitionError:
        return FlowDefinitionError(
            f"{what} the result of task {self.node.name!r} while the flow is being "
            "built, but it has no value yet: call .result() to wait for its value (the "
            "body waits there), or pass it to another task (or map over it with .map) and "
            "do the work inside that task"
        )

    def __bool__(self) -> bool:
        raise self._misuse("Used `if`/`bool()` on")

    def __iter__(self) -> Iterator[Any]:
        raise self._misuse("Iterated over")

    def __len__(self) -> int:
        raise self._misuse("Took len() of")

    def __getitem__(self, item: Any) -> Any:
        raise self._misuse(f"Indexed [{item!r}]")

    def __reduce__(self):
        raise self._misuse("Pickled")

    # Comparing or formatting a ref would silently give a wrong answer
    # (`ref == 12` is False, f"{ref}" is "<Ref ...>"): refuse, as `if ref:` does.
    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        raise self._misuse("Compared (==)")

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        raise self._misuse("Compared (!=)")

    def __lt__(self, other: Any) -> bool:
        raise self._misuse("Compared (<)")

    def __le__(self, other: Any) -> bool:
        raise self._misuse("Compared (<=)")

    def __gt__(self, other: Any) -> bool:
        raise self._misuse("Compared (>)")

    def __ge__(self, other: Any) -> bool:
        raise self._misuse("Compared (>=)")

    __hash__ = object.__hash__

    def __str__(self) -> str:
        raise self._misuse("Turned into a string (str())")

    def __format__(self, spec: str) -> str:
        raise self._misuse("Formatted (an f-string or format())")

    def __repr__(self) -> str:
        kind = " (map)" if self.node.mapped is not None else ""
        return f"<Ref {self.node.name}{kind}>"


class Element:
    """Element ``index`` of a map in a flow body (what ``df.as_completed`` and
    ``df.wait`` give for a map): wait for it, read its state.  It keeps the
    map's reference alive, so the map's results stay on the cluster while it
    lives.  It cannot be passed to another task: pass the map's reference (or
    map over it) instead.
    """

    __slots__ = ("ref", "index")

    def __init__(self, ref: Ref, index: int) -> None:
        self.ref, self.index = ref, index

    @property
    def node(self) -> Node:
        return self.ref.node

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """Wait for this element and return its value (see ``Ref.result``)."""
        return waiter_of(self, "result").result((self.node, self.index), timeout,
                                                raise_on_failure)

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for this element and return its final state (None after ``timeout``)."""
        return waiter_of(self, "wait").final_state((self.node, self.index), timeout)

    @property
    def state(self) -> Any:
        """This element's state now."""
        return waiter_of(self, "state").current_state((self.node, self.index))

    def __await__(self) -> Any:
        """``await element``: its value, as ``element.result()`` (see ``Ref.__await__``)."""
        return _awaited(self, "await").__await__()

    def __eq__(self, other: Any) -> bool:
        return (type(other) is Element and other.node is self.node
                and other.index == self.index)

    def __hash__(self) -> int:
        return hash((id(self.node), self.index))

    def not_an_argument(self) -> FlowDefinitionError:
        return FlowDefinitionError(
            f"element {self.index} of map {self.node.name!r} cannot be passed to a task or "
            "pickled: pass the map's reference (or map over it), or its value "
            "(element.result())")

    def __reduce__(self):
        raise self.not_an_argument()

    def __repr__(self) -> str:
        return f"<Element {self.node.name}[{self.index}]>"


class Waiter(Protocol):
    """What a flow body's waits ask of the run (the engine implements it).

    A target is ``(node, None)`` for a whole call or map, ``(node, i)`` for
    element ``i`` of a map.
    """

    def result(self, target: tuple[Node, int | None], timeout: float | None,
               raise_on_failure: bool) -> Any: ...
    def final_state(self, target: tuple[Node, int | None], timeout: float | None) -> Any: ...
    def current_state(self, target: tuple[Node, int | None]) -> Any: ...
    def wait(self, targets: list[tuple[Node, int | None]], timeout: float | None,
             first: bool) -> set[tuple[int, int | None]]: ...
    def as_completed(self, targets: list[tuple[Node, int | None]], timeout: float | None,
                     ) -> Iterator[tuple[int, int | None]]: ...
    def length(self, node: Node, timeout: float | None) -> int: ...


class WaitOutsideRun(BaseException):
    """A flow body asked for a value while it was built without a run
    (``flow.visualize()``): what was built up to there is all there is.  A
    ``BaseException``, so that a body's ``except Exception`` around the wait
    does not catch it and build a branch as if the value were known."""

    node: Node | None = None  # the node waited for


def waiter_of(ref: Any, what: str) -> Waiter:
    """The run that can answer a wait on ``ref``, or an error saying why none can."""
    builder = _builder.get()
    name = ref.node.name
    if builder is None or not builder.owns(ref.node):
        raise FlowDefinitionError(
            f".{what}() of task {name!r} works only in the body of the flow that called "
            "the task, while that flow runs; return the reference from the flow to get "
            "its value from the run instead")
    if builder.waiter is None:
        stop = WaitOutsideRun(
            f"the flow body waits for task {name!r} here (.{what}()); it is being built "
            "without a run, so the build stops at this wait")
        stop.node = ref.node
        raise stop
    return builder.waiter


async def _awaited(ref: Ref | Element, what: str) -> Any:
    """The value of ``ref`` for an ``await`` in a flow body; a misuse (outside a
    running body) raises at once, in the body's own thread."""
    waiter_of(ref, what)
    return await asyncio.to_thread(ref.result)  # the thread sees the body's builder


class unmapped:  # noqa: N801 - Prefect's spelling
    """Keep an argument whole in ``.map`` instead of mapping over it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class allow_failure:  # noqa: N801 - Prefect's spelling
    """Let a task run even if this upstream failed; it receives the exception."""

    __slots__ = ("ref",)

    def __init__(self, ref: Ref) -> None:
        if not isinstance(ref, Ref):
            raise FlowDefinitionError(
                f"allow_failure() takes the result of a task call inside a flow, "
                f"got {type(ref).__name__}"
            )
        self.ref = ref


class Node:
    """One task call (or one ``.map`` call) recorded in a flow body.

    ``mapped`` is None for a single call; for a map it is the tuple of
    positions (int for positional, str for keyword) that are mapped.
    """

    __slots__ = ("index", "name", "task", "kind", "args", "kwargs", "upstream",
                 "wait_for", "allowed", "mapped", "length", "setups", "members", "downstream",
                 "chunk", "txn")

    def __init__(self, index: int, name: str, task: Task, kind: str = "task") -> None:
        self.index = index
        self.name = name
        self.task = task
        self.kind = kind  # "task", "setup", "cleanup" or "commit" (a transaction's end)
        self.args: tuple = ()
        self.kwargs: dict[str, Any] = {}
        self.upstream: tuple[Node, ...] = ()  # data dependencies, in order
        self.wait_for: tuple[Node, ...] = ()  # order-only dependencies
        self.allowed: frozenset[int] = frozenset()  # upstream indexes allowed to fail
        self.mapped: tuple[int | str, ...] | None = None
        self.length: int | None = None  # a map's length when known at build time
        self.setups: tuple[Node, ...] = ()  # setup nodes of the enclosing resources
        self.members: tuple[Node, ...] = ()  # for a cleanup: the nodes of its block
        self.downstream = 0  # number of nodes that depend on this one
        self.chunk: int | None = None  # a map's .map(chunk=N): elements per Dask task
        self.txn: str | None = None  # the id of the (outermost) transaction it is in

    def dependencies(self) -> Iterator[Node]:
        yield from self.upstream
        yield from self.wait_for
        yield from self.setups
        yield from self.members

    def __repr__(self) -> str:
        return f"<Node {self.index} {self.name} kind={self.kind} mapped={self.mapped}>"


def _scan(value: Any, found: dict[int, Node], allowed: set[int]) -> Any:
    """Find the refs inside an argument, unwrapping ``allow_failure``."""
    def visit(v: Any) -> Any:
        # A node keeps its own copy of each ref: the refs the body holds
        # (Builder.referenced) are then only the body's.
        t = type(v)
        if t is Ref:
            found.setdefault(v.node.index, v.node)
            return Ref(v.node)
        if t is allow_failure:
            node = v.ref.node
            found.setdefault(node.index, node)
            allowed.add(node.index)
            return Ref(node)
        if t is Element:
            raise v.not_an_argument()
        return v

    return transform(value, visit)


def refs_in(value: Any) -> dict[int, Node]:
    """The nodes of the refs anywhere inside ``value``, by index, in order."""
    return {v.node.index: v.node for v in inside(value) if type(v) is Ref}


class Builder:
    """Records the nodes of one flow run, including nested flows."""

    def __init__(self, flow_name: str, run_id: str | None = None) -> None:
        self.flow_name = flow_name
        self.run_id = run_id  # the run it builds (None: a picture, flow.visualize)
        self.nodes: list[Node] = []
        self._names: dict[str, int] = {}
        self._prefix: list[str] = []
        self._blocks: list[_Block] = []  # open resource blocks, innermost last
        self.transactions: list[Any] = []  # open transactions, innermost last
        self._flows: list[Any] = []  # flows being built, outermost first
        self.waiter: Waiter | None = None  # the run that answers the body's waits
        self._refs: list[weakref.ref[Ref]] = []  # every ref handed to the body

    def owns(self, node: Node) -> bool:
        """Whether ``node`` was recorded by this builder."""
        nodes = self.nodes
        return node.index < len(nodes) and nodes[node.index] is node

    def referenced(self) -> set[int]:
        """The nodes the body still holds a reference to (it may pass them to
        tasks it builds later, or wait for them); the others can be forgotten
        once their dependents are submitted."""
        alive = [r for r in self._refs if r() is not None]
        self._refs = alive
        return {ref.node.index for r in alive if (ref := r()) is not None}

    def open_blocks(self) -> set[int]:
        """The setups and members of the resource blocks still open (their
        cleanup, not built yet, will wait for them)."""
        held = {n.index for b in self._blocks for n in (b.setup, *b.members)}
        if self.transactions:  # the same for an open transaction's commit
            held.update(n.index for n in self.transactions[0].members)
        return held

    # -- activation -------------------------------------------------------
    def __enter__(self) -> Builder:
        if _builder.get() is not None:
            raise FlowDefinitionError("a flow is already being built in this context")
        self._token = _builder.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _builder.reset(self._token)
        if (self._blocks or self.transactions) and exc[0] is None:
            raise FlowDefinitionError("a resource block or a transaction was left open in "
                                      "the flow body")

    def nested(self, name: str) -> _Prefix:
        """Prefix the names of the nodes added while a nested flow is built."""
        return _Prefix(self, name)

    # -- recording ----------------------------------------------------------
    def _unique_name(self, base: str) -> str:
        name = "/".join([*self._prefix, base]) if self._prefix else base
        count = self._names.get(name, 0) + 1
        self._names[name] = count
        return name if count == 1 else f"{name}-{count}"

    def add(
        self,
        task: Task,
        args: tuple,
        kwargs: dict[str, Any],
        *,
        wait_for: Iterable[Any] | None = None,
        map_over: bool = False,
        kind: str = "task",
        chunk: int | None = None,
    ) -> Ref:
        """Record one call of ``task`` and return a reference to its result."""
        node = Node(len(self.nodes), self._unique_name(task.name), task, kind)
        node.chunk = chunk
        found: dict[int, Node] = {}
        allowed: set[int] = set()
        if map_over:
            node.args, node.kwargs, node.mapped = _split_mapped(task, args, kwargs, found, allowed)
            node.length = _static_length(node)
        else:
            node.args = tuple([_scan(a, found, allowed) for a in args])
            if kwargs:
                node.kwargs = {k: _scan(v, found, allowed) for k, v in kwargs.items()}
        if found:
            node.upstream = tuple(found.values())
        if wait_for is not None:
            node.wait_for = _wait_nodes(wait_for, node, allowed)
        if allowed:
            node.allowed = frozenset(allowed)
        if self._blocks:
            # As in Prefect 1, a task waits for the setup of its resource only
            # when nothing else in the block comes before it; the others follow
            # the setup through their upstream tasks, and their triggers see
            # only those tasks.
            deps = [d.index for d in node.upstream + node.wait_for]
            node.setups = tuple(b.setup for b in self._blocks
                                if not any(i in b.indexes for i in deps))
            for block in self._blocks:
                block.add(node)
        if self.transactions:  # the outermost one commits or rolls back its members
            outer = self.transactions[0]
            node.txn = outer.id
            outer.members.append(node)
        for dep in node.upstream:
            dep.downstream += 1
        for dep in node.wait_for:
            dep.downstream += 1
        self.nodes.append(node)
        ref = Ref(node)
        self._refs.append(weakref.ref(ref))
        return ref

    def open_block(self, setup_ref: Ref) -> None:
        """Start a resource block whose setup node is ``setup_ref``."""
        self._blocks.append(_Block(setup_ref.node))

    def close_block(self, cleanup_task: Task, setup_ref: Ref) -> Ref:
        """End the innermost resource block with a cleanup node."""
        block = self._blocks.pop()
        if block.setup is not setup_ref.node:
            raise FlowDefinitionError("resource blocks must be closed in reverse order")
        ref = self.add(cleanup_task, (setup_ref,), {}, kind="cleanup")
        ref.node.members = tuple(block.members)
        return ref

    # -- nesting flows ------------------------------------------------------------
    def enter_flow(self, flow: Any) -> None:
        """Record that ``flow``'s body is being built; a flow may not call itself."""
        if any(f is flow for f in self._flows):
            chain = " -> ".join(f.name for f in [*self._flows, flow])
            raise FlowDefinitionError(
                f"flow {flow.name!r} calls itself ({chain}); a flow body is built once, "
                "before anything runs, so recursion never ends. Loop in the body, or "
                "map a task over the items instead")
        self._flows.append(flow)

    def exit_flow(self) -> None:
        self._flows.pop()


class _Block:
    """An open resource block: its setup node and the nodes created inside it."""

    __slots__ = ("setup", "members", "indexes")

    def __init__(self, setup: Node) -> None:
        self.setup = setup
        self.members: list[Node] = []
        self.indexes: set[int] = set()

    def add(self, node: Node) -> None:
        self.members.append(node)
        self.indexes.add(node.index)


class _Prefix:
    def __init__(self, builder: Builder, name: str) -> None:
        self.builder, self.name = builder, name

    def __enter__(self) -> None:
        self.builder._prefix.append(self.name)

    def __exit__(self, *exc: Any) -> None:
        self.builder._prefix.pop()


def _wait_nodes(wait_for: Iterable[Any] | None, node: Node, allowed: set[int]) -> tuple[Node, ...]:
    """The nodes of ``wait_for=``; ``df.allow_failure(x)`` there lets the task
    run after ``x`` failed (recorded in ``allowed``)."""
    if wait_for is None:
        return ()
    if isinstance(wait_for, (Ref, allow_failure)):
        wait_for = [wait_for]
    nodes: dict[int, Node] = {}
    for item in wait_for:
        if isinstance(item, allow_failure):
            item = item.ref
            allowed.add(item.node.index)
        if not isinstance(item, Ref):
            raise FlowDefinitionError(
                f"wait_for of {node.name!r} takes results of task calls, got {item!r}"
            )
        nodes[item.node.index] = item.node
    return tuple(nodes.values())


def _split_mapped(
    task: Task, args: tuple, kwargs: dict[str, Any],
    found: dict[int, Node], allowed: set[int],
) -> tuple[tuple, dict[str, Any], tuple[int | str, ...]]:
    """Separate mapped arguments (materialised as lists, or refs) from whole ones.

    Prefect 3's rule (:func:`~daskflow.core.walk.is_mappable`): a task result
    and any iterable but str, bytes and file objects is mapped over; the rest
    (and ``df.unmapped(x)``, and a resource's value) is static, given whole
    to every call.  Refs
    anywhere inside an element become dependencies of that element's call.
    """
    positions: list[int | str] = []

    def one(pos: int | str, value: Any) -> Any:
        if type(value) is unmapped:
            return _scan(value.value, found, allowed)
        if isinstance(value, (Ref, allow_failure)):
            if (value.ref if isinstance(value, allow_failure) else value).node.kind == "setup":
                return _scan(value, found, allowed)  # a resource's value: whole
            positions.append(pos)
            return _scan(value, found, allowed)
        if not is_mappable(value):
            return _scan(value, found, allowed)
        positions.append(pos)
        items = list(value)
        if _ATOMS.issuperset(map(type, items)):  # e.g. range(20_000): nothing to scan
            return items
        return [_scan(v, found, allowed) for v in items]

    new_args = tuple(one(i, a) for i, a in enumerate(args))
    new_kwargs = {k: one(k, v) for k, v in kwargs.items()}
    if not positions:
        raise MappingError(_nothing_to_map(task, args, kwargs))
    return new_args, new_kwargs, tuple(positions)


def _nothing_to_map(task: Task, args: tuple, kwargs: dict[str, Any]) -> str:
    """What is wrong with a ``.map`` none of whose arguments is mapped over."""
    try:
        params = list(inspect.signature(task.fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have none
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    given = [(names[i] if i < len(names) else f"argument {i}", v) for i, v in enumerate(args)]
    given += list(kwargs.items())
    shown = ", ".join(
        f"{name}={'df.unmapped(...)' if type(v) is unmapped else _short(v)}" for name, v in given)
    return (f"{task.name}.map() has nothing to map over: every argument is given whole to "
            f"each call ({shown or 'no arguments'}). Pass a list (or another iterable) or "
            "a task result to map over; numbers, None, str, bytes, file objects and "
            f"df.unmapped(...) are static. To call it once, call {task.name}(...) instead")


def mapped_values(node: Node) -> list[Any]:
    """The mapped arguments of a map node, in the order of ``node.mapped``."""
    return [node.args[p] if isinstance(p, int) else node.kwargs[p] for p in node.mapped or ()]


def _static_length(node: Node) -> int | None:
    """The length of a map known at build time, or None if only known at run time."""
    lengths = set()
    for value in mapped_values(node):
        if isinstance(value, Ref):
            if value.node.length is None:
                return None
            lengths.add(value.node.length)
        else:
            lengths.add(len(value))
    if len(lengths) > 1:
        raise MappingError(different_lengths(node, lengths))
    return lengths.pop()


def different_lengths(node: Node, lengths: Iterable[int], when: str = "") -> str:
    """What is wrong with a map whose mapped arguments differ in length (found
    at build time, or ``when="at run time"``)."""
    at = f" {when}" if when else ""
    return (f"{node.task.name}.map() got mapped arguments of different lengths "
            f"{sorted(lengths)}{at}; give every mapped argument the same length, or wrap "
            "the ones to pass whole in df.unmapped()")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


_ATOMS = frozenset((int, float, str, bytes, bool, type(None)))  # values with nothing inside
_PLAIN = _ATOMS | {Ref}


def check_built(nodes: list[Node]) -> None:
    """Catch, as nodes are submitted, arguments that were closed by then.

    A ``with`` block of an ordinary context manager (an open file,
    ``contextlib.closing(sqlite3.connect(...))``) ends while the flow body is
    built, before any task runs, so a task would receive a closed object.
    """
    plain = _PLAIN
    for node in nodes:
        args = node.args
        if len(args) == 1 and not node.kwargs and type(args[0]) in plain:
            continue  # the common case, e.g. a chain of calls
        for pos, value in [*enumerate(args), *node.kwargs.items()]:
            if type(value) is list and plain.issuperset(map(type, value)):
                continue  # a map's elements, e.g. numbers
            for item in inside(value):
                if type(item) not in plain and _is_closed(item):
                    what = f"argument {pos}" if isinstance(pos, int) else f"argument {pos!r}"
                    raise FlowDefinitionError(
                        f"task {node.name!r} got a closed {type(item).__name__} as {what}: "
                        "a `with` block in a flow body ends while the flow is built, before "
                        "any task runs. Open it inside the task, or make it a resource "
                        "(@df.resource), whose cleanup runs after the tasks of its block")


def _is_closed(obj: Any) -> bool:
    closed = getattr(obj, "closed", None)
    if closed is True:  # files, sockets' file objects, many connections
        return True
    if type(obj).__module__ == "sqlite3" and type(obj).__name__ == "Connection":
        try:
            obj.total_changes  # noqa: B018 - raises on a closed connection
        except Exception:
            return True
    return False
