r"""The sweep's reads: items as chunks of numpy arrays, boxes first, WKB only where asked.

A :class:`Chunk` holds what the sweep needs of ``n`` items: their boxes (``(n, 4)``, NaN where
the box is not known: GEOS decides those), the WKB of any rows on demand, and one numpy array
per value field: floats (NaN for NULL) for numbers, integer codes (``-1`` for NULL or a value
outside the choices) for category fields, the codes' values in ``vocabulary[field]``.

Two ways to get chunks:

* :func:`frame_chunks` (any database): :func:`~analysis_lib.iter_frames` with the geometry as
  WKB, its boxes read from the WKB with numpy (as the sweep always did).
* :func:`spatialite_chunks` (SpatiaLite, ADBC or DB-API): the geometry column's own blob (no
  ``AsBinary()`` per row in SQLite), the box taken from the blob's header, and the category fields
  with choices turned into codes by the database on DB-API and on nanoarrow (``CASE`` with the
  choices as bound parameters), in Arrow on ADBC with pyarrow. ADBC has two readers: pyarrow's
  (:func:`_adbc_chunks`) and, where pyarrow cannot be imported (kept out by
  :func:`~analysis_lib.keep_pyarrow_out`, or not installed), nanoarrow's (:func:`_nano_chunks`:
  the same driver, its Arrow buffers read with numpy, pyarrow never imported; see
  :func:`nano_reads`). SpatiaLite's blob: byte 0 = 0x00, byte 1 = 0x01 for
  little-endian, bytes 2..5 the SRID, bytes 6..37 the MBR (four doubles), byte 38 = 0x7C, bytes
  39..42 the class, then the body, and a last byte 0xFE. For the uncompressed XY classes 1..7 the
  body is laid out as WKB's, except that each part of a collection starts with 0x69 where WKB has
  its byte order: a point, line or polygon's WKB is ``b"\x01" + blob[39:-1]``; a multi-geometry's
  is rebuilt part by part. Any other blob (compressed, Z/M, big-endian, not a SpatiaLite blob)
  gets a NaN box and its WKB from SpatiaLite itself (``AsBinary``, as the loaders select it), so
  the answer is GEOS's, as for every item near a border.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from django.db.models import QuerySet

    from .core import Spec

#: SpatiaLite classes whose uncompressed little-endian XY body is read here (1..7).
_SIMPLE_CLASSES = (1, 2, 3)
_MULTI_CLASSES = (4, 5, 6)
_HEADER = 43  # bytes before a blob's body: start, endian, SRID, MBR, 0x7C, class
_WINDOW = 52  # bytes read per blob: the header, a count, a collection's first part marker
_SQL_BATCH = 400  # blobs converted by SpatiaLite per statement (two parameters each)
#: ADBC: read the next batch in a background thread while this one is matched.
READ_AHEAD = True
#: nanoarrow (pyarrow kept out): the same, if the stream's reads release the GIL (measured).
NANO_READ_AHEAD = True


class Chunk:
    """``n`` items: boxes, WKB on demand, value arrays (see the module docstring)."""

    __slots__ = ("bounds", "n", "values", "wkb_of")

    def __init__(
        self,
        n: int,
        bounds: np.ndarray,
        wkb_of: Callable[[np.ndarray], np.ndarray],
        values: Mapping[str, np.ndarray],
    ) -> None:
        self.n = n
        self.bounds = bounds
        self.wkb_of = wkb_of
        self.values = values


# --------------------------------------------------------------------------------------------
# Codes of category values
# --------------------------------------------------------------------------------------------


def codes_of(values: Any, vocabulary: dict[Any, int]) -> np.ndarray:
    """Integer codes of a sequence of values: ``vocabulary[value]``, -1 for missing or unknown.

    Missing: None, or NaN (how pandas 3's text dtype hands out a NULL).

    A value not yet in ``vocabulary`` gets the next code (free text), unless the vocabulary is
    a :class:`~.core.FixedVocabulary` (the choices): then -1.
    """
    import numpy as np

    from .core import FixedVocabulary

    grow = not isinstance(vocabulary, FixedVocabulary)
    distinct = dict.fromkeys(values)
    lookup = {}
    for value in distinct:
        if value is None or value != value:  # noqa: PLR0124 - NaN is the one value != itself
            lookup[value] = -1
        elif value in vocabulary:
            lookup[value] = vocabulary[value]
        elif grow:
            lookup[value] = vocabulary[value] = len(vocabulary)
        else:
            lookup[value] = -1
    return np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))


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


def nano_reads() -> bool:
    """Whether the SpatiaLite ADBC read goes through nanoarrow (pyarrow cannot be imported).

    True when pyarrow is kept out of the process (:func:`~analysis_lib.keep_pyarrow_out`) or not
    installed, and ``nanoarrow``, ``adbc_driver_manager`` and ``adbc_driver_sqlite`` are.
    """
    from importlib.util import find_spec

    from ..loaders._arrow import pyarrow_kept_out

    if not pyarrow_kept_out() and find_spec("pyarrow") is not None:
        return False
    return all(
        find_spec(name) is not None
        for name in ("nanoarrow", "adbc_driver_manager", "adbc_driver_sqlite")
    )


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
    from django.db import connections

    from ..loaders._adbc import _adbc_sql, refusal
    from ..loaders._engine import EngineUnavailable
    from ..loaders._plan import make_plan
    from .core import fields_of

    connection = connections[items.db]
    plan = make_plan(items.order_by(), fields_of(spec, [spec.item_geometry]), "wkb")
    reason = refusal(plan, connection)
    if reason is None:
        reason = next(
            (
                f"a query parameter of type {type(v).__name__} cannot be bound by ADBC"
                for v in params
                if not isinstance(v, bool | int | float | str | bytes)
            ),
            None,
        )
    if reason is not None:  # (pyarrow kept out of the process, for one)
        raise EngineUnavailable(reason)
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
    import adbc_driver_sqlite.dbapi

    from ..loaders._adbc import _adbc_connect
    from ..loaders._engine import EngineUnavailable

    for spatial in (False, True):
        try:
            if spatial:
                conn = _adbc_connect(connection)
            else:
                conn = adbc_driver_sqlite.dbapi.connect(str(connection.settings_dict["NAME"]))
        except EngineUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver's error classes
            raise EngineUnavailable(f"the ADBC connection failed: {exc}") from exc
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


def _nano_chunks(items, spec, sql, params, columns, vocabulary, chunk_size, to_wkb):
    """Read the raw rows on a second, ADBC connection, as Arrow arrays seen through nanoarrow.

    The pyarrow-free twin of :func:`_adbc_chunks`: the driver's C stream is read with
    ``nanoarrow`` (no pyarrow in the process), the buffers handed to numpy without a copy.
    """
    from django.db import connections

    from ..loaders._adbc import _adbc_sql, refusal
    from ..loaders._engine import EngineUnavailable
    from ..loaders._plan import make_plan
    from .core import fields_of

    connection = connections[items.db]
    plan = make_plan(items.order_by(), fields_of(spec, [spec.item_geometry]), "wkb")
    reason = refusal(plan, connection, arrow=False)
    if reason is None:
        reason = next(
            (
                f"a query parameter of type {type(v).__name__} cannot be bound by ADBC"
                for v in params
                if not isinstance(v, bool | int | float | str | bytes)
            ),
            None,
        )
    if reason is not None:
        raise EngineUnavailable(reason)
    conn, statement, stream = _nano_open(connection, _adbc_sql(sql, "sqlite"), params, chunk_size)
    rows = 0
    arrays = None
    try:
        read_next = _nogil_get_next(stream) if NANO_READ_AHEAD else stream.get_next
        arrays = prefetched(read_next) if NANO_READ_AHEAD else _direct(read_next)
        while True:
            try:
                array = next(arrays)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - e.g. SQLite's type mismatch mid-stream
                raise EngineUnavailable(
                    f"the ADBC engine failed after {rows} rows: {exc}", rows=rows
                ) from exc
            view = array.view()
            n = view.length
            if n == 0:
                continue
            buffer, offsets, valid = _nano_blobs(view.child(0), n, rows, array)
            values = {
                name: _nano_values(view.child(position), name, how, n, rows, vocabulary)
                for position, (name, how) in enumerate(columns, 1)
            }
            del array, view
            rows += n
            yield _blob_chunk(n, buffer, offsets, valid, values, to_wkb)
    finally:
        if arrays is not None:
            arrays.close()  # stops and joins the reading thread before the stream is released
        stream.release()
        statement.close()
        conn.close()


def _nano_open(connection: Any, sql: str, params: tuple, chunk_size: int) -> tuple:
    """Run ``sql`` on a new ADBC connection; return ``(connection, statement, array stream)``.

    SpatiaLite only when the query needs it, as :func:`_adbc_open`. The connection is the
    driver's DB-API one (:func:`~analysis_lib.loaders._adbc._adbc_connect` when SpatiaLite is
    needed), which opens and loads extensions without pyarrow; the statement is the driver
    manager's low-level one, its result read with nanoarrow, its parameters bound by the
    driver from a one-row nanoarrow struct (never formatted into the SQL).
    """
    import adbc_driver_manager
    import adbc_driver_sqlite.dbapi
    import nanoarrow as na

    from ..loaders._adbc import _adbc_connect
    from ..loaders._engine import EngineUnavailable

    for spatial in (False, True):
        try:
            if spatial:
                conn = _adbc_connect(connection)
            else:
                conn = adbc_driver_sqlite.dbapi.connect(str(connection.settings_dict["NAME"]))
        except EngineUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver's error classes
            raise EngineUnavailable(f"the ADBC connection failed: {exc}") from exc
        statement = None
        try:
            statement = adbc_driver_manager.AdbcStatement(conn.adbc_connection)
            statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(min(chunk_size, 1_000_000))}
            )
            statement.set_sql_query(sql)
            if params:
                statement.bind(_nano_params(params, na))
            handle, _ = statement.execute_query()
            return conn, statement, na.c_array_stream(handle)
        except Exception as exc:  # noqa: BLE001
            if statement is not None:
                statement.close()
            conn.close()
            if spatial or "no such function" not in str(exc).lower():
                raise EngineUnavailable(f"ADBC could not run the query: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _nogil_get_next(stream: Any) -> Callable[[], Any]:
    """Return ``stream.get_next`` as a call that releases the GIL while the driver reads.

    nanoarrow's ``CArrayStream.get_next`` holds the GIL while the driver steps SQLite, so a
    read-ahead thread could not overlap the matching. This calls the stream's own ``get_next``
    (the Arrow C stream interface: ``{get_schema, get_next, get_last_error, release,
    private_data}``) through :mod:`ctypes`, which releases the GIL for the call, into an array
    nanoarrow allocated (``CArray.allocate``) and owns from then on.
    """
    import ctypes

    try:
        from nanoarrow.c_array import CArray

        schema = stream.get_schema()
        address = stream._addr()  # noqa: SLF001 - the C struct's address, the stream owns it
        CArray.allocate  # noqa: B018 - checked now, not at the first batch
    except (ImportError, AttributeError):  # another nanoarrow layout: its own call, GIL held
        return stream.get_next
    pointer = ctypes.c_void_p.from_address
    get_next = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
        pointer(address + ctypes.sizeof(ctypes.c_void_p)).value
    )
    last_error = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(
        pointer(address + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    )
    release_at = 8 * 8  # struct ArrowArray: five int64, three pointers, then release

    def read_next() -> Any:
        array = CArray.allocate(schema)
        out = array._addr()  # noqa: SLF001
        code = get_next(address, out)
        if code != 0:
            message = last_error(address)
            text = message.decode(errors="replace") if message else f"error code {code}"
            raise OSError(f"ADBC stream: {text}")
        if pointer(out + release_at).value is None:  # a released array: the end of the stream
            raise StopIteration
        return array

    return read_next


def _nano_params(params: tuple, na: Any) -> Any:
    """Return the query parameters as a one-row nanoarrow struct array (the driver binds it)."""
    types, children = {}, []
    for i, value in enumerate(params):
        if isinstance(value, bool | int):
            kind = na.int64()
            value = int(value)  # noqa: PLW2901 - SQLite stores a bool as 0/1
        elif isinstance(value, float):
            kind = na.float64()
        elif isinstance(value, str):
            kind = na.string()
        else:
            kind = na.binary()
        types[str(i)] = kind
        children.append(na.c_array([value], kind))
    return na.c_array_from_buffers(na.struct(types), 1, [None], children=children)


def _nano_valid(view: Any, np: Any) -> np.ndarray | None:
    """Return an Arrow array view's validity as a bool array, or None when nothing is NULL."""
    if view.null_count == 0:
        return None
    bitmap = view.buffer(0)
    if bitmap.size_bytes == 0:
        return None
    start, n = view.offset, view.length
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), count=start + n, bitorder="little")
    return bits[start:].astype(bool)


class _Pinned:
    """``size`` bytes at ``address`` for :func:`numpy.asarray`, keeping ``owner`` alive.

    nanoarrow's buffer views do not keep the array that owns the memory alive (measured: a
    ``numpy.frombuffer`` of one reads freed memory once the array is gone); an array made from
    this object has it as its base, so the batch lives as long as the chunk's blob buffer.
    """

    def __init__(self, address: int, size: int, owner: Any) -> None:
        self.owner = owner
        self.__array_interface__ = {
            "data": (address, True),
            "shape": (size,),
            "typestr": "|u1",
            "version": 3,
        }


def _nano_blobs(view: Any, n: int, rows: int, owner: Any) -> tuple:
    """``(buffer, offsets, valid)`` of the geometry column's Arrow view (no copy of the blobs).

    ``owner``: the batch's array, kept alive by ``buffer`` (the offsets and validity are
    copies).
    """
    import numpy as np

    from ..loaders._engine import EngineUnavailable

    kind = view.storage_type
    if kind == "na":  # every blob of the batch is NULL
        return np.zeros(0, np.uint8), np.zeros(n + 1, np.int64), np.zeros(n, bool)
    if kind not in ("binary", "large_binary"):
        raise EngineUnavailable(f"the geometry column came as {kind}", rows=rows)
    width = "<i8" if kind == "large_binary" else "<i4"
    start = view.offset
    offsets = np.frombuffer(view.buffer(1), width)[start : start + n + 1].astype(np.int64)
    data = view.buffer(2)
    if data.size_bytes:
        address = data._addr()  # noqa: SLF001 - the bytes' address (no public accessor)
        buffer = np.asarray(_Pinned(address, data.size_bytes, owner))
    else:
        buffer = np.zeros(0, np.uint8)
    return buffer, offsets, _nano_valid(view, np)


_NANO_NUMBERS = {"int64": "<i8", "double": "<f8"}  # the types SQLite's driver gives numbers


def _nano_values(view: Any, name: str, how: str, n: int, rows: int, vocabulary: Mapping) -> Any:
    """Return a value column's Arrow view as the sweep's array (``how``: see _spatialite_sql)."""
    import numpy as np

    from ..loaders._engine import EngineUnavailable

    kind = view.storage_type
    if kind == "na":  # every value of the batch is NULL
        return np.full(n, np.nan) if how == "float" else np.full(n, -1, np.int64)
    start = view.offset
    valid = _nano_valid(view, np)
    if how in ("float", "code"):
        if kind not in _NANO_NUMBERS:
            raise EngineUnavailable(f"column {name!r} came as {kind}", rows=rows)
        raw = np.frombuffer(view.buffer(1), _NANO_NUMBERS[kind])[start : start + n]
        out = raw.astype(float if how == "float" else np.int64)
        if valid is not None:
            out[~valid] = np.nan if how == "float" else -1
        return out
    return codes_of(_nano_pylist(view, kind, n, valid, name, rows), vocabulary[name])


def _nano_pylist(view: Any, kind: str, n: int, valid: Any, name: str, rows: int) -> list:
    """One column's values as Python objects (None for NULL), as ``sqlite3`` would give them."""
    import numpy as np

    from ..loaders._engine import EngineUnavailable

    start = view.offset
    if kind in _NANO_NUMBERS:
        values = np.frombuffer(view.buffer(1), _NANO_NUMBERS[kind])[start : start + n].tolist()
    elif kind in ("string", "binary"):
        offsets = np.frombuffer(view.buffer(1), "<i4")[start : start + n + 1].tolist()
        data = view.buffer(2)
        data = bytes(memoryview(data)) if data.size_bytes else b""
        values = [data[lo:hi] for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]
        if kind == "string":
            values = [v.decode() for v in values]
    else:
        raise EngineUnavailable(f"column {name!r} came as {kind}", rows=rows)
    if valid is not None:
        values = [v if ok else None for v, ok in zip(values, valid.tolist(), strict=True)]
    return values


def _direct(read_next: Callable[[], Any]) -> Iterator[Any]:
    """Yield ``read_next()`` results in the calling thread."""
    while True:
        try:
            batch = read_next()
        except StopIteration:
            return
        yield batch


def prefetched(read_next: Callable[[], Any], depth: int = 1) -> Iterator[Any]:
    """Yield ``read_next()`` results, read ahead by a background thread (at most ``depth``).

    The ADBC driver steps SQLite and builds Arrow arrays without the GIL, so the next batch is
    read while the calling thread works on this one. The thread owns nothing but the reader;
    closing the generator (or an exception in the caller) stops it and waits for it, which
    takes at most one batch read. ``StopIteration`` from ``read_next`` ends the stream; any
    other exception is raised in the caller.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            try:
                item = ("batch", read_next())
            except StopIteration:
                item = ("end", None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                item = ("error", exc)
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item[0] != "batch":
                return

    thread = threading.Thread(target=produce, name="sweep-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
            value = None
    finally:
        stop.set()
        thread.join()


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


# --------------------------------------------------------------------------------------------
# Boxes and WKB from SpatiaLite blobs
# --------------------------------------------------------------------------------------------


def _blob_chunk(n, buffer, offsets, valid, values, to_wkb) -> Chunk:
    """Build a chunk from blobs laid end to end in ``buffer`` (blob i at ``offsets[i:i+2]``)."""
    import numpy as np

    starts, ends = offsets[:-1], offsets[1:]
    klass, bounds = blob_headers(buffer, starts, ends)  # class 0: not read here (or NULL)
    plain = klass > 0
    # Blobs not read here: their WKB from SpatiaLite now (they are all left to GEOS).
    odd = np.flatnonzero(~plain if valid is None else (~plain & valid))
    converted = None
    if len(odd):
        converted = np.empty(n, dtype=object)
        converted[odd] = to_wkb(buffer, starts[odd], ends[odd])

    def wkb_of(wanted: np.ndarray) -> np.ndarray:
        out = np.empty(len(wanted), dtype=object)  # None: a NULL geometry
        kinds = klass[wanted]
        simple = np.flatnonzero((kinds > 0) & (kinds <= 3))
        if len(simple):
            at = wanted[simple]
            view = memoryview(buffer)
            out[simple] = [
                b"\x01" + view[lo:hi]
                for lo, hi in zip((starts[at] + 39).tolist(), (ends[at] - 1).tolist(), strict=True)
            ]
        for i in np.flatnonzero(kinds > 3).tolist():
            row = wanted[i]
            out[i] = blob_to_wkb(buffer[starts[row] : ends[row]].tobytes())
            if out[i] is None:  # a part not laid out as the first one: never silently lost
                raise ValueError(
                    f"item geometry in row {row} of a chunk is a SpatiaLite collection blob "
                    "whose parts differ in layout; read it with Sweep(engine=...) on a "
                    "database without it, or rewrite the geometry with CastToMulti()"
                )
        if converted is not None:
            others = np.flatnonzero(kinds == 0)
            out[others] = converted[wanted[others]]
        return out

    return Chunk(n, bounds, wkb_of, values)


def blob_headers(
    buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return each blob's class and box from its header; class 0 and a NaN box if not read here.

    Read here: SpatiaLite blobs of the uncompressed little-endian XY classes 1..7.
    """
    import numpy as np

    n = len(starts)
    klass = np.zeros(n, np.int32)
    bounds = np.full((n, 4), np.nan)
    long = ends - starts >= _WINDOW  # every non-empty geometry (a point's blob has 60 bytes)
    every = bool(long.all())
    ok = None if every else np.flatnonzero(long)
    if not every and len(ok) == 0:
        return klass, bounds
    at = starts if every else starts[ok]
    # Rows of a sliding window over the buffer: one copy per blob, no index matrix.
    head = np.lib.stride_tricks.sliding_window_view(buffer, _WINDOW)[at]
    kinds = head[:, 39:43].copy().view("<i4").ravel()
    good = (head[:, 0] == 0x00) & (head[:, 1] == 0x01) & (head[:, 38] == 0x7C)
    good &= (buffer[(ends if every else ends[ok]) - 1] == 0xFE) & (kinds >= 1) & (kinds <= 7)
    multi = (kinds >= 4) & (kinds <= 6)
    if multi.any():
        # A collection's parts share its layout; SpatiaLite compresses the parts, not the
        # collection's own class, so the first part's marker and class must be plain too.
        part = head[:, 48:52].copy().view("<i4").ravel()
        good &= ~multi | ((head[:, 47] == 0x69) & (part >= 1) & (part <= 3))
    good &= kinds != 7  # a GeometryCollection's parts may be of any class: SpatiaLite's WKB
    boxes = head[:, 6:38].copy().view("<f8")
    if every and good.all():
        return kinds, boxes
    rows = np.flatnonzero(long)[good]
    klass[rows] = kinds[good]
    bounds[rows] = boxes[good]
    return klass, bounds
    at = starts if every else starts[ok]
    # Rows of a sliding window over the buffer: one 43-byte copy per blob, no index matrix.
    head = np.lib.stride_tricks.sliding_window_view(buffer, _HEADER)[at]
    kinds = head[:, 39:43].copy().view("<i4").ravel()
    good = (head[:, 0] == 0x00) & (head[:, 1] == 0x01) & (head[:, 38] == 0x7C)
    good &= (buffer[(ends if every else ends[ok]) - 1] == 0xFE) & (kinds >= 1) & (kinds <= 7)
    boxes = head[:, 6:38].copy().view("<f8")
    if every and good.all():
        return kinds, boxes
    rows = np.flatnonzero(long)[good]
    klass[rows] = kinds[good]
    bounds[rows] = boxes[good]
    return klass, bounds


def blob_to_wkb(blob: bytes) -> bytes | None:
    """WKB of one SpatiaLite blob in the layout :func:`blob_layout` accepts (None otherwise)."""
    klass = int.from_bytes(blob[39:43], "little")
    if klass in _SIMPLE_CLASSES:
        return b"\x01" + blob[39:-1]
    if klass not in _MULTI_CLASSES:
        return None
    parts = [b"\x01", blob[39:47]]
    count = int.from_bytes(blob[43:47], "little")
    pos = 47
    end = len(blob) - 1
    for _ in range(count):
        if pos + 5 > end or blob[pos] != 0x69:
            return None
        part_class = int.from_bytes(blob[pos + 1 : pos + 5], "little")
        body = pos + 5
        if part_class == 1:
            stop = body + 16
        elif part_class == 2:
            stop = body + 4 + 16 * int.from_bytes(blob[body : body + 4], "little")
        elif part_class == 3:
            rings = int.from_bytes(blob[body : body + 4], "little")
            stop = body + 4
            for _ring in range(rings):
                if stop + 4 > end:
                    return None
                stop += 4 + 16 * int.from_bytes(blob[stop : stop + 4], "little")
        else:
            return None
        if stop > end:
            return None
        parts.append(b"\x01")
        parts.append(blob[pos + 1 : stop])
        pos = stop
    if pos != end:
        return None
    return b"".join(parts)


class _SpatiaLiteWkb:
    """WKB of blobs this module does not read, from SpatiaLite on Django's connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.function = connection.ops.spatial_function_name("AsWKB")

    def __call__(self, buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list:
        blobs = [buffer[s:e].tobytes() for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        out: list = []
        with self.connection.cursor() as cursor:
            for lo in range(0, len(blobs), _SQL_BATCH):
                part = blobs[lo : lo + _SQL_BATCH]
                rows = ", ".join(["(%s, %s)"] * len(part))
                params = [x for i, blob in enumerate(part) for x in (i, blob)]
                # Only placeholders and SpatiaLite's own function name are formatted in.
                sql = f"SELECT column1, {self.function}(column2) FROM (VALUES {rows})"  # noqa: S608
                cursor.execute(sql, params)
                got = dict(cursor.fetchall())
                out.extend(_as_bytes(got[i]) for i in range(len(part)))
        return out


def _as_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)
