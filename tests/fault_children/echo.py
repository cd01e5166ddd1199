"""Well behaved: answers every request with what it was asked.

Parameters steer the reply: Output (the output list; default one record
holding the request), Errors (error records; ok is false when given),
Warnings (warning strings).
"""

from _proto import hello, reply, requests, write

hello()
for request in requests():
    params = request.get("parameters") or {}
    write(reply(request, params.get("Output", [{"request": request}]),
                errors=params.get("Errors", ()), warnings=params.get("Warnings", ())))
