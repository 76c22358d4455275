"""Prefect 3's ``prefect.concurrency``: see :mod:`.sync`."""
