"""Small tasks shared by several test modules (workers import this module)."""

import os
import signal
import time

import daskflow as df


@df.task
def inc(x):
    return x + 1


@df.task
def total(xs):
    return sum(xs)


@df.task
def split(n):
    return list(range(n))


@df.task
def linger(seconds):
    """Busy for ``seconds``, in short sleeps (a long-running task to interrupt)."""
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.05)
    return seconds


@df.flow
def mapped(n: int = 4):
    """A map and a sum: the first flow every provider's tests run."""
    return total(inc.map(list(range(n))))


@df.flow
def long_flow(seconds: float):
    return linger(seconds)


@df.task
def wait_for_go(where):
    """Mark ``where/started``, then wait (up to 60 s) for ``where/go`` to exist."""
    open(os.path.join(where, "started"), "w").close()
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(where, "go")) and time.time() < deadline:
        time.sleep(0.02)
    return 1


# -- a resource that writes what it does to a journal file (both forms) --------------


def note(path, text):
    """Append ``text:<pid>`` to the journal at ``path``."""
    with open(path, "a") as f:
        f.write(f"{text}:{os.getpid()}\n")


@df.resource
def journal(path, name):
    note(path, f"open-{name}")
    yield f"handle-{name}"
    note(path, f"close-{name}")


@df.resource_manager
class Journal:
    def __init__(self, path):
        self.path = path

    def setup(self):
        note(self.path, "setup")
        return "conn"

    def cleanup(self, resource):
        note(self.path, f"cleanup-{resource}")


@df.task
def use(path, handle, label):
    note(path, f"use-{label}-{handle}")
    return label


# -- a finished task's result lost with its worker ---------------------------------------


def lose_a_result(processes, where, submit, name):
    """Start two workers (no nanny) and ``submit(client)`` a run in which task
    ``name`` ends and a later task waits in :func:`wait_for_go` (in ``where``);
    then SIGKILL the worker holding ``name``'s result and let the run go on,
    so Dask runs ``name`` again.  Returns the ended run and ``name``'s state
    before the kill."""
    from distributed import Client

    processes.start_scheduler()
    for _ in range(2):
        processes.start_worker("--no-nanny")
    with Client(processes.address, set_as_default=False, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)
        run = submit(client)
        try:
            deadline = time.monotonic() + 60
            while not (run.states.get(name) is not None and run.states[name].is_completed()
                       and os.path.exists(os.path.join(where, "started"))):
                assert time.monotonic() < deadline and not run.done(), run.summary()
                time.sleep(0.05)
            first = run.states[name]
            os.kill(pids[first.worker], signal.SIGKILL)
            open(os.path.join(where, "go"), "w").close()
            assert run.wait(60) is not None
        finally:
            run.cancel(timeout=60)
    return run, first
