"""Small GIS files written by the tests: GeoJSON by hand, Shapefile and GeoPackage by ogr2ogr."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

# A corner near the Massachusetts State House, in lon/lat.
BOSTON = (-71.0637, 42.3588)


def rect(x0: float, y0: float, width: float, height: float) -> list[list[list[float]]]:
    """GeoJSON Polygon coordinates of an axis-aligned rectangle, counter-clockwise."""
    x1, y1 = x0 + width, y0 + height
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def polygon(coords: list) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": coords}


def multipolygon(*coords: list) -> dict[str, Any]:
    return {"type": "MultiPolygon", "coordinates": list(coords)}


def bowtie(x0: float, y0: float, size: float) -> dict[str, Any]:
    """A self-intersecting 'bow-tie' polygon: invalid, make_valid gives two triangles."""
    x1, y1 = x0 + size, y0 + size
    return polygon([[[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]]])


def feature(geometry: dict[str, Any] | None, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def write_geojson(path: Path, features: list[dict[str, Any]], epsg: int | None = None) -> Path:
    """A FeatureCollection; ``epsg`` adds the (GDAL-understood) legacy ``crs`` member."""
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if epsg is not None:
        collection["crs"] = {
            "type": "name",
            "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"},
        }
    path.write_text(json.dumps(collection))
    return path


def ogr2ogr(*args: str) -> None:
    """Run ogr2ogr, or skip the test if it is not installed."""
    exe = shutil.which("ogr2ogr")
    if exe is None:
        pytest.skip("ogr2ogr (gdal-bin) is not installed: cannot write Shapefile/GeoPackage")
    subprocess.run([exe, *args], check=True, capture_output=True, text=True)


def convert(src: Path, fmt: str, layer: str | None = None) -> Path:
    """``src`` GeoJSON rewritten as ``fmt``: "geojson", "shapefile", "zip" (a zipped
    shapefile, as the Census distributes them) or "gpkg"."""
    if fmt == "geojson":
        return src
    name = layer or src.stem
    if fmt == "shapefile":
        dst = src.with_name(f"{name}.shp")
        ogr2ogr("-f", "ESRI Shapefile", str(dst), str(src), "-nln", name)
    elif fmt == "zip":
        shp = convert(src, "shapefile", layer)
        dst = src.with_name(f"{name}.zip")
        with zipfile.ZipFile(dst, "w") as archive:
            for part in sorted(shp.parent.glob(f"{name}.*")):
                if part.suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                    archive.write(part, part.name)
    elif fmt == "gpkg":
        dst = src.with_name(f"{name}.gpkg")
        ogr2ogr("-f", "GPKG", str(dst), str(src), "-nln", name)
    else:  # pragma: no cover - a typo in a test
        raise ValueError(fmt)
    return dst
