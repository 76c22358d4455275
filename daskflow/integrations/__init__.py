"""Ready-made tasks and hooks: ``df.shell`` (:mod:`.shell`) and notifications
(:mod:`.notify`, public as :mod:`daskflow.notify`)."""
