"""A cluster spec used as a resource inside a flow body.

``with df.clusters.Local(n_workers=2) as cluster:`` in a flow body is an
ordinary :func:`daskflow.resource`: its setup task opens a handle on the
spec (the spec travels to the worker as the setup's argument), hands the
block's tasks a :class:`ClusterHandle` (picklable: name and address), and
its cleanup closes the handle once every task of the block has finished:
the Prefect 1 "temporary Dask cluster" pattern.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from typing import Any

from daskflow.define.resources import resource


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


@resource
def cluster(spec: Any) -> Generator[ClusterHandle, None, None]:
    """A temporary cluster for the tasks of a block (shut down by the cleanup)."""
    handle = spec.open(shared=True)
    with handle as client:
        yield ClusterHandle(handle.name, client.scheduler.address)
