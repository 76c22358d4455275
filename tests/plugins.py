"""Scheduler-side helpers for tests (imported by the scheduler process)."""

from __future__ import annotations

from collections import Counter

from distributed.diagnostics.plugin import SchedulerPlugin


class GraphCounter(SchedulerPlugin):
    """Counts update_graph calls (graph submissions) per client."""

    name = "graph-counter"

    def __init__(self):
        self.counts = Counter()
        self.tasks = Counter()

    def update_graph(self, scheduler, *, client, keys, tasks, **kwargs):
        self.counts[client] += 1
        self.tasks[client] += len(tasks)


def graph_counts(dask_scheduler, client_id):
    plugin = dask_scheduler.plugins["graph-counter"]
    return plugin.counts[client_id], plugin.tasks[client_id]


def keys_in_memory(dask_scheduler, prefix):
    return [str(k) for k in dask_scheduler.tasks if str(k).startswith(prefix) or prefix in str(k)]


def scheduler_keys(dask_scheduler):
    return [str(k) for k in dask_scheduler.tasks]


def worker_keys(dask_worker):
    from daskflow import wire
    from daskflow.events import queue

    return {"data": len(dask_worker.data), "specs": len(wire._spec_cache.entries),
            "pending": sum(map(len, queue._pending.values()))}


class CountTasks(SchedulerPlugin):
    """Counts the tasks the scheduler is given, by run token."""

    def __init__(self, name):
        self.name = name
        self.seen = set()

    def transition(self, key, start, finish, *args, **kwargs):
        if start == "released" and finish == "waiting":
            self.seen.add(key)
