"""The one walker over nested containers.

Task arguments, a flow's return value and a task's argument template may
hold lazy references (or their placeholders) anywhere inside tuples, lists,
sets, frozensets and dict values, subclasses included (a namedtuple, an
``OrderedDict``, a ``defaultdict``).  Every layer walks them with these two
functions, so that what the build finds is what the compiler, the cache
keys, the scatter plan and the worker see.  A rebuilt container keeps its
type: a namedtuple stays one, a ``defaultdict`` keeps its default factory.

:func:`is_mappable` is the one rule for what ``task.map`` maps over.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from typing import Any

SEQUENCES = (tuple, list, set, frozenset)
CONTAINERS = (*SEQUENCES, dict)
_EXACT = frozenset(CONTAINERS)
# Iterable, but one value to a user: ``.map`` gives them whole to every call.
WHOLE = (str, bytes, io.IOBase)


def is_mappable(value: Any) -> bool:
    """Whether ``task.map`` maps over ``value``: Prefect 3's rule.

    Anything ``iter()`` accepts is mapped over, in iteration order (a dict:
    its keys; a set: its order), except str, bytes and file objects; those,
    and everything not iterable (numbers, None, objects), are *static*:
    given whole to every call, as ``df.unmapped(value)`` is.

    >>> [is_mappable(v) for v in ([1], (1,), {"a": 1}, range(2), iter([1]))]
    [True, True, True, True, True]
    >>> [is_mappable(v) for v in ("ab", b"ab", 0.5, None, object())]
    [False, False, False, False, False]
    """
    if isinstance(value, WHOLE):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def is_container(value: Any) -> bool:
    """Whether the walker goes inside ``value``."""
    return type(value) in _EXACT or isinstance(value, CONTAINERS)


def transform(value: Any, fn: Callable[[Any], Any], copy_all: bool = False) -> Any:
    """``value`` rebuilt with ``fn(x)`` for everything ``x`` inside it.

    ``fn`` returns its argument itself to keep it (and, for a container, to
    walk into it), or a replacement.  Containers where nothing was replaced
    are returned as they are (the same object), so ``transform(v, fn) is v``
    says that nothing inside ``v`` was replaced; with ``copy_all`` every
    container is a new one (a task's arguments, which its code may change).

    >>> transform([1, (2, {"k": 3})], lambda x: x * 10 if type(x) is int else x)
    [10, (20, {'k': 30})]
    """
    new = fn(value)
    if new is not value:
        return new
    t = type(value)
    if t is tuple or t is list or t is set or t is frozenset or (
            t is not dict and isinstance(value, SEQUENCES)):
        if not value:
            return _rebuild(value, []) if copy_all else value
        items = [transform(v, fn, copy_all) for v in value]
        if not copy_all and all(a is b for a, b in zip(items, value)):
            return value
        return _rebuild(value, items)
    if t is dict or isinstance(value, dict):
        out = {k: transform(v, fn, copy_all) for k, v in value.items()}
        if not copy_all and all(out[k] is v for k, v in value.items()):
            return value
        if t is dict:
            return out
        rebuilt = copy.copy(value)  # a subclass: its type and its state (default_factory)
        rebuilt.update(out)
        return rebuilt
    return value


def _rebuild(value: Any, items: list) -> Any:
    t = type(value)
    if t is list or t is tuple or t is set or t is frozenset:
        return t(items)
    if isinstance(value, tuple):
        make = getattr(t, "_make", None)  # a namedtuple takes its fields one by one
        return make(items) if make is not None else t(items)
    if isinstance(value, frozenset):
        return t(items)
    rebuilt = copy.copy(value)  # a list or set subclass, with its own state
    rebuilt.clear()
    (rebuilt.extend if isinstance(rebuilt, list) else rebuilt.update)(items)
    return rebuilt


def inside(value: Any) -> Iterator[Any]:
    """Everything inside ``value`` (``value`` first), depth first.

    >>> list(inside([1, {"a": (2,)}]))
    [[1, {'a': (2,)}], 1, {'a': (2,)}, (2,), 2]
    """
    yield value
    if isinstance(value, dict):
        values: Any = value.values()
    elif isinstance(value, SEQUENCES):
        values = value
    else:
        return
    for v in values:
        if type(v) in _EXACT or isinstance(v, CONTAINERS):
            yield from inside(v)
        else:
            yield v
