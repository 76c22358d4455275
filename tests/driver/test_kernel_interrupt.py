"""A kernel interrupt during a run on a temporary LocalCluster, in a real
Jupyter kernel: a KeyboardInterrupt every time, one line saying what was
cleaned up, no process left, and the next cell runs a flow at once."""

from __future__ import annotations

import os
import queue
import time

import pytest
from conftest import dask_env

SETUP = '''
import os, time, psutil
import daskflow as df

@df.task
def long_task(marker):
    open(marker, "w").close()
    time.sleep(120)

@df.flow
def long_flow(marker: str):
    return long_task(marker)

@df.task
def inc(x):
    return x + 1

@df.flow
def quick():
    return inc.map(range(3))

def leftovers():
    """Processes of this kernel other than multiprocessing's resource tracker."""
    return [p.pid for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())]
'''


def _execute(kc, code: str, timeout: float = 120, on_start=None) -> dict:
    """Run ``code``; return its error (if any), streams and result."""
    msg_id = kc.execute(code)
    out = {"error": None, "stdout": "", "stderr": "", "result": None}
    deadline = time.monotonic() + timeout
    started = False
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no answer from the kernel within {timeout}s: {out}"
        # While waiting to interrupt, look for the start often: the kernel is
        # silent while the task runs.
        poll = 1 if on_start is None or started else 0.05
        try:
            msg = kc.get_iopub_msg(timeout=min(remaining, poll))
        except queue.Empty:
            if on_start is not None and not started and on_start():
                started = True
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out[content["name"]] += content["text"]
        elif kind == "error":
            out["error"] = content["ename"]
        elif kind == "execute_result":
            out["result"] = content["data"].get("text/plain")
        elif kind == "status" and content["execution_state"] == "idle":
            return out
        if on_start is not None and not started and on_start():
            started = True


@pytest.mark.timeout(600)
def test_kernel_interrupt_is_a_keyboard_interrupt_ten_times_out_of_ten(tmp_path):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**dask_env(), "DASKFLOW_PROGRESS": ""}, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        assert _execute(kc, SETUP)["error"] is None
        for attempt in range(10):
            marker = str(tmp_path / f"started-{attempt}")

            def interrupt_once_started(marker=marker):
                if os.path.exists(marker):
                    km.interrupt_kernel()
                    return True
                return False

            out = _execute(kc, f"long_flow({marker!r})", on_start=interrupt_once_started)
            assert out["error"] == "KeyboardInterrupt", (attempt, out)
            assert "CommClosedError" not in out["stderr"] + out["stdout"], (attempt, out)
            lines = [line for line in (out["stdout"] + out["stderr"]).splitlines()
                     if "interrupted" in line]
            assert len(lines) == 1 and "cancelled" in lines[0], (attempt, out)
            check = _execute(kc, "leftovers()")
            assert check["result"] == "[]", (attempt, check)
            again = _execute(kc, "quick()")
            assert again["error"] is None and again["result"] == "[1, 2, 3]", (attempt, again)
    finally:
        kc.stop_channels()
        # now=True: a graceful shutdown would wait 2.5 s for ipykernel to end
        # multiprocessing's resource tracker (its child, which ignores
        # SIGTERM), then terminate the kernel anyway.
        km.shutdown_kernel(now=True)
