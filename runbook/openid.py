"""A domain's Microsoft 365 tenant ID, from Microsoft's public OpenID discovery document.

This is what the seppmail365cloud module's Get-SC365TenantId does
(seppmail365cloud.md §3.2): GET ``<base>/<domain>/.well-known/openid-configuration``
and take the 4th ``/``-segment of ``token_endpoint``, a GUID. No Exchange session
and no sign-in are needed, so it works for any domain, the recipients' included.
The base URL is the module's, ``https://login.windows.net``; the sandbox and the
tests point it at a loopback server (`runbook.sandbox.openid_server`).

The errors, one tree::

    OpenIDError                 base; .domain and .url
    ├── DiscoveryUnreachable    no HTTP answer: refused, no route, TLS, timeout
    ├── TenantNotFound          HTTP 400 AADSTS90002 / invalid_tenant: no tenant
    │                           holds this domain
    ├── DiscoveryHTTPError      any other HTTP status (404 for a wrong base URL,
    │                           5xx, a redirect, which is never followed)
    └── DiscoveryMalformed      HTTP 200 but not a discovery document: not JSON,
                                no token_endpoint, no GUID where the tenant goes

urllib's exceptions become these at one place, `Discovery._fetch`, with the
cause chained. A domain is checked (`runbook.seppmail.ascii_domain`) before it
is put into a URL, so the URL only ever holds letters, digits, '-' and '.'.

Known limit: `timeout` bounds connecting and each read; a server that trickles
bytes can take up to twice `timeout` before the read-time check stops it.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from runbook import seppmail

log = logging.getLogger(__name__)

MODULE_BASE_URL = "https://login.windows.net"  # §3.2, what the module asks
DEFAULT_TIMEOUT_S = 10.0
MAX_DOCUMENT_BYTES = 256 * 1024  # a real document is about 2 KB
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                   re.IGNORECASE)
_SHOWN_BODY = 300


class OpenIDError(RuntimeError):
    """Base of every error raised by `runbook.openid`."""

    def __init__(self, message: str, *, domain: str, url: str):
        self.domain = domain
        self.url = url
        super().__init__(message)


class DiscoveryUnreachable(OpenIDError):
    """No HTTP answer from the discovery service; `timed_out`: time ran out."""

    def __init__(self, *, domain: str, url: str, reason: str, timed_out: bool,
                 timeout_s: float):
        self.reason = reason
        self.timed_out = timed_out
        self.timeout_s = timeout_s
        what = f"no answer within {timeout_s:g} s" if timed_out else reason
        super().__init__(f"tenant ID of {domain}: the OpenID discovery service at "
                         f"{url} cannot be reached ({what}); check the network or "
                         "proxy and try again", domain=domain, url=url)


class TenantNotFound(OpenIDError):
    """The service says no Microsoft 365 / Entra tenant holds this domain."""

    def __init__(self, *, domain: str, url: str, status: int, error_code: str,
                 description: str):
        self.status = status
        self.error_code = error_code
        self.description = description
        super().__init__(f"no Microsoft 365 tenant holds {domain} (HTTP {status}, "
                         f"{error_code}): {description}", domain=domain, url=url)


class DiscoveryHTTPError(OpenIDError):
    """An HTTP status other than 200, or a 400 that is not the unknown-tenant one."""

    def __init__(self, *, domain: str, url: str, status: int, body: str):
        self.status = status
        self.body = body
        super().__init__(f"tenant ID of {domain}: {url} answered HTTP {status}"
                         f"{_excerpt(body)}; check the base URL", domain=domain, url=url)


class DiscoveryMalformed(OpenIDError):
    """HTTP 200, but the body is not a discovery document with a tenant GUID."""

    def __init__(self, *, domain: str, url: str, problem: str, body: str):
        self.problem = problem
        self.body = body
        super().__init__(f"tenant ID of {domain}: {url} did not return a discovery "
                         f"document: {problem}{_excerpt(body)}", domain=domain, url=url)


@dataclass(frozen=True)
class TenantInfo:
    """What the discovery document says about the tenant holding a domain."""

    domain: str
    tenant_id: str
    token_endpoint: str
    region_scope: str | None
    url: str


class Discovery:
    """Tenant ID look-ups against one OpenID discovery service.

    `base_url` is ``https://login.windows.net`` for a real tenant, or the
    sandbox child's announced ``http://127.0.0.1:PORT``. Plain http is refused
    for anything but a loopback address, and so is a proxy for loopback:
    traffic meant for the sandbox never leaves the machine. Redirects are not
    followed (DiscoveryHTTPError), for the same reason.
    """

    def __init__(self, base_url: str = MODULE_BASE_URL, *,
                 timeout: float = DEFAULT_TIMEOUT_S):
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.base_url = _checked_base(base_url)
        self.timeout = float(timeout)
        loopback = _is_loopback(urllib.parse.urlsplit(self.base_url).hostname)
        proxies = urllib.request.ProxyHandler({} if loopback else None)
        self._opener = urllib.request.build_opener(proxies, _NoRedirect())

    def url_for(self, domain: str) -> str:
        """The discovery URL for `domain` (raises ValueError for a non-domain)."""
        name = seppmail.ascii_domain(domain)
        return f"{self.base_url}/{name}/.well-known/openid-configuration"

    def tenant(self, domain: str) -> TenantInfo:
        """The tenant that holds `domain`; raises an `OpenIDError` subclass."""
        url = self.url_for(domain)
        started = time.monotonic()
        status, body = self._fetch(domain, url)
        log.info("OpenID discovery %s: HTTP %s in %.0f ms", domain, status,
                 (time.monotonic() - started) * 1000)
        if status != 200:
            raise _status_error(domain, url, status, body)
        return _parse(domain, url, body)

    def tenant_id(self, domain: str) -> str:
        return self.tenant(domain).tenant_id

    # -- the one boundary where urllib's errors become ours -----------------

    def _fetch(self, domain: str, url: str) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, self._read(response, deadline, domain, url)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, self._read(exc, deadline, domain, url)
        except http.client.HTTPException as exc:  # a reply that is not HTTP at all
            raise DiscoveryUnreachable(domain=domain, url=url, timed_out=False,
                                       reason=f"no valid HTTP answer ({exc!r})",
                                       timeout_s=self.timeout) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            timed_out = isinstance(reason, TimeoutError) or "timed out" in str(reason)
            raise DiscoveryUnreachable(domain=domain, url=url, reason=str(reason),
                                       timed_out=timed_out,
                                       timeout_s=self.timeout) from exc

    def _read(self, response, deadline: float, domain: str, url: str) -> str:
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise DiscoveryUnreachable(domain=domain, url=url,
                                           reason="the answer came too slowly",
                                           timed_out=True, timeout_s=self.timeout)
            chunk = response.read(16384)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_DOCUMENT_BYTES:
                raise DiscoveryMalformed(domain=domain, url=url, body="",
                                         problem=f"more than {MAX_DOCUMENT_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect comes back as its own HTTP status instead of being followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _status_error(domain: str, url: str, status: int, body: str) -> OpenIDError:
    """400 with AADSTS90002 (invalid_tenant) is the unknown tenant; the rest is HTTP."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status in (400, 404) and isinstance(data, dict):
        codes = data.get("error_codes") or []
        description = str(data.get("error_description") or "")
        if data.get("error") == "invalid_tenant" or 90002 in codes \
                or description.startswith("AADSTS90002"):
            return TenantNotFound(domain=domain, url=url, status=status,
                                  error_code="AADSTS90002",
                                  description=description.split(" Trace ID:")[0])
    return DiscoveryHTTPError(domain=domain, url=url, status=status, body=body)


def _parse(domain: str, url: str, body: str) -> TenantInfo:
    def malformed(problem: str) -> DiscoveryMalformed:
        return DiscoveryMalformed(domain=domain, url=url, problem=problem, body=body)

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise malformed(f"not JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(data, dict):
        raise malformed(f"a JSON {type(data).__name__}, not an object")
    endpoint = data.get("token_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise malformed("no token_endpoint")
    # §3.2: the 4th '/'-segment: https: / '' / host / <tenant id> / oauth2 / ...
    segments = endpoint.split("/")
    candidate = segments[3] if len(segments) > 3 else ""
    if not _GUID.match(candidate):
        raise malformed(f"token_endpoint {endpoint!r} has no tenant GUID as its "
                        "4th '/'-segment")
    region = data.get("tenant_region_scope")
    return TenantInfo(domain=domain, tenant_id=candidate.lower(), token_endpoint=endpoint,
                      region_scope=region if isinstance(region, str) else None, url=url)


def _checked_base(base_url: str) -> str:
    parts = urllib.parse.urlsplit(str(base_url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the OpenID base URL must be http(s)://HOST[:PORT], "
                         f"not {base_url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"the OpenID base URL takes no query, fragment or login: "
                         f"{base_url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"plain http is only for a loopback server, not {base_url!r}; "
                         "use https")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"),
                                    "", ""))


def _is_loopback(host: str | None) -> bool:
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _excerpt(body: str) -> str:
    text = " ".join(body.split())
    if not text:
        return ""
    return f": {text[:_SHOWN_BODY]}" + ("…" if len(text) > _SHOWN_BODY else "")
