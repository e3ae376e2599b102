"""Bench: compute saved by balance stopping, and what it costs in quality and false positives.

Runs the same spec twice (same seed, so the same sampled trials): with ganops' balance rules,
and with every rule off (the control). Reports trial-steps and wall time of each, the best
trial and its metric in each, and the false positives: healthy trials killed, i.e. trials the
rules stopped whose control twin ended well (see `false_positives`).

    python bench/stopping_savings.py bench/specs/grid25_bad_regions.yaml \\
        [--set trainer.steps=12500] [--keep DIR [--reuse]]

--keep DIR keeps both sweeps (DIR/with_rules, DIR/control: each its GANOPS_HOME, result.json
and wall time) for `bench/stopping_replay.py`; with --reuse, a sweep already kept there is read
instead of run again (the same spec and code give the same sampled trials).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from search_spaces.spec import Stopping

RULES_OFF = [f"stopping.{r}=null" for r in Stopping.model_fields]  # every rule, including ones added later


def sweep(spec: str, overrides: list[str], keep: Path | None) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        where = keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GANOPS_HOME": str(where / "runs")}
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sweep",
            str(Path(spec).resolve()),
            "--json",
            *sum((["--set", o] for o in overrides), []),
        ]
        t0 = time.time()
        out = subprocess.run(cmd, env=env, cwd=where, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"sweep failed:\n{out.stderr[-3000:]}")
        result, end = json.JSONDecoder().raw_decode(out.stdout)
        if out.stdout[end:].strip():
            print(f"note: stdout after the JSON: {out.stdout[end : end + 300]!r}", file=sys.stderr)
        wall = time.time() - t0
        (where / "result.json").write_text(json.dumps(result))
        (where / "wall_s").write_text(f"{wall:.1f}\n")
        return result, wall


def kept(where: Path) -> tuple[dict, float]:
    wall = where / "wall_s"
    return json.loads((where / "result.json").read_text()), float(wall.read_text()) if wall.exists() else float("nan")


def key(trial: dict) -> str:
    return json.dumps(trial["config"], sort_keys=True)


def false_positives(final: dict[str, float], stopped: set[str], mode: str) -> dict:
    """Healthy trials killed, judged by the control (every trial run to its end): a stopped
    trial is a false positive when its control twin ended better than the control's median AND
    better than the worst trial the rules let finish. The median alone misjudges a space where
    most trials fail (the median is then a failed trial: 0.0396 vs 0.0397 between two G's
    collapsed onto one mode); beating a kept trial alone would blame a right stop on a rule
    that missed some other trial. Both counts are reported."""
    sign = 1 if mode == "max" else -1
    median = statistics.median(final.values())
    kept = [sign * v for k, v in final.items() if k not in stopped]
    worst_kept = min(kept) if kept else float("inf")
    above_median = [k for k in stopped if k in final and sign * final[k] > sign * median]
    fps = [k for k in above_median if sign * final[k] > worst_kept]
    return {
        "control_median": median,
        "worst_kept": sign * worst_kept if kept else None,
        "above_median": len(above_median),
        "false_positives": len(fps),
        "false_positive_rate": round(len(fps) / len(stopped), 3) if stopped else 0.0,
        "false_positive_trials": sorted(fps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="spec override for both sweeps, e.g. trainer.steps=12500",
    )
    ap.add_argument("--keep", type=Path, help="keep both sweeps under this directory")
    ap.add_argument(
        "--reuse", action="store_true", help="with --keep: read a sweep already kept there instead of running it"
    )
    args = ap.parse_args()
    keep = args.keep.resolve() if args.keep else None

    def run(name: str, overrides: list[str]) -> tuple[dict, float]:
        where = keep / name if keep else None
        if args.reuse and where and (where / "result.json").exists():
            return kept(where)
        return sweep(args.spec, overrides, where)

    with_rules, wall_with = run("with_rules", args.overrides)
    control, wall_without = run("control", args.overrides + RULES_OFF)
    metric, mode = control["metric"], control["mode"]
    ctrl = {key(t): t for t in control["trials"]}
    stopped = [t for t in with_rules["trials"] if t["status"] == "stopped"]
    final = {key(t): t["metrics"].get(metric, float("nan")) for t in control["trials"]}
    steps_with = sum(t["step"] for t in with_rules["trials"])
    steps_without = sum(t["step"] for t in control["trials"])
    report = {
        "spec": args.spec,
        "overrides": args.overrides,
        "trials": len(control["trials"]),
        "metric": metric,
        "trial_steps": {
            "with_rules": steps_with,
            "without": steps_without,
            "saved_pct": round(100 * (1 - steps_with / steps_without), 1),
        },
        "wall_s": {"with_rules": round(wall_with, 1), "without": round(wall_without, 1)},
        "best": {
            "with_rules": {"trial": key(with_rules["best"]), metric: with_rules["best"]["metrics"][metric]}
            if with_rules["best"]
            else None,
            "without": {"trial": key(control["best"]), metric: control["best"]["metrics"][metric]}
            if control["best"]
            else None,
        },
        "stopped": [
            {
                "config": t["config"],
                "at_step": t["step"],
                "reason": t["stop_reason"],
                f"control_{metric}": ctrl.get(key(t), {}).get("metrics", {}).get(metric),
            }
            for t in stopped
        ],
        **false_positives(final, {key(t) for t in stopped}, mode),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
