"""environment.yml (conda users) and pyproject.toml (make setup) list the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# conda-forge spells a few packages differently from PyPI.
CONDA_NAMES = {"memory_profiler": "memory-profiler", "distributed": "dask"}
CONDA_ONLY = {"python", "gdal", "geos", "proj", "libspatialite", "pip"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()
    return name.replace("_", "-")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    return {_name(r): re.sub(r"^[\w\-.]+(\[[^\]]*\])?", "", r).strip() for r in reqs}


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e"):
                continue
            name = _name(item)
            name = CONDA_NAMES.get(name.replace("-", "_"), CONDA_NAMES.get(name, name))
            if name in CONDA_ONLY:
                continue
            out[name] = item[len(re.split(r"[<>=!~ ]", item, maxsplit=1)[0]) :].strip()
    return out


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert set(_environment()) == set(_pyproject())


def test_environment_yml_uses_the_same_version_ranges():
    env, pyproject = _environment(), _pyproject()
    differing = {
        n: (env[n], pyproject[n]) for n in env if n in pyproject and env[n] != pyproject[n]
    }
    assert differing == {}
