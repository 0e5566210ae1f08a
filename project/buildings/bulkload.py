"""Fast, all-or-nothing bulk loading of generated buildings into SpatiaLite or PostGIS.

:func:`load_buildings` writes :class:`~project.buildings.synthetic.BuildingBatch`
batches into the (empty) ``Building`` table inside one ``transaction.atomic``
block, so a failure leaves nothing half-written. ``method`` picks how the
spatial index is kept up to date; on SpatiaLite:

``"packed"`` (the default)
    Geometries are written as SpatiaLite BLOBs built with numpy (no WKB parsing
    per row), with the per-row triggers (geometry constraint check, R*Tree
    insert, last-insert timestamp) dropped for the load and restored from their
    own ``CREATE TRIGGER`` text afterwards. The R*Tree is bulk-loaded as a packed
    Hilbert R-tree: consecutive rows (the generator emits them along a Hilbert
    curve) are grouped into full leaves and the levels above are built from the
    leaf boxes, written straight into the R*Tree's ``_node``, ``_rowid`` and
    ``_parent`` tables in SQLite's documented node format (big-endian header and
    cells, 32-bit float bounds rounded outwards exactly as the ``rtree`` module
    does). ``SELECT rtreecheck(...)`` returns ``'ok'`` on the result, and the
    stored boxes are the ones ``CreateSpatialIndex`` stores.
``"rebuild"``
    The same BLOB inserts, with ``DisableSpatialIndex`` before and
    ``CreateSpatialIndex`` after (SpatiaLite inserts every row into the R*Tree).
``"naive"``
    The baseline: ``executemany`` of ``GeomFromWKB(?, 4326)`` with every trigger
    on. Only for benchmarks.

On PostGIS every method uses ``COPY ... FROM STDIN`` with hex EWKB from shapely;
the GiST index is dropped for the load and recreated from its own definition
(``pg_indexes.indexdef``) after it, except with ``"naive"``.

No PRAGMA is changed: journal and synchronous stay as Django left them, so a
load is as durable as any other write (a larger page cache was measured and
gave nothing at 2,000,000 rows, only 70 MB more RSS).

Table and column names in the SQL come from the models' metadata, quoted by the
backend; no user input reaches SQL text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysis_lib.checks import check_choice

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from .synthetic import BuildingBatch

Method = Literal["packed", "rebuild", "naive"]
METHODS: tuple[str, ...] = ("packed", "rebuild", "naive")

_COLUMNS = ("id", "boundary", "footprint_m2", "height_m", "year_built", "use_type", "source_id")


@dataclass(frozen=True)
class LoadStats:
    """What :func:`load_buildings` did and how long each phase took.

    Attributes
    ----------
    rows : int
        Buildings written.
    batches : int
        Batches written.
    insert_seconds : float
        Generating and inserting the rows (the batches are generated lazily).
    index_seconds : float
        Building the spatial index (the packed R*Tree's leaves are written with
        each batch; that time counts here) and restoring triggers.
    method : str
        The method used.
    """

    rows: int
    batches: int
    insert_seconds: float
    index_seconds: float
    method: str


# --------------------------------------------------------------------------- geometry encoding


def _polygon_blob_dtype(npoints: int) -> np.dtype:
    """Packed numpy layout of a SpatiaLite BLOB polygon with one ring of ``npoints``."""
    return np.dtype(
        [
            ("start", "u1"),  # 0x00
            ("endian", "u1"),  # 0x01: little endian
            ("srid", "<i4"),
            ("mbr", "<f8", (4,)),  # min x, min y, max x, max y
            ("mbr_end", "u1"),  # 0x7C
            ("geometry_class", "<i4"),  # 3: POLYGON (XY)
            ("rings", "<i4"),
            ("points", "<i4"),
            ("xy", "<f8", (2 * npoints,)),
            ("end", "u1"),  # 0xFE
        ]
    )


def spatialite_polygon_blobs(coords: np.ndarray, srid: int) -> list[bytes]:
    """Encode single-ring polygons in SpatiaLite's internal BLOB geometry format.

    Parameters
    ----------
    coords : numpy.ndarray
        float64 array ``(n, m, 2)``: the closed exterior ring of each polygon
        (first point repeated last).
    srid : int
        SRID stored in each BLOB.

    Returns
    -------
    list of bytes
        One BLOB per polygon (132 bytes for a 5-point ring), byte-identical to
        what SpatiaLite's ``GeomFromWKB`` stores for the same polygon.

    Raises
    ------
    ValueError
        If ``coords`` is not ``(n, m, 2)`` with ``m >= 4`` closed rings.

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.array([[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]], dtype=float)
    >>> blob = spatialite_polygon_blobs(ring, 4326)[0]
    >>> len(blob), blob[0], blob[38], blob[-1]
    (132, 0, 124, 254)
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[2] != 2 or coords.shape[1] < 4:
        raise ValueError(f"coords must have shape (n, m>=4, 2), got {coords.shape}")
    if len(coords) and not np.array_equal(coords[:, 0], coords[:, -1]):
        raise ValueError("coords: every ring must be closed (first point == last point)")
    n, m, _ = coords.shape
    out = np.empty(n, _polygon_blob_dtype(m))
    out["start"] = 0x00
    out["endian"] = 0x01
    out["srid"] = srid
    out["mbr"][:, 0] = coords[:, :, 0].min(axis=1)
    out["mbr"][:, 1] = coords[:, :, 1].min(axis=1)
    out["mbr"][:, 2] = coords[:, :, 0].max(axis=1)
    out["mbr"][:, 3] = coords[:, :, 1].max(axis=1)
    out["mbr_end"] = 0x7C
    out["geometry_class"] = 3
    out["rings"] = 1
    out["points"] = m
    out["xy"] = coords.reshape(n, 2 * m)
    out["end"] = 0xFE
    # fixed-width bytes: numpy strips trailing NULs only, and the last byte is 0xFE
    return out.view(f"S{out.dtype.itemsize}").tolist()


def ewkb_hex(coords: np.ndarray, srid: int) -> list[str]:
    """Hex EWKB (with SRID) of single-ring polygons, as PostGIS reads it in ``COPY``.

    Parameters
    ----------
    coords : numpy.ndarray
        float64 array ``(n, m, 2)`` of closed rings.
    srid : int
        SRID to embed.

    Returns
    -------
    list of str
        One hex string per polygon.

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.array([[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]], dtype=float)
    >>> ewkb_hex(ring, 4326)[0][:18]
    '0103000020E6100000'
    """
    import shapely

    polygons = shapely.set_srid(shapely.polygons(np.asarray(coords, dtype=np.float64)), srid)
    return shapely.to_wkb(polygons, hex=True, include_srid=True).tolist()


# --------------------------------------------------------------------------- packed R*Tree

_RND_TOWARDS = 1.0 - 1.0 / 8388608.0  # sqlite/ext/rtree/rtree.c RNDTOWARDS
_RND_AWAY = 1.0 + 1.0 / 8388608.0  # RNDAWAY


def _float32_down(d: np.ndarray) -> np.ndarray:
    """``float32`` not above ``d``, as sqlite's ``rtreeValueDown``."""
    f = d.astype(np.float32)
    bad = f > d
    if bad.any():
        fix = d[bad]
        f[bad] = (fix * np.where(fix < 0, _RND_AWAY, _RND_TOWARDS)).astype(np.float32)
    return f


def _float32_up(d: np.ndarray) -> np.ndarray:
    """``float32`` not below ``d``, as sqlite's ``rtreeValueUp``."""
    f = d.astype(np.float32)
    bad = f < d
    if bad.any():
        fix = d[bad]
        f[bad] = (fix * np.where(fix < 0, _RND_TOWARDS, _RND_AWAY)).astype(np.float32)
    return f


def rtree_boxes(coords: np.ndarray) -> np.ndarray:
    """R*Tree boxes ``(xmin, xmax, ymin, ymax)`` of rings, as float32 rounded outwards.

    Parameters
    ----------
    coords : numpy.ndarray
        float64 array ``(n, m, 2)``.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, 4)`` in the column order of SpatiaLite's ``idx_`` tables.

    Examples
    --------
    >>> import numpy as np
    >>> rtree_boxes(np.array([[[0.1, 0.2], [0.3, 0.4]]])).tolist()  # doctest: +ELLIPSIS
    [[0.0999999..., 0.3000000..., 0.1999999..., 0.4000000...]]
    """
    x, y = coords[:, :, 0], coords[:, :, 1]
    return np.column_stack(
        [
            _float32_down(x.min(axis=1)),
            _float32_up(x.max(axis=1)),
            _float32_down(y.min(axis=1)),
            _float32_up(y.max(axis=1)),
        ]
    )


_CELL = np.dtype([("id", ">i8"), ("box", ">f4", (4,))])  # 24 bytes: a 2-D rtree cell


class PackedRTreeWriter:
    """Stream-write a packed R-tree into an empty SQLite ``rtree`` table.

    Entries are grouped into full leaves in the order they are added (add them
    in a space-filling-curve order for a good tree); the levels above the leaves
    are built by :meth:`finish` from the leaf boxes alone (one box per leaf kept
    in memory). Node numbers: 1 is the root, as SQLite requires; leaves and
    inner nodes follow from 2.

    Parameters
    ----------
    cursor : sqlite3.Cursor
        A cursor on the connection holding the table, inside a transaction.
    table : str
        Name of a 2-D ``rtree`` virtual table with an empty root and no entries.
    quote : callable
        Quotes an identifier for SQL.
    """

    def __init__(self, cursor: Any, table: str, quote: Callable[[str], str]) -> None:
        self._cur = cursor
        self._node = quote(f"{table}_node")
        self._rowid = quote(f"{table}_rowid")
        self._parent = quote(f"{table}_parent")
        row = cursor.execute(
            f"SELECT length(data), (SELECT count(*) FROM {self._rowid}) "  # noqa: S608
            f"FROM {self._node} WHERE nodeno = 1"
        ).fetchone()
        if row is None or row[1] != 0:
            raise ValueError(f"R*Tree {table!r} must exist and be empty")
        self.node_size = int(row[0])
        self.capacity = (self.node_size - 4) // _CELL.itemsize
        self._next_node = 2
        self._pending_ids = np.empty(0, np.int64)
        self._pending_boxes = np.empty((0, 4), np.float32)
        self._leaf_nodes: list[np.ndarray] = []
        self._leaf_boxes: list[np.ndarray] = []
        self.entries = 0

    def _encode(self, ids: np.ndarray, boxes: np.ndarray, nodes: int) -> np.ndarray:
        """Node blobs (uint8 ``(nodes, node_size)``) holding consecutive cells."""
        cap = self.capacity
        cells = np.zeros(nodes * cap, _CELL)
        cells["id"][: len(ids)] = ids
        cells["box"][: len(ids)] = boxes
        data = np.zeros((nodes, self.node_size), np.uint8)
        data[:, 4 : 4 + cap * _CELL.itemsize] = cells.view(np.uint8).reshape(nodes, -1)
        counts = np.full(nodes, cap, dtype=">u2")
        counts[-1] = len(ids) - (nodes - 1) * cap
        data[:, 2:4] = counts.view(np.uint8).reshape(nodes, 2)
        return data

    def _write_nodes(self, ids: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write cells into new consecutive nodes; return their numbers and bounding boxes."""
        cap = self.capacity
        nodes = -(-len(ids) // cap)
        numbers = np.arange(self._next_node, self._next_node + nodes, dtype=np.int64)
        self._next_node += nodes
        data = self._encode(ids, boxes, nodes)
        self._cur.executemany(
            f"INSERT INTO {self._node} (nodeno, data) VALUES (?, ?)",  # noqa: S608
            zip(numbers.tolist(), (row.tobytes() for row in data), strict=True),
        )
        starts = np.arange(0, len(ids), cap)
        union = np.column_stack(
            [
                np.minimum.reduceat(boxes[:, 0], starts),
                np.maximum.reduceat(boxes[:, 1], starts),
                np.minimum.reduceat(boxes[:, 2], starts),
                np.maximum.reduceat(boxes[:, 3], starts),
            ]
        )
        return numbers, union

    def _write_leaves(self, ids: np.ndarray, boxes: np.ndarray) -> None:
        numbers, union = self._write_nodes(ids, boxes)
        leaf_of_entry = np.repeat(numbers, self.capacity)[: len(ids)]
        self._cur.executemany(
            f"INSERT INTO {self._rowid} (rowid, nodeno) VALUES (?, ?)",  # noqa: S608
            zip(ids.tolist(), leaf_of_entry.tolist(), strict=True),
        )
        self._leaf_nodes.append(numbers)
        self._leaf_boxes.append(union)

    def add(self, ids: np.ndarray, boxes: np.ndarray) -> None:
        """Add entries (int64 ids, float32 ``(n, 4)`` boxes from :func:`rtree_boxes`)."""
        ids = np.concatenate([self._pending_ids, np.asarray(ids, np.int64)])
        boxes = np.concatenate([self._pending_boxes, np.asarray(boxes, np.float32)])
        self.entries += len(ids) - len(self._pending_ids)
        # keep 1..capacity entries pending: finish() decides whether they are the root
        full = (len(ids) - 1) // self.capacity * self.capacity if len(ids) else 0
        if full:
            self._write_leaves(ids[:full], boxes[:full])
        self._pending_ids, self._pending_boxes = ids[full:], boxes[full:]

    def finish(self) -> int:
        """Write the last leaf and the inner levels; return the tree depth (0: root is a leaf)."""
        root = self._node
        if not self._leaf_nodes:  # everything fits in the root leaf (or nothing at all)
            if len(self._pending_ids):
                data = self._encode(self._pending_ids, self._pending_boxes, 1)[0]
                self._cur.execute(
                    f"UPDATE {root} SET data = ? WHERE nodeno = 1",  # noqa: S608
                    (data.tobytes(),),
                )
                self._cur.executemany(
                    f"INSERT INTO {self._rowid} (rowid, nodeno) VALUES (?, 1)",  # noqa: S608
                    ((i,) for i in self._pending_ids.tolist()),
                )
            return 0
        self._write_leaves(self._pending_ids, self._pending_boxes)
        children = np.concatenate(self._leaf_nodes)
        boxes = np.concatenate(self._leaf_boxes)
        depth = 1
        while len(children) > self.capacity:
            parents, boxes_up = self._write_nodes(children, boxes)
            self._write_parents(children, np.repeat(parents, self.capacity)[: len(children)])
            children, boxes = parents, boxes_up
            depth += 1
        data = self._encode(children, boxes, 1)[0]
        data[0:2] = np.array([depth], dtype=">u2").view(np.uint8)
        self._cur.execute(
            f"UPDATE {root} SET data = ? WHERE nodeno = 1",  # noqa: S608
            (data.tobytes(),),
        )
        self._write_parents(children, np.ones(len(children), np.int64))
        return depth

    def _write_parents(self, children: np.ndarray, parents: np.ndarray) -> None:
        self._cur.executemany(
            f"INSERT INTO {self._parent} (nodeno, parentnode) VALUES (?, ?)",  # noqa: S608
            zip(children.tolist(), parents.tolist(), strict=True),
        )


# --------------------------------------------------------------------------- loaders


def _row_values(batch: BuildingBatch, zip_pk: np.ndarray) -> tuple[list, ...]:
    """Per-column Python lists (NULLs as None) of a batch, in ``_COLUMNS`` order minus geometry."""
    from .synthetic import USE_TYPES

    ids = batch.number.tolist()
    height = batch.height_m.astype(object)
    height[np.isnan(batch.height_m)] = None
    year = batch.year_built.astype(object)
    year[batch.year_built == 0] = None
    use = np.array(USE_TYPES, dtype=object)[batch.use_type]
    return (
        ids,
        batch.footprint_m2.tolist(),
        height.tolist(),
        year.tolist(),
        use.tolist(),
        [f"syn-{i}" for i in ids],
        zip_pk[batch.zip_index].tolist(),
    )


@dataclass(frozen=True)
class _Plan:
    """The steps of a method: geometry encoding, per-row triggers, spatial index."""

    geometry: Literal["blob", "wkb"]  # SpatiaLite BLOB from numpy, or WKB + GeomFromWKB()
    drop_row_triggers: bool  # drop the geometry-check and last-insert triggers for the load
    index: Literal["triggers", "rebuild", "packed"]


# public methods; benchmarks/bench_generate.py adds intermediate plans to measure each step
_PLANS: dict[str, _Plan] = {
    "packed": _Plan("blob", True, "packed"),
    "rebuild": _Plan("blob", True, "rebuild"),
    "naive": _Plan("wkb", False, "triggers"),
}


class _Loader:
    """One backend's way of writing batches.

    ``begin`` once, then per batch ``prepare`` (numpy/Python encoding, no database)
    and ``insert``, then ``finish`` after the last batch.
    """

    def __init__(self, connection: BaseDatabaseWrapper, method: str, zip_pk: np.ndarray) -> None:
        from .models import Building

        self.connection = connection
        self.method = method
        self.plan = _PLANS[method]
        self.zip_pk = zip_pk
        self.quote = connection.ops.quote_name
        self.table = Building._meta.db_table
        self.geom_column = Building._meta.get_field("boundary").column
        self.srid = Building._meta.get_field("boundary").srid
        zip_column = Building._meta.get_field("zip").column
        columns = [*_COLUMNS, zip_column]
        columns[1] = self.geom_column
        self.columns = ", ".join(self.quote(c) for c in columns)
        self.index_seconds = 0.0  # index work done during the inserts (packed R*Tree leaves)

    def begin(self) -> None:
        raise NotImplementedError

    def prepare(self, batch: BuildingBatch) -> Any:
        raise NotImplementedError

    def insert(self, prepared: Any) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class _SpatiaLiteLoader(_Loader):
    def begin(self) -> None:
        self.connection.ensure_connection()
        self.cur = self.connection.connection.cursor()
        plan, table, column = self.plan, self.table, self.geom_column
        self.idx = f"idx_{table}_{column}"
        value = "?" if plan.geometry == "blob" else f"GeomFromWKB(?, {int(self.srid)})"
        self.sql = (
            f"INSERT INTO {self.quote(table)} ({self.columns}) "  # noqa: S608
            f"VALUES (?, {value}, ?, ?, ?, ?, ?, ?)"
        )
        # triggers that fire per inserted row: geometry check, last-insert time, R*Tree insert
        names = []
        if plan.drop_row_triggers:
            names += [f"ggi_{table}_{column}", f"tmi_{table}_{column}"]
        if plan.index == "packed":
            names.append(f"gii_{table}_{column}")
        self.saved_triggers = [
            row
            for row in self.cur.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (table,),
            )
            if row[0] in names
        ]
        for name, _ in self.saved_triggers:
            self.cur.execute(f"DROP TRIGGER {self.quote(name)}")
        if plan.index == "rebuild":
            self.cur.execute("SELECT DisableSpatialIndex(?, ?)", (table, column))
            self.cur.execute(f"DROP TABLE IF EXISTS {self.quote(self.idx)}")
        elif plan.index == "packed":  # a fresh, empty R*Tree (same definition as SpatiaLite's)
            row = self.cur.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (self.idx,)
            ).fetchone()
            if row is None:
                raise RuntimeError(
                    f"SpatiaLite index table {self.idx!r} is missing: the spatial index of "
                    f"{table}.{column} is disabled; re-run migrate or CreateSpatialIndex"
                )
            self.cur.execute(f"DROP TABLE {self.quote(self.idx)}")
            self.cur.execute(row[0])
            self.rtree = PackedRTreeWriter(self.cur, self.idx, self.quote)

    def prepare(self, batch: BuildingBatch) -> tuple[list[tuple], Any]:
        values = _row_values(batch, self.zip_pk)
        if self.plan.geometry == "wkb":
            import shapely

            geoms = shapely.to_wkb(shapely.polygons(batch.coords)).tolist()
        else:
            geoms = spatialite_polygon_blobs(batch.coords, self.srid)
        rows = list(zip(values[0], geoms, *values[1:], strict=True))
        packed = self.plan.index == "packed"
        return rows, (batch.number, rtree_boxes(batch.coords)) if packed else None

    def insert(self, prepared: tuple[list[tuple], Any]) -> None:
        rows, boxes = prepared
        self.cur.executemany(self.sql, rows)
        if boxes is not None:
            start = time.perf_counter()
            self.rtree.add(*boxes)
            self.index_seconds += time.perf_counter() - start

    def finish(self) -> None:
        table, column = self.table, self.geom_column
        if self.plan.index == "packed":
            self.rtree.finish()
        elif self.plan.index == "rebuild":
            self.cur.execute("SELECT CreateSpatialIndex(?, ?)", (table, column))
        existing = {
            r[0]
            for r in self.cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (table,),
            )
        }
        for name, sql in self.saved_triggers:
            if name not in existing:  # CreateSpatialIndex recreates some itself
                self.cur.execute(sql)
        if self.plan.drop_row_triggers:  # what the dropped tmi_ trigger would have recorded
            self.cur.execute(
                "UPDATE geometry_columns_time SET last_insert = "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "WHERE Lower(f_table_name) = Lower(?) AND Lower(f_geometry_column) = Lower(?)",
                (table, column),
            )


class _PostGISLoader(_Loader):
    def begin(self) -> None:
        self.connection.ensure_connection()
        self.cur = self.connection.connection.cursor()
        self.indexes: list[tuple[str, str]] = []
        if self.plan.index != "triggers":
            self.cur.execute(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = %s "
                "AND indexdef ILIKE %s",
                (self.table, "% USING gist %"),
            )
            self.indexes = self.cur.fetchall()
            for name, _ in self.indexes:
                self.cur.execute(f"DROP INDEX {self.quote(name)}")
        self.sql = f"COPY {self.quote(self.table)} ({self.columns}) FROM STDIN"

    def prepare(self, batch: BuildingBatch) -> bytes:
        # COPY text format: tab-separated, \N for NULL; repr() of a float round-trips
        ids, footprint, height, year, use, source, zips = _row_values(batch, self.zip_pk)
        geoms = ewkb_hex(batch.coords, self.srid)
        null = "\\N"
        height_text = [null if h is None else repr(h) for h in height]
        year_text = [null if y is None else str(y) for y in year]
        lines = [
            f"{i}\t{g}\t{f!r}\t{h}\t{y}\t{u}\t{s}\t{z}\n"
            for i, g, f, h, y, u, s, z in zip(
                ids, geoms, footprint, height_text, year_text, use, source, zips, strict=True
            )
        ]
        return "".join(lines).encode()

    def insert(self, prepared: bytes) -> None:
        with self.cur.copy(self.sql) as copy:
            copy.write(prepared)

    def finish(self) -> None:
        if self.indexes:
            # CREATE INDEX refuses a table with pending (deferred) foreign-key checks: run
            # them now, then give the deferrable constraints back their initial mode
            self.cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            self.cur.execute("SET CONSTRAINTS ALL DEFERRED")
        for _, definition in self.indexes:
            self.cur.execute(definition)
        self.cur.execute(f"ANALYZE {self.quote(self.table)}")


def _loader_class(connection: BaseDatabaseWrapper) -> type[_Loader]:
    ops = connection.ops
    if getattr(ops, "spatialite", False):
        return _SpatiaLiteLoader
    if getattr(ops, "postgis", False):
        return _PostGISLoader
    raise NotImplementedError(
        f"bulk loading supports SpatiaLite and PostGIS, not {connection.vendor!r}"
    )


def insert_batch(loader: _Loader, prepared: Any) -> None:
    """Write one prepared batch through ``loader`` (a separate function so tests can make it fail).

    Parameters
    ----------
    loader : _Loader
        The loader :func:`load_buildings` created.
    prepared : object
        What ``loader.prepare`` returned for the batch.
    """
    loader.insert(prepared)


def load_buildings(
    batches: Iterable[BuildingBatch],
    zip_pk: Sequence[int] | np.ndarray,
    *,
    method: Method = "packed",
    using: str = "default",
    on_batch: Callable[[int], None] | None = None,
) -> LoadStats:
    """Load generated buildings into the empty ``Building`` table, all or nothing.

    Parameters
    ----------
    batches : iterable of BuildingBatch
        The buildings, e.g. from :func:`project.buildings.synthetic.iter_buildings`.
        Consumed lazily: one batch is in memory at a time. (Generating the next
        batch in a worker thread while SQLite writes was measured: no gain on two
        cores, the GIL hand-offs eat it.)
    zip_pk : sequence of int
        Primary key of the ``ZipCode`` row of each cell index
        (``zip_pk[batch.zip_index]`` is stored in ``Building.zip``).
    method : {"packed", "rebuild", "naive"}
        How the spatial index is maintained (see the module docstring).
    using : str
        Database alias.
    on_batch : callable, optional
        Called with the number of rows after each batch (a progress bar's ``update``).

    Returns
    -------
    LoadStats
        Row count and phase timings.

    Raises
    ------
    ValueError
        If ``method`` is unknown or the table is not empty.
    NotImplementedError
        If the database is neither SpatiaLite nor PostGIS.

    Examples
    --------
    >>> from project.buildings import synthetic  # doctest: +SKIP
    >>> load_buildings(synthetic.iter_buildings(1000, 42), range(1, 495)).rows  # doctest: +SKIP
    1000
    """
    from django.db import connections, transaction

    from .models import Building

    check_choice("method", method, METHODS)
    connection = connections[using]
    loader = _loader_class(connection)(connection, method, np.asarray(zip_pk, dtype=np.int64))
    rows = n_batches = 0
    with transaction.atomic(using=using):
        if Building.objects.using(using).exists():
            raise ValueError(
                f"table {Building._meta.db_table} is not empty: delete its rows first "
                "(generate_massachusetts --replace)"
            )
        start = time.perf_counter()
        loader.begin()
        for batch in batches:
            insert_batch(loader, loader.prepare(batch))
            rows += len(batch)
            n_batches += 1
            if on_batch is not None:
                on_batch(len(batch))
        inserted = time.perf_counter()
        loader.finish()
        indexed = time.perf_counter()
    return LoadStats(
        rows=rows,
        batches=n_batches,
        insert_seconds=inserted - start - loader.index_seconds,
        index_seconds=indexed - inserted + loader.index_seconds,
        method=method,
    )


def delete_all(using: str = "default") -> tuple[int, int]:
    """Delete every ``Building`` and ``ZipCode`` row quickly, in one atomic block.

    On SpatiaLite the per-row delete triggers (R*Tree delete, last-delete time)
    are dropped for the delete and restored after it, and the emptied R*Tree is
    recreated; on PostGIS both tables are truncated.

    Parameters
    ----------
    using : str
        Database alias.

    Returns
    -------
    tuple of int
        Buildings and ZIP codes deleted.

    Examples
    --------
    >>> delete_all()  # doctest: +SKIP
    (2000000, 494)
    """
    from django.db import connections, transaction

    from .models import Building, ZipCode

    connection = connections[using]
    quote = connection.ops.quote_name
    b_table, z_table = Building._meta.db_table, ZipCode._meta.db_table
    with transaction.atomic(using=using):
        n_buildings = Building.objects.using(using).count()
        n_zips = ZipCode.objects.using(using).count()
        if getattr(connection.ops, "spatialite", False):
            connection.ensure_connection()
            cur = connection.connection.cursor()
            column = Building._meta.get_field("boundary").column
            idx = f"idx_{b_table}_{column}"
            names = (f"gid_{b_table}_{column}", f"tmd_{b_table}_{column}")
            saved = cur.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)",
                names,
            ).fetchall()
            rtree = cur.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (idx,)
            ).fetchone()
            for name, _ in saved:
                cur.execute(f"DROP TRIGGER {quote(name)}")
            cur.execute(f"DELETE FROM {quote(b_table)}")  # noqa: S608
            if rtree is not None:  # empty the R*Tree by recreating it
                cur.execute(f"DROP TABLE {quote(idx)}")
                cur.execute(rtree[0])
            for _, sql in saved:
                cur.execute(sql)
            # what the dropped tmd_ trigger would have recorded
            cur.execute(
                "UPDATE geometry_columns_time SET last_delete = "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "WHERE Lower(f_table_name) = Lower(?) AND Lower(f_geometry_column) = Lower(?)",
                (b_table, column),
            )
            cur.execute(f"DELETE FROM {quote(z_table)}")  # noqa: S608
        elif getattr(connection.ops, "postgis", False):
            with connection.cursor() as cur:
                cur.execute(f"TRUNCATE {quote(b_table)}, {quote(z_table)}")
        else:
            Building.objects.using(using).all().delete()
            ZipCode.objects.using(using).all().delete()
    return n_buildings, n_zips
