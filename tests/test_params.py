"""The parameter model: every rejection names the parameter, value and what is allowed."""

import math

import pytest

from runbook.params import ParameterError, check_files, check_number, validate

GOOD = dict(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"], region="ch",
            routing="inline")


def test_valid_parameters_keep_their_types():
    p = validate(**GOOD, tenant_id="2C4F6A8E-1B3D-4E5F-9A7B-0C1D2E3F4A5B")
    assert p.domains == ("contoso.ch", "contoso-group.ch")
    assert p.tenant_id == "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
    assert p.organization == "contoso.onmicrosoft.com"
    assert p.confirm is False and p.primary_domain == "contoso.ch"


def test_internationalised_domain_is_kept_as_typed_and_encoded_for_dns():
    p = validate(**{**GOOD, "domains": ["müller.ch"], "routing": "parallel"})
    assert p.domains == ("müller.ch",)
    assert p.ascii_domains == ("xn--mller-kva.ch",)


@pytest.mark.parametrize("name, value, allowed", [
    ("tenant", "Contoso Ltd", "lower-case letters"),
    ("tenant", 12345, "text, not int"),
    ("domains", "contoso.ch", "a list of domains"),
    ("domains", [], "a non-empty list"),
    ("domains", ["contoso.ch", "CONTOSO.CH"], "each domain once"),
    ("domains", ["contoso"], "a domain name"),
    ("domains", ["contoso.onmicrosoft.com"], "cannot be routed via SEPPmail.cloud"),
    ("domains", ["a$(whoami).ch"], "a domain name"),
    ("region", "eu", "one of ch, prv, de, dev"),
    ("routing", "Inline", "one of inline, parallel"),
    ("backend", "ssh", "one of sandbox, pwsh"),
    ("confirm", "yes", "a boolean, not text"),
    ("tenant_id", "12345", "a GUID"),
    ("module_version", "latest", "a module version"),
    ("wait_minutes", -1, "a number from 0 to 120"),
    ("wait_minutes", "10", "a number from 0 to 120"),
    ("operator", "x;rm -rf /", "a person's name"),
    ("scenario", "../etc", "a sandbox scenario name"),
])
def test_bad_value_is_refused_naming_parameter_value_and_allowed(name, value, allowed):
    with pytest.raises(ParameterError) as caught:
        validate(**{**GOOD, name: value})
    assert caught.value.name == name
    assert caught.value.value == value or caught.value.value in value
    assert allowed in caught.value.allowed
    assert f"parameter {name}=" in str(caught.value)


def test_unknown_parameter_is_refused():
    with pytest.raises(ParameterError, match="known parameters are"):
        validate(**GOOD, domian="x.ch")


def test_missing_required_parameter_is_refused():
    with pytest.raises(ParameterError, match="required"):
        validate(tenant="contoso", domains=["contoso.ch"], region="ch")


def test_domain_rejection_names_what_is_allowed_and_what_this_one_is():
    with pytest.raises(ParameterError) as caught:
        validate(**{**GOOD, "domains": ["contoso.ch", "192.168.1.10"]})
    assert str(caught.value) == (
        "parameter domains='192.168.1.10' is not allowed: a domain name such as "
        "contoso.ch: labels of 1-63 letters, digits or hyphens (no hyphen at either "
        "end), at least two labels, at most 253 characters, no wildcard, the last "
        "label not all digits (this one: an IP address, or a last label of digits "
        "only)")


@pytest.mark.parametrize("domain, this_one", [
    ("*.contoso.ch", "a wildcard; name each domain"),
    ("a" * 64 + ".ch", "IDNA refuses it: Label too long"),
    ("contoso", "a single label"),
    ("contoso.123", "an IP address, or a last label of digits only"),
    ("con toso.ch", "empty or holding white space"),
])
def test_each_domain_rule_says_which_one_was_broken(domain, this_one):
    with pytest.raises(ParameterError) as caught:
        validate(**{**GOOD, "domains": [domain]})
    assert caught.value.allowed.endswith(f"no wildcard, the last label not all digits "
                                         f"(this one: {this_one})")


def test_digits_inside_a_domain_are_still_a_domain():
    assert validate(**{**GOOD, "domains": ["365.contoso.ch", "a1.b2.ch"]}).domains == (
        "365.contoso.ch", "a1.b2.ch")


def test_papermill_number_for_text_says_to_pass_it_with_r():
    with pytest.raises(ParameterError) as caught:
        validate(**{**GOOD, "tenant": 123})
    assert str(caught.value) == ("parameter tenant=123 is not allowed: text, not int "
                                 "(with papermill, pass text with -r tenant VALUE)")


def test_list_given_as_text_is_refused_not_parsed():
    with pytest.raises(ParameterError) as caught:
        validate(**{**GOOD, "domains": '["contoso.ch"]'})
    assert caught.value.value == '["contoso.ch"]'
    assert caught.value.allowed.endswith(
        "; with papermill, pass a list with -y domains '[\"contoso.ch\"]'")


@pytest.mark.parametrize("name, value, allowed", [
    ("wait_minutes", math.nan, "a number from 0 to 120"),
    ("wait_minutes", 1e9, "a number from 0 to 120"),
    ("poll_seconds", -math.inf, "a number from 0.1 to 600"),
    ("timeout_seconds", 0, "a number from 1 to 3600"),
])
def test_check_number_judges_one_value_as_validate_does(name, value, allowed):
    with pytest.raises(ParameterError) as caught:
        check_number(name, value)
    assert (caught.value.name, caught.value.allowed) == (name, allowed)
    with pytest.raises(ParameterError) as again:
        validate(**{**GOOD, name: value})
    assert str(again.value) == str(caught.value)


def test_check_number_returns_a_float():
    assert check_number("wait_minutes", 2) == 2.0


def test_check_files_needs_the_named_files(tmp_path):
    state = tmp_path / "t.json"
    state.write_text("{}")
    check_files(validate(**GOOD, sandbox_state=str(state)))
    with pytest.raises(ParameterError) as caught:
        check_files(validate(**GOOD, sandbox_state=str(state),
                             certificate_path=str(tmp_path / "c.pfx")))
    assert str(caught.value) == (f"parameter certificate_path='{tmp_path / 'c.pfx'}' "
                                 "is not allowed: an existing certificate file")
    with pytest.raises(ParameterError) as caught:
        check_files(validate(**GOOD))
    assert caught.value.name == "sandbox_state"
    assert caught.value.allowed.startswith("a sandbox state file for the sandbox")
