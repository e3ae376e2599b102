"""Stop signals during a sweep (orchestrator/interrupt.py): the first asks Tune to stop and is
remembered, a second stops at once, and everything is put back afterwards."""

import os
import signal

import pytest

from orchestrator.interrupt import StopRequest, graceful_stop


def test_first_signal_asks_tunes_stop_handler_and_second_stops_at_once():
    """SIGTERM while Tune listens on SIGUSR1: Tune's handler runs, reason `terminated`, exit 143; then SIGINT raises."""
    asked = []
    with graceful_stop() as stop:
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # SIGINT is ours, not Tune's
        signal.signal(signal.SIGUSR1, lambda s, f: asked.append(s))  # what Tune installs when fit starts
        os.kill(os.getpid(), signal.SIGTERM)
        assert asked == [signal.SIGUSR1] and stop.reason == "terminated" and stop.exit_code == 143
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert stop.reason == "terminated"  # the first signal names the stop


def test_signal_before_tune_listens_stops_at_once_with_its_reason():
    """Before Tune has a stop handler there is nothing to stop gracefully: KeyboardInterrupt, reason kept."""
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt), graceful_stop(stop):
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.reason == "interrupted" and stop.exit_code == 130


def test_handlers_and_tunes_switch_are_restored():
    """After the sweep, SIGTERM/SIGINT/SIGUSR1 have their old handlers and TUNE_DISABLE_SIGINT_HANDLER its old value."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    switch = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    with graceful_stop():
        signal.signal(signal.SIGUSR1, lambda s, f: None)
    assert {s: signal.getsignal(s) for s in before} == before
    assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == switch
