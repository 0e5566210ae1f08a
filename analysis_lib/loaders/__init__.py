"""QuerySet -> pandas loaders that hold one chunk of rows at a time.

One job per module, imports pointing down only:

``_plan``
    QuerySet -> SQL with its parameters, and each selected column's kind.
``_dtypes``
    column kinds -> pandas dtypes (the dtype contract on pandas 2 and 3).
``_dbapi``
    the DB-API engine: Django's chunked cursor, ``fetchmany`` batches.
``_adbc``
    the ADBC engine: the same SQL on an Arrow-native second connection; parallel reads.
``_ranges``
    primary-key spans and ranges (read_frame's parallel read and the Dask partitions).
``_engine``
    the engine rule (:func:`run_with_engine`) and :class:`EngineUnavailable`.
``_arrow``
    :func:`keep_pyarrow_out`: keep pyarrow (and so ADBC) out of a lean process.
``_read``
    the public functions, thin fronts over the chunked path.

See ``docs/loaders.md``.
"""

from ._arrow import keep_pyarrow_out, pyarrow_kept_out
from ._engine import Engine, EngineUnavailable, run_with_engine
from ._plan import DEFAULT_CHUNK_SIZE, INT_TYPES, GeometryFormat
from ._ranges import in_range, pk_ranges, pk_span, split_reason
from ._read import iter_frames, read_frame, read_geodataframe

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "INT_TYPES",
    "Engine",
    "EngineUnavailable",
    "GeometryFormat",
    "in_range",
    "iter_frames",
    "keep_pyarrow_out",
    "pk_ranges",
    "pk_span",
    "pyarrow_kept_out",
    "read_frame",
    "read_geodataframe",
    "run_with_engine",
    "split_reason",
]
