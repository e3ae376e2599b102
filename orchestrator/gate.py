"""Quality gates for CI: `--require 'fid<30'`, conditions on the best trial's best eval (the eval
the sweep ranked it by, orchestrator/results.py: TrialSummary.judged).

Parsed and checked against the spec before anything launches (a typo is a usage error, exit
2); evaluated on the sweep's result (exit 0 when every condition holds, 1 otherwise).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

from trainers.metric_names import CONDITIONAL_METRICS, MIXTURE_METRICS, STEP_SCALARS

_OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}
_COND = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
BALANCE = (*STEP_SCALARS, "step")


class GateError(ValueError):
    """A condition that cannot be parsed or names a metric the sweep does not report."""


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def holds(self, metrics: dict[str, Any]) -> bool:
        v = metrics.get(self.metric)
        return isinstance(v, (int, float)) and _OPS[self.op](float(v), self.value)


def parse(texts: list[str], spec) -> list[Condition]:
    """Conditions from `--require` texts; GateError names the bad one and what is allowed.
    Without a spec (e.g. `ganops resume`, which reads it from MLflow) any metric ganops reports is allowed."""
    if spec is None:
        known = list(dict.fromkeys([*CONDITIONAL_METRICS, *MIXTURE_METRICS, *BALANCE]))
    else:
        known = [*spec.metric_table, *BALANCE]
    out = []
    for text in texts:
        m = _COND.match(text)
        if not m:
            raise GateError(
                f"--require {text!r}: write METRIC OP NUMBER, e.g. 'fid<30' or 'modes>=24' (OP: <, <=, >, >=, ==, !=)"
            )
        if m.group(1) not in known:
            where = f"for data {spec.trainer.data!r}" if spec is not None else "by ganops"
            raise GateError(
                f"--require {text!r}: {m.group(1)!r} is not reported {where}; choose one of: {', '.join(known)}"
            )
        out.append(Condition(m.group(1), m.group(2), float(m.group(3))))
    return out


def evaluate(conditions: list[Condition], result) -> dict[str, Any]:
    """{"passed", "best_trial", "best_step", "conditions": [{"require", "value", "met"}]}: every
    condition read at the best trial's best eval (`best_step`), but `step`, which asks how far
    the trial trained (`step>=4000`: it finished), from its last report; no best trial fails
    every condition."""
    best = result.best
    metrics, step = best.judged if best is not None else ({}, None)
    if best is not None:
        metrics = {**metrics, "step": best.step}
    rows = [
        {"require": str(c), "value": metrics.get(c.metric), "met": best is not None and c.holds(metrics)}
        for c in conditions
    ]
    return {
        "passed": all(r["met"] for r in rows),
        "best_trial": best.trial_id if best else None,
        "best_step": step,
        "conditions": rows,
    }
