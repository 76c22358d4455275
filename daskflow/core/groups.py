"""The one grouping of task runs: by the task of the flow they belong to.

A map's children are labelled ``"decode[0]"``, ``"decode[1]"``, ...; they
belong to the task ``"decode"``.  The run's summary, the live progress
display, the notebook view and the report all group with :func:`by_task`
(from live ``State`` objects or from a run record's dicts alike), and count
a group's runs into a :class:`Group`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

# From worst to best: the colour of a group is its worst finished state.
WORST = ("CRASHED", "FAILED", "CANCELLED", "RUNNING", "PENDING", "SKIPPED", "COMPLETED")


def task_group(label: str) -> str:
    """The task a task run belongs to.

    >>> task_group("decode[3]"), task_group("load")
    ('decode', 'load')
    """
    if label.endswith("]"):
        base, _, index = label[:-1].rpartition("[")
        if base and index.isdigit():
            return base
    return label


def by_task(states: Mapping[str, T]) -> dict[str, list[T]]:
    """Task runs grouped by task, in the order the tasks first appear."""
    out: dict[str, list[T]] = {}
    for label, value in states.items():
        out.setdefault(task_group(label), []).append(value)
    return out


def worst(counts: Mapping[str, int]) -> str:
    """The worst finished state type among a group's runs, else PENDING."""
    return next((k for k in WORST if counts.get(k) and k not in ("PENDING", "RUNNING")),
                "PENDING")


# the order of a progress bar's segments (pending is what is left)
_BAR_ORDER = ("COMPLETED", "SKIPPED", "CANCELLED", "FAILED", "CRASHED", "RUNNING")


class Group:
    """The runs of one task of the flow, counted by state type."""

    __slots__ = ("name", "total", "counts", "retries", "worst")

    def __init__(self, name: str, total: int = 0, counts: Counter[str] | None = None,
                 retries: int = 0) -> None:
        self.name = name
        self.total = total
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.retries = retries
        self.worst = worst(self.counts)

    @property
    def done(self) -> int:
        return self.total - self.counts.get("PENDING", 0) - self.counts.get("RUNNING", 0)

    def cells(self, width: int) -> list[tuple[str, int]]:
        """The bar of this group in ``width`` cells: ``(state type, cells)`` per
        state in proportion to its runs (one failure in 50 still shows: every
        state with a run gets a cell), what is left is pending."""
        total = max(self.total, 1)
        parts = [(kind, self.counts.get(kind, 0)) for kind in _BAR_ORDER]
        out = [(kind, max(1, round(width * n / total))) for kind, n in parts if n]
        while sum(c for _, c in out) > width:  # rounding up: take from the largest
            i = max(range(len(out)), key=lambda j: out[j][1])
            out[i] = (out[i][0], out[i][1] - 1)
        return [(kind, c) for kind, c in out if c]


def groups_of(states: Mapping[str, Any]) -> list[Group]:
    """One :class:`Group` per task, from ``State`` objects by label."""
    out = []
    for name, runs in by_task(states).items():
        counts: Counter[str] = Counter(st.type.value for st in runs)
        out.append(Group(name, len(runs), counts, _retries(runs)))
    return out


def _retries(runs: Iterable[Any]) -> int:
    return sum(st.retries for st in runs)
