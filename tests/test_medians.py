"""MedianStore: exact per-region medians, equal to np.median whatever the chunking and spilling."""

import gc
import os
import pickle

import numpy as np
import pytest

from analysis_lib.regions._medians import MedianStore

NAN = np.nan
LIMITS = [1024, 4096, 64 * 1024, 32 * 2**20]  # 1 KiB spills at almost every add


def expected_medians(region, values, n_regions):
    """np.median of each region's non-NaN values, NaN for none: the reference."""
    region, values = np.asarray(region), np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    out = np.full(n_regions, np.nan)
    for r in range(n_regions):
        picked = values[keep & (region == r)]
        if len(picked):
            out[r] = np.median(picked)
    return out


def fill(store, region, values, chunk):
    for at in range(0, len(values), chunk):
        store.add(region[at : at + chunk], values[at : at + chunk])


CASES = [
    # (name, n_regions, region, values, expected medians)
    ("empty store", 3, [], [], [NAN, NAN, NAN]),
    ("one region, one value", 1, [0], [2.5], [2.5]),
    ("odd count", 1, [0, 0, 0], [3.0, 1.0, 2.0], [2.0]),
    ("even count: mean of the middle two", 1, [0, 0, 0, 0], [4.0, 1.0, 3.0, 2.0], [2.5]),
    ("all NaN", 2, [0, 0, 1], [NAN, NAN, 5.0], [NAN, 5.0]),
    ("NaN ignored in the count", 1, [0, 0, 0], [1.0, NAN, 3.0], [2.0]),
    ("duplicates", 1, [0] * 5, [7.0, 7.0, 1.0, 7.0, 9.0], [7.0]),
    ("negative values", 1, [0] * 4, [-3.0, -1.0, -10.0, 2.0], [-2.0]),
    ("regions never touched", 5, [1, 3, 3], [1.0, 2.0, 4.0], [NAN, 1.0, NAN, 3.0, NAN]),
    ("integer values", 2, [0, 0, 1], [1, 2, 5], [1.5, 5.0]),
    ("infinities", 1, [0, 0, 0], [-np.inf, 1.0, np.inf], [1.0]),
    ("-inf and inf, even count", 1, [0, 0], [np.inf, -np.inf], [NAN]),
    ("huge values, odd count: no overflow", 1, [0, 0, 0], [1e308, 1e308, 1e308], [1e308]),
    ("huge values, even count: overflows as np.median", 1, [0, 0], [1e308, 1e308], [np.inf]),
    (
        "a region of 65 values next to small ones",
        3,
        [0] * 65 + [1, 1, 2],
        [*range(65), 5, 6, 7],
        [32, 5.5, 7],
    ),
]


@pytest.mark.parametrize(
    ("name", "n_regions", "region", "values", "expected"), CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("memory_limit", [1024, 32 * 2**20])
def test_table_of_cases(name, n_regions, region, values, expected, memory_limit):
    region = np.array(region, dtype=np.int64)
    values = np.array(values)
    with MedianStore(n_regions, memory_limit=memory_limit) as store:
        store.add(region, values)
        result = store.medians()
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, np.array(expected, dtype=float))
    with np.errstate(over="ignore", invalid="ignore"):
        reference = expected_medians(region, values, n_regions)
    np.testing.assert_array_equal(result, reference)


def random_data(seed, n, n_regions, *, skew=False):
    rng = np.random.default_rng(seed)
    if skew:  # most values in region 0: a region larger than a group
        region = np.where(rng.random(n) < 0.8, 0, rng.integers(0, n_regions, n))
    else:
        region = rng.integers(0, n_regions, n)
    values = np.round(rng.lognormal(4, 1.5, n), 1) * rng.choice([-1, 1], n)  # ties, both signs
    values[rng.random(n) < 0.05] = np.nan
    values[rng.random(n) < 0.02] = 0.0
    return region.astype(np.int64), values


@pytest.mark.parametrize("memory_limit", LIMITS)
@pytest.mark.parametrize("chunk", [1, 7, 250, 10_000])
@pytest.mark.parametrize(("n_regions", "skew"), [(1, False), (13, False), (300, False), (13, True)])
def test_random_data_equals_numpy(memory_limit, chunk, n_regions, skew):
    if chunk == 1 and memory_limit == 1024 and n_regions == 300:
        pytest.skip("a spill per value over 300 regions: slow, covered by the other chunkings")
    region, values = random_data(chunk * 31 + n_regions, 4_000, n_regions, skew=skew)
    with MedianStore(n_regions, memory_limit=memory_limit) as store:
        fill(store, region, values, chunk)
        if memory_limit <= 4096:
            assert store.spilled
        elif memory_limit == 32 * 2**20:
            assert not store.spilled
        result = store.medians()
        again = store.medians()  # medians() does not consume the store
    expected = expected_medians(region, values, n_regions)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(again, expected)


def test_one_huge_region_on_disk_uses_the_selection_passes():
    # 60,000 values in one region with a 1 KiB limit: about 1,000 times a group's room.
    rng = np.random.default_rng(5)
    values = rng.normal(size=60_000)
    values[::7] = values[3]  # many exact ties around arbitrary ranks
    region = np.zeros(len(values), np.int64)
    for n in (len(values), len(values) - 1):  # even and odd counts
        with MedianStore(1, memory_limit=1024) as store:
            fill(store, region[:n], values[:n], 4_096)
            assert store.spilled
            assert store.medians()[0] == np.median(values[:n])


def test_counts_follow_the_values():
    region, values = random_data(3, 1_000, 9)
    with MedianStore(9, memory_limit=1024) as store:
        fill(store, region, values, 100)
        keep = ~np.isnan(values)
        np.testing.assert_array_equal(store.counts, np.bincount(region[keep], minlength=9))


@pytest.mark.parametrize("memory_limit", [1024, 32 * 2**20])
def test_merge_equals_one_store(memory_limit):
    region, values = random_data(11, 6_000, 40)
    with (
        MedianStore(40, memory_limit=memory_limit) as left,
        MedianStore(40, memory_limit=memory_limit) as right,
    ):
        fill(left, region[:2_500], values[:2_500], 300)
        fill(right, region[2_500:], values[2_500:], 300)
        assert left.spilled == right.spilled == (memory_limit == 1024)
        spill_dirs = {spill.directory for spill in right._spills}
        left.merge(right)
        np.testing.assert_array_equal(left.medians(), expected_medians(region, values, 40))
        # right is left empty and usable; its spill files now belong to left.
        np.testing.assert_array_equal(right.medians(), np.full(40, np.nan))
        right.add(np.array([1]), np.array([3.0]))
        assert right.medians()[1] == 3.0
        assert all(os.path.isdir(d) for d in spill_dirs)
    assert not any(os.path.exists(d) for d in spill_dirs)  # deleted when left closed


def test_merge_many_partials_then_add_more():
    region, values = random_data(12, 5_000, 25)
    with MedianStore(25, memory_limit=2048) as total:
        for at in range(0, 4_000, 1_000):
            part = MedianStore(25, memory_limit=2048)
            fill(part, region[at : at + 1_000], values[at : at + 1_000], 128)
            total.merge(part)
        fill(total, region[4_000:], values[4_000:], 128)
        np.testing.assert_array_equal(total.medians(), expected_medians(region, values, 25))


@pytest.mark.parametrize("memory_limit", [1024, 32 * 2**20])
def test_pickle_round_trip_carries_the_values(memory_limit, tmp_path):
    region, values = random_data(13, 3_000, 17)
    with MedianStore(17, memory_limit=memory_limit, spill_dir=tmp_path) as store:
        fill(store, region, values, 500)
        payload = pickle.dumps(store)
    # The original's files are gone; the copy holds (or re-spills) the values itself.
    assert list(tmp_path.iterdir()) == []
    with pickle.loads(payload) as copy:
        assert copy.spilled == (memory_limit == 1024)
        np.testing.assert_array_equal(copy.medians(), expected_medians(region, values, 17))
        np.testing.assert_array_equal(
            copy.counts, np.bincount(region[~np.isnan(values)], minlength=17)
        )


def test_pickle_from_another_machine_falls_back_to_the_temp_dir(tmp_path):
    spill_dir = tmp_path / "gone"
    spill_dir.mkdir()
    store = MedianStore(2, memory_limit=1024, spill_dir=spill_dir)
    store.add(np.array([0, 1, 1]), np.array([1.0, 2.0, 4.0]))
    payload = pickle.dumps(store)
    store.close()
    spill_dir.rmdir()
    with pickle.loads(payload) as copy:
        assert copy.spill_dir is None
        np.testing.assert_array_equal(copy.medians(), [1.0, 3.0])


def test_temp_files_are_deleted_on_close_and_on_garbage_collection(tmp_path):
    region, values = random_data(14, 2_000, 5)
    store = MedianStore(5, memory_limit=1024, spill_dir=tmp_path)
    fill(store, region, values, 200)
    assert store.spilled and len(list(tmp_path.iterdir())) == 1
    store.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        store.medians()
    with pytest.raises(ValueError, match="closed"):
        store.add(np.array([0]), np.array([1.0]))

    store = MedianStore(5, memory_limit=1024, spill_dir=tmp_path)
    fill(store, region, values, 200)
    assert list(tmp_path.iterdir())
    del store
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_nothing_is_written_under_the_limit(tmp_path):
    region, values = random_data(15, 2_000, 5)
    with MedianStore(5, spill_dir=tmp_path) as store:
        fill(store, region, values, 200)
        assert not store.spilled
        assert list(tmp_path.iterdir()) == []


def test_memory_stays_bounded_while_values_grow():
    # tracemalloc, relative: 10x the values must not raise the store's peak 10x.
    import tracemalloc

    def peak(n):
        region, values = random_data(16, n, 50)
        tracemalloc.start()
        with MedianStore(50, memory_limit=256 * 1024) as store:
            fill(store, region, values, 5_000)
            store.medians()
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    small, large = peak(60_000), peak(600_000)
    assert large < small * 1.3, (small, large)
    assert large < 3 * 256 * 1024  # the limit plus chunk-sized temporaries


BAD_INIT = [
    ({"n_regions": 2.0}, TypeError, "`n_regions` must be a non-negative int; got 2.0 (float)"),
    ({"n_regions": True}, TypeError, "`n_regions` must be a non-negative int; got True"),
    ({"n_regions": -1}, ValueError, "`n_regions` must be a non-negative int; got -1"),
    ({"n_regions": 2, "memory_limit": 0}, ValueError, "`memory_limit` must be a positive int"),
    ({"n_regions": 2, "memory_limit": 1.5}, TypeError, "`memory_limit` must be a positive int"),
    ({"n_regions": 2, "spill_dir": 3}, TypeError, "`spill_dir` must be a str or os.PathLike"),
    (
        {"n_regions": 2, "spill_dir": "/no/such/dir"},
        ValueError,
        "`spill_dir` must be an existing directory; got '/no/such/dir'",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_INIT)
def test_bad_constructor_arguments(kwargs, error, message):
    n_regions = kwargs.pop("n_regions")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        MedianStore(n_regions, **kwargs)


BAD_ADD = [
    (np.array([0.0, 1.0]), np.array([1.0, 2.0]), TypeError, "`region` must be an integer array"),
    (np.array([0, 1]), np.array(["a", "b"]), TypeError, "`values` must be a real-number array"),
    (np.array([0, 1]), np.array([1 + 2j, 2]), TypeError, "`values` must be a real-number array"),
    (np.array([0, 1]), np.array([True, False]), TypeError, "`values` must be a real-number"),
    (np.array([[0, 1]]), np.array([1.0, 2.0]), ValueError, "`region` must be a 1-D array"),
    (
        np.array([0, 1]),
        np.array([1.0]),
        ValueError,
        r"`values` must be an array as long as `region` \(2\); got 1",
    ),
    (
        np.array([0, 3]),
        np.array([1.0, 2.0]),
        ValueError,
        r"`region` must be positions in \[0, 3\); got 3",
    ),
    (
        np.array([-1, 0]),
        np.array([1.0, 2.0]),
        ValueError,
        r"`region` must be positions in \[0, 3\); got -1",
    ),
]


@pytest.mark.parametrize(("region", "values", "error", "message"), BAD_ADD)
def test_bad_add_arguments(region, values, error, message):
    with MedianStore(3) as store:
        with pytest.raises(error, match=message):
            store.add(region, values)
        assert store.counts.sum() == 0  # a refused chunk adds nothing


def test_bad_merge_arguments():
    with MedianStore(3) as store, MedianStore(4) as other:
        with pytest.raises(TypeError, match="`other` must be a MedianStore"):
            store.merge([1.0])
        with pytest.raises(
            ValueError, match="`other` must be a MedianStore with n_regions=3; got 4"
        ):
            store.merge(other)
        with pytest.raises(ValueError, match="a different MedianStore"):
            store.merge(store)


def test_one_region_larger_than_a_group_at_the_default_sized_limits():
    # 16 MiB holds about 300,000 values per group: 1,200,000 in one region take the
    # selection passes with 16-bit digits (the 1 KiB tests use 8-bit ones).
    rng = np.random.default_rng(6)
    values = rng.lognormal(4, 1, 1_200_000)
    with MedianStore(2, memory_limit=16 * 2**20) as store:
        fill(store, np.zeros(len(values), np.int64), values, 100_000)
        store.add(np.array([1]), np.array([2.0]))
        assert store.spilled
        np.testing.assert_array_equal(store.medians(), [np.median(values), 2.0])


def test_spill_files_work_without_positional_io(monkeypatch):
    # Windows has no os.pwrite/os.preadv: the store falls back to lseek + read/write.
    monkeypatch.delattr(os, "pwrite")
    monkeypatch.delattr(os, "preadv")
    region, values = random_data(17, 3_000, 7)
    with MedianStore(7, memory_limit=1024) as store:
        fill(store, region, values, 250)
        assert store.spilled
        np.testing.assert_array_equal(store.medians(), expected_medians(region, values, 7))


def test_every_region_size_up_to_past_the_small_region_sort():
    # Region r holds r values (0..70): every width of the padded small-region sort, both
    # parities, and the partition path beyond 64, all in one group.
    rng = np.random.default_rng(18)
    region = np.repeat(np.arange(71), np.arange(71))
    values = np.round(rng.normal(size=len(region)), 1)  # ties
    order = rng.permutation(len(region))
    region, values = region[order], values[order]
    with MedianStore(71) as store:
        fill(store, region, values, 500)
        np.testing.assert_array_equal(store.medians(), expected_medians(region, values, 71))
