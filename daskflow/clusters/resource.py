"""A cluster spec used as a resource inside a flow body.

``with df.clusters.Local(n_workers=2) as cluster:`` in a flow body starts the
cluster in a setup task, hands the block's tasks a :class:`ClusterHandle`
(picklable: name and address), and ends the cluster in the block's cleanup,
once every task of the block has finished: the Prefect 1 "temporary Dask
cluster" pattern.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from daskflow.resources import ResourceCall


class ClusterHandle:
    """What tasks in a cluster block receive: where the temporary cluster is."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A ``distributed.Client`` connected to the cluster, closed afterwards."""
        from distributed import Client

        with Client(self.address, set_as_default=False) as client:
            yield client

    def __reduce__(self) -> Any:
        return (ClusterHandle, (self.name, self.address))

    def __repr__(self) -> str:
        return f"<ClusterHandle {self.name} at {self.address}>"


def cluster_resource(spec: Any) -> ResourceCall:
    if hasattr(spec, "shared"):
        spec.shared = True

    def opener() -> tuple[ClusterHandle, Any]:
        client = spec.start()
        return ClusterHandle(spec.name, client.scheduler.address), spec.close

    return ResourceCall(spec.name if spec.name.startswith("daskflow-") else spec.kind, opener)
