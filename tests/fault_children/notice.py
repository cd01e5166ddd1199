"""Well behaved, and tells the person something on stderr while it works."""

import sys

from _proto import hello, reply, requests, write

hello()
for request in requests():
    sys.stderr.write("runbook-notice: To sign in, use a web browser to open the page "
                     "https://microsoft.com/devicelogin and enter the code ABCD1234.\n")
    sys.stderr.write("some diagnostic the person does not need\n")
    sys.stderr.flush()
    write(reply(request, []))
