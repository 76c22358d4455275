"""What daskflow adds to dask-kubernetes' ``KubeCluster``: a startup deadline.

``KubeCluster`` waits for the scheduler pod, its service and its comm with no
overall limit: a pod that never comes up (an image that cannot be pulled, a
pending pod on a full cluster) hangs the caller forever and leaves the
DaskCluster behind.  ``bounded_kube_cluster`` makes the same start with a
deadline; when it runs out, the DaskCluster it created is deleted (Kubernetes
then deletes the pods it owns) and the caller gets a ``ClusterError``.

Imported only when a Kubernetes cluster is started (dask-kubernetes is an
optional extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from dask_kubernetes.operator import KubeCluster

from daskflow.exceptions import ClusterError

LABELS = {"app.kubernetes.io/managed-by": "daskflow", "daskflow/temporary": "true"}


class _BoundedKubeCluster(KubeCluster):
    """``KubeCluster`` whose start gives up, and cleans up, after ``deadline`` s."""

    def __init__(self, *, deadline: float, **kwargs: Any) -> None:
        self._deadline = deadline
        self._created = False
        try:
            super().__init__(**kwargs)
        except BaseException:
            # Close this half-made object and the event-loop thread it started.
            with contextlib.suppress(Exception):
                self.close()
            runner = getattr(self, "_loop_runner", None)
            if runner is not None:
                with contextlib.suppress(Exception):
                    runner.stop()
            raise

    async def _start(self) -> None:
        import kr8s

        # One kr8s client for this loop, made before KubeCluster's start and
        # its status watcher both ask for one at once (each would make its own
        # and one would leak), and held here (kr8s's registry is weak).
        self._kr8s = await kr8s.asyncio.api()
        try:
            await asyncio.wait_for(super()._start(), self._deadline)
        except BaseException as err:
            await self._abandon()
            await close_api_sessions(*self._held())  # this loop ends with the failed start
            if isinstance(err, asyncio.TimeoutError):
                raise ClusterError(
                    f"Kubernetes cluster {self.name!r} was not up within {self._deadline:g}s; its "
                    "DaskCluster was deleted. Check the pods' events (kubectl describe pod -l "
                    f"dask.org/cluster-name={self.name}) or raise daskflow.lifecycle.startup-timeout"
                ) from None
            raise

    async def _create_cluster(self) -> None:
        self._created = True
        await super()._create_cluster()
        if not self.shutdown_on_close:
            return
        # Labelled, so `kubectl get daskclusters -l app.kubernetes.io/managed-by=daskflow`
        # finds what daskflow started.
        from dask_kubernetes.operator._objects import DaskCluster

        cluster = await DaskCluster.get(self.name, namespace=self.namespace)
        await cluster.patch({"metadata": {"labels": LABELS}})

    async def _abandon(self) -> None:
        """Delete the DaskCluster this start created; never one it found."""
        if self._created and getattr(self, "shutdown_on_close", False):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._close(), 30)
        self.shutdown_on_close = False  # deleted above, or not ours to delete

    def _held(self) -> list[Any]:
        return [self._kr8s] if getattr(self, "_kr8s", None) is not None else []

    async def _close(self, timeout: float = 3600) -> None:
        try:
            await super()._close(timeout=timeout)
        finally:
            await close_api_sessions(*self._held())  # the cluster's loop ends with it


async def close_api_sessions(*held: Any) -> None:
    """kr8s keeps one HTTP client per thread and event loop and never closes
    it; close this loop's (and those ``held``) before the loop ends, rather
    than leak their sockets."""
    from kr8s._api import Api

    key = f"{threading.get_ident()}.{id(asyncio.get_running_loop())}"
    for api in {*held, *Api._instances.get(key, {}).values()}:
        session = getattr(api, "_session", None)
        if session is not None:
            with contextlib.suppress(Exception):
                await session.aclose()


def bounded_kube_cluster(deadline: float, **kwargs: Any) -> KubeCluster:
    return _BoundedKubeCluster(deadline=deadline, **kwargs)


def _on_daskcluster(name: str, namespace: str | None, delete: bool) -> bool:
    """Whether the DaskCluster exists (and, if ``delete``, delete it).

    One lookup: ``DaskCluster.get`` retries a name it does not find for 2 s
    (for an object just created), which made every gone cluster cost 2.5 s
    in ``daskflow clusters list`` and ``close``.
    """
    import kr8s
    from dask_kubernetes.operator._objects import DaskCluster

    async def find(api: Any) -> Any:
        try:
            found = [c async for c in api.async_get(DaskCluster, name,
                                                    namespace=namespace or api.namespace)]
        except kr8s.ServerError as err:
            if err.response is not None and err.response.status_code == 404:
                return None
            raise
        return found[0] if found else None

    async def go() -> bool:
        held = await kr8s.asyncio.api()  # held: kr8s's registry of clients is weak
        try:
            cluster = await find(held)
            if cluster is not None and delete:
                await cluster.delete()
            return cluster is not None
        finally:
            await close_api_sessions(held)

    return asyncio.run(go())


def daskcluster_exists(name: str, namespace: str | None) -> bool:
    return _on_daskcluster(name, namespace, delete=False)


def delete_daskcluster(name: str, namespace: str | None) -> bool:
    """Delete a DaskCluster by name (``daskflow clusters close``); False if it is gone."""
    return _on_daskcluster(name, namespace, delete=True)
