"""Prefect 3's ``prefect.transactions``: ``transaction()`` is daskflow's
:func:`daskflow.transaction` (the tasks called inside it commit their stored
results together, or roll back)."""

from daskflow import transaction

__all__ = ["transaction"]
