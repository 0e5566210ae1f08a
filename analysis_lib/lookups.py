"""Index-aware spatial lookups for GeoDjango: ``within_indexed`` and ``bboverlaps_indexed``.

Why they exist
--------------
GeoDjango's SpatiaLite backend never uses the spatial index.
``Building.objects.filter(boundary__within=zip.boundary)`` compiles to
``WHERE Within("boundary", GeomFromText(%s, 4326)) > 0`` and SQLite evaluates ``Within`` on
every row: ``EXPLAIN QUERY PLAN`` says ``SCAN`` (the same for ``intersects``, ``coveredby``,
``bboverlaps`` and ``contained``). SpatiaLite keeps its index in a separate R*Tree table,
``idx_<table>_<column>(pkid, xmin, xmax, ymin, ymax)``, which a query has to name
explicitly. The lookups here add that prefilter::

    "building"."ROWID" IN (SELECT pkid FROM "idx_buildings_building_boundary"
                           WHERE xmin >= ... AND xmax <= ... AND ymin >= ... AND ymax <= ...)
    AND Within("building"."boundary", GeomFromText(%s, 4326)) > 0

and keep the stock predicate as the exact test, so they return exactly the rows of the stock
lookup (``tests/test_lookups.py`` checks it), only through the index. On PostGIS they are the stock
lookups: ``ST_Within`` and ``&&`` already use the GiST index there.

The classic per-region loop, fixed::

    for hood in Neighborhood.objects.iterator():
        rows = Tree.objects.filter(location__within_indexed=hood.boundary).values_list(
            "species", "planted"
        )

They are registered on every ``GeometryField`` by the ``analysis_lib`` app's ``ready()``: add
``"analysis_lib"`` to ``INSTALLED_APPS`` (see :func:`register`).

Two details matter for exactness:

* the R*Tree stores single-precision boxes, rounded outwards. A building whose box lies inside
  the query box can therefore be stored with a box that pokes out by up to one float32 step
  (about 1e-5 degree, a metre, at longitude 71), and a plain ``xmin >= ...`` test would drop it.
  The containment test widens the query box by a relative 2**-22 (twice a float32 step), which
  keeps the prefilter a superset of the exact answer; the overlap test needs no widening.
* the query box is computed by SpatiaLite from the right-hand geometry after GeoDjango's usual
  ``Transform`` to the field's SRID, so a geometry in another SRID is boxed in the right one.

The prefilter is used only when SpatiaLite reports the spatial index as enabled
(``geometry_columns.spatial_index_enabled = 1``): a disabled index (``DisableSpatialIndex``, as
bulk loaders do) may be stale, and then the lookup falls back to the stock full scan.
"""

from __future__ import annotations

from django.contrib.gis.db.models import GeometryField
from django.contrib.gis.db.models.lookups import BBOverlapsLookup, WithinLookup
from django.db.models.expressions import Col

# Relative widening of the query box for the containment prefilter: the R*Tree rounds each stored
# coordinate outwards to float32 (relative error below 2**-23), so 2**-22 is a safe margin.
FLOAT32_MARGIN = 2.0**-22


class IndexedLookupMixin:
    """Add SpatiaLite's R*Tree prefilter in front of a stock GeoDjango spatial lookup."""

    #: name of the stock lookup that gives the semantics (and the exact test).
    stock_lookup: str
    #: "contained": the row's box must lie inside the value's box; "overlaps": boxes must meet.
    box_test: str

    def get_rhs_op(self, connection, rhs):
        """Use the stock lookup's operator (``Within``, ``MbrOverlaps``, ``ST_Within``, ...)."""
        return connection.ops.gis_operators[self.stock_lookup]

    def as_sql(self, compiler, connection):
        """Compile the stock lookup, and on SpatiaLite put the R*Tree prefilter in front of it."""
        sql, params = super().as_sql(compiler, connection)
        if not getattr(connection.ops, "spatialite", False):
            return sql, params
        # Only a plain column has an R*Tree (not, say, a function of one).
        if not isinstance(self.lhs, Col):
            return sql, params
        index_table = spatialite_index_table(connection, self.lhs.target)
        if index_table is None:
            return sql, params
        rhs_sql, rhs_params = self.process_rhs(compiler, connection)
        prefilter, prefilter_params = self.prefilter_sql(
            connection, index_table, rhs_sql, rhs_params
        )
        # Django 6.1 renamed quote_name_unless_alias() to quote_name() (the old name warns).
        quote = getattr(compiler, "quote_name", None) or compiler.quote_name_unless_alias
        rowid = f"{quote(self.lhs.alias)}.ROWID"
        return (
            f"({rowid} IN ({prefilter}) AND {sql})",
            (*prefilter_params, *params),
        )

    def prefilter_sql(self, connection, index_table, rhs_sql, rhs_params):
        """Return the ``SELECT pkid FROM idx_...`` subquery and its parameters."""
        bounds = [f"{func}({rhs_sql})" for func in ("MbrMinX", "MbrMaxX", "MbrMinY", "MbrMaxY")]
        where = rtree_box_sql(self.box_test, *bounds)
        # Every bound is named twice in a "contained" test (once in its margin), once otherwise.
        params = list(rhs_params) * (8 if self.box_test == "contained" else 4)
        table = connection.ops.quote_name(index_table)
        # Only identifiers from the model and fixed SQL are interpolated; values stay parameters.
        return f"SELECT pkid FROM {table} WHERE {where}", params  # noqa: S608


def rtree_box_sql(
    box_test: str, xmin: str, xmax: str, ymin: str, ymax: str, rtree: str = ""
) -> str:
    """Return the R*Tree condition of a box test against the box given as four SQL expressions.

    ``"contained"``: the stored box lies inside the query box widened outwards by
    :data:`FLOAT32_MARGIN` (see the module docstring); ``"overlaps"``: the boxes meet (stored
    boxes contain the true boxes, so no margin is needed). ``rtree`` prefixes the R*Tree's
    columns (``"r."``). The one place this SQL is written: the lookups and the one-statement
    strategy use it.
    """
    if box_test == "contained":
        margin = repr(FLOAT32_MARGIN)
        conditions = [
            f"{rtree}xmin >= {xmin} - ABS({xmin}) * {margin}",
            f"{rtree}xmax <= {xmax} + ABS({xmax}) * {margin}",
            f"{rtree}ymin >= {ymin} - ABS({ymin}) * {margin}",
            f"{rtree}ymax <= {ymax} + ABS({ymax}) * {margin}",
        ]
    else:
        conditions = [
            f"{rtree}xmin <= {xmax}",
            f"{rtree}xmax >= {xmin}",
            f"{rtree}ymin <= {ymax}",
            f"{rtree}ymax >= {ymin}",
        ]
    return " AND ".join(conditions)


def spatialite_index_table(connection, field) -> str | None:
    """Name of the enabled SpatiaLite R*Tree of a geometry field, or None.

    None when the field was declared without ``spatial_index``, or when SpatiaLite does not list
    the index as enabled for that table and column (``geometry_columns.spatial_index_enabled``).
    """
    if not getattr(field, "spatial_index", False):
        return None
    table = field.model._meta.db_table
    column = field.column
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT spatial_index_enabled FROM geometry_columns "
            "WHERE lower(f_table_name) = lower(%s) AND lower(f_geometry_column) = lower(%s)",
            [table, column],
        )
        row = cursor.fetchone()
    # 1: an R*Tree kept in step by triggers; 0: none; 2: the obsolete MBR cache.
    if row is None or row[0] != 1:
        return None
    return f"idx_{table}_{column}"


class WithinIndexedLookup(IndexedLookupMixin, WithinLookup):
    """``field__within_indexed=geom``: the rows of ``field__within=geom``, found through the index.

    A row matches when its geometry lies within ``geom`` (GEOS/SpatiaLite ``Within``: no point
    outside and at least one interior point shared, so a building straddling the border does not
    match and one sharing an edge with the border from inside does).
    """

    lookup_name = "within_indexed"
    stock_lookup = "within"
    box_test = "contained"


class BBOverlapsIndexedLookup(IndexedLookupMixin, BBOverlapsLookup):
    """``field__bboverlaps_indexed=geom``: the rows of ``field__bboverlaps=geom``, via the index.

    A row matches when its bounding box meets ``geom``'s bounding box (touching counts).
    """

    lookup_name = "bboverlaps_indexed"
    stock_lookup = "bboverlaps"
    box_test = "overlaps"


def register() -> None:
    """Register ``within_indexed`` and ``bboverlaps_indexed`` on GeometryField (idempotent)."""
    GeometryField.register_lookup(WithinIndexedLookup)
    GeometryField.register_lookup(BBOverlapsIndexedLookup)
