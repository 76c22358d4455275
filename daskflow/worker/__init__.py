"""Code that runs inside Dask tasks, on the workers (or in process for
``cluster="sync"``): the task run's context and logging (:mod:`.context`),
the attempt loop (:mod:`.run`), the callables of map children and fused
chains (:mod:`.calls`), the result store (:mod:`.store`), tag slots
(:mod:`.slots`) and resource cleanups (:mod:`.finishers`, :mod:`.cleanup`).

It talks to its own worker only, never to a ``Client`` of the driver's.
"""
