"""The wheel ships the library alone, and works installed in a new Django project.

Slow: builds the wheel, makes a fresh virtual environment outside the checkout (no system
site-packages), installs the wheel there with the dependencies it declares (held to the versions
this test run uses, so they come from pip's cache; with the ``spatialite`` extra where this
Python's sqlite3 cannot load SpatiaLite), runs ``django-admin startproject``, adds the app and a
small model, migrates on SpatiaLite through the library's backend, inserts rows and summarises
them by region.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _can_load_extensions() -> bool:
    import sqlite3

    return hasattr(sqlite3.connect(":memory:"), "enable_load_extension")


MODELS = """
from django.contrib.gis.db import models


class District(models.Model):
    name = models.CharField(max_length=20, unique=True)
    area = models.PolygonField(srid=4326)


class Lamp(models.Model):
    spot = models.PointField(srid=4326)
    watts = models.FloatField()
    kind = models.CharField(max_length=10, choices=[("led", "LED"), ("sodium", "Sodium")])
"""

SCRIPT = """
import json, os, sys
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.gis.geos import Point, Polygon
from lamps.models import District, Lamp
District.objects.create(name="west", area=Polygon.from_bbox((0, 0, 1, 1)))
District.objects.create(name="east", area=Polygon.from_bbox((1, 0, 2, 1)))
for x, y, watts, kind in [(0.2, 0.2, 10, "led"), (0.7, 0.5, 30, "sodium"),
                          (0.5, 0.9, 20, "led"), (1.5, 0.5, 40, "led"), (3, 3, 99, "led")]:
    Lamp.objects.create(spot=Point(x, y, srid=4326), watts=watts, kind=kind)
from analysis_lib import OneStatement, PerRegion, Sweep, summarize_by_region
import analysis_lib
out = {"where": analysis_lib.__file__,
       "project": [m for m in sys.modules if m.split(".")[0] == "project"]}
for strategy in (Sweep(), PerRegion(), OneStatement()):
    summary = summarize_by_region(
        District.objects.all(), Lamp.objects.all(), key="name",
        aggregates={"watts": ("watts", "median"), "kind": ("kind", "shares")},
        strategy=strategy,
    )
    out[repr(strategy)] = summary[["n_items", "watts", "kind_led"]].to_dict("index")
print(json.dumps(out))
"""


# The new project's commands must not see this test run's settings module or paths.
CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL")
}


def _run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_holds_only_the_library_and_works_in_a_new_project(tmp_path):
    wheels = tmp_path / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        ROOT,
    )
    (wheel,) = wheels.glob("analysis_lib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert not any(name.split("/")[0] == "project" or "project/" in name for name in names)
    assert tops == {"analysis_lib", wheel.name.split("-py")[0] + ".dist-info"}
    assert "analysis_lib/py.typed" in names and "analysis_lib/regions/core.py" in names
    assert "analysis_lib/apps.py" in names

    # A fresh environment outside the checkout, from the Python running this test, without the
    # system site-packages; the wheel's own dependencies at this run's versions.
    base = Path(os.path.realpath(sys.executable))
    venv = tmp_path / "venv"
    _run([str(base), "-m", "venv", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    freeze = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], tmp_path)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "\n".join(line for line in freeze.splitlines() if "==" in line and " @ " not in line)
    )
    extra = "" if _can_load_extensions() else "[spatialite]"
    _run(
        [python, "-m", "pip", "install", "-q", f"{wheel}{extra}", "-c", str(constraints)],
        tmp_path,
    )

    site = tmp_path / "site"
    site.mkdir()
    _run([str(venv / "bin" / "django-admin"), "startproject", "mysite", "."], site)
    _run([python, "manage.py", "startapp", "lamps"], site)
    (site / "lamps" / "models.py").write_text(MODELS)
    settings = site / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + '\nINSTALLED_APPS += ["django.contrib.gis", "analysis_lib", "lamps"]\n'
        + 'DATABASES["default"]["ENGINE"] = "analysis_lib.db.backends.spatialite"\n'
    )
    _run([python, "manage.py", "makemigrations", "lamps", "-v", "0"], site)
    out = json.loads(_run([python, "-c", SCRIPT], site).strip().splitlines()[-1])

    assert out["where"].startswith(str(venv))  # the installed copy, not the checkout
    assert out["project"] == []
    expected = {
        "east": {"n_items": 1, "watts": 40.0, "kind_led": 1.0},
        "west": {"n_items": 3, "watts": 20.0, "kind_led": 2 / 3},
    }
    for strategy in (
        "Sweep(chunk_size=10000, workers=None, engine='auto')",
        "PerRegion(chunk_size=10000)",
        "OneStatement()",
    ):
        got = out[strategy]
        assert set(got) == set(expected), strategy
        for name, row in expected.items():
            assert got[name] == pytest.approx(row), (strategy, name)
