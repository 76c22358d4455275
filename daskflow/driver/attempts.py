"""Flow retries: a failed flow run runs again, reusing what completed.

``@df.flow(retries=2, retry_delay=10)``: when a run of ``flow.run`` (or a
call) ends Failed, the flow runs again after the delay, up to ``retries``
more times, with the same parameters, and the last attempt's
:class:`~daskflow.FlowRun` is returned (``run.attempt`` says which one).  A
run Cancelled or Crashed is not retried, as in Prefect.

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
attempt); each attempt is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from daskflow.core.options import positive_seconds
from daskflow.core.states import StateType
from daskflow.driver.flowrun import FlowRun
from daskflow.exceptions import FlowDefinitionError
from daskflow.wire import storage_options, storage_url
from daskflow.worker.store import filesystem

log = logging.getLogger("daskflow.run")

# once(attempt, whether its end hooks fire) -> the attempt's run
Once = Callable[[int, Callable[[FlowRun], bool]], FlowRun]


def check(owner: str, retries: Any, delay: tuple[Any, Any],
          timeout: tuple[Any, Any]) -> tuple[int, tuple[float, ...], float | None]:
    """A flow's ``retries``, ``retry_delay`` (or ``retry_delay_seconds``) and
    ``timeout`` (or ``timeout_seconds``) options, checked."""
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise FlowDefinitionError(f"retries of {owner} must be an int >= 0, got {retries!r}")
    delays = _given(owner, "retry_delay", delay, 0.0)
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
    limit = _given(owner, "timeout", timeout, None)
    seconds = None if limit is None else positive_seconds(limit, f"timeout of {owner}",
                                                          FlowDefinitionError)
    return retries, out or (0.0,), seconds


def _given(owner: str, ours: str, pair: tuple[Any, Any], default: Any) -> Any:
    value, prefects = pair
    if prefects is None:
        return value
    if value is not None and value != default:
        raise FlowDefinitionError(f"{owner} got both {ours}= and {ours}_seconds= (the same "
                                  "option in daskflow's and Prefect's spelling); give one")
    return prefects


def run(flow: Any, once: Once, resume: str | None) -> FlowRun:
    """Run ``once`` until an attempt does not end Failed or no retry is left;
    then remove ``resume``, the attempts' private store (:func:`private_store`)."""
    if not flow.retries:
        return once(1, lambda r: True)
    try:
        attempt = 1
        while True:
            last = attempt > flow.retries
            current = once(attempt, lambda r, last=last: last or not _retryable(r))
            if last or not _retryable(current):
                return current
            delay = flow.retry_delay[min(attempt - 1, len(flow.retry_delay) - 1)]
            log.warning("flow run %r (%s), attempt %d of %d, ended %s: %s; running it again "
                        "in %gs", flow.name, current.run_id, attempt, flow.retries + 1,
                        current.state.name, current.state.message, delay,
                        extra={"daskflow_task": f"flow {flow.name}",
                               "daskflow_run": current.run_id})
            time.sleep(delay)
            attempt += 1
    finally:
        if resume is not None:
            _remove(resume)


def _retryable(run: FlowRun) -> bool:
    return run.state.type is StateType.FAILED


def private_store(flow: Any) -> str | None:
    """Where the attempts of one run of ``flow`` keep their task results: None
    without retries, or with ``cache=True`` (its own store serves)."""
    if not flow.retries or flow.cache:
        return None
    return f"{storage_url(flow.result_storage)}/.flow-retries/{time.time_ns():x}"


def _remove(url: str) -> None:
    try:
        fs, root = filesystem(url, storage_options())
        if fs.exists(root):
            fs.rm(root, recursive=True)
    except Exception as err:  # never hide the run's outcome behind this
        log.warning("could not remove the results a retried flow kept in %s (%s: %s)",
                    url, type(err).__name__, err)
