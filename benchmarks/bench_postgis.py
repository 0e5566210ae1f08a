"""Benchmark: the per-ZIP summary on PostGIS next to SpatiaLite, and on a 2-worker Dask cluster.

Both databases must hold the same generated Massachusetts (the script checks the counts and
the footprint total before it starts)::

    # SpatiaLite file
    DATABASE_URL=spatialite:////work/main/data/bench.sqlite3 make data
    # a throwaway PostGIS with the same data, then the benchmark
    scripts/postgis.sh run -- bash -c '.venv/bin/python manage.py migrate -v 0 &&
        .venv/bin/python manage.py generate_massachusetts --buildings 2000000 --seed 42 &&
        .venv/bin/python benchmarks/bench_postgis.py \\
            --spatialite spatialite:////work/main/data/bench.sqlite3'

``--postgis`` defaults to ``DATABASE_URL``. For each backend it runs
``summarize_by_zip(state, strategy=...)`` with the three strategies (``orm``: the per-ZIP loop
with the index-aware lookup; ``database``: one SQL statement; ``sweep``: one streaming pass
matched with shapely), then ``summarize_by_zip(state, strategy=DaskSweep(client))`` on a
``LocalCluster`` of 2 worker processes (one thread each) twice: cold (the workers import
Django and the libraries on their first task) and warm (a second call on the same cluster;
the cluster start is reported apart).

Every measurement runs in a fresh subprocess that has set Django up and opened the connection;
then its peak-RSS counter is reset (``/proc/self/clear_refs``) and the run starts, so "peak MiB"
is the client process's peak resident memory above that baseline (Dask: also the largest worker
peak). Runs are interleaved over ``--repeat`` rounds and the table shows medians. Every result
is compared with the SpatiaLite ``sweep`` of the same round: the last column counts the ZIPs
whose building count differs. Timings on a shared 2-core machine are noisy: read the ratios,
which compare runs of the same round. Seconds are medians, with (min-max) over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.fresh import parse_json_line, reset_peak_rss, rss, run_python  # noqa: E402

STRATEGIES = ["orm", "database", "sweep"]
DASK_RUNS = ["dask cold", "dask warm"]
BACKENDS = ["spatialite", "postgis"]


# --------------------------------------------------------------------------------------------
# Child: one measurement
# --------------------------------------------------------------------------------------------


def _peak() -> float:
    """The peak RSS of this process (or of a Dask worker, through ``client.run``), MiB."""
    return rss().peak_mib


def _reset_peak() -> float:
    """Reset the peak RSS to the current RSS; return the current RSS (MiB)."""
    if not reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux only")
    return rss().current_mib


def child(url: str, run: str, state: str, predicate: str, out: str) -> None:
    os.environ["DATABASE_URL"] = url
    import analysis_lib

    analysis_lib.setup_django("project.settings")
    from django.db import connection

    from project.buildings.analysis import summarize_by_zip
    from project.buildings.models import ZipCode

    connection.ensure_connection()
    ZipCode.objects.filter(state=state).count()
    result: dict = {"run": run}
    if run in STRATEGIES:
        baseline = _reset_peak()
        start = time.perf_counter()
        summary = summarize_by_zip(state, strategy=run, predicate=predicate)
        result["seconds"] = time.perf_counter() - start
        result["peak_mib"] = _peak() - baseline
    else:
        import logging

        from distributed import Client, LocalCluster

        from analysis_lib import DaskSweep

        start = time.perf_counter()
        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        result["cluster_start_seconds"] = time.perf_counter() - start
        try:
            for attempt in ("cold", "warm"):
                worker_base = client.run(_reset_peak)
                baseline = _reset_peak()
                start = time.perf_counter()
                summary = summarize_by_zip(state, strategy=DaskSweep(client), predicate=predicate)
                seconds = time.perf_counter() - start
                peaks = client.run(_peak)
                result[attempt] = {
                    "seconds": seconds,
                    "peak_mib": _peak() - baseline,
                    "worker_peak_mib": max(peaks[w] - worker_base[w] for w in peaks),
                }
        finally:
            client.close()
            cluster.close()
    summary.to_pickle(out)
    result["summary"] = out
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def run_child(url: str, run: str, state: str, predicate: str, out: Path) -> dict:
    args = ["--child", url, run, state, predicate, str(out)]
    proc = run_python(Path(__file__), *args, database_url=url, timeout=None, check=False)
    if proc.returncode:
        sys.exit(f"{run} on {url.split(':')[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    return parse_json_line(proc.stdout)


_FINGERPRINT = (
    "import json; from django.db.models import Sum; "
    "from project.buildings.models import Building, ZipCode; "
    "print(json.dumps({'zips': ZipCode.objects.filter(state=%r).count(), "
    "'buildings': Building.objects.count(), "
    "'footprint': round(Building.objects.aggregate(s=Sum('footprint_m2'))['s'] or 0, 1)}))"
)


def fingerprint(url: str, state: str) -> dict:
    manage_py = ROOT / "manage.py"
    proc = run_python(manage_py, "shell", "-c", _FINGERPRINT % state, database_url=url, check=False)
    if proc.returncode:
        sys.exit(f"cannot read {url}:\n{proc.stderr}")
    return parse_json_line(proc.stdout)


def differing_zips(path: str, reference: str) -> int:
    import pandas as pd

    got, ref = pd.read_pickle(path), pd.read_pickle(reference)
    return int((got["n_buildings"] != ref["n_buildings"].reindex(got.index)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spatialite", required=True, help="spatialite:///... URL")
    parser.add_argument("--postgis", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--state", default="MA")
    parser.add_argument("--predicate", default="within", choices=["within", "centroid"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--skip", nargs="*", default=[], help="runs to leave out, e.g. orm (slow on SpatiaLite)"
    )
    args = parser.parse_args()
    urls = {"spatialite": args.spatialite, "postgis": args.postgis}
    if not args.spatialite.startswith("spatialite:"):
        sys.exit("--spatialite must be a spatialite:/// URL")
    if not args.postgis.startswith(("postgis:", "postgres:", "postgresql:")):
        sys.exit("--postgis (or DATABASE_URL) must be a postgis:// URL")

    prints = {b: fingerprint(u, args.state) for b, u in urls.items()}
    print(f"data: {json.dumps(prints)}", file=sys.stderr)
    if prints["spatialite"] != prints["postgis"]:
        sys.exit("the two databases do not hold the same data (counts or footprint total differ)")

    if "sweep" in args.skip:
        sys.exit("--skip sweep: the sweep is the baseline every other run is compared with")
    runs = [r for r in [*STRATEGIES, "dask"] if r not in args.skip]
    times: dict[tuple[str, str], list[float]] = {}
    peaks: dict[tuple[str, str], list[float]] = {}
    workers: dict[tuple[str, str], list[float]] = {}
    diffs: dict[tuple[str, str], int] = {}
    cluster_start: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_postgis_") as tmp:
        for rnd in range(args.repeat):
            reference = None
            # The SpatiaLite sweep first: it is the reference of this round.
            order = [("spatialite", "sweep")] + [
                (b, r) for r in runs for b in BACKENDS if (b, r) != ("spatialite", "sweep")
            ]
            for backend, run in order:
                if run not in runs:
                    continue
                out = Path(tmp) / f"{rnd}-{backend}-{run}.pkl"
                print(f"round {rnd + 1}: {backend} {run} ...", file=sys.stderr, flush=True)
                result = run_child(urls[backend], run, args.state, args.predicate, out)
                if reference is None:
                    reference = str(out)
                if run == "dask":
                    cluster_start.setdefault(backend, []).append(result["cluster_start_seconds"])
                    for attempt, name in zip(("cold", "warm"), DASK_RUNS, strict=True):
                        key = (backend, name)
                        times.setdefault(key, []).append(result[attempt]["seconds"])
                        peaks.setdefault(key, []).append(result[attempt]["peak_mib"])
                        workers.setdefault(key, []).append(result[attempt]["worker_peak_mib"])
                        diffs[key] = max(diffs.get(key, 0), differing_zips(str(out), reference))
                else:
                    key = (backend, run)
                    times.setdefault(key, []).append(result["seconds"])
                    peaks.setdefault(key, []).append(result["peak_mib"])
                    diffs[key] = max(diffs.get(key, 0), differing_zips(str(out), reference))

    med = {k: statistics.median(v) for k, v in times.items()}
    names = [r for r in [*STRATEGIES, *DASK_RUNS] if (BACKENDS[0], r) in med]
    print(
        f"\n{prints['postgis']['buildings']:,} buildings, {prints['postgis']['zips']} ZIPs "
        f"({args.state}), predicate={args.predicate}, median of {args.repeat} round(s)\n"
    )
    print(
        "| run | SpatiaLite s | PostGIS s | PostGIS speed-up | SpatiaLite / its sweep "
        "| PostGIS / its sweep | peak MiB SL / PG (client) | ZIPs differing SL / PG |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def seconds(backend: str, run: str) -> str:
        values = times[(backend, run)]
        spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
        return f"{statistics.median(values):.2f}{spread}"

    for run in names:
        sl, pg = med[("spatialite", run)], med[("postgis", run)]
        sl_sweep, pg_sweep = med[("spatialite", "sweep")], med[("postgis", "sweep")]
        peak = " / ".join(
            f"{statistics.median(peaks[(b, run)]):.0f}"
            + (f" (workers {statistics.median(workers[(b, run)]):.0f})" if run in DASK_RUNS else "")
            for b in BACKENDS
        )
        print(
            f"| {run} | {seconds('spatialite', run)} | {seconds('postgis', run)} | {sl / pg:.2f}x "
            f"| {sl / sl_sweep:.2f}x "
            f"| {pg / pg_sweep:.2f}x | {peak} "
            f"| {diffs[('spatialite', run)]} / {diffs[('postgis', run)]} |"
        )
    for backend, starts in cluster_start.items():
        print(f"\nLocalCluster start ({backend} run): {statistics.median(starts):.1f} s", end="")
    print()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
    else:
        main()
