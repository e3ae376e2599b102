"""A trial's best eval so far: the step whose score on the sweep's metric was best, kept across restores.

GAN quality oscillates, so a trial's last eval is rarely its best (issue 16). Rank 0 of the
per-worker loop (trainers/loop.py) asks `update` at every eval; when the eval improves on the
best, the loop logs that eval's generator a second time, under `generator_best/`, and every
eval reports `best_step` and `best_<metric>` (to Ray and MLflow), so the driver ranks trials by
their best eval and `ganops sample` draws from the generator that earned it. No Ray, MLflow or
torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainers.metric_names import check_mode, is_score, oriented

BEST_STEP = "best_step"  # the metric each eval reports: the step of the trial's best eval so far
LATEST_DIR = "generator"  # the run's artifact folder of the latest eval's generator
BEST_DIR = "generator_best"  # ... and of the best eval's (logged again each time the best improves)
GENERATOR_FILE = "generator.pt"
_META_STEP, _META_VALUE = "best_step", "best_value"  # in the checkpoint's meta (trainers/checkpoint.py)


def best_key(metric: str) -> str:
    """The name under which evals report the best value of `metric` so far (`best_fid`)."""
    return f"best_{metric}"


@dataclass
class BestEval:
    """The best eval so far of one trial by `metric` (None: no sweep metric, nothing is tracked) and `mode`."""

    metric: str | None
    mode: str = "min"
    step: int | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)

    def update(self, step: int, metrics: dict[str, Any]) -> bool:
        """Take the eval at `step` if its finite `metric` beats the best so far (a tie keeps the
        earlier one, as Ray Tune's best checkpoint does); True when it did."""
        v = metrics.get(self.metric) if self.metric else None
        if not is_score(v):
            return False
        if self.value is not None and oriented(float(v), self.mode) >= oriented(self.value, self.mode):
            return False
        self.step, self.value = step, float(v)
        return True

    def report(self) -> dict[str, float]:
        """What every eval reports about the best so far: {} before the first finite score."""
        if self.metric is None or self.step is None or self.value is None:
            return {}
        return {BEST_STEP: self.step, best_key(self.metric): self.value}

    def meta(self) -> dict[str, float]:
        """Plain numbers for the checkpoint's meta, so a resumed trial remembers its best."""
        if self.step is None or self.value is None:
            return {}
        return {_META_STEP: float(self.step), _META_VALUE: self.value}

    def restore(self, meta: dict[str, Any]) -> None:
        """Take back what `meta` wrote (a checkpoint without it leaves the best unset)."""
        if is_score(meta.get(_META_STEP)) and is_score(meta.get(_META_VALUE)):
            self.step, self.value = int(meta[_META_STEP]), float(meta[_META_VALUE])
