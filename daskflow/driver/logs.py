"""The driver's logs: daskflow's console handler, and each run's records kept
on its FlowRun.

Log records of tasks reach the driver through the run's events and are
re-emitted as ``daskflow.task``; the driver's own as ``daskflow.run``.  A
console handler is added to the ``daskflow`` logger only when it has none
(``daskflow.logging.console``): in a notebook INFO goes to the cell's stdout.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from daskflow import config
from daskflow.ui import terminal
from daskflow.ui.notebook import in_notebook

logger = logging.getLogger("daskflow.run")


class _NotebookHandler(logging.Handler):
    """In a notebook, INFO and DEBUG lines go to the cell's stdout (Jupyter
    paints stderr as an error); WARNING and above stay on stderr.  The
    streams are looked up at each record: the kernel swaps them per cell."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - never break logging
            self.handleError(record)


class _ConsoleHandler(logging.StreamHandler):
    """stderr, below the lines of the log and above a live progress display:
    the display is lifted while a record is written, so no line is lost."""

    def emit(self, record: logging.LogRecord) -> None:
        with terminal.above():
            super().emit(record)


def setup_logging() -> None:
    """Set daskflow's log level unless set already, and a console handler if none."""
    root = logging.getLogger("daskflow")
    if root.level == logging.NOTSET:
        root.setLevel(str(config.get("logging.level")).upper())
    if config.get("logging.console") and not root.hasHandlers():
        handler = _NotebookHandler() if in_notebook() else _ConsoleHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            config.get("logging.format"), datefmt="%H:%M:%S",
            defaults={"daskflow_task": "daskflow"}))
        root.addHandler(handler)


_formatter = logging.Formatter()


class RunLogs(logging.Handler):
    """Keeps one run's log records (driver's and tasks') on its FlowRun."""

    def __init__(self, run_id: str, into: Any) -> None:
        super().__init__()
        self.run_id, self.into = run_id, into

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "daskflow_run", None) != self.run_id:
            return
        try:
            entry = {"time": record.created, "level": record.levelname,
                     "task": getattr(record, "daskflow_task", None),
                     "message": record.getMessage()}
            if record.exc_info and not record.exc_text:
                record.exc_text = _formatter.formatException(record.exc_info)
            if record.exc_text:  # logger.exception(...) or exc_info=True
                entry["traceback"] = record.exc_text
            self.into.append(entry)
        except Exception:  # pragma: no cover - never break logging
            self.handleError(record)


def flow_logger(flow_name: str, run_id: str) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logger, {"daskflow_task": f"flow {flow_name}",
                                          "daskflow_run": run_id})
