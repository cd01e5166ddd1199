"""Write notebooks/*.ipynb from the cell texts below (outputs stripped, python3 kernel).

Run `python tools/build_notebooks.py` after changing a notebook here; the
notebooks are committed, and `tests/test_notebooks_static.py` checks they
match this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PARAMETERS = '''\
# Parameters (papermill injects a run's values below this cell).
tenant = "contoso"                     # <name> of <name>.onmicrosoft.com
domains = ["contoso.ch", "contoso-group.ch"]   # the first one builds the connectors
region = "ch"                          # ch, prv, de (dev: module 2.0)
routing = "inline"                     # inline or parallel
backend = "sandbox"                    # sandbox or pwsh (a real tenant)
sandbox_state = ""                     # empty: a fresh sandbox tenant from `scenario`
scenario = "legacy-inline"
module_version = ""                    # empty: the newest in the gallery
run_dir = ""                           # empty: a new run folder under reports/
confirm = False                        # True: make the changes; False: plan only
tenant_id = ""                         # expected tenant ID (optional check)
app_id = ""                            # app-only login (batch): application ID
certificate_path = ""                  # ... and certificate file; password in RUNBOOK_CERT_PASSWORD
operator = ""                          # who runs this (default: your login)
wait_minutes = 10.0                    # step 5: how long to wait for mail flow
poll_seconds = 15.0                    # step 5: how often to look
timeout_seconds = 300.0                # one PowerShell call at most'''


def with_defaults(cell: str, **literals) -> str:
    """`cell` with other default values (Python literals as text), comments kept
    unless a value comes as (literal, comment)."""
    lines = cell.splitlines()
    for name, literal in literals.items():
        [n] = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        comment = lines[n].partition("  #")[2].strip()
        if isinstance(literal, tuple):
            literal, comment = literal
        assignment = f"{name} = {literal}"
        lines[n] = f"{assignment:<38} # {comment}" if comment else assignment
    return "\n".join(lines)


# 06 runs alone on a tenant that is migrated and does not loop: its verdict
# passes, so nbval runs it as it runs the others. The loop itself is shown by
# the `mail-loop` scenario (tests/test_loop_notebooks.py runs it there).
DIAGNOSIS_PARAMETERS = with_defaults(
    PARAMETERS, tenant='"proseware"', domains='["proseware.ch"]',
    scenario=('"migrated"', 'no loop; "mail-loop" (northwind) loops')
) + '''
window_hours = 24.0                    # the trace's last hours (at most 240)
recipients = []                        # only these addresses, e.g. ["info@adatum.ch"]
message_id = ""                        # only this Message-ID, e.g. from a bounce'''

OPEN = """\
from runbook.notebook import open_step, show
from runbook import tables, widgets
# Checks the parameters above and connects; a rerun keeps the same sandbox tenant.
ctx = widgets.interactive(open_step("{step}", widgets.reuse_tenant(globals())))
ctx"""

# Said once, under the intro of every step that changes something.
CONFIRMING = """\
**Confirming.** Without `confirm = True` the step changes nothing and shows its
plan. In JupyterLab an **Apply this plan** button appears under the plan: it
records who confirmed which plan and when in the run's audit, then makes exactly
the changes shown, and the verdict at the end follows. Run the step again at any
time: it looks at the tenant as it is and says when there is nothing left to do."""

NOTEBOOKS = {
    "01-prerequisites": [
        ("md", """\
# Step 1 — Prerequisites

**What it does.** Checks that this tenant can be moved to certificate-based
connectors (CBC):

* PowerShell 7 and ExchangeOnlineManagement 3.0.0 or later;
* the right tenant is connected and every domain is one of its accepted domains;
* inline routing covers every domain of the tenant;
* DNS: the MX fits the routing mode, SEPPmail.cloud has provisioned each domain
  in the declared region and routing mode, and has prepared the tenant for CBC.

**What it changes.** Nothing, in the tenant or on this machine.

**Have at hand.** The tenant name, the domains, the region and routing mode agreed
with SEPPmail.cloud, and the tenant ID if you want it checked. If the CBC
readiness check fails, ask SEPPmail support (or use login.seppmail.cloud → Setup →
General → Customers domain: *fetch ID*, then *set named transport*)."""),
        ("params", PARAMETERS),
        ("md", """\
## The tenant's parameters

In JupyterLab a form shows below. Change the values there (each one is checked as
you type), then run the cells below it: **Run ▸ Run Selected Cell and All Below**.
A batch run takes the parameters cell above as it is."""),
        ("code", """\
from runbook import widgets
form = widgets.parameter_form(globals())   # shows only where a person is"""),
        ("code", OPEN),
        ("md", "## PowerShell, modules and tenant"),
        ("code", '''\
from runbook import prereq
checks = prereq.host_checks(ctx.session.versions)
checks += prereq.tenant_checks(ctx.params, ctx.connection, ctx.exo.accepted_domains(),
                               ctx.exo.organization_config())'''),
        ("md", "## DNS, one row per domain (failing ones first)"),
        ("code", '''\
from runbook import dns
results = dns.check_domains(ctx.params.domains, routing=ctx.params.routing,
                            region=ctx.params.region, resolver=ctx.resolver(),
                            tenant_id=str(ctx.connection.get("TenantID", "")))
tables.style_checks(dns.to_frame(results))'''),
        ("md", "## All checks"),
        ("code", '''\
checks += prereq.dns_checks(results)
prereq.record_checks(ctx.record, ctx.step, checks)
tables.style_checks(prereq.frame(checks))'''),
        ("code", "ctx.conclude(*prereq.verdict(checks))"),
    ],
    "02-install-module": [
        ("md", """\
# Step 2 — Install the CBC-capable seppmail365cloud module

**What it does.** Installs seppmail365cloud **1.3.0-preview1 or later** (the first
release that creates certificate-based connectors) from the PowerShell Gallery,
for the current user, beside any older version. With `module_version` empty it
takes the newest version the gallery offers.

**What it changes.** A PowerShell module on this machine, not the tenant. A real
tenant's session must be restarted after installing ExchangeOnlineManagement
itself; this step does not touch that module.

**Have at hand.** Step 1 passed; the module version agreed with SEPPmail.cloud, if
it is not the newest.

""" + CONFIRMING),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("code", '''\
from runbook import install
plan = install.plan(ctx.exo, ctx.params.module_version)
plan.summary()'''),
        ("code", '''\
def install_module(confirmed):      # "Apply this plan" calls it with True
    installed = install.apply(ctx.exo, plan) if confirmed else plan.installed
    show(f"seppmail365cloud installed: {', '.join(installed) or 'none'}")
    return install.verdict(plan, installed, confirmed)
outcome = widgets.confirm(ctx, install_module, summary=plan.summary(),
                          objects=[plan] if plan.needed else [])'''),
        ("code", "ctx.conclude(*outcome.verdict)"),
    ],
    "03-cleanup": [
        ("md", """\
# Step 3 — Remove every old SEPPmail rule and connector

**From here until step 4 has run, mail is not encrypted by SEPPmail.cloud.**
Plan the time with the customer.

**What it does.** Lists every connector and transport rule, says which ones are
SEPPmail's (current, pre-CBC, legacy-named, appliance-era `[SEPPmail]`, leftovers)
and removes those, **rules first**, after writing a backup of each into the run
folder (`backup/`). Everything else stays as it is, and the step proves that
afterwards.

**What it changes.** Removes the SEPPmail connectors and rules marked red in the
table. Connectors whose names hold `/` or `\\` (marked amber) cannot be removed
by PowerShell any more: the plan shows them before anything is removed; the step
removes everything else (rules first, so that no rule still routes through them),
then stops and says what to do for each in the Exchange admin center (rename,
then delete). Run it again afterwards: it continues where it stopped.

**Have at hand.** Steps 1 and 2 passed; the customer's agreement to the time
without encryption; access to the Exchange admin center for slash-named
connectors.

""" + CONFIRMING),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("md", "## Inventory and plan"),
        ("code", '''\
from runbook import cleanup, inventory
now = inventory.take(ctx.exo)
inventory.record_before(ctx.record, now)    # a resumed run keeps its first one
plan = cleanup.plan(now)
show(tables.style_inventory(plan.table()))
plan.summary()'''),
        ("md", "## Backup, remove, prove"),
        ("code", '''\
def remove(confirmed):              # "Apply this plan" calls it with True
    result = cleanup.run(plan, record=ctx.record, exo=ctx.exo, confirmed=confirmed)
    if result.after:
        show(tables.style_inventory(inventory.table(result.after.items())))
    return result.status, result.message
outcome = widgets.confirm(ctx, remove, summary=plan.summary(),
                          objects=plan.removals)'''),
        ("code", "ctx.conclude(*outcome.verdict)"),
    ],
    "04-configure": [
        ("md", """\
# Step 4 — Create the CBC connectors and rules

**What it does.** Creates, with the seppmail365cloud module installed in step 2,
the inbound and outbound connector of the routing mode (`New-SC365Connectors`)
and, where the mode needs them, the transport rules (`New-SC365Rules`). Then it
compares the tenant with what that module version creates: the inbound connector
must carry the tenant's own certificate name, `<tenant id>.<region>.seppmail.cloud`.

**What it changes.** Creates the two connectors and the mode's rules. If they
exist already with these values, nothing is created again.

**Have at hand.** Steps 1 to 3 passed on this tenant. Before step 3 has removed
the old objects, a plan-only run plans as if it had and says so; the button then
waits for step 3, and a confirmed run refuses to create beside them.

""" + CONFIRMING),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("code", '''\
from runbook import cleanup, configure, inventory
version, imported = configure.module_version(ctx.exo, ctx.params.module_version,
                                             ctx.params.confirm)
tenant_id = str(ctx.connection.get("TenantID", ""))
f"module {version}, tenant id {tenant_id}"'''),
        ("code", '''\
now = inventory.take(ctx.exo)
plan = configure.plan_step(ctx.params, now, module_version=version, tenant_id=tenant_id)
changes = [plan] if plan.create_connectors or plan.create_rules else []
waits_for = "step 3 (old SEPPmail objects remain)" if cleanup.plan(now).removals else ""
plan.summary()'''),
        ("md", "## Create, then expected against actual"),
        ("code", '''\
def compare(confirmed):             # the tenant as it is against the module's values
    after = inventory.take(ctx.exo)
    ctx.record.write_json("inventory/after.json", after.as_json())
    connectors = configure.comparison(
        plan.expected_connectors, after.inbound_connectors + after.outbound_connectors)
    rules = configure.rule_comparison(plan.expected_rules, after.transport_rules)
    show(tables.style_comparison(connectors)), show(tables.style_comparison(rules))
    return configure.verdict(plan, connectors, rules, confirmed)'''),
        ("code", '''\
def create(confirmed):              # "Apply this plan" calls it with True
    if confirmed:
        if not imported:            # planned before step 2 installed the module
            configure.module_version(ctx.exo, ctx.params.module_version, True)
        configure.apply(ctx.exo, ctx.params, plan)
    return compare(confirmed)
outcome = widgets.confirm(ctx, create, summary=plan.summary(), objects=changes,
                          waits_for=waits_for)'''),
        ("code", "ctx.conclude(*outcome.verdict)"),
    ],
    "05-verify-mailflow": [
        ("md", """\
# Step 5 — Wait for Exchange Online, confirm mail flow

**What it does.** Exchange Online takes up to ten minutes to apply new connectors,
and the message trace shows a message 5–10 minutes after it was sent. This step
reads the message trace until it sees a message received through the new inbound
connector and one sent through the new outbound connector, or until
`wait_minutes` have passed (a progress bar shows the time left). Without
`confirm = True` it looks once and does not wait.

Messages that pass the SEPPmail connectors again and again are a mail loop:
usually the recipient's tenant is on SEPPmail.cloud without CBC.

**What it changes.** Nothing.

**Have at hand.** Step 4 passed; on a real tenant, **send a test message in each
direction** (from outside to a mailbox of the tenant, and back) when it starts."""),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("code", '''\
from runbook import mailflow, seppmail
inbound = seppmail.connector_name("inbound", ctx.params.routing)
outbound = seppmail.connector_name("outbound", ctx.params.routing)
since = mailflow.connectors_created(ctx.exo, inbound)
since'''),
        ("code", '''\
status = widgets.wait_for_mail(ctx, since=since, inbound_name=inbound,
                               outbound_name=outbound)
tables.style_checks(status.frame())'''),
        ("md", """\
## A loop? Its diagnosis

When the wait saw a loop, the diagnosis of `06-diagnose-mail-loops` runs here over
the trace since the new connectors were made: this tenant first, then each looping
recipient domain. It is recorded in the run's audit and decides the verdict."""),
        ("code", '''\
from runbook import loops
diagnosis = loops.when_looping(ctx, status, since)    # None unless mail loops
for table in diagnosis.tables() if diagnosis else []:
    show(table)'''),
        ("code", '''\
flow = mailflow.step_verdict(status, since, ctx.params)
ctx.conclude(*loops.step_verdict(flow, diagnosis))'''),
    ],
    "06-diagnose-mail-loops": [
        ("md", """\
# Diagnose mail loops

**What it does.** Mail that loops after a correct migration usually means the
recipient's tenant is on SEPPmail.cloud too and has not moved to certificate-based
connectors (CBC): SEPPmail.cloud cannot tell the two tenants apart and hands the
message back. This notebook finds out whether that is the case, in three steps:

1. **This tenant first**: old SEPPmail connectors or rules still in place, the CBC
   connectors missing, disabled or carrying another tenant's certificate, an MX
   that does not fit the routing mode. Any of these is named as the cause.
2. **The loops**: the message trace of the last `window_hours` (optionally only
   `recipients` or one `message_id`); a message seen three times or more for one
   recipient loops. They are grouped by recipient domain, and the newest ones are
   read in detail for the connectors they passed and the hop limit (5.4.14).
3. **Each looping domain**: is it served by SEPPmail.cloud (its MX and gate, relay
   or mail hosts), which tenant holds it (Microsoft's public OpenID discovery
   document, as the seppmail365cloud module asks), and is that tenant ready for CBC
   (its readiness TXT record). The verdict says whose side must act, and how.

Step 5 runs the same diagnosis by itself when its wait sees a loop.

**What it changes.** Nothing. It reads the tenant, the message trace, DNS and the
discovery document, and records the diagnosis in the run's audit.

**Have at hand.** The tenant's parameters, as for the other steps; roughly when
the loop happened (the trace reaches 10 days back); if you have them, a looping
recipient's address or the Message-ID from a bounce ("hop count exceeded").

In the sandbox the defaults diagnose a migrated tenant where nothing loops. To see
a loop: `scenario = "mail-loop"`, `tenant = "northwind"`,
`domains = ["northwindtraders.ch"]`; its mail to adatum.ch goes round until the hop
limit, because adatum.ch's tenant is on SEPPmail.cloud without CBC."""),
        ("params", DIAGNOSIS_PARAMETERS),
        ("code", '''\
from runbook.notebook import open_step, show
from runbook import loops, tables, widgets
# Checks the parameters above (the diagnosis's own first) and connects.
asked = loops.request(window_hours, recipients, message_id)
ctx = widgets.interactive(open_step("{step}", widgets.reuse_tenant(globals())))
ctx'''),
        ("md", """\
## 1. This tenant's own configuration

A loop or a bounce caused here is named before any recipient is blamed."""),
        ("code", '''\
local = loops.local_findings(ctx)
loops.local_table(local)'''),
        ("md", "## 2. Looping messages, by recipient domain"),
        ("code", '''\
found = loops.trace_loops(ctx, asked)
loops.loop_table(found)'''),
        ("md", """\
## 3. Each looping domain: on SEPPmail.cloud? Which tenant? Ready for CBC?"""),
        ("code", '''\
verdicts = loops.recipient_verdicts(ctx, found)
loops.recipient_table(verdicts)'''),
        ("md", "## Verdict"),
        ("code", '''\
diagnosis = loops.Diagnosis(local, found, verdicts)
diagnosis.record_step(ctx)          # the `diagnosis` event of the audit, once
ctx.conclude(*diagnosis.verdict())'''),
    ],
    "90-rollback": [
        ("md", """\
# Rollback — undo a run

**What it does.** Puts the tenant back as it was before a run: removes the
SEPPmail objects the run created (after backing them up too) and recreates, from
the run's backup, every object its cleanup removed: connectors first, then rules
in their old priorities. Then it shows the tenant against the inventory taken
before the run.

**What it changes.** The connectors and rules listed in the plan, nothing else.

**Have at hand.** The run folder to undo, in `source_run`.

""" + CONFIRMING),
        ("params", PARAMETERS + '\nsource_run = ""                        # the run folder to undo'),
        ("code", OPEN),
        ("code", '''\
from runbook import inventory, rollback
plan = rollback.plan_for(source_run, inventory.take(ctx.exo))
show(tables.style_inventory(plan.table()))
plan.summary()'''),
        ("code", '''\
def undo(confirmed):                # "Apply this plan" calls it with True
    verdict = rollback.run(plan, record=ctx.record, exo=ctx.exo, confirmed=confirmed)
    after = inventory.take(ctx.exo)
    ctx.record.write_json("inventory/after.json", after.as_json())
    show(tables.style_inventory(rollback.compare(plan.before, after)))
    return rollback.verdict(*verdict, plan, after)
outcome = widgets.confirm(ctx, undo, summary=plan.summary(),
                          objects=plan.remove + plan.recreate)'''),
        ("code", "ctx.conclude(*outcome.verdict)"),
    ],
}


def cell(kind: str, text: str) -> dict:
    lines = text.splitlines(keepends=True)
    if kind == "md":
        return {"cell_type": "markdown", "metadata": {}, "source": lines}
    metadata = {"tags": ["parameters"]} if kind == "params" else {}
    return {"cell_type": "code", "execution_count": None, "metadata": metadata,
            "outputs": [], "source": lines}


def notebook(step: str, cells: list) -> dict:
    return {
        "cells": [cell(kind, text.replace("{step}", step)) for kind, text in cells],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python",
                           "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4, "nbformat_minor": 5,
    }


def render(step: str) -> str:
    doc = notebook(step, NOTEBOOKS[step])
    for n, c in enumerate(doc["cells"]):
        c["id"] = f"{step[:2]}-{n:02d}"
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(out: Path) -> None:
    for step in NOTEBOOKS:
        (out / f"{step}.ipynb").write_text(render(step), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else
         Path(__file__).resolve().parent.parent / "notebooks")
