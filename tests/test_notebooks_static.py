"""The committed notebooks: built from tools/build_notebooks.py, stripped, tagged."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["01-prerequisites", "02-install-module", "03-cleanup", "04-configure",
         "05-verify-mailflow", "90-rollback"]


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("step", STEPS)
def test_notebook_matches_its_source_and_is_stripped(step):
    path = ROOT / "notebooks" / f"{step}.ipynb"
    assert path.read_text(encoding="utf-8") == _builder().render(step), \
        "run `python tools/build_notebooks.py`"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"]["tags"]
    assert "ctx.conclude(" in "".join(code[-1]["source"])


def test_every_parameter_of_the_model_is_in_the_parameters_cell():
    from runbook.params import NAMES

    source = _builder().PARAMETERS
    for name in NAMES:
        assert f"\n{name} = " in "\n" + source, name


def test_notebook_cells_stay_short():
    for step, cells in _builder().NOTEBOOKS.items():
        for kind, text in cells:
            if kind == "code":
                assert len(text.splitlines()) <= 8, (step, text)
