"""Django database backends shipped with analysis_lib.

``analysis_lib.db.backends.spatialite`` is GeoDjango's SpatiaLite backend that also works on a
Python whose ``sqlite3`` cannot load extensions (see its module docstring).
"""
