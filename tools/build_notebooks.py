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
by PowerShell any more: the step then stops before removing anything and says
what to do in the Exchange admin center; run it again afterwards.

**Have at hand.** Steps 1 and 2 passed; the customer's agreement to the time
without encryption; access to the Exchange admin center for slash-named
connectors.

""" + CONFIRMING),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("md", "## Inventory and plan"),
        ("code", '''\
from runbook import cleanup, inventory
before = inventory.take(ctx.exo)
ctx.record.write_json("inventory/before.json", before.as_json())
plan = cleanup.plan(before)
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
        ("code", "ctx.conclude(*mailflow.step_verdict(status, since, ctx.params))"),
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
