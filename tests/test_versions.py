"""Version ordering and the host verdicts of the prerequisites step."""

import pytest

from runbook.powershell.versions import EXO_KNOWN_BAD, Finding, Version, check_host

GOOD_HOST = {"pwsh": "7.5.4", "edition": "Core", "ExchangeOnlineManagement": "3.9.0",
             "seppmail365cloud": ["2.0.2", "1.3.0"]}


def levels(findings):
    return [(f.level, f.item) for f in findings]


def test_versions_sort_as_the_gallery_does():
    texts = ["2.0.2", "1.3.0", "1.2.5", "1.3.0-preview2", "1.3.10", "1.3.0-preview1",
             "2.0.0", "1.3.8"]
    assert [str(v) for v in sorted(map(Version.parse, texts))] == [
        "1.2.5", "1.3.0-preview1", "1.3.0-preview2", "1.3.0", "1.3.8", "1.3.10",
        "2.0.0", "2.0.2"]


def test_prerelease_sorts_before_its_release():
    assert Version.parse("1.3.0-preview1") < Version.parse("1.3.0")
    assert Version.parse("1.3.0-preview1") > Version.parse("1.2.5")
    assert Version.parse("1.3.0-preview1").is_prerelease
    assert not Version.parse("1.3.0").is_prerelease


def test_prerelease_labels_compare_case_insensitively_and_numeric_parts_as_numbers():
    assert Version.parse("3.2.0-Preview2") == Version.parse("3.2.0-preview2")
    assert Version.parse("7.6.0-preview.2") < Version.parse("7.6.0-preview.10")
    assert Version.parse("7.6.0-preview.10") < Version.parse("7.6.0-rc.1")


def test_missing_trailing_parts_count_as_zero():
    assert Version.parse("3.0") == Version.parse("3.0.0") == Version.parse("3.0.0.0")
    assert hash(Version.parse("3.0")) == hash(Version.parse("3.0.0"))
    assert len({Version.parse("1.3.0"), Version.parse("1.3.0.0")}) == 1


def test_text_is_kept_and_build_metadata_ignored():
    assert str(Version.parse("1.3.0-preview1")) == "1.3.0-preview1"
    assert Version.parse("7.5.4+abc") == Version.parse("7.5.4")
    assert repr(Version.parse("2.0.2")) == "Version('2.0.2')"


@pytest.mark.parametrize("text", ["", "abc", "1.", "1.2.3.4.5", "1.3.0-", "-preview1"])
def test_what_is_not_a_version_is_refused(text):
    with pytest.raises(ValueError, match="not a version"):
        Version.parse(text)


def test_parse_accepts_a_version_unchanged():
    v = Version.parse("2.0.2")
    assert Version.parse(v) is v


def test_a_good_host_has_only_ok_findings():
    assert check_host(GOOD_HOST) == [
        Finding("ok", "pwsh", "PowerShell 7.5.4 (Core)"),
        Finding("ok", "ExchangeOnlineManagement", "ExchangeOnlineManagement 3.9.0"),
        Finding("ok", "seppmail365cloud", "seppmail365cloud 2.0.2 is CBC-capable"),
    ]


def test_powershell_older_than_7_is_an_error():
    found = check_host(dict(GOOD_HOST, pwsh="6.2.7", seppmail365cloud=[]))
    assert found[0] == Finding("error", "pwsh", "PowerShell 6.2.7 is too old: "
                               "PowerShell 7 or later is required")


def test_windows_powershell_is_an_error():
    found = check_host(dict(GOOD_HOST, pwsh="5.1.22621.4391", edition="Desktop"))
    assert found[0].level == "error" and found[0].item == "pwsh"
    assert "Windows PowerShell 5.1.22621.4391 (Desktop edition)" in found[0].message


def test_unknown_powershell_version_is_an_error():
    assert check_host({"ExchangeOnlineManagement": "3.9.0"})[0] == Finding(
        "error", "pwsh", "PowerShell version unknown (None)")


def test_exchange_module_older_than_3_is_an_error():
    found = check_host(dict(GOOD_HOST, ExchangeOnlineManagement="2.0.5"))
    assert found[1] == Finding(
        "error", "ExchangeOnlineManagement", "ExchangeOnlineManagement 2.0.5 is too "
        "old: 3.0.0 or later is required (REST-based V3 module)")


def test_missing_exchange_module_is_an_error():
    found = check_host(dict(GOOD_HOST, ExchangeOnlineManagement=None))
    assert found[1].level == "error"
    assert found[1].message.startswith("ExchangeOnlineManagement is not installed")


def test_exchange_preview_of_3_0_0_is_too_old():
    found = check_host(dict(GOOD_HOST, ExchangeOnlineManagement="3.0.0-Preview1"))
    assert found[1].level == "error"


@pytest.mark.parametrize("version", sorted(EXO_KNOWN_BAD))
def test_exchange_releases_known_to_break_connecting_warn(version):
    found = check_host({"pwsh": "7.5.4", "edition": "Core",
                        "ExchangeOnlineManagement": version})
    assert levels(found) == [("ok", "pwsh"), ("warning", "ExchangeOnlineManagement")]
    assert found[1].message == f"ExchangeOnlineManagement {version}: " + (
        EXO_KNOWN_BAD[version])


def test_every_known_bad_entry_names_its_public_source():
    for why in EXO_KNOWN_BAD.values():
        assert "#" in why and "(" in why


def test_module_older_than_the_first_cbc_preview_is_an_error():
    found = check_host(dict(GOOD_HOST, seppmail365cloud=["1.2.5"]))
    assert found[2] == Finding(
        "error", "seppmail365cloud", "seppmail365cloud 1.2.5 is not CBC-capable: "
        "1.3.0-preview1 or later is needed (step 2 installs it)")


def test_the_first_cbc_preview_is_enough():
    found = check_host(dict(GOOD_HOST, seppmail365cloud=["1.3.0-preview1"]))
    assert found[2] == Finding("ok", "seppmail365cloud",
                               "seppmail365cloud 1.3.0-preview1 is CBC-capable")


def test_newest_installed_module_is_judged_whatever_the_list_order():
    found = check_host(dict(GOOD_HOST, seppmail365cloud=["1.2.5", "1.3.8"]))
    assert found[2].message == "seppmail365cloud 1.3.8 is CBC-capable"
    assert check_host(dict(GOOD_HOST, seppmail365cloud="1.3.8"))[2].level == "ok"


def test_no_module_installed_is_fine_before_step_2():
    found = check_host(dict(GOOD_HOST, seppmail365cloud=[]))
    assert found[2] == Finding("ok", "seppmail365cloud", "not installed yet; step 2 "
                               "installs a CBC-capable version")


def test_module_not_given_is_not_judged():
    found = check_host({"pwsh": "7.5.4", "edition": "Core",
                        "ExchangeOnlineManagement": "3.9.0"})
    assert [f.item for f in found] == ["pwsh", "ExchangeOnlineManagement"]


def test_module_2_0_2_on_powershell_7_4_is_an_error():
    # seppmail365cloud.md §6: 2.0.x needs PowerShell 7.5.0.
    found = check_host(dict(GOOD_HOST, pwsh="7.4.6"))
    assert found[-1] == Finding("error", "pwsh", "seppmail365cloud 2.0.2 needs "
                                "PowerShell 7.5.0 or later, not 7.4.6")


def test_module_2_0_2_with_exchange_3_8_warns_that_its_import_installs_3_9_0():
    # seppmail365cloud.md §6: 2.0.2 needs EXO 3.9.0 and installs it itself.
    found = check_host(dict(GOOD_HOST, ExchangeOnlineManagement="3.7.1",
                            seppmail365cloud=["2.0.2"]))
    assert found[-1] == Finding(
        "warning", "ExchangeOnlineManagement", "seppmail365cloud 2.0.2 needs "
        "ExchangeOnlineManagement 3.9.0 or later, not 3.7.1: its import installs it; "
        "restart the session then")


def test_module_2_0_0_needs_exchange_3_7_1():
    found = check_host(dict(GOOD_HOST, ExchangeOnlineManagement="3.6.0",
                            seppmail365cloud=["2.0.0"]))
    assert "needs ExchangeOnlineManagement 3.7.1 or later, not 3.6.0" in (
        found[-1].message)


def test_module_1_3_7_needs_powershell_7_2():
    found = check_host(dict(GOOD_HOST, pwsh="7.1.5", seppmail365cloud=["1.3.7"]))
    assert found[-1] == Finding("error", "pwsh", "seppmail365cloud 1.3.7 needs "
                                "PowerShell 7.2.0 or later, not 7.1.5")
    assert check_host(dict(GOOD_HOST, pwsh="7.1.5",
                           seppmail365cloud=["1.3.6"]))[-1].level == "ok"


def test_unreadable_module_versions_are_ignored():
    found = check_host(dict(GOOD_HOST, seppmail365cloud=["garbage", "1.3.8"]))
    assert found[2].message == "seppmail365cloud 1.3.8 is CBC-capable"
