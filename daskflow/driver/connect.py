"""``cluster=``: what a run may be given, and the backend it opens.

``None`` (the current default Client if there is one, as Dask does; else a
temporary LocalCluster that lives for the run), ``"sync"``, a scheduler
address, a profile name (``daskflow.clusters.<name>``), a
``distributed.Client`` or ``Cluster`` (used and never closed), or a
``df.clusters`` spec (each run opens a handle of its own).  Only what this
module started is closed, whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from daskflow import config
from daskflow.clusters import Address, Local, from_profile
from daskflow.clusters.local import script_from_stdin
from daskflow.driver.backends import Backend, DistributedBackend, SyncBackend
from daskflow.events import monitor
from daskflow.exceptions import ClusterError


def check_cluster(cluster: Any) -> None:
    """Reject a ``cluster=`` value that can never work, before anything starts."""
    if cluster is None or isinstance(cluster, str) or hasattr(cluster, "__daskflow_open__"):
        return
    try:
        from distributed import Client
        from distributed.deploy import Cluster
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ClusterError("cluster= needs distributed: pip install 'dask[distributed]'") from err
    if isinstance(cluster, (Client, Cluster)):
        return
    raise ClusterError(
        f"cluster={cluster!r} is not something daskflow can run on: pass None (a "
        "temporary LocalCluster), 'sync', a scheduler address such as "
        "'tcp://10.0.0.5:8786', a distributed.Client or Cluster, or a "
        "df.clusters spec"
    )


def looks_like_address(text: str) -> bool:
    """Whether a ``cluster=`` string is a scheduler address, not a profile name."""
    return "://" in text or (":" in text and text.rsplit(":", 1)[1].isdigit())


@contextlib.contextmanager
def open_backend(cluster: Any) -> Iterator[Backend]:
    """Yield a backend for ``cluster=``; close only what this call started."""
    check_cluster(cluster)
    if cluster == "sync":
        yield SyncBackend()
        return
    from distributed import Client
    from distributed.deploy import Cluster

    if isinstance(cluster, Client):
        yield DistributedBackend(cluster)
    elif isinstance(cluster, Cluster):
        with Client(cluster, set_as_default=False) as client, _owned(client) as backend:
            yield backend
    elif hasattr(cluster, "__daskflow_open__"):
        # A spec describes a cluster; each run opens a handle of its own, so a
        # spec (a flow's default, or one reused by the user) serves any number of runs.
        with cluster.__daskflow_open__() as client, _owned(client) as backend:
            yield backend
    elif isinstance(cluster, str):
        spec = Address(cluster) if looks_like_address(cluster) else from_profile(cluster)
        with spec.__daskflow_open__() as client, _owned(client) as backend:
            yield backend
    else:
        client = current_client()
        if client is not None:
            yield DistributedBackend(client)
        else:
            with _temporary_local_cluster() as client, _owned(client) as backend:
                yield backend


@contextlib.contextmanager
def open_client(cluster: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster=`` None (the default Client, or a
    temporary LocalCluster) or a spec (a handle of its own); what this started
    is closed at the end.  (A retried flow's attempts share it.)"""
    if cluster is None:
        client = current_client()
        if client is not None:
            yield client
            return
        with _temporary_local_cluster() as client:
            yield client
        return
    with cluster.__daskflow_open__() as client:
        yield client


@contextlib.contextmanager
def _owned(client: Any) -> Iterator[DistributedBackend]:
    """A backend on a client this run opened: unsubscribed before it closes."""
    backend = DistributedBackend(client)
    try:
        yield backend
    finally:
        if not backend.lost:
            monitor.detach(client)


def current_client() -> Any:
    """The current default ``distributed.Client`` (as Dask picks it), or None."""
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def _temporary_local_cluster() -> Iterator[Any]:
    kwargs = {k.replace("-", "_"): v for k, v in config.get("local").items()
              if v is not None or k == "dashboard-address"}
    if kwargs.get("processes", True) and script_from_stdin():
        # worker processes would import the script again, and stdin is gone
        logging.getLogger("daskflow.run").info(
            "the script was read from standard input: the temporary cluster's workers are "
            "threads of this process")
        kwargs["processes"] = False
    with Local(**kwargs) as client:
        yield client
