"""Prefect 3's ``get_run_logger``: the task run's logger in a task, the flow
run's in a flow body (records reach this process's console either way)."""

from __future__ import annotations

import logging
from typing import Any

import daskflow as df
from daskflow.define.build import current_builder


def get_run_logger(context: Any = None, **kwargs: Any) -> logging.LoggerAdapter:
    """The run's logger: in a running task its ``df.get_run_logger()``; in a
    flow body the flow run's (``daskflow.run``); elsewhere
    ``MissingContextError``, as Prefect raises."""
    try:
        return df.get_run_logger()
    except df.MissingContextError:
        builder = current_builder()
        if builder is None:
            raise df.MissingContextError(
                "get_run_logger() was called outside a flow or task run; call it inside a "
                "@flow or @task body, or use logging.getLogger(...)") from None
    return logging.LoggerAdapter(logging.getLogger("daskflow.run"), {
        "daskflow_task": f"flow {builder.flow_name}", "daskflow_run": builder.run_id or ""})
