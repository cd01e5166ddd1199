"""Answers each request with the line its parameter Raw gives, ID replaced by
the request's id: for replies no well-behaved child writes."""

import sys

from _proto import hello, requests

hello()
for request in requests():
    raw = (request.get("parameters") or {})["Raw"]
    sys.stdout.write(raw.replace("ID", str(request["id"])) + "\n")
    sys.stdout.flush()
