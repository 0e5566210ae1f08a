"""IPython extension: ``%load_ext analysis_lib`` gives ``%memit``, ``%mprun`` and ``%%memtrack``.

All three are registered here and none imports ``distutils``, so they work on Python
3.11-3.13. memory-profiler's own extension (``%load_ext memory_profiler``) imports
``distutils`` in ``%memit``, ``%mprun`` and its registration (gone in Python 3.12 unless
setuptools provides it) and cannot profile functions defined in cells; we do not load it.

- ``%memit statement`` / ``%%memit``: peak and increment of one run, printed as
  memory-profiler prints them (``peak memory: ... MiB, increment: ... MiB``), through
  :func:`analysis_lib.measure` (memory-profiler's sampler process).
- ``%mprun -f func statement``: memory-profiler's line-by-line table for ``func``
  while ``statement`` runs, through :mod:`.lines`: works for functions defined in cells.
- ``%%memtrack [label]``: runs the cell once under :func:`analysis_lib.measure`, prints
  peak, increment and what the cell left behind (and Arrow's memory where pyarrow is
  imported), and appends the result to the session log (:func:`analysis_lib.default_log`).
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .lines import _LineRecorder
from .steps import DEFAULT_INTERVAL, _measure, default_log


@magics_class
class MemoryMagics(Magics):
    """The ``%memit``, ``%mprun`` and ``%%memtrack`` magics."""

    def _statement(self, line_rest: str, cell: str | None, magic: str, example: str) -> Any:
        """Compile the statement of a line magic, or the body of a cell magic."""
        source = cell if cell is not None else line_rest
        if not source.strip():
            raise UsageError(f"%{magic}: give a statement to run, e.g. %{magic} {example}")
        return compile(self.shell.transform_cell(source), f"<{magic}>", "exec")

    @line_cell_magic
    def memit(self, line: str = "", cell: str | None = None) -> Any:
        """Run a statement once; print its peak memory and increment like memory-profiler.

        Usage::

            %memit [-i INTERVAL] [-o] statement
            %%memit [-i INTERVAL] [-o]
            ...cell...

        ``-i``: seconds between RSS samples (default 0.01); ``-o``: return the
        :class:`~analysis_lib.MemoryResult`. Nothing is logged (``%%memtrack`` logs).
        """
        opts, rest = self.parse_options(line, "i:o", posix=False, strict=False)
        try:
            interval = float(opts.get("i", DEFAULT_INTERVAL))
        except ValueError:
            raise UsageError(f"%memit: -i must be a number of seconds, got {opts['i']!r}") from None
        if not interval > 0:
            raise UsageError(f"%memit: -i must be > 0 seconds, got {interval}")
        code = self._statement(rest, cell, "memit", "f(10)")
        namespace = self.shell.user_ns
        result = _measure(exec, (code, namespace), {}, "memit", interval, None)
        print(f"peak memory: {result.peak_mib:.2f} MiB, increment: {result.increment_mib:.2f} MiB")
        return result if "o" in opts else None

    @line_cell_magic
    def mprun(self, line: str = "", cell: str | None = None) -> Any:
        """Run a statement with a line-by-line memory report of the functions named by ``-f``.

        Usage::

            %mprun -f func [-f other ...] [-r] statement
            %%mprun -f func [-r]
            ...cell...

        prints memory-profiler's table (line, memory after the line, increment,
        occurrences, source) for each function that ran; works for functions defined
        in notebook cells. ``-r`` returns a tuple of :class:`~analysis_lib.LineProfile`,
        one per ``-f``, in order.
        """
        opts, rest = self.parse_options(line, "rf:", list_all=True, posix=False, strict=False)
        names = opts.get("f", [])
        if not names:
            raise UsageError("%mprun: name at least one function with -f, e.g. %mprun -f f f(10)")
        funcs = []
        for name in names:
            try:
                # the user's own expression, evaluated as memory-profiler's %mprun does
                funcs.append((name, eval(name, self.shell.user_global_ns, self.shell.user_ns)))
            except Exception as exc:
                raise UsageError(f"%mprun: could not find function {name!r}: {exc}") from None
        code = self._statement(rest, cell, "mprun", "-f f f(10)")
        try:
            recorder = _LineRecorder([(f"-f {name}", func) for name, func in funcs])
        except (TypeError, ValueError) as exc:
            raise UsageError(f"%mprun: {exc}") from None
        with recorder:
            exec(code, self.shell.user_global_ns, self.shell.user_ns)
        profiles = tuple(recorder.profiles())
        for (name, _), profile in zip(funcs, profiles, strict=True):
            if profile.lines["occurrences"].sum() == 0:
                print(f"{name}: not called by the statement; no lines to show\n")
            else:
                print(f"{profile}\n")
        return profiles if "r" in opts else None

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
        left behind: ... MiB, ... s`` (then ``; Arrow: ... MiB held, ... MiB left
        behind`` where pyarrow holds memory) and appends the result to
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
    """Register ``%memit``, ``%mprun`` and ``%%memtrack`` (``%load_ext analysis_lib``).

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
        def f(n):
            a = [0] * n
            return len(a)
        %mprun -f f f(10**7)
        %%memtrack build a list
        numbers = list(range(10**6))
    """
    ipython.register_magics(MemoryMagics)
