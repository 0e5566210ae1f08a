"""Memory instruments for notebooks and scripts: steps, loops, lines, mprof recordings.

Module map (each module has one job; :mod:`._backend` is the only one that reads
memory for :mod:`.steps` and :mod:`.tracker`, :mod:`.lines` the only one that
drives memory-profiler's line tracer):

- :mod:`.steps`: :func:`measure`, :func:`memory_step`, :func:`profile_memory`,
  :class:`MemoryResult`, :class:`MemoryLog`, :func:`default_log`;
- :mod:`.tracker`: :class:`Tracker`, :func:`track` (RSS, live heap and Arrow per
  iteration of a loop), :func:`top_allocations`;
- :mod:`.lines`: :func:`profile_lines`, :class:`LineProfile` (memory per line of a
  function, also one defined in a notebook cell);
- :mod:`.mprof`: :func:`run_mprof`, :func:`read_mprof`, :func:`plot_mprof`,
  :class:`MprofProfile`, and for loops: :func:`mprof_mark` (mark a span in the
  recorded program), :class:`MprofSpan`, :func:`plot_mprof_loops`;
- :mod:`.magics`: the IPython extension (``%memit``, ``%mprun``, ``%%memtrack``).

Importing this package loads only the standard library; pandas, matplotlib,
memory_profiler and IPython are imported by the functions that need them.
"""

from __future__ import annotations

from .lines import LineProfile, profile_lines
from .mprof import (
    MprofProfile,
    MprofSpan,
    mprof_mark,
    plot_mprof,
    plot_mprof_loops,
    read_mprof,
    run_mprof,
)
from .steps import MemoryLog, MemoryResult, default_log, measure, memory_step, profile_memory
from .tracker import HeapTrend, Tracker, top_allocations, track

__all__ = [
    "HeapTrend",
    "LineProfile",
    "MemoryLog",
    "MemoryResult",
    "MprofProfile",
    "MprofSpan",
    "Tracker",
    "default_log",
    "measure",
    "memory_step",
    "mprof_mark",
    "plot_mprof",
    "plot_mprof_loops",
    "profile_lines",
    "profile_memory",
    "read_mprof",
    "run_mprof",
    "top_allocations",
    "track",
]
