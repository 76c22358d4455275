"""Flow retries: a failed flow run runs again, reusing what completed.

``@df.flow(retries=2, retry_delay=10)``: when a run of ``flow.run``, a call or
``flow.submit`` ends Failed, the flow runs again after the delay, up to
``retries`` more times, with the same parameters, in the same
:class:`~daskflow.FlowRun` (``run.attempt`` says which attempt it is; its
state is AwaitingRetry during the delay; it is done after the last).  A
run Cancelled or Crashed is not retried, as in Prefect; ``run.cancel()``
during the delay ends it Cancelled.

How a new attempt reuses the tasks that completed: through the engine's
cache machinery, in a store private to this flow run.  Every attempt runs
with the flow's result default ``"resume"``: each task result is written,
under its chained cache key, to ``<result storage>/.flow-retries/<token>``
(the flow's ``result_storage`` or the setting ``daskflow.results.storage``),
and read back by the next attempt, whose completed tasks then show as
Cached and whose nodes only they needed do not run at all.  Tasks with an
option of their own keep it: ``cache=False`` runs again, ``cache=True``
uses its usual store, ``persist=True`` persists as usual (and runs again).
Resource setups and cleanups always run again.  The private store is
removed when the last attempt ends.  The price: a flow with retries writes
every task result it computes (a result that cannot be serialized is not
kept, and that task runs again); a flow with ``cache=True`` already keeps its
results and uses its own store.

Flow hooks fire for the run that ends the retries (``on_running`` for each
attempt); each attempt is logged.  A temporary cluster (``cluster=None``
without a default Client, or a ``df.clusters`` spec) is started by the first
attempt and kept for the next ones (:class:`SharedCluster`), then closed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from daskflow.clusters.address import Address
from daskflow.clusters.base import ClusterSpec
from daskflow.core.hooks import run_flow_hooks
from daskflow.core.options import either_spelling, positive_seconds
from daskflow.core.states import State, StateType
from daskflow.driver.connect import current_client, open_client
from daskflow.driver.flowrun import FlowRun, RunControl
from daskflow.exceptions import FlowDefinitionError, FlowRunError
from daskflow.wire import storage_options, storage_url
from daskflow.worker.store import filesystem

log = logging.getLogger("daskflow.run")

# make(attempt, the FlowRun of the attempts before or None) -> the attempt's engine
Make = Callable[[int, "FlowRun | None"], Any]
Go = Callable[[Any], Any]  # runs an engine in this thread


def check(owner: str, retries: Any, delay: tuple[Any, Any],
          timeout: tuple[Any, Any]) -> tuple[int, tuple[float, ...], float | None]:
    """A flow's ``retries``, ``retry_delay`` (or ``retry_delay_seconds``) and
    ``timeout`` (or ``timeout_seconds``) options, checked."""
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise FlowDefinitionError(f"retries of {owner} must be an int >= 0, got {retries!r}")
    delays = either_spelling(owner, "retry_delay", *delay, 0.0)
    if callable(delays):  # df.exponential_backoff(...)
        delays = list(delays(retries)) or [0.0]
    if not isinstance(delays, (list, tuple)):
        delays = [delays]
    try:
        out = tuple(0.0 if d == 0 else positive_seconds(d, f"retry_delay of {owner}",
                                                        FlowDefinitionError) for d in delays)
    except TypeError:
        raise FlowDefinitionError(f"retry_delay of {owner} must be seconds or a list of "
                                  f"them, got {delays!r}") from None
    limit = either_spelling(owner, "timeout", *timeout, None)
    seconds = None if limit is None else positive_seconds(limit, f"timeout of {owner}",
                                                          FlowDefinitionError)
    return retries, out or (0.0,), seconds


class SharedCluster:
    """The ``cluster=`` of a retried flow's attempts when it starts a cluster:
    the first attempt starts it, the next ones use it, :meth:`close` ends it."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._stack = contextlib.ExitStack()
        self._client: Any = None

    @classmethod
    def wrap(cls, flow: Any, cluster: Any) -> Any:
        """``cluster``, shared by the attempts if the flow retries and it starts one
        (None with a default Client uses that Client: nothing to share)."""
        cluster = flow.cluster if cluster is None else cluster
        temporary = (cluster is None and current_client() is None) or (
            isinstance(cluster, ClusterSpec) and not isinstance(cluster, Address))
        return cls(cluster) if flow.retries and temporary else cluster

    @contextlib.contextmanager
    def __daskflow_open__(self) -> Iterator[Any]:
        if self._client is None or self._client.status not in ("running", "connecting"):
            self._stack.close()  # (a cluster lost meanwhile: start another)
            self._client = self._stack.enter_context(open_client(self.cluster))
        yield self._client

    def close(self) -> bool:
        """End what the attempts started; whether there was something."""
        started = self._client is not None
        self._client = None
        self._stack.close()
        return started


def run(flow: Any, make: Make, go: Go, resume: str | None) -> FlowRun:
    """Run the first attempt of ``make(1, None)`` with ``go``, then the next ones
    (:func:`carry_on`); the attempts' private store ``resume`` is removed at the end."""
    engine = make(1, None)
    engine.last_attempt = functools.partial(ends, not flow.retries)
    try:
        go(engine)
    except BaseException:
        _end(resume, engine.cluster, engine.flow_run)
        raise
    return carry_on(flow, make, go, resume, engine.flow_run, engine.cluster)


def carry_on(flow: Any, make: Make, go: Go, resume: str | None, run: FlowRun,
             cluster: Any = None) -> FlowRun:
    """While ``run`` ended Failed and retries are left: wait the delay, then run
    the next attempt in the same FlowRun.  ``flow.submit`` calls this in the
    run's thread once its first attempt ended."""
    control = RunControl(run)
    try:
        while run.attempt <= flow.retries and _retryable(run):
            attempt = run.attempt
            delay = flow.retry_delay[min(attempt - 1, len(flow.retry_delay) - 1)]
            log.warning("flow run %r (%s), attempt %d of %d, ended %s: %s; running it again "
                        "in %gs", flow.name, run.run_id, attempt, flow.retries + 1,
                        run.state.name, run.state.message, delay,
                        extra={"daskflow_task": f"flow {flow.name}", "daskflow_run": run.run_id})
            control.again(f"attempt {attempt} failed: {run.state.message}")
            if _cancelled_while_waiting(control, delay):
                control.finish(State(StateType.CANCELLED, message="cancelled while awaiting "
                                     "a retry"), run.states, None,
                               FlowRunError(f"flow run {flow.name!r} was cancelled"))
                run_flow_hooks(flow, run)
                break
            engine = make(attempt + 1, run)
            engine.last_attempt = functools.partial(ends, attempt + 1 > flow.retries)
            go(engine)
    finally:
        _end(resume, cluster, run)
        if not run.done() and run._ended:  # never leave a run nobody can wait for
            control.settle()
    return run


def _end(resume: str | None, cluster: Any, run: FlowRun) -> None:
    """After the last attempt: its results' store removed, a shared cluster closed."""
    _remove(resume)
    if isinstance(cluster, SharedCluster) and cluster.close():
        RunControl(run).cluster_closed()


def _cancelled_while_waiting(control: RunControl, delay: float) -> bool:
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if control.cancel_requested():
            return True
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
    return control.cancel_requested()


def ends(last: bool, run: FlowRun) -> bool:
    """Whether ``run`` ends the retries (so the flow's end hooks fire for it)."""
    return last or not _retryable(run)


def _retryable(run: FlowRun) -> bool:
    return run.state.type is StateType.FAILED


def private_store(flow: Any) -> str | None:
    """Where the attempts of one run of ``flow`` keep their task results: None
    without retries, or with ``cache=True`` (its own store serves)."""
    if not flow.retries or flow.cache:
        return None
    return f"{storage_url(flow.result_storage)}/.flow-retries/{time.time_ns():x}"


def _remove(url: str | None) -> None:
    if url is None:
        return
    try:
        fs, root = filesystem(url, storage_options())
        if fs.exists(root):
            fs.rm(root, recursive=True)
    except Exception as err:  # never hide the run's outcome behind this
        log.warning("could not remove the results a retried flow kept in %s (%s: %s)",
                    url, type(err).__name__, err)
