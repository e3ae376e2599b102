"""The convolutional GANs: DCGAN (Radford et al. 2015) at 28, 32 and 64 pixels, and the Keras
MNIST tutorial's upsampling generator.

Shared by all: BN (or cfg.norm) everywhere except D's first layer and G's output, ReLU in G,
LeakyReLU in D, stride-2 convs instead of pooling. D returns a raw logit (no sigmoid): the
step uses BCE-with-logits, which is stable where sigmoid followed by log is not. Channels
(1 or 3) come from the data.
"""

from __future__ import annotations

from torch import Tensor, nn

from trainers.models.common import d_activation, has_bias, norm2d, output_activation, pack_samples


class ProjectedGenerator(nn.Module):
    """pytorch/examples' DCGAN G from a dense projection: z -> (4w, s, s), then k4 s2 transposed
    convs halving the width and doubling the side: 7 -> 14 -> 28 (dcgan28, size 28) or
    4 -> 8 -> 16 -> 32 (dcgan32, TF-Slim style, size 32)."""

    START = {28: (7, 2), 32: (4, 3)}  # size -> (projected side, transposed convs)

    def __init__(
        self, latent_dim: int, width: int, channels: int = 1, norm: str = "batch", output: str = "tanh", size: int = 28
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        w, bias = width, has_bias(norm)
        self._w, (self._side, stages) = w, self.START[size]
        # No bias before a norm layer: its shift makes the bias redundant.
        self.project = nn.Linear(latent_dim, 4 * w * self._side**2, bias=bias)
        layers: list[nn.Module] = [norm2d(norm, 4 * w), nn.ReLU(inplace=True)]
        c = 4 * w
        for _ in range(stages - 1):  # dcgan28: (B, 2w, 14, 14); dcgan32: (B, 2w, 8, 8), (B, w, 16, 16)
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=bias), norm2d(norm, c // 2), nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), output_activation(output)]  # (B, C, size, size)
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        x = self.project(z).view(z.shape[0], 4 * self._w, self._side, self._side)  # (B, 4w, s, s)
        return self.net(x)  # (B, C, size, size)


class DCGAN28UpsampleGenerator(nn.Module):
    """The Keras MNIST tutorial's G: dense to 7x7, then nearest-neighbour upsampling + 3x3 conv
    instead of transposed convs (no checkerboard artefacts from overlapping strides)."""

    def __init__(
        self, latent_dim: int, width: int, channels: int = 1, norm: str = "batch", output: str = "tanh"
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        w, bias = width, has_bias(norm)
        self.project = nn.Linear(latent_dim, 4 * w * 7 * 7, bias=bias)
        self.net = nn.Sequential(
            norm2d(norm, 4 * w),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, 4w, 14, 14)
            nn.Conv2d(4 * w, 2 * w, 3, 1, 1, bias=bias),  # (B, 2w, 14, 14)
            norm2d(norm, 2 * w),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, 2w, 28, 28)
            nn.Conv2d(2 * w, w, 3, 1, 1, bias=bias),  # (B, w, 28, 28)
            norm2d(norm, w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, channels, 3, 1, 1),  # (B, C, 28, 28)
            output_activation(output),
        )
        self._w = w

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        return self.net(self.project(z).view(z.shape[0], 4 * self._w, 7, 7))  # (B, C, 28, 28)


class DCGAN64Generator(nn.Module):
    """Radford et al. / pytorch/examples dcgan: z as a 1x1 map, k4 transposed convs 1 -> 4 -> 8 -> 16 -> 32 -> 64."""

    def __init__(self, latent_dim: int, width: int, channels: int, norm: str = "batch", output: str = "tanh") -> None:
        super().__init__()
        self.latent_dim = latent_dim
        w, bias = width, has_bias(norm)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 8 * w, 4, 1, 0, bias=bias),  # (B, 8w, 4, 4)
            norm2d(norm, 8 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1, bias=bias),  # (B, 4w, 8, 8)
            norm2d(norm, 4 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=bias),  # (B, 2w, 16, 16)
            norm2d(norm, 2 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=bias),  # (B, w, 32, 32)
            norm2d(norm, w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, channels, 4, 2, 1),  # (B, C, 64, 64); pytorch/examples has no bias here either way
            output_activation(output),
        )

    def forward(self, z: Tensor) -> Tensor:  # z: (B, latent_dim)
        return self.net(z.view(z.shape[0], -1, 1, 1))  # (B, C, 64, 64)


class ConvDiscriminator(nn.Module):
    """D of every conv model: k4 s2 convs halving the side (28 -> 14 -> 7, 32 -> ... -> 4,
    64 -> ... -> 4) and doubling the width from `width`, then a linear logit. pytorch/examples'
    64x64 D ends in a k4 conv over the 4x4 map instead: the same function as this linear layer."""

    STAGES = {28: 2, 32: 3, 64: 4}

    def __init__(
        self,
        width: int,
        slope: float,
        channels: int = 1,
        norm: str = "batch",
        dropout: float = 0.0,
        size: int = 28,
        pack: int = 1,
    ) -> None:
        super().__init__()
        self.pack = pack
        # No norm on the first layer (Radford et al.): it would normalise away the input statistics.
        # PacGAN: a pack's samples come in as pack * channels channels. (B / pack, w, size/2, size/2)
        layers: list[nn.Module] = [nn.Conv2d(pack * channels, width, 4, 2, 1), *d_activation(slope, dropout)]
        c, side = width, size // 2
        for _ in range(self.STAGES[size] - 1):
            layers += [
                nn.Conv2d(c, 2 * c, 4, 2, 1, bias=has_bias(norm)),
                norm2d(norm, 2 * c),
                *d_activation(slope, dropout),
            ]
            c, side = 2 * c, side // 2  # dcgan28: (B, 2w, 7, 7); dcgan32: (B, 4w, 4, 4); dcgan64: (B, 8w, 4, 4)
        layers += [nn.Flatten(), nn.Linear(c * side * side, 1)]  # (B, 1) logit
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, size, size)
        return self.net(pack_samples(x, self.pack))  # (B / pack, 1)
