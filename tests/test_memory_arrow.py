"""Arrow memory as its own column: Tracker, measure/memory_step and %%memtrack.

Arrow buffers (pandas' ArrowDtype and ``string[pyarrow]`` columns, pandas 3's default
``str``) are allocated in pyarrow's memory pool, which tracemalloc does not see. The
tests build them from Arrow data directly (no Python strings on the traced heap), so
that the live heap stays flat while Arrow grows: the case the column is for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis_lib import Tracker, measure, memory_step
from analysis_lib.memory import MemoryLog
from tests.fresh import run_python

pa = pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parent.parent
ROWS = 500_000  # 4 MB of int64 per frame, about 6.6 MB as strings (offsets + digits)
PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3


def _int_frame(i: int) -> pd.DataFrame:
    # pa.array(numpy) would share numpy's buffer (seen by tracemalloc): compute a new one
    values = pa.compute.add(pa.array(np.arange(i * ROWS, (i + 1) * ROWS)), 1)
    return pd.DataFrame({"v": pd.array(values, dtype=pd.ArrowDtype(pa.int64()))})


def _string_frame(i: int) -> pd.DataFrame:
    text = pa.compute.cast(pa.array(np.arange(i * ROWS, (i + 1) * ROWS)), pa.string())
    return pd.DataFrame({"s": pd.array(text, dtype="string[pyarrow]")})


FACTORIES = [pytest.param(_int_frame, id="ArrowDtype"), pytest.param(_string_frame, id="string")]


@pytest.mark.parametrize("make", FACTORIES)
def test_tracker_flags_a_loop_keeping_arrow_frames_that_the_heap_misses(make):
    kept = []
    loop = Tracker(range(8), label="keeps")
    for i in loop:
        kept.append(make(i))
    frame = loop.frame
    arrow = frame["arrow_mib"]
    per_frame = sum(f.memory_usage(deep=True).sum() for f in kept) / len(kept) / 2**20
    growth = arrow.iloc[-1] - arrow.iloc[0]
    assert 0.8 * 8 * per_frame < growth < 1.3 * 8 * per_frame
    # tracemalloc alone sees next to nothing after the first iteration (which warms
    # pandas' and pyarrow's caches up): the frames' buffers are Arrow's
    heap = frame["heap_current_mib"]
    assert heap.iloc[-1] - heap.iloc[1] < 0.1 * growth, heap.tolist()
    assert loop.grew()
    assert loop.heap_trend().growth_mib > 3 * per_frame
    ax = loop.plot()
    assert "Arrow (pyarrow pool)" in [line.get_label() for line in ax.get_lines()]
    assert ax.get_title() == "keeps: live heap + Arrow grows"


@pytest.mark.parametrize("make", FACTORIES)
def test_tracker_does_not_flag_a_loop_releasing_arrow_frames(make):
    loop = Tracker(range(8), label="releases")
    for i in loop:
        frame = make(i)
        assert len(frame) == ROWS
        del frame
    arrow = loop.frame["arrow_mib"]
    assert (arrow - arrow.iloc[0]).abs().max() < 1.0
    assert not loop.grew()
    assert loop.plot().get_title() == "releases: live heap + Arrow flat" or not arrow.any()


@pytest.mark.skipif(
    not PANDAS_3, reason="pandas 3's default str dtype is Arrow-backed; 2.x: object"
)
def test_pandas_3_default_strings_are_seen_as_arrow():
    kept = []
    loop = Tracker(range(6), label="str")
    for i in loop:
        numbers = pa.compute.cast(pa.array(np.arange(i * ROWS, (i + 1) * ROWS)), pa.string())
        kept.append(pd.DataFrame({"s": pd.Series(numbers.to_pandas(types_mapper=None))}))
    assert str(kept[0]["s"].dtype) == "str"
    assert loop.grew()
    assert loop.frame["arrow_mib"].iloc[-1] - loop.frame["arrow_mib"].iloc[0] > 20


def test_measure_and_memory_step_report_arrow_left_behind():
    result = measure(_int_frame, 0)
    expected = ROWS * 8 / 2**20
    assert 0.9 * expected < result.arrow_retained_mib < 1.3 * expected
    assert result.arrow_mib >= result.arrow_retained_mib
    assert "; Arrow: " in str(result) and "MiB left behind" in str(result).split("Arrow")[1]
    log = MemoryLog()
    with memory_step("arrow kept", log=log) as step:
        kept = _string_frame(1)
    assert len(kept) == ROWS
    assert step.result.arrow_retained_mib > 0.8 * kept.memory_usage(deep=True).sum() / 2**20
    row = log.to_frame().iloc[0]
    assert row["arrow_retained_mib"] == step.result.arrow_retained_mib
    with memory_step("arrow freed", log=log) as step:
        del kept
    assert step.result.arrow_retained_mib < -0.8 * expected


NO_PYARROW = """\
import sys
from analysis_lib.memory import Tracker, measure

loop = Tracker(range(4))
for _ in loop:
    data = bytearray(2**20)
result = measure(len, [1])
print("ARROW", [row[3] for row in loop._rows], result.arrow_mib, "Arrow" in str(result))
print("LOADED", "pyarrow" in sys.modules)
"""


def test_arrow_column_never_imports_pyarrow(tmp_path):
    out = run_python(NO_PYARROW, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert "ARROW [0.0, 0.0, 0.0, 0.0, 0.0] 0.0 False" in out.stdout
    assert "LOADED False" in out.stdout


MEMTRACK_ARROW = """\
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "analysis_lib")
ip.run_cell("import numpy as np, pandas as pd, pyarrow as pa")
ip.run_cell(
    "%%memtrack arrow frame\\n"
    "values = pa.compute.add(pa.array(np.arange(2_000_000)), 1)\\n"
    "kept = pd.DataFrame({'v': pd.array(values, dtype=pd.ArrowDtype(pa.int64()))})\\n"
)
"""


def test_memtrack_prints_arrow_memory(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    out = run_python(MEMTRACK_ARROW, env=env, timeout=120)
    line = next(x for x in out.stdout.splitlines() if x.startswith("memtrack arrow frame: "))
    held = float(line.split("; Arrow: ")[1].split(" MiB held, ")[1].split()[0])
    assert 0.9 * 15.26 < held < 1.3 * 15.26, line  # 2M int64 = 15.26 MiB
