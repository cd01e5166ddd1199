"""The commands a runbook child program may run, and which of them change a tenant.

`bridge.ps1` carries the same two lists; `tests/test_bridge_script.py` keeps
them equal. A command missing here is refused by both children before it runs.
"""

EXCHANGE_READ = (
    "Get-ConnectionInformation",
    "Get-AcceptedDomain",
    "Get-OrganizationConfig",
    "Get-InboundConnector",
    "Get-OutboundConnector",
    "Get-TransportRule",
    "Get-ArcConfig",
    "Get-HostedConnectionFilterPolicy",
    "Get-HostedContentFilterPolicy",
    "Get-MessageTraceV2",
    "Get-MessageTraceDetailV2",
)

EXCHANGE_WRITE = (
    "New-InboundConnector",
    "New-OutboundConnector",
    "New-TransportRule",
    "Set-InboundConnector",
    "Set-OutboundConnector",
    "Set-TransportRule",
    "Remove-InboundConnector",
    "Remove-OutboundConnector",
    "Remove-TransportRule",
    "Enable-TransportRule",
    "Disable-TransportRule",
    "Set-ArcConfig",
    "Set-HostedConnectionFilterPolicy",
    "Set-HostedContentFilterPolicy",
    "Enable-OrganizationCustomization",
)

SESSION = (
    "Connect-ExchangeOnline",
    "Disconnect-ExchangeOnline",
    "Find-Module",
    "Get-InstalledModule",
    "Import-Module",
    "Get-Module",
)

MODULE_MANAGEMENT_WRITE = ("Install-Module",)

SEPPMAIL_READ = (
    "Get-SC365Connectors",
    "Get-SC365Rules",
    "Get-SC365Setup",
    "Get-SC365DeploymentInfo",
    "Get-SC365TenantId",
    "Test-SC365ConnectionStatus",
    "Confirm-SC365TenantDefaultDomain",
    "Get-SC365MessageTrace",
)

SEPPMAIL_WRITE = (
    "New-SC365Connectors",
    "Remove-SC365Connectors",
    "New-SC365Rules",
    "Remove-SC365Rules",
    "New-SC365Setup",
    "Remove-SC365Setup",
)

ALLOWED = frozenset(
    EXCHANGE_READ + EXCHANGE_WRITE + SESSION + MODULE_MANAGEMENT_WRITE
    + SEPPMAIL_READ + SEPPMAIL_WRITE
)
MUTATING = frozenset(EXCHANGE_WRITE + MODULE_MANAGEMENT_WRITE + SEPPMAIL_WRITE)

# Import-Module may load only these two; anything else is refused.
IMPORTABLE_MODULES = frozenset({"ExchangeOnlineManagement", "seppmail365cloud"})
