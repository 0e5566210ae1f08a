"""`%load_ext analysis_lib` in real IPython shells (subprocesses): %memit, %mprun, %%memtrack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fresh import run_python

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


ENV = {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "NO_COLOR": "1"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a program other than Python (the ``ipython`` application) like :func:`run_python`."""
    return subprocess.run(
        args, cwd=cwd, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120
    )


def test_terminal_ipython_runs_a_memtrack_cell(tmp_path):
    """The `ipython` application itself, loading the extension at start-up, runs a .ipy file."""
    cell = tmp_path / "cell.ipy"
    cell.write_text(
        textwrap.dedent("""\
        %%memtrack keep 40 MiB
        import numpy as np
        kept = np.ones(40 * 2**17)
        """)
    )
    ipython = BIN / "ipython"
    out = _run(
        [
            str(ipython),
            "--quick",
            "--no-banner",
            "--colors=nocolor",
            "--ext=analysis_lib",
            str(cell),
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    report = [line for line in out.stdout.splitlines() if line.startswith("memtrack ")]
    assert len(report) == 1, out.stdout
    assert report[0].startswith("memtrack keep 40 MiB: peak memory: ")
    assert "increment: " in report[0] and "left behind: " in report[0]


DRIVER = """\
import json
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "analysis_lib")
magics = ip.magics_manager.magics
print("MAGICS", json.dumps({kind: sorted(magics[kind]) for kind in ("line", "cell")}))
ip.run_cell("import time\\nimport numpy as np")
ip.run_cell("%%memtrack keep 50 MiB\\nkept = np.ones(50 * 2**17)\\n")
# the freed block lives 0.1 s: a bare np.ones(...).sum() lasts ~15 ms and the sampler can miss it
ip.run_cell("%%memtrack -q free 50 MiB\\nx = np.ones(50 * 2**17)\\ntime.sleep(0.1)\\ndel x\\n")
ip.run_cell("%%memtrack\\nx = 1 / 0\\n")
bad = ip.run_cell("%%memtrack -i 0 never\\ny = 1\\n")
print("BAD_INTERVAL", type(bad.error_in_exec).__name__, "y" in ip.user_ns)
ip.run_cell("%memit sum(range(1000))")
ip.run_cell("%memit -i 0.005 held = np.ones(30 * 2**17)")
ip.run_cell("%%memit\\nheld2 = np.ones(30 * 2**17)\\n")
returned = ip.run_cell("r = %memit -o np.ones(10)")
print("MEMIT_O", type(ip.user_ns["r"]).__name__, "held" in ip.user_ns, "held2" in ip.user_ns)
bad = ip.run_cell("%memit -i 0 x = 1")
print("MEMIT_BAD", type(bad.error_in_exec).__name__)
empty = ip.run_cell("%memit")
print("MEMIT_EMPTY", type(empty.error_in_exec).__name__, str(empty.error_in_exec))
from analysis_lib import default_log

frame = default_log().to_frame()
print("LOG", frame[["label", "increment_mib", "retained_mib"]].to_json(orient="records"))
"""


def test_extension_registers_memit_mprun_memtrack_and_logs_memtrack(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = run_python(driver, env=ENV, cwd=tmp_path, timeout=120)
    lines = out.stdout.splitlines()

    magics = json.loads(next(line for line in lines if line.startswith("MAGICS "))[7:])
    assert {"memit", "mprun"} <= set(magics["line"])
    assert {"memit", "mprun", "memtrack"} <= set(magics["cell"])

    reports = [line for line in lines if line.startswith("memtrack ")]
    assert reports[0].startswith("memtrack keep 50 MiB: peak memory: ")
    assert not any(r.startswith("memtrack free 50 MiB") for r in reports)  # -q
    assert any("the cell raised; nothing logged" in r for r in reports)
    assert "ZeroDivisionError" in out.stdout + out.stderr

    assert "BAD_INTERVAL UsageError False" in lines

    # %memit prints as memory-profiler's does; it runs in the user namespace and logs nothing
    memits = [line for line in lines if line.startswith("peak memory: ")]
    assert len(memits) == 4 and all(", increment: " in line for line in memits)
    held = [float(line.split("increment: ")[1].split()[0]) for line in memits[1:3]]
    assert all(20 < mib < 45 for mib in held), memits  # 30 MiB kept by each
    assert "MEMIT_O MemoryResult True True" in lines
    assert "MEMIT_BAD UsageError" in lines
    assert "MEMIT_EMPTY UsageError %memit: give a statement to run, e.g. %memit f(10)" in lines

    log = json.loads(next(line for line in lines if line.startswith("LOG "))[4:])
    assert [row["label"] for row in log] == ["keep 50 MiB", "free 50 MiB"]
    keep, free = log
    assert 40 < keep["increment_mib"] < 70
    assert 40 < keep["retained_mib"] < 70
    assert 40 < free["increment_mib"] < 70
    assert abs(free["retained_mib"]) < 10


NO_DISTUTILS = """\
import sys
import warnings

sys.modules["distutils"] = None  # as on Python 3.12+ without setuptools: import fails
sys.modules["distutils.version"] = None
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ip.run_line_magic("load_ext", "analysis_lib")
print("WARNINGS", [str(w.message) for w in caught if w.category is RuntimeWarning])
print("CELL_MAGICS", sorted(ip.magics_manager.magics["cell"]))
ip.run_cell("%%memtrack still works\\nx = list(range(1000))\\n")
ip.run_cell("%memit y = list(range(1000))")
ip.run_cell("def f(n):\\n    a = [0] * n\\n    return len(a)\\n")
ip.run_cell("%mprun -f f f(1000)")
"""


def test_extension_needs_no_distutils(tmp_path):
    """memory-profiler's magics import distutils (gone in 3.12): ours must not."""
    driver = tmp_path / "no_distutils.py"
    driver.write_text(NO_DISTUTILS)
    out = run_python(driver, env=ENV, cwd=tmp_path, timeout=120)
    assert "WARNINGS []" in out.stdout
    cell_magics = next(line for line in out.stdout.splitlines() if line.startswith("CELL_MAGICS"))
    assert {"'memtrack'", "'memit'", "'mprun'"} <= set(cell_magics[12:].strip("[]").split(", "))
    assert "memtrack still works: peak memory: " in out.stdout
    assert "peak memory: " in out.stdout.replace("memtrack still works: peak memory: ", "")
    assert "a = [0] * n" in out.stdout
    assert "Error" not in out.stderr, out.stderr
