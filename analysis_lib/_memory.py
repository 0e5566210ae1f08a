"""Memory instruments: peak and increment, what a step left behind, live heap against RSS.

Four different numbers answer four different questions, and this module keeps
them apart:

- **peak** (MiB): the highest resident set size (RSS) seen while a step ran;
- **increment** (MiB): peak minus the RSS just before the step, exactly as
  memory-profiler's ``%memit`` defines it: what the step *needed*;
- **retained** (MiB): RSS after the step minus RSS before it: what the step
  *left behind* (after a garbage collection);
- **live heap** (tracemalloc current/peak): what Python objects still hold.
  RSS is the allocator's high-water mark and rarely goes down; the live heap
  does. A loop whose RSS stays high while its live heap is flat is allocator
  behaviour, not a leak.

What we rely on from memory-profiler 0.61 (the last release; unmaintained):

- ``memory_profiler.memory_usage((func, args, kwargs), interval=...,
  max_usage=True, retval=True, max_iterations=1, backend="psutil")``: runs the
  function once while a forked sampler process reads the RSS every
  ``interval`` seconds, and returns the highest reading and the function's
  return value. ``max_iterations=1`` matters: without it, ``memory_usage``
  re-runs a fast function with a ten times smaller interval until it has five
  samples. This is the mechanism of ``%memit``; :func:`measure` uses it
  through ``_peak_during``.
- ``memory_profiler.MemTimer``, that same sampler process, started and stopped
  around a ``with`` block by :func:`memory_step` (``_PeakSampler``), the way
  ``memory_usage`` drives it. A process, not a thread: a thread would not run
  while a long C call holds the GIL and would miss a peak made and freed there.
- ``memory_profiler.memory_usage(-1, interval=0, backend="psutil")``: one RSS
  reading of this process in MiB (``_rss_mib``), for baselines and per
  iteration in :func:`track`.

Everything else here is the standard library (``tracemalloc``, ``gc``).
Switching to another backend (memray, plain psutil) means rewriting
``_rss_mib``, ``_peak_during`` and ``_PeakSampler``, nothing else. The sampler
is a forked child process, so it cannot follow *our* child processes without
counting itself (its RSS is a copy of ours): to measure a program with
children, run it under ``mprof`` (:func:`analysis_lib.run_mprof`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd
    from matplotlib.axes import Axes

T = TypeVar("T")

_MIB = float(2**20)
_DEFAULT_INTERVAL = 0.01  # seconds between RSS samples; %memit uses 0.1 and misses short peaks
_RESULT_COLUMNS = [
    "label",
    "peak_mib",
    "increment_mib",
    "retained_mib",
    "baseline_mib",
    "seconds",
]
_TRACK_COLUMNS = [
    "iteration",
    "label",
    "rss_mib",
    "heap_current_mib",
    "heap_peak_mib",
    "seconds",
]


# --- the two places that touch memory_profiler -------------------------------------------


def _rss_mib() -> float:
    """Return one RSS reading of this process in MiB, through memory_profiler (psutil)."""
    from memory_profiler import memory_usage

    return float(memory_usage(-1, interval=0, backend="psutil")[0])


def _peak_during(call: Callable[[], T], interval: float) -> tuple[float, T]:
    """Run ``call()`` exactly once; return the highest RSS (MiB) sampled meanwhile and its value."""
    from memory_profiler import memory_usage

    peak, value = memory_usage(
        (call, (), {}),
        interval=interval,
        max_usage=True,
        retval=True,
        max_iterations=1,
        backend="psutil",
    )
    return float(peak), value


class _PeakSampler:
    """memory_profiler's MemTimer process keeping this process's highest RSS until stopped."""

    def __init__(self, interval: float) -> None:
        from multiprocessing import Pipe

        from memory_profiler import MemTimer

        self._conn, child_conn = Pipe()
        self._process = MemTimer(os.getpid(), interval, child_conn, "psutil", max_usage=True)
        self._interval = interval
        self._process.start()
        self._conn.recv()  # the sampler has taken its first reading

    def stop(self) -> float:
        self._conn.send(0)
        peak = self._conn.recv()[0]
        self._conn.recv()  # number of readings
        self._process.join(5 * self._interval + 1)
        return float(peak)


# --- results and the log ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryResult:
    """What one measured step cost, in MiB of RSS.

    Attributes
    ----------
    label : str
        Name of the step.
    peak_mib : float
        Highest RSS sampled while the step ran (``%memit``'s "peak memory").
    increment_mib : float
        ``peak_mib - baseline_mib`` (``%memit``'s "increment"): what the step needed.
    retained_mib : float
        RSS after the step (after a garbage collection) minus ``baseline_mib``:
        what the step left behind, including its return value.
    baseline_mib : float
        RSS just before the step, after a garbage collection.
    seconds : float
        Wall time of the step itself.
    value : Any
        The measured function's return value (``None`` for :func:`memory_step`);
        left out of ``repr``, comparisons and :meth:`MemoryLog.to_frame`.
    """

    label: str
    peak_mib: float
    increment_mib: float
    retained_mib: float
    baseline_mib: float
    seconds: float
    value: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return (
            f"{self.label}: peak memory: {self.peak_mib:.2f} MiB, "
            f"increment: {self.increment_mib:.2f} MiB, "
            f"left behind: {self.retained_mib:.2f} MiB, {self.seconds:.3f} s"
        )

    def as_row(self) -> dict[str, Any]:
        """Return the numbers as a dict (one DataFrame row), without ``value``.

        Returns
        -------
        dict
            Keys ``label, peak_mib, increment_mib, retained_mib, baseline_mib, seconds``.

        Examples
        --------
        >>> MemoryResult("x", 110.0, 10.0, 0.5, 100.0, 0.2).as_row()["increment_mib"]
        10.0
        """
        return {name: getattr(self, name) for name in _RESULT_COLUMNS}


class MemoryLog:
    """An append-only list of :class:`MemoryResult` that turns into a DataFrame and a plot.

    :func:`default_log` returns the process-wide session log used by the
    ``%%memtrack`` cell magic, :func:`memory_step` and :func:`profile_memory`
    when they are not given a log. Appending is thread-safe. The log stores
    results without their ``value``, so it never keeps a function's return
    value alive.

    Parameters
    ----------
    results : iterable of MemoryResult, optional
        Initial content.

    Examples
    --------
    >>> log = MemoryLog()
    >>> log.append(MemoryResult("load", 150.0, 50.0, 1.0, 100.0, 0.5))
    >>> log.to_frame()[["label", "increment_mib"]].to_dict("records")
    [{'label': 'load', 'increment_mib': 50.0}]
    """

    def __init__(self, results: Iterable[MemoryResult] = ()) -> None:
        self._lock = threading.Lock()
        self._results: list[MemoryResult] = []
        for result in results:
            self.append(result)

    def append(self, result: MemoryResult) -> None:
        """Add one result (without its ``value``).

        Parameters
        ----------
        result : MemoryResult
            The result to add.

        Raises
        ------
        TypeError
            If ``result`` is not a :class:`MemoryResult`.

        Examples
        --------
        >>> log = MemoryLog()
        >>> log.append(MemoryResult("x", 1.0, 0.0, 0.0, 1.0, 0.0))
        >>> len(log)
        1
        """
        if not isinstance(result, MemoryResult):
            raise TypeError(f"MemoryLog holds MemoryResult objects, got {type(result).__name__}")
        if result.value is not None:
            # keep the numbers, not the return value: a log must not hold data alive
            result = dataclasses.replace(result, value=None)
        with self._lock:
            self._results.append(result)

    def clear(self) -> None:
        """Remove every result."""
        with self._lock:
            self._results.clear()

    @property
    def results(self) -> tuple[MemoryResult, ...]:
        """The results, oldest first."""
        with self._lock:
            return tuple(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[MemoryResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> MemoryResult:
        return self.results[index]

    def __repr__(self) -> str:
        return f"MemoryLog({len(self)} results)"

    def to_frame(self) -> pd.DataFrame:
        """Return one row per result.

        Returns
        -------
        pandas.DataFrame
            Columns ``label, peak_mib, increment_mib, retained_mib, baseline_mib,
            seconds``; empty (with these columns) when the log is empty.

        Examples
        --------
        >>> MemoryLog().to_frame().columns.tolist()[:3]
        ['label', 'peak_mib', 'increment_mib']
        """
        import pandas as pd

        return pd.DataFrame([r.as_row() for r in self.results], columns=_RESULT_COLUMNS)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Bar chart of increment (needed) and retained (left behind) per result.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw on; a new figure is made when omitted.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Examples
        --------
        >>> log = MemoryLog([MemoryResult("load", 150.0, 50.0, 1.0, 100.0, 0.5)])
        >>> ax = log.plot()
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['load']
        """
        import matplotlib.pyplot as plt
        import numpy as np

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(self) + 2.0), 3.5))
        frame = self.to_frame()
        x = np.arange(len(frame))
        width = 0.4
        ax.bar(x - width / 2, frame["increment_mib"], width, label="increment (peak - before)")
        ax.bar(x + width / 2, frame["retained_mib"], width, label="left behind (after - before)")
        ax.set_xticks(x, frame["label"].tolist(), rotation=30 if len(frame) > 4 else 0)
        ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_ylabel("RSS (MiB)")
        ax.set_title("Memory per step")
        ax.legend()
        return ax


_DEFAULT_LOG = MemoryLog()


def default_log() -> MemoryLog:
    """Return the process-wide session log.

    ``%%memtrack``, :func:`memory_step` and :func:`profile_memory` append to it
    when they are not given another log.

    Returns
    -------
    MemoryLog
        The same object on every call.

    Examples
    --------
    >>> default_log() is default_log()
    True
    """
    return _DEFAULT_LOG


# --- measuring a call, a block, a decorated function --------------------------------------


def _check_interval(interval: float) -> None:
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
        raise ValueError(f"`interval` must be a positive number of seconds, got {interval!r}")


def _measure(
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    label: str | None,
    interval: float,
    log: MemoryLog | None,
) -> MemoryResult:
    """Measure one call of ``func(*args, **kwargs)``; the shared path of measure/profile_memory."""
    if not callable(func):
        raise TypeError(f"measure() needs a callable, got {type(func).__name__}")
    _check_interval(interval)
    if label is None:
        label = getattr(func, "__qualname__", None) or repr(func)
    outcome: dict[str, Any] = {}

    def call() -> T | None:
        # Exceptions are kept and re-raised after memory_usage returns: when the
        # measured function raises, memory_usage SIGKILLs *every* child process of
        # this process (its clean-up of the sampler), not only its own sampler.
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc
            return None
        finally:
            outcome["seconds"] = time.perf_counter() - start

    gc.collect()
    baseline = _rss_mib()
    peak, value = _peak_during(call, interval)
    if "error" in outcome:
        raise outcome["error"]
    gc.collect()
    after = _rss_mib()
    result = MemoryResult(
        label=str(label),
        peak_mib=peak,
        increment_mib=peak - baseline,
        retained_mib=after - baseline,
        baseline_mib=baseline,
        seconds=outcome["seconds"],
        value=value,
    )
    if log is not None:
        log.append(result)
    return result


def measure(
    func: Callable[..., T],
    /,
    *args: Any,
    label: str | None = None,
    interval: float = _DEFAULT_INTERVAL,
    log: MemoryLog | None = None,
    **kwargs: Any,
) -> MemoryResult:
    """Run ``func(*args, **kwargs)`` once and report its peak, increment and what it left behind.

    Built on ``memory_profiler.memory_usage(..., max_usage=True, max_iterations=1)``,
    the mechanism of ``%memit``: a forked process samples this process's RSS
    every ``interval`` seconds while the function runs. A garbage collection runs
    before the baseline and before the "after" reading.

    Parameters
    ----------
    func : callable
        The function to measure; it runs exactly once.
    *args
        Positional arguments for ``func``.
    label : str, optional
        Name of the step; defaults to ``func.__qualname__``.
    interval : float
        Seconds between RSS samples (default 0.01). A peak shorter than this
        can be missed; the increment is a lower bound.
    log : MemoryLog, optional
        Append the result to this log.
    **kwargs
        Keyword arguments for ``func``. The names ``label``, ``interval`` and
        ``log`` belong to ``measure``; wrap a function that needs them in
        ``functools.partial``.

    Returns
    -------
    MemoryResult
        ``peak_mib``, ``increment_mib``, ``retained_mib``, ``baseline_mib``,
        ``seconds`` and the return value in ``value``.

    Raises
    ------
    TypeError
        If ``func`` is not callable.
    ValueError
        If ``interval`` is not a positive number.
    Exception
        Whatever ``func`` raises, unchanged (nothing is logged then).

    Examples
    --------
    >>> import numpy as np
    >>> r = measure(np.ones, 20 * 2**17, label="20 MiB, kept")
    >>> r.value.nbytes == 20 * 2**20
    True
    >>> 15 < r.increment_mib < 30, 15 < r.retained_mib < 30
    (True, True)
    >>> print(r)  # doctest: +ELLIPSIS
    20 MiB, kept: peak memory: ... MiB, increment: ... MiB, left behind: ... MiB, ... s
    """
    return _measure(func, args, kwargs, label, interval, log)


def profile_memory(
    func: Callable[..., T] | None = None,
    *,
    label: str | None = None,
    log: MemoryLog | None = None,
    interval: float = _DEFAULT_INTERVAL,
) -> Any:
    """Decorate a function so that every call is measured (as :func:`measure`) and logged.

    Use it bare (``@profile_memory``) or with options
    (``@profile_memory(label="load", log=my_log)``). The decorated function
    returns what the original returns; the :class:`MemoryResult` goes to the log.

    Parameters
    ----------
    func : callable, optional
        The function, when used bare.
    label : str, optional
        Name recorded for each call; defaults to the function's ``__qualname__``.
    log : MemoryLog, optional
        Where results go; defaults to :func:`default_log`.
    interval : float
        Seconds between RSS samples.

    Returns
    -------
    callable
        The wrapped function, or a decorator when called with options only.

    Raises
    ------
    ValueError
        If ``interval`` is not a positive number.

    Examples
    --------
    >>> log = MemoryLog()
    >>> @profile_memory(log=log)
    ... def build(n):
    ...     return list(range(n))
    >>> len(build(1000)), log[-1].label
    (1000, 'build')
    """
    _check_interval(interval)

    def decorate(f: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            target = default_log() if log is None else log
            return _measure(f, args, kwargs, label, interval, target).value

        return wrapper

    return decorate if func is None else decorate(func)


@dataclasses.dataclass
class MemoryStepHandle:
    """What ``with memory_step(...) as step`` gives: ``step.result`` is set when the block ends."""

    label: str
    result: MemoryResult | None = None


@contextlib.contextmanager
def memory_step(
    label: str,
    *,
    log: MemoryLog | None = None,
    interval: float = _DEFAULT_INTERVAL,
    enabled: bool = True,
) -> Iterator[MemoryStepHandle]:
    """Measure a block of code: peak, increment and what it left behind, like :func:`measure`.

    memory-profiler's sampler process (the one behind ``%memit``) reads the RSS
    every ``interval`` seconds while the block runs. With ``enabled=False``
    nothing is measured and nothing is logged (no sampler, no garbage
    collection), so library code can offer measurement at no cost when not
    asked for it.

    Parameters
    ----------
    label : str
        Name of the step.
    log : MemoryLog, optional
        Where the result goes; defaults to :func:`default_log`.
    interval : float
        Seconds between RSS samples (default 0.01).
    enabled : bool
        Measure (default) or do nothing.

    Yields
    ------
    MemoryStepHandle
        Its ``result`` attribute holds the :class:`MemoryResult` after the block
        (``None`` if disabled or if the block raised; nothing is logged then).

    Raises
    ------
    ValueError
        If ``interval`` is not a positive number.

    Examples
    --------
    >>> import numpy as np
    >>> log = MemoryLog()
    >>> with memory_step("ones", log=log) as step:
    ...     kept = np.ones(20 * 2**17)
    >>> step.result.label, step.result.retained_mib > 15, len(log)
    ('ones', True, 1)
    """
    _check_interval(interval)
    handle = MemoryStepHandle(label=str(label))
    if not enabled:
        yield handle
        return
    gc.collect()
    baseline = _rss_mib()
    sampler = _PeakSampler(interval)
    start = time.perf_counter()
    try:
        yield handle
    finally:
        seconds = time.perf_counter() - start
        peak = max(sampler.stop(), _rss_mib(), baseline)
    gc.collect()
    after = _rss_mib()
    handle.result = MemoryResult(
        label=handle.label,
        peak_mib=peak,
        increment_mib=peak - baseline,
        retained_mib=after - baseline,
        baseline_mib=baseline,
        seconds=seconds,
    )
    (default_log() if log is None else log).append(handle.result)


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
    """Wrap a loop and record, per iteration, RSS and tracemalloc's current and peak size.

    Iterate over it as over the wrapped iterable. Before the first item it
    records a baseline row (iteration 0); after each iteration's body it records
    ``iteration, label, rss_mib, heap_current_mib, heap_peak_mib, seconds``
    (``heap_peak_mib`` is the peak *within* that iteration, ``seconds`` its
    duration; the heap columns leave out the memory of the recorded rows
    themselves). It starts tracemalloc if it is not running and stops it afterwards
    only if it started it; it resets tracemalloc's peak at each iteration.
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
        self._rows: list[tuple[float, float, float, float]] = []
        self._own_bytes = 0
        self._started = False

    def __repr__(self) -> str:
        return f"Tracker({self.label!r}, {max(len(self._rows) - 1, 0)} iterations recorded)"

    def _record(self, start: float | None, bar: Any = None) -> None:
        current, peak = tracemalloc.get_traced_memory()
        seconds = 0.0 if start is None else time.perf_counter() - start
        own = self._own_bytes
        row = (_rss_mib(), (current - own) / _MIB, (peak - own) / _MIB, seconds)
        list_size = sys.getsizeof(self._rows)
        self._rows.append(row)
        # The recorded rows live on the traced heap too: subtract what they hold (the
        # tuple, its floats, the list's growth), or a long loop with an empty body
        # "grows". A row's iteration is its position: no int is kept per row.
        self._own_bytes = (
            own
            + sys.getsizeof(row)
            + sum(sys.getsizeof(value) for value in row)
            + sys.getsizeof(self._rows)
            - list_size
        )
        if bar is not None:
            bar.set_postfix(rss=f"{row[0]:.0f}MiB", heap=f"{row[1]:.1f}MiB", refresh=False)

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
            Columns ``iteration, label, rss_mib, heap_current_mib, heap_peak_mib, seconds``.
        """
        import pandas as pd

        frame = pd.DataFrame(self._rows, columns=_TRACK_COLUMNS[2:])
        frame.insert(0, "iteration", range(len(frame)))
        frame.insert(1, "label", self.label)
        return frame

    def heap_trend(self, tail: float = 0.5) -> HeapTrend:
        """Fit a line to the live heap over the last ``tail`` fraction of iterations.

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

        if not (isinstance(tail, int | float) and 0 < tail <= 1):
            raise ValueError(f"`tail` must be in (0, 1], got {tail!r}")
        n = len(self._rows) - 1  # row 0 is the baseline
        if n < 3:
            raise ValueError(
                f"Tracker {self.label!r}: need at least 3 recorded iterations to fit a trend, "
                f"got {max(n, 0)}"
            )
        first = n + 1 - max(3, math.ceil(n * tail))
        x = np.arange(first, n + 1, dtype=float)
        y = np.array([row[1] for row in self._rows[first:]], dtype=float)
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
        """Say whether the live heap (tracemalloc current) kept growing: a real leak.

        The verdict uses tracemalloc, not RSS: RSS stays high after a big
        iteration even when everything was freed. It fits a line to the heap
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
            True if the live heap grew.

        Raises
        ------
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
        if min_mib < 0 or min_t < 0:
            raise ValueError(f"`min_mib` and `min_t` must be >= 0, got {min_mib!r}, {min_t!r}")
        trend = self.heap_trend(tail)
        return trend.growth_mib > min_mib and trend.t_value > min_t

    def plot(self, ax: Axes | None = None, *, relative: bool = True) -> Axes:
        """Plot RSS and tracemalloc's current size (and per-iteration peak) against iteration.

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
            The axes, with lines labelled ``RSS``, ``live heap (tracemalloc)`` and
            ``heap peak in iteration``.

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
            _, ax = plt.subplots(figsize=(7, 3.5))
        rss = frame["rss_mib"]
        current = frame["heap_current_mib"]
        peak = frame["heap_peak_mib"]
        if relative and len(frame):
            rss = rss - rss.iloc[0]
            peak = peak - current.iloc[0]
            current = current - current.iloc[0]
        ax.plot(frame["iteration"], rss, marker="o", markersize=3, label="RSS")
        ax.plot(
            frame["iteration"], current, marker="o", markersize=3, label="live heap (tracemalloc)"
        )
        ax.plot(
            frame["iteration"], peak, linestyle="--", linewidth=1, label="heap peak in iteration"
        )
        ax.set_xlabel("iteration")
        ax.set_ylabel("MiB above the start" if relative else "MiB")
        title = self.label
        if len(frame) - 1 >= 3:
            title += ": live heap grows" if self.grew() else ": live heap flat"
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
    ValueError
        If ``key`` or ``limit`` is invalid.
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

    if key not in _KEYS:
        raise ValueError(f"`key` was {key!r} but is expected to be one of {_KEYS}")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"`limit` must be a positive integer, got {limit!r}")
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
