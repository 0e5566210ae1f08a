"""Many regions: integer medians leave the dense per-region histogram for the MedianStore when
that table would be large, and stay exact (issue 16, point 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_regions import _compare, _expected, world  # noqa: F401  (world is a fixture)

from analysis_lib import Sweep, summarize_by_region
from analysis_lib.regions import core


def _spec(name: str = "year") -> core.Spec:
    return core.Spec(
        key="k",
        region_geometry="g",
        region_srid=4326,
        item_geometry="g",
        item_srid=4326,
        item_geom_type="point",
        predicate="within",
        fields=(core.ValueField(name, "int"),),
        aggregates=(core.Aggregate(f"{name}_median", name, "median"),),
    )


def _chunked_medians(n_regions: int, region: np.ndarray, years: np.ndarray, chunk: int):
    spec = _spec()
    total = core.Partials(n_regions, spec)
    for start in range(0, len(region), chunk):
        frame = pd.DataFrame({"year": years[start : start + chunk]})
        total.merge(core.Partials.from_rows(n_regions, spec, region[start : start + chunk], frame))
    return total, total.raw(spec)["year:median"]


@pytest.mark.parametrize("n_regions", [50, 30_000])
def test_integer_medians_are_exact_with_few_and_many_regions(n_regions):
    rng = np.random.default_rng(n_regions)
    n = 60_000
    region = rng.integers(0, n_regions, n)
    years = (2024 - np.floor(rng.exponential(60, n))).clip(1800)
    years[rng.random(n) < 0.05] = np.nan  # NULL years are in no median
    total, got = _chunked_medians(n_regions, region, years, chunk=5_000)
    expected = (
        pd.Series(years).groupby(region).median().reindex(range(n_regions)).to_numpy(dtype=float)
    )
    np.testing.assert_array_equal(got, expected)
    # 50 regions x ~225 years is a small table; 30,000 x ~225 x 8 B is 54 MB: the store.
    assert ("year" in total.histograms) == (n_regions == 50)
    assert ("year" in total.medians) == (n_regions == 30_000)


def test_many_regions_do_not_build_the_dense_table():
    import tracemalloc

    n_regions, n = 30_000, 40_000
    rng = np.random.default_rng(1)
    region = rng.integers(0, n_regions, n)
    years = (2024 - np.floor(rng.exponential(60, n))).clip(1800)
    tracemalloc.start()
    try:
        _chunked_medians(n_regions, region, years, chunk=10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    dense = n_regions * (int(np.nanmax(years) - np.nanmin(years)) + 1) * 8
    assert dense > 40 * 2**20  # what one chunk's histogram would take
    assert peak < dense / 4, f"traced peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("limit_spans", [0, 0.5, None])
def test_integer_medians_equal_the_stock_lookup_on_either_path(world, monkeypatch, limit_spans):  # noqa: F811
    # limit 0: every chunk goes to the store; half the full span: small chunks keep
    # histograms, merges switch to the store (mixed merges); None: histograms only.
    from reuse_app.models import Neighborhood, Tree

    n_regions = Neighborhood.objects.count()
    planted = [p for p in Tree.objects.values_list("planted", flat=True) if p is not None]
    span = max(planted) - min(planted) + 1
    limit = 2**40 if limit_spans is None else int(n_regions * 8 * span * limit_spans)
    monkeypatch.setattr(core, "HISTOGRAM_MEMORY_LIMIT", limit)
    switched = []
    real = core.Totals._to_store  # the sweep's running totals

    def counting(self, name):
        switched.append(name)
        return real(self, name)

    monkeypatch.setattr(core.Totals, "_to_store", counting)
    items = Tree.objects.all()
    aggregates = {"planted_median": ("planted", "median")}
    got = summarize_by_region(
        Neighborhood.objects.all(),
        items,
        key="name",
        aggregates=aggregates,
        strategy=Sweep(chunk_size=7, workers=0),
    )
    _compare(got, _expected(items, "location", "within", aggregates), f"limit {limit}")
    assert bool(switched) == (limit_spans is not None)
