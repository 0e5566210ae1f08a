"""The plan: which SQL a QuerySet compiles to, and what pandas kind each selected column gets.

The queryset is compiled with ``QuerySet.values()`` semantics (filters, ordering, related
lookups and annotations all work) to SQL with its parameters; each selected column is given a
kind (int, float, bool, text, category, datetime, date, geometry, object) from its model field
or expression, before any row is fetched. Geometry columns are swapped for ``AsWKB(column)``
so that both engines receive WKB. The engines (:mod:`._dbapi`, :mod:`._adbc`) run the plan;
:mod:`._dtypes` turns each column into its pandas dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._checks import check_choice, check_names, check_positive_int, check_queryset
from ._engine import ENGINES

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from django.db.models import QuerySet

DEFAULT_CHUNK_SIZE = 50_000
GeometryFormat = Literal["shapely", "wkb"]
GEOMETRY_FORMATS = ("shapely", "wkb")
_WKB_ALIAS = "_analysis_lib_wkb_{}"

INT_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
    }
)
TEXT_TYPES = frozenset(
    {
        "CharField",
        "TextField",
        "SlugField",
        "EmailField",
        "URLField",
        "FilePathField",
        "GenericIPAddressField",
        "IPAddressField",
        "FileField",
        "ImageField",
    }
)


@dataclass(frozen=True)
class Column:
    """One output column: where it is in the SQL row and how to convert it."""

    name: str
    position: int
    kind: str  # int, float, bool, text, category, datetime, date, geometry, object
    nullable: bool = True
    categories: tuple[Any, ...] = ()
    srid: int | None = None
    wkb_selected: bool = False  # True: the SQL selects AsWKB(col); False: the backend's format
    converters: tuple[Callable[..., Any], ...] = ()
    expression: Any = None


@dataclass
class Plan:
    """Everything needed to run the query and build frames, fixed before any fetch."""

    model: Any
    db: str
    queryset: Any  # the final values() queryset (used for COUNT when progress=True)
    sql: str | None  # None when Django knows the result is empty (EmptyResultSet)
    params: tuple[Any, ...]
    columns: list[Column]
    geometry: str
    utc: bool


def check_arguments(
    queryset: Any, fields: Any, chunk_size: Any, geometry: Any, engine: Any = "auto"
) -> None:
    """Raise TypeError/ValueError for bad loader arguments, before touching the database."""
    check_choice("engine", engine, ENGINES)
    check_queryset("queryset", queryset)
    if fields is not None:
        check_names("fields", fields)
    check_positive_int("chunk_size", chunk_size)
    check_choice("geometry", geometry, GEOMETRY_FORMATS)


def _valid_names(queryset: QuerySet) -> list[str]:
    """Names QuerySet.values() accepts on this queryset's model, for error messages."""
    opts = queryset.model._meta
    names = {f.name for f in opts.get_fields()}
    names |= {f.attname for f in opts.concrete_fields}
    names |= set(queryset.query.annotation_select)
    names |= set(queryset.query.extra_select)
    return sorted(names)


def _values(queryset: QuerySet, fields: Sequence[str]) -> QuerySet:
    """``queryset.values(*fields)``, with FieldError turned into a ValueError naming the model."""
    from django.core.exceptions import FieldError

    try:
        return queryset.values(*fields)
    except FieldError as exc:
        opts = queryset.model._meta
        bad = [name for name in fields if _unresolvable(queryset, name)] or list(fields)
        relations = sorted(f.name for f in opts.get_fields() if f.is_relation)
        via = f"; related fields are reached with '__' through {', '.join(relations)}"
        # Django's own message lists the related model's fields for a bad 'a__b' lookup.
        detail = f" ({exc})" if any("__" in name for name in bad) else ""
        raise ValueError(
            f"unknown field {', '.join(map(repr, bad))} for model {opts.label}{detail}. "
            f"Valid names: {', '.join(_valid_names(queryset))}{via if relations else ''}"
        ) from exc


def _unresolvable(queryset: QuerySet, name: str) -> bool:
    from django.core.exceptions import FieldError

    try:
        queryset.values(name)
    except FieldError:
        return True
    return False


def _selected_names(query: Any) -> list[str]:
    """Column names of a values() query in SQL order (as Django's ValuesIterable names them)."""
    if query.selected:
        return list(query.selected)
    return [*query.extra_select, *query.values_select, *query.annotation_select]


def _compile(queryset: QuerySet) -> tuple[Any, str | None, tuple[Any, ...]]:
    """Compile a values() queryset; sql is None when the result is known to be empty."""
    from django.core.exceptions import EmptyResultSet

    compiler = queryset.query.get_compiler(using=queryset.db)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        # The select list is still needed for the column dtypes.
        compiler = queryset.query.get_compiler(using=queryset.db)
        compiler.setup_query()
        return compiler, None, ()
    if not sql:
        return compiler, None, ()
    return compiler, sql, tuple(params)


def _output_field(expression: Any) -> Any:
    from django.core.exceptions import FieldError

    try:
        return expression.output_field
    except (FieldError, AttributeError):
        return None


def _is_geometry(output_field: Any) -> bool:
    from django.contrib.gis.db.models import GeometryField

    return isinstance(output_field, GeometryField)


def _value_field(output_field: Any) -> Any:
    """Follow foreign keys to the field that holds the stored value."""
    seen = 0
    while output_field is not None and output_field.is_relation and seen < 10:
        target = getattr(output_field, "target_field", None)
        if target is None:
            break
        output_field = target
        seen += 1
    return output_field


def _describe(name: str, position: int, expression: Any, compiler: Any) -> Column:
    """Decide the pandas kind of one selected column from its model field or expression."""
    from django.db.models.expressions import Col
    from django.db.models.sql.constants import LOUTER

    out = _output_field(expression)
    nullable = True
    choices_field = out
    if isinstance(expression, Col):
        target = expression.target
        join = compiler.query.alias_map.get(expression.alias)
        outer = getattr(join, "join_type", None) == LOUTER
        nullable = bool(target.null or (out is not None and out.null) or outer)
        choices_field = target
    if out is None:
        return Column(name, position, "object", expression=expression)
    if _is_geometry(out):
        return Column(name, position, "geometry", srid=getattr(out, "srid", None))

    value_field = _value_field(out)
    converters = tuple(compiler.get_converters([expression]).get(0, ((), None))[0])
    if hasattr(value_field, "from_db_value") or hasattr(out, "from_db_value"):
        # A field with its own Python conversion (JSONField, custom fields): keep Django's.
        return Column(name, position, "object", converters=converters, expression=expression)
    choices = getattr(choices_field, "flatchoices", None) if not out.is_relation else None
    if choices:
        categories = tuple(dict.fromkeys(value for value, _label in choices))
        return Column(name, position, "category", nullable, categories=categories)
    internal = value_field.get_internal_type() if value_field is not None else ""
    if internal in INT_TYPES:
        return Column(name, position, "int", nullable)
    if internal == "FloatField":
        return Column(name, position, "float", nullable)
    if internal == "BooleanField":
        return Column(name, position, "bool", nullable)
    if internal in TEXT_TYPES:
        return Column(name, position, "text", nullable)
    if internal == "DateTimeField":
        return Column(name, position, "datetime", nullable)
    if internal == "DateField":
        return Column(name, position, "date", nullable)
    # DecimalField, UUIDField, TimeField, DurationField, BinaryField, ...: Django's converters.
    return Column(name, position, "object", nullable, converters=converters, expression=expression)


def _unique_alias(index: int, taken: set[str]) -> str:
    alias = _WKB_ALIAS.format(index)
    while alias in taken:
        alias = "_" + alias
    return alias


def make_plan(queryset: QuerySet, fields: Sequence[str] | None, geometry: str) -> Plan:
    """Validate the field names against the model and compile the query (no fetch yet)."""
    # shapely first: once SpatiaLite has loaded the system GEOS into the global symbol
    # scope, an extension module loaded later binds to that GEOS instead of its own.
    import shapely  # noqa: F401
    from django.conf import settings
    from django.contrib.gis.db.models.functions import AsWKB

    reuse_values = fields is None and queryset._fields is not None
    if reuse_values:
        # Already a values()/values_list() queryset: take its columns as they are.
        vqs = queryset
    elif fields is None:
        vqs = queryset.values()
    else:
        vqs = _values(queryset, fields)
    names = list(fields) if fields is not None else _selected_names(vqs.query)

    compiler, sql, params = _compile(vqs)
    selected = _selected_names(compiler.query)
    expressions = {n: compiler.select[i][0] for i, n in enumerate(selected)}
    geo = {
        n: getattr(_output_field(expressions[n]), "srid", None)
        for n in names
        if _is_geometry(_output_field(expressions[n]))
    }
    query = vqs.query
    # Swap each geometry column for AsWKB(column) unless the queryset's own values()
    # grouping or a union would change meaning when values() is applied again.
    can_swap = not query.combinator and not (reuse_values and query.group_by is not None)
    aliases: dict[str, str] = {}
    if geo and can_swap:
        taken = set(names) | set(query.annotations) | set(query.extra_select)
        aliases = {n: _unique_alias(i, taken) for i, n in enumerate(geo)}
        swapped = queryset.annotate(**{a: AsWKB(n) for n, a in aliases.items()})
        vqs = swapped.values(*[aliases.get(n, n) for n in names])
        compiler, sql, params = _compile(vqs)
        selected = _selected_names(compiler.query)
    position = {n: i for i, n in enumerate(selected)}
    columns = []
    for name in names:
        i = position[aliases.get(name, name)]
        if name in geo:
            column = Column(name, i, "geometry", srid=geo[name], wkb_selected=name in aliases)
        else:
            column = _describe(name, i, compiler.select[i][0], compiler)
        columns.append(column)
    return Plan(
        model=queryset.model,
        db=vqs.db,
        queryset=vqs,
        sql=sql,
        params=params,
        columns=columns,
        geometry=geometry,
        utc=bool(settings.USE_TZ),
    )


def progress_bar(plan: Plan) -> Any:
    """Return a tqdm bar over the plan's row count (one extra COUNT query)."""
    from tqdm.auto import tqdm

    return tqdm(total=plan.queryset.count(), unit="rows", desc=plan.model.__name__)
