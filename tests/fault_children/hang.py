"""Sleeps `Seconds` (a parameter) before each reply; echoes `Marker` back.

A late reply for a timed-out request would carry that request's marker, so a
test can tell whether a call ever received another call's reply.
"""

import time

from _proto import hello, reply, requests, write

hello()
for request in requests():
    params = request.get("parameters") or {}
    time.sleep(min(float(params.get("Seconds", 0)), 60))
    write(reply(request, [{"Marker": params.get("Marker")}]))
