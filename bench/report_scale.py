"""Bench: `ganops compare` and `ganops report` on a sweep of 1,000 trial runs (issue 17).

Builds a local SQLite MLflow store holding one sweep parent run and N trial runs through
ganops' own MLflow writers (orchestrator/tracking.py: `start_sweep_run`, `trial_run`,
`end_run`; the eval metrics batched per eval as trainers/trial_log.py logs them; a 64x64
sample grid per eval for 1 trial in 5; 1 trial in 10 stopped with a stop reason and its
evidence), then ends it as a sweep does (`_finish_parent`: leaderboard.csv and .md; the
contact sheet of the best 32). No training. The store is built once and kept under
--cache (default /tmp/ganops_report_scale/N) for the next runs.

Then it times the commands as a person runs them, in a subprocess each:
`ganops compare SWEEP` (median of --repeat runs) and `ganops report SWEEP --out r.html`, and
the report's size.

    nice -n 10 python bench/report_scale.py [--trials 1000] [--repeat 3] [--json]

Targets (issue 17), at 1,000 trials: compare <= 5 s; report <= 30 s and <= 20 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVALS = 5
STEPS_PER_EVAL = 200
SWEEP_ID = "scale-bench-20261201-000000"
TARGETS = {"compare_s": 5.0, "report_s": 30.0, "report_mb": 20.0}


def build_store(home: Path, trials: int, seed: int = 0) -> float:
    """A store of one sweep with `trials` trial runs, written as a sweep writes them; seconds taken."""
    import numpy as np
    from mlflow import MlflowClient

    from orchestrator import tracking
    from orchestrator.contact_sheet import log_contact_sheet
    from orchestrator.results import SweepResult, TrialSummary
    from orchestrator.sweep import _finish_parent
    from search_spaces.loader import load_spec
    from trainers.trial_log import _batch

    t0 = time.perf_counter()
    rng = random.Random(seed)
    spec = load_spec(REPO / "search_spaces" / "dcgan.yaml")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "scale-bench", uri)
    parent = tracking.start_sweep_run(
        client,
        exp,
        SWEEP_ID,
        spec.model_dump(mode="json"),
        spec.spec_hash,
        None,
        "report_scale bench",
        spec.metric,
        spec.mode,
        str(home / "ray"),
    )
    trainer_cfg = spec.trainer.model_dump(mode="json")
    summaries = []
    for i in range(trials):
        tid = f"bench_{i:05d}"
        sampled = {k: rng.uniform(1e-5, 1e-2) for k in spec.search}
        run_id = tracking.trial_run(
            client, exp, parent, SWEEP_ID, tid, f"trial_{i:05d}", spec.spec_hash, {**trainer_cfg, **sampled}, sampled
        )
        stopped = i % 10 == 3
        evals = 3 if stopped else EVALS
        fid = rng.uniform(50, 400)
        last = {}
        for e in range(1, evals + 1):
            step = e * STEPS_PER_EVAL
            fid *= rng.uniform(0.7, 1.0)
            last = {
                "step": step,
                spec.metric: fid,
                "loss_d": 1.386 + rng.uniform(-0.3, 0.3),
                "loss_g": 0.693 + rng.uniform(-0.2, 0.6),
                "d_x": 0.5 + rng.uniform(-0.2, 0.3),
                "d_g_z": 0.5 + rng.uniform(-0.3, 0.1),
                "grad_norm_d": rng.uniform(0.5, 5),
                "grad_norm_g": rng.uniform(0.5, 5),
                "class_coverage": rng.randrange(4, 11),
            }
            client.log_batch(run_id, metrics=_batch(step, last))
            if i % 5 == 0:  # (64, 64, 3) uint8: an 8x8 grid of 8x8 samples, as small as an MNIST grid's preview
                client.log_image(
                    run_id,
                    np.random.default_rng(i * 10 + e).integers(0, 255, (64, 64, 3), dtype=np.uint8),
                    key="samples",
                    step=step,
                )
        if stopped:
            client.set_tag(run_id, "stop_evidence", json.dumps({"d_x": 0.99, "d_g_z_geo": 0.001, "evals": 3}))
            tracking.end_run(client, run_id, "KILLED", "d_overpowers")
        else:
            tracking.end_run(client, run_id, "FINISHED")
        summaries.append(
            TrialSummary(
                tid,
                run_id,
                "stopped" if stopped else "done",
                sampled,
                last,
                last["step"],
                stop_reason="d_overpowers (d_x=0.99, d_g_z_geo=0.001, evals=3)" if stopped else None,
            )
        )
    result = SweepResult(
        SWEEP_ID,
        "scale-bench",
        exp,
        parent,
        uri,
        str(home / "ray"),
        spec.metric,
        spec.mode,
        time.perf_counter() - t0,
        None,
        trials=summaries,
    )
    result.trials = result.leaderboard()
    _finish_parent(client, result)
    log_contact_sheet(client, parent, [(t.trial_id, t.run_id) for t in result.trials if t.run_id])
    (home / "built.json").write_text(json.dumps({"trials": trials, "uri": uri, "sweep_id": SWEEP_ID}))
    return time.perf_counter() - t0


def _ganops(*args: str, env: dict) -> float:
    """Seconds for one `ganops ...` in a subprocess (output discarded); exit 2 on its failure."""
    t0 = time.perf_counter()
    script = Path(sys.executable).with_name("ganops")  # the console script a person runs
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator.cli"]
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        print(
            f"report_scale: `ganops {' '.join(args)}` exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr
        )
        raise SystemExit(1)
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command; the median is reported")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="where the store is built and kept (default /tmp/ganops_report_scale/TRIALS)",
    )
    ap.add_argument("--rebuild", action="store_true", help="build the store again even if --cache holds one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.repeat < 1:
        print("report_scale: --trials and --repeat take positive integers", file=sys.stderr)
        return 2
    home = (args.cache or Path("/tmp/ganops_report_scale") / str(args.trials)).resolve()
    built = home / "built.json"
    build_s = None
    if args.rebuild or not built.is_file() or json.loads(built.read_text()).get("trials") != args.trials:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        print(f"building a store of {args.trials} trial runs in {home} ...", file=sys.stderr, flush=True)
        build_s = build_store(home, args.trials)
    uri = json.loads(built.read_text())["uri"]
    env = {**os.environ, "GANOPS_HOME": str(home)}
    compare = [_ganops("compare", SWEEP_ID, "--tracking-uri", uri, env=env) for _ in range(args.repeat)]
    compare_json = [_ganops("compare", SWEEP_ID, "--tracking-uri", uri, "--json", env=env) for _ in range(args.repeat)]
    out = home / "r.html"
    report = [
        _ganops("report", SWEEP_ID, "--tracking-uri", uri, "--out", str(out), env=env) for _ in range(args.repeat)
    ]
    figures = {
        "trials": args.trials,
        "build_s": build_s,
        "compare_s": statistics.median(compare),
        "compare_json_s": statistics.median(compare_json),
        "report_s": statistics.median(report),
        "report_mb": out.stat().st_size / 1e6,
        "report": str(out),
        "load": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    figures["met"] = all(figures[k] <= v for k, v in TARGETS.items())
    if args.json:
        print(json.dumps(figures))
    else:
        built_note = f"store built in {build_s:.0f} s; " if build_s is not None else "store from the cache; "
        print(
            f"{args.trials} trials: {built_note}compare {figures['compare_s']:.2f} s (--json "
            f"{figures['compare_json_s']:.2f} s), "
            f"report {figures['report_s']:.2f} s, {figures['report_mb']:.2f} MB ({out}); targets: compare <= 5 s, "
            "report <= 30 s and <= 20 MB: "
            f"{'met' if figures['met'] else 'MISSED'}; load {figures['load']:.2f} on {figures['cpus']} CPUs",
            file=sys.stderr,
        )
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
