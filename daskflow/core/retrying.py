"""Run names and retry shaping, as Prefect 3 spells them: pure values.

Run names (``task_run_name=``, ``flow_run_name=``) are a template string
formatted with the call's parameters (``"load-{day}"``, fields as
:meth:`str.format` takes them: ``{cfg.name}``, ``{xs[0]}``) or a callable
returning a str.  A template is checked against the function's signature
when the task or flow is defined, so a field naming no parameter fails
before anything starts (:class:`~daskflow.exceptions.RunNameError`).

Retry shaping: :func:`exponential_backoff` (Prefect's: a function of the
number of retries that gives one delay per retry), a jitter factor that
spreads each delay as Prefect's ``clamped_poisson_interval`` does, and
``retry_condition_fn(task, task_run, state) -> bool`` deciding per failure.
"""

from __future__ import annotations

import inspect
import math
import numbers
import random
import string
from collections.abc import Callable, Mapping
from typing import Any

from daskflow.exceptions import FlowDefinitionError, RunNameError


def check_run_name(owner: str, option: str, value: Any,
                   signature: inspect.Signature | None) -> Any:
    """A ``task_run_name``/``flow_run_name`` option: None, a callable, or a
    template whose fields all name parameters of ``signature``."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise RunNameError(f"{option} of {owner} must be a template str such as "
                           f"'load-{{day}}' or a function returning a str, got {value!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as err:
        raise RunNameError(f"{option} of {owner} is not a valid template ({err}): "
                           f"{value!r}") from None
    if signature is None:
        return value
    params = signature.parameters
    names = ", ".join(params) or "none"
    for field in fields:
        root = field.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise RunNameError(f"{option} of {owner} ({value!r}) has a positional field "
                               f"{{{field}}}; name a parameter instead ({names})")
        if root not in params:
            raise RunNameError(f"{option} of {owner} ({value!r}) names {root!r}, which is "
                               f"not one of its parameters: {names}")
    return value


def format_run_name(template: Any, parameters: Mapping[str, Any]) -> str:
    """The run name: ``template`` formatted with ``parameters``, or a
    callable's result (called with no argument, or with the parameters
    when it takes one).

    >>> format_run_name("load-{day}", {"day": "mon"})
    'load-mon'
    """
    if callable(template):
        try:
            takes = bool(inspect.signature(template).parameters)
        except (TypeError, ValueError):
            takes = False
        name = template(dict(parameters)) if takes else template()
        if not isinstance(name, str):
            raise RunNameError(f"the run name function {template!r} returned "
                               f"{type(name).__name__} {name!r:.60}, not a str")
        return name
    return str(template).format(**parameters)


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Delays that double with each retry, as Prefect's ``exponential_backoff``:
    a function of the number of retries returning one delay per retry,
    ``backoff_factor * 2 ** i``; give it as ``retry_delay=`` (or
    ``retry_delay_seconds=``).

    >>> exponential_backoff(backoff_factor=10)(4)
    [10.0, 20.0, 40.0, 80.0]
    """
    if isinstance(backoff_factor, bool) or not isinstance(backoff_factor, numbers.Real) \
            or backoff_factor < 0:
        raise FlowDefinitionError(f"backoff_factor must be seconds >= 0, got {backoff_factor!r}")
    factor = float(backoff_factor)

    def retry_backoff(retries: int) -> list[float]:
        return [factor * 2 ** r for r in range(retries)]

    return retry_backoff


def check_jitter(owner: str, factor: Any) -> float | None:
    """``retry_jitter_factor=``: None or a number >= 0."""
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or factor < 0:
        raise FlowDefinitionError(f"retry_jitter_factor of {owner} must be a number >= 0 "
                                  f"(0.5: each delay within +-50%), got {factor!r}")
    return float(factor)


def jittered(delay: float, factor: float | None, rng: random.Random | None = None) -> float:
    """A delay spread by ``factor`` as Prefect's ``clamped_poisson_interval``:
    an exponentially distributed interval of mean ``delay``, clamped to
    ``[delay * (1 - factor), delay * (1 + factor)]`` (at least 0).

    >>> 7.0 <= jittered(10.0, 0.3) <= 13.0
    True
    """
    if not factor or delay <= 0:
        return delay
    low, high = max(0.0, delay * (1 - factor)), delay * (1 + factor)
    cdf = lambda x: 1 - math.exp(-x / delay)  # noqa: E731
    u = (rng or random).uniform(cdf(low), cdf(high))
    return min(max(-delay * math.log(1 - u), low), high)


def check_condition(owner: str, fn: Any) -> Callable[..., bool] | None:
    """``retry_condition_fn=``: None or a callable ``(task, task_run, state) -> bool``."""
    if fn is not None and not callable(fn):
        raise FlowDefinitionError(f"retry_condition_fn of {owner} must be a function "
                                  f"(task, task_run, state) -> bool, got {fn!r}")
    return fn


def alias(owner: str, options: dict[str, Any], ours: str, prefects: str, default: Any) -> Any:
    """The value of an option daskflow spells ``ours`` and Prefect ``prefects``
    (both accepted, not both at once)."""
    a, b = options.get(ours, default), options.get(prefects, default)
    if a is not default and b is not default:
        raise FlowDefinitionError(f"{owner} got both {ours}= and {prefects}= (the same "
                                  "option in daskflow's and Prefect's spelling); give one")
    return b if a is default else a
