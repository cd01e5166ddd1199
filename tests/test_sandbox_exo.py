"""The sandbox's Exchange Online cmdlets, one modelled behaviour per test.

Section numbers (§N) refer to /work/shared/domain/exchange-objects.md.
"""

from datetime import datetime, timedelta, timezone

import pytest

from runbook.sandbox import exo, scenarios
from runbook.sandbox.registry import CmdletError
from runbook.sandbox.tenant import Tenant

NOW = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
DC = "AM0PR09A01DC001.EURPR09A001.PROD.OUTLOOK.COM"


class Clock:
    def __init__(self, moment=NOW):
        self.moment = moment

    def __call__(self):
        return self.moment


def tenant_of(name="legacy-inline", connect=True, clock=None):
    tenant = Tenant(scenarios.build(name, now=NOW), clock=clock or Clock())
    if connect:
        tenant.invoke("Connect-ExchangeOnline",
                      Organization=tenant.state["tenant"]["initial_domain"])
    return tenant


@pytest.fixture
def inline():
    return tenant_of("legacy-inline")


@pytest.fixture
def parallel():
    return tenant_of("legacy-parallel")


def error_of(tenant, command, **params) -> CmdletError:
    with pytest.raises(CmdletError) as caught:
        tenant.invoke(command, **params)
    return caught.value


def names(objects):
    return [o["Name"] for o in objects]


# --- the session (§7) -------------------------------------------------------------

def test_exchange_cmdlets_are_not_found_before_connect():
    """§7: the EXO cmdlets come with the connection's tmpEXO module."""
    tenant = tenant_of(connect=False)
    err = error_of(tenant, "Get-InboundConnector")
    assert err.error_id == "CommandNotFoundException"
    assert err.category == "ObjectNotFound"
    assert err.message == ("The term 'Get-InboundConnector' is not recognized as a"
                           " name of a cmdlet, function, script file, or executable"
                           " program.")


def test_connect_with_another_tenants_organization_fails():
    """design.md "pwsh side": -Organization must name this tenant."""
    tenant = tenant_of(connect=False)
    err = error_of(tenant, "Connect-ExchangeOnline",
                   Organization="fabrikam.onmicrosoft.com")
    assert err.error_id == "AADSTS90002"
    assert tenant.connection is None


def test_device_login_without_organization_connects():
    """design.md: device login for people; no Organization needed."""
    tenant = tenant_of(connect=False)
    assert tenant.invoke("Connect-ExchangeOnline", Device=True) == []
    assert tenant.connection["UserPrincipalName"] == "admin@contoso.onmicrosoft.com"


def test_connection_information_fields():
    """§7: one object, State Connected, TenantID, token an hour ahead."""
    tenant = tenant_of()
    [info] = tenant.invoke("Get-ConnectionInformation")
    assert info["State"] == "Connected"
    assert info["TenantID"] == "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
    assert info["TokenExpiryTimeUTC"] == "2026-03-02T09:00:00Z"
    assert info["Name"] == "ExchangeOnline_1"
    assert info["ConnectionUri"] == "https://outlook.office365.com"
    assert info["IsEopSession"] is False
    assert "DisplayName" not in info


def test_connection_information_is_empty_when_not_connected():
    """§7: one object per connection, so none without one."""
    assert tenant_of(connect=False).invoke("Get-ConnectionInformation") == []


def test_certificate_login_needs_organization_and_an_existing_file(tmp_path):
    """design.md: app-only login is -AppId -CertificateFilePath -Organization."""
    tenant = tenant_of(connect=False)
    err = error_of(tenant, "Connect-ExchangeOnline", AppId="app",
                   CertificateFilePath=str(tmp_path / "missing.pfx"),
                   Organization="contoso.onmicrosoft.com")
    assert err.error_id == "FileNotFoundException"
    assert error_of(tenant, "Connect-ExchangeOnline", AppId="app",
                    CertificateFilePath="x.pfx").error_id == "OrganizationRequired"
    cert = tmp_path / "app.pfx"
    cert.write_bytes(b"pfx")
    tenant.invoke("Connect-ExchangeOnline", AppId="app", CertificateFilePath=str(cert),
                  Organization="contoso.onmicrosoft.com")
    [info] = tenant.invoke("Get-ConnectionInformation")
    assert info["CertificateAuthentication"] is True
    assert info["AppId"] == "app" and info["UserPrincipalName"] is None


def test_certificate_password_in_a_request_is_refused():
    """docs/internals.md "Session order": the password never travels in a request."""
    err = error_of(tenant_of(connect=False), "Connect-ExchangeOnline",
                   Organization="contoso.onmicrosoft.com", CertificatePassword="x")
    assert err.error_id == "RunbookSecretInRequest"


def test_disconnect_unloads_the_exchange_cmdlets(inline):
    """§7: the cmdlets leave with the connection."""
    inline.invoke("Disconnect-ExchangeOnline", Confirm=False)
    assert error_of(inline, "Get-AcceptedDomain").error_id == "CommandNotFoundException"


# --- parameter binding ----------------------------------------------------------------

def test_unknown_parameter_is_named_parameter_not_found(inline):
    """PowerShell's binder: a wrong name is an error, never ignored."""
    err = error_of(inline, "Get-InboundConnector", Identiti="x")
    assert (err.message, err.error_id, err.category) == (
        "A parameter cannot be found that matches parameter name 'Identiti'.",
        "NamedParameterNotFound", "InvalidArgument")


def test_parameter_names_bind_case_insensitively_and_by_unique_prefix(inline):
    """PowerShell's binder accepts `-identity` and `-Ident` alike."""
    assert names(inline.invoke("Get-InboundConnector",
                               identity="[SEPPmail.cloud] Inbound-InLine")) == [
        "[SEPPmail.cloud] Inbound-InLine"]
    assert names(inline.invoke("Get-InboundConnector",
                               Ident="[SEPPmail.cloud] Inbound-InLine")) == [
        "[SEPPmail.cloud] Inbound-InLine"]


def test_ambiguous_parameter_prefix_is_an_error(inline):
    """`-Sender` could be SenderDomains or SenderIPAddresses."""
    err = error_of(inline, "New-InboundConnector", Name="x", Sender="a.ch")
    assert err.error_id == "AmbiguousParameter"
    assert "-SenderIPAddresses -SenderDomains" in err.message


def test_boolean_parameter_refuses_a_string(inline):
    """[bool] parameters accept Booleans and numbers only."""
    err = error_of(inline, "Set-InboundConnector",
                   Identity="[SEPPmail.cloud] Inbound-InLine", Enabled="false")
    assert err.error_id == "ParameterArgumentTransformationError"


def test_missing_mandatory_parameter(inline):
    """§10: New-InboundConnector requires SenderDomains."""
    err = error_of(inline, "New-InboundConnector", Name="Partner X")
    assert err.error_id == "MissingMandatoryParameter"
    assert err.message.endswith("parameters: SenderDomains.")


def test_enum_parameter_refuses_unknown_value(inline):
    """§10: ConnectorSource inputs are Default, HybridWizard, Migrated (no AdminUI)."""
    err = error_of(inline, "New-InboundConnector", Name="x", SenderDomains="a.ch",
                   ConnectorSource="AdminUI")
    assert err.error_id == "ParameterArgumentTransformationError"
    assert "Default, HybridWizard, Migrated" in err.message


# --- identities (§1, §9) ----------------------------------------------------------

def test_connector_carries_the_exchange_assigned_fields(inline):
    """§1: Identity = Name = Id, Guid = ExchangeObjectId, DN, versions, UTC times."""
    [c] = inline.invoke("Get-InboundConnector",
                        Identity="[SEPPmail.cloud] Inbound-InLine")
    assert c["Identity"] == c["Name"] == c["Id"] == "[SEPPmail.cloud] Inbound-InLine"
    assert c["Guid"] == c["ExchangeObjectId"]
    assert c["DistinguishedName"] == (
        "CN=[SEPPmail.cloud] Inbound-InLine,CN=Transport Settings,CN=Configuration,"
        "CN=contoso.onmicrosoft.com,CN=ConfigurationUnits,"
        "DC=EURPR09A001,DC=PROD,DC=OUTLOOK,DC=COM")
    assert c["ExchangeVersion"] == "0.1 (8.0.535.0)"
    assert c["WhenCreatedUTC"] == "2022-11-21T09:30:00Z"
    assert c["ObjectState"] == "Unchanged" and c["IsValid"] is True
    assert "NameHashGuid" in c and "OrganizationalUnitRootInternal" in c


def test_identity_matches_name_and_guid_case_insensitively(inline):
    """§9 "How identities match": Name, GUID or DN, OrdinalIgnoreCase."""
    [c] = inline.invoke("Get-OutboundConnector",
                        Identity="[seppmail.CLOUD] outbound-inline")
    assert c["Name"] == "[SEPPmail.cloud] Outbound-InLine"
    [by_guid] = inline.invoke("Get-OutboundConnector", Identity=c["Guid"].upper())
    assert by_guid["Name"] == c["Name"]
    [by_dn] = inline.invoke("Get-OutboundConnector", Identity=c["DistinguishedName"])
    assert by_dn["Guid"] == c["Guid"]


def test_missing_identity_is_management_object_not_found(inline):
    """§9 / internals.md: the exact message form, category NotSpecified."""
    err = error_of(inline, "Get-TransportRule", Identity="No such rule")
    assert err.error_id == "ManagementObjectNotFoundException"
    assert err.category == "NotSpecified"
    assert err.message == (
        "Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
        "ManagementObjectNotFoundException|The operation couldn't be performed"
        f" because object 'No such rule' couldn't be found on '{DC}'.")


def test_null_identity_returns_all(inline):
    """§9 "Conflict with the docs": $null Identity returns all objects."""
    assert len(inline.invoke("Get-InboundConnector", Identity=None)) == 2


def test_wildcard_takes_brackets_literally(inline):
    """seppmail365cloud.md §5.1: `[SEPPmail*` matches names starting `[SEPPmail`."""
    assert names(inline.invoke("Get-InboundConnector", Identity="[SEPPmail*")) == [
        "[SEPPmail.cloud] Inbound-InLine"]
    # As a character class `[SEPPmail]*` would match "S…", "P…" – not here.
    err = error_of(inline, "Get-TransportRule", Identity="[SEPPmail]*")
    assert err.error_id == "ManagementObjectNotFoundException"


def test_wildcard_with_brackets_finds_appliance_names_and_nothing_else():
    """seppmail365cloud.md §5.1 / §9: `[SEPPmail]*` is the literal prefix
    `[SEPPmail]`; it finds neither `[SEPPmail.cloud] …` nor names that merely
    start with a letter of the class S, E, P, M, A, I, L."""
    tenant = tenant_of("appliance-leftovers")
    assert sorted(names(tenant.invoke("Get-TransportRule", Identity="[seppmail]*"))) == [
        "[SEPPmail] - Route incoming e-mails to appliance",
        "[SEPPmail] - Route outgoing e-mails to appliance",
        "[SEPPmail] - Skip spam filter for appliance"]
    assert names(tenant.invoke("Get-OutboundConnector", Identity="[SEPPmail]*")) == [
        "[SEPPmail] ExchangeOnline -> Appliance"]
    # A wildcard is a Get-* filter only: Set/Remove take the identity literally.
    err = error_of(tenant, "Remove-TransportRule", Identity="[SEPPmail]*")
    assert err.error_id == "ManagementObjectNotFoundException"


def test_accepted_domains_include_the_initial_domain(inline):
    """§5: `<tenant>.onmicrosoft.com` is InitialDomain; one domain is Default."""
    domains = {d["DomainName"]: d for d in inline.invoke("Get-AcceptedDomain")}
    assert set(domains) == {"contoso.ch", "contoso-group.ch", "contoso.onmicrosoft.com"}
    assert domains["contoso.onmicrosoft.com"]["InitialDomain"] is True
    assert [d for d, o in domains.items() if o["Default"]] == ["contoso.ch"]
    assert domains["contoso.ch"]["ExchangeVersion"] == "0.20 (15.0.0.0)"


# --- connectors: defaults and checks (§2, §3, §9) ---------------------------------

def test_new_inbound_connector_defaults(inline):
    """§2 table: the defaults on New; SenderDomains stored `smtp:<d>;1`."""
    [c] = inline.invoke("New-InboundConnector", Name="Partner A",
                        SenderDomains=["partner-a.ch"])
    assert c["SenderDomains"] == ["smtp:partner-a.ch;1"]
    expected = {"Enabled": True, "ConnectorType": "Partner",
                "ConnectorSource": "Default", "Comment": "", "RequireTls": True,
                "RestrictDomainsToCertificate": False,
                "RestrictDomainsToIPAddresses": False, "EFSkipLastIP": False,
                "TlsSenderCertificateName": None, "SenderIPAddresses": [],
                "EFSkipIPs": [], "CloudServicesMailEnabled": False}
    assert {k: c[k] for k in expected} == expected
    assert c["WhenCreatedUTC"] == "2026-03-02T08:00:00Z"


def test_new_outbound_connector_defaults(inline):
    """§3 table: UseMXRecord true, MTA-STS/DANE Opportunistic, zero link GUID."""
    [c] = inline.invoke("New-OutboundConnector", Name="Partner B",
                        RecipientDomains=["partner-b.ch"])
    expected = {"Enabled": True, "UseMXRecord": True, "ConnectorType": "Partner",
                "IsTransportRuleScoped": False, "MtaStsMode": "Opportunistic",
                "SmtpDaneMode": "Opportunistic", "TlsSettings": None,
                "LinkForModifiedConnector": "00000000-0000-0000-0000-000000000000",
                "SmartHosts": [], "TestMode": False}
    assert {k: c[k] for k in expected} == expected


def test_duplicate_connector_name_already_exists(inline):
    """§9 "Duplicate names": case-insensitive, InvalidOperation."""
    err = error_of(inline, "New-InboundConnector",
                   Name="[seppmail.cloud] inbound-inline", SenderDomains="x.ch")
    assert err.error_id == "ErrorInboundConnectorAlreadyExistsException"
    assert err.category == "InvalidOperation"
    assert "[seppmail.cloud] inbound-inline" in err.message
    assert "already exists" in err.message
    err = error_of(inline, "New-OutboundConnector",
                   Name="[SEPPmail.cloud] Outbound-InLine", RecipientDomains="x.ch")
    assert err.error_id == "ErrorOutboundConnectorAlreadyExistsException"


@pytest.mark.parametrize("name, fragment", [
    ("x" * 65, "maximum length is 64 and the length of the value provided is 65"),
    (" padded", "whitespace"), ("padded ", "whitespace"), ("   ", "empty"),
    ("a / b", "can't contain '/' or '\\'"), ("a \\ b", "can't contain"),
])
def test_connector_name_rules(inline, name, fragment):
    """§9 "Names": ≤ 64 characters, no outer whitespace; no `/` `\\` any more."""
    err = error_of(inline, "New-InboundConnector", Name=name, SenderDomains="a.ch")
    assert fragment in err.message


def test_name_of_64_characters_is_accepted(inline):
    """§9 "Names": 64 is the limit, inclusive."""
    [c] = inline.invoke("New-InboundConnector", Name="n" * 64, SenderDomains="a.ch")
    assert len(c["Name"]) == 64


@pytest.mark.parametrize("address, fragment", [
    ("2001:db8::1", "IPv4 only"), ("86.119.0.0/23", "smallest prefix allowed"),
    ("10.1.2.3", "private or reserved"), ("86.119.9.1-86.119.9.9", "range"),
    ("300.1.1.1", "isn't a valid IP address"),
])
def test_sender_ip_addresses_checks(inline, address, fragment):
    """§9 inbound: IPv4, single or CIDR ≥ /24, no private ranges, no a-b ranges."""
    err = error_of(inline, "New-InboundConnector", Name="IP", SenderDomains="a.ch",
                   SenderIPAddresses=[address])
    assert fragment in err.message


def test_sender_ip_slash_24_is_accepted(inline):
    """§9 inbound: /24 is the largest range allowed."""
    [c] = inline.invoke("New-InboundConnector", Name="IP", SenderDomains="a.ch",
                        SenderIPAddresses=["86.119.9.0/24"])
    assert c["SenderIPAddresses"] == ["86.119.9.0/24"]


def test_overlapping_sender_ips_only_warn(inline):
    """§9 inbound: an overlap with another enabled connector is a warning."""
    inline.invoke("New-InboundConnector", Name="A", SenderDomains="a.ch",
                  SenderIPAddresses=["86.119.9.0/29"])
    inline.take_warnings()
    inline.invoke("New-InboundConnector", Name="B", SenderDomains="b.ch",
                  SenderIPAddresses=["86.119.9.4"])
    [warning] = inline.take_warnings()
    assert "'B'" in warning and "'A'" in warning


def test_tls_sender_certificate_name_cannot_be_a_bare_star(inline):
    """§9 inbound: TlsSenderCertificateName cannot be `*`."""
    err = error_of(inline, "New-InboundConnector", Name="x", SenderDomains="a.ch",
                   TlsSenderCertificateName="*")
    assert "can't be '*'" in err.message


def test_treat_messages_as_internal_needs_on_premises(inline):
    """§9 inbound: TreatMessagesAsInternal needs OnPremises, no cloud services."""
    err = error_of(inline, "New-InboundConnector", Name="x", SenderDomains="a.ch",
                   TreatMessagesAsInternal=True)
    assert "OnPremises" in err.message


def test_on_premises_outbound_cannot_use_mx(inline):
    """§9 outbound: OnPremises with UseMXRecord $true (the default) fails."""
    err = error_of(inline, "New-OutboundConnector", Name="x",
                   ConnectorType="OnPremises", IsTransportRuleScoped=True)
    assert "can't use MX records" in err.message


def test_use_mx_false_needs_smart_hosts_in_the_same_call(inline):
    """§9 outbound: UseMXRecord=$false needs SmartHosts in the same call."""
    err = error_of(inline, "New-OutboundConnector", Name="x", UseMXRecord=False)
    assert "SmartHosts must be specified" in err.message
    inline.invoke("New-OutboundConnector", Name="y", RecipientDomains="y.ch")
    err = error_of(inline, "Set-OutboundConnector", Identity="y", UseMXRecord=False)
    assert "SmartHosts must be specified" in err.message
    inline.invoke("Set-OutboundConnector", Identity="y", UseMXRecord=False,
                  SmartHosts=["relay.y.ch"])
    [c] = inline.invoke("Get-OutboundConnector", Identity="y")
    assert c["SmartHosts"] == ["relay.y.ch"] and c["UseMXRecord"] is False


def test_use_mx_true_clears_smart_hosts(inline):
    """§3: with UseMXRecord true the server clears SmartHosts."""
    inline.invoke("Set-OutboundConnector", Identity="[SEPPmail.cloud] Outbound-InLine",
                  UseMXRecord=True)
    [c] = inline.invoke("Get-OutboundConnector",
                        Identity="[SEPPmail.cloud] Outbound-InLine")
    assert c["SmartHosts"] == []


def test_ip_smart_host_must_be_public_ipv4(inline):
    """§9 outbound: IP smart hosts must be public IPv4."""
    err = error_of(inline, "New-OutboundConnector", Name="x", UseMXRecord=False,
                   SmartHosts=["192.168.1.10"])
    assert "public IPv4" in err.message


def test_tls_domain_cannot_be_a_bare_star(inline):
    """§3: TlsDomain `*` is not allowed."""
    err = error_of(inline, "New-OutboundConnector", Name="x", RecipientDomains="a.ch",
                   TlsDomain="*")
    assert "TlsDomain can't be '*'" in err.message


def test_test_mode_connectors_only_with_include_switch(inline):
    """seppmail365cloud.md §1.3: Get-OutboundConnector -IncludeTestModeConnectors."""
    inline.invoke("New-OutboundConnector", Name="Trial", RecipientDomains="t.ch",
                  TestMode=True)
    assert "Trial" not in names(inline.invoke("Get-OutboundConnector"))
    assert "Trial" in names(inline.invoke("Get-OutboundConnector",
                                          IncludeTestModeConnectors=True))


def test_set_multi_valued_property_with_add_and_remove(inline):
    """§6/§2: multi-valued properties take @{Add=…; Remove=…} on Set."""
    name = "[SEPPmail.cloud] Inbound-InLine"
    inline.invoke("Set-InboundConnector", Identity=name,
                  EFSkipIPs={"Add": ["86.119.9.0/29", "2001:620:5ca1:200b::/64"]})
    inline.invoke("Set-InboundConnector", Identity=name,
                  EFSkipIPs={"Remove": ["86.119.9.0/29"]})
    [c] = inline.invoke("Get-InboundConnector", Identity=name)
    assert c["EFSkipIPs"] == ["2001:620:5ca1:200b::/64"]
    assert c["WhenChangedUTC"] == "2026-03-02T08:00:00Z"
    assert c["WhenCreatedUTC"] == "2022-11-21T09:30:00Z"


def test_rename_moves_identity_and_distinguished_name(inline):
    """§1: Identity follows Name, and so does the DN."""
    inline.invoke("Set-InboundConnector", Identity="[SEPPmail.cloud] Inbound-InLine",
                  Name="[OLD] Inbound-InLine")
    [c] = inline.invoke("Get-InboundConnector", Identity="[OLD] Inbound-InLine")
    assert c["Identity"] == "[OLD] Inbound-InLine"
    assert c["DistinguishedName"].startswith("CN=[OLD] Inbound-InLine,CN=Transport")


def test_slash_named_connectors_cannot_be_changed_or_removed():
    """seppmail365cloud.md §5.1: by name or by GUID, only the portal can."""
    tenant = tenant_of("legacy-slash")
    name = "[SEPPmail.cloud] SEPPmail -> ExO / MX:M365"
    [c] = tenant.invoke("Get-InboundConnector", Identity=name)
    for identity in (name, c["Guid"]):
        err = error_of(tenant, "Remove-InboundConnector", Identity=identity)
        assert err.error_id == "InvalidConnectorNameException"
        err = error_of(tenant, "Set-InboundConnector", Identity=identity,
                       Name="renamed")
        assert err.error_id == "InvalidConnectorNameException"
    assert name in names(tenant.invoke("Get-InboundConnector"))


def test_whatif_changes_nothing(inline):
    """-WhatIf: the cmdlet reports and changes nothing."""
    inline.invoke("Remove-InboundConnector", Identity="[SEPPmail.cloud] Inbound-InLine",
                  WhatIf=True)
    assert len(inline.invoke("Get-InboundConnector")) == 2
    assert inline.state["changes"] == []


def test_every_mutation_is_recorded_with_time(inline):
    """design.md "The sandbox": the change log drives effectiveness."""
    inline.invoke("Remove-InboundConnector", Identity="[SEPPmail.cloud] Inbound-InLine")
    [change] = inline.state["changes"]
    assert change["at"] == "2026-03-02T08:00:00Z"
    assert change["command"] == "Remove-InboundConnector"
    assert change["target"] == "[SEPPmail.cloud] Inbound-InLine"
    assert change["before"]["Name"] == change["target"] and change["after"] is None
    assert inline.dirty is True


# --- transport rules (§4, §9) -----------------------------------------------------

def rule_order(tenant):
    return [(r["Priority"], r["Name"]) for r in tenant.invoke("Get-TransportRule")]


def test_new_rule_without_priority_goes_last(inline):
    """§4: Priority 0…n-1, New appends."""
    [rule] = inline.invoke("New-TransportRule", Name="Last", SetSCL=-1,
                           FromScope="NotInOrganization")
    assert rule["Priority"] == 2
    assert [p for p, _ in rule_order(inline)] == [0, 1, 2]


def test_new_rule_at_priority_shifts_the_others_down(inline):
    """§9 "Priority": insert at the index, rules at or below move by 1."""
    inline.invoke("New-TransportRule", Name="First", Priority=0, SetSCL=-1)
    assert rule_order(inline) == [(0, "First"), (1, "Contoso external disclaimer"),
                                  (2, "Tag external senders")]


def test_priority_above_the_count_is_invalid(inline):
    """§9 "Priority": above the current count raises InvalidPriorityException."""
    err = error_of(inline, "New-TransportRule", Name="Far", Priority=3, SetSCL=-1)
    assert err.error_id == "InvalidPriorityException"
    assert "valid range is 0 to 2" in err.message
    err = error_of(inline, "Set-TransportRule", Identity="Tag external senders",
                   Priority=2)
    assert err.error_id == "InvalidPriorityException"


def test_negative_priority_fails_at_binding(inline):
    """§9 "Priority": below 0 fails at binding."""
    err = error_of(inline, "New-TransportRule", Name="Neg", Priority=-1, SetSCL=-1)
    assert err.error_id == "ParameterArgumentValidationError"


def test_set_priority_moves_the_rule(parallel):
    """§9 "Priority": Set-TransportRule -Priority moves a rule the same way."""
    parallel.invoke("Set-TransportRule", Priority=0,
                    Identity="[SEPPmail.cloud] - 600 Clean outbound SEPPmail header"
                             " smarthost")
    order = rule_order(parallel)
    assert order[0] == (0, "[SEPPmail.cloud] - 600 Clean outbound SEPPmail header"
                           " smarthost")
    assert order[1] == (1, "Fabrikam external disclaimer")
    assert [p for p, _ in order] == list(range(9))


def test_removing_a_rule_closes_the_gap(parallel):
    """§9 "Priority" [I]: Priority is the index, so removal renumbers."""
    parallel.invoke("Remove-TransportRule",
                    Identity="[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud")
    assert [p for p, _ in rule_order(parallel)] == list(range(8))


def test_rule_state_comes_from_enabled(inline):
    """§4: State Enabled/Disabled from -Enabled; no Enabled property."""
    [rule] = inline.invoke("New-TransportRule", Name="Off", Enabled=False, SetSCL=-1)
    assert rule["State"] == "Disabled" and "Enabled" not in rule
    inline.invoke("Enable-TransportRule", Identity="Off")
    [rule] = inline.invoke("Get-TransportRule", Identity="Off")
    assert rule["State"] == "Enabled"
    inline.invoke("Disable-TransportRule", Identity="off", Confirm=False)
    assert inline.invoke("Get-TransportRule", Identity="Off")[0]["State"] == "Disabled"


def test_set_transport_rule_has_no_enabled_parameter(inline):
    """§10: Set has no -Enabled; use Enable-/Disable-TransportRule."""
    err = error_of(inline, "Set-TransportRule", Identity="Tag external senders",
                   Enabled=False)
    assert err.error_id == "NamedParameterNotFound"


def test_duplicate_rule_name_is_rule_name_already_exist(inline):
    """§9 "Duplicate names": RuleNameAlreadyExist, category InvalidArgument."""
    err = error_of(inline, "New-TransportRule", Name="tag EXTERNAL senders", SetSCL=1)
    assert (err.error_id, err.category) == ("RuleNameAlreadyExist", "InvalidArgument")


def test_rule_shape_lists_condition_and_action_classes(inline):
    """§4: Conditions/Actions are .NET class names; Description is generated."""
    [rule] = inline.invoke("New-TransportRule", Name="Header",
                           FromScope="InOrganization", SetHeaderName="X-Test",
                           SetHeaderValue="1")
    ns = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks."
    assert rule["Conditions"] == [ns + "FromScopePredicate"]
    assert rule["Actions"] == [ns + "SetHeaderAction"]
    assert rule["Exceptions"] is None
    assert rule["Description"].startswith("If the message:\r\n\tFrom Scope")
    assert "Take the following actions:\r\n" in rule["Description"]
    assert rule["Mode"] == "Enforce" and rule["RuleErrorAction"] == "Ignore"
    assert rule["SenderAddressLocation"] == "Header"
    assert rule["Identity"] == rule["Name"] and rule["Guid"] == rule["ImmutableId"]
    assert rule["DistinguishedName"].startswith("CN=Header,CN=TransportVersioned,"
                                                "CN=Rules,CN=Transport Settings,")


def test_header_name_needs_header_value(inline):
    """SetHeaderName and SetHeaderValue make one action [I]."""
    err = error_of(inline, "New-TransportRule", Name="Half", SetHeaderName="X-A")
    assert "must be used together" in err.message


def test_past_activation_date_is_stored_as_null(inline):
    """§10: a past ActivationDate is stored as null [X]."""
    [rule] = inline.invoke("New-TransportRule", Name="Dated", SetSCL=-1,
                           ActivationDate="2020-01-01T00:00:00Z",
                           ExpiryDate="2030-01-01T00:00:00Z")
    assert rule["ActivationDate"] is None
    assert rule["ExpiryDate"] == "2030-01-01T00:00:00Z"


def test_route_needs_an_enabled_rule_scoped_connector(inline):
    """§9: RouteMessageOutboundConnector needs existing, enabled, scoped."""
    err = error_of(inline, "New-TransportRule", Name="R1",
                   SentToScope="NotInOrganization",
                   RouteMessageOutboundConnector="[SEPPmail.cloud] Outbound-InLine")
    assert err.error_id == "ArgumentException"
    assert "IsTransportRuleScoped" in err.message
    err = error_of(inline, "New-TransportRule", Name="R2",
                   RouteMessageOutboundConnector="Nowhere")
    assert "couldn't be found" in err.message
    inline.invoke("New-OutboundConnector", Name="Scoped", UseMXRecord=False,
                  SmartHosts=["relay.example.ch"], IsTransportRuleScoped=True,
                  Enabled=False)
    err = error_of(inline, "New-TransportRule", Name="R3",
                   RouteMessageOutboundConnector="Scoped")
    assert "disabled" in err.message


def test_route_stores_the_connectors_name(parallel):
    """§4: RouteMessageOutboundConnector holds the connector's Name."""
    [rule] = parallel.invoke("New-TransportRule", Name="Via",
                             SentToScope="NotInOrganization",
                             RouteMessageOutboundConnector="[seppmail.cloud] "
                                                           "outbound-parallel")
    assert rule["RouteMessageOutboundConnector"] == "[SEPPmail.cloud] Outbound-Parallel"


@pytest.mark.parametrize("params, action", [
    ({}, "removed"), ({"Enabled": False}, "disabled"),
    ({"IsTransportRuleScoped": False}, "taken out of transport-rule scope"),
    ({"Name": "Other"}, "renamed"),
])
def test_connector_a_rule_routes_through_is_still_referenced(parallel, params, action):
    """§9 "Connectors referenced by rules": remove/disable/un-scope/rename fail."""
    identity = "[SEPPmail.cloud] Outbound-Parallel"
    command = "Set-OutboundConnector" if params else "Remove-OutboundConnector"
    err = error_of(parallel, command, Identity=identity, **params)
    assert err.error_id == "ConnectorIncorrectUsageConnectorStillReferencedException"
    assert err.category == "InvalidOperation"
    assert f"can't be {action}" in err.message
    assert "'[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail'" in err.message


def test_connector_is_free_once_its_rules_are_gone(parallel):
    """§9: remove rules before connectors."""
    for rule in ("[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail",
                 "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail"):
        parallel.invoke("Remove-TransportRule", Identity=rule)
    parallel.invoke("Remove-OutboundConnector",
                    Identity="[SEPPmail.cloud] Outbound-Parallel")
    assert "[SEPPmail.cloud] Outbound-Parallel" not in names(
        parallel.invoke("Get-OutboundConnector"))


def test_get_transport_rule_state_filter(parallel):
    """§4 State: Get-TransportRule -State Disabled lists only disabled rules."""
    parallel.invoke("Disable-TransportRule", Identity="Tag external senders")
    assert names(parallel.invoke("Get-TransportRule", State="Disabled")) == [
        "Tag external senders"]


def test_result_size_cuts_and_warns(parallel):
    """Get-* -ResultSize: the first N, with Exchange's warning."""
    assert len(parallel.invoke("Get-TransportRule", ResultSize=3)) == 3
    assert "ResultSize" in parallel.take_warnings()[0]


# --- tenant-wide settings (§6) ----------------------------------------------------

def test_arc_config_has_no_object_when_unconfigured():
    """§6: Get-ArcConfig returned no object on a tenant without ARC."""
    assert tenant_of("clean").invoke("Get-ArcConfig") == []


def test_arc_trusted_sealers_are_one_comma_joined_string():
    """§6: Set -ArcTrustedSealers <String[]>; Get shows one comma-joined string."""
    tenant = tenant_of("clean")
    tenant.invoke("Set-ArcConfig", Identity="Default",
                  ArcTrustedSealers=["SEPPmail.cloud", "other.example"])
    [config] = tenant.invoke("Get-ArcConfig")
    assert config["ArcTrustedSealers"] == "SEPPmail.cloud,other.example"
    tenant.invoke("Set-ArcConfig",
                  Identity="5f7b9d13-4e6a-4c8e-9a2c-3d5f7b9d1e4a\\Default",
                  ArcTrustedSealers=" ")
    assert tenant.invoke("Get-ArcConfig")[0]["ArcTrustedSealers"] == ""


def test_get_arc_config_takes_no_parameters(inline):
    """§6: Get-ArcConfig takes no parameters."""
    assert error_of(inline, "Get-ArcConfig", Identity="Default").error_id == \
        "NamedParameterNotFound"


def test_organization_customization_flips_is_dehydrated_once():
    """§6: IsDehydrated is true until Enable-OrganizationCustomization."""
    tenant = tenant_of("clean")
    assert tenant.invoke("Get-OrganizationConfig")[0]["IsDehydrated"] is True
    tenant.invoke("Enable-OrganizationCustomization")
    assert tenant.invoke("Get-OrganizationConfig")[0]["IsDehydrated"] is False
    err = error_of(tenant, "Enable-OrganizationCustomization")
    assert "already enabled for customization" in err.message


def test_connection_filter_ip_allow_list_edits(inline):
    """§6: IPAllowList IPv4 only (single, /24-/32, ranges ≤ 256), Add/Remove."""
    inline.invoke("Set-HostedConnectionFilterPolicy", Identity="Default",
                  IPAllowList={"Add": ["86.119.9.0/29", "217.20.196.64/27"]})
    inline.invoke("Set-HostedConnectionFilterPolicy", Identity="Default",
                  IPAllowList={"Add": ["1.2.3.1-1.2.3.200"],
                               "Remove": ["86.119.9.0/29"]})
    [policy] = inline.invoke("Get-HostedConnectionFilterPolicy")
    assert policy["IPAllowList"] == ["217.20.196.64/27", "1.2.3.1-1.2.3.200"]
    for bad in ("2001:620:5ca1:200b::/64", "86.119.0.0/23", "1.2.3.0-1.2.4.0"):
        err = error_of(inline, "Set-HostedConnectionFilterPolicy", Identity="Default",
                       IPAllowList={"Add": [bad]})
        assert bad in err.message


def test_content_filter_allowed_senders_and_spf_hard_fail(inline):
    """seppmail365cloud.md §1.2 step 3 / §1.4: AllowedSenders, MarkAsSpamSpf…"""
    inline.invoke("Set-HostedContentFilterPolicy", Identity="Default",
                  AllowedSenders={"Add": ["support@seppmail.ch"]},
                  MarkAsSpamSpfRecordHardFail="on")
    [policy] = inline.invoke("Get-HostedContentFilterPolicy", Identity="Default")
    assert policy["AllowedSenders"] == ["support@seppmail.ch"]
    assert policy["MarkAsSpamSpfRecordHardFail"] == "On"
    err = error_of(inline, "Set-HostedContentFilterPolicy", Identity="Default",
                   AllowedSenders=["not an address"])
    assert "valid SMTP address" in err.message


def test_module_cmdlets_can_require_an_import():
    """The hook for SC365 cmdlets: not found until the module is imported."""
    tenant = tenant_of()
    with pytest.raises(CmdletError) as caught:
        tenant.require_module("Get-SC365Connectors")
    assert caught.value.error_id == "CommandNotFoundException"
    tenant.imported_module = "1.3.0"
    tenant.require_module("Get-SC365Connectors")


def test_clock_override_drives_stamps():
    """Tenant.now() follows the injected clock."""
    clock = Clock()
    tenant = tenant_of(clock=clock)
    clock.moment = NOW + timedelta(minutes=5)
    [c] = tenant.invoke("New-InboundConnector", Name="Later", SenderDomains="a.ch")
    assert c["WhenCreatedUTC"] == "2026-03-02T08:05:00Z"
    assert exo.iso(tenant.now()) == "2026-03-02T08:05:00Z"


def test_a_result_edited_by_an_in_process_caller_leaves_the_tenant_alone(inline):
    # The cmdlets hand out the tenant's own objects (the server serialises them
    # at once); Tenant.invoke copies them for callers inside the sandbox.
    rule = inline.invoke("Get-TransportRule")[0]
    rule["Name"] = "edited"
    rule["Actions"].append("Microsoft.Exchange.MessagingPolicies.Rules.Tasks.DeleteMessageAction")
    again = inline.invoke("Get-TransportRule")[0]
    assert again["Name"] != "edited"
    assert again["Actions"] == [
        "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.ApplyHtmlDisclaimerAction"]
    connector = inline.invoke("Get-InboundConnector")[0]
    connector["TlsSenderCertificateName"] = "evil.example"
    assert inline.invoke("Get-InboundConnector")[0]["TlsSenderCertificateName"] \
        != "evil.example"
