"""Bench: the sweep driver's cost per trial result at 10, 100, 1,000 and 10,000 trials (issue 17).

No training and no Ray cluster: synthetic eval reports go through the driver-side objects a
sweep builds (orchestrator/sweep.py `_execute`), called the way Tune calls them, on real Tune
`Trial` objects:

- `BalanceStopper` (every balance rule, and the budget sum: `max_usd` set so it never trips),
  posting its stops on a `TrialBoard` (the class the board actor runs, called in-process);
- `SweepProgress` in both modes: plain lines (stderr is a file or a CI log) and the rich Live
  table (a terminal; drawn at its own 2 Hz in its thread, as in a sweep);
- the contact-sheet selection (the best `contact_sheet.MAX_ROWS` trials) at every trial end,
  as the progress callback asks for a sheet then;
- the leaderboard (`SweepResult.leaderboard()`, `.best`, `.to_dict()`) once at the end.

Trials run in waves of `--concurrent` (default 64): each reports `--evals` evals (default 5),
1 in 10 diverges at its third eval and is stopped. Closing a stopped trial's MLflow run is
left out (it is tracking-server load: bench/tracking_load.py); everything else is the sweep's
own code. Reported: microseconds per result (every hook, stopper and selection that result
caused, and the end's leaderboard, divided by the results); apart, what a sweep pays once
whatever its size (starting and stopping the Live display: 10-15 ms, which alone is 300 us a
result in a 10-trial sweep of 48 results); the cost of one table draw and one summary line;
and the size of what Tune pickles of ours into each experiment-state save (the callback and
the stopper it holds).

    nice -n 10 python bench/driver_scale.py [--sizes 10 100 1000 10000] [--json]

Target (issue 17): per-result time flat within 2x from 10 to 10,000 trials.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import random
import statistics
import sys
import time
from types import SimpleNamespace

from rich.console import Console

from orchestrator.board import TrialBoard
from orchestrator.contact_sheet import MAX_ROWS
from orchestrator.progress import SweepProgress
from orchestrator.results import SweepResult, TrialSummary
from orchestrator.stopping import BalanceStopper
from search_spaces.spec import Stopping

STEPS_PER_EVAL = 100
MIN_RESULTS = 20_000  # results per size and mode at least, over as many runs as that takes
SEARCHED = ["lr_g", "lr_d", "beta1"]


class InProcessBoard:
    """The board's `stop.remote(tid)` as the stopper calls it on the actor handle, run in this
    process: the actor call is a Ray message whose cost does not depend on the sweep's size."""

    def __init__(self) -> None:
        self.board = TrialBoard()
        self.stop = SimpleNamespace(remote=self.board.stop)


def _result(rng: random.Random, step: int, cost: float, diverged: bool) -> dict:
    loss_d = math.nan if diverged else 1.386 + rng.uniform(-0.2, 0.2)
    return {
        "step": step,
        "fid": rng.uniform(20, 300),
        "loss_d": loss_d,
        "loss_g": 0.693 + rng.uniform(-0.2, 0.2),
        "d_x": 0.5 + rng.uniform(-0.1, 0.1),
        "d_g_z": 0.5 + rng.uniform(-0.1, 0.1),
        "grad_norm_d": rng.uniform(0.5, 2),
        "grad_norm_g": rng.uniform(0.5, 2),
        "cost_usd": cost,
        "training_iteration": step // STEPS_PER_EVAL,
    }


def run_once(n: int, *, evals: int, concurrent: int, rich_table: bool, seed: int = 0) -> dict:
    """Drive one synthetic sweep of `n` trials; the timings of its driver-side work."""
    from ray.tune.experiment import Trial

    rng = random.Random(seed)
    steps = evals * STEPS_PER_EVAL
    trials = [
        Trial("__fake", config={k: rng.uniform(1e-5, 1e-2) for k in SEARCHED}, trial_id=f"bench_{i:05d}", stub=True)
        for i in range(n)
    ]
    board = InProcessBoard()
    stopper = BalanceStopper(Stopping(), "fid", "min", board=board, max_usd=1e12)
    sink = io.StringIO()
    console = Console(file=sink, width=160, force_terminal=rich_table, color_system=None)
    progress = SweepProgress(
        metric="fid",
        mode="min",
        steps=steps,
        searched=SEARCHED,
        tracking_uri="sqlite:////nonexistent/mlflow.db",
        console=console,
        experiment_ids=["0"],
        stopper=stopper,
        parent_run_id=None,
    )
    progress._close_run = lambda *a, **k: (
        None
    )  # MLflow writes: tracking-server load, measured by bench/tracking_load.py
    results = 0
    t_setup = time.perf_counter()
    progress.setup()  # once per sweep: starts the Live display (and its thread) on a terminal
    t0 = time.perf_counter()
    setup = t0 - t_setup
    it = 0
    for w in range(0, n, concurrent):
        wave = trials[w : w + concurrent]
        for t in wave:
            progress.on_trial_start(it, trials, t)
        live = list(wave)
        for e in range(1, evals + 1):
            still = []
            for t in live:
                it += 1
                r = _result(rng, e * STEPS_PER_EVAL, 0.01 * e, diverged=(int(t.trial_id[-5:]) % 10 == 3 and e == 3))
                t.update_last_result(r)
                stop = stopper(t.trial_id, r)
                progress.on_trial_result(it, trials, t, r)
                progress.on_step(it, trials)
                results += 1
                if stop or board.board.poll(t.trial_id):
                    progress.on_trial_complete(it, trials, t)
                    progress._ranked_trial_ids(MAX_ROWS)  # the contact sheet a trial end asks for
                else:
                    still.append(t)
            live = still
        for t in live:
            progress.on_trial_complete(it, trials, t)
            progress._ranked_trial_ids(MAX_ROWS)
    t_end = time.perf_counter()
    progress.on_experiment_end(trials)  # once per sweep: the last summary line, or the table's last draw
    once = setup + time.perf_counter() - t_end
    summaries = [
        TrialSummary(
            t.trial_id,
            None,
            progress.rows[t.trial_id]["state"],
            dict(t.config),
            dict(t.last_result),
            t.last_result.get("step", 0),
        )
        for t in trials
    ]
    result = SweepResult("bench", "bench", "0", "p", "sqlite:///x", "/tmp", "fid", "min", 0.0, None, trials=summaries)
    result.trials = result.leaderboard()
    result.to_dict()
    total = time.perf_counter() - t0 - (once - setup)
    # One draw of the live table and one summary line at this size (a terminal redraws at 2 Hz;
    # a CI log gets a summary every 30 s).
    t1 = time.perf_counter()
    Console(file=io.StringIO(), width=160, color_system=None).print(progress._render())
    draw = time.perf_counter() - t1
    t2 = time.perf_counter()
    progress.best(), progress._counts()
    summary = time.perf_counter() - t2
    stopped = sum(r["state"] == "stopped" for r in progress.rows.values())
    # What Tune pickles of ours into each experiment-state save: the callback (with the stopper it holds).
    del progress._close_run
    state = len(pickle.dumps(progress))
    return {
        "trials": n,
        "results": results,
        "stopped": stopped,
        "us_per_result": 1e6 * total / results,
        "once_per_sweep_ms": 1e3 * once,
        "state_mb": state / 1e6,
        "table_draw_ms": 1e3 * draw,
        "summary_ms": 1e3 * summary,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--evals", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds over every size and mode; the median of the runs is reported"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if any(s < 1 for s in args.sizes) or args.evals < 1 or args.concurrent < 1 or args.repeat < 1:
        print("driver_scale: --sizes, --evals, --concurrent and --repeat take positive integers", file=sys.stderr)
        return 2
    # Rounds: every size and mode once per round, so a shared machine's load, which changes by
    # the minute, falls on all sizes alike. A small sweep is over in milliseconds, where that
    # noise is as big as the figure: it runs several times a round, MIN_RESULTS results in all.
    modes = ("plain", "rich")
    runs: dict[tuple[str, int], list[dict]] = {(m, n): [] for m in modes for n in args.sizes}
    for k in range(args.repeat):
        for n in args.sizes:
            for mode in modes:
                times = max(1, -(-MIN_RESULTS // (args.repeat * n * args.evals)))
                runs[mode, n] += [
                    run_once(
                        n, evals=args.evals, concurrent=args.concurrent, rich_table=mode == "rich", seed=k * times + j
                    )
                    for j in range(times)
                ]
    rows = []
    for (mode, n), done in runs.items():
        row = {
            "mode": mode,
            "runs": len(done),
            **{k: done[0][k] for k in ("trials", "results", "stopped")},
            **{
                k: statistics.median(r[k] for r in done)
                for k in ("us_per_result", "once_per_sweep_ms", "table_draw_ms", "summary_ms", "state_mb")
            },
        }
        rows.append(row)
        if not args.json:
            print(
                f"{mode:5s} {n:6d} trials {row['results']:6d} results: {row['us_per_result']:8.1f} us/result, once "
                f"per sweep {row['once_per_sweep_ms']:6.2f} ms, "
                f"table draw {row['table_draw_ms']:8.2f} ms, summary {row['summary_ms']:7.3f} ms, pickled state "
                f"{row['state_mb']:.2f} MB",
                file=sys.stderr,
                flush=True,
            )
    ratios = {}
    for mode in ("plain", "rich"):
        per = [r["us_per_result"] for r in rows if r["mode"] == mode]
        ratios[mode] = max(per) / min(per)
    out = {
        "rows": rows,
        "flat_ratio": ratios,
        "target": 2.0,
        "met": all(v <= 2.0 for v in ratios.values()),
        "load": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"max/min us per result: plain {ratios['plain']:.2f}x, rich {ratios['rich']:.2f}x (target <= 2x); load "
            f"{out['load']:.2f} on {out['cpus']} CPUs",
            file=sys.stderr,
        )
    return 0 if out["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
