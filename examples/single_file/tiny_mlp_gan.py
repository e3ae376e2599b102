"""A plugin in one file, no packaging: a two-layer MLP GAN on MNIST with uniform latents of its
own. Named in its spec as `tiny_mlp_gan.py:TinyMlpGan` (relative to the spec's folder)."""

import torch
from pydantic import BaseModel, Field
from torch import nn

from trainers.plugin import GanPlugin


class TinyMlpGan(GanPlugin):
    class Params(BaseModel):
        hidden: int = Field(128, ge=8, le=2048, description="hidden units of G and D")

    def build(self):
        c, h, w = self.cfg.image_shape
        n, k = c * h * w, self.params.hidden
        G = nn.Sequential(
            nn.Linear(self.cfg.latent_dim, k), nn.ReLU(), nn.Linear(k, n), nn.Tanh(), nn.Unflatten(1, (c, h, w))
        )
        D = nn.Sequential(nn.Flatten(), nn.Linear(n, k), nn.LeakyReLU(0.2), nn.Linear(k, 1))
        return G, D

    def sample_latent(self, n, generator):
        # U[-1, 1] whatever cfg.latent_dist says: this GAN's own choice
        return torch.rand(n, self.cfg.latent_dim, generator=generator, device=generator.device) * 2 - 1
