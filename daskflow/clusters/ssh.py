"""``df.clusters.SSH``: a temporary cluster on hosts reachable by SSH,
thin over ``distributed.SSHCluster`` (asyncssh; ``pip install 'daskflow[ssh]'``).

The first host runs the scheduler, the others one worker each (repeat a host
to put several workers there, or the first host again to run a worker next
to the scheduler).  Closing ends every remote process; if the driver dies
without closing, the lease ends the scheduler and, with it, the workers.
"""

from __future__ import annotations

from typing import Any

from daskflow.clusters.base import ClusterSpec, Handle, need
from daskflow.exceptions import ClusterError


class SSH(ClusterSpec):
    """``distributed.SSHCluster``; the arguments are its own.

    >>> import daskflow as df
    >>> spec = df.clusters.SSH(["sched-host", "worker-1", "worker-2"],
    ...                        connect_options={"username": "me"})
    """

    kind = "ssh"

    def __init__(self, hosts: list[str], *, connect_options: dict | list[dict] | None = None,
                 worker_options: dict | None = None, scheduler_options: dict | None = None,
                 worker_class: str = "distributed.Nanny", remote_python: str | list[str] | None = None,
                 name: str | None = None, startup_timeout: float | str | None = None,
                 lease: float | str | None = None) -> None:
        if (not isinstance(hosts, (list, tuple)) or len(hosts) < 2
                or not all(isinstance(h, str) and h for h in hosts)):
            raise ClusterError(
                f"SSH(hosts={hosts!r}): give a list of at least two host names, the scheduler's "
                "first, then one per worker (repeat the first to run a worker beside the "
                "scheduler), e.g. SSH(['node0', 'node0', 'node1'])")
        for label, value in (("worker_options", worker_options), ("scheduler_options", scheduler_options)):
            if value is not None and not isinstance(value, dict):
                raise ClusterError(f"SSH({label}={value!r}): expected a dict of keyword arguments")
        super().__init__(name=name, startup_timeout=startup_timeout, lease=lease)
        self.hosts = list(hosts)
        self.connect_options = connect_options
        self.worker_options = dict(worker_options or {})
        self.scheduler_options = dict(scheduler_options or {})
        self.worker_class = worker_class
        self.remote_python = remote_python

    def _create(self, handle: Handle) -> tuple[Any, Any]:
        need("asyncssh", "ssh")
        from distributed import Client, SSHCluster

        scheduler_options = {"dashboard_address": ":0", **self.scheduler_options}
        cluster = SSHCluster(self.hosts, connect_options=self.connect_options or {},
                             worker_options=self.worker_options,
                             scheduler_options=scheduler_options, worker_class=self.worker_class,
                             remote_python=self.remote_python)
        try:
            return Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close()
            raise

    def record_extra(self, handle: Handle) -> dict[str, Any]:
        return {"hosts": self.hosts}

    def describe(self) -> str:
        return f"SSHCluster on {', '.join(dict.fromkeys(self.hosts))}"
