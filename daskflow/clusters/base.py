"""The contract of a cluster spec and of its handles, and the layers that
guarantee a cluster's end.

A *spec* (``Local(...)``, ``Kubernetes(...)``, ...) is an immutable,
picklable description of where a flow runs.  Every use of it opens a new
:class:`Handle`: ``cluster=spec`` in a run, ``with spec as client:``, a
``with spec:`` block in a flow body, or ``spec.open()`` by hand.  A spec can
therefore serve any number of runs, one after the other or at once.

A handle is one cluster's life, an explicit state machine NEW -> STARTING ->
RUNNING -> CLOSED with an exact error for each wrong move.  ``close()`` ends
what the handle started and nothing else: a *temporary* spec (Local, and
Kubernetes/Coiled/Slurm/SSH/Gateway by default) shuts its cluster down, an
attaching one (Address, a named shared cluster) only disconnects.

The end of a temporary cluster is guaranteed in layers:

1. ``try/finally`` around every ``with`` and every run; from the moment a
   cluster exists, a failure or interrupt anywhere in its start (the lease,
   the record, the join of a start thread) tears it down before re-raising;
2. a weak registry of live handles, reaped by an ``atexit`` hook, and a
   ``ResourceWarning`` from a handle garbage-collected while running;
3. SIGTERM becomes an orderly exit (``SystemExit(143)``) while a handle
   opened in the main thread runs, so the ``finally`` layers run.  It is a
   guest's handler: installed only when the process has none of its own
   (``daskflow.lifecycle.handle-sigterm: auto``), chained to the previous
   one when asked to install anyway (``always``), or never (``never``);
4. a server-side end (:mod:`daskflow.clusters.lease`, plus each provider's
   own idle timeout or walltime), for when the driver dies without running
   any of that;
5. a startup timeout: a cluster that is not up in time is torn down, even if
   it comes up later, and ``ClusterError`` says so; a start abandoned by
   Ctrl-C is torn down the same way;
6. a record on disk of every cluster started, with the processes and jobs it
   owns (pids with their start times), for ``daskflow clusters list`` and
   ``daskflow clusters close``.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import enum
import functools
import html
import inspect
import logging
import signal
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from daskflow import config
from daskflow.clusters import records as record_files
from daskflow.clusters.in_flow import cluster as cluster_resource
from daskflow.clusters.records import records
from daskflow.define.build import current_builder
from daskflow.exceptions import ClusterError

logger = logging.getLogger("daskflow.run")


MAIN_GUARD_HINT = (
    "a script that runs flows on the default (process-based) local cluster must do it "
    "under `if __name__ == \"__main__\":`, because each worker process imports the "
    "script again. Put the flow calls there (tasks and flows stay at module level), or "
    "pass cluster='sync' or df.clusters.Local(processes=False)")


def close_client(client: Any) -> None:
    """``client.close()``, and the loop thread of a client that closed itself.

    A synchronous ``Client`` that gave up reconnecting to a lost scheduler
    closes itself without stopping its event-loop thread, and ``close()`` then
    returns at once (distributed 2026.8): every such client would leave a
    thread behind.  Stopping its ``_loop_runner`` (private) is idempotent;
    pinned by ``test_a_client_that_gave_up_reconnecting_leaves_no_thread``.
    """
    client.close()
    runner = getattr(client, "_loop_runner", None)
    if runner is not None and not client.asynchronous:
        runner.stop()


class Lifecycle(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSED = "closed"


_live: weakref.WeakSet[Handle] = weakref.WeakSet()


@atexit.register
def _reap() -> None:
    """Close every handle still running when the interpreter exits."""
    for handle in list(_live):
        with contextlib.suppress(Exception):
            handle.close()


class ClusterSpec:
    """Base of the cluster specs: an immutable description.

    Subclasses implement ``_create(handle)`` and may override
    ``_destroy(handle, client, cluster)`` and ``record_extra(handle)``.
    """

    kind = "cluster"
    temporary = True
    _entered: dict[int, list[Any]]  # per thread: what `with spec` opened, to close on exit
    # What the scheduler-side lease does when it runs out (see lease.Lease).
    lease_action = "close"
    # Extra seconds a provider's own deadline may need to clean up a late start.
    startup_grace = 0.0

    def __init__(self, *, name: str | None = None, startup_timeout: float | str | None = None,
                 lease: float | str | None = None) -> None:
        self.name = name
        self.startup_timeout = startup_timeout
        self.lease = lease
        object.__setattr__(self, "_entered", {})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Freeze an instance once the most derived ``__init__`` has run."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        signature = inspect.signature(init)

        @functools.wraps(init)
        def frozen_init(self: ClusterSpec, *args: Any, **kw: Any) -> None:
            if type(self) is cls:
                _check_call(cls, signature, self, args, kw)
            init(self, *args, **kw)
            if type(self) is cls:
                object.__setattr__(self, "_frozen", True)

        cls.__init__ = frozen_init  # type: ignore[method-assign]

    def __setattr__(self, key: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise AttributeError(
                f"{type(self).__name__}.{key}: a cluster spec is an immutable description; "
                f"make a new one, e.g. df.clusters.{type(self).__name__}(..., {key}=...)")
        object.__setattr__(self, key, value)

    # -- what subclasses provide ------------------------------------------------
    def _create(self, handle: Handle) -> tuple[Any, Any]:
        """Start or connect; return (client, cluster or None)."""
        raise NotImplementedError

    def _destroy(self, handle: Handle, client: Any, cluster: Any) -> None:
        """End what ``_create`` made (close the client; shut down if temporary)."""
        if client is not None:
            close_client(client)
        if cluster is not None and self.temporary:
            cluster.close()

    def preflight(self) -> None:
        """Checks in the calling thread before anything starts."""

    def record_extra(self, handle: Handle) -> dict[str, Any]:
        """Provider facts for the record (processes, jobs, namespace)."""
        return {}

    @classmethod
    def record_status(cls, record: dict[str, Any]) -> str:
        """``running``, ``orphaned`` (its driver is gone) or ``gone``: the state of
        a cluster of this kind recorded on disk (``daskflow clusters list``)."""
        return record_files.status(record)

    @classmethod
    def close_record(cls, record: dict[str, Any]) -> str:
        """End a cluster of this kind recorded on disk and forget its record;
        say how (``daskflow clusters close``)."""
        return record_files.close(record)

    def describe(self) -> str:
        return type(self).__name__

    def handle_name(self) -> str:
        """The name of a new handle's cluster: ``name=``, or a fresh ``daskflow-...``."""
        return self.name or f"daskflow-{self.kind}-{uuid.uuid4().hex[:8]}"

    # -- the ways to use a spec ---------------------------------------------------
    def open(self, *, shared: bool = False) -> Handle:
        """A new handle on a cluster of this description (not started yet).

        ``shared=True`` when other processes must reach the cluster (a flow
        resource's tasks run on workers).
        """
        return Handle(self, shared=shared)

    def __enter__(self) -> Any:
        """``with spec as client:`` outside flows; a resource in a flow body."""
        if current_builder() is not None:
            entered: Any = cluster_resource(self)
            value = entered.__enter__()
        else:
            entered = self.open()
            value = entered.__enter__()
        self._entered.setdefault(threading.get_ident(), []).append(entered)
        return value

    def __exit__(self, *exc: Any) -> None:
        stack = self._entered.get(threading.get_ident()) or []
        if not stack:
            raise ClusterError(f"{self!r} was exited without being entered in this thread")
        entered = stack.pop()
        if not stack:
            self._entered.pop(threading.get_ident(), None)
        entered.__exit__(*exc)

    @contextlib.contextmanager
    def __daskflow_open__(self) -> Iterator[Any]:
        """What ``cluster=spec`` opens for a run: a handle of its own."""
        with self.open() as client:
            yield client

    def __getstate__(self) -> dict[str, Any]:
        """A spec travels as its configuration."""
        return {k: v for k, v in self.__dict__.items() if k != "_entered"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "_entered", {})

    def __repr__(self) -> str:
        name = f" {self.name}" if self.name else ""
        return f"<{type(self).__name__}{name}>"

    def _repr_html_(self) -> str:
        items: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k.startswith("_") or v is None or v == {} or v == ():
                continue
            if k.endswith("kwargs") and isinstance(v, dict):  # the provider's own keywords
                items.update(v)
            else:
                items[k] = v
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(repr(v))}</code></td></tr>"
            for k, v in sorted(items.items()))
        return (f"<div><b>{html.escape(type(self).__name__)}</b> cluster spec "
                f"<span style='color:#666'>(a description: each run, <code>with</code> block "
                f"or <code>.open()</code> starts a cluster of its own and ends it)</span>"
                f"<table>{rows}</table></div>")


def _check_call(cls: type, signature: inspect.Signature, self: Any, args: tuple,
                kw: dict[str, Any]) -> None:
    """A spec made with a misspelt or missing argument is a ClusterError that
    says which and what the spec takes, before anything starts."""
    try:
        signature.bind(self, *args, **kw)
    except TypeError as err:
        params = [p for p in signature.parameters if p != "self"]
        unknown = sorted(k for k in kw if k not in signature.parameters)
        hints = [f" (did you mean {close[0]!r}?)" for k in unknown
                 for close in [difflib.get_close_matches(k, params, n=1)] if close]
        raise ClusterError(f"{cls.__name__}(): {err}{''.join(hints)}; it takes: "
                           f"{', '.join(params)}") from None


class Handle:
    """One cluster of a spec: started once, closed once.

    ``with spec.open() as client:`` is the explicit form of ``with spec as
    client:``; ``handle.start()`` returns a connected ``distributed.Client``
    and ``handle.close()`` is idempotent.
    """

    def __init__(self, spec: ClusterSpec, *, shared: bool = False) -> None:
        self.spec = spec
        self.shared = shared
        self.name = spec.handle_name()
        self.record_id = self.name if spec.name is None else f"{self.name}-{uuid.uuid4().hex[:6]}"
        self.state = Lifecycle.NEW
        self.client: Any = None
        self.cluster: Any = None
        self.extra: dict[str, Any] = {}  # what the provider learnt while starting
        self._lock = threading.Lock()
        self._sigterm: _SigtermToExit | None = None

    @property
    def temporary(self) -> bool:
        return self.spec.temporary

    def _repr_html_(self) -> str:
        facts = [f"<b>{html.escape(self.name)}</b> ({html.escape(type(self.spec).__name__)})",
                 html.escape(self.state.value)]
        client = self.client
        if client is not None:
            facts.append(f"scheduler <code>{html.escape(client.scheduler.address)}</code>")
            link = getattr(client, "dashboard_link", None)
            if link:
                facts.append(f"<a href='{html.escape(link)}' target='_blank'>dashboard</a>")
        return "<div>" + " · ".join(facts) + "</div>"

    def start(self) -> Any:
        """Start (or connect) and return a ``distributed.Client``."""
        with self._lock:
            if self.state is Lifecycle.CLOSED:
                raise ClusterError(
                    f"Cannot reopen cluster handle {self.name!r} once it has been closed; "
                    "use the spec again (each use opens a new handle)")
            if self.state is not Lifecycle.NEW:
                raise ClusterError(f"cluster handle {self.name!r} is already {self.state.value}")
            self.state = Lifecycle.STARTING
        spec = self.spec
        try:
            spec.preflight()
        except BaseException:
            self.state = Lifecycle.CLOSED
            raise
        _live.add(self)
        timeout = config.seconds_setting("lifecycle.startup-timeout", spec.startup_timeout)
        try:
            self.client, self.cluster = _within(
                timeout + spec.startup_grace, functools.partial(spec._create, self),
                functools.partial(spec._destroy, self), self.name)
            # From here the cluster exists: whatever fails or interrupts below
            # tears it down (the except clause) before re-raising.
            if spec.temporary:
                _install_lease(self)
                records.write(self)
        except BaseException:
            self._abort()
            raise
        self.state = Lifecycle.RUNNING
        logger.info("%s %s is up: %s", spec.describe(), self.name, self.client.scheduler.address)
        return self.client

    def _abort(self) -> None:
        """A start that failed after (part of) the cluster was made: end it."""
        with self._lock:
            self.state = Lifecycle.CLOSED
        _live.discard(self)
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        try:
            if client is not None or cluster is not None:
                self.spec._destroy(self, client, cluster)
        except Exception as err:  # the original error matters more; say what is left
            logger.warning("could not end cluster %s after its start failed: %r; "
                           "see `daskflow clusters list`", self.name, err)
        else:
            records.remove(self.record_id)

    def close(self) -> None:
        """End what this handle started; idempotent."""
        with self._lock:
            if self.state in (Lifecycle.CLOSED, Lifecycle.NEW):
                self.state = Lifecycle.CLOSED
                return
            self.state = Lifecycle.CLOSED
        _live.discard(self)
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        try:
            self.spec._destroy(self, client, cluster)
        finally:
            records.remove(self.record_id)

    def __enter__(self) -> Any:
        self.start()
        if threading.current_thread() is threading.main_thread():
            self._sigterm = _SigtermToExit()
            self._sigterm.__enter__()
        return self.client

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close()
        finally:
            if self._sigterm is not None:
                self._sigterm.__exit__(*exc)
                self._sigterm = None

    def __del__(self) -> None:
        if getattr(self, "state", None) is Lifecycle.RUNNING:
            warnings.warn(f"cluster {self.name!r} was never closed; closing it now",
                          ResourceWarning, stacklevel=1)
            with contextlib.suppress(Exception):
                self.close()

    def __repr__(self) -> str:
        return f"<Handle {type(self.spec).__name__} {self.name} {self.state.value}>"


def _install_lease(handle: Handle) -> None:
    from daskflow.clusters.lease import Lease

    duration = config.seconds_setting("lifecycle.lease", handle.spec.lease)
    handle.client.register_plugin(Lease(handle.client.id, duration, action=handle.spec.lease_action),
                                  name=Lease.name)


def _within(timeout: float, create: Callable[[], tuple[Any, Any]],
            destroy: Callable[[Any, Any], None], name: str) -> tuple[Any, Any]:
    """Run ``create`` in a thread with an overall timeout.

    A start given up on (the timeout, or Ctrl-C or any exception while
    waiting) is torn down: now if it has finished, else by its thread the
    moment it does.
    """
    box: dict[str, Any] = {}
    lock = threading.Lock()
    abandoned = threading.Event()

    def target() -> None:
        try:
            made = create()
        except BaseException as err:
            box["error"] = err
            return
        with lock:
            if not abandoned.is_set():
                box["made"] = made
                return
        with contextlib.suppress(Exception):  # came up after we gave up on it: end it now
            destroy(*made)

    thread = threading.Thread(target=target, name=f"start {name}", daemon=True)
    thread.start()
    try:
        thread.join(timeout)
    except BaseException:  # Ctrl-C (or SIGTERM's SystemExit) while waiting
        _abandon(lock, abandoned, box, destroy)
        raise
    if thread.is_alive():
        _abandon(lock, abandoned, box, destroy)
        raise ClusterError(
            f"cluster {name!r} did not start within {timeout:g}s; it is being torn down. "
            "Raise daskflow.lifecycle.startup-timeout (or startup_timeout=) if it needs longer")
    if "error" in box:
        err = box["error"]
        hint = ""
        if "__mp_main__" in repr(err) or "Nanny failed to start" in repr(err):
            hint = f". If this is a script: {MAIN_GUARD_HINT}"
        if isinstance(err, ClusterError):
            raise err
        raise ClusterError(f"cluster {name!r} failed to start: {err}{hint}") from err
    return box["made"]


def _abandon(lock: threading.Lock, abandoned: threading.Event, box: dict[str, Any],
             destroy: Callable[[Any, Any], None]) -> None:
    with lock:
        abandoned.set()
        made = box.pop("made", None)
    if made is not None:  # finished just as we gave up: end it here
        with contextlib.suppress(Exception):
            destroy(*made)


class _SigtermToExit:
    """While active in the main thread, SIGTERM raises ``SystemExit(143)`` so
    that ``finally`` blocks (and thus cluster shutdown) run before the process
    ends.

    ``daskflow.lifecycle.handle-sigterm``: ``auto`` installs it only when the
    process has no SIGTERM handler of its own (the default action); ``always``
    installs it and chains to the previous handler (called first); ``never``
    leaves SIGTERM alone.  The previous handler is restored on exit.
    """

    def __enter__(self) -> None:
        self.previous: Any = None
        self.installed: Any = None
        mode = str(config.get("lifecycle.handle-sigterm")).lower()
        if mode not in ("auto", "always", "never"):
            raise ClusterError(
                f"daskflow.lifecycle.handle-sigterm={mode!r}: use auto, always or never")
        if mode == "never" or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if mode == "auto" and current is not signal.SIG_DFL:
            return  # the process has its own plan for SIGTERM: respect it
        self.previous = current
        self.installed = functools.partial(_exit_on_sigterm, current)
        signal.signal(signal.SIGTERM, self.installed)

    def __exit__(self, *exc: Any) -> None:
        if self.installed is None:
            return
        # Restore only if nobody replaced ours meanwhile (theirs stays).
        if signal.getsignal(signal.SIGTERM) is self.installed:
            signal.signal(signal.SIGTERM, self.previous)


def _exit_on_sigterm(previous: Any, signum: int, frame: Any) -> None:
    if callable(previous):
        previous(signum, frame)
    raise SystemExit(128 + signum)


def need(module: str, extra: str) -> Any:
    """Import an optional provider library, or say exactly how to install it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        raise ClusterError(
            f"this cluster needs {module.split('.')[0]}: pip install 'daskflow[{extra}]'") from err


def terminate_nannies(client: Any, timeout: float = 1.0) -> None:
    """Ask every nanny to end its worker now (a worker busy in a task is
    killed after ``timeout`` s): nothing will run on a cluster being closed."""
    with contextlib.suppress(Exception):
        client.sync(client.scheduler.broadcast, nanny=True, on_error="ignore",
                    msg={"op": "terminate", "timeout": timeout, "reason": "daskflow-close"},
                    callback_timeout=timeout + 10)
