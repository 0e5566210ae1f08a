"""Per-ZIP analysis: every strategy gives the stock ``__within`` answer, in bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from pandas.testing import assert_frame_equal

from analysis_lib import Sweep, read_frame
from project.buildings.analysis import (
    iter_buildings_by_zip,
    plot_zip_choropleth,
    summarize_by_zip,
)
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
        result = summarize_by_zip("MA", strategy=Sweep(chunk_size=chunk_size, workers=workers))
        assert_frame_equal(result, base, check_exact=False, rtol=1e-12)


# A fresh process on a SpatiaLite file (ADBC cannot read the in-memory test database): which
# thread matches chunks and which threads are alive meanwhile, and the summary, as JSON.
_THREADS_SCRIPT = """
import json, threading
if {keep!r}:
    from analysis_lib import keep_pyarrow_out
    keep_pyarrow_out()
from analysis_lib import Sweep, setup_django
setup_django()
from analysis_lib.regions import sweep
from project.buildings.analysis import summarize_by_zip
names, alive = set(), set()
real = sweep.match_boxes
def spy(*args, **kwargs):
    names.add(threading.current_thread().name.split("_")[0])
    alive.update(t.name for t in threading.enumerate())
    return real(*args, **kwargs)
sweep.match_boxes = spy
auto = summarize_by_zip("MA", strategy=Sweep(chunk_size=50))
seen_auto = {{"match": sorted(names), "reader": "sweep-read" in alive}}
names.clear()
alive.clear()
none = summarize_by_zip("MA", strategy=Sweep(chunk_size=50, workers=0))
print(json.dumps({{"auto": seen_auto, "none": sorted(names),
                  "equal": bool(auto.equals(none)), "n": int(auto["n_buildings"].sum())}}))
"""


@requires_spatialite
def test_sweep_reads_ahead_in_a_thread_only_when_adbc_reads(tmp_path):
    from tests.fresh import run_json
    from tests.per_zip_fixtures import make_database_file

    url = make_database_file(tmp_path / "threads.sqlite3", seed=23, n=300)
    seen = {
        keep: run_json(_THREADS_SCRIPT.format(keep=keep), database_url=url)
        for keep in (False, True)
    }

    # ADBC: the next batch is read in a background thread; chunks are matched in the caller's.
    assert seen[False]["auto"] == {"match": ["MainThread"], "reader": True}
    # pyarrow kept out: ADBC read through nanoarrow, read ahead in a thread all the same.
    assert seen[True]["auto"] == {"match": ["MainThread"], "reader": True}
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
        ({"strategy": "fast"}, ValueError, r"`strategy` must be one of 'sweep'"),
        ({"strategy": 3}, TypeError, r"`strategy` must be a strategy object"),
        ({"predicate": "bbox"}, ValueError, r"`predicate` must be one of 'within'"),
        ({"zips": "XX"}, ValueError, r"no ZIP codes for state 'XX' .*\(states present: MA\)"),
        ({"zips": "Massachusetts"}, ValueError, r"two-letter state code"),
        ({"zips": 42}, TypeError, r"`zips` must be a ZipCode QuerySet or a state code"),
        ({"buildings": "all"}, TypeError, r"`buildings` must be a Building QuerySet"),
        ({"buildings": "zips-qs"}, TypeError, r"`buildings` must be a Building QuerySet"),
        ({"buildings": "sliced"}, ValueError, r"`buildings` must be an unsliced QuerySet"),
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
        ({"fields": "id"}, r"`fields` must be a list or tuple of names"),
        ({"fields": []}, r"`fields` must be a non-empty list"),
        ({"predicate": "touches"}, r"`predicate` must be one of 'within'"),
        ({"geometry": "geojson"}, r"`geometry` must be one of 'shapely'"),
        ({"chunk_size": -5}, r"`chunk_size` must be a positive int"),
    ],
)
def test_iter_buildings_by_zip_checks_arguments_before_iterating(crafted, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
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
    assert [r.label for r in log] == ["per-region: load regions", "per-region: sweep (within)"]
    summarize_by_zip("MA", strategy="orm", progress=True)
    assert "per-region (within)" in capsys.readouterr().err


def test_plot_choropleth(crafted):
    from matplotlib.axes import Axes
    from matplotlib.collections import PathCollection

    summary = summarize_by_zip("MA")
    ax = plot_zip_choropleth(summary)
    assert isinstance(ax, Axes)
    (collection,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collection.get_paths()) == len(summary)
    colours = collection.get_facecolors()
    grey = np.array([0.85, 0.85, 0.85, 1.0])
    empty = list(summary.index).index("02199")
    assert np.allclose(colours[empty], grey)
    assert not np.allclose(colours[list(summary.index).index("02101")], grey)
    assert ax.get_title() == "buildings_per_km2"
    ax2 = plot_zip_choropleth(summary, column="footprint_median_m2", log_scale=False, ax=ax)
    assert ax2 is ax
    with pytest.raises(ValueError, match="`column` must be a column of the summary"):
        plot_zip_choropleth(summary, column="nope")


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
from analysis_lib import EngineUnavailable, Sweep
from project.buildings.analysis import summarize_by_zip
from project.buildings.models import Building
from tests.per_zip_fixtures import make_buildings, make_zips
make_zips()
make_buildings(seed=13, n=300)
result = {{}}
dbapi = summarize_by_zip("MA", strategy=Sweep(engine="dbapi", chunk_size=50))
adbc = summarize_by_zip("MA", strategy=Sweep(engine="adbc", chunk_size=50))
assert_frame_equal(adbc, dbapi, check_exact=False, rtol=1e-12)
result["adbc equals dbapi"] = True
# The first batch without any height: ADBC types the column from it and fails later on.
first = list(Building.objects.order_by("pk").values_list("pk", flat=True)[:50])
Building.objects.filter(pk__in=first).update(height_m=None)
dbapi = summarize_by_zip("MA", strategy=Sweep(engine="dbapi", chunk_size=50))
try:
    summarize_by_zip("MA", strategy=Sweep(engine="adbc", chunk_size=50))
    result["adbc failed mid-stream"] = False
except EngineUnavailable:
    result["adbc failed mid-stream"] = True
auto = summarize_by_zip("MA", strategy=Sweep(engine="auto", chunk_size=50))
assert_frame_equal(auto, dbapi, check_exact=False, rtol=1e-12)
result["auto restarted on dbapi"] = True
print(json.dumps(result))
"""


@requires_spatialite
def test_sweep_reads_with_adbc_and_restarts_on_dbapi_when_adbc_fails(tmp_path):
    # ADBC needs a database file outside a transaction: a fresh process on its own file.
    from tests.fresh import run_json
    from tests.helpers import PROJECT_ROOT

    url = f"spatialite:///{tmp_path / 'adbc.sqlite3'}"
    assert run_json(ADBC_SCRIPT.format(root=str(PROJECT_ROOT)), database_url=url) == {
        "adbc equals dbapi": True,
        "adbc failed mid-stream": True,
        "auto restarted on dbapi": True,
    }
