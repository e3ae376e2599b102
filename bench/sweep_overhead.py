"""Bench: a sweep's wall time against its ideal, where the rest goes, and time to first metric.

Runs `ganops sweep SPEC --json` as a user would (a fresh process, a fresh MLflow store and Ray
storage in a temp dir), then reads the trials' own timings back from MLflow:

- ideal = sum of the trials' pure training seconds / trials running at once;
- per trial (means), its MLflow run's duration split without double counting into: TorchTrainer
  start (run start to the worker's entry: process start and imports), worker set-up (models,
  data, MLflow run), evaluator set-up, training, evaluation (each eval once), checkpoint writes
  with Ray's report, MLflow writes, and the rest (teardown and what no timer covers), from the
  timings each trial reports (trainers/loop.py);
- seconds from launching `ganops sweep` to the first metric stored in MLflow.

    python bench/sweep_overhead.py search_spaces/dcgan.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the trial's time outside training and evaluation (trainers/loop.py's timers; the first from its run's start)
PARTS = ("torchtrainer_start", "setup", "evaluator", "checkpoint", "mlflow")
# what the best trial scored at the eval it is judged by (its best, as `best` and `sample` use it)
SCORES = ("fid", "inception_score", "class_coverage", "kid", "precision", "recall", "mix_score", "modes", "hq_pct")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--keep", help="Keep the sweep's runs in this directory (default: a temp dir, removed).")
    args = ap.parse_args()
    spec = str(Path(args.spec).resolve())
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GANOPS_HOME": str(Path(tmp) / "runs")}
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sweep",
            spec,
            "--json",
            *sum((["--set", o] for o in args.overrides), []),
        ]
        launched = time.time()
        out = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        ended = time.time()
        if out.returncode != 0:
            sys.exit(f"sweep failed ({out.returncode}):\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout)

        from mlflow import MlflowClient

        client = MlflowClient(result["tracking_uri"])
        runs = client.search_runs(
            [result["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'"
        )
        train = evals = durations = 0.0
        parts = dict.fromkeys(PARTS, 0.0)
        first_metric_ms = None
        for r in runs:
            hist = client.get_metric_history(r.info.run_id, "train_seconds")
            train += max((m.value for m in hist), default=0.0)
            evals += sum(m.value for m in client.get_metric_history(r.info.run_id, "eval_seconds"))
            durations += (r.info.end_time - r.info.start_time) / 1000
            last = r.data.metrics  # the cumulative timers' latest values
            if "worker_entered_at" in last:
                parts["torchtrainer_start"] += last["worker_entered_at"] - r.info.start_time / 1000
            for k in PARTS[1:]:
                parts[k] += last.get(f"{k}_seconds", 0.0)
            first_loss = client.get_metric_history(r.info.run_id, "loss_d")
            if first_loss or hist:
                first = min(m.timestamp for m in [*first_loss, *hist])
                first_metric_ms = first if first_metric_ms is None else min(first_metric_ms, first)
        # Trials that can TRAIN at once: the CPU slots (ganops starts one more trial ahead,
        # but it only waits for a CPU; counting it would flatter the ideal).
        res = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "orchestrator.cli",
                    "validate",
                    spec,
                    "--json",
                    *sum((["--set", o] for o in args.overrides), []),
                ],
                capture_output=True,
                text=True,
            ).stdout
        )["spec"]["resources"]
        slots = max(1, int((os.cpu_count() or 1) // (res["workers_per_trial"] * res["cpus_per_worker"])))
        concurrent = min(len(runs), slots)
        ideal = train / concurrent
        wall = ended - launched
        report = {
            "spec": args.spec,
            "overrides": args.overrides,
            "trials": len(runs),
            "concurrent": concurrent,
            "wall_s": round(wall, 1),
            "ideal_s": round(ideal, 1),
            "wall_over_ideal": round(wall / ideal, 3),
            "train_s_sum": round(train, 1),
            "eval_s_sum": round(evals, 1),
            "trial_rest_s_mean": round((durations - train - evals) / max(1, len(runs)), 1),
            # the time outside training and evaluation, per trial (means); each second counted once
            "trial_breakdown_s_mean": {
                **{k: round(v / max(1, len(runs)), 2) for k, v in parts.items()},
                "untimed": round((durations - train - evals - sum(parts.values())) / max(1, len(runs)), 2),
            },
            "outside_trials_s": round(wall - durations / concurrent, 1),
            "first_metric_s": round(first_metric_ms / 1000 - launched, 1) if first_metric_ms else None,
            "best": _best(result),
        }
        print(json.dumps(report, indent=1))


def _best(result: dict) -> dict | None:
    best = result.get("best")
    if not best:
        return None
    judged = best.get("best_metrics") or best["metrics"]
    return {
        "trial_id": best["trial_id"],
        "config": best["config"],
        "at_step": best.get("best_step") or best["step"],
        **{k: round(judged[k], 4) for k in SCORES if k in judged},
        f"last_{result['metric']}": best["metrics"].get(result["metric"]),
    }


if __name__ == "__main__":
    main()
