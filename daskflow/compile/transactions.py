"""Compile a transaction's commit node (see :mod:`daskflow.define.transactions`).

The commit task is ``run_commit(call, *member_states)``: it takes the state
of every task run of the transaction's members, through result-free
``done-`` tasks as a resource's cleanup does, so that no data moves; a
member with ``on_commit`` or ``on_rollback`` hooks gives its state with its
result instead, for its hooks to read.  The call's arguments say what the
worker needs to decide: the transaction id, each member's task and number
of task runs, the task run keys (to mark them RolledBack) and the result
stores its members stage in.  Members never fuse with what follows them
(the compiler keeps their keys), so each has a state of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dask.task_spec import TaskRef

from daskflow.compile.tasks import as_keys, make_task
from daskflow.define.build import Node
from daskflow.wire import Call
from daskflow.worker.transactions import run_commit

if TYPE_CHECKING:
    from dask.task_spec import Task as DaskTask

    from daskflow.compile.graph import Compiler


def emit_commit(compiler: Compiler, node: Node, dsk: dict[Any, DaskTask]) -> None:
    """Emit the commit task of a transaction whose members are all emitted."""
    inputs: list[Any] = []
    members: list[tuple[Any, int]] = []  # (task, how many task runs), in input order
    run_keys: list[Any] = []
    stores: dict[str, dict[str, Any]] = {}
    for member in node.members:
        keys = as_keys(compiler.keys.get(member.index))
        if not keys or any(k in compiler.synthetic for k in keys):
            continue  # not run at all (only reused results needed it)
        dkeys, n = compiler.inputs(member.index)
        task = member.task
        hooked = bool(task.on_commit or task.on_rollback)
        inputs.extend(dkeys if hooked else [compiler.done_key(k, dsk) for k in dkeys])
        members.append((task, n))
        run_keys.extend(keys)
        settings = compiler.spec_of(member).cache
        if settings is not None:
            stores.setdefault(settings.storage, settings.options)
    txn = node.members[0].txn if node.members else ""
    key = compiler.base_of(node)
    args = (txn, tuple(members), tuple(run_keys), tuple(stores.items()))
    call = Call(compiler.spec_of(node), node.name, key, None, args, {}, False, frozenset())
    dsk[key] = make_task(key, run_commit, call, *map(TaskRef, inputs))
    compiler.keys[node.index] = key
    compiler.state_keys.append(key)
