"""Starts, writes its pid to the file named by its argument, then never says hello.

It reads nothing and writes nothing on stdout; it gives up by itself after a
minute so that a broken test cannot leave it behind for long.
"""

import os
import sys
import time
from pathlib import Path

Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(60)
