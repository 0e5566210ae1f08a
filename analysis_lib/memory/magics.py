"""IPython extension: ``%load_ext analysis_lib`` gives ``%memit``, ``%mprun`` and ``%%memtrack``.

``%memit`` and ``%mprun`` are memory-profiler's own magics, loaded through its
``load_ipython_extension`` (which imports ``distutils``: fine on Python 3.11,
gone on 3.12). ``%%memtrack`` is ours: it runs the cell once under
:func:`analysis_lib.measure`, prints peak, increment and what the cell left
behind, and appends the result to the session log (:func:`analysis_lib.default_log`).
"""

from __future__ import annotations

import warnings
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .steps import DEFAULT_INTERVAL, _measure, default_log


@magics_class
class MemtrackMagics(Magics):
    """The ``%%memtrack`` cell magic."""

    @magic_arguments()
    @argument("label", nargs="*", help="name of the step (default: 'cell <n>')")
    @argument(
        "-i",
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help=f"seconds between RSS samples (default {DEFAULT_INTERVAL})",
    )
    @argument("-q", "--quiet", action="store_true", help="log the result without printing it")
    @cell_magic
    def memtrack(self, line: str, cell: str) -> None:
        """Run the cell once; print its peak, increment and left-behind memory; log them.

        Usage::

            %%memtrack load buildings
            frame = read_frame(Building.objects.values("id", "footprint_m2"))

        prints ``memtrack load buildings: peak memory: ... MiB, increment: ... MiB,
        left behind: ... MiB, ... s`` and appends the result to
        ``analysis_lib.default_log()``. A cell that raises shows its traceback
        and is not logged.
        """
        args = parse_argstring(self.memtrack, line)
        if not args.interval > 0:
            raise UsageError(f"%%memtrack: -i/--interval must be > 0 seconds, got {args.interval}")
        label = " ".join(args.label) or f"cell {self.shell.execution_count}"
        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["result"] = self.shell.run_cell(cell, store_history=False)

        result = _measure(run, (), {}, label, args.interval, None)
        executed = outcome["result"]
        if not executed.success:
            print(f"memtrack {label}: the cell raised; nothing logged")
            return
        default_log().append(result)
        if not args.quiet:
            print(f"memtrack {result}")


def load_ipython_extension(ipython: Any) -> None:
    """Load memory-profiler's ``%memit``/``%mprun`` and register ``%%memtrack``.

    Where memory-profiler's magics cannot load because ``distutils`` is missing
    (Python 3.12 without setuptools), it warns and registers ``%%memtrack`` alone.

    Parameters
    ----------
    ipython : IPython.core.interactiveshell.InteractiveShell
        The running shell (IPython passes it to ``%load_ext``).

    Returns
    -------
    None
        The magics are registered on ``ipython``.

    Examples
    --------
    In a notebook or IPython::

        %load_ext analysis_lib
        %memit sum(range(10**6))
        %%memtrack build a list
        numbers = list(range(10**6))
    """
    try:
        with warnings.catch_warnings():
            # memory_profiler's magics import distutils (deprecated in 3.10, removed in 3.12)
            warnings.filterwarnings("ignore", message=".*distutils", category=DeprecationWarning)
            ipython.extension_manager.load_extension("memory_profiler")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("distutils"):
            raise
        warnings.warn(
            "memory-profiler's %memit and %mprun need distutils, which this Python lacks "
            "(removed in 3.12; setuptools can provide it): only %%memtrack is available",
            RuntimeWarning,
            stacklevel=2,
        )
    ipython.register_magics(MemtrackMagics)
