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


# -- cached and persisted maps in chunks ----------------------------------------------


@df.task(cache=True)
def noted(x: int, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    if x == 13:
        raise ValueError("13 never stores")
    return x * 2


@df.flow
def noted_map(xs: list, log: str, chunk: int | None):
    return noted.map(xs, log=df.unmapped(log), chunk=chunk)


def _ran(log) -> list[int]:
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return sorted(int(x) for x in f.read().split())


def _states(run):
    return {name: (s.name, s.is_completed()) for name, s in run.states.items()}


def test_a_chunked_cached_map_stores_and_loads_each_element(on, tmp_path):
    """A cached map in chunks stores each element's result under its own key;
    a rerun loads each one (the map whose results are all stored loads them
    in chunks too); a partly stored map runs only the elements it misses;
    every state equals the same flow's with a Dask task per element."""
    xs = list(range(200))
    flows = {}
    for chunk in (1, 25):
        log = str(tmp_path / f"log-{chunk}")
        flow = df.flow(noted_map.fn, name="noted", result_storage=str(tmp_path / f"store-{chunk}"))
        first = flow.run(xs, log, chunk, cluster=on)
        assert _ran(log) == xs
        assert first.states["noted[13]"].is_failed() and first.states["noted[5]"].name == "Completed"
        second = flow.run(xs, log, chunk, cluster=on)  # all but 13 stored: each element checks
        assert _ran(log) == sorted([*xs, 13])
        assert second.states["noted[5]"].name == "Cached"
        grown = flow.run([*xs, 200, 201], log, chunk, cluster=on)  # 200 and 201 are new
        assert _ran(log) == sorted([*xs, 13, 13, 200, 201])
        assert [grown.states[f"noted[{i}]"].name for i in (0, 199, 200)] == [
            "Cached", "Cached", "Completed"]
        flows[chunk] = (first, second, grown)
    for one, chunked in zip(flows[1], flows[25]):
        assert _states(one) == _states(chunked)


@df.task(cache=True)
def stored_double(x: int, log: str) -> int:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * 2


@df.flow
def stored_then_summed(n: int, log: str):
    return total(inc.map(stored_double.map(range(n), log=df.unmapped(log))))


def test_a_fully_stored_map_loads_in_chunks_and_downstream_lines_up(client, tmp_path, caplog):
    log = str(tmp_path / "log")
    flow = df.flow(stored_then_summed.fn, name="stored", result_storage=str(tmp_path / "store"))
    n = 600
    expected = sum(x * 2 + 1 for x in range(n))
    assert flow.run(n, log, cluster=client).result() == expected
    assert len(_ran(log)) == n
    with caplog.at_level("INFO", logger="daskflow"):
        again = flow.run(n, log, cluster=client)
    assert again.result() == expected and len(_ran(log)) == n  # nothing ran again
    assert {again.states[f"stored_double[{i}]"].name for i in range(n)} == {"Cached"}
    loads = [r.getMessage() for r in caplog.records if "stored_double" in r.getMessage()
             and "loads its stored results" in r.getMessage()]
    assert loads, [r.getMessage() for r in caplog.records]
    spans = again.chunked["stored_double"]
    assert 1 < len(spans) < n and spans[0][0] == 0 and spans[-1][1] == n
    assert again.chunked["inc"] == spans  # the map over it uses its chunks


@df.task(persist=True)
def kept(x: int) -> int:
    return x + 100


@df.flow
def kept_map(n: int):
    return kept.map(range(n), chunk=16)


def test_a_chunked_persisted_map_stores_every_element(client, tmp_path):
    store = tmp_path / "store"
    run = df.flow(kept_map.fn, name="kept", result_storage=str(store)).run(64, cluster=client)
    assert run.result() == [x + 100 for x in range(64)]
    assert len(run.chunked["kept"]) == 4
    stored = [p for p in store.rglob("*") if p.is_file() and p.suffix != ".json"]
    metas = [p for p in store.rglob("*.json")]
    assert len(metas) == 64 and len(stored) >= 64
    again = df.flow(kept_map.fn, name="kept", result_storage=str(store)).run(64, cluster=client)
    assert {s.name for s in again.states.values()} == {"Completed"}  # persist never reuses


def test_the_pilot_leaves_out_each_chunks_first_element():
    """A fresh worker's first element pays for imports: the pilot's time per
    element is read from the others, of its fastest chunk."""
    from daskflow.core.states import Chunk, State, StateType

    def chunk(t0, durations):
        states, t = [], t0
        for d in durations:
            states.append(State(StateType.COMPLETED, start=t, end=t + d))
            t += d
        return Chunk(states)

    slow_start = chunk(100.0, [2.0, 0.001, 0.001, 0.001])
    steady = chunk(200.0, [0.003, 0.002, 0.002, 0.002])
    assert chunks.seconds_per_element(slow_start, steady) == pytest.approx((0.001, ""))
    assert chunks.seconds_per_element(chunk(0.0, [0.5])) == pytest.approx((0.5, ""))
    assert chunks.seconds_per_element(Chunk([]))[0] == -1


def test_the_pilot_leaves_out_elements_read_from_the_store():
    """Elements that loaded a stored result say nothing of the task's own
    time: left out, and a pilot of loads only is used for this run but not
    remembered for the task."""
    from daskflow.core.states import Chunk, State, StateType

    def chunk(t0, durations, name=None):
        states, t = [], t0
        for d in durations:
            states.append(State(StateType.COMPLETED, name=name, start=t, end=t + d))
            t += d
        return Chunk(states)

    loaded = chunk(0.0, [0.001] * 4, "Cached")
    ran = chunk(10.0, [0.2, 0.2, 0.2, 0.2])
    assert chunks.seconds_per_element(loaded, ran) == pytest.approx((0.2, ""))
    assert chunks.seconds_per_element(loaded, loaded) == pytest.approx((0.001, "loads"))

    @df.task
    def slow_task(x):
        return x

    job = chunks.ChunkJob([chunks.pilot_layout("b", 400, 2)],
                          _map_call(slow_task), [range(400)], [], (), ())
    job.measured(0.001, 2, loads=True)
    assert chunks.recalled(slow_task) is None and "stored results only" in job.layout.why
    assert job.layout.size == 49  # as a stored map: ~1 ms a load, 4 chunks a thread
    job.measured(0.2, 2)
    assert chunks.recalled(slow_task) == 0.2 and job.layout.size == 1


def _map_call(task):
    from daskflow.wire import TaskSpec
    from daskflow.worker.calls import MapCall

    spec = TaskSpec(task, "task", RunInfo("f", "r", {}), None)
    return MapCall(spec, task.name, "b", (None,), {}, False, frozenset(), 0, (0,), ())


# -- timeouts and logs inside a chunk ---------------------------------------------------


@df.task(timeout=0.5, log_prints=True)
def stalls_at(x: int, at: int) -> int:
    if x == at:
        end = time.time() + 2
        while time.time() < end:
            time.sleep(0.01)
    print(f"element {x} done")
    return x


@df.flow
def stalling(chunk: int | None):
    return count_finished(stalls_at.map(range(8), at=3, chunk=chunk))


def test_an_element_that_times_out_fails_alone_in_its_chunk(on):
    """The element's own timeout ends it (TaskTimeoutError); its chunk goes on
    with the next element; its log lines are labelled with the element."""
    runs = {}
    for chunk in (1, 4):
        run = runs[chunk] = stalling.run(chunk, cluster=on)
        state = run.states["stalls_at[3]"]
        assert state.is_failed() and isinstance(state.exception, df.TaskTimeoutError)
        assert state.duration < 1.8
        assert run.result() == 7
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the last lines may still be on their way
            said = {lg["message"]: lg for lg in run.logs if lg["message"].startswith("element")}
            if len(said) == 7:
                break
            time.sleep(0.05)
        assert sorted(said) == [f"element {x} done" for x in (0, 1, 2, 4, 5, 6, 7)]
        assert said["element 5 done"]["task"] == "stalling/stalls_at[5]"
    assert _outline(runs[1]) == _outline(runs[4])
    assert len(runs[4].chunked["stalls_at"]) == 2


# -- maps over maps chunked differently ------------------------------------------------


@df.task
def times_k(x: int) -> int:
    return x * 1000


@df.task
def plus(x: int, y: int) -> int:
    return x + y


@df.flow
def zipped(n: int, a: int | None, b: int | None, c: int | None):
    return plus.map(inc.map(range(n), chunk=a), times_k.map(range(n), chunk=b), chunk=c)


@pytest.mark.parametrize("a, b, c", [(10, 7, None), (None, 3, None), (4, 1, None), (1, 5, 6)])
def test_a_map_over_maps_chunked_differently_pairs_their_elements(on, a, b, c):
    """Element i of each map mapped over reaches element i, whatever their chunks."""
    n = 150
    run = zipped.run(n, a, b, c, cluster=on)
    assert run.result() == [(i + 1) + 1000 * i for i in range(n)]
    assert {s.name for s in run.states.values()} == {"Completed"}


@df.task(cache=True)
def kept_inc(x: int) -> int:
    return x + 1


@df.flow
def stored_and_fresh(n: int):
    return plus.map(kept_inc.map(range(n)), times_k.map(range(n)))


def test_a_stored_map_zipped_with_a_fresh_one(client, tmp_path):
    """The stored map loads in chunks of its own; the fresh map beside it is
    chunked otherwise; their elements still pair up (and the cache holds
    the right values)."""
    flow = df.flow(stored_and_fresh.fn, name="zip", result_storage=str(tmp_path / "store"))
    n = 700
    expected = [(i + 1) + 1000 * i for i in range(n)]
    assert flow.run(n, cluster=client).result() == expected
    again = flow.run(n, cluster=client)
    assert again.result() == expected
    assert again.states["kept_inc[5]"].name == "Cached"
    assert again.chunked["kept_inc"] != again.chunked["times_k"]


@df.task
def listing(n: int) -> list[int]:
    return list(range(n))


@df.flow
def mismatched(n: int, chunk: int | None):
    return plus.map(inc.map(listing(n), chunk=chunk), list(range(200)))


@pytest.mark.parametrize("chunk", [16, None])
def test_a_chunked_map_fused_with_a_map_that_cannot_expand(on, chunk):
    """The second map's lengths differ at run time: it fails saying so, and
    the chunked map it was to fuse with runs on its own."""
    run = mismatched.run(300, chunk, cluster=on)
    assert run.states["plus"].name == "MappingFailed"
    assert "[200, 300]" in run.states["plus"].message
    assert {run.states[f"inc[{i}]"].name for i in range(300)} == {"Completed"}


@df.task(resources={"A": 1})
def needs_a(x: int) -> int:
    return os.getpid()


@df.flow
def on_a(n: int):
    return needs_a.map(range(n))


def test_every_chunk_of_a_map_keeps_its_resources(processes):
    """Chunks emitted after the pilot carry the map's worker resources too."""
    from distributed import Client

    processes.start_scheduler()
    processes.start_worker("--resources", "A=1")
    processes.start_worker()
    with Client(processes.address, set_as_default=False, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        a_worker = [a for a, w in client.scheduler_info()["workers"].items()
                    if w.get("resources")]
        with_a = set(client.run(os.getpid, workers=a_worker).values())
        run = on_a.run(600, cluster=client)
        assert len(run.chunked["needs_a"]) > 2  # a pilot, then the rest
        assert set(run.result()) == with_a


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
