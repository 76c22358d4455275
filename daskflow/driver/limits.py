"""Tag concurrency limits, the driver side: which limits a run has, and their
semaphores registered on the scheduler before the run is submitted (see
:mod:`daskflow.worker.slots` for the whole design)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask.config
from dask.utils import parse_timedelta

from daskflow import config
from daskflow.core.options import check_limits
from daskflow.exceptions import ConcurrencyLimitError
from daskflow.worker.slots import PREFIX


def resolve(flow_limits: Mapping[str, int], run_limits: Mapping[str, int]) -> dict[str, int]:
    """The limits of one run by tag: the setting's, the flow's, the run's (the
    engine registers those of the tags its tasks carry)."""
    merged = dict(check_limits("the setting daskflow.concurrency", config.get("concurrency") or {}))
    merged.update(flow_limits)
    merged.update(run_limits)
    return merged


def register(client: Any, limits: tuple[tuple[str, int], ...]) -> None:
    """Create the run's semaphores on the scheduler (from the driver, before
    submitting); a tag already limited to another value there is an error."""
    for tag, limit in limits:
        try:
            _register_semaphore(client, PREFIX + tag, limit)
        except ValueError as err:
            if "Inconsistent max leases" not in str(err):
                raise
            raise ConcurrencyLimitError(
                f"tag {tag!r} is limited to {limit} by this run, but another run on this "
                f"scheduler set its limit first ({err}); give every run the same limit for "
                "a tag, or use another tag") from None


def _register_semaphore(client: Any, name: str, limit: int) -> None:
    """The scheduler's ``semaphore_register`` handler, as distributed.Semaphore
    calls it (without the lease-refresh callback a Semaphore object would
    leave on the client's loop)."""
    timeout = dask.config.get("distributed.scheduler.locks.lease-timeout")
    timeout = None if timeout == "inf" else parse_timedelta(timeout, "s")
    client.sync(client.scheduler.semaphore_register, name=name, max_leases=limit,
                lease_timeout=timeout)
