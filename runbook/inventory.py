"""The tenant's connectors and rules as classified records, tables and diffs.

Classification compares names exactly and case-insensitively, by prefix and
by the module's known names; never with a wildcard, so the brackets in
``[SEPPmail.cloud]`` are plain characters (seppmail365cloud.md §5.1: the
module's own ``[SEPPmail*`` patterns are regexes and wildcards).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from runbook import seppmail
from runbook.powershell.versions import Version

KINDS = ("transport_rule", "outbound_connector", "inbound_connector")
KIND_LABELS = {"inbound_connector": "inbound connector",
               "outbound_connector": "outbound connector",
               "transport_rule": "transport rule"}

# Classes, in the order the inventory table lists them.
CBC = "cbc"
PRE_CBC = "pre-cbc"
LEGACY_NAME = "legacy-name"
APPLIANCE = "appliance"
LEFTOVER = "leftover"
NOT_OURS = "not-ours"
SEPPMAIL_CLASSES = (CBC, PRE_CBC, LEGACY_NAME, APPLIANCE, LEFTOVER)

# Fields Exchange assigns (exchange-objects.md §1): never compared, never passed back.
ASSIGNED_FIELDS = frozenset({
    "Identity", "Id", "Guid", "ExchangeObjectId", "ImmutableId", "DistinguishedName",
    "WhenChanged", "WhenCreated", "WhenChangedUTC", "WhenCreatedUTC", "ExchangeVersion",
    "OrganizationId", "ObjectCategory", "ObjectClass", "OriginatingServer", "IsValid",
    "ObjectState", "DirectoryObjectVersion", "OrganizationalUnitRoot", "NameHashGuid",
    "OrganizationalUnitRootInternal", "AdminDisplayName", "CreatedBy", "LastModifiedBy",
    "RuleVersion", "Size", "RegexSize", "Description", "Conditions", "Exceptions",
    "Actions", "ManuallyModified",
})

_MODULE_VERSION = re.compile(r"version\s+(\d+\.\d+\.\d+(?:-[A-Za-z0-9]+)?)", re.I)
_NUMBERED_RULE = re.compile(r"^\[seppmail\.cloud\] - \d{3} ", re.I)
_CURRENT_CONNECTORS = {n.lower() for n in seppmail.CONNECTOR_NAMES.values()}
_CBC_VERSION = Version.parse(seppmail.CBC_MINIMUM_VERSION)


@dataclass
class Item:
    """One connector or rule with the runbook's verdict on it."""

    kind: str
    name: str
    cls: str
    reason: str
    remove: bool
    portal_only: bool = False
    obj: dict = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name.lower()}"


@dataclass
class Inventory:
    taken_at: datetime
    inbound_connectors: list[dict]
    outbound_connectors: list[dict]
    transport_rules: list[dict]

    def objects(self, kind: str) -> list[dict]:
        return getattr(self, kind + "s")

    def items(self) -> list[Item]:
        return [classify(kind, obj) for kind in KINDS for obj in self.objects(kind)]

    def seppmail_items(self) -> list[Item]:
        return [i for i in self.items() if i.cls in SEPPMAIL_CLASSES]

    def as_json(self) -> dict:
        return {"taken_at": self.taken_at.isoformat(),
                "inbound_connectors": self.inbound_connectors,
                "outbound_connectors": self.outbound_connectors,
                "transport_rules": self.transport_rules}

    @classmethod
    def from_json(cls, data: dict) -> "Inventory":
        taken = data.get("taken_at")
        return cls(taken_at=datetime.fromisoformat(taken) if taken else _now(),
                   inbound_connectors=list(data.get("inbound_connectors", [])),
                   outbound_connectors=list(data.get("outbound_connectors", [])),
                   transport_rules=list(data.get("transport_rules", [])))


def take(exo) -> Inventory:
    """Read every connector and rule of the tenant (three calls)."""
    return Inventory(taken_at=_now(), inbound_connectors=exo.inbound_connectors(),
                     outbound_connectors=exo.outbound_connectors(),
                     transport_rules=exo.transport_rules())


def module_version_of(obj: dict) -> Version | None:
    """The module version the module wrote into Comment(s), if any (§2.3)."""
    text = obj.get("Comment") or obj.get("Comments") or ""
    match = _MODULE_VERSION.search(str(text))
    if not match:
        return None
    try:
        return Version.parse(match.group(1))
    except ValueError:
        return None


def classify(kind: str, obj: dict) -> Item:
    """Which SEPPmail generation an object belongs to, and whether cleanup removes it."""
    name = str(obj.get("Name") or "")
    low = name.lower()
    portal_only = kind != "transport_rule" and ("/" in name or "\\" in name)

    def item(cls: str, reason: str) -> Item:
        return Item(kind, name, cls, reason, remove=cls in SEPPMAIL_CLASSES,
                    portal_only=portal_only and cls in SEPPMAIL_CLASSES, obj=obj)

    if low.startswith("[sc-bkp]"):
        return item(LEFTOVER, "backup copy left by Update-SC365Setup ([SC-BKP])")
    if low.startswith("temp[seppmail.cloud]"):
        return item(LEFTOVER, "temporary object left by Update-SC365Setup (temp prefix)")
    if low == seppmail.TEMP_CONNECTOR.lower():
        return item(LEFTOVER, "test connector the module's import did not delete")
    if low.startswith("[seppmail.cloud]"):
        return _classify_cloud(kind, obj, name, item)
    if low.startswith("[seppmail]"):
        return item(APPLIANCE, "appliance-era SEPPmail365 object ([SEPPmail])")
    return item(NOT_OURS, "not created by SEPPmail; left as it is")


def _classify_cloud(kind: str, obj: dict, name: str, item) -> Item:
    low = name.lower()
    if " / " in name or "->" in name or " - mx:" in low:
        return item(LEGACY_NAME, "0.9.x name (before module 1.0.0)")
    version = module_version_of(obj)
    if kind == "transport_rule":
        if not _NUMBERED_RULE.match(name):
            return item(LEGACY_NAME, "unnumbered rule name (before module 1.0.5)")
        if version is not None and version >= _CBC_VERSION:
            return item(CBC, f"created by CBC-capable module {version}")
        return item(PRE_CBC, f"created by module {version or 'before 1.3.0'} (pre-CBC)")
    if low not in _CURRENT_CONNECTORS:
        return item(LEGACY_NAME, "not a connector name the module uses today")
    if kind == "inbound_connector":
        certificate = str(obj.get("TlsSenderCertificateName") or "").lower()
        if certificate.startswith("*."):
            return item(PRE_CBC, f"wildcard sender certificate {certificate} (pre-CBC)")
        return item(CBC, f"tenant sender certificate {certificate}")
    if version is not None:
        cls = CBC if version >= _CBC_VERSION else PRE_CBC
        return item(cls, f"created by module {version}")
    return item(PRE_CBC, "no module version recorded (created before 1.3.0)")


def table(items: list[Item]) -> pd.DataFrame:
    """One row per object: SEPPmail objects first, those to remove on top."""
    rows = [{"kind": KIND_LABELS[i.kind], "name": i.name, "class": i.cls,
             "remove": i.remove, "portal only": i.portal_only, "why": i.reason,
             "enabled": _enabled(i.obj)} for i in items]
    frame = pd.DataFrame(rows, columns=["kind", "name", "class", "remove",
                                        "portal only", "enabled", "why"])
    if frame.empty:
        return frame
    order = {c: n for n, c in enumerate(SEPPMAIL_CLASSES + (NOT_OURS,))}
    frame["_order"] = frame["class"].map(order)
    frame = frame.sort_values(["_order", "kind", "name"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def comparable(obj: dict) -> dict:
    """An object's properties without the ones Exchange assigns."""
    return {k: v for k, v in obj.items() if k not in ASSIGNED_FIELDS}


def diff(before: Inventory, after: Inventory) -> pd.DataFrame:
    """Objects added, removed or changed between two inventories."""
    rows = []
    for kind in KINDS:
        old = {str(o.get("Name", "")).lower(): o for o in before.objects(kind)}
        new = {str(o.get("Name", "")).lower(): o for o in after.objects(kind)}
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            if a is None:
                rows.append(_diff_row(kind, b, "added", ""))
            elif b is None:
                rows.append(_diff_row(kind, a, "removed", ""))
            else:
                changed = _changed_properties(comparable(a), comparable(b))
                if changed:
                    rows.append(_diff_row(kind, b, "changed", ", ".join(changed)))
    return pd.DataFrame(rows, columns=["kind", "name", "change", "properties"])


def _changed_properties(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if _norm(a.get(k)) != _norm(b.get(k)))


def _norm(value):
    if value in (None, "", []):
        return None
    if isinstance(value, list):
        return sorted(str(v) for v in value)
    return value


def _diff_row(kind: str, obj: dict, change: str, properties: str) -> dict:
    return {"kind": KIND_LABELS[kind], "name": obj.get("Name", ""), "change": change,
            "properties": properties}


def _enabled(obj: dict) -> bool | None:
    if "Enabled" in obj:
        return bool(obj["Enabled"])
    if "State" in obj:
        return str(obj["State"]).lower() == "enabled"
    return None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def record_before(record, inv: Inventory, relpath: str = "inventory/before.json"
                  ) -> Inventory:
    """Keep the first inventory of a run: a resumed step 3 must not replace it,
    since rollback recreates the tenant as it was before the *run*."""
    if record.path_of(relpath).exists():
        return Inventory.from_json(record.read_json(relpath))
    record.write_json(relpath, inv.as_json())
    return inv
