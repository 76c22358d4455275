"""The task groups of a live run, kept up to date from its event stream.

The progress display redraws four times a second; each redraw costs the
states received since the previous one, not a pass over every task.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from daskflow.core.groups import Group


class LiveGroups:
    """The groups of a live run, kept up to date from what changed since the
    last call: each redraw costs the states received since the previous one,
    not a pass over every task (a redraw of a 20,000-task map used to take
    ~80 ms of the driver's GIL, four times a second)."""

    def __init__(self, keys: list[Any], synthetic: dict[Any, Any], changes: list[Any],
                 states: dict[Any, Any], group: Any) -> None:
        """``changes``: the keys whose state was received, in order; ``states``: the
        latest state of each (a :class:`~daskflow.events.monitor.RunMonitor`'s);
        ``group(key)``: the task a key's run belongs to (``task_group`` of its label)."""
        self.keys, self.synthetic, self.changes, self.group = keys, synthetic, changes, group
        self.states = states
        self.seen = self.cursor = 0
        self.group_of: dict[Any, _Live] = {}
        self.current: dict[Any, tuple[str, int]] = {}  # key -> (state type, retries)
        self.live: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def __call__(self) -> list[Group]:
        with self._lock:  # the progress display and the run's recorder both read it
            return self._update()

    def _update(self) -> list[Group]:
        keys = self.keys
        n = len(keys)
        for key in keys[self.seen:n]:
            name = self.group(key)
            live = self.live.get(name)
            if live is None:
                live = self.live[name] = _Live(name)
            live.total += 1
            self.group_of[key] = live
            state = self.synthetic.get(key)
            if state is not None:
                self._set(key, state)
        self.seen = n
        m = len(self.changes)
        states = self.states
        for key in self.changes[self.cursor:m]:
            self._set(key, states[key])
        self.cursor = m
        return [live.group() for live in self.live.values()]

    def _set(self, key: Any, state: Any) -> None:
        live = self.group_of.get(key)
        if live is None:
            return  # not a task of the flow (a length, a fused task's own key)
        old = self.current.get(key)
        if old is not None:
            live.counts[old[0]] -= 1
            live.retries -= old[1]
        new = self.current[key] = (state.type.value, state.retries)
        live.counts[new[0]] += 1
        live.retries += new[1]


class _Live:
    __slots__ = ("name", "total", "counts", "retries")

    def __init__(self, name: str) -> None:
        self.name, self.total, self.retries = name, 0, 0
        self.counts: Counter[str] = Counter()

    def group(self) -> Group:
        counts = +self.counts  # drops zeros
        unknown = self.total - sum(counts.values())
        if unknown:
            counts["PENDING"] += unknown
        return Group(self.name, self.total, counts, self.retries)
