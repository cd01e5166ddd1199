"""Answers the first request with a line that is not JSON."""

import sys

from _proto import hello, requests

hello()
for request in requests():
    sys.stdout.write("Get-InboundConnector: <not json>\n")
    sys.stdout.flush()
