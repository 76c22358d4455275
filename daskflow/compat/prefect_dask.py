"""prefect-dask's names: ``from daskflow.compat.prefect_dask import DaskTaskRunner, get_dask_client``.

``get_dask_client()`` inside a task is ``distributed.worker_client()``: a
client of the cluster the task runs on, set as the default for Dask
collections' ``compute()`` inside the block, with the task's worker thread
given back to Dask meanwhile (see docs/tour/dask.md).  On ``cluster="sync"``
there is no worker: the block gets None and ``compute()`` runs locally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from daskflow.compat.prefect.errors import refuse
from daskflow.compat.prefect.task_runners import DaskTaskRunner

__all__ = ["DaskTaskRunner", "get_async_dask_client", "get_dask_client"]


@contextlib.contextmanager
def get_dask_client(timeout: Any = None, **client_kwargs: Any) -> Iterator[Any]:
    """A client of the cluster running this task (prefect-dask's context manager)."""
    from distributed import get_worker, worker_client

    try:
        get_worker()
    except ValueError:  # not on a Dask worker: cluster="sync", or outside a run
        yield None
        return
    with worker_client(timeout=timeout, **client_kwargs) as client:
        yield client


def get_async_dask_client(*args: Any, **kwargs: Any) -> Any:
    raise refuse("get_async_dask_client()", "daskflow's async tasks share an event loop of "
                 "their own, not the worker's", "use get_dask_client() in a sync task")
