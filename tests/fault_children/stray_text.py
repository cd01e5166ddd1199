"""Prints a warning as plain text on stdout before its reply."""

import sys

from _proto import hello, reply, requests, write

hello()
for request in requests():
    sys.stdout.write("WARNING: The names of some imported commands include "
                     "unapproved verbs.\n")
    write(reply(request, []))
