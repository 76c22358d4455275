"""Notifications: ready-made state hooks that post a message when a task or
a flow run reaches a state.

>>> import daskflow as df
>>> alert = df.notify.webhook("https://hooks.slack.com/services/T0/B0/XXXX")
>>> @df.flow(on_failure=[alert], on_crashed=[alert])
... def etl():
...     ...

Both hooks work as task hooks (called on the worker with ``(task, state)``)
and as flow hooks (called on the driver with ``(flow, run)``).  They send
only for the state names in ``only`` (``("Failed", "Crashed")`` by default),
so one hook can be given to every option.  A notification that cannot be
delivered is tried again a few times with a growing delay, then logged; it
never changes a state nor fails the run.

Secrets stay out of code and logs: the webhook URL can come from the
setting ``daskflow.notify.webhook-url`` (or its environment variable
``DASK_DASKFLOW__NOTIFY__WEBHOOK_URL``), the SMTP server and its
credentials from ``daskflow.notify.smtp.*``; log lines name only the
host.  The settings are read when the hook is made, on the driver, so a
worker needs none of them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from daskflow import config
from daskflow.driver.flowrun import FlowRun
from daskflow.exceptions import NotifyError
from daskflow.worker.context import current_context, task_logger

ONLY = ("Failed", "Crashed")
_FIELDS = ("flow", "task", "state", "type", "message", "run_id", "duration", "dashboard")
log = logging.getLogger("daskflow.notify")


def fields_of(owner: Any, state: Any) -> dict[str, Any]:
    """What a message can say: flow, task (None for a flow), state (its name,
    e.g. "TriggerFailed"), type (its kind, e.g. "Failed"), message, run_id,
    duration (seconds or None), dashboard (link or None)."""
    if isinstance(state, FlowRun):
        run = state
        return {"flow": run.flow_name, "task": None, "state": run.state.name,
                "type": run.state.type.value.title(), "message": run.state.message, "run_id": run.run_id,
                "duration": run.duration, "dashboard": run.dashboard_link}
    ctx = current_context()
    return {"flow": ctx.flow_name if ctx else None,
            "task": state.task_name or getattr(owner, "name", None),
            "state": state.name, "type": state.type.value.title(), "message": state.message,
            "run_id": ctx.flow_run_id if ctx else None,
            "duration": state.duration, "dashboard": ctx.dashboard_link if ctx else None}


def default_text(f: Mapping[str, Any]) -> str:
    """One readable line (Slack renders the ``<link|label>`` as a link)."""
    what = f"task {f['task']!r} of flow {f['flow']!r}" if f["task"] else f"flow {f['flow']!r}"
    text = f"{what} is {f['state']}"
    if f["duration"] is not None:
        text += f" after {f['duration']:.1f}s"
    if f["message"]:
        text += f": {f['message']}"
    if f["run_id"]:
        text += f" (run {f['run_id']})"
    if f["dashboard"]:
        text += f" <{f['dashboard']}|dashboard>"
    return text


class _Notifier:
    """A state hook that sends one message per matching state."""

    kind = "notification"

    def __init__(self, only: Iterable[str] | str | None, template: Any, retries: int,
                 retry_delay: float) -> None:
        if isinstance(only, str):
            only = (only,)
        self.only = None if only is None else frozenset(only)
        if template is not None and not isinstance(template, str) and not callable(template):
            raise NotifyError(f"template= must be a str with {{field}} placeholders or a "
                              f"function of the fields, got {template!r}")
        if isinstance(template, str):
            try:
                template.format(**dict.fromkeys(_FIELDS, ""))
            except (KeyError, IndexError, ValueError) as err:
                raise NotifyError(f"template {template!r} cannot be filled: {err!r}; its "
                                  f"placeholders can be {', '.join(_FIELDS)}") from None
        self.template = template
        if retries < 0 or retry_delay < 0:
            raise NotifyError(f"retries ({retries}) and retry_delay ({retry_delay}) must be >= 0")
        self.retries, self.retry_delay = retries, retry_delay
        self.__name__ = self.__qualname__ = f"notify.{self.kind}"

    def text(self, f: Mapping[str, Any]) -> Any:
        if self.template is None:
            return default_text(f)
        if isinstance(self.template, str):
            return self.template.format(**f)
        return self.template(dict(f))

    def __call__(self, owner: Any, state: Any) -> bool:
        """Send if the state is one of ``only``; True when delivered."""
        f = fields_of(owner, state)
        if self.only is not None and f["state"] not in self.only and f["type"] not in self.only:
            return False
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self.send(f)
                return True
            except Exception as err:
                if attempt == attempts:
                    task_logger(log).error("%s to %s failed %d time(s), giving up: %s: %s", self.kind,
                                    self.where(), attempts, type(err).__name__, err)
                    return False
                delay = self.retry_delay * 2 ** (attempt - 1)
                task_logger(log).warning("%s to %s failed (%s: %s); trying again in %gs", self.kind,
                                  self.where(), type(err).__name__, err, delay)
                time.sleep(delay)
        return False  # pragma: no cover - the loop returns

    def send(self, f: Mapping[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def where(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.__name__} to {self.where()} only={sorted(self.only or ()) or 'all'}>"


class Webhook(_Notifier):
    kind = "webhook"

    def __init__(self, url: str | None, only: Any, template: Any, headers: Mapping[str, str] | None,
                 timeout: float, retries: int, retry_delay: float) -> None:
        url = url or config.get("notify.webhook-url")
        if not url:
            raise NotifyError(
                "df.notify.webhook() needs a URL: pass it, or set daskflow.notify.webhook-url "
                "(environment variable DASK_DASKFLOW__NOTIFY__WEBHOOK_URL) to keep it out "
                "of the code")
        from urllib.parse import urlsplit

        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise NotifyError(f"webhook URL must start with http:// or https:// and name a "
                              f"host, got one starting {str(url)[:12]!r}")
        super().__init__(only, template, retries, retry_delay)
        self.url, self.timeout = str(url), float(timeout)
        self.headers = {"Content-Type": "application/json", **dict(headers or {})}
        self._host = f"{parts.scheme}://{parts.netloc}"  # the path may be the secret

    def where(self) -> str:
        return self._host

    def body(self, f: Mapping[str, Any]) -> dict[str, Any]:
        text = self.text(f)
        return text if isinstance(text, dict) else {"text": str(text)}

    def send(self, f: Mapping[str, Any]) -> None:
        import urllib.request

        data = json.dumps(self.body(f), default=str).encode()
        request = urllib.request.Request(self.url, data=data, headers=self.headers,
                                         method="POST")
        import urllib.error

        try:
            with urllib.request.urlopen(request, timeout=self.timeout):
                pass
        except urllib.error.HTTPError as err:
            err.close()  # it holds the response's connection
            raise NotifyError(f"HTTP {err.code} {err.reason}") from None


class Email(_Notifier):
    kind = "email"

    def __init__(self, to: str | Iterable[str], subject: str | None, sender: str | None,
                 only: Any, template: Any, timeout: float, retries: int,
                 retry_delay: float) -> None:
        super().__init__(only, template, retries, retry_delay)
        self.to = [to] if isinstance(to, str) else list(to)
        if not self.to or not all(isinstance(a, str) and "@" in a for a in self.to):
            raise NotifyError(f"df.notify.email() needs recipient addresses, got {to!r}")
        smtp = dict(config.get("notify.smtp") or {})
        self.host = smtp.get("host") or "localhost"
        self.port = int(smtp.get("port") or 0)
        self.user = smtp.get("user")
        self.password = smtp.get("password")
        self.security = smtp.get("security") or "none"
        if self.security not in ("none", "starttls", "ssl"):
            raise NotifyError(f"daskflow.notify.smtp.security must be none, starttls or "
                              f"ssl, got {self.security!r}")
        self.sender = sender or smtp.get("from") or f"daskflow@{self.host}"
        self.subject = subject or "[daskflow] {flow} {task_or_flow} {state}"
        self.timeout = float(timeout)

    def where(self) -> str:
        return f"smtp://{self.host}:{self.port or 'default'} ({', '.join(self.to)})"

    def send(self, f: Mapping[str, Any]) -> None:
        import smtplib
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["From"], msg["To"] = self.sender, ", ".join(self.to)
        msg["Subject"] = self.subject.format(
            **f, task_or_flow=f"task {f['task']}" if f["task"] else "run")
        text = self.text(f)
        msg.set_content(json.dumps(text, indent=2, default=str) if isinstance(text, dict)
                        else str(text))
        cls = smtplib.SMTP_SSL if self.security == "ssl" else smtplib.SMTP
        with cls(self.host, self.port, timeout=self.timeout) as server:
            if self.security == "starttls":
                server.starttls()
            if self.user:
                server.login(self.user, self.password or "")
            server.send_message(msg)


def webhook(url: str | None = None, *, only: Iterable[str] | None = ONLY,
            template: str | Callable[[dict], Any] | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = 10,
            retries: int = 3, retry_delay: float = 1.0) -> Webhook:
    """A hook that POSTs a JSON message to ``url`` (Slack-compatible by default).

    Parameters
    ----------
    url : str, optional
        Where to post; defaults to the setting ``daskflow.notify.webhook-url``.
    only : state names, optional
        Send for states of these names or kinds only (``"Failed"`` also
        matches ``TriggerFailed``; ``None``: every state the hook is given).
    template : str or callable, optional
        A ``str`` with ``{flow} {task} {state} {message} {run_id} {duration}
        {type} {dashboard}`` placeholders gives the ``"text"``; a function of those
        fields returns the whole JSON body (a dict).
    headers : dict, optional
        Extra HTTP headers (an ``Authorization`` header, say).
    timeout : float
        Seconds one attempt may take.
    retries, retry_delay
        Further attempts after a failure, the first after ``retry_delay``
        seconds, each next one after twice as long.
    """
    return Webhook(url, only, template, headers, timeout, retries, retry_delay)


def email(to: str | Iterable[str], *, subject: str | None = None, sender: str | None = None,
          only: Iterable[str] | None = ONLY, template: str | Callable[[dict], Any] | None = None,
          timeout: float = 10, retries: int = 3, retry_delay: float = 1.0) -> Email:
    """A hook that sends an email through the SMTP server of ``daskflow.notify.smtp``.

    ``subject`` may use the placeholders of ``template`` and
    ``{task_or_flow}``; the body is the default one-line text or the
    ``template``'s.  ``daskflow.notify.smtp`` holds ``host``, ``port``,
    ``user``, ``password``, ``security`` (none, starttls, ssl) and ``from``.
    """
    return Email(to, subject, sender, only, template, timeout, retries, retry_delay)
