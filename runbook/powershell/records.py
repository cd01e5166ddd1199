"""Output records in one shape, whichever child produced them and however.

PowerShell 7's `ConvertTo-Json` of an EXO V3 object is close to what the rest
of the runbook wants (exchange-objects.md §8), but not always: dates are
strings (ISO 8601, or `/Date(ms)/` from Windows PowerShell serialisers),
a one-element list can arrive as a bare string ([W] saw recipient lists both
ways, §4), numbers and booleans sometimes as text. `normalise` fixes those in
one place so checks and tables compare like with like:

- dates become timezone-aware `datetime` (a time without offset is UTC);
- "True"/"False" in boolean fields become bool;
- integers given as strings in integer fields become int;
- list fields always hold a list (`None` -> `[]`, `"x"` -> `["x"]`).

Free-text fields (names, comments) are never converted. Unknown keys and
values that do not parse pass through unchanged: an
inventory must show what the tenant returned rather than fail on it.
`address_space_domain` and `same_domain` compare Exchange's address-space
form (`smtp:*.contoso.com;1`, §2) with a plain domain.
"""

from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

# Keys whose values are dates (§1 WhenChanged/WhenCreated[UTC], §4 ActivationDate/
# ExpiryDate, §7 TokenExpiryTimeUTC, §11 Received/Date/StartDate/EndDate,
# §3 LastValidationTimestamp).
_DATE_SUFFIXES = ("WhenCreated", "WhenChanged", "UTC", "Received", "Date",
                  "Timestamp")

# Boolean properties of connectors, rules, domains and singletons (§2-§7).
BOOLEAN_FIELDS = frozenset({
    "Enabled", "RequireTls", "RestrictDomainsToCertificate",
    "RestrictDomainsToIPAddresses", "CloudServicesMailEnabled",
    "TreatMessagesAsInternal", "EFSkipLastIP", "EFTestMode", "UseMXRecord",
    "IsTransportRuleScoped", "RouteAllMessagesViaOnPremises", "AllAcceptedDomains",
    "SenderRewritingEnabled", "TestMode", "IsValidated", "ManuallyModified",
    "IsRuleConfigurationSupported", "UseLegacyRegex", "StopRuleProcessing",
    "DeleteMessage", "Quarantine", "IsValid", "Default", "MatchSubDomains",
    "AddressBookEnabled", "EmailOnly", "ExternallyManaged", "OutboundOnly",
    "InitialDomain", "IsCoexistenceDomain", "IsDefaultFederatedDomain",
    "IsDehydrated", "IsDefault", "EnableSafeList", "CertificateAuthentication",
    "ConnectionUsedForInbuiltCmdlets", "IsEopSession", "InboundOnly", "CBCDeployed",
    "InlineMXMatch", "MarkAsSpamSpfRecordHardFail",
})

# Int32 properties that some serialisers hand over as text (§4, §7, §11).
INTEGER_FIELDS = frozenset({"Priority", "Size", "RegexSize", "SetSCL", "PageSize"})

# Multi-valued properties (§2 inbound, §3 outbound, §4 rule conditions, §6).
LIST_FIELDS = frozenset({
    "SenderDomains", "SenderIPAddresses", "AssociatedAcceptedDomains",
    "TrustedOrganizations", "ClientHostNames", "EFUsers", "EFSkipIPs",
    "EFSkipMailGateway", "ScanAndDropRecipients", "SmartHosts", "RecipientDomains",
    "ValidationRecipients", "RecipientDomainIs", "SenderDomainIs",
    "ExceptIfRecipientDomainIs", "ExceptIfSenderDomainIs", "SenderIpRanges",
    "ExceptIfSenderIpRanges", "SentTo", "From", "ExceptIfFrom", "ExceptIfSentTo",
    "HeaderContainsWords", "ExceptIfHeaderContainsWords", "Conditions",
    "Exceptions", "Actions", "IPAllowList", "IPBlockList", "AllowedSenders",
    "AllowedSenderDomains", "ObjectClass",
})

# Free text: a comment that happens to read like a date stays the comment it is.
TEXT_FIELDS = frozenset({
    "Name", "Identity", "Id", "Comment", "Comments", "Description", "DisplayName",
    "AdminDisplayName", "Subject", "Detail", "Data", "Message", "SetHeaderValue",
})

_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_MS_DATE = re.compile(r"^/Date\((?P<ms>-?\d+)(?P<offset>[+-]\d{4})?\)/$")
# `Format-List` / ToString() form, e.g. "9/30/2023 6:42:24 PM +00:00" (§7).
_US_DATE = re.compile(
    r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4}) (?P<H>\d{1,2}):(?P<M>\d{2})"
    r"(:(?P<S>\d{2}))?( (?P<ampm>[AP]M))?( (?P<offset>[+-]\d{2}:\d{2}))?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_ADDRESS_TYPE = re.compile(r"^(?P<type>[A-Za-z0-9]+):(?P<rest>.*)$")
_COST = re.compile(r";\d+$")
_SCALARS = frozenset({type(None), bool, int, float})


def normalise(record: dict) -> dict:
    """A copy of one output record in the shape described in the module docstring."""
    # Most fields are null, a bool or a number, kept as they are unless the
    # field is a list: tested inline, as this runs for every field of a tenant.
    return {key: value if type(value) in _SCALARS and key not in LIST_FIELDS
            else _value(key, value) for key, value in record.items()}


def normalise_all(records: Iterable[Any]) -> list:
    """`normalise` over a reply's output; non-dict items pass unchanged."""
    with paused_gc():
        return [normalise(r) if isinstance(r, dict) else r for r in records]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cycle collector off while a reply's records are built.

    Decoded JSON holds no reference cycles, but each collection the new dicts
    and lists trigger walks every container still alive, the records built so
    far included: with the collector on, a tenant ten times larger cost a
    third more per object (benchmarks/bench_inventory.py). Reference counting
    still frees everything; only the cycle search waits until the end. Where
    the collector was off already (another thread pausing it), it stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_datetime(value: str) -> datetime | None:
    """An aware datetime from the date forms PowerShell prints, else None."""
    text = value.strip()
    if _ISO_DATETIME.match(text):
        return _iso(text)
    found = _MS_DATE.match(text)
    if found:
        return _ms_date(found)
    found = _US_DATE.match(text)
    if found:
        return _us_date(found)
    return None


def address_space_domain(value: str) -> str:
    """`smtp:*.contoso.com;1` -> `*.contoso.com`: lowercased, no trailing dot.

    The inbound connector's SenderDomains hold an address space: a type
    prefix and a `;cost` suffix around the domain (exchange-objects.md §2).
    Plain domains pass through the same cleaning. Raises ValueError for an
    empty value or an address space of a type other than SMTP.
    """
    text = str(value).strip()
    found = _ADDRESS_TYPE.match(text)
    if found:
        if found.group("type").lower() != "smtp":
            raise ValueError(f"not an SMTP address space: {value!r}")
        text = found.group("rest")
    domain = _COST.sub("", text).strip().rstrip(".").lower()
    if not domain:
        raise ValueError(f"no domain in address space {value!r}")
    return domain


def same_domain(a: str, b: str) -> bool:
    """True when `a` and `b` name one domain, in address-space, IDN or plain form."""
    return _ascii(address_space_domain(a)) == _ascii(address_space_domain(b))


def _ascii(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        # Not encodable as IDNA 2003 (e.g. an over-long label): compare as typed.
        return domain


def _value(key: str, value: Any) -> Any:
    # The most frequent cases first: this runs for every field of every record.
    if key in LIST_FIELDS:
        return _as_list(value)
    if isinstance(value, str):
        return value if key in TEXT_FIELDS else _text(key, value)
    if isinstance(value, dict):
        return normalise(value)
    if isinstance(value, list):
        return [normalise(v) if isinstance(v, dict) else v for v in value]
    return value


def _text(key: str, value: str) -> Any:
    if key in BOOLEAN_FIELDS and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if key in INTEGER_FIELDS and _INTEGER.match(value.strip()):
        return int(value)
    # Cheap first characters before the patterns: most text is no date.
    if (key.endswith(_DATE_SUFFIXES)
            or (value[:1].isdigit() and _ISO_DATETIME.match(value))
            or (value.startswith("/Date(") and _MS_DATE.match(value))):
        return parse_datetime(value) or value
    return value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    return [value]


def _iso(text: str) -> datetime | None:
    text = text.replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # .NET prints seven fractional digits; Python reads at most six.
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _ms_date(found: re.Match) -> datetime:
    moment = datetime.fromtimestamp(int(found.group("ms")) / 1000, timezone.utc)
    offset = found.group("offset")
    if offset:
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]),
                                         minutes=int(offset[3:5])))
        moment = moment.astimezone(zone)
    return moment


def _us_date(found: re.Match) -> datetime | None:
    hour = int(found.group("H"))
    ampm = found.group("ampm")
    if ampm:
        hour = hour % 12 + (12 if ampm == "PM" else 0)
    offset = found.group("offset") or "+00:00"
    sign = 1 if offset[0] == "+" else -1
    zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    try:
        return datetime(int(found.group("y")), int(found.group("m")),
                        int(found.group("d")), hour, int(found.group("M")),
                        int(found.group("S") or 0), tzinfo=zone)
    except ValueError:
        return None
