#!/usr/bin/env bash
# Does the README's promise hold on a fresh machine? Runs `make test` and then `make demo` in a
# throwaway clone of the current commit, after removing what this project installs on a machine.
#
#   scripts/fresh_machine_check.sh --dry-run          print what it would remove and run; change nothing
#   scripts/fresh_machine_check.sh --yes              do it (REMOVES SYSTEM PACKAGES, see below)
#   scripts/fresh_machine_check.sh --yes --keep-packages
#                                                     the same run without removing any package
# Options: --buildings N (default 200000: `make demo BUILDINGS=N`), --keep-workdir (keep the clone).
#
# WARNING: with --yes (and without --keep-packages) it runs `apt-get purge` on the Debian packages
# the project's scripts install when missing (gdal-bin, libsqlite3-mod-spatialite,
# postgresql-15-postgis-3) and on the dependencies that only they needed (what `apt-get
# autoremove` would then remove). It refuses when that would remove a package installed by hand
# for something else or any of the machine's own PostgreSQL server packages. The project's
# commands reinstall what they need during the run, as they would for a new user; whatever is
# still missing at the end is reinstalled, so the machine ends with the packages it started with.
#
# What else a new user would not have, and how the run gets rid of it without deleting anything
# of yours: the clone has no .venv and no data/ (nor reports/); pip runs with an empty
# PIP_CACHE_DIR; Jupyter, IPython and matplotlib read their config, kernelspecs and caches from
# empty directories (JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR, JUPYTER_RUNTIME_DIR, IPYTHONDIR,
# MPLCONFIGDIR); TMPDIR is an empty directory; DATABASE_URL, VIRTUAL_ENV, PYTHONPATH and make's
# own variables are unset. Debian's apt cache of downloaded .deb files is kept.
#
# Output: progress on stderr; on stdout, per command its exit code, wall time and pytest summary
# line, then a summary block to paste into a note. Logs stay in the work directory (printed).
# Exit code: 0 when both commands passed, 1 when one failed, 2 on a usage or safety refusal.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

PACKAGES=(gdal-bin libsqlite3-mod-spatialite postgresql-15-postgis-3)
# Installed by apt along with them, but kept by `apt-get autoremove` (it recommends the PostGIS
# package, which depends on it): purged with them when apt installed it automatically.
COMPANIONS=(postgresql-15-postgis-3-scripts)
# Never removed, whatever apt's dependency resolution says: the machine's own PostgreSQL.
PROTECTED_RE='^(postgresql|postgresql-15|postgresql-client-15|postgresql-common|postgresql-client-common|postgresql-contrib|libpq5)$'

say() { printf '[fresh-check] %s\n' "$*" >&2; }
die() {
    printf '[fresh-check] error: %s\n' "$*" >&2
    exit 2
}
usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

mode="" keep_packages="" keep_workdir="" buildings=200000
while (($#)); do
    case $1 in
        --yes) mode=run ;;
        --dry-run) mode=dry ;;
        --keep-packages) keep_packages=1 ;;
        --keep-workdir) keep_workdir=1 ;;
        --buildings)
            (($# >= 2)) || die "--buildings needs a value"
            buildings=$2
            shift
            ;;
        --buildings=*) buildings=${1#*=} ;;
        -h | --help) usage ;;
        *) die "unknown argument '$1' (allowed: --yes, --dry-run, --keep-packages, --keep-workdir, --buildings N)" ;;
    esac
    shift
done
[[ $buildings =~ ^[1-9][0-9]*$ ]] || die "--buildings must be a positive whole number, got '$buildings'"
if [[ -z $mode ]]; then
    sed -n '11,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    die "this removes system packages: rerun with --yes to do it, --dry-run to see the plan, or --yes --keep-packages to run without removing packages"
fi

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
# Installed, not merely known to dpkg (`dpkg -s` also succeeds for a removed package whose
# configuration files are still there).
is_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }
command -v git >/dev/null || die "git is needed"
COMMIT=$(git -C "$ROOT" rev-parse HEAD)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]]; then
    say "warning: $ROOT has uncommitted changes; the check runs the commit $COMMIT without them"
fi

# --- the package plan -------------------------------------------------------------------------
installed=()
for pkg in "${PACKAGES[@]}"; do
    if is_installed "$pkg"; then installed+=("$pkg"); fi
done

# What `apt-get purge` of our packages and then `apt-get autoremove` would remove, minus what
# autoremove would remove anyway today (orphans of someone else: left alone).
simulate() { LC_ALL=C apt-get -s "$@" 2>/dev/null | awk '/^(Remv|Purg) /{print $2}' | sort -u; }
removal=()
if [[ -z $keep_packages && ${#installed[@]} -gt 0 ]]; then
    mapfile -t baseline < <(simulate autoremove)
    mapfile -t removal < <(comm -23 <(simulate purge --autoremove "${installed[@]}") \
        <(printf '%s\n' "${baseline[@]}" | sed '/^$/d' | sort -u))
    mapfile -t manual < <(apt-mark showmanual 2>/dev/null | sort -u)
    for pkg in "${COMPANIONS[@]}"; do
        if is_installed "$pkg" && ! printf '%s\n' "${manual[@]}" | grep -qx -- "$pkg" &&
            ! printf '%s\n' "${removal[@]}" | grep -qx -- "$pkg"; then
            removal+=("$pkg")
        fi
    done
    refused=()
    for pkg in "${removal[@]}"; do
        name=${pkg%%:*}
        if [[ $name =~ $PROTECTED_RE ]]; then
            refused+=("$pkg (the machine's PostgreSQL)")
        elif printf '%s\n' "${manual[@]}" | grep -qx -- "$name" &&
            ! printf '%s\n' "${PACKAGES[@]}" | grep -qx -- "$name"; then
            refused+=("$pkg (installed by hand)")
        fi
    done
    ((${#refused[@]} == 0)) || die "refusing: apt would also remove ${refused[*]}"
    # Purging exactly this list must remove exactly this list (no reverse dependency of
    # something else dragged along).
    if [[ $(simulate purge "${removal[@]}" | tr '\n' ' ') != "$(printf '%s\n' "${removal[@]}" | sort -u | tr '\n' ' ')" ]]; then
        die "refusing: purging ${removal[*]} would remove more: $(comm -13 <(printf '%s\n' "${removal[@]}" | sort -u) <(simulate purge "${removal[@]}") | tr '\n' ' ')"
    fi
fi

WORK_PARENT=${FRESH_CHECK_DIR:-${TMPDIR:-/tmp}}
cmd_env=(env -u DATABASE_URL -u VIRTUAL_ENV -u PYTHONPATH -u JUPYTER_PATH -u JUPYTER_CONFIG_PATH
    -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u CONDA_PREFIX)
test_cmd=(make test)
demo_cmd=(make demo "BUILDINGS=$buildings")

plan() {
    echo "commit:    $COMMIT ($(git -C "$ROOT" log -1 --format=%s "$COMMIT" | cut -c1-70))"
    echo "clone:     git clone of $ROOT into a new directory under $WORK_PARENT (removed at the end${keep_workdir:+: kept, --keep-workdir})"
    if [[ -n $keep_packages ]]; then
        echo "packages:  none removed (--keep-packages); installed now: ${installed[*]:-none}"
    elif ((${#removal[@]})); then
        echo "packages:  apt-get purge ${#removal[@]} packages: ${removal[*]}"
    else
        echo "packages:  none of ${PACKAGES[*]} is installed: nothing to remove"
    fi
    echo "isolation: empty PIP_CACHE_DIR, JUPYTER_{CONFIG,DATA,RUNTIME}_DIR, IPYTHONDIR, MPLCONFIGDIR, TMPDIR;"
    echo "           unset DATABASE_URL VIRTUAL_ENV PYTHONPATH JUPYTER_PATH JUPYTER_CONFIG_PATH MAKEFLAGS"
    local user_kernels=${JUPYTER_DATA_DIR:-$HOME/.local/share/jupyter}/kernels
    if [[ -d $user_kernels ]]; then
        echo "           (hidden from the run, not deleted: $user_kernels holds $(ls "$user_kernels" | tr '\n' ' '))"
    fi
    echo "run:       1. ${test_cmd[*]}"
    echo "           2. ${demo_cmd[*]}"
}

if [[ $mode == dry ]]; then
    echo "fresh-machine check, dry run (nothing changed)"
    plan
    exit 0
fi

# --- the run ------------------------------------------------------------------------------------
WORK=$(mktemp -d "$WORK_PARENT/fresh-check.XXXXXX")
chmod 755 "$WORK" # the PostgreSQL server runs as `postgres` in a directory under $WORK/tmp
purged="" reinstalled=() restored=()
# Put back what the machine had and the run did not install again (e.g. PostGIS when no test
# needed it), so that the check leaves the machine as it found it; also on failure or Ctrl-C.
restore_packages() {
    [[ -n $purged ]] || return 0
    purged=""
    local pkg
    for pkg in "${installed[@]}"; do
        if is_installed "$pkg"; then reinstalled+=("$pkg"); else restored+=("$pkg"); fi
    done
    ((${#restored[@]})) || return 0
    say "reinstalling what the run did not: ${restored[*]}"
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${restored[@]}" >"$LOGS/apt-restore.log" 2>&1; then
        keep_workdir=1
        say "warning: reinstalling failed; run: apt-get install ${restored[*]} (log: $LOGS/apt-restore.log)"
    fi
}
cleanup() {
    local rc=$?
    trap - INT TERM
    restore_packages
    if [[ -z $keep_workdir && -d $WORK ]]; then
        rm -rf -- "$WORK"
    elif [[ -d $WORK ]]; then
        say "kept the work directory and its logs: $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ -n $keep_workdir ]]; then say "work directory (kept): $WORK"; fi
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/pip-cache" "$WORK/jupyter-config" "$WORK/jupyter-data" \
    "$WORK/jupyter-runtime" "$WORK/ipython" "$WORK/matplotlib" "$WORK/tmp"
chmod 1777 "$WORK/tmp"
cmd_env+=(PIP_CACHE_DIR="$WORK/pip-cache" JUPYTER_CONFIG_DIR="$WORK/jupyter-config"
    JUPYTER_DATA_DIR="$WORK/jupyter-data" JUPYTER_RUNTIME_DIR="$WORK/jupyter-runtime"
    IPYTHONDIR="$WORK/ipython" MPLCONFIGDIR="$WORK/matplotlib" TMPDIR="$WORK/tmp")

plan >&2
say "cloning $COMMIT into $WORK/repo"
git clone -q --no-local --no-checkout "$ROOT" "$WORK/repo" >&2
git -C "$WORK/repo" checkout -q --detach "$COMMIT" >&2
for leftover in .venv data reports; do
    [[ ! -e $WORK/repo/$leftover ]] || die "the clone has $leftover: it must not be tracked"
done

if ((${#removal[@]})); then
    say "removing ${#removal[@]} Debian packages (log: $LOGS/apt-purge.log)"
    purged=1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -o DPkg::Lock::Timeout=300 \
        "${removal[@]}" >"$LOGS/apt-purge.log" 2>&1 || {
        tail -n 30 "$LOGS/apt-purge.log" >&2
        die "apt-get purge failed (log above)"
    }
    for pkg in "${PACKAGES[@]}"; do
        ! is_installed "$pkg" || die "$pkg is still installed after apt-get purge"
    done
fi

fmt_time() { awk -v s="$1" 'BEGIN { printf "%dm %04.1fs", int(s / 60), s - 60 * int(s / 60) }'; }
pytest_line() {
    grep -aE '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected)|^(=+ )?no tests ran' "$1" |
        tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true
}

results=()
run_step() { # run_step NAME LOG CMD...: run CMD in the clone, record exit code, wall and summary
    local name=$1 log=$2
    shift 2
    say "running: $* (log: $log)"
    local start end rc=0
    start=$(date +%s.%N)
    (cd "$WORK/repo" && "${cmd_env[@]}" "$@") >"$log" 2>&1 </dev/null || rc=$?
    end=$(date +%s.%N)
    local wall summary
    wall=$(fmt_time "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')")
    summary=$(pytest_line "$log")
    if ((rc)); then
        say "$name failed with exit code $rc; the end of its log:"
        tail -n 40 "$log" >&2
    fi
    printf '%s: exit %s, wall %s, pytest: %s\n' "$*" "$rc" "$wall" "${summary:-n/a}"
    results+=("$(printf '| `%s` | %s | %s | %s |' "$*" "$rc" "$wall" "${summary:-n/a}")")
    return "$rc"
}

overall=0
run_step test "$LOGS/make-test.log" "${test_cmd[@]}" || overall=1
run_step demo "$LOGS/make-demo.log" "${demo_cmd[@]}" || overall=1

restore_packages

nothing=none
if [[ -n $keep_packages ]]; then nothing="n/a (--keep-packages)"; fi
cat <<EOF

## Fresh-machine check ($(date -u '+%Y-%m-%d %H:%M UTC'))

\`scripts/fresh_machine_check.sh --yes${keep_packages:+ --keep-packages} --buildings $buildings\` on $(hostname), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"); commit \`${COMMIT:0:12}\`, throwaway clone (no .venv, no data/), empty pip cache, empty Jupyter/IPython/matplotlib dirs.

- Debian packages removed first: $(if [[ -n $keep_packages ]]; then echo "none (--keep-packages)"; elif ((${#removal[@]})); then echo "${#removal[@]} (${removal[*]})"; else echo "none (none was installed)"; fi)
- installed again by the project's own commands during the run: ${reinstalled[*]:-$nothing}
- reinstalled by the check afterwards: ${restored[*]:-$nothing}

| command | exit | wall | pytest summary |
|---|---:|---:|---|
$(printf '%s\n' "${results[@]}")
EOF
exit "$overall"
