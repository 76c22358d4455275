"""Is a Dask scheduler there?  A bounded TCP probe and a bounded handshake,
each failing with a ``ClusterError`` that names the address."""

from __future__ import annotations

from typing import Any

from daskflow.exceptions import ClusterError


def probe(address: str, timeout: float) -> None:
    """Fail fast, with the address in the message, if nothing listens there."""
    import socket  # noqa: I001 - with distributed's parsers, only when probing

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
