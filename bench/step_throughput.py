"""Bench: images/s of ganops' train step against a plain PyTorch loop of the same network.

The reference is pytorch/examples' dcgan loop written inline (D on real then on detached
fakes, G on the same fakes with the non-saturating loss, Adam), same models, batch, threads
and data. A second reference adds the known trick of freezing D (requires_grad False) during
G's step, so no gradient of D's weights is computed there: ganops' ratio to it shows what ganops
adds beyond that trick. Each repeat runs the three loops in a rotated order (reference, frozen,
ganops; then frozen, ganops, reference; ...), so drift and warm caches hit all alike.
dcgan32 / dcgan64 train on an image_folder of MNIST digits written to a temp dir (RGB for 64).

    python bench/step_throughput.py --iters 150 --repeats 3 --width 16 --width 32
    python bench/step_throughput.py --iters 60 --repeats 3 --width 32 --model all
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models, sample_latent
from trainers.models.conditional import sample_labels
from trainers.step import build_optimizers, train_step

MODELS = ["dcgan28", "dcgan28_upsample", "dcgan32", "dcgan64", "fc", "cdcgan28"]


def digits_folder(root: Path, n: int = 512) -> str:
    """n MNIST digits as PNG files: an image_folder for the 32- and 64-pixel models."""
    from PIL import Image

    from trainers.data import load_mnist

    x = ((load_mnist()[:n, 0] + 1) * 127.5).round().byte().numpy()
    for i, img in enumerate(x):
        Image.fromarray(img).save(root / f"{i}.png")
    return str(root)


def config(model: str, width: int, batch: int, folder: str) -> TrainerConfig:
    if model in ("dcgan32", "dcgan64"):
        size = int(model[-2:])
        return TrainerConfig(
            model=model,
            data="image_folder",
            data_dir=folder,
            image_size=size,
            channels=3 if size == 64 else 1,
            batch_size=batch,
            width=width,
        )
    return TrainerConfig(model=model, data="mnist", batch_size=batch, width=width)


def setup(cfg: TrainerConfig):
    """Identical models, optimizers, data and RNG for both loops."""
    G, D = build_models(cfg)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    return G, D, opt_g, opt_d, torch.Generator().manual_seed(cfg.seed), make_data(cfg)


def reference_loop(cfg: TrainerConfig, iters: int, frozen_d: bool = False) -> float:
    G, D, opt_g, opt_d, gen, data = setup(cfg)
    B = cfg.batch_size
    t0 = time.perf_counter()
    cond = cfg.is_conditional
    for _ in range(iters):
        if cond:
            real, y_real = data.sample_labeled(B, gen)
        else:
            real, y_real = data.sample(B, gen), None
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        out = (D(real, y_real) if cond else D(real)).view(-1)
        err_real = F.binary_cross_entropy_with_logits(out, torch.full_like(out, cfg.real_label))
        err_real.backward()
        z = sample_latent(B, cfg, gen)
        y_fake = sample_labels(B, gen) if cond else None
        fake = G(z, y_fake) if cond else G(z)
        out = (D(fake.detach(), y_fake) if cond else D(fake.detach())).view(-1)
        err_fake = F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
        err_fake.backward()
        opt_d.step()
        # (2) Update G: maximize log(D(G(z)))
        G.zero_grad()
        if frozen_d:
            D.requires_grad_(False)  # no grads of D's weights in G's backward
        out = (D(fake, y_fake) if cond else D(fake)).view(-1)
        err_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        err_g.backward()
        opt_g.step()
        if frozen_d:
            D.requires_grad_(True)
        # the same host syncs ganops makes
        _ = (
            (err_real + err_fake).item(),
            err_g.item(),
            torch.sigmoid(out).mean().item(),
        )
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
    ap.add_argument("--model", action="append", help=f"one of {', '.join(MODELS)} or all (default dcgan28)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = MODELS if args.model == ["all"] else (args.model or ["dcgan28"])
    rows = []
    tmp = tempfile.TemporaryDirectory()
    folder = digits_folder(Path(tmp.name))
    for model, width in ((m, w) for m in models for w in (args.width or [16, 32])):
        cfg = config(model, width, args.batch, folder)
        loops = {
            "reference": lambda n, cfg=cfg: reference_loop(cfg, n),
            "frozen_d": lambda n, cfg=cfg: reference_loop(cfg, n, frozen_d=True),
            "ganops": lambda n, cfg=cfg: ganops_loop(cfg, n),
        }
        for run in loops.values():
            run(10)  # warm-up
        rates: dict[str, list[float]] = {k: [] for k in loops}
        names = list(loops)
        for r in range(args.repeats):
            for name in names[r % 3 :] + names[: r % 3]:  # rotated order
                rates[name].append(loops[name](args.iters))
        med = {k: statistics.median(v) for k, v in rates.items()}
        row = {
            "model": model,
            "width": width,
            "batch": args.batch,
            "threads": args.threads,
            "reference_img_s": round(med["reference"], 1),
            "frozen_d_img_s": round(med["frozen_d"], 1),
            "ganops_img_s": round(med["ganops"], 1),
            "ratio": round(med["ganops"] / med["reference"], 3),
            "ratio_to_frozen_d": round(med["ganops"] / med["frozen_d"], 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
