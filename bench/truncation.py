"""Bench: a trained generator's scores with its latents truncated (BigGAN's truncation trick).

BigGAN trades diversity for fidelity by drawing z from N(0, I) truncated at |z| <= t: each entry
above t is redrawn. On ImageNet that lifts IS at some cost in FID. This scores one trial's
best-eval generator (as `ganops sample` loads it) with ganops' own evaluator at each threshold
(0 = no truncation), on the same number of samples a trial's eval scores (or --samples), and
writes each threshold's fixed-noise grid beside it. With --draws K, each threshold is scored on
K independent draws of samples, and the spread shows how much of a difference between two evals
is the scorer's own noise.

    python bench/truncation.py TRIAL --tracking-uri sqlite:///ganops_runs/mlflow.db \\
        --thresholds 0 2 1.5 1.2 1.0 0.8 --out-dir /tmp/truncation
    python bench/truncation.py TRIAL --thresholds 0 --draws 10 [--samples 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from mlflow import MlflowClient
from PIL import Image

from orchestrator.sample import fetch_generator
from trainers.evaluate import Evaluator
from trainers.loop import fixed_noise


class Truncated(torch.nn.Module):
    """G with every latent entry above `t` in magnitude redrawn from N(0, 1) (t = 0: G as is)."""

    def __init__(self, G: torch.nn.Module, t: float, seed: int = 123):
        super().__init__()
        self.G, self.t = G, t
        self.rng = torch.Generator().manual_seed(seed)

    def forward(self, z: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        if self.t > 0:
            z = z.clone()
            out = z.abs() > self.t
            while out.any():
                z[out] = torch.randn(int(out.sum()), generator=self.rng).to(z)
                out = z.abs() > self.t
        return self.G(z, *rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trial", help="a Ray trial id or MLflow run id (its best eval's generator is scored)")
    ap.add_argument("--tracking-uri", default="sqlite:///ganops_runs/mlflow.db")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 2.0, 1.5, 1.2, 1.0, 0.8])
    ap.add_argument("--out-dir", type=Path, default=None, help="write each threshold's grid here as PNG")
    ap.add_argument("--draws", type=int, default=1, help="independent draws of samples per threshold")
    ap.add_argument("--samples", type=int, default=None, help="samples per draw (default: the trial's eval_samples)")
    args = ap.parse_args()
    G, cfg, run_id, source = fetch_generator(MlflowClient(args.tracking_uri), args.trial)
    if cfg.latent_dist != "normal":
        raise SystemExit(f"{args.trial}: truncation is defined here for normal latents; this G draws {cfg.latent_dist}")
    print(json.dumps({"run_id": run_id, **source, "eval_samples": cfg.eval_samples}), flush=True)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.samples:
        cfg = cfg.model_copy(update={"eval_samples": args.samples})
    for t in args.thresholds:
        draws = []
        for i in range(args.draws):
            ev = Evaluator(cfg)  # draw 0 is what a fresh evaluator of this trial draws, for every t
            if i:
                ev.gen = torch.Generator().manual_seed(10_000 + i)
            scores, picture = ev.evaluate(Truncated(G, t), fixed_noise(cfg))
            draws.append(scores)
        if args.out_dir:
            Image.fromarray(picture).save(args.out_dir / f"truncation_{t:g}.png")
        row: dict = {"threshold": t, "samples": cfg.eval_samples, **{k: round(v, 3) for k, v in draws[0].items()}}
        if args.draws > 1:
            row = {"threshold": t, "samples": cfg.eval_samples, "draws": args.draws}
            for k in draws[0]:
                vals = [d[k] for d in draws]
                row[k] = {
                    "mean": round(statistics.mean(vals), 3),
                    "sd": round(statistics.stdev(vals), 3),
                    "min": round(min(vals), 3),
                    "max": round(max(vals), 3),
                }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
