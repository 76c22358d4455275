"""daskflow's settings, in dask.config under the ``daskflow`` key.

Defaults live in ``daskflow.yaml`` beside this module and are merged with
``dask.config.update_defaults`` on import, so ``~/.config/dask/*.yaml`` and
``DASK_DASKFLOW__...`` environment variables override them as they do for
dask itself.  Read settings at call time with :func:`get`.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml
from dask.utils import parse_bytes, parse_timedelta

_HERE = os.path.dirname(__file__)

with open(os.path.join(_HERE, "daskflow.yaml")) as f:
    defaults = yaml.safe_load(f)

dask.config.update_defaults(defaults)


def get(key: str, override_with: Any = None) -> Any:
    """Read ``daskflow.<key>`` now (never at import time).

    >>> get("logging.level")
    'info'
    """
    return dask.config.get(f"daskflow.{key}", override_with=override_with)


def bytes_setting(key: str, override_with: Any = None) -> int:
    """Read a size setting such as ``"1MiB"`` as a number of bytes."""
    value = get(key, override_with)
    return int(parse_bytes(value)) if isinstance(value, str) else int(value)


def seconds_setting(key: str, override_with: Any = None) -> float:
    """Read a duration setting such as ``"100ms"`` as seconds."""
    return float(parse_timedelta(get(key, override_with), default="seconds"))
