"""Geometry helpers of the per-region analysis: WKB boxes, the region raster, equal-area areas."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: WGS 84 / NSIDC EASE-Grid 2.0 Global: a cylindrical equal-area projection valid worldwide, so
#: areas come out right for any state (shapes are distorted far from the equator; areas are not).
EQUAL_AREA_CRS = "EPSG:6933"
_WKB_BLOCK = 4096  # records decoded together by wkb_polygon_bounds
_SCRATCH = threading.local()  # RegionGrid.classify's work buffer, one per thread


@lru_cache(maxsize=8)
def _transformer(source_srid: int, target_crs: str):
    """Return a cached pyproj transformer from an EPSG code to ``target_crs`` (x = longitude)."""
    from pyproj import Transformer

    return Transformer.from_crs(f"EPSG:{source_srid}", target_crs, always_xy=True)


def equal_area_km2(geometries: np.ndarray, srid: int = 4326) -> np.ndarray:
    """Areas in km² of shapely geometries, computed in an equal-area projection.

    The vertices are projected to :data:`EQUAL_AREA_CRS` (EPSG:6933) with pyproj and the planar
    area is taken there: unlike ``shapely.area`` on longitude/latitude, which gives square
    degrees (a square degree is about 9,100 km² at 42°N and 12,300 km² at the equator), the result
    is in km² everywhere.

    Parameters
    ----------
    geometries : numpy.ndarray
        Array of shapely geometries (``None`` gives NaN).
    srid : int
        EPSG code of the input coordinates (default 4326, WGS 84 longitude/latitude).

    Returns
    -------
    numpy.ndarray
        One float per geometry, in km².

    Examples
    --------
    >>> import numpy as np, shapely
    >>> one_degree = shapely.box(-71.5, 42.0, -70.5, 43.0)
    >>> round(float(equal_area_km2(np.array([one_degree]))[0]))
    9131
    """
    import numpy as np
    import shapely

    transformer = _transformer(int(srid), EQUAL_AREA_CRS)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    projected = shapely.transform(np.asarray(geometries, dtype=object), project)
    return shapely.area(projected) / 1e6


def wkb_polygon_bounds(wkb: np.ndarray) -> np.ndarray:
    """Bounding boxes read straight from WKB bytes, without building GEOS geometries.

    Only little-endian 2D single-ring polygons (the common building footprint) are read, with
    numpy, one group of equal-length records at a time; any other record (multipolygons, holes,
    big-endian, Z/M, EWKB with an SRID, empty) gets NaN and is left to GEOS by the caller.

    Parameters
    ----------
    wkb : numpy.ndarray
        Object array of ``bytes``.

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` float array of ``xmin, ymin, xmax, ymax``; NaN rows for records not read.

    Examples
    --------
    >>> import numpy as np, shapely
    >>> wkb = np.array([shapely.to_wkb(shapely.box(1, 2, 3, 4), byte_order=1)], dtype=object)
    >>> wkb_polygon_bounds(wkb).tolist()
    [[1.0, 2.0, 3.0, 4.0]]
    """
    import numpy as np

    n = len(wkb)
    bounds = np.full((n, 4), np.nan)
    if n == 0:
        return bounds
    lengths = np.fromiter(map(len, wkb), dtype=np.int64, count=n)
    order = np.argsort(lengths, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(lengths[order]) != 0])
    # byte order 1 (little-endian), type 3 (Polygon, 2D), one ring, then the point count.
    header = np.array([1, 3, 0, 0, 0, 1, 0, 0, 0], dtype=np.uint8)
    for group_rows in np.split(order, starts[1:]):
        length = int(lengths[group_rows[0]])
        points = (length - 13) // 16
        if points < 4 or 13 + 16 * points != length:
            continue
        count = np.frombuffer(np.array([points], dtype="<u4").tobytes(), dtype=np.uint8)
        # Blocks of a few thousand records keep the copies below in the CPU cache (measured on
        # 20,000 five-point footprints: 7-10 ms and 5.8 MiB traced at peak in one block, 5 ms
        # and 2.3 MiB, the result included, in blocks of 4,096).
        for first in range(0, len(group_rows), _WKB_BLOCK):
            rows = group_rows[first : first + _WKB_BLOCK]
            group = wkb if len(rows) == n else wkb[rows]
            records = np.frombuffer(b"".join(group), dtype=np.uint8).reshape(len(rows), length)
            ok = (records[:, :9] == header).all(axis=1) & (records[:, 9:13] == count).all(axis=1)
            if not ok.any():
                continue
            body = records[:, 13:] if ok.all() else records[ok, 13:]
            coords = np.ascontiguousarray(body).view("<f8").reshape(-1, points, 2)
            # (point, axis, row) order makes the reductions run over contiguous memory: 6x faster.
            coords = np.ascontiguousarray(coords.transpose(1, 2, 0))
            bounds[rows[ok]] = np.concatenate([coords.min(axis=0), coords.max(axis=0)]).T
    return bounds


def wkb_point_bounds(wkb: np.ndarray) -> np.ndarray:
    """Boxes of WKB points (``x, y, x, y``), read with numpy; NaN rows for anything else.

    Only little-endian 2D points (21-byte records) are read; other records (big-endian, Z/M,
    EWKB with an SRID, empty points) get NaN and are left to GEOS by the caller.

    Parameters
    ----------
    wkb : numpy.ndarray
        Object array of ``bytes``.

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` float array.

    Examples
    --------
    >>> import numpy as np, shapely
    >>> wkb = np.array([shapely.to_wkb(shapely.Point(1, 2), byte_order=1)], dtype=object)
    >>> wkb_point_bounds(wkb).tolist()
    [[1.0, 2.0, 1.0, 2.0]]
    """
    import numpy as np

    n = len(wkb)
    bounds = np.full((n, 4), np.nan)
    if n == 0:
        return bounds
    lengths = np.fromiter(map(len, wkb), dtype=np.int64, count=n)
    rows = np.flatnonzero(lengths == 21)
    if len(rows) == 0:
        return bounds
    group = wkb if len(rows) == n else wkb[rows]
    records = np.frombuffer(b"".join(group), dtype=np.uint8).reshape(len(rows), 21)
    header = np.array([1, 1, 0, 0, 0], dtype=np.uint8)  # little-endian, type 1 (Point, 2D)
    ok = (records[:, :5] == header).all(axis=1)
    xy = np.ascontiguousarray(records[ok, 5:]).view("<f8").reshape(-1, 2)
    xy = np.where(np.isnan(xy).any(axis=1, keepdims=True), np.nan, xy)  # POINT EMPTY is NaN
    bounds[rows[ok]] = np.concatenate([xy, xy], axis=1)
    return bounds


class RegionGrid:
    """A raster over the regions that says, from a bounding box alone, which region holds a box.

    The regions' extent is cut into square **tiles** (the side halved while at most 1,024
    tiles, and one per 4 regions, meet a region's bounding box); each such tile gets its own
    raster of square cells, with one cell of margin around the tile, finer where more regions
    meet the tile, so that a city's small regions get cells about as fine, relative to their
    size, as the large rural ones. The cells are shared out in proportion to the number of
    regions whose box meets each tile, within ``target_cells`` in all. A tile that no region's
    box meets has no cells: a box inside it meets no region. A box belongs to the tile of its
    lower left corner and is read in that tile's raster.

    In every tile's raster, every cell whose closed square meets a region border (any ring of
    any region) is marked BORDER, conservatively: the borders are cut into pieces shorter than
    half a cell and the cells that each piece's box, widened by a millionth of a cell, touches
    are marked. Every other cell lies entirely in the interior of the regions that hold its
    centre, found by scanline (even-odd crossings of each row's centre line, half-open in y):
    one region, none (OUTSIDE) or, if regions overlap, several (SHARED). A box covered by cells
    that all belong to region *z* lies in *z*'s interior, so the item inside it is within *z*
    and meets no other region, and its centroid is in *z*; a box covered by OUTSIDE cells, or
    inside a tile without cells, meets no region. Anything else (BORDER or SHARED cells, boxes
    wider than two cells of their tile, boxes off the grid, NaN boxes) is SLOW: the caller
    decides it with GEOS.

    Parameters
    ----------
    regions : numpy.ndarray
        Shapely (Multi)Polygons, in the same coordinates as the boxes to classify.
    target_cells : int, optional
        How many cells to use in all, at most (the raster never has more, except a floor of 16
        cells per tile, 16,384 cells in all). Each cell is an int16 (2 bytes; int32 beyond
        32,767 regions); the tile grid's table adds at most 1 MiB. Default: 4,096 cells per
        region, at least 2**21 (4 MB: Massachusetts' 494 ZIPs) and at most 2**23 (16 MB, from
        2,048 regions on; 32 MB in int32).

    Raises
    ------
    TypeError, ValueError
        If ``target_cells`` is not a positive int (named in the message).

    Attributes
    ----------
    cells : numpy.ndarray
        All tiles' cells, flat, tile after tile (``cell_ptr``): a region position, or BORDER,
        OUTSIDE or SHARED.
    cell_size : numpy.ndarray
        Side of the cells of each tile with cells.
    """

    BORDER, OUTSIDE, SHARED = -2, -3, -4
    SLOW = -9  # returned by classify(): decide with GEOS
    _EPS = 1e-6  # widening, in cells, that absorbs floating-point error in the cell arithmetic
    _TILE_EPS = 1e-3  # widening, in tiles, of the region boxes when tiles are found empty
    _MAX_TILES = 1024  # tiles with cells, at most (each is built in its own numpy pass)...
    _REGIONS_PER_TILE = 4  # ...and at most one per 4 regions (494 regions: 79 tiles)
    _MAX_TILE_GRID = 2**18  # tiles in the tile grid, empty or not, at most (tile_slot: 1 MiB)
    _MIN_SIDE = 1  # cells across a tile, at least (plus 3 of margin: 16 cells)
    _BAND_CELLS = 2**16  # cells per band of rows while building a raster
    _BORDER_BATCH = 2**14  # border pieces marked per batch
    _BLOCK = 2**14  # boxes classified together
    DEFAULT_CELLS_PER_REGION = 4096
    DEFAULT_MIN_CELLS, DEFAULT_MAX_CELLS = 2**21, 2**23

    def __init__(self, regions: np.ndarray, target_cells: int | None = None) -> None:
        import numpy as np
        import shapely

        from ._checks import check_positive_int

        check_positive_int("target_cells", target_cells, allow_none=True)
        regions = np.asarray(regions, dtype=object)
        if target_cells is None:
            target_cells = int(
                np.clip(
                    self.DEFAULT_CELLS_PER_REGION * len(regions),
                    self.DEFAULT_MIN_CELLS,
                    self.DEFAULT_MAX_CELLS,
                )
            )
        self.target_cells = int(target_cells)
        boxes = shapely.bounds(regions)
        # Regions without a box (None, empty) have no border and hold nothing.
        known = np.flatnonzero(np.isfinite(boxes).all(axis=1))
        if len(known) == 0:
            xmin = ymin = xmax = ymax = 0.0
        else:
            xmin, ymin = boxes[known, :2].min(axis=0)
            xmax, ymax = boxes[known, 2:].max(axis=0)
        boxes = boxes[known]
        width, height = max(xmax - xmin, 1e-9), max(ymax - ymin, 1e-9)
        max_tiles = min(self._MAX_TILES, max(1, len(regions) // self._REGIONS_PER_TILE))
        self._choose_tiles(boxes, xmin, ymin, width, height, max_tiles)

        start, end, segment_region = _segments(regions)  # sorted: regions in order
        seg_ptr = np.searchsorted(segment_region, np.arange(len(regions) + 1))
        seg_lo, seg_hi = np.minimum(start, end), np.maximum(start, end)

        # The regions whose box meets each tile's raster (the tile, one cell below and two above
        # it), with a cell or two of slack.
        n = len(self.cell_size)
        margin = self.cell_size * 2
        col, row = self.tile_xy[:, 0], self.tile_xy[:, 1]
        reach = shapely.box(
            self.tx0 + col * self.tile - margin,
            self.ty0 + row * self.tile - margin,
            self.tx0 + (col + 1) * self.tile + 2 * margin,
            self.ty0 + (row + 1) * self.tile + 2 * margin,
        )
        tree = shapely.STRtree(shapely.box(*boxes.T))
        tile_of, region_of = tree.query(reach, predicate="intersects")
        region_of = known[region_of]
        order = np.lexsort((region_of, tile_of))
        tile_of, region_of = tile_of[order], region_of[order]
        region_ptr = np.searchsorted(tile_of, np.arange(n + 1))
        # int16 cells (2 bytes) while region positions fit, int32 beyond 32,767 regions.
        self._dtype = np.int16 if len(regions) <= np.iinfo(np.int16).max else np.int32
        self.cell_ptr = np.r_[0, np.cumsum(self.nx * self.ny)]
        self._cell_base = np.r_[self.cell_ptr[:-1], 0].astype(np.float64)
        self.cells = np.empty(int(self.cell_ptr[-1]), dtype=self._dtype)
        for t in range(n):
            mine = region_of[region_ptr[t] : region_ptr[t + 1]]
            lo, hi = seg_ptr[mine], seg_ptr[mine + 1]
            count = hi - lo
            seg = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
            seg_region = np.repeat(mine, count)
            raster = _TileRaster(
                self.x0[t], self.y0[t], self.cell_size[t], int(self.nx[t]), int(self.ny[t])
            )
            cells = self.cells[self.cell_ptr[t] : self.cell_ptr[t + 1]].reshape(raster.shape)
            raster.build(cells, start, end, seg_lo, seg_hi, seg, seg_region)
        del start, end, seg_lo, seg_hi, tree
        # The build's working arrays are freed, but glibc keeps their pages (on 30,003 ZIPs RSS
        # stayed 34 MB above the raster): give them back.
        _trim_heap()

    def _choose_tiles(
        self,
        boxes: np.ndarray,
        xmin: float,
        ymin: float,
        width: float,
        height: float,
        max_tiles: int,
    ) -> None:
        """Pick the tile side (halved while few enough tiles meet a region) and share the cells."""
        import numpy as np

        self.tx0, self.ty0 = xmin, ymin
        side = max(width, height) * (1 + 1e-9)
        best = self._occupancy(boxes, side, width, height)
        while True:
            half = side / 2
            if (np.floor(width / half) + 1) * (np.floor(height / half) + 1) > self._MAX_TILE_GRID:
                break
            counts = self._occupancy(boxes, half, width, height)
            if (counts > 0).sum() > max_tiles:
                break
            side, best = half, counts
        self.tile = side
        self.ntx, self.nty = best.shape[1], best.shape[0]
        self.tile_slot = np.full(best.shape, -1, dtype=np.int32)
        occupied = np.flatnonzero(best.ravel() > 0)
        self.tile_slot.ravel()[occupied] = np.arange(len(occupied), dtype=np.int32)
        row, col = np.divmod(occupied, self.ntx)
        self.tile_xy = np.column_stack([col, row])
        weight = best.ravel()[occupied].astype(np.float64)
        # Cells across each tile: in proportion to the regions meeting it, the total (margins
        # included) within target_cells.
        budget = float(self.target_cells)
        for _ in range(50):
            sides = np.maximum(self._MIN_SIDE, np.floor(np.sqrt(budget * weight / weight.sum())))
            total = ((sides + 3) ** 2).sum()
            if total <= self.target_cells or (sides == self._MIN_SIDE).all():
                break
            budget *= 0.99 * self.target_cells / total
        self.cell_size = self.tile / sides
        self.nx = self.ny = (sides + 3).astype(np.int64)
        self.x0 = self.tx0 + col * self.tile - self.cell_size
        self.y0 = self.ty0 + row * self.tile - self.cell_size
        # Cells across each tile, for classify(); NaN for the tiles without cells (slot -1).
        self._side = np.r_[sides, np.nan]
        self._row_length = np.r_[self.nx, 0].astype(np.float64)

    def _occupancy(self, boxes: np.ndarray, side: float, width: float, height: float):
        """How many region boxes (widened by a thousandth of a tile) meet each tile."""
        import numpy as np

        ntx, nty = int(np.floor(width / side)) + 1, int(np.floor(height / side)) + 1
        eps = self._TILE_EPS
        i0 = np.clip(np.floor((boxes[:, 0] - self.tx0) / side - eps).astype(np.int64), 0, ntx - 1)
        i1 = np.clip(np.floor((boxes[:, 2] - self.tx0) / side + eps).astype(np.int64), 0, ntx - 1)
        j0 = np.clip(np.floor((boxes[:, 1] - self.ty0) / side - eps).astype(np.int64), 0, nty - 1)
        j1 = np.clip(np.floor((boxes[:, 3] - self.ty0) / side + eps).astype(np.int64), 0, nty - 1)
        diff = np.zeros((nty + 1, ntx + 1), dtype=np.int32)
        np.add.at(diff, (j0, i0), 1)
        np.add.at(diff, (j0, i1 + 1), -1)
        np.add.at(diff, (j1 + 1, i0), -1)
        np.add.at(diff, (j1 + 1, i1 + 1), 1)
        return diff.cumsum(axis=0).cumsum(axis=1)[:nty, :ntx]

    @property
    def nbytes(self) -> int:
        """Bytes held by the raster and its tables."""
        arrays = (self.cells, self.tile_slot, self.cell_ptr, self.nx, self._side)
        return sum(a.nbytes for a in arrays) + 6 * 8 * len(self.cell_size)

    def classify(self, bounds: np.ndarray, *, points: bool = False) -> np.ndarray:
        """Return the region position holding each box, OUTSIDE, or SLOW (decide with GEOS).

        Parameters
        ----------
        bounds : numpy.ndarray
            ``(n, 4)`` boxes ``xmin, ymin, xmax, ymax``; NaN rows are SLOW.
        points : bool
            The boxes are points (zero width and height allowed); otherwise a box without
            area is SLOW.

        Returns
        -------
        numpy.ndarray
            One int64 per box.
        """
        import numpy as np

        result = np.full(len(bounds), self.SLOW, dtype=np.int64)
        for first in range(0, len(bounds), self._BLOCK):
            block = slice(first, first + self._BLOCK)
            self._classify_block(bounds[block], result[block], points)
        return result

    def _classify_block(self, bounds: np.ndarray, result: np.ndarray, points: bool) -> None:
        """classify() for at most _BLOCK boxes, into ``result`` (filled with SLOW)."""
        import numpy as np

        eps = self._EPS
        n = len(bounds)
        # Work in a per-thread scratch buffer (9 rows of _BLOCK floats, 1.2 MB), in place:
        # fresh arrays cost page faults that take longer than the arithmetic on them (this
        # made classify 2.3x faster on 50,000 boxes).
        scratch = getattr(_SCRATCH, "buffer", None)
        if scratch is None:
            scratch = _SCRATCH.buffer = np.empty((9, self._BLOCK))
        uv, txy, side, flat = scratch[:4, :n], scratch[4:6, :n], scratch[6, :n], scratch[7:, :n]
        # Tile coordinates (one unit per tile) of the box; its tile is the one of its lower
        # left corner. Float arithmetic throughout: NaN boxes fail every comparison below.
        with np.errstate(invalid="ignore"):
            # u0, v0, u1, v1 in tile units, one contiguous row each.
            for i, origin in enumerate((self.tx0, self.ty0, self.tx0, self.ty0)):
                np.subtract(bounds[:, i], origin, out=uv[i])
            uv /= self.tile
            np.floor(uv[:2], out=txy)
            tx, ty = txy
            on_grid = (tx >= 0) & (tx < self.ntx) & (ty >= 0) & (ty < self.nty)
            if not points:
                on_grid &= (uv[2] > uv[0]) & (uv[3] > uv[1])
            np.multiply(ty, self.ntx, out=side)
            side += tx
            side[~on_grid] = 0
            slot = self.tile_slot.ravel()[side.astype(np.intp)]
            empty = np.flatnonzero(on_grid & (slot < 0))
            outside_tile = uv[:, empty]
            # Cell indexes in the tile's raster, whose first row and column are a margin
            # outside the tile: in [0, side] for the corner inside the tile, so only the span
            # needs checking. Tiles without cells read NaN (the last entry) and take no box.
            np.take(self._side, slot, out=side)
            uv[:2] -= txy
            uv[2:] -= txy
            uv *= side
            uv += np.array([[1 - eps], [1 - eps], [1 + eps], [1 + eps]])
            np.floor(uv, out=uv)
            ix0, iy0, ix1, iy1 = uv
            ok = on_grid & (ix1 - ix0 <= 1) & (iy1 - iy0 <= 1)
            # Flat positions of the lower and upper row of cells, as floats (exact: < 2**53).
            np.take(self._row_length, slot, out=side)
            np.multiply(iy0, side, out=flat[0])
            np.multiply(iy1, side, out=flat[1])
            np.take(self._cell_base, slot, out=side)
            flat += side
            flat += ix0
        rows = np.flatnonzero(ok)
        ix = ix1[rows] - ix0[rows]
        lower, upper = flat[0, rows].astype(np.intp), flat[1, rows].astype(np.intp)
        ix = ix.astype(np.intp)
        cells = self.cells
        value = cells[lower]
        same = (cells[lower + ix] == value) & (cells[upper] == value)
        same &= cells[upper + ix] == value
        inside = np.flatnonzero(same & (value >= 0))
        result[rows[same & (value == self.OUTSIDE)]] = self.OUTSIDE
        result[rows[inside]] = value[inside]
        # A tile no region's box meets: a box inside it (up to float error) meets no region.
        if len(empty):
            u0, v0, u1, v1 = outside_tile
            tx, ty = tx[empty], ty[empty]
            inside_tile = (np.floor(u0 - eps) == tx) & (np.floor(u1 + eps) == tx)
            inside_tile &= (np.floor(v0 - eps) == ty) & (np.floor(v1 + eps) == ty)
            result[empty[inside_tile]] = self.OUTSIDE


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere nothing)."""
    import ctypes
    from contextlib import suppress

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _segments(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ring segment of the regions: start and end points, and the region of each.

    Read with ``shapely.to_ragged_array`` (coordinates and offsets, no GEOS geometry per
    part or ring: on 30,003 ZIPs that saves about 25 MB of RSS); regions of other types than
    (Multi)Polygon go through ``get_parts`` and ``get_rings``.
    """
    import numpy as np
    import shapely

    try:
        kind, coords, offsets = shapely.to_ragged_array(regions, include_z=False)
    except ValueError:  # a GeometryCollection, points or lines among the regions
        parts, part_region = shapely.get_parts(regions, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        coords, ring = shapely.get_coordinates(rings, return_index=True)
        ring_region = part_region[ring_part]
    else:
        if kind == shapely.GeometryType.POLYGON:
            ring_offsets, polygon_offsets = offsets
            polygon_region = np.arange(len(polygon_offsets) - 1)
        elif kind == shapely.GeometryType.MULTIPOLYGON:
            ring_offsets, polygon_offsets, part_offsets = offsets
            polygon_region = np.repeat(np.arange(len(part_offsets) - 1), np.diff(part_offsets))
        else:  # only None and empty geometries
            empty = np.empty((0, 2))
            return empty, empty, np.empty(0, dtype=np.int64)
        ring_region = np.repeat(polygon_region, np.diff(polygon_offsets))
        ring = np.repeat(np.arange(len(ring_offsets) - 1), np.diff(ring_offsets))
    same = ring[1:] == ring[:-1]
    start, end = coords[:-1][same], coords[1:][same]
    return start, end, ring_region[ring[:-1][same]].astype(np.int64)


class _TileRaster:
    """One tile's raster: origin, cell side and shape, and how its cells are computed."""

    def __init__(self, x0: float, y0: float, cell: float, nx: int, ny: int) -> None:
        self.x0, self.y0, self.cell, self.nx, self.ny = x0, y0, cell, nx, ny
        self.shape = (ny, nx)

    def build(
        self,
        cells: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        seg_lo: np.ndarray,
        seg_hi: np.ndarray,
        seg: np.ndarray,
        seg_region: np.ndarray,
    ) -> None:
        """Fill ``cells`` from the segments ``seg`` (of regions ``seg_region``) near the tile."""
        y_top = self.y0 + self.ny * self.cell
        x_right = self.x0 + self.nx * self.cell
        # Scanline: the segments that reach the raster's rows, wherever they are in x (the
        # crossings left and right of the raster keep each row's crossings paired).
        keep = (seg_hi[seg, 1] >= self.y0 - self.cell) & (seg_lo[seg, 1] <= y_top + self.cell)
        self._scanline(cells, start[seg[keep]], end[seg[keep]], seg_region[keep])
        # Borders: the segments whose box meets the raster.
        keep &= (seg_hi[seg, 0] >= self.x0 - self.cell) & (seg_lo[seg, 0] <= x_right + self.cell)
        self._mark_borders(cells, start[seg[keep]], end[seg[keep]])

    def _scanline(
        self, cells: np.ndarray, start: np.ndarray, end: np.ndarray, segment_region: np.ndarray
    ) -> None:
        """Which region holds each cell centre (even-odd rule per region), ignoring borders."""
        import numpy as np

        if len(start) == 0:
            cells[:] = RegionGrid.OUTSIDE
            return
        centre_y = self.y0 + (np.arange(self.ny) + 0.5) * self.cell
        y_lo, y_hi = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
        # Rows that might cross each segment (one row of slack each way), checked exactly below.
        first = np.clip(np.floor((y_lo - self.y0) / self.cell - 0.5).astype(np.int64), 0, self.ny)
        last = np.clip(np.ceil((y_hi - self.y0) / self.cell - 0.5).astype(np.int64) + 1, 0, self.ny)
        count = np.maximum(last - first, 0)
        seg = np.repeat(np.arange(len(start)), count)
        row = (
            np.repeat(first, count)
            + np.arange(len(seg))
            - np.repeat(np.cumsum(count) - count, count)
        )
        y = centre_y[row]
        hit = (y_lo[seg] <= y) & (y < y_hi[seg])  # half-open: a shared vertex counts once
        seg, row, y = seg[hit], row[hit], y[hit]
        if len(seg) == 0:
            cells[:] = RegionGrid.OUTSIDE
            return
        a, b = start[seg], end[seg]
        x = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
        region_of = segment_region[seg]
        order = np.lexsort((x, row, region_of))
        x, row, region_of = x[order], row[order], region_of[order]
        # Each (region, row) has an even number of crossings (closed rings, half-open rule): pair
        # them into spans inside the region. If that ever failed, answer nothing from the raster.
        if (
            len(x) % 2
            or (row[0::2] != row[1::2]).any()
            or (region_of[0::2] != region_of[1::2]).any()
        ):
            cells[:] = RegionGrid.SHARED
            return
        x_in, x_out, row, region_of = x[0::2], x[1::2], row[0::2], region_of[0::2]
        col_in = np.clip(np.ceil((x_in - self.x0) / self.cell - 0.5).astype(np.int64), 0, self.nx)
        col_out = np.clip(np.ceil((x_out - self.x0) / self.cell - 0.5).astype(np.int64), 0, self.nx)
        # Difference arrays along each row: how many regions hold a centre, and the sum of their
        # indexes (the index itself where exactly one does). Both are summed in the raster's
        # own integer type, which wraps around on overflow: the spans that closed before a cell
        # cancel modulo 2**16 (or 2**32), so where exactly one region holds the centre the sum is
        # that region's index, which fits the type; elsewhere the value is overwritten. Built in
        # bands of rows, so the construction holds little beyond the raster itself.
        dtype = cells.dtype
        band_order = np.argsort(row, kind="stable")
        row, col_in, col_out = row[band_order], col_in[band_order], col_out[band_order]
        region_of = region_of[band_order].astype(dtype)
        band_rows = max(1, RegionGrid._BAND_CELLS // (self.nx + 1))
        for r0 in range(0, self.ny, band_rows):
            r1 = min(r0 + band_rows, self.ny)
            lo, hi = np.searchsorted(row, [r0, r1])
            rows = row[lo:hi] - r0
            depth = np.zeros((r1 - r0, self.nx + 1), dtype=dtype)
            band = np.zeros((r1 - r0, self.nx + 1), dtype=dtype)
            np.add.at(depth, (rows, col_in[lo:hi]), 1)
            np.add.at(depth, (rows, col_out[lo:hi]), -1)
            np.add.at(band, (rows, col_in[lo:hi]), region_of[lo:hi])
            np.subtract.at(band, (rows, col_out[lo:hi]), region_of[lo:hi])
            np.cumsum(depth, axis=1, dtype=dtype, out=depth)
            np.cumsum(band, axis=1, dtype=dtype, out=band)
            band[depth != 1] = RegionGrid.SHARED
            band[depth == 0] = RegionGrid.OUTSIDE
            cells[r0:r1] = band[:, : self.nx]

    def _mark_borders(self, cells: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        """Mark every cell that a border segment may touch (in batches, to bound memory)."""
        import numpy as np

        if len(start) == 0:
            return
        # Cut each segment into pieces of at most half a cell (a piece's box then spans at most two
        # cells along each axis, so its four corner cells are all the cells it touches; shorter
        # pieces than needed mark fewer cells: 0.8 cell gave 6 % more SLOW boxes).
        length = np.abs(end - start).max(axis=1) / self.cell
        pieces = np.maximum(1, np.ceil(length * 2)).astype(np.int64)
        batch = RegionGrid._BORDER_BATCH
        batch_end = np.searchsorted(
            np.cumsum(pieces), np.arange(1, 1 + pieces.sum() // batch) * batch
        )
        for lo_seg, hi_seg in zip(np.r_[0, batch_end], np.r_[batch_end, len(start)], strict=True):
            if hi_seg <= lo_seg:
                continue
            part = pieces[lo_seg:hi_seg]
            seg = np.repeat(np.arange(lo_seg, hi_seg), part)
            step = np.arange(len(seg)) - np.repeat(np.cumsum(part) - part, part)
            delta = end[seg] - start[seg]
            a = start[seg] + delta * (step / pieces[seg])[:, None]
            b = start[seg] + delta * ((step + 1) / pieces[seg])[:, None]
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            eps = RegionGrid._EPS
            ix0 = np.floor((lo[:, 0] - self.x0) / self.cell - eps).astype(np.int64)
            ix1 = np.floor((hi[:, 0] - self.x0) / self.cell + eps).astype(np.int64)
            iy0 = np.floor((lo[:, 1] - self.y0) / self.cell - eps).astype(np.int64)
            iy1 = np.floor((hi[:, 1] - self.y0) / self.cell + eps).astype(np.int64)
            for iy in (iy0, iy1):
                for ix in (ix0, ix1):
                    ok = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
                    cells[iy[ok], ix[ok]] = RegionGrid.BORDER


#: STRtrees of region arrays, by ``id`` of the array, each with a weak reference that drops
#: the entry when the array goes (see :func:`region_tree`).
_REGION_TREES: dict[int, tuple[Any, Any]] = {}
_REGION_TREES_LOCK = threading.Lock()


def region_tree(regions: np.ndarray) -> Any:
    """Return a shapely ``STRtree`` of ``regions``, built once per array while it lives.

    The sweep passes the same (prepared) region array for every chunk, so the tree over the
    regions' boxes is built once per array (a few ms for 30,000 regions) instead of per chunk.

    Parameters
    ----------
    regions : numpy.ndarray
        Object array of shapely geometries; not modified afterwards by the caller.

    Returns
    -------
    shapely.STRtree
        The tree over ``regions`` (its indexes are positions in ``regions``).
    """
    import weakref

    import shapely

    key = id(regions)
    with _REGION_TREES_LOCK:
        hit = _REGION_TREES.get(key)
        if hit is not None and hit[0]() is regions:
            return hit[1]
    tree = shapely.STRtree(regions)

    def forget(_ref: Any, key: int = key) -> None:
        with _REGION_TREES_LOCK:
            entry = _REGION_TREES.get(key)
            if entry is not None and entry[0] is _ref:
                del _REGION_TREES[key]

    with _REGION_TREES_LOCK:
        _REGION_TREES[key] = (weakref.ref(regions, forget), tree)
    return tree
