"""The parameter model: every rejection names the parameter, value and what is allowed."""

import pytest

from runbook.params import ParameterError, validate

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
