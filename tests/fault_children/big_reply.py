"""Answers with `Megabytes` MB of records holding umlauts, CJK and emoji."""

from _proto import hello, reply, requests, write

RECORD_TEXT = "Grüße aus Zürich – 東京 – 🙂 " * 8

hello()
for request in requests():
    megabytes = float((request.get("parameters") or {}).get("Megabytes", 1))
    count = int(megabytes * 1_000_000 / (len(RECORD_TEXT.encode()) + 40))
    write(reply(request, [{"Index": i, "Comment": RECORD_TEXT} for i in range(count)]))
