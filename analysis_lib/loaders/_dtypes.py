"""Column kinds -> pandas dtypes: the dtype contract, the same on both engines and every chunk.

=================  =====================================  =====================================
column kind        pandas 2 (default options)             pandas 3 (and pandas 2 with
                                                          ``future.infer_string``)
=================  =====================================  =====================================
int                ``int64``; ``Int64`` when nullable     same
float              ``float64`` (NULL is NaN)              same
bool               ``bool``; ``boolean`` when nullable    same
text               ``object`` (NULL is None)              ``str`` (NULL is NaN)
category           ``category`` (the field's choices)     same (categories of dtype ``str``)
datetime           ``datetime64[ns, UTC]`` (naive when    same: ``[ns]`` on purpose, not pandas
                   ``USE_TZ`` is off)                     3's inferred ``[us]``
date               ``datetime64[ns]``                     same
geometry           ``object`` (shapely or WKB bytes)      same
object             ``object`` (Django's converters)       same
=================  =====================================  =====================================

Text follows pandas' own choice for text (``pd.get_option("future.infer_string")``, on by
default from pandas 3): what ``pd.Series(["a"])`` gives on that pandas, so a pandas 3 user gets
the ``str`` dtype they get everywhere else. Datetimes are nanoseconds on every pandas so that a
frame has the same dtypes whichever pandas made it. Every function here gives the same dtype
for zero rows as for many, so the empty frame and every chunk of one query agree.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import numpy as np

    from ._plan import Column, Plan

DATETIME_UNIT = "ns"


def text_dtype() -> Any:
    """Return the dtype of text columns: ``"str"`` where pandas infers it for text, else object."""
    import pandas as pd

    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return "str"  # always on from pandas 3 (asking the option would warn there)
    return "str" if pd.get_option("future.infer_string") else object


def to_text(values: Any) -> Any:
    """Text values (an object array with None, or an Arrow string array) as a text column."""
    import numpy as np
    import pandas as pd

    dtype = text_dtype()
    if dtype is object:
        if not isinstance(values, np.ndarray):  # Arrow
            return values.to_numpy(zero_copy_only=False)
        return values.copy()
    return pd.array(values, dtype=dtype)


def to_datetime(values: Any, utc: bool) -> Any:
    """Datetimes (objects or ISO strings) at DATETIME_UNIT, UTC-aware when ``utc``."""
    import pandas as pd

    return pd.to_datetime(values, utc=utc, format="ISO8601").as_unit(DATETIME_UNIT)


def to_date(values: Any) -> Any:
    """Dates (objects or ISO strings) as naive datetimes at DATETIME_UNIT."""
    import pandas as pd

    return pd.to_datetime(values, format="ISO8601").as_unit(DATETIME_UNIT)


def null_mask(values: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.equal(values, None)


def _to_int(values: np.ndarray, nullable: bool) -> Any:
    import numpy as np
    import pandas as pd

    mask = null_mask(values)
    if not nullable and not mask.any():
        return values.astype(np.int64)
    if mask.any():
        values = values.copy()
        values[mask] = 0
    return pd.arrays.IntegerArray(values.astype(np.int64), mask)


def _to_bool(values: np.ndarray, nullable: bool) -> Any:
    import pandas as pd

    mask = null_mask(values)
    if not nullable and not mask.any():
        return values.astype(bool)
    if mask.any():
        values = values.copy()
        values[mask] = False
    return pd.arrays.BooleanArray(values.astype(bool), mask)


def _to_category(values: np.ndarray, column: Column) -> Any:
    import pandas as pd

    dtype = pd.CategoricalDtype(list(column.categories))
    codes = dtype.categories.get_indexer(values)  # -1: NULL, or a value outside the choices
    lost = (codes == -1) & ~null_mask(values)
    if not lost.any():
        return pd.Categorical.from_codes(codes, dtype=dtype)
    extra = list(pd.unique(values[lost]))
    warnings.warn(
        f"column {column.name!r}: values not among the field's choices {extra[:10]!r}; "
        "they are kept as extra categories",
        UserWarning,
        stacklevel=4,
    )
    return pd.Categorical(values, categories=[*column.categories, *extra])


def _to_geometry(values: np.ndarray, column: Column, geometry: str) -> np.ndarray:
    import numpy as np
    import shapely

    mask = null_mask(values)
    if mask.all():
        values = values.copy()
    elif isinstance(values[~mask][0], memoryview):  # psycopg2 returns bytea as memoryview
        values = np.array([None if v is None else bytes(v) for v in values], dtype=object)
    if geometry == "wkb" and column.wkb_selected:
        return values.copy()
    geoms = shapely.from_wkb(values)
    if geometry == "wkb":  # the backend's own format (EWKB or hex): normalise to ISO WKB
        return shapely.to_wkb(geoms, output_dimension=3)
    return geoms


def convert(values: np.ndarray, column: Column, plan: Plan, connection: Any) -> Any:
    """One column of Python values (an object array, None for NULL) -> its pandas values."""
    import numpy as np

    kind = column.kind
    if kind == "int":
        return _to_int(values, column.nullable)
    if kind == "float":
        return values.astype(np.float64) if len(values) else np.empty(0, np.float64)
    if kind == "bool":
        return _to_bool(values, column.nullable)
    if kind == "text":
        return to_text(values)
    if kind == "category":
        return _to_category(values, column)
    if kind == "datetime":
        return to_datetime(values, plan.utc)
    if kind == "date":
        return to_date(values)
    if kind == "geometry":
        return _to_geometry(values, column, plan.geometry)
    if column.converters:
        out = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            for converter in column.converters:
                value = converter(value, column.expression, connection)
            out[i] = value
        return out
    return values.copy()
