"""The engine rule, in one place: which engine reads a query, and when "auto" falls back.

Two engines read a planned query: ``"dbapi"`` (Django's own cursor, always available) and
``"adbc"`` (an Arrow-native second connection, faster, but not always possible). Whatever the
caller does with the rows (yield chunks, build one frame, run a whole per-region pass), the
choice is made by :func:`run_with_engine`, and an engine that cannot run the query says so with
one exception type, :class:`EngineUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from .._checks import check_choice

__all__ = ["ENGINES", "Engine", "EngineUnavailable", "run_with_engine"]

Engine = Literal["auto", "dbapi", "adbc"]
ENGINES: tuple[str, ...] = ("auto", "dbapi", "adbc")

T = TypeVar("T")


class EngineUnavailable(ValueError):  # noqa: N818 - "unavailable" reads better than "Error"
    """An engine cannot run this query here; the message says why.

    Raised by the ADBC engine before the first chunk (driver or pyarrow missing, inside
    ``transaction.atomic()``, an in-memory SQLite database, a parameter it cannot bind, the
    query refused) or part-way through (SQLite's ADBC driver types a column from its first
    batch and fails on a later batch of another type). Under ``engine="auto"`` it never
    reaches the caller: :func:`run_with_engine` reruns the work on DB-API.

    Attributes
    ----------
    engine : str
        The engine that could not run the query (``"adbc"``).
    rows : int
        Rows already handed out when it failed; 0 when it was refused before the first chunk.
    """

    def __init__(self, reason: str, *, engine: str = "adbc", rows: int = 0) -> None:
        super().__init__(f"engine={engine!r} cannot be used: {reason}")
        self.engine = engine
        self.rows = rows


def run_with_engine(engine: str, run: Callable[[str], T], *, arrow_free: bool = False) -> T:
    """Call ``run`` with the engine to use, falling back from ADBC to DB-API under "auto".

    ``run(name)`` does the whole piece of work on engine ``name`` (``"adbc"`` or ``"dbapi"``)
    and raises :class:`EngineUnavailable` when ADBC cannot do it. ``"dbapi"`` and ``"adbc"``
    call ``run`` once with that name (an ``EngineUnavailable`` from ``"adbc"`` reaches the
    caller). ``"auto"`` calls ``run("adbc")`` and, when it raises ``EngineUnavailable``
    (refused before the first chunk, or a failure part-way such as SQLite's type change),
    calls ``run("dbapi")`` from scratch; when :func:`~analysis_lib.keep_pyarrow_out` keeps
    pyarrow out of the process it calls ``run("dbapi")`` directly, without loading a driver,
    unless ``arrow_free`` says ``run("adbc")`` reads without pyarrow (the sweep's nanoarrow read
    on SpatiaLite). So under "auto", ``run`` must not hand results out before it returns, or
    they would be handed out twice.

    Parameters
    ----------
    engine : {"auto", "dbapi", "adbc"}
        The engine asked for.
    run : callable
        ``run(name) -> T``, the work on one engine.
    arrow_free : bool, default False
        Whether ``run("adbc")`` works without pyarrow; if so "auto" tries it even where
        pyarrow is kept out.

    Returns
    -------
    T
        What ``run`` returned on the engine that ran.

    Raises
    ------
    ValueError
        If ``engine`` is not one of "auto", "dbapi", "adbc".
    EngineUnavailable
        If ``engine="adbc"`` and ADBC cannot run the work.

    Examples
    --------
    >>> from analysis_lib.loaders import run_with_engine
    >>> run_with_engine("dbapi", lambda name: name)
    'dbapi'
    """
    check_choice("engine", engine, ENGINES)
    if engine != "auto":
        return run(engine)
    from ._arrow import pyarrow_kept_out

    if pyarrow_kept_out() and not arrow_free:
        return run("dbapi")  # ADBC needs pyarrow: do not even load its driver
    try:
        return run("adbc")
    except EngineUnavailable:
        return run("dbapi")
