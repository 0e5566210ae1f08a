"""Analyse buildings ZIP code by ZIP code in bounded memory, and measure memory honestly.

The public names live in small private modules and are imported on first use,
so ``import analysis_lib`` stays cheap: it loads neither Django, pandas,
matplotlib, IPython nor memory_profiler until a function that needs them is
called (``tests/test_api.py`` checks this).

``%load_ext analysis_lib`` in IPython/Jupyter loads memory-profiler's magics and
this package's ``%%memtrack`` cell magic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> private module that defines it
_EXPORTS: dict[str, str] = {
    # Django set-up for notebooks and scripts
    "setup_django": "_django",
    # QuerySet -> pandas loaders
    "iter_frames": "loaders",
    "read_frame": "loaders",
    "read_geodataframe": "loaders",
    "EngineUnavailable": "loaders",
    # keep pandas from loading pyarrow (~38 MiB of RSS) in a lean process
    "keep_pyarrow_out": "loaders",
    # memory instruments built on memory-profiler and tracemalloc
    "MemoryResult": "_memory",
    "MemoryLog": "_memory",
    "measure": "_memory",
    "memory_step": "_memory",
    "profile_memory": "_memory",
    "default_log": "_memory",
    "Tracker": "_memory",
    "track": "_memory",
    "top_allocations": "_memory",
    # mprof runs, .dat parsing and plots
    "MprofProfile": "_mprof",
    "run_mprof": "_mprof",
    "read_mprof": "_mprof",
    "plot_mprof": "_mprof",
    # per-ZIP analysis
    "iter_buildings_by_zip": "_per_zip",
    "summarize_by_zip": "_per_zip",
    "plot_choropleth": "_per_zip",
    # notebook helpers: figures, papermill runs, the loops of the seed question
    "report_dir": "_report",
    "save_figure": "_report",
    "run_notebook": "_report",
    "select_zips": "_report",
    "pick_detail_zip": "_report",
    "plot_zip_buildings": "_report",
    "naive_zip_lists": "_report",
    "zip_loop": "_report",
    "run_zip_loop": "_report",
    "track_zip_loop": "_report",
    "LoopRun": "_report",
    "mprof_zip_loop": "_report",
    "memory_comparison": "_report",
    "closing_summary": "_report",
    # scale-out
    "to_dask": "_dask",
    "summarize_by_zip_distributed": "_dask",
}

__all__ = [
    "EngineUnavailable",
    "LoopRun",
    "MemoryLog",
    "MemoryResult",
    "MprofProfile",
    "Tracker",
    "closing_summary",
    "default_log",
    "iter_buildings_by_zip",
    "iter_frames",
    "keep_pyarrow_out",
    "load_ipython_extension",
    "measure",
    "memory_comparison",
    "memory_step",
    "mprof_zip_loop",
    "naive_zip_lists",
    "pick_detail_zip",
    "plot_choropleth",
    "plot_mprof",
    "plot_zip_buildings",
    "profile_memory",
    "read_frame",
    "read_geodataframe",
    "read_mprof",
    "report_dir",
    "run_mprof",
    "run_notebook",
    "run_zip_loop",
    "save_figure",
    "select_zips",
    "setup_django",
    "summarize_by_zip",
    "summarize_by_zip_distributed",
    "to_dask",
    "top_allocations",
    "track",
    "track_zip_loop",
    "zip_loop",
]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._dask import summarize_by_zip_distributed, to_dask
    from ._django import setup_django
    from ._memory import (
        MemoryLog,
        MemoryResult,
        Tracker,
        default_log,
        measure,
        memory_step,
        profile_memory,
        top_allocations,
        track,
    )
    from ._mprof import MprofProfile, plot_mprof, read_mprof, run_mprof
    from ._per_zip import iter_buildings_by_zip, plot_choropleth, summarize_by_zip
    from ._report import (
        LoopRun,
        closing_summary,
        memory_comparison,
        mprof_zip_loop,
        naive_zip_lists,
        pick_detail_zip,
        plot_zip_buildings,
        report_dir,
        run_notebook,
        run_zip_loop,
        save_figure,
        select_zips,
        track_zip_loop,
        zip_loop,
    )
    from .loaders import (
        EngineUnavailable,
        iter_frames,
        keep_pyarrow_out,
        read_frame,
        read_geodataframe,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """Load memory-profiler's ``%memit``/``%mprun`` and the ``%%memtrack`` cell magic."""
    from ._ipython import load_ipython_extension as _load

    _load(ipython)
