<#
.SYNOPSIS
    The real-tenant side of runbook protocol 1 (docs/internals.md).

.DESCRIPTION
    Started by runbook.powershell.Session as
        pwsh -NoLogo -NoProfile -NonInteractive -File bridge.ps1
    it writes one hello line, then answers each JSON request line on stdin with
    exactly one JSON reply line on stdout, until stdin closes (exit 0).

    Request data is only ever data: parameters are splatted onto a command
    found by name in the allow-list below; nothing from a request becomes
    script text. Output, warnings and error records travel back as data, so
    stdout carries protocol lines and nothing else; whatever else PowerShell
    or a module wants to print goes to stderr.

    Test mode: when RUNBOOK_BRIDGE_STANDINS names a .ps1 file, that file is
    dot-sourced instead of importing ExchangeOnlineManagement, so that the
    conformance tests run this script against stand-in cmdlets.
#>
# Windows PowerShell 5.1 and pwsh 6 lack ConvertTo-Json -EnumsAsStrings and
# ConvertFrom-Json -AsHashtable; this line makes them say so before the hello
# instead of failing halfway (the client shows the reason from stderr).
#Requires -Version 7.0
[CmdletBinding()]
param()

Set-StrictMode -Version 3.0

# --- the host: stop on our own errors, no progress, no colour, no prompts ----

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
$VerbosePreference = 'SilentlyContinue'
$DebugPreference = 'SilentlyContinue'
# 'None': no command asks for confirmation by itself. Module functions read the
# global scope, so set it there too. A prompt that still comes fails at once
# under -NonInteractive instead of hanging the run.
$ConfirmPreference = 'None'
$global:ConfirmPreference = 'None'
$global:ProgressPreference = 'SilentlyContinue'
if ($null -ne (Get-Variable -Name PSStyle -ErrorAction Ignore)) {
    $PSStyle.OutputRendering = 'PlainText'
}

$Utf8 = [System.Text.UTF8Encoding]::new($false)
try {
    [Console]::InputEncoding = $Utf8
    [Console]::OutputEncoding = $Utf8
} catch {
    # Without a console some hosts refuse; requests are ASCII and replies are
    # escaped to ASCII below, so the encodings are a second line of defence.
    [Console]::Error.WriteLine("bridge: encoding not set: $($_.Exception.Message)")
}
$OutputEncoding = $Utf8

# Keep the real stdout for protocol lines and send every other console write to
# stderr. With stdout redirected, the console host writes its text (warnings
# outside a request, Host.UI.WriteLine) through [Console]::Out, and so do modules
# that print with [Console]::WriteLine. Connect-ExchangeOnline -Device shows its
# sign-in code that way, on no PowerShell stream (office-docs-powershell#7635):
# each such line is marked as a notice, which the client shows to the person.
$NoticePrefix = 'runbook-notice: '
$ProtocolOut = [Console]::Out
try {
    $notices = [System.CodeDom.Compiler.IndentedTextWriter]::new([Console]::Error,
        $NoticePrefix)
    $notices.Indent = 1
    # The writer marks the lines after the first line it wrote.
    $notices.WriteLine('bridge: console text follows as notices')
    [Console]::SetOut([System.IO.TextWriter]::Synchronized($notices))
} catch {
    [Console]::SetOut([Console]::Error)
    [Console]::Error.WriteLine("bridge: console text unmarked: $($_.Exception.Message)")
}

# Some modules colour their text with escape sequences; replies and notices are
# plain text.
$AnsiSequence = [regex]::new(
    '\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)')

# PowerShell 7.5 added -DateKind. Before it, ConvertFrom-Json turns every string
# that reads like a date into a DateTime, so a rule comment holding one would
# reach Exchange reformatted; where the parameter exists, strings stay strings.
$JsonReadOptions = @{ AsHashtable = $true }
if ((Get-Command -Name ConvertFrom-Json).Parameters.ContainsKey('DateKind')) {
    $JsonReadOptions['DateKind'] = 'String'
}

# --- what may run: runbook/powershell/commands.py holds the same lists -------

$ExchangeRead = @(
    'Get-ConnectionInformation',
    'Get-AcceptedDomain',
    'Get-OrganizationConfig',
    'Get-InboundConnector',
    'Get-OutboundConnector',
    'Get-TransportRule',
    'Get-ArcConfig',
    'Get-HostedConnectionFilterPolicy',
    'Get-HostedContentFilterPolicy',
    'Get-MessageTraceV2',
    'Get-MessageTraceDetailV2'
)

$ExchangeWrite = @(
    'New-InboundConnector',
    'New-OutboundConnector',
    'New-TransportRule',
    'Set-InboundConnector',
    'Set-OutboundConnector',
    'Set-TransportRule',
    'Remove-InboundConnector',
    'Remove-OutboundConnector',
    'Remove-TransportRule',
    'Enable-TransportRule',
    'Disable-TransportRule',
    'Set-ArcConfig',
    'Set-HostedConnectionFilterPolicy',
    'Set-HostedContentFilterPolicy',
    'Enable-OrganizationCustomization'
)

$SessionCommands = @(
    'Connect-ExchangeOnline',
    'Disconnect-ExchangeOnline',
    'Find-Module',
    'Get-InstalledModule',
    'Import-Module',
    'Get-Module'
)

$ModuleManagementWrite = @(
    'Install-Module'
)

$SeppmailRead = @(
    'Get-SC365Connectors',
    'Get-SC365Rules',
    'Get-SC365Setup',
    'Get-SC365DeploymentInfo',
    'Get-SC365TenantId',
    'Test-SC365ConnectionStatus',
    'Confirm-SC365TenantDefaultDomain',
    'Get-SC365MessageTrace'
)

$SeppmailWrite = @(
    'New-SC365Connectors',
    'Remove-SC365Connectors',
    'New-SC365Rules',
    'Remove-SC365Rules',
    'New-SC365Setup',
    'Remove-SC365Setup'
)

$ImportableModules = @(
    'ExchangeOnlineManagement',
    'seppmail365cloud'
)

function New-NameSet {
    param([string[]]$Names)
    $set = [System.Collections.Generic.HashSet[string]]::new(
        [System.StringComparer]::OrdinalIgnoreCase)
    foreach ($name in $Names) {
        [void]$set.Add($name)
    }
    # The comma keeps the pipeline from unrolling the set into its members.
    return , $set
}

$Allowed = New-NameSet ($ExchangeRead + $ExchangeWrite + $SessionCommands +
    $ModuleManagementWrite + $SeppmailRead + $SeppmailWrite)
$Mutating = New-NameSet ($ExchangeWrite + $ModuleManagementWrite + $SeppmailWrite)
$Importable = New-NameSet $ImportableModules

# Exchange and module commands must already be in the session (connected,
# imported): looking them up never auto-loads a module behind the runbook's
# back. The PowerShellGet commands may load their own module.
$MayAutoload = New-NameSet ($SessionCommands + $ModuleManagementWrite)

# Common parameters the bridge decides about, never a request: prompts,
# streams and variables.
$ReservedParameters = New-NameSet @(
    'Confirm', 'ErrorAction', 'WarningAction', 'InformationAction',
    'ProgressAction', 'ErrorVariable', 'WarningVariable', 'InformationVariable',
    'OutVariable', 'OutBuffer', 'PipelineVariable', 'Debug', 'Verbose'
)

# Secrets never travel in a request; the certificate password comes from the
# environment variable RUNBOOK_CERT_PASSWORD.
$SecretParameters = New-NameSet @(
    'CertificatePassword', 'Credential', 'AccessToken', 'Password'
)

$ImportParameters = New-NameSet @(
    'Name', 'RequiredVersion', 'MinimumVersion', 'MaximumVersion', 'Force',
    'DisableNameChecking'
)

# --- protocol lines --------------------------------------------------------

function Write-ProtocolLine {
    param([string]$Json)
    $ProtocolOut.Write($Json)
    $ProtocolOut.Write("`n")
    $ProtocolOut.Flush()
}

function ConvertTo-ProtocolJson {
    param($Value, [int]$Depth, [System.Collections.Generic.List[string]]$Warnings)
    $truncation = $null
    $json = ConvertTo-Json -InputObject $Value -Depth $Depth -Compress -EnumsAsStrings `
        -EscapeHandling EscapeNonAscii -WarningAction SilentlyContinue `
        -WarningVariable truncation
    if ($truncation -and $null -ne $Warnings) {
        # Objects nested deeper than the contract's depth were cut; say so.
        foreach ($record in $truncation) {
            $Warnings.Add("bridge: $($record.Message)")
        }
        $json = ConvertTo-Json -InputObject $Value -Depth $Depth -Compress `
            -EnumsAsStrings -EscapeHandling EscapeNonAscii `
            -WarningAction SilentlyContinue
    }
    return $json
}

function Remove-Ansi {
    param([string]$Text)
    return $AnsiSequence.Replace($Text, '')
}

function Get-ModuleVersionText {
    param($Module)
    $text = [string]$Module.Version
    $data = $Module.PrivateData
    if ($data -is [System.Collections.IDictionary] -and
        $data['PSData'] -is [System.Collections.IDictionary] -and
        $data['PSData']['Prerelease']) {
        $text = $text + '-' + [string]$data['PSData']['Prerelease']
    }
    return $text
}

function Write-Hello {
    $exo = Get-Module -Name ExchangeOnlineManagement | Select-Object -First 1
    $exoVersion = $null
    if ($null -ne $exo) {
        $exoVersion = Get-ModuleVersionText $exo
    }
    $installed = @(Get-Module -ListAvailable -Name seppmail365cloud |
            Sort-Object -Property Version -Descending |
            ForEach-Object { Get-ModuleVersionText $_ })
    $hello = [ordered]@{
        hello    = 'runbook-bridge'
        protocol = 1
        host     = 'pwsh'
        versions = [ordered]@{
            pwsh                     = [string]$PSVersionTable.PSVersion
            edition                  = [string]$PSVersionTable.PSEdition
            ExchangeOnlineManagement = $exoVersion
            seppmail365cloud         = $installed
        }
    }
    Write-ProtocolLine (ConvertTo-ProtocolJson $hello 4 $null)
}

function Write-Reply {
    param($Id, $Output, $Errors, $Warnings, $Stopwatch)
    $reply = [ordered]@{
        id          = $Id
        ok          = ($Errors.Count -eq 0)
        output      = $Output.ToArray()
        errors      = $Errors.ToArray()
        warnings    = $Warnings.ToArray()
        duration_ms = [math]::Round($Stopwatch.Elapsed.TotalMilliseconds, 1)
    }
    # Depth 9: output records sit one level below the reply, so they keep the
    # eight levels the contract promises.
    $json = ConvertTo-ProtocolJson $reply 9 $Warnings
    if ($Warnings.Count -gt $reply['warnings'].Count) {
        $reply['warnings'] = $Warnings.ToArray()
        $json = ConvertTo-ProtocolJson $reply 9 $null
    }
    Write-ProtocolLine $json
}

# --- records as data -------------------------------------------------------

function New-ErrorData {
    param([string]$Message, [string]$Category, [string]$ErrorId, $Target)
    return [ordered]@{
        message  = $Message
        category = $Category
        error_id = $ErrorId
        target   = $Target
    }
}

function New-NotFoundData {
    param([string]$Name)
    # The record PowerShell writes for a command that is not in the session
    # (EXO not connected, module not imported); the sandbox writes the same.
    $message = "The term '$Name' is not recognized as a name of a cmdlet, " +
        'function, script file, or executable program.'
    return New-ErrorData $message 'ObjectNotFound' 'CommandNotFoundException' $Name
}

function New-Refusal {
    param([string]$ErrorId, [string]$Message, $Target)
    return New-ErrorData $Message 'PermissionDenied' $ErrorId $Target
}

function Get-ErrorId {
    param([System.Management.Automation.ErrorRecord]$Record, [string]$Message)
    # Exchange Online: "Ex6F9304|Microsoft...ManagementObjectNotFoundException|..."
    if ($Message -match '^Ex[0-9A-Fa-f]+\|(?<class>[\w.]+)\|') {
        return ($Matches['class'] -split '\.')[-1]
    }
    $id = [string]$Record.FullyQualifiedErrorId
    # The REST module's ids start "[Server=...,RequestId=...]"; the reason then
    # names the exception.
    if ($id.StartsWith('[') -and $Record.CategoryInfo.Reason) {
        return [string]$Record.CategoryInfo.Reason
    }
    return ($id -split ',')[0]
}

function ConvertTo-ErrorData {
    param([System.Management.Automation.ErrorRecord]$Record)
    $message = [string]$Record.Exception.Message
    if ($null -ne $Record.ErrorDetails -and $Record.ErrorDetails.Message) {
        $message = [string]$Record.ErrorDetails.Message
    }
    $message = Remove-Ansi $message
    $target = $null
    if ($null -ne $Record.TargetObject) {
        $target = [string]$Record.TargetObject
    }
    $data = New-ErrorData $message ([string]$Record.CategoryInfo.Category) `
        (Get-ErrorId $Record $message) $target
    $data['fully_qualified_error_id'] = [string]$Record.FullyQualifiedErrorId
    return $data
}

function ConvertTo-IsoDate {
    param($Value)
    $invariant = [System.Globalization.CultureInfo]::InvariantCulture
    if ($Value -is [datetimeoffset]) {
        return $Value.ToString('o', $invariant)
    }
    # A time without a kind is taken as UTC, as the runbook's records do.
    if ($Value.Kind -eq [System.DateTimeKind]::Unspecified) {
        $Value = [datetime]::SpecifyKind($Value, [System.DateTimeKind]::Utc)
    }
    try {
        return ([datetimeoffset]$Value).ToString('o', $invariant)
    } catch {
        # DateTime.MinValue in a zone east of UTC has no offset form.
        return $Value.ToString('o', $invariant)
    }
}

function ConvertTo-Record {
    param($Item)
    $base = $Item
    if ($Item -is [System.Management.Automation.PSObject]) {
        $base = $Item.PSObject.BaseObject
    }
    if ($base -is [datetime] -or $base -is [datetimeoffset]) {
        return ConvertTo-IsoDate $base
    }
    if ($base -is [string] -or $base -is [System.ValueType]) {
        return $base
    }
    if ($base -is [System.Management.Automation.PSModuleInfo]) {
        # A module links to its commands and each command back to its module:
        # serialised whole, one Get-Module reply runs to megabytes.
        return [ordered]@{
            Name       = $base.Name
            Version    = Get-ModuleVersionText $base
            ModuleBase = $base.ModuleBase
            Path       = $base.Path
        }
    }
    if ($base -is [System.Collections.IEnumerable] -and
        -not ($base -is [System.Collections.IDictionary])) {
        # A list written as one object stays one (nested) list.
        return , $base
    }
    # One level of properties, with dates in ISO 8601 with offset; the rest
    # is ConvertTo-Json's. Values are assigned, never returned, so a
    # one-element list stays a list.
    $record = [ordered]@{}
    if ($base -is [System.Collections.IDictionary]) {
        foreach ($key in $base.Keys) {
            $value = $base[$key]
            if ($value -is [datetime] -or $value -is [datetimeoffset]) {
                $value = ConvertTo-IsoDate $value
            }
            $record[[string]$key] = $value
        }
        return $record
    }
    foreach ($property in $Item.PSObject.Properties) {
        try {
            $value = $property.Value
        } catch {
            $value = $null
        }
        if ($value -is [datetime] -or $value -is [datetimeoffset]) {
            $value = ConvertTo-IsoDate $value
        }
        $record[$property.Name] = $value
    }
    return $record
}

# --- one request -----------------------------------------------------------

function Test-Request {
    param([string]$Name, [System.Collections.IDictionary]$Parameters, [bool]$Confirmed)
    if (-not $Allowed.Contains($Name)) {
        return New-Refusal 'RunbookCommandNotAllowed' `
            "'$Name' is not on the runbook's allow-list; nothing ran" $Name
    }
    if ($Mutating.Contains($Name) -and -not $Confirmed) {
        return New-Refusal 'RunbookConfirmationRequired' `
            "$Name changes the tenant and needs a confirmed request; nothing ran" $Name
    }
    foreach ($key in $Parameters.Keys) {
        if ($ReservedParameters.Contains([string]$key)) {
            return New-Refusal 'RunbookCommandNotAllowed' `
                "-$key is set by the bridge, never by a request; nothing ran" $Name
        }
        if ($SecretParameters.Contains([string]$key)) {
            # Same record as the sandbox gives (runbook/sandbox/exo.py).
            return New-ErrorData ("$key must not be sent in a request; the bridge " +
                'reads it from RUNBOOK_CERT_PASSWORD.') 'SecurityError' `
                'RunbookSecretInRequest' ([string]$key)
        }
    }
    if ($Name -eq 'Import-Module') {
        return Test-ImportRequest $Parameters
    }
    return $null
}

function Test-ImportRequest {
    param([System.Collections.IDictionary]$Parameters)
    $module = $Parameters['Name']
    if (-not ($module -is [string]) -or -not $Importable.Contains($module)) {
        return New-Refusal 'RunbookCommandNotAllowed' `
            ("Import-Module may load only " + ($ImportableModules -join ', ') +
            "; nothing ran") 'Import-Module'
    }
    foreach ($key in $Parameters.Keys) {
        if (-not $ImportParameters.Contains([string]$key)) {
            return New-Refusal 'RunbookCommandNotAllowed' `
                "Import-Module does not take -$key from a request; nothing ran" `
                'Import-Module'
        }
    }
    return $null
}

function Find-AllowedCommand {
    param([string]$Name)
    $lookup = @{
        Name        = $Name
        CommandType = @('Cmdlet', 'Function')
        ErrorAction = 'Ignore'
    }
    if (-not $MayAutoload.Contains($Name)) {
        $lookup['ListImported'] = $true
    }
    $found = @(Get-Command @lookup)
    if ($found.Count -eq 0) {
        return $null
    }
    return $found[0]
}

function ConvertTo-Splat {
    param($Command, [System.Collections.IDictionary]$Parameters, [bool]$Confirmed)
    $splat = @{}
    foreach ($key in $Parameters.Keys) {
        $value = $Parameters[$key]
        $meta = $null
        if ($Command.Parameters.ContainsKey([string]$key)) {
            $meta = $Command.Parameters[[string]$key]
        }
        if ($null -ne $meta -and $meta.SwitchParameter -and $value -is [bool]) {
            $value = [switch]$value
        }
        $splat[[string]$key] = $value
    }
    if ($Confirmed -and $Command.Parameters.ContainsKey('Confirm')) {
        $splat['Confirm'] = [switch]$false
    }
    if ($Command.Name -eq 'Connect-ExchangeOnline') {
        Add-ConnectParameters $splat
    }
    if ($Command.Name -eq 'Import-Module') {
        $splat['Global'] = [switch]$true
    }
    return $splat
}

function Add-ConnectParameters {
    param([hashtable]$Splat)
    # Confirm the tenant with Get-ConnectionInformation, never from the banner.
    $Splat['ShowBanner'] = [switch]$false
    if ($Splat.ContainsKey('AppId')) {
        $password = $env:RUNBOOK_CERT_PASSWORD
        if ($password -and $Splat.ContainsKey('CertificateFilePath')) {
            $Splat['CertificatePassword'] = ConvertTo-SecureString -String $password `
                -AsPlainText -Force
        }
    } elseif (-not $Splat.ContainsKey('Device')) {
        # People sign in with a device code: no browser window from a child.
        $Splat['Device'] = [switch]$true
    }
}

function Invoke-Splatted {
    param($Command, [hashtable]$Splat, $Output, $Errors, $Warnings)
    # Non-terminating errors are collected, not fatal; terminating ones land
    # in the catch. Streams 2, 3 and 6 are merged so nothing reaches the host.
    $ErrorActionPreference = 'Continue'
    try {
        & $Command @Splat 2>&1 3>&1 6>&1 | ForEach-Object {
            if ($_ -is [System.Management.Automation.ErrorRecord]) {
                $Errors.Add((ConvertTo-ErrorData $_))
            } elseif ($_ -is [System.Management.Automation.WarningRecord]) {
                $Warnings.Add((Remove-Ansi ([string]$_.Message)))
            } elseif ($_ -is [System.Management.Automation.InformationRecord]) {
                # Host text (the device-code sign-in message) must reach the
                # person now, not with the reply; the client logs notices.
                [Console]::Error.WriteLine($NoticePrefix +
                    (Remove-Ansi ([string]$_.MessageData)))
            } elseif ($null -ne $_) {
                $Output.Add((ConvertTo-Record $_))
            }
        }
    } catch {
        $Errors.Add((ConvertTo-ErrorData $_))
    }
}

function Invoke-Request {
    param($Request)
    $stopwatch = [System.Diagnostics.Stopwatch]::StartNew()
    $output = [System.Collections.Generic.List[object]]::new()
    $errors = [System.Collections.Generic.List[object]]::new()
    $warnings = [System.Collections.Generic.List[string]]::new()
    $id = $null
    try {
        if (-not ($Request -is [System.Collections.IDictionary])) {
            throw 'a request must be a JSON object'
        }
        $id = $Request['id']
        $name = [string]$Request['command']
        $parameters = $Request['parameters']
        if ($null -eq $parameters) {
            $parameters = @{}
        }
        if (-not ($parameters -is [System.Collections.IDictionary])) {
            throw 'parameters must be a JSON object'
        }
        $confirmed = $Request['confirmed'] -is [bool] -and $Request['confirmed']
        $refusal = Test-Request $name $parameters $confirmed
        if ($null -ne $refusal) {
            $errors.Add($refusal)
        } else {
            $command = Find-AllowedCommand $name
            if ($null -eq $command) {
                $errors.Add((New-NotFoundData $name))
            } else {
                $splat = ConvertTo-Splat $command $parameters $confirmed
                Invoke-Splatted $command $splat $output $errors $warnings
            }
        }
    } catch {
        $errors.Add((New-ErrorData "bridge: $($_.Exception.Message)" 'InvalidData' `
                    'RunbookBadRequest' $null))
    }
    try {
        Write-Reply $id $output $errors $warnings $stopwatch
    } catch {
        # Output that cannot be serialised still gets its one reply line.
        $failed = [System.Collections.Generic.List[object]]::new()
        $reason = "bridge: reply not serialisable: $($_.Exception.Message)"
        $failed.Add((New-ErrorData $reason 'InvalidResult' 'RunbookReplyNotSerialisable' `
                    $null))
        Write-Reply $id ([System.Collections.Generic.List[object]]::new()) $failed `
            $warnings $stopwatch
    }
}

# --- start and serve -------------------------------------------------------

$Standins = $env:RUNBOOK_BRIDGE_STANDINS
if ($Standins) {
    . $Standins
} else {
    try {
        # -Global: imported from a script, a module's commands would be visible
        # in this script's scope only, not to seppmail365cloud's functions.
        Import-Module -Name ExchangeOnlineManagement -Global -ErrorAction Stop
    } catch {
        # The hello then reports no EXO version and the prerequisites say why.
        [Console]::Error.WriteLine("bridge: $($_.Exception.Message)")
    }
}

Write-Hello

while ($true) {
    $line = [Console]::In.ReadLine()
    if ($null -eq $line) {
        break
    }
    if ($line.Trim().Length -eq 0) {
        continue
    }
    $request = $null
    try {
        $request = ConvertFrom-Json -InputObject $line @JsonReadOptions
    } catch {
        $request = $line
    }
    $null = Invoke-Request $request
}
exit 0
