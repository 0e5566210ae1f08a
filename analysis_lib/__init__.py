"""Analyse any GeoDjango models region by region in bounded memory, and measure memory honestly.

The public names live in small private modules and are imported on first use,
so ``import analysis_lib`` stays cheap: it loads neither Django, pandas,
matplotlib, IPython nor memory_profiler until a function that needs them is
called (``tests/test_api.py`` checks this). ``_EXPORTS`` is the one list of
public names; ``__all__`` is derived from it.

``"analysis_lib"`` in ``INSTALLED_APPS`` registers the index-aware lookups
(``within_indexed``, ``bboverlaps_indexed``) on every geometry field.
``%load_ext analysis_lib`` in IPython/Jupyter registers ``%memit``, ``%mprun`` (also for
functions defined in cells) and ``%%memtrack`` (:mod:`analysis_lib.memory.magics`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    # Django set-up for notebooks and scripts
    "setup_django": "._django",
    # QuerySet -> pandas loaders
    "iter_frames": ".loaders",
    "read_frame": ".loaders",
    "read_geodataframe": ".loaders",
    "EngineUnavailable": ".loaders",
    "to_dask": "._dask",
    # keep pandas from loading pyarrow (~38 MiB of RSS) in a lean process
    "keep_pyarrow_out": ".loaders",
    # per-region analysis of any two models, and its strategies
    "summarize_by_region": ".regions.api",
    "iter_items_by_region": ".regions.api",
    "plot_choropleth": ".regions.api",
    "Strategy": ".regions.core",
    "Sweep": ".regions.sweep",
    "PerRegion": ".regions.per_region",
    "OneStatement": ".regions.sql",
    "DaskSweep": ".regions.dask",
    # memory instruments built on memory-profiler and tracemalloc
    "MemoryResult": ".memory",
    "MemoryLog": ".memory",
    "measure": ".memory",
    "memory_step": ".memory",
    "profile_memory": ".memory",
    "default_log": ".memory",
    "Tracker": ".memory",
    "track": ".memory",
    "top_allocations": ".memory",
    "profile_lines": ".memory",
    "LineProfile": ".memory",
    # mprof runs, .dat parsing and plots
    "MprofProfile": ".memory",
    "run_mprof": ".memory",
    "read_mprof": ".memory",
    "plot_mprof": ".memory",
    "plot_mprof_loops": ".memory",
    # notebook tools: report folder, figures, papermill runs
    "report_dir": ".notebook",
    "save_figure": ".notebook",
    "run_notebook": ".notebook",
    "notebook_parameters": ".notebook",
    # IPython: %load_ext analysis_lib
    "load_ipython_extension": ".memory.magics",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs (tests/test_api.py checks it)
    from ._dask import to_dask as to_dask
    from ._django import setup_django as setup_django
    from .loaders import EngineUnavailable as EngineUnavailable
    from .loaders import iter_frames as iter_frames
    from .loaders import keep_pyarrow_out as keep_pyarrow_out
    from .loaders import read_frame as read_frame
    from .loaders import read_geodataframe as read_geodataframe
    from .memory import LineProfile as LineProfile
    from .memory import MemoryLog as MemoryLog
    from .memory import MemoryResult as MemoryResult
    from .memory import MprofProfile as MprofProfile
    from .memory import Tracker as Tracker
    from .memory import default_log as default_log
    from .memory import measure as measure
    from .memory import memory_step as memory_step
    from .memory import plot_mprof as plot_mprof
    from .memory import plot_mprof_loops as plot_mprof_loops
    from .memory import profile_lines as profile_lines
    from .memory import profile_memory as profile_memory
    from .memory import read_mprof as read_mprof
    from .memory import run_mprof as run_mprof
    from .memory import top_allocations as top_allocations
    from .memory import track as track
    from .memory.magics import load_ipython_extension as load_ipython_extension
    from .notebook import notebook_parameters as notebook_parameters
    from .notebook import report_dir as report_dir
    from .notebook import run_notebook as run_notebook
    from .notebook import save_figure as save_figure
    from .regions.api import iter_items_by_region as iter_items_by_region
    from .regions.api import plot_choropleth as plot_choropleth
    from .regions.api import summarize_by_region as summarize_by_region
    from .regions.core import Strategy as Strategy
    from .regions.dask import DaskSweep as DaskSweep
    from .regions.per_region import PerRegion as PerRegion
    from .regions.sql import OneStatement as OneStatement
    from .regions.sweep import Sweep as Sweep


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
