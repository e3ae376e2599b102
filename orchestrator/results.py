"""What a sweep found: its trials' summaries and the result the CLI, the API and CI read."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

from trainers import metric_names
from trainers.best_eval import BEST_STEP, best_key


@dataclass
class TrialSummary:
    trial_id: str
    run_id: str | None
    status: str  # done | stopped | failed
    config: dict[str, Any]  # the sampled values
    metrics: dict[str, float]  # the last report
    step: int
    error: str | None = None
    stop_reason: str | None = None  # the balance rule and its evidence, when stopped early
    # The trial's best eval by the sweep's metric (trainers/best_eval.py) and that eval's report;
    # None for runs from before ganops kept it, or a trial with no finite score.
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None

    @property
    def by_best(self) -> bool:
        """Whether the trial is ranked and gated by its best eval: when it has one recorded, and
        it did not fail (a failed trial is judged by its last report, as before: a good eval
        before it diverged or crashed does not make it a sweep's winner)."""
        return bool(self.best_metrics) and self.best_step is not None and self.status != "failed"

    @property
    def judged(self) -> tuple[dict[str, float], int]:
        """(metrics, step) of the eval the trial is ranked and gated by: its best, else its last report."""
        if self.by_best and self.best_metrics is not None and self.best_step is not None:
            return self.best_metrics, self.best_step
        return self.metrics, self.step


@dataclass
class SweepResult:
    sweep_id: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    storage: str
    metric: str
    mode: str
    wall_seconds: float
    first_result_seconds: float | None
    trials: list[TrialSummary] = field(default_factory=list)
    registered_model: str | None = None  # models:/ganops-<spec name>/<version>: the best generator

    @property
    def best(self) -> TrialSummary | None:
        """The best trial by the sweep's metric; None when no trial has a finite value."""
        return metric_names.best(self.trials, self._value, self.mode)

    def leaderboard(self) -> list[TrialSummary]:
        """The trials best first; those without a finite metric last."""
        return metric_names.best_first(self.trials, self._value, self.mode)

    def _value(self, trial: TrialSummary) -> Any:
        return self.value(trial)

    def value(self, trial: TrialSummary) -> Any:
        """`trial`'s score on the sweep's metric: at its best eval (TrialSummary.judged)."""
        return trial.judged[0].get(self.metric)

    @property
    def cost_usd(self) -> float:
        """What the trials cost (0 on a machine whose nodes advertise no price: trainers/cost.py)."""
        return sum(t.metrics.get("cost_usd", 0.0) for t in self.trials)

    @property
    def spot_saved_usd(self) -> float:
        """What the same node-hours would have cost more on demand."""
        return sum(t.metrics.get("spot_saved_usd", 0.0) for t in self.trials)

    def mlflow_urls(self) -> dict[str, str] | None:
        """Links to the sweep's and the best trial's runs in the MLflow UI (an http(s) tracking server only)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        base = f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/"
        best = self.best
        return {"parent": base + self.parent_run_id, **({"best": base + best.run_id} if best and best.run_id else {})}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best"] = asdict(self.best) if self.best else None
        d["cost_usd"], d["spot_saved_usd"] = self.cost_usd, self.spot_saved_usd
        return d


class Standings:
    """Trials best first by their latest metric value, kept in order as values arrive.

    The same order as `metric_names.best_first` over the trials in the order they were first
    seen (missing, NaN and infinite values last; ties by first seen), without sorting every row
    on every result: the live table, the sweep's best and the contact sheet ask on each report,
    and a sort per report made the driver's cost per result grow with the sweep
    (bench/driver_scale.py). An update is a bisection in a sorted list: O(log n) comparisons
    and one memmove."""

    def __init__(self, mode: str) -> None:
        self._sign = 1.0 if metric_names.check_mode(mode) == "min" else -1.0
        self._keys: dict[str, tuple[bool, float, int]] = {}
        self._order: list[tuple[bool, float, int, str]] = []  # sorted (no score, oriented value, first seen, trial id)

    def __len__(self) -> int:
        return len(self._keys)

    def update(self, trial_id: str, value: Any = None) -> None:
        """Record `trial_id`'s latest value (None: a trial with no value yet)."""
        old = self._keys.get(trial_id)
        seen = old[2] if old is not None else len(self._keys)
        key = (False, self._sign * value, seen) if metric_names.is_score(value) else (True, 0.0, seen)
        if key == old:
            return
        if old is not None:
            del self._order[bisect.bisect_left(self._order, (*old, trial_id))]
        self._keys[trial_id] = key
        bisect.insort(self._order, (*key, trial_id))

    def top(self, n: int) -> list[str]:
        """The ids of the best `n` trials, best first (those without a value after the rest)."""
        return [k[3] for k in self._order[:n]]

    def best(self) -> tuple[str, float] | None:
        """(trial id, value) of the best trial; None while no trial has a finite value."""
        head = self._order[:1]  # one read: the live table's thread asks while the driver updates
        if not head or head[0][0]:
            return None
        _, v, _, tid = head[0]
        return tid, self._sign * v


def numeric(report: dict[str, Any]) -> dict[str, float]:
    """The numbers of a report (bools and Tune's trial_id left out), as floats."""
    return {
        k: float(v)
        for k, v in report.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("trial_id",)
    }


def best_eval(history: Any, last: dict[str, Any], metric: str) -> tuple[int | None, dict[str, float] | None]:
    """(best_step, the report of that eval) of a trial whose `last` report says which step was
    best (`best_step`, trainers/best_eval.py); (None, None) for a trial without one (older runs).
    `history`: the trial's reports (Ray's `Result.metrics_dataframe`, or None); when it lacks the
    best eval's row, only the best value is known: {metric, step}."""
    step = last.get(BEST_STEP)
    if not metric_names.is_score(step):
        return None, None
    step = int(step)
    if metric_names.is_score(last.get("step")) and int(last["step"]) == step:
        return step, numeric(last)
    if history is not None and len(history) and "step" in history.columns:
        rows = history[history["step"] == step].to_dict("records")
        scored = [r for r in rows if metric_names.is_score(r.get(metric))]
        if scored:  # a restored trial may report a step twice: the later report stands
            # the dataframe's columns are every report's keys (NaN where a report lacked one) and Tune's config/*
            row = {k: v for k, v in scored[-1].items() if metric_names.is_score(v) and not k.startswith("config/")}
            return step, numeric(row)
    value = last.get(best_key(metric))
    return step, ({metric: float(value), "step": float(step)} if metric_names.is_score(value) else None)
