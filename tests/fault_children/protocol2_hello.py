"""Says hello in protocol 2, which this client does not speak."""

import sys

from _proto import hello

hello(protocol=2)
sys.stdin.read()
