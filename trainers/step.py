"""One GAN training iteration as a pure function: (models, optimizers, data, config) -> metrics.

No Ray, MLflow or boto3 here (a unit test imports this module with them blocked). The Ray
loop adds distribution by passing `sync_grads`, and turns DivergenceError into a stop.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainers.config import TrainerConfig
from trainers.data import DataSource
from trainers.models import gan_for
from trainers.models.conditional import sample_labels
from trainers.plugin import GanPlugin
from trainers.precision import FP32, SCALE_FLOOR, Precision


class DivergenceError(RuntimeError):
    """A loss or gradient norm became NaN or inf (stylegan2-pytorch's NanException)."""

    def __init__(self, quantity: str, value: float, step: int | None = None) -> None:
        self.quantity = quantity
        self.value = value
        self.step = step
        where = f" at iteration {step}" if step is not None else ""
        super().__init__(
            f"training diverged{where}: {quantity} = {value}; lower the learning rates or restore a checkpoint"
        )


def _optimizer(name: str, params, lr: float, cfg: TrainerConfig) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)


def build_optimizers(
    G: nn.Module, D: nn.Module, cfg: TrainerConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(opt_g, opt_d), each network with its own optimizer and learning rate (TTUR)."""
    return _optimizer(cfg.optimizer_g, G.parameters(), cfg.lr_g, cfg), _optimizer(
        cfg.optimizer_d, D.parameters(), cfg.lr_d, cfg
    )


def build_schedulers(
    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, cfg: TrainerConfig
) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """cfg.lr_decay's schedulers for (opt_g, opt_d), stepped once per iteration by train_step;
    [] for "none". Both end at lr_decay_final times their initial lr at iteration cfg.steps."""
    if cfg.lr_decay == "linear":
        return [
            torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=cfg.lr_decay_final, total_iters=cfg.steps)
            for o in (opt_g, opt_d)
        ]
    if cfg.lr_decay == "exponential":
        gamma = cfg.lr_decay_final ** (1.0 / cfg.steps)
        return [torch.optim.lr_scheduler.ExponentialLR(o, gamma=gamma) for o in (opt_g, opt_d)]
    return []


def build_ema(G: nn.Module, cfg: TrainerConfig) -> AveragedModel | None:
    """An exponential moving average of G's weights and BN buffers (cfg.ema's decay), or None.
    Its `.module` is a G to evaluate and save; train_step updates it after every iteration."""
    if cfg.ema is None:
        return None
    return AveragedModel(getattr(G, "module", G), multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


def set_hyperparams(
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    cfg: TrainerConfig,
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler] = (),
) -> None:
    """Put cfg's learning rates, betas and momentum into existing optimizers (after a PBT
    exploit loaded the donor's optimizer states, which carry the donor's values).

    With an lr schedule (`schedulers` = build_schedulers' list, in the same order) the group's
    lr is where the schedule has brought it: it is rescaled by new / old initial lr, and the
    schedulers' base lrs move to the new one (a no-op when the lr did not change)."""
    for i, (opt, lr) in enumerate(((opt_g, cfg.lr_g), (opt_d, cfg.lr_d))):
        sched = schedulers[i] if schedulers else None
        for k, group in enumerate(opt.param_groups):
            if sched is not None:
                group["lr"] = group["lr"] * (lr / sched.base_lrs[k])
                sched.base_lrs[k] = group["initial_lr"] = lr
            else:
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


def d_targets(n: int, cfg: TrainerConfig, generator: torch.Generator) -> tuple[Tensor | float, Tensor | float]:
    """BCE targets for D's real and fake batches: floats when every sample gets the same one.

    real_label alone is one-sided smoothing (Salimans et al. 2016); soft_labels draws them per
    sample (real ~ U[0.7, 1.2], fake ~ U[0, 0.3], ganhacks #6); label_flip swaps each sample's
    target with probability p (ganhacks #7). Draws come from `generator` only when a knob is on,
    so the default run's random stream is unchanged.
    """
    if cfg.soft_labels:
        t_real: Tensor | float = torch.rand(n, generator=generator, device=generator.device) * 0.5 + 0.7
        t_fake: Tensor | float = torch.rand(n, generator=generator, device=generator.device) * 0.3
    else:
        t_real, t_fake = cfg.real_label, 0.0
    if cfg.label_flip > 0:
        flip_real = torch.rand(n, generator=generator, device=generator.device) < cfg.label_flip
        flip_fake = torch.rand(n, generator=generator, device=generator.device) < cfg.label_flip
        real_v, fake_v = (
            torch.as_tensor(t_real, device=generator.device).expand(n),
            torch.as_tensor(t_fake, device=generator.device).expand(n),
        )
        t_real, t_fake = torch.where(flip_real, fake_v, real_v), torch.where(flip_fake, real_v, fake_v)
    return t_real, t_fake


def _bce(logits: Tensor, target: Tensor | float) -> Tensor:
    if isinstance(target, Tensor):
        return F.binary_cross_entropy_with_logits(logits, target.to(logits))
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def gradient_penalty(
    D: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator, scale: float = 1.0
) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per
    sample (Gulrajani et al. 2017, Algorithm 1). create_graph so the penalty trains D.
    `scale`: fp16's loss scale, applied to the inner gradient and undone (PyTorch's AMP recipe
    for gradient penalties), so the inner backward does not underflow either."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=generator.device).to(real)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat)
    grad = _input_grad(out, x_hat, scale)
    # One norm per judgement of D: per sample, or per pack of trainer.pack samples (PacGAN).
    return ((grad.reshape(out.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


def _input_grad(out: Tensor, x: Tensor, scale: float) -> Tensor:
    """d out.sum() / dx with its graph (create_graph, so a penalty on it trains D). Under fp16
    the sum is multiplied by the loss `scale` and the gradient divided by it (PyTorch's AMP
    recipe for gradient penalties, against underflow); if the scaled gradient overflows (the
    scaler's first steps start at 2**16), it is taken again unscaled, so the penalty stays
    finite and the scaler, not a DivergenceError, deals with the overflowing update."""
    if scale != 1.0:
        (grad,) = torch.autograd.grad(out.sum() * scale, x, create_graph=True)
        if bool(torch.isfinite(grad).all()):
            return grad / scale
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad


def r_penalty(out: Tensor, x: Tensor, scale: float = 1.0) -> Tensor:
    """E||grad_x D(x)||^2 over D's judgements `out` = D(x) (x must require grad): R1 on real x,
    R2 on fake x (Mescheder et al. 2018, eq. 9; the loss weighs it gamma / 2). With packing a
    judgement's gradient spans its pack's samples. `scale` as in gradient_penalty."""
    grad = _input_grad(out, x, scale)
    return grad.float().pow(2).reshape(out.shape[0], -1).sum(1).mean()


def d_loss(
    D: Callable[[Tensor], Tensor],
    out_real: Tensor,
    out_fake: Tensor,
    real: Tensor,
    fake: Tensor,
    cfg: TrainerConfig,
    generator: torch.Generator,
    gp_scale: float = 1.0,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """D's loss as (real term, fake term, extras); the total is their sum plus gp_lambda * extras["gp"]."""
    if cfg.loss == "hinge":
        return F.relu(1 - out_real).mean(), F.relu(1 + out_fake).mean(), {}
    if cfg.loss == "wgan-gp":
        return -out_real.mean(), out_fake.mean(), {"gp": gradient_penalty(D, real, fake, generator, gp_scale)}
    t_real, t_fake = d_targets(out_real.shape[0], cfg, generator)
    return _bce(out_real, t_real), _bce(out_fake, t_fake), {}


def g_loss(out: Tensor, cfg: TrainerConfig) -> Tensor:
    """G's loss on D's outputs for its samples. No smoothing or flipping on G's target."""
    if cfg.loss == "nonsaturating":
        # Goodfellow et al. 2014: target 1, i.e. -log D(G(z)), keeps G's gradient alive when
        # D rejects its samples.
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    if cfg.loss == "minimax":
        # The game's own objective: minimise log(1 - D(G(z))) = -BCE(out, 0). Saturates when D wins.
        return -F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
    return -out.mean()  # hinge and wgan-gp: raise the critic's score of the fakes


def _conditioned(net: nn.Module, labels: Tensor | None) -> Callable[[Tensor], Tensor]:
    """`net` as a function of its input alone: bound to `labels` for a conditional network
    (trainers/models/conditional.py), the network itself otherwise."""
    return net if labels is None else (lambda x: net(x, labels))


def _fake_labels(cfg: TrainerConfig, n: int, generator: torch.Generator, device) -> Tensor | None:
    """Classes for G's samples (uniform, from the step's generator so a resume replays them); None unconditioned."""
    return sample_labels(n, generator).to(device) if cfg.is_conditional else None


def _apply(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    loss: Tensor,
    name: str,
    cfg: TrainerConfig,
    precision: Precision,
    sync_grads: Callable[[nn.Module], None] | None,
    step: int | None,
    metrics: dict[str, float],
) -> None:
    """Backward `loss` into `net` and take `opt`'s step: gradients averaged across workers,
    checked, clipped. Puts grad_norm_<name> (before clipping) and, under fp16, the scaler's
    state into `metrics`. Raises DivergenceError before applying a non-finite update."""
    precision.scale(loss, name).backward()
    # Sync before any check: averaged NaNs reach every worker, so all of them raise together
    # instead of one raising while the others wait in the next all-reduce. (Scaled gradients
    # are summed alike on every rank, so every rank's scaler skips or steps together.)
    if sync_grads is not None:
        sync_grads(net)
    precision.unscale(opt, name)
    norm = _grad_norm(net)
    scaler = precision.scaler(name)
    if scaler is None:
        _check_finite({f"loss_{name}": loss, f"grad_norm_{name}": norm}, step)
    else:
        # fp16: an overflowing gradient is the scaler's to skip (it halves the scale); the loss
        # must be finite, and a scale that keeps falling means they overflow even unscaled.
        _check_finite({f"loss_{name}": loss}, step)
        if scaler.get_scale() < SCALE_FLOOR:
            raise DivergenceError(f"loss_scale_{name}", scaler.get_scale(), step)
    if cfg.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
    stepped = precision.step(opt, name)
    if math.isfinite(v := norm.item()):  # a skipped fp16 update's norm is inf: left out of the eval's mean
        metrics[f"grad_norm_{name}"] = v
    if scaler is not None:
        metrics[f"amp_skipped_{name}"] = 0.0 if stepped else 1.0
        metrics[f"loss_scale_{name}"] = scaler.get_scale()


class _DRound(NamedTuple):
    """What the last D update leaves for G's first update and for the step's metrics."""

    fake_g: Tensor  # G(z) of the last D update, with its graph: G's first update reuses it
    y_fake: Tensor | None
    out_real: Tensor
    out_fake: Tensor
    loss_d_real: Tensor
    loss_d_fake: Tensor
    loss_d: Tensor
    extra: dict[str, Tensor]


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
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler] = (),
    ema: AveragedModel | None = None,
    precision: Precision = FP32,
    gan: GanPlugin | None = None,
) -> dict[str, float]:
    """cfg.d_steps D updates then cfg.g_steps G updates; metrics of the last of each.

    All randomness (real batches, z) comes from `generator`, on its device (the loop gives each
    worker one on its own device), so restoring its state replays the run. A conditional model
    (cfg.is_conditional) sees real images with their labels and fakes with classes drawn
    uniformly. `step` labels a DivergenceError and times lazy R1/R2 (cfg.reg_every; None: every
    step). After the updates the lr `schedulers` step once and `ema` (build_ema) averages G's new
    weights in. `precision` (trainers/precision.py): autocast around the forward passes and, for
    fp16, a loss scaler per network. `gan`: gan_for(cfg), which a loop builds once rather than per
    step (None: built here).
    Raises DivergenceError before an optimizer step that would apply a non-finite gradient.
    """
    G.train()
    D.train()
    grads: dict[str, float] = {}
    gan = gan if gan is not None else gan_for(cfg)  # a plugin may bring its own losses (trainers/plugin.py)
    d = _update_d(G, D, opt_d, data, cfg, generator, gan, precision, sync_grads, step, grads)
    loss_g, out = _update_g(G, D, opt_g, cfg, generator, gan, precision, sync_grads, step, grads, d)
    for sched in schedulers:
        sched.step()
    if ema is not None:
        ema.update_parameters(getattr(G, "module", G))
    return _step_metrics(cfg, d, loss_g, out, grads)


def _update_d(
    G: nn.Module,
    D: nn.Module,
    opt_d: torch.optim.Optimizer,
    data: DataSource,
    cfg: TrainerConfig,
    generator: torch.Generator,
    gan: GanPlugin,
    precision: Precision,
    sync_grads: Callable[[nn.Module], None] | None,
    step: int | None,
    grads: dict[str, float],
) -> _DRound:
    ############################
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    ###########################
    device = next(G.parameters()).device
    B = cfg.batch_size
    # R1 / R2 (off by default); lazily (reg_every > 1) on every reg_every-th iteration, weighted reg_every times.
    r1, r2 = (cfg.r1, cfg.r2) if step is None or step % cfg.reg_every == 0 else (0.0, 0.0)
    for i in range(cfg.d_steps):
        if cfg.is_conditional:
            real, y_real = data.sample_labeled(B, generator)  # (B, 1, 28, 28), (B,)
            assert y_real is not None  # cdcgan28 trains on MNIST with its labels (TrainerConfig)
            real, y_real = real.to(device), y_real.to(device)
        else:
            real, y_real = data.sample(B, generator).to(device), None  # (B, 1, 28, 28) or (B, 2)
        z = gan.sample_latent(B, generator).to(device)  # (B, latent_dim)
        y_fake = _fake_labels(cfg, B, generator, device)
        last = i == cfg.d_steps - 1
        with precision.autocast():
            # The last D update's fakes are kept with their graph and reused by G's first update,
            # as pytorch/examples' dcgan does: one G forward per iteration instead of two.
            # Earlier ones need no graph; D only ever sees them detached.
            with torch.set_grad_enabled(last):
                fake_g = _conditioned(G, y_fake)(z)
            fake = fake_g.detach()
            # R1 / R2 differentiate D's outputs with respect to its inputs.
            real = real.detach().requires_grad_(True) if r1 > 0 else real
            fake = fake.requires_grad_(True) if r2 > 0 else fake
            opt_d.zero_grad(set_to_none=True)
            # Real and fake in separate batches so D's BN sees all-real / all-fake statistics (ganhacks).
            out_real = _conditioned(D, y_real)(real).view(-1)  # (B,) logits (critic scores for hinge / wgan-gp)
            out_fake = _conditioned(D, y_fake)(fake).view(-1)  # (B,)
            # A conditional critic's gradient penalty is taken on the interpolates under the real labels.
            own = gan.d_loss(
                _conditioned(D, y_real), out_real, out_fake, real, fake, generator, precision.gp_scale("d")
            )
            if own is not None:
                loss_d_real, loss_d_fake, extra = own
                loss_d = loss_d_real + loss_d_fake + sum(extra.values(), torch.zeros((), device=device))
            else:
                loss_d_real, loss_d_fake, extra = d_loss(
                    _conditioned(D, y_real), out_real, out_fake, real, fake, cfg, generator, precision.gp_scale("d")
                )
                loss_d = loss_d_real + loss_d_fake
                if "gp" in extra:
                    loss_d = loss_d + cfg.gp_lambda * extra["gp"]
            for name, gamma, out, x in (("r1", r1, out_real, real), ("r2", r2, out_fake, fake)):
                if gamma > 0:
                    extra = {**extra, name: r_penalty(out, x, precision.gp_scale("d"))}
                    loss_d = loss_d + gamma / 2 * cfg.reg_every * extra[name]
        _apply(D, opt_d, loss_d, "d", cfg, precision, sync_grads, step, grads)
    # Drop D's gradients now: with D frozen below, stale ones would sit there unused.
    opt_d.zero_grad(set_to_none=True)
    return _DRound(fake_g, y_fake, out_real, out_fake, loss_d_real, loss_d_fake, loss_d, extra)


def _update_g(
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    cfg: TrainerConfig,
    generator: torch.Generator,
    gan: GanPlugin,
    precision: Precision,
    sync_grads: Callable[[nn.Module], None] | None,
    step: int | None,
    grads: dict[str, float],
    d: _DRound,
) -> tuple[Tensor, Tensor]:
    """G's updates; (loss_g, D's output on G's last samples)."""
    ############################
    # (2) Update G network: maximize log(D(G(z)))
    ###########################
    device = next(G.parameters()).device
    B = cfg.batch_size
    fake_g, y_fake = d.fake_g, d.y_fake
    # Freeze D so G's backward leaves D's .grad empty: opt_d has nothing to apply, and the
    # update cannot touch D (GAN_NOTES "update discipline").
    D.requires_grad_(False)
    try:
        for j in range(cfg.g_steps):
            with precision.autocast():
                if j > 0:  # the first G update reuses the last D update's fakes (and their graph)
                    z = gan.sample_latent(B, generator).to(device)
                    y_fake = _fake_labels(cfg, B, generator, device)
                    fake_g = _conditioned(G, y_fake)(z)  # (B, 1, 28, 28) or (B, 2)
                opt_g.zero_grad(set_to_none=True)
                out = _conditioned(D, y_fake)(fake_g).view(-1)  # (B,)
                own_g = gan.g_loss(out)
                loss_g = own_g if own_g is not None else g_loss(out, cfg)
            _apply(G, opt_g, loss_g, "g", cfg, precision, sync_grads, step, grads)
    finally:
        D.requires_grad_(True)
    return loss_g, out


def _step_metrics(
    cfg: TrainerConfig, d: _DRound, loss_g: Tensor, out: Tensor, grads: dict[str, float]
) -> dict[str, float]:
    """The step's scalars: losses, D's probabilities (BCE) or critic scores, extras, gradient norms."""
    metrics = {
        "loss_d_real": d.loss_d_real.detach().item(),  # BCE: ln 2 ~ 0.693 at equilibrium
        "loss_d_fake": d.loss_d_fake.detach().item(),
        "loss_d": d.loss_d.detach().item(),  # BCE: 2 ln 2 ~ 1.386 at equilibrium
        "loss_g": loss_g.detach().item(),
    }
    out_real, out_fake, out = d.out_real.detach().float(), d.out_fake.detach().float(), out.detach().float()
    if cfg.is_bce:
        # D's probabilities: what the balance rules (orchestrator/stopping.py) read.
        metrics["d_x"] = torch.sigmoid(out_real).mean().item()
        metrics["d_g_z"] = torch.sigmoid(out_fake).mean().item()
        if cfg.loss == "minimax":
            # The rules also read -mean log D(G(z)) (the non-saturating loss); minimax's own
            # loss_g is log(1 - D(G(z))) <= 0, so they get this one under its own name.
            metrics["loss_g_nonsat"] = F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).item()
    else:
        # A critic's output is a score, not a probability: reported raw, under other names, so
        # no rule mistakes it for D(x) / D(G(z)).
        metrics["critic_real"] = out_real.mean().item()
        metrics["critic_fake"] = out_fake.mean().item()
    metrics.update({k: v.detach().item() for k, v in d.extra.items()})
    metrics.update(grads)
    return metrics
