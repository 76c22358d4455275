"""Tag limits recover from a worker lost while its tasks waited for a slot:
real scheduler and worker processes, a worker SIGKILLed."""

from __future__ import annotations

import os
import signal
import time

from distributed import Client
from test_concurrency import _waiting_tasks

import daskflow as df


@df.task(tags=["db-stale"], resources={"HOLD": 1})
def hold_the_slot(seconds: float, marker: str = "") -> str:
    if marker:
        open(marker, "w").close()  # the slot is held from here on
    time.sleep(seconds)
    return "held"


@df.task(resources={"WAIT": 1})
def slot_is_held(marker: str) -> bool:
    while not os.path.exists(marker):
        time.sleep(0.05)
    return True


@df.task(tags=["db-stale"], resources={"WAIT": 1})
def wait_for_the_slot(i: int) -> int:
    return i


@df.flow
def holder_and_waiters(marker: str, seconds: float = 4.0):
    held = slot_is_held(marker)
    return hold_the_slot(seconds, marker), wait_for_the_slot.map(range(3), wait_for=[held])


@df.flow
def next_run():
    return hold_the_slot(0.0)


def test_a_worker_killed_while_its_tasks_wait_for_a_slot_leaves_no_stale_request(processes,
                                                                                 tmp_path):
    """Three tasks wait for the only slot on worker A; A is SIGKILLed; once the
    slot's holder (on worker B) ends, a new run gets the slot at once.  (Their
    unbounded requests outlived A: the scheduler granted each a slot that only
    its lease's expiry, 30 s, freed.)"""
    processes.start_scheduler()
    waiting = processes.start_worker("--nthreads", "4", "--resources", "WAIT=4", "--no-nanny")
    processes.start_worker("--nthreads", "2", "--resources", "HOLD=2", "--no-nanny")
    with Client(processes.address, set_as_default=False, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        first = holder_and_waiters.submit(str(tmp_path / "held"), cluster=client,
                                          concurrency={"db-stale": 1}, progress=False)
        try:
            deadline = time.monotonic() + 30
            while sum(_waiting_tasks(client).values()) < 3:  # all three wait for the slot
                assert time.monotonic() < deadline and not first.done(), first.summary()
                time.sleep(0.1)
            os.kill(waiting.pid, signal.SIGKILL)
            waiting.wait(30)
            deadline = time.monotonic() + 30
            while first.states["hold_the_slot"].type.value != "COMPLETED":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            second = next_run.submit(cluster=client, concurrency={"db-stale": 1},
                                     progress=False)
            try:
                assert second.wait(10) is not None, "the slot went to a dead worker's request"
                assert second.state.is_completed(), second.summary()
            finally:
                second.cancel(timeout=60)
        finally:
            first.cancel(timeout=60)
