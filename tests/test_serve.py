"""flow.serve and `daskflow serve`: cron parsing, the policies with a fake
clock, the state file and lock, and real runs on the wall clock."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import dask_env

import daskflow as df
from daskflow.serve import Cron, ServeState

UTC = dt.timezone.utc


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# -- cron ---------------------------------------------------------------------------


@pytest.mark.parametrize("expr, after, expected", [
    ("0 * * * *", at(2026, 11, 23, 10, 0), at(2026, 11, 23, 11, 0)),
    ("*/15 9-17 * * mon-fri", at(2026, 11, 21, 12, 0), at(2026, 11, 23, 9, 0)),
    ("30 2 1,15 * *", at(2026, 11, 2), at(2026, 11, 15, 2, 30)),
    ("0 0 * * 7", at(2026, 11, 23), at(2026, 11, 29)),  # 7 is Sunday too
    ("0 12 13 * fri", at(2026, 11, 23), at(2026, 11, 27, 12)),  # day OR weekday, as in cron
    ("0 0 29 feb *", at(2026, 11, 23), at(2028, 2, 29)),
    ("10-40/10 * * * *", at(2026, 11, 23, 10, 40), at(2026, 11, 23, 11, 10)),
    ("@daily", at(2026, 11, 23, 0, 0), at(2026, 11, 24)),
])
def test_cron_next_fire(expr, after, expected):
    assert Cron(expr, "UTC").next_after(after) == expected


def test_cron_in_a_time_zone_across_daylight_saving():
    paris = Cron("30 2 * * *", "Europe/Paris")
    # 2027-03-28 02:30 does not exist in Paris: no fire that day
    assert paris.next_after(at(2027, 3, 27, 12)) == at(2027, 3, 29, 0, 30)
    # 2027-10-31 02:30 happens twice: one fire, the first (CEST, UTC+2)
    first = paris.next_after(at(2027, 10, 30, 12))
    assert first == at(2027, 10, 31, 0, 30)
    assert paris.next_after(first) == at(2027, 11, 1, 1, 30)
    assert Cron("0 9 * * *", "America/New_York").next_after(at(2026, 11, 23)) == at(2026, 11, 23, 14)


@pytest.mark.parametrize("expr, message", [
    ("0 * * *", "has 4 fields; give five"),
    ("61 * * * *", "minute 61 is outside 0-59"),
    ("* * * * funday", "'funday' is not a valid day of week"),
    ("*/0 * * * *", "step '0' of the minute field"),
    ("0 0 31 2 *", "never fires"),
    ("5-1 * * * *", "goes backwards"),
])
def test_bad_cron_is_a_clear_error(expr, message):
    with pytest.raises(df.ScheduleError, match=message):
        Cron(expr, "UTC").next_after(at(2026, 1, 1))


# -- serving with a fake clock -------------------------------------------------------------


class FakeClock:
    """A wall clock that moves only when the server sleeps (by as long as it
    asks), each sleep also taking ``real`` seconds of real time."""

    def __init__(self, start: dt.datetime, real: float = 0.0) -> None:
        self.t, self.real = start, real

    def now(self) -> dt.datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)
        if self.real:
            time.sleep(self.real)


@df.task
def note(path: str, seconds: float) -> float:
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(json.dumps([start, time.time()]) + "\n")
    return start


@df.flow
def job(path: str, seconds: float = 0.0):
    return note(path, seconds)


def spans(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def overlapped(path) -> bool:
    s = sorted(spans(path))
    return any(b[0] < a[1] for a, b in zip(s, s[1:]))


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / "serve-state")


def test_overlap_skip(tmp_path, state_dir):
    path = str(tmp_path / "runs.jsonl")
    runs = job.serve(interval=1, parameters={"path": path, "seconds": 0.3}, cluster="sync",
                     limit=3, overlap="skip", state_dir=state_dir,
                     clock=FakeClock(at(2026, 11, 23, 12), real=0.01))
    assert [r.state.is_completed() for r in runs] == [True] * 3
    fires = [r.scheduled_for for r in runs]
    assert fires[0] == at(2026, 11, 23, 12)
    # each run takes 0.3 s of real time, many fake seconds: the fires in
    # between were skipped, and no two runs overlapped
    assert all((b - a).total_seconds() >= 2 for a, b in zip(fires, fires[1:]))
    assert not overlapped(path)


def test_overlap_queue(tmp_path, state_dir):
    path = str(tmp_path / "runs.jsonl")
    runs = job.serve(interval=1, parameters={"path": path, "seconds": 0.3}, cluster="sync",
                     limit=3, overlap="queue", state_dir=state_dir,
                     clock=FakeClock(at(2026, 11, 23, 12), real=0.01))
    fires = [r.scheduled_for for r in runs]
    assert fires == [at(2026, 11, 23, 12, 0, s) for s in (0, 1, 2)]  # none lost
    assert not overlapped(path)  # one after the other


def test_overlap_allow(tmp_path, state_dir):
    path = str(tmp_path / "runs.jsonl")
    runs = job.serve(interval=1, parameters={"path": path, "seconds": 0.3}, cluster="sync",
                     limit=3, overlap="allow", state_dir=state_dir,
                     clock=FakeClock(at(2026, 11, 23, 12), real=0.01))
    assert [r.scheduled_for for r in runs] == [at(2026, 11, 23, 12, 0, s) for s in (0, 1, 2)]
    assert all(r.state.is_completed() for r in runs)
    assert overlapped(path)


def woke_at_13_30(state_dir):
    """The server last handled the 10:00 fire, then the machine slept until 13:30."""
    state = ServeState(state_dir, "job")
    os.makedirs(state.dir, exist_ok=True)
    state.save(at(2026, 11, 23, 10), "cron")
    return FakeClock(at(2026, 11, 23, 13, 30))


@pytest.mark.parametrize("catchup, expected", [
    ("none", [at(2026, 11, 23, 14)]),  # 11:00-13:00 missed, skipped; 14:00 runs
    ("latest", [at(2026, 11, 23, 13), at(2026, 11, 23, 14)]),
    ("all", [at(2026, 11, 23, h) for h in (11, 12, 13)]),
])
def test_catchup(tmp_path, state_dir, catchup, expected, caplog):
    path = str(tmp_path / "runs.jsonl")
    with caplog.at_level(logging.WARNING, logger="daskflow.serve"):
        runs = job.serve(cron="0 * * * *", tz="UTC", parameters={"path": path},
                         cluster="sync", catchup=catchup, overlap="queue",
                         limit=len(expected), state_dir=state_dir, clock=woke_at_13_30(state_dir))
    assert [r.scheduled_for for r in runs] == expected
    missed = [r.getMessage() for r in caplog.records if "were missed" in r.getMessage()]
    if catchup == "all":
        assert missed == []
    else:
        assert missed and missed[0].startswith(
            f"{3 if catchup == 'none' else 2} fire(s) of flow 'job' were missed")


def test_a_restart_neither_reruns_nor_loses_a_fire(tmp_path, state_dir):
    path = str(tmp_path / "runs.jsonl")
    kwargs = dict(cron="0 * * * *", tz="UTC", parameters={"path": path}, cluster="sync",
                  catchup="all", overlap="queue", state_dir=state_dir)
    first = job.serve(limit=1, clock=woke_at_13_30(state_dir), **kwargs)
    assert [r.scheduled_for for r in first] == [at(2026, 11, 23, 11)]
    with open(ServeState(state_dir, "job").path) as f:
        assert json.load(f)["last_fire"] == "2026-11-23T11:00:00+00:00"  # 12:00 still owed
    # the process restarts at 13:40: the fires owed are 12:00 and 13:00, once
    again = job.serve(limit=2, clock=FakeClock(at(2026, 11, 23, 13, 40)), **kwargs)
    assert [r.scheduled_for for r in again] == [at(2026, 11, 23, 12), at(2026, 11, 23, 13)]
    third = job.serve(limit=1, clock=FakeClock(at(2026, 11, 23, 13, 41)), **kwargs)
    assert [r.scheduled_for for r in third] == [at(2026, 11, 23, 14)]


def test_bad_options_are_clear_errors(state_dir):
    with pytest.raises(df.ScheduleError, match="exactly one of cron= .* and interval="):
        job.serve(parameters={"path": "x"}, state_dir=state_dir)
    with pytest.raises(df.ScheduleError, match="catchup='some' must be one of none, latest, all"):
        job.serve(interval=1, catchup="some", parameters={"path": "x"}, state_dir=state_dir)
    with pytest.raises(df.ScheduleError, match="unknown time zone 'Europe/Pariss'"):
        job.serve(cron="@hourly", tz="Europe/Pariss", parameters={"path": "x"},
                  state_dir=state_dir)
    with pytest.raises(df.ParameterError, match="path"):
        job.serve(interval=1, state_dir=state_dir)
    assert not os.path.exists(state_dir)  # nothing was started


def test_parameters_by_name_reach_args_and_kwargs(state_dir):
    """serve(parameters=) takes a flow's parameters as a run records them:
    the *args name a list, other names the **kwargs."""
    pack = df.task(lambda *values, **named: (values, named), name="pack")

    @df.flow
    def variadic(*xs: int, **named):
        return pack(*xs, **named)

    runs = variadic.serve(interval=1, limit=1, parameters={"xs": [1, 2], "k": 3},
                          cluster="sync", state_dir=state_dir,
                          clock=FakeClock(at(2026, 11, 23, 12)))
    assert runs[0].result() == ((1, 2), {"k": 3})
    assert runs[0].parameters == {"xs": (1, 2), "named": {"k": 3}}
    with pytest.raises(df.ParameterError, match=r"value 0 of \*xs of flow 'variadic' must be int"):
        variadic.serve(interval=1, parameters={"xs": ["a"]}, state_dir=state_dir + "-2")


# -- on the wall clock, on a real cluster ------------------------------------------------------


def test_interval_one_second_three_runs_on_a_cluster(client, tmp_path, state_dir):
    path = str(tmp_path / "runs.jsonl")
    t0 = time.time()
    runs = job.serve(interval=1, limit=3, parameters={"path": path}, cluster=client,
                     state_dir=state_dir)
    assert len(runs) == 3 and all(r.state.is_completed() for r in runs)
    assert all(r.cluster.startswith("scheduler at tcp://") for r in runs)
    starts = [s for s, _ in spans(path)]
    assert starts[0] - t0 < 1.0  # the first run starts at once
    assert [round(b - a) for a, b in zip(starts, starts[1:])] == [1, 1]


def test_a_server_on_an_address_opens_it_again_after_losing_it(processes, tmp_path, state_dir,
                                                              caplog):
    """The scheduler dies and the server's client gives up reconnecting: the
    runs meanwhile crash, and once the scheduler is back the next fire opens
    a new connection instead of crashing every run from then on."""
    import dask

    caplog.set_level(logging.INFO, logger="daskflow")
    scheduler = processes.start_scheduler()
    processes.start_worker("--no-nanny")
    port = processes.address.rsplit(":", 1)[1]
    path = str(tmp_path / "runs.jsonl")
    killed: list = []

    class Chaos:
        """The wall clock; after the first run, kills the scheduler, waits for
        the client to give up, and starts a scheduler on the same port."""

        def now(self):
            return dt.datetime.now(UTC)

        def sleep(self, seconds):
            time.sleep(seconds)
            first_ended = any("Completed in" in r.getMessage() for r in caplog.records)
            if os.path.exists(path) and first_ended and not killed:
                killed.append(True)
                os.killpg(scheduler.pid, signal.SIGKILL)
                time.sleep(4)  # past the client's 2 s reconnect timeout: it closes
                processes.start_scheduler(port)
                processes.start_worker("--no-nanny")

    with dask.config.set({"daskflow.connect-timeout": "2s"}):  # also the reconnect timeout
        runs = job.serve(interval=0.5, limit=4, parameters={"path": path},
                         cluster=processes.address, state_dir=state_dir, clock=Chaos())
    assert killed
    assert runs[0].state.is_completed() and runs[-1].state.is_completed(), \
        [r.state for r in runs]
    assert any("opening it again" in r.getMessage() for r in caplog.records)
    assert len(spans(path)) >= 2


SERVED = textwrap.dedent("""
    import time
    import daskflow as df

    @df.task
    def tick(path):
        with open(path, "a") as f:
            f.write(f"{time.time()}\\n")

    @df.flow
    def ticker(path: str):
        tick(path)
""")


def ticks(path) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.read().split())


def test_cli_serve_holds_the_lock_and_ends_on_interrupt(tmp_path, state_dir):
    flow_file, path = tmp_path / "ticker.py", str(tmp_path / "ticks")
    flow_file.write_text(SERVED)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskflow.cli", "serve", f"{flow_file}:ticker", "--interval",
         "0.5", "--cluster", "sync", "--param", f"path={path}", "--state-dir", state_dir],
        env=dask_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while ticks(path) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        # a second server of the same flow and state folder is refused
        with pytest.raises(df.ScheduleError, match=rf"already served .*\(by pid {proc.pid}\)"):
            df.flow(job.fn, name="ticker").serve(interval=1, parameters={"path": path},
                                                 cluster="sync", state_dir=state_dir)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    with open(os.path.join(state_dir, "ticker.json")) as f:
        assert json.load(f)["last_fire"]
    # the lock went with the process: the flow can be served again
    runs = df.flow(job.fn, name="ticker").serve(interval=1, limit=1, parameters={"path": path},
                                                cluster="sync", state_dir=state_dir)
    assert len(runs) == 1


def test_cli_serve_usage_errors(tmp_path):
    flow_file = tmp_path / "ticker.py"
    flow_file.write_text(SERVED)
    cmd = [sys.executable, "-m", "daskflow.cli", "serve", f"{flow_file}:ticker"]
    both = subprocess.run(cmd + ["--param", "path=x"], env=dask_env(), capture_output=True,
                          text=True, timeout=60)
    assert both.returncode == 2 and "give one of --cron" in both.stderr
    bad = subprocess.run(cmd + ["--cron", "0 * * *", "--param", "path=x"], env=dask_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "has 4 fields" in bad.stderr


def test_a_cluster_it_starts_is_kept_between_runs_and_closed(tmp_path, state_dir):
    path = str(tmp_path / "runs.jsonl")
    spec = df.clusters.Local(n_workers=1, threads_per_worker=1, dashboard_address=":0")
    runs = job.serve(interval=0.5, limit=2, parameters={"path": path}, cluster=spec,
                     state_dir=state_dir)
    assert [r.state.is_completed() for r in runs] == [True, True]
    assert runs[0].cluster == runs[1].cluster  # one scheduler for both runs
    assert runs[0].cluster.startswith("LocalCluster at tcp://")
    from distributed import Client

    address = runs[0].cluster.split(" at ")[1].split()[0]
    with pytest.raises(OSError):
        Client(address, timeout=1)  # closed when serve returned
