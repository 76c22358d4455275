"""Prefect 3's task runners as daskflow's ``cluster=``.

``DaskTaskRunner(address=...)`` attaches to a running scheduler (never closed);
``DaskTaskRunner(cluster_class=..., cluster_kwargs=..., adapt_kwargs=...)``
starts a temporary cluster for the run and closes it afterwards, with
daskflow's shutdown guarantee (:mod:`daskflow.clusters`).  A flow with no
``task_runner`` gets daskflow's own default: the current default
``distributed.Client`` if there is one, else a temporary LocalCluster.
``ThreadPoolTaskRunner(max_workers=n)`` is a temporary in-process
LocalCluster of one worker with ``n`` threads.
"""

from __future__ import annotations

import importlib
from typing import Any

import daskflow as df
from daskflow.compat.prefect.errors import refuse


class DaskTaskRunner:
    """prefect-dask's ``DaskTaskRunner``: where a flow's tasks run.

    Parameters
    ----------
    address : str, optional
        A running scheduler to attach to (``cluster="tcp://..."``).
    cluster_class : class or str, optional
        The cluster to start (an import path such as
        ``"dask_cloudprovider.aws.FargateCluster"``); default ``LocalCluster``.
    cluster_kwargs : dict, optional
        Keyword arguments of ``cluster_class``.
    adapt_kwargs : dict, optional
        Given to ``cluster.adapt(...)`` after the start.
    client_kwargs : dict, optional
        Keyword arguments of the ``distributed.Client`` (attaching by address only
        takes none: daskflow makes its own client).
    """

    def __init__(self, cluster: Any = None, address: str | None = None,
                 cluster_class: Any = None, cluster_kwargs: dict[str, Any] | None = None,
                 adapt_kwargs: dict[str, Any] | None = None,
                 client_kwargs: dict[str, Any] | None = None,
                 performance_report_path: str | None = None) -> None:
        if address is not None and (cluster_class is not None or cluster_kwargs or adapt_kwargs):
            raise df.ClusterError("DaskTaskRunner: give address= (a running scheduler) or "
                                  "cluster_class=/cluster_kwargs=/adapt_kwargs= (a cluster "
                                  "to start), not both")
        if client_kwargs or performance_report_path:
            raise refuse("DaskTaskRunner(client_kwargs=/performance_report_path=)",
                         "daskflow makes and closes the run's client itself",
                         "leave them out (the run's report: run.report('run.html'))")
        self.cluster, self.address = cluster, address
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.adapt_kwargs = dict(adapt_kwargs or {})

    def duplicate(self) -> DaskTaskRunner:
        return DaskTaskRunner(self.cluster, self.address, self.cluster_class,
                              self.cluster_kwargs, self.adapt_kwargs)

    def as_cluster(self) -> Any:
        """The value of daskflow's ``cluster=`` for this runner."""
        if self.cluster is not None:
            return self.cluster  # a Cluster or Client of the user's: used, never closed
        if self.address is not None:
            return self.address
        return Started(_cluster_class(self.cluster_class), self.cluster_kwargs,
                       self.adapt_kwargs)

    def __repr__(self) -> str:
        where = self.address or getattr(self.cluster_class, "__name__", self.cluster_class)
        return f"DaskTaskRunner({where or 'LocalCluster'})"


class Started(df.clusters.ClusterSpec):
    """A temporary cluster of any ``distributed`` Cluster class, closed with the run."""

    kind = "prefect-dask"

    def __init__(self, cluster_class: Any, cluster_kwargs: dict[str, Any],
                 adapt_kwargs: dict[str, Any], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.cluster_class = cluster_class
        self.cluster_kwargs = dict(cluster_kwargs)
        self.adapt_kwargs = dict(adapt_kwargs)

    def _create(self, handle: Any) -> tuple[Any, Any]:
        from distributed import Client

        cluster = self.cluster_class(**self.cluster_kwargs)
        try:
            if self.adapt_kwargs:
                cluster.adapt(**self.adapt_kwargs)
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return client, cluster

    def describe(self) -> str:
        return getattr(self.cluster_class, "__name__", str(self.cluster_class))


def _cluster_class(cluster_class: Any) -> Any:
    """The class itself, from a class or an import path; LocalCluster when None."""
    if cluster_class is None:
        cluster_class = "distributed.LocalCluster"
    if isinstance(cluster_class, str):
        module, _, name = cluster_class.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise df.ClusterError(f"DaskTaskRunner(cluster_class={cluster_class!r}): cannot "
                                  f"import it ({err}); install its package or fix the "
                                  "path") from None
    if not callable(cluster_class):
        raise df.ClusterError(f"DaskTaskRunner(cluster_class={cluster_class!r}) must be a "
                              "Cluster class or its import path")
    return cluster_class


class ThreadPoolTaskRunner:
    """Prefect 3's default task runner, named explicitly: tasks in threads of
    this process (a temporary in-process LocalCluster, one worker of
    ``max_workers`` threads)."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers

    def as_cluster(self) -> Any:
        return df.clusters.Local(n_workers=1, processes=False,
                                 threads_per_worker=self.max_workers or 4)


def cluster_of(task_runner: Any) -> Any:
    """daskflow's ``cluster=`` for a flow's ``task_runner=`` (a class is
    instantiated with no arguments, as Prefect allows ``task_runner=DaskTaskRunner``)."""
    if task_runner is None:
        return None
    if isinstance(task_runner, type):
        task_runner = task_runner()
    if hasattr(task_runner, "as_cluster"):
        return task_runner.as_cluster()
    raise refuse(f"task_runner={task_runner!r}", "daskflow runs tasks on Dask",
                 "use DaskTaskRunner(...) or ThreadPoolTaskRunner(...), or leave it out")
