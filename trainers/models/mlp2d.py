"""mlp2d: a small tanh MLP GAN for the PacGAN / VEEGAN 2-D mixture experiments."""

from __future__ import annotations

from torch import Tensor, nn

from trainers.models.common import pack_samples


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
    def __init__(self, width: int, pack: int = 1) -> None:
        super().__init__()
        self.pack = pack
        self.net = nn.Sequential(
            nn.Linear(2 * pack, width),  # PacGAN: pack points side by side
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, 1),  # (B, 1) logit
        )

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 2)
        return self.net(pack_samples(x, self.pack))  # (B / pack, 1)
