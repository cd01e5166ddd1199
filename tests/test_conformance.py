"""Protocol 1 conformance, one suite for every child program the runbook talks to.

Hosts: the sandbox tenant (always), and real `pwsh` running bridge.ps1 where
pwsh is on PATH. pwsh cannot reach a tenant in a test, so it runs in the
bridge's test mode: RUNBOOK_BRIDGE_STANDINS names STANDINS below, small
functions shaped like the EXO cmdlets (exchange-objects.md §2, §4, §9), and the
bridge's own logic (allow-list, confirmation, splatting, serialisation, error
records) runs for real.
"""

import os
import shutil
import textwrap

import pytest
import tree_sitter
import tree_sitter_powershell

from runbook import params, prereq
from runbook.powershell import (CommandFailed, CommandRefused, ObjectNotFound, Session,
                                pwsh_command, sandbox_command)

PWSH = shutil.which("pwsh")
ORGANIZATION = "contoso.onmicrosoft.com"
# The legacy-inline scenario's tenant (docs/internals.md, sandbox scenarios).
CONTOSO_TENANT_ID = "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
CONNECTOR = "[SEPPmail.cloud] Inbound-InLine"
# Text that would do something if it were ever pasted into PowerShell.
HOSTILE = ("$(Remove-Item -Path victim.txt); `\"' ; & Remove-Item victim.txt ; "
           "@{a=1} $env:PATH ${function:prompt} -Confirm:$false #")

STANDINS = textwrap.dedent(r"""
    # Stand-ins for the EXO cmdlets the conformance suite calls (test mode only).
    $script:StandinOrganization = $null
    $script:StandinConnectors = [System.Collections.Generic.List[object]]::new()
    $script:StandinConnectors.Add([pscustomobject][ordered]@{
        Name           = '[SEPPmail.cloud] Inbound-InLine'
        Identity       = '[SEPPmail.cloud] Inbound-InLine'
        Enabled        = $true
        ConnectorType  = 'Partner'
        SenderDomains  = @('smtp:*.ch.seppmail.cloud;1')
        WhenChangedUTC = [datetime]::SpecifyKind([datetime]'2026-07-23T22:55:13',
            [System.DateTimeKind]::Utc)
    })
    $script:StandinRules = [System.Collections.Generic.List[object]]::new()

    function Connect-ExchangeOnline {
        [CmdletBinding()]
        param([string]$Organization, [string]$AppId, [string]$CertificateFilePath,
            [securestring]$CertificatePassword, [switch]$Device, [switch]$ShowBanner)
        $script:StandinOrganization = $Organization
    }

    function Get-ConnectionInformation {
        [CmdletBinding()]
        param()
        if ($null -eq $script:StandinOrganization) {
            return
        }
        [pscustomobject]@{
            State        = 'Connected'
            Organization = $script:StandinOrganization
            Name         = 'ExchangeOnline_1'
            TenantID     = '2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b'
        }
    }

    function Get-AcceptedDomain {
        [CmdletBinding()]
        param()
        $domains = @('contoso.ch', 'contoso-group.ch', 'contoso.onmicrosoft.com')
        foreach ($domain in $domains) {
            [pscustomobject]@{ Name = $domain; DomainName = $domain }
        }
    }

    function Write-NotFound {
        param([string]$Identity)
        $message = 'Ex6F9304|Microsoft.Exchange.Configuration.Tasks.' +
            "ManagementObjectNotFoundException|The operation couldn't be performed " +
            "because object '$Identity' couldn't be found on " +
            "'STANDIN01DC001.EURPR09A001.PROD.OUTLOOK.COM'."
        Write-Error -Message $message -Category NotSpecified -TargetObject $Identity `
            -ErrorId '[Server=STANDIN01,RequestId=0,TimeStamp=0],Write-ErrorMessage'
    }

    function Get-InboundConnector {
        [CmdletBinding()]
        param([string]$Identity)
        $found = @($script:StandinConnectors |
                Where-Object { -not $Identity -or $_.Name -eq $Identity })
        if ($Identity -and $found.Count -eq 0) {
            Write-NotFound $Identity
            return
        }
        $found
    }

    function Remove-InboundConnector {
        [CmdletBinding(SupportsShouldProcess = $true, ConfirmImpact = 'High')]
        param([string]$Identity)
        if ($PSCmdlet.ShouldProcess($Identity)) {
            [void]$script:StandinConnectors.RemoveAll({
                    param($c) $c.Name -eq $Identity })
        }
    }

    function New-TransportRule {
        [CmdletBinding(SupportsShouldProcess = $true)]
        param([string]$Name, [string]$Comments, [int]$SetSCL)
        $rule = [pscustomobject][ordered]@{
            Name     = $Name
            Identity = $Name
            Priority = $script:StandinRules.Count
            State    = 'Enabled'
            Comments = $Comments
            SetSCL   = $SetSCL
        }
        if ($PSCmdlet.ShouldProcess($Name)) {
            $script:StandinRules.Add($rule)
            $rule
        }
    }

    function Get-TransportRule {
        [CmdletBinding()]
        param([string]$Identity)
        $found = @($script:StandinRules |
                Where-Object { -not $Identity -or $_.Name -eq $Identity })
        if ($Identity -and $found.Count -eq 0) {
            Write-NotFound $Identity
            return
        }
        $found
    }
""")


@pytest.fixture(params=["sandbox", "pwsh"])
def host(request, tmp_path):
    """(argv, env) of one child program, in a fresh working folder."""
    if request.param == "sandbox":
        from runbook.sandbox import scenarios, state
        path = tmp_path / "contoso.state.json"
        state.save(path, scenarios.build("legacy-inline"))
        return sandbox_command(path), None
    if PWSH is None:
        pytest.skip("pwsh is not on PATH; bridge.ps1 is checked by "
                    "tests/test_bridge_script.py instead")
    standins = tmp_path / "standins.ps1"
    standins.write_text(STANDINS, encoding="utf-8")
    return pwsh_command(PWSH), dict(os.environ, RUNBOOK_BRIDGE_STANDINS=str(standins))


@pytest.fixture
def session(host, tmp_path):
    argv, env = host
    with Session(argv, timeout=60, env=env, cwd=tmp_path) as s:
        yield s


@pytest.fixture
def connected(session):
    assert session.invoke("Connect-ExchangeOnline", Organization=ORGANIZATION) == []
    return session


def test_hello_has_the_protocol_1_shape(session):
    hello = session.hello
    assert hello["hello"] == "runbook-bridge" and hello["protocol"] == 1
    assert hello["host"] in ("sandbox", "pwsh")
    versions = hello["versions"]
    assert isinstance(versions["pwsh"], str) and versions["pwsh"][0].isdigit()
    assert versions["edition"] == "Core"
    assert isinstance(versions["ExchangeOnlineManagement"], (str, type(None)))
    assert isinstance(versions["seppmail365cloud"], list)
    assert all(isinstance(v, str) for v in versions["seppmail365cloud"])


def test_ids_are_echoed(connected):
    # The client raises on any other id; the values it returns are the sent ones.
    assert [connected.call("Get-AcceptedDomain").id for _ in range(3)] == [2, 3, 4]


def test_command_not_on_the_allow_list_is_refused_and_does_not_run(session, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    with pytest.raises(CommandRefused) as caught:
        session.call("Remove-Item", {"Path": str(victim)}, confirmed=True)
    (record,) = caught.value.errors
    assert record["error_id"] == "RunbookCommandNotAllowed"
    assert record["category"] == "PermissionDenied"
    assert victim.read_text() == "still here"


def test_import_of_another_module_is_refused(session):
    with pytest.raises(CommandRefused) as caught:
        session.call("Import-Module", {"Name": "PSReadLine"})
    assert caught.value.error_id == "RunbookCommandNotAllowed"


def test_mutating_command_without_confirmation_is_refused(connected):
    with pytest.raises(CommandRefused) as caught:
        connected.call("Remove-InboundConnector", {"Identity": CONNECTOR})
    (record,) = caught.value.errors
    assert record["error_id"] == "RunbookConfirmationRequired"
    assert record["category"] == "PermissionDenied"
    names = [c["Name"] for c in connected.invoke("Get-InboundConnector")]
    assert CONNECTOR in names


def test_confirmed_mutating_command_runs_without_a_prompt(connected):
    connected.call("Remove-InboundConnector", {"Identity": CONNECTOR}, confirmed=True)
    names = [c["Name"] for c in connected.invoke("Get-InboundConnector")]
    assert CONNECTOR not in names


def test_output_is_always_a_list(connected):
    assert connected.invoke("Connect-ExchangeOnline", Organization=ORGANIZATION) == []
    assert len(connected.invoke("Get-ConnectionInformation")) == 1
    (one,) = connected.invoke("Get-InboundConnector", Identity=CONNECTOR)
    assert one["Name"] == CONNECTOR
    # A one-element list stays a list (exchange-objects.md §8).
    assert isinstance(one["SenderDomains"], list) and len(one["SenderDomains"]) == 1
    assert len(connected.invoke("Get-AcceptedDomain")) >= 2


def test_non_ascii_round_trips_unchanged(connected):
    name = "[SEPPmail.cloud] Grüße aus Zürich 東京 🙂"
    comments = "Zürich – 東京 – 🙂 – ñ – \u2028 – \"quoted\" – \\ – \t"
    created = connected.call("New-TransportRule", {"Name": name, "Comments": comments,
                                                   "SetSCL": -1}, confirmed=True)
    assert created.output[0]["Name"] == name
    (rule,) = connected.invoke("Get-TransportRule", Identity=name)
    assert rule["Name"] == name and rule["Comments"] == comments


def test_missing_identity_gives_exchanges_error_record(connected):
    with pytest.raises(ObjectNotFound) as caught:
        connected.call("Get-InboundConnector", {"Identity": "nosuch"})
    (record,) = caught.value.errors
    assert {"message", "category", "error_id", "target"} <= set(record)
    assert record["error_id"] == "ManagementObjectNotFoundException"
    assert record["category"] == "NotSpecified"
    assert record["message"].startswith(
        "Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
        "ManagementObjectNotFoundException|The operation couldn't be performed "
        "because object 'nosuch' couldn't be found on '")
    assert caught.value.identity == "nosuch"


def test_unknown_parameter_is_powershells_binding_error(connected):
    with pytest.raises(CommandFailed) as caught:
        connected.call("Get-InboundConnector", {"NoSuchParameter": 1})
    assert caught.value.error_id == "NamedParameterNotFound"
    assert caught.value.errors[0]["category"] == "InvalidArgument"


def test_powershell_syntax_in_a_value_arrives_literally(connected, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    name = "[SEPPmail.cloud] literal $(Get-Date) `n"
    connected.call("New-TransportRule", {"Name": name, "Comments": HOSTILE,
                                         "SetSCL": -1}, confirmed=True)
    (rule,) = connected.invoke("Get-TransportRule", Identity=name)
    assert rule["Comments"] == HOSTILE and rule["Name"] == name
    assert victim.read_text() == "still here"


def test_certificate_password_in_a_request_is_rejected(session):
    with pytest.raises(CommandFailed) as caught:
        session.call("Connect-ExchangeOnline", {
            "Organization": ORGANIZATION,
            "AppId": "00000000-0000-0000-0000-000000000001",
            "CertificateFilePath": "contoso.pfx", "CertificatePassword": "hunter2"})
    (record,) = caught.value.errors
    assert record["error_id"] == "RunbookSecretInRequest"
    assert record["category"] == "SecurityError"


def test_no_connection_before_connect(session):
    assert session.invoke("Get-ConnectionInformation") == []


def _tenant_verdicts(connection: dict, expected_id: str) -> dict:
    p = params.validate(tenant="contoso", domains=["contoso.ch"], region="ch",
                        routing="inline", tenant_id=expected_id)
    checks = prereq.tenant_checks(p, connection, [], {})
    return {c.item: (c.level, c.message) for c in checks
            if c.item in ("connection", "tenant id")}


def test_connection_information_confirms_the_expected_tenant(connected):
    (connection,) = connected.invoke("Get-ConnectionInformation")
    assert connection["TenantID"] == CONTOSO_TENANT_ID
    assert _tenant_verdicts(connection, CONTOSO_TENANT_ID.upper()) == {
        "connection": ("ok", "Exchange Online connection state: Connected"),
        "tenant id": ("ok", f"connected tenant {CONTOSO_TENANT_ID}"),
    }


def test_connection_to_another_tenant_than_expected_is_an_error(connected):
    (connection,) = connected.invoke("Get-ConnectionInformation")
    other = "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60"
    assert _tenant_verdicts(connection, other)["tenant id"] == (
        "error", f"connected tenant {CONTOSO_TENANT_ID}, expected {other}: connect "
        "to the right tenant")


def test_standins_parse_as_powershell():
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    tree = parser.parse(STANDINS.encode())
    assert not tree.root_node.has_error
