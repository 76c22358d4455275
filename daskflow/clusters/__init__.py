"""Cluster specs: where a flow runs, and the guarantee that what starts, ends.

A spec is anything with ``__daskflow_open__()``, a context manager that
yields a connected ``distributed.Client`` and ends whatever it started.
The runner (``daskflow.runner.open_backend``) accepts specs beside
``None``, ``"sync"``, addresses and ``Client``/``Cluster`` objects.
"""

from __future__ import annotations

from typing import Any

import dask.config

from daskflow.exceptions import ClusterError


def from_profile(name: str) -> Any:
    """The cluster spec configured as ``daskflow.clusters.<name>`` in dask.config."""
    profiles = dask.config.get("daskflow.clusters", default={}) or {}
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none configured"
        raise ClusterError(
            f"cluster={name!r} is neither an address (like 'tcp://host:8786'), 'sync', "
            f"nor a configured profile (daskflow.clusters.{name}); profiles: {known}")
    raise ClusterError(f"cluster profile {name!r}: profiles are not supported yet")
