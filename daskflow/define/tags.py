"""``df.tags(...)``: tags for the task runs created inside a block (Prefect 3's).

::

    with df.tags("db", "nightly"):
        load(rows)            # this call's task run carries "db" and "nightly"

Inside a flow body, each task call (or ``.map``) made in the block carries
the block's tags besides its task's own; nested blocks add up.  Tags feed
the tag concurrency limits (``concurrency={"db": 2}``) and
``df.context().tags``.  Outside a flow body a task call is a plain
function call, and the block changes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from daskflow.exceptions import FlowDefinitionError

_current: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "daskflow_tags", default=frozenset())


@contextlib.contextmanager
def tags(*names: str) -> Iterator[frozenset[str]]:
    """Add ``names`` to the tags of the task runs created inside the block;
    yields the tags in force.

    >>> import daskflow as df
    >>> with df.tags("db") as now:
    ...     sorted(now)
    ['db']
    """
    for name in names:
        if not isinstance(name, str) or not name:
            raise FlowDefinitionError(f"df.tags() takes non-empty strings, got {name!r}")
    token = _current.set(_current.get() | frozenset(names))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def current_tags() -> frozenset[str]:
    """The tags of the ``df.tags`` blocks this code runs in."""
    return _current.get()


def tagged(task: Any) -> Any:
    """``task``, or a copy carrying the tags of the blocks it is called in."""
    extra = _current.get()
    if not extra or extra <= task.tags:
        return task
    copies = task.__dict__.setdefault("_tagged_copies", {})  # one copy per tag set
    copy = copies.get(extra)
    if copy is None:
        copy = copies[extra] = task.with_options(tags=task.tags | extra)
    return copy
