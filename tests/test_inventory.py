"""Classification of connectors and rules (issue 6.1), names compared literally."""

import pytest

from runbook import inventory
from runbook.inventory import classify

TID = "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"


@pytest.mark.parametrize("kind, obj, cls", [
    ("inbound_connector", {"Name": "[SEPPmail.cloud] Inbound-InLine",
                           "TlsSenderCertificateName": "*.ch.seppmail.cloud"}, "pre-cbc"),
    ("inbound_connector", {"Name": "[seppmail.cloud] inbound-inline",
                           "TlsSenderCertificateName": f"{TID}.ch.seppmail.cloud"}, "cbc"),
    ("outbound_connector", {"Name": "[SEPPmail.cloud] Outbound-Parallel",
                            "Comment": "Created with SEPPmail365cloud PowerShell Module "
                                       "version 2.0.2 on 2026-12-04"}, "cbc"),
    ("outbound_connector", {"Name": "[SEPPmail.cloud] Outbound-Parallel",
                            "Comment": "Created with SEPPmail365cloud PowerShell Module "
                                       "version 1.2.5 on 2022-11-01"}, "pre-cbc"),
    ("outbound_connector", {"Name": "[SEPPmail.cloud] Outbound-InLine"}, "pre-cbc"),
    ("inbound_connector", {"Name": "[SEPPmail.cloud] SEPPmail -> ExO / MX:SEPPmail"},
     "legacy-name"),
    ("outbound_connector", {"Name": "[SEPPmail.cloud] ExO - SEPPmail - MX:M365"},
     "legacy-name"),
    ("transport_rule", {"Name": "[SEPPmail.cloud] - Route incoming e-mails to SEPPmail"},
     "legacy-name"),
    ("transport_rule", {"Name": "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail",
                        "Comments": "Created with SEPPmail365cloud PowerShell Module "
                                    "version 1.2.5 on 2022-11-01"}, "pre-cbc"),
    ("transport_rule", {"Name": "[SEPPmail.cloud] - 060 Add header X-SM-ruleversion",
                        "Comments": "Created with SEPPmail365cloud PowerShell Module "
                                    "version 1.3.0-preview1 on 2022-12-20"}, "cbc"),
    ("transport_rule", {"Name": "[SEPPmail] - Route incoming e-mails to SEPPmail"},
     "appliance"),
    ("inbound_connector", {"Name": "[SEPPmail] Appliance"}, "appliance"),
    ("outbound_connector", {"Name": "[SC-BKP] Outbound-InLine"}, "leftover"),
    ("outbound_connector", {"Name": "temp[SEPPmail.cloud] Outbound-InLine"}, "leftover"),
    ("inbound_connector", {"Name": "[SEPPmail.cloud] TempConnector EX505293"}, "leftover"),
    ("inbound_connector", {"Name": "Inbound from 9f8e7d6c"}, "not-ours"),
    # A wildcard [SEPPmail*] would be a character class matching "S..."; we compare literally.
    ("transport_rule", {"Name": "SEPPmail disclaimer"}, "not-ours"),
    ("transport_rule", {"Name": "Spam filter S"}, "not-ours"),
])
def test_object_is_classified_by_its_literal_name(kind, obj, cls):
    item = classify(kind, obj)
    assert item.cls == cls
    assert item.remove is (cls != "not-ours")


def test_slash_named_connector_is_portal_only_but_a_rule_is_not():
    item = classify("inbound_connector", {"Name": "[SEPPmail.cloud] SEPPmail -> ExO / MX:M365"})
    assert item.portal_only
    rule = classify("transport_rule", {"Name": "[SEPPmail.cloud] - a/b"})
    assert not rule.portal_only


def test_diff_marks_added_removed_and_changed_ignoring_assigned_fields():
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    before = inventory.Inventory(now, [{"Name": "A", "Enabled": True, "Guid": "1"}],
                                 [{"Name": "Gone"}], [])
    after = inventory.Inventory(now, [{"Name": "A", "Enabled": False, "Guid": "2"}], [],
                                [{"Name": "New rule", "Priority": 0}])
    frame = inventory.diff(before, after)
    assert sorted(map(tuple, frame[["name", "change", "properties"]].values)) == [
        ("A", "changed", "Enabled"), ("Gone", "removed", ""), ("New rule", "added", "")]


def test_table_lists_removals_before_objects_left_alone():
    items = [classify("transport_rule", {"Name": "Disclaimer"}),
             classify("inbound_connector", {"Name": "[SEPPmail] X"})]
    frame = inventory.table(items)
    assert list(frame["name"]) == ["[SEPPmail] X", "Disclaimer"]
    assert list(frame["remove"]) == [True, False]
