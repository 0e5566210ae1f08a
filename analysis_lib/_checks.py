"""Argument checks shared by every public function, command and importer: one style.

A wrong *type* raises :class:`TypeError`, a wrong *value* of the right type raises
:class:`ValueError`. Every message has one shape::

    `chunk_size` must be a positive int; got 0
    `engine` must be one of 'auto', 'dbapi', 'adbc'; got 'fast'
    `fields` must be fields of Building (footprint_m2, height_m, id, ...); got 'hight_m'

The argument is named in backticks, then what is allowed, then what was given (``repr``). The
checks run before any query, so a bad argument never costs a database round trip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "check_choice",
    "check_fields",
    "check_names",
    "check_positive_int",
    "check_positive_number",
    "check_queryset",
    "check_type",
    "fail_type",
    "fail_value",
]


def _given(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail_type(name: str, expected: str, value: Any) -> TypeError:
    """Return the TypeError for argument ``name``: it should be ``expected``, it was ``value``."""
    return TypeError(f"`{name}` must be {expected}; got {_given(value)} ({type(value).__name__})")


def fail_value(name: str, expected: str, value: Any) -> ValueError:
    """Return the ValueError for argument ``name``: it should be ``expected``, it was ``value``."""
    return ValueError(f"`{name}` must be {expected}; got {_given(value)}")


def check_type(
    name: str,
    value: Any,
    types: type | tuple[type, ...],
    expected: str,
    *,
    allow_none: bool = False,
) -> None:
    """Raise TypeError unless ``value`` is an instance of ``types`` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise fail_type(name, expected, value)
    if not isinstance(value, types):
        raise fail_type(name, expected, value)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise TypeError unless ``value`` is an int (not bool), ValueError unless it is >= 1."""
    if value is None and allow_none:
        return
    expected = "a positive int" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail_type(name, expected, value)
    if value < 1:
        raise fail_value(name, expected, value)


def check_positive_number(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise TypeError unless ``value`` is a real number, ValueError unless finite and > 0."""
    if value is None and allow_none:
        return
    expected = "a positive number" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail_type(name, expected, value)
    if not (math.isfinite(value) and value > 0):
        raise fail_value(name, expected, value)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise fail_value(name, "one of " + ", ".join(repr(a) for a in allowed), value)


def check_queryset(name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is a QuerySet (a Manager gets a hint: ``.all()``)."""
    from django.db.models import Manager, QuerySet

    if isinstance(value, QuerySet):
        return
    expected = "a django.db.models.QuerySet"
    if isinstance(value, Manager):
        expected += f" (call .all() on the manager: {value.model.__name__}.objects.all())"
    raise fail_type(name, expected, value)


def check_names(name: str, value: Any, *, allow_empty: bool = False) -> list[str]:
    """Return ``value`` as a list of str; TypeError unless a list/tuple of str, no duplicates."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise fail_type(name, "a list or tuple of names", value)
    for item in value:
        if not isinstance(item, str):
            raise fail_type(name, "a list or tuple of names (str)", item)
    if not value and not allow_empty:
        raise fail_value(name, "a non-empty list of names", value)
    seen: set[str] = set()
    for item in value:
        if item in seen:
            raise fail_value(name, "a list of distinct names", item)
        seen.add(item)
    return list(value)


def check_fields(name: str, model: Any, fields: Iterable[str], *, kinds: Any = None) -> None:
    """Raise ValueError unless every name in ``fields`` is a concrete field of ``model``.

    ``kinds`` (a field class or tuple of classes) further restricts which fields qualify, e.g.
    ``GeometryField``; the message lists the names that would have been accepted.
    """
    from django.core.exceptions import FieldDoesNotExist

    opts = model._meta
    valid = sorted(f.name for f in opts.concrete_fields if kinds is None or isinstance(f, kinds))
    for field in fields:
        try:
            found = opts.get_field(field)
        except FieldDoesNotExist:
            found = None
        if found is None or found.name not in valid:
            raise fail_value(
                name, f"fields of {model.__name__} ({', '.join(valid) or 'none'})", field
            )
