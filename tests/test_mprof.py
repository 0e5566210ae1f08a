"""mprof: the strict .dat parser (valid and invalid tables), real `mprof run`s, the plot."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from analysis_lib import MprofProfile, plot_mprof, plot_mprof_loops, read_mprof, run_mprof
from analysis_lib.memory import mprof_mark

# --- read_mprof on hand-written files -------------------------------------------------------

VALID = [
    pytest.param(
        "MEM 10.0 100.0\nMEM 30.0 100.5\nMEM 12.0 101.0\n",
        {"cmdline": None, "samples": 3, "peak": 30.0, "peak_t": 0.5, "duration": 1.0},
        id="samples-only",
    ),
    pytest.param(
        "CMDLINE python demo.py --n 3\n"
        "MEM 20.0 1000.0\n"
        "MEM 120.0 1000.5\n"
        "FUNC __main__.grow 20.5 1000.1 21.0 1000.9 0\n"
        "FUNC __main__.inner 50.0 1000.2 90.0 1000.4 1\n"
        "MEM 21.0 1001.0\n",
        {
            "cmdline": "python demo.py --n 3",
            "samples": 3,
            "peak": 120.0,
            "functions": [("__main__.grow", 0.1, 0.9, 0), ("__main__.inner", 0.2, 0.4, 1)],
        },
        id="function-brackets-with-depth",
    ),
    pytest.param(
        "MEM 5.0 10.0\nFUNC mod.f 5.0 10.2 6.0 10.7\nMEM 6.0 11.0\n",
        {"samples": 2, "functions": [("mod.f", 0.2, 0.7, None)]},
        id="function-bracket-without-depth",
    ),
    pytest.param(
        "CMDLINE python parent.py\n"
        "MEM 100.0 50.0\n"
        "CHLD 4242 60.0 50.01\n"
        "CHLD 4243 10.0 50.01\n"
        "MEM 110.0 50.1\n"
        "CHLD 0 0.000000 50.11\n"  # children gone while listed: no sample, skipped
        "CHLD 4242 70.0 50.11\n",
        {"samples": 2, "children": [(4242, 0.01, 60.0), (4243, 0.01, 10.0), (4242, 0.11, 70.0)]},
        id="child-samples",
    ),
    pytest.param(
        "MEM 20.0 10.0\n"
        "CHLD 77 5.0 10.0\n"
        "MEM 25.0 10.5\n"
        "CHLD 77 0.000000 10.5\n"  # the child ended (a zombie reads 0): dropped
        "MEM 0.000000 11.0\n",  # mprof's sample after the program ended: dropped
        {"samples": 2, "duration": 0.5, "children": [(77, 0.0, 5.0)]},
        id="readings-of-ended-processes",
    ),
]


@pytest.mark.parametrize(("content", "expected"), VALID)
def test_read_mprof_valid(tmp_path, content, expected):
    path = tmp_path / "run.dat"
    path.write_text(content)
    profile = read_mprof(path)
    assert isinstance(profile, MprofProfile)
    assert profile.path == path
    assert profile.samples.columns.tolist() == ["time_s", "mem_mib"]
    assert profile.samples["time_s"].iloc[0] == 0.0
    assert len(profile.samples) == expected["samples"]
    if "cmdline" in expected:
        assert profile.cmdline == expected["cmdline"]
    if "peak" in expected:
        assert profile.peak_mib == expected["peak"]
    if "peak_t" in expected:
        assert profile.peak_time_s == pytest.approx(expected["peak_t"])
    if "duration" in expected:
        assert profile.duration_s == pytest.approx(expected["duration"])
    functions = [
        (r.name, r.start_s, r.end_s, None if pd.isna(r.depth) else r.depth)
        for r in profile.functions.itertuples()
    ]
    want = expected.get("functions", [])
    assert [f[0] for f in functions] == [w[0] for w in want]
    for got, wanted in zip(functions, want, strict=True):
        assert got[1:3] == pytest.approx(wanted[1:3])
        assert got[3] == wanted[3]
    children = list(profile.children.itertuples(index=False, name=None))
    want = expected.get("children", [])
    assert [c[0] for c in children] == [w[0] for w in want]
    for got, wanted in zip(children, want, strict=True):
        assert got[1:] == pytest.approx(wanted[1:])


def test_read_mprof_frames_have_stable_columns_and_types(tmp_path):
    path = tmp_path / "plain.dat"
    path.write_text("MEM 1.5 7.0\n")
    profile = read_mprof(path)
    assert profile.children.columns.tolist() == ["pid", "time_s", "mem_mib"]
    assert profile.children["pid"].dtype == "int64"
    assert profile.functions.columns.tolist() == [
        "name",
        "start_s",
        "end_s",
        "duration_s",
        "mem_start_mib",
        "mem_end_mib",
        "depth",
    ]
    assert str(profile.functions["depth"].dtype) == "Int64"
    assert profile.summary() == {
        "label": "plain",
        "samples": 1,
        "duration_s": 0.0,
        "start_mib": 1.5,
        "peak_mib": 1.5,
        "peak_time_s": 0.0,
        "end_mib": 1.5,
        "functions": 0,
        "children": 0,
    }


INVALID = [
    ("", 1, "empty file"),
    ("CMDLINE python x.py\n", 1, "no MEM samples in 1 line"),
    ("CMDLINE python x.py\nMEM 0.000000 5.0\n", 2, "no MEM samples in 2 line"),
    ("MEM 1.0\n", 1, "MEM needs '<MiB> <unix time>', got '1.0'"),
    ("MEM 1.0 2.0 3.0\n", 1, "MEM needs '<MiB> <unix time>'"),
    ("MEM 5 100\nMEM a b\n", 2, "MEM needs numbers '<MiB> <unix time>', got 'a b'"),
    ("MEM 5 100\nMEM nan 101\n", 2, "MEM needs numbers"),
    ("MEM -1.000000 100\n", 1, r"MEM memory is negative \(-1.0\): the sample failed"),
    ("MEM 1 100\n\nMEM 2 101\n", 2, "blank line"),
    ("MEM 1 100\nmem 2 101\n", 2, "unknown record 'mem'; expected one of CMDLINE, MEM, CHLD"),
    ("MEM 1 100\nFilename: x.py\n", 2, "unknown record 'Filename:'"),
    ("MEM 1 100\nCHLD x 1 2\n", 2, "CHLD needs '<pid> <MiB> <unix time>'"),
    ("MEM 1 100\nCHLD 12 1\n", 2, "CHLD needs '<pid> <MiB> <unix time>'"),
    ("MEM 1 100\nFUNC f 1 2 3\n", 2, "FUNC needs '<name> <MiB> <t start> <MiB> <t end>"),
    ("MEM 1 100\nFUNC f 1 2 3 4 0 9\n", 2, "FUNC needs"),
    ("MEM 1 100\nFUNC f 1 2 3 4 x\n", 2, "FUNC depth must be an integer: 'x'"),
    ("MEM 1 100\nFUNC f 1 5 3 4\n", 2, r"FUNC ends \(4.0\) before it starts \(5.0\)"),
    ("CMDLINE a\nMEM 1 100\nCMDLINE b\n", 3, "second CMDLINE: the file holds more than one run"),
]


@pytest.mark.parametrize(("content", "lineno", "match"), INVALID)
def test_read_mprof_invalid(tmp_path, content, lineno, match):
    path = tmp_path / "bad.dat"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"^{path}:{lineno}: {match}"):
        read_mprof(path)


def test_read_mprof_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_mprof(tmp_path / "nope.dat")


# --- real mprof runs ------------------------------------------------------------------------

GROW = """\
import time
from pathlib import Path


@profile
def grow():
    numbers = [0] * 10_000_000  # 76 MiB of pointers, freed on return
    time.sleep(0.3)
    return len(numbers)


time.sleep(0.2)
grow()
time.sleep(0.3)
"""

PARENT = """\
import subprocess
import os
import sys

child = "import time; data = b'x' * (60 * 2**20); time.sleep(0.6)"
subprocess.run([sys.executable, "-c", child], check=True)
"""


@pytest.fixture(scope="module")
def grow_profile(tmp_path_factory) -> MprofProfile:
    tmp = tmp_path_factory.mktemp("mprof")
    script = tmp / "grow.py"
    script.write_text(GROW)
    output = tmp / "grow.dat"
    output.write_text("junk that must not survive\n")  # run_mprof replaces an old file
    return run_mprof(script, output=output, interval=0.02)


@pytest.fixture(scope="module")
def parent_profile(tmp_path_factory) -> MprofProfile:
    tmp = tmp_path_factory.mktemp("mprof")
    script = tmp / "parent.py"
    script.write_text(PARENT)
    return run_mprof(script, output=tmp / "parent.dat", interval=0.02, multiprocess=True)


def test_run_mprof_records_a_profile_function_and_the_memory_freed(grow_profile):
    profile = grow_profile
    assert "grow.py" in profile.cmdline
    assert len(profile.samples) > 10
    assert profile.samples["time_s"].is_monotonic_increasing
    functions = profile.functions
    assert functions["name"].tolist() == ["__main__.grow"]
    call = functions.iloc[0]
    assert call["duration_s"] >= 0.3
    rise = profile.peak_mib - call["mem_start_mib"]
    assert rise > 50  # the 76 MiB list
    assert call["start_s"] <= profile.peak_time_s <= call["end_s"] + 0.05
    # memory was given back when grow() returned: the run ends near where the call started
    assert profile.end_mib - call["mem_start_mib"] < 0.1 * rise
    assert call["mem_end_mib"] - call["mem_start_mib"] < 0.1 * rise


def test_run_mprof_follows_child_processes(parent_profile):
    profile = parent_profile
    children = profile.children
    assert children["pid"].nunique() >= 1
    assert children["mem_mib"].max() > 50  # the child's 60 MiB
    # --include-children (the default) adds the children to each MEM sample
    assert profile.peak_mib > children["mem_mib"].max()
    assert profile.functions.empty  # --multiprocess turns mprof's Python mode off


def test_plot_mprof_one_line_per_profile_with_brackets(grow_profile, parent_profile):
    ax = plot_mprof([grow_profile, parent_profile], labels=["grow", "parent"])
    assert [line.get_label() for line in ax.get_lines()] == ["grow", "parent"]
    assert len(ax.patches) == 1  # grow()'s bracket
    assert ax.get_xlabel() == "time (s)"
    assert ax.get_ylabel() == "memory (MiB)"
    ax = plot_mprof([grow_profile, parent_profile], children=True)
    pids = parent_profile.children["pid"].nunique()
    assert len(ax.get_lines()) == 2 + pids


def test_plot_mprof_reads_paths_and_checks_labels(grow_profile):
    ax = plot_mprof(grow_profile.path)
    assert [line.get_label() for line in ax.get_lines()] == ["grow"]
    with pytest.raises(ValueError, match="`labels` must be a sequence of 2 strings; got"):
        plot_mprof([grow_profile, grow_profile], labels=["only one"])
    with pytest.raises(ValueError, match="at least one profile"):
        plot_mprof([])


def test_run_mprof_command_string_env_and_this_environment_on_path(tmp_path):
    check = (
        "import os, sys; "
        f"sys.exit(0 if os.environ['MPROF_TEST'] == 'yes' and sys.prefix == {sys.prefix!r} else 4)"
    )
    profile = run_mprof(
        f'python -c "{check}"',
        output=tmp_path / "string.dat",
        interval=0.02,
        env={"MPROF_TEST": "yes"},
    )
    assert profile.cmdline.startswith("python -c")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("raise SystemExit(3)\n", "exited with status 3"),
        ("raise ValueError('boom in the profiled script')\n", "ValueError: boom in the profiled"),
    ],
)
def test_run_mprof_failure_raises_with_stderr_tail(tmp_path, body, match):
    script = tmp_path / "fails.py"
    script.write_text(body)
    with pytest.raises(RuntimeError, match=match):
        run_mprof(script, output=tmp_path / "fails.dat", interval=0.02)


def test_run_mprof_timeout_kills_the_program(tmp_path):
    pid_file = tmp_path / "pid"
    script = tmp_path / "sleeps.py"
    script.write_text(
        textwrap.dedent(f"""\
        import os, pathlib, time
        pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
        time.sleep(60)
        """)
    )
    with pytest.raises(RuntimeError, match="timed out after 1.5 s"):
        run_mprof(script, output=tmp_path / "sleeps.dat", timeout=1.5)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the profiled program (pid {pid}) survived the timeout")


@pytest.mark.parametrize(
    ("target", "kwargs", "error", "match"),
    [
        ("x", {"interval": 0}, ValueError, "`interval` must be a positive number; got 0"),
        ("x", {"interval": "1"}, TypeError, r"`interval` must be .*; got '1' \(str\)"),
        ("x", {"timeout": 0}, ValueError, "`timeout` must be a positive number of seconds or None"),
        ("x", {"timeout": "5"}, TypeError, "`timeout` must be a positive number of seconds"),
        ("", {}, ValueError, "`target` must be a script path or a non-empty command; got ''"),
        ([], {}, ValueError, r"`target` must be a script path or a non-empty command; got \[\]"),
        (42, {}, TypeError, "`target` must be a script path, a command string or an argv list"),
        ("missing.py", {}, FileNotFoundError, "`target` script not found: missing.py"),
    ],
)
def test_run_mprof_rejects_bad_arguments(tmp_path, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        run_mprof(target, output=tmp_path / "x.dat", **kwargs)


# --- marked spans: mprof_mark, MprofProfile.span, plot_mprof_loops ----------------------------

LOOPS = """\
import os
import sys
import time
from pathlib import Path

from analysis_lib.memory import mprof_mark

setup = [0] * {setup}  # what every process pays before its loop (imports, set-up)
time.sleep(0.3)
kept = []
with mprof_mark("loop"):
    for i in range(5):
        block = [0] * 1_000_000  # 7.6 MiB a step
        if sys.argv[1] == "keeps":
            kept.append(block)
        time.sleep(0.08)
    del block
time.sleep(0.2)
"""
STEP_MIB = 1_000_000 * 8 / 2**20


@pytest.fixture(scope="module")
def loop_profiles(tmp_path_factory) -> dict[str, MprofProfile]:
    tmp = tmp_path_factory.mktemp("loops")
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    profiles = {}
    for name, setup in (("keeps", 2_000_000), ("frees", 12_000_000)):
        module_dir = tmp / name
        module_dir.mkdir()
        (module_dir / f"loop_{name}.py").write_text(LOOPS.format(setup=setup))
        # a module run in mprof's Python mode (``python -m memory_profiler ... loop_x keeps``)
        env_here = {"PYTHONPATH": os.pathsep.join([str(module_dir), env["PYTHONPATH"]])}
        profiles[name] = run_mprof(
            [f"loop_{name}", name],
            output=tmp / f"{name}.dat",
            interval=0.02,
            python=True,
            env=env_here,
        )
    return profiles


def test_mprof_mark_records_the_loop_span(loop_profiles):
    keeps, frees = loop_profiles["keeps"].span("loop"), loop_profiles["frees"].span("loop")
    assert 0.35 < keeps.duration_s < 2.0 and 0.35 < frees.duration_s < 2.0
    # the set-up before the loop differs by 76 MiB: absolute levels hide the loops
    assert frees.start_mib - keeps.start_mib > 50
    assert 0.8 * 5 * STEP_MIB < keeps.peak_above_start_mib < 1.4 * 5 * STEP_MIB
    assert 0.8 * 5 * STEP_MIB < keeps.end_above_start_mib < 1.4 * 5 * STEP_MIB
    assert 0.8 * STEP_MIB < frees.peak_above_start_mib < 2.5 * STEP_MIB
    assert abs(frees.end_above_start_mib) < STEP_MIB
    assert loop_profiles["keeps"].functions["name"].tolist() == [".loop"]


def test_plot_mprof_loops_draws_memory_above_each_loops_start(loop_profiles, tmp_path):
    profiles = [loop_profiles["keeps"], loop_profiles["frees"]]
    ax = plot_mprof_loops(profiles, labels=["keeps", "frees"])
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    spans = [p.span("loop") for p in profiles]
    for line, span, label in zip(lines, spans, ["keeps", "frees"], strict=True):
        assert line.get_label() == (
            f"{label}: peak {span.peak_above_start_mib:+.1f} MiB, "
            f"end {span.end_above_start_mib:+.1f} MiB, {span.duration_s:.2f} s"
        )
        x, y = line.get_xdata(), line.get_ydata()
        assert x[0] == 0 and y[0] == 0
        assert x[-1] == pytest.approx(span.duration_s)
        assert max(y) == pytest.approx(span.peak_above_start_mib)
    assert ax.get_xlabel().startswith("seconds since the loop started")
    ax.figure.savefig(tmp_path / "loops.png")
    renderer = ax.figure.canvas.get_renderer()
    assert ax.xaxis.label.get_window_extent(renderer).y0 >= 0


def test_span_and_loop_plot_reject_a_recording_without_the_mark(grow_profile):
    with pytest.raises(ValueError, match=r"no span named 'loop' \(FUNC records: __main__.grow\)"):
        grow_profile.span("loop")
    assert grow_profile.span("grow").name == "grow"  # an @profile function is a span too
    with pytest.raises(ValueError, match="no span named 'loop'"):
        plot_mprof_loops(grow_profile)
    with pytest.raises(TypeError, match="`span` must be a marker name"):
        plot_mprof_loops(grow_profile, span=1)


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("two words", ValueError, "`name` must be one word without whitespace; got 'two words'"),
        ("", ValueError, "`name` must be one word without whitespace; got ''"),
        (3, TypeError, r"`name` must be one word \(str\); got 3 \(int\)"),
    ],
)
def test_mprof_mark_rejects_bad_names(name, error, match):
    with pytest.raises(error, match=match), mprof_mark(name):
        pass


def test_mprof_mark_is_a_no_op_outside_mprof(monkeypatch):
    import builtins

    monkeypatch.delattr(builtins, "profile", raising=False)
    with mprof_mark("loop"):
        ran = True
    assert ran
