"""Build -> Dask graphs, never a Client: stages (:mod:`.graph`), the parts of
a task (:mod:`.tasks`), fusion (:mod:`.fusion`), the cache-key plan
(:mod:`.cachekeys`) and the scatter plan (:mod:`.scatter`)."""
