#!/usr/bin/env python
"""Rerun the project's notebooks with papermill into reports/ (what `make notebooks` calls).

    python scripts/run_notebooks.py [-p NAME VALUE]... [--output-dir DIR] [NOTEBOOK...]

Every notebooks/*.ipynb runs by default, in name order, in a fresh ``python3``
kernel; the executed copies and the PNG figures they save go to ``--output-dir``
(default ``reports/``). ``-p NAME VALUE`` sets a parameter of every notebook
that declares it (values are read like papermill's CLI: True, False, None,
numbers, else text); ``NOTEBOOK_PARAMETERS="state=MA chunk_size=50000"`` in the
environment does the same with lower priority. A parameter that no notebook in
notebooks/ declares is an error. The kernel inherits the environment, so
``DATABASE_URL`` selects the database as everywhere else.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from analysis_lib import notebook_parameters, run_notebook  # noqa: E402


def parse_value(text: str):
    """Read a command-line value the way papermill's ``-p`` does."""
    special = {"True": True, "False": False, "None": None}
    if text in special:
        return special[text]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def env_parameters(text: str) -> dict:
    """Parse ``NOTEBOOK_PARAMETERS`` (``name=value`` pairs separated by spaces)."""
    params = {}
    for item in shlex.split(text):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"NOTEBOOK_PARAMETERS: {item!r} is not name=value")
        params[name] = parse_value(value)
    return params


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter (repeatable)",
    )
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "reports")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    parser.add_argument("--log-output", action="store_true", help="echo cell output")
    args = parser.parse_args(argv)

    project_notebooks = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
    notebooks = args.notebooks or project_notebooks
    if not notebooks:
        parser.error("no notebooks found")
    params = env_parameters(os.environ.get("NOTEBOOK_PARAMETERS", ""))
    params.update({name: parse_value(value) for name, value in args.parameter})

    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    # A name no notebook of the project declares is a typo; one that only notebooks not run
    # now declare is fine (NOTEBOOK_PARAMETERS may serve them all).
    known = set().union(*declared.values(), *map(notebook_parameters, project_notebooks))
    unused = sorted(set(params) - known)
    if unused:
        parser.error(f"no notebook declares parameter(s) {', '.join(unused)}")

    failed = []
    for nb in notebooks:
        mine = {k: v for k, v in params.items() if k in declared[nb]}
        shown = " ".join(f"{k}={v!r}" for k, v in mine.items())
        print(f"[notebooks] {nb.name} {shown}", flush=True)
        start = time.perf_counter()
        try:
            out = run_notebook(
                nb,
                args.output_dir,
                mine,
                progress_bar=sys.stderr.isatty(),
                log_output=args.log_output,
                timeout=args.timeout,
            )
        except Exception as exc:  # report every notebook, then fail
            # papermill's error carries the cell's exception; the executed copy shows it in place
            what = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
            where = args.output_dir / nb.name
            print(f"[notebooks] {nb.name} FAILED: {what} (see {where})", file=sys.stderr)
            failed.append(nb.name)
            continue
        print(f"[notebooks] {nb.name} -> {out} ({time.perf_counter() - start:.0f} s)", flush=True)
    if failed:
        print(f"[notebooks] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    pngs = sorted(p.name for p in args.output_dir.glob("*.png"))
    print(f"[notebooks] figures in {args.output_dir}: {', '.join(pngs) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
