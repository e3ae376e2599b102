"""The fully connected GAN (Goodfellow et al. 2014's MNIST setup as the tutorials use it):
D C*H*W-500-200-1, G latent-200-500-C*H*W, for any image size.

The published recipe is ReLU hidden layers, no normalisation, Xavier init and a sigmoid output
on data in [0, 1]: `norm: none, init: xavier, output: sigmoid, leaky_slope: 0`. The hidden
sizes are the published ones (width does not apply).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from trainers.models.common import d_activation, has_bias, norm1d, output_activation, pack_samples

HIDDEN = (200, 500)  # G's hidden units; D mirrors them (500, 200)


class FCGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: tuple[int, int, int], norm: str = "batch", output: str = "tanh") -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.shape = tuple(shape)
        bias = has_bias(norm)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN[0], bias=bias),
            norm1d(norm, HIDDEN[0]),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN[0], HIDDEN[1], bias=bias),
            norm1d(norm, HIDDEN[1]),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN[1], math.prod(shape)),  # (B, C*H*W)
            output_activation(output),
        )

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        return self.net(z).view(z.shape[0], *self.shape)  # (B, C, H, W)


class FCDiscriminator(nn.Module):
    def __init__(
        self, shape: tuple[int, int, int], slope: float, norm: str = "batch", dropout: float = 0.0, pack: int = 1
    ) -> None:
        super().__init__()
        self.pack = pack
        self.net = nn.Sequential(
            nn.Flatten(),  # (B / pack, pack*C*H*W)
            nn.Linear(pack * math.prod(shape), HIDDEN[1]),  # no norm on D's first layer
            *d_activation(slope, dropout),
            nn.Linear(HIDDEN[1], HIDDEN[0], bias=has_bias(norm)),
            norm1d(norm, HIDDEN[0]),
            *d_activation(slope, dropout),
            nn.Linear(HIDDEN[0], 1),  # (B, 1) logit
        )

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W)
        return self.net(pack_samples(x, self.pack))  # (B / pack, 1)
