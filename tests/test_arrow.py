"""``keep_pyarrow_out``: pandas without pyarrow, and analysis_lib still right without it.

The pytest process has imported pandas (and with it pyarrow) long ago, so every check of a
process that keeps pyarrow out runs in a fresh child process.
"""

from __future__ import annotations

import pickle
import sys
import warnings

import pytest
from pandas.testing import assert_frame_equal

from tests.backends import IS_POSTGIS
from tests.fresh import run_json
from tests.per_zip_fixtures import make_database_file

# The children use their own SpatiaLite file whatever the backend under test: run them once.
runs_once = pytest.mark.skipif(
    IS_POSTGIS, reason="process-level test on its own SpatiaLite file; runs in the SpatiaLite pass"
)


BLOCK = """
import importlib, json
import sys
from analysis_lib.loaders._arrow import keep_pyarrow_out, pyarrow_kept_out
result = {"before": pyarrow_kept_out(), "first": keep_pyarrow_out(), "second": keep_pyarrow_out()}
result["finders"] = sum(type(f).__name__ == "_PyarrowBlocker" for f in sys.meta_path)
import pandas as pd
result["median"] = float(pd.Series([1.0, 2.0, 4.0]).median())
result["pyarrow loaded"] = sys.modules.get("pyarrow") is not None
for name in ("pyarrow", "pyarrow.parquet"):
    try:
        importlib.import_module(name)
        result[name] = None
    except ModuleNotFoundError as exc:
        result[name] = [exc.name, str(exc)]
print(json.dumps(result))
"""


def test_keep_pyarrow_out_blocks_pyarrow_and_pandas_still_imports():
    result = run_json(BLOCK)
    assert result["before"] is False
    assert result["first"] is True and result["second"] is True
    assert result["finders"] == 1  # idempotent: one finder, however often it is called
    assert result["median"] == 2.0
    assert result["pyarrow loaded"] is False
    for name in ("pyarrow", "pyarrow.parquet"):
        module_name, message = result[name]
        assert module_name == "pyarrow"
        assert "pyarrow is kept out of this process by analysis_lib.keep_pyarrow_out()" in message
        assert "called from <string>:5" in message  # who blocked it
        assert "38 MiB" in message and "--with-pyarrow" in message  # why, and the way out


def test_too_late_once_pandas_is_imported():
    from analysis_lib.loaders._arrow import _PyarrowBlocker, keep_pyarrow_out, pyarrow_kept_out

    assert "pandas" in sys.modules  # this test module imported it
    before = list(sys.meta_path)
    try:
        with pytest.warns(RuntimeWarning, match=r"cannot help: pyarrow and pandas are already"):
            assert keep_pyarrow_out() is False
        assert sys.meta_path == before and not pyarrow_kept_out()
    finally:  # never leave a blocker in the test process
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PyarrowBlocker)]


def test_no_warning_when_already_kept_out(monkeypatch):
    from analysis_lib.loaders._arrow import _PyarrowBlocker, keep_pyarrow_out

    monkeypatch.setattr(sys, "meta_path", [_PyarrowBlocker("a test"), *sys.meta_path])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keep_pyarrow_out() is True
    assert sum(isinstance(f, _PyarrowBlocker) for f in sys.meta_path) == 1


def _arrow_storage_like(frame, like):
    """``frame`` with its ``str`` data (columns, categories, index, labels) stored as ``like``.

    On pandas 3 text is the ``str`` dtype, stored in Arrow when pyarrow is importable and in
    Python objects when it is kept out: the same dtype to a user (``"str"``, NaN for missing),
    the same values, a different storage, which is pandas' choice and not ours. Other dtypes
    must match exactly.
    """
    import pandas as pd

    def same(dtype, target):
        if isinstance(dtype, pd.StringDtype) and isinstance(target, pd.StringDtype):
            assert str(dtype) == str(target) == "str" and dtype.na_value is target.na_value
            return target
        if isinstance(dtype, pd.CategoricalDtype) and isinstance(target, pd.CategoricalDtype):
            assert list(dtype.categories) == list(target.categories)  # categories' storage aside
            return target
        return dtype

    frame = frame.copy()
    for name in frame.columns:
        frame[name] = frame[name].astype(same(frame[name].dtype, like[name].dtype))
    frame.index = frame.index.astype(same(frame.index.dtype, like.index.dtype))
    frame.columns = frame.columns.astype(same(frame.columns.dtype, like.columns.dtype))
    return frame


RESULTS = """
import json, pickle, sys
if {keep_out}:
    from analysis_lib.loaders._arrow import keep_pyarrow_out
    assert keep_pyarrow_out()
from analysis_lib import Sweep, read_frame, setup_django
setup_django()
from project.buildings.analysis import summarize_by_zip
from project.buildings.models import Building
fields = ["id", "footprint_m2", "height_m", "year_built", "use_type", "zip__code", "boundary"]
out = {{
    "within": summarize_by_zip("MA"),
    "centroid": summarize_by_zip("MA", predicate="centroid", strategy=Sweep(chunk_size=64)),
    "frame": read_frame(Building.objects.order_by("pk"), fields, geometry="wkb"),
}}
result = {{"pyarrow loaded": sys.modules.get("pyarrow") is not None}}
if {keep_out}:
    # The sweep's ADBC read on SpatiaLite goes through nanoarrow; read_frame's needs pyarrow.
    out["sweep adbc"] = summarize_by_zip("MA", strategy=Sweep(engine="adbc", chunk_size=64))
    try:
        read_frame(Building.objects.order_by("pk"), fields, geometry="wkb", engine="adbc")
    except ValueError as exc:
        result["adbc"] = str(exc)
    try:
        out["within"].to_parquet({parquet!r})
    except ImportError as exc:
        result["to_parquet"] = str(exc)
    from django.core.management import CommandError, call_command
    try:
        call_command("analyze_buildings", "--state", "MA", "--out", {parquet!r})
    except CommandError as exc:
        result["command"] = str(exc)
result["pyarrow loaded at the end"] = sys.modules.get("pyarrow") is not None
with open({pickled!r}, "wb") as handle:
    pickle.dump(out, handle)
print(json.dumps(result))
"""


@runs_once
def test_same_results_with_and_without_pyarrow(tmp_path):
    url = make_database_file(tmp_path / "arrow.sqlite3", seed=31, n=300)
    results = {}
    for keep_out in (False, True):
        pickled = tmp_path / f"{keep_out}.pickle"
        parquet = tmp_path / "x.parquet"
        code = RESULTS.format(keep_out=keep_out, pickled=str(pickled), parquet=str(parquet))
        results[keep_out] = run_json(code, database_url=url)
        with open(pickled, "rb") as handle:
            results[keep_out]["out"] = pickle.load(handle)  # noqa: S301 - our own file
        assert not parquet.exists()
    assert results[False]["pyarrow loaded"] is True
    assert results[True]["pyarrow loaded"] is False
    assert results[True]["pyarrow loaded at the end"] is False
    with_pa, without = results[False]["out"], results[True]["out"]
    assert with_pa["within"]["n_buildings"].sum() > 200
    for key in ("within", "centroid", "frame"):
        assert_frame_equal(
            _arrow_storage_like(without[key], with_pa[key]),
            with_pa[key],
            check_exact=False,
            rtol=1e-12,
        )
    assert_frame_equal(
        _arrow_storage_like(without["sweep adbc"], with_pa["within"]),
        with_pa["within"],
        check_exact=False,
        rtol=1e-12,
    )
    assert "pyarrow" in results[True]["adbc"].lower()  # engine="adbc" refuses, naming why
    # pandas' own error (it suggests installing pyarrow); the command's message says why.
    assert "parquet" in results[True]["to_parquet"]
    assert results[True]["command"].startswith("--format parquet needs pyarrow: import of")
    assert "keep_pyarrow_out()" in results[True]["command"]
