"""Prefect 3's cache policies, as daskflow's caching understands them.

daskflow keys a cached result on the task, its code (or ``cache_version``)
and its inputs (see :mod:`daskflow.compile.cachekeys`).  So ``INPUTS +
TASK_SOURCE`` is ``cache=True``; ``INPUTS`` alone is ``cache=True`` with a
fixed ``cache_version`` (a change to the code keeps the results);
``NO_CACHE`` and ``DEFAULT`` (Prefect 3's default, which also keys on the
run's id, so nothing is reused across runs) are no caching.  Policies
keyed on things daskflow does not key on (``RUN_ID`` alone,
``FLOW_PARAMETERS``) are refused with a clear error.
"""

from __future__ import annotations

from typing import Any

from daskflow.compat.prefect.errors import refuse


class CachePolicy:
    """A Prefect 3 cache policy: a set of what the key is made of; ``+`` joins two."""

    __slots__ = ("parts",)

    def __init__(self, *parts: str) -> None:
        self.parts = frozenset(parts)

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return CachePolicy(*self.parts, *other.parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CachePolicy) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __repr__(self) -> str:
        return " + ".join(sorted(self.parts)) or "NO_CACHE"

    def options(self) -> dict[str, Any]:
        """daskflow's task options for this policy."""
        parts = set(self.parts)
        if not parts or parts == {"DEFAULT"} or "NO_CACHE" in parts:
            return {"cache": False}
        unknown = parts - {"INPUTS", "TASK_SOURCE"}
        if unknown or "INPUTS" not in parts:
            raise refuse(f"cache_policy={self!r}", "daskflow keys a cached result on its task, "
                         "code and inputs only", "use INPUTS or INPUTS + TASK_SOURCE, or "
                         "cache_key_fn=")
        if "TASK_SOURCE" in parts:
            return {"cache": True}
        return {"cache": True, "cache_version": "prefect-inputs"}


INPUTS = CachePolicy("INPUTS")
TASK_SOURCE = CachePolicy("TASK_SOURCE")
NO_CACHE = CachePolicy("NO_CACHE")
DEFAULT = CachePolicy("DEFAULT")
RUN_ID = CachePolicy("RUN_ID")
FLOW_PARAMETERS = CachePolicy("FLOW_PARAMETERS")
