"""Kernels started ahead of their notebook (runbook.kernels.PreparedKernel) and
the chain's use of them: environment, working folder, warm-up, shutdown."""

import json
import os
import time
from pathlib import Path

import nbformat
import papermill
import pytest

from runbook import chain, params
from runbook.kernels import PAPERMILL_OPTIONS, PreparedKernel, modules_imported_by
from runbook.sandbox import scenarios

# What the first cell reports: nothing of the warm-up may show in the notebook
# but the modules already loaded.
PROBE = """import json as _j, os as _o, sys as _s
print(_j.dumps({"marker": _o.environ.get("RUNBOOK_TEST_MARKER"), "cwd": _o.getcwd(),
                "loaded": "runbook.tables" in _s.modules,
                "bound": sorted(n for n in ("runbook", "tables", "importlib", "_m")
                                if n in globals()),
                "pid": _o.getpid()}))"""


def _notebook(folder: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(source)]
    path = folder / "probe.ipynb"
    nbformat.write(nb, path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(
        f"/proc/{pid}/status").read_text()


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_imports_of_a_notebook_are_read_in_order_each_once():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("import not_code"),
        nbformat.v4.new_code_cell("from runbook.notebook import open_step, show\n"
                                  "import pandas as pd, json\nimport os.path\n"
                                  "x = 'import nothing'"),
        # Only top-level imports: not one in a block or a string, none of a
        # relative import, and no cell that is not plain Python.
        nbformat.v4.new_code_cell("from runbook import widgets\nimport json\n"
                                  "from . import relative\nif False:\n"
                                  "    import antigravity\n"
                                  'text = """\nimport this\n"""'),
        nbformat.v4.new_code_cell("%matplotlib inline\nimport tkinter"),
    ]
    assert modules_imported_by(nb) == ["runbook.notebook", "pandas", "json", "os.path",
                                       "runbook"]


def test_a_prepared_kernel_runs_the_notebook_with_its_environment_folder_and_imports(
        tmp_path):
    source = _notebook(tmp_path, PROBE)
    work = tmp_path / "work"
    work.mkdir()
    kernel = PreparedKernel(dict(os.environ, RUNBOOK_TEST_MARKER="step-3"), str(work),
                            ["runbook.tables"])
    target = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(source), str(target), prepared=kernel,
                               **PAPERMILL_OPTIONS)
    cell = nbformat.read(target, 4).cells[0]
    seen = json.loads(cell.outputs[0]["text"])
    assert seen["marker"] == "step-3" and seen["cwd"] == str(work)
    assert seen["loaded"] is True          # imported ahead, by the warm-up
    assert seen["bound"] == []             # ... which bound no name in the notebook
    assert cell.execution_count == 1       # ... and left no history
    assert _gone(seen["pid"])              # shut down after the notebook
    assert not Path(kernel.manager.connection_file).exists()
    with pytest.raises(RuntimeError, match="taken or discarded"):
        kernel.take()


def test_a_discarded_kernel_is_shut_down_and_a_failed_start_is_raised_by_take(tmp_path):
    kernel = PreparedKernel(dict(os.environ), str(tmp_path))
    kernel._thread.join()
    pid = kernel.manager.provisioner.process.pid
    assert _alive(pid)
    kernel.discard()
    kernel.discard()                       # twice is harmless
    assert _gone(pid)
    broken = PreparedKernel(dict(os.environ), str(tmp_path / "no-such-folder"))
    with pytest.raises(OSError):
        broken.take()
    folder = Path(broken.manager.connection_file).parent     # as it was named
    assert folder.name.startswith("runbook-kernel-")
    assert not folder.exists()          # a kernel that never ran leaves no folder


def _kernels_of(run_dir: Path) -> list[int]:
    """Processes whose environment names a kernel log inside `run_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"RUNBOOK_KERNEL_LOG={run_dir}".encode() in environ and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_a_run_that_stops_early_leaves_no_kernel_behind_not_even_the_next_steps(
        make_tenant, reports):
    # wrong-mx fails in step 1, while step 2's kernel is being prepared.
    state_file = make_tenant("wrong-mx")
    p = params.validate(**scenarios.declared("wrong-mx"), sandbox_state=str(state_file),
                        confirm=True)
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    assert [s["status"] for s in record.run()["steps"]] == ["failed"]
    deadline = time.monotonic() + 10
    while _kernels_of(record.path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _kernels_of(record.path) == []
    # Step 2's kernel ran nothing and said nothing: no empty log in the record.
    assert not (record.path / "notebooks" / "02-install-module.kernel.log").exists()


def test_a_step_whose_notebook_cannot_be_read_fails_and_leaves_no_kernel(
        make_tenant, reports, tmp_path, monkeypatch):
    # papermill stops before it takes the prepared kernel: the chain shuts it.
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for step in chain.STEPS[:1]:
        (notebooks / f"{step}.ipynb").write_bytes(
            (chain.notebooks_dir() / f"{step}.ipynb").read_bytes())
    (notebooks / f"{chain.STEPS[1]}.ipynb").write_text("{not a notebook")
    monkeypatch.setenv("RUNBOOK_NOTEBOOKS", str(notebooks))
    state_file = make_tenant("legacy-inline")
    p = params.validate(**scenarios.declared("legacy-inline"),
                        sandbox_state=str(state_file))
    record = chain.run(p, reports_dir=reports, steps=chain.STEPS[:2],
                       progress=lambda *_: None)
    steps = record.run()["steps"]
    assert [s["status"] for s in steps] == ["succeeded", "failed"]
    assert steps[1]["error"]["ename"] == "NotJSONError"
    deadline = time.monotonic() + 10
    while _kernels_of(record.path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _kernels_of(record.path) == []
