"""The GAN architectures ganops trains, built from a TrainerConfig (its `model` setting).

Image models (trainers.models.dcgan, trainers.models.fc) take their channels and size from
the data (cfg.image_shape) and honour cfg.norm, cfg.dropout, cfg.init and cfg.output through
trainers.models.common; mlp2d (trainers.models.mlp2d) is the 2-D mixtures' fixed tanh MLP.
Which model fits which data is checked by TrainerConfig (trainers.config.MODEL_SIZE).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from trainers.config import TrainerConfig
from trainers.models.common import init_weights, spectral_normalise
from trainers.models.conditional import CDCGAN28Discriminator, CDCGAN28Generator
from trainers.models.dcgan import (
    ConvDiscriminator,
    DCGAN28UpsampleGenerator,
    DCGAN64Generator,
    ProjectedGenerator,
)
from trainers.models.fc import FCDiscriminator, FCGenerator
from trainers.models.mlp2d import MLP2dDiscriminator, MLP2dGenerator
from trainers.plugin import GanPlugin, plugin_class

__all__ = ["BuiltinGan", "build_models", "gan_for", "sample_latent"]

# The convolutional image models' generators (one signature); D is ConvDiscriminator for all.
_CONV_G: Mapping[str, Callable[..., nn.Module]] = {
    "dcgan28": ProjectedGenerator,
    "dcgan28_upsample": DCGAN28UpsampleGenerator,
    "dcgan32": functools.partial(ProjectedGenerator, size=32),
    "dcgan64": DCGAN64Generator,
}


def _build(cfg: TrainerConfig) -> tuple[nn.Module, nn.Module]:
    if cfg.model == "mlp2d":
        # PyTorch's default (Kaiming-uniform) init: N(0, 0.02) starves a 2-layer MLP
        # whose output must reach +-4.
        return (
            MLP2dGenerator(cfg.latent_dim, cfg.width, cfg.g_layers),
            MLP2dDiscriminator(cfg.width, cfg.pack, cfg.d_layers),
        )
    shape = cfg.image_shape
    assert shape is not None  # TrainerConfig pairs the 2-D mixtures with mlp2d only: the rest are image models
    c, h, w = shape
    if cfg.model == "cdcgan28":  # the class fed to every layer of both nets; dcgan28's conventions
        G: nn.Module = CDCGAN28Generator(cfg.latent_dim, cfg.g_width)
        D: nn.Module = CDCGAN28Discriminator(cfg.d_width, cfg.leaky_slope)
    elif cfg.model == "fc":
        G = FCGenerator(cfg.latent_dim, (c, h, w), cfg.norm, cfg.output)
        D = FCDiscriminator((c, h, w), cfg.leaky_slope, cfg.norm, cfg.dropout, cfg.pack)
    else:
        G = _CONV_G[cfg.model](cfg.latent_dim, cfg.g_width, c, cfg.norm, cfg.output)
        D = ConvDiscriminator(cfg.d_width, cfg.leaky_slope, c, cfg.norm, cfg.dropout, size=h, pack=cfg.pack)
    init_weights(G, cfg.init)
    init_weights(D, cfg.init)
    return G, D


class BuiltinGan(GanPlugin):
    """The built-in architectures through the plugin interface: ganops' own losses and latents."""

    def build(self) -> tuple[nn.Module, nn.Module]:
        return _build(self.cfg)


def gan_for(cfg: TrainerConfig) -> GanPlugin:
    """The GAN behind cfg.model: a built-in or the user's plugin (trainers/plugin.py)."""
    return plugin_class(cfg.model)(cfg) if cfg.is_plugin else BuiltinGan(cfg)


def build_models(cfg: TrainerConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for cfg.model, initialised from cfg.seed without touching the global RNG."""
    # fork_rng: the init is a function of cfg.seed alone, and callers' RNG streams stay put.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        G, D = gan_for(cfg).build()
        if not (isinstance(G, nn.Module) and isinstance(D, nn.Module)):
            raise TypeError(
                f"{cfg.model}.build() must return (G, D) as two torch.nn.Module, "
                f"got ({type(G).__name__}, {type(D).__name__})"
            )
        if cfg.spectral_norm:  # after the init, a plugin's D too; its u, v drawn from the seeded RNG
            spectral_normalise(D)
    return G, D


def sample_latent(n: int, cfg: TrainerConfig, generator: torch.Generator) -> Tensor:
    """z of shape (n, latent_dim): N(0, I) or U[-1, 1], drawn from `generator`, on its device
    (a plugin may draw its own: GanPlugin.sample_latent)."""
    return gan_for(cfg).sample_latent(n, generator)
