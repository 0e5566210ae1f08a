"""The public surface: every name resolves, and `import analysis_lib` stays light."""

import subprocess
import sys

import analysis_lib


def test_all_matches_the_export_table():
    assert sorted(analysis_lib.__all__) == sorted(
        [*analysis_lib._EXPORTS, "load_ipython_extension"]
    )


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        analysis_lib.no_such_name  # noqa: B018


def test_import_does_not_load_heavy_modules():
    heavy = ["django", "pandas", "matplotlib", "IPython", "memory_profiler", "geopandas", "dask"]
    code = (
        "import sys, analysis_lib\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
