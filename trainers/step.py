"""One GAN training iteration as a pure function: (models, optimizers, data, config) -> metrics.

No Ray, MLflow or boto3 here (a unit test imports this module with them blocked). The Ray
loop adds distribution by passing `sync_grads`, and turns DivergenceError into a stop.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.config import TrainerConfig
from trainers.data import DataSource
from trainers.models import sample_latent


class DivergenceError(RuntimeError):
    """A loss or gradient norm became NaN or inf (stylegan2-pytorch's NanException)."""

    def __init__(self, quantity: str, value: float, step: int | None = None) -> None:
        self.quantity = quantity
        self.value = value
        self.step = step
        where = f" at iteration {step}" if step is not None else ""
        super().__init__(f"training diverged{where}: {quantity} = {value}; lower the learning rates or restore a checkpoint")


def _optimizer(name: str, params, lr: float, cfg: TrainerConfig) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)


def build_optimizers(G: nn.Module, D: nn.Module, cfg: TrainerConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(opt_g, opt_d), each network with its own optimizer and learning rate (TTUR)."""
    return _optimizer(cfg.optimizer_g, G.parameters(), cfg.lr_g, cfg), _optimizer(cfg.optimizer_d, D.parameters(), cfg.lr_d, cfg)


def set_hyperparams(opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, cfg: TrainerConfig) -> None:
    """Put cfg's learning rates, betas and momentum into existing optimizers (after a PBT
    exploit loaded the donor's optimizer states, which carry the donor's values)."""
    for opt, lr in ((opt_g, cfg.lr_g), (opt_d, cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr
            if "betas" in group:
                group["betas"] = (cfg.beta1, cfg.beta2)
            if "momentum" in group:
                group["momentum"] = cfg.momentum


def _grad_norm(module: nn.Module) -> Tensor:
    """Total L2 norm of all gradients of `module` (0 if none)."""
    norms = [p.grad.detach().norm(2) for p in module.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.stack(norms).norm(2)


def _check_finite(values: dict[str, Tensor], step: int | None) -> None:
    for name, value in values.items():
        v = float(value.detach())
        if not math.isfinite(v):
            raise DivergenceError(name, v, step)


def train_step(
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    data: DataSource,
    cfg: TrainerConfig,
    generator: torch.Generator,
    sync_grads: Callable[[nn.Module], None] | None = None,
    *,
    step: int | None = None,
) -> dict[str, float]:
    """cfg.d_steps D updates then cfg.g_steps G updates; metrics of the last of each.

    All randomness (real batches, z) comes from `generator` (a CPU torch.Generator), so
    restoring its state replays the run. `step` only labels a DivergenceError.
    Raises DivergenceError before an optimizer step that would apply a non-finite gradient.
    """
    device = next(G.parameters()).device
    B = cfg.batch_size
    G.train()
    D.train()

    ############################
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    ###########################
    for i in range(cfg.d_steps):
        real = data.sample(B, generator).to(device)  # (B, 1, 28, 28) or (B, 2)
        z = sample_latent(B, cfg, generator).to(device)  # (B, latent_dim)
        last = i == cfg.d_steps - 1
        # The last D update's fakes are kept with their graph and reused by G's first update,
        # as pytorch/examples' dcgan does: one G forward per iteration instead of two.
        # Earlier ones need no graph; D only ever sees them detached.
        with torch.set_grad_enabled(last):
            fake_g = G(z)
        fake = fake_g.detach()
        opt_d.zero_grad(set_to_none=True)
        # Real and fake in separate batches so D's BN sees all-real / all-fake statistics (ganhacks).
        out_real = D(real).view(-1)  # (B,) logits
        # real_label < 1 is one-sided label smoothing (Salimans et al. 2016); fakes stay at 0.
        loss_d_real = F.binary_cross_entropy_with_logits(out_real, torch.full_like(out_real, cfg.real_label))
        out_fake = D(fake).view(-1)  # (B,)
        loss_d_fake = F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
        loss_d = loss_d_real + loss_d_fake
        loss_d.backward()
        # Sync before any check: averaged NaNs reach every worker, so all of them raise together
        # instead of one raising while the others wait in the next all-reduce.
        if sync_grads is not None:
            sync_grads(D)
        grad_norm_d = _grad_norm(D)
        _check_finite({"loss_d": loss_d, "grad_norm_d": grad_norm_d}, step)
        opt_d.step()
    # Drop D's gradients now: with D frozen below, stale ones would sit there unused.
    opt_d.zero_grad(set_to_none=True)

    ############################
    # (2) Update G network: maximize log(D(G(z)))
    ###########################
    # Freeze D so G's backward leaves D's .grad empty: opt_d has nothing to apply, and the
    # update cannot touch D (GAN_NOTES "update discipline").
    D.requires_grad_(False)
    try:
        for j in range(cfg.g_steps):
            if j > 0:  # the first G update reuses the last D update's fakes (and their graph)
                fake_g = G(sample_latent(B, cfg, generator).to(device))  # (B, 1, 28, 28) or (B, 2)
            opt_g.zero_grad(set_to_none=True)
            out = D(fake_g).view(-1)  # (B,)
            # Non-saturating loss (Goodfellow et al. 2014): target 1, not 1 - log(1 - D),
            # keeps G's gradient alive when D rejects its samples. No smoothing on G's target.
            loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
            loss_g.backward()
            if sync_grads is not None:
                sync_grads(G)
            grad_norm_g = _grad_norm(G)
            _check_finite({"loss_g": loss_g, "grad_norm_g": grad_norm_g}, step)
            opt_g.step()
    finally:
        D.requires_grad_(True)

    return {
        "loss_d_real": loss_d_real.detach().item(),  # ln 2 ~ 0.693 at equilibrium
        "loss_d_fake": loss_d_fake.detach().item(),
        "loss_d": loss_d.detach().item(),  # 2 ln 2 ~ 1.386 at equilibrium
        "loss_g": loss_g.detach().item(),
        "d_x": torch.sigmoid(out_real.detach()).mean().item(),
        "d_g_z": torch.sigmoid(out_fake.detach()).mean().item(),
        "grad_norm_d": grad_norm_d.item(),
        "grad_norm_g": grad_norm_g.item(),
    }
