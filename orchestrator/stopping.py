"""Stop trials whose generator and discriminator have fallen out of balance.

The rules are pure functions of one trial's history of eval reports (oldest first); each
returns `None` (keep going) or a `Verdict` naming the rule and the values that triggered
it. `BalanceStopper` is the thin Tune adapter. Thresholds come from the spec's `stopping`
section; defaults and their sources are in `search_spaces.spec.Stopping`.

Balance means D outputs 0.5 on both real and fake and each BCE term sits at ln 2 ~ 0.693.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from ray.tune import Stopper

from orchestrator.board import HoldsBoard
from trainers.metric_names import DIVERGENCE_SIGNALS, is_score, oriented

History = list[dict[str, Any]]


@dataclass(frozen=True)
class Verdict:
    rule: str
    evidence: dict[str, float]

    def describe(self) -> str:
        ev = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.evidence.items())
        return f"{self.rule} ({ev})"


def _tail(history: History, n: int) -> History | None:
    return history[-n:] if len(history) >= n else None


def divergence(history: History, cfg) -> Verdict | None:
    """A non-finite loss or gradient, or the loop's own divergence report: stop at once."""
    last = history[-1]
    if last.get("diverged"):
        return Verdict("divergence", {"step": last.get("step", 0)})
    for k in DIVERGENCE_SIGNALS:
        v = last.get(k)
        if isinstance(v, (int, float)) and not math.isfinite(v):
            return Verdict("divergence", {k: v, "step": last.get("step", 0)})
    return None


def _nll_g(report: dict[str, Any], default: float) -> float:
    """-mean log D(G(z)): G's loss under the non-saturating loss, `loss_g_nonsat` under minimax
    (whose own loss_g is log(1 - D(G(z))) <= 0). hinge / wgan-gp report neither d_x nor d_g_z,
    so the rules that read this also need those and stay silent for them."""
    return report.get("loss_g_nonsat", report.get("loss_g", default))


def d_overpowers(history: History, cfg) -> Verdict | None:
    """D rejects G's samples with near certainty and calls real data real, for `patience`
    consecutive evals (ganhacks #2: G error 0.76 -> 4.97 while D error fell 0.60 -> 0.007).

    "D(G(z)) near 0" is judged on its geometric mean, exp(-loss_g) (G's non-saturating loss is
    the mean of -log D(G(z))), not on the arithmetic mean `d_g_z`: a D at a high learning rate
    rejects most fakes with certainty and passes a few, so d_g_z read 0.05-0.13 while G's loss
    sat at 13-38 (measured, DCGAN with Adam lr_d 0.1). A G that fights back brings its loss
    down under -ln(d_g_z_below) and breaks the run."""
    tail = _tail(history, cfg.patience)
    if tail is None:
        return None
    floor = -math.log(cfg.d_g_z_below)
    if all(_nll_g(r, 0) > floor and r.get("d_x", 0) > cfg.d_x_above for r in tail):
        last = tail[-1]
        nll = float(_nll_g(last, math.nan))
        return Verdict(
            "d_overpowers",
            {
                "d_x": float(last["d_x"]),
                "d_g_z_geo": math.exp(-nll),
                "d_g_z": float(last.get("d_g_z", math.nan)),
                "loss_g": nll,
                "evals": len(tail),
            },
        )
    return None


def d_fooled(history: History, cfg) -> Verdict | None:
    """G's loss near 0 / D calling everything real, for `patience` evals."""
    tail = _tail(history, cfg.patience)
    if tail is None:
        return None
    if all(_nll_g(r, 1) < cfg.loss_g_below and r.get("d_g_z", 0) > cfg.d_g_z_above for r in tail):
        return Verdict(
            "d_fooled",
            {"loss_g": float(_nll_g(tail[-1], math.nan)), "d_g_z": float(tail[-1]["d_g_z"]), "evals": len(tail)},
        )
    return None


def gradient_explosion(history: History, cfg) -> Verdict | None:
    """A gradient norm above the threshold for `patience` evals."""
    tail = _tail(history, cfg.patience)
    if tail is None:
        return None
    for k in ("grad_norm_d", "grad_norm_g"):
        if all(r.get(k, 0) > cfg.threshold for r in tail):
            return Verdict(
                "gradient_explosion", {k: float(tail[-1][k]), "threshold": cfg.threshold, "evals": len(tail)}
            )
    return None


def _below_floors(history: History, cfg, rule: str, floors: tuple[tuple[str, float | None], ...]) -> Verdict | None:
    """A sample metric under its floor at each of the last `patience` evals, all past `after_step`."""
    tail = _tail(history, cfg.patience)
    if tail is None or tail[0].get("step", 0) < cfg.after_step:
        return None
    for key, floor in floors:
        if floor is not None and all(key in r and r[key] < floor for r in tail):
            return Verdict(rule, {key: float(tail[-1][key]), "floor": floor, "evals": len(tail)})
    return None


def mode_collapse(history: History, cfg) -> Verdict | None:
    """Images: fewer MNIST classes than the floor among the samples for `patience` evals, once
    past the warm-up: balanced losses do not prove health (GAN_NOTES)."""
    return _below_floors(history, cfg, "mode_collapse", (("class_coverage", cfg.min_classes),))


def mixture_quality(history: History, cfg) -> Verdict | None:
    """2-D mixtures: the samples stay off the modes (high-quality % under its floor) or sit on
    too few of them, for `patience` evals past the warm-up. Loss rules fire late on mixtures:
    D's dominance builds over thousands of iterations, and a G whose losses sit at balance can
    still spread its samples like noise (GAN_NOTES: balanced losses are not proof of health).
    Total collapse (every sample in one mode's cell) shows from the first evals and has its
    own, shorter warm-up. Defaults and the measurements behind them:
    `search_spaces.spec.MixtureQuality`."""
    collapse = SimpleNamespace(patience=cfg.patience, after_step=cfg.collapse_after_step)
    return _below_floors(
        history, collapse, "mixture_quality", (("eff_modes", cfg.min_effective_modes),)
    ) or _below_floors(history, cfg, "mixture_quality", (("hq_pct", cfg.min_hq_pct), ("modes", cfg.min_modes)))


@dataclass
class Earlier:
    """What `plateau` needs of the reports a bounded history no longer holds (BalanceStopper)."""

    count: int = 0
    best: float = math.inf  # the best oriented value among them (lower is better)
    all_scores: bool = True  # every one of them had a finite value of the metric

    def add(self, report: dict[str, Any], metric: str, mode: str) -> None:
        self.count += 1
        v = report.get(metric)
        if is_score(v):
            self.best = min(self.best, oriented(v, mode))
        else:
            self.all_scores = False


def plateau(history: History, cfg, metric: str, mode: str, earlier: Earlier | None = None) -> Verdict | None:
    """The sweep metric has not improved by `min_delta` over its best in the last `patience` evals.
    `earlier`: the reports before `history` (a window of the latest ones), summarised."""
    earlier = earlier or Earlier()
    if earlier.count + len(history) <= cfg.patience or not earlier.all_scores:
        return None
    values = [v for r in history if is_score(v := r.get(metric))]
    if len(values) != len(history):  # a missing or non-finite value: nothing to compare yet
        return None
    # lower is better from here on
    best_before = min([earlier.best, *(oriented(v, mode) for v in values[: -cfg.patience])])
    best_recent = min(oriented(v, mode) for v in values[-cfg.patience :])
    if best_recent > best_before - cfg.min_delta:
        return Verdict(
            "plateau", {metric: float(values[-1]), "best": float(oriented(best_before, mode)), "evals": cfg.patience}
        )
    return None


RULES: dict[str, Callable[..., Verdict | None]] = {
    "divergence": divergence,
    "d_overpowers": d_overpowers,
    "d_fooled": d_fooled,
    "gradient_explosion": gradient_explosion,
    "mode_collapse": mode_collapse,
    "mixture_quality": mixture_quality,
}


def judge(history: History, stopping, metric: str, mode: str, earlier: Earlier | None = None) -> Verdict | None:
    """First rule (in the order above, then plateau) that fires on this history, if any."""
    if not history:
        return None
    for name, rule in RULES.items():
        cfg = getattr(stopping, name, None)
        if cfg is not None and (v := rule(history, cfg)):
            return v
    if stopping.plateau is not None:
        return plateau(history, stopping.plateau, metric, mode, earlier)
    return None


# What the rules read of a report; a stopper's history keeps only these (and the sweep metric).
RULE_KEYS = frozenset(
    {
        "step",
        "diverged",
        *DIVERGENCE_SIGNALS,
        "loss_g_nonsat",
        "d_x",
        "d_g_z",
        "class_coverage",
        "eff_modes",
        "hq_pct",
        "modes",
    }
)


def window(stopping) -> int:
    """How many of a trial's latest reports the rules look at: the longest patience configured
    (the plateau rule gets the rest summarised, `Earlier`)."""
    cfgs = [getattr(stopping, name, None) for name in (*RULES, "plateau")]
    return max([1, *(c.patience for c in cfgs if c is not None and hasattr(c, "patience"))])


@dataclass
class BalanceStopper(HoldsBoard, Stopper):
    """Tune stopper: feed each trial's reports to the rules; remember why a trial was stopped."""

    stopping: Any
    metric: str
    mode: str
    board: Any = None  # a TrialBoard actor handle: the trial stops itself (orchestrator/board.py)
    max_usd: float | None = None  # the spec's budget.max_usd
    histories: dict[str, History] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)  # each trial's latest cost_usd
    budget_verdict: Verdict | None = None
    # sum(costs), kept as each trial's cost changes: summing every trial's cost on every report
    # made a report's cost grow with the sweep (bench/driver_scale.py). None: sum once (a
    # stopper Tune pickled before this field existed, restored by `ganops resume`).
    spent_usd: float | None = None
    earlier: dict[str, Earlier] | None = None  # per trial: the reports out of its history's window

    def __call__(self, trial_id: str, result: dict) -> bool:
        if isinstance(result.get("cost_usd"), (int, float)):
            cost = float(result["cost_usd"])
            if self.spent_usd is None:
                self.spent_usd = sum(self.costs.values())
            self.spent_usd += cost - self.costs.get(trial_id, 0.0)
            self.costs[trial_id] = cost
            if self._over_budget():
                return self.board is None
        if "step" not in result or trial_id in self.verdicts:
            return False
        # Bounded: the keys the rules read, the latest `window` reports and a summary of the
        # earlier ones. Tune pickles the stopper into every experiment-state save, and whole
        # reports of every eval made that grow with the sweep's evals (bench/driver_scale.py).
        history = self.histories.setdefault(trial_id, [])
        keys = RULE_KEYS | {self.metric}
        history.append({k: v for k, v in result.items() if k in keys and isinstance(v, (int, float))})
        if self.earlier is None:  # a stopper pickled before this field existed (`ganops resume`)
            self.earlier = {}
        earlier = self.earlier.setdefault(trial_id, Earlier())
        while len(history) > window(self.stopping):
            earlier.add(history.pop(0), self.metric, self.mode)
        verdict = judge(history, self.stopping, self.metric, self.mode, earlier)
        if verdict is None:
            return False
        self.verdicts[trial_id] = verdict
        self.forget(trial_id)  # judged once and for all
        if self.board is not None:
            # Cooperative stop (orchestrator/board.py): the trial's workers leave their loop and
            # TorchTrainer tears down cleanly.
            self.board.stop.remote(trial_id)
            return False
        return True

    def forget(self, trial_id: str) -> None:
        """Drop a trial's history once it is judged or has ended (its verdict and cost stay)."""
        self.histories.pop(trial_id, None)
        if self.earlier:
            self.earlier.pop(trial_id, None)

    def _over_budget(self) -> bool:
        """Once the trials' costs reach budget.max_usd: every trial still going is stopped
        (verdict `budget`) and stop_all() ends the sweep, so no new trial starts."""
        if self.budget_verdict is not None:
            return True
        spent = self.spent_usd if self.spent_usd is not None else sum(self.costs.values())
        if self.max_usd is None or spent < self.max_usd:
            return False
        self.budget_verdict = Verdict("budget", {"spent_usd": spent, "max_usd": self.max_usd})
        for tid in self.histories.keys() | self.costs.keys():
            if tid not in self.verdicts:
                self.verdicts[tid] = self.budget_verdict
                if self.board is not None:
                    self.board.stop.remote(tid)
        return True

    def stop_all(self) -> bool:
        return self.budget_verdict is not None


def cooperative(scheduler_cls):
    """A Tune scheduler whose STOP decisions go to the trial board (the trial ends itself)."""

    class Cooperative(HoldsBoard, scheduler_cls):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == self.STOP and self.board is not None:
                self.board.stop.remote(trial.trial_id)
                return self.CONTINUE
            return decision

    Cooperative.__name__ = f"Cooperative{scheduler_cls.__name__}"
    return Cooperative
