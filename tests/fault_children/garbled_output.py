"""The first reply has a whole, well-ordered line with its own id whose output
is not JSON; every later request is answered as echo answers it."""

import sys

from _proto import hello, reply, requests, write

hello()
for number, request in enumerate(requests()):
    if number == 0:
        sys.stdout.write(f'{{"id": {request["id"]}, "ok": true, "output": [nonsense], '
                         '"errors": [], "warnings": [], "duration_ms": 0.1}\n')
        sys.stdout.flush()
        continue
    write(reply(request, [{"request": request}]))
