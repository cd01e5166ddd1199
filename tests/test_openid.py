"""Tenant ID discovery (runbook.openid) against loopback servers only.

The sandbox's discovery server (runbook.sandbox.openid_server) stands in for
login.windows.net; small servers of this file play the broken cases: one that
accepts and never answers, one that answers with a body that is not a
discovery document, one that redirects. Nothing here reaches past 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbook import openid
from runbook.sandbox import openid_server, scenarios

ADATUM_ID = "4e8a2c6f-9d1b-4f3e-a5c7-2b9d0e1f6a83"       # scenarios.LOOP_PARTNER
NORTHWIND_ID = "0e2a4c6e-8f1b-4d3f-a5b7-9c1e3a5c7e9f"    # the mail-loop tenant


@pytest.fixture(scope="module")
def service():
    with openid_server.start_openid_server(scenarios.build("mail-loop")) as server:
        yield server


@pytest.fixture
def discovery(service) -> openid.Discovery:
    return openid.Discovery(service.url, timeout=2.0)


class _Canned:
    """An HTTP server on 127.0.0.1 that gives every GET the same answer."""

    def __init__(self, status: int, body: bytes, headers: dict | None = None):
        self.paths: list[str] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                canned.paths.append(self.path)
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.thread.join(2)
        self.httpd.server_close()


@pytest.fixture
def canned():
    servers = []

    def make(status: int, body: bytes, headers: dict | None = None) -> _Canned:
        servers.append(_Canned(status, body, headers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def silent():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", held
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


# -- found ----------------------------------------------------------------------


def test_tenant_id_of_another_tenants_domain_comes_from_its_token_endpoint(discovery):
    found = discovery.tenant("adatum.ch")
    assert found.tenant_id == ADATUM_ID
    assert found.token_endpoint == f"https://login.windows.net/{ADATUM_ID}/oauth2/token"
    assert found.region_scope == "EU"
    assert found.url == f"{discovery.base_url}/adatum.ch/.well-known/openid-configuration"


def test_domain_is_matched_case_insensitively(discovery):
    assert discovery.tenant_id("ADATUM.CH") == ADATUM_ID


def test_other_tenant_is_found_by_its_onmicrosoft_name(discovery):
    assert discovery.tenant_id("adatum.onmicrosoft.com") == ADATUM_ID


def test_sandbox_tenant_itself_is_served_by_each_accepted_domain(discovery):
    assert discovery.tenant_id("northwindtraders.ch") == NORTHWIND_ID
    assert discovery.tenant_id("northwind.onmicrosoft.com") == NORTHWIND_ID


def test_server_serves_the_v2_document_with_the_tenant_in_the_same_segment(service):
    connection = http.client.HTTPConnection(*service.address, timeout=2)
    connection.request("GET", "/adatum.ch/v2.0/.well-known/openid-configuration")
    response = connection.getresponse()
    document = json.loads(response.read())
    connection.close()
    assert response.status == 200
    assert document["token_endpoint"] == (
        f"https://login.microsoftonline.com/{ADATUM_ID}/oauth2/v2.0/token")
    assert document["issuer"] == f"https://login.microsoftonline.com/{ADATUM_ID}/v2.0"


def test_tenants_of_reads_domains_lists_and_initial_domains():
    state = {"tenant": {}, "other_tenants": [
        {"tenant_id": "11111111-2222-4333-8444-555555555555",
         "domains": ["a.example", "B.example"], "initial_domain": "bee.onmicrosoft.com",
         "region_scope": "NA"}]}
    known = openid_server.tenants_of(state)
    assert sorted(known) == ["11111111-2222-4333-8444-555555555555", "a.example",
                             "b.example", "bee.onmicrosoft.com"]
    assert known["b.example"] == {"tenant_id": "11111111-2222-4333-8444-555555555555",
                                  "region_scope": "NA"}


# -- unknown tenant ----------------------------------------------------------------


def test_unknown_domain_is_tenant_not_found_with_the_services_error_code(discovery):
    with pytest.raises(openid.TenantNotFound) as caught:
        discovery.tenant("nobody.example")
    error = caught.value
    assert (error.status, error.error_code, error.domain) == (400, "AADSTS90002",
                                                              "nobody.example")
    assert error.description == (
        "AADSTS90002: Tenant 'nobody.example' not found. Check to make sure you have the"
        " correct tenant ID and are signing into the correct cloud.")
    assert str(error).startswith("no Microsoft 365 tenant holds nobody.example "
                                 "(HTTP 400, AADSTS90002)")


def test_server_answers_an_unknown_domain_with_http_400_invalid_tenant(service):
    connection = http.client.HTTPConnection(*service.address, timeout=2)
    connection.request("GET", "/nobody.example/.well-known/openid-configuration")
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json; charset=utf-8"
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]


def test_wrong_path_is_an_http_error_not_a_missing_tenant(service):
    discovery = openid.Discovery(service.url + "/common", timeout=2.0)
    with pytest.raises(openid.DiscoveryHTTPError) as caught:
        discovery.tenant("adatum.ch")
    assert caught.value.status == 404
    assert caught.value.url == (f"{service.url}/common/adatum.ch/.well-known/"
                                "openid-configuration")


def test_server_refuses_other_methods_with_405(service):
    connection = http.client.HTTPConnection(*service.address, timeout=2)
    connection.request("POST", "/adatum.ch/.well-known/openid-configuration", body=b"")
    status = connection.getresponse().status
    connection.close()
    assert status == 405


# -- unreachable ------------------------------------------------------------------


def test_server_that_accepts_and_never_answers_times_out(silent):
    url, held = silent
    discovery = openid.Discovery(url, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(openid.DiscoveryUnreachable) as caught:
        discovery.tenant("adatum.ch")
    elapsed = time.monotonic() - started
    assert caught.value.timed_out is True
    assert caught.value.timeout_s == 0.3
    assert "no answer within 0.3 s" in str(caught.value)
    assert 0.25 <= elapsed < 2.0
    assert held, "the request reached the silent server"


def test_closed_port_is_unreachable_without_timing_out():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    discovery = openid.Discovery(f"http://127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(openid.DiscoveryUnreachable) as caught:
        discovery.tenant("adatum.ch")
    assert caught.value.timed_out is False
    assert "Connection refused" in caught.value.reason


# -- malformed ----------------------------------------------------------------------


def test_body_that_is_not_json_is_malformed(canned):
    server = canned(200, b"{\"token_endpoint\": ")
    with pytest.raises(openid.DiscoveryMalformed) as caught:
        openid.Discovery(server.url, timeout=2).tenant("adatum.ch")
    assert caught.value.problem == "not JSON (Expecting value at character 19)"
    assert caught.value.body == "{\"token_endpoint\": "


def test_document_without_token_endpoint_is_malformed(canned):
    server = canned(200, json.dumps({"issuer": "x"}).encode())
    with pytest.raises(openid.DiscoveryMalformed) as caught:
        openid.Discovery(server.url, timeout=2).tenant("adatum.ch")
    assert caught.value.problem == "no token_endpoint"


def test_token_endpoint_without_a_guid_segment_is_malformed(canned):
    endpoint = "https://login.windows.net/common/oauth2/token"
    server = canned(200, json.dumps({"token_endpoint": endpoint}).encode())
    with pytest.raises(openid.DiscoveryMalformed) as caught:
        openid.Discovery(server.url, timeout=2).tenant("adatum.ch")
    assert caught.value.problem == (f"token_endpoint {endpoint!r} has no tenant GUID as "
                                    "its 4th '/'-segment")


def test_json_array_is_malformed(canned):
    server = canned(200, b"[1, 2]")
    with pytest.raises(openid.DiscoveryMalformed) as caught:
        openid.Discovery(server.url, timeout=2).tenant("adatum.ch")
    assert caught.value.problem == "a JSON list, not an object"


def test_server_error_is_an_http_error_with_its_body(canned):
    server = canned(503, b"Service Unavailable")
    with pytest.raises(openid.DiscoveryHTTPError) as caught:
        openid.Discovery(server.url, timeout=2).tenant("adatum.ch")
    assert (caught.value.status, caught.value.body) == (503, "Service Unavailable")


# -- where traffic may go ----------------------------------------------------------------


def test_redirect_is_not_followed(canned):
    target = canned(200, b"{}")
    server = canned(302, b"", {"Location": f"{target.url}/elsewhere"})
    with pytest.raises(openid.DiscoveryHTTPError) as caught:
        openid.Discovery(server.url, timeout=2).tenant("adatum.ch")
    assert caught.value.status == 302
    assert target.paths == []


def test_proxy_settings_are_ignored_for_a_loopback_service(discovery, canned,
                                                           monkeypatch):
    proxy = canned(502, b"proxy")
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    fresh = openid.Discovery(discovery.base_url, timeout=2)
    assert fresh.tenant_id("adatum.ch") == ADATUM_ID
    assert proxy.paths == []


@pytest.mark.parametrize("base", ["http://login.windows.net", "http://192.0.2.1:8080",
                                  "ftp://127.0.0.1", "127.0.0.1:80",
                                  "https://login.windows.net/?x=1"])
def test_base_url_that_is_not_https_or_loopback_http_is_refused(base):
    with pytest.raises(ValueError):
        openid.Discovery(base)


def test_module_base_url_builds_the_modules_discovery_address():
    discovery = openid.Discovery()
    assert discovery.url_for("Müller.ch") == (
        "https://login.windows.net/xn--mller-kva.ch/.well-known/openid-configuration")


@pytest.mark.parametrize("domain", ["adatum.ch/../x", "a b.ch", "localhost", ""])
def test_domain_that_is_not_a_domain_never_reaches_a_url(discovery, domain):
    with pytest.raises(ValueError):
        discovery.url_for(domain)


def test_zero_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout must be positive, not 0"):
        openid.Discovery("http://127.0.0.1:1", timeout=0)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "localhost"])
def test_openid_server_listens_on_loopback_only(host):
    with pytest.raises(ValueError):
        openid_server.start_openid_server({}, host=host)
