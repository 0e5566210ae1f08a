"""Measure one step: peak and increment, what it left behind; the session log of steps.

Four different numbers answer four different questions, and this package keeps
them apart:

- **peak** (MiB): the highest resident set size (RSS) seen while a step ran;
- **increment** (MiB): peak minus the RSS just before the step, exactly as
  memory-profiler's ``%memit`` defines it: what the step *needed*;
- **retained** (MiB): RSS after the step minus RSS before it: what the step
  *left behind* (after a garbage collection);
- **live heap** (tracemalloc current/peak, :mod:`.tracker`): what Python objects
  still hold. RSS is the allocator's high-water mark and rarely goes down; the live
  heap does. A loop whose RSS stays high while its live heap is flat is allocator
  behaviour, not a leak.

Arrow's buffers (pandas 3's ``str`` columns, ``ArrowDtype`` columns) live outside
Python's allocator: tracemalloc misses them, RSS includes them. Where pyarrow is
imported, the results carry Arrow's allocated bytes as a column of their own.
The readings themselves come from :mod:`._backend`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .._checks import check_positive_number, fail_type
from ._backend import PeakSampler, arrow_allocated_mib, peak_during, rss_mib

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd
    from matplotlib.axes import Axes

T = TypeVar("T")

DEFAULT_INTERVAL = 0.01  # seconds between RSS samples; %memit uses 0.1 and misses short peaks
_RESULT_COLUMNS = [
    "label",
    "peak_mib",
    "increment_mib",
    "retained_mib",
    "baseline_mib",
    "seconds",
    "arrow_mib",
    "arrow_retained_mib",
]

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
    arrow_mib : float
        MiB held in pyarrow's memory pool after the step (``pyarrow.total_allocated_bytes()``):
        Arrow buffers, such as pandas 3's ``str`` columns, that tracemalloc does not see.
        0.0 when pyarrow is not imported (it has allocated nothing then); never imports it.
    arrow_retained_mib : float
        ``arrow_mib`` minus the same reading before the step: the Arrow memory the step
        left behind (part of ``retained_mib``, which is RSS and includes it).
    """

    label: str
    peak_mib: float
    increment_mib: float
    retained_mib: float
    baseline_mib: float
    seconds: float
    value: Any = dataclasses.field(default=None, repr=False, compare=False)
    arrow_mib: float = 0.0
    arrow_retained_mib: float = 0.0

    def __str__(self) -> str:
        text = (
            f"{self.label}: peak memory: {self.peak_mib:.2f} MiB, "
            f"increment: {self.increment_mib:.2f} MiB, "
            f"left behind: {self.retained_mib:.2f} MiB, {self.seconds:.3f} s"
        )
        if self.arrow_mib or self.arrow_retained_mib:
            text += (
                f"; Arrow: {self.arrow_mib:.2f} MiB held, "
                f"{self.arrow_retained_mib:.2f} MiB left behind"
            )
        return text

    def as_row(self) -> dict[str, Any]:
        """Return the numbers as a dict (one DataFrame row), without ``value``.

        Returns
        -------
        dict
            Keys ``label, peak_mib, increment_mib, retained_mib, baseline_mib, seconds,
            arrow_mib, arrow_retained_mib``.

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
            raise fail_type("result", "a MemoryResult", result)
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
            seconds, arrow_mib, arrow_retained_mib``; empty (with these columns) when
            the log is empty.

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


def check_interval(interval: float) -> None:
    """Raise TypeError/ValueError unless ``interval`` is a positive number of seconds."""
    check_positive_number("interval", interval)


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
        raise fail_type("func", "a callable", func)
    check_interval(interval)
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
    baseline = rss_mib()
    arrow_before = arrow_allocated_mib()
    peak, value = peak_during(call, interval)
    if "error" in outcome:
        raise outcome["error"]
    gc.collect()
    after = rss_mib()
    arrow_after = arrow_allocated_mib()
    result = MemoryResult(
        label=str(label),
        peak_mib=peak,
        increment_mib=peak - baseline,
        retained_mib=after - baseline,
        baseline_mib=baseline,
        seconds=outcome["seconds"],
        value=value,
        arrow_mib=arrow_after,
        arrow_retained_mib=arrow_after - arrow_before,
    )
    if log is not None:
        log.append(result)
    return result


def measure(
    func: Callable[..., T],
    /,
    *args: Any,
    label: str | None = None,
    interval: float = DEFAULT_INTERVAL,
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
        ``seconds``, Arrow's ``arrow_mib`` and ``arrow_retained_mib`` (where pyarrow
        is imported) and the return value in ``value``.

    Raises
    ------
    TypeError
        If ``func`` is not callable or ``interval`` is not a number.
    ValueError
        If ``interval`` is not positive and finite.
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
    interval: float = DEFAULT_INTERVAL,
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
    TypeError
        If ``interval`` is not a number.
    ValueError
        If ``interval`` is not positive and finite.

    Examples
    --------
    >>> log = MemoryLog()
    >>> @profile_memory(log=log)
    ... def build(n):
    ...     return list(range(n))
    >>> len(build(1000)), log[-1].label
    (1000, 'build')
    """
    check_interval(interval)

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
    interval: float = DEFAULT_INTERVAL,
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
    TypeError
        If ``interval`` is not a number.
    ValueError
        If ``interval`` is not positive and finite.

    Examples
    --------
    >>> import numpy as np
    >>> log = MemoryLog()
    >>> with memory_step("ones", log=log) as step:
    ...     kept = np.ones(20 * 2**17)
    >>> step.result.label, step.result.retained_mib > 15, len(log)
    ('ones', True, 1)
    """
    check_interval(interval)
    handle = MemoryStepHandle(label=str(label))
    if not enabled:
        yield handle
        return
    gc.collect()
    baseline = rss_mib()
    arrow_before = arrow_allocated_mib()
    sampler = PeakSampler(interval)
    start = time.perf_counter()
    try:
        yield handle
    finally:
        seconds = time.perf_counter() - start
        peak = max(sampler.stop(), rss_mib(), baseline)
    gc.collect()
    after = rss_mib()
    arrow_after = arrow_allocated_mib()
    handle.result = MemoryResult(
        label=handle.label,
        peak_mib=peak,
        increment_mib=peak - baseline,
        retained_mib=after - baseline,
        baseline_mib=baseline,
        seconds=seconds,
        arrow_mib=arrow_after,
        arrow_retained_mib=arrow_after - arrow_before,
    )
    (default_log() if log is None else log).append(handle.result)
