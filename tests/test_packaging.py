"""Dependencies are declared once in pyproject.toml and mirrored in environment.yml."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(d): d for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted.update({_name(d): d for d in extra})
    env = (ROOT / "environment.yml").read_text()
    section = env.split("dependencies:", 1)[1]
    listed = {}
    for line in section.splitlines():
        match = re.match(r"^\s+- ([A-Za-z0-9_.-]+)\s*([<>=!~].*)?$", line)
        if match and match.group(1) not in ("python", "pip"):
            listed[_name(match.group(1))] = match.group(2) or ""
    assert set(listed) == set(wanted)
    for name, spec in wanted.items():
        assert spec[len(_name(spec)):].strip() == listed[name].strip(), name


def test_required_packages_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(d) for d in project["dependencies"]}
    names |= {_name(d) for d in project["optional-dependencies"]["test"]}
    assert {"jupyterlab", "papermill", "ipywidgets", "pandas", "dnspython", "nbval",
            "pytest"} <= names
