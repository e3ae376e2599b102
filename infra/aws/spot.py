"""Notice of a spot reclaim, read from the instance metadata service (IMDSv2).

EC2 announces a spot interruption two minutes ahead at `/latest/meta-data/spot/instance-action`
(404 until then; then `{"action": "terminate" | "stop" | "hibernate", "time": "..."}`). IMDSv2
wants a session token first (PUT `/latest/api/token`), and the launcher config requires v2.
The training loop (trainers/loop.py) runs a watcher on spot nodes and checkpoints at once when
a notice comes, so the restart on another node loses seconds, not an eval interval.

Standard library only: this runs inside every training worker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

IMDS = "http://169.254.169.254"
ENDPOINT_ENV = "GANOPS_IMDS_ENDPOINT"  # set it to watch anywhere (tests: a fake IMDS on 127.0.0.1)
TOKEN_TTL_S = 21600
# The metadata service is link-local: a proxy from HTTP(S)_PROXY cannot reach it, and one that
# answered would see the session token. So no proxy, whatever the environment says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def instance_action(endpoint: str = IMDS, timeout: float = 1.0) -> dict | None:
    """The pending spot action, or None when there is none (404). Raises OSError when the
    metadata service cannot be reached."""
    put = urllib.request.Request(
        f"{endpoint}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)}
    )
    with _NO_PROXY.open(put, timeout=timeout) as r:
        token = r.read().decode()
    get = urllib.request.Request(
        f"{endpoint}/latest/meta-data/spot/instance-action", headers={"X-aws-ec2-metadata-token": token}
    )
    try:
        with _NO_PROXY.open(get, timeout=timeout) as r:
            return json.loads(r.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


class InterruptionWatcher:
    """Polls `instance_action` every `interval` seconds in a daemon thread; `notice` holds the
    first notice seen and `noticed` is set then. Stops polling after a notice or `stop()`."""

    def __init__(self, endpoint: str = IMDS, interval: float = 5.0) -> None:
        self.endpoint, self.interval = endpoint, interval
        self.noticed = threading.Event()
        self.notice: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="spot-watcher")

    def start(self) -> "InterruptionWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                action = instance_action(self.endpoint)
                failures = 0
            except OSError as e:
                failures += 1
                if failures == 3:  # say it once; keep trying (IMDS hiccups are transient)
                    log.warning("spot watcher: instance metadata at %s unreachable (%s)", self.endpoint, e)
                action = None
            if action is not None:
                self.notice = action
                self.noticed.set()
                log.warning("spot interruption notice: %s", action)
                return
            self._stop.wait(self.interval)


def watcher_for_this_node(node_labels: dict) -> InterruptionWatcher | None:
    """A started watcher on a spot node (label `ganops.io/market: spot`) or wherever
    GANOPS_IMDS_ENDPOINT is set; None elsewhere (this machine: no metadata service to ask)."""
    from infra.labels import LABEL_MARKET

    market = node_labels.get(LABEL_MARKET)
    if isinstance(market, (list, tuple)):
        market = market[0] if market else None
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint is None and market != "spot":
        return None
    interval = float(os.environ.get("GANOPS_IMDS_POLL_S", "5"))
    return InterruptionWatcher(endpoint or IMDS, interval).start()
