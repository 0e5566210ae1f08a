"""Notebook tools: the report folder, figures, and papermill runs of parameterised notebooks.

Generic: nothing here knows the project's models. The default report folder is
``<BASE_DIR>/reports`` when the Django settings define ``BASE_DIR`` (as ``startproject``
writes them), else ``reports/`` in the current directory; the environment variable
``ANALYSIS_REPORTS_DIR`` overrides both.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.figure import Figure

__all__ = ["notebook_parameters", "report_dir", "run_notebook", "save_figure"]

# A figure name becomes a file name: keep it to one plain path component.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def project_root() -> Path:
    """Return the project folder: ``settings.BASE_DIR`` when Django defines it, else cwd."""
    try:
        from django.conf import settings

        if settings.configured and getattr(settings, "BASE_DIR", None):
            return Path(settings.BASE_DIR)
    except ImportError:  # pragma: no cover - Django is a dependency
        pass
    return Path.cwd()


def default_reports_dir() -> Path:
    """``$ANALYSIS_REPORTS_DIR``, else ``reports/`` in :func:`project_root`."""
    env = os.environ.get("ANALYSIS_REPORTS_DIR")
    return Path(env) if env else project_root() / "reports"


def report_dir(folder: str | Path | None = None) -> Path:
    """Return the folder reports go to, created if missing.

    Parameters
    ----------
    folder : str, Path or None
        The folder; ``None`` means :func:`default_reports_dir` (``reports/`` in the
        Django project's ``BASE_DIR``), whatever the current directory (a notebook
        opened in JupyterLab runs in ``notebooks/``, papermill from the project root).

    Returns
    -------
    Path
        The folder, which exists.

    Raises
    ------
    NotADirectoryError
        If ``folder`` exists and is not a directory.

    Examples
    --------
    >>> report_dir().name
    'reports'
    """
    path = default_reports_dir() if folder is None else Path(folder)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output folder {str(path)!r} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(
    fig: Figure, name: str, folder: str | Path | None = None, *, dpi: int = 100
) -> Path:
    """Save a matplotlib figure as ``<folder>/<name>.png`` and return the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (for an Axes ``ax``, pass ``ax.figure``).
    name : str
        File name without extension: letters, digits, ``_``, ``-`` and ``.``,
        no folder part (``".png"`` is added when missing).
    folder : str, Path or None
        Where to write; ``None`` means ``reports/`` at the project root.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        The PNG written.

    Raises
    ------
    TypeError
        If ``fig`` is not a matplotlib Figure.
    ValueError
        If ``name`` is empty, holds a path separator or other characters that
        do not belong in a file name, or ``dpi`` is not positive.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> path = save_figure(fig, "example", folder=tmp_path)  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'example.png'
    """
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(
            f"save_figure() needs a matplotlib Figure, got {type(fig).__name__}; "
            "for an Axes pass ax.figure"
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"figure name {name!r} is not a plain file name: use letters, digits, '_', '-' "
            "and '.', without a folder"
        )
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    stem = name[: -len(".png")] if name.lower().endswith(".png") else name
    path = report_dir(folder) / f"{stem}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Return the parameters a notebook declares in its cell tagged ``parameters``.

    Parameters
    ----------
    path : str or Path
        The notebook.

    Returns
    -------
    dict
        Parameter name to its default value (as written in the notebook).

    Raises
    ------
    FileNotFoundError
        If the notebook does not exist.
    ValueError
        If the notebook has no cell tagged ``parameters``.

    Examples
    --------
    >>> params = notebook_parameters("notebooks/01_buildings_per_zip.ipynb")  # doctest: +SKIP
    >>> params["state"]  # doctest: +SKIP
    'MA'
    """
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {str(path)!r} does not exist")
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"{path}: no cell is tagged 'parameters'")
    tree = ast.parse(cells[0].source, filename=f"{path} (parameters cell)")
    found: dict[str, Any] = {}
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name):
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:  # an expression, not a literal: keep its source
                found[target.id] = ast.get_source_segment(cells[0].source, value)
    return found


def run_notebook(
    path: str | Path,
    output_dir: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    kernel_name: str = "python3",
    cwd: str | Path | None = None,
    progress_bar: bool = False,
    log_output: bool = False,
    timeout: float | None = None,
) -> Path:
    """Execute a notebook with papermill, writing ``<output_dir>/<name>.ipynb``.

    The notebook runs in a fresh ``kernel_name`` kernel started from the
    project root (``settings.BASE_DIR``, else the current directory), so
    relative paths resolve the
    way they do for ``papermill`` on the command line). The kernel inherits
    this process's environment, ``DATABASE_URL`` included. If the notebook
    declares an ``output_dir`` parameter and ``parameters`` does not set it,
    it is set to ``output_dir``, so figures land next to the executed notebook.

    Parameters
    ----------
    path : str or Path
        The notebook to run.
    output_dir : str, Path or None
        Where the executed notebook (and its figures) go; ``None`` means
        ``reports/`` at the project root.
    parameters : mapping, optional
        Values for the notebook's ``parameters`` cell. Every name must be one
        the notebook declares.
    kernel_name : str
        The Jupyter kernel; the committed notebooks use the standard
        ``python3`` kernel and set Django up themselves.
    cwd : str, Path or None
        Working directory of the kernel; ``None`` means the project root.
    progress_bar : bool
        Show papermill's per-cell progress bar.
    log_output : bool
        Echo the notebook's output to this process's log as it runs.
    timeout : float or None
        Seconds a single cell may run; ``None`` means no limit.

    Returns
    -------
    Path
        The executed notebook.

    Raises
    ------
    FileNotFoundError
        If the notebook does not exist.
    ValueError
        If ``parameters`` names a parameter the notebook does not declare.
    papermill.exceptions.PapermillExecutionError
        If a cell fails; the executed notebook is still written, with the
        error in the failing cell's output.

    Examples
    --------
    >>> out = run_notebook(  # doctest: +SKIP
    ...     "notebooks/01_buildings_per_zip.ipynb", "reports", {"state": "MA"}
    ... )
    >>> out.name  # doctest: +SKIP
    '01_buildings_per_zip.ipynb'
    """
    import papermill

    path = Path(path)
    declared = notebook_parameters(path)
    params = dict(parameters or {})
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(
            f"{path.name} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"it declares {', '.join(map(repr, declared))}"
        )
    out_dir = report_dir(output_dir).resolve()
    if "output_dir" in declared:
        params.setdefault("output_dir", str(out_dir))
    output = out_dir / path.name
    papermill.execute_notebook(
        str(path),
        str(output),
        parameters=params,
        kernel_name=kernel_name,
        cwd=str(project_root() if cwd is None else cwd),
        progress_bar=progress_bar,
        log_output=log_output,
        execution_timeout=timeout,
    )
    return output
