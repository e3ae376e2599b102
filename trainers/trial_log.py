"""Rank 0's writes to the trial's MLflow run (opened by the trial driver, orchestrator/trial.py):
the evals' metrics, grids and generator, batched, and the step's losses between evals.

Used by the per-worker loop (trainers/loop.py) only; MLflow is imported when a run is named.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainers.best_eval import BEST_DIR, LATEST_DIR

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.utils.async_logging.run_operations import RunOperations

    from trainers.spool import Spool

log = logging.getLogger(__name__)

LOSS_MARKER = "loss_d"  # every step reports it: its history says which loss points a run has


class MlflowSink:
    """Rank 0's writes to the trial's MLflow run, batched: one call per eval for all metrics."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, spool: str | None = None):
        """`spool`: where writes wait while the store is away (trainers/spool.py; None: they raise)."""
        self.run_id = run_id or ""  # read only where there is a client, and there is one only with a run
        self.client: MlflowClient | None = None
        self.spool: Spool | None = None
        self.logged_through = -1  # steps up to here are in the run already (a resumed trial)
        self.losses_through = -1  # ... and the losses logged between evals (log_losses)
        self._in_flight: RunOperations | None = None  # the last asynchronous loss batch
        self._in_flight_op: dict | None = None  # ... and what it carries, kept if it fails
        if tracking_uri and run_id:
            from mlflow import MlflowClient

            from trainers.spool import Spool

            self.client = MlflowClient(tracking_uri)
            self.spool = Spool(self.client, tracking_uri, run_id, spool)

    def resume_after(self, step: int) -> None:
        """A trial resumed from its checkpoint at `step` replays the steps after it; those it had
        logged before it was interrupted stay as they were (one value per step, and on CPU the
        replay computes the same values)."""
        if self.client is not None:
            from trainers.spool import patiently

            client, before = self.client, [step if step > 0 else -1]

            def through(key: str) -> int:
                return max([int(m.step) for m in client.get_metric_history(self.run_id, key)] + before)

            self.logged_through = patiently(lambda: through("step"), "with what the run logged before")
            self.losses_through = patiently(lambda: through(LOSS_MARKER), "with what the run logged before")

    def count_tags(self, prefix: str) -> int:
        """Tags already on the run under `prefix` (a resumed trial numbers its PBT exploits on)."""
        if self.client is None:
            return 0
        from trainers.spool import patiently

        client = self.client
        tags = patiently(lambda: client.get_run(self.run_id).data.tags, "with the run's tags")
        return sum(k.startswith(prefix) for k in tags)

    def tag(self, key: str, value: str) -> None:
        if self.spool is not None:
            self.spool.do({"op": "batch", "tags": {key: value[:5000]}})

    def log(
        self,
        step: int,
        metrics: dict[str, float],
        image: np.ndarray | None,
        generator_file: Path | None,
        best: bool = False,
    ) -> None:
        """One eval's metrics, grid and generator (`generator/`); `best`: this eval is the
        trial's best so far (trainers/best_eval.py), so the generator goes to `generator_best/` too."""
        if self.spool is None or step <= self.logged_through:
            return
        self.spool.do(_batch(step, metrics))
        if image is not None:
            self.spool.do({"op": "image", "key": "samples", "step": step}, _png(image))
        if generator_file is not None:
            data = generator_file.read_bytes()
            for folder in (LATEST_DIR, BEST_DIR) if best else (LATEST_DIR,):
                self.spool.do({"op": "artifact", "name": generator_file.name, "path": folder}, data)

    def log_losses(self, step: int, scalars: dict[str, float]) -> None:
        """The step's scalars between evals: asynchronous (MLflow's async logging), so training
        never waits on the store; at most one batch in flight (the previous one, long done at
        log_every's pace, is waited for first), so a slow store slows the trial rather than
        piling up batches in memory."""
        if self.client is None or self.spool is None or step <= self.losses_through:
            return
        self.flush()
        op = _batch(step, scalars)
        if self.spool.offline:  # the store is away: kept in order with the evals' writes
            self.spool.do(op)
            return
        from mlflow.entities import Metric

        metrics = [Metric(k, v, ts, s) for k, v, ts, s in op["metrics"]]
        self._in_flight_op = op
        self._in_flight = self.client.log_batch(self.run_id, metrics=metrics, synchronous=False)

    def flush(self) -> None:
        """Wait for the loss batch in flight (before the worker ends: the driver closes the run)."""
        ops, self._in_flight = self._in_flight, None
        if ops is not None:
            try:
                ops.wait()
            except Exception as e:  # noqa: BLE001 - the evals' metrics stand; say what is missing
                from trainers.spool import is_outage

                if self.spool is not None and self.spool.dir is not None and is_outage(e) and self._in_flight_op:
                    self.spool.keep(self._in_flight_op)
                else:
                    log.warning(
                        "losses between evals up to step %s were not logged to MLflow: %s", self.losses_through, e
                    )

    def close(self) -> None:
        """The worker's end: the last loss batch, then one more try at what the spool keeps
        (whatever is still kept waits for the sweep's end or `ganops resume`)."""
        self.flush()
        if self.spool is not None and self.spool.offline and not self.spool.try_drain(force=True):
            log.warning(
                "MLflow is still away: %d writes of run %s are kept in %s", self.spool.kept, self.run_id, self.spool.dir
            )


def _batch(step: int, metrics: dict[str, float]) -> dict:
    """The finite numbers of `metrics` at `step` as a spool operation (MLflow stores no NaN / inf
    we want); the timestamp is the time of logging, whenever the store takes it."""
    now = int(time.time() * 1000)
    return {
        "op": "batch",
        "metrics": [
            [k, float(v), now, step] for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)
        ],
    }


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class LossLog:
    """Rank 0's running means of the step's scalars, logged every `log_every` steps and at every
    eval (issue 19: losses between the costlier evals). Each point is the mean over the steps
    since the previous one, so the MLflow curve of loss_d, d_x, ... is one series whatever the
    cadence; the evals' Ray reports keep their own window (the balance stopper reads those)."""

    def __init__(self, sink: MlflowSink | None, every: int):
        self.sink, self.every = sink, every
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, step: int, scalars: dict[str, float], due: bool) -> None:
        """`due`: an eval at this step (its point is logged here, whatever log_every says)."""
        if self.sink is None:
            return
        for k, v in scalars.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        if due or step % self.every == 0:
            self.sink.log_losses(step, {k: v / self.n for k, v in self.sums.items()})
            self.sums.clear()
            self.n = 0
