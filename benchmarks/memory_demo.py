"""The seed question's experiment, recorded with mprof: is the list's memory freed on return?

Runs two tiny scripts under ``mprof run`` (through ``analysis_lib.run_mprof``):

- ``freed``: the seed answer's ``memory_test()``: append 10,000,000 ints to a
  list inside a function, ``del`` it, return;
- ``kept``: the same function returning the list, which the caller keeps.

It overlays both on one figure (``reports/memory_demo.png``, the function call
shaded) and prints, for each run, memory before the call, the peak, memory at
return and a second after it (the scripts sleep 1 s after the call; the
interpreter frees everything at exit, so the very last sample says nothing),
and the share of the rise still held then (same-run baseline: memory just
before the call). It then measures the
same function in this process with ``analysis_lib.measure`` (``%memit``'s
numbers) as a cross-check.

Last, the cost of line-level memory (``analysis_lib.profile_lines``, what ``%mprun``
runs): each of two functions runs plain (best of 3) and under the line tracer, and the
ratio traced/plain is printed: one of few heavy lines, and a tight loop of cheap lines.

    .venv/bin/python benchmarks/memory_demo.py [--n 10000000] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRIPT = """\
import time


@profile
def memory_test():
    a = []
    for i in range({n}):
        a.append(i)
    {ending}


time.sleep(0.5)
{call}
time.sleep(1.0)
"""

RUNS = {
    "freed": {"ending": "del a", "call": "memory_test()"},
    "kept": {"ending": "return a", "call": "kept = memory_test()"},
}


def seed_function(n: int) -> None:
    """The seed answer's memory_test(), in this process."""
    a = []
    for i in range(n):
        a.append(i)
    del a


def heavy_lines(n: int) -> int:
    """A few lines that each allocate a lot."""
    kept = [0] * n
    copy = list(kept)
    del copy
    return len(kept)


def tight_loop(n: int) -> None:
    """The seed loop: many cheap lines."""
    a = []
    for i in range(n):
        a.append(i)
    del a


def line_tracing_cost() -> None:
    """Print plain and line-traced times of heavy_lines and tight_loop, and their ratio."""
    from analysis_lib import profile_lines

    print("\n[memory-demo] line-level memory (profile_lines, as %mprun): traced / plain time")
    for func, n in ((heavy_lines, 10_000_000), (tight_loop, 20_000)):
        plain = []
        for _ in range(3):
            started = time.perf_counter()
            func(n)
            plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        profile = profile_lines(func, n)
        traced = time.perf_counter() - started
        events = int(profile.lines["occurrences"].sum())
        print(
            f"  {func.__name__}({n:,}): plain {min(plain):.4f} s, traced {traced:.4f} s, "
            f"{traced / min(plain):.1f}x, {events:,} line events, "
            f"{traced / events * 1e6:.0f} us per line event"
        )


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")

    from analysis_lib import measure, plot_mprof, run_mprof

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="ints appended to the list")
    parser.add_argument("--interval", type=float, default=0.05, help="mprof sampling interval (s)")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "memory_demo.png")
    args = parser.parse_args()

    reports = args.output.parent
    reports.mkdir(parents=True, exist_ok=True)
    work = reports / "memory_demo"
    work.mkdir(exist_ok=True)

    profiles = {}
    for name, parts in RUNS.items():
        script = work / f"seed_{name}.py"
        script.write_text(SCRIPT.format(n=args.n, **parts))
        started = time.perf_counter()
        profiles[name] = run_mprof(script, output=work / f"seed_{name}.dat", interval=args.interval)
        print(f"[memory-demo] mprof run {script.name}: {time.perf_counter() - started:.1f} s")

    print()
    print(
        f"{'run':6} {'before call':>12} {'peak':>10} {'at return':>10} {'1 s after':>10}"
        f" {'held after / rise':>18}"
    )
    after = {}
    for name, profile in profiles.items():
        call = profile.functions.iloc[0]
        before = call["mem_start_mib"]
        samples = profile.samples
        window = samples[samples["time_s"].between(call["end_s"] + 0.2, call["end_s"] + 0.9)]
        after[name] = window["mem_mib"].mean() - before
        rise = profile.peak_mib - before
        print(
            f"{name:6} {before:8.1f} MiB {profile.peak_mib:6.1f} MiB {call['mem_end_mib']:6.1f} MiB"
            f" {before + after[name]:6.1f} MiB {after[name] / rise:17.1%}"
        )

    ax = plot_mprof(
        [profiles["freed"], profiles["kept"]],
        labels=[
            f"list freed on return: {after['freed']:+.0f} MiB after the call",
            f"list returned and kept: {after['kept']:+.0f} MiB after the call",
        ],
    )
    kept = profiles["kept"].samples
    ax.annotate(
        "kept list freed at interpreter exit",
        xy=(kept["time_s"].iloc[-1], kept["mem_mib"].iloc[-1]),
        xytext=(-10, 25),
        textcoords="offset points",
        ha="right",
        fontsize=8,
        arrowprops={"arrowstyle": "->", "linewidth": 0.8},
    )
    ax.set_title(f"Appending {args.n:,} ints to a list inside a function (mprof, RSS)")
    ax.figure.savefig(args.output, dpi=120, bbox_inches="tight")
    print(f"\n[memory-demo] wrote {args.output.relative_to(ROOT)}")

    result = measure(seed_function, args.n, label="seed memory_test() in-process")
    print(f"[memory-demo] cross-check with measure() (%memit numbers): {result}")
    line_tracing_cost()
    return 0


if __name__ == "__main__":
    sys.exit(main())
