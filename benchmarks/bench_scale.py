"""Scale benchmark (issue 16): the per-region summary at 0.2M, 2M and 20M buildings, 494 and
about 30,000 regions, each run in a fresh process; ratios against the issue's targets.

What runs (each row one fresh Python process):

* ``analyze_buildings``: ``manage.py analyze_buildings --state MA --no-progress`` exactly as a
  user runs it (default: pyarrow kept out of the process, rows read by the ADBC driver through
  nanoarrow), and the same with ``--with-pyarrow`` (rows read by the ADBC driver through
  pyarrow); both with the read-ahead thread. The child enters the
  command through Django's ``ManagementUtility`` (so ``run_from_argv`` and its
  ``keep_pyarrow_out`` apply); a wrapper around ``summarize_by_zip`` imports what the sweep
  imports, takes the RSS (**RSS after imports**), runs the call and times it (**call**).
* ``warm``: ``summarize_by_zip("MA")`` called ``--warm-calls`` times (default 4) in one process,
  pyarrow kept out or loaded: the first call pays the lazy imports and caches, the others are
  the **warm** calls the 1.0 s target is about (median and best reported). Before each warm call
  the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), so the warm call's memory is
  its own peak above the RSS just before it.
* ``summarize_by_zip (all ZIPs)``: ``summarize_by_zip(ZipCode.objects.all())`` on the
  ``--states ALL`` database (about 30,000 ZIPs; ``analyze_buildings`` takes one state), pyarrow
  kept out or loaded, measured the same way.
* ``duckdb spatial``: DuckDB with the spatial extension on the same 2M file, the peer:
  ``ST_Read`` of both layers, ``SPATIAL_JOIN`` with ``ST_Within``, count per ZIP.
* ``--dask``: one ``DaskSweep`` run on a local cluster of 2 worker processes (1 thread each) on
  the 20M file; the workers' peak RSS is sampled with psutil on their PIDs.

Columns: **wall** (the process, from spawn to exit), **CPU** (user + system seconds of the
process and its children), **call** (the summary call's wall and CPU), **peak RSS**
(``ru_maxrss``), **RSS after imports**, **sweep memory** (peak minus RSS after imports).

The databases are made outside the repository (``--data-dir``, default ``$BENCH_DATA_DIR`` or
``bench-data/`` beside the checkout) by ``manage.py generate_buildings --seed 42`` and reused
when present (a ``<file>.done`` marker is written once a generation finished). The 20M file
takes a few minutes and about 5 GB.

Usage::

    python benchmarks/bench_scale.py [--data-dir DIR] [--sizes 200000,2000000,20000000]
        [--all-sizes 2000000] [--dask] [--out FILE]

Before each run the database file is read once, so it runs with the file in the page cache
(this machine's page cache drops files it has not read lately, and a cold 0.5 GB read takes
about 11 s): the figures are the code's, not the disk's. The machine is shared: compare CPU
seconds next to wall, and the load average printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 42
MIB = 2**20

# The targets.
TARGET_GROWTH = 0.10  # peak RSS growth 2M -> 20M
TARGET_CALL_S = 1.0  # warm summary call, MA 2M (we report the call in a fresh process: cold)
TARGET_COMMAND_S = 2.0  # analyze_buildings wall, MA 2M
TARGET_SWEEP_MIB = 40.0  # peak minus RSS after imports


# --------------------------------------------------------------------------------------------
# Children
# --------------------------------------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _import_sweep_modules() -> None:
    """Import what the sweep imports lazily (so 'RSS after imports' includes them)."""
    import adbc_driver_sqlite.dbapi  # noqa: F401  (imports pyarrow only if it is loaded)
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyproj  # noqa: F401
    import shapely  # noqa: F401
    import tqdm  # noqa: F401

    import analysis_lib.loaders  # noqa: F401
    import analysis_lib.regions.sweep  # noqa: F401

    if sys.modules.get("pyarrow") is None:  # kept out: the sweep reads ADBC through nanoarrow
        import adbc_driver_manager  # noqa: F401
        import nanoarrow  # noqa: F401


def _wrap_summary(record: dict) -> None:
    """Patch summarize_by_zip to record RSS after imports and the call's wall/CPU."""
    from project.buildings import analysis

    real = analysis.summarize_by_zip

    def measured(*args, **kwargs):
        _import_sweep_modules()
        record["rss_after_imports"] = _rss_mib()
        record["peak_before_call"] = _peak_mib()
        wall, cpu = time.perf_counter(), _cpu()
        result = real(*args, **kwargs)
        record["call_wall"] = time.perf_counter() - wall
        record["call_cpu"] = _cpu() - cpu
        record["regions"] = len(result)
        record["assigned"] = int(result["n_buildings"].sum())
        return result

    analysis.summarize_by_zip = measured


def _child_command(db: str, with_pyarrow: bool, out_json: str) -> None:
    os.environ["DATABASE_URL"] = db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    record: dict = {}
    _wrap_summary(record)
    from django.core.management import ManagementUtility

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["manage.py", "analyze_buildings", "--state", "MA", "--no-progress"]
        argv += ["--out", str(Path(tmp) / "ma.csv")]
        if with_pyarrow:
            argv.append("--with-pyarrow")
        ManagementUtility(argv).execute()
    record["pyarrow"] = sys.modules.get("pyarrow") is not None
    record["peak"] = _peak_mib()
    Path(out_json).write_text(json.dumps(record))


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child_warm(db: str, with_pyarrow: bool, calls: int, out_json: str) -> None:
    """``summarize_by_zip("MA")`` ``calls`` times in one process; each call's wall, CPU, memory."""
    os.environ["DATABASE_URL"] = db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    if not with_pyarrow:
        from analysis_lib import keep_pyarrow_out

        keep_pyarrow_out()
    import django

    django.setup()
    from project.buildings.analysis import summarize_by_zip

    _import_sweep_modules()
    record: dict = {"rss_after_imports": _rss_mib(), "calls": []}
    for _ in range(calls):
        with open("/proc/self/clear_refs", "w") as refs:  # VmHWM back to the current RSS
            refs.write("5")
        before = _rss_mib()
        wall, cpu = time.perf_counter(), _cpu()
        result = summarize_by_zip("MA", progress=False)
        call = {"wall": time.perf_counter() - wall, "cpu": _cpu() - cpu}
        call["memory"] = _vm_hwm_mib() - before
        record["calls"].append(call)
        record["regions"] = len(result)
        record["assigned"] = int(result["n_buildings"].sum())
        del result
    record["pyarrow"] = sys.modules.get("pyarrow") is not None
    record["peak"] = _peak_mib()
    Path(out_json).write_text(json.dumps(record))


def _child_all(db: str, with_pyarrow: bool, out_json: str) -> None:
    os.environ["DATABASE_URL"] = db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    if not with_pyarrow:
        from analysis_lib import keep_pyarrow_out

        keep_pyarrow_out()
    import django

    django.setup()
    record: dict = {}
    _wrap_summary(record)
    from project.buildings import analysis
    from project.buildings.models import ZipCode

    analysis.summarize_by_zip(ZipCode.objects.all())
    record["pyarrow"] = sys.modules.get("pyarrow") is not None
    record["peak"] = _peak_mib()
    Path(out_json).write_text(json.dumps(record))


def _duckdb_extension_dir() -> str:
    import duckdb_ext  # the duckdb-ext-spatial wheel

    return str(Path(next(iter(duckdb_ext.__path__))) / "extensions")  # a namespace package


def _child_duckdb(path: str, out_json: str) -> None:
    import duckdb

    record: dict = {}
    con = duckdb.connect()
    con.execute("SET extension_directory = ?", [_duckdb_extension_dir()])
    con.execute("LOAD spatial")
    record["rss_after_imports"] = _rss_mib()
    wall, cpu = time.perf_counter(), _cpu()
    rows = con.execute(
        """
        WITH z AS (SELECT code, boundary AS g FROM ST_Read(?, layer='buildings_zipcode')
                   WHERE state = 'MA'),
             b AS (SELECT boundary AS g FROM ST_Read(?, layer='buildings_building'))
        SELECT z.code, count(*) FROM b JOIN z ON ST_Within(b.g, z.g) GROUP BY z.code
        """,
        [path, path],
    ).fetchall()
    record["call_wall"] = time.perf_counter() - wall
    record["call_cpu"] = _cpu() - cpu
    record["regions"] = len(rows)
    record["assigned"] = int(sum(n for _, n in rows))
    record["peak"] = _peak_mib()
    Path(out_json).write_text(json.dumps(record))


def _child_dask(db: str, out_json: str) -> None:
    """DaskSweep on a 2-process local cluster; sample every worker's RSS with psutil."""
    import threading

    import psutil

    os.environ["DATABASE_URL"] = db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from distributed import Client, LocalCluster

    from analysis_lib import DaskSweep
    from project.buildings import analysis

    record: dict = {}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=0)
    client = Client(cluster)
    pids = list(client.run(os.getpid).values())
    procs = [psutil.Process(pid) for pid in pids]
    record["worker_rss_start"] = [p.memory_info().rss / MIB for p in procs]
    peaks = list(record["worker_rss_start"])
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for i, p in enumerate(procs):
                with contextlib.suppress(psutil.Error):
                    peaks[i] = max(peaks[i], p.memory_info().rss / MIB)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
    wall = time.perf_counter()
    summary = analysis.summarize_by_zip("MA", strategy=DaskSweep(client))
    record["call_wall"] = time.perf_counter() - wall
    stop.set()
    sampler.join()
    record["worker_cpu"] = [
        sum(p.cpu_times()[:2]) - c for p, c in zip(procs, cpu_before, strict=True)
    ]
    record["worker_peak"] = peaks
    record["regions"] = len(summary)
    record["assigned"] = int(summary["n_buildings"].sum())
    record["client_peak"] = _peak_mib()
    client.close()
    cluster.close()
    Path(out_json).write_text(json.dumps(record))


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def _db_path(data_dir: Path, states: str, n: int) -> Path:
    return data_dir / f"{states.lower()}_{n}.sqlite3"


def ensure_database(data_dir: Path, states: str, n: int) -> Path:
    """Generate ``states`` with ``n`` buildings into ``data_dir`` unless already done."""
    path = _db_path(data_dir, states, n)
    done = path.with_name(path.name + ".done")
    if path.exists() and done.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    env = dict(os.environ, DATABASE_URL=f"spatialite:///{path}")
    print(f"generating {path} ({states}, {n:,} buildings) ...", flush=True)
    start = time.perf_counter()
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], env=env, check=True)
    subprocess.run(
        [*manage, "generate_buildings", "--states", states, "--buildings", str(n)]
        + ["--seed", str(SEED), "--no-progress"],
        env=env,
        check=True,
    )
    done.write_text(f"{states} {n} seed {SEED}\n")
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def warm_page_cache(path: Path) -> float:
    """Read ``path`` once so the run finds it in the page cache; return the seconds it took.

    This machine's page cache drops files it has not read lately (a 0.5 GB file took 11 s
    to read cold, 0.1 s warm): without this, a row measures the disk, not the code.
    """
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(16 * MIB):
            pass
    return time.perf_counter() - start


def run_child(args: list[str]) -> dict:
    """Run this script as a child with ``args``; return its record plus wall and CPU.

    The database file named in ``args`` (a ``spatialite:///`` URL or a path) is read once
    first (:func:`warm_page_cache`); the seconds that took are kept as ``warmup``.
    """
    target = args[1].removeprefix("spatialite:///") if len(args) > 1 else ""
    warmup = warm_page_cache(Path(target)) if target.endswith(".sqlite3") else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", *args, str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"child {args} failed:\n{proc.stdout}\n{proc.stderr}")
        record = json.loads(out.read_text())
    record["wall"] = wall
    record["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record["stdout"] = proc.stdout.strip()
    record["warmup"] = warmup
    return record


def _fmt_row(label: str, n: int, r: dict) -> str:
    sweep = r["peak"] - r["rss_after_imports"]
    return (
        f"| {label} | {n:,} | {r['regions']:,} | {r['assigned']:,} | {r['wall']:.1f} | "
        f"{r['cpu']:.1f} | {r['call_wall']:.2f} / {r['call_cpu']:.2f} | {r['peak']:.0f} | "
        f"{r['rss_after_imports']:.0f} | {sweep:.0f} |"
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BENCH_DATA_DIR", ROOT.parent / "bench-data")),
        help="Where the generated databases live (default $BENCH_DATA_DIR or ../bench-data).",
    )
    parser.add_argument("--sizes", default="200000,2000000,20000000", help="MA building counts.")
    parser.add_argument(
        "--all-sizes", default="2000000", help="Building counts for --states ALL ('' for none)."
    )
    parser.add_argument(
        "--warm-calls", type=int, default=4, help="Calls in the warm run (0: no warm run)."
    )
    parser.add_argument("--dask", action="store_true", help="Also one DaskSweep run at 20M.")
    parser.add_argument("--no-duckdb", action="store_true", help="Skip the DuckDB peer.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the table here.")
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "command":
            _child_command(rest[0], rest[1] == "pyarrow", rest[2])
        elif kind == "warm":
            _child_warm(rest[0], rest[1] == "pyarrow", int(rest[2]), rest[3])
        elif kind == "all":
            _child_all(rest[0], rest[1] == "pyarrow", rest[2])
        elif kind == "duckdb":
            _child_duckdb(rest[0], rest[1])
        elif kind == "dask":
            _child_dask(rest[0], rest[1])
        else:
            parser.error(f"unknown child {kind!r}")
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    all_sizes = [int(s) for s in args.all_sizes.split(",") if s]
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    for n in sizes:
        ensure_database(args.data_dir, "MA", n)
    for n in all_sizes:
        ensure_database(args.data_dir, "ALL", n)

    say(f"# bench_scale ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    say()
    say(f"Command: `python benchmarks/bench_scale.py {' '.join(argv or sys.argv[1:])}`".strip())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    say(f"Commit: {commit or 'unknown'}; data: {args.data_dir} (seed {SEED}).")
    say(f"Load average at start: {os.getloadavg()[0]:.1f} (2-core shared machine).")
    say()
    say(
        "| run | buildings | regions | assigned | wall s | CPU s | call wall / CPU s | "
        "peak RSS MiB | RSS after imports MiB | sweep memory MiB |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results: dict[tuple[str, int], dict] = {}
    for n in sizes:
        db = f"spatialite:///{_db_path(args.data_dir, 'MA', n)}"
        for mode, label in (("keep", "analyze_buildings MA"), ("pyarrow", "... --with-pyarrow")):
            r = run_child(["command", db, mode])
            results[(mode, n)] = r
            say(_fmt_row(label, n, r))
    for n in all_sizes:
        db = f"spatialite:///{_db_path(args.data_dir, 'ALL', n)}"
        for mode, label in (("keep", "summarize_by_zip ALL"), ("pyarrow", "... with pyarrow")):
            r = run_child(["all", db, mode])
            results[("all-" + mode, n)] = r
            say(_fmt_row(label, n, r))
    duck = None
    if not args.no_duckdb and 2_000_000 in sizes:
        try:
            import duckdb  # noqa: F401

            have_duckdb = True
        except ImportError:
            have_duckdb = False
            say("| duckdb spatial | not installed | | | | | | | | |")
        if have_duckdb:
            path = str(_db_path(args.data_dir, "MA", 2_000_000))
            duck = run_child(["duckdb", path])
            say(_fmt_row("duckdb 1.4 spatial (peer)", 2_000_000, duck))
    say()

    warm: dict[str, dict] = {}
    if args.warm_calls > 1 and 2_000_000 in sizes:
        import statistics

        say('## Warm calls: `summarize_by_zip("MA")` again and again in one process, MA 2M')
        say()
        say(
            "| mode | first call wall / CPU s | warm calls wall s | warm median wall / CPU s | "
            "warm call memory MiB (max) |"
        )
        say("|---|---:|---:|---:|---:|")
        db = f"spatialite:///{_db_path(args.data_dir, 'MA', 2_000_000)}"
        for mode, name in (
            ("keep", "pyarrow kept out (ADBC via nanoarrow)"),
            ("pyarrow", "with pyarrow (ADBC)"),
        ):
            r = run_child(["warm", db, mode, str(args.warm_calls)])
            first, rest = r["calls"][0], r["calls"][1:]
            r["warm_wall"] = statistics.median(c["wall"] for c in rest)
            r["warm_cpu"] = statistics.median(c["cpu"] for c in rest)
            r["warm_memory"] = max(c["memory"] for c in rest)
            warm[mode] = r
            walls = ", ".join(f"{c['wall']:.2f}" for c in rest)
            say(
                f"| {name} | {first['wall']:.2f} / {first['cpu']:.2f} | {walls} | "
                f"{r['warm_wall']:.2f} / {r['warm_cpu']:.2f} | {r['warm_memory']:.0f} |"
            )
        say()

    say("## Against the targets")
    say()
    for mode, name in (("keep", "pyarrow kept out"), ("pyarrow", "with pyarrow")):
        if mode in warm:
            r = warm[mode]
            say(
                f"- MA 2M, {name}: warm summary call {r['warm_wall']:.2f} s wall (median of "
                f"{len(r['calls']) - 1}) / {r['warm_cpu']:.2f} s CPU (target {TARGET_CALL_S} s): "
                f"{_met(r['warm_wall'] <= TARGET_CALL_S)}"
            )
    for mode, name in (("keep", "pyarrow kept out"), ("pyarrow", "with pyarrow")):
        if (mode, 2_000_000) in results and (mode, 20_000_000) in results:
            a, b = results[(mode, 2_000_000)], results[(mode, 20_000_000)]
            growth = b["peak"] / a["peak"] - 1
            say(
                f"- peak RSS growth 2M -> 20M ({name}): {a['peak']:.0f} -> {b['peak']:.0f} MiB, "
                f"{growth:+.1%} (target <= +{TARGET_GROWTH:.0%}): {_met(growth <= TARGET_GROWTH)}"
            )
        if (mode, 2_000_000) in results:
            r = results[(mode, 2_000_000)]
            sweep = r["peak"] - r["rss_after_imports"]
            say(
                f"- MA 2M, {name}: summary call {r['call_wall']:.2f} s wall / "
                f"{r['call_cpu']:.2f} s CPU, first call in a fresh process (target "
                f"{TARGET_CALL_S} s for a warm call): {_met(r['call_wall'] <= TARGET_CALL_S)}; "
                f"analyze_buildings {r['wall']:.2f} s wall / {r['cpu']:.2f} s CPU (target "
                f"{TARGET_COMMAND_S} s): {_met(r['wall'] <= TARGET_COMMAND_S)}; sweep memory "
                f"{sweep:.0f} MiB (target {TARGET_SWEEP_MIB:.0f}): "
                f"{_met(sweep <= TARGET_SWEEP_MIB)}"
            )
            if duck is not None:
                say(
                    f"  - ours / DuckDB spatial: wall {r['wall'] / duck['wall']:.2f}x, "
                    f"peak RSS {r['peak'] / duck['peak']:.2f}x"
                )
    for mode, name in (("all-keep", "pyarrow kept out"), ("all-pyarrow", "with pyarrow")):
        base = results.get((mode.removeprefix("all-"), 2_000_000))
        r = results.get((mode, 2_000_000))
        if base and r:
            say(
                f"- {r['regions']:,} regions vs 494 at 2M ({name}): call "
                f"{r['call_wall'] / base['call_wall']:.2f}x wall, "
                f"{r['call_cpu'] / base['call_cpu']:.2f}x CPU; sweep memory "
                f"{r['peak'] - r['rss_after_imports']:.0f} vs "
                f"{base['peak'] - base['rss_after_imports']:.0f} MiB"
            )

    if args.dask:
        say()
        say("## DaskSweep, 2 worker processes x 1 thread, MA 20M")
        say()
        db = f"spatialite:///{ensure_database(args.data_dir, 'MA', 20_000_000)}"
        r = run_child(["dask", db])
        say(
            f"- wall {r['call_wall']:.1f} s (process {r['wall']:.1f} s; CPU of the process tree, "
            f"workers included, {r['cpu']:.1f} s); {r['regions']} regions, "
            f"{r['assigned']:,} assigned"
        )
        for i, (start, peak, cpu) in enumerate(
            zip(r["worker_rss_start"], r["worker_peak"], r["worker_cpu"], strict=True)
        ):
            say(
                f"- worker {i}: RSS at start {start:.0f} MiB, peak {peak:.0f} MiB "
                f"(+{peak - start:.0f}), CPU {cpu:.1f} s"
            )
        say(f"- client process peak RSS {r['client_peak']:.0f} MiB")

    say()
    say(f"Load average at end: {os.getloadavg()[0]:.1f}.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
