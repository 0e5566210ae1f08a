"""``manage.py analyze_buildings``: the per-ZIP summary of a state, written to CSV or Parquet.

Run from the command line with CSV output, the command calls
:func:`analysis_lib.keep_pyarrow_out` before pandas is imported: pandas 2.x would otherwise load
pyarrow (about 38 MiB of RSS) though nothing here uses it. ``--with-pyarrow`` keeps the old
behaviour; Parquet output needs pyarrow and loads it; ``call_command()`` never blocks pyarrow in
the caller's process.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from project.buildings.states import clean_state

FORMATS = ("csv", "parquet")


class Command(BaseCommand):
    help = (
        "Summarise the buildings of every ZIP code of a state (count, footprints, heights, years, "
        "use-type shares, buildings per km²) and write the table to CSV or Parquet; optionally "
        "draw a choropleth map. Buildings straddling two ZIPs belong to neither with "
        "--predicate within (GeoDjango's boundary__within); use --predicate centroid to count "
        "each building once, in the ZIP holding its centroid. Run from the command line with "
        "CSV output, the command keeps pyarrow out of its process (pandas would load it, about "
        "38 MiB of RSS for nothing); --with-pyarrow loads it."
    )

    # The system checks import GDAL, the URL configuration, the admin and auth views (about
    # 0.4 s, a fifth of the command): this command needs none of them, and says what is
    # missing in the database itself (_check_database). `manage.py check` still runs them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        from project.buildings.analysis import PREDICATES, STRATEGIES

        parser.add_argument("--state", required=True, help="Two-letter state code, e.g. MA.")
        parser.add_argument(
            "--strategy",
            choices=STRATEGIES,
            default="sweep",
            help="sweep: one streaming pass (default); orm: one indexed query per ZIP; "
            "database: one SQL statement.",
        )
        parser.add_argument(
            "--predicate",
            choices=PREDICATES,
            default="within",
            help="within: footprint inside the ZIP (default); centroid: centroid inside.",
        )
        parser.add_argument(
            "--out",
            type=Path,
            default=None,
            help="Output file (default: reports/<state>_by_zip.<format>).",
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default=None,
            help="Output format (default: from the --out suffix, else csv).",
        )
        parser.add_argument(
            "--map",
            type=Path,
            default=None,
            help="Also draw a choropleth of buildings per km² by ZIP into this PNG file.",
        )
        parser.add_argument(
            "--chunk-size", type=int, default=10_000, help="Rows per fetch (default 10000)."
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Extra threads matching chunks in the sweep (default: none; with ADBC the "
            "next batch is read in a background thread anyway).",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not show the progress bar."
        )
        parser.add_argument(
            "--with-pyarrow",
            action="store_true",
            help="Let pandas load pyarrow (about 38 MiB of RSS). By default a CSV run from the "
            "command line keeps pyarrow out of its process (analysis_lib.keep_pyarrow_out); "
            "--format parquet always loads it.",
        )

    def run_from_argv(self, argv: list[str]) -> None:
        # Only a run from the command line owns its process: call_command() runs inside the
        # caller's, which may need pyarrow later (keep_pyarrow_out() has no undo).
        self._own_process = True
        super().run_from_argv(argv)

    def handle(self, *args, **options) -> None:
        from project.buildings.analysis import make_strategy, summarize_by_zip

        state = options["state"].strip().upper()
        out, fmt = self._output(options["out"], options["format"], state)
        if (
            fmt == "csv"
            and not options["with_pyarrow"]
            and getattr(self, "_own_process", False)
            and "pandas" not in sys.modules
        ):
            from analysis_lib import keep_pyarrow_out

            keep_pyarrow_out()  # pandas is not imported yet: it will come without pyarrow
        self._check_database(state)
        start = time.perf_counter()
        try:
            strategy = make_strategy(
                options["strategy"], chunk_size=options["chunk_size"], workers=options["workers"]
            )
            summary = summarize_by_zip(
                state,
                strategy=strategy,
                predicate=options["predicate"],
                progress=not options["no_progress"] and options["verbosity"] > 0,
            )
        except (ValueError, TypeError, RuntimeError) as exc:
            raise CommandError(str(exc)) from exc
        seconds = time.perf_counter() - start

        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            summary.to_csv(out)
        else:
            summary.to_parquet(out)
        written = [str(out)]
        if options["map"] is not None:
            written.append(str(self._draw_map(summary, state, options["map"])))

        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        assigned = int(summary["n_buildings"].sum())
        pyarrow = "with" if sys.modules.get("pyarrow") is not None else "without"
        self.stdout.write(
            f"{state}: {len(summary)} ZIPs, {assigned:,} buildings assigned "
            f"({options['predicate']}, {options['strategy']}), {seconds:.1f} s, "
            f"peak {peak_mib:.0f} MiB ({pyarrow} pyarrow) -> {', '.join(written)}"
        )

    def _output(self, out: Path | None, fmt: str | None, state: str) -> tuple[Path, str]:
        """Resolve the output path and format; refuse a format the suffix contradicts."""
        if out is None:
            fmt = fmt or "csv"
            return Path("reports") / f"{state.lower()}_by_zip.{fmt}", fmt
        suffix = out.suffix.lower().lstrip(".")
        if fmt is None:
            fmt = suffix if suffix in FORMATS else "csv"
        elif suffix in FORMATS and suffix != fmt:
            raise CommandError(f"--out {out} has a .{suffix} suffix but --format is {fmt}")
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError as exc:  # kept out of this process, or not installed
                raise CommandError(f"--format parquet needs pyarrow: {exc}") from exc
        return out, fmt

    def _check_database(self, state: str) -> None:
        """Say clearly what is missing: tables, ZIP codes, the state's ZIPs, buildings."""
        from project.buildings.models import Building, ZipCode

        try:
            has_zips = ZipCode.objects.exists()
            has_buildings = Building.objects.exists()
        except DatabaseError as exc:
            raise CommandError(
                f"cannot read the ZIP code and building tables ({exc}); "
                "run `python manage.py migrate` first"
            ) from exc
        if not has_zips:
            raise CommandError(
                "the database has no ZIP codes: generate data with `python manage.py "
                "generate_buildings --states MA` or load it with `python manage.py import_geodata`"
            )
        if not has_buildings:
            raise CommandError(
                "the database has no buildings: generate data with `python manage.py "
                "generate_buildings --states MA` or load it with `python manage.py import_geodata`"
            )
        try:
            state = clean_state("--state", state)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if not ZipCode.objects.filter(state=state).exists():
            present = sorted(ZipCode.objects.order_by().values_list("state", flat=True).distinct())
            raise CommandError(
                f"no ZIP codes for state {state!r} in the database; states present: "
                f"{', '.join(present)}; generate them with `python manage.py generate_buildings "
                f"--states {state} --replace`"
            )

    def _draw_map(self, summary, state: str, path: Path) -> Path:
        """Save a choropleth of buildings per km² to ``path`` (PNG)."""
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")  # a command draws into files, never on screen
        import matplotlib.pyplot as plt

        from project.buildings.analysis import plot_zip_choropleth

        ax = plot_zip_choropleth(
            summary, title=f"{state}: buildings per km² by ZIP code (log scale)"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(ax.figure)
        return path
