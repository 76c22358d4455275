"""Transactions, the build side: a group of tasks that commits or rolls back as one.

Inside a flow body ``with df.transaction():`` marks every task created in
the block as a *member*.  A member that stores its result (``cache=True``,
``persist=True``, a flow's ``cache=`` or a retried flow's own results)
*stages* it instead of writing it to the result store.  Leaving the block
records a *commit* node that waits for every member without moving data
(as a resource's cleanup does) and decides from their states, on a worker
(:mod:`daskflow.worker.transactions`):

- every member Completed (or Skipped): the staged results move into the
  store and the members' ``on_commit`` hooks run, in build order;
- a member Failed, Crashed or Cancelled: the ``on_rollback`` hooks of the
  completed members run, newest first (by end time), their states become
  ``RolledBack`` (a Completed state, as in Prefect 3), and the staged results
  are discarded: the store has no entry for any member.

A transaction opened inside another one is part of it (Prefect 3's default,
``LAZY`` commit mode): its members commit when the outermost one commits and
roll back when anything in the outermost one fails.  Outside a flow body a
task call is a plain function call and there is nothing to stage, so
``df.transaction()`` is an error there.
"""

from __future__ import annotations

import uuid
from typing import Any

from daskflow.define.build import Node, Ref, current_builder
from daskflow.define.task import Task
from daskflow.exceptions import FlowDefinitionError


def commit(*states: Any) -> None:  # pragma: no cover - named by the commit node, never called
    """The function of a transaction's commit node (the worker runs
    :func:`daskflow.worker.transactions.run_commit` instead)."""


class Transaction:
    """An open transaction of a flow body: its id and the nodes made inside it."""

    __slots__ = ("id", "name", "members", "ref")

    def __init__(self, name: str) -> None:
        self.id = uuid.uuid4().hex[:12]  # names its staging folder in the result store
        self.name = name
        self.members: list[Node] = []
        self.ref: Ref | None = None  # the commit node's reference, once the block closed

    def __repr__(self) -> str:
        return f"<Transaction {self.name} ({len(self.members)} task(s))>"


class transaction:  # noqa: N801 - Prefect's spelling
    """Group the tasks created in a ``with`` block of a flow body.

    Their stored results are staged and committed only when every one of
    them completed; if one fails, the ``on_rollback`` hooks of the completed
    ones run (newest first) and nothing is committed; on commit their
    ``on_commit`` hooks run.  See :mod:`daskflow.define.transactions`.

    Parameters
    ----------
    name : str
        The name of the commit node in ``run.states`` (``"transaction"``).

    Examples
    --------
    >>> import daskflow as df
    >>> @df.flow
    ... def etl():
    ...     with df.transaction():
    ...         return df.task(lambda: 1, name="one")()
    >>> etl(cluster="sync")
    1
    """

    def __init__(self, name: str = "transaction") -> None:
        if not isinstance(name, str) or not name:
            raise FlowDefinitionError(f"df.transaction(name=...) takes a non-empty str, "
                                      f"got {name!r}")
        self.name = name
        self._txn: Transaction | None = None

    def __enter__(self) -> Transaction:
        builder = current_builder()
        if builder is None:
            raise FlowDefinitionError(
                "df.transaction() groups the tasks of a flow body; outside one a task call "
                "is a plain function call and there is nothing to stage or roll back. Use "
                "it inside a @df.flow function")
        if self._txn is not None:
            raise FlowDefinitionError("this df.transaction() is already open; make a new one")
        self._txn = Transaction(self.name)
        builder.transactions.append(self._txn)
        return self._txn

    def __exit__(self, *exc: Any) -> None:
        builder = current_builder()
        txn, self._txn = self._txn, None
        if builder is None or txn is None or not builder.transactions:  # pragma: no cover
            raise FlowDefinitionError("df.transaction() closed outside its flow body")
        if builder.transactions[-1] is not txn:
            raise FlowDefinitionError("transactions must be closed in reverse order")
        builder.transactions.pop()
        if builder.transactions or exc[0] is not None:
            return  # nested: the outermost one decides; an error: the build stops anyway
        node = Task(commit, name=txn.name, cache=False)
        txn.ref = builder.add(node, (), {}, kind="commit")
        txn.ref.node.members = tuple(txn.members)
