"""Every error daskflow raises, rooted at one class.

::

    DaskflowError
    ├── FlowDefinitionError     the flow body misuses a lazy reference or an option
    │   └── MappingError        .map over something that cannot be mapped
    ├── ParameterError          unknown, missing or mistyped flow parameter
    ├── ClusterError            a cluster= value that cannot be used or reached
    ├── MissingContextError     get_run_logger()/context() outside a running task
    ├── ResultNotAvailable      asking a state for a result that stayed on the cluster
    ├── TaskTimeoutError        a task attempt ran longer than its timeout
    ├── ResourceError           a resource whose cleanup could not be run
    └── FlowRunError            a flow run ended without a state for a task (crash)

Errors raised by the user's own tasks are not wrapped: ``run.result()``
re-raises the task's exception itself.
"""

from __future__ import annotations


class DaskflowError(Exception):
    """Root of every error raised by daskflow itself."""


class FlowDefinitionError(DaskflowError):
    """The flow body uses a lazy task reference or an option incorrectly."""


class MappingError(FlowDefinitionError):
    """A ``.map`` call over arguments that cannot be mapped together."""


class ParameterError(DaskflowError, TypeError):
    """A flow was called with unknown, missing or mistyped parameters."""


class ClusterError(DaskflowError):
    """A ``cluster=`` value that daskflow cannot use or reach."""


class MissingContextError(DaskflowError, RuntimeError):
    """A run-time helper was called outside a running task."""


class ResultNotAvailable(DaskflowError):
    """The result of a task stayed on the cluster and was released."""


class TaskTimeoutError(DaskflowError, TimeoutError):
    """A task attempt exceeded its ``timeout``."""


class ResourceError(DaskflowError):
    """The cleanup of a resource could not be run."""


class FlowRunError(DaskflowError):
    """A flow run ended abnormally (a worker crash, a cancelled run)."""
