"""Keep pyarrow out of a process: pandas imports it on ``import pandas`` whenever it is installed.

pandas 2.x imports pyarrow as soon as ``import pandas`` runs (``pandas/compat/pyarrow.py``)
whenever it is installed, and its shared libraries add about 38 MiB to the RSS of every process
that imports pandas, a fifth of a lean per-ZIP job (measured on this project: 176 MiB before the
first row with pyarrow, 140 MiB without). :func:`keep_pyarrow_out` stops that import before
pandas runs: pandas then works as it does where pyarrow is not installed (NumPy-backed columns,
the same results), and the parts of analysis_lib that need Arrow say so or fall back (the ADBC
engine of :func:`~analysis_lib.iter_frames` to DB-API, Parquet output with a clear error).
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings

#: Approximate RSS of pyarrow's shared libraries, measured here (pandas 2.3, pyarrow 22).
PYARROW_MIB = 38


class _PyarrowBlocker(importlib.abc.MetaPathFinder):
    """A meta path finder that refuses ``pyarrow`` and ``pyarrow.*`` with a clear message."""

    def __init__(self, caller: str) -> None:
        self.caller = caller

    def message(self, fullname: str) -> str:
        return (
            f"import of {fullname!r} refused: pyarrow is kept out of this process by "
            f"analysis_lib.keep_pyarrow_out() (called from {self.caller}) to save the "
            f"~{PYARROW_MIB} MiB of RSS its shared libraries cost; run the code that needs "
            "pyarrow (Parquet, the ADBC engine, dask.dataframe) in a process that does not "
            "call it (manage.py analyze_buildings: --with-pyarrow or --format parquet)"
        )

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if fullname == "pyarrow" or fullname.startswith("pyarrow."):
            raise ModuleNotFoundError(self.message(fullname), name="pyarrow")
        return None


def _blocker() -> _PyarrowBlocker | None:
    """Return the blocker installed in this process, if any."""
    for finder in sys.meta_path:
        if isinstance(finder, _PyarrowBlocker):
            return finder
    return None


def pyarrow_kept_out() -> bool:
    """Return True when :func:`keep_pyarrow_out` has blocked pyarrow in this process.

    Returns
    -------
    bool
        Whether ``import pyarrow`` is refused here by :func:`keep_pyarrow_out`.

    Examples
    --------
    >>> from analysis_lib.loaders._arrow import pyarrow_kept_out
    >>> isinstance(pyarrow_kept_out(), bool)
    True
    """
    return _blocker() is not None


def keep_pyarrow_out() -> bool:
    """Refuse every later ``import pyarrow`` in this process, so ``import pandas`` skips it.

    pandas 2.x imports pyarrow on ``import pandas`` whenever it is installed; its shared
    libraries cost about 38 MiB of RSS, whether or not anything uses Arrow. Called before
    pandas is imported, this installs a :data:`sys.meta_path` finder that raises
    :class:`ModuleNotFoundError` (``name="pyarrow"``, a message saying who blocked it and why)
    for ``pyarrow`` and ``pyarrow.*``. pandas then behaves as it does without pyarrow installed
    (NumPy-backed columns; the analysis results are the same), :func:`~analysis_lib.iter_frames`
    reads with DB-API instead of ADBC (the per-region sweep on SpatiaLite still reads with ADBC,
    through ``nanoarrow``), and anything else that needs Arrow (``DataFrame.to_parquet``,
    ``engine="adbc"`` of the loaders, ``dask.dataframe``) fails with that message. There is
    no undo: pandas decides once, at import, whether pyarrow is there, so use it at the start
    of a script or job (``manage.py analyze_buildings`` does for CSV output), not in a
    notebook that may need Parquet later.

    Returns
    -------
    bool
        True when pyarrow is kept out from now on (also when it already was: calling twice is
        harmless); False, with a :class:`RuntimeWarning`, when pandas or pyarrow is already
        imported, as it is then too late to help.

    Examples
    --------
    >>> from analysis_lib import keep_pyarrow_out  # doctest: +SKIP
    >>> keep_pyarrow_out()  # first thing in the script  # doctest: +SKIP
    True
    >>> import pandas  # without pyarrow: about 38 MiB less RSS  # doctest: +SKIP
    """
    if _blocker() is not None:
        return True
    loaded = [name for name in ("pyarrow", "pandas") if sys.modules.get(name) is not None]
    if loaded:
        warnings.warn(
            f"keep_pyarrow_out() cannot help: {' and '.join(loaded)} "
            f"{'is' if len(loaded) == 1 else 'are'} already imported in this process "
            "(pandas imports pyarrow at import time); call it before importing pandas",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    frame = sys._getframe(1)
    caller = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    sys.meta_path.insert(0, _PyarrowBlocker(caller))
    return True
