"""Resources, the worker side: the setup keeps its finisher, the cleanup calls it.

A setup task (a node of kind "setup", see :mod:`daskflow.define.resources`)
runs on some worker and keeps what cleanup needs (the suspended generator,
or the manager instance and its resource) in a registry of that worker
process, by the setup's key (:mod:`daskflow.worker.finishers`).  The cleanup task runs the
finisher there: directly when Dask placed it on the same worker, otherwise
through ``Client.run`` aimed at that worker.  If that worker died the
cleanup is reported as Crashed.  When a run is interrupted its cleanup tasks
are cancelled with it, so the driver asks every worker to finish what the
run set up (:func:`finish_run`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from daskflow.core.states import State, StateType
from daskflow.exceptions import ResourceError
from daskflow.wire import Call
from daskflow.worker import finishers, per_worker
from daskflow.worker.context import current_worker
from daskflow.worker.run import finish


def run_cleanup(call: Call, setup: State, *members: State) -> State:
    """The cleanup task: finish the resource where it was set up."""
    if not setup.is_completed():
        return finish(call, State(StateType.SKIPPED, name="NotSetUp",
                                   message=f"setup was {setup.name}; nothing to clean up"))
    setup_key = call.args[0]
    try:
        if getattr(call.spec.fn, "per_worker", False):
            state = _cleanup_per_worker(call, setup_key)
        else:
            finisher = finishers.take(setup_key)
            if finisher is not None:
                finisher()
            else:
                _cleanup_remotely(setup_key, setup.worker)
            state = State(StateType.COMPLETED, result=None, attempts=1)
    except ResourceError as err:
        state = State(StateType.CRASHED, message=str(err), exception=err)
    except Exception as err:
        state = State(StateType.FAILED, message=f"{type(err).__name__}: {err}", exception=err)
    return finish(call, state)


def _cleanup_per_worker(call: Call, setup_key: Any) -> State:
    """Finish a per-worker resource on every worker that set it up (through
    ``Client.run``); a worker that set it up and is gone makes it Crashed."""
    key = per_worker.registry_key(setup_key)
    if call.spec.run.owner is None or current_worker() is None:  # in process
        finisher = finishers.take(key)
        if finisher is not None:
            finisher()
        return State(StateType.COMPLETED, result=None, attempts=1,
                     message="cleaned up in this process" if finisher else "never set up")
    from distributed import get_client

    client = get_client()
    answers = client.run(_finish_here, key, on_error="return")
    set_up = client.get_metadata([setup_key, per_worker.METADATA], default=None) or {}
    errors = [a for a in answers.values() if isinstance(a, BaseException)]
    if errors:
        raise errors[0]
    done = sorted(w for w, answer in answers.items() if answer == "")
    gone = sorted(w for w in set_up if w not in answers)
    if gone:
        raise ResourceError(
            f"resource {call.display_name.removesuffix('.cleanup')!r} was set up on "
            f"worker(s) {', '.join(gone)}, which are gone: their cleanup could not run "
            f"(cleaned up on the {len(done)} other(s))")
    return State(StateType.COMPLETED, result=None, attempts=1,
                 message=f"cleaned up on {len(done)} worker(s)")


async def _finish_here(key: Any) -> str:
    """Run a finisher of this process in a thread (for Client.run); '' if done."""
    finisher = finishers.take(key)
    if finisher is None:
        return "not found"
    await asyncio.get_running_loop().run_in_executor(None, finisher)
    return ""


def finish_run_now(run_id: str) -> list[str]:
    """Run, here, the cleanups of every resource a run set up in this process.

    Used when a run is interrupted: its cleanup tasks were cancelled with it.
    """
    keys, pending = finishers.take_run(run_id)
    errors = []
    for finisher in pending:
        try:
            finisher()
        except Exception as err:  # keep going: every resource deserves its end
            errors.append(repr(err))
    return [str(k) for k in keys] + [f"error: {e}" for e in errors]


async def finish_run(run_id: str) -> list[str]:
    """``finish_run_now`` for ``Client.run``: in a thread, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, finish_run_now, run_id)


def _cleanup_remotely(key: Any, worker: str | None) -> None:
    if worker is None or current_worker() is None:
        raise ResourceError(f"resource {key!r} was set up in another process that is gone")
    from distributed import get_client

    try:
        answers = get_client().run(_finish_here, key, workers=[worker])
    except Exception as err:
        raise ResourceError(f"could not reach worker {worker} to clean up {key!r}: {err!r}") from err
    if answers.get(worker) != "":
        raise ResourceError(
            f"resource {key!r} was set up on worker {worker}, which no longer has it "
            "(the worker was restarted or lost); its cleanup could not run")
