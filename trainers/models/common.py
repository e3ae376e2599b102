"""Building blocks the image architectures share: normalisation, activations, dropout, init.

Each helper maps one TrainerConfig setting (norm, output, dropout, init) onto layers, so every
architecture honours the settings the same way. With the defaults (batch, tanh, 0, normal)
they build exactly the layers dcgan28 always had, in the same order, so its seeded weights
are unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.LayerNorm)


def norm2d(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d, InstanceNorm2d (affine, no running stats: per sample, train and eval alike) or Identity."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def norm1d(kind: str, features: int) -> nn.Module:
    """Dense layers: BatchNorm1d, LayerNorm (instance norm's per-sample analogue for a vector) or Identity."""
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "instance":
        return nn.LayerNorm(features)
    return nn.Identity()


def has_bias(norm: str) -> bool:
    """A layer feeding a norm layer needs no bias: the norm's shift makes it redundant."""
    return norm == "none"


def output_activation(kind: str) -> nn.Module:
    """G's last activation: tanh for data in [-1, 1], sigmoid for data in [0, 1]."""
    return nn.Tanh() if kind == "tanh" else nn.Sigmoid()


def d_activation(slope: float, dropout: float) -> list[nn.Module]:
    """D's hidden activation, then dropout when asked for (nothing added at 0, so the default
    network's layer indices, hence its state-dict keys, stay as they were)."""
    layers: list[nn.Module] = [nn.LeakyReLU(slope, inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def init_weights(module: nn.Module, kind: str) -> None:
    """Initialise every conv / linear / norm layer of `module` (draws from torch's global RNG).

    normal: Radford et al., weights N(0, 0.02), norm scales N(1, 0.02), biases 0.
    xavier: Glorot & Bengio uniform (the fully connected GAN's init), norm scales 1, biases 0.
    """

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_LAYERS) and getattr(m, "weight", None) is not None:
            if kind == "xavier":
                nn.init.ones_(m.weight)
            else:
                nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    module.apply(init)


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """PacGAN's packing (Lin et al. 2018): (B, F) -> (B/pack, pack*F) or (B, C, H, W) ->
    (B/pack, pack*C, H, W), consecutive samples side by side. pack 1 returns x itself."""
    if pack == 1:
        return x
    if x.shape[0] % pack:
        raise ValueError(
            f"D packs {pack} samples per judgement (trainer.pack) but got a batch of {x.shape[0]}; "
            f"give D a multiple of {pack} samples"
        )
    return x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


def spectral_normalise(D: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018) on every conv and linear layer of D, in place. Its
    vectors u, v start from torch's global RNG (build_models seeds it) and take 15 power
    iterations there, then one per training forward; the state dict holds each weight as
    parametrizations.weight.original plus u and v, all plain tensors (weights_only loads them)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(D.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            spectral_norm(m)
        elif isinstance(m, nn.ConvTranspose2d):
            spectral_norm(m, dim=1)  # its output channels are dim 1
    return D
