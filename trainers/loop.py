"""The Ray Train per-worker loop: the one module that calls `ray.train.report` / `get_checkpoint`.

Every worker runs the pure `train_step` on the device Ray gives it (`ray.train.torch.get_device()`:
its GPU, or the CPU); gradients are averaged across workers before each optimizer step, and
every collective uses tensors on that device, so it runs under NCCL and gloo alike. Rank 0
evaluates, logs to the trial's MLflow run (opened by the trial driver) and writes the
checkpoint it reports to Ray.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infra.aws.spot import watcher_for_this_node
from trainers.checkpoint import adopt, load_state, restore, save_generator, save_state
from trainers.config import MUTABLE_IN_FLIGHT, TrainerConfig
from trainers import device as placement
from trainers.cost import trial_rate
from trainers.data import make_data
from trainers.evaluate import Evaluator
from trainers.models import build_models, sample_latent
from trainers.models.conditional import GRID_ROWS, NUM_CLASSES
from trainers.precision import build_precision
from trainers.step import (
    DivergenceError,
    build_ema,
    build_optimizers,
    build_schedulers,
    set_hyperparams,
    train_step,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
FIXED_NOISE_SEED = 20240229  # sweep-wide: every trial's grid is drawn from the same z
FIXED_NOISE_N = 64


def fixed_noise(cfg: TrainerConfig) -> torch.Tensor:
    """The sweep-wide fixed noise batch: same seed and size for every trial, so grids compare.
    A conditional model's: GRID_ROWS latents, each repeated once per class (the evaluator
    labels them 0-9 in turn), so every grid row is one z drawn as each digit."""
    gen = torch.Generator().manual_seed(FIXED_NOISE_SEED)
    if cfg.is_conditional:
        return sample_latent(GRID_ROWS, cfg, gen).repeat_interleave(NUM_CLASSES, dim=0)  # (80, latent_dim)
    return sample_latent(FIXED_NOISE_N, cfg, gen)


def _grad_sync(world_size: int):
    """All-reduce-average gradients of one network (plain DDP semantics, without DDP's wrapper,
    which trips over a GAN's two interleaved forward passes)."""
    if world_size <= 1:
        return None
    import torch.distributed as dist

    def sync(module: torch.nn.Module) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    return sync


def _any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any (an all-reduce when world > 1, on the
    worker's device: NCCL reduces CUDA tensors only)."""
    if world_size <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _broadcast_params(world_size: int, *modules: torch.nn.Module) -> None:
    if world_size <= 1:
        return
    import torch.distributed as dist

    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


class _MlflowSink:
    """Rank 0's writes to the trial's MLflow run, batched: one call per eval for all metrics."""

    def __init__(self, tracking_uri: str | None, run_id: str | None):
        self.run_id = run_id
        self.client = None
        self.logged_through = -1  # steps up to here are in the run already (a resumed trial)
        if tracking_uri and run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def resume_after(self, step: int) -> None:
        """A trial resumed from its checkpoint at `step` replays the steps after it; those it had
        logged before it was interrupted stay as they were (one value per step, and on CPU the
        replay computes the same values)."""
        if self.client is not None:
            history = self.client.get_metric_history(self.run_id, "step")
            self.logged_through = max([int(m.step) for m in history] + [step if step > 0 else -1])

    def count_tags(self, prefix: str) -> int:
        """Tags already on the run under `prefix` (a resumed trial numbers its PBT exploits on)."""
        if self.client is None:
            return 0
        return sum(k.startswith(prefix) for k in self.client.get_run(self.run_id).data.tags)

    def tag(self, key: str, value: str) -> None:
        if self.client is not None:
            self.client.set_tag(self.run_id, key, value[:5000])

    def log(self, step: int, metrics: dict[str, float], image: np.ndarray | None, generator_file: Path | None) -> None:
        if self.client is None or step <= self.logged_through:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=batch)
        if image is not None:
            self.client.log_image(self.run_id, image, key="samples", step=step)
        if generator_file is not None:
            self.client.log_artifact(self.run_id, str(generator_file), artifact_path="generator")


class _Orders:
    """The sweep's orders for this trial (orchestrator/board.py): "stop", or a PBT exploit.

    Rank 0 polls the board (a named Ray actor) every `every` steps and broadcasts what it got,
    so all workers act at the same step (a worker left behind would wait in the next
    all-reduce forever)."""

    def __init__(self, board_name: str | None, trial_id: str | None, rank: int, device: torch.device, every: int = 20):
        # `active` is the same on every rank (it comes from the config), so all ranks take part
        # in the same broadcasts; only rank 0 talks to the board.
        self.active = bool(board_name and trial_id)
        self.board, self.trial_id, self.rank, self.every, self.device = None, trial_id, rank, every, device
        if self.active and rank == 0:
            import ray

            try:
                self.board = ray.get_actor(board_name)
            except ValueError:
                log.warning("trial board %s not found; this trial will only stop at its end", board_name)

    def poll(self, step: int) -> str | dict[str, Any] | None:
        if not self.active or step % self.every:
            return None
        import ray

        order = [ray.get(self.board.poll.remote(self.trial_id)) if self.board is not None else None]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(order, src=0, device=self.device)
        return order[0]


def _exploit(order: dict[str, Any], cfg: TrainerConfig, G, D, opt_g, opt_d, scheds=(), ema=None) -> TrainerConfig | None:
    """Load the donor's networks and optimizer states and switch to the explored settings
    (PBT, orchestrator/pbt.py). Returns the new config, or None if the donor's checkpoint is
    gone (it was rotated out): then the trial goes on as it was."""
    import ray.train

    try:
        with ray.train.Checkpoint(order["checkpoint"]).as_directory() as d:
            state = load_state(Path(d) / CHECKPOINT_FILE)
    except (FileNotFoundError, OSError) as e:
        log.warning("pbt: donor checkpoint %s unreadable (%s); keeping this trial's weights", order["checkpoint"], e)
        return None
    adopt(state, G, D, opt_g, opt_d, schedulers=scheds, ema=ema)
    new = TrainerConfig.model_validate({**cfg.model_dump(), **order["config"]})
    set_hyperparams(opt_g, opt_d, new, scheds)
    return new


def _hparams(cfg: TrainerConfig, keys) -> dict[str, float]:
    """The PBT-mutated settings as metrics (`hp_lr_d`, ...): MLflow params cannot change, a
    metric's history shows the schedule a trial actually trained with. D:G as n_d / n_g."""
    out = {}
    for k in keys:
        out[f"hp_{k}"] = cfg.d_steps / cfg.g_steps if k == "dg_ratio" else float(getattr(cfg, k))
    return out


def _place(cfg: TrainerConfig, device: torch.device, G: torch.nn.Module, D: torch.nn.Module) -> None:
    """Models onto the worker's device (and channels-last for image models when asked)."""
    G.to(device)
    D.to(device)
    if cfg.channels_last and cfg.is_image:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)


def _placement_report(device, G, D, opt_g, opt_d, ema, data, noise, evaluator) -> dict:
    """Where every part of the trial lives, and which parts are not on `device`."""
    groups = {
        "parameters": placement.module_tensors(G, D),
        "optimizer_state": placement.optimizer_tensors(opt_g) + placement.optimizer_tensors(opt_d),
        "batches": [torch.empty(0, device=data.device)],
        "fixed_noise": [noise],
    }
    if ema is not None:
        groups["ema"] = placement.module_tensors(ema.module)
    if evaluator is not None and evaluator.devices():
        groups["eval_features"] = evaluator.devices()
    return placement.placement(device, **groups)


def train_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. `loop_config` = {"trainer": TrainerConfig dump, "run": {...}}."""
    import ray.train
    import ray.train.torch

    cfg = TrainerConfig.model_validate(loop_config["trainer"])  # re-validate at the boundary
    run = loop_config.get("run", {})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads)
    device = ray.train.torch.get_device()  # this worker's GPU (a share of one, with fractional GPUs), or the CPU
    device_info = placement.prepare(device, cfg.tf32)

    torch.manual_seed(cfg.seed)  # same init on every rank; broadcast makes sure of it
    G, D = build_models(cfg)  # initialised on the CPU (the same weights whatever the device), then moved
    _place(cfg, device, G, D)
    opt_g, opt_d = build_optimizers(G, D, cfg)
    scheds = build_schedulers(opt_g, opt_d, cfg)
    ema = build_ema(G, cfg)  # every rank keeps one (same G, same updates); rank 0 evaluates it
    precision = build_precision(cfg.precision, device)
    # Each rank draws its own batches, on its device (data and latents never cross the bus).
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    data = make_data(cfg).to(device, torch.channels_last if cfg.channels_last and cfg.is_image else torch.preserve_format)
    step = 0
    held_since = time.monotonic()  # the workers hold their machines from here: the cost clock
    spent = {"cost_usd": 0.0, "spot_saved_usd": 0.0}  # before this process (from the checkpoint)

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_state(Path(d) / CHECKPOINT_FILE)
        step = restore(state, G, D, opt_g, opt_d, gen, schedulers=scheds, ema=ema, precision=precision)
        spent.update({k: v for k, v in state.get("meta", {}).items() if k in spent})
        # Settings a PBT exploit changed in flight live in the checkpoint, not in loop_config.
        cfg = TrainerConfig.model_validate({**cfg.model_dump(), **{k: state["config"][k] for k in MUTABLE_IN_FLIGHT if k in state["config"]}})
        set_hyperparams(opt_g, opt_d, cfg, scheds)
        log.info("resumed from checkpoint at step %d", step)
    _broadcast_params(world, G, D)
    if cfg.compile:
        # In place (nn.Module.compile): state_dict keys stay G's own, so checkpoints load anywhere.
        G.compile()
        D.compile()
    sync = _grad_sync(world)
    rate = trial_rate(world, device)
    # Spot nodes: checkpoint as soon as EC2 announces the reclaim (infra/aws/spot.py). Every
    # rank takes part in the vote if any rank watches, so the collective calls line up.
    watcher = watcher_for_this_node(ray.get_runtime_context().get_node_labels() or {})
    watching = _any_rank(watcher is not None, world, device)
    spot_saved = False

    evaluator = Evaluator(cfg, Path(run["feature_cache"]) if run.get("feature_cache") else None, run.get("features")).to(device) if rank == 0 else None
    sink = _MlflowSink(run.get("tracking_uri"), run.get("run_id")) if rank == 0 else None
    noise = fixed_noise(cfg).to(device)
    window: dict[str, list[float]] = {}
    train_seconds = 0.0
    placed = False  # the placement report is written at the first eval, once optimizer state exists

    if sink is not None:
        sink.tag("ganops.device", device_info)
        sink.tag("ganops.cost", f"{rate.usd_per_hour:.4f} USD/h" if rate.priced else "$0: no node advertised a price (local machine)")
        # A restart replays from its checkpoint, or from step 0 when none reached storage (e.g.
        # the store went away before the first upload): steps the run logged already stay as
        # they were, once each (same seed, same values on CPU).
        sink.resume_after(step)
        if step > 0:
            sink.tag("ganops.resumed_from_step", str(step))
        elif sink.logged_through > 0:
            sink.tag("ganops.restarted_from_scratch", str(sink.logged_through))
    orders = _Orders(run.get("board"), run.get("trial_id"), rank, device)
    exploits = sink.count_tags("pbt.exploit.") if sink is not None else 0
    if sink is not None and run.get("pbt"):
        sink.log(step, _hparams(cfg, run["pbt"]), None, None)
    while step < cfg.steps:
        order = orders.poll(step)
        if order == "stop":
            log.info("sweep stopped this trial at step %d", step)
            return
        if isinstance(order, dict) and (new_cfg := _exploit(order, cfg, G, D, opt_g, opt_d, scheds, ema)) is not None:
            exploits += 1
            if sink is not None:
                settings = {k: [getattr(cfg, k), getattr(new_cfg, k)] for k in order["config"]}  # [before, after]
                sink.tag(f"pbt.exploit.{exploits}", json.dumps({"step": step, "donor": order["donor"], "donor_step": order.get("donor_step"), "settings": settings}))
                sink.tag("pbt.config", json.dumps({k: getattr(new_cfg, k) for k in order["config"]}))
                sink.log(step, {"pbt_exploits": exploits, **_hparams(new_cfg, order["config"])}, None, None)
            cfg = new_cfg
        t0 = time.perf_counter()
        G.train()
        D.train()
        try:
            m = train_step(G, D, opt_g, opt_d, data, cfg, gen, sync_grads=sync, step=step + 1, schedulers=scheds, ema=ema, precision=precision)
        except DivergenceError as e:
            # Not a crash to retry from a checkpoint (it would diverge again): the trial ends
            # here and reports why, so the stopper and the leaderboard can say so.
            log.warning("trial diverged: %s", e)
            report = {"diverged": 1.0, "step": step + 1, "train_seconds": train_seconds}
            if sink is not None:
                sink.log(step + 1, report, None, None)
                sink.tag("divergence", str(e))
            ray.train.report(report)
            return
        train_seconds += time.perf_counter() - t0
        step += 1
        for k, v in m.items():
            window.setdefault(k, []).append(v)
        urgent = watching and not spot_saved and _any_rank(watcher is not None and watcher.noticed.is_set(), world, device)
        if step % cfg.eval_every and step != cfg.steps and not urgent:
            continue
        if urgent:
            spot_saved = True
            if sink is not None:
                sink.tag("ganops.spot_notice", json.dumps({"step": step, **((watcher.notice if watcher else None) or {})}))

        metrics = {k: float(np.mean(v)) for k, v in window.items()}
        window.clear()
        metrics.update(step=step, train_seconds=train_seconds)
        hours = (time.monotonic() - held_since) / 3600
        metrics["cost_usd"] = spent["cost_usd"] + rate.usd_per_hour * hours
        metrics["spot_saved_usd"] = spent["spot_saved_usd"] + (rate.on_demand_usd_per_hour - rate.usd_per_hour) * hours
        checkpoint = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                t1 = time.perf_counter()
                G_eval = ema.module if ema is not None else G  # cfg.ema: the averaged G is the product
                scores, image = evaluator.evaluate(G_eval, noise)
                metrics.update(scores)
                metrics["eval_seconds"] = time.perf_counter() - t1
                metrics.update(placement.telemetry(device))
                if not placed:
                    placed = True
                    report = _placement_report(device, G, D, opt_g, opt_d, ema, data, noise, evaluator)
                    sink.tag("ganops.placement", placement.report_json(report))
                    if report["off_device"]:
                        log.warning("not on %s: %s", device, ", ".join(report["off_device"]))
                if scheds:
                    metrics["lr_g_scheduled"], metrics["lr_d_scheduled"] = (s.get_last_lr()[0] for s in scheds)
                save_state(Path(tmp) / CHECKPOINT_FILE, G, D, opt_g, opt_d, step, cfg.model_dump(), gen, schedulers=scheds, ema=ema,
                           meta={k: metrics[k] for k in spent}, precision=precision)
                gen_file = Path(tmp) / "generator.pt"
                save_generator(gen_file, G_eval, cfg.model_dump())
                sink.log(step, metrics, image, gen_file)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
