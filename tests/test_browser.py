"""JupyterLab in headless chromium: the notebooks as an engineer steps through them.

The test starts JupyterLab on 127.0.0.1 (a free port, a token) over a copy of
notebooks/, with RUNBOOK_REPORTS_DIR in the test's folder and Jupyter's
config, data and runtime folders there too, so no user setting leaks in. The
browser is Debian's chromium driven by Playwright, with every host name but
127.0.0.1 unresolvable, so neither it nor JupyterLab reaches anything else.
Screenshots go to each test's tmp_path.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from runbook.audit import RunRecord
from runbook.sandbox import state as state_mod

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("RUNBOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
SERVER_START_S = 90
NOTEBOOK_RUN_MS = 120_000
# Quiet JupyterLab: no news, no update check, every cell in the DOM, and the
# notebook's kernel started without a "Select Kernel" dialog, which a loaded
# machine sometimes raised and which swallowed the click on Run All.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none", "autoStartDefaultKernel": True},
}


try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # _playwright() skips the tests then
    PlaywrightTimeout = TimeoutError


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip("chromium not installed")
    return sync_playwright


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server of this test session, over a copy of the notebooks."""

    def __init__(self, base: Path):
        self.base = base
        self.notebooks = base / "notebooks"
        self.reports = base / "reports"
        self.port = _free_port()
        self.token = os.urandom(16).hex()
        self.log = base / "jupyterlab.log"
        self.process = None

    def start(self) -> None:
        shutil.copytree(ROOT / "notebooks", self.notebooks)
        env = self._environment()
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.notebooks}",
                "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:   # CI machines run as root
            argv.append("--allow-root")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            start_new_session=True, cwd=self.notebooks)
        self._wait_until_up()

    def _environment(self) -> dict:
        settings = self.base / "lab-settings"
        for name, values in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        env = dict(os.environ, RUNBOOK_REPORTS_DIR=str(self.reports),
                   JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
                   JUPYTER_CONFIG_DIR=str(self.base / "jupyter-config"),
                   JUPYTER_DATA_DIR=str(self.base / "jupyter-data"),
                   JUPYTER_RUNTIME_DIR=str(self.base / "jupyter-runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.base / "lab-workspaces"))
        env.pop(_widgets_env(), None)
        return env

    def _wait_until_up(self) -> None:
        url = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited {self.process.returncode}: "
                                   + self.log.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S} s: "
                           + self.log.read_text(errors="replace")[-2000:])

    def url(self, notebook: str) -> str:
        return (f"http://127.0.0.1:{self.port}/lab/tree/{notebook}.ipynb"
                f"?token={self.token}&reset")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)   # the server and its kernels
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _widgets_env() -> str:
    from runbook import widgets

    return widgets.ENV


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_playwright = _playwright()
    base = tmp_path_factory.mktemp("lab")
    lab = Lab(base)
    lab.start()
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(base / "chromium-profile"), executable_path=CHROMIUM,
                headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000})
            try:
                yield lab, context
            finally:
                context.close()
    finally:
        lab.stop()


RUN_ALL_ATTEMPTS = 3
STARTED_MS = 15_000


def _open_and_run_all(lab: Lab, context, notebook: str):
    """Open the notebook and Run All; again if no cell started at all.

    On a loaded machine the execution indicator can say idle before the
    kernel's session is wired to the notebook, and a Run All then queues
    nothing. Only a click after which no cell ran is repeated, so no cell
    ever runs twice.
    """
    page = context.new_page()
    page.set_default_timeout(NOTEBOOK_RUN_MS)
    page.goto(lab.url(notebook))
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
    started = page.locator(".jp-InputPrompt", has_text="[").filter(
        has_text=re.compile(r"\[(\d+|\*)\]")).first
    for _ in range(RUN_ALL_ATTEMPTS):
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        try:
            started.wait_for(timeout=STARTED_MS)
            return page
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"{notebook}: Run All started no cell in "
                         f"{RUN_ALL_ATTEMPTS} attempts")


def _shot(page, locator, path: Path) -> None:
    locator.scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def _record_of(lab: Lab, step: str) -> RunRecord:
    """The run record the notebook `step`, run alone, created for itself."""
    found = [RunRecord.open(p.parent) for p in lab.reports.glob("*/*/run.json")]
    mine = [r for r in found if [s["name"] for s in r.run()["steps"]] == [step]]
    assert len(mine) == 1, [r.path for r in found]
    return mine[0]


def _seppmail_names(state_file: Path) -> list[str]:
    state = state_mod.load(state_file)
    return sorted(o["Name"] for key in ("inbound_connectors", "outbound_connectors",
                                        "transport_rules")
                  for o in state[key] if o["Name"].lower().startswith("[seppmail"))


def test_prerequisites_run_in_jupyterlab_show_the_form_the_domain_table_and_a_verdict(
        browser, tmp_path):
    lab, context = browser
    page = _open_and_run_all(lab, context, "01-prerequisites")

    verdict = page.locator("h3", has_text="Verdict:").first
    verdict.wait_for()
    _shot(page, verdict, tmp_path / "01-verdict.png")
    domains = page.locator("table.runbook-checks", has_text="contoso-group.ch").first
    _shot(page, domains, tmp_path / "01-domain-table.png")
    form = page.locator(".runbook-parameter-form").first
    _shot(page, form, tmp_path / "01-form.png")

    assert verdict.inner_text().strip() == "Verdict: ✅ passed"
    rows = domains.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == ["contoso.ch", "contoso-group.ch"]
    assert page.locator("table.runbook-checks td.runbook-error").count() == 0
    assert form.locator("input").first.input_value() == "contoso"
    page.close()


def test_apply_this_plan_in_step_3_changes_the_sandbox_tenant(browser, tmp_path):
    lab, context = browser
    page = _open_and_run_all(lab, context, "03-cleanup")

    button = page.locator(".runbook-apply").first
    button.wait_for()
    page.get_by_text("Waiting for your decision").first.wait_for()
    _shot(page, button, tmp_path / "03-plan-and-button.png")
    inventory_table = page.locator("table.runbook-inventory").first
    marked = inventory_table.locator("tbody tr td.runbook-remove:first-child")
    record = _record_of(lab, "03-cleanup")
    state_file = Path(record.run()["sandbox_state"])
    before = _seppmail_names(state_file)
    assert before == ["[SEPPmail.cloud] Inbound-InLine",
                      "[SEPPmail.cloud] Outbound-InLine"]
    assert marked.count() == 2

    button.click()
    page.get_by_text("Result: succeeded.").first.wait_for()
    verdict = page.locator("h3", has_text="Verdict: ✅ passed").last
    verdict.wait_for()
    _shot(page, verdict, tmp_path / "03-applied-verdict.png")

    assert _seppmail_names(state_file) == []
    assert "Applied: confirmed by" in button.inner_text()
    events = record.events()
    confirmation, = [e["data"] for e in events if e["kind"] == "confirmation"]
    assert confirmation["via"] == "button" and confirmation["step"] == "03-cleanup"
    verdicts = [e["data"]["status"] for e in events if e["kind"] == "verdict"]
    assert verdicts == ["succeeded"]
    page.close()
