"""Where the per-region sweep's time goes: one warm ``summarize_by_zip("MA")``, step by step.

Usage (from a checkout; the database from ``DATABASE_URL`` or ``--database``)::

    python benchmarks/profile_sweep.py [adbc|dbapi|both] [--database PATH] [--repeat N]

Each mode runs in a fresh child process: ``adbc`` = pandas with pyarrow (the sweep reads with
ADBC), ``dbapi`` = :func:`analysis_lib.keep_pyarrow_out` first, as ``analyze_buildings`` does
without ``--with-pyarrow`` (DB-API reads). The child imports everything, makes one cold call
(lazy imports, caches), then wraps the sweep's steps with timers (wall and thread CPU seconds,
counted in whichever thread runs them) and makes ``--repeat`` warm calls, each checked equal to
the cold one. It prints per step the CPU seconds of the best warm call, the call's wall and
process CPU, the load average, and the sweep's memory: peak RSS during the warm call above the
RSS before it (``VmHWM`` reset through ``/proc/self/clear_refs``), and the cold call's peak
above the RSS after the imports.

The timers wrap whatever the checkout has (the script also profiles older versions, whose
steps have other names); steps it does not find are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Issue 16's targets for the warm summary call and the sweep's own memory.
TARGET_WALL = 1.0
TARGET_MIB = 40

CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, {root!r})
if {keep!r}:
    from analysis_lib import keep_pyarrow_out
    keep_pyarrow_out()
from analysis_lib import setup_django
setup_django()
import numpy as np, pandas as pd, shapely
from project.buildings.analysis import summarize_by_zip
import analysis_lib
from analysis_lib import _geo
from analysis_lib.regions import core, sweep

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024

# What the first call would import lazily, imported now: the cold call's peak is then the
# sweep's own memory (its heap, the driver's and SQLite's caches), not code being loaded.
import importlib
for name in ("pyproj", "tqdm.auto", "shapely.strtree", "adbc_driver_sqlite.dbapi",
             "pyarrow.compute", "analysis_lib.regions._chunks", "analysis_lib.db.spatialite"):
    if "pyarrow" in name or "adbc" in name:
        if {keep!r}:
            continue
    try:
        importlib.import_module(name)
    except ImportError:
        pass
# The database connection is open before the call too (analyze_buildings checks the tables).
from project.buildings.models import Building
Building.objects.exists()
rss_imports = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
cold = summarize_by_zip({state!r})
cold_peak = status("VmHWM:") - rss_imports

TIMES = {{}}
LOCK = threading.Lock()

def add(label, cpu, wall):
    with LOCK:
        c, w, n = TIMES.get(label, (0.0, 0.0, 0))
        TIMES[label] = (c + cpu, w + wall, n + 1)

def timed(label, fn):
    def wrapper(*args, **kwargs):
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add(label, time.thread_time() - c0, time.perf_counter() - w0)
    return wrapper

def timed_iter(label, fn):
    def wrapper(*args, **kwargs):
        it = iter(fn(*args, **kwargs))
        while True:
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                add(label, time.thread_time() - c0, time.perf_counter() - w0)
                return
            add(label, time.thread_time() - c0, time.perf_counter() - w0)
            yield item
    return wrapper

def patch(owner, name, label, kind=timed):
    fn = getattr(owner, name, None)
    if fn is None:
        return
    if isinstance(owner, type) and isinstance(owner.__dict__.get(name), classmethod):
        real = owner.__dict__[name].__func__
        setattr(owner, name, classmethod(kind(label, real)))
    else:
        setattr(owner, name, kind(label, fn))

# Today's steps.
try:
    from analysis_lib.regions import _chunks
except ImportError:
    _chunks = None
if _chunks is not None:
    patch(_chunks, "spatialite_chunks", "read: rows to arrays (driver + boxes + codes)", timed_iter)
    patch(_chunks, "frame_chunks", "read: iter_frames chunks", timed_iter)
    patch(_chunks, "blob_layout", "  of which: blob header check")
    patch(_chunks, "blob_to_wkb", "match: WKB of the GEOS rows (splice)")
patch(sweep, "match_boxes", "match: all (raster + GEOS)")
patch(_chunks, "blob_headers", "  of which: blob headers (class + box)") if _chunks else None
patch(core.Totals if hasattr(core, "Totals") else None, "add", "aggregate: Totals.add")
patch(core.Totals if hasattr(core, "Totals") else None, "raw", "finish: raw (medians)")
# The old steps.
import analysis_lib.loaders as loaders
patch(loaders, "iter_frames", "read: iter_frames chunks", timed_iter)
if hasattr(sweep, "match_chunk"):
    patch(sweep, "match_chunk", "match: all (raster + GEOS)")
patch(_geo, "wkb_polygon_bounds", "match: WKB boxes (numpy)")
if hasattr(core.Partials, "from_rows"):
    patch(core.Partials, "from_rows", "aggregate: Partials.from_rows")
    patch(core.Partials, "merge", "aggregate: Partials.merge")
    patch(core.Partials, "raw", "finish: raw (medians)")
patch(_geo.RegionGrid, "classify", "match: raster classify")
patch(_geo.RegionGrid, "__init__", "regions: RegionGrid build")
patch(core, "assign", "match: GEOS (STRtree + prepared contains)")
patch(core, "load_regions", "regions: load + equal-area")
patch(core, "finish", "finish: table")

results = []
for attempt in range({repeat}):
    TIMES.clear()
    rss0 = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    c0, w0 = time.process_time(), time.perf_counter()
    warm = summarize_by_zip({state!r})
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = status("VmHWM:") - rss0
    pd.testing.assert_frame_equal(warm, cold)
    results.append({{"wall": wall, "cpu": cpu, "peak": peak, "steps": dict(TIMES),
                     "load": os.getloadavg()[0]}})
best = min(results, key=lambda r: r["cpu"])
print(json.dumps({{"cold_peak": cold_peak, "rss_imports": rss_imports, "runs": results,
                  "lib": analysis_lib.__file__, "best": best,
                  "pyarrow": "pyarrow" in sys.modules}}))
"""


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> dict:
    """Run one mode in a fresh child process and return its JSON."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    if args.database:
        env["DATABASE_URL"] = f"spatialite:///{Path(args.database).resolve()}"
    code = CHILD.format(root=str(root), keep=mode == "dbapi", state=args.state, repeat=args.repeat)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
    )
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{mode}: the child failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Profile the modes asked for and print a table per mode."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="both", choices=("adbc", "dbapi", "both"))
    parser.add_argument("--database", default=None, help="SpatiaLite file (else DATABASE_URL)")
    parser.add_argument("--state", default="MA")
    parser.add_argument("--repeat", type=int, default=3, help="warm calls (best CPU shown)")
    parser.add_argument("--root", default=str(ROOT), help="checkout to profile (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON too")
    args = parser.parse_args()
    modes = ("adbc", "dbapi") if args.mode == "both" else (args.mode,)
    for mode in modes:
        start = time.strftime("%H:%M:%S", time.gmtime())
        data = run_mode(mode, args, Path(args.root))
        best = data["best"]
        print(f"\n== {mode} ({'with' if data['pyarrow'] else 'without'} pyarrow), {data['lib']}")
        print(f"   started {start} UTC, load average at the best call {best['load']:.2f}")
        for label, (cpu, wall, calls) in sorted(best["steps"].items()):
            print(f"   {label:<52} {cpu:6.3f} s CPU {wall:6.3f} s wall {calls:6d} calls")
        walls = ", ".join(f"{r['wall']:.2f}" for r in data["runs"])
        cpus = ", ".join(f"{r['cpu']:.2f}" for r in data["runs"])
        peaks = ", ".join(f"{r['peak']:.0f}" for r in data["runs"])
        print(f"   warm call: wall {walls} s; process CPU {cpus} s")
        print(f"   warm peak above RSS before the call: {peaks} MiB")
        print(
            f"   cold call peak above RSS after imports ({data['rss_imports']:.0f} MiB): "
            f"{data['cold_peak']:.0f} MiB"
        )
        best_wall = min(r["wall"] for r in data["runs"])
        print(
            f"   against issue 16's targets: best warm wall {best_wall:.2f} s = "
            f"{best_wall / TARGET_WALL:.2f}x the {TARGET_WALL:.1f} s target; memory "
            f"{data['cold_peak']:.0f} MiB = {data['cold_peak'] / TARGET_MIB:.2f}x the "
            f"{TARGET_MIB} MiB target"
        )
        if args.json:
            print(json.dumps(data))


if __name__ == "__main__":
    main()
