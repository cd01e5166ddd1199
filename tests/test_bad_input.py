"""Bad input gets a clear error before anything changes (issue 10).

One table of cases per entry point: notebook parameters (`open_step`), CLI
flags (`runbook run`), and values from the tenant itself. Each case asserts
the exact error and that the sandbox tenant is byte for byte as it was.
"""

import hashlib
import html
import json

import pytest

from runbook import chain, cli, inventory, prereq, tables
from runbook.audit import RunRecord
from runbook.notebook import open_step
from runbook.params import ParameterError, validate
from runbook.sandbox import scenarios
from runbook.sandbox import state as sandbox_state

GOOD = {"tenant": "contoso", "domains": ["contoso.ch", "contoso-group.ch"],
        "region": "ch", "routing": "inline", "backend": "sandbox"}

# (parameter, value, the words of "what is allowed")
NOTEBOOK_CASES = [
    ("tenant", "contoso.onmicrosoft.com", "the <name> of <name>.onmicrosoft.com"),
    ("tenant", "CONTOSO", "lower-case letters"),
    ("tenant", "", "lower-case letters"),
    ("tenant", "con\ntoso", "a single line of text"),
    ("tenant", "../../etc", "lower-case letters"),
    ("tenant", 42, "text, not int"),
    ("tenant", None, "text, not NoneType"),
    ("domains", "contoso.ch", "a list of domains"),
    ("domains", ["contoso.ch", "Contoso.CH."], "each domain once"),
    ("domains", ["contoso.ch;Remove-Item"], "a domain name"),
    ("domains", ["$(Get-Process).ch"], "a domain name"),
    ("domains", ["`whoami`.ch"], "a domain name"),
    ("domains", ["<script>.ch"], "a domain name"),
    ("domains", ["a" * 64 + ".ch"], "a domain name"),
    ("domains", [("x" * 60 + ".") * 5 + "ch"], "a domain name"),
    ("domains", [1234], "text, not int"),
    ("domains", {"contoso.ch": 1}, "a non-empty list of domains"),
    ("domains", ["tenant.onmicrosoft.com"], "cannot be routed via SEPPmail.cloud"),
    ("region", "CH", "one of ch, prv, de, dev"),
    ("region", "", "one of ch, prv, de, dev"),
    ("routing", "both", "one of inline, parallel"),
    ("routing", "p", "one of inline, parallel"),
    ("backend", "exo", "one of sandbox, pwsh"),
    ("confirm", "True", "a boolean, not text"),
    ("confirm", 1, "a boolean, not text"),
    ("tenant_id", "2c4f6a8e", "a GUID"),
    ("tenant_id", "'; drop table", "a GUID"),
    ("app_id", "my-app", "an application (client) ID"),
    ("module_version", "2.0.2; Remove-Module", "a module version"),
    ("module_version", 2.0, "text, not float"),
    ("wait_minutes", 10000, "a number from 0 to 120"),
    ("wait_minutes", True, "a number from 0 to 120"),
    ("poll_seconds", 0, "a number from 0.1 to 600"),
    ("timeout_seconds", "300", "a number from 1 to 3600"),
    ("operator", "<img src=x onerror=alert(1)>", "a person's name or login"),
    ("scenario", "Legacy Inline", "a sandbox scenario name"),
    ("sandbox_state", "/nonexistent/tenant.json", "an existing sandbox state file"),
]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, value, allowed", NOTEBOOK_CASES,
                         ids=[f"{n}={str(v)[:20]!r}" for n, v, _ in NOTEBOOK_CASES])
def test_notebook_parameter_is_refused_before_anything_changes(
        name, value, allowed, make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    before = _digest(state_file)
    values = dict(GOOD, sandbox_state=str(state_file), confirm=True)
    values[name] = value
    with pytest.raises(ParameterError) as caught:
        open_step("03-cleanup", values)
    assert caught.value.name == name
    assert allowed in caught.value.allowed
    assert _digest(state_file) == before
    assert not reports.exists() or not any(reports.rglob("run.json"))


CLI_CASES = [
    (["--tenant", "Contoso"], "parameter tenant='Contoso'"),
    (["--domain", "x"], "parameter domains='x'"),
    (["--region", "eu"], "parameter region='eu'"),
    (["--routing", "hybrid"], "parameter routing='hybrid'"),
    (["--backend", "ssh"], "parameter backend='ssh'"),
    (["--tenant-id", "not-a-guid"], "parameter tenant_id='not-a-guid'"),
    (["--module-version", "newest"], "parameter module_version='newest'"),
    (["--wait-minutes", "500"], "parameter wait_minutes=500.0"),
    (["--operator", "a;b|c"], "parameter operator='a;b|c'"),
    (["--certificate-path", "/tmp/c.pfx", "--backend", "pwsh"], "parameter app_id=''"),
]


@pytest.mark.parametrize("extra, message", CLI_CASES,
                         ids=[" ".join(e)[:30] for e, _ in CLI_CASES])
def test_cli_flag_is_refused_with_exit_2_and_the_tenant_untouched(
        extra, message, make_tenant, reports, capsys):
    state_file = make_tenant("legacy-inline")
    before = _digest(state_file)
    base = {"--tenant": "contoso", "--region": "ch", "--routing": "inline"}
    argv = ["run", "--sandbox-state", str(state_file), "--confirm"]
    overridden = set(extra[::2])
    for flag, value in base.items():
        if flag not in overridden:
            argv += [flag, value]
    if "--domain" not in overridden:
        argv += ["--domain", "contoso.ch", "--domain", "contoso-group.ch"]
    assert cli.main(argv + extra) == 2
    assert message in capsys.readouterr().err
    assert _digest(state_file) == before


def test_cli_run_without_a_sandbox_state_is_refused(reports, capsys):
    code = cli.main(["run", "--tenant", "contoso", "--domain", "contoso.ch",
                     "--region", "ch", "--routing", "inline"])
    assert code == 2
    assert "parameter sandbox_state=''" in capsys.readouterr().err


HOSTILE_NAMES = [
    "[SEPPmail.cloud] - 100 <script>alert(1)</script>",
    "[SEPPmail] \"><img src=x onerror=alert(1)>",
    "[SEPPmail.cloud] $(Remove-Item -Recurse C:\\); `whoami`",
    "Rule with 'quotes' and \"double\" and\nnewline",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_tenant_names_are_classified_and_shown_escaped(name):
    item = inventory.classify("transport_rule", {"Name": name, "Priority": 0})
    frame = inventory.table([item])
    assert frame.loc[0, "name"] == name          # kept whole, as data
    page = frame.to_html()                       # pandas escapes by default
    assert "<script>" not in page and "<img" not in page
    first = name.split("\n")[0]
    assert html.escape(first, quote=False) in page.replace("&quot;", '"')


@pytest.mark.parametrize("obj", [
    {"Name": "[SEPPmail.cloud] Inbound-InLine", "TlsSenderCertificateName": ["x"]},
    {"Name": "[SEPPmail.cloud] Outbound-InLine", "Comment": 12345},
    {"Name": "[SEPPmail.cloud] Outbound-InLine", "Comment": "x" * 10000},
    {"Name": None},
    {"Name": 17, "Priority": "first"},
    {},
])
def test_unexpected_types_from_the_tenant_do_not_break_the_inventory(obj):
    for kind in inventory.KINDS:
        item = inventory.classify(kind, obj)
        frame = inventory.table([item])
        assert len(frame) == 1
        json.dumps(item.reason)


# -- Task H: the hostile tester's findings (issue 10) -------------------------
#
# Each finding is one row: what the tester typed, and the one line (exit 2) it
# must now give; the tenant, the run folders and the files named stay as they
# were. Placeholders in braces are the files the `tester` fixture makes.

DOMAIN_RULE = ("a domain name such as contoso.ch: labels of 1-63 letters, digits or "
               "hyphens (no hyphen at either end), at least two labels, at most 253 "
               "characters, no wildcard, the last label not all digits")
RUN = ["run", "--tenant", "contoso", "--region", "ch", "--routing", "inline",
       "--sandbox-state", "{state}", "--confirm"]
NEW = ["sandbox", "new", "legacy-inline", "{tmp}/new.json"]
NO_RUN_FOLDER = ("give a run folder, reports/<tenant>/<run-id>, that holds run.json "
                 "with the run's parameters")

TESTER_CLI_CASES = [
    ("resume-missing", ["resume", "{tmp}/nonexistent"],
     f"runbook: not a run folder: {{tmp}}/nonexistent (no run.json); {NO_RUN_FOLDER}"),
    ("rollback-missing", ["rollback", "{tmp}/nonexistent"],
     f"runbook: not a run folder: {{tmp}}/nonexistent (no run.json); {NO_RUN_FOLDER}"),
    ("rollback-no-parameters", ["rollback", "{bare}", "--confirm"],
     f"runbook: not a run folder: {{bare}} (its run.json holds no parameters); "
     f"{NO_RUN_FOLDER}"),
    ("resume-finished", ["resume", "{finished}"],
     "runbook: {finished}: every step succeeded already; nothing to resume"),
    ("reports-is-a-file", RUN + ["--domain", "contoso.ch", "--reports", "{afile}"],
     "runbook run: argument --reports: {afile} is a file, not a folder; name the "
     "folder for the run folders (see runbook run --help)"),
    ("demo-unknown-scenario", ["demo", "--scenario", "nosuch"],
     "runbook demo: argument --scenario: unknown scenario 'nosuch'; the scenarios "
     f"are {', '.join(scenarios.names())} (see runbook demo --help)"),
    ("domain-ip-address", RUN + ["--domain", "1.2.3.4"],
     f"runbook: parameter domains='1.2.3.4' is not allowed: {DOMAIN_RULE} (this one: "
     "an IP address, or a last label of digits only)"),
    ("domain-wildcard", RUN + ["--domain", "*.contoso.ch"],
     f"runbook: parameter domains='*.contoso.ch' is not allowed: {DOMAIN_RULE} (this "
     "one: a wildcard; name each domain)"),
    ("domain-label-64", RUN + ["--domain", "a" * 64 + ".ch"],
     f"runbook: parameter domains='{'a' * 64}.ch' is not allowed: {DOMAIN_RULE} (this "
     "one: IDNA refuses it: Label too long)"),
    ("run-certificate-missing",
     RUN + ["--domain", "contoso.ch", "--certificate-path", "{tmp}/nonexist.pfx"],
     "runbook: parameter certificate_path='{tmp}/nonexist.pfx' is not allowed: an "
     "existing certificate file"),
    ("run-wait-nan", RUN + ["--domain", "contoso.ch", "--wait-minutes", "nan"],
     "runbook: parameter wait_minutes=nan is not allowed: a number from 0 to 120"),
    ("sandbox-new-no-folder", ["sandbox", "new", "legacy-inline", "{tmp}/nodir/x.json"],
     "runbook sandbox new: argument file: folder '{tmp}/nodir' does not exist; create "
     "it first (see runbook sandbox new --help)"),
    ("sandbox-new-module-code", NEW + ["--module", "$(rm -rf /)"],
     "runbook sandbox new: argument --module: '$(rm -rf /)' is not a module version "
     "such as 2.0.2 or 1.3.0-preview1, nor 'none' (see runbook sandbox new --help)"),
    ("sandbox-new-delay-nan", NEW + ["--propagation-delay", "nan"],
     "runbook sandbox new: argument --propagation-delay: 'nan' is not a number of "
     "seconds, 0 or more (see runbook sandbox new --help)"),
    ("sandbox-new-delay-negative", NEW + ["--propagation-delay", "-100"],
     "runbook sandbox new: argument --propagation-delay: '-100' is not a number of "
     "seconds, 0 or more (see runbook sandbox new --help)"),
    ("sandbox-show-schema-only", ["sandbox", "show", "{schema_only}"],
     "runbook sandbox show: sandbox state '{schema_only}': no 'scenario' of the right "
     "type; write a fresh one with `runbook sandbox new SCENARIO FILE`"),
    ("batch-device", ["batch", "/dev/zero"],
     "runbook batch: /dev/zero: not a regular file; give the CSV file itself"),
    ("batch-too-big", ["batch", "{big}"],
     "runbook batch: {big}: larger than 8 MiB; split it into several files"),
    ("batch-time-limit-negative", ["batch", "{csv}", "--time-limit", "-1"],
     "runbook batch: argument --time-limit: '-1' is not a number of minutes above 0 "
     "(see runbook batch --help)"),
    ("batch-time-limit-nan", ["batch", "{csv}", "--time-limit", "nan"],
     "runbook batch: argument --time-limit: 'nan' is not a number of minutes above 0 "
     "(see runbook batch --help)"),
    ("batch-step-twice",
     ["batch", "{csv}", "--steps", "01-prerequisites,01-prerequisites"],
     "runbook batch: argument --steps: '01-prerequisites' is named twice; name each "
     "step once (see runbook batch --help)"),
    ("batch-wait-once-not-per-row", ["batch", "{csv}", "--wait-minutes", "1e9"],
     "runbook batch: parameter wait_minutes=1000000000.0 is not allowed: a number "
     "from 0 to 120"),
]


@pytest.fixture
def tester(tmp_path, make_tenant, reports):
    """The files the hostile tester pointed the commands at."""
    state = make_tenant("legacy-inline")
    other = make_tenant("legacy-parallel")
    (tmp_path / "afile").write_text("not a folder\n")
    bare = tmp_path / "bare-run"
    bare.mkdir()
    (bare / "run.json").write_text('{"tenant": "contoso"}\n')
    (bare / "events.jsonl").write_text("")
    (tmp_path / "schema-only.json").write_text('{"schema": 1}\n')
    (tmp_path / "big.csv").write_bytes(b"tenant,domains,region,routing\n"
                                       + b"x" * (8 * 1024 * 1024))
    (tmp_path / "tenants.csv").write_text(
        "tenant,domains,region,routing,sandbox_state\n"
        f"contoso,contoso.ch contoso-group.ch,ch,inline,{state}\n"
        f"fabrikam,fabrikam.com,de,parallel,{other}\n")
    p = validate(**GOOD, sandbox_state=str(state), confirm=True)
    finished = RunRecord.create(reports, "contoso", parameters=p.as_dict(),
                                sandbox_state=str(state))
    for step in chain.STEPS:
        finished.step_started(step, f"notebooks/{step}.ipynb")
        finished.step_finished(step, "succeeded")
    finished.finish("succeeded")
    return {"tmp": str(tmp_path), "state": str(state), "afile": str(tmp_path / "afile"),
            "bare": str(bare), "finished": str(finished.path),
            "schema_only": str(tmp_path / "schema-only.json"),
            "big": str(tmp_path / "big.csv"), "csv": str(tmp_path / "tenants.csv")}


def _tree(folder) -> dict:
    """Every file under `folder` with its digest: what 'unchanged' means here."""
    return {str(f): _digest(f) for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("argv, line", [c[1:] for c in TESTER_CLI_CASES],
                         ids=[c[0] for c in TESTER_CLI_CASES])
def test_tester_finding_is_one_line_and_exit_2_with_nothing_changed(
        argv, line, tester, tmp_path, capsys):
    before = _tree(tmp_path)
    code = cli.main([arg.format(**tester) for arg in argv])
    captured = capsys.readouterr()
    assert (code, captured.err) == (2, line.format(**tester) + "\n")
    assert captured.out == ""
    assert _tree(tmp_path) == before


# Values as papermill hands them over: `-p tenant 0123` arrives as the number
# 123, `-p domains '["contoso.ch"]'` as text. Only the messages help; nothing
# is guessed from a string.
TESTER_NOTEBOOK_CASES = [
    ("tenant", 123, "parameter tenant=123 is not allowed: text, not int (with "
     "papermill, pass text with -r tenant VALUE)"),
    ("tenant_id", 2, "parameter tenant_id=2 is not allowed: text, not int (with "
     "papermill, pass text with -r tenant_id VALUE)"),
    ("domains", '["contoso.ch"]', "parameter domains='[\"contoso.ch\"]' is not "
     "allowed: a list of domains, e.g. [\"contoso.ch\"]; with papermill, pass a list "
     "with -y domains '[\"contoso.ch\"]'"),
    ("domains", "contoso.ch", "parameter domains='contoso.ch' is not allowed: a list "
     "of domains, e.g. [\"contoso.ch\"]"),
    ("domains", ["contoso.ch", "10.0.0.1"], "parameter domains='10.0.0.1' is not "
     f"allowed: {DOMAIN_RULE} (this one: an IP address, or a last label of digits "
     "only)"),
    ("domains", ["<b>evil</b>.contoso.ch"], "parameter domains='<b>evil</b>.contoso.ch'"
     f" is not allowed: {DOMAIN_RULE} (this one: IDNA refuses it: Codepoint U+003C at "
     "position 1 of '<b>evil</b>' not allowed)"),
    ("wait_minutes", float("nan"), "parameter wait_minutes=nan is not allowed: a "
     "number from 0 to 120"),
    ("poll_seconds", float("inf"), "parameter poll_seconds=inf is not allowed: a "
     "number from 0.1 to 600"),
]


@pytest.mark.parametrize("name, value, message", TESTER_NOTEBOOK_CASES,
                         ids=[f"{n}={v!r}"[:30] for n, v, _ in TESTER_NOTEBOOK_CASES])
def test_papermill_typed_value_is_refused_with_how_to_pass_it(
        name, value, message, make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    before = _digest(state_file)
    with pytest.raises(ParameterError) as caught:
        open_step("01-prerequisites", dict(GOOD, sandbox_state=str(state_file),
                                           **{name: value}))
    assert str(caught.value) == message
    assert _digest(state_file) == before
    assert not reports.exists() or not any(reports.rglob("run.json"))


def test_accepted_domain_that_is_no_domain_is_shown_escaped_and_step_1_goes_on(
        make_tenant, reports):
    """The tester's edit: an accepted domain `<b>evil</b>.contoso.ch` in the state."""
    state_file = make_tenant("legacy-inline")
    state = sandbox_state.load(state_file)
    evil = dict(state["accepted_domains"][0], DomainName="<b>evil</b>.contoso.ch",
                Name="<b>evil</b>.contoso.ch", Default=False, InitialDomain=False)
    state["accepted_domains"].append(evil)
    sandbox_state.save(state_file, state)
    before = _digest(state_file)

    ctx = open_step("01-prerequisites", dict(GOOD, sandbox_state=str(state_file)))
    try:
        checks = prereq.tenant_checks(ctx.params, ctx.connection,
                                      ctx.exo.accepted_domains(), {})
    finally:
        ctx.close()

    odd = [c for c in checks if c.level != prereq.OK]
    assert [(c.item, c.level, c.message) for c in odd] == [(
        "accepted domain '<b>evil</b>.contoso.ch'", prereq.WARNING,
        "the tenant lists it, but it is not a domain name (IDNA refuses it: Codepoint "
        "U+003C at position 1 of '<b>evil</b>' not allowed); left out of these checks")]
    declared = {c.item: c.level for c in checks if c.item.startswith("domain ")}
    assert declared == {"domain contoso.ch": prereq.OK,
                        "domain contoso-group.ch": prereq.OK}
    assert prereq.verdict(checks) == ("succeeded", f"All {len(checks)} prerequisite "
                                      "checks passed (1 warning).")
    page = tables.style_checks(prereq.frame(checks)).to_html()
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page
    assert _digest(state_file) == before


# -- Task G: records the tester edited, and text that hides what it says --------
#
# Each row: what the tester did to a plan-only record of a legacy-inline tenant,
# and what `runbook resume` prints (exit 1) instead of running. The tenant and
# the events stay as they were. {run} is the run folder.


def _set_confirm(folder):
    run = json.loads((folder / "run.json").read_text())
    run["parameters"]["confirm"] = True
    (folder / "run.json").write_text(json.dumps(run, indent=2, ensure_ascii=False))


def _cut_short(folder):
    (folder / "manifest.json").unlink()
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")[:3]
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")


CONFIRM_EDITED = ("run.json: parameters.confirm True differs from events.jsonl line 1 "
                  "(False)")
TAMPERED_RECORD_CASES = [
    ("sealed-confirm-set", True, _set_confirm,
     [CONFIRM_EDITED, "run.json: SHA-256 differs from manifest.json (changed after "
                      "the run finished)"]),
    ("unfinished-confirm-set", False, _set_confirm, [CONFIRM_EDITED]),
    ("manifest-removed-events-cut", True, _cut_short,
     ["run.json: status 'planned' says the run finished, but events.jsonl has no "
      "run-finished (events verified up to line 3): the record was cut short or its "
      "seal removed, or the run died while sealing"]),
]


@pytest.mark.parametrize("sealed, tamper, problems",
                         [c[1:] for c in TAMPERED_RECORD_CASES],
                         ids=[c[0] for c in TAMPERED_RECORD_CASES])
def test_a_tampered_record_is_not_resumed(sealed, tamper, problems, make_tenant,
                                          reports, capsys):
    state_file = make_tenant("legacy-inline")
    p = validate(**scenarios.declared("legacy-inline"), sandbox_state=str(state_file))
    record = RunRecord.create(reports, p.tenant, parameters=p.as_dict(),
                              sandbox_state=p.sandbox_state)
    record.step_started("01-prerequisites", "notebooks/01-prerequisites.ipynb")
    record.step_finished("01-prerequisites", "planned")
    if sealed:
        record.finish("planned")
    tamper(record.path)
    before = (_digest(state_file), (record.path / "events.jsonl").read_bytes())

    assert cli.main(["resume", str(record.path)]) == 1
    assert capsys.readouterr().err == (
        f"runbook: {record.path} cannot be resumed; it is not intact:\n"
        + "".join(f"  {problem}\n" for problem in problems))
    assert (_digest(state_file), (record.path / "events.jsonl").read_bytes()) == before
    assert cli.main(["audit", "verify", str(record.path)]) == 1
    assert capsys.readouterr().out.splitlines() == problems


# What a name from the tenant holds, and how the report and the notebook tables
# show it: control and bidi formatting characters as escapes, the rest as it is.
HIDING_TEXT_CASES = [
    ("rlo", "invoice gnp\u202eexe.png", "invoice gnp\\u202eexe.png"),
    ("escape", "\x1b[2J\x1b[31mConnector", "\\x1b[2J\\x1b[31mConnector"),
    ("isolates", "a\u2066b\u2067c\u2068d\u2069", "a\\u2066b\\u2067c\\u2068d\\u2069"),
    ("marks", "x\u200ey\u200fz\u061c", "x\\u200ey\\u200fz\\u061c"),
    ("zero-width", "SEPP\u200bmail\ufeff", "SEPP\\u200bmail\\ufeff"),
    ("c1-and-del", "a\x85b\x7fc\x00", "a\\x85b\\x7fc\\x00"),
    ("kept", "Zürich 東京 👩\u200d💻 a\\b/c", "Zürich 東京 👩\u200d💻 a\\b/c"),
]


@pytest.mark.parametrize("raw, shown", [c[1:] for c in HIDING_TEXT_CASES],
                         ids=[c[0] for c in HIDING_TEXT_CASES])
def test_text_that_hides_what_it_says_is_shown_as_escapes(raw, shown):
    from runbook import report

    assert report._e(raw) == html.escape(shown)
    assert tables.cell_html(raw) == html.escape(shown)
    assert tables.cell_html([raw, "b"]) == html.escape(f"{shown}, b")


# -- The final tester's findings: waits and ports without bounds ---------------------

@pytest.mark.parametrize("argv, message", [
    (["dns", "contoso.ch", "--routing", "inline", "--nameserver", "127.0.0.1:1",
      "--timeout", "nan"], "'nan' is not a number of seconds above 0 and at most 60"),
    (["dns", "contoso.ch", "--routing", "inline", "--nameserver", "127.0.0.1:1",
      "--timeout", "inf"], "'inf' is not a number of seconds above 0 and at most 60"),
    (["sandbox", "dns", "STATE", "--seconds", "inf"],
     "'inf' is not a number of seconds, 0 or more and at most 86400"),
    (["sandbox", "dns", "STATE", "--seconds", "-5"],
     "'-5' is not a number of seconds, 0 or more and at most 86400"),
    (["sandbox", "dns", "STATE", "--port", "99999"],
     "'99999' is not a port: 0 (a free one) to 65535"),
])
def test_a_wait_or_port_without_bounds_is_refused_before_anything_starts(
        argv, message, make_tenant, capsys):
    state_file = make_tenant("legacy-inline")
    before = state_file.read_bytes()
    argv = [str(state_file) if a == "STATE" else a for a in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert state_file.read_bytes() == before


def test_a_file_that_is_no_sandbox_state_is_refused_before_a_run_folder(
        tmp_path, reports, capsys):
    not_state = tmp_path / "passwd"
    not_state.write_text("root:x:0:0:root:/root:/bin/bash\n")
    argv = ["run", "--tenant", "fabrikam", "--domain", "fabrikam.com", "--region", "de",
            "--routing", "parallel", "--sandbox-state", str(not_state)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"runbook: parameter sandbox_state={str(not_state)!r} is not allowed: a sandbox "
        "state file (`runbook sandbox new SCENARIO FILE`); this one is not JSON "
        "(Expecting value, line 1)\n")
    assert not reports.exists()


def test_a_reader_that_goes_away_early_gets_no_traceback(tmp_path):
    # `runbook ... | head -1`: the pipe closes before everything is written.
    import subprocess
    import sys as _sys

    script = ("import sys; from runbook import cli\n"
              "def noisy(argv=None):\n"
              "    for _ in range(100000):\n"
              "        print('intact: 49 events, 18 files')\n"
              "    return 0\n"
              "cli.main = noisy\n"
              "sys.exit(cli.entry())\n")
    done = subprocess.run(f"{_sys.executable} -c \"{script}\" | head -1", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "intact: 49 events, 18 files\n"
    assert done.stderr == ""
