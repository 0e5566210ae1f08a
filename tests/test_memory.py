"""Memory instruments: measure, memory_step, profile_memory, MemoryLog, track, top_allocations.

RSS numbers here are always differences against a baseline taken in the same
test (increment, left behind) and compared with the size of a known allocation,
with generous margins; loop verdicts use tracemalloc, not RSS.
"""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
import tracemalloc
from unittest import mock

import numpy as np
import pytest

import analysis_lib
from analysis_lib import (
    MemoryLog,
    MemoryResult,
    Tracker,
    default_log,
    measure,
    memory_step,
    profile_memory,
    top_allocations,
    track,
)

MIB = 2**20
BIG_MIB = 200


def _ones(mib: int) -> np.ndarray:
    """An array of `mib` MiB whose pages are all written (so they count in RSS)."""
    return np.ones(mib * MIB // 8)


# --- measure --------------------------------------------------------------------------------


def test_measure_sees_a_freed_200_mib_allocation_in_increment_not_in_retained():
    calls = []

    def allocate_and_free():
        calls.append(1)
        block = _ones(BIG_MIB)
        return float(block.sum())

    result = measure(allocate_and_free)
    assert calls == [1], "the measured function must run exactly once"
    assert result.value == BIG_MIB * MIB // 8
    assert 0.8 * BIG_MIB < result.increment_mib < 1.3 * BIG_MIB
    assert abs(result.retained_mib) < 0.1 * BIG_MIB
    assert result.peak_mib == pytest.approx(result.baseline_mib + result.increment_mib)
    assert result.label.endswith("allocate_and_free")
    assert result.seconds > 0


def test_measure_reports_a_kept_allocation_as_left_behind():
    result = measure(_ones, BIG_MIB, label="kept")
    assert result.label == "kept"
    assert result.value.nbytes == BIG_MIB * MIB
    assert 0.8 * BIG_MIB < result.increment_mib < 1.3 * BIG_MIB
    assert 0.8 * BIG_MIB < result.retained_mib < 1.3 * BIG_MIB
    del result
    # and once the caller drops the value, a new measurement starts from a lower baseline
    assert measure(lambda: None).increment_mib < 0.1 * BIG_MIB


def test_measure_runs_a_fast_function_once_with_memit_flags():
    """Spy on the real memory_usage: without max_iterations=1 it re-runs fast functions."""
    import memory_profiler

    real = memory_profiler.memory_usage
    calls = []
    with mock.patch.object(memory_profiler, "memory_usage", side_effect=real) as spy:
        result = measure(calls.append, "x", label="fast")
    assert calls == ["x"]
    callable_calls = [c for c in spy.call_args_list if isinstance(c.args[0], tuple)]
    assert len(callable_calls) == 1
    kwargs = callable_calls[0].kwargs
    assert kwargs["max_usage"] is True
    assert kwargs["retval"] is True
    assert kwargs["max_iterations"] == 1
    assert result.value is None


def test_measure_passes_kwargs_and_logs_when_given_a_log():
    log = MemoryLog()
    result = measure(lambda a, *, b: a + b, 2, b=3, label="add", log=log)
    assert result.value == 5
    assert log.results == (result,)


def test_measure_reraises_without_killing_other_child_processes():
    """memory_usage SIGKILLs every child of the process when the function raises; we must not."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:

        def boom():
            raise KeyError("inside")

        with pytest.raises(KeyError, match="inside"):
            measure(boom)
        assert sleeper.poll() is None, "measure() killed an unrelated child process"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    ("func", "kwargs", "error", "match"),
    [
        (42, {}, TypeError, r"`func` must be a callable; got 42 \(int\)"),
        (len, {"interval": 0}, ValueError, "`interval` must be a positive number; got 0"),
        (len, {"interval": -1}, ValueError, "`interval` must be a positive number; got -1"),
        (len, {"interval": math.nan}, ValueError, "`interval` must be a positive number; got nan"),
        (len, {"interval": "0.1"}, TypeError, "`interval` must be a positive number; got '0.1'"),
    ],
)
def test_measure_rejects_bad_arguments(func, kwargs, error, match):
    with pytest.raises(error, match=match):
        measure(func, [], **kwargs)


def test_memory_result_is_frozen_and_prints_like_memit():
    result = MemoryResult("load", 150.0, 50.0, 1.5, 100.0, 0.25, value=[1, 2])
    assert str(result) == (
        "load: peak memory: 150.00 MiB, increment: 50.00 MiB, left behind: 1.50 MiB, 0.250 s"
    )
    assert "value" not in repr(result)
    with pytest.raises(AttributeError):
        result.peak_mib = 1.0


# --- memory_step and profile_memory ---------------------------------------------------------


def test_memory_step_sees_a_peak_made_and_freed_inside_one_expression():
    log = MemoryLog()
    with memory_step("sum of ones", log=log) as step:
        # cumsum keeps the 100 MiB of ones alive while it writes another 100 MiB: the
        # peak lasts long enough for the sampler even on a loaded machine.
        total = _ones(100).cumsum()[-1]
    assert total == 100 * MIB // 8
    result = step.result
    assert log.results == (result,)
    assert result.label == "sum of ones"
    assert 80 < result.increment_mib < 260
    assert abs(result.retained_mib) < 10


def test_memory_step_reports_what_the_block_keeps():
    log = MemoryLog()
    with memory_step("keep", log=log) as step:
        kept = _ones(100)
    assert 80 < step.result.retained_mib < 130
    assert kept.nbytes == 100 * MIB


def test_memory_step_defaults_to_the_session_log():
    before = len(default_log())
    with memory_step("session") as step:
        pass
    assert len(default_log()) == before + 1
    assert default_log()[-1] is step.result


def test_memory_step_disabled_measures_and_logs_nothing():
    log = MemoryLog()
    with (
        mock.patch("analysis_lib.memory.steps.PeakSampler") as sampler,
        memory_step("off", log=log, enabled=False) as step,
    ):
        pass
    sampler.assert_not_called()
    assert step.result is None
    assert len(log) == 0


def test_memory_step_lets_errors_through_and_logs_nothing():
    log = MemoryLog()
    with pytest.raises(ZeroDivisionError), memory_step("fails", log=log) as step:
        1 / 0  # noqa: B018
    assert step.result is None
    assert len(log) == 0


def test_profile_memory_bare_and_with_options():
    log = MemoryLog()

    @profile_memory(log=log, label="labelled")
    def make(n, label="kept"):  # a `label` argument of the function itself is passed through
        return [label] * n

    assert make(3, label="x") == ["x", "x", "x"]
    assert make.__name__ == "make"
    assert [r.label for r in log] == ["labelled"]

    before = len(default_log())

    @profile_memory
    def double(x):
        return 2 * x

    assert double(21) == 42
    assert len(default_log()) == before + 1
    assert default_log()[-1].label.endswith("double")


def test_logs_do_not_keep_return_values_alive():
    import weakref

    class Payload:
        pass

    log = MemoryLog()

    @profile_memory(log=log)
    def make():
        return Payload()

    payload = make()
    ref = weakref.ref(payload)
    measure(lambda obj: obj, payload, log=log)
    del payload
    assert ref() is None, "a MemoryLog kept a return value alive"
    assert [r.value for r in log] == [None, None]


def test_memory_log_frame_plot_and_type_check():
    log = MemoryLog()
    assert log.to_frame().empty
    assert log.to_frame().columns.tolist() == [
        "label",
        "peak_mib",
        "increment_mib",
        "retained_mib",
        "baseline_mib",
        "seconds",
        "arrow_mib",
        "arrow_retained_mib",
    ]
    log.append(MemoryResult("a", 110.0, 10.0, 1.0, 100.0, 0.1))
    log.append(MemoryResult("b", 130.0, 30.0, 0.0, 100.0, 0.2))
    frame = log.to_frame()
    assert frame["increment_mib"].tolist() == [10.0, 30.0]
    ax = log.plot()
    assert len(ax.patches) == 4  # increment and left-behind bars for each step
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    with pytest.raises(TypeError, match="MemoryResult"):
        log.append({"label": "a"})


# --- track ----------------------------------------------------------------------------------


def _keeps_references(loop):
    kept = []
    for _ in loop:
        kept.append(bytearray(2 * MIB))
    return kept


def _drops_references(loop):
    for _ in loop:
        scratch = bytearray(2 * MIB)
        del scratch


def _holds_until_next_iteration(loop, sizes):
    """The seed question's loop: each ZIP's list lives until the next ZIP replaces it."""
    important = None
    for size in loop:
        important = [bytearray(1024) for _ in range(size)]
    return important


def test_track_flags_a_loop_that_keeps_references():
    loop = track(range(12), label="keeps")
    kept = _keeps_references(loop)
    frame = loop.frame
    assert frame["iteration"].tolist() == list(range(13))
    assert (frame["label"] == "keeps").all()
    growth = frame["heap_current_mib"].iloc[-1] - frame["heap_current_mib"].iloc[0]
    assert growth == pytest.approx(24, rel=0.1)
    assert loop.grew()
    assert loop.heap_trend().slope_mib == pytest.approx(2, rel=0.1)
    assert len(kept) == 12


def test_track_stays_flat_on_a_loop_that_drops_references():
    loop = track(range(12), label="drops")
    _drops_references(loop)
    frame = loop.frame
    assert not loop.grew()
    # each iteration did allocate its 2 MiB: the per-iteration heap peak sees it
    assert (frame["heap_peak_mib"].iloc[1:] - frame["heap_current_mib"].iloc[0] > 1.9).all()


def test_track_does_not_call_varying_per_iteration_sizes_a_leak():
    sizes = [3000, 500, 2500, 1000, 3500, 200, 2000, 3000, 800, 2600, 1500, 300]
    loop = track(sizes, label="per ZIP")
    _holds_until_next_iteration(loop, sizes)
    assert not loop.grew()


def test_track_does_not_count_its_own_records_as_growth():
    loop = track(range(2000), label="empty body")
    for _ in loop:
        pass
    trend = loop.heap_trend()
    assert abs(trend.growth_mib) < 0.05
    assert not loop.grew()


def test_track_starts_and_stops_tracemalloc_only_if_it_started_it():
    assert not tracemalloc.is_tracing()
    loop = track(range(3))
    for _ in loop:
        assert tracemalloc.is_tracing()
    assert not tracemalloc.is_tracing()

    tracemalloc.start()
    try:
        for _ in track(range(3)):
            pass
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def test_track_records_the_iteration_left_by_break_and_runs_once():
    loop = track(range(10), label="stops early")
    for i in loop:
        if i == 3:
            break
    assert loop.frame["iteration"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="already iterated"):
        list(loop)


def test_track_progress_bar_and_plot(capsys):
    loop = track(iter(range(4)), label="with bar", progress=True, total=4)
    _keeps_references(loop)
    assert "with bar" in capsys.readouterr().err
    ax = loop.plot()
    assert [line.get_label() for line in ax.get_lines()] == [
        "RSS",
        "live heap (tracemalloc)",
        "heap peak in iteration",
    ]
    assert ax.get_title() == "with bar: live heap grows"
    assert ax.get_lines()[1].get_ydata()[0] == 0  # relative to the start of the loop


@pytest.mark.parametrize(
    ("iterations", "kwargs", "error", "match"),
    [
        (2, {}, ValueError, "at least 3 recorded iterations"),
        (5, {"tail": 0}, ValueError, r"`tail` must be a number in \(0, 1\]; got 0"),
        (5, {"tail": 1.5}, ValueError, r"`tail` must be a number in \(0, 1\]; got 1.5"),
        (5, {"tail": "all"}, TypeError, r"`tail` must be a number in \(0, 1\]; got 'all'"),
        (5, {"min_mib": -1}, ValueError, "`min_mib` must be a number >= 0; got -1"),
        (5, {"min_t": None}, TypeError, "`min_t` must be a number >= 0; got None"),
    ],
)
def test_track_verdict_rejects_bad_input(iterations, kwargs, error, match):
    loop = Tracker(range(iterations))
    for _ in loop:
        pass
    with pytest.raises(error, match=match):
        loop.grew(**kwargs)


# --- top_allocations ------------------------------------------------------------------------


def test_top_allocations_names_this_tests_allocating_line(capsys):
    tracemalloc.start()
    try:
        line = inspect.currentframe().f_lineno + 1
        blocks = [bytearray(4096) for _ in range(5000)]
        top = top_allocations(limit=5, print_report=True)
    finally:
        tracemalloc.stop()
    first = top.iloc[0]
    assert first["path"] == __file__
    assert first["lineno"] == line
    assert first["file"] == "tests/test_memory.py"
    assert "bytearray(4096)" in first["line"]
    assert first["size_kib"] >= 5000 * 4
    assert len(blocks) == 5000
    assert top["rank"].tolist() == list(range(1, len(top) + 1))
    assert top.attrs["total_kib"] >= top["size_kib"].sum()
    printed = capsys.readouterr().out
    assert printed.startswith("Top 5 lines\n")
    assert f"#1: tests/test_memory.py:{line}: " in printed
    assert "Total allocated size:" in printed


def test_top_allocations_filters_import_machinery(tmp_path, monkeypatch):
    module = tmp_path / "freshly_imported_for_tracemalloc.py"
    module.write_text("TABLE = {i: str(i) for i in range(20000)}\n" * 5)
    monkeypatch.syspath_prepend(str(tmp_path))
    tracemalloc.start()
    try:
        __import__(module.stem)
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        sys.modules.pop(module.stem, None)
    raw_files = {s.traceback[-1].filename for s in snapshot.statistics("lineno")}
    assert any(f.startswith("<frozen importlib") for f in raw_files)  # the case being filtered
    top = top_allocations(snapshot, limit=10_000)
    assert not top["path"].str.startswith("<frozen importlib").any()
    assert not (top["path"] == "<unknown>").any()
    by_file = top_allocations(snapshot, limit=10_000, key="filename")
    assert str(module) in by_file["path"].tolist()
    assert by_file["lineno"].isna().all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "line"}, ValueError, "`key` must be one of 'lineno', 'filename', 'traceback'"),
        ({"limit": 0}, ValueError, "`limit` must be a positive int; got 0"),
        ({"limit": 2.5}, TypeError, "`limit` must be a positive int; got 2.5"),
        ({}, RuntimeError, "tracemalloc is not tracing"),
    ],
)
def test_top_allocations_rejects_bad_input(kwargs, error, match):
    assert not tracemalloc.is_tracing()
    with pytest.raises(error, match=match):
        top_allocations(**kwargs)


def test_memory_names_are_exported():
    for name in ["measure", "memory_step", "track", "top_allocations", "default_log"]:
        assert getattr(analysis_lib, name) is getattr(analysis_lib.memory, name)


def test_tracker_plot_saved_as_png_keeps_its_axis_labels(tmp_path):
    """A plain savefig (no bbox_inches) used to cut the x label off the 3.5-inch figure."""
    from PIL import Image

    loop = Tracker(range(4), label="labels")
    for _ in loop:
        pass
    ax = loop.plot()
    path = tmp_path / "tracker.png"
    ax.figure.savefig(path)
    renderer = ax.figure.canvas.get_renderer()
    figure_box = ax.figure.bbox
    for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
        box = label.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0, (label.get_text(), box)
        assert box.x1 <= figure_box.x1 and box.y1 <= figure_box.y1, (label.get_text(), box)
    with Image.open(path) as image:
        assert image.size == (round(figure_box.width), round(figure_box.height))
