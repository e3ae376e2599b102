"""Bench: compute saved by balance stopping, and what it costs in quality and false positives.

Runs the same spec twice (same seed, so the same sampled trials): with ganops' balance rules,
and with every rule off (the control). Reports trial-steps and wall time of each, the best
trial and its metric in each, and the false positives: trials the rules stopped whose control
twin ended in the better half of the control's trials (healthy trials killed).

    python bench/stopping_savings.py bench/specs/grid25_bad_regions.yaml [--set trainer.steps=12500] [--keep DIR] [--control DIR]

--keep DIR keeps both sweeps (DIR/with_rules, DIR/control: each its GANOPS_HOME and result.json)
for `bench/stopping_replay.py`; --control DIR reuses a kept control instead of running it again
(the same spec and code give the same sampled trials).
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
        cmd = [sys.executable, "-m", "orchestrator.cli", "sweep", str(Path(spec).resolve()), "--json", *sum((["--set", o] for o in overrides), [])]
        t0 = time.time()
        out = subprocess.run(cmd, env=env, cwd=where, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"sweep failed:\n{out.stderr[-3000:]}")
        result, end = json.JSONDecoder().raw_decode(out.stdout)
        if out.stdout[end:].strip():
            print(f"note: stdout after the JSON: {out.stdout[end:end + 300]!r}", file=sys.stderr)
        wall = time.time() - t0
        (where / "result.json").write_text(json.dumps(result))
        (where / "wall_s").write_text(f"{wall:.1f}\n")
        return result, wall


def kept(control: Path) -> tuple[dict, float]:
    """A control kept by --keep (or run by hand: `ganops sweep SPEC --json` + rules off, with
    GANOPS_HOME=DIR/runs, stdout in DIR/result.json)."""
    wall = control / "wall_s"
    return json.loads((control / "result.json").read_text()), float(wall.read_text()) if wall.exists() else float("nan")


def key(trial: dict) -> str:
    return json.dumps(trial["config"], sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="spec override for both sweeps, e.g. trainer.steps=12500")
    ap.add_argument("--keep", type=Path, help="keep both sweeps under this directory")
    ap.add_argument("--control", type=Path, help="a kept control sweep to reuse")
    args = ap.parse_args()
    keep = args.keep.resolve() if args.keep else None
    with_rules, wall_with = sweep(args.spec, args.overrides, keep / "with_rules" if keep else None)
    control, wall_without = kept(args.control) if args.control else sweep(args.spec, args.overrides + RULES_OFF, keep / "control" if keep else None)
    metric, mode = control["metric"], control["mode"]
    sign = 1 if mode == "max" else -1
    ctrl = {key(t): t for t in control["trials"]}
    ctrl_scores = [t["metrics"].get(metric, float("nan")) for t in control["trials"]]
    median = statistics.median(ctrl_scores)
    stopped = [t for t in with_rules["trials"] if t["status"] == "stopped"]
    false_pos = [t for t in stopped if key(t) in ctrl and sign * ctrl[key(t)]["metrics"].get(metric, float("-inf") * sign) > sign * median]
    steps_with = sum(t["step"] for t in with_rules["trials"])
    steps_without = sum(t["step"] for t in control["trials"])
    report = {
        "spec": args.spec, "overrides": args.overrides, "trials": len(control["trials"]), "metric": metric,
        "trial_steps": {"with_rules": steps_with, "without": steps_without, "saved_pct": round(100 * (1 - steps_with / steps_without), 1)},
        "wall_s": {"with_rules": round(wall_with, 1), "without": round(wall_without, 1)},
        "best": {
            "with_rules": {"trial": key(with_rules["best"]), metric: with_rules["best"]["metrics"][metric]} if with_rules["best"] else None,
            "without": {"trial": key(control["best"]), metric: control["best"]["metrics"][metric]} if control["best"] else None,
        },
        "stopped": [{"config": t["config"], "at_step": t["step"], "reason": t["stop_reason"], f"control_{metric}": ctrl.get(key(t), {}).get("metrics", {}).get(metric)} for t in stopped],
        "control_median": median,
        "false_positives": len(false_pos),
        "false_positive_rate": round(len(false_pos) / len(stopped), 3) if stopped else 0.0,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
