"""mlp2d: a small tanh MLP GAN for the PacGAN / VEEGAN 2-D mixture experiments."""

from __future__ import annotations

from torch import Tensor, nn

from trainers.models.common import pack_samples


# mlp2d uses tanh hidden units in both nets. Measured on grid25 (width 128, z 256, batch 512,
# lr G 1e-3 / D 1e-4): ReLU G + LeakyReLU D collapsed onto 2-3 modes by 12.5k iterations,
# tanh reached 23-24 of 25 by 22.5k (as GAN_NOTES' "small tanh MLP"). The measurement is the
# reason; a smoother D surface is a plausible but untested explanation. leaky_slope is unused here.
def _tanh_mlp(inputs: int, width: int, layers: int, outputs: int) -> nn.Sequential:
    """`layers` hidden Linear + Tanh layers of `width` units, then a Linear to `outputs`."""
    hidden: list[nn.Module] = []
    for i in range(layers):
        hidden += [nn.Linear(inputs if i == 0 else width, width), nn.Tanh()]
    return nn.Sequential(*hidden, nn.Linear(width, outputs))


class MLP2dGenerator(nn.Module):
    def __init__(self, latent_dim: int, width: int, layers: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _tanh_mlp(latent_dim, width, layers, 2)  # (B, 2): unbounded, the mixtures span [-4, 4]

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        return self.net(z)  # (B, 2)


class MLP2dDiscriminator(nn.Module):
    def __init__(self, width: int, pack: int = 1, layers: int = 2) -> None:
        super().__init__()
        self.pack = pack
        self.net = _tanh_mlp(2 * pack, width, layers, 1)  # PacGAN: pack points side by side; (B, 1) logit

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 2)
        return self.net(pack_samples(x, self.pack))  # (B / pack, 1)
