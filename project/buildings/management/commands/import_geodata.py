"""``manage.py import_geodata {zipcodes,buildings} PATH``: load real GIS files.

A thin front over :func:`project.buildings.importers.import_geodata`, whose
module docstring documents every choice (CRS, invalid geometries, multi-part
buildings, attribute defaults and conversions).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.buildings.importers import (
    DEFAULT_BATCH_SIZE,
    INVALID_POLICIES,
    KINDS,
    MULTIPART_POLICIES,
    UNKNOWN_USE_TYPE_POLICIES,
    GeodataImportError,
    import_geodata,
    parse_mapping,
)


class Command(BaseCommand):
    help = (
        "Import ZIP code areas or building footprints from a GeoJSON, Shapefile or "
        "GeoPackage file (anything GDAL reads), reprojected to EPSG:4326, in batches, "
        "inside one transaction: a bad file or feature changes nothing and the error "
        "names the file, the feature and the field."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=KINDS, help="The table to fill.")
        parser.add_argument(
            "path", help="The file; a .zip (e.g. a Census download) is read as it is."
        )
        parser.add_argument("--layer", help="The layer to read, for files with several.")
        parser.add_argument(
            "--map",
            dest="mapping",
            action="append",
            default=[],
            metavar="FIELD=ATTRIBUTE",
            help=(
                "Fill a model field from a source attribute, e.g. --map code=ZCTA5CE20; "
                "repeat for several fields. Unmapped fields use a same-named attribute "
                "(and for zipcodes: code from ZCTA5CE20/ZCTA5CE10/GEOID20/GEOID10/GEOID/"
                "ZIP_CODE/ZIPCODE/ZIP, state from STUSPS/STATE, city from PO_NAME)."
            ),
        )
        parser.add_argument(
            "--state", help="Two-letter state for every ZIP code (zipcodes only), e.g. MA."
        )
        parser.add_argument(
            "--srid",
            type=int,
            help=(
                "EPSG code of the source coordinates; overrides the file's CRS. Without it "
                "a file with no CRS is taken as EPSG:4326, with a warning."
            ),
        )
        parser.add_argument(
            "--invalid",
            choices=INVALID_POLICIES,
            default="repair",
            help=(
                "Invalid geometries: repair with GEOS make_valid (keeping the polygons), "
                "skip, or fail. Default: repair. Counts are printed."
            ),
        )
        parser.add_argument(
            "--multipart",
            choices=MULTIPART_POLICIES,
            default="split",
            help="Buildings with several polygons: one row per part, or fail. Default: split.",
        )
        parser.add_argument(
            "--unknown-use-type",
            choices=UNKNOWN_USE_TYPE_POLICIES,
            default="fail",
            help="A use_type outside the model's choices: fail, or import as 'other'.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per bulk insert (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not show a progress bar."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            stats = import_geodata(
                options["kind"],
                options["path"],
                layer=options["layer"],
                mapping=parse_mapping(options["mapping"]),
                state=options["state"],
                srid=options["srid"],
                invalid=options["invalid"],
                multipart=options["multipart"],
                unknown_use_type=options["unknown_use_type"],
                batch_size=options["batch_size"],
                progress=not options["no_progress"],
            )
        except GeodataImportError as exc:
            raise CommandError(f"{exc}. Nothing was imported.") from exc
        if options["verbosity"] >= 1:
            self.stdout.write(stats.summary())
