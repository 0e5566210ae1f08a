"""Per-ZIP analysis: every strategy gives the stock ``__within`` answer, in bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from pandas.testing import assert_frame_equal

from analysis_lib import iter_buildings_by_zip, plot_choropleth, read_frame, summarize_by_zip
from project.buildings.models import Building, ZipCode
from tests.backends import requires_spatialite
from tests.per_zip_fixtures import make_buildings, make_zips, reference_summary

pytestmark = pytest.mark.django_db

STRATEGIES = ["sweep", "orm", "database"]
GEODESIC = ["area_km2", "buildings_per_km2"]  # the reference uses geodesic areas


def assert_matches_reference(
    summary: pd.DataFrame, reference: pd.DataFrame, area_rtol: float = 1e-5
) -> None:
    """Counts exactly, aggregates to float rounding, areas to the projection's accuracy."""
    assert list(summary.index) == list(reference.index)
    assert (summary["n_buildings"].to_numpy() == reference["n_buildings"].to_numpy()).all()
    others = [c for c in reference.columns if c not in GEODESIC]
    assert_frame_equal(
        summary[others], reference[others], check_dtype=False, check_exact=False, rtol=1e-9
    )
    # Projected against geodesic areas: edges straight in longitude/latitude are not geodesics,
    # which costs parts per million on the 2 km test cells and up to ~1e-4 on 10 km ZIPs.
    assert_frame_equal(
        summary[GEODESIC],
        reference[GEODESIC],
        check_dtype=False,
        check_exact=False,
        rtol=area_rtol,
    )


@pytest.fixture
def crafted():
    zips = make_zips()
    special = make_buildings(seed=5, n=400)
    return zips, special


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_every_strategy_equals_the_stock_orm_reference(seed, predicate):
    make_zips()
    make_buildings(seed=seed, n=400)
    reference, _ = reference_summary(ZipCode.objects.all(), predicate)
    assert reference["n_buildings"].sum() > 250 and (reference["n_buildings"] == 0).any()
    results = {s: summarize_by_zip("MA", strategy=s, predicate=predicate) for s in STRATEGIES}
    for strategy, summary in results.items():
        assert_matches_reference(summary, reference), strategy
        assert_frame_equal(summary, results["orm"], check_exact=False, rtol=1e-12)


def test_columns_dtypes_and_empty_zip(crafted):
    summary = summarize_by_zip(ZipCode.objects.all())
    assert summary.index.name == "zip_code" and summary.index.is_monotonic_increasing
    assert list(summary.columns) == [
        "n_buildings",
        "footprint_total_m2",
        "footprint_mean_m2",
        "footprint_median_m2",
        "height_mean_m",
        "height_max_m",
        "year_built_median",
        *(f"share_{use}" for use in Building.UseType.values),
        "area_km2",
        "buildings_per_km2",
    ]
    assert summary["n_buildings"].dtype == np.int64
    empty = summary.loc["02199"]
    assert empty["n_buildings"] == 0 and empty["buildings_per_km2"] == 0.0
    assert empty["footprint_total_m2"] == 0.0 and np.isnan(empty["footprint_mean_m2"])
    assert np.isnan(empty["share_residential"])
    shares = summary.loc[summary["n_buildings"] > 0, summary.columns.str.startswith("share_")]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    # Square degrees would give ~4e-4 for a 0.02-degree cell; it is ~3.7 km².
    assert 3.6 < summary.loc["02101", "area_km2"] < 3.7


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_who_belongs_where(crafted, strategy):
    zips, special = crafted
    counts = {}
    for predicate in ("within", "centroid"):
        frames = dict(iter_buildings_by_zip("MA", fields=["id"], predicate=predicate))
        found = {code: set(frame["id"]) for code, frame in frames.items()}
        summary = summarize_by_zip("MA", strategy=strategy, predicate=predicate)
        assert summary["n_buildings"].to_dict() == {c: len(i) for c, i in found.items()}
        counts[predicate] = found
    within, centroid = counts["within"], counts["centroid"]

    assert special["in_hole"] in within["02120"] and special["in_hole"] not in within["02105"]
    assert special["in_detached"] in within["02105"]
    assert special["on_border_inside"] in within["02106"]
    assert special["near_bbox_edge"] in within["02150"]
    for name in ("straddling", "centroid_on_border", "outside"):
        assert not any(special[name] in found for found in within.values()), name
    # Centroid: each building at most once; the one on the 02101|02102 border goes to 02101.
    everyone = [i for found in centroid.values() for i in found]
    assert len(everyone) == len(set(everyone))
    assert special["centroid_on_border"] in centroid["02101"]
    assert special["straddling"] in centroid["02102"]  # its centroid is east of the border
    assert not any(special["outside"] in found for found in centroid.values())
    assert sum(map(len, centroid.values())) > sum(map(len, within.values()))


def test_zip_subset_and_building_filter(crafted):
    zips, special = crafted
    subset = ZipCode.objects.filter(code__in=["02102", "02105", "02120", "02199"])
    residential = Building.objects.filter(use_type="residential")
    for predicate in ("within", "centroid"):
        reference, found = reference_summary(subset, predicate)
        results = [
            summarize_by_zip(subset, residential, strategy=s, predicate=predicate)
            for s in STRATEGIES
        ]
        expected_n = {
            code: Building.objects.filter(id__in=ids, use_type="residential").count()
            for code, ids in found.items()
        }
        for summary in results:
            assert summary["n_buildings"].to_dict() == expected_n
            assert_frame_equal(summary, results[0], check_exact=False, rtol=1e-12)
    # Without 02101 in the set, the border centroid belongs to 02102.
    ids = dict(iter_buildings_by_zip(subset, fields=["id"], predicate="centroid"))
    assert special["centroid_on_border"] in set(ids["02102"]["id"])
    # A sliced ZIP QuerySet is accepted (the keys are pinned first).
    sliced = summarize_by_zip(ZipCode.objects.order_by("code")[:3], strategy="database")
    assert list(sliced.index) == ["02101", "02102", "02103"]


def test_sweep_chunking_and_threads_do_not_change_the_result(crafted):
    base = summarize_by_zip("MA", strategy="orm")
    for chunk_size, workers in [(37, 0), (37, 1), (1000, 2), (1, 3), (37, None)]:
        result = summarize_by_zip("MA", chunk_size=chunk_size, workers=workers)
        assert_frame_equal(result, base, check_exact=False, rtol=1e-12)


# A fresh process on a SpatiaLite file (ADBC cannot read the in-memory test database): which
# threads match chunks under workers=None, and the summary, as JSON.
_THREADS_SCRIPT = """
import json, threading
if {keep!r}:
    from analysis_lib import keep_pyarrow_out
    keep_pyarrow_out()
from analysis_lib import setup_django, summarize_by_zip
setup_django()
from analysis_lib import _per_zip
names = set()
real = _per_zip._Partials.from_rows
def spy(*args, **kwargs):
    names.add(threading.current_thread().name.split("_")[0])
    return real(*args, **kwargs)
_per_zip._Partials.from_rows = spy
auto = summarize_by_zip("MA", chunk_size=50)
names_auto = sorted(names)
names.clear()
none = summarize_by_zip("MA", chunk_size=50, workers=0)
print(json.dumps({{"auto": names_auto, "none": sorted(names),
                  "equal": bool(auto.equals(none)), "n": int(auto["n_buildings"].sum())}}))
"""


@requires_spatialite
def test_sweep_uses_a_worker_thread_by_default_only_when_adbc_reads(tmp_path):
    from tests.per_zip_fixtures import make_database_file, run_child

    url = make_database_file(tmp_path / "threads.sqlite3", seed=23, n=300)
    seen = {keep: run_child(_THREADS_SCRIPT.format(keep=keep), url) for keep in (False, True)}

    assert seen[False]["auto"] == ["sweep"]  # ADBC reads: chunks matched in the worker thread
    assert seen[True]["auto"] == ["MainThread"]  # pyarrow kept out, DB-API: no thread
    for run in seen.values():
        assert run["none"] == ["MainThread"]
        assert run["equal"] and run["n"] > 0


def test_iter_buildings_by_zip_columns_geometry_and_order(crafted):
    zips, special = crafted
    pairs = list(iter_buildings_by_zip("MA"))
    assert [code for code, _ in pairs] == sorted(zips)
    for code, frame in pairs:
        assert list(frame.columns) == ["id", "footprint_m2", "height_m", "year_built", "use_type"]
        assert frame["id"].is_monotonic_increasing
        expected = set(
            Building.objects.filter(boundary__within=zips[code].boundary).values_list(
                "id", flat=True
            )
        )
        assert set(frame["id"]) == expected
    empty = dict(pairs)["02199"]
    assert empty.empty and list(empty.columns)[0] == "id"

    (code, frame), *_ = iter_buildings_by_zip(
        ZipCode.objects.filter(code="02105"), fields=["boundary", "zip__code"]
    )
    import shapely

    assert code == "02105" and list(frame.columns) == ["boundary", "zip__code"]
    assert all(isinstance(g, shapely.Polygon) for g in frame["boundary"])
    zip_geometry = shapely.from_wkb(bytes(zips["02105"].boundary.wkb))
    assert shapely.within(frame["boundary"].to_numpy(), zip_geometry).all()
    (_, wkb_frame), *_ = iter_buildings_by_zip(
        ZipCode.objects.filter(code="02105"), fields=["boundary"], geometry="wkb"
    )
    assert isinstance(wkb_frame["boundary"].iloc[0], bytes)


def _peak(callable_) -> int:
    tracemalloc.start()
    try:
        callable_()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_iter_buildings_by_zip_memory_is_bounded_by_one_zip():
    make_zips()
    make_buildings(seed=9, n=3000)
    fields = ["id", "footprint_m2", "height_m", "year_built", "use_type", "source_id"]
    sizes = []

    def per_zip():
        for _, frame in iter_buildings_by_zip("MA", fields=fields, chunk_size=100):
            sizes.append(len(frame))

    def everything():
        frame = read_frame(Building.objects.all(), fields, chunk_size=100)
        assert len(frame) == Building.objects.count()

    def largest_zip():
        code = max(ZipCode.objects.all(), key=lambda z: z.boundary.area).code
        for _, frame in iter_buildings_by_zip(ZipCode.objects.filter(code=code), fields=fields):
            assert len(frame) > 0

    per_zip()  # warm caches (compiled SQL, imports) outside the measurement
    everything()
    sizes.clear()
    peak_per_zip = _peak(per_zip)
    peak_all = _peak(everything)
    peak_one = _peak(largest_zip)
    assert max(sizes) < 0.15 * Building.objects.count()
    # Generous margins: one ZIP is about a tenth of the table.
    assert peak_per_zip < 0.5 * peak_all
    assert peak_per_zip < 3 * peak_one


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategy": "fast"}, ValueError, r"`strategy` was 'fast'"),
        ({"predicate": "bbox"}, ValueError, r"`predicate` was 'bbox'"),
        ({"chunk_size": 0}, ValueError, r"`chunk_size` must be a strictly positive"),
        ({"workers": -1}, ValueError, r"`workers` must be a non-negative integer"),
        ({"zips": "XX"}, ValueError, r"no ZIP codes for state 'XX' .*\(states present: MA\)"),
        ({"zips": "Massachusetts"}, ValueError, r"two-letter state code"),
        ({"zips": 42}, TypeError, r"`zips` must be a ZipCode QuerySet or a state code"),
        ({"buildings": "all"}, TypeError, r"`buildings` must be a Building QuerySet"),
        ({"buildings": "zips-qs"}, TypeError, r"`buildings` must be a Building QuerySet"),
        ({"buildings": "sliced"}, ValueError, r"`buildings` must not be sliced"),
    ],
)
def test_summarize_rejects_bad_arguments(crafted, kwargs, error, match):
    kwargs = {"zips": "MA", **kwargs}
    if kwargs.get("buildings") == "zips-qs":
        kwargs["buildings"] = ZipCode.objects.all()
    elif kwargs.get("buildings") == "sliced":
        kwargs["buildings"] = Building.objects.all()[:10]
    with pytest.raises(error, match=match):
        summarize_by_zip(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fields": ["id", "no_such_field"]}, r"no_such_field"),
        ({"fields": "id"}, r"`fields` must be a non-empty sequence"),
        ({"fields": []}, r"`fields` must be a non-empty sequence"),
        ({"predicate": "touches"}, r"`predicate` was 'touches'"),
        ({"geometry": "geojson"}, r"`geometry` was 'geojson'"),
        ({"chunk_size": -5}, r"`chunk_size` must be a strictly positive"),
    ],
)
def test_iter_buildings_by_zip_checks_arguments_before_iterating(crafted, kwargs, match):
    with pytest.raises(ValueError, match=match):
        iter_buildings_by_zip("MA", **kwargs)  # raises at the call, not at the first next()


@requires_spatialite
def test_database_strategy_needs_the_spatial_index(crafted):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT DisableSpatialIndex('buildings_building', 'boundary')")
    with pytest.raises(RuntimeError, match="needs the SpatiaLite spatial index"):
        summarize_by_zip("MA", strategy="database")
    # The other strategies still work (the lookup falls back to the stock scan).
    assert summarize_by_zip("MA", strategy="orm")["n_buildings"].sum() > 0


def test_progress_and_memory_log(crafted, capsys):
    from analysis_lib import MemoryLog

    log = MemoryLog()
    summarize_by_zip("MA", progress=True, log=log)
    assert "sweep (within)" in capsys.readouterr().err
    assert [r.label for r in log] == ["per-ZIP: load ZIPs", "per-ZIP: sweep (within)"]
    summarize_by_zip("MA", strategy="orm", progress=True)
    assert "orm (within)" in capsys.readouterr().err


def test_plot_choropleth(crafted):
    from matplotlib.axes import Axes
    from matplotlib.collections import PathCollection

    summary = summarize_by_zip("MA")
    ax = plot_choropleth(summary)
    assert isinstance(ax, Axes)
    (collection,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collection.get_paths()) == len(summary)
    colours = collection.get_facecolors()
    grey = np.array([0.85, 0.85, 0.85, 1.0])
    empty = list(summary.index).index("02199")
    assert np.allclose(colours[empty], grey)
    assert not np.allclose(colours[list(summary.index).index("02101")], grey)
    assert ax.get_title() == "buildings_per_km2"
    ax2 = plot_choropleth(summary, "MA", column="footprint_median_m2", log_scale=False, ax=ax)
    assert ax2 is ax
    with pytest.raises(ValueError, match="`column` was 'nope'"):
        plot_choropleth(summary, column="nope")


@pytest.mark.parametrize(("seed", "centroid_reference"), [(3, True), (4, False)])
def test_generated_massachusetts(seed, centroid_reference):
    n = 1500
    call_command("generate_massachusetts", buildings=n, seed=seed, verbosity=0)
    assert ZipCode.objects.filter(state="MA").count() > 400 and Building.objects.count() == n
    # The whole state with the fast strategies.
    state = {}
    for predicate in ("within", "centroid"):
        sweep = summarize_by_zip("MA", predicate=predicate)
        state[predicate] = summarize_by_zip("MA", strategy="database", predicate=predicate)
        assert_frame_equal(sweep, state[predicate], check_exact=False, rtol=1e-12)
    # Some buildings straddle borders; every centroid lies in some cell and counts once.
    assert 0 < n - state["within"]["n_buildings"].sum() < n // 5
    assert state["centroid"]["n_buildings"].sum() == n
    # Every fifth ZIP against the stock lookup (a full table scan per ZIP), with the slow loop.
    codes = list(ZipCode.objects.order_by("code").values_list("code", flat=True))[::5]
    sample = ZipCode.objects.filter(code__in=codes)
    reference, _ = reference_summary(sample, "within")
    assert reference["n_buildings"].sum() > n // 10
    for strategy in STRATEGIES:
        assert_matches_reference(summarize_by_zip(sample, strategy=strategy), reference, 1e-3)
    if centroid_reference:
        reference, _ = reference_summary(sample, "centroid")
    for strategy in STRATEGIES:
        summary = summarize_by_zip(sample, strategy=strategy, predicate="centroid")
        if centroid_reference:
            assert_matches_reference(summary, reference, 1e-3)
        else:
            expected = state["centroid"].loc[summary.index]
            assert_frame_equal(summary, expected, check_exact=False, rtol=1e-12)


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

    from analysis_lib._geo import ZipGrid

    zips = _crafted_zip_geometries()
    grid = ZipGrid(zips, target_cells=target_cells)
    rng = np.random.default_rng(target_cells)
    n = 20_000
    x = rng.uniform(-71.27, -70.66, n)
    y = rng.uniform(42.23, 42.33, n)
    half = rng.uniform(0.01, 0.7, (n, 2)) * grid.cell  # most boxes fit in two cells...
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

    from analysis_lib._geo import ZipGrid

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


def test_zip_grid_int16_index_sums_may_wrap():
    # ZIPs 1..299 overlap on [0, 1]: the running sum of their indexes (44,850) wraps around
    # int16; ZIP 299 goes on alone to x = 3, where the sum must come back to exactly 299.
    import shapely

    from analysis_lib._geo import ZipGrid

    zips = np.array(
        [shapely.box(4, 0, 5, 1)] + [shapely.box(0, 0, 1, 1)] * 298 + [shapely.box(0, 0, 3, 1)],
        dtype=object,
    )
    grid = ZipGrid(zips, target_cells=2**14)
    assert grid.cells.dtype == np.int16
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-0.5, 5.5, 5000), rng.uniform(-0.5, 1.5, 5000)
    half = rng.uniform(0.01, 0.5, (5000, 1)) * grid.cell
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

    from analysis_lib._geo import ZipGrid

    side = 182  # 33,124 ZIPs: unit squares with gaps, in a square
    i, j = np.divmod(np.arange(side * side), side)
    zips = shapely.box(i * 2.0, j * 2.0, i * 2.0 + 1.5, j * 2.0 + 1.5)
    grid = ZipGrid(zips, target_cells=2**21)
    assert grid.cells.dtype == np.int32
    rng = np.random.default_rng(6)
    x = rng.uniform(2 * side - 6, 2 * side, 20_000)  # the last three columns of ZIPs
    y = rng.uniform(0, 2 * side, 20_000)
    half = rng.uniform(0.01, 0.4, 20_000) * grid.cell
    bounds = np.column_stack([x - half, y - half, x + half, y + half])
    answer = _check_grid_against_geos(zips, grid, bounds)
    assert (answer > np.iinfo(np.int16).max).sum() > 1000


def test_wkb_polygon_bounds_in_blocks_with_mixed_lengths():
    import shapely

    from analysis_lib._geo import wkb_polygon_bounds

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


def test_partials_hold_footprints_in_a_few_arrays_and_give_exact_medians():
    # 60 chunks of 1,000 rows over 500 ZIPs: one small array per ZIP and chunk (about 26,000)
    # would cost several times the 480 kB of values; the partials must stay within twice that.
    from analysis_lib._per_zip import _Partials

    rng = np.random.default_rng(4)
    n_zips, rows, chunks = 500, 1000, 60
    use_types = ("residential", "other")
    frames, zip_idxs = [], []
    for _ in range(chunks):
        frames.append(
            pd.DataFrame(
                {
                    "footprint_m2": rng.lognormal(5, 1, rows),
                    "height_m": np.nan,
                    "year_built": np.nan,
                    "use_type": "other",
                }
            )
        )
        zip_idxs.append(rng.integers(0, n_zips - 1, rows))  # the last ZIP stays empty
        _Partials.from_rows(n_zips, use_types, zip_idxs[-1], frames[-1])  # pandas' caches
    tracemalloc.start()
    try:
        total = _Partials(n_zips, use_types)
        for frame, zip_idx in zip(frames, zip_idxs, strict=True):
            total.merge(_Partials.from_rows(n_zips, use_types, zip_idx, frame))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * chunks * rows * 8
    medians = total.raw(pd.Index(range(n_zips)))["footprint_median"].to_numpy()
    values = np.concatenate([f["footprint_m2"].to_numpy() for f in frames])
    zip_idx = np.concatenate(zip_idxs)
    expected = [np.median(values[zip_idx == z]) for z in range(n_zips - 1)]
    assert medians[:-1].tolist() == expected  # exact, not approximately
    assert np.isnan(medians[-1])


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

    from analysis_lib._geo import wkb_polygon_bounds

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


def test_the_loaders_wkb_takes_the_fast_path(crafted):
    # On both backends the loader's WKB is what wkb_polygon_bounds reads without GEOS.
    import shapely

    from analysis_lib._geo import wkb_polygon_bounds

    wkb = read_frame(Building.objects.order_by("pk"), ["boundary"], geometry="wkb")["boundary"]
    bounds = wkb_polygon_bounds(wkb.to_numpy())
    assert np.isfinite(bounds).all()
    np.testing.assert_array_equal(bounds, shapely.bounds(shapely.from_wkb(wkb.to_numpy())))


ADBC_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from analysis_lib import setup_django
setup_django()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from pandas.testing import assert_frame_equal
from analysis_lib import summarize_by_zip
from analysis_lib.loaders import EngineUnavailable as _AdbcMidStream
from project.buildings.models import Building
from tests.per_zip_fixtures import make_buildings, make_zips
make_zips()
make_buildings(seed=13, n=300)
result = {{}}
dbapi = summarize_by_zip("MA", engine="dbapi", chunk_size=50)
adbc = summarize_by_zip("MA", engine="adbc", chunk_size=50)
assert_frame_equal(adbc, dbapi, check_exact=False, rtol=1e-12)
result["adbc equals dbapi"] = True
# The first batch without any height: ADBC types the column from it and fails later on.
first = list(Building.objects.order_by("pk").values_list("pk", flat=True)[:50])
Building.objects.filter(pk__in=first).update(height_m=None)
dbapi = summarize_by_zip("MA", engine="dbapi", chunk_size=50)
try:
    summarize_by_zip("MA", engine="adbc", chunk_size=50)
    result["adbc failed mid-stream"] = False
except _AdbcMidStream:
    result["adbc failed mid-stream"] = True
auto = summarize_by_zip("MA", engine="auto", chunk_size=50)
assert_frame_equal(auto, dbapi, check_exact=False, rtol=1e-12)
result["auto restarted on dbapi"] = True
print(json.dumps(result))
"""


@requires_spatialite
def test_sweep_reads_with_adbc_and_restarts_on_dbapi_when_adbc_fails(tmp_path):
    # ADBC needs a database file outside a transaction: a fresh process on its own file.
    import json
    import os
    import subprocess
    import sys

    from analysis_lib._django import PROJECT_ROOT

    env = {**os.environ, "DATABASE_URL": f"spatialite:///{tmp_path / 'adbc.sqlite3'}"}
    done = subprocess.run(
        [sys.executable, "-c", ADBC_SCRIPT.format(root=str(PROJECT_ROOT))],
        env=env,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "adbc equals dbapi": True,
        "adbc failed mid-stream": True,
        "auto restarted on dbapi": True,
    }
