"""Shared fixtures: hand-made geometries, factories for the two models, the generated database.

Plain helpers (no fixtures) live in ``tests/helpers.py`` and the ``*_fixtures.py`` data modules;
the fresh-process runner and the RSS reader shared with the benchmarks in ``tests/fresh.py``.
"""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")


def square(x0: float, y0: float, size: float):
    """A GEOS polygon square with its lower-left corner at (x0, y0), in degrees."""
    from django.contrib.gis.geos import Polygon

    return Polygon.from_bbox((x0, y0, x0 + size, y0 + size))


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


@pytest.fixture
def make_zip(db):
    """Create a ZipCode from a polygon or multipolygon (a bbox tuple is accepted)."""
    from django.contrib.gis.geos import MultiPolygon, Polygon

    from project.buildings.models import ZipCode

    def _make(code: str, boundary, state: str = "MA", city: str = "", county: str = ""):
        if isinstance(boundary, tuple):
            boundary = Polygon.from_bbox(boundary)
        if isinstance(boundary, Polygon):
            boundary = MultiPolygon(boundary)
        boundary.srid = 4326
        return ZipCode.objects.create(
            code=code, state=state, city=city, county=county, boundary=boundary
        )

    return _make


@pytest.fixture
def make_building(db):
    """Create a Building from a polygon (a bbox tuple is accepted)."""
    from django.contrib.gis.geos import Polygon

    from project.buildings.models import Building

    def _make(boundary, **fields):
        if isinstance(boundary, tuple):
            boundary = Polygon.from_bbox(boundary)
        boundary.srid = 4326
        fields.setdefault("footprint_m2", 100.0)
        return Building.objects.create(boundary=boundary, **fields)

    return _make


@pytest.fixture(scope="session")
def generated_db(tmp_path_factory):
    """A migrated database on disk holding a generated Massachusetts of ~3,000 buildings.

    A SpatiaLite file under pytest's temporary folder, or a scratch database on the PostGIS
    server of ``DATABASE_URL`` (dropped at the end); see ``tests/helpers.py``.
    """
    from tests.helpers import POSTGRES_SCHEMES, build_generated_db, postgres_scratch

    current = os.environ.get("DATABASE_URL", "")
    drop = None
    if current.startswith(POSTGRES_SCHEMES):
        url, drop = postgres_scratch(current)
    else:
        url = f"spatialite:///{tmp_path_factory.mktemp('notebooks_db') / 'buildings.sqlite3'}"
    try:
        yield build_generated_db(url)
    finally:
        if drop is not None:
            drop()
