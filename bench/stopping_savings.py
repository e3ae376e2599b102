"""Bench: compute saved by balance stopping, and what it costs in quality and false positives.

Runs the same spec twice per seed (same seed, so the same sampled trials): with ganops' balance
rules, and with every rule off (the control). Reports trial-steps and wall time of each, the best
trial and its metric in each, and the false positives: healthy trials killed, judged by the
control twin of each stopped trial (see `false_positives`). The thresholds are the spec's
stopping section as loaded (the defaults unless the spec sets them); the report prints them and
the commit they came from, so a reader can check they were frozen before the run.

    python bench/stopping_savings.py bench/specs/ring8_bad_regions.yaml --seeds 0 1 2 \\
        [--set resources.in_process=true] [--keep DIR [--reuse]]

--seeds S ...: one pair of sweeps per seed (`--set sweep.seed=S --set trainer.seed=S`: different
sampled trials and initial weights); without it, the spec's own seed, once.
--keep DIR keeps both sweeps of each seed (DIR/seedS/with_rules, DIR/seedS/control: each its
GANOPS_HOME, result.json and wall time) for `bench/stopping_replay.py`; with --reuse, a sweep
already kept there is read instead of run again (the same spec and code give the same trials).
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
from trainers.metric_names import best_first

REPO = Path(__file__).resolve().parents[1]

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


def false_positives(final: dict[str, float], stopped: set[str], mode: str, top: int = 3) -> dict:
    """Healthy trials killed, judged by the control (every trial run to its end), as the issue
    defines it before any run: a stopped trial is a false positive when its control twin finished
    in the control's top `top` (3). The median-only count beside it (control twin better than
    the control's median) is looser: in a space where most trials fail, the median is a failed
    trial, and a stop above it can still be right."""
    sign = 1 if mode == "max" else -1
    ranked = best_first(final, final.get, mode)  # trial keys, best first; a missing/NaN metric last
    best_few = set(ranked[:top])
    median = statistics.median([v for v in final.values() if v == v])  # NaN (no metric) left out
    above_median = sorted(k for k in stopped if k in final and sign * final[k] > sign * median)
    fps = sorted(k for k in stopped if k in best_few)
    return {
        "control_median": median,
        f"control_top{top}": [final[k] for k in ranked[:top]],
        "false_positives": len(fps),
        "false_positive_trials": fps,
        "above_median": len(above_median),
        "above_median_trials": above_median,
    }


def thresholds(loaded) -> dict:
    """The balance rules' thresholds as the sweep will load them (`loaded`: the spec with the
    run's overrides), and the commit of the code."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "orchestrator/stopping.py", "search_spaces/spec.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return {
        "commit": git.stdout.strip() or None,
        "rules_code_modified": bool(dirty.stdout.strip()),
        "stopping": loaded.stopping.model_dump(),
    }


def ceiling(final: dict[str, float], steps: dict[str, int], mode: str, first_eval: int, top: int = 3) -> dict:
    """What any stopping rule could do on this seed, judged by the same definition: an oracle
    that stops every control trial outside the top `top` at the first eval saves the most
    trial-steps with 0 false positives. And a rule that stops k of n trials scores at least
    k - (n - top) false positives, however it picks them (at most n - top trials rank below the
    top). The targets are reachable on a seed only where the oracle's share reaches them."""
    ranked = best_first(final, final.get, mode)
    below = ranked[top:]
    saved = sum(max(0, steps[k] - first_eval) for k in below)
    return {"oracle_saved_pct": round(100 * saved / sum(steps.values()), 1), "stoppable_without_fp": len(below)}


def compare(with_rules: dict, control: dict, walls: tuple[float, float], first_eval: int) -> dict:
    """One seed: trial-steps saved, best trial with and without the rules, false positives, and
    the ceiling any rule has on this seed (`ceiling`)."""
    metric, mode = control["metric"], control["mode"]
    ctrl = {key(t): t for t in control["trials"]}
    stopped = [t for t in with_rules["trials"] if t["status"] == "stopped"]
    final = {key(t): t["metrics"].get(metric, float("nan")) for t in control["trials"]}
    steps_with = sum(t["step"] for t in with_rules["trials"])
    steps_without = sum(t["step"] for t in control["trials"])

    def best(result: dict) -> dict | None:
        b = result["best"]
        return {"trial": key(b), metric: b["metrics"][metric]} if b else None

    b_with, b_without = best(with_rules), best(control)
    return {
        "trials": len(control["trials"]),
        "metric": metric,
        "trial_steps": {
            "with_rules": steps_with,
            "without": steps_without,
            "saved_pct": round(100 * (1 - steps_with / steps_without), 1),
        },
        "wall_s": {"with_rules": round(walls[0], 1), "without": round(walls[1], 1)},
        "best": {"with_rules": b_with, "without": b_without},
        "same_best": bool(b_with and b_without and b_with["trial"] == b_without["trial"]),
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
        "least_false_positives_for_these_stops": max(0, len(stopped) - (len(final) - 3)),
        **ceiling(final, {key(t): t["step"] for t in control["trials"]}, mode, first_eval),
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
    ap.add_argument("--seeds", type=int, nargs="+", help="one pair of sweeps per seed (sweep.seed and trainer.seed)")
    ap.add_argument("--keep", type=Path, help="keep both sweeps under this directory")
    ap.add_argument(
        "--reuse", action="store_true", help="with --keep: read a sweep already kept there instead of running it"
    )
    args = ap.parse_args()
    keep = args.keep.resolve() if args.keep else None
    from search_spaces.loader import load_spec

    loaded = load_spec(Path(args.spec), args.overrides)
    frozen = thresholds(loaded)  # read before any sweep runs
    first_eval = loaded.trainer.eval_every
    print(json.dumps({"thresholds": frozen}), file=sys.stderr, flush=True)

    def run(where: Path | None, overrides: list[str]) -> tuple[dict, float]:
        if args.reuse and where and (where / "result.json").exists():
            return kept(where)
        return sweep(args.spec, overrides, where)

    per_seed = []
    for seed in args.seeds or [None]:
        sets = list(args.overrides) + ([f"sweep.seed={seed}", f"trainer.seed={seed}"] if seed is not None else [])
        base = (keep / f"seed{seed}" if seed is not None else keep) if keep else None
        with_rules, wall_with = run(base / "with_rules" if base else None, sets)
        control, wall_without = run(base / "control" if base else None, sets + RULES_OFF)
        one = {"seed": seed, **compare(with_rules, control, (wall_with, wall_without), first_eval)}
        shown = ("seed", "trial_steps", "same_best", "false_positives", "oracle_saved_pct")
        print(json.dumps({k: one[k] for k in shown}), file=sys.stderr)
        per_seed.append(one)

    steps_with = sum(r["trial_steps"]["with_rules"] for r in per_seed)
    steps_without = sum(r["trial_steps"]["without"] for r in per_seed)
    report = {
        "spec": args.spec,
        "overrides": args.overrides,
        "thresholds": frozen,
        "seeds": per_seed,
        "total": {
            "trial_steps_with_rules": steps_with,
            "trial_steps_without": steps_without,
            "saved_pct": round(100 * (1 - steps_with / steps_without), 1),
            "stopped": sum(len(r["stopped"]) for r in per_seed),
            "false_positives_top3": sum(r["false_positives"] for r in per_seed),
            "above_median": sum(r["above_median"] for r in per_seed),
            "same_best": all(r["same_best"] for r in per_seed),
            "least_false_positives_for_these_stops": sum(r["least_false_positives_for_these_stops"] for r in per_seed),
            # the oracle (`ceiling`) over every seed: stop each seed's trials outside its top 3 at the first eval
            "oracle_saved_pct": round(
                sum(r["oracle_saved_pct"] * r["trial_steps"]["without"] for r in per_seed) / steps_without, 1
            ),
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
