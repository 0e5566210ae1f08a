"""Scale out with Dask: QuerySets as dask DataFrames, and the plumbing DaskSweep shares.

:func:`to_dask` and :class:`~analysis_lib.DaskSweep` split the rows of a QuerySet into
primary-key ranges. Each range is loaded
by a Dask worker, with its own database connection, through :func:`~analysis_lib.read_frame`
/ :func:`~analysis_lib.iter_frames`: the worker sets Django up itself (worker processes do
not have it configured), rebuilds the QuerySet from its pickled ``Query`` and filters it to
its range. Nothing but the query, the connection settings and the results travel between
the client and the workers.

Dask is an optional dependency (``pip install 'analysis-lib[dask]'``), imported only when one
of these functions is called.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._checks import check_choice, check_positive_int, check_queryset
from .loaders import in_range, pk_ranges

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import dask.dataframe
    import pandas as pd
    from django.db.models import QuerySet


__all__ = ["to_dask"]

#: Rows per partition when ``to_dask`` is not told how many partitions to make.
DEFAULT_PARTITION_ROWS = 100_000
_INSTALL = "pip install 'analysis-lib[dask]' (or: conda install -c conda-forge dask distributed)"
# Connection settings that identify a database (the rest are options of the connection).
_IDENTITY = ("ENGINE", "NAME", "HOST", "PORT", "USER")
_ALIAS_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Optional imports
# --------------------------------------------------------------------------------------------


def _import_dask_dataframe(caller: str) -> Any:
    """Import ``dask.dataframe`` or raise ImportError naming the extra to install."""
    try:
        import dask.dataframe
    except ImportError as exc:
        raise ImportError(
            f"{caller}() needs the optional dependency dask[dataframe]: {_INSTALL}"
        ) from exc
    return dask.dataframe


def _import_distributed(caller: str) -> Any:
    """Import ``dask.distributed`` or raise ImportError naming the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"{caller}() needs the optional dependency dask.distributed: {_INSTALL}"
        ) from exc
    return distributed


# --------------------------------------------------------------------------------------------
# What a worker needs to load one primary-key range
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A QuerySet in a form a worker process can rebuild: settings, database, model, query."""

    settings_module: str
    database: dict[str, Any]  # the client's connection.settings_dict (test database names too)
    in_memory: bool  # an in-memory SQLite database: only the client's process can read it
    client_pid: int
    model: str  # "app_label.ModelName"
    query: bytes  # pickle of QuerySet.query
    fields: tuple[str, ...]
    geometry: str
    chunk_size: int


def _check_queryset(queryset: Any, caller: str) -> None:
    """Raise TypeError/ValueError unless ``queryset`` can be split by primary-key ranges."""
    check_queryset("queryset", queryset)
    query = queryset.query
    if query.is_sliced:
        raise ValueError(
            f"{caller}(): the queryset is sliced; filter it instead (each partition adds a "
            "primary-key range filter, which Django cannot apply after a slice)"
        )
    if query.combinator:
        raise ValueError(
            f"{caller}(): a {query.combinator}() queryset cannot be split by primary key; "
            "filter one queryset with Q objects instead"
        )
    if queryset._fields is not None and query.group_by is not None:
        raise ValueError(
            f"{caller}(): values(...).annotate(<aggregate>) gives one row per group, not per "
            "primary key, so it cannot be split into primary-key ranges; aggregate the dask "
            "DataFrame instead (ddf.groupby(...))"
        )
    pk = queryset.model._meta.pk
    from .loaders import INT_TYPES as _INT_TYPES

    internal = (pk.target_field if pk.is_relation else pk).get_internal_type()
    if internal not in _INT_TYPES:
        raise TypeError(
            f"{caller}(): partitions are integer primary-key ranges, but "
            f"{queryset.model._meta.label}.{pk.name} is a {internal}"
        )


def _make_source(
    queryset: QuerySet, fields: Sequence[str], geometry: str, chunk_size: int
) -> _Source:
    """Capture the queryset, the settings module and the database of the client's connection."""
    from django.conf import settings
    from django.db import connections

    connection = connections[queryset.db]
    in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()
    if connection.in_atomic_block:
        warnings.warn(
            f"the database connection {queryset.db!r} is inside a transaction: Dask workers "
            "use their own connections and see only committed rows (only the 'sync' scheduler "
            "reuses this connection)",
            RuntimeWarning,
            stacklevel=3,
        )
    return _Source(
        settings_module=os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE,
        database=dict(connection.settings_dict),
        in_memory=in_memory,
        client_pid=os.getpid(),
        model=queryset.model._meta.label,
        query=pickle.dumps(queryset.query),
        fields=tuple(fields),
        geometry=geometry,
        chunk_size=chunk_size,
    )


# --------------------------------------------------------------------------------------------
# In the worker
# --------------------------------------------------------------------------------------------


def _ensure_django(settings_module: str) -> None:
    """Configure Django in this process unless it is already (the client, or a second task)."""
    from django.conf import settings

    if settings.configured:
        from django.apps import apps

        if apps.ready:
            return
    from ._django import setup_django

    setup_django(settings_module)


def _database_alias(database: dict[str, Any]) -> str:
    """Alias of a configured database matching ``database``, registering one when none does.

    The worker's settings may point elsewhere (its ``DATABASE_URL``, or the non-test name
    where the client runs on pytest-django's test database), so the client's connection
    settings win.
    """
    from django.db import connections

    wanted = tuple(str(database.get(key) or "") for key in _IDENTITY)
    for alias in connections:
        current = connections[alias].settings_dict
        if tuple(str(current.get(key) or "") for key in _IDENTITY) == wanted:
            return alias
    digest = hashlib.sha1(repr(wanted).encode(), usedforsecurity=False).hexdigest()[:12]
    alias = f"analysis_lib_{digest}"
    with _ALIAS_LOCK:
        if alias not in connections.settings:
            connections.settings[alias] = dict(database)
    return alias


def _tidy(connection: Any) -> None:
    """Close the connection if it is broken or past CONN_MAX_AGE (as Django does per request).

    Never inside a transaction: under the 'sync' scheduler the task runs on the client's own
    connection, which may be in ``atomic()``.
    """
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


@contextmanager
def _worker_queryset(source: _Source) -> Iterator[QuerySet]:
    """Set Django up, connect to the client's database and rebuild the pickled queryset."""
    if source.in_memory and os.getpid() != source.client_pid:
        raise RuntimeError(
            f"the database {source.database.get('NAME')!r} is an in-memory SQLite database "
            "(pytest-django's test database?), which Dask worker processes cannot see: use a "
            "SpatiaLite file (DATABASE_URL=spatialite:////path/to/file.sqlite3) or PostGIS"
        )
    _ensure_django(source.settings_module)
    from django.apps import apps
    from django.db import connections

    alias = _database_alias(source.database)
    connection = connections[alias]
    _tidy(connection)
    try:
        model = apps.get_model(source.model)
        queryset = model._default_manager.using(alias).all()
        queryset.query = pickle.loads(source.query)  # noqa: S301 (made by to_dask in the client)
        yield queryset
    finally:
        _tidy(connection)


def _load_partition(bounds: tuple[int, int], source: _Source, index: str) -> pd.DataFrame:
    """Load one primary-key range with :func:`read_frame`, indexed by the primary key."""
    from .loaders import read_frame

    with _worker_queryset(source) as queryset:
        return read_frame(
            in_range(queryset, bounds).order_by("pk"),
            list(source.fields),
            chunk_size=source.chunk_size,
            geometry=source.geometry,  # type: ignore[arg-type]
            index=index,
        )


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def to_dask(
    queryset: QuerySet,
    npartitions: int | None = None,
    fields: Sequence[str] | None = None,
    *,
    geometry: Literal["shapely", "wkb"] = "shapely",
    chunk_size: int = 50_000,
) -> dask.dataframe.DataFrame:
    """Turn a QuerySet into a lazy ``dask.dataframe`` partitioned by primary-key ranges.

    The range from the smallest to the largest primary key of the queryset is cut into
    ``npartitions`` ranges of equal width (a queryset whose keys are unevenly spread gives
    uneven partitions). Each partition is loaded where Dask runs it, on a worker of a
    ``dask.distributed`` cluster or a thread of the local scheduler, with that worker's own
    database connection: the worker configures Django (``DJANGO_SETTINGS_MODULE`` of this
    process), connects to the same database as ``queryset`` (the connection settings,
    password included, travel with the task), rebuilds the queryset from its pickled
    ``Query``, filters it to its range and reads it with :func:`~analysis_lib.read_frame`.
    Nothing is read when ``to_dask`` returns except the key range (and a ``COUNT`` when
    ``npartitions`` is None).

    The columns and dtypes are those of :func:`~analysis_lib.read_frame` (text stays
    ``object``: Dask's conversion to pyarrow strings is turned off for this frame, as it would
    also convert geometry columns). The index is the primary key, sorted, with known
    divisions, so ``ddf.loc[a:b]`` reads only the partitions it needs.

    Workers only see committed rows. A pytest-django test database on SpatiaLite lives in
    memory and cannot be read by other processes: use a SpatiaLite file or PostGIS with a
    ``dask.distributed`` cluster.

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet of a model with an integer primary key: filtered, annotated, with related
        lookups; not sliced, not a ``union()``, not an aggregating ``values().annotate()``.
        Its ordering is replaced by the primary key.
    npartitions : int, optional
        Number of partitions (fewer when there are fewer keys). By default one per 100,000
        rows, counted with one ``COUNT`` query.
    fields : sequence of str, optional
        Columns, as for :func:`~analysis_lib.read_frame`; default every concrete field (or the
        fields of a ``values()`` queryset). The primary key is always the index; naming it
        here (``"id"`` or ``"pk"``) adds no column.
    geometry : {"shapely", "wkb"}, default "shapely"
        Geometry columns as shapely geometries (picklable) or as WKB ``bytes``.
    chunk_size : int, default 50_000
        Rows per fetch inside a partition.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy; ``.compute()`` (or ``client.compute``) loads it.

    Raises
    ------
    ImportError
        If dask is not installed (``pip install 'analysis-lib[dask]'``).
    TypeError
        If ``queryset`` is not a QuerySet, its primary key is not an integer, or an argument
        has the wrong type.
    ValueError
        If a field name is unknown, ``npartitions``/``chunk_size`` is below 1, ``geometry``
        is not allowed, or the queryset cannot be split by primary key (see above).
    RuntimeError
        When computed on another process against an in-memory SQLite database.

    Examples
    --------
    >>> from dask.distributed import Client, LocalCluster  # doctest: +SKIP
    >>> from analysis_lib import to_dask
        >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> ddf = to_dask(Tree.objects.all(), 8, ["height_m", "species"])  # doctest: +SKIP
    >>> ddf.groupby("species", observed=True)["height_m"].median().compute()
    ... # doctest: +SKIP
    """
    dd = _import_dask_dataframe("to_dask")
    _check_queryset(queryset, "to_dask")
    check_positive_int("npartitions", npartitions, allow_none=True)
    check_positive_int("chunk_size", chunk_size)
    if fields is not None and (isinstance(fields, str | bytes) or not isinstance(fields, Sequence)):
        raise TypeError(f"`fields` must be a list or tuple of field names, got {fields!r}")
    if fields is not None and len(fields) == 0:
        raise ValueError("`fields` is empty: name at least one field, or pass None for all")
    check_choice("geometry", geometry, ("shapely", "wkb"))
    import dask

    from .loaders import read_frame

    opts = queryset.model._meta
    index = opts.pk.attname
    if fields is None:
        if queryset._fields:  # values("a", "b") / values_list(...): its own columns
            names = list(queryset._fields)
        else:
            names = list(read_frame(queryset.none(), None, geometry=geometry).columns)
    else:
        names = list(fields)
    columns = [n for n in names if n not in {"pk", opts.pk.name, index}]
    load = (index, *columns)
    # An empty frame with the final columns and dtypes (this also validates the names).
    meta = read_frame(queryset.none(), list(load), geometry=geometry, index=index)
    base = queryset.order_by()
    if npartitions is None:
        npartitions = max(1, math.ceil(base.count() / DEFAULT_PARTITION_ROWS))
    ranges = pk_ranges(base, npartitions)
    source = _make_source(base, load, geometry, chunk_size)
    divisions = None
    if ranges:  # half-open ranges: the last division is the largest key itself
        divisions = (*(lo for lo, _ in ranges), ranges[-1][1] - 1)
    else:
        ranges = [(0, 0)]  # no rows: one partition that matches nothing
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_map(
            _load_partition,
            ranges,
            args=(source, index),
            meta=meta,
            divisions=divisions,
            label=f"to_dask-{opts.model_name}",
            enforce_metadata=False,
        )
