#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine (and for CI).
#
#  1. Debian packages GeoDjango needs: GDAL/GEOS/PROJ (gdal-bin) and SpatiaLite
#     (libsqlite3-mod-spatialite). Installed only when missing.
#  2. A venv at .venv built from Debian's /usr/bin/python3: its sqlite3 module
#     can load extensions (mod_spatialite); some self-built Pythons cannot.
#  3. This package and its pinned dependency ranges (pyproject.toml), reinstalled
#     only when pyproject.toml changed since the last install.
#
# Extra Debian packages can be asked for with EXTRA_APT="pkg ...".
#
# Output: nothing on stdout. Progress lines and everything apt-get, dpkg, venv and pip print go
# to stderr, so a caller that reads this script's stdout (or a later step's) never sees them.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 1>&2

say() { printf '[setup] %s\n' "$*" >&2; }

# Installed means dpkg's status 'install ok installed': `dpkg -s` also succeeds for a package
# that was removed but left its configuration files behind.
installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

need_apt=()
installed gdal-bin || need_apt+=(gdal-bin)
installed libsqlite3-mod-spatialite || need_apt+=(libsqlite3-mod-spatialite)
installed python3-venv || /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
for pkg in ${EXTRA_APT:-}; do
    installed "$pkg" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    say "installing Debian packages: ${need_apt[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv from /usr/bin/python3 ($(/usr/bin/python3 --version))"
    /usr/bin/python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import sqlite3; sqlite3.connect(":memory:").enable_load_extension(True)' 2>/dev/null; then
    echo "error: .venv's Python cannot load SQLite extensions; delete .venv and rerun (it must come from /usr/bin/python3)" >&2
    exit 1
fi

# Reinstall when the dependencies or the constraints changed.
stamp=.venv/.installed-$(cat pyproject.toml scripts/oldest-supported.txt | sha256sum | cut -c1-16)
if [[ ! -f $stamp ]]; then
    say "installing Python packages from pyproject.toml into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[demo,dev,geo,dask,postgis,spatialite]' -c scripts/oldest-supported.txt
    rm -f .venv/.installed-*
    touch "$stamp"
fi
say "ready: .venv ($(.venv/bin/python --version))"
