"""Prefect 3's ``prefect.artifacts``: daskflow's artifacts, kept with the run's record."""

from __future__ import annotations

from daskflow import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

__all__ = ["create_image_artifact", "create_link_artifact", "create_markdown_artifact",
           "create_table_artifact"]
