"""cdcgan28 end to end: `ganops sweep` trains the conditional DCGAN on real Ray + MLflow, its
runs carry class_match and a class-per-column grid, the registry holds G(z, labels),
`ganops sample` draws a class and a slerp walk from it, and `ganops encode` trains an encoder
from the D in the sweep's own Ray checkpoint that `sample --like` then uses (issue 18)."""

import json

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SPEC = """
name: tiny-cond
trainer: {model: cdcgan28, data: mnist, steps: 6, eval_every: 3, batch_size: 16, width: 8, eval_samples: 200}
sweep: {num_samples: 1, metric: class_match}
stopping: {mode_collapse: null}  # 6 iterations: a fresh G draws few classes
"""


def test_sweep_trains_cdcgan28_and_sample_draws_a_class_and_an_interpolation(ganops_home, monkeypatch):
    """`ganops sweep` (its own local Ray, shut down at the end) then `ganops sample` on the trial."""
    (ganops_home.parent / "spec.yaml").write_text(SPEC)
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "spec.yaml", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    best = result["best"]
    assert result["metric"] == "class_match" and best["status"] == "done"
    assert 0 <= best["metrics"]["class_match"] <= 1 and best["metrics"]["class_coverage"] >= 1

    # The trial's run: class_match at each eval; each sample grid 8 rows (one z each) x 10 classes.
    client = MlflowClient(result["tracking_uri"])
    assert [m.step for m in client.get_metric_history(best["run_id"], "class_match")] == [3, 6]
    grid = next(
        a.path
        for a in client.list_artifacts(best["run_id"], "images")
        if "step+6+" in a.path and a.path.endswith(".png")
    )
    local = client.download_artifacts(best["run_id"], grid, str(ganops_home.parent))
    assert Image.open(local).size == (10 * 30 + 2, 8 * 30 + 2)

    # `ganops sample --class`: 64 threes in an 8x8 grid.
    r = runner.invoke(app, ["sample", best["trial_id"], "--class", "3", "--out", "x.png", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["classes"] == [3] and info["n"] == 64 and Image.open("x.png").size == (8 * 30 + 2, 8 * 30 + 2)
    # `--interpolate`: a strip of 8 steps as class 3; without --class one row per class.
    r = runner.invoke(
        app,
        [
            "sample",
            best["run_id"],
            "--interpolate",
            "0,1",
            "--steps",
            "8",
            "--class",
            "3",
            "--out",
            "walk3.png",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["shape"] == [8, 1, 28, 28] and Image.open("walk3.png").size == (8 * 30 + 2, 32)
    r = runner.invoke(app, ["sample", best["run_id"], "--interpolate", "0,1", "--steps", "8", "--out", "walk.npy"])
    assert r.exit_code == 0, r.output
    walk = np.load("walk.npy")
    assert walk.shape == (80, 1, 28, 28) and np.abs(walk[:8] - walk[8:16]).max() > 0  # rows differ by class

    # The registered model (pt2, no pickle) takes (z, labels) in MLflow's own loader.
    assert result["registered_model"] == "models:/ganops-tiny-cond/1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", result["tracking_uri"])
    G = mlflow.pytorch.load_model("models:/ganops-tiny-cond/1")
    assert G(torch.randn(3, 100), torch.tensor([0, 5, 9])).shape == (3, 1, 28, 28)
    r = runner.invoke(
        app, ["sample", "models:/ganops-tiny-cond@best", "--class", "9", "--n", "4", "--out", "nines.npy"]
    )
    assert r.exit_code == 0, r.output

    # Issue 18 on the sweep's own checkpoint: `ganops encode` finds D in the trial's newest Ray
    # checkpoint (GANOPS_HOME/ray), logs E and its curve; `sample --like --all-classes` uses it.
    r = runner.invoke(app, ["encode", best["trial_id"], "--steps", "20", "--batch-size", "16", "--json"])
    assert r.exit_code == 0, r.output
    enc = json.loads(r.stdout)
    assert enc["run_id"] == best["run_id"] and np.isfinite(enc["recon_error"]), enc
    assert "checkpoint_" in enc["d_checkpoint"] and str(ganops_home / "ray") in enc["d_checkpoint"], enc
    curve = client.get_metric_history(best["run_id"], "encoder_recon_error")
    assert len(curve) >= 2 and curve[-1].step == 20
    Image.fromarray(np.clip(walk[0, 0] * 127.5 + 127.5, 0, 255).astype(np.uint8)).save("digit.png")
    r = runner.invoke(app, ["sample", best["run_id"], "--like", "digit.png", "--all-classes", "--out", "like.png"])
    assert r.exit_code == 0, r.output
    assert Image.open("like.png").size == (10 * 30 + 2, 32)
