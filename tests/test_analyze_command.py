"""``manage.py analyze_buildings``: the files it writes, its summary line, its error messages."""

from __future__ import annotations

import re
from io import StringIO

import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from pandas.testing import assert_frame_equal

from project.buildings.analysis import summarize_by_zip
from tests.backends import IS_POSTGIS
from tests.fresh import run_python
from tests.helpers import PROJECT_ROOT
from tests.per_zip_fixtures import make_buildings, make_database_file, make_zips

pytestmark = pytest.mark.django_db

SUMMARY = re.compile(
    r"^MA: 15 ZIPs, (?P<n>[\d,]+) buildings assigned \((?P<predicate>\w+), (?P<strategy>\w+)\), "
    r"[\d.]+ s, peak \d+ MiB \((?P<pyarrow>with|without) pyarrow\) -> (?P<files>.+)$"
)


@pytest.fixture
def data():
    make_zips()
    make_buildings(seed=21, n=300)


def run(*args: str) -> str:
    out = StringIO()
    call_command("analyze_buildings", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


@pytest.mark.parametrize("strategy", ["sweep", "orm", "database"])
def test_writes_the_csv_and_one_summary_line(data, tmp_path, strategy):
    out = tmp_path / "reports" / "ma_by_zip.csv"
    line = run("--state", "ma", "--strategy", strategy, "--out", str(out), "--no-progress")
    match = SUMMARY.match(line)
    assert match, line
    assert match["strategy"] == strategy and match["predicate"] == "within"
    assert match["files"] == str(out)
    written = pd.read_csv(out, dtype={"zip_code": str}).set_index("zip_code")
    expected = summarize_by_zip("MA", strategy=strategy)
    assert_frame_equal(written, expected, check_exact=False, rtol=1e-12)
    assert int(match["n"].replace(",", "")) == expected["n_buildings"].sum()


def test_parquet_centroid_and_map(data, tmp_path):
    out = tmp_path / "by_zip.parquet"
    png = tmp_path / "maps" / "density.png"
    line = run("--state", "MA", "--predicate", "centroid", "--out", str(out), "--map", str(png))
    match = SUMMARY.match(line)
    assert match and match["predicate"] == "centroid"
    assert match["files"] == f"{out}, {png}"
    expected = summarize_by_zip("MA", predicate="centroid")
    assert_frame_equal(pd.read_parquet(out), expected, check_exact=False, rtol=1e-12)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_output_path_and_format_flag(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run("--state", "MA", "--format", "parquet", "--no-progress")
    assert (tmp_path / "reports" / "ma_by_zip.parquet").exists()
    run("--state", "MA", "--out", str(tmp_path / "table.txt"), "--no-progress")
    assert pd.read_csv(tmp_path / "table.txt", dtype={"zip_code": str}).shape[0] == 15


def test_progress_bar_goes_to_stderr(data, tmp_path, capsys):
    call_command("analyze_buildings", "--state", "MA", "--out", str(tmp_path / "x.csv"))
    captured = capsys.readouterr()
    assert "sweep (within)" in captured.err and "item/s" in captured.err
    assert SUMMARY.match(captured.out.strip())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "XX"], r"no ZIP codes for state 'XX' in the database; states present: MA"),
        (
            ["--state", "Mass"],
            r"`--state` must be a two-letter state code such as 'MA'; got 'MASS'",
        ),
        (["--state", "MA", "--format", "parquet", "--out", "x.csv"], r"\.csv suffix but --format"),
        (["--state", "MA", "--strategy", "fast"], r"invalid choice: 'fast'"),
        (["--state", "MA", "--chunk-size", "0"], r"`chunk_size` must be a positive int"),
        (["--state", "MA", "--workers", "-2"], r"`workers` must be a non-negative int"),
        ([], r"the following arguments are required: --state"),
    ],
)
def test_bad_arguments_give_a_clear_message(data, tmp_path, args, message):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "x.csv")]
    with pytest.raises(CommandError, match=message):
        run(*args, "--no-progress")
    assert not (tmp_path / "x.csv").exists()


def test_empty_database(tmp_path):
    with pytest.raises(CommandError, match=r"the database has no ZIP codes: generate data"):
        run("--state", "MA", "--out", str(tmp_path / "x.csv"))
    make_zips()
    with pytest.raises(CommandError, match=r"the database has no buildings: generate data"):
        run("--state", "MA", "--out", str(tmp_path / "x.csv"))


def test_command_line_errors_have_no_traceback(tmp_path):
    # A real process on a fresh SpatiaLite file without tables: a message, exit status 1.
    done = run_python(
        PROJECT_ROOT / "manage.py",
        "analyze_buildings",
        "--state",
        "MA",
        database_url=f"spatialite:///{tmp_path / 'empty.sqlite3'}",
        check=False,
    )
    assert done.returncode == 1
    assert "CommandError: cannot read the ZIP code and building tables" in done.stderr
    assert "run `python manage.py migrate` first" in done.stderr
    assert "Traceback" not in done.stderr


# A command-line run in a fresh process, reporting at exit whether pyarrow was ever imported.
WRAPPER = """
import atexit, runpy, sys
atexit.register(lambda: print("pyarrow imported:", sys.modules.get("pyarrow") is not None))
sys.argv = ["manage.py", *sys.argv[1:]]
runpy.run_path("manage.py", run_name="__main__")
"""


@pytest.mark.skipif(
    IS_POSTGIS, reason="process-level test on its own SpatiaLite file; runs in the SpatiaLite pass"
)
def test_command_line_csv_run_keeps_pyarrow_out_unless_asked(tmp_path):
    url = make_database_file(tmp_path / "cli.sqlite3", seed=22, n=300)
    outputs = {}
    for extra in (["--map", str(tmp_path / "map.png")], ["--with-pyarrow"]):
        out = tmp_path / f"{len(outputs)}.csv"
        done = run_python(
            WRAPPER,
            *["analyze_buildings", "--state", "MA", "--out", str(out), "--no-progress", *extra],
            database_url=url,
        )
        summary, imported = done.stdout.strip().splitlines()[-2:]
        match = SUMMARY.match(summary)
        assert match, summary
        outputs[extra[0]] = (match["pyarrow"], imported, out.read_bytes())
    assert outputs["--map"][:2] == ("without", "pyarrow imported: False")
    assert outputs["--with-pyarrow"][:2] == ("with", "pyarrow imported: True")
    assert outputs["--map"][2] == outputs["--with-pyarrow"][2]  # the same table
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # matplotlib works
