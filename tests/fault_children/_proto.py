"""The well-behaved half of protocol 1, shared by the misbehaving children."""

import json
import os
import sys

# The protocol is UTF-8 whatever the locale of the test machine says.
sys.stdin.reconfigure(encoding="utf-8")
sys.stdout.reconfigure(encoding="utf-8")


def write(message: dict) -> None:
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def hello(protocol: int = 1, **extra) -> None:
    write({"hello": "runbook-bridge", "protocol": protocol, "host": "fault",
           "versions": {"pwsh": "7.5.4", "edition": "Core",
                        "ExchangeOnlineManagement": "3.9.0", "seppmail365cloud": []},
           "pid": os.getpid(), **extra})


def requests():
    """Each request line from stdin, parsed, until stdin closes."""
    for line in sys.stdin:
        yield json.loads(line)


def reply(request: dict, output=None, *, errors=(), warnings=()) -> dict:
    return {"id": request["id"], "ok": not errors,
            "output": [] if output is None else output,
            "errors": list(errors), "warnings": list(warnings), "duration_ms": 0.1}
