"""Prefect 3's names over daskflow: change one import line.

>>> from daskflow.compat.prefect import flow, task
>>> @task
... def double(x):
...     return 2 * x
>>> @flow
... def doubles(xs: list):
...     return [double(x) for x in xs]     # a task call in a flow returns its value
>>> doubles([1, 2], cluster="sync")
[2, 4]

What maps to what, and what is refused, is in docs/prefect.md ("Coming
from Prefect").  No server is needed: a run's states and logs stream to the
process that runs it.  Submodules mirror Prefect's import paths:
``.tasks`` (``task_input_hash``, ``exponential_backoff``),
``.cache_policies``, ``.futures``, ``.task_runners``, ``.concurrency.sync``,
``.logging``, ``.artifacts``; prefect-dask's names are in
:mod:`daskflow.compat.prefect_dask`.
"""

from __future__ import annotations

from daskflow import allow_failure, exponential_backoff, tags, unmapped
from daskflow.compat.prefect.errors import PrefectFeatureNotSupported, Refused
from daskflow.compat.prefect.flows import Flow, flow
from daskflow.compat.prefect.futures import PrefectFutureList, as_completed, wait
from daskflow.compat.prefect.logging import get_run_logger
from daskflow.compat.prefect.task_runners import DaskTaskRunner, ThreadPoolTaskRunner
from daskflow.compat.prefect.tasks import Task, task, task_input_hash

_SERVER = "it lives on Prefect's server (or Prefect Cloud), and daskflow has no server"

get_client = Refused("get_client()", _SERVER, "read a run's states from my_flow.run(...) (a "
                     "FlowRun) and past runs with `daskflow runs list` / `daskflow runs show`")
deploy = Refused("deploy()", _SERVER, "run flows with `daskflow run file.py:flow --cluster "
                 "...` or my_flow.serve(cron=...)")
serve = Refused("serve(*deployments)", _SERVER, "call my_flow.serve(cron=...) for each flow "
                "(one process each)")
variables = Refused("prefect.variables", _SERVER, "use environment variables or dask.config "
                    "settings")
Variable = variables
blocks = Refused("prefect.blocks", _SERVER, "pass credentials through environment variables "
                 "or dask.config settings, and result_storage= as an fsspec URL")
pause_flow_run = Refused("pause_flow_run()", "a paused run waits for input through the server",
                         "split the flow in two, or wait inside a task")
suspend_flow_run = Refused("suspend_flow_run()", _SERVER, "split the flow in two")
resume_flow_run = Refused("resume_flow_run()", _SERVER, "split the flow in two")

__all__ = [
    "DaskTaskRunner",
    "Flow",
    "PrefectFeatureNotSupported",
    "PrefectFutureList",
    "Task",
    "ThreadPoolTaskRunner",
    "Variable",
    "allow_failure",
    "as_completed",
    "blocks",
    "deploy",
    "exponential_backoff",
    "flow",
    "get_client",
    "get_run_logger",
    "pause_flow_run",
    "resume_flow_run",
    "serve",
    "suspend_flow_run",
    "tags",
    "task",
    "task_input_hash",
    "unmapped",
    "variables",
    "wait",
]
