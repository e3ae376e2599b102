"""SNGAN for 28x28 images: spectral normalisation on every layer of D and the hinge loss
(Miyato et al. 2018), a small upsampling G. ganops ships neither: this is a plugin."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from trainers.plugin import GanPlugin


class Generator(nn.Module):
    def __init__(self, latent_dim: int, ch: int, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, ch * 2 * 7 * 7)
        self.net = nn.Sequential(
            nn.BatchNorm2d(ch * 2),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ch * 2, ch, 3, padding=1),
            nn.BatchNorm2d(ch),
            nn.ReLU(),  # (B, ch, 14, 14)
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ch, channels, 3, padding=1),
            nn.Tanh(),  # (B, C, 28, 28)
        )
        self.ch = ch

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(z.shape[0], self.ch * 2, 7, 7))


class Discriminator(nn.Module):
    def __init__(self, ch: int, channels: int, slope: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, ch, 4, 2, 1)),
            nn.LeakyReLU(slope),  # (B, ch, 14, 14)
            spectral_norm(nn.Conv2d(ch, ch * 2, 4, 2, 1)),
            nn.LeakyReLU(slope),  # (B, 2ch, 7, 7)
            nn.Flatten(),
            spectral_norm(nn.Linear(ch * 2 * 7 * 7, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1)  # (B,) critic scores


class SNGan(GanPlugin):
    """Spectral-norm D, hinge loss. Searchable: g_channels, d_channels (plus every trainer setting)."""

    class Params(BaseModel):
        g_channels: int = Field(32, ge=4, le=512, description="G's base width")
        d_channels: int = Field(32, ge=4, le=512, description="D's base width")

    probabilities = False  # hinge: D outputs raw scores, not logits of "real"

    def build(self) -> tuple[nn.Module, nn.Module]:
        c, h, w = self.cfg.image_shape
        if (h, w) != (28, 28):
            raise ValueError(f"sngan makes 28x28 images; the data is {h}x{w}")
        return Generator(self.cfg.latent_dim, self.params.g_channels, c), Discriminator(
            self.params.d_channels, c, self.cfg.leaky_slope
        )

    def d_loss(self, D, out_real, out_fake, real, fake, generator, gp_scale=1.0):
        return F.relu(1 - out_real).mean(), F.relu(1 + out_fake).mean(), {}

    def g_loss(self, out: Tensor) -> Tensor:
        return -out.mean()
