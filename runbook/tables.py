"""pandas Styler helpers: tables an engineer reads at a glance, with a customer waiting.

Three shapes, one function each:

* `style_inventory` - connectors and rules (`inventory.table`), inventory diffs
  (`inventory.diff`) and rollback plans: what will be removed or changed is
  highlighted, what stays is plain;
* `style_comparison` - expected against actual (`configure.comparison`,
  `configure.rule_comparison`): every row whose `ok` is false is marked;
* `style_checks` - check results (`prereq.frame`, `dns.to_frame`,
  `mailflow.FlowStatus.frame`): errors red, warnings amber, passes green.

Every value shown comes from a tenant or a DNS answer, so every cell is HTML-
escaped here, lists included, after `runbook.visible` has written its control
and bidi formatting characters as escapes (a U+202E in a rule name would
otherwise show ``exe.png`` for ``gnp.exe``); the plain-text form does the same.
`Styler.format(escape="html")` escapes only `str` values and passes a list
through as its `repr`, unescaped; the one cell formatter below therefore
escapes everything itself, and escaping is not switched on a second time.
Long lists of domains or addresses are kept whole but folded into a
`<details>` element, so no value is ever cut short.

The styled tables are `StyledTable`s: their plain-text form is the table
itself, which is what papermill and nbval record where no browser renders HTML.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
from typing import Callable

import pandas as pd
from pandas.io.formats.style import Styler

from runbook import visible

log = logging.getLogger(__name__)

FOLD_AFTER = 4         # a list longer than this folds, showing its first items
SHOWN_WHEN_FOLDED = 3
# A host name, a GUID or a class such as "pre-cbc" misreads when a narrow column
# breaks it at a dash; one word up to this long keeps to one line.
NOWRAP_UP_TO = 40

# Row states and how they look; the classes stay in the HTML so tests and
# browsers can find a highlighted row without reading colours.
REMOVE, MANUAL, CHANGE, ADD, KEEP = "remove", "manual", "change", "add", "keep"
MISMATCH, MATCH = "mismatch", "match"
ERROR, WARNING, OK = "error", "warning", "ok"
_COLOURS = {
    REMOVE: "background-color: #fde2e1; color: #5f1412;",
    MANUAL: "background-color: #ffe9c2; color: #4d3200; font-weight: bold;",
    CHANGE: "background-color: #fff4c9; color: #3d3300;",
    ADD: "background-color: #e3f4e1; color: #123d12;",
    MISMATCH: "background-color: #fde2e1; color: #5f1412; font-weight: bold;",
    ERROR: "background-color: #fde2e1; color: #5f1412;",
    WARNING: "background-color: #fff4c9; color: #3d3300;",
    OK: "background-color: #eef8ec; color: #123d12;",
}
_BASE_STYLES = [
    {"selector": "th", "props": "text-align: left; vertical-align: top;"},
    {"selector": "td", "props": "text-align: left; vertical-align: top;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; "
                                     "font-weight: bold; padding-bottom: 4px;"},
    {"selector": "summary", "props": "cursor: pointer;"},
    {"selector": ".runbook-nowrap", "props": "white-space: nowrap;"},
]


class StyledTable(Styler):
    """A Styler whose `repr` is the plain table, for outputs no browser renders."""

    def __repr__(self) -> str:
        if self.data.empty:
            return f"(no rows) {', '.join(map(str, self.data.columns))}"
        return self.data.map(_visible_value).to_string(index=False)


def _visible_value(value):
    if isinstance(value, str):
        return visible.visible(value)
    if isinstance(value, (list, tuple)):  # pandas prints the items with str()
        return [_visible_value(v) for v in value]
    return value


# -- the three shapes ----------------------------------------------------------


def style_inventory(df: pd.DataFrame) -> StyledTable:
    """Connectors and rules; the ones to remove or change highlighted.

    Understands the columns of `inventory.table` (`remove`, `portal only`),
    of `inventory.diff` (`change`: added, removed, changed) and of a rollback
    plan (`action`: remove, recreate). A `portal only` object is marked
    apart: PowerShell cannot remove it (exchange-objects.md §9, names with
    "/" or "\\"), the engineer does it in the Exchange admin center.
    """
    states = [_inventory_state(row) for row in _rows(df)]
    counts = _count(states)
    caption = ", ".join(f"{counts[s]} {label}" for s, label in (
        (REMOVE, "to remove"), (MANUAL, "to remove in the admin center"),
        (CHANGE, "changed"), (ADD, "added"), (KEEP, "kept as they are"))
        if counts.get(s)) or "no objects"
    return _styled(df, "inventory", states, caption)


def style_comparison(df: pd.DataFrame) -> StyledTable:
    """Expected against actual; rows whose `ok` is false marked as mismatches.

    `expected` and `actual` hold lists joined by ", " (configure._show), so
    long domain lists fold in those two columns.
    """
    if "ok" not in df.columns:
        raise ValueError(f"a comparison needs an 'ok' column; columns are "
                         f"{', '.join(map(str, df.columns))}")
    states = [MATCH if bool(row.get("ok")) else MISMATCH for row in _rows(df)]
    bad = states.count(MISMATCH)
    caption = (f"{bad} of {len(states)} differ" if bad else
               f"all {len(states)} as expected" if states else "nothing to compare")
    folded = [c for c in ("expected", "actual") if c in df.columns]
    formatters = {"ok": lambda v: '<span class="runbook-nowrap">'
                  + ("✓ match" if bool(v) else "✗ MISMATCH") + "</span>"}
    return _styled(df, "comparison", states, caption, split_columns=folded,
                   formatters=formatters)


def style_checks(df: pd.DataFrame) -> StyledTable:
    """Check results coloured by outcome: a `result` column (error, warning,
    ok, as `prereq.frame` writes it), else `status` (anything but "ok" is an
    error, as in `dns.to_frame`), else `confirmed` (a boolean)."""
    states = [_check_state(row) for row in _rows(df)]
    counts = _count(states)
    caption = ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 and s != OK else ''}"
                        for s in (ERROR, WARNING, OK) if counts.get(s)) or "no checks"
    return _styled(df, "checks", states, caption)


# -- row states ----------------------------------------------------------------


def _inventory_state(row: dict) -> str:
    if _true(row.get("portal only")):
        return MANUAL
    if _true(row.get("remove")):
        return REMOVE
    change = str(row.get("change") or row.get("action") or "").lower()
    return {"removed": REMOVE, "remove": REMOVE, "changed": CHANGE,
            "recreate": ADD, "added": ADD}.get(change, KEEP)


def _check_state(row: dict) -> str:
    if "result" in row:
        level = str(row["result"]).lower()
        return level if level in (ERROR, WARNING, OK) else ERROR
    if "status" in row:
        return OK if str(row["status"]).lower() == "ok" else ERROR
    if "confirmed" in row:
        return OK if _true(row["confirmed"]) else WARNING
    return OK


def _true(value) -> bool:
    return value is True or (isinstance(value, (int, float)) and not _missing(value)
                             and bool(value))


# -- cells ---------------------------------------------------------------------


def cell_html(value, *, split: bool = False) -> str:
    """One cell as escaped HTML; a long list folds, whole, into <details>.

    `split`: the value is a list joined by ", " (configure's comparison text).
    """
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in (sorted(value, key=str) if isinstance(
            value, (set, frozenset)) else value)]
        return _fold(items)
    if split and isinstance(value, str) and ", " in value:
        return _fold(value.split(", "))
    return _word(_plain(value))


def _word(text: str) -> str:
    escaped = visible.html(text)
    if "-" in text and len(text) <= NOWRAP_UP_TO and not any(
            c.isspace() for c in text):
        return f'<span class="runbook-nowrap">{escaped}</span>'
    return escaped


def _plain(value) -> str:
    if _missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _missing(value) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def _fold(items: list[str]) -> str:
    if len(items) <= FOLD_AFTER:
        return visible.html(", ".join(items))
    head = visible.html(", ".join(items[:SHOWN_WHEN_FOLDED]))
    rest = len(items) - SHOWN_WHEN_FOLDED
    whole = "<br>".join(visible.html(i) for i in items)
    return (f'<details class="runbook-fold"><summary>{len(items)} items: {head}, '
            f"… (+{rest} more)</summary>{whole}</details>")


# -- assembly ------------------------------------------------------------------


def _styled(df: pd.DataFrame, kind: str, states: list[str], caption: str, *,
            split_columns: list[str] = (),
            formatters: dict[str, Callable] | None = None) -> StyledTable:
    frame = df.reset_index(drop=True)
    styler = StyledTable(frame, uuid=_uuid(kind, frame), cell_ids=False)
    styler.format(cell_html)
    for column in split_columns:
        styler.format(lambda v: cell_html(v, split=True), subset=[column])
    for column, formatter in (formatters or {}).items():
        if column in frame.columns:
            styler.format(formatter, subset=[column])
    styler.format_index(visible.html, axis=1)
    styler.hide(axis="index")
    styler.set_caption(html.escape(caption))
    styler.set_table_attributes(f'class="runbook-table runbook-{kind}"')
    if not frame.empty:
        classes = pd.DataFrame([[f"runbook-{s}"] * len(frame.columns) for s in states],
                               index=frame.index, columns=frame.columns)
        styler.set_td_classes(classes)
    used = set(states)
    styler.set_table_styles(_BASE_STYLES + [
        {"selector": f"td.runbook-{s}", "props": css} for s, css in _COLOURS.items()
        if s in used])
    log.debug("styled %s table: %d rows, %s", kind, len(frame), caption)
    return styler


def stylesheet() -> str:
    """The tables' CSS by class alone, for pages that drop each table's own
    ``<style>`` (the notebook pages of `runbook.report` sanitise them away)."""
    rules = [f"table.runbook-table {s['selector']} {{ {s['props']} }}"
             for s in _BASE_STYLES]
    rules += [f"table.runbook-table td.runbook-{state} {{ {css} }}"
              for state, css in _COLOURS.items()]
    return "\n".join(rules) + "\n"


def _rows(df: pd.DataFrame) -> list[dict]:
    return df.reset_index(drop=True).to_dict("records")


def _count(states: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return counts


def _uuid(kind: str, frame: pd.DataFrame) -> str:
    """Stable ids: an executed notebook is the same text when the table is the same."""
    text = repr((kind, list(frame.columns), frame.to_dict("split")["data"]))
    return f"{kind}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"
