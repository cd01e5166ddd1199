"""Ctrl-C held back while a record is written (runbook.interrupts)."""

import os
import signal
import threading

import pytest

from runbook import interrupts


def test_a_sigint_inside_is_raised_when_the_outermost_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            with interrupts.held():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("inner")
            done.append("outer")        # the inner block's end raises nothing
    assert done == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_sigint_nothing_is_raised_and_the_handler_is_put_back():
    with interrupts.held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(ValueError):
        with interrupts.held():
            raise ValueError("a failure inside")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_nothing_is_held():
    seen = []

    def worker():
        with interrupts.held():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]


def test_a_record_written_under_a_sigint_stays_consistent(tmp_path):
    from runbook.audit import RunRecord, verify

    record = RunRecord.create(tmp_path / "reports", "contoso",
                              parameters={"tenant": "contoso"}, backend="sandbox")
    update = RunRecord._update_run_locked

    def interrupted_update(self, changes):
        # The Ctrl-C lands between run.json and the event that says the same.
        update(self, changes)
        os.kill(os.getpid(), signal.SIGINT)

    RunRecord._update_run_locked = interrupted_update
    try:
        with pytest.raises(KeyboardInterrupt):
            record.step_started("01-prerequisites", "notebooks/01-prerequisites.ipynb")
    finally:
        RunRecord._update_run_locked = update
    assert [e["kind"] for e in record.events()][-1] == "step-started"
    record.step_finished("01-prerequisites", "failed",
                         error={"cell": None, "ename": "KeyboardInterrupt",
                                "evalue": "stopped"})
    record.finish("cancelled")
    assert verify(record.path).ok
