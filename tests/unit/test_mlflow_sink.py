"""Rank 0's MLflow writer, against a real SQLite MLflow store."""

from __future__ import annotations

from mlflow import MlflowClient

from trainers.loop import _MlflowSink


def test_a_resumed_trial_numbers_its_pbt_exploits_on_and_skips_steps_it_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("sink")).info.run_id
    first = _MlflowSink(uri, run_id)
    assert first.count_tags("pbt.exploit.") == 0
    for n in (1, 2):
        first.tag(f"pbt.exploit.{n}", "{}")
    first.tag("pbt.config", "{}")
    first.log(100, {"step": 100, "loss_d": 1.0}, None, None)

    again = _MlflowSink(uri, run_id)  # the trial's workers, restarted from a checkpoint at step 50
    assert again.count_tags("pbt.exploit.") == 2
    again.resume_after(50)
    again.log(100, {"step": 100, "loss_d": 9.0}, None, None)  # replayed: already logged
    again.log(150, {"step": 150, "loss_d": 0.5}, None, None)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss_d")] == [(100, 1.0), (150, 0.5)]
    assert _MlflowSink(None, None).count_tags("pbt.exploit.") == 0
