"""Line-level memory: profile_lines and %mprun, on module functions and on cell functions.

The allocations are lists of known size (8 bytes a slot), compared with generous
margins; RSS readings are only ever compared as increments of one line.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from analysis_lib import LineProfile, profile_lines
from tests.fresh import run_python

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "tests" / "notebooks" / "mprun_cell.ipynb"
SLOTS = 6_000_000
SLOTS_MIB = SLOTS * 8 / 2**20  # 45.8 MiB


def grow(n):
    kept = [0] * n
    scratch = list(range(n))
    del scratch
    return len(kept)


def _row(profile: LineProfile, text: str):
    rows = profile.lines[profile.lines["source"].str.strip() == text]
    assert len(rows) == 1, profile.lines
    return rows.iloc[0]


def test_profile_lines_names_the_allocating_line_of_a_module_function():
    profile = profile_lines(grow, SLOTS)
    assert profile.value == SLOTS
    assert profile.function == "grow"
    assert profile.filename == __file__
    lines = profile.lines
    assert lines.columns.tolist() == [
        "line",
        "memory_mib",
        "increment_mib",
        "occurrences",
        "source",
    ]
    assert lines["source"].str.strip().tolist() == [
        "def grow(n):",
        "kept = [0] * n",
        "scratch = list(range(n))",
        "del scratch",
        "return len(kept)",
    ]
    assert lines["line"].tolist() == list(range(grow.__code__.co_firstlineno, lines["line"][0] + 5))
    kept = _row(profile, "kept = [0] * n")
    assert 0.8 * SLOTS_MIB < kept["increment_mib"] < 1.3 * SLOTS_MIB
    assert kept["occurrences"] == 1
    # the def line is counted from the start of the call, not from 0 (memory-profiler's quirk)
    assert abs(_row(profile, "def grow(n):")["increment_mib"]) < 0.2 * SLOTS_MIB
    # the list of ints (8-byte slot + 28-byte int each) needs more than `kept`
    assert _row(profile, "scratch = list(range(n))")["increment_mib"] > 2 * SLOTS_MIB
    assert profile.largest_increment()["source"].strip() == "scratch = list(range(n))"
    text = str(profile)
    assert text.startswith(f"Filename: {__file__}\n")
    assert "Line #    Mem usage    Increment  Occurrences   Contents" in text


def test_profile_lines_counts_occurrences_in_a_loop_and_marks_lines_that_never_ran():
    def loop(k):
        total = 0
        for i in range(k):
            total += i
        if k < 0:
            total = -1
        return total

    profile = profile_lines(loop, 5)
    assert profile.value == 10
    assert _row(profile, "total += i")["occurrences"] == 5
    never = _row(profile, "total = -1")
    assert never["occurrences"] == 0
    assert never[["memory_mib", "increment_mib"]].isna().all()


def test_profile_lines_unwraps_decorators_and_lets_errors_through():
    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            return f(*args, **kwargs)

        return wrapper

    @decorate
    def inner(x):
        y = x * 2
        return y

    profile = profile_lines(inner, 21)
    assert profile.value == 42
    assert _row(profile, "y = x * 2")["occurrences"] == 1

    def fails():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        profile_lines(fails)


def test_profile_lines_rejects_what_it_cannot_profile():
    with pytest.raises(TypeError, match=r"`func` must be a Python function .*; got <built-in"):
        profile_lines(len, [])
    with pytest.raises(TypeError, match="`func` must be a Python function"):
        profile_lines(42)
    namespace: dict = {}
    exec("def made():\n    return 1\n", namespace)  # no file, not in linecache
    with pytest.raises(ValueError, match=r"`func` must be a function whose source Python keeps"):
        profile_lines(namespace["made"])


MPRUN_DRIVER = """\
import json
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "analysis_lib")
ip.run_cell("def grow(n):\\n    kept = [0] * n\\n    return len(kept)\\n")
ip.run_cell("%mprun -f grow grow(6_000_000)")
ip.run_cell("def unused():\\n    return 1\\n")
ip.run_cell("profiles = %mprun -r -f grow -f unused grow(10)")
profiles = ip.user_ns["profiles"]
print("RETURNED", json.dumps([[p.function, int(p.lines["occurrences"].sum())] for p in profiles]))
bad_calls = ["%mprun grow(1)", "%mprun -f missing grow(1)", "%mprun -f len grow(1)"]
bad_calls.append("%mprun -f grow")
for bad in bad_calls:
    result = ip.run_cell(bad)
    print("BAD", type(result.error_in_exec).__name__)
"""


def test_mprun_magic_in_ipython_reports_a_cell_function(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(MPRUN_DRIVER)
    env = {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    out = run_python(driver, env=env, timeout=120)
    assert "Could not find file" not in out.stdout + out.stderr
    assert "Filename: <ipython-input-" in out.stdout
    kept = [line for line in out.stdout.splitlines() if line.endswith("kept = [0] * n")]
    assert len(kept) == 2, out.stdout  # the first run, then the 10-slot run
    increment = float(kept[0].split()[3])
    assert 0.8 * SLOTS_MIB < increment < 1.3 * SLOTS_MIB, kept[0]
    assert "unused: not called by the statement; no lines to show" in out.stdout
    returned = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RETURNED "))[9:])
    assert returned == [["grow", 3], ["unused", 0]]
    assert [x for x in out.stdout.splitlines() if x.startswith("BAD ")] == ["BAD UsageError"] * 4
    for message in [
        "%mprun: name at least one function with -f",
        "%mprun: could not find function 'missing'",
        "%mprun: `-f len` must be a Python function",
        "%mprun: give a statement to run",
    ]:
        assert message in out.stderr + out.stdout, message


@pytest.mark.slow
def test_mprun_in_a_notebook_run_by_papermill(tmp_path):
    """A real kernel: the cell function's source comes from IPython's cell cache."""
    import nbformat
    import papermill

    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")
    output = tmp_path / "mprun_cell.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(output),
        parameters={"n": SLOTS},
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    nb = nbformat.read(output, as_version=4)
    texts = [
        "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")
        for cell in nb.cells
        if cell.cell_type == "code"
    ]
    report = next(t for t in texts if "Line #" in t)
    assert "Could not find file" not in report
    kept = [line for line in report.splitlines() if line.endswith("kept = [0] * n")]
    assert len(kept) == 1, report
    # Line #, memory, "MiB", increment, "MiB", occurrences, source
    fields = kept[0].split()
    assert fields[2] == "MiB" and fields[4] == "MiB" and fields[5] == "1", kept[0]
    assert 0.8 * SLOTS_MIB < float(fields[3]) < 1.3 * SLOTS_MIB, report
    result = next(t for t in texts if t.startswith("RESULT "))
    value, rows = result[len("RESULT ") :].split(" ", 1)
    assert int(value) == SLOTS
    lines = {row["source"].strip(): row for row in json.loads(rows)}
    assert 0.8 * SLOTS_MIB < lines["kept = [0] * n"]["increment_mib"] < 1.3 * SLOTS_MIB


def test_line_profile_table_lines_up_with_memory_profilers():
    profile = profile_lines(grow, 1000)
    header, rule, *rows = str(profile).splitlines()[2:]
    assert len(rule) == len(header) and set(rule) == {"="}
    assert len(rows) == 5
    start = header.index("Contents")
    assert [row[start:] for row in rows] == profile.lines["source"].tolist()
