"""Kubernetes (dask-kubernetes) and Coiled specs: thin, lazily imported.

Both start a *temporary* cluster by default (named ``daskflow-...``, ended on
close, with the provider's own idle timeout as a server-side end) or attach
to a named, shared cluster that daskflow never deletes.  The arguments are
the provider class's own; daskflow only fixes the ones that decide who ends
the cluster.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import dask.config

from daskflow import config
from daskflow.clusters import records as record_files
from daskflow.clusters.base import ClusterSpec, close_client, need
from daskflow.clusters.records import records
from daskflow.exceptions import ClusterError


@contextlib.contextmanager
def preserved_dask_config() -> Any:
    """Put back the settings an import changed or removed (coiled sets
    ``distributed.scheduler.no-workers-timeout`` when imported).

    Each setting that existed before and now holds another value (or is
    gone) gets its value back; what the import added (its own section of
    defaults) stays, and so does a setting another thread added meanwhile:
    the config is never cleared and refilled.
    """
    before = _flat(dask.config.config)
    try:
        yield
    finally:
        after = _flat(dask.config.config)
        for path, value in before.items():
            if path not in after or after[path] != value:
                _put(dask.config.config, path, value)


def _flat(config: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """A nested config as ``{(key, subkey, ...): leaf value}`` (values copied);
    a key may hold dots of its own (``logging: {distributed.client: ...}``)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = copy.deepcopy(value)
    return out


def _put(config: dict, path: tuple[str, ...], value: Any) -> None:
    """Set one leaf by its path of keys, making the sections it needs."""
    for key in path[:-1]:
        section = config.get(key)
        if not isinstance(section, dict):
            section = config[key] = {}
        config = section
    config[path[-1]] = copy.deepcopy(value)


class _ProviderSpec(ClusterSpec):
    """A provider's cluster: temporary, or a named shared one daskflow keeps."""

    def __init__(self, *, name: str | None, shared: bool, flag: str,
                 startup_timeout: float | str | None, lease: float | str | None,
                 kwargs: dict[str, Any]) -> None:
        if shared and not name:
            raise ClusterError(f"{type(self).__name__}({flag}=True) needs the name= of the "
                               "shared cluster")
        super().__init__(name=name, startup_timeout=startup_timeout, lease=lease)
        self.temporary = not shared
        self.kwargs = dict(kwargs)

    def _connect(self, cluster: Any, end: Any) -> tuple[Any, Any]:
        """A Client for a cluster just made; end the cluster if that fails."""
        from distributed import Client

        try:
            return Client(cluster, set_as_default=False), cluster
        except BaseException:
            if self.temporary:
                end()
            raise


class Kubernetes(_ProviderSpec):
    """``dask_kubernetes.operator.KubeCluster``.

    ``Kubernetes(n_workers=4, image=...)`` creates a temporary DaskCluster
    (``CreateMode.CREATE_ONLY``, ``shutdown_on_close=True``, ``idle_timeout``
    from ``daskflow.lifecycle.idle-timeout``) and deletes it on close.
    ``Kubernetes(name="shared", existing=True)`` connects to an existing one
    (``CreateMode.CONNECT_ONLY``) and never deletes it.

    On Kubernetes a scheduler that exits is restarted by its Deployment, so
    the lease does not close the scheduler: it declares it idle, and the Dask
    operator's own idle check deletes the DaskCluster (and Kubernetes the
    pods it owns) within its 5 s timer.
    """

    kind = "kubernetes"
    lease_action = "idle"
    # Time to delete what a start that ran out of time had created.
    startup_grace = 30.0

    def __init__(self, *, name: str | None = None, existing: bool = False,
                 startup_timeout: float | str | None = None, lease: float | str | None = None,
                 **kwargs: Any) -> None:
        for fixed in ("create_mode", "shutdown_on_close"):
            if fixed in kwargs:
                raise ClusterError(
                    f"Kubernetes({fixed}=...) is decided by daskflow: a spec is temporary "
                    "(created and deleted by daskflow) unless existing=True (connect, never delete)")
        super().__init__(name=name, shared=existing, flag="existing",
                         startup_timeout=startup_timeout, lease=lease, kwargs=kwargs)

    def kube_kwargs(self, name: str | None = None) -> dict[str, Any]:
        """The KubeCluster arguments: the user's, with ownership decided here."""
        CreateMode = need("dask_kubernetes.operator.kubecluster.kubecluster", "kubernetes").CreateMode  # noqa: N806
        kwargs = dict(self.kwargs)
        kwargs["name"] = name or self.handle_name()
        if self.temporary:
            kwargs.update(create_mode=CreateMode.CREATE_ONLY, shutdown_on_close=True)
            # The operator checks idleness only when idleTimeout > 0, and the
            # lease relies on that check: "no idle timeout" becomes ten years.
            idle = config.get("lifecycle.idle-timeout")
            seconds = config.seconds_setting("lifecycle.idle-timeout") if idle is not None else 10 * 365 * 86400
            kwargs.setdefault("idle_timeout", max(1, int(seconds)))
        else:
            kwargs.update(create_mode=CreateMode.CONNECT_ONLY, shutdown_on_close=False)
        kwargs.setdefault("quiet", True)
        return kwargs

    def _create(self, handle: Any) -> tuple[Any, Any]:
        kwargs = self.kube_kwargs(handle.name)  # first: a missing extra is a clear ClusterError
        from daskflow.clusters.kube import bounded_kube_cluster

        timeout = config.seconds_setting("lifecycle.startup-timeout", self.startup_timeout)
        cluster = bounded_kube_cluster(timeout, **kwargs)
        return self._connect(cluster, cluster.close)

    def record_extra(self, handle: Any) -> dict[str, Any]:
        namespace = getattr(handle.cluster, "namespace", None) or self.kwargs.get("namespace")
        return {"namespace": namespace}

    @classmethod
    def record_status(cls, record: dict[str, Any]) -> str:
        """Its DaskCluster decides, not one address."""
        from daskflow.clusters.kube import daskcluster_exists

        return record_files.status(
            record, gone=lambda r: not daskcluster_exists(r["name"], r.get("namespace")))

    @classmethod
    def close_record(cls, record: dict[str, Any]) -> str:
        """Delete its DaskCluster: shutting its scheduler down would only get the
        pod restarted."""
        from daskflow.clusters.kube import delete_daskcluster

        deleted = delete_daskcluster(record["name"], record.get("namespace"))
        records.remove(record["id"])
        return "DaskCluster deleted" if deleted else "already gone"


class Coiled(_ProviderSpec):
    """``coiled.Cluster``.

    ``Coiled(n_workers=20)`` is temporary (``shutdown_on_close=True``, with
    ``idle_timeout``/``no_client_timeout`` as its server-side end);
    ``Coiled(name="shared", reuse=True)`` is kept for others
    (``shutdown_on_close=False``) and ends by its idle timeout.
    """

    kind = "coiled"

    def __init__(self, *, name: str | None = None, reuse: bool = False,
                 startup_timeout: float | str | None = None, lease: float | str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, shared=reuse, flag="reuse",
                         startup_timeout=startup_timeout, lease=lease, kwargs=kwargs)

    def coiled_kwargs(self, name: str | None = None) -> dict[str, Any]:
        kwargs = dict(self.kwargs)
        kwargs["name"] = name or self.handle_name()
        kwargs["shutdown_on_close"] = self.temporary
        idle = config.get("lifecycle.idle-timeout")
        if idle is not None:
            kwargs.setdefault("idle_timeout", str(idle))
        if self.temporary:
            kwargs.setdefault("no_client_timeout", str(config.get("lifecycle.lease")))
        return kwargs

    def _create(self, handle: Any) -> tuple[Any, Any]:
        with preserved_dask_config():
            coiled = need("coiled", "coiled")
        cluster = coiled.Cluster(**self.coiled_kwargs(handle.name))
        return self._connect(cluster, cluster.shutdown)

    def _destroy(self, handle: Any, client: Any, cluster: Any) -> None:
        if client is not None:
            close_client(client)
        if cluster is not None:
            if self.temporary:
                cluster.shutdown()
            else:
                cluster.close()
