"""``df.clusters.Address``: attach to a running scheduler; never end it."""

from __future__ import annotations

from typing import Any

from daskflow import config
from daskflow.clusters.base import ClusterSpec
from daskflow.clusters.probe import handshake, probe
from daskflow.exceptions import ClusterError


class Address(ClusterSpec):
    """A scheduler that someone else runs, at ``tcp://`` or ``tls://`` address.

    Closing only disconnects.  An address with nothing listening fails at
    once with a ``ClusterError`` naming it.
    """

    kind = "address"
    temporary = False

    def __init__(self, address: str, *, security: Any = None, timeout: float | str | None = None,
                 name: str | None = None) -> None:
        if not isinstance(address, str) or "://" not in address and ":" not in address:
            raise ClusterError(
                f"Address({address!r}): expected a scheduler address such as "
                "'tcp://10.0.0.5:8786' or 'tls://scheduler:8786'")
        if address.startswith("tls://") and security is None:
            raise ClusterError(
                f"Address({address!r}): a tls:// scheduler needs security=, for example "
                "distributed.security.Security(tls_ca_file=..., tls_client_cert=..., "
                "tls_client_key=..., require_encryption=True) or Security.temporary() "
                "for a test cluster")
        # The whole attach (handshake, then the Client) is bounded too: twice
        # the connect timeout, so a scheduler that stops mid-way cannot hang it.
        super().__init__(name=name or address,
                         startup_timeout=2 * config.seconds_setting("connect-timeout", timeout) + 1)
        self.address = address
        self.security = security
        self.timeout = timeout

    def _create(self, handle: Any) -> tuple[Any, Any]:
        from distributed import Client

        timeout = config.seconds_setting("connect-timeout", self.timeout)
        probe(self.address, timeout)
        handshake(self.address, timeout, self.security)
        try:
            client = Client(self.address, security=self.security, timeout=timeout,
                            set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ClusterError(f"could not connect to the Dask scheduler at {self.address!r}: {err}") from err
        return client, None

    def describe(self) -> str:
        return "scheduler"
