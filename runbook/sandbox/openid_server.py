"""Microsoft's OpenID discovery service for the sandbox's tenants, on loopback.

The runbook finds the tenant behind a recipient domain the way the
seppmail365cloud module does (seppmail365cloud.md §3.2, `runbook.openid`): it
reads ``/<domain>/.well-known/openid-configuration`` and takes the tenant GUID
from ``token_endpoint``. In the sandbox that question goes to this server,
started by the sandbox child beside its DNS server, so the client's HTTP path
is real HTTP over TCP.

Who is served: the sandbox tenant itself (its accepted domains and initial
domain) and every entry of ``state["other_tenants"]`` (docs/internals.md).
An entry names its domains in ``domain`` and/or ``domains``; its initial domain
is ``initial_domain``, else ``<name>.onmicrosoft.com``. A tenant is also found
by its own GUID, as the real service finds it.

What it answers, modelled on login.windows.net / login.microsoftonline.com:

- ``GET /<domain or id>/.well-known/openid-configuration``: the v1 document,
  endpoints under ``https://login.windows.net/<id>/``, issuer
  ``https://sts.windows.net/<id>/``;
- ``GET /<domain or id>/v2.0/.well-known/openid-configuration``: the v2
  document, endpoints under ``https://login.microsoftonline.com/<id>/``;
- a domain no tenant holds: HTTP 400 with the service's error JSON, error
  ``invalid_tenant``, code AADSTS90002;
- any other path: 404; any other method: 405.

``tenant_region_scope`` is the entry's ``region_scope``, else ``EU`` [I: the
scenario tenants are Swiss and German companies]. The URLs inside a document
are text for the client to read; nothing here or in the runbook fetches them.

Only loopback addresses may be served.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

V1_HOST = "login.windows.net"
V2_HOST = "login.microsoftonline.com"
DEFAULT_REGION_SCOPE = "EU"
_WELL_KNOWN = (".well-known", "openid-configuration")
_STOP_WAIT_S = 2.0


def tenants_of(state: dict) -> dict[str, dict]:
    """Every name the service knows (lower case) -> {"tenant_id", "region_scope"}."""
    known: dict[str, dict] = {}
    own = state.get("tenant") or {}
    if own.get("tenant_id"):
        entry = {"tenant_id": own["tenant_id"].lower(),
                 "region_scope": own.get("region_scope") or DEFAULT_REGION_SCOPE}
        names = [d.get("DomainName", "") for d in state.get("accepted_domains", [])]
        names += [own.get("initial_domain", ""), own["tenant_id"]]
        known.update({n.lower(): entry for n in names if n})
    for other in state.get("other_tenants") or []:
        entry = {"tenant_id": str(other["tenant_id"]).lower(),
                 "region_scope": other.get("region_scope") or DEFAULT_REGION_SCOPE}
        names = list(other.get("domains") or [])
        if other.get("domain"):
            names.append(other["domain"])
        initial = other.get("initial_domain") or (
            f"{other['name']}.onmicrosoft.com" if other.get("name") else "")
        names += [initial, entry["tenant_id"]]
        known.update({n.lower(): entry for n in names if n})
    return known


def document_v1(tenant_id: str, region_scope: str) -> dict:
    """The v1 discovery document of a tenant, as login.windows.net shows it."""
    base = f"https://{V1_HOST}/{tenant_id}"
    return {
        "token_endpoint": f"{base}/oauth2/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"https://{V1_HOST}/common/discovery/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token",
                                     "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": f"https://sts.windows.net/{tenant_id}/",
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/devicecode",
        "end_session_endpoint": f"{base}/oauth2/logout",
        "userinfo_endpoint": f"{base}/openid/userinfo",
        "tenant_region_scope": region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    }


def document_v2(tenant_id: str, region_scope: str) -> dict:
    """The v2.0 discovery document, as login.microsoftonline.com shows it."""
    base = f"https://{V2_HOST}/{tenant_id}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token",
                                     "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/v2.0",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "tenant_region_scope": region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "msgraph_host": "graph.microsoft.com",
    }


def unknown_tenant(name: str, now: datetime | None = None) -> dict:
    """The service's HTTP 400 body for a domain no tenant holds (AADSTS90002)."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    return {
        "error": "invalid_tenant",
        "error_description": (
            f"AADSTS90002: Tenant '{name}' not found. Check to make sure you have the"
            " correct tenant ID and are signing into the correct cloud."
            f" Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}"),
        "error_codes": [90002], "timestamp": stamp, "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://{V1_HOST}/error?code=90002",
    }


def answer(known: dict[str, dict], path: str) -> tuple[int, dict | None]:
    """Status and JSON body for one GET path (no I/O)."""
    parts = [unquote(p) for p in urlsplit(path).path.split("/")[1:]]
    if len(parts) == 3 and tuple(parts[1:]) == _WELL_KNOWN:
        build = document_v1
    elif len(parts) == 4 and parts[1] == "v2.0" and tuple(parts[2:]) == _WELL_KNOWN:
        build = document_v2
    else:
        return 404, None
    name = parts[0].strip().lower()
    tenant = known.get(name)
    if tenant is None:
        return 400, unknown_tenant(parts[0])
    return 200, build(tenant["tenant_id"], tenant["region_scope"])


class OpenIDServer:
    """A running server: `url` is ``http://HOST:PORT``; use `stop()` or `with`."""

    def __init__(self, state: dict, host: str = "127.0.0.1", port: int = 0):
        family = _loopback_family(host)
        self.known = tenants_of(state)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._lock = threading.Lock()
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family})
        self._httpd = server_class((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self.address: tuple[str, int] = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="sandbox-openid", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> "OpenIDServer":
        self._thread.start()
        log.info("sandbox OpenID discovery server listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(_STOP_WAIT_S)
        self._httpd.server_close()
        log.info("sandbox OpenID discovery server %s stopped", self.url)

    def __enter__(self) -> "OpenIDServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                status, body = answer(server.known, self.path)
                self._send(status, body)

            def do_POST(self):  # noqa: N802
                self._send(405, None)

            do_PUT = do_DELETE = do_PATCH = do_POST

            def _send(self, status: int, body: dict | None) -> None:
                data = json.dumps(body).encode("utf-8") if body is not None else b""
                with server._lock:
                    server.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "max-age=86400, private")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):  # noqa: A002 (base signature)
                log.debug("openid %s", format % args)

        return Handler


def start_openid_server(state: dict, host: str = "127.0.0.1",
                        port: int = 0) -> OpenIDServer:
    """Serve the discovery documents of `state`'s tenants on `host`:`port` (0: free).

    Raises ValueError for a host that is not a loopback address literal and
    OSError when the port is taken.
    """
    return OpenIDServer(state, host, port).start()


def _loopback_family(host: str) -> int:
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"the sandbox OpenID server needs a loopback address literal,"
                         f" not {host!r}") from exc
    if not address.is_loopback:
        raise ValueError(f"the sandbox OpenID server serves loopback only, not {host}")
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET
