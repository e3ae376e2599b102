"""Draw samples from a trial's generator (by run or trial id) or a registered one (models:/...): load it, write a file."""

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
        raise SampleError(f"no MLflow run or Ray trial {run!r} in {client.tracking_uri}; take the id from the sweep's leaderboard or `ganops ui`")
    return rid


def load_generator(client: MlflowClient, run: str):
    """The generator of a run / trial id, or of a registered model version (`models:/NAME/VERSION`,
    `models:/NAME@ALIAS`); returns (G, config, run id). Only ever a state dict read with
    weights_only=True: never an unpickled model (see orchestrator/registry.py)."""
    from trainers.checkpoint import load_generator as _load

    with tempfile.TemporaryDirectory() as tmp:
        if run.startswith("models:/"):
            try:
                local, run_id = registry.download_weights(client, run, Path(tmp))
            except LookupError as e:
                raise SampleError(str(e)) from None
        else:
            run_id = resolve_run(client, run)
            try:
                local = client.download_artifacts(run_id, "generator/generator.pt", tmp)
            except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                raise SampleError(f"run {run_id} has no generator checkpoint yet (it is logged at the trial's first eval): {e}") from None
        try:
            G, cfg = _load(Path(local))
        except Exception as e:  # noqa: BLE001 - weights_only refusals, missing keys, a config that no longer validates
            raise SampleError(f"{run}: its generator.pt is not a ganops generator file that loads safely (weights only): {e}") from None
    return G, cfg, run_id


def sample(tracking_uri: str, run: str, n: int, out: Path, seed: int = 0) -> dict:
    """Write `n` samples of the run's generator to `out` (.npy or .png); return what was written."""
    from trainers.metrics import image_grid, scatter_png
    from trainers.models import sample_latent

    if out.suffix not in (".npy", ".png"):
        raise SampleError(f"--out {out}: use a .npy (raw samples) or .png (a picture) file name")
    client = MlflowClient(tracking_uri)
    G, cfg, run_id = load_generator(client, run)
    G.eval()
    with torch.no_grad():
        x = G(sample_latent(n, cfg, torch.Generator().manual_seed(seed)))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, x.numpy().astype(np.float32))
    else:
        from PIL import Image

        pic = image_grid(x, nrow=max(1, int(np.ceil(np.sqrt(n))))) if cfg.is_image else scatter_png(x, cfg.data)
        Image.fromarray(pic).save(out)
    return {"run_id": run_id, "source": run, "out": str(out), "n": n, "shape": list(x.shape), "data": cfg.data}
