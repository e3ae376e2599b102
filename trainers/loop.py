"""The Ray Train per-worker loop: the one module that reports to Ray and reads its checkpoints.

Two entry points run the same loop: `train_per_worker` in each Ray Train worker (reports with
`ray.train.report`), and `train_in_trial` in the Tune trial's own process for a one-worker CPU
trial with `resources.in_process` (reports with `ray.tune.report`; orchestrator/trial.py). Only
`_Session` tells them apart.

Every worker runs the pure `train_step` on the device Ray gives it (`ray.train.torch.get_device()`:
its GPU, or the CPU); gradients are averaged across workers before each optimizer step, and
every collective uses tensors on that device, so it runs under NCCL and gloo alike. Rank 0
logs the step's losses every `log_every` steps to the trial's MLflow run (opened by the trial
driver; trainers/trial_log.py), and every `eval_every` steps evaluates, logs the eval and
writes the checkpoint it reports to Ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infra.aws.spot import watcher_for_this_node
from trainers import device as placement
from trainers.best_eval import GENERATOR_FILE, BestEval
from trainers.checkpoint import adopt, load_state, restore, save_generator, save_state
from trainers.config import MUTABLE_IN_FLIGHT, TrainerConfig
from trainers.cost import trial_rate
from trainers.data import make_data
from trainers.evaluate import Evaluator
from trainers.models import build_models, gan_for, sample_latent
from trainers.models.conditional import GRID_ROWS, NUM_CLASSES
from trainers.plugin import GanPlugin
from trainers.precision import build_precision
from trainers.step import (
    DivergenceError,
    build_ema,
    build_optimizers,
    build_schedulers,
    set_hyperparams,
    train_step,
)
from trainers.trial_log import LossLog, MlflowSink

log = logging.getLogger(__name__)
_MlflowSink = MlflowSink  # the name tests/unit/test_mlflow_sink.py imports

CHECKPOINT_FILE = "state.pt"
FIXED_NOISE_SEED = 20240229  # sweep-wide: every trial's grid is drawn from the same z
FIXED_NOISE_N = 64


# The trial's timers (cumulative seconds, and the unix time its worker started), reported with each eval.
TIMINGS = ("setup_seconds", "evaluator_seconds", "checkpoint_seconds", "mlflow_seconds", "worker_entered_at")


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


class _Orders:
    """The sweep's orders for this trial (orchestrator/board.py): "stop", or a PBT exploit.

    Rank 0 polls the board (a named Ray actor) every `every` steps and broadcasts what it got,
    so all workers act at the same step (a worker left behind would wait in the next
    all-reduce forever)."""

    def __init__(self, board_name: str | None, trial_id: str | None, rank: int, device: torch.device, every: int = 20):
        # `active` is the same on every rank (it comes from the config), so all ranks take part
        # in the same broadcasts; only rank 0 talks to the board.
        self.active = bool(board_name and trial_id)
        self.board: Any = None  # the board's actor handle (rank 0)
        self.trial_id, self.rank, self.every, self.device = trial_id, rank, every, device
        if board_name and trial_id and rank == 0:  # self.active, spelled out so the names are known to be set
            import ray

            try:
                self.board = ray.get_actor(board_name)
            except ValueError:
                log.warning("trial board %s not found; this trial will only stop at its end", board_name)

    def poll(self, step: int) -> str | dict[str, Any] | None:
        if not self.active or step % self.every:
            return None
        import ray

        order: list[str | dict[str, Any] | None] = [
            ray.get(self.board.poll.remote(self.trial_id)) if self.board is not None else None
        ]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(order, src=0, device=self.device)
        return order[0]


def _exploit(
    order: dict[str, Any], cfg: TrainerConfig, G, D, opt_g, opt_d, scheds=(), ema=None
) -> TrainerConfig | None:
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
        # torch's stubs omit Module.to's memory_format keyword, which it takes (nn.Module.to's docstring)
        G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


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


def _stored_checkpoints() -> list:
    """This Tune trial's checkpoints on its storage (local or remote), newest first."""
    import pyarrow.fs
    from ray import tune
    from ray.train._internal.session import get_session

    session = get_session()
    storage = getattr(session, "storage", None)  # Ray's private StorageContext; a Ray without it: none found
    if storage is None or storage.storage_filesystem is None:
        return []
    fs, trial = storage.storage_filesystem, storage.trial_fs_path
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial, allow_not_found=True))
    except OSError as e:
        log.warning("could not list %s for checkpoints (%s); resuming from Tune's", trial, e)
        return []
    dirs = sorted(
        (i.path for i in infos if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_")),
        reverse=True,
    )
    return [tune.Checkpoint(d, filesystem=fs) for d in dirs]


class _Session:
    """Where the loop reports and finds its checkpoint: Ray Train's worker session, or (in_trial)
    the Tune trial's own session, for a trial that trains in its driver's process: one rank, on
    the CPU, its checkpoints persisted by Tune. Keeps the last report (the trial's result)."""

    def __init__(self, in_trial: bool) -> None:
        self.in_trial = in_trial
        self.last: dict[str, Any] = {}

    def rank_world(self) -> tuple[int, int]:
        if self.in_trial:
            return 0, 1
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()

    def device(self) -> torch.device:
        if self.in_trial:
            return torch.device("cpu")
        import ray.train.torch

        return ray.train.torch.get_device()  # this worker's GPU (a share of one, with fractional GPUs), or the CPU

    def checkpoints(self) -> list:
        """The checkpoints to resume from, newest first (empty: start afresh).

        Ray Train's worker gets its run's newest. A trial training in its own process takes the
        newest one on its storage, not only the one Tune's saved state names: a sweep stopped (or
        killed) between a checkpoint's upload and Tune's next state save would otherwise replay
        every step since that save. Older ones follow, in case the newest upload was cut short."""
        if not self.in_trial:
            import ray.train

            ckpt = ray.train.get_checkpoint()
            return [ckpt] if ckpt is not None else []
        from ray import tune

        known = tune.get_checkpoint()
        found = _stored_checkpoints()
        return found or ([known] if known is not None else [])

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        """Report `metrics` (and the checkpoint in `checkpoint_dir`, persisted to the run's storage)."""
        self.last = dict(metrics)
        if self.in_trial:
            from ray import tune

            ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            tune.report(metrics, checkpoint=ckpt)
            return
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


@dataclass
class _Worker:
    """One worker's part of a trial: what `_setup` builds once and every step reads."""

    cfg: TrainerConfig
    gan: GanPlugin  # gan_for(cfg), built once per config (a plugin validates its Params on construction)
    run: dict[str, Any]
    rank: int
    world: int
    device: torch.device
    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scheds: list
    ema: Any
    precision: Any
    gen: torch.Generator
    data: Any
    step: int = 0
    # spent before this process (restored from the checkpoint)
    spent: dict[str, float] = field(default_factory=lambda: {"cost_usd": 0.0, "spot_saved_usd": 0.0})
    # the workers hold their machines from here: the cost clock
    held_since: float = field(default_factory=time.monotonic)
    sync: Any = None
    rate: Any = None
    watcher: Any = None
    watching: bool = False
    spot_saved: bool = False
    evaluator: Evaluator | None = None
    sink: MlflowSink | None = None
    noise: torch.Tensor | None = None
    orders: _Orders | None = None
    exploits: int = 0
    placed: bool = False  # the placement report is written at the first eval, once optimizer state exists
    train_seconds: float = 0.0
    # Where the rest of a trial's time goes (cumulative, reported with every eval; bench/sweep_overhead.py
    # breaks a sweep's wall time down with them): this process' set-up,
    # the evaluator's, checkpoint writes and Ray's report of them, and MLflow writes (rank 0).
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    session: _Session = field(default_factory=lambda: _Session(in_trial=False))
    best: BestEval = field(default_factory=lambda: BestEval(None))  # by the sweep's metric (run["metric"])

    def switch(self, cfg: TrainerConfig) -> None:
        self.cfg, self.gan = cfg, gan_for(cfg)


def train_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. `loop_config` = {"trainer": TrainerConfig dump, "run": {...}}."""
    _train(loop_config, _Session(in_trial=False))


def train_in_trial(loop_config: dict[str, Any]) -> dict[str, Any]:
    """The same loop in the calling Tune trial's process (one rank, CPU), reporting to Tune.
    Returns the last report, as `TorchTrainer.fit()`'s result.metrics would."""
    session = _Session(in_trial=True)
    _train(loop_config, session)
    return session.last


def _train(loop_config: dict[str, Any], session: _Session) -> None:
    entered, t_setup = time.time(), time.perf_counter()
    w = _setup(loop_config, session)
    w.timings["setup_seconds"] = time.perf_counter() - t_setup
    w.timings["worker_entered_at"] = entered  # unix time: the trial's run start to here is TorchTrainer's start
    losses = LossLog(w.sink, w.cfg.log_every)
    window: dict[str, list[float]] = {}
    try:
        while w.step < w.cfg.steps:
            if _obey_orders(w):
                return
            t0 = time.perf_counter()
            w.G.train()
            w.D.train()
            try:
                m = train_step(
                    w.G,
                    w.D,
                    w.opt_g,
                    w.opt_d,
                    w.data,
                    w.cfg,
                    w.gen,
                    sync_grads=w.sync,
                    step=w.step + 1,
                    schedulers=w.scheds,
                    ema=w.ema,
                    precision=w.precision,
                    gan=w.gan,
                )
            except DivergenceError as e:
                _report_divergence(w, e)
                return
            w.train_seconds += time.perf_counter() - t0
            w.step += 1
            for k, v in m.items():
                window.setdefault(k, []).append(v)
            urgent = _spot_vote(w)
            due = urgent or w.step % w.cfg.eval_every == 0 or w.step == w.cfg.steps
            with _timed(w, "mlflow_seconds"):
                losses.add(w.step, m, due)
            if due:
                _eval_and_report(w, {k: float(np.mean(v)) for k, v in window.items()})
                window.clear()
    finally:
        if w.sink is not None:
            w.sink.close()


@contextlib.contextmanager
def _timed(w: _Worker, key: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        w.timings[key] += time.perf_counter() - t


def _setup(loop_config: dict[str, Any], session: _Session) -> _Worker:
    """Models, optimizers, data and RNG on this worker's device, restored from the trial's
    checkpoint if it has one; then the spot watcher, and on rank 0 the MLflow sink."""
    import ray

    cfg = TrainerConfig.model_validate(loop_config["trainer"])  # re-validate at the boundary
    run = loop_config.get("run", {})
    rank, world = session.rank_world()
    torch.set_num_threads(cfg.threads)
    device = session.device()
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
    data = make_data(cfg).to(
        device, torch.channels_last if cfg.channels_last and cfg.is_image else torch.preserve_format
    )
    w = _Worker(cfg, gan_for(cfg), run, rank, world, device, G, D, opt_g, opt_d, scheds, ema, precision, gen, data)
    w.session = session
    w.best = BestEval(run.get("metric"), run.get("mode") or "min")

    _restore(w, session.checkpoints())
    _broadcast_params(world, G, D)
    if w.cfg.compile:
        # In place (nn.Module.compile): state_dict keys stay G's own, so checkpoints load anywhere.
        G.compile()
        D.compile()
    w.sync = _grad_sync(world)
    w.rate = trial_rate(world, device)
    # Spot nodes: checkpoint as soon as EC2 announces the reclaim (infra/aws/spot.py). Every
    # rank takes part in the vote if any rank watches, so the collective calls line up.
    w.watcher = watcher_for_this_node(ray.get_runtime_context().get_node_labels() or {})
    w.watching = _any_rank(w.watcher is not None, world, device)

    # The Evaluator comes at the first eval: its feature networks and real features cost seconds before step 1.
    if rank == 0:
        w.sink = MlflowSink(run.get("tracking_uri"), run.get("run_id"), run.get("spool"))
    w.noise = fixed_noise(w.cfg).to(device)
    if w.sink is not None:
        _open_sink(w, w.sink, device_info)
    w.orders = _Orders(run.get("board"), run.get("trial_id"), rank, device)
    w.exploits = w.sink.count_tags("pbt.exploit.") if w.sink is not None else 0
    if w.sink is not None and run.get("pbt"):
        w.sink.log(w.step, _hparams(w.cfg, run["pbt"]), None, None)
    return w


def _restore(w: _Worker, checkpoints: list) -> None:
    """Pick up the trial where its newest readable checkpoint (`checkpoints`, newest first) left
    it: weights, optimizers, RNG, cost so far."""
    state, unreadable = None, None
    for ckpt in checkpoints:
        try:
            with ckpt.as_directory() as d:
                state = load_state(Path(d) / CHECKPOINT_FILE)
            break
        except Exception as e:  # cut short, or gone; the next older one may do
            log.warning("checkpoint %s unreadable (%s); trying an older one", ckpt.path, e)
            unreadable = e
    if state is None:
        if unreadable is not None:  # never start afresh silently over a trial's checkpoints
            raise unreadable
        return
    w.step = restore(state, w.G, w.D, w.opt_g, w.opt_d, w.gen, schedulers=w.scheds, ema=w.ema, precision=w.precision)
    w.spent.update({k: v for k, v in state.get("meta", {}).items() if k in w.spent})
    w.best.restore(state.get("meta", {}))  # a resumed trial remembers its best eval (and does not log a worse one)
    # Settings a PBT exploit changed in flight live in the checkpoint, not in loop_config.
    w.switch(
        TrainerConfig.model_validate(
            {**w.cfg.model_dump(), **{k: state["config"][k] for k in MUTABLE_IN_FLIGHT if k in state["config"]}}
        )
    )
    set_hyperparams(w.opt_g, w.opt_d, w.cfg, w.scheds)
    log.info("resumed from checkpoint at step %d", w.step)


def _open_sink(w: _Worker, sink: MlflowSink, device_info: str) -> None:
    """Rank 0's first words on the trial's run (`sink`): device, price, and where a restart resumed."""
    sink.tag("ganops.device", device_info)
    sink.tag(
        "ganops.cost",
        f"{w.rate.usd_per_hour:.4f} USD/h" if w.rate.priced else "$0: no node advertised a price (local machine)",
    )
    # A restart replays from its checkpoint, or from step 0 when none reached storage (e.g.
    # the store went away before the first upload): steps the run logged already stay as
    # they were, once each (same seed, same values on CPU).
    sink.resume_after(w.step)
    if w.step > 0:
        sink.tag("ganops.resumed_from_step", str(w.step))
    elif sink.logged_through > 0:
        sink.tag("ganops.restarted_from_scratch", str(sink.logged_through))


def _obey_orders(w: _Worker) -> bool:
    """The sweep's orders for this step: True to stop here; a PBT exploit switches the config."""
    assert w.orders is not None  # set by _setup
    order = w.orders.poll(w.step)
    if order == "stop":
        log.info("sweep stopped this trial at step %d", w.step)
        return True
    if (
        isinstance(order, dict)
        and (new_cfg := _exploit(order, w.cfg, w.G, w.D, w.opt_g, w.opt_d, w.scheds, w.ema)) is not None
    ):
        w.exploits += 1
        if w.sink is not None:
            settings = {k: [getattr(w.cfg, k), getattr(new_cfg, k)] for k in order["config"]}  # [before, after]
            w.sink.tag(
                f"pbt.exploit.{w.exploits}",
                json.dumps(
                    {
                        "step": w.step,
                        "donor": order["donor"],
                        "donor_step": order.get("donor_step"),
                        "settings": settings,
                    }
                ),
            )
            w.sink.tag("pbt.config", json.dumps({k: getattr(new_cfg, k) for k in order["config"]}))
            w.sink.log(w.step, {"pbt_exploits": w.exploits, **_hparams(new_cfg, order["config"])}, None, None)
        w.switch(new_cfg)
    return False


def _report_divergence(w: _Worker, e: DivergenceError) -> None:
    """Not a crash to retry from a checkpoint (it would diverge again): the trial ends here and
    reports why, so the stopper and the leaderboard can say so."""
    log.warning("trial diverged: %s", e)
    report = {"diverged": 1.0, "step": w.step + 1, "train_seconds": w.train_seconds}
    if w.sink is not None:
        w.sink.log(w.step + 1, report, None, None)
        w.sink.tag("divergence", str(e))
    w.session.report(report)


def _spot_vote(w: _Worker) -> bool:
    """True on every rank, once, when any rank's node got a spot reclaim notice: eval and checkpoint now."""
    if (
        not w.watching
        or w.spot_saved
        or not _any_rank(w.watcher is not None and w.watcher.noticed.is_set(), w.world, w.device)
    ):
        return False
    w.spot_saved = True
    if w.sink is not None:
        w.sink.tag(
            "ganops.spot_notice", json.dumps({"step": w.step, **((w.watcher.notice if w.watcher else None) or {})})
        )
    return True


def _eval_and_report(w: _Worker, metrics: dict[str, float]) -> None:
    """The eval: the window's step means (`metrics`) plus cost; rank 0 adds the evaluator's scores,
    logs to MLflow (the step means already went there through LossLog) and writes the
    checkpoint; every rank reports to Ray (the stopper and the scheduler read these)."""
    step_keys = set(metrics)
    metrics.update(step=w.step, train_seconds=w.train_seconds)
    hours = (time.monotonic() - w.held_since) / 3600
    metrics["cost_usd"] = w.spent["cost_usd"] + w.rate.usd_per_hour * hours
    metrics["spot_saved_usd"] = (
        w.spent["spot_saved_usd"] + (w.rate.on_demand_usd_per_hour - w.rate.usd_per_hour) * hours
    )
    with tempfile.TemporaryDirectory() as tmp:
        if w.rank == 0:
            _rank0_eval(w, metrics, step_keys, Path(tmp))
        with _timed(w, "checkpoint_seconds"):  # persists the checkpoint to the run's storage
            w.session.report(metrics, Path(tmp) if w.rank == 0 else None)


def _rank0_eval(w: _Worker, metrics: dict[str, float], step_keys: set[str], tmp: Path) -> None:
    """Rank 0's part of an eval: the evaluator's scores and the best eval so far into `metrics`,
    the checkpoint into `tmp`, and the eval (metrics, grid, generator; the generator also as the
    best one when this eval is the trial's best, trainers/best_eval.py) to MLflow."""
    assert w.sink is not None and w.noise is not None  # rank 0's, set by _setup
    if w.evaluator is None:
        # Built here, not in _setup, so the first losses reach MLflow before it has loaded
        # (~6 s for MNIST's classifier and real features, measured). Under fork_rng: building
        # a network draws from the global RNG, which training's dropout reads, so a trial
        # resumed from a checkpoint (global RNG restored) trains as the uninterrupted one did.
        features = Path(w.run["feature_cache"]) if w.run.get("feature_cache") else None
        with torch.random.fork_rng(devices=[]), _timed(w, "evaluator_seconds"):
            w.evaluator = Evaluator(w.cfg, features, w.run.get("features")).to(w.device)
    t1 = time.perf_counter()
    G_eval = w.ema.module if w.ema is not None else w.G  # cfg.ema: the averaged G is the product
    scores, image = w.evaluator.evaluate(G_eval, w.noise)
    metrics.update(scores)
    metrics["eval_seconds"] = time.perf_counter() - t1
    metrics.update(placement.telemetry(w.device))
    if not w.placed:
        w.placed = True
        report = _placement_report(w.device, w.G, w.D, w.opt_g, w.opt_d, w.ema, w.data, w.noise, w.evaluator)
        w.sink.tag("ganops.placement", placement.report_json(report))
        if report["off_device"]:
            log.warning("not on %s: %s", w.device, ", ".join(report["off_device"]))
    if w.scheds:
        metrics["lr_g_scheduled"], metrics["lr_d_scheduled"] = (s.get_last_lr()[0] for s in w.scheds)
    improved = w.best.update(w.step, metrics)
    metrics.update(w.best.report())
    t_ckpt = time.perf_counter()
    save_state(
        tmp / CHECKPOINT_FILE,
        w.G,
        w.D,
        w.opt_g,
        w.opt_d,
        w.step,
        w.cfg.model_dump(),
        w.gen,
        schedulers=w.scheds,
        ema=w.ema,
        meta={**{k: metrics[k] for k in w.spent}, **w.best.meta()},
        precision=w.precision,
    )
    gen_file = tmp / GENERATOR_FILE
    save_generator(gen_file, G_eval, w.cfg.model_dump())
    w.timings["checkpoint_seconds"] += time.perf_counter() - t_ckpt
    metrics.update(w.timings)  # all but this eval's own MLflow write and Ray report, counted at the next
    with _timed(w, "mlflow_seconds"):
        w.sink.log(w.step, {k: v for k, v in metrics.items() if k not in step_keys}, image, gen_file, best=improved)
