"""Ctrl-C held back while a record is written, and raised right after.

A run's record is written in small steps: run.json, then the event that
says the same (`runbook.audit`), the outcome, then the seal. A Ctrl-C that
lands between two of them leaves a record whose files disagree, which
`verify` fails and `resume` refuses. Inside `held()` a SIGINT is only noted;
when the outermost `held()` ends, it is raised as the KeyboardInterrupt it
would have been. Only the main thread receives signals, so elsewhere (and
where a handler from outside Python is installed) `held()` changes nothing.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_state = {"depth": 0, "caught": False}


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT back for the block; nested blocks hold it until the outermost
    ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"]:
        _state["depth"] += 1
        try:
            yield
        finally:
            _state["depth"] -= 1
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:        # installed outside Python: cannot be put back
        yield
        return
    _state.update(depth=1, caught=False)
    signal.signal(signal.SIGINT, _note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state["depth"] = 0
    if _state["caught"]:
        _state["caught"] = False
        raise KeyboardInterrupt


def _note(_number, _frame) -> None:
    _state["caught"] = True
