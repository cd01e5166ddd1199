"""One DNS world and the checks expected in it, served by our server and by dnsmasq.

Addresses are SEPPmail.cloud's own from seppmail365cloud.md §4 (GeoRegion.json
of 2.0.2): ch gate 86.119.35.35 and 217.20.196.81, ch relay 86.119.38.33 and
217.20.196.83, de mail 162.55.155.177, de gate 49.12.23.112. 192.0.2.0/24 is
TEST-NET-1 (RFC 5737), in no region.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

# Tenants. READY's CBC name was worked out with coreutils, independently of
# Python: printf '%s' 3f2504e0-4f89-11d3-9a0c-0305e82c3301 | sha1sum
READY_TENANT = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
READY_TXT = "f2b42af58ef2eda60ed6104e41e2aa23e42a8a6e.cbc.seppmail.cloud"
NOT_READY_TENANT = "0b7c4e1a-2d3f-4a5b-8c6d-7e8f9a0b1c2d"
SLOW_TENANT = "9d1f3c5e-7a2b-4c6d-8e0f-1a3b5c7d9e0f"  # its TXT name times out


def slow_txt() -> str:
    import hashlib

    return hashlib.sha1(SLOW_TENANT.encode()).hexdigest() + ".cbc.seppmail.cloud."


def mx(name, value):
    return {"name": name, "type": "MX", "ttl": 300, "value": value}


def a(name, address):
    return {"name": name, "type": "A", "ttl": 300, "value": address}


def txt(name, text):
    return {"name": name, "type": "TXT", "ttl": 300, "value": f'"{text}"'}


GATE = ".gate.seppmail.cloud."
RELAY = ".relay.seppmail.cloud."
MAIL = ".mail.seppmail.cloud."

WORLD = [
    # contoso.ch: inline, region ch, provisioned in full.
    mx("contoso.ch.", "10 contoso-ch.gate.seppmail.cloud."),
    a("contoso-ch" + GATE, "86.119.35.35"),
    a("contoso-ch" + RELAY, "86.119.38.33"),
    txt(READY_TXT + ".", "ready"),
    # fabrikam.com: parallel, region de; MX at Microsoft.
    mx("fabrikam.com.", "0 fabrikam-com.mail.protection.outlook.com."),
    a("fabrikam-com.mail.protection.outlook.com.", "52.101.68.10"),
    a("fabrikam-com" + MAIL, "162.55.155.177"),
    # tailspin.com: parallel with the newer per-tenant Microsoft MX form.
    mx("tailspin.com.", "0 tailspin-com.a-v1.mx.microsoft."),
    a("tailspin-com" + MAIL, "49.12.22.120"),
    # lookalike.com: "mail.protection.outlook.com" inside a foreign name.
    mx("lookalike.com.", "0 mail.protection.outlook.com.lookalike.net."),
    a("lookalike-com" + MAIL, "162.55.155.177"),
    # northwind.com: parallel set up, but the MX is the customer's own server.
    mx("northwind.com.", "10 mx.northwind.com."),
    a("northwind-com" + MAIL, "162.55.155.177"),
    # wrongmx.ch: inline set up, MX still at Microsoft.
    mx("wrongmx.ch.", "10 wrongmx-ch.mail.protection.outlook.com."),
    a("wrongmx-ch" + GATE, "86.119.35.35"),
    a("wrongmx-ch" + RELAY, "86.119.38.33"),
    # split.ch: gate and Microsoft at the same preference share the mail.
    mx("split.ch.", "10 split-ch.gate.seppmail.cloud."),
    mx("split.ch.", "10 split-ch.mail.protection.outlook.com."),
    a("split-ch" + GATE, "86.119.35.35"),
    a("split-ch" + RELAY, "86.119.38.33"),
    # multi.ch: three MX given out of order, names in mixed case.
    mx("multi.ch.", "30 backup2.multi.ch."),
    mx("multi.ch.", "10 Multi-CH.Gate.SEPPmail.cloud."),
    mx("multi.ch.", "20 backup1.multi.ch."),
    a("multi-ch" + GATE, "217.20.196.81"),
    a("multi-ch" + RELAY, "217.20.196.83"),
    # inbound.ch: gate resolves, relay does not: inline, inbound only.
    mx("inbound.ch.", "10 inbound-ch.gate.seppmail.cloud."),
    a("inbound-ch" + GATE, "217.20.196.81"),
    # unset.ch: MX already at the gate, but SEPPmail.cloud knows nothing of it.
    mx("unset.ch.", "10 unset-ch.gate.seppmail.cloud."),
    # odd.ch: gate at an address in no region's list.
    mx("odd.ch.", "10 odd-ch.gate.seppmail.cloud."),
    a("odd-ch" + GATE, "192.0.2.10"),
    a("odd-ch" + RELAY, "192.0.2.11"),
    # twoway.ch: gate at a ch and a de address; the module keeps the last
    # region in its order ch, de, prv, dev that matches (§4): de.
    mx("twoway.ch.", "10 twoway-ch.gate.seppmail.cloud."),
    a("twoway-ch" + GATE, "86.119.35.35"),
    a("twoway-ch" + GATE, "49.12.23.112"),
    a("twoway-ch" + RELAY, "86.119.38.33"),
    # nomx.ch: the domain exists (TXT) but has no MX.
    txt("nomx.ch.", "v=spf1 -all"),
    a("nomx-ch" + GATE, "86.119.35.35"),
    a("nomx-ch" + RELAY, "86.119.38.33"),
    # müller.ch, served in punycode, the form DNS carries.
    mx("xn--mller-kva.ch.", "10 xn--mller-kva-ch.gate.seppmail.cloud."),
    a("xn--mller-kva-ch" + GATE, "86.119.35.35"),
    a("xn--mller-kva-ch" + RELAY, "217.20.196.83"),
]

# Only our server can express these: dnsmasq has no null MX and cannot fail on
# purpose without forwarding to an upstream, which its tests never allow.
KNOB_WORLD = [
    mx("nullmx.ch.", "0 ."),
    {"name": "broken.ch.", "type": "SERVFAIL"},
    {"name": "slow.ch.", "type": "TIMEOUT"},
    mx("halfbroken.ch.", "10 halfbroken-ch.gate.seppmail.cloud."),
    {"name": "halfbroken-ch" + GATE, "type": "SERVFAIL"},
    {"name": slow_txt(), "type": "TIMEOUT"},
]


def case(id, domain, routing, expect, region=None, tenant_id=None, knob=False):
    return {"id": id, "domain": domain, "routing": routing, "region": region,
            "tenant_id": tenant_id, "expect": expect, "knob": knob}


CONTOSO_HOSTS = {"gate": ["86.119.35.35"], "relay": ["86.119.38.33"], "mail": []}

CASES = [
    case("contoso inline ch, CBC ready", "contoso.ch", "inline",
         dict(status="ok", mx=["10 contoso-ch.gate.seppmail.cloud"],
              preferred_mx="contoso-ch.gate.seppmail.cloud", provisioned="inline",
              region_found="ch", cbc_ready=True, hosts=CONTOSO_HOSTS, problems=[]),
         region="ch", tenant_id=READY_TENANT),
    case("fabrikam parallel de", "fabrikam.com", "parallel",
         dict(status="ok", mx=["0 fabrikam-com.mail.protection.outlook.com"],
              preferred_mx="fabrikam-com.mail.protection.outlook.com",
              provisioned="parallel", region_found="de", cbc_ready=None,
              hosts={"gate": [], "relay": [], "mail": ["162.55.155.177"]}),
         region="de"),
    case("mx.microsoft suffix counts as Microsoft", "tailspin.com", "parallel",
         dict(status="ok", preferred_mx="tailspin-com.a-v1.mx.microsoft",
              provisioned="parallel", region_found="de"), region="de"),
    case("outlook name inside a foreign domain is not Microsoft", "lookalike.com",
         "parallel", dict(status="wrong-mx", problems=["wrong-mx"])),
    case("parallel with own MX", "northwind.com", "parallel",
         dict(status="wrong-mx", preferred_mx="mx.northwind.com",
              provisioned="parallel")),
    case("inline with Microsoft MX", "wrongmx.ch", "inline",
         dict(status="wrong-mx", preferred_mx="wrongmx-ch.mail.protection.outlook.com",
              provisioned="inline", region_found="ch")),
    case("inline sharing top preference with Microsoft", "split.ch", "inline",
         dict(status="wrong-mx", preferred_mx="split-ch.gate.seppmail.cloud")),
    case("MX sorted by preference, lower case", "multi.ch", "inline",
         dict(status="ok", mx=["10 multi-ch.gate.seppmail.cloud", "20 backup1.multi.ch",
                               "30 backup2.multi.ch"],
              preferred_mx="multi-ch.gate.seppmail.cloud", region_found="ch"),
         region="ch"),
    case("gate without relay is inline inbound only", "inbound.ch", "inline",
         dict(status="ok", provisioned="inline-inbound-only", region_found="ch",
              hosts={"gate": ["217.20.196.81"], "relay": [], "mail": []}),
         region="ch"),
    case("no SEPPmail.cloud host resolves", "unset.ch", "inline",
         dict(status="not-provisioned", provisioned="none", region_found=None)),
    case("declared parallel, set up inline", "contoso.ch", "parallel",
         dict(status="routing-mismatch", provisioned="inline",
              problems=["routing-mismatch", "wrong-mx"])),
    case("declared de, gate in ch", "contoso.ch", "inline",
         dict(status="region-mismatch", region_found="ch"), region="de"),
    case("gate in no known region", "odd.ch", "inline",
         dict(status="region-mismatch", region_found=None), region="ch"),
    case("gate in no known region, none declared", "odd.ch", "inline",
         dict(status="ok", region_found=None)),
    case("gate in two regions: the last in the module's order wins", "twoway.ch",
         "inline", dict(status="ok", region_found="de",
                        hosts={"gate": ["49.12.23.112", "86.119.35.35"],
                               "relay": ["86.119.38.33"], "mail": []}), region="de"),
    case("no CBC TXT for the tenant", "contoso.ch", "inline",
         dict(status="not-cbc-ready", cbc_ready=False), region="ch",
         tenant_id=NOT_READY_TENANT),
    case("domain does not exist", "nosuch.ch", "inline",
         dict(status="no-such-domain", mx=[], preferred_mx=None, provisioned="none",
              problems=["no-such-domain", "not-provisioned"])),
    case("domain without MX", "nomx.ch", "inline",
         dict(status="no-mx", mx=[], provisioned="inline")),
    case("IDN as a person types it", "müller.ch", "inline",
         dict(status="ok", ascii="xn--mller-kva.ch", region_found="ch",
              preferred_mx="xn--mller-kva-ch.gate.seppmail.cloud"), region="ch"),
    case("IDN as Exchange shows it", "xn--mller-kva.ch", "inline",
         dict(status="ok", ascii="xn--mller-kva.ch", region_found="ch"), region="ch"),
    case("null MX", "nullmx.ch", "inline",
         dict(status="no-mx", mx=["0 ."], preferred_mx=None), knob=True),
    case("SERVFAIL for the domain", "broken.ch", "inline",
         dict(status="server-failure", mx=[], preferred_mx=None), knob=True),
    case("SERVFAIL for the gate host", "halfbroken.ch", "inline",
         dict(status="server-failure", provisioned=None, region_found=None,
              hosts={"gate": None, "relay": [], "mail": []}), knob=True),
    case("timeout for the domain is not a missing MX", "slow.ch", "inline",
         dict(status="timeout", mx=[], problems=["timeout", "not-provisioned"]),
         knob=True),
    case("timeout for the CBC TXT is not a missing TXT", "contoso.ch", "inline",
         dict(status="timeout", cbc_ready=None, problems=["timeout"]),
         region="ch", tenant_id=SLOW_TENANT, knob=True),
]


def dnsmasq_options(records: list[dict]) -> list[str]:
    """dnsmasq command-line options that serve the same MX, A and TXT records."""
    options = []
    for record in records:
        name = record["name"].rstrip(".")
        kind, value = record["type"], record.get("value", "")
        if kind == "MX":
            pref, target = value.split()
            options.append(f"--mx-host={name},{target.rstrip('.')},{pref}")
        elif kind == "A":
            options.append(f"--host-record={name},{value}")
        elif kind == "TXT":
            options.append(f"--txt-record={name},{value.strip(chr(34))}")
        else:
            raise ValueError(f"dnsmasq options cannot express {record}")
    return options


DNSMASQ = shutil.which("dnsmasq") or shutil.which("/usr/sbin/dnsmasq")


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 just now."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def start_dnsmasq(records: list[dict], port: int) -> subprocess.Popen:
    """dnsmasq on 127.0.0.1:port answering only from `records`; never forwards.

    ``--local=/#/`` makes every name local, so unknown names are NXDOMAIN; with
    ``--no-resolv`` and no ``--server`` it has no upstream at all.
    """
    command = [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", f"--port={port}",
               "--listen-address=127.0.0.1", "--bind-interfaces",
               "--conf-file=/dev/null", "--pid-file=", "--local=/#/", "--cache-size=0",
               *dnsmasq_options(records)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_until_answering(port: int, process: subprocess.Popen,
                         deadline_s: float = 5.0) -> None:
    """Poll with a real query until the server answers, or fail after the deadline."""
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query("contoso.ch.", "MX")
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"dnsmasq exited {process.returncode}: "
                               f"{process.stdout.read()}")
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
            return
        except (OSError, dns.exception.Timeout):  # not listening yet
            time.sleep(0.05)
    raise RuntimeError(f"dnsmasq did not answer on port {port} in {deadline_s} s")


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
