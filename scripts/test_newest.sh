#!/usr/bin/env bash
# `make test-newest`: the whole suite on the newest supported stack (CI's third leg).
#
#  1. Python 3.13 from pyenv ($PYENV_ROOT/versions/3.13.*, or NEWEST_PYTHON=/path/to/python3.13).
#     Like python.org and Homebrew builds, pyenv's sqlite3 cannot load extensions: SpatiaLite then
#     runs through analysis_lib.db.backends.spatialite's pysqlite3 fallback (docs/install.md).
#  2. A venv at .venv-newest with this package and every extra, the newest releases allowed by
#     pyproject.toml and scripts/newest-supported.txt (pandas 3, pyarrow 26, Django 6),
#     reinstalled only when either file changed since the last install.
#  3. pytest on SpatiaLite (DATABASE_URL unset); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[newest] %s\n' "$*"; }

root=${PYENV_ROOT:-$HOME/.pyenv}
python=${NEWEST_PYTHON:-}
if [[ -z $python ]]; then
    python=$(ls -d "$root"/versions/3.13.*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [[ -z $python || ! -x $python ]]; then
    echo "error: make test-newest needs Python 3.13 from pyenv, and $root/versions/3.13.*/bin/python" \
        "does not exist: install it (pyenv install 3.13) or set NEWEST_PYTHON=/path/to/python3.13" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
    echo "error: $python is $("$python" --version 2>&1), not Python 3.13" >&2
    exit 1
fi

venv=.venv-newest
if [[ -x $venv/bin/python ]] && [[ $(readlink -f "$venv/bin/python") != $(readlink -f "$python") ]]; then
    say "$venv was made from another Python: recreating it"
    rm -rf "$venv"
fi
if [[ ! -x $venv/bin/python ]]; then
    say "creating $venv from $python ($("$python" --version 2>&1))"
    "$python" -m venv "$venv"
fi
stamp=$venv/.installed-$(cat pyproject.toml scripts/newest-supported.txt | sha256sum | cut -c1-16)
if [[ ! -f $stamp ]]; then
    say "installing the newest supported stack into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e '.[demo,dev,geo,dask,postgis,spatialite]' \
        -c scripts/newest-supported.txt
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
"$venv/bin/python" - <<'PY'
import sqlite3, sys
from importlib.metadata import version
names = ["django", "pandas", "pyarrow", "numpy", "shapely"]
print("[newest] Python", sys.version.split()[0], *(f"{n} {version(n)}" for n in names))
print("[newest] sqlite3 loads extensions:", hasattr(sqlite3.Connection, "enable_load_extension"))
PY
exec env -u DATABASE_URL "$venv/bin/python" -m pytest -q "$@"
