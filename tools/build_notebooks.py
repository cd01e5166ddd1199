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

OPEN = '''\
from runbook.notebook import open_step, show
ctx = open_step("{step}", globals())   # checks the parameters above, connects
ctx'''

NOTEBOOKS = {
    "01-prerequisites": [
        ("md", """\
# Step 1 — Prerequisites

Checks, **without changing anything**, that this tenant can be moved to
certificate-based connectors (CBC):

* PowerShell 7 and ExchangeOnlineManagement 3.0.0 or later;
* the right tenant is connected and every domain is one of its accepted domains;
* inline routing covers every domain of the tenant;
* DNS: the MX fits the routing mode, SEPPmail.cloud has provisioned each domain
  in the declared region and routing mode, and has prepared the tenant for CBC.

Have at hand: the tenant name, the domains, the region and routing mode agreed
with SEPPmail.cloud. If the CBC readiness check fails, ask SEPPmail support (or
use login.seppmail.cloud → Setup → General → Customers domain: *fetch ID*, then
*set named transport*)."""),
        ("params", PARAMETERS),
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
dns.to_frame(results)'''),
        ("md", "## All checks"),
        ("code", '''\
checks += prereq.dns_checks(results)
prereq.frame(checks)'''),
        ("code", "ctx.conclude(*prereq.verdict(checks))"),
    ],
    "02-install-module": [
        ("md", """\
# Step 2 — Install the CBC-capable seppmail365cloud module

Installs seppmail365cloud **1.3.0-preview1 or later** (the first release that
creates certificate-based connectors) from the PowerShell Gallery, for the
current user, beside any older version. With `module_version` empty it takes
the newest version the gallery offers.

Changes: installs a PowerShell module on this machine (not the tenant), and only
with `confirm = True`. A real tenant's session must be restarted after
installing ExchangeOnlineManagement itself; this step does not touch that module."""),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("code", '''\
from runbook import install
plan = install.plan(ctx.exo, ctx.params.module_version)
plan.summary()'''),
        ("code", '''\
installed = install.apply(ctx.exo, plan) if ctx.params.confirm else plan.installed
installed'''),
        ("code", "ctx.conclude(*install.verdict(plan, installed, ctx.params.confirm))"),
    ],
    "03-cleanup": [
        ("md", """\
# Step 3 — Remove every old SEPPmail rule and connector

**From here until step 4 has run, mail is not encrypted by SEPPmail.cloud.**
Plan the time with the customer.

The step lists every connector and transport rule, says which ones are
SEPPmail's (current, pre-CBC, legacy-named, appliance-era `[SEPPmail]`,
leftovers) and removes those, **rules first**, after writing a backup of each
into the run folder (`backup/`). Everything else stays as it is, and the step
proves that afterwards. Connectors whose names hold `/` or `\\` cannot be
removed by PowerShell any more: the step stops before removing anything and
says what to do in the Exchange admin center; run it again afterwards.

Without `confirm = True` it only shows the plan."""),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("md", "## Inventory and plan"),
        ("code", '''\
from runbook import cleanup, inventory
before = inventory.take(ctx.exo)
ctx.record.write_json("inventory/before.json", before.as_json())
plan = cleanup.plan(before)
show(plan.table())
plan.summary()'''),
        ("md", "## Backup, remove, prove"),
        ("code", '''\
result = cleanup.run(plan, record=ctx.record, exo=ctx.exo, confirmed=ctx.params.confirm)
inventory.table(result.after.items()) if result.after else result.message'''),
        ("code", "ctx.conclude(result.status, result.message)"),
    ],
    "04-configure": [
        ("md", """\
# Step 4 — Create the CBC connectors and rules

Creates, with the seppmail365cloud module installed in step 2, the inbound and
outbound connector of the routing mode (`New-SC365Connectors`) and, where the
mode needs them, the transport rules (`New-SC365Rules`). Then it compares the
tenant with what that module version creates: the inbound connector must carry
the tenant's own certificate name, `<tenant id>.<region>.seppmail.cloud`.

If the connectors exist already with these values, nothing is created again.
Without `confirm = True` it only shows the plan and the expected values."""),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("code", '''\
from runbook import configure, inventory
version, imported = configure.module_version(ctx.exo, ctx.params.module_version,
                                             ctx.params.confirm)
tenant_id = str(ctx.connection.get("TenantID", ""))
f"module {version}, tenant id {tenant_id}"'''),
        ("code", '''\
plan = configure.plan_step(ctx.params, inventory.take(ctx.exo),
                          module_version=version, tenant_id=tenant_id)
plan.summary()'''),
        ("code", '''\
if ctx.params.confirm:
    configure.apply(ctx.exo, ctx.params, plan)'''),
        ("md", "## Expected against actual"),
        ("code", '''\
after = inventory.take(ctx.exo)
ctx.record.write_json("inventory/after.json", after.as_json())
connectors = configure.comparison(plan.expected_connectors,
                                  after.inbound_connectors + after.outbound_connectors)
connectors'''),
        ("code", '''\
rules = configure.rule_comparison(plan.expected_rules, after.transport_rules)
rules'''),
        ("code", "ctx.conclude(*configure.verdict(plan, connectors, rules, ctx.params.confirm))"),
    ],
    "05-verify-mailflow": [
        ("md", """\
# Step 5 — Wait for Exchange Online, confirm mail flow

Exchange Online takes up to ten minutes to apply new connectors, and the
message trace shows a message 5–10 minutes after it was sent. This step reads
the message trace until it sees a message received through the new inbound
connector and one sent through the new outbound connector, or until
`wait_minutes` have passed. On a real tenant, **send a test message in each
direction** (from outside to a mailbox of the tenant, and back) when it starts.

Messages that pass the SEPPmail connectors again and again are a mail loop:
usually the recipient's tenant is on SEPPmail.cloud without CBC.
This step changes nothing."""),
        ("params", PARAMETERS),
        ("code", OPEN),
        ("code", '''\
from runbook import mailflow, seppmail
inbound = seppmail.connector_name("inbound", ctx.params.routing)
outbound = seppmail.connector_name("outbound", ctx.params.routing)
since = mailflow.connectors_created(ctx.exo, inbound)
since'''),
        ("code", '''\
status = mailflow.run(ctx.exo, since=since, inbound_name=inbound, outbound_name=outbound,
                      params=ctx.params)
status.frame()'''),
        ("code", "ctx.conclude(*mailflow.step_verdict(status, since, ctx.params))"),
    ],
    "90-rollback": [
        ("md", """\
# Rollback — undo a run

Puts the tenant back as it was before a run: removes the SEPPmail objects the
run created (after backing them up too) and recreates, from the run's backup,
every object its cleanup removed: connectors first, then rules in their old
priorities. Then it shows the tenant against the inventory taken before the
run. Set `source_run` to the run folder to undo.

Without `confirm = True` it only shows the plan."""),
        ("params", PARAMETERS + '\nsource_run = ""                        # the run folder to undo'),
        ("code", OPEN),
        ("code", '''\
from runbook import inventory, rollback
plan = rollback.plan_for(source_run, inventory.take(ctx.exo))
show(plan.table())
plan.summary()'''),
        ("code", '''\
status, message = rollback.run(plan, record=ctx.record, exo=ctx.exo,
                               confirmed=ctx.params.confirm)
after = inventory.take(ctx.exo)
ctx.record.write_json("inventory/after.json", after.as_json())
rollback.compare(plan.before, after)'''),
        ("code", "ctx.conclude(*rollback.verdict(status, message, plan, after))"),
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
