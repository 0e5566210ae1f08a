"""The fresh-process runner and the RSS reader shared by the tests and the benchmarks."""

from __future__ import annotations

import os
import sys

import pytest

from tests.fresh import (
    ROOT,
    ChildFailed,
    parse_json_line,
    reset_peak_rss,
    rss,
    run_json,
    run_python,
)


def test_run_python_runs_code_with_arguments_from_the_repository_root():
    done = run_python("import os, sys; print(sys.argv[1:], os.getcwd())", "a", "b")
    assert done.stdout.split(" ", 2)[:2] == ["['a',", "'b']"]
    assert done.stdout.strip().endswith(str(ROOT))


def test_run_python_sets_and_removes_environment_variables(monkeypatch):
    monkeypatch.setenv("FRESH_GONE", "here")
    code = "import os; print(os.environ.get('FRESH_GONE'), os.environ['FRESH_SET'], "
    code += "os.environ['DJANGO_SETTINGS_MODULE'], os.environ['DATABASE_URL'])"
    done = run_python(
        code,
        env={"FRESH_GONE": None, "FRESH_SET": "yes"},
        settings="some.settings",
        database_url="spatialite:///x.sqlite3",
    )
    assert done.stdout.split() == ["None", "yes", "some.settings", "spatialite:///x.sqlite3"]
    assert os.environ["FRESH_GONE"] == "here"  # this process's environment is untouched


def test_run_python_runs_a_script_and_a_module(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys; print('script', *sys.argv[1:])")
    assert run_python(script, "x").stdout.split() == ["script", "x"]
    assert run_python("-m", "json.tool", "--help").stdout.startswith("usage:")


def test_run_python_raises_with_the_childs_stderr_or_returns_the_failure():
    with pytest.raises(ChildFailed, match=r"(?s)exited with 3.*went wrong here"):
        run_python("import sys; sys.stderr.write('went wrong here'); sys.exit(3)")
    done = run_python("import sys; sys.exit(3)", check=False)
    assert done.returncode == 3


def test_run_json_reads_only_the_json_line():
    code = (
        "import json, sys; print('progress 1/2'); print(json.dumps({'n': 2, 'ok': True}));"
        "print('bye'); sys.stderr.write('a warning')"
    )
    assert run_json(code) == {"n": 2, "ok": True}


def test_run_json_fails_clearly_without_a_json_line_or_on_error():
    with pytest.raises(ChildFailed, match=r"(?s)no JSON line.*just text.*--- stderr ---.*noise"):
        run_json("import sys; print('just text'); sys.stderr.write('noise')")
    with pytest.raises(ChildFailed, match=r"(?s)exited with 1.*ZeroDivisionError"):
        run_json("1 / 0")
    with pytest.raises(ChildFailed, match="bad JSON"):
        parse_json_line("{not json\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs: Linux")
def test_rss_reads_current_and_peak_and_the_peak_can_be_reset():
    code = """
import json
from tests.fresh import reset_peak_rss, rss
before = rss()
block = bytearray(200 * 2**20)
block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
during = rss()
del block
after = rss()
reset = reset_peak_rss()
print(json.dumps({"before": before.__dict__, "during": during.__dict__,
                  "after": after.__dict__, "reset": reset, "peak_after_reset": rss().peak_mib}))
"""
    got = run_json(code)
    assert got["reset"] is True
    assert got["during"]["current_mib"] - got["before"]["current_mib"] > 150
    # The kernel updates VmHWM from per-thread counters: allow it to lag by a few pages.
    assert got["during"]["peak_mib"] > got["during"]["current_mib"] - 2
    assert got["after"]["current_mib"] < got["during"]["current_mib"] - 150
    assert got["after"]["peak_mib"] > got["during"]["current_mib"] - 2  # the peak stays
    assert got["peak_after_reset"] < got["during"]["current_mib"] - 150  # until reset
    here = rss()
    assert 0 < here.current_mib <= here.peak_mib
    assert isinstance(reset_peak_rss(), bool)
