"""`runbook sandbox ...`: make, list, inspect and hand-edit sandbox tenants.

    runbook sandbox scenarios
    runbook sandbox new SCENARIO FILE [--propagation-delay S] [--module V|none]
                                      [--size N] [--force]
    runbook sandbox show STATE
    runbook sandbox portal STATE (--rename OLD NEW | --delete NAME)
                                 [--direction inbound|outbound]

`portal` stands in for the Exchange admin center, the only place where
connectors named with "/" or "\\" can be renamed or deleted (runbook.sandbox
.portal). Exit codes: 0 done, 1 refused (the reason on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import portal, scenarios
from . import state as state_file
from .server import installed_versions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook sandbox",
                                     description="Simulated tenants for the runbook.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("scenarios", help="list the scenarios")
    new = sub.add_parser("new", help="write a fresh tenant of a scenario")
    new.add_argument("scenario")
    new.add_argument("file")
    new.add_argument("--propagation-delay", type=float, default=None,
                     help="seconds before a change takes effect")
    new.add_argument("--module", default=None,
                     help="installed seppmail365cloud version, or 'none'")
    new.add_argument("--size", type=int, default=1,
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
    return parser


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _ACTIONS[args.action](args)
    except (state_file.StateFileError, portal.PortalError, KeyError) as exc:
        print(f"runbook sandbox {args.action}: {_reason(exc)}", file=sys.stderr)
        return 1


def _reason(exc: Exception) -> str:
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def _scenarios(args) -> int:
    for name in scenarios.names():
        print(f"{name:22} {scenarios.describe(name).splitlines()[0]}")
    return 0


def _new(args) -> int:
    if os.path.exists(args.file) and not args.force:
        print(f"runbook sandbox new: {args.file} exists (use --force to replace"
              " it)", file=sys.stderr)
        return 1
    module = None if args.module is None else (
        "" if args.module.lower() == "none" else args.module)
    built = scenarios.build(args.scenario, propagation_delay_s=args.propagation_delay,
                            module_installed=module, size=args.size)
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
    print("\n".join(summary(state_file.load(args.state))))
    return 0


def _portal(args) -> int:
    state = state_file.load(args.state)
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


_ACTIONS = {"scenarios": _scenarios, "new": _new, "show": _show, "portal": _portal}
