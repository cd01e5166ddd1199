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

Exit codes: 0 done, 1 the run failed, 2 usage or bad input (one line on stderr
saying what is wrong; `main` is the one place that turns such errors into it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from runbook import audit
from runbook.params import ParameterError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def entry() -> int:
    """The `runbook` command: `main` with warnings that say they are warnings
    (Exchange Online's among them, "Import-Module: You do not trust ...")."""
    logging.basicConfig(level=logging.WARNING,
                        format="runbook: %(levelname)s: %(message)s")
    try:
        return main()
    except BrokenPipeError:
        # The reader went away (`runbook audit verify … | head -1`): what it
        # wanted it has; nothing is left to say, and nowhere to say it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        if argv and argv[0] in _DELEGATED:
            return _DELEGATED[argv[0]](argv[1:])
        args = parser.parse_args(argv)
    except SystemExit as exc:     # argparse: --help, or a usage error already shown
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        # The chain has sealed the run as cancelled and said where it is.
        print("runbook: stopped by Ctrl-C", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _input_error(exc)
        if message is None:
            raise                      # a bug: the traceback is what helps
        print(f"runbook: {message}", file=sys.stderr)
        return 2


def _input_error(exc: Exception) -> str | None:
    """The line to show for an error caused by what the user gave, else None."""
    from runbook.audit import NotARunFolder
    from runbook.batch import TenantBusy
    from runbook.chain import NothingToResume

    if isinstance(exc, NotARunFolder):
        return (f"{exc}; give a run folder, reports/<tenant>/<run-id>, that holds "
                "run.json with the run's parameters")
    if isinstance(exc, (ParameterError, NothingToResume, TenantBusy)):
        return str(exc)
    # Foreign errors from paths the user named (--reports on a file, a folder
    # without write access): the path and the system's reason.
    if isinstance(exc, (NotADirectoryError, IsADirectoryError, PermissionError)):
        return (f"{exc.filename}: {exc.strerror}; name a folder you can write to"
                if exc.filename else str(exc))
    return None


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="runbook", description="SEPPmail.cloud CBC migration runbook")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the five steps for one tenant")
    _run_arguments(run)
    run.set_defaults(handler=_cmd_run)

    demo = sub.add_parser("demo", help="migrate a fresh legacy-inline sandbox tenant")
    demo.add_argument("--scenario", type=_scenario, default="legacy-inline")
    demo.add_argument("--reports", type=_folder, default=None)
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
    parser.add_argument("--reports", type=_folder, default=None)
    parser.add_argument("--confirm", action="store_true",
                        help="make the changes; without it the run only plans")


def _folder(text: str) -> Path:
    """--reports: a folder, or a path where one can be made."""
    path = Path(text).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, not a folder; name "
                                         "the folder for the run folders")
    return path


def _scenario(text: str) -> str:
    from runbook.sandbox import scenarios

    if text not in scenarios.names():
        raise argparse.ArgumentTypeError(f"unknown scenario {text!r}; the scenarios "
                                         f"are {', '.join(scenarios.names())}")
    return text


def _cmd_run(args) -> int:
    from runbook import chain, params

    p = params.validate(
        tenant=args.tenant, domains=args.domains, region=args.region,
        routing=args.routing, backend=args.backend, sandbox_state=args.sandbox_state,
        module_version=args.module_version, tenant_id=args.tenant_id,
        app_id=args.app_id, certificate_path=args.certificate_path,
        operator=args.operator, wait_minutes=args.wait_minutes,
        poll_seconds=args.poll_seconds, confirm=args.confirm)
    params.check_files(p)
    if p.backend == "sandbox":  # the record names the scenario the tenant came from
        scenario = params.sandbox_tenant(p).get("scenario")
        if isinstance(scenario, str) and scenario != p.scenario:
            p = params.validate(**dict(p.as_dict(), scenario=scenario))
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


_NOT_INTACT = (audit.RecordNotIntact, audit.RecordDamaged)


def _not_intact(run_dir, what: str, exc: Exception) -> int:
    """A changed record is a finding, not a usage error: say what, exit 1."""
    problems = getattr(exc, "problems", [str(exc)])
    print(f"runbook: {run_dir} cannot be {what}; it is not intact:",
          *problems, sep="\n  ", file=sys.stderr)
    return 1


def _cmd_resume(args) -> int:
    from runbook import chain

    try:
        record = chain.resume(args.run_dir)
    except _NOT_INTACT as exc:
        return _not_intact(args.run_dir, "resumed", exc)
    print(record.path)
    return 0 if record.run()["status"] in ("succeeded", "planned") else 1


def _cmd_rollback(args) -> int:
    from runbook import chain

    try:
        record = chain.rollback(args.run_dir, confirm=args.confirm)
    except _NOT_INTACT as exc:
        return _not_intact(args.run_dir, "rolled back", exc)
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
