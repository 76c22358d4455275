"""Preloaded into the worker processes of the local clusters daskflow starts.

A Ctrl-C in a terminal, or a Jupyter kernel interrupt, sends SIGINT to the
whole foreground process group, which holds those worker processes too.
They ignore it: the driver catches the interrupt, cancels the run and
closes the cluster, and a worker that died on its own first would only
turn that orderly end into connection errors.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
