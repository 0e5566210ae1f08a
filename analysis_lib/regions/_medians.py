"""Exact per-region medians in bounded memory: values are held up to a limit, then spilled.

An exact median of continuous values needs every value, so a store that keeps them all in
memory grows by 8 bytes per value (about 1 GB for 130 million buildings). :class:`MedianStore`
keeps the values of each :meth:`~MedianStore.add` call as a *run*, sorted by region; once the
runs held in memory pass half of ``memory_limit``, they are merged and written to a temporary
file as one region-sorted run, with its per-region offsets in an index file. Each value is
written once and read back once.

:meth:`~MedianStore.medians` knows every region's exact count, so it cuts the regions into
consecutive groups whose values fit the other half of the limit, reads each group's slice of
every run, groups the values by region (a stable radix sort of small region labels) and takes
each region's middle values, as ``np.median`` does: one padded sort per width for the regions
of up to 64 values, ``np.partition`` for larger ones. A single region with more values than a
group can hold is selected on disk instead: passes over its values narrow the wanted rank by
16 bits (8 under a limit below 16 MiB) of an order-preserving integer key at a time, then the
few values left are partitioned in memory; nothing is approximated.

Memory is therefore about ``memory_limit`` plus 8 bytes per region (the counts) and, while
:meth:`~MedianStore.add` runs, a few arrays the size of the chunk being added.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._checks import check_positive_int, check_type, fail_type, fail_value

__all__ = ["MedianStore"]

_VALUE = np.dtype(np.float64)
# Bytes per value while a group is gathered: the values read (8), region labels (up to 4),
# the stable sort's order (8) and the values grouped by region (8).
_WORK_BYTES = 28
_MIN_GROUP = 64  # values: a floor so that a tiny limit still makes progress
_SIGN = np.uint64(1 << 63)
_SMALL_REGION = 64  # regions up to this many values get their medians sorted together
_SMALL_BLOCK = 2**16  # matrix cells per block of small regions
_RUN_OVERHEAD = 400  # bytes of Python objects per run held in memory (three arrays, one object)


def _write_all(fd: int, array: np.ndarray, offset: int) -> int:
    """Write ``array``'s bytes at ``offset`` of file ``fd``; return the offset after them."""
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while len(view):
        if hasattr(os, "pwrite"):
            written = os.pwrite(fd, view, offset)
        else:  # Windows: no positional I/O (a store is single-threaded)
            os.lseek(fd, offset, os.SEEK_SET)
            written = os.write(fd, view)
        view, offset = view[written:], offset + written
    return offset


def _read_into(fd: int, out: np.ndarray, offset: int) -> None:
    """Fill ``out`` (contiguous) with the bytes of file ``fd`` at ``offset``."""
    view = memoryview(out).cast("B")
    while len(view):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view], offset)
        else:  # Windows
            os.lseek(fd, offset, os.SEEK_SET)
            chunk = os.read(fd, len(view))
            view[: len(chunk)] = chunk
            got = len(chunk)
        if got == 0:
            raise OSError(f"median spill file ended early at byte {offset}")
        view, offset = view[got:], offset + got


def _remove(files: list[Any], directory: str) -> None:
    """Close the spill files and delete their directory (also run at garbage collection)."""
    for handle in files:
        handle.close()
    shutil.rmtree(directory, ignore_errors=True)


class _SpillFile:
    """One temporary directory with a values file and an index file that runs are appended to."""

    def __init__(self, parent: str | None) -> None:
        self.directory = tempfile.mkdtemp(prefix="medians-", dir=parent)
        self._values = open(os.path.join(self.directory, "values.f8"), "w+b", buffering=0)  # noqa: SIM115
        self._index = open(os.path.join(self.directory, "index.i8"), "w+b", buffering=0)  # noqa: SIM115
        self.values_fd, self.index_fd = self._values.fileno(), self._index.fileno()
        self.values_end = self.index_end = 0
        self._finalizer = weakref.finalize(
            self, _remove, [self._values, self._index], self.directory
        )

    def close(self) -> None:
        """Close the files and delete the directory."""
        self._finalizer()


class _MemoryRun:
    """Values sorted by region, held in memory: the regions present and their offsets."""

    def __init__(self, values: np.ndarray, regions: np.ndarray, offsets: np.ndarray) -> None:
        self.values, self.regions, self.offsets = values, regions, offsets
        self.nbytes = values.nbytes + regions.nbytes + offsets.nbytes + _RUN_OVERHEAD

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Return where the values of regions ``lo..hi-1`` start and stop."""
        first, last = np.searchsorted(self.regions, (lo, hi))
        return int(self.offsets[first]), int(self.offsets[last])

    def labels(self, lo: int, hi: int, labels: np.ndarray, counts: np.ndarray) -> None:
        """Fill ``labels`` with the region (minus ``lo``) of each value of regions ``lo..hi-1``.

        Also add those regions' counts to ``counts`` (indexed from ``lo``).
        """
        first, last = np.searchsorted(self.regions, (lo, hi))
        run_counts = np.diff(self.offsets[first : last + 1])
        local = self.regions[first:last] - lo
        counts[local] += run_counts  # each region once per run
        labels[...] = np.repeat(local.astype(labels.dtype), run_counts)

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy values ``start:stop`` into ``out``."""
        out[...] = self.values[start:stop]

    def dense_counts(self, n_regions: int) -> np.ndarray:
        """Return the count of every region (pickling)."""
        counts = np.zeros(n_regions, np.int64)
        counts[self.regions] = np.diff(self.offsets)
        return counts


class _DiskRun:
    """Values sorted by region in a spill file, with every region's offset in the index file."""

    def __init__(self, spill: _SpillFile, values_at: int, index_at: int) -> None:
        self.spill, self.values_at, self.index_at = spill, values_at, index_at

    def offsets(self, lo: int, hi: int) -> np.ndarray:
        """Return the offsets of regions ``lo..hi`` (``hi - lo + 1`` values)."""
        offsets = np.empty(hi - lo + 1, np.int64)
        _read_into(self.spill.index_fd, offsets, self.index_at + 8 * lo)
        return offsets

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Return where the values of regions ``lo..hi-1`` start and stop."""
        ends = np.empty(2, np.int64)
        _read_into(self.spill.index_fd, ends[:1], self.index_at + 8 * lo)
        _read_into(self.spill.index_fd, ends[1:], self.index_at + 8 * hi)
        return int(ends[0]), int(ends[1])

    def labels(self, lo: int, hi: int, labels: np.ndarray, counts: np.ndarray) -> None:
        """Fill ``labels`` with the region (minus ``lo``) of each value of regions ``lo..hi-1``.

        Also add those regions' counts to ``counts`` (indexed from ``lo``).
        """
        run_counts = np.diff(self.offsets(lo, hi))
        counts += run_counts
        labels[...] = np.repeat(np.arange(hi - lo, dtype=labels.dtype), run_counts)

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Read values ``start:stop`` into ``out``."""
        _read_into(self.spill.values_fd, out, self.values_at + 8 * start)


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """Map float64 values to uint64 keys in the same order (negatives flipped, sign bit set)."""
    bits = values.view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _key_value(key: int) -> float:
    """Invert :func:`_sort_keys` for one key."""
    bits = key & ~(1 << 63) if key >> 63 else ~key & ((1 << 64) - 1)
    return float(np.array([bits], np.uint64).view(np.float64)[0])


def _plan_groups(counts: np.ndarray, capacity: int) -> list[tuple[int, int]]:
    """Cut regions into consecutive groups of at most ``capacity`` values (a big region alone)."""
    ends = np.cumsum(counts)
    groups, lo, base = [], 0, 0
    while lo < len(counts):
        hi = max(int(np.searchsorted(ends, base + capacity, side="right")), lo + 1)
        groups.append((lo, hi))
        base, lo = int(ends[hi - 1]), hi
    return groups


def _medians_of_grouped(values: np.ndarray, counts: np.ndarray, out: np.ndarray) -> None:
    """Write the median of each region's slice of ``values`` (grouped by region) into ``out``.

    As ``np.median``: the middle value for an odd count, the mean of the two middle values for
    an even one. Small regions (up to 64 values: most of them when regions are many) are
    sorted together, as rows of a matrix padded with +inf, one width (2, 4, ..., 64) at a time;
    larger ones are partitioned in place one by one.
    """
    ends = np.cumsum(counts)
    starts = ends - counts
    single = counts == 1
    out[single] = values[starts[single]]
    width = 1
    while width < _SMALL_REGION:
        narrower, width = width, width * 2
        rows = np.flatnonzero((counts > narrower) & (counts <= width))
        columns = np.arange(width)
        step = max(1, _SMALL_BLOCK // width)
        for first in range(0, len(rows), step):
            block = rows[first : first + step]
            count, start = counts[block], starts[block]
            matrix = values[start[:, None] + np.minimum(columns, count[:, None] - 1)]
            matrix[columns >= count[:, None]] = np.inf  # padding sorts after every value
            matrix.sort(axis=1)
            at = np.arange(len(block))
            low, high = matrix[at, (count - 1) // 2], matrix[at, count // 2]
            with np.errstate(over="ignore", invalid="ignore"):
                out[block] = np.where(count % 2 == 1, low, (low + high) / 2)
    for region in np.flatnonzero(counts > _SMALL_REGION).tolist():
        part = values[starts[region] : ends[region]]
        n = len(part)
        low, high = (n - 1) // 2, n // 2
        if low == high:
            part.partition(low)
            out[region] = part[low]
        else:
            part.partition((low, high))
            out[region] = np.mean(part[low : high + 1])


class MedianStore:
    """Exact per-region medians of float values, in memory bounded by ``memory_limit``.

    Values arrive in chunks with :meth:`add`, each value tagged with its region's position
    (``0 <= region < n_regions``); :meth:`medians` returns every region's exact median, the
    same as ``np.median`` over that region's values (NaN values are ignored; a region without
    values gets NaN). Values beyond half of ``memory_limit`` are spilled to temporary files,
    so memory stays near ``memory_limit`` (plus 8 bytes per region) whatever the number of
    values. Stores filled in parallel (threads, Dask partitions) are combined with
    :meth:`merge`; a store pickles with its values. Not thread-safe: use one store per thread.

    Parameters
    ----------
    n_regions : int
        Number of regions; positions run from 0 to ``n_regions - 1``.
    memory_limit : int, default 32 MiB
        Bytes of values (and of the working arrays of :meth:`medians`) held in memory.
    spill_dir : str or os.PathLike, optional
        An existing directory for the temporary files (default: the system's temporary
        directory, see :func:`tempfile.gettempdir`).

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``n_regions`` is negative, ``memory_limit`` is not positive or ``spill_dir`` is not
        an existing directory.

    Examples
    --------
    >>> import numpy as np
    >>> with MedianStore(3) as store:
    ...     store.add(np.array([0, 0, 2]), np.array([1.0, 4.0, 7.0]))
    ...     store.add(np.array([0]), np.array([2.0]))
    ...     store.medians()
    array([2., nan, 7.])
    """

    def __init__(
        self,
        n_regions: int,
        *,
        memory_limit: int = 32 * 2**20,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(n_regions, bool) or not isinstance(n_regions, int | np.integer):
            raise fail_type("n_regions", "a non-negative int", n_regions)
        if n_regions < 0:
            raise fail_value("n_regions", "a non-negative int", n_regions)
        check_positive_int("memory_limit", memory_limit)
        check_type(
            "spill_dir", spill_dir, (str, os.PathLike), "a str or os.PathLike", allow_none=True
        )
        if spill_dir is not None and not os.path.isdir(spill_dir):
            raise fail_value("spill_dir", "an existing directory", os.fspath(spill_dir))
        self.n_regions = int(n_regions)
        self.memory_limit = int(memory_limit)
        self.spill_dir = None if spill_dir is None else os.fspath(spill_dir)
        # Region labels inside a group: 16 bits sort by radix, wider ones by timsort.
        self._labels = np.uint16 if self.n_regions <= 2**16 else np.uint32
        self._counts = np.zeros(self.n_regions, np.int64)
        self._memory_runs: list[_MemoryRun] = []
        self._memory_bytes = 0
        self._disk_runs: list[_DiskRun] = []
        self._spills: list[_SpillFile] = []
        self._own_spill: _SpillFile | None = None
        self._closed = False

    # -- filling -----------------------------------------------------------------------------

    @property
    def counts(self) -> np.ndarray:
        """Number of (non-NaN) values added per region, as an int64 array (a copy)."""
        return self._counts.copy()

    @property
    def spilled(self) -> bool:
        """Whether some values are held in temporary files."""
        return bool(self._disk_runs)

    def add(self, region: np.ndarray, values: np.ndarray) -> None:
        """Add ``values``, each in the region at the same position of ``region``.

        Parameters
        ----------
        region : numpy.ndarray
            1-D integer array of region positions, each in ``[0, n_regions)``.
        values : numpy.ndarray
            1-D array of real numbers, as long as ``region``; NaN values are ignored.

        Raises
        ------
        TypeError
            If an array has the wrong dtype.
        ValueError
            If an array is not 1-D, the lengths differ, a position is out of range, or the
            store is closed.
        """
        self._check_open()
        region, values = self._check_chunk(region, values)
        if np.isnan(values).any():
            keep = ~np.isnan(values)
            region, values = region[keep], values[keep]
        if len(values) == 0:
            return
        order = np.argsort(region.astype(self._labels, copy=False), kind="stable")
        # The regions present and their offsets from the sorted labels: O(chunk), not
        # O(n_regions), so many regions and small chunks stay cheap.
        ordered = region[order]
        starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        present = ordered[np.r_[0, starts]]
        offsets = np.r_[0, starts, len(ordered)].astype(np.int64)
        del ordered
        self._counts[present] += np.diff(offsets)  # each region once
        self._hold(_MemoryRun(values[order], present, offsets))

    def merge(self, other: MedianStore) -> None:
        """Move ``other``'s values into this store; ``other`` is left empty (and still usable).

        Values ``other`` spilled stay in its temporary files, which this store then owns and
        deletes; nothing is copied.

        Parameters
        ----------
        other : MedianStore
            A store with the same ``n_regions``.

        Raises
        ------
        TypeError
            If ``other`` is not a MedianStore.
        ValueError
            If the region counts differ, ``other`` is this store, or either store is closed.
        """
        check_type("other", other, MedianStore, "a MedianStore")
        if other is self:
            raise fail_value("other", "a different MedianStore than this one", "the same store")
        if other.n_regions != self.n_regions:
            raise fail_value(
                "other", f"a MedianStore with n_regions={self.n_regions}", other.n_regions
            )
        self._check_open()
        other._check_open()
        self._counts += other._counts
        self._disk_runs.extend(other._disk_runs)
        self._spills.extend(other._spills)
        memory_runs = other._memory_runs
        other._reset()
        for run in memory_runs:
            self._hold(run)

    def _hold(self, run: _MemoryRun) -> None:
        """Keep ``run`` in memory, spilling the held runs once they pass half the limit."""
        self._memory_runs.append(run)
        self._memory_bytes += run.nbytes
        if self._memory_bytes > self.memory_limit // 2:
            self._spill()

    def _spill(self) -> None:
        """Write the runs held in memory as one region-sorted run; free them."""
        if not self._memory_runs:
            return
        if self._own_spill is None:
            self._own_spill = _SpillFile(self.spill_dir)
            self._spills.append(self._own_spill)
        spill = self._own_spill
        runs = self._memory_runs
        counts = np.zeros(self.n_regions, np.int64)
        for run in runs:
            counts[run.regions] += np.diff(run.offsets)
        values_at = end = spill.values_end
        for lo, hi in _plan_groups(counts, self._group_capacity()):
            if hi - lo == 1:  # one region: its slices need no grouping, whatever their size
                for run in runs:
                    start, stop = run.span(lo, hi)
                    end = _write_all(spill.values_fd, run.values[start:stop], end)
            else:
                grouped, _ = self._gather(runs, lo, hi)
                end = _write_all(spill.values_fd, grouped, end)
                del grouped  # before the next group is gathered
        offsets = np.zeros(self.n_regions + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        index_at = spill.index_end
        spill.index_end = _write_all(spill.index_fd, offsets, index_at)
        spill.values_end = end
        self._disk_runs.append(_DiskRun(spill, values_at, index_at))
        self._memory_runs, self._memory_bytes = [], 0

    # -- results -----------------------------------------------------------------------------

    def medians(self) -> np.ndarray:
        """Return the exact median of every region's values (NaN for a region without any).

        Returns
        -------
        numpy.ndarray
            float64 array of length ``n_regions``; equal to ``np.median`` of each region's
            values (the mean of the two middle values for an even count).

        Raises
        ------
        ValueError
            If the store is closed.
        """
        self._check_open()
        result = np.full(self.n_regions, np.nan)
        runs = [*self._disk_runs, *self._memory_runs]
        capacity = self._group_capacity()
        for lo, hi in _plan_groups(self._counts, capacity):
            total = int(self._counts[lo:hi].sum())
            if total == 0:
                continue
            if total > capacity:  # one region larger than a group: select on disk
                result[lo] = self._select_median(runs, lo, total, capacity)
                continue
            grouped, counts = self._gather(runs, lo, hi)
            _medians_of_grouped(grouped, counts, result[lo:hi])
        return result

    def _group_capacity(self) -> int:
        """Values per group: half the limit over the working bytes per value."""
        return max(_MIN_GROUP, self.memory_limit // 2 // _WORK_BYTES)

    def _gather(self, runs: list[Any], lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Return regions ``lo..hi-1``'s values from every run, grouped by region, and counts."""
        spans = [(run, *run.span(lo, hi)) for run in runs]
        spans = [(run, start, stop) for run, start, stop in spans if stop > start]
        values = np.empty(sum(stop - start for _, start, stop in spans), _VALUE)
        labels = np.empty(len(values), self._labels)
        counts = np.zeros(hi - lo, np.int64)
        at = 0
        for run, start, stop in spans:  # one run at a time: no per-run arrays pile up
            run.read(start, stop, values[at : at + stop - start])
            run.labels(lo, hi, labels[at : at + stop - start], counts)
            at += stop - start
        if len(spans) <= 1:  # one run's slice is already grouped by region
            return values, counts
        order = np.argsort(labels, kind="stable")
        del labels
        return values[order], counts

    def _blocks(self, runs: list[Any], region: int, capacity: int) -> Iterator[np.ndarray]:
        """Yield one region's values from every run, ``capacity`` values at a time."""
        buffer = np.empty(capacity, _VALUE)
        for run in runs:
            start, stop = run.span(region, region + 1)
            for at in range(start, stop, capacity):
                block = buffer[: min(capacity, stop - at)]
                run.read(at, at + len(block), block)
                yield block

    def _select(self, runs: list[Any], region: int, rank: int, capacity: int) -> float:
        """Return the value of 0-based ``rank`` in ``region``'s sorted values, reading blocks."""
        # Bits of the key resolved per pass: 16 (a 1 MiB histogram and its bincount) when that
        # is small next to the limit, else 8 (4 KiB), at the price of more passes.
        bits = 16 if self.memory_limit >= 16 * 2**20 else 8
        prefix, shift = 0, 64
        while True:
            shift -= bits
            histogram = np.zeros(2**bits, np.int64)
            for block in self._blocks(runs, region, capacity):
                keys = _sort_keys(block)
                if shift < 64 - bits:
                    keys = keys[(keys >> (shift + bits)) == prefix]
                histogram += np.bincount(
                    ((keys >> shift) & (2**bits - 1)).astype(np.intp), minlength=2**bits
                )
            below = np.cumsum(histogram)
            digit = int(np.searchsorted(below, rank, side="right"))
            rank -= int(below[digit - 1]) if digit else 0
            prefix = (prefix << bits) | digit
            if shift == 0:  # the whole key is known: every candidate has this value
                return _key_value(prefix)
            if histogram[digit] <= capacity:
                break
        candidates = [
            block[(_sort_keys(block) >> shift) == prefix].copy()
            for block in self._blocks(runs, region, capacity)
        ]
        left = np.concatenate(candidates)
        left.partition(rank)
        return float(left[rank])

    def _select_median(self, runs: list[Any], region: int, total: int, capacity: int) -> float:
        """Return the exact median of a region too large for one group."""
        low, high = (total - 1) // 2, total // 2
        block = max(_MIN_GROUP, capacity // 2)  # a block and its keys, within one group's room
        value = self._select(runs, region, low, block)
        if high == low:
            return value
        return float(np.mean([value, self._select(runs, region, high, block)]))

    # -- argument checks, life cycle, pickling ------------------------------------------------

    def _check_chunk(self, region: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return ``region`` as int64 and ``values`` as float64 arrays, or raise naming them."""
        region, values = np.asarray(region), np.asarray(values)
        if region.dtype.kind not in "iu":
            raise fail_type("region", f"an integer array (got dtype {region.dtype})", region)
        if values.dtype.kind not in "iuf":
            raise fail_type("values", f"a real-number array (got dtype {values.dtype})", values)
        for name, array in (("region", region), ("values", values)):
            if array.ndim != 1:
                raise fail_value(name, "a 1-D array", f"shape {array.shape}")
        if len(values) != len(region):
            raise fail_value("values", f"an array as long as `region` ({len(region)})", len(values))
        if len(region):
            low, high = int(region.min()), int(region.max())
            bad = low if low < 0 else high if high >= self.n_regions else None
            if bad is not None:
                raise fail_value("region", f"positions in [0, {self.n_regions})", bad)
        return region.astype(np.int64, copy=False), values.astype(_VALUE, copy=False)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this MedianStore is closed")

    def _reset(self) -> None:
        """Forget every value (the spill files now belong to another store or are deleted)."""
        self._counts = np.zeros(self.n_regions, np.int64)
        self._memory_runs, self._memory_bytes = [], 0
        self._disk_runs, self._spills, self._own_spill = [], [], None

    def close(self) -> None:
        """Drop every value and delete the temporary files; the store cannot be used again."""
        for spill in self._spills:
            spill.close()
        self._reset()
        self._closed = True

    def __enter__(self) -> MedianStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        self._check_open()
        runs = []
        for run in [*self._disk_runs, *self._memory_runs]:
            if isinstance(run, _DiskRun):
                offsets = run.offsets(0, self.n_regions)
                counts, start, stop = np.diff(offsets), int(offsets[0]), int(offsets[-1])
                values = np.empty(stop - start, _VALUE)
                run.read(start, stop, values)
            else:
                counts, values = run.dense_counts(self.n_regions), run.values
            runs.append((counts, values))
        return {
            "n_regions": self.n_regions,
            "memory_limit": self.memory_limit,
            "spill_dir": self.spill_dir,
            "runs": runs,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        spill_dir = state["spill_dir"]
        if spill_dir is not None and not os.path.isdir(spill_dir):
            spill_dir = None  # unpickled on another machine: use its temporary directory
        self.__init__(state["n_regions"], memory_limit=state["memory_limit"], spill_dir=spill_dir)
        for counts, values in state["runs"]:
            present = np.flatnonzero(counts)
            offsets = np.zeros(len(present) + 1, np.int64)
            np.cumsum(counts[present], out=offsets[1:])
            self._counts += counts
            self._hold(_MemoryRun(values, present, offsets))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{int(self._counts.sum())} values"
        spilled = f", {len(self._disk_runs)} runs spilled" if self._disk_runs else ""
        return f"<MedianStore {self.n_regions} regions, {state}{spilled}>"
