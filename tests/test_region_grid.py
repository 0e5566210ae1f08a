"""Property tests of the tiled region raster (``RegionGrid``) against GEOS.

Whatever the regions (far apart, tiny next to huge, holed, multi-part, overlapping, with edges
on the tile lines), every box the raster places in a region must lie in that region's interior
and meet no other region, and every box it calls OUTSIDE must meet no region; everything else
is SLOW. The boxes are random at every scale, plus boxes and points snapped exactly onto
region vertices and tile lines.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis_lib._geo import RegionGrid


def _voronoi(rng, n, x0, y0, size):
    """``n`` Voronoi cells of random points filling the square ``[x0, x0+size]**2``."""
    import shapely

    xy = rng.uniform((x0, y0), (x0 + size, y0 + size), (n, 2))
    frame = shapely.box(x0, y0, x0 + size, y0 + size)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(xy), extend_to=frame))
    return list(shapely.intersection(cells, frame))


def _far_apart(rng):
    # A dense city of small cells, a sparse spread of large ones far away, one tiny island.
    import shapely

    return np.array(
        _voronoi(rng, 300, 0.0, 0.0, 1.0)
        + _voronoi(rng, 40, 150.0, 40.0, 20.0)
        + [shapely.box(-120.0, 60.0, -119.999, 60.001)],
        dtype=object,
    )


def _tiny_and_huge_with_holes(rng):
    # A huge region with holes; tiny regions in some holes (enclaves), others left empty.
    import shapely

    holes = [shapely.box(x, y, x + 0.01, y + 0.01) for x, y in rng.uniform(1, 98, (30, 2))]
    huge = shapely.box(0, 0, 100, 100).difference(shapely.union_all(holes))
    tiny = [h.buffer(-0.002) for h in holes[:15]]
    return np.array([huge, *tiny], dtype=object)


def _multipolygons(rng):
    # Each region is three squares scattered over the whole extent.
    import shapely

    regions = []
    for i in range(40):
        parts = [
            shapely.box(x, y, x + s, y + s)
            for (x, y), s in zip(
                rng.uniform(0, 60, (3, 2)) + [[0, 70 * (i % 2)]] * 3,
                rng.uniform(0.05, 2, 3),
                strict=True,
            )
        ]
        regions.append(shapely.MultiPolygon(parts))
    # Parts of different regions may overlap: that is allowed (SHARED cells).
    return np.array(regions, dtype=object)


def _overlapping(rng):
    import shapely

    centres = rng.uniform(0, 10, (60, 2))
    return np.array(
        [
            shapely.Point(x, y).buffer(r)
            for (x, y), r in zip(centres, rng.uniform(0.1, 2, 60), strict=True)
        ],
        dtype=object,
    )


def _on_tile_edges(rng):
    # Unit squares on a 16 x 16 lattice: the extent is 16 wide, so every tile side is a power
    # of two and the region edges fall exactly on tile lines; plus a few half-units.
    import shapely

    i, j = np.divmod(np.arange(256), 16)
    boxes = list(shapely.box(i, j, i + 1, j + 1))
    return np.array(boxes + [shapely.box(3.5, 3.5, 4.5, 4.5)], dtype=object)


SCENARIOS = {
    "far_apart": _far_apart,
    "tiny_and_huge_with_holes": _tiny_and_huge_with_holes,
    "multipolygons": _multipolygons,
    "overlapping": _overlapping,
    "on_tile_edges": _on_tile_edges,
}


def _boxes(rng, grid, regions, n):
    """Random boxes near the regions, most about a cell wide, some snapped onto vertices and
    tile lines."""
    import shapely

    bounds = shapely.bounds(shapely.get_parts(regions))
    # Centres: in a random region part's box (so the dense parts get many), or just outside.
    pick = rng.integers(0, len(bounds), n)
    lo, hi = bounds[pick, :2], bounds[pick, 2:]
    centre = lo + (hi - lo) * rng.uniform(-0.05, 1.05, (n, 2))
    # Sizes: from a thousandth to twice the local cell, a tenth of them at any scale.
    tx = np.clip(np.floor((centre[:, 0] - grid.tx0) / grid.tile), 0, grid.ntx - 1)
    ty = np.clip(np.floor((centre[:, 1] - grid.ty0) / grid.tile), 0, grid.nty - 1)
    slot = grid.tile_slot[ty.astype(int), tx.astype(int)]
    cell = np.where(slot >= 0, grid.cell_size[slot], grid.tile / 100)
    size = np.exp(rng.uniform(np.log(1e-3), np.log(2), (n, 2))) * cell[:, None]
    anyscale = rng.random(n) < 0.1
    size[anyscale] = (
        np.exp(rng.uniform(np.log(1e-6), 0, (anyscale.sum(), 2)))
        * (hi - lo)[anyscale].max(axis=1)[:, None]
    )
    # A tenth anywhere in the extent (in the gaps between far-apart regions, tiles without
    # cells), a hundredth of a tile wide at most.
    xmin, ymin, xmax, ymax = shapely.total_bounds(regions)
    anywhere = rng.random(n) < 0.1
    centre[anywhere] = rng.uniform((xmin, ymin), (xmax, ymax), (anywhere.sum(), 2))
    size[anywhere] = rng.uniform(0, grid.tile / 100, (anywhere.sum(), 2))
    boxes = np.column_stack([centre - size / 2, centre + size / 2])
    # Snap a fifth of the box edges exactly onto region vertices, another fifth onto tile lines.
    vertices = shapely.get_coordinates(regions)
    snap = rng.random(n) < 0.2
    v = vertices[rng.integers(0, len(vertices), snap.sum())]
    boxes[snap, 0], boxes[snap, 3] = v[:, 0], v[:, 1]
    boxes[snap, 2] = np.maximum(boxes[snap, 2], boxes[snap, 0] + 1e-9)
    boxes[snap, 1] = np.minimum(boxes[snap, 1], boxes[snap, 3] - 1e-9)
    snap = rng.random(n) < 0.2
    tx = grid.tx0 + np.round((boxes[snap, 2] - grid.tx0) / grid.tile) * grid.tile
    boxes[snap, 2] = np.maximum(tx, boxes[snap, 0] + 1e-9)
    return boxes


def _check(regions, grid, bounds, points=False):
    """The raster's answers against GEOS; returns the answers."""
    import shapely

    answer = grid.classify(bounds, points=points)
    assert answer.dtype == np.int64 and answer.shape == (len(bounds),)
    valid = (answer >= 0) | (answer == RegionGrid.OUTSIDE) | (answer == RegionGrid.SLOW)
    assert valid.all()
    geoms = shapely.points(bounds[:, :2]) if points else shapely.box(*bounds.T)
    tree = shapely.STRtree(geoms)
    region_idx, item_idx = tree.query(regions, predicate="contains_properly")
    placed = answer >= 0
    holds = np.zeros(len(bounds), dtype=bool)
    holds[item_idx[region_idx == answer[item_idx]]] = True
    assert holds[placed].all(), "a box placed in a region it is not in the interior of"
    meets = np.bincount(tree.query(regions, predicate="intersects")[1], minlength=len(bounds))
    assert (meets[placed] == 1).all(), "a placed box meets another region"
    assert (meets[answer == RegionGrid.OUTSIDE] == 0).all(), "an OUTSIDE box meets a region"
    return answer


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("target_cells", [2**12, 2**16, 2**20])
def test_raster_never_decides_a_box_wrongly(scenario, target_cells):
    rng = np.random.default_rng([target_cells, len(scenario)])
    regions = SCENARIOS[scenario](rng)
    grid = RegionGrid(regions, target_cells=target_cells)
    assert grid.cells.size <= max(target_cells, 16 * len(grid.cell_size))
    answer = _check(regions, grid, _boxes(rng, grid, regions, 20_000))
    # The test means something only if the raster decides many boxes itself (not with 4,096
    # cells for hundreds of regions), including OUTSIDE ones in the gaps and in tiles without
    # cells, wherever the regions leave gaps.
    if target_cells >= 2**16:
        assert (answer >= 0).sum() > 500
    if scenario in ("far_apart", "multipolygons", "overlapping"):
        assert (answer == RegionGrid.OUTSIDE).sum() > 100


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_raster_never_decides_a_point_wrongly(scenario):
    rng = np.random.default_rng(len(scenario))
    regions = SCENARIOS[scenario](rng)
    grid = RegionGrid(regions, target_cells=2**18)
    boxes = _boxes(rng, grid, regions, 20_000)
    points = np.column_stack([boxes[:, :2], boxes[:, :2]])
    answer = _check(regions, grid, points, points=True)
    assert (answer >= 0).sum() > 1000
    # Without points=True a box without area is never decided by the raster.
    assert (grid.classify(points) == RegionGrid.SLOW).all()


def test_bad_boxes_are_slow():
    import shapely

    grid = RegionGrid(np.array([shapely.box(0, 0, 1, 1)], dtype=object), target_cells=2**10)
    bounds = np.array(
        [
            [0.4, 0.4, 0.41, 0.41],  # inside: decided
            [np.nan, 0.4, 0.41, 0.41],
            [0.4, 0.4, np.inf, 0.41],
            [-np.inf, 0.4, 0.41, 0.41],
            [0.41, 0.4, 0.4, 0.41],  # inverted
            [0.4, 0.4, 0.9, 0.9],  # wider than two cells
            [50, 50, 50.1, 50.1],  # off the grid
        ]
    )
    assert grid.classify(bounds).tolist() == [0] + [RegionGrid.SLOW] * 6
    assert grid.classify(np.empty((0, 4))).tolist() == []


def test_tiles_give_small_far_regions_fine_cells():
    # Like the US: a dense cluster of small regions and a sparse one 150 degrees away. One
    # uniform raster over the whole extent leaves most boxes to GEOS; the tiles do not.
    rng = np.random.default_rng(11)
    regions = _far_apart(rng)
    city = regions[:300]
    bounds = shapely_boxes_in(rng, city, 20_000)
    tiled = RegionGrid(regions, target_cells=2**20)
    slow_tiled = (_check(regions, tiled, bounds) == RegionGrid.SLOW).mean()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RegionGrid, "_REGIONS_PER_TILE", 10**9)  # one tile: a uniform raster
        uniform = RegionGrid(regions, target_cells=2**20)
    assert len(uniform.cell_size) == 1
    slow_uniform = (_check(regions, uniform, bounds) == RegionGrid.SLOW).mean()
    assert slow_uniform > 0.9 and slow_tiled < 0.3, (slow_uniform, slow_tiled)


def shapely_boxes_in(rng, regions, n):
    """Boxes of a thousandth of the regions' extent, spread over it."""
    import shapely

    xmin, ymin, xmax, ymax = shapely.total_bounds(regions)
    size = max(xmax - xmin, ymax - ymin) * 1e-3
    xy = rng.uniform((xmin, ymin), (xmax, ymax), (n, 2))
    return np.column_stack([xy, xy + size])


def test_memory_stays_within_the_budget_for_many_spread_regions():
    # 40,000 small squares in 200 clusters scattered over a 300 x 60 degree extent (more than
    # 32,767 regions: int32 cells). The raster holds at most target_cells cells (4 bytes
    # each here) and a few small tables; building it allocates little beyond that.
    import tracemalloc

    import shapely

    rng = np.random.default_rng(12)
    centres = rng.uniform((-160, 15), (145, 72), (200, 2))
    xy = centres[rng.integers(0, 200, 40_000)] + rng.normal(0, 0.5, (40_000, 2))
    regions = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + 0.01, xy[:, 1] + 0.01)
    target = 2**22
    tracemalloc.start()
    try:
        grid = RegionGrid(regions, target_cells=target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grid.cells.dtype == np.int32
    assert grid.cells.size <= target
    assert grid.nbytes <= 4 * target + 2**20
    assert peak <= grid.nbytes + 32 * 2**20, peak / 2**20
    # The default budget for this many regions is the DEFAULT_MAX_CELLS cap (2**23).
    assert RegionGrid(regions[:5000]).cells.size <= RegionGrid.DEFAULT_MAX_CELLS
    bounds = shapely_boxes_in(rng, regions[:2000], 5000)
    _check(regions, grid, bounds * [1, 1, 1, 1])


def test_regions_without_geometry_keep_the_positions_of_the_others():
    import shapely

    regions = np.array([None, shapely.Polygon(), shapely.box(0, 0, 1, 1)], dtype=object)
    grid = RegionGrid(regions, target_cells=2**10)
    rng = np.random.default_rng(13)
    xy = rng.uniform(-0.5, 1.5, (2000, 2))
    bounds = np.column_stack([xy, xy + 0.001])
    answer = _check(regions, grid, bounds)
    assert (answer == 2).sum() > 200 and ((answer == 2) | (answer < 0)).all()
    assert (RegionGrid(regions[:2]).classify(bounds) == RegionGrid.SLOW).all()


def test_region_tree_is_built_once_per_array_and_forgotten_with_it():
    import gc

    import shapely

    from analysis_lib import _geo

    regions = shapely.box(np.arange(5.0), 0, np.arange(5.0) + 1, 1)
    tree = _geo.region_tree(regions)
    assert _geo.region_tree(regions) is tree
    assert _geo.region_tree(regions.copy()) is not tree
    key = id(regions)
    del regions
    gc.collect()
    assert key not in _geo._REGION_TREES


@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_assign_equals_a_brute_force_geos_answer(predicate):
    # Overlapping regions, items across borders, outside, and on a shared edge.
    import shapely

    from analysis_lib.regions.core import assign

    rng = np.random.default_rng(14)
    regions = _overlapping(rng)
    shapely.prepare(regions)
    xy = rng.uniform(-1, 11, (3000, 2))
    items = shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + 0.3, xy[:, 1] + 0.3)
    region_idx, item_idx = assign(items, regions, predicate)
    if predicate == "within":
        expected = shapely.contains(regions[:, None], items[None, :])
    else:
        expected = shapely.intersects(regions[:, None], shapely.centroid(items)[None, :])
        first = expected.argmax(axis=0)  # the first region in key order
        expected = expected & (np.arange(len(regions))[:, None] == first[None, :])
    want_region, want_item = np.nonzero(expected)
    assert len(want_item) > 500
    got = sorted(zip(region_idx.tolist(), item_idx.tolist(), strict=True))
    assert got == sorted(zip(want_region.tolist(), want_item.tolist(), strict=True))


def test_a_geometry_collection_among_the_regions_is_read_through_its_parts():
    # to_ragged_array refuses collections: the segments then come from get_parts/get_rings.
    # (Polygons only: GEOS 3.14 says a collection with a point contains nothing.)
    import shapely

    regions = np.array(
        [
            shapely.GeometryCollection([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 2.5, 2.5)]),
            shapely.box(2, 0, 3, 1),
        ],
        dtype=object,
    )
    grid = RegionGrid(regions, target_cells=2**12)
    rng = np.random.default_rng(15)
    xy = rng.uniform(-0.5, 3.5, (3000, 2))
    answer = _check(regions, grid, np.column_stack([xy, xy + 0.001]))
    assert (answer == 0).sum() > 50 and (answer == 1).sum() > 50


@pytest.mark.parametrize("bad", [0, -5, 2.5, "1000", True])
def test_a_bad_cell_budget_is_named(bad):
    import shapely

    regions = np.array([shapely.box(0, 0, 1, 1)], dtype=object)
    with pytest.raises((TypeError, ValueError), match="target_cells"):
        RegionGrid(regions, target_cells=bad)
