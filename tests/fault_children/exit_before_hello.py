"""Complains on stderr and exits 1 before its hello (a missing module, say)."""

import sys

sys.stderr.write("Import-Module: The specified module 'ExchangeOnlineManagement' "
                 "was not loaded because no valid module file was found.\n")
sys.exit(1)
