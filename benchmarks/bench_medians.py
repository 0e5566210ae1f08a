"""Exact per-region medians: MedianStore (bounded, spilling) against keeping every value in memory.

Each measurement runs in a fresh Python process, so its peak RSS is its own. The values
arrive in chunks (``--chunk``, 10,000 as the sweep's default fetch), generated on the fly
from a seeded generator (footprint-like log-normal values, 3% NaN, regions drawn with a
skew so that some regions are much larger than others), so the data itself is never held
whole. Methods:

* ``today (per-region concat)``: what ``_per_zip._Partials`` does at the time of writing:
  per chunk, its values sorted by region plus a dense int32 count per region; at the end,
  per region, the slices of every chunk concatenated and ``np.median``;
* ``in-memory (one sort)``: every value kept, then one stable sort by region and
  ``np.partition`` per region (the fastest in-memory way we know, for reference);
* ``MedianStore (32 MiB)``, ``(8 MiB)``, ``(4 MiB)``: ``analysis_lib.regions._medians.MedianStore``
  with that ``memory_limit`` (spilling to the system's temporary directory).

Printed per case (values x regions): wall and CPU seconds of add+medians; ``net CPU``
subtracts the CPU seconds the data generation alone takes (``data only``): CPU seconds are far
less sensitive than wall seconds to the other jobs of a shared machine, and ``--repeat N``
keeps each method's run with the least CPU; peak RSS above the RSS after imports (the
kernel's peak mark is reset after the imports through ``/proc/self/clear_refs``);
tracemalloc's peak (a second run of the same method with tracemalloc on); and ratios against
``today`` measured in the same run. Before timing, every method's medians are checked
against ``today``'s on 300,000 values, and each case's checksums must agree across methods.

Usage::

    python benchmarks/bench_medians.py                       # 2M and 20M, 494 and 41,000 regions
    python benchmarks/bench_medians.py --values 2000000 --regions 494 --methods store32,today
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
from tests.fresh import ChildFailed, reset_peak_rss, rss, run_json  # noqa: E402

METHODS = {
    "data": "data only",
    "today": "today (per-region concat)",
    "sort": "in-memory (one sort)",
    "store32": "MedianStore (32 MiB)",
    "store8": "MedianStore (8 MiB)",
    "store4": "MedianStore (4 MiB)",
}


def chunks(n_values: int, n_regions: int, chunk: int, seed: int = 42):
    """Yield (region, values) chunks; the same data for every method."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # A fixed skew: region weights from a log-normal, like ZIP codes of very unequal size.
    weights = rng.lognormal(0, 1, n_regions)
    cumulative = np.cumsum(weights / weights.sum())
    cumulative[-1] = 1.0
    for at in range(0, n_values, chunk):
        n = min(chunk, n_values - at)
        region = np.searchsorted(cumulative, rng.random(n), side="right").astype(np.int64)
        values = np.round(rng.lognormal(4.7, 0.6, n), 2)
        values[rng.random(n) < 0.03] = np.nan
        yield region, values


def today_medians(stream, n_regions: int):
    """The in-memory store as ``_Partials`` keeps it: per chunk sorted values + dense counts."""
    import numpy as np

    values_per_chunk, counts_per_chunk = [], []
    for region, values in stream:
        keep = ~np.isnan(values)
        region, values = region[keep], values[keep]
        values_per_chunk.append(values[np.argsort(region, kind="stable")])
        counts_per_chunk.append(np.bincount(region, minlength=n_regions).astype(np.int32))
    result = np.full(n_regions, np.nan)
    counts = np.stack(counts_per_chunk)
    ends = np.cumsum(counts, axis=1)
    for pos in np.flatnonzero(counts.sum(axis=0)):
        picked = np.flatnonzero(counts[:, pos])
        merged = np.concatenate(
            [values_per_chunk[c][ends[c, pos] - counts[c, pos] : ends[c, pos]] for c in picked]
        )
        result[pos] = np.median(merged)
    return result


def sort_medians(stream, n_regions: int):
    """Every value kept; one stable sort by region, then a partition per region."""
    import numpy as np

    from analysis_lib.regions._medians import _medians_of_grouped

    regions, values_list = [], []
    for region, values in stream:
        keep = ~np.isnan(values)
        regions.append(region[keep].astype(np.uint16 if n_regions <= 2**16 else np.uint32))
        values_list.append(values[keep])
    region = np.concatenate(regions)
    del regions
    values = np.concatenate(values_list)
    del values_list
    order = np.argsort(region, kind="stable")
    counts = np.bincount(region, minlength=n_regions)
    del region
    grouped = values[order]
    del values, order
    result = np.full(n_regions, np.nan)
    _medians_of_grouped(grouped, counts, result)
    return result


def store_medians(stream, n_regions: int, limit: int):
    from analysis_lib.regions._medians import MedianStore

    with MedianStore(n_regions, memory_limit=limit) as store:
        for region, values in stream:
            store.add(region, values)
        return store.medians()


def child(method: str, n_values: int, n_regions: int, chunk: int, trace: bool) -> dict:
    import numpy as np

    import analysis_lib.regions._medians  # noqa: F401  (imports are not part of the measurement)

    if trace:
        import tracemalloc

        tracemalloc.start()
    baseline = rss().current_mib
    reset = reset_peak_rss()  # else the peak may be the imports' (ru_maxrss counts from exec)
    stream = chunks(n_values, n_regions, chunk)
    start, cpu_start = time.perf_counter(), time.process_time()
    if method == "data":
        for _ in stream:
            pass
        result = np.full(n_regions, np.nan)
    elif method == "today":
        result = today_medians(stream, n_regions)
    elif method == "sort":
        result = sort_medians(stream, n_regions)
    else:
        result = store_medians(stream, n_regions, int(method.removeprefix("store")) * 2**20)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "baseline_mib": baseline,
        "peak_mib": rss().peak_mib,
        "peak_reset": reset,
        "checksum": float(np.nansum(result)),
        "n_nan": int(np.isnan(result).sum()),
    }
    if trace:
        out["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    return out


def run_child(method, n_values, n_regions, chunk, trace) -> dict:
    args = ["--child", method, "--values", str(n_values)]
    args += ["--regions", str(n_regions), "--chunk", str(chunk)] + (["--trace"] if trace else [])
    try:
        return run_json(Path(__file__), *args, cwd=Path.cwd(), timeout=None)
    except ChildFailed as error:
        raise SystemExit(f"{method} failed:\n{error}") from None


def check(n_regions: int) -> None:
    """Every method's medians equal today's on a small case (exactness, not speed)."""
    import numpy as np

    expected = today_medians(chunks(300_000, n_regions, 10_000), n_regions)
    for got in (
        sort_medians(chunks(300_000, n_regions, 10_000), n_regions),
        store_medians(chunks(300_000, n_regions, 10_000), n_regions, 2**20),
    ):
        np.testing.assert_array_equal(got, expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, nargs="+", default=[2_000_000, 20_000_000])
    parser.add_argument("--regions", type=int, nargs="+", default=[494, 41_000])
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--methods", default="data,today,sort,store32,store8")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method, least CPU kept")
    parser.add_argument("--child")
    parser.add_argument("--trace", action="store_true")
    options = parser.parse_args()
    if options.child:
        result = child(
            options.child, options.values[0], options.regions[0], options.chunk, options.trace
        )
        print(json.dumps(result))
        return
    methods = options.methods.split(",")
    for regions in options.regions:
        check(regions)
    print(f"exactness: every method equals today's medians (300,000 values; {options.regions})")
    print(f"load average: {os.getloadavg()[0]:.2f}; chunk {options.chunk:,} values\n")
    header = (
        "| values | regions | method | wall s | CPU s | net CPU s | x today | peak RSS above"
        " imports MiB | x today | tracemalloc peak MiB |"
    )
    print(header)
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n_values in options.values:
        for regions in options.regions:
            runs = {}
            for m in methods:  # the least CPU of --repeat runs: the machine is shared
                tries = [run_child(m, n_values, regions, options.chunk, False)]
                tries += [
                    run_child(m, n_values, regions, options.chunk, False)
                    for _ in range(options.repeat - 1)
                ]
                runs[m] = min(tries, key=lambda r: r["cpu_seconds"])
            if not options.no_trace:
                for m in methods:
                    traced = run_child(m, n_values, regions, options.chunk, True)
                    runs[m]["traced_peak_mib"] = traced["traced_peak_mib"]
            sums = {m: (r["checksum"], r["n_nan"]) for m, r in runs.items() if m != "data"}
            if len(set(sums.values())) > 1:
                raise SystemExit(f"methods disagree at {n_values} x {regions}: {sums}")
            data_cpu = runs["data"]["cpu_seconds"] if "data" in runs else 0.0
            today = runs.get("today")
            for m in methods:
                r = runs[m]
                net = r["cpu_seconds"] - (data_cpu if m != "data" else 0.0)
                above = r["peak_mib"] - r["baseline_mib"]
                ratio_s = ratio_m = "-"
                if today and m not in ("data", "today"):
                    today_net = today["cpu_seconds"] - data_cpu
                    today_above = today["peak_mib"] - today["baseline_mib"]
                    ratio_s = f"{net / today_net:.2f}" if today_net > 0 else "-"
                    ratio_m = f"{above / today_above:.2f}" if today_above > 0 else "-"
                traced = r.get("traced_peak_mib")
                print(
                    f"| {n_values:,} | {regions:,} | {METHODS[m]} | {r['seconds']:.2f} | "
                    f"{r['cpu_seconds']:.2f} | {net:.2f} | {ratio_s} | {above:.0f} | {ratio_m} | "
                    f"{'-' if traced is None else f'{traced:.1f}'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
