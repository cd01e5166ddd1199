"""Answers every request with somebody else's id."""

from _proto import hello, reply, requests, write

hello()
for request in requests():
    answer = reply(request, [{"Name": "not yours"}])
    answer["id"] = request["id"] + 100
    write(answer)
