"""daskflow: Python workflows compiled into Dask graphs.

>>> import daskflow as df
>>> @df.task
... def inc(x):
...     return x + 1
>>> @df.flow
... def incs(xs: list):
...     return inc.map(xs)
>>> incs([1, 2], cluster="sync")
[2, 3]
"""

from __future__ import annotations

from daskflow import clusters, notify
from daskflow import config as _config  # noqa: F401 - loads daskflow.yaml into dask.config
from daskflow.build import allow_failure, unmapped
from daskflow.exceptions import (
    CacheKeyError,
    CacheMissError,
    ClusterError,
    ConcurrencyLimitError,
    DaskflowError,
    FlowDefinitionError,
    FlowRunError,
    MappingError,
    MissingContextError,
    NotifyError,
    ParameterError,
    RemoteTaskError,
    ResourceError,
    ResultNotAvailable,
    ScheduleError,
    ShellError,
    TaskTimeoutError,
    UnpicklableResultError,
)
from daskflow.flow import Flow, flow
from daskflow.flowrun import FlowRun
from daskflow.resources import resource, resource_manager
from daskflow.shell import shell
from daskflow.signals import (
    FAIL,
    SKIP,
    all_failed,
    all_finished,
    all_successful,
    always_run,
    any_failed,
    any_successful,
)
from daskflow.states import State, StateType
from daskflow.task import Task, task
from daskflow.taskrun import context, get_run_logger

__version__ = "0.1.0"

__all__ = [
    "CacheKeyError",
    "CacheMissError",
    "ClusterError",
    "ConcurrencyLimitError",
    "DaskflowError",
    "FAIL",
    "Flow",
    "FlowDefinitionError",
    "FlowRun",
    "FlowRunError",
    "MappingError",
    "MissingContextError",
    "NotifyError",
    "ParameterError",
    "RemoteTaskError",
    "ResourceError",
    "ResultNotAvailable",
    "SKIP",
    "ScheduleError",
    "ShellError",
    "State",
    "StateType",
    "Task",
    "TaskTimeoutError",
    "UnpicklableResultError",
    "all_failed",
    "all_finished",
    "all_successful",
    "allow_failure",
    "always_run",
    "any_failed",
    "any_successful",
    "clusters",
    "context",
    "flow",
    "get_run_logger",
    "notify",
    "resource",
    "resource_manager",
    "shell",
    "task",
    "unmapped",
]
