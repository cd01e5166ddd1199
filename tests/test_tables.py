"""Styled tables: highlighting, escaping, folding (issue 9, point 4)."""

import re
from datetime import datetime, timezone

import pandas as pd
import pytest
from bs4 import BeautifulSoup

from runbook import configure, inventory, prereq, tables
from runbook.inventory import Inventory


def _rows(styled) -> list[tuple[list[str], list[str]]]:
    """(classes of the first cell, texts of the cells) for every body row."""
    soup = BeautifulSoup(styled.to_html(), "html.parser")
    found = []
    for tr in soup.select("tbody tr"):
        cells = tr.find_all("td")
        found.append((cells[0].get("class", []), [c.get_text() for c in cells]))
    return found


def _inventory() -> Inventory:
    return Inventory(
        taken_at=datetime(2026, 1, 5, tzinfo=timezone.utc),
        inbound_connectors=[
            {"Name": "[SEPPmail.cloud] Inbound-Inline",
             "TlsSenderCertificateName": "*.ch.seppmail.cloud", "Enabled": True},
            {"Name": "[SEPPmail.cloud] Inbound / Legacy", "Enabled": True},
            {"Name": "Partner <Fabrikam> & Co", "Enabled": False},
        ],
        outbound_connectors=[], transport_rules=[])


def test_inventory_rows_to_remove_are_marked_and_portal_only_ones_apart():
    rows = _rows(tables.style_inventory(inventory.table(_inventory().items())))
    by_name = {texts[1]: classes for classes, texts in rows}
    assert "runbook-manual" in by_name["[SEPPmail.cloud] Inbound / Legacy"]
    assert "runbook-remove" in by_name["[SEPPmail.cloud] Inbound-Inline"]
    assert "runbook-keep" in by_name["Partner <Fabrikam> & Co"]


def test_inventory_caption_counts_what_happens_to_the_objects():
    html = tables.style_inventory(inventory.table(_inventory().items())).to_html()
    caption = BeautifulSoup(html, "html.parser").caption.get_text()
    assert caption == "1 to remove, 1 to remove in the admin center, 1 kept as they are"


def test_tenant_values_are_escaped_not_rendered():
    html = tables.style_inventory(inventory.table(_inventory().items())).to_html()
    assert "Partner &lt;Fabrikam&gt; &amp; Co" in html
    assert "<Fabrikam>" not in html


def test_list_values_are_escaped_too():
    df = pd.DataFrame([{"check": "x", "result": "ok",
                        "details": ["<script>alert(1)</script>", "b"]}])
    html = tables.style_checks(df).to_html()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;, b" in html


def test_a_diff_marks_removed_changed_and_added_objects():
    df = pd.DataFrame([
        {"kind": "transport rule", "name": "a", "change": "removed", "properties": ""},
        {"kind": "inbound connector", "name": "b", "change": "changed",
         "properties": "Enabled"},
        {"kind": "inbound connector", "name": "c", "change": "added", "properties": ""},
    ])
    classes = [c for c, _ in _rows(tables.style_inventory(df))]
    assert [next(x for x in c if x.startswith("runbook-")) for c in classes] == [
        "runbook-remove", "runbook-change", "runbook-add"]


def test_long_domain_lists_fold_but_stay_whole():
    domains = [f"d{n}.contoso.ch" for n in range(12)]
    df = pd.DataFrame([{"connector": "[SEPPmail.cloud] Outbound-Parallel",
                        "property": "RecipientDomains", "expected": ", ".join(domains),
                        "actual": ", ".join(domains[:2]), "ok": False}])
    soup = BeautifulSoup(tables.style_comparison(df).to_html(), "html.parser")
    folded = soup.select("details.runbook-fold")
    assert len(folded) == 1                       # only the long one folds
    assert folded[0].summary.get_text() == (
        "12 items: d0.contoso.ch, d1.contoso.ch, d2.contoso.ch, … (+9 more)")
    inside = folded[0].get_text("|").split("|")[1:]
    assert inside == domains


def test_four_items_do_not_fold():
    assert tables.cell_html(["a", "b", "c", "d"]) == "a, b, c, d"
    assert tables.cell_html(["a", "b", "c", "d", "e"]).startswith("<details")


def test_one_dashed_word_keeps_to_one_line_and_text_still_wraps():
    assert tables.cell_html("pre-cbc") == '<span class="runbook-nowrap">pre-cbc</span>'
    assert tables.cell_html("contoso-ch.gate.seppmail.cloud") == (
        '<span class="runbook-nowrap">contoso-ch.gate.seppmail.cloud</span>')
    assert tables.cell_html("not created by SEPPmail; left as-is") == (
        "not created by SEPPmail; left as-is")
    long_word = "a-" * 20 + "b"                  # 41 characters wrap as they must
    assert tables.cell_html(long_word) == long_word
    assert tables.cell_html("<x-y>") == '<span class="runbook-nowrap">&lt;x-y&gt;</span>'


def test_comparison_marks_each_mismatch_and_counts_them():
    expected = {"[SEPPmail.cloud] Inbound-InLine": {
        "TlsSenderCertificateName": "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b.ch.seppmail.cloud",
        "RequireTls": True}}
    actual = [{"Name": "[SEPPmail.cloud] Inbound-InLine",
               "TlsSenderCertificateName": "*.ch.seppmail.cloud", "RequireTls": True}]
    styled = tables.style_comparison(configure.comparison(expected, actual))
    rows = _rows(styled)
    assert [("runbook-mismatch" in c, t[-1]) for c, t in rows] == [
        (True, "✗ MISMATCH"), (False, "✓ match")]
    caption = BeautifulSoup(styled.to_html(), "html.parser").caption.get_text()
    assert caption == "1 of 2 differ"


def test_a_comparison_without_an_ok_column_is_refused():
    with pytest.raises(ValueError, match="a comparison needs an 'ok' column; "
                                         "columns are a, b"):
        tables.style_comparison(pd.DataFrame({"a": [1], "b": [2]}))


def test_checks_are_coloured_by_level():
    checks = [prereq.Check("pwsh", prereq.OK, "PowerShell 7.5.4"),
              prereq.Check("tenant", prereq.ERROR, "connected to another tenant"),
              prereq.Check("primary domain", prereq.WARNING, "default differs")]
    styled = tables.style_checks(prereq.frame(checks))
    states = [next(x for x in c if x.startswith("runbook-")) for c, _ in _rows(styled)]
    assert states == ["runbook-error", "runbook-warning", "runbook-ok"]
    caption = BeautifulSoup(styled.to_html(), "html.parser").caption.get_text()
    assert caption == "1 error, 1 warning, 1 ok"


def test_dns_rows_that_are_not_ok_are_errors():
    df = pd.DataFrame([{"domain": "contoso.ch", "status": "wrong-mx", "message": "m"},
                       {"domain": "contoso-group.ch", "status": "ok", "message": "m"}])
    states = [next(x for x in c if x.startswith("runbook-"))
              for c, _ in _rows(tables.style_checks(df))]
    assert states == ["runbook-error", "runbook-ok"]


def test_booleans_read_as_yes_and_no_and_missing_values_as_blank():
    df = pd.DataFrame([{"direction": "inbound", "confirmed": True, "message": None},
                       {"direction": "outbound", "confirmed": False,
                        "message": float("nan")}])
    rows = _rows(tables.style_checks(df))
    assert [t for _, t in rows] == [["inbound", "yes", ""], ["outbound", "no", ""]]
    assert ["runbook-ok" in rows[0][0], "runbook-warning" in rows[1][0]] == [True, True]


def test_plain_text_form_is_the_table_for_papermill_outputs():
    df = pd.DataFrame([{"check": "pwsh", "result": "ok", "details": "7.5.4"}])
    assert repr(tables.style_checks(df)).split() == ["check", "result", "details",
                                                     "pwsh", "ok", "7.5.4"]
    empty = tables.style_checks(prereq.frame([]))
    assert repr(empty) == "(no rows) check, result, details"


def test_the_same_table_renders_to_the_same_html():
    df = prereq.frame([prereq.Check("pwsh", prereq.OK, "PowerShell 7.5.4")])
    first, second = tables.style_checks(df).to_html(), tables.style_checks(df).to_html()
    assert first == second
    assert re.search(r'id="T_checks-[0-9a-f]{10}"', first)


def test_control_and_bidi_characters_show_as_escapes_in_html_and_text():
    """A U+202E in a rule name shows "gnp.exe" as "exe.png"; an ESC starts a
    terminal sequence. Both are shown as escapes; umlauts, emoji with their
    joiner, backslashes, tabs and line breaks stay as they are."""
    name = "[SEPPmail] gnp\u202eexe.png \x1b[31m"
    details = ["a\u2066b\u2069", "Zürich 👩\u200d💻 a\\b\tc"]
    df = pd.DataFrame([{"check": name, "result": "error", "details": details}])
    styled = tables.style_checks(df)
    page = styled.to_html()
    for char in ("\u202e", "\x1b", "\u2066", "\u2069"):
        assert char not in page and char not in repr(styled), repr(char)
    assert "[SEPPmail] gnp\\u202eexe.png \\x1b[31m" in page
    assert "a\\u2066b\\u2069, Zürich 👩\u200d💻 a\\b\tc" in page
    assert "[SEPPmail] gnp\\u202eexe.png \\x1b[31m" in repr(styled)
    assert tables.cell_html("line\nbreak\r\n") == "line\nbreak\r\n"
    assert tables.cell_html("\x00\x7f\x85\u200b\ufeff\u061c") == (
        "\\x00\\x7f\\x85\\u200b\\ufeff\\u061c")
