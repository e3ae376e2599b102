"""Losses every `log_every` steps, apart from the evals (issue 19), against a real SQLite MLflow store;
and one GanPlugin per config in the loop."""

import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError

from trainers.config import TrainerConfig
from trainers.data import make_data
from trainers.models import build_models, gan_for
from trainers.step import build_optimizers, train_step
from trainers.trial_log import LossLog, MlflowSink


def _run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_run(client.create_experiment("losses")).info.run_id


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_log_every_defaults_to_10_and_refuses_0_naming_the_field():
    assert TrainerConfig().log_every == 10
    with pytest.raises(ValidationError, match="log_every"):
        TrainerConfig(log_every=0)
    assert TrainerConfig.model_fields["log_every"].description


def test_losses_are_logged_every_log_every_steps_as_means_since_the_last_point_and_at_each_eval(tmp_path):
    """Points at 10 and 20 (the cadence) and 25 (an eval off it); each the mean of its own steps."""
    uri, client, run_id = _run(tmp_path)
    sink = MlflowSink(uri, run_id)
    losses = LossLog(sink, every=10)
    for step in range(1, 26):
        losses.add(step, {"loss_d": float(step), "d_x": 0.5}, due=step == 25)
    sink.flush()
    assert _history(client, run_id, "loss_d") == [(10, 5.5), (20, 15.5), (25, 23.0)]
    assert [s for s, _ in _history(client, run_id, "d_x")] == [10, 20, 25]
    assert _history(client, run_id, "step") == []  # evals own `step`: a resume reads it


def test_a_resumed_trial_does_not_log_its_loss_points_twice(tmp_path):
    """Workers restarted from a checkpoint at step 10 replay 11-20; the point at 20 is already there."""
    uri, client, run_id = _run(tmp_path)
    first = MlflowSink(uri, run_id)
    first.log_losses(10, {"loss_d": 1.0})
    first.log_losses(20, {"loss_d": 2.0})
    first.flush()
    again = MlflowSink(uri, run_id)
    again.resume_after(10)
    assert again.losses_through == 20
    again.log_losses(20, {"loss_d": 9.0})
    again.log_losses(30, {"loss_d": 3.0})
    again.flush()
    assert _history(client, run_id, "loss_d") == [(10, 1.0), (20, 2.0), (30, 3.0)]


def test_only_rank_0_keeps_loss_sums():
    """Ranks without a sink (every rank but 0) do no bookkeeping at all."""
    losses = LossLog(None, every=1)
    losses.add(1, {"loss_d": 1.0}, due=True)
    assert losses.n == 0 and losses.sums == {}


def test_a_step_given_the_loops_gan_trains_as_one_that_builds_its_own():
    """The loop builds gan_for(cfg) once per config and passes it in: same numbers, no rebuild per step."""
    cfg = TrainerConfig(model="fc", data="mnist", batch_size=8, width=8, seed=3)
    runs = []
    for gan in (None, gan_for(cfg)):
        G, D = build_models(cfg)
        opt_g, opt_d = build_optimizers(G, D, cfg)
        gen, data = torch.Generator().manual_seed(1), make_data(cfg)
        runs.append([train_step(G, D, opt_g, opt_d, data, cfg, gen, gan=gan) for _ in range(3)])
    assert runs[0] == runs[1]
