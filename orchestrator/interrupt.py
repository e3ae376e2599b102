"""SIGTERM and SIGINT stop a sweep the way Ctrl-C stops a Tune run: gracefully, state saved.

CI cancelling a job, Kubernetes evicting a pod and `ganops job cancel` send SIGTERM; a person
at a terminal sends SIGINT. Both get the same treatment (issue 15, item 3):

    SIGTERM (first)  -> reason "terminated": Tune ends its loop, saves the experiment state,
                        stops the trials; the sweep closes every open run KILLED and returns
                        what it has (exit 128 + 15 = 143)
    SIGINT (first)   -> the same with reason "interrupted" (exit 128 + 2 = 130)
    either (second)  -> KeyboardInterrupt: stop now, without waiting for Tune

How Tune is asked: `ray.tune.tune._setup_signal_catching` (Ray 2.60) installs its stop
handler on SIGINT (unless TUNE_DISABLE_SIGINT_HANDLER=1) and always on SIGUSR1. We set
TUNE_DISABLE_SIGINT_HANDLER=1 so that SIGINT is ours, and our handler calls whatever Tune
put on SIGUSR1. Before Tune listens (the first second of `fit`) there is nothing to stop
gracefully, so a signal then stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

REASONS: dict[int, str] = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}


@dataclass
class StopRequest:
    """The first stop signal this sweep received, if any."""

    signum: int | None = None

    @property
    def reason(self) -> str | None:
        return REASONS.get(self.signum) if self.signum is not None else None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (self.signum or signal.SIGINT)


@contextlib.contextmanager
def graceful_stop(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """While inside: the first SIGTERM/SIGINT asks Tune to stop gracefully and is recorded in
    the yielded StopRequest; a second raises KeyboardInterrupt. The handlers that were there
    before (Ray's own SIGTERM handler among them) and Tune's switch come back on exit.
    Outside the main thread Python cannot install handlers: nothing changes there."""
    stop = stop if stop is not None else StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    previous = {s: signal.getsignal(s) for s in watched}
    switch = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")

    def handler(signum, frame):
        if stop.signum is not None:
            log.warning("second stop signal: stopping now, without waiting for the trials")
            raise KeyboardInterrupt
        stop.signum = signum
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_handler) or tune_handler is previous[signal.SIGUSR1]:
            raise KeyboardInterrupt  # Tune is not listening yet: no trial to stop gracefully
        log.warning(
            "%s: stopping the sweep (trials keep their last checkpoint; send it again to stop at once)",
            signal.Signals(signum).name,
        )
        tune_handler(signal.SIGUSR1, frame)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if switch is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = switch
