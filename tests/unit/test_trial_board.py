"""The trial board (orchestrator/board.py) as the sweep's driver uses it, on a real local Ray and
a real MLflow store: a trial's driver posts its run id, and the sweep closes a stopped trial's
run by that id, with no search of the store by tag. And the other way a trial is stopped, by
Tune itself (a signal, the scheduler): its driver sees the stop, so the error that Tune's
teardown raises in it is not taken for the trial's."""

import math
import threading

import pytest
import ray
from mlflow import MlflowClient
from ray.tune.experiment import Trial

from orchestrator.board import start_board
from orchestrator.progress import SweepProgress
from orchestrator.stopping import BalanceStopper
from orchestrator.trial import tune_stop_event
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


def test_a_driver_blocked_in_fit_sees_that_tune_stopped_its_trial(local_ray, tmp_path):
    """A real Tune function trainable whose driver reports as TorchTrainer's TuneReportCallback
    does and then waits, as a driver waits in `fit()`. Tune's stop (what a SIGTERM'd sweep or the
    scheduler does; it then frees the placement group, and `fit()` raises ActorDiedError) sets
    the event the driver took at its start, though Tune drops the session itself."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.trainable.function_trainable import wrap_function

    seen: dict[str, bool] = {}
    fit_returns = threading.Event()
    done = threading.Event()

    def driver(config):
        stopping = tune_stop_event()
        assert stopping is not None
        seen["at_start"] = stopping.is_set()
        TuneReportCallback().after_report(None, [{"step": 100}], None)  # type: ignore[arg-type]
        fit_returns.wait(60)
        seen["after_stop"] = stopping.is_set()
        done.set()

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="sweep", trial_dir_name="t_00000")
    trainable = wrap_function(driver)(config={}, storage=storage)
    assert trainable.train()["step"] == 100
    assert tune_stop_event() is not None and not tune_stop_event().is_set()  # a running trial: no stop
    trainable.stop()
    assert tune_stop_event() is None  # Tune dropped the session: only the event taken at the start tells
    fit_returns.set()
    assert done.wait(30)
    assert seen == {"at_start": False, "after_stop": True}
