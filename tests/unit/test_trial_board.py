"""The trial board (orchestrator/board.py) as the sweep's driver uses it, on a real local Ray and
a real MLflow store: a trial's driver posts its run id, and the sweep closes a stopped trial's
run by that id, with no search of the store by tag."""

import math

import pytest
import ray
from mlflow import MlflowClient
from ray.tune.experiment import Trial

from orchestrator.board import start_board
from orchestrator.progress import SweepProgress
from orchestrator.stopping import BalanceStopper
from search_spaces.spec import Stopping

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_stopped_trials_run_is_closed_by_the_id_its_driver_posted(local_ray, tmp_path):
    """The run carries no trial tag, so a search by tag could not find it: only the posted id
    closes it (KILLED, with the rule and its evidence)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("board")
    run_id = client.create_run(exp).info.run_id
    _, board = start_board("board-test")
    ray.get(board.set_run.remote("t_00000", run_id))  # as orchestrator/trial.py does
    assert ray.get(board.run.remote("t_00000")) == run_id and ray.get(board.run.remote("nobody")) is None

    stopper = BalanceStopper(Stopping(), "fid", "min", board=board)
    progress = SweepProgress(
        metric="fid",
        mode="min",
        steps=1000,
        searched=["lr_g"],
        tracking_uri=uri,
        console=None,
        experiment_ids=[exp],
        stopper=stopper,
    )
    trial = Trial("__fake", config={"lr_g": 1e-3}, trial_id="t_00000", stub=True)
    progress.on_trial_start(0, [trial], trial)
    report = {"step": 100, "fid": 50.0, "loss_d": math.inf, "loss_g": 1.0}
    stopper("t_00000", report)  # divergence: the board tells the trial to stop
    trial.update_last_result(report)
    progress.on_trial_result(1, [trial], trial, report)
    progress.on_trial_complete(2, [trial], trial)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["stop_reason"] == "divergence", run.data.tags
    assert "loss_d" in run.data.tags["stop_evidence"]
