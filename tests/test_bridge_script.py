"""bridge.ps1 read as a syntax tree (tree-sitter-powershell): no pwsh needed."""

import re

import tree_sitter
import tree_sitter_powershell
import pytest

from runbook.powershell import commands
from runbook.powershell.session import BRIDGE_SCRIPT, NOTICE_PREFIX

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))

# bridge.ps1 variable -> commands.py tuple
GROUPS = {
    "$ExchangeRead": commands.EXCHANGE_READ,
    "$ExchangeWrite": commands.EXCHANGE_WRITE,
    "$SessionCommands": commands.SESSION,
    "$ModuleManagementWrite": commands.MODULE_MANAGEMENT_WRITE,
    "$SeppmailRead": commands.SEPPMAIL_READ,
    "$SeppmailWrite": commands.SEPPMAIL_WRITE,
}

# Anything that turns text into code, or starts other programs.
FORBIDDEN_COMMANDS = {"invoke-expression", "iex", "add-type", "invoke-command", "icm",
                      "start-process", "saps", "new-module", "import-powershelldatafile"}
FORBIDDEN_MEMBERS = {"newscriptblock", "expandstring", "invokescript"}


class Script:
    def __init__(self, source: bytes):
        self.source = source
        self.tree = PARSER.parse(source)

    def text(self, node) -> str:
        return self.source[node.start_byte:node.end_byte].decode()

    def nodes(self, kind: str | None = None, node=None):
        stack = [node or self.tree.root_node]
        while stack:
            current = stack.pop()
            if kind is None or current.type == kind:
                yield current
            stack.extend(reversed(current.children))

    def assignments(self) -> dict[str, list]:
        """Top-level and nested `$name = ...`: name -> right-hand nodes."""
        found: dict[str, list] = {}
        for node in self.nodes("assignment_expression"):
            left, right = node.children[0], node.children[-1]
            found.setdefault(self.text(left), []).append(right)
        return found

    def strings(self, node) -> list[str]:
        return [self.text(n).strip("'\"") for n in self.nodes("string_literal", node)]

    def variables(self, node) -> set[str]:
        return {self.text(n) for n in self.nodes("variable", node)}

    def command_names(self) -> list[str]:
        return [self.text(n) for n in self.nodes("command_name")]

    def commands_named(self, name: str) -> list[str]:
        return [self.text(n) for n in self.nodes("command")
                if n.children and self.text(n.children[0]).lower() == name.lower()]


@pytest.fixture(scope="module")
def bridge() -> Script:
    return Script(BRIDGE_SCRIPT.read_bytes())


def forbidden_uses(script: Script) -> list[str]:
    found = [name for name in script.command_names()
             if name.lower() in FORBIDDEN_COMMANDS]
    for node in script.nodes("invokation_expression"):
        parts = [script.text(c).lower() for c in node.children]
        if "[scriptblock]" in parts and "create" in parts:
            found.append("[scriptblock]::Create")
        if "[powershell]" in parts and "create" in parts:
            found.append("[powershell]::Create")
        found.extend(p for p in parts if p in FORBIDDEN_MEMBERS)
    found.extend(script.text(n) for n in script.nodes("command_parameter")
                 if script.text(n).lower() in ("-command", "-encodedcommand"))
    return found


def test_bridge_parses_without_error_or_missing_nodes(bridge):
    broken = [(n.type, n.start_point) for n in bridge.nodes()
              if n.type == "ERROR" or n.is_missing]
    assert broken == []
    assert not bridge.tree.root_node.has_error


@pytest.mark.parametrize("variable", sorted(GROUPS))
def test_each_command_group_equals_commands_py(bridge, variable):
    (right,) = bridge.assignments()[variable]
    assert bridge.strings(right) == list(GROUPS[variable])


def test_allow_list_and_mutating_set_are_built_from_the_same_groups(bridge):
    assignments = bridge.assignments()
    (allowed,) = assignments["$Allowed"]
    (mutating,) = assignments["$Mutating"]
    assert bridge.variables(allowed) == set(GROUPS)
    assert bridge.variables(mutating) == {"$ExchangeWrite", "$ModuleManagementWrite",
                                          "$SeppmailWrite"}
    union = {c for v in bridge.variables(allowed) for c in GROUPS[v]}
    assert union == commands.ALLOWED
    assert {c for v in bridge.variables(mutating) for c in GROUPS[v]} == (
        commands.MUTATING)


def test_importable_modules_equal_commands_py(bridge):
    (right,) = bridge.assignments()["$ImportableModules"]
    assert set(bridge.strings(right)) == commands.IMPORTABLE_MODULES


def test_nothing_turns_text_into_code(bridge):
    assert forbidden_uses(bridge) == []


@pytest.mark.parametrize("snippet, expected", [
    ("Invoke-Expression $line", ["Invoke-Expression"]),
    ("iex $request.command", ["iex"]),
    ("[scriptblock]::Create($text)", ["[scriptblock]::Create"]),
    ("Add-Type -TypeDefinition $code", ["Add-Type"]),
    ("pwsh -Command $text", ["-Command"]),
    ("$ExecutionContext.InvokeCommand.ExpandString($s)", ["expandstring"]),
])
def test_the_code_check_catches_each_forbidden_form(snippet, expected):
    assert forbidden_uses(Script(snippet.encode())) == expected


def test_only_the_looked_up_command_is_invoked_and_only_standins_dot_sourced(bridge):
    invoked = []
    for node in bridge.nodes("command"):
        first = node.children[0]
        if first.type == "command_invokation_operator":
            invoked.append((bridge.text(first), bridge.text(node.children[1])))
    assert invoked == [("&", "$Command"), (".", "$Standins")]


def test_host_preferences_are_set_for_a_silent_promptless_plain_host(bridge):
    assignments = {k: [bridge.text(r) for r in v]
                   for k, v in bridge.assignments().items()}
    assert assignments["$ErrorActionPreference"][0] == "'Stop'"
    assert assignments["$ProgressPreference"] == ["'SilentlyContinue'"]
    assert assignments["$PSStyle.OutputRendering"] == ["'PlainText'"]
    assert assignments["$ConfirmPreference"] == ["'None'"]
    assert assignments["$global:ConfirmPreference"] == ["'None'"]
    assert assignments["[Console]::OutputEncoding"] == ["$Utf8"]
    assert assignments["$Utf8"] == ["[System.Text.UTF8Encoding]::new($false)"]


def test_stdout_is_written_only_through_the_protocol_writer(bridge):
    names = {n.lower() for n in bridge.command_names()}
    assert not names & {"write-host", "write-output", "echo", "out-host",
                        "out-default", "write-information"}
    console_writes = [bridge.text(n) for n in bridge.nodes("invokation_expression")
                      if bridge.text(n).startswith("[Console]::Out")]
    assert console_writes == []


def test_replies_are_compressed_json_with_enum_names_and_ascii_escapes(bridge):
    conversions = bridge.commands_named("ConvertTo-Json")
    assert len(conversions) == 2
    for text in conversions:
        for flag in ("-Depth $Depth", "-Compress", "-EnumsAsStrings",
                     "-EscapeHandling EscapeNonAscii"):
            assert flag in text
    assert "ConvertTo-ProtocolJson $reply 9 $Warnings" in bridge.source.decode()


def test_certificate_password_comes_from_the_environment_only(bridge):
    source = bridge.source.decode()
    (secret,) = bridge.assignments()["$SecretParameters"]
    assert "CertificatePassword" in bridge.strings(secret)
    assert "$password = $env:RUNBOOK_CERT_PASSWORD" in source
    (convert,) = bridge.commands_named("ConvertTo-SecureString")
    assert convert.startswith("ConvertTo-SecureString -String $password")


def test_connect_hides_the_banner_and_people_use_device_login(bridge):
    source = bridge.source.decode()
    assert "$Splat['ShowBanner'] = [switch]$false" in source
    assert "$Splat['Device'] = [switch]$true" in source


def test_request_lines_are_parsed_as_hashtables_and_dates_stay_strings(bridge):
    (parse,) = bridge.commands_named("ConvertFrom-Json")
    assert parse == "ConvertFrom-Json -InputObject $line @JsonReadOptions"
    assignments = {k: [bridge.text(r) for r in v]
                   for k, v in bridge.assignments().items()}
    assert assignments["$JsonReadOptions"] == ["@{ AsHashtable = $true }"]
    # Only where the parameter exists (PowerShell 7.5 and later).
    assert assignments["$JsonReadOptions['DateKind']"] == ["'String'"]
    assert ("if ((Get-Command -Name ConvertFrom-Json).Parameters.ContainsKey("
            "'DateKind')) {") in bridge.source.decode()


def test_powershell_before_7_is_stopped_before_the_hello(bridge):
    lines = bridge.source.decode().splitlines()
    assert "#Requires -Version 7.0" in lines
    assert lines.index("#Requires -Version 7.0") < lines.index("[CmdletBinding()]")


def test_console_text_goes_to_stderr_marked_with_the_clients_notice_prefix(bridge):
    assignments = {k: [bridge.text(r) for r in v]
                   for k, v in bridge.assignments().items()}
    assert assignments["$NoticePrefix"] == [repr(NOTICE_PREFIX)]
    assert assignments["$ProtocolOut"] == ["[Console]::Out"]
    (writer,) = assignments["$notices"]
    assert writer.startswith("[System.CodeDom.Compiler.IndentedTextWriter]::new("
                             "[Console]::Error,")
    assert writer.endswith("$NoticePrefix)")
    assert assignments["$notices.Indent"] == ["1"]
    set_out = [bridge.text(n) for n in bridge.nodes("invokation_expression")
               if bridge.text(n).startswith("[Console]::SetOut(")]
    # Marked notices, or (where that writer cannot be built) plain stderr.
    assert set_out == ["[Console]::SetOut([System.IO.TextWriter]::Synchronized("
                       "$notices))", "[Console]::SetOut([Console]::Error)"]
    source = bridge.source.decode()
    assert source.index("$ProtocolOut = [Console]::Out") < source.index(
        "[Console]::SetOut(")


def _colour_pattern(bridge) -> re.Pattern:
    (right,) = bridge.assignments()["$AnsiSequence"]
    (literal,) = bridge.strings(right)
    return re.compile(literal)


@pytest.mark.parametrize("coloured, plain", [
    ("\x1b[33;1mWARNING: throttled\x1b[0m", "WARNING: throttled"),
    ("\x1b]8;;https://aka.ms/exov3\x07docs\x1b]8;;\x07 here", "docs here"),
    ("\x1b]8;;https://aka.ms/exov3\x1b\\docs\x1b]8;;\x1b\\", "docs"),
    ("Grüezi 東京 🙂 [SEPPmail.cloud] 50% ;-)",) * 2,
])
def test_colour_sequences_are_removed_and_plain_text_is_kept(bridge, coloured, plain):
    # The subset of regex syntax used means the same to .NET and to Python.
    assert _colour_pattern(bridge).sub("", coloured) == plain


def test_warnings_notices_and_error_messages_lose_their_colour(bridge):
    source = bridge.source.decode()
    assert "$Warnings.Add((Remove-Ansi ([string]$_.Message)))" in source
    assert "(Remove-Ansi ([string]$_.MessageData))" in source
    assert "$message = Remove-Ansi $message" in source


def test_exchange_module_is_imported_for_the_whole_session(bridge):
    assert bridge.commands_named("Import-Module") == [
        "Import-Module -Name ExchangeOnlineManagement -Global -ErrorAction Stop"]
    assert "$splat['Global'] = [switch]$true" in bridge.source.decode()


def test_module_objects_are_sent_as_name_version_and_place(bridge):
    source = bridge.source.decode()
    start = source.index("if ($base -is [System.Management.Automation.PSModuleInfo])")
    block = source[start:source.index("}", source.index("Path       = $base.Path"))]
    for line in ("Name       = $base.Name", "Version    = Get-ModuleVersionText $base",
                 "ModuleBase = $base.ModuleBase", "Path       = $base.Path"):
        assert line in block
