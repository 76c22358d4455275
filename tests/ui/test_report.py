"""Run records (to_json / from_json), their logs, and the HTML report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest
from conftest import dask_env

import daskflow as df


@df.task(retries=1)
def part(i: int, marker: str) -> int:
    df.get_run_logger().info("working on part %d", i)
    if i == 3:
        raise ValueError(f"part {i} is corrupt")
    if i == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("first attempt fails")
    return i


@df.task
def total(parts: list) -> int:
    return sum(parts)


@df.flow
def parts_flow(n: int, marker: str):
    done = part.map(range(n), marker=df.unmapped(marker))
    return total(df.allow_failure(done))


@pytest.fixture
def finished(client, tmp_path):
    return parts_flow.run(5, str(tmp_path / "marker"), cluster=client)


def test_the_record_keeps_states_tracebacks_and_logs(finished):
    record = json.loads(finished.to_json())
    assert record["state"]["type"] == "FAILED"
    assert record["states"]["part[1]"]["attempts"] == 2
    assert "ValueError: part 3 is corrupt" in record["states"]["part[3]"]["traceback"]
    assert record["states"]["part[3]"]["worker"].startswith("tcp://")
    messages = [lg["message"] for lg in record["logs"]]
    assert sum(m.startswith("working on part") for m in messages) == 7  # 5 parts, 2 retried
    assert any("started on" in m for m in messages)  # the driver's own lines too
    assert {lg["task"] for lg in record["logs"]} >= {"parts_flow/part[3]", "flow parts_flow"}


def test_from_json_gives_the_run_back(finished):
    again = df.FlowRun.from_json(finished.to_json())
    assert again.done() and again.state.name == finished.state.name
    assert again.run_id == finished.run_id and again.parameters == finished.parameters
    assert {n: (s.name, s.attempts, s.worker) for n, s in again.states.items()} == {
        n: (s.name, s.attempts, s.worker) for n, s in finished.states.items()}
    assert again.summary() == finished.summary()
    assert again.states["part[2]"].map_index == 2
    assert json.loads(again.to_json()) == json.loads(finished.to_json())
    with pytest.raises(df.FlowRunError, match="not a daskflow run record"):
        df.FlowRun.from_json('{"flow": "x"}')


def test_the_report_is_one_offline_page(finished, tmp_path):
    path = finished.report(str(tmp_path / "run.html"))
    with open(path) as f:
        page = f.read()
    for loads in ("<script", "<link", "src=", "@import", "url("):
        assert loads not in page  # nothing to fetch or run: it opens offline
    svg = ET.fromstring(re.search(r"<svg.*?</svg>", page, re.S).group(0))
    bars = [el for el in svg.iter("{http://www.w3.org/2000/svg}rect") if el.get("class") == "bar"]
    assert len(bars) == len(finished.states) == 6  # one bar per task run (and one per retry)
    fills = sorted(b.get("fill") for b in bars)
    assert fills.count("#d62728") == 2  # part[3] and total(allow_failure) ... failed
    assert "ValueError: part 3 is corrupt" in page
    assert "working on part 4" in page
    assert "<td>n</td><td><code>5</code></td>" in page
    # the same page from the record alone
    again = df.FlowRun.from_json(finished.to_json()).report(str(tmp_path / "again.html"))
    with open(again) as f:
        assert f.read() == page


FLOW_FILE = textwrap.dedent("""
    import daskflow as df

    @df.task
    def half(x):
        if x % 2:
            raise ValueError(f"{x} is odd")
        return x // 2

    @df.flow
    def halves(xs: list):
        return half.map(xs)
""")


def test_cli_run_report_and_report_from_a_record(tmp_path):
    (tmp_path / "flows.py").write_text(FLOW_FILE)
    env = dask_env()
    run = subprocess.run(
        [sys.executable, "-m", "daskflow.cli", "run", "flows.py:halves", "-p", "xs=[2, 3, 4]",
         "--cluster", "sync", "--json", "--report", "direct.html"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr  # one task failed
    assert "report written to direct.html" in run.stderr
    (tmp_path / "run.json").write_text(run.stdout)
    made = subprocess.run([sys.executable, "-m", "daskflow.cli", "report", "run.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and made.stdout.strip().endswith("run.html")
    direct, later = (tmp_path / "direct.html").read_text(), (tmp_path / "run.html").read_text()
    assert direct == later
    assert "ValueError: 3 is odd" in later and later.count("class='bar'") == 3
    bad = subprocess.run([sys.executable, "-m", "daskflow.cli", "report", "flows.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not a run record" in bad.stderr


# -- notebook reprs ---------------------------------------------------------------------------------


def test_the_run_repr_groups_a_map_and_collapses_the_first_failure(finished):
    page = finished._repr_html_()
    assert page.count("<tr>") == 1 + 2  # the header row, one row for the map, one for total
    row = re.search(r"<tr><td>part</td>.*?</tr>", page).group(0)
    assert ">5<" in row and "4 Completed" in row and "1 Failed" in row
    assert f"run <code>{finished.run_id}</code>" in page and "Failed" in page
    assert "<details><summary>first failure: <b>part[3]</b>" in page
    assert "ValueError: part 3 is corrupt" in page
    assert "dashboard</a>" in page  # the session cluster serves one


def test_state_and_cluster_reprs(finished):
    failed = finished.states["part[3]"]._repr_html_()
    assert "<b>part[3]</b>" in failed and "2 attempts" in failed
    assert "<details><summary>traceback</summary>" in failed
    spec = df.clusters.Local(n_workers=2, threads_per_worker=1)._repr_html_()
    assert "<b>Local</b> cluster spec" in spec and "<td>n_workers</td><td><code>2</code>" in spec
    handle = df.clusters.Local(n_workers=1).open()
    assert "new" in handle._repr_html_() and repr(handle).startswith("<Handle Local daskflow-local-")


def test_a_live_run_repr(client, tmp_path):
    @df.task
    def nap(x):
        time.sleep(1)
        return x

    @df.flow
    def napping():
        return nap.map(range(2))

    run = napping.submit(cluster=client)
    try:
        deadline = time.monotonic() + 30
        while not run.state.is_running():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        page = run._repr_html_()
        assert "so far" in page and "Running" in page
    finally:
        run.wait(60)
    assert "so far" not in run._repr_html_()


# -- print() in tasks ------------------------------------------------------------------------------


@df.task(log_prints=True)
def chatty(i: int) -> int:
    print("hello from", i)
    print("to stderr", file=sys.stderr)
    return i


@df.task
def quiet(i: int) -> int:
    print("not logged", i)
    return i


@df.flow
def printing():
    return chatty.map(range(2)), quiet(7)


@pytest.mark.parametrize("where", ["sync", "cluster"])
def test_prints_reach_the_driver_with_log_prints(where, request, capsys):
    import builtins

    before = builtins.print
    cluster = "sync" if where == "sync" else request.getfixturevalue("client")
    run = printing.run(cluster=cluster)
    assert run.result() == ([0, 1], 7)
    # a guest in the process: print is put back once no task with log_prints runs
    assert builtins.print is before
    if where == "cluster":
        wrapped = cluster.run(lambda: hasattr(builtins.print, "__wrapped__"))
        assert wrapped and not any(wrapped.values()), wrapped
    logged = {(lg["task"], lg["message"]) for lg in run.logs}
    assert ("printing/chatty[0]", "hello from 0") in logged
    assert ("printing/chatty[1]", "hello from 1") in logged
    assert ("printing/chatty[0]", "to stderr") in logged  # both streams, as Prefect 3
    assert not any("not logged" in m for _, m in logged)
    if where == "sync":  # in process, the other prints stay where they were going
        out = capsys.readouterr()
        assert "not logged 7" in out.out
        assert "hello from" not in out.out and "to stderr" not in out.err
    print("a print outside any task")
    assert "a print outside any task" in capsys.readouterr().out


def test_the_log_prints_setting(client):
    import dask

    with dask.config.set({"daskflow.logging.log-prints": True}):
        run = printing.run(cluster=client)
    assert any(lg["message"] == "not logged 7" for lg in run.logs)


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (make system-deps installs it)")
def test_the_report_renders_in_a_headless_browser(finished, tmp_path):
    from PIL import Image

    page, shot = tmp_path / "run.html", tmp_path / "run.png"
    finished.report(str(page))
    out = subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800",
         f"--screenshot={shot}", f"file://{page}"],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), out.stderr
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        pixels = [rgb.getpixel((x, y)) for y in range(rgb.height) for x in range(rgb.width)]
        colours = set(pixels)
        green = sum(1 for p in pixels if p == (0x2e, 0x9e, 0x44))
        red = sum(1 for p in pixels if p == (0xd6, 0x27, 0x28))
    assert len(colours) > 50  # not blank
    assert green > 1000 and red > 100  # the timeline's bars and the state badges


def test_retried_attempts_are_bars_of_their_own(finished, tmp_path):
    retried = finished.states["part[1]"]
    assert len(retried.tries) == 2 and retried.tries[0][1] <= retried.tries[1][0]
    assert retried.tries[0][0] == pytest.approx(retried.start)
    with open(finished.report(str(tmp_path / "run.html"))) as f:
        page = f.read()
    svg = ET.fromstring(re.search(r"<svg.*?</svg>", page, re.S).group(0))
    classes = [r.get("class") for r in svg.iter("{http://www.w3.org/2000/svg}rect")]
    assert classes.count("retry") == 2  # part[1] and part[3] each failed once, then retried
    assert classes.count("bar") == 6
    assert "retried attempt" in page
    again = df.FlowRun.from_json(finished.to_json())
    assert again.states["part[1]"].tries == retried.tries


def test_report_pictures_do_not_mislead():
    """A failed run of a microsecond is still a visible bar; long bars are
    labelled; the timeline starts at the run's start, as the log table does;
    ERROR and WARNING rows stand out."""
    import re

    from daskflow.ui.report import render

    record = {
        "flow": "f", "run_id": "r1", "cluster": "sync", "parameters": {},
        "state": {"name": "Failed", "type": "FAILED", "start": 100.0, "end": 110.0},
        "states": {
            "parse[0]": {"name": "Failed", "type": "FAILED", "start": 101.0, "end": 101.000001,
                         "attempts": 1, "worker": None, "message": "bad"},
            "load": {"name": "Completed", "type": "COMPLETED", "start": 102.0, "end": 109.0,
                     "attempts": 1, "worker": None},
        },
        "logs": [{"time": 101.0, "level": "ERROR", "task": "f/parse[0]", "message": "bad"},
                 {"time": 101.5, "level": "INFO", "task": "f/load", "message": "ok"}],
    }
    page = render(record)
    bars = re.findall(r"<rect class='bar' x='([\d.]+)' y='\d+' width='([\d.]+)'", page)
    (x_fail, w_fail), (x_load, w_load) = sorted(bars, key=lambda b: float(b[0]))
    assert float(w_fail) >= 3
    assert float(x_fail) > 220  # 1 s after the run's start, not at the timeline's zero
    assert ">load</text>" in page
    assert "<tr style='background:#fdecea'><td class='num'>+1.00s</td><td>ERROR" in page


def test_the_dashboard_of_a_cluster_that_closed_with_the_run_is_not_a_link(finished, tmp_path):
    spec = df.clusters.Local(n_workers=1, threads_per_worker=1, dashboard_address=":0")
    run = parts_flow.run(2, str(tmp_path / "marker2"), cluster=spec)
    assert run.dashboard_link and run.cluster_closed
    page = _read(run.report(str(tmp_path / "closed.html")))
    assert "dashboard (closed with the run)" in page
    assert f"href='{run.dashboard_link}'" not in page
    assert "closed with the run" in run._repr_html_()
    assert df.FlowRun.from_json(run.to_json()).cluster_closed
    # a client the user keeps: its dashboard stays a link
    assert not finished.cluster_closed
    live = _read(finished.report(str(tmp_path / "open.html")))
    assert "closed with the run" not in live


def _read(path):
    with open(path) as f:
        return f.read()
