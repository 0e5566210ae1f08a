"""QuerySet -> pandas loaders that hold one chunk of rows at a time.

The queryset is compiled to SQL with its parameters (``QuerySet.values()``
semantics, so filters, ordering, related lookups and annotations all work),
executed on a chunked cursor (a server-side named cursor on PostgreSQL, a
plain cursor read with ``fetchmany`` on SQLite), and every batch of tuples is
turned into a DataFrame column by column: no model instances and no per-row
Django converters. Column dtypes come from the model fields, and geometry
columns are selected as WKB (``AsWKB``) and decoded with one
``shapely.from_wkb`` call per chunk.

PostgreSQL: like ``QuerySet.iterator()``, this uses Django's
``chunked_cursor()``. In autocommit mode Django declares it ``WITH HOLD``, so
the server materialises the result (in its own memory or temp files) before
the first chunk arrives; inside ``transaction.atomic()`` rows stream straight
from the executor. The client holds one chunk either way.
``DISABLE_SERVER_SIDE_CURSORS`` (for pgbouncer) is honoured as Django does,
and then the driver receives the whole result at once.

Engines: ``engine="dbapi"`` is the path above. ``engine="adbc"`` runs the same
SQL on a second, Arrow-native connection (Apache Arrow ADBC:
``adbc-driver-sqlite`` with ``mod_spatialite`` loaded, ``adbc-driver-postgresql``
which reads with ``COPY ... BINARY``) and converts Arrow columns without one
Python object per value. A second connection cannot see the uncommitted writes
of Django's connection, so ADBC is only used outside ``transaction.atomic()``
and never on an in-memory SQLite database. ``engine="auto"`` (the default)
uses ADBC when the driver is installed and these conditions hold, else the
DB-API path, but only for ``read_frame``/``read_geodataframe``: ``iter_frames``
keeps the DB-API cursor unless ``engine="adbc"`` is asked for, because it holds
exactly one chunk (the PostgreSQL ADBC driver batches by bytes, not rows), and
because SQLite is dynamically typed and the ADBC driver infers each column's type from
its first batch and fails on a later batch of another type (a REAL column
whose first rows are NULL, for example): ``read_frame`` then reruns the query
on the DB-API path, which ``iter_frames`` cannot do once chunks have been
handed out.

Parallel reads: on the ADBC engine ``read_frame``/``read_geodataframe`` split a
queryset into primary-key ranges read at once, one connection and one thread
each (the driver steps SQLite, or decodes PostgreSQL's COPY stream, without
the GIL), when concatenating the ranges gives the queryset's own result (no
slice, DISTINCT, grouping, aggregate or union; no ordering but the integer
primary key). Each range is its own snapshot.
"""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import geopandas
    import numpy as np
    import pandas as pd
    from django.db.models import QuerySet

__all__ = ["iter_frames", "read_frame", "read_geodataframe"]

DEFAULT_CHUNK_SIZE = 50_000
# parallel=None splits a read only when its primary keys span at least this many values.
_AUTO_SPLIT_MIN_SPAN = 100_000
GeometryFormat = Literal["shapely", "wkb"]
_GEOMETRY_FORMATS = ("shapely", "wkb")
Engine = Literal["auto", "dbapi", "adbc"]
_ENGINES = ("auto", "dbapi", "adbc")
_ADBC_KINDS = frozenset(
    {"int", "float", "bool", "text", "category", "datetime", "date", "geometry"}
)
_ADBC_PARAM_TYPES = (bool, int, float, str, bytes)
_LIBPQ_OPTIONS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "connect_timeout",
        "application_name",
        "options",
        "target_session_attrs",
        "passfile",
        "service",
        "keepalives",
        "keepalives_idle",
    }
)
_WKB_ALIAS = "_analysis_lib_wkb_{}"

_INT_TYPES = frozenset(
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
_TEXT_TYPES = frozenset(
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


# ---------------------------------------------------------------------------
# The plan: which SQL to run and how to turn each selected column into pandas
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
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
class _Plan:
    """Everything needed to run the query and build frames, fixed before any fetch."""

    model: Any
    db: str
    queryset: Any  # the final values() queryset (used for COUNT when progress=True)
    sql: str | None  # None when Django knows the result is empty (EmptyResultSet)
    params: tuple[Any, ...]
    columns: list[_Column]
    geometry: str
    utc: bool


def _check_common(
    queryset: Any, fields: Any, chunk_size: Any, geometry: Any, engine: Any = "auto"
) -> None:
    """Raise TypeError/ValueError for bad arguments, before touching the database."""
    if engine not in _ENGINES:
        raise ValueError(f"engine was {engine!r} but is expected to be in {_ENGINES}")
    _require_queryset(queryset)
    if fields is not None:
        if isinstance(fields, str | bytes) or not isinstance(fields, Sequence):
            raise TypeError(
                "fields must be a list or tuple of field names (or None for all fields), "
                f"got {type(fields).__name__} {fields!r}"
            )
        if len(fields) == 0:
            raise ValueError("fields is empty: name at least one field, or pass None for all")
        for name in fields:
            if not isinstance(name, str):
                raise TypeError(
                    f"fields must hold field names as str, got {type(name).__name__} {name!r}; "
                    "annotate() expressions first and pass their names"
                )
        seen: set[str] = set()
        for name in fields:
            if name in seen:
                raise ValueError(f"fields names {name!r} twice; column names must be unique")
            seen.add(name)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if geometry not in _GEOMETRY_FORMATS:
        raise ValueError(f"geometry was {geometry!r} but is expected to be in {_GEOMETRY_FORMATS}")


def _require_queryset(queryset: Any, prefix: str = "") -> None:
    """Raise TypeError unless ``queryset`` is a QuerySet (a Manager gets a hint: ``.all()``)."""
    from django.db.models import Manager, QuerySet

    if not isinstance(queryset, QuerySet):
        hint = ""
        if isinstance(queryset, Manager):
            hint = f"; call .all() on the manager, e.g. {queryset.model.__name__}.objects.all()"
        raise TypeError(
            f"{prefix}queryset must be a django.db.models.QuerySet, "
            f"got {type(queryset).__name__}{hint}"
        )


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


def _describe(name: str, position: int, expression: Any, compiler: Any) -> _Column:
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
        return _Column(name, position, "object", expression=expression)
    if _is_geometry(out):
        return _Column(name, position, "geometry", srid=getattr(out, "srid", None))

    value_field = _value_field(out)
    converters = tuple(compiler.get_converters([expression]).get(0, ((), None))[0])
    if hasattr(value_field, "from_db_value") or hasattr(out, "from_db_value"):
        # A field with its own Python conversion (JSONField, custom fields): keep Django's.
        return _Column(name, position, "object", converters=converters, expression=expression)
    choices = getattr(choices_field, "flatchoices", None) if not out.is_relation else None
    if choices:
        categories = tuple(dict.fromkeys(value for value, _label in choices))
        return _Column(name, position, "category", nullable, categories=categories)
    internal = value_field.get_internal_type() if value_field is not None else ""
    if internal in _INT_TYPES:
        return _Column(name, position, "int", nullable)
    if internal == "FloatField":
        return _Column(name, position, "float", nullable)
    if internal == "BooleanField":
        return _Column(name, position, "bool", nullable)
    if internal in _TEXT_TYPES:
        return _Column(name, position, "text", nullable)
    if internal == "DateTimeField":
        return _Column(name, position, "datetime", nullable)
    if internal == "DateField":
        return _Column(name, position, "date", nullable)
    # DecimalField, UUIDField, TimeField, DurationField, BinaryField, ...: Django's converters.
    return _Column(name, position, "object", nullable, converters=converters, expression=expression)


def _unique_alias(index: int, taken: set[str]) -> str:
    alias = _WKB_ALIAS.format(index)
    while alias in taken:
        alias = "_" + alias
    return alias


def _make_plan(queryset: QuerySet, fields: Sequence[str] | None, geometry: str) -> _Plan:
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
            column = _Column(name, i, "geometry", srid=geo[name], wkb_selected=name in aliases)
        else:
            column = _describe(name, i, compiler.select[i][0], compiler)
        columns.append(column)
    return _Plan(
        model=queryset.model,
        db=vqs.db,
        queryset=vqs,
        sql=sql,
        params=params,
        columns=columns,
        geometry=geometry,
        utc=bool(settings.USE_TZ),
    )


# ---------------------------------------------------------------------------
# Rows -> columns -> DataFrame, vectorised per column
# ---------------------------------------------------------------------------


def _split_columns(rows: list[tuple[Any, ...]], width: int) -> list[np.ndarray]:
    """Transpose a list of row tuples into one object array per column."""
    import numpy as np

    if not rows:
        return [np.empty(0, dtype=object) for _ in range(width)]
    try:
        # The C routine DataFrame.from_records uses: about 3x faster than np.array(rows),
        # and it never descends into values that are themselves sequences.
        from pandas._libs.lib import to_object_array_tuples
    except ImportError:  # a pandas without it: the public, slower way
        n = len(rows)
        return [np.fromiter((r[i] for r in rows), dtype=object, count=n) for i in range(width)]
    block = to_object_array_tuples(rows)
    return [block[:, i] for i in range(width)]


def _null_mask(values: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.equal(values, None)


def _to_int(values: np.ndarray, nullable: bool) -> Any:
    import numpy as np
    import pandas as pd

    mask = _null_mask(values)
    if not nullable and not mask.any():
        return values.astype(np.int64)
    if mask.any():
        values = values.copy()
        values[mask] = 0
    return pd.arrays.IntegerArray(values.astype(np.int64), mask)


def _to_bool(values: np.ndarray, nullable: bool) -> Any:
    import pandas as pd

    mask = _null_mask(values)
    if not nullable and not mask.any():
        return values.astype(bool)
    if mask.any():
        values = values.copy()
        values[mask] = False
    return pd.arrays.BooleanArray(values.astype(bool), mask)


def _to_category(values: np.ndarray, column: _Column) -> Any:
    import pandas as pd

    dtype = pd.CategoricalDtype(list(column.categories))
    cat = pd.Categorical(values, dtype=dtype)
    lost = (cat.codes == -1) & ~_null_mask(values)
    if lost.any():
        extra = list(pd.unique(values[lost]))
        warnings.warn(
            f"column {column.name!r}: values not among the field's choices {extra[:10]!r}; "
            "they are kept as extra categories",
            UserWarning,
            stacklevel=4,
        )
        cat = pd.Categorical(values, categories=[*column.categories, *extra])
    return cat


def _to_geometry(values: np.ndarray, column: _Column, geometry: str) -> np.ndarray:
    import numpy as np
    import shapely

    mask = _null_mask(values)
    if mask.all():
        values = values.copy()
    elif isinstance(values[~mask][0], memoryview):  # psycopg2 returns bytea as memoryview
        values = np.array([None if v is None else bytes(v) for v in values], dtype=object)
    if geometry == "wkb" and column.wkb_selected:
        return values.copy()
    geoms = shapely.from_wkb(values)
    if geometry == "wkb":  # the backend's own format (EWKB or hex): normalise to ISO WKB
        return shapely.to_wkb(geoms, output_dimension=3)
    return geoms


def _convert(values: np.ndarray, column: _Column, plan: _Plan, connection: Any) -> Any:
    import numpy as np
    import pandas as pd

    kind = column.kind
    if kind == "int":
        return _to_int(values, column.nullable)
    if kind == "float":
        return values.astype(np.float64) if len(values) else np.empty(0, np.float64)
    if kind == "bool":
        return _to_bool(values, column.nullable)
    if kind == "text":
        return values.copy()
    if kind == "category":
        return _to_category(values, column)
    if kind == "datetime":
        return pd.to_datetime(values, utc=plan.utc, format="ISO8601")
    if kind == "date":
        return pd.to_datetime(values, format="ISO8601")
    if kind == "geometry":
        return _to_geometry(values, column, plan.geometry)
    if column.converters:
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            for converter in column.converters:
                value = converter(value, column.expression, connection)
            out[i] = value
        return out
    return values.copy()


def _frame(rows: list[tuple[Any, ...]], plan: _Plan, start: int, connection: Any) -> pd.DataFrame:
    """Build one DataFrame from a batch of row tuples, column by column."""
    import pandas as pd

    width = max(c.position for c in plan.columns) + 1
    raw = _split_columns(rows, width)
    data = {c.name: _convert(raw[c.position], c, plan, connection) for c in plan.columns}
    n = len(rows)
    frame = pd.DataFrame(data, index=pd.RangeIndex(start, start + n), copy=False)
    return frame


def _iter_plan(plan: _Plan, chunk_size: int, progress: bool) -> Iterator[pd.DataFrame]:
    """Run the planned query and yield one DataFrame per fetchmany() batch."""
    from django.db import connections

    connection = connections[plan.db]
    if plan.sql is None:
        yield _frame([], plan, 0, connection)
        return
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.queryset.count(), unit="rows", desc=plan.model.__name__)
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    cursor = connection.chunked_cursor() if server_side else connection.cursor()
    try:
        cursor.execute(plan.sql, plan.params)
        start = 0
        while True:
            rows = cursor.fetchmany(chunk_size)
            if not rows:
                break
            frame = _frame(rows, plan, start, connection)
            n = len(rows)
            rows = None  # drop the tuples before handing the frame over
            start += n
            if bar is not None:
                bar.update(n)
            yield frame
            frame = None  # hold nothing while the consumer works on the chunk
        if start == 0:
            yield _frame([], plan, 0, connection)
    finally:
        cursor.close()
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------
# The ADBC engine: the same SQL on an Arrow-native second connection
# ---------------------------------------------------------------------------


class _AdbcUnavailable(Exception):
    """The ADBC engine cannot run this plan; the message says why."""


class _AdbcMidStream(RuntimeError):
    """The ADBC engine failed after some chunks were already produced."""


class _AdbcRefused(ValueError):
    """``engine="adbc"`` was asked for and cannot run here (raised before any chunk)."""


_PLACEHOLDER = re.compile(r"%%|%s")


def _adbc_sql(sql: str, vendor: str) -> str:
    """Django's ``%s`` placeholders as ``?`` (SQLite) or ``$1, $2, ...`` (PostgreSQL)."""
    counter = iter(range(1, 1_000_000))

    def replace(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%"
        return "?" if vendor == "sqlite" else f"${next(counter)}"

    return _PLACEHOLDER.sub(replace, sql)


def _adbc_reason(plan: _Plan, connection: Any, iterating: bool, engine: str) -> str | None:
    """Why the ADBC engine cannot read this plan on this connection (None: it can)."""
    vendor = connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        return f"ADBC is only wired for SQLite and PostgreSQL, not {vendor}"
    module = "adbc_driver_sqlite" if vendor == "sqlite" else "adbc_driver_postgresql"
    try:
        __import__(f"{module}.dbapi")
    except ImportError:
        return f"the ADBC driver is not installed: pip install '{module.replace('_', '-')}>=1.13'"
    try:
        import pyarrow  # noqa: F401 - the driver imports without it, then fails to fetch
    except ImportError as exc:  # not installed, or kept out of this process on purpose
        return f"the ADBC engine needs pyarrow, which cannot be imported here: {exc}"
    if connection.in_atomic_block:
        return (
            "the Django connection is inside transaction.atomic(); a second (ADBC) connection "
            "would not see its uncommitted rows"
        )
    if vendor == "sqlite" and connection.is_in_memory_db():
        return "the SQLite database is in memory; a second (ADBC) connection cannot open it"
    if iterating and engine == "auto":
        # SQLite: the driver fixes column types from the first batch and could fail after
        # chunks were handed out. PostgreSQL: the driver batches by bytes (4 MiB here), not
        # by chunk_size, so the client holds more than one chunk (measured: peak at 1M rows
        # 1.40x the peak at 100k, against 1.12x for the named DB-API cursor).
        return (
            "iter_frames keeps the DB-API cursor unless engine='adbc' is asked for: it holds "
            "exactly one chunk, and on SQLite the ADBC driver could fail on a later batch"
        )
    for column in plan.columns:
        if column.kind not in _ADBC_KINDS:
            return f"column {column.name!r} needs Django's own converters"
        if column.kind == "geometry" and not column.wkb_selected:
            return f"geometry column {column.name!r} is not selected as WKB"
    for value in plan.params:
        if not isinstance(value, _ADBC_PARAM_TYPES):
            return f"a query parameter of type {type(value).__name__} cannot be bound by ADBC"
    return None


def _postgres_uri(settings_dict: dict[str, Any]) -> str:
    """Build a libpq URI from Django's connection settings (NAME, USER, PASSWORD, HOST, PORT)."""
    from urllib.parse import quote, urlencode

    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(settings_dict.get("HOST") or "")
    query: dict[str, str] = {}
    if host.startswith("/"):  # a Unix socket directory
        query["host"] = host
        host = ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    options = settings_dict.get("OPTIONS") or {}
    query.update({k: str(v) for k, v in options.items() if k in _LIBPQ_OPTIONS})
    name = quote(str(settings_dict.get("NAME") or ""), safe="")
    tail = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{auth}{quote(host, safe='')}{port}/{name}{tail}"


def _adbc_connect(connection: Any) -> Any:
    """Open the second, ADBC connection on the database Django's connection points at."""
    if connection.vendor == "sqlite":
        import adbc_driver_sqlite.dbapi

        conn = adbc_driver_sqlite.dbapi.connect(str(connection.settings_dict["NAME"]))
        if getattr(connection.ops, "spatialite", False):
            from django.conf import settings

            conn.enable_load_extension(True)
            paths = [getattr(settings, "SPATIALITE_LIBRARY_PATH", None), "mod_spatialite"]
            for path in [p for p in paths if p]:
                try:
                    conn.load_extension(path)
                    break
                except Exception as exc:  # noqa: BLE001 - the driver's error class varies
                    error = exc
            else:
                conn.close()
                raise _AdbcUnavailable(f"the ADBC SQLite driver cannot load SpatiaLite: {error}")
        return conn
    import adbc_driver_postgresql.dbapi

    return adbc_driver_postgresql.dbapi.connect(_postgres_uri(connection.settings_dict))


def _rechunk(reader: Any, chunk_size: int) -> Iterator[Any]:
    """Regroup a stream of Arrow record batches into tables of exactly ``chunk_size`` rows."""
    import pyarrow as pa

    pending: list[Any] = []
    held = 0
    for batch in reader:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_size)
            rest = table.slice(chunk_size)
            pending = rest.to_batches() if rest.num_rows else []
            held = rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def _writable(values: np.ndarray) -> np.ndarray:
    return values if values.flags.writeable else values.copy()


def _arrow_convert(array: Any, column: _Column, plan: _Plan, connection: Any) -> Any:
    """One Arrow column -> the same pandas values the DB-API path gives for it."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    kind, kind_type = column.kind, array.type
    numeric = pa.types.is_integer(kind_type) or pa.types.is_floating(kind_type)
    if pa.types.is_null(kind_type):
        # No typed value in the column: all NULL, converted as the DB-API path converts None.
        return _convert(np.full(len(array), None, dtype=object), column, plan, connection)
    if kind == "int" and pa.types.is_integer(kind_type):
        mask = array.is_null().to_numpy(zero_copy_only=False)
        values = _writable(array.fill_null(0).cast(pa.int64()).to_numpy())
        if not column.nullable and not mask.any():
            return values
        return pd.arrays.IntegerArray(values, mask)
    if kind == "float" and numeric:
        return _writable(array.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if kind == "bool" and (pa.types.is_boolean(kind_type) or pa.types.is_integer(kind_type)):
        mask = array.is_null().to_numpy(zero_copy_only=False)
        filled = array.fill_null(pa.scalar(False if pa.types.is_boolean(kind_type) else 0))
        values = _writable(filled.cast(pa.bool_()).to_numpy(zero_copy_only=False))
        if not column.nullable and not mask.any():
            return values
        return pd.arrays.BooleanArray(values, mask)
    if kind == "datetime" and pa.types.is_timestamp(kind_type):
        index = pd.DatetimeIndex(array.to_pandas())
        if plan.utc:
            index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return index.as_unit("ns")
    if kind == "date" and pa.types.is_date(kind_type):
        return pd.DatetimeIndex(array.cast(pa.timestamp("ns")).to_pandas()).as_unit("ns")
    if kind == "category":
        codes = _arrow_category_codes(array, column.categories)
        if codes is not None:
            dtype = pd.CategoricalDtype(list(column.categories))
            return pd.Categorical.from_codes(codes, dtype=dtype)
    binary = pa.types.is_binary(kind_type) or pa.types.is_large_binary(kind_type)
    if binary or pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type):
        values = array.to_numpy(zero_copy_only=False)
    else:  # anything unexpected: the Python values, converted exactly as on the DB-API path
        values = np.array(array.to_pylist(), dtype=object)
    return _convert(values, column, plan, connection)


def _arrow_category_codes(array: Any, categories: tuple[Any, ...]) -> np.ndarray | None:
    """Category codes of an Arrow column, looked up in C (-1 for NULL).

    None when a value is not among ``categories`` or they cannot take the column's type: the
    caller then converts as the DB-API path does (which warns and keeps the extra values).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind_type = array.type
    textual = pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type)
    wanted = str if textual else int
    if not (textual or pa.types.is_integer(kind_type)) or not all(
        type(c) is wanted for c in categories
    ):
        return None
    try:
        value_set = pa.array(categories, type=kind_type)
    except (pa.ArrowInvalid, OverflowError):
        return None
    codes = pc.index_in(array, value_set=value_set)
    if codes.null_count != array.null_count:  # some value outside the choices
        return None
    return codes.fill_null(-1).to_numpy(zero_copy_only=False)


def _arrow_frame(table: Any, plan: _Plan, start: int, connection: Any) -> pd.DataFrame:
    import pandas as pd

    data = {
        c.name: _arrow_convert(table.column(c.position).combine_chunks(), c, plan, connection)
        for c in plan.columns
    }
    return pd.DataFrame(data, index=pd.RangeIndex(start, start + table.num_rows), copy=False)


def _iter_adbc(
    plan: _Plan, chunk_size: int, progress: bool, shared_bar: Any = None
) -> Iterator[pd.DataFrame]:
    """Run the planned query on an ADBC connection and yield one DataFrame per chunk.

    Raises _AdbcUnavailable (before the first chunk) when the connection or the query fails,
    so that the caller can fall back to the DB-API path. ``shared_bar``: a tqdm bar owned by
    the caller (parallel parts), updated here instead of one of its own.
    """
    from django.db import connections

    connection = connections[plan.db]
    assert plan.sql is not None
    try:
        conn = _adbc_connect(connection)
    except _AdbcUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the driver's error classes
        raise _AdbcUnavailable(f"the ADBC connection failed: {exc}") from exc
    bar = None
    try:
        cursor = conn.cursor()
        if connection.vendor == "sqlite":
            cursor.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(min(chunk_size, 1_000_000))}
            )
        else:  # the driver's default batch is 16 MB: many chunks of a narrow row, held at once
            cursor.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(4 * 1024 * 1024)}
            )
        try:
            cursor.execute(_adbc_sql(plan.sql, connection.vendor), plan.params or None)
            reader = cursor.fetch_record_batch()
        except Exception as exc:  # noqa: BLE001
            raise _AdbcUnavailable(f"ADBC could not run the query: {exc}") from exc
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=plan.queryset.count(), unit="rows", desc=plan.model.__name__)
        start = 0
        chunks = _rechunk(reader, chunk_size)
        shown = bar if bar is not None else shared_bar
        while True:
            try:
                table = next(chunks)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - e.g. SQLite's type mismatch mid-stream
                if start == 0:
                    raise _AdbcUnavailable(f"ADBC failed reading the rows: {exc}") from exc
                raise _AdbcMidStream(
                    f"the ADBC engine failed after {start} rows were yielded: {exc}. "
                    "Read this queryset with engine='dbapi'"
                ) from exc
            frame = _arrow_frame(table, plan, start, connection)
            n = table.num_rows
            table = None
            start += n
            if shown is not None:
                shown.update(n)
            yield frame
            frame = None
        if start == 0:
            yield _frame([], plan, 0, connection)
    finally:
        if bar is not None:
            bar.close()
        conn.close()


def _iter_engine(
    plan: _Plan, chunk_size: int, progress: bool, engine: str, iterating: bool
) -> Iterator[pd.DataFrame]:
    """Pick the engine: ADBC when asked or possible, the DB-API path otherwise."""
    from django.db import connections

    if engine == "dbapi" or plan.sql is None:
        yield from _iter_plan(plan, chunk_size, progress)
        return
    connection = connections[plan.db]
    reason = _adbc_reason(plan, connection, iterating, engine)
    if reason is not None:
        if engine == "adbc":
            raise _AdbcRefused(f"engine='adbc' cannot be used: {reason}")
        yield from _iter_plan(plan, chunk_size, progress)
        return
    frames = _iter_adbc(plan, chunk_size, progress)
    if not iterating:
        # read_frame: nothing is handed out before the end, so any ADBC failure (SQLite's
        # type inference meeting another type in a later batch) can still fall back.
        try:
            collected = list(frames)
        except (_AdbcUnavailable, _AdbcMidStream) as exc:
            collected = None
            if engine == "adbc":
                raise _AdbcRefused(f"engine='adbc' cannot be used: {exc}") from exc
        if collected is None:
            yield from _iter_plan(plan, chunk_size, progress)
        else:
            yield from collected
        return
    try:
        first = next(frames)
    except _AdbcUnavailable as exc:
        if engine == "adbc":
            raise _AdbcRefused(f"engine='adbc' cannot be used: {exc}") from exc
        yield from _iter_plan(plan, chunk_size, progress)
        return
    yield first
    first = None
    yield from frames


def _split_bounds(queryset: QuerySet) -> tuple[int, int] | None:
    """Return the smallest and largest primary key, if ``queryset`` can be read in pk ranges.

    None when concatenating pk-range parts would not give the queryset's own result: a slice,
    DISTINCT, GROUP BY or aggregates, a union, an ordering other than the primary key, or a
    primary key that is not an integer.
    """
    from django.core.exceptions import FieldError

    query, opts = queryset.query, queryset.model._meta
    pk = opts.pk
    if pk.is_relation or pk.get_internal_type() not in _INT_TYPES:
        return None
    if query.is_sliced or query.distinct or query.combinator or query.group_by is not None:
        return None
    if any(getattr(a, "contains_aggregate", False) for a in query.annotations.values()):
        return None
    ordering = query.order_by or (opts.ordering if query.default_ordering else ())
    pk_names = ("pk", pk.name, pk.attname)
    if query.extra_order_by or any(key not in pk_names for key in ordering):
        return None
    try:
        return _pk_span(queryset)
    except FieldError:  # pragma: no cover - Django refused the pk lookup on this queryset
        return None


def _pk_span(queryset: QuerySet) -> tuple[int, int] | None:
    """Return the smallest and largest primary key of ``queryset`` (None when it is empty).

    Two ``ORDER BY pk LIMIT 1`` queries, each walking the primary-key index from one end. One
    ``MIN``/``MAX`` query would scan the whole table on SQLite, whose min/max shortcut takes a
    single aggregate.
    """
    keys = queryset.values_list("pk", flat=True)
    lo, hi = keys.order_by("pk").first(), keys.order_by("-pk").first()
    if lo is None or hi is None:
        return None
    return int(lo), int(hi)


def _read_split(
    queryset: QuerySet,
    fields: Sequence[str] | None,
    plan: _Plan,
    chunk_size: int,
    progress: bool,
    engine: str,
    parallel: int | None,
) -> list[pd.DataFrame] | None:
    """Read ``queryset`` as ``parallel`` primary-key ranges at once (None: does not apply).

    Each range runs on its own ADBC connection in its own thread: the driver and Arrow
    release the GIL. None tells the caller to read the queryset in one piece.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    parts = min(2, os.cpu_count() or 1) if parallel is None else parallel
    if parts < 2 or engine == "dbapi" or plan.sql is None:
        return None
    if _adbc_reason(plan, connections[plan.db], False, engine) is not None:
        return None
    bounds = _split_bounds(queryset)
    if bounds is None:
        return None
    lo, hi = bounds
    span = hi - lo + 1
    if span < (_AUTO_SPLIT_MIN_SPAN if parallel is None else parts):
        return None
    edges = [lo + span * i // parts for i in range(parts + 1)]
    plans = [
        _make_plan(queryset.filter(pk__gte=a, pk__lt=b), fields, plan.geometry)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.queryset.count(), unit="rows", desc=plan.model.__name__)
    try:
        with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="read_frame") as pool:
            futures = [pool.submit(_read_part, part, chunk_size, bar) for part in plans]
            errors = [f.exception() for f in futures]
    finally:
        if bar is not None:
            bar.close()
    failed = [e for e in errors if e is not None]
    if not failed:
        return [frame for future in futures for frame in future.result()]
    if not all(isinstance(e, _AdbcUnavailable | _AdbcMidStream) for e in failed):
        raise failed[0]
    if engine == "adbc":
        raise _AdbcRefused(f"engine='adbc' cannot be used: {failed[0]}") from failed[0]
    return list(_iter_plan(plan, chunk_size, progress))  # e.g. SQLite's type change


def _read_part(plan: _Plan, chunk_size: int, bar: Any) -> list[pd.DataFrame]:
    return list(_iter_adbc(plan, chunk_size, False, bar))


def _check_count(name: str, value: Any, *, allow_none: bool = True) -> None:
    """Raise TypeError/ValueError unless ``value`` is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}")


def _read_all(
    queryset: QuerySet,
    fields: Sequence[str] | None,
    plan: _Plan,
    chunk_size: int,
    progress: bool,
    engine: str,
    parallel: int | None,
) -> pd.DataFrame:
    """Read the whole result into one frame: in primary-key ranges at once where that applies."""
    with _gc_paused():
        frames = _read_split(queryset, fields, plan, chunk_size, progress, engine, parallel)
        if frames is None:
            frames = list(_iter_engine(plan, chunk_size, progress, engine, iterating=False))
        return _concat(frames)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while chunks pile up, then restore it.

    Every shapely geometry is a GC-tracked object: while a million of them accumulate, each
    full collection walks all of them again (measured: read_frame with geometry ~1.6x slower).
    Nothing the loader builds has reference cycles, so nothing is left for the GC to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate chunks, keeping categorical columns categorical."""
    import pandas as pd

    if len(frames) == 1:
        return frames[0]
    for name in frames[0].columns:
        dtypes = [f[name].dtype for f in frames]
        if isinstance(dtypes[0], pd.CategoricalDtype) and any(d != dtypes[0] for d in dtypes):
            # A chunk met values outside the choices: give every chunk the same categories.
            categories = list(dict.fromkeys(c for d in dtypes for c in d.categories))
            for f in frames:
                f[name] = f[name].cat.set_categories(categories)
    return pd.concat(frames, ignore_index=True, copy=False)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def iter_frames(
    queryset: QuerySet,
    fields: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    geometry: GeometryFormat = "shapely",
    progress: bool = False,
    engine: Engine = "auto",
) -> Iterator[pd.DataFrame]:
    """Yield a QuerySet's rows as pandas DataFrames of at most ``chunk_size`` rows.

    The queryset is compiled to SQL (with its parameters) and read with a
    chunked cursor: a server-side cursor on PostgreSQL, ``fetchmany`` on
    SQLite. No model instances are built and the loader holds one chunk of
    rows at a time, so memory does not grow with the size of the table.

    Column dtypes come from the model fields: ``int64`` (``Int64`` when the
    column can be NULL: a nullable field, a field reached through a LEFT JOIN,
    or an annotation), ``float64``, ``bool``/``boolean``, ``object`` for text,
    ``category`` with the field's choices as categories (the same in every
    chunk), ``datetime64[ns, UTC]`` for ``DateTimeField`` (naive when
    ``USE_TZ`` is off), ``datetime64[ns]`` for ``DateField``; foreign keys
    give the related id. Geometry columns are selected as WKB and decoded by
    ``shapely.from_wkb`` on the whole column. Other fields (decimals, UUIDs,
    JSON, ...) keep Django's own conversion, as ``object`` columns.

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet: filtered, ordered, annotated, sliced. Its ordering is
        kept. A queryset made with ``values(...)``/``values_list(...)`` is
        accepted: with ``fields=None`` its columns are used as they are.
    fields : sequence of str, optional
        Names as accepted by ``QuerySet.values()``: concrete fields (``"zip"``
        or ``"zip_id"`` give the foreign key's id), related lookups
        (``"zip__code"``) and annotation names. Columns are named as given.
        ``None`` selects what ``.values()`` gives: every concrete field
        (foreign keys as ``"<name>_id"``) and the queryset's annotations.
    chunk_size : int, default 50_000
        Rows per DataFrame (the last one may be shorter).
    geometry : {"shapely", "wkb"}, default "shapely"
        Geometry columns as shapely geometries, or as the WKB ``bytes``.
    progress : bool, default False
        Show a tqdm progress bar; it runs one extra ``COUNT`` query for the total.
    engine : {"auto", "dbapi", "adbc"}, default "auto"
        ``"dbapi"``: Django's cursor. ``"adbc"``: an Arrow-native second
        connection (packages ``adbc-driver-sqlite``/``adbc-driver-postgresql``),
        faster on plain columns; it cannot see uncommitted writes, so it is
        refused inside ``transaction.atomic()`` and on in-memory SQLite.
        ``"auto"``: DB-API for ``iter_frames`` (it holds exactly one chunk;
        see the module notes); ``read_frame`` uses ADBC when installed and allowed. Results are the
        same values and dtypes either way. On PostgreSQL the ADBC driver streams (``COPY``) only
        queries without parameters: with parameters libpq receives the whole result first, so
        ``iter_frames(engine="adbc")`` is then not bounded by ``chunk_size``.

    Returns
    -------
    Iterator[pandas.DataFrame]
        One DataFrame per chunk, indexed by row number in the whole result
        (the second chunk of 1,000 starts at 1000). An empty result yields a
        single empty DataFrame with the right columns and dtypes. The cursor
        is closed when the iterator is exhausted, closed or garbage collected.

    Raises
    ------
    TypeError
        If ``queryset`` is not a QuerySet, or ``fields``/``chunk_size`` have the wrong type.
    ValueError
        If a field name is unknown (the message names the model and its valid
        fields), a name is repeated, ``chunk_size < 1``, or ``geometry`` is not allowed;
        or, at the first ``next()``, ``engine="adbc"`` cannot be used here (the message
        says why).

    Examples
    --------
    >>> from analysis_lib import iter_frames
    >>> from project.buildings.models import Building
    >>> qs = Building.objects.filter(height_m__gt=10).order_by("id")
    >>> total = 0.0
    >>> for chunk in iter_frames(qs, ["id", "footprint_m2", "zip__code"], chunk_size=10_000):
    ...     total += chunk["footprint_m2"].sum()
    """
    _check_common(queryset, fields, chunk_size, geometry, engine)
    plan = _make_plan(queryset, fields, geometry)
    return _iter_engine(plan, chunk_size, progress, engine, iterating=True)


def read_frame(
    queryset: QuerySet,
    fields: Sequence[str] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    geometry: GeometryFormat = "shapely",
    index: str | None = None,
    progress: bool = False,
    engine: Engine = "auto",
    parallel: int | None = None,
) -> pd.DataFrame:
    """Load a whole QuerySet into one DataFrame, built from :func:`iter_frames` chunks.

    Same columns and dtypes as :func:`iter_frames`; the chunks are
    concatenated at the end, so the peak is about the finished frame plus
    its chunks, never a list of model instances.

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet (see :func:`iter_frames`).
    fields : sequence of str, optional
        Names as accepted by ``QuerySet.values()``; ``None`` for every concrete field.
    chunk_size : int, default 50_000
        Rows fetched per batch.
    geometry : {"shapely", "wkb"}, default "shapely"
        Geometry columns as shapely geometries, or as WKB ``bytes``.
    index : str, optional
        A selected column to use as the index (for example ``"id"``).
    progress : bool, default False
        Show a tqdm progress bar (runs one extra ``COUNT`` query).
    engine : {"auto", "dbapi", "adbc"}, default "auto"
        How rows are fetched (see :func:`iter_frames`). With ``"auto"`` an
        ADBC read that fails (e.g. a SQLite column whose type changes between
        batches) is rerun on the DB-API path.
    parallel : int, optional
        ADBC engine only: read this many primary-key ranges at once, each on
        its own connection in its own thread (the driver and Arrow release
        the GIL). Applies when concatenating the ranges gives the queryset's
        own result: no slice, DISTINCT, grouping or union, and no ordering
        other than the (integer) primary key. ``None`` (default): one range
        per core, up to 2, when the keys span at least 100,000 values; ``1``:
        one read. Each range is its own snapshot: a table written to during
        the read may give a result no single moment had; pass ``1`` then.

    Returns
    -------
    pandas.DataFrame
        All rows, in the queryset's order; zero rows give an empty frame
        with the right columns and dtypes.

    Raises
    ------
    TypeError
        If ``queryset`` is not a QuerySet, or an argument has the wrong type.
    ValueError
        If a field name is unknown, ``chunk_size < 1``, ``geometry`` is not
        allowed, ``index`` is not one of the selected columns, or
        ``engine="adbc"`` cannot be used here (the message says why).

    Examples
    --------
    >>> from analysis_lib import read_frame
    >>> from project.buildings.models import Building
    >>> df = read_frame(
    ...     Building.objects.filter(zip__code="01002"),
    ...     ["id", "height_m", "use_type", "zip__code"],
    ...     index="id",
    ... )
    >>> list(df.columns)
    ['height_m', 'use_type', 'zip__code']
    """
    _check_common(queryset, fields, chunk_size, geometry, engine)
    _check_count("parallel", parallel)
    plan = _make_plan(queryset, fields, geometry)
    names = [c.name for c in plan.columns]
    if index is not None and index not in names:
        raise ValueError(f"index {index!r} is not one of the selected columns {names}")
    frame = _read_all(queryset, fields, plan, chunk_size, progress, engine, parallel)
    if index is not None:
        frame = frame.set_index(index)
    return frame


def read_geodataframe(
    queryset: QuerySet,
    fields: Sequence[str] | None = None,
    *,
    geometry_field: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
    engine: Engine = "auto",
    parallel: int | None = None,
) -> geopandas.GeoDataFrame:
    """Load a QuerySet into a geopandas GeoDataFrame with the geometry field's CRS.

    Needs the optional dependency geopandas (``pip install 'analysis-lib[geo]'``).
    Rows are read in chunks exactly as by :func:`read_frame`; every geometry
    column becomes a GeoSeries with the CRS of its field's SRID.

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet (see :func:`iter_frames`).
    fields : sequence of str, optional
        Names as accepted by ``QuerySet.values()``; they must include a
        geometry field. ``None`` selects every concrete field.
    geometry_field : str, optional
        The active geometry column; by default the first geometry column selected.
    chunk_size : int, default 50_000
        Rows fetched per batch.
    progress : bool, default False
        Show a tqdm progress bar (runs one extra ``COUNT`` query).
    engine : {"auto", "dbapi", "adbc"}, default "auto"
        How rows are fetched (see :func:`iter_frames`). With ``"auto"`` an
        ADBC read that fails (e.g. a SQLite column whose type changes between
        batches) is rerun on the DB-API path.
    parallel : int, optional
        ADBC engine only: read this many primary-key ranges at once, each on
        its own connection in its own thread (the driver and Arrow release
        the GIL). Applies when concatenating the ranges gives the queryset's
        own result: no slice, DISTINCT, grouping or union, and no ordering
        other than the (integer) primary key. ``None`` (default): one range
        per core, up to 2, when the keys span at least 100,000 values; ``1``:
        one read. Each range is its own snapshot: a table written to during
        the read may give a result no single moment had; pass ``1`` then.

    Returns
    -------
    geopandas.GeoDataFrame
        The rows, with ``geometry_field`` as the active geometry.

    Raises
    ------
    ImportError
        If geopandas is not installed.
    TypeError
        If ``queryset`` is not a QuerySet, or an argument has the wrong type.
    ValueError
        If a field name is unknown, ``chunk_size < 1``, no geometry column is
        selected, ``geometry_field`` is not a selected geometry column, or
        ``engine="adbc"`` cannot be used here (the message says why).

    Examples
    --------
    >>> from analysis_lib import read_geodataframe
    >>> from project.buildings.models import Building
    >>> gdf = read_geodataframe(Building.objects.all(), ["id", "use_type", "boundary"])
    >>> str(gdf.crs)
    'EPSG:4326'
    """
    _check_common(queryset, fields, chunk_size, "shapely", engine)
    _check_count("parallel", parallel)
    try:
        import geopandas
    except ImportError as exc:
        raise ImportError(
            "read_geodataframe() needs the optional dependency geopandas: "
            "pip install 'analysis-lib[geo]' (or: conda install -c conda-forge geopandas)"
        ) from exc
    plan = _make_plan(queryset, fields, "shapely")
    geometry_columns = [c for c in plan.columns if c.kind == "geometry"]
    if not geometry_columns:
        raise ValueError(
            f"no geometry column among {[c.name for c in plan.columns]} "
            f"for model {plan.model._meta.label}; add one to fields"
        )
    if geometry_field is None:
        geometry_field = geometry_columns[0].name
    elif geometry_field not in {c.name for c in geometry_columns}:
        raise ValueError(
            f"geometry_field {geometry_field!r} is not a selected geometry column; "
            f"choose one of {[c.name for c in geometry_columns]}"
        )
    frame = _read_all(queryset, fields, plan, chunk_size, progress, engine, parallel)
    crs = {c.name: (f"EPSG:{c.srid}" if c.srid else None) for c in geometry_columns}
    for name, column_crs in crs.items():
        frame[name] = geopandas.GeoSeries(frame[name], crs=column_crs, index=frame.index)
    return geopandas.GeoDataFrame(frame, geometry=geometry_field, crs=crs[geometry_field])
