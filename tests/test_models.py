import pytest
from django.contrib.gis.geos import MultiPolygon, Polygon

from project.buildings.models import Building, ZipCode
from tests.conftest import square


@pytest.mark.django_db
def test_within_returns_exactly_the_buildings_fully_inside(make_zip, make_building):
    zip_a = make_zip("01001", (0, 0, 1, 1))
    inside = make_building(square(0.1, 0.1, 0.01))
    straddling = make_building(square(0.995, 0.5, 0.01))
    outside = make_building(square(2, 2, 0.01))

    ids = set(Building.objects.filter(boundary__within=zip_a.boundary).values_list("id", flat=True))

    assert ids == {inside.id}
    assert straddling.id not in ids and outside.id not in ids


@pytest.mark.django_db
def test_zipcode_code_is_unique(make_zip):
    from django.db import IntegrityError, transaction

    make_zip("01001", (0, 0, 1, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        make_zip("01001", (1, 1, 2, 2))


@pytest.mark.django_db
def test_multipolygon_with_hole_excludes_buildings_in_the_hole(make_zip, make_building):
    shell = ((0, 0), (1, 0), (1, 1), (0, 1), (0, 0))
    hole = ((0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6), (0.4, 0.4))
    zip_a = make_zip("01002", MultiPolygon(Polygon(shell, hole), Polygon.from_bbox((2, 2, 3, 3))))
    in_hole = make_building(square(0.45, 0.45, 0.05))
    in_ring = make_building(square(0.1, 0.1, 0.05))
    in_second_part = make_building(square(2.5, 2.5, 0.05))

    ids = set(Building.objects.filter(boundary__within=zip_a.boundary).values_list("id", flat=True))

    assert ids == {in_ring.id, in_second_part.id}
    assert in_hole.id not in ids


@pytest.mark.django_db
def test_use_type_choices_and_nullable_fields(make_building):
    b = make_building(square(0, 0, 0.001), height_m=None, year_built=None)
    b.refresh_from_db()
    assert b.height_m is None and b.year_built is None
    assert b.use_type == Building.UseType.OTHER
    assert set(Building.UseType.values) == {
        "residential",
        "commercial",
        "industrial",
        "institutional",
        "other",
    }
    assert ZipCode._meta.get_field("boundary").srid == 4326
