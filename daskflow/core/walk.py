"""The one walker over nested containers.

Task arguments, a flow's return value and a task's argument template may
hold lazy references (or their placeholders) anywhere inside tuples, lists,
sets, frozensets and dict values.  Every layer walks them with these two
functions and this one set of container types, so that what the build finds
is what the compiler, the cache keys, the scatter plan and the worker see.
Subclasses (a namedtuple, an OrderedDict) are values, not containers: they
are never rebuilt, so their type is never lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

SEQUENCES = (tuple, list, set, frozenset)
CONTAINERS = (*SEQUENCES, dict)


def transform(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` rebuilt with ``fn(x)`` for everything ``x`` inside it.

    ``fn`` returns its argument itself to keep it (and, for a container, to
    walk into it), or a replacement.  Containers where nothing was replaced
    are returned as they are (the same object), so ``transform(v, fn) is v``
    says that nothing inside ``v`` was replaced.

    >>> transform([1, (2, {"k": 3})], lambda x: x * 10 if type(x) is int else x)
    [10, (20, {'k': 30})]
    """
    new = fn(value)
    if new is not value:
        return new
    t = type(value)
    if (t is tuple or t is list or t is set or t is frozenset) and value:
        items = [transform(v, fn) for v in value]
        for a, b in zip(items, value):
            if a is not b:
                return t(items)
        return value
    if t is dict and value:
        out = {k: transform(v, fn) for k, v in value.items()}
        for k, v in value.items():
            if out[k] is not v:
                return out
        return value
    return value


def inside(value: Any) -> Iterator[Any]:
    """Everything inside ``value`` (``value`` first), depth first.

    >>> list(inside([1, {"a": (2,)}]))
    [[1, {'a': (2,)}], 1, {'a': (2,)}, (2,), 2]
    """
    yield value
    t = type(value)
    if t is tuple or t is list or t is set or t is frozenset:
        for v in value:
            yield from inside(v)
    elif t is dict:
        for v in value.values():
            yield from inside(v)
