"""What a run's states and value are once its tasks ran: each state under
its task run's name (``extract[3]``), the nodes whose states decide the
flow's state, and the flow body's return value with each task reference
replaced by its result."""

from __future__ import annotations

from typing import Any

from daskflow.compile.graph import Compiler
from daskflow.core import signals
from daskflow.core.groups import task_group
from daskflow.core.states import State
from daskflow.core.walk import transform
from daskflow.define.build import Ref, refs_in


def labelled(compiler: Compiler | None, raw: dict[Any, State], fill: Any) -> dict[str, State]:
    """States by task run name; ``fill(key)`` stands for a task without one."""
    if compiler is None:
        return {}
    out: dict[str, State] = {}
    names: dict[str, str] = {}  # a map's name, once for its elements
    synthetic = compiler.synthetic
    for key in list(compiler.state_keys):
        if isinstance(key, tuple):
            base, index = key
            name = names.get(base)
            if name is None:
                name = names[base] = compiler.name_of(base)
            title = f"{name}[{index}]"
        else:
            title, index = compiler.name_of(key), None
        state = raw.get(key) or synthetic.get(key) or fill(key)
        state.task_name = title
        state.map_index = index
        out[title] = state
    return out


def label(compiler: Compiler, key: Any) -> str:
    """The task run name of ``key`` (``extract[3]`` for a map's element)."""
    if isinstance(key, tuple):
        return f"{compiler.name_of(key[0])}[{key[1]}]"
    return compiler.name_of(key)


def group(compiler: Compiler, key: Any) -> str:
    """``task_group(label(compiler, key))``, without formatting a map
    element's label to take its name back out of it."""
    if isinstance(key, tuple):
        return compiler.name_of(key[0])
    return task_group(compiler.name_of(key))


def returned_nodes(returned: Any) -> list[Any]:
    """The nodes whose results a flow body returned (anywhere inside its value)."""
    return list(refs_in(returned).values())


def reference_nodes(nodes: list[Any], returned: list[Any],
                     only_returned: bool = False) -> list[Any]:
    """The nodes whose states decide the flow's state.

    The returned nodes if the flow returns refs; otherwise the terminal task
    nodes, where a terminal ``always_run`` task (a cleanup step) also brings
    in its upstream nodes, so that a cleanup that ran does not hide a failure.
    With ``only_returned`` (a flow whose ``state_from_returned`` is True:
    Prefect 3's rule, see daskflow.compat.prefect), the returned nodes only,
    none when it returns plain values.  Resource setups and cleanups always
    count: a resource that failed to start or to end fails the run; so do
    transactions' commits (one that could not write the store fails the run).
    """
    cleanups = [n for n in nodes if n.kind in ("setup", "cleanup", "commit")]
    if returned or only_returned:
        return returned + cleanups
    stack = [n for n in nodes if n.downstream == 0 and n.kind in ("task", "cleanup")]
    seen: dict[int, Any] = {}
    while stack:
        node = stack.pop()
        if node.index in seen:
            continue
        seen[node.index] = node
        if node.task.trigger is signals.all_finished:
            stack.extend(node.upstream + node.wait_for)
    for node in cleanups:
        seen.setdefault(node.index, node)
    return sorted(seen.values(), key=lambda n: n.index)


def substitute(value: Any, compiler: Compiler, gathered: dict[Any, State]) -> Any:
    """The flow body's return value with each ref replaced by its task's result."""
    def result(v: Any) -> Any:
        if type(v) is not Ref:
            return v
        keys = compiler.keys[v.node.index]
        if isinstance(keys, list):
            return [gathered[k].result() for k in keys]
        return gathered[keys].result()

    return transform(value, result)
