"""Notifications: ready-made state hooks that post a message when a task or
a flow run reaches a state (the public face of
:mod:`daskflow.integrations.notify`, where the whole story is told).

>>> import daskflow as df
>>> alert = df.notify.webhook("https://hooks.slack.com/services/T0/B0/XXXX")
"""

from __future__ import annotations

from daskflow.integrations.notify import (
    ONLY,
    Email,
    Webhook,
    default_text,
    email,
    fields_of,
    webhook,
)

__all__ = ["ONLY", "Email", "Webhook", "default_text", "email", "fields_of", "webhook"]
