"""Mail loops as an engineer meets them (issue 11): notebook 06, step 5, the report.

The notebooks run with papermill, as `runbook run` runs them, against sandbox
children; tables are read from their HTML outputs, verdicts from the
Markdown the last cell shows. The `mail-loop` tenant northwind sends to
adatum.ch, a tenant on SEPPmail.cloud without CBC (scenarios.LOOP_PARTNER);
the `migrated` tenant proseware (06's default) has nothing looping.
"""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest
from bs4 import BeautifulSoup
from papermill.exceptions import PapermillExecutionError

from runbook import cli
from runbook.audit import RunRecord
from runbook.sandbox import exo as sandbox_exo
from runbook.sandbox import scenarios, state as state_file

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DIAGNOSIS = "06-diagnose-mail-loops"
NORTHWIND = {"tenant": "northwind", "domains": ["northwindtraders.ch"],
             "scenario": "mail-loop"}
ADATUM_ID = "4e8a2c6f-9d1b-4f3e-a5c7-2b9d0e1f6a83"
# sha1(ADATUM_ID) + ".cbc.seppmail.cloud" (seppmail365cloud.md §3.2)
ADATUM_CBC_RECORD = "23bc66846902eed6ac46a98768ae2f698406660d.cbc.seppmail.cloud"
APPLIANCE = "[SEPPmail] Appliance -> ExchangeOnline"
HOPS = 6  # runbook.sandbox.trace.MAX_HOPS: passes before the hop limit fails a message


def execute(step: str, out: Path, **parameters):
    """Run a notebook; its executed document and the error it stopped on, if any."""
    error = None
    try:
        papermill.execute_notebook(str(NOTEBOOKS / f"{step}.ipynb"), str(out),
                                   parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(NOTEBOOKS))
    except PapermillExecutionError as exc:
        error = exc
    return json.loads(out.read_text(encoding="utf-8")), error


def cell(doc: dict, source: str) -> dict:
    [found] = [c for c in doc["cells"] if source in "".join(c["source"])]
    return found


def table(doc: dict, source: str) -> tuple[str, list[dict]]:
    """The styled table a cell shows: its caption and its rows by header."""
    [html] = ["".join(o["data"]["text/html"]) for o in cell(doc, source)["outputs"]
              if "text/html" in o.get("data", {})]
    shown = BeautifulSoup(html, "html.parser").table
    headers = [th.get_text() for th in shown.thead.find_all("th")]
    rows = [dict(zip(headers, (td.get_text() for td in tr.find_all("td"))))
            for tr in shown.tbody.find_all("tr")]
    return shown.caption.get_text(), rows


def verdict(doc: dict) -> str:
    [shown] = [o for o in doc["cells"][-1]["outputs"]
               if "text/markdown" in o.get("data", {})]
    return "".join(shown["data"]["text/markdown"])


def only_run(reports: Path, tenant: str) -> RunRecord:
    [folder] = [p for p in (reports / tenant).iterdir() if p.is_dir()]
    return RunRecord.open(folder)


# -- notebook 06 -----------------------------------------------------------------------


@pytest.mark.slow
def test_diagnosis_alone_on_the_migrated_tenant_says_there_is_no_loop(reports,
                                                                      tmp_path):
    doc, error = execute(DIAGNOSIS, tmp_path / "06.ipynb")
    assert error is None
    caption, rows = table(doc, "loops.local_table(local)")
    assert (caption, rows) == ("Nothing in this tenant's own configuration makes "
                               "mail loop", [])
    caption, rows = table(doc, "loops.loop_table(found)")
    assert caption.startswith("No mail loop: none of the ")
    assert caption.endswith(" was seen 3 times or more") and rows == []
    assert table(doc, "loops.recipient_table(verdicts)") == (
        "No looping recipient domain to look up", [])
    shown = verdict(doc)
    assert shown.startswith("### Verdict: ✅ passed\n\nNo mail loop: ")
    assert shown.endswith("none seen 3 times or more; this tenant&#x27;s "
                          "configuration is in order.")

    record = only_run(reports, "proseware")
    [event] = [e["data"] for e in record.events() if e["kind"] == "diagnosis"]
    assert (event["step"], event["loop"], event["status"], event["cause"]) == (
        DIAGNOSIS, False, "succeeded", "no loop")
    assert record.run()["status"] == "succeeded"


@pytest.fixture(scope="module")
def northwind_diagnosed(tmp_path_factory):
    """Notebook 06 on the mail-loop tenant, run once for the tests below."""
    folder = tmp_path_factory.mktemp("mail-loop")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNBOOK_REPORTS_DIR", str(folder / "reports"))
        doc, error = execute(DIAGNOSIS, folder / "06.ipynb", **NORTHWIND)
    return doc, error, only_run(folder / "reports", "northwind")


@pytest.mark.slow
def test_diagnosis_on_mail_loop_fails_naming_adatum_on_seppmail_without_cbc(
        northwind_diagnosed):
    doc, error, _ = northwind_diagnosed
    assert error.ename == "StepFailed"
    assert error.evalue.startswith("Mail to adatum.ch loops (from ")
    assert ("adatum.ch is served by SEPPmail.cloud (MX adatum-ch.gate.seppmail.cloud, "
            f"set up for inline, region ch) and its tenant {ADATUM_ID} is not ready "
            f"for CBC (no TXT record at {ADATUM_CBC_RECORD}).") in error.evalue
    assert error.evalue.endswith("Nothing needs to change in this tenant.")
    assert verdict(doc).startswith("### Verdict: ❌ failed\n\nMail to adatum.ch loops")


@pytest.mark.slow
def test_diagnosis_on_mail_loop_shows_the_loop_grouped_by_recipient_domain(
        northwind_diagnosed):
    doc, _, _ = northwind_diagnosed
    assert table(doc, "loops.local_table(local)")[1] == []
    caption, [row] = table(doc, "loops.loop_table(found)")
    assert caption.endswith(f"loop, to adatum.ch (up to {HOPS} passes)")
    assert {k: row[k] for k in ("result", "recipient domain", "passes",
                                "hop limit seen", "through SEPPmail", "connectors",
                                "recipients")} == {
        "result": "error", "recipient domain": "adatum.ch", "passes": str(HOPS),
        "hop limit seen": "yes", "through SEPPmail": "yes",
        "connectors": ("[SEPPmail.cloud] Inbound-InLine, "
                       "[SEPPmail.cloud] Outbound-InLine"),
        "recipients": "info@adatum.ch"}


@pytest.mark.slow
def test_diagnosis_on_mail_loop_gives_adatums_tenant_and_cbc_readiness(
        northwind_diagnosed):
    doc, _, _ = northwind_diagnosed
    caption, [row] = table(doc, "loops.recipient_table(verdicts)")
    assert caption == "adatum.ch: on SEPPmail.cloud without CBC"
    assert {k: row[k] for k in ("domain", "verdict", "who acts", "on SEPPmail.cloud",
                                "MX", "region", "tenant ID", "CBC ready")} == {
        "domain": "adatum.ch", "verdict": "on SEPPmail.cloud without CBC",
        "who acts": "the recipient's side", "on SEPPmail.cloud": "yes",
        "MX": "adatum-ch.gate.seppmail.cloud", "region": "ch", "tenant ID": ADATUM_ID,
        "CBC ready": "no"}


@pytest.mark.slow
def test_diagnosis_on_mail_loop_is_recorded_for_the_report(northwind_diagnosed):
    _, _, record = northwind_diagnosed
    [event] = [e["data"] for e in record.events() if e["kind"] == "diagnosis"]
    assert event["step"] == DIAGNOSIS
    assert event["cause"] == "adatum.ch: on SEPPmail.cloud without CBC"
    [domain] = event["domains"]
    assert (domain["domain"], domain["finding"], domain["tenant_id"]) == (
        "adatum.ch", "on SEPPmail.cloud without CBC", ADATUM_ID)
    assert record.run()["status"] == "failed"


@pytest.mark.slow
def test_diagnosis_with_an_old_connector_left_names_that_connector(reports, tmp_path):
    built = scenarios.build("mail-loop")
    built["other_tenants"] = []          # nothing loops: the connector alone is named
    built["inbound_connectors"].append(sandbox_exo.inbound_connector(
        built, APPLIANCE, scenarios.TENANT_CREATED, ConnectorType="Partner",
        SenderDomains=["smtp:*;1"], SenderIPAddresses=["193.135.252.17"],
        TlsSenderCertificateName="seppmail.x.ch"))
    tenant = tmp_path / "northwind.json"
    state_file.save(tenant, built)

    doc, error = execute(DIAGNOSIS, tmp_path / "06.ipynb", **NORTHWIND,
                         sandbox_state=str(tenant))
    assert error.ename == "StepFailed"
    assert error.evalue.startswith(
        "This tenant's own configuration comes first: the old SEPPmail inbound "
        f"connector '{APPLIANCE}' is still here and enabled (appliance-era SEPPmail365 "
        "object ([SEPPmail])): remove it with step 3 (03-cleanup). No mail loop in "
        "the trace from ")
    caption, [row] = table(doc, "loops.local_table(local)")
    assert caption == "1 finding in this tenant's own configuration"
    assert (row["kind"], row["name"], row["enabled"]) == ("connector", APPLIANCE, "yes")


@pytest.mark.slow
def test_diagnosis_refuses_a_bad_message_id_before_it_connects(reports, tmp_path):
    doc, error = execute(DIAGNOSIS, tmp_path / "06.ipynb", message_id="<a b@x>")
    assert error.ename == "ParameterError"
    assert error.evalue == ("parameter message_id='<a b@x>' is not allowed: one "
                            "Message-ID without spaces")
    assert not reports.exists()          # no run folder, no sandbox tenant


# -- step 5 and `runbook run` ----------------------------------------------------------


@pytest.fixture(scope="module")
def mail_loop_run(tmp_path_factory) -> RunRecord:
    """`runbook run --confirm` on the mail-loop tenant, as the README shows it."""
    folder = tmp_path_factory.mktemp("run")
    tenant = folder / "northwind.json"
    state_file.save(tenant, scenarios.build("mail-loop", propagation_delay_s=1))
    code = cli.main(["run", "--tenant", "northwind", "--domain", "northwindtraders.ch",
                     "--region", "ch", "--routing", "inline", "--sandbox-state",
                     str(tenant), "--wait-minutes", "1", "--poll-seconds", "0.5",
                     "--reports", str(folder / "reports"), "--confirm"])
    assert code == 1
    return only_run(folder / "reports", "northwind")


@pytest.mark.slow
def test_run_on_mail_loop_stops_at_step_5_with_the_diagnosis_as_its_verdict(
        mail_loop_run):
    run = mail_loop_run.run()
    assert (run["status"], run["steps"][-1]["name"]) == ("failed", "05-verify-mailflow")
    events = mail_loop_run.events()
    [diagnosis] = [e["data"] for e in events if e["kind"] == "diagnosis"]
    [step5] = [e["data"] for e in events if e["kind"] == "verdict"
               and e["data"]["step"] == "05-verify-mailflow"]
    assert (diagnosis["step"], diagnosis["loop"], diagnosis["local"]) == (
        "05-verify-mailflow", True, [])
    assert (step5["status"], step5["message"]) == ("failed", diagnosis["message"])
    assert step5["message"].startswith("Mail to adatum.ch loops (from ")
    assert step5["message"].endswith("Nothing needs to change in this tenant.")


@pytest.mark.slow
def test_run_on_mail_loop_shows_the_diagnosis_in_the_report(mail_loop_run):
    page = BeautifulSoup((mail_loop_run.path / "report.html").read_text(),
                         "html.parser")
    shown = page.find("section", id="diagnosis")
    facts = {tr.th.get_text(): tr.td.get_text() for tr in shown.table.find_all("tr")}
    assert (facts["step"], facts["loop"], facts["status"]) == ("05-verify-mailflow",
                                                               "true", "failed")
    assert facts["cause"] == "adatum.ch: on SEPPmail.cloud without CBC"
    domains = shown.find_all("table")[1]
    headers = [th.get_text() for th in domains.find_all("th")]
    [row] = [dict(zip(headers, (td.get_text() for td in tr.find_all("td"))))
             for tr in domains.find_all("tr")[1:]]
    assert {k: row[k] for k in ("Domain", "Verdict", "Who acts", "Tenant ID",
                                "CBC ready", "Passes")} == {
        "Domain": "adatum.ch", "Verdict": "on SEPPmail.cloud without CBC",
        "Who acts": "the recipient's side", "Tenant ID": ADATUM_ID,
        "CBC ready": "false", "Passes": str(HOPS)}
    assert row["Newest message"].startswith("<SB") and row["Newest message"].endswith(
        "@northwindtraders.ch>")


# -- the report's diagnosis section --------------------------------------------------


def test_report_escapes_what_the_diagnosis_found(tmp_path):
    markup = "<img src=x onerror=alert(1)>"
    record = RunRecord.create(tmp_path, "northwind", parameters={"tenant": "northwind"})
    record.event("diagnosis", step="05-verify-mailflow", loop=True,
                 cause=f"this tenant: connector {markup}",
                 local=[f"the old SEPPmail inbound connector '{markup}' is still here"],
                 domains=[{"domain": "adatum.ch",
                           "finding": "on SEPPmail.cloud without CBC",
                           "connectors": [markup, "[SEPPmail.cloud] Inbound-InLine"],
                           "sample_message": "<SB1.OU@northwindtraders.ch>"}])
    record.finish("failed")
    shown = BeautifulSoup((record.path / "report.html").read_text(),
                          "html.parser").find("section", id="diagnosis")
    assert shown.find("img") is None
    assert [li.get_text() for li in shown.find_all("li")] == [
        f"the old SEPPmail inbound connector '{markup}' is still here"]
    cells = [td.get_text() for td in shown.find_all("table")[1].find_all("td")]
    assert cells[:2] == ["adatum.ch", "on SEPPmail.cloud without CBC"]
    assert f"{markup}, [SEPPmail.cloud] Inbound-InLine" in cells
    assert "<SB1.OU@northwindtraders.ch>" in cells


def test_report_of_an_older_diagnosis_event_shows_the_verdict_code(tmp_path):
    record = RunRecord.create(tmp_path, "northwind", parameters={"tenant": "northwind"})
    record.event("diagnosis", step="06-diagnose-mail-loops", loop=True,
                 domains=[{"domain": "adatum.ch", "verdict": "recipient-without-cbc"}])
    record.finish("failed")
    shown = BeautifulSoup((record.path / "report.html").read_text(),
                          "html.parser").find("section", id="diagnosis")
    cells = [td.get_text() for td in shown.find_all("table")[1].find_all("td")]
    assert cells[:3] == ["adatum.ch", "recipient-without-cbc", "absent"]
