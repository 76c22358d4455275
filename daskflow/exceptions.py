"""Every error daskflow raises, rooted at one class.

::

    DaskflowError
    ├── FlowDefinitionError     the flow body misuses a lazy reference or an option
    │   ├── MappingError        a .map with nothing to map over, or over what cannot be mapped
    │   ├── CacheKeyError       a cached task whose key cannot be computed
    │   └── RunNameError        a task_run_name/flow_run_name naming no parameter
    ├── CacheMissError          a stored result found before the run, gone when needed
    ├── ParameterError          unknown, missing or mistyped flow parameter
    ├── ClusterError            a cluster= value that cannot be used or reached
    ├── MissingContextError     get_run_logger()/context()/an artifact outside a run
    ├── ArtifactError           an artifact that cannot be made (a bad key, table or size)
    ├── UIError                 daskflow ui: a run store that does not exist, a port in use
    ├── ResultNotAvailable      asking a state for a result that stayed on the cluster
    ├── WaitTimeout             ref.result(timeout=...) in a flow body: the task is not done
    ├── TaskTimeoutError        a task attempt ran longer than its timeout
    ├── FlowTimeoutError        a flow run ran longer than its timeout (it ends TimedOut)
    ├── ResourceError           a resource whose cleanup could not be run
    ├── ConcurrencyLimitError   a tag limit that differs from the one the scheduler holds
    ├── FlowRunError            a flow run ended without a state for a task (crash)
    ├── UnpicklableResultError  a task result that Dask had to move could not be pickled
    ├── RemoteTaskError         stands in for a task's exception that cannot travel
    ├── ShellError              a df.shell command exited non-zero or timed out
    ├── ScheduleError           flow.serve(): a bad schedule, or the flow is served already
    └── NotifyError             a notification that could not be delivered (logged, never raised by hooks)

Errors raised by the user's own tasks are not wrapped: ``run.result()``
re-raises the task's exception itself, unless it cannot be pickled or
unpickled, in which case a ``RemoteTaskError`` carries its type name,
message and traceback text.
"""

from __future__ import annotations


class DaskflowError(Exception):
    """Root of every error raised by daskflow itself."""


class FlowDefinitionError(DaskflowError):
    """The flow body uses a lazy task reference or an option incorrectly."""


class MappingError(FlowDefinitionError):
    """A ``.map`` call over arguments that cannot be mapped together."""


class CacheKeyError(FlowDefinitionError):
    """A cached task whose key cannot be computed (an argument with no
    deterministic encoding, or a ``cache_key`` that returned no str)."""


class RunNameError(FlowDefinitionError):
    """A ``task_run_name`` or ``flow_run_name`` template naming a field that is
    not a parameter, or a run name function that returned no str."""


class CacheMissError(DaskflowError):
    """A stored result found before the run that could not be read when needed."""


class ParameterError(DaskflowError, TypeError):
    """A flow was called with unknown, missing or mistyped parameters."""


class ClusterError(DaskflowError):
    """A ``cluster=`` value that daskflow cannot use or reach."""


class MissingContextError(DaskflowError, RuntimeError):
    """A run-time helper was called outside a running task."""


class ArtifactError(DaskflowError, ValueError):
    """An artifact that cannot be made: a key that is not lowercase letters,
    numbers and dashes, a table of no known shape, or one too large to travel."""


class UIError(DaskflowError):
    """``daskflow ui`` cannot serve: its run store does not exist, or its port
    cannot be listened on (in use)."""


class ResultNotAvailable(DaskflowError):
    """The result of a task stayed on the cluster and was released."""


class WaitTimeout(DaskflowError, TimeoutError):
    """``ref.result(timeout=...)`` or ``ref.wait`` in a flow body timed out
    before the task ended (the task goes on running)."""


class TaskTimeoutError(DaskflowError, TimeoutError):
    """A task attempt exceeded its ``timeout``."""


class FlowTimeoutError(DaskflowError, TimeoutError):
    """A flow run exceeded its ``timeout``: its tasks were cancelled and its
    resources cleaned up (the run's state is Failed, named TimedOut)."""


class ResourceError(DaskflowError):
    """The cleanup of a resource could not be run."""


class ConcurrencyLimitError(DaskflowError):
    """A tag concurrency limit cannot be used (another limit holds on the scheduler)."""


class NotifyError(DaskflowError):
    """A notification hook that cannot be made (no URL, a bad template) or delivered."""


class ScheduleError(DaskflowError):
    """A schedule that cannot be served: a bad cron expression, interval or
    policy, or a flow already served from the same state folder."""


class FlowRunError(DaskflowError):
    """A flow run ended abnormally (a worker crash, a cancelled run)."""


class UnpicklableResultError(DaskflowError):
    """A task's result could not be serialized when Dask had to move it."""


class RemoteTaskError(DaskflowError):
    """A task's exception that could not be pickled or unpickled, described.

    ``type_name``, ``message`` and ``remote_traceback`` are those of the
    original exception.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str | None = None) -> None:
        super().__init__(type_name, message, remote_traceback)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message} (the original exception could not travel)"


class ShellError(DaskflowError):
    """A ``df.shell`` command exited with a non-zero code (or ran out of time).

    ``exit_code`` is the command's exit code (negative: killed by that
    signal); ``stderr`` holds its last lines of standard error.
    """

    def __init__(self, message: str, exit_code: int | None = None, stderr: str = "") -> None:
        super().__init__(message, exit_code, stderr)
        self.message = message
        self.exit_code = exit_code
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message
