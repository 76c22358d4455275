"""df.notify hooks against a real HTTP server and a real SMTP server (aiosmtpd),
both on 127.0.0.1 in the test process; task hooks post from the workers."""

from __future__ import annotations

import email
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dask
import pytest

import daskflow as df

SECRET_PATH = "/services/T000/B000/s3cr3t-token"


class Receiver:
    """An HTTP server that records each POST and answers with the next status
    of ``statuses`` (the last one repeats)."""

    def __init__(self, statuses=(200,)):
        self.posts: list[dict] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append({"path": self.path, "headers": dict(self.headers),
                                       "json": json.loads(body)})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"
        # shutdown() waits for serve_forever's poll: 0.5 s by default
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def texts(self):
        return sorted(p["json"].get("text", "") for p in self.posts)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def failing_flow(hook, **task_options):
    @df.task(on_failure=[hook], **task_options)
    def boom():
        raise ValueError("the disk is full")

    @df.task(on_completion=[hook])
    def fine():
        return 1

    @df.flow(name="nightly", on_failure=[hook], on_completion=[hook])
    def nightly():
        fine()
        return boom()

    return nightly


def test_webhook_from_a_task_on_a_worker_and_from_the_flow(client, receiver):
    run = failing_flow(df.notify.webhook(receiver.url)).run(cluster=client)
    assert run.state.is_failed()
    # one message for the failed task (posted by its worker), one for the flow
    # (posted by the driver); none for the completed task: only Failed/Crashed
    assert len(receiver.posts) == 2, receiver.posts
    texts = " | ".join(receiver.texts())
    assert "task 'boom' of flow 'nightly' is Failed" in texts
    assert "ValueError: the disk is full" in texts
    assert f"(run {run.run_id})" in texts
    assert all(set(p["json"]) == {"text"} for p in receiver.posts)  # Slack's format
    assert all(p["path"] == SECRET_PATH for p in receiver.posts)


def test_only_template_and_headers(client, receiver):
    hook = df.notify.webhook(receiver.url, only=None, headers={"Authorization": "Bearer x"},
                             template="{state}:{task}:{type}")
    run = failing_flow(hook).run(cluster=client)
    assert run.state.is_failed()
    assert receiver.texts() == ["Completed:fine:Completed", "Failed:None:Failed",
                                "Failed:boom:Failed"]
    assert {p["headers"]["Authorization"] for p in receiver.posts} == {"Bearer x"}


def test_a_template_function_gives_the_whole_body(receiver):
    hook = df.notify.webhook(receiver.url, template=lambda f: {"event": f["state"],
                                                               "flow": f["flow"]})
    failing_flow(hook).run(cluster="sync")
    assert sorted(p["json"]["flow"] for p in receiver.posts) == ["nightly", "nightly"]
    assert {p["json"]["event"] for p in receiver.posts} == {"Failed"}


def test_a_500_is_retried_then_delivered(receiver, caplog):
    receiver.statuses = [500, 503, 200]
    hook = df.notify.webhook(receiver.url, retry_delay=0.05)
    with caplog.at_level(logging.WARNING, logger="daskflow"):
        run = failing_flow(hook).run(cluster="sync")
    assert run.state.is_failed()
    assert len(receiver.posts) == 4  # 2 failures, then the task's message, then the flow's
    retried = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retried) == 2 and "HTTP 500" in retried[0]
    assert SECRET_PATH not in caplog.text  # the URL's path (its secret) is never logged


def test_an_undeliverable_message_is_logged_and_changes_nothing(client, receiver, caplog):
    receiver.statuses = [500]
    hook = df.notify.webhook(receiver.url, retries=2, retry_delay=0.05)

    @df.task(on_completion=[hook])
    def fine():
        return 1

    @df.flow(on_completion=[hook])
    def ok():
        return fine()

    with caplog.at_level(logging.WARNING, logger="daskflow"):
        run = ok.run(cluster=client)
    assert run.state.is_completed() and run.result() == 1  # (only= is Failed/Crashed)
    assert receiver.posts == []
    with caplog.at_level(logging.WARNING, logger="daskflow"):
        hook_all = df.notify.webhook(receiver.url, only=None, retries=2, retry_delay=0.05)
        fine_all = fine.with_options(on_completion=[hook_all])

        @df.flow(on_completion=[hook_all])
        def ok_all():
            return fine_all()

        run = ok_all.run(cluster=client)
    assert run.state.is_completed() and run.result() == 1
    assert len(receiver.posts) == 6  # 3 attempts from the worker, 3 from the driver
    gave_up = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert len(gave_up) == 2  # one forwarded from the worker, one on the driver
    assert any(r.name == "daskflow.task" for r in gave_up)
    assert all("failed 3 time(s)" in r.getMessage() for r in gave_up)


def test_no_url_and_bad_options_are_clear_errors(receiver):
    with pytest.raises(df.NotifyError, match="DASK_DASKFLOW__NOTIFY__WEBHOOK_URL"):
        df.notify.webhook()
    with pytest.raises(df.NotifyError, match="http:// or https://"):
        df.notify.webhook("ftp://example.org/x")
    with pytest.raises(df.NotifyError, match="placeholders can be flow, task"):
        df.notify.webhook(receiver.url, template="{flw} failed")
    with pytest.raises(df.NotifyError, match="recipient addresses"):
        df.notify.email("nobody")
    with dask.config.set({"daskflow.notify.webhook-url": receiver.url}):
        hook = df.notify.webhook()
    failing_flow(hook).run(cluster="sync")
    assert len(receiver.posts) == 2
    assert SECRET_PATH not in repr(hook)


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list = []

    class Keep(Message):
        def handle_message(self, message):
            received.append(message)

    with socket.socket() as s:  # a free port (aiosmtpd's controller needs one given)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with dask.config.set({"daskflow.notify.smtp": {"host": "127.0.0.1", "port": port,
                                                        "from": "flows@example.org"}}):
            yield received
    finally:
        controller.stop()


def test_email_reaches_a_real_smtp_server(client, smtp_server):
    hook = df.notify.email(["ops@example.org", "dev@example.org"])
    run = failing_flow(hook).run(cluster=client)
    assert run.state.is_failed()
    assert len(smtp_server) == 2
    subjects = sorted(m["Subject"] for m in smtp_server)
    assert subjects == ["[daskflow] nightly run Failed", "[daskflow] nightly task boom Failed"]
    msg = smtp_server[0]
    assert msg["From"] == "flows@example.org"
    assert msg["To"] == "ops@example.org, dev@example.org"
    bodies = " ".join(m.get_payload(decode=True).decode() for m in smtp_server)
    assert "ValueError: the disk is full" in bodies
    assert isinstance(msg, email.message.Message)
