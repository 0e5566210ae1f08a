"""A loop over time: RSS, the live heap and Arrow's memory per iteration; which lines hold memory.

:class:`Tracker` (and :func:`track`) answer "is this loop leaking?" with tracemalloc's live
heap plus, where pyarrow is imported, Arrow's allocated bytes: RSS is the allocator's
high-water mark and rarely goes down, so it cannot tell. :func:`top_allocations` says
which lines hold the live heap.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from .._checks import check_choice, check_positive_int, check_type, fail_value
from ._backend import MIB, ZERO, arrow_allocated_mib, rss_mib

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd
    from matplotlib.axes import Axes

T = TypeVar("T")

_TRACK_COLUMNS = [
    "iteration",
    "label",
    "rss_mib",
    "heap_current_mib",
    "heap_peak_mib",
    "arrow_mib",
    "seconds",
]

# --- a loop over time: RSS and the live heap per iteration ---------------------------------


@dataclasses.dataclass(frozen=True)
class HeapTrend:
    """Straight-line fit of tracemalloc's current size over the later iterations of a loop.

    Attributes
    ----------
    first_iteration, last_iteration : int
        The window the line was fitted on.
    slope_mib : float
        MiB gained per iteration along the line.
    growth_mib : float
        ``slope_mib`` times the number of steps in the window.
    t_value : float
        Slope over its standard error (``inf`` when the points lie on the line).
    """

    first_iteration: int
    last_iteration: int
    slope_mib: float
    growth_mib: float
    t_value: float


class Tracker(Generic[T]):
    """Wrap a loop and record, per iteration, RSS, tracemalloc's current and peak size, Arrow's.

    Iterate over it as over the wrapped iterable. Before the first item it
    records a baseline row (iteration 0); after each iteration's body it records
    ``iteration, label, rss_mib, heap_current_mib, heap_peak_mib, arrow_mib, seconds``
    (``heap_peak_mib`` is the peak *within* that iteration, ``seconds`` its
    duration; the heap columns leave out the memory of the recorded rows
    themselves). ``arrow_mib`` is what pyarrow's memory pool holds
    (``pyarrow.total_allocated_bytes()``): Arrow buffers such as pandas 3's ``str``
    columns, which tracemalloc does not see; 0.0 while pyarrow is not imported (it is
    never imported to ask). The leak verdict (:meth:`grew`) looks at heap plus Arrow.
    It starts tracemalloc if it is not running and stops it afterwards only if it
    started it; it resets tracemalloc's peak at each iteration.
    tracemalloc slows allocation-heavy code down (often 2x or more): this is an
    instrument, not something to leave on.

    Parameters
    ----------
    iterable : iterable
        The loop's items.
    label : str
        Name of the loop, shown in the frame, the progress bar and the plot.
    progress : bool
        Show a tqdm progress bar with the current RSS and live heap.
    total : int, optional
        Length for the progress bar when ``iterable`` has no ``len``.

    Examples
    --------
    >>> kept = []
    >>> loop = Tracker(range(5), label="keeps")
    >>> for i in loop:
    ...     kept.append(bytearray(2 * 2**20))
    >>> loop.frame["iteration"].tolist(), loop.grew()
    ([0, 1, 2, 3, 4, 5], True)
    """

    def __init__(
        self,
        iterable: Iterable[T],
        label: str = "loop",
        *,
        progress: bool = False,
        total: int | None = None,
    ) -> None:
        self._iterable = iterable
        self.label = str(label)
        self.progress = bool(progress)
        self.total = total
        self._rows: list[tuple[float, float, float, float, float]] = []
        self._own_bytes = 0
        self._started = False

    def __repr__(self) -> str:
        return f"Tracker({self.label!r}, {max(len(self._rows) - 1, 0)} iterations recorded)"

    def _record(self, start: float | None, bar: Any = None) -> None:
        current, peak = tracemalloc.get_traced_memory()
        seconds = ZERO if start is None else time.perf_counter() - start
        own = self._own_bytes
        row = (
            rss_mib(),
            (current - own) / MIB,
            (peak - own) / MIB,
            arrow_allocated_mib(),
            seconds,
        )
        list_size = sys.getsizeof(self._rows)
        self._rows.append(row)
        # The recorded rows live on the traced heap too: subtract what they hold (the
        # tuple, its floats, the list's growth), or a long loop with an empty body
        # "grows". A row's iteration is its position: no int is kept per row. The
        # constant 0.0 (no Arrow, the baseline's seconds) is shared, not allocated.
        self._own_bytes = (
            own
            + sys.getsizeof(row)
            + sum(sys.getsizeof(value) for value in row if value is not ZERO)
            + sys.getsizeof(self._rows)
            - list_size
        )
        if bar is not None:
            extra = {"arrow": f"{row[3]:.1f}MiB"} if row[3] else {}
            bar.set_postfix(rss=f"{row[0]:.0f}MiB", heap=f"{row[1]:.1f}MiB", **extra, refresh=False)

    def __iter__(self) -> Iterator[T]:
        if self._started:
            raise RuntimeError(
                f"Tracker {self.label!r} was already iterated; call track() again for a new loop"
            )
        self._started = True
        started_tracing = not tracemalloc.is_tracing()
        if started_tracing:
            tracemalloc.start()
        bar = None
        items: Iterable[T] = self._iterable
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(self._iterable, total=self.total, desc=self.label)
            items = bar
        start = None
        try:
            tracemalloc.reset_peak()
            self._record(None)
            for item in items:
                tracemalloc.reset_peak()
                start = time.perf_counter()
                yield item
                self._record(start, bar)
                start = None
        finally:
            # A `break` in the loop body closes this generator at the `yield`:
            # that iteration ran but is not recorded yet.
            if start is not None:
                self._record(start)
            if started_tracing:
                tracemalloc.stop()
            if bar is not None:
                bar.close()

    @property
    def frame(self) -> pd.DataFrame:
        """The recorded rows: iteration 0 is the baseline before the loop.

        Returns
        -------
        pandas.DataFrame
            Columns ``iteration, label, rss_mib, heap_current_mib, heap_peak_mib,
            arrow_mib, seconds``.
        """
        import pandas as pd

        frame = pd.DataFrame(self._rows, columns=_TRACK_COLUMNS[2:])
        frame.insert(0, "iteration", range(len(frame)))
        frame.insert(1, "label", self.label)
        return frame

    def heap_trend(self, tail: float = 0.5) -> HeapTrend:
        """Fit a line to the live heap plus Arrow over the last ``tail`` fraction of iterations.

        The first iterations often warm caches and imports up, so only the later
        part of the loop is used (at least 3 iterations).

        Parameters
        ----------
        tail : float
            Fraction of the iterations, counted from the end, in (0, 1].

        Returns
        -------
        HeapTrend
            The slope (MiB per iteration), the growth over the window and the
            slope's t value.

        Raises
        ------
        TypeError
            If ``tail`` is not a number.
        ValueError
            If ``tail`` is out of range or fewer than 3 iterations were recorded.

        Examples
        --------
        >>> loop = Tracker(range(4))
        >>> for _ in loop:
        ...     pass
        >>> abs(loop.heap_trend().growth_mib) < 0.1
        True
        """
        import numpy as np

        check_type("tail", tail, (int, float), "a number in (0, 1]")
        if not 0 < tail <= 1:
            raise fail_value("tail", "a number in (0, 1]", tail)
        n = len(self._rows) - 1  # row 0 is the baseline
        if n < 3:
            raise ValueError(
                f"Tracker {self.label!r}: need at least 3 recorded iterations to fit a trend, "
                f"got {max(n, 0)}"
            )
        first = n + 1 - max(3, math.ceil(n * tail))
        x = np.arange(first, n + 1, dtype=float)
        # the live heap plus Arrow's pool: both are memory the program still holds
        y = np.array([row[1] + row[3] for row in self._rows[first:]], dtype=float)
        slope, intercept = np.polyfit(x, y, 1)
        residuals = y - (slope * x + intercept)
        sxx = float(((x - x.mean()) ** 2).sum())
        scatter = float((residuals**2).sum()) / (len(x) - 2)  # len(x) >= 3
        stderr = math.sqrt(scatter / sxx) if sxx > 0 else math.inf
        # points exactly on the line: the slope's sign is certain
        on_line = math.copysign(math.inf, slope) if slope else 0.0
        t_value = slope / stderr if stderr > 0 else on_line
        return HeapTrend(
            first_iteration=int(x[0]),
            last_iteration=int(x[-1]),
            slope_mib=float(slope),
            growth_mib=float(slope * (x[-1] - x[0])),
            t_value=float(t_value),
        )

    def grew(self, tail: float = 0.5, min_mib: float = 1.0, min_t: float = 3.0) -> bool:
        """Say whether the live heap plus Arrow's memory kept growing: a real leak.

        The verdict uses tracemalloc's current size plus pyarrow's allocated bytes
        (``arrow_mib``), not RSS: RSS stays high after a big iteration even when
        everything was freed, and tracemalloc alone misses Arrow buffers. It fits a line to the heap
        over the later iterations (:meth:`heap_trend`) and says "grew" when the
        line rises by more than ``min_mib`` over that window *and* the rise
        stands out from the scatter around the line (slope over its standard
        error above ``min_t``), so per-iteration size differences (a big ZIP
        code, then a small one) are not called a leak.

        Parameters
        ----------
        tail : float
            Fraction of the iterations, counted from the end, that the line is fitted on.
        min_mib : float
            Smallest growth over the window that counts.
        min_t : float
            Smallest slope-to-standard-error ratio that counts.

        Returns
        -------
        bool
            True if the live heap plus Arrow grew.

        Raises
        ------
        TypeError
            If an argument is not a number.
        ValueError
            If fewer than 3 iterations were recorded or an argument is out of range.

        Examples
        --------
        >>> loop = Tracker(range(6))
        >>> for _ in loop:
        ...     scratch = bytearray(4 * 2**20)
        >>> loop.grew()
        False
        """
        for name, value in (("min_mib", min_mib), ("min_t", min_t)):
            check_type(name, value, (int, float), "a number >= 0")
            if not value >= 0:
                raise fail_value(name, "a number >= 0", value)
        trend = self.heap_trend(tail)
        return trend.growth_mib > min_mib and trend.t_value > min_t

    def plot(self, ax: Axes | None = None, *, relative: bool = True) -> Axes:
        """Plot RSS, tracemalloc's current size (and per-iteration peak), Arrow, per iteration.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw on; a new figure is made when omitted.
        relative : bool
            Plot each line as the change since the baseline row (default), so
            that RSS and the live heap share one scale; absolute MiB otherwise.

        Returns
        -------
        matplotlib.axes.Axes
            The axes, with lines labelled ``RSS``, ``live heap (tracemalloc)``,
            ``heap peak in iteration`` and, when pyarrow held memory during the loop,
            ``Arrow (pyarrow pool)``. A new figure uses a constrained layout, so
            ``savefig`` keeps the axis labels.

        Examples
        --------
        >>> loop = Tracker(range(3))
        >>> for _ in loop:
        ...     pass
        >>> [line.get_label() for line in loop.plot().get_lines()][:2]
        ['RSS', 'live heap (tracemalloc)']
        """
        import matplotlib.pyplot as plt

        frame = self.frame
        if ax is None:
            # constrained: the x label stays inside a saved PNG (a tight 3.5-inch figure cut it)
            _, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
        rss = frame["rss_mib"]
        current = frame["heap_current_mib"]
        peak = frame["heap_peak_mib"]
        arrow = frame["arrow_mib"]
        has_arrow = bool(arrow.any())
        if relative and len(frame):
            rss = rss - rss.iloc[0]
            peak = peak - current.iloc[0]
            current = current - current.iloc[0]
            arrow = arrow - arrow.iloc[0]
        ax.plot(frame["iteration"], rss, marker="o", markersize=3, label="RSS")
        ax.plot(
            frame["iteration"], current, marker="o", markersize=3, label="live heap (tracemalloc)"
        )
        ax.plot(
            frame["iteration"], peak, linestyle="--", linewidth=1, label="heap peak in iteration"
        )
        if has_arrow:
            ax.plot(
                frame["iteration"], arrow, marker="s", markersize=3, label="Arrow (pyarrow pool)"
            )
        ax.set_xlabel("iteration")
        ax.set_ylabel("MiB above the start" if relative else "MiB")
        title = self.label
        if len(frame) - 1 >= 3:
            held = "live heap + Arrow" if has_arrow else "live heap"
            title += f": {held} grows" if self.grew() else f": {held} flat"
        ax.set_title(title)
        ax.legend()
        return ax


def track(
    iterable: Iterable[T],
    label: str = "loop",
    *,
    progress: bool = False,
    total: int | None = None,
) -> Tracker[T]:
    """Wrap a loop to record RSS and the live heap per iteration; see :class:`Tracker`.

    Parameters
    ----------
    iterable : iterable
        The loop's items.
    label : str
        Name of the loop.
    progress : bool
        Show a tqdm progress bar.
    total : int, optional
        Length for the progress bar when ``iterable`` has no ``len``.

    Returns
    -------
    Tracker
        Iterate over it; afterwards read ``.frame``, call ``.plot()`` and ``.grew()``.

    Examples
    --------
    >>> loop = track(range(5), label="drops")
    >>> for i in loop:
    ...     important = [object() for _ in range(10_000)]
    ...     important = None
    >>> len(loop.frame), loop.grew()
    (6, False)
    """
    return Tracker(iterable, label, progress=progress, total=total)


# --- which lines hold the memory ------------------------------------------------------------

_HIDDEN_FRAMES = (
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    "<unknown>",
)
_KEYS = ("lineno", "filename", "traceback")


def _short_path(filename: str) -> str:
    return os.sep.join(filename.split(os.sep)[-2:])


def top_allocations(
    snapshot: tracemalloc.Snapshot | None = None,
    limit: int = 10,
    key: Literal["lineno", "filename", "traceback"] = "lineno",
    *,
    print_report: bool = False,
) -> pd.DataFrame:
    """Return the lines (or files) that hold the most live memory, as a DataFrame.

    The classic ``display_top`` recipe of the tracemalloc documentation, as
    data: frames from ``<frozen importlib._bootstrap>``,
    ``<frozen importlib._bootstrap_external>`` and ``<unknown>`` are filtered out.

    Parameters
    ----------
    snapshot : tracemalloc.Snapshot, optional
        A snapshot to read; by default one is taken now (tracemalloc must be tracing).
    limit : int
        Number of rows.
    key : {"lineno", "filename", "traceback"}
        How to group allocations, as in ``Snapshot.statistics``.
    print_report : bool
        Also print the recipe's readable report (with the "other" and total lines).

    Returns
    -------
    pandas.DataFrame
        Columns ``rank, file, lineno, size_kib, count, line, path, stack``, largest
        first; ``file`` is the last two parts of ``path``, ``line`` the source text,
        ``stack`` the frames from oldest to newest (one unless tracemalloc keeps
        more). ``attrs`` holds ``other_count``, ``other_kib`` and ``total_kib``.

    Raises
    ------
    TypeError
        If ``limit`` is not an int.
    ValueError
        If ``key`` is not one of the choices or ``limit`` is below 1.
    RuntimeError
        If no snapshot is given and tracemalloc is not tracing.

    Examples
    --------
    >>> import tracemalloc
    >>> tracemalloc.start()
    >>> blocks = [bytearray(1024) for _ in range(5000)]
    >>> top = top_allocations(limit=3)
    >>> tracemalloc.stop()
    >>> int(top.loc[0, "size_kib"]) >= 5000
    True
    """
    import linecache

    import pandas as pd

    check_choice("key", key, _KEYS)
    check_positive_int("limit", limit)
    if snapshot is None:
        if not tracemalloc.is_tracing():
            raise RuntimeError(
                "tracemalloc is not tracing: call tracemalloc.start() before the code to "
                "inspect, or pass a snapshot"
            )
        snapshot = tracemalloc.take_snapshot()
    snapshot = snapshot.filter_traces(
        [tracemalloc.Filter(False, pattern) for pattern in _HIDDEN_FRAMES]
    )
    stats = snapshot.statistics(key)
    rows = []
    for rank, stat in enumerate(stats[:limit], 1):
        frame = stat.traceback[-1]  # frames go from oldest to most recent (Python >= 3.7)
        has_line = key != "filename"
        rows.append(
            {
                "rank": rank,
                "file": _short_path(frame.filename),
                "lineno": frame.lineno if has_line else None,
                "size_kib": stat.size / 1024,
                "count": stat.count,
                "line": linecache.getline(frame.filename, frame.lineno).strip() if has_line else "",
                "path": frame.filename,
                "stack": " -> ".join(
                    f"{_short_path(f.filename)}:{f.lineno}" if has_line else _short_path(f.filename)
                    for f in stat.traceback
                ),
            }
        )
    columns = ["rank", "file", "lineno", "size_kib", "count", "line", "path", "stack"]
    top = pd.DataFrame(rows, columns=columns).astype({"lineno": "Int64"})
    other = stats[limit:]
    top.attrs["other_count"] = len(other)
    top.attrs["other_kib"] = sum(s.size for s in other) / 1024
    top.attrs["total_kib"] = sum(s.size for s in stats) / 1024
    if print_report:
        print(_format_top(top, limit))
    return top


def _format_top(top: pd.DataFrame, limit: int) -> str:
    """Render the display_top recipe's text from a top_allocations frame."""
    import pandas as pd

    lines = [f"Top {limit} lines"]
    for row in top.itertuples(index=False):
        where = row.file if pd.isna(row.lineno) else f"{row.file}:{row.lineno}"
        lines.append(f"#{row.rank}: {where}: {row.size_kib:.1f} KiB")
        if row.line:
            lines.append(f"    {row.line}")
    if top.attrs["other_count"]:
        lines.append(f"{top.attrs['other_count']} other: {top.attrs['other_kib']:.1f} KiB")
    lines.append(f"Total allocated size: {top.attrs['total_kib']:.1f} KiB")
    return "\n".join(lines)
