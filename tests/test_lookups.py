"""The index-aware lookups: the rows of the stock lookups, found through the spatial index."""

from __future__ import annotations

import textwrap

import pytest
from django.db import connection

from analysis_lib.lookups import FLOAT32_MARGIN
from project.buildings.models import Building, ZipCode
from tests.backends import IS_POSTGIS, requires_postgis, requires_spatialite
from tests.fresh import run_python
from tests.helpers import PROJECT_ROOT
from tests.per_zip_fixtures import make_buildings, make_zips

pytestmark = pytest.mark.django_db


@pytest.fixture
def data():
    zips = make_zips()
    special = make_buildings(seed=11, n=300)
    return zips, special


def ids(queryset) -> set[int]:
    return set(queryset.values_list("id", flat=True))


def query_plan(queryset) -> str:
    sql, params = queryset.values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        if IS_POSTGIS:
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(row[-1] for row in cursor.fetchall())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_within_indexed_returns_the_ids_of_within_for_every_zip(seed):
    make_zips()
    make_buildings(seed=seed, n=300)
    assert Building.objects.count() > 300
    total = 0
    for z in ZipCode.objects.all():
        expected = ids(Building.objects.filter(boundary__within=z.boundary))
        assert ids(Building.objects.filter(boundary__within_indexed=z.boundary)) == expected
        total += len(expected)
    assert total > 200  # the comparison was not vacuous


def test_special_cases(data):
    zips, special = data
    found = {
        code: ids(Building.objects.filter(boundary__within_indexed=z.boundary))
        for code, z in zips.items()
    }
    assert special["in_hole"] in found["02120"] and special["in_hole"] not in found["02105"]
    assert special["in_detached"] in found["02105"]
    assert special["on_border_inside"] in found["02106"]
    assert found["02150"] == {special["near_bbox_edge"], special["in_off_grid"]}
    for name in ("straddling", "outside", "centroid_on_border"):
        assert all(special[name] not in found_ids for found_ids in found.values()), name
    assert found["02199"] == set()


@requires_spatialite
def test_float32_margin_is_needed_for_a_box_at_the_zip_bbox_edge(data):
    zips, special = data
    boundary = zips["02150"].boundary
    xmin, ymin, xmax, ymax = boundary.extent
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xmin FROM idx_buildings_building_boundary WHERE pkid = %s",
            [special["near_bbox_edge"]],
        )
        (stored_xmin,) = cursor.fetchone()
        # The R*Tree rounded the box outwards to float32, past the ZIP's own xmin...
        assert stored_xmin < xmin
        cursor.execute(
            "SELECT pkid FROM idx_buildings_building_boundary "
            "WHERE xmin >= %s AND xmax <= %s AND ymin >= %s AND ymax <= %s",
            [xmin, xmax, ymin, ymax],
        )
        unpadded = {row[0] for row in cursor.fetchall()}
    # ...so a prefilter without the margin loses a building the stock lookup finds.
    assert special["near_bbox_edge"] not in unpadded
    assert special["near_bbox_edge"] in ids(Building.objects.filter(boundary__within=boundary))
    assert special["near_bbox_edge"] in ids(
        Building.objects.filter(boundary__within_indexed=boundary)
    )
    assert xmin - abs(xmin) * FLOAT32_MARGIN <= stored_xmin


@requires_spatialite
def test_query_plan_uses_the_rtree_on_spatialite(data):
    zips, _ = data
    boundary = zips["02106"].boundary
    stock = query_plan(Building.objects.filter(boundary__within=boundary))
    indexed = query_plan(Building.objects.filter(boundary__within_indexed=boundary))
    assert "SCAN buildings_building" in stock and "idx_" not in stock
    assert "SCAN idx_buildings_building_boundary VIRTUAL TABLE INDEX" in indexed
    assert "SEARCH buildings_building USING INTEGER PRIMARY KEY" in indexed
    assert "SCAN buildings_building" not in indexed
    overlaps = query_plan(Building.objects.filter(boundary__bboverlaps_indexed=boundary))
    assert "SCAN idx_buildings_building_boundary VIRTUAL TABLE INDEX" in overlaps


@requires_postgis
def test_on_postgis_the_lookup_is_plain_st_within(data):
    zips, _ = data
    boundary = zips["02106"].boundary
    stock = str(Building.objects.filter(boundary__within=boundary).query)
    indexed = str(Building.objects.filter(boundary__within_indexed=boundary).query)
    assert indexed == stock and "ST_Within" in indexed
    assert "&&" in str(Building.objects.filter(boundary__bboverlaps_indexed=boundary).query)


def test_right_hand_geometry_in_another_srid_is_transformed(data):
    zips, _ = data
    boundary = zips["02106"].boundary
    expected = ids(Building.objects.filter(boundary__within=boundary))
    mercator = boundary.transform(3857, clone=True)
    assert mercator.srid == 3857 and mercator.extent != boundary.extent
    assert ids(Building.objects.filter(boundary__within_indexed=mercator)) == ids(
        Building.objects.filter(boundary__within=mercator)
    )
    # A round trip through Web Mercator moves vertices by ~1e-9 degrees, far below the metres
    # that separate the generated buildings from the borders: the same buildings match.
    assert ids(Building.objects.filter(boundary__within_indexed=mercator)) == expected
    assert len(expected) > 5


def test_bboverlaps_indexed_returns_the_ids_of_bboverlaps(data):
    zips, _ = data
    for code in ("02101", "02105", "02120", "02199"):
        boundary = zips[code].boundary
        assert ids(Building.objects.filter(boundary__bboverlaps_indexed=boundary)) == ids(
            Building.objects.filter(boundary__bboverlaps=boundary)
        )


def test_exclude_and_related_lookups(data):
    zips, _ = data
    boundary = zips["02110"].boundary
    assert ids(Building.objects.exclude(boundary__within_indexed=boundary)) == ids(
        Building.objects.exclude(boundary__within=boundary)
    )
    # Through a join: the R*Tree is matched against the joined table's alias.
    indexed = ZipCode.objects.filter(buildings__boundary__within_indexed=boundary)
    stock = ZipCode.objects.filter(buildings__boundary__within=boundary)
    Building.objects.filter(boundary__within=boundary).update(zip=zips["02110"])
    assert set(indexed.values_list("code", flat=True)) == {"02110"}
    assert set(indexed.values_list("code", flat=True)) == set(stock.values_list("code", flat=True))


@requires_spatialite
def test_disabled_spatial_index_falls_back_to_the_stock_scan(data):
    zips, _ = data
    boundary = zips["02106"].boundary
    expected = ids(Building.objects.filter(boundary__within=boundary))
    with connection.cursor() as cursor:
        cursor.execute("SELECT DisableSpatialIndex('buildings_building', 'boundary')")
    queryset = Building.objects.filter(boundary__within_indexed=boundary)
    assert "idx_" not in str(queryset.query)
    assert ids(queryset) == expected


def test_shapely_and_pyproj_use_their_own_libraries_after_a_spatialite_connection(tmp_path):
    # apps.ready() loads them before mod_spatialite (dlopen RTLD_GLOBAL) can hijack their symbols;
    # imported after it they would run on Debian's GEOS 3.11 / PROJ 9.1 and crash.
    code = textwrap.dedent(
        f"""
        import os, sys
        os.environ["DATABASE_URL"] = "spatialite:///{tmp_path / "order.sqlite3"}"
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from analysis_lib import setup_django
        setup_django()
        from django.db import connection
        connection.ensure_connection()
        import pyproj, shapely
        from shapely.geometry import Point
        assert len(shapely.to_wkb(Point(1, 2), output_dimension=2)) == 21
        print(shapely.geos_version_string, pyproj.proj_version_str)
        """
    )
    result = run_python(code)
    import pyproj
    import shapely

    assert result.stdout.split() == [shapely.geos_version_string, pyproj.proj_version_str]
