"""On a real terminal the live progress never eats a log line: a flow run in a
pseudo-terminal, its screen and scrollback read back through a terminal
emulator (pyte)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time

import pyte
import pytest
from conftest import dask_env

SCRIPT = textwrap.dedent("""
    import time

    import daskflow as df


    @df.task
    def work(i):
        time.sleep(0.03)
        df.get_run_logger().info("line %03d", i)
        return i


    @df.flow
    def logs(n: int = 40):
        return work.map(range(n))


    if __name__ == "__main__":
        cluster = {cluster}
        if {submit}:
            run = logs.submit(cluster=cluster, progress=True)
            run.wait()
        else:
            run = logs.run(cluster=cluster, progress=True)
        print("result", sum(run.result()))
        print("a line printed after the run")
""")


def run_in_a_terminal(script: str, cwd: str, rows: int = 24, cols: int = 100) -> list[str]:
    """Run ``script`` on a pty of ``rows`` x ``cols``; every line of the final
    screen and of its scrollback, top to bottom."""
    master, slave = pty.openpty()
    os.set_inheritable(slave, True)
    env = {**dask_env(), "TERM": "xterm", "COLUMNS": str(cols), "LINES": str(rows)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=slave, stdout=slave,
                            stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    screen = pyte.HistoryScreen(cols, rows, history=10_000)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the pty closed: the script ended
                    break
                if not data:
                    break
                stream.feed(data.replace(b"\n", b"\r\n"))  # the pty's onlcr
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)

    def text(line: dict) -> str:
        return "".join(line[x].data for x in range(cols)).rstrip()

    return [text(line) for line in screen.history.top] + [line.rstrip() for line in screen.display]


@pytest.mark.parametrize("cluster,submit", [
    ("'sync'", False), ("df.clusters.Local(processes=False, n_workers=1)", False),
    ("df.clusters.Local(processes=False, n_workers=1)", True)],
    ids=["sync", "local", "local-submit"])
def test_every_log_line_survives_the_progress_display(tmp_path, cluster, submit):
    """With flow.submit, what the caller prints once run.wait() returned is
    never drawn over: the last redraw happens before the run is done."""
    lines = run_in_a_terminal(SCRIPT.format(cluster=cluster, submit=submit), str(tmp_path))
    logged = [line for line in lines if "logs/work[" in line]
    # every line once (tasks on a cluster's threads may log in any order)
    assert sorted(line[-8:] for line in logged) == [f"line {i:03d}" for i in range(40)], lines
    started = [i for i, line in enumerate(lines) if " started on " in line]
    finished = [i for i, line in enumerate(lines) if "Flow run 'logs'" in line]
    assert len(started) == 1 and len(finished) == 1, lines
    assert started[0] < finished[0]
    # the last block of the display stays, once; no stale block is left behind
    heads = [line for line in lines if line.startswith("logs ")]
    assert len(heads) == 1 and heads[0].startswith("logs Completed"), lines
    assert lines.index("result 780") < lines.index("a line printed after the run"), lines
    assert lines.index(heads[0]) < lines.index("result 780"), lines


def test_a_block_fits_the_terminal(monkeypatch):
    """Each line on one row, and fewer rows than the screen: the cursor goes
    back by rows, so a wrapped line would leave a stale row behind."""
    from daskflow.ui import terminal

    monkeypatch.setenv("COLUMNS", "20")
    monkeypatch.setenv("LINES", "5")
    lines = ["a" * 50, "\x1b[32m" + "█" * 40 + "\x1b[0m tail", *[f"row {i}" for i in range(6)]]
    fitted = terminal._fitted(lines)
    assert len(fitted) == 4 and fitted[-1].startswith("  ... and 5 more")
    assert all(len(terminal._ANSI.sub("", line)) <= 19 for line in fitted)
    assert fitted[1].startswith("\x1b[32m") and fitted[1].endswith("\x1b[0m")
