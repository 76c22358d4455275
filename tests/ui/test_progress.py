"""Live progress: the notebook widget (real ipywidgets objects, observed in
process), and the terminal display under a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time

import dask
import pytest
from common_tasks import wait_for_go
from conftest import dask_env

import daskflow as df
from daskflow.core.groups import groups_of
from daskflow.ui import progress


@df.task(retries=1)
def step(i: int, marker: str) -> int:
    time.sleep(0.1)
    if i == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("first attempt fails")
    if i == 4:
        raise ValueError("four")
    return i


@df.task
def after(xs: list) -> int:
    return len(xs)


@df.flow
def stepping(n: int, marker: str):
    return after(df.allow_failure(step.map(range(n), marker=df.unmapped(marker))))


@pytest.fixture
def shown(monkeypatch):
    """Progress as in a notebook; the widgets that would be displayed are kept."""
    pytest.importorskip("ipywidgets")
    views = []
    monkeypatch.setattr(progress, "_in_notebook", lambda: True, raising=False)
    monkeypatch.setattr("daskflow.ui.progress.in_notebook", lambda: True)
    monkeypatch.setattr(progress.WidgetRenderer, "show", lambda self: views.append(self))
    return views


def test_the_widget_bars_move_to_the_final_counts(client, tmp_path, shown):
    seen = []
    run = stepping.submit(6, str(tmp_path / "marker"), cluster=client)
    assert len(shown) == 1
    renderer = shown[0]
    deadline = time.monotonic() + 60
    while "step" not in renderer.bars:  # the bars appear once the run compiled
        assert time.monotonic() < deadline
        time.sleep(0.05)
    bar, label = renderer.bars["step"]
    label.observe(lambda change: seen.append(int(change["new"].split("/")[0])), names="value")
    assert run.wait(60) is not None
    deadline = time.monotonic() + 10
    while run.state.name not in renderer.header.value:  # the tracker's last redraw
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2 * progress.INTERVAL)
    # in proportion: 5 of 6 completed, step[4] failed (not a whole red bar)
    assert "width:83.3%;background:#4caf50" in bar.value
    assert "width:16.7%;background:#e53935" in bar.value
    assert "6/6" in label.value and "1 failed" in label.value and "2 retries" in label.value
    assert seen == sorted(seen)  # it only moved forward
    assert "width:100.0%;background:#4caf50" in renderer.bars["after"][0].value
    assert run.run_id in renderer.header.value
    assert "dashboard" in renderer.header.value


@df.flow
def stepping_then_gate(n: int, marker: str, where: str):
    return after(df.allow_failure(step.map(range(n), marker=df.unmapped(marker)))), \
        wait_for_go(where)


def _view(groups):
    return {g.name: (g.total, dict(+g.counts), g.retries, g.worst) for g in groups}


def test_live_counts_match_a_full_recount(client, tmp_path):
    """A redraw reads only the states received since the previous one; what it
    shows is what a pass over every state would show, mid-run and at the end."""
    run = stepping_then_gate.submit(6, str(tmp_path / "marker"), str(tmp_path),
                                    cluster=client, progress=False)
    deadline = time.monotonic() + 60
    while run._groups is None or not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and not run.done()
        time.sleep(0.05)
    live = run._groups
    while len([s for s in run.states.values() if s.is_final()]) < 7:  # all but the gate
        assert time.monotonic() < deadline
        time.sleep(0.05)
    middle = _view(live())
    assert middle == _view(groups_of(run.states))
    assert middle["step"] == (6, {"COMPLETED": 5, "FAILED": 1}, 2, "FAILED")
    assert middle["wait_for_go"][1] == {"PENDING": 1}
    (tmp_path / "go").touch()
    assert run.wait(60) is not None
    assert _view(live()) == _view(groups_of(run.states))
    assert _view(live())["wait_for_go"] == (1, {"COMPLETED": 1}, 0, "COMPLETED")


def test_progress_false_shows_nothing(client, tmp_path, shown):
    stepping.run(3, str(tmp_path / "marker"), cluster=client, progress=False)
    with dask.config.set({"daskflow.progress": False}):
        stepping.run(3, str(tmp_path / "marker"), cluster=client)
    assert shown == []
    stepping.run(3, str(tmp_path / "marker"), cluster=client)
    assert len(shown) == 1


SCRIPT = textwrap.dedent("""
    import time
    import daskflow as df

    @df.task
    def nap(i):
        time.sleep(0.4)
        return i

    @df.flow
    def naps():
        return nap.map(range(3))

    print("result", naps(cluster="sync"))
""")


def _run_script(tmp_path, on_tty: bool) -> str:
    script = tmp_path / "naps.py"
    script.write_text(SCRIPT)
    if not on_tty:
        out = subprocess.run([sys.executable, str(script)], env=dask_env(),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, str(script)], env=dask_env(),
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(60) == 0
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def test_terminal_progress_only_on_a_tty(tmp_path):
    drawn = _run_script(tmp_path, on_tty=True)
    assert "naps" in drawn and "nap " in drawn and "3/3" in drawn
    assert "\x1b[" in drawn and "█" in drawn
    piped = _run_script(tmp_path, on_tty=False)
    assert "\x1b[" not in piped and "█" not in piped
    assert "INFO" in piped  # the log lines are still there


def test_a_bar_shows_states_in_proportion_and_one_failure_in_fifty(monkeypatch):
    from collections import Counter
    from types import SimpleNamespace

    from daskflow.core.groups import Group

    group = Group("load", 60, Counter({"COMPLETED": 49, "FAILED": 1, "PENDING": 10}))
    assert group.cells(30) == [("COMPLETED", 24), ("FAILED", 1)]  # one cell at least
    assert sum(n for _, n in Group("x", 3, Counter({"COMPLETED": 1, "FAILED": 1,
                                                    "SKIPPED": 1})).cells(2)) == 2
    drawn = []
    monkeypatch.setattr(progress.terminal, "show", lambda r, lines, stream: drawn.append(lines))
    renderer = progress.TerminalRenderer(width=30)
    renderer.color = False
    run = SimpleNamespace(flow_name="etl", state=df.State(df.StateType.RUNNING),
                          dashboard_link=None, page_link=None)
    renderer.update(run, [group], 1.0, final=False)
    assert drawn[-1][1] == f"  load {'█' * 25}{'·' * 5} 50/60 (1 failed)"
