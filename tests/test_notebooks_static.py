"""The committed notebooks: built from tools/build_notebooks.py, stripped, tagged."""

import ast
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["01-prerequisites", "02-install-module", "03-cleanup", "04-configure",
         "05-verify-mailflow", "06-diagnose-mail-loops", "90-rollback"]
# Parameters a notebook has beside the model's, and who checks them.
OWN_PARAMETERS = {
    "06-diagnose-mail-loops": {"window_hours", "recipients", "message_id"},
    "90-rollback": {"source_run"},
}


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


def _defaults(step: str) -> dict:
    """The parameters cell of `step` as names and values."""
    [(kind, text)] = [c for c in _builder().NOTEBOOKS[step] if c[0] == "params"]
    return {node.targets[0].id: ast.literal_eval(node.value)
            for node in ast.parse(text).body}


def test_the_notebooks_are_the_steps_the_builder_writes():
    assert sorted(_builder().NOTEBOOKS) == STEPS
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == STEPS


@pytest.mark.parametrize("step", STEPS)
def test_parameters_cell_holds_the_model_and_only_the_notebooks_own_beside_it(step):
    from runbook.params import NAMES

    names = set(_defaults(step))
    assert names - set(NAMES) == OWN_PARAMETERS.get(step, set())
    assert set(NAMES) <= names


@pytest.mark.parametrize("step", STEPS)
def test_parameters_cell_defaults_are_accepted(step):
    from runbook import params

    values = _defaults(step)
    checked = params.validate(**{n: values[n] for n in params.NAMES})
    assert (checked.backend, checked.confirm) == ("sandbox", False)


def test_diagnosis_runs_alone_on_the_migrated_tenant_its_defaults_declare():
    from runbook import loops
    from runbook.sandbox import scenarios

    values = _defaults("06-diagnose-mail-loops")
    assert values["scenario"] == "migrated"
    declared = {k: values[k] for k in ("tenant", "domains", "region", "routing")}
    assert declared == scenarios.declared("migrated")
    asked = loops.request(values["window_hours"], values["recipients"],
                          values["message_id"])
    assert asked == loops.Request(24.0, (), "", None)


def test_notebook_cells_stay_short():
    for step, cells in _builder().NOTEBOOKS.items():
        for kind, text in cells:
            if kind == "code":
                assert len(text.splitlines()) <= 8, (step, text)
