"""`runbook sandbox ...`: make, list, inspect and hand-edit sandbox tenants.

    runbook sandbox scenarios
    runbook sandbox new SCENARIO FILE [--propagation-delay S] [--module V|none]
                                      [--size N] [--force]
    runbook sandbox show STATE
    runbook sandbox portal STATE (--rename OLD NEW | --delete NAME)
                                 [--direction inbound|outbound]
    runbook sandbox dns STATE [--port P] [--seconds S]

`portal` stands in for the Exchange admin center, the only place where
connectors named with "/" or "\\" can be renamed or deleted (runbook.sandbox
.portal). `dns` serves the tenant's DNS on 127.0.0.1, as the sandbox child
does for the notebooks, so `runbook dns ... --nameserver` can be tried on a
scenario from a terminal; it stops after S seconds or on Ctrl-C. Exit codes:
0 done, 1 refused (the portal refused, or FILE exists), 2 usage or bad input
(a flag, a state file that is missing or incomplete, a folder that is not
there); the reason is one line on stderr, written by `main` alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from runbook import params
from runbook.cli import Parser

from . import portal, scenarios
from . import state as state_file
from .module_profile import Version
from .server import installed_versions

# The top-level keys `show` and `portal` read, with their JSON types
# (docs/internals.md, "Sandbox state file").
_STATE_KEYS = {"scenario": str, "description": str, "tenant": dict,
               "propagation_delay_s": (int, float), "accepted_domains": list,
               "inbound_connectors": list, "outbound_connectors": list,
               "transport_rules": list, "dns": dict}


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="runbook sandbox",
                    description="Simulated tenants for the runbook.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("scenarios", help="list the scenarios")
    new = sub.add_parser("new", help="write a fresh tenant of a scenario")
    new.add_argument("scenario", type=_scenario)
    new.add_argument("file", type=_new_file)
    new.add_argument("--propagation-delay", type=_seconds, default=None,
                     help="seconds before a change takes effect")
    new.add_argument("--module", type=_module, default=None,
                     help="installed seppmail365cloud version, or 'none'")
    new.add_argument("--size", type=_positive, default=1,
                     help="bulk factor of the large scenario")
    new.add_argument("--force", action="store_true", help="overwrite FILE")
    show = sub.add_parser("show", help="summarise a tenant")
    show.add_argument("state")
    edit = sub.add_parser("portal", help="rename or delete a connector by hand")
    edit.add_argument("state")
    group = edit.add_mutually_exclusive_group(required=True)
    group.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"))
    group.add_argument("--delete", metavar="NAME")
    edit.add_argument("--direction", choices=("inbound", "outbound"))
    serve = sub.add_parser("dns", help="serve a tenant's DNS on 127.0.0.1 for a while")
    serve.add_argument("state")
    serve.add_argument("--port", type=_port, default=0, help="0: a free port")
    serve.add_argument("--seconds", type=_serving_time, default=600.0,
                       help="how long to serve (default 600, at most a day)")
    return parser


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _ACTIONS[args.action](args)
    except portal.PortalError as exc:
        print(f"runbook sandbox {args.action}: {exc}", file=sys.stderr)
        return 1
    except state_file.StateFileError as exc:
        print(f"runbook sandbox {args.action}: {exc}; write a fresh one with "
              "`runbook sandbox new SCENARIO FILE`", file=sys.stderr)
        return 2
    except OSError as exc:     # the file cannot be written: no access, disk full
        if not exc.filename:
            raise
        target = getattr(args, "file", None) or getattr(args, "state", exc.filename)
        print(f"runbook sandbox {args.action}: cannot write {target}: {exc.strerror}",
              file=sys.stderr)
        return 2


def _scenario(text: str) -> str:
    if text not in scenarios.names():
        raise argparse.ArgumentTypeError(f"unknown scenario {text!r}; the scenarios "
                                         f"are {', '.join(scenarios.names())}")
    return text


def _new_file(text: str) -> str:
    folder = Path(text).expanduser().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} does not exist; "
                                         "create it first")
    return text


def _serving_time(text: str) -> float:
    try:
        return params.typed_number(text, "seconds", at_most=86400)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: 0 (a free one) to "
                                         "65535")
    return port


def _seconds(text: str) -> float:
    try:
        return params.typed_number(text, "seconds")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _module(text: str) -> str:
    if text.lower() == "none":
        return ""
    try:
        return Version.parse(text).text
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a module version such as 2.0.2 or 1.3.0-preview1, "
            "nor 'none'") from None


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number, 1 or more")
    return value


def _load(path: str) -> dict:
    """A state file with the keys `summary` and the portal read, else StateFileError."""
    loaded = state_file.load(path)
    for key, kind in _STATE_KEYS.items():
        if not isinstance(loaded.get(key), kind):
            raise state_file.StateFileError(path, f"no {key!r} of the right type")
    return loaded


def _scenarios(args) -> int:
    for name in scenarios.names():
        print(f"{name:22} {scenarios.describe(name).splitlines()[0]}")
    return 0


def _new(args) -> int:
    if os.path.exists(args.file) and not args.force:
        print(f"runbook sandbox new: {args.file} exists (use --force to replace"
              " it)", file=sys.stderr)
        return 1
    built = scenarios.build(args.scenario, propagation_delay_s=args.propagation_delay,
                            module_installed=args.module, size=args.size)
    state_file.save(args.file, built)
    print(f"{args.file}: scenario {args.scenario}, tenant"
          f" {built['tenant']['initial_domain']}")
    return 0


def summary(state: dict) -> list[str]:
    """A few lines that say what a sandbox tenant holds."""
    info = state["tenant"]
    mx = [f"{r['name'].rstrip('.')} -> {r['value'].split()[-1].rstrip('.')}"
          for r in state["dns"]["records"] if r["type"] == "MX"]
    rules = sorted(state["transport_rules"], key=lambda r: r["Priority"])
    lines = [
        f"scenario   {state['scenario']}: {state['description'].splitlines()[0]}",
        f"tenant     {info['name']} ({info['tenant_id']}),"
        f" default domain {info['default_domain']}",
        f"domains    {', '.join(d['DomainName'] for d in state['accepted_domains'])}",
        f"MX         {'; '.join(mx)}",
        f"module     {', '.join(installed_versions(state)) or 'not installed'}",
        f"delay      {state['propagation_delay_s']} s;"
        f" {len(state.get('changes', []))} change(s) recorded",
        f"inbound    {len(state['inbound_connectors'])} connector(s)",
    ]
    lines += [f"  - {c['Name']}{'' if c['Enabled'] else ' (disabled)'}"
              for c in state["inbound_connectors"]]
    lines.append(f"outbound   {len(state['outbound_connectors'])} connector(s)")
    lines += [f"  - {c['Name']}{'' if c['Enabled'] else ' (disabled)'}"
              for c in state["outbound_connectors"]]
    lines.append(f"rules      {len(rules)}")
    lines += [f"  {r['Priority']:>3} {r['Name']} [{r['State']}]" for r in rules[:40]]
    if len(rules) > 40:
        lines.append(f"  ... and {len(rules) - 40} more")
    return lines


def _show(args) -> int:
    print("\n".join(summary(_load(args.state))))
    return 0


def _portal(args) -> int:
    state = _load(args.state)
    if args.rename:
        old, new = args.rename
        portal.rename_connector(state, old, new, direction=args.direction)
        message = f"renamed connector {old!r} to {new!r}"
    else:
        portal.delete_connector(state, args.delete, direction=args.direction)
        message = f"deleted connector {args.delete!r}"
    state_file.save(args.state, state)
    print(message)
    return 0


def _dns(args) -> int:
    from .dnsserver import start_dns_server

    records = state_file.load(args.state).get("dns", {}).get("records", [])
    try:
        server = start_dns_server(records, port=args.port)
    except (OSError, ValueError) as exc:   # port taken, or a malformed record
        print(f"runbook sandbox dns: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"serving the DNS of {args.state} on {server.nameserver} for"
              f" {args.seconds:g} s; try: runbook dns DOMAIN --routing inline"
              f" --nameserver {server.nameserver}", flush=True)
        time.sleep(max(0.0, args.seconds))
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


_ACTIONS = {"scenarios": _scenarios, "new": _new, "show": _show, "portal": _portal,
            "dns": _dns}
