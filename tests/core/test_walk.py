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


def test_subclasses_are_walked_and_keep_their_type():
    Pair = collections.namedtuple("Pair", "a b")
    ordered = collections.OrderedDict(a=1)
    counts = collections.defaultdict(list, a=1)
    assert transform(Pair(1, 2), _double) == Pair(2, 4)
    assert type(transform(ordered, _double)) is collections.OrderedDict
    rebuilt = transform(counts, _double)
    assert rebuilt == {"a": 2} and rebuilt.default_factory is list
    names = collections.OrderedDict(a="x")
    assert transform(names, _double) is names  # nothing replaced: the same object
    assert list(inside([Pair(1, [2])])) == [[Pair(1, [2])], Pair(1, [2]), 1, [2], 2]


def test_copy_all_gives_new_containers_even_when_nothing_changed():
    value = {"rows": [[1], [2]], "seen": set()}
    copied = transform(value, lambda v: v, copy_all=True)
    assert copied == value
    assert copied is not value and copied["rows"] is not value["rows"]
    assert copied["rows"][0] is not value["rows"][0] and copied["seen"] is not value["seen"]


def test_a_replaced_container_is_not_walked_into():
    def whole(v):
        return "whole" if v == [1, 2] else v

    assert transform({"x": [1, 2], "y": [3]}, whole) == {"x": "whole", "y": [3]}


def test_inside_yields_dict_values_not_keys():
    assert list(inside({"key": "value"})) == [{"key": "value"}, "value"]


def test_is_mappable_is_prefect_3s_rule(tmp_path):
    """Mapped over: what iter() takes, but str, bytes and file objects."""
    import enum
    import io

    from daskflow.core.walk import is_mappable

    Color = enum.Enum("Color", "RED BLUE")
    with open(tmp_path / "f.txt", "w") as fh:
        assert not is_mappable(fh)
    for whole in ("abc", b"abc", io.BytesIO(b"x"), io.StringIO("x"), 0.5, 3, None, True,
                  object(), len, list):
        assert not is_mappable(whole), whole
    for mapped in ([], (1,), {1}, frozenset(), {"a": 1}, range(3), iter([1]),
                   (i for i in range(2)), bytearray(b"ab"), Color):
        assert is_mappable(mapped), mapped
