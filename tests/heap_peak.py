"""Peak memory of a call as the loaders' tests see it: Python's heap plus Arrow's memory pool."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

_ARROW_POOLS: list = []  # keep each proxy pool alive while buffers it made may still live


def heap_peak(func: Callable[[], Any]) -> tuple[int, Any]:
    """Return the peak bytes allocated during ``func()`` (Python heap + Arrow pool) and its result.

    On pandas 3 text columns are ``str`` arrays whose characters live in Arrow buffers, which
    tracemalloc does not see; a proxy pool set as Arrow's default pool for the call counts them
    (0 where pyarrow cannot be imported). The sum of the two peaks bounds the combined peak.
    """
    try:
        import pyarrow as pa
    except ImportError:
        pa = None
    previous = pool = None
    if pa is not None:
        previous = pa.default_memory_pool()
        pool = pa.proxy_memory_pool(previous)
        _ARROW_POOLS.append(pool)
        pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = func()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        if pa is not None:
            pa.set_memory_pool(previous)
    return peak + (pool.max_memory() if pool is not None else 0), result
