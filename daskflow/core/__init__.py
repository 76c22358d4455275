"""Pure values every layer shares: states, signals and triggers, option checks,
hooks, fingerprints of code and arguments, the container walker, the grouping
of task runs and plain-data HTML helpers.

Nothing here imports anything of daskflow's above ``config`` and
``exceptions``, and nothing here imports distributed.
"""
