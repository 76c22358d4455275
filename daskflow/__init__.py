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

from daskflow import artifact, clusters, notify
from daskflow import config as _config  # noqa: F401 - loads daskflow.yaml into dask.config
from daskflow.artifact import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from daskflow.core.retrying import exponential_backoff
from daskflow.core.signals import (
    FAIL,
    SKIP,
    all_failed,
    all_finished,
    all_successful,
    always_run,
    any_failed,
    any_successful,
)
from daskflow.core.states import State, StateType
from daskflow.define.build import allow_failure, unmapped
from daskflow.define.resources import resource, resource_manager
from daskflow.define.tags import tags
from daskflow.define.task import Task, task
from daskflow.define.transactions import transaction
from daskflow.define.waits import as_completed, wait
from daskflow.driver.flowrun import FlowRun
from daskflow.exceptions import (
    ArtifactError,
    CacheKeyError,
    CacheMissError,
    ClusterError,
    ConcurrencyLimitError,
    DaskflowError,
    FlowDefinitionError,
    FlowRunError,
    FlowTimeoutError,
    MappingError,
    MissingContextError,
    NotifyError,
    ParameterError,
    RemoteTaskError,
    ResourceError,
    ResultNotAvailable,
    RunNameError,
    ScheduleError,
    ShellError,
    TaskTimeoutError,
    UIError,
    UnpicklableResultError,
    WaitTimeout,
)
from daskflow.flow import Flow, flow
from daskflow.integrations.shell import shell
from daskflow.worker.context import context, get_run_logger

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

__all__ = [
    "ArtifactError",
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
    "FlowTimeoutError",
    "MappingError",
    "MissingContextError",
    "NotifyError",
    "ParameterError",
    "RemoteTaskError",
    "ResourceError",
    "ResultNotAvailable",
    "RunNameError",
    "SKIP",
    "ScheduleError",
    "ShellError",
    "State",
    "StateType",
    "Task",
    "TaskTimeoutError",
    "UIError",
    "UnpicklableResultError",
    "WaitTimeout",
    "all_failed",
    "all_finished",
    "all_successful",
    "allow_failure",
    "always_run",
    "any_failed",
    "any_successful",
    "artifact",
    "as_completed",
    "clusters",
    "context",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_table_artifact",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "notify",
    "resource",
    "resource_manager",
    "shell",
    "tags",
    "task",
    "transaction",
    "unmapped",
    "wait",
]
