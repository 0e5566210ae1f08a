"""environment.yml (conda users) and pyproject.toml (make setup) list the same packages."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# conda-forge spells a few packages differently from PyPI.
CONDA_NAMES = {"memory_profiler": "memory-profiler", "distributed": "dask"}
CONDA_ONLY = {"python", "gdal", "geos", "proj", "libspatialite", "pip"}
# conda-forge's Python loads SQLite extensions: the `spatialite` extra is for pip users only.
PIP_ONLY = {"pysqlite3-binary"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()
    return name.replace("_", "-")


def _pyproject_data() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject() -> dict[str, list[SpecifierSet]]:
    """Each package with its ranges (one per line: Django has one per Python version)."""
    project = _pyproject_data()["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    out: dict[str, list[SpecifierSet]] = {}
    for line in reqs:
        req = Requirement(line)
        out.setdefault(_name(req.name), []).append(req.specifier)
    return out


def _environment_items() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    items = []
    for dep in env["dependencies"]:
        items.extend(dep["pip"] if isinstance(dep, dict) else [dep])
    return [item for item in items if not item.startswith("-e")]


def _environment() -> dict[str, SpecifierSet]:
    out = {}
    for item in _environment_items():
        name = _name(item)
        name = CONDA_NAMES.get(name.replace("-", "_"), CONDA_NAMES.get(name, name))
        if name in CONDA_ONLY:
            continue
        out[name] = SpecifierSet(item[len(re.split(r"[<>=!~ ]", item, maxsplit=1)[0]) :].strip())
    return out


def _probe_versions(specs: list[SpecifierSet]) -> list[Version]:
    """Every version a bound names, and its neighbours: enough to tell two sets of ranges apart."""
    out = set()
    for spec_set in specs:
        for spec in spec_set:
            base = Version(spec.version.replace(".*", ""))
            parts = [*base.release, 0, 0][:3]
            for delta in (-1, 0, 1):
                for i in range(3):
                    probe = list(parts)
                    probe[i] = max(probe[i] + delta, 0)
                    out.add(Version(".".join(map(str, probe))))
    return sorted(out)


def test_environment_yml_lists_the_same_packages_as_pyproject():
    assert set(_environment()) == set(_pyproject()) - PIP_ONLY


def test_environment_yml_allows_the_same_versions():
    env, pyproject = _environment(), _pyproject()
    differing = {}
    for name in env.keys() & pyproject.keys():
        specs = [env[name], *pyproject[name]]
        for version in _probe_versions(specs):
            in_env = env[name].contains(version, prereleases=True)
            in_pyproject = any(s.contains(version, prereleases=True) for s in pyproject[name])
            if in_env != in_pyproject:
                differing[name] = (str(env[name]), [str(s) for s in pyproject[name]], str(version))
                break
    assert differing == {}


def test_environment_yml_python_matches_requires_python():
    (python,) = [item for item in _environment_items() if _name(item) == "python"]
    assert SpecifierSet(python[len("python") :]) == SpecifierSet(
        _pyproject_data()["project"]["requires-python"]
    )


def test_probing_tells_different_ranges_apart():
    """The comparison above is not vacuous: it sees a changed bound."""
    specs = [SpecifierSet(">=2.2,<4"), SpecifierSet(">=2.2,<3")]
    probes = _probe_versions(specs)
    assert any(specs[0].contains(v) != specs[1].contains(v) for v in probes)


@pytest.mark.parametrize(
    ("python", "allowed"),
    [
        ("3.11", {"5.2.9"}),
        ("3.12", {"5.2.9", "6.0.1", "6.1.3"}),
        ("3.13", {"5.2.9", "6.0.1", "6.1.3"}),
    ],
)
def test_django_6_only_from_python_3_12(python, allowed):
    """Django 6 needs Python 3.12+: the markers say so, and 3.11 keeps Django 5.2."""
    lines = [
        Requirement(r) for r in _pyproject_data()["project"]["dependencies"] if _name(r) == "django"
    ]
    active = [r for r in lines if r.marker is None or r.marker.evaluate({"python_version": python})]
    candidates = {"5.1.9", "5.2.9", "6.0.1", "6.1.3", "7.0"}
    ok = {v for v in candidates if any(r.specifier.contains(v) for r in active)}
    assert ok == allowed
