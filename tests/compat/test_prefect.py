"""daskflow.compat.prefect: Prefect 3's spellings and semantics, on "sync" and
on the session's real cluster."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import dask
import pytest
from distributed import LocalCluster, get_worker

import daskflow as df
from daskflow.compat import prefect_dask
from daskflow.compat.prefect import (
    DaskTaskRunner,
    PrefectFeatureNotSupported,
    as_completed,
    blocks,
    flow,
    get_client,
    task,
    task_input_hash,
    variables,
    wait,
)
from daskflow.compat.prefect.cache_policies import INPUTS, RUN_ID
from daskflow.compat.prefect.concurrency.sync import rate_limit


@pytest.fixture(autouse=True)
def stores(tmp_path):
    """Results and run records under this test's folder."""
    with dask.config.set({"daskflow.results.storage": str(tmp_path / "results"),
                          "daskflow.runs.store": str(tmp_path / "runs")}):
        yield


def _count(folder: str, name: str) -> int:
    """Add one line to a file in ``folder`` (shared by every process); the new count."""
    path = os.path.join(folder, name)
    with open(path, "a") as f:
        f.write(".")
    with open(path) as f:
        return len(f.read())


@task
def double(x):
    return 2 * x


@task
def add(x, y):
    return x + y


@task
def boom(x):
    raise ValueError(f"boom {x}")


@flow
def values(n: int):
    a = double(n)              # a value, as in Prefect 3
    b = double(a + 1)          # Python arithmetic on it
    return {"a": a, "b": b, "type": type(a).__name__}


def test_a_task_call_in_a_flow_returns_its_value(on):
    assert values(3, cluster=on) == {"a": 6, "b": 14, "type": "int"}


@flow
def futures(xs: list):
    fut = double.submit(5)
    summed = add.submit(fut, 1)                 # a future as an argument: no wait
    doubled = double.map(xs)
    total = add.map(doubled, 100).result()      # a map's futures passed on whole
    each = [f.result() for f in doubled]        # iterating a map: one future each
    done, not_done = wait([fut, summed])
    seen = sorted(f.result() for f in as_completed(doubled))
    return {"submit": type(fut).__name__, "summed": summed.result(), "total": total,
            "each": each, "done": len(done), "not_done": len(not_done), "seen": seen}


def test_submit_returns_a_future_and_map_a_list_of_them(on):
    out = futures([1, 2, 3], cluster=on)
    assert out == {"submit": "Ref", "summed": 11, "total": [102, 104, 106], "each": [2, 4, 6],
                   "done": 2, "not_done": 0, "seen": [2, 4, 6]}


@flow
def returns_despite_failure():
    failed = boom.submit(1)
    failed.wait()
    return "fine"


@flow
def returns_the_failed_future():
    return boom.submit(2)


def test_a_flow_that_returns_a_value_is_completed(on):
    run = returns_despite_failure.run(cluster=on, progress=False)
    assert run.state.is_completed(), run.state
    assert run.result() == "fine"
    assert run.states["boom"].is_failed()
    with pytest.raises(ValueError, match="boom 2"):  # a returned future decides, as in Prefect 3
        returns_the_failed_future(cluster=on)


@flow
def raises_from_a_called_task():
    return double(1) + boom(2)


def test_a_failed_task_call_raises_in_the_body(on):
    with pytest.raises(ValueError, match="boom 2"):
        raises_from_a_called_task(cluster=on)


@task(retries=2, retry_delay_seconds=[0.2, 0.2])
def flaky(folder: str) -> int:
    count = _count(folder, "flaky")
    if count < 3:
        raise OSError(f"attempt {count} failed")
    return count


@flow
def retried(folder: str):
    return flaky(folder)


def test_retries_and_retry_delay_seconds(on, tmp_path):
    start = time.monotonic()
    run = retried.run(str(tmp_path), cluster=on, progress=False)
    assert run.result() == 3
    assert run.states["flaky"].attempts == 3
    assert time.monotonic() - start >= 0.4  # both delays waited


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
def fetch(folder: str, page: int) -> str:
    return f"page {page} call {_count(folder, 'fetch')}"


@task(cache_key_fn=lambda context, parameters: f"{context.task.name}-{parameters['page']}",
      cache_expiration=0.5)
def short_lived(folder: str, page: int) -> str:
    return f"page {page} call {_count(folder, 'short')}"


@task(cache_policy=INPUTS)
def by_inputs(folder: str, page: int) -> int:
    return _count(folder, "inputs")


@flow
def cached(folder: str, page: int):
    return [fetch(folder, page), short_lived(folder, page), by_inputs(folder, page)]


def test_cache_key_fn_cache_expiration_and_cache_policy(on, tmp_path):
    folder = str(tmp_path)
    assert cached(folder, 1, cluster=on) == ["page 1 call 1", "page 1 call 1", 1]
    assert cached(folder, 1, cluster=on) == ["page 1 call 1", "page 1 call 1", 1]   # cached
    assert cached(folder, 2, cluster=on) == ["page 2 call 2", "page 2 call 2", 2]   # new inputs
    time.sleep(0.6)  # short_lived's results expired, fetch's have not
    assert cached(folder, 1, cluster=on) == ["page 1 call 1", "page 1 call 3", 1]


def _record(folder: str, line: str) -> None:
    with open(os.path.join(folder, "hooks"), "a") as f:
        f.write(line + "\n")


def task_hook(task, task_run, state):
    _record(task_run.parameters["folder"], f"task {task.name} {task_run.name} {state.name}")


def flow_hook(flow, flow_run, state):
    _record(flow_run.parameters["folder"], f"flow {flow.name} {state.name}")


@task(on_failure=[task_hook])
def failing_with_hook(folder: str):
    raise RuntimeError("no")


@task
def completing(folder: str):
    return 1


@completing.on_completion
def decorated_hook(task, task_run, state):
    _record(task_run.parameters["folder"], f"decorated {task.name} {state.name}")


@flow(on_completion=[flow_hook])
def hooked(folder: str):
    completing(folder)
    failing_with_hook.submit(folder).wait()
    return "done"


def test_hooks_take_prefects_three_arguments(on, tmp_path):
    assert hooked(str(tmp_path), cluster=on) == "done"
    lines = (tmp_path / "hooks").read_text().splitlines()
    assert sorted(lines) == ["decorated completing Completed",
                             "flow hooked Completed",
                             "task failing_with_hook failing_with_hook Failed"]


@task
def where() -> str:
    return get_worker().scheduler.address


@flow
def located():
    return where()


def test_dask_task_runner_attaches_to_a_scheduler(client):
    address = client.scheduler.address
    attached = located.with_options(task_runner=DaskTaskRunner(address=address))
    assert attached() == address
    assert client.status == "running"  # a cluster it attached to is not closed


class RecordedCluster(LocalCluster):
    started: list[LocalCluster] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordedCluster.started.append(self)


@task
def in_process() -> int:
    return os.getpid()


@flow(task_runner=DaskTaskRunner(cluster_class=RecordedCluster,
                                 cluster_kwargs={"n_workers": 1, "processes": False,
                                                 "dashboard_address": ":0"},
                                 adapt_kwargs={"minimum": 1, "maximum": 1}))
def on_a_temporary_cluster():
    return in_process()


def test_dask_task_runner_starts_a_temporary_cluster_and_closes_it(cleanup):  # noqa: F811
    RecordedCluster.started.clear()
    assert on_a_temporary_cluster() == os.getpid()  # processes=False: in this process
    (cluster,) = RecordedCluster.started
    assert cluster.status.name == "closed"
    assert on_a_temporary_cluster() == os.getpid()  # one per run
    assert len(RecordedCluster.started) == 2
    assert RecordedCluster.started[1].status.name == "closed"


def test_dask_task_runner_by_import_path_and_its_mistakes():
    runner = DaskTaskRunner(cluster_class="distributed.LocalCluster")
    assert runner.as_cluster().cluster_class is LocalCluster
    with pytest.raises(df.ClusterError, match="cannot import"):
        DaskTaskRunner(cluster_class="no_such_package.Cluster").as_cluster()
    with pytest.raises(df.ClusterError, match="not both"):
        DaskTaskRunner(address="tcp://127.0.0.1:1", cluster_kwargs={"n_workers": 1})
    assert prefect_dask.DaskTaskRunner is DaskTaskRunner


@flow
def plain():
    return 1


def test_refused_features_say_which_and_what_to_do():
    cases = [
        (lambda: plain.deploy(name="x", work_pool_name="pool"), "flow.deploy()"),
        (lambda: plain.to_deployment(name="x"), "flow.to_deployment()"),
        (lambda: get_client(), "get_client()"),
        (lambda: variables.get("x"), "prefect.variables"),
        (lambda: blocks.system, "prefect.blocks"),
        (lambda: task(refresh_cache=True)(lambda: 1), "refresh_cache"),
        (lambda: double.submit(1), "double.submit() outside a flow"),
        (lambda: rate_limit("github-api", strict=True), "rate_limit"),
        (lambda: task(cache_policy=RUN_ID)(lambda: 1), "cache_policy=RUN_ID"),
        (lambda: plain.serve(name="x", rrule="FREQ=DAILY"), "flow.serve(rrule"),
    ]
    for call, feature in cases:
        with pytest.raises(PrefectFeatureNotSupported) as info:
            call()
        assert isinstance(info.value, df.DaskflowError)
        message = str(info.value)
        assert feature in message and "Prefect 3" in message, message
    rate_limit("github-api")  # not strict: goes on, as Prefect does for a missing limit


def test_a_transactions_rollback_hooks_get_the_value_to_undo(on, tmp_path):
    from daskflow.compat.prefect.transactions import transaction

    undone = tmp_path / "undone"

    def undo(txn):
        with open(undone, "a") as f:
            f.write(f"{txn.key}={txn.get('result')}\n")

    @task(on_rollback=[undo], persist_result=True, result_storage=str(tmp_path / "store"))
    def write(x):
        return x * 10

    @task
    def explode(x):
        raise ValueError(x)

    @flow
    def pipeline():
        with transaction():
            write(1)
            explode.submit(2)

    run = pipeline.run(cluster=on)  # Completed, as in Prefect 3: it returns no failure
    assert run.states["explode"].is_failed()
    assert undone.read_text().split() == ["write=10"]
    assert run.states["write"].name == "RolledBack"


def test_unknown_options_are_errors():
    with pytest.raises(df.FlowDefinitionError, match="retry_delays"):
        task(retry_delays=1)(lambda: 1)
    with pytest.raises(df.FlowDefinitionError, match="taskrunner"):
        flow(taskrunner=None)(lambda: 1)


def test_names_and_options_as_prefect_gives_them():
    assert plain.name == "plain"
    assert values.name == "values"
    assert flow(lambda: 1, name="x").name == "x"

    @flow(retries=2, retry_delay_seconds=3, timeout_seconds=60, log_prints=True)
    def show_stars():
        pass

    assert (show_stars.name, show_stars.retries, show_stars.timeout) == ("show-stars", 2, 60)
    again = show_stars.with_options(retries=0)
    assert (again.retries, again.timeout, again.log_prints) == (0, 60, True)
