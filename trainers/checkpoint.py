"""Checkpoints: everything needed to resume bit-for-bit, and a generator-only file for sampling.

Files are written atomically (temporary file + os.replace) so a preempted worker never
leaves a half-written checkpoint, and read with weights_only=True so loading one cannot
execute code.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from trainers.config import TrainerConfig
from trainers.models import build_models

log = logging.getLogger(__name__)


def _unwrap(module: nn.Module) -> nn.Module:
    # DistributedDataParallel prefixes keys with "module."; store the bare model so a
    # checkpoint loads the same with or without Ray Train.
    return getattr(module, "module", module)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` through a temporary file in its folder and os.replace: a reader beside
    the writer sees a whole file or none, and a failed write leaves no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)  # atomic on POSIX within one filesystem
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(
    path: str | os.PathLike,
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    step: int,
    cfg_dict: dict[str, Any],
    generator: torch.Generator,
    *,
    schedulers: Sequence[LRScheduler] = (),
    ema: AveragedModel | None = None,
    meta: dict[str, float] | None = None,
    precision: Any = None,
) -> None:
    """Write models, optimizers, step, the RNG states and the config (plain values) to one
    file, with the lr schedulers' and G's moving average's states when the config has them;
    `meta`: plain numbers the run carries across a restore (e.g. what it has cost so far);
    `precision`: fp16's loss scalers (trainers/precision.Precision). On a GPU, the generator's
    state is its CUDA one (16 bytes), and the device's global RNG (dropout) is kept beside it."""
    extras: dict[str, Any] = {}
    if precision is not None and (scalers := precision.state_dict()):
        extras["precision"] = scalers
    if generator.device.type == "cuda":
        extras["cuda_rng"] = torch.cuda.get_rng_state(generator.device)
    if meta:
        extras["meta"] = {k: float(v) for k, v in meta.items()}
    if schedulers:
        extras["schedulers"] = [s.state_dict() for s in schedulers]
    if ema is not None:
        extras["ema"] = ema.state_dict()
    atomic_save(
        {
            "G": _unwrap(G).state_dict(),
            "D": _unwrap(D).state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "step": int(step),
            "torch_rng": torch.get_rng_state(),
            "generator": generator.get_state(),
            "generator_device": generator.device.type,
            "config": dict(cfg_dict),
            **extras,
        },
        path,
    )


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a save_state file onto the CPU."""
    return torch.load(path, weights_only=True, map_location="cpu")


def restore(
    state: dict[str, Any],
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    generator: torch.Generator,
    *,
    schedulers: Sequence[LRScheduler] = (),
    ema: AveragedModel | None = None,
    precision: Any = None,
) -> int:
    """Load `state` into the given objects (in place); returns the step it was saved at.
    Tensors go to the models' devices. A state saved on another kind of device (a GPU trial
    resumed on a CPU) keeps everything but the random stream, which goes on from `generator`'s seed."""
    _load_training(state, G, D, opt_g, opt_d, schedulers, ema)
    if precision is not None and "precision" in state:
        precision.load_state_dict(state["precision"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("generator_device", "cpu") == generator.device.type:
        generator.set_state(state["generator"])
        if "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], generator.device)
    else:
        log.warning(
            "checkpoint's random stream is from a %s generator, this worker's is %s: the stream restarts from the seed",
            state.get("generator_device"),
            generator.device.type,
        )
    return int(state["step"])


def _load_training(
    state: dict[str, Any],
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    schedulers: Sequence[LRScheduler],
    ema: AveragedModel | None,
) -> None:
    _unwrap(G).load_state_dict(state["G"])
    _unwrap(D).load_state_dict(state["D"])
    # Optimizer.load_state_dict moves its state to each parameter's device.
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    if schedulers and "schedulers" in state:
        for sched, sd in zip(schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(sd)
    if ema is not None:
        if "ema" in state:
            ema.load_state_dict(state["ema"])
        else:  # a state without an average (a donor trained without one): start it from G
            ema.n_averaged.zero_()
            ema.update_parameters(_unwrap(G))


def adopt(
    state: dict[str, Any],
    G: nn.Module,
    D: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    *,
    schedulers: Sequence[LRScheduler] = (),
    ema: AveragedModel | None = None,
) -> int:
    """Take another trial's networks, optimizer, lr-schedule and G-average states (a PBT
    exploit), keeping this trial's own step and RNG streams; returns the step the donor's
    state was saved at. The schedule goes on from the donor's progress, as its optimizer's lr does."""
    _load_training(state, G, D, opt_g, opt_d, schedulers, ema)
    return int(state["step"])


def save_generator(path: str | os.PathLike, G: nn.Module, cfg_dict: dict[str, Any]) -> None:
    """Write G's weights with the config that rebuilds it (for `ganops sample`). With cfg.ema
    the loop passes the averaged G (`ema.module`), whose keys are G's own."""
    atomic_save({"G": _unwrap(G).state_dict(), "config": dict(cfg_dict)}, path)


def load_generator(path: str | os.PathLike) -> tuple[nn.Module, TrainerConfig]:
    """Rebuild G from a save_generator (or save_state) file; returned in eval mode on the CPU.
    A save_state file with G's moving average yields the averaged G, as evaluation uses."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    cfg = TrainerConfig.model_validate(state["config"])
    G, _ = build_models(cfg)
    if "ema" in state:  # AveragedModel's keys: n_averaged and module.<G's keys>
        G.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")})
    else:
        G.load_state_dict(state["G"])
    return G.eval(), cfg
