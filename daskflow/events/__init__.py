"""Task states and log records, streamed from the workers to the run's driver.

When a task run ends on a worker, its result-free state summary is queued in
that worker process and sent to the scheduler over the worker's own batched
stream (``Worker.batched_send``), by a worker plugin
(:class:`daskflow.events.plugins.RunEventsFlush`) as the task leaves
``executing``: in the same batch as the task's ``task-finished`` message and
just before it, so it costs no extra round of the stream's batching.  The
scheduler hands it to :class:`daskflow.events.plugins.RunEvents`, which forwards
it to the one client that owns the run (``Scheduler.report(..., client=)``),
as a ``daskflow-run-events`` event of that client.  Log records from
``df.get_run_logger()`` take the same path.

Why this order matters: the state reaches the scheduler before the
``task-finished`` message on the same stream, and reaches the driver before
the driver can see the task (or anything downstream of it) as done.  When the
driver's futures are done, every state of the run is already on the driver:

* a worker that leaves after its tasks finished (``retire_workers``,
  adaptive scaling, a SIGKILLed spot instance) takes no state with it;
* nothing about a run is kept on the workers or on the scheduler, so a
  long-lived shared scheduler serving thousands of runs stays flat; a run
  whose driver died leaves nothing behind (events for a client that is gone
  are dropped by the scheduler);
* two drivers on one scheduler, or two clients in one process, never see
  each other's states or logs: each event goes to its owner only.

A driver that loses its connection to the scheduler loses its futures too
(distributed cancels them), so there is nothing to recover: the run fails
with ``ClusterError``.

For runs in the driver's own process (``cluster="sync"``) states go straight
to the run's :class:`~daskflow.events.monitor.RunMonitor`.

The modules, by side: :mod:`.codec` (what travels, as plain data),
:mod:`.serialize` (how distributed moves a State with its result),
:mod:`.queue` (on a worker), :mod:`.plugins` (the scheduler and worker
plugins), :mod:`.monitor` (on the driver).  Only :mod:`.plugins` imports
distributed when imported, so ``import daskflow`` does not.
"""


