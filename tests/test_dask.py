"""Dask: to_dask partitions by primary-key range, and DaskSweep on a LocalCluster.

The cluster tests run two worker processes (``LocalCluster(n_workers=2, processes=True)``).
Worker processes cannot see pytest-django's test database when it is SQLite in memory, nor
rows of an uncommitted test transaction, so they read the session's generated database on
disk (the ``generated_db`` fixture in ``conftest.py``: a SpatiaLite file, or a scratch
database on the PostGIS server), which this process reaches through an extra database alias.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pandas as pd
import pytest
import shapely
from django.db import connections
from django.db.models import Count, F
from pandas.testing import assert_frame_equal, assert_series_equal

from analysis_lib import DaskSweep, read_frame, to_dask
from analysis_lib import _dask as dask_module
from project.buildings.analysis import summarize_by_zip
from project.buildings.models import Building, ZipCode
from tests.backends import requires_spatialite
from tests.fresh import run_python
from tests.per_zip_fixtures import make_buildings, make_zips

ALIAS = "dask_generated"
COLUMNS = ["footprint_m2", "height_m", "year_built", "use_type", "zip__code", "boundary"]
EXACT = ["n_buildings", "footprint_median_m2", "height_max_m", "year_built_median", "area_km2"]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each, shared by the module (starting costs seconds)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(scope="module")
def on_disk(generated_db, django_db_blocker):
    """The generated database under the alias ALIAS, readable here and by the workers."""
    import dj_database_url

    parsed = dj_database_url.parse(generated_db.url)
    settings_dict = dict(connections["default"].settings_dict)
    settings_dict.update(
        {key: parsed[key] for key in ("ENGINE", "NAME", "HOST", "PORT", "USER", "PASSWORD")}
    )
    settings_dict["NAME"] = str(settings_dict["NAME"])
    connections.settings[ALIAS] = settings_dict
    with django_db_blocker.unblock():
        try:
            yield generated_db
        finally:
            connections[ALIAS].close()
            del connections[ALIAS]
            del connections.settings[ALIAS]


def _same_frame(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal columns, dtypes and values; geometry columns compared as exact coordinates."""
    assert list(got.columns) == list(expected.columns)
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    geometry = [c for c in got.columns if c == "boundary"]
    assert_frame_equal(got.drop(columns=geometry), expected.drop(columns=geometry))
    for column in geometry:
        assert shapely.equals_exact(got[column].to_numpy(), expected[column].to_numpy(), 0).all()


# --------------------------------------------------------------------------------------------
# Optional dependency
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "hidden"),
    [
        (to_dask, ["dask", "dask.dataframe"]),
        (lambda qs: DaskSweep(client=object()), ["distributed"]),
    ],
)
def test_missing_dask_names_the_extra(monkeypatch, function, hidden):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'analysis-lib\[dask\]'"):
        function(Building.objects.all())


def test_importing_to_dask_does_not_import_dask():
    code = (
        "import sys, analysis_lib; analysis_lib.to_dask; analysis_lib._dask; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'dask', 'distributed'}))"
    )
    assert run_python(code).stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make_args", "error", "match"),
    [
        (lambda: (Building.objects, {}), TypeError, r"call \.all\(\) on the manager"),
        (lambda: ([], {}), TypeError, "must be a django.db.models.QuerySet"),
        (lambda: (Building.objects.all()[:10], {}), ValueError, "sliced"),
        (
            lambda: (Building.objects.all().union(Building.objects.all()), {}),
            ValueError,
            "union",
        ),
        (
            lambda: (Building.objects.values("use_type").annotate(n=Count("id")), {}),
            ValueError,
            "one row per group",
        ),
        (lambda: (Building.objects.all(), {"npartitions": 0}), ValueError, "npartitions"),
        (lambda: (Building.objects.all(), {"npartitions": "2"}), TypeError, "npartitions"),
        (lambda: (Building.objects.all(), {"npartitions": True}), TypeError, "npartitions"),
        (lambda: (Building.objects.all(), {"chunk_size": 0}), ValueError, "chunk_size"),
        (lambda: (Building.objects.all(), {"fields": "use_type"}), TypeError, "fields"),
        (lambda: (Building.objects.all(), {"fields": []}), ValueError, "`fields` is empty"),
        (
            lambda: (Building.objects.all(), {"fields": ["use_type", "nope"]}),
            ValueError,
            "unknown field 'nope' for model buildings.Building",
        ),
        (lambda: (Building.objects.all(), {"geometry": "wkt"}), ValueError, "geometry"),
    ],
)
def test_to_dask_rejects_bad_arguments(make_args, error, match):
    queryset, kwargs = make_args()
    with pytest.raises(error, match=match):
        to_dask(queryset, **kwargs)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"npartitions": 0}, ValueError, "`npartitions` must be a positive int"),
        ({"npartitions": "2"}, TypeError, "`npartitions` must be a positive int"),
        ({"chunk_size": -5}, ValueError, "`chunk_size` must be a positive int"),
        ({"client": "tcp://127.0.0.1:8786"}, TypeError, "`client` must be a distributed.Client"),
    ],
)
def test_dask_sweep_rejects_bad_arguments(kwargs, error, match):
    pytest.importorskip("distributed")
    with pytest.raises(error, match=match):
        DaskSweep(**kwargs)


# --------------------------------------------------------------------------------------------
# to_dask in this process (the test transaction is visible to the 'sync' scheduler only)
# --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_partitions_are_primary_key_ranges_equal_to_read_frame():
    pytest.importorskip("dask.dataframe")
    make_zips()
    make_buildings(seed=4, n=300)
    queryset = Building.objects.filter(footprint_m2__gt=50).annotate(
        double_m2=F("footprint_m2") * 2
    )
    fields = ["footprint_m2", "height_m", "year_built", "use_type", "double_m2", "boundary"]
    with pytest.warns(RuntimeWarning, match="see only committed rows"):
        ddf = to_dask(queryset, 4, ["id", *fields])
    pks = sorted(queryset.values_list("pk", flat=True))
    assert ddf.npartitions == 4
    assert ddf.divisions[0] == pks[0] and ddf.divisions[-1] == pks[-1]
    assert list(ddf.divisions) == sorted(ddf.divisions)

    expected = read_frame(queryset.order_by("pk"), ["id", *fields], index="id")
    got = ddf.compute(scheduler="sync")
    _same_frame(got, expected)
    assert ddf.dtypes.to_dict() == expected.dtypes.to_dict()  # the lazy frame's meta
    sizes = 0
    for i in range(ddf.npartitions):
        part = ddf.get_partition(i).compute(scheduler="sync")
        lo, hi = ddf.divisions[i], ddf.divisions[i + 1]
        assert part.index.is_monotonic_increasing
        assert (part.index >= lo).all()
        assert (part.index <= hi).all() if i == ddf.npartitions - 1 else (part.index < hi).all()
        sizes += len(part)
    assert sizes == len(expected)
    # Known divisions: loc reads the partitions it needs and gets the same rows.
    middle = pks[len(pks) // 2]
    tail = ddf.loc[middle:]
    assert tail.npartitions < ddf.npartitions
    assert_series_equal(
        tail["footprint_m2"].compute(scheduler="sync"), expected.loc[middle:, "footprint_m2"]
    )


@pytest.mark.django_db
def test_wkb_geometry_default_fields_values_querysets_and_default_npartitions(monkeypatch):
    pytest.importorskip("dask.dataframe")
    make_zips()
    make_buildings(seed=6, n=120)
    queryset = Building.objects.all()
    with pytest.warns(RuntimeWarning):
        wkb = to_dask(queryset, 3, ["boundary"], geometry="wkb").compute(scheduler="sync")
    expected = read_frame(queryset.order_by("pk"), ["id", "boundary"], index="id")
    assert isinstance(wkb["boundary"].iloc[0], bytes)
    assert shapely.equals_exact(shapely.from_wkb(wkb["boundary"]), expected["boundary"], 0).all()

    monkeypatch.setattr(dask_module, "DEFAULT_PARTITION_ROWS", 50)
    with pytest.warns(RuntimeWarning):
        everything = to_dask(queryset)
    assert everything.npartitions == 3  # 128 rows, 50 per partition
    assert list(everything.columns) == [
        f.attname for f in Building._meta.concrete_fields if not f.primary_key
    ]
    with pytest.warns(RuntimeWarning):
        values = to_dask(queryset.values("use_type", "footprint_m2"), 2)
    assert list(values.columns) == ["use_type", "footprint_m2"]
    assert len(values.compute(scheduler="sync")) == queryset.count()


@pytest.mark.django_db
def test_empty_queryset_gives_one_empty_partition_with_the_dtypes():
    pytest.importorskip("dask.dataframe")
    with pytest.warns(RuntimeWarning):
        ddf = to_dask(Building.objects.filter(footprint_m2__lt=0), 4, ["footprint_m2", "use_type"])
    assert ddf.npartitions == 1
    frame = ddf.compute(scheduler="sync")
    assert frame.empty and list(frame.columns) == ["footprint_m2", "use_type"]
    assert frame["footprint_m2"].dtype == np.float64
    assert isinstance(frame["use_type"].dtype, pd.CategoricalDtype)


# --------------------------------------------------------------------------------------------
# On a LocalCluster of two worker processes
# --------------------------------------------------------------------------------------------


def _worker_state(alias_names: tuple[str, ...]) -> dict:
    """Run in a worker: its pid, whether Django is set up, the databases it has connected to."""
    from django.conf import settings

    names = []
    if settings.configured:
        names = [
            str(connections[a].settings_dict["NAME"])
            for a in connections
            if a.startswith(alias_names)
        ]
    return {"pid": os.getpid(), "django": settings.configured, "databases": names}


def test_workers_load_their_ranges_with_their_own_connections(on_disk, client):
    queryset = Building.objects.using(ALIAS).filter(footprint_m2__gt=80)
    ddf = to_dask(queryset, 6, COLUMNS)
    assert ddf.npartitions == 6
    got = client.compute(ddf).result()
    expected = read_frame(queryset.order_by("pk"), ["id", *COLUMNS], index="id")
    assert len(expected) > 500
    _same_frame(got, expected)

    states = client.run(_worker_state, ("default", "analysis_lib_"))
    assert len(states) == 2
    worker_name = str(connections[ALIAS].settings_dict["NAME"])
    for state in states.values():
        assert state["pid"] != os.getpid()
        # Django was set up by the task itself, and the database is the client's one (the
        # worker's own settings point at DATABASE_URL of this process, another database).
        assert state["django"] and worker_name in state["databases"]


@requires_spatialite
@pytest.mark.django_db
def test_in_memory_test_database_is_refused_by_worker_processes(client):
    make_zips()
    make_buildings(seed=1, n=20)
    with pytest.warns(RuntimeWarning):
        ddf = to_dask(Building.objects.all(), 2, ["footprint_m2"])
    with pytest.raises(RuntimeError, match="in-memory SQLite database"):
        client.compute(ddf).result()


@pytest.mark.parametrize(
    ("predicate", "filtered"), [("within", False), ("centroid", False), ("within", True)]
)
def test_distributed_summary_equals_the_sweep(on_disk, client, predicate, filtered):
    zips = ZipCode.objects.using(ALIAS).all()
    buildings = Building.objects.using(ALIAS).all()
    if filtered:
        buildings = buildings.filter(use_type="residential")
    expected = summarize_by_zip(zips, buildings, strategy="sweep", predicate=predicate)
    got = summarize_by_zip(
        zips, buildings, strategy=DaskSweep(client, npartitions=7), predicate=predicate
    )
    assert expected["n_buildings"].sum() > (300 if filtered else 2000)
    assert list(got.index) == list(expected.index) and list(got.columns) == list(expected.columns)
    # Counts, medians and maxima exactly; sums (and means) up to summation order.
    assert_frame_equal(got[EXACT], expected[EXACT], check_exact=True)
    assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)


def test_dask_sweep_without_a_client_uses_the_current_one(on_disk, client):
    zips = ZipCode.objects.using(ALIAS).all()
    buildings = Building.objects.using(ALIAS).all()
    expected = summarize_by_zip(zips, buildings, strategy="sweep")
    got = summarize_by_zip(zips, buildings, strategy=DaskSweep())  # distributed.default_client()
    assert expected["n_buildings"].sum() > 2000
    assert_frame_equal(got[EXACT], expected[EXACT], check_exact=True)
    assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
