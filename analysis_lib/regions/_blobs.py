r"""What the sweep's readers hand it, and SpatiaLite's geometry blobs read with numpy.

A :class:`Chunk` holds what the sweep needs of ``n`` items: their boxes (``(n, 4)``, NaN where
the box is not known: GEOS decides those), the WKB of any rows on demand, and one numpy array
per value field: floats (NaN for NULL) for numbers, integer codes (``-1`` for NULL or a value
outside the choices) for category fields, the codes' values in ``vocabulary[field]``
(:func:`codes_of`).

SpatiaLite's blob: byte 0 = 0x00, byte 1 = 0x01 for little-endian, bytes 2..5 the SRID, bytes
6..37 the MBR (four doubles), byte 38 = 0x7C, bytes 39..42 the class, then the body, and a last
byte 0xFE. For the uncompressed XY classes 1..7 the body is laid out as WKB's, except that each
part of a collection starts with 0x69 where WKB has its byte order: a point, line or polygon's
WKB is ``b"\x01" + blob[39:-1]``; a multi-geometry's is rebuilt part by part. Any other blob
(compressed, Z/M, big-endian, not a SpatiaLite blob) gets a NaN box and its WKB from SpatiaLite
itself (``AsBinary``, :class:`_SpatiaLiteWkb`), so the answer is GEOS's, as for every item near
a border.

:func:`prefetched` is the read-ahead thread both ADBC readers use, :func:`check_adbc_read` the
check they make first. This module imports no other
reader module: :mod:`._chunks` (DB-API, ADBC with pyarrow, the dispatch) and :mod:`._nano` (ADBC
with nanoarrow) import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: SpatiaLite classes whose uncompressed little-endian XY body is read here (1..7).
_SIMPLE_CLASSES = (1, 2, 3)
_MULTI_CLASSES = (4, 5, 6)
_HEADER = 43  # bytes before a blob's body: start, endian, SRID, MBR, 0x7C, class
_WINDOW = 52  # bytes read per blob: the header, a count, a collection's first part marker
_SQL_BATCH = 400  # blobs converted by SpatiaLite per statement (two parameters each)


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


def check_adbc_read(items: Any, spec: Any, params: tuple, *, arrow: bool) -> Any:
    """Return Django's connection for an ADBC read of ``items``' raw rows, or raise.

    Raises :class:`~analysis_lib.EngineUnavailable` naming why ADBC cannot run the query (the
    loaders' :func:`~analysis_lib.loaders._adbc.refusal`; pyarrow is only asked for when
    ``arrow``), or when a parameter is of a type the driver cannot bind. Both ADBC readers
    (pyarrow's and nanoarrow's) call it first.
    """
    from django.db import connections

    from ..loaders._adbc import refusal
    from ..loaders._engine import EngineUnavailable
    from ..loaders._plan import make_plan
    from .core import fields_of

    connection = connections[items.db]
    plan = make_plan(items.order_by(), fields_of(spec, [spec.item_geometry]), "wkb")
    reason = refusal(plan, connection, arrow=arrow)
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
    return connection


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
