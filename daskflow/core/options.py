"""Checks of the options users give, made before anything starts.

Each turns a user's value into what daskflow keeps, or raises an error that
names the option, the value and what to give instead.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from dask.utils import parse_timedelta

from daskflow.exceptions import FlowDefinitionError


def check_options(what: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Refuse unknown keyword options with a did-you-mean, before anything is made.

    >>> check_options("@task", ["retries"], ["retries", "name"])
    """
    accepted = list(accepted)
    unknown = sorted(set(given) - set(accepted))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise FlowDefinitionError(f"{what} got unknown option(s) {', '.join(hints)}; its options "
                              f"are: {', '.join(sorted(accepted))}")


def either_spelling(owner: str, ours: str, value: Any, prefects: Any, default: Any) -> Any:
    """An option given in daskflow's spelling (``value``) or Prefect's
    (``<ours>_seconds``, ``prefects``); both given is an error.  ``value``
    counts as not given when it is None or equal to ``default``.

    >>> either_spelling("task 'a'", "timeout", None, 5, None)
    5
    """
    if prefects is None:
        return value
    if value is not None and value is not default and value != default:
        raise FlowDefinitionError(f"{owner} got both {ours}= and {ours}_seconds= (the same "
                                  "option in daskflow's and Prefect's spelling); give one")
    return prefects


def positive_seconds(value: Any, what: str, error: type[Exception]) -> float:
    """A user's duration (seconds, a ``timedelta`` or a string such as
    ``"10m"``) as a positive number of seconds, or ``error`` saying ``what``
    was wrong.

    >>> positive_seconds("2m", "interval", ValueError)
    120.0
    """
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(parse_timedelta(value, default="seconds"))
        except (ValueError, KeyError):
            raise error(f"{what}={value!r} is not a duration; give seconds, a timedelta "
                        "or a string such as '10m'") from None
    else:
        raise error(f"{what} must be seconds, a timedelta or a string such as '10m', "
                    f"got {type(value).__name__} {value!r}")
    if seconds <= 0:
        raise error(f"{what}={value!r} must be positive")
    return seconds


def check_expiration(owner: str, value: Any) -> float | None:
    """``cache_expiration=`` as seconds (None: never expires)."""
    if value is None:
        return None
    return positive_seconds(value, f"cache_expiration of {owner}", FlowDefinitionError)


def check_limits(owner: str, limits: Any) -> dict[str, int]:
    """A ``concurrency=`` option as ``{tag: limit}``, or a clear error.

    >>> check_limits("flow 'etl'", {"db": 2})
    {'db': 2}
    """
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise FlowDefinitionError(
            f"concurrency= of {owner} must be a dict of tag -> limit, e.g. {{'db': 2}}; "
            f"got {type(limits).__name__} {limits!r:.60}")
    out: dict[str, int] = {}
    for tag, limit in limits.items():
        if not isinstance(tag, str) or not tag:
            raise FlowDefinitionError(
                f"concurrency= of {owner}: tag {tag!r} must be a non-empty string")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise FlowDefinitionError(
                f"concurrency= of {owner}: the limit of tag {tag!r} must be an integer of "
                f"at least 1, got {limit!r}")
        out[tag] = limit
    return out
