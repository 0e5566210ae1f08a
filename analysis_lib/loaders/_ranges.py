"""Primary-key ranges: split a QuerySet into parts whose concatenation is the QuerySet.

Used by :func:`~analysis_lib.read_frame`'s parallel read and by the Dask partitions. Ranges are
half-open integer bounds ``(lo, hi)``: a part holds the rows with ``lo <= pk < hi``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._checks import check_positive_int
from ._plan import INT_TYPES

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from django.db.models import QuerySet

__all__ = ["in_range", "pk_ranges", "pk_span", "split_reason"]


def split_reason(queryset: QuerySet, *, ordered: bool = True) -> str | None:
    """Why ``queryset`` cannot be read as primary-key ranges (None: it can).

    Concatenating the parts gives the queryset's own result only without a slice, DISTINCT,
    a union, grouping or aggregates, with an integer primary key, and (when ``ordered``, as
    for read_frame, which keeps the queryset's order) no ordering but the primary key.
    """
    query, opts = queryset.query, queryset.model._meta
    pk = opts.pk
    internal = (pk.target_field if pk.is_relation else pk).get_internal_type()
    if internal not in INT_TYPES:
        return f"the primary key {opts.label}.{pk.name} is a {internal}, not an integer"
    if query.is_sliced:
        return "the queryset is sliced"
    if query.combinator:
        return f"a {query.combinator}() queryset"
    if query.distinct:
        return "the queryset is DISTINCT"
    if query.group_by is not None or any(
        getattr(a, "contains_aggregate", False) for a in query.annotations.values()
    ):
        return "the queryset groups rows or aggregates"
    if ordered:
        ordering = query.order_by or (opts.ordering if query.default_ordering else ())
        pk_names = ("pk", pk.name, pk.attname)
        if query.extra_order_by or any(key not in pk_names for key in ordering):
            return "the queryset is ordered by something other than the primary key"
    return None


def pk_span(queryset: QuerySet) -> tuple[int, int] | None:
    """Return the smallest and largest primary key of ``queryset`` (None when it is empty).

    Two ``ORDER BY pk LIMIT 1`` queries, each walking the primary-key index from one end; a
    ``MIN``/``MAX`` query scans the whole table on SQLite, whose min/max shortcut takes a single
    aggregate.

    Parameters
    ----------
    queryset : QuerySet
        A queryset with an integer primary key.

    Returns
    -------
    tuple of (int, int) or None
        ``(min_pk, max_pk)``, or None when the queryset has no rows.

    Examples
    --------
    >>> from analysis_lib.loaders import pk_span
    >>> from project.buildings.models import Building
    >>> pk_span(Building.objects.none()) is None  # doctest: +SKIP
    True
    """
    keys = queryset.values_list("pk", flat=True)
    lo, hi = keys.order_by("pk").first(), keys.order_by("-pk").first()
    if lo is None or hi is None:
        return None
    return int(lo), int(hi)


def pk_ranges(
    queryset: QuerySet, n: int, *, span: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """Split the primary keys of ``queryset`` into at most ``n`` half-open ranges of equal width.

    Parameters
    ----------
    queryset : QuerySet
        A queryset with an integer primary key.
    n : int
        How many ranges to make; fewer when the keys span fewer than ``n`` values.
    span : tuple of (int, int), optional
        ``(min_pk, max_pk)`` when the caller already has it (from :func:`pk_span`).

    Returns
    -------
    list of (int, int)
        ``[(lo, hi), ...]`` in key order, each selecting ``lo <= pk < hi``; together they cover
        every key of the queryset exactly once. An empty queryset gives ``[]``.

    Raises
    ------
    TypeError, ValueError
        If ``n`` is not a positive int.

    Examples
    --------
    >>> from analysis_lib.loaders import pk_ranges
    >>> pk_ranges(queryset, 2, span=(1, 10))  # doctest: +SKIP
    [(1, 6), (6, 11)]
    """
    check_positive_int("n", n)
    if span is None:
        span = pk_span(queryset)
    if span is None:
        return []
    lo, hi = span
    width = hi - lo + 1
    parts = min(n, width)
    edges = [lo + width * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def in_range(queryset: QuerySet, bounds: tuple[int, int]) -> QuerySet:
    """Filter ``queryset`` to the primary keys ``lo <= pk < hi`` of ``bounds = (lo, hi)``.

    Examples
    --------
    >>> from analysis_lib.loaders import in_range
    >>> part = in_range(Building.objects.all(), (1, 6))  # doctest: +SKIP
    """
    lo, hi = bounds
    return queryset.filter(pk__gte=lo, pk__lt=hi)
