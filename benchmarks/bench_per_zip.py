"""Per-ZIP analysis benchmark: wall time and peak RSS of every way to analyse a state by ZIP.

Each measurement runs in a fresh Python process (so its peak RSS is its own), on one or two
databases (the full generated Massachusetts and a tenth of it), and the table reports ratios
against the baselines measured in the same run:

* ``sweep``, ``orm``, ``database``: ``summarize_by_zip(state, strategy=...)`` on every ZIP
  with their defaults (the sweep matches chunks in a background thread while ADBC fetches
  the next one; ``sweep (no worker thread)``: ``workers=0``), in a process where
  ``import pandas`` also loads pyarrow (pandas 2.x does whenever it is installed; the sweep
  then reads with ADBC);
* ``sweep (pyarrow kept out)``: the same sweep in a process that first calls
  ``keep_pyarrow_out()``, exactly as ``manage.py analyze_buildings`` does for CSV output
  (pandas without pyarrow, rows read with DB-API);
* ``stock values loop``: ``Building.objects.filter(boundary__within=zip.boundary)
  .values_list(...)`` per ZIP, GeoDjango's own lookup (a full table scan per ZIP on
  SpatiaLite), run on a sample of ZIPs evenly spread in code order and extrapolated to all ZIPs;
* ``seed instances loop``: the seed's loop, ``[b for b in Building.objects.filter(
  boundary__within=zip.boundary).iterator()]``, model instances kept in a list, sampled likewise.

Usage::

    python benchmarks/bench_per_zip.py \\
        --db full=spatialite:///data/buildings.sqlite3 \\
        --db tenth=spatialite:///data/perzip_tenth.sqlite3 --sample 8 --out reports/bench_per_zip.md

Timings on a shared 2-core machine are noisy: compare the ratios, the CPU seconds (less
sensitive to other jobs than wall seconds) and the load average printed with the table.
``--engines`` instead compares GEOS and SpatiaLite ``within`` pair by pair on the first database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fresh import ChildFailed, rss, run_json  # noqa: E402  (needs ROOT on sys.path)

KEPT_OUT = "sweep (pyarrow kept out)"
METHODS = (
    "sweep",
    KEPT_OUT,
    "sweep (no worker thread)",
    "orm",
    "database",
    "stock values loop",
    "seed instances loop",
)
VALUE_FIELDS = ("footprint_m2", "height_m", "year_built", "use_type")


def child(method: str, state: str, sample: int, predicate: str) -> dict:
    """Run one measurement in this (fresh) process and return what it saw."""
    if method == KEPT_OUT:  # first, before anything imports pandas (as analyze_buildings does)
        from analysis_lib import keep_pyarrow_out

        if not keep_pyarrow_out():
            raise RuntimeError("keep_pyarrow_out() came too late in the benchmark child")
    from analysis_lib import setup_django

    setup_django("project.settings")
    import numpy as np  # noqa: F401  (imports are not part of the measurement)
    import pandas as pd  # noqa: F401

    from analysis_lib import Sweep
    from project.buildings.analysis import make_strategy, summarize_by_zip
    from project.buildings.models import Building, ZipCode

    zips = ZipCode.objects.filter(state=state).order_by("code")
    n_zips = zips.count()
    n_buildings = Building.objects.count()
    baseline = rss().current_mib
    start = time.perf_counter()
    cpu_start = time.process_time()
    if method in ("sweep", KEPT_OUT, "sweep (no worker thread)", "orm", "database"):
        name, workers = method.split()[0], (0 if "no worker" in method else None)
        strategy = Sweep(workers=workers) if name == "sweep" else make_strategy(name)
        summary = summarize_by_zip(state, strategy=strategy, predicate=predicate)
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_start,
            "zips_run": n_zips,
            "assigned": int(summary["n_buildings"].sum()),
            "extrapolated": False,
            "baseline_mib": baseline,
            "peak_mib": rss().peak_mib,
            "zips": n_zips,
            "buildings": n_buildings,
            "pyarrow": sys.modules.get("pyarrow") is not None,
        }
    codes = list(zips.values_list("code", flat=True))
    step = max(1, len(codes) // sample)
    chosen = codes[step // 2 :: step][:sample]
    assigned = 0
    for z in ZipCode.objects.filter(code__in=chosen):
        queryset = Building.objects.filter(boundary__within=z.boundary)
        if method == "stock values loop":
            rows = list(queryset.values_list(*VALUE_FIELDS))
        else:
            rows = [b for b in queryset.iterator()]  # the seed's loop: model instances
        assigned += len(rows)
        del rows
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds * n_zips / len(chosen),
        "cpu_seconds": (time.process_time() - cpu_start) * n_zips / len(chosen),
        "sample_seconds": seconds,
        "zips_run": len(chosen),
        "assigned": assigned,
        "extrapolated": True,
        "baseline_mib": baseline,
        "peak_mib": rss().peak_mib,
        "zips": n_zips,
        "buildings": n_buildings,
        "pyarrow": sys.modules.get("pyarrow") is not None,
    }


def run_child(url: str, method: str, state: str, sample: int, predicate: str) -> dict:
    args = ["--child", method, "--state", state, "--sample", str(sample), "--predicate", predicate]
    try:
        return run_json(Path(__file__), *args, database_url=url, cwd=Path.cwd(), timeout=None)
    except ChildFailed as error:
        raise SystemExit(f"{method} on {url} failed:\n{error}") from None


def warm_page_cache(url: str) -> None:
    """Read a SpatiaLite file once so the first measurement does not pay for a cold disk."""
    if url.startswith("spatialite:"):
        import dj_database_url

        with open(dj_database_url.parse(url)["NAME"], "rb") as handle:
            while handle.read(1 << 24):
                pass


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| data | method | wall s | CPU s | peak RSS MiB | RSS before the call MiB "
        "| pyarrow loaded | buildings assigned | note |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for scale, by_method in results.items():
        for method, r in by_method.items():
            note = ""
            if r["extrapolated"]:
                note = (
                    f"{r['zips_run']} of {r['zips']} ZIPs sampled ({r['sample_seconds']:.1f} s), "
                    f"time extrapolated; buildings and RSS are for the sample"
                )
            lines.append(
                f"| {scale} ({r['buildings']:,} buildings, {r['zips']} ZIPs) | {method} | "
                f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['peak_mib']:.0f} | "
                f"{r['baseline_mib']:.0f} | {'yes' if r['pyarrow'] else 'no'} | "
                f"{r['assigned']:,} | {note} |"
            )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, dict]], full: str, tenth: str | None) -> list[str]:
    out = []
    r = results[full]
    sweep = r["sweep"]
    checks = [("sweep wall time", sweep["seconds"], "< 10 s", sweep["seconds"] < 10)]
    if KEPT_OUT in r:
        kept_out = r[KEPT_OUT]["seconds"]
        checks.append((f"{KEPT_OUT} wall time", kept_out, "< 10 s", kept_out < 10))
    if "orm" in r:
        checks.append(("indexed orm loop", r["orm"]["seconds"], "< 30 s", r["orm"]["seconds"] < 30))
    if "stock values loop" in r:
        speedup = r["stock values loop"]["seconds"] / sweep["seconds"]
        checks.append(
            ("sweep speed-up over the stock values loop", speedup, ">= 100x", speedup >= 100)
        )
    if "seed instances loop" in r:
        speedup = r["seed instances loop"]["seconds"] / sweep["seconds"]
        checks.append(("sweep speed-up over the seed instances loop", speedup, "(none)", None))
    if tenth is not None:
        for method in [m for m in ("sweep", KEPT_OUT) if m in r and m in results[tenth]]:
            growth = r[method]["peak_mib"] / results[tenth][method]["peak_mib"]
            checks.append((f"{method} peak RSS, full / tenth", growth, "<= 1.3", growth <= 1.3))
    for name, value, target, ok in checks:
        verdict = "" if ok is None else ("met" if ok else "NOT met")
        out.append(f"- {name}: {value:.3g} (target {target}) {verdict}".rstrip())
    # The target is 200 MB (decimal): 190.7 MiB. Say which sweep row meets it.
    target_mib = 200e6 / 2**20
    rows = [m for m in ("sweep", KEPT_OUT) if m in r]
    verdicts = ", ".join(
        f"{m}: {r[m]['peak_mib']:.1f} MiB {'met' if r[m]['peak_mib'] < target_mib else 'NOT met'}"
        for m in rows
    )
    out.append(f"- sweep peak RSS < 200 MB ({target_mib:.1f} MiB): {verdicts}")
    if KEPT_OUT in r:
        saved = sweep["peak_mib"] - r[KEPT_OUT]["peak_mib"]
        slower = r[KEPT_OUT]["seconds"] / sweep["seconds"]
        out.append(
            f"- keeping pyarrow out: peak {saved:.0f} MiB lower, baseline before the call "
            f"{sweep['baseline_mib'] - r[KEPT_OUT]['baseline_mib']:.0f} MiB lower, wall time "
            f"x{slower:.2f} (DB-API instead of ADBC)"
        )
    assigned = {m: v["assigned"] for m, v in r.items() if not v["extrapolated"]}
    out.append(f"- buildings assigned by each full strategy ({full}): {assigned}")
    return out


def engines(url: str, state: str) -> str:
    """Compare GEOS (shapely) and SpatiaLite ``within`` pair by pair on a SpatiaLite database.

    Three answers over every building: shapely's prepared ``contains`` (the GEOS bundled with
    shapely), SpatiaLite's ``Within`` through the R*Tree with the float32 margin (the system
    GEOS), and the same without the margin (the prefilter measured before this project). Run in
    this process: ``DATABASE_URL`` is set before Django starts.
    """
    os.environ["DATABASE_URL"] = url
    from analysis_lib import setup_django

    setup_django("project.settings")
    import shapely
    from django.db import connection

    from analysis_lib import iter_frames, read_frame
    from analysis_lib.lookups import FLOAT32_MARGIN
    from project.buildings.analysis import resolve_zips
    from project.buildings.models import Building

    if not connection.ops.spatialite:
        raise SystemExit("--engines compares with SpatiaLite: give a spatialite:/// database")
    zip_frame = read_frame(resolve_zips(state), ["code", "boundary"], index="code")
    codes, zips = zip_frame.index.to_numpy(), zip_frame["boundary"].to_numpy()
    shapely.prepare(zips)
    geos = set()
    for frame in iter_frames(Building.objects.order_by(), ["id", "boundary"], 50_000):
        zip_idx, building_idx = shapely.STRtree(frame["boundary"].to_numpy()).query(
            zips, predicate="contains"
        )
        ids = frame["id"].to_numpy()[building_idx]
        geos.update(zip(codes[zip_idx].tolist(), ids.tolist(), strict=True))

    def spatialite(margin: float) -> set:
        m = repr(margin)
        sql = (
            "WITH z AS (SELECT code, boundary AS zb, MbrMinX(boundary) AS x0, "
            "MbrMaxX(boundary) AS x1, MbrMinY(boundary) AS y0, MbrMaxY(boundary) AS y1 "
            "FROM buildings_zipcode WHERE state = %s) "
            "SELECT z.code, b.id FROM z CROSS JOIN idx_buildings_building_boundary AS r "
            f"CROSS JOIN buildings_building AS b WHERE r.xmin >= z.x0 - ABS(z.x0) * {m} "
            f"AND r.xmax <= z.x1 + ABS(z.x1) * {m} AND r.ymin >= z.y0 - ABS(z.y0) * {m} "
            f"AND r.ymax <= z.y1 + ABS(z.y1) * {m} "
            "AND b.ROWID = r.pkid AND Within(b.boundary, z.zb) > 0"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [state])
            return set(map(tuple, cursor.fetchall()))

    padded, unpadded = spatialite(FLOAT32_MARGIN), spatialite(0.0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT geos_version(), spatialite_version()")
        system_geos, spatialite_version = cursor.fetchone()
    lines = [
        f"- (ZIP, building) pairs with `within`, {Building.objects.count():,} buildings:",
        f"  - GEOS {shapely.geos_version_string} (shapely, prepared contains): {len(geos):,}",
        f"  - SpatiaLite {spatialite_version} `Within` (GEOS {system_geos}), R*Tree prefilter "
        f"widened by 2**-22: {len(padded):,}",
        f"  - the same, prefilter not widened: {len(unpadded):,}",
        f"- in GEOS only: {sorted(geos - padded)[:10]}; in SpatiaLite only: "
        f"{sorted(padded - geos)[:10]}",
        f"- lost by the unwidened prefilter: {len(padded - unpadded)}",
    ]
    for code, building_id in sorted(padded - unpadded)[:10]:
        z = zip_frame.loc[code, "boundary"]
        building = Building.objects.get(id=building_id).boundary
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT xmin, xmax, ymin, ymax FROM idx_buildings_building_boundary "
                "WHERE pkid = %s",
                [building_id],
            )
            rx0, rx1, ry0, ry1 = cursor.fetchone()
        zx0, zy0, zx1, zy1 = z.bounds
        bx0, by0, bx1, by1 = building.extent
        inside = min(bx0 - zx0, zx1 - bx1, by0 - zy0, zy1 - by1)
        out = max(zx0 - rx0, rx1 - zx1, zy0 - ry0, ry1 - zy1)
        lines.append(
            f"  - ZIP {code}, building {building_id}: its box is {inside:.2g} degrees inside the "
            f"ZIP's box, the R*Tree's float32 box {out:.2g} degrees outside it"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--db",
        action="append",
        metavar="NAME=DATABASE_URL",
        help="A database to measure (repeatable; the first is the full scale, the second, if "
        "any, the tenth). Default: full=the default database.",
    )
    parser.add_argument("--state", default="MA")
    parser.add_argument("--predicate", default="within", choices=("within", "centroid"))
    parser.add_argument("--sample", type=int, default=8, help="ZIPs sampled by the stock loops.")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="Comma-separated subset of: " + ", ".join(METHODS),
    )
    parser.add_argument("--out", type=Path, help="Also write the markdown table to this file.")
    parser.add_argument(
        "--engines",
        action="store_true",
        help="Instead of timing, compare GEOS and SpatiaLite `within` pair by pair on the first "
        "--db (SpatiaLite).",
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.state, args.sample, args.predicate)))
        return
    if args.engines:
        first = (args.db or [f"full={os.environ.get('DATABASE_URL', '')}"])[0]
        print(engines(first.split("=", 1)[1], args.state))
        return

    dbs = dict(
        item.split("=", 1) for item in (args.db or [f"full={os.environ.get('DATABASE_URL', '')}"])
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {METHODS}")
    results: dict[str, dict[str, dict]] = {}
    for name, url in dbs.items():
        warm_page_cache(url)
        results[name] = {}
        for method in methods:
            print(f"[bench] {name}: {method} ...", file=sys.stderr, flush=True)
            results[name][method] = run_child(url, method, args.state, args.sample, args.predicate)
            print(f"[bench]   {results[name][method]}", file=sys.stderr, flush=True)
    names = list(dbs)
    load = os.getloadavg()
    text = "\n".join(
        [
            f"Per-ZIP analysis of {args.state} ({args.predicate}), {os.cpu_count()} CPUs, "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end.",
            "",
            table(results),
            "",
            *ratios(results, names[0], names[1] if len(names) > 1 else None),
        ]
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
