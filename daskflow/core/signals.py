"""Signals a task raises to end itself in a given state, and the triggers.

A trigger is a function of the upstream states that says whether a task
runs.  ``True`` runs it; ``False`` does not (the task is then Failed with
name ``TriggerFailed`` when an upstream failed under ``all_successful``,
and Skipped with name ``NotTriggered`` otherwise, so that a conditional
branch that did not fire does not fail the flow).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from daskflow.core.states import NO_RESULT, State, StateType


class Signal(Exception):
    """Base of the signals a task may raise to choose its final state."""

    def __init__(self, message: str = "", *, result: Any = NO_RESULT) -> None:
        super().__init__(message)
        self.message = message
        self.result = None if result is NO_RESULT else result


class SKIP(Signal):
    """End the task as Skipped.

    Downstream tasks are skipped too unless they set
    ``skip_on_upstream_skip=False``; those receive ``result`` (default None).

    >>> import daskflow as df
    >>> @df.task
    ... def maybe(x):
    ...     if x is None:
    ...         raise df.SKIP("no input")
    ...     return x
    """


class FAIL(Signal):
    """End the task as Failed at once, without retries."""


Trigger = Callable[[Sequence["State"]], bool]


def all_successful(upstream: Sequence[State]) -> bool:
    """Run when every upstream task completed or was skipped (the default)."""
    # (in C: a sum over a 20,000-element map asks this of each element's state)
    return _SUCCESSFUL.issuperset(map(state_type, upstream))


_SUCCESSFUL = frozenset((StateType.COMPLETED, StateType.SKIPPED))
state_type = operator.attrgetter("type")  # a state's type


def all_finished(upstream: Sequence[State]) -> bool:
    """Run whatever the upstream states are (alias: ``always_run``)."""
    return True


always_run = all_finished


def any_failed(upstream: Sequence[State]) -> bool:
    """Run when at least one upstream task failed or crashed."""
    return any(s.is_failed() for s in upstream)


def all_failed(upstream: Sequence[State]) -> bool:
    """Run when every upstream task failed or crashed."""
    return all(s.is_failed() for s in upstream)


def any_successful(upstream: Sequence[State]) -> bool:
    """Run when at least one upstream task completed or was skipped."""
    return any(s.is_completed() or s.is_skipped() for s in upstream)
