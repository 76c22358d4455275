"""Caching and resuming, on the real cluster of `dask worker` processes (and
on "sync"), with results in a folder of the test's own."""

from __future__ import annotations

import os
import threading
import time

import dask
import pytest

import daskflow as df


def calls(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def record(path: str, what: str) -> None:
    with open(path, "a") as f:
        f.write(what + "\n")


# -- resume after a failure near the end ----------------------------------------------------


@df.task(cache=True)
def extract(i: int, log: str) -> int:
    record(log, f"extract{i}")
    return i * 10


@df.task(cache=True)
def load(parts: list, log: str, flag: str) -> int:
    record(log, "load")
    if not os.path.exists(flag):
        raise RuntimeError("the warehouse is down")
    return sum(parts)


@df.flow
def nightly(n: int, log: str, flag: str, store: str):
    return load(extract.map(range(n), log=df.unmapped(log)), log, flag)


def storage_flow(flow, store):
    return df.flow(flow.fn, name=flow.name, result_storage=store)


@pytest.fixture(scope="module")
def s3():
    """A real S3 API (moto's server) for the module; fsspec's IO thread is
    started here, before any test's leak check, as s3fs keeps it for good."""
    import fsspec.asyn
    from services import MotoS3

    fsspec.asyn.get_loop()
    server = MotoS3()
    yield server
    server.close()


@pytest.fixture(params=["file", "s3"])
def store(request, s3, tmp_path):
    """Where results go: a folder of the test's own, or a prefix of its own in
    the S3 bucket (the same tests run on both)."""
    if request.param == "file":
        yield str(tmp_path / "store")
        return
    with dask.config.set({"daskflow.results.storage-options": s3.options}):
        yield f"s3://{s3.BUCKET}/{tmp_path.name}"


@pytest.fixture
def paths(tmp_path, store):
    return {"log": str(tmp_path / "calls"), "flag": str(tmp_path / "flag"), "store": store}


def test_a_failed_run_resumes_where_it_failed(client, paths):
    flow = storage_flow(nightly, paths["store"])
    first = flow.run(4, paths["log"], paths["flag"], paths["store"], cluster=client)
    assert first.state.is_failed()
    assert sorted(calls(paths["log"])) == ["extract0", "extract1", "extract2", "extract3", "load"]
    open(paths["flag"], "w").close()  # the warehouse is back
    second = flow.run(4, paths["log"], paths["flag"], paths["store"], cluster=client)
    assert second.result() == 60
    # only the failed task ran again; every extract was reused on the workers
    assert calls(paths["log"]).count("load") == 2 and len(calls(paths["log"])) == 6
    assert [second.states[f"extract[{i}]"].name for i in range(4)] == ["Cached"] * 4
    assert second.states["extract[0]"].type is df.StateType.COMPLETED
    assert second.states["load"].name == "Completed"
    assert "4 Cached" in second.summary()
    third = flow.run(4, paths["log"], paths["flag"], paths["store"], cluster=client)
    assert third.result() == 60 and third.states["load"].name == "Cached"
    assert len(calls(paths["log"])) == 6


def test_a_new_parameter_reruns_what_it_reaches(client, paths):
    open(paths["flag"], "w").close()
    flow = storage_flow(nightly, paths["store"])
    assert flow(3, paths["log"], paths["flag"], paths["store"], cluster=client) == 30
    assert flow(4, paths["log"], paths["flag"], paths["store"], cluster=client) == 60
    # extract[3] is new, and load's input changed; extract[0..2] were reused
    assert calls(paths["log"]) .count("extract0") == 1
    assert calls(paths["log"]).count("extract3") == 1 and calls(paths["log"]).count("load") == 2


# -- what invalidates a key --------------------------------------------------------------------

MODULE = '''
import daskflow as df

def helper(x):
    return x + {helper_add}

@df.task(cache=True{version})
def first(x, log):
    with open(log, "a") as f:
        f.write("first\\n")
    return helper(x) * {factor}

@df.task(cache=True)
def second(y, log):
    with open(log, "a") as f:
        f.write("second\\n")
    return y + 1

@df.task(cache=True)
def upstream(log):
    with open(log, "a") as f:
        f.write("upstream\\n")
    return 1

@df.flow
def pipeline(log: str, store: str):
    return second(first(upstream(log), log), log)
'''


def load_module(tmp_path, name, helper_add=0, factor=2, version=""):
    """The flow's code as a file of its own (so its source is real), run as
    __main__ code: its tasks travel to the workers by value, as a notebook's do."""
    path = tmp_path / f"{name}.py"
    path.write_text(MODULE.format(helper_add=helper_add, factor=factor, version=version))
    namespace = {"__name__": "__main__"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["pipeline"]


@pytest.mark.parametrize("change, reruns", [
    ({}, []),
    ({"factor": 3}, ["first", "second"]),                      # the task's own code
    ({"helper_add": 5}, ["first", "second"]),                  # a helper it calls
    ({"version": ", cache_version='2'"}, ["first", "second"]),  # its cache_version
])
def test_a_code_change_reruns_that_task_and_downstream(client, tmp_path, store, change, reruns):
    log = str(tmp_path / "calls")
    before = load_module(tmp_path, "v1")
    run = df.flow(before.fn, result_storage=store).run(log, store, cluster=client)
    assert run.state.is_completed() and len(calls(log)) == 3
    after = load_module(tmp_path, "v2", **change)
    again = df.flow(after.fn, result_storage=store).run(log, store, cluster=client)
    assert again.state.is_completed()
    assert calls(log)[3:] == reruns  # never upstream
    # upstream is read from the store when its dependent reruns, else not even read
    assert again.states["upstream"].name == ("Cached" if reruns else "NotNeeded")


def test_comments_and_formatting_do_not_change_a_key(tmp_path):
    from daskflow.core.fingerprint import code_version

    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text("def f(x):\n    return x + 1\n")
    two.write_text("def f(x):  # add one\n\n    return (x + 1)\n")
    fns = []
    for path in (one, two):
        ns: dict = {"__name__": "__main__"}
        exec(compile(path.read_text(), str(path), "exec"), ns)
        fns.append(ns["f"])
    assert code_version(fns[0]) == code_version(fns[1])


# -- results stay on the workers ------------------------------------------------------------------

def _rebuild(payload, driver):
    if os.getpid() == driver:
        raise AssertionError("a cached result was unpickled in the driver process")
    return Explosive(payload, driver)


class Explosive:
    """A result that explodes if it is ever unpickled in the driver process."""

    def __init__(self, payload, driver):
        self.payload, self.driver = payload, driver

    def __reduce__(self):
        return (_rebuild, (self.payload, self.driver))


@df.task(cache=True)
def make_big(log: str, driver: int) -> Explosive:
    record(log, "make")
    return Explosive(b"x" * 1000, driver)


@df.task
def size(obj: Explosive) -> int:
    return len(obj.payload)


@df.flow
def explosive(log: str, driver: int):
    return size(make_big(log, driver))


def test_results_are_written_and_read_on_the_workers(client, tmp_path, store, caplog):
    log = str(tmp_path / "calls")
    flow = df.flow(explosive.fn, result_storage=store)
    assert flow(log, os.getpid(), cluster=client) == 1000
    run = flow.run(log, os.getpid(), cluster=client)
    assert "could not" not in caplog.text
    assert run.result() == 1000 and run.states["make_big"].name == "Cached"
    assert calls(log) == ["make"]


# -- expiration, refresh, persist, failures of the store -------------------------------------------


@df.task(cache=True, cache_expiration=0.5)
def stamp(log: str) -> float:
    record(log, "stamp")
    return time.time()


def test_expiration_and_refresh(paths):
    @df.flow(result_storage=paths["store"])
    def stamped(log: str):
        return stamp(log)

    first = stamped(paths["log"], cluster="sync")
    assert stamped(paths["log"], cluster="sync") == first  # reused
    time.sleep(0.6)
    second = stamped(paths["log"], cluster="sync")  # expired: recomputed
    assert second > first and calls(paths["log"]) == ["stamp", "stamp"]
    third = stamped(paths["log"], cluster="sync", refresh_cache=True)
    assert third > second
    assert stamped(paths["log"], cluster="sync") == third  # the refresh was stored


def test_persist_stores_but_never_reuses(paths):
    from daskflow.worker.store import records

    @df.task(persist=True)
    def kept(log):
        record(log, "kept")
        return 42

    @df.flow(result_storage=paths["store"])
    def keeping(log: str):
        return kept(log)

    assert keeping(paths["log"], cluster="sync") == 42
    assert keeping(paths["log"], cluster="sync") == 42
    assert calls(paths["log"]) == ["kept", "kept"]
    assert [r["task"] for r in records(paths["store"])] == ["kept"]


def test_an_unserializable_result_is_logged_and_the_task_completes(client, paths, caplog):
    @df.task(cache=True)
    def lock(log):
        record(log, "lock")
        return threading.Lock()

    @df.task
    def kind(x):
        return type(x).__name__

    @df.flow(result_storage=paths["store"])
    def locking(log: str):
        return kind(lock(log))

    run = locking.run(paths["log"], cluster=client)
    assert run.result() == "lock" and run.states["lock"].name == "Completed"
    assert "could not be serialized for the cache" in caplog.text
    locking.run(paths["log"], cluster=client)
    assert calls(paths["log"]) == ["lock", "lock"]  # nothing stored, so computed again


def test_concurrent_writers_leave_one_whole_result(client, paths):
    @df.task(cache=True)
    def slow(log):
        record(log, "slow")
        time.sleep(0.3)
        return list(range(100_000))

    @df.task
    def total(xs):
        return sum(xs)

    @df.flow(result_storage=paths["store"])
    def racing(log: str):
        return total(slow(log))

    runs = [racing.submit(paths["log"], cluster=client) for _ in range(2)]
    assert [r.result() for r in runs] == [sum(range(100_000))] * 2
    assert calls(paths["log"]) == ["slow", "slow"]  # both computed and wrote
    again = racing.run(paths["log"], cluster=client)
    assert again.result() == sum(range(100_000)) and again.states["slow"].name == "Cached"


# -- keys that cannot be computed ----------------------------------------------------------------


def test_an_argument_that_cannot_be_keyed_is_a_clear_error_before_anything_runs(paths):
    @df.task(cache=True)
    def uses(thing):
        return 1

    @df.flow(result_storage=paths["store"])
    def opaque():
        return uses(threading.Lock())

    with pytest.raises(df.CacheKeyError,
                       match=r"'uses' has cache=True but its argument 0 is a _thread\.lock.*cache_key="):
        opaque.run(cluster="sync")
    assert not os.path.exists(paths["store"])


def test_a_custom_key(paths):
    @df.task(cache=True, cache_key=lambda ctx, thing, day: f"{ctx.task_name}-{day}")
    def uses(thing, day):
        record(paths["log"], "uses")
        return day

    @df.flow(result_storage=paths["store"])
    def custom(day: str):
        return uses(threading.Lock(), day)

    assert custom("mon", cluster="sync") == "mon"
    assert custom("mon", cluster="sync") == "mon"
    assert custom("tue", cluster="sync") == "tue"
    assert calls(paths["log"]) == ["uses", "uses"]


def test_flow_wide_cache_and_a_task_that_opts_out(paths):
    @df.task
    def inherits(log):
        record(log, "inherits")
        return 1

    @df.task(cache=False)
    def opts_out(x, log):
        record(log, "opts_out")
        return x + 1

    @df.flow(cache=True, result_storage=paths["store"])
    def wide(log: str):
        return opts_out(inherits(log), log)

    assert wide(paths["log"], cluster="sync") == 2
    assert wide(paths["log"], cluster="sync") == 2
    assert calls(paths["log"]) == ["inherits", "opts_out", "opts_out"]


def test_bad_cache_options_are_clear_errors():
    with pytest.raises(df.FlowDefinitionError, match="cache_expiration of task 'f'='a week' is not a duration"):
        df.task(lambda: 1, name="f", cache=True, cache_expiration="a week")
    with pytest.raises(df.FlowDefinitionError, match="cache_expiration of task 'f' must be seconds"):
        df.task(lambda: 1, name="f", cache=True, cache_expiration=[7])
    assert df.task(lambda: 1, cache=True, cache_expiration="7d").cache_expiration == 7 * 86400
    with pytest.raises(df.FlowDefinitionError, match="serializer of task 'f' must be"):
        df.task(lambda: 1, name="f", serializer="json")
    with pytest.raises(df.FlowDefinitionError, match="cache_version of task 'f' must be a str"):
        df.task(lambda: 1, name="f", cache_version=2)


# -- what a cached reduce spares ---------------------------------------------------------------


@df.task
def part(i: int, log: str) -> int:
    record(log, f"part{i}")
    return i


@df.task(cache=True)
def reduce_parts(parts: list, log: str) -> int:
    record(log, "reduce")
    return sum(parts)


@df.task
def report_total(total: int, log: str) -> str:
    record(log, "report")
    return f"total {total}"


@df.flow
def reduced(n: int, log: str):
    return report_total(reduce_parts(part.map(range(n), log=df.unmapped(log)), log), log)


def test_a_cached_reduce_does_not_recompute_its_map(client, paths):
    flow = storage_flow(reduced, paths["store"])
    assert flow(5, paths["log"], cluster=client) == "total 10"
    run = flow.run(5, paths["log"], cluster=client)
    assert run.result() == "total 10"
    assert calls(paths["log"]).count("report") == 2
    assert len(calls(paths["log"])) == 5 + 1 + 2  # the map ran once, the reduce once
    assert run.states["reduce_parts"].name == "Cached"
    assert [run.states[f"part[{i}]"].name for i in range(5)] == ["NotNeeded"] * 5
    assert "5 NotNeeded" in run.summary() and run.state.is_completed()
    # a removed result found by the check but gone when loaded fails clearly
    from daskflow.worker.store import records, remove

    meta = records(paths["store"])[0]
    run = flow.run(5, paths["log"], cluster=client)  # (found and loaded: still fine)
    assert run.state.is_completed()
    remove(paths["store"], meta)
    assert flow(5, paths["log"], cluster=client) == "total 10"  # recomputed
    assert calls(paths["log"]).count("reduce") == 2


def test_cli_cache_list_and_clear(paths):
    import json as _json
    import subprocess
    import sys

    from conftest import dask_env

    @df.task(cache=True)
    def one(x):
        return x

    @df.flow(name="listed", result_storage=paths["store"])
    def listed(n: int):
        return one.map(range(n))

    @df.flow(name="other", result_storage=paths["store"])
    def other():
        return one.map(["a", "b"])

    listed(3, cluster="sync")
    other(cluster="sync")
    env = dask_env()
    if paths["store"].startswith("s3://"):
        env["DASK_DASKFLOW__RESULTS__STORAGE_OPTIONS"] = _json.dumps(
            dask.config.get("daskflow.results.storage-options"))

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "daskflow.cli", "cache", *args,
                              "--storage", paths["store"]], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "5 stored result(s)" in cli("list")
    records = _json.loads(cli("list", "--json", "--flow", "listed"))
    assert sorted(r["task"] for r in records) == ["one[0]", "one[1]", "one[2]"]
    from daskflow.core.fingerprint import code_version

    assert {r["code_version"] for r in records} == {code_version(one.fn)}
    assert {r["serializer"] for r in records} == {"pickle"}
    assert "removed 0 stored result(s)" in cli("clear", "--older-than", "1h")
    assert "removed 3 stored result(s)" in cli("clear", "--flow", "listed")
    assert "2 stored result(s)" in cli("list")
    run = listed.run(3, cluster="sync")
    assert [s.name for s in run.states.values()] == ["Completed"] * 3  # recomputed


# -- maps over results, nested flows, serializers, large results ----------------------------------


@df.task
def listing(n: int, log: str) -> list:
    record(log, "listing")
    return list(range(n))


@df.task(cache=True)
def square(x: int, log: str) -> int:
    record(log, f"square{x}")
    return x * x


@df.flow
def inner(n: int, log: str):
    return square.map(listing(n, log), log=df.unmapped(log))


@df.flow
def outer(n: int, log: str):
    return inner(n, log)


def test_a_map_over_a_result_in_a_nested_flow(client, paths):
    flow = storage_flow(outer, paths["store"])
    assert flow(3, paths["log"], cluster=client) == [0, 1, 4]
    run = flow.run(3, paths["log"], cluster=client)
    assert run.result() == [0, 1, 4]
    # the listing is not cached, so it runs; each child finds its own result
    assert [run.states[f"inner/square[{i}]"].name for i in range(3)] == ["Cached"] * 3
    assert sorted(calls(paths["log"])) == ["listing", "listing", "square0", "square1", "square2"]


def test_npy_and_parquet_serializers(client, paths):
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")

    @df.task(cache=True, serializer="npy")
    def array(log):
        record(log, "array")
        return np.arange(10.0)

    @df.task(cache=True, serializer="parquet")
    def frame(log):
        record(log, "frame")
        return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})

    @df.task
    def check(arr, df_):
        return float(arr.sum()), df_["a"].sum(), list(df_["b"])

    @df.flow(result_storage=paths["store"])
    def typed(log: str):
        return check(array(log), frame(log))

    assert typed(paths["log"], cluster=client) == (45.0, 3, ["x", "y"])
    run = typed.run(paths["log"], cluster=client)
    assert run.result() == (45.0, 3, ["x", "y"])
    assert run.states["array"].name == run.states["frame"].name == "Cached"
    assert calls(paths["log"]) in (["array", "frame"], ["frame", "array"])


def _driver_rss_peak(run_flow):
    """The driver's RSS growth over a call, sampled every 5 ms."""
    import psutil

    me = psutil.Process()
    base = me.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        value = run_flow()
    finally:
        stop.set()
        sampler.join()
    return value, (peak[0] - base) / 2**20


@df.task(cache=True)
def big(mb: int, log: str) -> bytes:
    record(log, "big")
    return b"x" * (mb * 2**20)


@df.task
def length(data: bytes) -> int:
    return len(data)


@df.flow
def large(mb: int, log: str):
    return length(big(mb, log))


def test_a_200_mb_result_is_cached_and_reused_without_the_driver(client, tmp_path):
    log = str(tmp_path / "calls")
    flow = df.flow(large.fn, result_storage=str(tmp_path / "store"))
    value, grew = _driver_rss_peak(lambda: flow(200, log, cluster=client))
    assert value == 200 * 2**20 and grew < 50, f"the driver grew by {grew:.0f} MB"
    print(f"driver RSS growth: first run {grew:.1f} MB")
    run, grew = _driver_rss_peak(lambda: flow.run(200, log, cluster=client))
    assert run.result() == 200 * 2**20 and run.states["big"].name == "Cached"
    assert grew < 50, f"the driver grew by {grew:.0f} MB"
    print(f"driver RSS growth: cached rerun {grew:.1f} MB")
    assert calls(log) == ["big"]


class JsonSerializer:
    """A serializer of the user's own."""

    def dumps(self, value):
        import json as _json

        return _json.dumps(value).encode()

    def loads(self, data):
        import json as _json

        return _json.loads(data)


def test_a_serializer_of_your_own(paths):
    @df.task(cache=True, serializer=JsonSerializer())
    def config(log):
        record(log, "config")
        return {"a": [1, 2]}

    @df.flow(result_storage=paths["store"])
    def configured(log: str):
        return config(log)

    assert configured(paths["log"], cluster="sync") == {"a": [1, 2]}
    run = configured.run(paths["log"], cluster="sync")
    assert run.result() == {"a": [1, 2]} and run.states["config"].name == "Cached"
    from daskflow.worker.store import records

    assert [r["serializer"] for r in records(paths["store"])] == ["custom"]


def test_a_stored_sum_over_a_stored_map_reads_one_record(client, tmp_path):
    """The driver's check reads the single tasks' records first: a stored
    sum needs nothing of the map below it, whose records are not read."""
    import fsspec.implementations.local as local

    store = str(tmp_path / "store")
    flow = storage_flow(nightly, store)
    log, flag = str(tmp_path / "calls"), str(tmp_path / "flag")
    open(flag, "w").close()
    assert flow(300, log, flag, store, cluster=client) == sum(i * 10 for i in range(300))
    read: list[int] = []
    cat = local.LocalFileSystem.cat

    def counting_cat(self, path, *args, **kwargs):
        read.append(len(path) if isinstance(path, list) else 1)
        return cat(self, path, *args, **kwargs)

    local.LocalFileSystem.cat = counting_cat
    try:
        again = flow.run(300, log, flag, store, cluster=client)
    finally:
        local.LocalFileSystem.cat = cat
    assert again.states["load"].name == "Cached"
    assert {again.states[f"extract[{i}]"].name for i in range(300)} == {"NotNeeded"}
    assert read == [1]  # load's record, not extract's 300
