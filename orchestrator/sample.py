"""Draw samples from a trial's generator (by run or trial id) or a registered one (models:/...): load it,
write a file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient

from orchestrator import registry, tracking


class SampleError(Exception):
    """A run or output that `ganops sample` cannot use; the message says what to do."""


def resolve_run(client: MlflowClient, run: str) -> str:
    """An MLflow run id, or a Ray trial id (as the leaderboard shows it), to a run id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run).info.run_id
    except MlflowException:
        pass
    rid = tracking.find_trial_run(client, run)
    if rid is None:
        raise SampleError(
            f"no MLflow run or Ray trial {run!r} in {client.tracking_uri}; "
            "take the id from the sweep's leaderboard or `ganops ui`"
        )
    return rid


def load_generator(client: MlflowClient, run: str, latest: bool = False):
    """The generator of a run / trial id, or of a registered model version (`models:/NAME/VERSION`,
    `models:/NAME@ALIAS`); returns (G, config, run id). Only ever a state dict read with
    weights_only=True: never an unpickled model (see orchestrator/registry.py). A run's is its
    best eval's generator unless `latest` (fetch_generator)."""
    G, cfg, run_id, _ = fetch_generator(client, run, latest)
    return G, cfg, run_id


def check_latest(run: str, latest: bool) -> None:
    """A registered version is one generator: `--latest` has nothing to choose there."""
    if latest and run.startswith("models:/"):
        raise SampleError(
            f"--latest: {run} is one registered generator (its sweep's best); "
            "pass the trial's run or trial id to draw from its latest eval"
        )


def fetch_generator(client: MlflowClient, run: str, latest: bool = False):
    """load_generator, and where the generator came from: (G, config, run id, {"generator": "best",
    "latest" or "registered", "step": the eval it was saved at, or None where unknown}). A trial's
    run gives its best eval's generator (trainers/best_eval.py), or with `latest` (and for runs
    from before ganops kept the best) its latest eval's."""
    from trainers.checkpoint import load_generator as _load

    with tempfile.TemporaryDirectory() as tmp:
        check_latest(run, latest)
        if run.startswith("models:/"):
            try:
                local, run_id = registry.download_weights(client, run, Path(tmp))
            except LookupError as e:
                raise SampleError(str(e)) from None
            source = {"generator": "registered", "step": registry.version_step(client, run)}
        else:
            run_id = resolve_run(client, run)
            try:
                local, which, step = registry.download_trial_generator(client, run_id, Path(tmp), latest)
            except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                raise SampleError(
                    f"run {run_id} has no generator checkpoint yet (it is logged at the trial's first eval): {e}"
                ) from None
            source = {"generator": which, "step": step}
        try:
            G, cfg = _load(Path(local))
        except Exception as e:  # noqa: BLE001 - weights_only refusals, missing keys, a config that no longer validates
            raise SampleError(
                f"{run}: its generator.pt is not a ganops generator file that loads safely (weights only): {e}"
            ) from None
    return G, cfg, run_id, source


def _check_class(cls: int | None, cfg, source: str) -> None:
    from trainers.models.conditional import NUM_CLASSES

    if cls is None:
        return
    if not cfg.is_conditional:
        raise SampleError(
            f"--class {cls}: {source} is an unconditional generator (model "
            f"{cfg.model}); --class needs a conditional one (model: cdcgan28)"
        )
    if not 0 <= cls < NUM_CLASSES:
        raise SampleError(
            f"--class {cls}: the classes of a {cfg.model} generator are 0-{NUM_CLASSES - 1} (the MNIST digits)"
        )


def _draw(G, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return G(z, labels) if labels is not None else G(z)


def _write(out: Path, x: torch.Tensor, cfg, nrow: int) -> None:
    from trainers.metrics import image_grid, scatter_png

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, x.numpy().astype(np.float32))
    else:
        from PIL import Image

        from trainers.data import to_tanh_range

        # image_grid reads [-1, 1]; a sigmoid G (output: sigmoid) makes [0, 1]
        Image.fromarray(
            image_grid(to_tanh_range(x, cfg), nrow=nrow) if cfg.is_image else scatter_png(x, cfg.data)
        ).save(out)


def interpolation_latents(cfg, seeds: tuple[int, int], steps: int) -> torch.Tensor:
    """(steps, latent_dim): slerp from the latent `ganops sample --seed A` draws first to seed B's.
    Uniform latents are clipped back into G's training range [-1, 1] (the arc bulges past it)."""
    from trainers.latent import slerp
    from trainers.models import sample_latent

    za, zb = (sample_latent(1, cfg, torch.Generator().manual_seed(s))[0] for s in seeds)
    z = slerp(za, zb, torch.linspace(0, 1, steps))
    return z.clamp(-1, 1) if cfg.latent_dist == "uniform" else z


def _device(name: str) -> torch.device:
    """The torch device `--device` names, refused with the reason when this machine lacks it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SampleError(f"--device {name}: not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SampleError(
                f"--device {name}: this Python sees no CUDA GPU (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SampleError(
                f"--device {name}: there are {torch.cuda.device_count()} CUDA devices "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type != "cpu":
        raise SampleError(f"--device {name}: ganops samples on cpu or cuda")
    return device


def sample(
    tracking_uri: str,
    run: str,
    n: int,
    out: Path,
    seed: int = 0,
    cls: int | None = None,
    interpolate: tuple[int, int] | None = None,
    steps: int = 10,
    device: str = "cpu",
    latest: bool = False,
) -> dict:
    """Write samples of the run's generator to `out` (.npy or .png); return what was written.

    - default: `n` samples from latents drawn with `seed`; a conditional generator draws class
      `cls`, or without it the classes 0-9 in turn (a picture's columns are the classes).
    - interpolate=(A, B): `steps` samples along the slerp from seed A's latent to seed B's (one
      row); a conditional generator draws the walk as class `cls`, or once per class (10 rows).
    - device: where G runs (cpu, cuda, cuda:N). Generators load onto the CPU first, whatever
      device they trained on, and latents are drawn on the CPU: the same seed, the same z anywhere.
    - latest: a trial's latest eval's generator instead of its best eval's (fetch_generator).
    """
    from trainers.models import sample_latent
    from trainers.models.conditional import NUM_CLASSES, grid_labels

    if out.suffix not in (".npy", ".png"):
        raise SampleError(f"--out {out}: use a .npy (raw samples) or .png (a picture) file name")
    if interpolate is not None and steps < 2:
        raise SampleError(f"--steps {steps}: an interpolation needs at least 2 steps (its two ends)")
    dev = _device(device)
    client = MlflowClient(tracking_uri)
    G, cfg, run_id, source = fetch_generator(client, run, latest)
    _check_class(cls, cfg, run)
    G.eval()
    classes = [cls] if cls is not None else list(range(NUM_CLASSES))
    if interpolate is not None:
        z = interpolation_latents(cfg, interpolate, steps)  # (steps, latent_dim)
        rows = len(classes) if cfg.is_conditional else 1
        z = z.repeat(rows, 1)  # row r = the walk, drawn as classes[r]
        labels = torch.tensor(classes).repeat_interleave(steps) if cfg.is_conditional else None
        nrow = steps
    else:
        z = sample_latent(n, cfg, torch.Generator().manual_seed(seed))
        if not cfg.is_conditional:
            labels = None
            nrow = max(1, int(np.ceil(np.sqrt(n))))
        elif cls is not None:
            labels, nrow = torch.full((n,), cls), max(1, int(np.ceil(np.sqrt(n))))
        else:
            labels, nrow = grid_labels(n), NUM_CLASSES
    G.to(dev)
    x = _draw(G, z.to(dev), None if labels is None else labels.to(dev)).cpu()
    _write(out, x, cfg, nrow)
    info = {
        "run_id": run_id,
        "source": run,
        "out": str(out),
        "n": int(x.shape[0]),
        "shape": list(x.shape),
        "data": cfg.data,
        "model": cfg.model,
        "seed": seed,
        "conditional": cfg.is_conditional,
        "device": str(dev),
        **source,
    }
    if labels is not None:
        info["classes"] = sorted(set(labels.tolist()))
    if interpolate is not None:
        info.update(interpolate=list(interpolate), steps=steps)
        info.pop("seed")
    return info
