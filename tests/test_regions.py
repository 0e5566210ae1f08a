"""Per-region analysis on models the library has never seen (tests/reuse_app), public names only.

Every strategy must equal GeoDjango's stock ``__within`` query (or, for ``"centroid"``, the
stock ``Centroid(...)__intersects`` with ties to the first region) region by region: counts,
sums, exact medians, extremes and shares, for points and polygons, with the regions in another
SRID than the items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib import (
    DaskSweep,
    OneStatement,
    PerRegion,
    Sweep,
    iter_items_by_region,
    plot_choropleth,
    summarize_by_region,
)
from tests.reuse_fixtures import make_neighborhoods, make_parcels, make_trees

TREE_AGGREGATES = {
    "height_sum": ("height_m", "sum"),
    "height_mean": ("height_m", "mean"),
    "height_median": ("height_m", "median"),
    "height_min": ("height_m", "min"),
    "height_max": ("height_m", "max"),
    "planted_median": ("planted", "median"),
    "share": ("species", "shares"),
    "n": ("species", "counts"),
}
PARCEL_AGGREGATES = {
    "value_sum": ("value", "sum"),
    "value_median": ("value", "median"),
    "use": ("land_use", "shares"),
}
STRATEGIES = [
    Sweep(chunk_size=37, workers=0),
    Sweep(chunk_size=37, workers=1, engine="dbapi"),
    PerRegion(chunk_size=50),
    OneStatement(),
]


@pytest.fixture
def world(db):
    hoods = make_neighborhoods()
    make_trees()
    make_parcels()
    return hoods


def _members(items, geom: str, predicate: str) -> dict[str, list[int]]:
    """Item pks per neighbourhood from the stock lookups (ties to the first name)."""
    from django.contrib.gis.db.models.functions import Centroid
    from reuse_app.models import Neighborhood

    out: dict[str, list[int]] = {}
    taken: set[int] = set()
    for hood in Neighborhood.objects.order_by("name"):
        if predicate == "within":
            pks = items.filter(**{f"{geom}__within": hood.boundary}).values_list("pk", flat=True)
        else:
            pks = (
                items.annotate(c=Centroid(geom))
                .filter(c__intersects=hood.boundary)
                .values_list("pk", flat=True)
            )
            pks = [pk for pk in pks if pk not in taken]
            taken.update(pks)
        out[hood.name] = sorted(pks)
    return out


def _expected(items, geom, predicate, aggregates) -> pd.DataFrame:
    """The summary computed with pandas from the stock lookups' rows."""
    model = items.model
    rows = {}
    for name, pks in _members(items, geom, predicate).items():
        frame = pd.DataFrame.from_records(
            list(model.objects.filter(pk__in=pks).values()), columns=None
        )
        row: dict[str, float] = {"n_items": len(pks)}
        for out, (field, how) in aggregates.items():
            if how in ("shares", "counts"):
                fld = model._meta.get_field(field)
                values = (
                    [v for v, _ in fld.flatchoices]
                    if fld.choices
                    else sorted(model.objects.values_list(field, flat=True).distinct())
                )
                for value in values:
                    n = int((frame[field] == value).sum()) if len(frame) else 0
                    row[f"{out}_{value}"] = (
                        n if how == "counts" else (n / len(pks) if pks else np.nan)
                    )
                continue
            series = (
                frame[field].dropna().astype(float) if len(frame) else pd.Series([], dtype=float)
            )
            if how == "sum":
                row[out] = float(series.sum())
            elif series.empty:
                row[out] = np.nan
            else:
                row[out] = float(getattr(series, how)())
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _compare(got: pd.DataFrame, expected: pd.DataFrame, label: str) -> None:
    assert list(got.index) == list(expected.index), label
    for column in expected.columns:
        assert column in got.columns, f"{label}: no column {column}"
        np.testing.assert_allclose(
            got[column].to_numpy(dtype=float),
            expected[column].to_numpy(dtype=float),
            rtol=1e-9,
            equal_nan=True,
            err_msg=f"{label}: {column}",
        )


@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_points_in_another_srid_every_strategy_equals_the_stock_lookup(world, predicate):
    from reuse_app.models import Neighborhood, Tree

    items = Tree.objects.all()
    expected = _expected(items, "location", predicate, TREE_AGGREGATES)
    assert expected["n_items"].sum() > 200  # the data set is not trivially empty
    assert expected.loc["elm", "n_items"] == 0 and expected.loc["birch", "n_items"] > 0
    for strategy in STRATEGIES:
        got = summarize_by_region(
            Neighborhood.objects.all(),
            items,
            key="name",
            aggregates=TREE_AGGREGATES,
            predicate=predicate,
            strategy=strategy,
        )
        assert got.index.name == "name"
        _compare(got, expected, repr(strategy))
        assert got["n_items"].dtype == np.int64


@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_polygons_with_a_second_geometry_field_every_strategy(world, predicate):
    from reuse_app.models import Neighborhood, Parcel

    items = Parcel.objects.filter(value__gt=5e4)  # a filtered queryset
    expected = _expected(items, "shape", predicate, PARCEL_AGGREGATES)
    if predicate == "within":  # some parcels straddle a border: fewer than all are counted
        assert expected["n_items"].sum() < items.count()
    else:  # the parcels centred on the alder/cedar border go to alder, once
        assert expected["n_items"].sum() <= items.count()
    for strategy in STRATEGIES:
        got = summarize_by_region(
            Neighborhood.objects.all(),
            items,
            key="name",
            aggregates=PARCEL_AGGREGATES,
            predicate=predicate,
            strategy=strategy,
            item_geometry="shape",
        )
        _compare(got, expected, repr(strategy))


def test_area_density_and_default_key(world):
    from reuse_app.models import Neighborhood, Tree

    got = summarize_by_region(Neighborhood.objects.all(), Tree.objects.all())
    assert got.index.name == "id"
    assert list(got.index) == sorted(Neighborhood.objects.values_list("pk", flat=True))
    by_name = dict(Neighborhood.objects.values_list("pk", "name"))
    area = {by_name[pk]: a for pk, a in got["area_km2"].items()}
    # alder: 1 km² minus its 0.16 km² hole; birch: the hole (equal-area within 1%)
    assert area["alder"] == pytest.approx(0.84, rel=1e-2)
    assert area["birch"] == pytest.approx(0.16, rel=1e-2)
    np.testing.assert_allclose(got["items_per_km2"], got["n_items"] / got["area_km2"])
    assert list(got.columns) == ["n_items", "area_km2", "items_per_km2"]


def test_sliced_and_filtered_regions(world):
    from reuse_app.models import Neighborhood, Tree

    full = summarize_by_region(Neighborhood.objects.all(), Tree.objects.all(), key="name")
    some = summarize_by_region(
        Neighborhood.objects.order_by("name")[1:3], Tree.objects.all(), key="name"
    )
    assert list(some.index) == ["birch", "cedar"]
    pd.testing.assert_frame_equal(some, full.loc[["birch", "cedar"]])


@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_iter_items_by_region_yields_the_stock_rows(world, predicate):
    from reuse_app.models import Neighborhood, Parcel

    items = Parcel.objects.all()
    members = _members(items, "shape", predicate)
    seen = []
    for name, frame in iter_items_by_region(
        Neighborhood.objects.all(),
        items,
        ["id", "land_use", "shape"],
        key="name",
        predicate=predicate,
        item_geometry="shape",
        chunk_size=7,
    ):
        seen.append(name)
        assert list(frame.columns) == ["id", "land_use", "shape"]
        assert sorted(frame["id"]) == members[name], name
    assert seen == sorted(members)


def test_plot_choropleth_of_any_regions(world):
    from reuse_app.models import Neighborhood, Tree

    summary = summarize_by_region(Neighborhood.objects.all(), Tree.objects.all(), key="name")
    ax = plot_choropleth(summary, Neighborhood.objects.all())
    assert ax.get_title() == "items_per_km2"
    assert len(ax.collections[0].get_paths()) == len(summary)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"predicate": "inside"}, ValueError, "`predicate` must be one of"),
        ({"key": "nope"}, ValueError, "`key` must be a field of Neighborhood"),
        ({"key": 3}, TypeError, "`key` must be a field name"),
        (
            {"aggregates": {"x": ("nope", "sum")}},
            ValueError,
            r"`aggregates\['x'\]` must be a field",
        ),
        ({"aggregates": {"x": ("species", "sum")}}, ValueError, "how` must be one of 'counts'"),
        ({"aggregates": {"x": ("height_m", "shares")}}, ValueError, "how` must be one of 'sum'"),
        ({"aggregates": {"x": "height_m"}}, TypeError, r"\(field, how\) pair"),
        ({"aggregates": ["x"]}, TypeError, "`aggregates` must be a dict"),
        ({"strategy": "sweep"}, TypeError, "`strategy` must be a strategy object"),
        ({"region_geometry": "centre"}, ValueError, "`region_geometry` must be a geometry field"),
    ],
)
def test_bad_arguments_are_named_before_any_query(
    db, kwargs, error, match, django_assert_num_queries
):
    from reuse_app.models import Neighborhood, Tree

    with django_assert_num_queries(0), pytest.raises(error, match=match):
        summarize_by_region(Neighborhood.objects.all(), Tree.objects.all(), **kwargs)


def test_geometry_field_must_be_named_when_there_are_several(db):
    from reuse_app.models import Neighborhood, Parcel

    with pytest.raises(ValueError, match=r"`item_geometry` must be .*\(shape, centre\)"):
        summarize_by_region(Neighborhood.objects.all(), Parcel.objects.all())
    with pytest.raises(ValueError, match="`region_geometry` must be a Polygon or Multipolygon"):
        summarize_by_region(
            Parcel.objects.all(), Neighborhood.objects.all(), region_geometry="centre"
        )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_regions_gives_an_empty_table_with_the_columns(world, strategy):
    from reuse_app.models import Neighborhood, Tree

    got = summarize_by_region(
        Neighborhood.objects.none(),
        Tree.objects.all(),
        key="name",
        aggregates=TREE_AGGREGATES,
        strategy=strategy,
    )
    assert got.empty
    assert "height_median" in got.columns and "share_oak" in got.columns


def test_strategy_options_are_checked_where_they_belong():
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int; got 0"):
        Sweep(chunk_size=0)
    with pytest.raises(TypeError, match="`workers` must be a non-negative int"):
        Sweep(workers=1.5)
    with pytest.raises(ValueError, match="`engine` must be one of"):
        Sweep(engine="fast")
    with pytest.raises(ValueError, match="`chunk_size`"):
        PerRegion(chunk_size=-1)


def test_duplicate_keys_are_refused(world):
    from reuse_app.models import Parcel, Tree

    with pytest.raises(ValueError, match="`key` must be a field whose values are unique"):
        summarize_by_region(
            Parcel.objects.all(), Tree.objects.all(), key="land_use", region_geometry="shape"
        )


@pytest.mark.slow
@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_dask_sweep_on_the_reuse_models_equals_the_stock_lookup(transactional_db, predicate):
    # Committed rows (transactional_db) and an in-process cluster: the worker threads open
    # their own connections to the same test database.
    distributed = pytest.importorskip("distributed")
    from reuse_app.models import Neighborhood, Parcel, Tree

    make_neighborhoods()
    make_trees()
    make_parcels()
    cases = [
        (Tree.objects.all(), "location", TREE_AGGREGATES),
        (Parcel.objects.all(), "shape", PARCEL_AGGREGATES),
    ]
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as client:
        for items, geom, aggregates in cases:
            got = summarize_by_region(
                Neighborhood.objects.all(),
                items,
                key="name",
                aggregates=aggregates,
                predicate=predicate,
                strategy=DaskSweep(client, npartitions=3, chunk_size=40),
                item_geometry=geom,
            )
            _compare(got, _expected(items, geom, predicate, aggregates), f"DaskSweep {geom}")


@pytest.mark.parametrize(("chunk_size", "limit"), [(7, 64), (37, 1024), (1000, 8 * 2**20)])
def test_medians_equal_the_stock_lookup_whatever_the_chunking_and_spill_size(
    world, monkeypatch, chunk_size, limit
):
    # A 64-byte limit spills the float medians' store on nearly every chunk; 8 MiB never does.
    from reuse_app.models import Neighborhood, Tree

    from analysis_lib.regions import _medians, core

    spills = []
    real_spill = _medians.MedianStore._spill

    def counting_spill(self, *args, **kwargs):
        spills.append(self)
        return real_spill(self, *args, **kwargs)

    monkeypatch.setattr(core, "MEDIAN_MEMORY_LIMIT", limit)
    monkeypatch.setattr(_medians.MedianStore, "_spill", counting_spill)
    items = Tree.objects.all()
    aggregates = {"height_median": ("height_m", "median"), "planted_median": ("planted", "median")}
    expected = _expected(items, "location", "within", aggregates)
    got = summarize_by_region(
        Neighborhood.objects.all(),
        items,
        key="name",
        aggregates=aggregates,
        strategy=Sweep(chunk_size=chunk_size, workers=0),
    )
    _compare(got, expected, f"chunk_size={chunk_size}, memory_limit={limit}")
    assert (len(spills) > 0) == (limit < 2**20)
