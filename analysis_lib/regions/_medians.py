"""Exact per-region medians of a float column, merged across chunks (and Dask partitions).

One small class, :class:`MedianStore`, so that a bounded-memory store (spilling to disk) can
replace it without touching the strategies. This one keeps every value: one float64 array per
added chunk, sorted by region, with that chunk's per-region counts (a few arrays per chunk,
never one per region and chunk). An exact median of continuous values needs them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["MedianStore"]


class MedianStore:
    """Values per region, for exact medians.

    Parameters
    ----------
    n_regions : int
        Number of regions; region positions run from 0 to ``n_regions - 1``.

    Examples
    --------
    >>> import numpy as np
    >>> store = MedianStore(2)
    >>> store.add(np.array([0, 0, 1]), np.array([1.0, 3.0, np.nan]))
    >>> store.medians().tolist()
    [2.0, nan]
    """

    def __init__(self, n_regions: int) -> None:
        self.n_regions = int(n_regions)
        self._values: list[np.ndarray] = []  # per chunk: values sorted by region position
        self._counts: list[np.ndarray] = []  # per chunk: how many values each region has

    def add(self, region_idx: np.ndarray, values: np.ndarray) -> None:
        """Add ``values[i]`` to region ``region_idx[i]``; NaN values are ignored."""
        import numpy as np

        region_idx = np.asarray(region_idx, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        keep = ~np.isnan(values)
        if not keep.all():
            region_idx, values = region_idx[keep], values[keep]
        if len(values) == 0:
            return
        order = np.argsort(region_idx, kind="stable")
        self._values.append(values[order])
        self._counts.append(np.bincount(region_idx, minlength=self.n_regions).astype(np.int32))

    def merge(self, other: MedianStore) -> None:
        """Add every value of ``other`` (a store over the same regions) to this one."""
        if other.n_regions != self.n_regions:
            raise ValueError(f"`other` must have {self.n_regions} regions; got {other.n_regions}")
        self._values.extend(other._values)
        self._counts.extend(other._counts)

    def medians(self) -> np.ndarray:
        """Exact median per region (the mean of the middle two for an even count); NaN if none."""
        import numpy as np

        result = np.full(self.n_regions, np.nan)
        if not self._values:
            return result
        counts = np.stack(self._counts)  # (chunks, regions)
        ends = np.cumsum(counts, axis=1)
        for pos in np.flatnonzero(counts.sum(axis=0)):
            chunks = np.flatnonzero(counts[:, pos])
            values = np.concatenate(
                [self._values[c][ends[c, pos] - counts[c, pos] : ends[c, pos]] for c in chunks]
            )
            result[pos] = np.median(values)
        return result
