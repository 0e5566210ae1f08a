"""manage.py import_geodata: GeoJSON, Shapefile and GeoPackage into ZipCode and Building."""

from __future__ import annotations

import io
import logging
import tracemalloc
from unittest import mock

# pyproj must be imported before the first SpatiaLite connection: SQLite loads
# mod_spatialite with RTLD_GLOBAL, and a pyproj wheel loaded after it binds to
# the system's libproj/libsqlite3 and aborts the process at exit ("free():
# invalid pointer"). Importing it here, at collection, keeps it on its own libs.
import pyproj
import pytest
import shapely
from django.core.management import CommandError, call_command
from django.db.models.query import QuerySet

from project.buildings.importers import (
    GeodataImportError,
    import_geodata,
    mappable_fields,
    parse_mapping,
)
from project.buildings.models import Building, ZipCode
from tests.geodata_fixtures import (
    BOSTON,
    bowtie,
    convert,
    feature,
    multipolygon,
    ogr2ogr,
    polygon,
    rect,
    write_geojson,
)

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    """Call the command without a progress bar; return its stdout."""
    out = io.StringIO()
    call_command("import_geodata", *args, "--no-progress", stdout=out)
    return out.getvalue()


def zcta_features() -> list[dict]:
    """Three ZCTA-like features: a Polygon, a two-part MultiPolygon, an integer-like code."""
    return [
        feature(polygon(rect(-71.2, 42.3, 0.05, 0.05)), ZCTA5CE20="02134", PO_NAME="Allston"),
        feature(
            multipolygon(rect(-71.1, 42.3, 0.05, 0.05), rect(-71.0, 42.3, 0.01, 0.01)),
            ZCTA5CE20="02135",
            PO_NAME="Brighton",
        ),
        feature(polygon(rect(-72.6, 42.1, 0.05, 0.05)), ZCTA5CE20="01001", PO_NAME=None),
    ]


def building_features(n: int, bad_at: int | None = None, bad: dict | None = None) -> list[dict]:
    """``n`` small buildings (about 11 m x 11 m) in a row; feature ``bad_at`` gets ``bad``."""
    features = []
    for i in range(n):
        props = {"HEIGHT": 3.0 + i, "YR": 1900 + i, "USE": "Residential", "BID": f"b{i}"}
        if i == bad_at:
            props.update(bad or {})
        features.append(feature(polygon(rect(-71.0 + i * 0.001, 42.0, 0.0001, 0.0001)), **props))
    return features


BUILDING_MAP = ("--map", "height_m=HEIGHT", "--map", "year_built=YR")
BUILDING_MAP += ("--map", "use_type=USE", "--map", "source_id=BID")


# ---------------------------------------------------------------- happy paths


def test_zipcodes_from_geojson_with_defaults_and_state(tmp_path):
    path = write_geojson(tmp_path / "zcta.geojson", zcta_features())

    out = run("zipcodes", str(path), "--state", "ma")

    rows = {z.code: z for z in ZipCode.objects.all()}
    assert set(rows) == {"02134", "02135", "01001"}
    assert {z.state for z in rows.values()} == {"MA"}
    assert rows["02134"].city == "Allston" and rows["01001"].city == ""  # PO_NAME by default
    for z in rows.values():
        assert z.boundary.geom_type == "MultiPolygon" and z.boundary.srid == 4326
    assert rows["02134"].boundary.num_geom == 1  # Polygon -> one-part MultiPolygon
    assert rows["02135"].boundary.num_geom == 2
    assert rows["02134"].boundary.extent == pytest.approx((-71.2, 42.3, -71.15, 42.35))
    assert "3 features read, 3 rows imported, 0 repaired, 0 skipped" in out


def test_zipcodes_map_and_state_attribute(tmp_path):
    features = [
        feature(polygon(rect(-71.2, 42.3, 0.05, 0.05)), ZIP=2134, ST="ma", TOWN="Allston"),
        feature(polygon(rect(-71.1, 42.3, 0.05, 0.05)), ZIP=1001, ST="MA", TOWN="Agawam"),
    ]
    path = write_geojson(tmp_path / "zips.geojson", features)

    run("zipcodes", str(path), "--map", "code=zip", "--map", "state=ST", "--map", "city=TOWN")

    assert list(ZipCode.objects.values_list("code", "state", "city")) == [
        ("01001", "MA", "Agawam"),  # an integer code is zero-padded
        ("02134", "MA", "Allston"),
    ]


def test_buildings_from_geojson_with_map(tmp_path):
    features = building_features(3)
    features.append(
        feature(multipolygon(rect(-70.9, 42.0, 0.0002, 0.0001)), HEIGHT=None, USE="OTHER", YR="")
    )
    path = write_geojson(tmp_path / "b.geojson", features)

    out = run("buildings", str(path), *BUILDING_MAP)

    rows = list(Building.objects.order_by("id"))
    assert len(rows) == 4
    first = rows[0]
    assert (first.height_m, first.year_built, first.use_type, first.source_id) == (
        3.0,
        1900,
        "residential",
        "b0",
    )
    last = rows[-1]  # null / blank values -> NULL or the field's default
    assert (last.height_m, last.year_built, last.use_type, last.source_id) == (
        None,
        None,
        "other",
        "",
    )
    assert all(b.boundary.geom_type == "Polygon" and b.boundary.srid == 4326 for b in rows)
    # footprint_m2 from the equal-area projection agrees with the geodesic area.
    geod = pyproj.Geod(ellps="WGS84")
    for b in rows:
        expected = abs(geod.geometry_area_perimeter(shapely.from_wkt(b.boundary.wkt))[0])
        assert b.footprint_m2 == pytest.approx(expected, rel=1e-6)
    assert 85 < first.footprint_m2 < 100  # 0.0001 deg: about 8.3 m east x 11.1 m north
    assert "4 features read, 4 rows imported" in out


def test_multipart_building_split_or_fail(tmp_path):
    features = [
        feature(
            multipolygon(rect(-71.0, 42.0, 0.0001, 0.0001), rect(-71.0, 42.001, 0.0002, 0.0001)),
            BID="twin",
            AREA=999.0,
        )
    ]
    path = write_geojson(tmp_path / "multi.geojson", features)

    with pytest.raises(CommandError, match=r"feature 0 \(FID 0\).*MultiPolygon with 2 parts"):
        run("buildings", str(path), "--multipart", "fail")
    assert Building.objects.count() == 0

    out = run("buildings", str(path), "--map", "source_id=BID", "--map", "footprint_m2=AREA")
    parts = list(Building.objects.order_by("footprint_m2"))
    assert [b.source_id for b in parts] == ["twin", "twin"]
    # Each part gets its own computed area, not the whole feature's mapped 999.
    assert parts[1].footprint_m2 == pytest.approx(2 * parts[0].footprint_m2, rel=1e-3)
    assert "1 features read, 2 rows imported, 0 repaired, 0 skipped, 1 split" in out


def test_z_coordinates_are_dropped(tmp_path):
    ring = [[x, y, 12.5] for x, y in rect(-71.0, 42.0, 0.0001, 0.0001)[0]]
    path = write_geojson(tmp_path / "z.geojson", [feature(polygon([ring]), BID="z")])
    run("buildings", str(path))
    b = Building.objects.get()
    assert not b.boundary.hasz and b.boundary.geom_type == "Polygon"


# ---------------------------------------------------------------- formats and CRS


def flat(coords) -> list[float]:
    """Sorted (x, y) pairs flattened, for pytest.approx."""
    return [v for xy in sorted(coords) for v in xy]


def projected_square(side_m: float = 20.0) -> tuple[list, list[tuple[float, float]]]:
    """A square in EPSG:26986 with a corner at BOSTON, and its corners in lon/lat (pyproj)."""
    to_ma = pyproj.Transformer.from_crs(4326, 26986, always_xy=True)
    x0, y0 = to_ma.transform(*BOSTON)
    ring = rect(x0, y0, side_m, side_m)
    to_ll = pyproj.Transformer.from_crs(26986, 4326, always_xy=True)
    return ring, [to_ll.transform(x, y) for x, y in ring[0]]


@pytest.mark.parametrize("fmt", ["geojson", "shapefile", "zip", "gpkg"])
def test_reprojects_from_massachusetts_mainland(tmp_path, fmt):
    ring, expected_lonlat = projected_square()
    src = write_geojson(
        tmp_path / "structures.geojson",
        [feature(polygon(ring), STRUCT_ID="S1", USE="commercial")],
        epsg=26986,
    )
    path = convert(src, fmt)

    out = run("buildings", str(path), "--map", "source_id=STRUCT_ID", "--map", "use_type=USE")

    b = Building.objects.get()
    assert b.boundary.srid == 4326 and b.source_id == "S1" and b.use_type == "commercial"
    got = flat(b.boundary.exterior_ring.coords)
    assert got == pytest.approx(flat(expected_lonlat), abs=1e-7)  # about 1 cm
    # 400 m2 in a conformal projection whose scale is within 1e-4 of 1 here.
    assert b.footprint_m2 == pytest.approx(400.0, rel=1e-3)
    assert "EPSG:26986 -> EPSG:4326" in out


def test_no_crs_assumes_lonlat_with_a_warning(tmp_path, caplog):
    src = write_geojson(tmp_path / "lonlat.geojson", zcta_features())
    shp = convert(src, "shapefile")
    shp.with_suffix(".prj").unlink()

    with caplog.at_level(logging.WARNING, logger="project.buildings.importers"):
        out = run("zipcodes", str(shp), "--state", "MA")

    assert "declares no coordinate reference system; assuming EPSG:4326" in caplog.text
    assert "(assumed" in out
    assert ZipCode.objects.count() == 3


def test_no_crs_with_projected_coordinates_needs_srid(tmp_path):
    ring, expected_lonlat = projected_square()
    src = write_geojson(tmp_path / "ma.geojson", [feature(polygon(ring), BID="S1")], epsg=26986)
    shp = convert(src, "shapefile")
    shp.with_suffix(".prj").unlink()

    with pytest.raises(CommandError, match=r"feature 0 .*not longitude/latitude.*--srid"):
        run("buildings", str(shp))
    assert Building.objects.count() == 0

    out = run("buildings", str(shp), "--srid", "26986")
    got = flat(Building.objects.get().boundary.exterior_ring.coords)
    assert got == pytest.approx(flat(expected_lonlat), abs=1e-7)
    assert "EPSG:26986 (from --srid)" in out


def two_layer_gpkg(tmp_path):
    zips = convert(write_geojson(tmp_path / "zips.geojson", zcta_features()), "gpkg", "zcta")
    blds = write_geojson(tmp_path / "blds.geojson", building_features(2))
    ogr2ogr("-f", "GPKG", "-update", "-nln", "structures", str(zips), str(blds))
    return zips


def test_layer_option_picks_a_layer_of_a_geopackage(tmp_path):
    gpkg = two_layer_gpkg(tmp_path)

    with pytest.raises(CommandError, match=r"has 2 layers \(.*zcta.*\); choose one with --layer"):
        run("zipcodes", str(gpkg), "--state", "MA")
    with pytest.raises(
        CommandError, match=r"no layer named 'zcta2020'; available layers: .*structures"
    ):
        run("zipcodes", str(gpkg), "--layer", "zcta2020", "--state", "MA")

    run("zipcodes", str(gpkg), "--layer", "zcta", "--state", "MA")
    run("buildings", str(gpkg), "--layer", "structures", "--map", "source_id=BID")
    assert ZipCode.objects.count() == 3
    assert sorted(Building.objects.values_list("source_id", flat=True)) == ["b0", "b1"]


# ---------------------------------------------------------------- bad files: nothing written


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("truncated.geojson", None, r"cannot be read as a GeoJSON.*Unterminated"),
        ("notes.geojson", "just some text\n", r"cannot be read as a GeoJSON"),
        ("missing.geojson", "", r"no such file"),
    ],
    ids=["truncated-json", "not-geo", "missing"],
)
def test_broken_or_missing_file_names_the_path_and_writes_nothing(
    tmp_path, make_zip, name, content, expected
):
    make_zip("02000", (-71.5, 42.5, -71.4, 42.6))
    path = tmp_path / name
    if content is None:
        full = write_geojson(tmp_path / "full.geojson", zcta_features()).read_text()
        path.write_text(full[: len(full) // 2])
    elif content:
        path.write_text(content)

    with pytest.raises(CommandError, match=expected) as err:
        run("zipcodes", str(path), "--state", "MA")

    assert str(path) in str(err.value)
    assert list(ZipCode.objects.values_list("code", flat=True)) == ["02000"]


@pytest.mark.parametrize(
    ("kind", "bad", "field", "expected"),
    [
        ("buildings", {"HEIGHT": "abc"}, "height_m", "'abc' is not a number"),
        ("buildings", {"HEIGHT": -2.0}, "height_m", "-2.0 is negative"),
        ("buildings", {"YR": "19x5"}, "year_built", "'19x5' is not a whole number"),
        ("buildings", {"YR": 1990.5}, "year_built", "1990.5 is not a whole number"),
        ("buildings", {"USE": "castle"}, "use_type", "'castle' is not a use type"),
        ("buildings", {"BID": "x" * 65}, "source_id", "65 characters long; at most 64"),
        ("zipcodes", {"ZCTA5CE20": "0213X"}, "code", "'0213X' is not a 5-digit ZIP code"),
        ("zipcodes", {"ZCTA5CE20": "00007"}, "code", "'00007' is already in feature 7"),
        ("zipcodes", {"STUSPS": "25"}, "state", "'25' is not a two-letter state code"),
    ],
)
def test_bad_value_mid_file_names_feature_and_field_and_rolls_back(
    tmp_path, make_building, kind, bad, field, expected
):
    kept = make_building((-70.0, 41.0, -69.999, 41.001))
    n, bad_at, batch_size = 12, 9, 3
    if kind == "buildings":
        features = building_features(n, bad_at, bad)
        extra = BUILDING_MAP
    else:
        features = [
            feature(
                polygon(rect(-71 + i * 0.01, 42, 0.01, 0.01)), ZCTA5CE20=f"{i:05d}", STUSPS="MA"
            )
            for i in range(n)
        ]
        features[bad_at]["properties"].update(bad)
        extra = ()
    path = write_geojson(tmp_path / "bad.geojson", features)
    real_bulk_create = QuerySet.bulk_create
    batch_sizes = []

    def spy(queryset, objs, *args, **kwargs):
        batch_sizes.append(len(objs))  # the importer reuses its list after the call
        return real_bulk_create(queryset, objs, *args, **kwargs)

    with (
        mock.patch.object(QuerySet, "bulk_create", autospec=True, side_effect=spy),
        pytest.raises(CommandError) as err,
    ):
        run(kind, str(path), *extra, "--batch-size", str(batch_size))

    message = str(err.value)
    assert f"{path}: layer 'bad', feature {bad_at} (FID {bad_at}), field '{field}'" in message
    assert expected in message and "Nothing was imported" in message
    # Three full batches (9 rows) had been inserted before the failure ...
    assert batch_sizes == [batch_size] * 3
    # ... and were rolled back with everything else.
    assert list(Building.objects.values_list("id", flat=True)) == [kept.id]
    assert ZipCode.objects.count() == 0


def test_existing_zip_code_is_an_error(tmp_path, make_zip):
    make_zip("02135", (-71.5, 42.5, -71.4, 42.6))
    path = write_geojson(tmp_path / "zcta.geojson", zcta_features())
    with pytest.raises(CommandError, match=r"feature 1 .*'02135' is already in the ZipCode table"):
        run("zipcodes", str(path), "--state", "MA")
    assert ZipCode.objects.count() == 1


def test_non_polygon_geometry_is_an_error(tmp_path):
    features = building_features(2)
    features[1]["geometry"] = {"type": "Point", "coordinates": [-71.0, 42.0]}
    path = write_geojson(tmp_path / "points.geojson", features)
    with pytest.raises(CommandError, match=r"feature 1 .*is a Point; expected a Polygon"):
        run("buildings", str(path))
    assert Building.objects.count() == 0


def test_unknown_use_type_as_other_is_counted(tmp_path):
    path = write_geojson(tmp_path / "b.geojson", building_features(4, 2, {"USE": "castle"}))
    out = run("buildings", str(path), *BUILDING_MAP, "--unknown-use-type", "other")
    assert sorted(Building.objects.values_list("use_type", flat=True)) == [
        "other",
        "residential",
        "residential",
        "residential",
    ]
    assert "1 unknown use types set to 'other'" in out


# ---------------------------------------------------------------- invalid geometries


@pytest.mark.parametrize(
    ("policy", "codes", "summary"),
    [
        ("repair", {"02134", "02135", "01001", "09999"}, "4 rows imported, 1 repaired, 1 skipped"),
        ("skip", {"02134", "02135", "01001"}, "3 rows imported, 0 repaired, 2 skipped"),
    ],
)
def test_invalid_geometry_repaired_or_skipped_with_counts(tmp_path, policy, codes, summary):
    features = [
        *zcta_features(),
        feature(bowtie(-71.3, 42.2, 0.01), ZCTA5CE20="09999"),
        feature(None, ZCTA5CE20="09998"),  # no geometry: skipped under repair and skip
    ]
    path = write_geojson(tmp_path / "zcta.geojson", features)

    out = run("zipcodes", str(path), "--state", "MA", "--invalid", policy)

    assert set(ZipCode.objects.values_list("code", flat=True)) == codes
    assert f"5 features read, {summary}" in out
    for z in ZipCode.objects.all():
        assert z.boundary.valid
    if policy == "repair":
        repaired = ZipCode.objects.get(code="09999").boundary
        assert repaired.num_geom == 2  # the bow-tie's two triangles
        assert repaired.area == pytest.approx(0.01**2 / 2)


def test_invalid_geometry_fail_names_feature_and_reason(tmp_path):
    features = [*zcta_features(), feature(bowtie(-71.3, 42.2, 0.01), ZCTA5CE20="09999")]
    path = write_geojson(tmp_path / "zcta.geojson", features)
    with pytest.raises(CommandError, match=r"feature 3 \(FID 3\): invalid geometry: Self-inter"):
        run("zipcodes", str(path), "--state", "MA", "--invalid", "fail")
    assert ZipCode.objects.count() == 0


def test_invalid_building_repaired_into_parts_is_split(tmp_path):
    features = [feature(bowtie(-71.0, 42.0, 0.0002), BID="bow")]
    path = write_geojson(tmp_path / "b.geojson", features)
    out = run("buildings", str(path), "--map", "source_id=BID")
    assert Building.objects.filter(source_id="bow").count() == 2
    assert "1 repaired, 0 skipped, 1 split" in out


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("zipcodes", "--map", "zipcode=ZCTA5CE20"),
            r"ZipCode has no field 'zipcode'; fields you can map: code, state, city, county",
        ),
        (
            ("buildings", "--map", "zip=ZCTA5CE20"),
            r"Building has no field 'zip'; fields you can map: footprint_m2, height_m, "
            r"year_built, use_type, source_id",
        ),
        (
            ("zipcodes", "--state", "MA", "--map", "code=ZCTA"),
            r"has no attribute 'ZCTA' \(--map code=ZCTA\); its attributes: ZCTA5CE20, PO_NAME",
        ),
        (("zipcodes", "--map", "code"), r"--map 'code': expected FIELD=ATTRIBUTE"),
        (("zipcodes", "--map", "code=A", "--map", "code=B"), r"'code' is already mapped"),
        (
            ("zipcodes", "--state", "Mass"),
            r"`--state` must be a two-letter state code such as 'MA'; got 'Mass'",
        ),
        (("zipcodes",), r"no state attribute; pass --state XX"),
        (("zipcodes", "--state", "MA", "--map", "state=PO_NAME"), r"either --state MA or --map"),
        (("buildings", "--state", "MA"), r"--state applies to zipcodes only"),
        (("buildings", "--srid", "999999"), r"--srid 999999 is not a known EPSG code"),
        (("buildings", "--batch-size", "0"), r"`batch_size` must be a positive int; got 0"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, args, expected):
    path = write_geojson(tmp_path / "zcta.geojson", zcta_features())
    kind, *options = args
    with pytest.raises(CommandError, match=expected):
        run(kind, str(path), *options)
    assert ZipCode.objects.count() == 0 and Building.objects.count() == 0


def test_layer_without_a_code_attribute_asks_for_map(tmp_path):
    path = write_geojson(
        tmp_path / "z.geojson", [feature(polygon(rect(-71, 42, 0.1, 0.1)), NAME="x")]
    )
    with pytest.raises(CommandError, match=r"none of the usual ZIP code attributes.*--map code="):
        run("zipcodes", str(path), "--state", "MA")


# ---------------------------------------------------------------- the importable function


def test_parse_mapping_and_mappable_fields():
    assert parse_mapping(["code=ZCTA5CE20", " city = PO_NAME "]) == {
        "code": "ZCTA5CE20",
        "city": "PO_NAME",
    }
    assert mappable_fields("buildings") == [
        "footprint_m2",
        "height_m",
        "year_built",
        "use_type",
        "source_id",
    ]
    with pytest.raises(
        GeodataImportError, match=r"`kind` must be one of 'zipcodes', 'buildings'; got 'parcels'"
    ):
        mappable_fields("parcels")


def test_python_heap_is_bounded_by_the_batch_not_the_file(tmp_path):
    """Peak traced memory follows the batch size, not the number of features."""

    def peak(n: int, batch_size: int) -> int:
        path = write_geojson(tmp_path / f"b{n}.geojson", building_features(n))
        tracemalloc.start()
        try:
            stats = import_geodata("buildings", path, batch_size=batch_size)
            peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert stats.imported == n
        return peak_bytes

    peak(50, 50)  # warm caches (imports, GDAL drivers, query compilation)
    small, large = peak(500, 100), peak(2000, 100)
    whole = peak(1000, 1000)  # half the file in one batch: what streaming avoids
    # Measured: large/small about 1.2-1.4, whole/large about 4 (SpatiaLite and PostGIS).
    assert large < 2 * small, (small, large)
    assert whole > 2 * large, (large, whole)
