"""The building-specific layer over ``analysis_lib``: buildings per ZIP code, and the seed loops.

Everything here is a thin call into the generic per-region functions of ``analysis_lib``
(public names only) with the ``ZipCode``/``Building`` fields filled in:

* :func:`summarize_by_zip` and :func:`iter_buildings_by_zip`: ``summarize_by_region`` and
  ``iter_items_by_region`` with ZIP codes as regions and buildings as items;
* the helpers of notebook 02 (the naive loop of the seed question against the streaming one,
  tracked, profiled and compared).

``python -m project.buildings.analysis {naive,stream} --state MA ...`` runs one of the two
loops on its own, for ``mprof run`` (:func:`mprof_zip_loop`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from analysis_lib import (
    OneStatement,
    PerRegion,
    Sweep,
    iter_items_by_region,
    plot_choropleth,
    report_dir,
    summarize_by_region,
)
from analysis_lib.checks import check_choice, check_positive_int, fail_value

from .states import clean_state

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd
    from django.db.models import QuerySet
    from matplotlib.axes import Axes

    from analysis_lib import MemoryLog, MemoryResult, MprofProfile, Strategy, Tracker

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

Approach = Literal["naive", "stream"]
APPROACHES: tuple[str, ...] = ("naive", "stream")
#: The building columns the streaming loop reads: what the per-ZIP summary needs.
STREAM_FIELDS: tuple[str, ...] = ("id", "footprint_m2", "height_m", "year_built", "use_type")
#: Building columns :func:`iter_buildings_by_zip` returns unless told otherwise.
DEFAULT_FIELDS: tuple[str, ...] = STREAM_FIELDS
#: Strategy names of the command line and the notebooks.
STRATEGIES: tuple[str, ...] = ("sweep", "orm", "database")
PREDICATES: tuple[str, ...] = ("within", "centroid")

#: The per-ZIP summary: output column -> (Building field, how).
BUILDING_AGGREGATES: dict[str, tuple[str, str]] = {
    "footprint_total_m2": ("footprint_m2", "sum"),
    "footprint_mean_m2": ("footprint_m2", "mean"),
    "footprint_median_m2": ("footprint_m2", "median"),
    "height_mean_m": ("height_m", "mean"),
    "height_max_m": ("height_m", "max"),
    "year_built_median": ("year_built", "median"),
    "share": ("use_type", "shares"),
}


# --------------------------------------------------------------------------------------------
# ZIP codes and buildings as regions and items
# --------------------------------------------------------------------------------------------


def resolve_zips(zips: QuerySet | str, argument: str = "zips") -> QuerySet:
    """Return a ZipCode QuerySet ordered by code, from a QuerySet or a two-letter state code."""
    from django.db.models import QuerySet

    from .models import ZipCode

    if isinstance(zips, str):
        state = clean_state(argument, zips)
        qs = ZipCode.objects.filter(state=state)
        if not qs.exists():
            present = sorted(ZipCode.objects.order_by().values_list("state", flat=True).distinct())
            where = f"states present: {', '.join(present)}" if present else "the table is empty"
            raise ValueError(
                f"no ZIP codes for state {state!r} in the database ({where}); generate them with "
                f"`python manage.py generate_buildings --states {state} --replace`"
            )
        return qs.order_by("code")
    if not isinstance(zips, QuerySet) or not issubclass(zips.model, ZipCode):
        raise TypeError(
            f"`{argument}` must be a ZipCode QuerySet or a state code; got {type(zips).__name__}"
        )
    if zips.query.is_sliced:
        # A sliced QuerySet cannot be filtered further; the ZIPs are few, so pin their keys.
        zips = ZipCode.objects.filter(pk__in=list(zips.values_list("pk", flat=True)))
    return zips.order_by("code")


def _resolve_buildings(buildings: QuerySet | None) -> QuerySet:
    """Return the Building QuerySet to analyse (all buildings by default), checked."""
    from django.db.models import QuerySet

    from .models import Building

    if buildings is None:
        return Building.objects.all()
    if not isinstance(buildings, QuerySet) or not issubclass(buildings.model, Building):
        raise TypeError(
            f"`buildings` must be a Building QuerySet or None; got {type(buildings).__name__}"
        )
    if buildings.query.is_sliced:
        raise fail_value("buildings", "an unsliced QuerySet (filter it instead)", buildings)
    return buildings


def make_strategy(
    name: str,
    *,
    chunk_size: int = 10_000,
    workers: int | None = None,
    engine: Literal["auto", "dbapi", "adbc"] = "auto",
) -> Strategy:
    """Return the strategy object behind a strategy name of the command line and the notebooks.

    ``"sweep"``: ``Sweep(chunk_size, workers, engine)``; ``"orm"``: ``PerRegion(chunk_size)``;
    ``"database"``: ``OneStatement()`` (which takes neither option).
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "sweep":
        return Sweep(chunk_size=chunk_size, workers=workers, engine=engine)
    if name == "orm":
        return PerRegion(chunk_size=chunk_size)
    return OneStatement()


def summarize_by_zip(
    zips: QuerySet | str,
    buildings: QuerySet | None = None,
    *,
    strategy: str | Strategy = "sweep",
    predicate: Literal["within", "centroid"] = "within",
    progress: bool = False,
    log: MemoryLog | None = None,
) -> pd.DataFrame:
    """Summarise the buildings of every ZIP code: ``summarize_by_region`` on ZipCode/Building.

    Parameters
    ----------
    zips : QuerySet or str
        ZipCode QuerySet, or a two-letter state code (``"MA"``) for all ZIPs of that state.
    buildings : QuerySet, optional
        Building QuerySet (default: all buildings); filtered, not sliced.
    strategy : str or strategy object
        ``"sweep"`` (default), ``"orm"``, ``"database"`` (see :func:`make_strategy`), or a
        strategy object (``Sweep(chunk_size=...)``, ``DaskSweep(client)``, ...).
    predicate : {"within", "centroid"}
        Which buildings belong to a ZIP (see ``analysis_lib.summarize_by_region``).
    progress : bool
        Show a tqdm progress bar.
    log : MemoryLog, optional
        Measure the steps into this log.

    Returns
    -------
    pandas.DataFrame
        Indexed by ZIP code (``zip_code``, in code order): ``n_buildings``,
        ``footprint_total_m2``, ``footprint_mean_m2``, ``footprint_median_m2``,
        ``height_mean_m``, ``height_max_m``, ``year_built_median``, ``share_<use type>``,
        ``area_km2`` and ``buildings_per_km2``.

    Raises
    ------
    TypeError, ValueError
        For a bad argument (named in the message) or a state without ZIPs.

    Examples
    --------
    >>> summary = summarize_by_zip("MA", progress=True)  # doctest: +SKIP
    """
    if isinstance(strategy, str):
        strategy = make_strategy(strategy)
    zips_qs = resolve_zips(zips)
    summary = summarize_by_region(
        zips_qs,
        _resolve_buildings(buildings),
        key="code",
        aggregates=BUILDING_AGGREGATES,
        predicate=predicate,
        strategy=strategy,
        region_geometry="boundary",
        item_geometry="boundary",
        progress=progress,
        log=log,
    )
    summary = summary.rename(
        columns={"n_items": "n_buildings", "items_per_km2": "buildings_per_km2"}
    )
    summary.index.name = "zip_code"
    return summary


def iter_buildings_by_zip(
    zips: QuerySet | str,
    buildings: QuerySet | None = None,
    fields: Sequence[str] = DEFAULT_FIELDS,
    *,
    predicate: Literal["within", "centroid"] = "within",
    geometry: Literal["shapely", "wkb"] = "shapely",
    chunk_size: int = 20_000,
    progress: bool = False,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(zip_code, DataFrame)`` for each ZIP: ``iter_items_by_region`` on ZipCode/Building.

    Parameters
    ----------
    zips : QuerySet or str
        ZipCode QuerySet, or a two-letter state code.
    buildings : QuerySet, optional
        Building QuerySet (default: all buildings); filtered, not sliced.
    fields : sequence of str
        Building columns, as for ``QuerySet.values()``; the footprint as ``"boundary"``.
    predicate, geometry, chunk_size, progress
        As for ``analysis_lib.iter_items_by_region``.

    Yields
    ------
    tuple of (str, pandas.DataFrame)
        The ZIP code and its buildings.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, before the first query.

    Examples
    --------
    >>> for code, frame in iter_buildings_by_zip("MA", fields=["footprint_m2"]):  # doctest: +SKIP
    ...     print(code, len(frame))
    """
    return iter_items_by_region(
        resolve_zips(zips),
        _resolve_buildings(buildings),
        fields,
        key="code",
        predicate=predicate,
        region_geometry="boundary",
        item_geometry="boundary",
        geometry=geometry,
        chunk_size=chunk_size,
        progress=progress,
    )


def plot_zip_choropleth(
    summary: pd.DataFrame,
    column: str = "buildings_per_km2",
    ax: Axes | None = None,
    **options: Any,
) -> Axes:
    """``analysis_lib.plot_choropleth`` of a per-ZIP summary, the shapes from ``ZipCode``."""
    from .models import ZipCode

    return plot_choropleth(summary, ZipCode.objects.all(), column, ax, key="code", **options)


# --------------------------------------------------------------------------------------------
# The ZIPs and the two loops of the seed question
# --------------------------------------------------------------------------------------------


def select_zips(state: str, max_zips: int | None = None, *, argument: str = "max_zips") -> QuerySet:
    """Return the ZIP codes of a state in code order, the first ``max_zips`` of them.

    Parameters
    ----------
    state : str
        Two-letter state code, such as ``"MA"`` (case-insensitive).
    max_zips : int or None
        Keep the first ``max_zips`` ZIPs by code; ``None`` keeps all.
    argument : str
        The name errors give ``max_zips``: the name the caller knows it by (a notebook
        parameter such as ``naive_zips``).

    Returns
    -------
    QuerySet
        ``ZipCode`` rows ordered by code (sliced when ``max_zips`` is given), as
        :func:`summarize_by_zip` and
        :func:`iter_buildings_by_zip` accept them.

    Raises
    ------
    TypeError
        If ``state`` is not a string.
    ValueError
        If ``max_zips`` is not a positive integer or None, ``state`` is not a
        two-letter code, or the database holds no ZIP of that state (the
        message lists the states it holds).

    Examples
    --------
    >>> zips = select_zips("MA", max_zips=5)  # doctest: +SKIP
    >>> [z.code for z in zips]  # doctest: +SKIP
    ['01001', '01002', '01003', '01005', '01007']
    """
    clean_state("state", state)
    check_positive_int(argument, max_zips, allow_none=True)
    zips = resolve_zips(state, "state")
    return zips if max_zips is None else zips[:max_zips]


def pick_detail_zip(summary: pd.DataFrame, zip_code: str | None = None) -> str:
    """Return the ZIP to look at in detail: the one asked for, or the densest one.

    Parameters
    ----------
    summary : pandas.DataFrame
        A per-ZIP table indexed by ZIP code with a ``buildings_per_km2`` column
        (:func:`summarize_by_zip`).
    zip_code : str or None
        The ZIP wanted; ``None`` picks the ZIP with the most buildings per km²
        (the lowest code on a tie), where footprints are easiest to see.

    Returns
    -------
    str
        A ZIP code of ``summary``'s index.

    Raises
    ------
    ValueError
        If ``summary`` is empty or ``zip_code`` is not one of its ZIPs.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"buildings_per_km2": [3, 9, 9]}, index=["01001", "01002", "01003"])
    >>> pick_detail_zip(table), pick_detail_zip(table, "01003")
    ('01002', '01003')
    """
    if summary.empty:
        raise ValueError("the summary has no ZIP codes: nothing to look at in detail")
    if zip_code is None:
        density = summary["buildings_per_km2"].sort_index(kind="stable")
        return str(density.idxmax())
    zip_code = str(zip_code)
    if zip_code not in summary.index:
        first = ", ".join(map(str, summary.index[:5]))
        raise ValueError(
            f"detail ZIP {zip_code!r} is not one of the {len(summary)} ZIP codes analysed "
            f"({first}{', ...' if len(summary) > 5 else ''})"
        )
    return zip_code


def plot_zip_buildings(
    zip_code: str,
    ax: Axes | None = None,
    *,
    column: str = "use_type",
    predicate: Literal["within", "centroid"] = "within",
    neighbours: bool = True,
) -> Axes:
    """Draw one ZIP code's outline and its building footprints, coloured by ``column``.

    The ZIP's buildings are the ones :func:`iter_buildings_by_zip`
    yields for it (the same ``predicate`` as the summary). With
    ``neighbours=True`` the other buildings whose boxes meet the ZIP's box are
    drawn in grey, so the ones straddling the border (counted in no ZIP under
    ``"within"``) show.

    Parameters
    ----------
    zip_code : str
        The ZIP code.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made when omitted.
    column : str
        Building field that colours the footprints (``"use_type"``, ``"height_m"``, ...).
    predicate : {"within", "centroid"}
        Which buildings belong to the ZIP (see :func:`summarize_by_zip`).
    neighbours : bool
        Also draw the other buildings around, in grey.

    Returns
    -------
    matplotlib.axes.Axes
        The axes; the title gives the ZIP code and its number of buildings.

    Raises
    ------
    ValueError
        If the ZIP code is not in the database, or ``column`` is not a Building field.
    ImportError
        If geopandas is not installed.

    Examples
    --------
    >>> ax = plot_zip_buildings("01002")  # doctest: +SKIP
    >>> ax.figure.savefig("reports/01002.png")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis_lib import read_geodataframe

    from .models import Building, ZipCode

    zips = ZipCode.objects.filter(code=zip_code)
    outline = read_geodataframe(zips, ["code", "boundary"])
    if outline.empty:
        raise ValueError(f"ZIP code {zip_code!r} is not in the database")
    ((_, frame),) = list(
        iter_buildings_by_zip(zips, fields=["id", column, "boundary"], predicate=predicate)
    )
    import geopandas  # after read_geodataframe, which says clearly when geopandas is missing

    inside = geopandas.GeoDataFrame(frame, geometry="boundary", crs=outline.crs)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 8))
    if neighbours:
        boundary = zips.values_list("boundary", flat=True)[0]
        around = read_geodataframe(
            Building.objects.filter(boundary__bboverlaps_indexed=boundary), ["id", "boundary"]
        )
        around = around[~around["id"].isin(inside["id"])]
        if not around.empty:
            around.plot(ax=ax, color="0.75", linewidth=0)
    outline.geometry.boundary.plot(ax=ax, color="black", linewidth=1.0)  # the ZIP's outline
    if not inside.empty:
        inside.plot(
            ax=ax,
            column=column,
            legend=True,
            linewidth=0,
            cmap="tab10" if inside[column].dtype.kind not in "iuf" else "viridis",
        )
    xmin, ymin, xmax, ymax = outline.total_bounds
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect(1.0 / np.cos(np.radians((ymin + ymax) / 2.0)))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"ZIP {zip_code}: {len(inside):,} buildings ({predicate}), by {column}")
    return ax


def naive_zip_lists(zips: QuerySet | str) -> Iterator[tuple[str, list]]:
    """Yield ``(zip_code, list of Building instances)``: the classic loop of ``DESIGN.md``.

    Exactly the loop users write first, kept here so that the notebook, ``%memit``
    and ``mprof`` all run the same code::

        for zip in ZipCode.objects.filter(state="MA").order_by("code").iterator():
            buildings = Building.objects.filter(boundary__within=zip.boundary)
            important = [b for b in buildings.iterator()]

    Every building becomes a full model instance with a GEOS geometry, and the
    stock ``within`` lookup does not use the spatial index on SpatiaLite (a
    full table scan per ZIP). It is the baseline the measurements compare
    :func:`iter_buildings_by_zip` against; do not use it for work.

    Parameters
    ----------
    zips : QuerySet or str
        ZipCode QuerySet (for example from :func:`select_zips`) or a state code.

    Yields
    ------
    tuple of (str, list of Building)
        The ZIP code and its buildings, as model instances.

    Raises
    ------
    ValueError
        If a state code has no ZIPs in the database.
    TypeError
        If ``zips`` is neither a ZipCode QuerySet nor a state code.

    Examples
    --------
    >>> for code, important in naive_zip_lists(select_zips("MA", 3)):  # doctest: +SKIP
    ...     print(code, len(important))
    """
    zips_qs = resolve_zips(zips)  # checked now, not at the first next()
    return _naive_zip_lists(zips_qs)


def _naive_zip_lists(zips: QuerySet) -> Iterator[tuple[str, list]]:
    """Generate what :func:`naive_zip_lists` promises (argument already checked)."""
    from .models import Building

    for zip_code in zips.iterator():
        buildings = Building.objects.filter(boundary__within=zip_code.boundary)
        yield zip_code.code, [b for b in buildings.iterator()]


def zip_loop(
    approach: Approach, zips: QuerySet | str, *, chunk_size: int = 50_000
) -> Iterator[tuple[str, Any]]:
    """Yield ``(zip_code, that ZIP's buildings)`` the naive way or the streaming way.

    Parameters
    ----------
    approach : {"naive", "stream"}
        ``"naive"``: :func:`naive_zip_lists` (a list of model instances per ZIP);
        ``"stream"``: :func:`iter_buildings_by_zip` with the
        columns in ``STREAM_FIELDS`` (a DataFrame per ZIP).
    zips : QuerySet or str
        ZipCode QuerySet or a state code.
    chunk_size : int
        Rows per fetch for ``"stream"``; checked for both approaches.

    Returns
    -------
    Iterator[tuple[str, Any]]
        The ZIP code and its buildings.

    Raises
    ------
    ValueError
        If ``approach`` or ``chunk_size`` is invalid or a state has no ZIPs.

    Examples
    --------
    >>> for code, frame in zip_loop("stream", "MA"):  # doctest: +SKIP
    ...     pass
    """
    check_choice("approach", approach, APPROACHES)
    check_positive_int("chunk_size", chunk_size)
    if approach == "naive":
        return naive_zip_lists(zips)
    return iter_buildings_by_zip(zips, fields=STREAM_FIELDS, chunk_size=chunk_size)


def run_zip_loop(
    approach: Approach, zips: QuerySet | str, *, chunk_size: int = 50_000
) -> tuple[int, int]:
    """Walk the ZIPs with one loop, untracked, keeping each ZIP's buildings until the next.

    What ``%memit`` and ``mprof`` measure: the loop as users write it, with no
    instrument inside (tracemalloc would add its own memory).

    Parameters
    ----------
    approach : {"naive", "stream"}
        Which loop (see :func:`zip_loop`).
    zips : QuerySet or str
        ZipCode QuerySet or a state code.
    chunk_size : int
        Rows per fetch for ``"stream"``.

    Returns
    -------
    tuple of (int, int)
        The number of ZIPs and of buildings seen.

    Raises
    ------
    ValueError
        As :func:`zip_loop`.

    Examples
    --------
    >>> run_zip_loop("stream", select_zips("MA", 3))  # doctest: +SKIP
    (3, 27)
    """
    return _count_zips(zip_loop(approach, zips, chunk_size=chunk_size))


def _count_zips(loop: Iterator[tuple[str, Any]]) -> tuple[int, int]:
    """Walk ``loop``, keeping each ZIP's buildings until the next; return (ZIPs, buildings)."""
    n_zips = n_buildings = 0
    for _code, important in loop:
        n_zips += 1
        n_buildings += len(important)
    return n_zips, n_buildings


@dataclasses.dataclass(frozen=True)
class LoopRun:
    """One per-ZIP loop tracked with :func:`track_zip_loop`.

    Attributes
    ----------
    label : str
        Name of the run (the tracker's label).
    approach : str
        ``"naive"`` or ``"stream"``.
    tracker : Tracker
        RSS and tracemalloc per ZIP (``tracker.frame``, ``tracker.plot(ax)``).
    zips : int
        ZIPs walked.
    buildings : int
        Buildings seen in all.
    seconds : float
        Wall time of the whole loop, queries included.
    """

    label: str
    approach: str
    tracker: Tracker = dataclasses.field(repr=False)
    zips: int
    buildings: int
    seconds: float


def track_zip_loop(
    approach: Approach,
    zips: QuerySet | str,
    *,
    label: str | None = None,
    chunk_size: int = 50_000,
    progress: bool = False,
) -> LoopRun:
    """Walk the ZIPs with one loop under :func:`~analysis_lib.track`: RSS and live heap per ZIP.

    The loop body keeps the ZIP's buildings in a variable until the next ZIP
    replaces them, as the classic loop does, so the tracker's live heap after
    each ZIP is what that ZIP's buildings hold.

    Parameters
    ----------
    approach : {"naive", "stream"}
        Which loop (see :func:`zip_loop`).
    zips : QuerySet or str
        ZipCode QuerySet or a state code.
    label : str, optional
        Name of the run; default ``approach``.
    chunk_size : int
        Rows per fetch for ``"stream"``.
    progress : bool
        Show a tqdm progress bar over the ZIPs.

    Returns
    -------
    LoopRun
        The tracker, the counts and the loop's wall time.

    Raises
    ------
    ValueError
        As :func:`zip_loop`.

    Examples
    --------
    >>> run = track_zip_loop("stream", select_zips("MA", 10))  # doctest: +SKIP
    >>> run.tracker.plot()  # doctest: +SKIP
    """
    import time

    from analysis_lib import track

    label = approach if label is None else str(label)
    loop = zip_loop(approach, zips, chunk_size=chunk_size)
    total = zips.count() if progress and not isinstance(zips, str) else None
    tracker = track(loop, label=label, progress=progress, total=total)
    start = time.perf_counter()
    n_zips, n_buildings = _count_zips(tracker)
    seconds = time.perf_counter() - start
    return LoopRun(label, approach, tracker, n_zips, n_buildings, seconds)


def mprof_zip_loop(
    approach: Approach,
    state: str,
    max_zips: int | None = None,
    *,
    chunk_size: int = 50_000,
    output: str | Path | None = None,
    interval: float = 0.1,
    timeout: float | None = None,
) -> MprofProfile:
    """Run one loop of :func:`zip_loop` in a fresh Python process under ``mprof run``.

    The process sets Django up, imports what the notebook imports (pandas,
    shapely, the loaders) whichever the loop, walks the first ``max_zips`` ZIPs
    of ``state`` keeping each ZIP's buildings until the next ZIP (as the classic
    loop does) and exits; ``mprof`` samples its memory every ``interval``
    seconds. The process inherits the environment, so ``DATABASE_URL`` selects
    the database.

    Parameters
    ----------
    approach : {"naive", "stream"}
        Which loop (see :func:`zip_loop`).
    state : str
        Two-letter state code.
    max_zips : int or None
        The first ``max_zips`` ZIPs by code; ``None``: all of the state.
    chunk_size : int
        Rows per fetch for ``"stream"``.
    output : str, Path or None
        The ``.dat`` file; default ``reports/mprof_<approach>.dat``.
    interval : float
        Seconds between memory samples.
    timeout : float, optional
        Kill the run after this many seconds.

    Returns
    -------
    MprofProfile
        The recording (see :func:`~analysis_lib.read_mprof`).

    Raises
    ------
    ValueError
        If an argument is invalid (checked before anything starts).
    RuntimeError
        If the loop fails in the child process (the message ends with its
        stderr, hence the library's error) or ``timeout`` expires.

    Examples
    --------
    >>> profile = mprof_zip_loop("stream", "MA", 20)  # doctest: +SKIP
    >>> profile.peak_mib  # doctest: +SKIP
    131.5
    """
    from analysis_lib import run_mprof

    check_choice("approach", approach, APPROACHES)
    state = clean_state("state", state)
    check_positive_int("max_zips", max_zips, allow_none=True)
    check_positive_int("chunk_size", chunk_size)
    # mprof's Python mode runs the module under memory-profiler, whose `profile` builtin
    # lets _main mark the loop (analysis_lib.memory.mprof_mark): the .dat gets a FUNC record ".loop"
    cmd = ["project.buildings.analysis", approach, "--state", state]
    cmd += ["--chunk-size", str(chunk_size)]
    if max_zips is not None:
        cmd += ["--max-zips", str(max_zips)]
    if output is None:
        output = report_dir() / f"mprof_{approach}.dat"
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return run_mprof(
        cmd,
        output=output,
        interval=interval,
        include_children=False,
        python=True,
        timeout=timeout,
        env={"PYTHONPATH": pythonpath},
    )


def _main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``python -m project.buildings.analysis``: run one loop, print a line."""
    import time

    parser = argparse.ArgumentParser(
        prog="python -m project.buildings.analysis",
        description="Walk a state's ZIPs with one loop (the target of mprof_zip_loop).",
    )
    parser.add_argument("approach", choices=APPROACHES)
    parser.add_argument("--state", required=True)
    parser.add_argument("--max-zips", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    args = parser.parse_args(argv)

    from analysis_lib import setup_django

    setup_django(os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings"))
    # Both loops start from the same imports (those of the notebook), so that their mprof
    # curves differ by what the loop itself holds, not by which libraries it loaded.
    import pandas  # noqa: F401
    import shapely  # noqa: F401

    from analysis_lib import iter_frames  # noqa: F401
    from analysis_lib.memory import mprof_mark

    start = time.perf_counter()
    zips = select_zips(args.state, args.max_zips)
    with mprof_mark("loop"):  # a span in the mprof recording (plot_mprof_loops)
        n_zips, n_buildings = run_zip_loop(args.approach, zips, chunk_size=args.chunk_size)
    print(
        f"{args.approach}: {n_zips} ZIPs, {n_buildings} buildings, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


# --------------------------------------------------------------------------------------------
# The measured result, as a table and as a sentence
# --------------------------------------------------------------------------------------------

_COMPARISON_COLUMNS = [
    "zips",
    "buildings",
    "seconds",
    "rss_start_mib",
    "rss_max_mib",
    "rss_end_mib",
    "heap_max_mib",
    "heap_end_mib",
    "heap_grows",
    "memit_peak_mib",
    "memit_increment_mib",
    "mprof_peak_mib",
    "mprof_seconds",
]


def _memit_numbers(result: Any) -> tuple[float, float]:
    """Peak and increment (MiB) of a MemoryResult or memory_profiler's MemitResult."""
    if hasattr(result, "peak_mib") and hasattr(result, "increment_mib"):
        return float(result.peak_mib), float(result.increment_mib)
    if hasattr(result, "mem_usage") and hasattr(result, "baseline"):  # %memit -o
        peak = float(max(result.mem_usage))
        return peak, peak - float(result.baseline)
    raise TypeError(
        "memits values must be MemoryResult (analysis_lib.measure) or the result of "
        f"`%memit -o`, got {type(result).__name__}"
    )


def memory_comparison(
    runs: Sequence[LoopRun],
    memits: Mapping[str, MemoryResult | Any] | None = None,
    profiles: Mapping[str, MprofProfile] | None = None,
) -> pd.DataFrame:
    """Put the measurements of several loops side by side, one row per loop.

    Parameters
    ----------
    runs : sequence of LoopRun
        Loops tracked per ZIP with :func:`track_zip_loop`; their labels name the rows.
    memits : mapping of str to MemoryResult or MemitResult, optional
        Peak and increment of a loop, by label, from :func:`~analysis_lib.measure`
        or ``%memit -o``.
    profiles : mapping of str to MprofProfile, optional
        A loop's ``mprof`` recording by label (:func:`mprof_zip_loop`).

    Returns
    -------
    pandas.DataFrame
        Indexed by label (``approach``), runs first, then labels found only in
        ``memits`` or ``profiles``. Columns: ``zips``, ``buildings``,
        ``seconds`` (the loop's wall time), ``rss_start_mib``, ``rss_max_mib``,
        ``rss_end_mib`` (RSS before, highest after a ZIP, after), ``heap_max_mib``,
        ``heap_end_mib`` (tracemalloc's live heap above its start: highest
        within a ZIP, at the end), ``heap_grows`` (:meth:`Tracker.grew`, missing
        under 3 ZIPs), ``memit_peak_mib``, ``memit_increment_mib``,
        ``mprof_peak_mib``, ``mprof_seconds``. A number not measured is missing.

    Raises
    ------
    TypeError
        If a value is of the wrong kind.
    ValueError
        If two runs share a label or a run recorded nothing.

    Examples
    --------
    >>> from analysis_lib import track
    >>> loop = track(range(3), label="demo")
    >>> for _ in loop:
    ...     pass
    >>> run = LoopRun("demo", "stream", loop, zips=3, buildings=0, seconds=0.1)
    >>> int(memory_comparison([run]).loc["demo", "zips"])
    3
    """
    import pandas as pd

    from analysis_lib import MprofProfile

    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        if not isinstance(run, LoopRun):
            raise TypeError(f"runs must be LoopRun objects, got {type(run).__name__}")
        if run.label in rows:
            raise ValueError(f"two runs are labelled {run.label!r}: labels name the rows")
        frame = run.tracker.frame
        if frame.empty:
            raise ValueError(f"run {run.label!r} recorded nothing: its loop never ran")
        heap0 = frame["heap_current_mib"].iloc[0]
        rows[run.label] = {
            "zips": run.zips,
            "buildings": run.buildings,
            "seconds": run.seconds,
            "rss_start_mib": float(frame["rss_mib"].iloc[0]),
            "rss_max_mib": float(frame["rss_mib"].max()),
            "rss_end_mib": float(frame["rss_mib"].iloc[-1]),
            "heap_max_mib": float(frame["heap_peak_mib"].max() - heap0),
            "heap_end_mib": float(frame["heap_current_mib"].iloc[-1] - heap0),
            "heap_grows": run.tracker.grew() if len(frame) - 1 >= 3 else pd.NA,
        }
    for name, result in (memits or {}).items():
        peak, increment = _memit_numbers(result)
        rows.setdefault(name, {}).update(memit_peak_mib=peak, memit_increment_mib=increment)
    for name, profile in (profiles or {}).items():
        if not isinstance(profile, MprofProfile):
            raise TypeError(
                f"profiles[{name!r}] must be an MprofProfile, got {type(profile).__name__}"
            )
        rows.setdefault(name, {}).update(
            mprof_peak_mib=profile.peak_mib, mprof_seconds=profile.duration_s
        )
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=_COMPARISON_COLUMNS)
    table.index.name = "approach"
    float_columns = [c for c in _COMPARISON_COLUMNS if c not in ("zips", "buildings", "heap_grows")]
    return table.astype(
        {"zips": "Int64", "buildings": "Int64", "heap_grows": "boolean"}
        | dict.fromkeys(float_columns, "float64")
    )


def _num(table: pd.DataFrame, name: str, column: str) -> float:
    """One cell as a float, NaN when missing."""
    import pandas as pd

    raw = table.at[name, column]
    return math.nan if pd.isna(raw) else float(raw)


def _mib(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f} MiB"


def _times(numerator: float, denominator: float) -> str:
    """``"12.3x"``, or ``"n/a"`` when a number is missing or the denominator is not positive."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:,.1f}x"


def _bullet(table: pd.DataFrame, name: str) -> str:
    """One Markdown bullet with what was measured for one loop."""
    import pandas as pd

    def num(column: str) -> float:
        return _num(table, name, column)

    parts = []
    if not math.isnan(num("zips")):
        text = f"{int(num('zips')):,} ZIPs"
        if not math.isnan(num("buildings")):
            text += f" ({int(num('buildings')):,} buildings)"
        if not math.isnan(num("seconds")):
            text += f" in {num('seconds'):,.1f} s"
            if num("zips") > 0:
                text += f" ({num('seconds') / num('zips'):.2f} s per ZIP)"
        parts.append(text)
    if not math.isnan(num("rss_start_mib")):
        parts.append(
            f"RSS {_mib(num('rss_start_mib'))} before, {_mib(num('rss_max_mib'))} at most, "
            f"{_mib(num('rss_end_mib'))} after"
        )
        grows = table.at[name, "heap_grows"]
        trend = (
            "too few ZIPs to judge its trend"
            if pd.isna(grows)
            else ("it keeps growing: a leak" if bool(grows) else "it does not keep growing")
        )
        parts.append(
            f"live heap (tracemalloc) at most {_mib(num('heap_max_mib'))} above its start and "
            f"{_mib(num('heap_end_mib'))} at the end ({trend})"
        )
    if not math.isnan(num("memit_peak_mib")):
        parts.append(
            f"`%memit` peak {_mib(num('memit_peak_mib'))}, "
            f"increment {_mib(num('memit_increment_mib'))}"
        )
    if not math.isnan(num("mprof_peak_mib")):
        parts.append(f"mprof peak {_mib(num('mprof_peak_mib'))} over {num('mprof_seconds'):,.1f} s")
    return f"- `{name}`: " + "; ".join(parts or ["nothing measured"]) + "."


def closing_summary(comparison: pd.DataFrame, baseline: str, candidate: str) -> str:
    """State what the measurements of the loops show, in Markdown, from their numbers only.

    Parameters
    ----------
    comparison : pandas.DataFrame
        A table from :func:`memory_comparison` (or read back from its CSV with
        ``index_col="approach"``).
    baseline : str
        The row of the loop to compare against (the naive loop).
    candidate : str
        The row of the loop being compared (``iter_buildings_by_zip`` on the same ZIPs).

    Returns
    -------
    str
        Markdown: one bullet per row with its time, RSS, live heap, ``%memit``
        and ``mprof`` numbers; then what the baseline's RSS and live heap say
        (a leak only if the live heap keeps growing); then how many times less
        memory and time the candidate needed, as baseline ÷ candidate ratios
        (``n/a`` where a number is missing).

    Raises
    ------
    KeyError
        If ``baseline`` or ``candidate`` is not a row of ``comparison``.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame(
    ...     {"zips": [10, 10], "seconds": [20.0, 0.5], "memit_increment_mib": [300.0, 10.0]},
    ...     index=pd.Index(["naive", "stream"], name="approach"),
    ... )
    >>> closing_summary(table, "naive", "stream").splitlines()[-1].split("): ")[1]
    '`%memit` increment 30.0x, live heap at its highest n/a, time 40.0x.'
    """
    for name in (baseline, candidate):
        if name not in comparison.index:
            raise KeyError(f"{name!r} is not a row of the comparison: {list(comparison.index)}")
    table = comparison.reindex(columns=_COMPARISON_COLUMNS)

    def num(name: str, column: str) -> float:
        return _num(table, name, column)

    lines = ["**Measured in this run:**", ""]
    lines += [_bullet(table, name) for name in table.index]
    lines.append("")
    rise = num(baseline, "rss_max_mib") - num(baseline, "rss_start_mib")
    if not math.isnan(rise):
        import pandas as pd

        grows = table.at[baseline, "heap_grows"]
        if rise < 1.0:
            verdict = "RSS hardly moved, so there is nothing to explain"
        elif pd.isna(grows):
            verdict = "too few ZIPs were tracked to tell a leak from allocator behaviour"
        elif bool(grows):
            verdict = "the live heap keeps growing too: that is a real leak"
        else:
            verdict = (
                "the live heap does not keep growing, so the RSS that stays up is the "
                "allocator's high-water mark, not a leak"
            )
        lines.append(
            f"`{baseline}`: RSS rose {_mib(rise)} above its start and ended "
            f"{_mib(num(baseline, 'rss_end_mib') - num(baseline, 'rss_start_mib'))} above it, "
            f"while the live heap ended {_mib(num(baseline, 'heap_end_mib'))} above its start; "
            f"{verdict}."
        )
        lines.append("")
    memit = _times(num(baseline, "memit_increment_mib"), num(candidate, "memit_increment_mib"))
    heap = _times(num(baseline, "heap_max_mib"), num(candidate, "heap_max_mib"))
    speed = _times(num(baseline, "seconds"), num(candidate, "seconds"))
    lines.append(
        f"`{baseline}` ÷ `{candidate}` on the same ZIPs (above 1: `{candidate}` needs less): "
        f"`%memit` increment {memit}, live heap at its highest {heap}, time {speed}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_main())
