"""Import GeoJSON, Shapefile or GeoPackage layers into the ZipCode and Building tables.

The work is done by :func:`import_geodata`; ``manage.py import_geodata`` is a thin
command-line front over it. Reading goes through Django's GDAL bindings
(``django.contrib.gis.gdal``) and GEOS only, feature by feature, so memory holds
one batch of rows at a time whatever the size of the file.

Choices made here (the command's help and the README say the same):

* **One transaction.** Every row is written inside one ``transaction.atomic()``:
  a bad file, feature or value raises :class:`GeodataImportError` naming the file,
  the feature (its index in the layer, from 0, and its FID) and the field, and
  the database is left as it was (rows of batches already inserted are rolled
  back; a PostgreSQL id sequence may still have advanced).
* **Coordinates.** Geometries are reprojected from the layer's CRS to EPSG:4326.
  ``srid`` (``--srid``) sets the source CRS and overrides the one the file
  declares (for a missing or wrong ``.prj``). A layer with no CRS and no
  ``srid`` is taken as EPSG:4326 with a logged warning, and any feature whose
  coordinates fall outside longitude/latitude range is then an error that
  suggests ``--srid``.
* **Invalid geometries** (``invalid``): ``"repair"`` (default) runs GEOS
  ``make_valid`` and keeps the polygonal part of the result (a repair that leaves
  no polygon counts as skipped); ``"skip"`` drops the feature; ``"fail"`` stops
  the import. Features with no or an empty geometry are skipped (an error under
  ``"fail"``). Repaired and skipped features are counted in the summary.
  Geometries that are not polygonal at all (points, lines) are always an error.
  Z and M coordinates are dropped.
* **Geometry types.** ZIP codes: a Polygon becomes a one-part MultiPolygon.
  Buildings: a one-part MultiPolygon becomes a Polygon; a MultiPolygon with
  several parts becomes one row per part (``multipart="split"``, the default;
  each part gets the feature's attributes and its own computed footprint) or an
  error (``multipart="fail"``).
* **Attributes.** ``mapping`` maps model fields to layer attributes
  (``{"code": "ZCTA5CE20"}``); model field names are checked against the model,
  attribute names against the layer (an exact match, else a unique
  case-insensitive one). Unmapped fields take a default attribute when the layer
  has one: for ZIP codes ``code`` from ``ZCTA5CE20``, ``ZCTA5CE10``, ``GEOID20``,
  ``GEOID10``, ``GEOID``, ``ZIP_CODE``, ``ZIPCODE``, ``ZIP`` or ``code``, ``state``
  from ``STUSPS``, ``STATE`` or ``state``, ``city`` from ``PO_NAME`` or ``city``;
  for every field an attribute with the field's own name. ZIP codes need a
  ``state``: ``state="MA"`` (``--state``) sets it for every row and replaces a
  default attribute (it cannot be combined with an explicit ``state`` mapping).
* **Values.** Numbers are converted strictly (``"abc"`` for ``height_m`` is an
  error), null or blank values become NULL or the field's default, and a null
  ``footprint_m2`` is computed from the geometry. ``footprint_m2`` not mapped is
  the area of the stored geometry in the equal-area projection EPSG:6933 (WGS 84
  / NSIDC EASE-Grid 2.0 Global), in m². ``use_type`` matches the choices' values
  or labels case-insensitively; an unknown value is an error, or, with
  ``unknown_use_type="other"``, becomes ``"other"`` and is counted. ZIP codes
  must be 5 digits (an integer attribute is zero-padded), unique in the file
  and not already in the table.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from analysis_lib.checks import check_choice, check_positive_int

from .states import clean_state

if TYPE_CHECKING:
    from django.contrib.gis.gdal import CoordTransform, DataSource, Layer
    from django.contrib.gis.geos import GEOSGeometry, Polygon
    from django.db import models

logger = logging.getLogger(__name__)

Kind = Literal["zipcodes", "buildings"]
InvalidPolicy = Literal["repair", "skip", "fail"]
MultipartPolicy = Literal["split", "fail"]
UnknownUseTypePolicy = Literal["fail", "other"]

KINDS: tuple[str, ...] = ("zipcodes", "buildings")
INVALID_POLICIES: tuple[str, ...] = ("repair", "skip", "fail")
MULTIPART_POLICIES: tuple[str, ...] = ("split", "fail")
UNKNOWN_USE_TYPE_POLICIES: tuple[str, ...] = ("fail", "other")
DEFAULT_BATCH_SIZE = 5000
TARGET_SRID = 4326
#: WGS 84 / NSIDC EASE-Grid 2.0 Global: a cylindrical equal-area projection of
#: the whole globe; its areas agree with geodesic areas to about 1e-10.
EQUAL_AREA_SRID = 6933

#: Attributes tried, in order, for fields the mapping leaves out (matched
#: case-insensitively). Every field also tries an attribute with its own name.
DEFAULT_ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "zipcodes": {
        "code": (
            "ZCTA5CE20",
            "ZCTA5CE10",
            "GEOID20",
            "GEOID10",
            "GEOID",
            "ZIP_CODE",
            "ZIPCODE",
            "ZIP",
        ),
        "state": ("STUSPS", "STATE"),
        "city": ("PO_NAME",),
    },
    "buildings": {},
}

_ZIP_RE = re.compile(r"\d{5}")
_STATE_RE = re.compile(r"[A-Z]{2}")


class GeodataImportError(ValueError):
    """A file, layer, feature, value or argument that cannot be imported.

    The message names the problem: the path, the layer, the feature (its index
    in the layer, from 0, and its FID), the model field and the source attribute.
    """


@dataclass
class ImportStats:
    """What one import read and wrote.

    Attributes
    ----------
    kind : str
        ``"zipcodes"`` or ``"buildings"``.
    path : str
        The file that was read.
    layer : str
        The layer that was read.
    source_crs : str
        The source CRS as used (``"EPSG:26986"``, ``"EPSG:4326 (assumed)"``, ...).
    features : int
        Features read from the layer.
    imported : int
        Rows written (one feature can give several building rows when split).
    repaired : int
        Features whose invalid geometry was repaired with ``make_valid``.
    skipped : int
        Features not imported: invalid geometry under ``invalid="skip"``, a repair
        that left no polygon, or no geometry at all.
    split : int
        Multi-part building features written as one row per part.
    unknown_use_types : int
        Features whose unknown ``use_type`` was imported as ``"other"``.
    """

    kind: str
    path: str
    layer: str
    source_crs: str
    features: int = 0
    imported: int = 0
    repaired: int = 0
    skipped: int = 0
    split: int = 0
    unknown_use_types: int = 0

    def summary(self) -> str:
        """Describe the import in one line, for the end of the command's output.

        Returns
        -------
        str
            Counts of features read, rows imported, repaired, skipped and split.

        Examples
        --------
        >>> ImportStats("zipcodes", "z.json", "z", "EPSG:4326", 3, 2, 1, 1).summary()
        "import_geodata zipcodes: z.json (layer 'z', EPSG:4326 -> EPSG:4326): 3 features read, 2 rows imported, 1 repaired, 1 skipped, 0 split"
        """  # noqa: E501
        text = (
            f"import_geodata {self.kind}: {self.path} (layer {self.layer!r}, "
            f"{self.source_crs} -> EPSG:{TARGET_SRID}): {self.features} features read, "
            f"{self.imported} rows imported, {self.repaired} repaired, "
            f"{self.skipped} skipped, {self.split} split"
        )
        if self.unknown_use_types:
            text += f", {self.unknown_use_types} unknown use types set to 'other'"
        return text


def model_for(kind: Kind) -> type[models.Model]:
    """Return the model that ``kind`` imports into.

    Parameters
    ----------
    kind : {"zipcodes", "buildings"}
        What to import.

    Returns
    -------
    type[django.db.models.Model]
        ``ZipCode`` or ``Building``.

    Raises
    ------
    GeodataImportError
        If ``kind`` is not one of the two.

    Examples
    --------
    >>> model_for("zipcodes").__name__
    'ZipCode'
    """
    from project.buildings.models import Building, ZipCode

    _check_choice("kind", kind, KINDS)
    return ZipCode if kind == "zipcodes" else Building


def mappable_fields(kind: Kind) -> list[str]:
    """List the model fields that ``--map`` may fill from a source attribute.

    Every concrete field except the primary key, the geometry and relations.

    Parameters
    ----------
    kind : {"zipcodes", "buildings"}
        What to import.

    Returns
    -------
    list of str
        Field names in model order.

    Raises
    ------
    GeodataImportError
        If ``kind`` is not one of the two.

    Examples
    --------
    >>> mappable_fields("zipcodes")
    ['code', 'state', 'city', 'county']
    """
    return [f.name for f in _mappable(model_for(kind))]


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """Parse ``FIELD=ATTRIBUTE`` strings (the values of ``--map``) into a dict.

    Only the syntax is checked here; :func:`import_geodata` checks the field names
    against the model and the attribute names against the layer.

    Parameters
    ----------
    items : sequence of str
        Strings such as ``"code=ZCTA5CE20"``.

    Returns
    -------
    dict
        Model field name -> source attribute name.

    Raises
    ------
    GeodataImportError
        If an item has no ``=``, an empty side, or repeats a field.

    Examples
    --------
    >>> parse_mapping(["code=ZCTA5CE20", "city = PO_NAME"])
    {'code': 'ZCTA5CE20', 'city': 'PO_NAME'}
    """
    mapping: dict[str, str] = {}
    for item in items:
        field, sep, attr = item.partition("=")
        field, attr = field.strip(), attr.strip()
        if not sep or not field or not attr:
            raise GeodataImportError(
                f"--map {item!r}: expected FIELD=ATTRIBUTE, e.g. --map code=ZCTA5CE20"
            )
        if field in mapping:
            raise GeodataImportError(
                f"--map {item!r}: field {field!r} is already mapped to {mapping[field]!r}"
            )
        mapping[field] = attr
    return mapping


def import_geodata(
    kind: Kind,
    path: str | os.PathLike[str],
    *,
    layer: str | None = None,
    mapping: Mapping[str, str] | None = None,
    state: str | None = None,
    srid: int | None = None,
    invalid: InvalidPolicy = "repair",
    multipart: MultipartPolicy = "split",
    unknown_use_type: UnknownUseTypePolicy = "fail",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> ImportStats:
    """Import one layer of a GeoJSON, Shapefile or GeoPackage file, all or nothing.

    Features are read one at a time through GDAL, reprojected to EPSG:4326,
    checked, and inserted with ``bulk_create`` in batches of ``batch_size``
    inside one transaction. The module docstring lists every choice made about
    CRSs, invalid geometries, multi-part buildings, defaults and conversions.

    Parameters
    ----------
    kind : {"zipcodes", "buildings"}
        The table to fill: ``ZipCode`` or ``Building``.
    path : str or os.PathLike
        The file. A ``.zip`` is read through GDAL's ``/vsizip/`` (add ``--layer``
        if it holds several layers); other GDAL virtual paths work too.
    layer : str, optional
        The layer to read; required when the file has several.
    mapping : mapping of str to str, optional
        Model field -> source attribute, e.g. ``{"code": "ZCTA5CE20"}``.
    state : str, optional
        Two-letter state for every ZIP code (``zipcodes`` only).
    srid : int, optional
        EPSG code of the source coordinates; overrides the CRS the file declares.
    invalid : {"repair", "skip", "fail"}, default "repair"
        What to do with an invalid geometry.
    multipart : {"split", "fail"}, default "split"
        What to do with a building that has several polygons.
    unknown_use_type : {"fail", "other"}, default "fail"
        What to do with a ``use_type`` value outside the model's choices.
    batch_size : int, default 5000
        Rows per ``bulk_create``.
    progress : bool, default False
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    ImportStats
        Counts of features read, rows imported, repaired, skipped and split.

    Raises
    ------
    GeodataImportError
        For a bad argument, a missing or unreadable file, a wrong layer, field or
        attribute name, or a bad feature or value; nothing is written then.

    Examples
    --------
    >>> stats = import_geodata(  # doctest: +SKIP
    ...     "zipcodes", "tl_2020_us_zcta520_ma.gpkg", state="MA",
    ...     mapping={"code": "ZCTA5CE20"},
    ... )
    >>> print(stats.summary())  # doctest: +SKIP
    """
    from django.contrib.gis.gdal import DataSource
    from django.db import transaction

    model = model_for(kind)
    _check_choice("invalid", invalid, INVALID_POLICIES)
    _check_choice("multipart", multipart, MULTIPART_POLICIES)
    _check_choice("unknown_use_type", unknown_use_type, UNKNOWN_USE_TYPE_POLICIES)
    try:
        check_positive_int("batch_size", batch_size)
    except (TypeError, ValueError) as exc:
        raise GeodataImportError(str(exc)) from None
    mapping = dict(mapping or {})
    valid_fields = mappable_fields(kind)
    unknown = [f for f in mapping if f not in valid_fields]
    if unknown:
        raise GeodataImportError(
            f"--map: {model.__name__} has no field {unknown[0]!r}; "
            f"fields you can map: {', '.join(valid_fields)}"
        )
    if state is not None:
        if kind != "zipcodes":
            raise GeodataImportError("--state applies to zipcodes only")
        if "state" in mapping:
            raise GeodataImportError(
                f"use either --state {state} or --map state={mapping['state']}, not both"
            )
        try:
            state = clean_state("--state", state)
        except (TypeError, ValueError) as exc:
            raise GeodataImportError(str(exc)) from None

    path = os.fspath(path)
    gdal_path = path
    if not path.startswith("/vsi"):
        if not os.path.exists(path):
            raise GeodataImportError(f"{path}: no such file")
        if path.lower().endswith(".zip"):  # e.g. a Census TIGER/Line download, as is
            gdal_path = "/vsizip/" + os.path.abspath(path)

    with _gdal_messages() as messages:
        try:
            source = DataSource(gdal_path)
        except Exception as exc:  # GDALException, or a decoding error in a driver
            raise GeodataImportError(
                f"{path}: cannot be read as a GeoJSON, Shapefile or GeoPackage file"
                f"{_detail(exc, messages)}"
            ) from exc
        lyr = _pick_layer(source, path, layer)
        columns = _resolve_columns(kind, model, lyr, path, mapping, state)
        transform, source_crs, assumed = _source_transform(lyr, path, srid)
        stats = ImportStats(kind=kind, path=path, layer=lyr.name, source_crs=source_crs)
        reader = _LayerReader(
            model=model,
            layer=lyr,
            path=path,
            stats=stats,
            columns=columns,
            state=state,
            transform=transform,
            check_lonlat=assumed,
            invalid=invalid,
            multipart=multipart,
            unknown_use_type=unknown_use_type,
            messages=messages,
        )
        with transaction.atomic():
            reader.run(batch_size=batch_size, progress=progress)
    return stats


# --------------------------------------------------------------------------- helpers


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise GeodataImportError (the library's message) if ``value`` is not one of ``allowed``."""
    try:
        check_choice(name, value, allowed)
    except ValueError as exc:
        raise GeodataImportError(str(exc)) from None


def _mappable(model: type[models.Model]) -> list[Any]:
    """Return the concrete, non-key, non-geometry, non-relation fields of ``model``."""
    from django.contrib.gis.db.models import GeometryField

    return [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key and not f.is_relation and not isinstance(f, GeometryField)
    ]


class _GdalMessages(logging.Handler):
    """Keep the last few GDAL error messages that Django logs, to quote them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.recent: deque[str] = deque(maxlen=5)

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("GDAL_ERROR"):
            return
        message = record.args[-1] if isinstance(record.args, tuple) and record.args else ""
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self.recent.append(str(message).strip())


@contextmanager
def _gdal_messages() -> Iterator[_GdalMessages]:
    """Collect GDAL's messages (Django logs them to ``django.contrib.gis``)."""
    handler = _GdalMessages()
    gis_logger = logging.getLogger("django.contrib.gis")
    gis_logger.addHandler(handler)
    try:
        yield handler
    finally:
        gis_logger.removeHandler(handler)


def _detail(exc: BaseException, messages: _GdalMessages) -> str:
    """Quote GDAL's own messages if it logged any, else the exception text."""
    if messages.recent:
        text = "; ".join(messages.recent)
        messages.recent.clear()
    else:
        text = str(exc)
    return f" (GDAL: {text})" if text else ""


def _pick_layer(source: DataSource, path: str, name: str | None) -> Layer:
    """Return the layer called ``name``, or the only layer; errors list the layers."""
    names = [lyr.name for lyr in source]
    if name is None:
        if len(names) == 1:
            return source[0]
        if not names:
            raise GeodataImportError(f"{path}: the file has no layers")
        raise GeodataImportError(
            f"{path}: the file has {len(names)} layers ({', '.join(names)}); "
            "choose one with --layer NAME"
        )
    if name not in names:
        raise GeodataImportError(
            f"{path}: no layer named {name!r}; available layers: {', '.join(names)}"
        )
    return source[names.index(name)]


@dataclass(frozen=True)
class _Column:
    """One model field filled from one layer attribute."""

    field: Any  # the Django model field
    attribute: str
    index: int  # position of the attribute in the layer's fields


def _resolve_columns(
    kind: str,
    model: type[models.Model],
    lyr: Layer,
    path: str,
    mapping: dict[str, str],
    state: str | None,
) -> list[_Column]:
    """Match mapped and default fields to the layer's attributes, or raise."""
    layer_fields: list[str] = list(lyr.fields)
    by_lower: dict[str, list[str]] = {}
    for name in layer_fields:
        by_lower.setdefault(name.lower(), []).append(name)

    def find(attr: str) -> str | None:
        if attr in layer_fields:
            return attr
        matches = by_lower.get(attr.lower(), [])
        return matches[0] if len(matches) == 1 else None

    columns = []
    for field in _mappable(model):
        if field.name in mapping:
            attr = find(mapping[field.name])
            if attr is None:
                listed = ", ".join(layer_fields) if layer_fields else "(none)"
                raise GeodataImportError(
                    f"{path}: layer {lyr.name!r} has no attribute {mapping[field.name]!r} "
                    f"(--map {field.name}={mapping[field.name]}); its attributes: {listed}"
                )
        elif field.name == "state" and state is not None:
            continue
        else:
            candidates = (*DEFAULT_ATTRIBUTES[kind].get(field.name, ()), field.name)
            attr = next((a for a in map(find, candidates) if a is not None), None)
            if attr is None:
                continue
        columns.append(_Column(field, attr, layer_fields.index(attr)))

    mapped = {c.field.name for c in columns}
    if kind == "zipcodes":
        listed = ", ".join(layer_fields) if layer_fields else "(none)"
        if "code" not in mapped:
            raise GeodataImportError(
                f"{path}: layer {lyr.name!r} has none of the usual ZIP code attributes "
                f"({', '.join(DEFAULT_ATTRIBUTES['zipcodes']['code'])}); "
                f"name one with --map code=ATTRIBUTE; its attributes: {listed}"
            )
        if "state" not in mapped and state is None:
            raise GeodataImportError(
                f"{path}: layer {lyr.name!r} has no state attribute; pass --state XX "
                f"(e.g. --state MA) or --map state=ATTRIBUTE; its attributes: {listed}"
            )
    return columns


def _source_transform(
    lyr: Layer, path: str, srid: int | None
) -> tuple[CoordTransform | None, str, bool]:
    """Return the transform to EPSG:4326, a source CRS label, and whether it was assumed."""
    from django.contrib.gis.gdal import CoordTransform, SpatialReference
    from django.contrib.gis.gdal.error import GDALException, SRSException

    target = SpatialReference(TARGET_SRID)
    if srid is not None:
        try:
            source = SpatialReference(int(srid))
        except (GDALException, SRSException, ValueError, TypeError) as exc:
            raise GeodataImportError(f"--srid {srid!r} is not a known EPSG code") from exc
        label = f"EPSG:{int(srid)} (from --srid)"
    else:
        source = lyr.srs
        if source is None:
            logger.warning(
                "%s: layer %r declares no coordinate reference system; assuming "
                "EPSG:4326 (longitude/latitude). Pass --srid to set it.",
                path,
                lyr.name,
            )
            return None, f"EPSG:{TARGET_SRID} (assumed: the file declares no CRS)", True
        label = f"EPSG:{source.srid}" if source.srid else (source.name or "unnamed CRS")
    if source.srid == TARGET_SRID:
        return None, label, False
    try:
        return CoordTransform(source, target), label, False
    except GDALException as exc:
        raise GeodataImportError(
            f"{path}: cannot transform from {label} to EPSG:{TARGET_SRID} ({exc})"
        ) from exc


class _ValueProblem(Exception):
    """A value that does not convert; the reader adds file, feature and field."""


class _LayerReader:
    """Read one layer feature by feature and insert model rows in batches."""

    def __init__(
        self,
        *,
        model: type[models.Model],
        layer: Layer,
        path: str,
        stats: ImportStats,
        columns: list[_Column],
        state: str | None,
        transform: CoordTransform | None,
        check_lonlat: bool,
        invalid: str,
        multipart: str,
        unknown_use_type: str,
        messages: _GdalMessages,
    ) -> None:
        from django.contrib.gis.gdal import CoordTransform, SpatialReference

        self.model = model
        self.layer = layer
        self.path = path
        self.stats = stats
        self.columns = columns
        self.state = state
        self.transform = transform
        self.check_lonlat = check_lonlat
        self.invalid = invalid
        self.multipart = multipart
        self.unknown_use_type = unknown_use_type
        self.messages = messages
        self.is_zip = stats.kind == "zipcodes"
        self.area_transform = CoordTransform(
            SpatialReference(TARGET_SRID), SpatialReference(EQUAL_AREA_SRID)
        )
        self.maps_footprint = any(c.field.name == "footprint_m2" for c in columns)
        self.use_types: dict[str, str] = {}
        if not self.is_zip:
            for value, label in model._meta.get_field("use_type").choices:
                self.use_types[str(value).lower()] = value
                self.use_types[str(label).lower()] = value
        # ZIP codes are few (about 33,000 in the US): keep the ones in the table
        # and in this file, to name a duplicate's feature instead of failing on
        # the unique index somewhere inside a batch.
        self.codes: dict[str, int | None] = {}
        if self.is_zip:
            self.codes = dict.fromkeys(model.objects.values_list("code", flat=True))

    # ------------------------------------------------------------------ errors
    def where(self, index: int, fid: int | None) -> str:
        """Name the file, layer and feature, for error messages."""
        fid_text = f" (FID {fid})" if fid is not None else ""
        return f"{self.path}: layer {self.layer.name!r}, feature {index}{fid_text}"

    def error(
        self, index: int, fid: int | None, problem: str, column: _Column | None = None
    ) -> GeodataImportError:
        """Build an error naming the file, feature and (if given) field and attribute."""
        field = ""
        if column is not None:
            field = f", field {column.field.name!r} (attribute {column.attribute!r})"
        return GeodataImportError(f"{self.where(index, fid)}{field}: {problem}")

    # ------------------------------------------------------------------ loop
    def run(self, *, batch_size: int, progress: bool) -> None:
        """Read every feature, insert in batches; raise on the first bad one."""
        from django.contrib.gis.gdal.error import GDALException
        from tqdm.auto import tqdm

        total = self.layer.num_feat
        batch: list[models.Model] = []
        features = iter(self.layer)
        with tqdm(
            total=total if total >= 0 else None,
            disable=not progress,
            unit=" features",
            desc=f"{self.stats.kind} <- {os.path.basename(self.path)}",
        ) as bar:
            index = 0
            while True:
                self.messages.recent.clear()  # quote only this feature's GDAL messages
                try:
                    feature = next(features)
                except StopIteration:
                    break
                except GDALException as exc:
                    raise self.error(
                        index,
                        None,
                        f"cannot read the feature, the file may be truncated or corrupt"
                        f"{_detail(exc, self.messages)}",
                    ) from exc
                batch.extend(self.rows(feature, index))
                self.stats.features += 1
                index += 1
                bar.update(1)
                if len(batch) >= batch_size:
                    self.flush(batch)
            self.flush(batch)

    def flush(self, batch: list[models.Model]) -> None:
        """Insert the batch and empty it."""
        if batch:
            self.model.objects.bulk_create(batch)
            self.stats.imported += len(batch)
            batch.clear()

    # ------------------------------------------------------------------ one feature
    def rows(self, feature: Any, index: int) -> list[models.Model]:
        """Return the model rows for one feature (none if it is skipped)."""
        fid = feature.fid
        parts = self.geometry(feature, index, fid)
        if parts is None:
            self.stats.skipped += 1
            return []
        values = self.values(feature, index, fid)
        if self.is_zip:
            from django.contrib.gis.geos import MultiPolygon

            code = values["code"]
            if code in self.codes:
                seen = self.codes[code]
                before = f"feature {seen} of this file" if seen is not None else "the ZipCode table"
                raise self.error(
                    index, fid, f"ZIP code {code!r} is already in {before}", self.column("code")
                )
            self.codes[code] = index
            if self.state is not None:
                values["state"] = self.state
            return [self.model(boundary=MultiPolygon(*parts, srid=TARGET_SRID), **values)]

        if len(parts) > 1:
            if self.multipart == "fail":
                raise self.error(
                    index,
                    fid,
                    f"the building is a MultiPolygon with {len(parts)} parts; "
                    "use --multipart split to import one row per part",
                )
            self.stats.split += 1
        rows = []
        for part in parts:
            row_values = dict(values)
            if len(parts) > 1 or row_values.get("footprint_m2") is None:
                row_values["footprint_m2"] = self.area_m2(part)
            rows.append(self.model(boundary=part, **row_values))
        return rows

    def column(self, name: str) -> _Column | None:
        """Return the column that fills field ``name``, if any."""
        return next((c for c in self.columns if c.field.name == name), None)

    def geometry(self, feature: Any, index: int, fid: int | None) -> list[Polygon] | None:
        """Return the feature's valid polygons in EPSG:4326, or None if it is skipped."""
        from django.contrib.gis.gdal.error import GDALException
        from django.contrib.gis.geos import GEOSGeometry

        try:
            ogr = feature.geom
        except GDALException:  # no geometry: Django raises on the NULL pointer
            ogr = None
        if ogr is None or ogr.empty:
            if self.invalid == "fail":
                raise self.error(index, fid, "the feature has no geometry (--invalid fail)")
            return None
        if ogr.is_3d:
            ogr.set_3d(False)
        if ogr.is_measured:
            ogr.set_measured(False)
        kind = ogr.geom_type.name
        if kind not in ("Polygon", "MultiPolygon"):
            raise self.error(
                index, fid, f"the geometry is a {kind}; expected a Polygon or MultiPolygon"
            )
        if self.check_lonlat:
            xmin, ymin, xmax, ymax = ogr.extent
            if xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90:
                raise self.error(
                    index,
                    fid,
                    f"coordinates ({xmin:.6g}, {ymin:.6g}) .. ({xmax:.6g}, {ymax:.6g}) are not "
                    "longitude/latitude; the file declares no CRS, so pass its EPSG code "
                    "with --srid (e.g. --srid 26986)",
                )
        if self.transform is not None:
            try:
                ogr.transform(self.transform)
            except GDALException as exc:
                raise self.error(
                    index,
                    fid,
                    f"cannot reproject the geometry to EPSG:{TARGET_SRID}"
                    f"{_detail(exc, self.messages)}",
                ) from exc
        geom = GEOSGeometry(ogr.wkb, srid=TARGET_SRID)
        reason = geom.valid_reason  # unlike .valid, does not log a GEOS notice
        if reason != "Valid Geometry":
            if self.invalid == "fail":
                raise self.error(index, fid, f"invalid geometry: {reason} (--invalid fail)")
            if self.invalid == "skip":
                return None
            parts = _polygons(geom.make_valid())
            if not parts:
                return None
            self.stats.repaired += 1
            return parts
        return _polygons(geom) or None

    def values(self, feature: Any, index: int, fid: int | None) -> dict[str, Any]:
        """Return the converted attribute values, by model field name."""
        values: dict[str, Any] = {}
        for column in self.columns:
            raw = feature[column.index].value
            try:
                values[column.field.name] = self.convert(column.field, raw)
            except _ValueProblem as exc:
                raise self.error(index, fid, str(exc), column) from None
        return values

    def convert(self, field: Any, raw: Any) -> Any:
        """Convert one source value for ``field``; raise _ValueProblem if it cannot be."""
        if isinstance(raw, str):
            raw = raw.strip()
        if raw is None or raw == "":
            if field.null or field.name == "footprint_m2":
                return None  # footprint_m2: computed from the geometry
            if field.has_default():
                return field.get_default()
            raise _ValueProblem("the value is empty, and the field is required")
        name = field.name
        internal = field.get_internal_type()
        if name == "code" and self.is_zip:
            text = f"{raw:05d}" if isinstance(raw, int) else _as_text(raw)
            if not _ZIP_RE.fullmatch(text):
                raise _ValueProblem(f"{raw!r} is not a 5-digit ZIP code")
            return text
        if name == "state" and self.is_zip:
            text = _as_text(raw).upper()
            if not _STATE_RE.fullmatch(text):
                raise _ValueProblem(
                    f"{raw!r} is not a two-letter state code (use --state to set it)"
                )
            return text
        if name == "use_type" and not self.is_zip:
            text = _as_text(raw)
            choice = self.use_types.get(text.lower())
            if choice is None:
                if self.unknown_use_type == "other":
                    self.stats.unknown_use_types += 1
                    return "other"
                raise _ValueProblem(
                    f"{raw!r} is not a use type; expected one of "
                    f"{', '.join(sorted(set(self.use_types.values())))} "
                    "(or pass --unknown-use-type other)"
                )
            return choice
        if internal == "FloatField":
            return _as_float(raw)
        if internal in ("IntegerField", "BigIntegerField", "SmallIntegerField"):
            return _as_int(raw)
        text = _as_text(raw)
        if field.max_length is not None and len(text) > field.max_length:
            raise _ValueProblem(
                f"{text[:20]!r}... is {len(text)} characters long; at most {field.max_length} fit"
            )
        return text

    def area_m2(self, polygon: GEOSGeometry) -> float:
        """Return the area in square metres, in the equal-area projection EPSG:6933."""
        from django.contrib.gis.gdal import OGRGeometry

        # Through OGR directly: GEOSGeometry.transform() makes the same OGR
        # round trip plus a GEOS copy, about three times slower.
        projected = OGRGeometry(polygon.wkb)
        projected.transform(self.area_transform)
        return projected.area


def _polygons(geom: GEOSGeometry) -> list[Polygon]:
    """Return the non-empty polygons in a (possibly nested) geometry."""
    from django.contrib.gis.geos import GeometryCollection, Polygon

    if isinstance(geom, Polygon):
        return [] if geom.empty else [geom]
    if isinstance(geom, GeometryCollection):
        return [p for part in geom for p in _polygons(part)]
    return []


def _as_text(raw: Any) -> str:
    """Return a value as text; integral floats lose their ``.0``, dates use ISO format."""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, date):
        return raw.isoformat()
    return str(raw).strip()


def _as_float(raw: Any) -> float:
    """Return a finite, non-negative number (both float fields are physical sizes)."""
    if isinstance(raw, bool):
        raise _ValueProblem(f"{raw!r} is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _ValueProblem(f"{raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _ValueProblem(f"{raw!r} is not a finite number")
    if value < 0:
        raise _ValueProblem(f"{raw!r} is negative")
    return value


def _as_int(raw: Any) -> int:
    """Return a whole number from an int, a whole float, numeric text or a date (its year)."""
    if isinstance(raw, date):
        return raw.year
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _ValueProblem(f"{raw!r} is not a whole number") from None
    if not value.is_integer():
        raise _ValueProblem(f"{raw!r} is not a whole number")
    return int(value)
