"""Bench: which trainer setting lifts a 2-D mixture's quality, one configuration at a time.

Trains mlp2d in this process with ganops' own train_step (no Ray, no MLflow) from a spec's trainer
section plus `--set key=value` changes, and at each of `--evals` points scores the raw G and, with
`ema` set, the averaged G on the same 2,500 points of z (PacGAN Table 1: modes, high-quality %,
reverse KL). How issue 16's mixture levers were found; the shipped sweeps themselves are measured
by bench/mixture_quality.py. One line of JSON per eval; run two at once on 2 CPUs.

    python bench/mixture_levers.py search_spaces/grid25.yaml --set trainer.lr_d=5e-4 --set trainer.g_layers=2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from search_spaces.loader import load_spec
from trainers.data import make_data
from trainers.metrics import mixture_scores
from trainers.models import build_models, gan_for, sample_latent
from trainers.step import build_ema, build_optimizers, build_schedulers, train_step


def _score(G: torch.nn.Module, cfg, z: torch.Tensor) -> list:
    was = G.training
    G.eval()
    with torch.no_grad():
        s = mixture_scores(G(z), cfg.data)
    G.train(was)
    return [s["modes"], round(s["hq_pct"], 2), round(s["reverse_kl"], 4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="trainer.KEY=VALUE, as ganops sweep")
    ap.add_argument("--evals", type=int, default=5)
    args = ap.parse_args()
    cfg = load_spec(args.spec, args.overrides).trainer
    if cfg.model != "mlp2d":
        raise SystemExit(f"{args.spec}: model {cfg.model!r}; this bench trains mlp2d on a 2-D mixture")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    schedulers, ema, data, gan = build_schedulers(opt_g, opt_d, cfg), build_ema(G, cfg), make_data(cfg), gan_for(cfg)
    rng = torch.Generator().manual_seed(cfg.seed)
    z = sample_latent(2500, cfg, torch.Generator().manual_seed(123))  # the same points of z at every eval
    every = max(cfg.steps // args.evals, 1)
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        train_step(G, D, opt_g, opt_d, data, cfg, rng, step=step, schedulers=schedulers, ema=ema, gan=gan)
        if step % every == 0:
            row = {"set": args.overrides, "step": step, "seconds": round(time.perf_counter() - t0, 1)}
            row["G"] = _score(G, cfg, z)  # modes, hq %, reverse KL
            if ema is not None:
                row["ema"] = _score(ema.module, cfg, z)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
