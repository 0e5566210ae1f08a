"""Seeded data in the test-only ``reuse_app``: neighbourhoods (EPSG:26986), trees (EPSG:4326) and
parcels (EPSG:26986), with the awkward cases on purpose.

Neighbourhoods, in State Plane metres near Boston:

* ``alder``: a 1 km square with a square hole; ``birch``: the hole, as an island;
* ``cedar``: the square east of ``alder`` (a shared border);
* ``dogwood``: a MultiPolygon, the strip north of both plus a detached square far east;
* ``elm``: far away, with nothing in it.

Trees are points in WGS 84 (the other SRID) spread over the squares and around, with a
nullable ``planted`` year and height; parcels are rectangles in EPSG:26986, some straddling a
border, some with a centroid exactly on the shared border of ``alder`` and ``cedar``.
"""

from __future__ import annotations

import numpy as np

X0, Y0 = 230_000.0, 900_000.0
HOLE = (X0 + 300, Y0 + 300, X0 + 700, Y0 + 700)
DETACHED = (X0 + 5_000, Y0, X0 + 5_500, Y0 + 500)
FAR = (X0 + 10_000, Y0 + 10_000, X0 + 10_500, Y0 + 10_500)
SPECIES = ("oak", "maple", "elm")


def _box(x0, y0, x1, y1):
    from django.contrib.gis.geos import Polygon

    return Polygon.from_bbox((x0, y0, x1, y1))


def make_neighborhoods() -> dict[str, object]:
    from django.contrib.gis.geos import MultiPolygon, Polygon
    from reuse_app.models import Neighborhood

    shell = ((X0, Y0), (X0 + 1000, Y0), (X0 + 1000, Y0 + 1000), (X0, Y0 + 1000), (X0, Y0))
    hx0, hy0, hx1, hy1 = HOLE
    hole = ((hx0, hy0), (hx0, hy1), (hx1, hy1), (hx1, hy0), (hx0, hy0))
    shapes = {
        "alder": MultiPolygon(Polygon(shell, hole)),
        "birch": MultiPolygon(_box(*HOLE)),
        "cedar": MultiPolygon(_box(X0 + 1000, Y0, X0 + 2000, Y0 + 1000)),
        "dogwood": MultiPolygon(_box(X0, Y0 + 1000, X0 + 2000, Y0 + 1500), _box(*DETACHED)),
        "elm": MultiPolygon(_box(*FAR)),
    }
    out = {}
    for name, shape in shapes.items():
        shape.srid = 26986
        out[name] = Neighborhood.objects.create(name=name, boundary=shape)
    return out


def make_trees(n: int = 400, seed: int = 7) -> None:
    from django.contrib.gis.geos import Point
    from pyproj import Transformer
    from reuse_app.models import Tree

    rng = np.random.default_rng(seed)
    x = rng.uniform(X0 - 200, X0 + 2200, n)
    y = rng.uniform(Y0 - 200, Y0 + 1700, n)
    # a few in the detached part of dogwood
    x[:15] = rng.uniform(DETACHED[0] + 10, DETACHED[2] - 10, 15)
    y[:15] = rng.uniform(DETACHED[1] + 10, DETACHED[3] - 10, 15)
    lon, lat = Transformer.from_crs(26986, 4326, always_xy=True).transform(x, y)
    trees = []
    for i in range(n):
        trees.append(
            Tree(
                location=Point(float(lon[i]), float(lat[i]), srid=4326),
                species=SPECIES[int(rng.integers(3))],
                planted=None if rng.random() < 0.2 else int(rng.integers(1950, 2024)),
                height_m=None if rng.random() < 0.1 else float(np.round(rng.uniform(2, 30), 2)),
            )
        )
    Tree.objects.bulk_create(trees)


def make_parcels(n: int = 150, seed: int = 11) -> None:
    from django.contrib.gis.geos import Point
    from reuse_app.models import Parcel

    rng = np.random.default_rng(seed)
    parcels = []
    for _ in range(n):
        cx, cy = rng.uniform(X0 - 100, X0 + 2100), rng.uniform(Y0 - 100, Y0 + 1600)
        w, h = rng.uniform(10, 120), rng.uniform(10, 120)
        parcels.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    # centroids exactly on the alder/cedar border (x = X0 + 1000): two neighbourhoods hold them
    parcels += [
        (X0 + 980, Y0 + 100, X0 + 1020, Y0 + 140),
        (X0 + 990, Y0 + 800, X0 + 1010, Y0 + 820),
    ]
    # sharing an edge with a border from inside (within), and inside the hole (birch)
    parcels += [(X0 + 900, Y0 + 50, X0 + 1000, Y0 + 90), (X0 + 400, Y0 + 400, X0 + 450, Y0 + 450)]
    rows = []
    for i, bbox in enumerate(parcels):
        shape = _box(*bbox)
        shape.srid = 26986
        rows.append(
            Parcel(
                shape=shape,
                land_use=("home", "shop", "park", "farm")[i % 4] if i % 9 else "yard",
                value=float(np.round(rng.uniform(1e4, 1e6), 2)),
                centre=Point((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, srid=26986),
            )
        )
    Parcel.objects.bulk_create(rows)
