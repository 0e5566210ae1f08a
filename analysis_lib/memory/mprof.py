"""Memory over time: run a program under ``mprof run``, parse and plot its ``.dat`` file.

What we rely on from memory-profiler 0.61:

- the ``mprof run`` command line (``--interval``, ``--include-children``,
  ``--multiprocess``, ``--python``, ``--exit-code``, ``--output``), found next to
  ``sys.executable`` or run as ``python -m mprof``;
- the ``.dat`` format it writes (``mprof.py::run_action`` and
  ``memory_profiler.py::memory_usage``/``TimeStamper.show_results``), one record per line::

      CMDLINE <command line>
      MEM <MiB> <unix time>                                   one RSS sample
      CHLD <pid> <MiB> <unix time>                            one child's sample (--multiprocess)
      FUNC <module.name> <MiB> <t start> <MiB> <t end> [<depth>]   one @profile call (Python mode)

  With ``--include-children`` each ``MEM`` sample is the process *plus* its
  children. A ``FUNC`` record holds the memory at entry and exit of the call,
  not the peak inside it. Records are not in time order: the profiled program
  appends its ``FUNC`` lines when it exits, while mprof flushes its own buffer
  every 50 samples. mprof samples once more after the program ends; psutil
  reads a finished, not yet reaped process as 0 MiB, so samples of exactly 0
  are dropped.

We do not use ``mprof plot`` nor ``mprof.read_mprofile_file`` (which ignores
unknown lines and returns a loose dict): :func:`read_mprof` parses strictly.

Marking a span (a loop) inside a recording uses memory-profiler's own marker: under
``mprof run --python`` the builtin ``profile`` is its ``TimeStamper``, and
``profile.timestamp(name)`` brackets a block with a ``FUNC`` record named ``.<name>``
(memory and time at entry and exit). :func:`mprof_mark` does that when it runs there
and nothing elsewhere; :meth:`MprofProfile.span` reads the bracket back, and
:func:`plot_mprof_loops` draws each recording's memory above its level at the start
of the span. A run killed by ``timeout`` writes no ``FUNC`` records (memory-profiler
writes them when the program exits).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import math
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checks import check_type, fail_type, fail_value
from .steps import check_interval

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import pandas as pd
    from matplotlib.axes import Axes

_TAGS = ("CMDLINE", "MEM", "CHLD", "FUNC")
_PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class MprofSpan:
    """A marked span of an mprof recording (a ``FUNC`` record), with memory measured from its start.

    Attributes
    ----------
    name : str
        The marker's name (``"loop"`` for ``mprof_mark("loop")``).
    start_s, end_s : float
        When the span started and ended, in seconds since the recording's first sample.
    start_mib : float
        Memory when the span started (read by memory-profiler as the block was entered):
        the process's level before the loop, imports and set-up included.
    peak_mib : float
        Highest memory within the span: the ``MEM`` samples taken during it and the
        readings at its entry and exit.
    end_mib : float
        Memory when the span ended.
    """

    name: str
    start_s: float
    end_s: float
    start_mib: float
    peak_mib: float
    end_mib: float

    @property
    def duration_s(self) -> float:
        """Seconds from the start of the span to its end."""
        return self.end_s - self.start_s

    @property
    def peak_above_start_mib(self) -> float:
        """How far the memory rose above its level at the start (MiB)."""
        return self.peak_mib - self.start_mib

    @property
    def end_above_start_mib(self) -> float:
        """Memory still held at the end, above the level at the start (MiB)."""
        return self.end_mib - self.start_mib


@dataclasses.dataclass(frozen=True)
class MprofProfile:
    """One ``mprof run`` recording, parsed by :func:`read_mprof`.

    Times are seconds since the first ``MEM`` sample.

    Attributes
    ----------
    path : pathlib.Path
        The ``.dat`` file.
    cmdline : str or None
        The profiled command line (``CMDLINE``), if recorded.
    start_time : float
        Unix time of the first sample.
    samples : pandas.DataFrame
        ``time_s, mem_mib``: one row per ``MEM`` line (the process, plus its
        children when recorded with ``--include-children``), except readings of
        exactly 0 (a process that has ended).
    children : pandas.DataFrame
        ``pid, time_s, mem_mib``: one row per ``CHLD`` line (``--multiprocess``).
    functions : pandas.DataFrame
        ``name, start_s, end_s, duration_s, mem_start_mib, mem_end_mib, depth``:
        one row per ``@profile`` call (``FUNC`` lines; ``depth`` may be missing).
    """

    path: Path
    cmdline: str | None
    start_time: float
    samples: pd.DataFrame = dataclasses.field(repr=False)
    children: pd.DataFrame = dataclasses.field(repr=False)
    functions: pd.DataFrame = dataclasses.field(repr=False)

    @property
    def start_mib(self) -> float:
        """Memory at the first sample (MiB)."""
        return float(self.samples["mem_mib"].iloc[0])

    @property
    def end_mib(self) -> float:
        """Memory at the last sample (MiB)."""
        return float(self.samples["mem_mib"].iloc[-1])

    @property
    def peak_mib(self) -> float:
        """Highest sampled memory (MiB)."""
        return float(self.samples["mem_mib"].max())

    @property
    def peak_time_s(self) -> float:
        """Time of the highest sample (s)."""
        return float(self.samples["time_s"].iloc[int(self.samples["mem_mib"].to_numpy().argmax())])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample (s)."""
        return float(self.samples["time_s"].iloc[-1])

    @property
    def label(self) -> str:
        """A short name: the file name without ``.dat``."""
        return self.path.stem

    def span(self, name: str = "loop") -> MprofSpan:
        r"""Return the first span marked ``name`` (:func:`mprof_mark`), its memory measured.

        Parameters
        ----------
        name : str
            The marker's name; a ``FUNC`` record matches when the last dotted part of
            its name is ``name`` (``.loop`` for a marker, ``__main__.loop`` for an
            ``@profile`` function called ``loop``).

        Returns
        -------
        MprofSpan
            Start, end, and the memory at the start, at the peak and at the end.

        Raises
        ------
        ValueError
            If the recording has no such span (the message lists the spans it has).

        Examples
        --------
        >>> import pathlib, tempfile
        >>> dat = pathlib.Path(tempfile.mkdtemp()) / "run.dat"
        >>> _ = dat.write_text(
        ...     "MEM 20.0 100.0\nMEM 80.0 101.0\nMEM 95.0 101.5\nMEM 90.0 102.0\n"
        ...     "FUNC .loop 80.5 101.0 90.0 102.0 1\n"
        ... )
        >>> span = read_mprof(dat).span("loop")
        >>> span.start_s, span.peak_above_start_mib, span.end_above_start_mib
        (1.0, 14.5, 9.5)
        """
        check_type("name", name, str, "a marker name (str)")
        calls = self.functions[self.functions["name"].str.rsplit(".", n=1).str[-1] == name]
        if calls.empty:
            names = sorted(set(self.functions["name"])) or ["none"]
            raise ValueError(
                f"{self.path}: no span named {name!r} (FUNC records: {', '.join(names)}); "
                f"wrap the code in `with analysis_lib.memory.mprof_mark({name!r}):` and record "
                "it with run_mprof(..., python=True)"
            )
        call = calls.sort_values("start_s").iloc[0]
        start, end = float(call["start_s"]), float(call["end_s"])
        inside = self.samples["mem_mib"][self.samples["time_s"].between(start, end)]
        readings = [float(call["mem_start_mib"]), float(call["mem_end_mib"]), *inside.tolist()]
        return MprofSpan(
            name=name,
            start_s=start,
            end_s=end,
            start_mib=float(call["mem_start_mib"]),
            peak_mib=max(readings),
            end_mib=float(call["mem_end_mib"]),
        )

    def summary(self) -> dict[str, Any]:
        r"""Return the headline numbers as a dict.

        Returns
        -------
        dict
            ``label, samples, duration_s, start_mib, peak_mib, peak_time_s, end_mib,
            functions, children``.

        Examples
        --------
        >>> import pathlib, tempfile
        >>> dat = pathlib.Path(tempfile.mkdtemp()) / "run.dat"
        >>> _ = dat.write_text("MEM 10.0 100.0\nMEM 30.0 100.5\nMEM 12.0 101.0\n")
        >>> read_mprof(dat).summary()["peak_mib"]
        30.0
        """
        return {
            "label": self.label,
            "samples": len(self.samples),
            "duration_s": self.duration_s,
            "start_mib": self.start_mib,
            "peak_mib": self.peak_mib,
            "peak_time_s": self.peak_time_s,
            "end_mib": self.end_mib,
            "functions": len(self.functions),
            "children": int(self.children["pid"].nunique()),
        }


def _fail(path: Path, lineno: int, message: str) -> ValueError:
    return ValueError(f"{path}:{lineno}: {message}")


def _numbers(path: Path, lineno: int, tag: str, fields: list[str], names: str) -> list[float]:
    """Parse fields as finite floats or raise naming the line and the expected layout."""
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = []
    if len(values) != len(fields) or not all(math.isfinite(v) for v in values):
        raise _fail(path, lineno, f"{tag} needs numbers '{names}', got {' '.join(fields)!r}")
    return values


def _memory(path: Path, lineno: int, tag: str, mib: float) -> float:
    if mib < 0:
        # memory_profiler writes -1 when it could not read the process's memory
        raise _fail(path, lineno, f"{tag} memory is negative ({mib}): the sample failed")
    return mib


def read_mprof(path: str | os.PathLike[str]) -> MprofProfile:
    r"""Parse a ``.dat`` file written by ``mprof run``, strictly.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    MprofProfile
        Samples, child samples and ``@profile`` brackets as DataFrames, times in
        seconds since the first sample.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        ``"<path>:<line>: <problem>"`` for an empty file, a file without ``MEM``
        samples, an unknown tag, a line with missing or non-numeric fields, a
        negative memory, or a second ``CMDLINE`` (``mprof run`` appends a new run
        to an existing file).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> dat = pathlib.Path(tempfile.mkdtemp()) / "run.dat"
    >>> _ = dat.write_text(
    ...     "CMDLINE python demo.py\n"
    ...     "MEM 20.5 1000.0\n"
    ...     "MEM 120.5 1000.5\n"
    ...     "FUNC __main__.grow 20.6 1000.1 21.0 1000.9 0\n"
    ...     "MEM 21.0 1001.0\n"
    ... )
    >>> profile = read_mprof(dat)
    >>> profile.peak_mib, profile.duration_s, profile.functions.loc[0, "name"]
    (120.5, 1.0, '__main__.grow')
    >>> _ = dat.write_text("MEM 20.5 1000.0\nMEM twelve 1000.5\n")
    >>> read_mprof(dat)
    Traceback (most recent call last):
    ...
    ValueError: ...run.dat:2: MEM needs numbers '<MiB> <unix time>', got 'twelve 1000.5'
    """
    import pandas as pd

    path = Path(path)
    cmdline: str | None = None
    mem: list[tuple[float, float]] = []
    children: list[tuple[int, float, float]] = []
    functions: list[tuple[str, float, float, float, float, int | None]] = []
    lineno = 0
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            tag, _, rest = line.partition(" ")
            fields = rest.split()
            if tag == "MEM":
                if len(fields) != 2:
                    raise _fail(path, lineno, f"MEM needs '<MiB> <unix time>', got {rest!r}")
                mib, t = _numbers(path, lineno, tag, fields, "<MiB> <unix time>")
                if mib == 0:
                    # psutil reads 0 for a process that has exited but is not reaped yet (a
                    # zombie): mprof's last sample after the program ends. Not a measurement.
                    continue
                mem.append((t, _memory(path, lineno, tag, mib)))
            elif tag == "CHLD":
                if len(fields) != 3 or not fields[0].isdigit():
                    raise _fail(path, lineno, f"CHLD needs '<pid> <MiB> <unix time>', got {rest!r}")
                mib, t = _numbers(path, lineno, tag, fields[1:], "<pid> <MiB> <unix time>")
                pid = int(fields[0])
                if pid == 0 or mib == 0:
                    # memory_profiler writes "CHLD 0 0.0 <t>" when the children vanished while
                    # it listed them (psutil.NoSuchProcess), and a child that has exited but
                    # is not reaped yet (a zombie) reads 0: neither is a measurement.
                    continue
                children.append((pid, t, _memory(path, lineno, tag, mib)))
            elif tag == "FUNC":
                if len(fields) not in (5, 6):
                    raise _fail(
                        path,
                        lineno,
                        "FUNC needs '<name> <MiB> <t start> <MiB> <t end> [<depth>]', "
                        f"got {rest!r}",
                    )
                layout = "<MiB> <t start> <MiB> <t end>"
                m0, t0, m1, t1 = _numbers(path, lineno, tag, fields[1:5], layout)
                depth = None
                if len(fields) == 6:
                    if not fields[5].lstrip("-").isdigit():
                        raise _fail(path, lineno, f"FUNC depth must be an integer: {fields[5]!r}")
                    depth = int(fields[5])
                if t1 < t0:
                    raise _fail(path, lineno, f"FUNC ends ({t1}) before it starts ({t0})")
                functions.append(
                    (
                        fields[0],
                        t0,
                        t1,
                        _memory(path, lineno, tag, m0),
                        _memory(path, lineno, tag, m1),
                        depth,
                    )
                )
            elif tag == "CMDLINE":
                if cmdline is not None:
                    raise _fail(
                        path,
                        lineno,
                        "second CMDLINE: the file holds more than one run (mprof run appends "
                        "to an existing output file); delete it before recording again",
                    )
                cmdline = rest
            elif line.strip() == "":
                raise _fail(path, lineno, "blank line (mprof never writes one)")
            else:
                raise _fail(
                    path, lineno, f"unknown record {tag!r}; expected one of {', '.join(_TAGS)}"
                )
    if lineno == 0:
        raise _fail(path, 1, "empty file: no CMDLINE and no MEM samples")
    if not mem:
        raise _fail(
            path,
            lineno,
            f"no MEM samples in {lineno} line(s): the program ended before the first sample "
            "or the file is not an mprof recording",
        )
    start = mem[0][0]
    samples = pd.DataFrame(mem, columns=["time_s", "mem_mib"])
    samples["time_s"] -= start
    child_frame = pd.DataFrame(children, columns=["pid", "time_s", "mem_mib"]).astype(
        {"pid": "int64", "time_s": "float64", "mem_mib": "float64"}
    )
    child_frame["time_s"] -= start
    func_frame = pd.DataFrame(
        functions, columns=["name", "start_s", "end_s", "mem_start_mib", "mem_end_mib", "depth"]
    ).astype(
        {
            "name": "object",
            "start_s": "float64",
            "end_s": "float64",
            "mem_start_mib": "float64",
            "mem_end_mib": "float64",
            "depth": "Int64",
        }
    )
    func_frame["start_s"] -= start
    func_frame["end_s"] -= start
    func_frame.insert(3, "duration_s", func_frame["end_s"] - func_frame["start_s"])
    return MprofProfile(
        path=path,
        cmdline=cmdline,
        start_time=start,
        samples=samples,
        children=child_frame,
        functions=func_frame,
    )


def _mprof_command() -> list[str]:
    """Return the argv prefix that runs ``mprof`` in this environment."""
    beside = Path(sys.executable).with_name("mprof")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "mprof"]


def _program(target: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    if isinstance(target, os.PathLike) or (isinstance(target, str) and target.endswith(".py")):
        if not Path(target).is_file():
            raise FileNotFoundError(f"`target` script not found: {os.fspath(target)}")
        return [os.fspath(target)]
    if isinstance(target, str) and Path(target).is_file():
        return [target]
    if isinstance(target, str):
        program = shlex.split(target)
    elif isinstance(target, Sequence):
        program = [os.fspath(part) for part in target]
    else:
        raise fail_type("target", "a script path, a command string or an argv list", target)
    if not program:
        raise fail_value("target", "a script path or a non-empty command", target)
    return program


def run_mprof(
    target: str | os.PathLike[str] | Sequence[str],
    output: str | os.PathLike[str] | None = None,
    interval: float = 0.1,
    include_children: bool = True,
    python: bool = False,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    *,
    multiprocess: bool = False,
) -> MprofProfile:
    r"""Run a program under ``mprof run`` in a subprocess and return its parsed recording.

    A ``.py`` script runs in mprof's Python mode: it is started with this
    environment's Python, and functions decorated with ``@profile`` (a builtin
    there) get ``FUNC`` brackets. The environment's ``bin`` directory is put first
    on ``PATH``, so ``["papermill", "in.ipynb", "out.ipynb"]`` or
    ``"python -c '...'"`` run with this environment's tools.

    Parameters
    ----------
    target : str, os.PathLike or sequence of str
        A script path, a command string (split with :func:`shlex.split`) or an argv list.
    output : str or os.PathLike, optional
        The ``.dat`` file to write; replaced if it exists (``mprof run`` itself
        would append a second run to it). Defaults to ``mprofile_<pid>.dat``
        in the current directory.
    interval : float
        Seconds between samples.
    include_children : bool
        Add the memory of child processes to each ``MEM`` sample (default True):
        a notebook run by papermill lives in a kernel that is a child process.
    python : bool
        Force mprof's Python mode (``--python``), for example to run a module
        such as ``["papermill", ...]`` with ``@profile`` brackets. Scripts ending
        in ``.py`` get it anyway.
    timeout : float, optional
        Kill mprof and the profiled program (their whole process group) after
        this many seconds.
    env : mapping, optional
        Extra environment variables for the program, on top of ``os.environ``.
    multiprocess : bool
        Also record each child process separately (``--multiprocess``, ``CHLD``
        lines). mprof turns Python mode off then: no ``FUNC`` brackets.

    Returns
    -------
    MprofProfile
        The parsed recording (see :func:`read_mprof`).

    Raises
    ------
    ValueError
        If ``interval`` or ``timeout`` is not positive, or ``target`` is empty.
    FileNotFoundError
        If ``target`` is a path (or a string ending in ``.py``) that does not exist.
    RuntimeError
        If the program exits with a non-zero status (the message ends with its
        stderr) or if ``timeout`` expires.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> script = tmp / "grow.py"
    >>> _ = script.write_text(
    ...     "import time\n"
    ...     "@profile\n"
    ...     "def grow():\n"
    ...     "    data = [0] * 5_000_000\n"
    ...     "    time.sleep(0.3)\n"
    ...     "grow()\n"
    ... )
    >>> profile = run_mprof(script, output=tmp / "grow.dat", interval=0.02)
    >>> profile.functions["name"].tolist()
    ['__main__.grow']
    >>> profile.peak_mib - profile.start_mib > 20
    True
    """
    check_interval(interval)
    expected = "a positive number of seconds or None"
    check_type("timeout", timeout, (int, float), expected, allow_none=True)
    if timeout is not None and not timeout > 0:
        raise fail_value("timeout", expected, timeout)
    program = _program(target)
    output = Path(output) if output is not None else Path(f"mprofile_{os.getpid()}.dat")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)

    cmd = [*_mprof_command(), "run", "--exit-code", "--interval", str(interval)]
    cmd += ["--output", str(output)]
    if include_children:
        cmd.append("--include-children")
    if multiprocess:
        cmd.append("--multiprocess")
    if python:
        cmd.append("--python")
    cmd += program

    run_env = {**os.environ, **(env or {})}
    bindir = str(Path(sys.executable).parent)
    run_env["PATH"] = os.pathsep.join([bindir, run_env.get("PATH", os.defpath)])
    # mprof leaves the profiled program running when mprof itself is killed: run both in a
    # new session and kill the whole group on timeout.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise RuntimeError(
            f"mprof run timed out after {timeout} s and was killed: {shlex.join(cmd)}"
        ) from None
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout or "").strip().splitlines()[-20:])
        raise RuntimeError(
            f"mprof run exited with status {proc.returncode}: {shlex.join(cmd)}\n"
            f"--- last lines of its stderr ---\n{tail}"
        )
    return read_mprof(output)


def plot_mprof(
    profiles: MprofProfile
    | str
    | os.PathLike[str]
    | Sequence[MprofProfile | str | os.PathLike[str]],
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    functions: bool = True,
    children: bool = False,
) -> Axes:
    r"""Overlay several mprof recordings: memory (MiB) against time (s), ``@profile`` calls shaded.

    Each profile is one line, in its own colour; each ``FUNC`` bracket is a
    shaded span of that colour. Times start at each recording's first sample.

    Parameters
    ----------
    profiles : MprofProfile, path, or a sequence of them
        Recordings, or ``.dat`` paths read with :func:`read_mprof`.
    labels : sequence of str, optional
        Legend labels, one per profile; default: the file names.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made when omitted.
    functions : bool
        Shade the ``@profile`` calls (default True).
    children : bool
        Also draw each child process's samples as a thin dashed line.

    Returns
    -------
    matplotlib.axes.Axes
        The axes; ``ax.figure.savefig(path, bbox_inches="tight")`` writes the
        picture (the legend sits below the axes).

    Raises
    ------
    ValueError
        If no profile is given or ``labels`` has the wrong length.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> dat = pathlib.Path(tempfile.mkdtemp()) / "run.dat"
    >>> _ = dat.write_text("MEM 10.0 100.0\nMEM 30.0 100.5\nMEM 12.0 101.0\n")
    >>> ax = plot_mprof([dat, dat], labels=["first", "second"])
    >>> [line.get_label() for line in ax.get_lines()]
    ['first', 'second']
    """
    import matplotlib.pyplot as plt

    loaded, labels = _profiles_and_labels(profiles, labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for index, (profile, label) in enumerate(zip(loaded, labels, strict=True)):
        (line,) = ax.plot(
            profile.samples["time_s"], profile.samples["mem_mib"], linewidth=1.5, label=label
        )
        colour = line.get_color()
        if functions:
            for call in profile.functions.itertuples(index=False):
                ax.axvspan(call.start_s, call.end_s, color=colour, alpha=0.12, linewidth=0)
                ax.annotate(
                    f"{call.name.rsplit('.', 1)[-1]}() {call.duration_s:.2f} s",
                    xy=(call.start_s, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -12 - 11 * index),  # one text row per profile
                    textcoords="offset points",
                    fontsize=8,
                    color=colour,
                )
        if children:
            for pid, child in profile.children.groupby("pid"):
                ax.plot(
                    child["time_s"],
                    child["mem_mib"],
                    linestyle="--",
                    linewidth=0.8,
                    color=colour,
                    label=f"{label}: child {pid}",
                )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("memory (MiB)")
    ax.set_title("Memory over time (mprof)")
    ax.set_ylim(bottom=0)
    # below the axes, where it cannot hide a line or a bracket's label
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    return ax


@contextlib.contextmanager
def mprof_mark(name: str = "loop") -> Iterator[None]:
    """Mark a block in an ``mprof run --python`` recording; do nothing anywhere else.

    Under ``mprof run --python`` (:func:`run_mprof` with ``python=True``, or a ``.py``
    script) the builtin ``profile`` is memory-profiler's ``TimeStamper``; this uses its
    ``profile.timestamp(name)``, which writes a ``FUNC`` record named ``.<name>`` with
    the memory and time at entry and exit. :meth:`MprofProfile.span` reads it back and
    :func:`plot_mprof_loops` draws from it. Outside such a run (no ``profile`` builtin
    with ``timestamp``) the block just runs.

    Parameters
    ----------
    name : str
        The span's name: one word (the ``.dat`` format splits on whitespace).

    Yields
    ------
    None

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If ``name`` is empty or contains whitespace.

    Examples
    --------
    In the program run under ``mprof``::

        with mprof_mark("loop"):
            for zip_code in zips:
                ...

    Outside mprof it is a no-op:

    >>> with mprof_mark("loop"):
    ...     total = sum(range(10))
    >>> total
    45
    """
    check_type("name", name, str, "one word (str)")
    if not name or any(ch.isspace() for ch in name):
        raise fail_value("name", "one word without whitespace", name)
    timestamp = getattr(getattr(builtins, "profile", None), "timestamp", None)
    if timestamp is None:
        yield
        return
    with timestamp(name):
        yield


def plot_mprof_loops(
    profiles: MprofProfile
    | str
    | os.PathLike[str]
    | Sequence[MprofProfile | str | os.PathLike[str]],
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    span: str = "loop",
) -> Axes:
    r"""Draw each recording's memory above its level when its marked span (loop) started.

    Every process first pays for its imports and set-up, which dwarfs what a loop adds
    on top when the recordings are drawn in absolute MiB (:func:`plot_mprof`). Here
    each curve starts at 0 s and 0 MiB when its span starts (:meth:`MprofProfile.span`),
    runs until the span ends (a dotted vertical line), and its peak is marked; the
    legend gives each loop's peak above its start, what it still held at its end and
    how long it ran.

    Parameters
    ----------
    profiles : MprofProfile, path, or a sequence of them
        Recordings with a span named ``span``, or ``.dat`` paths.
    labels : sequence of str, optional
        One per profile; default: the file names.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure (constrained layout) is made when omitted.
    span : str
        The marker's name (:func:`mprof_mark`).

    Returns
    -------
    matplotlib.axes.Axes
        The axes; one line per profile, labelled
        ``"<label>: peak +<MiB> MiB, end +<MiB> MiB, <seconds> s"``.

    Raises
    ------
    ValueError
        If no profile is given, ``labels`` has the wrong length, or a recording has
        no span named ``span``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> dat = pathlib.Path(tempfile.mkdtemp()) / "run.dat"
    >>> _ = dat.write_text(
    ...     "MEM 20.0 100.0\nMEM 80.0 101.0\nMEM 95.0 101.5\nMEM 90.0 102.0\n"
    ...     "FUNC .loop 80.5 101.0 90.0 102.0 1\n"
    ... )
    >>> ax = plot_mprof_loops(dat, labels=["one loop"])
    >>> [line.get_label() for line in ax.get_lines()][0]
    'one loop: peak +14.5 MiB, end +9.5 MiB, 1.0 s'
    """
    import matplotlib.pyplot as plt

    loaded, labels = _profiles_and_labels(profiles, labels)
    check_type("span", span, str, "a marker name (str)")
    spans = [profile.span(span) for profile in loaded]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for profile, label, marked in zip(loaded, labels, spans, strict=True):
        samples = profile.samples
        inside = samples[samples["time_s"].between(marked.start_s, marked.end_s)]
        times = [0.0, *(inside["time_s"] - marked.start_s).tolist(), marked.duration_s]
        above = [0.0, *(inside["mem_mib"] - marked.start_mib).tolist()]
        above.append(marked.end_above_start_mib)
        (line,) = ax.plot(
            times,
            above,
            linewidth=1.5,
            label=(
                f"{label}: peak {marked.peak_above_start_mib:+.1f} MiB, "
                f"end {marked.end_above_start_mib:+.1f} MiB, {_seconds(marked.duration_s)}"
            ),
        )
        colour = line.get_color()
        peak_at = times[max(range(len(above)), key=above.__getitem__)]
        ax.plot([peak_at], [marked.peak_above_start_mib], marker="v", color=colour)
        ax.axvline(marked.duration_s, color=colour, linestyle=":", linewidth=1)
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xlabel(f"seconds since the {span} started (dotted: it ended)")
    ax.set_ylabel(f"MiB above the level at the {span}'s start")
    ax.set_title(f"Memory each {span} added (mprof)")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def _seconds(seconds: float) -> str:
    """Format a duration for a legend: two decimals under a second, one above."""
    return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"


def _profiles_and_labels(
    profiles: Any, labels: Sequence[str] | None
) -> tuple[list[MprofProfile], list[str]]:
    """Load profiles given as objects or paths; check ``labels`` against them."""
    if isinstance(profiles, MprofProfile | str | os.PathLike):
        profiles = [profiles]
    loaded = [p if isinstance(p, MprofProfile) else read_mprof(p) for p in profiles]
    if not loaded:
        raise fail_value("profiles", "at least one profile", profiles)
    if labels is None:
        return loaded, [p.label for p in loaded]
    if isinstance(labels, str) or len(labels) != len(loaded):
        raise fail_value("labels", f"a sequence of {len(loaded)} strings", labels)
    return loaded, list(labels)
