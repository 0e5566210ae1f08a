"""Which spatial database the suite runs on, and skip markers for backend-specific tests.

The suite runs twice in CI: on SpatiaLite (``make test``, ``DATABASE_URL`` unset) and on PostGIS
(``make test-postgis``, which starts a throwaway cluster with ``scripts/postgis.sh run``). Most
tests must pass on both; a test that only makes sense on one of them says so::

    from tests.backends import requires_postgis

    @requires_postgis
    @pytest.mark.django_db
    def test_gist_index_is_used(): ...
"""

from __future__ import annotations

from typing import Literal

import pytest
from django.conf import settings

ENGINE: str = settings.DATABASES["default"]["ENGINE"]
BACKEND: Literal["spatialite", "postgis"] = ENGINE.rsplit(".", 1)[-1]  # type: ignore[assignment]
IS_POSTGIS = BACKEND == "postgis"
IS_SPATIALITE = BACKEND == "spatialite"

requires_postgis = pytest.mark.skipif(
    not IS_POSTGIS,
    reason=f"needs PostGIS, the suite runs on {BACKEND} (run it with: make test-postgis)",
)
requires_spatialite = pytest.mark.skipif(
    not IS_SPATIALITE,
    reason=f"needs SpatiaLite, the suite runs on {BACKEND} (unset DATABASE_URL)",
)
