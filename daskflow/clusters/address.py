"""``df.clusters.Address``: attach to a running scheduler; never end it."""

from __future__ import annotations

from typing import Any

from daskflow import config
from daskflow.clusters.base import ClusterSpec
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


def probe(address: str, timeout: float) -> None:
    """Fail fast, with the address in the message, if nothing listens there."""
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    scheme, loc = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(loc)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(
            f"could not connect to the Dask scheduler at {address!r}: {err}; check that "
            "it is running and reachable from here") from None


def handshake(address: str, timeout: float, security: Any = None) -> None:
    """Fail within ``timeout`` if what listens at ``address`` does not speak
    Dask's protocol (a dashboard or any other server that accepts TCP and
    then waits would otherwise hang the Client for good)."""
    import asyncio

    from distributed.comm import connect

    async def go() -> None:
        args = security.get_connection_args("client") if security is not None else {}
        comm = await connect(address, timeout=timeout, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            answer = await comm.read()
        finally:
            comm.abort()
        if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
            raise ClusterError(f"{address!r} answered, but not as a Dask scheduler: {str(answer)[:200]}")

    try:
        asyncio.run(asyncio.wait_for(go(), timeout))
    except ClusterError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        raise ClusterError(
            f"{address!r} accepts connections but did not answer Dask's handshake within "
            f"{timeout:g}s (daskflow.connect-timeout): it does not look like a Dask scheduler. "
            "Check the port: the scheduler listens on 8786 by default, the dashboard (8787) "
            "is a web page, not a scheduler") from None
    except Exception as err:
        raise ClusterError(
            f"{address!r} accepts connections but is not a Dask scheduler (or refused the "
            f"handshake): {type(err).__name__}: {err}. Check the port (the scheduler's is 8786 "
            "by default; 8787 is its dashboard) and, for tls://, the security= settings") from None
