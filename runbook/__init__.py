"""SEPPmail.cloud CBC migration runbook: the helper package the notebooks call."""

__version__ = "0.1.0"
