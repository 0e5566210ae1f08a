"""On PostgreSQL the loaders read through a server-side (named) cursor: the client holds one chunk.

A plain psycopg cursor receives the whole result on ``execute()``: libpq keeps every row in C
memory, where tracemalloc cannot see it, and ``fetchmany()`` only converts rows from that
buffer. A named cursor makes the server keep the result and send ``FETCH FORWARD n`` batches.
These tests look at both sides: the server lists the cursor in ``pg_cursors``, libpq's result
never holds more than one chunk of rows, and the C heap the client holds stays flat where the
same loader on a client-side cursor holds the whole result.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from django.db import connections

from analysis_lib import iter_frames, read_frame
from project.buildings.models import Building
from tests.backends import requires_postgis
from tests.heap_peak import heap_peak

pytestmark = [requires_postgis, pytest.mark.django_db]

N_ROWS = 20_000
CHUNK = 1_000
FIELDS = ["id", "footprint_m2", "use_type", "source_id", "boundary"]


@pytest.fixture
def many_buildings():
    """N_ROWS small buildings made by the server (generate_series), in the test transaction."""
    table = connections["default"].ops.quote_name(Building._meta.db_table)
    with connections["default"].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (boundary, footprint_m2, use_type, source_id) "
            "SELECT ST_MakeEnvelope(-71 + g * 1e-6, 42, -71 + g * 1e-6 + 1e-5, 42.00001, 4326), "
            "g, 'residential', lpad(g::text, 64, 'x') FROM generate_series(1, %s) AS g",
            [N_ROWS],
        )
    return Building.objects.order_by("pk")


_MALLINFO2_FIELDS = [
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
]


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: every member is a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]


def _c_heap_in_use():
    """Return a function giving the bytes malloc has handed out and not freed (glibc)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to read the C heap libpq allocates from")
    mallinfo2.restype = _MallInfo2

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd  # small chunks in the arenas + large mmapped ones

    return in_use


def _spy_cursors(monkeypatch, *methods: str) -> list:
    """Record every cursor the default connection opens through ``methods`` (real cursors)."""
    connection = connections["default"]
    opened = []

    def spying(real):
        def spy(*args, **kwargs):
            cursor = real(*args, **kwargs)
            opened.append(cursor)
            return cursor

        return spy

    for method in methods:
        monkeypatch.setattr(connection, method, spying(getattr(connection, method)))
    return opened


def _held_while_iterating(queryset, in_use, opened: list) -> tuple[int, list[int]]:
    """Iterate the loader; at each chunk, the C heap above the start and libpq's row count."""
    # One warm-up pass: the first chunk allocates one-off things (imports, caches, plans).
    for _ in iter_frames(queryset[:10], FIELDS, CHUNK, geometry="wkb"):
        pass
    held, rows_in_libpq = 0, []
    start = in_use()
    for _frame in iter_frames(queryset, FIELDS, CHUNK, geometry="wkb"):
        held = max(held, in_use() - start)
        rows_in_libpq.append(opened[-1].cursor.pgresult.ntuples)  # the loader's cursor
    return held, rows_in_libpq


def test_loader_reads_through_a_named_cursor_listed_by_the_server(many_buildings, monkeypatch):
    opened = _spy_cursors(monkeypatch, "chunked_cursor")
    frames = iter_frames(many_buildings, FIELDS, CHUNK)
    first = next(frames)
    assert len(first) == CHUNK
    [cursor] = opened
    name = cursor.cursor.name  # psycopg's ServerCursor; a client cursor has no name
    assert name
    with connections["default"].cursor() as other:
        other.execute("SELECT name FROM pg_cursors")
        open_cursors = {row[0] for row in other.fetchall()}
    assert name in open_cursors
    # libpq holds the last FETCH only, never the whole result.
    assert cursor.cursor.pgresult.ntuples == CHUNK
    rest = sum(len(frame) for frame in frames)
    assert len(first) + rest == N_ROWS


def test_client_holds_one_chunk_not_the_result(many_buildings, monkeypatch):
    """Same loader, same rows: the named cursor's C heap stays flat, a client cursor's does not."""
    in_use = _c_heap_in_use()
    opened = _spy_cursors(monkeypatch, "chunked_cursor", "cursor")
    named_held, named_rows = _held_while_iterating(many_buildings, in_use, opened)
    assert all(cursor.cursor.name for cursor in opened)  # named: server-side
    assert named_rows and max(named_rows) <= CHUNK

    # The project's own switch for poolers such as PgBouncer: Django then uses client cursors.
    monkeypatch.setitem(connections["default"].settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    client_held, client_rows = _held_while_iterating(many_buildings, in_use, opened)
    assert not getattr(opened[-1].cursor, "name", None)  # a client-side cursor
    assert client_rows and max(client_rows) == N_ROWS  # libpq received every row at execute()

    # 20,000 rows of about 350 bytes: ~7 MB in libpq for the client cursor; one chunk of
    # 1,000 rows on the named cursor. A generous margin: the named cursor holds under a fifth.
    assert client_held > 3_000_000, client_held
    assert named_held < client_held / 5, (named_held, client_held)


def test_python_heap_of_a_chunked_read_is_a_fraction_of_a_full_read(many_buildings):
    fields = ["id", "footprint_m2", "source_id", "boundary"]
    for _ in iter_frames(many_buildings[:10], fields, CHUNK):  # warm up imports and caches
        pass

    chunked_peak, n = heap_peak(
        lambda: sum(len(frame) for frame in iter_frames(many_buildings, fields, CHUNK))
    )
    full_peak, full = heap_peak(lambda: read_frame(many_buildings, fields, chunk_size=CHUNK))

    assert n == len(full) == N_ROWS
    # Python's heap plus Arrow's pool: on pandas 3 the 64-character source_id lives in Arrow.
    assert chunked_peak < full_peak / 4, (chunked_peak, full_peak)
