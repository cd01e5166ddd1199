"""report.html, the page a person reads first, and the notebooks as HTML.

Both kinds of page stand alone: CSS inline from ``runbook/templates``, no
script, and no URL that leaves the run folder, so they open from a file share
with no network; a Content-Security-Policy meta tag tells the browser the
same. Every value that came from a tenant, the parameters or an event goes
through `_e` on its way in: control and bidi formatting characters become
visible escapes (`runbook.visible`), then ``html.escape``; the only markup is
the markup written here. Long values wrap, nothing is cut short.

The record is read through `runbook.audit.RunRecord`, and pages are written
with its `write_text`, so they are 0600, inside the folder, secret-masked, and
refused once the run is sealed (the manifest covers them).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import runbook
from runbook import audit, visible

log = logging.getLogger(__name__)

INVENTORY_KINDS = (
    ("inbound_connectors", "Inbound connectors"),
    ("outbound_connectors", "Outbound connectors"),
    ("transport_rules", "Transport rules"),
)
_STATUS_CLASS = {"succeeded": "s-ok", "ok": "s-ok", "passed": "s-ok",
                 "failed": "s-bad", "planned": "s-plan", "skipped": "s-plan",
                 "running": "s-warn", "cancelled": "s-warn", "warning": "s-warn",
                 "added": "s-ok",
                 "removed": "s-bad", "replaced": "s-warn", "changed": "s-warn"}
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'none'; base-uri 'none'")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MISSING = object()


def _e(value: Any) -> str:
    return visible.html(value)


# -- the report -------------------------------------------------------------


def render_report(run_dir: Path) -> Path:
    """Write ``report.html`` for the run in `run_dir` and return its path."""
    record = audit.RunRecord.open(run_dir)
    run = record.run()
    events = record.events()
    body = "\n".join([
        _outcome(run, events),
        _run_facts(run),
        _versions(run, events),
        _parameters(run),
        _steps(record, run, events),
        _checks(events),
        _changes(events),
        _backups(record, events),
        _inventories(record),
        _confirmations(events),
        _diagnoses(events),
        _event_log(events),
        _footer(record),
    ])
    title = f"{run.get('status')}: {run.get('tenant')} run {run.get('run_id')}"
    page = _document(title, body, _css("report.css"))
    path = record.write_text(audit.REPORT_FILE, page)
    log.info("%s written", path)
    return path


def _document(title: str, body: str, css: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>\n{css}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


@functools.cache
def _css(name: str) -> str:
    return resources.files("runbook").joinpath("templates", name).read_text("utf-8")


def _outcome(run: dict, events: list[dict]) -> str:
    status = str(run.get("status"))
    return (f"<header class=\"outcome {_STATUS_CLASS.get(status, '')}\">\n"
            "<p class=\"label\">Outcome</p>\n"
            f"<p class=\"status\" id=\"outcome\">{_e(status)}</p>\n"
            f"<h1>Tenant {_e(run.get('tenant'))} &middot; run "
            f"{_e(run.get('run_id'))}</h1>\n"
            f"<p class=\"summary\">{_summary(run, events)}</p>\n"
            f"{_first_failure(run)}</header>")


def _summary(run: dict, events: list[dict]) -> str:
    steps = [s.get("status") for s in run.get("steps", [])]
    changes = _paired_changes(events)
    checks = [_check_verdict(e["data"]) for e in events if e["kind"] == "check"]
    parts = [
        _tally(len(steps), "step", steps),
        _tally(len(changes), "change",
               ["ok" if r and r.get("ok") else "failed" if r else "no result"
                for _, r in changes]),
        _tally(len(checks), "check", checks),
    ]
    return " &middot; ".join(parts)


def _tally(count: int, noun: str, labels: list) -> str:
    plural = noun if count == 1 else noun + "s"
    if not count:
        return f"no {plural}"
    seen: dict[str, int] = {}
    for label in labels:
        seen[str(label)] = seen.get(str(label), 0) + 1
    detail = ", ".join(f"{n} {_e(label)}" for label, n in seen.items())
    return f"{count} {plural}: {detail}"


def _first_failure(run: dict) -> str:
    for step in run.get("steps", []):
        if step.get("status") == "failed":
            error = step.get("error") or {}
            what = (f": {_e(error.get('ename'))}: {_e(error.get('evalue'))}"
                    if error else "")
            return (f"<p class=\"summary\">First failure: step "
                    f"<strong>{_e(step.get('name'))}</strong>{what}</p>\n")
    return ""


def _run_facts(run: dict) -> str:
    rows = [("Tenant", run.get("tenant")), ("Run id", run.get("run_id")),
            ("Status", run.get("status")), ("Operator", run.get("operator")),
            ("Host", run.get("host")), ("Backend", run.get("backend"))]
    if "sandbox_state" in run:
        rows.append(("Sandbox state", run.get("sandbox_state")))
    rows += [("Started", run.get("started_at")), ("Ended", run.get("ended_at")),
             ("Duration", _duration(_seconds_between(run.get("started_at"),
                                                     run.get("ended_at"))))]
    return _section("run", "Run", _kv_table(rows))


def _versions(run: dict, events: list[dict]) -> str:
    """One row per component: the version the run ended with, and any other
    version a step reported before (the module list changes in step 2)."""
    final = audit.final_versions(run.get("versions") or {}, events)
    earlier: dict[str, dict[str, list[str]]] = {}
    for event in events:
        if event["kind"] != "versions":
            continue
        data = dict(event["data"])
        step = str(data.pop("step", None) or f"event {event['seq']}")
        data["bridge"] = data.pop("host", final.get("bridge"))
        for name, version in data.items():
            shown = _version_text(version)
            if name in final and shown != _version_text(final[name]):
                earlier.setdefault(name, {}).setdefault(shown, []).append(step)
    rows = [[_e(name), _value(_version_text(version)),
             "<br>".join(f"{_e(v)} ({_e(', '.join(steps))})"
                         for v, steps in earlier.get(name, {}).items())]
            for name, version in final.items()]
    table = _table(["Component", "Version", "Before that, in step"], rows)
    return _section("versions", "Versions", table)


def _version_text(version: Any) -> Any:
    """A list of installed versions as text, newest first as the bridge lists them."""
    if isinstance(version, list) and all(isinstance(v, str) for v in version):
        return ", ".join(version) if version else "none installed"
    return version


def _parameters(run: dict) -> str:
    params = run.get("parameters") or {}
    if not params:
        return _section("parameters", "Parameters", "<p>No parameters.</p>")
    return _section("parameters", "Parameters",
                    _kv_table(list(params.items())))


# -- steps ------------------------------------------------------------------


def _steps(record: audit.RunRecord, run: dict, events: list[dict]) -> str:
    steps = run.get("steps", [])
    if not steps:
        return _section("steps", "Steps", "<p>No step was started.</p>")
    verdicts = _verdicts(steps, events)
    rows = [[str(n), _e(s.get("name")), _badge(s.get("status")),
             _e(s.get("started_at")), _duration(s.get("duration_s")),
             _e(verdict) if verdict else _absent("none recorded"),
             _notebook_links(record, s.get("notebook"))]
            for n, (s, verdict) in enumerate(zip(steps, verdicts), 1)]
    table = _table(["#", "Step", "Status", "Started", "Duration", "Verdict",
                    "Notebook"], rows, nowrap=(0, 1, 2, 3, 4))
    failures = [_step_failure(record, s) for s in steps
                if s.get("status") == "failed"]
    return _section("steps", "Steps", table + "\n".join(failures))


def _verdicts(steps: list[dict], events: list[dict]) -> list[str | None]:
    """The verdict message of each step attempt in run.json, in its order.

    A step started again (a resumed run) has one entry per attempt, and so
    does the event log: the n-th step-started of a name is its n-th entry.
    """
    attempts: list[list] = []  # [name, verdict message]
    for event in events:
        data = event["data"]
        if event["kind"] == "step-started":
            attempts.append([data.get("step"), None])
        elif event["kind"] == "verdict":
            mine = [a for a in attempts if a[0] == data.get("step")]
            if mine:
                mine[-1][1] = data.get("message")
    found = []
    for step in steps:
        index = next((i for i, a in enumerate(attempts)
                      if a[0] == step.get("name")), None)
        found.append(None if index is None else attempts.pop(index)[1])
    return found


def _notebook_links(record: audit.RunRecord, notebook: Any) -> str:
    if not isinstance(notebook, str) or not notebook:
        return ""
    links = [_link(record, notebook, notebook)]
    if notebook.endswith(".ipynb"):
        rendered = notebook[: -len(".ipynb")] + ".html"
        if _existing(record, rendered):
            links.append(_link(record, rendered, "as HTML"))
    return " &middot; ".join(links)


def _step_failure(record: audit.RunRecord, step: dict) -> str:
    error = step.get("error") or {}
    head = f"<h3>Step {_e(step.get('name'))} failed</h3>\n"
    if not error:
        return f"<div class=\"error\">{head}<p>No error was recorded.</p></div>"
    found = _failed_cell(record, step.get("notebook"), error.get("cell"))
    if found is not None:
        index, cell = found
        where = f"cell {index} (In [{_e(cell.get('execution_count'))}])"
    else:
        cell = None
        where = (f"cell {_e(error['cell'])}" if error.get("cell") is not None
                 else "an unknown cell")
    lines = [head, f"<p>In {where}: <code>{_e(error.get('ename'))}</code>: "
             f"{_e(error.get('evalue'))}</p>"]
    if cell is not None:
        lines.append(f"<pre>{_e(_source(cell))}</pre>")
        traceback = _traceback(cell)
        if traceback:
            lines.append(f"<details><summary>Traceback</summary><pre>{_e(traceback)}"
                         "</pre></details>")
    return "<div class=\"error\">" + "\n".join(lines) + "</div>"


def _failed_cell(record: audit.RunRecord, notebook: Any,
                 index: Any) -> tuple[int, dict] | None:
    """The cell of the executed notebook that holds the error, with its index.

    `index` is the cell index papermill reports. The cell must carry an
    error output to count; if it does not (an execution count given instead
    of an index, say), the one cell with an error output is taken, since
    papermill stops at the first failing cell.
    """
    if not _existing(record, notebook):
        return None
    try:
        cells = record.read_json(notebook).get("cells", [])
    except (ValueError, AttributeError):
        return None
    failing = [(i, c) for i, c in enumerate(cells) if _traceback(c) is not None]
    for i, cell in failing:
        if i == index:
            return i, cell
    return failing[0] if len(failing) == 1 else None


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _traceback(cell: dict) -> str | None:
    """The cell's error traceback without colour codes; None if it has no error."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return None
    return _ANSI.sub("", "\n".join("\n".join(o.get("traceback", [])) for o in errors))


# -- checks, changes, backups -----------------------------------------------


def _checks(events: list[dict]) -> str:
    rows = []
    for event in events:
        if event["kind"] != "check":
            continue
        data = event["data"]
        verdict = _check_verdict(data)
        rows.append([_e(data.get("step", "")), _e(data.get("name", "")),
                     _badge(verdict), _value(data.get("detail"))])
    if not rows:
        return _section("checks", "Checks", "<p>No check was recorded.</p>")
    return _section("checks", "Checks",
                    _table(["Step", "Check", "Result", "Detail"], rows,
                           nowrap=(0, 2)))


def _check_verdict(data: dict) -> str:
    """passed, warning (step 1's checks carry a level), failed or no verdict."""
    ok = data.get("ok")
    if ok is True:
        return "warning" if data.get("level") == "warning" else "passed"
    return "failed" if ok is False else "no verdict"


def _paired_changes(events: list[dict]) -> list[tuple[dict | None, dict | None]]:
    """(change-requested, its change-result) by id, in request order."""
    results: dict[Any, dict] = {}
    for event in events:
        if event["kind"] == "change-result":
            results[event["data"].get("id")] = event["data"]
    pairs = []
    requested_ids = set()
    for event in events:
        if event["kind"] == "change-requested":
            change_id = event["data"].get("id")
            requested_ids.add(change_id)
            pairs.append((event["data"], results.get(change_id)))
    pairs += [(None, r) for i, r in results.items() if i not in requested_ids]
    return pairs


def _changes(events: list[dict]) -> str:
    pairs = _paired_changes(events)
    if not pairs:
        return _section("changes", "Changes", "<p>No change was requested.</p>")
    rows = []
    for requested, result in pairs:
        source = requested or result or {}
        if result is None:
            verdict = _badge("running", "no result recorded")
        else:
            verdict = _badge("ok" if result.get("ok") else "failed")
        rows.append([_e(source.get("id")), _e(source.get("step") or ""),
                     _e(source.get("command")), _e(source.get("target")),
                     _value(requested.get("parameters")) if requested
                     else _absent("no request recorded"),
                     verdict, _ms(result.get("duration_ms") if result else None),
                     _outcome_messages(result)])
    headers = ["Id", "Step", "Command", "Target", "Parameters", "Result", "Took",
               "Errors and warnings"]
    return _section("changes", "Changes",
                    _table(headers, rows, nowrap=(0, 1, 2, 5, 6)))


def _outcome_messages(result: dict | None) -> str:
    if not result:
        return ""
    lines = []
    for error in result.get("errors") or []:
        if isinstance(error, dict):
            label = error.get("error_id") or error.get("category") or "error"
            lines.append(f"<strong>{_e(label)}</strong>: {_e(error.get('message'))}")
        else:
            lines.append(_e(error))
    lines += [f"warning: {_e(w)}" for w in result.get("warnings") or []]
    return "<br>".join(lines)


def _backups(record: audit.RunRecord, events: list[dict]) -> str:
    rows = []
    for event in events:
        if event["kind"] != "backup":
            continue
        data = event["data"]
        objects = [f"{_e(o.get('kind'))}: {_e(o.get('name'))}"
                   if isinstance(o, dict) else _e(o)
                   for o in data.get("objects") or []]
        rows.append([_link(record, data.get("file"), data.get("file")),
                     "<br>".join(objects)])
    if not rows:
        return _section("backups", "Backups", "<p>No object was backed up.</p>")
    return _section("backups", "Backups", _table(["File", "Objects"], rows))


# -- inventories ------------------------------------------------------------


@dataclass
class ObjectChange:
    """One connector or rule compared before and after, matched by name."""

    name: str
    status: str  # added | removed | replaced | changed | unchanged
    before: dict | None
    after: dict | None
    properties: list[str] = field(default_factory=list)


def inventory_diff(before: list[dict], after: list[dict]) -> list[ObjectChange]:
    """Compare two lists of Exchange objects by Name.

    Names match case-insensitively, as Exchange matches identities
    (exchange-objects.md section 9, "How identities match"). The same name
    with a different Guid is ``replaced``: Exchange assigns the Guid
    (section 1), so the object was removed and created again, which is what a
    CBC migration does to a connector that keeps its name.
    """
    old, new = _by_name(before), _by_name(after)
    changes = []
    for key in [*old, *(k for k in new if k not in old)]:
        b, a = old.get(key), new.get(key)
        if b is None or a is None:
            obj = a if b is None else b
            changes.append(ObjectChange(_name(obj), "added" if b is None else "removed",
                                        b, a, list(obj)))
            continue
        props = [p for p in _keys(b, a)
                 if not _same(b.get(p, _MISSING), a.get(p, _MISSING))]
        replaced = b.get("Guid") and a.get("Guid") and b["Guid"] != a["Guid"]
        status = "replaced" if replaced else "changed" if props else "unchanged"
        changes.append(ObjectChange(_name(a), status, b, a, props))
    return changes


def _by_name(objects: list[dict]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for index, obj in enumerate(objects):
        key = _name(obj).casefold()
        if key in found:  # a duplicate name is kept, not folded into the first
            key = f"{key}\0{index}"
        found[key] = obj
    return found


def _name(obj: dict) -> str:
    return str(obj.get("Name") or obj.get("Identity") or "(no name)")


def _keys(b: dict, a: dict) -> list[str]:
    return [*b, *(k for k in a if k not in b)]


def _same(x: Any, y: Any) -> bool:
    # through JSON so that true and 1 differ, as they do on the wire
    return json.dumps(x, sort_keys=True, default=str) == json.dumps(
        y, sort_keys=True, default=str)


def _inventories(record: audit.RunRecord) -> str:
    before = _optional_json(record, "inventory/before.json")
    after = _optional_json(record, "inventory/after.json")
    if before is None and after is None:
        return _section("inventory", "Connectors and rules",
                        "<p>No inventory was taken.</p>")
    taken = _kv_table([
        ("Before", _taken(record, "inventory/before.json", before)),
        ("After", _taken(record, "inventory/after.json", after)),
    ], raw=True)
    parts = [taken]
    for kind, title in INVENTORY_KINDS:
        parts.append(_inventory_kind(title, (before or {}).get(kind),
                                     (after or {}).get(kind)))
    return _section("inventory", "Connectors and rules, before and after",
                    "\n".join(parts))


def _taken(record: audit.RunRecord, rel: str, inventory: dict | None) -> str:
    if inventory is None:
        return _absent("not taken")
    return f"{_e(inventory.get('taken_at'))} ({_link(record, rel, rel)})"


def _inventory_kind(title: str, before: list | None, after: list | None) -> str:
    if before is None or after is None:
        only = before if after is None else after
        side = "before" if after is None else "after"
        names = "<br>".join(_e(_name(o)) for o in only or []) or _absent("none")
        return (f"<h3>{_e(title)}</h3>\n<p>Only the {side} inventory exists, so "
                f"nothing is compared.</p>\n<p>{names}</p>")
    changes = inventory_diff(before, after)
    if not changes:
        return f"<h3>{_e(title)}</h3>\n<p>None before and none after.</p>"
    rows = [[_e(c.name), _badge(c.status),
             _e(", ".join(c.properties)) if c.status in ("changed", "replaced")
             else ""] for c in changes]
    summary = _table(["Name", "Change", "Changed properties"], rows)
    details = [_object_details(c) for c in changes if c.status != "unchanged"]
    return f"<h3>{_e(title)}</h3>\n{summary}\n" + "\n".join(details)


def _object_details(change: ObjectChange) -> str:
    """Changed properties side by side; the equal ones once, folded away.

    A rule has about a hundred properties and a migration touches a handful,
    so showing every equal pair twice would bury the changes.
    """
    summary = f"<summary>{_e(change.name)}: {_e(change.status)}</summary>\n"
    if change.before is None or change.after is None:
        return _whole_object(change, summary)

    changed = [f"<tr class=\"changed\"><th>{_e(p)}</th>"
               f"<td class=\"before\">{_value(change.before.get(p, _MISSING))}</td>"
               f"<td class=\"after\">{_value(change.after.get(p, _MISSING))}</td></tr>"
               for p in change.properties]
    equal = [f"<tr><th>{_e(p)}</th><td>{_value(change.after[p])}</td></tr>"
             for p in _keys(change.before, change.after) if p not in change.properties]
    parts = [f"<details open>{summary}"]
    if changed:
        parts.append("<table class=\"diff\"><tr><th>Property</th><th>Before</th>"
                     "<th>After</th></tr>\n" + "\n".join(changed) + "</table>")
    if equal:
        parts.append(f"<details class=\"equal\"><summary>{len(equal)} properties "
                     "the same before and after</summary>\n<table class=\"equal\">"
                     "<tr><th>Property</th><th>Value</th></tr>\n" + "\n".join(equal)
                     + "</table></details>")
    return "\n".join(parts) + "</details>"


def _whole_object(change: ObjectChange, summary: str) -> str:
    """An added or removed object: its properties with a value, the empty ones
    (null, "", [], {}) folded, since most of a rule's hundred are empty."""
    obj = change.after if change.before is None else change.before
    side = "After" if change.before is None else "Before"
    head = f"<tr><th>Property</th><th>{side}</th></tr>\n"
    rows = {True: [], False: []}
    for prop, value in obj.items():
        rows[value in (None, "", [], {})].append(
            f"<tr class=\"{change.status}\"><th>{_e(prop)}</th>"
            f"<td>{_value(value)}</td></tr>")
    parts = [f"<details open>{summary}<table class=\"object\">{head}"
             + "\n".join(rows[False]) + "</table>"]
    if rows[True]:
        parts.append(f"<details class=\"equal\"><summary>{len(rows[True])} "
                     "properties empty (null, \"\" or [])</summary>\n<table "
                     f"class=\"object\">{head}" + "\n".join(rows[True])
                     + "</table></details>")
    return "\n".join(parts) + "</details>"


def _optional_json(record: audit.RunRecord, rel: str) -> Any:
    if not _existing(record, rel):
        return None
    return record.read_json(rel)


# -- confirmations, diagnosis, events ---------------------------------------


def _confirmations(events: list[dict]) -> str:
    rows = []
    for event in events:
        if event["kind"] != "confirmation":
            continue
        data = event["data"]
        plan = data.get("plan")
        if isinstance(plan, list):
            shown = "<ul>" + "".join(f"<li>{_value(p)}</li>" for p in plan) + "</ul>"
        else:
            shown = _value(plan)
        rows.append([_e(data.get("step", "")), _e(data.get("by", "")),
                     _e(data.get("at", event["at"])), shown])
    if not rows:
        return _section("confirmations", "Confirmations",
                        "<p>No change was confirmed.</p>")
    return _section("confirmations", "Confirmations",
                    _table(["Step", "Confirmed by", "At", "Plan"], rows,
                           nowrap=(0, 2)))


# A looping recipient domain as `runbook.loops` records it: key, column header.
_DIAGNOSIS_DOMAIN = (("domain", "Domain"), ("finding", "Verdict"), ("acts", "Who acts"),
                     ("mx", "MX"), ("region", "Region"), ("tenant_id", "Tenant ID"),
                     ("cbc_ready", "CBC ready"), ("messages", "Looping messages"),
                     ("passes", "Passes"), ("connectors", "Connectors passed"),
                     ("sample_message", "Newest message"))


def _diagnoses(events: list[dict]) -> str:
    found = [e for e in events if e["kind"] == "diagnosis"]
    if not found:
        return ""
    return _section("diagnosis", "Diagnosis", "\n".join(_diagnosis(e) for e in found))


def _diagnosis(event: dict) -> str:
    """The flat facts, then this tenant's findings, then one row per looping domain."""
    data = event["data"]
    facts = [(k, v) for k, v in data.items() if k not in ("local", "domains")]
    parts = [f"<h3>Event {event['seq']} at {_e(event['at'])}</h3>", _kv_table(facts)]
    local = data.get("local") or []
    if local:
        parts.append("<h4>This tenant's own configuration</h4>\n<ul>"
                     + "".join(f"<li>{_value(m)}</li>" for m in local) + "</ul>")
    domains = [d for d in data.get("domains") or [] if isinstance(d, dict)]
    if domains:
        rows = [[_domain_cell(d, key) for key, _ in _DIAGNOSIS_DOMAIN] for d in domains]
        parts.append("<h4>Looping recipient domains</h4>\n"
                     + _table([h for _, h in _DIAGNOSIS_DOMAIN], rows))
    return "\n".join(parts)


def _domain_cell(domain: dict, key: str) -> str:
    # Events written before the plain-words finding existed carry only the code.
    value = domain.get(key, _MISSING)
    if key == "finding" and value is _MISSING:
        value = domain.get("verdict", _MISSING)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _e(", ".join(value))
    return _value(value)


def _event_log(events: list[dict]) -> str:
    rows = [[str(e["seq"]), _e(e["at"]), _e(e["kind"]),
             f"<span class=\"mono\">{_e(_json(e['data']))}</span>"] for e in events]
    table = _table(["#", "At (UTC)", "Kind", "Data"], rows, nowrap=(0, 1, 2))
    return _section("events", "Event log",
                    f"<details><summary>All {len(events)} events</summary>\n"
                    f"{table}</details>")


def _footer(record: audit.RunRecord) -> str:
    return (f"<footer>Written by runbook {_e(runbook.__version__)} at "
            f"{_e(audit.iso(audit.utc_now()))}. This page is sealed with the rest "
            "of the folder once the run finishes; check that nothing changed since "
            f"with <code>runbook audit verify {_e(record.path)}</code>."
            "</footer>")


# -- markup helpers ---------------------------------------------------------


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id=\"{anchor}\">\n<h2>{_e(title)}</h2>\n{body}\n</section>"


def _table(headers: list[str], rows: list[list[str]], *,
           nowrap: tuple[int, ...] = ()) -> str:
    """Headers are plain text; cells are markup built by the caller with `_e`.

    Columns in `nowrap` hold short identifiers (ids, step names, times), which
    read badly broken at every dash when a wide column next to them squeezes.
    """
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(
        f"<td class=\"nowrap\">{cell}</td>" if n in nowrap else f"<td>{cell}</td>"
        for n, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _kv_table(rows: list[tuple[str, Any]], *, raw: bool = False) -> str:
    """Key and value rows; `raw` values are markup already, others are escaped."""
    body = "\n".join(f"<tr><th>{_e(k)}</th><td>{v if raw else _value(v)}</td></tr>"
                     for k, v in rows)
    return f"<table class=\"kv\">\n{body}\n</table>"


def _value(value: Any) -> str:
    if value is _MISSING:
        return _absent("absent")
    if value is None:
        return "<span class=\"null\">null</span>"
    if isinstance(value, str):
        return _e(value) if value else "<span class=\"null\">\"\"</span>"
    return _e(_json(value))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _absent(text: str) -> str:
    return f"<span class=\"absent\">{_e(text)}</span>"


def _badge(status: Any, text: str | None = None) -> str:
    css = _STATUS_CLASS.get(str(status), "")
    return f"<span class=\"badge {css}\">{_e(text or status)}</span>"


def _existing(record: audit.RunRecord, rel: Any) -> bool:
    if not isinstance(rel, str):
        return False
    try:
        return record.path_of(rel).is_file()
    except audit.UnsafePath:
        return False


def _link(record: audit.RunRecord, rel: Any, text: Any) -> str:
    """A relative link to a file of the folder; plain text if it is not one."""
    if not _existing(record, rel):
        return _e(text)
    href = "/".join(quote(part) for part in str(rel).split("/"))
    return f"<a href=\"{_e(href)}\">{_e(text)}</a>"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return _absent("unknown")
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _ms(value: Any) -> str:
    return f"{value:g} ms" if isinstance(value, (int, float)) else ""


def _seconds_between(start: Any, end: Any) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)
                ).total_seconds()
    except (TypeError, ValueError):
        return None


# -- notebooks --------------------------------------------------------------


def render_notebook(run_dir: Path, relpath: str) -> Path:
    """Render an executed notebook of the folder to a standalone HTML page beside it.

    nbconvert's ``basic`` template gives the cells without its page shell,
    whose lab and classic versions pull require.js, MathJax and mermaid from
    a CDN; the shell here is local. Cell HTML passes a sanitiser first.
    """
    record = audit.RunRecord.open(run_dir)
    source = PurePosixPath(relpath)
    if source.suffix != ".ipynb":
        raise ValueError(f"not a notebook: {relpath!r}")
    body = _notebook_body(record.path_of(relpath))
    back = "../" * (len(source.parts) - 1) + audit.REPORT_FILE
    run = record.run()
    nav = (f"<nav><a href=\"{_e(back)}\">Run report</a> &middot; tenant "
           f"{_e(run.get('tenant'))} &middot; run {_e(run.get('run_id'))} &middot; "
           f"{_e(source.name)}</nav>\n")
    css = _css("notebook.css") + _pygments_css() + _tables_css()
    page = _document(f"{source.stem}: {run.get('tenant')} {run.get('run_id')}",
                     nav + body, css)
    return record.write_text(str(source.with_suffix(".html")), page)


def _notebook_body(path: Path) -> str:
    with _EXPORTER_LOCK:
        body, _ = _exporter().from_filename(str(path))
    # Stream outputs and tracebacks reach the page as text; a control or bidi
    # character is never markup, so escaping it in the whole body is safe.
    return visible.visible(body)


# One exporter for every page: building it loads and compiles nbconvert's
# templates, which costs more than rendering a notebook. It is not made for
# two threads at once (the chain renders a step's page while the next runs).
_EXPORTER_LOCK = threading.Lock()


@functools.cache
def _exporter() -> Any:
    from nbconvert import HTMLExporter  # slow to import; only notebook pages need it

    exporter = HTMLExporter(template_name="basic", embed_images=True,
                            exclude_anchor_links=True)
    exporter.register_preprocessor(_sanitiser(), enabled=True)
    return exporter


def _sanitiser() -> Any:
    import bleach
    from nbconvert.preprocessors.sanitize import SanitizeHTML

    class CellSanitiser(SanitizeHTML):
        """Bleach with the tags pandas tables and markdown need; drops style and
        script elements whole, since their text is noise once escaped."""

        def sanitize_html_tags(self, html_str: str) -> str:
            html_str = re.sub(r"<(style|script)\b.*?</\1\s*>", "", html_str,
                              flags=re.I | re.S)
            return super().sanitize_html_tags(html_str)

    tags = sorted(set(bleach.ALLOWED_TAGS) | {
        "h1", "h2", "h3", "h4", "h5", "h6", "p", "pre", "code", "br", "hr", "div",
        "span", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption",
        "details", "summary", "dl", "dt", "dd", "sup", "sub", "del", "kbd"})
    attributes = {"*": ["class", "title"], "a": ["href", "title"],
                  "th": ["colspan", "rowspan"], "td": ["colspan", "rowspan"]}
    return CellSanitiser(tags=tags, attributes=attributes)


def _tables_css() -> str:
    from runbook import tables  # pandas; only notebook pages need it

    return tables.stylesheet()


@functools.cache
def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(style="default").get_style_defs(".highlight") + "\n"
