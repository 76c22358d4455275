"""Flows: a function whose body is built once into task nodes, then run.

``flow.run(**params, cluster=...)`` validates the parameters against the
function's signature and type hints, builds the body (no task runs), and
hands the nodes to the runner.  A flow called inside another flow's body is
built into the same graph, its task names prefixed with its own name.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from daskflow import runner, signals
from daskflow.build import Builder, Node, Ref, current_builder
from daskflow.exceptions import FlowDefinitionError, ParameterError
from daskflow.flowrun import FlowRun, flow_state
from daskflow.graph import Compiler, as_keys, new_token, no_gc
from daskflow.states import State, StateType
from daskflow.taskrun import RunInfo

R = TypeVar("R")


class Flow(Generic[R]):
    """A workflow: its body calls tasks, and each run compiles to a Dask graph.

    Parameters
    ----------
    fn : callable
        The flow body; its parameters are the flow's parameters.
    name : str, optional
        Defaults to the function's name.
    cluster : optional
        The default ``cluster=`` of its runs (see :func:`daskflow.runner.open_backend`).
    scatter : bool
        Scatter large parameters and constants before submitting (default True).

    >>> import daskflow as df
    >>> @df.task
    ... def double(x):
    ...     return 2 * x
    >>> @df.flow
    ... def doubles(xs: list = [1, 2, 3]):
    ...     return double.map(xs)
    >>> doubles(cluster="sync")
    [2, 4, 6]
    """

    def __init__(self, fn: Callable[..., R], *, name: str | None = None,
                 cluster: Any = None, scatter: bool = True) -> None:
        if not callable(fn):
            raise FlowDefinitionError(f"@flow needs a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "flow"))
        self.signature = inspect.signature(fn)
        for reserved in ("cluster", "scatter"):
            if reserved in self.signature.parameters:
                raise FlowDefinitionError(
                    f"flow {self.name!r} has a parameter named {reserved!r}, which daskflow "
                    f"reserves for the run option {reserved}=; rename it"
                )
        runner.check_cluster(cluster)
        self.cluster = cluster
        self.scatter = bool(scatter)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    # -- parameters and build --------------------------------------------------
    def bind(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Check parameters against the signature and type hints; apply defaults."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as err:
            names = ", ".join(self.signature.parameters) or "none"
            raise ParameterError(
                f"flow {self.name!r}: {err}; its parameters are: {names}") from None
        bound.apply_defaults()
        params = dict(bound.arguments)
        hints = _hints(self.fn)
        for pname, value in params.items():
            hint = hints.get(pname)
            kind = self.signature.parameters[pname].kind
            if hint is None or kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if not isinstance(value, Ref) and not _matches(value, hint):
                raise ParameterError(
                    f"parameter {pname!r} of flow {self.name!r} must be {_hint_name(hint)}, "
                    f"got {type(value).__name__} {value!r:.60}")
        return params

    def build(self, params: dict[str, Any]) -> tuple[Builder, Any]:
        """Run the body once with a builder active; return it and the body's return value."""
        with no_gc(), Builder(self.name) as builder:
            returned = self.fn(**params)
        return builder, returned

    # -- running ------------------------------------------------------------------
    def __call__(self, *args: Any, cluster: Any = None, scatter: bool | None = None,
                 **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is not None:
            if cluster is not None:
                raise FlowDefinitionError(
                    f"flow {self.name!r} is called inside another flow, so it shares that "
                    "flow's cluster; remove cluster= from the nested call")
            params = self.bind(*args, **kwargs)
            with builder.nested(self.name):
                return self.fn(**params)
        return self.run(*args, cluster=cluster, scatter=scatter, **kwargs).result()

    def run(self, *args: Any, cluster: Any = None, scatter: bool | None = None,
            **kwargs: Any) -> FlowRun:
        """Run the flow and return its :class:`FlowRun`; never raises for task errors.

        ``cluster=`` says where (see :func:`daskflow.runner.open_backend`);
        ``scatter=False`` keeps large constants in the graph for this run.
        """
        if current_builder() is not None:
            raise FlowDefinitionError(
                f"{self.name}.run() was called inside a flow body; call {self.name}(...) "
                "to nest it instead")
        cluster = self.cluster if cluster is None else cluster
        runner.check_cluster(cluster)
        params = self.bind(*args, **kwargs)
        builder, returned = self.build(params)
        return _execute(self.name, params, builder, returned, cluster,
                        self.scatter if scatter is None else scatter)

    def visualize(self, *args: Any, filename: str | None = None, format: str | None = None,
                  **kwargs: Any) -> Any:
        """The flow's task graph as a ``graphviz.Digraph`` (rendered to ``filename`` if given)."""
        from daskflow.visualize import to_graphviz

        builder, returned = self.build(self.bind(*args, **kwargs))
        return to_graphviz(self.name, builder.nodes, _returned_nodes(returned),
                           filename=filename, format=format)

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(name=..., cluster=...)``."""
    if fn is None:
        return lambda f: Flow(f, **options)
    return Flow(fn, **options)


# -- execution ------------------------------------------------------------------


def _execute(name: str, params: dict[str, Any], builder: Builder, returned: Any,
             cluster: Any, scatter: bool = True) -> FlowRun:

    run_id = new_token()
    run = RunInfo(name, run_id, _context_parameters(params))
    compiler = Compiler(builder.nodes, run, token=run_id)
    returned_nodes = _returned_nodes(returned)
    runner.setup_logging()
    log = runner.flow_logger(name, run_id)
    with runner.open_backend(cluster) as backend:
        start = runner.now()
        log.info("run %s started on %s (%d nodes)", run_id, backend.description,
                 len(builder.nodes))
        try:
            compiler.check_pickle = not isinstance(backend, runner.SyncBackend)
            if scatter:
                _scatter(builder, compiler, backend, log)

            def keep() -> set[Any]:
                held = compiler.needed_later()
                for node in returned_nodes:
                    held.update(as_keys(compiler.keys.get(node.index)))
                return held

            try:
                backend.run_stages(compiler, keep)
            except BaseException:
                ended = backend.cancel(run_id)
                backend.pop_states(run_id)
                log.warning("run %s interrupted; its tasks were cancelled and %d open "
                            "resource(s) cleaned up", run_id, len(ended))
                raise
            raw = backend.pop_states(run_id)
            returned_keys = [k for n in returned_nodes for k in as_keys(compiler.keys.get(n.index))]
            gathered = backend.gather(returned_keys)
            errors = backend.errors()
        finally:
            backend.release()
        description = backend.description
    flow_run = _assemble(name, run_id, params, compiler, builder, raw, returned, gathered,
                         errors, start, description)
    log.info("%s", flow_run.summary().splitlines()[0])
    return flow_run


def _scatter(builder: Builder, compiler: Compiler, backend: Any,
             log: logging.LoggerAdapter) -> None:
    """Scatter the large constants of the build and point the compiler at their keys."""
    from daskflow import config, scatter

    found = scatter.plan(builder.nodes, config.bytes_setting("scatter.threshold"))
    if not found:
        return
    keys = backend.scatter(found.objects, bool(config.get("scatter.broadcast")))
    if keys:
        compiler.scattered = found.keys_by_id(keys)
        log.debug("scattered %s", found.describe())


def _assemble(name: str, run_id: str, params: dict[str, Any], compiler: Compiler,
              builder: Builder, raw: dict[Any, State], returned: Any,
              gathered: dict[Any, State], errors: dict[Any, BaseException],
              start: float, description: str) -> FlowRun:
    crash = next(iter(errors.values()), None)
    states: dict[str, State] = {}
    missing: list[State] = []
    for key in compiler.state_keys:
        state = raw.get(key)
        if state is None:
            label = _label(compiler, key)
            state = State(StateType.CRASHED, task_name=label, exception=crash,
                          message=f"no state was recorded: {crash!r}" if crash else
                          "no state was recorded (the worker running it was lost)")
            missing.append(state)
        states[state.task_name] = state
    reference = [raw.get(k) or states[_label(compiler, k)]
                 for n in _reference_nodes(builder.nodes, _returned_nodes(returned))
                 for k in as_keys(compiler.keys.get(n.index))]
    final = flow_state(reference, missing, list(states.values()))
    final.start = start
    final.end = runner.now()
    value, error = None, None
    if final.is_completed():
        value = _substitute(returned, compiler, gathered)
    else:
        error = final.exception
        if error is None:
            from daskflow.exceptions import FlowRunError

            error = FlowRunError(f"flow run {name!r} {final.name}: {final.message}")
    return FlowRun(name, run_id, params, final, states, value, error, description)


def _label(compiler: Compiler, key: Any) -> str:
    if isinstance(key, tuple):
        return f"{compiler.name_of(key[0])}[{key[1]}]"
    return compiler.name_of(key)


def _returned_nodes(returned: Any) -> list[Node]:
    found: dict[int, Node] = {}

    def walk(v: Any) -> None:
        if isinstance(v, Ref):
            found[v.node.index] = v.node
        elif isinstance(v, (list, tuple, set, frozenset)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(returned)
    return list(found.values())


def _reference_nodes(nodes: list[Node], returned: list[Node]) -> list[Node]:
    """The nodes whose states decide the flow's state.

    The returned nodes if the flow returns refs; otherwise the terminal task
    nodes, where a terminal ``always_run`` task (a cleanup step) also brings
    in its upstream nodes, so that a cleanup that ran does not hide a failure.
    Resource cleanups always count: a resource that failed to end fails the run.
    """
    cleanups = [n for n in nodes if n.kind == "cleanup"]
    if returned:
        return returned + cleanups
    stack = [n for n in nodes if n.downstream == 0 and n.kind in ("task", "cleanup")]
    seen: dict[int, Node] = {}
    while stack:
        node = stack.pop()
        if node.index in seen:
            continue
        seen[node.index] = node
        if node.task.trigger is signals.all_finished:
            stack.extend(node.upstream + node.wait_for)
    return sorted(seen.values(), key=lambda n: n.index)


def _substitute(value: Any, compiler: Compiler, gathered: dict[Any, State]) -> Any:
    if isinstance(value, Ref):
        keys = compiler.keys[value.node.index]
        if isinstance(keys, list):
            return [gathered[k].result() for k in keys]
        return gathered[keys].result()
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(_substitute(v, compiler, gathered) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, compiler, gathered) for k, v in value.items()}
    return value


def _context_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters shipped with every task for ``df.context().parameters``."""
    from dask.sizeof import sizeof
    from dask.utils import format_bytes

    from daskflow import config

    limit = config.bytes_setting("context.max-parameter-size")
    out: dict[str, Any] = {}
    for k, v in params.items():
        size = sizeof(v)
        out[k] = v if size <= limit else f"<{type(v).__name__} of {format_bytes(size)}, not shipped>"
    return out


# -- type hints -------------------------------------------------------------------


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: skip checking
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """A shallow isinstance check that understands Optional, Union, list[int], Literal."""
    if hint is Any or isinstance(hint, TypeVar):
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and origin.__name__ == "UnionType"):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is not None:
        hint = origin
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return True  # PEP 484: an int is acceptable where a float is expected
    if hint is type(None):
        return value is None
    try:
        return isinstance(value, hint)
    except TypeError:
        return True


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint).replace("typing.", "")
