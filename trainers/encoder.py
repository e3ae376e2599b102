"""From an image back to z: an encoder E trained so that G(E(x)) reconstructs x, with G frozen.

The NVIDIA DIGITS GAN walkthrough's recipe: E is a copy of the trained D, initialised from D's
weights, with its last layer widened from one logit to the latent size (D already knows which
features tell images apart; only the head is new). E is trained with an L2 loss on the trial's
own data while G stays fixed. A conditional D reads the class too; E is class-blind (it feeds
D's class input a constant class 0), so its z is the image's style, which G then draws as any
class (style transfer). No Ray, MLflow or boto3 here: the orchestrator logs what this returns.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.config import TrainerConfig
from trainers.data import DataSource
from trainers.models import sample_latent

log = logging.getLogger(__name__)


class EncoderError(ValueError):
    """A D that cannot become an encoder (no linear or conv head); the message says why."""


def _last_head(D: nn.Module) -> tuple[nn.Module, str, nn.Linear | nn.Conv2d]:
    """(parent, attribute, layer) of D's last nn.Linear or nn.Conv2d: the logit layer to widen."""
    found: tuple[str, nn.Linear | nn.Conv2d] | None = None
    for name, module in D.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found = (name, module)
    if found is None:
        raise EncoderError(f"{type(D).__name__} has no nn.Linear or nn.Conv2d layer to widen into an encoder's head")
    name, layer = found
    parent_name, _, attr = name.rpartition(".")
    return D.get_submodule(parent_name) if parent_name else D, attr, layer


def _widened(layer: nn.Linear | nn.Conv2d, latent_dim: int) -> nn.Linear | nn.Conv2d:
    """`layer` with latent_dim outputs: output 0 keeps D's logit weights, the others start at
    N(0, 0.02) (the DCGAN init) so E's first z is D's logit plus small noise, not zeros."""
    new: nn.Linear | nn.Conv2d
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, latent_dim, bias=layer.bias is not None)
    else:
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        pad = p if isinstance(p, str) else (p[0], p[1])
        new = nn.Conv2d(layer.in_channels, latent_dim, (k[0], k[1]), (s[0], s[1]), pad, bias=layer.bias is not None)
    with torch.no_grad():
        nn.init.normal_(new.weight, 0.0, 0.02)
        new.weight[:1].copy_(layer.weight[:1])
        if new.bias is not None and layer.bias is not None:
            new.bias.zero_()
            new.bias[:1].copy_(layer.bias[:1])
    return new


class Encoder(nn.Module):
    """E(x) -> z (B, latent_dim): D's body with a widened head; uniform latents pass through tanh
    (G trained on U[-1, 1] never saw a z outside it)."""

    def __init__(self, D: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__()
        self.net = copy.deepcopy(D)
        parent, attr, layer = _last_head(self.net)
        self.head = _widened(layer, cfg.latent_dim)
        setattr(parent, attr, self.head)
        # z is the head's output, taken as it leaves the head: whatever D does after its logit
        # layer (a plugin's `.view(-1)`, a squeeze) is for one score per image, not for z.
        self._z: Tensor | None = None
        self.head.register_forward_hook(self._keep)
        self.latent_dim = cfg.latent_dim
        self.conditional = cfg.is_conditional
        self.uniform = cfg.latent_dist == "uniform"
        self.pack = cfg.pack

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) in G's output range
        if self.pack > 1:
            # A packing D (trainer.pack) judges packs: give it each image as a pack of copies of
            # itself, so E still maps one image to one z. (B * pack, C, H, W)
            x = x.repeat_interleave(self.pack, dim=0)
        if self.conditional:  # class-blind: D's class input held at class 0
            self.net(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        else:
            self.net(x)
        z, self._z = self._z, None
        assert z is not None  # the hook ran: the head is on D's path
        if z.dim() > 2:  # a conv head: (B, latent_dim, h, w), 1x1 in the built-in Ds; patches averaged
            z = z.flatten(2).mean(2)
        return torch.tanh(z) if self.uniform else z

    def _keep(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self._z = output


def build_encoder(D: nn.Module, cfg: TrainerConfig) -> Encoder:
    """E from a trained D (D itself is left untouched)."""
    return Encoder(D, cfg)


def reconstruct(G: nn.Module, z: Tensor, labels: Tensor | None) -> Tensor:
    """G(z) or G(z, labels): the image G draws for z (as the image's own class when conditional)."""
    return G(z, labels) if labels is not None else G(z)


@dataclass
class EncoderResult:
    """What training E gives: E (eval mode, CPU), its error curve and the final errors."""

    encoder: Encoder
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, mean L2 over the last `every` steps)
    recon_error: float = math.nan  # mean squared error of G(E(x)) on held-out draws
    random_z_error: float = math.nan  # the same for a random z: what E must beat
    pairs: tuple[Tensor, Tensor] | None = None  # (inputs, reconstructions), (n, C, H, W) in G's range


def l2_error(
    G: nn.Module,
    E: nn.Module | None,
    x: Tensor,
    labels: Tensor | None,
    cfg: TrainerConfig,
    generator: torch.Generator,
) -> tuple[float, Tensor]:
    """(mean squared error per pixel, G's images): of G(E(x)), or of G(random z) when E is None."""
    with torch.no_grad():
        z = E(x) if E is not None else sample_latent(x.shape[0], cfg, generator).to(x.device)
        out = reconstruct(G, z, labels)
        return F.mse_loss(out, x).item(), out


def train_encoder(
    G: nn.Module,
    D: nn.Module,
    data: DataSource,
    cfg: TrainerConfig,
    steps: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    every: int = 10,
    eval_n: int = 256,
    on_point: Callable[[int, float], None] | None = None,
) -> EncoderResult:
    """Train E (from D) for `steps` Adam steps on L2(G(E(x)), x) with G frozen; `on_point(step, error)`
    every `every` steps (a progress bar, a metric logger). Errors are per pixel in G's range."""
    if steps < 1:
        raise EncoderError(f"steps {steps}: train the encoder for at least 1 step")
    G = G.eval().requires_grad_(False)  # frozen: eval-mode norms (running stats), no gradient to G
    E = build_encoder(D, cfg).train()
    opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    result = EncoderResult(E)
    window: list[float] = []
    for step in range(1, steps + 1):
        x, labels = data.sample_labeled(batch_size, gen)  # (B, C, H, W) in G's range; labels for a conditional G
        loss = F.mse_loss(reconstruct(G, E(x), labels if cfg.is_conditional else None), x)
        if not torch.isfinite(loss):
            raise EncoderError(f"the encoder's loss became {loss.item()} at step {step}; try a lower learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if step % every == 0 or step == steps:
            point = sum(window) / len(window)
            result.curve.append((step, point))
            window.clear()
            if on_point is not None:
                on_point(step, point)
    E.eval()
    held = torch.Generator().manual_seed(seed + 1)
    x, labels = data.sample_labeled(eval_n, held)
    labels = labels if cfg.is_conditional else None
    result.recon_error, out = l2_error(G, E, x, labels, cfg, held)
    result.random_z_error, _ = l2_error(G, None, x, labels, cfg, held)
    result.pairs = (x[:32], out[:32])
    log.info("encoder: reconstruction error %.4f, a random z's %.4f", result.recon_error, result.random_z_error)
    return result


def encode(E: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """z of every image (N, C, H, W) in G's range -> (N, latent_dim), in batches, no gradient."""
    E.eval()
    with torch.no_grad():
        return torch.cat([E(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
