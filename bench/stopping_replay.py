"""Bench: replay the balance rules on a finished control sweep's histories (no training).

A control sweep (every rule off, e.g. the second half of `bench/stopping_savings.py --keep
DIR`) records each trial's metrics at every eval in MLflow. This feeds those histories, eval
by eval, to the same `orchestrator.stopping.judge` the sweep's stopper calls, with the rules of
SPEC (and any --set overrides), and reports where each trial would have been stopped: the
trial-steps saved, whether the best trial survives, and the false positives (a stopped trial
whose control twin ended well: `stopping_savings.false_positives`). Use it to try thresholds
without training; the figures to quote come from `bench/stopping_savings.py`, which runs the
rules in a live sweep (the two agree exactly on grid25's 6,000-iteration run and, since the
replay judges one report per eval as the stopper does, on the 9 kept MNIST and ring8 runs of
2026-12-03: 4,650 / 5,850 / 3,600 and 33,500 / 48,000 / 29,000 and 58,500 / 86,500 / 43,000).

    python bench/stopping_replay.py bench/specs/grid25_bad_regions.yaml RUNS/control \\
        [--set stopping.mixture_quality.after_step=2000] [--trace]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mlflow.tracking import MlflowClient
from stopping_savings import false_positives  # bench/ is on sys.path when run as a script

from orchestrator.stopping import judge
from search_spaces.loader import load_spec
from trainers.data import mixture_means


def histories(control: Path) -> tuple[dict, dict[str, list[dict]]]:
    """The control sweep's result (its `--json`) and, per trial id, its evals as the stopper
    saw them: one dict of every metric logged at that step."""
    result = json.loads((control / "result.json").read_text())
    client = MlflowClient(tracking_uri=result["tracking_uri"])
    out = {}
    for t in result["trials"]:
        run = client.get_run(t["run_id"])
        by_step: dict[int, dict] = {}
        for key in run.data.metrics:
            for m in client.get_metric_history(t["run_id"], key):
                by_step.setdefault(m.step, {"step": m.step})[key] = m.value
        out[t["trial_id"]] = as_reports([by_step[s] for s in sorted(by_step) if s > 0], result["metric"])
    return result, out


def as_reports(points: list[dict], metric: str) -> list[dict]:
    """The reports the live stopper got, from a run's MLflow points (sorted by step).

    A trial reports only at its evals (the steps that log the sweep metric), each report's
    losses the mean over every step since the previous eval. MLflow holds the losses more
    often (`log_every`, each point the mean since the previous point), so a report's loss is
    the step-weighted mean of the points in its window; the eval's own metrics are as logged.
    Judging every loss point instead stopped trials on a 10-step window (issue 19's log_every
    came after this replay): on the MNIST bench it gave 85% saved where the live run saved 61%.
    """
    reports, window, prev = [], [], 0
    for p in points:
        window.append((p["step"] - prev, p))
        prev = p["step"]
        if metric not in p:
            continue
        r = dict(p)
        for k in {k for _, q in window for k in q} - {"step"}:
            have = [(n, q[k]) for n, q in window if k in q]
            if len(have) > 1:  # a loss scalar logged between evals: its mean over the window
                r[k] = sum(n * v for n, v in have) / sum(n for n, _ in have)
        reports.append(r)
        window = []
    return reports


def add_derived(spec, evals: dict[str, list[dict]]) -> None:
    """Controls recorded before eff_modes was logged: it is K exp(-reverse_kl), exactly."""
    if spec.trainer.data in ("grid25", "ring8"):
        k = len(mixture_means(spec.trainer.data))
        for r in (r for h in evals.values() for r in h if "reverse_kl" in r and "eff_modes" not in r):
            r["eff_modes"] = k * math.exp(-r["reverse_kl"])


def replay(spec, result: dict, evals: dict[str, list[dict]], trace: bool = False) -> dict:
    metric, mode = result["metric"], result["mode"]
    sign = 1 if mode == "max" else -1
    final = {t["trial_id"]: t["metrics"].get(metric, float("nan")) for t in result["trials"]}
    best = max(final, key=lambda k: sign * final[k])
    steps_without = sum(t["step"] for t in result["trials"])
    steps_with, stopped = 0, []
    for t in result["trials"]:
        tid, history = t["trial_id"], []
        at = None
        for r in evals[tid]:
            history.append(r)
            if trace:
                print(
                    tid,
                    {
                        k: round(r[k], 3)
                        for k in ("step", metric, "hq_pct", "near_pct", "modes", "eff_modes", "loss_g", "d_x", "d_g_z")
                        if k in r
                    },
                )
            if (v := judge(history, spec.stopping, metric, mode)) is not None:
                at = int(r["step"])
                stopped.append(
                    {
                        "trial": tid,
                        "config": t["config"],
                        "at_step": at,
                        "rule": v.rule,
                        "evidence": v.evidence,
                        f"control_{metric}": final[tid],
                    }
                )
                break
        steps_with += at if at is not None else t["step"]
    return {
        "trials": len(result["trials"]),
        "metric": metric,
        "trial_steps": {
            "with_rules": steps_with,
            "without": steps_without,
            "saved_pct": round(100 * (1 - steps_with / steps_without), 1),
        },
        "best_trial_stopped": any(s["trial"] == best for s in stopped),
        "stopped": stopped,
        **false_positives(final, {s["trial"] for s in stopped}, mode),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("control", type=Path, help="a kept control sweep: its result.json and its GANOPS_HOME")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="spec override, e.g. stopping.mixture_quality.after_step=2000",
    )
    ap.add_argument("--trace", action="store_true", help="print every eval as the rules see it")
    args = ap.parse_args()
    spec = load_spec(args.spec, args.overrides)
    result, evals = histories(args.control)
    add_derived(spec, evals)
    print(json.dumps(replay(spec, result, evals, args.trace), indent=1))


if __name__ == "__main__":
    main()
