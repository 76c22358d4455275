"""Other workflow libraries' spellings over daskflow's public API.

``daskflow.compat.prefect`` takes Prefect 3's decorators and options (one
import line changed), ``daskflow.compat.prefect_dask`` prefect-dask's
``DaskTaskRunner`` and ``get_dask_client``.  Arrows go one way: these
modules import ``daskflow``; nothing in ``daskflow`` imports them.
"""
