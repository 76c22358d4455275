"""The contract of a cluster spec, and the layers that guarantee its end.

A spec says where a flow runs.  ``spec.start()`` returns a connected
``distributed.Client``; ``spec.close()`` ends what the spec started and
nothing else: a *temporary* spec (Local, and Kubernetes/Coiled by default)
shuts its cluster down, an attaching spec (Address, a named Kubernetes
cluster) only disconnects.

A spec's life is an explicit state machine, NEW -> STARTING -> RUNNING ->
CLOSED, and each wrong move has an exact error (a spec is not reopened once
closed).  The end of a temporary cluster is guaranteed in layers:

1. ``try/finally`` around every ``with`` and every run;
2. a weak registry of live specs, reaped by an ``atexit`` hook, and a
   ``ResourceWarning`` from a spec garbage-collected while running;
3. SIGTERM is turned into an orderly exit (``SystemExit``) while a spec
   started in the main thread is running, so the ``finally`` layers run
   (SIGINT already raises ``KeyboardInterrupt``);
4. a server-side end (:mod:`daskflow.clusters.lease`, plus each provider's
   own idle timeout), for when the driver dies without running any of that;
5. a startup timeout: a cluster that is not up in time is torn down, even if
   it comes up later, and ``ClusterError`` says so;
6. a record on disk of every cluster started, named ``daskflow-...``, for
   ``daskflow clusters list`` and ``daskflow clusters close``.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import json
import logging
import os
import signal
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

from daskflow import config
from daskflow.exceptions import ClusterError

logger = logging.getLogger("daskflow.run")


class Lifecycle(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSED = "closed"


_live: weakref.WeakSet[ClusterSpec] = weakref.WeakSet()


@atexit.register
def _reap() -> None:
    """Close every spec still running when the interpreter exits."""
    for spec in list(_live):
        with contextlib.suppress(Exception):
            spec.close()


class ClusterSpec:
    """Base of the cluster specs; subclasses implement ``_create`` and ``_destroy``."""

    kind = "cluster"
    temporary = True
    # What the scheduler-side lease does when it runs out (see lease.Lease).
    lease_action = "close"
    # Extra seconds a provider's own deadline may need to clean up a late start.
    startup_grace = 0.0

    def __init__(self, *, name: str | None = None, startup_timeout: float | str | None = None,
                 lease: float | str | None = None) -> None:
        self.name = name or f"daskflow-{self.kind}-{uuid.uuid4().hex[:8]}"
        self.startup_timeout = startup_timeout
        self.lease = lease
        self.state = Lifecycle.NEW
        self.client: Any = None
        self.cluster: Any = None
        self._lock = threading.Lock()

    # -- what subclasses provide ------------------------------------------------
    def _create(self) -> tuple[Any, Any]:
        """Start or connect; return (client, cluster or None)."""
        raise NotImplementedError

    def _destroy(self, client: Any, cluster: Any) -> None:
        """End what ``_create`` made (close the client; shut down if temporary)."""
        if client is not None:
            client.close()
        if cluster is not None and self.temporary:
            cluster.close()

    def describe(self) -> str:
        return f"{type(self).__name__} {self.name}"

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Any:
        """Start (or connect) and return a ``distributed.Client``."""
        with self._lock:
            if self.state is Lifecycle.CLOSED:
                raise ClusterError(
                    f"Cannot reopen cluster spec {self.name!r} once it has been closed; "
                    "create a new spec instead")
            if self.state is not Lifecycle.NEW:
                raise ClusterError(f"cluster spec {self.name!r} is already {self.state.value}")
            self.state = Lifecycle.STARTING
        _live.add(self)
        timeout = config.seconds_setting("lifecycle.startup-timeout", self.startup_timeout)
        try:
            self.client, self.cluster = _within(timeout + self.startup_grace, self._create,
                                                self._destroy, self.name)
            if self.temporary:
                self._install_lease()
                records.write(self)
        except BaseException:
            self.state = Lifecycle.CLOSED
            _live.discard(self)
            raise
        self.state = Lifecycle.RUNNING
        logger.info("%s is up: %s", self.describe(), self.client.scheduler.address)
        return self.client

    def close(self) -> None:
        """End what this spec started; idempotent."""
        with self._lock:
            if self.state in (Lifecycle.CLOSED, Lifecycle.NEW):
                self.state = Lifecycle.CLOSED
                return
            self.state = Lifecycle.CLOSED
        _live.discard(self)
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        try:
            self._destroy(client, cluster)
        finally:
            records.remove(self.name)

    def _install_lease(self) -> None:
        from daskflow.clusters.lease import Lease

        duration = config.seconds_setting("lifecycle.lease", self.lease)
        self.client.register_plugin(Lease(self.client.id, duration, action=self.lease_action),
                                    name=Lease.name)

    # -- the three ways to use a spec ----------------------------------------------
    def __enter__(self) -> Any:
        from daskflow.build import current_builder

        if current_builder() is not None:
            return self._as_resource().__enter__()
        self.start()
        self._sigterm = _SigtermToExit()
        self._sigterm.__enter__()
        return self.client

    def __exit__(self, *exc: Any) -> None:
        from daskflow.build import current_builder

        if current_builder() is not None:
            return self._resource.__exit__(*exc)
        try:
            self.close()
        finally:
            self._sigterm.__exit__(*exc)

    @contextlib.contextmanager
    def __daskflow_open__(self) -> Iterator[Any]:
        """What the runner uses for ``cluster=spec``: start, yield the client, close."""
        with self as client:
            yield client

    def _as_resource(self) -> Any:
        from daskflow.clusters.resource import cluster_resource

        self._resource = cluster_resource(self)
        return self._resource

    def __getstate__(self) -> dict[str, Any]:
        """A spec travels as its configuration; a copy starts out NEW."""
        skip = {"_lock", "client", "cluster", "_sigterm", "_resource", "state"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.state = Lifecycle.NEW
        self.client = self.cluster = None

    def __del__(self) -> None:
        if getattr(self, "state", None) is Lifecycle.RUNNING:
            warnings.warn(f"cluster spec {self.name!r} was never closed; closing it now",
                          ResourceWarning, stacklevel=1)
            with contextlib.suppress(Exception):
                self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state.value}>"


def _within(timeout: float, create: Any, destroy: Any, name: str) -> tuple[Any, Any]:
    """Run ``create`` with an overall timeout; tear down a late or failed start."""
    box: dict[str, Any] = {}
    abandoned = threading.Event()

    def target() -> None:
        try:
            made = create()
        except BaseException as err:
            box["error"] = err
            return
        if abandoned.is_set():  # came up after we gave up on it: end it now
            with contextlib.suppress(Exception):
                destroy(*made)
            return
        box["made"] = made

    thread = threading.Thread(target=target, name=f"start {name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        abandoned.set()
        raise ClusterError(
            f"cluster {name!r} did not start within {timeout:g}s; it is being torn down. "
            "Raise daskflow.lifecycle.startup-timeout (or startup_timeout=) if it needs longer")
    if "error" in box:
        err = box["error"]
        hint = ""
        if "__mp_main__" in repr(err) or "Nanny failed to start" in repr(err):
            from daskflow.clusters.local import MAIN_GUARD_HINT

            hint = f". If this is a script: {MAIN_GUARD_HINT}"
        raise ClusterError(f"cluster {name!r} failed to start: {err}{hint}") from err
    return box["made"]


class _SigtermToExit:
    """While active in the main thread, SIGTERM raises SystemExit(143) so that
    ``finally`` blocks (and thus cluster shutdown) run before the process ends."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _raise_exit)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


class _Records:
    """One JSON file per started cluster, for ``daskflow clusters list/close``."""

    def directory(self) -> str:
        path = os.path.expanduser(str(config.get("lifecycle.state-dir")))
        os.makedirs(path, exist_ok=True)
        return path

    def write(self, spec: ClusterSpec) -> None:
        record = {"name": spec.name, "kind": spec.kind, "address": spec.client.scheduler.address,
                  "driver_pid": os.getpid(), "started": time.time(),
                  "dashboard": getattr(spec.client, "dashboard_link", None)}
        record.update(spec.record_extra() if hasattr(spec, "record_extra") else {})
        with open(os.path.join(self.directory(), f"{spec.name}.json"), "w") as f:
            json.dump(record, f)

    def remove(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.directory(), f"{name}.json"))

    def all(self) -> list[dict[str, Any]]:
        out = []
        directory = self.directory()
        for fname in sorted(os.listdir(directory)):
            if fname.endswith(".json"):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(directory, fname)) as f:
                    out.append(json.load(f))
        return out


records = _Records()
