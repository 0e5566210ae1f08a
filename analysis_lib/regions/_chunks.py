r"""The sweep's reads: items as chunks of numpy arrays (:class:`~._blobs.Chunk`), boxes first.

Two ways to get chunks:

* :func:`frame_chunks` (any database): :func:`~analysis_lib.iter_frames` with the geometry as
  WKB, its boxes read from the WKB with numpy (as the sweep always did).
* :func:`spatialite_chunks` (SpatiaLite): the geometry column's own blob (no ``AsBinary()`` per
  row in SQLite), the box taken from the blob's header (:mod:`._blobs`), read by the ADBC driver
  through pyarrow (:func:`_adbc_chunks`), through nanoarrow when pyarrow is kept out
  (:mod:`._nano`), or with DB-API (:func:`_dbapi_chunks`). Category fields with choices are
  turned into codes by the database on DB-API and nanoarrow (``CASE`` with the choices as bound
  parameters), in Arrow with pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._blobs import (
    Chunk,
    _blob_chunk,
    _direct,
    _SpatiaLiteWkb,
    check_adbc_read,
    codes_of,
    prefetched,
)
from ._nano import _nano_chunks, nano_reads

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from django.db.models import QuerySet

    from .core import Spec

#: ADBC: read the next batch in a background thread while this one is matched.
READ_AHEAD = True


# --------------------------------------------------------------------------------------------
# Any database: chunks of iter_frames
# --------------------------------------------------------------------------------------------


def frame_chunks(
    items: QuerySet,
    spec: Spec,
    vocabulary: Mapping[str, dict[Any, int]],
    chunk_size: int,
    engine: str,
) -> Iterator[Chunk]:
    """Chunks from :func:`~analysis_lib.iter_frames` (geometry as WKB, boxes read by numpy)."""
    from .._geo import wkb_point_bounds, wkb_polygon_bounds
    from ..loaders import iter_frames
    from .core import fields_of

    geom = spec.item_geometry
    frames = iter_frames(
        items.order_by(), fields_of(spec, [geom]), chunk_size, geometry="wkb", engine=engine
    )
    for frame in frames:
        wkb = frame[geom].to_numpy()
        if spec.item_geom_type == "point":
            bounds = wkb_point_bounds(wkb)
        else:
            bounds = wkb_polygon_bounds(wkb)
        values = {f.name: _frame_values(frame[f.name], f, vocabulary) for f in spec.fields}
        yield Chunk(len(frame), bounds, wkb.__getitem__, values)


def _frame_values(column: pd.Series, field: Any, vocabulary: Mapping[str, dict]) -> np.ndarray:
    """One frame column as the sweep's array: floats with NaN, or category codes."""
    import numpy as np
    import pandas as pd

    if field.kind != "category":
        return column.to_numpy(dtype=float, na_value=np.nan)
    if field.categories is not None:
        return pd.Categorical(column, categories=field.categories).codes.astype(np.int64)
    return codes_of(column.to_numpy(dtype=object).tolist(), vocabulary[field.name])


# --------------------------------------------------------------------------------------------
# SpatiaLite: the geometry's own blob
# --------------------------------------------------------------------------------------------


def spatialite_reason(items: QuerySet, spec: Spec) -> str | None:
    """Why :func:`spatialite_chunks` cannot read ``items`` (None: it can)."""
    from django.db import connections, models

    connection = connections[items.db]
    if connection.vendor != "sqlite" or not getattr(connection.ops, "spatialite", False):
        return "not a SpatiaLite database"
    model = items.model
    for field in spec.fields:
        model_field = model._meta.get_field(field.name)
        if hasattr(model_field, "from_db_value") or isinstance(model_field, models.DecimalField):
            return f"field {field.name!r} needs Django's own conversion"
    query = items.query
    if query.combinator or query.distinct or query.is_sliced or query.group_by is not None:
        return "a combined, distinct, sliced or grouped queryset"
    return None


def _raw_blob(name: str) -> Any:
    """Select geometry column ``name`` as stored (a bare column: no ``AsBinary`` around it)."""
    from django.db.models import BinaryField, F, Func

    return Func(F(name), template="%(expressions)s", output_field=BinaryField())


def _code_expression(field: Any, model: Any) -> Any | None:
    """``CASE field WHEN choice THEN position ... ELSE -1 END``, or None where not exact in SQL.

    Used only when SQL equality is Python equality: str choices of a text field, int choices
    of an integer field (the choices are bound parameters).
    """
    from django.db import models
    from django.db.models import Case, IntegerField, Value, When

    if field.categories is None or not field.categories:
        return None
    model_field = model._meta.get_field(field.name)
    text = isinstance(model_field, models.CharField | models.TextField)
    integer = isinstance(model_field, models.IntegerField)
    same_type = str if text else int if integer else None
    if same_type is None or not all(type(c) is same_type for c in field.categories):
        return None
    whens = [
        When(**{field.name: value}, then=Value(pos))
        for pos, value in enumerate(field.categories)
        if value not in field.categories[:pos]  # a repeated choice keeps its first code
    ]
    return Case(*whens, default=Value(-1), output_field=IntegerField())


def _spatialite_sql(
    items: QuerySet, spec: Spec, codes_in_sql: bool
) -> tuple[str | None, tuple, list[tuple]]:
    """Return the raw read's SQL, parameters and ``columns``: (field name, how) in order.

    ``how``: ``"float"`` (numbers), ``"code"`` (codes computed by the database), ``"value"``
    (category values, coded here).
    """
    from django.core.exceptions import EmptyResultSet

    from ..loaders._plan import _selected_names

    geom_alias = "_sweep_blob"
    annotations = {geom_alias: _raw_blob(spec.item_geometry)}
    columns: list[tuple[str, str, str]] = []  # (selected name, field, how)
    for i, field in enumerate(spec.fields):
        if field.kind != "category":
            columns.append((field.name, field.name, "float"))
            continue
        code = _code_expression(field, items.model) if codes_in_sql else None
        if code is None:
            columns.append((field.name, field.name, "value"))
        else:
            alias = f"_sweep_code_{i}"
            annotations[alias] = code
            columns.append((alias, field.name, "code"))
    vqs = items.order_by().annotate(**annotations).values(geom_alias, *[c[0] for c in columns])
    compiler = vqs.query.get_compiler(using=vqs.db)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return None, (), []
    selected = _selected_names(compiler.query)
    if selected[0] != geom_alias or [c[0] for c in columns] != selected[1:]:
        raise RuntimeError(f"unexpected column order {selected}")  # pragma: no cover
    return sql, tuple(params), [(name, how) for _, name, how in columns]


def spatialite_chunks(
    items: QuerySet,
    spec: Spec,
    vocabulary: Mapping[str, dict[Any, int]],
    chunk_size: int,
    engine: str,
) -> Iterator[Chunk]:
    """Chunks read from SpatiaLite's blobs, with ADBC (``engine="adbc"``) or DB-API.

    Raises :class:`~analysis_lib.EngineUnavailable` (before the first chunk, or part-way on
    SQLite's type change) when ADBC cannot read the query.
    """
    from django.db import connections

    connection = connections[items.db]
    nano = engine == "adbc" and nano_reads()
    # DB-API: small ints from a CASE are cached Python objects, cheaper than a str per row;
    # ADBC with pyarrow: the text column is cheaper for the driver than the CASE, and coded in
    # Arrow; ADBC with nanoarrow: no Arrow compute here, so the database codes, as on DB-API.
    sql, params, columns = _spatialite_sql(items, spec, codes_in_sql=engine != "adbc" or nano)
    if sql is None:
        return
    to_wkb = _SpatiaLiteWkb(connection)
    if nano:
        yield from _nano_chunks(items, spec, sql, params, columns, vocabulary, chunk_size, to_wkb)
    elif engine == "adbc":
        yield from _adbc_chunks(items, spec, sql, params, columns, vocabulary, chunk_size, to_wkb)
    else:
        yield from _dbapi_chunks(connection, sql, params, columns, vocabulary, chunk_size, to_wkb)


def _dbapi_chunks(connection, sql, params, columns, vocabulary, chunk_size, to_wkb):
    """Read the raw rows on Django's own (chunked) cursor, ``fetchmany`` batches.

    No read-ahead thread here: ``sqlite3`` builds its row tuples holding the GIL, so a reading
    thread only competed with the matching one (measured: slower wall, more CPU).
    """
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(chunk_size)
            if not rows:
                break
            n, buffer, offsets, valid, values = _tuples_to_arrays(rows, columns, vocabulary)
            del rows
            yield _blob_chunk(n, buffer, offsets, valid, values, to_wkb)
    finally:
        cursor.close()


def _tuples_to_arrays(rows: list[tuple], columns: list[tuple], vocabulary: Mapping[str, dict]):
    """Return ``(n, buffer, offsets, valid, values)`` of a batch of row tuples (blob first)."""
    import numpy as np

    n = len(rows)
    blobs = list(map(itemgetter(0), rows))
    valid = None
    try:
        lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    except TypeError:  # a NULL geometry
        valid = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
        blobs = [b if b is not None else b"" for b in blobs]
        lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buffer = np.frombuffer(b"".join(blobs), np.uint8)
    del blobs
    values = {}
    for position, (name, how) in enumerate(columns, 1):
        column = map(itemgetter(position), rows)
        if how == "code":
            values[name] = np.fromiter(column, dtype=np.int64, count=n)
        elif how == "float":
            try:
                values[name] = np.fromiter(column, dtype=float, count=n)
            except TypeError:  # a NULL (or a value float() refuses): the slow way
                values[name] = np.array([r[position] for r in rows], dtype=float)
        else:
            values[name] = codes_of(list(column), vocabulary[name])
    return n, buffer, offsets, valid, values


def _adbc_chunks(items, spec, sql, params, columns, vocabulary, chunk_size, to_wkb):
    """Read the raw rows on a second, ADBC connection (Arrow batches, no object per row)."""
    import numpy as np

    from ..loaders._adbc import _adbc_sql
    from ..loaders._engine import EngineUnavailable

    connection = check_adbc_read(items, spec, params, arrow=True)
    import pyarrow as pa
    import pyarrow.compute as pc

    conn, cursor, reader = _adbc_open(connection, _adbc_sql(sql, "sqlite"), params, chunk_size)
    rows = 0
    batches = None
    try:
        batches = (
            prefetched(reader.read_next_batch) if READ_AHEAD else _direct(reader.read_next_batch)
        )
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - e.g. SQLite's type mismatch mid-stream
                raise EngineUnavailable(
                    f"the ADBC engine failed after {rows} rows: {exc}", rows=rows
                ) from exc
            n = batch.num_rows
            if n == 0:
                continue
            blobs = batch.column(0)
            if pa.types.is_null(blobs.type):
                blobs = pa.nulls(n, pa.binary())
            if not (pa.types.is_binary(blobs.type) or pa.types.is_large_binary(blobs.type)):
                raise EngineUnavailable(f"the geometry column came as {blobs.type}", rows=rows)
            width = np.int64 if pa.types.is_large_binary(blobs.type) else np.int32
            buffers = blobs.buffers()
            offsets = np.frombuffer(buffers[1], width, n + 1, blobs.offset * width().itemsize)
            offsets = offsets.astype(np.int64)
            if buffers[2] is None:
                buffer = np.zeros(0, np.uint8)
            else:
                buffer = np.frombuffer(buffers[2], np.uint8)
            valid = None
            if blobs.null_count:
                valid = blobs.is_valid().to_numpy(zero_copy_only=False)
            values = {}
            for position, (name, how) in enumerate(columns, 1):
                column = batch.column(position)
                if pa.types.is_null(column.type):
                    if how == "float":
                        values[name] = np.full(n, np.nan)
                    else:
                        values[name] = np.full(n, -1, np.int64)
                elif how == "float":
                    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                        raise EngineUnavailable(f"column {name!r} came as {column.type}", rows=rows)
                    values[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
                elif how == "code":
                    values[name] = column.fill_null(-1).cast(pa.int64()).to_numpy()
                elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    values[name] = _arrow_codes(column, vocabulary[name], pc, np)
                else:
                    values[name] = codes_of(column.to_pylist(), vocabulary[name])
            del batch
            rows += n
            yield _blob_chunk(n, buffer, offsets, valid, values, to_wkb)
    finally:
        if batches is not None:
            batches.close()  # stops and joins the reading thread before the connection closes
        if cursor is not None:
            cursor.close()
        conn.close()


def _adbc_open(connection: Any, sql: str, params: tuple, chunk_size: int) -> tuple:
    """Open an ADBC connection, run ``sql``; return ``(connection, cursor, batch reader)``.

    First without SpatiaLite: the raw read selects stored blobs and plain columns, and loading
    a private copy of SpatiaLite costs about 5 MiB and 20 ms. A query that needs it (a spatial
    filter: "no such function") runs again on a connection with SpatiaLite loaded.
    """
    from ..loaders._adbc import sqlite_connect
    from ..loaders._engine import EngineUnavailable

    for spatial in (False, True):
        conn = sqlite_connect(connection, spatialite=spatial)
        cursor = conn.cursor()
        try:
            cursor.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(min(chunk_size, 1_000_000))}
            )
            cursor.execute(sql, params)
            return conn, cursor, cursor.fetch_record_batch()
        except Exception as exc:  # noqa: BLE001
            cursor.close()
            conn.close()
            if spatial or "no such function" not in str(exc).lower():
                raise EngineUnavailable(f"ADBC could not run the query: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _arrow_codes(column: Any, vocabulary: dict[Any, int], pc: Any, np: Any) -> np.ndarray:
    """Codes of an Arrow string column through its dictionary (one lookup per distinct value)."""
    encoded = pc.dictionary_encode(column)
    if hasattr(encoded, "combine_chunks"):
        encoded = encoded.combine_chunks()
    mapping = codes_of(encoded.dictionary.to_pylist(), vocabulary)
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.full(len(indices), -1, np.int64)
    has = indices >= 0
    out[has] = mapping[indices[has]]
    return out
