"""The web view's server side: tornado handlers over the run store, read-only.

The same handlers serve two places:

* ``daskflow ui`` (:func:`serve`): every run of the store, on 127.0.0.1;
* a Dask scheduler's dashboard: distributed mounts the ``routes`` of every
  module listed in its ``distributed.scheduler.http.routes`` setting, so a
  scheduler started with this module in that list serves
  ``/daskflow/runs`` — the runs going on on that scheduler (and those that
  ended there lately), each linked to its page.  The LocalClusters daskflow
  starts list it (the setting ``daskflow.ui.dashboard``); for a scheduler
  you run yourself, one line of its dask config::

      distributed: {scheduler: {http: {routes: [distributed.http.scheduler.prometheus,
        distributed.http.scheduler.info, distributed.http.scheduler.json,
        distributed.http.health, distributed.http.proxy, distributed.http.statics,
        daskflow.dashboard]}}}

Why the scheduler's page reads the run store, not the scheduler's own state:
the store already holds each run's whole record (its parameters, logs,
artifacts, its report), written by its driver, while the scheduler keeps
nothing about runs (each event only passes through it to its driver, so a
long-lived shared scheduler stays flat); a record names the scheduler it ran
on (``scheduler_id``).  The scheduler process must see the same store as the
drivers: it does for the clusters daskflow starts (the driver's own
process), and a shared store (``daskflow.runs.store``, any fsspec URL) serves
a scheduler on another machine.

The store is read in a thread, never on the scheduler's event loop.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from daskflow.driver.history import RunStore
from daskflow.exceptions import DaskflowError, UIError
from daskflow.ui import web as pages

MAX_LISTED = 1000  # records read for the list page, newest first
RECENT_ON_SCHEDULER = 20  # runs that ended on a scheduler, shown below its running ones


class _Handler(web.RequestHandler):
    """A read-only page; ``dask_server`` is set when mounted in a scheduler."""

    def initialize(self, dask_server: Any = None, store: RunStore | None = None) -> None:
        self.scheduler = dask_server
        self._store = store

    def store(self) -> RunStore:
        """``daskflow ui``'s store, or in a scheduler the one of its settings
        (one object per URL, which keeps the summaries of ended runs)."""
        return self._store if self._store is not None else RunStore.configured()

    def root(self) -> str:
        """The server's root path (the dashboard's prefix, if any)."""
        path = self.request.path
        return path[: path.index(pages.PAGES)] if pages.PAGES in path else "/"

    def send(self, page: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(page)


class RunsHandler(_Handler):
    """The list of runs: every run of the store, or those of this scheduler."""

    async def get(self) -> None:
        flow = self.get_query_argument("flow", None) or None
        state = self.get_query_argument("state", None) or None
        self.send(await asyncio.to_thread(self._page, flow, state))

    def _page(self, flow: str | None, state: str | None) -> str:
        store = self.store()
        records = store.summaries(MAX_LISTED)
        if self.scheduler is None:
            return pages.runs_page(records, self.root(), flow, state,
                                   note=f"run store {store.url} · ")
        sid = self.scheduler.id
        mine = [r for r in records if r.get("scheduler_id") == sid]
        going = [r for r in mine if r["state"]["type"] in pages.LIVE]
        ended = [r for r in mine if r["state"]["type"] not in pages.LIVE][:RECENT_ON_SCHEDULER]
        return pages.runs_page(going + ended, self.root(), flow, state,
                               title="Flow runs on this scheduler",
                               note=f"{len(going)} going, the last {len(ended)} ended · ")


class RunHandler(_Handler):
    """A run's page (its id, or the start of it)."""

    async def get(self, run_id: str) -> None:
        page, status = await asyncio.to_thread(self._page, run_id)
        self.send(page, status)

    def _page(self, run_id: str) -> tuple[str, int]:
        store = self.store()
        try:
            record = store.find(run_id)
        except DaskflowError:
            return pages.missing_page(run_id, self.root(), store.url), 404
        return pages.run_page(record, self.root()), 200


class _Root(web.RequestHandler):
    def get(self) -> None:
        self.redirect("/" + pages.PAGES)


# Mounted by distributed in a scheduler's HTTP server (see the module's doc).
routes: list[tuple] = [
    (pages.PAGES, RunsHandler, {}),
    (pages.PAGES + r"/([0-9A-Za-z_.-]+)", RunHandler, {}),
]


def application(store: RunStore) -> web.Application:
    """The ``daskflow ui`` application over the run store ``store``."""
    return web.Application([("/", _Root), *[("/" + url, cls, {**kw, "store": store})
                                            for url, cls, kw in routes]])


def serve(store: str | None, host: str = "127.0.0.1", port: int = 8790,
          ready: Any = None) -> None:
    """Serve the run store's pages until interrupted (``daskflow ui``).

    ``ready(url)`` is called once it listens.  Raises :class:`UIError` for
    a store that does not exist or a port that cannot be listened on.
    """
    run_store = RunStore(store)
    if not run_store.exists():
        raise UIError(f"no run store at {run_store.url}: it is made by the first run that "
                      "leaves a record; give the store with --store (or the setting "
                      "daskflow.runs.store)")
    try:
        sockets = bind_sockets(port, address=host)
    except OSError as err:
        what = ("is in use; pick another with --port (0: any free port)"
                if err.errno == errno.EADDRINUSE else f"cannot be listened on ({err.strerror})")
        raise UIError(f"port {port} on {host} {what}") from None
    url = f"http://{host}:{sockets[0].getsockname()[1]}/{pages.PAGES}"
    asyncio.run(_serve(application(run_store), sockets, lambda: ready and ready(url)))


async def _serve(app: web.Application, sockets: list[Any], ready: Any) -> None:
    server = HTTPServer(app)
    server.add_sockets(sockets)
    ready()
    try:
        await asyncio.Event().wait()  # until interrupted
    finally:
        server.stop()
