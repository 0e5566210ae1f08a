"""Geometry helpers of the per-region analysis: WKB boxes, the region raster, equal-area areas."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: WGS 84 / NSIDC EASE-Grid 2.0 Global: a cylindrical equal-area projection valid worldwide, so
#: areas come out right for any state (shapes are distorted far from the equator; areas are not).
EQUAL_AREA_CRS = "EPSG:6933"
_WKB_BLOCK = 4096  # records decoded together by wkb_polygon_bounds


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

    Every cell whose closed square meets a region border (any ring of any region) is marked
    BORDER, conservatively: the borders are cut into pieces shorter than half a cell and the
    cells that each piece's box, widened by a millionth of a cell, touches are marked. Every other
    cell lies entirely in the interior of the regions that hold its centre, found by scanline
    (even-odd crossings of each row's centre line, half-open in y): one region, none (OUTSIDE) or,
    if regions overlap, several (SHARED). A box covered by cells that all belong to region *z*
    lies in *z*'s interior, so the item inside it is within *z* and meets no other region, and its
    centroid is in *z*; a box covered by OUTSIDE cells meets no region. Anything else (BORDER or
    SHARED cells, boxes wider than two cells, boxes off the grid, NaN boxes) is SLOW: the caller
    decides it with GEOS.

    Parameters
    ----------
    regions : numpy.ndarray
        Shapely (Multi)Polygons, in the same coordinates as the boxes to classify.
    target_cells : int
        About how many cells to use over the regions' extent (int16 each, int32 beyond 32,767
        regions: the default 2**21 cells take 4 MB).
    """

    BORDER, OUTSIDE, SHARED = -2, -3, -4
    SLOW = -9  # returned by classify(): decide with GEOS
    _EPS = 1e-6  # widening, in cells, that absorbs floating-point error in the cell arithmetic
    _BAND_CELLS = 2**16  # cells per band of rows while building the raster
    _BORDER_BATCH = 2**14  # border pieces marked per batch

    def __init__(self, regions: np.ndarray, target_cells: int = 2**21) -> None:
        import numpy as np
        import shapely

        xmin, ymin, xmax, ymax = shapely.total_bounds(regions)
        width, height = max(xmax - xmin, 1e-9), max(ymax - ymin, 1e-9)
        self.cell = float(np.sqrt(width * height / target_cells))
        self.x0, self.y0 = xmin - self.cell, ymin - self.cell
        self.nx = int(np.ceil(width / self.cell)) + 3
        self.ny = int(np.ceil(height / self.cell)) + 3
        # int16 cells (4 MB for 2**21) while region positions fit, int32 beyond 32,767 regions.
        self._dtype = np.int16 if len(regions) <= np.iinfo(np.int16).max else np.int32
        parts, part_region = shapely.get_parts(regions, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        coords, ring = shapely.get_coordinates(rings, return_index=True)
        same = ring[1:] == ring[:-1]
        start, end = coords[:-1][same], coords[1:][same]
        segment_region = part_region[ring_part[ring[:-1][same]]]
        self.cells = self._scanline(start, end, segment_region)
        self._mark_borders(start, end)

    def _scanline(
        self, start: np.ndarray, end: np.ndarray, segment_region: np.ndarray
    ) -> np.ndarray:
        """Which region holds each cell centre (even-odd rule per region), ignoring borders."""
        import numpy as np

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
            return np.full((self.ny, self.nx), self.SHARED, dtype=self._dtype)
        x_in, x_out, row, region_of = x[0::2], x[1::2], row[0::2], region_of[0::2]
        col_in = np.clip(np.ceil((x_in - self.x0) / self.cell - 0.5).astype(np.int64), 0, self.nx)
        col_out = np.clip(np.ceil((x_out - self.x0) / self.cell - 0.5).astype(np.int64), 0, self.nx)
        # Difference arrays along each row: how many regions hold a centre, and the sum of their
        # indexes (the index itself where exactly one does). Both are summed in the raster's
        # own integer type, which wraps around on overflow: the spans that closed before a cell
        # cancel modulo 2**16 (or 2**32), so where exactly one region holds the centre the sum is
        # that region's index, which fits the type; elsewhere the value is overwritten. Built in
        # bands of rows, so the construction holds little beyond the raster itself.
        cells = np.empty((self.ny, self.nx), dtype=self._dtype)
        band_order = np.argsort(row, kind="stable")
        row, col_in, col_out = row[band_order], col_in[band_order], col_out[band_order]
        region_of = region_of[band_order].astype(self._dtype)
        band_rows = max(1, self._BAND_CELLS // (self.nx + 1))
        for r0 in range(0, self.ny, band_rows):
            r1 = min(r0 + band_rows, self.ny)
            lo, hi = np.searchsorted(row, [r0, r1])
            rows = row[lo:hi] - r0
            depth = np.zeros((r1 - r0, self.nx + 1), dtype=self._dtype)
            band = np.zeros((r1 - r0, self.nx + 1), dtype=self._dtype)
            np.add.at(depth, (rows, col_in[lo:hi]), 1)
            np.add.at(depth, (rows, col_out[lo:hi]), -1)
            np.add.at(band, (rows, col_in[lo:hi]), region_of[lo:hi])
            np.subtract.at(band, (rows, col_out[lo:hi]), region_of[lo:hi])
            np.cumsum(depth, axis=1, dtype=self._dtype, out=depth)
            np.cumsum(band, axis=1, dtype=self._dtype, out=band)
            band[depth != 1] = self.SHARED
            band[depth == 0] = self.OUTSIDE
            cells[r0:r1] = band[:, : self.nx]
        return cells

    def _mark_borders(self, start: np.ndarray, end: np.ndarray) -> None:
        """Mark every cell that a border segment may touch (in batches, to bound memory)."""
        import numpy as np

        # Cut each segment into pieces shorter than half a cell.
        length = np.abs(end - start).max(axis=1) / self.cell
        pieces = np.maximum(1, np.ceil(length * 2)).astype(np.int64)
        batch_end = np.searchsorted(
            np.cumsum(pieces),
            np.arange(1, 1 + pieces.sum() // self._BORDER_BATCH) * self._BORDER_BATCH,
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
            ix0, ix1 = self._index(lo[:, 0], hi[:, 0], self.x0)
            iy0, iy1 = self._index(lo[:, 1], hi[:, 1], self.y0)
            for iy in (iy0, iy1):
                for ix in (ix0, ix1):
                    self.cells[iy, ix] = self.BORDER

    def _index(self, lo: np.ndarray, hi: np.ndarray, origin: float):
        """Cell index range ``[i0, i1]`` covering ``[lo, hi]`` along one axis, conservatively."""
        import numpy as np

        i0 = np.floor((lo - origin) / self.cell - self._EPS).astype(np.int64)
        i1 = np.floor((hi - origin) / self.cell + self._EPS).astype(np.int64)
        return i0, i1

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
        with np.errstate(invalid="ignore"):
            ix0, ix1 = self._index(bounds[:, 0], bounds[:, 2], self.x0)
            iy0, iy1 = self._index(bounds[:, 1], bounds[:, 3], self.y0)
            usable = np.isfinite(bounds).all(axis=1)
            if not points:
                usable &= (bounds[:, 2] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 1])
        usable &= (ix0 >= 0) & (iy0 >= 0) & (ix1 < self.nx) & (iy1 < self.ny)
        usable &= (ix1 - ix0 <= 1) & (iy1 - iy0 <= 1)
        rows = np.flatnonzero(usable)
        ix0, ix1, iy0, iy1 = ix0[rows], ix1[rows], iy0[rows], iy1[rows]
        value = self.cells[iy0, ix0]
        same = (
            (self.cells[iy0, ix1] == value)
            & (self.cells[iy1, ix0] == value)
            & (self.cells[iy1, ix1] == value)
        )
        decided = same & ((value >= 0) | (value == self.OUTSIDE))
        result[rows[decided]] = value[decided]
        return result
