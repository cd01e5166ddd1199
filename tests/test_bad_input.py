"""Bad input gets a clear error before anything changes (issue 10).

One table of cases per entry point: notebook parameters (`open_step`), CLI
flags (`runbook run`), and values from the tenant itself. Each case asserts
the exact error and that the sandbox tenant is byte for byte as it was.
"""

import hashlib
import html
import json

import pytest

from runbook import cli, inventory
from runbook.notebook import open_step
from runbook.params import ParameterError

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
