"""Argument checks in the library's one style, for code built on ``analysis_lib``.

``TypeError`` for a wrong type, ``ValueError`` for a bad value; the message names the
argument, what is allowed and what was given::

    >>> from analysis_lib.checks import check_positive_int
    >>> check_positive_int("max_zips", 0)
    Traceback (most recent call last):
    ...
    ValueError: `max_zips` must be a positive int; got 0
"""

from ._checks import (
    check_choice,
    check_fields,
    check_names,
    check_positive_int,
    check_positive_number,
    check_queryset,
    check_type,
    fail_type,
    fail_value,
)

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
