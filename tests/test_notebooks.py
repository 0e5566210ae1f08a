"""The committed notebooks: no outputs, a tagged parameters cell, and they run under papermill.

The notebooks run in a real ``python3`` kernel on a small generated Massachusetts
(the ``generated_db`` fixture in ``conftest.py``): the kernel is another process, so it reads
the database named by ``DATABASE_URL``, which the tests set to that file (or
scratch PostGIS database).
"""

from __future__ import annotations

import math

import nbformat
import pandas as pd
import pytest
from PIL import Image

from analysis_lib import notebook_parameters, read_mprof, run_notebook
from project.buildings.analysis import closing_summary
from tests.fresh import run_python
from tests.helpers import PROJECT_ROOT, STATE

NOTEBOOKS = PROJECT_ROOT / "notebooks"
NB01 = NOTEBOOKS / "01_buildings_per_zip.ipynb"
NB02 = NOTEBOOKS / "02_memory_over_time.ipynb"


def committed() -> list:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def code_outputs(nb) -> list[tuple[int, dict]]:
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs]


def errors(nb) -> list[tuple[int, dict]]:
    return [(i, o) for i, o in code_outputs(nb) if o["output_type"] == "error"]


def stdout(nb) -> str:
    return "".join(
        o.get("text", "")
        for _, o in code_outputs(nb)
        if o["output_type"] == "stream" and o["name"] == "stdout"
    )


def assert_png(path) -> None:
    assert path.is_file(), f"{path.name} was not written"
    with Image.open(path) as image:
        image.verify()  # raises on a truncated or corrupt file
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100


# --- the committed files ----------------------------------------------------------------


def test_both_notebooks_are_committed():
    assert {p.name for p in committed()} >= {NB01.name, NB02.name}


@pytest.mark.parametrize("path", committed(), ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_standard(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"  # not shell_plus's django_extensions
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has a count"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    # The first code cell after the parameters sets Django up (plain python3 kernel).
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0] is tagged[0]
    assert 'setup_django("project.settings")' in code[1].source


def test_nbstripout_finds_nothing_to_strip():
    # The standard tool agrees: --verify exits non-zero when it would change a file.
    proc = run_python("-m", "nbstripout", "--verify", *map(str, committed()), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (NB01, {"state", "strategy", "chunk_size", "max_zips", "output_dir"}),
        (NB02, {"state", "chunk_size", "max_zips", "naive_zips", "output_dir"}),
    ],
    ids=["01", "02"],
)
def test_parameters_cell_declares(path, expected):
    params = notebook_parameters(path)
    assert expected <= set(params)
    assert params["state"] == "MA" and params["output_dir"] is None


# --- running them ---------------------------------------------------------------------------


@pytest.fixture
def db_env(generated_db, monkeypatch):
    """Point this process's DATABASE_URL (inherited by the kernel) at the generated database."""
    monkeypatch.setenv("DATABASE_URL", generated_db.url)
    return generated_db


@pytest.mark.slow
def test_buildings_per_zip_notebook_runs(db_env, tmp_path):
    out = run_notebook(NB01, tmp_path, {"state": STATE})
    nb = nbformat.read(out, as_version=4)
    assert errors(nb) == []
    assert nb.metadata.papermill.parameters["output_dir"] == str(tmp_path.resolve())

    summary = pd.read_csv(tmp_path / "01_summary_by_zip.csv", dtype={"zip_code": str})
    assert len(summary) == db_env.zip_count
    assert summary["zip_code"].is_unique
    inside = int(summary["n_buildings"].sum())
    # "within": buildings straddling a border belong to no ZIP, so a few are missing
    assert 0.8 * db_env.building_count < inside <= db_env.building_count
    assert f"{db_env.zip_count:,} ZIP codes of {STATE}" in stdout(nb)
    assert f"{db_env.zip_count:,} ZIP codes, {inside:,} buildings" in stdout(nb)
    for name in ("01_density_map", "01_distributions", "01_zip_detail"):
        assert_png(tmp_path / f"{name}.png")
    # the figures are in the notebook too
    images = [o for _, o in code_outputs(nb) if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    narrative = [o for _, o in code_outputs(nb) if "text/markdown" in o.get("data", {})]
    assert f"{inside:,} buildings lie within one of them" in narrative[-1]["data"]["text/markdown"]


@pytest.mark.slow
def test_memory_over_time_notebook_runs(db_env, tmp_path):
    naive_zips, max_zips = 3, 25
    out = run_notebook(
        NB02, tmp_path, {"naive_zips": naive_zips, "max_zips": max_zips, "mprof_interval": 0.05}
    )
    nb = nbformat.read(out, as_version=4)
    assert errors(nb) == []

    table = pd.read_csv(tmp_path / "02_memory_comparison.csv", index_col="approach")
    naive, stream = "naive loop", "iter_buildings_by_zip"
    (state,) = set(table.index) - {naive, stream}
    assert state.startswith(stream)
    assert table.loc[naive, "zips"] == naive_zips
    assert table.loc[stream, "zips"] == naive_zips
    assert table.loc[state, "zips"] == max_zips
    # both loops see the same buildings of the same ZIPs
    assert table.loc[naive, "buildings"] == table.loc[stream, "buildings"] > 0
    for column in ("seconds", "mprof_peak_mib", "mprof_seconds", "rss_max_mib"):
        assert table[column].map(math.isfinite).all(), column
        assert (table[column] > 0).all(), column
    # %memit: the two loops on the same ZIPs
    assert (table.loc[[naive, stream], "memit_peak_mib"] > 0).all()
    assert table.loc[[naive, stream], "memit_increment_mib"].map(math.isfinite).all()

    # The closing cell states exactly what the table says: numbers from this run.
    closing = [c for c in nb.cells if "closing-summary" in c.metadata.get("tags", [])]
    assert len(closing) == 1 and nb.cells[-1] is closing[0]
    shown = closing[0].outputs[0]["data"]["text/markdown"]
    assert shown == closing_summary(table, baseline=naive, candidate=stream)
    assert f"{naive_zips:,} ZIPs ({int(table.loc[naive, 'buildings']):,} buildings)" in shown
    assert f"mprof peak {table.loc[naive, 'mprof_peak_mib']:,.1f} MiB" in shown

    assert_png(tmp_path / "02_memory_over_time.png")
    assert_png(tmp_path / "02_rss_vs_heap_per_zip.png")
    for name in ("02_mprof_naive", "02_mprof_stream", "02_mprof_stream_state"):
        profile = read_mprof(tmp_path / f"{name}.dat")
        assert len(profile.samples) >= 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "params", "message", "raised_in"),
    [
        (
            NB01,
            {"state": "ZZ"},
            "no ZIP codes for state 'ZZ' in the database",
            "buildings/analysis",
        ),
        (NB02, {"chunk_size": 0}, "`chunk_size` must be a positive int; got 0", "analysis_lib"),
        (
            NB02,
            {"naive_zips": 0},
            "`naive_zips` must be a positive int or None; got 0",  # not `max_zips` (issue 15)
            "analysis_lib",
        ),
    ],
    ids=["01-unknown-state", "02-chunk-size-0", "02-naive-zips-0"],
)
def test_bad_parameter_fails_with_the_library_error(
    db_env, tmp_path, path, params, message, raised_in
):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as info:
        run_notebook(path, tmp_path, params)
    assert info.value.ename == "ValueError"
    assert message in info.value.evalue
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    ((failed, output),) = errors(nb)
    assert output["ename"] == "ValueError" and message in output["evalue"]
    # It fails in the cell that first uses the parameter, straight from the check (the
    # project's state lookup, or analysis_lib's argument checks), and nothing after it ran.
    source = nb.cells[failed].source
    assert any(name in source for name in params)
    assert raised_in in "".join(output["traceback"])
    later = [c for c in nb.cells[failed + 1 :] if c.cell_type == "code"]
    assert all(c.execution_count is None for c in later)


@pytest.mark.slow
def test_run_notebooks_script_rejects_an_unknown_parameter(tmp_path):
    script = PROJECT_ROOT / "scripts" / "run_notebooks.py"
    proc = run_python(script, "-p", "colour", "red", "--output-dir", "x", check=False)
    assert proc.returncode == 2
    assert "no notebook declares parameter(s) colour" in proc.stderr


@pytest.mark.slow
def test_run_notebooks_script_runs_one_notebook(db_env, tmp_path):
    proc = run_python(
        PROJECT_ROOT / "scripts" / "run_notebooks.py",
        *[
            "--output-dir",
            str(tmp_path),
            "-p",
            "max_zips",
            "4",
            "-p",
            "naive_zips",
            "2",
            "-p",
            "strategy",
            "orm",
            str(NB01),
        ],
        database_url=db_env.url,
        env={"NOTEBOOK_PARAMETERS": f"state={STATE} max_zips=99"},
    )
    nb = nbformat.read(tmp_path / NB01.name, as_version=4)
    # -p wins over NOTEBOOK_PARAMETERS; naive_zips is not 01's, so it is not passed to it
    params = nb.metadata.papermill.parameters
    assert params["max_zips"] == 4 and params["strategy"] == "orm" and params["state"] == STATE
    assert "naive_zips" not in params
    assert len(pd.read_csv(tmp_path / "01_summary_by_zip.csv")) == 4
    assert "01_density_map.png" in proc.stdout
