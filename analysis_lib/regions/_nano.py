"""The sweep's pyarrow-free ADBC read of SpatiaLite: the driver's Arrow stream through nanoarrow.

Used when pyarrow is kept out of the process (:func:`~analysis_lib.keep_pyarrow_out`, as
``manage.py analyze_buildings`` does for CSV output) or not installed, and ``nanoarrow`` can be
imported (:func:`nano_reads`). The rows come as Arrow arrays from the same ADBC SQLite driver
as with pyarrow, their buffers handed to numpy without a copy; the query's parameters are bound
by the driver from a one-row nanoarrow struct, never formatted into the SQL. nanoarrow's own
``get_next`` holds the GIL while the driver reads, so :func:`_nogil_get_next` calls the Arrow C
stream's ``get_next`` through :mod:`ctypes` (which releases it) and the read-ahead thread
overlaps the matching; with an unexpected nanoarrow layout it falls back to nanoarrow's call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._blobs import _blob_chunk, _direct, check_adbc_read, codes_of, prefetched

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: Read the next batch in a background thread while this one is matched (the stream's reads
#: release the GIL through :func:`_nogil_get_next`: measured 1.04-1.06 s against 1.54-1.59 s).
NANO_READ_AHEAD = True


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


def _nano_chunks(items, spec, sql, params, columns, vocabulary, chunk_size, to_wkb):
    """Read the raw rows on a second, ADBC connection, as Arrow arrays seen through nanoarrow.

    The pyarrow-free twin of :func:`_adbc_chunks`: the driver's C stream is read with
    ``nanoarrow`` (no pyarrow in the process), the buffers handed to numpy without a copy.
    """
    from ..loaders._adbc import _adbc_sql
    from ..loaders._engine import EngineUnavailable

    connection = check_adbc_read(items, spec, params, arrow=False)
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
    import nanoarrow as na

    from ..loaders._adbc import sqlite_connect
    from ..loaders._engine import EngineUnavailable

    for spatial in (False, True):
        conn = sqlite_connect(connection, spatialite=spatial)
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
