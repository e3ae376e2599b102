"""What a trial could not write to MLflow, kept until it can (issue 15: a tracking server that
goes away mid-sweep).

- While the store answers, a write goes straight to it (MLflow's own HTTP retries included:
  MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default, ride out a blip of a few minutes).
- When a write still fails for an outage (connection refused, timeout, 5xx), it and every later
  write of that run go to the spool, one file per operation under `ROOT/RUN_ID/`. ROOT is
  `{storage}/{sweep_id}/spool`: the sweep's storage (a directory or s3://), which the sweep's
  machine reads, where a worker's own disk may be gone with its node.
- At the first write `GANOPS_SPOOL_RETRY_S` (15) seconds later, the spool is replayed in
  order if the server answers its health check; then writes go straight again.
- What is left when the trial ends is replayed at the sweep's end and by `ganops resume`.
- Bounded: at most `GANOPS_SPOOL_MAX_MB` (512) per run and process; past that, operations are
  dropped, counted, and the count becomes the run's tag `ganops.spool_dropped`.

A write MLflow refuses for what it is (a bad value, a deleted run, no permission) is not an
outage: it raises as it always did, and nothing is spooled.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# MLflow error codes for a request refused on its merits, not for a server that is away.
REFUSED = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "BAD_REQUEST",
    "INVALID_STATE",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
}


# A store too busy to take the write now, whatever code it answers with: SQLite's writer lock
# timed out, or the server's database connection pool is exhausted (HTTP 400 from SQLAlchemy's
# QueuePool; bench/tracking_load.py met both under load).
BUSY = ("database is locked", "QueuePool limit")


def is_outage(error: BaseException) -> bool:
    """True when `error` says the tracking store did not answer, or was too busy to (spool and
    retry later)."""
    from mlflow.exceptions import MlflowException

    if any(m in str(error) for m in BUSY):
        return True
    if isinstance(error, MlflowException):
        return error.error_code not in REFUSED
    return isinstance(error, OSError)  # requests' ConnectionError and Timeout are OSErrors


T = TypeVar("T")


def patiently(attempt: Callable[[], T], what: str) -> T:
    """`attempt()`, asked again while the store is away or busy (`is_outage`), with jittered
    exponential backoff (1 s doubling to 30 s: hundreds of trials may start at once), for up to
    `GANOPS_TRACKING_WAIT_S` (300 s); then its error. For what cannot be spooled: a trial's run
    opening, and the reads that tell a restarted trial what it logged before."""
    deadline = time.monotonic() + float(os.environ.get("GANOPS_TRACKING_WAIT_S", "300"))
    pause = 1.0
    while True:
        try:
            return attempt()
        except Exception as e:
            if not is_outage(e) or time.monotonic() + pause > deadline:
                raise
            log.warning("MLflow did not answer %s (%s); asking again in %.0f s", what, _first(e), pause)
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 30.0)


def image_name(key: str, step: int) -> str:
    """A time-stepped image's file name as MlflowClient.log_image makes it (the UI's image
    view reads key, step and time from it), fixed once per image."""
    import uuid

    return f"{key.replace('/', '~')}+step+{step}+timestamp+{int(time.time() * 1000)}+{uuid.uuid4()}"


def spool_root(storage: str, sweep_id: str) -> str:
    return f"{storage.rstrip('/')}/{sweep_id}/spool"


def _fs(root: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(root if "://" in root else os.path.abspath(root))


def apply(client: MlflowClient, run_id: str, op: dict[str, Any], payload: bytes | None) -> None:
    """Do one operation on run `run_id` (the same whether it is done now or replayed)."""
    from mlflow.entities import Metric, RunTag

    kind = op["op"]
    if kind == "batch":
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in op.get("metrics", [])]
        tags = [RunTag(k, v) for k, v in op.get("tags", {}).items()]
        client.log_batch(run_id, metrics=metrics, tags=tags)
    elif kind == "image":
        from PIL import Image

        assert payload is not None
        image = Image.open(io.BytesIO(payload))
        if "name" not in op:  # kept by an older ganops: MLflow names it
            import numpy as np

            client.log_image(run_id, np.asarray(image), key=op["key"], step=op["step"])
            return
        from mlflow.tracking.multimedia import compress_image_size
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

        # MLflow's own layout for a time-stepped image (MlflowClient.log_image: the full PNG and
        # a compressed WebP under images/, the run tagged as having images), under the name
        # fixed when the write was first tried: a retry after an upload whose answer was lost
        # overwrites that upload instead of adding a second image for the step.
        with tempfile.TemporaryDirectory() as d:
            image.save(Path(d) / f"{op['name']}.png")
            compress_image_size(image).save(Path(d) / f"{op['name']}+compressed.webp")
            client.log_artifacts(run_id, d, artifact_path="images")
        client.set_tag(run_id, MLFLOW_LOGGED_IMAGES, "True")
    elif kind == "artifact":
        assert payload is not None
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / op["name"]
            f.write_bytes(payload)
            client.log_artifact(run_id, str(f), artifact_path=op.get("path"))
    elif kind == "close":
        # The trial driver's last word: close the run unless the sweep closed it first (a stop).
        if client.get_run(run_id).info.status == "RUNNING":
            if op.get("reason"):
                client.set_tag(run_id, "stop_reason", op["reason"])
            client.set_terminated(run_id, status=op["status"])
    else:
        raise ValueError(f"unknown spooled operation {kind!r}")


def _health(tracking_uri: str) -> bool:
    """Does the tracking server answer? (Any non-5xx answer to /health; a local store: yes.)"""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    import requests

    try:
        return requests.get(tracking_uri.rstrip("/") + "/health", timeout=5).status_code < 500
    except requests.RequestException:
        return False


class Spool:
    """The writes of one MLflow run, done now or kept under `root`/`run_id` until they can be."""

    def __init__(self, client: MlflowClient, tracking_uri: str, run_id: str, root: str | None):
        self.client, self.tracking_uri, self.run_id = client, tracking_uri, run_id
        self.root = root
        self.dir = f"{root.rstrip('/')}/{run_id}" if root else None
        self.retry_s = float(os.environ.get("GANOPS_SPOOL_RETRY_S", "15"))
        self.max_bytes = int(float(os.environ.get("GANOPS_SPOOL_MAX_MB", "512")) * 1024**2)
        self.kept_bytes = 0
        self.kept = self.dropped = 0
        self._n = 0
        self._tried_at = 0.0
        self.offline = self.dir is not None and bool(self._files())  # an earlier process left some

    def do(self, op: dict[str, Any], payload: bytes | None = None) -> None:
        """Write `op` now, or keep it (and all later ones, in order) while the store is away."""
        if op["op"] == "image" and "name" not in op:
            op = {**op, "name": image_name(op["key"], op["step"])}
        if self.offline and not self.try_drain():
            self.keep(op, payload)
            return
        try:
            apply(self.client, self.run_id, op, payload)
        except Exception as e:
            if self.dir is None or not is_outage(e):
                raise
            log.warning(
                "MLflow did not answer (%s); keeping this run's writes in %s until it does", _first(e), self.dir
            )
            self._tried_at = time.monotonic()
            self.keep(op, payload)

    def keep(self, op: dict[str, Any], payload: bytes | None = None, bounded: bool = True) -> None:
        """Spool `op` (files named by time, so a driver's and a worker's keep their order).
        `bounded=False`: kept past the bound (the closing, the count of what was dropped)."""
        assert self.dir is not None
        self.offline = True
        size = len(payload or b"") + 256
        if bounded and op["op"] != "close" and self.kept_bytes + size > self.max_bytes:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("the spool %s is full (GANOPS_SPOOL_MAX_MB); dropping further writes", self.dir)
            return
        fs, base = _fs(self.dir)
        fs.create_dir(base, recursive=True)
        self._n += 1
        name = f"{base}/{time.time_ns():020d}-{os.getpid()}-{self._n:06d}"
        if payload is not None:
            with fs.open_output_stream(name + ".bin") as f:
                f.write(payload)
        with fs.open_output_stream(name + ".json") as f:  # written last: a .json means complete
            f.write(json.dumps(op).encode())
        self.kept_bytes += size
        self.kept += 1

    def try_drain(self, force: bool = False) -> bool:
        """Replay the spool if it is time to try and the server answers; True when it is empty."""
        if not self.offline:
            return True
        if not force and time.monotonic() - self._tried_at < self.retry_s:
            return False
        self._tried_at = time.monotonic()
        if not _health(self.tracking_uri):
            return False
        if self.dropped:
            self.keep({"op": "batch", "tags": {"ganops.spool_dropped": str(self.dropped)}}, bounded=False)
            self.dropped = 0
        done, left = replay_run(self.client, self.dir or "", self.run_id)
        if left:
            return False
        log.warning("MLflow answers again: %d kept writes of run %s uploaded", done, self.run_id)
        self.offline = False
        return True

    def _files(self) -> list[str]:
        return _spooled(self.dir) if self.dir else []


def _first(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _spooled(run_dir: str) -> list[str]:
    """The complete operations under `run_dir`, oldest first (paths without extension)."""
    import pyarrow.fs

    fs, base = _fs(run_dir)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
    except OSError:
        return []
    return sorted(i.path[: -len(".json")] for i in infos if i.path.endswith(".json"))


def replay_run(client: MlflowClient, run_dir: str, run_id: str) -> tuple[int, int]:
    """Apply `run_dir`'s kept operations in order, deleting each once MLflow has it; stop at
    the first that fails (the store went away again). Returns (uploaded, left)."""
    fs, _ = _fs(run_dir)
    names = _spooled(run_dir)
    for i, name in enumerate(names):
        with fs.open_input_stream(name + ".json") as f:
            op = json.loads(f.read())
        payload = None
        if fs.get_file_info(name + ".bin").is_file:
            with fs.open_input_stream(name + ".bin") as f:
                payload = f.read()
        try:
            apply(client, run_id, op, payload)
        except Exception as e:
            if not is_outage(e):  # refused on its merits: it never will be taken; say so, go on
                log.warning("a kept write of run %s was refused by MLflow and dropped: %s", run_id, _first(e))
            else:
                return i, len(names) - i
        fs.delete_file(name + ".json")
        if payload is not None:
            fs.delete_file(name + ".bin")
    return len(names), 0


def replay_all(client: MlflowClient, root: str) -> tuple[int, int]:
    """Replay every run's spool under `root` (a sweep's). Returns (uploaded, left) in total."""
    import pyarrow.fs

    fs, base = _fs(root)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
    except OSError:
        return 0, 0
    done = left = 0
    for info in infos:
        if info.type == pyarrow.fs.FileType.Directory:
            d, n = replay_run(client, f"{root.rstrip('/')}/{info.base_name}", info.base_name)
            done, left = done + d, left + n
    return done, left


def pending(root: str) -> int:
    """How many operations are kept under `root` (a sweep's spool), all runs together."""
    import pyarrow.fs

    fs, base = _fs(root)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    return sum(i.path.endswith(".json") for i in infos)
