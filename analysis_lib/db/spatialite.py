"""mod_spatialite for a second SQLite build in the same process (the ADBC SQLite driver).

``mod_spatialite`` keeps one static pointer to the SQLite API of whichever SQLite loaded it
last. The ADBC SQLite driver bundles its own SQLite; when it loads the same library file as
Django's connection (Python's ``sqlite3`` or ``pysqlite3``), every SpatiaLite function then runs
through the wrong SQLite: silently failed calls or a segmentation fault. Loading a private copy
of the file gives the second SQLite its own pointer.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import shutil
import sys
import tempfile
from pathlib import Path

ENTRY_POINT = "sqlite3_modspatialite_init"


def _loaded_path(library: str) -> Path:
    """Find the file the dynamic loader resolves ``library`` to (Linux: /proc/self/maps)."""
    if Path(library).is_file():
        return Path(library).resolve()
    names = [library] if library.endswith((".so", ".dylib", ".dll")) else [library + ".so"]
    errors = []
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
            continue
        maps = Path("/proc/self/maps")
        if not maps.exists():
            break
        stem = Path(name).name.split(".")[0]
        for line in maps.read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if Path(path).name.startswith(stem) and Path(path).is_file():
                return Path(path)
    raise FileNotFoundError(
        f"cannot find the file of SpatiaLite library {library!r} to copy "
        f"({'; '.join(errors) or 'no /proc/self/maps on ' + sys.platform}); set "
        "SPATIALITE_LIBRARY_PATH to its full path"
    )


@functools.cache
def private_spatialite(library: str = "mod_spatialite") -> tuple[str, str]:
    """Return this process's own copy of ``mod_spatialite``, for a second SQLite build.

    Parameters
    ----------
    library : str, default ``"mod_spatialite"``
        The library as SQLite's ``load_extension`` takes it (a name the dynamic loader finds,
        or a path: Django's ``SPATIALITE_LIBRARY_PATH``).

    Returns
    -------
    tuple of (str, str)
        The copy's path and its entry point, for
        ``connection.load_extension(path, entrypoint=entry_point)`` (SQLite would derive the
        entry point from the file name, which the copy does not keep). One copy per process and
        library, in a temporary directory removed at exit.

    Raises
    ------
    FileNotFoundError
        When the library's file cannot be found (the message says to set
        ``SPATIALITE_LIBRARY_PATH``).

    Examples
    --------
    >>> import adbc_driver_sqlite.dbapi
    >>> from analysis_lib.db.spatialite import private_spatialite
    >>> conn = adbc_driver_sqlite.dbapi.connect(":memory:")
    >>> conn.enable_load_extension(True)
    >>> path, entry_point = private_spatialite()
    >>> conn.load_extension(path, entrypoint=entry_point)
    """
    source = _loaded_path(library)
    directory = tempfile.mkdtemp(prefix="analysis_lib_spatialite_")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    copy = Path(directory) / ("second_" + source.name)
    shutil.copyfile(source, copy)
    return str(copy), ENTRY_POINT
