"""From an image back to z for a trial: `ganops encode` (train E, log it to the trial's run), style
transfer (`ganops sample --like`), attribute vectors (`ganops latent vector`, `ganops sample --add`).

The training itself is trainers/encoder.py; this module finds the trial's G and D, reads the
user's images, and writes to MLflow. Every file is read with torch weights_only=True.

Where D comes from: G is on the trial's run (generator/generator.pt) but D only lives in the
trial's Ray checkpoint (state.pt). ganops finds it under the sweep's storage (the sweep run's
`ganops.storage` tag): <storage>/<sweep id>/train/<trial id>/checkpoint_*/state.pt, the newest;
`--checkpoint PATH` names one directly (a checkpoint on S3: download it first).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient

from orchestrator import tracking
from orchestrator.sample import SampleError, _check_class, _write, load_generator

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder/encoder.pt"  # on the trial's run: E's state dict + the trainer config
PAIRS_FILE = "encoder/pairs.png"  # (input, reconstruction) pairs side by side
CURVE_METRIC = "encoder_recon_error"


class LatentError(SampleError):
    """An input the latent tools cannot use (image, folder, run without D or E); says what to do."""


# ---- D and E of a trial -----------------------------------------------------------------------


def _ray_checkpoint(client: MlflowClient, run_id: str) -> Path | None:
    """The newest state.pt of the trial behind `run_id` in its sweep's local Ray storage, if any."""
    tags = client.get_run(run_id).data.tags
    parent, trial = tags.get(tracking.TAG_PARENT), tags.get(tracking.TAG_TRIAL)
    if not parent or not trial:
        return None
    sweep_tags = client.get_run(parent).data.tags
    storage, sweep_id = sweep_tags.get(tracking.TAG_STORAGE), sweep_tags.get(tracking.TAG_SWEEP)
    if not storage or not sweep_id or "://" in storage:
        return None
    found = sorted(
        Path(storage, sweep_id, "train", trial).glob("checkpoint_*/state.pt"), key=lambda p: p.stat().st_mtime
    )
    return found[-1] if found else None


def load_discriminator(
    client: MlflowClient, run_id: str, cfg, checkpoint: Path | None = None
) -> tuple[torch.nn.Module, str]:
    """(D with the trial's trained weights, where they came from)."""
    from trainers.checkpoint import load_state
    from trainers.models import build_models

    path = checkpoint if checkpoint is not None else _ray_checkpoint(client, run_id)
    if path is None:
        raise LatentError(
            f"run {run_id}: no Ray checkpoint of its trial found (D's weights live there, not on the MLflow run); "
            "pass --checkpoint PATH/TO/checkpoint_*/state.pt from the sweep's storage "
            "(download it first if it is on S3)"
        )
    if not Path(path).is_file():
        raise LatentError(
            f"--checkpoint {path}: no such file; give the state.pt inside one of the trial's checkpoint_* folders"
        )
    try:
        state = load_state(path)
        _, D = build_models(cfg)
        D.load_state_dict(state["D"])
    except Exception as e:  # noqa: BLE001 - weights_only refusals, missing keys, another architecture's D
        raise LatentError(
            f"{path}: not a ganops checkpoint of this trial's D that loads safely (weights only): {e}"
        ) from None
    return D, str(path)


def load_encoder(client: MlflowClient, run_id: str, cfg) -> torch.nn.Module:
    """The E that `ganops encode` logged on the run, rebuilt from ganops' code (weights only)."""
    from trainers.encoder import build_encoder
    from trainers.models import build_models

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, ENCODER_FILE, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise LatentError(f"run {run_id} has no encoder yet; train one first: ganops encode {run_id}") from None
        state = torch.load(local, weights_only=True, map_location="cpu")
    _, D = build_models(cfg)
    E = build_encoder(D, cfg)
    E.load_state_dict(state["E"])
    return E.eval()


# ---- the user's images -------------------------------------------------------------------------


def read_image(path: Path, cfg) -> torch.Tensor:
    """One image file -> (1, C, H, W) in G's range; its size and channels must be the trial's."""
    from PIL import Image

    from trainers.data import to_model_range

    c, h, w = cfg.image_shape
    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
            channels = {"L": 1, "1": 1, "I": 1, "I;16": 1, "RGB": 3}.get(mode)
            if channels != c or size != (w, h):
                want = f"{w}x{h} {'grayscale (mode L)' if c == 1 else 'RGB'}"
                got = f"{size[0]}x{size[1]} mode {mode}" + (f" ({channels} channels)" if channels else "")
                raise LatentError(
                    f"{path}: the image is {got}; this trial's G draws {want} images: resize or convert it to that"
                )
            arr = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.float32)
    except OSError as e:
        raise LatentError(f"{path}: not a readable image ({e})") from None
    x = torch.from_numpy(arr.copy()).view(h, w, c).permute(2, 0, 1) / 127.5 - 1.0  # (C, H, W) in [-1, 1]
    return to_model_range(x[None], cfg)


def read_folder(folder: Path, cfg, flag: str) -> torch.Tensor:
    """Every image under `folder` -> (N, C, H, W) in G's range; `flag` names the option in errors."""
    from trainers.data_files import iter_image_files

    if not folder.is_dir():
        raise LatentError(
            f"{flag} {folder}: not a folder; give a folder of {cfg.image_shape[1]}x{cfg.image_shape[2]} images"
        )
    files = list(iter_image_files(folder))
    if not files:
        raise LatentError(
            f"{flag} {folder}: no images (.png, .jpg, ...) in it; put the images with (or without) the attribute there"
        )
    return torch.cat([read_image(f, cfg) for f in files])


def _setup(tracking_uri: str, run: str):
    client = MlflowClient(tracking_uri)
    G, cfg, run_id = load_generator(client, run)
    if not cfg.is_image:
        raise LatentError(f"{run}: model {cfg.model} draws 2-D points; the latent tools work on image generators")
    return client, G.eval(), cfg, run_id


# ---- the three operations ----------------------------------------------------------------------


def encode(
    tracking_uri: str,
    run: str,
    steps: int = 500,
    checkpoint: Path | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    on_point=None,
) -> dict:
    """Train E for the run's trial (from its D, G frozen) and log E, its error curve and a grid of
    (input, reconstruction) pairs to the trial's MLflow run; returns the final errors."""
    from trainers.data import make_data, to_tanh_range
    from trainers.encoder import EncoderError, train_encoder
    from trainers.metrics import image_grid

    if steps < 1:
        raise LatentError(f"--steps {steps}: train the encoder for at least 1 step")
    client, G, cfg, run_id = _setup(tracking_uri, run)
    D, source = load_discriminator(client, run_id, cfg, checkpoint)
    try:
        result = train_encoder(
            G, D, make_data(cfg), cfg, steps, lr=lr, batch_size=batch_size, seed=seed, on_point=on_point
        )
    except EncoderError as e:
        raise LatentError(f"{run}: {e}") from None
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(CURVE_METRIC, v, 0, s) for s, v in result.curve])
    client.log_batch(
        run_id,
        metrics=[
            Metric("encoder_random_z_error", result.random_z_error, 0, steps),
            Metric("encoder_final_error", result.recon_error, 0, steps),
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "encoder.pt"
        torch.save(
            {
                "E": result.encoder.state_dict(),
                "config": cfg.model_dump(),
                "steps": steps,
                "d_source": Path(source).name,
            },
            f,
        )
        client.log_artifact(run_id, str(f), artifact_path="encoder")
    assert result.pairs is not None  # train_encoder always fills it
    x, out = result.pairs
    pairs = torch.stack([x, out], 1).flatten(0, 1)  # (2n, C, H, W): input, its reconstruction, input, ...
    client.log_image(run_id, image_grid(to_tanh_range(pairs, cfg), nrow=16), artifact_file=PAIRS_FILE)
    return {
        "run_id": run_id,
        "source": run,
        "steps": steps,
        "recon_error": result.recon_error,
        "random_z_error": result.random_z_error,
        "d_checkpoint": source,
        "encoder": ENCODER_FILE,
        "pairs": PAIRS_FILE,
    }


def style_transfer(
    tracking_uri: str, run: str, like: Path, out: Path, cls: int | None = None, all_classes: bool = False
) -> dict:
    """IMAGE's z (by the run's E) drawn as class `cls`, as every class (a strip of ten), or, for an
    unconditional G, as itself (its reconstruction)."""
    from trainers.models.conditional import NUM_CLASSES

    if out.suffix not in (".npy", ".png"):
        raise LatentError(f"--out {out}: use a .npy (raw samples) or .png (a picture) file name")
    client, G, cfg, run_id = _setup(tracking_uri, run)
    _check_class(cls, cfg, run)
    if all_classes and not cfg.is_conditional:
        raise LatentError(
            f"--all-classes: {run} is an unconditional generator (model {cfg.model}); "
            "it needs a conditional one (model: cdcgan28)"
        )
    x = read_image(like, cfg)
    E = load_encoder(client, run_id, cfg)
    with torch.no_grad():
        z = E(x)  # (1, latent_dim)
        classes = (
            list(range(NUM_CLASSES))
            if all_classes or (cfg.is_conditional and cls is None)
            else [cls]
            if cls is not None
            else []
        )
        images = G(z.expand(len(classes), -1), torch.tensor(classes)) if classes else G(z)
    _write(out, images, cfg, nrow=max(1, len(classes)))
    return {
        "run_id": run_id,
        "source": run,
        "like": str(like),
        "out": str(out),
        "classes": classes,
        "shape": list(images.shape),
        "z": z[0].tolist(),
    }


def attribute_vector(tracking_uri: str, run: str, with_dir: Path, without_dir: Path, out: Path) -> dict:
    """mean E(images with the attribute) - mean E(images without it), saved as (latent_dim,) .npy."""
    if out.suffix != ".npy":
        raise LatentError(f"--out {out}: an attribute vector is written as .npy")
    client, G, cfg, run_id = _setup(tracking_uri, run)
    xa, xb = read_folder(with_dir, cfg, "--with"), read_folder(without_dir, cfg, "--without")
    from trainers.encoder import encode as _encode

    E = load_encoder(client, run_id, cfg)
    v = _encode(E, xa).mean(0) - _encode(E, xb).mean(0)  # (latent_dim,)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, v.numpy().astype(np.float32))
    return {
        "run_id": run_id,
        "source": run,
        "out": str(out),
        "with": len(xa),
        "without": len(xb),
        "norm": float(v.norm()),
    }


def read_vector(path: Path, cfg) -> torch.Tensor:
    if not path.is_file():
        raise LatentError(
            f"--add {path}: no such file; "
            f"make one with `ganops latent vector RUN --with DIR --without DIR --out {path}`"
        )
    try:
        v = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise LatentError(f"--add {path}: not a .npy array ({e})") from None
    if v.shape != (cfg.latent_dim,):
        raise LatentError(
            f"--add {path}: shape {v.shape}; this trial's latents are ({cfg.latent_dim},): "
            "build the vector from this run"
        )
    return torch.from_numpy(v.astype(np.float32))


def walk_latents(z: torch.Tensor, v: torch.Tensor, scale: tuple[float, float], steps: int) -> torch.Tensor:
    """(rows, latent) z's and a (latent,) vector -> (rows * steps, latent): row r = z[r] + s v, s over the scale."""
    s = torch.linspace(scale[0], scale[1], steps)  # (steps,)
    return (z[:, None, :] + s[None, :, None] * v).flatten(0, 1)


def attribute_walk(
    tracking_uri: str,
    run: str,
    vector: Path,
    out: Path,
    scale: tuple[float, float] = (-2.0, 2.0),
    steps: int = 9,
    n: int = 1,
    seed: int = 0,
    like: Path | None = None,
    cls: int | None = None,
) -> dict:
    """A strip per latent: z + s v for `steps` values of s over `scale`. The latents are `n`
    draws from `seed`, or IMAGE's z when `like` is given; a conditional G draws class `cls`
    (each row its own class 0-9 in turn without it)."""
    from trainers.models import sample_latent
    from trainers.models.conditional import NUM_CLASSES

    if out.suffix not in (".npy", ".png"):
        raise LatentError(f"--out {out}: use a .npy (raw samples) or .png (a picture) file name")
    if steps < 2:
        raise LatentError(f"--steps {steps}: a walk needs at least 2 steps (its two ends)")
    client, G, cfg, run_id = _setup(tracking_uri, run)
    _check_class(cls, cfg, run)
    v = read_vector(vector, cfg)
    if like is not None:
        x = read_image(like, cfg)
        with torch.no_grad():
            z = load_encoder(client, run_id, cfg)(x)
    else:
        z = sample_latent(n, cfg, torch.Generator().manual_seed(seed))
    zs = walk_latents(z, v, scale, steps)
    labels = None
    if cfg.is_conditional:
        row_classes = torch.full((z.shape[0],), cls) if cls is not None else torch.arange(z.shape[0]) % NUM_CLASSES
        labels = row_classes.repeat_interleave(steps)
    with torch.no_grad():
        images = G(zs, labels) if labels is not None else G(zs)
    _write(out, images, cfg, nrow=steps)
    return {
        "run_id": run_id,
        "source": run,
        "out": str(out),
        "vector": str(vector),
        "scale": list(scale),
        "steps": steps,
        "rows": int(z.shape[0]),
        "shape": list(images.shape),
    }
