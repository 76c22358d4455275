"""Artifacts, and the web view of the run store: `daskflow ui` as a real
server process, pages fetched over HTTP and drawn by headless Chromium, and
the runs page mounted in the Dask dashboard of a LocalCluster daskflow
started."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import dask
import pytest
from common_tasks import inc, wait_for_go
from conftest import dask_env

import daskflow as df
from daskflow.driver.history import RunStore

# A 2x2 red PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEklEQVR4nGP4z8DAwMDAxMDAAAAZ"
    "AQL/ltP0TgAAAABJRU5ErkJggg==")


@df.task
def measured(i):
    df.create_markdown_artifact(f"# Part {i}\n**{i * 10}** rows <script>x()</script>",
                                key=f"part-{i}", description="made on a worker")
    df.create_table_artifact([{"part": i, "rows": i * 10}, {"part": i, "note": "second"}],
                             key="rows")
    if i == 0:
        df.create_link_artifact("https://example.com/data", "the data")
        df.create_image_artifact(PNG, key="picture")
    return i


@df.flow
def reported(n: int = 2):
    df.create_markdown_artifact("from the **body**", key="body-note")
    return measured.map(list(range(n)))


@df.flow
def gated(where: str):
    return inc(wait_for_go(where))


@df.flow
def failing():
    return inc("not a number")


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "runs")
    with dask.config.set({"daskflow.runs.store": path, "daskflow.runs.interval": "0.1s"}):
        yield path


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(tmp_path, *args):
    return subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800", *args],
        capture_output=True, text=True, timeout=90)


def _rows(page):
    return re.findall(r"<tr class='run'.*?</tr>", page)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


@pytest.fixture
def ui(store, tmp_path):
    """`daskflow ui` as a server process over the store (with one record in
    it, so that the store exists); its URL; stopped by its pid at the end."""
    reported.run(cluster="sync", progress=False)  # the store exists, a run is in it
    proc = subprocess.Popen([sys.executable, "-m", "daskflow.cli", "ui", "--port", "0",
                             "--store", store], env=dask_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        line = proc.stdout.readline()
        found = re.search(r"at (http://\S+)", line)
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -- artifacts --------------------------------------------------------------------------


def test_artifacts_from_tasks_on_workers_reach_the_record_and_the_report(client, store,
                                                                         tmp_path):
    run = reported.run(cluster=client, progress=False)
    assert run.state.is_completed()
    made = sorted((a["task"] or "body", a["type"], a["key"]) for a in run.artifacts)
    assert made == sorted([("body", "markdown", "body-note"),
                           ("measured[0]", "markdown", "part-0"), ("measured[0]", "table", "rows"),
                           ("measured[0]", "link", None), ("measured[0]", "image", "picture"),
                           ("measured[1]", "markdown", "part-1"), ("measured[1]", "table", "rows")])
    record = RunStore(store).find(run.run_id)
    assert [a["id"] for a in record["artifacts"]] == [a["id"] for a in run.artifacts]
    table = next(a for a in record["artifacts"] if a["type"] == "table" and a["task"] == "measured[1]")
    assert table["data"] == {"columns": ["part", "rows", "note"],
                             "rows": [[1, 10, None], [1, None, "second"]]}
    again = df.FlowRun.from_json(json.dumps(record))
    with open(again.report(str(tmp_path / "r.html")), encoding="utf-8") as f:
        page = f.read()
    assert "Artifacts (7)" in page
    assert "<h3>Part 1</h3>" in page and "<b>10</b> rows" in page
    assert "<script>" not in page and "&lt;script&gt;x()&lt;/script&gt;" in page
    assert "<a href='https://example.com/data'>the data</a>" in page
    assert "<img src='data:image/png;base64," in page
    assert "<td>second</td>" in page
    assert "artifacts (7)" in run._repr_html_()


def test_artifacts_in_process_and_outside_a_run(store):
    run = reported.run(n=1, cluster="sync", progress=False)
    assert {(a["task"], a["type"]) for a in run.artifacts} >= {(None, "markdown"),
                                                               ("measured[0]", "image")}
    again = df.FlowRun.from_json(run.to_json())
    assert again.artifacts == run.artifacts
    with pytest.raises(df.MissingContextError, match="outside a flow run"):
        df.create_markdown_artifact("nobody holds this")
    with pytest.raises(df.ArtifactError, match="lowercase"):
        df.artifact.markdown("x", key="Not OK")
    with pytest.raises(df.ArtifactError, match="different lengths"):
        df.create_table_artifact({"a": [1, 2], "b": [1]})
    with pytest.raises(df.ArtifactError, match="not a PNG"):
        df.create_image_artifact(b"plain bytes")

    @df.flow
    def too_big():
        df.create_markdown_artifact("x" * 2_000_000)

    with pytest.raises(df.ArtifactError, match="over 1000000"):
        too_big(cluster="sync")


# -- daskflow ui ------------------------------------------------------------------------


def test_daskflow_ui_serves_the_store_read_only(ui, store):
    failed = failing.run(cluster="sync", progress=False)
    status, page = _get(ui)
    assert status == 200
    assert page.count("<tr class='run'") == 2
    assert "failing" in page and "reported" in page
    assert "class='spark'" in page and "background:#d62728" in page  # a red Failed badge
    rows = _rows(_get(f"{ui}?state=failed")[1])
    assert len(rows) == 1 and failed.run_id in rows[0]
    rows = _rows(_get(f"{ui}?flow=reported")[1])
    assert len(rows) == 1 and failed.run_id not in rows[0] and "reported" in rows[0]
    status, page = _get(f"{ui}/{failed.run_id[:5]}")  # a prefix is enough
    assert status == 200 and "Failures (1)" in page and "http-equiv='refresh'" not in page
    status, page = _get(f"{ui}/ffffffff")
    assert status == 404 and "No run ffffffff" in page
    request = urllib.request.Request(ui, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 405
    err.value.close()


def test_daskflow_ui_says_what_is_wrong(tmp_path):
    def ui(*args):
        return subprocess.run([sys.executable, "-m", "daskflow.cli", "ui", *args],
                              env=dask_env(), capture_output=True, text=True, timeout=60,
                              cwd=str(tmp_path))

    out = ui("--store", str(tmp_path / "nothing"), "--port", "0")
    assert out.returncode == 2 and "no run store at" in out.stderr
    (tmp_path / "runs").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = ui("--store", str(tmp_path / "runs"), "--port", str(port))
    assert out.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in out.stderr


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (make system-deps installs it)")
def test_the_pages_render_in_a_headless_browser(ui, tmp_path):
    import numpy as np
    from PIL import Image

    failing.run(cluster="sync", progress=False)
    dom = _browser(tmp_path, "--dump-dom", ui).stdout
    assert dom.count("class=\"run\"") == 2 and ">Failed<" in dom and ">Completed<" in dom
    shot = tmp_path / "list.png"
    _browser(tmp_path, f"--screenshot={shot}", ui)
    with Image.open(shot) as img:
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    count = {tuple(int(v) for v in c): int(n) for c, n in zip(colours, counts)}
    assert len(count) > 50  # not blank
    assert count.get((0x2e, 0x9e, 0x44), 0) > 200 and count.get((0xd6, 0x27, 0x28), 0) > 200
    run_id = re.search(r"/daskflow/runs/(\w+)\"", dom).group(1)
    page = _browser(tmp_path, "--dump-dom", f"{ui}/{run_id}").stdout
    assert "Flow run" in page and "Timeline" in page


def test_a_running_runs_page_changes_while_it_runs(client, ui, tmp_path):
    run = gated.submit(str(tmp_path), cluster=client, progress=False)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    page = f"{ui}/{run.run_id}"
    while run.run_id not in _get(ui)[1]:  # its first record: half a second after the start
        assert time.monotonic() < deadline
        time.sleep(0.1)
    going = _browser(tmp_path, "--dump-dom", page).stdout if _chromium() else _get(page)[1]
    assert ">Running<" in going and "http-equiv=\"refresh\"" in going.replace("'", '"')
    assert "wait_for_go" in going and "Timeline" not in going  # counts per task so far
    (tmp_path / "go").touch()
    assert run.wait(60).is_completed()
    status, done = _get(page)
    while "Completed" not in done:  # the record of its end is written as it ends
        assert time.monotonic() < deadline
        status, done = _get(page)
    assert "http-equiv='refresh'" not in done and "Timeline" in done


# -- the dashboard ----------------------------------------------------------------------


def test_the_dashboard_of_a_local_cluster_shows_its_runs(store, tmp_path):
    elsewhere = failing.run(cluster="sync", progress=False)  # in the store, not on it
    with df.clusters.Local(n_workers=1, threads_per_worker=2, processes=False) as client:
        run = gated.submit(str(tmp_path), cluster=client, progress=False)
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists() or run.page_link is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        base = client.dashboard_link.rsplit("/status", 1)[0]
        assert run.page_link == f"{base}/daskflow/runs/{run.run_id}"
        listing = f"{base}/daskflow/runs"
        status, page = _get(listing)
        while run.run_id not in page:
            assert time.monotonic() < deadline
            status, page = _get(listing)
        assert status == 200 and "on this scheduler" in page and "1 going" in page
        assert elsewhere.run_id not in page and ">Running<" in page
        assert "run page" in run._repr_html_()
        (tmp_path / "go").touch()
        assert run.wait(60).is_completed()
        status, page = _get(run.page_link)
        assert status == 200 and "Completed" in page


def test_the_list_reads_an_ended_run_once(store):
    """The list page, reloaded every few seconds, rereads only runs still going."""
    run = failing.run(cluster="sync", progress=False)
    runs = RunStore(store)
    first = runs.summaries(10)
    assert [s["run_id"] for s in first] == [run.run_id]
    assert first[0]["tasks"] == 1 and "states" not in first[0] and "logs" not in first[0]
    with open(runs.path(runs.find(run.run_id)), "w") as f:
        f.write("{damaged")
    assert runs.summaries(10) == first  # read once, kept
    assert RunStore(store).summaries(10) == []  # a new reader skips it


def test_daskflow_run_and_flow_serve_say_where_the_runs_page_is(store, tmp_path, caplog):
    """With a `daskflow ui` kept running (the setting daskflow.ui.url), every
    run links there: `daskflow run` prints it, a served run logs it."""
    env = {**dask_env(), "DASK_DASKFLOW__UI__URL": "http://127.0.0.1:8790/",
           "DASK_DASKFLOW__RUNS__STORE": store}
    out = subprocess.run([sys.executable, "-m", "daskflow.cli", "run",
                          f"{os.path.abspath(__file__)}:reported", "--cluster", "sync"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    run_id = re.search(r"\(([0-9a-f]{8})\) Completed", out.stdout).group(1)
    assert f"page: http://127.0.0.1:8790/daskflow/runs/{run_id}\n" in out.stdout
    with dask.config.set({"daskflow.ui.url": "http://ui.example:8790"}):
        runs = reported.serve(interval=3600, limit=1, cluster="sync",
                              state_dir=str(tmp_path / "serve"))
    page = f"its page: http://ui.example:8790/daskflow/runs/{runs[0].run_id}"
    assert runs[0].page_link == page.split(": ", 1)[1]
    assert any(page in r.getMessage() for r in caplog.records)
    assert f"<a href='{page.split(': ', 1)[1]}'" in runs[0]._repr_html_()


def test_runs_show_lists_the_artifacts(store, capsys):
    from daskflow.cli import main

    run = reported.run(n=1, cluster="sync", progress=False)
    assert main(["runs", "show", run.run_id[:6], "--store", store]) == 0
    out = capsys.readouterr().out.split("--- artifacts ---\n", 1)[1]
    assert "markdown body-note  (flow body)  from the **body**" in out
    assert "table    rows  (measured[0])  2 rows x 3 columns" in out
    assert "link     -  (measured[0])  https://example.com/data" in out
    assert "image    picture  (measured[0])  an image in the record" in out
