"""The one container walker: what it walks into, what it leaves alone."""

from __future__ import annotations

import collections

from daskflow.core.walk import inside, transform


def _double(v):
    return v * 2 if type(v) is int else v


def test_transform_replaces_leaves_in_every_container_kind():
    value = [1, (2, {"k": 3}), {4}, frozenset({5})]
    assert transform(value, _double) == [2, (4, {"k": 6}), {8}, frozenset({10})]


def test_transform_returns_the_same_object_when_nothing_changed():
    value = [("a", {"b": ["c"]}), {"d"}]
    assert transform(value, _double) is value
    changed = [("a", 1)]
    out = transform(changed, _double)
    assert out is not changed and out == [("a", 2)] and changed == [("a", 1)]


def test_subclasses_are_values_not_containers():
    Pair = collections.namedtuple("Pair", "a b")
    ordered = collections.OrderedDict(a=1)
    assert transform(Pair(1, 2), _double) == Pair(1, 2)
    assert transform(ordered, _double) is ordered
    assert list(inside([Pair(1, 2)])) == [[Pair(1, 2)], Pair(1, 2)]


def test_a_replaced_container_is_not_walked_into():
    def whole(v):
        return "whole" if v == [1, 2] else v

    assert transform({"x": [1, 2], "y": [3]}, whole) == {"x": "whole", "y": [3]}


def test_inside_yields_dict_values_not_keys():
    assert list(inside({"key": "value"})) == [{"key": "value"}, "value"]
