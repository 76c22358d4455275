"""A scheduler-side end for temporary clusters: the lease.

``Lease`` is a scheduler plugin that daskflow installs on the scheduler of
every temporary cluster it starts.  It is renewed by distributed's own client
heartbeat (the owning ``Client`` pings the scheduler every few seconds):
when the owner has not been seen for ``duration`` seconds, because the driver
was killed with SIGKILL, lost its network or hung, the scheduler closes
itself, which closes every worker and nanny attached to it.  An idle timeout
(no task processing for ``idle`` seconds) can end it as well.

The check runs every few seconds on the scheduler's event loop; nothing runs
on the driver to keep the lease.

Where a scheduler that exits is simply restarted (a Kubernetes Deployment),
closing it would end nothing.  There the lease's action is ``"idle"``: the
scheduler reports itself idle since the epoch from then on, so the Dask
operator's idle check (``DaskCluster.spec.idleTimeout``, every 5 s) deletes
the DaskCluster, and Kubernetes deletes its pods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("distributed.scheduler")


class Lease(SchedulerPlugin):
    """Close the scheduler when its owner client is gone for ``duration`` s."""

    name = "daskflow-lease"

    def __init__(self, owner: str, duration: float, idle: float | None = None,
                 action: str = "close") -> None:
        if action not in ("close", "idle"):
            raise ValueError(f"lease action must be 'close' or 'idle', not {action!r}")
        self.action = action
        self._declared = False
        self.owner = owner
        self.duration = float(duration)
        self.idle = idle
        self.gone_since: float | None = None
        self._task: asyncio.Task | None = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._task = asyncio.ensure_future(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def remove_client(self, scheduler: Any, client: str) -> None:
        if client == self.owner:
            self.gone_since = time.time()

    def expired(self, now: float | None = None) -> str:
        """Why the lease ended, or '' while it holds.

        The owner holds the lease while its connection is open and its
        heartbeats arrive.  A dead driver process closes its connection at
        once (the kernel does that even on SIGKILL), so ``duration`` counts
        from there.  A silent one (machine or network lost, connection still
        open) is judged by its heartbeats, which distributed sends only every
        few seconds, so that wait is at least three heartbeat intervals.
        """
        now = time.time() if now is None else now
        cs = self.scheduler.clients.get(self.owner)
        if cs is None:
            if self.gone_since is None:
                self.gone_since = now
            if now - self.gone_since > self.duration:
                return (f"owner {self.owner} disconnected {now - self.gone_since:.0f}s ago "
                        f"(lease {self.duration:.0f}s)")
        else:
            self.gone_since = None
            silent, patience = now - cs.last_seen, max(self.duration, 3 * self.heartbeat())
            if silent > patience:
                return f"owner {self.owner} silent for {silent:.0f}s (lease {patience:.0f}s)"
        if self.idle is not None and self.scheduler.idle_since is not None:
            if now - self.scheduler.idle_since > self.idle:
                return f"idle for {now - self.scheduler.idle_since:.0f}s"
        return ""

    def heartbeat(self) -> float:
        """The interval at which the owner's client heartbeats (as the scheduler sets it)."""
        from distributed.scheduler import heartbeat_interval

        configured = parse_timedelta(dask.config.get("distributed.client.heartbeat"), default="ms")
        return max(configured, heartbeat_interval(len(self.scheduler.clients)) * 10)

    async def _watch(self) -> None:
        interval = max(0.5, min(self.duration / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            why = self.expired()
            if why and self.action == "idle":
                if not self._declared:
                    logger.warning("daskflow lease ended, declaring the scheduler idle: %s", why)
                    self._declared = True
                self._declare_idle()
                continue
            if why:
                logger.warning("daskflow lease ended, closing the cluster: %s", why)
                # A task of its own: Scheduler.close() closes this plugin, which
                # cancels the watcher, and must not cancel the close with it.
                self._closing = asyncio.ensure_future(self._close(why))
                return

    async def _close(self, why: str) -> None:
        """End the workers fast (their nannies kill a busy worker after 1 s
        instead of waiting for its task), then the scheduler."""
        reason = f"daskflow-lease: {why}"
        await self._stop_gateway_cluster()
        try:
            await asyncio.wait_for(self.scheduler.broadcast(
                msg={"op": "terminate", "timeout": 1, "reason": reason}, nanny=True,
                on_error="ignore"), 10)
        except Exception as err:  # the scheduler's own close still ends them
            logger.warning("daskflow lease: could not terminate the nannies: %r", err)
        await self.scheduler.close(reason=reason)

    async def _stop_gateway_cluster(self) -> None:
        """On a Dask Gateway cluster, ask the gateway to stop it, as the
        gateway's own idle timeout does (``dask_gateway.scheduler_preload``).
        A scheduler that only exits is noticed by its gateway when its
        heartbeats stop (30 s by default), and until then the gateway
        restarts the workers that the scheduler's close ended."""
        service = self.scheduler.services.get("gateway")
        shutdown = getattr(getattr(service, "gateway", None), "shutdown", None)
        if shutdown is None:
            return
        try:
            await asyncio.wait_for(shutdown(), 10)
        except Exception as err:  # the scheduler's close below still ends it, later
            logger.warning("daskflow lease: could not ask the gateway to stop the cluster: %r",
                           err)

    def _declare_idle(self) -> None:
        """Make ``Scheduler.check_idle`` (what the operator asks) answer "idle
        since 1970" until the scheduler ends.  Re-asserted on every tick,
        because check_idle resets ``idle_since`` after any transition."""
        scheduler = self.scheduler
        scheduler.idle_since = 1.0  # not 0: check_idle treats a falsy value as unset
        scheduler._idle_transition_counter = scheduler.transition_counter
