"""One SQL statement: the database joins regions to items and computes every aggregate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .core import COUNT, Spec, Strategy

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from django.db.models import QuerySet

__all__ = ["OneStatement"]


def _subquery(queryset: QuerySet) -> tuple[str, tuple]:
    """Return SQL and parameters of ``queryset``'s primary keys, for ``pk IN (...)``."""
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    return sql, tuple(params)


class OneStatement(Strategy):
    """One SQL statement: regions joined to items through the spatial index, aggregated there.

    On SpatiaLite the join goes through the items' R*Tree with a ``CROSS JOIN`` (SQLite's
    planner picks a disastrous plan for a plain ``JOIN``), the containment box widened by the
    float32 margin of :mod:`analysis_lib.lookups`; on PostGIS ``ST_Within`` uses the GiST
    index. Exact medians come from window functions. A text field without choices costs one
    more query first, listing its distinct values. No options.

    Raises
    ------
    RuntimeError
        On SpatiaLite when the items' spatial index is not enabled.

    Examples
    --------
    >>> from analysis_lib import OneStatement
    >>> OneStatement()
    OneStatement()
    """

    def __repr__(self) -> str:
        return "OneStatement()"

    def describe(self) -> str:
        """Label for progress bars and memory logs."""
        return "one statement"

    def run(
        self,
        regions: QuerySet,
        region_frame: pd.DataFrame,
        items: QuerySet,
        spec: Spec,
        progress: bool,
    ) -> Mapping[str, Any]:
        """Run the statement; return raw aggregates in region order."""
        import numpy as np
        import pandas as pd
        from django.db import connections

        from ..lookups import rtree_box_sql, spatialite_index_table

        connection = connections[items.db]
        ops = connection.ops
        qn = ops.quote_name
        item_opts, region_opts = items.model._meta, regions.model._meta
        i_table, r_table = qn(item_opts.db_table), qn(region_opts.db_table)
        item_field = item_opts.get_field(spec.item_geometry)
        i_geom = qn(item_field.column)
        i_pk = qn(item_opts.pk.column)
        r_pk = qn(region_opts.pk.column)
        r_key = r_pk if spec.key == "pk" else qn(region_opts.get_field(spec.key).column)
        r_geom = f"rc.{qn(region_opts.get_field(spec.region_geometry).column)}"
        srid = int(spec.item_srid)
        spatialite = bool(getattr(ops, "spatialite", False))
        if not spatialite and not getattr(ops, "postgis", False):  # pragma: no cover
            raise NotImplementedError(f"OneStatement does not support {connection.vendor}")
        if spec.region_srid != spec.item_srid:
            r_geom = f"{'Transform' if spatialite else 'ST_Transform'}({r_geom}, {srid})"

        regions_sql, regions_params = _subquery(regions)
        params: list[Any] = list(regions_params)
        item_filter, item_params = "", ()
        if items.query.has_filters():
            sub_sql, item_params = _subquery(items)
            item_filter = f"AND b.{i_pk} IN ({sub_sql})"
        columns = [qn(item_opts.get_field(f.name).column) for f in spec.fields]
        values = "".join(f", b.{col} AS v{i}" for i, col in enumerate(columns))

        if spatialite:
            index = spatialite_index_table(connection, item_field)
            if index is None:
                raise RuntimeError(
                    f"OneStatement() needs the SpatiaLite spatial index on "
                    f"{item_opts.db_table}.{item_field.column}, which is not enabled: run "
                    f"SELECT CreateSpatialIndex('{item_opts.db_table}', '{item_field.column}') "
                    "(or use Sweep())"
                )
            zb = "zb"
            regions_cte = (
                f"z AS (SELECT zc.code AS code, zc.zb AS zb, MbrMinX(zc.zb) AS x0, "  # noqa: S608 (identifiers only)
                "MbrMaxX(zc.zb) AS x1, MbrMinY(zc.zb) AS y0, MbrMaxY(zc.zb) AS y1 FROM "
                f"(SELECT rc.{r_key} AS code, {r_geom} AS {zb} FROM {r_table} AS rc "
                f"WHERE rc.{r_pk} IN ({regions_sql})) AS zc)"
            )
            join = f"FROM z CROSS JOIN {qn(index)} AS r CROSS JOIN {i_table} AS b"
            if spec.predicate == "within":
                box = rtree_box_sql("contained", "z.x0", "z.x1", "z.y0", "z.y1", rtree="r.")
                pairs = (
                    f"pairs AS (SELECT z.code AS code{values} {join} WHERE {box} "  # noqa: S608 (identifiers only)
                    f"AND b.ROWID = r.pkid AND Within(b.{i_geom}, z.zb) > 0 {item_filter})"
                )
            else:
                box = rtree_box_sql("overlaps", "z.x0", "z.x1", "z.y0", "z.y1", rtree="r.")
                pairs = (
                    f"assign AS (SELECT r.pkid AS bid, MIN(z.code) AS code {join} WHERE {box} "  # noqa: S608 (identifiers only)
                    f"AND b.ROWID = r.pkid AND Intersects(Centroid(b.{i_geom}), z.zb) > 0 "
                    f"{item_filter} GROUP BY r.pkid), "
                    f"pairs AS (SELECT a.code AS code{values} "
                    f"FROM assign AS a CROSS JOIN {i_table} AS b WHERE b.ROWID = a.bid)"
                )
        else:
            regions_cte = (
                f"z AS (SELECT rc.{r_key} AS code, {r_geom} AS zb FROM {r_table} AS rc "  # noqa: S608 (identifiers only)
                f"WHERE rc.{r_pk} IN ({regions_sql}))"
            )
            if spec.predicate == "within":
                pairs = (
                    f"pairs AS (SELECT z.code AS code{values} FROM z JOIN {i_table} AS b "  # noqa: S608 (identifiers only)
                    f"ON ST_Within(b.{i_geom}, z.zb) {item_filter})"
                )
            else:
                pairs = (
                    f"assign AS (SELECT b.{i_pk} AS bid, MIN(z.code) AS code "  # noqa: S608 (identifiers only)
                    f"FROM z JOIN {i_table} AS b ON b.{i_geom} && z.zb "
                    f"AND ST_Intersects(ST_Centroid(b.{i_geom}), z.zb) "
                    f"{item_filter} GROUP BY b.{i_pk}), "
                    f"pairs AS (SELECT a.code AS code{values} "
                    f"FROM assign AS a JOIN {i_table} AS b ON b.{i_pk} = a.bid)"
                )
        params.extend(item_params)

        window: list[str] = []
        select: list[str] = [f"COUNT(*) AS {COUNT}"]
        category_values: dict[str, list[Any]] = {}
        select_params: list[Any] = []
        for i, field in enumerate(spec.fields):
            v = f"v{i}"
            if field.kind == "category":
                found = field.categories
                if found is None:  # free text: list its values first
                    found = sorted(
                        items.order_by()
                        .exclude(**{f"{field.name}__isnull": True})
                        .values_list(field.name, flat=True)
                        .distinct()
                    )
                category_values[field.name] = list(found)
                for j, value in enumerate(found):
                    select.append(f"SUM(CASE WHEN {v} = %s THEN 1 ELSE 0 END) AS c{i}_{j}")
                    select_params.append(value)
                continue
            select += [f"SUM({v}) AS s{i}", f"COUNT({v}) AS n{i}"]
            select += [f"MIN({v}) AS lo{i}", f"MAX({v}) AS hi{i}"]
            if "median" in spec.hows(field.name):
                # The middle row numbers (one when the count is odd, two to average when even);
                # NULLs get their own partition.
                window += [
                    f"COUNT({v}) OVER (PARTITION BY code) AS nv{i}",
                    f"ROW_NUMBER() OVER (PARTITION BY code, ({v} IS NULL) ORDER BY {v}) AS rn{i}",
                ]
                select.append(
                    f"AVG(CASE WHEN {v} IS NOT NULL AND rn{i} IN ((nv{i} + 1) / 2, "
                    f"(nv{i} + 2) / 2) THEN CAST({v} AS DOUBLE PRECISION) END) AS md{i}"
                )
        ranked = ", ".join(["*", *window])
        sql = (
            f"WITH {regions_cte}, {pairs}, ranked AS (SELECT {ranked} FROM pairs) "  # noqa: S608 (identifiers only)
            f"SELECT code, {', '.join(select)} FROM ranked GROUP BY code"
        )
        params.extend(select_params)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)  # identifiers come from the models; values are params
            names = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        table = pd.DataFrame.from_records(rows, columns=names).set_index("code")
        table = table.reindex(region_frame.index)

        def col(name: str, fill: float = np.nan) -> np.ndarray:
            return table[name].astype(float).fillna(fill).to_numpy()

        raw: dict[str, Any] = {COUNT: col(COUNT, 0).astype(np.int64)}
        for i, field in enumerate(spec.fields):
            if field.kind == "category":
                raw[f"{field.name}:values"] = {
                    value: col(f"c{i}_{j}", 0).astype(np.int64)
                    for j, value in enumerate(category_values[field.name])
                }
                continue
            raw[f"{field.name}:sum"] = col(f"s{i}", 0.0)
            raw[f"{field.name}:n"] = col(f"n{i}", 0).astype(np.int64)
            raw[f"{field.name}:min"] = col(f"lo{i}")
            raw[f"{field.name}:max"] = col(f"hi{i}")
            if f"md{i}" in table:
                raw[f"{field.name}:median"] = col(f"md{i}")
        return raw
