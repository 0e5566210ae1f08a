"""Where the numbers come from: RSS through memory-profiler, Arrow's bytes through pyarrow.

What we rely on from memory-profiler 0.61 (the last release; unmaintained):

- ``memory_profiler.memory_usage((func, args, kwargs), interval=...,
  max_usage=True, retval=True, max_iterations=1, backend="psutil")``: runs the
  function once while a forked sampler process reads the RSS every
  ``interval`` seconds, and returns the highest reading and the function's
  return value. ``max_iterations=1`` matters: without it, ``memory_usage``
  re-runs a fast function with a ten times smaller interval until it has five
  samples. This is the mechanism of ``%memit``.
- ``memory_profiler.MemTimer``, that same sampler process, started and stopped
  around a ``with`` block (``_PeakSampler``), the way ``memory_usage`` drives it.
  A process, not a thread: a thread would not run while a long C call holds the
  GIL and would miss a peak made and freed there.
- ``memory_profiler.memory_usage(-1, interval=0, backend="psutil")``: one RSS
  reading of this process in MiB (``rss_mib``).

Always the ``psutil`` backend: memory-profiler's ``tracemalloc`` backend is broken on
Python 3.12+ (upstream issue #402), and these three calls import neither ``distutils``
nor IPython, so they work on Python 3.11-3.13. Switching to another backend (memray,
plain psutil) means rewriting this module, nothing else. The sampler is a forked
child process, so it cannot follow *our* child processes without counting itself
(its RSS is a copy of ours): to measure a program with children, run it under
``mprof`` (:func:`analysis_lib.run_mprof`).

Arrow's memory (pandas 3's ``str`` columns, ``ArrowDtype`` columns, ADBC batches) lives
in pyarrow's memory pool, outside Python's allocator: tracemalloc does not see it.
:func:`arrow_allocated_mib` reads ``pyarrow.total_allocated_bytes()`` only when pyarrow is
already imported: it never imports pyarrow to ask (that alone costs about 38 MiB of
RSS), and while pyarrow is not imported it has allocated nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MIB = float(2**20)
ZERO = 0.0  # one shared float for "no Arrow memory" (Tracker does not count it as its own)


def rss_mib() -> float:
    """Return one RSS reading of this process in MiB, through memory_profiler (psutil)."""
    from memory_profiler import memory_usage

    return float(memory_usage(-1, interval=0, backend="psutil")[0])


def peak_during(call: Callable[[], T], interval: float) -> tuple[float, T]:
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


class PeakSampler:
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
        """Stop the sampler and return the highest RSS (MiB) it saw."""
        self._conn.send(0)
        peak = self._conn.recv()[0]
        self._conn.recv()  # number of readings
        self._process.join(5 * self._interval + 1)
        return float(peak)


def arrow_allocated_mib() -> float:
    """Return the MiB allocated in pyarrow's default pool; 0.0 while pyarrow is not imported."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is None:
        return ZERO
    return pyarrow.total_allocated_bytes() / MIB
