"""Set Django up from a plain Python kernel (papermill, scripts, tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def setup_django(settings_module: str = "project.settings", *, allow_async_unsafe: bool = True):
    """Configure Django once, so the ORM works in a notebook or script.

    Safe to call many times: when Django is already set up (for example in a
    ``shell_plus --lab`` kernel, or under pytest-django) it does nothing.

    Parameters
    ----------
    settings_module : str
        Used only when ``DJANGO_SETTINGS_MODULE`` is not set already.
    allow_async_unsafe : bool
        Set ``DJANGO_ALLOW_ASYNC_UNSAFE``: Jupyter runs cells in a thread with a
        running event loop, where Django otherwise refuses ORM calls with
        ``SynchronousOnlyOperation``.

    Returns
    -------
    django.conf.LazySettings
        The configured settings.

    Examples
    --------
    >>> from analysis_lib import setup_django
    >>> settings = setup_django()
    >>> settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1] in {"spatialite", "postgis"}
    True
    """
    if allow_async_unsafe:
        os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)

    import django
    from django.apps import apps
    from django.conf import settings

    if not apps.ready:
        django.setup()
    return settings
