"""The geometry helpers of the per-region analysis: WKB boxes and the region raster."""

from __future__ import annotations

import numpy as np
import pytest

from analysis_lib._geo import RegionGrid as ZipGrid
from analysis_lib._geo import wkb_point_bounds, wkb_polygon_bounds


def _crafted_zip_geometries():
    """The fixture's ZIPs as shapely geometries (grid, holed MultiPolygon, island), no database."""
    import shapely

    from tests.per_zip_fixtures import (
        CELL,
        DETACHED,
        GRID_COLUMNS,
        GRID_ROWS,
        HOLE,
        OFF_GRID,
        cell_bbox,
    )

    geoms = []
    for row in range(GRID_ROWS):
        for column in range(GRID_COLUMNS):
            x0, y0, x1, y1 = cell_bbox(column, row)
            if (column, row) == (0, 1):
                hole = shapely.box(
                    x0 + HOLE[0] * CELL,
                    y0 + HOLE[0] * CELL,
                    x0 + HOLE[1] * CELL,
                    y0 + HOLE[1] * CELL,
                )
                holed = shapely.box(x0, y0, x1, y1).difference(hole)
                geoms += [shapely.MultiPolygon([holed, shapely.box(*DETACHED)]), hole]
            else:
                geoms.append(shapely.box(x0, y0, x1, y1))
    geoms.append(shapely.box(*OFF_GRID))
    # A concave ZIP overlapping the grid: its cells are SHARED, never answered from the raster.
    geoms.append(shapely.Polygon([(-71.24, 42.26), (-71.2, 42.26), (-71.22, 42.28)]))
    return np.array(geoms, dtype=object)


@pytest.mark.parametrize("target_cells", [2**10, 2**16, 2**21])
def test_zip_grid_answers_only_what_geos_says(target_cells):

    zips = _crafted_zip_geometries()
    grid = ZipGrid(zips, target_cells=target_cells)
    rng = np.random.default_rng(target_cells)
    n = 20_000
    x = rng.uniform(-71.27, -70.66, n)
    y = rng.uniform(42.23, 42.33, n)
    half = rng.uniform(0.01, 0.7, (n, 2)) * np.median(
        grid.cell_size
    )  # most boxes fit in two cells...
    half[::10] *= 5  # ...some do not
    bounds = np.column_stack([x - half[:, 0], y - half[:, 1], x + half[:, 0], y + half[:, 1]])
    # Boxes sharing an edge or a corner with a grid line and a border, exactly.
    bounds[:50, 0] = -71.23
    bounds[50:100, 3] = 42.27
    answer = _check_grid_against_geos(zips, grid, bounds)
    assert (answer != ZipGrid.SLOW).mean() > 0.3


def _check_grid_against_geos(zips, grid, bounds):
    """Every box the raster places must be inside that ZIP's interior (GEOS), touching no other."""
    import shapely

    answer = grid.classify(bounds)
    boxes = shapely.box(*bounds.T)
    tree = shapely.STRtree(boxes)
    zip_idx, box_idx = tree.query(zips, predicate="contains_properly")
    inside = np.full(len(bounds), -1)
    inside[box_idx] = zip_idx
    meets = np.bincount(tree.query(zips, predicate="intersects")[1], minlength=len(bounds))
    assert (answer[answer >= 0] == inside[answer >= 0]).all()
    assert (meets[answer >= 0] == 1).all()
    assert (meets[answer == ZipGrid.OUTSIDE] == 0).all()
    return answer


def test_zip_grid_int16_index_sums_may_wrap(monkeypatch):
    # ZIPs 1..299 overlap on [0, 1]: the running sum of their indexes (44,850) wraps around
    # int16; ZIP 299 goes on alone to x = 3, where the sum must come back to exactly 299. One
    # tile, so that the same rows of cells see both.
    import shapely

    monkeypatch.setattr(ZipGrid, "_REGIONS_PER_TILE", 10**9)

    zips = np.array(
        [shapely.box(4, 0, 5, 1)] + [shapely.box(0, 0, 1, 1)] * 298 + [shapely.box(0, 0, 3, 1)],
        dtype=object,
    )
    grid = ZipGrid(zips, target_cells=2**14)
    assert grid.cells.dtype == np.int16 and len(grid.cell_size) == 1
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-0.5, 5.5, 5000), rng.uniform(-0.5, 1.5, 5000)
    half = rng.uniform(0.01, 0.5, (5000, 1)) * np.median(grid.cell_size)
    bounds = np.column_stack([x - half[:, 0], y - half[:, 0], x + half[:, 0], y + half[:, 0]])
    answer = _check_grid_against_geos(zips, grid, bounds)
    alone = (
        (bounds[:, 0] > 1.1) & (bounds[:, 2] < 2.9) & (bounds[:, 1] > 0.1) & (bounds[:, 3] < 0.9)
    )
    assert alone.sum() > 100 and (answer[alone] == 299).all()
    overlap = (
        (bounds[:, 0] > 0.1) & (bounds[:, 2] < 0.9) & (bounds[:, 1] > 0.1) & (bounds[:, 3] < 0.9)
    )
    assert overlap.sum() > 100 and (answer[overlap] == ZipGrid.SLOW).all()  # SHARED cells


def test_zip_grid_uses_int32_beyond_32767_zips():
    import shapely

    side = 182  # 33,124 ZIPs: unit squares with gaps, in a square
    i, j = np.divmod(np.arange(side * side), side)
    zips = shapely.box(i * 2.0, j * 2.0, i * 2.0 + 1.5, j * 2.0 + 1.5)
    grid = ZipGrid(zips, target_cells=2**21)
    assert grid.cells.dtype == np.int32
    rng = np.random.default_rng(6)
    x = rng.uniform(2 * side - 6, 2 * side, 20_000)  # the last three columns of ZIPs
    y = rng.uniform(0, 2 * side, 20_000)
    half = rng.uniform(0.01, 0.4, 20_000) * np.median(grid.cell_size)
    bounds = np.column_stack([x - half, y - half, x + half, y + half])
    answer = _check_grid_against_geos(zips, grid, bounds)
    assert (answer > np.iinfo(np.int16).max).sum() > 1000


def test_wkb_polygon_bounds_in_blocks_with_mixed_lengths():
    import shapely

    rng = np.random.default_rng(8)
    n = 10_000  # more than two blocks of each length
    centre = rng.uniform(-72, -70, (n, 2))
    geoms = np.where(
        rng.random(n) < 0.5,
        shapely.buffer(shapely.points(centre), 1e-4, quad_segs=2),  # 9 points
        shapely.box(centre[:, 0], centre[:, 1], centre[:, 0] + 1e-4, centre[:, 1] + 2e-4),
    )
    wkb = shapely.to_wkb(geoms, byte_order=1)
    wkb[::97] = shapely.to_wkb(geoms[::97], byte_order=0)  # some left to GEOS
    bounds = wkb_polygon_bounds(wkb)
    big = np.zeros(n, bool)
    big[::97] = True
    assert np.isnan(bounds[big]).all()
    np.testing.assert_array_equal(bounds[~big], shapely.bounds(geoms[~big]))


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        ("POLYGON ((0 0, 2 0, 2 1, 0 1, 0 0))", [0, 0, 2, 1]),
        ("POLYGON ((-71.5 42.1, -71.4 42.1, -71.45 42.3, -71.5 42.1))", [-71.5, 42.1, -71.4, 42.3]),
        ("POLYGON ((0 0, 9 0, 9 9, 0 9, 0 0), (1 1, 2 1, 2 2, 1 1))", None),  # a hole
        ("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)))", None),
        ("POLYGON Z ((0 0 1, 1 0 1, 1 1 1, 0 0 1))", None),
        ("POLYGON EMPTY", None),
        ("POINT (1 2)", None),
    ],
)
def test_wkb_polygon_bounds(geometry, expected):
    import shapely

    geom = shapely.from_wkt(geometry)
    little = shapely.to_wkb(geom, byte_order=1)
    big = shapely.to_wkb(geom, byte_order=0)
    result = wkb_polygon_bounds(np.array([little, big, little], dtype=object))
    assert np.isnan(result[1]).all()  # big-endian is left to GEOS
    if expected is None:
        assert np.isnan(result).all()
    else:
        assert result[0].tolist() == expected and result[2].tolist() == expected
        assert result[0].tolist() == list(shapely.bounds(geom))


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        ("POINT (1 2)", [1, 2, 1, 2]),
        ("POINT (-71.0625 42.3125)", [-71.0625, 42.3125, -71.0625, 42.3125]),
        ("POINT EMPTY", None),
        ("POINT Z (1 2 3)", None),
        ("POLYGON ((0 0, 2 0, 2 1, 0 1, 0 0))", None),
    ],
)
def test_wkb_point_bounds(geometry, expected):
    import shapely

    wkb = np.array([shapely.to_wkb(shapely.from_wkt(geometry), byte_order=1)], dtype=object)
    bounds = wkb_point_bounds(wkb)
    if expected is None:
        assert np.isnan(bounds).all()
    else:
        assert bounds.tolist() == [expected]


def test_region_grid_places_points_only_inside_one_region():
    import shapely

    regions = np.array([shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)], dtype=object)
    grid = ZipGrid(regions, target_cells=2**12)
    rng = np.random.default_rng(3)
    xy = rng.uniform((0, 0), (2, 1), (5000, 2))
    xy[:50, 0] = 1.0  # on the shared border: never decided by the raster
    points = shapely.points(xy)
    wkb = shapely.to_wkb(points, byte_order=1)
    answer = grid.classify(wkb_point_bounds(wkb), points=True)
    inside = [shapely.contains(r, points) for r in regions]  # within: border excluded
    decided = answer >= 0
    assert decided.mean() > 0.8  # most points lie well inside one region
    for pos, holds in enumerate(inside):
        assert holds[answer == pos].all()
    outside = answer == ZipGrid.OUTSIDE
    assert not (inside[0] | inside[1])[outside].any()
    assert (answer[:50] == ZipGrid.SLOW).all()
    # Without points=True a box without area is never decided by the raster.
    assert (grid.classify(wkb_point_bounds(wkb)) == ZipGrid.SLOW).all()
