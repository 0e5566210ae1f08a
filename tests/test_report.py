"""Notebook helpers, tested outside the notebooks: analysis_lib.notebook (generic) and the
seed-question loops of project.buildings.analysis."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest
from PIL import Image

from analysis_lib import (
    notebook_parameters,
    read_mprof,
    report_dir,
    run_notebook,
    save_figure,
    track,
)
from project.buildings.analysis import (
    PROJECT_ROOT,
    LoopRun,
    _main,
    closing_summary,
    memory_comparison,
    mprof_zip_loop,
    naive_zip_lists,
    pick_detail_zip,
    plot_zip_buildings,
    run_zip_loop,
    select_zips,
    track_zip_loop,
    zip_loop,
)

# --- files ------------------------------------------------------------------------------------


def test_report_dir_defaults_to_the_project_reports_folder():
    assert report_dir() == PROJECT_ROOT / "reports"
    assert report_dir().is_dir()


def test_report_dir_creates_and_refuses_a_file(tmp_path):
    assert report_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        report_dir(tmp_path / "file")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("map", "map.png"),
        ("map.png", "map.png"),
        ("02_memory-over.time", "02_memory-over.time.png"),
    ],
)
def test_save_figure_writes_a_valid_png(tmp_path, name, expected):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, name, tmp_path / "out")
    assert path == tmp_path / "out" / expected
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 50


@pytest.mark.parametrize(
    ("name", "dpi", "error", "match"),
    [
        ("", 100, ValueError, "not a plain file name"),
        ("../escape", 100, ValueError, "not a plain file name"),
        ("a/b", 100, ValueError, "not a plain file name"),
        ("with space", 100, ValueError, "not a plain file name"),
        (".hidden", 100, ValueError, "not a plain file name"),
        ("ok", 0, ValueError, "dpi must be positive"),
    ],
)
def test_save_figure_rejects(tmp_path, name, dpi, error, match):
    fig, _ = plt.subplots()
    with pytest.raises(error, match=match):
        save_figure(fig, name, tmp_path, dpi=dpi)
    assert list(tmp_path.iterdir()) == []


def test_save_figure_wants_a_figure_not_axes(tmp_path):
    _, ax = plt.subplots()
    with pytest.raises(TypeError, match="pass ax.figure"):
        save_figure(ax, "x", tmp_path)


# --- notebooks and papermill -----------------------------------------------------------------


def write_notebook(path, parameters: str, *cells: str, tag: bool = True):
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        }
    )
    params = nbformat.v4.new_code_cell(parameters)
    if tag:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)
    return path


def test_notebook_parameters_reads_the_tagged_cell(tmp_path):
    path = write_notebook(
        tmp_path / "n.ipynb",
        'state = "MA"  # comment\nlimit: int = 3\nnothing = None\nderived = limit * 2\n',
    )
    assert notebook_parameters(path) == {
        "state": "MA",
        "limit": 3,
        "nothing": None,
        "derived": "limit * 2",
    }


def test_notebook_parameters_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        notebook_parameters(tmp_path / "missing.ipynb")
    path = write_notebook(tmp_path / "untagged.ipynb", "x = 1", tag=False)
    with pytest.raises(ValueError, match="no cell is tagged 'parameters'"):
        notebook_parameters(path)


def test_run_notebook_rejects_unknown_parameters_before_starting_a_kernel(tmp_path):
    path = write_notebook(tmp_path / "n.ipynb", "state = 'MA'")
    with pytest.raises(ValueError, match=r"has no parameter\(s\) 'colour'; it declares 'state'"):
        run_notebook(path, tmp_path / "out", {"colour": "red"})
    assert not (tmp_path / "out" / "n.ipynb").exists()


@pytest.mark.slow
def test_run_notebook_executes_in_the_project_root_with_this_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_LIB_TEST_MARKER", "inherited")
    path = write_notebook(
        tmp_path / "probe.ipynb",
        "value = 1\noutput_dir = None",
        "import os\n"
        "print(os.getcwd())\n"
        "print(os.environ['ANALYSIS_LIB_TEST_MARKER'])\n"
        "print(value * 10, output_dir)",
    )
    out = run_notebook(path, tmp_path / "out", {"value": 4})
    assert out == (tmp_path / "out" / "probe.ipynb").resolve()
    nb = nbformat.read(out, as_version=4)
    lines = nb.cells[-1].outputs[0]["text"].splitlines()
    assert lines == [str(PROJECT_ROOT), "inherited", f"40 {(tmp_path / 'out').resolve()}"]


# --- ZIP selection and the two loops ----------------------------------------------------------


@pytest.fixture
def three_zips(make_zip, make_building):
    """Three ZIPs side by side; buildings inside each, one straddling 01001/01002, one outside."""
    make_zip("01002", (1.0, 0.0, 2.0, 1.0))
    make_zip("01001", (0.0, 0.0, 1.0, 1.0))
    make_zip("01003", (2.0, 0.0, 3.0, 1.0))
    make_zip("06001", (10.0, 0.0, 11.0, 1.0), state="CT")
    inside = {
        "01001": [make_building((0.1, 0.1, 0.2, 0.2)), make_building((0.5, 0.5, 0.6, 0.6))],
        "01002": [make_building((1.1, 0.1, 1.2, 0.2), use_type="commercial")],
        "01003": [],
    }
    make_building((0.95, 0.4, 1.05, 0.5))  # straddles 01001 and 01002: in neither
    make_building((5.0, 5.0, 5.1, 5.1))  # in no ZIP
    return {code: sorted(b.pk for b in bs) for code, bs in inside.items()}


@pytest.mark.django_db
def test_select_zips_orders_and_limits(three_zips):
    assert [z.code for z in select_zips("MA")] == ["01001", "01002", "01003"]
    assert [z.code for z in select_zips("ma", max_zips=2)] == ["01001", "01002"]
    assert [z.code for z in select_zips("CT")] == ["06001"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "max_zips", "error", "match"),
    [
        (
            "ZZ",
            None,
            ValueError,
            r"no ZIP codes for state 'ZZ' in the database \(states present: CT, MA\)",
        ),
        ("Massachusetts", None, ValueError, "two-letter state code"),
        (None, None, TypeError, "`state` must be a two-letter state code"),
        ("MA", 0, ValueError, "`max_zips` must be a positive int or None; got 0"),
        ("MA", 2.5, TypeError, "`max_zips` must be"),
        ("MA", True, TypeError, "`max_zips` must be"),
    ],
)
def test_select_zips_rejects(three_zips, state, max_zips, error, match):
    with pytest.raises(error, match=match):
        select_zips(state, max_zips)


@pytest.mark.django_db
def test_select_zips_names_the_argument_the_caller_set(three_zips):
    # Notebook 02 passes its `naive_zips` parameter: the message must name it, not `max_zips`.
    with pytest.raises(ValueError, match=r"^`naive_zips` must be a positive int or None; got 0$"):
        select_zips("MA", 0, argument="naive_zips")


@pytest.mark.django_db
def test_naive_and_stream_loops_see_the_same_buildings(three_zips):
    from project.buildings.models import Building

    naive = {code: sorted(b.pk for b in bs) for code, bs in naive_zip_lists("MA")}
    assert naive == three_zips
    for _code, buildings in naive_zip_lists(select_zips("MA", 1)):
        assert all(isinstance(b, Building) for b in buildings)  # model instances, geometry too
        assert buildings[0].boundary.geom_type == "Polygon"
    stream = {code: sorted(frame["id"]) for code, frame in zip_loop("stream", "MA", chunk_size=1)}
    assert stream == three_zips
    assert run_zip_loop("naive", "MA") == run_zip_loop("stream", "MA") == (3, 3)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("approach", "chunk_size", "error", "match"),
    [
        ("fast", 10, ValueError, r"`approach` must be one of 'naive', 'stream'; got 'fast'"),
        ("stream", 0, ValueError, "`chunk_size` must be a positive int; got 0"),
        ("naive", -1, ValueError, "`chunk_size` must be a positive int; got -1"),
        ("stream", None, TypeError, "`chunk_size` must be a positive int; got None"),
    ],
)
def test_zip_loop_checks_arguments_before_any_query(
    three_zips, django_assert_num_queries, approach, chunk_size, error, match
):
    with django_assert_num_queries(0), pytest.raises(error, match=match):
        zip_loop(approach, "MA", chunk_size=chunk_size)


@pytest.mark.django_db
def test_naive_zip_lists_checks_the_state_when_called(three_zips):
    with pytest.raises(ValueError, match="no ZIP codes for state 'ZZ'"):
        naive_zip_lists("ZZ")  # not at the first next()


@pytest.mark.django_db
def test_track_zip_loop_records_each_zip(three_zips):
    run = track_zip_loop("naive", "MA", label="classic")
    assert isinstance(run, LoopRun)
    assert (run.label, run.approach, run.zips, run.buildings) == ("classic", "naive", 3, 3)
    assert run.seconds > 0
    frame = run.tracker.frame
    assert frame["iteration"].tolist() == [0, 1, 2, 3]
    assert (frame["label"] == "classic").all()
    assert track_zip_loop("stream", select_zips("MA", 2)).label == "stream"


@pytest.mark.django_db
def test_cli_walks_the_zips(three_zips, capsys):
    assert _main(["stream", "--state", "MA", "--max-zips", "2", "--chunk-size", "5"]) == 0
    assert capsys.readouterr().out.startswith("stream: 2 ZIPs, 3 buildings, ")
    assert _main(["naive", "--state", "MA"]) == 0
    assert capsys.readouterr().out.startswith("naive: 3 ZIPs, 3 buildings, ")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"approach": "fast"}, ValueError, "`approach` must be one of 'naive', 'stream'"),
        ({"state": 7}, TypeError, "`state` must be"),
        ({"max_zips": 0}, ValueError, "`max_zips` must be"),
        ({"chunk_size": 0}, ValueError, "`chunk_size` must be"),
        ({"interval": 0}, ValueError, "`interval` must be a positive number"),
    ],
)
def test_mprof_zip_loop_checks_arguments_before_starting(tmp_path, kwargs, error, match):
    args = {"approach": "stream", "state": "MA", "output": tmp_path / "x.dat"} | kwargs
    with pytest.raises(error, match=match):
        mprof_zip_loop(**args)
    assert not (tmp_path / "x.dat").exists()


# --- the detail ZIP ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [(None, "01002"), ("01003", "01003"), ("01001", "01001")],
)
def test_pick_detail_zip(wanted, expected):
    summary = pd.DataFrame(
        {"buildings_per_km2": [1.0, 7.5, 7.5]}, index=pd.Index(["01001", "01002", "01003"])
    )
    assert pick_detail_zip(summary, wanted) == expected


@pytest.mark.parametrize(
    ("index", "wanted", "match"),
    [
        (
            ["01001", "01002"],
            "99999",
            r"detail ZIP '99999' is not one of the 2 ZIP codes analysed \(01001, 01002\)",
        ),
        ([], None, "the summary has no ZIP codes"),
    ],
)
def test_pick_detail_zip_rejects(index, wanted, match):
    summary = pd.DataFrame({"buildings_per_km2": [1.0] * len(index)}, index=pd.Index(index))
    with pytest.raises(ValueError, match=match):
        pick_detail_zip(summary, wanted)


@pytest.mark.django_db
def test_plot_zip_buildings_draws_the_zip_and_its_buildings(three_zips):
    pytest.importorskip("geopandas")
    ax = plot_zip_buildings("01001")
    assert ax.get_title() == "ZIP 01001: 2 buildings (within), by use_type"
    grey, coloured = footprints(ax)
    assert (grey, coloured) == (1, 2)  # the straddling building; the two inside
    assert [type(c).__name__ for c in ax.collections].count("LineCollection") == 1  # outline
    assert ax.get_xlim() == (0.0, 1.0)
    ax = plot_zip_buildings("01001", neighbours=False, column="footprint_m2")
    assert footprints(ax) == (0, 2)
    assert ax.get_title().endswith("by footprint_m2")


def footprints(ax) -> tuple[int, int]:
    """Polygons drawn in grey and in colour."""
    from matplotlib.collections import LineCollection

    grey = coloured = 0
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            continue
        n = len(collection.get_paths())
        if n and tuple(collection.get_facecolor()[0][:3]) == (0.75, 0.75, 0.75):
            grey += n
        else:
            coloured += n
    return grey, coloured


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "column", "match"),
    [
        ("99999", "use_type", "ZIP code '99999' is not in the database"),
        ("01001", "colour", "`fields`"),
    ],
)
def test_plot_zip_buildings_rejects(three_zips, code, column, match):
    pytest.importorskip("geopandas")
    with pytest.raises(ValueError, match=match):
        plot_zip_buildings(code, column=column)


# --- comparison and closing summary -----------------------------------------------------------


def fake_run(label: str, heap_mib: list[float], seconds: float = 1.0) -> LoopRun:
    """A real Tracker over a loop that keeps ``heap_mib[i]`` MiB alive after iteration i."""
    tracker = track(range(len(heap_mib)), label=label)
    kept = None
    for i in tracker:
        kept = bytearray(int(heap_mib[i] * 2**20))
    del kept
    return LoopRun(label, "naive", tracker, len(heap_mib), 10 * len(heap_mib), seconds)


def write_dat(path, samples):
    path.write_text("".join(f"MEM {mib} {t}\n" for t, mib in samples))
    return read_mprof(path)


def test_memory_comparison_lines_up_every_measurement(tmp_path):
    from memory_profiler import MemitResult

    from analysis_lib.memory import MemoryResult

    a = fake_run("a", [8.0, 8.0, 8.0, 8.0], seconds=4.0)
    b = fake_run("b", [1.0, 1.0], seconds=0.5)
    memits = {
        "a": MemitResult([150.0], 100.0, 1, 0, 0.1, False),
        "b": MemoryResult("b", 105.0, 5.0, 0.0, 100.0, 0.5),
    }
    profiles = {"a": write_dat(tmp_path / "a.dat", [(0.0, 50.0), (1.0, 90.0), (2.0, 60.0)])}
    table = memory_comparison([a, b], memits=memits, profiles=profiles)

    assert list(table.index) == ["a", "b"] and table.index.name == "approach"
    assert table.loc["a", "zips"] == 4 and table.loc["b", "buildings"] == 20
    assert table.loc["a", "seconds"] == 4.0
    # within an iteration the previous block is still alive while the next is made: two blocks
    assert table.loc["a", "heap_max_mib"] == pytest.approx(16.0, abs=0.5)
    assert table.loc["b", "heap_max_mib"] == pytest.approx(2.0, abs=0.5)
    # recorded after the last iteration, which still holds its block
    assert table.loc["a", "heap_end_mib"] == pytest.approx(8.0, abs=0.5)
    assert not table.loc["a", "heap_grows"]
    assert pd.isna(table.loc["b", "heap_grows"])  # two ZIPs: too few to judge
    assert (table.loc["a", "memit_peak_mib"], table.loc["a", "memit_increment_mib"]) == (150, 50)
    assert (table.loc["b", "memit_peak_mib"], table.loc["b", "memit_increment_mib"]) == (105, 5)
    assert (table.loc["a", "mprof_peak_mib"], table.loc["a", "mprof_seconds"]) == (90.0, 2.0)
    assert math.isnan(table.loc["b", "mprof_peak_mib"])
    rss = table.loc["a", ["rss_start_mib", "rss_max_mib", "rss_end_mib"]]
    assert rss.iloc[0] <= rss.iloc[1] and rss.iloc[2] <= rss.iloc[1]


def test_memory_comparison_rejects(tmp_path):
    a = fake_run("a", [1.0])
    with pytest.raises(ValueError, match="two runs are labelled 'a'"):
        memory_comparison([a, a])
    with pytest.raises(TypeError, match="runs must be LoopRun objects"):
        memory_comparison([a.tracker])
    with pytest.raises(TypeError, match="memits values must be MemoryResult"):
        memory_comparison([a], memits={"a": 12.0})
    with pytest.raises(TypeError, match="must be an MprofProfile"):
        memory_comparison([a], profiles={"a": tmp_path / "a.dat"})


def table_of(**rows) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "approach"
    return table


NAIVE_ROW = {
    "zips": 10,
    "buildings": 37_000,
    "seconds": 24.0,
    "rss_start_mib": 200.0,
    "rss_max_mib": 260.0,
    "rss_end_mib": 255.0,
    "heap_max_mib": 55.0,
    "heap_end_mib": 5.0,
    "heap_grows": False,
    "memit_peak_mib": 262.0,
    "memit_increment_mib": 60.0,
    "mprof_peak_mib": 180.0,
    "mprof_seconds": 26.0,
}
STREAM_ROW = NAIVE_ROW | {
    "seconds": 0.5,
    "rss_max_mib": 201.0,
    "rss_end_mib": 201.0,
    "heap_max_mib": 2.5,
    "heap_end_mib": 0.2,
    "memit_increment_mib": 3.0,
    "mprof_peak_mib": 150.0,
}


@pytest.mark.parametrize(
    ("naive", "expected"),
    [
        (
            {},
            "the live heap does not keep growing, so the RSS that stays up is the allocator's "
            "high-water mark, not a leak",
        ),
        ({"heap_grows": True}, "the live heap keeps growing too: that is a real leak"),
        ({"heap_grows": pd.NA}, "too few ZIPs were tracked"),
        ({"rss_max_mib": 200.5}, "RSS hardly moved"),
    ],
    ids=["no-leak", "leak", "too-few", "flat"],
)
def test_closing_summary_verdict_follows_the_numbers(naive, expected):
    text = closing_summary(table_of(naive=NAIVE_ROW | naive, stream=STREAM_ROW), "naive", "stream")
    assert expected in text


def test_closing_summary_states_the_numbers():
    text = closing_summary(table_of(naive=NAIVE_ROW, stream=STREAM_ROW), "naive", "stream")
    assert "- `naive`: 10 ZIPs (37,000 buildings) in 24.0 s (2.40 s per ZIP)" in text
    assert "RSS 200.0 MiB before, 260.0 MiB at most, 255.0 MiB after" in text
    assert "`%memit` peak 262.0 MiB, increment 60.0 MiB; mprof peak 180.0 MiB over 26.0 s." in text
    assert "`naive`: RSS rose 60.0 MiB above its start and ended 55.0 MiB above it" in text
    assert text.endswith("`%memit` increment 20.0x, live heap at its highest 22.0x, time 48.0x.")
    # other numbers, other text: nothing in it is fixed
    other = closing_summary(
        table_of(naive=NAIVE_ROW | {"seconds": 12.0}, stream=STREAM_ROW), "naive", "stream"
    )
    assert other.endswith("time 24.0x.")


def test_closing_summary_survives_a_csv_round_trip(tmp_path):
    table = table_of(naive=NAIVE_ROW | {"heap_grows": pd.NA}, stream=STREAM_ROW)
    table.to_csv(tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv", index_col="approach")
    assert closing_summary(back, "naive", "stream") == closing_summary(table, "naive", "stream")


def test_closing_summary_with_missing_measurements():
    text = closing_summary(
        table_of(naive={"zips": 3, "seconds": 1.0}, stream={"zips": 3, "seconds": 0.0}),
        "naive",
        "stream",
    )
    assert text.endswith("`%memit` increment n/a, live heap at its highest n/a, time n/a.")


def test_closing_summary_needs_both_rows():
    with pytest.raises(KeyError, match="'fast' is not a row"):
        closing_summary(table_of(naive=NAIVE_ROW), "naive", "fast")
