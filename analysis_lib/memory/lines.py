"""Line-by-line memory of a function: memory-profiler's line tracer, sources from anywhere.

memory-profiler's ``LineProfiler`` records, for every line of a registered function,
the RSS after the line (``memory``), the sum of the RSS changes the line caused
(``increment``) and how often it ran. Its own registration (``CodeMap.add``) and report
(``show_results``) open the function's *file* from disk, so a function defined in a
notebook cell (``/tmp/ipykernel_<pid>/<hash>.py``, a file that never exists) is
refused with ``ERROR: Could not find file`` (memory-profiler issue #155).

This module registers the functions itself, through :func:`inspect.getsourcelines`,
which reads :mod:`linecache`: a module's file, or the source IPython keeps there for
every cell it runs. It then lets memory-profiler's tracer run unchanged and turns its
per-line numbers into a :class:`LineProfile`. A function whose source Python truly
does not have (made by ``exec`` of a string) is refused with a message saying so.

What we rely on from memory-profiler 0.61: ``LineProfiler(backend="psutil")``, its
tracer (``enable_by_count`` / ``disable_by_count``, which calls ``code_map.trace(code,
lineno, prev_lineno)`` after each line of a registered function), ``CodeMap`` (a dict
from code object to ``{lineno: (increment MiB, memory MiB, occurrences)}``). Our
``CodeMap`` subclass replaces ``add`` (sources from :mod:`linecache`) and ``trace``
(increments from the start of the call, not from 0 at each function's first line; RSS
read through one ``psutil.Process`` handle, about 3 times faster per line than
memory-profiler's ``_get_memory``, which makes a new handle at every call). This is
the one module to change if the backend changes. The ``psutil`` backend works on
Python 3.11-3.13; the ``tracemalloc`` backend is broken on 3.12+ (upstream issue #402)
and is not used.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._checks import fail_type, fail_value
from ._backend import MIB

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd

_COLUMNS = ["line", "memory_mib", "increment_mib", "occurrences", "source"]


@dataclasses.dataclass(frozen=True)
class LineProfile:
    """Memory per line of one function, as memory-profiler's ``%mprun`` reports it.

    Attributes
    ----------
    function : str
        The function's qualified name.
    filename : str
        Where its source came from: a file, or IPython's name for a cell.
    lines : pandas.DataFrame
        One row per source line of the function, in order: ``line`` (line number in
        ``filename``), ``memory_mib`` (RSS after the line last ran, the highest over
        its runs; NaN if it never ran), ``increment_mib`` (sum of the RSS changes the
        line caused over all its runs; NaN if it never ran), ``occurrences`` (how often
        it ran) and ``source`` (the line's text, without its newline).
    value : Any
        The return value of the profiled call (:func:`profile_lines`; ``None`` from
        ``%mprun``); left out of ``repr`` and comparisons.
    """

    function: str
    filename: str
    lines: pd.DataFrame = dataclasses.field(repr=False, compare=False)
    value: Any = dataclasses.field(default=None, repr=False, compare=False)

    def largest_increment(self) -> pd.Series:
        """Return the row of the line with the largest increment.

        Returns
        -------
        pandas.Series
            That line's ``line, memory_mib, increment_mib, occurrences, source``.

        Raises
        ------
        ValueError
            If no line ran.
        """
        ran = self.lines.dropna(subset=["increment_mib"])
        if ran.empty:
            raise ValueError(f"{self.function}: no line ran, so no line has an increment")
        return ran.loc[ran["increment_mib"].idxmax()]

    def __str__(self) -> str:
        """Return the familiar ``%mprun`` table."""
        template = "{0:>6} {1:>12} {2:>12}  {3:>11}   {4}"
        header = template.format("Line #", "Mem usage", "Increment", "Occurrences", "Contents")
        out = [f"Filename: {self.filename}", "", header, "=" * len(header)]
        for row in self.lines.itertuples(index=False):
            ran = row.occurrences > 0
            out.append(
                template.format(
                    row.line,
                    f"{row.memory_mib:8.1f} MiB" if ran else "",
                    f"{row.increment_mib:8.1f} MiB" if ran else "",
                    row.occurrences if ran else "",
                    row.source,
                ).rstrip()
            )
        return "\n".join(out)


def _code_of(name: str, func: Any) -> Any:
    """Return the code object of a Python function (unwrapping decorators and methods)."""
    target = inspect.unwrap(getattr(func, "__func__", func))
    code = getattr(target, "__code__", None)
    if code is None or not inspect.iscode(code):
        raise fail_type(name, "a Python function (def or lambda), not a builtin or a class", func)
    return code


def _source(name: str, func: Any, code: Any) -> tuple[list[str], int]:
    """Return the function's source lines and its first line number, or say why there are none."""
    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        raise fail_value(
            name,
            f"a function whose source Python keeps (a file, or a cell IPython ran); "
            f"{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name} comes from "
            f"{code.co_filename!r}, which is neither a readable file nor in linecache "
            "(code read from stdin, or made by exec() or compile() of a string, has none)",
            func,
        ) from None
    return lines, max(first, 1)


def _code_map_class() -> type:
    """memory-profiler's CodeMap, registering code by its source from linecache, not from disk."""
    import psutil
    from memory_profiler import CodeMap

    process = psutil.Process()  # one handle: memory_profiler's _get_memory makes one per line

    def rss_mib() -> float:
        return process.memory_info().rss / MIB

    class SourceCodeMap(CodeMap):
        """A CodeMap that takes sources from :mod:`inspect` and counts increments from the start.

        memory-profiler's own ``trace`` takes the previous line's memory as 0 when that
        line is not one of this function's (the first line of each function), so that
        line's "increment" is the whole RSS of the process. Here each increment is the
        RSS change since the previous traced event, starting from the RSS at
        :meth:`start`.
        """

        last_mib = 0.0

        def start(self) -> None:
            self.last_mib = rss_mib()

        def add(self, code: Any, toplevel_code: Any = None) -> None:
            if code in self:
                return
            # toplevel code is registered (its source checked) by _LineRecorder
            self[code] = self[toplevel_code] if toplevel_code is not None else {}
            for sub in filter(inspect.iscode, code.co_consts):
                self.add(sub, toplevel_code=toplevel_code or code)

        def trace(self, code: Any, lineno: int, prev_lineno: int | None) -> None:
            # called when line ``lineno`` has run (memory-profiler's LineProfiler calls it)
            memory = rss_mib()
            table = self[code]
            increment, highest, count = table.get(lineno, (0.0, memory, 0))
            table[lineno] = (increment + memory - self.last_mib, max(memory, highest), count + 1)
            self.last_mib = memory

    return SourceCodeMap


class _LineRecorder:
    """Trace the given functions' lines while a block runs; turn the result into LineProfiles."""

    def __init__(self, funcs: Sequence[tuple[str, Callable[..., Any]]]) -> None:
        from memory_profiler import LineProfiler

        self._targets = []
        for name, func in funcs:
            code = _code_of(name, func)
            source, first = _source(name, func, code)
            self._targets.append((func, code, source, first))
        self._profiler = LineProfiler(backend="psutil")
        code_map = _code_map_class()(include_children=False, backend="psutil")
        for _, code, _, _ in self._targets:
            code_map.add(code)
        self._profiler.code_map = code_map

    def __enter__(self) -> _LineRecorder:
        self._profiler.code_map.start()
        self._profiler.enable_by_count()
        return self

    def __exit__(self, *exc: object) -> None:
        self._profiler.disable_by_count()

    def profiles(self, value: Any = None) -> list[LineProfile]:
        import pandas as pd

        result = []
        for func, code, source, first in self._targets:
            measures = self._profiler.code_map[code]
            rows = []
            for offset, text in enumerate(source):
                lineno = first + offset
                increment, memory, count = measures.get(lineno, (None, None, 0))
                rows.append((lineno, memory, increment, count, text.rstrip("\r\n")))
            frame = pd.DataFrame(rows, columns=_COLUMNS).astype(
                {
                    "line": "int64",
                    "memory_mib": "float64",
                    "increment_mib": "float64",
                    "occurrences": "int64",
                    "source": "object",
                }
            )
            name = getattr(func, "__qualname__", None) or code.co_name
            result.append(LineProfile(name, code.co_filename, frame, value))
        return result


def profile_lines(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> LineProfile:
    """Call ``func(*args, **kwargs)`` once and return the memory of each of its lines.

    The same numbers as memory-profiler's ``%mprun``/``@profile``: RSS after each line
    and the increment each line caused, read through psutil at every line event. It
    works on functions defined in a module and on functions defined in a notebook or
    IPython cell (their source comes from :mod:`linecache`, where IPython keeps every
    cell). Lines run with Python's tracer on and each line event reads the RSS: a
    function of few, heavy lines runs at nearly full speed, a tight loop of cheap lines
    hundreds of times slower (profile a few iterations of it). Only ``func``'s own
    lines (and functions nested in it) are measured; a call into another function
    shows as the increment of the calling line.

    Parameters
    ----------
    func : callable
        A Python function (``def`` or ``lambda``; decorated functions are unwrapped).
    *args, **kwargs
        Arguments for the call.

    Returns
    -------
    LineProfile
        ``lines`` holds ``line, memory_mib, increment_mib, occurrences, source`` per
        source line; ``value`` the call's return value; ``print()`` gives the
        ``%mprun`` table.

    Raises
    ------
    TypeError
        If ``func`` is not a Python function (a builtin, a class, a number).
    ValueError
        If Python has no source for ``func`` (code made by ``exec`` of a string).
    Exception
        Whatever ``func`` raises, unchanged.

    Examples
    --------
    >>> def grow(n):
    ...     kept = [0] * n
    ...     return len(kept)
    >>> profile = profile_lines(grow, 10_000_000)  # a list of 10M pointers: 76 MiB
    >>> profile.value
    10000000
    >>> row = profile.largest_increment()
    >>> row["source"].strip(), bool(60 < row["increment_mib"] < 95)
    ('kept = [0] * n', True)
    """
    recorder = _LineRecorder([("func", func)])
    with recorder:
        value = func(*args, **kwargs)
    return recorder.profiles(value)[0]
