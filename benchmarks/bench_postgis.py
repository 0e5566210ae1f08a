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

``--read-frame``: issue 16's point 4 instead, ``read_frame`` against django-pandas' ``read_frame``
on the same PostGIS QuerySet (only ``--postgis`` is needed)::

    scripts/postgis.sh run -- bash -c '.venv/bin/python manage.py migrate -v 0 &&
        .venv/bin/python manage.py generate_massachusetts --buildings 2000000 --seed 42 &&
        .venv/bin/python benchmarks/bench_postgis.py --read-frame --repeat 7'

The QuerySet is the first ``--rows`` buildings by id, selected by a filter (``id <= %s``: a
parameter, so the COPY path's literal binding is exercised), columns ``--fields``. Each
measurement is a fresh process that has imported everything and opened its connection; it
reports the wall time, its own CPU seconds (user + sys, every thread) and the CPU seconds of the
PostgreSQL server processes (the postmaster's children, alive or reaped, read from ``/proc``:
only when the server runs on this machine) during the call. The methods run interleaved, in
an order rotated every round; each round's ratios compare runs of that round, and the table
shows their median with (min-max) over the rounds, with the load average next to them.

``--steps``: where the time of one read goes, both readers taken apart (django-pandas,
Django's ``values_list``, psycopg's ``fetchall``; ``read_frame``, the ADBC connection, the
driver's ``COPY`` decoding, the Arrow -> pandas conversion), in one warm process, interleaved,
with the client's and the server's CPU seconds of each step.
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
    parser.add_argument("--spatialite", help="spatialite:///... URL (not with --read-frame)")
    parser.add_argument("--postgis", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--state", default="MA")
    parser.add_argument("--predicate", default="within", choices=["within", "centroid"])
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 1; 7 reads)")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="runs to leave out, e.g. orm (slow on SpatiaLite)"
    )
    parser.add_argument(
        "--read-frame", action="store_true", help="read_frame against django-pandas instead"
    )
    parser.add_argument(
        "--steps", action="store_true", help="where a read's time goes, step by step, instead"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="--read-frame: rows read")
    parser.add_argument(
        "--fields", default=",".join(READ_FIELDS), help="--read-frame: the columns read"
    )
    parser.add_argument(
        "--methods", default=",".join(READ_METHODS), help="--read-frame: the readers compared"
    )
    args = parser.parse_args()
    if not args.postgis.startswith(("postgis:", "postgres:", "postgresql:")):
        sys.exit("--postgis (or DATABASE_URL) must be a postgis:// URL")
    if args.read_frame:
        read_main(args)
        return
    if args.steps:
        steps_main(args)
        return
    args.repeat = args.repeat or 1
    if not (args.spatialite or "").startswith("spatialite:"):
        sys.exit("--spatialite must be a spatialite:/// URL")
    urls = {"spatialite": args.spatialite, "postgis": args.postgis}

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


# --------------------------------------------------------------------------------------------
# --read-frame: read_frame against django-pandas on the same PostGIS QuerySet
# --------------------------------------------------------------------------------------------

READ_FIELDS = ["id", "footprint_m2", "height_m", "year_built", "use_type"]
#: The baseline first: every ratio is "django-pandas time / this method's time", same round.
READ_METHODS = ["django-pandas", "read_frame", "read_frame parallel=1"]


def _server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of a local PostgreSQL server: its children, alive or reaped, and itself."""
    if postmaster is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid: int | str) -> list[str]:
        with open(f"/proc/{pid}/stat") as f:  # the fields after "(comm)"
            return f.read().rsplit(")", 1)[1].split()

    try:
        own = fields(postmaster)
    except OSError:
        return None
    ticks = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime (reaped children)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                child_fields = fields(pid)
            except OSError:  # exited meanwhile: then counted in cutime/cstime
                continue
            if int(child_fields[1]) == postmaster:
                ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / tick


def read_child(url: str, method: str, rows: int, fields: list[str]) -> None:
    os.environ["DATABASE_URL"] = url
    import pyproj  # noqa: F401 - loaded before the connection, as the loaders' tests do
    import shapely  # noqa: F401

    import analysis_lib

    analysis_lib.setup_django("project.settings")
    from django.db import connection
    from django_pandas.io import read_frame as dp_read_frame

    from analysis_lib import read_frame
    from project.buildings.models import Building

    last_id = Building.objects.order_by("id").values_list("id", flat=True)[rows - 1]
    qs = Building.objects.filter(id__lte=last_id).order_by("id")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    try:
        with open(f"/proc/{backend}/stat") as f:
            postmaster: int | None = int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:  # the server is not on this machine
        postmaster = None

    def run() -> int:
        if method == "django-pandas":  # its defaults (verbose=True: choices become labels)
            return len(dp_read_frame(qs, fieldnames=fields))
        if method == "read_frame":  # the defaults: ADBC, COPY, primary-key ranges at once
            return len(read_frame(qs, fields))
        if method.startswith("read_frame parallel="):  # N primary-key ranges at once
            return len(read_frame(qs, fields, parallel=int(method.rsplit("=", 1)[1])))
        if method == "read_frame dbapi":
            return len(read_frame(qs, fields, engine="dbapi"))
        raise SystemExit(f"unknown method {method!r}; choose from {READ_METHODS}")

    load = os.getloadavg()[0]
    baseline = _reset_peak()
    server0 = _server_cpu(postmaster)
    cpu0 = os.times()
    start = time.perf_counter()
    n = run()
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    peak = _peak() - baseline
    time.sleep(0.2)  # let the ADBC connections' backends exit and be reaped
    server1 = _server_cpu(postmaster)
    result = {
        "method": method,
        "rows": n,
        "seconds": seconds,
        "client_cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "server_cpu": None if server0 is None or server1 is None else server1 - server0,
        "peak_mib": peak,
        "load": load,
    }
    print(json.dumps(result))


#: --steps: where the time goes, step by step, in one warm process.
STEPS = {
    "django-pandas": "django-pandas read_frame (its defaults: choices become labels)",
    "django-pandas verbose=False": "  the same without the labels",
    "values_list": "  Django's values_list (psycopg rows, as django-pandas reads them)",
    "fetchall": "  psycopg cursor fetchall() on the same SQL",
    "read_frame": "read_frame, ADBC, one read",
    "adbc connect": "  the ADBC connection alone",
    "adbc fetch": "  connection + COPY + the driver's decoding into Arrow",
    "arrow to pandas": "  the Arrow table -> DataFrame conversion",
}


def steps_child(url: str, rows: int, fields: list[str], repeat: int) -> None:
    """Time each step of both readers in this one process, interleaved, and print medians."""
    os.environ["DATABASE_URL"] = url
    import pyproj  # noqa: F401
    import shapely  # noqa: F401

    import analysis_lib

    analysis_lib.setup_django("project.settings")
    from django.db import connection
    from django_pandas.io import read_frame as dp_read_frame

    from analysis_lib import read_frame
    from analysis_lib.loaders import _adbc
    from analysis_lib.loaders._plan import make_plan
    from project.buildings.models import Building

    last_id = Building.objects.order_by("id").values_list("id", flat=True)[rows - 1]
    qs = Building.objects.filter(id__lte=last_id).order_by("id")
    plan = make_plan(qs, fields, "wkb")
    bound = _adbc.bind_literals(plan.sql, plan.params, connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    try:
        with open(f"/proc/{backend}/stat") as f:
            postmaster: int | None = int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        postmaster = None
    held: dict = {}

    def fetch() -> None:
        conn = _adbc._adbc_connect(connection)
        try:
            cursor = conn.cursor()
            cursor.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(_adbc.PG_BATCH_BYTES)}
            )
            cursor.execute(bound)
            held["table"] = cursor.fetch_record_batch().read_all()
        finally:
            conn.close()

    def fetchall() -> None:
        with connection.cursor() as cursor:
            cursor.execute(plan.sql, plan.params)
            cursor.fetchall()

    runs = {
        "django-pandas": lambda: dp_read_frame(qs, fieldnames=fields),
        "django-pandas verbose=False": lambda: dp_read_frame(qs, fieldnames=fields, verbose=False),
        "values_list": lambda: list(qs.values_list(*fields)),
        "fetchall": fetchall,
        "read_frame": lambda: read_frame(qs, fields, engine="adbc", parallel=1),
        "adbc connect": lambda: _adbc._adbc_connect(connection).close(),
        "adbc fetch": fetch,
        "arrow to pandas": lambda: _adbc.arrow_frame(held["table"], plan, 0, connection),
    }
    fetch()  # warm: the driver loaded, the table for "arrow to pandas"
    times: dict[str, list[tuple[float, float, float | None]]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            server0, cpu0, start = _server_cpu(postmaster), os.times(), time.perf_counter()
            run()
            wall, cpu1 = time.perf_counter() - start, os.times()
            time.sleep(0.1)  # the ADBC backends exit and are reaped
            server1 = _server_cpu(postmaster)
            client = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            server = None if server0 is None or server1 is None else server1 - server0
            times[name].append((wall, client, server))
    print(json.dumps(times))


def steps_main(args: argparse.Namespace) -> None:
    repeat = args.repeat or 7
    load_start = os.getloadavg()[0]
    child_args = ["--steps-child", args.postgis, str(args.rows), args.fields, str(repeat)]
    proc = run_python(
        Path(__file__), *child_args, database_url=args.postgis, timeout=None, check=False
    )
    if proc.returncode:
        sys.exit(f"the steps failed:\n{proc.stdout}\n{proc.stderr}")
    times = parse_json_line(proc.stdout)
    print(
        f"\nwhere the time goes: {args.rows:,} rows ({args.fields}), one warm process, medians "
        f"of {repeat} interleaved repeats; load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end, {os.cpu_count()} cores\n"
    )
    print("| step | wall s | client CPU s | server CPU s |")
    print("|---|---:|---:|---:|")
    for name, label in STEPS.items():
        rs = times[name]
        server = [r[2] for r in rs]
        cells = [statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)]
        shown = "n/a" if None in server else f"{statistics.median(server):.3f}"
        print(f"| {label} | {cells[0]:.3f} | {cells[1]:.3f} | {shown} |")


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    median = fmt.format(statistics.median(values))
    if len(values) < 2:
        return median
    return f"{median} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def read_main(args: argparse.Namespace) -> None:
    repeat = args.repeat or 7
    methods = args.methods.split(",")
    if methods[0] != "django-pandas":
        sys.exit("--methods must start with django-pandas, the baseline of every ratio")
    fields = args.fields.split(",")
    import django
    import pandas as pd
    import pyarrow

    print(
        f"[read] {args.rows:,} rows, columns {', '.join(fields)}; {os.cpu_count()} cores; "
        f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}, Django {django.__version__}",
        file=sys.stderr,
    )
    load_start = os.getloadavg()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for rnd in range(repeat):
        order = methods[rnd % len(methods) :] + methods[: rnd % len(methods)]
        for method in order:
            args_ = ["--read-child", args.postgis, method, str(args.rows), ",".join(fields)]
            proc = run_python(
                Path(__file__), *args_, database_url=args.postgis, timeout=None, check=False
            )
            if proc.returncode:
                sys.exit(f"{method} failed:\n{proc.stdout}\n{proc.stderr}")
            r = parse_json_line(proc.stdout)
            results[method].append(r)
            server = "n/a" if r["server_cpu"] is None else f"{r['server_cpu']:.2f}"
            print(
                f"[read] round {rnd + 1}/{repeat} {method:>22}: {r['rows']:,} rows "
                f"{r['seconds']:.2f} s wall, CPU client {r['client_cpu']:.2f} s, server "
                f"{server} s, peak +{r['peak_mib']:.0f} MiB (load {r['load']:.2f})",
                file=sys.stderr,
                flush=True,
            )
    load_end = os.getloadavg()
    base = results[methods[0]]
    have_server = all(r["server_cpu"] is not None for rs in results.values() for r in rs)

    def ratios(method: str, key) -> list[float]:  # noqa: ANN001 - a small local helper
        return [key(b) / key(m) for b, m in zip(base, results[method], strict=True)]

    def total(r: dict) -> float:
        return r["client_cpu"] + r["server_cpu"]

    print(
        f"\nread_frame against django-pandas on PostGIS: {base[0]['rows']:,} rows "
        f"({', '.join(fields)}), {repeat} interleaved rounds, each run a fresh process; "
        "medians (min-max)\n"
    )
    head = (
        "| method | wall s | client CPU s | server CPU s | peak MiB | wall ratio | client CPU ratio"
    )
    print(head + (" | client+server CPU ratio |" if have_server else " |"))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if have_server else ""))
    for method in methods:
        rs = results[method]
        server = _spread([r["server_cpu"] for r in rs]) if have_server else "n/a (server not local)"
        cells = [
            method,
            _spread([r["seconds"] for r in rs]),
            _spread([r["client_cpu"] for r in rs]),
            server,
            f"{statistics.median(r['peak_mib'] for r in rs):.0f}",
            _spread(ratios(method, lambda r: r["seconds"]), "{:.2f}x"),
            _spread(ratios(method, lambda r: r["client_cpu"]), "{:.2f}x"),
        ]
        if have_server:
            cells.append(_spread(ratios(method, total), "{:.2f}x"))
        print("| " + " | ".join(cells) + " |")
    loads = [r["load"] for rs in results.values() for r in rs]
    during = f"{min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})"
    print(
        f"\nload average (1 min) at the start {load_start[0]:.2f}, at the end "
        f"{load_end[0]:.2f}, at the start of each run {during}; {os.cpu_count()} cores"
    )
    for method in methods[1:]:
        wall = statistics.median(ratios(method, lambda r: r["seconds"]))
        cpu = statistics.median(ratios(method, lambda r: r["client_cpu"]))
        print(
            f"{method}: {wall:.2f}x django-pandas by wall time (target >= 3x: "
            f"{'met' if wall >= 3 else 'NOT met'}), {cpu:.2f}x by client CPU"
        )
    if have_server:
        # The bound: a reader cannot finish before the server has produced the rows. With one
        # backend (one read), its CPU is a floor under the wall time whatever the client does;
        # ranges read at once share it out over several backends (and cores).
        dp_wall = statistics.median(r["seconds"] for r in base)
        dp_server = statistics.median(r["server_cpu"] for r in base)
        for method in methods[1:]:
            server = statistics.median(r["server_cpu"] for r in results[method])
            print(
                f"{method}: the server's CPU per read {server:.2f} s, all its backends "
                f"(django-pandas' {dp_server:.2f} s); django-pandas' wall over it: "
                f"{dp_wall / server:.2f}x (the most one backend allows)"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
    elif len(sys.argv) > 1 and sys.argv[1] == "--steps-child":
        steps_child(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--read-child":
        read_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(","))
    else:
        main()
