"""`ganops ui` starts a real MLflow UI on 127.0.0.1 over the sweep's store."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient

from orchestrator.tracking import default_tracking_uri

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_local_store_on_loopback(ganops_home):
    """The UI answers on 127.0.0.1 and lists the store's experiments."""
    ganops_home.mkdir(parents=True)
    MlflowClient(default_tracking_uri()).create_experiment("ui-check")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                    data=b'{"max_results": 10}',
                    headers={"Content-Type": "application/json"},
                )
                body = urllib.request.urlopen(req, timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, (
            proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "UI did not answer in 90 s"
        )
        assert "ui-check" in body
        home = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert home.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
