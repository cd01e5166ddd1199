"""Starts a grandchild that sleeps, names it in the hello, then never answers."""

import subprocess
import sys
import time

from _proto import hello, requests

grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
hello(grandchild=grandchild.pid)
for request in requests():
    time.sleep(60)
