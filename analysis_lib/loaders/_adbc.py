"""The ADBC engine: the plan's SQL on a second, Arrow-native connection.

Apache Arrow ADBC drivers (``adbc-driver-sqlite`` with ``mod_spatialite`` loaded,
``adbc-driver-postgresql``, which reads with ``COPY ... BINARY``) hand back Arrow record
batches; they are regrouped into chunks of exactly ``chunk_size`` rows and converted without one
Python object per value, to the same dtypes as the DB-API engine (:mod:`._dtypes`). A second
connection cannot see the uncommitted writes of Django's connection, so ADBC refuses to run
inside ``transaction.atomic()`` and on an in-memory SQLite database; every refusal, and a failure
part-way through, is an :class:`~._engine.EngineUnavailable`.

Parallel reads: :func:`read_parallel` reads primary-key ranges (:mod:`._ranges`) at once, one
connection and one thread each (the driver steps SQLite, or decodes PostgreSQL's COPY stream,
without the GIL). Each range is its own snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._dbapi import frame_from_rows
from ._dtypes import DATETIME_UNIT, convert, to_text
from ._engine import EngineUnavailable
from ._plan import Column, Plan, make_plan, progress_bar
from ._ranges import in_range, pk_ranges, pk_span, split_reason

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import numpy as np
    import pandas as pd
    from django.db.models import QuerySet

# parallel=None splits a read only when its primary keys span at least this many values.
AUTO_SPLIT_MIN_SPAN = 100_000

ADBC_KINDS = frozenset({"int", "float", "bool", "text", "category", "datetime", "date", "geometry"})
ADBC_PARAM_TYPES = (bool, int, float, str, bytes)
#: What pyproject.toml asks for (PostgreSQL: 1.8, the newest wheel built with optimisation).
DRIVER_REQUIREMENTS = {
    "sqlite": "adbc-driver-sqlite>=1.13,<2",
    "postgresql": "adbc-driver-postgresql>=1.8,<1.9",
}
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


_PLACEHOLDER = re.compile(r"%%|%s")


def _adbc_sql(sql: str, vendor: str) -> str:
    """Django's ``%s`` placeholders as ``?`` (SQLite) or ``$1, $2, ...`` (PostgreSQL)."""
    counter = iter(range(1, 1_000_000))

    def replace(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%"
        return "?" if vendor == "sqlite" else f"${next(counter)}"

    return _PLACEHOLDER.sub(replace, sql)


#: PostgreSQL: the driver's batch size hint, bytes. Its default, 16 MB, is many chunks of a
#: narrow row held at once by iter_frames; a larger batch did not read faster (1M rows: the same
#: client CPU at 4 MiB and 64 MiB).
PG_BATCH_BYTES = 4 * 1024 * 1024

#: PostgreSQL: bind a query's parameters as literals, so that the driver can stream with COPY
#: (benchmarks/bench_loaders.py turns it off in a child process to show the difference).
BIND_LITERALS = True


def refuse_nul(params: Sequence[Any]) -> None:
    """Raise ValueError if a str parameter holds a NUL byte, which PostgreSQL text cannot."""
    for position, value in enumerate(params, 1):
        if isinstance(value, str) and "\x00" in value:
            raise ValueError(
                f"query parameter {position} of {len(params)} ({value[:40]!r}) contains a NUL "
                "byte (\\x00), which PostgreSQL text cannot hold; remove it from the filter"
            )


def bind_literals(sql: str, params: Sequence[Any], connection: Any) -> str:
    """Return ``sql`` with ``params`` bound as SQL literals by the database driver's own quoting.

    The PostgreSQL ADBC driver streams a result with ``COPY ... TO STDOUT (FORMAT binary)``
    only for a statement without parameters; with parameters libpq receives the whole result
    before the first batch. Django's ``connection.ops.compose_sql()`` binds them exactly as the
    driver would on the client side (psycopg's ``ClientCursor.mogrify``, or psycopg2's
    ``mogrify``): each value through the connection's registered adapters and libpq's escaping
    for the connection's encoding and ``standard_conforming_strings``; ``%%`` becomes ``%``.
    Nothing is quoted by hand here. PostgreSQL text cannot hold a NUL byte, so a str parameter
    with one is refused with a ValueError before any quoting (the DB-API path refuses it too).

    Raises
    ------
    ValueError
        If a str parameter contains a NUL byte (not a fallback: no engine can run the query).
    EngineUnavailable
        If the driver cannot turn a parameter into a literal.
    """
    refuse_nul(params)
    try:
        return connection.ops.compose_sql(sql, list(params))
    except Exception as exc:  # noqa: BLE001 - the driver's adaptation errors
        raise EngineUnavailable(f"the query parameters cannot be bound as literals: {exc}") from exc


def sql_for(plan: Plan, connection: Any) -> tuple[str, tuple[Any, ...] | None]:
    """Return the SQL and parameters to hand the ADBC driver for ``plan``.

    PostgreSQL: the parameters bound as literals (:func:`bind_literals`), none left, so that the
    driver streams with COPY. SQLite: Django's ``%s`` placeholders as ``?``, the parameters kept.
    """
    if connection.vendor == "postgresql" and plan.params and BIND_LITERALS:
        return bind_literals(plan.sql, plan.params, connection), None
    return _adbc_sql(plan.sql, connection.vendor), plan.params or None


def refusal(
    plan: Plan, connection: Any, *, iterating_auto: bool = False, arrow: bool = True
) -> str | None:
    """Why the ADBC engine cannot read this plan on this connection (None: it can).

    ``arrow=False``: the caller reads the driver's stream without pyarrow (the sweep's
    nanoarrow read), so pyarrow need not be importable.
    """
    vendor = connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        return f"ADBC is only wired for SQLite and PostgreSQL, not {vendor}"
    module = "adbc_driver_sqlite" if vendor == "sqlite" else "adbc_driver_postgresql"
    try:
        __import__(f"{module}.dbapi")
    except ImportError:
        return f"the ADBC driver is not installed: pip install '{DRIVER_REQUIREMENTS[vendor]}'"
    try:
        if arrow:
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
    if iterating_auto:
        # SQLite: the driver fixes column types from the first batch and could fail after
        # chunks were handed out. PostgreSQL: the driver batches by bytes (4 MiB here), not
        # by chunk_size, so the client holds more than one chunk (measured: peak at 1M rows
        # 1.40x the peak at 100k, against 1.12x for the named DB-API cursor).
        return (
            "iter_frames keeps the DB-API cursor unless engine='adbc' is asked for: it holds "
            "exactly one chunk, and on SQLite the ADBC driver could fail on a later batch"
        )
    for column in plan.columns:
        if column.kind not in ADBC_KINDS:
            return f"column {column.name!r} needs Django's own converters"
        if column.kind == "geometry" and not column.wkb_selected:
            return f"geometry column {column.name!r} is not selected as WKB"
    for value in plan.params if vendor == "sqlite" else ():  # PostgreSQL: see bind_literals()
        if not isinstance(value, ADBC_PARAM_TYPES):
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


def sqlite_connect(connection: Any, *, spatialite: bool) -> Any:
    """Open an ADBC connection on Django's SQLite file, SpatiaLite loaded only if ``spatialite``.

    Raises :class:`EngineUnavailable` when the driver cannot connect (or load SpatiaLite).
    """
    try:
        return _adbc_connect(connection, spatialite=spatialite)
    except EngineUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the driver's error classes
        raise EngineUnavailable(f"the ADBC connection failed: {exc}") from exc


def _adbc_connect(connection: Any, *, spatialite: bool = True) -> Any:
    """Open the second, ADBC connection on the database Django's connection points at."""
    if connection.vendor == "sqlite":
        import adbc_driver_sqlite.dbapi

        conn = adbc_driver_sqlite.dbapi.connect(str(connection.settings_dict["NAME"]))
        if spatialite and getattr(connection.ops, "spatialite", False):
            from django.conf import settings

            from ..db.spatialite import private_spatialite

            conn.enable_load_extension(True)
            paths = [getattr(settings, "SPATIALITE_LIBRARY_PATH", None), "mod_spatialite"]
            for path in [p for p in paths if p]:
                try:
                    # A private copy of the library: mod_spatialite keeps one pointer to the
                    # SQLite that loaded it last, and the driver's SQLite is not Django's
                    # (sharing one copy crashes SpatiaLite calls on Django's connection).
                    copy, entry_point = private_spatialite(path)
                    conn.load_extension(copy, entrypoint=entry_point)
                    break
                except Exception as exc:  # noqa: BLE001 - the driver's error class varies
                    error = exc
            else:
                conn.close()
                raise EngineUnavailable(f"the ADBC SQLite driver cannot load SpatiaLite: {error}")
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


def _chunks(array: Any) -> list[Any]:
    """Return the chunks of an Arrow ChunkedArray, or ``[array]`` for a plain Array."""
    return array.chunks if hasattr(array, "chunks") else [array]


def _to_numpy(array: Any, dtype: Any) -> np.ndarray:
    """Copy an Arrow numeric or boolean column (Array or ChunkedArray) into one writable array.

    One copy: each chunk is viewed without copying where Arrow can (no NULL), and written into
    the output, converted to ``dtype`` on the way (int32 -> int64, int -> bool as ``!= 0``).
    NULL: 0 / False for integers and booleans (the caller keeps the mask), NaN for floats.
    """
    import numpy as np
    import pyarrow as pa

    out = np.empty(len(array), dtype=dtype)
    floating = out.dtype.kind == "f"
    start = 0
    for chunk in _chunks(array):
        n = len(chunk)
        if chunk.null_count and not floating:
            chunk = chunk.fill_null(False if pa.types.is_boolean(chunk.type) else 0)
        # to_numpy: zero-copy without NULL (bitmap-packed booleans are unpacked); floats with
        # NULL come out as NaN.
        out[start : start + n] = chunk.to_numpy(zero_copy_only=False)
        start += n
    return out


def _null_mask(array: Any) -> np.ndarray | None:
    """Return the NULL mask of an Arrow column (Array or ChunkedArray); None: no NULL in it."""
    if not array.null_count:
        return None
    return array.is_null().to_numpy(zero_copy_only=False)


def arrow_convert(array: Any, column: Column, plan: Plan, connection: Any) -> Any:
    """One Arrow column (Array or ChunkedArray) -> the same pandas values the DB-API path gives.

    Numbers and booleans are written once into a new writable NumPy array (no combined Arrow
    copy first); the other kinds combine the chunks and convert the one array.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    kind, kind_type = column.kind, array.type
    numeric = pa.types.is_integer(kind_type) or pa.types.is_floating(kind_type)
    if pa.types.is_null(kind_type):
        # No typed value in the column: all NULL, converted as the DB-API path converts None.
        return convert(np.full(len(array), None, dtype=object), column, plan, connection)
    if kind == "int" and pa.types.is_integer(kind_type):
        mask = _null_mask(array)
        values = _to_numpy(array, np.int64)
        if not column.nullable and mask is None:
            return values
        return pd.arrays.IntegerArray(values, np.zeros(len(values), bool) if mask is None else mask)
    if kind == "float" and numeric:
        return _to_numpy(array, np.float64)
    if kind == "bool" and (pa.types.is_boolean(kind_type) or pa.types.is_integer(kind_type)):
        mask = _null_mask(array)
        values = _to_numpy(array, bool)
        if not column.nullable and mask is None:
            return values
        return pd.arrays.BooleanArray(values, np.zeros(len(values), bool) if mask is None else mask)
    if hasattr(array, "combine_chunks"):
        array = array.combine_chunks()
    if kind == "datetime" and pa.types.is_timestamp(kind_type):
        index = pd.DatetimeIndex(array.to_pandas())
        if plan.utc:
            index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return index.as_unit(DATETIME_UNIT)
    if kind == "date" and pa.types.is_date(kind_type):
        timestamps = array.cast(pa.timestamp(DATETIME_UNIT)).to_pandas()
        return pd.DatetimeIndex(timestamps).as_unit(DATETIME_UNIT)
    if kind == "category":
        codes = _arrow_category_codes(array, column.categories)
        if codes is not None:
            dtype = pd.CategoricalDtype(list(column.categories))
            return pd.Categorical.from_codes(codes, dtype=dtype)
    textual = pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type)
    if kind == "text" and textual:
        return to_text(array)
    binary = pa.types.is_binary(kind_type) or pa.types.is_large_binary(kind_type)
    if binary or pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type):
        values = array.to_numpy(zero_copy_only=False)
    else:  # anything unexpected: the Python values, converted exactly as on the DB-API path
        values = np.array(array.to_pylist(), dtype=object)
    return convert(values, column, plan, connection)


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


def arrow_frame(table: Any, plan: Plan, start: int, connection: Any) -> pd.DataFrame:
    """Convert an Arrow table (any number of batches) to one DataFrame, index from ``start``."""
    columns = [table.column(i) for i in range(table.num_columns)]
    return _columns_frame(columns, table.num_rows, plan, start, connection)


def _columns_frame(
    columns: list[Any], rows: int, plan: Plan, start: int, connection: Any
) -> pd.DataFrame:
    """Convert Arrow columns to a DataFrame, dropping each from ``columns`` once converted.

    When the caller holds no other reference, each Arrow column is freed as soon as its pandas
    values exist: the peak is the Arrow data plus one converted column, not both whole.
    """
    import pandas as pd

    data = {}
    for c in plan.columns:
        data[c.name] = arrow_convert(columns[c.position], c, plan, connection)
        columns[c.position] = None
    return pd.DataFrame(data, index=pd.RangeIndex(start, start + rows), copy=False)


def iter_adbc(
    plan: Plan,
    chunk_size: int,
    progress: bool,
    shared_bar: Any = None,
    *,
    iterating_auto: bool = False,
    bound: tuple[str, tuple[Any, ...] | None] | None = None,
    whole: bool = False,
    group_rows: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Run the planned query on an ADBC connection and yield one DataFrame per chunk.

    Raises EngineUnavailable, with ``rows=0`` before the first chunk (refused here, the
    connection or the query failed) and with the rows already yielded when a later batch fails.
    ``shared_bar``: a tqdm bar owned by the caller (parallel parts), updated here.
    ``bound``: the SQL and parameters from :func:`sql_for`, made by the caller's thread when
    this runs in another (binding uses Django's connection, which belongs to one thread).
    ``whole``: for a caller that concatenates (``read_frame``): the driver's batches are
    converted as they come, without cutting them into chunks of ``chunk_size`` rows; one frame
    for the whole result (nothing runs in Python between two batches, no concatenation
    afterwards), or, with ``group_rows``, frames of at least that many rows (the parts of a
    parallel read: two threads each holding their whole part in Arrow and in pandas at once
    raised the peak by a quarter).
    """
    from django.db import connections

    connection = connections[plan.db]
    reason = refusal(plan, connection, iterating_auto=iterating_auto)
    if reason is not None:
        raise EngineUnavailable(reason)
    if plan.sql is None:
        yield frame_from_rows([], plan, 0, connection)
        return
    try:
        conn = _adbc_connect(connection)
    except EngineUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - the driver's error classes
        raise EngineUnavailable(f"the ADBC connection failed: {exc}") from exc
    bar = None
    try:
        cursor = conn.cursor()
        if connection.vendor == "sqlite":
            cursor.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(min(chunk_size, 1_000_000))}
            )
        else:
            cursor.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(PG_BATCH_BYTES)}
            )
        sql, params = sql_for(plan, connection) if bound is None else bound
        try:
            cursor.execute(sql, params)
            reader = cursor.fetch_record_batch()
        except Exception as exc:  # noqa: BLE001
            raise EngineUnavailable(f"ADBC could not run the query: {exc}") from exc
        if progress:
            bar = progress_bar(plan)
        if whole:
            shown = bar if bar is not None else shared_bar
            yield from _batch_frames(reader, plan, connection, shown, group_rows)
            return
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
                    raise EngineUnavailable(f"ADBC failed reading the rows: {exc}") from exc
                raise EngineUnavailable(
                    f"the ADBC engine failed after {start} rows were yielded: {exc}. "
                    "Read this queryset with engine='dbapi'",
                    rows=start,
                ) from exc
            frame = arrow_frame(table, plan, start, connection)
            n = table.num_rows
            table = None
            start += n
            if shown is not None:
                shown.update(n)
            yield frame
            frame = None
        if start == 0:
            yield frame_from_rows([], plan, 0, connection)
    finally:
        if bar is not None:
            bar.close()
        conn.close()


def _batch_frames(
    reader: Any, plan: Plan, connection: Any, bar: Any, group_rows: int | None
) -> Iterator[pd.DataFrame]:
    """Convert ``reader``'s batches as they are, in groups of at least ``group_rows`` rows.

    ``group_rows=None``: one frame for the whole result. No batch is cut: the frames are for a
    caller that concatenates them (``read_frame``), not chunks of a fixed size. Raises
    EngineUnavailable (``rows=0``: the caller has handed nothing out) if a batch fails.
    """
    import pyarrow as pa

    pending: list[Any] = []
    held = start = 0

    def frame() -> pd.DataFrame:
        try:
            table = pa.Table.from_batches(pending, schema=reader.schema)
        except pa.ArrowException as exc:  # a batch typed unlike the first (SQLite)
            raise EngineUnavailable(
                f"the ADBC engine read batches of different column types: {exc}. "
                "Read this queryset with engine='dbapi'"
            ) from exc
        pending.clear()
        columns = [table.column(i) for i in range(table.num_columns)]
        table = None  # the columns hold the only references: each is freed once converted
        return _columns_frame(columns, held, plan, start, connection)

    batches = iter(reader)
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - e.g. SQLite's type mismatch mid-stream
            raise EngineUnavailable(
                f"the ADBC engine failed after {start + held} rows were read (none yielded to "
                f"the caller): {exc}. Read this queryset with engine='dbapi'"
            ) from exc
        if batch is None:
            break
        if not batch.num_rows:
            continue
        pending.append(batch)
        held += batch.num_rows
        if bar is not None:
            bar.update(batch.num_rows)
        batch = None
        if group_rows is not None and held >= group_rows:
            yield frame()
            start, held = start + held, 0
    if held:
        yield frame()
    elif not start:
        yield frame_from_rows([], plan, 0, connection)


def read_parallel(
    queryset: QuerySet,
    fields: Sequence[str] | None,
    plan: Plan,
    chunk_size: int,
    progress: bool,
    parallel: int | None,
) -> list[pd.DataFrame] | None:
    """Read ``queryset`` as ``parallel`` primary-key ranges at once (None: that does not apply).

    Each range runs on its own ADBC connection in its own thread: the driver and Arrow release
    the GIL. None tells the caller to read the queryset in one piece; EngineUnavailable when a
    part cannot be read with ADBC (the caller decides whether to fall back).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    parts = min(2, os.cpu_count() or 1) if parallel is None else parallel
    if parts < 2 or plan.sql is None:
        return None
    connection = connections[plan.db]
    if refusal(plan, connection) is not None or split_reason(queryset) is not None:
        return None
    if connection.vendor == "postgresql":
        refuse_nul(plan.params)  # before the key-span queries send it to the server
    span = pk_span(queryset)
    if span is None:
        return None
    if span[1] - span[0] + 1 < (AUTO_SPLIT_MIN_SPAN if parallel is None else parts):
        return None
    plans = [
        make_plan(in_range(queryset, bounds), fields, plan.geometry)
        for bounds in pk_ranges(queryset, parts, span=span)
    ]
    bar = progress_bar(plan) if progress else None
    try:
        with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="read_frame") as pool:
            # Bound here: binding uses Django's connection, which belongs to this thread.
            futures = [
                pool.submit(read_part, part, chunk_size, bar, sql_for(part, connection))
                for part in plans
            ]
            errors = [f.exception() for f in futures]
    finally:
        if bar is not None:
            bar.close()
    failed = [e for e in errors if e is not None]
    if failed:
        raise failed[0]
    return [frame for future in futures for frame in future.result()]


def read_part(
    plan: Plan, chunk_size: int, bar: Any, sql: tuple[str, tuple[Any, ...] | None]
) -> list[pd.DataFrame]:
    """Read one range's plan with ADBC into a list of chunks (``sql``: from :func:`sql_for`)."""
    return list(
        iter_adbc(plan, chunk_size, False, bar, bound=sql, whole=True, group_rows=chunk_size)
    )
