"""Local stand-ins for the services a team sweep uses: an `mlflow server` (database backend,
artifacts proxied to S3) and an S3-compatible endpoint (moto's server mode), each a real
process bound to 127.0.0.1 on a free port.

For the integration tests, the benches and trying `tracking.uri: http://...` on a laptop:

    with moto_s3(tmp / "moto.log", creds) as s3, mlflow_server(tmp, s3_endpoint=s3.url, s3_creds=creds,
                                                               artifacts_destination="s3://bucket/prefix") as srv:
        ...  # tracking.uri: srv.url

Each process runs in its own session and `stop()` ends its whole process group (uvicorn's
workers included), so nothing outlives the `with`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class LocalService:
    """A server process on 127.0.0.1: its URL, its log file, and how to end it."""

    name: str
    url: str
    log: Path
    proc: subprocess.Popen = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """End the process group we created (the server and its workers) and wait until it is gone."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.proc.poll()  # reap the leader, or the group never empties
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
        self.proc.poll()

    def wait_ready(self, probe: str, timeout: float) -> None:
        """Poll `probe` (a path on the server) until it answers, or fail with the server's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + probe, timeout=2) as r:
                    if r.status < 500:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} did not answer {self.url + probe} within {timeout:.0f}s:\n{self.log.read_text()[-3000:]}"
        )


def _start(
    name: str, cmd: list[str], log: Path, env: dict[str, str], port: int, probe: str, timeout: float
) -> LocalService:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    svc = LocalService(name, f"http://{HOST}:{port}", log, proc)
    try:
        svc.wait_ready(probe, timeout)
    except BaseException:
        svc.stop()
        raise
    return svc


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # only the creds we pass
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", **extra})
    return env


@contextmanager
def moto_s3(log: Path, creds: dict[str, str], timeout: float = 60.0) -> Iterator[LocalService]:
    """moto's S3-compatible server (`python -m moto.server`), in memory: gone when it stops."""
    port = free_port()
    svc = _start(
        "moto S3 server",
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        log,
        _server_env(creds),
        port,
        "/moto-api/",
        timeout,
    )
    try:
        yield svc
    finally:
        svc.stop()


@contextmanager
def mlflow_server(
    workdir: Path,
    *,
    artifacts_destination: str | None = None,
    default_artifact_root: str | None = None,
    s3_endpoint: str | None = None,
    s3_creds: dict[str, str] | None = None,
    workers: int = 2,
    timeout: float = 90.0,
    port: int | None = None,
) -> Iterator[LocalService]:
    """`mlflow server` with a SQLite backend in `workdir` (on `port`, or a free one: a server
    restarted on its old port and workdir is the same server to its clients).

    Proxied artifacts (the default): clients send artifacts to the server, which writes them
    to `artifacts_destination` (a local ./mlartifacts or s3://...) with ITS credentials, so
    clients need none. `default_artifact_root=s3://...` instead makes clients write to S3
    themselves (they need the endpoint and credentials in their own environment).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        f"sqlite:///{(workdir / 'mlflow.db').resolve()}",
    ]
    if default_artifact_root:
        cmd += ["--no-serve-artifacts", "--default-artifact-root", default_artifact_root]
    else:
        cmd += ["--artifacts-destination", artifacts_destination or (workdir / "mlartifacts").resolve().as_uri()]
    # Job execution would start a pool of ~2 GB of worker processes a tracking server does not need.
    extra = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(s3_creds or {})}
    if s3_endpoint:
        extra["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    svc = _start("mlflow server", cmd, workdir / "mlflow-server.log", _server_env(extra), port, "/health", timeout)
    try:
        yield svc
    finally:
        svc.stop()


class RestartableMlflowServer:
    """An `mlflow server` (SQLite in `workdir`) that goes away and comes back on the same port
    and database, the same server to its clients: the tests of a tracking server lost mid-sweep.

        srv = RestartableMlflowServer(tmp); srv.up(); ...; srv.down(); ...; srv.up(); ...; srv.down()
    """

    def __init__(self, workdir: Path, **kwargs):
        self.workdir, self.kwargs = workdir, kwargs
        self.port: int | None = None
        self._cm: Any = None  # mlflow_server's context manager while up
        self.svc: LocalService | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def up(self) -> None:
        self._cm = mlflow_server(self.workdir, port=self.port, **self.kwargs)
        self.svc = self._cm.__enter__()
        self.port = int(self.svc.url.rsplit(":", 1)[1])

    def down(self, kill: bool = False) -> None:
        """Stop it (SIGTERM to its process group; `kill`: SIGKILL first, as a crash would)."""
        if self._cm is None or self.svc is None:
            return
        if kill:
            try:
                os.killpg(self.svc.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._cm.__exit__(None, None, None)
        self._cm = self.svc = None
