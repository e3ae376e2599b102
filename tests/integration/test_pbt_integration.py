"""Population Based Training on a real local Ray: the bottom trial takes the top trial's
weights and perturbed settings inside its running workers, and MLflow records it."""

import json

import pytest
import ray
from mlflow import MlflowClient

from orchestrator.api import run_sweep, spec_from_text

pytestmark = pytest.mark.integration

PBT = """
name: pbt-two
# Long enough (~25 s of training) that both trials train side by side despite the ~15 s jitter
# of Ray Train's start.
trainer: {model: mlp2d, data: grid25, steps: 3000, eval_every: 500, batch_size: 256, width: 128, eval_samples: 500}
search:
  lr_d: {loguniform: [1.0e-5, 1.0e-3]}
sweep:
  num_samples: 2
  seed: 0
  scheduler: pbt
  pbt: {perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.0}
stopping: {d_overpowers: null, d_fooled: null, mixture_quality: null}
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize(
    "workers", [pytest.param(1, marks=pytest.mark.long), 2], ids=["1-worker", "2-workers"]
)  # CI runs the 2-worker case, which also broadcasts the donor's weights
def test_pbt_exploit_moves_the_worse_trial_onto_the_better_ones_weights_and_settings(local_ray, ganops_home, workers):
    """With 2 workers per trial (half a CPU each), rank 0 takes the order and every worker loads the donor."""
    result = run_sweep(
        spec_from_text(PBT + f"resources: {{workers_per_trial: {workers}, cpus_per_worker: {1 / workers}}}\n")
    )
    assert len(result.trials) == 2 and all(t.status == "done" and t.step == 3000 for t in result.trials), result.trials
    client = MlflowClient(result.tracking_uri)
    runs = {t.trial_id: client.get_run(t.run_id) for t in result.trials}
    hp = {
        tid: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "hp_lr_d")] for tid, r in runs.items()
    }

    exploits = [
        (tid, json.loads(v)) for tid, r in runs.items() for k, v in r.data.tags.items() if k.startswith("pbt.exploit.")
    ]
    assert exploits, "no trial exploited the other"
    for tid, e in exploits:
        donor = e["donor"]
        assert donor in runs and donor != tid and 0 < e["step"] < 3000 and e["step"] % 20 == 0
        # Explore: the new lr_d is the donor's lr_d then (x0.8 or x1.2, clamped to the range).
        new = dict(hp[tid])[e["step"]]
        donor_values = [v for s, v in hp[donor] if s <= e["step"]]
        assert any(new == pytest.approx(min(max(v * f, 1e-5), 1e-3)) for v in donor_values for f in (0.8, 1.2)), (
            new,
            donor_values,
        )
        assert e["settings"]["lr_d"][1] == pytest.approx(new)
    for tid, r in runs.items():
        # Params are write-once: they keep the initial values; the schedule is in hp_lr_d.
        assert float(r.data.params["lr_d"]) == pytest.approx(hp[tid][0][1]) and hp[tid][0][0] == 0
        # The trial keeps its own clock: every eval step exactly once.
        assert [m.step for m in client.get_metric_history(r.info.run_id, "mix_score")] == [
            500,
            1000,
            1500,
            2000,
            2500,
            3000,
        ]
    # The sweep reports an exploited trial's config as the one it trained with last.
    last_tid, last = exploits[-1]
    final = next(t for t in result.trials if t.trial_id == last_tid)
    assert final.config["lr_d"] == pytest.approx(json.loads(runs[last_tid].data.tags["pbt.config"])["lr_d"])
