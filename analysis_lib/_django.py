"""Set Django up from a plain Python kernel (papermill, scripts, tests)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ._checks import check_type, fail_value


def _find_project_dir(package: str, start: Path) -> Path | None:
    """Return the nearest folder at or above ``start`` holding ``manage.py`` and ``package``."""
    for folder in (start, *start.parents):
        if (folder / "manage.py").is_file() and (folder / package).is_dir():
            return folder
    return None


def setup_django(settings_module: str | None = None, *, allow_async_unsafe: bool = True):
    """Configure Django once, so the ORM works in a notebook or script.

    Safe to call many times: when Django is already set up (for example in a
    ``shell_plus --lab`` kernel, or under pytest-django) it does nothing. When the
    settings' package cannot be imported (a kernel started in ``notebooks/``), the
    nearest folder above the current directory that holds ``manage.py`` and that
    package is put on ``sys.path`` first.

    Parameters
    ----------
    settings_module : str, optional
        Your settings module (``"mysite.settings"``); used only when
        ``DJANGO_SETTINGS_MODULE`` is not set already.
    allow_async_unsafe : bool
        Set ``DJANGO_ALLOW_ASYNC_UNSAFE``: Jupyter runs cells in a thread with a
        running event loop, where Django otherwise refuses ORM calls with
        ``SynchronousOnlyOperation``.

    Returns
    -------
    django.conf.LazySettings
        The configured settings.

    Raises
    ------
    ValueError
        If neither ``settings_module`` nor ``DJANGO_SETTINGS_MODULE`` names the settings.

    Examples
    --------
    >>> from analysis_lib import setup_django
    >>> settings = setup_django("mysite.settings")  # doctest: +SKIP
    >>> settings.DATABASES["default"]["ENGINE"]  # doctest: +SKIP
    'django.contrib.gis.db.backends.spatialite'
    """
    check_type("settings_module", settings_module, str, "a module name (str)", allow_none=True)
    if allow_async_unsafe:
        os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or settings_module
    if not module:
        raise fail_value(
            "settings_module",
            "your settings module (e.g. 'mysite.settings') when DJANGO_SETTINGS_MODULE is unset",
            settings_module,
        )
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    package = module.split(".", 1)[0]
    if importlib.util.find_spec(package) is None:
        folder = _find_project_dir(package, Path.cwd().resolve())
        if folder is not None and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))

    import django
    from django.apps import apps
    from django.conf import settings

    if not apps.ready:
        django.setup()
    return settings
