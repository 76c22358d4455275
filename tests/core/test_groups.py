"""The one grouping of task runs, used by the summary, the progress display,
the notebook view and the report."""

from __future__ import annotations

from daskflow.core.groups import by_task, groups_of, task_group, worst
from daskflow.core.states import State, StateType


def test_a_map_child_belongs_to_its_task_and_other_labels_to_themselves():
    assert task_group("decode[12]") == "decode"
    assert task_group("sub/decode[0]") == "sub/decode"
    assert task_group("load") == "load"
    assert task_group("odd[name]") == "odd[name]"  # not an index: a name of its own


def test_by_task_keeps_first_appearance_order():
    grouped = by_task({"b[0]": 1, "a": 2, "b[1]": 3})
    assert list(grouped) == ["b", "a"] and grouped["b"] == [1, 3]


def test_groups_count_states_retries_and_the_worst():
    states = {"t[0]": State(StateType.COMPLETED, attempts=3),
              "t[1]": State(StateType.FAILED, attempts=1),
              "u": State(StateType.PENDING)}
    t, u = groups_of(states)
    assert (t.name, t.total, t.done, t.retries, t.worst) == ("t", 2, 2, 2, "FAILED")
    assert (u.name, u.done, u.worst) == ("u", 0, "PENDING")
    assert worst({"COMPLETED": 1, "SKIPPED": 1}) == "SKIPPED"
