"""Small tasks shared by several test modules (workers import this module)."""

import os
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
