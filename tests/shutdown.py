"""Run a driver process on a provider's spec and time how its cluster ends:
the same five scenarios for every provider (normal end, an exception,
SIGINT, SIGTERM, SIGKILL)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

from conftest import TESTS, dask_env

from daskflow import cli
from daskflow.clusters.records import records

SCENARIOS = [("normal", None), ("raise", None), ("wait", signal.SIGINT),
             ("wait", signal.SIGTERM), ("wait", signal.SIGKILL)]
# Python re-raises SIGINT after an uncaught KeyboardInterrupt (status -2).
EXIT_CODES = {"normal": 0, "raise": 1, signal.SIGINT: -2, signal.SIGTERM: 143, signal.SIGKILL: -9}


def label(mode: str, sig: int | None) -> str:
    return mode if sig is None else signal.Signals(sig).name


def run_spec_driver(spec, mode, sig, tmp_path, env=None, start_timeout=120.0):
    """Start the driver; return (info it wrote, exit code, monotonic time of its end or signal)."""
    out = str(tmp_path / f"{mode}-{sig}.json")
    spec_file = str(tmp_path / f"{mode}-{sig}.spec")
    with open(spec_file, "wb") as f:
        pickle.dump(spec, f)
    env = {**dask_env(), "DASK_DASKFLOW__LIFECYCLE__STATE_DIR": records.directory(), **(env or {})}
    with open(str(tmp_path / f"{mode}-{sig}.log"), "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(TESTS, "drivers", "spec_driver.py"),
                                 mode, out, spec_file], env=env, stdout=subprocess.DEVNULL,
                                stderr=log)
    return drive(proc, out, sig, start_timeout, 90, str(tmp_path / f"{mode}-{sig}.log"))


def drive(proc: subprocess.Popen, out: str, sig: int | None, start_timeout: float,
          wait_timeout: float, log: str | None = None) -> tuple[dict, int, float]:
    """Wait for a driver to write ``out`` (what it started), signal it a second
    later if told, and wait for its end; return (info, exit code, monotonic
    time of its end or signal).  The driver is killed if anything goes wrong."""
    try:
        deadline = time.monotonic() + start_timeout
        while not os.path.exists(out):
            if proc.poll() is not None and not os.path.exists(out):
                tail = ""
                if log is not None:
                    with open(log) as f:
                        tail = ":\n" + f.read()[-3000:]
                raise AssertionError(f"the driver exited ({proc.returncode}) before starting "
                                     f"its cluster{tail}")
            assert time.monotonic() < deadline, "the driver did not start its cluster in time"
            time.sleep(0.05)
        with open(out) as f:
            info = json.load(f)
        if sig is not None:
            time.sleep(1.0)  # let the flow run start
            proc.send_signal(sig)
        start = time.monotonic()
        code = proc.wait(timeout=wait_timeout)
        return info, code, start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_record(info, sig):
    """After the driver's end: its record is gone, except after SIGKILL (nothing
    ran in the driver), where it stays, says the cluster is gone, and closes."""
    left = [r for r in records.all() if r["id"] == info["id"]]
    if sig == signal.SIGKILL:
        assert cli.status(left[0]) == "gone"
        assert cli.main(["clusters", "close", info["id"]]) == 0
    else:
        assert left == []
