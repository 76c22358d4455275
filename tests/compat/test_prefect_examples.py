"""The examples of Prefect 3's data engineering tutorials and of prefect-dask's
README (examples/from_prefect/), run as their authors wrote them, with only
the import lines changed, against a local stand-in of the GitHub API and of
the NOAA image archive (a small HTTP server on 127.0.0.1; the examples read
its base URL from GITHUB_API_URL / NMME_ARCHIVE_URL, which default to the
real services).

The examples without a ``task_runner`` share the session's cluster: it is
the default ``distributed.Client`` while they run, which is where daskflow
(and so a Prefect-style flow with no task runner) runs when one exists.  One
of them also runs as a script in a process of its own, on the temporary
LocalCluster a flow gets when there is no default Client.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import dask
import pytest
from distributed import Client

import daskflow  # noqa: F401 - its settings are loaded before a test sets some

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "from_prefect"
STARS = {"PrefectHQ/prefect": 17756, "pydantic/pydantic": 21613,
         "huggingface/transformers": 136166}


class FakeServices(BaseHTTPRequestHandler):
    """GitHub's repos, issues (two per page, two pages), issue details and
    comments; the NMME archive's images."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        FakeServices.requests.append(url.path)
        parts = url.path.strip("/").split("/")
        body = self._answer(parts, parse_qs(url.query))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, parts, query):
        base = f"http://{self.headers['Host']}"
        if parts[:1] == ["images"]:
            return b"PNG " + "/".join(parts).encode()
        if parts[:1] != ["repos"] or len(parts) < 3:
            return None
        repo = "/".join(parts[1:3])
        if repo not in STARS:
            return None
        if len(parts) == 3:
            return {"full_name": repo, "stargazers_count": STARS[repo]}
        if len(parts) == 4 and parts[3] == "issues":
            page = int(query.get("page", ["1"])[0])
            return [_issue(repo, n, base) for n in (2 * page - 1, 2 * page)] if page <= 2 else []
        if len(parts) == 5 and parts[3] == "issues":
            return _issue(repo, int(parts[4]), base)
        if len(parts) == 6 and parts[5] == "comments":
            return [{"created_at": "2026-01-01T02:00:00Z"}] if int(parts[4]) % 2 else []
        return None

    def log_message(self, *args):
        pass


def _issue(repo, number, base):
    return {"number": number, "state": "closed" if number <= 1 else "open",
            "created_at": "2026-01-01T00:00:00Z",
            "comments_url": f"{base}/repos/{repo}/issues/{number}/comments"}


@pytest.fixture
def services(cleanup, monkeypatch, tmp_path):  # noqa: F811 - config set after its reset
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServices)
    # shutdown() waits for serve_forever's poll: 0.5 s by default
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("GITHUB_API_URL", base)
    monkeypatch.setenv("NMME_ARCHIVE_URL", base + "/images/")
    monkeypatch.chdir(tmp_path)
    FakeServices.requests.clear()
    with dask.config.set({"daskflow.results.storage": str(tmp_path / "results"),
                          "daskflow.runs.store": str(tmp_path / "runs")}):
        yield base
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def default_client(scheduler_address, cleanup):  # noqa: F811
    with Client(scheduler_address) as client:  # the default Client while it is open
        yield client


def run_example(name: str) -> dict:
    """Run an example as ``python examples/from_prefect/<name>``."""
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_my_data_pipeline(default_client, services, capsys):
    run_example("my_data_pipeline.py")
    out = capsys.readouterr().out
    for repo, stars in STARS.items():
        assert f"{repo}: {stars} stars" in out
    assert sorted(FakeServices.requests) == sorted(f"/repos/{r}" for r in STARS)
    FakeServices.requests.clear()
    run_example("my_data_pipeline.py")  # the second run reads fetch_stats from the cache
    assert f"PrefectHQ/prefect: {STARS['PrefectHQ/prefect']} stars" in capsys.readouterr().out
    assert FakeServices.requests == []


def test_repo_analysis(default_client, services, capsys):
    run_example("repo_analysis.py")
    out = capsys.readouterr().out
    for repo in STARS:
        assert f"Analyzing {repo}..." in out
    # issues 1-4 (the two pages it reads); 1 and 3 have a comment 2 h after creation
    assert out.count("Average response time: 2.0 hours") == 3
    assert out.count("Resolution rate: 25.0%") == 3
    assert FakeServices.requests.count("/repos/PrefectHQ/prefect/issues") == 2  # range(1, 3)
    assert FakeServices.requests.count("/repos/PrefectHQ/prefect/issues/3/comments") == 1


# The README's runner starts a LocalCluster on Dask's default dashboard port;
# when something else on the machine holds it (another suite, a notebook),
# distributed serves the dashboard elsewhere and warns, as it does for users
# (and leaves the socket it tried unclosed: its ResourceWarning is not ours).
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_prefect_dask_readme_with_a_dask_task_runner(services):
    namespace = run_example("nino34_plumes.py")
    files = sorted(p.name for p in Path("data").iterdir())
    assert files == [f"2022{m:02d}.png" for m in range(1, 13)]
    assert Path("data/202203.png").read_bytes().endswith(
        b"/202203" + b"0800/current/images/nino34.rescaling.ENSMEAN.png")
    flow = namespace["download_nino_34_plumes_from_year"]
    paths = flow(2021)  # the returned futures come back as their values
    assert [p.name for p in paths] == [f"2021{m:02d}.png" for m in range(1, 13)]


def test_an_example_as_a_script_on_the_temporary_default_cluster(services, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "DASK_DASKFLOW__LOCAL__N_WORKERS": "1",
        "DASK_DASKFLOW__LOCAL__THREADS_PER_WORKER": "2",
        "DASK_DASKFLOW__RESULTS__STORAGE": str(tmp_path / "results"),
        "DASK_DASKFLOW__RUNS__STORE": str(tmp_path / "runs")}
    out = subprocess.run([sys.executable, str(EXAMPLES / "my_data_pipeline.py")], env=env,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"pydantic/pydantic: {STARS['pydantic/pydantic']} stars" in out.stdout
    assert "LocalCluster" in out.stderr  # the run's log names where it ran
