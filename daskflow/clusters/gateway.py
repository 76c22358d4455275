"""``df.clusters.Gateway``: a cluster from a Dask Gateway (a shared
JupyterHub deployment's), thin over ``dask_gateway.Gateway``
(``pip install 'daskflow[gateway]'``).

Temporary by default: ``new_cluster(..., shutdown_on_close=True)``, stopped on
close, with the gateway's own ``idle_timeout`` cluster option set (from
``daskflow.lifecycle.idle-timeout``) when the server offers it, and the
lease as the end for a driver that dies.  ``Gateway(name="<cluster>")``
attaches to a running gateway cluster and never stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from daskflow import config
from daskflow.clusters import records as record_files
from daskflow.clusters.base import ClusterSpec, Handle, close_client, need, terminate_nannies
from daskflow.clusters.records import records
from daskflow.exceptions import ClusterError


class Gateway(ClusterSpec):
    """A Dask Gateway cluster.

    >>> import daskflow as df
    >>> spec = df.clusters.Gateway("https://hub.example.org/services/dask-gateway",
    ...                            auth="jupyterhub", workers=4,
    ...                            cluster_options={"worker_memory": 8})

    ``address``/``proxy_address``/``public_address``/``auth`` are
    ``dask_gateway.Gateway``'s (None: its dask config, ``gateway.*``);
    ``cluster_options`` sets the server's cluster options by name;
    ``workers=N`` scales to N, ``adapt={"minimum": 0, "maximum": 10}`` adapts.
    """

    kind = "gateway"

    def __init__(self, address: str | None = None, *, proxy_address: str | None = None,
                 public_address: str | None = None, auth: Any = None,
                 cluster_options: dict[str, Any] | None = None, workers: int | None = None,
                 adapt: dict[str, Any] | None = None, name: str | None = None,
                 startup_timeout: float | str | None = None,
                 lease: float | str | None = None) -> None:
        if workers is not None and adapt is not None:
            raise ClusterError("Gateway(workers=..., adapt=...): give one of them, not both")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                    or workers < 0):
            raise ClusterError(f"Gateway(workers={workers!r}): a whole number >= 0")
        if adapt is not None and not isinstance(adapt, dict):
            raise ClusterError(f"Gateway(adapt={adapt!r}): a dict such as "
                               "{'minimum': 0, 'maximum': 10}")
        if cluster_options is not None and not isinstance(cluster_options, dict):
            raise ClusterError(f"Gateway(cluster_options={cluster_options!r}): a dict of "
                               "option names and values")
        if name is not None and cluster_options:
            raise ClusterError("Gateway(name=..., cluster_options=...): an existing cluster's "
                               "options are already set; drop one of them")
        super().__init__(name=name, startup_timeout=startup_timeout, lease=lease)
        self.temporary = name is None
        self.address = address
        self.proxy_address = proxy_address
        self.public_address = public_address
        self.auth = auth
        self.cluster_options = dict(cluster_options or {})
        self.workers = workers
        self.adapt = dict(adapt) if adapt is not None else None

    def handle_name(self) -> str:
        # A temporary gateway cluster is named by the gateway; we learn it on start.
        return self.name or "daskflow-gateway-(pending)"

    def gateway(self) -> Any:
        return gateway_client(address=self.address, proxy_address=self.proxy_address,
                              public_address=self.public_address, auth=self.auth)

    def options(self, gateway: Any) -> Any:
        """The server's cluster options with ours applied (and its idle timeout)."""
        options = gateway.cluster_options()
        offered = set(options)
        unknown = sorted(set(self.cluster_options) - offered)
        if unknown:
            raise ClusterError(
                f"Gateway(cluster_options=...): {', '.join(map(repr, unknown))} not offered by "
                f"this gateway; it offers {', '.join(sorted(offered)) or 'no options'}")
        for key, value in self.cluster_options.items():
            try:
                options[key] = value
            except (TypeError, ValueError) as err:
                raise ClusterError(f"Gateway(cluster_options={{{key!r}: {value!r}}}): {err}") from err
        idle = config.get("lifecycle.idle-timeout")
        if "idle_timeout" in offered and "idle_timeout" not in self.cluster_options and idle is not None:
            options["idle_timeout"] = config.seconds_setting("lifecycle.idle-timeout")
        return options

    def _create(self, handle: Handle) -> tuple[Any, Any]:
        # The cluster object holds a Gateway of its own; this one only asks.
        with self.gateway() as gateway:
            try:
                if self.temporary:
                    cluster = gateway.new_cluster(self.options(gateway), shutdown_on_close=True)
                else:
                    cluster = gateway.connect(self.name, shutdown_on_close=False)
            except ValueError as err:  # e.g. no cluster of that name
                raise ClusterError(f"Gateway: {err}") from err
        handle.name = cluster.name
        handle.record_id = f"daskflow-gateway-{cluster.name}"
        handle.extra.update(gateway_cluster=cluster.name)
        try:
            if self.workers is not None:
                cluster.scale(self.workers)
            elif self.adapt is not None:
                cluster.adapt(**self.adapt)
            client = cluster.get_client(set_as_default=False)
        except BaseException:
            self._destroy(handle, None, cluster)
            raise
        return client, cluster

    def _destroy(self, handle: Handle, client: Any, cluster: Any) -> None:
        if client is not None:
            if self.temporary:  # the gateway stops a busy worker only after its own grace period
                terminate_nannies(client)
            close_client(client)
        if cluster is not None:
            try:
                if self.temporary:
                    cluster.shutdown()
                else:
                    cluster.close()
            finally:
                closed_for_good(cluster.gateway)

    def record_extra(self, handle: Handle) -> dict[str, Any]:
        return {"gateway": self.address, "proxy_address": self.proxy_address,
                "gateway_cluster": handle.name,
                "auth": self.auth if isinstance(self.auth, str) or self.auth is None else None}

    @classmethod
    def record_status(cls, record: dict[str, Any]) -> str:
        """Its gateway decides."""
        return record_files.status(record, gone=lambda r: not gateway_cluster_running(r))

    @classmethod
    def close_record(cls, record: dict[str, Any]) -> str:
        stopped = stop_gateway_cluster(record)
        records.remove(record["id"])
        return "gateway cluster stopped" if stopped else "already gone"

    def describe(self) -> str:
        return "Dask Gateway cluster"


@contextlib.contextmanager
def gateway_client(**kwargs: Any) -> Iterator[Any]:
    """A ``dask_gateway.Gateway``, closed (for good) afterwards."""
    dask_gateway = need("dask_gateway", "gateway")
    gateway = dask_gateway.Gateway(**kwargs)
    try:
        yield gateway
    finally:
        try:
            gateway.close()
        finally:
            closed_for_good(gateway)


def closed_for_good(gateway: Any) -> None:
    """After ``Gateway.close()``: stop its ``__del__`` from closing again.

    dask-gateway's ``Gateway.__del__`` calls ``close()`` a second time, which
    with this distributed raises once the shared event loop has stopped
    ("Accessing the loop property while the loop is not running"), an
    unraisable error at garbage collection.  ``__del__`` skips objects
    without ``_loop_runner``: a private attribute, pinned by
    test_gateway_del_still_needs_the_workaround.
    """
    gateway.__dict__.pop("_loop_runner", None)


def _gateway_of(record: dict[str, Any]) -> Any:
    return gateway_client(address=record.get("gateway"),
                          proxy_address=record.get("proxy_address"), auth=record.get("auth"))


def gateway_cluster_running(record: dict[str, Any]) -> bool:
    """Whether the recorded gateway cluster is still listed by its gateway."""
    with _gateway_of(record) as gateway:
        return any(c.name == record["gateway_cluster"] for c in gateway.list_clusters())


def stop_gateway_cluster(record: dict[str, Any]) -> bool:
    """Stop a recorded gateway cluster (``daskflow clusters close``); False if gone."""
    with _gateway_of(record) as gateway:
        if not any(c.name == record["gateway_cluster"] for c in gateway.list_clusters()):
            return False
        gateway.stop_cluster(record["gateway_cluster"])
        return True
