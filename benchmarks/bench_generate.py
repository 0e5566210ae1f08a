"""Benchmark ``generate_buildings``: the naive per-row insert against the project's path.

Each variant runs in its own child process (so peak RSS is its own) on its own
database: SpatiaLite files under ``data/bench_generate/`` (copies of one migrated
template), or, when ``DATABASE_URL`` is a ``postgis://`` URL, that database
(migrated first, every run with ``--replace``). The variants add one step each:

``naive``         executemany of ``GeomFromWKB(?, 4326)`` with every trigger on (the
                  R*Tree is updated row by row): the baseline, on ``--baseline-buildings``
                  rows because it is slow (its rate is per row, so the ratio holds).
``wkb-rebuild``   the same inserts with ``DisableSpatialIndex`` before and
                  ``CreateSpatialIndex`` after (the route measured in FACTS.md).
``blob-rebuild``  SpatiaLite BLOBs built with numpy instead of WKB parsed per row.
``rebuild``       and the per-row geometry-check and timestamp triggers dropped for the
                  load (restored after): the command's ``--method rebuild``.
``packed``        and the R*Tree bulk-loaded as a packed Hilbert R-tree instead of
                  ``CreateSpatialIndex``: the command's default.

On PostGIS only ``naive`` (COPY with the GiST index in place) and ``packed`` (index
dropped and recreated) differ.

``--regions MA ALL`` runs each variant for each ``--states`` value (default ``MA`` only):
the same number of buildings spread over 494 ZIP codes or over the 30,003 of every
state, with ratios against the first region (the per-cell cost of many small cells).

Times cover the whole command (ZIP rows, buildings, spatial index, commit) after a
warm-up that computes the ZIP cells (the ``zipcodes`` data load and Voronoi: under 1 s
for MA, about 2 s for ALL; printed as ``cells s``). After the timed part each child
checks the result: row count, and on SpatiaLite ``rtreecheck`` and the number of R*Tree
entries. The machine is shared:
the load average is printed before and after, and ratios are within one run.

Usage::

    .venv/bin/python benchmarks/bench_generate.py                      # 500k rows, 100k baseline
    .venv/bin/python benchmarks/bench_generate.py --buildings 100000 --repeat 3
    .venv/bin/python benchmarks/bench_generate.py --methods packed --buildings 2000000 \
        --regions MA ALL                                               # 494 vs 30,003 ZIPs
    DATABASE_URL=postgis://... .venv/bin/python benchmarks/bench_generate.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fresh import ChildFailed, rss, run_json, run_python  # noqa: E402

WORKDIR = ROOT / "data" / "bench_generate"


# variant -> (geometry, drop_row_triggers, index) of bulkload._Plan
VARIANTS: dict[str, tuple[str, bool, str]] = {
    "naive": ("wkb", False, "triggers"),
    "wkb-rebuild": ("wkb", False, "rebuild"),
    "blob-rebuild": ("blob", False, "rebuild"),
    "rebuild": ("blob", True, "rebuild"),
    "packed": ("blob", True, "packed"),
}


def child(args: argparse.Namespace) -> None:
    """Run one variant in this process and print a JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    import io

    from django.core.management import call_command
    from django.db import connection

    from project.buildings import bulkload, synthetic
    from project.buildings.models import Building

    bulkload._PLANS[args.method] = bulkload._Plan(*VARIANTS[args.method])
    if args.method not in bulkload.METHODS:
        bulkload.METHODS = (*bulkload.METHODS, args.method)

    cells0 = time.perf_counter()
    cells = synthetic.region_cells(synthetic.parse_states(args.states))  # warm-up, not timed
    cells_s = time.perf_counter() - cells0
    out = io.StringIO()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    call_command(
        "generate_buildings",
        states=args.states,
        buildings=args.buildings,
        seed=args.seed,
        method=args.method,
        batch_size=args.batch_size,
        replace=True,
        no_progress=True,
        stdout=out,
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    peak_rss_mb = rss().peak_mib
    count = Building.objects.count()
    check = None
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT rtreecheck('idx_buildings_building_boundary'), "
                "(SELECT count(*) FROM idx_buildings_building_boundary)"
            )
            check = list(cursor.fetchone())
    result = {
        "method": args.method,
        "states": args.states,
        "zips": len(cells),
        "cells_s": round(cells_s, 2),
        "rows": args.buildings,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "rows_per_s": round(args.buildings / wall),
        "peak_rss_mb": round(peak_rss_mb),
        "count_ok": count == args.buildings,
        "rtree": check,
        "message": out.getvalue().strip(),
    }
    print(json.dumps(result), flush=True)


def manage(url: str, *argv: str) -> None:
    try:
        run_python(ROOT / "manage.py", *argv, database_url=url, timeout=None)
    except ChildFailed as error:
        sys.exit(f"[bench] manage.py {' '.join(argv)} failed: {error}")


def run_variant(url: str, method: str, rows: int, states: str, args: argparse.Namespace) -> dict:
    cmd = [
        "--child",
        "--method",
        method,
        "--buildings",
        str(rows),
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
        "--states",
        states,
    ]
    try:
        return run_json(Path(__file__), *cmd, database_url=url, timeout=None)
    except ChildFailed as error:
        sys.exit(f"[bench] {method} failed: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buildings", type=int, default=500_000)
    parser.add_argument(
        "--baseline-buildings",
        type=int,
        default=100_000,
        help="rows for the slow naive baseline (default 100,000)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(VARIANTS),
        help=f"comma-separated variants (default all: {', '.join(VARIANTS)})",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (best is kept)")
    parser.add_argument(
        "--regions",
        nargs="+",
        default=["MA"],
        help="--states values to run each variant for (default MA; e.g. MA ALL)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the SpatiaLite files")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--states", default="MA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    url = os.environ.get("DATABASE_URL", "")
    postgis = url.startswith(("postgis://", "postgres://", "postgresql://"))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(VARIANTS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    print(f"[bench] load average before: {os.getloadavg()}", flush=True)
    if postgis:
        print(f"[bench] PostGIS: {url.split('@')[-1]}", flush=True)
        manage(url, "migrate", "--no-input", "-v", "0")
    else:
        WORKDIR.mkdir(parents=True, exist_ok=True)
        template = WORKDIR / "template.sqlite3"
        template.unlink(missing_ok=True)
        manage(f"spatialite:///{template}", "migrate", "--no-input", "-v", "0")

    results: list[dict] = []
    for states, method in [(s, m) for s in args.regions for m in methods]:
        rows = args.baseline_buildings if method == "naive" else args.buildings
        best = None
        for _ in range(args.repeat):
            if postgis:
                target = url
            else:
                path = WORKDIR / f"{method}.sqlite3"
                shutil.copyfile(WORKDIR / "template.sqlite3", path)
                target = f"spatialite:///{path}"
            result = run_variant(target, method, rows, states, args)
            if not postgis:
                result["file_mb"] = round(path.stat().st_size / 2**20)
                if not args.keep:
                    path.unlink()
            print(f"[bench] {json.dumps(result)}", flush=True)
            if best is None or result["rows_per_s"] > best["rows_per_s"]:
                best = result
        results.append(best)
    if not postgis and not args.keep:
        (WORKDIR / "template.sqlite3").unlink(missing_ok=True)
    print(f"[bench] load average after: {os.getloadavg()}", flush=True)

    first = args.regions[0]
    print()
    print(
        f"{'variant':<14} {'states':<8} {'ZIPs':>7} {'rows':>10} {'cells s':>8} {'wall s':>8} "
        f"{'cpu s':>7} {'rows/s':>9} {'vs naive':>9} {'vs ' + first:>9} {'peak RSS MB':>12} "
        f"{'rtree':>14}"
    )
    for r in results:
        base = next(
            (b for b in results if b["method"] == "naive" and b["states"] == r["states"]), None
        )
        same = next(
            (b for b in results if b["method"] == r["method"] and b["states"] == first), None
        )
        ratio = f"{r['rows_per_s'] / base['rows_per_s']:.2f}x" if base else "-"
        vs_first = f"{r['rows_per_s'] / same['rows_per_s']:.2f}x" if same else "-"
        rtree = "-" if r["rtree"] is None else f"{r['rtree'][0]} {r['rtree'][1]:,}"
        print(
            f"{r['method']:<14} {r['states'][:8]:<8} {r['zips']:>7,} {r['rows']:>10,} "
            f"{r['cells_s']:>8.1f} {r['wall_s']:>8.1f} {r['cpu_s']:>7.1f} {r['rows_per_s']:>9,} "
            f"{ratio:>9} {vs_first:>9} {r['peak_rss_mb']:>12,} {rtree:>14}"
        )
    bad = [
        r["method"] for r in results if not r["count_ok"] or (r["rtree"] and r["rtree"][0] != "ok")
    ]
    if bad:
        sys.exit(f"[bench] wrong result for: {', '.join(bad)}")


if __name__ == "__main__":
    main()
