"""Bench: what ganops' MLflow logging costs a sweep, through a real `mlflow server`.

A real Ray Tune sweep of N trivial function trials (default 8, 2 at a time on 1 CPU each),
tracked by a real `mlflow server` (SQLite backend, proxied artifacts) on 127.0.0.1. Each trial
makes exactly the MLflow calls a ganops trial makes, through ganops' own functions, with the
demo sweep's payloads:

- trial driver (orchestrator/trial.py): `tracking.trial_run` (child run + the full trainer
  config as params), and at the end `get_run` + `tracking.end_run`;
- rank 0 every `log_every` steps (trainers/trial_log.py `LossLog`): the step's scalars, as a
  trial logs them between evals;
- rank 0 per eval (`MlflowSink.log`): one `log_batch` of the eval's metrics, `log_image` of the
  fixed-noise grid, `log_artifact` of generator.pt (and generator_best/ when the eval is the
  best so far). Metric names, the grid and the generator come from a real eval of
  search_spaces/dcgan.yaml's model, so the metric count is today's;
- in place of training, each eval burns `--busy-seconds` of CPU (1 thread), so the server
  answers while the machine is busy, as it is in a real sweep.

The sweep's driver then does what run_sweep does once: the parent run, the trials' run ids
(one search), the registration and the leaderboard + contact sheet (`_finish_parent`).

MLflow time is what those calls take; Tune and the CPU burn are not counted. A trial's MLflow
calls delay that trial, so they add to the sweep's wall (N x per-trial / trials at once) plus
the driver's once-per-sweep calls. The denominator is measured in the same run: first the
real demo sweep (`ganops sweep search_spaces/dcgan.yaml`, tracked by the same server) runs,
and its trials' own timers (`mlflow_seconds`, trainers/loop.py) give its MLflow share
directly; its wall and mean trial time are what the synthetic figures are compared with.

    python bench/mlflow_logging_cost.py [--trials 8] [--evals E] [--busy-seconds S]
    python bench/mlflow_logging_cost.py --trials 4 --demo-set trainer.steps=1000   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO_SPEC = REPO / "search_spaces" / "dcgan.yaml"


def measure_demo(uri: str, tmp: Path, overrides: list[str]) -> dict:
    """Run the demo sweep for real against the tracking server `uri`; its wall, its trials' mean
    time, and their MLflow time as their own timers counted it (rank 0's writes)."""
    import subprocess

    from mlflow import MlflowClient

    env = {**os.environ, "GANOPS_HOME": str(tmp / "demo")}
    sets = sum((["--set", o] for o in [f"tracking.uri={uri}", *overrides]), [])
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(DEMO_SPEC), "--json", *sets],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"the demo sweep failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    client = MlflowClient(uri)
    runs = client.search_runs(
        [result["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'"
    )
    best = result.get("best") or {}
    durations = [(r.info.end_time - r.info.start_time) / 1000 for r in runs]
    logged = [r.data.metrics.get("mlflow_seconds", 0.0) for r in runs]
    evals = [len(client.get_metric_history(r.info.run_id, "eval_seconds")) for r in runs]
    trained = [r.data.metrics.get("train_seconds", 0.0) for r in runs]
    return {
        "overrides": overrides,
        "wall_s": wall,
        "trials": len(runs),
        "concurrent": 2,  # dcgan.yaml: 1 CPU per trial on this 2-CPU machine
        "trial_s_mean": statistics.mean(durations),
        "mlflow_s_mean": statistics.mean(logged),
        "mlflow_share_of_trial": sum(logged) / sum(durations),
        "train_s_per_eval": sum(trained) / max(1, sum(evals)),
        "evals_per_trial": round(statistics.mean(evals)),
        "best": {  # the demo's own result, for the record (this bench does not judge it)
            "config": best.get("config"),
            "metrics": {
                k: v
                for k, v in (best.get("metrics") or {}).items()
                if k in ("fid", "inception_score", "class_coverage")
            },
            "best_step": best.get("best_step"),
        },
    }


def _timed(record: dict[str, float], name: str, fn):
    """Wrap a client method so each call's seconds add up under `name` (instrumentation only)."""

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            record[name] = record.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def real_eval_payload(spec, tmp: Path) -> tuple[dict[str, float], dict[str, float], object, Path]:
    """One real eval of the demo's model: its metrics (names and count), grid and generator file."""
    import numpy as np
    import torch

    from trainers.checkpoint import save_generator
    from trainers.config import TrainerConfig
    from trainers.data import make_data
    from trainers.evaluate import Evaluator
    from trainers.loop import fixed_noise
    from trainers.models import build_models
    from trainers.step import build_optimizers, train_step

    cfg = TrainerConfig.model_validate(spec.trainer.model_dump())
    torch.manual_seed(0)
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    step_scalars = train_step(G, D, opt_g, opt_d, make_data(cfg), cfg, torch.Generator().manual_seed(0), step=1)
    metrics = dict(step_scalars)
    scores, image = Evaluator(cfg).evaluate(G, fixed_noise(cfg))
    metrics = {k: float(np.mean(v)) for k, v in {**metrics, **scores}.items()}
    metrics.update(step=cfg.eval_every, train_seconds=10.0, eval_seconds=0.5)
    gen_file = tmp / "generator.pt"
    save_generator(gen_file, G, cfg.model_dump())
    return step_scalars, metrics, image, gen_file


def make_trial(
    spec,
    uri: str,
    experiment_id: str,
    parent: str,
    sweep_id: str,
    step_scalars,
    metrics,
    image,
    gen_file: Path,
    evals: int,
    busy: float,
):
    from ray import tune

    from search_spaces.tune_space import trial_trainer_config

    spec_dump = spec.model_dump(mode="json")
    steps = spec.trainer.eval_every * evals

    def trial(config):
        import torch
        from mlflow import MlflowClient

        from orchestrator import tracking
        from search_spaces.spec import SweepSpec
        from trainers.trial_log import LossLog, MlflowSink

        torch.set_num_threads(1)
        started = time.perf_counter()
        s = SweepSpec.model_validate(spec_dump)
        ctx = tune.get_context()
        trial_id = ctx.get_trial_id()
        calls: dict[str, float] = {}
        # The trial driver: open the trial's run (orchestrator/trial.py).
        client = MlflowClient(uri)
        t0 = time.perf_counter()
        run_id = tracking.trial_run(
            client,
            experiment_id,
            parent,
            sweep_id,
            trial_id,
            ctx.get_trial_name(),
            s.spec_hash,
            trial_trainer_config(s, config),
            {k: config[k] for k in s.search},
        )
        open_s = time.perf_counter() - t0
        # Rank 0 (trainers/loop.py): one sink.log per eval.
        sink = MlflowSink(uri, run_id)
        assert sink.client is not None
        for name in ("log_batch", "log_image", "log_artifact"):
            setattr(sink.client, name, _timed(calls, name, getattr(sink.client, name)))
        losses = LossLog(sink, s.trainer.log_every)
        eval_s, loss_s = [], 0.0
        x = torch.randn(256, 256)
        every = s.trainer.eval_every
        for e in range(1, evals + 1):
            # "training": keep a CPU busy, like a real trial, and log the losses as it does
            per_step = busy / every
            for step in range((e - 1) * every + 1, e * every + 1):
                until = time.perf_counter() + per_step
                while time.perf_counter() < until:
                    x = torch.tanh(x @ x.T / 256)
                t0 = time.perf_counter()
                losses.add(step, step_scalars, step == e * every)
                loss_s += time.perf_counter() - t0
            step = e * every
            t0 = time.perf_counter()
            best = e == 1 or e % 2 == 0  # the generator_best/ upload, on about half the evals
            sink.log(step, {**metrics, "step": step, "fid": metrics["fid"] * (1 + 0.01 * e)}, image, gen_file, best)
            eval_s.append(time.perf_counter() - t0)
            tune.report({"step": step, "fid": metrics["fid"]})
        sink.close()
        # The trial driver closes the run (orchestrator/trial.py `close`).
        t0 = time.perf_counter()
        if client.get_run(run_id).info.status == "RUNNING":
            tracking.end_run(client, run_id, "FINISHED")
        close_s = time.perf_counter() - t0
        tune.report(
            {
                "step": steps,
                "fid": metrics["fid"],
                "run_id": run_id,
                "timings": json.dumps(
                    {
                        "open": open_s,
                        "evals": eval_s,
                        "losses": loss_s,
                        "close": close_s,
                        "calls": calls,
                        "wall": time.perf_counter() - started,
                    }
                ),
            }
        )

    return tune.with_resources(trial, {"cpu": 1})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument(
        "--evals",
        type=int,
        default=None,
        help="Evals per trial (default: as many as the demo's trials made in this run; dcgan.yaml: 3).",
    )
    ap.add_argument(
        "--busy-seconds",
        type=float,
        default=None,
        help="CPU burned per eval in place of training (default: the demo's measured training seconds per eval, "
        "so losses reach the server at a real trial's pace).",
    )
    ap.add_argument("--json", action="store_true", help="Print the figures as JSON on stdout.")
    ap.add_argument(
        "--demo-set",
        action="append",
        default=[],
        help="An override for the real demo sweep that gives the denominator (e.g. sweep.num_samples=2).",
    )
    args = ap.parse_args()

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import ray
    from mlflow import MlflowClient
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from infra.local_services import mlflow_server
    from orchestrator import registry, sweep, tracking
    from search_spaces.loader import load_spec
    from search_spaces.tune_space import param_space

    sweep.quiet_environment()
    spec = load_spec(DEMO_SPEC, [f"sweep.num_samples={args.trials}"])
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        step_scalars, metrics, image, gen_file = real_eval_payload(spec, tmp)
        gen_bytes = gen_file.stat().st_size
        with mlflow_server(tmp / "server") as srv:
            uri = srv.url
            demo = measure_demo(uri, tmp, args.demo_set)
            if args.busy_seconds is None:
                args.busy_seconds = demo["train_s_per_eval"]
            if args.evals is None:
                args.evals = demo["evals_per_trial"]
            client = MlflowClient(uri)
            once: dict[str, float] = {}
            t0 = time.perf_counter()
            exp = tracking.ensure_experiment(client, spec.name, uri)
            sweep_id = f"{spec.name}-bench"
            parent = tracking.start_sweep_run(
                client,
                exp,
                sweep_id,
                spec.model_dump(mode="json"),
                spec.spec_hash,
                DEMO_SPEC.read_text(),
                spec.description,
                spec.metric,
                spec.mode,
            )
            once["parent run"] = time.perf_counter() - t0

            # Tune runs num_samples x (each grid's values) trials: ask for as many samples as make
            # --trials (the demo searches a grid of 2 D learning rates).
            space = param_space(spec)
            per_sample = math.prod(
                len(v["grid_search"]) for v in space.values() if isinstance(v, dict) and "grid_search" in v
            )
            if args.trials % per_sample:
                sys.exit(f"--trials {args.trials}: the demo's grid has {per_sample} points; ask for a multiple of it")
            samples = args.trials // per_sample
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                t_sweep = time.perf_counter()
                tuner = tune.Tuner(
                    make_trial(
                        spec,
                        uri,
                        exp,
                        parent,
                        sweep_id,
                        step_scalars,
                        metrics,
                        image,
                        gen_file,
                        args.evals,
                        args.busy_seconds,
                    ),
                    param_space=space,
                    tune_config=tune.TuneConfig(
                        num_samples=samples,
                        reuse_actors=True,
                        search_alg=BasicVariantGenerator(random_state=0, max_concurrent=2),
                    ),
                    run_config=tune.RunConfig(name=sweep_id, storage_path=str(tmp / "ray"), verbose=0),
                )
                with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # Tune's banners
                    grid = tuner.fit()
                tune_wall = time.perf_counter() - t_sweep
            finally:
                ray.shutdown()
            rows = [
                (r.metrics["trial_id"], json.loads(r.metrics["timings"]), r.metrics)
                for r in grid
                if r.metrics and "timings" in r.metrics
            ]
            if len(rows) != args.trials:
                errors = [str(r.error)[:300] for r in grid if r.error][:3]
                sys.exit(f"only {len(rows)} of {args.trials} trials finished; errors: {errors}")

            # The driver's once-per-sweep MLflow work, as run_sweep does it (orchestrator/sweep.py).
            t0 = time.perf_counter()
            run_ids = tracking.trial_run_ids(client, exp, parent)
            trials = [
                sweep.TrialSummary(
                    trial_id=tid,
                    run_id=run_ids.get(tid),
                    status="done",
                    config={},
                    metrics={"fid": float(m["fid"])},
                    step=int(m["step"]),
                )
                for tid, _, m in rows
            ]
            once["trials' run ids"] = time.perf_counter() - t0
            result = sweep.SweepResult(
                sweep_id=sweep_id,
                experiment=spec.name,
                experiment_id=exp,
                parent_run_id=parent,
                tracking_uri=uri,
                storage="",
                metric=spec.metric,
                mode=spec.mode,
                wall_seconds=tune_wall,
                first_result_seconds=None,
                trials=trials,
            )
            result.trials = result.leaderboard()
            t0 = time.perf_counter()
            registered = registry.register_best(client, result, spec.name)
            once["register best"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            sweep._finish_parent(client, result)
            once["leaderboard + contact sheet"] = time.perf_counter() - t0

    per_eval = [e for _, t, _ in rows for e in t["evals"]]
    per_trial = [t["open"] + t["losses"] + sum(t["evals"]) + t["close"] for _, t, _ in rows]
    calls = {
        k: sum(t["calls"].get(k, 0.0) for _, t, _ in rows) / len(per_eval)
        for k in ("log_batch", "log_image", "log_artifact")
    }
    trial_s = statistics.mean(per_trial)
    once_s = sum(once.values())
    demo_trial_wall = demo["trial_s_mean"]  # measured above, in this run
    sweep_wall = demo["wall_s"] / demo["trials"] * args.trials  # the demo sweep, scaled to N trials
    added = args.trials * trial_s / demo["concurrent"] + once_s
    out = {
        "trials": args.trials,
        "evals_per_trial": args.evals,
        "busy_seconds_per_eval": args.busy_seconds,
        "metrics_per_eval": len(metrics),
        "image_px": list(getattr(image, "shape", [])),
        "generator_bytes": gen_bytes,
        "per_eval_s": {
            "mean": statistics.mean(per_eval),
            "median": statistics.median(per_eval),
            "p95": sorted(per_eval)[int(0.95 * len(per_eval))],
            **{f"{k}_mean": v for k, v in calls.items()},
        },
        "per_trial_s": {
            "mean": trial_s,
            "open_mean": statistics.mean(t["open"] for _, t, _ in rows),
            "losses_mean": statistics.mean(t["losses"] for _, t, _ in rows),
            "close_mean": statistics.mean(t["close"] for _, t, _ in rows),
            "max": max(per_trial),
        },
        "per_sweep_once_s": once,
        "demo_measured": demo,
        "share_of_demo_trial": trial_s / demo_trial_wall,
        "demo_trial_wall_s": demo_trial_wall,
        "sweep": {"demo_wall_scaled_s": sweep_wall, "mlflow_added_s": added, "share": added / sweep_wall},
        "bench_tune_wall_s": tune_wall,
        "registered": registered,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    pe, pt = out["per_eval_s"], out["per_trial_s"]
    print(
        f"{args.trials} trials x {args.evals} evals through {uri} (mlflow "
        f"server, SQLite, proxied artifacts); Tune wall {tune_wall:.0f} s"
    )
    print(
        f"per eval  : {pe['mean'] * 1000:.0f} ms mean, {pe['median'] * 1000:.0f} median, "
        f"{pe['p95'] * 1000:.0f} p95 "
        f"(log_batch of {len(metrics)} metrics {calls['log_batch'] * 1000:.0f}, "
        f"log_image {calls['log_image'] * 1000:.0f}, "
        f"generator.pt {calls['log_artifact'] * 1000:.0f})"
    )
    print(
        f"per trial : {trial_s:.2f} s (open run + params {pt['open_mean']:.2f}, losses {pt['losses_mean']:.2f}, "
        f"{args.evals} evals, close "
        f"{pt['close_mean']:.2f}); max {pt['max']:.2f} s"
    )
    print(f"          = {100 * out['share_of_demo_trial']:.2f}% of a demo trial's {demo_trial_wall:.1f} s")
    print(
        f"demo      : {demo['trials']} trials, {demo['wall_s']:.0f} s wall, measured in this run; its trials' own "
        f"timers: {demo['mlflow_s_mean']:.2f} s of MLflow writes per trial = "
        f"{100 * demo['mlflow_share_of_trial']:.2f}% of a trial"
    )
    print("per sweep : " + ", ".join(f"{k} {v:.1f} s" for k, v in once.items()))
    print(
        f"sweep     : {added:.0f} s of MLflow in a {sweep_wall:.0f} s {args.trials}-trial demo sweep = "
        f"{100 * out['sweep']['share']:.2f}% "
        "(target <= 5%)"
    )


if __name__ == "__main__":
    main()
