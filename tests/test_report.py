"""report.html and the notebook pages: what they show, and that they stay inert."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from runbook.audit import RecordSealed, RunRecord
from runbook.report import inventory_diff, render_notebook, render_report

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
INBOUND = "[SEPPmail.cloud] Inbound-InLine"
OLD_RULE = f"[SEPPmail.cloud] - 100 {SCRIPT}"
LONG_COMMENT = "CBC connector for contoso; " * 200


def inbound(guid: str, **props) -> dict:
    return {"Name": INBOUND, "Enabled": True, "RestrictDomainsToCertificate": False,
            "TlsSenderCertificateName": None, "Guid": guid, **props}


def notebook(path: Path, cells: list) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def failing_cells() -> list:
    error = nbformat.v4.new_output("error", ename="CommandFailed",
                                   evalue=f"Remove-InboundConnector {IMG}",
                                   traceback=["\x1b[0;31mCommandFailed\x1b[0m: boom"])
    return [nbformat.v4.new_markdown_cell("# Clean up\nRules first, then connectors."),
            nbformat.v4.new_code_cell("plan = cleanup.plan(exo)", execution_count=1),
            nbformat.v4.new_code_cell("cleanup.apply(exo, plan)", execution_count=2,
                                      outputs=[error])]


def migration(reports: Path, status: str = "failed") -> RunRecord:
    """A run that changed connectors and rules and failed in its cleanup step."""
    record = RunRecord.create(reports, "contoso", operator=f"alice {IMG}",
                              parameters={"tenant": "contoso", "ticket": SCRIPT,
                                          "domains": ["contoso.ch", "contoso-group.ch"]})
    record.event("versions", pwsh="7.5.4", edition="Core",
                 ExchangeOnlineManagement="3.9.0",
                 seppmail365cloud=["1.3.0", "1.2.5"], runbook="0.1.0")
    record.step_started("prerequisites", "notebooks/01-prerequisites.ipynb")
    record.event("check", step="prerequisites", name="MX contoso.ch", ok=True,
                 detail="10 contoso-ch.gate.seppmail.cloud.")
    record.event("check", step="prerequisites", name=f"rule {SCRIPT}", ok=False,
                 detail=IMG)
    notebook(record.path / "notebooks/01-prerequisites.ipynb",
             [nbformat.v4.new_code_cell("print('ok')", execution_count=1)])
    record.event("verdict", step="prerequisites", status="succeeded",
                 message=f"All 2 checks passed {SCRIPT}")
    record.step_finished("prerequisites", "succeeded")

    record.write_json("inventory/before.json", {
        "taken_at": "2026-12-04T10:00:00Z",
        "inbound_connectors": [inbound("c-1")],
        "outbound_connectors": [{"Name": "[SEPPmail.cloud] Outbound-InLine",
                                 "Enabled": True, "Guid": "o-1"}],
        "transport_rules": [{"Name": OLD_RULE, "Priority": 0, "Guid": "r-1"},
                            {"Name": "Disclaimer", "Priority": 1, "Guid": "r-2"}]})
    record.step_started("cleanup", "notebooks/03-cleanup.ipynb")
    # step 2 installed 2.0.2 in between; the bridge of step 3 says so
    record.event("versions", step="cleanup", pwsh="7.5.4", edition="Core",
                 ExchangeOnlineManagement="3.9.0",
                 seppmail365cloud=["2.0.2", "1.3.0", "1.2.5"], runbook="0.1.0",
                 host="pwsh")
    record.event("confirmation", step="cleanup", by=f"bob {SCRIPT}",
                 at="2026-12-04T10:02:00Z", plan=[f"remove rule {OLD_RULE}",
                                                  "remove connector Outbound-InLine"])
    record.event("change-requested", id="cleanup-1", step="cleanup",
                 command="Remove-TransportRule", target=OLD_RULE,
                 parameters={"Identity": "r-1"})
    record.event("change-result", id="cleanup-1", step="cleanup",
                 command="Remove-TransportRule", target=OLD_RULE, ok=True, errors=[],
                 warnings=[], duration_ms=41.5)
    record.event("change-requested", id="cleanup-2", step="cleanup",
                 command="Remove-OutboundConnector",
                 target="[SEPPmail.cloud] Outbound-InLine", parameters={"Identity": "o-1"})
    record.event("change-result", id="cleanup-2", step="cleanup",
                 command="Remove-OutboundConnector",
                 target="[SEPPmail.cloud] Outbound-InLine", ok=False, duration_ms=12.0,
                 errors=[{"message": f"still referenced {IMG}", "category":
                          "InvalidOperation", "error_id":
                          "ConnectorIncorrectUsageConnectorStillReferencedException",
                          "target": "o-1"}])
    record.event("change-requested", id="cleanup-3", step="cleanup",
                 command="Remove-InboundConnector", target=INBOUND,
                 parameters={"Identity": "c-1"})
    record.write_json("inventory/after.json", {
        "taken_at": "2026-12-04T10:09:00Z",
        "inbound_connectors": [inbound("c-2", RestrictDomainsToCertificate=True,
                                       TlsSenderCertificateName="tid.ch.seppmail.cloud",
                                       Comment=LONG_COMMENT)],
        "outbound_connectors": [{"Name": "[SEPPmail.cloud] Outbound-InLine",
                                 "Enabled": True, "Guid": "o-1"}],
        "transport_rules": [{"Name": "disclaimer", "Priority": 0, "Guid": "r-2"},
                            {"Name": f"new {IMG}", "Priority": 1, "Guid": "r-3"}]})
    record.event("diagnosis", step="verify", loop=True,
                 cause=f"recipient on SEPPmail.cloud without CBC {SCRIPT}")
    notebook(record.path / "notebooks/03-cleanup.ipynb", failing_cells())
    record.step_finished("cleanup", "failed", error={
        "cell": 2, "ename": "CommandFailed", "evalue": f"Remove-InboundConnector {IMG}"})
    record.finish(status)
    return record


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> RunRecord:
    return migration(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def page(failed_run) -> BeautifulSoup:
    return soup(failed_run.path / "report.html")


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text("utf-8"), "html.parser")


def section(page: BeautifulSoup, anchor: str) -> BeautifulSoup:
    found = page.find("section", id=anchor)
    assert found is not None, anchor
    return found


def rows(table) -> list[list[str]]:
    return [[cell.get_text() for cell in tr.find_all(["td", "th"])]
            for tr in table.find_all("tr")]


# -- outcome and facts -------------------------------------------------------------


@pytest.mark.parametrize("status", ["succeeded", "failed", "planned", "cancelled"])
def test_outcome_is_the_status_of_run_json(tmp_path, status):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    record.finish(status)
    outcome = soup(record.path / "report.html").find(id="outcome")
    assert outcome.get_text() == record.run()["status"] == status


def test_report_of_a_run_still_going_says_running(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    page = soup(render_report(record.path))
    assert page.find(id="outcome").get_text() == "running"
    assert "no step" in section(page, "steps").get_text().lower()


def test_outcome_box_counts_steps_changes_and_checks(page):
    summary = page.find("header").get_text(" ", strip=True)
    assert "2 steps: 1 succeeded, 1 failed" in summary
    assert "3 changes: 1 ok, 1 failed, 1 no result" in summary
    assert "2 checks: 1 passed, 1 failed" in summary
    assert "First failure: step cleanup : CommandFailed" in summary


def test_run_facts_show_who_where_when(failed_run, page):
    facts = dict(rows(section(page, "run").table))
    run = failed_run.run()
    assert facts["Operator"] == run["operator"] == f"alice {IMG}"
    assert facts["Host"] == run["host"]
    assert facts["Started"] == run["started_at"]
    assert facts["Ended"] == run["ended_at"]
    assert facts["Status"] == "failed"


def test_versions_are_the_ones_the_run_ended_with_and_those_before(failed_run, page):
    table = rows(section(page, "versions").table)
    run = failed_run.run()
    assert table == [
        ["Component", "Version", "Before that, in step"],
        ["runbook", run["versions"]["runbook"], ""],
        ["python", run["versions"]["python"], ""],
        ["platform", run["versions"]["platform"], ""],
        ["pwsh", "7.5.4", ""], ["edition", "Core", ""],
        ["ExchangeOnlineManagement", "3.9.0", ""],
        ["seppmail365cloud", "2.0.2, 1.3.0, 1.2.5", "1.3.0, 1.2.5 (event 2)"],
        ["bridge", "pwsh", ""]]


def test_parameters_are_listed(page):
    params = dict(rows(section(page, "parameters").table))
    assert params == {"tenant": "contoso", "ticket": SCRIPT,
                      "domains": '["contoso.ch", "contoso-group.ch"]'}


# -- steps ---------------------------------------------------------------------------


def test_steps_link_to_their_executed_notebooks(failed_run, page):
    table = section(page, "steps").table
    assert [r[1:3] for r in rows(table)[1:]] == [["prerequisites", "succeeded"],
                                                  ["cleanup", "failed"]]
    hrefs = [a["href"] for a in table.find_all("a")]
    assert hrefs == ["notebooks/01-prerequisites.ipynb", "notebooks/01-prerequisites.html",
                     "notebooks/03-cleanup.ipynb", "notebooks/03-cleanup.html"]
    for href in hrefs:
        assert (failed_run.path / href).is_file()


def test_each_step_shows_its_verdict(page):
    table = rows(section(page, "steps").table)
    assert table[0][5] == "Verdict"
    assert [r[5] for r in table[1:]] == [f"All 2 checks passed {SCRIPT}",
                                         "none recorded"]


def test_a_step_started_again_shows_the_verdict_of_each_attempt(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    for message in ("Stopped: slash-named connectors", "Removed 2 SEPPmail objects"):
        record.step_started("03-cleanup", "notebooks/03-cleanup.ipynb")
        record.event("verdict", step="03-cleanup", status="failed", message=message)
        record.step_finished("03-cleanup", "failed")
    table = rows(section(soup(render_report(record.path)), "steps").table)
    assert [r[5] for r in table[1:]] == ["Stopped: slash-named connectors",
                                         "Removed 2 SEPPmail objects"]


def test_a_failed_step_shows_its_cell_error_name_and_value(page):
    failure = section(page, "steps").find("div", class_="error")
    text = failure.get_text()
    assert "Step cleanup failed" in text
    assert f"In cell 2 (In [2]): CommandFailed: Remove-InboundConnector {IMG}" in text
    assert failure.find("pre").get_text() == "cleanup.apply(exo, plan)"
    assert "CommandFailed: boom" in failure.find("details").get_text()
    assert "\x1b" not in text


def test_the_failing_cell_is_found_when_given_its_execution_count(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    record.step_started("cleanup", "notebooks/03-cleanup.ipynb")
    cells = failing_cells()
    notebook(record.path / "notebooks/03-cleanup.ipynb",
             [nbformat.v4.new_markdown_cell("Intro"), *cells])
    record.step_finished("cleanup", "failed", error={
        "cell": 2, "ename": "CommandFailed", "evalue": "boom"})  # In [2], index 3
    failure = section(soup(render_report(record.path)), "steps").find("div",
                                                                      class_="error")
    assert "In cell 3 (In [2]): CommandFailed: boom" in failure.get_text()
    assert failure.find("pre").get_text() == "cleanup.apply(exo, plan)"


# -- checks, changes, confirmations, diagnosis -----------------------------------------


def test_checks_show_their_verdict(page):
    table = rows(section(page, "checks").table)
    assert table[1] == ["prerequisites", "MX contoso.ch", "passed",
                        "10 contoso-ch.gate.seppmail.cloud."]
    assert table[2] == ["prerequisites", f"rule {SCRIPT}", "failed", IMG]


def test_each_change_request_is_shown_with_its_result(page):
    table = rows(section(page, "changes").table)
    assert [(r[0], r[2], r[5], r[6]) for r in table[1:]] == [
        ("cleanup-1", "Remove-TransportRule", "ok", "41.5 ms"),
        ("cleanup-2", "Remove-OutboundConnector", "failed", "12 ms"),
        ("cleanup-3", "Remove-InboundConnector", "no result recorded", "")]
    assert table[1][3] == OLD_RULE
    assert table[1][4] == '{"Identity": "r-1"}'
    assert table[2][7] == ("ConnectorIncorrectUsageConnectorStillReferencedException: "
                           f"still referenced {IMG}")


def test_confirmations_show_who_confirmed_which_plan(page):
    table = section(page, "confirmations").table
    assert rows(table)[1][:3] == ["cleanup", f"bob {SCRIPT}", "2026-12-04T10:02:00Z"]
    assert [li.get_text() for li in table.find_all("li")] == [
        f"remove rule {OLD_RULE}", "remove connector Outbound-InLine"]


def test_diagnosis_is_shown(page):
    facts = dict(rows(section(page, "diagnosis").table))
    assert facts == {"step": "verify", "loop": "true",
                     "cause": f"recipient on SEPPmail.cloud without CBC {SCRIPT}"}


def test_every_event_is_in_the_log(failed_run, page):
    table = rows(section(page, "events").table)
    kinds = [r[2] for r in table[1:]]
    # the log is rendered during finish, before run-finished is written
    assert kinds == [e["kind"] for e in failed_run.events()[:-1]]


# -- inventories ---------------------------------------------------------------------


def test_inventory_diff_classifies_each_object():
    before = [{"Name": "A", "Guid": "1", "Enabled": True},
              {"Name": "B", "Guid": "2", "Enabled": True},
              {"Name": "C", "Guid": "3", "Enabled": True},
              {"Name": "D", "Guid": "4", "Priority": 1}]
    after = [{"Name": "A", "Guid": "1", "Enabled": True},
             {"Name": "B", "Guid": "2", "Enabled": False},
             {"Name": "D", "Guid": "9", "Priority": 1},
             {"Name": "E", "Guid": "5"}]
    found = [(c.name, c.status, c.properties) for c in inventory_diff(before, after)]
    assert found == [("A", "unchanged", []),
                     ("B", "changed", ["Enabled"]),
                     ("C", "removed", ["Name", "Guid", "Enabled"]),
                     ("D", "replaced", ["Guid"]),
                     ("E", "added", ["Name", "Guid"])]


def test_inventory_diff_tells_true_from_1_and_absent_from_null():
    found = inventory_diff([{"Name": "X", "Enabled": True, "Comment": None}],
                           [{"Name": "X", "Enabled": 1}])
    assert [(c.status, c.properties) for c in found] == [
        ("changed", ["Enabled", "Comment"])]


def test_connectors_before_and_after_side_by_side_with_changes_marked(page):
    inventory = section(page, "inventory")
    detail = next(d for d in inventory.find_all("details")
                  if d.summary.get_text() == f"{INBOUND}: replaced")
    changed = {tr.th.get_text(): [td.get_text() for td in tr.find_all("td")]
               for tr in detail.find_all("tr", class_="changed")}
    assert changed == {
        "Guid": ["c-1", "c-2"],
        "RestrictDomainsToCertificate": ["false", "true"],
        "TlsSenderCertificateName": ["null", "tid.ch.seppmail.cloud"],
        "Comment": ["absent", LONG_COMMENT],
    }
    equal = rows(detail.find("table", class_="equal"))
    assert equal == [["Property", "Value"], ["Name", INBOUND], ["Enabled", "true"]]


def test_added_and_removed_objects_show_all_their_properties(page):
    inventory = section(page, "inventory")
    removed = next(d for d in inventory.find_all("details")
                   if d.summary.get_text() == f"{OLD_RULE}: removed")
    assert rows(removed.table) == [["Property", "Before"], ["Name", OLD_RULE],
                                   ["Priority", "0"], ["Guid", "r-1"]]
    added = next(d for d in inventory.find_all("details")
                 if d.summary.get_text() == f"new {IMG}: added")
    assert rows(added.table) == [["Property", "After"], ["Name", f"new {IMG}"],
                                 ["Priority", "1"], ["Guid", "r-3"]]
    assert [tr["class"] for tr in added.find_all("tr")[1:]] == [["added"]] * 3


def test_empty_properties_of_an_added_object_are_folded_not_dropped(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    empty = {"taken_at": "2026-12-04T10:00:00Z",
             "inbound_connectors": [], "outbound_connectors": []}
    rule = {"Name": "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail",
            "Priority": 0, "SetHeaderName": "X-SM-maildirection", "FromScope": None,
            "SentTo": [], "Comments": "", "Quarantine": False}
    record.write_json("inventory/before.json", {**empty, "transport_rules": []})
    record.write_json("inventory/after.json", {**empty, "transport_rules": [rule]})
    inventory = section(soup(render_report(record.path)), "inventory")
    added = next(d for d in inventory.find_all("details")
                 if d.summary.get_text() == f"{rule['Name']}: added")
    assert rows(added.table) == [["Property", "After"], ["Name", rule["Name"]],
                                 ["Priority", "0"],
                                 ["SetHeaderName", "X-SM-maildirection"],
                                 ["Quarantine", "false"]]
    folded = added.find("details", class_="equal")
    assert folded.summary.get_text() == '3 properties empty (null, "" or [])'
    assert rows(folded.table)[1:] == [["FromScope", "null"], ["SentTo", "[]"],
                                      ["Comments", '""']]


def test_rules_added_removed_and_unchanged_are_listed(page):
    rules = section(page, "inventory").find("h3", string="Transport rules")
    table = rules.find_next("table")
    assert rows(table)[1:] == [[OLD_RULE, "removed", ""],
                               ["disclaimer", "changed", "Name, Priority"],
                               [f"new {IMG}", "added", ""]]


def test_only_a_before_inventory_is_listed_not_compared(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    record.write_json("inventory/before.json", {"taken_at": "2026-12-04T10:00:00Z",
                      "inbound_connectors": [inbound("c-1")],
                      "outbound_connectors": [], "transport_rules": []})
    text = section(soup(render_report(record.path)), "inventory").get_text()
    assert "Only the before inventory exists, so nothing is compared." in text
    assert INBOUND in text
    assert "removed" not in text


def test_long_values_are_kept_whole(page):
    assert LONG_COMMENT in section(page, "inventory").get_text()


# -- inert pages -------------------------------------------------------------------------


def inert_problems(page: BeautifulSoup) -> list[str]:
    """Anything that could run code or reach the network from the page."""
    problems = [f"<{t.name}>" for t in page.find_all(
        ["script", "img", "iframe", "object", "embed", "link", "base", "form"])]
    for tag in page.find_all(True):
        for name, value in tag.attrs.items():
            if name.lower().startswith("on") or name.lower() == "src":
                problems.append(f"{tag.name}[{name}]")
            if name == "href" and re.match(r"[a-z][a-z0-9+.-]*:|//", value, re.I):
                problems.append(f"href {value}")
    css = " ".join(s.get_text() for s in page.find_all("style"))
    problems += [w for w in ("url(", "@import") if w in css]
    return problems


def test_values_from_tenant_and_parameters_are_escaped(failed_run, page):
    assert inert_problems(page) == []
    raw = (failed_run.path / "report.html").read_text()
    assert SCRIPT not in raw and IMG not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    text = page.get_text()
    assert text.count(SCRIPT) >= 6 and text.count(IMG) >= 5


def test_report_forbids_scripts_and_remote_loads(page):
    csp = page.find("meta", attrs={"http-equiv": "Content-Security-Policy"})
    assert csp["content"].startswith("default-src 'none';")


def test_notebook_pages_are_inert_and_link_back_to_the_report(failed_run):
    page = soup(failed_run.path / "notebooks/03-cleanup.html")
    assert inert_problems(page) == []
    assert page.nav.a["href"] == "../report.html"
    assert page.find("h1").get_text() == "Clean up"
    assert "cleanup.apply(exo, plan)" in page.get_text()


def test_notebook_html_outputs_are_sanitised(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    html_out = nbformat.v4.new_output("display_data", data={
        "text/plain": "table",
        "text/html": f"<style>td {{ background: url(http://x/a.png) }}</style>"
                     f"<table><tr><td>{SCRIPT}</td></tr></table>{IMG}"
                     "<img src='http://198.51.100.7/p.png'>"})
    notebook(record.path / "notebooks/02-module.ipynb",
             [nbformat.v4.new_code_cell("show()", execution_count=1, outputs=[html_out])])
    page = soup(render_notebook(record.path, "notebooks/02-module.ipynb"))
    assert inert_problems(page) == []
    assert page.find("td") is not None  # tables survive the sanitiser
    assert "198.51.100.7" in page.get_text()  # shown as text, never loaded


def test_notebook_pages_keep_the_marks_of_styled_tables(tmp_path):
    # The sanitiser drops the table's own <style>; the page's CSS marks by class.
    from runbook import tables

    record = RunRecord.create(tmp_path, "contoso", parameters={})
    styled = tables.style_inventory(pd.DataFrame([
        {"kind": "inbound connector", "name": INBOUND, "class": "pre-cbc",
         "remove": True, "portal only": False},
        {"kind": "transport rule", "name": "Disclaimer", "class": "not-ours",
         "remove": False, "portal only": False}]))
    out = nbformat.v4.new_output("display_data", data={
        "text/plain": repr(styled), "text/html": styled.to_html()})
    notebook(record.path / "notebooks/03-cleanup.ipynb",
             [nbformat.v4.new_code_cell("show()", execution_count=1, outputs=[out])])
    page = soup(render_notebook(record.path, "notebooks/03-cleanup.ipynb"))
    marked = [[c for c in tr.td["class"] if c.startswith("runbook-")]
              for tr in page.select("table.runbook-inventory tbody tr")]
    assert marked == [["runbook-remove"], ["runbook-keep"]]
    css = page.style.get_text()
    assert ("table.runbook-table td.runbook-remove { background-color: #fde2e1; "
            "color: #5f1412; }") in css
    assert "table.runbook-table .runbook-nowrap { white-space: nowrap; }" in css
    assert page.select_one("span.runbook-nowrap").get_text() == "pre-cbc"


def test_render_notebook_only_takes_notebooks_inside_the_folder(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    with pytest.raises(ValueError):
        render_notebook(record.path, "run.json")
    with pytest.raises(ValueError):
        render_notebook(record.path, "../other/01.ipynb")


def test_a_sealed_report_is_not_rewritten(failed_run):
    before = (failed_run.path / "report.html").read_bytes()
    with pytest.raises(RecordSealed):
        render_report(failed_run.path)
    assert (failed_run.path / "report.html").read_bytes() == before


def test_report_files_are_private(failed_run):
    for rel in ("report.html", "notebooks/03-cleanup.html"):
        assert (failed_run.path / rel).stat().st_mode & 0o777 == 0o600



# -- control and bidi characters from the tenant (issue 10, hostile findings) -------

# A rule named so that U+202E shows "gnp.exe" reversed, and one with an escape.
RLO_RULE = "[SEPPmail.cloud] attachment gnp\u202eexe.png"
ESC_RULE = "[SEPPmail.cloud] \x1b[2J\x1b[31mred"
RLO_SHOWN = "[SEPPmail.cloud] attachment gnp\\u202eexe.png"
ESC_SHOWN = "[SEPPmail.cloud] \\x1b[2J\\x1b[31mred"


def test_control_and_bidi_characters_from_the_tenant_show_as_escapes(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    record.write_json("inventory/before.json", {
        "taken_at": "2026-12-04T10:00:00Z", "inbound_connectors": [],
        "outbound_connectors": [],
        "transport_rules": [{"Name": RLO_RULE, "Priority": 0, "Guid": "r-1",
                             "Comments": "Zürich \u2067isolated\u2069 line\nbreak"},
                            {"Name": ESC_RULE, "Priority": 1, "Guid": "r-2"}]})
    record.write_json("inventory/after.json", {
        "taken_at": "2026-12-04T10:05:00Z", "inbound_connectors": [],
        "outbound_connectors": [], "transport_rules": []})
    record.event("check", step="prerequisites", name=RLO_RULE, ok=False,
                 detail=f"found {ESC_RULE}")
    raw = render_report(record.path).read_text("utf-8")

    for char in ("\u202e", "\u2067", "\u2069", "\x1b"):
        assert char not in raw, repr(char)
    checks = rows(section(soup(record.path / "report.html"), "checks").table)
    assert checks[1] == ["prerequisites", RLO_SHOWN, "failed", f"found {ESC_SHOWN}"]
    assert "Zürich \\u2067isolated\\u2069 line\nbreak" in raw  # the rest unchanged
    assert ESC_SHOWN in section(soup(record.path / "report.html"),
                                "inventory").get_text()


def test_notebook_pages_show_control_characters_of_outputs_as_escapes(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    out = nbformat.v4.new_output("stream", text=f"removed {RLO_RULE}\n")
    notebook(record.path / "notebooks/03-cleanup.ipynb",
             [nbformat.v4.new_code_cell("show()", execution_count=1, outputs=[out])])
    page = render_notebook(record.path, "notebooks/03-cleanup.ipynb").read_text("utf-8")
    assert "\u202e" not in page
    assert f"removed {RLO_SHOWN}" in page


# -- step 1's checks (issue 7: "No check was recorded") ----------------------------


def test_step_1_records_each_check_and_the_report_lists_them(make_tenant, reports):
    """The legacy-inline tenant passes every check of step 1; README's step table
    and prereq.py give them: pwsh (with its edition), ExchangeOnlineManagement and
    the installed seppmail365cloud (host), the connection, the tenant, each
    declared domain (tenant; no tenant id was given, the default domain is the
    first declared and inline covers both domains, so no more), DNS per domain."""
    from runbook import chain, params
    from runbook.sandbox import scenarios

    state = make_tenant("legacy-inline")
    p = params.validate(**scenarios.declared("legacy-inline"), sandbox_state=str(state))
    record = chain.run(p, reports_dir=reports, steps=("01-prerequisites",),
                       progress=lambda *_: None)

    checks = [e["data"] for e in record.events() if e["kind"] == "check"]
    assert [(c["step"], c["name"], c["ok"], c["level"]) for c in checks] == [
        ("01-prerequisites", name, True, "ok") for name in (
            "pwsh", "ExchangeOnlineManagement", "seppmail365cloud",
            "connection", "tenant", "domain contoso.ch", "domain contoso-group.ch",
            "DNS contoso.ch", "DNS contoso-group.ch")]
    verdict = [e["data"] for e in record.events() if e["kind"] == "verdict"][0]
    assert verdict["message"] == f"All {len(checks)} prerequisite checks passed."
    table = rows(section(soup(record.path / "report.html"), "checks").table)
    assert [r[:3] for r in table[1:]] == [["01-prerequisites", c["name"], "passed"]
                                          for c in checks]
