"""Schedules: ``flow.serve(cron=... | interval=...)`` runs a flow on a clock.

Runs happen only while the serving process lives; for a schedule that must
survive reboots, put ``daskflow run`` in a systemd timer or a crontab (see
docs/automation.md).

The serving loop wakes on the wall clock in short slices (one second at
most), so after a laptop slept it sees at once which fires were missed and
applies ``catchup``:

``"none"``   only a fire that is on time runs (late by at most ``grace``);
             missed fires are skipped and the next one is awaited;
``"latest"`` the most recent due fire runs, older missed ones are skipped;
``"all"``    every due fire runs, oldest first.

A fire that comes while a run of this server is still going follows
``overlap``: ``"skip"`` it, ``"queue"`` it (runs one after the other), or
``"allow"`` both to run at once.

The last fire handled is kept in ``<state_dir>/<flow>.json``, so a restart
neither runs a fire again nor loses one (missed ones follow ``catchup``),
and ``<flow>.lock`` (an ``flock``) refuses a second server for the same
flow and state folder.
"""

from __future__ import annotations

import calendar
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from daskflow import config
from daskflow.core.files import write_atomic
from daskflow.core.options import positive_seconds
from daskflow.driver.connect import check_cluster, open_backend
from daskflow.driver.logs import setup_logging
from daskflow.exceptions import ScheduleError

log = logging.getLogger("daskflow.serve")

CATCHUP = ("none", "latest", "all")
OVERLAP = ("skip", "queue", "allow")

# -- cron ---------------------------------------------------------------------------

_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
_NAMES = {
    3: {n.lower(): i for i, n in enumerate(calendar.month_abbr) if n},
    4: {n.lower(): (i + 1) % 7 for i, n in enumerate(calendar.day_abbr)},  # sun=0
}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))


class Cron:
    """A five-field cron expression (minute hour day-of-month month day-of-week)
    in a time zone: ``*``, lists ``1,15``, ranges ``1-5``, steps ``*/15`` and
    ``10-40/10``, month and day names (``jan``, ``mon``), ``7`` for Sunday,
    and the macros ``@hourly @daily @weekly @monthly @yearly``.  As in cron,
    when both day fields are restricted a day matching either one fires.
    A wall time that does not exist (a DST gap) does not fire; one that
    happens twice (DST end) fires once, the first time.

    >>> c = Cron("*/15 9-17 * * mon-fri", "UTC")
    >>> c.next_after(dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)).isoformat()
    '2026-11-23T09:00:00+00:00'

    Fires are given in UTC.
    """

    def __init__(self, expr: str, tz: Any = None) -> None:
        self.expr = expr
        self.tz = zone(tz)
        text = _MACROS.get(expr.strip().lower(), expr)
        parts = text.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"cron expression {expr!r} has {len(parts)} fields; give five (minute hour "
                "day-of-month month day-of-week), e.g. '0 * * * *' for every hour, or a "
                f"macro ({', '.join(sorted(_MACROS))})")
        sets = [_field(p, i, expr) for i, p in enumerate(parts)]
        self.minutes, self.hours, self.days, self.months, dows = sets
        self.dows = {d % 7 for d in dows}
        self.any_day = parts[2] == "*"
        self.any_dow = parts[4] == "*"

    def _day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.dows
        if self.any_day and self.any_dow:
            return True
        if self.any_day:
            return dow
        if self.any_dow:
            return dom
        return dom or dow

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first fire strictly after ``after`` (an aware datetime)."""
        local = after.astimezone(self.tz)
        start = local.replace(tzinfo=None, second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = start.date()
        for _ in range(366 * 8):  # every date of eight years (Feb 29 and a weekday meet)
            if day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = dt.datetime.combine(day, dt.time(hour, minute))
                        if wall < start:
                            continue
                        fire = _existing(wall, self.tz)
                        if fire is not None and fire > after:
                            return fire
            day += dt.timedelta(days=1)
        raise ScheduleError(f"cron expression {self.expr!r} never fires (e.g. day 31 of "
                            "a month with 30 days); check its day and month fields")

    def __repr__(self) -> str:
        return f"Cron({self.expr!r}, tz={self.tz.key if hasattr(self.tz, 'key') else self.tz})"


def _existing(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """``wall`` in ``tz`` (its first occurrence) as UTC, or None if the clocks
    skip it.  (UTC: a time in a repeated hour never compares equal to one in
    another zone, PEP 495.)"""
    utc = wall.replace(tzinfo=tz, fold=0).astimezone(dt.timezone.utc)
    return utc if utc.astimezone(tz).replace(tzinfo=None) == wall else None


def _field(text: str, i: int, expr: str) -> set[int]:
    name, lo, hi = _FIELDS[i]
    names = _NAMES.get(i, {})
    out: set[int] = set()

    def value(v: str) -> int:
        v = v.strip().lower()
        if v in names:
            return names[v]
        if not v.isdigit():
            raise ScheduleError(f"cron expression {expr!r}: {v!r} is not a valid {name}")
        n = int(v)
        if not lo <= n <= hi:
            raise ScheduleError(f"cron expression {expr!r}: {name} {n} is outside {lo}-{hi}")
        return n

    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleError(f"cron expression {expr!r}: step {step_text!r} of the "
                                    f"{name} field must be a positive number")
            step = int(step_text)
        if part == "*":
            first, last = lo, (6 if i == 4 else hi)
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = value(a), value(b)
            if first > last:
                raise ScheduleError(f"cron expression {expr!r}: range {part!r} of the "
                                    f"{name} field goes backwards")
        else:
            first = value(part)
            last = first if step == 1 else (6 if i == 4 else hi)
        out.update(range(first, last + 1, step))
    return out


def zone(tz: Any) -> dt.tzinfo:
    """A tzinfo from None (this machine's zone), a name or a tzinfo."""
    if tz is None:
        local = dt.datetime.now().astimezone().tzinfo
        name = os.environ.get("TZ")
        if name:
            with contextlib.suppress(Exception):
                return _zoneinfo(name)
        return local or dt.timezone.utc
    if isinstance(tz, dt.tzinfo):
        return tz
    return _zoneinfo(str(tz))


def _zoneinfo(name: str) -> dt.tzinfo:
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: give an IANA name such as "
                            "'Europe/Paris' or 'UTC' (pip install tzdata if the system "
                            "has no zone database)") from None


class Interval:
    """Every ``seconds``, from ``anchor``: fires at anchor + k * seconds."""

    def __init__(self, seconds: float, anchor: dt.datetime) -> None:
        self.seconds, self.anchor = seconds, anchor

    def next_after(self, after: dt.datetime) -> dt.datetime:
        if after < self.anchor:
            return self.anchor
        k = int((after - self.anchor).total_seconds() // self.seconds) + 1
        return self.anchor + dt.timedelta(seconds=k * self.seconds)

    def __repr__(self) -> str:
        return f"Interval({self.seconds:g}s)"


def interval_seconds(interval: Any) -> float:
    return positive_seconds(interval, "interval", ScheduleError)


# -- the clock ------------------------------------------------------------------------


class Clock:
    """The wall clock; tests give ``serve`` a fake one with the same two methods."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# -- state file and lock ----------------------------------------------------------------


class ServeState:
    """``<dir>/<flow>.json`` (the last fire handled) and ``<dir>/<flow>.lock``."""

    def __init__(self, directory: str, flow_name: str) -> None:
        self.dir = os.path.abspath(os.path.expanduser(directory))
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in flow_name)
        self.path = os.path.join(self.dir, f"{safe}.json")
        self.lock_path = os.path.join(self.dir, f"{safe}.lock")
        self._lock_fd: int | None = None

    def lock(self, flow_name: str) -> None:
        import fcntl

        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ScheduleError(
                f"flow {flow_name!r} is already served from the state folder {self.dir} "
                f"(by pid {holder}); stop that server first, or give this one another "
                "state_dir=") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def last_fire(self) -> dt.datetime | None:
        try:
            with open(self.path) as f:
                return dt.datetime.fromisoformat(json.load(f)["last_fire"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ScheduleError(f"the serve state file {self.path} cannot be read ({err!r}); "
                                "delete it to start afresh") from None

    def save(self, fire: dt.datetime, schedule: Any) -> None:
        write_atomic(self.path, json.dumps({"last_fire": fire.isoformat(),
                                            "schedule": repr(schedule),
                                            "pid": os.getpid()}).encode())


# -- serving ------------------------------------------------------------------------


def serve(flow: Any, *, cron: str | None = None, interval: Any = None,
          parameters: dict[str, Any] | None = None, cluster: Any = None, tz: Any = None,
          catchup: str = "none", overlap: str = "skip", limit: int | None = None,
          state_dir: str | None = None, grace: float = 60.0,
          clock: Any = None) -> list[Any]:
    """Run ``flow`` on a schedule until interrupted (or ``limit`` runs); see
    :meth:`daskflow.Flow.serve`."""
    if (cron is None) == (interval is None):
        raise ScheduleError(f"{flow.name}.serve() needs exactly one of cron= (e.g. "
                            "'0 * * * *') and interval= (seconds, a timedelta or '10m')")
    if catchup not in CATCHUP:
        raise ScheduleError(f"catchup={catchup!r} must be one of {', '.join(CATCHUP)}")
    if overlap not in OVERLAP:
        raise ScheduleError(f"overlap={overlap!r} must be one of {', '.join(OVERLAP)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ScheduleError(f"limit={limit!r} must be a positive integer or None")
    parameters = dict(parameters or {})
    call_args, call_kwargs = flow.as_call(parameters)
    flow.bind(*call_args, **call_kwargs)  # a bad parameter is an error now, not at the first fire
    cluster = flow.cluster if cluster is None else cluster
    check_cluster(cluster)
    clock = clock or Clock()
    state = ServeState(state_dir or config.get("serve.state-dir"), flow.name)
    started = clock.now()
    schedule: Any = (Cron(cron, tz) if cron is not None
                     else Interval(interval_seconds(interval), state.last_fire() or started))
    state.lock(flow.name)
    try:
        last = state.last_fire() or (started if cron is not None else
                                     started - dt.timedelta(microseconds=1))
        setup_logging()
        with _cluster_for_runs(cluster) as where:
            log.info("serving flow %r on %r (catchup=%s, overlap=%s) on %s; next run at %s",
                     flow.name, schedule, catchup, overlap, where.description,
                     schedule.next_after(last).isoformat(timespec="seconds"))
            return _loop(flow, schedule, parameters, where, state, last, catchup, overlap,
                         limit, grace, clock)
    finally:
        state.unlock()


class _Where:
    """The ``cluster=`` of every run of a server.  A cluster it starts (a spec,
    a profile, the temporary default) or a client it opens (an address) is
    opened once and closed at the end; when that client is lost for good
    (its scheduler died and did not come back within the client's reconnect
    timeout), the next fire opens it again instead of crashing every run
    from then on.  A ``Client`` of the caller's is used as it is."""

    def __init__(self, cluster: Any) -> None:
        from distributed import Client

        self.cluster = cluster
        self.reopen = not isinstance(cluster, Client) and cluster != "sync"
        self.stack = contextlib.ExitStack()
        self.where: Any = None
        self.description = ""

    def open(self) -> None:
        backend = self.stack.enter_context(open_backend(self.cluster))
        self.where = backend.target
        self.description = backend.description

    def current(self) -> Any:
        """Where the next run goes (reopened first if it was lost)."""
        where = self.where
        if self.reopen and getattr(where, "status", "running") in ("closed", "closing"):
            log.warning("the cluster of the server (%s) was lost; opening it again for "
                        "the next run", self.description)
            self.close()
            self.stack = contextlib.ExitStack()
            self.open()
        return self.where

    def close(self) -> None:
        try:
            self.stack.close()
        except Exception as err:  # a lost cluster may fail to close: it is gone anyway
            log.warning("closing the lost cluster of the server failed: %r", err)


@contextlib.contextmanager
def _cluster_for_runs(cluster: Any) -> Iterator[_Where]:
    where = _Where(cluster)
    where.open()
    try:
        yield where
    finally:
        where.stack.close()


def _loop(flow: Any, schedule: Any, parameters: dict, where: _Where, state: ServeState,
          last: dt.datetime, catchup: str, overlap: str, limit: int | None,
          grace: float, clock: Any) -> list[Any]:
    server = _Server(flow, schedule, parameters, where, state, last, overlap, limit)
    try:
        while not server.full():
            server.active[:] = [r for r in server.active if not r.done()]
            now = clock.now()
            due = server.due(now)
            if due:
                chosen = _catch_up(due, now, catchup, grace)
                if len(chosen) < len(due):
                    log.warning("%d fire(s) of flow %r were missed (from %s to %s; the "
                                "process slept or was busy); catchup=%r: %s",
                                len(due) - len(chosen), flow.name,
                                due[0].isoformat(timespec="seconds"),
                                due[-1].isoformat(timespec="seconds"), catchup,
                                f"running {len(chosen)} of them" if chosen else "skipped")
                server.fire(due, chosen)
            if server.queued and not server.active and not server.full():
                server.dequeue()
                continue
            if server.full():
                break
            wait = (server.next_fire - clock.now()).total_seconds()
            clock.sleep(min(max(wait, 0.0), 0.2 if (server.queued or server.active) else 1.0))
        for run in server.active:
            run.wait()
    except BaseException:
        for run in server.active:
            if not run.done():
                log.warning("cancelling run %s of flow %r", run.run_id, flow.name)
                run.cancel(timeout=60)
        raise
    return server.runs


class _Server:
    """What the serving loop keeps: the runs started, those still going, the
    fires queued behind them, and the last fire handled (run or skipped)."""

    def __init__(self, flow: Any, schedule: Any, parameters: dict, where: _Where,
                 state: ServeState, last: dt.datetime, overlap: str, limit: int | None) -> None:
        self.flow, self.schedule, self.parameters = flow, schedule, parameters
        self.where, self.state, self.overlap, self.limit = where, state, overlap, limit
        self.runs: list[Any] = []
        self.active: list[Any] = []
        self.queued: collections.deque[dt.datetime] = collections.deque()
        self.handled = last  # every fire up to here was run or skipped
        self.next_fire = schedule.next_after(last)

    def full(self) -> bool:
        return self.limit is not None and len(self.runs) >= self.limit

    def due(self, now: dt.datetime) -> list[dt.datetime]:
        """The fires due by ``now``, oldest first."""
        due: list[dt.datetime] = []
        while self.next_fire <= now:
            due.append(self.next_fire)
            self.next_fire = self.schedule.next_after(self.next_fire)
        return due

    def fire(self, due: list[dt.datetime], chosen: list[dt.datetime]) -> None:
        """Start (or queue, or skip) the chosen fires; the others were missed."""
        self.handled = max([self.handled, *(f for f in due if not chosen or f < chosen[0])])
        for fire in chosen:
            if self.full():
                break
            if self.overlap == "queue" and (self.active or self.queued):
                self.queued.append(fire)
                continue
            if self.active and self.overlap == "skip":
                log.warning("fire at %s of flow %r skipped: the previous run is still "
                            "going (overlap='skip')", fire.isoformat(timespec="seconds"),
                            self.flow.name)
            else:
                _start(self.flow, self.parameters, self.where, fire, self.runs, self.active)
            self.handled = fire
        self.checkpoint()

    def dequeue(self) -> None:
        """Start the oldest queued fire."""
        self.handled = self.queued.popleft()
        _start(self.flow, self.parameters, self.where, self.handled, self.runs, self.active)
        self.checkpoint()

    def checkpoint(self) -> None:
        queued = self.queued
        self.state.save(queued[0] - dt.timedelta(microseconds=1) if queued else self.handled,
                        self.schedule)


def _catch_up(due: list[dt.datetime], now: dt.datetime, catchup: str,
              grace: float) -> list[dt.datetime]:
    if catchup == "all":
        return due
    if catchup == "latest":
        return due[-1:]
    return [f for f in due[-1:] if (now - f).total_seconds() <= grace]


def _start(flow: Any, parameters: dict, where: _Where, fire: dt.datetime, runs: list,
           active: list) -> None:
    log.info("fire at %s: starting a run of flow %r", fire.isoformat(timespec="seconds"),
             flow.name)
    try:
        cluster = where.current()
    except Exception as err:  # a cluster that cannot be opened again: this fire is lost
        log.error("fire at %s of flow %r: no run, the cluster could not be opened: %s",
                  fire.isoformat(timespec="seconds"), flow.name, err)
        return
    call_args, call_kwargs = flow.as_call(parameters)
    run = flow.submit(*call_args, cluster=cluster, **call_kwargs)
    run.scheduled_for = fire
    runs.append(run)
    active.append(run)
