"""``df.shell``: a ready task that runs a shell command on a worker.

Each line the command prints is sent to the run logger as it comes (stdout
at INFO, stderr at WARNING when ``log_stderr``), the last stdout line is the
result (every line with ``return_all=True``), and a non-zero exit fails the
task with :class:`~daskflow.ShellError` carrying the exit code and the last
lines of stderr.  The command runs in a process group of its own: a
``timeout``, a cancelled run, or an interrupt kills the whole group, so no
child is left behind.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any

from daskflow.define.task import Task
from daskflow.exceptions import MissingContextError, ShellError
from daskflow.worker.context import get_run_logger, still_wanted

_TAIL = 20  # lines of stderr kept for the error


def run_shell(command: str, *, env: dict[str, str] | None = None, cwd: str | None = None,
              shell: str = "bash", return_all: bool = False, log_stderr: bool = True,
              timeout: float | None = None) -> Any:
    """Run ``command`` with ``shell -c``; see the module docstring."""
    if not isinstance(command, str) or not command.strip():
        raise ShellError(f"df.shell needs a command string, got {command!r}")
    log = _logger()
    full_env = {**os.environ, **{str(k): str(v) for k, v in env.items()}} if env else None
    try:
        proc = subprocess.Popen([shell, "-c", command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd,
                                env=full_env, start_new_session=True, text=True, bufsize=1,
                                errors="replace")
    except OSError as err:
        raise ShellError(f"could not start {shell!r} for {command!r}: {err}") from err
    out: list[str] = []
    err_tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    lines: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    readers = [threading.Thread(target=_pump, args=(proc.stdout, "out", lines), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, "err", lines), daemon=True)]
    for reader in readers:
        reader.start()

    def drain() -> None:
        # Logged from the task's own thread: that is where the run logger
        # knows its run and its worker (reader threads do not).
        while True:
            try:
                stream, line = lines.get_nowait()
            except queue.Empty:
                return
            if stream == "out":
                out.append(line)
                log.info("%s", line)
            else:
                err_tail.append(line)
                if log_stderr:
                    log.warning("%s", line)

    try:
        code = _wait(proc, timeout, command, drain)
    finally:
        if proc.poll() is None:  # interrupted, cancelled or timed out: end the whole group
            _kill_group(proc)
        for reader in readers:
            reader.join(5)
        drain()
    if code != 0:
        tail = "\n".join(err_tail)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise ShellError(f"command {command!r} {how}" + (f"; last lines of stderr:\n{tail}"
                                                          if tail else ""), code, tail)
    if return_all:
        return out
    return out[-1] if out else None


def _pump(stream: Any, name: str, lines: queue.SimpleQueue) -> None:
    for line in stream:
        lines.put((name, line.rstrip("\n")))
    stream.close()


def _wait(proc: subprocess.Popen, timeout: float | None, command: str, drain: Any) -> int:
    """The exit code; on timeout, or when the task's run was cancelled, kill and raise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        drain()
        try:
            return proc.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
        if deadline is not None and time.monotonic() > deadline:
            _kill_group(proc)
            raise ShellError(f"command {command!r} did not finish within its timeout of "
                             f"{timeout:g}s; its process group was killed", None)
        if not still_wanted():
            _kill_group(proc)
            raise ShellError(f"command {command!r} was stopped: its run was cancelled", None)


def _kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM the command's process group, then SIGKILL what is left after ``grace`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(grace)
            if sig == signal.SIGTERM:  # the leader is gone; its group may not be
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
        except (ProcessLookupError, PermissionError):
            return


def _logger() -> Any:
    try:
        return get_run_logger()
    except MissingContextError:  # called as a plain function, outside a flow
        return logging.getLogger("daskflow.task.shell")


shell: Task = Task(run_shell, name="shell")
"""The ready shell task: ``df.shell("curl -o f.img URL")`` in a flow body."""
