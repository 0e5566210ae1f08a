"""GeoDjango's SpatiaLite backend, with an SQLite that can load extensions on any Python.

Use it as the ``ENGINE`` of a SpatiaLite database::

    DATABASES = {
        "default": {
            "ENGINE": "analysis_lib.db.backends.spatialite",
            "NAME": BASE_DIR / "data" / "db.sqlite3",
        }
    }

It is ``django.contrib.gis.db.backends.spatialite`` unchanged where Python's ``sqlite3`` can load
extensions (Debian's and Ubuntu's ``/usr/bin/python3``, conda-forge). Where it cannot (pyenv,
python.org and Homebrew builds), it runs Django's SQLite backend on ``pysqlite3`` instead
(``pip install 'analysis-lib[spatialite]'`` installs the ``pysqlite3-binary`` wheel), and says
clearly what to install when neither can.
"""
