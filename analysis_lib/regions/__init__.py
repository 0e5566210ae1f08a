"""Per-region analysis of any GeoDjango models: one core, four strategies.

Module map (imports point down only)::

    api          summarize_by_region, iter_items_by_region, plot_choropleth
    sweep        Sweep: one streaming pass (the default), and the engine fallback
    per_region   PerRegion: one indexed query per region (also feeds iter_items_by_region)
    sql          OneStatement: one SQL statement
    dask         DaskSweep: the sweep on a Dask cluster
    _chunks      the sweep's reads as numpy chunks (DB-API, ADBC with pyarrow, iter_frames)
    _nano        the ADBC read through nanoarrow, where pyarrow is kept out
    _blobs       Chunk, category codes, SpatiaLite blob headers and WKB, the read-ahead thread
    core         resolve the request, load the regions, match a chunk, totals and partials, finish
    _medians     MedianStore: exact per-region medians, mergeable and picklable

The public names are exported by :mod:`analysis_lib`.
"""
