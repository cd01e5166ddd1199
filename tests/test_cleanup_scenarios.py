"""Cleanup and its undo on every scenario, through a real sandbox child (issue 6)."""

import pytest

from runbook import cleanup, inventory, rollback
from runbook.audit import RunRecord
from runbook.exchange import ExchangeOnline
from runbook.powershell import Session, sandbox_command
from runbook.sandbox import scenarios

SCENARIOS = [n for n in scenarios.names() if n != "legacy-slash"]


def _connect(state_file, record):
    declared = scenarios.declared(state_file.stem)
    session = Session(sandbox_command(state_file), timeout=60)
    exo = ExchangeOnline(session, record=record, confirmed=True, step="03-cleanup")
    exo.connect(f"{declared['tenant']}.onmicrosoft.com")
    return session, exo


def _comparable(inv):
    return {kind: sorted((inventory.comparable(o) for o in inv.objects(kind)),
                         key=lambda o: str(o.get("Name")).lower())
            for kind in inventory.KINDS}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cleanup_leaves_no_seppmail_object_and_the_backup_recreates_them(
        scenario, make_tenant, tmp_path):
    state_file = make_tenant(scenario)
    record = RunRecord.create(tmp_path / "reports", scenarios.declared(scenario)["tenant"],
                              parameters={}, operator="test")
    session, exo = _connect(state_file, record)
    try:
        before = inventory.take(exo)
        record.write_json("inventory/before.json", before.as_json())
        plan = cleanup.plan(before)
        result = cleanup.run(plan, record=record, exo=exo, confirmed=True)
        assert result.status == "succeeded", result.message
        after = inventory.take(exo)
        assert after.seppmail_items() == []
        assert cleanup.prove(before, after) == []
        assert len(result.removed) == len(before.seppmail_items())

        undo = rollback.plan(record.path, after)
        assert len(undo.recreate) == len(result.removed)
        status, message = rollback.run(undo, record=record, exo=exo, confirmed=True)
        assert status == "succeeded", message
        restored = inventory.take(exo)
    finally:
        session.close()
    assert _comparable(restored) == _comparable(before)


def test_slash_named_connectors_are_left_for_the_portal_after_everything_else(
        make_tenant, tmp_path):
    """§5.1: rename, then delete in the portal; rules go first so the portal can."""
    from runbook.sandbox import portal, state as state_mod

    state_file = make_tenant("legacy-slash")
    record = RunRecord.create(tmp_path / "reports", "tailspin", parameters={})
    session, exo = _connect(state_file, record)
    try:
        plan = cleanup.plan(inventory.take(exo))
        slashed = [i.name for i in plan.removals if i.portal_only]
        assert slashed and all("/" in n for n in slashed)
        result = cleanup.run(plan, record=record, exo=exo, confirmed=True)
        left = inventory.take(exo).seppmail_items()
    finally:
        session.close()
    assert result.status == "failed"
    assert "can only be removed by hand" in result.message
    for name in slashed:
        assert f"rename the" in result.message and repr(name) in result.message
    assert sorted(i.name for i in left) == sorted(slashed)
    assert len(result.removed) == len(plan.removals) - len(slashed)

    tenant = state_mod.load(state_file)
    for name in slashed:
        renamed = name.replace("/", "-")
        portal.rename_connector(tenant, name, renamed)
        portal.delete_connector(tenant, renamed)
    state_mod.save(state_file, tenant)
    session, exo = _connect(state_file, record)
    try:
        again = cleanup.run(cleanup.plan(inventory.take(exo)), record=record, exo=exo,
                            confirmed=True)
    finally:
        session.close()
    assert again.status == "succeeded"
    assert again.message.startswith("Nothing to remove")


def test_removal_without_a_backup_is_refused(make_tenant, tmp_path):
    from runbook.exchange import BackupMissing

    state_file = make_tenant("legacy-inline")
    session, exo = _connect(state_file, None)
    try:
        connector = [c for c in exo.inbound_connectors()
                     if c["Name"].startswith("[SEPPmail")][0]
        with pytest.raises(BackupMissing, match="no backup was written first"):
            exo.remove("inbound_connector", connector)
    finally:
        session.close()


def test_unconfirmed_facade_refuses_every_change(make_tenant):
    from runbook.exchange import NotConfirmed

    state_file = make_tenant("legacy-inline")
    before = state_file.read_bytes()
    session, exo = _connect(state_file, None)
    exo.confirmed = False
    try:
        with pytest.raises(NotConfirmed, match="needs confirmation"):
            exo.install_module("2.0.2")
        with pytest.raises(NotConfirmed):
            exo.new_sc365_connectors(domain="contoso.ch", region="ch", routing="inline")
    finally:
        session.close()
    assert state_file.read_bytes() == before


def test_failure_midway_stops_and_lists_what_was_and_was_not_removed(make_tenant,
                                                                    tmp_path):
    """Issue 6.2: someone adds a rule through the SEPPmail outbound connector
    after the plan was made; Exchange then refuses that connector's removal
    (exchange-objects.md §9 "Connectors referenced by rules"), so the step stops
    with the rules gone and both connectors still there, and says so."""
    state_file = make_tenant("legacy-parallel")
    record = RunRecord.create(tmp_path / "reports", "fabrikam", parameters={})
    session, exo = _connect(state_file, record)
    try:
        plan = cleanup.plan(inventory.take(exo))
        assert not plan.blocked
        exo.create("transport_rule", {
            "Name": "Partner route added meanwhile", "SentToScope": "NotInOrganization",
            "RouteMessageOutboundConnector": "[SEPPmail.cloud] Outbound-Parallel"})
        result = cleanup.run(plan, record=record, exo=exo, confirmed=True)
        left = sorted(i.name for i in inventory.take(exo).seppmail_items())
    finally:
        session.close()
    rules = [i.name for i in plan.removals if i.kind == "transport_rule"]
    assert len(rules) == 7
    assert result.status == "failed"
    assert [i.name for i in result.removed] == rules
    assert left == ["[SEPPmail.cloud] Inbound-Parallel",
                    "[SEPPmail.cloud] Outbound-Parallel"]
    assert result.message.startswith(
        "removing outbound connector '[SEPPmail.cloud] Outbound-Parallel' failed: ")
    assert ("Remove-OutboundConnector failed: The connector '[SEPPmail.cloud]"
            " Outbound-Parallel' can't be removed because transport rule(s) 'Partner"
            " route added meanwhile' route messages through it"
            " (RouteMessageOutboundConnector). Removed before it:") in result.message
    assert ("Removed before it: '[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud',"
            in result.message)
    assert result.message.endswith(
        "Not removed: '[SEPPmail.cloud] Outbound-Parallel',"
        " '[SEPPmail.cloud] Inbound-Parallel'.")
    index = record.read_json("backup/index.json")
    assert [e["name"] for e in index] == [i.name for i in plan.removals]


def test_resumed_cleanup_keeps_the_backup_of_what_the_first_attempt_removed(
        make_tenant, tmp_path):
    """Issue 6.2/6.3: a re-run after a stop backs up only what is left; the
    backup index must still list every object the run removed, or rollback
    would lose the first ones."""
    state_file = make_tenant("legacy-parallel")
    record = RunRecord.create(tmp_path / "reports", "fabrikam", parameters={})
    session, exo = _connect(state_file, record)
    try:
        first = cleanup.plan(inventory.take(exo))
        [route] = exo.create("transport_rule", {
            "Name": "Partner route added meanwhile", "SentToScope": "NotInOrganization",
            "RouteMessageOutboundConnector": "[SEPPmail.cloud] Outbound-Parallel"})
        assert cleanup.run(first, record=record, exo=exo, confirmed=True).status == \
            "failed"
        exo.change("Remove-TransportRule", {"Identity": route["Guid"]},
                   target=route["Name"])
        second = cleanup.run(cleanup.plan(inventory.take(exo)), record=record,
                             exo=exo, confirmed=True)
    finally:
        session.close()
    assert second.status == "succeeded", second.message
    assert [i.name for i in second.removed] == ["[SEPPmail.cloud] Outbound-Parallel",
                                                "[SEPPmail.cloud] Inbound-Parallel"]
    index = record.read_json("backup/index.json")
    assert [e["name"] for e in index] == [i.name for i in first.removals]
    assert len({e["file"] for e in index}) == 9


def test_rollback_recreates_slash_named_connectors_under_their_portal_names(
        make_tenant, tmp_path):
    """§9 "Names" / seppmail365cloud.md §5.1: New-*Connector refuses '/' and
    '\\', so the backup of a slash-named connector comes back under the name
    the portal gave it, and the rules that routed through it follow it."""
    from runbook.sandbox import portal, state as state_mod

    state_file = make_tenant("legacy-slash")
    record = RunRecord.create(tmp_path / "reports", "tailspin", parameters={})
    session, exo = _connect(state_file, record)
    try:
        before = inventory.take(exo)
        record.write_json("inventory/before.json", before.as_json())
        cleanup.run(cleanup.plan(before), record=record, exo=exo, confirmed=True)
    finally:
        session.close()
    tenant = state_mod.load(state_file)
    for name in ("[SEPPmail.cloud] SEPPmail -> ExO / MX:M365",
                 "[SEPPmail.cloud] ExO -> SEPPmail / MX:M365"):
        portal.rename_connector(tenant, name, name.replace(" / ", " - "))
        portal.delete_connector(tenant, name.replace(" / ", " - "))
    state_mod.save(state_file, tenant)

    session, exo = _connect(state_file, record)
    try:
        undo = rollback.plan(record.path, inventory.take(exo))
        status, message = rollback.run(undo, record=record, exo=exo, confirmed=True)
        restored = inventory.take(exo)
    finally:
        session.close()
    assert status == "succeeded", message
    assert undo.renamed == [
        ("[SEPPmail.cloud] ExO -> SEPPmail / MX:M365",
         "[SEPPmail.cloud] ExO -> SEPPmail - MX:M365"),
        ("[SEPPmail.cloud] SEPPmail -> ExO / MX:M365",
         "[SEPPmail.cloud] SEPPmail -> ExO - MX:M365")]
    assert message.endswith(
        "come back under the names the portal gave them:"
        " '[SEPPmail.cloud] ExO -> SEPPmail / MX:M365' as"
        " '[SEPPmail.cloud] ExO -> SEPPmail - MX:M365',"
        " '[SEPPmail.cloud] SEPPmail -> ExO / MX:M365' as"
        " '[SEPPmail.cloud] SEPPmail -> ExO - MX:M365'.")
    routes = {r["Name"]: r.get("RouteMessageOutboundConnector")
              for r in restored.transport_rules}
    assert routes["[SEPPmail.cloud] - Route incoming e-mails to SEPPmail"] == \
        "[SEPPmail.cloud] ExO -> SEPPmail - MX:M365"
    assert rollback.compare(undo.before, restored).empty
    renamed = {old.lower(): new for old, new in undo.renamed}
    for kind in inventory.KINDS:
        expected = [inventory.comparable(o) for o in before.objects(kind)]
        for o in expected:
            for key in ("Name", "RouteMessageOutboundConnector"):
                if str(o.get(key) or "").lower() in renamed:
                    o[key] = renamed[o[key].lower()]
        got = [inventory.comparable(o) for o in restored.objects(kind)]
        assert sorted(got, key=lambda o: o["Name"].lower()) == sorted(
            expected, key=lambda o: o["Name"].lower()), kind


@pytest.mark.parametrize("name", ["R" * 65, " padded rule", ""])
def test_rollback_refuses_before_removing_anything_when_a_name_cannot_come_back(name):
    """exchange-objects.md §9 "Names": a backup object whose name New-* refuses
    would leave the tenant with neither setup once the CBC objects are gone, so
    the rollback stops before its first change."""
    from runbook import rollback
    from runbook.inventory import Inventory

    plan = rollback.RollbackPlan(before=Inventory("2026-12-04T10:00:00Z", [], [], []),
                                 source="run", remove=["a created connector"],
                                 recreate=[("transport_rule", {"Name": name})])
    status, message = rollback.run(plan, record=None, exo=None, confirmed=True)
    assert status == "failed"
    assert message.startswith(f"Rollback not started: Exchange would refuse to "
                              f"recreate {name!r} (a connector or rule name holds 1 "
                              "to 64 characters, no space at either end). Nothing "
                              "was changed;")
