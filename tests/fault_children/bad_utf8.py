"""Answers with bytes that are not UTF-8."""

import sys

from _proto import hello, requests

hello()
for request in requests():
    sys.stdout.flush()
    sys.stdout.buffer.write(b'{"id": 1, "ok": true, "output": ["\xff\xfe"]}\n')
    sys.stdout.buffer.flush()
