"""MedianStore: exact per-region medians, merged across chunks, in a few arrays per chunk."""

import pickle
import tracemalloc

import numpy as np
import pytest

from analysis_lib.regions._medians import MedianStore


def test_medians_are_exact_and_held_in_a_few_arrays_per_chunk():
    # 60 chunks of 1,000 values over 500 regions: one small array per region and chunk (about
    # 26,000) would cost several times the 480 kB of values; the store stays within twice that.
    rng = np.random.default_rng(4)
    n_regions, rows, chunks = 500, 1000, 60
    values = [rng.lognormal(5, 1, rows) for _ in range(chunks)]
    regions = [rng.integers(0, n_regions - 1, rows) for _ in range(chunks)]  # last one empty
    tracemalloc.start()
    try:
        total = MedianStore(n_regions)
        for idx, vals in zip(regions, values, strict=True):
            part = MedianStore(n_regions)
            part.add(idx, vals)
            total.merge(part)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * chunks * rows * 8
    medians = total.medians()
    all_values, all_regions = np.concatenate(values), np.concatenate(regions)
    expected = [np.median(all_values[all_regions == r]) for r in range(n_regions - 1)]
    assert medians[:-1].tolist() == expected  # exact, not approximately
    assert np.isnan(medians[-1])


def test_nan_is_ignored_even_count_averages_and_pickles():
    store = MedianStore(3)
    store.add(np.array([0, 0, 1, 1, 1]), np.array([1.0, 4.0, np.nan, 2.0, np.nan]))
    store.add(np.array([0], dtype=np.int64), np.array([10.0]))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.medians().tolist()[:2] == [4.0, 2.0]
    assert np.isnan(copy.medians()[2])
    store.add(np.array([], dtype=np.int64), np.array([]))
    assert store.medians().tolist()[:2] == [4.0, 2.0]


def test_merge_refuses_a_store_over_other_regions():
    with pytest.raises(ValueError, match="`other` must have 3 regions; got 2"):
        MedianStore(3).merge(MedianStore(2))
