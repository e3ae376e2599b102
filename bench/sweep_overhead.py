"""Bench: a sweep's wall time against its ideal, where the rest goes, and time to first metric.

Runs `ganops sweep SPEC --json` as a user would (a fresh process, a fresh MLflow store and Ray
storage in a temp dir), then reads the trials' own timings back from MLflow:

- ideal = sum of the trials' pure training seconds / trials running at once;
- per trial: MLflow run duration split into training, evaluation (FID, grids) and the rest
  (TorchTrainer start and teardown, checkpoints, MLflow writes);
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
        first_metric_ms = None
        for r in runs:
            hist = client.get_metric_history(r.info.run_id, "train_seconds")
            train += max((m.value for m in hist), default=0.0)
            evals += sum(m.value for m in client.get_metric_history(r.info.run_id, "eval_seconds"))
            durations += (r.info.end_time - r.info.start_time) / 1000
            if hist:
                first = min(m.timestamp for m in hist)
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
            "outside_trials_s": round(wall - durations / concurrent, 1),
            "first_metric_s": round(first_metric_ms / 1000 - launched, 1) if first_metric_ms else None,
            "best": {k: result["best"][k] for k in ("trial_id", "config")}
            | {result["metric"]: result["best"]["metrics"][result["metric"]]}
            if result.get("best")
            else None,
        }
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
