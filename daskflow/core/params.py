"""Flow parameters checked against their type hints, and coerced as Prefect 3 does.

Without pydantic, a value must already be of its hinted type (a shallow
check that understands ``Optional``, ``Union``, ``list[int]``, ``Literal``).
With pydantic installed (``pip install 'daskflow[pydantic]'``), a value that
is not is validated as Prefect 3 validates parameters, in pydantic's lax
mode: ``"3"`` for an ``int`` becomes ``3``, a dict for a pydantic model
parameter becomes the model, a list of dicts for ``list[Model]`` a list of
models.  Pydantic stays optional: daskflow's other dependencies are Dask's,
and a model parameter needs pydantic anyway (its hint is a pydantic class).

A value already of its type is kept as it is (the same object: a large
array is never copied), except inside containers, which pydantic checks
element by element when it is installed.  ``True`` is never an ``int`` or a
``float`` here (a count or a size is never a bool).  Values holding task
references (a nested flow called inside a flow body) are checked shallowly.
"""

from __future__ import annotations

import functools
import typing
from typing import Any, TypeVar

from daskflow.exceptions import ParameterError

try:  # optional: coercion and model parameters
    import pydantic
except ImportError:  # pragma: no cover - exercised where pydantic is absent
    pydantic = None  # type: ignore[assignment]

_MISSING = object()


def coerce(value: Any, hint: Any, what: str, deep: bool = True) -> Any:
    """``value`` as a parameter of type ``hint``, or ParameterError naming ``what``.

    >>> coerce(3, int, "parameter 'n'")
    3
    """
    shallow = matches(value, hint)
    if not shallow and isinstance(value, bool) and _numbers_only(hint):
        raise ParameterError(f"{what} must be {hint_name(hint)}, got bool {value!r}")
    if shallow and (not deep or not _containers(hint)):
        return value
    adapter = adapter_for(hint) if pydantic is not None else None
    if adapter is None:
        if shallow:
            return value
        fix = "" if pydantic is not None else (
            " (with pydantic installed, values such as '3' for an int are coerced: "
            "pip install 'daskflow[pydantic]')")
        raise ParameterError(f"{what} must be {hint_name(hint)}, got {type(value).__name__} "
                             f"{value!r:.60}{fix}")
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as err:
        raise ParameterError(f"{what} must be {hint_name(hint)}, got "
                             f"{type(value).__name__} {value!r:.60}: "
                             f"{_first_error(err)}") from None


def _numbers_only(hint: Any) -> bool:
    """Whether a bool given for ``hint`` is a mistake: ``int``, ``float``, or a
    union of them (with None) that takes no bool."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    return any(h in (int, float) for h in options) and all(
        h in (int, float, type(None)) for h in options)


def _is_union(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin is typing.Union or (origin is not None and origin.__name__ == "UnionType")


def _containers(hint: Any) -> bool:
    """Whether a hint has arguments (``list[Model]``): pydantic checks inside."""
    return bool(typing.get_args(hint)) and typing.get_origin(hint) is not typing.Literal


@functools.lru_cache(maxsize=256)
def _adapter(hint: Any) -> Any:
    """A pydantic TypeAdapter for ``hint`` (arbitrary classes by isinstance),
    or None when pydantic cannot make one."""
    config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    try:
        return pydantic.TypeAdapter(hint, config=config)
    except pydantic.PydanticUserError:  # a model or dataclass has its own config
        try:
            return pydantic.TypeAdapter(hint)
        except Exception:
            return None
    except Exception:
        return None


def _first_error(err: Any) -> str:
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where + ': ' if where else ''}{first.get('msg', err)}"


def adapter_for(hint: Any) -> Any:
    """:func:`_adapter`, for hints that cannot be cached (unhashable)."""
    try:
        return _adapter(hint)
    except TypeError:
        return None


def matches(value: Any, hint: Any) -> bool:
    """A shallow isinstance check that understands Optional, Union, list[int], Literal."""
    if hint is Any or isinstance(hint, TypeVar):
        return True
    origin = typing.get_origin(hint)
    if _is_union(hint):
        return any(matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is not None:
        hint = origin
    if isinstance(value, bool) and hint in (int, float):
        return False  # True is an int to Python, never a count or a size to a user
    if hint is float and isinstance(value, int):
        return True  # PEP 484: an int is acceptable where a float is expected
    if hint is type(None):
        return value is None
    try:
        return isinstance(value, hint)
    except TypeError:
        return True


def hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint).replace("typing.", "")
