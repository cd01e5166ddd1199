"""Starts a reply, then exits 3 before finishing the line."""

import os
import sys

from _proto import hello, requests

hello()
for request in requests():
    sys.stdout.write('{"id": %d, "ok": true, "output": [{"Na' % request["id"])
    sys.stdout.flush()
    os._exit(3)
