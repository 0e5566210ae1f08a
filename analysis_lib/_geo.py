"""Geometry helpers shared by the per-ZIP analysis: areas in an equal-area projection."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: WGS 84 / NSIDC EASE-Grid 2.0 Global: a cylindrical equal-area projection valid worldwide, so
#: areas come out right for any state (shapes are distorted far from the equator; areas are not).
EQUAL_AREA_CRS = "EPSG:6933"


@lru_cache(maxsize=8)
def _transformer(source_srid: int, target_crs: str):
    """Return a cached pyproj transformer from an EPSG code to ``target_crs`` (x = longitude)."""
    from pyproj import Transformer

    return Transformer.from_crs(f"EPSG:{source_srid}", target_crs, always_xy=True)


def equal_area_km2(geometries: np.ndarray, srid: int = 4326) -> np.ndarray:
    """Areas in km² of shapely geometries, computed in an equal-area projection.

    The vertices are projected to :data:`EQUAL_AREA_CRS` (EPSG:6933) with pyproj and the planar
    area is taken there: unlike ``shapely.area`` on longitude/latitude, which gives square
    degrees (a square degree is about 9,100 km² at 42°N and 12,300 km² at the equator), the result
    is in km² everywhere.

    Parameters
    ----------
    geometries : numpy.ndarray
        Array of shapely geometries (``None`` gives NaN).
    srid : int
        EPSG code of the input coordinates (default 4326, WGS 84 longitude/latitude).

    Returns
    -------
    numpy.ndarray
        One float per geometry, in km².

    Examples
    --------
    >>> import numpy as np, shapely
    >>> one_degree = shapely.box(-71.5, 42.0, -70.5, 43.0)
    >>> round(float(equal_area_km2(np.array([one_degree]))[0]))
    9131
    """
    import numpy as np
    import shapely

    transformer = _transformer(int(srid), EQUAL_AREA_CRS)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    projected = shapely.transform(np.asarray(geometries, dtype=object), project)
    return shapely.area(projected) / 1e6
