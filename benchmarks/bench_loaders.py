"""Benchmark: QuerySet -> pandas, five ways, on the same Building rows, side by side.

    .venv/bin/python benchmarks/bench_loaders.py                 # 1,000,000 rows, 3 repetitions
    .venv/bin/python benchmarks/bench_loaders.py --rows 200000 --repeat 1   # quick look

Every measurement runs in a fresh subprocess that imports the same modules and opens the
database connection first; then the peak-RSS counter is reset (``/proc/self/clear_refs``) and
the method runs, so "peak MiB" is the process's peak resident memory above that baseline. The
methods are interleaved inside each repetition so machine noise hits them alike; the table shows
the median of the repetitions. Two runs: the plain columns (id, footprint_m2, height_m,
year_built, use_type), then the same with the ``boundary`` geometry.

Methods:

1. ``instances``: ``list(qs.only(*fields).iterator())``: model instances, the naive way;
2. ``django-pandas``: ``django_pandas.io.read_frame(qs, fieldnames=fields)`` with its defaults
   (``verbose=True`` swaps choice values for their labels), and again with ``verbose=False``;
3. ``pandas.read_sql``: on the very SQL ``read_frame`` runs, on the raw DB-API connection
   (geometry stays WKB bytes: pandas cannot decode it);
4. ``raw cursor``: DB-API ``fetchall()`` + ``DataFrame.from_records`` (+ ``shapely.from_wkb`` on
   the geometry column): the practical limit, with no dtype mapping;
5. ``read_frame`` and ``iter_frames`` (the consumer counts rows and drops each chunk), and
   ``iter_frames`` on the first 100,000 rows, for the memory-flatness ratio; each once with
   ``engine="dbapi"`` (Django's cursor) and once with ``engine="adbc"`` (Arrow ADBC driver);
   ``read_frame adbc`` with its default ``parallel`` (primary-key ranges read at once, one
   per core up to 2), ``read_frame adbc parallel=1`` in one read;
6. ``read_frame adbc server-bound``: ``read_frame adbc`` with the parameters sent to the server
   as bind parameters, as before the literal binding (``loaders._adbc.BIND_LITERALS = False``):
   on PostgreSQL the ADBC driver then cannot stream with ``COPY`` (the same as ``read_frame
   adbc`` on SQLite, where nothing changes).

The rows are the first ``--rows`` buildings by id, selected by ``id <= <last id>`` (a filter:
a slice would keep read_frame from splitting the read).

The database is ``DATABASE_URL`` or ``--database-url`` (default: the SpatiaLite file
``data/loaders.sqlite3``); it is migrated and filled with synthetic buildings (seeded, raw SQL
inserts) when it holds fewer than ``--rows`` buildings. On PostGIS run it through
``scripts/postgis.sh run -- .venv/bin/python benchmarks/bench_loaders.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fresh import parse_json_line, reset_peak_rss, rss, run_python  # noqa: E402

DEFAULT_URL = f"spatialite:///{ROOT / 'data' / 'loaders.sqlite3'}"
PLAIN_FIELDS = ["id", "footprint_m2", "height_m", "year_built", "use_type"]
GEOMETRY_FIELDS = [*PLAIN_FIELDS, "boundary"]
SMALL_ROWS = 100_000
METHODS = [
    "instances",
    "django-pandas",
    "django-pandas verbose=False",
    "pandas.read_sql",
    "raw cursor",
    "read_frame",
    "iter_frames",
    "iter_frames 100k",
    "read_frame adbc",
    "read_frame adbc parallel=1",
    "read_frame adbc server-bound",
    "iter_frames adbc",
    "iter_frames adbc 100k",
]


# ---------------------------------------------------------------------------
# Child: one method, one measurement
# ---------------------------------------------------------------------------


def _child(method: str, fields: list[str], rows: int, chunk_size: int) -> dict:
    # Load shapely/pyproj before the database connection (see the loaders' tests).
    import pyproj  # noqa: F401
    import shapely

    from analysis_lib import setup_django

    setup_django("project.settings")
    import warnings

    import pandas as pd
    from django.db import connection
    from django_pandas.io import read_frame as dp_read_frame

    from analysis_lib import iter_frames, read_frame
    from analysis_lib.loaders._plan import make_plan as _make_plan
    from project.buildings.models import Building

    if method.endswith("server-bound"):
        from analysis_lib.loaders import _adbc

        _adbc.BIND_LITERALS = False  # the path before literal binding: no COPY on PostgreSQL

    limit = SMALL_ROWS if method.endswith(" 100k") else rows
    engine = "adbc" if " adbc" in method else "dbapi"
    parallel = 1 if method.endswith("parallel=1") else None
    # The first `limit` rows by id, as a filter rather than a slice: a slice would keep
    # read_frame from reading primary-key ranges in parallel.
    last_id = Building.objects.order_by("id").values_list("id", flat=True)[limit - 1]
    qs = Building.objects.filter(id__lte=last_id).order_by("id")
    plan = _make_plan(qs, fields, "wkb")  # the SQL read_frame runs (geometry as AsWKB)
    names = [c.name for c in plan.columns]
    connection.ensure_connection()
    raw = connection.connection
    sql = plan.sql.replace("%s", "?") if connection.vendor == "sqlite" else plan.sql
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM buildings_building")

    def run():
        if method == "instances":
            return len(list(qs.only(*fields).iterator()))
        if method == "django-pandas":  # its defaults: choices replaced by their labels
            return len(dp_read_frame(qs, fieldnames=fields))
        if method == "django-pandas verbose=False":  # raw values, as read_frame gives
            return len(dp_read_frame(qs, fieldnames=fields, verbose=False))
        if method == "pandas.read_sql":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # psycopg is not SQLAlchemy
                return len(pd.read_sql(sql, raw, params=plan.params or None))
        if method == "raw cursor":
            cur = raw.cursor()
            cur.execute(sql, plan.params)
            df = pd.DataFrame.from_records(cur.fetchall(), columns=names)
            cur.close()
            if "boundary" in df:
                df["boundary"] = shapely.from_wkb(df["boundary"].to_numpy())
            return len(df)
        if method.startswith("read_frame"):
            return len(
                read_frame(qs, fields, chunk_size=chunk_size, engine=engine, parallel=parallel)
            )
        if method.startswith("iter_frames"):
            n = 0
            for chunk in iter_frames(qs, fields, chunk_size=chunk_size, engine=engine):
                n += len(chunk)
            return n
        raise ValueError(f"unknown method {method!r}")

    reset_peak_rss()  # VmHWM (peak RSS) back to the current RSS
    base = rss().current_mib
    t0 = time.perf_counter()
    n = run()
    seconds = time.perf_counter() - t0
    return {"method": method, "rows": n, "seconds": seconds, "peak_mib": rss().peak_mib - base}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _fill(rows: int, seed: int) -> None:
    """Make sure the database holds at least ``rows`` synthetic buildings."""
    from analysis_lib import setup_django

    setup_django("project.settings")
    import numpy as np
    import shapely
    from django.core.management import call_command
    from django.db import connection, transaction

    from project.buildings.models import Building, ZipCode

    call_command("migrate", verbosity=0)
    have = Building.objects.count()
    if have >= rows:
        print(f"[bench] {have:,} buildings in {connection.settings_dict['NAME']}", flush=True)
        return
    print(f"[bench] filling {rows - have:,} synthetic buildings ...", flush=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    spatialite = connection.vendor == "sqlite"
    from_wkb = "GeomFromWKB" if spatialite else "ST_GeomFromWKB"
    uses = np.array(["residential", "commercial", "industrial", "institutional", "other"])
    with transaction.atomic(), connection.cursor() as cursor:
        if spatialite:  # the R*Tree is rebuilt once at the end: ~8x faster than row by row
            cursor.execute("SELECT DisableSpatialIndex('buildings_building', 'boundary')")
            cursor.execute('DROP TABLE IF EXISTS "idx_buildings_building_boundary"')
        if not ZipCode.objects.exists():
            zips = []
            for i in range(100):  # a 10 x 10 grid over Massachusetts' bounding box
                x0, y0 = -73.5 + (i % 10) * 0.35, 41.2 + (i // 10) * 0.17
                box = shapely.MultiPolygon([shapely.box(x0, y0, x0 + 0.35, y0 + 0.17)])
                zips.append((f"{1000 + i:05d}", shapely.to_wkb(box, output_dimension=2)))
            cursor.executemany(
                "INSERT INTO buildings_zipcode (code, state, city, county, boundary) "
                f"VALUES (%s, 'MA', '', '', {from_wkb}(%s, 4326))",
                zips,
            )
        zip_ids = np.array(sorted(ZipCode.objects.values_list("id", flat=True)))
        batch = 100_000
        for start in range(have, rows, batch):
            n = min(batch, rows - start)
            x, y = rng.uniform(-73.5, -70.0, n), rng.uniform(41.2, 42.9, n)
            w = rng.uniform(5e-5, 3e-4, n)
            wkb = shapely.to_wkb(shapely.box(x, y, x + w, y + 0.8 * w), output_dimension=2)
            area = w * w * 0.8 * 6e9
            height = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(3, 40, n))
            year = np.where(rng.random(n) < 0.3, -1, rng.integers(1700, 2024, n))
            use = uses[rng.integers(0, len(uses), n)]
            cell = np.clip(((x + 73.5) / 0.35).astype(int), 0, 9) + 10 * np.clip(
                ((y - 41.2) / 0.17).astype(int), 0, 9
            )
            zip_id = np.where(rng.random(n) < 0.05, -1, zip_ids[cell % len(zip_ids)])
            values = [
                (
                    wkb[i],
                    float(area[i]),
                    None if np.isnan(height[i]) else float(height[i]),
                    None if year[i] < 0 else int(year[i]),
                    str(use[i]),
                    f"B{start + i}",
                    None if zip_id[i] < 0 else int(zip_id[i]),
                )
                for i in range(n)
            ]
            cursor.executemany(
                "INSERT INTO buildings_building (boundary, footprint_m2, height_m, year_built, "
                f"use_type, source_id, zip_id) VALUES ({from_wkb}(%s, 4326), %s, %s, %s, %s, "
                "%s, %s)",
                values,
            )
            print(f"[bench]   {start + n:,} rows, {time.perf_counter() - t0:.0f} s", flush=True)
        if spatialite:
            cursor.execute("SELECT CreateSpatialIndex('buildings_building', 'boundary')")
    if not spatialite:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE buildings_building")
    print(f"[bench] filled in {time.perf_counter() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------
# Parent: run everything, print the table
# ---------------------------------------------------------------------------


def _measure(method: str, fields: list[str], args: argparse.Namespace, env: dict) -> dict:
    cmd = [
        "--child",
        method,
        "--fields",
        ",".join(fields),
        "--rows",
        str(args.rows),
        "--chunk-size",
        str(args.chunk_size),
    ]
    out = run_python(Path(__file__), *cmd, env=env, timeout=None, check=False)
    if out.returncode != 0:
        # e.g. django-pandas on a pandas it does not support: say so, measure the rest.
        error = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"method": method, "failed": error}
    return parse_json_line(out.stdout)


def _table(label: str, results: dict[str, list[dict]], rows: int) -> tuple[str, dict]:
    failed = {m: rs[0]["failed"] for m, rs in results.items() if any("failed" in r for r in rs)}
    med = {
        m: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_mib": statistics.median(r["peak_mib"] for r in rs),
            "rows": rs[0]["rows"],
        }
        for m, rs in results.items()
        if m not in failed
    }
    for m in med.values():
        m["rows_per_s"] = m["rows"] / m["seconds"]
    anchors = [a for a in ("django-pandas", "raw cursor", "pandas.read_sql") if a in med]

    def ratio(m: dict, anchor: str) -> str:
        return f"{m['rows_per_s'] / med[anchor]['rows_per_s']:.2f}x" if anchor in med else "-"

    lines = [
        f"{label}: {rows:,} rows, median of {len(next(iter(results.values())))} runs",
        "",
        "| method | rows | time (s) | rows/s | peak MiB above baseline | "
        + " | ".join(f"speed vs {a}" for a in anchors)
        + " |",
        "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(anchors),
    ]
    for name, m in med.items():
        lines.append(
            f"| {name} | {m['rows']:,} | {m['seconds']:.2f} | {m['rows_per_s']:,.0f} | "
            f"{m['peak_mib']:.0f} | " + " | ".join(ratio(m, a) for a in anchors) + " |"
        )
    for name, error in failed.items():
        lines.append(f"| {name} | failed: {error[:120]} |" + " |" * (4 + len(anchors)))
    return "\n".join(lines), med


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--runs", default="plain,geometry", help="plain, geometry or both")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, help="also write the medians to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fields", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    os.environ["DATABASE_URL"] = args.database_url
    if args.child:
        result = _child(args.child, args.fields.split(","), args.rows, args.chunk_size)
        print(json.dumps(result))
        return 0

    _fill(args.rows, args.seed)
    # Parallel reads need a free core: say how busy the machine is.
    print(f"[bench] {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    env = {"DATABASE_URL": args.database_url}
    methods = args.methods.split(",")
    runs = {"plain": PLAIN_FIELDS, "geometry": GEOMETRY_FIELDS}
    report: dict[str, dict] = {}
    for run in args.runs.split(","):
        fields = runs[run]
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for rep in range(args.repeat):
            for method in methods:
                r = _measure(method, fields, args, env)
                results[method].append(r)
                if "failed" in r:
                    print(f"[bench] {run} #{rep + 1} {method:>27}: FAILED {r['failed']}")
                    continue
                print(
                    f"[bench] {run} #{rep + 1} {method:>27}: {r['rows']:>9,} rows "
                    f"{r['seconds']:6.2f} s  peak +{r['peak_mib']:6.0f} MiB",
                    flush=True,
                )
        text, med = _table(f"{run} ({', '.join(fields)})", results, args.rows)
        report[run] = med
        print("\n" + text + "\n")
        dp, raw, rs = med.get("django-pandas"), med.get("raw cursor"), med.get("pandas.read_sql")
        for name, how in (
            ("read_frame", "dbapi"),
            ("read_frame adbc", "adbc, parallel reads (default)"),
            ("read_frame adbc parallel=1", "adbc, one read"),
            ("read_frame adbc server-bound", "adbc, parameters bound by the server, no COPY"),
        ):
            rf = med.get(name)
            if rf and dp and raw:
                print(
                    f"read_frame ({how}): {rf['rows_per_s'] / dp['rows_per_s']:.2f}x "
                    f"django-pandas (target >= 3x), {rf['rows_per_s'] / raw['rows_per_s']:.2f}x "
                    "the raw cursor (target >= 0.8x)"
                )
            elif rf and raw and rs:  # django-pandas failed (e.g. on pandas 3)
                print(
                    f"read_frame ({how}): django-pandas failed; "
                    f"{rf['rows_per_s'] / raw['rows_per_s']:.2f}x the raw cursor, "
                    f"{rf['rows_per_s'] / rs['rows_per_s']:.2f}x pandas.read_sql"
                )
        for suffix, how in (("", "dbapi"), (" adbc", "adbc")):
            it, small = med.get("iter_frames" + suffix), med.get(f"iter_frames{suffix} 100k")
            if it and small:
                print(
                    f"iter_frames ({how}) peak at {it['rows']:,} rows / at "
                    f"{small['rows']:,} rows: {it['peak_mib']:.0f} / {small['peak_mib']:.0f} "
                    f"MiB = {it['peak_mib'] / small['peak_mib']:.2f} (target <= 1.2)"
                )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
