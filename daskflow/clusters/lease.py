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
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("distributed.scheduler")


class Lease(SchedulerPlugin):
    """Close the scheduler when its owner client is gone for ``duration`` s."""

    name = "daskflow-lease"

    def __init__(self, owner: str, duration: float, idle: float | None = None) -> None:
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
        """Why the lease ended, or '' while it holds."""
        now = time.time() if now is None else now
        cs = self.scheduler.clients.get(self.owner)
        last = cs.last_seen if cs is not None else (self.gone_since or now)
        if cs is None and self.gone_since is None:
            self.gone_since = now
        if now - last > self.duration:
            return f"owner {self.owner} not seen for {now - last:.0f}s (lease {self.duration:.0f}s)"
        if self.idle is not None and self.scheduler.idle_since is not None:
            if now - self.scheduler.idle_since > self.idle:
                return f"idle for {now - self.scheduler.idle_since:.0f}s"
        return ""

    async def _watch(self) -> None:
        interval = max(0.5, min(self.duration / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            why = self.expired()
            if why:
                logger.warning("daskflow lease ended, closing the cluster: %s", why)
                # A task of its own: Scheduler.close() closes this plugin, which
                # cancels the watcher, and must not cancel the close with it.
                self._closing = asyncio.ensure_future(
                    self.scheduler.close(reason=f"daskflow-lease: {why}"))
                return
