"""cdcgan28: a class-conditional DCGAN on MNIST (GAN_NOTES "Conditional GAN (DIGITS tutorial)").

The one-hot class is concatenated to the input of every layer of both networks: to z for G's
first (linear) layer, as 10 constant feature maps of the layer's spatial size before each
conv layer (all zeros except map[class], all ones), and to the flattened features before D's
linear layer. Otherwise dcgan28's conventions: ConvTranspose/Conv k4 s2 p1, BN everywhere
except D's first layer and G's output, ReLU in G, LeakyReLU in D, N(0, 0.02) init (applied by
build_models), raw logit out.

Both networks take (x, labels) with labels (B,) int64 in [0, 10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_CLASSES = 10


def one_hot(labels: Tensor, like: Tensor) -> Tensor:
    """(B,) int64 -> (B, NUM_CLASSES) in `like`'s dtype and device."""
    return F.one_hot(labels.to(like.device), NUM_CLASSES).to(like.dtype)


def with_class_maps(x: Tensor, onehot: Tensor) -> Tensor:
    """Append the 10 constant class maps to a (B, C, H, W) feature map -> (B, C + 10, H, W)."""
    maps = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, maps], dim=1)


class CDCGAN28Generator(nn.Module):
    conditional = True  # takes (z, labels); callers decide by TrainerConfig.is_conditional

    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        w = self._w = width
        c = NUM_CLASSES
        # No bias before a BN layer: BN's shift makes it redundant.
        self.project = nn.Linear(latent_dim + c, 4 * w * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm2d(4 * w)
        self.up1 = nn.ConvTranspose2d(4 * w + c, 2 * w, 4, 2, 1, bias=False)  # (B, 2w, 14, 14)
        self.bn1 = nn.BatchNorm2d(2 * w)
        self.up2 = nn.ConvTranspose2d(2 * w + c, 1, 4, 2, 1)  # (B, 1, 28, 28)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:  # z: (B, latent_dim), labels: (B,)
        y = one_hot(labels, z)  # (B, 10)
        x = self.project(torch.cat([z, y], dim=1)).view(z.shape[0], 4 * self._w, 7, 7)
        x = F.relu(self.bn0(x))  # (B, 4w, 7, 7)
        x = F.relu(self.bn1(self.up1(with_class_maps(x, y))))  # (B, 2w, 14, 14)
        return torch.tanh(self.up2(with_class_maps(x, y)))  # (B, 1, 28, 28) in [-1, 1]


class CDCGAN28Discriminator(nn.Module):
    conditional = True

    def __init__(self, width: int, slope: float) -> None:
        super().__init__()
        w = width
        c = NUM_CLASSES
        self.slope = slope
        # No BN on the first layer (Radford et al.): it would normalise away the input statistics.
        self.conv1 = nn.Conv2d(1 + c, w, 4, 2, 1)  # (B, w, 14, 14)
        self.conv2 = nn.Conv2d(w + c, 2 * w, 4, 2, 1, bias=False)  # (B, 2w, 7, 7)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.out = nn.Linear(2 * w * 7 * 7 + c, 1)  # (B, 1) logit

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:  # x: (B, 1, 28, 28), labels: (B,)
        y = one_hot(labels, x)
        h = F.leaky_relu(self.conv1(with_class_maps(x, y)), self.slope)
        h = F.leaky_relu(self.bn2(self.conv2(with_class_maps(h, y))), self.slope)
        return self.out(torch.cat([h.flatten(1), y], dim=1))  # (B, 1)


def sample_labels(n: int, generator: torch.Generator) -> Tensor:
    """n classes drawn uniformly from `generator`, on its device (fake labels in training and evaluation)."""
    return torch.randint(0, NUM_CLASSES, (n,), generator=generator, device=generator.device)


# The sample grid of a conditional G: GRID_ROWS latents, each drawn once per class, so the
# grid's columns are the classes 0-9 and its rows hold the style (z) fixed across them.
GRID_ROWS = 8


def grid_labels(n: int) -> Tensor:
    """Classes 0, 1, ..., 9, 0, 1, ... for an n-image grid of NUM_CLASSES columns."""
    return torch.arange(n) % NUM_CLASSES
