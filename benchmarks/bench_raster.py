"""The region raster (``RegionGrid``) on real regions: the tiles against the raster before them.

For each database given, the regions (every ZipCode) and a sample of the buildings (every
``--every``-th fetch of ``--chunk`` rows, read as WKB) are loaded once; then, in the same
process:

* ``before``: ``RegionGrid`` of ``analysis_lib/_geo.py`` at ``--baseline-rev`` (default
  34b4655, the last commit with one uniform raster over the regions' extent, 2**21 cells),
  read with ``git show``; the baseline;
* ``before, same cells``: the same with the cell budget of the tiled raster;
* ``tiled``: ``RegionGrid(regions)`` of this checkout, as the sweep builds it.

Printed per raster: tiles, cells and bytes, build CPU seconds, tracemalloc's peak during the
build, the share of the sample's buildings left to GEOS (SLOW), the CPU of ``match_chunk``
over the sample in ``--chunk``-row chunks (boxes, classify, GEOS for the SLOW rows with
prepared regions), and the ratios tiled / uniform. CPU seconds (``time.process_time``), best
of ``--repeat``: the machine may be shared.

Usage::

    python benchmarks/bench_raster.py --db ma=spatialite:////data/ma_2000000.sqlite3 \\
        --db all=spatialite:////data/all_2000000.sqlite3 [--every 8] [--chunk 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def _load(every: int, chunk: int):
    import numpy as np
    import shapely

    from analysis_lib.loaders import iter_frames
    from project.buildings.models import Building, ZipCode

    boundaries = ZipCode.objects.order_by("code").values_list("boundary", flat=True)
    regions = np.array([shapely.from_wkb(bytes(g.wkb)) for g in boundaries], dtype=object)
    sample = []
    frames = iter_frames(Building.objects.order_by(), ["boundary"], chunk, geometry="wkb")
    for i, frame in enumerate(frames):
        if i % every == 0:
            sample.append(frame["boundary"].to_numpy())
    return regions, np.concatenate(sample)


def _baseline_class(rev: str):
    """``RegionGrid`` as it was at git revision ``rev`` (its module is self-contained)."""
    import importlib.util
    import tempfile

    source = subprocess.run(
        ["git", "show", f"{rev}:analysis_lib/_geo.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("baseline_geo", handle.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(handle.name)
    return module.RegionGrid


def _measure(regions, wkb, chunk: int, repeat: int, make) -> dict:
    import numpy as np
    import shapely

    from analysis_lib._geo import RegionGrid, wkb_polygon_bounds
    from analysis_lib.regions.core import match_chunk

    prepared = shapely.from_wkb(shapely.to_wkb(regions))
    shapely.prepare(prepared)
    build = []
    for _ in range(repeat):
        start = time.process_time()
        grid = make()
        build.append(time.process_time() - start)
    tracemalloc.start()
    make()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nbytes = getattr(grid, "nbytes", grid.cells.nbytes)
    slow = float(np.mean(grid.classify(wkb_polygon_bounds(wkb)) == RegionGrid.SLOW))
    match = []
    for _ in range(repeat):
        start = time.process_time()
        pairs = 0
        for first in range(0, len(wkb), chunk):
            region_idx, _ = match_chunk(
                wkb[first : first + chunk], prepared, grid, "within", "polygon"
            )
            pairs += len(region_idx)
        match.append(time.process_time() - start)
    return {
        "tiles": len(getattr(grid, "cell_size", [0])),
        "cells": int(grid.cells.size),
        "mib": nbytes / MIB,
        "build": min(build),
        "build_peak_mib": peak / MIB,
        "slow": slow,
        "match": min(match),
        "pairs": pairs,
    }


RASTERS = ("before", "before, same cells", "tiled")


def _child(db: str, rev: str, every: int, chunk: int, repeat: int, out: str) -> None:
    os.environ["DATABASE_URL"] = db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    from analysis_lib._geo import RegionGrid

    django.setup()
    regions, wkb = _load(every, chunk)
    record = {"regions": len(regions), "sample": len(wkb)}
    before = _baseline_class(rev)
    cells = RegionGrid(regions).target_cells
    makers = (
        lambda: before(regions),
        lambda: before(regions, target_cells=cells),
        lambda: RegionGrid(regions),
    )
    for label, make in zip(RASTERS, makers, strict=True):
        record[label] = _measure(regions, wkb, chunk, repeat, make)
    Path(out).write_text(json.dumps(record))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument(
        "--baseline-rev", default="34b4655", help="git revision of the raster to compare with."
    )
    parser.add_argument(
        "--db", action="append", default=[], help="label=DATABASE_URL (repeatable)."
    )
    parser.add_argument("--every", type=int, default=8, help="Sample every N-th fetch.")
    parser.add_argument("--chunk", type=int, default=10_000, help="Rows per fetch and chunk.")
    parser.add_argument("--repeat", type=int, default=3, help="Best of N (CPU seconds).")
    args = parser.parse_args(argv)
    if args.child:
        db, rev, every, chunk, repeat, out = args.child
        _child(db, rev, int(every), int(chunk), int(repeat), out)
        return 0
    if not args.db:
        parser.error("give at least one --db label=DATABASE_URL")
    print(f"load average {os.getloadavg()[0]:.1f}; CPU seconds, best of {args.repeat}")
    print(
        "| regions | raster | tiles | cells | MiB | build s | build peak MiB | SLOW share "
        "| match_chunk s | pairs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for item in args.db:
        label, _, db = item.partition("=")
        out = Path(f"/tmp/bench_raster_{os.getpid()}_{label}.json")
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                db,
                args.baseline_rev,
                str(args.every),
                str(args.chunk),
                str(args.repeat),
                str(out),
            ],
            check=True,
            cwd=ROOT,
        )
        record = json.loads(out.read_text())
        out.unlink()
        for raster in RASTERS:
            r = record[raster]
            print(
                f"| {label} ({record['regions']:,}) | {raster} | {r['tiles']} | {r['cells']:,} "
                f"| {r['mib']:.1f} | {r['build']:.2f} | {r['build_peak_mib']:.1f} "
                f"| {100 * r['slow']:.1f} % | {r['match']:.2f} | {r['pairs']:,} |"
            )
        u, t = record["before"], record["tiled"]
        assert len({record[r]["pairs"] for r in RASTERS}) == 1, "the rasters must agree"
        print(
            f"| {label} | tiled / before | | | {t['mib'] / u['mib']:.2f}x "
            f"| {t['build'] / u['build']:.2f}x | | {t['slow'] / u['slow']:.2f}x "
            f"| {t['match'] / u['match']:.2f}x | same |"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end; sample: {record['sample']:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
