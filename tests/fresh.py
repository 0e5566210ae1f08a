"""Run Python in a fresh process, and read this process's memory: shared by tests and benchmarks.

Settings, connections and peak memory are per process, so many tests and every benchmark run
their code in a child interpreter. This module is the one way they do it:

* :func:`run_python` runs code (a string, as ``python -c``) or a script (a :class:`~pathlib.Path`)
  with this interpreter, from the repository root, with extra environment variables, and raises
  :class:`ChildFailed` with the child's stderr when it exits non-zero;
* :func:`run_json` does the same and returns the one JSON line the child printed (other output,
  such as warnings or progress, is ignored);
* :func:`rss` reads the current and the peak resident set size of this process in MiB, and
  :func:`reset_peak_rss` sets the kernel's peak mark back to the current size.

It imports only the standard library, so a benchmark or a child can import it before anything
heavy: tests import it as ``tests.fresh``, benchmarks put the repository root on ``sys.path``
first. (``analysis_lib.memory`` keeps its own reader for the library.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class ChildFailed(RuntimeError):
    """A child process exited non-zero, or printed no JSON line where one was expected."""


def _describe(source: str | Path) -> str:
    if isinstance(source, Path):
        return str(source)
    first = next((line for line in source.splitlines() if line.strip()), "")
    return f"python -c {first.strip()[:80]!r}..."


def run_python(
    source: str | Path,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    settings: str | None = None,
    database_url: str | None = None,
    cwd: str | Path = ROOT,
    timeout: float | None = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh Python process (this interpreter); return the finished process.

    Parameters
    ----------
    source : str or Path
        Python code (run as ``python -c source``) or the path of a script, or ``"-m"`` followed
        by a module name as the first of ``args``.
    *args : str
        Command-line arguments (``sys.argv[1:]`` of the child).
    env : mapping, optional
        Variables to set on top of this process's environment; a value of ``None`` removes one.
    settings : str, optional
        ``DJANGO_SETTINGS_MODULE`` for the child (default: inherited).
    database_url : str, optional
        ``DATABASE_URL`` for the child (default: inherited).
    cwd : str or Path
        Working directory, the repository root by default (so ``project`` is importable).
    timeout : float or None
        Seconds before the child is killed and :class:`subprocess.TimeoutExpired` raised.
    check : bool
        Raise :class:`ChildFailed`, with the child's stderr, when it exits non-zero.

    Returns
    -------
    subprocess.CompletedProcess
        With ``stdout`` and ``stderr`` as text.

    Raises
    ------
    ChildFailed
        If ``check`` and the child exits non-zero.

    Examples
    --------
    >>> run_python("print(6 * 7)").stdout
    '42\\n'
    """
    child_env = dict(os.environ)
    extra: dict[str, str | None] = dict(env or {})
    if settings is not None:
        extra["DJANGO_SETTINGS_MODULE"] = settings
    if database_url is not None:
        extra["DATABASE_URL"] = database_url
    for key, value in extra.items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    if isinstance(source, Path):
        argv = [sys.executable, str(source), *args]
    elif source == "-m":
        argv = [sys.executable, "-m", *args]
    else:
        argv = [sys.executable, "-c", source, *args]
    done = subprocess.run(
        argv, cwd=cwd, env=child_env, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise ChildFailed(
            f"{_describe(source)} exited with {done.returncode}:\n"
            f"--- stderr ---\n{done.stderr[-6000:]}\n--- stdout ---\n{done.stdout[-2000:]}"
        )
    return done


def parse_json_line(stdout: str) -> Any:
    """The last line of ``stdout`` that starts with ``{`` or ``[``, parsed as JSON.

    Raises
    ------
    ChildFailed
        If no line looks like JSON, or the line is not valid JSON.
    """
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError as error:
                raise ChildFailed(f"the child printed bad JSON ({error}): {line[:500]}") from None
    raise ChildFailed(f"the child printed no JSON line; its output:\n{stdout[-2000:]}")


def run_json(source: str | Path, *args: str, **options: Any) -> Any:
    """Run ``source`` like :func:`run_python` and return the one JSON line it printed.

    The child prints its result with ``print(json.dumps(result))``; every other line of its
    output is ignored. Keyword options are those of :func:`run_python` (``check`` is always on).

    Raises
    ------
    ChildFailed
        If the child exits non-zero (the message holds its stderr) or prints no JSON line.

    Examples
    --------
    >>> run_json("import json; print('hello'); print(json.dumps({'n': 1}))")
    {'n': 1}
    """
    options["check"] = True
    done = run_python(source, *args, **options)
    try:
        return parse_json_line(done.stdout)
    except ChildFailed as error:
        message = f"{_describe(source)}: {error}\n--- stderr ---\n{done.stderr[-4000:]}"
        raise ChildFailed(message) from None


@dataclass(frozen=True)
class Rss:
    """Resident set size of a process, in MiB: now, and the peak since start (or the last reset)."""

    current_mib: float
    peak_mib: float


def rss() -> Rss:
    """The current and the peak resident set size of this process, in MiB.

    Linux: ``VmRSS`` and ``VmHWM`` of ``/proc/self/status`` (the peak honours
    :func:`reset_peak_rss`). Elsewhere: psutil for the current size and ``ru_maxrss`` for the
    peak (which cannot be reset).
    """
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return Rss(
            current_mib=int(fields["VmRSS"].split()[0]) / 1024,
            peak_mib=int(fields["VmHWM"].split()[0]) / 1024,
        )
    except (OSError, KeyError):
        import resource

        import psutil

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mib = peak / 1024 if sys.platform.startswith("linux") else peak / 2**20
        return Rss(current_mib=psutil.Process().memory_info().rss / 2**20, peak_mib=peak_mib)


def reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (``VmHWM``) back to the current RSS; False if unsupported.

    Lets a measurement exclude the imports and set-up that came before it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True
