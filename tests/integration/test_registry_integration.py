"""The best generator of a real sweep lands in the MLflow Model Registry (the default SQLite
store) and `ganops sample models:/...` draws from it."""

import logging

import mlflow
import numpy as np
import pytest
import ray
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from orchestrator import registry
from orchestrator.api import run_sweep, spec_from_text
from orchestrator.cli import app
from orchestrator.sweep import SweepResult, TrialSummary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SPEC = """
name: tiny-registry
trainer: {model: dcgan28, data: mnist, steps: 4, eval_every: 2, batch_size: 16, width: 8, eval_samples: 200}
search:
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
sweep: {num_samples: 2, seed: 3}
stopping: {mode_collapse: null}  # 4 iterations: a fresh G draws one class
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_sweep_registers_its_best_generator_and_sample_reads_it(local_ray, ganops_home, monkeypatch):
    """A sweep registers its best trial's generator as ganops-<spec name> (version tagged with
    sweep, trial, metric; alias best); `ganops sample models:/...` draws the same generator."""
    result = run_sweep(spec_from_text(SPEC), spec_text=SPEC)
    best = result.best
    assert best is not None and result.registered_model == "models:/ganops-tiny-registry/1"
    client = MlflowClient(result.tracking_uri)
    version = client.get_model_version_by_alias("ganops-tiny-registry", "best")
    assert str(version.version) == "1" and version.run_id == best.run_id
    assert (version.tags["ganops.sweep_id"], version.tags["ganops.trial_id"], version.tags["ganops.metric"]) == (
        result.sweep_id,
        best.trial_id,
        "fid",
    )
    # Issue 16: the version holds the trial's best eval's generator, and says which step it is.
    assert float(version.tags["ganops.metric_value"]) == pytest.approx(result.value(best))
    assert best.best_metrics is not None and result.value(best) == best.best_metrics["fid"]
    assert version.tags["ganops.step"] == str(best.best_step) and f"step {best.best_step}:" in version.description
    # Its files sit beside the store's other artifacts, not in a ./mlruns of whatever directory.
    assert client.get_model_version_download_uri("ganops-tiny-registry", "1").startswith(
        (ganops_home / "mlartifacts").as_uri()
    )

    runner = CliRunner()
    r = runner.invoke(app, ["sample", "models:/ganops-tiny-registry@best", "--n", "16", "--out", "best.png"])
    assert r.exit_code == 0, r.output
    assert Image.open("best.png").size[0] > 28  # a 4x4 grid of 28x28 digits
    for args, out in (([best.trial_id], "trial.npy"), (["models:/ganops-tiny-registry/1"], "model.npy")):
        r = runner.invoke(app, ["sample", *args, "--n", "5", "--out", out])
        assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load("trial.npy"), np.load("model.npy"))  # both the best eval's generator

    # For MLflow's own tools it is a PyTorch model in the pickle-free pt2 format: it loads
    # without ganops' code and maps latents to 28x28 images.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", result.tracking_uri)
    G = mlflow.pytorch.load_model("models:/ganops-tiny-registry/1")
    assert G(torch.randn(3, 100)).shape == (3, 1, 28, 28)

    # Registering again (the next sweep's best) adds version 2 and moves the alias to it.
    assert registry.register_best(client, result, "tiny-registry") == "models:/ganops-tiny-registry/2"
    assert str(client.get_model_version_by_alias("ganops-tiny-registry", "best").version) == "2"


def test_a_registration_that_fails_warns_and_returns_none(ganops_home, caplog):
    """A best trial whose generator cannot be read costs the sweep only a warning."""
    from orchestrator import tracking

    uri = tracking.resolve_tracking_uri(None)
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "no-generator", uri)
    parent, run = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id  # no generator logged
    result = SweepResult(
        "s",
        "no-generator",
        exp,
        parent,
        uri,
        "",
        "fid",
        "min",
        1.0,
        None,
        [TrialSummary("t_0", run, "done", {}, {"fid": 5.0}, 4)],
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.registry"):
        assert registry.try_register_best(client, result, "no-generator") is None
    assert "could not register the best generator" in caplog.text
    assert client.search_registered_models() == []
