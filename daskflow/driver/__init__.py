"""The driver side of a run: resolving ``cluster=`` into a backend
(:mod:`.connect`, :mod:`.backends`), the engine that takes one run from its
build to its final state (:mod:`.engine`), the run users hold
(:mod:`.flowrun`), its live task groups, logs, waits and tag limits.
"""
