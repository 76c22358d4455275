"""Cluster specs: where a flow runs, and the guarantee that what starts, ends.

``Local``, ``Address``, ``Kubernetes`` and ``Coiled`` are thin over the
real classes of distributed, dask-kubernetes and coiled.  Each is a value for
``cluster=``, a context manager outside flows (``with Local() as client:``)
and a resource inside a flow body.  ``cluster="<profile>"`` builds one from
``daskflow.clusters.<profile>`` in dask.config.  See :mod:`.base` for the
lifecycle and the layers of the shutdown guarantee.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config

from daskflow import config
from daskflow.clusters.address import Address
from daskflow.clusters.base import ClusterSpec, Handle, Lifecycle
from daskflow.clusters.gateway import Gateway
from daskflow.clusters.local import Local
from daskflow.clusters.providers import Coiled, Kubernetes
from daskflow.clusters.slurm import Slurm
from daskflow.clusters.ssh import SSH
from daskflow.exceptions import ClusterError

KINDS: dict[str, type[ClusterSpec]] = {
    "local": Local, "address": Address, "kubernetes": Kubernetes, "coiled": Coiled,
    "ssh": SSH, "gateway": Gateway, "slurm": Slurm,
}

__all__ = ["Address", "ClusterSpec", "Coiled", "Gateway", "Handle", "Kubernetes", "Lifecycle", "Local", "SSH", "Slurm",
           "from_profile", "profiles"]


def profile_dirs() -> list[str]:
    """Where profile YAML files are looked for: ``daskflow.profile-dirs``
    (``~`` expanded; relative paths from the current directory)."""
    return [os.path.abspath(os.path.expanduser(d)) for d in config.get("profile-dirs") or []]


def profiles() -> dict[str, dict[str, Any]]:
    """Every profile: dask.config's (which already holds ``~/.config/dask``,
    ``DASK_CONFIG`` and ``DASK_DASKFLOW__CLUSTERS__...``), then YAML files in
    :func:`profile_dirs`."""
    found = dict(config.get("clusters") or {})
    dirs = profile_dirs()
    extra = dask.config.collect(paths=[d for d in dirs if os.path.isdir(d)], env={})
    for name, profile in ((extra.get("daskflow") or {}).get("clusters") or {}).items():
        found.setdefault(name, profile)
    return found


def from_profile(name: str) -> ClusterSpec:
    """The cluster spec configured as ``daskflow.clusters.<name>``."""
    import difflib

    known = profiles()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ClusterError(
            f"cluster={name!r} is neither an address (like 'tcp://host:8786'), 'sync', "
            f"nor a configured profile (daskflow.clusters.{name}).{hint} Profiles found: "
            f"{', '.join(sorted(known)) or 'none'}; looked in dask.config (its YAML folders "
            f"{', '.join(dask.config.paths)}) and in {', '.join(profile_dirs()) or 'no folder'}"
            " (daskflow.profile-dirs)")
    profile = dict(known[name])
    kind = profile.pop("kind", None)
    if kind not in KINDS:
        raise ClusterError(
            f"profile {name!r} has kind={kind!r}; use one of {', '.join(KINDS)}")
    kwargs = {k.replace("-", "_"): v for k, v in profile.items()}
    try:
        return KINDS[kind](**kwargs)
    except (TypeError, ClusterError) as err:
        raise ClusterError(f"profile {name!r}: {err}") from err
