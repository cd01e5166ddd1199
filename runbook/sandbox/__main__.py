"""`python -m runbook.sandbox --state FILE`: the sandbox tenant's child program."""

import sys

from .server import main

sys.exit(main())
