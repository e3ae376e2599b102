"""Device placement in a real Ray Train worker, and fractional GPUs scheduled by a real Ray.

This machine has no CUDA GPU, so: the loop test checks that everything lives on the device
Ray's context gives (the CPU here; `bench/gpu_check.py` checks CUDA where there is one), and
the fractional test tells a local Ray it has one GPU and checks that four 0.25-GPU trials,
shaped exactly as ganops shapes them, hold it at once. (Ray Train picks NCCL for GPU workers,
which cannot start without CUDA, so those trials run ganops' resource requests with gloo and
a stand-in training function; the GAN itself is not trained on a GPU here.)
"""

import json
import time

import pytest
import ray
from mlflow import MlflowClient

from search_spaces.loader import spec_from_text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_with_a_gpu():
    # 4 logical CPUs on this 2-core machine: the fractional test's four trials need a CPU share each.
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(300)
def test_a_trial_keeps_models_optimizer_batches_noise_and_eval_net_on_its_device(ray_with_a_gpu, tmp_path):
    """A real 1-worker TorchTrainer run of trainers.loop (dcgan28, G's moving average, bf16,
    channels-last) tags its MLflow run with where each part lives: every group is on the device
    `ray.train.torch.get_device()` gave the worker, and bf16 still trains and evaluates."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainers.config import TrainerConfig
    from trainers.loop import train_per_worker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(
        client.create_experiment("placement", artifact_location=str(tmp_path / "artifacts"))
    ).info.run_id
    cfg = TrainerConfig(
        model="dcgan28",
        data="mnist",
        width=8,
        batch_size=16,
        steps=4,
        eval_every=2,
        eval_samples=64,
        ema=0.9,
        precision="bf16",
        channels_last=True,
    )
    TorchTrainer(
        train_per_worker,
        train_loop_config={"trainer": cfg.model_dump(), "run": {"tracking_uri": uri, "run_id": run_id}},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="placement", storage_path=str(tmp_path / "ray")),
    ).fit()
    tags = client.get_run(run_id).data.tags
    report = json.loads(tags["ganops.placement"])
    assert report["device"] == "cpu" and tags["ganops.device"].startswith("cpu")
    assert set(report["groups"]) == {"parameters", "optimizer_state", "batches", "fixed_noise", "ema", "eval_features"}
    assert report["off_device"] == [] and all(devs == ["cpu"] for devs in report["groups"].values())
    fid = client.get_metric_history(run_id, "fid")
    assert [m.step for m in fid] == [2, 4] and all(m.value == m.value for m in fid)  # bf16 evals are numbers


SHARED = """
name: quarter-gpu
trainer: {model: mlp2d, data: grid25, steps: 100}
search:
  lr_d: {grid: [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]}
sweep: {num_samples: 1}
resources: {gpus_per_worker: 0.25, cpus_per_worker: 0.25}
"""


@ray.remote(num_cpus=0)
class _Barrier:
    def __init__(self):
        self.seen = {}

    def arrive(self, trial: str, gpu_ids: list) -> int:
        self.seen[trial] = gpu_ids
        return len(self.seen)

    def arrivals(self) -> dict:
        return self.seen


@pytest.mark.long
@pytest.mark.timeout(300)
def test_four_quarter_gpu_trials_hold_one_gpu_at_once(ray_with_a_gpu):
    """gpus_per_worker: 0.25 on a one-GPU Ray: ganops' default concurrency is 4, and four trials
    with ganops' driver and worker resource requests are all running on GPU 0 at the same time
    (each waits at a barrier until all four have arrived; a trial that could not be scheduled
    alongside the others would leave the barrier short and the test would time out)."""
    from ray import tune
    from ray.train import RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.sweep import default_concurrency
    from orchestrator.trial import driver_resources, scaling_config

    spec = spec_from_text(SHARED)
    concurrent = default_concurrency(spec, ray.cluster_resources())
    assert concurrent == 4
    barrier = _Barrier.remote()

    def worker(config):
        import ray.train

        n = ray.get(barrier.arrive.remote(config["trial"], ray.get_gpu_ids()))
        deadline = time.monotonic() + 120
        while n < 4 and time.monotonic() < deadline:
            time.sleep(0.2)  # polling the barrier, not waiting a fixed time
            n = len(ray.get(barrier.arrivals.remote()))
        ray.train.report({"together": n})

    def trial(config):
        TorchTrainer(
            worker,
            train_loop_config={"trial": tune.get_context().get_trial_id()},
            scaling_config=scaling_config(spec),
            torch_config=TorchConfig(backend="gloo"),  # NCCL needs CUDA, which this machine lacks
            run_config=RunConfig(callbacks=[TuneReportCallback()]),
        ).fit()

    tuner = tune.Tuner(
        tune.with_resources(trial, driver_resources(ray.cluster_resources())),
        param_space={"lr_d": tune.grid_search([1e-3, 2e-3, 3e-3, 4e-3])},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
    )
    results = tuner.fit()
    assert not results.errors
    assert sorted(r.metrics["together"] for r in results) == [4, 4, 4, 4]
    seen = ray.get(barrier.arrivals.remote())
    assert len(seen) == 4 and all(ids == ["0"] or ids == [0] for ids in seen.values()), seen
