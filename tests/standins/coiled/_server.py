"""Scheduler preload of the coiled STAND-IN: the service's no_client_timeout."""

import asyncio
import os
import time


async def dask_setup(scheduler):
    timeout = os.environ.get("COILED_STANDIN_NO_CLIENT_TIMEOUT")
    if not timeout:
        return
    timeout = float(timeout)

    async def watch():
        lonely_since = time.time()
        while True:
            await asyncio.sleep(0.5)
            clients = [c for c in scheduler.clients if c != "fire-and-forget"]
            if clients:
                lonely_since = time.time()
            elif time.time() - lonely_since > timeout:
                asyncio.ensure_future(scheduler.close(reason="no client connected (stand-in)"))
                return

    scheduler._coiled_standin_watch = asyncio.ensure_future(watch())
