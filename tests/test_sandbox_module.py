"""The simulated seppmail365cloud module against the scenario tenants.

Every test pins one modelled behaviour of the module as it is; the
docstring names the section of /work/shared/domain/seppmail365cloud.md it
comes from. Tenants are the real scenario states (runbook.sandbox.scenarios)
behind the real Tenant and simulated Exchange (runbook.sandbox.exo), on a
fixed clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbook.sandbox import exo, gallery, module, scenarios, server

from runbook.sandbox.registry import CmdletError
from runbook.sandbox.tenant import Tenant

NOW = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
STAMP = "03/02/2026 09:00:00"  # NOW as the module interpolates it (§2.3)
CONTOSO_ID = "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
FABRIKAM_ID = "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60"
P1 = "1.3.0-preview1"


class Clock:
    def __init__(self, moment: datetime):
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def tenant_for(scenario: str, version: str | None, *, connect: bool = True,
               interactive: bool | None = None, dehydrated: bool = False,
               clock: Clock | None = None) -> Tenant:
    """A scenario tenant with `version` installed, connected and imported."""
    state = scenarios.build(scenario, now=NOW, propagation_delay_s=0)
    if interactive is not None:
        state["host"] = {"user_interactive": interactive}
    state["organization_config"]["IsDehydrated"] = dehydrated
    tenant = Tenant(state, clock=clock or Clock(NOW))
    if version is not None:
        gallery.install(tenant, "seppmail365cloud", required_version=version,
                        allow_prerelease=True, force=True)
    if version == "1.3.0":
        # 1.3.0 installs DNSClient-PS without -Force at import (§6), which an
        # Untrusted gallery refuses; the machine has it already.
        gallery.install(tenant, "DNSClient-PS", force=True)
    if connect:
        tenant.invoke("Connect-ExchangeOnline", Organization=state["tenant"]
                      ["initial_domain"], Device=True)
    if version is not None:
        tenant.invoke("Import-Module", Name="seppmail365cloud",
                      RequiredVersion=version.split("-")[0])
    tenant.take_warnings()
    return tenant


def by_name(objects: list[dict]) -> dict[str, dict]:
    return {o["Name"]: o for o in objects}


def changes(tenant: Tenant, since: int = 0) -> list[tuple[str, str]]:
    return [(c["command"], c["target"]) for c in tenant.state["changes"][since:]]


def failure(tenant: Tenant, command: str, **params) -> CmdletError:
    with pytest.raises(CmdletError) as caught:
        tenant.invoke(command, **params)
    return caught.value


def clear_legacy(tenant: Tenant, routing: str) -> None:
    """Remove the 1.2.5 objects the way the module can (rules first)."""
    if routing == "parallel":
        by_pattern = tenant.imported_module == "2.0.2"  # 2.0 has no -routing (§1.4)
        tenant.invoke("Remove-SC365Rules", Confirm=False,
                      **({} if by_pattern else {"routing": "parallel"}))
    tenant.invoke("Remove-SC365Connectors", routing=routing, Confirm=False)
    tenant.take_warnings()


# --- before import, binding --------------------------------------------------------


def test_sc365_cmdlets_do_not_exist_before_import_module():
    """§1.1: the functions come with the module; before Import-Module they are
    CommandNotFoundException, category ObjectNotFound."""
    tenant = tenant_for("legacy-inline", None)
    error = failure(tenant, "Get-SC365Connectors", routing="inline")
    assert (error.error_id, error.category) == ("CommandNotFoundException",
                                                "ObjectNotFound")
    assert "'Get-SC365Connectors' is not recognized" in error.message


def test_cmdlet_the_version_does_not_export_is_not_found():
    """§1.1: Get-SC365DeploymentInfo arrives in 1.3.0; p1 does not have it."""
    tenant = tenant_for("legacy-inline", P1)
    error = failure(tenant, "Get-SC365DeploymentInfo")
    assert error.error_id == "CommandNotFoundException"


def test_unknown_parameter_is_named_parameter_not_found():
    """§1.2: 2.0 removed -option from New-SC365Connectors."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                    region="ch", routing="inline", option="AntiSpamAllowListing")
    assert error.error_id == "NamedParameterNotFound"
    assert error.message == ("A parameter cannot be found that matches parameter"
                             " name 'option'.")


def test_routing_outside_the_validate_set_is_refused():
    """§1.3: p1 New-SC365Rules takes only `-routing parallel`."""
    tenant = tenant_for("legacy-parallel", P1)
    error = failure(tenant, "New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                    routing="inline")
    assert error.error_id == "ParameterArgumentValidationError,New-SC365Rules"
    assert 'The argument "inline" does not belong to the set "parallel"' in error.message


def test_region_and_routing_are_mandatory_from_1_3_0():
    """§1.2: region and routing optional in p1/p2, mandatory from 1.3.0."""
    tenant = tenant_for("legacy-inline", "1.3.0")
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.ch")
    assert error.error_id == "MissingMandatoryParameter,New-SC365Connectors"
    assert error.message.endswith("parameters: region routing.")


def test_domain_alias_binds_to_seppmailclouddomain():
    """§1.2: SEPPmailCloudDomain has the aliases domain, maildomain,
    primaryMailDomain; the Set-SC365Connectors alias runs New-SC365Connectors."""
    tenant = tenant_for("legacy-inline", P1)
    clear_legacy(tenant, "inline")
    made = tenant.invoke("Set-SC365Connectors", maildomain="contoso.ch", region="ch",
                         routing="inline", force=True)
    assert [m["Identity"] for m in made] == ["[SEPPmail.cloud] Outbound-InLine",
                                             "[SEPPmail.cloud] Inbound-InLine"]


def test_p2_new_setup_has_no_whatif_parameter():
    """§1.4: p2's New-SC365Setup is a plain CmdletBinding (no ShouldProcess)."""
    tenant = tenant_for("legacy-inline", "1.3.0-preview2")
    error = failure(tenant, "New-SC365Setup", SEPPmailCloudDomain=["contoso.ch"],
                    routing="inline", region="ch", WhatIf=True)
    assert error.error_id == "NamedParameterNotFound"
    assert module.supports_should_process(tenant, "New-SC365Setup") is False
    assert module.supports_should_process(tenant, "New-SC365Connectors") is True


def test_exported_function_the_sandbox_does_not_model_says_so():
    """§1.1/§7: New-SC365ExOReport is exported; the sandbox does not write reports."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    error = failure(tenant, "New-SC365ExOReport")
    assert error.error_id == "RunbookSandboxNotModelled"


# --- connectors: §3.1 values -------------------------------------------------------------


def test_p1_inline_connectors_carry_the_cbc_values():
    """§3.1/§3.2 (p1 column): Partner inbound with smtp:*;1 and the tenant-ID
    certificate; Partner outbound to the relay host, not rule-scoped, with
    RecipientDomains * (p1 only); §2.3 comment line with version 1.3.0."""
    tenant = tenant_for("legacy-inline", P1)
    clear_legacy(tenant, "inline")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch", region="ch",
                  routing="inline", force=True)
    inbound = by_name(tenant.invoke("Get-InboundConnector"))["[SEPPmail.cloud] Inbound-InLine"]
    outbound = by_name(tenant.invoke("Get-OutboundConnector"))[
        "[SEPPmail.cloud] Outbound-InLine"]
    assert {k: inbound[k] for k in (
        "ConnectorType", "ConnectorSource", "CloudServicesMailEnabled", "RequireTls",
        "RestrictDomainsToCertificate", "SenderDomains", "TlsSenderCertificateName",
        "EFSkipLastIP", "Enabled")} == {
        "ConnectorType": "Partner", "ConnectorSource": "Default",
        "CloudServicesMailEnabled": False, "RequireTls": True,
        "RestrictDomainsToCertificate": True, "SenderDomains": ["smtp:*;1"],
        "TlsSenderCertificateName": f"{CONTOSO_ID}.ch.seppmail.cloud",
        "EFSkipLastIP": False, "Enabled": True}
    assert {k: outbound[k] for k in (
        "ConnectorType", "SmartHosts", "TlsSettings", "TlsDomain", "UseMXRecord",
        "IsTransportRuleScoped", "RecipientDomains")} == {
        "ConnectorType": "Partner", "SmartHosts": ["contoso-ch.relay.seppmail.cloud"],
        "TlsSettings": "DomainValidation", "TlsDomain": "*.ch.seppmail.cloud",
        "UseMXRecord": False, "IsTransportRuleScoped": False, "RecipientDomains": ["*"]}
    assert inbound["Comment"] == ("Accept E-Mails from SEPPmail.cloud host.\nCreated"
                                  " with SEPPmail365cloud PowerShell Module version"
                                  f" 1.3.0 on {STAMP}")


def test_p1_parallel_connectors_carry_the_cbc_values():
    """§3.1 parallel: OnPremises both ways, RestrictDomainsToIPAddresses false,
    the mail host as smarthost (region not in it), rule-scoped outbound."""
    tenant = tenant_for("legacy-parallel", P1)
    clear_legacy(tenant, "parallel")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", force=True)
    inbound = by_name(tenant.invoke("Get-InboundConnector"))[
        "[SEPPmail.cloud] Inbound-Parallel"]
    outbound = by_name(tenant.invoke("Get-OutboundConnector"))[
        "[SEPPmail.cloud] Outbound-Parallel"]
    assert (inbound["ConnectorType"], inbound["SenderDomains"],
            inbound["RestrictDomainsToIPAddresses"],
            inbound["TlsSenderCertificateName"]) == (
        "OnPremises", ["smtp:*;1"], False, f"{FABRIKAM_ID}.de.seppmail.cloud")
    assert (outbound["ConnectorType"], outbound["SmartHosts"], outbound["TlsDomain"],
            outbound["IsTransportRuleScoped"], outbound["RecipientDomains"]) == (
        "OnPremises", ["fabrikam-com.mail.seppmail.cloud"], "*.de.seppmail.cloud",
        True, [])


def test_2_0_2_inline_connectors_add_efskiplastip_and_rule_scope():
    """§3.1: EFSkipLastIP true from 1.3.1; Outbound-InLine rule-scoped from p2,
    without RecipientDomains; §2.3: comment names 2.0.2."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    clear_legacy(tenant, "inline")
    made = tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                         region="ch", routing="inline", force=True)
    inbound = by_name(tenant.invoke("Get-InboundConnector"))["[SEPPmail.cloud] Inbound-InLine"]
    outbound = by_name(tenant.invoke("Get-OutboundConnector"))[
        "[SEPPmail.cloud] Outbound-InLine"]
    assert inbound["EFSkipLastIP"] is True
    assert inbound["TlsSenderCertificateName"] == f"{CONTOSO_ID}.ch.seppmail.cloud"
    assert (outbound["IsTransportRuleScoped"], outbound["RecipientDomains"]) == (True, [])
    assert outbound["Comment"].endswith(f"Module version 2.0.2 on {STAMP}")
    assert made == [
        {"Identity": "[SEPPmail.cloud] Outbound-InLine", "Enabled": True,
         "WhenCreated": "2026-03-02T09:00:00Z", "Region": "ch"},
        {"Identity": "[SEPPmail.cloud] Inbound-InLine", "Enabled": True,
         "WhenCreated": "2026-03-02T09:00:00Z", "Region": "ch"}]


def test_p1_inbound_output_has_no_region():
    """§1.2 output [I]: p1 selects Region with a string expression, so the
    inbound line's Region is empty; the outbound one reads the TLS domain."""
    tenant = tenant_for("legacy-inline", P1)
    clear_legacy(tenant, "inline")
    made = tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                         region="ch", routing="inline", force=True)
    assert [m["Region"] for m in made] == ["ch", None]


def test_disabled_switch_creates_disabled_connectors():
    """§3.1 notes: Enabled false with -disabled."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    clear_legacy(tenant, "parallel")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", disabled=True, force=True)
    assert not by_name(tenant.invoke("Get-OutboundConnector"))[
        "[SEPPmail.cloud] Outbound-Parallel"]["Enabled"]
    assert not by_name(tenant.invoke("Get-InboundConnector"))[
        "[SEPPmail.cloud] Inbound-Parallel"]["Enabled"]


def test_new_connectors_order_is_arc_then_outbound_then_inbound():
    """§1.2 steps 8-9, 2.0: AllowedSenders (step 3) first, then ARC, outbound,
    inbound; the existing sealer list is kept."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    clear_legacy(tenant, "parallel")
    tenant.state["arc_config"] = exo.arc_config(tenant.state, "partner.example", NOW)
    start = len(tenant.state["changes"])
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", force=True)
    assert changes(tenant, start) == [
        ("Set-HostedContentFilterPolicy", "Default"), ("Set-ArcConfig", "Default"),
        ("New-OutboundConnector", "[SEPPmail.cloud] Outbound-Parallel"),
        ("New-InboundConnector", "[SEPPmail.cloud] Inbound-Parallel")]
    assert tenant.invoke("Get-ArcConfig")[0]["ArcTrustedSealers"] == \
        "partner.example,SEPPmail.cloud"


def test_2_0_adds_support_addresses_to_allowed_senders():
    """§1.2 step 3: the Default content filter policy gets the four addresses."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    clear_legacy(tenant, "parallel")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", force=True)
    policy = tenant.invoke("Get-HostedContentFilterPolicy")[0]
    assert policy["AllowedSenders"] == ["support@seppmail.de", "support@seppmail.com",
                                        "support@seppmail.ch", "servicedesk@seppmail.com"]


def test_2_0_inline_warns_that_all_domains_are_affected():
    """§1.2 step 2 (2.0 only)."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    clear_legacy(tenant, "inline")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch", region="ch",
                  routing="i", force=True)
    assert ("You are about to create a SEPPmail INLINE Setup which will affect ALL"
            " Domains of your Microsoft Tenant.") in tenant.take_warnings()


def test_whatif_still_changes_arc_and_allowed_senders():
    """§1.2 / §11.9: only New and Remove are wrapped in ShouldProcess."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    clear_legacy(tenant, "parallel")
    tenant.state["arc_config"] = None
    start = len(tenant.state["changes"])
    made = tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                         region="de", routing="parallel", force=True, WhatIf=True)
    assert made == []
    assert changes(tenant, start) == [("Set-HostedContentFilterPolicy", "Default"),
                                      ("Set-ArcConfig", "Default")]


def test_whatif_with_force_still_removes_the_existing_connector():
    """§1.2 step 9: the -force removal is outside ShouldProcess (p1)."""
    tenant = tenant_for("legacy-inline", P1)
    start = len(tenant.state["changes"])
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch", region="ch",
                  routing="inline", force=True, WhatIf=True)
    assert ("Remove-OutboundConnector", "[SEPPmail.cloud] Outbound-InLine") in \
        changes(tenant, start)
    assert "[SEPPmail.cloud] Outbound-InLine" not in by_name(
        tenant.invoke("Get-OutboundConnector"))


def test_force_replaces_the_pre_cbc_connectors():
    """§1.2 step 9 and §3.3: -force removes the same-name 1.2.5 connectors and
    makes CBC ones (the hybrid check is skipped with -force)."""
    tenant = tenant_for("legacy-inline", P1)
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch", region="ch",
                  routing="inline", force=True)
    inbound = by_name(tenant.invoke("Get-InboundConnector"))["[SEPPmail.cloud] Inbound-InLine"]
    assert inbound["TlsSenderCertificateName"] == f"{CONTOSO_ID}.ch.seppmail.cloud"
    assert "Inbound from 18226ca4-3ae1-5ed4-84ee-a997e70b4ae4" in by_name(
        tenant.invoke("Get-InboundConnector"))


def test_hybrid_connector_makes_the_module_prompt_which_fails():
    """§1.2 step 6: an `Inbound from *` connector means a Y/N prompt without
    -force; the bridge's non-interactive host refuses it."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    clear_legacy(tenant, "inline")
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                    region="ch", routing="inline")
    assert error.message == ("PowerShell is in NonInteractive mode. Read and Prompt"
                             " functionality is not available.")
    assert any(w.startswith("!!! - Hybrid Configuration detected")
               for w in tenant.take_warnings())


def test_hybrid_check_only_warns_in_a_non_interactive_session():
    """§1.2 step 6: with $InteractiveSession false the module carries on."""
    tenant = tenant_for("legacy-inline", "2.0.2", interactive=False)
    clear_legacy(tenant, "inline")
    made = tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                         region="ch", routing="inline")
    assert len(made) == 2


def test_existing_connector_without_force_already_exists_with_empty_name():
    """§1.2 step 9, §6: non-interactive, no -force: the outbound "already
    exists" error, whose name variable is undefined [I]."""
    tenant = tenant_for("legacy-inline", P1, interactive=False)
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                    region="ch", routing="inline")
    assert (error.message, error.category) == ("Outbound connector  already exists",
                                               "OperationStopped")


def test_existing_connector_with_seppmail_rules_is_refused_up_to_1_3_0():
    """§1.2 rule test (p1): an existing outbound connector while
    `[SEPPmail.Cloud]*` rules exist is a Write-Error, even with -force."""
    tenant = tenant_for("legacy-parallel", P1)
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                    region="de", routing="parallel", force=True)
    assert error.message == ("There are still transport-rules pointing to the outbound"
                             " Connector [SEPPmail.cloud] Outbound-Parallel Use"
                             " Remove-SC365rules -routing <routingmode>")


def test_2_0_inverted_rule_test_refuses_existing_connector_without_rules():
    """§1.2 rule test / §11.2: 2.0 errors when no SEPPmail rule exists, even
    with -force; ARC and AllowedSenders have changed by then."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    start = len(tenant.state["changes"])
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                    region="ch", routing="inline", force=True)
    assert error.error_id == ("Microsoft.PowerShell.Commands.WriteErrorException,"
                              "New-SC365Connectors")
    assert error.message.startswith("There are still transport-rules pointing to the"
                                    " outbound Connector [SEPPmail.cloud] Outbound-InLine."
                                    " \nRules are: . ")
    assert changes(tenant, start) == [("Set-HostedContentFilterPolicy", "Default")]


def test_domain_outside_the_tenant_is_refused_before_changes():
    """§1.2 step 1 / §1.4 Confirm-SC365TenantDefaultDomain."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    start = len(tenant.state["changes"])
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.com",
                    region="ch", routing="inline", force=True)
    assert error.message == ("contoso.com is not member of the connected tenant. Retry"
                             " using only tenant-domains (Use CmdLet: Get-AcceptedDomain)")
    assert error.error_id.endswith(",Confirm-SC365TenantDefaultDomain")
    assert changes(tenant, start) == []


def test_p1_without_region_fails_on_a_null_region_config():
    """§1.2: region optional in p1, but the certificate name needs it."""
    tenant = tenant_for("legacy-inline", P1)
    error = failure(tenant, "New-SC365Connectors", SEPPmailCloudDomain="contoso.ch",
                    routing="inline", force=True)
    assert error.error_id == "InvokeMethodOnNull"


# --- rules --------------------------------------------------------------------------------


def _p1_parallel_ready() -> Tenant:
    tenant = tenant_for("legacy-parallel", P1)
    clear_legacy(tenant, "parallel")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", force=True)
    tenant.take_warnings()
    return tenant


def test_p1_parallel_rules_follow_the_p1_order_and_bottom_priority():
    """§2.2 p1 column (050 p0 … 700 p8) on top of the two customer rules
    (Bottom = number of non-`[SEPPmail` rules = 2); §2.3 contents."""
    tenant = _p1_parallel_ready()
    made = tenant.invoke("New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"])
    names = ["050 on SPF fail - no SEPPmail.Cloud", "060 Add header X-SM-ruleversion",
             "100 Route incoming e-mails to SEPPmail",
             "200 Route outgoing e-mails to SEPPmail",
             "300 Clean outbound SEPPmail header decrypted",
             "400 Clean outbound SEPPmail header encrypted",
             "500 Clean outbound SEPPmail header outgoing",
             "600 Clean outbound SEPPmail header smarthost",
             "700 Clean outbound header X-sepp-smarthost"]
    assert made == [{"Identity": f"[SEPPmail.cloud] - {n}", "Priority": 2 + i,
                     "State": "Enabled"} for i, n in enumerate(names)]
    rules = by_name(tenant.invoke("Get-TransportRule"))
    assert [r["Name"] for r in sorted(rules.values(), key=lambda r: r["Priority"])][:2] \
        == ["Fabrikam external disclaimer", "Tag external senders"]
    inbound = rules["[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail"]
    assert (inbound["RecipientDomainIs"], inbound["RouteMessageOutboundConnector"],
            inbound["ExceptIfSCLOver"], inbound["SetAuditSeverity"]) == (
        ["fabrikam.com"], "[SEPPmail.cloud] Outbound-Parallel", 5, "DoNotAudit")
    assert rules["[SEPPmail.cloud] - 060 Add header X-SM-ruleversion"][
        "SetHeaderValue"] == "1.3.0"
    reversed_700 = rules["[SEPPmail.cloud] - 700 Clean outbound header X-sepp-smarthost"]
    assert (reversed_700["FromScope"], reversed_700["SentToScope"]) == (
        "NotInOrganization", "InOrganization")


def test_top_placement_puts_the_rules_first():
    """§1.3 PlacementPriority Top: base 0."""
    tenant = _p1_parallel_ready()
    made = tenant.invoke("New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                         PlacementPriority="Top")
    assert [m["Priority"] for m in made] == list(range(9))


def test_2_0_2_parallel_rules_use_the_running_index_and_miss_domains_on_110_120():
    """§2.2 2.0.2 column (060 p0 … 700 p9, priorities by file order) and §2.3:
    rules 110 BGP and 120 get no RecipientDomainIs (the fault); rule 100 gets
    the CryptoContentOnly content-type condition; Audit Low."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    clear_legacy(tenant, "parallel")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", force=True)
    tenant.invoke("New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                  routing="parallel")
    rules = sorted(tenant.invoke("Get-TransportRule"), key=lambda r: r["Priority"])
    assert [(r["Priority"], r["Name"].removeprefix("[SEPPmail.cloud] - ")[:3])
            for r in rules[2:]] == [
        (2, "060"), (3, "100"), (4, "110"), (5, "120"), (6, "200"), (7, "300"),
        (8, "400"), (9, "500"), (10, "600"), (11, "700")]
    named = by_name(rules)
    rule_110 = named["[SEPPmail.cloud] - 110 Route incoming BGP e-mails to SEPPmail"]
    rule_120 = named["[SEPPmail.cloud] - 120 Route incoming tagged e-mails to SEPPmail"]
    rule_100 = named["[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail"]
    assert rule_110["RecipientDomainIs"] is None and rule_120["RecipientDomainIs"] is None
    assert rule_110["SubjectOrBodyContainsWords"] is None
    assert rule_120["SubjectContainsWords"] == ["[signed OK]", "[secure]",
                                                "[secured by HIN]", "[signed invalid]",
                                                "[not secured by HIN]"]
    assert rule_100["RecipientDomainIs"] == ["fabrikam.com"]
    assert (rule_100["HeaderContainsMessageHeader"], len(rule_100["HeaderContainsWords"]),
            rule_100["StopRuleProcessing"], rule_100["SenderAddressLocation"],
            rule_100["SetAuditSeverity"]) == ("content-type", 9, True,
                                              "HeaderOrEnvelope", "Low")
    assert named["[SEPPmail.cloud] - 060 Add header X-SM-ruleversion"][
        "SetHeaderValue"] == "2.0.2"


def test_2_0_2_inline_rules_are_060_and_200_without_onmicrosoft_domains():
    """§2.2 inline (060 i0, 200 i1), §2.3 inline 200 routes via Outbound-Inline
    with SenderDomainIs; §1.3 `*.onmicrosoft.com` dropped from 1.3.0."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    clear_legacy(tenant, "inline")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="contoso.ch", region="ch",
                  routing="inline", force=True)
    made = tenant.invoke("New-SC365Rules", routing="inline", SEPPmailCloudDomain=[
        "contoso.ch", "contoso-group.ch", "contoso.onmicrosoft.com"])
    assert [(m["Name"], m["Priority"]) for m in made] == [
        ("[SEPPmail.cloud] - 060 Add header X-SM-ruleversion", 2),
        ("[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail", 3)]
    outgoing = made[1]
    assert (outgoing["SenderDomainIs"], outgoing["RouteMessageOutboundConnector"],
            outgoing["ExceptIfSCLOver"], outgoing["FromScope"]) == (
        ["contoso.ch", "contoso-group.ch"], "[SEPPmail.cloud] Outbound-InLine", 9,
        "InOrganization")


def test_rules_need_an_enabled_seppmail_outbound_connector():
    """§1.3 guard: a -disabled outbound connector blocks rule creation."""
    tenant = tenant_for("legacy-parallel", "1.3.0")
    clear_legacy(tenant, "parallel")
    tenant.invoke("New-SC365Connectors", SEPPmailCloudDomain="fabrikam.com",
                  region="de", routing="parallel", disabled=True, force=True)
    error = failure(tenant, "New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                    routing="parallel")
    assert (error.message, error.category) == (
        "SEPPmail.cloud outbound-connector is disabled, cannot create rules. Create"
        " connectors without -Disable switch, or enable them in the admin portal.",
        "OperationStopped")


def test_rules_without_any_seppmail_outbound_connector_are_refused():
    """§1.3 guard, 1.3.0 wording ("InBoundOnly Mode ?")."""
    tenant = tenant_for("legacy-parallel", "1.3.0")
    clear_legacy(tenant, "parallel")
    error = failure(tenant, "New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                    routing="parallel")
    assert error.message == ("No SEPPmail.cloud outbound connector found. InBoundOnly"
                             " Mode ? Run \"New-SC365Connectors\" to add the proper"
                             " SEPPmail.cloud connectors")


def test_2_0_whatif_skips_the_outbound_guard():
    """§1.3: in 2.0 the guard sits inside ShouldProcess."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    clear_legacy(tenant, "parallel")
    assert tenant.invoke("New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                         routing="parallel", WhatIf=True) == []


def test_existing_seppmail_rules_stop_a_non_interactive_session():
    """§1.3: existing `\\[SEPPmail*` rules; non-interactive: a throw, wrapped
    by the function's catch as "Error: …"."""
    tenant = tenant_for("legacy-parallel", "1.3.0", interactive=False)
    error = failure(tenant, "New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                    routing="parallel")
    assert error.message == "Error: SEPPmail* transport rules already exist"


def test_existing_seppmail_rules_prompt_in_an_interactive_session():
    """§1.3: interactive sessions list the rules and ask, which fails here."""
    tenant = tenant_for("legacy-parallel", "1.3.0")
    error = failure(tenant, "New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"],
                    routing="parallel")
    assert error.message.startswith("Error: PowerShell is in NonInteractive mode.")
    assert "Found existing [SEPPmail* transport rules." in tenant.take_warnings()


def test_p1_two_rule_domains_fail_the_joined_contains_test():
    """§1.3 [I]: p1 compares the whole domain array as one string."""
    tenant = tenant_for("legacy-inline", P1)
    error = failure(tenant, "New-SC365Rules",
                    SEPPmailCloudDomain=["contoso.ch", "contoso-group.ch"])
    assert error.message == ("contoso.ch contoso-group.ch is not member of the"
                             " connected tenant. Retry using only tenant-domains")


def test_1_2_5_rules_use_exclusion_lists():
    """§2.3 last bullet: 1.2.5 excludes the accepted domains that are not
    SEPPmail domains; §2.2 1.2.5 column (050, 100 … 600)."""
    tenant = tenant_for("legacy-parallel", "1.2.5")
    tenant.invoke("Remove-SC365Rules", routing="parallel", Confirm=False)
    made = tenant.invoke("New-SC365Rules", SEPPmailCloudDomain=["fabrikam.com"])
    assert [m["Priority"] for m in made] == list(range(2, 9))
    rule = by_name(tenant.invoke("Get-TransportRule"))[
        "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail"]
    assert (rule["ExceptIfRecipientDomainIs"], rule["RecipientDomainIs"]) == (
        ["fabrikam.onmicrosoft.com"], None)


# --- removal -----------------------------------------------------------------------------


def test_remove_connectors_reaches_only_the_modes_current_names():
    """§1.4/§5.1: exact names for the mode; other-mode and foreign ones stay."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    tenant.invoke("Remove-SC365Connectors", routing="parallel", Confirm=False)
    assert tenant.take_warnings() == ["No SEPPmail Outbound Connector found",
                                      "No SEPPmail.Cloud Inbound Connector found"]
    tenant.invoke("Remove-SC365Connectors", routing="inline", Confirm=False)
    assert sorted(by_name(tenant.invoke("Get-InboundConnector"))) == [
        "Inbound from 18226ca4-3ae1-5ed4-84ee-a997e70b4ae4"]
    assert sorted(by_name(tenant.invoke("Get-OutboundConnector"))) == [
        "Partner TLS - Northwind Traders"]


def test_remove_connectors_leave_slash_named_legacy_connectors():
    """§5.1 gaps: nothing removes legacy names; the slash-named 0.9.x
    connectors survive Remove-SC365Connectors and Remove-SC365Rules."""
    tenant = tenant_for("legacy-slash", "2.0.2")
    before_in = sorted(by_name(tenant.invoke("Get-InboundConnector")))
    before_out = sorted(by_name(tenant.invoke("Get-OutboundConnector")))
    tenant.invoke("Remove-SC365Rules", Confirm=False)
    tenant.invoke("Remove-SC365Connectors", routing="parallel", Confirm=False)
    assert sorted(by_name(tenant.invoke("Get-InboundConnector"))) == before_in
    assert sorted(by_name(tenant.invoke("Get-OutboundConnector"))) == before_out


def test_remove_connectors_rewrites_the_allow_list_when_option_is_absent():
    """§1.4: without -option the HCFP IPAllowList is written back whenever it
    is not empty (nothing to take out of it here)."""
    tenant = tenant_for("legacy-inline", P1)
    tenant.state["hosted_connection_filter_policy"]["IPAllowList"] = ["203.0.113.0/24"]
    start = len(tenant.state["changes"])
    tenant.invoke("Remove-SC365Connectors", routing="inline", Confirm=False)
    assert changes(tenant, start)[-1] == ("Set-HostedConnectionFilterPolicy", "Default")
    other = tenant_for("legacy-inline", P1)
    other.state["hosted_connection_filter_policy"]["IPAllowList"] = ["203.0.113.0/24"]
    start = len(other.state["changes"])
    other.invoke("Remove-SC365Connectors", routing="inline",
                 option="AntiSpamAllowListing", Confirm=False)
    assert ("Set-HostedConnectionFilterPolicy", "Default") not in changes(other, start)


def test_remove_connectors_refuses_while_rules_route_through_them():
    """§5.1 / exchange-objects.md §9: remove rules first; Exchange refuses."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    error = failure(tenant, "Remove-SC365Connectors", routing="parallel",
                    Confirm=False)
    assert error.error_id == "ConnectorIncorrectUsageConnectorStillReferencedException"


def test_p1_remove_rules_by_json_names_keeps_other_rules():
    """§1.4: up to 1.3.0 the mode's JSON names only; p1 warns per missing rule."""
    tenant = tenant_for("legacy-parallel", P1)
    tenant.invoke("Remove-SC365Rules", Confirm=False)
    assert sorted(by_name(tenant.invoke("Get-TransportRule"))) == [
        "Fabrikam external disclaimer", "Tag external senders"]
    assert tenant.take_warnings() == [
        "Rule [SEPPmail.cloud] - 060 Add header X-SM-ruleversion does not exist",
        "Rule [SEPPmail.cloud] - 700 Clean outbound header X-sepp-smarthost does not"
        " exist"]


def test_2_0_remove_rules_takes_seppmail_cloud_names_only():
    """§5.1: 2.0 removes `[SEPPmail.cloud]*`; appliance `[SEPPmail]` rules stay."""
    tenant = tenant_for("appliance-leftovers", "2.0.2")
    before = sorted(by_name(tenant.invoke("Get-TransportRule")))
    tenant.invoke("Remove-SC365Rules", Confirm=False)
    after = sorted(by_name(tenant.invoke("Get-TransportRule")))
    assert after == [n for n in before if not n.startswith("[SEPPmail.cloud]")]
    assert any(n.startswith("[SEPPmail] ") for n in after)


def test_2_0_remove_rules_asks_per_rule_without_confirm_false():
    """§1.4: ConfirmImpact High from 1.3.5, so it prompts per rule [I]."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    error = failure(tenant, "Remove-SC365Rules")
    assert error.message.startswith("PowerShell is in NonInteractive mode.")


# --- Get cmdlets --------------------------------------------------------------------------


def test_get_connectors_1_2_5_selects_name_enabled_created_region():
    """§1.4: by exact name, outbound first, Region = 2nd dot label."""
    tenant = tenant_for("legacy-inline", "1.2.5")
    found = tenant.invoke("Get-SC365Connectors", routing="inline")
    assert [(f["Name"], f["Region"], sorted(f)) for f in found] == [
        ("[SEPPmail.cloud] Outbound-InLine", "ch",
         ["Enabled", "Name", "Region", "WhenCreated"]),
        ("[SEPPmail.cloud] Inbound-InLine", "ch",
         ["Enabled", "Name", "Region", "WhenCreated"])]


def test_get_connectors_2_0_adds_module_version_to_full_objects():
    """§1.4: 2.0 returns the connector with SC365ModuleVersion and Region."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    found = tenant.invoke("Get-SC365Connectors", routing="inline")
    assert [(f["Name"], f["SC365ModuleVersion"], f["Region"]) for f in found] == [
        ("[SEPPmail.cloud] Inbound-InLine", "1.2.5", "ch"),
        ("[SEPPmail.cloud] Outbound-InLine", "1.2.5", "ch")]
    assert found[0]["TlsSenderCertificateName"] == "*.ch.seppmail.cloud"


def test_get_rules_2_0_finds_seppmail_rules_and_misreads_rule_200_domains():
    """§1.4: 2.0 uses `-Identity '[SEPPmail*'`; IncludedDomains of 200 is empty."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    found = by_name(tenant.invoke("Get-SC365Rules"))
    assert len(found) == 7
    rule_200 = found["[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail"]
    assert (rule_200["IncludedDomains"], rule_200["SC365ModuleVersion"]) == (None,
                                                                           "1.2.5")


def test_get_setup_writes_to_the_host_and_returns_nothing():
    """§1.4 Get-SC365Setup: DeploymentInfo + the Get cmdlets, shown with
    Out-Host -Paging, so the pipeline gets nothing."""
    tenant = tenant_for("legacy-parallel", "1.3.0")
    assert tenant.invoke("Get-SC365Setup") == []


# --- small functions ---------------------------------------------------------------------


def test_confirm_default_domain_true_false_or_error():
    """§1.4 Confirm-SC365TenantDefaultDomain."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    tenant.invoke("Test-SC365ConnectionStatus")  # fills $tenantAcceptedDomains
    assert tenant.invoke("Confirm-SC365TenantDefaultDomain",
                         ValidationDomain="contoso.ch") == [True]
    assert tenant.invoke("Confirm-SC365TenantDefaultDomain",
                         ValidationDomain="contoso-group.ch") == [False]
    error = failure(tenant, "Confirm-SC365TenantDefaultDomain",
                    ValidationDomain="fabrikam.com")
    assert error.message.startswith("fabrikam.com is not member of the connected tenant")


def test_confirm_after_an_import_without_connection_knows_no_domain():
    """§6: 1.3.0+ Confirm reads the cache that only the connection test fills."""
    tenant = tenant_for("legacy-inline", "2.0.2", connect=False)
    tenant.invoke("Connect-ExchangeOnline", Organization="contoso.onmicrosoft.com",
                  Device=True)
    error = failure(tenant, "Confirm-SC365TenantDefaultDomain",
                    ValidationDomain="contoso.ch")
    assert error.message.startswith("contoso.ch is not member of the connected tenant")


def test_tenant_id_comes_from_the_domain_without_a_session():
    """§3.2: the OpenID discovery document answers; no EXO session is used."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    tenant.invoke("Disconnect-ExchangeOnline")
    assert tenant.invoke("Get-SC365TenantId", SEPPmailCloudDomain="contoso-group.ch") \
        == [CONTOSO_ID]
    error = failure(tenant, "Get-SC365TenantId", maildomain="nowhere.example")
    assert "AADSTS90002" in error.message


def test_connection_status_true_then_false_when_the_token_expired():
    """§6 Test-SC365ConnectionStatus: the last connection; expired → warning."""
    clock = Clock(NOW)
    tenant = tenant_for("legacy-inline", "2.0.2", clock=clock)
    assert tenant.invoke("Test-SC365ConnectionStatus", showDefaultDomain=True) == [
        "contoso.ch", True]
    clock.moment = NOW + timedelta(hours=2)
    assert tenant.invoke("Test-SC365ConnectionStatus") == [False]
    assert tenant.take_warnings() == ["You're not actively connected to your Exchange"
                                      " Online organization. TOKEN is EXPIRED"]
    error = failure(tenant, "Get-SC365Rules")
    assert error.message == ("You're not connected to Exchange Online - please connect"
                             " prior to using this CmdLet")


# --- Get-SC365DeploymentInfo ---------------------------------------------------------------


def test_deployment_info_detects_inline_ch_with_cbc():
    """§4 detection: gate and relay resolve → inline, not inbound-only; region
    from the Gate list; MX = gate host; CBC TXT at sha1(tenant id) (§3.2)."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    info = tenant.invoke("Get-SC365DeploymentInfo")[0]
    assert {k: info[k] for k in (
        "DeploymentStatus", "SEPPmailCloudDomain", "Region", "Routing", "InboundOnly",
        "CBCDeployed", "CBCConnectorHost", "CBCDnsEntry", "InlineMXMatch", "MailHost",
        "GateHost", "RelayHost", "DnsWildCardActive")} == {
        "DeploymentStatus": True, "SEPPmailCloudDomain": "contoso.ch", "Region": "ch",
        "Routing": "inline", "InboundOnly": False, "CBCDeployed": True,
        "CBCConnectorHost": f"{CONTOSO_ID}.ch.seppmail.cloud",
        "CBCDnsEntry": "33693731359576bd27e77e44462a234d54eaffba.cbc.seppmail.cloud",
        "InlineMXMatch": True, "MailHost": None,
        "GateHost": "contoso-ch.gate.seppmail.cloud",
        "RelayHost": "contoso-ch.relay.seppmail.cloud", "DnsWildCardActive": False}
    assert info["spfTXT"].startswith("v=spf1")


def test_deployment_info_detects_parallel_de_and_1_3_0_spelling():
    """§4: mail host resolves → parallel, region from the Mail list; 1.3.0
    names its properties DeployMentStatus, region, routing, InBoundOnly."""
    tenant = tenant_for("legacy-parallel", "1.3.0")
    info = tenant.invoke("Get-SC365DeploymentInfo")[0]
    assert {k: info[k] for k in ("DeployMentStatus", "region", "routing",
                                 "InBoundOnly", "MailHost", "InlineMXMatch")} == {
        "DeployMentStatus": True, "region": "de", "routing": "parallel",
        "InBoundOnly": None, "MailHost": "fabrikam-com.mail.seppmail.cloud",
        "InlineMXMatch": None}


def test_deployment_info_inline_mx_elsewhere_is_not_deployed():
    """§4 step 3: inline with the MX not at the gate host."""
    tenant = tenant_for("wrong-mx", "2.0.2")
    info = tenant.invoke("Get-SC365DeploymentInfo")[0]
    assert (info["InlineMXMatch"], info["DeploymentStatus"]) == (False, False)


def test_deployment_info_without_cbc_record_warns():
    """§3.2 CBC readiness: no TXT record → CBCDeployed false and a warning."""
    tenant = tenant_for("not-prepared", "2.0.2")
    info = tenant.invoke("Get-SC365DeploymentInfo")[0]
    assert (info["CBCDeployed"], info["CBCDnsEntry"]) == (False, None)
    assert any(w.startswith("Could not find TXT Entry for TenantID")
               for w in tenant.take_warnings())


# --- setup cmdlets -----------------------------------------------------------------------


def test_new_setup_force_rebuilds_a_parallel_tenant():
    """§1.4 New-SC365Setup -force: Remove-SC365Setup first (rules, then
    connectors), then connectors and rules from DeploymentInfo."""
    tenant = tenant_for("legacy-parallel", "2.0.2", interactive=False)
    tenant.invoke("New-SC365Setup", force=True, Confirm=False)
    rules = [r["Name"] for r in tenant.invoke("Get-TransportRule")
             if r["Name"].startswith("[SEPPmail.cloud]")]
    assert len(rules) == 10
    inbound = by_name(tenant.invoke("Get-InboundConnector"))[
        "[SEPPmail.cloud] Inbound-Parallel"]
    assert inbound["TlsSenderCertificateName"] == f"{FABRIKAM_ID}.de.seppmail.cloud"
    commands = [c for c, _ in changes(tenant)]
    assert commands.index("Remove-TransportRule") < commands.index(
        "Remove-OutboundConnector") < commands.index("New-OutboundConnector")


def test_new_setup_stops_when_region_does_not_fit_deployment():
    """§1.4 2.0: region mismatch with DeploymentInfo stops before changes."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    start = len(tenant.state["changes"])
    error = failure(tenant, "New-SC365Setup", SEPPmailCloudDomain=["fabrikam.com"],
                    routing="parallel", region="ch", Confirm=False)
    assert error.message == ('Region "ch" does not fit to deployment info, just'
                             ' detected region "de" STOPPING because deployment will'
                             " FAIL")
    assert changes(tenant, start) == []


def test_remove_setup_uses_deployment_info_routing():
    """§1.4 Remove-SC365Setup: DeploymentInfo routing wins; rules, then
    connectors; the customer's rules and connectors stay."""
    tenant = tenant_for("legacy-parallel", "1.3.0")
    tenant.invoke("Remove-SC365Setup", routing="inline", Confirm=False)
    assert sorted(by_name(tenant.invoke("Get-TransportRule"))) == [
        "Fabrikam external disclaimer", "Tag external senders"]
    assert "[SEPPmail.cloud] Outbound-Parallel" not in by_name(
        tenant.invoke("Get-OutboundConnector"))


# --- import-time side effects (§6) ----------------------------------------------------------


def test_2_0_2_import_creates_and_removes_the_ex505293_test_connector():
    """§6 / §2.1: 1.3.1+ makes a disabled OnPremises test connector and
    removes it; both show in the change log; nothing stays."""
    tenant = tenant_for("legacy-inline", None)
    gallery.install(tenant, "seppmail365cloud", required_version="2.0.2", force=True)
    start = len(tenant.state["changes"])
    tenant.invoke("Import-Module", Name="seppmail365cloud")
    assert changes(tenant, start) == [
        ("New-InboundConnector", "[SEPPmail.cloud] TempConnector EX505293"),
        ("Remove-InboundConnector", "[SEPPmail.cloud] TempConnector EX505293")]
    created = tenant.state["changes"][start]["after"]
    assert (created["ConnectorType"], created["Enabled"]) == ("OnPremises", False)
    assert tenant.imported_module == "2.0.2"


def test_import_without_connection_only_warns():
    """§6: not connected → a warning, no test connector."""
    tenant = tenant_for("legacy-inline", None, connect=False)
    gallery.install(tenant, "seppmail365cloud", required_version="2.0.2", force=True)
    start = len(tenant.state["changes"])
    tenant.invoke("Import-Module", Name="seppmail365cloud")
    assert changes(tenant, start) == []
    assert ('You are not connected to Exchange Online. Use "Connect-ExchangeOnline" to'
            ' connect to your tenant') in tenant.take_warnings()


def test_p1_import_hydrates_a_dehydrated_organisation():
    """§6 p1/p2: a dehydrated org gets Enable-OrganizationCustomization."""
    tenant = tenant_for("legacy-inline", None, dehydrated=True)
    gallery.install(tenant, "seppmail365cloud", required_version=P1,
                    allow_prerelease=True, force=True)
    start = len(tenant.state["changes"])
    tenant.invoke("Import-Module", Name="seppmail365cloud", RequiredVersion="1.3.0")
    assert changes(tenant, start) == [("Enable-OrganizationCustomization",
                                       "contoso.onmicrosoft.com")]
    assert tenant.state["organization_config"]["IsDehydrated"] is False


def test_p1_import_before_connecting_writes_an_error_but_loads():
    """§6 p1: the unguarded Get-OrganizationConfig is not there yet."""
    tenant = tenant_for("legacy-inline", None, connect=False)
    gallery.install(tenant, "seppmail365cloud", required_version=P1,
                    allow_prerelease=True, force=True)
    error = failure(tenant, "Import-Module", Name="seppmail365cloud",
                    RequiredVersion="1.3.0")
    assert error.error_id == "CommandNotFoundException"
    assert tenant.imported_module == P1


def test_2_0_2_import_needs_powershell_7_5():
    """§6 2.0.x: PowerShell ≥7.5.0, otherwise the import stops."""
    tenant = tenant_for("legacy-inline", None)
    tenant.state["host"] = {"pwsh": "7.4.6"}
    gallery.install(tenant, "seppmail365cloud", required_version="2.0.2", force=True)
    tenant.invoke("Import-Module", Name="seppmail365cloud")
    assert tenant.imported_module is None
    assert "!!! Wrong PowerShell Version 7.4.6 found !!! PLEASE install PowerShell CORE" \
           " 7.5.0+" in tenant.take_warnings()


def test_2_0_2_import_installs_its_dependencies_and_warns_untrusted_gallery():
    """§6 2.0.2: EXO 3.9.0 (installed), DNSClient-PS 1.1.1 and PSWriteHTML
    1.39.0 installed with -Force; an Untrusted PSGallery warning."""
    tenant = tenant_for("legacy-inline", None)
    gallery.install(tenant, "seppmail365cloud", required_version="2.0.2", force=True)
    tenant.invoke("Import-Module", Name="seppmail365cloud")
    installed = {(m["Name"], m["Version"]) for m in tenant.state["installed_modules"]}
    assert {("DNSClient-PS", "1.1.1"), ("PSWriteHTML", "1.39.0"),
            ("ExchangeOnlineManagement", "3.9.0")} <= installed
    assert "You do not Trust the PowerShellGallery as a module installation source." \
        in tenant.take_warnings()


def test_1_3_0_import_fails_when_dnsclient_cannot_be_installed():
    """§6 1.3.0: DNSClient-PS installed without -Force; an Untrusted gallery
    needs a prompt, so the import ends with the module's own error."""
    tenant = tenant_for("legacy-inline", None)
    gallery.install(tenant, "seppmail365cloud", required_version="1.3.0", force=True)
    error = failure(tenant, "Import-Module", Name="seppmail365cloud")
    assert error.message == ("Could not install requirem Module 'DNSClient'. Please"
                             " install manually from the PowerShell Gallery")
    assert tenant.imported_module is None


def test_import_warns_when_the_gallery_has_a_newer_release():
    """§6: newer Gallery version → warning (manifest version 1.3.0 for p1)."""
    tenant = tenant_for("legacy-inline", None)
    gallery.install(tenant, "seppmail365cloud", required_version=P1,
                    allow_prerelease=True, force=True)
    tenant.invoke("Import-Module", Name="seppmail365cloud")
    assert ("You have version 1.3.0, but there is the new version 2.0.2 of the"
            " SEPPmail365cloud module available on the PowerShell Gallery. Update the"
            " module as soon as possible. More info here"
            " https://www.powershellgallery.com/packages/SEPPMail365cloud") in \
        tenant.take_warnings()


def test_2_0_get_rules_errors_when_no_seppmail_rule_exists():
    """§1.4/§11.3: 2.0 asks `-Identity '[SEPPmail*'` under ErrorAction Stop; the
    simulated Exchange answers a wildcard without match as not found."""
    tenant = tenant_for("legacy-inline", "2.0.2")
    error = failure(tenant, "Get-SC365Rules")
    assert error.error_id == "ManagementObjectNotFoundException"


def _request(tenant: Tenant, command: str, parameters: dict, confirmed: bool) -> dict:
    return server.answer(tenant, {"id": 1, "command": command,
                                  "parameters": parameters, "confirmed": confirmed})


def test_confirmed_requests_get_confirm_false_only_where_the_version_has_it():
    """docs/internals.md: the child adds -Confirm:$false where the cmdlet has
    it; 2.0.2 Remove-SC365Rules (High, §1.4) then runs without asking, and
    p2's New-SC365Setup (no ShouldProcess) is not handed -Confirm."""
    tenant = tenant_for("legacy-parallel", "2.0.2")
    reply = _request(tenant, "Remove-SC365Rules", {}, True)
    assert (reply["ok"], reply["errors"]) == (True, [])
    assert [r["Name"] for r in tenant.invoke("Get-TransportRule")] == [
        "Fabrikam external disclaimer", "Tag external senders"]
    preview = tenant_for("legacy-inline", "1.3.0-preview2")
    reply = _request(preview, "New-SC365Setup", {
        "SEPPmailCloudDomain": ["contoso.ch"], "routing": "inline", "region": "ch"},
        True)
    # It runs, and stops where p2 stops on this tenant: the hybrid prompt.
    assert reply["errors"][0]["message"] == ("Error: PowerShell is in NonInteractive"
                                             " mode. Read and Prompt functionality is"
                                             " not available.")


def test_2_0_2_import_installs_exo_3_9_0_beside_an_older_one():
    """§6 2.0.2: EXO 3.9.0 required; an older install gets 3.9.0 side by side."""
    tenant = tenant_for("legacy-inline", None)
    for entry in tenant.state["installed_modules"]:
        if entry["Name"] == "ExchangeOnlineManagement":
            entry["Version"] = "3.6.0"
    gallery.install(tenant, "seppmail365cloud", required_version="2.0.2", force=True)
    tenant.invoke("Import-Module", Name="seppmail365cloud")
    assert gallery.installed_versions(tenant.state, "ExchangeOnlineManagement") == [
        "3.9.0", "3.6.0"]
