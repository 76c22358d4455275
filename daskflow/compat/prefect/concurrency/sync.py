"""Prefect 3's ``rate_limit`` and ``concurrency`` context manager.

Prefect's global concurrency limits live on its server (``prefect gcl
create``).  daskflow has no server: its limits are tag concurrency limits,
``concurrency={"github-api": 2}`` on a flow or a run with the tasks tagged
(``@task(tags=["github-api"])``).  As Prefect does for a limit that does
not exist (``strict=False``, its default), ``rate_limit(name)`` and
``with concurrency(name):`` go on without limiting; ``strict=True`` raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from daskflow.compat.prefect.errors import refuse


def _missing(names: Any, what: str, strict: bool) -> None:
    if strict:
        raise refuse(f"{what}({names!r}, strict=True)", "global concurrency and rate limits "
                     "live on Prefect's server", "tag the tasks and give the flow "
                     f"concurrency={{{names!r}: n}} (a tag concurrency limit)")


def rate_limit(names: Any, occupy: int = 1, timeout_seconds: float | None = None,
               strict: bool = False, **kwargs: Any) -> None:
    """Go on at once: no server holds the limit (``strict=True``: raise)."""
    _missing(names, "rate_limit", strict)


@contextlib.contextmanager
def concurrency(names: Any, occupy: int = 1, timeout_seconds: float | None = None,
                strict: bool = False, **kwargs: Any) -> Iterator[None]:
    """Run the block at once: no server holds the limit (``strict=True``: raise)."""
    _missing(names, "concurrency", strict)
    yield
