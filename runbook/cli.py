"""`runbook ...`: the command line.

    runbook run --tenant T --domain D [--domain D2] --region R --routing M
                [--backend sandbox|pwsh] [--sandbox-state FILE] [--confirm]
    runbook demo
    runbook resume RUN_DIR
    runbook rollback RUN_DIR [--confirm]
    runbook dns DOMAIN... --routing M [--region R] [--tenant-id ID] [--nameserver H[:P]]
    runbook sandbox new|scenarios|portal|show ...
    runbook audit verify RUN_DIR
    runbook batch TENANTS.csv [--workers N] [--confirm] [--executor local|dask]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from runbook.params import ParameterError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _DELEGATED[argv[0]](argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runbook", description="SEPPmail.cloud CBC "
                                     "migration runbook")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the five steps for one tenant")
    _run_arguments(run)
    run.set_defaults(handler=_cmd_run)

    demo = sub.add_parser("demo", help="migrate a fresh legacy-inline sandbox tenant")
    demo.add_argument("--scenario", default="legacy-inline")
    demo.add_argument("--reports", type=Path, default=None)
    demo.set_defaults(handler=_cmd_demo)

    resume = sub.add_parser("resume", help="continue a stopped run")
    resume.add_argument("run_dir", type=Path)
    resume.set_defaults(handler=_cmd_resume)

    undo = sub.add_parser("rollback", help="undo a run (plan only without --confirm)")
    undo.add_argument("run_dir", type=Path)
    undo.add_argument("--confirm", action="store_true")
    undo.set_defaults(handler=_cmd_rollback)

    for name, text in (("dns", "check the DNS of domains"),
                       ("sandbox", "make and inspect sandbox tenants"),
                       ("audit", "verify a run folder"),
                       ("batch", "run many tenants from a CSV file")):
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True, help="<name> of <name>.onmicrosoft.com")
    parser.add_argument("--domain", dest="domains", action="append", required=True,
                        help="a domain to route via SEPPmail.cloud (repeat for more; "
                        "the first builds the connectors)")
    parser.add_argument("--region", required=True)
    parser.add_argument("--routing", required=True)
    parser.add_argument("--backend", default="sandbox")
    parser.add_argument("--sandbox-state", default="")
    parser.add_argument("--module-version", default="")
    parser.add_argument("--tenant-id", default="")
    parser.add_argument("--app-id", default="")
    parser.add_argument("--certificate-path", default="")
    parser.add_argument("--operator", default="")
    parser.add_argument("--wait-minutes", type=float, default=10.0)
    parser.add_argument("--poll-seconds", type=float, default=15.0)
    parser.add_argument("--reports", type=Path, default=None)
    parser.add_argument("--confirm", action="store_true",
                        help="make the changes; without it the run only plans")


def _cmd_run(args) -> int:
    from runbook import chain, params

    p = params.validate(
        tenant=args.tenant, domains=args.domains, region=args.region,
        routing=args.routing, backend=args.backend, sandbox_state=args.sandbox_state,
        module_version=args.module_version, tenant_id=args.tenant_id,
        app_id=args.app_id, certificate_path=args.certificate_path,
        operator=args.operator, wait_minutes=args.wait_minutes,
        poll_seconds=args.poll_seconds, confirm=args.confirm)
    if p.backend == "sandbox" and not p.sandbox_state:
        raise ParameterError("sandbox_state", "", "a sandbox state file for the sandbox "
                             "backend (`runbook sandbox new SCENARIO FILE`)")
    if p.sandbox_state and not Path(p.sandbox_state).is_file():
        raise ParameterError("sandbox_state", p.sandbox_state, "an existing file")
    record = chain.run(p, reports_dir=args.reports)
    print(record.path)
    return 0 if record.run()["status"] in ("succeeded", "planned") else 1


def _cmd_demo(args) -> int:
    from runbook import chain, params
    from runbook.notebook import default_reports_dir
    from runbook.sandbox import scenarios, state

    reports = args.reports or default_reports_dir()
    tenant_state = scenarios.build(args.scenario)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = reports / "sandbox" / f"{args.scenario}-{stamp}.json"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.save(path, tenant_state)
    declared = scenarios.declared(args.scenario)
    p = params.validate(
        **declared, backend="sandbox", sandbox_state=str(path), confirm=True,
        wait_minutes=2.0,
        poll_seconds=1.0, operator="demo")
    print(f"sandbox tenant {declared['tenant']} ({args.scenario}) in {path}")
    record = chain.run(p, reports_dir=reports)
    print(record.path)
    return 0 if record.run()["status"] == "succeeded" else 1


def _cmd_resume(args) -> int:
    from runbook import chain

    record = chain.resume(args.run_dir)
    print(record.path)
    return 0 if record.run()["status"] in ("succeeded", "planned") else 1


def _cmd_rollback(args) -> int:
    from runbook import chain

    record = chain.rollback(args.run_dir, confirm=args.confirm)
    print(record.path)
    return 0 if record.run()["status"] in ("succeeded", "planned") else 1


def _dns(argv: list[str]) -> int:
    from runbook import dns

    return dns.main(argv)


def _sandbox(argv: list[str]) -> int:
    from runbook.sandbox import cli

    return cli.main(argv)


def _audit(argv: list[str]) -> int:
    from runbook import audit

    if not argv or argv[0] != "verify":
        print("usage: runbook audit verify RUN_DIR", file=sys.stderr)
        return 2
    return audit.main_verify(argv[1:])


def _batch(argv: list[str]) -> int:
    from runbook import batch

    return batch.main(argv)


_DELEGATED = {"dns": _dns, "sandbox": _sandbox, "audit": _audit, "batch": _batch}

if __name__ == "__main__":
    sys.exit(main())
