"""Record normalisation, on the shapes of exchange-objects.md sections 2-4 and 8."""

from datetime import datetime, timedelta, timezone

import pytest

from runbook.powershell.records import (address_space_domain, normalise, normalise_all,
                                        parse_datetime, same_domain)

UTC = timezone.utc
# 2026-07-23T22:55:13Z: 20657 days after 1970-01-01, plus 82513 s.
WHEN = datetime(2026, 7, 23, 22, 55, 13, tzinfo=UTC)
WHEN_MS = 1_784_847_313_000

# §8: an inbound connector as PowerShell 7 serialises it.
INBOUND = {
    "Name": "[SEPPmail.cloud] Inbound-InLine",
    "Identity": "[SEPPmail.cloud] Inbound-InLine",
    "Enabled": True, "ConnectorType": "Partner", "ConnectorSource": "Default",
    "SenderDomains": ["smtp:*;1"], "SenderIPAddresses": [], "RequireTls": True,
    "RestrictDomainsToCertificate": True,
    "TlsSenderCertificateName": "5f2c1a9e.ch.seppmail.cloud", "EFSkipLastIP": True,
    "Guid": "ac4d5ab0-6637-4e91-8d47-f5c2e95c71d9",
    "WhenChangedUTC": "2026-07-23T22:55:13Z",
}

# §4 and §8: a rule head.
RULE = {"Name": "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail",
        "Priority": 0, "State": "Enabled", "Mode": "Enforce",
        "RouteMessageOutboundConnector": None, "Comments": None,
        "WhenChanged": "2026-07-23T22:55:13.0000000Z"}


def test_inbound_connector_of_section_8_keeps_everything_but_the_date():
    record = normalise(INBOUND)
    assert record["WhenChangedUTC"] == WHEN
    assert {k: v for k, v in record.items() if k != "WhenChangedUTC"} == {
        k: v for k, v in INBOUND.items() if k != "WhenChangedUTC"}


def test_seven_fractional_digits_of_dotnet_dates_are_read():
    assert normalise(RULE)["WhenChanged"] == WHEN
    moment = normalise({"Received": "2026-07-23T22:01:22.0480000Z"})["Received"]
    assert moment == datetime(2026, 7, 23, 22, 1, 22, 48000, tzinfo=UTC)


def test_normalise_returns_a_copy_and_leaves_the_input_alone():
    before = dict(INBOUND)
    normalise(INBOUND)
    assert INBOUND == before


def test_a_time_without_offset_is_taken_as_utc():
    assert normalise({"WhenCreated": "2026-07-23T22:55:13"})["WhenCreated"] == WHEN
    assert normalise({"WhenCreated": "2026-07-23 22:55:13"})["WhenCreated"] == WHEN


def test_an_offset_is_kept_and_means_the_same_instant():
    moment = normalise({"WhenCreated": "2026-07-24T00:55:13+02:00"})["WhenCreated"]
    assert moment == WHEN
    assert moment.utcoffset() == timedelta(hours=2)


def test_powershell_ms_date_form_becomes_a_datetime():
    assert normalise({"WhenCreated": f"/Date({WHEN_MS})/"})["WhenCreated"] == WHEN
    moment = normalise({"Anything": f"/Date({WHEN_MS}+0200)/"})["Anything"]
    assert moment == WHEN and moment.utcoffset() == timedelta(hours=2)


def test_token_expiry_in_its_display_form_of_section_7():
    record = normalise({"TokenExpiryTimeUTC": "9/30/2023 6:42:24 PM +00:00"})
    assert record["TokenExpiryTimeUTC"] == datetime(2023, 9, 30, 18, 42, 24,
                                                    tzinfo=UTC)


def test_any_iso_date_time_value_becomes_a_datetime_but_a_bare_date_does_not():
    record = normalise({"LastValidationTimestamp": "2026-07-23T22:55:13Z",
                        "SomethingNew": "2026-07-23T22:55:13Z",
                        "JustADay": "2026-07-23"})
    assert record == {"LastValidationTimestamp": WHEN, "SomethingNew": WHEN,
                      "JustADay": "2026-07-23"}


def test_date_fields_without_a_date_pass_unchanged():
    assert normalise({"ActivationDate": None, "ExpiryDate": "never"}) == {
        "ActivationDate": None, "ExpiryDate": "never"}


def test_free_text_that_reads_like_a_date_stays_text():
    record = normalise({"Comments": "2026-07-23T22:55:13Z", "Comment": "True",
                        "Name": "2026-07-23T22:55:13Z"})
    assert record == {"Comments": "2026-07-23T22:55:13Z", "Comment": "True",
                      "Name": "2026-07-23T22:55:13Z"}


def test_true_false_strings_in_boolean_fields_become_bool():
    record = normalise({"Enabled": "False", "RequireTls": "True", "UseMXRecord": "false",
                        "IsTransportRuleScoped": True, "State": "Enabled"})
    assert record == {"Enabled": False, "RequireTls": True, "UseMXRecord": False,
                      "IsTransportRuleScoped": True, "State": "Enabled"}


def test_integer_strings_in_integer_fields_become_int():
    record = normalise({"Priority": "3", "Size": "4711", "SetSCL": "-1",
                        "RegexSize": 0, "Mode": "12"})
    assert record == {"Priority": 3, "Size": 4711, "SetSCL": -1, "RegexSize": 0,
                      "Mode": "12"}


def test_an_integer_field_with_text_stays_text():
    assert normalise({"Priority": "high"}) == {"Priority": "high"}


def test_bare_string_where_a_list_is_expected_becomes_one_element_list():
    # [W] saw recipient lists both as an array and as a bare string (§4).
    record = normalise({"RecipientDomainIs": "contoso.ch",
                        "SenderDomainIs": ["contoso.ch", "contoso-group.ch"],
                        "SmartHosts": "contoso-ch.relay.seppmail.cloud",
                        "EFSkipIPs": "2a01:4f8::/32"})
    assert record == {"RecipientDomainIs": ["contoso.ch"],
                      "SenderDomainIs": ["contoso.ch", "contoso-group.ch"],
                      "SmartHosts": ["contoso-ch.relay.seppmail.cloud"],
                      "EFSkipIPs": ["2a01:4f8::/32"]}


def test_null_list_fields_become_empty_lists():
    # §3 outbound connector on New: RecipientDomains [] ; §4 conditions null.
    record = normalise({"RecipientDomains": None, "Conditions": None,
                        "SenderIPAddresses": []})
    assert record == {"RecipientDomains": [], "Conditions": [], "SenderIPAddresses": []}


def test_nested_records_are_normalised_too():
    record = normalise({"Connection": {"WhenCreated": "2026-07-23T22:55:13Z",
                                       "SmartHosts": None},
                        "History": [{"Priority": "1"}, "plain"]})
    assert record == {"Connection": {"WhenCreated": WHEN, "SmartHosts": []},
                      "History": [{"Priority": 1}, "plain"]}


def test_normalise_all_keeps_order_and_passes_non_records():
    assert normalise_all([RULE, "text", 7]) == [normalise(RULE), "text", 7]
    assert normalise_all([]) == []


def test_parse_datetime_refuses_what_is_not_a_date():
    assert parse_datetime("yesterday") is None
    assert parse_datetime("2026-13-45T99:99:99Z") is None
    assert parse_datetime("2/30/2026 1:00:00 PM") is None


@pytest.mark.parametrize("value, domain", [
    ("smtp:*.contoso.com;1", "*.contoso.com"),
    ("smtp:*;1", "*"),
    ("SMTP:Contoso.CH;1", "contoso.ch"),
    ("smtp:fabrikam.com;10", "fabrikam.com"),
    ("contoso.ch.", "contoso.ch"),
    ("  Contoso-Group.CH  ", "contoso-group.ch"),
])
def test_address_space_domain_strips_type_cost_case_and_trailing_dot(value, domain):
    assert address_space_domain(value) == domain


def test_address_space_of_another_type_is_refused():
    with pytest.raises(ValueError,
                       match="not an SMTP address space: 'X400:c=US;a= ;p=Contoso'"):
        address_space_domain("X400:c=US;a= ;p=Contoso")


def test_empty_address_space_is_refused():
    with pytest.raises(ValueError, match="no domain in address space 'smtp:;1'"):
        address_space_domain("smtp:;1")


def test_same_domain_matches_the_address_space_form_with_the_plain_domain():
    assert same_domain("smtp:contoso.ch;1", "Contoso.CH.")
    assert same_domain("smtp:*.contoso.com;1", "*.contoso.com")
    assert not same_domain("smtp:*.contoso.com;1", "contoso.com")
    assert not same_domain("smtp:contoso.ch;1", "contoso-group.ch")


def test_same_domain_matches_unicode_and_punycode_forms():
    assert same_domain("smtp:müller.ch;1", "xn--mller-kva.ch")


def test_the_cycle_collector_is_paused_while_records_are_built_and_restored_after():
    import gc

    from runbook.powershell.records import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():               # nested: the inner one leaves it off
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with paused_gc():
            raise ValueError("a failure inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()       # off before, off after
    finally:
        gc.enable()
