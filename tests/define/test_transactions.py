"""Transactions: ``with df.transaction():`` stages its tasks' stored results and
commits them when every task completed, or rolls back (``on_rollback``
hooks newest first, RolledBack states, nothing stored) when one failed."""

from __future__ import annotations

import glob
import json
import os
import time

import dask
import pytest
from common_tasks import journal, lose_a_result, note, wait_for_go

import daskflow as df
from daskflow.worker import store


def record(tag):
    """A hook appending [tag, task run, state name, end] to the run's ``path``."""

    def hook(task, state):
        with open(df.context().parameters["path"], "a") as f:
            f.write(json.dumps([tag, state.task_name, state.name, state.end]) + "\n")

    hook.__name__ = f"record_{tag}"
    return hook


def calls(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def stored(where):
    """The task names with a result in the store at ``where``."""
    return sorted(r["task"] for r in store.records(where))


def staged(where):
    return glob.glob(os.path.join(where, ".staged", "*", "*.json"))


HOOKS = {"on_commit": [record("commit")], "on_rollback": [record("rollback")]}


@df.task(persist=True, **HOOKS)
def first(path, x):
    time.sleep(0.01)  # the chain's end times are apart
    return x + 1


@df.task(persist=True, **HOOKS)
def second(x):
    time.sleep(0.01)
    return x * 10


@df.task(persist=True, **HOOKS)
def third(x, fail):
    if fail:
        raise ValueError(f"third got {x}")
    return x


@df.flow
def chain(path: str, fail: bool):
    with df.transaction():
        c = third(second(first(path, 1)), fail)
    return c


def test_commit_on_success(on, tmp_path):
    path, where = str(tmp_path / "hooks"), str(tmp_path / "store")
    with dask.config.set({"daskflow.results.storage": where}):
        run = chain.run(path, False, cluster=on, progress=False)
    assert run.result() == 20
    assert run.states["transaction"].name == "Committed"
    assert [s.name for k, s in run.states.items() if k != "transaction"] == ["Completed"] * 3
    assert stored(where) == ["first", "second", "third"] and not staged(where)
    assert [c[:3] for c in calls(path)] == [["commit", "first", "Completed"],
                                            ["commit", "second", "Completed"],
                                            ["commit", "third", "Completed"]]  # build order


def test_rollback_newest_first_and_nothing_committed(on, tmp_path):
    path, where = str(tmp_path / "hooks"), str(tmp_path / "store")
    with dask.config.set({"daskflow.results.storage": where}):
        run = chain.run(path, True, cluster=on, progress=False)
    assert run.state.is_failed()
    assert {k: s.name for k, s in run.states.items()} == {
        "first": "RolledBack", "second": "RolledBack", "third": "Failed",
        "transaction": "RolledBack"}
    assert run.states["first"].is_completed()  # RolledBack is Completed, as in Prefect 3
    assert stored(where) == [] and not staged(where)  # the data files are gone too
    assert not [p for p in glob.glob(f"{where}/*/*") if p.endswith(".data")]
    hooks = calls(path)
    assert [c[:3] for c in hooks] == [["rollback", "second", "RolledBack"],
                                      ["rollback", "first", "RolledBack"]]
    assert hooks[0][3] > hooks[1][3]  # newest first, by end time


@df.task(**HOOKS)
def part(path, name, fail=False):
    if fail:
        raise RuntimeError(name)
    return name


@df.flow
def nested(path: str, fail_inner: bool, fail_outer: bool):
    with df.transaction():
        a = part(path, "a")
        with df.transaction():
            b = part.map(path, ["b0", "b1"], fail_inner)
        c = part(path, "c", fail_outer, wait_for=[b])
    return a, b, c


@pytest.mark.parametrize("inner, outer", [(False, False), (True, False), (False, True)])
def test_nested_transactions_decide_with_the_outermost(on, tmp_path, inner, outer):
    path = str(tmp_path / "hooks")
    run = nested.run(path, inner, outer, cluster=on, progress=False)
    assert [k for k in run.states if "transaction" in k] == ["transaction"]  # one commit
    names = {k: s.name for k, s in run.states.items()}
    hooks = [c[:2] for c in calls(path)]
    ends = [c[3] for c in calls(path)]
    if not (inner or outer):
        assert names["transaction"] == "Committed"
        assert hooks == [["commit", "part"], ["commit", "part-2[0]"], ["commit", "part-2[1]"],
                         ["commit", "part-3"]]  # build order
    elif inner:  # the inner one failed: the outer one rolls back (c did not run)
        assert names == {"part": "RolledBack", "part-2[0]": "Failed", "part-2[1]": "Failed",
                         "part-3": "TriggerFailed", "transaction": "RolledBack"}
        assert hooks == [["rollback", "part"]]
    else:  # the outer one failed: the inner one's tasks roll back too, newest first
        assert names["part-2[0]"] == names["part-2[1]"] == names["part"] == "RolledBack"
        assert sorted(hooks) == [["rollback", "part"], ["rollback", "part-2[0]"],
                                 ["rollback", "part-2[1]"]]
        assert ends == sorted(ends, reverse=True)


def journal_rollback(task, state):
    note(df.context().parameters["log"], f"rollback-{state.task_name}-{state.name}")


@df.task(on_rollback=[journal_rollback])
def written(handle, fail=False):
    if fail:
        raise ValueError("no")
    return handle


@df.flow
def in_block(log: str):
    with journal(log, "db") as handle:
        with df.transaction():
            w = written(handle)
            written(handle, True, wait_for=[w])
    return w


def test_a_transaction_inside_a_resource_block(on, tmp_path):
    """The block's cleanup waits for the transaction's end: rollback hooks run
    while the resource is still open."""
    log = str(tmp_path / "journal")
    run = in_block.run(log, cluster=on, progress=False)
    assert run.states["written"].name == "RolledBack"
    assert run.states["written-2"].is_failed() and run.states["journal.cleanup"].is_completed()
    with open(log) as f:
        lines = [line.split(":")[0] for line in f.read().splitlines()]
    assert lines == ["open-db", "rollback-written-RolledBack", "close-db"]


@df.task(persist=True, on_commit=[record("commit")])
def kept(path):
    return 10


@df.task(persist=True)
def add_after_go(x, go):
    return x + go


@df.flow
def kept_then_needed(path: str, where: str):
    with df.transaction():
        return add_after_go(kept(path), wait_for_go(where))


def test_a_worker_lost_mid_transaction_commits_once(processes, tmp_path):
    """The worker holding a member's result is killed before the member that
    needs it runs: Dask runs the member again (it stages again); the
    transaction commits once, with one stored result per member."""
    path, where = str(tmp_path / "hooks"), str(tmp_path / "store")
    with dask.config.set({"daskflow.results.storage": where}):
        run, _ = lose_a_result(
            processes, str(tmp_path), lambda client: kept_then_needed.submit(
                path, str(tmp_path), cluster=client, progress=False), "kept")
    assert run.result() == 11
    assert run.states["kept"].reruns == 1  # it did run again
    assert run.states["transaction"].name == "Committed"
    assert [c[:2] for c in calls(path)] == [["commit", "kept"]]  # once
    assert stored(where) == ["add_after_go", "kept"] and not staged(where)
    assert len(glob.glob(f"{where}/*/*.data")) == 2  # the first run's staged data is gone


def test_transaction_misuse():
    with pytest.raises(df.FlowDefinitionError, match="groups the tasks of a flow body"):
        with df.transaction():
            pass
    with pytest.raises(df.FlowDefinitionError, match="non-empty str"):
        df.transaction(name="")
    t = df.task(lambda: 1, name="t")

    @t.on_rollback
    def undo(task, state):
        pass

    assert t.on_rollback == (undo,) and t.with_options(name="u").on_rollback == (undo,)


@df.flow
def waits_inside(path: str):
    with df.transaction():
        a = part(path, "a")
        if a.result() == "a":  # a wait: the members so far are submitted first
            part(path, "b", True)
    return a


def test_a_transaction_across_a_wait(on, tmp_path):
    path = str(tmp_path / "hooks")
    run = waits_inside.run(path, cluster=on, progress=False)
    assert run.states["part"].name == "RolledBack" and run.states["part-2"].is_failed()
    assert run.states["transaction"].name == "RolledBack"
    assert [c[:2] for c in calls(path)] == [["rollback", "part"]]
