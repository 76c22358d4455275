"""``df.clusters.Local``: a temporary ``distributed.LocalCluster``."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from daskflow.clusters.base import ClusterSpec


class Local(ClusterSpec):
    """A temporary LocalCluster; keyword arguments go to ``LocalCluster``.

    >>> import daskflow as df
    >>> with df.clusters.Local(n_workers=1, processes=False) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3

    Its worker processes end with the process that started them (distributed
    watches the parent), so even a driver killed with SIGKILL leaves nothing.
    """

    kind = "local"

    def __init__(self, *, name: str | None = None, startup_timeout: float | str | None = None,
                 lease: float | str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, startup_timeout=startup_timeout, lease=lease)
        self.kwargs = kwargs
        self.shared = False  # set when other processes must reach it (a flow resource)

    def _create(self) -> tuple[Any, Any]:
        from distributed import Client, LocalCluster

        kwargs = {"dashboard_address": ":0", **self.kwargs}
        if multiprocessing.current_process().daemon and kwargs.get("processes", True):
            kwargs["processes"] = False  # a daemonic Dask worker cannot have child processes
        if self.shared and kwargs.get("processes") is False:
            kwargs.setdefault("protocol", "tcp://")  # reachable from other processes
        cluster = LocalCluster(name=self.name, **kwargs)
        try:
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return client, cluster

    def record_extra(self) -> dict[str, Any]:
        pids = self.client.run(os.getpid)
        return {"worker_pids": sorted(set(pids.values()))}

    def describe(self) -> str:
        return f"LocalCluster {self.name}"
