"""``manage.py generate_buildings``: deterministic synthetic buildings for any state, or all.

``--states`` takes one state (``RI``), a list (``RI,CT``) or ``ALL`` (the 54 states and
territories of the ``zipcodes`` package, 30,003 ZIP codes); the default is ``MA``, and
``generate_massachusetts`` is this command without ``--states``. ZIP areas are the Voronoi
cells of the real ZIP centroids clipped to each state's outline; buildings are rotated
rectangles generated cell by cell from a random generator seeded with ``(seed, cell index)``
(see :mod:`project.buildings.synthetic`), written by :mod:`project.buildings.bulkload`. The
same states, seed and count give the same rows.

Everything happens in one ``transaction.atomic`` block: if anything fails, the
database is left as it was (with ``--replace``, the old rows are only gone once
the new load has succeeded). Inside an outer transaction (a pytest-django test
without ``transaction=True``, or a caller's own ``atomic``) the block is a
savepoint and behaves the same.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

#: ZIP rows per ``bulk_create`` call: bounds memory for --states ALL (30,003 ZIP codes).
ZIP_BATCH = 2_000


class Command(BaseCommand):
    help = (
        "Generate deterministic synthetic buildings for one or more states (--states RI, "
        "--states RI,CT, --states ALL; default MA): ZIP code areas (Voronoi cells of the real "
        "ZIP centroids) and N building footprints, loaded in one transaction."
    )
    #: The name in messages; generate_massachusetts overrides it.
    command_name = "generate_buildings"
    #: False for generate_massachusetts: no --states option, always MA.
    takes_states = True

    def add_arguments(self, parser: CommandParser) -> None:
        if self.takes_states:
            parser.add_argument(
                "--states",
                default="MA",
                help=(
                    "Comma-separated two-letter state codes (RI,CT), or ALL for every state "
                    "and territory of the zipcodes package (default MA)."
                ),
            )
        parser.add_argument(
            "--buildings",
            type=int,
            default=2_000_000,
            help="Number of buildings in all (default 2,000,000, about Massachusetts).",
        )
        parser.add_argument("--seed", type=int, default=42, help="Random seed, >= 0 (default 42).")
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--replace",
            action="store_true",
            help="Delete existing ZIP codes and buildings first (only once the new load succeeds).",
        )
        group.add_argument(
            "--if-missing",
            action="store_true",
            help=(
                "Do nothing if the database already holds buildings and ZIP codes of every "
                "requested state (fail if it holds other states' data)."
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=50_000,
            help="Rows per insert batch (memory bound; the data do not depend on it).",
        )
        parser.add_argument(
            "--method",
            choices=["packed", "rebuild", "naive"],
            default="packed",
            help=(
                "How the spatial index is built: packed (bulk-loaded R*Tree, default), rebuild "
                "(SpatiaLite CreateSpatialIndex after the load) or naive (per-row triggers; "
                "benchmark baseline). PostGIS always uses COPY."
            ),
        )
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        import shapely
        from django.contrib.gis.geos import GEOSGeometry
        from django.core.management.color import no_style
        from django.db import DEFAULT_DB_ALIAS, connections, transaction
        from tqdm import tqdm

        from project.buildings import bulkload, synthetic
        from project.buildings.models import Building, ZipCode

        n = options["buildings"]
        seed = options["seed"]
        batch_size = options["batch_size"]
        try:
            states = synthetic.parse_states(options.get("states", "MA"), name="--states")
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if n < 0:
            raise CommandError(f"--buildings must be >= 0, got {n}")
        if seed < 0:
            raise CommandError(f"--seed must be >= 0, got {seed}")
        if batch_size <= 0:
            raise CommandError(f"--batch-size must be > 0, got {batch_size}")
        # argparse checks these on the command line; call_command() passes options past it
        if options["method"] not in bulkload.METHODS:
            raise CommandError(
                f"--method must be one of {', '.join(bulkload.METHODS)}, got {options['method']!r}"
            )
        if options["replace"] and options["if_missing"]:
            raise CommandError("--replace and --if-missing exclude each other: pass one of them")
        verbosity = options.get("verbosity", 1)
        using = options.get("database") or DEFAULT_DB_ALIAS
        connection = connections[using]

        name = self.command_name
        start = time.perf_counter()
        cells = synthetic.region_cells(states)
        with transaction.atomic(using=using):
            n_buildings = Building.objects.using(using).count()
            n_zips = ZipCode.objects.using(using).count()
            if options["if_missing"] and n_buildings:
                present = set(
                    ZipCode.objects.using(using).values_list("state", flat=True).distinct()
                )
                missing = sorted(set(states) - present)
                if missing:
                    raise CommandError(
                        f"the database holds {n_buildings:,} buildings in "
                        f"{_state_list(sorted(present))} but none in {_state_list(missing)}: "
                        "pass --replace to generate the requested states instead"
                    )
                if verbosity >= 1:
                    self.stdout.write(
                        f"{name}: the database already holds {n_buildings:,} "
                        "buildings; nothing to do (--if-missing)."
                    )
                return
            if (n_buildings or n_zips) and not options["replace"]:
                raise CommandError(
                    f"the database already holds {n_buildings:,} buildings and {n_zips:,} ZIP "
                    "codes: pass --replace to overwrite them, or --if-missing to keep them"
                )
            if options["replace"]:
                bulkload.delete_all(using)
            for first in range(0, len(cells), ZIP_BATCH):  # bounded memory for ALL
                ZipCode.objects.using(using).bulk_create(
                    ZipCode(
                        id=cell.index + 1,
                        code=cell.code,
                        state=cell.state,
                        city=cell.city,
                        county=cell.county,
                        boundary=GEOSGeometry(shapely.to_wkb(cell.boundary, hex=True), srid=4326),
                    )
                    for cell in cells[first : first + ZIP_BATCH]
                )
            zip_pk = [cell.index + 1 for cell in cells]
            with tqdm(
                total=n,
                unit=" bldg",
                unit_scale=True,
                disable=options["no_progress"] or verbosity < 1,
                desc="buildings",
            ) as bar:
                stats = bulkload.load_buildings(
                    synthetic.iter_buildings(n, seed, batch_size, states=states),
                    zip_pk,
                    method=options["method"],
                    using=using,
                    on_batch=bar.update,
                )
            # explicit ids: move the sequences past them (no-op on SQLite)
            with connection.cursor() as cursor:
                for sql in connection.ops.sequence_reset_sql(no_style(), [ZipCode, Building]):
                    cursor.execute(sql)
        seconds = time.perf_counter() - start
        if verbosity < 1:
            return
        rate = stats.rows / seconds if seconds > 0 else float("inf")
        self.stdout.write(
            f"{name}: {stats.rows:,} buildings in {len(cells):,} ZIP codes of "
            f"{_state_list(states)} (seed {seed}, {connection.vendor}, method {stats.method}) "
            f"in {seconds:.1f} s: "
            f"{rate:,.0f} rows/s including the spatial index "
            f"(inserts {stats.insert_seconds:.1f} s, index {stats.index_seconds:.1f} s)."
        )


def _state_list(states: list[str] | tuple[str, ...]) -> str:
    """``MA``, ``CT, RI`` or ``54 states`` for a message."""
    return ", ".join(states) if len(states) <= 6 else f"{len(states)} states"
