"""Test settings: the demo project's, plus an app the library has never seen (``reuse_app``)."""

import sys
from pathlib import Path

from project.settings import *  # noqa: F403

# reuse_app lives in tests/, so that nothing in project/ or analysis_lib/ can know it; fresh
# child processes started by the tests import it from here too.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

INSTALLED_APPS = [*INSTALLED_APPS, "reuse_app"]  # noqa: F405
