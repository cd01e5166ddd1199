"""Answers like echo, but with a reply's members in reverse protocol order
(JSON objects are unordered; the relay must not depend on the order)."""

from _proto import hello, reply, requests, write

hello()
for request in requests():
    params = request.get("parameters") or {}
    message = reply(request, params.get("Output", [{"request": request}]),
                    errors=params.get("Errors", ()), warnings=params.get("Warnings", ()))
    write(dict(reversed(list(message.items()))))
