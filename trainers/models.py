"""The two GAN architectures ganops trains, built from a TrainerConfig.

dcgan28 is the pytorch/examples DCGAN (Radford et al. 2015) cut down to 28x28x1:
ConvTranspose/Conv k4 s2 p1, BN everywhere except D's first layer and G's output,
ReLU in G, LeakyReLU in D, N(0, 0.02) init. mlp2d is a small tanh MLP for the
PacGAN / VEEGAN 2-D mixture experiments.

D returns a raw logit (no sigmoid): the step uses BCE-with-logits, which is stable
where sigmoid followed by log is not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainers.conditional import CDCGAN28Discriminator, CDCGAN28Generator
from trainers.config import TrainerConfig


class DCGAN28Generator(nn.Module):
    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        w = width
        # No bias before a BN layer: BN's shift makes it redundant.
        self.project = nn.Linear(latent_dim, 4 * w * 7 * 7, bias=False)
        self.net = nn.Sequential(
            nn.BatchNorm2d(4 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),  # (B, 2w, 14, 14)
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, 1, 4, 2, 1),  # (B, 1, 28, 28)
            nn.Tanh(),  # images live in [-1, 1]
        )
        self._w = w

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        x = self.project(z).view(z.shape[0], 4 * self._w, 7, 7)  # (B, 4w, 7, 7)
        return self.net(x)  # (B, 1, 28, 28)


class DCGAN28Discriminator(nn.Module):
    def __init__(self, width: int, slope: float) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            # No BN on the first layer (Radford et al.): it would normalise away the input statistics.
            nn.Conv2d(1, w, 4, 2, 1),  # (B, w, 14, 14)
            nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),  # (B, 2w, 7, 7)
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(slope, inplace=True),
            nn.Flatten(),  # (B, 2w*7*7)
            nn.Linear(2 * w * 7 * 7, 1),  # (B, 1) logit
        )

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 1, 28, 28)
        return self.net(x)  # (B, 1)


# mlp2d uses tanh hidden units in both nets. Measured on grid25 (width 128, z 256, batch 512,
# lr G 1e-3 / D 1e-4): ReLU G + LeakyReLU D collapsed onto 2-3 modes by 12.5k iterations,
# tanh reached 23-24 of 25 by 22.5k (as GAN_NOTES' "small tanh MLP"). The measurement is the
# reason; a smoother D surface is a plausible but untested explanation. leaky_slope is unused here.
class MLP2dGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, 2),  # (B, 2): unbounded output, the mixtures span [-4, 4]
        )

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        return self.net(z)  # (B, 2)


class MLP2dDiscriminator(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, 1),  # (B, 1) logit
        )

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 2)
        return self.net(x)  # (B, 1)


def _dcgan_init(m: nn.Module) -> None:
    # Radford et al.: all weights N(0, 0.02); BN scale N(1, 0.02), biases 0.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_models(cfg: TrainerConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for cfg.model, initialised from cfg.seed without touching the global RNG."""
    # fork_rng: the init is a function of cfg.seed alone, and callers' RNG streams stay put.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.model == "dcgan28":
            G: nn.Module = DCGAN28Generator(cfg.latent_dim, cfg.width)
            D: nn.Module = DCGAN28Discriminator(cfg.width, cfg.leaky_slope)
            G.apply(_dcgan_init)
            D.apply(_dcgan_init)
        elif cfg.model == "cdcgan28":
            G = CDCGAN28Generator(cfg.latent_dim, cfg.width)
            D = CDCGAN28Discriminator(cfg.width, cfg.leaky_slope)
            G.apply(_dcgan_init)
            D.apply(_dcgan_init)
        elif cfg.model == "mlp2d":
            # PyTorch's default (Kaiming-uniform) init: N(0, 0.02) starves a 2-layer MLP
            # whose output must reach +-4.
            G = MLP2dGenerator(cfg.latent_dim, cfg.width)
            D = MLP2dDiscriminator(cfg.width)
        else:  # unreachable: TrainerConfig's Literal rejects other names
            raise ValueError(f"unknown model {cfg.model!r}; use dcgan28, cdcgan28 or mlp2d")
    return G, D


def sample_latent(n: int, cfg: TrainerConfig, generator: torch.Generator) -> Tensor:
    """z of shape (n, latent_dim): N(0, I) or U[-1, 1], drawn from `generator` (CPU)."""
    if cfg.latent_dist == "normal":
        return torch.randn(n, cfg.latent_dim, generator=generator)
    return torch.rand(n, cfg.latent_dim, generator=generator) * 2.0 - 1.0
