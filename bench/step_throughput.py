"""Bench: images/s of ganops' train step against a plain PyTorch loop of the same DCGAN.

The reference is pytorch/examples' dcgan loop written inline (D on real then on detached
fakes, G on the same fakes with the non-saturating loss, Adam), same models, batch, threads
and data. Runs alternate (reference, ganops, reference, ...) so drift hits both alike.

    python bench/step_throughput.py --iters 150 --repeats 3 --width 16 --width 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models, sample_latent
from trainers.step import build_optimizers, train_step


def setup(cfg: TrainerConfig):
    """Identical models, optimizers, data and RNG for both loops."""
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    return G, D, opt_g, opt_d, torch.Generator().manual_seed(cfg.seed), make_data(cfg)


def reference_loop(cfg: TrainerConfig, iters: int) -> float:
    G, D, opt_g, opt_d, gen, data = setup(cfg)
    B = cfg.batch_size
    t0 = time.perf_counter()
    for _ in range(iters):
        real = data.sample(B, gen)
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        out = D(real).view(-1)
        err_real = F.binary_cross_entropy_with_logits(out, torch.full_like(out, cfg.real_label))
        err_real.backward()
        fake = G(sample_latent(B, cfg, gen))
        out = D(fake.detach()).view(-1)
        err_fake = F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
        err_fake.backward()
        opt_d.step()
        # (2) Update G: maximize log(D(G(z)))
        G.zero_grad()
        out = D(fake).view(-1)
        err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        err_g.backward()
        opt_g.step()
        _ = (err_real + err_fake).item(), err_g.item(), torch.sigmoid(out).mean().item()  # the same host syncs ganops makes
    return B * iters / (time.perf_counter() - t0)


def ganops_loop(cfg: TrainerConfig, iters: int) -> float:
    G, D, opt_g, opt_d, gen, data = setup(cfg)
    t0 = time.perf_counter()
    for _ in range(iters):
        train_step(G, D, opt_g, opt_d, data, cfg, gen)
    return cfg.batch_size * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, action="append")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for width in args.width or [16, 32]:
        cfg = TrainerConfig(model="dcgan28", data="mnist", batch_size=args.batch, width=width)
        ganops_loop(cfg, 10), reference_loop(cfg, 10)  # warm-up
        ref, ours = [], []
        for _ in range(args.repeats):
            ref.append(reference_loop(cfg, args.iters))
            ours.append(ganops_loop(cfg, args.iters))
        row = {"model": "dcgan28", "width": width, "batch": args.batch, "threads": args.threads,
               "reference_img_s": round(statistics.median(ref), 1), "ganops_img_s": round(statistics.median(ours), 1),
               "ratio": round(statistics.median(ours) / statistics.median(ref), 3)}
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
