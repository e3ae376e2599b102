"""Bench: what logging the step's losses every `log_every` steps (trainers/trial_log.py) costs
training, against a real SQLite MLflow store. The same seeded train_step loop runs with and
without rank 0's LossLog, alternating (plain, logged, plain, ...) so drift hits both alike;
the figure is logged steps/s over plain steps/s (1.0: free).

    python bench/loss_logging_cost.py --iters 200 --repeats 3 --log-every 10 --log-every 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models, gan_for
from trainers.step import build_optimizers, train_step
from trainers.trial_log import LossLog, MlflowSink


def steps_per_s(cfg: TrainerConfig, iters: int, losses: LossLog | None, blocked: list[float] | None = None) -> float:
    """Steps/s of the loop; `blocked` gets the seconds the loop spent inside LossLog (the part training waits on)."""
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    gen, data, gan = torch.Generator().manual_seed(cfg.seed), make_data(cfg), gan_for(cfg)
    t0 = time.perf_counter()
    for step in range(1, iters + 1):
        m = train_step(G, D, opt_g, opt_d, data, cfg, gen, gan=gan)
        if losses is not None:
            t1 = time.perf_counter()
            losses.add(step, m, step == iters)
            blocked.append(time.perf_counter() - t1)
    if losses is not None:
        t1 = time.perf_counter()
        losses.sink.flush()  # the last batch counts too
        blocked.append(time.perf_counter() - t1)
    return iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="dcgan28")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--log-every", type=int, action="append")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = TrainerConfig(
        model=args.model, data="mnist" if args.model != "mlp2d" else "grid25", batch_size=64, width=args.width
    )
    with tempfile.TemporaryDirectory() as tmp:
        from mlflow import MlflowClient

        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client = MlflowClient(uri)
        exp = client.create_experiment("loss-logging")
        steps_per_s(cfg, 10, None)  # warm-up
        for every in args.log_every or [10]:
            plain, logged, blocked = [], [], []
            for _ in range(args.repeats):
                plain.append(steps_per_s(cfg, args.iters, None))
                run_id = client.create_run(exp).info.run_id
                logged.append(steps_per_s(cfg, args.iters, LossLog(MlflowSink(uri, run_id), every), blocked))
            row = {
                "model": args.model,
                "width": args.width,
                "log_every": every,
                "plain_steps_s": round(statistics.median(plain), 2),
                "logged_steps_s": round(statistics.median(logged), 2),
                "ratio": round(statistics.median(logged) / statistics.median(plain), 3),
                "blocked_ms_per_step": round(1000 * sum(blocked) / (args.iters * args.repeats), 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
