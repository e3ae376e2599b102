"""Bench: PacGAN's own grid25 networks at this machine's time budget, scored as ganops scores.

Lin et al. 2018 (PacGAN), Table 1, after VEEGAN: G has 4 hidden layers of 400 ReLU units with
batch norm, D 3 hidden layers of 200 linear-maxout units (5 pieces), z ~ N(0, I_2), Adam lr 1e-4
(beta1 0.5), 100 packs a batch. D judges `--pack` samples side by side. The question it answers:
do the paper's networks reach its numbers (PacGAN2: 25 modes, 93.6% high quality) within the
10 minutes that issue 16 gives a shipped mixture spec here? ganops' mlp2d is a 2x128 tanh MLP;
these networks are not in ganops, so this is plain PyTorch on ganops' data and scorer
(trainers.data.MixtureSource; trainers.metrics.mixture_scores on 2,500 samples of G in eval mode).

    python bench/pacgan_grid.py --pack 2 --steps 20000      # one line of JSON per eval
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.data import MixtureSource
from trainers.metrics import mixture_scores
from trainers.models.common import pack_samples


class Maxout(nn.Module):
    """Linear maxout (Goodfellow et al. 2013): `pieces` affine maps, the elementwise max."""

    def __init__(self, inputs: int, units: int, pieces: int = 5) -> None:
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(inputs, units * pieces)

    def forward(self, x: Tensor) -> Tensor:  # (B, inputs) -> (B, units)
        return self.linear(x).view(x.shape[0], -1, self.pieces).max(-1).values


def networks(pack: int, latent: int) -> tuple[nn.Module, nn.Module]:
    hidden: list[nn.Module] = []
    for i in range(4):
        hidden += [nn.Linear(latent if i == 0 else 400, 400), nn.BatchNorm1d(400), nn.ReLU()]
    G = nn.Sequential(*hidden, nn.Linear(400, 2))  # (B, latent) -> (B, 2)
    D = nn.Sequential(Maxout(2 * pack, 200), Maxout(200, 200), Maxout(200, 200), nn.Linear(200, 1))
    return G, D  # D: (B / pack, 2 * pack) -> (B / pack, 1) logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--packs-per-batch", type=int, default=100)
    ap.add_argument("--latent", type=int, default=2)
    ap.add_argument("--evals", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a ganops trial with cpus_per_worker 1
    torch.manual_seed(args.seed)
    G, D = networks(args.pack, args.latent)
    opt_g = torch.optim.Adam(G.parameters(), args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), args.lr, betas=(0.5, 0.999))
    data, gen = MixtureSource("grid25"), torch.Generator().manual_seed(args.seed + 1)
    n = args.packs_per_batch * args.pack
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        real, fake = data.sample(n, gen), G(torch.randn(n, args.latent, generator=gen))
        out_real, out_fake = D(pack_samples(real, args.pack)), D(pack_samples(fake.detach(), args.pack))
        loss_d = F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
        loss_d = loss_d + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        out = D(pack_samples(fake, args.pack))
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))  # non-saturating
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step % max(1, args.steps // args.evals) == 0 or step == args.steps:
            G.eval()
            with torch.no_grad():
                scores = mixture_scores(G(torch.randn(2500, args.latent, generator=gen)), "grid25")
            G.train()
            line = {"pack": args.pack, "step": step, "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(line | {k: round(float(v), 3) for k, v in scores.items()}), flush=True)


if __name__ == "__main__":
    main()
