"""Where the module has a fault, the runbook guards against it (issue 4).

Each test pins one guard of steps 2 and 4 against the sandbox's model of the
module as it is (seppmail365cloud.md, section in each docstring).
"""

import pytest

from runbook import configure, install, params
from runbook.exchange import ExchangeOnline
from runbook.powershell import CommandFailed, Session, sandbox_command


def _connect(state_file):
    session = Session(sandbox_command(state_file), timeout=60)
    exo = ExchangeOnline(session, confirmed=True, step="02-install-module")
    exo.connect("contoso.onmicrosoft.com")
    return session, exo


def test_preview1_rules_for_several_domains_are_refused_before_anything_changes():
    """§1.3 / runbook.sandbox.module_rules: p1 tests its domain list with
    -contains against the whole array, so New-SC365Rules fails for two or
    more domains; step 4 says so instead of creating half a setup."""
    p = params.validate(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
                        region="ch", routing="parallel")
    with pytest.raises(configure.ConfigureBlocked) as caught:
        configure.plan(p, module_version="1.3.0-preview1",
                       tenant_id="2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b",
                       connectors=[], rules=[])
    assert str(caught.value) == (
        "seppmail365cloud 1.3.0-preview1 creates rules for one domain only; use module"
        " 1.3.0 or later for contoso.ch, contoso-group.ch")


def test_preview1_inline_creates_no_rules_so_several_domains_are_fine():
    """§2.2: p1 creates no inline rules, so its rule fault does not apply."""
    p = params.validate(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
                        region="ch", routing="inline")
    plan = configure.plan(p, module_version="1.3.0-preview1",
                          tenant_id="2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b",
                          connectors=[], rules=[])
    assert plan.expected_rules == [] and plan.create_rules is False


def test_module_1_3_0_imports_because_step_2_installs_dnsclient_first(make_tenant):
    """§6: 1.3.0 installs DNSClient-PS at import without -Force, which fails
    while PSGallery is untrusted (its default); step 2 installs it first."""
    state_file = make_tenant("legacy-inline")
    session, exo = _connect(state_file)
    try:
        exo.install_module("1.3.0")
        with pytest.raises(CommandFailed) as caught:
            exo.import_module("1.3.0")
        assert str(caught.value) == (
            "Import-Module failed: Could not install requirem Module 'DNSClient'."
            " Please install manually from the PowerShell Gallery")
        plan = install.plan(exo, "1.3.0")
        assert not plan.needed
    finally:
        session.close()

    state_file = make_tenant("legacy-inline")
    session, exo = _connect(state_file)
    try:
        plan = install.plan(exo, "1.3.0")
        assert plan.needed
        installed = install.apply(exo, plan)
        exo.import_module("1.3.0")
    finally:
        session.close()
    assert installed == ["1.3.0", "1.2.5"]


def test_importing_the_module_is_a_recorded_change_refused_without_confirmation(
        make_tenant, tmp_path):
    """§6: module 2.0.2's import creates and removes the EX505293 test connector
    and installs DNSClient-PS and PSWriteHTML, so a plan run must not import it,
    and a confirmed import lands in the audit like any other change."""
    from runbook.audit import RunRecord
    from runbook.exchange import NotConfirmed
    from runbook.sandbox import state as state_mod

    state_file = make_tenant("legacy-inline", module_installed="2.0.2")
    before = state_file.read_bytes()
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    session = Session(sandbox_command(state_file), timeout=60)
    try:
        exo = ExchangeOnline(session, record=record, confirmed=False, step="04-configure")
        exo.connect("contoso.onmicrosoft.com")
        with pytest.raises(NotConfirmed, match="^Import-Module 'seppmail365cloud 2.0.2'"):
            exo.import_module("2.0.2")
        assert state_file.read_bytes() == before

        exo.confirmed = True
        exo.import_module("2.0.2")
    finally:
        session.close()
    changes = [(e["kind"], e["data"]["command"], e["data"].get("ok"))
               for e in record.events() if e["kind"].startswith("change-")]
    assert changes == [("change-requested", "Import-Module", None),
                       ("change-result", "Import-Module", True)]
    logged = [c["command"] for c in state_mod.load(state_file)["changes"]]
    assert "New-InboundConnector" in logged and "Remove-InboundConnector" in logged
