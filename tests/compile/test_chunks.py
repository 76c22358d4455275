"""Chunked maps: consecutive elements in one Dask task, every element still a
task run of its own (state, retries, SKIP/FAIL, triggers, hooks, logs); on
"sync" and on the real cluster, against the same flow with ``chunk=1``."""

from __future__ import annotations

import os
import signal
import time

import pytest
from common_tasks import inc, total

import daskflow as df
from daskflow.compile import chunks
from daskflow.compile.chunks import Layout
from daskflow.compile.graph import Compiler
from daskflow.define.build import Builder
from daskflow.wire import RunInfo

# -- tasks (module level, so worker processes import them) --------------------


@df.task(retries=2, retry_delay=0)
def picky(x: int, where: str) -> int:
    """Fails its first attempt on multiples of 5, always on multiples of 7,
    skips multiples of 11."""
    if x % 11 == 0 and x:
        raise df.SKIP(f"{x} skipped")
    if x % 7 == 0 and x:
        raise ValueError(f"{x} is a multiple of 7")
    if x % 5 == 0:
        mark = os.path.join(where, f"tried-{x}")
        if not os.path.exists(mark):
            open(mark, "w").close()
            raise RuntimeError(f"first attempt of {x}")
    return x * 10


@df.task(trigger=df.all_finished, skip_on_upstream_skip=False)
def count_finished(xs) -> int:
    return sum(1 for x in xs if isinstance(x, int))


@df.task
def nap(x: int, secs: float) -> int:
    time.sleep(secs)
    return x


@df.flow
def mixed(n: int, where: str, chunk: int | None):
    values = picky.map(range(n), where=where, chunk=chunk)
    more = inc.map(values)
    return count_finished(more)


@df.flow
def plain(n: int, chunk: int | None):
    return total(inc.map(inc.map(range(n), chunk=chunk)))


def _outline(run):
    return {name: (s.name, s.attempts, s.message.split(" (")[0] if s.message else s.message)
            for name, s in run.states.items()}


def test_a_chunked_map_keeps_every_elements_state(on, tmp_path):
    one, seven = tmp_path / "one", tmp_path / "seven"
    one.mkdir(), seven.mkdir()
    a = mixed.run(40, str(one), 1, cluster=on)
    b = mixed.run(40, str(seven), 7, cluster=on)
    assert a.result() == b.result() == 40 - len({7, 14, 21, 28, 35}) - len({11, 22, 33})
    assert _outline(a) == _outline(b)
    assert b.states["picky[5]"].attempts == 2 and b.states["picky[5]"].is_completed()
    assert b.states["picky[14]"].is_failed() and b.states["picky[14]"].attempts == 3
    assert b.states["picky[22]"].is_skipped() and b.states["inc[22]"].is_skipped()
    assert b.states["inc[14]"].name == "TriggerFailed"
    assert b.states["picky[5]"].map_index == 5


def test_a_chunked_map_runs_each_elements_hooks_once(on, tmp_path):
    where = str(tmp_path / "hooks")

    def hook(task, state):
        with open(where, "a") as f:
            f.write(f"{state.task_name}\n")

    @df.task(on_completion=[hook])
    def hooked(x: int) -> int:
        return x + 1

    @df.flow
    def hooks(n: int):
        return total(hooked.map(range(n), chunk=6))

    assert hooks(20, cluster=on) == sum(range(1, 21))
    lines = (tmp_path / "hooks").read_text().split()
    assert sorted(lines) == sorted(f"hooked[{i}]" for i in range(20))


def test_chunk_must_be_a_positive_whole_number():
    @df.flow
    def bad():
        return inc.map(range(3), chunk=0)

    with pytest.raises(df.FlowDefinitionError, match=r"chunk=0.*1 or more"):
        bad(cluster="sync")


def test_a_task_with_its_own_chunk_parameter_receives_it():
    @df.task
    def takes(x, chunk):
        return (x, chunk)

    @df.flow
    def f():
        return takes.map(range(2), chunk="whole")

    assert f(cluster="sync") == [(0, "whole"), (1, "whole")]


def test_waits_read_the_elements_of_a_chunked_map(on):
    @df.flow
    def body(n: int):
        ref = inc.map(range(n), chunk=4)
        seen = sorted(e.result() for e in df.as_completed(ref))
        first = df.wait(ref)[0]
        return seen, len(first), ref.result()[:3], ref.state[2].name

    seen, done, head, third = body(10, cluster=on)
    assert seen == list(range(1, 11)) and done == 10
    assert head == [1, 2, 3] and third == "Completed"


def test_the_pilot_sizes_the_rest_and_says_so(client, caplog):
    @df.task
    def tiny(x):
        return x

    @df.flow
    def wide(n: int):
        return total(tiny.map(range(n)))

    with caplog.at_level("INFO", logger="daskflow.run"):
        assert wide(4000, cluster=client) == sum(range(4000))
    note = next(r.getMessage() for r in caplog.records if "pilot measured" in r.getMessage())
    assert "map 'tiny': 4000 elements in" in note and "chunks of" in note
    assert chunks.recalled(tiny) is not None


def test_heavy_elements_keep_a_dask_task_each():
    assert chunks.chunk_size(0.2, 1000, 2) == 1
    assert chunks.chunk_size(50e-6, 20000, 2) == 1000  # 50 ms of work per chunk
    assert chunks.chunk_size(50e-6, 2000, 2) == 250  # 4 chunks per worker thread at least


@pytest.mark.parametrize("n, first, head, size", [(100, 0, 1, 7), (100, 8, 4, 9),
                                                   (10, 10, 4, 3), (129, 16, 4, 1)])
def test_a_layout_places_every_element_once(n, first, head, size):
    layout = Layout("m", n, size, first, head)
    spans = layout.spans(pilot=True) + layout.spans()
    assert [(layout.name, j) for j, _, _ in spans] == layout.keys()
    covered = [i for _, start, stop in spans for i in range(start, stop)]
    assert covered == list(range(n))
    for j, start, stop in spans:
        for i in range(start, stop):
            assert layout.chunk(i, width=True) == ((layout.name, j), i - start, stop - start)


def test_a_chunked_chain_compiles_to_one_task_per_chunk():
    with Builder("t") as b:
        ref = total(inc.map(inc.map(range(100), chunk=10)))
    c = Compiler(b.nodes, RunInfo("t", "r", {}))
    c.fuse = True
    dsk = c.stage()
    assert len(dsk) == 10 + 1  # ten chunks of both maps, and the sum
    assert len(dsk[c.keys_of(ref.node)].dependencies) == 10


def test_a_cancelled_chunk_stops_between_its_elements(client, tmp_path):
    @df.flow
    def slow(n: int):
        return total(nap.map(range(n), secs=0.05, chunk=100))

    run = slow.submit(200, cluster=client)
    deadline = time.monotonic() + 60
    while not run.states or not any(s.is_completed() for s in run.states.values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert run.cancel(timeout=30)
    done = sum(1 for s in run.states.values() if s.is_completed())
    assert run.state.is_cancelled()
    assert done < 150, done  # both chunks stopped long before their 100 elements
    assert run.states["nap[199]"].is_cancelled()


def test_a_worker_killed_mid_chunk_reruns_its_chunk(processes):
    from distributed import Client

    processes.start_scheduler()
    for _ in range(2):
        processes.start_worker("--no-nanny")
    with Client(processes.address, set_as_default=False, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)

        @df.flow
        def slow(n: int):
            return total(nap.map(range(n), secs=0.02, chunk=25))

        run = slow.submit(100, cluster=client)
        time.sleep(0.6)  # the first chunks are running
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        assert run.wait(120) is not None
        assert run.result() == sum(range(100)), run.summary()
        assert all(s.is_completed() for s in run.states.values()), run.summary()


def test_live_counts_of_a_100k_map_match_a_recount(client):
    @df.task
    def same(x):
        return x

    @df.flow
    def huge(n: int):
        return total(same.map(range(n), chunk=2000))

    run = huge.submit(100_000, cluster=client)
    deadline = time.monotonic() + 120
    while run._groups is None:  # the live counts, fed by the event stream
        assert time.monotonic() < deadline and not run.done()
        time.sleep(0.01)
    live = run._groups
    assert run.wait(300) is not None
    assert run.result() == sum(range(100_000))
    counted = {g.name: g for g in live()}["same"]
    recount = sum(1 for n, s in run.states.items() if n.startswith("same[") and s.is_completed())
    assert counted.total == recount == 100_000
    assert counted.counts["COMPLETED"] == recount


def test_the_reports_timeline_draws_a_bar_per_chunk(tmp_path):
    run = plain.run(40, 10, cluster="sync")
    assert run.chunked == {"inc": [[0, 10], [10, 20], [20, 30], [30, 40]],
                           "inc-2": [[0, 10], [10, 20], [20, 30], [30, 40]]}
    html = (tmp_path / "run.html").read_text() if run.report(str(tmp_path / "run.html")) else ""
    assert "<title>inc[0-9]: Completed" in html and "10 elements in one Dask task" in html
    assert "<title>inc[3]:" not in html  # elements are not drawn one by one
    back = df.FlowRun.from_json(run.to_json())
    assert back.chunked == run.chunked


@df.task
def maybe_lock(i: int):
    import threading

    return threading.Lock() if i == 2 else i


@df.flow
def locks():
    return maybe_lock.map(range(6), chunk=3)


def test_an_unpicklable_result_in_a_chunk_fails_its_element_only(client):
    run = locks.run(cluster=client)  # the chunks travel to the driver: one cannot
    assert run.state.is_failed()
    bad = run.states["maybe_lock[2]"]
    assert bad.is_failed() and isinstance(bad.exception, df.UnpicklableResultError), bad
    assert all(run.states[f"maybe_lock[{i}]"].is_completed() for i in (0, 1, 3, 4, 5))
    with pytest.raises(df.UnpicklableResultError, match="maybe_lock"):
        run.result()


def test_a_chunk_travels_with_every_field_of_its_states():
    """A chunk is pickled as one column per state field (serialize's
    ``_from_columns`` names the fields in order): every field comes back."""
    from distributed.protocol import deserialize, serialize

    from daskflow.core.states import FIELDS, Chunk, State, StateType
    from daskflow.events.serialize import register_serialization

    register_serialization()
    states = []
    for i in range(3):
        s = State(StateType.FAILED, name=f"n{i}", message=f"m{i}", result=[i],
                  exception=ValueError(i), traceback=f"tb{i}", attempts=i + 1, start=i + 0.5,
                  end=i + 0.75, task_name=f"t[{i}]", map_index=i, worker=f"w{i}",
                  tries=((i, i + 1.0),), reruns=i, run_name=f"r{i}")
        s._origin, s._key = "run", ("t", i)
        states.append(s)
    back = deserialize(*serialize(Chunk(states), serializers=["dask"]))
    assert type(back) is Chunk and len(back) == 3
    for before, after in zip(states, back):
        for field in FIELDS:
            want, got = getattr(before, field), getattr(after, field)
            if field == "exception":
                assert type(got) is ValueError and got.args == want.args
            else:
                assert got == want, field
        assert after._origin is None and after._key is None
    assert deserialize(*serialize(Chunk(), serializers=["dask"])) == Chunk()


def test_a_plain_state_is_a_state():
    """The driver makes a chunk element's state with ``plain_state``, which
    sets every field itself: it must give what ``State(...)`` gives."""
    from daskflow.core.states import State, StateType, plain_state

    for kind in StateType:
        fast = plain_state(kind, "N", "m", 2, 1.5, 2.5, "w")
        slow = State(kind, name="N", message="m", attempts=2, start=1.5, end=2.5, worker="w")
        assert [getattr(fast, k) for k in State.__slots__] == \
            [getattr(slow, k) for k in State.__slots__]
