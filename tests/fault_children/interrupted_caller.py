"""A notebook kernel in miniature: opens a Session on hang.py and waits in a call.

Prints the child's pid, then calls a command the child answers only after 30
seconds. The test interrupts this process with SIGINT, as Jupyter's "interrupt
kernel" does; like a kernel, it lives on after the interrupt (printing
"interrupted") until its stdin closes, so the test can look for the child
while the caller still runs.
"""

import sys
from pathlib import Path

from runbook.powershell import Session

HANG = Path(__file__).with_name("hang.py")

session = Session([sys.executable, str(HANG)], timeout=60)
print(session.pid, flush=True)
try:
    session.call("Get-TransportRule", {"Seconds": 30})
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.read()
